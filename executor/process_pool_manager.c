/* The process pool's manager thread, in the parent: owns every
 * descriptor, hands tasks to workers, reads results, completes futures,
 * enforces timeouts, replaces dead workers. See process_pool_internal.h. */
#include "executor/process_pool_internal.h"

#include "core/futex.h"

/* ---- the manager thread (parent) ----------------------------------------- */

void cf__pp_ring(ppool *p) {
  uint64_t one = 1;
  ssize_t w = write(p->wake_fd, &one, sizeof one);
  (void)w;
}

/* A byte result: its data is malloc'd, or a private mapping of the memfd
 * it came in (fd, handed to the warm buffers when the result is freed:
 * see cf__pp_warm_give). */
typedef struct result_buf {
  cf_buf b;
  bool mapped;
  int fd;
} result_buf;

static void buf_free(void *v) {
  result_buf *r = v;
  if (!r)
    return;
  if (r->mapped)
    munmap(r->b.data, r->b.len);
  else
    free(r->b.data);
  if (r->fd >= 0)
    cf__pp_warm_give(r->fd);
  free(r);
}

/* A received payload as a malloc'd string (for messages). */
static char *payload_string(const wire *h, void *payload) {
  if (!payload || h->len == 0) {
    cf__pp_payload_free(h, payload);
    return NULL;
  }
  char *s = strndup(payload, h->len);
  cf__pp_payload_free(h, payload);
  return s;
}

/* A chunk's outcomes are shared by the tasks that fill it (cf__chunk
 * .pool_refs counts them: the first, and those that re-run the rest of it
 * after a worker died). When the last of them is freed, every item has its
 * outcome and the chunk's future completes with it (or fails, if an
 * outcome could not be kept); a future cancelled before it ran does not
 * take it, and it is freed here. */
void cf__pp_task_free(ptask *t) {
  cf__chunk *c = t->acc;
  if (c && --c->pool_refs == 0) {
    int rc = -1;
    if (c->covered == c->count && !c->lost)
      rc = cf__future_complete(t->f, 0, c, cf__chunk_free, NULL);
    else if (!cf_future_done(t->f))
      cf__future_complete(t->f, c->lost ? CF_ENOMEM : CF_EBROKEN, NULL, NULL,
                          strdup(c->lost ? "no memory to keep a chunk's "
                                           "results"
                                         : "a chunk's items went missing"));
    if (rc != 0)
      cf__chunk_free(c);
  }
  cf_future_unref(t->f);
  free(t->data);
  if (t->mfd >= 0)
    cf__pp_eager_memfd_close(t->mfd);
  free(t);
}

/* Adds segment s to t's chunk, which takes s's buffer or message (freed
 * here, and the chunk marked lost, if it cannot). */
static void chunk_add(ptask *t, cf__chunk_seg *s) {
  if (cf__chunk_add(t->acc, s) == 0)
    return;
  if (s->buf && s->mapped)
    munmap(s->buf, s->len);
  else
    free(s->buf);
  free(s->msg);
  t->acc->lost = true;
}

/* Items [first, first + n) of t's chunk fail with code and a copy of msg. */
static void chunk_fail(ptask *t, size_t first, size_t n, int code,
                       const char *msg) {
  cf__chunk_seg s = {.first = first,
                     .count = n,
                     .code = code,
                     .msg = msg ? strdup(msg) : NULL};
  chunk_add(t, &s);
}

