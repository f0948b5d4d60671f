/* The work-stealing thread pool.
 *
 * Wiring: each worker owns a Chase-Lev deque (deque.h). Submissions from
 * threads outside the pool go through the injection queue (inject.h); a
 * worker that runs dry takes a batch from it, runs the oldest task and puts
 * the rest on its own deque (oldest at the bottom, so outside work runs
 * first-in first-out), where other workers can steal them. Tasks submitted
 * by a worker go to its own deque.
 *
 * Parking: an idle worker searches (spins) for a bounded time, then
 * registers as sleeping (its `sleeping` flag and the pool's `nsleeping`
 * count), re-checks every queue and sleeps on its waiter (core/waiter.h).
 * Outside submitters wake one sleeper when no worker is searching; the
 * store-then-load on each side (push then read counts / count then read
 * queues) is ordered with seq_cst operations, so either the submitter sees
 * the sleeper or the sleeper sees the task. Workers pushing on their own
 * deque check `nsleeping` with a relaxed load (no fence on the fork-join
 * fast path): a missed wake there costs parallelism, never progress,
 * since the owner runs its own deque; sleepers also wake once a second.
 *
 * Helping: a worker that waits on a future (cf__wait_until) runs tasks
 * instead of sleeping: first its own deque (where the awaited task usually
 * is), then, below a nesting limit, the deque of the worker running the
 * awaited task (leapfrogging), outside work and steals.
 *
 * Shutdown: submitters announce themselves in `submitters` (a count plus
 * a SHUTDOWN bit), so once shutdown has set the bit and the count drained,
 * nothing more enters the injection queue; a worker exits when shut down
 * and no queue has work for it. Tasks still queued run (or are cancelled
 * with cancel_futures) before the workers exit.
 *
 * Locks: none on the submit path; the injection queue's consumer try-lock
 * (never waited for by workers). `join_lock` serialises shutdown's joins.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ck_pr.h>
#include <cfutures/thread_pool.h>

#include "core/alloc.h"
#include "core/waiter.h"
#include "executor/deque.h"
#include "executor/inject.h"
#include "executor/executor_internal.h"
#include "futures/future_internal.h"

#define MAX_WORKERS      1024
#define SEARCH_NS        50000u /* idle spin before parking */
#define HELP_DEPTH_LIMIT 64     /* nested helping frames that may steal */
#define BACKSTOP_S       1.0    /* sleepers re-check this often */
#define SHUTDOWN_BIT     ((uint64_t)1 << 63)
#define INJECT_BATCH     32 /* tasks a worker takes from outside at once */

typedef struct pool pool;

typedef struct task {
  cf_future fut; /* first: a task is its future */
  cf_fn fn;
  void *arg;
  cf_destroy_fn destroy;
  cf__inject_node link; /* injection queue */
} task;

typedef struct worker {
  cf__deque dq;
  cf__helper helper;
  pool *p;
  cf__waiter *waiter;        /* set by the worker thread before it is started */
  _Atomic uint32_t sleeping; /* 1 while registered as a sleeper */
  unsigned index;
  unsigned help_depth; /* worker thread only */
  uint64_t rng;        /* worker thread only */
  pthread_t thread;
  bool started;
} worker;

struct pool {
  cf_executor base;
  size_t n;
  worker *workers;
  cf__inject inject;
  /* Apart: submitters read nsleeping on every submit, while searching
   * workers write nsearching often. */
  _Alignas(CF__CACHE_LINE) _Atomic uint32_t nsleeping;
  _Alignas(CF__CACHE_LINE) _Atomic uint32_t nsearching;
  _Alignas(CF__CACHE_LINE) _Atomic uint64_t submitters;
  /* read-mostly flags, on a line of their own (workers read them per task) */
  _Alignas(CF__CACHE_LINE) _Atomic bool shutdown; /* submitters drained */
  _Atomic bool cancelling; /* cancel_futures: drop queued tasks */
  _Atomic bool broken;     /* an initializer failed */
  _Alignas(CF__CACHE_LINE) _Atomic uint32_t started; /* workers with a waiter */
  cf__waiter *creator; /* woken as workers start */
  int (*initializer)(void *);
  void *initarg;
  char name_prefix[16];
  pthread_mutex_t join_lock;
  bool joined; /* guarded by join_lock */
};

