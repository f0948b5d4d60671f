/* The work-stealing thread pool.
 *
 * Wiring: each worker owns a split work-stealing deque (deque.h). Submissions
 * from threads outside the pool go through the injection queue (inject.h); a
 * worker that runs dry takes a batch of up to INJECT_BATCH from it into its
 * inbox (a small FIFO that other workers take from too), and runs the
 * oldest. A worker looks for outside work in the inboxes (oldest batch
 * first) before it takes a new batch, so outside tasks start in submission
 * order whenever a worker is free: only tasks taken at the same moment by
 * different workers may start in another order. Tasks submitted by a
 * worker go to its own deque (run LIFO by it, stolen FIFO by others), and
 * come before outside work.
 *
 * Fibers: tasks run on fibers (core/fiber.h), never on the workers' own
 * stacks. A worker runs its scheduling loop on a "loop fiber" and runs each
 * task it finds right there, on that fiber's stack (no switch per task). A
 * task that waits (cf_future_result, cf_wait, cf_as_completed_next,
 * cf_map_next) never runs unrelated work on top of its frame:
 *   1. if the awaited task has not started and belongs to this pool, the
 *      waiter runs it inline (taking it back from the top of its own deque
 *      when it is there, the fork-join case; otherwise claiming it where it
 *      sits, leaving a stale queue entry that is skipped later), as long as
 *      more than half of the fiber's stack is free;
 *   2. otherwise the waiting fiber is suspended: the worker switches to a
 *      fresh loop fiber and goes on with other work. The completion (or the
 *      timeout, through the pool's timer heap) puts the fiber on the pool's
 *      ready queue, and whichever worker takes it resumes it, where it
 *      left off. A fiber may thus resume on another worker.
 * So the worker's stack use does not grow with nesting, a waiting task
 * cannot be buried under a task that waits for it, and a timeout is kept
 * whatever the worker runs meanwhile. Fiber wake-ups go through the
 * fiber's cf__waiter (core/waiter.h), so every wait in futures/ works the
 * same on a thread and in a task. The waiter protocol for a fiber: the
 * sleeper clears `rstate`, marks its waiter SLEEPING and switches away; the
 * fiber that takes over sets SAVED once the context is saved; a waker that
 * finds SLEEPING sets WOKEN. Whoever sets the second of SAVED and WOKEN
 * puts the fiber on the ready queue, exactly once per sleep.
 *
 * Parking: an idle worker searches (spins) for a bounded time, then
 * registers as sleeping (its `sleeping` flag and the pool's `nsleeping`
 * count), re-checks every queue and sleeps on its park word. Only idle
 * workers ever park, so a wake always reaches a worker that will look at
 * the queues. Outside submitters and fiber wake-ups wake one sleeper when
 * no worker is searching; the store-then-load on each side (push then read
 * counts / count then read queues) is ordered with seq_cst operations, so
 * either the waker sees the sleeper or the sleeper sees the work. Workers
 * pushing on their own deque check `nsleeping` with a relaxed load (no
 * fence on the fork-join fast path): a missed wake there costs parallelism
 * while the owner runs, since it runs its own deque; before its thread
 * blocks (a futex or condition variable: cf__thread_pool_before_block) it
 * shares its tasks and kicks with seq_cst operations, and an idle worker
 * seizes (deque.h) the private tasks of an owner that does not answer, so
 * a task that blocks its thread does not keep its children from the
 * others. (A task blocked in a system call while an idle worker parks in
 * the same instant can leave its children until the next wake of that
 * worker: a submit, a timer, the backstop.) Sleepers wake at the
 * earliest timer due; the backstop (CF_PARK_BACKSTOP_S, 0 = none, a build
 * option) only bounds the damage of a bug.
 *
 * Shutdown: it sets `closed`, then (cancelling) drains the queues, then
 * sets `shutdown`; a worker exits when shut down, no queue has work and no
 * fiber is suspended. An outside submitter reads `closed` before its push
 * (and fails) and again after it: both sides store, then load the other's
 * (seq_cst: Dekker), so a task that neither a draining shutdown nor an
 * exiting worker saw is one whose submitter sees `closed`; it cancels its
 * own future and fails with CF_ESHUTDOWN (or, if a worker started the task
 * meanwhile, succeeds). The entry stays queued, cancelled, until a worker
 * or the pool's free drops it. No counter of submitters, so no atomic
 * read-modify-write for it on the submit path. Tasks still queued run (or
 * are cancelled with cancel_futures, all of them before any of their
 * listeners runs, and with no lock held) before the workers exit.
 *
 * Locks: none on the submit path; the injection and ready queues' consumer
 * try-locks (never waited for by workers); `timer_lock` guards the timer
 * heap (no other lock is taken under it); `join_lock` serialises
 * shutdown's joins. fib_lock (global) guards the spare fiber descriptors.
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
#include "core/fiber.h"
#include "core/report.h"
#include "core/waiter.h"
#include "executor/deque.h"
#include "executor/executor_internal.h"
#include "executor/inject.h"
#include "futures/future_internal.h"

#define MAX_WORKERS   1024
#define SEARCH_NS     50000u /* idle spin before parking */
#define INJECT_BATCH  32     /* tasks a worker takes from outside at once */
#define DEFAULT_STACK ((size_t)256 * 1024)
#define FIBER_CACHE   16 /* spare fibers a worker keeps mapped */
#ifndef CF_PARK_BACKSTOP_S
/* 0: sleepers wait for a wake only. Long, since no wake-up depends on it
 * (the suite passes without it) and each one costs an idle pool CPU: at
 * 1 s, two idle workers used 0.8 ms per 2 s against 0.2 ms without. */
#define CF_PARK_BACKSTOP_S 30.0
#endif

typedef struct pool pool;
typedef struct worker worker;

typedef struct task {
  cf_future fut; /* first: a task is its future */
  cf_fn fn;
  void *arg;
  cf_destroy_fn destroy;
  pool *p;
  cf__inject_node link; /* injection queue; cancel_queued's list */
} task;

/* fib.rstate */
#define WOKEN    1u /* a waker found the fiber asleep */
#define SAVED    2u /* its context is saved: it may be resumed */
#define BLOCKED  4u /* no fiber to switch to: its thread blocks instead */
#define NO_TIMER ((size_t)-1)