static void fail_task(ptask *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_task(ptask *t, int code, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (t->acc) {
    chunk_fail(t, t->base, t->count, code, msg);
  } else {
    char *m = strdup(msg);
    if (cf__future_complete(t->f, code, NULL, NULL, m) != 0)
      free(m);
  }
  cf__pp_task_free(t);
}

/* A chunk's reply: its table and data, as one segment. */
static void complete_chunk(ptask *t, const wire *r, void *payload) {
  size_t tlen = t->count * sizeof(cf__item_result);
  if (r->code != 0 || r->len < tlen) {
    cf__pp_payload_free(r, payload);
    fail_task(t, r->code ? r->code : CF_EBROKEN, "%s",
              "the worker could not report the chunk's results");
    return;
  }
  cf__chunk_seg s = {.first = t->base,
                     .count = t->count,
                     .table_n = t->count,
                     .buf = payload,
                     .len = r->len,
                     .mapped = (r->flags & FLAG_MAPPED) != 0};
  chunk_add(t, &s);
  cf__pp_task_free(t);
}

/* *mfd: the memfd a mapped payload came in, or -1; a byte result takes
 * it (set to -1). */
static void complete_task(ptask *t, const wire *r, void *payload, int *mfd) {
  if (t->acc) {
    complete_chunk(t, r, payload);
    return;
  }
  if (r->code != 0) {
    char *msg = payload_string(r, payload);
    if (cf__future_complete(t->f, r->code, NULL, NULL, msg) != 0)
      free(msg);
  } else if (t->kind == KIND_VALUE) {
    void *out = NULL;
    if (payload && r->len == sizeof out)
      memcpy(&out, payload, sizeof out);
    cf__pp_payload_free(r, payload);
    if (cf__future_complete(t->f, 0, out, t->destroy, NULL) != 0 && t->destroy)
      t->destroy(out);
  } else {
    result_buf *b = malloc(sizeof *b);
    if (!b) {
      cf__pp_payload_free(r, payload);
      cf__future_complete(t->f, CF_ENOMEM, NULL, NULL, NULL);
    } else {
      b->b.data = payload;
      b->b.len = r->len;
      b->mapped = (r->flags & FLAG_MAPPED) != 0;
      b->fd = b->mapped ? *mfd : -1;
      if (b->mapped)
        *mfd = -1;
      /* the future's result is the cf_buf at the start of result_buf */
      if (cf__future_complete(t->f, 0, &b->b, buf_free, NULL) != 0)
        buf_free(b);
    }
  }
  cf__pp_task_free(t);
}

static void describe_death(int status, char *out, size_t n) {
  if (WIFSIGNALED(status))
    snprintf(out, n, "killed by signal %d (%s)", WTERMSIG(status),
             strsignal(WTERMSIG(status)));
  else if (WIFEXITED(status))
    snprintf(out, n, "exited with status %d", WEXITSTATUS(status));
  else
    snprintf(out, n, "ended (wait status %d)", status);
}

static void spawn(ppool *p, size_t slot) {
  ctl c = {.op = CTL_SPAWN, .slot = (uint32_t)slot};
  p->workers[slot].state = cf__pp_send_ctl(p->ctl_fd, &c, NULL, 0, MSG_DONTWAIT)
                               ? W_NONE
                               : W_SPAWNING;
}

static ptask *pop_pending(ppool *p) {
  pthread_mutex_lock(&p->mu);
  ptask *t = p->head;
  if (t) {
    p->head = t->next;
    if (!p->head)
      p->tail = NULL;
    p->npending--;
  }
  pthread_mutex_unlock(&p->mu);
  return t;
}

/* Puts tasks that a dead worker never started back at the queue's head,
 * in their order, after `rest` (the end of the chunk it died in, or
 * NULL). */
static void requeue_front(ppool *p, pworker *w, ptask *rest) {
  ptask *first = NULL, **tail = &first, *last = NULL;
  size_t k = 0;
  if (rest) {
    first = last = rest;
    tail = &rest->next;
    k++;
  }
  while (w->qn) {
    last = inflight_pop(w);
    *tail = last;
    tail = &last->next;
    k++;
  }
  if (!first)
    return;
  pthread_mutex_lock(&p->mu);
  last->next = p->head;
  if (!p->head)
    p->tail = last;
  p->head = first;
  p->npending += k;
  pthread_mutex_unlock(&p->mu);
}

static void fail_pending(ppool *p, int code, const char *why) {
  ptask *t;
  while ((t = pop_pending(p)))
    fail_task(t, code, "%s", why);
}

/* Breaks the pool: queued tasks, and those put back later by a dying
 * worker, fail with `why`. Manager only. */
static void break_pool(ppool *p, const char *why) {
  snprintf(p->broken_why, sizeof p->broken_why, "%s", why);
  pthread_mutex_lock(&p->mu);
  p->broken = true;
  pthread_mutex_unlock(&p->mu);
  fail_pending(p, CF_EBROKEN, why);
}

/* ---- receiving from workers (manager) -----------------------------------
 *
 * The manager never waits on a worker's socket: it reads what has arrived
 * (MSG_DONTWAIT) into the worker's buffer and handles the complete frames
 * in it; a partial frame waits there for the rest. A worker's death is
 * known from its exit report, not from end-of-file (a helper process
 * forked by a task may hold the socket open long after). Nor does it wait
 * to send: see tx_send. */

#define RX_FD_DROPPED (-1)
#define RX_MIN        16384 /* bytes asked for per read, at least */

static void rx_reset(pworker *w) {
  for (unsigned k = 0; k < w->rx_nfds; k++)
    if (w->rx_fds[k] >= 0)
      close(w->rx_fds[k]);
  free(w->rx);
  w->rx = NULL;
  w->rx_off = w->rx_len = w->rx_cap = 0;
  w->rx_nfds = 0;
}

/* Takes the next complete frame out of w's buffer: RX_MORE, none yet;
 * 0, *h and *data as cf__pp_recv_msg's; RECV_LOCAL, the payload could not be
 * taken in here (*err says why: ENOMEM, EMFILE...), skipped; RECV_BAD,
 * not a frame (*bad says what came). */
#define RX_MORE 1
static int rx_take(pworker *w, wire *h, void **data, int *err,
                   const char **bad) {
  *data = NULL;
  const char *b = w->rx + w->rx_off;
  size_t have = w->rx_len - w->rx_off;
  static const uint32_t magic = WIRE_MAGIC;
  if (memcmp(b, &magic, have < sizeof magic ? have : sizeof magic) != 0) {
    *bad = "bytes that are not a message (no magic number)";
    return RECV_BAD;
  }
  if (have < sizeof *h)
    return RX_MORE;
  memcpy(h, b, sizeof *h);
  bool mapped = (h->flags & FLAG_MAPPED) != 0;
  if ((h->flags & ~FLAG_MAPPED) || (!mapped && h->len >= BIG_PAYLOAD)) {
    *bad = "a message of impossible length or flags";
    return RECV_BAD;
  }
  if (!mapped && have < sizeof *h + h->len)
    return RX_MORE;
  w->rx_off += sizeof *h;
  if (!mapped) {
    if (h->len == 0)
      return 0;
    *data = malloc(h->len);
    if (*data)
      memcpy(*data, b + sizeof *h, h->len);
    w->rx_off += h->len;
    *err = ENOMEM;
    return *data ? 0 : RECV_LOCAL;
  }
  /* The memfd came with the header's first byte, so it is here. */
  if (w->rx_nfds == 0) {
    *bad = "a mapped payload without its descriptor";
    return RECV_BAD;
  }
  int mfd = w->rx_fds[0];
  w->rx_nfds--;
  memmove(w->rx_fds, w->rx_fds + 1, w->rx_nfds * sizeof *w->rx_fds);
  if (mfd == RX_FD_DROPPED) {
    *err = EMFILE; /* the kernel had no descriptor slot for it here */
    return RECV_LOCAL;
  }
  struct stat st;
  if (fstat(mfd, &st) != 0 || (uint64_t)st.st_size < h->len) {
    close(mfd); /* a mapping past its end would fault (SIGBUS) */
    *bad = "a mapped payload longer than its memfd";
    return RECV_BAD;
  }
  void *m = mmap(NULL, h->len, PROT_READ | PROT_WRITE, MAP_PRIVATE, mfd, 0);
  *err = errno;
  if (m == MAP_FAILED) {
    close(mfd);
    return RECV_LOCAL;
  }
  /* kept for the message's handler: a byte result keeps it (see
   * result_buf); on_worker_ready closes it otherwise */
  if (w->last_mfd >= 0)
    close(w->last_mfd);
  w->last_mfd = mfd;
  *data = m;
  return 0;
}

/* One read of what w has sent, without waiting: 1, bytes were read; 0 at
 * end-of-file or on an error; RX_AGAIN when nothing has arrived; RECV_BAD
 * when more descriptors came than frames can use; RECV_LOCAL when the
 * buffer cannot grow (ENOMEM). */
#define RX_AGAIN (-4)
static int rx_fill(pworker *w) {
  size_t have = w->rx_len - w->rx_off;
  size_t need = sizeof(wire) + RX_MIN; /* room for a whole frame, or more */
  if (have >= sizeof(wire)) {
    wire h;
    memcpy(&h, w->rx + w->rx_off, sizeof h); /* checked by rx_take */
    if (!(h.flags & FLAG_MAPPED))
      need += h.len;
  }
  if (need < have + RX_MIN)
    need = have + RX_MIN;
  if (w->rx_off && (w->rx_off == w->rx_len || w->rx_off + need > w->rx_cap)) {
    memmove(w->rx, w->rx + w->rx_off, have);
    w->rx_off = 0;
    w->rx_len = have;
  }
  if (need > w->rx_cap) {
    char *nb = realloc(w->rx, need);
    if (!nb)
      return RECV_LOCAL;
    w->rx = nb;
    w->rx_cap = need;
  }
  fdbox box = {.fds = w->rx_fds,
               .max = sizeof w->rx_fds / sizeof *w->rx_fds,
               .n = w->rx_nfds};
  ssize_t r = cf__pp_recv_fds(w->fd, w->rx + w->rx_len, w->rx_cap - w->rx_len,
                              &box, MSG_DONTWAIT);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    return RX_AGAIN;
  if (r <= 0)
    return 0;
  if (box.dropped && box.n < box.max)
    box.fds[box.n++] = RX_FD_DROPPED;
  w->rx_nfds = (unsigned)box.n;
  w->rx_len += (size_t)r;
  return box.excess ? RECV_BAD : 1;
}

/* ---- sending to workers (manager) ----------------------------------------
 *
 * The manager never waits to send either: a message goes out with
 * MSG_DONTWAIT, and what the socket does not take (a worker that stopped
 * reading: SIGSTOP, a task that shrank the buffers, a host under memory
 * pressure) waits in the worker's tx buffer, flushed when poll says the
 * socket has room. Meanwhile that worker gets no new message; every other
 * worker, timeout and result goes on. */

static void tx_reset(pworker *w) {
  if (w->tx_fd >= 0)
    close(w->tx_fd);
  w->tx_fd = -1;
  free(w->tx);
  w->tx = NULL;
  w->tx_off = w->tx_len = w->tx_cap = 0;
}

static bool tx_pending(const pworker *w) {
  return w->tx_off < w->tx_len;
}

/* Sends what w's tx buffer holds, as far as the socket takes it: 0 (all
 * sent, or the rest waits for room), -1 (the worker hung up). */
static int tx_flush(pworker *w) {
  while (tx_pending(w)) {
    int fd = w->tx_fd;
    ssize_t r = cf__pp_send_fds(w->fd, w->tx + w->tx_off, w->tx_len - w->tx_off,
                                &fd, fd >= 0 ? 1 : 0, MSG_DONTWAIT);
    if (r < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    if (w->tx_fd >= 0) { /* it went with the first byte */
      close(w->tx_fd);
      w->tx_fd = -1;
    }
    w->tx_off += (size_t)r;
  }
  w->tx_off = w->tx_len = 0;
  return 0;
}

/* Sends the message h (its magic set here) with data[0..len) after it, or
 * with descriptor pass_fd (-1: none; the caller keeps its own) attached:
 * at once as far as the socket takes it, the rest copied to w's tx
 * buffer. Returns 0; -1 when the worker hung up; SEND_LOCAL when the rest
 * could not be kept (no memory or descriptor: errno), nothing sent. */
static int tx_send(pworker *w, wire *h, const void *data, size_t len,
                   int pass_fd) {
  h->magic = WIRE_MAGIC;
  struct iovec iov[2] = {{.iov_base = h, .iov_len = sizeof *h},
                         {.iov_base = (void *)data, .iov_len = len}};
  size_t total = sizeof *h + len;
  /* room for the rest, first: a message is never left half sent */
  if (w->tx_cap < total) {
    char *b = realloc(w->tx, total);
    if (!b)
      return SEND_LOCAL;
    w->tx = b;
    w->tx_cap = total;
  }
  ssize_t r = cf__pp_sendv_fds(w->fd, iov, len ? 2 : 1, &pass_fd,
                               pass_fd >= 0 ? 1 : 0, MSG_DONTWAIT);
  if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    return -1;
  size_t sent = r > 0 ? (size_t)r : 0;
  if (sent == total)
    return 0;
  if (sent == 0 && pass_fd >= 0 &&
      (w->tx_fd = fcntl(pass_fd, F_DUPFD_CLOEXEC, 0)) < 0)
    return SEND_LOCAL;      /* nothing went: the stream is intact */
  size_t pos = 0, kept = 0; /* keep the bytes past `sent` */
  for (int k = 0; k < 2; k++) {
    size_t n = iov[k].iov_len, from = sent > pos ? sent - pos : 0;
    if (from < n) {
      memcpy(w->tx + kept, (char *)iov[k].iov_base + from, n - from);
      kept += n - from;
    }
    pos += n;
  }
  w->tx_off = 0;
  w->tx_len = total - sent;
  return 0;
}

/* Wakes the slot's worker if it sleeps on its doorbell (see msg_ring). */
static void wake_worker(slot_shared *sh) {
  uint32_t one = 1;
  if (atomic_load(&sh->asleep) &&
      atomic_compare_exchange_strong(&sh->asleep, &one, 0))
    cf__futex_wake(&sh->asleep, 1, true);
}

/* Sends w message h (numbered here) with data[0..len), or with
 * descriptor pass_fd (-1: none): through its task ring if it fits (see
 * msg_ring), else on the socket (tx_send); counts it in w's doorbell and
 * wakes the worker if it sleeps there. Returns tx_send's codes. */
static int send_to_worker(ppool *p, pworker *w, wire *h, const void *data,
                          size_t len, int pass_fd) {
  slot_shared *sh = &p->shared[w - p->workers];
  h->seq = w->out_seq;
  bool ringed = pass_fd < 0 && !tx_pending(w) && h->len == len &&
                ring_put(&sh->tasks, h, data);
  int rc = ringed ? 0 : tx_send(w, h, data, len, pass_fd);
  if (rc != 0)
    return rc;
  w->out_seq++;
  /* seq_cst, then the look at `asleep`: see next_input in the worker */
  atomic_fetch_add(&sh->sent, 1);
  wake_worker(sh);
  return 0;
}

/* A big task went to w: lend it a warm buffer (see cf__pp_warm_spare) to
 * write its next big result into, instead of fresh memory. Optional: no
 * idle buffer, or no room in the socket, and it goes without. */
static void lend_spare(ppool *p, pworker *w, size_t len) {
  (void)p;
  ino_t ino = 0;
  int fd = cf__pp_warm_spare(len, &ino);
  if (fd < 0)
    return;
  wire h = {.type = MSG_SPARE, .flags = FLAG_SPARE};
  if (send_to_worker(p, w, &h, NULL, 0, fd) == 0)
    w->spare = ino;
  else
    cf__pp_warm_release(ino); /* a failed send leaves w as it was */
}

static void worker_lost(ppool *p, pworker *w) {
  pthread_mutex_lock(&p->fd_mu);
  if (w->fd >= 0)
    close(w->fd);
  w->fd = -1;
  pthread_mutex_unlock(&p->fd_mu);
  rx_reset(w);
  tx_reset(w);
  if (w->last_mfd >= 0)
    close(w->last_mfd);
  w->last_mfd = -1;
  w->state = W_DEAD; /* the task waits for the exit report */
}

/* w broke the protocol: it is killed (not reaped before its exit report:
 * its pid is not reused meanwhile); a task it had started fails with the
 * cause. */
static void worker_fault(ppool *p, pworker *w, const char *fault) {
  w->fault = fault;
  worker_lost(p, w);
  if (!w->reaped)
    kill(w->pid, SIGKILL);
}

static void on_worker_ready(ppool *p, pworker *w, bool polled);

/* Chunk t's worker (in `slot`) died while running it: completes the items
 * it finished, from its result area, and returns their count k (item k,
 * if any, was running; the later ones never started). If the area cannot
 * be read here, the finished items fail: they ran, and must not run
 * again. */
static size_t chunk_salvage(ppool *p, size_t slot, ptask *t) {
  pworker *w = &p->workers[slot];
  /* pairs with the worker's release stores (see slot_shared): what it
   * wrote to the area before counting an item is there */
  uint64_t k =
      atomic_load_explicit(&p->shared[slot].chunk_done, memory_order_acquire);
  if (k > t->count)
    k = t->count; /* only a task scribbling on shared memory does this */
  if (k == 0)
    return 0;
  struct stat st;
  void *res = MAP_FAILED;
  if (w->area_fd >= 0 && fstat(w->area_fd, &st) == 0 && st.st_size > 0)
    res = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, w->area_fd, 0);
  /* The finished items' records and data, copied out of the area (which
   * the next worker of the slot will reuse): a segment of the chunk. */
  size_t len = res == MAP_FAILED ? 0 : (size_t)st.st_size;
  size_t end = t->count * sizeof(cf__item_result);
  for (size_t i = 0; i < k && end <= len; i++) {
    cf__item_result r;
    memcpy(&r, (char *)res + i * sizeof r, sizeof r);
    uint64_t span = cf__item_span(t->kind == KIND_CHUNK_BYTES, &r);
    end = span <= len - end ? end + (size_t)span : len + 1;
  }
  if (end > len)
    end = len; /* the reader finds the records that overrun */
  char *copy = res == MAP_FAILED ? NULL : malloc(end ? end : 1);
  if (!copy) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "worker %d died after this item finished, and its result "
             "could not be read (%s)",
             w->pid, res == MAP_FAILED ? strerror(errno) : "no memory");
    chunk_fail(t, t->base, (size_t)k, CF_EBROKEN, msg);
  } else {
    memcpy(copy, res, end);
    cf__chunk_seg s = {.first = t->base,
                       .count = (size_t)k,
                       .table_n = t->count,
                       .buf = copy,
                       .len = end};
    chunk_add(t, &s);
  }
  if (res != MAP_FAILED)
    munmap(res, (size_t)st.st_size);
  return (size_t)k;
}

