/* The floor of the echo-server benchmark (bench/run green): a plain libuv
 * callback echo server, one thread, as a libuv user writes it for speed.
 * Reads land in one static buffer (the read callback consumes them at
 * once); each is written back with uv_try_write, and only what the socket
 * did not take at once is copied into a uv_write request. Listens on
 * 127.0.0.1:PORT until killed.
 *
 *   echo_libuv PORT */
#define _GNU_SOURCE /* libuv's header needs pthread_rwlock_t */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

static char slab[65536];

typedef struct wreq {
  uv_write_t req;
  char data[];
} wreq;

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)h;
  (void)hint;
  *buf = uv_buf_init(slab, sizeof slab);
}

static void on_close(uv_handle_t *h) {
  free(h);
}

static void on_written(uv_write_t *req, int status) {
  (void)status;
  free(req);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  if (n < 0) { /* end of file or a reset */
    uv_close((uv_handle_t *)s, on_close);
    return;
  }
  if (n == 0)
    return;
  uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
  int w = uv_try_write(s, &b, 1);
  if (w == n)
    return;
  if (w < 0 && w != UV_EAGAIN) {
    uv_close((uv_handle_t *)s, on_close);
    return;
  }
  size_t done = w > 0 ? (size_t)w : 0, rest = (size_t)n - done;
  wreq *r = malloc(sizeof *r + rest);
  if (!r) {
    uv_close((uv_handle_t *)s, on_close);
    return;
  }
  memcpy(r->data, buf->base + done, rest);
  b = uv_buf_init(r->data, (unsigned)rest);
  if (uv_write(&r->req, s, &b, 1, on_written) != 0) {
    free(r);
    uv_close((uv_handle_t *)s, on_close);
  }
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0)
    return;
  uv_tcp_t *c = malloc(sizeof *c);
  if (!c)
    return;
  uv_tcp_init(server->loop, c);
  if (uv_accept(server, (uv_stream_t *)c) != 0 ||
      uv_read_start((uv_stream_t *)c, on_alloc, on_read) != 0)
    uv_close((uv_handle_t *)c, on_close);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: echo_libuv PORT\n");
    return 2;
  }
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  uv_loop_t *loop = uv_default_loop();
  uv_tcp_t server;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
  uv_tcp_init(loop, &server);
  int e = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
  if (e == 0)
    e = uv_listen((uv_stream_t *)&server, 4096, on_connection);
  if (e != 0) {
    fprintf(stderr, "echo_libuv: listen: %s\n", uv_strerror(e));
    return 1;
  }
  uv_run(loop, UV_RUN_DEFAULT);
  return 1;
}