/* A fiber of the pool. Descriptors are immortal (kept on a free list when
 * their pool goes), so that a late wake through a stale pointer to the
 * embedded waiter stays harmless; see core/waiter.h. */
typedef struct fib {
  cf__fiber f;
  cf__waiter waiter; /* ops = fib_ops, owner = this fib */
  pool *p;
  worker *w; /* the worker running it; written by that worker on arrival */
  _Atomic uint32_t rstate;
  cf__inject_node link; /* ready queue */
  struct fib *next_free;
  uint64_t due_ns; /* guarded by p->timer_lock */
  size_t heap_at;  /* guarded by p->timer_lock: index in timers or NO_TIMER */
} fib;

/* Outside tasks a worker took from the injection queue, in submission
 * order: a bounded single-producer, multi-consumer FIFO. Only its worker
 * fills it, and only when it is empty; the worker and thieves alike take
 * the oldest entry with a CAS on `head`. Indices only grow (a slot is
 * index % INJECT_BATCH): a consumer that read a slot and then lost the CAS
 * race, or whose slot was refilled meanwhile, sees `head` moved and
 * retries, so no entry is taken twice. `seq` orders batches: thieves take
 * from the inbox holding the oldest one. */
typedef struct inbox {
  _Alignas(CF__CACHE_LINE) _Atomic uint32_t head; /* next entry to take */
  _Atomic uint32_t tail; /* one past the last entry; written by its owner */
  _Atomic uint64_t seq;  /* the batch's number; written by its owner */
  /* Atomic (relaxed) because a consumer that lost the race may still read
   * a slot while its owner refills it; it then discards what it read. */
  _Atomic(task *) slot[INJECT_BATCH];
} inbox;

struct worker {
  cf__deque dq;
  inbox in;
  pool *p;
  cf__waiter park;           /* idle parking; plain futex waiter */
  _Atomic uint32_t sleeping; /* 1 while registered as a sleeper */
  unsigned index;
  uint64_t rng;     /* worker thread only */
  cf__fiber native; /* the thread's own stack: start and exit only */
  fib *first;       /* the first loop fiber, made by cf_thread_pool_new */
  fib *spare;       /* worker thread only: fibers ready for reuse */
  unsigned nspare;  /* worker thread only */
  unsigned resumes_in_row; /* worker thread only: see FAIR_RESUMES */
  cf__spin search;  /* worker thread only: its searches' back-off */
  struct cached_task *cache; /* worker thread only: see task_dealloc */
  unsigned ncache;
  pthread_t thread;
  bool started;
};

struct pool {
  cf_executor base;
  size_t n;
  worker *workers;
  cf__inject inject;
  uint64_t batches; /* guarded by the injection queue's consumer lock */
  cf__inject ready; /* suspended fibers whose wait is over */
  /* Apart: submitters read nsleeping on every submit, while searching
   * workers write nsearching often. */
  _Alignas(CF__CACHE_LINE) _Atomic uint32_t nsleeping;
  _Alignas(CF__CACHE_LINE) _Atomic uint32_t nsearching;
  /* read-mostly flags, on a line of their own (workers read them per task,
   * submitters per submit) */
  _Alignas(CF__CACHE_LINE) _Atomic bool closed; /* no new submit is taken */
  _Atomic bool shutdown;     /* closed and (cancelling) the queues drained */
  _Atomic bool cancelling;   /* cancel_futures: drop queued tasks */
  _Atomic bool broken;       /* an initializer failed */
  bool seizable;             /* cf__membarrier_usable(): private tasks */
  _Atomic uint64_t next_due; /* earliest timer, ns; UINT64_MAX: none */
  _Alignas(CF__CACHE_LINE) _Atomic uint32_t nsuspended; /* fibers asleep */
  _Alignas(CF__CACHE_LINE) _Atomic uint32_t started;    /* workers running */
  cf__waiter *creator; /* woken as workers start */
  size_t stack_size;
  int (*initializer)(void *);
  void *initarg;
  char name_prefix[16];
  pthread_mutex_t timer_lock;
  fib **timers; /* guarded by timer_lock: a binary min-heap on due_ns */
  size_t ntimers, timers_cap; /* guarded by timer_lock */
  pthread_mutex_t join_lock;
  bool joined; /* guarded by join_lock */
};

static _Thread_local worker *tls_worker CF__TLS_FAST;

/* ---- tasks --------------------------------------------------------------- */

/* A freed task block kept by a worker for its next task_new: a free list
 * the worker thread alone touches (fork-join frees most tasks on the
 * worker that made them), up to TASK_CACHE blocks; the rest, and every
 * block freed elsewhere, go back to the allocator. Not in debug mode, nor
 * under AddressSanitizer: freed tasks must stay poisoned there. */
typedef struct cached_task {
  struct cached_task *next;
} cached_task;

#if defined(__SANITIZE_ADDRESS__)
#define TASK_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TASK_CACHE 0
#endif
#endif
#ifndef TASK_CACHE
#define TASK_CACHE 256
#endif

static void task_dealloc(cf_future *f) {
#if TASK_CACHE > 0
  worker *w = tls_worker;
  if (w && w->ncache < TASK_CACHE && !cf__debug_known()) {
    cached_task *c = (cached_task *)f;
    c->next = w->cache;
    w->cache = c;
    w->ncache++;
    return;
  }
#endif
  cf__free(f, sizeof(task));
}

static task *task_new(pool *p, cf_fn fn, void *arg, cf_destroy_fn destroy) {
  worker *w = tls_worker;
  task *t;
  if (w && w->cache) {
    t = (task *)w->cache;
    w->cache = w->cache->next;
    w->ncache--;
  } else if (!(t = cf__alloc(sizeof *t))) {
    return NULL;
  }
  cf__future_init(&t->fut, task_dealloc);
  /* Two references: the caller's future and the queue entry's. */
  cf__future_set_refs(&t->fut, 2);
  t->fn = fn;
  t->arg = arg;
  t->destroy = destroy;
  t->p = p;
  return t;
}

/* Claims t (PENDING -> RUNNING) and runs it, or fails or cancels it when
 * the pool broke or is cancelling. False if t was no longer pending (run
 * inline by a waiter, or cancelled). With `drop`, the queue entry's
 * reference goes too, in the completion (see cf__future_complete_drop); t
 * may be gone when it returns. Does not touch any worker after the task
 * ran: the fiber may have moved to another one. */
