/* Private: Linux futex wait/wake on a 32-bit word. `shared` selects a
 * process-shared futex (the word lives in MAP_SHARED memory); otherwise the
 * cheaper private futex is used. */
#ifndef CF_CORE_FUTEX_H
#define CF_CORE_FUTEX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/time.h"

/* Blocks while *word == expected, until woken or the deadline (NULL:
 * forever). Returns 0 (woken, or the value differed, or a signal: callers
 * re-check their condition) or CF_ETIMEDOUT. */
int cf__futex_wait(_Atomic uint32_t *word, uint32_t expected,
                   const cf_deadline *deadline, bool shared);

/* Wakes up to n waiters blocked on word (n = INT32_MAX for all). */
void cf__futex_wake(_Atomic uint32_t *word, int n, bool shared);

#endif
