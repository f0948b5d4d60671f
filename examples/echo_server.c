/* echo_server: a length-prefixed TCP echo server and its load client, both
 * on the cfutures thread pool.
 *
 *   echo_server [selftest] [-c CONNS] [-m MSGS] [-s MAX_SIZE]
 *       server and client in one process, on 127.0.0.1 (the default)
 *   echo_server serve [-p PORT] [-w MAX_CONNS]
 *       serves on 127.0.0.1 until SIGINT or SIGTERM
 *   echo_server client -p PORT [-c CONNS] [-m MSGS] [-s MAX_SIZE]
 *       loads a server and checks every reply
 *
 * A frame is a 4-byte big-endian length and that many bytes (at most
 * MAX_MSG). TCP is a byte stream: a frame may arrive in many pieces, or two
 * frames in one read; read_exact reassembles them, so messages are never
 * split or glued together.
 *
 * Server: an accept thread hands each connection to a pool of MAX_CONNS
 * workers as one task (serve), which echoes frames until the client closes.
 * Connections beyond MAX_CONNS are closed at once: nothing queues unbounded.
 * Client: each connection is one task (client_conn) on a pool of CONNS
 * workers; it sends MSGS messages of random sizes, cut into random pieces
 * or two glued into one write, and checks every byte of every reply. The
 * main thread collects the connections with cf_as_completed, within an
 * overall deadline. Every wait on a socket is bounded (IO_TIMEOUT). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cfutures.h>

#define MAX_MSG       (64 * 1024) /* largest payload a frame may carry */
#define IO_TIMEOUT_MS 10000       /* longest wait for a socket to be ready */
#define SMALL         4096 /* messages this small may be glued in pairs */

/* ---- framing ------------------------------------------------------------ */

/* Reads (or, if `writing`, writes) exactly n bytes. Returns 0; 1 on EOF
 * before the first byte (a clean end between frames); -1 on an error, EOF
 * inside the data, IO_TIMEOUT without progress, or stop_fd readable (the
 * server is stopping; -1 means none). */
static int io_exact(int fd, int stop_fd, void *buf, size_t n, bool writing) {
  char *p = buf;
  size_t done = 0;
  while (done < n) {
    struct pollfd pfd[2] = {{.fd = fd, .events = writing ? POLLOUT : POLLIN},
                            {.fd = stop_fd, .events = POLLIN}};
    int r = poll(pfd, 2, IO_TIMEOUT_MS);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0 || pfd[1].revents)
      return -1;
    ssize_t k = writing
                    ? send(fd, p + done, n - done, MSG_NOSIGNAL | MSG_DONTWAIT)
                    : recv(fd, p + done, n - done, MSG_DONTWAIT);
    if (k < 0 && (errno == EAGAIN || errno == EINTR))
      continue;
    if (k == 0 && !writing && done == 0)
      return 1;
    if (k <= 0)
      return -1;
    done += (size_t)k;
  }
  return 0;
}

/* Reads one frame into buf (room for MAX_MSG): 0 and *len, 1 on a clean
 * EOF, -1 on an error or a length above MAX_MSG. */
static int read_frame(int fd, int stop_fd, char *buf, uint32_t *len) {
  uint32_t be;
  int r = io_exact(fd, stop_fd, &be, 4, false);
  if (r != 0)
    return r;
  *len = ntohl(be);
  if (*len > MAX_MSG)
    return -1;
  return io_exact(fd, stop_fd, buf, *len, false) == 0 ? 0 : -1;
}

static void put_header(char *at, uint32_t len) {
  uint32_t be = htonl(len);
  memcpy(at, &be, 4);
}

