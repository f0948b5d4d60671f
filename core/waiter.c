#include "core/waiter.h"

#include <cfutures/common.h>
#include <ck_pr.h>
#include <pthread.h>
#include <stdlib.h>

#include "core/futex.h"

#define SLEEPING CF__WAITER_SLEEPING
/* How long a waiter spins before it makes the futex syscall. Short: a
 * round trip on a warm pool finishes within it; an idle thread pays for it
 * once per sleep. None for a while after a spin ran out (core/spin.h). */
#define SPIN_NS 20000u

static pthread_mutex_t free_lock = PTHREAD_MUTEX_INITIALIZER;
static cf__waiter *free_list; /* guarded by free_lock */
static pthread_key_t exit_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static _Thread_local cf__waiter *self CF__TLS_FAST;
static _Thread_local cf__waiter *current CF__TLS_FAST; /* a fiber's */

/* Thread exit (the key's destructor): the waiter goes back to the free
 * list and leaves this thread for good. A later destructor that waits
 * gets a fresh one (and this runs again for it). */
static void waiter_release(void *p) {
  cf__waiter *w = p;
  self = NULL;
  current = NULL;
  pthread_mutex_lock(&free_lock);
  w->next_free = free_list;
  free_list = w;
  pthread_mutex_unlock(&free_lock);
}

static void key_init(void) {
  pthread_key_create(&exit_key, waiter_release);
}

void cf__waiter_init(cf__waiter *w, const cf__waiter_ops *ops, void *owner) {
  atomic_init(&w->seq, 0);
  w->spin = (cf__spin){0};
  w->ops = ops;
  w->owner = owner;
  w->next_free = NULL;
}

void cf__waiter_set_current(cf__waiter *w) {
  current = w;
}

cf__waiter *cf__waiter_self(void) {
  if (current)
    return current;
  if (self)
    return self;
  pthread_once(&key_once, key_init);
  pthread_mutex_lock(&free_lock);
  cf__waiter *w = free_list;
  if (w)
    free_list = w->next_free;
  pthread_mutex_unlock(&free_lock);
  if (!w) {
    w = calloc(1, sizeof *w);
    if (!w)
      return NULL;
  }
  w->ops = NULL;
  w->owner = NULL;
  w->next_free = NULL;
  w->spin = (cf__spin){0};
  pthread_setspecific(exit_key, w);
  self = w;
  return w;
}

void cf__waiter_wake(cf__waiter *w) {
  /* release: publishes what the waker did before waking (a completed
   * future, a pushed task); pairs with the acquire in cf__waiter_seq. */
  uint32_t old = atomic_fetch_add_explicit(&w->seq, 2, memory_order_release);
  if (old & SLEEPING) {
    if (w->ops)
      w->ops->wake(w);
    else
      cf__futex_wake(&w->seq, 1, false);
  }
}

void cf__waiter_futex_wake(cf__waiter *w) {
  cf__futex_wake(&w->seq, 1, false);
}

int cf__waiter_sleep(cf__waiter *w, uint32_t seen, const cf_deadline *d) {
  if (w->ops)
    return w->ops->sleep(w, seen, d);
  return cf__waiter_block(w, seen, d);
}

int cf__waiter_block(cf__waiter *w, uint32_t seen, const cf_deadline *d) {
  return cf__waiter_block_spin(w, seen, d, SPIN_NS);
}

int cf__waiter_block_spin(cf__waiter *w, uint32_t seen, const cf_deadline *d,
                          uint64_t spin_ns) {
  uint64_t start = cf__now_ns();
  /* No spin for a while after spins ran out (core/spin.h): the
   * CAS below still sees a wake that came meanwhile. */
  spin_ns = cf__spin_budget(&w->spin, spin_ns, start);
  for (unsigned i = 1; spin_ns; i++) {
    if ((atomic_load_explicit(&w->seq, memory_order_acquire) & ~SLEEPING) !=
        seen) {
      cf__spin_paid(&w->spin);
      return 0;
    }
    if ((i & 63) == 0) {
      uint64_t now = cf__now_ns();
      if (now - start > spin_ns) {
        cf__spin_ran_out(&w->spin, now);
        break;
      }
      if (d && cf__deadline_passed(d))
        return CF_ETIMEDOUT;
    }
    ck_pr_stall();
  }
  uint32_t expect = seen;
  /* acquire on success/failure: same pairing as cf__waiter_seq. */
  if (!atomic_compare_exchange_strong_explicit(
          &w->seq, &expect, seen | SLEEPING, memory_order_acquire,
          memory_order_acquire))
    return 0; /* moved on (or already marked by us: only the owner sets it) */
  cf__thread_pool_before_block();
  int rc = cf__futex_wait(&w->seq, seen | SLEEPING, d, false);
  /* Clear our flag whatever happened; wakers only ever add 2. */
  atomic_fetch_and_explicit(&w->seq, ~SLEEPING, memory_order_relaxed);
  if (rc == CF_ETIMEDOUT &&
      (atomic_load_explicit(&w->seq, memory_order_acquire) & ~SLEEPING) != seen)
    return 0;
  return rc;
}
