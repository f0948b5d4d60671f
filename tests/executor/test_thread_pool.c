/* Tests for executor/thread_pool.c and the executor interface. */
#include <dirent.h>
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cfutures.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static cf_executor *new_pool(size_t workers) {
  cf_thread_pool_opts o = {.max_workers = workers};
  cf_executor *ex = NULL;
  assert_int_equal(cf_thread_pool_new(&o, &ex), 0);
  assert_non_null(ex);
  return ex;
}

static int identity(void *arg, void **out) {
  *out = arg;
  return 0;
}

static int sleepy(void *arg, void **out) {
  usleep((useconds_t)(intptr_t)arg);
  *out = arg;
  return 0;
}

/* A latch: tasks block on it until the test opens it. */
static pthread_mutex_t latch_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t latch_cv = PTHREAD_COND_INITIALIZER;
static bool latch_open;
static _Atomic int latch_waiting;

static void latch_reset(void) {
  pthread_mutex_lock(&latch_mu);
  latch_open = false;
  pthread_mutex_unlock(&latch_mu);
  atomic_store(&latch_waiting, 0);
}

static void latch_release(void) {
  pthread_mutex_lock(&latch_mu);
  latch_open = true;
  pthread_cond_broadcast(&latch_cv);
  pthread_mutex_unlock(&latch_mu);
}

static int wait_latch(void *arg, void **out) {
  atomic_fetch_add(&latch_waiting, 1);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += 20; /* bounded even if the test misbehaves */
  pthread_mutex_lock(&latch_mu);
  while (!latch_open)
    if (pthread_cond_timedwait(&latch_cv, &latch_mu, &ts) != 0)
      break;
  pthread_mutex_unlock(&latch_mu);
  *out = arg;
  return 0;
}

static void wait_for_blocked(int n) {
  double t0 = now_s();
  while (atomic_load(&latch_waiting) < n && now_s() - t0 < 10)
    usleep(1000);
  assert_true(atomic_load(&latch_waiting) >= n);
}

/* ---- basics -------------------------------------------------------------- */

