/* Stress: many threads submitting, cancelling, waiting and mapping at
 * random against pools of 1-8 workers, with tasks that themselves submit
 * and wait; then shutdown under load. Checks that every future completes
 * exactly once and that the counters add up. Bounded in time.
 *
 *   stress_thread_pool [threads] [iterations] [seconds]
 *
 * Exits 0 on success; prints the first broken invariant otherwise. */
#include <pthread.h>
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
    if (!(cond)) {                                                             \
      if (atomic_fetch_add(&failures, 1) < 5)                                  \
        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,       \
                #cond);                                                        \
    }                                                                          \
  } while (0)

static _Atomic long executed;  /* task bodies run */
static _Atomic long callbacks; /* done-callbacks run */
static _Atomic long finished;  /* futures seen FINISHED (by their owners) */
static _Atomic long cancelled; /* futures seen CANCELLED */
static cf_executor *pool;
static double deadline;

static uint64_t xorshift(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static int leaf(void *arg, void **out) {
  atomic_fetch_add(&executed, 1);
  uintptr_t x = (uintptr_t)arg;
  if (x % 97 == 0)
    return cf_fail(CF_EINVAL, "unlucky %lu", (unsigned long)x);
  if (x % 13 == 0)
    usleep(x % 200);
  *out = (void *)(x + 1);
  return 0;
}

/* A task that fans out to children and waits on them (helping). */
static int parent(void *arg, void **out) {
  atomic_fetch_add(&executed, 1);
  uintptr_t x = (uintptr_t)arg;
  cf_future *kids[4];
  int n = 0;
  for (int i = 0; i < 4; i++)
    if (cf_submit(pool, leaf, (void *)(x * 4 + (uintptr_t)i + 1), &kids[n]) ==
        0)
      n++;
  uintptr_t sum = 0;
  for (int i = 0; i < n; i++) {
    void *v;
    if (cf_future_result(kids[i], CF_FOREVER, &v) == 0)
      sum += (uintptr_t)v;
    cf_future_unref(kids[i]);
  }
  *out = (void *)sum;
  return 0;
}

static int count_cb(cf_future *f, void *arg) {
  (void)f;
  (void)arg;
  atomic_fetch_add(&callbacks, 1);
  return 0;
}

/* The owner's view of one future: it must end exactly once. */
static void settle(cf_future *f) {
  int rc = cf_future_result(f, 30, NULL);
  CHECK(rc != CF_ETIMEDOUT);
  if (rc == CF_ECANCELLED)
    atomic_fetch_add(&cancelled, 1);
  else
    atomic_fetch_add(&finished, 1);
  CHECK(cf_future_done(f));
}

typedef struct client {
  uint64_t seed;
  long iterations;
  long submitted;
} client;

static void *client_main(void *p) {
  client *c = p;
  enum { BATCH = 16 };
  for (long it = 0; it < c->iterations && now_s() < deadline; it++) {
    cf_future *fs[BATCH];
    int n = 0;
    unsigned op = (unsigned)(xorshift(&c->seed) % 5);
    for (int i = 0; i < BATCH; i++) {
      cf_fn fn = xorshift(&c->seed) % 8 == 0 ? parent : leaf;
      if (cf_submit(pool, fn, (void *)(uintptr_t)(xorshift(&c->seed) % 10000),
                    &fs[n]) != 0)
        continue;
      c->submitted++;
      if (cf_future_add_done_callback(fs[n], count_cb, NULL) != 0)
        CHECK(0);
      n++;
    }
    switch (op) {
    case 0: /* cancel some at random */
      for (int i = 0; i < n; i++)
        if (xorshift(&c->seed) % 2)
          cf_future_cancel(fs[i]);
      break;
    case 1: { /* wait for the first, then all */
      CHECK(cf_wait(fs, (size_t)n, 30, CF_FIRST_COMPLETED, NULL) == 0);
      CHECK(cf_wait(fs, (size_t)n, 30, CF_ALL_COMPLETED, NULL) == 0);
      break;
    }
    case 2: { /* as_completed yields each once */
      cf_as_completed *ac;
      if (n > 0 && cf_as_completed_new(fs, (size_t)n, 30, &ac) == 0) {
        int got = 0;
        cf_future *f;
        while (cf_as_completed_next(ac, &f) == 0)
          got++;
        CHECK(got == n);
        cf_as_completed_free(ac);
      }
      break;
    }
    case 3: /* short timeouts */
      for (int i = 0; i < n; i++) {
        int rc = cf_future_result(
            fs[i], (double)(xorshift(&c->seed) % 3) * 1e-4, NULL);
        CHECK(rc == 0 || rc == CF_ETIMEDOUT || rc == CF_EFAILED);
      }
      break;
    default: { /* a small map, freed early half the time */
      uintptr_t items[32];
      for (int i = 0; i < 32; i++)
        items[i] = (uintptr_t)i;
      cf_map *m;
      if (cf_map_array(pool, leaf, items, 32, sizeof items[0], NULL, &m) == 0) {
        int stop = xorshift(&c->seed) % 2 ? 5 : 32;
        void *v;
        for (int i = 0; i < stop; i++) {
          int rc = cf_map_next(m, &v);
          CHECK(rc == 0 || rc == CF_EFAILED);
        }
        cf_map_free(m);
      }
    }
    }
    for (int i = 0; i < n; i++) {
      settle(fs[i]);
      cf_future_unref(fs[i]);
    }
  }
  return NULL;
}

static int run_round(size_t workers, int threads, long iterations) {
  cf_thread_pool_opts o = {.max_workers = workers};
  if (cf_thread_pool_new(&o, &pool) != 0)
    return 1;
  atomic_store(&executed, 0);
  atomic_store(&callbacks, 0);
  atomic_store(&finished, 0);
  atomic_store(&cancelled, 0);
  pthread_t th[64];
  client cs[64];
  for (int i = 0; i < threads; i++) {
    cs[i] =
        (client){.seed = 0x9E3779B97F4A7C15u ^ ((uint64_t)i * 7919 + workers),
                 .iterations = iterations};
    pthread_create(&th[i], NULL, client_main, &cs[i]);
  }
  long submitted = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(th[i], NULL);
    submitted += cs[i].submitted;
  }
  cf_executor_free(pool);
  long fin = atomic_load(&finished), can = atomic_load(&cancelled);
  /* every top-level future ended exactly once, and ran its callback once */
  CHECK(fin + can == submitted);
  CHECK(atomic_load(&callbacks) == submitted);
  /* top-level tasks that ran are exactly the FINISHED ones (children of
   * `parent` tasks and map items run too, so executed >= fin) */
  CHECK(atomic_load(&executed) >= fin);
  printf("workers=%zu threads=%d submitted=%ld finished=%ld cancelled=%ld "
         "executed=%ld\n",
         workers, threads, submitted, fin, can, atomic_load(&executed));
  return 0;
}

