/* Tests for futures/future.c: states, results, exceptions, callbacks,
 * reference counting, timeouts. */
#include <dirent.h>
#include <math.h>
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cfutures.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A thread that completes a future after a delay. */
typedef struct later {
  cf_future *f;
  unsigned delay_us;
  int kind; /* 0 result, 1 exception, 2 cancel */
  pthread_t th;
} later;

static void *later_main(void *p) {
  later *l = p;
  usleep(l->delay_us);
  if (l->kind == 0)
    cf_future_set_result(l->f, (void *)(intptr_t)7, NULL);
  else if (l->kind == 1)
    cf_future_set_exception(l->f, CF_EINVAL, "late failure");
  else
    cf_future_cancel(l->f);
  return NULL;
}

static void later_start(later *l, cf_future *f, unsigned delay_us, int kind) {
  l->f = f;
  l->delay_us = delay_us;
  l->kind = kind;
  assert_int_equal(pthread_create(&l->th, NULL, later_main, l), 0);
}

static void later_join(later *l) {
  pthread_join(l->th, NULL);
}

/* ---- states -------------------------------------------------------------- */

static void test_states_result(void **state) {
  (void)state;
  cf_future *f = cf_future_new();
  assert_non_null(f);
  assert_int_equal(cf_future_state_of(f), CF_PENDING);
  assert_false(cf_future_done(f));
  assert_false(cf_future_running(f));
  assert_int_equal(cf_future_set_running_or_notify_cancel(f), 0);
  assert_true(cf_future_running(f));
  assert_false(cf_future_cancel(f)); /* running: cannot cancel */
  assert_int_equal(cf_future_set_running_or_notify_cancel(f), CF_EINVALSTATE);
  assert_int_equal(cf_future_set_result(f, (void *)(intptr_t)42, NULL), 0);
  assert_int_equal(cf_future_state_of(f), CF_FINISHED);
  assert_true(cf_future_done(f));
  assert_false(cf_future_cancel(f));
  assert_false(cf_future_cancelled(f));
  void *v = NULL;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_int_equal((intptr_t)v, 42);
  assert_int_equal(cf_future_result(f, 0, NULL), 0);
  /* a second completion is refused */
  assert_int_equal(cf_future_set_result(f, NULL, NULL), CF_EINVALSTATE);
  assert_int_equal(cf_future_set_exception(f, CF_EINVAL, "x"), CF_EINVALSTATE);
  cf_error e = {99, "junk"};
  assert_int_equal(cf_future_exception(f, 0, &e), 0);
  assert_int_equal(e.code, 0);
  assert_null(e.message);
  cf_future_unref(f);
}

static void test_states_cancel(void **state) {
  (void)state;
  cf_future *f = cf_future_new();
  assert_true(cf_future_cancel(f));
  assert_true(cf_future_cancel(f)); /* twice: still true */
  assert_true(cf_future_cancelled(f));
  assert_true(cf_future_done(f));
  assert_int_equal(cf_future_set_running_or_notify_cancel(f), CF_ECANCELLED);
  assert_int_equal(cf_future_set_result(f, NULL, NULL), CF_EINVALSTATE);
  assert_int_equal(cf_future_result(f, 0, NULL), CF_ECANCELLED);
  cf_error e;
  assert_int_equal(cf_future_exception(f, 0, &e), CF_ECANCELLED);
  cf_future_unref(f);
}

static void test_exception(void **state) {
  (void)state;
  cf_future *f = cf_future_new();
  assert_int_equal(cf_future_set_exception(f, CF_EINVAL, "bad n=%d", 5), 0);
  assert_int_equal(cf_future_result(f, 0, NULL), CF_EFAILED);
  cf_error e;
  assert_int_equal(cf_future_exception(f, 0, &e), 0);
  assert_int_equal(e.code, CF_EINVAL);
  assert_string_equal(e.message, "bad n=5");
  cf_future_unref(f);

  /* NULL fmt: the code's text; a custom positive code */
  f = cf_future_new();
  assert_int_equal(cf_future_set_exception(f, 1234, NULL), 0);
  assert_int_equal(cf_future_exception(f, 0, &e), 0);
  assert_int_equal(e.code, 1234);
  assert_string_equal(e.message, cf_strerror(1234));
  cf_future_unref(f);

  /* CF_EBROKEN surfaces as itself */
  f = cf_future_new();
  assert_int_equal(cf_future_set_exception(f, CF_EBROKEN, "worker died"), 0);
  assert_int_equal(cf_future_result(f, 0, NULL), CF_EBROKEN);
  cf_future_unref(f);

  /* code 0 is not an exception */
  f = cf_future_new();
  assert_int_equal(cf_future_set_exception(f, 0, "no"), CF_EINVAL);
  assert_false(cf_future_done(f));
  cf_future_unref(f);
}

