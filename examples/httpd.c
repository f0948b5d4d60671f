/* The examples' HTTP server (see httpd.h): an accept thread, and one
 * thread-pool task per connection.
 *
 *   accept thread:  poll(listen fd, wake pipe) -> accept -> cf_submit(serve)
 *   pool worker:    serve(): read the head, call the handler, write, close
 *
 * httpd_stop writes to the wake pipe, so the accept thread never needs to
 * poll on a timer, then frees the pool, which waits for the tasks. */
#include "httpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cfutures.h>

#define HEAD_MAX 8192 /* request line + headers */

struct httpd {
  httpd_opts opts;
  httpd_handler handler;
  void *ctx;
  int listen_fd;
  int port;
  int wake[2]; /* a pipe: httpd_stop writes, the accept thread polls */
  cf_executor *pool;
  pthread_t acceptor;
  /* Connections accepted and not yet closed; only a bound, so relaxed. */
  atomic_size_t open;
  atomic_size_t max_open; /* the most open at once (the accept thread's) */
  pthread_mutex_t lock;   /* protects stopping; cond wakes httpd_sleep */
  pthread_cond_t cond;
  bool stopping;
};

typedef struct conn {
  httpd *h;
  int fd;
} conn;

/* ---- bounded socket I/O ------------------------------------------------- */

/* Waits until fd is ready for `events`, at most timeout seconds. */
static bool ready(int fd, short events, double timeout) {
  struct pollfd p = {.fd = fd, .events = events};
  int r;
  do
    r = poll(&p, 1, (int)(timeout * 1000));
  while (r < 0 && errno == EINTR);
  return r == 1;
}

static bool write_all(int fd, const char *p, size_t n, double timeout) {
  while (n > 0) {
    if (!ready(fd, POLLOUT, timeout))
      return false;
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && (errno == EAGAIN || errno == EINTR))
      continue;
    if (w <= 0)
      return false;
    p += w;
    n -= (size_t)w;
  }
  return true;
}

/* Reads until the blank line that ends the head; returns its length, or -1
 * (timeout, EOF, error) or -2 (head larger than HEAD_MAX). */
static ssize_t read_head(int fd, char *buf, double timeout) {
  size_t got = 0;
  while (got < 4 || !memmem(buf, got, "\r\n\r\n", 4)) {
    if (got == HEAD_MAX)
      return -2;
    if (!ready(fd, POLLIN, timeout))
      return -1;
    ssize_t r = recv(fd, buf + got, HEAD_MAX - got, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
      continue;
    if (r <= 0)
      return -1;
    got += (size_t)r;
  }
  buf[got] = '\0';
  return (ssize_t)got;
}

static const char *reason(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 400:
    return "Bad Request";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 431:
    return "Request Header Fields Too Large";
  case 503:
    return "Service Unavailable";
  default:
    return status < 400 ? "OK" : "Error";
  }
}

static void respond(int fd, const httpd_response *res, bool with_body,
                    double timeout) {
  char head[2048];
  int n =
      snprintf(head, sizeof head,
               "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
               "Content-Length: %zu\r\n%s%s%sConnection: close\r\n\r\n",
               res->status, reason(res->status), res->content_type, res->len,
               res->location ? "Location: " : "",
               res->location ? res->location : "", res->location ? "\r\n" : "");
  if (n < 0 || (size_t)n >= sizeof head)
    return; /* a Location too long for the head: no answer */
  if (write_all(fd, head, (size_t)n, timeout) && with_body && res->len)
    write_all(fd, res->body, res->len, timeout);
}

/* ---- one connection: a pool task ---------------------------------------- */

static int serve(void *arg, void **out) {
  (void)out;
  conn *c = arg;
  httpd *h = c->h;
  char buf[HEAD_MAX + 1];
  httpd_response res = {.status = 200, .content_type = "text/html"};
  ssize_t n = read_head(c->fd, buf, h->opts.io_timeout);
  char method[16], path[HEAD_MAX], version[16];
  bool head_only = false;
  if (n == -1) {
    /* the client went away or was too slow: nothing to answer */
  } else if (n == -2) {
    res.status = 431;
  } else if (sscanf(buf, "%15s %8191s %15s", method, path, version) != 3 ||
             strncmp(version, "HTTP/1.", 7) != 0 || path[0] != '/') {
    res.status = 400;
  } else if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    res.status = 405;
  } else {
    httpd_request req = {.server = h, .method = method, .path = path};
    head_only = strcmp(method, "HEAD") == 0;
    h->handler(h->ctx, &req, &res);
  }
  if (n != -1)
    respond(c->fd, &res, !head_only, h->opts.io_timeout);
  free(res.body);
  free(res.location);
  close(c->fd);
  free(c);
  atomic_fetch_sub_explicit(&h->open, 1, memory_order_relaxed);
  return 0;
}

/* ---- the accept thread -------------------------------------------------- */

