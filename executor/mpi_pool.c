/* The MPI executor's main-rank side: the pool, its submissions and its
 * progress thread. The wire format is in mpi_internal.h, the workers in
 * mpi_serve.c.
 *
 * Threads: submitters (any thread) build each task's message at submit
 * time, the input copied once into it, and queue it under `mu`. One
 * progress thread owns everything MPI: it hands queued tasks to workers
 * (MPI_Isend, a batch of small records per message, a large one alone
 * straight from its buffer), probes for results (MPI_Improbe, then
 * MPI_Mrecv; a large result's data with an MPI_Irecv into the buffer that
 * becomes the future's), completes futures (so done-callbacks run on it),
 * and at the end of a spawned pool tells the workers to exit and
 * disconnects. MPI is initialised with MPI_THREAD_SERIALIZED: while the
 * thread lives, no other thread of ours calls MPI (the pool is made, and
 * the job ended, before and after it).
 *
 * Caller-driven pools (cf_mpi_pool_opts.caller_progress) have no such
 * thread: the same engine (progress_step) runs in cf_mpi_pool_progress
 * and in a waiting shutdown, on the calling thread, under drive_mu, which
 * then owns what the thread would.
 *
 * Waiting: with nothing in flight the thread sleeps on `cv` until a submit
 * or shutdown; with tasks in flight it polls MPI, backing off from
 * spinning to sched_yield to timed waits on `cv` of 20 µs growing to 1 ms
 * (a submit still wakes it at once). MPI offers no descriptor to poll.
 *
 * Dispatch: an idle worker gets one task; when more tasks are queued than
 * there are workers, each worker is topped up to its share of the queue,
 * at most AHEAD tasks in flight (a chunk counts as one), so that tiny
 * tasks go in batches while a lone task never waits behind another.
 *
 * Locks: `mu` guards the queue, the flags and `sleeping`; `join_mu` the
 * join; the workers table, the send and receive lists belong to the
 * progress thread. Never held together; the world lock (mpi_serve.c) is
 * taken before neither. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cfutures/mpi_pool.h>

#include "core/fnref.h"
#include "core/report.h"
#include "executor/executor_internal.h"
#include "executor/mpi_internal.h"
#include "futures/future_internal.h"

#define MAX_MPI_WORKERS 4096
#define AHEAD           32          /* tasks in flight per worker, at most */
#define AHEAD_NS        200000      /* ... or about this much work */
#define BIG_RECORD      (64 * 1024) /* sent alone, from its own buffer */
#define BATCH_MAX       (1u << 20)  /* bytes of small records per message */
#define SPARES_MAX      8           /* per worker: spares lent at once */

typedef struct mtask {
  struct mtask *next;
  uint64_t id;
  uint32_t kind;
  cf_future *f; /* its future (a chunk's: one for all its items) */
  /* A chunk: its items' outcomes, handed to f with the result (see
   * executor_internal.h, cf__chunk); NULL once handed. */
  cf__chunk *acc;
  size_t count;
  cf_destroy_fn destroy; /* value results */
  char *msg;             /* its record, until sent */
  size_t msg_len;
  uint64_t sent_ns;   /* when it went to its worker */
  size_t in_len;      /* byte tasks: the input's length */
  uint64_t shm_bytes; /* in flight: its bytes in shared memory */
  /* Same host (mpi_shm.c): the memfd holding the input, and the one lent
   * to the worker for the result; each given back with the task (the
   * spare: unless the result went into it, then the future's). */
  cf__mpi_shm *in_shm;
  cf__mpi_shm *spare;
} mtask;

typedef struct mworker {
  int rank;                          /* in the pool's communicator */
  pid_t pid;                         /* spawned on this host: watched; else 0 */
  char host[MPI_MAX_PROCESSOR_NAME]; /* spawned: where it runs */
  mtask *head, *tail;                /* in flight, oldest first */
  size_t inflight;
  uint64_t last_ns;  /* its last result's arrival */
  uint64_t avg_ns;   /* its tasks' running time, smoothed; 0: unknown */
  bool shm;          /* same host, and it mapped the probe: the fast path */
  size_t big_result; /* its last byte result's length if large, else 0 */
  size_t spares;     /* tasks in flight to it with a spare */
} mworker;

typedef struct send_slot {
  MPI_Request req;
  void *buf; /* freed once sent */
} send_slot;

typedef struct data_recv {
  MPI_Request req;
  mtask *t;
  int code;
  char *buf;
  size_t len;
} data_recv;

typedef struct mpool {
  cf_executor base;
  size_t n;
  MPI_Comm comm;
  bool spawned;          /* comm is the spawn's intercommunicator */
  bool shm_any;          /* a worker takes the fast path (set before the
                            progress thread starts; read-only after) */
  bool broken;           /* guarded by mu: a watched worker died */
  uint64_t next_watch;   /* progress thread: when to look at the workers */
  int rank_offset;       /* worker i is rank i + rank_offset in comm */
  mworker *workers;      /* progress thread */
  size_t inflight;       /* progress thread: tasks sent, not answered */
  uint64_t shm_inflight; /* progress thread: their bytes in shared memory */
  send_slot *sends;      /* progress thread */
  size_t nsends, cap_sends;
  data_recv *recvs; /* progress thread */
  size_t nrecvs, cap_recvs;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  mtask *head, *tail; /* queued; guarded by mu */
  size_t npending;    /* guarded by mu */
  bool shutdown;      /* guarded by mu */
  bool sleeping;      /* guarded by mu: the progress thread waits on cv */
  bool have_thread;   /* guarded by mu */
  pthread_t thread;   /* guarded by mu (set before have_thread) */
  bool joined;        /* guarded by join_mu */
  pthread_mutex_t join_mu;
  /* Caller-driven (cf_mpi_pool_opts.caller_progress): no progress thread;
   * its work runs in cf_mpi_pool_progress and in a waiting shutdown, on
   * the calling thread, one caller at a time (drive_mu), which then owns
   * what the thread would. */
  bool caller;
  pthread_mutex_t drive_mu;
  bool released; /* drive_mu: release_workers has run */
} mpool;

static const struct cf_executor_vt mp_vt;

/* The pool whose progress this thread is driving (caller-driven pools):
 * a done-callback run by that progress must not drive it again. */
static _Thread_local mpool *driving;

static _Atomic uint64_t next_id; /* relaxed: unique ids, publishes nothing */

/* Message buffers. Large payloads pay more for fresh memory than for
 * copying it: every page of a new buffer faults (measured in this VM: a
 * fresh 64 MiB buffer costs 200-370 ms of page faults, copying into a warm
 * one 4.5 ms). So buffers from 1 MiB to 256 MiB, once freed (records
 * sent, results dropped), are kept for reuse, up to CACHE_SLOTS of them
 * per process, under cache.mu; a buffer is reused for a size between half
 * its capacity and its capacity. Every buffer of this file that holds a
 * record or a result comes from buf_alloc and goes to buf_free. */
#define CACHE_MIN   ((size_t)1 << 20)
#define CACHE_MAX   ((size_t)256 << 20)
#define CACHE_SLOTS 4

typedef struct buf_head {
  size_t cap;
  size_t pad; /* keeps the data 16-byte aligned */
} buf_head;

