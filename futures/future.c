/* Futures: the state machine, completion, listeners and single-future
 * waits. See future_internal.h for the locking protocol. */
#include <errno.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ck_pr.h>
#include <dlfcn.h>

#include "core/alloc.h"
#include "core/report.h"
#include "futures/future_internal.h"

/* ---- the state lock ------------------------------------------------------ */

/* The state word once LOCK is clear (acquire: pairs with the release in
 * unlock_word). LOCK is held for a handful of instructions: spin, then
 * yield in case its holder was preempted. */
static uint32_t word_unlocked(cf_future *f) {
  uint32_t s = atomic_load_explicit(&f->state, memory_order_acquire);
  for (unsigned spins = 0; s & CF__LOCK; spins++) {
    if (spins < 64)
      ck_pr_stall();
    else
      sched_yield();
    s = atomic_load_explicit(&f->state, memory_order_acquire);
  }
  return s;
}

/* Takes LOCK and returns the word (without LOCK) it was taken in. */
static uint32_t lock_word(cf_future *f) {
  for (;;) {
    uint32_t s = word_unlocked(f);
    /* acquire: pairs with the release store in unlock_word, so the
     * previous holder's writes (fields, list) are visible. */
    if (atomic_compare_exchange_weak_explicit(&f->state, &s, s | CF__LOCK,
                                              memory_order_acquire,
                                              memory_order_relaxed))
      return s;
  }
}

/* Releases LOCK, leaving the word w (LOCK clear). A plain store: nobody
 * changes the word while LOCK is held, references included. release:
 * publishes the fields and list written under LOCK; pairs with the acquire
 * in lock_word, in cf__future_state and in cf_future_unref. */
static void unlock_word(cf_future *f, uint32_t w) {
  atomic_store_explicit(&f->state, w, memory_order_release);
}

/* Takes LOCK and returns the state it was taken in. */
static uint32_t lock_state(cf_future *f) {
  return lock_word(f) & CF__STATE_MASK;
}

/* Releases LOCK with the state set to `state`, references unchanged. */
static void unlock_state(cf_future *f, uint32_t state) {
  uint32_t w = atomic_load_explicit(&f->state, memory_order_relaxed);
  unlock_word(f, (w & ~(CF__STATE_MASK | CF__LOCK)) | state);
}

/* ---- lifetime ------------------------------------------------------------ */

void cf__future_init(cf_future *f, void (*dealloc)(cf_future *f)) {
  atomic_init(&f->state, CF_PENDING | CF__REF_ONE);
  f->code = 0;
  f->value = NULL;
  f->destroy = NULL;
  f->message = NULL;
  f->listeners = NULL;
  f->dealloc = dealloc;
  f->magic = CF__FUTURE_LIVE;
}

void cf__future_misused(const cf_future *f, const char *call) {
  uint32_t m = f->magic;
  fprintf(stderr, "cfutures (CFUTURES_DEBUG): %s(%p): %s\n", call,
          (const void *)f,
          m == CF__FUTURE_DEAD
              ? "this future was freed: its last reference was dropped "
                "before (a use after cf_future_unref, or a double unref)"
              : "this is not a live future (a stray pointer, or its memory "
                "was overwritten)");
  fflush(stderr);
  abort();
}

cf_future *cf_future_new(void) {
  cf_future *f = cf__alloc(sizeof *f);
  if (f)
    cf__future_init(f, NULL);
  else
    CF__FAIL(CF_ENOMEM, "no memory for a future");
  return f;
}

static void owned_dealloc(cf_future *f) {
  cf__free(f, sizeof *f);
}

cf_future *cf__future_new_owned(void) {
  cf_future *f = cf__alloc(sizeof *f);
  if (f)
    cf__future_init(f, owned_dealloc);
  return f;
}

