/* Condition: a condition variable over a cf_lock's mutex. */
#include <cfutures/sync.h>
#include <stdatomic.h>
#include <unistd.h>

#include "sync/lock_internal.h"
#include "core/report.h"

struct cf_cond {
  pthread_cond_t cv;
  cf_lock *lock; /* the borrowed lock, or &own */
  cf_lock own;   /* used when no lock was given */
};

int cf_cond_new(bool shared, cf_lock *lock, cf_cond **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  if (lock && lock->shared != shared)
    return CF__FAIL(CF_EINVAL,
                    shared ? "the lock is private but the condition is "
                             "process-shared (both must be shared)"
                           : "the lock is process-shared but the condition "
                             "is private (both must be the same flavour)");
  cf_cond *c = cf__sync_alloc(sizeof *c, shared);
  if (!c)
    return CF__FAIL(CF_ENOMEM, "out of memory");
  int rc = cf__cond_init(&c->cv, shared);
  if (!rc && !lock) {
    rc = cf__lock_init(&c->own, shared);
    if (rc)
      pthread_cond_destroy(&c->cv);
  }
  if (rc) {
    cf__sync_free(c, sizeof *c);
    return CF__RET(rc);
  }
  c->lock = lock ? lock : &c->own;
  *out = c;
  return 0;
}

cf_lock *cf_cond_lock(cf_cond *c) {
  return c ? c->lock : NULL;
}

/* Waits once with the lock held; keeps the owner field right across the
 * wait, during which the mutex is released. */
static int wait_once(cf_cond *c, const cf_deadline *d) {
  uint64_t me = cf__owner_token();
  atomic_store_explicit(&c->lock->owner, 0, memory_order_relaxed);
  int rc = cf__cond_wait(&c->cv, &c->lock->mu, d);
  atomic_store_explicit(&c->lock->owner, me, memory_order_relaxed);
  return rc;
}

int cf_cond_wait(cf_cond *c, double timeout_s) {
  cf_deadline d;
  if (!c)
    return CF__FAIL(CF_EINVAL, "NULL condition");
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  if (!cf__lock_held_by_me(c->lock))
    return CF__FAIL(CF_EPERM, "the calling thread does not hold the "
                              "condition's lock");
  return CF__RET(wait_once(c, &d));
}

int cf_cond_wait_for(cf_cond *c, bool (*pred)(void *arg), void *arg,
                     double timeout_s) {
  cf_deadline d;
  if (!c || !pred)
    return CF__FAIL(CF_EINVAL, c ? "NULL predicate" : "NULL condition");
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  if (!cf__lock_held_by_me(c->lock))
    return CF__FAIL(CF_EPERM, "the calling thread does not hold the "
                              "condition's lock");
  /* Holds the lock (released inside each wait). */
  while (!pred(arg))
    if (wait_once(c, &d) == CF_ETIMEDOUT)
      return pred(arg) ? 0 : CF__FAIL(CF_ETIMEDOUT, "the predicate is still false");
  return 0;
}

int cf_cond_notify(cf_cond *c, unsigned n) {
  if (!c)
    return CF__FAIL(CF_EINVAL, "NULL condition");
  if (!cf__lock_held_by_me(c->lock))
    return CF__FAIL(CF_EPERM, "the calling thread does not hold the "
                              "condition's lock");
  for (unsigned i = 0; i < n; i++)
    pthread_cond_signal(&c->cv);
  return 0;
}

int cf_cond_notify_all(cf_cond *c) {
  if (!c)
    return CF__FAIL(CF_EINVAL, "NULL condition");
  if (!cf__lock_held_by_me(c->lock))
    return CF__FAIL(CF_EPERM, "the calling thread does not hold the "
                              "condition's lock");
  pthread_cond_broadcast(&c->cv);
  return 0;
}

void cf_cond_free(cf_cond *c) {
  if (!c)
    return;
  if (cf__sync_is_creator(c)) {
    pthread_cond_destroy(&c->cv);
    if (c->lock == &c->own)
      cf__lock_fini(&c->own);
  }
  cf__sync_free(c, sizeof *c);
}
