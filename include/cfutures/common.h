/* cfutures — shared definitions: export macro, error codes, timeouts.
 *
 * Every fallible public call returns an int: 0 on success or a negative
 * CF_E* code. The codes, their names and their messages come from one
 * table, CF_ERRNO_MAP, below.
 */
#ifndef CFUTURES_COMMON_H
#define CFUTURES_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CF_BUILDING_LIBRARY)
#define CF_API __attribute__((visibility("default")))
#else
#define CF_API
#endif

/* X(name, value, message) */
#define CF_ERRNO_MAP(X)                                                        \
  X(EINVAL, -1, "invalid argument")                                            \
  X(ENOMEM, -2, "out of memory")                                               \
  X(ETIMEDOUT, -3, "timed out")                                                \
  X(ECANCELLED, -4, "cancelled")                                               \
  X(EFAILED, -5, "task failed")                                                \
  X(EBROKEN, -6, "executor is broken")                                         \
  X(ESHUTDOWN, -7, "executor is shut down")                                    \
  X(EINVALSTATE, -8, "invalid state for this operation")                       \
  X(EDONE, -9, "no more items")                                                \
  X(EFULL, -10, "queue is full")                                               \
  X(EEMPTY, -11, "queue is empty")                                             \
  X(EPERM, -12, "operation not permitted")                                     \
  X(EOWNERDEAD, -13, "previous owner died holding the lock")                   \
  X(EEOF, -14, "end of file")                                                  \
  X(ESYS, -15, "system call failed")                                           \
  X(EDEADLK, -16, "operation would deadlock")                                  \
  X(EBUSY, -17, "resource busy")                                               \
  X(ETOOBIG, -18, "value too large")                                           \
  X(ENOKEY, -19, "no such key")

typedef enum cf_errno {
  CF_OK = 0,
#define CF__ERR_ENUM(name, value, msg) CF_##name = (value),
  CF_ERRNO_MAP(CF__ERR_ENUM)
#undef CF__ERR_ENUM
} cf_errno;

/* A human-readable message for a CF_E* code (or "success" for 0).
 * Never returns NULL: unknown codes give "unknown error". */
CF_API const char *cf_strerror(int code);

/* The symbolic name of a CF_E* code, e.g. "CF_ETIMEDOUT"; "CF_OK" for 0,
 * "CF_E?" for unknown codes. Never returns NULL. */
CF_API const char *cf_err_name(int code);

/* What the last cfutures call that failed on the calling thread said, as
 * dlerror and sqlite3_errmsg do: the call, what was wrong and the code,
 * e.g. "cf_cond_new: the lock is private but the condition is
 * process-shared (CF_EINVAL)". Set by every call that returns a CF_E* code
 * (CF_EDONE, the normal end of an iteration, included), and by the calls
 * that return NULL for failure; successful calls leave it as it was, like
 * errno. "" before the thread's first failure. Never NULL; the string
 * belongs to the thread and is valid until its next cf_last_error call. */
CF_API const char *cf_last_error(void);

/* Timeouts, everywhere in cfutures, are seconds as a double:
 *   CF_FOREVER (+infinity) wait as long as it takes;
 *   positive               wait at most that long (values above ~30 years
 *                          are treated as forever);
 *   0 or negative          expired: poll once, never block (a remaining
 *                          time `deadline - now` that just went below zero
 *                          means "no time left", as in Python);
 *   NaN                    CF_EINVAL.
 * A call never returns CF_ETIMEDOUT before the timeout has elapsed. */
#define CF_FOREVER (__builtin_inf())

/* An error report: the code a task or callback failed with and its message.
 * `message` is borrowed from the object it came from (see each call). */
typedef struct cf_error {
  int code;
  const char *message;
} cf_error;

/* Called when something fails where no caller can be told: a done-callback
 * that returns non-zero, a timer function that fails. The default handler
 * prints one line to stderr. `what` names the failing thing (for a
 * done-callback: the function's name when the dynamic linker knows it, its
 * address and its future's), `code` is what it returned. The handler may be called from any thread, concurrently.
 * Passing NULL restores the default. Returns the previous handler. */
typedef void (*cf_report_fn)(const char *what, int code, void *ctx);
CF_API cf_report_fn cf_set_report_handler(cf_report_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif
