/* The green pool (eventlet's GreenPool): an executor whose tasks run as
 * green tasks on one loop, at most `size` at a time.
 *
 * Submitted tasks wait in a FIFO. Up to `size` green "workers" are spawned
 * on the loop; each runs queued tasks one after another and ends when the
 * queue is empty, so an idle pool holds no green task. Since it is a
 * cf_executor, cf_submit, cf_map_array / cf_map_iter (imap, in input
 * order), shutdown and cf_executor_free all work on it; a task's waits
 * suspend only its green worker.
 *
 * Locking: `mu` guards the queue, the counts and the idle promise, so any
 * thread may submit; the tasks themselves run on the loop's thread.
 */
#include <cfutures/green.h>

#include <pthread.h>
#include <stdlib.h>

#include "core/report.h"
#include "executor/executor_internal.h"
#include "futures/future_internal.h"
#include "green/green_internal.h"

typedef struct item {
  struct item *next;
  cf_future *f; /* the caller's future (an owned one: only we complete it) */
  cf_fn fn;
  void *arg;
  cf_destroy_fn destroy;
} item;

typedef struct gpool {
  cf_executor base;
  cf_loop *loop;
  size_t size;
  pthread_mutex_t mu;
  item *head, *tail; /* mu */
  size_t queued;     /* mu */
  size_t workers;    /* mu: green workers alive */
  size_t busy;       /* mu: tasks running */
  bool shut;         /* mu */
  cf_future *idle;   /* mu: completed whenever nothing is queued or running */
} gpool;

/* mu held: if the pool has nothing to do, a new reference to the idle
 * promise, which the caller completes (set_idle) once it has let go of mu:
 * the waiter it wakes may free the pool, mutex and all, at once. */
static cf_future *maybe_idle(gpool *p) {
  if (p->queued == 0 && p->busy == 0 && p->workers == 0)
    return cf_future_ref(p->idle);
  return NULL;
}

static void set_idle(cf_future *idle) {
  if (idle) {
    cf_future_set_result(idle, NULL, NULL); /* fails if done already: fine */
    cf_future_unref(idle);
  }
}

/* mu held: the idle promise, fresh if the old one was completed. */
static void not_idle(gpool *p) {
  if (cf_future_done(p->idle)) {
    cf_future *f = cf_future_new();
    if (f) {
      cf_future_unref(p->idle);
      p->idle = f;
    }
  }
}

/* A green worker: runs queued tasks until none is left. */
static int worker(void *arg, void **out) {
  gpool *p = arg;
  *out = NULL;
  cf__green_set_tag(p);
  pthread_mutex_lock(&p->mu);
  for (;;) {
    item *it = p->head;
    if (!it)
      break;
    p->head = it->next;
    if (!p->head)
      p->tail = NULL;
    p->queued--;
    p->busy++;
    pthread_mutex_unlock(&p->mu);
    if (cf__future_set_running(it->f) == 0)
      cf__run_task(it->f, it->fn, it->arg, it->destroy);
    cf_future_unref(it->f);
    free(it);
    pthread_mutex_lock(&p->mu);
    p->busy--;
  }
  p->workers--;
  cf_future *idle = maybe_idle(p);
  pthread_mutex_unlock(&p->mu);
  set_idle(idle); /* p may be gone from here on */
  return 0;
}

/* mu held: spawns a worker if there is queued work and room for one. */
static int grow(gpool *p) {
  if (p->queued <= p->workers - p->busy || p->workers >= p->size)
    return 0;
  cf_future *w;
  int rc = cf_loop_spawn(p->loop, worker, p, &w);
  if (rc != 0)
    return rc;
  cf_future_unref(w); /* the worker ends on its own */
  p->workers++;
  return 0;
}

static int gp_submit(cf_executor *ex, cf_fn fn, void *arg,
                     cf_destroy_fn destroy, cf_future **out) {
  gpool *p = (gpool *)ex;
  item *it = malloc(sizeof *it);
  cf_future *f = cf__future_new_owned();
  if (!it || !f) {
    free(it);
    cf_future_unref(f);
    return CF_ENOMEM;
  }
  *it = (item){.f = cf_future_ref(f), .fn = fn, .arg = arg, .destroy = destroy};
  pthread_mutex_lock(&p->mu);
  if (p->shut) {
    pthread_mutex_unlock(&p->mu);
    cf_future_unref(f);
    cf_future_unref(f);
    free(it);
    return CF_ESHUTDOWN;
  }
  if (p->tail)
    p->tail->next = it;
  else
    p->head = it;
  p->tail = it;
  p->queued++;
  not_idle(p);
  int rc = grow(p);
  if (rc != 0 && p->workers == 0) {
    /* No worker and none can be made (the loop is being freed). */
    p->head = p->tail = NULL;
    p->queued = 0;
    cf_future *idle = maybe_idle(p);
    pthread_mutex_unlock(&p->mu);
    set_idle(idle);
    cf_future_unref(f);
    cf_future_unref(f);
    free(it);
    return rc;
  }
  pthread_mutex_unlock(&p->mu);
  *out = f;
  return 0;
}

