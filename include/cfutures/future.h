/* cfutures — futures: the result of an asynchronous computation.
 *
 * A future goes PENDING -> RUNNING -> FINISHED, or PENDING -> CANCELLED.
 * FINISHED futures either hold a result (a void *) or an exception (a
 * non-zero code and a message). Python's concurrent.futures.Future is the
 * reference for every behaviour here.
 *
 * Ownership: futures are reference counted. Whoever receives a cf_future *
 * from a call documented as "returns a new reference" (cf_future_new,
 * cf_submit, ...) owns one reference and must drop it with
 * cf_future_unref(). Calls that take a future borrow the caller's
 * reference for the duration of the call. A result value belongs to the
 * future: cf_future_result() lends it, valid until the last reference is
 * dropped, at which point the future calls the destroy function given at
 * completion (if any) on it.
 *
 * Thread safety: every call may be made from any thread, concurrently.
 */
#ifndef CFUTURES_FUTURE_H
#define CFUTURES_FUTURE_H

#include <cfutures/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cf_future cf_future;

typedef enum cf_future_state {
  CF_PENDING = 0,
  CF_RUNNING = 1,
  CF_CANCELLED = 2,
  CF_FINISHED = 3,
} cf_future_state;

/* Frees a result value when its future dies unread-or-read. */
typedef void (*cf_destroy_fn)(void *value);

/* A done-callback: called once with the future when it is finished or
 * cancelled. Return 0; a non-zero return is reported through the report
 * handler (cf_set_report_handler) and does not stop other callbacks. */
typedef int (*cf_done_fn)(cf_future *f, void *arg);

/* ---- lifetime ----------------------------------------------------------- */

/* Creates a PENDING future with no executor behind it, for code that
 * completes futures itself (the "promise" side). Returns a new reference,
 * or NULL when out of memory. */
CF_API cf_future *cf_future_new(void);

/* Adds a reference and returns `f`. NULL is passed through. */
CF_API cf_future *cf_future_ref(cf_future *f);

/* Drops a reference; the last one frees the future and destroys its result.
 * NULL is a no-op. Dropping a reference never cancels the work behind it.
 * Using a future after its last reference is gone (a double unref too) is
 * undefined; run with CFUTURES_DEBUG=1 in the environment to have every
 * future call report it and abort (docs/building.md). */
CF_API void cf_future_unref(cf_future *f);

/* ---- consumer side ------------------------------------------------------ */

/* Waits up to `timeout_s` (see CF_FOREVER in common.h) for `f` to finish.
 * Returns 0 and lends the result in *out (out may be NULL);
 * CF_ETIMEDOUT if not done in time; CF_ECANCELLED if cancelled;
 * CF_EFAILED if the task failed (cf_future_exception tells how);
 * CF_EBROKEN if the executor broke before the task finished;
 * CF_EINVAL for a NULL future or a NaN timeout.
 * Called on a thread-pool worker, it runs other tasks while it waits. */
CF_API int cf_future_result(cf_future *f, double timeout_s, void **out);

/* Waits like cf_future_result, then describes how the future ended:
 * returns 0 with err->code == 0 when it holds a result, or err->code set to
 * the failure code (and err->message to its text, borrowed from the future,
 * never NULL) when it failed or the executor broke. Returns CF_ETIMEDOUT,
 * CF_ECANCELLED or CF_EINVAL (NULL f or err, NaN timeout) otherwise. */
CF_API int cf_future_exception(cf_future *f, double timeout_s, cf_error *err);

/* Cancels `f` if it is still PENDING and returns true (or true if it was
 * already cancelled); returns false if it is running or finished, or NULL.
 * Cancelling wakes every waiter and runs the done-callbacks. */
CF_API bool cf_future_cancel(cf_future *f);

CF_API bool cf_future_cancelled(const cf_future *f);
CF_API bool cf_future_running(const cf_future *f);
/* True once FINISHED or CANCELLED. */
CF_API bool cf_future_done(const cf_future *f);
/* The current state; CF_PENDING for NULL. */
CF_API cf_future_state cf_future_state_of(const cf_future *f);

/* Registers `fn(f, arg)` to run once when `f` is done. If `f` is already
 * done, runs it at once on the calling thread before returning. Otherwise it
 * runs on the thread that completes or cancels `f` (a pool worker for
 * submitted tasks), with no cfutures lock held, in registration order.
 * Returns 0 (fn will run exactly once), CF_EINVAL (NULL f or fn: fn never
 * runs), CF_ENOMEM (fn never runs). */
CF_API int cf_future_add_done_callback(cf_future *f, cf_done_fn fn, void *arg);

