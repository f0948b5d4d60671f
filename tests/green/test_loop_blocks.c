/* The loop's recycled task blocks (green/loop.c, "Task blocks are
 * recycled"): results stay right while blocks go round, futures outlive
 * their loop, the last unref happens on a thread without a loop or on the
 * owner of another loop, a loop is freed with blocks cached, two loops
 * share a thread, and a recycled block carries nothing of its last task
 * (a cancel, a green pool's mark). Run under ASan, where cached blocks are
 * poisoned and every block must be freed by the end (leak check), and
 * under TSan; also run with CFUTURES_DEBUG=1 (no cache at all). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include <cfutures.h>

enum { N = 1500 }; /* more than a loop keeps when idle (1,024) */

static cf_loop *new_loop(void) {
  cf_loop *l = NULL;
  assert_int_equal(cf_loop_new(NULL, &l), 0);
  return l;
}

static int plus_one(void *arg, void **out) {
  *out = (void *)((intptr_t)arg + 1);
  return 0;
}

/* One in four sleeps a little first, so that tasks overlap and fibers do
 * not simply pass from one task to the next (not all: a stack per sleeper
 * is slow to map under TSan). */
static int nap_plus_one(void *arg, void **out) {
  intptr_t i = (intptr_t)arg;
  int rc = i % 4 ? 0 : cf_green_sleep(0.001 * (double)(i / 4 % 3));
  *out = (void *)((intptr_t)arg + 1);
  return rc;
}

static void spawn_all(cf_loop *l, cf_fn fn, cf_future **fs, size_t n,
                      intptr_t base) {
  for (size_t i = 0; i < n; i++)
    assert_int_equal(cf_loop_spawn(l, fn, (void *)(base + (intptr_t)i), &fs[i]),
                     0);
}

static void check_all(cf_future **fs, size_t n, intptr_t base) {
  for (size_t i = 0; i < n; i++) {
    void *v = NULL;
    assert_int_equal(cf_future_result(fs[i], 0, &v), 0);
    assert_int_equal((intptr_t)v, base + (intptr_t)i + 1);
  }
}

/* Rounds of bursts, released forwards, backwards and every other one
 * (the rest kept across the next round, while their neighbours' blocks
 * are reused): every result stays its own. */
static void test_rounds(void **state) {
  (void)state;
  cf_loop *l = new_loop();
  static cf_future *fs[N], *kept[N];
  size_t nkept = 0;
  for (int round = 0; round < 6; round++) {
    intptr_t base = round * 100000;
    spawn_all(l, round % 2 ? nap_plus_one : plus_one, fs, N, base);
    assert_int_equal(cf_loop_run(l, 30), 0);
    check_all(fs, N, base);
    for (size_t i = 0; i < nkept; i++) { /* last round's survivors */
      void *v = NULL;
      assert_int_equal(cf_future_result(kept[i], 0, &v), 0);
      assert_int_equal((intptr_t)v, (round - 1) * 100000 + 2 * (intptr_t)i + 1);
      cf_future_unref(kept[i]);
    }
    nkept = 0;
    switch (round % 3) {
    case 0:
      for (size_t i = 0; i < N; i++)
        cf_future_unref(fs[i]);
      break;
    case 1:
      for (size_t i = N; i-- > 0;)
        cf_future_unref(fs[i]);
      break;
    default:
      for (size_t i = 0; i < N; i++)
        if (i % 2)
          cf_future_unref(fs[i]);
        else
          kept[nkept++] = fs[i];
    }
  }
  for (size_t i = 0; i < nkept; i++)
    cf_future_unref(kept[i]);
  assert_int_equal(cf_loop_free(l), 0);
}

/* Futures held past cf_loop_free: still readable, and their blocks go to
 * the allocator when released (the loop is gone). Some tasks were
 * cancelled before they started, some were suspended when the loop was
 * freed. */
static int sleep_long(void *arg, void **out) {
  (void)arg;
  *out = NULL;
  return cf_green_sleep(3600);
}

static void test_futures_outlive_loop(void **state) {
  (void)state;
  cf_loop *l = new_loop();
  static cf_future *fs[N];
  spawn_all(l, plus_one, fs, N, 0);
  assert_int_equal(cf_loop_run(l, 30), 0);
  cf_future *sleepers[10], *unstarted[10];
  for (int i = 0; i < 10; i++)
    assert_int_equal(cf_loop_spawn(l, sleep_long, NULL, &sleepers[i]), 0);
  cf_future *never = cf_future_new();
  cf_loop_run_until_complete(l, never, 0.05); /* the sleepers suspend */
  cf_future_unref(never);
  for (int i = 0; i < 10; i++) { /* never run: half cancelled, half left */
    assert_int_equal(cf_loop_spawn(l, plus_one, NULL, &unstarted[i]), 0);
    if (i % 2)
      assert_int_equal(cf_green_cancel(unstarted[i]), 0);
  }
  for (size_t i = 0; i < N / 2; i++) /* half released into the cache */
    cf_future_unref(fs[i]);
  assert_int_equal(cf_loop_free(l), 0);
  check_all(fs + N / 2, N - N / 2, N / 2);
  for (int i = 0; i < 10; i++) {
    assert_int_equal(cf_future_state_of(sleepers[i]), CF_CANCELLED);
    assert_int_equal(cf_future_state_of(unstarted[i]), CF_CANCELLED);
    cf_future_unref(sleepers[i]);
    cf_future_unref(unstarted[i]);
  }
  for (size_t i = N / 2; i < N; i++)
    cf_future_unref(fs[i]);
}

