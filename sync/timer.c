/* Timer: a thread that waits out a delay on an Event-like monitor, then
 * runs the function unless cancelled. It sets `finished` under the monitor
 * as it ends, for cf_timer_join (which waits on the monitor's
 * CLOCK_MONOTONIC condition); cf_timer_free releases the pthread. */
#include <cfutures/sync.h>
#include <math.h>
#include <stdlib.h>

#include "core/report.h"
#include "sync/monitor.h"

enum { WAITING, CANCELLED, RUNNING_FN, DONE };

struct cf_timer {
  cf__monitor m;
  int state;     /* guarded by m */
  bool finished; /* guarded by m: the thread is past fn (or the cancel) */
  cf_deadline at;
  int (*fn)(void *);
  void *arg;
  pthread_t thread;
};

/* The timer whose function the calling thread runs, for cf_timer_join's
 * self-check. */
static _Thread_local cf_timer *current;

static void *timer_main(void *p) {
  cf_timer *t = p;
  current = t;
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
  cf__monitor_lock(&t->m);
  t->finished = true;
  pthread_cond_broadcast(&t->m.cv);
  cf__monitor_unlock(&t->m);
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

int cf_timer_join(cf_timer *t, double timeout_s) {
  if (!t)
    return CF__FAIL(CF_EINVAL, "NULL timer");
  cf_deadline d;
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  if (current == t)
    return CF__FAIL(CF_EDEADLK, "called from the timer's own function");
  cf__monitor_lock(&t->m);
  /* Holds m: wait for the thread to finish. */
  while (!t->finished) {
    if (cf__monitor_wait(&t->m, &d) == CF_ETIMEDOUT && !t->finished) {
      cf__monitor_unlock(&t->m);
      return CF__FAIL(CF_ETIMEDOUT, "the timer has not finished");
    }
  }
  cf__monitor_unlock(&t->m);
  return 0;
}

void cf_timer_free(cf_timer *t) {
  if (!t)
    return;
  pthread_join(t->thread, NULL);
  cf__monitor_destroy(&t->m);
  free(t);
}
