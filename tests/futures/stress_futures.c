/* Stress: randomized interleavings on shared promise futures. Each round,
 * every thread takes random actions on the same K futures: set_result,
 * set_exception, cancel, set_running_or_notify_cancel, add_done_callback,
 * result/exception with random timeouts, cf_wait with a random condition,
 * as_completed (run to the end or freed early), ref/unref. The main thread
 * then completes whatever is left and checks, per future:
 *   - it completed exactly once (one successful set_*, or a cancel and no
 *     successful set_*), and at most one set_running succeeded, never on a
 *     future that ended cancelled;
 *   - every successfully added callback ran exactly once, on a done future;
 *   - every outcome a waiter saw matches the final state and value;
 *   - every non-zero callback return was reported, and every result value
 *     was destroyed exactly once (ASan checks the memory side).
 * cf_wait's done[] must satisfy its condition; as_completed must yield each
 * future once, each done, then CF_EDONE.
 *
 *   stress_futures [threads] [rounds] [seconds] [seed]
 *
 * Defaults 4 threads, 2000 rounds, at most 15 s (the cap wins). Exits 0 on
 * success; prints the first broken invariants and exits 1 otherwise. */
#include <inttypes.h>
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

enum { K = 8, MAX_THREADS = 64 };

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
        fprintf(stderr, "%s:%d: round %ld: check failed: %s\n", __FILE__,      \
                __LINE__, (long)current_round, #cond);                         \
    }                                                                          \
  } while (0)

static volatile sig_atomic_t current_round;

