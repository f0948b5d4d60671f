/* Stress: random trees of tasks that wait inside tasks. Each node submits
 * 0..4 children from inside the pool, then waits for them in a random way
 * (cf_future_result one by one, cf_wait ALL/FIRST, cf_as_completed), with
 * random timeouts (none, 0, 1 ms, 20 ms), after cancelling some of them at
 * random. Leaves spin, sleep, or wait with a timeout for promises that a
 * setter thread completes at random moments, or for a random root future
 * (which may be their own ancestor: only the timeout ends that wait).
 * Client threads submit roots from outside and wait for them with random
 * timeouts, cancelling some. Pools of 1..max_workers, small fiber stacks.
 *
 *   stress_nested_waits [max_workers 1..16] [rounds] [seconds] [clients]
 *
 * Checks, per round:
 *  - every future ends exactly once: its done-callback ran once per
 *    submitted future (counts match), none is left pending after
 *    shutdown(wait=true);
 *  - every result a waiter obtained is the value its task computes from
 *    its id; every error a waiter saw is one it could expect (CF_ETIMEDOUT
 *    only with a finite timeout, CF_ECANCELLED only for a cancelled
 *    future), never anything else;
 *  - tasks run == futures FINISHED; cancels that returned true == futures
 *    CANCELLED; nothing hangs (an alarm ends a stuck round with a report).
 * Workers never print: they count, and the main thread checks.
 * Exits 0 on success, 1 with the broken invariants printed. */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
      if (atomic_fetch_add(&failures, 1) < 20)                                 \
        fprintf(stderr, "stress_nested_waits:%d: %s\n", __LINE__, #cond);      \
    }                                                                          \
  } while (0)

/* xorshift64*: each node draws from a generator seeded by its id. */
static uint64_t rnd(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 0x2545F4914F6CDD1DULL;
}

static uint64_t seed_of(uint64_t id) {
  return (id + 1) * 0x9E3779B97F4A7C15ULL;
}

/* The value node `id` returns: its waiters check it. */
static intptr_t value_of(uint64_t id) {
  return (intptr_t)((seed_of(id) >> 8) | 1);
}

/* A node's argument: its id and the depth below it, in one word, so that a
 * cancelled task leaves nothing to free. */
#define ARG(id, depth) ((void *)(uintptr_t)(((id) << 4) | (depth)))
#define ARG_ID(a) ((uint64_t)(uintptr_t)(a) >> 4)
#define ARG_DEPTH(a) ((unsigned)((uintptr_t)(a) & 15))

enum { MAX_CHILDREN = 4, NPROMISES = 32, NROOTS = 64 };

static cf_executor *ex;
static _Atomic uint64_t next_id;
static _Atomic long submitted, callbacks, ran, finished_seen, cancelled_ok;
static _Atomic long timeouts_seen, values_checked;
static cf_future *promises[NPROMISES];
static _Atomic(cf_future *) roots[NROOTS]; /* recent roots, for cross waits */
static pthread_mutex_t roots_mu = PTHREAD_MUTEX_INITIALIZER;

static int count_done(cf_future *f, void *arg) {
  (void)arg;
  atomic_fetch_add(&callbacks, 1);
  if (cf_future_state_of(f) == CF_FINISHED)
    atomic_fetch_add(&finished_seen, 1);
  return 0;
}

static int node(void *arg, void **out);

/* Submits a new node of the given depth; returns its future (and its id in
 * *id) or NULL after shutdown. */
static cf_future *spawn(unsigned depth, uint64_t *id_out) {
  uint64_t id = atomic_fetch_add(&next_id, 1);
  *id_out = id;
  cf_future *f = NULL;
  atomic_fetch_add(&submitted, 1);
  int rc = cf_submit(ex, node, ARG(id, depth), &f);
  if (rc != 0) {
    atomic_fetch_sub(&submitted, 1);
    CHECK(rc == CF_ESHUTDOWN);
    return NULL;
  }
  CHECK(cf_future_add_done_callback(f, count_done, NULL) == 0);
  return f;
}

static double pick_timeout(uint64_t *s) {
  switch (rnd(s) % 5) {
  case 0:
    return 0;
  case 1:
    return 0.001;
  case 2:
    return 0.02;
  default:
    return CF_FOREVER;
  }
}

/* Checks what a wait on child `id` returned; `timeout` is the wait's, or -1
 * for a future known to be done (no CF_ETIMEDOUT may come then). */
static void check_outcome(int rc, void *v, uint64_t id, double timeout,
                          bool cancelled) {
  if (rc == 0) {
    CHECK((intptr_t)v == value_of(id));
    atomic_fetch_add(&values_checked, 1);
  } else if (rc == CF_ETIMEDOUT) {
    CHECK(timeout >= 0);
    atomic_fetch_add(&timeouts_seen, 1);
  } else {
    CHECK(rc == CF_ECANCELLED && cancelled);
  }
}

