/* Private: the future's layout and the hooks pools and waits build on.
 *
 * State word: bits 0-1 hold the cf_future_state, bit 2 (LOCK) is a tiny
 * spinlock that guards the listener list and the completion fields while a
 * state change is in progress, and bits 3-31 count the references. LOCK
 * is held for a handful of instructions only, never across a callback or
 * a syscall. Nothing changes the word while LOCK is held (taking or
 * dropping a reference waits for it), so the holder releases it with a
 * plain store, which may also drop a reference of its own: a pool's
 * completion of a task and the drop of the queue's reference to it cost
 * one read-modify-write together (cf__future_complete_drop).
 *
 * Completion protocol: take LOCK (CAS, acquire), check the state, write
 * code/value/destroy/message, detach the listener list, store the final
 * state with LOCK clear (release: publishes those fields), then run the
 * listeners without any lock. Readers that see a final state with an
 * acquire load see the fields.
 */
#ifndef CF_FUTURE_INTERNAL_H
#define CF_FUTURE_INTERNAL_H

#include <cfutures/future.h>
#include <stdatomic.h>

#include "core/alloc.h"
#include "core/sibling.h"
#include "core/time.h"
#include "core/waiter.h"

#define CF__STATE_MASK 3u
#define CF__LOCK       4u
#define CF__REF_ONE    8u /* one reference, in the state word */

static inline uint32_t cf__refs(uint32_t word) {
  return word / CF__REF_ONE;
}

/* Something to run when a future becomes done. Waiters (listeners that
 * only wake someone: `wakes_waiter`) are run first, so that no thread or
 * task waiting on the future depends on a done-callback returning; then
 * the done-callbacks, in the order they were added. `notify` may free the
 * listener. */
typedef struct cf__listener {
  struct cf__listener *next;
  void (*notify)(struct cf__listener *l, cf_future *f);
  /* For a heap-allocated listener: frees it when its future is freed
   * without ever completing (the last reference dropped while pending).
   * NULL for listeners that live elsewhere (a waiter's stack frame). */
  void (*discard)(struct cf__listener *l);
  bool wakes_waiter; /* never blocks, never runs user code */
} cf__listener;

struct cf_future {
  _Atomic uint32_t state;  /* see above: state, LOCK, references */
  int32_t code;            /* 0: value is the result; else failure code */
  uint32_t magic;          /* CF__FUTURE_LIVE until the last unref */
  void *value;             /* written under LOCK, read after FINISHED */
  cf_destroy_fn destroy;   /* ditto */
  char *message;           /* ditto; NULL: cf_strerror(code) */
  cf__listener *listeners; /* guarded by LOCK; newest first */
  /* Frees the memory of this future (pools embed futures in their tasks);
   * NULL: a plain future from cf_future_new. */
  void (*dealloc)(cf_future *f);
};

/* Every live future carries CF__FUTURE_LIVE; the last unref overwrites it
 * (and the debug allocator poisons the whole block with 0xDD bytes). In
 * debug mode (CFUTURES_DEBUG, see core/alloc.h) every public future call
 * checks it first and reports a use after unref, a double unref or a
 * pointer that is no future, naming the call, then aborts. */
#define CF__FUTURE_LIVE 0xCF0F0CF0u
#define CF__FUTURE_DEAD 0xDDDDDDDDu
_Noreturn void cf__future_misused(const cf_future *f, const char *call);
#define CF__CHECK_FUTURE_IN(f, call)                                           \
  do {                                                                         \
    if ((f) && cf__debug_known() && (f)->magic != CF__FUTURE_LIVE)             \
      cf__future_misused((f), (call));                                         \
  } while (0)
#define CF__CHECK_FUTURE(f) CF__CHECK_FUTURE_IN(f, __func__)

/* A stand-alone future that belongs to an executor (the public promise
 * calls refuse it with CF_EPERM); one reference. NULL when out of memory. */
CF__SIBLING cf_future *cf__future_new_owned(void);

/* Initialises an embedded future: PENDING, one reference. */
void cf__future_init(cf_future *f, void (*dealloc)(cf_future *f));

/* Sets an initialised future's references to n (n >= 1), before anyone
 * else can see it: a pool's task starts with the caller's reference and
 * its queue's. */
static inline void cf__future_set_refs(cf_future *f, uint32_t n) {
  atomic_store_explicit(&f->state, CF_PENDING | n * CF__REF_ONE,
                        memory_order_relaxed);
}

/* Records a failed wait's outcome on f (rc: CF_ETIMEDOUT, CF_ECANCELLED,
 * CF_EFAILED, CF_EBROKEN, CF_ENOMEM) as the last error of `call`, with the
 * task's own message for a failure; returns rc. */