cf_future *cf_future_ref(cf_future *f) {
  CF__CHECK_FUTURE(f);
  if (!f)
    return f;
  for (;;) {
    uint32_t s = word_unlocked(f);
    if (cf__refs(s) == UINT32_MAX / CF__REF_ONE) {
      /* 2^29 - 1 references: one more would wrap to none */
      fprintf(stderr, "cfutures: cf_future_ref(%p): too many references\n",
              (void *)f);
      abort();
    }
    if (atomic_compare_exchange_weak_explicit(&f->state, &s, s + CF__REF_ONE,
                                              memory_order_relaxed,
                                              memory_order_relaxed))
      return f;
  }
}

/* Frees f: its last reference is gone. */
static void future_free(cf_future *f) {
  uint32_t s = atomic_load_explicit(&f->state, memory_order_relaxed);
  if ((s & CF__STATE_MASK) == CF_FINISHED && f->code == 0 && f->destroy)
    f->destroy(f->value);
  if (f->message)
    free(f->message);
  /* Listeners of a future that was never completed: never to run. */
  for (cf__listener *l = f->listeners, *next; l; l = next) {
    next = l->next;
    if (l->discard)
      l->discard(l);
  }
  f->magic = CF__FUTURE_DEAD;
  if (f->dealloc)
    f->dealloc(f);
  else
    cf__free(f, sizeof *f);
}

void cf_future_unref(cf_future *f) {
  if (!f)
    return;
  CF__CHECK_FUTURE(f);
  /* A sole holder needs no read-modify-write: nobody else can add a
   * reference without holding one. acquire: pairs with the release of
   * other holders' drops (the CAS below, a completion's unlock_word), so
   * their writes are visible before we free. */
  for (;;) {
    uint32_t s = word_unlocked(f);
    if (cf__refs(s) == 1)
      break;
    /* acq_rel: the last dropper must see every other holder's writes. */
    if (atomic_compare_exchange_weak_explicit(&f->state, &s, s - CF__REF_ONE,
                                              memory_order_acq_rel,
                                              memory_order_relaxed))
      return;
  }
  future_free(f);
}

/* ---- listeners ----------------------------------------------------------- */

bool cf__future_listen(cf_future *f, cf__listener *l) {
  uint32_t s = lock_state(f);
  if (cf__state_done(s)) {
    unlock_state(f, s);
    return false;
  }
  l->next = f->listeners;
  f->listeners = l;
  unlock_state(f, s);
  return true;
}

bool cf__future_unlisten(cf_future *f, cf__listener *l) {
  uint32_t s = lock_state(f);
  bool found = false;
  /* Holds LOCK: unlink l if the list still has it. */
  for (cf__listener **p = &f->listeners; *p; p = &(*p)->next) {
    if (*p == l) {
      *p = l->next;
      found = true;
      break;
    }
  }
  unlock_state(f, s);
  return found;
}

/* Runs a detached list (newest first): the waiters, then the
 * done-callbacks in registration order. The list is split before any
 * notification, since a notified waiter may free its node at once. */
static void fire_listeners(cf_future *f, cf__listener *list) {
  cf__listener *waiters = NULL, *callbacks = NULL;
  while (list) { /* reversing: oldest first */
    cf__listener *next = list->next;
    cf__listener **to = list->wakes_waiter ? &waiters : &callbacks;
    list->next = *to;
    *to = list;
    list = next;
  }
  for (cf__listener *l = waiters; l;) {
    cf__listener *next = l->next; /* notify may free l */
    l->notify(l, f);
    l = next;
  }
  for (cf__listener *l = callbacks; l;) {
    cf__listener *next = l->next;
    l->notify(l, f);
    l = next;
  }
}

/* Moves f from one of `from_mask`'s states to `to`, writing the result
 * fields, and runs the listeners. With `drop`, also drops one reference of
 * the caller's, in the same store when no listener is attached (one
 * read-modify-write for the whole completion), else after the listeners
 * ran (they get f alive); f is freed if that was the last. Returns 0 or
 * CF_EINVALSTATE (then nothing is dropped). */
