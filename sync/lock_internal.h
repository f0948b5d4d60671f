/* Private: the Lock's layout, shared with Condition. */
#ifndef CF_SYNC_LOCK_INTERNAL_H
#define CF_SYNC_LOCK_INTERNAL_H

#include <cfutures/sync.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "sync/monitor.h"

struct cf_lock {
  pthread_mutex_t mu;  /* robust, error-checking */
  /* The holder's cf__owner_token, 0 when free. Not the kernel thread id:
   * after a holder dies its id stays here until the next acquire, and a
   * new thread given the same id must not pass for the holder. */
  _Atomic uint64_t owner;
  bool shared;
};

/* A 64-bit value that names the calling thread among every thread of every
 * process that ever shares a lock with it (its kernel id, its process and
 * the time it first asked, mixed); never 0. */
uint64_t cf__owner_token(void);

/* For primitives that embed a lock. */
int cf__lock_init(cf_lock *l, bool shared);
void cf__lock_fini(cf_lock *l);
int cf__lock_acquire(cf_lock *l, const cf_deadline *d);
bool cf__lock_held_by_me(cf_lock *l);

#endif
