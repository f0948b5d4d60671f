/* OpenMP tasks on the thread-pool workloads (built with gcc's libgomp and
 * with clang's libomp):  omp fib | burst | idle */
#include <omp.h>
#include <string.h>
#include <unistd.h>

#include "bench_common.h"

#ifndef OMP_IMPL
#define OMP_IMPL "openmp"
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

static void burst(int n) {
  long done = 0;
#pragma omp parallel
#pragma omp single
  {
    for (int i = 0; i < n; i++) {
#pragma omp task shared(done)
      {
#pragma omp atomic
        done++;
      }
    }
#pragma omp taskwait
  }
  if (done != n)
    abort();
}

int main(int argc, char **argv) {
  const char *what = argc > 1 ? argv[1] : "fib";
  omp_set_num_threads(BENCH_WORKERS);
  if (!strcmp(what, "fib")) {
    long r = 0;
    double t0 = bench_now();
#pragma omp parallel
#pragma omp single
    r = fib(BENCH_FIB_N);
    double dt = bench_now() - t0;
    if (r != 832040)
      return 1;
    bench_report("fib", OMP_IMPL, dt * 1e9 / bench_fib_calls(BENCH_FIB_N),
                 "ns/task");
  } else if (!strcmp(what, "burst")) {
    burst(10000);
    double t0 = bench_now();
    burst(BENCH_BURST);
    bench_report("burst", OMP_IMPL, BENCH_BURST / (bench_now() - t0),
                 "tasks/s");
  } else if (!strcmp(what, "idle")) {
    burst(100000);
    double c0 = bench_cpu();
    sleep(2);
    bench_report("idle_cpu", OMP_IMPL, (bench_cpu() - c0) * 1e3, "ms/2s");
  } else {
    return 2;
  }
  return 0;
}
