/* cf_last_error: every failing call leaves a message naming the call and
 * what was wrong, per thread; a failing done-callback is reported with its
 * future. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <cfutures.h>

/* Fails unless the thread's last error contains every given piece. */
static void expect_error(const char *piece1, const char *piece2,
                         const char *piece3) {
  const char *m = cf_last_error();
  assert_non_null(m);
  const char *pieces[] = {piece1, piece2, piece3};
  for (int i = 0; i < 3; i++)
    if (pieces[i] && !strstr(m, pieces[i]))
      fail_msg("last error \"%s\" lacks \"%s\"", m, pieces[i]);
}

static int fails(void *arg, void **out) {
  (void)out;
  return cf_fail(CF_EINVAL, "bad n=%d", (int)(intptr_t)arg);
}

static void test_argument_errors(void **state) {
  (void)state;
  cf_lock *priv = NULL;
  cf_cond *c = NULL;
  assert_int_equal(cf_lock_new(false, &priv), 0);
  assert_int_equal(cf_cond_new(true, priv, &c), CF_EINVAL);
  expect_error("cf_cond_new", "process-shared", "CF_EINVAL");
  assert_int_equal(cf_lock_release(priv), CF_EPERM);
  expect_error("cf_lock_release", "does not hold the lock", "CF_EPERM");
  cf_lock_free(priv);

  cf_executor *ex = (cf_executor *)1;
  cf_thread_pool_opts o = {.max_workers = 5000};
  assert_int_equal(cf_thread_pool_new(&o, &ex), CF_EINVAL);
  expect_error("cf_thread_pool_new", "max_workers 5000", NULL);
  cf_process_pool_opts po = {.max_workers = 300};
  assert_int_equal(cf_process_pool_new(&po, &ex), CF_EINVAL);
  expect_error("cf_process_pool_new", "max_workers 300", NULL);
  po = (cf_process_pool_opts){.task_timeout_s = -1};
  assert_int_equal(cf_process_pool_new(&po, &ex), CF_EINVAL);
  expect_error("cf_process_pool_new", "task_timeout_s", NULL);
  assert_int_equal(cf_submit(NULL, fails, NULL, &(cf_future *){NULL}),
                   CF_EINVAL);
  expect_error("cf_submit", "NULL executor", NULL);
  assert_int_equal(cf_future_result(NULL, 1, NULL), CF_EINVAL);
  expect_error("cf_future_result", "NULL future", NULL);
  cf_future *f = cf_future_new();
  assert_int_equal(cf_future_result(f, 0.0 / 0.0, NULL), CF_EINVAL);
  expect_error("cf_future_result", "NaN", NULL);
  cf_future *holed[2] = {f, NULL};
  assert_int_equal(cf_wait(holed, 2, 0, CF_ALL_COMPLETED, NULL), CF_EINVAL);
  expect_error("cf_wait", "future 1 of 2 is NULL", NULL);
  cf_future_unref(f);
  int items[2] = {1, 2};
  cf_map *m = NULL;
  cf_map_opts mo = {.window = CF_MAP_MAX_WINDOW + 1};
  ex = NULL;
  assert_int_equal(cf_thread_pool_new(NULL, &ex), 0);
  assert_int_equal(cf_map_array(ex, fails, items, 2, sizeof *items, &mo, &m),
                   CF_EINVAL);
  expect_error("cf_map_array", "window", "CF_MAP_MAX_WINDOW");
  cf_executor_free(ex);
  assert_int_equal(cf_sem_release(NULL, 1), CF_EINVAL);
  expect_error("cf_sem_release", "NULL semaphore", NULL);
}