static void *accept_loop(void *arg) {
  httpd *h = arg;
  size_t limit = h->opts.workers + h->opts.max_pending;
  for (;;) {
    struct pollfd p[2] = {{.fd = h->listen_fd, .events = POLLIN},
                          {.fd = h->wake[0], .events = POLLIN}};
    if (poll(p, 2, -1) < 0 && errno != EINTR)
      break;
    if (p[1].revents)
      break; /* httpd_stop */
    if (!(p[0].revents & POLLIN))
      continue;
    int fd = accept4(h->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    if (atomic_load_explicit(&h->open, memory_order_relaxed) >= limit) {
      /* Full: say so at once instead of queueing without bound. */
      static const char busy[] =
          "HTTP/1.1 503 Service Unavailable\r\n"
          "Content-Length: 0\r\nConnection: close\r\n\r\n";
      (void)!send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      close(fd);
      continue;
    }
    conn *c = malloc(sizeof *c);
    cf_future *f;
    if (!c) {
      close(fd);
      continue;
    }
    *c = (conn){h, fd};
    size_t now_open =
        atomic_fetch_add_explicit(&h->open, 1, memory_order_relaxed) + 1;
    if (now_open > atomic_load_explicit(&h->max_open, memory_order_relaxed))
      atomic_store_explicit(&h->max_open, now_open, memory_order_relaxed);
    if (cf_submit(h->pool, serve, c, &f) != 0) {
      atomic_fetch_sub_explicit(&h->open, 1, memory_order_relaxed);
      close(fd);
      free(c);
      continue;
    }
    /* Fire and forget: nobody needs the result, the task owns c. */
    cf_future_unref(f);
  }
  return NULL;
}

/* ---- start / stop ------------------------------------------------------- */

httpd *httpd_start(const httpd_opts *opts, httpd_handler handler, void *ctx) {
  httpd *h = calloc(1, sizeof *h);
  if (!h)
    return NULL;
  if (opts)
    h->opts = *opts;
  if (!h->opts.workers)
    h->opts.workers = 8;
  if (!h->opts.max_pending)
    h->opts.max_pending = 256;
  if (!(h->opts.io_timeout > 0))
    h->opts.io_timeout = 5;
  h->handler = handler;
  h->ctx = ctx;
  h->wake[0] = h->wake[1] = -1;
  pthread_mutex_init(&h->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&h->cond, &ca);
  pthread_condattr_destroy(&ca);

  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)h->opts.port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (h->opts.addr && (inet_pton(AF_INET, h->opts.addr, &a.sin_addr) != 1 ||
                       (ntohl(a.sin_addr.s_addr) >> 24) != 127)) {
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->lock);
    free(h);
    errno = EINVAL;
    return NULL;
  }
  socklen_t alen = sizeof a;
  cf_thread_pool_opts po = {.max_workers = h->opts.workers,
                            .thread_name_prefix = "httpd"};
  int one = 1;
  h->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (h->listen_fd < 0 ||
      setsockopt(h->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
      bind(h->listen_fd, (struct sockaddr *)&a, sizeof a) ||
      listen(h->listen_fd, 512) ||
      getsockname(h->listen_fd, (struct sockaddr *)&a, &alen) ||
      pipe2(h->wake, O_CLOEXEC))
    goto fail;
  if (cf_thread_pool_new(&po, &h->pool) != 0) {
    errno = ENOMEM;
    goto fail;
  }
  h->port = ntohs(a.sin_port);
  if ((errno = pthread_create(&h->acceptor, NULL, accept_loop, h)) != 0)
    goto fail;
  return h;
fail:;
  int saved = errno;
  cf_executor_free(h->pool);
  for (int i = 0; i < 2; i++)
    if (h->wake[i] >= 0)
      close(h->wake[i]);
  if (h->listen_fd >= 0)
    close(h->listen_fd);
  pthread_cond_destroy(&h->cond);
  pthread_mutex_destroy(&h->lock);
  free(h);
  errno = saved;
  return NULL;
}

int httpd_port(const httpd *h) {
  return h->port;
}

size_t httpd_max_open(const httpd *h) {
  return atomic_load_explicit(&h->max_open, memory_order_relaxed);
}

bool httpd_sleep(httpd *h, double seconds) {
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  long ns = until.tv_nsec + (long)((seconds - (long)seconds) * 1e9);
  until.tv_sec += (time_t)seconds + ns / 1000000000;
  until.tv_nsec = ns % 1000000000;
  pthread_mutex_lock(&h->lock);
  int rc = 0;
  while (!h->stopping && rc != ETIMEDOUT) /* holds h->lock */
    rc = pthread_cond_timedwait(&h->cond, &h->lock, &until);
  bool slept = !h->stopping;
  pthread_mutex_unlock(&h->lock);
  return slept;
}

void httpd_stop(httpd *h) {
  if (!h)
    return;
  pthread_mutex_lock(&h->lock);
  h->stopping = true;
  pthread_cond_broadcast(&h->cond);
  pthread_mutex_unlock(&h->lock);
  (void)!write(h->wake[1], "x", 1);
  pthread_join(h->acceptor, NULL);
  close(h->listen_fd); /* later connection attempts are refused */
  /* Waits for every connection task (each bounded by io_timeout). */
  cf_executor_free(h->pool);
  close(h->wake[0]);
  close(h->wake[1]);
  pthread_cond_destroy(&h->cond);
  pthread_mutex_destroy(&h->lock);
  free(h);
}
