/* parallel_sum: 1 + 2 + ... + N computed serially, on the thread pool and
 * on the process pool (chunks of the range as map items), with the time of
 * each. The CPU-bound case where processes are as good as threads, and
 * both beat one core. Exits 0 if all three sums agree with n(n+1)/2. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cfutures.h>

typedef struct range {
  uint64_t lo, hi; /* [lo, hi) */
} range;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Summed one number at a time, on purpose: this is the CPU work. */
static uint64_t sum_range(range r) {
  volatile uint64_t s = 0;
  for (uint64_t i = r.lo; i < r.hi; i++)
    s += i;
  return s;
}

static int sum_task(void *arg, void **out) {
  range r;
  memcpy(&r, arg, sizeof r); /* the process pool hands us a copy */
  *out = (void *)(uintptr_t)sum_range(r);
  return 0;
}

static int pooled(cf_executor *ex, range *parts, size_t n, uint64_t *total) {
  cf_map *m;
  cf_map_opts o = {.chunksize = 4};
  int rc = cf_map_array(ex, sum_task, parts, n, sizeof parts[0], &o, &m);
  *total = 0;
  void *v;
  while (rc == 0 && (rc = cf_map_next(m, &v)) == 0)
    *total += (uint64_t)(uintptr_t)v;
  cf_map_free(m);
  return rc == CF_EDONE ? 0 : rc;
}

int main(int argc, char **argv) {
  uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 400000000ull;
  enum { PARTS = 64 };
  range parts[PARTS];
  for (uint64_t i = 0; i < PARTS; i++)
    parts[i] = (range){1 + n * i / PARTS, 1 + n * (i + 1) / PARTS};
  uint64_t want = n * (n + 1) / 2;

  double t0 = now_s();
  uint64_t serial = sum_range((range){1, n + 1});
  double t_serial = now_s() - t0;

  cf_executor *tp, *pp;
  if (cf_thread_pool_new(NULL, &tp) || cf_process_pool_new(NULL, &pp))
    return 1;
  uint64_t threads = 0, procs = 0;
  t0 = now_s();
  int rc1 = pooled(tp, parts, PARTS, &threads);
  double t_threads = now_s() - t0;
  t0 = now_s();
  int rc2 = pooled(pp, parts, PARTS, &procs);
  double t_procs = now_s() - t0;
  printf("sum of 1..%llu = %llu\n", (unsigned long long)n,
         (unsigned long long)want);
  printf("  serial        %8.3f s  %s\n", t_serial,
         serial == want ? "ok" : "WRONG");
  printf("  thread pool   %8.3f s  %s (%zu workers)\n", t_threads,
         rc1 == 0 && threads == want ? "ok" : "WRONG", cf_thread_pool_size(tp));
  printf("  process pool  %8.3f s  %s (%zu workers)\n", t_procs,
         rc2 == 0 && procs == want ? "ok" : "WRONG", cf_process_pool_size(pp));
  cf_executor_free(tp);
  cf_executor_free(pp);
  return serial == want && threads == want && procs == want ? 0 : 1;
}
