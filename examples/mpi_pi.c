/* mpi_pi: pi by Monte Carlo on MPI ranks, the map example of
 * mpi4py.futures. Each map item is a batch: a seed and a count of random
 * points in the unit square; its result is how many fell inside the
 * quarter circle. cf_map_array sends the items in chunks and yields the
 * counts in input order. Exits 0 if the estimate is within 0.01 of pi.
 *
 *   mpiexec -n 3 ./mpi_pi [BATCHES]
 *   ./mpi_pi [BATCHES]              the pool spawns 2 workers
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cfutures.h>
#include <cfutures/mpi_pool.h>

typedef struct batch {
  uint64_t seed;
  uint64_t points;
} batch;

/* xorshift64*: a small generator of its own per batch, so that the result
 * depends on the seed only, not on which rank ran it. */
static uint64_t next_u64(uint64_t *s) {
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 0x2545F4914F6CDD1Dull;
}

static int count_inside(void *arg, void **out) {
  batch b;
  memcpy(&b, arg, sizeof b);
  uint64_t s = b.seed * 0x9E3779B97F4A7C15ull + 1, inside = 0;
  for (uint64_t i = 0; i < b.points; i++) {
    double x = (double)(next_u64(&s) >> 11) * 0x1.0p-53;
    double y = (double)(next_u64(&s) >> 11) * 0x1.0p-53;
    inside += x * x + y * y <= 1.0;
  }
  *out = (void *)(uintptr_t)inside;
  return 0;
}

int main(int argc, char **argv) {
  int rc = cf_mpi_serve(&argc, &argv);
  if (rc <= 0)
    return rc == 0 ? 0 : 1;
  size_t nb = argc > 1 ? strtoull(argv[1], NULL, 10) : 2000;
  const uint64_t per = 100000;
  batch *bs = malloc((nb ? nb : 1) * sizeof *bs);
  if (!bs)
    return 1;
  for (size_t i = 0; i < nb; i++)
    bs[i] = (batch){.seed = i + 1, .points = per};

  cf_mpi_pool_opts po = {0};
  if (getenv("OMPI_COMM_WORLD_SIZE") == NULL ||
      strcmp(getenv("OMPI_COMM_WORLD_SIZE"), "1") == 0)
    po.max_workers = 2; /* alone: spawn two */
  cf_executor *pool;
  if (cf_mpi_pool_new(&po, &pool) != 0) {
    fprintf(stderr, "%s\n", cf_last_error());
    return 1;
  }
  cf_map_opts o = {.chunksize = 16};
  cf_map *m;
  uint64_t inside = 0;
  void *v;
  int mrc = cf_map_array(pool, count_inside, bs, nb, sizeof bs[0], &o, &m);
  while (mrc == 0 && (mrc = cf_map_next(m, &v)) == 0)
    inside += (uint64_t)(uintptr_t)v;
  cf_map_free(m);
  double pi = nb ? 4.0 * (double)inside / ((double)nb * (double)per) : 0;
  printf("points: %llu on %zu workers\n", (unsigned long long)(nb * per),
         cf_mpi_pool_size(pool));
  printf("pi ~ %.6f (error %.6f)\n", pi, fabs(pi - M_PI));
  cf_executor_free(pool);
  free(bs);
  return mrc == CF_EDONE && fabs(pi - M_PI) < 0.01 ? 0 : 1;
}
