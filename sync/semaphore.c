/* Semaphore and BoundedSemaphore: a counter under a monitor. */
#include <cfutures/sync.h>

#include "sync/monitor.h"

struct cf_sem {
  cf__monitor m;
  unsigned value; /* guarded by m */
  unsigned bound; /* 0: unbounded */
};

static int sem_new(bool shared, unsigned value, unsigned bound, cf_sem **out) {
  if (!out)
    return CF_EINVAL;
  *out = NULL;
  cf_sem *s = cf__sync_alloc(sizeof *s, shared);
  if (!s)
    return CF_ENOMEM;
  int rc = cf__monitor_init(&s->m, shared);
  if (rc) {
    cf__sync_free(s, sizeof *s);
    return rc;
  }
  s->value = value;
  s->bound = bound;
  *out = s;
  return 0;
}

int cf_sem_new(bool shared, unsigned value, cf_sem **out) {
  return sem_new(shared, value, 0, out);
}

int cf_bounded_sem_new(bool shared, unsigned value, cf_sem **out) {
  if (value == 0) {
    if (out)
      *out = NULL;
    return CF_EINVAL; /* could never be acquired nor released */
  }
  return sem_new(shared, value, value, out);
}

int cf_sem_acquire(cf_sem *s, double timeout_s) {
  cf_deadline d;
  if (!s || cf__deadline_from_timeout(timeout_s, &d))
    return CF_EINVAL;
  int rc = 0;
  cf__monitor_lock(&s->m);
  /* Holds m: wait for a unit. */
  while (s->value == 0 && rc == 0)
    rc = cf__monitor_wait(&s->m, &d);
  if (s->value > 0) {
    s->value--;
    rc = 0;
  }
  cf__monitor_unlock(&s->m);
  return rc;
}

int cf_sem_release(cf_sem *s, unsigned n) {
  if (!s || n == 0)
    return CF_EINVAL;
  int rc = 0;
  cf__monitor_lock(&s->m);
  if (s->bound && (s->value > s->bound || n > s->bound - s->value)) {
    rc = CF_EINVALSTATE;
  } else {
    s->value += n;
    for (unsigned i = 0; i < n; i++)
      pthread_cond_signal(&s->m.cv);
  }
  cf__monitor_unlock(&s->m);
  return rc;
}

unsigned cf_sem_value(cf_sem *s) {
  if (!s)
    return 0;
  cf__monitor_lock(&s->m);
  unsigned v = s->value;
  cf__monitor_unlock(&s->m);
  return v;
}

void cf_sem_free(cf_sem *s) {
  if (!s)
    return;
  if (cf__sync_is_creator(s))
    cf__monitor_destroy(&s->m);
  cf__sync_free(s, sizeof *s);
}
