/* cfutures: CPU (user + system, whole process) used over a 2 s sleep right
 * after a burst of 100,000 tiny tasks: what an idle pool burns. */
#include "bench_common.h"

#include <stdint.h>
#include <unistd.h>

#include <cfutures.h>

static int tiny(void *arg, void **out) {
  *out = arg;
  return 0;
}

int main(void) {
  cf_thread_pool_opts o = {.max_workers = BENCH_WORKERS};
  cf_executor *pool;
  if (cf_thread_pool_new(&o, &pool))
    return 1;
  cf_future **fs = malloc(BENCH_IDLE_BURST * sizeof *fs);
  if (!fs)
    return 1;
  for (int i = 0; i < BENCH_IDLE_BURST; i++)
    if (cf_submit(pool, tiny, NULL, &fs[i]))
      return 1;
  for (int i = 0; i < BENCH_IDLE_BURST; i++) {
    if (cf_future_result(fs[i], CF_FOREVER, NULL))
      return 1;
    cf_future_unref(fs[i]);
  }
  free(fs);
  double c0 = bench_cpu();
  sleep(2);
  bench_report("idle_cpu", "cfutures", (bench_cpu() - c0) * 1e3, "ms/2s");
  cf_executor_free(pool);
  return 0;
}
