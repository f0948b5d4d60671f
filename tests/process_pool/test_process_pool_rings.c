/* Tests for the process pool's shared-memory rings and its drive
 * (executor/process_pool_internal.h: msg_ring, ppool.drive): messages that
 * go by ring and by socket, mixed, arrive whole and in order both ways;
 * threads that submit and wait at once (each may do the manager's work)
 * get their own results; futures nobody waits for still complete (the
 * workers' bells wake the manager); a done-callback that runs on a waiting
 * thread cannot wait for the pool's shutdown, and may submit. Every
 * blocking call has a timeout. */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
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

#include "helpers.h"

/* See test_process_pool.c: the leak check of a worker cannot see the
 * parent's threads. */
static pid_t test_pid;
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void) {
  return test_pid && getpid() != test_pid;
}

/* Byte i of a payload with seed s. */
static unsigned char pattern(uint32_t s, size_t i) {
  return (unsigned char)(s * 2654435761u + i * 40503u + (i >> 8));
}

/* An input: out_len (4 bytes), seed (4 bytes), then pattern(seed, i) for
 * the rest. The task checks its input and answers out_len bytes of
 * pattern(seed + 1, i): sizes each way chosen apart. */
enum { HEAD = 8 };

static int resize(const void *in, size_t n, cf_buf *out) {
  const unsigned char *b = in;
  uint32_t out_len, seed;
  if (n < HEAD)
    return cf_fail(CF_EINVAL, "input of %zu bytes", n);
  memcpy(&out_len, b, 4);
  memcpy(&seed, b + 4, 4);
  for (size_t i = HEAD; i < n; i++)
    if (b[i] != pattern(seed, i))
      return cf_fail(CF_EINVAL, "input byte %zu is wrong", i);
  out->data = out_len ? malloc(out_len) : NULL;
  if (out_len && !out->data)
    return CF_ENOMEM;
  for (size_t i = 0; i < out_len; i++)
    ((unsigned char *)out->data)[i] = pattern(seed + 1, i);
  out->len = out_len;
  return 0;
}

static unsigned char *make_input(size_t n, uint32_t out_len, uint32_t seed) {
  unsigned char *b = malloc(n < HEAD ? HEAD : n);
  assert_non_null(b);
  memcpy(b, &out_len, 4);
  memcpy(b + 4, &seed, 4);
  for (size_t i = HEAD; i < n; i++)
    b[i] = pattern(seed, i);
  return b;
}

static void check_output(cf_future *f, uint32_t out_len, uint32_t seed) {
  void *v = NULL;
  assert_int_equal(cf_future_result(f, 30, &v), 0);
  const cf_buf *r = v;
  assert_int_equal(r->len, out_len);
  for (size_t i = 0; i < out_len; i++)
    if (((const unsigned char *)r->data)[i] != pattern(seed + 1, i))
      fail_msg("output byte %zu of %u is wrong (seed %u)", i, out_len, seed);
}

/* Sizes on both sides of what a ring entry holds (216 bytes with the
 * 8-byte head counted in), and of what travels in a memfd (64 KiB). */
static const uint32_t sizes[] = {HEAD,  9,     100,   215,   216,   217,
                                 223,   224,   225,   1000,  4096,  65535,
                                 65536, 65537, 200000};
enum { NSIZES = sizeof sizes / sizeof sizes[0] };

static uint32_t rnd(uint32_t *s) {
  *s = *s * 1103515245u + 12345u;
  return *s >> 8;
}

/* Every task in flight at once, sizes mixed at random each way: the
 * worker and the manager each get some messages by ring and some by
 * socket, in an order only the message numbers keep. */
static void test_mixed_sizes_in_order(void **state) {
  (void)state;
  cf_process_pool_opts o = {.max_workers = 2};
  cf_executor *ex;
  assert_int_equal(cf_process_pool_new(&o, &ex), 0);
  enum { N = 300 };
  cf_future *fs[N];
  uint32_t outs[N], rs = 7;
  for (int i = 0; i < N; i++) {
    uint32_t in_len = sizes[rnd(&rs) % NSIZES];
    outs[i] = sizes[rnd(&rs) % NSIZES] - (rnd(&rs) % 2) * HEAD;
    unsigned char *in = make_input(in_len, outs[i], (uint32_t)i);
    assert_int_equal(cf_process_pool_submit(ex, resize, in, in_len, &fs[i]),
                     0);
    free(in);
  }
  for (int i = N - 1; i >= 0; i--) { /* the newest first: others complete */
    check_output(fs[i], outs[i], (uint32_t)i);
    cf_future_unref(fs[i]);
  }
  cf_executor_free(ex);
}

