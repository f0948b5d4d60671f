/* The process pool executor: what the public calls do (submit, map,
 * shutdown, free) and the fork handlers. How the parts fit:
 * process_pool_internal.h. */
#include "executor/process_pool_internal.h"

/* ---- fork handlers (see process_pool_internal.h) ------------------------ */

static pthread_mutex_t pools_mu = PTHREAD_MUTEX_INITIALIZER;
static ppool *pools; /* every pool of this process; guarded by pools_mu */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
_Thread_local bool cf__pp_forking_server; /* this manager forks its server */
bool cf__pp_atfork_off;                   /* in the fork server: never on */

static bool atfork_skip(void) {
  return cf__pp_forking_server || cf__pp_atfork_off;
}

static void atfork_prepare(void) {
  if (atfork_skip())
    return;
  pthread_mutex_lock(&pools_mu);
  for (ppool *p = pools; p; p = p->next_pool)
    pthread_mutex_lock(&p->fd_mu);
}

static void atfork_parent(void) {
  if (atfork_skip())
    return;
  for (ppool *p = pools; p; p = p->next_pool)
    pthread_mutex_unlock(&p->fd_mu);
  pthread_mutex_unlock(&pools_mu);
}

/* In the host's child: the pools' sockets are closed, so that the workers
 * and fork servers, which belong to the parent, see end-of-file when the
 * parent hangs up. The pools are unusable here (no manager thread). */
static void atfork_child(void) {
  if (atfork_skip())
    return;
  for (ppool *p = pools; p; p = p->next_pool) {
    int *fds[] = {&p->ctl_fd, &p->ctl_peer};
    for (size_t k = 0; k < 2; k++)
      if (*fds[k] >= 0) {
        close(*fds[k]);
        *fds[k] = -1;
      }
    for (size_t i = 0; i < p->n; i++) {
      pworker *w = &p->workers[i];
      if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
      }
      if (w->area_fd >= 0) {
        close(w->area_fd);
        w->area_fd = -1;
      }
    }
    pthread_mutex_unlock(&p->fd_mu);
  }
  pthread_mutex_unlock(&pools_mu);
}

static void atfork_register(void) {
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static void pool_register(ppool *p) {
  pthread_once(&atfork_once, atfork_register);
  pthread_mutex_lock(&pools_mu);
  p->next_pool = pools;
  pools = p;
  pthread_mutex_unlock(&pools_mu);
}

static void pool_unregister(ppool *p) {
  pthread_mutex_lock(&pools_mu);
  for (ppool **pp = &pools; *pp; pp = &(*pp)->next_pool)
    if (*pp == p) {
      *pp = p->next_pool;
      break;
    }
  bool last = pools == NULL;
  pthread_mutex_unlock(&pools_mu);
  if (last) /* no pool left to send big inputs to: give their memory back */
    cf__pp_warm_drop();
}

/* ---- the pool's futures ---------------------------------------------------
 *
 * A thread that waits for one of the pool's futures may do the manager's
 * work itself (cf__pp_drive_wait), so the future must find its pool, and
 * must not touch it once it is freed: each future holds a reference to
 * the pool's link, whose `pool` goes NULL (under `mu`) when the pool is
 * freed. A waiter holds `mu` while it drives. */
typedef struct pp_link {
  _Atomic uint32_t refs; /* the pool's, and one per future */
  pthread_mutex_t mu;
  ppool *pool; /* guarded by mu; NULL once freed */
} pp_link;

typedef struct pp_future {
  cf_future f;
  pp_link *link;
} pp_future;

static void link_unref(pp_link *l) {
  if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1) {
    pthread_mutex_destroy(&l->mu);
    free(l);
  }
}

static void pp_future_dealloc(cf_future *f) {
  pp_future *x = (pp_future *)f;
  link_unref(x->link);
  cf__free(x, sizeof *x);
}

static int pp_future_drive(cf_future *f, const cf_deadline *d) {
  pp_link *l = ((pp_future *)f)->link;
  if (pthread_mutex_trylock(&l->mu) != 0)
    return CF_EBUSY; /* another waiter drives, or the pool is being freed */
  int rc = l->pool && !cf_future_done(f) ? cf__pp_drive_wait(l->pool, f, d)
           : l->pool                     ? 0
                                         : CF_EBUSY;
  pthread_mutex_unlock(&l->mu);
  return rc;
}