/* A new task for t's items [from, count), filling the same chunk, for the
 * queue; NULL if there is no memory (then they fail: never lost). */
static ptask *chunk_rest(ptask *t, size_t from) {
  size_t n = t->count - from;
  uint64_t sz; /* the item size, from the chunk's header (see submit_chunk) */
  memcpy(&sz, (const char *)t->data + 8, 8);
  size_t size = (size_t)sz;
  ptask *r = calloc(1, sizeof *r);
  char *data = malloc(16 + n * size);
  if (!r || !data) {
    free(r);
    free(data);
    chunk_fail(t, t->base + from, n, CF_ENOMEM,
               "no memory to queue again the items of a chunk after its "
               "worker died (they had not started)");
    return NULL;
  }
  uint64_t c = n;
  memcpy(data, &c, 8);
  memcpy(data + 8, &sz, 8);
  memcpy(data + 16, (const char *)t->data + 16 + from * size, n * size);
  *r = (ptask){.kind = t->kind,
               .fn = t->fn,
               .f = cf_future_ref(t->f),
               .acc = t->acc,
               .base = t->base + from,
               .count = n,
               .data = data,
               .len = 16 + n * size,
               .mfd = -1,
               .destroy = t->destroy};
  t->acc->pool_refs++;
  return r;
}

