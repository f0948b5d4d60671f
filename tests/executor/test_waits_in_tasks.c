/* Waits inside tasks: the ten scenarios of issue 10, each a program that
 * deadlocked, crashed, overshot or misbehaved when a waiting worker helped
 * by running queued tasks on top of its waiting frame.
 *
 * Each scenario runs in a forked child with an alarm, so a deadlock ends as
 * a failed test instead of a hung suite: the child exits 0 when every check
 * held, 1 (after printing the failed check) otherwise, and is killed by
 * SIGALRM when it hangs. The parent (cmocka) creates no threads and no
 * pools of its own, so forking it is safe. Tasks never assert; they record
 * what they saw and the scenario's main thread checks it. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cfutures.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* In the child: a failed check prints where and why, and exits 1. */
#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
      fflush(stderr);                                                          \
      _exit(1);                                                                \
    }                                                                          \
  } while (0)

/* Runs scenario() in a child bounded by limit_s seconds of wall time. */
static void run_bounded(void (*scenario)(void), unsigned limit_s) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    alarm(limit_s);
    scenario();
    fflush(NULL);
    _exit(0);
  }
  int status = 0;
  double t0 = now_s();
  pid_t got;
  /* The alarm bounds the child; this bounds a child that ignores it. */
  while ((got = waitpid(pid, &status, WNOHANG)) == 0 &&
         now_s() - t0 < limit_s + 10.0)
    usleep(2000);
  if (got == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    fail_msg("scenario did not end within %u s (killed)", limit_s + 10);
  }
  if (WIFSIGNALED(status))
    fail_msg("scenario died of signal %d (%s)%s", WTERMSIG(status),
             strsignal(WTERMSIG(status)),
             WTERMSIG(status) == SIGALRM ? ": it hung" : "");
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
}

static cf_executor *pool(size_t workers, size_t stack_size) {
  cf_thread_pool_opts o = {.max_workers = workers, .stack_size = stack_size};
  cf_executor *ex = NULL;
  int rc = cf_thread_pool_new(&o, &ex);
  CHECK(rc == 0 && ex, "cf_thread_pool_new: %s", cf_strerror(rc));
  return ex;
}

static cf_future *submit(cf_executor *ex, cf_fn fn, void *arg) {
  cf_future *f = NULL;
  int rc = cf_submit(ex, fn, arg, &f);
  CHECK(rc == 0 && f, "cf_submit: %s", cf_strerror(rc));
  return f;
}

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ---- 1. pipeline: job i waits for job i-1, all submitted from outside ---- */

enum { PIPE_N = 100 };
static cf_future *pipe_fs[PIPE_N];

static int pipe_job(void *arg, void **out) {
  intptr_t i = (intptr_t)arg;
  if (i == 0) {
    sleep_s(0.1);
    *out = (void *)(intptr_t)1;
    return 0;
  }
  void *prev = NULL;
  int rc = cf_future_result(pipe_fs[i - 1], 30, &prev);
  if (rc != 0)
    return cf_fail(rc, "job %ld: waiting for job %ld failed", (long)i,
                   (long)i - 1);
  *out = (void *)((intptr_t)prev + 1);
  return 0;
}

static void pipeline_on(size_t workers) {
  cf_executor *ex = pool(workers, 0);
  for (intptr_t i = 0; i < PIPE_N; i++)
    pipe_fs[i] = submit(ex, pipe_job, (void *)i);
  for (int i = 0; i < PIPE_N; i++) {
    void *v = NULL;
    int rc = cf_future_result(pipe_fs[i], 30, &v);
    CHECK(rc == 0, "%zu workers: job %d: %s", workers, i, cf_strerror(rc));
    CHECK((intptr_t)v == i + 1, "%zu workers: job %d gave %ld", workers, i,
          (long)(intptr_t)v);
  }
  cf_executor_free(ex);
  for (int i = 0; i < PIPE_N; i++)
    cf_future_unref(pipe_fs[i]);
}

