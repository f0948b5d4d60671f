/* Private: the allocator for tasks and futures.
 *
 * With jemalloc (the default) allocations go through its explicit API
 * (mallocx/sdallocx) in an arena of cfutures' own, so linking cfutures never
 * replaces or perturbs the host program's malloc. Sanitizer builds
 * (-Dallocator=libc) use plain malloc so ASan and TSan see every reuse.
 */
#ifndef CF_CORE_ALLOC_H
#define CF_CORE_ALLOC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

/* True when the environment variable CFUTURES_DEBUG was set to a non-empty
 * value other than "0" when cfutures first allocated: then every block comes
 * from libc's malloc (so valgrind, ASan and LeakSanitizer in the user's
 * program see futures and tasks), freed blocks are filled with 0xDD and
 * kept in a quarantine of the last CF__QUARANTINE frees before going back
 * to malloc (so a use after free finds them poisoned instead of reused),
 * and every future call checks the future's magic (future_internal.h).
 * Read once; the same for the life of the process. */
bool cf__debug_mode(void);
#define CF__QUARANTINE 4096

/* cf__debug_mode's answer without the once-check, for hot paths that only
 * run on blocks cf__alloc made (so the mode is already known). */
extern atomic_bool cf__debug_on;
static inline bool cf__debug_known(void) {
  return atomic_load_explicit(&cf__debug_on, memory_order_relaxed);
}

/* Returns uninitialised memory of `size` bytes, or NULL. */
void *cf__alloc(size_t size);
/* Frees memory from cf__alloc; `size` must be the size it was allocated
 * with. NULL is a no-op. */
void cf__free(void *p, size_t size);

#endif
