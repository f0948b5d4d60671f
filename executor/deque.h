/* Private: the work-stealing deque, split into a private and a shared part.
 *
 * The owner pushes and takes at the bottom; thieves steal at the top. As
 * in Lace (T. van Dijk and J. van de Pol, "Lace: non-blocking split deque
 * for work-stealing", Euro-Par 2014 workshops), the items [top, split) are
 * shared and [split, bottom) are the owner's alone: the owner pushes and
 * takes there with plain loads and stores, no fence and no atomic
 * read-modify-write (Chase-Lev's take pays a fence on every call: ~6 ns
 * here, a fifth of a fork-join task). Thieves steal only shared items.
 *
 * Moving the split:
 *   - a thief that finds nothing shared while the owner holds private
 *     items raises `splitreq`; the owner, polling it (cf__deque_asked)
 *     after each push and take, shares half of its private items
 *     (cf__deque_share);
 *   - the owner may share everything at once (cf__deque_share_all): the
 *     thread pool does when a worker is idle, so that a task that pushes
 *     a child and then computes for long does not keep the child from an
 *     idle worker;
 *   - an owner whose private part is empty takes shared items back, the
 *     newer half with one CAS, and races the thieves for the last one as
 *     Chase-Lev's take does, by advancing top.
 *
 * top and split live in one 64-bit word (`ts`: top in the low half, split
 * in the high half, both counting modulo 2^32), changed only by CAS. (The owner
 * may move the split down and back up to the same value between a thief's
 * read and its CAS, taking half back then sharing it, so that CAS may
 * succeed; harmless, since a take-back leaves index top shared.)
 * top only grows, and the owner never writes the slot of index top while top
 * stays put (its bottom is above the split, which is above top while there is a
 * shared item; taking back the last shared item advances top), so a thief may
 * read its slot before its CAS, as in Chase-Lev, and no ABA can hand it an item
 * already taken.
 *
 * Seizing (cf__deque_seize, for a shutdown that cancels queued tasks;
 * cf__deque_try_seize, for an idle thief whose request goes unanswered:
 * in both the owner may be stuck in a long or blocked task): another
 * thread makes every
 * item shared, private ones included, then steals them like a thief. The
 * owner's private take stays fence-free: it stores the new bottom, then
 * (a compiler barrier only) reads the seize generation `seize`; the
 * seizer bumps `seize` to odd, issues a process-wide barrier
 * (core/membarrier.h), then reads bottom. Either the owner sees the odd
 * generation and backs off (restores bottom, waits for the seize to end,
 * rereads the split), or the seizer sees the owner's bottom and leaves the
 * item it took alone. A deque whose process cannot issue membarrier(2)
 * cannot be seized: its owner must share every item it pushes (the pool
 * then does: see offer() in thread_pool.c).
 *
 * The array grows as in Chase-Lev: old arrays stay allocated until the
 * deque is destroyed, since a thief may still be reading one.
 *
 * Who may call: cf__deque_push, cf__deque_take, cf__deque_share,
 * cf__deque_share_all, cf__deque_asked: the owner thread only;
 * cf__deque_seize (the owner too, between its takes), cf__deque_try_seize
 * (not the owner), cf__deque_steal, cf__deque_stealable: any thread (seizes
 * take turns: `seizing`).
 */
#ifndef CF_EXECUTOR_DEQUE_H
#define CF_EXECUTOR_DEQUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <sched.h>

#include <ck_pr.h>

#include "core/membarrier.h"

#define CF__CACHE_LINE 64

typedef struct cf__deque_array {
  uint32_t size;                   /* a power of two */
  struct cf__deque_array *retired; /* older arrays, freed with the deque */
  _Atomic(void *) slot[];
} cf__deque_array;

typedef struct cf__deque {
  /* thief side: top (low 32 bits) and split (high 32 bits) */
  _Alignas(CF__CACHE_LINE) _Atomic uint64_t ts;
  /* set by thieves, cleared by the owner: share some private items */
  _Alignas(CF__CACHE_LINE) _Atomic uint32_t splitreq;
  _Atomic bool seizing; /* a seizer holds the deque (seizes one at a time) */
  /* owner side */
  _Alignas(CF__CACHE_LINE) _Atomic uint32_t bottom; /* read by thieves as a
                                                       hint, by a seizer */
  _Atomic uint32_t seize; /* bumped twice by each seize: odd while one runs */
  uint32_t split;         /* the owner's copy of ts's split */
  uint32_t seize_seen;    /* the owner's: the seize generation split matches */
  _Atomic(cf__deque_array *) array;
} cf__deque;