static void scenario_pipeline(void) {
  const size_t workers[] = {1, 2, 4, 8};
  for (size_t k = 0; k < sizeof workers / sizeof *workers; k++)
    pipeline_on(workers[k]);
}

static void test_pipeline(void **state) {
  (void)state;
  run_bounded(scenario_pipeline, 30);
}

/* ---- 2. minimal: A waits for B; C, queued behind A, waits for A ---------- */

static cf_future *min_a, *min_b, *min_awaited;
static _Atomic int min_a_started;

static int min_sleep(void *arg, void **out) {
  sleep_s(0.3);
  *out = arg;
  return 0;
}

static int min_task_a(void *arg, void **out) {
  atomic_store(&min_a_started, 1);
  void *v = NULL;
  int rc = cf_future_result(min_awaited, 30, &v);
  *out = arg;
  return rc == 0 ? 0 : cf_fail(rc, "A: wait failed");
}

static int min_task_c(void *arg, void **out) {
  int rc = cf_future_result(min_a, 30, NULL);
  *out = arg;
  return rc == 0 ? 0 : cf_fail(rc, "C: wait for A failed");
}

static void check_done(cf_future *f, const char *what, intptr_t want) {
  void *v = NULL;
  int rc = cf_future_result(f, 30, &v);
  CHECK(rc == 0, "%s: %s", what, cf_strerror(rc));
  CHECK((intptr_t)v == want, "%s gave %ld, want %ld", what, (long)(intptr_t)v,
        (long)want);
}

static void scenario_minimal(void) {
  /* Two workers: B sleeps on one, A waits for it on the other, C waits
   * for A. */
  cf_executor *ex = pool(2, 0);
  min_b = submit(ex, min_sleep, (void *)2);
  min_awaited = min_b;
  min_a = submit(ex, min_task_a, (void *)1);
  cf_future *c = submit(ex, min_task_c, (void *)3);
  check_done(min_a, "A", 1);
  check_done(c, "C", 3);
  check_done(min_b, "B", 2);
  cf_executor_free(ex);
  cf_future_unref(min_a);
  cf_future_unref(min_b);
  cf_future_unref(c);

  /* One worker: A waits for a promise the main thread completes later;
   * C, queued behind A, waits for A. */
  ex = pool(1, 0);
  cf_future *promise = cf_future_new();
  CHECK(promise, "cf_future_new");
  min_awaited = promise;
  atomic_store(&min_a_started, 0);
  min_a = submit(ex, min_task_a, (void *)1);
  c = submit(ex, min_task_c, (void *)3);
  while (!atomic_load(&min_a_started))
    sleep_s(0.001);
  sleep_s(0.1); /* A is waiting now, C queued */
  CHECK(cf_future_set_result(promise, NULL, NULL) == 0, "set_result");
  check_done(min_a, "A (1 worker)", 1);
  check_done(c, "C (1 worker)", 3);
  cf_executor_free(ex);
  cf_future_unref(min_a);
  cf_future_unref(c);
  cf_future_unref(promise);
}

static void test_minimal(void **state) {
  (void)state;
  run_bounded(scenario_minimal, 20);
}

/* ---- 3. waiters are woken before done-callbacks run --------------------- */

static cf_event *cb_event;
static _Atomic int cb_rc = -1;
static double cb_waited;

/* Waits for the event that the waiting thread sets once its wait returns. */
static int cb_wait_for_waiter(cf_future *f, void *arg) {
  (void)f;
  (void)arg;
  double t0 = now_s();
  atomic_store(&cb_rc, cf_event_wait(cb_event, 5));
  cb_waited = now_s() - t0;
  return 0;
}

typedef struct result_waiter {
  cf_future *f;
  double timeout;
  int rc;
  double waited;
} result_waiter;

