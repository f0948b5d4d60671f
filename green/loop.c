/* The green-task loop: tasks on fibers, scheduled by one thread, on libuv.
 *
 * Why libuv: it is the loop C users know (and what gevent itself can run
 * on); it gives timers and a thread-safe wake-up (uv_async), portable and
 * well kept. The scheduler itself (ready queue, timer heap, fiber
 * switches) is ours, so a switch costs a fiber switch, not a trip through
 * libuv; so is the readiness of descriptors (an epoll of our own, see
 * "Descriptors" below), since libuv's poll handles cost system calls per
 * wait.
 *
 * Threads: the owner thread runs the scheduler on its own stack (`native`)
 * inside cf_loop_run*; it switches to a task's fiber and gets control back
 * when the task suspends or ends. Everything in the loop belongs to the
 * owner thread except `remote_mu`'s lists, where any thread drops new tasks
 * and wake-ups, then pokes uv_async. A green task's waits use its own
 * cf__waiter (ops: green_ops): sleeping suspends the task; a wake from any
 * thread queues it on the remote list (holding a reference to its future,
 * so the task outlives the queue entry), and the scheduler makes it ready
 * if it is still suspended. Wakers only call a waiter's wake while its
 * owner sleeps, and every wait settles its wake nodes before it returns, so
 * a task is alive whenever its waiter is woken.
 *
 * Timers: one uv_timer armed at the earliest due time of a min-heap of
 * tasks (sleeps, wait deadlines, spawn_after starts).
 *
 * Descriptors: the loop's own epoll instance (`epfd`, itself watched by
 * one uv_poll handle), where each descriptor a task waits on stays
 * registered, edge-triggered, and a wait costs no system call when it can
 * trust that registration (see wait_fd_green). A libuv poll handle per
 * wait, started and closed each time, cost three epoll_ctl and an fcntl
 * per wait; a one-shot registration re-armed per wait, one.
 *
 * Lifetime: a task's future holds the task (it is embedded); the caller
 * holds one reference and the loop another until the task has ended (or
 * was cancelled before it started) and has been taken off every list.
 *
 * Task blocks are recycled: the last unref of a task's future, on a thread
 * that owns a live loop, puts the block on that loop's `cache` (the newest
 * live loop of the thread: `thread_loops`), and a spawn on that thread
 * takes its block from there, so a burst of spawns and joins costs no
 * trip through the allocator per task. Blocks are all the same size and
 * from cf__alloc, so any loop's cache may hold any loop's blocks. Only the
 * owner thread touches a cache, and a loop is only freed by its owner, so
 * a thread's `thread_loops` are alive whenever it looks: a future released
 * on a thread without a loop, or after its loop was freed, goes back to the
 * allocator (or to another live loop of the releasing thread). A cache
 * keeps at most the blocks of the most tasks that were alive at once, and
 * gives all but GTASK_CACHE_KEEP back when its loop goes idle (the
 * scheduler is about to sleep) and when the loop is freed. Under
 * AddressSanitizer cached blocks are poisoned, so a use after the last
 * unref is still reported; in debug mode (CFUTURES_DEBUG) there is no
 * cache, every block goes to the quarantine.
 */
#include <cfutures/green.h>

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <uv.h>

#if defined(__SANITIZE_ADDRESS__)
#define GREEN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GREEN_ASAN 1
#endif
#endif
#ifdef GREEN_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n)   ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#include "core/alloc.h"
#include "core/fiber.h"
#include "core/netpoll.h"
#include "core/report.h"
#include "core/waiter.h"
#include "executor/executor_internal.h"
#include "futures/future_internal.h"
#include "green/green_internal.h"

#define NO_TIMER ((size_t)-1)

/* Cached task blocks a loop keeps when it goes idle (about 300 KB). */
#define GTASK_CACHE_KEEP 1024

typedef enum { T_NEW, T_READY, T_RUNNING, T_SUSPENDED, T_DONE } tstate;

typedef struct gtask {
  cf_future fut; /* first: a task is its future */
  cf_fn fn;
  void *arg;
  cf_loop *loop;
  cf__fiber f;              /* mapped when the task first runs */
  cf__waiter waiter;        /* ops = green_ops, owner = this task */
  tstate state;             /* owner thread */
  struct gtask *ready_next; /* owner thread: the ready queue */
  bool in_ready;            /* owner thread: on the ready queue */
  struct gtask *spawn_next; /* remote_mu: the spawned list */
  struct gtask *wake_next;  /* remote_mu: the woken list (a task may be on
                             * both at once: a cancel before it started) */
  struct gtask *live_prev, *live_next; /* every task not ended */
  _Atomic bool wake_queued;            /* on the remote wake list */
  _Atomic bool cancel;                 /* cf_green_cancel was called */
  uint64_t due;                        /* ns, in the timer heap */
  size_t heap_at;                      /* owner thread: index in the heap */
  bool timed_out; /* owner thread: the last suspension timed out */
  bool sleeping;  /* owner thread: in cf_green_sleep/yield/fd */
  int io_events;  /* owner thread: what the fd wait saw */
  uint64_t id;    /* owner thread: its number in its loop (from 1), given
                   * when it starts */
  void *tag;      /* owner thread: see cf__green_tag */
} gtask;

struct cf_loop {
  uv_loop_t uv;
  uv_async_t async;
  uv_timer_t timer;
  const char *owner; /* the owner thread's thread_token */
  cf__fiber native;  /* the scheduler, on the owner thread's stack */
  /* Owner thread: the fiber of the task that ended last, waiting in
   * task_entry for the next task to start on it: no lock, no search of the
   * process-wide cache (cf__fiber_take) and no reset per task. map NULL:
   * none. */
  cf__fiber spare;
  cf__waiter w; /* woken (uv_async) when a run's future completes */
  size_t stack_size;
  gtask *ready_head, *ready_tail; /* owner thread */
  gtask *live;                    /* owner thread: started or queued tasks */
  gtask **heap;                   /* owner thread: timers, by due */
  size_t nheap, heap_cap;
  pthread_mutex_t remote_mu;
  gtask *spawned_head, *spawned_tail; /* remote_mu: new tasks, in order */
  gtask *woken;                       /* remote_mu: wake-ups */
  /* Tasks not ended: those the owner thread counted (spawned on it, or
   * taken off the spawned list) plus those spawned by other threads and
   * not yet taken. Two counters so that the owner's spawn and retire are
   * plain stores, not locked read-modify-writes. */
  _Atomic size_t ntasks_owner;  /* written by the owner thread only */
  _Atomic size_t ntasks_remote; /* written under remote_mu */
  _Atomic bool closing;
  bool running;          /* owner thread: inside cf_loop_run* */
  struct fdwatch *watch; /* owner thread: indexed by descriptor */
  uint64_t task_ids;     /* owner thread: the last task's id */
  size_t nwatch;
  int epfd;       /* the descriptors' epoll instance */
  uv_poll_t ep_h; /* libuv's watch on epfd */
  /* Owner thread: recycled task blocks (see "Task blocks are recycled"
   * above), a ring of cache_cap (a power of two) slots: ncache blocks from
   * cache_head on, taken in the order they were given back, so that a
   * burst's blocks come back in the order the burst had them. */
  struct gtask **cache;
  size_t ncache, cache_cap, cache_head;
  /* Owner thread: the other live loops of this thread (thread_loops). */
  struct cf_loop *thread_prev, *thread_next;
};