static const cf__driver pp_driver = {.dealloc = pp_future_dealloc,
                                     .drive = pp_future_drive};

/* A future of p's, or NULL (no memory). */
static cf_future *pp_future_new(ppool *p) {
  pp_future *x = cf__alloc(sizeof *x);
  if (!x)
    return NULL;
  cf__future_init(&x->f, pp_future_dealloc);
  x->link = p->link;
  atomic_fetch_add_explicit(&p->link->refs, 1, memory_order_relaxed);
  return &x->f;
}

/* ---- the executor interface ---------------------------------------------- */

/* Makes the region (see region_head) for p: a memfd, mapped. Returns 0
 * or -1 (errno). */
static int make_region(ppool *p, uint64_t init_ref, const uint64_t *arg_ref) {
  p->region_len = region_size(p->n, p->exec_server);
  p->region_fd = memfd_create("cfutures-pool", MFD_CLOEXEC);
  if (p->region_fd < 0 || ftruncate(p->region_fd, (off_t)p->region_len) != 0)
    return -1;
  void *m = mmap(NULL, p->region_len, PROT_READ | PROT_WRITE, MAP_SHARED,
                 p->region_fd, 0);
  if (m == MAP_FAILED)
    return -1;
  region_head *r = p->region = m;
  r->magic = REGION_MAGIC;
  r->n = (uint32_t)p->n;
  r->has_init = p->o.initializer != NULL;
  r->init_ref = init_ref;
  r->initarg = arg_ref ? *arg_ref : (uint64_t)(uintptr_t)p->o.initarg;
  r->initarg_is_ref = arg_ref != NULL;
  r->max_tasks_per_child = p->o.max_tasks_per_child;
  r->task_timeout_s = p->o.task_timeout_s;
  fork_faults ff = cf__pp_fork_faults_from_env(); /* tests only */
  r->ff_skip = ff.skip;
  r->ff_fail = ff.fail;
  p->shared = region_slots(r);
  return 0;
}

/* Publishes the path of ref's object in the region (and those of the
 * objects before it), before anything that needs it reaches a worker. */
static void publish_object(ppool *p, uint64_t ref) {
  uint32_t id = (uint32_t)(ref >> CF__FNREF_OFF_BITS);
  region_head *r = p->region;
  if (id < atomic_load_explicit(&r->nobjs, memory_order_acquire))
    return;
  pthread_mutex_lock(&p->objs_mu);
  uint32_t n = atomic_load_explicit(&r->nobjs, memory_order_relaxed);
  for (; n <= id; n++) {
    const char *path = cf__fnref_path(n);
    snprintf(region_path(r, n), CF__FNREF_PATH_MAX, "%s", path ? path : "");
  }
  /* the paths before the count: a worker reads them after it */
  atomic_store_explicit(&r->nobjs, n, memory_order_release);
  pthread_mutex_unlock(&p->objs_mu);
}

/* What goes on the wire for task function fn: its address with
 * CF_START_FORK, else its reference (core/fnref.h), its object's path
 * published in the region first. Returns 0 or CF_EINVAL/CF_ENOMEM
 * (cf_last_error set). */
static int fn_wire(ppool *p, uintptr_t fn, uint64_t *out) {
  if (!p->exec_server) {
    *out = (uint64_t)fn;
    return 0;
  }
  int rc = cf__fnref_make(fn, out);
  if (rc == 0)
    publish_object(p, *out);
  return rc;
}

/* Queues t (its futures already made); on error frees it. */
static int push_task(ppool *p, ptask *t) {
  pthread_mutex_lock(&p->mu);
  int rc = p->shutdown ? CF_ESHUTDOWN : p->broken ? CF_EBROKEN : 0;
  if (rc == 0) {
    if (p->tail)
      p->tail->next = t;
    else
      p->head = t;
    p->tail = t;
    p->npending++;
  }
  pthread_mutex_unlock(&p->mu);
  if (rc != 0) {
    cf__pp_task_free(t);
    return rc;
  }
  /* seq_cst: see drive_leave. The task goes to a worker now, from this
   * thread, if nobody holds the drive; else its holder sees the push. */
  atomic_fetch_add(&p->pushes, 1);
  cf__pp_drive_submit(p);
  return 0;
}