static uint64_t xorshift(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Outcome kinds a waiter can observe, as bits. */
enum { SEEN_VALUE = 1, SEEN_CANCELLED = 2, SEEN_FAILED = 4, SEEN_BROKEN = 8 };

/* Everything shared in one round; reset by the main thread between the
 * barriers. */
static struct round_state {
  cf_future *fs[K];
  _Atomic int sets_ok[K];    /* successful set_result / set_exception */
  _Atomic int running_ok[K]; /* successful set_running_or_notify_cancel */
  _Atomic int added_ok[K];   /* successful add_done_callback (+1 sentinel) */
  _Atomic int ran[K];        /* callbacks run */
  _Atomic int seen[K];       /* SEEN_* bits observed by waiters */
  _Atomic(intptr_t) winner_value[K]; /* the value of the successful set */
  _Atomic(intptr_t) seen_value[K];   /* a value a reader got */
} rs;

static _Atomic long reports_expected, reports_seen;
static _Atomic long values_made, values_destroyed;
static _Atomic long total_callbacks, total_waits, total_timeouts;

static void count_report(const char *what, int code, void *ctx) {
  (void)what;
  (void)ctx;
  CHECK(code == CF_EINVAL);
  atomic_fetch_add(&reports_seen, 1);
}

static void destroy_value(void *v) {
  atomic_fetch_add(&values_destroyed, 1);
  free(v);
}

static int index_of(cf_future *f) {
  for (int i = 0; i < K; i++)
    if (rs.fs[i] == f)
      return i;
  return -1;
}

/* arg: 0 returns 0, 1 returns CF_EINVAL (must be reported). */
static int on_done(cf_future *f, void *arg) {
  int i = index_of(f);
  CHECK(i >= 0);
  CHECK(cf_future_done(f));
  if (i >= 0)
    atomic_fetch_add(&rs.ran[i], 1);
  atomic_fetch_add(&total_callbacks, 1);
  return arg ? CF_EINVAL : 0;
}

/* Records what a reader saw: rc from cf_future_result and the value. */
static void observe(int i, int rc, void *v) {
  switch (rc) {
  case 0: {
    atomic_fetch_or(&rs.seen[i], SEEN_VALUE);
    intptr_t val = *(int *)v;
    intptr_t expected = 0;
    if (!atomic_compare_exchange_strong(&rs.seen_value[i], &expected, val))
      CHECK(expected == val);
    break;
  }
  case CF_ECANCELLED:
    atomic_fetch_or(&rs.seen[i], SEEN_CANCELLED);
    break;
  case CF_EFAILED:
    atomic_fetch_or(&rs.seen[i], SEEN_FAILED);
    break;
  case CF_EBROKEN:
    atomic_fetch_or(&rs.seen[i], SEEN_BROKEN);
    break;
  default:
    CHECK(rc == CF_ETIMEDOUT);
    atomic_fetch_add(&total_timeouts, 1);
  }
}

static double random_timeout(uint64_t *rng, bool may_block_forever) {
  switch (xorshift(rng) % 4) {
  case 0:
    return 0;
  case 1:
    return 1e-4 * (double)(xorshift(rng) % 10);
  default:
    return may_block_forever ? CF_FOREVER : 1e-3;
  }
}

static void try_set_result(int i, int tag) {
  int *v = malloc(sizeof *v);
  if (!v) {
    CHECK(!"malloc");
    return;
  }
  *v = tag;
  atomic_fetch_add(&values_made, 1);
  if (cf_future_set_result(rs.fs[i], v, destroy_value) == 0) {
    atomic_fetch_add(&rs.sets_ok[i], 1);
    atomic_store(&rs.winner_value[i], tag);
  } else {
    atomic_fetch_add(&values_made, -1);
    free(v); /* refused: still ours */
  }
}

static void random_action(uint64_t *rng, int tag, bool may_block) {
  int i = (int)(xorshift(rng) % K);
  cf_future *f = rs.fs[i];
  switch (xorshift(rng) % 11) {
  case 0:
    try_set_result(i, tag);
    break;
  case 1: {
    bool broken = xorshift(rng) & 1;
    int rc = cf_future_set_exception(f, broken ? CF_EBROKEN : 1000 + i,
                                     "failed by %d", tag);
    CHECK(rc == 0 || rc == CF_EINVALSTATE);
    if (rc == 0)
      atomic_fetch_add(&rs.sets_ok[i], 1);
    break;
  }
  case 2:
    if (cf_future_cancel(f))
      CHECK(cf_future_cancelled(f));
    else
      CHECK(cf_future_state_of(f) == CF_RUNNING ||
            cf_future_state_of(f) == CF_FINISHED);
    break;
  case 3: {
    int rc = cf_future_set_running_or_notify_cancel(f);
    CHECK(rc == 0 || rc == CF_ECANCELLED || rc == CF_EINVALSTATE);
    if (rc == 0)
      atomic_fetch_add(&rs.running_ok[i], 1);
    if (rc == CF_ECANCELLED)
      CHECK(cf_future_cancelled(f));
    break;
  }
  case 4:
  case 5: {
    int n = 1 + (int)(xorshift(rng) % 3);
    for (int k = 0; k < n; k++) {
      bool fail = xorshift(rng) % 8 == 0;
      /* Count before adding: the callback may run at once, here. */
      atomic_fetch_add(&rs.added_ok[i], 1);
      if (fail)
        atomic_fetch_add(&reports_expected, 1);
      int rc = cf_future_add_done_callback(f, on_done, fail ? (void *)1 : NULL);
      CHECK(rc == 0);
      if (rc != 0) {
        atomic_fetch_add(&rs.added_ok[i], -1);
        if (fail)
          atomic_fetch_add(&reports_expected, -1);
      }
    }
    break;
  }
  case 6: {
    void *v = NULL;
    int rc = cf_future_result(f, random_timeout(rng, may_block), &v);
    observe(i, rc, v);
    atomic_fetch_add(&total_waits, 1);
    break;
  }
  case 7: {
    cf_error e = {0, NULL};
    int rc = cf_future_exception(f, random_timeout(rng, may_block), &e);
    CHECK(rc == 0 || rc == CF_ECANCELLED || rc == CF_ETIMEDOUT);
    if (rc == 0 && e.code != 0) {
      CHECK(e.message != NULL && strncmp(e.message, "failed by ", 10) == 0);
      CHECK(e.code == CF_EBROKEN || e.code == 1000 + i);
      atomic_fetch_or(&rs.seen[i],
                      e.code == CF_EBROKEN ? SEEN_BROKEN : SEEN_FAILED);
    } else if (rc == 0) {
      CHECK(e.message == NULL);
      atomic_fetch_or(&rs.seen[i], SEEN_VALUE);
    } else if (rc == CF_ECANCELLED) {
      atomic_fetch_or(&rs.seen[i], SEEN_CANCELLED);
    }
    break;
  }
  case 8: {
    /* cf_wait on a random slice with a random condition */
    int lo = (int)(xorshift(rng) % K);
    int n = 1 + (int)(xorshift(rng) % (uint64_t)(K - lo));
    cf_return_when when = (cf_return_when)(xorshift(rng) % 3);
    double t = random_timeout(rng, may_block);
    bool done[K];
    int rc = cf_wait(&rs.fs[lo], (size_t)n, t, when, done);
    atomic_fetch_add(&total_waits, 1);
    CHECK(rc == 0 || (rc == CF_ETIMEDOUT && t >= 0));
    int ndone = 0, nfailed = 0;
    for (int k = 0; k < n; k++) {
      if (done[k]) {
        CHECK(cf_future_done(rs.fs[lo + k])); /* done stays done */
        ndone++;
        void *v;
        int r = cf_future_result(rs.fs[lo + k], 0, &v);
        nfailed += r == CF_EFAILED || r == CF_EBROKEN;
      }
    }
    if (rc == 0) {
      if (when == CF_FIRST_COMPLETED)
        CHECK(ndone > 0);
      else if (when == CF_ALL_COMPLETED)
        CHECK(ndone == n);
      else
        CHECK(ndone == n || nfailed > 0);
    }
    break;
  }
  case 9: {
    /* as_completed: to the end, or freed early */
    int lo = (int)(xorshift(rng) % K);
    int n = 1 + (int)(xorshift(rng) % (uint64_t)(K - lo));
    double t = random_timeout(rng, may_block);
    int stop_after = (int)(xorshift(rng) % (uint64_t)(n + 2));
    cf_as_completed *it = NULL;
    int rc = cf_as_completed_new(&rs.fs[lo], (size_t)n, t, &it);
    CHECK(rc == 0);
    if (rc != 0)
      break;
    bool got[K] = {false};
    int yielded = 0;
    cf_future *g;
    while (yielded < stop_after && (rc = cf_as_completed_next(it, &g)) == 0) {
      int j = index_of(g);
      CHECK(j >= lo && j < lo + n);
      if (j >= lo && j < lo + n) {
        CHECK(!got[j - lo]);
        got[j - lo] = true;
      }
      CHECK(cf_future_done(g));
      yielded++;
    }
    if (yielded == n) {
      CHECK(cf_as_completed_next(it, &g) == CF_EDONE);
      CHECK(g == NULL);
    } else if (yielded < stop_after) {
      CHECK(rc == CF_ETIMEDOUT && t >= 0);
      CHECK(cf_as_completed_next(it, &g) == CF_ETIMEDOUT); /* sticky */
    }
    atomic_fetch_add(&total_waits, 1);
    cf_as_completed_free(it);
    break;
  }
  default: {
    cf_future *r = cf_future_ref(f);
    CHECK(r == f);
    if (xorshift(rng) & 1)
      sched_yield();
    cf_future_unref(r);
  }
  }
}

/* ---- rounds -------------------------------------------------------------- */

static pthread_barrier_t start_line, finish_line;
static _Atomic int stop;
static uint64_t seed;

typedef struct worker {
  int id;
  pthread_t th;
} worker;

static void *worker_main(void *p) {
  worker *w = p;
  for (long round = 0;; round++) {
    pthread_barrier_wait(&start_line);
    if (atomic_load(&stop))
      return NULL;
    uint64_t rng = seed ^ ((uint64_t)round * 0x9E3779B97F4A7C15u) ^
                   ((uint64_t)(w->id + 1) << 40);
    if (!rng)
      rng = 1;
    int n = 1 + (int)(xorshift(&rng) % 6);
    for (int k = 0; k < n; k++)
      random_action(&rng, (int)(round * MAX_THREADS + w->id + 1), true);
    pthread_barrier_wait(&finish_line);
  }
}

static void round_reset(void) {
  for (int i = 0; i < K; i++) {
    rs.fs[i] = cf_future_new();
    if (!rs.fs[i]) {
      fprintf(stderr, "out of memory\n");
      exit(1);
    }
    atomic_store(&rs.sets_ok[i], 0);
    atomic_store(&rs.running_ok[i], 0);
    atomic_store(&rs.added_ok[i], 1); /* the sentinel below */
    atomic_store(&rs.ran[i], 0);
    atomic_store(&rs.seen[i], 0);
    atomic_store(&rs.winner_value[i], 0);
    atomic_store(&rs.seen_value[i], 0);
    /* A sentinel callback counts the one completion every future gets. */
    if (cf_future_add_done_callback(rs.fs[i], on_done, NULL) != 0) {
      fprintf(stderr, "add_done_callback failed\n");
      exit(1);
    }
  }
}

/* Completes whatever is still pending or running. */
static void close_all(int tag) {
  for (int i = 0; i < K; i++) {
    if (cf_future_cancel(rs.fs[i]))
      continue;
    try_set_result(i, tag); /* running, or already finished */
    CHECK(cf_future_done(rs.fs[i]));
  }
}

static void round_check(void) {
  for (int i = 0; i < K; i++) {
    cf_future *f = rs.fs[i];
    cf_future_state st = cf_future_state_of(f);
    CHECK(st == CF_FINISHED || st == CF_CANCELLED);
    int sets = atomic_load(&rs.sets_ok[i]);
    CHECK(sets == (st == CF_FINISHED ? 1 : 0));
    int running = atomic_load(&rs.running_ok[i]);
    CHECK(running <= 1);
    if (running)
      CHECK(st == CF_FINISHED);
    CHECK(atomic_load(&rs.ran[i]) == atomic_load(&rs.added_ok[i]));
    void *v = NULL;
    int rc = cf_future_result(f, 0, &v);
    int expect_bit = rc == 0               ? SEEN_VALUE
                     : rc == CF_ECANCELLED ? SEEN_CANCELLED
                     : rc == CF_EBROKEN    ? SEEN_BROKEN
                                           : SEEN_FAILED;
    CHECK(rc == 0 || rc == CF_ECANCELLED || rc == CF_EFAILED ||
          rc == CF_EBROKEN);
    CHECK((atomic_load(&rs.seen[i]) & ~expect_bit) == 0);
    if (rc == 0) {
      CHECK(*(int *)v == atomic_load(&rs.winner_value[i]));
      intptr_t sv = atomic_load(&rs.seen_value[i]);
      CHECK(sv == 0 || sv == *(int *)v);
    }
  }
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "stress_futures: a round hung for 30 s\n";
  ssize_t r = write(2, msg, sizeof msg - 1);
  (void)r;
  _exit(2);
}

int main(int argc, char **argv) {
  int nthreads = argc > 1 ? atoi(argv[1]) : 4;
  long rounds = argc > 2 ? atol(argv[2]) : 2000;
  double seconds = argc > 3 ? atof(argv[3]) : 15;
  seed = argc > 4 ? strtoull(argv[4], NULL, 0) : (uint64_t)time(NULL);
  if (nthreads < 1 || nthreads > MAX_THREADS || rounds < 1 ||
      !(seconds > 0 && seconds <= 18)) {
    fprintf(stderr,
            "usage: %s [threads 1-%d] [rounds] [seconds <= 18] "
            "[seed]\n",
            argv[0], MAX_THREADS);
    return 2;
  }
  printf("stress_futures: %d threads, up to %ld rounds, %.0f s, seed %" PRIu64
         "\n",
         nthreads, rounds, seconds, seed);
  signal(SIGALRM, on_alarm);
  cf_set_report_handler(count_report, NULL);
  pthread_barrier_init(&start_line, NULL, (unsigned)nthreads + 1);
  pthread_barrier_init(&finish_line, NULL, (unsigned)nthreads + 1);
  worker ws[MAX_THREADS];
  for (int t = 0; t < nthreads; t++) {
    ws[t].id = t;
    if (pthread_create(&ws[t].th, NULL, worker_main, &ws[t]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      return 1;
    }
  }
  uint64_t rng = seed | 1;
  double t0 = now_s();
  long done_rounds = 0;
  for (long round = 0; round < rounds && now_s() - t0 < seconds; round++) {
    current_round = (sig_atomic_t)round;
    alarm(30);
    round_reset();
    pthread_barrier_wait(&start_line);
    /* The main thread takes a few non-blocking actions, then completes
     * everything so that workers blocked forever wake up. */
    int n = (int)(xorshift(&rng) % 3);
    for (int k = 0; k < n; k++)
      random_action(&rng, (int)(round * MAX_THREADS + MAX_THREADS - 1), false);
    if (xorshift(&rng) & 1)
      sched_yield();
    close_all((int)(round * MAX_THREADS + MAX_THREADS));
    pthread_barrier_wait(&finish_line);
    round_check();
    for (int i = 0; i < K; i++)
      cf_future_unref(rs.fs[i]);
    CHECK(atomic_load(&values_destroyed) == atomic_load(&values_made));
    done_rounds++;
    if (atomic_load(&failures))
      break;
  }
  alarm(0);
  atomic_store(&stop, 1);
  pthread_barrier_wait(&start_line);
  for (int t = 0; t < nthreads; t++)
    pthread_join(ws[t].th, NULL);
  pthread_barrier_destroy(&start_line);
  pthread_barrier_destroy(&finish_line);
  CHECK(atomic_load(&reports_seen) == atomic_load(&reports_expected));
  cf_set_report_handler(NULL, NULL);
  printf("stress_futures: %ld rounds in %.2f s: %ld callbacks, %ld waits "
         "(%ld timed out), %ld reports\n",
         done_rounds, now_s() - t0, atomic_load(&total_callbacks),
         atomic_load(&total_waits), atomic_load(&total_timeouts),
         atomic_load(&reports_seen));
  if (atomic_load(&failures)) {
    printf("stress_futures: %d checks FAILED (seed %" PRIu64 ")\n",
           atomic_load(&failures), seed);
    return 1;
  }
  printf("stress_futures: ok\n");
  return 0;
}
