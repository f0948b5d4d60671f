/* OpenMP: CPU (user + system, whole process) used over a 2 s sleep right
 * after a burst of 100,000 tiny tasks, with the runtime's default settings
 * (no OMP_WAIT_POLICY). Built with gcc (libgomp) and clang (libomp). */
#include "bench_common.h"

#include <omp.h>
#include <unistd.h>

#ifndef OMP_IMPL
#define OMP_IMPL "OpenMP"
#endif

int main(void) {
  omp_set_num_threads(BENCH_WORKERS);
  long done = 0;
#pragma omp parallel
#pragma omp single
  {
    for (int i = 0; i < BENCH_IDLE_BURST; i++) {
#pragma omp task shared(done)
      {
#pragma omp atomic
        done++;
      }
    }
#pragma omp taskwait
  }
  if (done != BENCH_IDLE_BURST)
    return 1;
  double c0 = bench_cpu();
  sleep(2);
  bench_report("idle_cpu", OMP_IMPL, (bench_cpu() - c0) * 1e3, "ms/2s");
  return 0;
}