static void test_bad_arguments(void **state) {
  (void)state;
  cf_error e;
  assert_int_equal(cf_future_result(NULL, 0, NULL), CF_EINVAL);
  assert_int_equal(cf_future_exception(NULL, 0, &e), CF_EINVAL);
  assert_false(cf_future_cancel(NULL));
  assert_false(cf_future_done(NULL));
  assert_false(cf_future_running(NULL));
  assert_false(cf_future_cancelled(NULL));
  assert_int_equal(cf_future_set_result(NULL, NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_future_set_exception(NULL, 1, NULL), CF_EINVAL);
  assert_int_equal(cf_future_set_running_or_notify_cancel(NULL), CF_EINVAL);
  assert_int_equal(cf_future_add_done_callback(NULL, NULL, NULL), CF_EINVAL);
  assert_null(cf_future_ref(NULL));
  cf_future_unref(NULL);
  cf_future *f = cf_future_new();
  assert_int_equal(cf_future_result(f, NAN, NULL), CF_EINVAL);
  assert_int_equal(cf_future_exception(f, NAN, &e), CF_EINVAL);
  assert_int_equal(cf_future_exception(f, 0, NULL), CF_EINVAL);
  assert_int_equal(cf_future_add_done_callback(f, NULL, NULL), CF_EINVAL);
  cf_future_unref(f);
}

/* ---- timeouts ------------------------------------------------------------ */

static void test_timeout_50ms(void **state) {
  (void)state;
  cf_future *f = cf_future_new();
  double t0 = now_s();
  assert_int_equal(cf_future_result(f, 0.05, NULL), CF_ETIMEDOUT);
  double dt = now_s() - t0;
  assert_true(dt >= 0.05);
  assert_true(dt < 1.0);
  cf_error e;
  t0 = now_s();
  assert_int_equal(cf_future_exception(f, 0.05, &e), CF_ETIMEDOUT);
  dt = now_s() - t0;
  assert_true(dt >= 0.05 && dt < 1.0);
  /* zero polls */
  t0 = now_s();
  assert_int_equal(cf_future_result(f, 0, NULL), CF_ETIMEDOUT);
  assert_true(now_s() - t0 < 0.05);
  cf_future_unref(f);
}

static void test_wait_forever(void **state) {
  (void)state;
  const double forevers[] = {CF_FOREVER, INFINITY, 1e300};
  for (size_t i = 0; i < sizeof forevers / sizeof forevers[0]; i++) {
    cf_future *f = cf_future_new();
    later l;
    double t0 = now_s(); /* before the thread starts its delay */
    later_start(&l, f, 30000, 0);
    void *v = NULL;
    assert_int_equal(cf_future_result(f, forevers[i], &v), 0);
    assert_true(now_s() - t0 >= 0.03);
    assert_int_equal((intptr_t)v, 7);
    later_join(&l);
    cf_future_unref(f);
  }
}

/* A negative timeout (a remaining time that just went below zero) has
 * expired: the wait polls once, as Python's futures do. The future is
 * completed by a thread 2 s later, so a wait that sleeps instead fails. */
static void test_negative_timeout_expires(void **state) {
  (void)state;
  const double negatives[] = {-1e-9, -0.5, -1.0, -1e300, -INFINITY};
  cf_future *f = cf_future_new();
  later l;
  later_start(&l, f, 2000000, 0);
  for (size_t i = 0; i < sizeof negatives / sizeof negatives[0]; i++) {
    double t = negatives[i], t0 = now_s();
    cf_error e;
    cf_future *fs[1] = {f};
    cf_as_completed *it = NULL;
    cf_future *got = NULL;
    assert_int_equal(cf_future_result(f, t, NULL), CF_ETIMEDOUT);
    assert_int_equal(cf_future_exception(f, t, &e), CF_ETIMEDOUT);
    assert_int_equal(cf_wait(fs, 1, t, CF_ALL_COMPLETED, NULL), CF_ETIMEDOUT);
    assert_int_equal(cf_as_completed_new(fs, 1, t, &it), 0);
    assert_int_equal(cf_as_completed_next(it, &got), CF_ETIMEDOUT);
    cf_as_completed_free(it);
    assert_true(now_s() - t0 < 1.0);
  }
  /* Done futures answer at once whatever the timeout. */
  assert_int_equal(cf_future_result(f, CF_FOREVER, NULL), 0);
  assert_int_equal(cf_future_result(f, -1.0, NULL), 0);
  later_join(&l);
  cf_future_unref(f);
}

/* A pollable descriptor per future: readable exactly when it is done. */
static void test_pollfd(void **state) {
  (void)state;
  int fd = 7;
  assert_int_equal(cf_future_pollfd(NULL, &fd), CF_EINVAL);
  cf_future *f = cf_future_new();
  assert_int_equal(cf_future_pollfd(f, NULL), CF_EINVAL);
  assert_int_equal(cf_future_pollfd(f, &fd), 0);
  struct pollfd p = {.fd = fd, .events = POLLIN};
  assert_int_equal(poll(&p, 1, 50), 0); /* not done: not readable */
  later l;
  double t0 = now_s();
  later_start(&l, f, 30000, 0);
  assert_int_equal(poll(&p, 1, 5000), 1);
  assert_true(now_s() - t0 >= 0.03);
  assert_true(cf_future_done(f));
  uint64_t n = 0;
  assert_int_equal(read(fd, &n, sizeof n), (ssize_t)sizeof n);
  assert_int_equal(n, 1);
  later_join(&l);
  close(fd);
  /* Already done: readable at once. Closing early is fine too. */
  assert_int_equal(cf_future_pollfd(f, &fd), 0);
  p.fd = fd;
  assert_int_equal(poll(&p, 1, 0), 1);
  close(fd);
  cf_future_unref(f);
  f = cf_future_new();
  assert_int_equal(cf_future_pollfd(f, &fd), 0);
  close(fd); /* the caller's copy goes; completing later stays safe */
  assert_int_equal(cf_future_set_result(f, NULL, NULL), 0);
  cf_future_unref(f);
}

static int count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return -1;
  while (readdir(d))
    n++;
  closedir(d);
  return n;
}

