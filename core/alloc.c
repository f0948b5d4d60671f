/* The allocator for tasks and futures; see alloc.h. */
#include "core/alloc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- debug mode (CFUTURES_DEBUG) ----------------------------------------- */

atomic_bool cf__debug_on;
static pthread_once_t debug_once = PTHREAD_ONCE_INIT;

static void debug_init(void) {
  const char *v = getenv("CFUTURES_DEBUG");
  atomic_store_explicit(&cf__debug_on, v && *v && strcmp(v, "0") != 0,
                        memory_order_relaxed);
}

/* Set once debug_init has run (and, with jemalloc, arena_init): the hot
 * paths test it instead of calling pthread_once each time. */
static atomic_bool alloc_ready;

bool cf__debug_mode(void) {
  if (!atomic_load_explicit(&alloc_ready, memory_order_acquire))
    pthread_once(&debug_once, debug_init);
  return atomic_load_explicit(&cf__debug_on, memory_order_relaxed);
}

/* Freed blocks wait here, poisoned, before going back to malloc. */
static pthread_mutex_t quarantine_mu = PTHREAD_MUTEX_INITIALIZER;
static void *quarantine[CF__QUARANTINE];
static size_t quarantine_next;

static void debug_free(void *p, size_t size) {
  memset(p, 0xDD, size ? size : 1);
  pthread_mutex_lock(&quarantine_mu);
  void *old = quarantine[quarantine_next];
  quarantine[quarantine_next] = p;
  quarantine_next = (quarantine_next + 1) % CF__QUARANTINE;
  pthread_mutex_unlock(&quarantine_mu);
  free(old);
}

/* ---- the allocator --------------------------------------------------------
 */

#if CF_USE_JEMALLOC
#include <jemalloc/jemalloc.h>
#include <pthread.h>

static unsigned arena_flags;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;
static extent_hooks_t arena_hooks; /* jemalloc's own, but for merge */

/* Refuses every merge of two free extents of our arena (true: opt out).
 *
 * Why: tasks and futures come and go in bursts (a map, 200,000 green
 * tasks spawned at once). When a burst's blocks are freed, jemalloc
 * merges their slabs into one free extent of the whole burst's size, and
 * then will not carve a small slab out of an extent more than 64 times
 * its size (opt.lg_extent_max_active_fit, a process-wide option a library
 * cannot set). So the next burst got fresh address space: every page
 * faulted again, ~10 us each on a VM, which was ~90% of a green task's
 * spawn+join (920 of 1,000 ns) and one fault per 4 KiB of futures.
 * Unmerged, a freed slab is reused as it is. Decay still hands idle pages
 * back to the system as before; only the address space stays in pieces,
 * which slabs of a few sizes do not mind. */
static bool no_merge(extent_hooks_t *h, void *a, size_t size_a, void *b,
                     size_t size_b, bool committed, unsigned arena_ind) {
  (void)h, (void)a, (void)size_a, (void)b, (void)size_b, (void)committed;
  (void)arena_ind;
  return true;
}

static void arena_init(void) {
  unsigned ind;
  size_t sz = sizeof ind;
  /* An arena of our own keeps our churn out of the host's arenas. If it
   * cannot be created, fall back to jemalloc's automatic arenas. */
  if (mallctl("arenas.create", &ind, &sz, NULL, 0) != 0)
    return;
  arena_flags = (unsigned)MALLOCX_ARENA(ind);
  char name[64];
  snprintf(name, sizeof name, "arena.%u.extent_hooks", ind);
  extent_hooks_t *dflt = NULL, *ours = &arena_hooks;
  size_t hsz = sizeof dflt;
  if (mallctl(name, &dflt, &hsz, NULL, 0) == 0 && dflt) {
    arena_hooks = *dflt;
    arena_hooks.merge = no_merge;
    (void)mallctl(name, NULL, NULL, &ours, sizeof ours); /* optional */
  }
}

void *cf__alloc(size_t size) {
  if (!atomic_load_explicit(&alloc_ready, memory_order_acquire)) {
    pthread_once(&debug_once, debug_init);
    pthread_once(&arena_once, arena_init);
    /* release: arena_flags and the debug flag are set */
    atomic_store_explicit(&alloc_ready, true, memory_order_release);
  }
  if (cf__debug_known())
    return malloc(size ? size : 1);
  return mallocx(size ? size : 1, (int)arena_flags);
}

void cf__free(void *p, size_t size) {
  if (!p)
    return;
  if (cf__debug_mode())
    debug_free(p, size);
  else
    sdallocx(p, size ? size : 1, (int)arena_flags);
}
#else
void *cf__alloc(size_t size) {
  return malloc(size ? size : 1);
}

void cf__free(void *p, size_t size) {
  if (p && cf__debug_mode())
    debug_free(p, size);
  else
    free(p);
}
#endif