static void *result_waiter_main(void *p) {
  result_waiter *w = p;
  double t0 = now_s();
  w->rc = cf_future_result(w->f, w->timeout, NULL);
  w->waited = now_s() - t0;
  cf_event_set(cb_event);
  return NULL;
}

static void scenario_waiters_first(void) {
  const double timeouts[] = {CF_FOREVER, 3.0};
  for (int k = 0; k < 2; k++) {
    CHECK(cf_event_new(false, &cb_event) == 0, "cf_event_new");
    atomic_store(&cb_rc, -1);
    cf_future *f = cf_future_new();
    CHECK(f, "cf_future_new");
    /* The callback is registered before the waiter starts waiting. */
    CHECK(cf_future_add_done_callback(f, cb_wait_for_waiter, NULL) == 0,
          "add_done_callback");
    result_waiter w = {.f = f, .timeout = timeouts[k]};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, result_waiter_main, &w) == 0, "thread");
    sleep_s(0.1); /* the waiter is blocked in cf_future_result */
    CHECK(cf_future_set_result(f, NULL, NULL) == 0, "set_result");
    /* set_result returns after the callback did. */
    CHECK(atomic_load(&cb_rc) == 0, "timeout %g: the callback's wait: %s",
          timeouts[k], cf_strerror(atomic_load(&cb_rc)));
    CHECK(cb_waited < 2.5, "the callback waited %.2f s", cb_waited);
    pthread_join(th, NULL);
    CHECK(w.rc == 0, "the waiter: %s", cf_strerror(w.rc));
    cf_future_unref(f);
    cf_event_free(cb_event);
  }
}

static void test_waiters_before_callbacks(void **state) {
  (void)state;
  run_bounded(scenario_waiters_first, 20);
}

/* ---- 4. a chain of 100,000 nested waits on a bounded stack -------------- */

enum { CHAIN_N = 100000 };
static cf_executor *chain_ex;
static _Atomic(cf_future *) chain_fs[CHAIN_N];

/* Task i submits task i+1 and waits for it. */
static int chain_inside(void *arg, void **out) {
  intptr_t i = (intptr_t)arg;
  if (i + 1 == CHAIN_N) {
    *out = (void *)(intptr_t)1;
    return 0;
  }
  cf_future *next = NULL;
  int rc = cf_submit(chain_ex, chain_inside, (void *)(i + 1), &next);
  if (rc != 0)
    return cf_fail(rc, "level %ld: submit", (long)i);
  void *v = NULL;
  rc = cf_future_result(next, 60, &v);
  cf_future_unref(next);
  if (rc != 0)
    return cf_fail(rc, "level %ld: wait", (long)i);
  *out = (void *)((intptr_t)v + 1);
  return 0;
}

/* Task i waits for task i+1, which the main thread submits after it. */
static int chain_outside(void *arg, void **out) {
  intptr_t i = (intptr_t)arg;
  if (i + 1 == CHAIN_N) {
    *out = (void *)(intptr_t)1;
    return 0;
  }
  cf_future *next;
  while ((next = atomic_load(&chain_fs[i + 1])) == NULL)
    sched_yield(); /* the main thread is still submitting */
  void *v = NULL;
  int rc = cf_future_result(next, 60, &v);
  if (rc != 0)
    return cf_fail(rc, "level %ld: wait", (long)i);
  *out = (void *)((intptr_t)v + 1);
  return 0;
}

static void chain_on(size_t workers, bool inside) {
  chain_ex = pool(workers, 256 * 1024);
  void *v = NULL;
  int rc;
  if (inside) {
    cf_future *f = submit(chain_ex, chain_inside, (void *)0);
    rc = cf_future_result(f, 60, &v);
    cf_future_unref(f);
  } else {
    for (intptr_t i = 0; i < CHAIN_N; i++)
      atomic_store(&chain_fs[i], submit(chain_ex, chain_outside, (void *)i));
    rc = cf_future_result(atomic_load(&chain_fs[0]), 60, &v);
  }
  CHECK(rc == 0, "%zu workers, %s: %s", workers, inside ? "inside" : "outside",
        cf_strerror(rc));
  CHECK((intptr_t)v == CHAIN_N, "depth %ld", (long)(intptr_t)v);
  cf_executor_free(chain_ex);
  if (!inside)
    for (int i = 0; i < CHAIN_N; i++)
      cf_future_unref(atomic_exchange(&chain_fs[i], NULL));
}

