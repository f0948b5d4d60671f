/* Tests for sync/thread.c (cf_thread, Python's threading.Thread) and
 * cf_timer_join (sync/timer.c). Only the test's own thread asserts; the
 * threads under test record what they saw. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cfutures.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- results and failures ------------------------------------------------ */

static int add_one(void *arg, void **out) {
  *out = (void *)((intptr_t)arg + 1);
  return 0;
}

static int fail_with(void *arg, void **out) {
  (void)out;
  return cf_fail(CF_EINVAL, "bad n=%d", (int)(intptr_t)arg);
}

static int fail_plain(void *arg, void **out) {
  (void)arg;
  (void)out;
  return CF_ETOOBIG;
}

static int destroyed;
static void count_destroy(void *v) {
  free(v);
  destroyed++;
}
static int make_box(void *arg, void **out) {
  (void)arg;
  *out = malloc(16);
  return *out ? 0 : CF_ENOMEM;
}

static void test_result_and_failure(void **state) {
  (void)state;
  cf_thread *t;
  void *v = NULL;
  assert_int_equal(cf_thread_start(add_one, (void *)41, NULL, &t), 0);
  assert_int_equal(cf_thread_join(t, 10), 0);
  assert_false(cf_thread_is_alive(t));
  assert_int_equal(cf_future_result(cf_thread_future(t), 0, &v), 0);
  assert_ptr_equal(v, (void *)42);
  cf_thread_free(t);

  /* A failure: its code and its cf_fail message. */
  assert_int_equal(cf_thread_start(fail_with, (void *)3, NULL, &t), 0);
  assert_int_equal(cf_thread_join(t, 10), 0);
  assert_int_equal(cf_future_result(cf_thread_future(t), 0, &v), CF_EFAILED);
  cf_error e;
  assert_int_equal(cf_future_exception(cf_thread_future(t), 0, &e), 0);
  assert_int_equal(e.code, CF_EINVAL);
  assert_string_equal(e.message, "bad n=3");
  /* Cancelling the future of a running or finished thread does nothing. */
  assert_false(cf_future_cancel(cf_thread_future(t)));
  cf_thread_free(t);

  /* A failure without a message: the code's own text. */
  assert_int_equal(cf_thread_start(fail_plain, NULL, NULL, &t), 0);
  cf_future *f = cf_future_ref(cf_thread_future(t));
  cf_thread_free(t); /* the reference keeps the future */
  assert_int_equal(cf_future_exception(f, 10, &e), 0);
  assert_int_equal(e.code, CF_ETOOBIG);
  assert_string_equal(e.message, cf_strerror(CF_ETOOBIG));
  cf_future_unref(f);

  /* The result's destroy function runs when the future dies. */
  destroyed = 0;
  cf_thread_opts o = {.result_destroy = count_destroy};
  assert_int_equal(cf_thread_start(make_box, NULL, &o, &t), 0);
  assert_int_equal(cf_thread_join(t, 10), 0);
  assert_int_equal(destroyed, 0);
  cf_thread_free(t);
  assert_int_equal(destroyed, 1);
}

/* ---- join timeouts ---------------------------------------------------------
 */

static int wait_event(void *arg, void **out) {
  (void)out;
  return cf_event_wait(arg, 20);
}

static void test_join_timeouts(void **state) {
  (void)state;
  cf_event *ev;
  assert_int_equal(cf_event_new(false, &ev), 0);
  cf_thread *t;
  assert_int_equal(cf_thread_start(wait_event, ev, NULL, &t), 0);
  assert_true(cf_thread_is_alive(t));
  /* Expires: not before its time, and not much after. */
  double t0 = now_s();
  assert_int_equal(cf_thread_join(t, 0.1), CF_ETIMEDOUT);
  double waited = now_s() - t0;
  assert_true(waited >= 0.1);
  assert_true(waited < 1.0);
  assert_non_null(strstr(cf_last_error(), "cf_thread_join"));
  t0 = now_s();
  assert_int_equal(cf_thread_join(t, 0), CF_ETIMEDOUT);
  assert_int_equal(cf_thread_join(t, -1), CF_ETIMEDOUT);
  assert_true(now_s() - t0 < 0.5);
  assert_true(cf_thread_is_alive(t));
  assert_false(cf_future_done(cf_thread_future(t)));
  /* Succeeds when the thread ends in time. */
  assert_int_equal(cf_event_set(ev), 0);
  t0 = now_s();
  assert_int_equal(cf_thread_join(t, 10), 0);
  assert_true(now_s() - t0 < 1.0);
  assert_false(cf_thread_is_alive(t));
  assert_int_equal(cf_future_result(cf_thread_future(t), 0, NULL), 0);
  /* Again, with any timeout: 0 at once. */
  assert_int_equal(cf_thread_join(t, 0), 0);
  assert_int_equal(cf_thread_join(t, CF_FOREVER), 0);
  assert_int_equal(cf_thread_join(t, NAN), CF_EINVAL);
  cf_thread_free(t);
  cf_event_free(ev);
}

