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
 * A waiter can also belong to a fiber (a thread-pool task suspended in a
 * wait): then `ops` is set, sleeping suspends the fiber instead of the
 * thread, and a wake that finds it asleep makes the fiber runnable again.
 * A thread running fibers names the running fiber's waiter with
 * cf__waiter_set_current, so cf__waiter_self finds it. Fiber waiters are
 * embedded in immortal fiber descriptors: the same stale-pointer guarantee
 * holds for them.
 */
#ifndef CF_CORE_WAITER_H
#define CF_CORE_WAITER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/spin.h"
#include "core/time.h"

typedef struct cf_future cf_future;

struct cf__waiter;

/* How a fiber's waiter sleeps and wakes. */
typedef struct cf__waiter_ops {
  /* Suspends the fiber (the caller) as cf__waiter_sleep would block. */
  int (*sleep)(struct cf__waiter *w, uint32_t seen, const cf_deadline *d);
  /* Called by a waker that found the waiter asleep (maybe several wakers
   * for one sleep; maybe late, after the sleep ended: harmless). */
  void (*wake)(struct cf__waiter *w);
  /* Runs the task behind `f` right here, on the waiting fiber, if it has
   * not started and that is safe; returns true if it ran. */
  bool (*run_inline)(struct cf__waiter *w, cf_future *f);
  /* The fiber's thread runs other work while it sleeps (a thread-pool
   * task): a wait for a descriptor goes through the poller
   * (core/netpoll.h) and a green sleep through `sleep`, instead of
   * blocking the thread. */
  bool fiber_io;
} cf__waiter_ops;

typedef struct cf__waiter {
  _Atomic uint32_t seq;
  cf__spin spin;             /* its sleeper's only (one at a time) */
  const cf__waiter_ops *ops; /* NULL: a thread's waiter; fixed for life */
  void *owner;               /* for ops: the fiber; fixed for life */
  struct cf__waiter *next_free;
} cf__waiter;

/* The waiter of whatever runs now: the current fiber's (see
 * cf__waiter_set_current), else this thread's own, created on first use;
 * NULL only when out of memory. */
cf__waiter *cf__waiter_self(void);

/* Fiber schedulers: names the waiter of the fiber now running on this
 * thread (NULL: the thread's own). */
void cf__waiter_set_current(cf__waiter *w);

/* Initialises an embedded waiter with `ops` (NULL: a plain futex waiter
 * that any thread may sleep on, one at a time). */
void cf__waiter_init(cf__waiter *w, const cf__waiter_ops *ops, void *owner);

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
 * CF_ETIMEDOUT. Owner only (the thread, or the fiber: then ops->sleep). */
int cf__waiter_sleep(cf__waiter *w, uint32_t seen, const cf_deadline *d);

/* cf__waiter_sleep on the futex, whatever `ops` says: how a fiber that
 * cannot be suspended blocks its thread instead. ops->wake must then wake
 * the futex (cf__waiter_futex_wake). */
int cf__waiter_block(cf__waiter *w, uint32_t seen, const cf_deadline *d);
/* cf__waiter_block with a spin of at most spin_ns (0: none) before the
 * futex wait, skipped for a while after one ran out (core/spin.h). */
int cf__waiter_block_spin(cf__waiter *w, uint32_t seen, const cf_deadline *d,
                          uint64_t spin_ns);
void cf__waiter_futex_wake(cf__waiter *w);

/* Bit 0 of `seq`: set by a sleeper before it blocks or suspends. */
#define CF__WAITER_SLEEPING 1u

/* Before a thread blocks (a futex, a condition variable): on a thread-pool
 * worker, makes the tasks it keeps private stealable and wakes a sleeping
 * worker for them (executor/deque.h), so that a task that blocks its
 * thread never keeps its own children from the other workers. Elsewhere,
 * nothing. Defined in executor/thread_pool.c. */
void cf__thread_pool_before_block(void);

#endif
