/* Stress: client threads submitting, cancelling, waiting (results with
 * random timeouts, cf_wait, as_completed) and mapping at random against
 * pools of 1..max workers, with tasks that themselves submit, map and wait
 * (helping); outside bursts; then shutdown under load. Bounded in time.
 *
 *   stress_thread_pool [max_workers 1..64] [iterations] [seconds] [clients]
 *
 * Checks, per round:
 *  - every top-level future ends exactly once: its done-callback ran once
 *    (count and sum of ids match what was submitted), its owner saw it
 *    FINISHED or CANCELLED, never timed out;
 *  - counters add up: top-level task bodies run == top-level futures
 *    FINISHED; children run == children FINISHED; map items that produced
 *    a result == results destroyed (each exactly once, by its future);
 *  - nothing leaks (run under ASan: LeakSanitizer checks at exit).
 * Shutdown under load: every submit either fails with CF_ESHUTDOWN or its
 * future ends within 10 s; a submit after shutdown returned fails; after
 * shutdown(wait=true) returned, every accepted future is done.
 *
 * Worker threads never print or exit: they count; the main thread checks.
 * Exits 0 on success, 1 with the first broken invariants printed. */
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
      if (atomic_fetch_add(&failures, 1) < 10)                                 \
        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,       \
                #cond);                                                        \
    }                                                                          \
  } while (0)

/* Counters of one round. */
static _Atomic long top_exec;       /* top-level task bodies run */
static _Atomic long top_finished;   /* top-level futures seen FINISHED */
static _Atomic long top_cancelled;  /* top-level futures seen CANCELLED */
static _Atomic long kid_exec;       /* children run (submitted by tasks) */
static _Atomic long kid_finished;   /* children seen FINISHED by parents */
static _Atomic long kid_cancelled;  /* children seen CANCELLED by parents */
static _Atomic long map_ok;         /* map items that returned a result */
static _Atomic long map_destroyed;  /* map results destroyed */
static _Atomic long cb_count;       /* done-callbacks run */
static _Atomic uint64_t cb_sum;     /* sum of their ids */
static _Atomic long inner_failures; /* broken invariants seen by tasks */
static cf_executor *pool;
static double deadline;