static _Thread_local worker *tls_worker CF__TLS_FAST;

/* ---- tasks --------------------------------------------------------------- */

static void task_dealloc(cf_future *f) {
  cf__free(f, sizeof(task));
}

static task *task_new(cf_fn fn, void *arg, cf_destroy_fn destroy) {
  task *t = cf__alloc(sizeof *t);
  if (!t)
    return NULL;
  cf__future_init(&t->fut, task_dealloc);
  /* Two references: the caller's future and the pool's. */
  atomic_store_explicit(&t->fut.refs, 2, memory_order_relaxed);
  t->fn = fn;
  t->arg = arg;
  t->destroy = destroy;
  return t;
}

/* Runs (or fails, or cancels) a task on worker w and drops the pool's
 * reference. The future's pool_tag records the runner (index + 1), so that
 * a worker waiting on this task can help its runner (leapfrogging). */
static void run(worker *w, task *t) {
  pool *p = w->p;
  atomic_store_explicit(&t->fut.pool_tag, w->index + 1, memory_order_relaxed);
  if (atomic_load_explicit(&p->broken, memory_order_acquire)) {
    char *msg = strdup("the pool's initializer failed");
    if (cf__future_complete(&t->fut, CF_EBROKEN, NULL, NULL, msg) != 0)
      free(msg);
  } else if (atomic_load_explicit(&p->cancelling, memory_order_relaxed)) {
    cf__future_cancel(&t->fut);
  } else if (cf__future_set_running(&t->fut) == 0) {
    cf__run_task(&t->fut, t->fn, t->arg, t->destroy);
  }
  cf_future_unref(&t->fut);
}

/* ---- waking -------------------------------------------------------------- */

/* Wakes one sleeping worker, if any. */
static void wake_one(pool *p) {
  for (size_t i = 0; i < p->n; i++) {
    worker *w = &p->workers[i];
    uint32_t one = 1;
    if (atomic_load_explicit(&w->sleeping, memory_order_relaxed) &&
        atomic_compare_exchange_strong_explicit(&w->sleeping, &one, 0,
                                                memory_order_acq_rel,
                                                memory_order_relaxed)) {
      atomic_fetch_sub_explicit(&p->nsleeping, 1, memory_order_relaxed);
      cf__waiter_wake(w->waiter);
      return;
    }
  }
}

static void wake_all(pool *p) {
  for (size_t i = 0; i < p->n; i++) {
    worker *w = &p->workers[i];
    uint32_t one = 1;
    if (atomic_compare_exchange_strong_explicit(
            &w->sleeping, &one, 0, memory_order_acq_rel, memory_order_relaxed))
      atomic_fetch_sub_explicit(&p->nsleeping, 1, memory_order_relaxed);
    if (w->waiter)
      cf__waiter_wake(w->waiter);
  }
}

/* ---- finding work -------------------------------------------------------- */

static bool work_visible(pool *p) {
  if (cf__inject_nonempty(&p->inject)) /* seq_cst: Dekker with submit */
    return true;
  for (size_t i = 0; i < p->n; i++)
    if (cf__deque_nonempty(&p->workers[i].dq))
      return true;
  return false;
}

static task *task_of(cf__inject_node *n) {
  return (task *)((char *)n - offsetof(task, link));
}

/* Takes up to INJECT_BATCH outside tasks: returns the oldest to run now
 * and leaves the rest on w's deque for w (oldest first) and for thieves.
 * NULL if the queue is empty, busy, or another worker holds it. */
static task *grab_injected(worker *w) {
  pool *p = w->p;
  if (!cf__inject_nonempty(&p->inject) || !cf__inject_trylock(&p->inject))
    return NULL;
  task *batch[INJECT_BATCH];
  int n = 0;
  cf__inject_node *node;
  while (n < INJECT_BATCH && (node = cf__inject_pop(&p->inject)))
    batch[n++] = task_of(node);
  cf__inject_unlock(&p->inject);
  if (n == 0)
    return NULL;
  /* Newest first onto the deque, so that our LIFO takes go oldest first. */
  for (int i = n - 1; i > 0; i--)
    if (!cf__deque_push(&w->dq, batch[i]))
      run(w, batch[i]); /* out of memory growing the deque: run it here */
  if (n > 1 && atomic_load_explicit(&p->nsleeping, memory_order_relaxed))
    wake_one(p);
  return batch[0];
}

