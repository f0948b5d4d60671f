/* parallel_sum: 1 + 2 + ... + N computed serially, on the thread pool and
 * on the process pool (chunks of the range as map items), with the time of
 * each. The CPU-bound case where processes are as good as threads, and
 * both beat one core. Then 1^2 + 2^2 + ... + N^2, which outgrows 64 bits
 * (N = 400 million: ~2.1e25): a result too big for a pointer-sized value,
 * so on the process pool the parts are byte tasks (16 bytes out each,
 * cf_process_pool_map_bytes). Exits 0 if every sum agrees with its
 * formula. */
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

/* 128-bit sums of squares: a byte task per range. */
__extension__ typedef unsigned __int128 u128; /* GCC and Clang */

static int squares_task(const void *in, size_t len, cf_buf *out) {
  range r;
  if (len != sizeof r)
    return cf_fail(CF_EINVAL, "a range is %zu bytes, not %zu", sizeof r, len);
  memcpy(&r, in, sizeof r);
  volatile u128 s = 0;
  for (uint64_t i = r.lo; i < r.hi; i++)
    s += (u128)i * i;
  u128 v = s;
  if (!(out->data = malloc(sizeof v)))
    return CF_ENOMEM;
  memcpy(out->data, &v, sizeof v);
  out->len = sizeof v;
  return 0;
}

static int pooled_squares(cf_executor *pp, range *parts, size_t n,
                          u128 *total) {
  cf_map *m;
  cf_map_opts o = {.chunksize = 4};
  int rc = cf_process_pool_map_bytes(pp, squares_task, parts, n,
                                     sizeof parts[0], &o, &m);
  *total = 0;
  void *v;
  while (rc == 0 && (rc = cf_map_next(m, &v)) == 0) {
    const cf_buf *b = v; /* lent by the map until the next call */
    u128 part;
    memcpy(&part, b->data, sizeof part);
    *total += part;
  }
  cf_map_free(m);
  return rc == CF_EDONE ? 0 : rc;
}

static const char *u128_str(u128 v, char buf[48]) {
  char *p = buf + 47;
  *p = 0;
  do
    *--p = (char)('0' + (int)(v % 10));
  while ((v /= 10) != 0);
  return p;
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

  u128 want_sq = (u128)n * (n + 1) * (2 * n + 1) / 6, squares = 0;
  t0 = now_s();
  int rc3 = pooled_squares(pp, parts, PARTS, &squares);
  double t_squares = now_s() - t0;
  char b1[48];
  printf("sum of squares of 1..%llu = %s (%s 64 bits)\n", (unsigned long long)n,
         u128_str(want_sq, b1), want_sq > UINT64_MAX ? "above" : "within");
  printf("  process pool  %8.3f s  %s (byte tasks, 16 bytes out each)\n",
         t_squares, rc3 == 0 && squares == want_sq ? "ok" : "WRONG");
  cf_executor_free(tp);
  cf_executor_free(pp);
  return serial == want && threads == want && procs == want && rc3 == 0 &&
                 squares == want_sq
             ? 0
             : 1;
}
