/* Tests for executor/thread_pool.c, executor/executor.c and executor/map.c
 * as seen through the public API.
 *
 * Worker threads never assert: they record what they saw in variables
 * (slots, counters, task results) and the test thread checks them. Tasks
 * that block do so on a latch with a 20 s bound, so a broken pool fails a
 * test instead of hanging it. */
#include <dirent.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
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

static _Atomic int ran;
static int count_run(void *arg, void **out) {
  (void)arg;
  atomic_fetch_add(&ran, 1);
  *out = NULL;
  return 0;
}

/* ---- a latch: tasks block on it until the test opens it ----------------- */

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

/* Blocks (without helping the pool) until the latch opens, at most 20 s. */
static void latch_wait(void) {
  atomic_fetch_add(&latch_waiting, 1);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += 20; /* bounded even if the test misbehaves */
  pthread_mutex_lock(&latch_mu);
  while (!latch_open)
    if (pthread_cond_timedwait(&latch_cv, &latch_mu, &ts) != 0)
      break;
  pthread_mutex_unlock(&latch_mu);
}

static int wait_latch(void *arg, void **out) {
  latch_wait();
  *out = arg;
  return 0;
}

static void wait_for_blocked(int n) {
  double t0 = now_s();
  while (atomic_load(&latch_waiting) < n && now_s() - t0 < 10)
    usleep(1000);
  assert_true(atomic_load(&latch_waiting) >= n);
}

/* ---- threads that block on futures from outside the pool ---------------- */

typedef struct blocked_waiter {
  cf_future **fs;
  size_t n;
  bool use_wait; /* cf_wait(ALL_COMPLETED) instead of cf_future_result */
  int rc;
  double waited;
  _Atomic bool returned;
} blocked_waiter;

static void *waiter_main(void *p) {
  blocked_waiter *b = p;
  double t0 = now_s();
  if (b->use_wait)
    b->rc = cf_wait(b->fs, b->n, 20, CF_ALL_COMPLETED, NULL);
  else
    b->rc = cf_future_result(b->fs[0], 20, NULL);
  b->waited = now_s() - t0;
  atomic_store(&b->returned, true);
  return NULL;
}

/* ---- basics -------------------------------------------------------------- */

static void test_bad_args(void **state) {
  (void)state;
  cf_executor *ex = (cf_executor *)1;
  assert_int_equal(cf_thread_pool_new(NULL, NULL), CF_EINVAL);
  cf_thread_pool_opts o = {.max_workers = 1025};
  assert_int_equal(cf_thread_pool_new(&o, &ex), CF_EINVAL);
  assert_null(ex);
  ex = (cf_executor *)1;
  o.max_workers = SIZE_MAX;
  assert_int_equal(cf_thread_pool_new(&o, &ex), CF_EINVAL);
  assert_null(ex);
  assert_int_equal(cf_thread_pool_new(&o, NULL), CF_EINVAL);

  ex = new_pool(1);
  cf_future *f = (cf_future *)1;
  assert_int_equal(cf_submit(NULL, identity, NULL, &f), CF_EINVAL);
  assert_null(f);
  f = (cf_future *)1;
  assert_int_equal(cf_submit(ex, NULL, NULL, &f), CF_EINVAL);
  assert_null(f);
  assert_int_equal(cf_submit(ex, identity, NULL, NULL), CF_EINVAL);
  f = (cf_future *)1;
  assert_int_equal(cf_submit_with(NULL, identity, NULL, free, &f), CF_EINVAL);
  assert_null(f);
  assert_int_equal(cf_submit_with(ex, NULL, NULL, free, &f), CF_EINVAL);
  assert_int_equal(cf_submit_with(ex, identity, NULL, free, NULL), CF_EINVAL);
  assert_int_equal(cf_executor_shutdown(NULL, true, false), CF_EINVAL);
  assert_int_equal(cf_executor_shutdown(NULL, false, true), CF_EINVAL);
  assert_int_equal(cf_thread_pool_size(NULL), 0);
  /* a NaN timeout on a pool future */
  assert_int_equal(cf_submit(ex, identity, NULL, &f), 0);
  assert_int_equal(cf_future_result(f, NAN, NULL), CF_EINVAL);
  assert_int_equal(cf_future_result(f, 10, NULL), 0);
  cf_future_unref(f);
  cf_executor_free(ex);
  cf_executor_free(NULL); /* no-op */
}