static uint64_t xorshift(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* The body every leaf shares: fails now and then, sleeps now and then. */
static int leaf_body(uintptr_t x, void **out) {
  if (x % 97 == 0)
    return cf_fail(CF_EINVAL, "unlucky %lu", (unsigned long)x);
  if (x % 13 == 0)
    usleep((useconds_t)(x % 200));
  *out = (void *)(x + 1);
  return 0;
}

static int top_leaf(void *arg, void **out) {
  atomic_fetch_add(&top_exec, 1);
  return leaf_body((uintptr_t)arg, out);
}

static int kid_leaf(void *arg, void **out) {
  atomic_fetch_add(&kid_exec, 1);
  return leaf_body((uintptr_t)arg, out);
}

static void box_destroy(void *v) {
  atomic_fetch_add(&map_destroyed, 1);
  free(v);
}

/* A map item: its result is a box the future must destroy exactly once. */
static int map_leaf(void *arg, void **out) {
  uintptr_t x = *(uintptr_t *)arg;
  if (x % 11 == 5)
    return cf_fail(CF_EINVAL, "map item %lu", (unsigned long)x);
  uintptr_t *box = malloc(sizeof *box);
  if (!box)
    return CF_ENOMEM;
  *box = x;
  *out = box;
  atomic_fetch_add(&map_ok, 1);
  return 0;
}

/* Settles one child the parent owns. */
static void settle_kid(cf_future *f) {
  int rc = cf_future_result(f, CF_FOREVER, NULL);
  if (rc == CF_ECANCELLED)
    atomic_fetch_add(&kid_cancelled, 1);
  else if (rc == 0 || rc == CF_EFAILED)
    atomic_fetch_add(&kid_finished, 1);
  else
    atomic_fetch_add(&inner_failures, 1);
  cf_future_unref(f);
}

/* A task that fans out to children, cancels some, and waits on them in one
 * of three ways (each helps on a worker). */
static int parent(void *arg, void **out) {
  atomic_fetch_add(&top_exec, 1);
  uint64_t seed = (uintptr_t)arg * 0x9E3779B97F4A7C15u + 1;
  cf_future *kids[6];
  int n = 0;
  for (int i = 0; i < 6; i++)
    if (cf_submit(pool, kid_leaf, (void *)(uintptr_t)(xorshift(&seed) % 1000),
                  &kids[n]) == 0)
      n++;
  if (xorshift(&seed) % 3 == 0 && n > 0)
    cf_future_cancel(kids[n - 1]);
  switch (xorshift(&seed) % 3) {
  case 0:
    if (n > 0 && cf_wait(kids, (size_t)n, 30, CF_ALL_COMPLETED, NULL) != 0)
      atomic_fetch_add(&inner_failures, 1);
    break;
  case 1: {
    cf_as_completed *ac;
    if (n > 0 && cf_as_completed_new(kids, (size_t)n, 30, &ac) == 0) {
      cf_future *f;
      int got = 0, rc;
      while ((rc = cf_as_completed_next(ac, &f)) == 0)
        got++;
      if (rc != CF_EDONE || got != n)
        atomic_fetch_add(&inner_failures, 1);
      cf_as_completed_free(ac);
    }
    break;
  }
  default:
    break; /* cf_future_result below */
  }
  for (int i = 0; i < n; i++)
    settle_kid(kids[i]);
  *out = (void *)(uintptr_t)n;
  return 0;
}

/* A task that maps over a few items from inside the pool. */
static int mapper(void *arg, void **out) {
  atomic_fetch_add(&top_exec, 1);
  uintptr_t items[12];
  for (int i = 0; i < 12; i++)
    items[i] = (uintptr_t)arg + (uintptr_t)i;
  cf_map_opts o = {.result_destroy = box_destroy,
                   .window = (uintptr_t)arg % 2 ? 3 : 0};
  cf_map *m;
  int rc = cf_map_array(pool, map_leaf, items, 12, sizeof items[0], &o, &m);
  if (rc != 0)
    return rc;
  for (int i = 0; i < 12; i++) {
    void *v;
    rc = cf_map_next(m, &v);
    if (items[i] % 11 == 5 ? rc != CF_EFAILED
                           : rc != 0 || *(uintptr_t *)v != items[i])
      atomic_fetch_add(&inner_failures, 1);
  }
  cf_map_free(m);
  *out = NULL;
  return 0;
}

static int count_cb(cf_future *f, void *arg) {
  (void)f;
  atomic_fetch_add(&cb_count, 1);
  atomic_fetch_add(&cb_sum, (uint64_t)(uintptr_t)arg);
  return 0;
}

/* The owner's view of one top-level future: it must end exactly once. */
static void settle(cf_future *f) {
  int rc = cf_future_result(f, 30, NULL);
  CHECK(rc == 0 || rc == CF_EFAILED || rc == CF_ECANCELLED);
  if (rc == CF_ECANCELLED)
    atomic_fetch_add(&top_cancelled, 1);
  else if (rc == 0 || rc == CF_EFAILED)
    atomic_fetch_add(&top_finished, 1);
  CHECK(cf_future_done(f));
  cf_future_state st = cf_future_state_of(f);
  CHECK(st == (rc == CF_ECANCELLED ? CF_CANCELLED : CF_FINISHED));
}

typedef struct client {
  uint64_t seed;
  long iterations;
  long submitted;
  uint64_t id_sum;
  uint64_t next_id;
} client;

static void *client_main(void *p) {
  client *c = p;
  enum { BATCH = 16 };
  for (long it = 0; it < c->iterations && now_s() < deadline; it++) {
    cf_future *fs[BATCH];
    int n = 0;
    unsigned op = (unsigned)(xorshift(&c->seed) % 6);
    for (int i = 0; i < BATCH; i++) {
      unsigned kind = (unsigned)(xorshift(&c->seed) % 16);
      cf_fn fn = kind == 0 ? parent : kind == 1 ? mapper : top_leaf;
      int rc = cf_submit(pool, fn,
                         (void *)(uintptr_t)(xorshift(&c->seed) % 10000 + 1),
                         &fs[n]);
      CHECK(rc == 0);
      if (rc != 0)
        continue;
      c->submitted++;
      uint64_t id = c->next_id++;
      c->id_sum += id;
      CHECK(cf_future_add_done_callback(fs[n], count_cb,
                                        (void *)(uintptr_t)id) == 0);
      n++;
    }
    switch (op) {
    case 0: /* cancel some at random */
      for (int i = 0; i < n; i++)
        if (xorshift(&c->seed) % 2)
          cf_future_cancel(fs[i]);
      break;
    case 1: { /* wait for the first, then all */
      bool done[BATCH];
      if (n == 0)
        break;
      CHECK(cf_wait(fs, (size_t)n, 30, CF_FIRST_COMPLETED, done) == 0);
      int any = 0;
      for (int i = 0; i < n; i++)
        any += done[i];
      CHECK(any > 0);
      CHECK(cf_wait(fs, (size_t)n, 30, CF_ALL_COMPLETED, done) == 0);
      for (int i = 0; i < n; i++)
        CHECK(done[i] && cf_future_done(fs[i]));
      break;
    }
    case 2: { /* as_completed yields each once */
      cf_as_completed *ac;
      if (n > 0 && cf_as_completed_new(fs, (size_t)n, 30, &ac) == 0) {
        int got = 0, rc;
        cf_future *f;
        while ((rc = cf_as_completed_next(ac, &f)) == 0) {
          CHECK(cf_future_done(f));
          got++;
        }
        CHECK(rc == CF_EDONE);
        CHECK(got == n);
        cf_as_completed_free(ac);
      }
      break;
    }
    case 3: /* short random timeouts, with cancels mixed in */
      for (int i = 0; i < n; i++) {
        int rc = cf_future_result(
            fs[i], (double)(xorshift(&c->seed) % 4) * 1e-4, NULL);
        CHECK(rc == 0 || rc == CF_ETIMEDOUT || rc == CF_EFAILED ||
              rc == CF_ECANCELLED);
        if (rc == CF_ETIMEDOUT && xorshift(&c->seed) % 2)
          cf_future_cancel(fs[i]);
      }
      break;
    case 4: { /* a map from outside, freed early half the time */
      uintptr_t items[32];
      for (int i = 0; i < 32; i++)
        items[i] = (uintptr_t)i + (uintptr_t)it * 32;
      cf_map_opts o = {.result_destroy = box_destroy,
                       .window = xorshift(&c->seed) % 2 ? 4 : 0};
      cf_map *m;
      if (cf_map_array(pool, map_leaf, items, 32, sizeof items[0], &o, &m) ==
          0) {
        int stop = xorshift(&c->seed) % 2 ? 5 : 32;
        void *v;
        for (int i = 0; i < stop; i++) {
          int rc = cf_map_next(m, &v);
          CHECK(items[i] % 11 == 5 ? rc == CF_EFAILED
                                   : rc == 0 && *(uintptr_t *)v == items[i]);
        }
        if (stop == 32)
          CHECK(cf_map_next(m, &v) == CF_EDONE);
        cf_map_free(m);
      } else {
        CHECK(0);
      }
      break;
    }
    default: /* just results */
      break;
    }
    for (int i = 0; i < n; i++) {
      settle(fs[i]);
      cf_future_unref(fs[i]);
    }
  }
  return NULL;
}

static void run_round(size_t workers, int clients, long iterations) {
  cf_thread_pool_opts o = {.max_workers = workers};
  if (cf_thread_pool_new(&o, &pool) != 0) {
    CHECK(0);
    return;
  }
  atomic_store(&top_exec, 0);
  atomic_store(&top_finished, 0);
  atomic_store(&top_cancelled, 0);
  atomic_store(&kid_exec, 0);
  atomic_store(&kid_finished, 0);
  atomic_store(&kid_cancelled, 0);
  atomic_store(&map_ok, 0);
  atomic_store(&map_destroyed, 0);
  atomic_store(&cb_count, 0);
  atomic_store(&cb_sum, 0);
  atomic_store(&inner_failures, 0);
  pthread_t th[64];
  client cs[64];
  for (int i = 0; i < clients; i++) {
    cs[i] = (client){
        .seed = 0x9E3779B97F4A7C15u ^ ((uint64_t)i * 7919 + workers),
        .iterations = iterations,
        .next_id = ((uint64_t)i + 1) << 40,
    };
    if (pthread_create(&th[i], NULL, client_main, &cs[i]) != 0) {
      CHECK(0);
      clients = i;
      break;
    }
  }
  long submitted = 0;
  uint64_t id_sum = 0;
  for (int i = 0; i < clients; i++) {
    pthread_join(th[i], NULL);
    submitted += cs[i].submitted;
    id_sum += cs[i].id_sum;
  }
  cf_executor_free(pool); /* joins the workers: every callback has run */
  long fin = atomic_load(&top_finished), can = atomic_load(&top_cancelled);
  CHECK(fin + can == submitted);
  CHECK(atomic_load(&cb_count) == submitted);
  CHECK(atomic_load(&cb_sum) == id_sum);
  CHECK(atomic_load(&top_exec) == fin); /* ran iff FINISHED */
  CHECK(atomic_load(&kid_exec) == atomic_load(&kid_finished));
  CHECK(atomic_load(&map_ok) == atomic_load(&map_destroyed));
  CHECK(atomic_load(&inner_failures) == 0);
  printf("round: workers=%zu clients=%d submitted=%ld finished=%ld "
         "cancelled=%ld kids=%ld+%ld map_results=%ld\n",
         workers, clients, submitted, fin, can, atomic_load(&kid_finished),
         atomic_load(&kid_cancelled), atomic_load(&map_ok));
}

/* Bursts from outside threads, each followed by a wait with no further
 * submission: a task stranded in the injection queue (a lost wake-up)
 * shows up as a timeout here, since nothing else would come to rescue it. */
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
      if (cf_submit(pool, top_leaf, (void *)(uintptr_t)(i % 96 + 1), &fs[n]) ==
          0)
        n++;
    CHECK(n == BURST);
    for (int i = 0; i < n; i++) {
      int rc = cf_future_result(fs[i], 10, NULL);
      CHECK(rc == 0);
      cf_future_unref(fs[i]);
    }
    if (r % 4 == 3)
      usleep(2000); /* let the workers park between some bursts */
  }
  free(fs);
  return NULL;
}