static uint64_t next_rand(worker *w) {
  w->rng ^= w->rng << 13;
  w->rng ^= w->rng >> 7;
  w->rng ^= w->rng << 17;
  return w->rng;
}

static task *steal_any(worker *w) {
  pool *p = w->p;
  if (p->n < 2)
    return NULL;
  size_t start = (size_t)(next_rand(w) % p->n);
  for (int round = 0; round < 2; round++) {
    bool aborted = false;
    for (size_t k = 0; k < p->n; k++) {
      worker *v = &p->workers[(start + k) % p->n];
      if (v == w)
        continue;
      void *x = cf__deque_steal(&v->dq);
      if (x == CF__DEQUE_ABORT)
        aborted = true;
      else if (x)
        return x;
    }
    if (!aborted)
      break;
  }
  return NULL;
}

static task *find_work(worker *w) {
  task *t = cf__deque_take(&w->dq);
  if (t)
    return t;
  t = grab_injected(w);
  if (t)
    return t;
  return steal_any(w);
}

/* ---- parking ------------------------------------------------------------- */

/* Registers w as sleeping, re-checks for work, and sleeps on its waiter
 * until woken, the deadline, or the backstop. `seen` is the waiter sequence
 * read before the caller last looked for work. An idle worker (`idle`)
 * does not sleep once the pool is shut down: it is about to exit. */
static int park(worker *w, uint32_t seen, const cf_deadline *d, bool idle) {
  pool *p = w->p;
  atomic_store_explicit(&w->sleeping, 1, memory_order_relaxed);
  /* seq_cst: orders our registration before the re-check of the queues,
   * against submitters' push-then-read (Dekker). */
  atomic_fetch_add_explicit(&p->nsleeping, 1, memory_order_seq_cst);
  int rc = 0;
  if (!work_visible(p) &&
      !(idle && atomic_load_explicit(&p->shutdown, memory_order_acquire))) {
    cf_deadline backstop;
    cf__deadline_from_timeout(BACKSTOP_S, &backstop);
    const cf_deadline *use = &backstop;
    if (d && !d->forever && cf__deadline_remaining(d) < BACKSTOP_S)
      use = d;
    rc = cf__waiter_sleep(w->waiter, seen, use);
    if (rc == CF_ETIMEDOUT && use == &backstop)
      rc = 0;
  }
  uint32_t one = 1;
  if (atomic_compare_exchange_strong_explicit(
          &w->sleeping, &one, 0, memory_order_acq_rel, memory_order_relaxed))
    atomic_fetch_sub_explicit(&p->nsleeping, 1, memory_order_relaxed);
  return rc;
}

/* ---- helping (cf__helper) ------------------------------------------------ */

/* Steals from the worker running `awaited` (a task of ours), whose deque
 * holds the work that `awaited` itself waits for. */
static task *steal_from_runner(worker *w, cf_future *awaited) {
  if (!awaited || awaited->dealloc != task_dealloc)
    return NULL;
  uint32_t r = atomic_load_explicit(&awaited->pool_tag, memory_order_relaxed);
  if (r == 0 || r > w->p->n || r - 1 == w->index)
    return NULL;
  for (int tries = 0; tries < 4; tries++) {
    void *x = cf__deque_steal(&w->p->workers[r - 1].dq);
    if (x != CF__DEQUE_ABORT)
      return x;
  }
  return NULL;
}

static bool help(cf__helper *h, cf_future *awaited) {
  worker *w = (worker *)((char *)h - offsetof(worker, helper));
  /* The awaited task itself, if still ours, is on our deque: take first. */
  task *t = cf__deque_take(&w->dq);
  if (!t && w->help_depth < HELP_DEPTH_LIMIT) {
    t = steal_from_runner(w, awaited);
    if (!t)
      t = grab_injected(w);
    if (!t)
      t = steal_any(w);
  }
  if (!t)
    return false;
  w->help_depth++;
  run(w, t);
  w->help_depth--;
  return true;
}

