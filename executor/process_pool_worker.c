/* The process pool's worker process: runs tasks and chunks of map items
 * sent by the manager, reports each result. See process_pool_internal.h. */
#include <linux/sockios.h>
#include <malloc.h>
#include <sys/ioctl.h>

#include "executor/process_pool_internal.h"

#include "core/futex.h"

/* ---- the worker process -------------------------------------------------- */

/* In a fork server of CF_START_FORKSERVER and its workers: the region
 * (NULL elsewhere): a task's function is looked up through it. */
region_head *cf__pp_exec_region;

/* The address, in this worker, of the task function the manager sent as
 * `fn`: as is with CF_START_FORK; with the fork server, a reference to
 * resolve. 0 (cf_last_error set) when it cannot be found. */
uintptr_t cf__pp_task_fn(uint64_t fn) {
  if (!cf__pp_exec_region)
    return (uintptr_t)fn;
  uint32_t id = (uint32_t)(fn >> CF__FNREF_OFF_BITS);
  uintptr_t addr = 0;
  if (id <
      atomic_load_explicit(&cf__pp_exec_region->nobjs, memory_order_acquire))
    addr = cf__fnref_resolve(region_path(cf__pp_exec_region, id), fn);
  if (!addr)
    cf_fail(CF_ESYS, "the worker cannot find the task's function: %s",
            id < cf__pp_exec_region->nobjs ? cf_last_error()
                                           : "unknown object");
  return addr;
}

/* A worker's result area: a memfd made by the fork server for each worker,
 * which the manager holds too (it comes with the worker's socket). The
 * worker maps it (MAP_SHARED) and writes each chunk's results into it,
 * item by item, then sends them from there as the chunk's reply. Should
 * the worker die in a chunk, the manager maps the area and reads the
 * items that finished (slot_shared.chunk_done says how many): written
 * before each item's count, their outcomes survive the worker.
 *
 * Why not a message per item: a send per item would cost a syscall each
 * (a map moves ~2 M items/s here, far less than a syscall's worth each);
 * the area costs plain stores. The area grows to one chunk's results and
 * shrinks back after a chunk that made it larger than AREA_KEEP: memory
 * stays bounded by the largest chunk's reply, which the worker sent
 * anyway. */
#define AREA_MIN  (64 * 1024)
#define AREA_KEEP (1024 * 1024)

typedef struct area {
  int fd;
  char *base; /* mapped, cap bytes (the memfd's size); NULL: none yet */
  size_t cap;
} area;

/* Makes the area at least `need` bytes long; false if it cannot. */
static bool area_reserve(area *a, size_t need) {
  if (need <= a->cap)
    return true;
  size_t cap = a->cap ? a->cap : AREA_MIN;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : 2 * cap;
  if (ftruncate(a->fd, (off_t)cap) != 0)
    return false;
  void *b = a->base
                ? mremap(a->base, a->cap, cap, MREMAP_MAYMOVE)
                : mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0);
  if (b == MAP_FAILED)
    return false; /* the memfd stays longer than the mapping: harmless */
  a->base = b;
  a->cap = cap;
  return true;
}

/* After a chunk: an area grown past AREA_KEEP gives its memory back. */
static void area_trim(area *a) {
  if (a->cap <= AREA_KEEP)
    return;
  munmap(a->base, a->cap);
  a->base = NULL;
  a->cap = 0;
  if (ftruncate(a->fd, 0) != 0)
    _exit(0); /* cannot happen to a memfd we own; never leave it big */
}

/* This worker's slot (see slot_shared), for post. */
static slot_shared *my_slot;

/* A memfd the manager lent for the next big result (MSG_SPARE), mapped
 * (cf__pp_worker_map keeps the mapping), or fd -1. */
static struct {
  int fd;
  char *map;
  size_t cap;
} spare = {.fd = -1};

/* Done with the spare (used, or replaced): its mapping may go. */
static void spare_drop(void) {
  if (spare.fd < 0)
    return;
  close(spare.fd);
  if (!cf__pp_worker_unpin(spare.map)) /* mapped apart: see the cache */
    munmap(spare.map, spare.cap);
  spare.fd = -1;
}

static void spare_take(int fd) {
  spare_drop();
  struct stat st;
  void *m = MAP_FAILED;
  if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size > 0)
    m = cf__pp_worker_map(fd, &st, (size_t)st.st_size, true);
  if (m == MAP_FAILED) {
    if (fd >= 0)
      close(fd);
    return;
  }
  spare.fd = fd;
  spare.map = m;
  spare.cap = (size_t)st.st_size;
}

/* This worker's message numbers (wire.seq): the next one to post. */
static uint32_t next_seq = 1;
/* The pool's region (its bell_wanted, bell_rung and closing flags) and
 * the manager's eventfd, which wakes its poll. */
