/* libcfutures_patch: gevent's monkey.patch_all, the C way.
 *
 * An opt-in interposer: preload it (LD_PRELOAD=libcfutures_patch.so) or
 * link it before libc (-lcfutures_patch ahead of the other libraries), and
 * the blocking libc calls below, made from inside a green task, suspend
 * only that task while the loop runs the others: unmodified blocking code
 * (libcurl's easy interface, a database client) then runs concurrently on
 * one thread. Called anywhere else (any thread outside a green task, the
 * loop's own scheduling), each is the libc call itself, untouched.
 *
 *   sleep, usleep, nanosleep, clock_nanosleep (relative)  cf_green_sleep
 *   poll, select                  wait for readiness cooperatively, then
 *                                 the real call with a zero timeout
 *   read, recv, recvfrom, accept, accept4   on a blocking descriptor: wait
 *                                 until readable, then the call
 *   write, send, sendto           on a blocking descriptor: write it all,
 *                                 waiting for room in between
 *   connect                       on a blocking socket: connect without
 *                                 blocking, wait for the outcome
 *
 * A descriptor the program made non-blocking is left alone: its code
 * already copes with EAGAIN (and waits in poll, which is patched). How it
 * waits: cf_green_wait_fd on the descriptor, or, for poll and select over
 * several descriptors, on a private epoll descriptor watching them all.
 * A green task cancelled while it waits sees the call fail with EINTR.
 * Not patched: a blocking call's own timeouts (SO_RCVTIMEO), signals
 * interrupting a wait, read/write on regular files (always ready), and
 * getaddrinfo (use the thread pool: see docs/green.md).
 *
 * The library exports cf_patch_active(), which returns 1: a program can
 * look it up (dlsym) to know whether it is in force. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cfutures.h>

#define EXPORT __attribute__((visibility("default")))

/* The next definition of `name` (libc's), found once. */
#define REAL(name, type)                                                       \
  static type real_##name(void) {                                              \
    static _Atomic(void *) fn;                                                 \
    void *f = atomic_load_explicit(&fn, memory_order_relaxed);                 \
    if (!f) {                                                                  \
      f = dlsym(RTLD_NEXT, #name);                                             \
      if (!f)                                                                  \
        abort(); /* no libc below us: nothing sensible to do */                \
      atomic_store_explicit(&fn, f, memory_order_relaxed);                     \
    }                                                                          \
    type t;                                                                    \
    memcpy(&t, &f, sizeof t);                                                  \
    return t;                                                                  \
  }

typedef unsigned int (*sleep_t)(unsigned int);
typedef int (*usleep_t)(useconds_t);
typedef int (*nanosleep_t)(const struct timespec *, struct timespec *);
typedef int (*clock_nanosleep_t)(clockid_t, int, const struct timespec *,
                                 struct timespec *);
typedef int (*poll_t)(struct pollfd *, nfds_t, int);
typedef int (*select_t)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
typedef ssize_t (*read_t)(int, void *, size_t);
typedef ssize_t (*write_t)(int, const void *, size_t);
typedef ssize_t (*recv_t)(int, void *, size_t, int);
typedef ssize_t (*send_t)(int, const void *, size_t, int);
/* glibc declares the address arguments as transparent unions in GNU mode
 * (__SOCKADDR_ARG): our definitions must match its declarations. */
typedef ssize_t (*recvfrom_t)(int, void *, size_t, int, __SOCKADDR_ARG,
                              socklen_t *);
typedef ssize_t (*sendto_t)(int, const void *, size_t, int,
                            __CONST_SOCKADDR_ARG, socklen_t);
typedef int (*accept_t)(int, __SOCKADDR_ARG, socklen_t *);
typedef int (*accept4_t)(int, __SOCKADDR_ARG, socklen_t *, int);
typedef int (*connect_t)(int, __CONST_SOCKADDR_ARG, socklen_t);

REAL(sleep, sleep_t)
REAL(usleep, usleep_t)
REAL(nanosleep, nanosleep_t)
REAL(clock_nanosleep, clock_nanosleep_t)
REAL(poll, poll_t)
REAL(select, select_t)
REAL(read, read_t)
REAL(write, write_t)
REAL(recv, recv_t)
REAL(send, send_t)
REAL(recvfrom, recvfrom_t)
REAL(sendto, sendto_t)
REAL(accept, accept_t)
REAL(accept4, accept4_t)
REAL(connect, connect_t)

EXPORT int cf_patch_active(void);
int cf_patch_active(void) {
  return 1;
}

static bool green(void) {
  return cf_loop_current() != NULL;
}

static bool blocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl >= 0 && !(fl & O_NONBLOCK);
}