static bool execute(task *t, bool drop) {
  if (cf__future_set_running(&t->fut) != 0) {
    if (drop)
      cf_future_unref(&t->fut);
    return false;
  }
  pool *p = t->p;
  if (atomic_load_explicit(&p->broken, memory_order_acquire)) {
    char *msg = strdup("the pool's initializer failed");
    if (cf__future_complete(&t->fut, CF_EBROKEN, NULL, NULL, msg) != 0)
      free(msg);
  } else if (atomic_load_explicit(&p->cancelling, memory_order_relaxed)) {
    cf__future_cancel(&t->fut);
  } else {
    if (drop)
      cf__run_task_drop(&t->fut, t->fn, t->arg, t->destroy);
    else
      cf__run_task(&t->fut, t->fn, t->arg, t->destroy);
    return true;
  }
  if (drop)
    cf_future_unref(&t->fut);
  return true;
}

/* Runs a task taken from a queue and drops the queue entry's reference. */
static void run(task *t) {
  execute(t, true);
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
      cf__waiter_wake(&w->park);
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
    cf__waiter_wake(&w->park);
  }
}

/* After work was pushed on a shared queue with a seq_cst operation: wakes
 * a sleeper unless a searcher will find the work. seq_cst loads: the
 * waker's side of the Dekker pair with park's registration then re-check. */
static void kick(pool *p) {
  if (atomic_load_explicit(&p->nsleeping, memory_order_seq_cst) > 0 &&
      atomic_load_explicit(&p->nsearching, memory_order_seq_cst) == 0)
    wake_one(p);
}

/* After the owner pushed on or took from its deque (deque.h): its new tasks
 * stay private, fence-free, while every worker is busy. With a worker idle
 * (searching or asleep) they are all shared at once, and a sleeper is
 * woken if nobody searches; a thief's request (it found only private
 * tasks) gets half. Relaxed loads, no fence: see "Parking" at the top. Where
 * deques cannot be seized (no membarrier(2)), a shutdown that cancels
 * could not reach private tasks: every task is shared at once. */
static inline void offer(worker *w) {
  pool *p = w->p;
  if (!p->seizable) { /* see cf__deque_seize: everything is shared */
    if (cf__deque_share_all(&w->dq))
      kick(p);
    return;
  }
  uint32_t sleeping = atomic_load_explicit(&p->nsleeping, memory_order_relaxed);
  uint32_t searching =
      atomic_load_explicit(&p->nsearching, memory_order_relaxed);
  if (!sleeping && !searching) {
    if (cf__deque_asked(&w->dq))
      cf__deque_share(&w->dq);
    return;
  }
  if (cf__deque_share_all(&w->dq) && sleeping && !searching)
    wake_one(p);
}

/* Owner: its newest task, then the rest offered to idle workers. */
static task *take_own(worker *w) {
  task *t = cf__deque_take(&w->dq);
  if (t)
    offer(w);
  return t;
}

/* ---- finding work -------------------------------------------------------- */

static bool inbox_nonempty(inbox *in);

static bool work_visible(pool *p) {
  /* seq_cst inside: Dekker with the pushes */
  if (cf__inject_nonempty(&p->ready) || cf__inject_nonempty(&p->inject))
    return true;
  for (size_t i = 0; i < p->n; i++)
    if (cf__deque_stealable(&p->workers[i].dq) ||
        inbox_nonempty(&p->workers[i].in))
      return true;
  return false;
}

static task *task_of(cf__inject_node *n) {
  return (task *)((char *)n - offsetof(task, link));
}

static fib *fib_of(cf__inject_node *n) {
  return (fib *)((char *)n - offsetof(fib, link));
}

/* Takes the oldest entry of an inbox, or NULL when it is empty. */
static task *inbox_take(inbox *in) {
  /* acquire: pairs with the owner's publication of tail (the slots). */
  uint32_t h = atomic_load_explicit(&in->head, memory_order_acquire);
  for (;;) {
    uint32_t t = atomic_load_explicit(&in->tail, memory_order_acquire);
    if (h == t)
      return NULL;
    task *x =
        atomic_load_explicit(&in->slot[h % INJECT_BATCH], memory_order_relaxed);
    if (atomic_compare_exchange_weak_explicit(
            &in->head, &h, h + 1, memory_order_acq_rel, memory_order_acquire))
      return x;
  }
}

static bool inbox_nonempty(inbox *in) {
  /* seq_cst: the sleeper's side of the Dekker pair with the fill. */
  return atomic_load_explicit(&in->head, memory_order_seq_cst) !=
         atomic_load_explicit(&in->tail, memory_order_seq_cst);
}

/* The oldest outside task already taken from the injection queue by some
 * worker: from the inbox holding the oldest batch (w's own first on a
 * tie). Outside tasks thus start in submission order while any worker is
 * free, whoever took them. */
static task *take_inboxed(worker *w) {
  pool *p = w->p;
  for (;;) {
    inbox *best = NULL;
    uint64_t best_seq = UINT64_MAX;
    for (size_t k = 0; k < p->n; k++) {
      inbox *in = &p->workers[k].in;
      if (atomic_load_explicit(&in->head, memory_order_relaxed) ==
          atomic_load_explicit(&in->tail, memory_order_relaxed))
        continue;
      uint64_t seq = atomic_load_explicit(&in->seq, memory_order_relaxed);
      if (seq < best_seq || (seq == best_seq && in == &w->in)) {
        best = in;
        best_seq = seq;
      }
    }
    if (!best)
      return NULL;
    task *t = inbox_take(best);
    if (t)
      return t;
    /* Emptied meanwhile: look again. */
  }
}

/* Takes up to INJECT_BATCH outside tasks into w's (empty) inbox and returns
 * the oldest, to run now; the others wait there for w and for thieves, in
 * order. NULL if the queue is empty or another worker holds it, and also
 * when some inbox still holds outside tasks (those come first). */
