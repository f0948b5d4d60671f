/* green_echo_server: a TCP echo server on green tasks, one task per
 * connection, all on one thread; frames are a 4-byte big-endian length and
 * that many bytes, echoed back whole. Its client, in the same process and
 * on the same loop, holds many connections at once, sends frames of random
 * sizes and checks every reply byte for byte.
 *
 *   green_echo_server [-c CONNECTIONS] [-m MESSAGES] [-t SECONDS] [-l LOOPS]
 *       (defaults 1000, 10, 60, 0): prints the totals; exit 0 when every
 *       reply matched, 1 otherwise
 *
 * With -l N the server runs on N threads of its own, one loop each, every
 * one with its own listening socket on the same port (SO_REUSEPORT: the
 * kernel spreads the connections), as gevent or asyncio deployments run one
 * process per core; the client stays on the main thread's loop.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cfutures.h>

#define MAX_FRAME 4096

static double timeout_s = 60;
static int messages = 10;
static struct sockaddr_in server_addr;
static long bad_replies, bytes_echoed;

static int read_exact(int fd, void *buf, size_t len) {
  char *p = buf;
  while (len > 0) {
    size_t got;
    int rc = cf_green_read(fd, p, len, timeout_s, &got);
    if (rc != 0)
      return rc;
    if (got == 0)
      return CF_EEOF;
    p += got;
    len -= got;
  }
  return 0;
}

/* One connection: echo frames until the client hangs up. */
static int serve(void *arg, void **out) {
  int fd = (int)(intptr_t)arg;
  char buf[MAX_FRAME];
  int rc;
  uint32_t n;
  while ((rc = read_exact(fd, &n, sizeof n)) == 0) {
    size_t len = ntohl(n);
    if (len > MAX_FRAME) {
      rc = cf_fail(CF_ETOOBIG, "frame of %zu bytes", len);
      break;
    }
    if ((rc = read_exact(fd, buf, len)) != 0 ||
        (rc = cf_green_write_all(fd, &n, sizeof n, timeout_s)) != 0 ||
        (rc = cf_green_write_all(fd, buf, len, timeout_s)) != 0)
      break;
  }
  close(fd);
  *out = NULL;
  return rc == CF_EEOF ? 0 : rc;
}

/* A listening socket on 127.0.0.1, on server_addr's port (0: any, then
 * written back), shareable with SO_REUSEPORT. -1 on failure. */
static int listen_on(struct sockaddr_in *addr) {
  int one = 1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  socklen_t alen = sizeof *addr;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) ||
      bind(fd, (struct sockaddr *)addr, sizeof *addr) != 0 ||
      listen(fd, 4096) != 0 ||
      getsockname(fd, (struct sockaddr *)addr, &alen) != 0) {
    perror("green_echo_server: listen");
    if (fd >= 0)
      close(fd);
    return -1;
  }
  return fd;
}

enum { MAX_LOOPS = 64 };
static _Atomic long accepted[MAX_LOOPS + 1]; /* per server loop */

typedef struct acceptor_arg {
  int lfd;
  int index; /* which loop, for the counts */
} acceptor_arg;

/* Accepts connections and gives each its own green task. */
static int acceptor(void *arg, void **out) {
  acceptor_arg *a = arg;
  int lfd = a->lfd;
  cf_loop *l = cf_loop_current();
  for (;;) {
    int c;
    int rc = cf_green_accept(lfd, CF_FOREVER, &c);
    if (rc == CF_ECANCELLED)
      break;
    if (rc != 0)
      return rc;
    atomic_fetch_add(&accepted[a->index], 1);
    cf_future *f;
    if (cf_loop_spawn(l, serve, (void *)(intptr_t)c, &f) != 0) {
      close(c);
      continue;
    }
    cf_future_unref(f);
  }
  *out = NULL;
  return CF_ECANCELLED;
}

/* One client connection: frames of random sizes, each reply checked. */
static int client(void *arg, void **out) {
  unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u + 1;
  *out = NULL;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return cf_fail(CF_ESYS, "socket failed");
  int rc = cf_green_connect(fd, (struct sockaddr *)&server_addr,
                            sizeof server_addr, timeout_s);
  char msg[MAX_FRAME], reply[MAX_FRAME];
  for (int i = 0; rc == 0 && i < messages; i++) {
    size_t len = (size_t)(rand_r(&seed) % MAX_FRAME);
    for (size_t k = 0; k < len; k++)
      msg[k] = (char)rand_r(&seed);
    uint32_t n = htonl((uint32_t)len), back;
    if ((rc = cf_green_write_all(fd, &n, sizeof n, timeout_s)) != 0 ||
        (rc = cf_green_write_all(fd, msg, len, timeout_s)) != 0 ||
        (rc = read_exact(fd, &back, sizeof back)) != 0 ||
        (rc = ntohl(back) == len ? 0 : CF_EINVAL) != 0 ||
        (rc = read_exact(fd, reply, len)) != 0)
      break;
    if (memcmp(msg, reply, len) != 0)
      rc = CF_EINVAL;
    bytes_echoed += (long)len; /* one loop thread: no race */
  }
  close(fd);
  if (rc != 0)
    bad_replies++;
  return rc;
}

