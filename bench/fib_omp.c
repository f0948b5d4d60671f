/* OpenMP tasks: nested fib(30) with a task per call (both children are
 * tasks, then taskwait), on 2 threads. Built twice by bench/run: gcc
 * (libgomp) and clang (libomp); OMP_IMPL names the build. */
#include "bench_common.h"

#include <omp.h>

#ifndef OMP_IMPL
#define OMP_IMPL "OpenMP"
#endif

static long fib(long n) {
  if (n < 2)
    return n;
  long a, b;
#pragma omp task shared(a)
  a = fib(n - 1);
#pragma omp task shared(b)
  b = fib(n - 2);
#pragma omp taskwait
  return a + b;
}

int main(void) {
  omp_set_num_threads(BENCH_WORKERS);
  long r = 0;
#pragma omp parallel /* warm up: the threads are running */
#pragma omp single
  r = fib(15);
  double t0 = bench_now();
#pragma omp parallel
#pragma omp single
  r = fib(BENCH_FIB_N);
  double dt = bench_now() - t0;
  if (r != 832040)
    return 1;
  bench_report("fib", OMP_IMPL, dt * 1e9 / bench_fib_calls(BENCH_FIB_N),
               "ns/task");
  return 0;
}
