/* The executor interface: argument checks and dispatch, cf_fail, and the
 * task-running step every pool shares. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/report.h"
#include "executor/executor_internal.h"
#include "futures/future_internal.h"

/* ---- cf_fail ------------------------------------------------------------- */

static _Thread_local char *fail_message CF__TLS_FAST;

int cf_fail(int code, const char *fmt, ...) {
  free(fail_message);
  fail_message = NULL;
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&fail_message, fmt, ap) < 0)
      fail_message = NULL;
    va_end(ap);
  }
  return code;
}

char *cf__fail_take_message(void) {
  char *m = fail_message;
  fail_message = NULL;
  return m;
}

void cf__fail_clear(void) {
  free(fail_message);
  fail_message = NULL;
}

/* Completes f with what the task returned; with `drop`, dropping a
 * reference of the caller's too (whatever happens). */
static void run_task(cf_future *f, cf_fn fn, void *arg, cf_destroy_fn destroy,
                     const _Atomic bool *cancel, bool drop) {
  int (*complete)(cf_future *, int, void *, cf_destroy_fn, char *) =
      drop ? cf__future_complete_drop : cf__future_complete;
  void *out = NULL;
  if (fail_message)
    cf__fail_clear();
  int rc = fn(arg, &out);
  if (rc == CF_ECANCELLED && cancel && atomic_load(cancel)) {
    cf__fail_clear();
    cf__future_cancel(f);
    if (drop)
      cf_future_unref(f);
    return;
  }
  if (rc == 0) {
    /* If the future was completed behind our back (the pool broke), the
     * result has no other owner: destroy it. */
    if (complete(f, 0, out, destroy, NULL) != 0) {
      if (destroy)
        destroy(out);
      if (drop)
        cf_future_unref(f);
    }
    return;
  }
  /* A failed task's partial result, if any, is the task's to clean up; we
   * do not guess at it. */
  char *msg = fail_message ? cf__fail_take_message() : NULL;
  if (complete(f, rc, NULL, NULL, msg) != 0) {
    free(msg);
    if (drop)
      cf_future_unref(f);
  }
}

void cf__run_task(cf_future *f, cf_fn fn, void *arg, cf_destroy_fn destroy) {
  run_task(f, fn, arg, destroy, NULL, false);
}

void cf__run_task_cancellable(cf_future *f, cf_fn fn, void *arg,
                              cf_destroy_fn destroy,
                              const _Atomic bool *cancel) {
  run_task(f, fn, arg, destroy, cancel, false);
}

void cf__run_task_drop(cf_future *f, cf_fn fn, void *arg,
                       cf_destroy_fn destroy) {
  run_task(f, fn, arg, destroy, NULL, true);
}

/* ---- dispatch ------------------------------------------------------------ */

int cf_submit_with(cf_executor *ex, cf_fn fn, void *arg,
                   cf_destroy_fn result_destroy, cf_future **out) {
  if (out)
    *out = NULL;
  if (!ex || !fn || !out)
    return CF__FAIL(CF_EINVAL, !ex   ? "NULL executor"
                               : !fn ? "NULL task function"
                                     : "NULL out");
  int rc = ex->vt->submit(ex, fn, arg, result_destroy, out);
  return rc ? cf__fail_submit(__func__, rc) : 0;
}

int cf_submit(cf_executor *ex, cf_fn fn, void *arg, cf_future **out) {
  int rc = cf_submit_with(ex, fn, arg, NULL, out);
  return rc ? cf__fail_retag(__func__, rc) : 0;
}

int cf__fail_submit(const char *call, int rc) {
  switch (rc) {
  case CF_ESHUTDOWN:
    return cf__fail_at(call, rc, "the executor was shut down");
  case CF_EBROKEN:
    return cf__fail_at(call, rc,
                       "the executor is broken (an initializer failed, or "
                       "its workers could not be started)");
  case CF_ENOMEM:
    return cf__fail_at(call, rc, "no memory for the task");
  case CF_EINVAL: /* the executor recorded why (a function the process
                   * pool cannot pass, say) */
    return cf__fail_retag(call, rc);
  default:
    return cf__fail_at(call, rc, NULL);
  }
}

int cf__submit_batch_each(cf_executor *ex, cf_fn fn, const void *items,
                          size_t count, size_t item_size, cf_destroy_fn destroy,
                          cf_future **outs) {
  for (size_t i = 0; i < count; i++) {
    void *item = (char *)items + i * item_size;
    int rc = ex->vt->submit(ex, fn, item, destroy, &outs[i]);
    if (rc != 0) {
      /* All or nothing: cancel what already went in. */
      for (size_t j = 0; j < i; j++) {
        cf_future_cancel(outs[j]);
        cf_future_unref(outs[j]);
        outs[j] = NULL;
      }
      return rc;
    }
  }
  return 0;
}

int cf_executor_shutdown(cf_executor *ex, bool wait, bool cancel_futures) {
  if (!ex)
    return CF__FAIL(CF_EINVAL, "NULL executor");
  int rc = ex->vt->shutdown(ex, wait, cancel_futures);
  if (rc == CF_EDEADLK)
    return CF__FAIL(rc, "wait=true from a task or callback of the same "
                        "executor would wait for itself");
  return rc ? CF__FAIL(rc, NULL) : 0;
}

void cf_executor_free(cf_executor *ex) {
  if (!ex)
    return;
  ex->vt->shutdown(ex, true, false);
  ex->vt->destroy(ex);
}