static void scenario_chain(void) {
  /* Thread stacks as small as the fiber stacks: waiting must not nest. */
  for (size_t w = 1; w <= 2; w++) {
    chain_on(w, true);
    chain_on(w, false);
  }
}

static void test_chain(void **state) {
  (void)state;
  run_bounded(scenario_chain, 120);
}

/* ---- 5. a submit's wake-up reaches a worker that looks at the queue ----- */

static cf_future *wake_promise;
static _Atomic int wake_b_started;
static _Atomic int wake_a_saw_b;

/* Waits for the promise, then stays busy until B has started (or 0.7 s:
 * less than the park backstop, so a wake-up lost to this busy worker
 * shows). */
static int wake_task_a(void *arg, void **out) {
  (void)arg;
  int rc = cf_future_result(wake_promise, 10, NULL);
  double t0 = now_s();
  while (!atomic_load(&wake_b_started) && now_s() - t0 < 0.7) {
  }
  atomic_store(&wake_a_saw_b, atomic_load(&wake_b_started));
  *out = NULL;
  return rc;
}

static int wake_task_b(void *arg, void **out) {
  (void)arg;
  atomic_store(&wake_b_started, 1);
  *out = NULL;
  return 0;
}

static void scenario_wakeup(void) {
  cf_executor *ex = pool(2, 0);
  for (int round = 0; round < 10; round++) {
    atomic_store(&wake_b_started, 0);
    atomic_store(&wake_a_saw_b, 0);
    wake_promise = cf_future_new();
    CHECK(wake_promise, "cf_future_new");
    cf_future *a = submit(ex, wake_task_a, NULL);
    sleep_s(0.05); /* A waits; the other worker parks */
    CHECK(cf_future_set_result(wake_promise, NULL, NULL) == 0, "set");
    cf_future *b = submit(ex, wake_task_b, NULL);
    CHECK(cf_future_result(a, 10, NULL) == 0, "A failed");
    CHECK(cf_future_result(b, 10, NULL) == 0, "B failed");
    CHECK(atomic_load(&wake_a_saw_b),
          "round %d: B did not start while a worker was idle", round);
    cf_future_unref(a);
    cf_future_unref(b);
    cf_future_unref(wake_promise);
  }
  cf_executor_free(ex);
}

static void test_wakeup_reaches_idle_worker(void **state) {
  (void)state;
  run_bounded(scenario_wakeup, 30);
}

/* ---- 6. shutdown(cancel_futures) runs callbacks with no lock held -------- */

static cf_executor *sd_ex;
static cf_event *sd_gate;
static cf_future *sd_fs[8];
static _Atomic int sd_inner_shutdown_rc = -1;
static _Atomic int sd_wait_rc = -1;
static double sd_waited;

static int sd_blocker(void *arg, void **out) {
  (void)arg;
  *out = NULL;
  return cf_event_wait(sd_gate, 10);
}

static int sd_noop(void *arg, void **out) {
  *out = arg;
  return 0;
}

/* Calls shutdown again from a callback run by shutdown(cancel_futures). */
static int sd_cb_shutdown(cf_future *f, void *arg) {
  (void)f;
  (void)arg;
  atomic_store(&sd_inner_shutdown_rc, cf_executor_shutdown(sd_ex, false, true));
  return 0;
}