static void on_exit_report(ppool *p, pid_t pid, int status) {
  for (size_t i = 0; i < p->n; i++) {
    pworker *w = &p->workers[i];
    if (w->pid != pid || w->state == W_NONE)
      continue;
    /* The report can overtake results still unread in the worker's socket:
     * take what is there first (the process is gone: it has sent all it
     * will). End-of-file is not awaited: a process the task forked may
     * hold the socket open long after. */
    w->reaped = true; /* whatever it sent, it is not to be killed now */
    on_worker_ready(p, w, true);
    if (w->fd >= 0)
      worker_lost(p, w);
    /* Every result it sent has been read: the oldest task left ran iff the
     * worker started more tasks than it answered (see slot_shared). */
    uint64_t started =
        atomic_load_explicit(&p->shared[i].started, memory_order_relaxed);
    char how[96];
    describe_death(status, how, sizeof how);
    ptask *rest = NULL;
    if (w->qn && started > w->done) {
      ptask *t = inflight_pop(w);
      char why[256];
      int code = w->timed_out ? CF_ETIMEDOUT : CF_EBROKEN;
      if (w->timed_out)
        snprintf(why, sizeof why,
                 "worker %d ran past the task timeout and was killed", pid);
      else if (w->fault)
        snprintf(why, sizeof why,
                 "worker %d sent %s while running the task (protocol "
                 "error) and was killed",
                 pid, w->fault);
      else
        snprintf(why, sizeof why, "worker %d %s while running the task", pid,
                 how);
      if (t->acc) {
        /* Item by item: those that finished keep their outcomes, the one
         * running fails, the others go back to the queue. */
        size_t k = chunk_salvage(p, i, t);
        if (k < t->count)
          chunk_fail(t, t->base + k, 1, code, why);
        if (k + 1 < t->count)
          rest = chunk_rest(t, k + 1);
        cf__pp_task_free(t);
      } else {
        fail_task(t, code, "%s", why);
      }
    }
    pthread_mutex_lock(&p->fd_mu);
    if (w->area_fd >= 0)
      close(w->area_fd);
    w->area_fd = -1;
    pthread_mutex_unlock(&p->fd_mu);
    requeue_front(p, w, rest); /* the rest never started */
    if (w->spare) {            /* lent, not returned: it died with it */
      cf__pp_warm_release(w->spare);
      w->spare = 0;
    }
    bool early = started == 0 && !w->timed_out && !w->fault;
    w->state = W_NONE;
    w->fault = NULL;
    w->started = false;
    w->deadline = 0;
    w->timed_out = false;
    pthread_mutex_lock(&p->mu);
    bool was_broken = p->broken;
    pthread_mutex_unlock(&p->mu);
    if (early && !was_broken && ++p->early_deaths >= EARLY_DEATHS_MAX) {
      /* Workers die before they can start anything (the initializer
       * crashes?): replacing them for ever would requeue the tasks for
       * ever. */
      char why[200];
      snprintf(why, sizeof why,
               "the pool is broken: %u workers in a row died before "
               "starting a task (the last one %s)",
               p->early_deaths, how);
      break_pool(p, why);
    }
    /* W_NONE: the manager's loop asks for a replacement (unless the pool
     * is broken), even while shutting down: queued tasks still need a
     * worker (the manager stops once nothing is left). */
    return;
  }
}

static uint64_t task_deadline(const ppool *p) {
  return p->o.task_timeout_s > 0
             ? cf__now_ns() + (uint64_t)(p->o.task_timeout_s * 1e9)
             : 0;
}

/* How many tasks worker w may hold: the pipeline depth, one with a task
 * timeout, and never more than its max_tasks_per_child quota left. */
static unsigned depth_for(const ppool *p, const pworker *w) {
  size_t d = p->o.task_timeout_s > 0             ? 1
             : w->task_ns_avg < SHORT_TASK_NS ? PIPE_DEPTH
                                              : PIPE_DEPTH_LONG;
  if (p->o.max_tasks_per_child) {
    size_t left = p->o.max_tasks_per_child - w->done;
    if (left < d)
      d = left;
  }
  return (unsigned)d;
}

/* Hands pending tasks out breadth first: every worker gets a task to run
 * before any gets one to keep ready, and tasks are kept ready only when
 * there is a backlog: a worker's k-th task only while at least k - 1
 * pending tasks per worker wait besides, so that a lone task never waits
 * behind a long one while a worker is free, and a deep queue ahead of a
 * worker only forms when every worker has as deep a one to come. */
static void dispatch(ppool *p) {
  for (unsigned level = 1; level <= PIPE_DEPTH; level++) {
    if (level > 1) {
      pthread_mutex_lock(&p->mu);
      bool backlog = p->npending >= p->n * (level - 1);
      pthread_mutex_unlock(&p->mu);
      if (!backlog)
        return;
    }
    for (size_t i = 0; i < p->n; i++) {
      pworker *w = &p->workers[i];
      if (w->state != W_LIVE || w->qn >= level || w->qn >= depth_for(p, w) ||
          tx_pending(w))
        continue;
      ptask *t = pop_pending(p);
      if (!t)
        return;
      /* A task put back by a dead worker is RUNNING already. */
      int run = cf__future_set_running(t->f);
      if (run != 0 && !(run == CF_EINVALSTATE && cf_future_running(t->f))) {
        cf__pp_task_free(t); /* cancelled while pending */
        i--; /* this worker still wants one (wraps to 0: fine) */
        continue;
      }
      wire h = {.type = MSG_TASK, .kind = t->kind, .fn = t->fn, .len = t->len};
      int src, mfd = t->mfd;
      if (mfd < 0 && t->len >= BIG_PAYLOAD &&
          (mfd = cf__pp_payload_memfd(t->data, t->len)) < 0) {
        /* Out of descriptors or memory here (EMFILE, ENOMEM): the task
         * fails with the cause; the worker, which got nothing, stays. */
        fail_task(t, CF_ESYS,
                  "the task's input could not be passed to a worker "
                  "(memfd_create: %s)",
                  strerror(errno));
        i--; /* this worker still wants one (wraps to 0: fine) */
        continue;
      }
      if (mfd >= 0)
        h.flags = FLAG_MAPPED;
      src = send_to_worker(p, w, &h, mfd >= 0 ? NULL : t->data,
                           mfd >= 0 ? 0 : t->len, mfd);
      if (mfd >= 0 && mfd != t->mfd)
        close(mfd);
      if (src == 0 && h.flags == FLAG_MAPPED && !w->spare && !tx_pending(w))
        lend_spare(p, w, t->len);
      if (src == SEND_LOCAL) {
        fail_task(t, CF_ENOMEM,
                  "the task could not be sent to a worker "
                  "(no memory or descriptor to keep it: %s)",
                  strerror(errno));
        i--; /* this worker still wants one (wraps to 0: fine) */
        continue;
      }
      w->q[(w->qh + w->qn) % PIPE_DEPTH] = t;
      w->qn++;
      /* It hung up: its exit report settles its tasks (requeued, as it
       * started none of those it had not read). */
      if (src)
        worker_lost(p, w);
    }
  }
}

