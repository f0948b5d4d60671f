/* M:N: green waits in thread-pool tasks (core/netpoll.h). A pool task that
 * waits for a descriptor (cf_green_wait_fd and green I/O) or sleeps
 * (cf_green_sleep) suspends only itself: its worker runs other tasks
 * meanwhile. Each test has more tasks waiting at once than the pool has
 * workers, so a wait that blocked its worker instead would hang it (the
 * counters below never reach their goal) or be seen not to overlap.
 * Every blocking call has a timeout; the watchdog bounds each test. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cfutures.h>

#define WATCHDOG_S 90
#include "../watchdog.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Waits (up to 20 s) until *n reaches goal; false if it did not. */
static bool reaches(_Atomic int *n, int goal) {
  double until = now_s() + 20;
  while (atomic_load(n) < goal) {
    if (now_s() > until)
      return false;
    usleep(1000);
  }
  return true;
}

static int open_fds(void) {
  int n = 0;
  for (int fd = 0; fd < 4096; fd++)
    n += fcntl(fd, F_GETFD) >= 0;
  return n;
}

static cf_executor *new_pool(size_t workers) {
  cf_thread_pool_opts o = {.max_workers = workers};
  cf_executor *ex;
  assert_int_equal(cf_thread_pool_new(&o, &ex), 0);
  return ex;
}

/* ---- reads -------------------------------------------------------------- */

#define NREADERS 64
static int pairs[NREADERS][2];
static _Atomic int reading;

static int read_one(void *arg, void **out) {
  int fd = pairs[(intptr_t)arg][1];
  atomic_fetch_add(&reading, 1);
  unsigned char b;
  size_t got = 0;
  int rc = cf_green_read(fd, &b, 1, 30, &got);
  if (rc)
    return rc;
  *out = (void *)(intptr_t)(got == 1 ? b : -1);
  return 0;
}

static void test_reads_suspend_the_task(void **state) {
  (void)state;
  cf_executor *ex = new_pool(2);
  atomic_store(&reading, 0);
  cf_future *fs[NREADERS];
  for (intptr_t i = 0; i < NREADERS; i++) {
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, pairs[i]), 0);
    assert_int_equal(cf_submit(ex, read_one, (void *)i, &fs[i]), 0);
  }
  /* all 64 tasks wait at once on 2 workers */
  bool all = reaches(&reading, NREADERS);
  int got_to_wait = atomic_load(&reading);
  for (int i = 0; i < NREADERS; i++) {
    unsigned char b = (unsigned char)(i * 7 + 1);
    assert_int_equal(write(pairs[i][0], &b, 1), 1);
  }
  for (int i = 0; i < NREADERS; i++) {
    void *v;
    assert_int_equal(cf_future_result(fs[i], 30, &v), 0);
    assert_int_equal((intptr_t)v, (unsigned char)(i * 7 + 1));
    cf_future_unref(fs[i]);
    close(pairs[i][0]);
    close(pairs[i][1]);
  }
  cf_executor_free(ex);
  if (!all)
    fail_msg("only %d of %d tasks got to wait at once", got_to_wait,
             NREADERS);
}

/* ---- sleeps ------------------------------------------------------------- */

static _Atomic int asleep, most_asleep;

static int nap(void *arg, void **out) {
  (void)arg;
  (void)out;
  int n = atomic_fetch_add(&asleep, 1) + 1;
  int m = atomic_load(&most_asleep);
  while (n > m && !atomic_compare_exchange_weak(&most_asleep, &m, n)) {
  }
  int rc = cf_green_sleep(0.3);
  atomic_fetch_sub(&asleep, 1);
  return rc;
}

static void test_sleeps_suspend_the_task(void **state) {
  (void)state;
  cf_executor *ex = new_pool(1);
  atomic_store(&asleep, 0);
  atomic_store(&most_asleep, 0);
  cf_future *fs[20];
  for (int i = 0; i < 20; i++)
    assert_int_equal(cf_submit(ex, nap, NULL, &fs[i]), 0);
  for (int i = 0; i < 20; i++) {
    assert_int_equal(cf_future_result(fs[i], 30, NULL), 0);
    cf_future_unref(fs[i]);
  }
  cf_executor_free(ex);
  /* one worker, twenty sleepers at once */
  assert_int_equal(atomic_load(&most_asleep), 20);
}

