/* Process: Python's multiprocessing.Process over fork() and a pidfd.
 *
 * Starting: every signal is blocked across fork() (no handler of the
 * program runs in the child before it is ready), stdout and stderr are
 * flushed first, and the parent opens a pidfd on the child at once (the
 * child cannot have been reaped yet: only this object reaps it).
 *
 * Daemons die with the parent through PR_SET_PDEATHSIG, which Linux fires
 * when the *thread* that forked ends. So daemons are forked by a helper
 * thread that lives until the process ends (created on first use, all
 * signals blocked); the caller hands it a request and waits. The child
 * checks getppid() after setting the signal: a parent that died in
 * between would never send it.
 *
 * Waiting: joiners sleep in ppoll() on the pidfd (readable once the child
 * has exited); any number may do so at once. The reaping itself, a
 * waitid(P_PID, pid, WNOHANG) on our own pid, runs under `mu`, so exactly
 * one caller collects the status and the others read it. The pidfd stays
 * open until cf_process_free, so no joiner can find its descriptor number
 * reused; signals go through pidfd_send_signal, which cannot reach a
 * recycled pid.
 *
 * Locks: `mu` (per process) and `helper_mu` (the helper's request slot)
 * are never held together.
 */
#include <cfutures/process.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/report.h"
#include "core/time.h"

struct cf_process {
  pthread_mutex_t mu; /* guards reaped, lost, code, and the waitid */
  bool reaped;        /* guarded by mu: the exit status is collected */
  bool lost;          /* guarded by mu: someone else reaped the child */
  int code;           /* guarded by mu: Python's exitcode, once reaped */
  pid_t pid;          /* constant after start */
  int pidfd;          /* the same; closed by cf_process_free */
  bool daemon;
  char *name;
};

/* Default names, "Process-1" on: a counter with no ordering duty. */
static atomic_uint next_number;

/* ---- forking ----------------------------------------------------------- */

static _Noreturn void child_main(int (*fn)(void *), void *arg, bool daemon,
                                 pid_t parent, const sigset_t *mask,
                                 const char *comm) {
  if (comm &&
      comm[0]) /* forked by the helper: take the caller's name, not its own */
    prctl(PR_SET_NAME, comm);
  if (daemon) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) /* the parent died before the line above */
      _exit(1);
  }
  pthread_sigmask(SIG_SETMASK, mask, NULL);
  int rc = fn(arg);
  fflush(stdout);
  fflush(stderr);
  _exit(rc & 0xff);
}

/* Forks a child running fn(arg) with signal mask `mask`; sets p->pid and
 * p->pidfd. Returns 0 or CF_ESYS with errno in *err and a reason in
 * *why. */
static int fork_child(cf_process *p, int (*fn)(void *), void *arg,
                      const sigset_t *mask, const char *comm, int *err,
                      const char **why) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0)
    child_main(fn, arg, p->daemon, parent, mask, comm);
  *err = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (pid < 0) {
    *why = "fork";
    return CF_ESYS;
  }
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) {
    *err = errno;
    *why = "pidfd_open";
    /* Without a pidfd we cannot wait for it well: take it back. */
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
      ;
    return CF_ESYS;
  }
  p->pid = pid;
  p->pidfd = fd;
  return 0;
}

/* The daemon forker: one request at a time in `helper_req`. */
typedef struct fork_req {
  cf_process *p;
  int (*fn)(void *);
  void *arg;
  sigset_t mask; /* the caller's, for the child */
  char comm[16]; /* the caller's thread name, for the child */
  int rc, err;
  const char *why;
  bool done;
} fork_req;

static pthread_mutex_t helper_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t helper_cv = PTHREAD_COND_INITIALIZER;
static bool helper_running;  /* guarded by helper_mu */
static fork_req *helper_req; /* guarded by helper_mu */
static pthread_once_t helper_once = PTHREAD_ONCE_INIT;

