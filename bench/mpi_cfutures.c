/* cfutures' MPI pool on the MPI workloads, rank 0 owning the pool and the
 * other ranks serving it (run under mpiexec -n 3: two workers):
 *   mpiexec -n 3 mpi_cfutures submit | map | rtt | bw1 | bw64 [scale]
 *   mpiexec -n 3 mpi_cfutures bw BYTES      the bandwidth at any size
 *   mpiexec -n N mpi_cfutures scale [scale] per task against the rank count
 *                                           (bench/run mpi-scale)
 * `scale` (default 1) divides the task counts: a quick smoke run.
 *   mpiexec -n 3 mpi_cfutures submit-caller | rtt-caller
 * the same with opts.caller_progress: no progress thread, this thread
 * drives the pool (cf_mpi_pool_progress) while it waits; impl
 * "cfutures-caller" in the table. */
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

/* Caller-driven (opts.caller_progress): waits drive the pool. */
static bool caller;

/* Waits for f: with a progress thread, as any program does; caller-driven,
 * moving the pool's messages on this thread until f is done. */
static int wait_for(cf_executor *ex, cf_future *f, void **v) {
  if (caller && cf_mpi_pool_progress(ex, f, CF_FOREVER) != 0)
    return 1;
  return cf_future_result(f, CF_FOREVER, v) != 0;
}

/* n tiny value tasks submitted one by one, then waited for: the wall
 * time and rank 0's CPU time (the whole process) in seconds. */
static int run_submit(cf_executor *ex, int n, double *wall, double *cpu) {
  cf_future **fs = malloc((size_t)n * sizeof *fs);
  if (!fs)
    return 1;
  double t0 = bench_now(), c0 = bench_cpu();
  for (intptr_t i = 0; i < n; i++)
    if (cf_submit(ex, tiny, (void *)i, &fs[i]))
      return 1;
  for (int i = 0; i < n; i++) {
    if (wait_for(ex, fs[i], NULL))
      return 1;
    cf_future_unref(fs[i]);
  }
  *wall = bench_now() - t0;
  *cpu = bench_cpu() - c0;
  free(fs);
  return 0;
}

/* n integers through cf_map_array, chunksize 1000, the default window
 * (as for the process pool: one future per chunk). */
static int run_map(cf_executor *ex, int n, double *wall, double *cpu) {
  int64_t *xs = malloc((size_t)n * sizeof *xs);
  if (!xs)
    return 1;
  for (int i = 0; i < n; i++)
    xs[i] = i;
  cf_map_opts mo = {.chunksize = 1000};
  cf_map *m;
  double t0 = bench_now(), c0 = bench_cpu();
  if (cf_map_array(ex, item, xs, (size_t)n, sizeof xs[0], &mo, &m))
    return 1;
  void *v;
  for (int i = 0; i < n; i++)
    if (cf_map_next(m, &v) || (intptr_t)v != i + 1)
      return 1;
  *wall = bench_now() - t0;
  *cpu = bench_cpu() - c0;
  cf_map_free(m);
  free(xs);
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
  const char *impl = "cfutures";
  if (!strcmp(what, "submit-caller") || !strcmp(what, "rtt-caller")) {
    caller = true;
    impl = "cfutures-caller";
    what = what[0] == 's' ? "submit" : "rtt";
  }
  cf_mpi_pool_opts po = {.caller_progress = caller};
  cf_executor *ex;
  if (cf_mpi_pool_new(&po, &ex)) {
    fprintf(stderr, "%s\n", cf_last_error());
    return 1;
  }
  { /* warm up: workers running, functions resolved */
    cf_future *f;
    for (int i = 0; i < 100; i++) {
      if (cf_submit(ex, tiny, NULL, &f) || wait_for(ex, f, NULL))
        return 1;
      cf_future_unref(f);
    }
  }
  if (!strcmp(what, "submit")) {
    int n = 100000 / scale;
    double wall, cpu;
    if (run_submit(ex, n, &wall, &cpu))
      return 1;
    bench_report("mpi_submit", impl, n / wall, "tasks/s");
  } else if (!strcmp(what, "map")) {
    int n = 1000000 / scale;
    double wall, cpu;
    if (run_map(ex, n, &wall, &cpu))
      return 1;
    bench_report("mpi_map", "cfutures", n / wall, "items/s");
  } else if (!strcmp(what, "scale")) {
    /* per task against the rank count: wall time and rank 0's CPU time
     * (both its threads: submitting and waiting, and the progress
     * thread, polling included) per task and per map item */
    int ranks = (int)cf_mpi_pool_size(ex) + 1, n = 50000 / scale;
    double wall, cpu;
    char name[64];
    if (run_submit(ex, n, &wall, &cpu))
      return 1;
    snprintf(name, sizeof name, "mpi_sub_us_n%d", ranks);
    bench_report(name, "cfutures", wall / n * 1e6, "us/task");
    snprintf(name, sizeof name, "mpi_sub_cpu_n%d", ranks);
    bench_report(name, "cfutures", cpu / n * 1e6, "us/task");
    n = 1000000 / scale;
    if (run_map(ex, n, &wall, &cpu))
      return 1;
    snprintf(name, sizeof name, "mpi_map_us_n%d", ranks);
    bench_report(name, "cfutures", wall / n * 1e6, "us/item");
    snprintf(name, sizeof name, "mpi_map_cpu_n%d", ranks);
    bench_report(name, "cfutures", cpu / n * 1e6, "us/item");
  } else if (!strcmp(what, "rtt")) {
    int n = 5000 / scale;
    double *us = malloc((size_t)n * sizeof *us);
    for (int i = 0; i < n; i++) {
      double t0 = bench_now();
      cf_future *f;
      if (cf_submit(ex, tiny, NULL, &f) || wait_for(ex, f, NULL))
        return 1;
      us[i] = (bench_now() - t0) * 1e6;
      cf_future_unref(f);
    }
    qsort(us, (size_t)n, sizeof us[0], bench_cmp);
    bench_report("mpi_rtt", impl, us[n / 2], "us");
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
