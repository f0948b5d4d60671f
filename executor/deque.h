/* Private: the Chase-Lev work-stealing deque.
 *
 * D. Chase and Y. Lev, "Dynamic Circular Work-Stealing Deque", SPAA 2005,
 * with the C11 memory orders of N. M. Le, A. Pop, A. Cohen and F. Zappa
 * Nardelli, "Correct and Efficient Work-Stealing for Weak Memory Models",
 * PPoPP 2013 (figure 1), with its two seq_cst fences folded into seq_cst
 * accesses of top and bottom (same instructions on x86, and visible to
 * ThreadSanitizer, which does not model fences). The owner pushes and takes at
 * the bottom; thieves steal at the top. The array grows when full; old arrays
 * stay allocated until the deque is destroyed, since a thief may still be
 * reading one.
 *
 * Who may call: cf__deque_push / cf__deque_take: the owner thread only.
 * cf__deque_steal / cf__deque_nonempty: any thread.
 */
#ifndef CF_EXECUTOR_DEQUE_H
#define CF_EXECUTOR_DEQUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#define CF__CACHE_LINE 64

typedef struct cf__deque_array {
  int64_t size;                    /* a power of two */
  struct cf__deque_array *retired; /* older arrays, freed with the deque */
  _Atomic(void *) slot[];
} cf__deque_array;

typedef struct cf__deque {
  /* thief side */
  _Alignas(CF__CACHE_LINE) _Atomic int64_t top;
  /* owner side */
  _Alignas(CF__CACHE_LINE) _Atomic int64_t bottom;
  _Atomic(cf__deque_array *) array;
} cf__deque;

/* What cf__deque_steal returns when it lost a race (retry elsewhere). */
#define CF__DEQUE_ABORT ((void *)1)

static inline cf__deque_array *cf__deque_array_new(int64_t size) {
  cf__deque_array *a = malloc(sizeof *a + (size_t)size * sizeof(a->slot[0]));
  if (a) {
    a->size = size;
    a->retired = NULL;
  }
  return a;
}

static inline int cf__deque_init(cf__deque *d, int64_t size) {
  cf__deque_array *a = cf__deque_array_new(size);
  if (!a)
    return -1;
  atomic_init(&d->top, 0);
  atomic_init(&d->bottom, 0);
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
                                              int64_t t, int64_t b) {
  cf__deque_array *g = cf__deque_array_new(a->size * 2);
  if (!g)
    return NULL;
  for (int64_t i = t; i < b; i++)
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

/* Owner: pushes x at the bottom. Returns false only if growing failed. */
static inline bool cf__deque_push(cf__deque *d, void *x) {
  int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
  /* acquire: pairs with the thieves' CAS on top, so a slot is not reused
   * before its steal has read it. */
  int64_t t = atomic_load_explicit(&d->top, memory_order_acquire);
  cf__deque_array *a = atomic_load_explicit(&d->array, memory_order_relaxed);
  if (b - t > a->size - 1) {
    a = cf__deque_grow(d, a, t, b);
    if (!a)
      return false;
  }
  atomic_store_explicit(&a->slot[b & (a->size - 1)], x, memory_order_relaxed);
  /* release: publishes the slot (and the task behind it) before the new
   * bottom; pairs with the acquire load of bottom in cf__deque_steal. The
   * paper's release fence + relaxed store, as one release store: the same
   * code on x86, and visible to ThreadSanitizer. */
  atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
  return true;
}

/* Owner: takes the most recently pushed item, or NULL when empty. */
static inline void *cf__deque_take(cf__deque *d) {
  int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
  cf__deque_array *a = atomic_load_explicit(&d->array, memory_order_relaxed);
  /* seq_cst exchange + seq_cst load: the paper's relaxed store, seq_cst
   * fence and relaxed load, as seq_cst accesses. Orders the new bottom
   * before the read of top, against the thieves' seq_cst read of top then
   * bottom. On x86 the same code (one xchg); ThreadSanitizer understands
   * it, where it does not model fences. */
  atomic_exchange_explicit(&d->bottom, b, memory_order_seq_cst);
  int64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
  if (t > b) {
    atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
    return NULL;
  }
  void *x =
      atomic_load_explicit(&a->slot[b & (a->size - 1)], memory_order_relaxed);
  if (t == b) {
    /* Last item: race the thieves for it. seq_cst: as in the paper. */
    if (!atomic_compare_exchange_strong_explicit(
            &d->top, &t, t + 1, memory_order_seq_cst, memory_order_relaxed))
      x = NULL;
    atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
  }
  return x;
}

/* Any thread: steals the oldest item. Returns it, NULL when empty, or
 * CF__DEQUE_ABORT when another thread won the race. */
static inline void *cf__deque_steal(cf__deque *d) {
  /* seq_cst (the paper: acquire load + seq_cst fence): pairs with the CAS
   * of other thieves and the owner, and orders this read before the read
   * of bottom against cf__deque_take's exchange. */
  int64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
  /* seq_cst: also acquires the slot published by cf__deque_push's release
   * store of bottom. */
  int64_t b = atomic_load_explicit(&d->bottom, memory_order_seq_cst);
  if (t >= b)
    return NULL;
  /* acquire: pairs with the release store in cf__deque_grow. */
  cf__deque_array *a = atomic_load_explicit(&d->array, memory_order_acquire);
  void *x =
      atomic_load_explicit(&a->slot[t & (a->size - 1)], memory_order_relaxed);
  /* seq_cst: claims index t against the owner's take and other thieves. */
  if (!atomic_compare_exchange_strong_explicit(
          &d->top, &t, t + 1, memory_order_seq_cst, memory_order_relaxed))
    return CF__DEQUE_ABORT;
  return x;
}

/* Any thread: a hint whether the deque holds items (may be stale). */
static inline bool cf__deque_nonempty(cf__deque *d) {
  int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
  int64_t t = atomic_load_explicit(&d->top, memory_order_relaxed);
  return b - t > 0;
}

#endif
