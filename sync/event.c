/* Event: a flag under a monitor, and a generation count so that set()
 * releases every thread waiting at that moment even if clear() follows at
 * once (a waiter that wakes after the clear sees the generation moved). */
#include <cfutures/sync.h>
#include <stdint.h>

#include "sync/monitor.h"
#include "core/report.h"

struct cf_event {
  cf__monitor m;
  bool set;     /* guarded by m */
  uint64_t gen; /* guarded by m: how many times set() was called */
};

int cf_event_new(bool shared, cf_event **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  cf_event *e = cf__sync_alloc(sizeof *e, shared);
  if (!e)
    return CF__FAIL(CF_ENOMEM, "out of memory");
  int rc = cf__monitor_init(&e->m, shared);
  if (rc) {
    cf__sync_free(e, sizeof *e);
    return CF__RET(rc);
  }
  *out = e;
  return 0;
}

int cf_event_set(cf_event *e) {
  if (!e)
    return CF__FAIL(CF_EINVAL, "NULL event");
  cf__monitor_lock(&e->m);
  e->set = true;
  e->gen++;
  pthread_cond_broadcast(&e->m.cv);
  cf__monitor_unlock(&e->m);
  return 0;
}

int cf_event_clear(cf_event *e) {
  if (!e)
    return CF__FAIL(CF_EINVAL, "NULL event");
  cf__monitor_lock(&e->m);
  e->set = false;
  cf__monitor_unlock(&e->m);
  return 0;
}

bool cf_event_is_set(cf_event *e) {
  if (!e)
    return false;
  cf__monitor_lock(&e->m);
  bool set = e->set;
  cf__monitor_unlock(&e->m);
  return set;
}

int cf_event_wait(cf_event *e, double timeout_s) {
  cf_deadline d;
  if (!e)
    return CF__FAIL(CF_EINVAL, "NULL event");
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  int rc = 0;
  cf__monitor_lock(&e->m);
  uint64_t gen = e->gen;
  /* Holds m: wait for the flag, or for a set() since we came. */
  while (!e->set && e->gen == gen && rc == 0)
    rc = cf__monitor_wait(&e->m, &d);
  rc = e->set || e->gen != gen ? 0 : CF_ETIMEDOUT;
  cf__monitor_unlock(&e->m);
  return CF__RET(rc);
}

void cf_event_free(cf_event *e) {
  if (!e)
    return;
  if (cf__sync_is_creator(e))
    cf__monitor_destroy(&e->m);
  cf__sync_free(e, sizeof *e);
}