static task *grab_injected(worker *w) {
  pool *p = w->p;
  if (!cf__inject_nonempty(&p->inject) || !cf__inject_trylock(&p->inject))
    return NULL;
  /* Under the lock, so that a batch published by its previous holder is
   * seen: older outside tasks waiting in an inbox go first. */
  for (size_t k = 0; k < p->n; k++)
    if (inbox_nonempty(&p->workers[k].in)) {
      cf__inject_unlock(&p->inject);
      return take_inboxed(w);
    }
  inbox *in = &w->in;
  uint32_t t0 = atomic_load_explicit(&in->tail, memory_order_relaxed);
  uint32_t n = 0;
  cf__inject_node *node;
  while (n < INJECT_BATCH && (node = cf__inject_pop(&p->inject)))
    atomic_store_explicit(&in->slot[(t0 + n++) % INJECT_BATCH], task_of(node),
                          memory_order_relaxed);
  if (n == 0) {
    cf__inject_unlock(&p->inject);
    return NULL;
  }
  atomic_store_explicit(&in->seq, p->batches++, memory_order_relaxed);
  /* seq_cst: publishes the slots (release) and is the filler's side of
   * the Dekker pair with park's registration then re-check. */
  atomic_store_explicit(&in->tail, t0 + n, memory_order_seq_cst);
  cf__inject_unlock(&p->inject);
  if (n > 1 && atomic_load_explicit(&p->nsleeping, memory_order_seq_cst))
    wake_one(p);
  return take_inboxed(w);
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

/* A suspended fiber whose wait is over, if any (NULL also when another
 * worker holds the queue or a push is in flight: callers look again). */
static fib *pop_ready(pool *p) {
  if (!cf__inject_nonempty(&p->ready) || !cf__inject_trylock(&p->ready))
    return NULL;
  cf__inject_node *node = cf__inject_pop(&p->ready);
  cf__inject_unlock(&p->ready);
  return node ? fib_of(node) : NULL;
}

/* Something to do: a fiber to resume (first: it finishes started work) or
 * a task to run. */
typedef struct work {
  fib *resume;
  task *t;
} work;

/* Resumed fibers come first, but not for ever: after FAIR_RESUMES of them
 * in a row a task not started yet gets a turn, so a steady stream of
 * wake-ups (tasks waiting on busy sockets, M:N) cannot starve the tasks
 * behind them (a new connection's), as Go's scheduler gives its global
 * queue a turn every 61 ticks. */
#define FAIR_RESUMES 32

static task *take_task(worker *w) {
  task *t = take_own(w);
  if (!t)
    t = take_inboxed(w);
  if (!t)
    t = grab_injected(w);
  if (!t)
    t = steal_any(w);
  return t;
}

static bool find_work(worker *w, work *out) {
  out->t = NULL;
  out->resume = NULL;
  if (w->resumes_in_row < FAIR_RESUMES) {
    out->resume = pop_ready(w->p);
    if (out->resume) {
      w->resumes_in_row++;
      return true;
    }
  }
  w->resumes_in_row = 0;
  out->t = take_task(w);
  if (!out->t)
    out->resume = pop_ready(w->p);
  return out->t || out->resume;
}

/* ---- fibers -------------------------------------------------------------- */

static pthread_mutex_t fib_lock = PTHREAD_MUTEX_INITIALIZER;
static fib *fib_pool; /* guarded by fib_lock: descriptors without stacks */

static void fiber_main(cf__fiber *self, void *msg);
static const cf__waiter_ops fib_ops;

/* A fiber for worker w to switch to: a spare one, or a new one (NULL when
 * out of memory or mappings). Worker thread only (or the pool's creator,
 * before the worker starts). */
static fib *fib_get(worker *w) {
  fib *g = w->spare;
  if (g) {
    w->spare = g->next_free;
    w->nspare--;
    return g;
  }
  pthread_mutex_lock(&fib_lock);
  g = fib_pool;
  if (g)
    fib_pool = g->next_free;
  pthread_mutex_unlock(&fib_lock);
  if (!g) {
    g = calloc(1, sizeof *g);
    if (!g)
      return NULL;
    cf__waiter_init(&g->waiter, &fib_ops, g);
  }
  if (cf__fiber_new(&g->f, w->p->stack_size, fiber_main) != 0) {
    pthread_mutex_lock(&fib_lock);
    g->next_free = fib_pool;
    fib_pool = g;
    pthread_mutex_unlock(&fib_lock);
    return NULL;
  }
  g->p = w->p;
  g->heap_at = NO_TIMER;
  /* Not asleep: a late wake finds WOKEN set and does nothing. */
  atomic_store_explicit(&g->rstate, WOKEN | SAVED, memory_order_relaxed);
  return g;
}

/* Unmaps g's stack; the descriptor goes to the global spares. */
static void fib_destroy(fib *g) {
  cf__fiber_free(&g->f);
  pthread_mutex_lock(&fib_lock);
  g->next_free = fib_pool;
  fib_pool = g;
  pthread_mutex_unlock(&fib_lock);
}

/* g is switched out for good (at the top of its loop): keep it as a spare
 * of worker w, or unmap it. */
static void fib_put(worker *w, fib *g) {
  if (w->nspare >= FIBER_CACHE) {
    fib_destroy(g);
    return;
  }
  g->next_free = w->spare;
  w->spare = g;
  w->nspare++;
}

/* What the fiber that takes over does with the one it replaces. */
typedef enum { THEN_NOTHING, THEN_RETIRE, THEN_SLEEP } then;

typedef struct hop {
  worker *w; /* the worker the switch happened on */
  fib *from; /* NULL: the worker's native stack */
  then after;
} hop;

static void make_ready(fib *g) {
  pool *p = g->p;
  /* seq_cst inside: publishes the saved context; Dekker with park. */
  cf__inject_push(&p->ready, &g->link);
  kick(p);
}

/* The fiber that left to sleep has its context saved now. */
static void sleep_saved(fib *g) {
  /* acq_rel: pairs with fib_wake's fetch_or; the later of the two
   * publishes the fiber to the ready queue. */
  uint32_t old =
      atomic_fetch_or_explicit(&g->rstate, SAVED, memory_order_acq_rel);
  if ((old & (SAVED | WOKEN)) == WOKEN)
    make_ready(g);
}

/* On fiber `me`, just switched to: takes note of where it runs and
 * finishes what the previous fiber asked. */
static void arrive(fib *me, hop *h) {
  worker *w = h->w;
  me->w = w;
  cf__waiter_set_current(&me->waiter);
  if (h->after == THEN_RETIRE)
    fib_put(w, h->from);
  else if (h->after == THEN_SLEEP)
    sleep_saved(h->from);
}

/* Leaves fiber `me` (running on me->w) for `to`; returns when `me` is
 * resumed, perhaps on another worker (me->w then says which). */
static void leave(fib *me, fib *to, then after) {
  hop h = {.w = me->w, .from = me, .after = after};
  hop *back = cf__fiber_switch(&me->f, &to->f, &h);
  arrive(me, back);
}

/* ---- timers -------------------------------------------------------------- */

static uint64_t deadline_ns(const cf_deadline *d) {
  return (uint64_t)d->at.tv_sec * 1000000000u + (uint64_t)d->at.tv_nsec;
}

/* Heap helpers; callers hold timer_lock. */
static void heap_set(pool *p, size_t i, fib *g) {
  p->timers[i] = g;
  g->heap_at = i;
}

static void heap_up(pool *p, size_t i) {
  fib *g = p->timers[i];
  while (i > 0 && p->timers[(i - 1) / 2]->due_ns > g->due_ns) {
    heap_set(p, i, p->timers[(i - 1) / 2]);
    i = (i - 1) / 2;
  }
  heap_set(p, i, g);
}

static void heap_down(pool *p, size_t i) {
  fib *g = p->timers[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= p->ntimers)
      break;
    if (c + 1 < p->ntimers && p->timers[c + 1]->due_ns < p->timers[c]->due_ns)
      c++;
    if (p->timers[c]->due_ns >= g->due_ns)
      break;
    heap_set(p, i, p->timers[c]);
    i = c;
  }
  heap_set(p, i, g);
}