static void test_default_size(void **state) {
  (void)state;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  size_t want = (size_t)(cpus > 0 ? cpus : 1);
  cf_executor *ex = NULL;
  assert_int_equal(cf_thread_pool_new(NULL, &ex), 0); /* NULL opts */
  assert_int_equal(cf_thread_pool_size(ex), want);
  cf_executor_free(ex);
  cf_thread_pool_opts o = {.max_workers = 0};
  ex = NULL;
  assert_int_equal(cf_thread_pool_new(&o, &ex), 0);
  assert_int_equal(cf_thread_pool_size(ex), want);
  /* and it runs tasks */
  cf_future *f;
  assert_int_equal(cf_submit(ex, identity, (void *)(intptr_t)5, &f), 0);
  void *v;
  assert_int_equal(cf_future_result(f, 10, &v), 0);
  assert_int_equal((intptr_t)v, 5);
  cf_future_unref(f);
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
    for (intptr_t i = N - 1; i >= 0; i--) { /* newest first, for a change */
      void *v = NULL;
      assert_int_equal(cf_future_result(fs[i], 30, &v), 0);
      assert_int_equal((intptr_t)v, i);
      assert_int_equal(cf_future_state_of(fs[i]), CF_FINISHED);
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

/* Odd items fail with their own message, even ones succeed; a message must
 * never cross from one task to another on the same worker. */
static int odd_fails(void *arg, void **out) {
  intptr_t i = (intptr_t)arg;
  if (i % 2)
    return cf_fail(CF_EINVAL - (int)(i % 5), "odd %ld", (long)i);
  *out = arg;
  return 0;
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
  assert_int_equal(cf_future_set_exception(f, CF_EINVAL, "x"), CF_EPERM);
  assert_int_equal(cf_future_set_running_or_notify_cancel(f), CF_EPERM);
  cf_future_unref(f);
  cf_executor_free(ex);

  /* many mixed tasks on 4 workers */
  ex = new_pool(4);
  enum { N = 2000 };
  cf_future **fs = malloc(N * sizeof *fs);
  assert_non_null(fs);
  for (intptr_t i = 0; i < N; i++)
    assert_int_equal(cf_submit(ex, odd_fails, (void *)i, &fs[i]), 0);
  for (intptr_t i = 0; i < N; i++) {
    void *v = NULL;
    int rc = cf_future_result(fs[i], 30, &v);
    assert_int_equal(cf_future_exception(fs[i], 0, &e), 0);
    if (i % 2) {
      assert_int_equal(rc, CF_EFAILED);
      assert_int_equal(e.code, CF_EINVAL - (int)(i % 5));
      char want[32];
      snprintf(want, sizeof want, "odd %ld", (long)i);
      assert_string_equal(e.message, want);
    } else {
      assert_int_equal(rc, 0);
      assert_int_equal((intptr_t)v, i);
      assert_int_equal(e.code, 0);
    }
    cf_future_unref(fs[i]);
  }
  free(fs);
  cf_executor_free(ex);
}

/* Each result is a box naming its slot; destroying it counts in the slot. */
enum { NBOX = 300 };
static _Atomic int destroyed[NBOX];

static void box_destroy(void *v) {
  int i = *(int *)v;
  if (i >= 0 && i < NBOX)
    atomic_fetch_add(&destroyed[i], 1);
  free(v);
}

static int make_box(void *arg, void **out) {
  int i = (int)(intptr_t)arg;
  if (i % 7 == 6)
    return cf_fail(CF_EINVAL, "no box %d", i); /* no result to destroy */
  int *box = malloc(sizeof *box);
  if (!box)
    return CF_ENOMEM;
  *box = i;
  *out = box;
  return 0;
}

static void test_result_destroy(void **state) {
  (void)state;
  for (int i = 0; i < NBOX; i++)
    atomic_store(&destroyed[i], 0);
  cf_executor *ex = new_pool(2);
  latch_reset();
  cf_future *blockers[2];
  for (int i = 0; i < 2; i++)
    assert_int_equal(cf_submit(ex, wait_latch, NULL, &blockers[i]), 0);
  wait_for_blocked(2); /* both workers busy: the boxes queue up */
  cf_future *fs[NBOX];
  for (int i = 0; i < NBOX; i++)
    assert_int_equal(
        cf_submit_with(ex, make_box, (void *)(intptr_t)i, box_destroy, &fs[i]),
        0);
  /* a third of them is cancelled before running: nothing to destroy */
  for (int i = 0; i < NBOX; i += 3)
    assert_true(cf_future_cancel(fs[i]));
  latch_release();
  for (int i = 0; i < NBOX; i++) {
    void *v;
    int rc = cf_future_result(fs[i], 10, &v);
    if (i % 3 == 0)
      assert_int_equal(rc, CF_ECANCELLED);
    else if (i % 7 == 6)
      assert_int_equal(rc, CF_EFAILED);
    else if (i % 2 == 0) { /* half read, half never read */
      assert_int_equal(rc, 0);
      assert_int_equal(*(int *)v, i);
    }
  }
  for (int i = 0; i < 2; i++)
    cf_future_unref(blockers[i]);
  cf_executor_free(ex);          /* waits for all */
  for (int i = 0; i < NBOX; i++) /* the futures still own their results */
    assert_int_equal(atomic_load(&destroyed[i]), 0);
  for (int i = 0; i < NBOX; i++)
    cf_future_unref(fs[i]);
  for (int i = 0; i < NBOX; i++) {
    int want = (i % 3 == 0 || i % 7 == 6) ? 0 : 1;
    if (atomic_load(&destroyed[i]) != want)
      fail_msg("result %d destroyed %d times, want %d", i,
               atomic_load(&destroyed[i]), want);
  }
}

/* ---- options ------------------------------------------------------------- */

/* Counts this process's threads whose comm matches: exactly `name`, or
 * `name` followed by a number in [0, max) when max > 0 (bit i of *seen set
 * for "<name>i"). */
static int count_threads_named(const char *name, unsigned max,
                               unsigned long *seen) {
  int named = 0;
  DIR *d = opendir("/proc/self/task");
  assert_non_null(d);
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.')
      continue;
    char path[300], comm[64] = "";
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", de->d_name);
    FILE *fp = fopen(path, "r");
    if (!fp)
      continue;
    if (fgets(comm, sizeof comm, fp)) {
      comm[strcspn(comm, "\n")] = '\0';
      size_t len = strlen(name);
      if (max == 0) {
        named += strcmp(comm, name) == 0;
      } else if (strncmp(comm, name, len) == 0 && comm[len]) {
        char *end;
        unsigned long i = strtoul(comm + len, &end, 10);
        if (*end == '\0' && i < max) {
          named++;
          if (seen)
            *seen |= 1ul << i;
        }
      }
    }
    fclose(fp);
  }
  closedir(d);
  return named;
}

static void check_names(const char *prefix, unsigned workers, const char *match,
                        unsigned max) {
  cf_thread_pool_opts o = {.max_workers = workers,
                           .thread_name_prefix = prefix};
  cf_executor *ex;
  assert_int_equal(cf_thread_pool_new(&o, &ex), 0);
  latch_reset();
  cf_future *fs[8];
  for (unsigned i = 0; i < workers; i++)
    assert_int_equal(cf_submit(ex, wait_latch, NULL, &fs[i]), 0);
  wait_for_blocked((int)workers);
  unsigned long seen = 0;
  int named = count_threads_named(match, max, &seen);
  latch_release();
  for (unsigned i = 0; i < workers; i++)
    cf_future_unref(fs[i]);
  cf_executor_free(ex);
  assert_int_equal(named, (int)workers);
  if (max)
    assert_int_equal(seen, (1ul << workers) - 1); /* -0 .. -(workers-1) */
}

static void test_thread_names(void **state) {
  (void)state;
  check_names("crawl", 3, "crawl-", 3);
  check_names(NULL, 2, "cf-worker-", 2);
  /* 15 bytes at most: a long prefix leaves no room for the index */
  check_names("abcdefghijklmnopqrstu", 2, "abcdefghijklmno", 0);
  /* after free the names are gone */
  assert_int_equal(count_threads_named("crawl-", 3, NULL), 0);
}

static _Atomic int inits;
static int init_ok(void *arg) {
  atomic_fetch_add(&inits, (int)(intptr_t)arg);
  return 0;
}

static void test_initializer(void **state) {
  (void)state;
  const size_t sizes[] = {1, 4, 8};
  for (int s = 0; s < 3; s++) {
    atomic_store(&inits, 0);
    cf_thread_pool_opts o = {.max_workers = sizes[s],
                             .initializer = init_ok,
                             .initarg = (void *)(intptr_t)10};
    cf_executor *ex;
    assert_int_equal(cf_thread_pool_new(&o, &ex), 0);
    cf_future *f;
    assert_int_equal(cf_submit(ex, identity, NULL, &f), 0);
    assert_int_equal(cf_future_result(f, 10, NULL), 0);
    cf_future_unref(f);
    cf_executor_free(ex);
    /* once per worker, with its argument */
    assert_int_equal(atomic_load(&inits), 10 * (int)sizes[s]);
  }
}

/* An initializer that blocks until the test lets it fail. */
static _Atomic int init_entered;
static int init_gated_fail(void *arg) {
  (void)arg;
  atomic_fetch_add(&init_entered, 1);
  latch_wait();
  return CF_EINVAL;
}

static int map_item_id(void *arg, void **out) {
  atomic_fetch_add(&ran, 1);
  *out = arg;
  return 0;
}

static void test_initializer_failure_breaks_pool(void **state) {
  (void)state;
  latch_reset();
  atomic_store(&init_entered, 0);
  atomic_store(&ran, 0);
  cf_thread_pool_opts o = {.max_workers = 2, .initializer = init_gated_fail};
  cf_executor *ex;
  assert_int_equal(cf_thread_pool_new(&o, &ex), 0);
  double t0 = now_s();
  while (atomic_load(&init_entered) < 2 && now_s() - t0 < 10)
    usleep(1000);
  assert_int_equal(atomic_load(&init_entered), 2);
  /* Not broken yet: these are accepted, and stay pending. */
  enum { N = 20 };
  cf_future *fs[N];
  for (int i = 0; i < N; i++)
    assert_int_equal(cf_submit(ex, count_run, NULL, &fs[i]), 0);
  blocked_waiter b = {.fs = &fs[N - 1], .n = 1};
  blocked_waiter bw = {.fs = fs, .n = N, .use_wait = true};
  pthread_t th, thw;
  assert_int_equal(pthread_create(&th, NULL, waiter_main, &b), 0);
  assert_int_equal(pthread_create(&thw, NULL, waiter_main, &bw), 0);
  latch_release(); /* the initializers fail now */
  for (int i = 0; i < N; i++) {
    assert_int_equal(cf_future_result(fs[i], 10, NULL), CF_EBROKEN);
    cf_error e;
    assert_int_equal(cf_future_exception(fs[i], 0, &e), 0);
    assert_int_equal(e.code, CF_EBROKEN);
    assert_non_null(e.message);
    assert_true(strlen(e.message) > 0);
    assert_false(cf_future_cancel(fs[i])); /* finished, not pending */
  }
  pthread_join(th, NULL);
  pthread_join(thw, NULL);
  assert_int_equal(b.rc, CF_EBROKEN);
  assert_int_equal(bw.rc, 0);
  /* once broken, submit and map say so */
  cf_future *f = (cf_future *)1;
  assert_int_equal(cf_submit(ex, identity, NULL, &f), CF_EBROKEN);
  assert_null(f);
  int xs[4] = {0};
  cf_map *m = (cf_map *)1;
  assert_int_equal(cf_map_array(ex, map_item_id, xs, 4, sizeof xs[0], NULL, &m),
                   CF_EBROKEN);
  assert_null(m);
  assert_int_equal(atomic_load(&ran), 0); /* no task ever ran */
  assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
  for (int i = 0; i < N; i++)
    cf_future_unref(fs[i]);
  cf_executor_free(ex);
}

/* Only the first of four initializers fails: the pool still breaks. */
static _Atomic int init_calls;
static int init_first_fails(void *arg) {
  (void)arg;
  return atomic_fetch_add(&init_calls, 1) == 0 ? CF_EINVAL : 0;
}

static void test_initializer_partial_failure(void **state) {
  (void)state;
  atomic_store(&init_calls, 0);
  cf_thread_pool_opts o = {.max_workers = 4, .initializer = init_first_fails};
  cf_executor *ex;
  assert_int_equal(cf_thread_pool_new(&o, &ex), 0);
  cf_future *f = NULL;
  int rc;
  double t0 = now_s();
  while ((rc = cf_submit(ex, identity, NULL, &f)) == 0 && now_s() - t0 < 10) {
    int r = cf_future_result(f, 10, NULL);
    assert_true(r == 0 || r == CF_EBROKEN); /* ran before the break, or not */
    cf_future_unref(f);
    usleep(100);
  }
  assert_int_equal(rc, CF_EBROKEN);
  cf_executor_free(ex);
  assert_int_equal(atomic_load(&init_calls), 4);
}

/* ---- shutdown ------------------------------------------------------------ */

typedef struct shutdown_call {
  cf_executor *ex;
  bool wait, cancel;
  int rc;
  _Atomic bool returned;
} shutdown_call;

static void *shutdown_main(void *p) {
  shutdown_call *s = p;
  s->rc = cf_executor_shutdown(s->ex, s->wait, s->cancel);
  atomic_store(&s->returned, true);
  return NULL;
}

static void test_shutdown_wait(void **state) {
  (void)state;
  cf_executor *ex = new_pool(2);
  latch_reset();
  atomic_store(&ran, 0);
  cf_future *running[2], *queued[20];
  for (int i = 0; i < 2; i++)
    assert_int_equal(cf_submit(ex, wait_latch, NULL, &running[i]), 0);
  wait_for_blocked(2);
  for (int i = 0; i < 20; i++)
    assert_int_equal(cf_submit(ex, count_run, NULL, &queued[i]), 0);
  shutdown_call s = {.ex = ex, .wait = true};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, shutdown_main, &s), 0);
  usleep(50000);
  /* two tasks are still blocked: shutdown(wait) cannot have returned */
  assert_false(atomic_load(&s.returned));
  cf_future *f = (cf_future *)1;
  double t0 = now_s();
  while (cf_submit(ex, identity, NULL, &f) == 0 && now_s() - t0 < 10) {
    cf_future_unref(f); /* (only before the shutdown thread got going) */
    usleep(1000);
  }
  assert_int_equal(cf_submit(ex, identity, NULL, &f), CF_ESHUTDOWN);
  assert_null(f);
  latch_release();
  pthread_join(th, NULL);
  assert_int_equal(s.rc, 0);
  /* everything, running and queued, ran before shutdown returned */
  assert_int_equal(atomic_load(&ran), 20);
  for (int i = 0; i < 20; i++) {
    assert_int_equal(cf_future_state_of(queued[i]), CF_FINISHED);
    cf_future_unref(queued[i]);
  }
  for (int i = 0; i < 2; i++) {
    assert_int_equal(cf_future_state_of(running[i]), CF_FINISHED);
    cf_future_unref(running[i]);
  }
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
  cf_future *f = (cf_future *)1;
  assert_int_equal(cf_submit(ex, identity, NULL, &f), CF_ESHUTDOWN);
  assert_null(f);
  for (int i = 0; i < 10; i++)
    assert_false(cf_future_done(queued[i])); /* still queued behind it */
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

