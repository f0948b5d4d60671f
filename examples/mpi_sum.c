/* mpi_sum: parallel_sum's job on MPI ranks. 1 + 2 + ... + N summed
 * serially and by an MPI pool (64 parts of the range as map items, chunks
 * of 4 per message), then 1^2 + 2^2 + ... + N^2, which outgrows 64 bits,
 * as byte tasks (16 bytes out each). Exits 0 if every sum agrees with its
 * formula.
 *
 *   mpiexec -n 3 ./mpi_sum [N]     rank 0 runs this, ranks 1-2 work
 *   ./mpi_sum [N]                  the pool spawns 2 workers
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cfutures.h>
#include <cfutures/mpi_pool.h>

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

/* A map item: the worker's copy of a range; the sum fits a pointer. */
static int sum_task(void *arg, void **out) {
  range r;
  memcpy(&r, arg, sizeof r);
  *out = (void *)(uintptr_t)sum_range(r);
  return 0;
}

__extension__ typedef unsigned __int128 u128; /* GCC and Clang */

/* A byte task: a range in, its 128-bit sum of squares out. */
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

static const char *u128_str(u128 v, char buf[48]) {
  char *p = buf + 47;
  *p = 0;
  do
    *--p = (char)('0' + (int)(v % 10));
  while ((v /= 10) != 0);
  return p;
}

int main(int argc, char **argv) {
  int rc = cf_mpi_serve(&argc, &argv); /* workers serve in here */
  if (rc <= 0)
    return rc == 0 ? 0 : 1;
  uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 400000000ull;
  enum { PARTS = 64 };
  range parts[PARTS];
  for (uint64_t i = 0; i < PARTS; i++)
    parts[i] = (range){1 + n * i / PARTS, 1 + n * (i + 1) / PARTS};
  uint64_t want = n * (n + 1) / 2;

  double t0 = now_s();
  uint64_t serial = sum_range((range){1, n + 1});
  double t_serial = now_s() - t0;

  cf_mpi_pool_opts po = {.max_workers = 0}; /* every rank, or 2 spawned */
  if (getenv("OMPI_COMM_WORLD_SIZE") == NULL ||
      strcmp(getenv("OMPI_COMM_WORLD_SIZE"), "1") == 0)
    po.max_workers = 2;
  cf_executor *pool;
  if (cf_mpi_pool_new(&po, &pool) != 0) {
    fprintf(stderr, "%s\n", cf_last_error());
    return 1;
  }
  cf_map_opts o = {.chunksize = 4};
  cf_map *m;
  uint64_t total = 0;
  t0 = now_s();
  int rc1 = cf_map_array(pool, sum_task, parts, PARTS, sizeof parts[0], &o, &m);
  void *v;
  while (rc1 == 0 && (rc1 = cf_map_next(m, &v)) == 0)
    total += (uint64_t)(uintptr_t)v;
  cf_map_free(m);
  double t_pool = now_s() - t0;
  rc1 = rc1 == CF_EDONE ? 0 : rc1;

  u128 want_sq = (u128)n * (n + 1) * (2 * n + 1) / 6, squares = 0;
  t0 = now_s();
  int rc2 = cf_mpi_pool_map_bytes(pool, squares_task, parts, PARTS,
                                  sizeof parts[0], &o, &m);
  while (rc2 == 0 && (rc2 = cf_map_next(m, &v)) == 0) {
    const cf_buf *b = v; /* lent by the map until the next call */
    u128 part;
    memcpy(&part, b->data, sizeof part);
    squares += part;
  }
  cf_map_free(m);
  double t_squares = now_s() - t0;
  rc2 = rc2 == CF_EDONE ? 0 : rc2;

  printf("sum of 1..%llu = %llu\n", (unsigned long long)n,
         (unsigned long long)want);
  printf("  serial        %8.3f s  %s\n", t_serial,
         serial == want ? "ok" : "WRONG");
  printf("  MPI pool      %8.3f s  %s (%zu workers)\n", t_pool,
         rc1 == 0 && total == want ? "ok" : "WRONG", cf_mpi_pool_size(pool));
  char b1[48];
  printf("sum of squares of 1..%llu = %s\n", (unsigned long long)n,
         u128_str(want_sq, b1));
  printf("  MPI pool      %8.3f s  %s (byte tasks, 16 bytes out each)\n",
         t_squares, rc2 == 0 && squares == want_sq ? "ok" : "WRONG");
  cf_executor_free(pool);
  return serial == want && rc1 == 0 && total == want && rc2 == 0 &&
                 squares == want_sq
             ? 0
             : 1;
}
