// oneTBB: submit -> result round trip through task_arena::enqueue into an
// arena of 2 workers; the task sets a flag and wakes the main thread, which
// waits with a C++20 atomic wait. 20,000 times; median and p99.
#include "bench_common.h"

#include <atomic>
#include <tbb/global_control.h>
#include <tbb/task_arena.h>
#include <vector>

static double round_trip(tbb::task_arena &arena) {
  std::atomic<int> flag{0};
  double t0 = bench_now();
  arena.enqueue([&flag] {
    // release: publishes the task's work; pairs with the acquire load below
    flag.store(1, std::memory_order_release);
    flag.notify_one();
  });
  while (flag.load(std::memory_order_acquire) == 0)
    flag.wait(0, std::memory_order_acquire);
  return (bench_now() - t0) * 1e6;
}

int main(int argc, char **argv) {
  const char *workload = bench_rtt_workload(argc, argv);
  tbb::global_control gc(tbb::global_control::max_allowed_parallelism,
                         BENCH_WORKERS + 1);
  tbb::task_arena arena(BENCH_WORKERS, 0);
  std::vector<double> us(BENCH_RTT);
  for (int i = 0; i < 1000; i++) // warm up
    round_trip(arena);
  for (int i = 0; i < BENCH_RTT; i++)
    us[i] = round_trip(arena);
  bench_report_rtt(workload, "oneTBB", us.data(), BENCH_RTT);
  return 0;
}