static int enqueue(ppool *p, uint32_t kind, uint64_t fn, const void *data,
                   size_t len, cf_destroy_fn destroy, cf_future **out) {
  ptask *t = calloc(1, sizeof *t);
  cf_future *f = pp_future_new(p);
  int mfd = t && f ? cf__pp_eager_memfd(data, len) : -1;
  void *copy = len && mfd < 0 ? malloc(len) : NULL;
  if (!t || !f || (len && mfd < 0 && !copy)) {
    free(t);
    cf_future_unref(f);
    free(copy);
    return CF_ENOMEM;
  }
  if (copy)
    memcpy(copy, data, len);
  t->mfd = mfd;
  t->f = cf_future_ref(f);
  t->kind = kind;
  t->fn = fn;
  t->data = copy;
  t->len = len;
  t->destroy = destroy;
  int rc = push_task(p, t);
  if (rc != 0) {
    cf_future_unref(f);
    return rc;
  }
  *out = f;
  return 0;
}

/* One task, one message and one future for `count` map items: each
 * item's bytes are copied; in the worker fn gets a pointer to its copy
 * (KIND_CHUNK) or bytes its bytes (KIND_CHUNK_BYTES); the future's result
 * is the chunk's outcomes (cf__chunk). */
static int pp_submit_chunk(cf_executor *ex, cf_fn fn, cf_proc_fn bytes,
                           const void *items, size_t count, size_t item_size,
                           cf_destroy_fn destroy, cf_future **out) {
  ppool *p = (ppool *)ex;
  if (count == 0 || item_size > (SIZE_MAX - 16) / count)
    return CF_EINVAL;
  uint64_t w;
  int rc = fn_wire(p, bytes ? (uintptr_t)bytes : (uintptr_t)fn, &w);
  if (rc)
    return rc;
  size_t len = 16 + count * item_size;
  ptask *t = calloc(1, sizeof *t);
  cf__chunk *acc = calloc(1, sizeof *acc);
  char *data = malloc(len);
  cf_future *f = t && acc && data ? pp_future_new(p) : NULL;
  if (!f) {
    free(t);
    free(acc);
    free(data);
    return CF_ENOMEM;
  }
  uint64_t c = count, sz = item_size;
  memcpy(data, &c, 8);
  memcpy(data + 8, &sz, 8);
  memcpy(data + 16, items, count * item_size);
  *acc = (cf__chunk){.count = count,
                     .bytes = bytes != NULL,
                     .destroy = destroy,
                     .pool_refs = 1};
  *t = (ptask){.kind = bytes ? KIND_CHUNK_BYTES : KIND_CHUNK,
               .f = cf_future_ref(f),
               .acc = acc,
               .count = count,
               .fn = w,
               .data = data,
               .len = len,
               .mfd = -1,
               .destroy = destroy};
  rc = push_task(p, t);
  if (rc != 0) {
    cf_future_unref(f);
    return rc;
  }
  *out = f;
  return 0;
}

static int pp_submit(cf_executor *ex, cf_fn fn, void *arg,
                     cf_destroy_fn destroy, cf_future **out) {
  uint64_t w;
  int rc = fn_wire((ppool *)ex, (uintptr_t)fn, &w);
  return rc ? rc
            : enqueue((ppool *)ex, KIND_VALUE, w, &arg, sizeof arg, destroy,
                      out);
}

int cf_process_pool_submit(cf_executor *ex, cf_proc_fn fn, const void *data,
                           size_t len, cf_future **out) {
  if (out)
    *out = NULL;
  if (!ex || !fn || !out || (!data && len) || cf_process_pool_size(ex) == 0)
    return CF__FAIL(CF_EINVAL, !ex              ? "NULL executor"
                               : !fn            ? "NULL task function"
                               : !out           ? "NULL out"
                               : (!data && len) ? "NULL data with len > 0"
                                                : "not a process pool");
  uint64_t w;
  int rc = fn_wire((ppool *)ex, (uintptr_t)fn, &w);
  if (rc)
    return cf__fail_retag(__func__, rc);
  rc = enqueue((ppool *)ex, KIND_BYTES, w, data, len, NULL, out);
  return rc ? cf__fail_submit(__func__, rc) : 0;
}

