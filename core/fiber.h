/* Private: fibers — execution contexts with stacks of their own, switched
 * in user space.
 *
 * The switch itself is Boost.Context's fcontext (jump_fcontext /
 * make_fcontext, C linkage, from Debian's libboost-context-dev, linked in
 * statically so that nothing of C++ reaches cfutures' users): about 6 ns per
 * switch on x86-64, against some 200 ns for ucontext's swapcontext, which
 * makes a signal-mask system call every time.
 *
 * A fiber is either a thread's own stack (cf__fiber_init_native: it can be
 * left and come back to, never started) or a stack this module maps
 * (cf__fiber_new: mmap'd, a guard page below it, started at `entry`).
 * AddressSanitizer and ThreadSanitizer are told about every switch
 * (__sanitizer_start/finish_switch_fiber, __tsan_create/switch_to_fiber), so
 * sanitizer builds keep their meaning.
 *
 * A fiber may be resumed on another thread than the one that left it: the
 * caller decides. Code that runs across a switch must not keep pointers to
 * thread-locals it read before the switch.
 */
#ifndef CF_CORE_FIBER_H
#define CF_CORE_FIBER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cf__fiber cf__fiber;

/* A fiber's first function: `msg` is what the switch that started it
 * passed. It must never return: it ends by switching away for good. */
typedef void (*cf__fiber_entry)(cf__fiber *self, void *msg);

struct cf__fiber {
  void *ctx;         /* saved context while not running */
  char *stack_lo;    /* lowest usable byte of the stack */
  size_t stack_size; /* usable bytes above stack_lo */
  void *map;         /* mapping (guard page included); NULL: native */
  size_t map_size;   /* bytes mapped */
  cf__fiber_entry entry;
  void *asan_fake; /* AddressSanitizer's fake stack while switched out */
  void *tsan;      /* ThreadSanitizer's fiber handle */
};

/* Stack sizes are rounded up to whole pages and must lie in this range. */
#define CF__FIBER_MIN_STACK ((size_t)16 * 1024)
#define CF__FIBER_MAX_STACK ((size_t)1024 * 1024 * 1024)

/* Describes the calling thread's own stack, so that other fibers can switch
 * back to it. */
void cf__fiber_init_native(cf__fiber *f);

/* Maps a stack of at least `stack_size` bytes (see the range above) with a
 * guard page and prepares `entry` to run on it at the first switch.
 * Returns 0, CF_EINVAL (size out of range) or CF_ENOMEM. */
int cf__fiber_new(cf__fiber *f, size_t stack_size, cf__fiber_entry entry);

/* Makes a mapped fiber that will never be resumed where it stopped (it
 * finished, or was never started) start afresh at `entry` on its stack at
 * the next switch to it: how stacks are pooled and reused. */
void cf__fiber_reset(cf__fiber *f, cf__fiber_entry entry);

/* A pool of mapped stacks for short-lived fibers (green tasks, greenlets):
 * cf__fiber_take fills *f with a cached stack of exactly `stack_size` bytes
 * (rounded to pages) reset to `entry`, or maps a new one (same returns as
 * cf__fiber_new); cf__fiber_give hands a finished or unstarted fiber's
 * stack back (unmapped when the pool holds CF__FIBER_CACHE already). Any
 * thread. */
#define CF__FIBER_CACHE 256
int cf__fiber_take(cf__fiber *f, size_t stack_size, cf__fiber_entry entry);
void cf__fiber_give(cf__fiber *f);

/* Unmaps a fiber made by cf__fiber_new; it must not be running or
 * suspended in the middle of anything that still matters. */
void cf__fiber_free(cf__fiber *f);

/* Boost.Context's fcontext (C linkage, assembly): what a jump carries. */
typedef struct cf__transfer {
  void *fctx; /* where the fiber left stopped */
  void *data;
} cf__transfer;
cf__transfer jump_fcontext(void *const to, void *vp);

/* What travels with a switch: the fiber left, the one entered, and the
 * caller's message. Lives on the leaving fiber's stack until it resumes. */
typedef struct cf__hop {
  cf__fiber *from;
  cf__fiber *to;
  void *msg;
} cf__hop;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CF__FIBER_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CF__FIBER_SANITIZED 1
#endif
#endif

/* Leaves `from` (the running fiber) for `to`, passing `msg`. Returns when
 * some fiber switches back to `from`, with the message that switch passed.
 * `from`'s context is saved before `to` runs. Inline, a jump and two
 * stores, unless a sanitizer must be told of the switch (fiber.c). */
#ifdef CF__FIBER_SANITIZED
void *cf__fiber_switch(cf__fiber *from, cf__fiber *to, void *msg);
#else
static inline void *cf__fiber_switch(cf__fiber *from, cf__fiber *to,
                                     void *msg) {
  cf__hop h = {.from = from, .to = to, .msg = msg};
  cf__transfer t = jump_fcontext(to->ctx, &h);
  cf__hop *back = t.data;
  back->from->ctx = t.fctx;
  return back->msg;
}
#endif

/* Bytes of stack left below the caller's frame on fiber f (a mapped one). */
static inline size_t cf__fiber_stack_left(const cf__fiber *f) {
  uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
  uintptr_t lo = (uintptr_t)f->stack_lo;
  return sp > lo ? (size_t)(sp - lo) : 0;
}

#endif
