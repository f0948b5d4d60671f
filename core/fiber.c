/* Fibers: mapped stacks and the switch between them. See fiber.h. */
#include "core/fiber.h"

#include <cfutures/common.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13 */
#endif
#define CF__MADV_GUARD_INSTALL MADV_GUARD_INSTALL
#include <unistd.h>

/* ---- Boost.Context's fcontext (C linkage, assembly) ---------------------- */

typedef cf__transfer transfer_t;
void *make_fcontext(void *sp, size_t size, void (*fn)(transfer_t));

/* ---- sanitizer hooks ------------------------------------------------------ */

#if defined(__SANITIZE_ADDRESS__)
#define CF_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CF_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define CF_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CF_TSAN 1
#endif
#endif

#ifdef CF_ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom,
                                    size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save,
                                     const void **bottom_old,
                                     size_t *size_old);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#endif

/* A fiber's stack may be left with frames that never returned (a fiber
 * switched away for good), whose redzones stay poisoned in ASan's shadow
 * even after munmap; a new stack mapped at the same address would then
 * report overflows in healthy frames. Clear the shadow both ways. */
static void unpoison_stack(const cf__fiber *f) {
#ifdef CF_ASAN
  __asan_unpoison_memory_region(f->stack_lo, f->stack_size);
#endif
  (void)f;
}
#ifdef CF_TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif

typedef cf__hop hop;

#ifdef CF__FIBER_SANITIZED
static void before_switch(cf__fiber *from, cf__fiber *to) {
#ifdef CF_ASAN
  __sanitizer_start_switch_fiber(&from->asan_fake, to->stack_lo,
                                 to->stack_size);
#endif
#ifdef CF_TSAN
  /* flags 0: the switch orders what `from` did before what `to` does. */
  __tsan_switch_to_fiber(to->tsan, 0);
#endif
  (void)from;
  (void)to;
}
#endif

/* On the fiber that just got control: records where the left one stopped
 * and, for a native stack, its bounds (needed to switch back to it). */
static hop *after_switch(cf__fiber *self, transfer_t t) {
  hop *h = t.data;
  h->from->ctx = t.fctx;
#ifdef CF_ASAN
  const void *bottom = NULL;
  size_t size = 0;
  __sanitizer_finish_switch_fiber(self->asan_fake, &bottom, &size);
  if (!h->from->map) {
    h->from->stack_lo = (char *)bottom;
    h->from->stack_size = size;
  }
#endif
  (void)self;
  return h;
}

static void trampoline(transfer_t t) {
  hop *h = t.data;
  cf__fiber *self = h->to;
  void *msg = after_switch(self, t)->msg;
  self->entry(self, msg);
  __builtin_unreachable(); /* entry never returns */
}

void cf__fiber_init_native(cf__fiber *f) {
  *f = (cf__fiber){0};
#ifdef CF_TSAN
  f->tsan = __tsan_get_current_fiber();
#endif
}

int cf__fiber_new(cf__fiber *f, size_t stack_size, cf__fiber_entry entry) {
  if (stack_size < CF__FIBER_MIN_STACK || stack_size > CF__FIBER_MAX_STACK)
    return CF_EINVAL;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  stack_size = (stack_size + page - 1) / page * page;
  size_t map_size = stack_size + page;
  /* MAP_NORESERVE|MAP_STACK: pages cost memory only once touched. */
  void *map = mmap(NULL, map_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
                   -1, 0);
  if (map == MAP_FAILED)
    return CF_ENOMEM;
  /* The guard page. Linux 6.13+ installs it in the page tables
   * (MADV_GUARD_INSTALL): the mapping stays one memory area, and the
   * kernel merges neighbouring stacks into one, so the number of stacks is
   * not capped by vm.max_map_count (65,530 areas: ~32,000 stacks with an
   * mprotect'ed guard, two areas each). Older kernels: mprotect. */
  if (madvise(map, page, CF__MADV_GUARD_INSTALL) != 0 &&
      mprotect(map, page, PROT_NONE) != 0) {
    munmap(map, map_size);
    return CF_ENOMEM;
  }
  *f = (cf__fiber){0};
  f->map = map;
  f->map_size = map_size;
  f->stack_lo = (char *)map + page;
  f->stack_size = stack_size;
  f->entry = entry;
  unpoison_stack(f);
  f->ctx = make_fcontext(f->stack_lo + stack_size, stack_size, trampoline);
#ifdef CF_TSAN
  f->tsan = __tsan_create_fiber(0);
#endif
  return 0;
}

void cf__fiber_reset(cf__fiber *f, cf__fiber_entry entry) {
  f->entry = entry;
  unpoison_stack(f);
  f->ctx = make_fcontext(f->stack_lo + f->stack_size, f->stack_size,
                         trampoline);
#ifdef CF_TSAN
  __tsan_destroy_fiber(f->tsan);
  f->tsan = __tsan_create_fiber(0);
#endif
}

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static cf__fiber cache[CF__FIBER_CACHE]; /* guarded by cache_lock */
static size_t ncached;                    /* guarded by cache_lock */

static size_t page_round(size_t n) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  return (n + page - 1) / page * page;
}

int cf__fiber_take(cf__fiber *f, size_t stack_size, cf__fiber_entry entry) {
  size_t want = page_round(stack_size);
  pthread_mutex_lock(&cache_lock);
  for (size_t i = ncached; i-- > 0;)
    if (cache[i].stack_size == want) {
      *f = cache[i];
      cache[i] = cache[--ncached];
      pthread_mutex_unlock(&cache_lock);
      cf__fiber_reset(f, entry);
      return 0;
    }
  pthread_mutex_unlock(&cache_lock);
  return cf__fiber_new(f, stack_size, entry);
}

void cf__fiber_give(cf__fiber *f) {
  if (!f->map)
    return;
  pthread_mutex_lock(&cache_lock);
  if (ncached < CF__FIBER_CACHE) {
    cache[ncached++] = *f;
    pthread_mutex_unlock(&cache_lock);
  } else {
    pthread_mutex_unlock(&cache_lock);
    cf__fiber_free(f);
  }
  f->map = NULL;
}

void cf__fiber_free(cf__fiber *f) {
  if (!f || !f->map)
    return;
#ifdef CF_TSAN
  __tsan_destroy_fiber(f->tsan);
#endif
  unpoison_stack(f);
  munmap(f->map, f->map_size);
  f->map = NULL;
}

#ifdef CF__FIBER_SANITIZED
void *cf__fiber_switch(cf__fiber *from, cf__fiber *to, void *msg) {
  hop h = {.from = from, .to = to, .msg = msg};
  before_switch(from, to);
  transfer_t t = jump_fcontext(to->ctx, &h);
  return after_switch(from, t)->msg;
}
#endif

