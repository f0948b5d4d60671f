#include "core/time.h"

#include <cfutures/common.h>
#include <math.h>

/* Beyond ~30 years a timeout is as good as forever (and would overflow). */
#define CF_MAX_TIMEOUT_S 1.0e9

uint64_t cf__now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int cf__deadline_from_timeout(double timeout_s, cf_deadline *d) {
  if (isnan(timeout_s))
    return CF_EINVAL;
  /* Only +infinity (CF_FOREVER) and absurdly long waits are forever; a
   * negative timeout (a remaining time that just ran out) has expired. */
  d->forever = timeout_s > CF_MAX_TIMEOUT_S;
  d->at.tv_sec = 0;
  d->at.tv_nsec = 0; /* forever: unused; zero: already passed */
  if (d->forever || timeout_s <= 0)
    return 0;
  clock_gettime(CLOCK_MONOTONIC, &d->at);
  double whole = floor(timeout_s);
  d->at.tv_sec += (time_t)whole;
  d->at.tv_nsec += (long)((timeout_s - whole) * 1e9);
  if (d->at.tv_nsec >= 1000000000L) {
    d->at.tv_sec++;
    d->at.tv_nsec -= 1000000000L;
  }
  return 0;
}

double cf__deadline_remaining(const cf_deadline *d) {
  if (d->forever)
    return INFINITY;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(d->at.tv_sec - now.tv_sec) +
         (double)(d->at.tv_nsec - now.tv_nsec) * 1e-9;
}

bool cf__deadline_passed(const cf_deadline *d) {
  if (d->forever)
    return false;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec > d->at.tv_sec ||
         (now.tv_sec == d->at.tv_sec && now.tv_nsec >= d->at.tv_nsec);
}