static _Atomic int cancel_cbs;
static int count_cancel_cb(cf_future *f, void *arg) {
  (void)arg;
  if (cf_future_cancelled(f))
    atomic_fetch_add(&cancel_cbs, 1);
  return 0;
}

static void test_shutdown_cancel_futures(void **state) {
  (void)state;
  cf_executor *ex = new_pool(1);
  latch_reset();
  atomic_store(&ran, 0);
  atomic_store(&cancel_cbs, 0);
  enum { N = 50 };
  cf_future *running, *queued[N];
  assert_int_equal(cf_submit(ex, wait_latch, (void *)(intptr_t)9, &running), 0);
  for (int i = 0; i < N; i++) {
    assert_int_equal(cf_submit(ex, count_run, NULL, &queued[i]), 0);
    assert_int_equal(
        cf_future_add_done_callback(queued[i], count_cancel_cb, NULL), 0);
  }
  wait_for_blocked(1);
  /* threads block on queued futures: cancelling must wake them */
  blocked_waiter b = {.fs = &queued[N - 1], .n = 1, .rc = -999};
  blocked_waiter bw = {.fs = queued, .n = N, .use_wait = true, .rc = -999};
  pthread_t th, thw;
  assert_int_equal(pthread_create(&th, NULL, waiter_main, &b), 0);
  assert_int_equal(pthread_create(&thw, NULL, waiter_main, &bw), 0);
  usleep(20000);
  assert_int_equal(cf_executor_shutdown(ex, false, true), 0);
  pthread_join(th, NULL);
  pthread_join(thw, NULL);
  /* woken by the cancel itself, while the running task still blocks */
  assert_int_equal(b.rc, CF_ECANCELLED);
  assert_int_equal(bw.rc, 0);
  assert_false(cf_future_done(running));
  for (int i = 0; i < N; i++)
    assert_int_equal(cf_future_state_of(queued[i]), CF_CANCELLED);
  assert_int_equal(atomic_load(&cancel_cbs), N);
  latch_release();
  assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
  void *v;
  assert_int_equal(cf_future_result(running, 0, &v), 0); /* ran to the end */
  assert_int_equal((intptr_t)v, 9);
  assert_int_equal(atomic_load(&ran), 0);
  for (int i = 0; i < N; i++)
    cf_future_unref(queued[i]);
  cf_future_unref(running);
  cf_executor_free(ex);
}

/* Tasks queued in a busy worker's own deque (submitted from inside a task)
 * are cancelled too. */
enum { NKIDS = 20 };
static cf_executor *self_pool;
static cf_future *kids[NKIDS];
static _Atomic int kids_rc;
static int spawner(void *arg, void **out) {
  (void)arg;
  int rc = 0;
  for (int i = 0; i < NKIDS; i++) {
    int r = cf_submit(self_pool, count_run, NULL, &kids[i]);
    if (r && !rc)
      rc = r;
  }
  /* release: publishes kids[]; pairs with the test's acquire load. */
  atomic_store_explicit(&kids_rc, rc == 0 ? 1 : rc, memory_order_release);
  latch_wait(); /* blocks without helping: the kids stay queued */
  *out = NULL;
  return 0;
}

static void test_shutdown_cancels_worker_deques(void **state) {
  (void)state;
  self_pool = new_pool(1);
  latch_reset();
  atomic_store(&ran, 0);
  atomic_store(&kids_rc, 0);
  cf_future *sp;
  assert_int_equal(cf_submit(self_pool, spawner, NULL, &sp), 0);
  wait_for_blocked(1);
  assert_int_equal(atomic_load_explicit(&kids_rc, memory_order_acquire), 1);
  blocked_waiter b = {.fs = &kids[0], .n = 1, .rc = -999};
  blocked_waiter bw = {.fs = kids, .n = NKIDS, .use_wait = true, .rc = -999};
  pthread_t th, thw;
  assert_int_equal(pthread_create(&th, NULL, waiter_main, &b), 0);
  assert_int_equal(pthread_create(&thw, NULL, waiter_main, &bw), 0);
  usleep(20000);
  assert_int_equal(cf_executor_shutdown(self_pool, false, true), 0);
  pthread_join(th, NULL);
  pthread_join(thw, NULL);
  assert_int_equal(b.rc, CF_ECANCELLED);
  assert_int_equal(bw.rc, 0);
  assert_true(b.waited < 10 && bw.waited < 10); /* not the latch's 20 s */
  for (int i = 0; i < NKIDS; i++)
    assert_true(cf_future_cancelled(kids[i]));
  latch_release();
  assert_int_equal(cf_future_result(sp, 10, NULL), 0);
  cf_executor_free(self_pool);
  assert_int_equal(atomic_load(&ran), 0);
  for (int i = 0; i < NKIDS; i++)
    cf_future_unref(kids[i]);
  cf_future_unref(sp);
}

static int shutdown_self(void *arg, void **out) {
  (void)arg;
  *out = (void *)(intptr_t)cf_executor_shutdown(self_pool, true, false);
  return 0;
}

static int shutdown_nowait_self(void *arg, void **out) {
  (void)arg;
  *out = (void *)(intptr_t)cf_executor_shutdown(self_pool, false, false);
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
  /* EDEADLK did not shut the pool down */
  assert_int_equal(cf_submit(self_pool, identity, NULL, &f), 0);
  assert_int_equal(cf_future_result(f, 10, NULL), 0);
  cf_future_unref(f);
  /* wait=false from a worker is allowed, and shuts the pool down */
  cf_executor *other = new_pool(1);
  cf_executor *keep = self_pool;
  self_pool = other;
  assert_int_equal(cf_submit(other, shutdown_nowait_self, NULL, &f), 0);
  assert_int_equal(cf_future_result(f, 10, &v), 0);
  assert_int_equal((intptr_t)v, 0);
  cf_future_unref(f);
  f = (cf_future *)1;
  assert_int_equal(cf_submit(other, identity, NULL, &f), CF_ESHUTDOWN);
  assert_null(f);
  cf_executor_free(other);
  self_pool = keep;
  latch_reset();
  cf_future *blocker, *late;
  assert_int_equal(cf_submit(self_pool, wait_latch, NULL, &blocker), 0);
  wait_for_blocked(1);
  assert_int_equal(cf_submit(self_pool, submit_after_shutdown, NULL, &late), 0);
  /* shut down while `late` is queued: it still runs, its submit is refused */
  assert_int_equal(cf_executor_shutdown(self_pool, false, false), 0);
  latch_release();
  assert_int_equal(cf_future_result(late, 10, &v), 0);
  assert_int_equal((intptr_t)v, CF_ESHUTDOWN);
  cf_future_unref(late);
  cf_future_unref(blocker);
  cf_executor_free(self_pool);
}