static void heap_remove(pool *p, fib *g) {
  size_t i = g->heap_at;
  g->heap_at = NO_TIMER;
  fib *last = p->timers[--p->ntimers];
  if (last != g) {
    heap_set(p, i, last);
    heap_up(p, i);
    heap_down(p, last->heap_at);
  }
}

static void publish_next_due(pool *p) {
  atomic_store_explicit(&p->next_due,
                        p->ntimers ? p->timers[0]->due_ns : UINT64_MAX,
                        memory_order_relaxed);
}

/* Arms g's timer. False when out of memory. */
static bool timer_add(pool *p, fib *g, uint64_t due) {
  pthread_mutex_lock(&p->timer_lock);
  if (p->ntimers == p->timers_cap) {
    size_t cap = p->timers_cap ? 2 * p->timers_cap : 16;
    fib **t = realloc(p->timers, cap * sizeof *t);
    if (!t) {
      pthread_mutex_unlock(&p->timer_lock);
      return false;
    }
    p->timers = t;
    p->timers_cap = cap;
  }
  g->due_ns = due;
  heap_set(p, p->ntimers++, g);
  heap_up(p, g->heap_at);
  bool earliest = g->heap_at == 0;
  publish_next_due(p);
  pthread_mutex_unlock(&p->timer_lock);
  /* Sleepers chose their sleep before this timer: one re-arms. */
  if (earliest && atomic_load_explicit(&p->nsleeping, memory_order_relaxed))
    wake_one(p);
  return true;
}

static void timer_del(pool *p, fib *g) {
  pthread_mutex_lock(&p->timer_lock);
  if (g->heap_at != NO_TIMER) {
    heap_remove(p, g);
    publish_next_due(p);
  }
  pthread_mutex_unlock(&p->timer_lock);
}

/* Wakes the fibers whose deadline has passed. Cheap when none is armed. */
static void fire_timers(pool *p) {
  uint64_t due = atomic_load_explicit(&p->next_due, memory_order_relaxed);
  if (due == UINT64_MAX || cf__now_ns() < due)
    return;
  pthread_mutex_lock(&p->timer_lock);
  uint64_t now = cf__now_ns();
  /* Holds timer_lock: pop every expired timer. */
  while (p->ntimers && p->timers[0]->due_ns <= now) {
    fib *g = p->timers[0];
    heap_remove(p, g);
    cf__waiter_wake(&g->waiter);
  }
  publish_next_due(p);
  pthread_mutex_unlock(&p->timer_lock);
}

/* ---- the fibers' waiter ops ---------------------------------------------- */

static int fib_sleep(cf__waiter *wt, uint32_t seen, const cf_deadline *d) {
  fib *me = wt->owner;
  pool *p = me->p;
  bool timed = d && !d->forever;
  if (timed && cf__deadline_passed(d))
    return CF_ETIMEDOUT;
  fib *next = fib_get(me->w);
  if (next && timed && !timer_add(p, me, deadline_ns(d))) {
    fib_put(me->w, next);
    next = NULL;
  }
  if (!next) {
    /* No fiber to go on with: block the thread (a wake then goes to the
     * futex, see fib_wake). Only when out of memory or mappings. */
    atomic_store_explicit(&me->rstate, BLOCKED, memory_order_relaxed);
    int rc = cf__waiter_block(wt, seen, d);
    atomic_store_explicit(&me->rstate, WOKEN | SAVED, memory_order_relaxed);
    return rc;
  }
  atomic_store_explicit(&me->rstate, 0, memory_order_relaxed);
  uint32_t expect = seen;
  /* acq_rel: a waker that sees SLEEPING also sees rstate cleared (release);
   * on failure, acquire as in cf__waiter_seq. */
  if (!atomic_compare_exchange_strong_explicit(
          &wt->seq, &expect, seen | CF__WAITER_SLEEPING, memory_order_acq_rel,
          memory_order_acquire)) {
    atomic_store_explicit(&me->rstate, WOKEN | SAVED, memory_order_relaxed);
    if (timed)
      timer_del(p, me);
    fib_put(me->w, next);
    return 0;
  }
  /* relaxed: a count for the exit check only; the worker that suspends
   * reads its own increment. */
  atomic_fetch_add_explicit(&p->nsuspended, 1, memory_order_relaxed);
  leave(me, next, THEN_SLEEP);
  /* Resumed (maybe on another worker): WOKEN and SAVED are both set. */
  atomic_fetch_sub_explicit(&p->nsuspended, 1, memory_order_relaxed);
  atomic_fetch_and_explicit(&wt->seq, ~CF__WAITER_SLEEPING,
                            memory_order_relaxed);
  if (timed)
    timer_del(p, me);
  return timed && cf__deadline_passed(d) ? CF_ETIMEDOUT : 0;
}