static void burst_round(size_t workers, int clients, long rounds) {
  cf_thread_pool_opts o = {.max_workers = workers};
  if (cf_thread_pool_new(&o, &pool) != 0) {
    CHECK(0);
    return;
  }
  pthread_t th[64];
  for (int i = 0; i < clients; i++)
    if (pthread_create(&th[i], NULL, burster, &rounds) != 0) {
      CHECK(0);
      clients = i;
      break;
    }
  for (int i = 0; i < clients; i++)
    pthread_join(th[i], NULL);
  cf_executor_free(pool);
}

/* ---- shutdown under load ------------------------------------------------- */

static _Atomic int shutdown_state; /* 0, 1: shutdown returned, 2: with wait */

typedef struct sub {
  uint64_t seed;
  long ok, refused;
} sub;

static void *submitter(void *p) {
  sub *s = p;
  for (int i = 0; i < 5000 && now_s() < deadline; i++) {
    /* acquire: pairs with the release store after shutdown returned. */
    int before = atomic_load_explicit(&shutdown_state, memory_order_acquire);
    cf_future *f;
    unsigned kind = (unsigned)(xorshift(&s->seed) % 8);
    cf_fn fn = kind == 0 ? parent : kind == 1 ? mapper : top_leaf;
    int rc = cf_submit(pool, fn,
                       (void *)(uintptr_t)(xorshift(&s->seed) % 1000 + 1), &f);
    if (rc == CF_ESHUTDOWN) {
      if (++s->refused >= 100)
        break; /* refused for good (checked above: never accepted again) */
      continue;
    }
    CHECK(rc == 0);
    CHECK(before == 0); /* accepted only before shutdown returned */
    if (rc != 0)
      continue;
    if (atomic_load_explicit(&shutdown_state, memory_order_acquire) == 2)
      CHECK(cf_future_done(f)); /* shutdown(wait) ran or cancelled it */
    if (xorshift(&s->seed) % 4 == 0)
      cf_future_cancel(f);
    rc = cf_future_result(f, 10, NULL);
    CHECK(rc != CF_ETIMEDOUT); /* nothing hangs */
    CHECK(rc == 0 || rc == CF_ECANCELLED || rc == CF_EFAILED);
    s->ok++;
    cf_future_unref(f);
  }
  return NULL;
}