/* Handles a frame from w (rc: rx_take's 0 or RECV_LOCAL, with err). */
static void on_worker_msg(ppool *p, pworker *w, int rc, wire *r, void *payload,
                          int err) {
  /* A message of no known type, a result for no task, a start reported
   * twice: the worker is not to be trusted (a task scribbled on its
   * socket?). It is killed; a task it had started fails with the cause. */
  const char *fault =
      r->type != MSG_STARTED && r->type != MSG_RESULT &&
              r->type != MSG_INIT_FAILED
          ? "a message of unknown type"
      : r->type == MSG_RESULT && w->qn == 0 ? "a result for no task"
      : r->type == MSG_STARTED &&
              (w->qn == 0 || w->started || p->o.task_timeout_s <= 0)
          ? "a start report for no task"
          : NULL;
  if (fault || (rc == RECV_LOCAL && r->type != MSG_RESULT)) {
    if (rc == 0)
      cf__pp_payload_free(r, payload);
    worker_fault(p, w, fault ? fault : "an unexpected payload");
    return;
  }
  if (rc == RECV_LOCAL) {
    /* The result reached us but could not be taken in (no descriptor
     * slot, no memory): the task fails with the cause, the worker is fine
     * and stays. */
    ptask *t = inflight_pop(w);
    w->done++;
    w->started = false;
    w->deadline = 0;
    p->early_deaths = 0;
    if (p->o.max_tasks_per_child && w->done >= p->o.max_tasks_per_child)
      w->state = W_DEAD;
    fail_task(t, err == ENOMEM ? CF_ENOMEM : CF_ESYS,
              "the task's result could not be received from worker %d (%s)",
              w->pid, strerror(err));
    return;
  }
  if (r->type == MSG_STARTED) {
    cf__pp_payload_free(r, payload);
    w->started = true;
    w->deadline = task_deadline(p);
    return;
  }
  if (r->type == MSG_INIT_FAILED) {
    break_pool(p, "the pool's initializer failed in a worker");
    cf__pp_payload_free(r, payload);
    return;
  }
  /* How long its tasks take (see PIPE_DEPTH): the time since its last
   * result, if this task was already in its hands then (it went from one
   * to the other without waiting for the manager). */
  uint64_t now = cf__now_ns();
  if (w->next_in_hand) {
    uint64_t took = now - w->last_result_ns;
    w->task_ns_avg = w->task_ns_avg == UINT64_MAX
                         ? took
                         : (7 * w->task_ns_avg + took) / 8;
  }
  w->next_in_hand = w->qn >= 2; /* this one's successor is sent */
  w->last_result_ns = now;
  ptask *t = inflight_pop(w);
  w->done++;
  w->started = false; /* the next one reports its own start */
  w->deadline = 0;
  p->early_deaths = 0;
  /* A worker that reached max_tasks_per_child exits on its own: wait for
   * its exit report (which brings the replacement) instead of feeding it. */
  if (p->o.max_tasks_per_child && w->done >= p->o.max_tasks_per_child)
    w->state = W_DEAD;
  /* the spare it was lent may come back with the result: the result's
   * now (its buffer_free gives it back) */
  struct stat st;
  bool spare = w->spare && w->last_mfd >= 0 && fstat(w->last_mfd, &st) == 0 &&
               st.st_ino == w->spare;
  complete_task(t, r, payload, &w->last_mfd);
  if (spare && w->last_mfd < 0)
    w->spare = 0;
}

/* Takes w's next message (wire.seq: w->next_seq) from its result ring
 * into *h and *data (a malloc'd copy of the payload, or NULL): 0, or
 * RX_MORE if the ring's oldest entry is not that message (or there is
 * none), or RECV_BAD (*bad says what) for an entry no worker of ours
 * writes; RECV_LOCAL (*err) when there is no memory for the payload (the
 * entry is skipped). */
static int ring_take(ppool *p, pworker *w, wire *h, void **data, int *err,
                     const char **bad) {
  msg_ring *r = &p->shared[w - p->workers].results;
  const char *src;
  int k = ring_peek(r, w->next_seq, h, &src, bad);
  if (k <= 0)
    return k < 0 ? RECV_BAD : RX_MORE;
  int rc = 0;
  *data = NULL;
  if (h->len && !(*data = malloc(h->len))) {
    *err = ENOMEM;
    rc = RECV_LOCAL;
  } else if (h->len) {
    memcpy(*data, src, h->len);
  }
  ring_pop(r);
  w->next_seq++;
  return rc;
}

/* Where w's next message is, by its number: in the ring, or as the next
 * frame in the rx buffer. Returns
 * ring_take's or rx_take's outcome; RX_MORE when neither holds it yet. */
static int next_msg(ppool *p, pworker *w, wire *h, void **data, int *err,
                    const char **bad) {
  static const uint32_t magic = WIRE_MAGIC;
  for (;;) {
    /* Bytes that are no frame, read from the socket: the ring's entries
     * published before that read came before them (a worker puts nothing
     * in the ring while bytes wait unread on its socket: see
     * socket_drained), later ones maybe not (the task that wrote the
     * bytes, answering after they were read): the fault comes first. */
    size_t have = w->rx_len - w->rx_off;
    if (have &&
        memcmp(w->rx + w->rx_off, &magic, have < 4 ? have : 4) != 0 &&
        atomic_load_explicit(&p->shared[w - p->workers].results.head,
                             memory_order_relaxed) >= w->ring_mark) {
      *bad = "bytes that are not a message (no magic number)";
      return RECV_BAD;
    }
    int rc = ring_take(p, w, h, data, err, bad);
    if (rc != RX_MORE)
      return rc;
    if (have == 0)
      return RX_MORE;
    if (have >= sizeof *h) {
      wire peek;
      memcpy(&peek, w->rx + w->rx_off, sizeof peek);
      if (peek.magic == WIRE_MAGIC && peek.seq != w->next_seq) {
        /* A frame sent after the message due: that one was in the ring
         * before this frame was sent, so the ring shows it now. */
        rc = ring_take(p, w, h, data, err, bad);
        if (rc == RX_MORE) {
          *bad = "messages out of order";
          return RECV_BAD;
        }
        return rc;
      }
    }
    rc = rx_take(w, h, data, err, bad);
    if (rc == 0 || rc == RECV_LOCAL)
      w->next_seq++;
    return rc;
  }
}

/* Handles every message w has sent, without waiting: those in its result
 * ring, and those on its socket, read as far as they have arrived (a
 * task's result often follows its STARTED report at once: it is read in
 * the same turn). A worker that sends what is not a message is killed as
 * a protocol error. `polled`: poll reported the socket readable (or the
 * worker is gone: whatever it sent is there), so it is read at least
 * once; otherwise it is read only while w's doorbell announces messages
 * not yet handled that the ring does not hold. */
