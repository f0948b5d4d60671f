#include "core/waiter.h"

#include <cfutures/common.h>
#include <ck_pr.h>
#include <pthread.h>
#include <stdlib.h>

#include "core/futex.h"

#define SLEEPING 1u
/* How long a waiter spins before it makes the futex syscall. Short: a
 * round trip on a warm pool finishes within it; an idle thread pays for it
 * once per sleep. */
#define SPIN_NS 20000u

static pthread_mutex_t free_lock = PTHREAD_MUTEX_INITIALIZER;
static cf__waiter *free_list; /* guarded by free_lock */
static pthread_key_t exit_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static _Thread_local cf__waiter *self CF__TLS_FAST;

static void waiter_release(void *p) {
  cf__waiter *w = p;
  w->helper = NULL;
  pthread_mutex_lock(&free_lock);
  w->next_free = free_list;
  free_list = w;
  pthread_mutex_unlock(&free_lock);
}

static void key_init(void) {
  pthread_key_create(&exit_key, waiter_release);
}

cf__waiter *cf__waiter_self(void) {
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
  w->helper = NULL;
  w->next_free = NULL;
  pthread_setspecific(exit_key, w);
  self = w;
  return w;
}

void cf__waiter_wake(cf__waiter *w) {
  /* release: publishes what the waker did before waking (a completed
   * future, a pushed task); pairs with the acquire in cf__waiter_seq. */
  uint32_t old = atomic_fetch_add_explicit(&w->seq, 2, memory_order_release);
  if (old & SLEEPING)
    cf__futex_wake(&w->seq, 1, false);
}

int cf__waiter_sleep(cf__waiter *w, uint32_t seen, const cf_deadline *d) {
  uint64_t start = cf__now_ns();
  for (unsigned i = 1;; i++) {
    if ((atomic_load_explicit(&w->seq, memory_order_acquire) & ~SLEEPING) !=
        seen)
      return 0;
    if ((i & 63) == 0) {
      uint64_t now = cf__now_ns();
      if (now - start > SPIN_NS)
        break;
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
  int rc = cf__futex_wait(&w->seq, seen | SLEEPING, d, false);
  /* Clear our flag whatever happened; wakers only ever add 2. */
  atomic_fetch_and_explicit(&w->seq, ~SLEEPING, memory_order_relaxed);
  if (rc == CF_ETIMEDOUT &&
      (atomic_load_explicit(&w->seq, memory_order_acquire) & ~SLEEPING) != seen)
    return 0;
  return rc;
}