static void test_bad_args(void **state) {
  (void)state;
  cf_executor *ex = (cf_executor *)1;
  assert_int_equal(cf_thread_pool_new(NULL, NULL), CF_EINVAL);
  cf_thread_pool_opts o = {.max_workers = 100000};
  assert_int_equal(cf_thread_pool_new(&o, &ex), CF_EINVAL);
  assert_null(ex);
  ex = new_pool(1);
  cf_future *f = (cf_future *)1;
  assert_int_equal(cf_submit(NULL, identity, NULL, &f), CF_EINVAL);
  assert_null(f);
  assert_int_equal(cf_submit(ex, NULL, NULL, &f), CF_EINVAL);
  assert_int_equal(cf_submit(ex, identity, NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_executor_shutdown(NULL, true, false), CF_EINVAL);
  assert_int_equal(cf_thread_pool_size(NULL), 0);
  cf_executor_free(ex);
  cf_executor_free(NULL);
}

static void test_default_size(void **state) {
  (void)state;
  cf_executor *ex = NULL;
  assert_int_equal(cf_thread_pool_new(NULL, &ex), 0);
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  assert_int_equal(cf_thread_pool_size(ex), (size_t)(cpus > 0 ? cpus : 1));
  cf_executor_free(ex);
}

static void test_many_tasks(void **state) {
  (void)state;
  const size_t sizes[] = {1, 2, 4, 8};
  enum { N = 20000 };
  cf_future **fs = malloc(N * sizeof *fs);
  assert_non_null(fs);
  for (size_t s = 0; s < 4; s++) {
    cf_executor *ex = new_pool(sizes[s]);
    assert_int_equal(cf_thread_pool_size(ex), sizes[s]);
    for (intptr_t i = 0; i < N; i++)
      assert_int_equal(cf_submit(ex, identity, (void *)i, &fs[i]), 0);
    for (intptr_t i = 0; i < N; i++) {
      void *v = NULL;
      assert_int_equal(cf_future_result(fs[i], 30, &v), 0);
      assert_int_equal((intptr_t)v, i);
      cf_future_unref(fs[i]);
    }
    cf_executor_free(ex);
  }
  free(fs);
}

static int failing(void *arg, void **out) {
  (void)out;
  return cf_fail(CF_EINVAL, "item %ld is bad", (long)(intptr_t)arg);
}

static int failing_plain(void *arg, void **out) {
  (void)arg;
  (void)out;
  return 42; /* no message: the code's text */
}

static void test_failures(void **state) {
  (void)state;
  cf_executor *ex = new_pool(2);
  cf_future *f;
  assert_int_equal(cf_submit(ex, failing, (void *)(intptr_t)3, &f), 0);
  assert_int_equal(cf_future_result(f, 10, NULL), CF_EFAILED);
  cf_error e;
  assert_int_equal(cf_future_exception(f, 0, &e), 0);
  assert_int_equal(e.code, CF_EINVAL);
  assert_string_equal(e.message, "item 3 is bad");
  cf_future_unref(f);
  /* a message from an earlier task does not leak into the next */
  assert_int_equal(cf_submit(ex, failing_plain, NULL, &f), 0);
  assert_int_equal(cf_future_exception(f, 10, &e), 0);
  assert_int_equal(e.code, 42);
  assert_string_equal(e.message, cf_strerror(42));
  /* the promise side refuses executor futures */
  assert_int_equal(cf_future_set_result(f, NULL, NULL), CF_EPERM);
  cf_future_unref(f);
  cf_executor_free(ex);
}

static _Atomic int destroyed;
static void count_destroy(void *v) {
  free(v);
  atomic_fetch_add(&destroyed, 1);
}

static int make_box(void *arg, void **out) {
  int *box = malloc(sizeof *box);
  if (!box)
    return CF_ENOMEM;
  *box = (int)(intptr_t)arg;
  *out = box;
  return 0;
}

static void test_result_destroy(void **state) {
  (void)state;
  atomic_store(&destroyed, 0);
  cf_executor *ex = new_pool(2);
  enum { N = 100 };
  cf_future *fs[N];
  for (int i = 0; i < N; i++)
    assert_int_equal(cf_submit_with(ex, make_box, (void *)(intptr_t)i,
                                    count_destroy, &fs[i]),
                     0);
  for (int i = 0; i < N; i++) {
    void *v;
    if (i % 2 == 0) { /* half read, half never read */
      assert_int_equal(cf_future_result(fs[i], 10, &v), 0);
      assert_int_equal(*(int *)v, i);
    }
  }
  cf_executor_free(ex); /* waits for all */
  assert_int_equal(atomic_load(&destroyed), 0);
  for (int i = 0; i < N; i++)
    cf_future_unref(fs[i]);
  assert_int_equal(atomic_load(&destroyed), N);
}

/* ---- options ------------------------------------------------------------- */

static void test_thread_names(void **state) {
  (void)state;
  cf_thread_pool_opts o = {.max_workers = 3, .thread_name_prefix = "crawl"};
  cf_executor *ex;
  assert_int_equal(cf_thread_pool_new(&o, &ex), 0);
  latch_reset();
  cf_future *fs[3];
  for (int i = 0; i < 3; i++)
    assert_int_equal(cf_submit(ex, wait_latch, NULL, &fs[i]), 0);
  wait_for_blocked(3);
  int named = 0;
  DIR *d = opendir("/proc/self/task");
  assert_non_null(d);
  struct dirent *de;
  while ((de = readdir(d))) {
    char path[300], comm[64] = "";
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
    FILE *fp = fopen(path, "r");
    if (!fp)
      continue;
    if (fgets(comm, sizeof comm, fp) && strncmp(comm, "crawl-", 6) == 0)
      named++;
    fclose(fp);
  }
  closedir(d);
  assert_int_equal(named, 3);
  latch_release();
  for (int i = 0; i < 3; i++)
    cf_future_unref(fs[i]);
  cf_executor_free(ex);
}

static _Atomic int inits;
static int init_ok(void *arg) {
  atomic_fetch_add(&inits, (int)(intptr_t)arg);
  return 0;
}

static void test_initializer(void **state) {
  (void)state;
  atomic_store(&inits, 0);
  cf_thread_pool_opts o = {.max_workers = 4,
                           .initializer = init_ok,
                           .initarg = (void *)(intptr_t)10};
  cf_executor *ex;
  assert_int_equal(cf_thread_pool_new(&o, &ex), 0);
  cf_future *f;
  assert_int_equal(cf_submit(ex, identity, NULL, &f), 0);
  assert_int_equal(cf_future_result(f, 10, NULL), 0);
  cf_future_unref(f);
  cf_executor_free(ex);
  assert_int_equal(atomic_load(&inits), 40); /* once per worker */
}

static int init_fail(void *arg) {
  (void)arg;
  return CF_EINVAL;
}

static void test_initializer_failure_breaks_pool(void **state) {
  (void)state;
  cf_thread_pool_opts o = {.max_workers = 2, .initializer = init_fail};
  cf_executor *ex;
  assert_int_equal(cf_thread_pool_new(&o, &ex), 0);
  cf_future *f = NULL;
  int rc = cf_submit(ex, identity, NULL, &f);
  if (rc == 0) { /* submitted before the pool knew: fails as broken */
    assert_int_equal(cf_future_result(f, 10, NULL), CF_EBROKEN);
    cf_error e;
    assert_int_equal(cf_future_exception(f, 0, &e), 0);
    assert_int_equal(e.code, CF_EBROKEN);
    cf_future_unref(f);
  } else {
    assert_int_equal(rc, CF_EBROKEN);
  }
  /* once broken, submit says so */
  double t0 = now_s();
  while ((rc = cf_submit(ex, identity, NULL, &f)) == 0 && now_s() - t0 < 10) {
    assert_int_equal(cf_future_result(f, 10, NULL), CF_EBROKEN);
    cf_future_unref(f);
  }
  assert_int_equal(rc, CF_EBROKEN);
  cf_executor_free(ex);
}

/* ---- shutdown ------------------------------------------------------------ */

static void test_shutdown_wait(void **state) {
  (void)state;
  cf_executor *ex = new_pool(2);
  enum { N = 20 };
  cf_future *fs[N];
  for (int i = 0; i < N; i++)
    assert_int_equal(cf_submit(ex, sleepy, (void *)(intptr_t)2000, &fs[i]), 0);
  assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
  for (int i = 0; i < N; i++) {
    assert_true(cf_future_done(fs[i])); /* all ran before shutdown returned */
    assert_int_equal(cf_future_result(fs[i], 0, NULL), 0);
    cf_future_unref(fs[i]);
  }
  cf_future *f = (cf_future *)1;
  assert_int_equal(cf_submit(ex, identity, NULL, &f), CF_ESHUTDOWN);
  assert_null(f);
  assert_int_equal(cf_executor_shutdown(ex, true, true), 0); /* again: fine */
  cf_executor_free(ex);
}

static void test_shutdown_nowait(void **state) {
  (void)state;
  cf_executor *ex = new_pool(1);
  latch_reset();
  cf_future *block, *queued[10];
  assert_int_equal(cf_submit(ex, wait_latch, NULL, &block), 0);
  for (int i = 0; i < 10; i++)
    assert_int_equal(cf_submit(ex, identity, (void *)(intptr_t)i, &queued[i]),
                     0);
  wait_for_blocked(1);
  double t0 = now_s();
  assert_int_equal(cf_executor_shutdown(ex, false, false), 0);
  assert_true(now_s() - t0 < 1.0); /* did not wait for the blocked task */
  latch_release();
  for (int i = 0; i < 10; i++) { /* queued tasks still run */
    void *v;
    assert_int_equal(cf_future_result(queued[i], 10, &v), 0);
    assert_int_equal((intptr_t)v, i);
    cf_future_unref(queued[i]);
  }
  cf_future_unref(block);
  cf_executor_free(ex);
}

typedef struct blocked_waiter {
  cf_future *f;
  int rc;
  double waited;
} blocked_waiter;

static void *wait_result(void *p) {
  blocked_waiter *b = p;
  double t0 = now_s();
  b->rc = cf_future_result(b->f, 20, NULL);
  b->waited = now_s() - t0;
  return NULL;
}

static void test_shutdown_cancel_futures(void **state) {
  (void)state;
  cf_executor *ex = new_pool(1);
  latch_reset();
  cf_future *running, *queued[50];
  assert_int_equal(cf_submit(ex, wait_latch, (void *)(intptr_t)9, &running), 0);
  for (int i = 0; i < 50; i++)
    assert_int_equal(cf_submit(ex, identity, NULL, &queued[i]), 0);
  wait_for_blocked(1);
  /* a thread blocks on a queued future: cancelling must wake it */
  blocked_waiter b = {.f = queued[49], .rc = -999};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, wait_result, &b), 0);
  usleep(20000);
  assert_int_equal(cf_executor_shutdown(ex, false, true), 0);
  pthread_join(th, NULL);
  assert_int_equal(b.rc, CF_ECANCELLED);
  /* woken by the cancel itself, not by the running task ending (the latch
   * holds it for 20 s) */
  assert_true(b.waited < 10.0);
  latch_release();
  assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
  void *v;
  assert_int_equal(cf_future_result(running, 0, &v), 0); /* ran to the end */
  assert_int_equal((intptr_t)v, 9);
  for (int i = 0; i < 50; i++) {
    assert_true(cf_future_cancelled(queued[i]));
    cf_future_unref(queued[i]);
  }
  cf_future_unref(running);
  cf_executor_free(ex);
}