static int sleep_bad(void *arg, void **out) {
  (void)arg;
  (void)out;
  if (cf_green_sleep(-1) != CF_EINVAL || cf_green_sleep(NAN) != CF_EINVAL)
    return CF_EINVALSTATE;
  return cf_green_sleep(0);
}

static void test_sleep_bad_input(void **state) {
  (void)state;
  cf_executor *ex = new_pool(1);
  cf_future *f;
  assert_int_equal(cf_submit(ex, sleep_bad, NULL, &f), 0);
  assert_int_equal(cf_future_result(f, 30, NULL), 0);
  cf_future_unref(f);
  cf_executor_free(ex);
}

/* ---- timeouts ----------------------------------------------------------- */

static int quiet[2];
static _Atomic bool other_ran;

static int wait_in_vain(void *arg, void **out) {
  (void)arg;
  double t0 = now_s();
  int rc = cf_green_wait_fd(quiet[1], CF_GREEN_READ, 0.1);
  double took = now_s() - t0;
  if (rc != CF_ETIMEDOUT)
    return CF_EINVALSTATE;
  if (took < 0.1)
    return cf_fail(CF_EINVALSTATE, "timed out early: %.3f s", took);
  /* the other task ran on this pool's only worker meanwhile */
  *out = (void *)(intptr_t)atomic_load(&other_ran);
  size_t got;
  char b;
  rc = cf_green_read(quiet[1], &b, 1, 0.05, &got);
  return rc == CF_ETIMEDOUT ? 0 : CF_EINVALSTATE;
}

static int mark(void *arg, void **out) {
  (void)arg;
  (void)out;
  atomic_store(&other_ran, true);
  return 0;
}

static void test_timeouts(void **state) {
  (void)state;
  cf_executor *ex = new_pool(1);
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, quiet), 0);
  atomic_store(&other_ran, false);
  cf_future *a, *b;
  assert_int_equal(cf_submit(ex, wait_in_vain, NULL, &a), 0);
  usleep(20 * 1000);
  assert_int_equal(cf_submit(ex, mark, NULL, &b), 0);
  void *v;
  int rc = cf_future_result(a, 30, &v);
  if (rc) {
    cf_error e = {0};
    cf_future_exception(a, 0, &e);
    fail_msg("%s", e.message ? e.message : cf_err_name(rc));
  }
  assert_int_equal((intptr_t)v, 1);
  assert_int_equal(cf_future_result(b, 30, NULL), 0);
  cf_future_unref(a);
  cf_future_unref(b);
  close(quiet[0]);
  close(quiet[1]);
  cf_executor_free(ex);
}

/* A zero timeout asks whether the descriptor is ready now. */
static int ready_now(void *arg, void **out) {
  (void)arg;
  (void)out;
  if (cf_green_wait_fd(quiet[1], CF_GREEN_READ, 0) != CF_ETIMEDOUT ||
      cf_green_wait_fd(quiet[1], CF_GREEN_WRITE, 0) != 0)
    return CF_EINVALSTATE;
  if (write(quiet[0], "x", 1) != 1)
    return CF_ESYS;
  return cf_green_wait_fd(quiet[1], CF_GREEN_READ, 0) == 0 ? 0
                                                           : CF_EINVALSTATE;
}

static void test_zero_timeout(void **state) {
  (void)state;
  cf_executor *ex = new_pool(1);
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, quiet), 0);
  cf_future *f;
  assert_int_equal(cf_submit(ex, ready_now, NULL, &f), 0);
  assert_int_equal(cf_future_result(f, 30, NULL), 0);
  cf_future_unref(f);
  close(quiet[0]);
  close(quiet[1]);
  cf_executor_free(ex);
}

/* ---- a reader and a writer on one socket -------------------------------- */

static int duplex[2];
static _Atomic int duplex_state;

static int duplex_reader(void *arg, void **out) {
  (void)arg;
  (void)out;
  atomic_store(&duplex_state, 1);
  return cf_green_wait_fd(duplex[1], CF_GREEN_READ, 30);
}

static int duplex_writer(void *arg, void **out) {
  (void)arg;
  (void)out;
  /* the reader's registration of the same descriptor stands */
  int rc = cf_green_wait_fd(duplex[1], CF_GREEN_WRITE, 30);
  if (rc)
    return rc;
  atomic_store(&duplex_state, 2);
  return cf_green_write_all(duplex[1], "w", 1, 30);
}

