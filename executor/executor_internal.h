/* Private: the executor interface every pool implements.
 *
 * A pool embeds `struct cf_executor` as its first member and fills in a
 * vtable; the public cf_submit / cf_map_* / cf_executor_shutdown /
 * cf_executor_free calls (executor/executor.c, executor/map.c) validate
 * their arguments and dispatch here.
 */
#ifndef CF_EXECUTOR_INTERNAL_H
#define CF_EXECUTOR_INTERNAL_H

#include <cfutures/executor.h>
#include <cfutures/process_pool.h>
#include <stdatomic.h>

#include "core/sibling.h"
struct cf_executor_vt {
  const char *name; /* "thread_pool", "process_pool" */
  /* Submit one task; arguments already checked non-NULL. On error *out is
   * untouched and fn never runs. */
  int (*submit)(cf_executor *ex, cf_fn fn, void *arg, cf_destroy_fn destroy,
                cf_future **out);
  /* Submit `count` items of a map in one go: item i is the `item_size`
   * bytes at items + i * item_size. Fills outs[0..count) with new references
   * on success; on error no future is returned and no item runs. Pools that
   * can batch (process pools with chunksize) send one message per call. */
  int (*submit_batch)(cf_executor *ex, cf_fn fn, const void *items,
                      size_t count, size_t item_size, cf_destroy_fn destroy,
                      cf_future **outs);
  /* submit_batch for byte tasks: item i's bytes go to fn(item, item_size,
   * &buf), and its future's result is a cf_buf * the future owns. NULL in
   * pools without byte tasks (all but process pools). */
  int (*submit_batch_bytes)(cf_executor *ex, cf_proc_fn fn, const void *items,
                            size_t count, size_t item_size, cf_future **outs);
  int (*shutdown)(cf_executor *ex, bool wait, bool cancel_futures);
  void (*destroy)(cf_executor *ex); /* after shutdown(wait=true) */
  /* Default map window for lazy inputs. */
  size_t (*default_window)(const cf_executor *ex);
};

struct cf_executor {
  const struct cf_executor_vt *vt;
};

/* cf_map_array for byte tasks (the machinery of executor/map.c, items sent
 * through submit_batch_bytes): the map behind cf_process_pool_map_bytes,
 * which has checked that ex, if not NULL, has byte tasks. `call` names the
 * public call in errors. */
CF__SIBLING int cf__map_array_bytes(const char *call, cf_executor *ex,
                                    cf_proc_fn fn, const void *items,
                                    size_t n, size_t item_size,
                                    const cf_map_opts *opts, cf_map **out);

/* Runs a task the way every pool does: clears the thread's cf_fail message,
 * calls fn(arg, &out), then completes `f` (already RUNNING) with the result
 * or with the failure code and recorded message. */
void cf__run_task(cf_future *f, cf_fn fn, void *arg, cf_destroy_fn destroy);
/* cf__run_task for a task that can be cancelled while it runs: when *cancel
 * is set and the task returns CF_ECANCELLED, its future becomes CANCELLED. */
void cf__run_task_cancellable(cf_future *f, cf_fn fn, void *arg,
                              cf_destroy_fn destroy, const _Atomic bool *cancel);

/* Records why a submit failed (rc: CF_ESHUTDOWN, CF_EBROKEN, CF_ENOMEM...)
 * as the last error of `call`; returns rc. */
CF__SIBLING int cf__fail_submit(const char *call, int rc);

/* Generic submit_batch for pools without batching: one submit per item
 * (item pointer = items + i * item_size). */
int cf__submit_batch_each(cf_executor *ex, cf_fn fn, const void *items,
                          size_t count, size_t item_size, cf_destroy_fn destroy,
                          cf_future **outs);

/* The message recorded by cf_fail on this thread since the last clear (NULL
 * if none); the caller takes ownership (free with free()). */
CF__SIBLING char *cf__fail_take_message(void);
CF__SIBLING void cf__fail_clear(void);

#endif