static int transition(cf_future *f, unsigned from_mask, uint32_t to, int code,
                      void *value, cf_destroy_fn destroy, char *message,
                      bool drop) {
  uint32_t w = lock_word(f);
  uint32_t s = w & CF__STATE_MASK;
  if (!((1u << s) & from_mask)) {
    unlock_word(f, w);
    return CF_EINVALSTATE;
  }
  f->code = code;
  f->value = value;
  f->destroy = destroy;
  f->message = message;
  cf__listener *list = f->listeners;
  f->listeners = NULL;
  bool drop_now = drop && !list;
  unlock_word(f, ((w & ~CF__STATE_MASK) - (drop_now ? CF__REF_ONE : 0)) | to);
  if (list)
    fire_listeners(f, list);
  if (drop_now && cf__refs(w) == 1)
    future_free(f); /* ours was the last reference */
  else if (drop && !drop_now)
    cf_future_unref(f);
  return 0;
}

int cf__future_complete(cf_future *f, int code, void *value,
                        cf_destroy_fn destroy, char *message) {
  return transition(f, 1u << CF_PENDING | 1u << CF_RUNNING, CF_FINISHED, code,
                    value, destroy, message, false);
}

int cf__future_complete_drop(cf_future *f, int code, void *value,
                             cf_destroy_fn destroy, char *message) {
  return transition(f, 1u << CF_PENDING | 1u << CF_RUNNING, CF_FINISHED, code,
                    value, destroy, message, true);
}

bool cf__future_cancel(cf_future *f) {
  return transition(f, 1u << CF_PENDING | 1u << CF_RUNNING, CF_CANCELLED, 0,
                    NULL, NULL, NULL, false) == 0;
}

bool cf__future_cancel_quiet(cf_future *f) {
  uint32_t s = lock_state(f);
  if (s != CF_PENDING) {
    unlock_state(f, s);
    return false;
  }
  unlock_state(f, CF_CANCELLED); /* listeners stay until cf__future_fire */
  return true;
}

void cf__future_fire(cf_future *f) {
  uint32_t s = lock_state(f);
  cf__listener *list = f->listeners;
  f->listeners = NULL;
  unlock_state(f, s);
  fire_listeners(f, list);
}

/* ---- producer side ------------------------------------------------------- */

/* The reason a promise call was refused, for cf_last_error. */
static int refused(const char *call, int rc, const cf_future *f) {
  if (rc == CF_EINVALSTATE || rc == CF_ECANCELLED)
    switch (cf__future_state(f)) {
    case CF_CANCELLED:
      return cf__fail_at(call, rc, "the future was cancelled");
    case CF_FINISHED:
      return cf__fail_at(call, rc, "the future is already finished");
    case CF_RUNNING:
      return cf__fail_at(call, rc, "the future is already running");
    default:
      break;
    }
  return cf__fail_at(call, rc, NULL);
}

#define NOT_A_PROMISE                                                          \
  "this future belongs to an executor, which alone completes it"

int cf_future_set_running_or_notify_cancel(cf_future *f) {
  CF__CHECK_FUTURE(f);
  if (!f)
    return CF__FAIL(CF_EINVAL, "NULL future");
  if (f->dealloc) /* an executor's future: only the executor drives it */
    return CF__FAIL(CF_EPERM, NOT_A_PROMISE);
  int rc = cf__future_set_running(f);
  return rc ? refused(__func__, rc, f) : 0;
}

int cf__future_set_running(cf_future *f) {
  /* One CAS, no LOCK: the change publishes no field. */
  for (;;) {
    uint32_t s = word_unlocked(f);
    uint32_t st = s & CF__STATE_MASK;
    if (st != CF_PENDING)
      return st == CF_CANCELLED ? CF_ECANCELLED : CF_EINVALSTATE;
    if (atomic_compare_exchange_weak_explicit(
            &f->state, &s, (s & ~CF__STATE_MASK) | CF_RUNNING,
            memory_order_acquire, memory_order_relaxed))
      return 0;
  }
}

int cf_future_set_result(cf_future *f, void *value, cf_destroy_fn destroy) {
  CF__CHECK_FUTURE(f);
  if (!f)
    return CF__FAIL(CF_EINVAL, "NULL future");
  if (f->dealloc)
    return CF__FAIL(CF_EPERM, NOT_A_PROMISE);
  int rc = cf__future_complete(f, 0, value, destroy, NULL);
  return rc ? refused(__func__, rc, f) : 0;
}

