/* cf_shm_queue: a process-shared queue of byte messages in MAP_SHARED
 * memory. FIFO queues stream messages through a byte ring; LIFO and
 * priority queues keep an index heap in the shared memory and each
 * message's bytes in a POSIX shared-memory object of its own (the
 * "store"), since they are taken out of order.
 *
 * FIFO:
 * The ring carries a stream of [8-byte length][payload] records. Writers
 * take `wlock` for a whole message and readers `rlock`, so pieces of two
 * messages never interleave, and a message larger than the ring streams
 * through it while a reader drains it. Ring positions are byte counts that
 * only grow (wpos, rpos); the state is guarded by `mu`.
 *
 * A writer that times out mid-message (readers stalled) withdraws it: it
 * records where the partial record ends (abort_at) and readers discard it.
 * A writer that dies mid-message is detected by the next writer through
 * the robust wlock and withdrawn the same way. A reader that times out or
 * dies mid-message leaves `skip` bytes for the next reader to drop.
 *
 * Store (LIFO, priority): a put reserves a slot under mu, writes the
 * message into "/cf-q<pid>-<nonce>-<id>" outside the lock, then pushes the
 * index entry; a get pops the entry under mu, then copies and unlinks the
 * object outside it.
 *
 * Lock order: wlock or rlock, then mu.
 */
#include <cfutures/queue.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/time.h"
#include "sync/monitor.h"
#include "core/report.h"

#define HDR         sizeof(uint64_t)
#define STORE_SLOTS 65536 /* LIFO/priority capacity when unbounded */

typedef struct entry {
  int64_t prio; /* priority queues; LIFO uses -seq */
  uint64_t seq;
  uint64_t len;
  uint64_t id; /* names the shared-memory object holding the bytes */
} entry;

struct cf_shm_queue {
  cf_queue_kind kind;
  pid_t creator;
  uint64_t nonce;
  size_t slots;            /* store: entries in the heap area */
  uint64_t next_id, nheap; /* store, guarded by mu */
  pthread_mutex_t mu;
  pthread_cond_t data, space, all_done;
  pthread_mutex_t wlock, rlock;
  size_t cap;
  size_t maxsize;
  /* guarded by mu: */
  uint64_t wpos, rpos;
  size_t count;      /* messages begun by writers, not yet taken */
  size_t unfinished; /* messages put, not yet marked done */
  bool aborted;      /* a withdrawn record ends at abort_at */
  uint64_t abort_at;
  uint64_t wmsg_end;                 /* where the record being written ends */
  uint64_t skip;                     /* bytes of a record a reader abandoned */
  _Alignas(16) unsigned char ring[]; /* FIFO: the ring; store: entry heap */
};

static size_t area_size(cf_queue_kind kind, size_t ring_bytes, size_t slots) {
  return kind == CF_QUEUE_FIFO ? ring_bytes : slots * sizeof(entry);
}

int cf_shm_queue_new(cf_queue_kind kind, size_t maxsize, size_t ring_bytes,
                     cf_shm_queue **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  if (kind != CF_QUEUE_FIFO && kind != CF_QUEUE_LIFO &&
      kind != CF_QUEUE_PRIORITY)
    return CF__FAILF(CF_EINVAL, "unknown queue kind %d", (int)kind);
  if (ring_bytes == 0)
    ring_bytes = 64 * 1024;
  if (ring_bytes < 64)
    return CF__FAIL(CF_EINVAL, "ring_bytes below 64");
  size_t slots = maxsize ? maxsize : STORE_SLOTS;
  if (kind != CF_QUEUE_FIFO && slots > SIZE_MAX / sizeof(entry) / 2)
    return CF__FAIL(CF_EINVAL, "maxsize is too large");
  size_t area = area_size(kind, ring_bytes, slots);
  cf_shm_queue *q = cf__sync_alloc(sizeof *q + area, true);
  if (!q)
    return CF__FAIL(CF_ENOMEM, "out of memory");
  if (cf__mutex_init(&q->mu, true, false) || cf__cond_init(&q->data, true) ||
      cf__cond_init(&q->space, true) || cf__cond_init(&q->all_done, true) ||
      cf__mutex_init(&q->wlock, true, false) ||
      cf__mutex_init(&q->rlock, true, false)) {
    cf__sync_free(q, sizeof *q + area);
    return CF__FAIL(CF_ESYS, "its process-shared mutexes could not be made");
  }
  q->kind = kind;
  q->creator = getpid();
  q->nonce = cf__now_ns();
  q->slots = slots;
  q->cap = ring_bytes;
  q->maxsize = maxsize;
  *out = q;
  return 0;
}

