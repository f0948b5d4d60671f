/* GLib: memory per pending task. Both threads of a GThreadPool (2
 * exclusive threads) are held in a task that blocks on a semaphore, then
 * 1,000,000 tasks are pushed (g_thread_pool_push) and stay queued; the
 * growth of the resident set over those pushes, divided by 1,000,000.
 * GLib keeps only the data pointer per task (in its GAsyncQueue): there is
 * no future, the result of a task must travel by other means. */
#include "bench_common.h"

#include <glib.h>
#include <semaphore.h>

static sem_t held, gate;

static void work(gpointer data, gpointer user) {
  (void)user;
  if (GPOINTER_TO_INT(data) == -1) { /* a holder */
    sem_post(&held);
    while (sem_wait(&gate) != 0)
      ;
  }
}

int main(void) {
  if (sem_init(&held, 0, 0) || sem_init(&gate, 0, 0))
    return 1;
  GThreadPool *pool = g_thread_pool_new(work, NULL, BENCH_WORKERS, TRUE, NULL);
  for (int i = 0; i < BENCH_WORKERS; i++)
    g_thread_pool_push(pool, GINT_TO_POINTER(-1), NULL);
  for (int i = 0; i < BENCH_WORKERS; i++)
    while (sem_wait(&held) != 0)
      ;
  double rss0 = bench_rss();
  for (int i = 0; i < BENCH_PENDING; i++)
    g_thread_pool_push(pool, GINT_TO_POINTER(i + 1), NULL);
  double rss1 = bench_rss();
  if (g_thread_pool_unprocessed(pool) != BENCH_PENDING)
    return 1; /* not the case being measured */
  bench_report("pending_mem", "GLib", (rss1 - rss0) / BENCH_PENDING,
               "bytes/task");
  for (int i = 0; i < BENCH_WORKERS; i++)
    sem_post(&gate);
  g_thread_pool_free(pool, FALSE, TRUE);
  return 0;
}