static void test_reader_and_writer_on_one_socket(void **state) {
  (void)state;
  cf_executor *ex = new_pool(1);
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, duplex), 0);
  int fds_before = open_fds();
  atomic_store(&duplex_state, 0);
  cf_future *r, *w;
  assert_int_equal(cf_submit(ex, duplex_reader, NULL, &r), 0);
  assert_true(reaches(&duplex_state, 1));
  usleep(20 * 1000); /* the reader waits */
  assert_int_equal(cf_submit(ex, duplex_writer, NULL, &w), 0);
  assert_int_equal(cf_future_result(w, 30, NULL), 0);
  char b;
  assert_int_equal(read(duplex[0], &b, 1), 1);
  assert_int_equal(b, 'w');
  assert_false(cf_future_done(r));
  assert_int_equal(write(duplex[0], "r", 1), 1);
  assert_int_equal(cf_future_result(r, 30, NULL), 0);
  cf_future_unref(r);
  cf_future_unref(w);
  /* the duplicate the writer's wait used is closed */
  assert_int_equal(open_fds(), fds_before);
  close(duplex[0]);
  close(duplex[1]);
  cf_executor_free(ex);
}

/* ---- descriptors epoll does not watch, and bad ones --------------------- */

/* Fails with cf_green_wait_fd's own code and message. */
static int wait_on(void *arg, void **out) {
  (void)out;
  int rc = cf_green_wait_fd((int)(intptr_t)arg,
                            CF_GREEN_READ | CF_GREEN_WRITE, 5);
  return rc ? cf_fail(rc, "%s", cf_last_error()) : 0;
}

static void test_files_and_bad_descriptors(void **state) {
  (void)state;
  cf_executor *ex = new_pool(1);
  FILE *tmp = tmpfile();
  assert_non_null(tmp);
  cf_future *f;
  /* a regular file is always ready */
  assert_int_equal(cf_submit(ex, wait_on, (void *)(intptr_t)fileno(tmp), &f),
                   0);
  assert_int_equal(cf_future_result(f, 30, NULL), 0);
  cf_future_unref(f);
  fclose(tmp);
  /* a closed descriptor: the poller's epoll_ctl says EBADF */
  int p[2];
  assert_int_equal(pipe(p), 0);
  close(p[0]);
  close(p[1]);
  assert_int_equal(cf_submit(ex, wait_on, (void *)(intptr_t)p[0], &f), 0);
  assert_int_equal(cf_future_result(f, 30, NULL), CF_EFAILED);
  cf_error e = {0};
  assert_int_equal(cf_future_exception(f, 0, &e), 0);
  assert_int_equal(e.code, CF_ESYS);
  if (!e.message || !strstr(e.message, "Bad file descriptor"))
    fail_msg("message: %s", e.message ? e.message : "(none)");
  cf_future_unref(f);
  /* a negative one */
  assert_int_equal(cf_submit(ex, wait_on, (void *)(intptr_t)-1, &f), 0);
  assert_int_equal(cf_future_result(f, 30, NULL), CF_EFAILED);
  assert_int_equal(cf_future_exception(f, 0, &e), 0);
  assert_int_equal(e.code, CF_EINVAL);
  cf_future_unref(f);
  cf_executor_free(ex);
}

/* ---- a TCP echo: accept, connect, read and write in pool tasks ---------- */

#define NCLIENTS 8
#define ECHO_BYTES (256 * 1024)
static cf_executor *echo_pool;
static int listener;
static struct sockaddr_in listen_addr;

static int echo_conn(void *arg, void **out) {
  (void)out;
  int fd = (int)(intptr_t)arg;
  char buf[4096];
  int rc = 0;
  for (;;) {
    size_t got;
    rc = cf_green_read(fd, buf, sizeof buf, 30, &got);
    if (rc || got == 0)
      break;
    rc = cf_green_write_all(fd, buf, got, 30);
    if (rc)
      break;
  }
  close(fd);
  return rc;
}