static cf_executor *self_pool;
static int shutdown_self(void *arg, void **out) {
  (void)arg;
  *out = (void *)(intptr_t)cf_executor_shutdown(self_pool, true, false);
  return 0;
}

static int submit_after_shutdown(void *arg, void **out) {
  (void)arg;
  cf_future *f = NULL;
  *out = (void *)(intptr_t)cf_submit(self_pool, identity, NULL, &f);
  cf_future_unref(f);
  return 0;
}

static void test_shutdown_from_worker(void **state) {
  (void)state;
  self_pool = new_pool(1); /* one worker: `late` queues behind `blocker` */
  cf_future *f;
  assert_int_equal(cf_submit(self_pool, shutdown_self, NULL, &f), 0);
  void *v;
  assert_int_equal(cf_future_result(f, 10, &v), 0);
  assert_int_equal((intptr_t)v, CF_EDEADLK);
  cf_future_unref(f);
  latch_reset();
  cf_future *blocker, *late;
  assert_int_equal(cf_submit(self_pool, wait_latch, NULL, &blocker), 0);
  wait_for_blocked(1);
  assert_int_equal(cf_submit(self_pool, submit_after_shutdown, NULL, &late), 0);
  /* shut down while `late` is queued: it still runs, and its submit is refused
   */
  assert_int_equal(cf_executor_shutdown(self_pool, false, false), 0);
  latch_release();
  assert_int_equal(cf_future_result(late, 10, &v), 0);
  assert_int_equal((intptr_t)v, CF_ESHUTDOWN);
  cf_future_unref(late);
  cf_future_unref(blocker);
  cf_executor_free(self_pool);
}