static void on_worker_ready(ppool *p, pworker *w, bool polled) {
  const _Atomic uint64_t *posted = &p->shared[w - p->workers].posted;
  bool did_read = !polled;
  while (!w->fault) {
    wire r;
    void *payload;
    int err = 0;
    const char *bad = NULL;
    int rc = next_msg(p, w, &r, &payload, &err, &bad);
    if (rc == RECV_BAD) {
      worker_fault(p, w, bad);
      return;
    }
    if (rc != RX_MORE) {
      w->heard++;
      w->phantoms = 0;
      on_worker_msg(p, w, rc, &r, payload, err);
      if (w->last_mfd >= 0) { /* not taken by a result */
        close(w->last_mfd);
        w->last_mfd = -1;
      }
      continue;
    }
    if (w->fd < 0)
      return;
    /* Every message the worker has announced is handled: a read now would
     * find nothing (a system call for EAGAIN). Not before the first read
     * when polled, though: poll's POLLIN may be for bytes no doorbell
     * announces (end of file, or bytes a task wrote on the socket). */
    if (did_read && w->rx_off == w->rx_len &&
        atomic_load_explicit(posted, memory_order_acquire) <= w->heard)
      return;
    did_read = true;
    /* the ring's entries so far came before what this read brings */
    w->ring_mark = atomic_load_explicit(
        &p->shared[w - p->workers].results.tail, memory_order_acquire);
    int n = rx_fill(w);
    if (n == RX_AGAIN) {
      /* A doorbell announces a message, and neither the ring nor the
       * socket has it: once may be a message posted just now; twice in a
       * row, with nothing heard between, is a worker (or a task of it)
       * writing over the shared memory. Left alone, the manager would
       * look for it for ever. */
      if (w->rx_off == w->rx_len &&
          atomic_load_explicit(posted, memory_order_acquire) > w->heard &&
          ++w->phantoms >= 2)
        worker_fault(p, w, "a doorbell rung for no message");
      return;
    }
    if (n == RECV_BAD) {
      worker_fault(p, w, "descriptors that belong to no message");
      return;
    }
    if (n == RECV_LOCAL) {
      /* No memory for its frame: the worker cannot be heard; the task it
       * runs fails when it is killed (as for a protocol error). */
      worker_fault(p, w, "a message the manager had no memory for");
      return;
    }
    if (n == 0) {
      worker_lost(p, w); /* it hung up; its exit report settles its tasks */
      return;
    }
  }
}

/* The fork server could not fork w's process (err: errno): asked again
 * after the backoff. */
static void fork_failed(ppool *p, pworker *w, int err) {
  w->state = W_NONE;
  uint64_t now = cf__now_ns();
  if (!p->failing_since)
    p->failing_since = now;
  p->fork_errno = err;
  p->backoff_ns = p->backoff_ns ? 2 * p->backoff_ns : FORK_BACKOFF_MIN_NS;
  if (p->backoff_ns > FORK_BACKOFF_MAX_NS)
    p->backoff_ns = FORK_BACKOFF_MAX_NS;
  p->spawn_at = now + p->backoff_ns;
}

/* With no live worker after FORK_GIVE_UP_NS of failed forks, the waiting
 * tasks fail (and those submitted while it lasts): nothing can run them.
 * Forks are still retried; one that works ends this. */
static void give_up_forking(ppool *p) {
  if (!p->failing_since || cf__now_ns() - p->failing_since < FORK_GIVE_UP_NS)
    return;
  for (size_t i = 0; i < p->n; i++)
    if (p->workers[i].state == W_LIVE)
      return;
  char why[200];
  snprintf(why, sizeof why,
           "fork of a worker failed: %s (no worker could be started for "
           "%.0f s)",
           strerror(p->fork_errno), (double)FORK_GIVE_UP_NS / 1e9);
  fail_pending(p, CF_ESYS, why);
}

static bool all_quiet(ppool *p) {
  for (size_t i = 0; i < p->n; i++)
    if (p->workers[i].qn)
      return false;
  return true;
}

/* ---- the drive (see ppool.drive) ----------------------------------------- */

/* The pool this thread drives (as the manager thread or as a driver), or
 * NULL: a done-callback run meanwhile must not drive it again. */
static _Thread_local ppool *driving;

bool cf__pp_driving(const ppool *p) {
  return driving == p;
}

/* Takes the drive if it is free: true. seq_cst: a submitter's push and its
 * try, against a holder's release and its look at `pushes` (see
 * drive_leave), form a Dekker pair. */
static bool drive_try(ppool *p) {
  uint32_t free_ = 0;
  return atomic_compare_exchange_strong(&p->drive, &free_, 1);
}

/* Takes the drive, blocking while a driver has it (the manager thread). */
static void drive_lock(ppool *p) {
  uint32_t c = 0;
  if (atomic_compare_exchange_strong(&p->drive, &c, 1))
    return;
  if (c != 2)
    c = atomic_exchange(&p->drive, 2);
  while (c != 0) {
    cf__futex_wait(&p->drive, 2, NULL, false);
    c = atomic_exchange(&p->drive, 2);
  }
}

static void drive_unlock(ppool *p) {
  if (atomic_exchange(&p->drive, 0) == 2)
    cf__futex_wake(&p->drive, 1, false);
}

/* The manager thread's poll set (fds, their events) and its timeout (as
 * an instant, wake_at; 0: none), for the state of the workers table now:
 * filled into fds and slot_of if they are not NULL. Returns a digest of
 * it, which a driver compares with the one the manager thread sleeps on
 * (ppool.poll_sig). */
static uint64_t poll_plan(ppool *p, uint64_t now, struct pollfd *fds,
                          size_t *slot_of, size_t *nf_out, uint64_t *wake_at) {
  size_t nf = 0;
  uint64_t sig = 1469598103934665603ull, at = 0;
#define PLAN(fd_, ev_, slot_)                                                  \
  do {                                                                         \
    if (fds) {                                                                 \
      fds[nf] = (struct pollfd){.fd = (fd_), .events = (short)(ev_)};          \
      slot_of[nf] = (slot_);                                                   \
    }                                                                          \
    nf++;                                                                      \
    sig = (sig ^ ((uint64_t)(uint32_t)(fd_) << 16 ^ (uint64_t)(ev_))) *        \
          1099511628211ull;                                                    \
  } while (0)
  PLAN(p->wake_fd, POLLIN, 0);
  /* Room in the server's queue matters only to ask for a worker, which a
   * broken pool never does, nor one waiting to retry a failed fork:
   * polling for POLLOUT then would spin. */
  pthread_mutex_lock(&p->mu);
  bool broken = p->broken;
  bool ending = p->shutdown && p->head == NULL;
  pthread_mutex_unlock(&p->mu);
  /* The manager thread's way out (see cf__pp_manager_main): a driver that
   * reads the last result of a pool shut down, while the manager thread
   * sleeps, wakes it to end. */
  if (ending && all_quiet(p))
    sig = (sig ^ 0xe7d) * 1099511628211ull;
  bool want_spawn = false;
  for (size_t i = 0; i < p->n && !broken; i++)
    want_spawn |= p->workers[i].state == W_NONE;
  if (want_spawn && now < p->spawn_at) {
    want_spawn = false;
    at = p->spawn_at;
  }
  PLAN(p->ctl_fd, POLLIN | (want_spawn ? POLLOUT : 0), 0);
  for (size_t i = 0; i < p->n; i++) {
    pworker *w = &p->workers[i];
    if (w->fd >= 0 && w->state != W_NONE)
      PLAN(w->fd, POLLIN | (tx_pending(w) ? POLLOUT : 0), i);
    if (w->qn && w->deadline && !w->timed_out && (!at || w->deadline < at))
      at = w->deadline;
  }
#undef PLAN
  if (nf_out)
    *nf_out = nf;
  *wake_at = at;
  return (sig ^ at) * 1099511628211ull;
}