static void test_shutdown_twice(void **state) {
  (void)state;
  cf_executor *ex = new_pool(2);
  latch_reset();
  cf_future *f;
  assert_int_equal(cf_submit(ex, wait_latch, NULL, &f), 0);
  wait_for_blocked(1);
  assert_int_equal(cf_executor_shutdown(ex, false, false), 0);
  assert_int_equal(cf_executor_shutdown(ex, false, true), 0);
  /* a later wait=true still waits */
  shutdown_call s = {.ex = ex, .wait = true};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, shutdown_main, &s), 0);
  usleep(50000);
  assert_false(atomic_load(&s.returned));
  latch_release();
  pthread_join(th, NULL);
  assert_int_equal(s.rc, 0);
  assert_true(cf_future_done(f));
  assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
  assert_int_equal(cf_executor_shutdown(ex, true, true), 0);
  cf_future *g = (cf_future *)1;
  assert_int_equal(cf_submit(ex, identity, NULL, &g), CF_ESHUTDOWN);
  assert_null(g);
  cf_future_unref(f);
  cf_executor_free(ex); /* after shutdown: fine */
  cf_executor_free(NULL);
  /* free without shutdown waits for the queued work */
  ex = new_pool(1);
  atomic_store(&ran, 0);
  cf_future *fs[50];
  for (int i = 0; i < 50; i++)
    assert_int_equal(cf_submit(ex, count_run, NULL, &fs[i]), 0);
  cf_executor_free(ex);
  assert_int_equal(atomic_load(&ran), 50);
  for (int i = 0; i < 50; i++) {
    assert_int_equal(cf_future_state_of(fs[i]), CF_FINISHED);
    cf_future_unref(fs[i]);
  }
}

/* ---- timeouts ------------------------------------------------------------ */

typedef struct timed {
  cf_future *f;
  double waited;
  int rc;
} timed;

static int wait_briefly(void *arg, void **out) {
  timed *t = arg;
  double t0 = now_s();
  t->rc = cf_future_result(t->f, 0.05, NULL);
  t->waited = now_s() - t0;
  *out = NULL;
  return 0;
}

/* Submits racing a shutdown, from outside threads: every submit either
 * fails with CF_ESHUTDOWN or returns a future that ends (ran or
 * cancelled); none is lost, none runs twice; a submit after shutdown
 * returned fails. With and without cancel_futures, many rounds. */
enum { RACERS = 3, RACE_MAX = 4000 };
typedef struct racer {
  cf_executor *ex;
  _Atomic bool *go;
  cf_future *fs[RACE_MAX];
  size_t nok, nshut;
  int other;
} racer;

static void *racer_main(void *arg) {
  racer *r = arg;
  while (!atomic_load(r->go))
    ;
  for (size_t i = 0; i < RACE_MAX; i++) {
    cf_future *f;
    int rc = cf_submit(r->ex, count_run, NULL, &f);
    if (rc == 0)
      r->fs[r->nok++] = f;
    else if (rc == CF_ESHUTDOWN)
      r->nshut++;
    else
      r->other = rc;
  }
  return NULL;
}

static void test_submit_shutdown_race(void **state) {
  (void)state;
  for (int round = 0; round < 40; round++) {
    cf_executor *ex = new_pool(1 + round % 3);
    atomic_store(&ran, 0);
    _Atomic bool go = false;
    static racer rs[RACERS];
    pthread_t th[RACERS];
    for (int k = 0; k < RACERS; k++) {
      rs[k] = (racer){.ex = ex, .go = &go};
      assert_int_equal(pthread_create(&th[k], NULL, racer_main, &rs[k]), 0);
    }
    atomic_store(&go, true);
    usleep((useconds_t)(round % 5) * 200);
    bool cancel = round % 2;
    assert_int_equal(cf_executor_shutdown(ex, true, cancel), 0);
    cf_future *late;
    assert_int_equal(cf_submit(ex, count_run, NULL, &late), CF_ESHUTDOWN);
    size_t accepted = 0, finished = 0, cancelled = 0;
    for (int k = 0; k < RACERS; k++) {
      pthread_join(th[k], NULL);
      assert_int_equal(rs[k].other, 0);
      assert_int_equal(rs[k].nok + rs[k].nshut, RACE_MAX);
      for (size_t i = 0; i < rs[k].nok; i++) {
        cf_future *f = rs[k].fs[i];
        /* submits after shutdown returned were refused, so every accepted
         * one is settled once the racers are joined: bounded wait */
        void *v;
        int rc = cf_future_result(f, 10, &v);
        assert_true(rc == 0 || rc == CF_ECANCELLED);
        finished += rc == 0;
        cancelled += rc == CF_ECANCELLED;
        if (!cancel)
          assert_int_equal(rc, 0); /* nothing cancels them but a racer */
        cf_future_unref(f);
      }
      accepted += rs[k].nok;
    }
    assert_int_equal(finished + cancelled, accepted);
    assert_int_equal(atomic_load(&ran), finished); /* each ran once */
    cf_executor_free(ex);
    assert_int_equal(atomic_load(&ran), finished);
  }
}

/* A task that blocks its thread waiting for a child it submitted while
 * every worker was busy (so the child stayed private to its worker: see
 * executor/deque.h) must not wait for ever: the child is made stealable
 * before a cfutures wait blocks, and an idle worker seizes it from a
 * worker blocked in a system call. 2 workers: one busy for 100 ms, the
 * other runs the parent. */
static cf_executor *blk_pool;
static cf_sem *blk_sem;
static int blk_pipe[2];
static _Atomic bool blk_parent_started;

static int busy_100ms(void *arg, void **out) {
  (void)arg;
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  /* until the parent runs (bounded: 10 s, so that a broken pool fails the
   * test instead of hanging it) */
  do
    clock_gettime(CLOCK_MONOTONIC, &b);
  while (!atomic_load(&blk_parent_started) && b.tv_sec - a.tv_sec < 10);
  clock_gettime(CLOCK_MONOTONIC, &a);
  do /* busy, not blocked: the worker neither searches nor sleeps */
    clock_gettime(CLOCK_MONOTONIC, &b);
  while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) <
         100000000L);
  *out = NULL;
  return 0;
}

static int child_posts(void *arg, void **out) {
  if (arg) {
    char c = 'x';
    ssize_t n = write(blk_pipe[1], &c, 1); /* if not, the parent times out */
    (void)n;
  } else {
    cf_sem_release(blk_sem, 1);
  }
  *out = NULL;
  return 0;
}

static int parent_blocks(void *arg, void **out) {
  cf_future *c;
  int rc = cf_submit(blk_pool, child_posts, arg, &c);
  atomic_store(&blk_parent_started, true);
  if (rc == 0 && arg) { /* a system call: bounded by poll's 10 s */
    struct pollfd pfd = {.fd = blk_pipe[0], .events = POLLIN};
    char ch;
    rc = poll(&pfd, 1, 10000) == 1 && read(blk_pipe[0], &ch, 1) == 1
             ? 0
             : CF_ETIMEDOUT;
  } else if (rc == 0) {
    rc = cf_sem_acquire(blk_sem, 10); /* blocks the thread */
  }
  if (c)
    cf_future_unref(c);
  *out = NULL;
  return rc;
}

static void test_blocked_task_children(void **state) {
  (void)state;
  assert_int_equal(cf_sem_new(false, 0, &blk_sem), 0);
  assert_int_equal(pipe(blk_pipe), 0);
  for (int round = 0; round < 6; round++) {
    blk_pool = new_pool(2);
    atomic_store(&blk_parent_started, false);
    cf_future *q, *par;
    assert_int_equal(cf_submit(blk_pool, busy_100ms, NULL, &q), 0);
    usleep(10000);                            /* q is running */
    void *how = round % 2 ? (void *)1 : NULL; /* pipe, or semaphore */
    assert_int_equal(cf_submit(blk_pool, parent_blocks, how, &par), 0);
    assert_int_equal(cf_future_result(par, 20, NULL), 0);
    assert_int_equal(cf_future_result(q, 20, NULL), 0);
    cf_future_unref(par);
    cf_future_unref(q);
    cf_executor_free(blk_pool);
  }
  close(blk_pipe[0]);
  close(blk_pipe[1]);
  cf_sem_free(blk_sem);
}