/* A descriptor that becomes readable once `f` is done, for code that waits
 * in a loop of its own (poll, epoll, libuv, GLib) instead of a thread per
 * wait. It is an eventfd (close-on-exec, non-blocking): readable, and
 * read() gives a count of 1, from the moment f is done (at once if it
 * already is); it never becomes readable otherwise. The caller owns it and
 * closes it whenever it likes; cfutures keeps a duplicate of its own until
 * f is done (or freed while still pending: then it is closed). Returns 0 and *fd, CF_EINVAL (NULL f or fd), CF_ENOMEM,
 * CF_ESYS (no descriptor: see errno). */
CF_API int cf_future_pollfd(cf_future *f, int *fd);

/* ---- producer (promise) side -------------------------------------------
 * For futures made by cf_future_new only: on a future returned by an
 * executor these return CF_EPERM (the executor alone drives it). The caller
 * must hold a reference to `f`. */

/* Marks a PENDING future RUNNING and returns 0, or, if it was cancelled,
 * returns CF_ECANCELLED (waiters were already notified). Any other state:
 * CF_EINVALSTATE. NULL: CF_EINVAL. */
CF_API int cf_future_set_running_or_notify_cancel(cf_future *f);

/* Completes `f` (PENDING or RUNNING) with `value`. `destroy` (may be NULL)
 * is called on value when the future dies; from now on the future owns
 * value. Returns 0, CF_EINVALSTATE if `f` is already finished or cancelled
 * (value is left to the caller), CF_EINVAL for NULL. */
CF_API int cf_future_set_result(cf_future *f, void *value,
                                cf_destroy_fn destroy);

/* Completes `f` with failure `code` (non-zero; CF_EINVAL otherwise) and a
 * printf-style message (NULL fmt: the code's cf_strerror text). The message
 * is copied. Returns 0, CF_EINVALSTATE, CF_EINVAL or CF_ENOMEM (then the
 * future is still completed, with the code's default message). */
CF_API int cf_future_set_exception(cf_future *f, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- waiting on many futures ------------------------------------------- */

typedef enum cf_return_when {
  CF_FIRST_COMPLETED = 0,
  CF_FIRST_EXCEPTION = 1, /* a failed future, or all done */
  CF_ALL_COMPLETED = 2,
} cf_return_when;

/* Waits until `when` holds for fs[0..n) or the timeout passes. On return
 * done[i] (if done is not NULL) says whether fs[i] is done. As in Python,
 * n == 0 returns 0 at once (fs may then be NULL), and a future listed more
 * than once counts once. Returns 0 when the condition holds, CF_ETIMEDOUT
 * when time ran out first (cf_last_error says how many were unfinished),
 * CF_EINVAL for NULL fs with n > 0, a NULL entry, a NaN timeout or an
 * unknown `when`, CF_ENOMEM. "Exception" means failed (CF_EFAILED or
 * CF_EBROKEN), not cancelled, as in Python. Borrows the futures. */
CF_API int cf_wait(cf_future *const *fs, size_t n, double timeout_s,
                   cf_return_when when, bool *done);

/* An iterator that yields futures as they complete. */
typedef struct cf_as_completed cf_as_completed;

/* Creates an iterator over fs[0..n) that yields each distinct future once
 * (one listed twice is yielded once), in completion order (those already
 * done first); with n == 0 (fs may be NULL) it ends at once. The timeout
 * counts from this call. It takes its own reference on each future.
 * Returns 0 and *out, or CF_EINVAL (NULL out, NULL fs with n > 0, NULL
 * entry, NaN timeout), CF_ENOMEM. */
CF_API int cf_as_completed_new(cf_future *const *fs, size_t n, double timeout_s,
                               cf_as_completed **out);

/* Blocks until the next future completes and lends it in *out (valid while
 * the iterator lives). Returns 0, CF_EDONE once every future was yielded,
 * CF_ETIMEDOUT once the deadline passed with futures still pending (and on
 * every later call), CF_EINVAL for NULL arguments. Call from one thread at
 * a time. */
CF_API int cf_as_completed_next(cf_as_completed *it, cf_future **out);

/* How many of the iterator's futures are not done yet: after CF_ETIMEDOUT,
 * the N of Python's "N (of M) futures unfinished" (cf_last_error says it
 * too). 0 for NULL. */
CF_API size_t cf_as_completed_unfinished(const cf_as_completed *it);

/* Frees the iterator and drops its references. NULL is a no-op. */
CF_API void cf_as_completed_free(cf_as_completed *it);

#ifdef __cplusplus
}
#endif
#endif