/* What cf__deque_steal returns when it lost a race (retry elsewhere). */
#define CF__DEQUE_ABORT ((void *)1)

static inline uint32_t cf__ts_top(uint64_t ts) {
  return (uint32_t)ts;
}

static inline uint32_t cf__ts_split(uint64_t ts) {
  return (uint32_t)(ts >> 32);
}

static inline uint64_t cf__ts(uint32_t top, uint32_t split) {
  return (uint64_t)split << 32 | top;
}

/* a - b for indices counting modulo 2^32 (never more than 2^31 apart) */
static inline int32_t cf__idx_diff(uint32_t a, uint32_t b) {
  return (int32_t)(a - b);
}

static inline cf__deque_array *cf__deque_array_new(uint32_t size) {
  cf__deque_array *a = malloc(sizeof *a + (size_t)size * sizeof(a->slot[0]));
  if (a) {
    a->size = size;
    a->retired = NULL;
  }
  return a;
}

/* size: a power of two. 0, or -1 when out of memory. */
static inline int cf__deque_init(cf__deque *d, uint32_t size) {
  cf__deque_array *a = cf__deque_array_new(size);
  if (!a)
    return -1;
  atomic_init(&d->ts, 0);
  atomic_init(&d->splitreq, 0);
  atomic_init(&d->seize, 0);
  atomic_init(&d->seizing, false);
  d->seize_seen = 0;
  atomic_init(&d->bottom, 0);
  d->split = 0;
  atomic_init(&d->array, a);
  return 0;
}

static inline void cf__deque_fini(cf__deque *d) {
  cf__deque_array *a = atomic_load_explicit(&d->array, memory_order_relaxed);
  while (a) {
    cf__deque_array *next = a->retired;
    free(a);
    a = next;
  }
}

/* Owner: doubles the array, copying the live range [t, b). */
static inline cf__deque_array *cf__deque_grow(cf__deque *d, cf__deque_array *a,
                                              uint32_t t, uint32_t b) {
  if (a->size > UINT32_C(1) << 30)
    return NULL; /* indices would no longer be told apart */
  cf__deque_array *g = cf__deque_array_new(a->size * 2);
  if (!g)
    return NULL;
  for (uint32_t i = t; i != b; i++)
    atomic_store_explicit(
        &g->slot[i & (g->size - 1)],
        atomic_load_explicit(&a->slot[i & (a->size - 1)], memory_order_relaxed),
        memory_order_relaxed);
  g->retired = a;
  /* release: publishes the copied slots to thieves that load the array
   * (acquire in cf__deque_steal). */
  atomic_store_explicit(&d->array, g, memory_order_release);
  return g;
}

/* Owner: a seize ran since the owner last looked (or runs): waits for its
 * end and takes the split it left. */
static inline void cf__deque_resync(cf__deque *d) {
  uint32_t g;
  /* acquire: the seizer's split is visible once its generation is even */
  for (unsigned spins = 0;
       (g = atomic_load_explicit(&d->seize, memory_order_acquire)) & 1; spins++)
    spins < 64 ? ck_pr_stall() : (void)sched_yield(); /* seizer preempted */
  d->seize_seen = g;
  d->split = cf__ts_split(atomic_load_explicit(&d->ts, memory_order_acquire));
}

/* Owner: moves the split up to `to` (at most bottom), unless a seize moved
 * it there already. release: publishes the slots below `to` to thieves,
 * whose acquire load of ts sees them; seq_cst (the same instruction on
 * x86): the store half of the Dekker pair with a sleeper's look at the
 * deques, when the pool then reads its sleepers (kick). */
static inline void cf__deque_move_split(cf__deque *d, uint32_t to) {
  uint64_t ts = atomic_load_explicit(&d->ts, memory_order_relaxed);
  for (;;) {
    if (cf__ts_split(ts) != d->split ||
        atomic_load_explicit(&d->seize, memory_order_relaxed) !=
            d->seize_seen) {
      cf__deque_resync(d);
      if (cf__idx_diff(to, d->split) <= 0)
        return;
      ts = atomic_load_explicit(&d->ts, memory_order_relaxed);
      continue;
    }
    if (atomic_compare_exchange_weak_explicit(
            &d->ts, &ts, cf__ts(cf__ts_top(ts), to), memory_order_seq_cst,
            memory_order_relaxed)) {
      d->split = to;
      return;
    }
  }
}

/* Owner: a thief asked for work (relaxed: a hint, polled on every push and
 * take; the line is written only by a thief that found nothing). */
static inline bool cf__deque_asked(cf__deque *d) {
  return atomic_load_explicit(&d->splitreq, memory_order_relaxed) != 0;
}

