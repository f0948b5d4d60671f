/* Green I/O: read, write, accept and connect that suspend only the calling
 * green task while the descriptor is not ready (cf_green_wait_fd), and
 * work as plain calls with poll(2) outside green tasks.
 *
 * Reads and writes try sockets with MSG_DONTWAIT, which needs no change of
 * the descriptor's mode: an echo's round trip is then a recv, a wait and a
 * send, without an fcntl before each call. Other descriptors (pipes, ttys)
 * are made non-blocking once recv says they are no socket. */
#include <cfutures/green.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/report.h"
#include "core/time.h"
#include "green/green_internal.h"

/* Makes fd non-blocking (the waits do the blocking). */
static int nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0)
    return -1;
  return fl & O_NONBLOCK ? 0 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static double left_of(const cf_deadline *d) {
  if (d->forever)
    return CF_FOREVER;
  double s = cf__deadline_remaining(d);
  return s > 0 ? s : 0;
}

/* Waits for fd on behalf of `call` (after EAGAIN, or after a short read:
 * see cf__green_wait_io). */
static int wait_for(const char *call, int fd, int ev, const cf_deadline *d,
                    bool after_eagain) {
  return cf__green_wait_io(call, fd, ev, left_of(d), after_eagain);
}

/* Checks fd and the timeout, starts the deadline and, unless `sock_io`
 * (the call tries sockets with MSG_DONTWAIT), makes fd non-blocking. */
static int start(const char *call, int fd, double timeout_s, cf_deadline *d,
                 bool sock_io) {
  if (fd < 0)
    return cf__fail_at(call, CF_EINVAL, "negative descriptor");
  if (cf__deadline_from_timeout(timeout_s, d) != 0)
    return cf__fail_at(call, CF_EINVAL, "the timeout is NaN");
  if (!sock_io && nonblocking(fd) != 0)
    return cf__fail_fmt(call, CF_ESYS, "fcntl: %s", strerror(errno));
  return 0;
}

/* recv or send said ENOTSOCK: from now on plain read or write, on a
 * non-blocking descriptor. */
static int not_a_socket(const char *call, int fd, bool *sock) {
  *sock = false;
  return nonblocking(fd) != 0
             ? cf__fail_fmt(call, CF_ESYS, "fcntl: %s", strerror(errno))
             : 0;
}

int cf_green_read(int fd, void *buf, size_t len, double timeout_s,
                  size_t *got) {
  if (got)
    *got = 0;
  if (!buf || !got)
    return CF__FAIL(CF_EINVAL, got ? "NULL buffer" : "NULL got");
  cf_deadline d;
  bool sock = true;
  int rc = start(__func__, fd, timeout_s, &d, true);
  /* The last read was short: the recv would most likely find nothing, so
   * wait first (not when the call may not wait at all). */
  if (rc == 0 && len > 0 && !(!d.forever && timeout_s <= 0) &&
      cf__green_fd_drained(fd)) {
    rc = wait_for(__func__, fd, CF_GREEN_READ, &d, false);
    if (rc == CF_ETIMEDOUT) /* never time out without one try */
      rc = 0;
  }
  while (rc == 0) {
    ssize_t n = sock ? recv(fd, buf, len, MSG_DONTWAIT) : read(fd, buf, len);
    if (n >= 0) {
      *got = (size_t)n;
      cf__green_fd_set_drained(fd, n > 0 && (size_t)n < len);
      if (n == 0 && len > 0)
        cf__green_fd_ended(fd);
      return 0;
    }
    if (errno == EINTR)
      continue;
    if (errno == ENOTSOCK && sock) {
      rc = not_a_socket(__func__, fd, &sock);
      continue;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      cf__green_fd_ended(fd);
      return CF__FAILF(CF_ESYS, "read: %s", strerror(errno));
    }
    rc = wait_for(__func__, fd, CF_GREEN_READ, &d, true);
  }
  return rc;
}

int cf_green_write_all(int fd, const void *buf, size_t len, double timeout_s) {
  if (!buf && len)
    return CF__FAIL(CF_EINVAL, "NULL buffer with len > 0");
  cf_deadline d;
  bool sock = true;
  int rc = start(__func__, fd, timeout_s, &d, true);
  const char *p = buf;
  while (rc == 0 && len > 0) {
    ssize_t n = sock ? send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT)
                     : write(fd, p, len);
    if (n < 0 && errno == ENOTSOCK && sock) {
      rc = not_a_socket(__func__, fd, &sock);
      continue;
    }
    if (n > 0) {
      p += n;
      len -= (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      cf__green_fd_ended(fd);
      return CF__FAILF(CF_ESYS, "write: %s", strerror(errno));
    }
    rc = wait_for(__func__, fd, CF_GREEN_WRITE, &d, true);
  }
  return rc;
}

int cf_green_accept(int fd, double timeout_s, int *out) {
  if (out)
    *out = -1;
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  cf_deadline d;
  int rc = start(__func__, fd, timeout_s, &d, false);
  while (rc == 0) {
    int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c >= 0) {
      cf__green_fd_new(c);
      *out = c;
      return 0;
    }
    if (errno == EINTR || errno == ECONNABORTED)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return CF__FAILF(CF_ESYS, "accept: %s", strerror(errno));
    rc = wait_for(__func__, fd, CF_GREEN_READ, &d, true);
  }
  return rc;
}

int cf_green_connect(int fd, const struct sockaddr *addr, unsigned int len,
                     double timeout_s) {
  if (!addr)
    return CF__FAIL(CF_EINVAL, "NULL address");
  cf_deadline d;
  int rc = start(__func__, fd, timeout_s, &d, false);
  if (rc != 0)
    return rc;
  cf__green_fd_new(fd); /* connected now: another file than any before */
  if (connect(fd, addr, len) == 0)
    return 0;
  if (errno != EINPROGRESS && errno != EINTR)
    return CF__FAILF(CF_ESYS, "connect: %s", strerror(errno));
  rc = wait_for(__func__, fd, CF_GREEN_WRITE, &d, true);
  if (rc != 0)
    return rc;
  int err = 0;
  socklen_t elen = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
    err = errno;
  return err ? CF__FAILF(CF_ESYS, "connect: %s", strerror(err)) : 0;
}