/* What the loop knows of a descriptor green tasks have waited on: its
 * waiters (at most one reader and one writer) and its registration in
 * epfd, edge-triggered, whose data is the descriptor and `gen`. The
 * program may close the descriptor and reuse its number at any time
 * without telling the loop: the kernel then drops the registration (or,
 * when another process still holds the old file, keeps it under the old
 * file), so re-registering fails with ENOENT and the loop registers the
 * new file under a new `gen`; events that still come for the old one
 * carry the old `gen` and are ignored. When a wait may skip
 * re-registering: see wait_fd_green. */
typedef struct fdwatch {
  gtask *reader, *writer;
  uint32_t gen;
  uint32_t mask; /* the events registered (EPOLLIN, EPOLLOUT; 0: none) */
  /* The task that registered or last checked the registration (by id):
   * its next waits trust it without a system call while `fresh` holds
   * (see wait_fd_green). */
  uint64_t owner;
  bool fresh; /* made by cf_green_accept/connect, no end of file seen */
  bool rd_ready, wr_ready; /* an event came while nobody waited for it */
  bool drained; /* a hint: the last green read of it was short (see
                 * cf__green_fd_drained) */
} fdwatch;

static _Thread_local gtask *running_task CF__TLS_FAST;
/* The live loops this thread owns, newest first: the first one's cache
 * takes the task blocks this thread releases and gives the ones it spawns. */
static _Thread_local cf_loop *thread_loops CF__TLS_FAST;

static uint64_t now_ns(void) {
  return cf__now_ns();
}

/* ---- the timer heap (owner thread) ----------------------------------------
 */

static void heap_swap(cf_loop *l, size_t i, size_t j) {
  gtask *t = l->heap[i];
  l->heap[i] = l->heap[j];
  l->heap[j] = t;
  l->heap[i]->heap_at = i;
  l->heap[j]->heap_at = j;
}

