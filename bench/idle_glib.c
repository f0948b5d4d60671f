/* GLib: CPU (user + system, whole process) used over a 2 s sleep right after
 * a burst of 100,000 tiny tasks pushed into a GThreadPool of 2 exclusive
 * threads. */
#include "bench_common.h"

#include <glib.h>
#include <unistd.h>

static GMutex mu;
static GCond cv;
static int done; /* protected by mu */

static void count(gpointer data, gpointer user) {
  (void)data;
  (void)user;
  g_mutex_lock(&mu);
  if (++done == BENCH_IDLE_BURST)
    g_cond_signal(&cv);
  g_mutex_unlock(&mu);
}

int main(void) {
  GThreadPool *pool = g_thread_pool_new(count, NULL, BENCH_WORKERS, TRUE, NULL);
  for (int i = 0; i < BENCH_IDLE_BURST; i++)
    g_thread_pool_push(pool, GINT_TO_POINTER(i + 1), NULL);
  g_mutex_lock(&mu);
  while (done != BENCH_IDLE_BURST)
    g_cond_wait(&cv, &mu);
  g_mutex_unlock(&mu);
  double c0 = bench_cpu();
  sleep(2);
  bench_report("idle_cpu", "GLib", (bench_cpu() - c0) * 1e3, "ms/2s");
  g_thread_pool_free(pool, FALSE, TRUE);
  return 0;
}
