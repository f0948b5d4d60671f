/* cf_wait and cf_as_completed: waiting on many futures at once.
 *
 * Both register one listener node per future. A node's notification counts
 * the completion (cf_wait) or pushes the node on a lock-free ready stack
 * (as_completed), then wakes the waiting thread. Nodes live in an array
 * owned by the wait; before it is freed every node is settled: unlinked
 * from its future, or, if the future's completer already detached it,
 * waited for until the completer has finished touching it. */
#include <stdlib.h>

#include "core/report.h"
#include "futures/future_internal.h"

typedef struct multi_node multi_node;

/* What several nodes report to: a cf_wait call or an as_completed iterator. */
typedef struct multi {
  cf_future *const *fs;
  size_t n;
  multi_node *nodes;
  /* The thread to wake; immortal waiter, so a stale value only wakes
   * spuriously. seq_cst: see as_completed_next. */
  _Atomic(cf__waiter *) w;
  _Atomic size_t ndone;        /* notifications seen */
  _Atomic size_t nfailed;      /* of which failed */
  _Atomic(multi_node *) ready; /* as_completed: completed, newest first */
} multi;

struct multi_node {
  cf__listener l;
  multi *m;
  size_t index;
  multi_node *ready_next;
  bool registered;
  _Atomic uint32_t fired;
};

static bool failed(const cf_future *f) {
  return cf__future_state(f) == CF_FINISHED && f->code != 0;
}

static void multi_notify(cf__listener *l, cf_future *f) {
  multi_node *n = (multi_node *)l;
  multi *m = n->m;
  if (failed(f))
    atomic_fetch_add_explicit(&m->nfailed, 1, memory_order_relaxed);
  /* release: pairs with the acquire loads in the wait conditions. */
  atomic_fetch_add_explicit(&m->ndone, 1, memory_order_release);
  multi_node *head = atomic_load_explicit(&m->ready, memory_order_relaxed);
  do {
    n->ready_next = head;
    /* seq_cst: publishes the node, and orders it before the load of m->w
     * below (Dekker with the store of m->w in as_completed_next). */
  } while (!atomic_compare_exchange_weak_explicit(
      &m->ready, &head, n, memory_order_seq_cst, memory_order_relaxed));
  cf__waiter *w = atomic_load_explicit(&m->w, memory_order_seq_cst);
  if (w)
    cf__waiter_wake(w);
  cf__node_fire(&n->fired);
}

static int cmp_ptr(const void *a, const void *b) {
  uintptr_t x = (uintptr_t) * (cf_future *const *)a;
  uintptr_t y = (uintptr_t) * (cf_future *const *)b;
  return x < y ? -1 : x > y;
}

/* Checks arguments shared by cf_wait and cf_as_completed_new and makes the
 * deadline: no NULL list with n > 0, no NULL entry, no NaN timeout. A
 * future listed more than once counts once, as in Python: *uniq gets a
 * malloc'd list of the distinct futures in first-seen order (NULL when
 * there are no duplicates: fs itself is that list) and *nuniq its length.
 * Sorting a copy keeps it O(n log n). */
static int check_futures(cf_future *const *fs, size_t n, double timeout_s,
                         cf_deadline *d, const char *call, cf_future ***uniq,
                         size_t *nuniq) {
  *uniq = NULL;
  *nuniq = n;
  if (!fs && n > 0)
    return cf__fail_at(call, CF_EINVAL, "NULL list of futures");
  if (cf__deadline_from_timeout(timeout_s, d) != 0)
    return cf__fail_at(call, CF_EINVAL, "the timeout is NaN");
  for (size_t i = 0; i < n; i++) {
    if (!fs[i])
      return cf__fail_fmt(call, CF_EINVAL, "future %zu of %zu is NULL", i, n);
    CF__CHECK_FUTURE_IN(fs[i], call);
  }
  if (n < 2)
    return 0;
  cf_future **copy = malloc(n * sizeof *copy);
  if (!copy)
    return cf__fail_at(call, CF_ENOMEM, "no memory to check the list");
  for (size_t i = 0; i < n; i++)
    copy[i] = fs[i];
  qsort(copy, n, sizeof *copy, cmp_ptr);
  size_t distinct = 1;
  for (size_t i = 1; i < n; i++)
    distinct += copy[i] != copy[i - 1];
  if (distinct == n) {
    free(copy);
    return 0;
  }
  /* Keep each future's first occurrence: `taken` marks, per distinct
   * pointer (its first index in the sorted copy), whether it was kept. */
  cf_future **out = malloc(distinct * sizeof *out);
  bool *taken = calloc(n, sizeof *taken);
  if (!out || !taken) {
    free(out);
    free(taken);
    free(copy);
    return cf__fail_at(call, CF_ENOMEM, "no memory to check the list");
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    cf_future **hit = bsearch(&fs[i], copy, n, sizeof *copy, cmp_ptr);
    while (hit > copy && hit[-1] == fs[i]) /* the first of its run */
      hit--;
    if (!taken[hit - copy]) {
      taken[hit - copy] = true;
      out[k++] = fs[i];
    }
  }
  free(taken);
  free(copy);
  *uniq = out;
  *nuniq = distinct;
  return 0;
}