/* Shutdown under load: every submit either fails with CF_ESHUTDOWN or its
 * future ends; nothing hangs. */
typedef struct sub {
  uint64_t seed;
  long ok, refused;
} sub;

static void *submitter(void *p) {
  sub *s = p;
  for (int i = 0; i < 5000 && now_s() < deadline; i++) {
    cf_future *f;
    int rc = cf_submit(pool, leaf,
                       (void *)(uintptr_t)(xorshift(&s->seed) % 1000 + 1), &f);
    if (rc == CF_ESHUTDOWN) {
      s->refused++;
      continue;
    }
    CHECK(rc == 0);
    if (rc != 0)
      continue;
    rc = cf_future_result(f, 10, NULL);
    CHECK(rc == 0 || rc == CF_ECANCELLED || rc == CF_EFAILED);
    s->ok++;
    cf_future_unref(f);
  }
  return NULL;
}

static void shutdown_round(size_t workers, int threads, uint64_t seed) {
  cf_thread_pool_opts o = {.max_workers = workers};
  if (cf_thread_pool_new(&o, &pool) != 0) {
    CHECK(0);
    return;
  }
  pthread_t th[64];
  sub ss[64];
  for (int i = 0; i < threads; i++) {
    ss[i] = (sub){.seed = seed + (uint64_t)i * 31 + 1};
    pthread_create(&th[i], NULL, submitter, &ss[i]);
  }
  usleep((useconds_t)(seed % 3000));
  CHECK(cf_executor_shutdown(pool, seed % 2 == 0, seed % 3 == 0) == 0);
  for (int i = 0; i < threads; i++)
    pthread_join(th[i], NULL);
  cf_executor_free(pool);
}

/* Bursts from outside threads, each followed by a wait with no further
 * submission: a task stranded in the injection queue would show up as a
 * timeout here (nothing else would come along to rescue it). */
static void *burster(void *p) {
  long rounds = *(long *)p;
  enum { BURST = 2000 };
  cf_future **fs = malloc(BURST * sizeof *fs);
  if (!fs) {
    CHECK(0);
    return NULL;
  }
  for (long r = 0; r < rounds && now_s() < deadline; r++) {
    int n = 0;
    for (int i = 0; i < BURST; i++)
      if (cf_submit(pool, leaf, (void *)(uintptr_t)(i % 96 + 1), &fs[n]) == 0)
        n++;
    for (int i = 0; i < n; i++) {
      int rc = cf_future_result(fs[i], 10, NULL);
      CHECK(rc == 0);
      cf_future_unref(fs[i]);
    }
  }
  free(fs);
  return NULL;
}

static void burst_round(size_t workers, int threads, long rounds) {
  cf_thread_pool_opts o = {.max_workers = workers};
  if (cf_thread_pool_new(&o, &pool) != 0) {
    CHECK(0);
    return;
  }
  pthread_t th[64];
  for (int i = 0; i < threads; i++)
    pthread_create(&th[i], NULL, burster, &rounds);
  for (int i = 0; i < threads; i++)
    pthread_join(th[i], NULL);
  cf_executor_free(pool);
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 4;
  long iterations = argc > 2 ? atol(argv[2]) : 200;
  double seconds = argc > 3 ? atof(argv[3]) : 15;
  if (threads < 1 || threads > 64 || iterations < 1 || seconds <= 0) {
    fprintf(stderr, "usage: %s [threads 1..64] [iterations] [seconds]\n",
            argv[0]);
    return 2;
  }
  double start = now_s();
  const size_t sizes[] = {1, 2, 3, 8};
  for (int r = 0; r < 4; r++) {
    deadline = start + seconds * (r + 1) / 6.0;
    run_round(sizes[r], threads, iterations);
  }
  deadline = start + seconds * 5 / 6.0;
  for (int r = 0; r < 4 && now_s() < deadline; r++)
    burst_round(sizes[r], r % 2 ? 1 : threads, iterations / 10 + 1);
  deadline = start + seconds;
  for (uint64_t s = 1; s <= 12 && now_s() < deadline; s++)
    shutdown_round(sizes[s % 4], threads, s * 2654435761u);
  int f = atomic_load(&failures);
  printf("%s: %d failed checks in %.1f s\n", f ? "FAIL" : "PASS", f,
         now_s() - start);
  return f ? 1 : 0;
}
