/* Private: the allocator for tasks and futures.
 *
 * With jemalloc (the default) allocations go through its explicit API
 * (mallocx/sdallocx) in an arena of cfutures' own, so linking cfutures never
 * replaces or perturbs the host program's malloc. Sanitizer builds
 * (-Dallocator=libc) use plain malloc so ASan and TSan see every reuse.
 */
#ifndef CF_CORE_ALLOC_H
#define CF_CORE_ALLOC_H

#include <stddef.h>

/* Returns uninitialised memory of `size` bytes, or NULL. */
void *cf__alloc(size_t size);
/* Frees memory from cf__alloc; `size` must be the size it was allocated
 * with. NULL is a no-op. */
void cf__free(void *p, size_t size);

#endif