/* cf_green_* failed: errno as a blocking call would have it. */
static int fail_errno(int rc) {
  errno = rc == CF_ECANCELLED  ? EINTR
          : rc == CF_ENOMEM    ? ENOMEM
          : rc == CF_ETIMEDOUT ? EAGAIN
                               : EIO;
  return -1;
}

/* Waits until fd is ready for `events` (CF_GREEN_READ/WRITE), for ever.
 * Another green task already waiting on the same event (CF_EBUSY): take
 * turns. 0 or -1 with errno. */
static int wait_ready(int fd, int events) {
  for (;;) {
    int rc = cf_green_wait_fd(fd, events, CF_FOREVER);
    if (rc == 0)
      return 0;
    if (rc != CF_EBUSY)
      return fail_errno(rc);
    if ((rc = cf_green_sleep(0.001)) != 0)
      return fail_errno(rc);
  }
}

/* ---- sleeping ------------------------------------------------------------ */

static int green_sleep_ts(const struct timespec *ts) {
  if (!ts || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000L || ts->tv_sec < 0) {
    errno = EINVAL;
    return -1;
  }
  int rc = cf_green_sleep((double)ts->tv_sec + (double)ts->tv_nsec * 1e-9);
  return rc ? fail_errno(rc) : 0;
}

EXPORT unsigned int sleep(unsigned int seconds) {
  if (!green())
    return real_sleep()(seconds);
  return cf_green_sleep(seconds) == 0 ? 0 : seconds;
}

EXPORT int usleep(useconds_t us) {
  if (!green())
    return real_usleep()(us);
  int rc = cf_green_sleep((double)us * 1e-6);
  return rc ? fail_errno(rc) : 0;
}

EXPORT int nanosleep(const struct timespec *req, struct timespec *rem) {
  if (!green())
    return real_nanosleep()(req, rem);
  int rc = green_sleep_ts(req);
  if (rc == 0 && rem)
    *rem = (struct timespec){0, 0};
  return rc;
}

EXPORT int clock_nanosleep(clockid_t clock, int flags,
                           const struct timespec *req, struct timespec *rem) {
  /* absolute deadlines and other clocks: the real call */
  if (!green() || flags != 0 ||
      (clock != CLOCK_MONOTONIC && clock != CLOCK_REALTIME))
    return real_clock_nanosleep()(clock, flags, req, rem);
  if (green_sleep_ts(req) != 0)
    return errno;
  if (rem)
    *rem = (struct timespec){0, 0};
  return 0;
}

/* ---- poll and select ------------------------------------------------------
 */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* poll(2) for a green task: the real poll with a zero timeout; while
 * nothing is ready, the task waits on an epoll descriptor watching every
 * fd (a descriptor epoll refuses, a regular file say, is always ready:
 * the zero-timeout poll has reported it already). timeout_ms < 0: for
 * ever. */
static int green_poll(struct pollfd *fds, nfds_t n, int timeout_ms) {
  int r = real_poll()(fds, n, 0);
  if (r != 0 || timeout_ms == 0)
    return r;
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0)
    return -1;
  for (nfds_t i = 0; i < n; i++) {
    if (fds[i].fd < 0)
      continue;
    struct epoll_event ev = {.events = 0, .data.fd = fds[i].fd};
    if (fds[i].events & (POLLIN | POLLPRI | POLLRDHUP))
      ev.events |= EPOLLIN | EPOLLPRI | EPOLLRDHUP;
    if (fds[i].events & POLLOUT)
      ev.events |= EPOLLOUT;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i].fd, &ev) != 0 && errno == EEXIST) {
      /* the same descriptor twice: watch the union of their events */
      struct epoll_event both = ev;
      for (nfds_t j = 0; j < i; j++)
        if (fds[j].fd == fds[i].fd)
          both.events |= (fds[j].events & POLLOUT ? EPOLLOUT : 0) |
                         (fds[j].events & (POLLIN | POLLPRI | POLLRDHUP)
                              ? EPOLLIN | EPOLLPRI | EPOLLRDHUP
                              : 0);
      epoll_ctl(ep, EPOLL_CTL_MOD, fds[i].fd, &both);
    }
  }
  double deadline = timeout_ms < 0 ? INFINITY : now_s() + timeout_ms * 1e-3;
  for (;;) {
    double left = deadline - now_s();
    if (left <= 0) {
      r = 0;
      break;
    }
    int rc =
        cf_green_wait_fd(ep, CF_GREEN_READ, isinf(left) ? CF_FOREVER : left);
    if (rc != 0 && rc != CF_ETIMEDOUT) {
      r = fail_errno(rc);
      break;
    }
    r = real_poll()(fds, n, 0);
    if (r != 0 || rc == CF_ETIMEDOUT)
      break;
  }
  int e = errno;
  close(ep);
  errno = e;
  return r;
}

EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout_ms) {
  if (!green())
    return real_poll()(fds, n, timeout_ms);
  return green_poll(fds, n, timeout_ms);
}