/* A server thread: its own loop, its own listener, until told to stop. */
typedef struct server {
  pthread_t th;
  acceptor_arg a;
  cf_future *stop; /* completed by main when the clients are done */
  int rc;
} server;

static void *server_main(void *p) {
  server *s = p;
  cf_loop *l;
  cf_future *acc;
  if (cf_loop_new(NULL, &l) != 0 ||
      cf_loop_spawn(l, acceptor, &s->a, &acc) != 0) {
    s->rc = 1;
    return NULL;
  }
  s->rc = cf_loop_run_until_complete(l, s->stop, CF_FOREVER);
  cf_green_cancel(acc);
  cf_loop_free(l); /* the acceptor and its connections unwind */
  cf_future_unref(acc);
  close(s->a.lfd);
  return NULL;
}

int main(int argc, char **argv) {
  int conns = 1000, loops = 0;
  for (int i = 1; i < argc; i++) {
    if (i + 1 < argc && strcmp(argv[i], "-c") == 0)
      conns = atoi(argv[++i]);
    else if (i + 1 < argc && strcmp(argv[i], "-m") == 0)
      messages = atoi(argv[++i]);
    else if (i + 1 < argc && strcmp(argv[i], "-t") == 0)
      timeout_s = atof(argv[++i]);
    else if (i + 1 < argc && strcmp(argv[i], "-l") == 0)
      loops = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: green_echo_server [-c CONNS] [-m MESSAGES] "
                      "[-t SECONDS] [-l LOOPS]\n");
      return 2;
    }
  }
  if (conns < 1 || conns > 30000 || messages < 0 || !(timeout_s > 0) ||
      loops < 0 || loops > MAX_LOOPS) {
    fprintf(stderr, "green_echo_server: connections 1..30000, messages "
                    ">= 0, a positive timeout, loops 0..%d\n", MAX_LOOPS);
    return 2;
  }
  /* Two descriptors per connection (both ends are ours) and some spare. */
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rlim_t want = (rlim_t)conns * 2 + 64;
  if (rl.rlim_cur < want) {
    rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  server_addr.sin_family = AF_INET;
  server_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int lfd = listen_on(&server_addr); /* fixes the port for the others */
  if (lfd < 0)
    return 1;
  server servers[MAX_LOOPS];
  cf_future *stop = cf_future_new();
  for (int i = 0; i < loops; i++) {
    servers[i] = (server){.a = {.lfd = i == 0 ? lfd : listen_on(&server_addr),
                                .index = i + 1},
                          .stop = stop};
    if (servers[i].a.lfd < 0 ||
        pthread_create(&servers[i].th, NULL, server_main, &servers[i]) != 0)
      return 1;
  }
  cf_loop *l;
  if (cf_loop_new(NULL, &l) != 0) {
    fprintf(stderr, "green_echo_server: %s\n", cf_last_error());
    return 1;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  cf_future *acc = NULL, **clients = calloc((size_t)conns, sizeof *clients);
  acceptor_arg here = {.lfd = lfd, .index = 0};
  if (loops == 0) /* the server on the client's loop */
    cf_loop_spawn(l, acceptor, &here, &acc);
  for (int i = 0; i < conns; i++)
    if (cf_loop_spawn(l, client, (void *)(intptr_t)i, &clients[i]) != 0) {
      fprintf(stderr, "green_echo_server: %s\n", cf_last_error());
      return 1;
    }
  /* Run until every client is done (the acceptor runs for ever). */
  int rc = 0;
  for (int i = 0; i < conns && rc == 0; i++)
    rc = cf_loop_run_until_complete(l, clients[i], timeout_s * 2);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (acc)
    cf_green_cancel(acc);
  cf_loop_free(l); /* the acceptor and any server task unwind */
  cf_future_set_result(stop, NULL, NULL);
  int server_failed = 0;
  for (int i = 0; i < loops; i++) {
    pthread_join(servers[i].th, NULL);
    server_failed += servers[i].rc != 0;
  }
  cf_future_unref(stop);
  if (loops == 0)
    close(lfd);
  int failed = 0;
  for (int i = 0; i < conns; i++) {
    if (cf_future_result(clients[i], 0, NULL) != 0)
      failed++;
    cf_future_unref(clients[i]);
  }
  cf_future_unref(acc);
  free(clients);
  double secs = (double)(t1.tv_sec - t0.tv_sec) +
                (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
  printf("green_echo_server: %d connections x %d messages in %.2f s, server "
         "on %s: %ld bytes echoed, %d failed connections, %ld bad replies\n",
         conns, messages, secs, loops ? "its own loops" : "the client's loop",
         bytes_echoed, failed, bad_replies);
  long spread = 0;
  for (int i = 1; i <= loops; i++) {
    printf("  server loop %d accepted %ld connections\n", i,
           atomic_load(&accepted[i]));
    spread += atomic_load(&accepted[i]) > 0;
  }
  /* With several loops, the kernel gave each some of the connections. */
  bool spread_ok = loops < 2 || conns < 100 || spread == loops;
  return rc == 0 && failed == 0 && bad_replies == 0 && server_failed == 0 &&
                 spread_ok
             ? 0
             : 1;
}