/* ---- the store: LIFO and priority ---------------------------------------- */

static void object_name(const cf_shm_queue *q, uint64_t id, char name[64]) {
  snprintf(name, 64, "/cf-q%d-%llx-%llu", (int)q->creator,
           (unsigned long long)q->nonce, (unsigned long long)id);
}

static entry *heap(cf_shm_queue *q) {
  return (entry *)(void *)q->ring;
}

static bool before(const entry *a, const entry *b) {
  return a->prio < b->prio || (a->prio == b->prio && a->seq < b->seq);
}

/* Holds mu. */
static void heap_push(cf_shm_queue *q, entry e) {
  entry *h = heap(q);
  size_t i = q->nheap++;
  while (i > 0 && before(&e, &h[(i - 1) / 2])) {
    h[i] = h[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h[i] = e;
}

/* Holds mu; nheap > 0. */
static entry heap_pop(cf_shm_queue *q) {
  entry *h = heap(q);
  entry top = h[0], last = h[--q->nheap];
  size_t n = q->nheap, i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n)
      break;
    if (c + 1 < n && before(&h[c + 1], &h[c]))
      c++;
    if (!before(&h[c], &last))
      break;
    h[i] = h[c];
    i = c;
  }
  if (n > 0)
    h[i] = last;
  return top;
}

/* Copies bytes into or out of the shared-memory object `name`. */
static int object_io(const char *name, void *buf, size_t len, bool create) {
  int fd = create ? shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600)
                  : shm_open(name, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0)
    return CF_ESYS;
  int rc = 0;
  if (create && ftruncate(fd, (off_t)len) != 0)
    rc = CF_ESYS;
  void *m = MAP_FAILED;
  if (rc == 0)
    m = mmap(NULL, len, create ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED,
             fd, 0);
  close(fd);
  if (rc == 0 && m == MAP_FAILED)
    rc = CF_ESYS;
  if (rc == 0) {
    if (create)
      memcpy(m, buf, len);
    else
      memcpy(buf, m, len);
    munmap(m, len);
  }
  if (rc != 0 && create)
    shm_unlink(name);
  return rc;
}

static int store_put(cf_shm_queue *q, const void *data, size_t len,
                     int64_t prio, const cf_deadline *d) {
  cf__mutex_lock(&q->mu, NULL);
  int rc = 0;
  /* Holds mu: wait for a free slot. */
  while (q->count >= q->slots && rc == 0)
    rc = cf__cond_wait(&q->space, &q->mu, d);
  if (q->count >= q->slots) {
    pthread_mutex_unlock(&q->mu);
    return CF_EFULL;
  }
  q->count++; /* reserve */
  entry e = {.prio = prio, .seq = q->next_id, .len = len, .id = q->next_id};
  q->next_id++;
  if (q->kind == CF_QUEUE_LIFO)
    e.prio = -(int64_t)e.seq;
  pthread_mutex_unlock(&q->mu);
  char name[64];
  object_name(q, e.id, name);
  rc = len ? object_io(name, (void *)data, len, true) : 0;
  cf__mutex_lock(&q->mu, NULL);
  if (rc == 0) {
    heap_push(q, e);
    q->unfinished++;
    pthread_cond_signal(&q->data);
  } else {
    q->count--;
    pthread_cond_signal(&q->space);
  }
  pthread_mutex_unlock(&q->mu);
  return rc;
}