/* Owner: answers a thief's request, sharing half of the private items
 * (at least one). True if it shared any. */
static inline bool cf__deque_share(cf__deque *d) {
  atomic_store_explicit(&d->splitreq, 0, memory_order_relaxed);
  uint32_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
  uint32_t n = b - d->split;
  if (n == 0)
    return false;
  cf__deque_move_split(d, d->split + (n + 1) / 2);
  return true;
}

/* Owner: shares every private item. True if it shared any. */
static inline bool cf__deque_share_all(cf__deque *d) {
  if (cf__deque_asked(d))
    atomic_store_explicit(&d->splitreq, 0, memory_order_relaxed);
  uint32_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
  if (b == d->split)
    return false;
  cf__deque_move_split(d, b);
  return true;
}

/* Owner: pushes x at the bottom, privately. Returns false only if growing
 * failed. */
static inline bool cf__deque_push(cf__deque *d, void *x) {
  uint32_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
  /* acquire: pairs with the thieves' CAS on ts, so a slot is not reused
   * before its steal has read it. */
  uint32_t t = cf__ts_top(atomic_load_explicit(&d->ts, memory_order_acquire));
  cf__deque_array *a = atomic_load_explicit(&d->array, memory_order_relaxed);
  if (b - t > a->size - 1) {
    a = cf__deque_grow(d, a, t, b);
    if (!a)
      return false;
  }
  /* release (a plain store on x86): for a seizer, who takes private slots
   * without the owner's publication through ts (see cf__deque_seize) */
  atomic_store_explicit(&a->slot[b & (a->size - 1)], x, memory_order_release);
  /* release (a plain store on x86): thieves see the slot through the
   * release in cf__deque_move_split; a seizer, which reads bottom with
   * acquire, sees the slot of every index below the bottom it read (a push
   * during a seize orders its two stores no other way on a weakly ordered
   * CPU) */
  atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
  return true;
}

/* Owner: takes shared items back when its private part is empty: the newer
 * half of them with one CAS, or the last one by advancing top (racing the
 * thieves, as Chase-Lev's take does). Returns that last one, or NULL after
 * taking back half (the caller pops it privately), or when nothing is
 * left; *again says which of the two NULLs. */
static inline void *cf__deque_take_shared(cf__deque *d, bool *again) {
  *again = false;
  cf__deque_array *a = atomic_load_explicit(&d->array, memory_order_relaxed);
  uint64_t ts = atomic_load_explicit(&d->ts, memory_order_relaxed);
  for (;;) {
    uint32_t t = cf__ts_top(ts), s = cf__ts_split(ts);
    if (cf__idx_diff(s, t) <= 0)
      return NULL; /* all stolen */
    if (s - t >= 2) {
      uint32_t ns = t + (s - t + 1) / 2; /* above t: index t stays shared */
      /* seq_cst: a full barrier against the thieves' CAS on ts. */
      if (atomic_compare_exchange_weak_explicit(&d->ts, &ts, cf__ts(t, ns),
                                                memory_order_seq_cst,
                                                memory_order_relaxed)) {
        d->split = ns;
        *again = true;
        return NULL;
      }
      continue;
    }
    /* One shared item, index t: read it, then claim it as a thief would.
     * bottom stays at t + 1 = split = top: empty. */
    void *x =
        atomic_load_explicit(&a->slot[t & (a->size - 1)], memory_order_relaxed);
    if (atomic_compare_exchange_weak_explicit(&d->ts, &ts, cf__ts(t + 1, s),
                                              memory_order_seq_cst,
                                              memory_order_relaxed))
      return x;
  }
}

/* Owner: takes the most recently pushed item, or NULL when empty. */
static inline void *cf__deque_take(cf__deque *d) {
  for (;;) {
    uint32_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    if (b != d->split) {
      atomic_store_explicit(&d->bottom, b - 1, memory_order_relaxed);
      /* The store before the load, in program order at least: a seizer's
       * membarrier orders them for the CPU (see the top of this file). */
      atomic_signal_fence(memory_order_seq_cst);
      if (atomic_load_explicit(&d->seize, memory_order_relaxed) !=
          d->seize_seen) {
        atomic_store_explicit(&d->bottom, b, memory_order_relaxed);
        cf__deque_resync(d);
        continue;
      }
      cf__deque_array *a =
          atomic_load_explicit(&d->array, memory_order_relaxed);
      return atomic_load_explicit(&a->slot[(b - 1) & (a->size - 1)],
                                  memory_order_relaxed);
    }
    bool again;
    void *x = cf__deque_take_shared(d, &again);
    if (!again)
      return x;
  }
}

