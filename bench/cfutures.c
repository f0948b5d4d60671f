/* cfutures on the thread-pool workloads:
 *   cfutures fib | burst | rtt | idle */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cfutures.h>

#include "bench_common.h"

static cf_executor *pool;

static int fib(void *arg, void **out) {
  intptr_t n = (intptr_t)arg;
  if (n < 2) {
    *out = (void *)n;
    return 0;
  }
  cf_future *a, *b;
  if (cf_submit(pool, fib, (void *)(n - 1), &a) ||
      cf_submit(pool, fib, (void *)(n - 2), &b))
    abort();
  void *va, *vb;
  if (cf_future_result(b, CF_FOREVER, &vb) ||
      cf_future_result(a, CF_FOREVER, &va))
    abort();
  cf_future_unref(a);
  cf_future_unref(b);
  *out = (void *)((intptr_t)va + (intptr_t)vb);
  return 0;
}

static int tiny(void *arg, void **out) {
  *out = arg;
  return 0;
}

static void burst(int n) {
  cf_future **fs = malloc((size_t)n * sizeof *fs);
  for (int i = 0; i < n; i++)
    if (cf_submit(pool, tiny, (void *)(intptr_t)i, &fs[i]))
      abort();
  for (int i = 0; i < n; i++) {
    if (cf_future_result(fs[i], CF_FOREVER, NULL))
      abort();
    cf_future_unref(fs[i]);
  }
  free(fs);
}

int main(int argc, char **argv) {
  const char *what = argc > 1 ? argv[1] : "fib";
  cf_thread_pool_opts o = {.max_workers = BENCH_WORKERS};
  if (cf_thread_pool_new(&o, &pool))
    return 1;
  if (!strcmp(what, "fib")) {
    double t0 = bench_now();
    cf_future *f;
    void *v;
    if (cf_submit(pool, fib, (void *)(intptr_t)BENCH_FIB_N, &f) ||
        cf_future_result(f, CF_FOREVER, &v) || (intptr_t)v != 832040)
      return 1;
    double dt = bench_now() - t0;
    cf_future_unref(f);
    bench_report("fib", "cfutures", dt * 1e9 / bench_fib_calls(BENCH_FIB_N),
                 "ns/task");
  } else if (!strcmp(what, "burst")) {
    burst(10000); /* warm up */
    double t0 = bench_now();
    burst(BENCH_BURST);
    bench_report("burst", "cfutures", BENCH_BURST / (bench_now() - t0),
                 "tasks/s");
  } else if (!strcmp(what, "rtt")) {
    double *us = malloc(BENCH_RTT * sizeof *us);
    for (int i = 0; i < BENCH_RTT; i++) {
      double t0 = bench_now();
      cf_future *f;
      if (cf_submit(pool, tiny, NULL, &f) ||
          cf_future_result(f, CF_FOREVER, NULL))
        return 1;
      us[i] = (bench_now() - t0) * 1e6;
      cf_future_unref(f);
    }
    bench_report_rtt("cfutures", us, BENCH_RTT);
    free(us);
  } else if (!strcmp(what, "idle")) {
    burst(100000);
    double c0 = bench_cpu();
    sleep(2);
    bench_report("idle_cpu", "cfutures", (bench_cpu() - c0) * 1e3, "ms/2s");
  } else {
    return 2;
  }
  cf_executor_free(pool);
  return 0;
}