static _Atomic int never_called;
static int must_not_run(cf_future *f, void *arg) {
  (void)f;
  (void)arg;
  atomic_fetch_add(&never_called, 1);
  return 0;
}

/* A future freed while still pending: its callbacks never run, and what
 * they and its pollable descriptors held is released (ASan's leak checker
 * and the descriptor count see to it). */
static void test_pending_future_freed(void **state) {
  (void)state;
  int before = count_fds();
  for (int i = 0; i < 20; i++) {
    cf_future *f = cf_future_new();
    assert_int_equal(cf_future_add_done_callback(f, must_not_run, NULL), 0);
    int fd;
    assert_int_equal(cf_future_pollfd(f, &fd), 0);
    close(fd);
    cf_future_unref(f);
  }
  assert_int_equal(count_fds(), before);
  assert_int_equal(atomic_load(&never_called), 0);
}

static void test_wakes_on_exception_and_cancel(void **state) {
  (void)state;
  cf_future *f = cf_future_new();
  later l;
  later_start(&l, f, 20000, 1);
  assert_int_equal(cf_future_result(f, 10, NULL), CF_EFAILED);
  later_join(&l);
  cf_future_unref(f);

  f = cf_future_new();
  later_start(&l, f, 20000, 2);
  assert_int_equal(cf_future_result(f, 10, NULL), CF_ECANCELLED);
  later_join(&l);
  cf_future_unref(f);
}

/* Several threads block on one future completed by another thread. */
typedef struct waiter_arg {
  cf_future *f;
  int rc;
  intptr_t v;
} waiter_arg;

static void *waiter_main(void *p) {
  waiter_arg *a = p;
  void *v = NULL;
  a->rc = cf_future_result(a->f, 10, &v);
  a->v = (intptr_t)v;
  return NULL;
}