static void heap_up(cf_loop *l, size_t i) {
  while (i > 0 && l->heap[(i - 1) / 2]->due > l->heap[i]->due) {
    heap_swap(l, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
}

static void heap_down(cf_loop *l, size_t i) {
  for (;;) {
    size_t c = 2 * i + 1, m = i;
    if (c < l->nheap && l->heap[c]->due < l->heap[m]->due)
      m = c;
    if (c + 1 < l->nheap && l->heap[c + 1]->due < l->heap[m]->due)
      m = c + 1;
    if (m == i)
      return;
    heap_swap(l, i, m);
    i = m;
  }
}

static bool heap_add(cf_loop *l, gtask *t, uint64_t due) {
  if (l->nheap == l->heap_cap) {
    size_t cap = l->heap_cap ? 2 * l->heap_cap : 64;
    gtask **h = realloc(l->heap, cap * sizeof *h);
    if (!h)
      return false;
    l->heap = h;
    l->heap_cap = cap;
  }
  t->due = due;
  t->heap_at = l->nheap;
  l->heap[l->nheap++] = t;
  heap_up(l, t->heap_at);
  return true;
}

static void heap_del(cf_loop *l, gtask *t) {
  size_t i = t->heap_at;
  if (i == NO_TIMER)
    return;
  t->heap_at = NO_TIMER;
  l->nheap--;
  if (i == l->nheap)
    return;
  gtask *moved = l->heap[l->nheap];
  l->heap[i] = moved;
  moved->heap_at = i;
  heap_up(l, i);
  heap_down(l, moved->heap_at);
}

/* ---- queues -----------------------------------------------------------------
 */

/* Queues t to run (once: a task already queued stays where it is). */
static void ready_push(cf_loop *l, gtask *t) {
  if (t->in_ready)
    return;
  t->in_ready = true;
  if (t->state != T_NEW)
    t->state = T_READY;
  t->ready_next = NULL;
  if (l->ready_tail)
    l->ready_tail->ready_next = t;
  else
    l->ready_head = t;
  l->ready_tail = t;
}

static gtask *ready_pop(cf_loop *l) {
  gtask *t = l->ready_head;
  if (t) {
    l->ready_head = t->ready_next;
    if (!l->ready_head)
      l->ready_tail = NULL;
    t->in_ready = false;
  }
  return t;
}

static void live_add(cf_loop *l, gtask *t) {
  t->live_prev = NULL;
  t->live_next = l->live;
  if (l->live)
    l->live->live_prev = t;
  l->live = t;
}

static void live_del(cf_loop *l, gtask *t) {
  if (t->live_prev)
    t->live_prev->live_next = t->live_next;
  else
    l->live = t->live_next;
  if (t->live_next)
    t->live_next->live_prev = t->live_prev;
}

/* One byte per thread: its address names the thread (no call to
 * pthread_self per spawn). */
static _Thread_local char thread_token CF__TLS_FAST;

static bool on_owner(const cf_loop *l) {
  return l->owner == &thread_token;
}

/* Any thread: asks the scheduler to look at a suspended task again. */
static void queue_wake(gtask *t) {
  if (atomic_exchange_explicit(&t->wake_queued, true, memory_order_acq_rel))
    return; /* already queued */
  cf_loop *l = t->loop;
  cf_future_ref(&t->fut); /* dropped by drain_remote */
  pthread_mutex_lock(&l->remote_mu);
  t->wake_next = l->woken;
  l->woken = t;
  pthread_mutex_unlock(&l->remote_mu);
  uv_async_send(&l->async);
}

/* ---- counting tasks ---------------------------------------------------------
 */

/* Owner thread: one more (+1) or one fewer (-1) task it counts. */
static void owner_count(cf_loop *l, size_t delta) {
  size_t n = atomic_load_explicit(&l->ntasks_owner, memory_order_relaxed);
  /* release: a thread that reads the count after a task ended
   * (cf_loop_tasks, acquire) sees what the task did. */
  atomic_store_explicit(&l->ntasks_owner, n + delta, memory_order_release);
}

static size_t count_tasks(const cf_loop *l) {
  cf_loop *m = (cf_loop *)l;
  /* acquire: pairs with owner_count's release and spawn's fetch_add. */
  return atomic_load_explicit(&m->ntasks_owner, memory_order_acquire) +
         atomic_load_explicit(&m->ntasks_remote, memory_order_acquire);
}

/* ---- recycled task blocks (owner thread) --------------------------------- */

/* How many blocks ahead a spawn prefetches the block of a later one. */
#define PREFETCH_AHEAD 4

/* Asks for every cache line of t's block (rw 1: to be written). */
#define prefetch_task(t, rw)                                                   \
  do {                                                                         \
    const char *p_ = (const char *)(t);                                        \
    for (size_t o_ = 0; o_ < sizeof(gtask); o_ += 64)                          \
      __builtin_prefetch(p_ + o_, (rw));                                       \
  } while (0)

/* A block of sizeof(gtask) bytes for a new task: from the calling thread's
 * newest live loop's cache, else from cf__alloc. NULL when out of memory.
 * Any thread. */
static gtask *block_get(void) {
  cf_loop *c = thread_loops;
  if (c && c->ncache) {
    gtask *t = c->cache[c->cache_head];
    c->cache_head = (c->cache_head + 1) & (c->cache_cap - 1);
    c->ncache--;
    /* A later spawn's block: a burst's blocks are cold by now. */
    if (c->ncache > PREFETCH_AHEAD)
      prefetch_task(
          c->cache[(c->cache_head + PREFETCH_AHEAD) & (c->cache_cap - 1)], 1);
    UNPOISON(t, sizeof *t);
    return t;
  }
  return cf__alloc(sizeof(gtask));
}

/* Doubles c's cache array (a ring, unwrapped into the new one): true, or
 * false when out of memory. Out of line: block_put stays a leaf. */
__attribute__((noinline, cold)) static bool cache_grow(cf_loop *c) {
  size_t cap = c->cache_cap ? 2 * c->cache_cap : 256;
  gtask **a = malloc(cap * sizeof *a);
  if (!a)
    return false;
  for (size_t i = 0; i < c->ncache; i++)
    a[i] = c->cache[(c->cache_head + i) & (c->cache_cap - 1)];
  free(c->cache);
  c->cache = a;
  c->cache_cap = cap;
  c->cache_head = 0;
  return true;
}

/* Gives back a block from block_get: to the calling thread's newest live
 * loop's cache if it has one (and not in debug mode, and the cache's array
 * can hold it), else to the allocator. Any thread. */
static void block_put(gtask *t) {
  cf_loop *c = thread_loops;
  if (!c || cf__debug_known() ||
      (c->ncache == c->cache_cap && !cache_grow(c))) {
    cf__free(t, sizeof *t);
    return;
  }
  POISON(t, sizeof *t);
  c->cache[(c->cache_head + c->ncache++) & (c->cache_cap - 1)] = t;
}

/* Owner thread: frees the oldest cached blocks until at most `keep` are
 * left (all of them and the array, for 0). */
static void cache_trim(cf_loop *l, size_t keep) {
  while (l->ncache > keep) {
    gtask *t = l->cache[l->cache_head];
    l->cache_head = (l->cache_head + 1) & (l->cache_cap - 1);
    l->ncache--;
    UNPOISON(t, sizeof *t);
    cf__free(t, sizeof *t);
  }
  if (keep == 0) {
    free(l->cache);
    l->cache = NULL;
    l->cache_cap = l->cache_head = 0;
  }
}

/* ---- tasks -------------------------------------------------------------- */

static const cf__waiter_ops green_ops;

/* The future's dealloc: the last reference to a task's future is gone (on
 * any thread, maybe after the loop was freed). */
static void task_dealloc(cf_future *f) {
  block_put((gtask *)f);
}

/* The loop is done with t: off every list, its stack back in the pool. */
static void task_retire(cf_loop *l, gtask *t) {
  heap_del(l, t);
  live_del(l, t);
  cf__fiber_give(&t->f); /* none if it became the spare (task_entry) */
  t->state = T_DONE;
  owner_count(l, (size_t)-1);
  cf_future_unref(&t->fut); /* the loop's reference */
}

/* Runs on a task's fiber: `msg` is the task (run_task passes it). When a
 * task has ended and the loop has no spare fiber, this fiber becomes the
 * spare: it waits here, switched out as `l->spare` (a struct that outlives
 * the task's block: a sanitized switch reads the struct it left from when
 * it resumes), until run_task resumes it for the next new task, without a
 * reset of its stack. Otherwise it leaves for good and task_retire gives
 * its stack back to the pool, which resets it before any reuse. */
static void task_entry(cf__fiber *self, void *msg) {
  (void)self;
  gtask *t = msg;
  for (;;) {
    cf__run_task_cancellable(&t->fut, t->fn, t->arg, NULL, &t->cancel);
    t->state = T_DONE;
    cf_loop *l = t->loop;
    if (l->spare.map) {
      cf__fiber_switch(&t->f, &l->native, NULL);
      abort(); /* an ended task is never resumed */
    }
    l->spare = t->f; /* the switch saves where we stop into it */
    t->f.map = NULL; /* the task no longer holds a stack */
    t = cf__fiber_switch(&l->spare, &l->native, NULL);
  }
}

/* Owner thread, on the scheduler: gives t the thread until it suspends or
 * ends. */
static void run_task(cf_loop *l, gtask *t) {
  if (t->state == T_NEW) {
    /* Cancelled before it started, or cannot start. */
    if (cf__future_set_running(&t->fut) != 0) {
      task_retire(l, t);
      return;
    }
    if (l->spare.map) {
      /* The fiber of an ended task, waiting in task_entry for the next. */
      t->f = l->spare;
      l->spare.map = NULL;
    } else if (cf__fiber_take(&t->f, l->stack_size, task_entry) != 0) {
      char *m = strdup("no memory or mappings for the green task's stack");
      if (cf__future_complete(&t->fut, CF_ENOMEM, NULL, NULL, m) != 0)
        free(m);
      task_retire(l, t);
      return;
    }
    t->id = ++l->task_ids; /* here, on the owner thread: spawns are not */
  }
  t->state = T_RUNNING;
  running_task = t;
  cf__waiter_set_current(&t->waiter);
  cf__fiber_switch(&l->native, &t->f, t); /* t: for task_entry */
  cf__waiter_set_current(NULL);
  running_task = NULL;
  if (t->state == T_DONE)
    task_retire(l, t);
}

/* On the task: gives the thread back to the scheduler until resumed. */
static void suspend(gtask *t) {
  t->state = T_SUSPENDED;
  cf__waiter_set_current(NULL);
  running_task = NULL;
  cf__fiber_switch(&t->f, &t->loop->native, NULL);
  /* run_task resumed us and set running_task / the waiter back. */
}

static uint64_t deadline_ns(const cf_deadline *d) {
  return (uint64_t)d->at.tv_sec * 1000000000u + (uint64_t)d->at.tv_nsec;
}

/* cf__waiter_ops.sleep for a green task: suspends it until a wake, its
 * deadline, or a cancel. */
static int green_sleep(cf__waiter *w, uint32_t seen, const cf_deadline *d) {
  gtask *t = w->owner;
  cf_loop *l = t->loop;
  if (atomic_load_explicit(&t->cancel, memory_order_acquire))
    return CF_ECANCELLED;
  bool timed = d && !d->forever;
  if (timed && cf__deadline_passed(d))
    return CF_ETIMEDOUT;
  if (timed && !heap_add(l, t, deadline_ns(d)))
    return cf__waiter_block(w, seen, d); /* no memory for a timer */
  uint32_t expect = seen;
  /* acq_rel: a waker that sees SLEEPING queues us; on failure, acquire as
   * in cf__waiter_seq. */
  if (!atomic_compare_exchange_strong_explicit(
          &w->seq, &expect, seen | CF__WAITER_SLEEPING, memory_order_acq_rel,
          memory_order_acquire)) {
    heap_del(l, t);
    return 0;
  }
  t->timed_out = false;
  suspend(t);
  atomic_fetch_and_explicit(&w->seq, ~CF__WAITER_SLEEPING,
                            memory_order_relaxed);
  heap_del(l, t);
  if (atomic_load_explicit(&t->cancel, memory_order_acquire))
    return CF_ECANCELLED;
  return t->timed_out ? CF_ETIMEDOUT : 0;
}

static void green_wake(cf__waiter *w) {
  queue_wake(w->owner);
}

/* Green tasks never run other tasks inline: they are the loop's. */
static bool green_run_inline(cf__waiter *w, cf_future *f) {
  (void)w;
  (void)f;
  return false;
}

static const cf__waiter_ops green_ops = {
    .sleep = green_sleep,
    .wake = green_wake,
    .run_inline = green_run_inline,
};

/* ---- the scheduler (owner thread) ---------------------------------------- */

/* Takes what other threads dropped off: new tasks and wake-ups. */
static void drain_remote(cf_loop *l) {
  pthread_mutex_lock(&l->remote_mu);
  gtask *spawned = l->spawned_head, *woken = l->woken;
  l->spawned_head = l->spawned_tail = NULL;
  l->woken = NULL;
  size_t n = atomic_load_explicit(&l->ntasks_remote, memory_order_relaxed);
  if (n) {
    /* The owner counts them now: first its count up, then the remote one
     * down, so that no reader sees them in neither. */
    owner_count(l, n);
    atomic_store_explicit(&l->ntasks_remote, 0, memory_order_relaxed);
  }
  pthread_mutex_unlock(&l->remote_mu);
  uint64_t now = now_ns();
  while (spawned) {
    gtask *t = spawned;
    spawned = t->spawn_next;
    live_add(l, t);
    if (t->due > now && heap_add(l, t, t->due))
      continue; /* spawn_after: started by the timer */
    ready_push(l, t);
  }
  while (woken) {
    gtask *t = woken;
    woken = t->wake_next;
    atomic_store_explicit(&t->wake_queued, false, memory_order_release);
    bool cancelled = atomic_load_explicit(&t->cancel, memory_order_acquire);
    if (t->state == T_SUSPENDED && (!t->sleeping || cancelled)) {
      /* (a yielding task is T_READY, already queued) */
      heap_del(l, t);
      ready_push(l, t);
    } else if (t->state == T_NEW && cancelled && t->heap_at != NO_TIMER) {
      heap_del(l, t); /* spawn_after, cancelled: retire it now */
      ready_push(l, t);
    }
    cf_future_unref(&t->fut);
  }
}

static void fire_timers(cf_loop *l) {
  uint64_t now = now_ns();
  while (l->nheap && l->heap[0]->due <= now) {
    gtask *t = l->heap[0];
    heap_del(l, t);
    if (t->state == T_SUSPENDED)
      t->timed_out = true;
    ready_push(l, t);
  }
}

static void on_async(uv_async_t *h) {
  (void)h; /* the scheduler drains the lists itself */
}

static void on_timer(uv_timer_t *h) {
  /* fire_timers does the work. uv_run(UV_RUN_ONCE) runs due timers before
   * it polls, and would then block for I/O even though a timer just fired
   * (a timer already due by the time uv_run looked): stopping the loop
   * makes that poll return at once. */
  uv_stop(h->loop);
}

/* The loop's own waiter: woken (by a completing future) while the
 * scheduler waits in uv_run. */
static void loop_wake(cf__waiter *w) {
  cf_loop *l = w->owner;
  uv_async_send(&l->async);
}

static int loop_no_sleep(cf__waiter *w, uint32_t seen, const cf_deadline *d) {
  return cf__waiter_block(w, seen, d); /* never used: the scheduler polls */
}

static const cf__waiter_ops loop_ops = {
    .sleep = loop_no_sleep,
    .wake = loop_wake,
    .run_inline = green_run_inline,
};

/* Runs until until(l, ctx) holds or the deadline passes. */
static int schedule(cf_loop *l, bool (*until)(cf_loop *l, void *ctx), void *ctx,
                    const cf_deadline *d) {
  cf__fiber_init_native(&l->native);
  for (;;) {
    uint32_t seen = cf__waiter_seq(&l->w);
    drain_remote(l);
    fire_timers(l);
    gtask *t;
    /* One round: the tasks ready now (those they make ready run next
     * round, so that a task that keeps yielding cannot starve timers). */
    gtask *last = l->ready_tail;
    while (last && (t = ready_pop(l))) {
      if (t->ready_next) /* the next one's block, while this one runs */
        prefetch_task(t->ready_next, 1);
      run_task(l, t);
      if (t == last)
        break;
    }
    if (until(l, ctx))
      return 0;
    if (!d->forever && cf__deadline_passed(d))
      return CF_ETIMEDOUT;
    if (l->ready_head) {
      uv_run(&l->uv, UV_RUN_NOWAIT);
      continue;
    }
    /* Nothing to run: sleep in libuv until a timer, a remote drop-off or
     * the awaited future. */
    uint64_t wake_at = l->nheap ? l->heap[0]->due : UINT64_MAX;
    if (!d->forever && deadline_ns(d) < wake_at)
      wake_at = deadline_ns(d);
    uint64_t now = now_ns();
    uv_update_time(&l->uv); /* libuv counts timers from its cached now */
    if (wake_at != UINT64_MAX)
      uv_timer_start(&l->timer, on_timer,
                     wake_at > now ? (wake_at - now + 999999) / 1000000 : 0, 0);
    uint32_t expect = seen;
    if (atomic_compare_exchange_strong_explicit(
            &l->w.seq, &expect, seen | CF__WAITER_SLEEPING,
            memory_order_acq_rel, memory_order_acquire)) {
      pthread_mutex_lock(&l->remote_mu);
      bool dropped = l->spawned_head || l->woken;
      pthread_mutex_unlock(&l->remote_mu);
      if (!dropped)
        cache_trim(l, GTASK_CACHE_KEEP); /* idle: give back a burst's blocks */
      uv_run(&l->uv, dropped ? UV_RUN_NOWAIT : UV_RUN_ONCE);
      atomic_fetch_and_explicit(&l->w.seq, ~CF__WAITER_SLEEPING,
                                memory_order_relaxed);
    }
    uv_timer_stop(&l->timer);
  }
}

/* ---- public API ------------------------------------------------------------
 */

static void on_epoll(uv_poll_t *h, int status, int events);

int cf_loop_new(const cf_loop_opts *opts, cf_loop **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  size_t stack =
      opts && opts->stack_size ? opts->stack_size : CF_GREEN_STACK_DEFAULT;
  if (stack < CF_GREEN_STACK_MIN || stack > CF_GREEN_STACK_MAX)
    return CF__FAILF(CF_EINVAL, "stack_size %zu is outside [%zu, %zu]", stack,
                     CF_GREEN_STACK_MIN, CF_GREEN_STACK_MAX);
  cf_loop *l = calloc(1, sizeof *l);
  if (!l)
    return CF__FAIL(CF_ENOMEM, "no memory for the loop");
  int e = uv_loop_init(&l->uv);
  if (e == 0 && (e = uv_async_init(&l->uv, &l->async, on_async)) != 0)
    uv_loop_close(&l->uv);
  if (e != 0) {
    free(l);
    return CF__FAILF(CF_ESYS, "libuv: %s", uv_strerror(e));
  }
  l->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (l->epfd < 0 || (e = uv_poll_init(&l->uv, &l->ep_h, l->epfd)) != 0) {
    int err = l->epfd < 0 ? errno : -e;
    if (l->epfd >= 0)
      close(l->epfd);
    uv_close((uv_handle_t *)&l->async, NULL);
    uv_run(&l->uv, UV_RUN_DEFAULT);
    uv_loop_close(&l->uv);
    free(l);
    return CF__FAILF(CF_ESYS, "epoll: %s", strerror(err));
  }
  l->ep_h.data = l;
  uv_poll_start(&l->ep_h, UV_READABLE, on_epoll);
  uv_timer_init(&l->uv, &l->timer);
  pthread_mutex_init(&l->remote_mu, NULL);
  cf__waiter_init(&l->w, &loop_ops, l);
  l->owner = &thread_token;
  l->stack_size = stack;
  l->thread_next = thread_loops;
  if (thread_loops)
    thread_loops->thread_prev = l;
  thread_loops = l;
  *out = l;
  return 0;
}

static int spawn(const char *call, cf_loop *l, double delay_s, cf_fn fn,
                 void *arg, cf_future **out) {
  if (out)
    *out = NULL;
  if (!l || !fn || !out)
    return cf__fail_at(call, CF_EINVAL,
                       !l    ? "NULL loop"
                       : !fn ? "NULL task function"
                             : "NULL out");
  if (isnan(delay_s) || delay_s < 0)
    return cf__fail_at(call, CF_EINVAL, "the delay is NaN or negative");
  gtask *t = block_get();
  if (!t)
    return cf__fail_at(call, CF_ENOMEM, "no memory for the task");
  cf__future_init(&t->fut, task_dealloc);
  /* Two references: the caller's and the loop's. */
  cf__future_set_refs(&t->fut, 2);
  /* Field by field, not a memset of the block: the list links are written
   * when the task joins a list. */
  t->fn = fn;
  t->arg = arg;
  t->loop = l;
  t->f.map = NULL; /* no stack yet */
  cf__waiter_init(&t->waiter, &green_ops, t);
  t->state = T_NEW;
  t->in_ready = false;
  atomic_init(&t->wake_queued, false);
  atomic_init(&t->cancel, false);
  t->heap_at = NO_TIMER;
  t->timed_out = false;
  t->sleeping = false;
  t->io_events = 0;
  t->tag = NULL;
  t->due = delay_s > 0 ? now_ns() + (uint64_t)(delay_s * 1e9) : 0;
  if (on_owner(l)) {
    /* The owner thread (its green tasks included) queues the task itself:
     * no lock, no wake-up. `closing` is only set by this thread. */
    if (atomic_load_explicit(&l->closing, memory_order_relaxed)) {
      block_put(t);
      return cf__fail_at(call, CF_ESHUTDOWN, "the loop is being freed");
    }
    owner_count(l, 1);
    live_add(l, t);
    if (!(t->due && heap_add(l, t, t->due)))
      ready_push(l, t);
    *out = &t->fut;
    return 0;
  }
  pthread_mutex_lock(&l->remote_mu);
  /* Under the lock: cf_loop_free sets `closing` under it too, so no task
   * slips in after it looked. */
  if (atomic_load_explicit(&l->closing, memory_order_relaxed)) {
    pthread_mutex_unlock(&l->remote_mu);
    block_put(t);
    return cf__fail_at(call, CF_ESHUTDOWN, "the loop is being freed");
  }
  /* release: pairs with count_tasks' acquire. Under remote_mu, so that
   * drain_remote moves it to the owner's count with its task. */
  atomic_fetch_add_explicit(&l->ntasks_remote, 1, memory_order_release);
  t->spawn_next = NULL;
  if (l->spawned_tail)
    l->spawned_tail->spawn_next = t;
  else
    l->spawned_head = t;
  l->spawned_tail = t;
  pthread_mutex_unlock(&l->remote_mu);
  uv_async_send(&l->async);
  *out = &t->fut;
  return 0;
}

int cf_loop_spawn(cf_loop *l, cf_fn fn, void *arg, cf_future **out) {
  return spawn(__func__, l, 0, fn, arg, out);
}

int cf_loop_spawn_after(cf_loop *l, double delay_s, cf_fn fn, void *arg,
                        cf_future **out) {
  return spawn(__func__, l, delay_s, fn, arg, out);
}

static int check_runner(const char *call, cf_loop *l) {
  if (!l)
    return cf__fail_at(call, CF_EINVAL, "NULL loop");
  if (!on_owner(l))
    return cf__fail_at(call, CF_EPERM,
                       "only the thread that made the loop runs it");
  if (running_task || l->running)
    return cf__fail_at(call, CF_EDEADLK,
                       "called from inside the loop (a green task, or a "
                       "callback run by it)");
  return 0;
}

static bool future_done(cf_loop *l, void *f) {
  (void)l;
  return cf_future_done(f);
}

static bool no_tasks(cf_loop *l, void *ctx) {
  (void)ctx;
  return count_tasks(l) == 0;
}

int cf_loop_run_until_complete(cf_loop *l, cf_future *f, double timeout_s) {
  int rc = check_runner(__func__, l);
  if (rc != 0)
    return rc;
  if (!f)
    return CF__FAIL(CF_EINVAL, "NULL future");
  CF__CHECK_FUTURE(f);
  cf_deadline d;
  if (cf__deadline_from_timeout(timeout_s, &d) != 0)
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  cf__wake_node node;
  cf__wake_node_init(&node, &l->w);
  bool listening = cf__future_listen(f, &node.l);
  l->running = true;
  rc = schedule(l, future_done, f, &d);
  l->running = false;
  if (listening)
    cf__node_settle(f, &node.l, &node.fired);
  return rc ? CF__FAIL(rc, "the future is not done yet") : 0;
}

int cf_loop_run(cf_loop *l, double timeout_s) {
  int rc = check_runner(__func__, l);
  if (rc != 0)
    return rc;
  cf_deadline d;
  if (cf__deadline_from_timeout(timeout_s, &d) != 0)
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  l->running = true;
  rc = schedule(l, no_tasks, NULL, &d);
  l->running = false;
  return rc ? CF__FAILF(rc, "%zu green tasks are not done", count_tasks(l)) : 0;
}

size_t cf_loop_tasks(const cf_loop *l) {
  return l ? count_tasks(l) : 0;
}

static void on_closed(uv_handle_t *h) {
  (void)h;
}

int cf_loop_free(cf_loop *l) {
  if (!l)
    return 0;
  int rc = check_runner(__func__, l);
  if (rc != 0)
    return rc;
  pthread_mutex_lock(&l->remote_mu);
  atomic_store_explicit(&l->closing, true, memory_order_relaxed);
  pthread_mutex_unlock(&l->remote_mu);
  /* Cancel everything, then let the started tasks unwind: every wait of a
   * cancelled task returns CF_ECANCELLED at once. */
  drain_remote(l);
  for (gtask *t = l->live; t; t = t->live_next)
    cf_green_cancel(&t->fut);
  drain_remote(l);
  cf_deadline forever = {.forever = true};
  l->running = true;
  schedule(l, no_tasks, NULL, &forever);
  l->running = false;
  drain_remote(l); /* wake-ups queued last: drop their references */
  /* From here on, blocks released on this thread go elsewhere. */
  if (l->thread_prev)
    l->thread_prev->thread_next = l->thread_next;
  else
    thread_loops = l->thread_next;
  if (l->thread_next)
    l->thread_next->thread_prev = l->thread_prev;
  cache_trim(l, 0);
  cf__fiber_give(&l->spare);
  uv_close((uv_handle_t *)&l->async, on_closed);
  uv_close((uv_handle_t *)&l->timer, on_closed);
  uv_close((uv_handle_t *)&l->ep_h, on_closed);
  uv_run(&l->uv, UV_RUN_DEFAULT);
  uv_loop_close(&l->uv);
  close(l->epfd);
  pthread_mutex_destroy(&l->remote_mu);
  free(l->heap);
  free(l->watch);
  free(l);
  return 0;
}

cf_loop *cf_loop_current(void) {
  return running_task ? running_task->loop : NULL;
}

static fdwatch *watch_of(cf_loop *l, int fd);

bool cf__green_fd_drained(int fd) {
  gtask *t = running_task;
  if (!t || fd < 0 || (size_t)fd >= t->loop->nwatch)
    return false;
  return t->loop->watch[fd].drained;
}

void cf__green_fd_new(int fd) {
  gtask *t = running_task;
  fdwatch *w = t && fd >= 0 ? watch_of(t->loop, fd) : NULL;
  if (!w)
    return; /* not in a green task, or no memory: it is not trusted */
  /* A number the kernel just gave out: whatever the table says about it
   * was another file (events from a registration of that one, should it
   * still be open elsewhere, carry the old generation and are dropped). */
  w->mask = 0;
  w->gen++;
  w->owner = 0;
  w->fresh = true;
  w->rd_ready = w->wr_ready = false;
  w->drained = false;
}

void cf__green_fd_ended(int fd) {
  gtask *t = running_task;
  if (t && fd >= 0 && (size_t)fd < t->loop->nwatch)
    t->loop->watch[fd].fresh = false;
}

void cf__green_fd_set_drained(int fd, bool drained) {
  gtask *t = running_task;
  if (!t || fd < 0)
    return;
  if ((size_t)fd < t->loop->nwatch) {
    t->loop->watch[fd].drained = drained;
  } else if (drained) { /* a hint: none when out of memory */
    fdwatch *w = watch_of(t->loop, fd);
    if (w)
      w->drained = true;
  }
}

void *cf__green_tag(void) {
  return running_task ? running_task->tag : NULL;
}

void cf__green_set_tag(void *tag) {
  if (running_task)
    running_task->tag = tag;
}

/* Suspends the running task until its timer fires (or a cancel). */
static int green_pause(gtask *t, uint64_t due) {
  cf_loop *l = t->loop;
  if (atomic_load_explicit(&t->cancel, memory_order_acquire))
    return CF_ECANCELLED;
  t->sleeping = true;
  if (due == 0 || !heap_add(l, t, due)) {
    /* yield (or no memory for a timer): back at the end of the queue, as
     * T_READY, so that no wake queues it twice */
    ready_push(l, t);
    cf__waiter_set_current(NULL);
    running_task = NULL;
    cf__fiber_switch(&t->f, &l->native, NULL);
  } else {
    suspend(t);
  }
  t->sleeping = false;
  heap_del(l, t);
  return atomic_load_explicit(&t->cancel, memory_order_acquire) ? CF_ECANCELLED
                                                                : 0;
}

/* ---- waiting for a descriptor ----------------------------------------------
 */

/* Registers fd (edge-triggered, for good) for `want` (EPOLLIN, EPOLLOUT)
 * besides what it has: on a number the loop has not seen, or whose file
 * may have changed (closed, and the number reused by another file). 0 or
 * an errno value. */
static int watch_arm(cf_loop *l, int fd, fdwatch *w, uint32_t want) {
  uint32_t mask = w->mask | want;
  struct epoll_event ev = {.events = EPOLLET | EPOLLRDHUP | mask};
  if (w->mask) {
    ev.data.u64 = (uint32_t)fd | (uint64_t)w->gen << 32;
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) == 0) {
      w->mask = mask;
      return 0;
    }
    if (errno != ENOENT)
      return errno;
    /* Closed since it was registered: this is another file. */
  }
  w->mask = 0;
  w->gen++;
  w->rd_ready = w->wr_ready = false;
  ev.data.u64 = (uint32_t)fd | (uint64_t)w->gen << 32;
  if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) != 0 &&
      (errno != EEXIST || epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) != 0))
    return errno;
  w->mask = mask;
  return 0;
}