int cf_future_set_exception(cf_future *f, int code, const char *fmt, ...) {
  CF__CHECK_FUTURE(f);
  if (!f)
    return CF__FAIL(CF_EINVAL, "NULL future");
  if (code == 0)
    return CF__FAIL(CF_EINVAL, "the code is 0 (a failure needs a CF_E* code)");
  if (f->dealloc)
    return CF__FAIL(CF_EPERM, NOT_A_PROMISE);
  char *msg = NULL;
  int rc = 0;
  if (fmt) {
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0) {
      msg = NULL;
      rc = CF__FAIL(CF_ENOMEM,
                    "no memory for the message (the code was set alone)");
    }
    va_end(ap);
  }
  int st = cf__future_complete(f, code, NULL, NULL, msg);
  if (st != 0) {
    free(msg);
    return refused(__func__, st, f);
  }
  return rc;
}

/* ---- queries ------------------------------------------------------------- */

cf_future_state cf_future_state_of(const cf_future *f) {
  CF__CHECK_FUTURE(f);
  return f ? (cf_future_state)cf__future_state(f) : CF_PENDING;
}

bool cf_future_cancelled(const cf_future *f) {
  CF__CHECK_FUTURE(f);
  return f && cf__future_state(f) == CF_CANCELLED;
}

bool cf_future_running(const cf_future *f) {
  CF__CHECK_FUTURE(f);
  return f && cf__future_state(f) == CF_RUNNING;
}

bool cf_future_done(const cf_future *f) {
  CF__CHECK_FUTURE(f);
  return f && cf__state_done(cf__future_state(f));
}

bool cf_future_cancel(cf_future *f) {
  CF__CHECK_FUTURE(f);
  if (!f)
    return false;
  if (transition(f, 1u << CF_PENDING, CF_CANCELLED, 0, NULL, NULL, NULL,
                 false) == 0)
    return true;
  return cf__future_state(f) == CF_CANCELLED;
}

/* ---- done-callbacks ------------------------------------------------------ */

typedef struct callback_node {
  cf__listener l;
  cf_done_fn fn;
  void *arg;
} callback_node;

static void free_node(cf__listener *l) {
  cf__free(l, sizeof(callback_node));
}

/* Reports a failed done-callback by its name (when the dynamic linker
 * knows it), its address and its future's. */
static void run_callback(cf_done_fn fn, cf_future *f, void *arg) {
  int rc = fn(f, arg);
  if (rc == 0)
    return;
  char what[256];
  Dl_info info;
  void *addr;
  memcpy(&addr, &fn, sizeof addr); /* a function pointer, as data */
  if (dladdr(addr, &info) && info.dli_sname)
    snprintf(what, sizeof what, "done-callback %s (%p) of future %p",
             info.dli_sname, addr, (void *)f);
  else
    snprintf(what, sizeof what, "done-callback %p of future %p", addr,
             (void *)f);
  cf__report(what, rc);
}

static void callback_notify(cf__listener *l, cf_future *f) {
  callback_node *n = (callback_node *)l;
  cf_done_fn fn = n->fn;
  void *arg = n->arg;
  cf__free(n, sizeof *n);
  run_callback(fn, f, arg);
}

int cf_future_add_done_callback(cf_future *f, cf_done_fn fn, void *arg) {
  CF__CHECK_FUTURE(f);
  if (!f || !fn)
    return CF__FAIL(CF_EINVAL, f ? "NULL callback" : "NULL future");
  if (cf_future_done(f)) {
    run_callback(fn, f, arg);
    return 0;
  }
  callback_node *n = cf__alloc(sizeof *n);
  if (!n)
    return CF__FAIL(CF_ENOMEM, "no memory for the callback");
  n->l.notify = callback_notify;
  n->l.discard = free_node;
  n->l.wakes_waiter = false;
  n->fn = fn;
  n->arg = arg;
  if (!cf__future_listen(f, &n->l)) {
    cf__free(n, sizeof *n);
    run_callback(fn, f, arg);
  }
  return 0;
}

