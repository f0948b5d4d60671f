/* Tests for futures/wait.c: cf_as_completed. */
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
  cf_as_completed *it = (cf_as_completed *)1;
  assert_int_equal(cf_as_completed_new(NULL, 1, 1, &it), CF_EINVAL);
  assert_null(it);
  assert_int_equal(cf_as_completed_new(fs, 1, NAN, &it), CF_EINVAL);
  assert_int_equal(cf_as_completed_new(fs, 1, 1, NULL), CF_EINVAL);
  assert_int_equal(cf_as_completed_next(NULL, NULL), CF_EINVAL);
  fs[1] = NULL; /* a NULL entry */
  assert_int_equal(cf_as_completed_new(fs, 2, 1, &it), CF_EINVAL);
  assert_null(it);
  assert_int_equal(cf_as_completed_new(fs, 1, 1, &it), 0);
  cf_future *f = (cf_future *)1;
  assert_int_equal(cf_as_completed_next(NULL, &f), CF_EINVAL);
  assert_int_equal(cf_as_completed_next(it, NULL), CF_EINVAL);
  cf_as_completed_free(it);
  cf_as_completed_free(NULL);
  free_futures(fs, 1);
}

/* As in Python: an empty list ends at once; each distinct future is
 * yielded once, however often it is listed. */