/* Waits for another queued future: it must see it cancelled. */
static int sd_cb_wait(cf_future *f, void *arg) {
  (void)f;
  double t0 = now_s();
  atomic_store(&sd_wait_rc, cf_future_result(sd_fs[(intptr_t)arg], 5, NULL));
  sd_waited = now_s() - t0;
  return 0;
}

static void scenario_shutdown_callbacks(void) {
  sd_ex = pool(1, 0);
  CHECK(cf_event_new(false, &sd_gate) == 0, "cf_event_new");
  cf_future *blocker = submit(sd_ex, sd_blocker, NULL);
  for (intptr_t i = 0; i < 8; i++)
    sd_fs[i] = submit(sd_ex, sd_noop, (void *)i);
  /* Queued behind the blocker: the first callback calls shutdown, the
   * second waits for the last queued future. */
  CHECK(cf_future_add_done_callback(sd_fs[0], sd_cb_shutdown, NULL) == 0,
        "cb");
  CHECK(cf_future_add_done_callback(sd_fs[1], sd_cb_wait, (void *)7) == 0,
        "cb");
  sleep_s(0.05);
  CHECK(cf_executor_shutdown(sd_ex, false, true) == 0, "shutdown");
  CHECK(atomic_load(&sd_inner_shutdown_rc) == 0,
        "shutdown from a callback: %s",
        cf_strerror(atomic_load(&sd_inner_shutdown_rc)));
  CHECK(atomic_load(&sd_wait_rc) == CF_ECANCELLED,
        "the callback's wait: %s", cf_strerror(atomic_load(&sd_wait_rc)));
  CHECK(sd_waited < 2.0, "the callback waited %.2f s", sd_waited);
  for (int i = 0; i < 8; i++)
    CHECK(cf_future_cancelled(sd_fs[i]), "future %d not cancelled", i);
  cf_event_set(sd_gate);
  CHECK(cf_future_result(blocker, 10, NULL) == 0, "blocker");
  cf_executor_free(sd_ex);
  cf_future_unref(blocker);
  for (int i = 0; i < 8; i++)
    cf_future_unref(sd_fs[i]);
  cf_event_free(sd_gate);
}

static void test_shutdown_cancel_callbacks(void **state) {
  (void)state;
  run_bounded(scenario_shutdown_callbacks, 20);
}

/* ---- 7. a thread's waiter is never used by another thread --------------- */

enum { EXIT_THREADS = 40 };
static pthread_key_t exit_key;
static cf_executor *exit_pool;
static _Atomic int exit_ran_on_self;
static _Atomic int exit_failed;
static _Atomic int exit_done;

static int record_thread(void *arg, void **out) {
  (void)arg;
  *out = (void *)pthread_self();
  return 0;
}

/* A pthread-key destructor that waits on a future: it runs after cfutures'
 * own thread-exit destructor (its key was created later). */
static void exit_destructor(void *p) {
  (void)p;
  /* A new pool's workers take the waiters released by exiting threads. */
  cf_executor *fresh = NULL;
  cf_thread_pool_opts o = {.max_workers = 2};
  if (cf_thread_pool_new(&o, &fresh) != 0) {
    atomic_fetch_add(&exit_failed, 1);
    return;
  }
  cf_executor *pools[] = {exit_pool, fresh};
  for (int k = 0; k < 2; k++) {
    cf_future *f = NULL;
    void *who = NULL;
    if (cf_submit(pools[k], record_thread, NULL, &f) != 0 ||
        cf_future_result(f, 10, &who) != 0)
      atomic_fetch_add(&exit_failed, 1);
    else if ((pthread_t)who == pthread_self())
      atomic_fetch_add(&exit_ran_on_self, 1);
    cf_future_unref(f);
  }
  cf_executor_free(fresh);
  atomic_fetch_add(&exit_done, 1);
}

static void *exiting_thread(void *arg) {
  (void)arg;
  /* Wait once, so cfutures installs this thread's waiter. */
  cf_future *f = NULL;
  if (cf_submit(exit_pool, record_thread, NULL, &f) != 0 ||
      cf_future_result(f, 10, NULL) != 0)
    atomic_fetch_add(&exit_failed, 1);
  cf_future_unref(f);
  pthread_setspecific(exit_key, (void *)1);
  return NULL;
}