static void leaf(uint64_t *s) {
  switch (rnd(s) % 4) {
  case 0: { /* spin a little */
    volatile unsigned x = 0;
    for (unsigned i = (unsigned)(rnd(s) % 2000); i > 0; i--)
      x += i;
    break;
  }
  case 1:
    usleep((useconds_t)(rnd(s) % 300));
    break;
  case 2: { /* a promise the setter thread completes at some point */
    int rc = cf_future_result(promises[rnd(s) % NPROMISES], 0.005, NULL);
    CHECK(rc == 0 || rc == CF_ETIMEDOUT);
    break;
  }
  default: { /* a recent root, maybe our own ancestor */
    pthread_mutex_lock(&roots_mu);
    cf_future *r = atomic_load(&roots[rnd(s) % NROOTS]);
    if (r)
      cf_future_ref(r);
    pthread_mutex_unlock(&roots_mu);
    if (r) {
      int rc = cf_future_result(r, 0.002, NULL);
      CHECK(rc == 0 || rc == CF_ETIMEDOUT || rc == CF_ECANCELLED);
      cf_future_unref(r);
    }
    break;
  }
  }
}

static int node(void *arg, void **out) {
  uint64_t id = ARG_ID(arg);
  unsigned depth = ARG_DEPTH(arg);
  uint64_t s = seed_of(id);
  atomic_fetch_add(&ran, 1);
  *out = (void *)value_of(id);
  if (depth == 0) {
    leaf(&s);
    return 0;
  }
  size_t n = (size_t)(rnd(&s) % (MAX_CHILDREN + 1));
  cf_future *kids[MAX_CHILDREN];
  uint64_t ids[MAX_CHILDREN];
  bool cancelled[MAX_CHILDREN] = {false};
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    cf_future *f = spawn((unsigned)(rnd(&s) % depth), &ids[k]);
    if (!f)
      break;
    kids[k++] = f;
  }
  for (size_t i = 0; i < k; i++)
    if (rnd(&s) % 6 == 0 && cf_future_cancel(kids[i])) {
      cancelled[i] = true;
      atomic_fetch_add(&cancelled_ok, 1);
    }
  double timeout = pick_timeout(&s);
  switch (k ? rnd(&s) % 3 : 3) {
  case 0: /* one by one */
    for (size_t i = 0; i < k; i++) {
      void *v = NULL;
      int rc = cf_future_result(kids[i], timeout, &v);
      check_outcome(rc, v, ids[i], timeout, cancelled[i]);
    }
    break;
  case 1: { /* cf_wait */
    bool done[MAX_CHILDREN];
    cf_return_when when = rnd(&s) % 2 ? CF_ALL_COMPLETED : CF_FIRST_COMPLETED;
    int rc = cf_wait(kids, k, timeout, when, done);
    CHECK(rc == 0 || (rc == CF_ETIMEDOUT && timeout >= 0));
    size_t ndone = 0;
    for (size_t i = 0; i < k; i++)
      ndone += done[i];
    if (rc == 0)
      CHECK(when == CF_ALL_COMPLETED ? ndone == k : ndone >= 1);
    for (size_t i = 0; i < k; i++)
      if (done[i]) { /* a done future answers at once, with its value */
        void *v = NULL;
        int rc2 = cf_future_result(kids[i], 0, &v);
        check_outcome(rc2, v, ids[i], -1, cancelled[i]);
      }
    break;
  }
  case 2: { /* as_completed */
    cf_as_completed *it = NULL;
    CHECK(cf_as_completed_new(kids, k, timeout, &it) == 0);
    size_t yielded = 0;
    cf_future *f;
    int rc;
    while (it && (rc = cf_as_completed_next(it, &f)) == 0) {
      CHECK(cf_future_done(f));
      for (size_t i = 0; i < k; i++)
        if (kids[i] == f) {
          void *v = NULL;
          int rc2 = cf_future_result(f, 0, &v);
          check_outcome(rc2, v, ids[i], -1, cancelled[i]);
        }
      yielded++;
    }
    if (it)
      CHECK(rc == CF_EDONE ? yielded == k
                           : (rc == CF_ETIMEDOUT && timeout >= 0));
    cf_as_completed_free(it);
    break;
  }
  default:
    break;
  }
  for (size_t i = 0; i < k; i++)
    cf_future_unref(kids[i]);
  return 0;
}

/* ---- outside: promise setter and clients --------------------------------- */

static _Atomic bool stop;

static void *setter_main(void *arg) {
  uint64_t s = (uint64_t)(uintptr_t)arg | 1;
  bool set[NPROMISES] = {false};
  for (int left = NPROMISES; left > 0 && !atomic_load(&stop);) {
    usleep((useconds_t)(rnd(&s) % 3000));
    size_t i = rnd(&s) % NPROMISES;
    if (!set[i]) {
      CHECK(cf_future_set_result(promises[i], NULL, NULL) == 0);
      set[i] = true;
      left--;
    }
  }
  for (size_t i = 0; i < NPROMISES; i++)
    if (!set[i])
      CHECK(cf_future_set_result(promises[i], NULL, NULL) == 0);
  return NULL;
}

typedef struct client {
  pthread_t th;
  uint64_t seed;
  double until;
  unsigned max_depth;
} client;

