// oneTBB: 1,000,000 tiny tasks enqueued from the main thread into an arena of
// 2 workers (task_arena::enqueue); the last task wakes the main thread, which
// sleeps in a C++20 atomic wait meanwhile.
#include "bench_common.h"

#include <atomic>
#include <tbb/global_control.h>
#include <tbb/task_arena.h>

static void burst(tbb::task_arena &arena, int n) {
  std::atomic<int> done{0};
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
}

int main() {
  // 2 workers serve the arena; the main thread only submits and waits.
  tbb::global_control gc(tbb::global_control::max_allowed_parallelism,
                         BENCH_WORKERS + 1);
  tbb::task_arena arena(BENCH_WORKERS, 0);
  burst(arena, BENCH_BURST); // warm up: see BENCH_BURST
  double t0 = bench_now();
  burst(arena, BENCH_BURST);
  bench_report("burst", "oneTBB", BENCH_BURST / (bench_now() - t0), "tasks/s");
  return 0;
}