static void test_result_timeout(void **state) {
  (void)state;
  cf_executor *ex = new_pool(2);
  latch_reset();
  cf_future *blocked;
  assert_int_equal(cf_submit(ex, wait_latch, NULL, &blocked), 0);
  wait_for_blocked(1);
  double t0 = now_s();
  assert_int_equal(cf_future_result(blocked, 0.05, NULL), CF_ETIMEDOUT);
  double dt = now_s() - t0;
  assert_true(dt >= 0.05 && dt < 1.0);
  assert_int_equal(cf_future_result(blocked, 0, NULL), CF_ETIMEDOUT);
  /* the same from a worker (which helps, then parks with the deadline) */
  timed t = {.f = blocked};
  cf_future *f;
  assert_int_equal(cf_submit(ex, wait_briefly, &t, &f), 0);
  assert_int_equal(cf_future_result(f, 10, NULL), 0);
  assert_int_equal(t.rc, CF_ETIMEDOUT);
  assert_true(t.waited >= 0.05 && t.waited < 1.0);
  latch_release();
  assert_int_equal(cf_future_result(blocked, 10, NULL), 0);
  cf_future_unref(f);
  cf_future_unref(blocked);
  cf_executor_free(ex);
}

/* ---- cancellation races -------------------------------------------------- */

typedef struct slot {
  _Atomic int ran, cb;
  unsigned delay;
} slot;

static void spin(unsigned n) {
  for (volatile unsigned i = 0; i < n; i++) {
  }
}

static int slot_task(void *arg, void **out) {
  slot *s = arg;
  atomic_fetch_add(&s->ran, 1);
  spin(s->delay);
  *out = s;
  return 0;
}

static int slot_cb(cf_future *f, void *arg) {
  (void)f;
  atomic_fetch_add(&((slot *)arg)->cb, 1);
  return 0;
}

enum { NRACE = 4000 };
typedef struct race {
  cf_future *fs[NRACE];
  _Atomic int published;
  uint64_t seed;
} race;

static uint64_t xorshift(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* A second canceller racing the test thread and the workers. */
static void *canceller(void *p) {
  race *r = p;
  int done = 0;
  while (done < NRACE) {
    int n = atomic_load_explicit(&r->published, memory_order_acquire);
    for (; done < n; done++) {
      spin((unsigned)(xorshift(&r->seed) % 500));
      if (xorshift(&r->seed) % 4 == 0)
        cf_future_cancel(r->fs[done]); /* borrowed: the test holds it */
    }
  }
  return NULL;
}

static void test_cancel_races(void **state) {
  (void)state;
  const size_t sizes[] = {1, 2, 4};
  slot *slots = calloc(NRACE, sizeof *slots);
  race *r = calloc(1, sizeof *r);
  assert_non_null(slots);
  assert_non_null(r);
  for (int s = 0; s < 3; s++) {
    cf_executor *ex = new_pool(sizes[s]);
    memset(slots, 0, NRACE * sizeof *slots);
    atomic_store(&r->published, 0);
    r->seed = 0x1234567u + (uint64_t)s;
    uint64_t seed = 0xabcdefu + (uint64_t)s;
    bool *mine = calloc(NRACE, sizeof *mine);
    assert_non_null(mine);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, canceller, r), 0);
    for (int i = 0; i < NRACE; i++) {
      slots[i].delay = (unsigned)(xorshift(&seed) % 2000);
      assert_int_equal(cf_submit(ex, slot_task, &slots[i], &r->fs[i]), 0);
      assert_int_equal(
          cf_future_add_done_callback(r->fs[i], slot_cb, &slots[i]), 0);
      /* release: publishes fs[i]; pairs with the canceller's acquire. */
      atomic_store_explicit(&r->published, i + 1, memory_order_release);
      spin((unsigned)(xorshift(&seed) % 1500));
      if (xorshift(&seed) % 2)
        mine[i] = cf_future_cancel(r->fs[i]);
    }
    pthread_join(th, NULL);
    int finished = 0, cancelled = 0;
    for (int i = 0; i < NRACE; i++) {
      void *v = NULL;
      int rc = cf_future_result(r->fs[i], 30, &v);
      cf_future_state st = cf_future_state_of(r->fs[i]);
      if (rc == 0) {
        finished++;
        assert_int_equal(st, CF_FINISHED);
        assert_ptr_equal(v, &slots[i]);
        assert_false(mine[i]); /* a successful cancel never finishes */
      } else {
        assert_int_equal(rc, CF_ECANCELLED);
        assert_int_equal(st, CF_CANCELLED);
        cancelled++;
      }
    }
    cf_executor_free(ex); /* joins the workers: every callback has run */
    for (int i = 0; i < NRACE; i++) {
      bool fin = cf_future_state_of(r->fs[i]) == CF_FINISHED;
      if (atomic_load(&slots[i].ran) != (fin ? 1 : 0))
        fail_msg("future %d: %s but its task ran %d times", i,
                 fin ? "FINISHED" : "CANCELLED", atomic_load(&slots[i].ran));
      if (atomic_load(&slots[i].cb) != 1)
        fail_msg("future %d: callback ran %d times", i,
                 atomic_load(&slots[i].cb));
      cf_future_unref(r->fs[i]);
    }
    assert_int_equal(finished + cancelled, NRACE);
    free(mine);
  }
  free(r);
  free(slots);
}

/* ---- callbacks, nesting, helping ----------------------------------------- */

typedef struct where {
  pthread_t thread;
  char name[16];
  _Atomic int calls;
} where;

static int where_cb(cf_future *f, void *arg) {
  (void)f;
  where *w = arg;
  w->thread = pthread_self();
  if (pthread_getname_np(pthread_self(), w->name, sizeof w->name) != 0)
    w->name[0] = '\0';
  atomic_fetch_add(&w->calls, 1);
  return 0;
}

static void test_callbacks_on_workers(void **state) {
  (void)state;
  cf_thread_pool_opts o = {.max_workers = 2, .thread_name_prefix = "cbpool"};
  cf_executor *ex;
  assert_int_equal(cf_thread_pool_new(&o, &ex), 0);
  latch_reset();
  enum { N = 8 };
  cf_future *fs[N];
  where ws[N];
  memset(ws, 0, sizeof ws);
  for (int i = 0; i < N; i++) {
    assert_int_equal(cf_submit(ex, wait_latch, NULL, &fs[i]), 0);
    assert_int_equal(cf_future_add_done_callback(fs[i], where_cb, &ws[i]), 0);
  }
  latch_release();
  for (int i = 0; i < N; i++)
    assert_int_equal(cf_future_result(fs[i], 10, NULL), 0);
  cf_executor_free(ex); /* callbacks have run once the pool is joined */
  for (int i = 0; i < N; i++) {
    assert_int_equal(atomic_load(&ws[i].calls), 1);
    assert_false(pthread_equal(ws[i].thread, pthread_self()));
    assert_memory_equal(ws[i].name, "cbpool-", 7);
  }
  /* on a done future the callback runs at once, on the caller */
  where now;
  memset(&now, 0, sizeof now);
  assert_int_equal(cf_future_add_done_callback(fs[0], where_cb, &now), 0);
  assert_int_equal(atomic_load(&now.calls), 1);
  assert_true(pthread_equal(now.thread, pthread_self()));
  for (int i = 0; i < N; i++)
    cf_future_unref(fs[i]);
}

/* A task that submits children without waiting and hands their futures
 * out: they run on the pool (a worker named "inner-*") and complete. */
static cf_executor *inner_pool;
static int child_name(void *arg, void **out) {
  char *name = arg;
  if (pthread_getname_np(pthread_self(), name, 16) != 0)
    name[0] = '\0';
  *out = name;
  return 0;
}

enum { NCHILD = 64 };
typedef struct family {
  char names[NCHILD][16];
  cf_future *fs[NCHILD];
  int rc;
} family;

static int submit_children(void *arg, void **out) {
  family *fam = arg;
  fam->rc = 0;
  for (int i = 0; i < NCHILD; i++) {
    int rc = cf_submit(inner_pool, child_name, fam->names[i], &fam->fs[i]);
    if (rc) {
      fam->rc = rc;
      fam->fs[i] = NULL;
    }
  }
  *out = fam;
  return 0;
}