int cf__fail_outcome(const char *call, int rc, const cf_future *f);

/* Completes f with code (0: value) and message (owned: freed with free()).
 * Returns 0 or CF_EINVALSTATE (then value and message stay the caller's). */
CF__SIBLING int cf__future_complete(cf_future *f, int code, void *value,
                                    cf_destroy_fn destroy, char *message);

/* cf__future_complete, dropping one reference of the caller's too (the
 * last: f is freed) in the same step; on CF_EINVALSTATE nothing is
 * dropped. A pool running a task uses it to let go of the queue's
 * reference to it: one read-modify-write for both. */
CF__SIBLING int cf__future_complete_drop(cf_future *f, int code, void *value,
                                         cf_destroy_fn destroy, char *message);

/* PENDING -> RUNNING: 0, or CF_ECANCELLED / CF_EINVALSTATE as
 * cf_future_set_running_or_notify_cancel, for any future. */
CF__SIBLING int cf__future_set_running(cf_future *f);

/* Cancels a PENDING or RUNNING future. Pools use the
 * latter to fail futures whose tasks will never run. */
CF__SIBLING bool cf__future_cancel(cf_future *f);

/* Cancelling many futures at once (shutdown with cancel_futures), so that
 * no listener of one runs before all are cancelled: `_quiet` moves a
 * PENDING future to CANCELLED and leaves its listeners attached (returns
 * false if it was not PENDING); `_fire` then detaches and runs them. */
bool cf__future_cancel_quiet(cf_future *f);
void cf__future_fire(cf_future *f);

static inline uint32_t cf__future_state(const cf_future *f) {
  /* acquire: pairs with the release store that published a final state. */
  return atomic_load_explicit(&((cf_future *)f)->state, memory_order_acquire) &
         CF__STATE_MASK;
}

static inline bool cf__state_done(uint32_t s) {
  return s == CF_CANCELLED || s == CF_FINISHED;
}

/* Adds `l` to f's listeners and returns true, or returns false (and does
 * nothing) if f is already done. */
bool cf__future_listen(cf_future *f, cf__listener *l);

/* Removes `l` if still registered and returns true; returns false if f
 * completed meanwhile and its completer owns (is running or ran) `l`. */
bool cf__future_unlisten(cf_future *f, cf__listener *l);

/* A listener that wakes a waiter, for stack-allocated use: after a failed
 * unlisten, cf__wake_node_settle waits until the completer is done with it. */
typedef struct cf__wake_node {
  cf__listener l;
  cf__waiter *w;
  _Atomic uint32_t fired;
} cf__wake_node;

void cf__wake_node_init(cf__wake_node *n, cf__waiter *w);
/* Marks a node's notification complete; the completer's last touch. */
void cf__node_fire(_Atomic uint32_t *fired);
/* Unregisters a node from f, or waits until its notification finished. */
void cf__node_settle(cf_future *f, cf__listener *l, _Atomic uint32_t *fired);

/* Waits, on waiter w, until cond(ctx) holds or the deadline passes. Wakes
 * come from listeners that wake w. On a pool task's fiber, first runs
 * inline those of hints[0..nhints) whose tasks have not started (see
 * cf__waiter_ops.run_inline), then suspends the fiber instead of blocking
 * the thread. Returns 0 or CF_ETIMEDOUT (or CF_ECANCELLED: a cancelled green
 * task's wait). */
int cf__wait_until(bool (*cond)(void *ctx), void *ctx, cf_future *const *hints,
                   size_t nhints, const cf_deadline *d, cf__waiter *w);

/* Waits until f is done or the deadline; 0, CF_ETIMEDOUT or CF_ENOMEM. */
int cf__future_wait(cf_future *f, const cf_deadline *d);

/* An executor whose futures a waiting thread can bring to completion by
 * doing the executor's own work meanwhile (the process pool: see
 * cf__pp_drive_wait), known by their dealloc. `drive` returns 0 (f is
 * done), CF_ETIMEDOUT (d passed) or CF_EBUSY (it could not, or not for
 * long: the caller waits as usual). */
typedef struct cf__driver {
  void (*dealloc)(cf_future *f);
  int (*drive)(cf_future *f, const cf_deadline *d);
} cf__driver;

/* Installs d (static; one at most, for the life of the process). */
void cf__future_set_driver(const cf__driver *d);

/* The outcome of a done future as cf_future_result reports it. */
int cf__future_outcome(cf_future *f, void **out);

#endif