/* Any thread: steals the oldest shared item. Returns it, NULL when there is
 * none, or CF__DEQUE_ABORT when another thread won the race. Finding only
 * private items, it asks the owner to share some. */
static inline void *cf__deque_steal(cf__deque *d) {
  /* seq_cst: pairs with the owner's and other thieves' CAS, and acquires
   * the slots published by the owner's release on ts. */
  uint64_t ts = atomic_load_explicit(&d->ts, memory_order_seq_cst);
  uint32_t t = cf__ts_top(ts), s = cf__ts_split(ts);
  if (cf__idx_diff(s, t) <= 0) {
    if (cf__idx_diff(atomic_load_explicit(&d->bottom, memory_order_relaxed),
                     s) > 0 &&
        !atomic_load_explicit(&d->splitreq, memory_order_relaxed))
      atomic_store_explicit(&d->splitreq, 1, memory_order_relaxed);
    return NULL;
  }
  /* acquire: pairs with the release store in cf__deque_grow. */
  cf__deque_array *a = atomic_load_explicit(&d->array, memory_order_acquire);
  /* acquire: a slot made shared by a seize was never published by the
   * owner's release on ts; this pairs with its release store of the slot */
  void *x =
      atomic_load_explicit(&a->slot[t & (a->size - 1)], memory_order_acquire);
  /* seq_cst: claims index t against the owner and other thieves; fails if
   * either moved top or the split since the load above. */
  if (!atomic_compare_exchange_strong_explicit(&d->ts, &ts, cf__ts(t + 1, s),
                                               memory_order_seq_cst,
                                               memory_order_relaxed))
    return CF__DEQUE_ABORT;
  return x;
}

/* One thread at a time (the caller serialises seizes): makes
 * every item shared, private ones included, so that cf__deque_steal can
 * take them all, even while the owner is stuck in a long task. Costs a
 * process-wide barrier; only when cf__membarrier_usable(). */
static inline void cf__deque_seize_held(cf__deque *d) {
  atomic_fetch_add_explicit(&d->seize, 1, memory_order_seq_cst); /* odd */
  cf__membarrier();
  /* The owner stores bottom before it reads `seize`: after the barrier,
   * this load sees every private take that missed the odd generation, and
   * every later take sees it. */
  /* acquire: pairs with the push's release store of bottom: the slots
   * below b (and the array they are in) are visible */
  uint32_t b = atomic_load_explicit(&d->bottom, memory_order_acquire);
  uint64_t ts = atomic_load_explicit(&d->ts, memory_order_relaxed);
  /* acq_rel: publishes the split to the owner's resync (with the release
   * of the generation below) and to the steals that follow */
  while (cf__idx_diff(b, cf__ts_split(ts)) > 0 &&
         !atomic_compare_exchange_weak_explicit(
             &d->ts, &ts, cf__ts(cf__ts_top(ts), b), memory_order_acq_rel,
             memory_order_relaxed))
    ;
  atomic_fetch_add_explicit(&d->seize, 1, memory_order_release); /* even */
}

/* Any thread: seizes d, waiting for a seize by another thread to end. */
static inline void cf__deque_seize(cf__deque *d) {
  for (unsigned spins = 0;
       atomic_exchange_explicit(&d->seizing, true, memory_order_acquire);
       spins++)
    spins < 64 ? ck_pr_stall() : (void)sched_yield();
  cf__deque_seize_held(d);
  atomic_store_explicit(&d->seizing, false, memory_order_release);
}

/* Any thread but the owner: seizes d if it holds private items and no
 * other seize runs; true if it did. For an idle thief whose request the
 * owner does not answer: the owner may be blocked in a task (a lock, a
 * pipe, a wait that blocks its thread) with the children it pushed still
 * private, which would otherwise wait for it, or for ever if the task
 * waits for them. */
static inline bool cf__deque_try_seize(cf__deque *d) {
  uint64_t ts = atomic_load_explicit(&d->ts, memory_order_relaxed);
  if (cf__idx_diff(atomic_load_explicit(&d->bottom, memory_order_relaxed),
                   cf__ts_split(ts)) <= 0 ||
      atomic_exchange_explicit(&d->seizing, true, memory_order_acquire))
    return false;
  cf__deque_seize_held(d);
  atomic_store_explicit(&d->seizing, false, memory_order_release);
  return true;
}

/* Any thread: a hint whether the deque holds shared items (may be stale). */
static inline bool cf__deque_stealable(cf__deque *d) {
  uint64_t ts = atomic_load_explicit(&d->ts, memory_order_seq_cst);
  return cf__idx_diff(cf__ts_split(ts), cf__ts_top(ts)) > 0;
}

#endif
