/* libcfutures_patch (green/patch.c): the blocking libc calls of green tasks
 * become switches. Every test runs two or more green tasks on ONE loop
 * where one blocks in a plain libc call on a blocking descriptor and
 * another must run meanwhile to unblock it: without the patch the loop's
 * thread would block for ever (the watchdog ends such a run). This binary
 * is linked with libcfutures_patch ahead of libc. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cfutures.h>

#define WATCHDOG_S 60
#include "../watchdog.h"

int cf_patch_active(void);

/* Runs fns[0..n) as green tasks on a new loop until all are done; each
 * must return 0. */
static void run_tasks(cf_fn *fns, void **args, int n) {
  cf_loop *l;
  assert_int_equal(cf_loop_new(NULL, &l), 0);
  cf_future *fs[8];
  for (int i = 0; i < n; i++)
    assert_int_equal(cf_loop_spawn(l, fns[i], args ? args[i] : NULL, &fs[i]),
                     0);
  assert_int_equal(cf_loop_run(l, 30), 0);
  for (int i = 0; i < n; i++) {
    void *v;
    int rc = cf_future_result(fs[i], 0, &v);
    if (rc != 0) {
      cf_error e = {0};
      cf_future_exception(fs[i], 0, &e);
      fail_msg("task %d: %s", i, e.message ? e.message : cf_err_name(rc));
    }
    cf_future_unref(fs[i]);
  }
  assert_int_equal(cf_loop_free(l), 0);
}

static void test_active(void **state) {
  (void)state;
  assert_int_equal(cf_patch_active(), 1);
}

/* ---- sleeps: the other task runs while one sleeps ------------------------ */

static _Atomic int asleep;      /* a task is inside a sleep call */
static _Atomic int seen_asleep; /* another task ran meanwhile */

static int sleeper(void *arg, void **out) {
  (void)out;
  int kind = (int)(intptr_t)arg;
  atomic_store(&asleep, 1);
  int rc = 0;
  if (kind == 0)
    rc = usleep(200000);
  else if (kind == 1)
    rc = nanosleep(&(struct timespec){0, 200000000}, NULL);
  else if (kind == 2)
    rc = clock_nanosleep(CLOCK_MONOTONIC, 0, &(struct timespec){0, 200000000},
                         NULL);
  else
    rc = (int)sleep(1);
  atomic_store(&asleep, 0);
  return rc == 0 ? 0 : cf_fail(CF_ESYS, "sleep kind %d: %d", kind, rc);
}

static int watcher(void *arg, void **out) {
  (void)arg;
  (void)out;
  for (int i = 0; i < 100 && !atomic_load(&seen_asleep); i++) {
    if (atomic_load(&asleep))
      atomic_store(&seen_asleep, 1);
    cf_green_sleep(0.001);
  }
  return atomic_load(&seen_asleep) ? 0
                                   : cf_fail(CF_EFAILED, "never ran during "
                                                         "the other's sleep");
}

static void test_sleeps(void **state) {
  (void)state;
  for (intptr_t kind = 0; kind < 4; kind++) {
    atomic_store(&seen_asleep, 0);
    cf_fn fns[] = {sleeper, watcher};
    void *args[] = {(void *)kind, NULL};
    run_tasks(fns, args, 2);
  }
}

/* ---- pipes: read, write, poll, select --------------------------------------
 */

static int pipe_fds[2];

static int reader(void *arg, void **out) {
  (void)arg;
  (void)out;
  char buf[16] = {0};
  ssize_t n = read(pipe_fds[0], buf, sizeof buf);
  if (n != 5 || memcmp(buf, "hello", 5) != 0)
    return cf_fail(CF_EFAILED, "read %zd bytes: %s", n, strerror(errno));
  return 0;
}

static int writer(void *arg, void **out) {
  (void)arg;
  (void)out;
  cf_green_sleep(0.05); /* the reader is blocked by now */
  return write(pipe_fds[1], "hello", 5) == 5 ? 0 : cf_fail(CF_ESYS, "write");
}

static int poller(void *arg, void **out) {
  (void)arg;
  (void)out;
  struct pollfd p[2] = {{.fd = pipe_fds[0], .events = POLLIN},
                        {.fd = -1, .events = POLLIN}};
  int r = poll(p, 2, 10000);
  if (r != 1 || !(p[0].revents & POLLIN))
    return cf_fail(CF_EFAILED, "poll gave %d, revents %#x", r, p[0].revents);
  char buf[8];
  return read(pipe_fds[0], buf, sizeof buf) == 5 ? 0 : cf_fail(CF_ESYS, "read");
}

static int selecter(void *arg, void **out) {
  (void)arg;
  (void)out;
  fd_set rd;
  FD_ZERO(&rd);
  FD_SET(pipe_fds[0], &rd);
  struct timeval tv = {10, 0};
  int r = select(pipe_fds[0] + 1, &rd, NULL, NULL, &tv);
  if (r != 1 || !FD_ISSET(pipe_fds[0], &rd))
    return cf_fail(CF_EFAILED, "select gave %d", r);
  if (tv.tv_sec >= 10)
    return cf_fail(CF_EFAILED, "select left the timeout as it was");
  char buf[8];
  return read(pipe_fds[0], buf, sizeof buf) == 5 ? 0 : cf_fail(CF_ESYS, "read");
}

static void test_pipe_calls(void **state) {
  (void)state;
  cf_fn waiters[] = {reader, poller, selecter};
  for (int k = 0; k < 3; k++) {
    assert_int_equal(pipe(pipe_fds), 0); /* blocking */
    cf_fn fns[] = {waiters[k], writer};
    run_tasks(fns, NULL, 2);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
  }
}