/* ---- a pollable descriptor ------------------------------------------------
 */

typedef struct fd_node {
  cf__listener l;
  int fd; /* our own duplicate of the caller's eventfd */
} fd_node;

static void signal_fd(int fd) {
  uint64_t one = 1;
  while (write(fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

/* The future was freed before it was done: it never will be. */
static void fd_discard(cf__listener *l) {
  fd_node *n = (fd_node *)l;
  close(n->fd);
  free(n);
}

static void fd_notify(cf__listener *l, cf_future *f) {
  (void)f;
  fd_node *n = (fd_node *)l;
  signal_fd(n->fd);
  close(n->fd);
  free(n);
}

int cf_future_pollfd(cf_future *f, int *fd) {
  CF__CHECK_FUTURE(f);
  if (!f || !fd)
    return CF__FAIL(CF_EINVAL, f ? "NULL fd" : "NULL future");
  *fd = -1;
  int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0)
    return CF__FAILF(CF_ESYS, "eventfd: %s", strerror(errno));
  fd_node *n = NULL;
  if (!cf_future_done(f)) {
    n = malloc(sizeof *n);
    if (!n) {
      close(efd);
      return CF__FAIL(CF_ENOMEM, "no memory for the listener");
    }
    n->fd = fcntl(efd, F_DUPFD_CLOEXEC, 0);
    if (n->fd < 0) {
      int e = errno;
      free(n);
      close(efd);
      return CF__FAILF(CF_ESYS, "dup: %s", strerror(e));
    }
    n->l.notify = fd_notify;
    n->l.discard = fd_discard;
    n->l.wakes_waiter = true; /* a write never blocks or calls user code */
    if (cf__future_listen(f, &n->l)) {
      *fd = efd;
      return 0;
    }
    close(n->fd); /* done meanwhile */
    free(n);
  }
  signal_fd(efd);
  *fd = efd;
  return 0;
}

/* ---- waiting ------------------------------------------------------------- */

static void wake_notify(cf__listener *l, cf_future *f) {
  (void)f;
  cf__wake_node *n = (cf__wake_node *)l;
  cf__waiter_wake(n->w);
  cf__node_fire(&n->fired);
}

void cf__wake_node_init(cf__wake_node *n, cf__waiter *w) {
  n->l.next = NULL;
  n->l.notify = wake_notify;
  n->l.discard = NULL;
  n->l.wakes_waiter = true;
  n->w = w;
  atomic_init(&n->fired, 0);
}

void cf__node_fire(_Atomic uint32_t *fired) {
  /* release: the completer's last touch of the node; pairs with the acquire
   * in cf__node_settle, after which the node's memory may be reused. */
  atomic_store_explicit(fired, 1, memory_order_release);
}

void cf__node_settle(cf_future *f, cf__listener *l, _Atomic uint32_t *fired) {
  if (cf__future_unlisten(f, l))
    return;
  /* The completer detached the list and is notifying: a few instructions. */
  for (unsigned spins = 0; !atomic_load_explicit(fired, memory_order_acquire);
       spins++) {
    if (spins < 64)
      ck_pr_stall();
    else
      sched_yield();
  }
}

int cf__wait_until(bool (*cond)(void *ctx), void *ctx, cf_future *const *hints,
                   size_t nhints, const cf_deadline *d, cf__waiter *w) {
  size_t h = 0; /* hints before h are done or cannot run here */
  for (;;) {
    uint32_t seen = cf__waiter_seq(w);
    if (cond(ctx))
      return 0;
    if (w->ops) {
      while (h < nhints && !w->ops->run_inline(w, hints[h]))
        h++;
      if (h < nhints)
        continue; /* ran one: look again */
    }
    int rc = cf__waiter_sleep(w, seen, d);
    if (rc == CF_ETIMEDOUT)
      return cond(ctx) ? 0 : CF_ETIMEDOUT;
    if (rc != 0) /* a green task's wait, cancelled: CF_ECANCELLED */
      return rc;
  }
}

static bool future_is_done(void *f) {
  return cf_future_done(f);
}

static const cf__driver *_Atomic driver;

void cf__future_set_driver(const cf__driver *d) {
  atomic_store_explicit(&driver, d, memory_order_release);
}

int cf__future_wait(cf_future *f, const cf_deadline *d) {
  if (cf_future_done(f))
    return 0;
  if (!d->forever && cf__deadline_passed(d))
    return CF_ETIMEDOUT;
  cf__waiter *w = cf__waiter_self();
  if (!w)
    return CF_ENOMEM;
  /* A plain thread (not a pool's task nor a green task, which have better
   * to do) may do the work that completes f itself. */
  const cf__driver *dr = atomic_load_explicit(&driver, memory_order_acquire);
  if (dr && !w->ops && f->dealloc == dr->dealloc) {
    int rc = dr->drive(f, d);
    if (rc != CF_EBUSY)
      return rc;
  }
  /* On a pool task, the awaited task is usually still queued (often on
   * top of our own deque): run it here before paying for a listener. */
  if (w->ops && w->ops->run_inline(w, f) && cf_future_done(f))
    return 0;
  cf__wake_node node;
  cf__wake_node_init(&node, w);
  if (!cf__future_listen(f, &node.l))
    return 0;
  int rc = cf__wait_until(future_is_done, f, &f, 1, d, w);
  cf__node_settle(f, &node.l, &node.fired);
  return rc;
}

int cf__future_outcome(cf_future *f, void **out) {
  uint32_t s = cf__future_state(f);
  if (s == CF_CANCELLED)
    return CF_ECANCELLED;
  if (f->code != 0)
    return f->code == CF_EBROKEN ? CF_EBROKEN : CF_EFAILED;
  if (out)
    *out = f->value;
  return 0;
}

int cf__fail_outcome(const char *call, int rc, const cf_future *f) {
  switch (rc) {
  case CF_ETIMEDOUT:
    return cf__fail_at(call, rc, "the future is not done yet");
  case CF_ENOMEM:
    return cf__fail_at(call, rc, "no memory to wait");
  case CF_ECANCELLED:
    return cf__fail_at(call, rc,
                       cf__future_state(f) == CF_CANCELLED
                           ? "the future was cancelled"
                           : "the waiting green task was cancelled");
  case CF_EFAILED:
  case CF_EBROKEN:
    return cf__fail_fmt(call, rc, "the task failed with %s: %s",
                        cf_err_name(f->code),
                        f->message ? f->message : cf_strerror(f->code));
  default:
    return cf__fail_at(call, rc, NULL);
  }
}

int cf_future_result(cf_future *f, double timeout_s, void **out) {
  CF__CHECK_FUTURE(f);
  cf_deadline d;
  if (!f)
    return CF__FAIL(CF_EINVAL, "NULL future");
  if (isnan(timeout_s))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  int rc;
  if (cf_future_done(f)) { /* fast path: no clock read */
    rc = cf__future_outcome(f, out);
  } else {
    cf__deadline_from_timeout(timeout_s, &d);
    rc = cf__future_wait(f, &d);
    if (rc == 0)
      rc = cf__future_outcome(f, out);
  }
  return rc ? cf__fail_outcome(__func__, rc, f) : 0;
}

int cf_future_exception(cf_future *f, double timeout_s, cf_error *err) {
  CF__CHECK_FUTURE(f);
  cf_deadline d;
  if (!f || !err)
    return CF__FAIL(CF_EINVAL, f ? "NULL error record" : "NULL future");
  if (cf__deadline_from_timeout(timeout_s, &d) != 0)
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  int rc = cf__future_wait(f, &d);
  if (rc != 0)
    return cf__fail_outcome(__func__, rc, f);
  if (cf__future_state(f) == CF_CANCELLED)
    return cf__fail_outcome(__func__, CF_ECANCELLED, f);
  err->code = f->code;
  err->message = f->code == 0 ? NULL
                 : f->message ? f->message
                              : cf_strerror(f->code);
  return 0;
}
