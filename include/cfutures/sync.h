/* cfutures — synchronization primitives, for threads or for processes.
 *
 * Every primitive comes in two flavours chosen at creation with `shared`:
 *   false  for the threads of one process;
 *   true   process-shared: the object lives in MAP_SHARED memory, so
 *          processes forked after its creation share it (create it before
 *          fork(); a process pool's workers only with CF_START_FORK). Free it in the creating process once the others are
 *          done with it; cf_*_free in another process only unmaps its view.
 * The Python names are kept: Lock, RLock, Semaphore, BoundedSemaphore,
 * Event, Condition, Barrier, Timer, and Thread (threads only). Every blocking
 * call takes a timeout in seconds (CF_FOREVER, i.e. +infinity: forever; 0 or
 * negative: try once; NaN: CF_EINVAL); none busy-waits. Locks are robust: if a
 * holder dies (its thread exits or its process is killed), the next acquirer
 * gets the lock and CF_EOWNERDEAD instead of hanging forever.
 */
#ifndef CFUTURES_SYNC_H
#define CFUTURES_SYNC_H

#include <cfutures/common.h>
#include <cfutures/executor.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Lock ---------------------------------------------------------------- */

typedef struct cf_lock cf_lock;

/* Creates an unlocked lock. Returns 0, CF_EINVAL (NULL out), CF_ENOMEM,
 * CF_ESYS. */
CF_API int cf_lock_new(bool shared, cf_lock **out);
/* Acquires, waiting up to timeout_s. Returns 0; CF_EOWNERDEAD (acquired,
 * but the previous holder died holding it: whatever it protected may be
 * half-updated); CF_ETIMEDOUT; CF_EDEADLK (the caller already holds it);
 * CF_EINVAL (NULL, NaN). */
CF_API int cf_lock_acquire(cf_lock *l, double timeout_s);
/* Releases a lock the calling thread holds: 0, or CF_EPERM if it does not
 * hold it, CF_EINVAL for NULL. Unlike Python, only the holder may release. */
CF_API int cf_lock_release(cf_lock *l);
/* Whether some thread holds the lock now (a snapshot). */
CF_API bool cf_lock_locked(cf_lock *l);
/* Frees an unlocked lock; NULL is a no-op. */
CF_API void cf_lock_free(cf_lock *l);

/* ---- RLock: a lock its holder may take again ------------------------------
 */

typedef struct cf_rlock cf_rlock;

CF_API int cf_rlock_new(bool shared, cf_rlock **out);
/* Acquires (again, if the caller holds it). Returns 0, CF_EOWNERDEAD,
 * CF_ETIMEDOUT, CF_EINVAL. */
CF_API int cf_rlock_acquire(cf_rlock *l, double timeout_s);
/* Releases one level: 0, or CF_EPERM when the caller does not hold it. */
CF_API int cf_rlock_release(cf_rlock *l);
CF_API void cf_rlock_free(cf_rlock *l);

/* ---- Semaphore and BoundedSemaphore ---------------------------------------
 */

typedef struct cf_sem cf_sem;

/* A counting semaphore starting at `value`. Returns 0, CF_EINVAL, CF_ENOMEM,
 * CF_ESYS. */
CF_API int cf_sem_new(bool shared, unsigned value, cf_sem **out);
/* A semaphore that may never be released above its initial value. */
CF_API int cf_bounded_sem_new(bool shared, unsigned value, cf_sem **out);
/* Takes one unit, waiting up to timeout_s: 0, CF_ETIMEDOUT, CF_EINVAL. */
CF_API int cf_sem_acquire(cf_sem *s, double timeout_s);
/* Gives back n units (n >= 1) and wakes up to n waiters: 0; CF_EINVAL for
 * NULL or n == 0; CF_EINVALSTATE when a bounded semaphore would go above
 * its initial value (nothing is released then). */
CF_API int cf_sem_release(cf_sem *s, unsigned n);
/* The current value (a snapshot). */
CF_API unsigned cf_sem_value(cf_sem *s);
CF_API void cf_sem_free(cf_sem *s);

/* ---- Event ----------------------------------------------------------------
 */

