/* The green pool: bounded concurrency, imap in input order, waitall and its
 * timeout, shutdown with cancel, submits from another thread, misuse. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cfutures.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static _Atomic int inside, most;

/* Sleeps `arg` ms while counting how many tasks are inside at once. */
static int busy_ms(void *arg, void **out) {
  int now = atomic_fetch_add(&inside, 1) + 1;
  int m = atomic_load(&most);
  while (now > m && !atomic_compare_exchange_weak(&most, &m, now)) {
  }
  int rc = cf_green_sleep((double)(intptr_t)arg / 1000.0);
  atomic_fetch_sub(&inside, 1);
  *out = arg;
  return rc;
}

static void test_bounded(void **state) {
  (void)state;
  cf_loop *l;
  cf_executor *gp;
  assert_int_equal(cf_loop_new(NULL, &l), 0);
  assert_int_equal(cf_green_pool_new(l, 3, &gp), 0);
  atomic_store(&inside, 0);
  atomic_store(&most, 0);
  cf_future *fs[20];
  double t0 = now_s();
  for (int i = 0; i < 20; i++)
    assert_int_equal(cf_submit(gp, busy_ms, (void *)20, &fs[i]), 0);
  assert_int_equal(cf_green_pool_waitall(gp, 10), 0);
  double took = now_s() - t0;
  assert_int_equal(atomic_load(&most), 3);
  assert_true(took >= 0.14); /* 7 rounds of 20 ms */
  for (int i = 0; i < 20; i++) {
    assert_int_equal(cf_future_result(fs[i], 0, NULL), 0);
    cf_future_unref(fs[i]);
  }
  assert_int_equal(cf_green_pool_running(gp), 0);
  cf_executor_free(gp);
  assert_int_equal(cf_loop_tasks(l), 0);
  assert_int_equal(cf_loop_free(l), 0);
}

/* imap: results in input order though tasks finish in another. */
static int square_after(void *arg, void **out) {
  int x = *(int *)arg;
  int rc = cf_green_sleep((double)((x * 7) % 5) / 1000.0);
  *out = (void *)(intptr_t)(x * x);
  return rc;
}

static void test_imap_in_order(void **state) {
  (void)state;
  cf_loop *l;
  cf_executor *gp;
  assert_int_equal(cf_loop_new(NULL, &l), 0);
  assert_int_equal(cf_green_pool_new(l, 4, &gp), 0);
  int xs[50];
  for (int i = 0; i < 50; i++)
    xs[i] = i;
  cf_map *m;
  assert_int_equal(
      cf_map_array(gp, square_after, xs, 50, sizeof xs[0], NULL, &m), 0);
  /* The map is consumed here, on the owner thread: each cf_map_next waits
   * for an item; the loop must run meanwhile, so run it until the pool is
   * idle first, then read the results in order. */
  assert_int_equal(cf_green_pool_waitall(gp, 10), 0);
  void *v;
  int i = 0, rc;
  while ((rc = cf_map_next(m, &v)) == 0) {
    assert_int_equal((intptr_t)v, i * i);
    i++;
  }
  assert_int_equal(rc, CF_EDONE);
  assert_int_equal(i, 50);
  cf_map_free(m);
  cf_executor_free(gp);
  assert_int_equal(cf_loop_free(l), 0);
}

/* A green task consumes a map over the pool: its cf_map_next waits
 * suspend it while the pool's tasks run (the usual way to imap). */
static cf_executor *shared_gp;
static int consume(void *arg, void **out) {
  (void)arg;
  int xs[30];
  for (int i = 0; i < 30; i++)
    xs[i] = i;
  cf_map *m;
  cf_map_opts o = {.window = 5};
  int rc = cf_map_array(shared_gp, square_after, xs, 30, sizeof xs[0], &o, &m);
  if (rc != 0)
    return rc;
  void *v;
  intptr_t sum = 0;
  int i = 0;
  while ((rc = cf_map_next(m, &v)) == 0) {
    if ((intptr_t)v != i * i)
      return cf_fail(CF_EINVAL, "item %d gave %ld", i, (long)(intptr_t)v);
    sum += (intptr_t)v;
    i++;
  }
  cf_map_free(m);
  *out = (void *)sum;
  return rc == CF_EDONE ? 0 : rc;
}

static void test_imap_from_green_task(void **state) {
  (void)state;
  cf_loop *l;
  assert_int_equal(cf_loop_new(NULL, &l), 0);
  assert_int_equal(cf_green_pool_new(l, 3, &shared_gp), 0);
  cf_future *f;
  assert_int_equal(cf_loop_spawn(l, consume, NULL, &f), 0);
  assert_int_equal(cf_loop_run_until_complete(l, f, 10), 0);
  void *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_int_equal((intptr_t)v, 8555); /* sum of squares 0..29 */
  cf_future_unref(f);
  cf_executor_free(shared_gp);
  assert_int_equal(cf_loop_free(l), 0);
}