/* ---- cancellation races -------------------------------------------------- */

static _Atomic int ran;
static int count_run(void *arg, void **out) {
  (void)arg;
  atomic_fetch_add(&ran, 1);
  *out = NULL;
  return 0;
}

static void test_cancel_races(void **state) {
  (void)state;
  atomic_store(&ran, 0);
  cf_executor *ex = new_pool(2);
  enum { N = 20000 };
  cf_future **fs = malloc(N * sizeof *fs);
  assert_non_null(fs);
  int cancelled_ok = 0;
  for (int i = 0; i < N; i++) {
    assert_int_equal(cf_submit(ex, count_run, NULL, &fs[i]), 0);
    if (rand() % 2)
      cancelled_ok += cf_future_cancel(fs[i]);
  }
  int finished = 0, cancelled = 0;
  for (int i = 0; i < N; i++) {
    int rc = cf_future_result(fs[i], 30, NULL);
    assert_true(rc == 0 || rc == CF_ECANCELLED);
    finished += rc == 0;
    cancelled += rc == CF_ECANCELLED;
    cf_future_unref(fs[i]);
  }
  cf_executor_free(ex);
  assert_int_equal(finished + cancelled, N);
  assert_int_equal(cancelled, cancelled_ok);
  assert_int_equal(atomic_load(&ran), finished); /* ran iff finished */
  free(fs);
}