static void test_as_completed_empty_and_duplicates(void **state) {
  (void)state;
  cf_as_completed *it = NULL;
  cf_future *f = (cf_future *)1;
  assert_int_equal(cf_as_completed_new(NULL, 0, CF_FOREVER, &it), 0);
  assert_int_equal(cf_as_completed_next(it, &f), CF_EDONE);
  assert_null(f);
  assert_int_equal(cf_as_completed_unfinished(it), 0);
  cf_as_completed_free(it);

  cf_future *fs[5];
  new_futures(fs, 2);
  fs[2] = fs[1];
  fs[3] = fs[0];
  fs[4] = fs[1];
  assert_int_equal(cf_as_completed_new(fs, 5, 10, &it), 0);
  assert_int_equal(cf_as_completed_unfinished(it), 2);
  const int order[] = {1, 0};
  script s = {.fs = fs, .order = order, .n = 2, .delay_us = 10000};
  script_run(&s);
  cf_future *got[2];
  for (int i = 0; i < 2; i++)
    assert_int_equal(cf_as_completed_next(it, &got[i]), 0);
  assert_int_equal(cf_as_completed_next(it, &f), CF_EDONE);
  assert_ptr_equal(got[0], fs[1]);
  assert_ptr_equal(got[1], fs[0]);
  pthread_join(s.th, NULL);
  cf_as_completed_free(it);
  free_futures(fs, 2);
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

/* The deadline counts from cf_as_completed_new, not from each next call:
 * created with 0.3 s, next is called at 0.2 s and a future completes at
 * 0.35 s. Counting from creation gives CF_ETIMEDOUT; counting from the call
 * would yield that future. No timing bound is asserted on a slow machine:
 * the completer cannot run before 0.35 s after creation. */
static void test_as_completed_deadline_from_creation(void **state) {
  (void)state;
  cf_future *fs[2];
  new_futures(fs, 2);
  cf_as_completed *it = NULL;
  double t0 = now_s();
  assert_int_equal(cf_as_completed_new(fs, 2, 0.3, &it), 0);
  const int order[] = {1};
  script s = {.fs = fs, .order = order, .n = 1, .delay_us = 350000};
  script_run(&s);
  usleep(200000);
  cf_future *f = NULL;
  assert_int_equal(cf_as_completed_next(it, &f), CF_ETIMEDOUT);
  assert_null(f);
  double dt = now_s() - t0;
  assert_true(dt >= 0.3 && dt < 1.0);
  pthread_join(s.th, NULL);
  cf_as_completed_free(it);
  free_futures(fs, 2);
}

/* A zero timeout polls: the done ones come out, then CF_ETIMEDOUT. */
static void test_as_completed_poll(void **state) {
  (void)state;
  enum { N = 4 };
  cf_future *fs[N];
  new_futures(fs, N);
  cf_future_set_result(fs[3], NULL, NULL);
  cf_future_set_exception(fs[1], CF_EINVAL, "no");
  cf_as_completed *it = NULL;
  assert_int_equal(cf_as_completed_new(fs, N, 0, &it), 0);
  cf_future *f = NULL;
  /* the already done ones, in some order */
  cf_future *a = NULL, *b = NULL;
  assert_int_equal(cf_as_completed_next(it, &a), 0);
  assert_int_equal(cf_as_completed_next(it, &b), 0);
  assert_true((a == fs[1] && b == fs[3]) || (a == fs[3] && b == fs[1]));
  assert_int_equal(cf_as_completed_next(it, &f), CF_ETIMEDOUT);
  assert_null(f);
  cf_as_completed_free(it);

  /* all done: everything, then CF_EDONE, never a timeout */
  cf_future_cancel(fs[0]);
  cf_future_set_result(fs[2], NULL, NULL);
  assert_int_equal(cf_as_completed_new(fs, N, 0, &it), 0);
  unsigned seen = 0;
  for (int i = 0; i < N; i++) {
    assert_int_equal(cf_as_completed_next(it, &f), 0);
    for (int k = 0; k < N; k++)
      if (f == fs[k])
        seen |= 1u << k;
  }
  assert_int_equal(seen, (1u << N) - 1);
  assert_int_equal(cf_as_completed_next(it, &f), CF_EDONE);
  cf_as_completed_free(it);
  free_futures(fs, N);
}

/* Failed and cancelled futures are yielded like the others, and a forever
 * timeout waits for all of them. */
static void test_as_completed_outcomes_forever(void **state) {
  (void)state;
  enum { N = 3 };
  cf_future *fs[N];
  new_futures(fs, N);
  cf_as_completed *it = NULL;
  assert_int_equal(cf_as_completed_new(fs, N, CF_FOREVER, &it), 0);
  const int order[] = {2, 1};
  const bool fail[] = {true, false};
  script s = {
      .fs = fs, .order = order, .fail = fail, .n = 2, .delay_us = 10000};
  script_run(&s);
  cf_future *f = NULL;
  assert_int_equal(cf_as_completed_next(it, &f), 0);
  assert_ptr_equal(f, fs[2]);
  assert_int_equal(cf_future_result(f, 0, NULL), CF_EFAILED);
  assert_int_equal(cf_as_completed_next(it, &f), 0);
  assert_ptr_equal(f, fs[1]);
  pthread_join(s.th, NULL);
  cf_future_cancel(fs[0]);
  assert_int_equal(cf_as_completed_next(it, &f), 0);
  assert_ptr_equal(f, fs[0]);
  assert_int_equal(cf_future_result(f, 0, NULL), CF_ECANCELLED);
  assert_int_equal(cf_as_completed_next(it, &f), CF_EDONE);
  cf_as_completed_free(it);
  free_futures(fs, N);
}

/* Several threads, each with its own iterator over the same futures,
 * completed in a known order by another: all see that order. One iterator
 * is created on this thread and consumed on another. */
enum { SEV_N = 6, SEV_T = 4 };
typedef struct consumer {
  cf_as_completed *it;
  int got[SEV_N];
  int n;
  int end_rc;
  cf_future **fs;
  pthread_t th;
} consumer;

static void *consumer_main(void *p) {
  consumer *c = p;
  cf_future *f;
  int rc;
  while ((rc = cf_as_completed_next(c->it, &f)) == 0 && c->n < SEV_N) {
    int idx = -1;
    for (int i = 0; i < SEV_N; i++)
      if (c->fs[i] == f)
        idx = i;
    c->got[c->n++] = idx;
  }
  c->end_rc = rc;
  return NULL;
}

static void test_as_completed_several_threads(void **state) {
  (void)state;
  for (int round = 0; round < 10; round++) {
    cf_future *fs[SEV_N];
    new_futures(fs, SEV_N);
    consumer cs[SEV_T];
    for (int t = 0; t < SEV_T; t++) {
      cs[t] = (consumer){.fs = fs, .end_rc = -999};
      assert_int_equal(cf_as_completed_new(fs, SEV_N, 10, &cs[t].it), 0);
      assert_int_equal(pthread_create(&cs[t].th, NULL, consumer_main, &cs[t]),
                       0);
    }
    const int order[] = {4, 1, 5, 0, 3, 2};
    script s = {.fs = fs,
                .order = order,
                .n = SEV_N,
                .delay_us = 3000 + (unsigned)(round % 2) * 2000};
    script_run(&s);
    pthread_join(s.th, NULL);
    for (int t = 0; t < SEV_T; t++) {
      pthread_join(cs[t].th, NULL);
      assert_int_equal(cs[t].end_rc, CF_EDONE);
      assert_int_equal(cs[t].n, SEV_N);
      for (int i = 0; i < SEV_N; i++)
        assert_int_equal(cs[t].got[i], order[i]);
      cf_as_completed_free(cs[t].it);
    }
    free_futures(fs, SEV_N);
  }
}

/* Freed while another thread completes the futures: no crash, no leak
 * (ASan/TSan builds check), every future still completes. */
typedef struct finisher {
  cf_future **fs;
  int n;
} finisher;

static void *finisher_main(void *p) {
  finisher *fin = p;
  for (int i = 0; i < fin->n; i++)
    cf_future_set_result(fin->fs[i], NULL, NULL);
  return NULL;
}

static void test_as_completed_free_racing(void **state) {
  (void)state;
  enum { N = 32 };
  for (int round = 0; round < 200; round++) {
    cf_future *fs[N];
    new_futures(fs, N);
    cf_as_completed *it = NULL;
    assert_int_equal(cf_as_completed_new(fs, N, CF_FOREVER, &it), 0);
    finisher fin = {fs, N};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, finisher_main, &fin), 0);
    cf_future *f;
    for (int k = 0; k < round % 4; k++)
      assert_int_equal(cf_as_completed_next(it, &f), 0);
    cf_as_completed_free(it);
    pthread_join(th, NULL);
    for (int i = 0; i < N; i++)
      assert_true(cf_future_done(fs[i]));
    free_futures(fs, N);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_as_completed_order),
      cmocka_unit_test(test_as_completed_timeout),
      cmocka_unit_test(test_as_completed_deadline_from_creation),
      cmocka_unit_test(test_as_completed_poll),
      cmocka_unit_test(test_as_completed_outcomes_forever),
      cmocka_unit_test(test_as_completed_bad_args),
      cmocka_unit_test(test_as_completed_empty_and_duplicates),
      cmocka_unit_test(test_as_completed_free_early),
      cmocka_unit_test(test_as_completed_holds_refs),
      cmocka_unit_test(test_as_completed_several_threads),
      cmocka_unit_test(test_as_completed_free_racing),
      cmocka_unit_test(test_as_completed_many),
  };
  return cmocka_run_group_tests_name("as_completed", tests, NULL, NULL);
}
