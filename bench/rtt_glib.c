/* GLib: submit -> result round trip through g_thread_pool_push into a
 * GThreadPool of 2 exclusive threads; the task replies on a GAsyncQueue the
 * main thread pops. 20,000 times; median and p99. */
#include "bench_common.h"

#include <glib.h>

static void reply(gpointer data, gpointer user) {
  g_async_queue_push((GAsyncQueue *)user, data);
}

static double round_trip(GThreadPool *pool, GAsyncQueue *replies) {
  double t0 = bench_now();
  g_thread_pool_push(pool, GINT_TO_POINTER(1), NULL);
  if (g_async_queue_pop(replies) != GINT_TO_POINTER(1))
    abort();
  return (bench_now() - t0) * 1e6;
}

int main(int argc, char **argv) {
  const char *workload = bench_rtt_workload(argc, argv);
  GAsyncQueue *replies = g_async_queue_new();
  GThreadPool *pool =
      g_thread_pool_new(reply, replies, BENCH_WORKERS, TRUE, NULL);
  double *us = malloc(BENCH_RTT * sizeof *us);
  if (!us)
    return 1;
  for (int i = 0; i < 1000; i++) /* warm up */
    round_trip(pool, replies);
  for (int i = 0; i < BENCH_RTT; i++)
    us[i] = round_trip(pool, replies);
  bench_report_rtt(workload, "GLib", us, BENCH_RTT);
  free(us);
  g_thread_pool_free(pool, FALSE, TRUE);
  g_async_queue_unref(replies);
  return 0;
}
