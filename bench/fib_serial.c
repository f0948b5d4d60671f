/* fib(30) by plain recursion: the cost of the work itself, per call. */
#include "bench_common.h"

#include <stdint.h>

static __attribute__((noinline)) intptr_t fib(intptr_t n) {
  return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

int main(void) {
  volatile intptr_t n = BENCH_FIB_N; /* not folded at compile time */
  double t0 = bench_now();
  intptr_t r = fib(n);
  double dt = bench_now() - t0;
  if (r != 832040)
    return 1;
  bench_report("fib", "serial", dt * 1e9 / bench_fib_calls(BENCH_FIB_N),
               "ns/task");
  return 0;
}