/* ---- callbacks, nesting, helping ----------------------------------------- */

static pthread_t main_thread;
static _Atomic int cb_on_worker, cb_total;
static int where_cb(cf_future *f, void *arg) {
  (void)f;
  (void)arg;
  if (!pthread_equal(pthread_self(), main_thread))
    atomic_fetch_add(&cb_on_worker, 1);
  atomic_fetch_add(&cb_total, 1);
  return 0;
}

static void test_callbacks_on_workers(void **state) {
  (void)state;
  main_thread = pthread_self();
  atomic_store(&cb_on_worker, 0);
  atomic_store(&cb_total, 0);
  cf_executor *ex = new_pool(2);
  latch_reset();
  cf_future *f;
  assert_int_equal(cf_submit(ex, wait_latch, NULL, &f), 0);
  assert_int_equal(cf_future_add_done_callback(f, where_cb, NULL), 0);
  latch_release();
  assert_int_equal(cf_future_result(f, 10, NULL), 0);
  cf_executor_free(ex); /* callbacks have run once the pool is joined */
  assert_int_equal(atomic_load(&cb_total), 1);
  assert_int_equal(atomic_load(&cb_on_worker), 1);
  cf_future_unref(f);
}

static cf_executor *fib_pool;
static int fib(void *arg, void **out) {
  intptr_t n = (intptr_t)arg;
  if (n < 2) {
    *out = (void *)n;
    return 0;
  }
  cf_future *a, *b;
  int rc = cf_submit(fib_pool, fib, (void *)(n - 1), &a);
  if (rc)
    return rc;
  rc = cf_submit(fib_pool, fib, (void *)(n - 2), &b);
  if (rc) {
    cf_future_unref(a);
    return rc;
  }
  void *va = NULL, *vb = NULL;
  int ra = cf_future_result(a, CF_FOREVER, &va);
  int rb = cf_future_result(b, CF_FOREVER, &vb);
  cf_future_unref(a);
  cf_future_unref(b);
  if (ra || rb)
    return ra ? ra : rb;
  *out = (void *)((intptr_t)va + (intptr_t)vb);
  return 0;
}

static void test_nested_fib(void **state) {
  (void)state;
  const size_t sizes[] = {1, 2, 4, 8};
  for (size_t s = 0; s < 4; s++) {
    fib_pool = new_pool(sizes[s]);
    cf_future *f;
    assert_int_equal(cf_submit(fib_pool, fib, (void *)(intptr_t)25, &f), 0);
    void *v;
    assert_int_equal(cf_future_result(f, 60, &v), 0);
    assert_int_equal((intptr_t)v, 75025);
    cf_future_unref(f);
    cf_executor_free(fib_pool);
  }
}

/* cf_wait and as_completed from inside a task on the same pool. */
static int fan_out(void *arg, void **out) {
  intptr_t k = (intptr_t)arg;
  cf_future *fs[8];
  for (int i = 0; i < 8; i++)
    if (cf_submit(fib_pool, sleepy, (void *)(intptr_t)(100 * i), &fs[i]))
      return CF_ENOMEM;
  intptr_t sum = 0;
  if (k == 0) {
    if (cf_wait(fs, 8, 30, CF_ALL_COMPLETED, NULL))
      return CF_ETIMEDOUT;
    for (int i = 0; i < 8; i++) {
      void *v;
      cf_future_result(fs[i], 0, &v);
      sum += (intptr_t)v;
    }
  } else {
    cf_as_completed *it;
    if (cf_as_completed_new(fs, 8, 30, &it))
      return CF_ENOMEM;
    cf_future *f;
    int n = 0;
    while (cf_as_completed_next(it, &f) == 0) {
      void *v;
      cf_future_result(f, 0, &v);
      sum += (intptr_t)v;
      n++;
    }
    cf_as_completed_free(it);
    if (n != 8)
      return CF_EINVAL;
  }
  for (int i = 0; i < 8; i++)
    cf_future_unref(fs[i]);
  *out = (void *)sum;
  return 0;
}