/* Makes t, a waiter of w, ready: it no longer waits on either side. */
static void watch_wake(cf_loop *l, fdwatch *w, gtask *t, uint32_t events) {
  if (w->reader == t)
    w->reader = NULL;
  if (w->writer == t)
    w->writer = NULL;
  t->io_events = (int)events;
  heap_del(l, t);
  ready_push(l, t);
}

/* epfd is readable: wakes the waiters of every descriptor that fired. */
static void on_epoll(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  cf_loop *l = h->data;
  enum { BATCH = 256 };
  struct epoll_event evs[BATCH];
  int n;
  /* Ends: every event is taken (edge-triggered), and no task runs in
   * here. */
  do {
    n = epoll_wait(l->epfd, evs, BATCH, 0);
    for (int i = 0; i < n; i++) {
      size_t fd = (uint32_t)evs[i].data.u64;
      uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
      if (fd >= l->nwatch || l->watch[fd].gen != gen)
        continue; /* a file closed since: not the one waited on now */
      fdwatch *w = &l->watch[fd];
      uint32_t e = evs[i].events;
      /* An error or hang-up wakes both sides; they find out. An edge
       * nobody waits for is kept for the next wait. */
      bool broken = e & (EPOLLERR | EPOLLHUP);
      if (e & (EPOLLIN | EPOLLRDHUP) || broken) {
        if (w->reader)
          watch_wake(l, w, w->reader, e);
        else
          w->rd_ready = true;
      }
      if (e & EPOLLOUT || broken) {
        if (w->writer)
          watch_wake(l, w, w->writer, e);
        else
          w->wr_ready = true;
      }
    }
  } while (n == BATCH);
}

