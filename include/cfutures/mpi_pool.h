/* cfutures — the MPI executor: a pool whose workers are MPI processes
 * (mpi4py.futures for C). Link with `pkg-config --libs cfutures-mpi`
 * (libcfutures-mpi, built when OpenMPI is found); programs that do not
 * include this header need neither it nor MPI. This header does not
 * include <mpi.h>.
 *
 * Two ways to start, as with mpi4py.futures:
 *
 *   mpiexec -n N ./prog      every rank calls cf_mpi_serve at the top of
 *                            main; rank 0 gets 1 back and runs the program,
 *                            ranks 1..N-1 serve its pools' tasks until rank 0
 *                            exits, then get 0 back (main should return).
 *   ./prog (or mpiexec -n 1) cf_mpi_pool_new spawns the workers with
 *                            MPI_Comm_spawn: by default this program again,
 *                            whose cf_mpi_serve call sees its parent, serves
 *                            and returns 0 when the pool is freed.
 *
 * Tasks are found in the worker by where they lie in their loaded object
 * (the program or a shared object: its path and the function's offset),
 * never by raw pointer: every rank must run the same build of the program
 * and find the same shared objects at the same paths. Inputs and results
 * travel as bytes; ranks must share one data representation (one
 * architecture: no conversion is done).
 *
 * Threads: MPI is initialised (by cf_mpi_serve, or by cf_mpi_pool_new if
 * nobody did) with MPI_THREAD_SERIALIZED. While a pool lives, only its
 * progress thread calls MPI; a program that makes MPI calls of its own
 * during that time must initialise MPI itself with MPI_THREAD_MULTIPLE
 * before cf_mpi_serve. A program that initialised MPI itself below
 * MPI_THREAD_SERIALIZED gets CF_EINVAL from cf_mpi_pool_new.
 *
 * Futures are ordinary cf_futures: cf_wait, cf_as_completed, the maps,
 * done-callbacks and cancel work as with the other executors. Done-
 * callbacks run on the pool's progress thread (the one thread that calls
 * MPI): a callback must not block for long, must never wait for a future
 * of the same pool, may submit, gets CF_EDEADLK from
 * cf_executor_shutdown(wait=true) on its own pool and must not free it.
 * A task sent to a worker is RUNNING: it can no longer be cancelled. With
 * a backlog, up to 32 tasks are sent ahead to each worker (one message).
 *
 * Failure: a task that fails (non-zero return, cf_fail) fails its future
 * with its code and message, prefixed with the worker's rank and host
 * ("rank 2 on node7: bad n=3"). A worker that dies (a crash, exit() in a
 * task, a killed process) ends the whole MPI job under mpiexec: that is
 * what MPI does (mpiexec kills the other ranks and prints which rank died
 * and how); a worker first writes "cfutures: MPI worker rank R on host H:
 * fatal signal S in a task" (or "a task called exit()") to stderr when it
 * can. A program started alone (an MPI singleton) is not ended by OpenMPI
 * when a worker it spawned dies: the pool watches the pids of its spawned
 * workers on this host while tasks are in flight (every 50 ms) and breaks
 * on a death: the futures in flight and queued fail with CF_EBROKEN
 * ("MPI worker rank R (pid P) on H died; the pool is broken"), later
 * submits get CF_EBROKEN, and MPI is not called again (not even
 * MPI_Finalize at exit, which would wait for the dead process). While the
 * job lives no future hangs.
 *
 * Large payloads on one host: a byte task's input from 64 KiB on, and its
 * result, go through shared memory (memfds of the main rank, which a worker
 * on the same host and boot maps through /proc/<pid>/fd; checked per
 * worker when a pool starts) and only a descriptor through MPI; other
 * workers get them through MPI. A result's cf_buf then points into that
 * memory until the future is freed. CFUTURES_MPI_SHM=0 in the main rank's
 * environment turns this off. See docs/mpi.md.
 *
 * One MPI pool at a time per process (a second one gets CF_EBUSY until the
 * first is freed).
 */
#ifndef CFUTURES_MPI_POOL_H
#define CFUTURES_MPI_POOL_H