static int store_get(cf_shm_queue *q, const cf_deadline *d, void **data,
                     size_t *len) {
  cf__mutex_lock(&q->mu, NULL);
  int rc = 0;
  /* Holds mu: wait for a message. */
  while (q->nheap == 0 && rc == 0)
    rc = cf__cond_wait(&q->data, &q->mu, d);
  if (q->nheap == 0) {
    pthread_mutex_unlock(&q->mu);
    return CF_EEMPTY;
  }
  entry e = heap_pop(q);
  pthread_mutex_unlock(&q->mu);
  void *buf = NULL;
  char name[64];
  object_name(q, e.id, name);
  rc = 0;
  if (e.len && !(buf = malloc((size_t)e.len)))
    rc = CF_ENOMEM;
  else if (e.len)
    rc = object_io(name, buf, (size_t)e.len, false);
  cf__mutex_lock(&q->mu, NULL);
  if (rc == CF_ENOMEM) {
    heap_push(q, e); /* stays queued */
  } else {
    q->count--;
    pthread_cond_signal(&q->space);
  }
  pthread_mutex_unlock(&q->mu);
  if (rc == CF_ENOMEM)
    return rc;
  if (e.len)
    shm_unlink(name);
  if (rc != 0) { /* the object vanished: nothing to deliver */
    free(buf);
    return CF_ESYS;
  }
  *data = buf;
  *len = (size_t)e.len;
  return 0;
}

/* Holds mu: copies between the ring at position pos and buf. */
static void ring_copy(cf_shm_queue *q, uint64_t pos, void *buf, size_t n,
                      bool to_ring) {
  size_t off = (size_t)(pos % q->cap);
  size_t first = n < q->cap - off ? n : q->cap - off;
  if (to_ring) {
    memcpy(q->ring + off, buf, first);
    memcpy(q->ring, (char *)buf + first, n - first);
  } else {
    memcpy(buf, q->ring + off, first);
    memcpy((char *)buf + first, q->ring, n - first);
  }
}

/* Holds mu: withdraws the record being written (from `start`). */
static void withdraw(cf_shm_queue *q, uint64_t start) {
  if (q->wpos > start) {
    q->aborted = true;
    q->abort_at = q->wpos;
  }
  if (q->count) /* a reader that timed out on this record counted it */
    q->count--;
  pthread_cond_broadcast(&q->data);
  pthread_cond_broadcast(&q->space);
}

static int ring_put(cf_shm_queue *q, const void *data, size_t len,
                    const cf_deadline *dl);

int cf_shm_queue_put(cf_shm_queue *q, const void *data, size_t len,
                     double timeout_s) {
  cf_deadline d;
  if (!q || (!data && len))
    return CF__FAIL(CF_EINVAL, q ? "NULL data with len > 0" : "NULL queue");
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  if (q->kind != CF_QUEUE_FIFO)
    return CF__RET(store_put(q, data, len, 0, &d));
  return CF__RET(ring_put(q, data, len, &d));
}

int cf_shm_queue_put_prio(cf_shm_queue *q, const void *data, size_t len,
                          int64_t priority, double timeout_s) {
  cf_deadline d;
  if (!q || (!data && len))
    return CF__FAIL(CF_EINVAL, q ? "NULL data with len > 0" : "NULL queue");
  if (q->kind != CF_QUEUE_PRIORITY)
    return CF__FAIL(CF_EINVAL, "not a priority queue");
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  return CF__RET(store_put(q, data, len, priority, &d));
}

