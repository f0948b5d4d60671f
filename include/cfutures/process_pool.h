/* cfutures — the fork-based process pool executor.
 *
 * Workers are processes forked from a single-threaded fork server, so
 * workers forked later (replacements, max_tasks_per_child) are safe even
 * when the parent runs threads. Data does not cross: a task's input and
 * output travel as bytes.
 *
 * Start methods (cf_process_pool_opts.start_method), as Python's:
 *   CF_START_FORKSERVER, the default: the fork server is a fresh image of
 *     the program (posix_spawn of /proc/self/exe), taken over by cfutures
 *     before main runs (a constructor in the library; the program's own
 *     constructors and main do not run there). Whatever the host's
 *     threads hold at that moment (the time-zone, environment or dynamic
 *     loader locks, a logging mutex, 500 MiB of heap) stays out of the
 *     workers. A function pointer (task, initializer) travels as its
 *     object and its offset there, and works in the workers, also in a
 *     library the host dlopen'd (loaded there on first use); cf_submit's
 *     pointer-sized arg and initarg travel as values, so a pointer to
 *     anything made at run time is not valid there: pass bytes
 *     (cf_process_pool_submit, cf_map_array) or build the state in the
 *     initializer. The library must be in the program's initial image or
 *     dlopen'd by path: it is then preloaded into the server.
 *   CF_START_FORK: the fork server is a fork() of the host at pool
 *     creation. Workers see the host's memory as it was then (pointers set
 *     before the pool work), but also its locks as they were: a lock some
 *     other thread held at that instant is held for ever in every worker
 *     (with threads calling localtime_r, setenv or dlopen, pools hang or
 *     crash), and the server keeps the host's memory of that moment
 *     resident. Use it in a single-threaded host that wants its memory
 *     shared with the workers.
 *
 * Tasks and maps: two shapes, one story. A value task is a cf_fn (the
 * shape every executor runs): cf_submit passes it a pointer-sized value and
 * gets one back (an integer; with CF_START_FORK also a pointer into data
 * that existed before the pool); cf_map_array passes it a pointer to the
 * worker's copy of an item's bytes, and gets a pointer-sized value back
 * per item. A byte task
 * is a cf_proc_fn: bytes in, a cf_buf of bytes out, of any size;
 * cf_process_pool_submit runs one, cf_process_pool_map_bytes maps one over
 * an array (a result too big for a pointer, a 128-bit sum say, needs this
 * shape). Both maps are the same mechanism (executor/map.c): results in
 * input order through cf_map_next, opts.chunksize items per message, and
 * each item with its own outcome: a chunk whose worker dies keeps the
 * results of the items that finished (each worker writes them, item by
 * item, to a memory area it shares with the manager), fails the item that
 * was running, and queues the items after it again; none runs twice.
 * With a task timeout or max_tasks_per_child, a chunk counts as one task
 * (the timeout covers the whole chunk; the item running at the kill fails
 * with CF_ETIMEDOUT, the later ones are queued again).
 *
 * A worker that dies (a crash, SIGKILL, exit() inside a task) never hangs
 * anyone: the future it was running (in a chunk: the item) fails with
 * CF_EBROKEN and a message naming the signal, the exit status or the
 * protocol error (a task that writes garbage on its worker's socket: the
 * worker is killed), a replacement worker is forked, and the other futures
 * complete normally (tasks and items sent to the dead worker but not
 * started are sent again). Five
 * workers in a row dying before they start any task (a crashing initializer)
 * break the pool. A task whose bytes cannot be passed for want of resources
 * (EMFILE or ENOMEM for a memfd or a mapping) fails alone, with CF_ESYS or
 * CF_ENOMEM and a message; the worker stays.
 *
 * Death is known from the exit status, so a process a task forks and leaves
 * behind (holding the worker's socket) holds nothing up. In a worker the
 * pool's socket sits at descriptor 512 or above (where the limit allows): a
 * task writing to a low descriptor number the host used before the pool gets
 * EBADF, not the pool's socket.
 *
 * A fork of a worker that fails (RLIMIT_NPROC, a container's pids.max) is
 * retried after a delay growing from 1 ms to 100 ms, without spinning; a
 * pool that keeps a live worker serves on with fewer, and one left with none
 * for 2 s fails its waiting futures (and later ones, while that lasts) with
 * CF_ESYS and "fork of a worker failed: <strerror(errno)>", and serves again
 * once a fork works.
 *
 * A plain thread waiting in cf_future_result on a process-pool future
 * does the manager's work itself while the manager thread sleeps (reads
 * results, completes futures, hands out queued tasks), for up to ~50 us
 * without news, then sleeps as usual; cf_submit likewise hands its task to
 * an idle worker itself. So done-callbacks of process-pool futures run in
 * the parent, on the pool's manager thread or on such a waiting thread (a
 * callback there must not block for long: it holds up every other result,
 * and it must never wait for another future of the same pool, which only
 * that thread can complete; it may submit, cf_executor_shutdown(wait=true)
 * from it returns CF_EDEADLK, and it must not call cf_executor_free on its
 * own pool). The futures mix freely with thread-pool futures in cf_wait and
 * cf_as_completed.
 *
 * A task's failure code reaches the future as is: cf_future_result returns
 * CF_EBROKEN for a dead worker and CF_EFAILED otherwise, and
 * cf_future_exception gives the code (CF_ETIMEDOUT for a task killed at
 * its timeout) and the message.
 *
 * The fork server and the workers ignore the terminal's signals (SIGINT,
 * SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU, SIGHUP): a Ctrl-C that the host
 * handles leaves the pool working; a task that wants them must install
 * its own handlers. They die with the host all the same.
 *
 * The pool owns one thread and one child process (the fork server) from
 * cf_process_pool_new to cf_executor_free, plus its workers. It works in a
 * host that ignores SIGCHLD or runs its own threads, whichever thread made
 * it; it does not survive a fork() of the parent (use it in one process),
 * but a child forked without exec closes the pool's sockets at once
 * (pthread_atfork), so that it does not hold up the parent's pool: the
 * parent's cf_executor_free does not wait for such a child to exit.
 */