/* Threads that submit and wait at once, each task checked: any of them
 * may drive the pool, the others sleep until their future is done. Some
 * waits time out first (a task that sleeps), some futures are cancelled
 * before they run. */
typedef struct {
  cf_executor *ex;
  uint32_t seed;
  int rounds;
  int timed_out, cancelled;
} worker_args;

static int nap(const void *in, size_t n, cf_buf *out) {
  (void)in;
  (void)n;
  (void)out;
  struct timespec ts = {0, 20 * 1000 * 1000};
  nanosleep(&ts, NULL);
  return 0;
}

static void *submit_and_wait(void *arg) {
  worker_args *a = arg;
  for (int k = 0; k < a->rounds; k++) {
    uint32_t pick = rnd(&a->seed) % 16;
    cf_future *f;
    if (pick == 0) { /* a wait that times out, then one that does not */
      if (cf_process_pool_submit(a->ex, nap, NULL, 0, &f))
        return "submit failed";
      double t0 = now_s();
      int rc = cf_future_result(f, 0.002, NULL);
      double took = now_s() - t0;
      if (rc == CF_ETIMEDOUT) {
        a->timed_out++;
        if (took < 0.002 || took > 5)
          return "a timed-out wait took the wrong time";
      } else if (rc != 0) {
        return "the sleeping task failed";
      }
      if (cf_future_result(f, 30, NULL) != 0)
        return "the sleeping task failed";
      cf_future_unref(f);
      continue;
    }
    uint32_t in_len = sizes[rnd(&a->seed) % NSIZES];
    uint32_t out_len = sizes[rnd(&a->seed) % NSIZES];
    uint32_t seed = rnd(&a->seed);
    unsigned char *in = make_input(in_len, out_len, seed);
    int rc = cf_process_pool_submit(a->ex, resize, in, in_len, &f);
    free(in);
    if (rc)
      return "submit failed";
    if (pick == 1 && cf_future_cancel(f)) {
      a->cancelled++;
      if (cf_future_result(f, 0, NULL) != CF_ECANCELLED)
        return "a cancelled future did not say so";
      cf_future_unref(f);
      continue;
    }
    void *v = NULL;
    if (cf_future_result(f, 30, &v) != 0)
      return "a task failed";
    const cf_buf *r = v;
    if (r->len != out_len)
      return "an output of the wrong length";
    for (size_t i = 0; i < out_len; i++)
      if (((const unsigned char *)r->data)[i] != pattern(seed + 1, i))
        return "an output with a wrong byte";
    cf_future_unref(f);
  }
  return NULL;
}

static void test_threads_submit_and_wait(void **state) {
  (void)state;
  cf_process_pool_opts o = {.max_workers = 2};
  cf_executor *ex;
  assert_int_equal(cf_process_pool_new(&o, &ex), 0);
  enum { T = 4 };
  pthread_t th[T];
  worker_args args[T];
  for (int t = 0; t < T; t++) {
    args[t] = (worker_args){.ex = ex, .seed = 100 + (uint32_t)t, .rounds = 400};
    assert_int_equal(pthread_create(&th[t], NULL, submit_and_wait, &args[t]),
                     0);
  }
  int timed_out = 0, cancelled = 0;
  for (int t = 0; t < T; t++) {
    void *err;
    pthread_join(th[t], &err);
    if (err)
      fail_msg("thread %d: %s", t, (const char *)err);
    timed_out += args[t].timed_out;
    cancelled += args[t].cancelled;
  }
  print_message("# %d waits timed out, %d futures cancelled\n", timed_out,
                cancelled);
  assert_true(timed_out > 0); /* 20 ms tasks, 2 ms waits */
  cf_executor_free(ex);
}