/* The last references dropped on other threads: one with no loop (blocks
 * to the allocator), one that owns a loop of its own (blocks into that
 * loop's cache, where its next spawns, on its loop and on ours, take
 * them), and the first loop freed before the second thread is done. */
typedef struct {
  cf_future **fs;
  size_t n;
  cf_loop *first; /* spawn onto it too (it is alive while we run) */
  _Atomic bool first_spawned;
  int failures;
} other_job;

static void *unref_plain(void *arg) {
  other_job *j = arg;
  for (size_t i = 0; i < j->n; i++)
    cf_future_unref(j->fs[i]);
  return NULL;
}

static void *unref_with_loop(void *arg) {
  other_job *j = arg;
  cf_loop *mine;
  if (cf_loop_new(NULL, &mine) != 0) {
    j->failures++;
    return NULL;
  }
  for (size_t i = 0; i < j->n; i++)
    cf_future_unref(j->fs[i]);
  /* Spawns on our loop and on the first one: both take cached blocks. */
  static cf_future *ours[N], *theirs[64];
  for (size_t i = 0; i < N; i++)
    if (cf_loop_spawn(mine, plus_one, (void *)(intptr_t)i, &ours[i]) != 0)
      j->failures++;
  for (size_t i = 0; i < 64; i++)
    if (cf_loop_spawn(j->first, plus_one, (void *)(intptr_t)i, &theirs[i]) != 0)
      j->failures++;
  atomic_store_explicit(&j->first_spawned, true, memory_order_release);
  if (cf_loop_run(mine, 30) != 0)
    j->failures++;
  for (size_t i = 0; i < N; i++) {
    void *v = NULL;
    if (cf_future_result(ours[i], 0, &v) != 0 || (intptr_t)v != (intptr_t)i + 1)
      j->failures++;
    cf_future_unref(ours[i]);
  }
  for (size_t i = 0; i < 64; i++) { /* run by the first loop's owner */
    void *v = NULL;
    if (cf_future_result(theirs[i], 30, &v) != 0 ||
        (intptr_t)v != (intptr_t)i + 1)
      j->failures++;
    cf_future_unref(theirs[i]);
  }
  if (cf_loop_free(mine) != 0)
    j->failures++;
  return NULL;
}

static bool flag_set(void *ctx) {
  return atomic_load_explicit((_Atomic bool *)ctx, memory_order_acquire);
}

static int wait_flag(void *arg, void **out) {
  *out = NULL;
  while (!flag_set(arg))
    if (cf_green_sleep(0.001) != 0)
      return CF_ECANCELLED;
  return 0;
}

static void test_unref_on_other_threads(void **state) {
  (void)state;
  cf_loop *l = new_loop();
  static cf_future *a[N], *b[N];
  spawn_all(l, plus_one, a, N, 0);
  spawn_all(l, plus_one, b, N, 0);
  assert_int_equal(cf_loop_run(l, 30), 0);
  check_all(a, N, 0);
  check_all(b, N, 0);
  other_job ja = {.fs = a, .n = N};
  other_job jb = {.fs = b, .n = N, .first = l};
  pthread_t ta, tb;
  assert_int_equal(pthread_create(&ta, NULL, unref_plain, &ja), 0);
  assert_int_equal(pthread_create(&tb, NULL, unref_with_loop, &jb), 0);
  /* Run the other thread's spawns on our loop, then free it while that
   * thread may still be releasing blocks of ours. */
  cf_future *w;
  assert_int_equal(cf_loop_spawn(l, wait_flag, &jb.first_spawned, &w), 0);
  assert_int_equal(cf_loop_run(l, 30), 0);
  cf_future_unref(w);
  assert_int_equal(cf_loop_free(l), 0);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  assert_int_equal(jb.failures, 0);
}

/* Two loops on one thread: the newer one's cache takes the blocks; freed
 * first, the older one's takes over. Each loop freed with blocks cached
 * (the leak check of the ASan build sees that they are freed). */
