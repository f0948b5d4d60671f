/* Tests for futures/wait.c: cf_wait and cf_as_completed. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cfutures.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Completes futures from another thread on a script: step i completes
 * fs[order[i]] after delay_us, with an exception when fail[i]. */
typedef struct script {
  cf_future **fs;
  const int *order;
  const bool *fail;
  int n;
  unsigned delay_us;
  pthread_t th;
} script;

static void *script_main(void *p) {
  script *s = p;
  for (int i = 0; i < s->n; i++) {
    usleep(s->delay_us);
    cf_future *f = s->fs[s->order[i]];
    if (s->fail && s->fail[i])
      cf_future_set_exception(f, CF_EINVAL, "step %d failed", i);
    else
      cf_future_set_result(f, (void *)(intptr_t)s->order[i], NULL);
  }
  return NULL;
}

static void script_run(script *s) {
  assert_int_equal(pthread_create(&s->th, NULL, script_main, s), 0);
}

static void new_futures(cf_future **fs, int n) {
  for (int i = 0; i < n; i++) {
    fs[i] = cf_future_new();
    assert_non_null(fs[i]);
  }
}

static void free_futures(cf_future **fs, int n) {
  for (int i = 0; i < n; i++)
    cf_future_unref(fs[i]);
}

/* ---- cf_wait ------------------------------------------------------------- */

