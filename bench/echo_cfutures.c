/* The echo server of bench/run green on cfutures' green tasks: one loop on
 * one thread, one green task per connection, each echoing whatever it reads
 * (cf_green_read, cf_green_write_all) until the client hangs up. Listens
 * on 127.0.0.1:PORT until killed; bench/echo_client is its load.
 * With --pool, the same code runs as thread-pool tasks on one worker
 * instead (M:N: each wait suspends the task's fiber, the poller thread
 * wakes it; see docs/green.md), as Go runs goroutines with GOMAXPROCS=1.
 *
 *   echo_cfutures [--pool] PORT */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cfutures.h>

/* One connection: echo until end of file or an error (a reset). */
static int serve(void *arg, void **out) {
  int fd = (int)(intptr_t)arg;
  char buf[4096];
  size_t got;
  int rc;
  *out = NULL;
  while ((rc = cf_green_read(fd, buf, sizeof buf, CF_FOREVER, &got)) == 0 &&
         got > 0)
    if ((rc = cf_green_write_all(fd, buf, got, CF_FOREVER)) != 0)
      break;
  close(fd);
  return 0; /* a reset by the client is how a run ends, not a failure */
}

static cf_executor *pool; /* --pool */

static int acceptor(void *arg, void **out) {
  int lfd = (int)(intptr_t)arg;
  cf_loop *l = pool ? NULL : cf_loop_current();
  *out = NULL;
  for (;;) {
    int c;
    int rc = cf_green_accept(lfd, CF_FOREVER, &c);
    if (rc != 0) {
      fprintf(stderr, "echo_cfutures: %s\n", cf_last_error());
      return rc;
    }
    cf_future *f;
    if ((pool ? cf_submit(pool, serve, (void *)(intptr_t)c, &f)
              : cf_loop_spawn(l, serve, (void *)(intptr_t)c, &f)) != 0) {
      close(c);
      continue;
    }
    cf_future_unref(f);
  }
}

int main(int argc, char **argv) {
  bool use_pool = argc == 3 && strcmp(argv[1], "--pool") == 0;
  if (argc != 2 && !use_pool) {
    fprintf(stderr, "usage: echo_cfutures [--pool] PORT\n");
    return 2;
  }
  const char *port = argv[argc - 1];
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  struct sockaddr_in addr = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)atoi(port)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int one = 1;
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
      bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
      listen(lfd, 4096) != 0) {
    perror("echo_cfutures: listen");
    return 1;
  }
  cf_future *acc;
  if (use_pool) {
    cf_thread_pool_opts o = {.max_workers = 1};
    if (cf_thread_pool_new(&o, &pool) != 0 ||
        cf_submit(pool, acceptor, (void *)(intptr_t)lfd, &acc) != 0) {
      fprintf(stderr, "echo_cfutures: %s\n", cf_last_error());
      return 1;
    }
    cf_future_result(acc, CF_FOREVER, NULL);
    return 1;
  }
  cf_loop *l;
  if (cf_loop_new(NULL, &l) != 0 ||
      cf_loop_spawn(l, acceptor, (void *)(intptr_t)lfd, &acc) != 0) {
    fprintf(stderr, "echo_cfutures: %s\n", cf_last_error());
    return 1;
  }
  /* Until killed, or until the acceptor fails. */
  cf_loop_run_until_complete(l, acc, CF_FOREVER);
  return 1;
}
