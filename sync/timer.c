/* Timer: a thread that waits out a delay on an Event-like monitor, then
 * runs the function unless cancelled. */
#include <cfutures/sync.h>
#include <math.h>
#include <stdlib.h>

#include "core/report.h"
#include "sync/monitor.h"

enum { WAITING, CANCELLED, RUNNING_FN, DONE };

struct cf_timer {
  cf__monitor m;
  int state; /* guarded by m */
  cf_deadline at;
  int (*fn)(void *);
  void *arg;
  pthread_t thread;
};

static void *timer_main(void *p) {
  cf_timer *t = p;
  cf__monitor_lock(&t->m);
  /* Holds m: sleep until the deadline or a cancel. */
  while (t->state == WAITING && cf__monitor_wait(&t->m, &t->at) == 0)
    ;
  bool run = t->state == WAITING;
  if (run)
    t->state = RUNNING_FN;
  cf__monitor_unlock(&t->m);
  if (run) {
    int rc = t->fn(t->arg);
    if (rc != 0)
      cf__report("timer function", rc);
  }
  return NULL;
}

int cf_timer_start(double delay_s, int (*fn)(void *arg), void *arg,
                   cf_timer **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  if (!fn || isnan(delay_s) || delay_s < 0)
    return CF__FAIL(CF_EINVAL, !fn ? "NULL function"
                               : "the delay is NaN or negative");
  cf_timer *t = calloc(1, sizeof *t);
  if (!t)
    return CF__FAIL(CF_ENOMEM, "out of memory");
  int rc = cf__monitor_init(&t->m, false);
  if (rc) {
    free(t);
    return CF__RET(rc);
  }
  cf__deadline_from_timeout(delay_s, &t->at); /* 0: already passed */
  t->fn = fn;
  t->arg = arg;
  if (pthread_create(&t->thread, NULL, timer_main, t) != 0) {
    cf__monitor_destroy(&t->m);
    free(t);
    return CF__FAIL(CF_ESYS, "its thread could not be created");
  }
  *out = t;
  return 0;
}

bool cf_timer_cancel(cf_timer *t) {
  if (!t)
    return false;
  cf__monitor_lock(&t->m);
  bool cancelled = t->state == WAITING || t->state == CANCELLED;
  if (t->state == WAITING) {
    t->state = CANCELLED;
    pthread_cond_broadcast(&t->m.cv);
  }
  cf__monitor_unlock(&t->m);
  return cancelled;
}

void cf_timer_free(cf_timer *t) {
  if (!t)
    return;
  pthread_join(t->thread, NULL);
  cf__monitor_destroy(&t->m);
  free(t);
}