static void *client_main(void *p) {
  client *c = p;
  uint64_t s = c->seed;
  while (!atomic_load(&stop) && now_s() < c->until) {
    uint64_t id;
    cf_future *f = spawn(1 + (unsigned)(rnd(&s) % c->max_depth), &id);
    if (!f)
      break;
    pthread_mutex_lock(&roots_mu);
    cf_future *old =
        atomic_exchange(&roots[rnd(&s) % NROOTS], cf_future_ref(f));
    pthread_mutex_unlock(&roots_mu);
    cf_future_unref(old);
    bool cancelled = rnd(&s) % 8 == 0 && cf_future_cancel(f);
    if (cancelled)
      atomic_fetch_add(&cancelled_ok, 1);
    double timeout = rnd(&s) % 3 ? CF_FOREVER : 0.01;
    void *v = NULL;
    int rc = cf_future_result(f, timeout, &v);
    check_outcome(rc, v, id, timeout, cancelled);
    cf_future_unref(f);
  }
  return NULL;
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "stress_nested_waits: a round hung (alarm)\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(1);
}

static bool run_round(unsigned workers, unsigned clients, double secs,
                      uint64_t seed) {
  cf_thread_pool_opts o = {.max_workers = workers, .stack_size = 64 * 1024};
  CHECK(cf_thread_pool_new(&o, &ex) == 0);
  if (!ex)
    return false;
  atomic_store(&stop, false);
  long sub0 = atomic_load(&submitted), cb0 = atomic_load(&callbacks);
  long ran0 = atomic_load(&ran), fin0 = atomic_load(&finished_seen);
  long can0 = atomic_load(&cancelled_ok);
  for (size_t i = 0; i < NPROMISES; i++) {
    promises[i] = cf_future_new();
    CHECK(promises[i] != NULL);
  }
  pthread_t setter;
  CHECK(pthread_create(&setter, NULL, setter_main,
                       (void *)(uintptr_t)(seed * 31 + 7)) == 0);
  client cs[8];
  for (unsigned i = 0; i < clients; i++) {
    cs[i] = (client){.seed = seed * 1000003 + i + 1,
                     .until = now_s() + secs,
                     .max_depth = 2 + i % 4};
    CHECK(pthread_create(&cs[i].th, NULL, client_main, &cs[i]) == 0);
  }
  for (unsigned i = 0; i < clients; i++)
    pthread_join(cs[i].th, NULL);
  atomic_store(&stop, true);
  pthread_join(setter, NULL);
  /* Every task still queued or suspended must end: shutdown waits. */
  CHECK(cf_executor_shutdown(ex, true, false) == 0);
  cf_executor_free(ex);
  ex = NULL;
  pthread_mutex_lock(&roots_mu);
  for (size_t i = 0; i < NROOTS; i++)
    cf_future_unref(atomic_exchange(&roots[i], NULL));
  pthread_mutex_unlock(&roots_mu);
  for (size_t i = 0; i < NPROMISES; i++)
    cf_future_unref(promises[i]);
  long sub = atomic_load(&submitted) - sub0;
  long cb = atomic_load(&callbacks) - cb0;
  long r = atomic_load(&ran) - ran0;
  long fin = atomic_load(&finished_seen) - fin0;
  long can = atomic_load(&cancelled_ok) - can0;
  CHECK(cb == sub);
  CHECK(r == fin);
  CHECK(fin + can == sub);
  printf("  %u workers: %ld futures, %ld ran, %ld cancelled\n", workers, sub,
         r, can);
  return atomic_load(&failures) == 0;
}

int main(int argc, char **argv) {
  unsigned max_workers = argc > 1 ? (unsigned)atoi(argv[1]) : 4;
  unsigned rounds = argc > 2 ? (unsigned)atoi(argv[2]) : 8;
  double seconds = argc > 3 ? atof(argv[3]) : 10;
  unsigned clients = argc > 4 ? (unsigned)atoi(argv[4]) : 3;
  if (max_workers < 1 || max_workers > 16 || rounds < 1 || seconds <= 0 ||
      clients < 1 || clients > 8) {
    fprintf(stderr, "usage: stress_nested_waits [workers 1..16] [rounds] "
                    "[seconds] [clients 1..8]\n");
    return 2;
  }
  uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
  printf("stress_nested_waits: seed %llu\n", (unsigned long long)seed);
  signal(SIGALRM, on_alarm);
  double per_round = seconds / rounds;
  double t0 = now_s();
  for (unsigned i = 0; i < rounds && now_s() - t0 < seconds; i++) {
    alarm((unsigned)per_round + 60);
    unsigned workers = 1 + (unsigned)(rnd(&seed) % max_workers);
    if (!run_round(workers, clients, per_round * 0.8, rnd(&seed)))
      break;
  }
  alarm(0);
  int bad = atomic_load(&failures);
  printf("stress_nested_waits: %ld futures, %ld values checked, %ld "
         "timeouts, %d failures\n",
         atomic_load(&submitted), atomic_load(&values_checked),
         atomic_load(&timeouts_seen), bad);
  return bad ? 1 : 0;
}