/* Futures nobody waits for: their results come by ring, and the manager,
 * asleep in poll, must be woken by the worker's bell (and an idle worker,
 * asleep on its socket, by the manager's). Pauses between rounds let
 * both fall asleep. */
static sem_t done_sem;

static int post_done(cf_future *f, void *arg) {
  (void)f;
  (void)arg;
  sem_post(&done_sem);
  return 0;
}

static int square(void *arg, void **out) {
  intptr_t x = (intptr_t)arg;
  *out = (void *)(x * x);
  return 0;
}

static void test_unwaited_futures_complete(void **state) {
  (void)state;
  cf_process_pool_opts o = {.max_workers = 2};
  cf_executor *ex;
  assert_int_equal(cf_process_pool_new(&o, &ex), 0);
  assert_int_equal(sem_init(&done_sem, 0, 0), 0);
  for (int round = 0; round < 40; round++) {
    enum { K = 5 };
    cf_future *fs[K];
    for (intptr_t i = 0; i < K; i++) {
      assert_int_equal(cf_submit(ex, square, (void *)i, &fs[i]), 0);
      assert_int_equal(cf_future_add_done_callback(fs[i], post_done, NULL),
                       0);
    }
    for (int i = 0; i < K; i++) {
      struct timespec dl;
      clock_gettime(CLOCK_REALTIME, &dl);
      dl.tv_sec += 10;
      if (sem_timedwait(&done_sem, &dl) != 0)
        fail_msg("round %d: a future nobody waited for never completed",
                 round);
    }
    for (intptr_t i = 0; i < K; i++) {
      void *v;
      assert_int_equal(cf_future_result(fs[i], 0, &v), 0);
      assert_int_equal((intptr_t)v, i * i);
      cf_future_unref(fs[i]);
    }
    usleep(round % 2 ? 200 : 2000); /* past every spin: all asleep */
  }
  sem_destroy(&done_sem);
  cf_executor_free(ex);
  assert_int_equal(list_children(NULL), 0); /* workers and server reaped */
}

/* A done-callback may run on the thread that waits (it did the manager's
 * work): there it cannot wait for the pool's shutdown (that thread holds
 * up the manager), but it may submit to the pool. The same holds on the
 * manager thread. A callback added after the future is done runs at once
 * on the adding thread, which may wait: it does not try then. */
static pthread_t main_thread;
static _Atomic bool main_waits;

typedef struct {
  cf_executor *ex;
  _Atomic int where; /* 0: not yet; 1: adding; 2: waiting; 3: elsewhere */
  _Atomic int shutdown_rc;
  cf_future *_Atomic follow_up;
} cb_state;

static int on_done(cf_future *f, void *arg) {
  (void)f;
  cb_state *s = arg;
  int where = !pthread_equal(pthread_self(), main_thread) ? 3
              : atomic_load(&main_waits)                 ? 2
                                                         : 1;
  if (where != 1)
    atomic_store(&s->shutdown_rc, cf_executor_shutdown(s->ex, true, false));
  cf_future *g = NULL;
  if (cf_submit(s->ex, square, (void *)(intptr_t)9, &g) == 0)
    atomic_store(&s->follow_up, g);
  atomic_store(&s->where, where);
  return 0;
}

static void test_callback_on_the_waiting_thread(void **state) {
  (void)state;
  main_thread = pthread_self();
  cf_process_pool_opts o = {.max_workers = 1};
  cf_executor *ex;
  assert_int_equal(cf_process_pool_new(&o, &ex), 0);
  int on_waiter = 0, on_manager = 0;
  for (int round = 0; round < 100; round++) {
    cb_state s = {.ex = ex, .shutdown_rc = -1};
    cf_future *f;
    assert_int_equal(cf_submit(ex, square, (void *)(intptr_t)3, &f), 0);
    assert_int_equal(cf_future_add_done_callback(f, on_done, &s), 0);
    atomic_store(&main_waits, true);
    void *v;
    assert_int_equal(cf_future_result(f, 10, &v), 0);
    atomic_store(&main_waits, false);
    assert_int_equal((intptr_t)v, 9);
    double t0 = now_s();
    while (!atomic_load(&s.where) && now_s() - t0 < 10)
      usleep(100);
    int where = atomic_load(&s.where);
    assert_int_not_equal(where, 0);
    if (where != 1)
      assert_int_equal(atomic_load(&s.shutdown_rc), CF_EDEADLK);
    on_waiter += where == 2;
    on_manager += where == 3;
    cf_future *g = atomic_load(&s.follow_up);
    assert_non_null(g);
    assert_int_equal(cf_future_result(g, 10, &v), 0);
    assert_int_equal((intptr_t)v, 81);
    cf_future_unref(g);
    cf_future_unref(f);
  }
  /* Where each ran depends on timing (a task done before its callback is
   * added runs it at once, on this thread, unchecked); in a plain build
   * most run on this thread while it waits. */
  print_message("# callbacks: %d on the waiting thread, %d on the manager\n",
                on_waiter, on_manager);
  assert_true(on_waiter + on_manager > 0);
  cf_executor_free(ex);
}