static void no_delay(int fd) {
  int one = 1; /* send small pieces at once: no Nagle delay per frame */
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ---- server ------------------------------------------------------------- */

typedef struct server {
  int listen_fd, port;
  int stop[2]; /* a pipe: written once by server_stop, polled by everyone */
  size_t max_conns;
  cf_executor *pool;
  pthread_t acceptor;
  /* Statistics and a bound only (no data is published through them), so
   * relaxed; read after the pool is freed, which joins the workers. */
  atomic_size_t open;
  atomic_long messages, errors;
} server;

typedef struct conn {
  server *s;
  int fd;
} conn;

/* A task: echoes frames on one connection until the client closes it. */
static int serve(void *arg, void **out) {
  (void)out;
  conn *c = arg;
  server *s = c->s;
  char *buf = malloc(4 + MAX_MSG); /* header, then the payload */
  uint32_t len;
  int r = buf ? 0 : -1;
  while (r == 0 && (r = read_frame(c->fd, s->stop[0], buf + 4, &len)) == 0) {
    put_header(buf, len);
    r = io_exact(c->fd, s->stop[0], buf, 4 + (size_t)len, true);
    if (r == 0)
      atomic_fetch_add_explicit(&s->messages, 1, memory_order_relaxed);
  }
  if (r < 0)
    atomic_fetch_add_explicit(&s->errors, 1, memory_order_relaxed);
  free(buf);
  close(c->fd);
  free(c);
  atomic_fetch_sub_explicit(&s->open, 1, memory_order_relaxed);
  return 0;
}

static void *accept_loop(void *arg) {
  server *s = arg;
  for (;;) {
    struct pollfd p[2] = {{.fd = s->listen_fd, .events = POLLIN},
                          {.fd = s->stop[0], .events = POLLIN}};
    if ((poll(p, 2, -1) < 0 && errno != EINTR) || p[1].revents)
      return NULL; /* stopping */
    int fd =
        p[0].revents ? accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC) : -1;
    if (fd < 0)
      continue;
    conn *c = malloc(sizeof *c);
    cf_future *f;
    if (!c ||
        atomic_load_explicit(&s->open, memory_order_relaxed) >= s->max_conns) {
      free(c); /* full: refuse rather than queue */
      close(fd);
      continue;
    }
    no_delay(fd);
    *c = (conn){s, fd};
    atomic_fetch_add_explicit(&s->open, 1, memory_order_relaxed);
    if (cf_submit(s->pool, serve, c, &f) != 0) {
      atomic_fetch_sub_explicit(&s->open, 1, memory_order_relaxed);
      close(fd);
      free(c);
      continue;
    }
    cf_future_unref(f); /* fire and forget: the task owns c */
  }
}

/* Listens on 127.0.0.1:port (0: ephemeral) with max_conns workers. */
static int server_start(server *s, int port, size_t max_conns) {
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  int one = 1;
  cf_thread_pool_opts o = {.max_workers = max_conns,
                           .thread_name_prefix = "echo"};
  s->max_conns = max_conns;
  s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s->listen_fd < 0 ||
      setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
      bind(s->listen_fd, (struct sockaddr *)&a, sizeof a) ||
      listen(s->listen_fd, 256) ||
      getsockname(s->listen_fd, (struct sockaddr *)&a, &alen) ||
      pipe2(s->stop, O_CLOEXEC) || cf_thread_pool_new(&o, &s->pool) ||
      pthread_create(&s->acceptor, NULL, accept_loop, s)) {
    perror("echo_server: cannot start the server");
    return -1; /* the process exits: no cleanup needed */
  }
  s->port = ntohs(a.sin_port);
  return 0;
}

/* Stops accepting, ends every connection, waits for the tasks. */
static void server_stop(server *s) {
  (void)!write(s->stop[1], "x", 1); /* wakes every poll on stop[0] */
  pthread_join(s->acceptor, NULL);
  cf_executor_free(s->pool);
  close(s->listen_fd);
  close(s->stop[0]);
  close(s->stop[1]);
}

/* ---- client ------------------------------------------------------------- */

typedef struct job {
  int port, id, messages;
  uint32_t max_size;
} job;

typedef struct tally {
  long messages;
  long long bytes;
} tally;

static uint64_t next_random(uint64_t *x) { /* xorshift64* */
  *x ^= *x >> 12, *x ^= *x << 25, *x ^= *x >> 27;
  return *x * 2685821657736338717u;
}

/* Appends a frame of `len` random bytes at `at`. */
static void make_frame(char *at, uint32_t len, uint64_t *rng) {
  put_header(at, len);
  for (uint32_t i = 0; i < len; i += 8) {
    uint64_t v = next_random(rng);
    memcpy(at + 4 + i, &v, len - i < 8 ? len - i : 8);
  }
}

static size_t first_difference(const char *a, const char *b, size_t n) {
  size_t i = 0;
  while (i < n && a[i] == b[i])
    i++;
  return i;
}