/* poll's timeout: nothing comes, it returns 0 after about the timeout,
 * and another task ran meanwhile. */
static _Atomic int ticks;
static int idle_poller(void *arg, void **out) {
  (void)arg;
  (void)out;
  struct pollfd p = {.fd = pipe_fds[0], .events = POLLIN};
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int r = poll(&p, 1, 100);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double dt =
      (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
  if (r != 0)
    return cf_fail(CF_EFAILED, "poll gave %d", r);
  if (dt < 0.09)
    return cf_fail(CF_EFAILED, "poll returned after %.3f s", dt);
  return atomic_load(&ticks) > 0 ? 0 : cf_fail(CF_EFAILED, "nothing ran");
}

static int ticker(void *arg, void **out) {
  (void)arg;
  (void)out;
  for (int i = 0; i < 5; i++) {
    atomic_fetch_add(&ticks, 1);
    cf_green_sleep(0.01);
  }
  return 0;
}

static void test_poll_timeout(void **state) {
  (void)state;
  assert_int_equal(pipe(pipe_fds), 0);
  cf_fn fns[] = {idle_poller, ticker};
  run_tasks(fns, NULL, 2);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
}

/* ---- sockets: accept, connect, send, recv, all blocking ------------------ */

static int listen_fd;
static struct sockaddr_in listen_addr;

static int server(void *arg, void **out) {
  (void)arg;
  (void)out;
  int c = accept(listen_fd, NULL, NULL);
  if (c < 0)
    return cf_fail(CF_ESYS, "accept: %s", strerror(errno));
  char buf[4096]; /* a green task's stack is small */
  size_t got = 0;
  while (got < 200000) { /* more than a socket buffer holds */
    ssize_t n = recv(c, buf, sizeof buf, 0);
    if (n <= 0) {
      close(c);
      return cf_fail(CF_ESYS, "recv after %zu: %s", got, strerror(errno));
    }
    got += (size_t)n;
  }
  ssize_t w = send(c, "done", 4, 0);
  close(c);
  return w == 4 ? 0 : cf_fail(CF_ESYS, "send");
}

static int client(void *arg, void **out) {
  (void)arg;
  (void)out;
  int s = socket(AF_INET, SOCK_STREAM, 0); /* blocking */
  if (s < 0 ||
      connect(s, (struct sockaddr *)&listen_addr, sizeof listen_addr) != 0)
    return cf_fail(CF_ESYS, "connect: %s", strerror(errno));
  char *big = calloc(1, 200000);
  ssize_t w = big ? write(s, big, 200000) : -1; /* all of it, blocking */
  free(big);
  char buf[8] = {0};
  ssize_t n = w == 200000 ? read(s, buf, sizeof buf) : -1;
  close(s);
  if (w != 200000 || n != 4 || memcmp(buf, "done", 4) != 0)
    return cf_fail(CF_EFAILED, "wrote %zd, read %zd", w, n);
  return 0;
}

static void test_sockets(void **state) {
  (void)state;
  listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(listen_fd >= 0);
  listen_addr = (struct sockaddr_in){.sin_family = AF_INET,
                                     .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof listen_addr;
  assert_int_equal(
      bind(listen_fd, (struct sockaddr *)&listen_addr, sizeof listen_addr), 0);
  assert_int_equal(listen(listen_fd, 4), 0);
  assert_int_equal(
      getsockname(listen_fd, (struct sockaddr *)&listen_addr, &len), 0);
  cf_fn fns[] = {server, client};
  run_tasks(fns, NULL, 2);
  close(listen_fd);
}

/* ---- cancel and plain threads -----------------------------------------------
 */

static int stuck_reader(void *arg, void **out) {
  (void)arg;
  (void)out;
  char c;
  ssize_t n = read(pipe_fds[0], &c, 1);
  return n < 0 && errno == EINTR ? 0 : cf_fail(CF_EFAILED, "read gave %zd", n);
}

static void test_cancel_in_read(void **state) {
  (void)state;
  assert_int_equal(pipe(pipe_fds), 0);
  cf_loop *l;
  assert_int_equal(cf_loop_new(NULL, &l), 0);
  cf_future *f;
  assert_int_equal(cf_loop_spawn(l, stuck_reader, NULL, &f), 0);
  /* let it block in read, then cancel it */
  assert_int_equal(cf_loop_run(l, 0.05), CF_ETIMEDOUT);
  assert_int_equal(cf_green_cancel(f), 0);
  assert_int_equal(cf_loop_run(l, 10), 0);
  void *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  cf_future_unref(f);
  assert_int_equal(cf_loop_free(l), 0);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
}

/* Outside green tasks every call is libc's own. */
static void test_plain_thread_untouched(void **state) {
  (void)state;
  assert_int_equal(pipe(pipe_fds), 0);
  struct pollfd p = {.fd = pipe_fds[0], .events = POLLIN};
  assert_int_equal(poll(&p, 1, 0), 0);
  assert_int_equal(write(pipe_fds[1], "x", 1), 1);
  assert_int_equal(poll(&p, 1, 1000), 1);
  char c;
  assert_int_equal(read(pipe_fds[0], &c, 1), 1);
  assert_int_equal(usleep(1000), 0);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
}

#define TEST(f)                                                                \
  cmocka_unit_test_setup_teardown(f, arm_watchdog, disarm_watchdog)

int main(void) {
  const struct CMUnitTest tests[] = {
      TEST(test_active),
      TEST(test_sleeps),
      TEST(test_pipe_calls),
      TEST(test_poll_timeout),
      TEST(test_sockets),
      TEST(test_cancel_in_read),
      TEST(test_plain_thread_untouched),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