/* Kills the workers whose task ran past its timeout. */
static void enforce_timeouts(ppool *p, uint64_t now) {
  for (size_t i = 0; i < p->n; i++) {
    pworker *w = &p->workers[i];
    if (w->qn && w->deadline && !w->timed_out && now >= w->deadline) {
      /* The task may have ended and its result be on its way: it is
       * still read and counts. But the worker gets nothing more (it
       * would die with it): its exit report brings a replacement. */
      w->timed_out = true;
      w->state = W_DEAD;
      kill(w->pid, SIGKILL);
    }
  }
}

/* w's doorbell is answered by reading its ring and socket: it is live (or
 * dying: its results still count), and neither hung up nor faulted (then
 * its exit report drains what it left: see on_exit_report). */
static bool listening(const pworker *w) {
  return (w->state == W_LIVE || w->state == W_DEAD) && w->fd >= 0 &&
         !w->fault;
}

/* Handles what the workers have posted and not yet been heard (their
 * doorbells: see slot_shared), without reading a socket the doorbells
 * say nothing more is on. True if a message was handled. */
static bool hear_workers(ppool *p) {
  bool any = false;
  for (size_t i = 0; i < p->n; i++) {
    pworker *w = &p->workers[i];
    if (!listening(w) ||
        atomic_load_explicit(&p->shared[i].posted, memory_order_acquire) <=
            w->heard)
      continue;
    uint64_t before = w->heard;
    on_worker_ready(p, w, false);
    any |= w->heard != before;
  }
  return any;
}

/* A worker has posted a message not yet heard. seq_cst loads: see
 * drive_leave. */
static bool unheard(ppool *p) {
  for (size_t i = 0; i < p->n; i++) {
    pworker *w = &p->workers[i];
    if (listening(w) && atomic_load(&p->shared[i].posted) > w->heard)
      return true;
  }
  return false;
}

/* A driver gives the drive back: to nobody watching the doorbells (the
 * manager thread sleeps in poll, or is about to take the drive and look
 * itself), so the workers ring from now on; a message posted before they
 * could see that is handled here (`hear`: a waiting driver), or left to
 * the manager thread, rung once as a worker would (a submitting one:
 * results, and their done-callbacks, are no business of cf_submit). The
 * manager thread's poll set is rebuilt if the driver changed it (a worker
 * with bytes to flush, a task timeout started). A task pushed since
 * `seen` (the count of pushes read before the driver's last dispatch)
 * whose submitter found the drive held is dispatched here. When the
 * manager thread waits for the drive (an exit report, a timeout), it is
 * given over at once: it looks at everything itself. */
static void drive_leave(ppool *p, uint64_t seen, bool hear) {
  for (;;) {
    /* seq_cst, against the workers' posted increment and their look at
     * bell_wanted: either this sees the message, or the worker rings. */
    atomic_store(&p->region->bell_wanted, 1);
    bool wanted = atomic_load_explicit(&p->drive, memory_order_relaxed) == 2;
    if (!wanted && unheard(p)) {
      if (hear && hear_workers(p)) {
        seen = atomic_load(&p->pushes);
        dispatch(p);
        continue;
      }
      /* for the manager thread (also when hearing found nothing) */
      if (!atomic_exchange(&p->region->bell_rung, 1))
        cf__pp_ring(p);
    }
    if (!wanted && atomic_load(&p->pushes) != seen) {
      seen = atomic_load(&p->pushes);
      dispatch(p);
      continue;
    }
    uint64_t wake_at;
    if (!wanted &&
        poll_plan(p, cf__now_ns(), NULL, NULL, NULL, &wake_at) != p->poll_sig)
      cf__pp_ring(p);
    drive_unlock(p);
    /* seq_cst, against a submitter's push then try (see drive_try): a
     * submitter that found the drive held is seen here */
    if (atomic_load(&p->pushes) == seen || !drive_try(p))
      return;
    seen = atomic_load(&p->pushes);
    dispatch(p);
  }
}

void cf__pp_drive_submit(ppool *p) {
  if (driving == p)
    return; /* this thread holds p's drive: drive_leave dispatches it */
  if (driving) { /* driving another pool (a callback): p's manager must look */
    cf__pp_ring(p);
    return;
  }
  if (!drive_try(p))
    return; /* its holder dispatches the task (see drive_leave) */
  driving = p;
  uint64_t seen = atomic_load(&p->pushes);
  dispatch(p);
  drive_leave(p, seen, false);
  driving = NULL;
}

int cf__pp_drive_wait(ppool *p, cf_future *f, const cf_deadline *d) {
  if (driving || !drive_try(p))
    return CF_EBUSY;
  driving = p;
  /* This thread watches the doorbells now: the workers need not ring. */
  atomic_store_explicit(&p->region->bell_wanted, 0, memory_order_relaxed);
  int rc = CF_EBUSY;
  uint64_t pushes = atomic_load(&p->pushes);
  uint64_t quiet = cf__now_ns(); /* since then no news; 0: news, restart */
  dispatch(p);
  for (unsigned i = 1;; i++) {
    if (cf_future_done(f)) {
      rc = 0;
      break;
    }
    uint64_t pu = atomic_load_explicit(&p->pushes, memory_order_relaxed);
    if (hear_workers(p) || pu != pushes) {
      pushes = pu;
      dispatch(p);
      quiet = 0;
    }
    if ((i & 63) == 0) {
      uint64_t now = cf__now_ns();
      if (!quiet)
        quiet = now;
      if (now - quiet > SPIN_NS)
        break; /* a long task: the manager thread takes over */
      /* The manager thread waits for the drive: a worker's exit report or
       * a task timeout only it handles. Never held up by a busy pool. */
      if (atomic_load_explicit(&p->drive, memory_order_relaxed) == 2)
        break;
      if (cf__deadline_passed(d)) {
        rc = CF_ETIMEDOUT;
        break;
      }
      if (now - quiet > SPIN_YIELD_NS)
        sched_yield(); /* see pp_spin_until */
    }
    cf__cpu_relax();
  }
  drive_leave(p, pushes, true);
  driving = NULL;
  return cf_future_done(f) ? 0 : rc;
}

/* Something for the manager: a message, or a push since spin_pushes. */
static bool news(void *arg) {
  ppool *p = arg;
  return unheard(p) || atomic_load(&p->pushes) != p->spin_pushes;
}

