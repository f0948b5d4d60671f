/* cfutures — the work-stealing thread pool executor.
 *
 * Each worker owns a Chase-Lev deque; tasks submitted from outside the pool
 * go through a lock-free injection queue, tasks submitted from a worker go
 * to its own deque, idle workers steal. A worker that waits on a future
 * (cf_future_result, cf_wait, cf_as_completed_next, cf_map_next) runs other
 * tasks meanwhile, so nested parallelism never deadlocks for lack of
 * threads. Done-callbacks of the pool's futures run on the worker that
 * finished the task.
 */
#ifndef CFUTURES_THREAD_POOL_H
#define CFUTURES_THREAD_POOL_H

#include <cfutures/executor.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cf_thread_pool_opts {
  /* Number of worker threads; 0 means the number of online CPUs. At most
   * 1024 (more is CF_EINVAL). */
  size_t max_workers;
  /* Workers are named "<prefix>-<i>" (truncated to 15 bytes, as Linux
   * allows); NULL means "cf-worker". */
  const char *thread_name_prefix;
  /* Runs once on each worker before it takes tasks. A non-zero return breaks
   * the pool: pending and later futures fail with CF_EBROKEN and submit
   * returns CF_EBROKEN. May be NULL. */
  int (*initializer)(void *arg);
  void *initarg;
} cf_thread_pool_opts;

/* Creates a thread pool (opts may be NULL for the defaults) and returns it in
 * *out. Returns 0, CF_EINVAL (NULL out, too many workers), CF_ENOMEM,
 * CF_ESYS (a thread could not be created). Free it with cf_executor_free. */
CF_API int cf_thread_pool_new(const cf_thread_pool_opts *opts,
                              cf_executor **out);

/* The number of workers of a thread pool; 0 for NULL or another executor. */
CF_API size_t cf_thread_pool_size(const cf_executor *ex);

#ifdef __cplusplus
}
#endif
#endif
