// oneTBB: CPU (user + system, whole process) used over a 2 s sleep right
// after a burst of 100,000 tiny tasks enqueued into an arena of 2 workers.
#include "bench_common.h"

#include <atomic>
#include <tbb/global_control.h>
#include <tbb/task_arena.h>
#include <unistd.h>

int main() {
  tbb::global_control gc(tbb::global_control::max_allowed_parallelism,
                         BENCH_WORKERS + 1);
  tbb::task_arena arena(BENCH_WORKERS, 0);
  std::atomic<int> done{0};
  const int n = BENCH_IDLE_BURST;
  for (int i = 0; i < n; i++)
    arena.enqueue([&done, n] {
      // acq_rel: the task that reaches n has seen every other increment
      if (done.fetch_add(1, std::memory_order_acq_rel) + 1 == n)
        done.notify_one();
    });
  int seen;
  // acquire: pairs with the tasks' fetch_add (all of them have run)
  while ((seen = done.load(std::memory_order_acquire)) != n)
    done.wait(seen, std::memory_order_acquire);
  double c0 = bench_cpu();
  sleep(2);
  bench_report("idle_cpu", "oneTBB", (bench_cpu() - c0) * 1e3, "ms/2s");
  return 0;
}