static void scenario_thread_exit(void) {
  exit_pool = pool(2, 0);
  /* cfutures' key exists now (the pool's workers waited); ours comes after. */
  cf_future *f = submit(exit_pool, record_thread, NULL);
  CHECK(cf_future_result(f, 10, NULL) == 0, "warm-up");
  cf_future_unref(f);
  CHECK(pthread_key_create(&exit_key, exit_destructor) == 0, "key");
  for (int i = 0; i < EXIT_THREADS; i++) {
    pthread_t th;
    CHECK(pthread_create(&th, NULL, exiting_thread, NULL) == 0, "thread");
    pthread_join(th, NULL);
  }
  CHECK(atomic_load(&exit_failed) == 0, "%d waits failed",
        atomic_load(&exit_failed));
  CHECK(atomic_load(&exit_done) == EXIT_THREADS, "%d destructors finished",
        atomic_load(&exit_done));
  CHECK(atomic_load(&exit_ran_on_self) == 0,
        "%d pool tasks ran on an exiting non-worker thread",
        atomic_load(&exit_ran_on_self));
  cf_executor_free(exit_pool);
}

static void test_waiter_after_thread_exit(void **state) {
  (void)state;
  run_bounded(scenario_thread_exit, 60);
}

/* ---- 8. a timeout inside a task is kept while a worker is free ---------- */

static cf_executor *to_ex;
static cf_future *to_promise;
static _Atomic int to_rc = -1;
static double to_waited;

static int to_long(void *arg, void **out) {
  (void)arg;
  sleep_s(2.0);
  *out = NULL;
  return 0;
}

/* Queues a 2 s task on its own deque, then waits 0.1 s for a promise that
 * never completes. */
static int to_task(void *arg, void **out) {
  (void)arg;
  cf_future *l = NULL;
  if (cf_submit(to_ex, to_long, NULL, &l) != 0)
    return cf_fail(CF_ESYS, "submit");
  double t0 = now_s();
  atomic_store(&to_rc, cf_future_result(to_promise, 0.1, NULL));
  to_waited = now_s() - t0;
  *out = l; /* the main thread waits for it before the next round */
  return 0;
}

static void scenario_timeout_in_task(void) {
  to_ex = pool(2, 0);
  for (int round = 0; round < 3; round++) {
    to_promise = cf_future_new();
    CHECK(to_promise, "cf_future_new");
    cf_future *f = submit(to_ex, to_task, NULL);
    void *l = NULL;
    CHECK(cf_future_result(f, 10, &l) == 0, "the task failed");
    CHECK(atomic_load(&to_rc) == CF_ETIMEDOUT, "round %d: wait gave %s",
          round, cf_strerror(atomic_load(&to_rc)));
    CHECK(to_waited >= 0.1 && to_waited < 1.0,
          "round %d: a 0.1 s timeout took %.3f s", round, to_waited);
    CHECK(cf_future_result(l, 10, NULL) == 0, "the long task failed");
    cf_future_unref(l);
    cf_future_unref(f);
    cf_future_unref(to_promise);
  }
  cf_executor_free(to_ex);
}

static void test_timeout_in_task(void **state) {
  (void)state;
  run_bounded(scenario_timeout_in_task, 30);
}

/* ---- 9. absurd map windows and chunk sizes ------------------------------ */