static struct {
  pthread_mutex_t mu;
  buf_head *slot[CACHE_SLOTS]; /* guarded by mu */
} cache = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void *buf_alloc(size_t len) {
  if (len >= CACHE_MIN && len <= CACHE_MAX) {
    buf_head *best = NULL;
    size_t at = 0;
    pthread_mutex_lock(&cache.mu);
    for (size_t i = 0; i < CACHE_SLOTS; i++) {
      buf_head *h = cache.slot[i];
      if (h && h->cap >= len && h->cap / 2 <= len &&
          (!best || h->cap < best->cap))
        best = h, at = i;
    }
    if (best)
      cache.slot[at] = NULL;
    pthread_mutex_unlock(&cache.mu);
    if (best)
      return best + 1;
  }
  if (len > SIZE_MAX - sizeof(buf_head))
    return NULL;
  buf_head *h = malloc(sizeof *h + len);
  if (!h)
    return NULL;
  h->cap = len;
  return h + 1;
}

static void buf_free(void *p) {
  if (!p)
    return;
  buf_head *h = (buf_head *)p - 1;
  if (h->cap >= CACHE_MIN && h->cap <= CACHE_MAX) {
    /* keep it: in a free slot, or in place of a smaller one */
    pthread_mutex_lock(&cache.mu);
    size_t at = CACHE_SLOTS;
    for (size_t i = 0; i < CACHE_SLOTS && at == CACHE_SLOTS; i++)
      if (!cache.slot[i])
        at = i;
    if (at == CACHE_SLOTS) {
      size_t small = 0;
      for (size_t i = 1; i < CACHE_SLOTS; i++)
        if (cache.slot[i]->cap < cache.slot[small]->cap)
          small = i;
      if (cache.slot[small]->cap < h->cap)
        at = small;
    }
    buf_head *out = h;
    if (at < CACHE_SLOTS) {
      out = cache.slot[at]; /* NULL, or the smaller one it replaces */
      cache.slot[at] = h;
    }
    pthread_mutex_unlock(&cache.mu);
    free(out);
    return;
  }
  free(h);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Tasks a worker may hold: enough to keep it busy for AHEAD_NS by its
 * tasks' running time so far, at least 2 (one running, one ready: it never
 * waits for the main rank between two tasks), at most AHEAD. Long tasks
 * stay on the main rank's queue, where they can still be cancelled or
 * go to a worker that frees up first. */
static size_t depth_of(const mworker *w) {
  if (w->avg_ns == 0)
    return 2;
  uint64_t d = AHEAD_NS / w->avg_ns;
  return d < 2 ? 2 : d > AHEAD ? AHEAD : (size_t)d;
}

/* A result from w for task t arrived at `now`: the running-time estimate. */
static void account(mworker *w, const mtask *t, uint64_t now) {
  uint64_t from = t->sent_ns > w->last_ns ? t->sent_ns : w->last_ns;
  uint64_t took = now > from ? now - from : 1;
  w->avg_ns = w->avg_ns ? (w->avg_ns * 3 + took) / 4 : took;
  if (w->avg_ns == 0)
    w->avg_ns = 1;
  w->last_ns = now;
}

/* ---- results --------------------------------------------------------------
 */

/* A byte result: data points into `base` (a received message) or is
 * `base` itself; the future frees base. */
typedef struct result_buf {
  cf_buf b;
  void *base;
  cf__mpi_shm *shm; /* or: data is in this memfd, lent back when freed */
} result_buf;

static void result_buf_free(void *v) {
  result_buf *r = v;
  if (r) {
    buf_free(r->base);
    cf__mpi_shm_give(r->shm);
    free(r);
  }
}

static void task_free(mtask *t) {
  cf_future_unref(t->f);
  cf__chunk_free(t->acc); /* never handed to its future */
  buf_free(t->msg);
  cf__mpi_shm_give(t->in_shm);
  cf__mpi_shm_give(t->spare);
  free(t);
}

static void fail_one(cf_future *f, int code, const char *msg) {
  char *m = msg ? strdup(msg) : NULL;
  if (cf__future_complete(f, code, NULL, NULL, m) != 0)
    free(m);
}

/* Fails t's future (a chunk's: each of its items fails so, in the map). */
static void fail_task(mtask *t, int code, const char *msg) {
  fail_one(t->f, code, msg);
  task_free(t);
}

/* Completes a byte future with data[0..len) inside base (taken). */
static void complete_bytes(cf_future *f, void *base, char *data, size_t len) {
  result_buf *b = malloc(sizeof *b);
  if (!b) {
    buf_free(base);
    cf__future_complete(f, CF_ENOMEM, NULL, NULL, NULL);
    return;
  }
  b->b.data = len ? data : NULL;
  b->b.len = len;
  b->base = base;
  b->shm = NULL;
  if (cf__future_complete(f, 0, &b->b, result_buf_free, NULL) != 0)
    result_buf_free(b);
}

/* Completes t with the len bytes its worker wrote into its spare, which
 * becomes the future's: the cf_buf points into it (no copy). */
static void complete_shm(mtask *t, size_t len) {
  result_buf *b = malloc(sizeof *b);
  if (!b) {
    fail_task(t, CF_ENOMEM, "no memory for a result");
    return;
  }
  b->b.data = len ? cf__mpi_shm_data(t->spare) : NULL;
  b->b.len = len;
  b->base = NULL;
  b->shm = t->spare;
  t->spare = NULL;
  if (cf__future_complete(t->f, 0, &b->b, result_buf_free, NULL) != 0)
    result_buf_free(b);
  task_free(t);
}

/* A chunk's result: its table and data (laid out as a cf__chunk_seg's
 * buffer) become the chunk's one segment, and its future's result. */
static void complete_chunk(mtask *t, void *base, const char *data, size_t len) {
  char *copy = len >= t->count * sizeof(cf__item_result) ? malloc(len) : NULL;
  if (!copy) {
    buf_free(base);
    fail_task(t,
              len < t->count * sizeof(cf__item_result) ? CF_EBROKEN : CF_ENOMEM,
              len < t->count * sizeof(cf__item_result)
                  ? "the worker's chunk result was cut short"
                  : "no memory for a chunk's results");
    return;
  }
  memcpy(copy, data, len);
  buf_free(base);
  cf__chunk_seg seg = {.first = 0,
                       .count = t->count,
                       .table_n = t->count,
                       .buf = copy,
                       .len = len};
  if (cf__chunk_add(t->acc, &seg) != 0) {
    free(copy);
    fail_task(t, CF_ENOMEM, "no memory for a chunk's results");
    return;
  }
  if (cf__future_complete(t->f, 0, t->acc, cf__chunk_free, NULL) == 0)
    t->acc = NULL; /* the future's now */
  task_free(t);
}

/* Completes t from a result: code, payload data[0..len) inside base
 * (malloc'd; taken). */
static void complete_task(mtask *t, int code, void *base, char *data,
                          size_t len) {
  if (code != 0) {
    char *m = len ? strndup(data, len) : NULL;
    buf_free(base);
    if (cf__future_complete(t->f, code, NULL, NULL, m) != 0)
      free(m);
  } else if (t->acc) {
    complete_chunk(t, base, data, len);
    return;
  } else if (t->kind == CF__MPI_KIND_VALUE) {
    uint64_t v = 0;
    memcpy(&v, data, len < 8 ? len : 8);
    buf_free(base);
    void *out = (void *)(uintptr_t)v;
    if (cf__future_complete(t->f, 0, out, t->destroy, NULL) != 0 && t->destroy)
      t->destroy(out);
  } else {
    complete_bytes(t->f, base, data, len);
  }
  task_free(t);
}