/* A task: one connection's whole conversation. The result is a tally. */
static int client_conn(void *arg, void **out) {
  const job *j = arg;
  uint64_t rng = 0x9e3779b97f4a7c15u * (uint64_t)(j->id + 1);
  char *wire = malloc(2 * (4 + MAX_MSG)); /* frames as sent */
  char *reply = malloc(MAX_MSG);
  tally *t = calloc(1, sizeof *t);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)j->port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int rc = 0;
  if (!wire || !reply || !t)
    rc = cf_fail(CF_ENOMEM, "connection %d: out of memory", j->id);
  else if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
    rc = cf_fail(CF_ESYS, "connection %d: connect: %s", j->id, strerror(errno));
  else
    no_delay(fd);
  for (int m = 0; rc == 0 && m < j->messages;) {
    /* One or two messages (two only if both are small: glued in a write). */
    uint32_t len[2], off[2];
    int k = 0;
    size_t total = 0;
    do {
      /* Sizes 0..max_size; one in four drawn from 0..SMALL instead, so
       * that pairs to glue come up often. */
      uint32_t cap = next_random(&rng) % 4 == 0 && j->max_size > SMALL
                         ? SMALL
                         : j->max_size;
      uint32_t size = (uint32_t)(next_random(&rng) % (cap + 1));
      if (k == 1 && size > SMALL)
        break;
      len[k] = size;
      off[k] = (uint32_t)total;
      make_frame(wire + total, size, &rng);
      total += 4 + size;
      k++;
    } while (k < 2 && m + k < j->messages && len[0] <= SMALL &&
             next_random(&rng) % 2);
    /* Send the bytes in one to three pieces, cut at random places. */
    size_t sent = 0;
    for (int piece = 0; rc == 0 && sent < total; piece++) {
      size_t left = total - sent;
      size_t n = piece < 2 ? 1 + next_random(&rng) % left : left;
      if (io_exact(fd, -1, wire + sent, n, true) != 0)
        rc = cf_fail(CF_ESYS, "connection %d: send failed", j->id);
      sent += n;
    }
    /* Read the replies and compare them with what was sent. */
    for (int i = 0; rc == 0 && i < k; i++, m++) {
      uint32_t got;
      if (read_frame(fd, -1, reply, &got) != 0)
        rc = cf_fail(CF_ESYS, "connection %d, message %d: no reply", j->id, m);
      else if (got != len[i])
        rc = cf_fail(CF_EFAILED,
                     "connection %d, message %d: %u bytes back, "
                     "%u sent",
                     j->id, m, got, len[i]);
      else if (memcmp(reply, wire + off[i] + 4, got) != 0)
        rc = cf_fail(CF_EFAILED,
                     "connection %d, message %d: reply byte %zu "
                     "differs",
                     j->id, m, first_difference(reply, wire + off[i] + 4, got));
      else
        t->messages++, t->bytes += got;
    }
  }
  if (fd >= 0)
    close(fd);
  free(wire);
  free(reply);
  if (rc != 0) {
    free(t);
    return rc;
  }
  *out = t;
  return 0;
}

/* Runs `conns` client connections against 127.0.0.1:port; prints a summary
 * and returns the number of messages echoed intact (-1 if none ran). */
static long run_clients(int port, int conns, int messages, uint32_t max_size,
                        double deadline_s, long *failed) {
  cf_executor *pool;
  cf_thread_pool_opts o = {.max_workers = (size_t)conns,
                           .thread_name_prefix = "client"};
  job *jobs = calloc((size_t)conns, sizeof *jobs);
  cf_future **fs = calloc((size_t)conns, sizeof *fs);
  if (!jobs || !fs || cf_thread_pool_new(&o, &pool) != 0)
    return -1;
  int n = 0;
  for (int i = 0; i < conns; i++) {
    jobs[i] = (job){port, i, messages, max_size};
    if (cf_submit_with(pool, client_conn, &jobs[i], free, &fs[n]) == 0)
      n++;
  }
  *failed = conns - n;
  long echoed = 0;
  long long bytes = 0;
  cf_as_completed *it;
  cf_future *f;
  if (n > 0 && cf_as_completed_new(fs, (size_t)n, deadline_s, &it) == 0) {
    int r;
    while ((r = cf_as_completed_next(it, &f)) == 0) {
      void *v;
      cf_error e;
      if (cf_future_result(f, 0, &v) == 0) {
        echoed += ((tally *)v)->messages;
        bytes += ((tally *)v)->bytes;
      } else if (cf_future_exception(f, 0, &e) == 0) {
        fprintf(stderr, "echo_server: %s\n", e.message);
        (*failed)++;
      }
    }
    if (r == CF_ETIMEDOUT) {
      fprintf(stderr, "echo_server: not done within %.0f s\n", deadline_s);
      for (int i = 0; i < n; i++)
        *failed += !cf_future_done(fs[i]);
    }
    cf_as_completed_free(it);
  }
  cf_executor_free(pool); /* waits: each task is bounded by IO_TIMEOUT */
  for (int i = 0; i < n; i++)
    cf_future_unref(fs[i]);
  free(fs);
  free(jobs);
  printf("connections:    %d\n", conns);
  printf("failed:         %ld\n", *failed);
  printf("messages:       %ld of %ld\n", echoed, (long)conns * messages);
  printf("bytes:          %lld each way\n", bytes);
  return echoed;
}