/* ---- names and identities ------------------------------------------------ */

typedef struct seen {
  char sysname[32];
  unsigned long self;
  pid_t tid;
} seen;

static int look(void *arg, void **out) {
  (void)out;
  seen *s = arg;
  pthread_getname_np(pthread_self(), s->sysname, sizeof s->sysname);
  s->self = (unsigned long)pthread_self();
  s->tid = (pid_t)syscall(SYS_gettid);
  return 0;
}

static void test_names_and_ids(void **state) {
  (void)state;
  seen s1 = {0}, s2 = {0};
  cf_thread *a, *b;
  assert_int_equal(cf_thread_start(look, &s1, NULL, &a), 0);
  char name[] = "a-rather-long-thread-name";
  cf_thread_opts o = {.name = name};
  assert_int_equal(cf_thread_start(look, &s2, &o, &b), 0);
  name[0] = 'X'; /* copied */
  int na = -1;
  assert_int_equal(sscanf(cf_thread_name(a), "Thread-%d", &na), 1);
  assert_string_equal(cf_thread_name(b), "a-rather-long-thread-name");
  /* Known once start returns. */
  assert_true(cf_thread_ident(a) != 0);
  assert_true(cf_thread_native_id(a) > 0);
  assert_int_equal(cf_thread_join(a, 10), 0);
  assert_int_equal(cf_thread_join(b, 10), 0);
  assert_string_equal(s1.sysname, cf_thread_name(a));
  assert_string_equal(s2.sysname, "a-rather-long-t"); /* 15 bytes */
  assert_true(cf_thread_ident(a) == s1.self);
  assert_int_equal(cf_thread_native_id(a), s1.tid);
  assert_int_equal(cf_thread_native_id(b), s2.tid);
  /* Default names count up. */
  cf_thread *c;
  assert_int_equal(cf_thread_start(look, &s1, NULL, &c), 0);
  int nc = -1;
  assert_int_equal(sscanf(cf_thread_name(c), "Thread-%d", &nc), 1);
  assert_int_equal(nc, na + 1);
  assert_int_equal(cf_thread_join(c, 10), 0);
  cf_thread_free(a);
  cf_thread_free(b);
  cf_thread_free(c);
}

/* ---- bad input, joining oneself
 * ---------------------------------------------- */

static _Atomic(cf_thread *) self_handle;
static int join_self(void *arg, void **out) {
  (void)arg;
  cf_thread *me;
  while (!(me = atomic_load_explicit(&self_handle, memory_order_acquire)))
    usleep(100);
  *out = (void *)(intptr_t)cf_thread_join(me, 1);
  return 0;
}

static void test_bad_input(void **state) {
  (void)state;
  cf_thread *t = (cf_thread *)1;
  assert_int_equal(cf_thread_start(NULL, NULL, NULL, &t), CF_EINVAL);
  assert_null(t);
  assert_non_null(strstr(cf_last_error(), "cf_thread_start"));
  assert_int_equal(cf_thread_start(add_one, NULL, NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_thread_join(NULL, 1), CF_EINVAL);
  assert_non_null(strstr(cf_last_error(), "cf_thread_join"));
  assert_false(cf_thread_is_alive(NULL));
  assert_null(cf_thread_future(NULL));
  assert_null(cf_thread_name(NULL));
  assert_int_equal(cf_thread_ident(NULL), 0);
  assert_int_equal(cf_thread_native_id(NULL), 0);
  cf_thread_free(NULL);

  assert_int_equal(cf_thread_start(add_one, NULL, NULL, &t), 0);
  assert_int_equal(cf_thread_join(t, NAN), CF_EINVAL);
  assert_non_null(strstr(cf_last_error(), "NaN"));
  assert_int_equal(cf_thread_join(t, 10), 0);
  cf_thread_free(t);

  /* A thread joining itself: CF_EDEADLK, not a hang. */
  atomic_store_explicit(&self_handle, NULL, memory_order_relaxed);
  assert_int_equal(cf_thread_start(join_self, NULL, NULL, &t), 0);
  /* release: publishes the handle to join_self's acquire load. */
  atomic_store_explicit(&self_handle, t, memory_order_release);
  void *v = NULL;
  assert_int_equal(cf_future_result(cf_thread_future(t), 10, &v), 0);
  assert_int_equal((int)(intptr_t)v, CF_EDEADLK);
  assert_int_equal(cf_thread_join(t, 10), 0);
  cf_thread_free(t);
}

/* ---- concurrent joins; freeing a running thread
 * -------------------------------- */

typedef struct joiner {
  cf_thread *t;
  double timeout;
  int rc;
  bool done;
} joiner;

static void *join_main(void *arg) {
  joiner *j = arg;
  j->rc = cf_thread_join(j->t, j->timeout);
  j->done = cf_future_done(cf_thread_future(j->t));
  return NULL;
}

static void test_concurrent_joins(void **state) {
  (void)state;
  for (int round = 0; round < 20; round++) {
    cf_event *ev;
    assert_int_equal(cf_event_new(false, &ev), 0);
    cf_thread *t;
    assert_int_equal(cf_thread_start(wait_event, ev, NULL, &t), 0);
    enum { N = 6 };
    joiner js[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
      js[i] = (joiner){.t = t, .timeout = i < 2 ? 0.01 : CF_FOREVER};
      assert_int_equal(pthread_create(&th[i], NULL, join_main, &js[i]), 0);
    }
    usleep(round % 2 ? 20000 : 0);
    assert_int_equal(cf_event_set(ev), 0);
    for (int i = 0; i < N; i++)
      assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 2; i < N; i++) {
      assert_int_equal(js[i].rc, 0);
      assert_true(js[i].done);
    }
    for (int i = 0; i < 2; i++)
      assert_true(js[i].rc == 0 || js[i].rc == CF_ETIMEDOUT);
    cf_thread_free(t);
    cf_event_free(ev);
  }
}