static int acceptor(void *arg, void **out) {
  (void)arg;
  (void)out;
  for (int i = 0; i < NCLIENTS; i++) {
    int c;
    int rc = cf_green_accept(listener, 30, &c);
    if (rc)
      return rc;
    cf_future *f;
    rc = cf_submit(echo_pool, echo_conn, (void *)(intptr_t)c, &f);
    if (rc)
      return rc;
    cf_future_unref(f); /* its outcome shows in the client's check */
  }
  return 0;
}

static int client(void *arg, void **out) {
  (void)out;
  unsigned seed = (unsigned)(intptr_t)arg;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return CF_ESYS;
  int rc = cf_green_connect(fd, (struct sockaddr *)&listen_addr,
                            sizeof listen_addr, 30);
  unsigned char *out_buf = malloc(ECHO_BYTES), *in_buf = malloc(ECHO_BYTES);
  if (!rc && (!out_buf || !in_buf))
    rc = CF_ENOMEM;
  for (size_t i = 0; !rc && i < ECHO_BYTES; i++)
    out_buf[i] = (unsigned char)(seed * 31 + i * 7);
  /* in slices, so that the echo's replies never fill both ways at once */
  for (size_t off = 0; !rc && off < ECHO_BYTES; off += 16384) {
    rc = cf_green_write_all(fd, out_buf + off, 16384, 30);
    for (size_t have = 0; !rc && have < 16384;) {
      size_t got;
      rc = cf_green_read(fd, in_buf + off + have, 16384 - have, 30, &got);
      if (!rc && got == 0)
        rc = cf_fail(CF_EINVALSTATE, "the echo hung up early");
      have += got;
    }
  }
  if (!rc && memcmp(in_buf, out_buf, ECHO_BYTES) != 0)
    rc = cf_fail(CF_EINVALSTATE, "the echo changed a byte");
  free(out_buf);
  free(in_buf);
  close(fd);
  return rc;
}

static void test_tcp_echo_in_pool_tasks(void **state) {
  (void)state;
  echo_pool = new_pool(2);
  listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(listener >= 0);
  listen_addr = (struct sockaddr_in){.sin_family = AF_INET,
                                     .sin_addr.s_addr = htonl(0x7f000001)};
  assert_int_equal(
      bind(listener, (struct sockaddr *)&listen_addr, sizeof listen_addr), 0);
  socklen_t len = sizeof listen_addr;
  assert_int_equal(
      getsockname(listener, (struct sockaddr *)&listen_addr, &len), 0);
  assert_int_equal(listen(listener, 64), 0);
  /* 1 acceptor, 8 clients and 8 echoes: 17 tasks waiting on 2 workers */
  cf_future *acc, *cl[NCLIENTS];
  assert_int_equal(cf_submit(echo_pool, acceptor, NULL, &acc), 0);
  for (intptr_t i = 0; i < NCLIENTS; i++)
    assert_int_equal(cf_submit(echo_pool, client, (void *)i, &cl[i]), 0);
  for (int i = 0; i < NCLIENTS; i++) {
    int rc = cf_future_result(cl[i], 60, NULL);
    if (rc) {
      cf_error e = {0};
      cf_future_exception(cl[i], 0, &e);
      fail_msg("client %d: %s", i, e.message ? e.message : cf_err_name(rc));
    }
    cf_future_unref(cl[i]);
  }
  assert_int_equal(cf_future_result(acc, 30, NULL), 0);
  cf_future_unref(acc);
  cf_executor_free(echo_pool);
  close(listener);
}

/* ---- random waits against random writes --------------------------------- */

#define NSOCKS 16
static int rs[NSOCKS][2];

static int random_wait(void *arg, void **out) {
  uintptr_t x = (uintptr_t)arg;
  int fd = rs[x % NSOCKS][1];
  double timeout = (double)(x / NSOCKS % 8) * 0.004; /* 0 to 28 ms */
  int rc = x % 3 ? cf_green_wait_fd(fd, CF_GREEN_READ, timeout)
                 : cf_green_sleep(timeout);
  if (rc == CF_ETIMEDOUT) {
    *out = (void *)(intptr_t)1;
    return 0;
  }
  *out = (void *)(intptr_t)0;
  return rc;
}

