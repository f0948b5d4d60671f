/* GLib: 1,000,000 tiny tasks pushed from the main thread into a GThreadPool
 * of 2 exclusive threads (g_thread_pool_push); the last task signals the main
 * thread, which sleeps on a GCond meanwhile. */
#include "bench_common.h"

#include <glib.h>

static gint done;
static gint target;
static GMutex mu;
static GCond cv;
static gboolean finished; /* protected by mu */

static void count(gpointer data, gpointer user) {
  (void)data;
  (void)user;
  if (g_atomic_int_add(&done, 1) + 1 == g_atomic_int_get(&target)) {
    g_mutex_lock(&mu);
    finished = TRUE;
    g_cond_signal(&cv);
    g_mutex_unlock(&mu);
  }
}

static void burst(GThreadPool *pool, int n) {
  g_atomic_int_set(&done, 0);
  g_atomic_int_set(&target, n);
  g_mutex_lock(&mu);
  finished = FALSE;
  g_mutex_unlock(&mu);
  for (int i = 0; i < n; i++)
    g_thread_pool_push(pool, GINT_TO_POINTER(i + 1), NULL);
  g_mutex_lock(&mu);
  while (!finished)
    g_cond_wait(&cv, &mu);
  g_mutex_unlock(&mu);
}

int main(void) {
  GThreadPool *pool = g_thread_pool_new(count, NULL, BENCH_WORKERS, TRUE, NULL);
  burst(pool, BENCH_BURST); /* warm up: see BENCH_BURST */
  double t0 = bench_now();
  burst(pool, BENCH_BURST);
  bench_report("burst", "GLib", BENCH_BURST / (bench_now() - t0), "tasks/s");
  g_thread_pool_free(pool, FALSE, TRUE);
  return 0;
}
