/* The example HTTP server: an accept thread hands each connection to the
 * thread pool; the task reads the request line, asks the handler for the
 * response and writes it with Connection: close. */
#include "httpd.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cfutures.h>

struct httpd {
  int listen_fd;
  int port;
  httpd_handler handler;
  void *ctx;
  cf_executor *pool;
  pthread_t acceptor;
  atomic_bool stop;
};

typedef struct conn {
  httpd *h;
  int fd;
} conn;

static const char *reason(int status) {
  return status == 200 ? "OK" : status == 404 ? "Not Found" : "Error";
}

static int serve(void *arg, void **out) {
  conn *c = arg;
  (void)out;
  char req[2048];
  size_t got = 0;
  /* Read the request head (bounded in size and time). */
  while (got < sizeof req - 1 && !memmem(req, got, "\r\n\r\n", 4)) {
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, 5000) <= 0)
      break;
    ssize_t r = read(c->fd, req + got, sizeof req - 1 - got);
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  req[got] = '\0';
  char method[8] = "", path[1024] = "";
  if (sscanf(req, "%7s %1023s", method, path) == 2) {
    char *body = NULL;
    size_t len = 0;
    int status = c->h->handler(path, &body, &len, c->h->ctx);
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.0 %d %s\r\nContent-Type: text/html\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, reason(status), len);
    if (send(c->fd, head, (size_t)n, MSG_NOSIGNAL) == n && len)
      send(c->fd, body, len, MSG_NOSIGNAL);
    free(body);
  }
  close(c->fd);
  free(c);
  return 0;
}

static void *accept_loop(void *arg) {
  httpd *h = arg;
  while (!atomic_load(&h->stop)) {
    struct pollfd p = {.fd = h->listen_fd, .events = POLLIN};
    if (poll(&p, 1, 100) <= 0)
      continue;
    int fd = accept4(h->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    conn *c = malloc(sizeof *c);
    cf_future *f;
    if (!c) {
      close(fd);
      continue;
    }
    c->h = h;
    c->fd = fd;
    if (cf_submit(h->pool, serve, c, &f) != 0) {
      close(fd);
      free(c);
      continue;
    }
    cf_future_unref(f); /* fire and forget: the pool owns the task */
  }
  return NULL;
}

httpd *httpd_start(httpd_handler handler, void *ctx, size_t workers) {
  httpd *h = calloc(1, sizeof *h);
  if (!h)
    return NULL;
  h->handler = handler;
  h->ctx = ctx;
  h->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  cf_thread_pool_opts o = {.max_workers = workers,
                           .thread_name_prefix = "httpd"};
  if (h->listen_fd < 0 || bind(h->listen_fd, (struct sockaddr *)&a, sizeof a) ||
      listen(h->listen_fd, 512) ||
      getsockname(h->listen_fd, (struct sockaddr *)&a, &alen) ||
      cf_thread_pool_new(&o, &h->pool)) {
    if (h->listen_fd >= 0)
      close(h->listen_fd);
    free(h);
    return NULL;
  }
  h->port = ntohs(a.sin_port);
  if (pthread_create(&h->acceptor, NULL, accept_loop, h)) {
    cf_executor_free(h->pool);
    close(h->listen_fd);
    free(h);
    return NULL;
  }
  return h;
}

int httpd_port(const httpd *h) {
  return h->port;
}

void httpd_stop(httpd *h) {
  atomic_store(&h->stop, true);
  pthread_join(h->acceptor, NULL);
  close(h->listen_fd);
  cf_executor_free(h->pool); /* waits for connections in progress */
  free(h);
}
