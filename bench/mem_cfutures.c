/* cfutures: memory per pending future. Both workers are held in a task
 * that blocks its thread on a semaphore, then 1,000,000 tiny tasks are
 * submitted from the main thread and stay pending (queued, not started);
 * the growth of the resident set over those submissions, divided by
 * 1,000,000, is the cost of a pending task with its future. The array of
 * future pointers is the caller's and is touched before the first
 * reading, so it is not counted. Issue 15's limit: 128 bytes. */
#include "bench_common.h"

#include <semaphore.h>
#include <stdint.h>

#include <cfutures.h>

static sem_t held, gate;

static int hold(void *arg, void **out) {
  (void)arg;
  *out = NULL;
  sem_post(&held);
  while (sem_wait(&gate) != 0)
    ;
  return 0;
}

static int tiny(void *arg, void **out) {
  *out = arg;
  return 0;
}

int main(void) {
  cf_thread_pool_opts o = {.max_workers = BENCH_WORKERS};
  cf_executor *pool;
  if (sem_init(&held, 0, 0) || sem_init(&gate, 0, 0) ||
      cf_thread_pool_new(&o, &pool))
    return 1;
  cf_future *holders[BENCH_WORKERS];
  for (int i = 0; i < BENCH_WORKERS; i++)
    if (cf_submit(pool, hold, NULL, &holders[i]))
      return 1;
  for (int i = 0; i < BENCH_WORKERS; i++)
    while (sem_wait(&held) != 0)
      ;
  cf_future **fs = calloc(BENCH_PENDING, sizeof *fs);
  if (!fs)
    return 1;
  for (int i = 0; i < BENCH_PENDING; i++) /* touch the caller's array */
    fs[i] = (cf_future *)(intptr_t)1;
  double rss0 = bench_rss();
  for (int i = 0; i < BENCH_PENDING; i++)
    if (cf_submit(pool, tiny, (void *)(intptr_t)i, &fs[i]))
      return 1;
  double rss1 = bench_rss();
  for (int i = 0; i < BENCH_PENDING; i++)
    if (cf_future_state_of(fs[i]) != CF_PENDING)
      return 1; /* not the case being measured */
  bench_report("pending_mem", "cfutures", (rss1 - rss0) / BENCH_PENDING,
               "bytes/task");
  for (int i = 0; i < BENCH_WORKERS; i++)
    sem_post(&gate);
  for (int i = 0; i < BENCH_PENDING; i++) {
    void *v;
    if (cf_future_result(fs[i], CF_FOREVER, &v) || (intptr_t)v != i)
      return 1;
    cf_future_unref(fs[i]);
  }
  for (int i = 0; i < BENCH_WORKERS; i++)
    cf_future_unref(holders[i]);
  free(fs);
  cf_executor_free(pool);
  return 0;
}