static void test_wait_bad_args(void **state) {
  (void)state;
  cf_future *fs[3];
  new_futures(fs, 2);
  bool done[3];
  assert_int_equal(cf_wait(NULL, 1, 0, CF_ALL_COMPLETED, done), CF_EINVAL);
  assert_int_equal(cf_wait(fs, 0, 0, CF_ALL_COMPLETED, done), CF_EINVAL);
  assert_int_equal(cf_wait(fs, 2, NAN, CF_ALL_COMPLETED, done), CF_EINVAL);
  assert_int_equal(cf_wait(fs, 2, 0, (cf_return_when)7, done), CF_EINVAL);
  fs[2] = fs[0]; /* duplicate */
  assert_int_equal(cf_wait(fs, 3, 0, CF_ALL_COMPLETED, done), CF_EINVAL);
  fs[2] = NULL;
  assert_int_equal(cf_wait(fs, 3, 0, CF_ALL_COMPLETED, done), CF_EINVAL);
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

/* ---- as_completed -------------------------------------------------------- */

static int index_of(cf_future **fs, int n, cf_future *f) {
  for (int i = 0; i < n; i++)
    if (fs[i] == f)
      return i;
  return -1;
}

static void test_as_completed_order(void **state) {
  (void)state;
  enum { N = 6 };
  cf_future *fs[N];
  new_futures(fs, N);
  cf_future_set_result(fs[4], NULL, NULL); /* already done: yielded first */
  const int order[] = {2, 0, 5, 1, 3};
  script s = {.fs = fs, .order = order, .n = 5, .delay_us = 5000};
  script_run(&s);
  cf_as_completed *it = NULL;
  assert_int_equal(cf_as_completed_new(fs, N, 10, &it), 0);
  int expect[] = {4, 2, 0, 5, 1, 3};
  for (int i = 0; i < N; i++) {
    cf_future *f = NULL;
    assert_int_equal(cf_as_completed_next(it, &f), 0);
    assert_int_equal(index_of(fs, N, f), expect[i]);
  }
  cf_future *f = NULL;
  assert_int_equal(cf_as_completed_next(it, &f), CF_EDONE);
  assert_null(f);
  assert_int_equal(cf_as_completed_next(it, &f), CF_EDONE);
  cf_as_completed_free(it);
  pthread_join(s.th, NULL);
  free_futures(fs, N);
}

static void test_as_completed_timeout(void **state) {
  (void)state;
  enum { N = 3 };
  cf_future *fs[N];
  new_futures(fs, N);
  cf_future_set_result(fs[0], NULL, NULL);
  cf_as_completed *it = NULL;
  double t0 = now_s();
  assert_int_equal(cf_as_completed_new(fs, N, 0.05, &it), 0);
  cf_future *f;
  assert_int_equal(cf_as_completed_next(it, &f), 0);
  assert_ptr_equal(f, fs[0]);
  usleep(20000); /* the deadline counts from creation */
  assert_int_equal(cf_as_completed_next(it, &f), CF_ETIMEDOUT);
  double dt = now_s() - t0;
  assert_true(dt >= 0.05 && dt < 1.0);
  /* sticky, even once more futures complete */
  cf_future_set_result(fs[1], NULL, NULL);
  assert_int_equal(cf_as_completed_next(it, &f), CF_ETIMEDOUT);
  cf_as_completed_free(it);
  free_futures(fs, N);
}

static void test_as_completed_bad_args(void **state) {
  (void)state;
  cf_future *fs[2];
  new_futures(fs, 1);
  fs[1] = fs[0];
  cf_as_completed *it = (cf_as_completed *)1;
  assert_int_equal(cf_as_completed_new(fs, 2, 1, &it), CF_EINVAL);
  assert_null(it);
  assert_int_equal(cf_as_completed_new(fs, 0, 1, &it), CF_EINVAL);
  assert_int_equal(cf_as_completed_new(NULL, 1, 1, &it), CF_EINVAL);
  assert_int_equal(cf_as_completed_new(fs, 1, NAN, &it), CF_EINVAL);
  assert_int_equal(cf_as_completed_new(fs, 1, 1, NULL), CF_EINVAL);
  assert_int_equal(cf_as_completed_next(NULL, NULL), CF_EINVAL);
  cf_as_completed_free(NULL);
  free_futures(fs, 1);
}

/* Freeing early with futures pending, then completing them: the iterator's
 * listeners are gone and its references dropped (ASan checks the rest). */
static void test_as_completed_free_early(void **state) {
  (void)state;
  enum { N = 4 };
  cf_future *fs[N];
  new_futures(fs, N);
  cf_as_completed *it = NULL;
  assert_int_equal(cf_as_completed_new(fs, N, CF_FOREVER, &it), 0);
  cf_future_set_result(fs[1], NULL, NULL);
  cf_future *f;
  assert_int_equal(cf_as_completed_next(it, &f), 0);
  assert_ptr_equal(f, fs[1]);
  cf_as_completed_free(it);
  for (int i = 0; i < N; i++)
    if (i != 1)
      cf_future_set_result(fs[i], NULL, NULL);
  free_futures(fs, N);
}

/* The iterator keeps its futures alive after the caller drops them. */
static void test_as_completed_holds_refs(void **state) {
  (void)state;
  cf_future *fs[2];
  new_futures(fs, 2);
  cf_as_completed *it = NULL;
  assert_int_equal(cf_as_completed_new(fs, 2, 5, &it), 0);
  cf_future *keep = fs[1];
  cf_future_set_result(fs[0], NULL, NULL);
  cf_future_unref(fs[0]);
  cf_future *f;
  assert_int_equal(cf_as_completed_next(it, &f), 0);
  assert_true(cf_future_done(f)); /* still valid */
  cf_future_cancel(keep);
  assert_int_equal(cf_as_completed_next(it, &f), 0);
  assert_ptr_equal(f, keep);
  cf_as_completed_free(it);
  cf_future_unref(keep);
}

/* Many completer threads race one as_completed consumer: each future is
 * yielded exactly once. */
typedef struct bulk {
  cf_future **fs;
  int from, to;
} bulk;

static void *bulk_main(void *p) {
  bulk *b = p;
  for (int i = b->from; i < b->to; i++) {
    if (i % 7 == 0)
      cf_future_cancel(b->fs[i]);
    else
      cf_future_set_result(b->fs[i], NULL, NULL);
  }
  return NULL;
}

static void test_as_completed_many(void **state) {
  (void)state;
  enum { N = 4000, T = 4 };
  cf_future **fs = malloc(N * sizeof *fs);
  assert_non_null(fs);
  new_futures(fs, N);
  cf_as_completed *it = NULL;
  assert_int_equal(cf_as_completed_new(fs, N, 30, &it), 0);
  pthread_t th[T];
  bulk b[T];
  for (int t = 0; t < T; t++) {
    b[t] = (bulk){fs, t * N / T, (t + 1) * N / T};
    assert_int_equal(pthread_create(&th[t], NULL, bulk_main, &b[t]), 0);
  }
  char *seen = calloc(N, 1);
  assert_non_null(seen);
  int count = 0;
  cf_future *f;
  int rc;
  while ((rc = cf_as_completed_next(it, &f)) == 0) {
    /* futures are yielded once each: mark them via their index */
    int lo = 0;
    for (; lo < N && fs[lo] != f; lo++)
      ;
    assert_true(lo < N);
    assert_int_equal(seen[lo], 0);
    seen[lo] = 1;
    count++;
  }
  assert_int_equal(rc, CF_EDONE);
  assert_int_equal(count, N);
  for (int t = 0; t < T; t++)
    pthread_join(th[t], NULL);
  cf_as_completed_free(it);
  free_futures(fs, N);
  free(fs);
  free(seen);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_wait_bad_args),
      cmocka_unit_test(test_wait_first_completed),
      cmocka_unit_test(test_wait_all_completed),
      cmocka_unit_test(test_wait_first_exception),
      cmocka_unit_test(test_wait_timeout),
      cmocka_unit_test(test_wait_wakes_on_cancel),
      cmocka_unit_test(test_as_completed_order),
      cmocka_unit_test(test_as_completed_timeout),
      cmocka_unit_test(test_as_completed_bad_args),
      cmocka_unit_test(test_as_completed_free_early),
      cmocka_unit_test(test_as_completed_holds_refs),
      cmocka_unit_test(test_as_completed_many),
  };
  return cmocka_run_group_tests_name("wait", tests, NULL, NULL);
}
