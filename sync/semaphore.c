/* Semaphore and BoundedSemaphore: a counter under a monitor. */
#include <cfutures/sync.h>

#include "sync/monitor.h"
#include "core/report.h"

struct cf_sem {
  cf__monitor m;
  unsigned value; /* guarded by m */
  unsigned bound; /* 0: unbounded */
};

static int sem_new(const char *call, bool shared, unsigned value,
                   unsigned bound, cf_sem **out) {
  if (!out)
    return cf__fail_at(call, CF_EINVAL, "NULL out");
  *out = NULL;
  cf_sem *s = cf__sync_alloc(sizeof *s, shared);
  if (!s)
    return cf__fail_at(call, CF_ENOMEM, "out of memory");
  int rc = cf__monitor_init(&s->m, shared);
  if (rc) {
    cf__sync_free(s, sizeof *s);
    return cf__fail_rc(call, rc);
  }
  s->value = value;
  s->bound = bound;
  *out = s;
  return 0;
}

int cf_sem_new(bool shared, unsigned value, cf_sem **out) {
  return sem_new(__func__, shared, value, 0, out);
}

int cf_bounded_sem_new(bool shared, unsigned value, cf_sem **out) {
  if (value == 0) {
    if (out)
      *out = NULL;
    /* could never be acquired nor released */
    return CF__FAIL(CF_EINVAL, "a bounded semaphore's value must be > 0");
  }
  return sem_new(__func__, shared, value, value, out);
}

int cf_sem_acquire(cf_sem *s, double timeout_s) {
  cf_deadline d;
  if (!s)
    return CF__FAIL(CF_EINVAL, "NULL semaphore");
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
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
  return CF__RET(rc);
}

int cf_sem_release(cf_sem *s, unsigned n) {
  if (!s || n == 0)
    return CF__FAIL(CF_EINVAL, s ? "n is 0" : "NULL semaphore");
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
  return CF__RET(rc);
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