/* Registers a node on every future. Futures already done are counted
 * (and, when `ready_list` is set, chained there in index order). */
static int multi_start(multi *m, cf_future *const *fs, size_t n, cf__waiter *w,
                       multi_node **already_done) {
  m->fs = fs;
  m->n = n;
  m->nodes = calloc(n ? n : 1, sizeof *m->nodes); /* n == 0: an empty iterator */
  if (!m->nodes)
    return CF_ENOMEM;
  atomic_init(&m->w, w);
  atomic_init(&m->ndone, 0);
  atomic_init(&m->nfailed, 0);
  atomic_init(&m->ready, NULL);
  multi_node **tail = already_done;
  for (size_t i = 0; i < n; i++) {
    multi_node *node = &m->nodes[i];
    node->l.notify = multi_notify;
    node->l.discard = NULL;
    node->l.wakes_waiter = true;
    node->m = m;
    node->index = i;
    atomic_init(&node->fired, 0);
    node->registered = cf__future_listen(fs[i], &node->l);
    if (!node->registered) {
      if (failed(fs[i]))
        atomic_fetch_add_explicit(&m->nfailed, 1, memory_order_relaxed);
      atomic_fetch_add_explicit(&m->ndone, 1, memory_order_relaxed);
      if (tail) {
        *tail = node;
        tail = &node->ready_next;
      }
    }
  }
  if (tail)
    *tail = NULL;
  return 0;
}

static void multi_finish(multi *m) {
  for (size_t i = 0; i < m->n; i++)
    if (m->nodes[i].registered)
      cf__node_settle(m->fs[i], &m->nodes[i].l, &m->nodes[i].fired);
  free(m->nodes);
  m->nodes = NULL;
}

/* ---- cf_wait ------------------------------------------------------------- */

typedef struct wait_ctx {
  multi m;
  cf_return_when when;
} wait_ctx;

static bool wait_cond(void *p) {
  wait_ctx *c = p;
  size_t done = atomic_load_explicit(&c->m.ndone, memory_order_acquire);
  switch (c->when) {
  case CF_FIRST_COMPLETED:
    return done > 0;
  case CF_FIRST_EXCEPTION:
    return done == c->m.n ||
           atomic_load_explicit(&c->m.nfailed, memory_order_acquire) > 0;
  default:
    return done == c->m.n;
  }
}

int cf_wait(cf_future *const *fs, size_t n, double timeout_s,
            cf_return_when when, bool *done) {
  cf_deadline d;
  if (when != CF_FIRST_COMPLETED && when != CF_FIRST_EXCEPTION &&
      when != CF_ALL_COMPLETED)
    return CF__FAILF(CF_EINVAL, "unknown return_when %d", (int)when);
  cf_future **uniq;
  size_t nu;
  int rc = check_futures(fs, n, timeout_s, &d, __func__, &uniq, &nu);
  if (rc != 0)
    return rc;
  if (n == 0) /* nothing to wait for: every condition holds */
    return 0;
  cf_future *const *ws = uniq ? uniq : fs;
  cf__waiter *w = cf__waiter_self();
  if (!w) {
    free(uniq);
    return CF__FAIL(CF_ENOMEM, "no memory for a waiter");
  }
  wait_ctx c = {.when = when};
  rc = multi_start(&c.m, ws, nu, w, NULL);
  if (rc != 0) {
    free(uniq);
    return CF__FAIL(rc, "no memory to wait on the futures");
  }
  /* On a pool task, tasks among fs not started yet may run inline. */
  rc = cf__wait_until(wait_cond, &c, ws, nu, &d, w);
  multi_finish(&c.m);
  size_t ndone = 0;
  for (size_t i = 0; i < nu; i++)
    ndone += cf_future_done(ws[i]);
  if (done)
    for (size_t i = 0; i < n; i++)
      done[i] = cf_future_done(fs[i]);
  free(uniq);
  if (rc == CF_ETIMEDOUT)
    return CF__FAILF(rc, "%zu (of %zu) futures unfinished", nu - ndone, nu);
  return rc ? CF__FAIL(rc, NULL) : 0;
}

/* ---- as_completed -------------------------------------------------------- */

