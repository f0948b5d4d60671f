/* GLib's GThreadPool on the thread-pool workloads:  glib burst | rtt | idle */
#include <glib.h>
#include <string.h>
#include <unistd.h>

#include "bench_common.h"

static gint done;
static GMutex mu;
static GCond cv;
static gboolean flag;

static void count(gpointer data, gpointer user) {
  (void)data;
  (void)user;
  g_atomic_int_inc(&done);
}

static void reply(gpointer data, gpointer user) {
  (void)data;
  (void)user;
  g_mutex_lock(&mu);
  flag = TRUE;
  g_cond_signal(&cv);
  g_mutex_unlock(&mu);
}

static void burst(GThreadPool *pool, int n) {
  g_atomic_int_set(&done, 0);
  for (int i = 0; i < n; i++)
    g_thread_pool_push(pool, GINT_TO_POINTER(i + 1), NULL);
  while (g_atomic_int_get(&done) != n)
    g_usleep(50);
}

int main(int argc, char **argv) {
  const char *what = argc > 1 ? argv[1] : "burst";
  if (!strcmp(what, "burst") || !strcmp(what, "idle")) {
    GThreadPool *pool =
        g_thread_pool_new(count, NULL, BENCH_WORKERS, TRUE, NULL);
    burst(pool, 10000);
    if (!strcmp(what, "burst")) {
      double t0 = bench_now();
      burst(pool, BENCH_BURST);
      bench_report("burst", "GLib", BENCH_BURST / (bench_now() - t0),
                   "tasks/s");
    } else {
      burst(pool, 100000);
      double c0 = bench_cpu();
      sleep(2);
      bench_report("idle_cpu", "GLib", (bench_cpu() - c0) * 1e3, "ms/2s");
    }
    g_thread_pool_free(pool, FALSE, TRUE);
  } else if (!strcmp(what, "rtt")) {
    GThreadPool *pool =
        g_thread_pool_new(reply, NULL, BENCH_WORKERS, TRUE, NULL);
    double *us = malloc(BENCH_RTT * sizeof *us);
    for (int i = 0; i < BENCH_RTT; i++) {
      double t0 = bench_now();
      g_mutex_lock(&mu);
      flag = FALSE;
      g_mutex_unlock(&mu);
      g_thread_pool_push(pool, GINT_TO_POINTER(1), NULL);
      g_mutex_lock(&mu);
      while (!flag)
        g_cond_wait(&cv, &mu);
      g_mutex_unlock(&mu);
      us[i] = (bench_now() - t0) * 1e6;
    }
    bench_report_rtt("GLib", us, BENCH_RTT);
    free(us);
    g_thread_pool_free(pool, FALSE, TRUE);
  } else {
    return 2;
  }
  return 0;
}