/* ---- main --------------------------------------------------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int usage(void) {
  fprintf(stderr,
          "usage: echo_server [selftest] [-c CONNS] [-m MSGS] [-s MAX_SIZE]\n"
          "       echo_server serve [-p PORT] [-w MAX_CONNS]\n"
          "       echo_server client -p PORT [-c CONNS] [-m MSGS] "
          "[-s MAX_SIZE]\n"
          "  CONNS 1..200 (50), MSGS 1..100000 (200), MAX_SIZE 0..%d (%d), "
          "MAX_CONNS 1..1000 (64)\n",
          MAX_MSG, MAX_MSG);
  return 2;
}

int main(int argc, char **argv) {
  const char *mode = "selftest";
  long conns = 50, messages = 200, max_size = MAX_MSG, port = 0, max_conns = 64;
  int i = 1;
  if (i < argc && argv[i][0] != '-')
    mode = argv[i++];
  for (; i + 1 < argc; i += 2) {
    long v = atol(argv[i + 1]);
    if (strcmp(argv[i], "-c") == 0)
      conns = v;
    else if (strcmp(argv[i], "-m") == 0)
      messages = v;
    else if (strcmp(argv[i], "-s") == 0)
      max_size = v;
    else if (strcmp(argv[i], "-p") == 0)
      port = v;
    else if (strcmp(argv[i], "-w") == 0)
      max_conns = v;
    else
      return usage();
  }
  bool selftest = strcmp(mode, "selftest") == 0;
  if (i != argc || conns < 1 || conns > 200 || messages < 1 ||
      messages > 100000 || max_size < 0 || max_size > MAX_MSG || port < 0 ||
      port > 65535 || max_conns < 1 || max_conns > 1000 ||
      (!selftest && strcmp(mode, "serve") && strcmp(mode, "client")) ||
      (!strcmp(mode, "client") && port == 0))
    return usage();

  if (strcmp(mode, "serve") == 0) {
    /* Signals are taken by sigwait below, so block them in every thread. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    server s = {0};
    if (server_start(&s, (int)port, (size_t)max_conns) != 0)
      return 1;
    printf("echo_server: listening on 127.0.0.1:%d, %ld connections at most\n",
           s.port, max_conns);
    fflush(stdout);
    int sig;
    sigwait(&sigs, &sig);
    server_stop(&s);
    printf("echo_server: %ld messages echoed, %ld broken connections\n",
           atomic_load_explicit(&s.messages, memory_order_relaxed),
           atomic_load_explicit(&s.errors, memory_order_relaxed));
    return 0;
  }

  server s = {0};
  if (selftest) {
    /* One worker per client connection: each holds its worker to the end. */
    if (server_start(&s, 0, (size_t)conns) != 0)
      return 1;
    port = s.port;
  }
  printf("echo: %ld connections x %ld messages of 0..%ld bytes to port %ld\n",
         conns, messages, max_size, port);
  long failed = 0;
  double t0 = now_s();
  long echoed = run_clients((int)port, (int)conns, (int)messages,
                            (uint32_t)max_size, 120, &failed);
  double secs = now_s() - t0;
  bool ok = echoed == conns * messages && failed == 0;
  if (selftest) {
    server_stop(&s);
    long served = atomic_load_explicit(&s.messages, memory_order_relaxed);
    printf("server echoed:  %ld\n", served);
    printf("server errors:  %ld\n",
           atomic_load_explicit(&s.errors, memory_order_relaxed));
    ok = ok && served == echoed &&
         atomic_load_explicit(&s.errors, memory_order_relaxed) == 0;
  }
  printf("time:           %.2f s (%.0f messages/s)\n", secs,
         (double)(echoed > 0 ? echoed : 0) / secs);
  printf("result:         %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