static region_head *region;
static int bell_fd = -1;

/* Nothing this worker's process wrote on its socket waits unread by the
 * manager. Else a message must follow it on the socket: bytes a task
 * wrote there (a protocol error, blamed on that task) must reach the
 * manager before the task's result does. */
static bool socket_drained(int sock) {
  int queued = 0;
  return ioctl(sock, SIOCOUTQ, &queued) == 0 && queued == 0;
}

/* Sends a message, then rings the manager's doorbell (slot_shared.posted):
 * a manager spinning on it stops at once. A small one goes through the
 * result ring (see msg_ring); if nobody in the parent watches the
 * doorbells, the manager's eventfd wakes it (once per sleep of the
 * manager: region_head.bell_rung). A task's big byte result goes
 * in the spare if it fits: copied into pages that exist, mapped here
 * already, instead of a fresh memfd's. */
static int post(int sock, wire *h, const void *data) {
  int rc;
  h->seq = next_seq;
  bool ringed = false;
  if (h->type == MSG_RESULT && !is_chunk(h->kind) && h->code == 0 &&
      h->len >= BIG_PAYLOAD && spare.fd >= 0 && spare.cap >= h->len) {
    memcpy(spare.map, data, h->len);
    rc = cf__pp_send_mapped(sock, h, spare.fd);
    spare_drop(); /* the result's now */
  } else if ((ringed = socket_drained(sock) && ring_put(&my_slot->results, h, data))) {
    rc = 0;
  } else {
    rc = cf__pp_send_msg(sock, h, data);
  }
  if (rc == 0) {
    next_seq++;
    /* seq_cst, then the look at bell_wanted: against the parent's store
     * to it and its look at `posted` (see drive_leave) */
    atomic_fetch_add(&my_slot->posted, 1);
    if (ringed && atomic_load(&region->bell_wanted) &&
        !atomic_exchange(&region->bell_rung, 1)) {
      uint64_t one = 1;
      if (write(bell_fd, &one, sizeof one) != sizeof one)
        _exit(0); /* no way to wake the manager: the pool replaces us */
    }
  }
  return rc;
}

/* Runs each item of a chunk (a copy of its bytes: passed by pointer to a
 * cf_fn, or as bytes to a cf_proc_fn), writing each item's outcome to the
 * area and counting it in sh->chunk_done as it finishes, then sends the
 * area's contents as the chunk's reply. */
static void run_chunk(int sock, const wire *h, uintptr_t addr, const void *in,
                      area *a, slot_shared *sh) {
  uint64_t count = 0, size = 0;
  if (h->len >= 16) {
    memcpy(&count, in, 8);
    memcpy(&size, (const char *)in + 8, 8);
  }
  bool bytes = h->kind == KIND_CHUNK_BYTES;
  cf_fn fn = bytes ? NULL : (cf_fn)addr;
  cf_proc_fn pfn = bytes ? (cf_proc_fn)addr : NULL;
  wire r = {.type = MSG_RESULT, .kind = h->kind};
  size_t tlen = 0;
  if (!addr)
    r.code = CF_ESYS; /* every item fails with it */
  else if (h->len < 16 || (size && count > (h->len - 16) / size) ||
           count > SIZE_MAX / sizeof(cf__item_result))
    r.code = CF_EINVAL; /* not a chunk the manager made */
  else if (!area_reserve(a, tlen = count * sizeof(cf__item_result)))
    r.code = CF_ENOMEM; /* every item fails; none ran */
  size_t used = tlen;
  for (uint64_t i = 0; r.code == 0 && i < count; i++) {
    const char *item = (const char *)in + 16 + i * size;
    cf__item_result rec = {0};
    cf_buf b = {0};
    char *msg = NULL;
    const void *data = NULL;
    size_t dlen = 0;
    cf__fail_clear();
    if (bytes) {
      rec.code = pfn(item, size, &b);
      if (rec.code == 0 && b.data) {
        data = b.data;
        dlen = b.len;
      }
      rec.out = dlen;
    } else {
      void *out = NULL;
      rec.code = fn((void *)item, &out);
      rec.out = rec.code == 0 ? (uint64_t)(uintptr_t)out : 0;
    }
    if (rec.code != 0) {
      rec.out = 0;
      if ((msg = cf__fail_take_message())) {
        size_t ml = strlen(msg) + 1;
        data = msg;
        dlen = ml < UINT32_MAX ? ml : 0;
        rec.msg_len = (uint32_t)dlen;
      }
    }
    /* each item's data starts CF__ITEM_ALIGN-aligned (see cf__chunk_seg):
     * the map hands it out in place */
    size_t span = (dlen + CF__ITEM_ALIGN - 1) & ~(size_t)(CF__ITEM_ALIGN - 1);
    if (dlen && !area_reserve(a, used + span)) {
      /* No room for its output or message: the item fails (a failure
       * loses its message only). */
      if (rec.code == 0)
        rec.code = CF_ENOMEM;
      rec.out = 0;
      rec.msg_len = 0;
      dlen = 0;
    }
    if (dlen) {
      memcpy(a->base + used, data, dlen);
      memset(a->base + used + dlen, 0, span - dlen);
      used += span;
    }
    memcpy(a->base + i * sizeof rec, &rec, sizeof rec);
    free(msg);
    free(b.data);
    /* see slot_shared: publishes the item's outcome, written above, to a
     * manager that reads the area after this worker's death (acquire
     * there, in chunk_salvage) */
    atomic_store_explicit(&sh->chunk_done, i + 1, memory_order_release);
  }
  r.len = r.code == 0 ? used : 0;
  int src = post(sock, &r, a->base);
  if (src == SEND_LOCAL) {
    wire f = {.type = MSG_RESULT, .kind = h->kind, .code = CF_ESYS};
    src = post(sock, &f, NULL);
  }
  if (src)
    _exit(0);
  area_trim(a);
}

