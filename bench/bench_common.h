/* Shared helpers for the benchmark programs (C and C++): the workload sizes,
 * a monotonic clock, process CPU time and the RESULT line that bench/run
 * collects (bench/table.py turns those lines into one table). */
#ifndef CF_BENCH_COMMON_H
#define CF_BENCH_COMMON_H

/* Included first: clock_gettime and sleep under -std=c11 too. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define BENCH_FIB_N 30
/* The burst programs run one whole burst untimed before the timed one, so
 * that every program is measured in steady state, with its allocator's
 * memory already touched: on this kind of VM a first touch costs ~3.5 us
 * per 4 KiB page: cfutures ran a cold burst of 1M futures at ~1.6 M/s and
 * a warm one at ~10 M/s, so a cold figure measured page faults. */
#define BENCH_BURST   1000000
#define BENCH_RTT     20000
#define BENCH_WORKERS 2
/* Tasks run before the 2 s idle window of the idle_* programs. */
#define BENCH_IDLE_BURST 100000
/* Tasks kept pending by the mem_* programs (bytes per pending task). */
#define BENCH_PENDING 1000000

static inline double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time (user + system) of the whole process, in seconds. */
static inline double bench_cpu(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return (double)r.ru_utime.tv_sec + (double)r.ru_utime.tv_usec * 1e-6 +
         (double)r.ru_stime.tv_sec + (double)r.ru_stime.tv_usec * 1e-6;
}

/* The resident set of the process, in bytes (/proc/self/statm). */
static inline double bench_rss(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, resident = 0;
  if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2)
    abort();
  fclose(f);
  return (double)resident * (double)sysconf(_SC_PAGESIZE);
}

/* Calls made by a naive recursive fib(n): one task per call. */
static inline double bench_fib_calls(int n) {
  double a = 1, b = 1; /* calls(0), calls(1) */
  for (int i = 2; i <= n; i++) {
    double c = a + b + 1;
    a = b;
    b = c;
  }
  return n < 1 ? 1 : b;
}

static inline int bench_cmp(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return a < b ? -1 : a > b;
}

/* The round-trip programs take one optional argument, "loaded": the run
 * is then made while bench/loaded keeps every core busy with another
 * process (bench/cpu_hog), and its rows are named rtt_loaded_*. Returns
 * the workload's prefix, "rtt" or "rtt_loaded"; exits on a bad argument. */
static inline const char *bench_rtt_workload(int argc, char **argv) {
  if (argc < 2)
    return "rtt";
  if (argc == 2 && argv[1][0] == 'l' && !strcmp(argv[1], "loaded"))
    return "rtt_loaded";
  fprintf(stderr, "usage: %s [loaded]\n", argv[0]);
  exit(2);
}

/* Prints median and p99 of `n` latencies in microseconds, as workloads
 * <prefix>_median and <prefix>_p99 (prefix: see bench_rtt_workload). */
static inline void bench_report_rtt(const char *prefix, const char *impl,
                                    double *us, int n) {
  qsort(us, (size_t)n, sizeof us[0], bench_cmp);
  printf("RESULT workload=%s_median impl=%s value=%.3f unit=us\n", prefix, impl,
         us[n / 2]);
  printf("RESULT workload=%s_p99 impl=%s value=%.3f unit=us\n", prefix, impl,
         us[n * 99 / 100]);
}

static inline void bench_report(const char *workload, const char *impl,
                                double value, const char *unit) {
  printf("RESULT workload=%s impl=%s value=%.3f unit=%s\n", workload, impl,
         value, unit);
}

#endif