static int help_park(cf__helper *h, uint32_t seen, const cf_deadline *d) {
  worker *w = (worker *)((char *)h - offsetof(worker, helper));
  /* Past the nesting limit we take no outside work, so new work must not
   * keep us awake: sleep until the awaited future wakes us. */
  if (w->help_depth >= HELP_DEPTH_LIMIT)
    return cf__waiter_sleep(w->waiter, seen, d);
  return park(w, seen, d, false);
}

/* ---- the worker loop ----------------------------------------------------- */

static void *worker_main(void *arg) {
  worker *w = arg;
  pool *p = w->p;
  tls_worker = w;
  char name[32];
  snprintf(name, sizeof name, "%s-%u", p->name_prefix, w->index);
  name[15] = '\0'; /* Linux allows 15 bytes */
  pthread_setname_np(pthread_self(), name);

  if (p->initializer && p->initializer(p->initarg) != 0)
    /* release: pairs with the acquire loads in run / enter_submit. */
    atomic_store_explicit(&p->broken, true, memory_order_release);

  for (;;) {
    task *t = find_work(w);
    if (t) {
      run(w, t);
      continue;
    }
    /* Search for a while before parking. (Limiting searchers to half the
     * workers, as Go and Tokio do, measured slower here for fork-join and
     * no faster for outside bursts on 2 cores.) */
    atomic_fetch_add_explicit(&p->nsearching, 1, memory_order_relaxed);
    uint64_t start = cf__now_ns();
    for (unsigned i = 1, pause = 1; !t; i++) {
      /* Exponential backoff keeps searchers from hammering the lines
       * that submitters write. */
      for (unsigned k = 0; k < pause; k++)
        ck_pr_stall();
      if (pause < 64)
        pause *= 2;
      t = find_work(w);
      if ((i & 7) == 0 && cf__now_ns() - start > SEARCH_NS)
        break;
    }
    uint32_t left =
        atomic_fetch_sub_explicit(&p->nsearching, 1, memory_order_seq_cst);
    if (t) {
      /* The last searcher to find work wakes another, in case there is
       * more (Go's rule). */
      if (left == 1 &&
          atomic_load_explicit(&p->nsleeping, memory_order_relaxed) &&
          work_visible(p))
        wake_one(p);
      run(w, t);
      continue;
    }
    uint32_t seen = cf__waiter_seq(w->waiter);
    t = find_work(w);
    if (t) {
      run(w, t);
      continue;
    }
    if (atomic_load_explicit(&p->shutdown, memory_order_acquire) &&
        !work_visible(p))
      break;
    park(w, seen, NULL, true);
  }
  w->waiter->helper = NULL;
  tls_worker = NULL;
  return NULL;
}

/* ---- submission ---------------------------------------------------------- */

static int enter_submit(pool *p) {
  /* acquire: pairs with the fetch_or in pool_shutdown. */
  uint64_t s =
      atomic_fetch_add_explicit(&p->submitters, 1, memory_order_acquire);
  if (s & SHUTDOWN_BIT) {
    atomic_fetch_sub_explicit(&p->submitters, 1, memory_order_release);
    return CF_ESHUTDOWN;
  }
  if (atomic_load_explicit(&p->broken, memory_order_acquire)) {
    atomic_fetch_sub_explicit(&p->submitters, 1, memory_order_release);
    return CF_EBROKEN;
  }
  return 0;
}

static void leave_submit(pool *p) {
  /* release: our push happens before shutdown sees the count drained. */
  atomic_fetch_sub_explicit(&p->submitters, 1, memory_order_release);
}

static void submit_outside(pool *p, task *t) {
  /* seq_cst inside: orders the push before the loads below (Dekker with
   * park's registration then re-check). */
  cf__inject_push(&p->inject, &t->link);
  if (atomic_load_explicit(&p->nsleeping, memory_order_seq_cst) > 0 &&
      atomic_load_explicit(&p->nsearching, memory_order_seq_cst) == 0)
    wake_one(p);
}

static void submit_local(worker *w, task *t) {
  if (!cf__deque_push(&w->dq, t)) {
    submit_outside(w->p, t); /* could not grow: fall back */
    return;
  }
  if (atomic_load_explicit(&w->p->nsleeping, memory_order_relaxed) &&
      !atomic_load_explicit(&w->p->nsearching, memory_order_relaxed))
    wake_one(w->p);
}