/* The number of the next message from the manager, counted in 64 bits as
 * slot_shared.sent is (wire.seq carries its low 32 bits). */
static uint64_t in_seq = 1;

/* The manager has sent message in_seq (slot_shared.sent). */
static bool input_sent(void *ctx) {
  (void)ctx;
  return atomic_load_explicit(&my_slot->sent, memory_order_acquire) >= in_seq;
}

/* A frame read from the socket ahead of its turn (a later message than
 * one still in the ring), kept until then. */
static struct {
  bool full;
  int rc, err, fd;
  wire h;
  void *data;
} ahead;

/* The next message from the manager, in order (see msg_ring): from the
 * task ring, or from the socket, waiting for it. Returns
 * cf__pp_recv_msg's codes (a bell is no message: never returned). */
static int next_input(int sock, wire *h, void **data, int *spare_fd) {
  for (;;) {
    if (ahead.full && ahead.h.seq == (uint32_t)in_seq) {
      ahead.full = false;
      in_seq++;
      *h = ahead.h;
      *data = ahead.data;
      *spare_fd = ahead.fd;
      errno = ahead.err;
      return ahead.rc;
    }
    /* `sent` first: a message counted there is in the ring already, or
     * on the socket (see send_to_worker) */
    uint64_t sent = atomic_load_explicit(&my_slot->sent, memory_order_acquire);
    const char *src, *bad;
    int k = ring_peek(&my_slot->tasks, (uint32_t)in_seq, h, &src, &bad);
    if (k < 0)
      return RECV_BAD; /* not from our manager: give up */
    if (k > 0) {
      int rc = 0;
      *data = NULL;
      if (h->len && !(*data = malloc(h->len))) {
        errno = ENOMEM;
        rc = RECV_LOCAL;
      } else if (h->len) {
        memcpy(*data, src, h->len);
      }
      ring_pop(&my_slot->tasks);
      in_seq++;
      return rc;
    }
    if (ahead.full)
      return RECV_BAD; /* a later message came, and not this one */
    if (sent < in_seq) { /* not sent yet: wait for it */
      /* on memory first: a warm worker picks the next task up without a
       * sleep and a wake-up, nor a system call per look */
      if (pp_spin_until(input_sent, NULL, SPIN_NS))
        continue;
      /* seq_cst, then the looks at `sent` and `closing`: against the
       * manager's increment of `sent` (or its store to `closing`) and its
       * look at `asleep` (see wake_worker) */
      atomic_store(&my_slot->asleep, 1);
      if (atomic_load(&my_slot->sent) < in_seq) {
        if (atomic_load(&region->closing))
          _exit(0); /* the pool is done with us */
        cf__futex_wait(&my_slot->asleep, 1, NULL, true);
      }
      atomic_store_explicit(&my_slot->asleep, 0, memory_order_relaxed);
      continue;
    }
    /* Sent, and not in the ring: on the socket. */
    int rc = cf__pp_recv_msg(sock, h, data, true, spare_fd);
    if (rc != 0 && rc != RECV_LOCAL)
      return rc;
    if (h->seq != (uint32_t)in_seq) {
      if ((int32_t)(h->seq - (uint32_t)in_seq) < 0) /* one passed */
        return RECV_BAD;
      ahead.full = true;
      ahead.h = *h;
      ahead.data = *data;
      ahead.fd = *spare_fd;
      ahead.err = errno;
      ahead.rc = rc;
      *spare_fd = -1;
      continue;
    }
    in_seq++;
    return rc;
  }
}

