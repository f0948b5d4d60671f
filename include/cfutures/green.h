/* cfutures — green tasks: greenlets, and an event loop that runs tasks on
 * fibers (gevent's hub, asyncio's loop), joined to the futures.
 *
 * Greenlets (Python's greenlet) are fibers switched by hand: a greenlet
 * runs until it switches to another one explicitly, passing a value. They
 * belong to the thread that created them.
 *
 * A loop (cf_loop) runs green tasks on one thread, on libuv. A green task
 * is a function spawned on the loop; it gets a cf_future like a pool task.
 * When a green task waits (cf_future_result, cf_wait, cf_as_completed_next,
 * cf_map_next, cf_green_sleep, cf_green_yield), only the task is suspended:
 * the loop runs its other tasks meanwhile, and the completion of the
 * future, by any thread (a thread pool, a process pool, another green
 * task), makes the task runnable again. The sync toolbox (locks, queues)
 * and plain blocking calls (read, sleep) block the loop's whole thread, as
 * they would under gevent without monkey-patching.
 *
 * Thread-pool tasks run on fibers too (M:N): in a pool task, cf_green_sleep,
 * cf_green_wait_fd and the green I/O calls suspend the task, and the
 * pool's workers run other tasks meanwhile.
 *
 * See docs/green.md for the model and the Python names.
 */
#ifndef CFUTURES_GREEN_H
#define CFUTURES_GREEN_H

#include <cfutures/executor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- greenlets ----------------------------------------------------------- */

typedef struct cf_greenlet cf_greenlet;

/* A greenlet's function: `arg` is the value passed by the switch that
 * started it. It returns 0 and sets *out (the value its parent's switch
 * returns), or fails with a CF_E* code (use cf_fail for a message), which
 * its parent's switch returns. */
typedef int (*cf_greenlet_fn)(void *arg, void **out);

/* Default and bounds of a greenlet's or green task's stack, in bytes. */
#define CF_GREEN_STACK_DEFAULT ((size_t)64 * 1024)
#define CF_GREEN_STACK_MIN ((size_t)16 * 1024)
#define CF_GREEN_STACK_MAX ((size_t)1024 * 1024 * 1024)

/* Creates a greenlet that will run fn on a stack of its own (stack_size 0:
 * CF_GREEN_STACK_DEFAULT; mapped at the first switch, with a guard page
 * below it, and pooled after it ends). Its parent, where control goes when
 * fn returns, is `parent`, or the calling thread's current greenlet when
 * NULL. The greenlet belongs to the calling thread. Returns 0 and *out,
 * CF_EINVAL (NULL fn or out, stack_size out of range, a parent of another
 * thread), CF_ENOMEM. */
CF_API int cf_greenlet_new(cf_greenlet_fn fn, cf_greenlet *parent,
                           size_t stack_size, cf_greenlet **out);

/* Switches to g, passing `value` (the argument of g's function if g has not
 * started, else what g's own pending switch returns). Returns when some
 * greenlet switches back to the caller: 0 with its value in *out (out may be
 * NULL), or, when the greenlet that came back is a child whose function
 * failed, that failure's code (cf_last_error has its message). Switching
 * to the current greenlet returns `value` at once. Errors: CF_EINVAL (NULL
 * g), CF_EINVALSTATE (g has finished), CF_EPERM (g belongs to another
 * thread), CF_ENOMEM (no stack for g). */
CF_API int cf_greenlet_switch(cf_greenlet *g, void *value, void **out);

/* The greenlet running on the calling thread: its "main" greenlet (the
 * thread's own stack, created on first use) when no other runs. NULL only
 * when out of memory. */
CF_API cf_greenlet *cf_greenlet_current(void);

/* The parent of g (NULL for a main greenlet or NULL g). */
CF_API cf_greenlet *cf_greenlet_parent(const cf_greenlet *g);

/* True once g's function has returned. */
CF_API bool cf_greenlet_dead(const cf_greenlet *g);

/* True once g has been switched to (and until it ends). */
CF_API bool cf_greenlet_started(const cf_greenlet *g);

/* For a greenlet that ended: its failure in *err (code 0 and message NULL
 * when it returned 0), lent until cf_greenlet_free. CF_EINVAL (NULL
 * argument), CF_EINVALSTATE (not dead). */
CF_API int cf_greenlet_error(const cf_greenlet *g, cf_error *err);