static void test_random_waits(void **state) {
  (void)state;
  for (int i = 0; i < NSOCKS; i++)
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, rs[i]), 0);
  unsigned seed = 12345;
  double until = now_s() + 5;
  for (int round = 0; round < 20 && now_s() < until; round++) {
    cf_executor *ex = new_pool(2);
    cf_future *fs[200];
    int n = 0;
    for (; n < 200; n++) {
      seed = seed * 1103515245 + 12345;
      if (cf_submit(ex, random_wait, (void *)(uintptr_t)(seed >> 8), &fs[n]))
        break;
      if (seed % 7 == 0) { /* make a socket readable at random */
        seed = seed * 1103515245 + 12345;
        assert_int_equal(write(rs[seed % NSOCKS][0], "x", 1), 1);
      }
    }
    for (int i = 0; i < n; i++) {
      void *v;
      assert_int_equal(cf_future_result(fs[i], 30, &v), 0);
      cf_future_unref(fs[i]);
    }
    cf_executor_free(ex);
    for (int i = 0; i < NSOCKS; i++) { /* drain what was written */
      char buf[256];
      while (recv(rs[i][1], buf, sizeof buf, MSG_DONTWAIT) > 0) {
      }
    }
  }
  for (int i = 0; i < NSOCKS; i++) {
    close(rs[i][0]);
    close(rs[i][1]);
  }
}

#if defined(__SANITIZE_THREAD__)
#define TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TSAN 1
#endif
#endif

/* ---- a child forked while the poller runs ------------------------------- */

#ifndef TSAN /* see main */

static int child_pipe[2];

static int read_pipe(void *arg, void **out) {
  (void)arg;
  char b;
  size_t got;
  int rc = cf_green_read(child_pipe[0], &b, 1, 10, &got);
  *out = (void *)(intptr_t)(got == 1 ? b : -1);
  return rc;
}

static void test_poller_in_a_forked_child(void **state) {
  (void)state;
  /* the parent's poller runs (test_reads_suspend_the_task started it, but
   * make sure) */
  cf_executor *ex = new_pool(1);
  assert_int_equal(pipe(child_pipe), 0);
  cf_future *f;
  assert_int_equal(write(child_pipe[1], "p", 1), 1);
  assert_int_equal(cf_submit(ex, read_pipe, NULL, &f), 0);
  void *v;
  assert_int_equal(cf_future_result(f, 30, &v), 0);
  assert_int_equal((intptr_t)v, 'p');
  cf_future_unref(f);
  cf_executor_free(ex);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    alarm(20);
    cf_executor *cx;
    cf_thread_pool_opts o = {.max_workers = 1};
    if (cf_thread_pool_new(&o, &cx) != 0)
      _exit(2);
    cf_future *cf;
    if (cf_submit(cx, read_pipe, NULL, &cf) != 0)
      _exit(3);
    usleep(50 * 1000); /* the task waits, through the child's own poller */
    if (write(child_pipe[1], "c", 1) != 1)
      _exit(4);
    void *cv;
    if (cf_future_result(cf, 10, &cv) != 0 || (intptr_t)cv != 'c')
      _exit(5);
    cf_future_unref(cf);
    cf_executor_free(cx);
    _exit(0);
  }
  int st = 0;
  double until = now_s() + 30;
  while (waitpid(pid, &st, WNOHANG) == 0 && now_s() < until)
    usleep(10 * 1000);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
  close(child_pipe[0]);
  close(child_pipe[1]);
}
#endif

#define T(f) cmocka_unit_test_setup_teardown(f, arm_watchdog, disarm_watchdog)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_reads_suspend_the_task),
      T(test_sleeps_suspend_the_task),
      T(test_sleep_bad_input),
      T(test_timeouts),
      T(test_zero_timeout),
      T(test_reader_and_writer_on_one_socket),
      T(test_files_and_bad_descriptors),
      T(test_tcp_echo_in_pool_tasks),
      T(test_random_waits),
#ifndef TSAN
      /* ThreadSanitizer ends a child of a threaded process that starts a
       * thread (die_after_fork), and a skipped test reads as a failure in
       * cmocka's TAP: the plain and ASan builds run this one. */
      T(test_poller_in_a_forked_child),
#endif
  };
  if (getenv("TEST_FILTER")) /* one test by name, e.g. test_timeouts */
    cmocka_set_test_filter(getenv("TEST_FILTER"));
  return cmocka_run_group_tests(tests, NULL, NULL);
}
