/* cfutures' green tasks: the cost of a switch between two greenlets, of
 * spawning and joining an empty green task, and the memory of a sleeping
 * green task. RESULT lines for bench/run green. */
#include "bench_common.h"

#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cfutures.h>

#define SWITCHES 2000000
#define SPAWNS 200000
#define SLEEPERS 20000

static int pingpong(void *arg, void **out) {
  cf_greenlet *main_g = arg;
  for (;;)
    cf_greenlet_switch(main_g, NULL, NULL);
  *out = NULL;
  return 0;
}

static int empty(void *arg, void **out) {
  *out = arg;
  return 0;
}

static int sleeper(void *arg, void **out) {
  (void)arg;
  *out = NULL;
  return cf_green_sleep(3600);
}

static double rss_bytes(void) {
  long pages = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f || fscanf(f, "%ld %ld", &pages, &rss) != 2)
    rss = 0;
  if (f)
    fclose(f);
  return (double)rss * (double)sysconf(_SC_PAGESIZE);
}

int main(void) {
  cf_loop *l;
  if (cf_loop_new(NULL, &l))
    return 1;
  static cf_future *fs[SPAWNS];
  /* Memory first, before anything else has grown the heap. */
  /* Memory: sleeping tasks, each suspended on its own stack. */
  double before = rss_bytes();
  for (int i = 0; i < SLEEPERS; i++)
    if (cf_loop_spawn(l, sleeper, NULL, &fs[i]))
      return 1;
  cf_future *never = cf_future_new();
  cf_loop_run_until_complete(l, never, 0.5);
  bench_report("green_sleeper_mem", "cfutures",
               (rss_bytes() - before) / SLEEPERS, "bytes/task");
  for (int i = 0; i < SLEEPERS; i++)
    cf_future_unref(fs[i]);
  cf_future_unref(never);
  cf_loop_free(l); /* cancels the sleepers */
  if (cf_loop_new(NULL, &l))
    return 1;
  /* Switch: main -> g -> main is two switches. */
  cf_greenlet *g;
  cf_greenlet *main_g = cf_greenlet_current();
  if (cf_greenlet_new(pingpong, NULL, 0, &g))
    return 1;
  cf_greenlet_switch(g, main_g, NULL);
  for (int i = 0; i < 10000; i++) /* warm-up */
    cf_greenlet_switch(g, NULL, NULL);
  double t0 = bench_now();
  for (int i = 0; i < SWITCHES / 2; i++)
    cf_greenlet_switch(g, NULL, NULL);
  bench_report("green_switch", "cfutures",
               (bench_now() - t0) * 1e9 / SWITCHES, "ns/switch");

  /* Spawn and join: N empty tasks spawned, then the loop runs them all. */
  for (int round = 0; round < 2; round++) { /* the first warms the stacks */
    t0 = bench_now();
    for (int i = 0; i < SPAWNS; i++)
      if (cf_loop_spawn(l, empty, NULL, &fs[i]))
        return 1;
    if (cf_loop_run(l, 60))
      return 1;
    for (int i = 0; i < SPAWNS; i++)
      cf_future_unref(fs[i]);
  }
  bench_report("green_spawn_join", "cfutures",
               (bench_now() - t0) * 1e9 / SPAWNS, "ns/task");

  cf_loop_free(l);
  return 0;
}