static void test_submit_from_task(void **state) {
  (void)state;
  for (size_t workers = 1; workers <= 4; workers *= 2) {
    cf_thread_pool_opts o = {.max_workers = workers,
                             .thread_name_prefix = "inner"};
    assert_int_equal(cf_thread_pool_new(&o, &inner_pool), 0);
    family *fam = calloc(1, sizeof *fam);
    assert_non_null(fam);
    cf_future *f;
    assert_int_equal(cf_submit(inner_pool, submit_children, fam, &f), 0);
    assert_int_equal(cf_future_result(f, 10, NULL), 0);
    assert_int_equal(fam->rc, 0);
    for (int i = 0; i < NCHILD; i++) {
      void *v;
      assert_int_equal(cf_future_result(fam->fs[i], 10, &v), 0);
      assert_ptr_equal(v, fam->names[i]);
      assert_memory_equal(fam->names[i], "inner-", 6);
      cf_future_unref(fam->fs[i]);
    }
    cf_future_unref(f);
    free(fam);
    cf_executor_free(inner_pool);
  }
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

/* cf_wait and as_completed from inside a task on the same pool's futures. */
enum { FAN = 8 };
static int fan_out(void *arg, void **out) {
  intptr_t k = (intptr_t)arg;
  cf_future *fs[FAN];
  for (int i = 0; i < FAN; i++)
    if (cf_submit(fib_pool, sleepy, (void *)(intptr_t)(100 * i), &fs[i]))
      return CF_ENOMEM;
  intptr_t sum = 0;
  int rc = 0;
  if (k == 0 || k == 1) {
    bool done[FAN];
    if (k == 1) { /* first completed: at least one is done on return */
      if (cf_wait(fs, FAN, 30, CF_FIRST_COMPLETED, done))
        rc = cf_fail(CF_ETIMEDOUT, "FIRST_COMPLETED timed out");
      int any = 0;
      for (int i = 0; i < FAN; i++)
        any += done[i];
      if (!rc && any == 0)
        rc = cf_fail(CF_EINVAL, "FIRST_COMPLETED returned with none done");
    }
    if (!rc && cf_wait(fs, FAN, 30, CF_ALL_COMPLETED, done))
      rc = cf_fail(CF_ETIMEDOUT, "ALL_COMPLETED timed out");
    for (int i = 0; !rc && i < FAN; i++) {
      void *v;
      if (!done[i] || cf_future_result(fs[i], 0, &v) != 0)
        rc = cf_fail(CF_EINVAL, "future %d not done after ALL_COMPLETED", i);
      else
        sum += (intptr_t)v;
    }
  } else {
    cf_as_completed *it;
    if (cf_as_completed_new(fs, FAN, 30, &it))
      return CF_ENOMEM;
    cf_future *f;
    int n = 0, r;
    while ((r = cf_as_completed_next(it, &f)) == 0) {
      void *v;
      if (cf_future_result(f, 0, &v) != 0)
        rc = cf_fail(CF_EINVAL, "as_completed yielded an undone future");
      sum += (intptr_t)v;
      n++;
    }
    cf_as_completed_free(it);
    if (!rc && (r != CF_EDONE || n != FAN))
      rc = cf_fail(CF_EINVAL, "as_completed: rc %d after %d", r, n);
  }
  for (int i = 0; i < FAN; i++)
    cf_future_unref(fs[i]);
  *out = (void *)sum;
  return rc;
}

static void test_wait_inside_tasks(void **state) {
  (void)state;
  const size_t sizes[] = {1, 2, 4, 8};
  for (size_t s = 0; s < 4; s++) {
    fib_pool = new_pool(sizes[s]);
    for (intptr_t k = 0; k < 3; k++) {
      cf_future *f[2];
      /* two at once, so waiting tasks also compete with each other */
      for (int j = 0; j < 2; j++)
        assert_int_equal(cf_submit(fib_pool, fan_out, (void *)k, &f[j]), 0);
      for (int j = 0; j < 2; j++) {
        void *v;
        int rc = cf_future_result(f[j], 60, &v);
        if (rc) {
          cf_error e;
          cf_future_exception(f[j], 0, &e);
          fail_msg("workers=%zu k=%ld: %s", sizes[s], (long)k, e.message);
        }
        assert_int_equal((intptr_t)v, 100 * 28);
        cf_future_unref(f[j]);
      }
    }
    cf_executor_free(fib_pool);
  }
}

/* ---- map ----------------------------------------------------------------- */

static int square_or_fail(void *arg, void **out) {
  int x = *(int *)arg;
  usleep((useconds_t)((1000 - x) % 7) * 50); /* finish out of order */
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
  assert_int_equal(cf_map_error(NULL, &e), CF_EINVAL);
  assert_int_equal(cf_map_error(m, NULL), CF_EINVAL);
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

  /* a window on an array */
  cf_map_opts win = {.window = 3};
  assert_int_equal(
      cf_map_array(ex, square_or_fail, xs, 50, sizeof xs[0], &win, &m), 0);
  for (int i = 0; i < 50; i++)
    assert_int_equal(cf_map_next(m, &v), i % 10 == 3 ? CF_EFAILED : 0);
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  cf_map_free(m);

  /* empty input (NULL items allowed then) */
  assert_int_equal(
      cf_map_array(ex, square_or_fail, xs, 0, sizeof xs[0], NULL, &m), 0);
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  cf_map_free(m);
  assert_int_equal(cf_map_array(ex, square_or_fail, NULL, 0, 4, NULL, &m), 0);
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  cf_map_free(m);
  /* bad arguments */
  m = (cf_map *)1;
  assert_int_equal(cf_map_array(ex, square_or_fail, NULL, 3, 4, NULL, &m),
                   CF_EINVAL);
  assert_null(m);
  assert_int_equal(cf_map_array(ex, square_or_fail, xs, 3, 0, NULL, &m),
                   CF_EINVAL);
  assert_int_equal(cf_map_array(NULL, square_or_fail, xs, 3, 4, NULL, &m),
                   CF_EINVAL);
  assert_int_equal(cf_map_array(ex, NULL, xs, 3, 4, NULL, &m), CF_EINVAL);
  assert_int_equal(cf_map_array(ex, square_or_fail, xs, 3, 4, NULL, NULL),
                   CF_EINVAL);
  cf_map_opts bad = {.use_timeout = true, .timeout_s = NAN};
  assert_int_equal(cf_map_array(ex, square_or_fail, xs, 3, 4, &bad, &m),
                   CF_EINVAL);
  assert_int_equal(cf_map_next(NULL, &v), CF_EINVAL);
  cf_map_free(NULL);
  /* after shutdown */
  assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
  m = (cf_map *)1;
  assert_int_equal(cf_map_array(ex, square_or_fail, xs, 3, 4, NULL, &m),
                   CF_ESHUTDOWN);
  assert_null(m);
  cf_executor_free(ex);
}

static int slow_item(void *arg, void **out) {
  usleep(50000);
  atomic_fetch_add(&ran, 1);
  *out = arg;
  return 0;
}

static void test_map_timeout(void **state) {
  (void)state;
  cf_executor *ex = new_pool(1);
  int xs[40] = {0};
  /* 40 items of 50 ms on one worker need 2 s; the map gets 100 ms */
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
  /* The rest were cancelled at the deadline, not at cf_map_free: beyond
   * those consumed, only the item running at the deadline (and, had the
   * cancel been slow, the next one or two) runs, however long we wait. */
  usleep(300000); /* six items' worth */
  assert_true(atomic_load(&ran) <= got + 3);
  cf_map_free(m);
  cf_executor_shutdown(ex, true, false);
  assert_true(atomic_load(&ran) <= got + 3);
  cf_executor_free(ex);
}

/* The item numbered `block_at` blocks on the latch; the others count. */
static int block_at;
static int blocks_at(void *arg, void **out) {
  if (*(int *)arg == block_at)
    latch_wait();
  else
    atomic_fetch_add(&ran, 1);
  *out = arg;
  return 0;
}

typedef struct map_freer {
  cf_map *m;
  _Atomic bool returned;
} map_freer;

static void *map_free_main(void *p) {
  map_freer *fr = p;
  cf_map_free(fr->m);
  atomic_store(&fr->returned, true);
  return NULL;
}

static void test_map_free_cancels(void **state) {
  (void)state;
  int xs[40];
  for (int i = 0; i < 40; i++)
    xs[i] = i;
  /* One worker. Item 0 (then item 5) blocks the worker; freeing the map
   * then cancels every later item: exactly the earlier ones ran. */
  for (block_at = 0; block_at <= 5; block_at += 5) {
    cf_executor *ex = new_pool(1);
    latch_reset();
    atomic_store(&ran, 0);
    cf_map *m;
    assert_int_equal(
        cf_map_array(ex, blocks_at, xs, 40, sizeof xs[0], NULL, &m), 0);
    void *v;
    for (int i = 0; i < block_at; i++) {
      assert_int_equal(cf_map_next(m, &v), 0);
      assert_int_equal(*(int *)v, i);
    }
    wait_for_blocked(1);
    /* cf_map_free cancels the rest at once, then waits for the running
     * item (which may still read the input) before it returns */
    map_freer fr = {.m = m};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, map_free_main, &fr), 0);
    /* Long enough for the freeing thread to have cancelled the rest, even
     * in a sanitizer build on a loaded machine: 50 ms once was not (all 39
     * items ran, ASan build, other jobs running). */
    usleep(300000);
    assert_false(atomic_load(&fr.returned));
    latch_release();
    pthread_join(th, NULL);
    assert_int_equal(atomic_load(&ran), block_at); /* the rest never ran */
    cf_executor_free(ex);
    assert_int_equal(atomic_load(&ran), block_at);
  }
}

