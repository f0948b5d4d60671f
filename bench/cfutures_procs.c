/* cfutures' process pool on the process workloads:
 *   cfutures_procs submit | map | rtt | bw1 | bw64
 * CF_BENCH_START=fork: the pool's start method is CF_START_FORK (default:
 * the fork server, CF_START_FORKSERVER). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cfutures.h>

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
  for (int rep = 0; rep < 5; rep++) {
    double t0 = bench_now();
    cf_future *f;
    void *v;
    if (cf_process_pool_submit(ex, echo, buf, n, &f) ||
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
  const char *what = argc > 1 ? argv[1] : "submit";
  cf_process_pool_opts o = {.max_workers = BENCH_WORKERS};
  const char *start = getenv("CF_BENCH_START");
  if (start && !strcmp(start, "fork"))
    o.start_method = CF_START_FORK;
  cf_executor *ex;
  if (cf_process_pool_new(&o, &ex))
    return 1;
  if (!strcmp(what, "submit")) {
    enum { N = 50000 };
    cf_future **fs = malloc(N * sizeof *fs);
    double t0 = bench_now();
    for (intptr_t i = 0; i < N; i++)
      if (cf_submit(ex, tiny, (void *)i, &fs[i]))
        return 1;
    for (int i = 0; i < N; i++) {
      if (cf_future_result(fs[i], CF_FOREVER, NULL))
        return 1;
      cf_future_unref(fs[i]);
    }
    bench_report("proc_submit", "cfutures", N / (bench_now() - t0), "tasks/s");
    free(fs);
  } else if (!strcmp(what, "map")) {
    enum { N = 1000000 };
    int64_t *xs = malloc(N * sizeof *xs);
    for (int i = 0; i < N; i++)
      xs[i] = i;
    cf_map_opts mo = {.chunksize = 1000};
    cf_map *m;
    double t0 = bench_now();
    if (cf_map_array(ex, item, xs, N, sizeof xs[0], &mo, &m))
      return 1;
    void *v;
    for (int i = 0; i < N; i++)
      if (cf_map_next(m, &v) || (intptr_t)v != i + 1)
        return 1;
    bench_report("proc_map", "cfutures", N / (bench_now() - t0), "items/s");
    cf_map_free(m);
    free(xs);
  } else if (!strcmp(what, "rtt")) {
    enum { N = 5000 };
    double *us = malloc(N * sizeof *us);
    for (int i = 0; i < N; i++) {
      double t0 = bench_now();
      cf_future *f;
      if (cf_submit(ex, tiny, NULL, &f) || cf_future_result(f, CF_FOREVER, NULL))
        return 1;
      us[i] = (bench_now() - t0) * 1e6;
      cf_future_unref(f);
    }
    qsort(us, N, sizeof us[0], bench_cmp);
    bench_report("proc_rtt", "cfutures", us[N / 2], "us");
    free(us);
  } else if (!strcmp(what, "bw1")) {
    bandwidth(ex, 1u << 20, "bw_1MiB");
  } else if (!strcmp(what, "bw64")) {
    bandwidth(ex, 64u << 20, "bw_64MiB");
  } else {
    return 2;
  }
  cf_executor_free(ex);
  return 0;
}
