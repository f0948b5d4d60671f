// oneTBB on the thread-pool workloads:  tbb fib | burst | rtt | idle
#include <atomic>
#include <cstring>
#include <tbb/global_control.h>
#include <tbb/task_arena.h>
#include <tbb/task_group.h>
#include <unistd.h>
#include <vector>

#include "bench_common.h"

static long fib(long n) {
  if (n < 2)
    return n;
  long a = 0, b = 0;
  tbb::task_group g; // a task per call, like the cfutures version
  g.run([&] { a = fib(n - 1); });
  g.run([&] { b = fib(n - 2); });
  g.wait();
  return a + b;
}

int main(int argc, char **argv) {
  const char *what = argc > 1 ? argv[1] : "fib";
  // Two worker threads serve outside submissions (the caller keeps its own
  // thread, as with cfutures); fib runs on two threads, the caller being one.
  tbb::global_control gc(tbb::global_control::max_allowed_parallelism,
                         BENCH_WORKERS + 1);
  tbb::task_arena arena(BENCH_WORKERS, 0);
  if (!strcmp(what, "fib")) {
    long r = 0;
    tbb::task_arena fib_arena(BENCH_WORKERS, 1);
    double t0 = bench_now();
    fib_arena.execute([&] { r = fib(BENCH_FIB_N); });
    double dt = bench_now() - t0;
    if (r != 832040)
      return 1;
    bench_report("fib", "oneTBB", dt * 1e9 / bench_fib_calls(BENCH_FIB_N),
                 "ns/task");
  } else if (!strcmp(what, "burst")) {
    std::atomic<int> done{0};
    auto run = [&](int n) {
      done.store(0);
      for (int i = 0; i < n; i++)
        arena.enqueue(
            [&done] { done.fetch_add(1, std::memory_order_release); });
      while (done.load(std::memory_order_acquire) != n)
        sched_yield();
    };
    run(10000);
    double t0 = bench_now();
    run(BENCH_BURST);
    bench_report("burst", "oneTBB", BENCH_BURST / (bench_now() - t0),
                 "tasks/s");
  } else if (!strcmp(what, "rtt")) {
    std::vector<double> us(BENCH_RTT);
    std::atomic<int> flag{0};
    for (int i = 0; i < BENCH_RTT; i++) {
      double t0 = bench_now();
      flag.store(0);
      arena.enqueue([&flag] {
        flag.store(1, std::memory_order_release);
        flag.notify_one();
      });
      while (flag.load(std::memory_order_acquire) == 0)
        flag.wait(0);
      us[i] = (bench_now() - t0) * 1e6;
    }
    bench_report_rtt("oneTBB", us.data(), BENCH_RTT);
  } else if (!strcmp(what, "idle")) {
    std::atomic<int> done{0};
    for (int i = 0; i < 100000; i++)
      arena.enqueue([&done] { done.fetch_add(1); });
    while (done.load() != 100000)
      sched_yield();
    double c0 = bench_cpu();
    sleep(2);
    bench_report("idle_cpu", "oneTBB", (bench_cpu() - c0) * 1e3, "ms/2s");
  } else {
    return 2;
  }
  return 0;
}
