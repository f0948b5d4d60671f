/* cfutures: submit -> result round trip of a tiny task on a warm, otherwise
 * idle pool, 20,000 times from the main thread; median and p99. */
#include "bench_common.h"

#include <stdint.h>

#include <cfutures.h>

static int tiny(void *arg, void **out) {
  *out = arg;
  return 0;
}

static double round_trip(cf_executor *pool) {
  double t0 = bench_now();
  cf_future *f;
  void *v;
  if (cf_submit(pool, tiny, (void *)1, &f) ||
      cf_future_result(f, CF_FOREVER, &v) || v != (void *)1)
    abort();
  double dt = bench_now() - t0;
  cf_future_unref(f);
  return dt * 1e6;
}

int main(int argc, char **argv) {
  const char *workload = bench_rtt_workload(argc, argv);
  cf_thread_pool_opts o = {.max_workers = BENCH_WORKERS};
  cf_executor *pool;
  if (cf_thread_pool_new(&o, &pool))
    return 1;
  double *us = malloc(BENCH_RTT * sizeof *us);
  if (!us)
    return 1;
  for (int i = 0; i < 1000; i++) /* warm up */
    round_trip(pool);
  for (int i = 0; i < BENCH_RTT; i++)
    us[i] = round_trip(pool);
  bench_report_rtt(workload, "cfutures", us, BENCH_RTT);
  free(us);
  cf_executor_free(pool);
  return 0;
}
