#include <cfutures/common.h>

#include <pthread.h>

#include "core/report.h"
#include <stdio.h>

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