static void test_many_waiters(void **state) {
  (void)state;
  for (int round = 0; round < 20; round++) {
    cf_future *f = cf_future_new();
    enum { N = 8 };
    pthread_t th[N];
    waiter_arg a[N];
    for (int i = 0; i < N; i++) {
      a[i] = (waiter_arg){.f = f, .rc = -999};
      assert_int_equal(pthread_create(&th[i], NULL, waiter_main, &a[i]), 0);
    }
    usleep((useconds_t)(round % 4) * 500);
    assert_int_equal(cf_future_set_result(f, (void *)(intptr_t)round, NULL), 0);
    for (int i = 0; i < N; i++) {
      pthread_join(th[i], NULL);
      assert_int_equal(a[i].rc, 0);
      assert_int_equal(a[i].v, round);
    }
    cf_future_unref(f);
  }
}

/* ---- callbacks ----------------------------------------------------------- */

typedef struct cb_log {
  int order[8];
  bool done_seen[8];
  int n;
  pthread_t thread[8];
} cb_log;

typedef struct cb_arg {
  cb_log *log;
  int id;
  int ret;
} cb_arg;

static int cb_record(cf_future *f, void *p) {
  cb_arg *a = p; /* may run on another thread: record, assert later */
  a->log->done_seen[a->log->n] = cf_future_done(f);
  a->log->thread[a->log->n] = pthread_self();
  a->log->order[a->log->n++] = a->id;
  return a->ret;
}

static int reports;
static int last_report_code;
static void count_reports(const char *what, int code, void *ctx) {
  (void)what;
  (void)ctx;
  reports++;
  last_report_code = code;
}

static void test_callbacks_order_and_failure(void **state) {
  (void)state;
  cf_report_fn old = cf_set_report_handler(count_reports, NULL);
  reports = 0;
  cb_log log = {0};
  cb_arg a[3] = {{&log, 1, 0}, {&log, 2, CF_EINVAL}, {&log, 3, 0}};
  cf_future *f = cf_future_new();
  for (int i = 0; i < 3; i++)
    assert_int_equal(cf_future_add_done_callback(f, cb_record, &a[i]), 0);
  assert_int_equal(log.n, 0);
  later l;
  later_start(&l, f, 1000, 0);
  later_join(&l);
  /* ran on the completing thread, in order, the failing one reported */
  assert_int_equal(log.n, 3);
  assert_int_equal(log.order[0], 1);
  assert_int_equal(log.order[1], 2);
  assert_int_equal(log.order[2], 3);
  assert_true(pthread_equal(log.thread[0], l.th));
  assert_true(log.done_seen[0] && log.done_seen[1] && log.done_seen[2]);
  assert_int_equal(reports, 1);
  assert_int_equal(last_report_code, CF_EINVAL);
  /* already done: runs at once, in the caller */
  cb_arg late = {&log, 4, 0};
  assert_int_equal(cf_future_add_done_callback(f, cb_record, &late), 0);
  assert_int_equal(log.n, 4);
  assert_true(pthread_equal(log.thread[3], pthread_self()));
  cf_future_unref(f);
  cf_set_report_handler(old, NULL);
}

static void test_callbacks_on_cancel(void **state) {
  (void)state;
  cb_log log = {0};
  cb_arg a = {&log, 1, 0};
  cf_future *f = cf_future_new();
  assert_int_equal(cf_future_add_done_callback(f, cb_record, &a), 0);
  assert_true(cf_future_cancel(f));
  assert_int_equal(log.n, 1);
  assert_true(cf_future_cancel(f));
  assert_int_equal(log.n, 1); /* exactly once */
  cf_future_unref(f);
}

/* Callbacks added from several threads while another completes the future:
 * each runs exactly once. */
enum { RACE_ADDERS = 4, RACE_PER_ADDER = 16 };
typedef struct race {
  cf_future *f;
  _Atomic int count;
  int added_ok;
} race;

static int cb_count(cf_future *f, void *p) {
  (void)f;
  race *r = p;
  atomic_fetch_add(&r->count, 1);
  return 0;
}

static void *race_adder(void *p) {
  race *r = p;
  int ok = 0;
  for (int i = 0; i < RACE_PER_ADDER; i++)
    ok += cf_future_add_done_callback(r->f, cb_count, r) == 0;
  return (void *)(intptr_t)ok;
}

