/* cfutures: 1,000,000 tiny tasks submitted from the main thread (outside the
 * pool), then the main thread waits for every future. */
#include "bench_common.h"

#include <stdint.h>

#include <cfutures.h>

static int tiny(void *arg, void **out) {
  *out = arg;
  return 0;
}

static void burst(cf_executor *pool, int n) {
  cf_future **fs = malloc((size_t)n * sizeof *fs);
  if (!fs)
    abort();
  for (int i = 0; i < n; i++)
    if (cf_submit(pool, tiny, (void *)(intptr_t)i, &fs[i]))
      abort();
  for (int i = 0; i < n; i++) {
    void *v;
    if (cf_future_result(fs[i], CF_FOREVER, &v) || (intptr_t)v != i)
      abort();
    cf_future_unref(fs[i]);
  }
  free(fs);
}

int main(void) {
  cf_thread_pool_opts o = {.max_workers = BENCH_WORKERS};
  cf_executor *pool;
  if (cf_thread_pool_new(&o, &pool))
    return 1;
  burst(pool, BENCH_BURST); /* warm up: see BENCH_BURST */
  double t0 = bench_now();
  burst(pool, BENCH_BURST);
  bench_report("burst", "cfutures", BENCH_BURST / (bench_now() - t0),
               "tasks/s");
  cf_executor_free(pool);
  return 0;
}