static void shutdown_round(size_t workers, int clients, uint64_t seed) {
  cf_thread_pool_opts o = {.max_workers = workers};
  if (cf_thread_pool_new(&o, &pool) != 0) {
    CHECK(0);
    return;
  }
  atomic_store(&shutdown_state, 0);
  atomic_store(&map_ok, 0);
  atomic_store(&map_destroyed, 0);
  atomic_store(&inner_failures, 0);
  pthread_t th[64];
  sub ss[64];
  for (int i = 0; i < clients; i++) {
    ss[i] = (sub){.seed = seed + (uint64_t)i * 31 + 1};
    if (pthread_create(&th[i], NULL, submitter, &ss[i]) != 0) {
      CHECK(0);
      clients = i;
      break;
    }
  }
  usleep((useconds_t)(seed % 20000)); /* 0-20 ms of load first */
  bool wait = seed % 2 == 0, cancel = seed % 3 == 0;
  CHECK(cf_executor_shutdown(pool, wait, cancel) == 0);
  /* release: every later submit must see the pool shut down. */
  atomic_store_explicit(&shutdown_state, wait ? 2 : 1, memory_order_release);
  long ok = 0, refused = 0;
  for (int i = 0; i < clients; i++) {
    pthread_join(th[i], NULL);
    ok += ss[i].ok;
    refused += ss[i].refused;
  }
  cf_executor_free(pool);
  CHECK(atomic_load(&map_ok) == atomic_load(&map_destroyed));
  printf("shutdown: workers=%zu wait=%d cancel=%d accepted=%ld refused=%ld\n",
         workers, wait, cancel, ok, refused);
}

