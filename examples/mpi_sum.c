/* mpi_sum: parallel_sum's job on MPI ranks alone. 1 + 2 + ... + N summed
 * serially and by an MPI pool (64 parts of the range as map items, chunks
 * of 4 per message), then 1^2 + 2^2 + ... + N^2, which outgrows 64 bits,
 * as byte tasks (16 bytes out each). Exits 0 if every sum agrees with its
 * formula. (parallel_sum runs the same job on every kind of pool, MPI
 * included when it is built.)
 *
 *   mpiexec -n 3 ./mpi_sum [N]     rank 0 runs this, ranks 1-2 work
 *   ./mpi_sum [N]                  the pool spawns 2 workers
 */
#include <stdio.h>

#include <cfutures/mpi_pool.h>

#include "sum_parts.h"

int main(int argc, char **argv) {
  int rc = cf_mpi_serve(&argc, &argv); /* workers serve in here */
  if (rc <= 0)
    return rc == 0 ? 0 : 1;
  uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 400000000ull;
  range parts[PARTS];
  cut(n, parts);
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
  uint64_t total = 0;
  t0 = now_s();
  int rc1 = pooled(pool, parts, &total);
  double t_pool = now_s() - t0;

  u128 want_sq = (u128)n * (n + 1) * (2 * n + 1) / 6, squares = 0;
  t0 = now_s();
  int rc2 = pooled_squares(pool, cf_mpi_pool_map_bytes, parts, &squares);
  double t_squares = now_s() - t0;

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
