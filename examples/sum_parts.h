/* The summing job that parallel_sum and mpi_sum share: a range of numbers
 * cut into parts, each summed by a task (a map item whose sum fits a
 * pointer), and its 128-bit sum of squares as byte tasks (16 bytes out
 * each). Header-only: each example includes it once. */
#ifndef CF_EXAMPLES_SUM_PARTS_H
#define CF_EXAMPLES_SUM_PARTS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cfutures.h>

typedef struct range {
  uint64_t lo, hi; /* [lo, hi) */
} range;

enum { PARTS = 64 };

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* 1..n cut into PARTS ranges. */
static void cut(uint64_t n, range parts[PARTS]) {
  for (uint64_t i = 0; i < PARTS; i++)
    parts[i] = (range){1 + n * i / PARTS, 1 + n * (i + 1) / PARTS};
}

/* Summed one number at a time, on purpose: this is the CPU work. */
static uint64_t sum_range(range r) {
  volatile uint64_t s = 0;
  for (uint64_t i = r.lo; i < r.hi; i++)
    s += i;
  return s;
}

/* A map item: the task's copy of a range (a process or a rank hands it
 * one); the sum fits a pointer. */
static int sum_task(void *arg, void **out) {
  range r;
  memcpy(&r, arg, sizeof r);
  *out = (void *)(uintptr_t)sum_range(r);
  return 0;
}

/* Sums the parts on executor ex, in chunks of 4 per message. */
static int pooled(cf_executor *ex, range *parts, uint64_t *total) {
  cf_map *m;
  cf_map_opts o = {.chunksize = 4};
  int rc = cf_map_array(ex, sum_task, parts, PARTS, sizeof parts[0], &o, &m);
  *total = 0;
  void *v;
  while (rc == 0 && (rc = cf_map_next(m, &v)) == 0)
    *total += (uint64_t)(uintptr_t)v;
  cf_map_free(m);
  return rc == CF_EDONE ? 0 : rc;
}

__extension__ typedef unsigned __int128 u128; /* GCC and Clang */

/* A byte task: a range in, its 128-bit sum of squares out. */
static int squares_task(const void *in, size_t len, cf_buf *out) {
  range r;
  if (len != sizeof r)
    return cf_fail(CF_EINVAL, "a range is %zu bytes, not %zu", sizeof r, len);
  memcpy(&r, in, sizeof r);
  volatile u128 s = 0;
  for (uint64_t i = r.lo; i < r.hi; i++)
    s += (u128)i * i;
  u128 v = s;
  if (!(out->data = malloc(sizeof v)))
    return CF_ENOMEM;
  memcpy(out->data, &v, sizeof v);
  out->len = sizeof v;
  return 0;
}

/* cf_process_pool_map_bytes or cf_mpi_pool_map_bytes. */
typedef int (*map_bytes_fn)(cf_executor *ex, cf_proc_fn fn, const void *items,
                            size_t n, size_t item_size, const cf_map_opts *o,
                            cf_map **out);

/* The sum of squares of the parts, as byte tasks through map_bytes. */
static int pooled_squares(cf_executor *ex, map_bytes_fn map_bytes,
                          const range *parts, u128 *total) {
  cf_map *m;
  cf_map_opts o = {.chunksize = 4};
  int rc = map_bytes(ex, squares_task, parts, PARTS, sizeof parts[0], &o, &m);
  *total = 0;
  void *v;
  while (rc == 0 && (rc = cf_map_next(m, &v)) == 0) {
    const cf_buf *b = v; /* lent by the map until the next call */
    u128 part;
    memcpy(&part, b->data, sizeof part);
    *total += part;
  }
  cf_map_free(m);
  return rc == CF_EDONE ? 0 : rc;
}

static const char *u128_str(u128 v, char buf[48]) {
  char *p = buf + 47;
  *p = 0;
  do
    *--p = (char)('0' + (int)(v % 10));
  while ((v /= 10) != 0);
  return p;
}

#endif
