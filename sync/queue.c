/* cf_queue: FIFO, LIFO and priority queues of pointers for threads, with
 * Python's task_done/join. One mutex, three condition variables. */
#include <cfutures/queue.h>
#include <stdlib.h>

#include "sync/monitor.h"
#include "core/report.h"

struct cf_queue {
  pthread_mutex_t mu;
  pthread_cond_t not_empty, not_full, all_done;
  cf_queue_kind kind;
  cf_compare_fn cmp;
  size_t maxsize;
  void **items; /* ring (FIFO/LIFO) or heap (priority); guarded by mu */
  size_t cap, head, count;
  size_t unfinished; /* put minus task_done; guarded by mu */
};

int cf_queue_new(cf_queue_kind kind, size_t maxsize, cf_compare_fn cmp,
                 cf_queue **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  if (kind != CF_QUEUE_FIFO && kind != CF_QUEUE_LIFO &&
      kind != CF_QUEUE_PRIORITY)
    return CF__FAILF(CF_EINVAL, "unknown queue kind %d", (int)kind);
  if (kind == CF_QUEUE_PRIORITY && !cmp)
    return CF__FAIL(CF_EINVAL, "a priority queue needs a compare function");
  cf_queue *q = calloc(1, sizeof *q);
  if (!q)
    return CF__FAIL(CF_ENOMEM, "out of memory");
  q->kind = kind;
  q->cmp = cmp;
  q->maxsize = maxsize;
  if (cf__mutex_init(&q->mu, false, false) ||
      cf__cond_init(&q->not_empty, false) ||
      cf__cond_init(&q->not_full, false) ||
      cf__cond_init(&q->all_done, false)) {
    free(q); /* pthread objects need no destroy on Linux when unused */
    return CF__FAIL(CF_ESYS, "its mutex or conditions could not be made");
  }
  *out = q;
  return 0;
}

static void **slot(cf_queue *q, size_t i) {
  return &q->items[(q->head + i) % q->cap];
}

static int grow(cf_queue *q) {
  size_t cap = q->cap ? q->cap * 2 : 16;
  void **items = malloc(cap * sizeof *items);
  if (!items)
    return CF_ENOMEM;
  for (size_t i = 0; i < q->count; i++)
    items[i] = *slot(q, i);
  free(q->items);
  q->items = items;
  q->cap = cap;
  q->head = 0;
  return 0;
}

/* Holds mu. The heap lives in items[0..count) with head == 0. */
static void heap_push(cf_queue *q, void *item) {
  size_t i = q->count;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (q->cmp(q->items[parent], item) <= 0)
      break;
    q->items[i] = q->items[parent];
    i = parent;
  }
  q->items[i] = item;
}

static void *heap_pop(cf_queue *q) {
  void *top = q->items[0];
  void *last = q->items[q->count - 1];
  size_t n = q->count - 1, i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n)
      break;
    if (c + 1 < n && q->cmp(q->items[c + 1], q->items[c]) < 0)
      c++;
    if (q->cmp(last, q->items[c]) <= 0)
      break;
    q->items[i] = q->items[c];
    i = c;
  }
  if (n > 0)
    q->items[i] = last;
  return top;
}

static bool is_full(cf_queue *q) {
  return q->maxsize && q->count >= q->maxsize;
}

int cf_queue_put(cf_queue *q, void *item, double timeout_s) {
  cf_deadline d;
  if (!q)
    return CF__FAIL(CF_EINVAL, "NULL queue");
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  cf__mutex_lock(&q->mu, NULL);
  int rc = 0;
  /* Holds mu: wait for room. */
  while (is_full(q) && rc == 0)
    rc = cf__cond_wait(&q->not_full, &q->mu, &d);
  if (is_full(q)) {
    rc = CF_EFULL;
  } else if (q->count == q->cap && grow(q) != 0) {
    rc = CF_ENOMEM;
  } else {
    if (q->kind == CF_QUEUE_PRIORITY)
      heap_push(q, item);
    else
      *slot(q, q->count) = item;
    q->count++;
    q->unfinished++;
    rc = 0;
    pthread_cond_signal(&q->not_empty);
  }
  pthread_mutex_unlock(&q->mu);
  return CF__RET(rc);
}

int cf_queue_get(cf_queue *q, double timeout_s, void **out) {
  cf_deadline d;
  if (!q || !out)
    return CF__FAIL(CF_EINVAL, q ? "NULL out" : "NULL queue");
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  *out = NULL;
  cf__mutex_lock(&q->mu, NULL);
  int rc = 0;
  /* Holds mu: wait for an item. */
  while (q->count == 0 && rc == 0)
    rc = cf__cond_wait(&q->not_empty, &q->mu, &d);
  if (q->count == 0) {
    rc = CF_EEMPTY;
  } else {
    if (q->kind == CF_QUEUE_PRIORITY) {
      *out = heap_pop(q);
    } else if (q->kind == CF_QUEUE_LIFO) {
      *out = *slot(q, q->count - 1);
    } else {
      *out = q->items[q->head];
      q->head = (q->head + 1) % q->cap;
    }
    q->count--;
    rc = 0;
    pthread_cond_signal(&q->not_full);
  }
  pthread_mutex_unlock(&q->mu);
  return CF__RET(rc);
}

int cf_queue_put_nowait(cf_queue *q, void *item) {
  int rc = cf_queue_put(q, item, 0);
  return rc ? cf__fail_retag(__func__, rc) : 0;
}

int cf_queue_get_nowait(cf_queue *q, void **out) {
  int rc = cf_queue_get(q, 0, out);
  return rc ? cf__fail_retag(__func__, rc) : 0;
}

size_t cf_queue_qsize(cf_queue *q) {
  if (!q)
    return 0;
  cf__mutex_lock(&q->mu, NULL);
  size_t n = q->count;
  pthread_mutex_unlock(&q->mu);
  return n;
}

bool cf_queue_empty(cf_queue *q) {
  return cf_queue_qsize(q) == 0;
}

bool cf_queue_full(cf_queue *q) {
  if (!q)
    return false;
  cf__mutex_lock(&q->mu, NULL);
  bool full = is_full(q);
  pthread_mutex_unlock(&q->mu);
  return full;
}

int cf_queue_task_done(cf_queue *q) {
  if (!q)
    return CF__FAIL(CF_EINVAL, "NULL queue");
  int rc = 0;
  cf__mutex_lock(&q->mu, NULL);
  if (q->unfinished == 0)
    rc = CF_EINVALSTATE;
  else if (--q->unfinished == 0)
    pthread_cond_broadcast(&q->all_done);
  pthread_mutex_unlock(&q->mu);
  return CF__RET(rc);
}

int cf_queue_join(cf_queue *q, double timeout_s) {
  cf_deadline d;
  if (!q)
    return CF__FAIL(CF_EINVAL, "NULL queue");
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  int rc = 0;
  cf__mutex_lock(&q->mu, NULL);
  /* Holds mu: wait for every item to be done. */
  while (q->unfinished > 0 && rc == 0)
    rc = cf__cond_wait(&q->all_done, &q->mu, &d);
  rc = q->unfinished == 0 ? 0 : CF_ETIMEDOUT;
  pthread_mutex_unlock(&q->mu);
  return CF__RET(rc);
}

void cf_queue_free(cf_queue *q) {
  if (!q)
    return;
  pthread_cond_destroy(&q->not_empty);
  pthread_cond_destroy(&q->not_full);
  pthread_cond_destroy(&q->all_done);
  pthread_mutex_destroy(&q->mu);
  free(q->items);
  free(q);
}
