/* Barrier: arrivals counted under a monitor, in generations, with a
 * broken state (Python's threading.Barrier). */
#include <cfutures/sync.h>

#include "sync/monitor.h"
#include "core/report.h"

struct cf_barrier {
  cf__monitor m;
  unsigned parties;
  unsigned count;      /* arrived in this generation; guarded by m */
  unsigned generation; /* bumped when a generation ends; guarded by m */
  unsigned passed;     /* the last generation that ended by filling up */
  bool broken;         /* guarded by m */
};

int cf_barrier_new(bool shared, unsigned parties, cf_barrier **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  if (parties == 0)
    return CF__FAIL(CF_EINVAL, "parties is 0");
  cf_barrier *b = cf__sync_alloc(sizeof *b, shared);
  if (!b)
    return CF__FAIL(CF_ENOMEM, "out of memory");
  int rc = cf__monitor_init(&b->m, shared);
  if (rc) {
    cf__sync_free(b, sizeof *b);
    return CF__RET(rc);
  }
  b->parties = parties;
  *out = b;
  return 0;
}

/* Holds m: breaks the barrier and wakes everyone. */
static void break_locked(cf_barrier *b) {
  b->broken = true;
  b->count = 0;
  pthread_cond_broadcast(&b->m.cv);
}

int cf_barrier_wait(cf_barrier *b, double timeout_s, unsigned *index) {
  cf_deadline d;
  if (!b)
    return CF__FAIL(CF_EINVAL, "NULL barrier");
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  cf__monitor_lock(&b->m);
  if (b->broken) {
    cf__monitor_unlock(&b->m);
    return CF__FAIL(CF_EBROKEN, "the barrier is broken (a wait timed out, "
                                "or it was aborted): reset it first");
  }
  unsigned me = b->count++;
  if (index)
    *index = me;
  if (b->count == b->parties) {
    b->count = 0;
    b->passed = b->generation++;
    pthread_cond_broadcast(&b->m.cv);
    cf__monitor_unlock(&b->m);
    return 0;
  }
  unsigned gen = b->generation;
  int rc = 0;
  /* Holds m: wait for our generation to pass or the barrier to break. */
  while (gen == b->generation && !b->broken) {
    if (cf__monitor_wait(&b->m, &d) == CF_ETIMEDOUT && gen == b->generation &&
        !b->broken) {
      break_locked(b); /* a timeout breaks the barrier, as in Python */
      rc = CF_ETIMEDOUT;
      break;
    }
  }
  /* Ended by filling up: 0. Broken, aborted or reset: CF_EBROKEN. */
  if (rc == 0 && (gen == b->generation || b->passed != gen))
    rc = CF_EBROKEN;
  cf__monitor_unlock(&b->m);
  return CF__RET(rc);
}

int cf_barrier_abort(cf_barrier *b) {
  if (!b)
    return CF__FAIL(CF_EINVAL, "NULL barrier");
  cf__monitor_lock(&b->m);
  break_locked(b);
  cf__monitor_unlock(&b->m);
  return 0;
}

int cf_barrier_reset(cf_barrier *b) {
  if (!b)
    return CF__FAIL(CF_EINVAL, "NULL barrier");
  cf__monitor_lock(&b->m);
  /* Current waiters see their generation end without passing: they get
   * CF_EBROKEN; the next generation starts clean. */
  pthread_cond_broadcast(&b->m.cv);
  b->generation++;
  b->count = 0;
  b->broken = false;
  cf__monitor_unlock(&b->m);
  return 0;
}

bool cf_barrier_broken(cf_barrier *b) {
  if (!b)
    return false;
  cf__monitor_lock(&b->m);
  bool broken = b->broken;
  cf__monitor_unlock(&b->m);
  return broken;
}

unsigned cf_barrier_parties(cf_barrier *b) {
  return b ? b->parties : 0;
}

void cf_barrier_free(cf_barrier *b) {
  if (!b)
    return;
  if (cf__sync_is_creator(b))
    cf__monitor_destroy(&b->m);
  cf__sync_free(b, sizeof *b);
}