EXPORT int select(int nfds, fd_set *rd, fd_set *wr, fd_set *ex,
                  struct timeval *tv) {
  if (!green())
    return real_select()(nfds, rd, wr, ex, tv);
  if (nfds < 0 || nfds > FD_SETSIZE ||
      (tv && (tv->tv_sec < 0 || tv->tv_usec < 0 || tv->tv_usec >= 1000000))) {
    errno = EINVAL;
    return -1;
  }
  struct pollfd p[FD_SETSIZE];
  nfds_t n = 0;
  for (int fd = 0; fd < nfds; fd++) {
    short ev = (short)((rd && FD_ISSET(fd, rd) ? POLLIN : 0) |
                       (wr && FD_ISSET(fd, wr) ? POLLOUT : 0) |
                       (ex && FD_ISSET(fd, ex) ? POLLPRI : 0));
    if (ev)
      p[n++] = (struct pollfd){.fd = fd, .events = ev};
  }
  double t0 = now_s();
  int ms = -1;
  if (tv) {
    double s = (double)tv->tv_sec * 1e3 + (double)tv->tv_usec * 1e-3;
    ms = s > INT_MAX ? INT_MAX : (int)ceil(s);
  }
  int r = green_poll(p, n, ms);
  if (r < 0)
    return r;
  for (nfds_t i = 0; i < n; i++)
    if (p[i].revents & POLLNVAL) {
      errno = EBADF;
      return -1;
    }
  if (rd)
    FD_ZERO(rd);
  if (wr)
    FD_ZERO(wr);
  if (ex)
    FD_ZERO(ex);
  int count = 0;
  for (nfds_t i = 0; i < n; i++) {
    short re = p[i].revents;
    if (rd && (p[i].events & POLLIN) && (re & (POLLIN | POLLHUP | POLLERR))) {
      FD_SET(p[i].fd, rd);
      count++;
    }
    if (wr && (p[i].events & POLLOUT) && (re & (POLLOUT | POLLERR))) {
      FD_SET(p[i].fd, wr);
      count++;
    }
    if (ex && (p[i].events & POLLPRI) && (re & POLLPRI)) {
      FD_SET(p[i].fd, ex);
      count++;
    }
  }
  if (tv) { /* Linux leaves the time not slept */
    double left = (double)tv->tv_sec + tv->tv_usec * 1e-6 - (now_s() - t0);
    if (left < 0)
      left = 0;
    tv->tv_sec = (time_t)left;
    tv->tv_usec = (suseconds_t)((left - (double)tv->tv_sec) * 1e6);
  }
  return count;
}

/* ---- reading and writing --------------------------------------------------
 */

/* Runs `op` (which must not block: it is a non-blocking variant of the
 * call) until it does not fail with EAGAIN, waiting for `events` in
 * between. */
#define WAIT_LOOP(events, op)                                                  \
  for (;;) {                                                                   \
    ssize_t r_ = (op);                                                         \
    if (r_ >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))                  \
      return r_;                                                               \
    if (wait_ready(fd, (events)) != 0)                                         \
      return -1;                                                               \
  }

EXPORT ssize_t recv(int fd, void *buf, size_t len, int flags) {
  if (!green() || (flags & MSG_DONTWAIT) || !blocking(fd))
    return real_recv()(fd, buf, len, flags);
  WAIT_LOOP(CF_GREEN_READ, real_recv()(fd, buf, len, flags | MSG_DONTWAIT))
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t len, int flags,
                        __SOCKADDR_ARG from, socklen_t *fromlen) {
  if (!green() || (flags & MSG_DONTWAIT) || !blocking(fd))
    return real_recvfrom()(fd, buf, len, flags, from, fromlen);
  WAIT_LOOP(CF_GREEN_READ,
            real_recvfrom()(fd, buf, len, flags | MSG_DONTWAIT, from, fromlen))
}

