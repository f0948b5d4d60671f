/* Tests for futures/wait.c: cf_wait. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cfutures.h>

#include "helpers.h"

/* ---- cf_wait ------------------------------------------------------------- */

static void test_wait_bad_args(void **state) {
  (void)state;
  cf_future *fs[3];
  new_futures(fs, 2);
  bool done[3];
  assert_int_equal(cf_wait(NULL, 1, 0, CF_ALL_COMPLETED, done), CF_EINVAL);
  assert_int_equal(cf_wait(fs, 2, NAN, CF_ALL_COMPLETED, done), CF_EINVAL);
  assert_int_equal(cf_wait(fs, 2, 0, (cf_return_when)7, done), CF_EINVAL);
  assert_int_equal(cf_wait(NULL, 0, NAN, CF_ALL_COMPLETED, NULL), CF_EINVAL);
  fs[2] = NULL;
  assert_int_equal(cf_wait(fs, 3, 0, CF_ALL_COMPLETED, done), CF_EINVAL);
  free_futures(fs, 2);
}

/* As in Python: an empty list is done at once, whatever the condition; a
 * future listed twice counts once. */
static void test_wait_empty_and_duplicates(void **state) {
  (void)state;
  const cf_return_when whens[] = {CF_FIRST_COMPLETED, CF_FIRST_EXCEPTION,
                                  CF_ALL_COMPLETED};
  for (int k = 0; k < 3; k++) {
    assert_int_equal(cf_wait(NULL, 0, CF_FOREVER, whens[k], NULL), 0);
    cf_future *none[1] = {NULL};
    assert_int_equal(cf_wait(none, 0, 1, whens[k], NULL), 0);
  }
  cf_future *fs[4];
  new_futures(fs, 2);
  fs[2] = fs[0];
  fs[3] = fs[1];
  bool done[4] = {true, true, true, true};
  /* Nothing done: a timeout, each entry (duplicates too) says not done. */
  assert_int_equal(cf_wait(fs, 4, 0.01, CF_FIRST_COMPLETED, done),
                   CF_ETIMEDOUT);
  for (int i = 0; i < 4; i++)
    assert_false(done[i]);
  /* One of two distinct futures done: ALL still waits for the other. */
  cf_future_set_result(fs[0], NULL, NULL);
  assert_int_equal(cf_wait(fs, 4, 0.01, CF_ALL_COMPLETED, done),
                   CF_ETIMEDOUT);
  assert_true(done[0] && done[2]);
  assert_false(done[1] || done[3]);
  assert_int_equal(cf_wait(fs, 4, 0, CF_FIRST_COMPLETED, done), 0);
  const int order[] = {1};
  script s = {.fs = fs, .order = order, .n = 1, .delay_us = 20000};
  script_run(&s);
  assert_int_equal(cf_wait(fs, 4, 10, CF_ALL_COMPLETED, done), 0);
  for (int i = 0; i < 4; i++)
    assert_true(done[i]);
  pthread_join(s.th, NULL);
  free_futures(fs, 2);
}

static void test_wait_first_completed(void **state) {
  (void)state;
  enum { N = 4 };
  cf_future *fs[N];
  new_futures(fs, N);
  const int order[] = {2};
  script s = {.fs = fs, .order = order, .n = 1, .delay_us = 20000};
  script_run(&s);
  bool done[N];
  assert_int_equal(cf_wait(fs, N, 10, CF_FIRST_COMPLETED, done), 0);
  assert_true(done[2]);
  assert_false(done[0] || done[1] || done[3]);
  pthread_join(s.th, NULL);
  free_futures(fs, N);
}

static void test_wait_all_completed(void **state) {
  (void)state;
  enum { N = 6 };
  cf_future *fs[N];
  new_futures(fs, N);
  cf_future_set_result(fs[0], NULL, NULL); /* one already done */
  const int order[] = {5, 1, 3, 2, 4};
  script s = {.fs = fs, .order = order, .n = 5, .delay_us = 2000};
  script_run(&s);
  bool done[N];
  assert_int_equal(cf_wait(fs, N, 10, CF_ALL_COMPLETED, done), 0);
  for (int i = 0; i < N; i++)
    assert_true(done[i]);
  pthread_join(s.th, NULL);
  /* done may be NULL */
  assert_int_equal(cf_wait(fs, N, 0, CF_ALL_COMPLETED, NULL), 0);
  free_futures(fs, N);
}