static void fib_wake(cf__waiter *wt) {
  fib *g = wt->owner;
  /* acq_rel: pairs with sleep_saved's fetch_or (see there). */
  uint32_t old =
      atomic_fetch_or_explicit(&g->rstate, WOKEN, memory_order_acq_rel);
  if (old & BLOCKED)
    cf__waiter_futex_wake(wt);
  else if ((old & (SAVED | WOKEN)) == SAVED)
    make_ready(g);
}

static bool fib_run_inline(cf__waiter *wt, cf_future *f) {
  fib *me = wt->owner;
  if (f->dealloc != task_dealloc || cf__future_state(f) != CF_PENDING)
    return false;
  task *t = (task *)f;
  if (t->p != me->p || cf__fiber_stack_left(&me->f) < me->f.stack_size / 2)
    return false;
  worker *w = me->w;
  /* Fork-join: the awaited task is usually the one we pushed last. */
  task *top = cf__deque_take(&w->dq);
  if (top == t) {
    offer(w);
    run(t);
    return true;
  }
  if (top) {
    cf__deque_push(&w->dq, top); /* the slot it left: cannot fail */
    offer(w); /* t may run long here: the rest is not kept from others */
  }
  /* Elsewhere (another deque, the injection queue): claim it there; its
   * entry (and reference) is skipped when popped. */
  return execute(t, false);
}

static const cf__waiter_ops fib_ops = {
    .sleep = fib_sleep,
    .wake = fib_wake,
    .run_inline = fib_run_inline,
    .fiber_io = true,
};

/* ---- parking ------------------------------------------------------------- */

/* Seizes (deque.h) the deque of another worker that holds private tasks;
 * true if one was seized. */
static bool seize_stuck(worker *w) {
  pool *p = w->p;
  for (size_t i = 0; i < p->n; i++)
    if (&p->workers[i] != w && cf__deque_try_seize(&p->workers[i].dq))
      return true;
  return false;
}

void cf__thread_pool_before_block(void) {
  worker *w = tls_worker;
  /* seq_cst inside (cf__deque_move_split): Dekker with park, as kick */
  if (w && cf__deque_share_all(&w->dq))
    kick(w->p);
}

static bool may_exit(pool *p) {
  /* seq_cst: see "Shutdown" at the top */
  return atomic_load_explicit(&p->shutdown, memory_order_seq_cst) &&
         atomic_load_explicit(&p->nsuspended, memory_order_relaxed) == 0 &&
         !work_visible(p);
}

/* Registers w as sleeping, re-checks for work, and sleeps on its park word
 * until woken, the earliest timer, or the backstop. `seen` is the park
 * word's sequence read before the caller last looked for work. */
static void park(worker *w, uint32_t seen) {
  pool *p = w->p;
  atomic_store_explicit(&w->sleeping, 1, memory_order_relaxed);
  /* seq_cst: orders our registration before the re-check of the queues,
   * against wakers' push-then-read (Dekker). */
  atomic_fetch_add_explicit(&p->nsleeping, 1, memory_order_seq_cst);
  if (!work_visible(p) && !may_exit(p)) {
    uint64_t due = atomic_load_explicit(&p->next_due, memory_order_relaxed);
    cf_deadline d = {.forever = true};
    if (CF_PARK_BACKSTOP_S > 0)
      cf__deadline_from_timeout(CF_PARK_BACKSTOP_S, &d);
    if (due != UINT64_MAX && (d.forever || due < deadline_ns(&d))) {
      d.forever = false;
      d.at.tv_sec = (time_t)(due / 1000000000u);
      d.at.tv_nsec = (long)(due % 1000000000u);
    }
    /* No spin on the park word: the search before was one. */
    cf__waiter_block_spin(&w->park, seen, &d, 0);
  }
  uint32_t one = 1;
  if (atomic_compare_exchange_strong_explicit(
          &w->sleeping, &one, 0, memory_order_acq_rel, memory_order_relaxed))
    atomic_fetch_sub_explicit(&p->nsleeping, 1, memory_order_relaxed);
}

/* ---- the worker loop ----------------------------------------------------- */

static void perform(fib *me, work *wk) {
  if (wk->resume)
    leave(me, wk->resume, THEN_RETIRE); /* back here when reused */
  else
    run(wk->t);
}

/* The scheduling loop, on a loop fiber. Returns when the worker may exit.
 * me->w is re-read after everything that may switch. */
static void loop(fib *me) {
  work wk;
  for (;;) {
    worker *w = me->w;
    pool *p = w->p;
    fire_timers(p);
    if (find_work(w, &wk)) {
      perform(me, &wk);
      continue;
    }
    /* Search for a while before parking. (Limiting searchers to half the
     * workers, as Go and Tokio do, measured slower here for fork-join and
     * no faster for outside bursts on 2 cores.) */
    atomic_fetch_add_explicit(&p->nsearching, 1, memory_order_relaxed);
    /* No search (only the one look below) for a while after searches ran
     * out (core/spin.h): when the CPUs are busy, a searcher takes them
     * from the threads with work to do, and a descheduled searcher holds
     * back the wake-up of a sleeper. */
    uint64_t start = cf__now_ns();
    uint64_t budget = cf__spin_budget(&w->search, SEARCH_NS, start);
    bool found = false;
    for (unsigned i = 1, pause = 1; !found && budget; i++) {
      /* Exponential backoff keeps searchers from hammering the lines
       * that submitters write. */
      for (unsigned k = 0; k < pause; k++)
        ck_pr_stall();
      if (pause < 64)
        pause *= 2;
      found = find_work(w, &wk);
      if (found)
        cf__spin_paid(&w->search);
      else if ((i & 7) == 0) {
        uint64_t now = cf__now_ns();
        if (now - start > budget) {
          cf__spin_ran_out(&w->search, now);
          break;
        }
      }
    }
    /* Nothing shared anywhere: tasks another worker keeps private while it
     * does not answer (blocked in its task) are seized, not waited for. */
    if (!found && p->seizable)
      found = seize_stuck(w) && find_work(w, &wk);
    uint32_t left =
        atomic_fetch_sub_explicit(&p->nsearching, 1, memory_order_seq_cst);
    if (found) {
      /* The last searcher to find work wakes another, in case there is
       * more (Go's rule). */
      if (left == 1 &&
          atomic_load_explicit(&p->nsleeping, memory_order_relaxed) &&
          work_visible(p))
        wake_one(p);
      perform(me, &wk);
      continue;
    }
    uint32_t seen = cf__waiter_seq(&w->park);
    fire_timers(p);
    if (find_work(w, &wk)) {
      perform(me, &wk);
      continue;
    }
    if (may_exit(p))
      return;
    park(w, seen);
  }
}

