/* The load of the loaded round-trip rows (bench/run threads, through
 * bench/loaded): THREADS threads at normal priority that spin on
 * arithmetic, keeping every core busy, for at most SECONDS seconds (then
 * it exits by itself, so a run that loses its killer stops anyway).
 *   cpu_hog THREADS SECONDS
 * Prints nothing on stdout (bench/table.py reads the benchmarks' stdout). */
#include "bench_common.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <unistd.h>

static atomic_bool stop;
static atomic_ulong sink; /* keeps the loop from being optimised away */

static void *spin(void *arg) {
  (void)arg;
  unsigned long x = 1;
  while (!atomic_load_explicit(&stop, memory_order_relaxed))
    for (int i = 0; i < 100000; i++)
      x = x * 6364136223846793005u + 1442695040888963407u;
  atomic_fetch_add_explicit(&sink, x, memory_order_relaxed);
  return NULL;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2;
  int seconds = argc > 2 ? atoi(argv[2]) : 60;
  if (n < 1 || n > 64 || seconds < 1) {
    fprintf(stderr, "usage: cpu_hog THREADS(1-64) SECONDS\n");
    return 2;
  }
  pthread_t t[64];
  for (int i = 0; i < n; i++)
    if (pthread_create(&t[i], NULL, spin, NULL) != 0)
      return 1;
  sleep((unsigned)seconds);
  atomic_store_explicit(&stop, true, memory_order_relaxed);
  for (int i = 0; i < n; i++)
    pthread_join(t[i], NULL);
  return 0;
}