static int pp_shutdown(cf_executor *ex, bool wait, bool cancel_futures) {
  ppool *p = (ppool *)ex;
  pthread_mutex_lock(&p->mu);
  /* Done-callbacks run on the manager thread, or on a thread that holds
   * the drive (see ppool.drive), neither of which can wait for the
   * manager: refuse, as the thread pool does from its workers. */
  if (wait && (pthread_equal(pthread_self(), p->manager_self) ||
               cf__pp_driving(p))) {
    pthread_mutex_unlock(&p->mu);
    return CF_EDEADLK;
  }
  p->shutdown = true;
  ptask *list = cancel_futures ? p->head : NULL;
  if (cancel_futures) {
    p->head = p->tail = NULL;
    p->npending = 0;
  }
  pthread_mutex_unlock(&p->mu);
  while (list) {
    ptask *next = list->next;
    cf__future_cancel(list->f);
    cf__pp_task_free(list);
    list = next;
  }
  cf__pp_ring(p);
  if (!wait)
    return 0;
  pthread_mutex_lock(&p->join_mu);
  if (!p->joined) {
    pthread_join(p->manager, NULL); /* it reaps the fork server */
    p->joined = true;
  }
  pthread_mutex_unlock(&p->join_mu);
  return 0;
}

static void pool_free(ppool *p) {
  pool_unregister(p);
  if (p->link) { /* no waiter drives it from now on */
    pthread_mutex_lock(&p->link->mu);
    p->link->pool = NULL;
    pthread_mutex_unlock(&p->link->mu);
    link_unref(p->link);
  }
  if (p->wake_fd >= 0)
    close(p->wake_fd);
  pthread_cond_destroy(&p->started_cv);
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->join_mu);
  pthread_mutex_destroy(&p->fd_mu);
  free(p->pfds);
  free(p->slot_of);
  free(p->workers);
  if (p->region)
    munmap(p->region, p->region_len);
  if (p->region_fd >= 0)
    close(p->region_fd);
  pthread_mutex_destroy(&p->objs_mu);
  free(p);
}

static void pp_destroy(cf_executor *ex) {
  pool_free((ppool *)ex);
}

static size_t pp_window(const cf_executor *ex) {
  return 2 * ((const ppool *)ex)->n;
}

static const struct cf_executor_vt pp_vt = {
    .name = "process_pool",
    .submit = pp_submit,
    .submit_chunk = pp_submit_chunk,
    .shutdown = pp_shutdown,
    .destroy = pp_destroy,
    .default_window = pp_window,
};

size_t cf_process_pool_size(const cf_executor *ex) {
  return ex && ex->vt == &pp_vt ? ((const ppool *)ex)->n : 0;
}

int cf_process_pool_map_bytes(cf_executor *ex, cf_proc_fn fn, const void *items,
                              size_t n, size_t item_size,
                              const cf_map_opts *opts, cf_map **out) {
  if (out)
    *out = NULL;
  if (ex && cf_process_pool_size(ex) == 0)
    return CF__FAIL(CF_EINVAL, "not a process pool");
  if (opts && opts->result_destroy)
    return CF__FAIL(CF_EINVAL, "result_destroy is set: the map owns each "
                               "item's cf_buf");
  return cf__map_array_bytes(__func__, ex, fn, items, n, item_size, opts, out);
}