static void fiber_main(cf__fiber *self, void *msg) {
  fib *me = (fib *)((char *)self - offsetof(fib, f));
  arrive(me, msg);
  loop(me);
  /* Exit: let the other workers see it too, then back to the thread's own
   * stack for good (it unmaps this fiber). */
  worker *w = me->w;
  wake_all(w->p);
  hop h = {.w = w, .from = me, .after = THEN_NOTHING};
  cf__fiber_switch(&me->f, &w->native, &h);
  abort(); /* never resumed */
}

static void *worker_main(worker *w) {
  pool *p = w->p;
  char name[32];
  snprintf(name, sizeof name, "%s-%u", p->name_prefix, w->index);
  name[15] = '\0'; /* Linux allows 15 bytes */
  pthread_setname_np(pthread_self(), name);

  if (p->initializer && p->initializer(p->initarg) != 0)
    /* release: pairs with the acquire loads in execute / pool_submit. */
    atomic_store_explicit(&p->broken, true, memory_order_release);

  cf__fiber_init_native(&w->native);
  hop h = {.w = w, .from = NULL, .after = THEN_NOTHING};
  fib *first = w->first;
  w->first = NULL;
  hop *back = cf__fiber_switch(&w->native, &first->f, &h);
  /* The pool is shutting down and this worker is done. */
  cf__waiter_set_current(NULL);
  fib_destroy(back->from);
  return NULL;
}

/* ---- submission ---------------------------------------------------------- */

static void submit_outside(pool *p, task *t) {
  /* seq_cst inside: orders the push before kick's loads (Dekker). */
  cf__inject_push(&p->inject, &t->link);
  kick(p);
}

static void submit_local(worker *w, task *t) {
  if (!cf__deque_push(&w->dq, t)) {
    submit_outside(w->p, t); /* could not grow: fall back */
    return;
  }
  offer(w);
}

static int pool_submit(cf_executor *ex, cf_fn fn, void *arg,
                       cf_destroy_fn destroy, cf_future **out) {
  pool *p = (pool *)ex;
  worker *w = tls_worker;
  if (w && w->p == p) {
    /* From our own worker: a worker drains its own deque before it exits,
     * so a task pushed here is never left behind. */
    if (atomic_load_explicit(&p->closed, memory_order_relaxed))
      return CF_ESHUTDOWN;
    if (atomic_load_explicit(&p->broken, memory_order_relaxed))
      return CF_EBROKEN;
    task *t = task_new(p, fn, arg, destroy);
    if (!t)
      return CF_ENOMEM;
    submit_local(w, t);
    *out = &t->fut;
    return 0;
  }
  if (atomic_load_explicit(&p->closed, memory_order_acquire))
    return CF_ESHUTDOWN;
  /* acquire: pairs with the release store in worker_main. */
  if (atomic_load_explicit(&p->broken, memory_order_acquire))
    return CF_EBROKEN;
  task *t = task_new(p, fn, arg, destroy);
  if (!t)
    return CF_ENOMEM;
  submit_outside(p, t);
  /* seq_cst, after the push's seq_cst exchange: see "Shutdown" at the top.
   * A shutdown came meanwhile, and may have missed the task: take it back
   * by cancelling it, unless a worker has started it already. */
  if (atomic_load_explicit(&p->closed, memory_order_seq_cst) &&
      cf_future_cancel(&t->fut)) {
    cf_future_unref(&t->fut); /* the caller's; the queue entry keeps its own */
    return CF_ESHUTDOWN;
  }
  *out = &t->fut;
  return 0;
}

/* ---- shutdown and lifetime ----------------------------------------------- */

/* Cancels every queued task: the injection queue, and the workers' deques
 * emptied from the thief's end (safe while their owners run). All of them
 * become CANCELLED before any of their listeners runs, and no lock is held
 * then, so a done-callback may wait for another of them or shut down
 * again. Tasks that slip in later are cancelled by execute(), which sees
 * `cancelling`. */
static void cancel_queued(pool *p) {
  cf__inject_node *list = NULL; /* chained through link.next */
  /* A producer mid-push (one that read `closed` before shutdown set it)
   * is waited for: pop returns NULL while nonempty. */
  cf__inject_lock(&p->inject);
  /* Holds the injection lock: move every node to our list. */
  while (cf__inject_nonempty(&p->inject)) {
    cf__inject_node *node = cf__inject_pop(&p->inject);
    if (node) {
      atomic_store_explicit(&node->next, list, memory_order_relaxed);
      list = node;
    }
  }
  /* Still held: it serialises the seizes below (two shutdowns at once). */
  for (size_t i = 0; i < p->n; i++) {
    task *t;
    while ((t = inbox_take(&p->workers[i].in)) != NULL) {
      cf__inject_node *node = &t->link;
      atomic_store_explicit(&node->next, list, memory_order_relaxed);
      list = node;
    }
    void *x;
    /* tasks private to a worker too, though it may be stuck in a task */
    if (p->seizable)
      cf__deque_seize(&p->workers[i].dq);
    while ((x = cf__deque_steal(&p->workers[i].dq)) != NULL) {
      if (x == CF__DEQUE_ABORT)
        continue;
      cf__inject_node *node = &((task *)x)->link;
      atomic_store_explicit(&node->next, list, memory_order_relaxed);
      list = node;
    }
  }
  cf__inject_unlock(&p->inject);
  /* Phase 1: every pending one becomes CANCELLED, listeners kept. Those
   * that were not pending (stale entries, cancelled by their owner) are
   * unlinked right away. */
  cf__inject_node *cancelled = NULL;
  while (list) {
    cf__inject_node *next =
        atomic_load_explicit(&list->next, memory_order_relaxed);
    task *t = task_of(list);
    if (cf__future_cancel_quiet(&t->fut)) {
      atomic_store_explicit(&list->next, cancelled, memory_order_relaxed);
      cancelled = list;
    } else {
      cf_future_unref(&t->fut);
    }
    list = next;
  }
  /* Phase 2: their listeners, then the queue's references. */
  while (cancelled) {
    cf__inject_node *next =
        atomic_load_explicit(&cancelled->next, memory_order_relaxed);
    task *t = task_of(cancelled);
    cf__future_fire(&t->fut);
    cf_future_unref(&t->fut);
    cancelled = next;
  }
}

