/* cf_pipe: whole byte messages over an AF_UNIX stream socket pair, each
 * framed by an 8-byte length. Non-blocking I/O with poll() for timeouts;
 * MSG_NOSIGNAL so a closed peer is CF_EEOF, never SIGPIPE. */
#include <cfutures/queue.h>
#include <errno.h>
#include <string.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/time.h"
#include "core/report.h"

struct cf_pipe {
  int fd;
  bool can_send, can_recv;
  bool broken; /* a send was cut short: no more sends */
};

static cf_pipe *end_new(int fd, bool send, bool recv) {
  cf_pipe *p = calloc(1, sizeof *p);
  if (p) {
    p->fd = fd;
    p->can_send = send;
    p->can_recv = recv;
  }
  return p;
}

int cf_pipe_new(bool duplex, cf_pipe **a, cf_pipe **b) {
  if (!a || !b)
    return CF__FAIL(CF_EINVAL, a ? "NULL barrier" : "NULL a");
  *a = *b = NULL;
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds))
    return CF__FAILF(CF_ESYS, "socketpair: %s", strerror(errno));
  if (!duplex) {
    shutdown(fds[0], SHUT_RD);
    shutdown(fds[1], SHUT_WR);
  }
  *a = end_new(fds[0], true, duplex);
  *b = end_new(fds[1], duplex, true);
  if (!*a || !*b) {
    free(*a);
    free(*b);
    *a = *b = NULL;
    close(fds[0]);
    close(fds[1]);
    return CF__FAIL(CF_ENOMEM, "out of memory");
  }
  return 0;
}

/* Waits until fd is ready for `events` or the deadline (NULL: forever).
 * Returns 0 or CF_ETIMEDOUT. */
static int wait_fd(int fd, short events, const cf_deadline *d) {
  for (;;) {
    int ms = -1;
    if (d && !d->forever) {
      double left = cf__deadline_remaining(d);
      if (left <= 0)
        ms = 0;
      else
        ms = left > 1e6 ? 1000000000 : (int)(left * 1000) + 1;
    }
    struct pollfd pfd = {.fd = fd, .events = events};
    int n = poll(&pfd, 1, ms);
    if (n > 0)
      return 0;
    if (n == 0 && (!d || d->forever || cf__deadline_passed(d)))
      return CF_ETIMEDOUT;
    /* EINTR or a poll that woke a little early: go round */
  }
}

/* Sends n bytes; `d` applies until the first byte goes (then *started).
 * Returns 0, CF_ETIMEDOUT, CF_EEOF, CF_ESYS. */
static int send_all(cf_pipe *p, const void *buf, size_t n, const cf_deadline *d,
                    bool *started) {
  size_t off = 0;
  while (off < n) {
    ssize_t w = send(p->fd, (const char *)buf + off, n - off,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      off += (size_t)w;
      *started = true;
      continue;
    }
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (wait_fd(p->fd, POLLOUT, d) == CF_ETIMEDOUT)
        return CF_ETIMEDOUT;
      continue;
    }
    return errno == EPIPE || errno == ECONNRESET ? CF_EEOF : CF_ESYS;
  }
  return 0;
}

int cf_pipe_send(cf_pipe *p, const void *data, size_t len, double timeout_s) {
  cf_deadline d;
  if (!p || (!data && len))
    return CF__FAIL(CF_EINVAL, p ? "NULL data with len > 0" : "NULL pipe");
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  if (!p->can_send)
    return CF__FAIL(CF_EPERM, "this end of the pipe is receive-only");
  if (p->broken)
    return CF__FAIL(CF_EBROKEN, "an earlier send was cut off: the stream "
                                "is out of step");
  uint64_t hdr = len;
  bool started = false;
  int rc = send_all(p, &hdr, sizeof hdr, &d, &started);
  if (rc == 0)
    rc = send_all(p, data, len, &d, &started);
  if (rc == CF_ETIMEDOUT && started) {
    /* Cut short mid-message: the stream cannot be resynchronised. */
    shutdown(p->fd, SHUT_WR);
    p->broken = true;
  }
  return CF__RET(rc);
}

/* Reads n bytes; `d` applies until the first byte arrives (*started).
 * Returns 0, CF_ETIMEDOUT, CF_EEOF, CF_ESYS. */
static int recv_all(cf_pipe *p, void *buf, size_t n, const cf_deadline *d,
                    bool *started) {
  size_t off = 0;
  while (off < n) {
    ssize_t r = recv(p->fd, (char *)buf + off, n - off, MSG_DONTWAIT);
    if (r > 0) {
      off += (size_t)r;
      *started = true;
      continue;
    }
    if (r == 0)
      return CF_EEOF;
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (wait_fd(p->fd, POLLIN, *started ? NULL : d) == CF_ETIMEDOUT)
        return CF_ETIMEDOUT;
      continue;
    }
    return errno == ECONNRESET ? CF_EEOF : CF_ESYS;
  }
  return 0;
}

int cf_pipe_recv(cf_pipe *p, double timeout_s, void **data, size_t *len) {
  cf_deadline d;
  if (!p || !data || !len)
    return CF__FAIL(CF_EINVAL, !p ? "NULL pipe" : "NULL data or len");
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  *data = NULL;
  *len = 0;
  if (!p->can_recv)
    return CF__FAIL(CF_EPERM, "this end of the pipe is send-only");
  uint64_t hdr;
  bool started = false;
  int rc = recv_all(p, &hdr, sizeof hdr, &d, &started);
  if (rc != 0)
    return CF__RET(rc);
  if (hdr > SIZE_MAX / 2)
    return CF__FAILF(CF_ETOOBIG, "the peer announced %llu bytes",
                     (unsigned long long)hdr);
  void *buf = NULL;
  if (hdr > 0 && !(buf = malloc((size_t)hdr))) {
    /* Drain the message so the stream stays in step, then report. */
    char sink[4096];
    uint64_t left = hdr;
    while (left > 0 && rc == 0) {
      size_t n = left < sizeof sink ? (size_t)left : sizeof sink;
      rc = recv_all(p, sink, n, NULL, &started);
      left -= n;
    }
    return rc ? rc : CF_ENOMEM;
  }
  rc = recv_all(p, buf, (size_t)hdr, NULL, &started);
  if (rc != 0) {
    free(buf);
    return CF__RET(rc);
  }
  *data = buf;
  *len = (size_t)hdr;
  return 0;
}

void cf_pipe_close(cf_pipe *p) {
  if (!p)
    return;
  close(p->fd);
  free(p);
}