static void scenario_map_limits(void) {
  cf_executor *ex = pool(1, 0);
  int items[4] = {1, 2, 3, 4};
  const size_t bad[] = {CF_MAP_MAX_WINDOW + 1, (size_t)1 << 61, SIZE_MAX};
  for (size_t k = 0; k < 3; k++) {
    cf_map *m = (cf_map *)1;
    cf_map_opts o = {.window = bad[k]};
    int rc = cf_map_array(ex, sd_noop, items, 4, sizeof *items, &o, &m);
    CHECK(rc == CF_EINVAL, "window %zu: %s", bad[k], cf_strerror(rc));
    o = (cf_map_opts){.chunksize = bad[k]};
    rc = cf_map_array(ex, sd_noop, items, 4, sizeof *items, &o, &m);
    CHECK(rc == CF_EINVAL, "chunksize %zu: %s", bad[k], cf_strerror(rc));
  }
  /* n * item_size overflowing size_t. */
  cf_map *m = NULL;
  int rc = cf_map_array(ex, sd_noop, items, SIZE_MAX / 2, 4, NULL, &m);
  CHECK(rc == CF_EINVAL, "overflowing n: %s", cf_strerror(rc));
  /* The largest window is accepted and works. */
  cf_map_opts o = {.window = CF_MAP_MAX_WINDOW, .chunksize = CF_MAP_MAX_WINDOW};
  rc = cf_map_array(ex, sd_noop, items, 4, sizeof *items, &o, &m);
  CHECK(rc == 0, "the largest window: %s", cf_strerror(rc));
  void *v = NULL;
  int got = 0;
  while ((rc = cf_map_next(m, &v)) == 0)
    got += *(int *)v;
  CHECK(rc == CF_EDONE && got == 10, "map: %s, sum %d", cf_strerror(rc), got);
  cf_map_free(m);
  cf_executor_free(ex);
}

static void test_map_limits(void **state) {
  (void)state;
  run_bounded(scenario_map_limits, 20);
}

/* ---- 10. event pulse: set() then clear() releases every waiter ---------- */

enum { PULSE_THREADS = 16 };
static cf_event *pulse_ev;
static _Atomic int pulse_ready;

static void *pulse_waiter(void *p) {
  int *rc = p;
  atomic_fetch_add(&pulse_ready, 1);
  *rc = cf_event_wait(pulse_ev, 3);
  return NULL;
}

static void scenario_event_pulse(void) {
  for (int round = 0; round < 5; round++) {
    CHECK(cf_event_new(round % 2 == 1, &pulse_ev) == 0, "cf_event_new");
    atomic_store(&pulse_ready, 0);
    pthread_t th[PULSE_THREADS];
    int rc[PULSE_THREADS];
    for (int i = 0; i < PULSE_THREADS; i++)
      CHECK(pthread_create(&th[i], NULL, pulse_waiter, &rc[i]) == 0, "thread");
    while (atomic_load(&pulse_ready) < PULSE_THREADS)
      sleep_s(0.001);
    sleep_s(0.2); /* every thread is asleep in cf_event_wait */
    CHECK(cf_event_set(pulse_ev) == 0, "set");
    CHECK(cf_event_clear(pulse_ev) == 0, "clear");
    for (int i = 0; i < PULSE_THREADS; i++) {
      pthread_join(th[i], NULL);
      CHECK(rc[i] == 0, "round %d (%s): waiter %d: %s", round,
            round % 2 ? "shared" : "private", i, cf_strerror(rc[i]));
    }
    CHECK(!cf_event_is_set(pulse_ev), "still set");
    cf_event_free(pulse_ev);
  }
}

static void test_event_pulse(void **state) {
  (void)state;
  run_bounded(scenario_event_pulse, 30);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pipeline),
      cmocka_unit_test(test_minimal),
      cmocka_unit_test(test_waiters_before_callbacks),
      cmocka_unit_test(test_chain),
      cmocka_unit_test(test_wakeup_reaches_idle_worker),
      cmocka_unit_test(test_shutdown_cancel_callbacks),
      cmocka_unit_test(test_waiter_after_thread_exit),
      cmocka_unit_test(test_timeout_in_task),
      cmocka_unit_test(test_map_limits),
      cmocka_unit_test(test_event_pulse),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
