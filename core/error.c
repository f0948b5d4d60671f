#include <cfutures/common.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#include "core/report.h"

const char *cf_strerror(int code) {
  switch (code) {
  case 0:
    return "success";
#define CF__ERR_MSG(name, value, msg)                                          \
  case value:                                                                  \
    return msg;
    CF_ERRNO_MAP(CF__ERR_MSG)
#undef CF__ERR_MSG
  default:
    return "unknown error";
  }
}

const char *cf_err_name(int code) {
  switch (code) {
  case 0:
    return "CF_OK";
#define CF__ERR_NAME(name, value, msg)                                         \
  case value:                                                                  \
    return "CF_" #name;
    CF_ERRNO_MAP(CF__ERR_NAME)
#undef CF__ERR_NAME
  default:
    return "CF_E?";
  }
}

static void default_report(const char *what, int code, void *ctx) {
  (void)ctx;
  fprintf(stderr, "cfutures: %s failed: %s (%d)\n", what, cf_strerror(code),
          code);
}

/* The handler and its context change together; reports are rare, so a
 * mutex keeps the pair consistent. */
static pthread_mutex_t reporter_lock = PTHREAD_MUTEX_INITIALIZER;
static cf_report_fn reporter_fn; /* guarded by reporter_lock */
static void *reporter_ctx;       /* guarded by reporter_lock */

cf_report_fn cf_set_report_handler(cf_report_fn fn, void *ctx) {
  pthread_mutex_lock(&reporter_lock);
  cf_report_fn old = reporter_fn;
  reporter_fn = fn;
  reporter_ctx = ctx;
  pthread_mutex_unlock(&reporter_lock);
  return old;
}

void cf__report(const char *what, int code) {
  pthread_mutex_lock(&reporter_lock);
  cf_report_fn fn = reporter_fn ? reporter_fn : default_report;
  void *ctx = reporter_ctx;
  pthread_mutex_unlock(&reporter_lock);
  fn(what, code, ctx);
}

/* ---- the last error of each thread ---------------------------------------- */

typedef struct last_error {
  const char *call; /* NULL: no failure yet */
  int code;
  const char *why;  /* a literal, or `dyn` */
  char dyn[256];
  char text[512];   /* cf_last_error's answer */
} last_error;

static _Thread_local last_error last;

int cf__fail_at(const char *call, int code, const char *why) {
  last.call = call;
  last.code = code;
  last.why = why;
  return code;
}

int cf__fail_fmt(const char *call, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last.dyn, sizeof last.dyn, fmt, ap);
  va_end(ap);
  return cf__fail_at(call, code, last.dyn);
}

int cf__fail_rc(const char *call, int rc) {
  if (rc == 0)
    return 0;
  switch (rc) {
  case CF_EOWNERDEAD:
    return cf__fail_at(call, rc,
                       "acquired, but its previous holder died holding it: "
                       "what it protected may be half-updated");
  case CF_EDEADLK:
    return cf__fail_at(call, rc, "the calling thread already holds it");
  default:
    return cf__fail_at(call, rc, NULL);
  }
}

int cf__fail_retag(const char *call, int rc) {
  last.call = call;
  return rc;
}

const char *cf_last_error(void) {
  if (!last.call)
    return "";
  snprintf(last.text, sizeof last.text, "%s: %s (%s)", last.call,
           last.why && *last.why ? last.why : cf_strerror(last.code),
           cf_err_name(last.code));
  return last.text;
}
