/* The allocator for tasks and futures; see alloc.h. */
#include "core/alloc.h"

#include <pthread.h>
#include <stdatomic.h>
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

bool cf__debug_mode(void) {
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

/* ---- the allocator -------------------------------------------------------- */

#if CF_USE_JEMALLOC
#include <jemalloc/jemalloc.h>
#include <pthread.h>

static unsigned arena_flags;
static pthread_once_t arena_once = PTHREAD_ONCE_INIT;

static void arena_init(void) {
  unsigned ind;
  size_t sz = sizeof ind;
  /* An arena of our own keeps our churn out of the host's arenas. If it
   * cannot be created, fall back to jemalloc's automatic arenas. */
  if (mallctl("arenas.create", &ind, &sz, NULL, 0) == 0)
    arena_flags = (unsigned)MALLOCX_ARENA(ind);
}

void *cf__alloc(size_t size) {
  if (cf__debug_mode())
    return malloc(size ? size : 1);
  pthread_once(&arena_once, arena_init);
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
