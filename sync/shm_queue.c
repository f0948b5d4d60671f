/* cf_shm_queue: a process-shared FIFO of byte messages through a byte ring
 * in MAP_SHARED memory.
 *
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
 * Lock order: wlock or rlock, then mu.
 */
#include <cfutures/queue.h>
#include <stdlib.h>
#include <string.h>

#include "sync/monitor.h"

#define HDR sizeof(uint64_t)

struct cf_shm_queue {
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
  uint64_t wmsg_end; /* where the record being written ends */
  uint64_t skip;     /* bytes of a record a reader abandoned */
  unsigned char ring[];
};

int cf_shm_queue_new(size_t maxsize, size_t ring_bytes, cf_shm_queue **out) {
  if (!out)
    return CF_EINVAL;
  *out = NULL;
  if (ring_bytes == 0)
    ring_bytes = 64 * 1024;
  if (ring_bytes < 64)
    return CF_EINVAL;
  cf_shm_queue *q = cf__sync_alloc(sizeof *q + ring_bytes, true);
  if (!q)
    return CF_ENOMEM;
  if (cf__mutex_init(&q->mu, true, false) || cf__cond_init(&q->data, true) ||
      cf__cond_init(&q->space, true) || cf__cond_init(&q->all_done, true) ||
      cf__mutex_init(&q->wlock, true, false) ||
      cf__mutex_init(&q->rlock, true, false)) {
    cf__sync_free(q, sizeof *q + ring_bytes);
    return CF_ESYS;
  }
  q->cap = ring_bytes;
  q->maxsize = maxsize;
  *out = q;
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

int cf_shm_queue_put(cf_shm_queue *q, const void *data, size_t len,
                     double timeout_s) {
  cf_deadline d;
  if (!q || (!data && len) || cf__deadline_from_timeout(timeout_s, &d))
    return CF_EINVAL;
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
  if (!q || !data || !len || cf__deadline_from_timeout(timeout_s, &d))
    return CF_EINVAL;
  *data = NULL;
  *len = 0;
  int rc = cf__mutex_lock(&q->rlock, &d);
  if (rc == CF_ETIMEDOUT)
    return CF_EEMPTY;
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
    return rc == CF_ENOMEM ? CF_ENOMEM : CF_EEMPTY;
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

int cf_shm_queue_task_done(cf_shm_queue *q) {
  if (!q)
    return CF_EINVAL;
  int rc = 0;
  cf__mutex_lock(&q->mu, NULL);
  if (q->unfinished == 0)
    rc = CF_EINVALSTATE;
  else if (--q->unfinished == 0)
    pthread_cond_broadcast(&q->all_done);
  pthread_mutex_unlock(&q->mu);
  return rc;
}

int cf_shm_queue_join(cf_shm_queue *q, double timeout_s) {
  cf_deadline d;
  if (!q || cf__deadline_from_timeout(timeout_s, &d))
    return CF_EINVAL;
  int rc = 0;
  cf__mutex_lock(&q->mu, NULL);
  /* Holds mu: wait for every message to be done. */
  while (q->unfinished > 0 && rc == 0)
    rc = cf__cond_wait(&q->all_done, &q->mu, &d);
  rc = q->unfinished == 0 ? 0 : CF_ETIMEDOUT;
  pthread_mutex_unlock(&q->mu);
  return rc;
}

void cf_shm_queue_free(cf_shm_queue *q) {
  if (!q)
    return;
  size_t size = sizeof *q + q->cap;
  if (cf__sync_is_creator(q)) {
    pthread_cond_destroy(&q->data);
    pthread_cond_destroy(&q->space);
    pthread_cond_destroy(&q->all_done);
    pthread_mutex_destroy(&q->mu);
    pthread_mutex_destroy(&q->wlock);
    pthread_mutex_destroy(&q->rlock);
  }
  cf__sync_free(q, size);
}