static void test_callbacks_race_completion(void **state) {
  (void)state;
  for (int round = 0; round < 300; round++) {
    race r = {.f = cf_future_new()};
    atomic_init(&r.count, 0);
    pthread_t th[RACE_ADDERS];
    for (int i = 0; i < RACE_ADDERS; i++)
      assert_int_equal(pthread_create(&th[i], NULL, race_adder, &r), 0);
    if (round & 1)
      cf_future_set_result(r.f, NULL, NULL);
    else
      cf_future_cancel(r.f);
    int ok = 0;
    for (int i = 0; i < RACE_ADDERS; i++) {
      void *ret;
      pthread_join(th[i], &ret);
      ok += (int)(intptr_t)ret;
    }
    assert_int_equal(ok, RACE_ADDERS * RACE_PER_ADDER);
    assert_int_equal(atomic_load(&r.count), RACE_ADDERS * RACE_PER_ADDER);
    cf_future_unref(r.f);
  }
}

/* ---- ownership ----------------------------------------------------------- */

static int destroyed;
static void destroy_count(void *v) {
  if ((intptr_t)v == 5)
    destroyed++;
}

static void test_result_destroy(void **state) {
  (void)state;
  destroyed = 0;
  cf_future *f = cf_future_new();
  assert_int_equal(cf_future_set_result(f, (void *)(intptr_t)5, destroy_count),
                   0);
  cf_future_ref(f);
  cf_future_unref(f);
  assert_int_equal(destroyed, 0);
  cf_future_unref(f);
  assert_int_equal(destroyed, 1);

  /* refused completion: the value stays the caller's */
  f = cf_future_new();
  cf_future_cancel(f);
  assert_int_equal(cf_future_set_result(f, (void *)(intptr_t)5, destroy_count),
                   CF_EINVALSTATE);
  cf_future_unref(f);
  assert_int_equal(destroyed, 1);

  /* a future never completed frees cleanly */
  cf_future_unref(cf_future_new());
}

/* ---- more transitions ---------------------------------------------------- */

static void test_transitions_invalid(void **state) {
  (void)state;
  /* PENDING -> FINISHED directly (no set_running needed) */
  cf_future *f = cf_future_new();
  assert_int_equal(cf_future_set_result(f, (void *)(intptr_t)1, NULL), 0);
  assert_int_equal(cf_future_set_running_or_notify_cancel(f), CF_EINVALSTATE);
  assert_int_equal(cf_future_state_of(f), CF_FINISHED);
  cf_future_unref(f);

  /* RUNNING -> FINISHED with an exception; then nothing else moves it */
  f = cf_future_new();
  assert_int_equal(cf_future_set_running_or_notify_cancel(f), 0);
  assert_int_equal(cf_future_state_of(f), CF_RUNNING);
  assert_false(cf_future_done(f));
  assert_int_equal(cf_future_set_exception(f, CF_ESHUTDOWN, "first"), 0);
  assert_int_equal(cf_future_set_exception(f, CF_EINVAL, "second"),
                   CF_EINVALSTATE);
  assert_int_equal(cf_future_set_result(f, NULL, NULL), CF_EINVALSTATE);
  assert_int_equal(cf_future_set_running_or_notify_cancel(f), CF_EINVALSTATE);
  assert_false(cf_future_cancel(f));
  assert_false(cf_future_cancelled(f));
  assert_false(cf_future_running(f));
  assert_int_equal(cf_future_state_of(f), CF_FINISHED);
  cf_error e;
  assert_int_equal(cf_future_exception(f, 0, &e), 0);
  assert_int_equal(e.code, CF_ESHUTDOWN); /* the first completion stays */
  assert_string_equal(e.message, "first");
  assert_int_equal(cf_future_result(f, 0, NULL), CF_EFAILED);
  cf_future_unref(f);

  /* CANCELLED refuses everything but another cancel */
  f = cf_future_new();
  assert_true(cf_future_cancel(f));
  assert_int_equal(cf_future_set_exception(f, CF_EINVAL, NULL), CF_EINVALSTATE);
  assert_int_equal(cf_future_set_running_or_notify_cancel(f), CF_ECANCELLED);
  assert_int_equal(cf_future_state_of(f), CF_CANCELLED);
  assert_false(cf_future_running(f));
  cf_future_unref(f);

  /* state of NULL */
  assert_int_equal(cf_future_state_of(NULL), CF_PENDING);
}