/* Frees a greenlet that has ended or never started (NULL: no-op, 0).
 * CF_EBUSY for one suspended in the middle of its function (its frames
 * would be lost: switch into it until it returns), CF_EINVAL for a main
 * greenlet or the current one, CF_EPERM from another thread. */
CF_API int cf_greenlet_free(cf_greenlet *g);

/* ---- the loop ------------------------------------------------------------ */

typedef struct cf_loop cf_loop;

typedef struct cf_loop_opts {
  /* Stack size of each green task: 0 means CF_GREEN_STACK_DEFAULT; from
   * CF_GREEN_STACK_MIN to CF_GREEN_STACK_MAX, else CF_EINVAL. */
  size_t stack_size;
} cf_loop_opts;

/* Creates a loop owned by the calling thread: only that thread runs it
 * (cf_loop_run*, cf_loop_free). opts may be NULL. Returns 0 and *out,
 * CF_EINVAL, CF_ENOMEM, CF_ESYS (libuv could not start). */
CF_API int cf_loop_new(const cf_loop_opts *opts, cf_loop **out);

/* Spawns fn(arg) as a green task on loop l and returns a new reference to
 * its future in *out; it starts when the loop runs, in spawn order. Any
 * thread may spawn, also from inside a green task or a pool task. Returns
 * 0, CF_EINVAL (NULL l, fn or out), CF_ESHUTDOWN (the loop is being
 * freed), CF_ENOMEM. */
CF_API int cf_loop_spawn(cf_loop *l, cf_fn fn, void *arg, cf_future **out);

/* cf_loop_spawn, started no earlier than delay_s seconds from now
 * (eventlet's spawn_after). CF_EINVAL also for a NaN or negative delay. */
CF_API int cf_loop_spawn_after(cf_loop *l, double delay_s, cf_fn fn, void *arg,
                               cf_future **out);

/* Runs the loop on the calling thread (its owner) until f is done or the
 * timeout passes (asyncio's run_until_complete); f may be any future (a
 * green task's, a pool's, a promise). Returns 0 once f is done,
 * CF_ETIMEDOUT, CF_EINVAL (NULL, NaN timeout), CF_EPERM (not the owner
 * thread), CF_EDEADLK (called from inside a green task). */
CF_API int cf_loop_run_until_complete(cf_loop *l, cf_future *f,
                                      double timeout_s);

/* Runs the loop until no green task is left (gevent's joinall over
 * everything spawned) or the timeout passes. Same returns. */
CF_API int cf_loop_run(cf_loop *l, double timeout_s);

/* How many green tasks of l have not ended (spawned, running or
 * suspended). */
CF_API size_t cf_loop_tasks(const cf_loop *l);

/* Frees the loop. Tasks that have not started are cancelled; tasks
 * suspended in a wait are cancelled as by cf_green_cancel and run until
 * they return. Then libuv is closed. Spawns by other threads racing with
 * it get CF_ESHUTDOWN; once it has returned the loop is gone, so those
 * threads must be done with it (as with any freed object). Returns 0, CF_EPERM (not the owner
 * thread), CF_EDEADLK (from a green task); NULL: 0. */
CF_API int cf_loop_free(cf_loop *l);

/* ---- the green pool (eventlet's GreenPool) --------------------------------- */

#define CF_GREEN_POOL_MAX ((size_t)1 << 20)

/* Creates an executor whose tasks run as green tasks on loop l, at most
 * `size` at a time (1..CF_GREEN_POOL_MAX); the others wait in submission
 * order. Everything an executor does works on it: cf_submit (eventlet's
 * spawn; its future is the task's), cf_map_array / cf_map_iter (imap: in
 * input order, at most `window` in flight), cf_executor_shutdown and
 * cf_executor_free (which wait for the running tasks: on the loop's owner
 * thread they run the loop to do so, in a green task they suspend it).
 * Any thread may submit; the tasks run on the loop's thread when it runs.
 * Free the pool before its loop. Returns 0, CF_EINVAL, CF_ENOMEM. */
CF_API int cf_green_pool_new(cf_loop *l, size_t size, cf_executor **out);

/* Waits until the pool has nothing queued or running (eventlet's waitall),
 * running the loop when called from its owner thread. Returns 0,
 * CF_ETIMEDOUT, CF_EINVAL (not a green pool, NaN), CF_EDEADLK (from one of
 * the pool's own tasks). */
