/* Private: the per-thread waiter every blocking wait in cfutures sleeps on.
 *
 * A waiter is a 32-bit sequence word: wakers add 2, a sleeper that is about
 * to block sets bit 0 so wakers know to make the futex syscall (and skip it
 * otherwise). A waiting thread reads the sequence, checks its condition,
 * and sleeps only if the sequence is unchanged: a wake between the check and
 * the sleep changes the word and the futex returns at once, so no wake-up is
 * lost.
 *
 * Waiters are immortal: when a thread exits, its waiter goes to a free list
 * and is reused by a later thread, never freed. A waker holding a stale
 * pointer thus causes at most a spurious wake-up, which every wait loop
 * tolerates by re-checking its condition.
 *
 * Thread-pool workers set `helper` on their waiter, so that a wait on a
 * worker runs other tasks instead of blocking, and a worker's idle parking
 * uses the same word, so a submitter's wake reaches a worker whether it is
 * idle or waiting on a future.
 */
#ifndef CF_CORE_WAITER_H
#define CF_CORE_WAITER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/time.h"

typedef struct cf_future cf_future;

/* A pool worker's way of helping while it waits. */
typedef struct cf__helper {
  /* Runs at most one task, preferring ones that lead to `awaited` (may be
   * NULL) finishing. Returns true if it ran a task. */
  bool (*help)(struct cf__helper *h, cf_future *awaited);
  /* Sleeps like cf__waiter_sleep, registered with the pool so that new
   * work wakes the worker too. */
  int (*park)(struct cf__helper *h, uint32_t seen, const cf_deadline *d);
} cf__helper;

typedef struct cf__waiter {
  _Atomic uint32_t seq;
  cf__helper *helper; /* owner thread only */
  struct cf__waiter *next_free;
} cf__waiter;

/* This thread's waiter, created on first use; NULL only when out of
 * memory. */
cf__waiter *cf__waiter_self(void);

/* The current sequence; read it before checking the wait condition. */
static inline uint32_t cf__waiter_seq(cf__waiter *w) {
  /* acquire: pairs with the release in cf__waiter_wake, so state published
   * before a wake is visible once the bump is seen. */
  return atomic_load_explicit(&w->seq, memory_order_acquire) & ~1u;
}

/* Wakes the waiter (if it sleeps) and makes its next sleep on an older
 * sequence return at once. Callable from any thread. */
void cf__waiter_wake(cf__waiter *w);

/* Sleeps until the sequence moves past `seen`, the deadline passes (NULL:
 * forever), or a spurious wake. Spins briefly first. Returns 0 or
 * CF_ETIMEDOUT. Owner thread only. */
int cf__waiter_sleep(cf__waiter *w, uint32_t seen, const cf_deadline *d);

#endif