static void test_wait_inside_tasks(void **state) {
  (void)state;
  for (size_t workers = 1; workers <= 2; workers++) {
    fib_pool = new_pool(workers);
    for (intptr_t k = 0; k < 2; k++) {
      cf_future *f;
      assert_int_equal(cf_submit(fib_pool, fan_out, (void *)k, &f), 0);
      void *v;
      assert_int_equal(cf_future_result(f, 60, &v), 0);
      assert_int_equal((intptr_t)v, 100 * 28);
      cf_future_unref(f);
    }
    cf_executor_free(fib_pool);
  }
}

/* ---- map ----------------------------------------------------------------- */

static int square_or_fail(void *arg, void **out) {
  int x = *(int *)arg;
  if (x % 10 == 3)
    return cf_fail(CF_EINVAL, "no %d", x);
  *out = (void *)(intptr_t)(x * x);
  return 0;
}

static void test_map_array(void **state) {
  (void)state;
  cf_executor *ex = new_pool(4);
  enum { N = 1000 };
  int xs[N];
  for (int i = 0; i < N; i++)
    xs[i] = i;
  cf_map *m;
  assert_int_equal(
      cf_map_array(ex, square_or_fail, xs, N, sizeof xs[0], NULL, &m), 0);
  cf_error e;
  assert_int_equal(cf_map_error(m, &e), CF_EINVALSTATE);
  for (int i = 0; i < N; i++) {
    void *v = NULL;
    int rc = cf_map_next(m, &v);
    if (i % 10 == 3) {
      assert_int_equal(rc, CF_EFAILED);
      assert_int_equal(cf_map_error(m, &e), 0);
      assert_int_equal(e.code, CF_EINVAL);
      char want[32];
      snprintf(want, sizeof want, "no %d", i);
      assert_string_equal(e.message, want);
    } else {
      assert_int_equal(rc, 0);
      assert_int_equal((intptr_t)v, (intptr_t)i * i);
      assert_int_equal(cf_map_error(m, &e), 0);
      assert_int_equal(e.code, 0);
    }
  }
  void *v;
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  cf_map_free(m);

  /* empty input, bad arguments */
  assert_int_equal(
      cf_map_array(ex, square_or_fail, xs, 0, sizeof xs[0], NULL, &m), 0);
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  cf_map_free(m);
  assert_int_equal(cf_map_array(ex, square_or_fail, NULL, 3, 4, NULL, &m),
                   CF_EINVAL);
  assert_int_equal(cf_map_array(ex, square_or_fail, xs, 3, 0, NULL, &m),
                   CF_EINVAL);
  assert_int_equal(cf_map_array(NULL, square_or_fail, xs, 3, 4, NULL, &m),
                   CF_EINVAL);
  cf_map_opts bad = {.use_timeout = true, .timeout_s = NAN};
  assert_int_equal(cf_map_array(ex, square_or_fail, xs, 3, 4, &bad, &m),
                   CF_EINVAL);
  assert_int_equal(cf_map_next(NULL, &v), CF_EINVAL);
  cf_map_free(NULL);
  cf_executor_free(ex);
}

static int slow_item(void *arg, void **out) {
  usleep(20000);
  atomic_fetch_add(&ran, 1);
  *out = arg;
  return 0;
}

