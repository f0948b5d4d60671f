/* Stress: random green tasks on one loop. Each task does a few random
 * steps: sleep (0-2 ms), yield, spawn a child and await it (maybe with a
 * timeout), await a thread-pool task, wait for a promise that an outside
 * thread completes at random, cancel a random earlier task. An outside
 * thread also spawns into the loop and cancels tasks while it runs. Rounds
 * end either by running the loop dry or by freeing it with tasks still
 * suspended.
 *
 *   stress_green [seconds]
 *
 * Checks: every future a task or the test obtained ends (done) once the
 * loop ran dry or was freed; every green future ends FINISHED or
 * CANCELLED, never failed with an unexpected code; every wait returns 0,
 * CF_ETIMEDOUT (only with a finite timeout) or CF_ECANCELLED (only in a
 * cancelled task or for a cancelled future); counts add up. Bounded by an
 * alarm. Exits 0 on success. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cfutures.h>

static _Atomic int failures;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond) && atomic_fetch_add(&failures, 1) < 20)                        \
      fprintf(stderr, "stress_green:%d: %s\n", __LINE__, #cond);               \
  } while (0)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

enum { NPROM = 16, NRECENT = 64 };
static cf_loop *loop;
static cf_executor *pool;
static cf_future *promises[NPROM];
static cf_future *recent[NRECENT]; /* loop thread only */
static _Atomic long spawned, ran;
static _Atomic uint64_t seeds;

static int pool_work(void *arg, void **out) {
  usleep((useconds_t)((uintptr_t)arg % 500));
  *out = arg;
  return 0;
}

static int task(void *arg, void **out);

/* Spawns a task and tracks it (loop thread, or any thread for outside). */
static cf_future *spawn_one(unsigned depth) {
  cf_future *f = NULL;
  if (cf_loop_spawn(loop, task, (void *)(uintptr_t)depth, &f) != 0)
    return NULL;
  atomic_fetch_add(&spawned, 1);
  return f;
}

/* Fine outcomes of a wait: 0, a timeout when one was set, a cancel. */
static void check_wait(int rc, double timeout) {
  CHECK(rc == 0 || (rc == CF_ETIMEDOUT && timeout >= 0 && timeout < 1e9) ||
        rc == CF_ECANCELLED);
}

static int task(void *arg, void **out) {
  unsigned depth = (unsigned)(uintptr_t)arg;
  uint64_t s = atomic_fetch_add(&seeds, 0x9E3779B97F4A7C15ULL) | 1;
  atomic_fetch_add(&ran, 1);
  *out = arg;
  for (int step = (int)(rnd(&s) % 5); step >= 0; step--) {
    double timeout = rnd(&s) % 3 ? CF_FOREVER : 0.002;
    int rc = 0;
    switch (rnd(&s) % 7) {
    case 0:
      rc = cf_green_sleep((double)(rnd(&s) % 2000) * 1e-6);
      CHECK(rc == 0 || rc == CF_ECANCELLED);
      break;
    case 1:
      rc = cf_green_yield();
      CHECK(rc == 0 || rc == CF_ECANCELLED);
      break;
    case 2:
      if (depth < 4) {
        cf_future *c = spawn_one(depth + 1);
        if (c) {
          void *v = NULL;
          rc = cf_future_result(c, timeout, &v);
          check_wait(rc, timeout);
          if (rc == 0)
            CHECK((uintptr_t)v == depth + 1);
          if (rc == CF_ECANCELLED && cf_future_cancelled(c))
            rc = 0; /* the child was cancelled, not us */
          else if (rc == CF_ETIMEDOUT)
            rc = 0;
          cf_future_unref(c);
        }
      }
      break;
    case 3: {
      cf_future *p = NULL;
      if (cf_submit(pool, pool_work, (void *)(uintptr_t)rnd(&s), &p) == 0) {
        rc = cf_future_result(p, timeout, NULL);
        check_wait(rc, timeout);
        if (rc == CF_ETIMEDOUT)
          rc = 0;
        cf_future_unref(p);
      }
      break;
    }
    case 4:
      rc = cf_future_result(promises[rnd(&s) % NPROM], 0.003, NULL);
      CHECK(rc == 0 || rc == CF_ETIMEDOUT || rc == CF_ECANCELLED);
      if (rc == CF_ETIMEDOUT)
        rc = 0;
      break;
    case 5: { /* cancel someone recent (loop thread: no lock needed) */
      cf_future *v = recent[rnd(&s) % NRECENT];
      if (v) {
        rc = cf_green_cancel(v);
        CHECK(rc == 0 || rc == CF_EINVALSTATE);
        rc = 0;
      }
      break;
    }
    default: {
      size_t k = rnd(&s) % NRECENT;
      cf_future *c = spawn_one(depth + 1 > 4 ? 4 : depth + 1);
      cf_future_unref(recent[k]);
      recent[k] = c;
      break;
    }
    }
    if (rc == CF_ECANCELLED)
      return CF_ECANCELLED; /* cancelled: unwind */
  }
  return 0;
}

