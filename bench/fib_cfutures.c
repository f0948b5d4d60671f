/* cfutures: nested fib(30) with a task per call. Each call submits both
 * children from inside the worker and waits on their futures; the waiting
 * worker runs pool tasks meanwhile (the pool runs it nested). */
#include "bench_common.h"

#include <stdint.h>

#include <cfutures.h>

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

int main(void) {
  cf_thread_pool_opts o = {.max_workers = BENCH_WORKERS};
  if (cf_thread_pool_new(&o, &pool))
    return 1;
  cf_future *f;
  void *v;
  if (cf_submit(pool, fib, (void *)(intptr_t)15, &f) || /* warm up */
      cf_future_result(f, CF_FOREVER, &v) || (intptr_t)v != 610)
    return 1;
  cf_future_unref(f);
  double t0 = bench_now();
  if (cf_submit(pool, fib, (void *)(intptr_t)BENCH_FIB_N, &f) ||
      cf_future_result(f, CF_FOREVER, &v) || (intptr_t)v != 832040)
    return 1;
  double dt = bench_now() - t0;
  cf_future_unref(f);
  bench_report("fib", "cfutures", dt * 1e9 / bench_fib_calls(BENCH_FIB_N),
               "ns/task");
  cf_executor_free(pool);
  return 0;
}
