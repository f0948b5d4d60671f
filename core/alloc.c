#include "core/alloc.h"

#include <stdlib.h>

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
  pthread_once(&arena_once, arena_init);
  return mallocx(size ? size : 1, (int)arena_flags);
}

void cf__free(void *p, size_t size) {
  if (p)
    sdallocx(p, size ? size : 1, (int)arena_flags);
}
#else
void *cf__alloc(size_t size) {
  return malloc(size ? size : 1);
}

void cf__free(void *p, size_t size) {
  (void)size;
  free(p);
}
#endif