static void test_wait_first_exception(void **state) {
  (void)state;
  enum { N = 4 };
  cf_future *fs[N];
  new_futures(fs, N);
  cf_future_cancel(fs[3]); /* a cancelled future is not an exception */
  const int order[] = {0, 1, 2};
  const bool fail[] = {false, true, false};
  script s = {
      .fs = fs, .order = order, .fail = fail, .n = 2, .delay_us = 10000};
  script_run(&s);
  bool done[N];
  assert_int_equal(cf_wait(fs, N, 10, CF_FIRST_EXCEPTION, done), 0);
  assert_true(done[1]);
  assert_false(done[2]); /* returned on the failure, before the rest */
  assert_int_equal(cf_future_result(fs[1], 0, NULL), CF_EFAILED);
  pthread_join(s.th, NULL);
  free_futures(fs, N);

  /* without failures it returns when all are done */
  new_futures(fs, N);
  const int order2[] = {3, 0, 2, 1};
  script s2 = {.fs = fs, .order = order2, .n = 4, .delay_us = 2000};
  script_run(&s2);
  assert_int_equal(cf_wait(fs, N, 10, CF_FIRST_EXCEPTION, done), 0);
  for (int i = 0; i < N; i++)
    assert_true(done[i]);
  pthread_join(s2.th, NULL);
  free_futures(fs, N);
}

static void test_wait_timeout(void **state) {
  (void)state;
  enum { N = 3 };
  cf_future *fs[N];
  new_futures(fs, N);
  cf_future_set_result(fs[1], NULL, NULL);
  bool done[N];
  double t0 = now_s();
  assert_int_equal(cf_wait(fs, N, 0.05, CF_ALL_COMPLETED, done), CF_ETIMEDOUT);
  double dt = now_s() - t0;
  assert_true(dt >= 0.05 && dt < 1.0);
  assert_false(done[0]);
  assert_true(done[1]);
  assert_false(done[2]);
  /* poll */
  assert_int_equal(cf_wait(fs, N, 0, CF_FIRST_COMPLETED, done), 0);
  assert_int_equal(cf_wait(fs, N, 0, CF_FIRST_EXCEPTION, done), CF_ETIMEDOUT);
  free_futures(fs, N);
}

/* Cancelling wakes a waiter at once (CPython gh-92001). */
static void *cancel_later(void *p) {
  usleep(20000);
  cf_future_cancel(p);
  return NULL;
}

static void test_wait_wakes_on_cancel(void **state) {
  (void)state;
  cf_future *f = cf_future_new();
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, cancel_later, f), 0);
  assert_int_equal(cf_wait(&f, 1, 10, CF_ALL_COMPLETED, NULL), 0);
  assert_true(cf_future_cancelled(f));
  pthread_join(th, NULL);
  cf_future_unref(f);
}

static void test_wait_exception_kinds(void **state) {
  (void)state;
  enum { N = 3 };
  cf_future *fs[N];
  bool done[N];

  /* CF_EBROKEN counts as an exception; the call returns at once (poll) */
  new_futures(fs, N);
  cf_future_set_exception(fs[2], CF_EBROKEN, "pool broke");
  assert_int_equal(cf_wait(fs, N, 0, CF_FIRST_EXCEPTION, done), 0);
  assert_false(done[0] || done[1]);
  assert_true(done[2]);
  free_futures(fs, N);

  /* all cancelled: no exception, but all done */
  new_futures(fs, N);
  for (int i = 0; i < N; i++)
    cf_future_cancel(fs[i]);
  assert_int_equal(cf_wait(fs, N, 0, CF_FIRST_EXCEPTION, done), 0);
  assert_true(done[0] && done[1] && done[2]);
  free_futures(fs, N);

  /* a result and a cancel with one still pending: not yet */
  new_futures(fs, N);
  cf_future_set_result(fs[0], NULL, NULL);
  cf_future_cancel(fs[1]);
  double t0 = now_s();
  assert_int_equal(cf_wait(fs, N, 0.05, CF_FIRST_EXCEPTION, done),
                   CF_ETIMEDOUT);
  double dt = now_s() - t0;
  assert_true(dt >= 0.05 && dt < 1.0);
  assert_true(done[0] && done[1]);
  assert_false(done[2]);
  free_futures(fs, N);
}

