/* Stress: the split work-stealing deque (executor/deque.h) on its own.
 *
 * One owner pushes items and takes them back at random, answers thieves'
 * requests and sometimes shares everything (as the pool's offer() does),
 * and now and then stops for a while (a long task); two thieves steal all
 * along; a seizer seizes the deque every few milliseconds and steals what
 * it can (as a shutdown that cancels does), also while the owner is
 * stopped. Every item carries a payload the owner wrote before pushing it.
 *
 *   stress_deque [items] [seconds]
 *
 * Checks: every item is taken exactly once, by someone; its payload is the
 * one written (under ThreadSanitizer: every take is ordered after the
 * push); the array grew (the owner pushes runs longer than its first
 * size); the seizer took private items while the owner was stopped (where
 * membarrier(2) works). Exits 0, or 1 with the broken checks printed. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "executor/deque.h"

typedef struct item {
  uint64_t payload; /* written by the owner before the push */
  _Atomic int taken;
} item;

static item *items;
static size_t nitems;
static cf__deque dq;
static _Atomic bool done;
static _Atomic size_t ntaken;
static _Atomic size_t by_thieves, by_seizer, by_owner;
static _Atomic size_t seized_while_stopped;
static _Atomic bool owner_stopped;
static _Atomic int failures;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond) && atomic_fetch_add(&failures, 1) < 10)                        \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
  } while (0)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t payload_of(size_t i) {
  return (uint64_t)i * 0x9E3779B97F4A7C15u + 1;
}

static void took(void *x, _Atomic size_t *by) {
  item *it = x;
  CHECK(it >= items && it < items + nitems);
  if (it < items || it >= items + nitems)
    return;
  size_t i = (size_t)(it - items);
  CHECK(it->payload == payload_of(i));
  CHECK(atomic_fetch_add(&it->taken, 1) == 0);
  atomic_fetch_add(by, 1);
  atomic_fetch_add(&ntaken, 1);
}

static uint64_t rnd(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void *owner_main(void *arg) {
  double end = *(double *)arg;
  uint64_t r = 0x1234567;
  size_t next = 0;
  while (next < nitems && now_s() < end) {
    /* a run of pushes, sometimes long enough to grow the array */
    size_t run = rnd(&r) % 64 == 0 ? 600 : 1 + rnd(&r) % 8;
    for (size_t k = 0; k < run && next < nitems; k++) {
      items[next].payload = payload_of(next);
      CHECK(cf__deque_push(&dq, &items[next]));
      next++;
    }
    switch (rnd(&r) % 8) {
    case 0:
      cf__deque_share_all(&dq);
      break;
    case 1:
      /* a long task: the seizer and the thieves meet private items */
      atomic_store(&owner_stopped, true);
      usleep(200);
      atomic_store(&owner_stopped, false);
      break;
    default:
      break;
    }
    if (cf__deque_asked(&dq))
      cf__deque_share(&dq);
    size_t takes = rnd(&r) % (run + 2);
    for (size_t k = 0; k < takes; k++) {
      void *x = cf__deque_take(&dq);
      if (!x)
        break;
      took(x, &by_owner);
    }
  }
  void *x; /* what thieves and the seizer left (bounded: a broken deque
            * could hand out items for ever) */
  for (size_t k = 0; k <= nitems && (x = cf__deque_take(&dq)); k++)
    took(x, &by_owner);
  return NULL;
}

static void *thief_main(void *arg) {
  (void)arg;
  while (!atomic_load(&done)) {
    void *x = cf__deque_steal(&dq);
    if (x && x != CF__DEQUE_ABORT)
      took(x, &by_thieves);
  }
  return NULL;
}

static void *seizer_main(void *arg) {
  (void)arg;
  while (!atomic_load(&done)) {
    usleep(2000);
    bool stopped = atomic_load(&owner_stopped);
    cf__deque_seize(&dq);
    void *x;
    for (size_t k = 0; k <= nitems && (x = cf__deque_steal(&dq)) != NULL; k++)
      if (x != CF__DEQUE_ABORT) {
        took(x, &by_seizer);
        if (stopped && atomic_load(&owner_stopped))
          atomic_fetch_add(&seized_while_stopped, 1);
      }
  }
  return NULL;
}

int main(int argc, char **argv) {
  nitems = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000000;
  double secs = argc > 2 ? atof(argv[2]) : 8;
  alarm((unsigned)secs + 30); /* a hang ends the run (SIGALRM) */
  items = calloc(nitems, sizeof *items);
  if (!items || cf__deque_init(&dq, 64) != 0)
    return 1;
  bool seize = cf__membarrier_usable();
  double end = now_s() + secs;
  pthread_t owner, thieves[2], seizer;
  pthread_create(&owner, NULL, owner_main, &end);
  for (int i = 0; i < 2; i++)
    pthread_create(&thieves[i], NULL, thief_main, NULL);
  if (seize)
    pthread_create(&seizer, NULL, seizer_main, NULL);
  pthread_join(owner, NULL);
  atomic_store(&done, true);
  for (int i = 0; i < 2; i++)
    pthread_join(thieves[i], NULL);
  if (seize)
    pthread_join(seizer, NULL);
  /* the owner pushed some items (maybe not all, if time ran out); each of
   * those was taken exactly once, and nothing else */
  size_t pushed = 0;
  while (pushed < nitems && items[pushed].payload)
    pushed++;
  for (size_t i = 0; i < pushed; i++)
    CHECK(atomic_load(&items[i].taken) == 1);
  CHECK(atomic_load(&ntaken) == pushed);
  CHECK(pushed > 1000);
  cf__deque_array *a = atomic_load(&dq.array);
  CHECK(a->size > 64); /* it grew */
  if (seize)
    CHECK(atomic_load(&by_seizer) > 0);
  printf("stress_deque: %zu items, owner %zu, thieves %zu, seizer %zu "
         "(%zu while the owner was stopped), array %u, membarrier %s, "
         "%d failures\n",
         pushed, atomic_load(&by_owner), atomic_load(&by_thieves),
         atomic_load(&by_seizer), atomic_load(&seized_while_stopped), a->size,
         seize ? "yes" : "no", atomic_load(&failures));
  cf__deque_fini(&dq);
  free(items);
  return atomic_load(&failures) ? 1 : 0;
}