static _Atomic bool outside_stop;
static cf_future *mine[32]; /* the outside thread's; main checks them after */

static void *outside(void *arg) {
  uint64_t s = (uintptr_t)arg | 1;
  int set = 0;
  while (!atomic_load(&outside_stop)) {
    usleep((useconds_t)(rnd(&s) % 2000));
    size_t k = rnd(&s) % 32;
    if (mine[k] && rnd(&s) % 3 == 0) {
      int rc = cf_green_cancel(mine[k]);
      CHECK(rc == 0 || rc == CF_EINVALSTATE);
    }
    cf_future_unref(mine[k]);
    mine[k] = spawn_one(0);
    if (set < NPROM && rnd(&s) % 4 == 0)
      cf_future_set_result(promises[set++], NULL, NULL);
  }
  for (; set < NPROM; set++)
    cf_future_set_result(promises[set], NULL, NULL);
  return NULL;
}

static void on_alarm(int sig) {
  (void)sig;
  static const char m[] = "stress_green: hung (alarm)\n";
  (void)!write(2, m, sizeof m - 1);
  _exit(1);
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 5;
  if (!(seconds > 0)) {
    fprintf(stderr, "usage: stress_green [seconds]\n");
    return 2;
  }
  uint64_t seed = (uint64_t)time(NULL) * 2654435761u;
  printf("stress_green: seed %llu\n", (unsigned long long)seed);
  atomic_store(&seeds, seed);
  signal(SIGALRM, on_alarm);
  cf_thread_pool_opts po = {.max_workers = 2};
  if (cf_thread_pool_new(&po, &pool) != 0)
    return 1;
  double t0 = now_s();
  int rounds = 0;
  while (now_s() - t0 < seconds) {
    alarm(60);
    CHECK(cf_loop_new(NULL, &loop) == 0);
    for (int i = 0; i < NPROM; i++)
      promises[i] = cf_future_new();
    atomic_store(&outside_stop, false);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, outside, (void *)(uintptr_t)seed++) ==
          0);
    cf_future *roots[20];
    for (int i = 0; i < 20; i++)
      roots[i] = spawn_one(0);
    cf_future *all_roots = cf_future_new();
    /* Run a while, with tasks coming in from outside. */
    int rc = cf_loop_run_until_complete(loop, all_roots, 0.2);
    CHECK(rc == CF_ETIMEDOUT);
    atomic_store(&outside_stop, true);
    /* The outside thread must be done with the loop before it is freed. */
    pthread_join(th, NULL);
    if (rounds % 2 == 0) {
      /* Every promise was set: the loop runs dry. */
      CHECK(cf_loop_run(loop, 30) == 0);
      CHECK(cf_loop_tasks(loop) == 0);
    } /* else: freed with tasks suspended and queued */
    CHECK(cf_loop_free(loop) == 0); /* cancels whatever is left */
    for (int i = 0; i < 20; i++) {
      if (roots[i]) {
        CHECK(cf_future_done(roots[i]));
        cf_error e;
        if (!cf_future_cancelled(roots[i]))
          CHECK(cf_future_exception(roots[i], 0, &e) == 0 && e.code == 0);
      }
      cf_future_unref(roots[i]);
    }
    for (int i = 0; i < 32; i++) {
      if (mine[i]) /* the loop ran dry or was freed: done */
        CHECK(cf_future_done(mine[i]));
      cf_future_unref(mine[i]);
      mine[i] = NULL;
    }
    for (int i = 0; i < NRECENT; i++) {
      if (recent[i])
        CHECK(cf_future_done(recent[i]));
      cf_future_unref(recent[i]);
      recent[i] = NULL;
    }
    for (int i = 0; i < NPROM; i++)
      cf_future_unref(promises[i]);
    cf_future_unref(all_roots);
    rounds++;
  }
  alarm(0);
  cf_executor_free(pool);
  int bad = atomic_load(&failures);
  printf("stress_green: %d rounds, %ld tasks spawned, %ld ran, %d failures\n",
         rounds, atomic_load(&spawned), atomic_load(&ran), bad);
  return bad ? 1 : 0;
}
