/* Thread: Python's threading.Thread over a pthread, a monitor and a
 * future.
 *
 * The thread runs its function through cf__run_task, which completes the
 * thread's future (result, or failure code and cf_fail message); then it
 * sets `done` under the monitor and wakes the joiners. A join waits for
 * `done` on the monitor's CLOCK_MONOTONIC condition (so a timed join is
 * immune to wall-clock steps, which pthread_timedjoin_np's CLOCK_REALTIME
 * deadline is not), then the first joiner releases the pthread with
 * pthread_join, under the monitor (the thread no longer takes the monitor
 * once it has set `done`, so that join cannot block on us).
 *
 * cf_thread_free on a running thread detaches it: the thread frees the
 * object itself when it ends. `done` and `detached` are both read and
 * written under the monitor, so exactly one side frees.
 */
#include <cfutures/sync.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/report.h"
#include "executor/executor_internal.h"
#include "futures/future_internal.h"
#include "sync/monitor.h"

struct cf_thread {
  cf__monitor m;
  bool started;  /* guarded by m: the thread runs, self and tid are set */
  bool done;     /* guarded by m: fn returned, the future is complete */
  bool joined;   /* guarded by m: pthread_join was called */
  bool detached; /* guarded by m: cf_thread_free came first; t frees itself */
  pthread_t th;
  unsigned long self; /* written before `started`, constant after */
  pid_t tid;          /* the same */
  cf_fn fn;
  void *arg;
  cf_destroy_fn destroy;
  cf_future *f; /* t's reference */
  char *name;
};

/* The cf_thread the calling thread runs, for cf_thread_join's self-check. */
static _Thread_local cf_thread *current;
/* Default names, "Thread-1" on: a counter with no ordering duty. */
static atomic_uint next_number;

static const cf_deadline forever = {.forever = true};

static void thread_destroy(cf_thread *t) {
  cf_future_unref(t->f);
  cf__monitor_destroy(&t->m);
  free(t->name);
  free(t);
}

static void *thread_main(void *p) {
  cf_thread *t = p;
  current = t;
  char sysname[16]; /* the kernel's limit: 15 bytes and the NUL */
  snprintf(sysname, sizeof sysname, "%s", t->name);
  pthread_setname_np(pthread_self(), sysname);
  cf__monitor_lock(&t->m);
  t->self = (unsigned long)pthread_self();
  t->tid = (pid_t)syscall(SYS_gettid);
  t->started = true;
  pthread_cond_broadcast(&t->m.cv);
  cf__monitor_unlock(&t->m);

  cf__run_task(t->f, t->fn, t->arg, t->destroy);

  cf__monitor_lock(&t->m);
  t->done = true;
  pthread_cond_broadcast(&t->m.cv);
  bool detached = t->detached;
  cf__monitor_unlock(&t->m);
  if (detached) /* nobody else holds t any more */
    thread_destroy(t);
  return NULL;
}

int cf_thread_start(cf_fn fn, void *arg, const cf_thread_opts *opts,
                    cf_thread **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  if (!fn)
    return CF__FAIL(CF_EINVAL, "NULL function");
  cf_thread *t = calloc(1, sizeof *t);
  if (!t)
    return CF__FAIL(CF_ENOMEM, "out of memory");
  const char *name = opts ? opts->name : NULL;
  if (name)
    t->name = strdup(name);
  else if (asprintf(&t->name, "Thread-%u",
                    atomic_fetch_add_explicit(&next_number, 1,
                                              memory_order_relaxed) +
                        1) < 0)
    t->name = NULL;
  t->f = cf__future_new_owned();
  if (!t->name || !t->f) {
    cf_future_unref(t->f);
    free(t->name);
    free(t);
    return CF__FAIL(CF_ENOMEM, "out of memory");
  }
  int rc = cf__monitor_init(&t->m, false);
  if (rc) {
    cf_future_unref(t->f);
    free(t->name);
    free(t);
    return CF__RET(rc);
  }
  /* Running from now on: a cancel cannot stop the function. */
  cf__future_set_running(t->f);
  t->fn = fn;
  t->arg = arg;
  t->destroy = opts ? opts->result_destroy : NULL;
  if (pthread_create(&t->th, NULL, thread_main, t) != 0) {
    thread_destroy(t);
    return CF__FAIL(CF_ESYS, "pthread_create failed");
  }
  cf__monitor_lock(&t->m);
  /* Holds m: wait until the thread runs (Python's start does too). */
  while (!t->started)
    cf__monitor_wait(&t->m, &forever);
  cf__monitor_unlock(&t->m);
  *out = t;
  return 0;
}

int cf_thread_join(cf_thread *t, double timeout_s) {
  if (!t)
    return CF__FAIL(CF_EINVAL, "NULL thread");
  cf_deadline d;
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  if (current == t)
    return CF__FAIL(CF_EDEADLK, "a thread cannot join itself");
  cf__monitor_lock(&t->m);
  /* Holds m: wait for the end of fn. */
  while (!t->done) {
    if (cf__monitor_wait(&t->m, &d) == CF_ETIMEDOUT && !t->done) {
      cf__monitor_unlock(&t->m);
      return CF__FAIL(CF_ETIMEDOUT, "the thread is still running");
    }
  }
  if (!t->joined) {
    pthread_join(t->th, NULL);
    t->joined = true;
  }
  cf__monitor_unlock(&t->m);
  return 0;
}

bool cf_thread_is_alive(cf_thread *t) {
  if (!t)
    return false;
  cf__monitor_lock(&t->m);
  bool alive = !t->done;
  cf__monitor_unlock(&t->m);
  return alive;
}

cf_future *cf_thread_future(cf_thread *t) {
  return t ? t->f : NULL;
}

const char *cf_thread_name(const cf_thread *t) {
  return t ? t->name : NULL;
}

unsigned long cf_thread_ident(const cf_thread *t) {
  return t ? t->self : 0;
}

pid_t cf_thread_native_id(const cf_thread *t) {
  return t ? t->tid : 0;
}

void cf_thread_free(cf_thread *t) {
  if (!t)
    return;
  cf__monitor_lock(&t->m);
  if (!t->done) {
    /* Still running: it frees itself when fn returns (it reads `detached`
     * under m after setting `done`). */
    t->detached = true;
    pthread_detach(t->th);
    cf__monitor_unlock(&t->m);
    return;
  }
  bool joined = t->joined;
  cf__monitor_unlock(&t->m);
  if (!joined)
    pthread_join(t->th, NULL);
  thread_destroy(t);
}