#ifndef CFUTURES_PROCESS_POOL_H
#define CFUTURES_PROCESS_POOL_H

#include <cfutures/executor.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A byte buffer: a task's output, and the result type of byte tasks. */
typedef struct cf_buf {
  void *data; /* malloc'd */
  size_t len;
} cf_buf;

/* A task on bytes, run in a worker: reads in[0..in_len), sets out->data
 * (malloc'd; the pool frees it after sending) and out->len, returns 0; or
 * returns a non-zero code (cf_fail records a message). */
typedef int (*cf_proc_fn)(const void *in, size_t in_len, cf_buf *out);

/* How the pool starts its fork server, the process that forks every
 * worker (see "Start methods" above). */
typedef enum cf_start_method {
  /* The default: a fresh image of the program (posix_spawn of
   * /proc/self/exe) that serves as fork server. Nothing of the host's
   * state at pool creation reaches the workers: no lock another thread
   * held, no heap. Functions travel as (object, offset) and work; a
   * pointer to data made at run time does not. */
  CF_START_FORKSERVER = 0,
  /* The fork server is a fork() of the host: workers inherit its memory
   * as it was at pool creation (pointers into it work), and its locks as
   * they were, held by threads that do not exist in the copy. */
  CF_START_FORK = 1,
} cf_start_method;

typedef struct cf_process_pool_opts {
  /* Worker processes; 0: the number of online CPUs. At most 256. */
  size_t max_workers;
  /* A worker exits after this many tasks and is replaced; 0: never. */
  size_t max_tasks_per_child;
  /* Runs in each worker before its first task; non-zero breaks the pool:
   * pending and later futures fail with CF_EBROKEN. May be NULL. */
  int (*initializer)(void *arg);
  /* Passed as is. A pointer in it is valid in the workers with
   * CF_START_FORK (data set before the pool); with the fork server only
   * if it points into the program's own static data as compiled (a
   * string literal, say), not to anything made or changed at run time. */
  void *initarg;
  /* A task running longer than this (seconds) has its worker killed and
   * replaced; its future fails with code CF_ETIMEDOUT. The time counts
   * from the moment the task starts in its worker (the worker reports it):
   * time queued and the worker's initializer do not count. 0, +infinity or
   * anything above 1e9 (~30 years, as for every timeout in cfutures): no
   * limit. Negative or NaN: cf_process_pool_new returns CF_EINVAL (unlike
   * a wait's timeout, where negative means forever). With a timeout each
   * worker holds one task at a time (no task sent ahead). */
  double task_timeout_s;
  /* CF_START_FORKSERVER (0, the default) or CF_START_FORK; anything else:
   * CF_EINVAL. */
  cf_start_method start_method;
} cf_process_pool_opts;