static int pool_shutdown(cf_executor *ex, bool wait, bool cancel_futures) {
  pool *p = (pool *)ex;
  worker *me = tls_worker;
  if (wait && me && me->p == p)
    return CF_EDEADLK;
  /* seq_cst: the store half of the Dekker pair with submitters (see
   * "Shutdown" at the top); then the queues are looked at. */
  atomic_store_explicit(&p->closed, true, memory_order_seq_cst);
  if (cancel_futures) {
    atomic_store_explicit(&p->cancelling, true, memory_order_relaxed);
    cancel_queued(p);
  }
  /* seq_cst: after `closed`, before the workers' look at the queues
   * (may_exit). */
  atomic_store_explicit(&p->shutdown, true, memory_order_seq_cst);
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

static void free_workers(pool *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    worker *w = &p->workers[i];
    if (w->first)
      fib_destroy(w->first);
    while (w->spare) {
      fib *g = w->spare;
      w->spare = g->next_free;
      fib_destroy(g);
    }
    cf__deque_fini(&w->dq);
    while (w->cache) { /* its thread has ended */
      struct cached_task *c = w->cache;
      w->cache = c->next;
      cf__free(c, sizeof(task));
    }
  }
}

static void pool_destroy(cf_executor *ex) {
  pool *p = (pool *)ex;
  worker *me = tls_worker;
  if (me && me->p == p)
    return; /* documented misuse: never free a pool from its own worker */
  /* Anything still queued (a worker failed to start) is cancelled. */
  cancel_queued(p);
  free_workers(p, p->n);
  pthread_mutex_destroy(&p->join_lock);
  pthread_mutex_destroy(&p->timer_lock);
  free(p->timers);
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

static void *worker_entry(void *arg) {
  worker *w = arg;
  pool *p = w->p;
  tls_worker = w;
  /* release: pairs with the acquire in cf_thread_pool_new. */
  atomic_fetch_add_explicit(&p->started, 1, memory_order_release);
  cf__waiter_wake(p->creator);
  worker_main(w);
  tls_worker = NULL;
  return NULL;
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
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  cf_thread_pool_opts o = opts ? *opts : (cf_thread_pool_opts){0};
  size_t n = o.max_workers;
  if (n == 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    n = cpus > 0 ? (size_t)cpus : 1;
  }
  size_t stack = o.stack_size ? o.stack_size : DEFAULT_STACK;
  if (n > MAX_WORKERS)
    return CF__FAILF(CF_EINVAL, "max_workers %zu is above %d", n, MAX_WORKERS);
  if (stack < CF__FIBER_MIN_STACK || stack > CF__FIBER_MAX_STACK)
    return CF__FAILF(CF_EINVAL, "stack_size %zu is outside [%zu, %zu]", stack,
                     (size_t)CF__FIBER_MIN_STACK, (size_t)CF__FIBER_MAX_STACK);
  cf__waiter *creator = cf__waiter_self();
  pool *p = zalloc_aligned(sizeof *p);
  if (!p || !creator) {
    free(p);
    return CF__FAIL(CF_ENOMEM, "no memory for the pool");
  }
  p->base.vt = &pool_vt;
  cf__inject_init(&p->inject);
  cf__inject_init(&p->ready);
  atomic_init(&p->next_due, UINT64_MAX);
  p->n = n;
  p->seizable = cf__membarrier_usable();
  p->creator = creator;
  p->stack_size = stack;
  p->initializer = o.initializer;
  p->initarg = o.initarg;
  snprintf(p->name_prefix, sizeof p->name_prefix, "%s",
           o.thread_name_prefix ? o.thread_name_prefix : "cf-worker");
  pthread_mutex_init(&p->join_lock, NULL);
  pthread_mutex_init(&p->timer_lock, NULL);
  p->workers = zalloc_aligned(n * sizeof *p->workers);
  if (!p->workers) {
    free(p);
    return CF__FAIL(CF_ENOMEM, "no memory for the workers");
  }
  int rc = 0;
  size_t made = 0;
  for (; made < n && rc == 0; made++) {
    worker *w = &p->workers[made];
    w->p = p;
    w->index = (unsigned)made;
    w->rng = 0x9E3779B97F4A7C15u * (made + 1);
    cf__waiter_init(&w->park, NULL, NULL);
    if (cf__deque_init(&w->dq, 256) != 0) {
      rc = CF_ENOMEM;
      break;
    }
    /* Each worker's first loop fiber is made here, so that running out of
     * memory fails the call instead of a worker. */
    w->first = fib_get(w);
    if (!w->first)
      rc = CF_ENOMEM;
  }
  if (rc != 0) {
    free_workers(p, made);
    pthread_mutex_destroy(&p->join_lock);
    pthread_mutex_destroy(&p->timer_lock);
    free(p->workers);
    free(p);
    return CF__FAIL(rc, "no memory (or mappings) for the workers' deques "
                        "and fiber stacks");
  }
  size_t created = 0;
  for (; created < n; created++) {
    worker *w = &p->workers[created];
    if (pthread_create(&w->thread, NULL, worker_entry, w) != 0) {
      rc = CF_ESYS;
      break;
    }
    w->started = true;
  }
  /* Wait until every created worker runs, so that wakes reach them.
   * Initializers run after this, concurrently with submissions. */
  for (;;) {
    uint32_t seen = cf__waiter_seq(creator);
    if (atomic_load_explicit(&p->started, memory_order_acquire) >= created)
      break;
    cf__waiter_sleep(creator, seen, NULL);
  }
  if (rc != 0) {
    pool_shutdown(&p->base, true, true);
    pool_destroy(&p->base);
    return CF__FAILF(rc,
                     "a worker thread could not be created (%zu of %zu "
                     "were)",
                     created, n);
  }
  *out = &p->base;
  return 0;
}

size_t cf_thread_pool_size(const cf_executor *ex) {
  if (!ex || ex->vt != &pool_vt)
    return 0;
  return ((const pool *)ex)->n;
}