typedef struct cf_event cf_event;

CF_API int cf_event_new(bool shared, cf_event **out);
/* Sets the flag and wakes every waiter: each thread waiting at that moment
 * returns 0, even if cf_event_clear follows at once (as in Python). */
CF_API int cf_event_set(cf_event *e);
CF_API int cf_event_clear(cf_event *e);
CF_API bool cf_event_is_set(cf_event *e);
/* Waits until the flag is set, or until a cf_event_set after the call
 * began: 0, CF_ETIMEDOUT, CF_EINVAL. */
CF_API int cf_event_wait(cf_event *e, double timeout_s);
CF_API void cf_event_free(cf_event *e);

/* ---- Condition ------------------------------------------------------------
 */

typedef struct cf_cond cf_cond;

/* A condition variable over `lock` (borrowed: it must outlive the
 * condition, and have the same `shared` flavour), or over a lock of its
 * own when lock is NULL. Returns 0, CF_EINVAL, CF_ENOMEM, CF_ESYS. */
CF_API int cf_cond_new(bool shared, cf_lock *lock, cf_cond **out);
/* The condition's lock, for cf_lock_acquire / cf_lock_release. */
CF_API cf_lock *cf_cond_lock(cf_cond *c);
/* With the lock held: releases it, waits for a notify or the timeout, and
 * takes it back. Returns 0 (notified, or spuriously woken), CF_ETIMEDOUT,
 * CF_EPERM (the caller does not hold the lock), CF_EINVAL. */
CF_API int cf_cond_wait(cf_cond *c, double timeout_s);
/* With the lock held: waits until pred(arg) is true, re-checking after each
 * wake-up, for at most timeout_s in all. Returns 0 (pred is true),
 * CF_ETIMEDOUT (it is still false), CF_EPERM, CF_EINVAL. */
CF_API int cf_cond_wait_for(cf_cond *c, bool (*pred)(void *arg), void *arg,
                            double timeout_s);
/* With the lock held: wakes up to n waiters / all of them. 0, CF_EPERM,
 * CF_EINVAL. */
CF_API int cf_cond_notify(cf_cond *c, unsigned n);
CF_API int cf_cond_notify_all(cf_cond *c);
CF_API void cf_cond_free(cf_cond *c);

/* ---- Barrier --------------------------------------------------------------
 */

typedef struct cf_barrier cf_barrier;

/* A barrier for `parties` (>= 1) threads or processes. */
CF_API int cf_barrier_new(bool shared, unsigned parties, cf_barrier **out);
/* Waits until `parties` callers have arrived; *index (may be NULL) gets a
 * distinct arrival index in 0..parties-1. Returns 0; CF_ETIMEDOUT (this
 * caller timed out: the barrier is now broken); CF_EBROKEN (the barrier is
 * or became broken: aborted, or another waiter timed out); CF_EINVAL. */
CF_API int cf_barrier_wait(cf_barrier *b, double timeout_s, unsigned *index);
/* Breaks the barrier: current and future waiters get CF_EBROKEN. */
CF_API int cf_barrier_abort(cf_barrier *b);
/* Back to empty and unbroken; current waiters get CF_EBROKEN. */
CF_API int cf_barrier_reset(cf_barrier *b);
CF_API bool cf_barrier_broken(cf_barrier *b);
CF_API unsigned cf_barrier_parties(cf_barrier *b);
CF_API void cf_barrier_free(cf_barrier *b);

/* ---- Timer (threads only)
 * ---------------------------------------------------- */

typedef struct cf_timer cf_timer;

/* Runs fn(arg) on a thread of its own after delay_s seconds, unless
 * cancelled first. A non-zero return from fn is reported through the report
 * handler. Returns 0, CF_EINVAL (NULL, negative or NaN delay), CF_ENOMEM,
 * CF_ESYS. */
CF_API int cf_timer_start(double delay_s, int (*fn)(void *arg), void *arg,
                          cf_timer **out);
/* Cancels the timer: returns true if fn will not run (it had not started),
 * false if it already ran or is running. */