static int nap(void *arg, void **out) {
  (void)arg;
  (void)out;
  usleep(20000);
  return 0;
}

static void test_free_running_thread(void **state) {
  (void)state;
  cf_event *ev;
  assert_int_equal(cf_event_new(false, &ev), 0);
  cf_thread *t;
  assert_int_equal(cf_thread_start(wait_event, ev, NULL, &t), 0);
  cf_future *f = cf_future_ref(cf_thread_future(t));
  cf_thread_free(t); /* detached: runs on */
  assert_false(cf_future_done(f));
  assert_int_equal(cf_event_set(ev), 0);
  assert_int_equal(cf_future_result(f, 10, NULL), 0);
  cf_future_unref(f);
  cf_event_free(ev);
  /* And one nobody keeps the future of: it frees itself as it ends. */
  assert_int_equal(cf_thread_start(nap, NULL, NULL, &t), 0);
  cf_thread_free(t);
}

/* ---- cf_timer_join
 * ------------------------------------------------------------- */

static atomic_int fired;
static int fire(void *arg) {
  (void)arg;
  atomic_fetch_add_explicit(&fired, 1, memory_order_relaxed);
  return 0;
}

static _Atomic(cf_timer *) self_timer;
static atomic_int self_join_rc;
static int timer_join_self(void *arg) {
  (void)arg;
  cf_timer *me;
  /* acquire: pairs with the release store of the handle below. */
  while (!(me = atomic_load_explicit(&self_timer, memory_order_acquire)))
    usleep(100);
  atomic_store_explicit(&self_join_rc, cf_timer_join(me, 1),
                        memory_order_relaxed);
  return 0;
}

static void test_timer_join(void **state) {
  (void)state;
  atomic_store(&fired, 0);
  cf_timer *t;
  assert_int_equal(cf_timer_start(1.0, fire, NULL, &t), 0);
  double t0 = now_s();
  assert_int_equal(cf_timer_join(t, 0.1), CF_ETIMEDOUT);
  double waited = now_s() - t0;
  assert_true(waited >= 0.1);
  assert_true(waited < 0.8); /* fn, due at 1 s, has not run yet */
  assert_int_equal(cf_timer_join(t, 0), CF_ETIMEDOUT);
  assert_int_equal(atomic_load(&fired), 0);
  assert_int_equal(cf_timer_join(t, 10), 0);
  assert_int_equal(atomic_load(&fired), 1); /* fn has returned */
  assert_int_equal(cf_timer_join(t, 0), 0);
  assert_int_equal(cf_timer_join(t, NAN), CF_EINVAL);
  cf_timer_free(t);

  /* A cancelled timer ends at once. */
  assert_int_equal(cf_timer_start(30, fire, NULL, &t), 0);
  assert_true(cf_timer_cancel(t));
  t0 = now_s();
  assert_int_equal(cf_timer_join(t, 10), 0);
  assert_true(now_s() - t0 < 1.0);
  assert_int_equal(atomic_load(&fired), 1);
  cf_timer_free(t);

  assert_int_equal(cf_timer_join(NULL, 1), CF_EINVAL);
  assert_non_null(strstr(cf_last_error(), "cf_timer_join"));

  /* From its own function: CF_EDEADLK. */
  cf_timer *st;
  assert_int_equal(cf_timer_start(0.01, timer_join_self, NULL, &st), 0);
  /* release: publishes the handle to timer_join_self. */
  atomic_store_explicit(&self_timer, st, memory_order_release);
  assert_int_equal(cf_timer_join(st, 10), 0);
  assert_int_equal(atomic_load(&self_join_rc), CF_EDEADLK);
  cf_timer_free(st);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_result_and_failure),
      cmocka_unit_test(test_join_timeouts),
      cmocka_unit_test(test_names_and_ids),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_concurrent_joins),
      cmocka_unit_test(test_free_running_thread),
      cmocka_unit_test(test_timer_join),
  };
  return cmocka_run_group_tests_name("thread", tests, NULL, NULL);
}