/* Creates a process pool (opts may be NULL: defaults) and returns it in
 * *out; the caller owns it and frees it with cf_executor_free. Blocks only
 * until the fork server is started (workers start in the background).
 * Returns 0, CF_EINVAL (NULL out, more than 256 workers, negative or NaN
 * timeout, an unknown start_method, with the fork server an initializer
 * in no loaded object), CF_ENOMEM, CF_ESYS (fork or posix_spawn, socket,
 * memfd or thread creation failed; cf_last_error says which and why).
 *
 * cf_submit works on it too: `arg` travels as a pointer-sized VALUE (an
 * integer; with CF_START_FORK also a pointer to data that existed before
 * the pool was created),
 * and so does the task's *out (the result_destroy of cf_submit_with runs
 * in the parent on that value). cf_map_array copies each item's bytes to
 * the worker, which passes fn a pointer to its copy, and sends
 * opts.chunksize items per message, each with its own outcome (see "Tasks
 * and maps" above); cf_map_iter items travel as values, one per message. */
CF_API int cf_process_pool_new(const cf_process_pool_opts *opts,
                               cf_executor **out);

/* Submits fn over a copy of data[0..len) (data may be NULL if len is 0);
 * the caller keeps data. Does not block on the workers: it copies the
 * input (from 1 MiB on, straight into shared memory that the worker maps)
 * and queues the task. The future's result is a cf_buf * owned by the
 * future (freed with it; from 64 KiB on its data is a private mapping the
 * caller may read and write but must not free). In the worker, `in` is
 * valid during the call only. Returns 0 and a new reference in *out;
 * CF_EINVAL (NULL ex/fn/out, NULL data with len > 0, ex not a process
 * pool, with the fork server fn in no loaded object), CF_ESHUTDOWN,
 * CF_EBROKEN, CF_ENOMEM; on error *out is NULL and fn never runs. */
CF_API int cf_process_pool_submit(cf_executor *ex, cf_proc_fn fn,
                                  const void *data, size_t len,
                                  cf_future **out);

/* Maps the byte task fn over items[0..n), item i being the item_size
 * bytes at items + i * item_size: in a worker, fn(item, item_size, &buf)
 * runs over a copy of them. cf_map_array's machinery (executor/map.c), for
 * byte tasks: opts as for cf_map_array (opts may be NULL; chunksize items
 * per message, see "Tasks and maps" above; result_destroy must be NULL),
 * the caller keeps `items` alive until cf_map_free, and cf_map_next yields
 * each item's result in input order as a `cf_buf *` lent by the map
 * (valid until the next cf_map_next or cf_map_free; its data lies in the
 * map's buffer for the item's chunk, aligned to 16 bytes: read or write
 * it, do not free it), or the item's
 * failure (cf_map_error). Returns 0 and *out; CF_EINVAL (NULL ex/fn/out,
 * ex not a process pool, NULL items with n > 0, item_size 0, n * item_size
 * overflowing, result_destroy set, NaN timeout, window or chunksize above
 * CF_MAP_MAX_WINDOW), CF_ESHUTDOWN, CF_EBROKEN, CF_ENOMEM; on error *out is
 * NULL and fn never runs. */
CF_API int cf_process_pool_map_bytes(cf_executor *ex, cf_proc_fn fn,
                                     const void *items, size_t n,
                                     size_t item_size, const cf_map_opts *opts,
                                     cf_map **out);

/* The worker count; 0 for NULL or another executor. */
CF_API size_t cf_process_pool_size(const cf_executor *ex);

#ifdef __cplusplus
}
#endif
#endif