CF_API int cf_green_pool_waitall(cf_executor *ex, double timeout_s);

/* How many of the pool's tasks are running (started, not ended) now. */
CF_API size_t cf_green_pool_running(const cf_executor *ex);

/* ---- inside a green task -------------------------------------------------- */

/* The loop running the calling green task; NULL outside green tasks. */
CF_API cf_loop *cf_loop_current(void);

/* Suspends the calling green task for `seconds` while the loop goes on
 * (gevent.sleep, asyncio.sleep). In a thread-pool task it suspends the
 * task, and its worker runs other tasks meanwhile (M:N, see docs/green.md);
 * elsewhere it sleeps the thread. CF_FOREVER sleeps for ever. Returns 0,
 * CF_EINVAL (NaN or negative), CF_ECANCELLED (the green task was
 * cancelled: it should return). */
CF_API int cf_green_sleep(double seconds);

/* Events for cf_green_wait_fd. */
#define CF_GREEN_READ 1
#define CF_GREEN_WRITE 2

/* Waits until descriptor fd is ready for `events` (CF_GREEN_READ and/or
 * CF_GREEN_WRITE; an error or hang-up counts as ready: the next read or
 * write says what happened). In a green task it suspends only the task
 * (the loop polls the descriptor with epoll). In a thread-pool task it
 * suspends only the task too: the process's poller thread watches fd and
 * the task resumes on any worker of its pool (M:N, as Go's netpoller; a
 * regular file is ready at once). Elsewhere it is poll(2). At most one
 * green task of a loop may wait to read, and one to write, per descriptor
 * (pool tasks have no such limit). A descriptor may be closed and its
 * number reused without telling the loop, as long as no task waits on it
 * then; one closed while a task waits on it is not noticed (the wait ends
 * at its timeout).
 * Returns 0, CF_ETIMEDOUT, CF_ECANCELLED (the green task was cancelled),
 * CF_EBUSY (another green task already waits for that event on fd),
 * CF_EINVAL (negative fd, bad events, NaN timeout), CF_ENOMEM, CF_ESYS
 * (epoll refused fd: cf_last_error says why, "Bad file descriptor" for a
 * closed one in a green or pool task). */
CF_API int cf_green_wait_fd(int fd, int events, double timeout_s);

/* Green I/O: like read/write/accept/connect, but a green task or a
 * thread-pool task is only suspended (cf_green_wait_fd) while the
 * descriptor is not ready; on other threads they wait with poll(2). cf_green_read and cf_green_write_all
 * try a socket with MSG_DONTWAIT and leave its mode alone; they make any
 * other descriptor non-blocking, as accept and connect do (as gevent
 * does). The timeout covers the whole call. Errors: CF_EINVAL (bad
 * arguments), CF_ETIMEDOUT, CF_ECANCELLED, CF_EBUSY (see cf_green_wait_fd),
 * CF_ESYS (the system call failed: cf_last_error says which and why).
 *
 * cf_green_read reads at most len bytes: 0 and *got (0 at end of file).
 * cf_green_write_all writes all len bytes (no SIGPIPE). cf_green_accept
 * gives a new connection in *out (close-on-exec, non-blocking).
 * cf_green_connect connects fd (a socket) to addr. */
struct sockaddr;
CF_API int cf_green_read(int fd, void *buf, size_t len, double timeout_s,
                         size_t *got);
CF_API int cf_green_write_all(int fd, const void *buf, size_t len,
                              double timeout_s);
CF_API int cf_green_accept(int fd, double timeout_s, int *out);
CF_API int cf_green_connect(int fd, const struct sockaddr *addr,
                            unsigned int addr_len, double timeout_s);

/* Lets the loop run every other ready task once before the caller goes on
 * (sleep(0)). Outside green tasks: sched_yield. Returns 0 or
 * CF_ECANCELLED. */
CF_API int cf_green_yield(void);

/* Cancels a green task: one not started never runs (its future becomes
 * CANCELLED); a started one has its current wait, and every later one,
 * return CF_ECANCELLED, and its future becomes CANCELLED when it returns
 * CF_ECANCELLED (a task that returns otherwise keeps its outcome). Any
 * thread. Returns 0, CF_EINVAL (NULL, or not a green task's future),
 * CF_EINVALSTATE (already done). */
CF_API int cf_green_cancel(cf_future *f);

#ifdef __cplusplus
}
#endif
#endif
