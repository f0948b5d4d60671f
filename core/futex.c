#include "core/futex.h"

#include <cfutures/common.h>
#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

int cf__futex_wait(_Atomic uint32_t *word, uint32_t expected,
                   const cf_deadline *deadline, bool shared) {
  int op = FUTEX_WAIT_BITSET | (shared ? 0 : FUTEX_PRIVATE_FLAG);
  const struct timespec *ts = NULL;
  if (deadline && !deadline->forever) {
    if (cf__deadline_passed(deadline))
      return CF_ETIMEDOUT;
    ts = &deadline->at; /* absolute, CLOCK_MONOTONIC for WAIT_BITSET */
  }
  long rc = syscall(SYS_futex, (uint32_t *)word, op, expected, ts, NULL,
                    FUTEX_BITSET_MATCH_ANY);
  if (rc == -1 && errno == ETIMEDOUT)
    return CF_ETIMEDOUT;
  return 0;
}

void cf__futex_wake(_Atomic uint32_t *word, int n, bool shared) {
  int op = FUTEX_WAKE | (shared ? 0 : FUTEX_PRIVATE_FLAG);
  syscall(SYS_futex, (uint32_t *)word, op, n, NULL, NULL, 0);
}
