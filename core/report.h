/* Private: report a failure nobody can be told about (see
 * cf_set_report_handler in cfutures/common.h), and record the failure of a
 * call for cf_last_error. */
#ifndef CF_CORE_REPORT_H
#define CF_CORE_REPORT_H

#include "core/sibling.h"
void cf__report(const char *what, int code);

/* Records that public call `call` failed with `code` because of `why` (a
 * string that lives for ever: a literal), as this thread's last error, and
 * returns code. Costs a few stores: the message is only put together when
 * cf_last_error asks for it. */
CF__SIBLING int cf__fail_at(const char *call, int code, const char *why);
/* The same with a printf-formatted reason (copied, at most 255 bytes). */
CF__SIBLING int cf__fail_fmt(const char *call, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* In a public function: its own name is the call. */
#define CF__FAIL(code, why) cf__fail_at(__func__, (code), (why))
#define CF__FAILF(code, ...) cf__fail_fmt(__func__, (code), __VA_ARGS__)
/* Returns rc, recording a non-zero one with the code's own message. */
#define CF__RET(rc) cf__fail_rc(__func__, (rc))
CF__SIBLING int cf__fail_rc(const char *call, int rc);
/* Renames the call of the last error (a public call that failed inside
 * another one, e.g. cf_queue_get_nowait in cf_queue_get); returns rc. */
CF__SIBLING int cf__fail_retag(const char *call, int rc);

#endif