struct cf_as_completed {
  multi m;
  cf_future **fs;    /* our references */
  multi_node *queue; /* completed, not yet yielded, oldest first */
  size_t yielded;
  cf_deadline deadline;
  bool timed_out;  /* sticky: every call after a timeout reports it */
  size_t hint_pos; /* futures before it are done */
};

int cf_as_completed_new(cf_future *const *fs, size_t n, double timeout_s,
                        cf_as_completed **out) {
  cf_deadline d;
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  cf_future **uniq;
  size_t nu;
  int rc = check_futures(fs, n, timeout_s, &d, __func__, &uniq, &nu);
  if (rc != 0)
    return rc;
  cf_as_completed *it = calloc(1, sizeof *it);
  if (!it) {
    free(uniq);
    return CF__FAIL(CF_ENOMEM, "no memory for the iterator");
  }
  /* Each distinct future once; an empty list makes an iterator that ends
   * at once. */
  it->fs = uniq ? uniq : malloc((nu ? nu : 1) * sizeof *it->fs);
  if (!it->fs) {
    free(it);
    return CF__FAIL(CF_ENOMEM, "no memory for the iterator");
  }
  for (size_t i = 0; i < nu; i++)
    it->fs[i] = cf_future_ref(uniq ? uniq[i] : fs[i]);
  it->deadline = d;
  rc = multi_start(&it->m, it->fs, nu, cf__waiter_self(), &it->queue);
  if (rc != 0) {
    for (size_t i = 0; i < nu; i++)
      cf_future_unref(it->fs[i]);
    free(it->fs);
    free(it);
    return CF__FAIL(rc, "no memory for the iterator");
  }
  *out = it;
  return 0;
}

/* Moves newly completed nodes to the (empty) queue, oldest first. */
static void drain_ready(cf_as_completed *it) {
  /* acquire: pairs with the push in multi_notify. */
  multi_node *list =
      atomic_exchange_explicit(&it->m.ready, NULL, memory_order_acquire);
  multi_node *rev = NULL;
  while (list) {
    multi_node *next = list->ready_next;
    list->ready_next = rev;
    rev = list;
    list = next;
  }
  it->queue = rev; /* only drained once the queue is empty */
}

static bool ready_cond(void *p) {
  cf_as_completed *it = p;
  return atomic_load_explicit(&it->m.ready, memory_order_seq_cst) != NULL;
}

int cf_as_completed_next(cf_as_completed *it, cf_future **out) {
  if (!it || !out)
    return CF__FAIL(CF_EINVAL, it ? "NULL out" : "NULL iterator");
  *out = NULL;
  if (it->yielded == it->m.n)
    return CF__FAIL(CF_EDONE, "every future was yielded");
  if (it->timed_out)
    return CF__FAILF(CF_ETIMEDOUT, "%zu (of %zu) futures unfinished",
                     cf_as_completed_unfinished(it), it->m.n);
  if (!it->queue) {
    cf__waiter *w = cf__waiter_self();
    if (!w)
      return CF__FAIL(CF_ENOMEM, "no memory for a waiter");
    /* seq_cst: Dekker with multi_notify (push ready, then load w): either
     * the notifier sees this waiter or ready_cond sees its push. */
    atomic_store_explicit(&it->m.w, w, memory_order_seq_cst);
    /* On a pool task, run a not-yet-started one inline; the cursor only
     * moves forward, so a whole iteration costs O(n) here. */
    while (it->hint_pos < it->m.n && cf_future_done(it->fs[it->hint_pos]))
      it->hint_pos++;
    int rc = cf__wait_until(ready_cond, it, it->fs + it->hint_pos,
                            it->m.n - it->hint_pos, &it->deadline, w);
    if (rc != 0) {
      it->timed_out = rc == CF_ETIMEDOUT;
      return it->timed_out
                 ? CF__FAILF(rc, "%zu (of %zu) futures unfinished",
                             cf_as_completed_unfinished(it), it->m.n)
                 : CF__FAIL(rc, NULL);
    }
    drain_ready(it);
  }
  multi_node *node = it->queue;
  it->queue = node->ready_next;
  it->yielded++;
  *out = it->fs[node->index];
  return 0;
}

size_t cf_as_completed_unfinished(const cf_as_completed *it) {
  size_t k = 0;
  if (it)
    for (size_t i = 0; i < it->m.n; i++)
      k += !cf_future_done(it->fs[i]);
  return k;
}

void cf_as_completed_free(cf_as_completed *it) {
  if (!it)
    return;
  multi_finish(&it->m);
  for (size_t i = 0; i < it->m.n; i++)
    cf_future_unref(it->fs[i]);
  free(it->fs);
  free(it);
}