/* ---- the progress thread --------------------------------------------------
 */

static bool grow(void **arr, size_t *cap, size_t need, size_t size) {
  if (need <= *cap)
    return true;
  size_t c = *cap ? 2 * *cap : 16;
  void *a = realloc(*arr, c * size);
  if (!a)
    return false;
  *arr = a;
  *cap = c;
  return true;
}

/* Sends buf[0..len) to worker w; buf is freed once sent. */
static void post_send(mpool *p, mworker *w, void *buf, size_t len) {
  if (!grow((void **)&p->sends, &p->cap_sends, p->nsends + 1,
            sizeof *p->sends)) {
    MPI_Send(buf, (int)len, MPI_BYTE, w->rank, CF__MPI_TAG_TASK, p->comm);
    buf_free(buf);
    return;
  }
  send_slot *s = &p->sends[p->nsends++];
  s->buf = buf;
  MPI_Isend(buf, (int)len, MPI_BYTE, w->rank, CF__MPI_TAG_TASK, p->comm,
            &s->req);
}

static bool sends_test(mpool *p) {
  bool did = false;
  size_t k = 0;
  for (size_t i = 0; i < p->nsends; i++) {
    int done = 0;
    MPI_Test(&p->sends[i].req, &done, MPI_STATUS_IGNORE);
    if (done) {
      buf_free(p->sends[i].buf);
      did = true;
    } else {
      p->sends[k++] = p->sends[i];
    }
  }
  p->nsends = k;
  return did;
}

/* Pops up to `max` queued tasks that are still wanted (PENDING -> RUNNING;
 * a chunk runs if any item is live); cancelled ones are freed. */
static mtask *take(mpool *p, size_t max, size_t *got) {
  mtask *list = NULL, **tailp = &list;
  *got = 0;
  while (*got < max) {
    pthread_mutex_lock(&p->mu);
    mtask *t = p->head;
    if (t) {
      p->head = t->next;
      if (!p->head)
        p->tail = NULL;
      p->npending--;
    }
    pthread_mutex_unlock(&p->mu);
    if (!t)
      break;
    t->next = NULL;
    if (cf__future_set_running(t->f) != 0) { /* cancelled while pending */
      task_free(t);
      continue;
    }
    *tailp = t;
    tailp = &t->next;
    (*got)++;
  }
  return list;
}

static int build_record(cf__mpi_task h, const char *path, const void *pre,
                        size_t pre_len, const void *data, size_t len,
                        char **msg, size_t *msg_len);

/* Makes byte task t's record fit worker w (see mpi_shm.c): to a worker
 * that cannot map the main rank's memory, an input in a memfd goes inline;
 * to one that can, a task whose result is expected to be large (its input
 * is, or the worker's last result was) gets a spare memfd for it, if one
 * can be had. Returns 0, or CF_ENOMEM / CF_ETOOBIG: t cannot be sent. */
static int fit_record(mworker *w, mtask *t) {
  if (t->kind != CF__MPI_KIND_BYTES && t->kind != CF__MPI_KIND_BYTES_SHM)
    return 0;
  cf__mpi_task h;
  memcpy(&h, t->msg, sizeof h);
  const char *path = t->msg + sizeof h;
  char *msg;
  size_t n;
  if (!w->shm) {
    if (!t->in_shm)
      return 0;
    h.kind = CF__MPI_KIND_BYTES;
    int rc = build_record(h, path, NULL, 0, cf__mpi_shm_data(t->in_shm),
                          t->in_len, &msg, &n);
    if (rc)
      return rc;
    buf_free(t->msg);
    t->msg = msg;
    t->msg_len = n;
    t->kind = CF__MPI_KIND_BYTES;
    cf__mpi_shm_give(t->in_shm);
    t->in_shm = NULL;
    return 0;
  }
  size_t want = t->in_len > w->big_result ? t->in_len : w->big_result;
  if (want < cf__mpi_shm_min() || w->spares >= SPARES_MAX)
    return 0;
  cf__mpi_shm *spare = cf__mpi_shm_take(want);
  if (!spare)
    return 0;                          /* the result comes through MPI */
  if (t->kind == CF__MPI_KIND_BYTES) { /* the input inline, after the refs */
    cf__mpi_shm_task st = {.in_len = t->in_len};
    h.kind = CF__MPI_KIND_BYTES_SHM;
    const char *in = t->msg + sizeof h + cf__mpi_pad8(h.path_len);
    if (build_record(h, path, &st, sizeof st, in, t->in_len, &msg, &n) != 0) {
      cf__mpi_shm_give(spare);
      return 0; /* sent as it is */
    }
    buf_free(t->msg);
    t->msg = msg;
    t->msg_len = n;
    t->kind = CF__MPI_KIND_BYTES_SHM;
  }
  char *payload = t->msg + sizeof h + cf__mpi_pad8(h.path_len);
  cf__mpi_shm_task st;
  memcpy(&st, payload, sizeof st);
  st.spare = cf__mpi_shm_ref_of(spare);
  memcpy(payload, &st, sizeof st);
  t->spare = spare;
  w->spares++;
  return 0;
}

/* Sends `list` (taken) to worker w: small records batched, large alone. */
static void send_tasks(mpool *p, mworker *w, mtask *list) {
  for (mtask **at = &list; *at;) {
    mtask *t = *at;
    int rc = fit_record(w, t);
    if (rc == 0) {
      at = &t->next;
      continue;
    }
    *at = t->next; /* it cannot go: it fails */
    fail_task(t, rc, "no memory for a task's message");
  }
  while (list) {
    size_t bytes = 0;
    mtask *end = list;
    /* a run of small records, or one large one */
    if (list->msg_len >= BIG_RECORD) {
      end = list->next;
      bytes = list->msg_len;
    } else {
      while (end && end->msg_len < BIG_RECORD &&
             bytes + end->msg_len <= BATCH_MAX) {
        bytes += end->msg_len;
        end = end->next;
      }
    }
    char *buf;
    if (list->next == end) {
      buf = list->msg; /* one record: its own buffer goes */
      list->msg = NULL;
    } else {
      buf = buf_alloc(bytes);
      if (!buf) { /* send them one by one */
        buf = list->msg;
        list->msg = NULL;
        bytes = list->msg_len;
        end = list->next;
      } else {
        size_t off = 0;
        for (mtask *t = list; t != end; t = t->next) {
          memcpy(buf + off, t->msg, t->msg_len);
          off += t->msg_len;
          buf_free(t->msg);
          t->msg = NULL;
        }
      }
    }
    uint64_t now = now_ns();
    for (mtask *t = list; t != end;) {
      mtask *next = t->next;
      t->next = NULL;
      t->sent_ns = now;
      t->shm_bytes = (t->in_shm ? t->in_len : 0) +
                     (t->spare ? cf__mpi_shm_ref_of(t->spare).cap : 0);
      p->shm_inflight += t->shm_bytes;
      if (w->tail)
        w->tail->next = t;
      else
        w->head = t;
      w->tail = t;
      w->inflight++;
      p->inflight++;
      t = next;
    }
    post_send(p, w, buf, bytes);
    list = end;
  }
}

