/* Private: the injection queue, where threads outside a pool submit tasks.
 *
 * An intrusive multi-producer queue after D. Vyukov's non-intrusive MPSC
 * node queue: a producer swaps itself in as the tail (one exchange, never
 * blocks, never fails) and then links the previous tail to itself; the
 * consumer walks from the head. Producers and the consumer touch different
 * cache lines except when the queue is nearly empty. Consumers are
 * serialised by a try-lock: a worker that finds it taken goes stealing
 * instead of waiting.
 *
 * A producer that has swapped the tail but not yet linked leaves the queue
 * "busy": cf__inject_pop returns NULL while cf__inject_nonempty says true,
 * so callers retry rather than sleep. The queue is empty only when both
 * the tail and the head are the stub: a tail back at the stub alone is not
 * enough, since the consumer re-queues the stub behind its last node while
 * a producer may be linking a new one in front of it.
 *
 * Who may call: push, nonempty: any thread. pop: the holder of the lock
 * (cf__inject_trylock / cf__inject_lock .. cf__inject_unlock).
 */
#ifndef CF_EXECUTOR_INJECT_H
#define CF_EXECUTOR_INJECT_H

#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <ck_pr.h>

#include "executor/deque.h" /* CF__CACHE_LINE */

typedef struct cf__inject_node {
  struct cf__inject_node *_Atomic next;
} cf__inject_node;

typedef struct cf__inject {
  /* producers */
  _Alignas(CF__CACHE_LINE) cf__inject_node *_Atomic tail;
  /* consumer side */
  _Alignas(CF__CACHE_LINE) _Atomic bool locked;
  /* Written by the lock holder only; read by cf__inject_nonempty. */
  cf__inject_node *_Atomic head;
  cf__inject_node stub;
} cf__inject;

static inline void cf__inject_init(cf__inject *q) {
  atomic_init(&q->stub.next, NULL);
  atomic_init(&q->tail, &q->stub);
  atomic_init(&q->locked, false);
  atomic_init(&q->head, &q->stub);
}

/* Any thread: appends n. */
static inline void cf__inject_push(cf__inject *q, cf__inject_node *n) {
  atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
  /* seq_cst: claims the tail; acquire pairs with the previous producer's
   * release of the old tail node; also orders this push before the
   * caller's seq_cst read of the pool's sleeper count (Dekker). */
  cf__inject_node *prev =
      atomic_exchange_explicit(&q->tail, n, memory_order_seq_cst);
  /* release: publishes n (and the task around it) to the consumer, which
   * reads prev->next with acquire. */
  atomic_store_explicit(&prev->next, n, memory_order_release);
}

/* Any thread: true if the queue holds (or is receiving) a node. seq_cst:
 * the sleeper's side of the Dekker pair with cf__inject_push, and ordered
 * after the consumer's seq_cst store of head in cf__inject_pop. */
static inline bool cf__inject_nonempty(cf__inject *q) {
  return atomic_load_explicit(&q->tail, memory_order_seq_cst) != &q->stub ||
         atomic_load_explicit(&q->head, memory_order_seq_cst) != &q->stub;
}

static inline bool cf__inject_trylock(cf__inject *q) {
  /* acquire: pairs with the release in cf__inject_unlock (head). */
  return !atomic_load_explicit(&q->locked, memory_order_relaxed) &&
         !atomic_exchange_explicit(&q->locked, true, memory_order_acquire);
}

static inline void cf__inject_lock(cf__inject *q) {
  for (unsigned spins = 0; !cf__inject_trylock(q); spins++)
    spins < 64 ? ck_pr_stall() : (void)sched_yield();
}

static inline void cf__inject_unlock(cf__inject *q) {
  /* release: hands head over to the next consumer. */
  atomic_store_explicit(&q->locked, false, memory_order_release);
}

/* Lock holder: removes the oldest node, or returns NULL when the queue is
 * empty or a producer is mid-push. */
static inline cf__inject_node *cf__inject_pop(cf__inject *q) {
  cf__inject_node *head = atomic_load_explicit(&q->head, memory_order_relaxed);
  /* acquire: pairs with the release link in cf__inject_push. */
  cf__inject_node *next =
      atomic_load_explicit(&head->next, memory_order_acquire);
  if (head == &q->stub) {
    if (!next)
      return NULL;
    head = next;
    atomic_store_explicit(&q->head, head, memory_order_relaxed);
    next = atomic_load_explicit(&next->next, memory_order_acquire);
  }
  if (next) {
    atomic_store_explicit(&q->head, next, memory_order_relaxed);
    return head;
  }
  /* head is the last linked node: unless a producer is mid-push, put the
   * stub behind it so that head can leave. */
  if (atomic_load_explicit(&q->tail, memory_order_acquire) != head)
    return NULL;
  /* seq_cst: head (not the stub) is visible before the tail can read as
   * the stub again, so cf__inject_nonempty never sees both at the stub
   * while head still holds a node. */
  atomic_store_explicit(&q->head, head, memory_order_seq_cst);
  cf__inject_push(q, &q->stub);
  next = atomic_load_explicit(&head->next, memory_order_acquire);
  if (!next)
    return NULL; /* a producer slipped in before the stub: next time */
  atomic_store_explicit(&q->head, next, memory_order_relaxed);
  return head;
}

#endif