#include <cfutures/executor.h>
#include <cfutures/process_pool.h> /* cf_proc_fn, cf_buf */

#ifdef __cplusplus
extern "C" {
#endif

/* The entry call, at the top of main on every rank, before anything else
 * the program does (the counterpart of `python -m mpi4py.futures`):
 *
 *     int rc = cf_mpi_serve(&argc, &argv);
 *     if (rc <= 0)
 *       return rc == 0 ? 0 : 1;   // a worker that has served, or an error
 *
 * Initialises MPI (MPI_Init_thread with MPI_THREAD_SERIALIZED) unless the
 * program did. Then:
 *   - in a process spawned by cf_mpi_pool_new: serves the parent's tasks
 *     until its pool is freed, finalises MPI and returns 0;
 *   - under mpiexec with more than one rank: rank 0 returns 1 at once and
 *     owns the job (its pools use ranks 1..N-1); every other rank serves
 *     rank 0's pools, one after another, until rank 0 exits (an exit
 *     handler on rank 0 shuts down a pool still alive, waiting for it,
 *     tells the workers, and finalises MPI), then finalises MPI and
 *     returns 0;
 *   - alone (no mpiexec, or mpiexec -n 1): returns 1; pools spawn their
 *     workers.
 * MPI is finalised by cfutures (at exit on the main rank) only if cfutures
 * initialised it. argc and argv may be NULL (then MPI sees no arguments).
 * Returns 1 (the main rank), 0 (a worker that has finished serving), or
 * CF_ESYS (MPI could not be initialised or the communicator duplicated:
 * cf_last_error says why), CF_EINVALSTATE (called twice in a process, or
 * after MPI was finalised). Blocks, on a worker, for as long as it serves.
 * Call it from the main thread. */
CF_API int cf_mpi_serve(int *argc, char ***argv);

typedef struct cf_mpi_pool_opts {
  /* Workers. Under mpiexec (see cf_mpi_serve): 0 for every other rank,
   * else at most size - 1 (ranks 1..max_workers are used). Spawning: 0
   * for MPI_UNIVERSE_SIZE - 1 when the launcher sets it above 1, else the
   * number of online CPUs. At most 4096. */
  size_t max_workers;
  /* Spawning only: the program to start (NULL: this program, by its
   * resolved path) and its arguments (NULL-terminated; NULL: none). The
   * program must call cf_mpi_serve at the top of main. Copied. */
  const char *command;
  char *const *argv;
  /* Spawning only: OpenMPI's "host" info key (e.g. "node1,node2"), or
   * NULL to let the launcher place the workers. Copied. */
  const char *hosts;
  /* false (default): a progress thread of the pool's moves its messages,
   * and futures complete on their own, done-callbacks on that thread.
   * true: no thread; messages move, and futures complete (done-callbacks
   * running), only while the program calls cf_mpi_pool_progress, or in
   * cf_executor_shutdown with wait (and so cf_executor_free), on the
   * calling thread. For programs with a loop of their own that call MPI
   * alongside; a blocking wait (cf_future_result, cf_wait, cf_map_next)
   * on such a pool's futures returns only if some thread drives it
   * meanwhile. */
  bool caller_progress;
} cf_mpi_pool_opts;

/* Creates an MPI pool (opts may be NULL: defaults) and returns it in
 * *out; the caller owns it and frees it with cf_executor_free (which
 * shuts down, waiting). Initialises MPI if nobody did. Under mpiexec with
 * cf_mpi_serve on rank 0, uses the waiting ranks; otherwise spawns
 * max_workers processes (MPI_Comm_spawn) and blocks until they have
 * started. Starts the progress thread.
 *
 * cf_submit and cf_map_iter work on it: `arg` travels as a pointer-sized
 * integer VALUE (a pointer means nothing in another process), and so does
 * the task's *out (result_destroy runs on the main rank on that value).
 * cf_map_array sends each item's bytes; the worker passes fn a pointer to
 * its copy and sends the pointer-sized result back; opts.chunksize items
 * per message, each with its own outcome.
 *
 * Returns 0; CF_EINVAL (NULL out, max_workers above 4096 or above the
 * ranks there are, MPI initialised below MPI_THREAD_SERIALIZED, a command
 * that is no executable file here: checked before spawning, because
 * OpenMPI 4.1's MPI_Comm_spawn of a program that cannot start never
 * returns); CF_EBUSY (another MPI pool is alive in this
 * process); CF_ESYS (MPI failed: the spawn, no /proc/self/exe, or no
 * thread; cf_last_error carries MPI's error string); CF_ENOMEM. On error
 * *out is NULL and no worker is left running. */
CF_API int cf_mpi_pool_new(const cf_mpi_pool_opts *opts, cf_executor **out);

/* Submits the byte task fn over a copy of data[0..len) (data may be NULL
 * if len is 0; the caller keeps data). fn must lie in the program or in a
 * shared object (the worker finds it there). Copies the input once, into
 * the message that goes to the worker, and queues it; does not block on
 * MPI. In the worker, fn(in, len, &buf) runs with `in` valid during the
 * call only; it sets buf.data (malloc'd, freed by the worker after
 * sending) and buf.len. The future's result is a cf_buf * owned by the
 * future (freed with it; read and write its data, do not free it). A task
 * failure arrives as CF_EFAILED with the task's code and message
 * (cf_future_exception), the message prefixed with "rank R on HOST: ".
 * Returns 0 and a new reference in *out; CF_EINVAL (NULL ex/fn/out, NULL
 * data with len > 0, ex not an MPI pool, fn in no loaded object);
 * CF_ETOOBIG (len above 2 GiB - 4 KiB: one MPI message); CF_ESHUTDOWN;
 * CF_ENOMEM. On error *out is NULL and fn never runs. Thread-safe. */
CF_API int cf_mpi_pool_submit(cf_executor *ex, cf_proc_fn fn, const void *data,
                              size_t len, cf_future **out);

/* Maps the byte task fn over items[0..n) (item i: the item_size bytes at
 * items + i * item_size), opts.chunksize items per message: executor/map.c's
 * machinery, as cf_process_pool_map_bytes. cf_map_next yields each item's
 * result in input order as a `cf_buf *` lent by the map (valid until the
 * next cf_map_next or cf_map_free; do not free it) or the item's failure
 * (cf_map_error). The caller keeps `items` alive until cf_map_free.
 * Returns 0 and *out; CF_EINVAL (NULL ex/fn/out, ex not an MPI pool, NULL
 * items with n > 0, item_size 0, overflow, result_destroy set, NaN
 * timeout, window or chunksize above CF_MAP_MAX_WINDOW), CF_ESHUTDOWN,
 * CF_ENOMEM; on error *out is NULL and fn never runs. */
CF_API int cf_mpi_pool_map_bytes(cf_executor *ex, cf_proc_fn fn,
                                 const void *items, size_t n, size_t item_size,
                                 const cf_map_opts *opts, cf_map **out);

/* A caller-driven pool (opts.caller_progress): moves its messages on this
 * thread, completing futures (their done-callbacks run here), until
 * `until` is done, or with until NULL until no task is queued or in
 * flight, or until timeout_s passes (CF_FOREVER: no limit; 0: one look).
 * Between turns that move nothing it spins briefly, then yields the CPU:
 * MPI offers nothing to sleep on. One thread drives at a time; others
 * calling meanwhile wait their turn. until may be any future (of this
 * pool, or another executor's that this pool's work completes).
 * Returns 0; CF_ETIMEDOUT; CF_EBROKEN (a worker died: its tasks have
 * failed); CF_ESHUTDOWN (the pool was shut down and its workers
 * released: nothing more will move); CF_EDEADLK (called from a
 * done-callback that this pool's progress runs); CF_EINVAL (NULL or not
 * an MPI pool, a pool with its progress thread, a NaN timeout). */
CF_API int cf_mpi_pool_progress(cf_executor *ex, cf_future *until,
                                double timeout_s);

/* The worker count; 0 for NULL or another executor. */
CF_API size_t cf_mpi_pool_size(const cf_executor *ex);

#ifdef __cplusplus
}
#endif
#endif