/* A done-callback of pool A that submits to pool B, idle (its manager
 * asleep in poll): the task must run, though the callback's thread drives
 * A and cannot drive B. Nobody waits in a way that drives B (cf_wait). */
static cf_executor *pool_b;
static cf_future *_Atomic b_future;

static int submit_to_b(cf_future *f, void *arg) {
  (void)f;
  (void)arg;
  cf_future *g = NULL;
  if (cf_submit(pool_b, square, (void *)(intptr_t)7, &g) == 0)
    atomic_store(&b_future, g);
  return 0;
}

static void test_callback_submits_to_another_pool(void **state) {
  (void)state;
  cf_process_pool_opts o = {.max_workers = 1};
  cf_executor *a;
  assert_int_equal(cf_process_pool_new(&o, &a), 0);
  assert_int_equal(cf_process_pool_new(&o, &pool_b), 0);
  for (int round = 0; round < 20; round++) {
    usleep(2000); /* B's manager and worker asleep */
    atomic_store(&b_future, NULL);
    cf_future *f;
    assert_int_equal(cf_submit(a, square, (void *)(intptr_t)2, &f), 0);
    assert_int_equal(cf_future_add_done_callback(f, submit_to_b, NULL), 0);
    assert_int_equal(cf_future_result(f, 10, NULL), 0);
    double t0 = now_s();
    while (!atomic_load(&b_future) && now_s() - t0 < 10)
      usleep(100);
    cf_future *g = atomic_load(&b_future);
    assert_non_null(g);
    cf_future *fs[1] = {g};
    if (cf_wait(fs, 1, 10, CF_ALL_COMPLETED, NULL) != 0 || !cf_future_done(g))
      fail_msg("round %d: B's task, submitted from A's callback, never ran",
               round);
    void *v;
    assert_int_equal(cf_future_result(g, 0, &v), 0);
    assert_int_equal((intptr_t)v, 49);
    cf_future_unref(g);
    cf_future_unref(f);
  }
  cf_executor_free(pool_b);
  cf_executor_free(a);
}

/* A thread that waits (and drives) while other threads keep the pool busy
 * must still learn of its worker's death: only the manager thread reads
 * the fork server's exit reports, and it needs the drive for that. */
static int crash(void *arg, void **out) {
  (void)arg;
  (void)out;
  abort();
}

static _Atomic bool streaming;

static void *stream(void *arg) {
  cf_executor *ex = arg;
  while (atomic_load(&streaming)) {
    cf_future *f;
    if (cf_submit(ex, square, (void *)(intptr_t)3, &f) != 0)
      break;
    cf_future_result(f, 30, NULL);
    cf_future_unref(f);
  }
  return NULL;
}

static void test_death_seen_while_the_pool_is_busy(void **state) {
  (void)state;
  cf_process_pool_opts o = {.max_workers = 2};
  cf_executor *ex;
  assert_int_equal(cf_process_pool_new(&o, &ex), 0);
  atomic_store(&streaming, true);
  pthread_t th[2];
  for (int k = 0; k < 2; k++)
    assert_int_equal(pthread_create(&th[k], NULL, stream, ex), 0);
  usleep(50 * 1000);
  double worst = 0;
  for (int round = 0; round < 5; round++) {
    cf_future *f;
    assert_int_equal(cf_submit(ex, crash, NULL, &f), 0);
    double t0 = now_s();
    /* bounded by its timeout; a waiter that kept the drive while the
     * others' results kept coming took until the stream stopped */
    assert_int_equal(cf_future_result(f, 20, NULL), CF_EBROKEN);
    double took = now_s() - t0;
    if (took > worst)
      worst = took;
    cf_future_unref(f);
  }
  atomic_store(&streaming, false);
  for (int k = 0; k < 2; k++)
    pthread_join(th[k], NULL);
  print_message("# slowest death report under load: %.3f s\n", worst);
  cf_executor_free(ex);
}