static bool dispatch(mpool *p) {
  pthread_mutex_lock(&p->mu);
  size_t pend = p->npending;
  pthread_mutex_unlock(&p->mu);
  if (pend == 0)
    return false;
  bool did = false;
  size_t share = (pend + p->n - 1) / p->n;
  for (size_t i = 0; i < p->n && pend > 0; i++) {
    mworker *w = &p->workers[i];
    size_t depth = depth_of(w), want;
    if (w->inflight == 0)
      want = pend >= p->n ? share : 1;
    else if (pend >= p->n && w->inflight < depth)
      want = share; /* a backlog: send ahead */
    else
      continue;
    if (want > depth - w->inflight)
      want = depth - w->inflight;
    size_t got;
    mtask *list = take(p, want, &got);
    if (!list)
      continue;
    pend = pend > got ? pend - got : 0;
    send_tasks(p, w, list);
    did = true;
  }
  return did;
}

static mworker *worker_of(mpool *p, int source) {
  long i = (long)source - p->rank_offset;
  return i >= 0 && (size_t)i < p->n ? &p->workers[i] : NULL;
}

/* Fails every future of the job: a protocol error is a bug in cfutures
 * (only it writes these messages), and no result can be trusted after it. */
static _Noreturn void protocol_error(mpool *p, int source, const char *what) {
  fprintf(stderr, "cfutures: MPI pool: rank %d sent %s; aborting the MPI job\n",
          source, what);
  MPI_Abort(MPI_COMM_WORLD, 70);
  abort();
}

static bool receive_results(mpool *p) {
  bool did = false;
  for (int k = 0; k < 64; k++) {
    int flag = 0;
    MPI_Message m;
    MPI_Status st;
    MPI_Improbe(MPI_ANY_SOURCE, CF__MPI_TAG_RESULT, p->comm, &flag, &m, &st);
    if (!flag)
      break;
    did = true;
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    char *buf = buf_alloc(count > 0 ? (size_t)count : 1);
    if (!buf) {
      fprintf(stderr,
              "cfutures: MPI pool: no memory for a result of %d "
              "bytes; aborting the MPI job\n",
              count);
      MPI_Abort(MPI_COMM_WORLD, 71);
    }
    MPI_Mrecv(buf, count, MPI_BYTE, &m, MPI_STATUS_IGNORE);
    mworker *w = worker_of(p, st.MPI_SOURCE);
    cf__mpi_result h;
    if (!w || (size_t)count < sizeof h)
      protocol_error(p, st.MPI_SOURCE, "a result of no task");
    memcpy(&h, buf, sizeof h);
    mtask *t = w->head;
    if (h.magic != CF__MPI_MAGIC || !t || t->id != h.id)
      protocol_error(p, st.MPI_SOURCE, "a result out of order");
    w->head = t->next;
    if (!w->head)
      w->tail = NULL;
    w->inflight--;
    account(w, t, now_ns());
    p->inflight--;
    if (t->spare)
      w->spares--;
    p->shm_inflight -= t->shm_bytes;
    if (h.code == 0 &&
        (t->kind == CF__MPI_KIND_BYTES || t->kind == CF__MPI_KIND_BYTES_SHM))
      w->big_result = h.len >= cf__mpi_shm_min() ? h.len : 0;
    if (h.flags & CF__MPI_RES_SHM) {
      if (!t->spare || h.code != 0 ||
          h.len > cf__mpi_shm_ref_of(t->spare).cap || (size_t)count != sizeof h)
        protocol_error(p, st.MPI_SOURCE, "a result in no spare");
      buf_free(buf);
      complete_shm(t, h.len);
      continue;
    }
    if (h.flags & CF__MPI_RES_SEPARATE) {
      buf_free(buf);
      char *data = buf_alloc(h.len ? h.len : 1);
      if (!data || !grow((void **)&p->recvs, &p->cap_recvs, p->nrecvs + 1,
                         sizeof *p->recvs)) {
        fprintf(stderr,
                "cfutures: MPI pool: no memory for a result of "
                "%llu bytes; aborting the MPI job\n",
                (unsigned long long)h.len);
        MPI_Abort(MPI_COMM_WORLD, 71);
      }
      data_recv *r = &p->recvs[p->nrecvs++];
      *r = (data_recv){.t = t, .code = h.code, .buf = data, .len = h.len};
      MPI_Irecv(data, (int)h.len, MPI_BYTE, st.MPI_SOURCE, CF__MPI_TAG_RDATA,
                p->comm, &r->req);
      continue;
    }
    if (h.len != (size_t)count - sizeof h)
      protocol_error(p, st.MPI_SOURCE, "a result of the wrong length");
    complete_task(t, h.code, buf, buf + sizeof h, h.len);
  }
  return did;
}

static bool recvs_test(mpool *p) {
  bool did = false;
  size_t k = 0;
  for (size_t i = 0; i < p->nrecvs; i++) {
    int done = 0;
    MPI_Test(&p->recvs[i].req, &done, MPI_STATUS_IGNORE);
    if (done) {
      data_recv r = p->recvs[i];
      complete_task(r.t, r.code, r.buf, r.buf, r.len);
      did = true;
    } else {
      p->recvs[k++] = p->recvs[i];
    }
  }
  p->nrecvs = k;
  return did;
}

/* Waits on cv until ns nanoseconds pass (0: until signalled); mu held. */
static void wait_cv(mpool *p, long ns) {
  p->sleeping = true;
  if (ns == 0) {
    pthread_cond_wait(&p->cv, &p->mu);
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += ns;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&p->cv, &p->mu, &ts);
  }
  p->sleeping = false;
}

/* Backing off while tasks are in flight (see the top of the file): spin
 * for SPIN_NS after the last progress, then yield until YIELD_NS, then
 * sleep from 20 µs doubling up to 1 ms. While a large result is coming in
 * (its MPI_Irecv needs this thread's progress calls) it never sleeps. */
#define SPIN_NS    50000
#define YIELD_NS   2000000
#define LINGER_MAX 100000000

/* Spawned workers on this host are watched by pid while tasks are in
 * flight (every WATCH_NS): under mpiexec a dead rank ends the job, but a
 * program started alone (an MPI singleton) is not ended when a worker it
 * spawned dies, and would wait for its results for ever. A death breaks
 * the pool: every future in flight or queued fails with CF_EBROKEN and a
 * message naming the worker, later submits get CF_EBROKEN, and MPI is not
 * touched again (its requests and buffers are left as they are; the
 * process is not finalised). Returns true when broken. */
#define WATCH_NS 50000000