/* Waits for the idle promise: by running the loop on its owner thread, by
 * suspending in a green task, or by blocking another thread (while the
 * owner runs the loop). */
static int wait_idle(gpool *p, double timeout_s) {
  pthread_mutex_lock(&p->mu);
  cf_future *idle = cf_future_ref(p->idle);
  pthread_mutex_unlock(&p->mu);
  int rc;
  if (cf_loop_current() == NULL && cf_loop_tasks(p->loop) > 0) {
    rc = cf_loop_run_until_complete(p->loop, idle, timeout_s);
    if (rc == CF_EPERM) /* not the owner: block until the owner runs it */
      rc = cf_future_result(idle, timeout_s, NULL);
  } else {
    rc = cf_future_result(idle, timeout_s, NULL);
  }
  cf_future_unref(idle);
  return rc;
}

static int gp_shutdown(cf_executor *ex, bool wait, bool cancel_futures) {
  gpool *p = (gpool *)ex;
  if (wait && cf__green_tag() == p)
    return CF_EDEADLK; /* one of our own workers would wait for itself */
  item *cancelled = NULL;
  cf_future *idle = NULL;
  pthread_mutex_lock(&p->mu);
  p->shut = true;
  if (cancel_futures) {
    cancelled = p->head;
    p->head = p->tail = NULL;
    p->queued = 0;
    idle = maybe_idle(p);
  }
  pthread_mutex_unlock(&p->mu);
  set_idle(idle);
  /* Cancel with no lock held: their callbacks may call anything. */
  while (cancelled) {
    item *next = cancelled->next;
    cf_future_cancel(cancelled->f);
    cf_future_unref(cancelled->f);
    free(cancelled);
    cancelled = next;
  }
  return wait ? wait_idle(p, CF_FOREVER) : 0;
}

static void gp_destroy(cf_executor *ex) {
  gpool *p = (gpool *)ex;
  cf_future_unref(p->idle);
  pthread_mutex_destroy(&p->mu);
  free(p);
}

static size_t gp_window(const cf_executor *ex) {
  return 2 * ((const gpool *)ex)->size;
}

static const struct cf_executor_vt gp_vt = {
    .name = "green_pool",
    .submit = gp_submit,
    .submit_batch = cf__submit_batch_each,
    .shutdown = gp_shutdown,
    .destroy = gp_destroy,
    .default_window = gp_window,
};

int cf_green_pool_new(cf_loop *l, size_t size, cf_executor **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  if (!l)
    return CF__FAIL(CF_EINVAL, "NULL loop");
  if (size == 0 || size > CF_GREEN_POOL_MAX)
    return CF__FAILF(CF_EINVAL, "size %zu is outside [1, %zu]", size,
                     (size_t)CF_GREEN_POOL_MAX);
  gpool *p = calloc(1, sizeof *p);
  cf_future *idle = cf_future_new();
  if (!p || !idle) {
    free(p);
    cf_future_unref(idle);
    return CF__FAIL(CF_ENOMEM, "no memory for the pool");
  }
  p->base.vt = &gp_vt;
  p->loop = l;
  p->size = size;
  pthread_mutex_init(&p->mu, NULL);
  p->idle = idle;
  cf_future_set_result(idle, NULL, NULL); /* idle until work comes */
  *out = &p->base;
  return 0;
}

int cf_green_pool_waitall(cf_executor *ex, double timeout_s) {
  if (!ex || ex->vt != &gp_vt)
    return CF__FAIL(CF_EINVAL, ex ? "not a green pool" : "NULL executor");
  if (timeout_s != timeout_s)
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  gpool *p = (gpool *)ex;
  if (cf__green_tag() == p)
    return CF__FAIL(CF_EDEADLK, "a task of this pool would wait for itself");
  int rc = wait_idle(p, timeout_s);
  return rc ? CF__FAIL(rc, "the pool still has tasks") : 0;
}

size_t cf_green_pool_running(const cf_executor *ex) {
  if (!ex || ex->vt != &gp_vt)
    return 0;
  gpool *p = (gpool *)ex;
  pthread_mutex_lock(&p->mu);
  size_t n = p->busy;
  pthread_mutex_unlock(&p->mu);
  return n;
}