static int ring_put(cf_shm_queue *q, const void *data, size_t len,
                    const cf_deadline *dl) {
  cf_deadline d = *dl;
  int rc = cf__mutex_lock(&q->wlock, &d);
  if (rc == CF_ETIMEDOUT)
    return CF_EFULL;
  cf__mutex_lock(&q->mu, NULL);
  if (rc == CF_EOWNERDEAD && q->wmsg_end > q->wpos) {
    /* The previous writer died mid-record: withdraw its record. */
    withdraw(q, q->wpos - 1);
  }
  rc = 0;
  /* Holds mu: wait for room for one more message, and for readers to get
   * past a withdrawn record. */
  while (((q->maxsize && q->count >= q->maxsize) || q->aborted) && rc == 0)
    rc = cf__cond_wait(&q->space, &q->mu, &d);
  if ((q->maxsize && q->count >= q->maxsize) || q->aborted) {
    pthread_mutex_unlock(&q->mu);
    pthread_mutex_unlock(&q->wlock);
    return CF_EFULL;
  }
  q->count++;
  uint64_t start = q->wpos;
  uint64_t hdr = len;
  q->wmsg_end = start + HDR + len;
  size_t done = 0; /* bytes of the record written */
  rc = 0;
  /* Holds mu (released while waiting): stream the record. */
  while (done < HDR + len) {
    uint64_t room = q->cap - (q->wpos - q->rpos);
    bool need_hdr = done < HDR;
    if (room == 0 || (need_hdr && room < HDR)) {
      if (cf__cond_wait(&q->space, &q->mu, &d) == CF_ETIMEDOUT) {
        withdraw(q, start);
        pthread_mutex_unlock(&q->mu);
        pthread_mutex_unlock(&q->wlock);
        return CF_EFULL;
      }
      continue;
    }
    if (need_hdr) {
      ring_copy(q, q->wpos, &hdr, HDR, true);
      q->wpos += HDR;
      done += HDR;
    } else {
      size_t n = (size_t)(HDR + len - done < room ? HDR + len - done : room);
      ring_copy(q, q->wpos, (char *)data + (done - HDR), n, true);
      q->wpos += n;
      done += n;
    }
    pthread_cond_broadcast(&q->data);
  }
  q->unfinished++;
  pthread_mutex_unlock(&q->mu);
  pthread_mutex_unlock(&q->wlock);
  return 0;
}

/* Holds mu: drops bytes left by an abandoned or withdrawn record. */
static void drop_leftovers(cf_shm_queue *q) {
  uint64_t avail = q->wpos - q->rpos;
  uint64_t n = q->skip < avail ? q->skip : avail;
  q->rpos += n;
  q->skip -= n;
  if (n)
    pthread_cond_broadcast(&q->space);
}

/* Holds mu: drops leftovers of abandoned or withdrawn records and waits
 * for a whole header. Returns 0, or CF_ETIMEDOUT. */
static int wait_header(cf_shm_queue *q, const cf_deadline *d) {
  for (;;) {
    drop_leftovers(q);
    if (q->aborted && q->rpos == q->abort_at) {
      q->aborted = false; /* the withdrawn record is behind us */
      q->skip = 0;
      pthread_cond_broadcast(&q->space);
      continue;
    }
    if (q->skip == 0 && q->wpos - q->rpos >= HDR)
      return 0;
    if (cf__cond_wait(&q->data, &q->mu, d) == CF_ETIMEDOUT)
      return CF_ETIMEDOUT;
  }
}

/* Holds mu (released while waiting): reads a record's payload of `len`
 * bytes into buf. Returns 0, CF_ECANCELLED (the writer withdrew it) or
 * CF_ETIMEDOUT (q->skip then says what the next reader must drop). */
static int read_payload(cf_shm_queue *q, unsigned char *buf, uint64_t len,
                        const cf_deadline *d) {
  uint64_t got = 0;
  q->skip = len; /* what a reader dying now would leave */
  while (got < len) {
    if (q->aborted && q->rpos == q->abort_at) {
      q->aborted = false;
      q->skip = 0;
      pthread_cond_broadcast(&q->space);
      return CF_ECANCELLED;
    }
    uint64_t avail = q->wpos - q->rpos;
    if (avail == 0) {
      if (cf__cond_wait(&q->data, &q->mu, d) == CF_ETIMEDOUT)
        return CF_ETIMEDOUT;
      continue;
    }
    uint64_t n = len - got < avail ? len - got : avail;
    if (q->aborted && q->rpos + n > q->abort_at)
      n = q->abort_at - q->rpos;
    ring_copy(q, q->rpos, buf + got, (size_t)n, false);
    q->rpos += n;
    got += n;
    q->skip = len - got;
    pthread_cond_broadcast(&q->space);
  }
  return 0;
}