/* A task that naps 5 ms, then returns its argument. */
static int nap_value(void *arg, void **out) {
  struct timespec ts = {0, 5 * 1000 * 1000};
  nanosleep(&ts, NULL);
  *out = arg;
  return 0;
}

typedef struct {
  cf_future *f;
  int rc;
} poll_args;

/* Waits for a's future in short waits, each of which may take the drive
 * and read the result itself. */
static void *poll_result(void *arg) {
  poll_args *a = arg;
  double until = now_s() + 10;
  do
    a->rc = cf_future_result(a->f, 1e-4, NULL);
  while (a->rc == CF_ETIMEDOUT && now_s() < until);
  return NULL;
}

static void *shut_down(void *arg) {
  cf_executor_shutdown(arg, true, false);
  return NULL;
}

/* A shutdown that waits, with a task in flight whose result a waiting
 * thread (driving the pool) reads: the manager thread, asleep by then
 * with nothing left to wait for, still ends. It slept on until the pool
 * was freed by hand (never, in a shutdown that waits) when the waiter
 * did not ring it. */
static void test_shutdown_while_a_waiter_drives(void **state) {
  (void)state;
  int hung = 0;
  for (int trial = 0; trial < 30 && !hung; trial++) {
    cf_process_pool_opts o = {.max_workers = 1};
    cf_executor *ex;
    assert_int_equal(cf_process_pool_new(&o, &ex), 0);
    poll_args a = {.rc = -1};
    assert_int_equal(cf_submit(ex, nap_value, (void *)(intptr_t)trial, &a.f),
                     0);
    pthread_t waiter, closer;
    assert_int_equal(pthread_create(&waiter, NULL, poll_result, &a), 0);
    usleep(1000); /* the task runs: the shutdown finds it in flight */
    assert_int_equal(pthread_create(&closer, NULL, shut_down, ex), 0);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    if (pthread_timedjoin_np(closer, NULL, &until) != 0) {
      hung = trial + 1;
      break; /* the pool and its threads are left as they are */
    }
    pthread_join(waiter, NULL);
    assert_int_equal(a.rc, 0);
    cf_future_unref(a.f);
    cf_executor_free(ex);
  }
  if (hung)
    fail_msg("trial %d: shutdown(wait) still waits after 10 s", hung);
}

/* Freeing the pool while other threads still hold (done) futures of it,
 * then waiting on them: nothing reaches the freed pool. */
static void test_futures_outlive_the_pool(void **state) {
  (void)state;
  cf_process_pool_opts o = {.max_workers = 1};
  cf_executor *ex;
  assert_int_equal(cf_process_pool_new(&o, &ex), 0);
  cf_future *fs[10];
  for (intptr_t i = 0; i < 10; i++)
    assert_int_equal(cf_submit(ex, square, (void *)i, &fs[i]), 0);
  cf_executor_free(ex);
  for (intptr_t i = 0; i < 10; i++) {
    void *v;
    assert_int_equal(cf_future_result(fs[i], 5, &v), 0);
    assert_int_equal((intptr_t)v, i * i);
    cf_future_unref(fs[i]);
  }
}

#define T(f) cmocka_unit_test_setup_teardown(f, arm_watchdog, disarm_watchdog)

int main(void) {
  test_pid = getpid();
  const struct CMUnitTest tests[] = {
      T(test_mixed_sizes_in_order),
      T(test_threads_submit_and_wait),
      T(test_unwaited_futures_complete),
      T(test_callback_on_the_waiting_thread),
      T(test_futures_outlive_the_pool),
      T(test_callback_submits_to_another_pool),
      T(test_death_seen_while_the_pool_is_busy),
      T(test_shutdown_while_a_waiter_drives),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