/* Owner thread: fd's entry in the table (grown to hold it), or NULL when
 * out of memory. Pointers into the table last until it grows. */
static fdwatch *watch_of(cf_loop *l, int fd) {
  if ((size_t)fd >= l->nwatch) {
    size_t n = l->nwatch ? l->nwatch : 64;
    while (n <= (size_t)fd)
      n *= 2;
    fdwatch *grown = realloc(l->watch, n * sizeof *grown);
    if (!grown)
      return NULL;
    memset(grown + l->nwatch, 0, (n - l->nwatch) * sizeof *grown);
    l->watch = grown;
    l->nwatch = n;
  }
  return &l->watch[fd];
}

/* How long a wait that trusted its registration without a system call
 * waits before it checks it anyway (see wait_fd_green). */
#define TRUST_CHECK_NS 1000000000ull

/* Registrations are edge-triggered and stay (no system call to re-arm
 * each wait): an edge that comes while nobody waits is kept (rd_ready,
 * wr_ready) for the next wait. The catch: a descriptor closed with close()
 * leaves the epoll instance without a word to the loop, and its number may
 * come back as another file, which the table would take for registered. So
 * a wait trusts the registration without a system call only when its task
 * registered or checked it itself, on a descriptor that cf_green_accept or
 * cf_green_connect made (`fresh`: the loop saw the number come new) and
 * that has not reported end of file or an error since (after which it is
 * usually closed). Any other wait re-registers (one epoll_ctl, which also
 * reports a descriptor that is ready already). What is left, a task that
 * closes such a descriptor with close() and waits on another file given
 * the same number, is bounded: a trusting wait checks its registration
 * after TRUST_CHECK_NS (a delay, never a hang). */