static bool watch_workers(mpool *p) {
  mworker *dead = NULL;
  for (size_t i = 0; i < p->n && !dead; i++)
    if (p->workers[i].pid > 0 && kill(p->workers[i].pid, 0) != 0 &&
        errno == ESRCH)
      dead = &p->workers[i];
  if (!dead)
    return false;
  char msg[MPI_MAX_PROCESSOR_NAME + 200];
  snprintf(msg, sizeof msg,
           "MPI worker rank %d (pid %ld) on %s died; the pool is broken "
           "(its MPI job cannot go on)",
           dead->rank, (long)dead->pid, dead->host);
  cf__mpi_lock();
  cf__mpi_world_get()->broken = true;
  cf__mpi_unlock();
  pthread_mutex_lock(&p->mu);
  p->broken = true;
  mtask *list = p->head;
  p->head = p->tail = NULL;
  p->npending = 0;
  pthread_mutex_unlock(&p->mu);
  for (size_t i = 0; i < p->n; i++) {
    mworker *w = &p->workers[i];
    for (mtask *t = w->head; t;) {
      mtask *next = t->next;
      /* a live worker may still read or write these: never reused */
      cf__mpi_shm_discard(t->in_shm);
      cf__mpi_shm_discard(t->spare);
      t->in_shm = t->spare = NULL;
      fail_task(t, CF_EBROKEN, msg);
      t = next;
    }
    w->head = w->tail = NULL;
    w->inflight = 0;
  }
  for (size_t i = 0; i < p->nrecvs; i++) {
    mtask *t = p->recvs[i].t;
    cf__mpi_shm_discard(t->in_shm);
    cf__mpi_shm_discard(t->spare);
    t->in_shm = t->spare = NULL;
    fail_task(t, CF_EBROKEN, msg); /* buffers left to MPI */
  }
  p->nrecvs = 0;
  p->nsends = 0; /* ditto */
  p->inflight = 0;
  p->shm_inflight = 0;
  while (list) {
    mtask *next = list->next;
    fail_task(list, CF_EBROKEN, msg);
    list = next;
  }
  fprintf(stderr, "cfutures: %s\n", msg);
  return true;
}

static bool busy(const mpool *p) {
  return p->inflight || p->nsends || p->nrecvs;
}

/* One turn of the progress engine (the thread's, or a caller's): hands
 * out queued tasks, finishes sends, takes results in. Returns whether
 * anything moved; *broke when a watched worker died (the pool is broken,
 * MPI not touched again). */
static bool progress_step(mpool *p, bool *broke) {
  bool did = dispatch(p);
  if (p->nsends)
    did |= sends_test(p);
  if (p->inflight)
    did |= receive_results(p);
  if (p->nrecvs)
    did |= recvs_test(p);
  *broke = false;
  if (p->spawned && busy(p) && now_ns() >= p->next_watch) {
    p->next_watch = now_ns() + WATCH_NS;
    *broke = watch_workers(p);
  }
  return did;
}

/* The end of a pool that did not break: the workers drop their mappings
 * of our memfds; spawned ones are told to exit and the intercommunicator
 * is disconnected. */
static void release_workers(mpool *p) {
  for (size_t i = 0; i < p->n; i++) /* their mappings of our memfds go */
    if (p->workers[i].shm)
      MPI_Send(NULL, 0, MPI_BYTE, p->workers[i].rank, CF__MPI_TAG_SHM_DROP,
               p->comm);
  if (p->spawned) {
    for (size_t i = 0; i < p->n; i++)
      MPI_Send(NULL, 0, MPI_BYTE, p->workers[i].rank, CF__MPI_TAG_EXIT,
               p->comm);
    MPI_Comm_disconnect(&p->comm);
  }
}

static void *progress_main(void *arg) {
  mpool *p = arg;
  uint64_t quiet_since = now_ns();
  long delay = 20000;
  for (;;) {
    bool broke;
    bool did = progress_step(p, &broke);
    if (broke)
      return NULL; /* MPI is not touched again */
    bool is_busy = busy(p);
    pthread_mutex_lock(&p->mu);
    /* loop holding mu: only the checks and the waits */
    if (p->shutdown && !p->head && !is_busy) {
      pthread_mutex_unlock(&p->mu);
      break;
    }
    if (did) {
      quiet_since = now_ns();
      delay = 20000;
    } else if (!is_busy && !p->head && !p->shutdown) {
      wait_cv(p, 0); /* nothing can arrive: sleep until a submit */
      quiet_since = now_ns();
      delay = 20000;
    } else {
      uint64_t quiet = now_ns() - quiet_since;
      /* Large shared-memory payloads in flight: awake (yielding) for
       * about as long as moving them takes, 1 ns a byte, before sleeping
       * (a sleep of up to 1 ms would be paid on every large round trip). */
      uint64_t awake =
          YIELD_NS +
          (p->shm_inflight < LINGER_MAX ? p->shm_inflight : LINGER_MAX);
      if (quiet > awake && p->nrecvs == 0) {
        wait_cv(p, delay);
        if (delay < 1000000)
          delay *= 2;
      } else if (quiet > SPIN_NS) {
        pthread_mutex_unlock(&p->mu);
        sched_yield();
        continue;
      }
    }
    pthread_mutex_unlock(&p->mu);
  }
  release_workers(p);
  return NULL;
}

/* Caller-driven pools: runs the progress engine on this thread (drive_mu
 * held) until `until` is done, or with until NULL until nothing is queued
 * or in flight, or until d passes. Done-callbacks run in here. Between
 * turns that move nothing it spins, then yields the CPU (MPI offers no
 * descriptor to sleep on). */
static int drive(mpool *p, cf_future *until, const cf_deadline *d) {
  driving = p;
  int rc = 0;
  uint64_t quiet_since = now_ns();
  for (;;) {
    pthread_mutex_lock(&p->mu);
    bool queued = p->head != NULL, broken = p->broken;
    pthread_mutex_unlock(&p->mu);
    if (until ? cf_future_done(until) : !queued && !busy(p))
      break;
    if (broken || p->released) {
      rc = broken ? CF_EBROKEN : CF_ESHUTDOWN;
      break;
    }
    bool broke;
    if (progress_step(p, &broke)) {
      quiet_since = now_ns();
      continue;
    }
    if (broke)
      continue; /* seen as broken above */
    if (cf__deadline_passed(d)) {
      rc = CF_ETIMEDOUT;
      break;
    }
    if (now_ns() - quiet_since > SPIN_NS)
      sched_yield();
  }
  driving = NULL;
  return rc;
}

int cf_mpi_pool_progress(cf_executor *ex, cf_future *until, double timeout_s) {
  if (!ex || ex->vt != &mp_vt)
    return CF__FAIL(CF_EINVAL, ex ? "not an MPI pool" : "NULL pool");
  mpool *p = (mpool *)ex;
  if (!p->caller)
    return CF__FAIL(CF_EINVAL, "the pool has its own progress thread "
                               "(caller_progress was not set)");
  cf_deadline d;
  if (cf__deadline_from_timeout(timeout_s, &d) != 0)
    return CF__FAIL(CF_EINVAL, "the timeout is NaN");
  if (driving == p)
    return CF__FAIL(CF_EDEADLK, "called from inside this pool's progress "
                                "(a done-callback)");
  pthread_mutex_lock(&p->drive_mu);
  int rc = drive(p, until, &d);
  pthread_mutex_unlock(&p->drive_mu);
  switch (rc) {
  case 0:
    return 0;
  case CF_ETIMEDOUT:
    return CF__FAIL(rc, until ? "the future is not done yet"
                              : "tasks are still queued or in flight");
  case CF_EBROKEN:
    return CF__FAIL(rc, "the pool is broken (a worker died)");
  default:
    return CF__FAIL(rc, "the pool has been shut down and its workers "
                        "released");
  }
}