int main(int argc, char **argv) {
  int max_workers = argc > 1 ? atoi(argv[1]) : 8;
  long iterations = argc > 2 ? atol(argv[2]) : 200;
  double seconds = argc > 3 ? atof(argv[3]) : 15;
  int clients = argc > 4 ? atoi(argv[4]) : 4;
  if (max_workers < 1 || max_workers > 64 || iterations < 1 || seconds <= 0 ||
      clients < 1 || clients > 64) {
    fprintf(stderr,
            "usage: %s [max_workers 1..64] [iterations] [seconds] "
            "[clients 1..64]\n",
            argv[0]);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  size_t sizes[4] = {1, 2, (size_t)(max_workers + 2) / 2, (size_t)max_workers};
  double start = now_s();
  /* half the time: random rounds; a sixth: bursts; a third: shutdowns */
  for (int r = 0; r < 4; r++) {
    deadline = start + seconds * (r + 1) / 8.0;
    run_round(sizes[r], clients, iterations);
  }
  deadline = start + seconds * 4 / 6.0;
  for (int r = 0; r < 4 && now_s() < deadline; r++)
    burst_round(sizes[r], r % 2 ? 1 : clients, iterations / 10 + 1);
  deadline = start + seconds;
  for (uint64_t s = 1; s <= 24 && now_s() < deadline; s++)
    shutdown_round(sizes[s % 4], clients, s * 2654435761u);
  int f = atomic_load(&failures);
  printf("%s: %d failed checks in %.1f s\n", f ? "FAIL" : "PASS", f,
         now_s() - start);
  return f ? 1 : 0;
}