int cf_shm_queue_get(cf_shm_queue *q, double timeout_s, void **data,
                     size_t *len) {
  cf_deadline d;
  if (!q || !data || !len)
    return CF__FAIL(CF_EINVAL, q ? "NULL data or len" : "NULL queue");
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  *data = NULL;
  *len = 0;
  if (q->kind != CF_QUEUE_FIFO)
    return CF__RET(store_get(q, &d, data, len));
  int rc = cf__mutex_lock(&q->rlock, &d);
  if (rc == CF_ETIMEDOUT)
    return CF__FAIL(CF_EEMPTY, "no item came in time");
  cf__mutex_lock(&q->mu, NULL);
  if (rc == CF_EOWNERDEAD && q->skip > 0)
    q->count--; /* a reader died mid-record: that message is gone */
  unsigned char *buf = NULL;
  uint64_t hdr = 0;
  for (;;) {
    rc = wait_header(q, &d);
    if (rc != 0)
      break;
    ring_copy(q, q->rpos, &hdr, HDR, false);
    if (hdr > 0 && !(buf = malloc((size_t)hdr))) {
      rc = CF_ENOMEM; /* the message stays queued */
      break;
    }
    q->rpos += HDR;
    rc = read_payload(q, buf, hdr, &d);
    if (rc == CF_ECANCELLED) { /* withdrawn: on to the next one */
      free(buf);
      buf = NULL;
      continue;
    }
    if (rc == 0 || rc == CF_ETIMEDOUT) {
      q->count--; /* taken, or (timed out) dropped */
      pthread_cond_broadcast(&q->space);
    }
    break;
  }
  pthread_mutex_unlock(&q->mu);
  pthread_mutex_unlock(&q->rlock);
  if (rc != 0) {
    free(buf);
    return rc == CF_ENOMEM ? CF__FAIL(CF_ENOMEM, "no memory for the item")
                           : CF__FAIL(CF_EEMPTY, "no item came in time");
  }
  *data = buf;
  *len = (size_t)hdr;
  return 0;
}

size_t cf_shm_queue_qsize(cf_shm_queue *q) {
  if (!q)
    return 0;
  cf__mutex_lock(&q->mu, NULL);
  size_t n = q->count;
  pthread_mutex_unlock(&q->mu);
  return n;
}

bool cf_shm_queue_empty(cf_shm_queue *q) {
  return cf_shm_queue_qsize(q) == 0;
}

bool cf_shm_queue_full(cf_shm_queue *q) {
  if (!q)
    return false;
  size_t limit = q->kind == CF_QUEUE_FIFO ? q->maxsize : q->slots;
  return limit && cf_shm_queue_qsize(q) >= limit;
}

int cf_shm_queue_task_done(cf_shm_queue *q) {
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

int cf_shm_queue_join(cf_shm_queue *q, double timeout_s) {
  cf_deadline d;
  if (!q)
    return CF__FAIL(CF_EINVAL, "NULL queue");
  if (cf__deadline_from_timeout(timeout_s, &d))
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  int rc = 0;
  cf__mutex_lock(&q->mu, NULL);
  /* Holds mu: wait for every message to be done. */
  while (q->unfinished > 0 && rc == 0)
    rc = cf__cond_wait(&q->all_done, &q->mu, &d);
  rc = q->unfinished == 0 ? 0 : CF_ETIMEDOUT;
  pthread_mutex_unlock(&q->mu);
  return CF__RET(rc);
}

void cf_shm_queue_free(cf_shm_queue *q) {
  if (!q)
    return;
  size_t size = sizeof *q + area_size(q->kind, q->cap, q->slots);
  if (cf__sync_is_creator(q)) {
    /* Messages left in the store: remove their objects. */
    while (q->kind != CF_QUEUE_FIFO && q->nheap > 0) {
      entry e = heap_pop(q);
      char name[64];
      object_name(q, e.id, name);
      if (e.len)
        shm_unlink(name);
    }
    pthread_cond_destroy(&q->data);
    pthread_cond_destroy(&q->space);
    pthread_cond_destroy(&q->all_done);
    pthread_mutex_destroy(&q->mu);
    pthread_mutex_destroy(&q->wlock);
    pthread_mutex_destroy(&q->rlock);
  }
  cf__sync_free(q, size);
}