/* A lazy generator: items 0..limit-1, an error at `fail_at`. The consumer
 * counts its cf_map_next calls in `calls` before each call; the generator
 * records the largest number of items it handed out whose results the
 * consumer has not asked for yet (the tasks in flight). */
typedef struct gen {
  intptr_t next, limit, fail_at;
  intptr_t calls; /* cf_map_next calls entered: results taken or being taken */
  intptr_t max_in_flight;
} gen;

static int gen_next(void *state, void **item) {
  gen *g = state;
  if (g->next == g->fail_at)
    return CF_EINVAL;
  if (g->next >= g->limit)
    return CF_EDONE;
  *item = (void *)g->next++;
  intptr_t in_flight = g->next - g->calls;
  if (in_flight > g->max_in_flight)
    g->max_in_flight = in_flight;
  return 0;
}

static int gen_task(void *arg, void **out) {
  *out = arg;
  return 0;
}

static void drain_gen(cf_map *m, gen *g) {
  void *v;
  int rc;
  for (;;) {
    g->calls++;
    if ((rc = cf_map_next(m, &v)) != 0)
      break;
    assert_int_equal((intptr_t)v, g->calls - 1);
  }
  assert_int_equal(rc, CF_EDONE);
  assert_int_equal(g->calls - 1, g->limit);
}

static void test_map_iter_window(void **state) {
  (void)state;
  cf_executor *ex = new_pool(2);
  gen g = {.limit = 20000, .fail_at = -1};
  cf_map_opts o = {.window = 8};
  cf_map *m;
  assert_int_equal(cf_map_iter(ex, gen_task, gen_next, &g, &o, &m), 0);
  /* the first fill is the window, not the input */
  assert_int_equal(g.next, 8);
  drain_gen(m, &g);
  assert_int_equal(g.max_in_flight, 8);
  cf_map_free(m);

  /* default window: twice the workers, at least 16 */
  gen g1 = {.limit = 5000, .fail_at = -1};
  assert_int_equal(cf_map_iter(ex, gen_task, gen_next, &g1, NULL, &m), 0);
  drain_gen(m, &g1);
  assert_int_equal(g1.max_in_flight, 16);
  cf_map_free(m);

  /* window 1: one at a time */
  gen g2 = {.limit = 100, .fail_at = -1};
  o.window = 1;
  assert_int_equal(cf_map_iter(ex, gen_task, gen_next, &g2, &o, &m), 0);
  drain_gen(m, &g2);
  assert_int_equal(g2.max_in_flight, 1);
  cf_map_free(m);
  cf_executor_free(ex);
}

static void test_map_iter_errors(void **state) {
  (void)state;
  cf_executor *ex = new_pool(2);
  cf_map *m;
  void *v;
  /* the generator's error surfaces after the earlier items, then the end */
  gen g = {.limit = 100, .fail_at = 10};
  assert_int_equal(cf_map_iter(ex, gen_task, gen_next, &g, NULL, &m), 0);
  for (intptr_t i = 0; i < 10; i++) {
    assert_int_equal(cf_map_next(m, &v), 0);
    assert_int_equal((intptr_t)v, i);
  }
  assert_int_equal(cf_map_next(m, &v), CF_EINVAL);
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  cf_map_free(m);
  /* ... also when it fails at once */
  gen g0 = {.limit = 100, .fail_at = 0};
  assert_int_equal(cf_map_iter(ex, gen_task, gen_next, &g0, NULL, &m), 0);
  assert_int_equal(cf_map_next(m, &v), CF_EINVAL);
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  cf_map_free(m);
  /* an empty input */
  gen ge = {.limit = 0, .fail_at = -1};
  assert_int_equal(cf_map_iter(ex, gen_task, gen_next, &ge, NULL, &m), 0);
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  cf_map_free(m);
  /* bad arguments */
  m = (cf_map *)1;
  assert_int_equal(cf_map_iter(ex, gen_task, NULL, &g, NULL, &m), CF_EINVAL);
  assert_null(m);
  assert_int_equal(cf_map_iter(NULL, gen_task, gen_next, &g, NULL, &m),
                   CF_EINVAL);
  assert_int_equal(cf_map_iter(ex, NULL, gen_next, &g, NULL, &m), CF_EINVAL);
  assert_int_equal(cf_map_iter(ex, gen_task, gen_next, &g, NULL, NULL),
                   CF_EINVAL);
  cf_map_opts bad = {.use_timeout = true, .timeout_s = NAN};
  assert_int_equal(cf_map_iter(ex, gen_task, gen_next, &g, &bad, &m),
                   CF_EINVAL);
  /* after shutdown: refused by the call, or by the first cf_map_next */
  assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
  gen gs = {.limit = 10, .fail_at = -1};
  int rc = cf_map_iter(ex, gen_task, gen_next, &gs, NULL, &m);
  if (rc == 0) {
    assert_int_equal(cf_map_next(m, &v), CF_ESHUTDOWN);
    assert_int_equal(cf_map_next(m, &v), CF_EDONE);
    cf_map_free(m);
  } else {
    assert_int_equal(rc, CF_ESHUTDOWN);
  }
  cf_executor_free(ex);
}

/* An endless generator of slow items with a deadline: the timeout counts
 * from cf_map_iter. */
static int endless_next(void *state, void **item) {
  intptr_t *n = state;
  *item = (void *)(*n)++;
  return 0;
}

static void test_map_iter_timeout(void **state) {
  (void)state;
  cf_executor *ex = new_pool(2);
  intptr_t n = 0;
  atomic_store(&ran, 0);
  cf_map_opts o = {.use_timeout = true, .timeout_s = 0.15, .window = 4};
  cf_map *m;
  double t0 = now_s();
  assert_int_equal(cf_map_iter(ex, slow_item, endless_next, &n, &o, &m), 0);
  void *v;
  intptr_t got = 0;
  int rc;
  while ((rc = cf_map_next(m, &v)) == 0) {
    assert_int_equal((intptr_t)v, got);
    got++;
  }
  double dt = now_s() - t0;
  assert_int_equal(rc, CF_ETIMEDOUT);
  assert_true(dt >= 0.15 && dt < 1.0);
  assert_true(n - got <= 4); /* never more than the window outstanding */
  cf_map_free(m);
  cf_executor_free(ex);
  assert_true(atomic_load(&ran) <= n);
}

/* ---- outside tasks start in submission order ---------------------------- */

enum { FIFO_N = 20 };
static cf_event *fifo_gate[2];
static _Atomic int fifo_gates_in, fifo_first_started, fifo_done, fifo_seq;
static int fifo_order[FIFO_N];

/* Holds its worker until its gate opens (a blocking wait: the thread). */
static int fifo_gate_task(void *arg, void **out) {
  atomic_fetch_add(&fifo_gates_in, 1);
  *out = NULL;
  return cf_event_wait(fifo_gate[(intptr_t)arg], 20);
}

/* Task 0 keeps its worker busy until every other task ran; the others
 * record the order they started in. */
static int fifo_task(void *arg, void **out) {
  intptr_t i = (intptr_t)arg;
  *out = NULL;
  if (i == 0) {
    atomic_store(&fifo_first_started, 1);
    double t0 = now_s();
    while (atomic_load(&fifo_done) < FIFO_N - 1 && now_s() - t0 < 10)
      usleep(1000);
    return 0;
  }
  fifo_order[i] = atomic_fetch_add(&fifo_seq, 1);
  atomic_fetch_add(&fifo_done, 1);
  return 0;
}

