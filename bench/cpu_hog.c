/* The load of the loaded round-trip rows (bench/run threads, through
 * bench/loaded): THREADS threads at normal priority, each computing for
 * WORK_US microseconds, then sleeping SLEEP_US, over and over, for at most
 * SECONDS seconds (then it exits by itself, so a run that loses its killer
 * stops anyway).
 *   cpu_hog THREADS WORK_US SLEEP_US SECONDS
 * bench/loaded runs one thread per CPU, 1,000 us of work then 100 us of
 * sleep (91% of each core): a load that sleeps now and then, as compilers
 * and servers do, is what hurt round trips that spin (a median of ~80 us
 * against ~1 us idle, issue 15); a load that never sleeps did not.
 * Prints nothing on stdout (bench/table.py reads the benchmarks' stdout). */
#include "bench_common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

static atomic_bool stop;
static atomic_ulong sink; /* keeps the work from being optimised away */
static double work_s, sleep_s;

static void *hog(void *arg) {
  (void)arg;
  unsigned long x = 1;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
    double until = bench_now() + work_s;
    while (bench_now() < until)
      for (int i = 0; i < 1000; i++)
        x = x * 6364136223846793005u + 1442695040888963407u;
    if (sleep_s > 0) {
      struct timespec ts = {0, (long)(sleep_s * 1e9)};
      nanosleep(&ts, NULL);
    }
  }
  atomic_fetch_add_explicit(&sink, x, memory_order_relaxed);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: cpu_hog THREADS WORK_US SLEEP_US SECONDS\n");
    return 2;
  }
  int n = atoi(argv[1]), seconds = atoi(argv[4]);
  long work_us = atol(argv[2]), sleep_us = atol(argv[3]);
  if (n < 1 || n > 64 || work_us < 1 || sleep_us < 0 || sleep_us >= 1000000 ||
      seconds < 1) {
    fprintf(stderr, "cpu_hog: THREADS 1-64, WORK_US > 0, SLEEP_US 0-999999, "
                    "SECONDS > 0\n");
    return 2;
  }
  work_s = (double)work_us * 1e-6;
  sleep_s = (double)sleep_us * 1e-6;
  pthread_t t[64];
  for (int i = 0; i < n; i++)
    if (pthread_create(&t[i], NULL, hog, NULL) != 0)
      return 1;
  sleep((unsigned)seconds);
  atomic_store_explicit(&stop, true, memory_order_relaxed);
  for (int i = 0; i < n; i++)
    pthread_join(t[i], NULL);
  return 0;
}
