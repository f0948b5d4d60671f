/* Lock and RLock: robust pthread mutexes (error-checking or recursive),
 * private or process-shared (sync/monitor.h). The holder's kernel thread
 * id is kept beside the mutex so that a condition can check that its
 * caller holds the lock. */
#include <cfutures/sync.h>
#include <stdatomic.h>
#include <unistd.h>

#include "core/report.h"
#include "core/time.h"
#include "sync/lock_internal.h"

static _Thread_local uint64_t token;
static pthread_once_t token_once = PTHREAD_ONCE_INIT;

/* A forked child's thread is another thread: it must not inherit the
 * token of the parent's thread that forked (which may hold a lock). */
static void token_forget(void) {
  token = 0;
}

static void token_once_init(void) {
  pthread_atfork(NULL, NULL, token_forget);
}

uint64_t cf__owner_token(void) {
  if (!token) {
    pthread_once(&token_once, token_once_init);
    uint64_t x = (uint64_t)gettid() << 32 ^ (uint64_t)getpid() ^ cf__now_ns();
    /* splitmix64's finaliser: the parts land in every bit. */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    token = x ? x : 1;
  }
  return token;
}

int cf__lock_init(cf_lock *l, bool shared) {
  l->shared = shared;
  atomic_init(&l->owner, 0);
  return cf__mutex_init(&l->mu, shared, false);
}

int cf_lock_new(bool shared, cf_lock **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  cf_lock *l = cf__sync_alloc(sizeof *l, shared);
  if (!l)
    return CF__FAIL(CF_ENOMEM, "out of memory");
  int rc = cf__lock_init(l, shared);
  if (rc) {
    cf__sync_free(l, sizeof *l);
    return CF__RET(rc);
  }
  *out = l;
  return 0;
}

bool cf__lock_held_by_me(cf_lock *l) {
  return atomic_load_explicit(&l->owner, memory_order_relaxed) ==
         cf__owner_token();
}

int cf__lock_acquire(cf_lock *l, const cf_deadline *d) {
  int rc = cf__mutex_lock(&l->mu, d);
  if (rc == 0 || rc == CF_EOWNERDEAD)
    atomic_store_explicit(&l->owner, cf__owner_token(), memory_order_relaxed);
  return rc;
}

int cf_lock_acquire(cf_lock *l, double timeout_s) {
  cf_deadline d;
  if (!l)
    return CF__FAIL(CF_EINVAL, "NULL lock");
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  return CF__RET(cf__lock_acquire(l, &d));
}

int cf_lock_release(cf_lock *l) {
  if (!l)
    return CF__FAIL(CF_EINVAL, "NULL lock");
  if (!cf__lock_held_by_me(l))
    return CF__FAIL(CF_EPERM, "the calling thread does not hold the lock");
  atomic_store_explicit(&l->owner, 0, memory_order_relaxed);
  return pthread_mutex_unlock(&l->mu)
             ? CF__FAIL(CF_EPERM, "the calling thread does not hold the lock")
             : 0;
}

bool cf_lock_locked(cf_lock *l) {
  return l && atomic_load_explicit(&l->owner, memory_order_relaxed) != 0;
}

void cf__lock_fini(cf_lock *l) {
  pthread_mutex_destroy(&l->mu);
}

void cf_lock_free(cf_lock *l) {
  if (!l)
    return;
  if (cf__sync_is_creator(l))
    cf__lock_fini(l);
  cf__sync_free(l, sizeof *l);
}

/* ---- RLock --------------------------------------------------------------- */

struct cf_rlock {
  pthread_mutex_t mu; /* recursive, robust */
  _Atomic uint64_t owner; /* cf__owner_token of the holder, 0 when free */
  unsigned depth; /* guarded by mu */
};

int cf_rlock_new(bool shared, cf_rlock **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  cf_rlock *l = cf__sync_alloc(sizeof *l, shared);
  if (!l)
    return CF__FAIL(CF_ENOMEM, "out of memory");
  atomic_init(&l->owner, 0);
  int rc = cf__mutex_init(&l->mu, shared, true);
  if (rc) {
    cf__sync_free(l, sizeof *l);
    return CF__RET(rc);
  }
  *out = l;
  return 0;
}

int cf_rlock_acquire(cf_rlock *l, double timeout_s) {
  cf_deadline d;
  if (!l)
    return CF__FAIL(CF_EINVAL, "NULL lock");
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  int rc = cf__mutex_lock(&l->mu, &d);
  if (rc == CF_EOWNERDEAD)
    l->depth = 0; /* the dead holder's levels died with it */
  if (rc == 0 || rc == CF_EOWNERDEAD) {
    l->depth++;
    atomic_store_explicit(&l->owner, cf__owner_token(), memory_order_relaxed);
  }
  return CF__RET(rc);
}

int cf_rlock_release(cf_rlock *l) {
  if (!l)
    return CF__FAIL(CF_EINVAL, "NULL lock");
  if (atomic_load_explicit(&l->owner, memory_order_relaxed) !=
      cf__owner_token())
    return CF__FAIL(CF_EPERM, "the calling thread does not hold the lock");
  if (--l->depth == 0)
    atomic_store_explicit(&l->owner, 0, memory_order_relaxed);
  return pthread_mutex_unlock(&l->mu)
             ? CF__FAIL(CF_EPERM, "the calling thread does not hold the lock")
             : 0;
}

void cf_rlock_free(cf_rlock *l) {
  if (!l)
    return;
  if (cf__sync_is_creator(l))
    pthread_mutex_destroy(&l->mu);
  cf__sync_free(l, sizeof *l);
}