/* ---- submissions ----------------------------------------------------------
 */

/* The reference of fn, through a one-entry cache per thread. */
static int fn_ref(const void *fn, uint64_t *ref, const char **path) {
  static _Thread_local const void *last_fn;
  static _Thread_local uint64_t last_ref;
  static _Thread_local const char *last_path;
  if (fn != last_fn || !last_fn) {
    uint64_t r;
    if (cf__fnref_make((uintptr_t)fn, &r) != 0)
      return CF_EINVAL;
    last_fn = fn;
    last_ref = r;
    last_path = cf__fnref_path((uint32_t)(r >> CF__FNREF_OFF_BITS));
  }
  *ref = last_ref;
  *path = last_path;
  return 0;
}

/* A record (see mpi_internal.h): header h (its len set here), the path,
 * then pre[0..pre_len) and data[0..len) as the payload. In *msg (from
 * buf_alloc) and *msg_len; CF_ETOOBIG or CF_ENOMEM. */
static int build_record(cf__mpi_task h, const char *path, const void *pre,
                        size_t pre_len, const void *data, size_t len,
                        char **msg, size_t *msg_len) {
  uint64_t plen = pre_len + (uint64_t)len;
  uint64_t n = sizeof h + cf__mpi_pad8(h.path_len) + cf__mpi_pad8(plen);
  if (len > CF__MPI_MAX_MSG || n > CF__MPI_MAX_MSG)
    return CF_ETOOBIG;
  char *at = buf_alloc(n);
  if (!at)
    return CF_ENOMEM;
  *msg = at;
  *msg_len = n;
  h.len = plen;
  memcpy(at, &h, sizeof h);
  at += sizeof h;
  memcpy(at, path, h.path_len);
  memset(at + h.path_len, 0, cf__mpi_pad8(h.path_len) - h.path_len);
  at += cf__mpi_pad8(h.path_len);
  if (pre_len)
    memcpy(at, pre, pre_len);
  if (len)
    memcpy(at + pre_len, data, len);
  memset(at + plen, 0, cf__mpi_pad8(plen) - plen);
  return 0;
}

/* A task for fn with payload data[0..len) (chunks: count items of
 * item_size). With `shm`, a large byte input is copied into a warm memfd
 * (mpi_shm.c) and the record carries its reference. */
static int make_task(uint32_t kind, const void *fn, const void *data,
                     size_t len, size_t count, size_t item_size, bool shm,
                     mtask **out) {
  uint64_t ref;
  const char *path;
  if (fn_ref(fn, &ref, &path) != 0)
    return CF_EINVAL;
  if (len > CF__MPI_MAX_MSG)
    return CF_ETOOBIG;
  mtask *t = calloc(1, sizeof *t);
  if (!t)
    return CF_ENOMEM;
  cf__mpi_task h = {
      .magic = CF__MPI_MAGIC,
      .kind = kind,
      .id = atomic_fetch_add_explicit(&next_id, 1, memory_order_relaxed),
      .fn = ref,
      .path_len = (uint32_t)strlen(path),
      .count = (uint32_t)count,
      .item_size = item_size};
  if (shm && kind == CF__MPI_KIND_BYTES && len >= cf__mpi_shm_min())
    t->in_shm = cf__mpi_shm_take(len);
  int rc;
  if (t->in_shm) {
    memcpy(cf__mpi_shm_data(t->in_shm), data, len);
    cf__mpi_shm_task st = {.in = cf__mpi_shm_ref_of(t->in_shm), .in_len = len};
    h.kind = CF__MPI_KIND_BYTES_SHM;
    rc = build_record(h, path, &st, sizeof st, NULL, 0, &t->msg, &t->msg_len);
  } else {
    rc = build_record(h, path, NULL, 0, data, len, &t->msg, &t->msg_len);
  }
  if (rc) {
    cf__mpi_shm_give(t->in_shm);
    free(t);
    return rc;
  }
  t->id = h.id;
  t->kind = h.kind;
  t->in_len = len;
  *out = t;
  return 0;
}

/* Queues t (its futures made); on error frees it. */
static int push_task(mpool *p, mtask *t) {
  pthread_mutex_lock(&p->mu);
  int rc = p->shutdown ? CF_ESHUTDOWN : p->broken ? CF_EBROKEN : 0;
  if (rc == 0) {
    if (p->tail)
      p->tail->next = t;
    else
      p->head = t;
    p->tail = t;
    p->npending++;
    if (p->sleeping)
      pthread_cond_signal(&p->cv);
  }
  pthread_mutex_unlock(&p->mu);
  if (rc)
    task_free(t);
  return rc;
}

static int enqueue(mpool *p, uint32_t kind, const void *fn, const void *data,
                   size_t len, cf_destroy_fn destroy, cf_future **out) {
  mtask *t;
  int rc = make_task(kind, fn, data, len, 1, 0, p->shm_any, &t);
  if (rc)
    return rc;
  cf_future *f = cf__future_new_owned();
  if (!f) {
    task_free(t);
    return CF_ENOMEM;
  }
  t->f = cf_future_ref(f);
  t->destroy = destroy;
  rc = push_task(p, t);
  if (rc) {
    cf_future_unref(f);
    return rc;
  }
  *out = f;
  return 0;
}

/* One task, one message and one future for `count` map items (see
 * executor_internal.h, submit_chunk): fn takes each item by pointer, or
 * bytes takes its bytes; the future's result is the chunk's outcomes. */
static int mp_submit_chunk(cf_executor *ex, cf_fn fn, cf_proc_fn bytes,
                           const void *items, size_t count, size_t item_size,
                           cf_destroy_fn destroy, cf_future **out) {
  mpool *p = (mpool *)ex;
  if (count == 0)
    return CF_EINVAL;
  if (count > UINT32_MAX || item_size > CF__MPI_MAX_MSG / count)
    return CF_ETOOBIG;
  uint32_t kind = bytes ? CF__MPI_KIND_CHUNK_BYTES : CF__MPI_KIND_CHUNK;
  const void *f =
      bytes ? (const void *)(uintptr_t)bytes : (const void *)(uintptr_t)fn;
  mtask *t;
  int rc =
      make_task(kind, f, items, count * item_size, count, item_size, false, &t);
  if (rc)
    return rc;
  t->count = count;
  t->destroy = destroy;
  t->acc = calloc(1, sizeof *t->acc);
  t->f = t->acc ? cf__future_new_owned() : NULL;
  if (!t->f) {
    task_free(t);
    return CF_ENOMEM;
  }
  *t->acc =
      (cf__chunk){.count = count, .bytes = bytes != NULL, .destroy = destroy};
  cf_future *mine = cf_future_ref(t->f);
  rc = push_task(p, t);
  if (rc) {
    cf_future_unref(mine);
    return rc;
  }
  *out = mine;
  return 0;
}

static int mp_submit(cf_executor *ex, cf_fn fn, void *arg,
                     cf_destroy_fn destroy, cf_future **out) {
  uint64_t v = (uint64_t)(uintptr_t)arg;
  return enqueue((mpool *)ex, CF__MPI_KIND_VALUE, (const void *)(uintptr_t)fn,
                 &v, sizeof v, destroy, out);
}

