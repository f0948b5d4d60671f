/* cfutures' MPI pool on the MPI workloads, rank 0 owning the pool and the
 * other ranks serving it (run under mpiexec -n 3: two workers):
 *   mpiexec -n 3 mpi_cfutures submit | map | rtt | bw1 | bw64 [scale]
 *   mpiexec -n 3 mpi_cfutures bw BYTES      the bandwidth at any size
 * `scale` (default 1) divides the task counts: a quick smoke run. */
#include <stdint.h>
#include <string.h>

#include <cfutures.h>
#include <cfutures/mpi_pool.h>

#include "bench_common.h"

static int tiny(void *arg, void **out) {
  *out = arg;
  return 0;
}

static int item(void *arg, void **out) {
  int64_t x;
  memcpy(&x, arg, sizeof x);
  *out = (void *)(intptr_t)(x + 1);
  return 0;
}

/* Echoes its input: bytes go there and back. */
static int echo(const void *in, size_t n, cf_buf *out) {
  out->data = malloc(n);
  if (!out->data)
    return CF_ENOMEM;
  memcpy(out->data, in, n);
  out->len = n;
  return 0;
}

static void bandwidth(cf_executor *ex, size_t n, const char *name) {
  char *buf = malloc(n), *dst = malloc(n);
  memset(buf, 7, n);
  memset(dst, 1, n);
  double best_pool = 1e9, best_copy = 1e9;
  /* Two rounds untimed first: the buffers of both sides warm (fresh pages
   * fault; the pool and its workers reuse theirs), as memcpy's are. */
  for (int rep = 0; rep < 2; rep++) {
    cf_future *f;
    if (cf_mpi_pool_submit(ex, echo, buf, n, &f) ||
        cf_future_result(f, CF_FOREVER, NULL))
      abort();
    cf_future_unref(f);
  }
  for (int rep = 0; rep < 5; rep++) {
    double t0 = bench_now();
    cf_future *f;
    void *v;
    if (cf_mpi_pool_submit(ex, echo, buf, n, &f) ||
        cf_future_result(f, CF_FOREVER, &v))
      abort();
    double dt = bench_now() - t0;
    cf_future_unref(f);
    if (dt < best_pool)
      best_pool = dt;
    t0 = bench_now();
    memcpy(dst, buf, n); /* one way */
    memcpy(buf, dst, n); /* and back, like the round trip */
    dt = bench_now() - t0;
    if (dt < best_copy)
      best_copy = dt;
  }
  /* bytes moved both ways per second */
  bench_report(name, "cfutures", 2.0 * (double)n / best_pool / 1e9, "GB/s");
  bench_report(name, "memcpy", 2.0 * (double)n / best_copy / 1e9, "GB/s");
  free(buf);
  free(dst);
}

int main(int argc, char **argv) {
  int rc = cf_mpi_serve(&argc, &argv);
  if (rc <= 0)
    return rc == 0 ? 0 : 1;
  const char *what = argc > 1 ? argv[1] : "submit";
  int scale = argc > 2 && strcmp(what, "bw") ? atoi(argv[2]) : 1;
  if (scale < 1)
    scale = 1;
  cf_executor *ex;
  if (cf_mpi_pool_new(NULL, &ex)) {
    fprintf(stderr, "%s\n", cf_last_error());
    return 1;
  }
  { /* warm up: workers running, functions resolved */
    cf_future *f;
    for (int i = 0; i < 100; i++) {
      if (cf_submit(ex, tiny, NULL, &f) ||
          cf_future_result(f, CF_FOREVER, NULL))
        return 1;
      cf_future_unref(f);
    }
  }
  if (!strcmp(what, "submit")) {
    int n = 100000 / scale;
    cf_future **fs = malloc((size_t)n * sizeof *fs);
    double t0 = bench_now();
    for (intptr_t i = 0; i < n; i++)
      if (cf_submit(ex, tiny, (void *)i, &fs[i]))
        return 1;
    for (int i = 0; i < n; i++) {
      if (cf_future_result(fs[i], CF_FOREVER, NULL))
        return 1;
      cf_future_unref(fs[i]);
    }
    bench_report("mpi_submit", "cfutures", n / (bench_now() - t0), "tasks/s");
    free(fs);
  } else if (!strcmp(what, "map")) {
    int n = 1000000 / scale;
    int64_t *xs = malloc((size_t)n * sizeof *xs);
    for (int i = 0; i < n; i++)
      xs[i] = i;
    /* the default window, as for the process pool: one future per chunk */
    cf_map_opts mo = {.chunksize = 1000};
    cf_map *m;
    double t0 = bench_now();
    if (cf_map_array(ex, item, xs, (size_t)n, sizeof xs[0], &mo, &m))
      return 1;
    void *v;
    for (int i = 0; i < n; i++)
      if (cf_map_next(m, &v) || (intptr_t)v != i + 1)
        return 1;
    bench_report("mpi_map", "cfutures", n / (bench_now() - t0), "items/s");
    cf_map_free(m);
    free(xs);
  } else if (!strcmp(what, "rtt")) {
    int n = 5000 / scale;
    double *us = malloc((size_t)n * sizeof *us);
    for (int i = 0; i < n; i++) {
      double t0 = bench_now();
      cf_future *f;
      if (cf_submit(ex, tiny, NULL, &f) ||
          cf_future_result(f, CF_FOREVER, NULL))
        return 1;
      us[i] = (bench_now() - t0) * 1e6;
      cf_future_unref(f);
    }
    qsort(us, (size_t)n, sizeof us[0], bench_cmp);
    bench_report("mpi_rtt", "cfutures", us[n / 2], "us");
    free(us);
  } else if (!strcmp(what, "bw1")) {
    bandwidth(ex, 1u << 20, "mpi_bw_1MiB");
  } else if (!strcmp(what, "bw64")) {
    bandwidth(ex, 64u << 20, "mpi_bw_64MiB");
  } else if (!strcmp(what, "bw") && argc > 2) { /* bw BYTES: any size */
    char name[64];
    snprintf(name, sizeof name, "mpi_bw_%sB", argv[2]);
    bandwidth(ex, (size_t)atoll(argv[2]), name);
  } else {
    return 2;
  }
  cf_executor_free(ex);
  return 0;
}