static void test_exception_message_copied(void **state) {
  (void)state;
  char big[3000];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  cf_future *f = cf_future_new();
  assert_int_equal(cf_future_set_exception(f, -42, "%s|%d", big, 9), 0);
  memset(big, 'y', sizeof big - 1); /* the future has its own copy */
  cf_error e = {0, NULL};
  assert_int_equal(cf_future_exception(f, CF_FOREVER, &e), 0);
  assert_int_equal(e.code, -42);
  assert_int_equal(strlen(e.message), sizeof big - 1 + 2);
  assert_int_equal(e.message[0], 'x');
  assert_string_equal(e.message + sizeof big - 1, "|9");
  /* a custom code surfaces as CF_EFAILED from result */
  assert_int_equal(cf_future_result(f, CF_FOREVER, NULL), CF_EFAILED);
  cf_future_unref(f);

  /* NULL fmt for a table code: that code's text */
  f = cf_future_new();
  assert_int_equal(cf_future_set_exception(f, CF_EBROKEN, NULL), 0);
  assert_int_equal(cf_future_exception(f, 0, &e), 0);
  assert_int_equal(e.code, CF_EBROKEN);
  assert_string_equal(e.message, cf_strerror(CF_EBROKEN));
  cf_future_unref(f);
}

/* Several threads in cf_future_exception while another fails the future. */
typedef struct exc_waiter {
  cf_future *f;
  int rc;
  int code;
  char msg[32];
  pthread_t th;
} exc_waiter;

static void *exc_waiter_main(void *p) {
  exc_waiter *w = p;
  cf_error e = {0, NULL};
  w->rc = cf_future_exception(w->f, CF_FOREVER, &e);
  w->code = e.code;
  if (e.message)
    snprintf(w->msg, sizeof w->msg, "%s", e.message);
  return NULL;
}

static void test_exception_many_waiters(void **state) {
  (void)state;
  enum { W = 6 };
  cf_future *f = cf_future_new();
  exc_waiter ws[W];
  for (int i = 0; i < W; i++) {
    ws[i] = (exc_waiter){.f = f, .rc = -999};
    assert_int_equal(pthread_create(&ws[i].th, NULL, exc_waiter_main, &ws[i]),
                     0);
  }
  later l;
  later_start(&l, f, 10000, 1);
  later_join(&l);
  for (int i = 0; i < W; i++) {
    pthread_join(ws[i].th, NULL);
    assert_int_equal(ws[i].rc, 0);
    assert_int_equal(ws[i].code, CF_EINVAL);
    assert_string_equal(ws[i].msg, "late failure");
  }
  cf_future_unref(f);
}

/* ---- callbacks that call back into cfutures ----------------------------- */

static int inner_ran;
static int cb_inner(cf_future *f, void *arg) {
  (void)f;
  (void)arg;
  inner_ran++;
  return 0;
}

static int cb_reentrant(cf_future *f, void *arg) {
  int *ok = arg;
  void *v = NULL;
  /* the future is done: result does not block, a new callback runs now */
  int before = inner_ran;
  *ok = cf_future_result(f, 0, &v) == 0 && (intptr_t)v == 3 &&
        cf_future_add_done_callback(f, cb_inner, NULL) == 0 &&
        inner_ran == before + 1;
  cf_future *r = cf_future_ref(f);
  cf_future_unref(r);
  return 0;
}

static void test_callbacks_reentrant(void **state) {
  (void)state;
  inner_ran = 0;
  int ok = -1;
  cf_future *f = cf_future_new();
  assert_int_equal(cf_future_add_done_callback(f, cb_reentrant, &ok), 0);
  assert_int_equal(cf_future_set_result(f, (void *)(intptr_t)3, NULL), 0);
  assert_int_equal(ok, 1);
  assert_int_equal(inner_ran, 1);
  /* on an already-done future, in the caller */
  ok = -1;
  assert_int_equal(cf_future_add_done_callback(f, cb_reentrant, &ok), 0);
  assert_int_equal(ok, 1);
  assert_int_equal(inner_ran, 2);
  cf_future_unref(f);
}

/* A callback failing on an already-done future is reported too, and the
 * report names it; restoring the default handler gives ours back. */
static const char *report_what;
static void *report_ctx;
static void keep_report(const char *what, int code, void *ctx) {
  report_what = what;
  report_ctx = ctx;
  last_report_code = code;
  reports++;
}

static int cb_fail_timeout(cf_future *f, void *arg) {
  (void)f;
  (void)arg;
  return CF_ETIMEDOUT;
}