static int mp_shutdown(cf_executor *ex, bool wait, bool cancel_futures) {
  mpool *p = (mpool *)ex;
  if (wait && driving == p)
    return CF_EDEADLK; /* a done-callback of a caller-driven pool */
  pthread_mutex_lock(&p->mu);
  if (wait && p->have_thread && pthread_equal(pthread_self(), p->thread)) {
    pthread_mutex_unlock(&p->mu);
    return CF_EDEADLK;
  }
  p->shutdown = true;
  mtask *list = NULL;
  if (cancel_futures) {
    list = p->head;
    p->head = p->tail = NULL;
    p->npending = 0;
  }
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
  while (list) {
    mtask *next = list->next;
    cf__future_cancel(list->f);
    task_free(list);
    list = next;
  }
  if (!wait)
    return 0;
  if (p->caller) {
    /* What the thread would do before it ends: run everything queued,
     * then release the workers (once). */
    pthread_mutex_lock(&p->drive_mu);
    cf_deadline forever = {.forever = true};
    int rc = p->released ? 0 : drive(p, NULL, &forever);
    if (rc == 0 && !p->released) {
      release_workers(p);
      p->released = true;
    }
    pthread_mutex_unlock(&p->drive_mu);
    return 0; /* a broken pool: its futures have failed already */
  }
  pthread_mutex_lock(&p->join_mu);
  if (!p->joined) {
    pthread_join(p->thread, NULL);
    p->joined = true;
  }
  pthread_mutex_unlock(&p->join_mu);
  return 0;
}

static void pool_free(mpool *p) {
  pthread_mutex_destroy(&p->drive_mu);
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->join_mu);
  pthread_cond_destroy(&p->cv);
  free(p->workers);
  free(p->sends);
  free(p->recvs);
  free(p);
}

static void mp_destroy(cf_executor *ex) {
  cf__mpi_lock();
  if (cf__mpi_live_pool == ex)
    cf__mpi_live_pool = NULL;
  cf__mpi_unlock();
  if (((mpool *)ex)->shm_any) /* the idle memfds go; results keep theirs */
    cf__mpi_shm_use(-1);
  pool_free((mpool *)ex);
}

static size_t mp_window(const cf_executor *ex) {
  return 2 * AHEAD * ((const mpool *)ex)->n;
}

static const struct cf_executor_vt mp_vt = {
    .name = "mpi_pool",
    .submit = mp_submit,
    .submit_chunk = mp_submit_chunk,
    .shutdown = mp_shutdown,
    .destroy = mp_destroy,
    .default_window = mp_window,
};

size_t cf_mpi_pool_size(const cf_executor *ex) {
  return ex && ex->vt == &mp_vt ? ((const mpool *)ex)->n : 0;
}

int cf_mpi_pool_submit(cf_executor *ex, cf_proc_fn fn, const void *data,
                       size_t len, cf_future **out) {
  if (out)
    *out = NULL;
  if (!ex || !fn || !out || (!data && len) || cf_mpi_pool_size(ex) == 0)
    return CF__FAIL(CF_EINVAL, !ex              ? "NULL executor"
                               : !fn            ? "NULL task function"
                               : !out           ? "NULL out"
                               : (!data && len) ? "NULL data with len > 0"
                                                : "not an MPI pool");
  int rc = enqueue((mpool *)ex, CF__MPI_KIND_BYTES, (const void *)(uintptr_t)fn,
                   data, len, NULL, out);
  if (rc == CF_ETOOBIG)
    return CF__FAILF(rc,
                     "an input of %zu bytes does not fit one MPI message "
                     "(at most %llu)",
                     len, (unsigned long long)CF__MPI_MAX_MSG);
  if (rc == CF_EINVAL)
    return cf__fail_retag(__func__, rc); /* fnref said which function */
  return rc ? cf__fail_submit(__func__, rc) : 0;
}

int cf_mpi_pool_map_bytes(cf_executor *ex, cf_proc_fn fn, const void *items,
                          size_t n, size_t item_size, const cf_map_opts *opts,
                          cf_map **out) {
  if (out)
    *out = NULL;
  if (ex && cf_mpi_pool_size(ex) == 0)
    return CF__FAIL(CF_EINVAL, "not an MPI pool");
  if (opts && opts->result_destroy)
    return CF__FAIL(CF_EINVAL, "result_destroy is set: the map owns each "
                               "item's cf_buf");
  return cf__map_array_bytes(__func__, ex, fn, items, n, item_size, opts, out);
}

/* ---- creation -------------------------------------------------------------
 */

/* Whether cmd names an executable file: a path, or a name on PATH (as
 * mpiexec looks it up). Spawned workers find the program at the same path
 * on every host. */
static bool executable(const char *cmd) {
  if (!*cmd)
    return false;
  if (strchr(cmd, '/'))
    return access(cmd, X_OK) == 0;
  const char *path = getenv("PATH");
  char buf[PATH_MAX];
  while (path && *path) {
    size_t k = strcspn(path, ":");
    if (k > 0 && k + strlen(cmd) + 2 <= sizeof buf) {
      memcpy(buf, path, k);
      buf[k] = '/';
      strcpy(buf + k + 1, cmd);
      if (access(buf, X_OK) == 0)
        return true;
    }
    path += k + (path[k] == ':');
  }
  return false;
}

/* Spawns n workers running opts' command (or this program); 0 and *inter,
 * or an error recorded for cf_mpi_pool_new. */
static int spawn(const cf_mpi_pool_opts *o, size_t n, MPI_Comm *inter) {
  char self[PATH_MAX];
  const char *cmd = o->command;
  if (!cmd) {
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    if (k <= 0)
      return cf__fail_fmt("cf_mpi_pool_new", CF_ESYS,
                          "cannot find this program to spawn it "
                          "(/proc/self/exe: %s)",
                          strerror(errno));
    self[k] = '\0';
    cmd = self;
  }
  if (!executable(cmd))
    return cf__fail_fmt("cf_mpi_pool_new", CF_EINVAL,
                        "cannot spawn '%s': no such executable here (with "
                        "OpenMPI 4.1, MPI_Comm_spawn of a program that cannot "
                        "start does not return, so it is checked first)",
                        cmd);
  MPI_Info info = MPI_INFO_NULL;
  if (o->hosts) {
    MPI_Info_create(&info);
    MPI_Info_set(info, "host", o->hosts);
  }
  int *errs = malloc(n * sizeof *errs);
  if (!errs) {
    if (info != MPI_INFO_NULL)
      MPI_Info_free(&info);
    return cf__fail_at("cf_mpi_pool_new", CF_ENOMEM, "no memory");
  }
  MPI_Errhandler old;
  MPI_Comm_get_errhandler(MPI_COMM_SELF, &old);
  MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
  int rc = MPI_Comm_spawn(cmd, o->argv ? (char **)o->argv : MPI_ARGV_NULL,
                          (int)n, info, 0, MPI_COMM_SELF, inter, errs);
  MPI_Comm_set_errhandler(MPI_COMM_SELF, old);
  MPI_Errhandler_free(&old);
  if (info != MPI_INFO_NULL)
    MPI_Info_free(&info);
  int bad = MPI_SUCCESS;
  for (size_t i = 0; rc == MPI_SUCCESS && i < n; i++)
    if (errs[i] != MPI_SUCCESS)
      bad = errs[i];
  free(errs);
  if (rc != MPI_SUCCESS || bad != MPI_SUCCESS) {
    char e[MPI_MAX_ERROR_STRING];
    if (rc == MPI_SUCCESS) /* some started: let them go */
      MPI_Comm_disconnect(inter);
    return cf__fail_fmt(
        "cf_mpi_pool_new", CF_ESYS,
        "MPI_Comm_spawn of %zu workers running '%s' failed: "
        "%s",
        n, cmd, cf__mpi_strerror(rc != MPI_SUCCESS ? rc : bad, e, sizeof e));
  }
  return 0;
}