static void test_waitall_timeout_and_cancel(void **state) {
  (void)state;
  cf_loop *l;
  cf_executor *gp;
  assert_int_equal(cf_loop_new(NULL, &l), 0);
  assert_int_equal(cf_green_pool_new(l, 1, &gp), 0);
  cf_future *fs[5];
  for (int i = 0; i < 5; i++)
    assert_int_equal(cf_submit(gp, busy_ms, (void *)50, &fs[i]), 0);
  double t0 = now_s();
  assert_int_equal(cf_green_pool_waitall(gp, 0.06), CF_ETIMEDOUT);
  assert_true(now_s() - t0 >= 0.06);
  /* Shut down, cancelling what has not started (the loop ran for about
   * 60 ms, one 50 ms task at a time: the last ones never started). */
  assert_int_equal(cf_executor_shutdown(gp, true, true), 0);
  int cancelled = 0;
  for (int i = 0; i < 5; i++) {
    assert_true(cf_future_done(fs[i]));
    if (cf_future_cancelled(fs[i]))
      cancelled++;
    else
      assert_int_equal(cf_future_result(fs[i], 0, NULL), 0);
    cf_future_unref(fs[i]);
  }
  assert_true(cancelled >= 1 && cancelled <= 4);
  cf_future *late;
  assert_int_equal(cf_submit(gp, busy_ms, (void *)1, &late), CF_ESHUTDOWN);
  cf_executor_free(gp);
  assert_int_equal(cf_loop_free(l), 0);
}

/* Another thread submits while the owner runs the loop. */
static cf_executor *tgp;
static cf_future *submitted_all;
static void *submitter(void *arg) {
  (void)arg;
  for (int i = 0; i < 200; i++) {
    cf_future *f;
    if (cf_submit(tgp, busy_ms, (void *)0, &f) == 0)
      cf_future_unref(f);
  }
  cf_future_set_result(submitted_all, NULL, NULL);
  return NULL;
}

static int wait_self(void *arg, void **out) {
  (void)arg;
  *out = (void *)(intptr_t)cf_green_pool_waitall(tgp, 1);
  return 0;
}

static void test_other_thread_and_misuse(void **state) {
  (void)state;
  cf_loop *l;
  assert_int_equal(cf_loop_new(NULL, &l), 0);
  assert_int_equal(cf_green_pool_new(l, 8, &tgp), 0);
  atomic_store(&most, 0);
  submitted_all = cf_future_new();
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, submitter, NULL), 0);
  assert_int_equal(cf_loop_run_until_complete(l, submitted_all, 20), 0);
  pthread_join(th, NULL);
  assert_int_equal(cf_green_pool_waitall(tgp, 10), 0);
  assert_true(atomic_load(&most) <= 8);
  cf_future_unref(submitted_all);
  /* A pool task waiting for its own pool: refused. */
  cf_future *f;
  assert_int_equal(cf_submit(tgp, wait_self, NULL, &f), 0);
  assert_int_equal(cf_green_pool_waitall(tgp, 10), 0);
  void *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_int_equal((intptr_t)v, CF_EDEADLK);
  cf_future_unref(f);
  cf_executor *bad = (cf_executor *)1;
  assert_int_equal(cf_green_pool_new(l, 0, &bad), CF_EINVAL);
  assert_null(bad);
  assert_int_equal(cf_green_pool_new(NULL, 1, &bad), CF_EINVAL);
  assert_int_equal(cf_green_pool_waitall(NULL, 1), CF_EINVAL);
  assert_int_equal(cf_green_pool_running(NULL), 0);
  cf_executor_free(tgp);
  assert_int_equal(cf_loop_free(l), 0);
}

/* A pool freed by another thread while its loop runs on the owner's: the
 * free returns once the last task is done, and must not race with the
 * last green worker still letting go of the pool (seen by TSan in the
 * crawler's --green mode: the worker unlocked the pool's mutex after the
 * freeing thread had destroyed it). Many rounds, tasks that end at once. */
typedef struct owner {
  cf_loop *loop;
  cf_future *stop;
  _Atomic int ready;
} owner;

static void *own_loop(void *arg) {
  owner *o = arg;
  assert_int_equal(cf_loop_new(NULL, &o->loop), 0);
  atomic_store(&o->ready, 1);
  cf_loop_run_until_complete(o->loop, o->stop, 60);
  assert_int_equal(cf_loop_free(o->loop), 0);
  return NULL;
}

static int nothing(void *arg, void **out) {
  *out = arg;
  return 0;
}

static void test_free_while_loop_runs_elsewhere(void **state) {
  (void)state;
  owner o = {.stop = cf_future_new()};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, own_loop, &o), 0);
  while (!atomic_load(&o.ready))
    usleep(100);
  for (int round = 0; round < 200; round++) {
    cf_executor *ex;
    assert_int_equal(cf_green_pool_new(o.loop, 4, &ex), 0);
    cf_future *fs[8];
    for (intptr_t i = 0; i < 8; i++)
      assert_int_equal(cf_submit(ex, nothing, (void *)i, &fs[i]), 0);
    cf_executor_free(ex); /* waits for the 8 tasks, run by the owner */
    for (intptr_t i = 0; i < 8; i++) {
      void *v;
      assert_int_equal(cf_future_result(fs[i], 0, &v), 0);
      assert_int_equal((intptr_t)v, i);
      cf_future_unref(fs[i]);
    }
  }
  cf_future_set_result(o.stop, NULL, NULL);
  assert_int_equal(pthread_join(th, NULL), 0);
  cf_future_unref(o.stop);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bounded),
      cmocka_unit_test(test_imap_in_order),
      cmocka_unit_test(test_imap_from_green_task),
      cmocka_unit_test(test_waitall_timeout_and_cancel),
      cmocka_unit_test(test_other_thread_and_misuse),
      cmocka_unit_test(test_free_while_loop_runs_elsewhere),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