static int pool_submit(cf_executor *ex, cf_fn fn, void *arg,
                       cf_destroy_fn destroy, cf_future **out) {
  pool *p = (pool *)ex;
  worker *w = tls_worker;
  if (w && w->p == p) {
    /* From our own worker: no need to announce ourselves to shutdown, since
     * a worker drains its own deque before it exits. */
    if (atomic_load_explicit(&p->submitters, memory_order_relaxed) &
        SHUTDOWN_BIT)
      return CF_ESHUTDOWN;
    if (atomic_load_explicit(&p->broken, memory_order_relaxed))
      return CF_EBROKEN;
    task *t = task_new(fn, arg, destroy);
    if (!t)
      return CF_ENOMEM;
    submit_local(w, t);
    *out = &t->fut;
    return 0;
  }
  int rc = enter_submit(p);
  if (rc != 0)
    return rc;
  task *t = task_new(fn, arg, destroy);
  if (!t) {
    leave_submit(p);
    return CF_ENOMEM;
  }
  submit_outside(p, t);
  leave_submit(p);
  *out = &t->fut;
  return 0;
}

/* ---- shutdown and lifetime ----------------------------------------------- */

static void cancel_task(task *t) {
  cf__future_cancel(&t->fut);
  cf_future_unref(&t->fut);
}

/* Cancels every queued task at once: the injection stack, and the workers'
 * deques, emptied from the thief's end (safe while their owners run).
 * Tasks that slip in later are cancelled by run(), which sees
 * `cancelling`. */
static void cancel_queued(pool *p) {
  /* A producer mid-push (only possible before shutdown drained the
   * submitters) is waited for: pop returns NULL while nonempty. */
  cf__inject_lock(&p->inject);
  while (cf__inject_nonempty(&p->inject)) {
    cf__inject_node *node = cf__inject_pop(&p->inject);
    if (node)
      cancel_task(task_of(node));
  }
  cf__inject_unlock(&p->inject);
  for (size_t i = 0; i < p->n; i++) {
    void *x;
    while ((x = cf__deque_steal(&p->workers[i].dq)) != NULL)
      if (x != CF__DEQUE_ABORT)
        cancel_task(x);
  }
}

static int pool_shutdown(cf_executor *ex, bool wait, bool cancel_futures) {
  pool *p = (pool *)ex;
  worker *me = tls_worker;
  if (wait && me && me->p == p)
    return CF_EDEADLK;
  /* acq_rel: after this no new submitter gets in; pairs with enter_submit. */
  atomic_fetch_or_explicit(&p->submitters, SHUTDOWN_BIT, memory_order_acq_rel);
  /* Wait for submitters already inside (a few instructions each). */
  for (unsigned spins = 0;
       atomic_load_explicit(&p->submitters, memory_order_acquire) !=
       SHUTDOWN_BIT;
       spins++)
    spins < 64 ? ck_pr_stall() : (void)sched_yield();
  if (cancel_futures) {
    atomic_store_explicit(&p->cancelling, true, memory_order_relaxed);
    cancel_queued(p);
  }
  /* release: workers that see it also see the drained injection queue. */
  atomic_store_explicit(&p->shutdown, true, memory_order_release);
  wake_all(p);
  if (!wait)
    return 0;
  pthread_mutex_lock(&p->join_lock);
  if (!p->joined) {
    for (size_t i = 0; i < p->n; i++)
      if (p->workers[i].started)
        pthread_join(p->workers[i].thread, NULL);
    p->joined = true;
  }
  pthread_mutex_unlock(&p->join_lock);
  return 0;
}

static void pool_destroy(cf_executor *ex) {
  pool *p = (pool *)ex;
  worker *me = tls_worker;
  if (me && me->p == p)
    return; /* documented misuse: never free a pool from its own worker */
  /* Anything still queued (a worker failed to start) is cancelled. */
  cancel_queued(p);
  for (size_t i = 0; i < p->n; i++)
    cf__deque_fini(&p->workers[i].dq);
  pthread_mutex_destroy(&p->join_lock);
  free(p->workers);
  free(p);
}