static void test_two_loops_one_thread(void **state) {
  (void)state;
  cf_loop *old = new_loop();
  static cf_future *fs[N], *gs[N];
  spawn_all(old, plus_one, fs, N, 0);
  assert_int_equal(cf_loop_run(old, 30), 0);
  cf_loop *young = new_loop();
  spawn_all(young, plus_one, gs, N, 7);
  assert_int_equal(cf_loop_run(young, 30), 0);
  for (size_t i = 0; i < N; i++) /* into young's cache */
    cf_future_unref(fs[i]);
  spawn_all(old, plus_one, fs, N, 3); /* from young's cache */
  assert_int_equal(cf_loop_run(old, 30), 0);
  check_all(fs, N, 3);
  check_all(gs, N, 7);
  assert_int_equal(cf_loop_free(young), 0); /* with blocks cached */
  for (size_t i = 0; i < N; i++) { /* young's tasks, into old's cache */
    cf_future_unref(gs[i]);
    cf_future_unref(fs[i]);
  }
  spawn_all(old, plus_one, fs, N, 5);
  assert_int_equal(cf_loop_run(old, 30), 0);
  check_all(fs, N, 5);
  for (size_t i = 0; i < N / 2; i++)
    cf_future_unref(fs[i]);
  assert_int_equal(cf_loop_free(old), 0); /* with blocks cached */
  for (size_t i = N / 2; i < N; i++)      /* no loop left: to the allocator */
    cf_future_unref(fs[i]);
}

/* A block whose last task was cancelled before it started, or ran in a
 * green pool, starts its next task clean: not cancelled, not the pool's. */
static _Atomic int in_pool_runs;
static int mark(void *arg, void **out) {
  (void)arg;
  atomic_fetch_add(&in_pool_runs, 1);
  *out = NULL;
  return 0;
}

static int wait_for(void *arg, void **out) {
  /* A task of the pool waiting for its own pool gets CF_EDEADLK; any other
   * green task may wait. */
  return cf_green_pool_waitall(arg, 10) == 0 ? (*out = (void *)7, 0)
                                             : (*out = NULL, CF_EFAILED);
}

static void test_recycled_blocks_start_clean(void **state) {
  (void)state;
  cf_loop *l = new_loop();
  static cf_future *fs[N];
  spawn_all(l, plus_one, fs, N, 0);
  for (size_t i = 0; i < N; i++)
    assert_int_equal(cf_green_cancel(fs[i]), 0);
  assert_int_equal(cf_loop_run(l, 30), 0);
  for (size_t i = 0; i < N; i++) {
    assert_int_equal(cf_future_state_of(fs[i]), CF_CANCELLED);
    cf_future_unref(fs[i]);
  }
  spawn_all(l, plus_one, fs, N, 0); /* the cancelled tasks' blocks */
  assert_int_equal(cf_loop_run(l, 30), 0);
  check_all(fs, N, 0);
  for (size_t i = 0; i < N; i++)
    cf_future_unref(fs[i]);
  /* Blocks that ran as the pool's tasks, then a plain task that waits for
   * the pool: if it inherited the pool's mark it would get CF_EDEADLK. */
  cf_executor *gp;
  assert_int_equal(cf_green_pool_new(l, 8, &gp), 0);
  for (size_t i = 0; i < 100; i++) {
    cf_future *f;
    assert_int_equal(cf_submit(gp, mark, NULL, &f), 0);
    cf_future_unref(f);
  }
  assert_int_equal(cf_green_pool_waitall(gp, 30), 0);
  assert_int_equal(atomic_load(&in_pool_runs), 100);
  for (size_t i = 0; i < 100; i++) {
    cf_future *f;
    assert_int_equal(cf_loop_spawn(l, wait_for, gp, &f), 0);
    assert_int_equal(cf_loop_run_until_complete(l, f, 30), 0);
    void *v = NULL;
    assert_int_equal(cf_future_result(f, 0, &v), 0);
    assert_int_equal((intptr_t)v, 7);
    cf_future_unref(f);
  }
  cf_executor_free(gp);
  assert_int_equal(cf_loop_free(l), 0);
}

/* A burst, then the loop goes idle (a task sleeps): the scheduler gives
 * the burst's blocks back; the next burst works as before. */
static int short_nap(void *arg, void **out) {
  (void)arg;
  *out = NULL;
  return cf_green_sleep(0.02);
}

static void test_idle_trim(void **state) {
  (void)state;
  cf_loop *l = new_loop();
  static cf_future *fs[N];
  for (int round = 0; round < 3; round++) {
    spawn_all(l, plus_one, fs, N, round);
    assert_int_equal(cf_loop_run(l, 30), 0);
    check_all(fs, N, round);
    for (size_t i = 0; i < N; i++)
      cf_future_unref(fs[i]);
    cf_future *f;
    assert_int_equal(cf_loop_spawn(l, short_nap, NULL, &f), 0);
    assert_int_equal(cf_loop_run_until_complete(l, f, 30), 0);
    void *v;
    assert_int_equal(cf_future_result(f, 0, &v), 0);
    cf_future_unref(f);
  }
  assert_int_equal(cf_loop_free(l), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rounds),
      cmocka_unit_test(test_futures_outlive_loop),
      cmocka_unit_test(test_unref_on_other_threads),
      cmocka_unit_test(test_two_loops_one_thread),
      cmocka_unit_test(test_recycled_blocks_start_clean),
      cmocka_unit_test(test_idle_trim),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
