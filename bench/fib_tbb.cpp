// oneTBB: nested fib(30) with a task per call (a task_group per call running
// both children), on 2 threads: the caller and one worker.
#include "bench_common.h"

#include <tbb/global_control.h>
#include <tbb/task_arena.h>
#include <tbb/task_group.h>

static long fib(long n) {
  if (n < 2)
    return n;
  long a = 0, b = 0;
  tbb::task_group g;
  g.run([&] { a = fib(n - 1); });
  g.run([&] { b = fib(n - 2); });
  g.wait();
  return a + b;
}

int main() {
  tbb::global_control gc(tbb::global_control::max_allowed_parallelism,
                         BENCH_WORKERS);
  tbb::task_arena arena(BENCH_WORKERS, 1); // one slot for the caller
  long r = 0;
  arena.execute([&] { r = fib(15); }); // warm up: the worker is running

  double t0 = bench_now();
  arena.execute([&] { r = fib(BENCH_FIB_N); });
  double dt = bench_now() - t0;
  if (r != 832040)
    return 1;
  bench_report("fib", "oneTBB", dt * 1e9 / bench_fib_calls(BENCH_FIB_N),
               "ns/task");
  return 0;
}
