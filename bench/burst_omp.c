/* OpenMP: 1,000,000 tiny tasks created from one thread (`single`), then
 * taskwait; 2 threads in the team, the creating thread being one of them
 * (OpenMP has no outside submitter). Built with gcc and with clang. */
#include "bench_common.h"

#include <omp.h>

#ifndef OMP_IMPL
#define OMP_IMPL "OpenMP"
#endif

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

int main(void) {
  omp_set_num_threads(BENCH_WORKERS);
  burst(BENCH_BURST); /* warm up: see BENCH_BURST */
  double t0 = bench_now();
  burst(BENCH_BURST);
  bench_report("burst", OMP_IMPL, BENCH_BURST / (bench_now() - t0), "tasks/s");
  return 0;
}