/* Which workers take the same-host fast path (mpi_shm.c): each gets a
 * probe naming this host and boot and a small memfd of ours, and answers
 * whether it is on this host and could open and map that memfd; the token
 * it read there, written back into its slot, proves it. Main thread,
 * before the progress thread starts (MPI is this thread's). Off with
 * CFUTURES_MPI_SHM=0. */
static void probe_shm(mpool *p) {
  if (!cf__mpi_shm_wanted())
    return;
  cf__mpi_shm_probe pr;
  void *map;
  size_t len;
  int fd = cf__mpi_shm_probe_make(p->n, &pr, &map, &len);
  if (fd < 0)
    return;
  uint64_t token;
  memcpy(&token, map, sizeof token);
  for (size_t i = 0; i < p->n; i++) { /* small: sent eagerly */
    pr.slot = (uint32_t)i;
    MPI_Send(&pr, sizeof pr, MPI_BYTE, p->workers[i].rank,
             CF__MPI_TAG_SHM_PROBE, p->comm);
  }
  for (size_t i = 0; i < p->n; i++) {
    int32_t ok = 0;
    MPI_Recv(&ok, 1, MPI_INT32_T, p->workers[i].rank, CF__MPI_TAG_SHM_ACK,
             p->comm, MPI_STATUS_IGNORE);
    uint64_t got;
    memcpy(&got, (char *)map + 64 + 8 * i, sizeof got);
    p->workers[i].shm = ok == 1 && got == token + 1 + i;
    p->shm_any |= p->workers[i].shm;
  }
  munmap(map, len);
  close(fd);
  if (p->shm_any)
    cf__mpi_shm_use(1);
}

static size_t default_spawn_count(void) {
  int *usize = NULL, flag = 0, wsize = 1;
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_UNIVERSE_SIZE, &usize, &flag);
  MPI_Comm_size(MPI_COMM_WORLD, &wsize);
  if (flag && usize && *usize > wsize)
    return (size_t)(*usize - wsize);
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return cpus > 0 ? (size_t)cpus : 1;
}

int cf_mpi_pool_new(const cf_mpi_pool_opts *opts, cf_executor **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  cf_mpi_pool_opts o = opts ? *opts : (cf_mpi_pool_opts){0};
  if (o.max_workers > MAX_MPI_WORKERS)
    return CF__FAILF(CF_EINVAL, "max_workers %zu is above %d", o.max_workers,
                     MAX_MPI_WORKERS);
  int rc = cf__mpi_ensure_init(__func__);
  if (rc)
    return rc;
  mpool *p = calloc(1, sizeof *p);
  if (!p)
    return CF__FAIL(CF_ENOMEM, "no memory for the pool");
  p->base.vt = &mp_vt;
  pthread_mutex_init(&p->mu, NULL);
  pthread_mutex_init(&p->join_mu, NULL);
  pthread_mutex_init(&p->drive_mu, NULL);
  p->caller = o.caller_progress;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&p->cv, &ca);
  pthread_condattr_destroy(&ca);

  cf__mpi_lock();
  if (cf__mpi_live_pool) {
    cf__mpi_unlock();
    pool_free(p);
    return CF__FAIL(CF_EBUSY, "another MPI pool is alive in this process "
                              "(one at a time)");
  }
  cf__mpi_world *w = cf__mpi_world_get();
  if (w->main_of_job) {
    size_t avail = (size_t)w->size - 1;
    if (o.max_workers > avail) {
      cf__mpi_unlock();
      pool_free(p);
      return CF__FAILF(CF_EINVAL,
                       "max_workers %zu, but the job has %zu "
                       "worker ranks",
                       o.max_workers, avail);
    }
    p->n = o.max_workers ? o.max_workers : avail;
    p->comm = w->comm;
    p->rank_offset = 1;
  } else {
    p->n = o.max_workers ? o.max_workers : default_spawn_count();
    rc = spawn(&o, p->n, &p->comm);
    if (rc) {
      cf__mpi_unlock();
      pool_free(p);
      return rc;
    }
    p->spawned = true;
    p->rank_offset = 0;
  }
  cf__mpi_hello *hellos = NULL;
  if (p->spawned) { /* who they are, for the watch */
    hellos = calloc(p->n, sizeof *hellos);
    char me[MPI_MAX_PROCESSOR_NAME] = "";
    int len = 0;
    MPI_Get_processor_name(me, &len);
    for (size_t i = 0; i < p->n; i++) {
      cf__mpi_hello h;
      MPI_Recv(&h, sizeof h, MPI_BYTE, (int)i, CF__MPI_TAG_HELLO, p->comm,
               MPI_STATUS_IGNORE);
      h.host[sizeof h.host - 1] = '\0';
      if (hellos)
        hellos[i] = strcmp(h.host, me) == 0 ? h : (cf__mpi_hello){.pid = 0};
      if (hellos)
        memcpy(hellos[i].host, h.host, sizeof h.host);
    }
  }
  p->workers = calloc(p->n, sizeof *p->workers);
  if (!p->workers) {
    free(hellos);
    if (p->spawned) {
      for (size_t i = 0; i < p->n; i++)
        MPI_Send(NULL, 0, MPI_BYTE, (int)i, CF__MPI_TAG_EXIT, p->comm);
      MPI_Comm_disconnect(&p->comm);
    }
    cf__mpi_unlock();
    pool_free(p);
    return CF__FAIL(CF_ENOMEM, "no memory for the workers' table");
  }
  for (size_t i = 0; i < p->n; i++) {
    p->workers[i].rank = (int)i + p->rank_offset;
    if (hellos) {
      p->workers[i].pid = hellos[i].pid;
      memcpy(p->workers[i].host, hellos[i].host, sizeof hellos[i].host);
    }
  }
  free(hellos);
  probe_shm(p);
  if (p->caller) { /* no thread: see cf_mpi_pool_progress */
    cf__mpi_live_pool = &p->base;
    cf__mpi_unlock();
    *out = &p->base;
    return 0;
  }
  /* The progress thread runs with every signal blocked: the host's
   * signals go to the host's threads. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_mutex_lock(&p->mu);
  int prc = pthread_create(&p->thread, NULL, progress_main, p);
  p->have_thread = prc == 0;
  pthread_mutex_unlock(&p->mu);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (prc != 0) {
    release_workers(p);
    if (p->shm_any)
      cf__mpi_shm_use(-1);
    cf__mpi_unlock();
    pool_free(p);
    return CF__FAIL(CF_ESYS, "the progress thread could not be created");
  }
  cf__mpi_live_pool = &p->base;
  cf__mpi_unlock();
  *out = &p->base;
  return 0;
}
