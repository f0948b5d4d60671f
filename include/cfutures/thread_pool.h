/* cfutures — the work-stealing thread pool executor.
 *
 * Each worker owns a Chase-Lev deque; tasks submitted from outside the pool
 * go through a lock-free injection queue, tasks submitted from a worker go
 * to its own deque, idle workers steal.
 *
 * Tasks run on fibers (small stacks of their own, see stack_size). A task
 * that waits on a future (cf_future_result, cf_wait, cf_as_completed_next,
 * cf_map_next) runs the awaited task itself when that has not started yet,
 * and otherwise is suspended while its worker goes on with other tasks: a
 * wait inside a task never deadlocks for lack of threads, never grows the
 * worker's stack, and its timeout is kept while a worker is free. A
 * suspended task may resume on ANOTHER worker thread of the same pool:
 * do not hold a thread-owned resource across such a wait (a mutex or
 * cf_lock taken before it and released after it, a pointer to a
 * thread-local variable); errno and other thread-locals read after the
 * wait are the new thread's. Blocking calls other than these waits (the
 * sync toolbox, I/O) block the worker thread as they would anywhere.
 *
 * Done-callbacks of the pool's futures run on the worker that finished the
 * task, after every waiter of the future has been woken.
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
  /* Stack size of the fibers tasks run on, in bytes (rounded up to whole
   * pages); 0 means 256 KiB. From 16 KiB to 1 GiB (else CF_EINVAL). Pages
   * cost memory only once touched; a page below each stack is a guard, so
   * overflowing it crashes instead of corrupting memory. A task that needs
   * a deeper stack than this (large local arrays, deep recursion) needs a
   * bigger value. */
  size_t stack_size;
} cf_thread_pool_opts;

/* Creates a thread pool (opts may be NULL for the defaults) and returns it in
 * *out. Returns 0, CF_EINVAL (NULL out, too many workers, stack_size out
 * of range), CF_ENOMEM,
 * CF_ESYS (a thread could not be created). Free it with cf_executor_free. */
CF_API int cf_thread_pool_new(const cf_thread_pool_opts *opts,
                              cf_executor **out);

/* The number of workers of a thread pool; 0 for NULL or another executor. */
CF_API size_t cf_thread_pool_size(const cf_executor *ex);

#ifdef __cplusplus
}
#endif
#endif