static void *helper_main(void *unused) {
  (void)unused;
  pthread_mutex_lock(&helper_mu);
  /* Holds helper_mu, except while waiting; it forks holding it (the
   * child's copy is reset by helper_atfork_child). */
  for (;;) {
    while (!helper_req)
      pthread_cond_wait(&helper_cv, &helper_mu);
    fork_req *r = helper_req;
    r->rc =
        fork_child(r->p, r->fn, r->arg, &r->mask, r->comm, &r->err, &r->why);
    r->done = true;
    helper_req = NULL;
    pthread_cond_broadcast(&helper_cv);
  }
  return NULL;
}

/* A child of any fork has no helper thread: it makes its own if it starts
 * daemons. The lock may have been held by a thread that is not there. */
static void helper_atfork_child(void) {
  pthread_mutex_init(&helper_mu, NULL);
  pthread_cond_init(&helper_cv, NULL);
  helper_running = false;
  helper_req = NULL;
}

static void helper_register(void) {
  pthread_atfork(NULL, NULL, helper_atfork_child);
}

static int fork_daemon(cf_process *p, int (*fn)(void *), void *arg,
                       const sigset_t *mask, int *err, const char **why) {
  pthread_once(&helper_once, helper_register);
  fork_req r = {.p = p, .fn = fn, .arg = arg, .mask = *mask};
  if (pthread_getname_np(pthread_self(), r.comm, sizeof r.comm) != 0)
    r.comm[0] = 0;
  pthread_mutex_lock(&helper_mu);
  if (!helper_running) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* inherited by the helper */
    pthread_t th;
    int prc = pthread_create(&th, &attr, helper_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (prc != 0) {
      pthread_mutex_unlock(&helper_mu);
      *err = prc;
      *why = "the daemon forker thread: pthread_create";
      return CF_ESYS;
    }
    pthread_setname_np(th, "cf-daemon-fork");
    helper_running = true;
  }
  /* Holds helper_mu: wait for the slot, fill it, wait for the answer. */
  while (helper_req)
    pthread_cond_wait(&helper_cv, &helper_mu);
  helper_req = &r;
  pthread_cond_broadcast(&helper_cv);
  while (!r.done)
    pthread_cond_wait(&helper_cv, &helper_mu);
  pthread_mutex_unlock(&helper_mu);
  *err = r.err;
  *why = r.why;
  return r.rc;
}

int cf_process_start(int (*fn)(void *arg), void *arg,
                     const cf_process_opts *opts, cf_process **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  if (!fn)
    return CF__FAIL(CF_EINVAL, "NULL function");
  cf_process *p = calloc(1, sizeof *p);
  if (!p)
    return CF__FAIL(CF_ENOMEM, "out of memory");
  p->pidfd = -1;
  p->daemon = opts && opts->daemon;
  if (opts && opts->name)
    p->name = strdup(opts->name);
  else if (asprintf(&p->name, "Process-%u",
                    atomic_fetch_add_explicit(&next_number, 1,
                                              memory_order_relaxed) +
                        1) < 0)
    p->name = NULL;
  if (!p->name) {
    free(p);
    return CF__FAIL(CF_ENOMEM, "out of memory");
  }
  pthread_mutex_init(&p->mu, NULL);
  sigset_t mask;
  pthread_sigmask(SIG_SETMASK, NULL, &mask);
  fflush(stdout); /* or the child prints what is buffered again */
  fflush(stderr);
  int err = 0;
  const char *why = "";
  int rc = p->daemon ? fork_daemon(p, fn, arg, &mask, &err, &why)
                     : fork_child(p, fn, arg, &mask, NULL, &err, &why);
  if (rc) {
    pthread_mutex_destroy(&p->mu);
    free(p->name);
    free(p);
    return CF__FAILF(rc, "%s failed: %s", why, strerror(err));
  }
  *out = p;
  return 0;
}

/* ---- waiting --------------------------------------------------------------
 */