static void test_callback_report_done_future(void **state) {
  (void)state;
  int ctx;
  cf_set_report_handler(keep_report, &ctx);
  reports = 0;
  cf_future *f = cf_future_new();
  cf_future_cancel(f);
  assert_int_equal(cf_future_add_done_callback(f, cb_fail_timeout, NULL), 0);
  assert_int_equal(reports, 1);
  assert_int_equal(last_report_code, CF_ETIMEDOUT);
  assert_non_null(report_what);
  assert_true(strlen(report_what) > 0);
  assert_ptr_equal(report_ctx, &ctx);
  assert_ptr_equal(cf_set_report_handler(NULL, NULL), keep_report);
  cf_future_unref(f);
}

/* Callbacks added from several threads while the main thread completes the
 * future, a few thousand times, on threads kept across rounds so that the
 * adds and the completion really overlap: each callback runs exactly once. */
enum { LOOP_ADDERS = 3, LOOP_PER_ADDER = 4, LOOP_ROUNDS = 3000 };
static pthread_barrier_t loop_start, loop_end;
static cf_future *loop_future;
static _Atomic int loop_count;
static _Atomic int loop_add_failures;
static _Atomic int loop_not_done;

static int cb_loop(cf_future *f, void *p) {
  (void)p;
  if (!cf_future_done(f))
    atomic_fetch_add(&loop_not_done, 1);
  atomic_fetch_add(&loop_count, 1);
  return 0;
}

static void *loop_adder(void *p) {
  (void)p;
  for (int round = 0; round < LOOP_ROUNDS; round++) {
    pthread_barrier_wait(&loop_start);
    for (int i = 0; i < LOOP_PER_ADDER; i++)
      if (cf_future_add_done_callback(loop_future, cb_loop, NULL) != 0)
        atomic_fetch_add(&loop_add_failures, 1);
    pthread_barrier_wait(&loop_end);
  }
  return NULL;
}

static void test_callbacks_race_loop(void **state) {
  (void)state;
  assert_int_equal(pthread_barrier_init(&loop_start, NULL, LOOP_ADDERS + 1), 0);
  assert_int_equal(pthread_barrier_init(&loop_end, NULL, LOOP_ADDERS + 1), 0);
  atomic_store(&loop_add_failures, 0);
  atomic_store(&loop_not_done, 0);
  pthread_t th[LOOP_ADDERS];
  for (int i = 0; i < LOOP_ADDERS; i++)
    assert_int_equal(pthread_create(&th[i], NULL, loop_adder, NULL), 0);
  int bad_rounds = 0;
  for (int round = 0; round < LOOP_ROUNDS; round++) {
    loop_future = cf_future_new();
    assert_non_null(loop_future);
    atomic_store(&loop_count, 0);
    pthread_barrier_wait(&loop_start);
    for (int spin = 0; spin < round % 50; spin++)
      atomic_signal_fence(memory_order_seq_cst); /* vary the overlap */
    switch (round % 3) {
    case 0:
      cf_future_set_result(loop_future, NULL, NULL);
      break;
    case 1:
      cf_future_cancel(loop_future);
      break;
    default:
      cf_future_set_exception(loop_future, CF_EINVAL, NULL);
    }
    pthread_barrier_wait(&loop_end);
    bad_rounds += atomic_load(&loop_count) != LOOP_ADDERS * LOOP_PER_ADDER;
    cf_future_unref(loop_future);
  }
  for (int i = 0; i < LOOP_ADDERS; i++)
    pthread_join(th[i], NULL);
  pthread_barrier_destroy(&loop_start);
  pthread_barrier_destroy(&loop_end);
  assert_int_equal(bad_rounds, 0);
  assert_int_equal(atomic_load(&loop_add_failures), 0);
  assert_int_equal(atomic_load(&loop_not_done), 0);
}

/* ---- reference counting across threads ---------------------------------- */

static _Atomic int destroyed_atomic;
static void destroy_free(void *v) {
  atomic_fetch_add(&destroyed_atomic, 1);
  free(v);
}

static void *drop_ref(void *p) {
  cf_future *f = p;
  void *v = NULL;
  if (cf_future_result(f, CF_FOREVER, &v) == 0 && v)
    (void)*(volatile int *)v; /* lent: valid while we hold our ref */
  cf_future_unref(f);
  return NULL;
}

