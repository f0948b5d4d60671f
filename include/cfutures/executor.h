/* cfutures — executors: one interface, several implementations (the thread
 * pool in thread_pool.h, the process pool in process_pool.h).
 *
 * A task is a function `int fn(void *arg, void **out)`: it returns 0 and
 * sets *out to its result, or returns a non-zero code (usually through
 * cf_fail, which also records a message) and the future fails with it.
 */
#ifndef CFUTURES_EXECUTOR_H
#define CFUTURES_EXECUTOR_H

#include <cfutures/future.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cf_executor cf_executor;

/* A task. `arg` is what was submitted; *out starts NULL. */
typedef int (*cf_fn)(void *arg, void **out);

/* Records a printf-style failure message for the task running on this
 * thread and returns `code`, so a task can `return cf_fail(CF_EINVAL, "bad
 * n=%d", n);`. The message ends up in the task's future
 * (cf_future_exception). Outside a task it only returns `code`. */
CF_API int cf_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Submits fn(arg) and returns a new reference to its future in *out.
 * `result_destroy` (may be NULL) is the destroy function for the task's
 * result, called when the future dies.
 * Returns 0, CF_EINVAL (NULL ex/fn/out), CF_ESHUTDOWN (after
 * cf_executor_shutdown), CF_EBROKEN (a failed initializer broke the pool),
 * CF_ENOMEM. On error *out is NULL and fn never runs. */
CF_API int cf_submit_with(cf_executor *ex, cf_fn fn, void *arg,
                          cf_destroy_fn result_destroy, cf_future **out);

/* cf_submit_with without a result destroy function. */
CF_API int cf_submit(cf_executor *ex, cf_fn fn, void *arg, cf_future **out);

/* Stops accepting work. With cancel_futures, cancels every task not yet
 * started (their futures become CANCELLED and waiters wake). With wait,
 * blocks until every started/remaining task has finished and the workers
 * have exited. Calling it again is allowed (a later wait=true still waits).
 * Returns 0, CF_EINVAL (NULL), CF_EDEADLK (wait=true from one of the
 * executor's own workers). */
CF_API int cf_executor_shutdown(cf_executor *ex, bool wait,
                                bool cancel_futures);

/* Shuts down (wait=true, cancel_futures=false) if not done yet, then frees
 * the executor. Futures stay valid: they are reference counted separately.
 * NULL is a no-op. Must not be called from the executor's own workers,
 * nor while another thread is still inside a call on the executor (a
 * cf_submit that has not returned, even one whose task already ran):
 * like any object, the executor must outlive the calls made on it. */
CF_API void cf_executor_free(cf_executor *ex);

/* ---- map ---------------------------------------------------------------- */

typedef struct cf_map cf_map;

/* Produces the next input of a lazy map: returns 0 and sets *item, CF_EDONE
 * at the end, or another negative code to stop with an error (cf_map_next
 * then returns that code once the earlier items are yielded). Called on
 * the thread that calls cf_map_iter / cf_map_next, never concurrently. */
typedef int (*cf_next_fn)(void *state, void **item);

/* The largest window and chunksize a map accepts (2^24 items). */
#define CF_MAP_MAX_WINDOW ((size_t)1 << 24)

typedef struct cf_map_opts {
  /* When true, the whole map must finish within timeout_s seconds counted
   * from the cf_map_* call; cf_map_next returns CF_ETIMEDOUT after that. */
  bool use_timeout;
  double timeout_s;
  /* Tasks kept in flight for a lazy input (0: 2 x workers, at least 16).
   * cf_map_array submits everything at once unless window is set (or n
   * exceeds CF_MAP_MAX_WINDOW: then that many). At most CF_MAP_MAX_WINDOW,
   * else CF_EINVAL. */
  size_t window;
  /* Items per message for process pools (0 or 1: one per item), for
   * cf_map_array and cf_process_pool_map_bytes; each item keeps its own
   * outcome (see process_pool.h). Ignored by the thread pool and by
   * cf_map_iter. At most CF_MAP_MAX_WINDOW, else CF_EINVAL. */
  size_t chunksize;
  /* Destroy function for each task result (may be NULL). */
  cf_destroy_fn result_destroy;
} cf_map_opts;

/* Maps fn over items[0..n), each item passed as a pointer to its
 * `item_size` bytes (the caller keeps `items` alive until the map is freed).
 * opts may be NULL. Returns 0 and *out, CF_EINVAL (NULL ex/fn/out, NULL
 * items with n > 0, item_size == 0, n * item_size overflowing, NaN
 * timeout, window or chunksize above CF_MAP_MAX_WINDOW), CF_ESHUTDOWN, CF_EBROKEN,
 * CF_ENOMEM. n == 0 is valid: the map yields CF_EDONE at once. */
CF_API int cf_map_array(cf_executor *ex, cf_fn fn, void *items, size_t n,
                        size_t item_size, const cf_map_opts *opts,
                        cf_map **out);

/* Maps fn over the items produced by next(state, &item), keeping at most
 * opts->window tasks in flight so that an unbounded input needs bounded
 * memory. Same errors as cf_map_array. */
CF_API int cf_map_iter(cf_executor *ex, cf_fn fn, cf_next_fn next, void *state,
                       const cf_map_opts *opts, cf_map **out);

/* Waits for the next result in input order and lends it in *out (valid
 * until the next cf_map_next or cf_map_free). Returns 0; CF_EDONE at the
 * end; CF_EFAILED / CF_EBROKEN / CF_ECANCELLED for an item that failed
 * (cf_map_error tells how; the map goes on with the next item);
 * CF_ETIMEDOUT when the map's deadline passed (every later call too); the
 * input's own error code; CF_EINVAL for NULL. One thread at a time. */
CF_API int cf_map_next(cf_map *m, void **out);

/* The outcome of the item last returned by cf_map_next: code 0 for a
 * result, or its failure code and message (borrowed, valid until the next
 * cf_map_next or cf_map_free). Returns CF_EINVAL for NULL arguments,
 * CF_EINVALSTATE before the first item. */
CF_API int cf_map_error(const cf_map *m, cf_error *err);

/* Frees the map, cancelling the tasks still pending and dropping every
 * future it holds. Blocks until the items already running have finished
 * (they may read the input), so the input may be freed once it returns.
 * NULL is a no-op. */
CF_API void cf_map_free(cf_map *m);

#ifdef __cplusplus
}
#endif
#endif