static void test_map_timeout_and_free(void **state) {
  (void)state;
  cf_executor *ex = new_pool(1);
  int xs[40] = {0};
  /* 40 items of 20 ms on one worker need 800 ms; the map gets 100 ms */
  cf_map_opts o = {.use_timeout = true, .timeout_s = 0.1};
  cf_map *m;
  atomic_store(&ran, 0);
  double t0 = now_s();
  assert_int_equal(cf_map_array(ex, slow_item, xs, 40, sizeof xs[0], &o, &m),
                   0);
  void *v;
  int got = 0, rc;
  while ((rc = cf_map_next(m, &v)) == 0)
    got++;
  double dt = now_s() - t0;
  assert_int_equal(rc, CF_ETIMEDOUT);
  assert_true(dt >= 0.1 && dt < 1.0);
  assert_true(got < 40);
  assert_int_equal(cf_map_next(m, &v), CF_ETIMEDOUT); /* sticky */
  cf_map_free(m);
  cf_executor_shutdown(ex, true, false);
  assert_true(atomic_load(&ran) < 40); /* the rest were cancelled */

  /* freeing a map early cancels what is pending */
  cf_executor_free(ex);
  ex = new_pool(1);
  atomic_store(&ran, 0);
  assert_int_equal(cf_map_array(ex, slow_item, xs, 40, sizeof xs[0], NULL, &m),
                   0);
  assert_int_equal(cf_map_next(m, &v), 0);
  cf_map_free(m);
  cf_executor_free(ex);
  assert_true(atomic_load(&ran) < 10);
}

/* A lazy generator: items 0..limit-1, an error at `fail_at`. */
typedef struct gen {
  intptr_t next, limit, fail_at;
  _Atomic intptr_t done;
  intptr_t max_in_flight;
} gen;

static int gen_next(void *state, void **item) {
  gen *g = state;
  if (g->next == g->fail_at)
    return CF_EINVAL;
  if (g->next >= g->limit)
    return CF_EDONE;
  intptr_t in_flight = g->next - atomic_load(&g->done);
  if (in_flight > g->max_in_flight)
    g->max_in_flight = in_flight;
  *item = (void *)g->next++;
  return 0;
}

static int gen_task(void *arg, void **out) {
  *out = arg;
  return 0;
}

static void test_map_iter_window(void **state) {
  (void)state;
  cf_executor *ex = new_pool(2);
  gen g = {.limit = 100000, .fail_at = -1};
  atomic_init(&g.done, 0);
  cf_map_opts o = {.window = 8};
  cf_map *m;
  assert_int_equal(cf_map_iter(ex, gen_task, gen_next, &g, &o, &m), 0);
  void *v;
  intptr_t i = 0;
  int rc;
  while ((rc = cf_map_next(m, &v)) == 0) {
    assert_int_equal((intptr_t)v, i);
    i++;
    atomic_store(&g.done, i);
  }
  assert_int_equal(rc, CF_EDONE);
  assert_int_equal(i, 100000);
  assert_true(g.max_in_flight <= 8);
  cf_map_free(m);

  /* the generator's error surfaces after the earlier items, then the end */
  gen g2 = {.limit = 100, .fail_at = 10};
  atomic_init(&g2.done, 0);
  assert_int_equal(cf_map_iter(ex, gen_task, gen_next, &g2, NULL, &m), 0);
  for (i = 0; i < 10; i++) {
    assert_int_equal(cf_map_next(m, &v), 0);
    assert_int_equal((intptr_t)v, i);
  }
  assert_int_equal(cf_map_next(m, &v), CF_EINVAL);
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  cf_map_free(m);
  assert_int_equal(cf_map_iter(ex, gen_task, NULL, &g2, NULL, &m), CF_EINVAL);
  cf_executor_free(ex);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_args),
      cmocka_unit_test(test_default_size),
      cmocka_unit_test(test_many_tasks),
      cmocka_unit_test(test_failures),
      cmocka_unit_test(test_result_destroy),
      cmocka_unit_test(test_thread_names),
      cmocka_unit_test(test_initializer),
      cmocka_unit_test(test_initializer_failure_breaks_pool),
      cmocka_unit_test(test_shutdown_wait),
      cmocka_unit_test(test_shutdown_nowait),
      cmocka_unit_test(test_shutdown_cancel_futures),
      cmocka_unit_test(test_shutdown_from_worker),
      cmocka_unit_test(test_cancel_races),
      cmocka_unit_test(test_callbacks_on_workers),
      cmocka_unit_test(test_nested_fib),
      cmocka_unit_test(test_wait_inside_tasks),
      cmocka_unit_test(test_map_array),
      cmocka_unit_test(test_map_timeout_and_free),
      cmocka_unit_test(test_map_iter_window),
  };
  return cmocka_run_group_tests_name("thread_pool", tests, NULL, NULL);
}