/* What a wait knows of the descriptor's state (see wait_fd_green). */
typedef enum {
  WAIT_READY,        /* cf_green_wait_fd: until it is ready, whatever came
                      * before (level: always registers) */
  WAIT_AFTER_SHORT,  /* green I/O after a short read: an edge kept since
                      * counts */
  WAIT_AFTER_EAGAIN, /* green I/O after EAGAIN: an edge kept came before
                      * the call that found nothing, so it does not */
} wait_how;

static int wait_fd_green(gtask *t, int fd, int events, const cf_deadline *d,
                         wait_how how) {
  cf_loop *l = t->loop;
  if (atomic_load_explicit(&t->cancel, memory_order_acquire))
    return CF_ECANCELLED;
  fdwatch *w = watch_of(l, fd);
  if (!w)
    return CF_ENOMEM;
  if (((events & CF_GREEN_READ) && w->reader) ||
      ((events & CF_GREEN_WRITE) && w->writer))
    return CF_EBUSY;
  uint32_t want = (events & CF_GREEN_READ ? EPOLLIN : 0) |
                  (events & CF_GREEN_WRITE ? EPOLLOUT : 0);
  bool trusted = how != WAIT_READY && w->fresh && w->owner == t->id &&
                 (w->mask & want) == want;
  if (how == WAIT_AFTER_EAGAIN) { /* the task ran since: no event came */
    if (events & CF_GREEN_READ)
      w->rd_ready = false;
    if (events & CF_GREEN_WRITE)
      w->wr_ready = false;
  }
  /* An edge that came while nobody waited: ready now, no suspension. */
  if (trusted && (((events & CF_GREEN_READ) && w->rd_ready) ||
                  ((events & CF_GREEN_WRITE) && w->wr_ready))) {
    if (events & CF_GREEN_READ)
      w->rd_ready = false;
    if (events & CF_GREEN_WRITE)
      w->wr_ready = false;
    return 0;
  }
  if (events & CF_GREEN_READ) {
    w->reader = t;
    w->rd_ready = false;
  }
  if (events & CF_GREEN_WRITE) {
    w->writer = t;
    w->wr_ready = false;
  }
  uint64_t until = d->forever ? UINT64_MAX : deadline_ns(d);
  int rc = 0;
  for (;;) {
    int e = trusted ? 0 : watch_arm(l, fd, w, want);
    if (e != 0) {
      errno = e;
      rc = CF_ESYS;
      break;
    }
    w->owner = t->id;
    uint64_t check = trusted ? now_ns() + TRUST_CHECK_NS : UINT64_MAX;
    uint64_t due = check < until ? check : until;
    if (due != UINT64_MAX && !heap_add(l, t, due)) {
      rc = CF_ENOMEM;
      break;
    }
    t->io_events = 0;
    t->timed_out = false;
    t->sleeping = true; /* woken by the poll, the timer or a cancel only */
    suspend(t);
    t->sleeping = false;
    heap_del(l, t);
    w = &l->watch[fd]; /* the table may have grown meanwhile */
    if (t->io_events || atomic_load_explicit(&t->cancel, memory_order_acquire))
      break;
    if (!(trusted && due == check && now_ns() < until)) {
      rc = CF_ETIMEDOUT;
      break;
    }
    trusted = false; /* the check: re-register, and wait on */
  }
  /* No longer a waiter (woken by the timer, a cancel or a failure). The
   * registration stays; an edge with nobody waiting is kept. */
  if (w->reader == t)
    w->reader = NULL;
  if (w->writer == t)
    w->writer = NULL;
  if (rc)
    return rc;
  if (t->io_events)
    return 0;
  return atomic_load_explicit(&t->cancel, memory_order_acquire)
             ? CF_ECANCELLED
             : CF_ETIMEDOUT;
}