/* Two workers, both held by gates while 20 tasks queue up; one is let go
 * (it takes the tasks from outside and runs task 0, which holds it), then
 * the other: it must start tasks 1..19 in order, not newest first. */
static void test_outside_fifo_order(void **state) {
  (void)state;
  for (int round = 0; round < 3; round++) {
    cf_executor *ex = new_pool(2);
    atomic_store(&fifo_gates_in, 0);
    atomic_store(&fifo_first_started, 0);
    atomic_store(&fifo_done, 0);
    atomic_store(&fifo_seq, 0);
    cf_future *gates[2], *fs[FIFO_N];
    for (intptr_t g = 0; g < 2; g++) {
      assert_int_equal(cf_event_new(false, &fifo_gate[g]), 0);
      assert_int_equal(cf_submit(ex, fifo_gate_task, (void *)g, &gates[g]), 0);
    }
    double t0 = now_s();
    while (atomic_load(&fifo_gates_in) < 2 && now_s() - t0 < 10)
      usleep(1000);
    assert_int_equal(atomic_load(&fifo_gates_in), 2);
    for (intptr_t i = 0; i < FIFO_N; i++)
      assert_int_equal(cf_submit(ex, fifo_task, (void *)i, &fs[i]), 0);
    cf_event_set(fifo_gate[0]);
    while (!atomic_load(&fifo_first_started) && now_s() - t0 < 10)
      usleep(1000);
    assert_true(atomic_load(&fifo_first_started));
    cf_event_set(fifo_gate[1]);
    for (int i = 0; i < FIFO_N; i++) {
      assert_int_equal(cf_future_result(fs[i], 20, NULL), 0);
      cf_future_unref(fs[i]);
    }
    for (int i = 2; i < FIFO_N; i++)
      if (fifo_order[i] < fifo_order[i - 1])
        fail_msg("round %d: task %d started before task %d", round, i, i - 1);
    cf_executor_free(ex);
    for (int g = 0; g < 2; g++) {
      cf_future_unref(gates[g]);
      cf_event_free(fifo_gate[g]);
    }
  }
}

/* ---- a wake from outside, then the pool freed at once ------------------ */

static int await_promise(void *arg, void **out) {
  return cf_future_result(arg, 10, out);
}

static void *complete_promise(void *arg) {
  cf_future_set_result(arg, (void *)(intptr_t)7, NULL);
  return NULL;
}

/* A task waits for a future that a plain thread completes; the main
 * thread frees the pool as soon as the task's result is in. The thread
 * that completed the future made the task's fiber ready and may still be
 * looking at the pool (for a worker to wake) when the fiber has run to
 * its end: the pool must not be freed under it (ASan: a use after free,
 * TSan: a race with free). The waiting side waits for its waker to be
 * done (cf__node_settle), as core/netpoll.c's waits do for the poller. */
static void test_free_right_after_an_outside_wake(void **state) {
  (void)state;
  for (int round = 0; round < 500; round++) {
    cf_executor *ex = new_pool(1);
    cf_future *promise = cf_future_new();
    assert_non_null(promise);
    cf_future *f;
    assert_int_equal(cf_submit(ex, await_promise, promise, &f), 0);
    if (round % 2)
      sched_yield(); /* sometimes the task waits first */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, complete_promise, promise), 0);
    void *v;
    assert_int_equal(cf_future_result(f, 10, &v), 0);
    assert_int_equal((intptr_t)v, 7);
    cf_executor_free(ex);
    pthread_join(th, NULL);
    cf_future_unref(f);
    cf_future_unref(promise);
  }
}

/* ---- resumed fibers do not starve new tasks ----------------------------- */

#define PP_ROUNDS 100000
static cf_future **pp; /* pp[2k]: A waits, B completes; pp[2k+1]: B waits */
static _Atomic long pp_rounds;
static _Atomic bool pp_stop;
static _Atomic long marker_saw = -1;

static int ping(void *arg, void **out) {
  (void)arg;
  (void)out;
  for (long k = 0; k < PP_ROUNDS / 2; k++) {
    if (cf_future_result(pp[2 * k], 30, NULL) != 0)
      return CF_ETIMEDOUT;
    atomic_fetch_add(&pp_rounds, 1);
    cf_future_set_result(pp[2 * k + 1], NULL, NULL);
    if (atomic_load(&pp_stop))
      break;
  }
  return 0;
}

static int pong(void *arg, void **out) {
  (void)arg;
  (void)out;
  /* Stops only right after completing ping's next future: ping, which
   * checks the flag after completing ours, never waits in vain. */
  for (long k = 0; k < PP_ROUNDS / 2; k++) {
    cf_future_set_result(pp[2 * k], NULL, NULL);
    if (atomic_load(&pp_stop))
      break;
    if (cf_future_result(pp[2 * k + 1], 30, NULL) != 0)
      return CF_ETIMEDOUT;
  }
  return 0;
}

static int marker(void *arg, void **out) {
  (void)arg;
  (void)out;
  atomic_store(&marker_saw, atomic_load(&pp_rounds));
  atomic_store(&pp_stop, true);
  return 0;
}

/* One worker, two tasks that wake each other without end (each wake puts
 * the other's fiber on the ready queue, so the queue is never empty when
 * the worker looks), and a task submitted meanwhile: it runs while they
 * go on, not once they are done (see FAIR_RESUMES). */
static void test_resumes_do_not_starve_new_tasks(void **state) {
  (void)state;
  pp = calloc(PP_ROUNDS, sizeof *pp);
  assert_non_null(pp);
  for (long i = 0; i < PP_ROUNDS; i++)
    assert_non_null(pp[i] = cf_future_new());
  atomic_store(&pp_rounds, 0);
  atomic_store(&pp_stop, false);
  atomic_store(&marker_saw, -1);
  cf_executor *ex = new_pool(1);
  cf_future *a, *b, *m;
  assert_int_equal(cf_submit(ex, ping, NULL, &a), 0);
  assert_int_equal(cf_submit(ex, pong, NULL, &b), 0);
  double until = now_s() + 20;
  while (atomic_load(&pp_rounds) < 100 && now_s() < until)
    usleep(100);
  assert_true(atomic_load(&pp_rounds) >= 100);
  assert_int_equal(cf_submit(ex, marker, NULL, &m), 0);
  assert_int_equal(cf_future_result(m, 30, NULL), 0);
  assert_int_equal(cf_future_result(a, 30, NULL), 0);
  assert_int_equal(cf_future_result(b, 30, NULL), 0);
  long saw = atomic_load(&marker_saw);
  print_message("# the new task ran after %ld of %d rounds\n", saw,
                PP_ROUNDS / 2);
  assert_true(saw < PP_ROUNDS / 2);
  cf_future_unref(a);
  cf_future_unref(b);
  cf_future_unref(m);
  cf_executor_free(ex);
  for (long i = 0; i < PP_ROUNDS; i++)
    cf_future_unref(pp[i]);
  free(pp);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_args),
      cmocka_unit_test(test_default_size),
      cmocka_unit_test(test_many_tasks),
      cmocka_unit_test(test_outside_fifo_order),
      cmocka_unit_test(test_free_right_after_an_outside_wake),
      cmocka_unit_test(test_resumes_do_not_starve_new_tasks),
      cmocka_unit_test(test_failures),
      cmocka_unit_test(test_result_destroy),
      cmocka_unit_test(test_thread_names),
      cmocka_unit_test(test_initializer),
      cmocka_unit_test(test_initializer_failure_breaks_pool),
      cmocka_unit_test(test_initializer_partial_failure),
      cmocka_unit_test(test_shutdown_wait),
      cmocka_unit_test(test_shutdown_nowait),
      cmocka_unit_test(test_shutdown_cancel_futures),
      cmocka_unit_test(test_shutdown_cancels_worker_deques),
      cmocka_unit_test(test_shutdown_from_worker),
      cmocka_unit_test(test_shutdown_twice),
      cmocka_unit_test(test_submit_shutdown_race),
      cmocka_unit_test(test_blocked_task_children),
      cmocka_unit_test(test_result_timeout),
      cmocka_unit_test(test_cancel_races),
      cmocka_unit_test(test_callbacks_on_workers),
      cmocka_unit_test(test_submit_from_task),
      cmocka_unit_test(test_nested_fib),
      cmocka_unit_test(test_wait_inside_tasks),
      cmocka_unit_test(test_map_array),
      cmocka_unit_test(test_map_timeout),
      cmocka_unit_test(test_map_free_cancels),
      cmocka_unit_test(test_map_iter_window),
      cmocka_unit_test(test_map_iter_errors),
      cmocka_unit_test(test_map_iter_timeout),
  };
  return cmocka_run_group_tests_name("thread_pool", tests, NULL, NULL);
}
