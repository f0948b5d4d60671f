/* The load client of the echo-server benchmark (bench/run green): one
 * thread, epoll, N connections to 127.0.0.1:PORT, one request in flight on
 * each. A request is ECHO_MSG bytes, different for every connection and
 * every request; the reply must be the same bytes, checked byte for byte.
 *
 *   echo_client IMPL CONNS PORT [SERVER_PID]
 *
 * Waits (at most 10 s) for the server to listen, opens the connections (at
 * most ECHO_RAMP not yet answered at a time, so the server's accept queue
 * never overflows), runs ECHO_WARMUP_S of warm-up once every connection has
 * had its first reply, then counts the replies of ECHO_MEASURE_S and prints
 *
 *   RESULT workload=echo_1k impl=IMPL value=<replies per second> unit=req/s
 *
 * (echo_10k for 10,000 connections, echo_<N> otherwise). On stderr: how
 * busy the client and, given SERVER_PID, the server were during the
 * measurement (CPU time / wall time), to tell which side was the bottleneck.
 * Exits 1, loudly, on a wrong byte, a closed or failed connection, a stall
 * of ECHO_STALL_S without any reply, or after ECHO_HARD_S in all. Closes
 * the connections with a reset (SO_LINGER 0) so that no TIME_WAIT is left
 * to exhaust the ports of the next run. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "bench_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define ECHO_MSG       32
#define ECHO_RAMP      256
#define ECHO_WARMUP_S  1.0
#define ECHO_MEASURE_S 3.0
#define ECHO_STALL_S   5.0
#define ECHO_HARD_S    45

typedef struct conn {
  int fd;
  bool connected;
  bool answered; /* has had its first reply */
  uint32_t got;  /* bytes of the current reply so far */
  uint64_t seq;  /* requests sent on this connection */
  unsigned char reply[ECHO_MSG];
} conn;

static const char *impl;

static void die(const char *what, long conn_index) {
  if (conn_index >= 0)
    fprintf(stderr, "echo_client %s: connection %ld: %s\n", impl, conn_index,
            what);
  else
    fprintf(stderr, "echo_client %s: %s\n", impl, what);
  exit(1);
}

static void on_alarm(int sig) {
  (void)sig;
  static const char m[] = "echo_client: hard timeout, giving up\n";
  (void)!write(2, m, sizeof m - 1);
  _exit(1);
}

/* The request number `seq` of connection `i`: splitmix64 of both. */
static void make_msg(long i, uint64_t seq, unsigned char *out) {
  uint64_t x = ((uint64_t)i << 40) ^ seq;
  for (int k = 0; k < ECHO_MSG / 8; k++) {
    uint64_t z = (x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    z ^= z >> 31;
    memcpy(out + 8 * k, &z, 8);
  }
}

static void send_req(conn *c, long i) {
  unsigned char msg[ECHO_MSG];
  make_msg(i, c->seq, msg);
  ssize_t n = send(c->fd, msg, sizeof msg, MSG_NOSIGNAL);
  /* One small request in flight: the send buffer always has room. */
  if (n != (ssize_t)sizeof msg)
    die(n < 0 ? strerror(errno) : "short write", i);
  c->got = 0;
}

/* CPU seconds (user + system) of process `pid` so far, from /proc. */
static double proc_cpu(long pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')'); /* the name may hold spaces */
  unsigned long ut, st;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                   &ut, &st) != 2)
    return -1;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

