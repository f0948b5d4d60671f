/* Private: timeouts and deadlines on CLOCK_MONOTONIC. */
#ifndef CF_CORE_TIME_H
#define CF_CORE_TIME_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "core/sibling.h"

/* A deadline: `forever`, or an absolute CLOCK_MONOTONIC time. `poll` is
 * set for a zero timeout (the deadline is then "now"). */
typedef struct cf_deadline {
  bool forever;
  struct timespec at;
} cf_deadline;

/* Turns a timeout in seconds into a deadline, per the rules in
 * cfutures/common.h. Returns 0 or CF_EINVAL (NaN). */
CF__SIBLING int cf__deadline_from_timeout(double timeout_s, cf_deadline *d);

/* True once the deadline has passed (never for `forever`). */
CF__SIBLING bool cf__deadline_passed(const cf_deadline *d);

/* Seconds left until the deadline (negative when past, +inf for forever). */
double cf__deadline_remaining(const cf_deadline *d);

/* Nanoseconds on CLOCK_MONOTONIC. */
uint64_t cf__now_ns(void);

/* Thread-locals on hot paths use the initial-exec model: no call to
 * __tls_get_addr per access. Safe for a library loaded at start-up or
 * dlopen'ed, since glibc keeps surplus static TLS for a few pointers. */
#define CF__TLS_FAST __attribute__((tls_model("initial-exec")))

#endif
