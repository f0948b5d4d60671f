/* Stress: submits, cancels, crashing tasks and shutdowns at random against
 * process pools, checking that every future completes exactly once (each
 * future's done-callback bumps its own counter, which must end at 1) and
 * that nothing hangs. Bounded in time.
 *
 *   stress_process_pool [threads] [rounds] [seconds]                     */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cfutures.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static _Atomic int failures;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond) && atomic_fetch_add(&failures, 1) < 5)                         \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
  } while (0)

static _Atomic long callbacks, submitted;
/* One counter per future of the round, bumped by its done-callback. */
#define MAX_FUTURES (1 << 18)
static _Atomic unsigned char *times_done;
static cf_executor *pool;
static double deadline;

static int work(void *arg, void **out) {
  uintptr_t x = (uintptr_t)arg;
  switch (x % 41) {
  case 0:
    raise(SIGSEGV);
    break;
  case 1:
    _exit(7);
  case 2:
    return cf_fail(CF_EINVAL, "refused %lu", (unsigned long)x);
  default:
    if (x % 5 == 0)
      usleep(200);
  }
  *out = (void *)(x + 1);
  return 0;
}

static int on_done(cf_future *f, void *arg) {
  (void)f;
  atomic_fetch_add_explicit(&times_done[(uintptr_t)arg], 1,
                            memory_order_relaxed);
  atomic_fetch_add(&callbacks, 1);
  return 0;
}

static uint64_t xorshift(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void *client(void *p) {
  uint64_t seed = (uint64_t)(uintptr_t)p * 7919 + 1;
  while (now_s() < deadline) {
    cf_future *fs[8];
    int n = 0;
    for (int i = 0; i < 8; i++) {
      int rc = cf_submit(pool, work,
                         (void *)(uintptr_t)(xorshift(&seed) % 100000), &fs[n]);
      if (rc == CF_ESHUTDOWN)
        break;
      CHECK(rc == 0);
      if (rc)
        continue;
      long id = atomic_fetch_add(&submitted, 1);
      if (id >= MAX_FUTURES) { /* out of counters: let it run unchecked */
        atomic_fetch_sub(&submitted, 1);
        cf_future_unref(fs[n]);
        continue;
      }
      CHECK(cf_future_add_done_callback(fs[n], on_done,
                                        (void *)(uintptr_t)id) == 0);
      n++;
    }
    for (int i = 0; i < n; i++)
      if (xorshift(&seed) % 4 == 0)
        cf_future_cancel(fs[i]);
    for (int i = 0; i < n; i++) {
      int rc = cf_future_result(fs[i], 30, NULL);
      CHECK(rc == 0 || rc == CF_ECANCELLED || rc == CF_EFAILED ||
            rc == CF_EBROKEN);
      cf_future_unref(fs[i]);
    }
    if (n < 8)
      break; /* shut down */
  }
  return NULL;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 3;
  int rounds = argc > 2 ? atoi(argv[2]) : 6;
  double seconds = argc > 3 ? atof(argv[3]) : 12;
  if (threads < 1 || threads > 32 || rounds < 1 || seconds <= 0)
    return 2;
  setvbuf(stdout, NULL, _IOLBF, 0); /* progress shows even if killed */
  times_done = calloc(MAX_FUTURES, sizeof *times_done);
  if (!times_done)
    return 2;
  double start = now_s();
  for (int r = 0; r < rounds && now_s() - start < seconds; r++) {
    atomic_store(&callbacks, 0);
    atomic_store(&submitted, 0);
    for (long i = 0; i < MAX_FUTURES; i++)
      atomic_store_explicit(&times_done[i], 0, memory_order_relaxed);
    cf_process_pool_opts o = {.max_workers = (size_t)(r % 3 + 1),
                              .max_tasks_per_child = (size_t)(r % 2 ? 5 : 0)};
    if (cf_process_pool_new(&o, &pool) != 0) {
      CHECK(0);
      break;
    }
    deadline = now_s() + seconds / rounds * 0.8;
    pthread_t th[32];
    for (int i = 0; i < threads; i++)
      pthread_create(&th[i], NULL, client, (void *)(uintptr_t)(r * 100 + i));
    usleep((useconds_t)(r % 4 + 1) * 150000);
    /* shut down under load, half the time cancelling what is queued */
    CHECK(cf_executor_shutdown(pool, r % 2 == 0, r % 3 == 0) == 0);
    for (int i = 0; i < threads; i++)
      pthread_join(th[i], NULL);
    cf_executor_free(pool);
    /* every future submitted ended exactly once */
    CHECK(atomic_load(&callbacks) == atomic_load(&submitted));
    long wrong = 0;
    for (long i = 0; i < atomic_load(&submitted); i++)
      wrong += atomic_load_explicit(&times_done[i], memory_order_relaxed) != 1;
    CHECK(wrong == 0);
    printf("round %d: %ld futures, %ld callbacks\n", r, atomic_load(&submitted),
           atomic_load(&callbacks));
  }
  free((void *)times_done);
  int f = atomic_load(&failures);
  printf("%s: %d failed checks in %.1f s\n", f ? "FAIL" : "PASS", f,
         now_s() - start);
  return f ? 1 : 0;
}