static void test_result_destroy_threads(void **state) {
  (void)state;
  enum { T = 4 };
  for (int round = 0; round < 100; round++) {
    atomic_store(&destroyed_atomic, 0);
    cf_future *f = cf_future_new();
    pthread_t th[T];
    for (int i = 0; i < T; i++)
      assert_int_equal(pthread_create(&th[i], NULL, drop_ref, cf_future_ref(f)),
                       0);
    int *v = malloc(sizeof *v);
    assert_non_null(v);
    *v = round;
    assert_int_equal(cf_future_set_result(f, v, destroy_free), 0);
    void *got = NULL;
    assert_int_equal(cf_future_result(f, 0, &got), 0);
    assert_ptr_equal(got, v);
    cf_future_unref(f);
    for (int i = 0; i < T; i++)
      pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&destroyed_atomic), 1);
  }

  /* read many times, destroyed once; failed and cancelled ones never call
   * a destroy function (they have no value) */
  atomic_store(&destroyed_atomic, 0);
  cf_future *f = cf_future_new();
  int *v = malloc(sizeof *v);
  assert_non_null(v);
  assert_int_equal(cf_future_set_result(f, v, destroy_free), 0);
  for (int i = 0; i < 5; i++)
    assert_int_equal(cf_future_result(f, 0, NULL), 0);
  cf_future_unref(f);
  assert_int_equal(atomic_load(&destroyed_atomic), 1);
  f = cf_future_new();
  cf_future_set_exception(f, CF_EINVAL, NULL);
  v = malloc(sizeof *v);
  assert_non_null(v);
  assert_int_equal(cf_future_set_result(f, v, destroy_free), CF_EINVALSTATE);
  cf_future_unref(f);
  assert_int_equal(atomic_load(&destroyed_atomic), 1);
  free(v); /* refused: still ours */
}

/* ---- error table --------------------------------------------------------- */

static void test_strerror(void **state) {
  (void)state;
  const int codes[] = {
#define X(name, value, msg) CF_##name,
      CF_ERRNO_MAP(X)
#undef X
  };
  size_t n = sizeof codes / sizeof codes[0];
  for (size_t i = 0; i < n; i++) {
    assert_true(codes[i] < 0);
    assert_true(strlen(cf_strerror(codes[i])) > 0);
    assert_string_not_equal(cf_strerror(codes[i]), "unknown error");
    assert_true(strncmp(cf_err_name(codes[i]), "CF_E", 4) == 0);
    for (size_t j = 0; j < i; j++) {
      assert_int_not_equal(codes[i], codes[j]);
      assert_string_not_equal(cf_strerror(codes[i]), cf_strerror(codes[j]));
      assert_string_not_equal(cf_err_name(codes[i]), cf_err_name(codes[j]));
    }
  }
  assert_string_equal(cf_err_name(CF_ETIMEDOUT), "CF_ETIMEDOUT");
  assert_string_equal(cf_strerror(0), "success");
  assert_string_equal(cf_err_name(0), "CF_OK");
  assert_string_equal(cf_strerror(-9999), "unknown error");
  assert_string_equal(cf_err_name(-9999), "CF_E?");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_states_result),
      cmocka_unit_test(test_states_cancel),
      cmocka_unit_test(test_transitions_invalid),
      cmocka_unit_test(test_exception),
      cmocka_unit_test(test_exception_message_copied),
      cmocka_unit_test(test_exception_many_waiters),
      cmocka_unit_test(test_bad_arguments),
      cmocka_unit_test(test_timeout_50ms),
      cmocka_unit_test(test_wait_forever),
      cmocka_unit_test(test_negative_timeout_expires),
      cmocka_unit_test(test_pollfd),
      cmocka_unit_test(test_pending_future_freed),
      cmocka_unit_test(test_wakes_on_exception_and_cancel),
      cmocka_unit_test(test_many_waiters),
      cmocka_unit_test(test_callbacks_order_and_failure),
      cmocka_unit_test(test_callbacks_on_cancel),
      cmocka_unit_test(test_callbacks_reentrant),
      cmocka_unit_test(test_callback_report_done_future),
      cmocka_unit_test(test_callbacks_race_completion),
      cmocka_unit_test(test_callbacks_race_loop),
      cmocka_unit_test(test_result_destroy),
      cmocka_unit_test(test_result_destroy_threads),
      cmocka_unit_test(test_strerror),
  };
  return cmocka_run_group_tests_name("future", tests, NULL, NULL);
}