int main(int argc, char **argv) {
  if (argc < 4 || argc > 5) {
    fprintf(stderr, "usage: echo_client IMPL CONNS PORT [SERVER_PID]\n");
    return 2;
  }
  impl = argv[1];
  long nconns = atol(argv[2]), port = atol(argv[3]);
  long server_pid = argc > 4 ? atol(argv[4]) : 0;
  if (nconns < 1 || nconns > 100000 || port < 1 || port > 65535) {
    fprintf(stderr, "echo_client: CONNS 1..100000, PORT 1..65535\n");
    return 2;
  }
  signal(SIGALRM, on_alarm);
  alarm(ECHO_HARD_S);

  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rlim_t want = (rlim_t)nconns + 64;
  if (rl.rlim_cur < want) {
    rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
      die("RLIMIT_NOFILE is too low for that many connections", -1);
  }

  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  /* Wait for the server: a probe connection, retried until it is taken. */
  double t0 = bench_now();
  for (;;) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
      die(strerror(errno), -1);
    int r = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    int e = errno;
    close(fd);
    if (r == 0)
      break;
    if (e != ECONNREFUSED)
      die(strerror(e), -1);
    if (bench_now() - t0 > 10)
      die("the server did not listen within 10 s", -1);
    usleep(20000);
  }

  conn *cs = calloc((size_t)nconns, sizeof *cs);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (!cs || ep < 0)
    die("no memory or no epoll", -1);
  enum { MAXEV = 1024 };
  struct epoll_event evs[MAXEV];
  long opened = 0, ramping = 0, answered = 0;
  uint64_t replies = 0, at_start = 0;
  double warm_until = 0, start = 0, end = 0, last_reply = bench_now();
  double cpu_start = 0, srv_start = 0;
  for (;;) {
    /* Open more connections while few are still unanswered. */
    while (opened < nconns && ramping < ECHO_RAMP) {
      conn *c = &cs[opened];
      c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (c->fd < 0)
        die(strerror(errno), opened);
      int one = 1;
      setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0 &&
          errno != EINPROGRESS)
        die(strerror(errno), opened);
      struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT,
                               .data.u64 = (uint64_t)opened};
      if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die(strerror(errno), opened);
      opened++;
      ramping++;
    }
    int n = epoll_wait(ep, evs, MAXEV, 100);
    if (n < 0 && errno != EINTR)
      die(strerror(errno), -1);
    double now = bench_now();
    for (int k = 0; k < n; k++) {
      long i = (long)evs[k].data.u64;
      conn *c = &cs[i];
      if (!c->connected) {
        if (!(evs[k].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
          continue;
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err)
          die(strerror(err), i);
        c->connected = true;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
          die(strerror(errno), i);
        send_req(c, i);
        continue;
      }
      ssize_t r = read(c->fd, c->reply + c->got, ECHO_MSG - c->got);
      if (r == 0)
        die("the server closed the connection", i);
      if (r < 0) {
        if (errno == EAGAIN || errno == EINTR)
          continue;
        die(strerror(errno), i);
      }
      c->got += (uint32_t)r;
      if (c->got < ECHO_MSG)
        continue;
      unsigned char want_msg[ECHO_MSG];
      make_msg(i, c->seq, want_msg);
      if (memcmp(want_msg, c->reply, ECHO_MSG) != 0)
        die("the reply differs from the request", i);
      c->seq++;
      replies++;
      last_reply = now;
      if (!c->answered) {
        c->answered = true;
        ramping--;
        if (++answered == nconns)
          warm_until = now + ECHO_WARMUP_S;
      }
      send_req(c, i);
    }
    if (now - last_reply > ECHO_STALL_S)
      die("no reply for 5 s", -1);
    if (warm_until > 0 && start == 0 && now >= warm_until) {
      start = now;
      at_start = replies;
      cpu_start = bench_cpu();
      srv_start = server_pid ? proc_cpu(server_pid) : -1;
    }
    if (start > 0 && now >= start + ECHO_MEASURE_S) {
      end = now;
      break;
    }
  }
  double secs = end - start;
  double client_busy = (bench_cpu() - cpu_start) / secs;
  double srv_end = server_pid ? proc_cpu(server_pid) : -1;
  char workload[32];
  if (nconns == 1000)
    snprintf(workload, sizeof workload, "echo_1k");
  else if (nconns == 10000)
    snprintf(workload, sizeof workload, "echo_10k");
  else
    snprintf(workload, sizeof workload, "echo_%ld", nconns);
  bench_report(workload, impl, (double)(replies - at_start) / secs, "req/s");
  fprintf(stderr,
          "echo_client %s: %ld connections, %.0f req/s, client busy "
          "%.0f%%",
          impl, nconns, (double)(replies - at_start) / secs, client_busy * 100);
  if (srv_start >= 0 && srv_end >= 0)
    fprintf(stderr, ", server busy %.0f%%", (srv_end - srv_start) / secs * 100);
  fprintf(stderr, "\n");
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  for (long i = 0; i < opened; i++) {
    setsockopt(cs[i].fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(cs[i].fd);
  }
  close(ep);
  free(cs);
  return 0;
}