static void test_state_and_outcome_errors(void **state) {
  (void)state;
  cf_future *f = cf_future_new();
  assert_int_equal(cf_future_set_result(f, NULL, NULL), 0);
  assert_int_equal(cf_future_set_result(f, NULL, NULL), CF_EINVALSTATE);
  expect_error("cf_future_set_result", "already finished", "CF_EINVALSTATE");
  cf_future_unref(f);

  cf_executor *ex = NULL;
  assert_int_equal(cf_thread_pool_new(NULL, &ex), 0);
  cf_future *t = NULL;
  assert_int_equal(cf_submit(ex, fails, (void *)3, &t), 0);
  assert_int_equal(cf_future_result(t, 10, NULL), CF_EFAILED);
  expect_error("cf_future_result", "CF_EINVAL: bad n=3", "CF_EFAILED");
  assert_int_equal(cf_future_set_result(t, NULL, NULL), CF_EPERM);
  expect_error("cf_future_set_result", "belongs to an executor", NULL);
  cf_executor_shutdown(ex, true, false);
  cf_future *late = NULL;
  assert_int_equal(cf_submit(ex, fails, NULL, &late), CF_ESHUTDOWN);
  expect_error("cf_submit", "shut down", "CF_ESHUTDOWN");
  cf_executor_free(ex);
  cf_future_unref(t);

  /* Timeouts say how many futures were left. */
  cf_future *fs[2] = {cf_future_new(), cf_future_new()};
  cf_future_set_result(fs[0], NULL, NULL);
  assert_int_equal(cf_wait(fs, 2, 0.01, CF_ALL_COMPLETED, NULL),
                   CF_ETIMEDOUT);
  expect_error("cf_wait", "1 (of 2) futures unfinished", "CF_ETIMEDOUT");
  cf_as_completed *it = NULL;
  assert_int_equal(cf_as_completed_new(fs, 2, 0.01, &it), 0);
  cf_future *got = NULL;
  assert_int_equal(cf_as_completed_next(it, &got), 0);
  assert_int_equal(cf_as_completed_next(it, &got), CF_ETIMEDOUT);
  expect_error("cf_as_completed_next", "1 (of 2) futures unfinished", NULL);
  assert_int_equal(cf_as_completed_unfinished(it), 1);
  cf_as_completed_free(it);
  assert_int_equal(cf_as_completed_unfinished(NULL), 0);
  cf_future_unref(fs[0]);
  cf_future_unref(fs[1]);
}

static void *other_thread(void *arg) {
  (void)arg;
  /* A new thread has no error yet, whatever its creator did. */
  return (void *)(intptr_t)(cf_last_error()[0] == '\0');
}

static void test_per_thread_and_sticky(void **state) {
  (void)state;
  assert_int_equal(cf_event_wait(NULL, 0), CF_EINVAL);
  expect_error("cf_event_wait", "NULL event", NULL);
  /* Successful calls leave it as it was. */
  cf_event *e = NULL;
  assert_int_equal(cf_event_new(false, &e), 0);
  assert_int_equal(cf_event_set(e), 0);
  expect_error("cf_event_wait", "NULL event", NULL);
  cf_event_free(e);
  pthread_t th;
  void *fresh = NULL;
  assert_int_equal(pthread_create(&th, NULL, other_thread, NULL), 0);
  pthread_join(th, &fresh);
  assert_true((intptr_t)fresh);
}

static char reported[512];
static int reported_code;

static void capture(const char *what, int code, void *ctx) {
  (void)ctx;
  snprintf(reported, sizeof reported, "%s", what);
  reported_code = code;
}

static int failing_callback(cf_future *f, void *arg) {
  (void)f;
  (void)arg;
  return CF_EPERM;
}

static void test_callback_report_names_future(void **state) {
  (void)state;
  cf_report_fn old = cf_set_report_handler(capture, NULL);
  cf_future *f = cf_future_new();
  assert_int_equal(cf_future_add_done_callback(f, failing_callback, NULL), 0);
  assert_int_equal(cf_future_set_result(f, NULL, NULL), 0);
  cf_set_report_handler(old, NULL);
  char fp[32];
  snprintf(fp, sizeof fp, "%p", (void *)f);
  assert_int_equal(reported_code, CF_EPERM);
  if (!strstr(reported, "done-callback") || !strstr(reported, fp))
    fail_msg("the report \"%s\" does not name the future %s", reported, fp);
  cf_future_unref(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_argument_errors),
      cmocka_unit_test(test_state_and_outcome_errors),
      cmocka_unit_test(test_per_thread_and_sticky),
      cmocka_unit_test(test_callback_report_names_future),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
