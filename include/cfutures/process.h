/* cfutures — processes: Python's multiprocessing.Process.
 *
 * cf_process_start forks a child that runs `int fn(void *arg)` and exits
 * with its return value. The parent can ask whether it is alive, wait for
 * it with a timeout (several threads at once if they like), read its exit
 * code in Python's convention (the function's return value, or minus the
 * number of the signal that killed it), and send it SIGTERM or SIGKILL.
 *
 * Waiting: each child gets a pidfd (pidfd_open) in the parent; a join
 * sleeps in ppoll() on it, so nothing busy-waits and no thread is
 * dedicated to reaping. Only our own children are reaped, each by its pid
 * (waitid on that pid, never waitpid(-1)). Signals go through the pidfd,
 * so they can never hit a recycled pid.
 *
 * The child is a fork() of the caller: it has a copy of the memory, the
 * open descriptors and the signal handlers, and only the forking thread.
 * As for any fork of a threaded program, locks held by other threads at
 * the fork stay locked in the child, so the function should keep to what
 * it set up itself (and to async-signal-safe calls if the parent's other
 * threads may hold library locks, malloc's included — glibc makes malloc
 * itself safe across fork). Thread and process pools of the parent do not
 * work in the child. stdout and stderr are flushed before the fork (so
 * their buffered output is not printed twice) and when the function
 * returns; the child then ends with _exit(), so the parent's atexit
 * handlers do not run in it.
 *
 * Daemons: a daemon child is killed (SIGKILL) when its parent process
 * ends, however it ends — a crash included (PR_SET_PDEATHSIG, checked
 * against getppid() right after it is set, so a parent that died during
 * the fork is seen too). Linux sends that signal when the *thread* that
 * forked ends, so daemon children are forked by a helper thread of the
 * library that lives as long as the process: a daemon started by a thread
 * that then exits lives on. Non-daemon children outlive their parent (the
 * parent does not wait for them at exit, unlike Python: join them).
 *
 * Thread safety: every call may be made from any thread of the parent,
 * concurrently, except cf_process_free, which must come after every other
 * call on that process has returned.
 */
#ifndef CFUTURES_PROCESS_H
#define CFUTURES_PROCESS_H

#include <cfutures/common.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cf_process cf_process;

/* Options for cf_process_start; a zeroed struct (or NULL) gives the
 * defaults. */
typedef struct cf_process_opts {
  /* The process's name, copied; NULL: "Process-N", N counting from 1 in
   * this process, as Python. Only a label (the child's command name in ps
   * is not changed). */
  const char *name;
  /* A daemon child is killed when the parent process ends (see above). */
  bool daemon;
} cf_process_opts;

/* Forks a child that runs fn(arg) and exits with fn's return value (as an
 * exit status: only its low 8 bits count, so -1 is seen as 255). `arg` is
 * the parent's pointer, valid in the child's copy of the memory. On
 * success *out is the new process, owned by the caller until
 * cf_process_free. Returns 0; CF_EINVAL (NULL fn or out); CF_ENOMEM;
 * CF_ESYS (fork or pidfd_open failed: no child is left running, errno
 * tells why; or the daemon helper thread could not be created). On error
 * *out is NULL and fn never runs. */
CF_API int cf_process_start(int (*fn)(void *arg), void *arg,
                            const cf_process_opts *opts, cf_process **out);

/* Waits up to timeout_s (CF_FOREVER: as long as it takes; 0 or negative:
 * only look) for the child to end, and reaps it. Several threads may join
 * one process at once; all of them return 0 once it has ended, and joining
 * again returns 0 at once. Returns 0; CF_ETIMEDOUT (still running);
 * CF_EINVAL (NULL p, NaN timeout); CF_ESYS (someone else reaped our child,
 * e.g. a waitpid(-1) of the program or SIGCHLD set to SIG_IGN: its exit
 * code is lost, and cf_process_exitcode says CF_ESYS from then on). */
CF_API int cf_process_join(cf_process *p, double timeout_s);

/* Whether the child is still running (it reaps it if it has just ended,
 * as Python's is_alive does). False for NULL. */
CF_API bool cf_process_is_alive(cf_process *p);

/* The exit code once the child has ended (it reaps it if it has just
 * ended; it never waits): the function's return value (0..255), or -N
 * when signal N killed it (-9 after cf_process_kill, -15 after
 * cf_process_terminate). Returns 0 and *code; CF_EINVALSTATE while it
 * still runs (Python's None); CF_ESYS if someone else reaped it (see
 * cf_process_join); CF_EINVAL for NULL p or code. */
CF_API int cf_process_exitcode(cf_process *p, int *code);

/* Sends SIGTERM (terminate) or SIGKILL (kill) to the child; a child that
 * has already ended is left alone (returns 0, as Python). Does not wait:
 * join it. Returns 0, CF_EINVAL (NULL), CF_ESYS (the signal could not be
 * sent). */
CF_API int cf_process_terminate(cf_process *p);
CF_API int cf_process_kill(cf_process *p);

/* The child's pid (still valid after it ended, but then it may belong to
 * another process: use the calls above, which are safe from that). 0 for
 * NULL. */
CF_API pid_t cf_process_pid(const cf_process *p);

/* The name (borrowed from p, valid until cf_process_free); NULL for NULL. */
CF_API const char *cf_process_name(const cf_process *p);

/* Whether p was started as a daemon; false for NULL. */
CF_API bool cf_process_daemon(const cf_process *p);

/* Frees a process that has ended (reaping it if need be), as Python's
 * close(). A child still running is not freed and not touched: returns
 * CF_EBUSY (join, terminate or kill it first) — a freed handle could
 * never reap it, and it would stay a zombie. Returns 0 (NULL is a no-op),
 * CF_EBUSY. */
CF_API int cf_process_free(cf_process *p);

#ifdef __cplusplus
}
#endif
#endif