/* The current waiter if it is a thread-pool task's fiber, whose waits on
 * descriptors and sleeps suspend only the task (M:N: the poller thread,
 * core/netpoll.h, and the pool's timers wake it), else NULL. */
static cf__waiter *fiber_io_waiter(void) {
  cf__waiter *w = cf__waiter_self();
  return w && w->ops && w->ops->fiber_io ? w : NULL;
}

/* cf_green_wait_fd, and the waits of green I/O (`how`: see wait_how),
 * failing as `call`. */
static int wait_fd(const char *call, int fd, int events, double timeout_s,
                   wait_how how) {
  if (fd < 0 || !(events & (CF_GREEN_READ | CF_GREEN_WRITE)) ||
      (events & ~(CF_GREEN_READ | CF_GREEN_WRITE)))
    return cf__fail_at(call, CF_EINVAL, fd < 0 ? "negative descriptor"
                                      : "events must be CF_GREEN_READ "
                                        "and/or CF_GREEN_WRITE");
  cf_deadline d;
  if (cf__deadline_from_timeout(timeout_s, &d) != 0)
    return cf__fail_at(call, CF_EINVAL, "the timeout is NaN");
  gtask *t = running_task;
  cf__waiter *fw = t ? NULL : fiber_io_waiter();
  /* A plain thread, or a pool task with no time to wait (a zero timeout:
   * is it ready now?): poll(2). */
  if (!t && (!fw || cf__deadline_passed(&d))) {
    struct pollfd p = {.fd = fd,
                       .events =
                           (short)((events & CF_GREEN_READ ? POLLIN : 0) |
                                   (events & CF_GREEN_WRITE ? POLLOUT : 0))};
    for (;;) {
      double left = cf__deadline_remaining(&d);
      int ms = d.forever ? -1 : left <= 0 ? 0 : (int)ceil(left * 1e3);
      int r = poll(&p, 1, ms);
      if (r > 0)
        return 0;
      if (r == 0)
        return cf__fail_at(call, CF_ETIMEDOUT, "the descriptor is not ready");
      if (errno != EINTR)
        return cf__fail_fmt(call, CF_ESYS, "poll: %s", strerror(errno));
    }
  }
  /* a green task, or a thread-pool task (M:N: its fiber waits through
   * the poller, core/netpoll.h, while its worker goes on) */
  int rc = t ? wait_fd_green(t, fd, events, &d, how)
             : cf__netpoll_wait(fw, fd,
                                (events & CF_GREEN_READ ? EPOLLIN : 0) |
                                    (events & CF_GREEN_WRITE ? EPOLLOUT : 0),
                                &d);
  switch (rc) {
  case 0:
    return 0;
  case CF_ETIMEDOUT:
    return cf__fail_at(call, rc, "the descriptor is not ready");
  case CF_ECANCELLED:
    return cf__fail_at(call, rc, "the green task was cancelled");
  case CF_EBUSY:
    return cf__fail_at(call, rc, "another green task already waits for the same "
                        "event on this descriptor");
  case CF_ESYS:
    return cf__fail_fmt(call, rc, "epoll: %s", strerror(errno));
  default:
    return cf__fail_at(call, rc, NULL);
  }
}