_Noreturn void cf__pp_worker_main(int sock, int area_fd, int bell,
                                  const cf_process_pool_opts *o,
                                  slot_shared *sh, region_head *shared_region) {
  area a = {.fd = area_fd};
  my_slot = sh;
  region = shared_region;
  bell_fd = bell;
  /* Large blocks from the heap, and kept there when freed: a task that
   * mallocs a 64 MiB result every time then reuses warm pages instead of
   * a fresh mapping whose every page faults (glibc's own threshold stops
   * at 32 MiB). The worker's memory stays at its largest task's. */
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  if (o->initializer && o->initializer(o->initarg) != 0) {
    wire h = {.type = MSG_INIT_FAILED};
    post(sock, &h, NULL);
    _exit(0);
  }
  size_t done = 0;
  for (;;) {
    wire h;
    void *in;
    int spare_fd = -1;
    int rrc = next_input(sock, &h, &in, &spare_fd);
    if (rrc != 0 && rrc != RECV_LOCAL)
      _exit(0); /* the parent hung up: shutdown */
    if (rrc == 0 && h.type == MSG_SPARE) {
      spare_take(spare_fd);
      continue;
    }
    /* see slot_shared */
    uint64_t k = atomic_load_explicit(&sh->started, memory_order_relaxed);
    atomic_store_explicit(&sh->chunk_done, 0, memory_order_relaxed);
    /* keeps chunk_done's reset ahead of the start, should the worker die
     * in between (see slot_shared): a chunk must not be credited with
     * the last one's items */
    atomic_store_explicit(&sh->started, k + 1, memory_order_release);
    if (rrc == RECV_LOCAL) {
      /* No memory or descriptor for the input here: the task fails and
       * says why; the worker goes on. */
      char why[160];
      snprintf(why, sizeof why,
               "the worker could not receive the task's input (%s)",
               strerror(errno));
      wire f = {.type = MSG_RESULT,
                .kind = h.kind,
                .code = errno == ENOMEM ? CF_ENOMEM : CF_ESYS};
      f.len = is_chunk(h.kind) ? 0 : strlen(why) + 1;
      if (post(sock, &f, why))
        _exit(0);
      continue;
    }
    /* The function first (with the fork server, the first task of an
     * object may load it): not the task's time. */
    cf__fail_clear();
    uintptr_t addr = cf__pp_task_fn(h.fn);
    /* A task timeout counts from here, not from when the task was sent
     * (the initializer or the task before it may have run meanwhile). No
     * timeout, no report: it would cost every task a message. */
    wire st = {.type = MSG_STARTED};
    if (o->task_timeout_s > 0 && post(sock, &st, NULL))
      _exit(0); /* the parent hung up: shutdown */
    wire r = {.type = MSG_RESULT};
    void *payload = NULL;
    char *msg = NULL;
    if (is_chunk(h.kind)) {
      run_chunk(sock, &h, addr, in, &a, sh);
      cf__pp_payload_free(&h, in);
      if (o->max_tasks_per_child && ++done >= o->max_tasks_per_child)
        _exit(0);
      continue;
    }
    if (h.kind == KIND_VALUE) {
      void *arg = NULL, *out = NULL;
      if (h.len == sizeof arg)
        memcpy(&arg, in, sizeof arg);
      cf_fn fn = (cf_fn)addr;
      r.code = fn ? fn(arg, &out) : CF_ESYS;
      if (r.code == 0) {
        payload = malloc(sizeof out);
        if (payload) {
          memcpy(payload, &out, sizeof out);
          r.len = sizeof out;
        }
      }
    } else {
      cf_buf b = {0};
      cf_proc_fn fn = (cf_proc_fn)addr;
      r.code = fn ? fn(in, h.len, &b) : CF_ESYS;
      if (r.code == 0) {
        payload = b.data;
        r.len = b.data ? b.len : 0;
      } else {
        free(b.data);
      }
    }
    if (r.code != 0) {
      msg = cf__fail_take_message();
      payload = msg;
      r.len = msg ? strlen(msg) + 1 : 0;
    }
    cf__pp_payload_free(&h, in);
    int src = post(sock, &r, payload);
    if (src == SEND_LOCAL) {
      /* No memfd for a large result (EMFILE, ENOMEM...): the task fails
       * and says why; the worker goes on. */
      char why[160];
      snprintf(why, sizeof why,
               "the worker could not pass the task's result "
               "(memfd_create: %s)",
               strerror(errno));
      wire f = {.type = MSG_RESULT, .kind = h.kind, .code = CF_ESYS};
      f.len = strlen(why) + 1;
      src = post(sock, &f, why);
    }
    if (src)
      _exit(0);
    free(payload);
    if (o->max_tasks_per_child && ++done >= o->max_tasks_per_child)
      _exit(0);
  }
}