static void test_wait_single_and_forever(void **state) {
  (void)state;
  const double forevers[] = {CF_FOREVER, 1e300, INFINITY};
  for (size_t k = 0; k < sizeof forevers / sizeof forevers[0]; k++) {
    cf_future *f = cf_future_new();
    const int order[] = {0};
    script s = {.fs = &f, .order = order, .n = 1, .delay_us = 20000};
    double t0 = now_s();
    script_run(&s);
    bool done = false;
    assert_int_equal(cf_wait(&f, 1, forevers[k], CF_ALL_COMPLETED, &done), 0);
    assert_true(done);
    assert_true(now_s() - t0 >= 0.015);
    pthread_join(s.th, NULL);
    cf_future_unref(f);
  }
}

/* Several threads block in cf_wait on the same futures, each with its own
 * condition, while another thread completes them in a known order. */
typedef struct multi_waiter {
  cf_future **fs;
  int n;
  cf_return_when when;
  int rc;
  bool done[8];
  pthread_t th;
} multi_waiter;

static void *multi_waiter_main(void *p) {
  multi_waiter *w = p;
  w->rc = cf_wait(w->fs, (size_t)w->n, 10, w->when, w->done);
  return NULL;
}

static void test_wait_several_waiters(void **state) {
  (void)state;
  enum { N = 5, W = 6 };
  for (int round = 0; round < 10; round++) {
    cf_future *fs[N];
    new_futures(fs, N);
    multi_waiter ws[W];
    for (int i = 0; i < W; i++) {
      ws[i] = (multi_waiter){
          .fs = fs, .n = N, .when = (cf_return_when)(i % 3), .rc = -999};
      assert_int_equal(
          pthread_create(&ws[i].th, NULL, multi_waiter_main, &ws[i]), 0);
    }
    /* step 2 fails: FIRST_EXCEPTION waiters return then */
    const int order[] = {3, 0, 4, 1, 2};
    const bool fail[] = {false, false, true, false, false};
    script s = {.fs = fs,
                .order = order,
                .fail = fail,
                .n = N,
                .delay_us = (unsigned)(round % 3) * 1000};
    script_run(&s);
    pthread_join(s.th, NULL);
    for (int i = 0; i < W; i++) {
      pthread_join(ws[i].th, NULL);
      assert_int_equal(ws[i].rc, 0);
      int ndone = 0;
      for (int k = 0; k < N; k++)
        ndone += ws[i].done[k];
      if (ws[i].when == CF_FIRST_COMPLETED) {
        assert_true(ws[i].done[3]); /* the first to complete */
      } else if (ws[i].when == CF_FIRST_EXCEPTION) {
        assert_true(ws[i].done[4]); /* the failure */
        assert_true(ws[i].done[3] && ws[i].done[0]);
      } else {
        assert_int_equal(ndone, N);
      }
    }
    free_futures(fs, N);
  }
}

/* The caller may complete or cancel the futures concurrently from many
 * threads; ALL_COMPLETED returns once, with every flag set. */
typedef struct racer {
  cf_future **fs;
  int n, id;
} racer;

static void *racer_main(void *p) {
  racer *r = p;
  for (int i = r->id; i < r->n; i += 3) {
    if (i % 2)
      cf_future_cancel(r->fs[i]);
    else
      cf_future_set_exception(r->fs[i], 77, NULL);
  }
  return NULL;
}

static void test_wait_all_racing(void **state) {
  (void)state;
  enum { N = 64 };
  for (int round = 0; round < 50; round++) {
    cf_future *fs[N];
    new_futures(fs, N);
    pthread_t th[3];
    racer r[3];
    for (int t = 0; t < 3; t++) {
      r[t] = (racer){fs, N, t};
      assert_int_equal(pthread_create(&th[t], NULL, racer_main, &r[t]), 0);
    }
    bool done[N];
    assert_int_equal(cf_wait(fs, N, 10, CF_ALL_COMPLETED, done), 0);
    for (int i = 0; i < N; i++)
      assert_true(done[i]);
    for (int t = 0; t < 3; t++)
      pthread_join(th[t], NULL);
    free_futures(fs, N);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_wait_bad_args),
      cmocka_unit_test(test_wait_empty_and_duplicates),
      cmocka_unit_test(test_wait_first_completed),
      cmocka_unit_test(test_wait_all_completed),
      cmocka_unit_test(test_wait_first_exception),
      cmocka_unit_test(test_wait_exception_kinds),
      cmocka_unit_test(test_wait_timeout),
      cmocka_unit_test(test_wait_single_and_forever),
      cmocka_unit_test(test_wait_wakes_on_cancel),
      cmocka_unit_test(test_wait_several_waiters),
      cmocka_unit_test(test_wait_all_racing),
  };
  return cmocka_run_group_tests_name("wait", tests, NULL, NULL);
}