void *cf__pp_manager_main(void *arg) {
  ppool *p = arg;
  struct pollfd *fds = p->pfds;
  size_t *slot_of = p->slot_of;
  driving = p; /* it holds the drive from the start (see ppool.drive) */
  int start_rc = cf__pp_start_server(p);
  int start_errno = errno;
  pthread_mutex_lock(&p->mu);
  p->start_errno = start_errno;
  p->manager_self = pthread_self();
  p->start_rc = start_rc;
  p->started = true;
  pthread_cond_signal(&p->started_cv);
  pthread_mutex_unlock(&p->mu);
  if (start_rc != 0)
    return NULL;
  for (size_t i = 0; i < p->n; i++)
    spawn(p, i); /* the first workers */
  for (;;) {
    pthread_mutex_lock(&p->mu);
    bool broken = p->broken;
    pthread_mutex_unlock(&p->mu);
    /* Tasks put back by a worker that died after the pool broke (sent to
     * it before) fail with the same cause. */
    if (broken)
      fail_pending(p, CF_EBROKEN, p->broken_why);
    else
      give_up_forking(p);
    /* tasks pushed after this are seen by the spin or the poll below */
    uint64_t pushes = atomic_load(&p->pushes);
    dispatch(p);
    /* Checked after dispatch, which may have dropped the last pending
     * (cancelled) task: nothing would wake us for that. */
    pthread_mutex_lock(&p->mu);
    bool done = p->shutdown && p->head == NULL;
    pthread_mutex_unlock(&p->mu);
    if (done && all_quiet(p))
      break; /* keeping the drive: nobody drives a pool that is gone */
    uint64_t now = cf__now_ns();
    enforce_timeouts(p, now);
    /* With tasks in flight, answers come soon: look for a while first,
     * at the workers' doorbells and at new pushes (memory, no system
     * call), then block in poll. */
    bool moved = false;
    if (!all_quiet(p)) {
      p->spin_pushes = pushes;
      moved = pp_spin_until(news, p, SPIN_NS);
      if (moved)
        hear_workers(p); /* and a poll that does not wait, below: the
                          * fork server's reports must not wait */
    }
    size_t nf;
    uint64_t wake_at;
    now = cf__now_ns();
    p->poll_sig = poll_plan(p, now, fds, slot_of, &nf, &wake_at);
    int timeout_ms =
        !wake_at ? -1
        : wake_at <= now
            ? 0
            : (int)((wake_at - now) / 1000000 > 86400000
                        ? 86400000
                        : (wake_at - now) / 1000000 + 1);
    /* Nobody watches the doorbells from here: the workers ring; drivers
     * may take the drive while this thread sleeps (see ppool.drive). */
    atomic_store(&p->region->bell_wanted, 1);
    if (unheard(p) || moved)
      timeout_ms = 0;
    drive_unlock(p);
    driving = NULL;
    /* a push since dispatch whose submitter found the drive held: go
     * round again (see drive_leave) */
    if (atomic_load(&p->pushes) != pushes)
      timeout_ms = 0;
    int prc = poll(fds, nf, timeout_ms);
    int poll_errno = errno;
    drive_lock(p);
    driving = p;
    atomic_store_explicit(&p->region->bell_wanted, 0, memory_order_relaxed);
    if (prc < 0 && poll_errno != EINTR)
      break;
    if (fds[0].revents & POLLIN) {
      uint64_t v;
      ssize_t r = read(p->wake_fd, &v, sizeof v);
      (void)r;
    }
    /* After the eventfd is read (a bell rung before this must not be
     * read away with bell_rung left set: the next bell would never
     * come), before the rings are (hear_workers below): a worker that
     * posts after this and sees bell_wanted rings again. seq_cst. */
    atomic_store(&p->region->bell_rung, 0);
    for (size_t k = 2; k < nf; k++) {
      pworker *w = &p->workers[slot_of[k]];
      if ((fds[k].revents & POLLOUT) && w->fd >= 0 && tx_flush(w) != 0)
        worker_lost(p, w);
      if (w->fd >= 0 && (fds[k].revents & (POLLIN | POLLHUP | POLLERR)))
        on_worker_ready(p, w, true);
    }
    hear_workers(p); /* messages in the rings (their bells were read) */
    /* Drain every message from the fork server (it blocks on a full
     * queue, so the queue must not stay full). */
    bool server_gone = false;
    while (!server_gone && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ctl c;
      int fd[2];
      /* A worker's socket and result area may come with it: recorded
       * before a fork. */
      pthread_mutex_lock(&p->fd_mu);
      ssize_t r = cf__pp_recv_ctl(p->ctl_fd, &c, fd, MSG_DONTWAIT);
      bool keep = r > 0 && fd[0] >= 0 && fd[1] >= 0 && c.op == CTL_SPAWNED &&
                  c.slot < p->n && c.pid > 0;
      if (keep) {
        p->workers[c.slot].fd = fd[0];
        p->workers[c.slot].area_fd = fd[1];
      } else {
        for (int k = 0; k < 2; k++)
          if (fd[k] >= 0)
            close(fd[k]);
      }
      pthread_mutex_unlock(&p->fd_mu);
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        break;
      if (r <= 0) {
        server_gone = true;
        break;
      }
      if (c.op == CTL_SPAWNED && c.slot < p->n) {
        pworker *w = &p->workers[c.slot];
        if (keep) {
          w->pid = c.pid;
          w->done = 0;
          w->heard = 0; /* the server reset its doorbells and ring */
          w->next_seq = w->out_seq = 1;
          w->ring_mark = 0;
          w->phantoms = 0;
          w->task_ns_avg = UINT64_MAX; /* not known yet: see PIPE_DEPTH */
          w->next_in_hand = false;
          w->reaped = false;
          w->state = W_LIVE;
          p->failing_since = 0;
          p->backoff_ns = 0;
          p->spawn_at = 0;
        } else {
          fork_failed(p, w, c.status); /* retried below, after a delay */
        }
      } else if (c.op == CTL_EXITED) {
        on_exit_report(p, c.pid, c.status);
      }
    }
    if (server_gone) {
      /* The fork server is gone: nothing can run any more. */
      for (size_t i = 0; i < p->n; i++)
        while (p->workers[i].qn)
          fail_task(inflight_pop(&p->workers[i]), CF_EBROKEN,
                    "the fork server died");
      break_pool(p, "the fork server died");
      break;
    }
    pthread_mutex_lock(&p->mu);
    bool br = p->broken;
    pthread_mutex_unlock(&p->mu);
    bool due = cf__now_ns() >= p->spawn_at;
    for (size_t i = 0; i < p->n && !br && due; i++)
      if (p->workers[i].state == W_NONE)
        spawn(p, i);
  }
  /* Workers asleep on their doorbells exit (seq_cst, against their store
   * to `asleep` and their look at `closing`). */
  atomic_store(&p->region->closing, 1);
  for (size_t i = 0; i < p->n; i++)
    wake_worker(&p->shared[i]);
  /* Tear down: workers see end-of-file and exit; the server reaps them
   * and exits when we hang up. This thread reaps the server before it
   * ends (its end would SIGKILL the server: PR_SET_PDEATHSIG). */
  pthread_mutex_lock(&p->fd_mu);
  for (size_t i = 0; i < p->n; i++) {
    if (p->workers[i].fd >= 0) {
      close(p->workers[i].fd);
      p->workers[i].fd = -1;
    }
    if (p->workers[i].area_fd >= 0) {
      close(p->workers[i].area_fd);
      p->workers[i].area_fd = -1;
    }
    rx_reset(&p->workers[i]);
    tx_reset(&p->workers[i]);
    if (p->workers[i].last_mfd >= 0)
      close(p->workers[i].last_mfd);
    p->workers[i].last_mfd = -1;
    if (p->workers[i].spare) /* the workers exit now */
      cf__pp_warm_release(p->workers[i].spare);
    p->workers[i].spare = 0;
  }
  close(p->ctl_fd);
  p->ctl_fd = -1;
  pthread_mutex_unlock(&p->fd_mu);
  int st;
  while (waitpid(p->server, &st, 0) < 0 && errno == EINTR)
    ;
  return NULL;
}