static size_t pool_default_window(const cf_executor *ex) {
  return 2 * ((const pool *)ex)->n;
}

static const struct cf_executor_vt pool_vt = {
    .name = "thread_pool",
    .submit = pool_submit,
    .submit_batch = cf__submit_batch_each,
    .shutdown = pool_shutdown,
    .destroy = pool_destroy,
    .default_window = pool_default_window,
};

/* Creates the worker's waiter on its own thread (waiters are per thread)
 * and tells the creator, which waits for every worker to have one. */
static void *worker_entry(void *arg) {
  worker *w = arg;
  pool *p = w->p;
  w->waiter = cf__waiter_self();
  if (w->waiter)
    w->waiter->helper = &w->helper;
  else /* cannot park without a waiter: break the pool */
    atomic_store_explicit(&p->broken, true, memory_order_release);
  /* release: publishes w->waiter; pairs with the acquire in
   * cf_thread_pool_new. */
  atomic_fetch_add_explicit(&p->started, 1, memory_order_release);
  cf__waiter_wake(p->creator);
  return w->waiter ? worker_main(w) : NULL;
}

/* The pool and its workers hold cache-line-aligned fields. */
static void *zalloc_aligned(size_t size) {
  size = (size + CF__CACHE_LINE - 1) / CF__CACHE_LINE * CF__CACHE_LINE;
  void *mem = aligned_alloc(CF__CACHE_LINE, size);
  if (mem)
    memset(mem, 0, size);
  return mem;
}

int cf_thread_pool_new(const cf_thread_pool_opts *opts, cf_executor **out) {
  if (!out)
    return CF_EINVAL;
  *out = NULL;
  cf_thread_pool_opts o = opts ? *opts : (cf_thread_pool_opts){0};
  size_t n = o.max_workers;
  if (n == 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    n = cpus > 0 ? (size_t)cpus : 1;
  }
  if (n > MAX_WORKERS)
    return CF_EINVAL;
  cf__waiter *creator = cf__waiter_self();
  pool *p = zalloc_aligned(sizeof *p);
  if (!p || !creator) {
    free(p);
    return CF_ENOMEM;
  }
  p->base.vt = &pool_vt;
  cf__inject_init(&p->inject);
  p->n = n;
  p->creator = creator;
  p->initializer = o.initializer;
  p->initarg = o.initarg;
  snprintf(p->name_prefix, sizeof p->name_prefix, "%s",
           o.thread_name_prefix ? o.thread_name_prefix : "cf-worker");
  pthread_mutex_init(&p->join_lock, NULL);
  p->workers = zalloc_aligned(n * sizeof *p->workers);
  if (!p->workers) {
    free(p);
    return CF_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    worker *w = &p->workers[i];
    w->p = p;
    w->index = (unsigned)i;
    w->rng = 0x9E3779B97F4A7C15u * (i + 1);
    w->helper.help = help;
    w->helper.park = help_park;
    if (cf__deque_init(&w->dq, 256) != 0) {
      for (size_t j = 0; j < i; j++)
        cf__deque_fini(&p->workers[j].dq);
      free(p->workers);
      free(p);
      return CF_ENOMEM;
    }
  }
  size_t created = 0;
  int rc = 0;
  for (; created < n; created++) {
    worker *w = &p->workers[created];
    if (pthread_create(&w->thread, NULL, worker_entry, w) != 0) {
      rc = CF_ESYS;
      break;
    }
    w->started = true;
  }
  /* Wait until every created worker has its waiter, so that wakes reach
   * them. Initializers run after this, concurrently with submissions. */
  for (;;) {
    uint32_t seen = cf__waiter_seq(creator);
    if (atomic_load_explicit(&p->started, memory_order_acquire) >= created)
      break;
    cf__waiter_sleep(creator, seen, NULL);
  }
  if (rc != 0) {
    pool_shutdown(&p->base, true, true);
    pool_destroy(&p->base);
    return rc;
  }
  *out = &p->base;
  return 0;
}

size_t cf_thread_pool_size(const cf_executor *ex) {
  if (!ex || ex->vt != &pool_vt)
    return 0;
  return ((const pool *)ex)->n;
}