int cf_green_wait_fd(int fd, int events, double timeout_s) {
  return wait_fd(__func__, fd, events, timeout_s, WAIT_READY);
}

int cf__green_wait_io(const char *call, int fd, int events, double timeout_s,
                      bool after_eagain) {
  return wait_fd(call, fd, events, timeout_s,
                 after_eagain ? WAIT_AFTER_EAGAIN : WAIT_AFTER_SHORT);
}

int cf_green_sleep(double seconds) {
  if (isnan(seconds) || seconds < 0)
    return CF__FAIL(CF_EINVAL, "the duration is NaN or negative");
  gtask *t = running_task;
  cf__waiter *fw = t ? NULL : fiber_io_waiter();
  if (fw) { /* a thread-pool task: its fiber sleeps on the pool's timers */
    cf_deadline d;
    cf__deadline_from_timeout(seconds, &d);
    while (!cf__deadline_passed(&d)) {
      uint32_t seen = cf__waiter_seq(fw);
      cf__waiter_sleep(fw, seen, &d); /* returns early on a stray wake */
    }
    return 0;
  }
  if (!t) {
    struct timespec ts = {(time_t)seconds,
                          (long)((seconds - floor(seconds)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    return 0;
  }
  uint64_t due = now_ns() + (uint64_t)(seconds * 1e9);
  int rc = green_pause(t, due ? due : 1);
  return rc ? CF__FAIL(rc, "the green task was cancelled") : 0;
}

int cf_green_yield(void) {
  gtask *t = running_task;
  if (!t) {
    sched_yield();
    return 0;
  }
  int rc = green_pause(t, 0);
  return rc ? CF__FAIL(rc, "the green task was cancelled") : 0;
}

int cf_green_cancel(cf_future *f) {
  if (!f)
    return CF__FAIL(CF_EINVAL, "NULL future");
  CF__CHECK_FUTURE(f);
  if (f->dealloc != task_dealloc)
    return CF__FAIL(CF_EINVAL, "not a green task's future");
  gtask *t = (gtask *)f;
  if (cf_future_done(f))
    return CF__FAIL(CF_EINVALSTATE, "the task has ended");
  atomic_store_explicit(&t->cancel, true, memory_order_release);
  /* Not started: cancel it now (the scheduler retires it). Started: wake
   * it wherever it waits. */
  cf__future_cancel_quiet(f) ? cf__future_fire(f) : (void)0;
  queue_wake(t);
  return 0;
}
