/* Private: the Lock's layout, shared with Condition. */
#ifndef CF_SYNC_LOCK_INTERNAL_H
#define CF_SYNC_LOCK_INTERNAL_H

#include <cfutures/sync.h>
#include <stdatomic.h>
#include <sys/types.h>

#include "sync/monitor.h"

struct cf_lock {
  pthread_mutex_t mu;  /* robust, error-checking */
  _Atomic pid_t owner; /* kernel tid of the holder, 0 when free */
  bool shared;
};

/* For primitives that embed a lock. */
int cf__lock_init(cf_lock *l, bool shared);
void cf__lock_fini(cf_lock *l);
int cf__lock_acquire(cf_lock *l, const cf_deadline *d);
bool cf__lock_held_by_me(cf_lock *l);

#endif