int cf_process_pool_new(const cf_process_pool_opts *opts, cf_executor **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  cf_process_pool_opts o = opts ? *opts : (cf_process_pool_opts){0};
  if (o.task_timeout_s != o.task_timeout_s || o.task_timeout_s < 0)
    return CF__FAIL(CF_EINVAL, "task_timeout_s is NaN or negative");
  if (o.max_workers > MAX_PROC_WORKERS)
    return CF__FAILF(CF_EINVAL, "max_workers %zu is above %d", o.max_workers,
                     MAX_PROC_WORKERS);
  if (o.start_method != CF_START_FORKSERVER && o.start_method != CF_START_FORK)
    return CF__FAILF(CF_EINVAL,
                     "start_method %d is neither "
                     "CF_START_FORKSERVER nor CF_START_FORK",
                     (int)o.start_method);
  uint64_t init_ref = 0, arg_ref = 0;
  bool arg_is_ref = false;
  if (o.start_method == CF_START_FORKSERVER && o.initializer) {
    if (cf__fnref_make((uintptr_t)o.initializer, &init_ref) != 0)
      return cf__fail_retag(__func__, CF_EINVAL);
    /* initarg pointing into the program's static data (or a library's)
     * travels as a reference, like a function; anything else as is */
    arg_is_ref =
        o.initarg && cf__fnref_make((uintptr_t)o.initarg, &arg_ref) == 0;
  }
  if (o.task_timeout_s > MAX_TASK_TIMEOUT_S) /* +inf too: forever */
    o.task_timeout_s = 0;
  size_t n = o.max_workers;
  if (n == 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    n = cpus > 0 ? (size_t)cpus : 1;
  }
  ppool *p = calloc(1, sizeof *p);
  if (!p)
    return CF__FAIL(CF_ENOMEM, "no memory for the pool");
  p->base.vt = &pp_vt;
  p->o = o;
  p->n = n;
  p->server = -1;
  p->ctl_fd = -1;
  p->ctl_peer = -1;
  p->region_fd = -1;
  p->exec_server = o.start_method == CF_START_FORKSERVER;
  p->drive = 1; /* the manager thread's, from the start */
  pthread_mutex_init(&p->objs_mu, NULL);
  pthread_mutex_init(&p->mu, NULL);
  pthread_mutex_init(&p->fd_mu, NULL);
  pthread_mutex_init(&p->join_mu, NULL);
  pthread_cond_init(&p->started_cv, NULL);
  p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  p->workers = calloc(n, sizeof *p->workers);
  p->pfds = calloc(n + 2, sizeof *p->pfds);
  p->slot_of = calloc(n + 2, sizeof *p->slot_of);
  if (make_region(p, init_ref, arg_is_ref ? &arg_ref : NULL) != 0)
    p->shared = NULL;
  p->link = calloc(1, sizeof *p->link);
  if (p->link) {
    atomic_init(&p->link->refs, 1);
    pthread_mutex_init(&p->link->mu, NULL);
    p->link->pool = p;
  }
  if (!p->workers || !p->pfds || !p->slot_of || !p->shared || !p->link ||
      p->wake_fd < 0) {
    int rc = p->wake_fd < 0 ? CF_ESYS : CF_ENOMEM;
    pool_free(p);
    return CF__FAIL(rc, rc == CF_ESYS ? "eventfd failed"
                                      : "no memory for the workers' tables");
  }
  for (size_t i = 0; i < n; i++)
    p->workers[i].fd = p->workers[i].area_fd = p->workers[i].tx_fd =
        p->workers[i].last_mfd = -1;
  if (p->exec_server && o.initializer) {
    publish_object(p, init_ref);
    if (arg_is_ref)
      publish_object(p, arg_ref);
  }
  pool_register(p); /* for the fork handlers */
  cf__future_set_driver(&pp_driver);
  /* The manager runs with every signal blocked: the host's signals go to
   * the host's threads, and the fork server it forks starts with no
   * handler able to run. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int prc = pthread_create(&p->manager, NULL, cf__pp_manager_main, p);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (prc != 0) {
    pool_free(p);
    return CF__FAIL(CF_ESYS, "the manager thread could not be created");
  }
  pthread_mutex_lock(&p->mu);
  while (!p->started)
    pthread_cond_wait(&p->started_cv, &p->mu);
  int rc = p->start_rc, err = p->start_errno;
  pthread_mutex_unlock(&p->mu);
  if (rc != 0) {
    pthread_join(p->manager, NULL);
    pool_free(p);
    return CF__FAILF(rc, "the fork server could not be started: %s",
                     strerror(err));
  }
  *out = &p->base;
  return 0;
}