EXPORT ssize_t read(int fd, void *buf, size_t len) {
  if (!green() || !blocking(fd))
    return real_read()(fd, buf, len);
  for (;;) {
    /* a socket: recv without blocking; anything else (a pipe, a tty):
     * wait until readable, then read */
    ssize_t r = real_recv()(fd, buf, len, MSG_DONTWAIT);
    if (r >= 0)
      return r;
    if (errno == ENOTSOCK) {
      if (wait_ready(fd, CF_GREEN_READ) != 0)
        return -1;
      return real_read()(fd, buf, len);
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return -1;
    if (wait_ready(fd, CF_GREEN_READ) != 0)
      return -1;
  }
}

/* A blocking send writes everything (or fails): so does this, waiting for
 * room in between. `sock`: send/sendto with `flags`, else write(2) once
 * the descriptor is writable. */
static ssize_t send_all(int fd, const void *buf, size_t len, int flags,
                        const struct sockaddr *to, socklen_t tolen, bool sock) {
  __CONST_SOCKADDR_ARG dest = {.__sockaddr__ = to};
  if (len == 0) /* nothing to wait for */
    return sock ? to ? real_sendto()(fd, buf, 0, flags, dest, tolen)
                     : real_send()(fd, buf, 0, flags)
                : real_write()(fd, buf, 0);
  const char *p = buf;
  size_t done = 0;
  while (done < len) {
    ssize_t r;
    if (sock) {
      r = to ? real_sendto()(fd, p + done, len - done, flags | MSG_DONTWAIT,
                             dest, tolen)
             : real_send()(fd, p + done, len - done, flags | MSG_DONTWAIT);
    } else {
      if (wait_ready(fd, CF_GREEN_WRITE) != 0)
        return done ? (ssize_t)done : -1;
      r = real_write()(fd, p + done, len - done);
    }
    if (r >= 0) {
      done += (size_t)r;
      continue;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return done ? (ssize_t)done : -1;
    if (wait_ready(fd, CF_GREEN_WRITE) != 0)
      return done ? (ssize_t)done : -1;
  }
  return (ssize_t)done;
}

EXPORT ssize_t send(int fd, const void *buf, size_t len, int flags) {
  if (!green() || (flags & MSG_DONTWAIT) || !blocking(fd))
    return real_send()(fd, buf, len, flags);
  return send_all(fd, buf, len, flags, NULL, 0, true);
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t len, int flags,
                      __CONST_SOCKADDR_ARG to, socklen_t tolen) {
  if (!green() || (flags & MSG_DONTWAIT) || !blocking(fd))
    return real_sendto()(fd, buf, len, flags, to, tolen);
  if (!to.__sockaddr__) /* a connected socket: send's rules */
    return send_all(fd, buf, len, flags, NULL, 0, true);
  /* a datagram to an address goes whole or not at all */
  WAIT_LOOP(CF_GREEN_WRITE,
            real_sendto()(fd, buf, len, flags | MSG_DONTWAIT, to, tolen))
}

EXPORT ssize_t write(int fd, const void *buf, size_t len) {
  if (!green() || !blocking(fd))
    return real_write()(fd, buf, len);
  ssize_t r = real_send()(fd, buf, len, MSG_DONTWAIT);
  if (r >= 0 && (size_t)r == len)
    return r;
  if (r < 0 && errno == ENOTSOCK)
    return send_all(fd, buf, len, 0, NULL, 0, false);
  if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    return -1;
  size_t done = r > 0 ? (size_t)r : 0;
  ssize_t rest =
      send_all(fd, (const char *)buf + done, len - done, 0, NULL, 0, true);
  return rest < 0 ? (done ? (ssize_t)done : -1) : (ssize_t)done + rest;
}

/* ---- connections ----------------------------------------------------------
 */

/* Runs op with fd made non-blocking for its duration (the description is
 * shared with any dup of fd: restored right after). */
static int with_nonblocking(int fd, int *flags_out) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
    return -1;
  *flags_out = fl;
  return 0;
}

EXPORT int accept4(int fd, __SOCKADDR_ARG addr, socklen_t *len, int flags) {
  if (!green() || !blocking(fd))
    return real_accept4()(fd, addr, len, flags);
  for (;;) {
    if (wait_ready(fd, CF_GREEN_READ) != 0)
      return -1;
    int fl;
    if (with_nonblocking(fd, &fl) != 0)
      return -1;
    int c = real_accept4()(fd, addr, len, flags);
    int e = errno;
    fcntl(fd, F_SETFL, fl);
    errno = e;
    if (c >= 0 || (e != EAGAIN && e != EWOULDBLOCK))
      return c; /* another task took it: wait again */
  }
}

EXPORT int accept(int fd, __SOCKADDR_ARG addr, socklen_t *len) {
  if (!green() || !blocking(fd))
    return real_accept()(fd, addr, len);
  return accept4(fd, addr, len, 0);
}

EXPORT int connect(int fd, __CONST_SOCKADDR_ARG addr, socklen_t len) {
  if (!green() || !blocking(fd))
    return real_connect()(fd, addr, len);
  int fl;
  if (with_nonblocking(fd, &fl) != 0)
    return -1;
  int r = real_connect()(fd, addr, len);
  int e = errno;
  if (r != 0 && e == EINPROGRESS) {
    r = wait_ready(fd, CF_GREEN_WRITE);
    e = errno;
    if (r == 0) {
      int err = 0;
      socklen_t elen = sizeof err;
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0)
        err = errno;
      r = err ? -1 : 0;
      e = err;
    }
  }
  fcntl(fd, F_SETFL, fl);
  errno = e;
  return r;
}