/* Collects the child's status if it has exited. Call with p->mu held. */
static void try_reap(cf_process *p) {
  if (p->reaped)
    return;
  siginfo_t si;
  for (;;) {
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG) == 0)
      break;
    if (errno == EINTR)
      continue;
    /* ECHILD: reaped behind our back (waitpid(-1), SIGCHLD ignored). */
    p->reaped = p->lost = true;
    return;
  }
  if (si.si_pid == 0)
    return; /* still running */
  p->reaped = true;
  p->code = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
}

/* Reaps if possible; returns 1 when ended (0 or CF_ESYS in *rc), else 0. */
static bool ended(cf_process *p, int *rc) {
  pthread_mutex_lock(&p->mu);
  try_reap(p);
  bool done = p->reaped;
  *rc = p->lost ? CF_ESYS : 0;
  pthread_mutex_unlock(&p->mu);
  return done;
}

#define LOST_WHY                                                               \
  "the child was reaped by someone else (waitpid(-1) or SIGCHLD ignored): "    \
  "its exit code is lost"

int cf_process_join(cf_process *p, double timeout_s) {
  if (!p)
    return CF__FAIL(CF_EINVAL, "NULL process");
  cf_deadline d;
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  for (;;) {
    int rc;
    if (ended(p, &rc))
      return rc ? CF__FAIL(rc, LOST_WHY) : 0;
    double left = cf__deadline_remaining(&d);
    if (left <= 0)
      return CF__FAILF(CF_ETIMEDOUT, "%s (pid %d) is still running", p->name,
                       (int)p->pid);
    struct timespec ts, *tsp = NULL;
    if (!d.forever) {
      ts.tv_sec = (time_t)left;
      ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
      tsp = &ts;
    }
    struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
    if (ppoll(&pfd, 1, tsp, NULL) < 0 && errno != EINTR)
      return CF__FAILF(CF_ESYS, "ppoll on the pidfd failed: %s",
                       strerror(errno));
  }
}

bool cf_process_is_alive(cf_process *p) {
  if (!p)
    return false;
  int rc;
  return !ended(p, &rc);
}

int cf_process_exitcode(cf_process *p, int *code) {
  if (!p || !code)
    return CF__FAIL(CF_EINVAL, !p ? "NULL process" : "NULL code");
  pthread_mutex_lock(&p->mu);
  try_reap(p);
  bool reaped = p->reaped, lost = p->lost;
  if (reaped && !lost)
    *code = p->code;
  pthread_mutex_unlock(&p->mu);
  if (!reaped)
    return CF__FAIL(CF_EINVALSTATE, "the process is still running");
  return lost ? CF__FAIL(CF_ESYS, LOST_WHY) : 0;
}

/* ---- signals --------------------------------------------------------------
 */

static int send_signal(cf_process *p, int sig, const char *call) {
  if (!p)
    return cf__fail_at(call, CF_EINVAL, "NULL process");
  if (syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0) == 0)
    return 0;
  if (errno == ESRCH) /* ended (and reaped): nothing to do, as Python */
    return 0;
  return cf__fail_fmt(call, CF_ESYS, "pidfd_send_signal failed: %s",
                      strerror(errno));
}

int cf_process_terminate(cf_process *p) {
  return send_signal(p, SIGTERM, __func__);
}

int cf_process_kill(cf_process *p) {
  return send_signal(p, SIGKILL, __func__);
}

/* ---- properties, freeing ----------------------------------------------------
 */

pid_t cf_process_pid(const cf_process *p) {
  return p ? p->pid : 0;
}

const char *cf_process_name(const cf_process *p) {
  return p ? p->name : NULL;
}

bool cf_process_daemon(const cf_process *p) {
  return p && p->daemon;
}

int cf_process_free(cf_process *p) {
  if (!p)
    return 0;
  int rc;
  if (!ended(p, &rc))
    return CF__FAILF(CF_EBUSY,
                     "%s (pid %d) is still running: join, terminate or kill "
                     "it first",
                     p->name, (int)p->pid);
  close(p->pidfd);
  pthread_mutex_destroy(&p->mu);
  free(p->name);
  free(p);
  return 0;
}
