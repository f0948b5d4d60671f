/* parallel_sum: 1 + 2 + ... + N computed serially, on the thread pool, on
 * the process pool and, when cfutures is built with MPI, on an MPI pool
 * (chunks of the range as map items), with the time of each. The
 * CPU-bound case where processes are as good as threads, and both beat
 * one core. Then 1^2 + 2^2 + ... + N^2, which outgrows 64 bits (N = 400
 * million: ~2.1e25): a result too big for a pointer-sized value, so on the
 * process and MPI pools the parts are byte tasks (16 bytes out each,
 * cf_process_pool_map_bytes, cf_mpi_pool_map_bytes). Exits 0 if every sum
 * agrees with its formula.
 *
 *   ./parallel_sum [N]              the MPI pool spawns 2 workers
 *   mpiexec -n 3 ./parallel_sum [N] rank 0 runs this, ranks 1-2 serve it
 */
#include <stdio.h>

#include "sum_parts.h"
#ifdef CF_EXAMPLE_MPI
#include <cfutures/mpi_pool.h>
#endif

static bool row(const char *name, double t, bool ok, size_t workers) {
  printf("  %-13s %8.3f s  %s (%zu workers)\n", name, t, ok ? "ok" : "WRONG",
         workers);
  return ok;
}

int main(int argc, char **argv) {
#ifdef CF_EXAMPLE_MPI
  int serve = cf_mpi_serve(&argc, &argv); /* MPI workers serve in here */
  if (serve <= 0)
    return serve == 0 ? 0 : 1;
#endif
  uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 400000000ull;
  range parts[PARTS];
  cut(n, parts);
  uint64_t want = n * (n + 1) / 2;
  u128 want_sq = (u128)n * (n + 1) * (2 * n + 1) / 6;

  double t0 = now_s();
  uint64_t serial = sum_range((range){1, n + 1});
  double t_serial = now_s() - t0;

  cf_executor *tp, *pp;
  if (cf_thread_pool_new(NULL, &tp) || cf_process_pool_new(NULL, &pp)) {
    fprintf(stderr, "%s\n", cf_last_error());
    return 1;
  }
  uint64_t sum = 0;
  printf("sum of 1..%llu = %llu\n", (unsigned long long)n,
         (unsigned long long)want);
  bool ok = row("serial", t_serial, serial == want, 1);
  t0 = now_s();
  int rc = pooled(tp, parts, &sum);
  ok &= row("thread pool", now_s() - t0, rc == 0 && sum == want,
            cf_thread_pool_size(tp));
  t0 = now_s();
  rc = pooled(pp, parts, &sum);
  ok &= row("process pool", now_s() - t0, rc == 0 && sum == want,
            cf_process_pool_size(pp));
#ifdef CF_EXAMPLE_MPI
  /* every rank but this one, or 2 spawned when run alone */
  cf_mpi_pool_opts mo = {.max_workers = 0};
  const char *world = getenv("OMPI_COMM_WORLD_SIZE");
  if (!world || strcmp(world, "1") == 0)
    mo.max_workers = 2;
  cf_executor *mp;
  if (cf_mpi_pool_new(&mo, &mp) != 0) {
    fprintf(stderr, "%s\n", cf_last_error());
    return 1;
  }
  t0 = now_s();
  rc = pooled(mp, parts, &sum);
  ok &= row("MPI pool", now_s() - t0, rc == 0 && sum == want,
            cf_mpi_pool_size(mp));
#endif

  char b1[48];
  u128 squares = 0;
  printf("sum of squares of 1..%llu = %s (%s 64 bits; byte tasks, 16 bytes "
         "out each)\n",
         (unsigned long long)n, u128_str(want_sq, b1),
         want_sq > UINT64_MAX ? "above" : "within");
  t0 = now_s();
  rc = pooled_squares(pp, cf_process_pool_map_bytes, parts, &squares);
  ok &= row("process pool", now_s() - t0, rc == 0 && squares == want_sq,
            cf_process_pool_size(pp));
#ifdef CF_EXAMPLE_MPI
  t0 = now_s();
  rc = pooled_squares(mp, cf_mpi_pool_map_bytes, parts, &squares);
  ok &= row("MPI pool", now_s() - t0, rc == 0 && squares == want_sq,
            cf_mpi_pool_size(mp));
  cf_executor_free(mp);
#endif
  cf_executor_free(tp);
  cf_executor_free(pp);
  return ok ? 0 : 1;
}
