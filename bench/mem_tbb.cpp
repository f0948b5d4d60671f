// oneTBB: memory per pending task. Both workers of an arena of 2 are held
// in a task that blocks on a semaphore, then 1,000,000 tiny tasks are
// enqueued (task_arena::enqueue) and stay queued; the growth of the
// resident set over those enqueues, divided by 1,000,000. An enqueued
// task has no result object; the lambda here captures one pointer.
#include "bench_common.h"

#include <atomic>
#include <semaphore.h>
#include <tbb/global_control.h>
#include <tbb/task_arena.h>

static sem_t held, gate;
static std::atomic<long> ran{0};

int main() {
  if (sem_init(&held, 0, 0) || sem_init(&gate, 0, 0))
    return 1;
  tbb::global_control gc(tbb::global_control::max_allowed_parallelism,
                         BENCH_WORKERS + 1);
  tbb::task_arena arena(BENCH_WORKERS, 0);
  for (int i = 0; i < BENCH_WORKERS; i++)
    arena.enqueue([] {
      sem_post(&held);
      while (sem_wait(&gate) != 0)
        ;
    });
  for (int i = 0; i < BENCH_WORKERS; i++)
    while (sem_wait(&held) != 0)
      ;
  std::atomic<long> *counter = &ran;
  double rss0 = bench_rss();
  for (int i = 0; i < BENCH_PENDING; i++)
    arena.enqueue(
        [counter] { counter->fetch_add(1, std::memory_order_relaxed); });
  double rss1 = bench_rss();
  if (ran.load(std::memory_order_relaxed) != 0)
    return 1; /* not the case being measured */
  bench_report("pending_mem", "oneTBB", (rss1 - rss0) / BENCH_PENDING,
               "bytes/task");
  for (int i = 0; i < BENCH_WORKERS; i++)
    sem_post(&gate);
  while (ran.load(std::memory_order_relaxed) != BENCH_PENDING)
    sched_yield();
  return 0;
}