CF_API bool cf_timer_cancel(cf_timer *t);
/* Waits up to timeout_s for the timer's thread to end: after fn ran (and
 * returned) or the timer was cancelled, as Python's Timer.join. Several
 * threads may join at once; joining again returns 0 at once. Returns 0;
 * CF_ETIMEDOUT; CF_EINVAL (NULL t, NaN timeout); CF_EDEADLK when called
 * from the timer's own function (it would wait for itself). */
CF_API int cf_timer_join(cf_timer *t, double timeout_s);
/* Waits for the timer's thread to end (after fn ran or the timer was
 * cancelled) and frees it. NULL is a no-op. */
CF_API void cf_timer_free(cf_timer *t);

/* ---- Thread ---------------------------------------------------------------
 * A thread running a task function `int fn(void *arg, void **out)` (cf_fn,
 * as submitted to executors), whose outcome is a future: 0 and *out is
 * its result; non-zero (best through cf_fail, which adds a message) is
 * its failure, read with cf_future_exception. Threads of the calling
 * process only. fn must return: a thread ended by pthread_exit or
 * pthread_cancel never finishes its future, and its joiners wait for
 * ever. The future's done-callbacks run on the thread itself, as fn
 * returns.
 */

typedef struct cf_thread cf_thread;

/* Options for cf_thread_start; a zeroed struct (or NULL) gives the
 * defaults. */
typedef struct cf_thread_opts {
  /* The thread's name, copied; NULL: "Thread-N", N counting from 1, as
   * Python. The system name (pthread_setname_np: ps, top, gdb) is its
   * first 15 bytes; cf_thread_name gives it whole. */
  const char *name;
  /* Destroys fn's result when the thread's future dies (may be NULL). */
  cf_destroy_fn result_destroy;
} cf_thread_opts;

/* Starts a thread running fn(arg, &out) and returns once it runs (as
 * Python's start, so ident and native_id are known). *out is the thread,
 * owned by the caller until cf_thread_free. Returns 0; CF_EINVAL (NULL fn
 * or out); CF_ENOMEM; CF_ESYS (pthread_create failed). On error *out is
 * NULL and fn never runs. */
CF_API int cf_thread_start(cf_fn fn, void *arg, const cf_thread_opts *opts,
                           cf_thread **out);

/* Waits up to timeout_s (CF_FOREVER: as long as it takes; 0 or negative:
 * only look) for the thread to end, then releases it (pthread_join). Any
 * number of threads may join one thread at once; joining again returns 0
 * at once. Returns 0; CF_ETIMEDOUT; CF_EINVAL (NULL t, NaN timeout);
 * CF_EDEADLK when t is the calling thread (Python's "cannot join current
 * thread"). How fn ended is in cf_thread_future. */
CF_API int cf_thread_join(cf_thread *t, double timeout_s);

/* True from cf_thread_start until fn has returned; false for NULL. */
CF_API bool cf_thread_is_alive(cf_thread *t);

/* The thread's future, finished when fn returns: cf_future_result gives
 * its result (CF_EFAILED if it failed), cf_future_exception its failure
 * code and the cf_fail message. Borrowed from t (valid until
 * cf_thread_free; take a cf_future_ref to keep it longer); cancelling it
 * does nothing (the thread is already running). NULL for NULL. */
CF_API cf_future *cf_thread_future(cf_thread *t);

/* The name (borrowed from t, valid until cf_thread_free); NULL for NULL. */
CF_API const char *cf_thread_name(const cf_thread *t);
/* Python's ident (the pthread_t as a number) and native_id (the kernel's
 * thread id, gettid); 0 for NULL. */
CF_API unsigned long cf_thread_ident(const cf_thread *t);
CF_API pid_t cf_thread_native_id(const cf_thread *t);

/* Frees t. A thread that has not ended yet is detached: it runs on, and
 * its resources are released when it ends (as a Python Thread nobody
 * joins; the process may still exit under it). Its future is freed with
 * it unless the caller took a reference. Call it once, after every other
 * call on t has returned. NULL is a no-op. */
CF_API void cf_thread_free(cf_thread *t);

#ifdef __cplusplus
}
#endif
#endif
