/* The fork-based process pool.
 *
 * Processes: the parent (any number of threads), a fork server forked at
 * pool creation, and workers forked by the fork server on request. The fork
 * server stays single-threaded, so forking a worker from it is safe at any
 * time; it dies with the parent (PR_SET_PDEATHSIG), workers die with it,
 * it reaps the workers and reports each exit status to the parent.
 *
 * PR_SET_PDEATHSIG fires when the forking *thread* ends, not the process:
 * so the fork server is forked by the manager thread, which lives exactly
 * as long as the pool (forking it from the thread that calls
 * cf_process_pool_new would kill the pool when that thread exits). The
 * manager also tears everything down before it returns: it hangs up on the
 * workers and the fork server and reaps the server.
 *
 * Channels:
 *   parent <-> fork server: a SOCK_SEQPACKET pair. SPAWN(slot) asks for a
 *     worker; SPAWNED(slot, pid) answers with the worker's socket and its
 *     result area (a memfd: see run_chunk) attached (SCM_RIGHTS);
 *     EXITED(pid, wait status) reports a death.
 *   parent <-> worker: a SOCK_STREAM pair carrying framed messages: TASK
 *     (function pointer, input bytes) one way; STARTED (a header alone,
 *     sent as the worker starts a task, with a task timeout only: the
 *     timeout counts from it), RESULT (code, output bytes or failure
 *     message; for a chunk of map items, each item's) or INIT_FAILED the
 *     other. Every frame starts with a magic number and its length is
 *     bounded (below 64 KiB inline, larger ones in a memfd no shorter than
 *     it): bytes a task scribbles on the socket are a protocol error, not
 *     a length to wait for. In a worker the socket sits at descriptor 512
 *     or above (WORKER_FD_MIN), away from the low numbers that the host's
 *     own descriptors use in the parent.
 *
 * In the parent one manager thread owns every descriptor: it polls the
 * fork server, the workers and an eventfd that submitters and shutdown
 * ring, hands pending tasks to idle workers (one at a time each), completes
 * futures (so done-callbacks run on it), kills workers past the task
 * timeout and asks for replacements (after a failed fork, with a growing
 * delay: see FORK_BACKOFF_MAX_NS). It never waits on a worker's socket:
 * it reads what has arrived into a per-worker buffer, where partial frames
 * wait (see on_worker_ready). A worker is known dead from the fork
 * server's exit report, which settles its tasks; end-of-file is not
 * needed (a process forked by a task may keep the socket open).
 *
 * Locks: `mu` guards the pending list and the flags submitters and the
 * manager share; the workers table belongs to the manager thread alone,
 * except that the numbers of the manager's sockets (ctl_fd, ctl_peer,
 * each worker's fd) change only under `fd_mu`, for the fork handlers.
 * Order: `pools_mu` (the registry of pools) before any `fd_mu`; `mu`
 * and `fd_mu` are never held together.
 *
 * A host that forks without exec: its child would keep copies of the
 * manager's sockets, and the workers and the fork server would not see
 * end-of-file until that child exits (cf_executor_free would wait for
 * it). A pthread_atfork handler closes them in the child: `prepare` takes
 * `pools_mu` and every pool's `fd_mu`, so the child's copy of the numbers
 * is consistent. The fork handlers do nothing in the manager's own fork of
 * the fork server (the server closes everything itself) nor in the
 * server (single-threaded, its locks' state inherited from anywhere).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cfutures/process_pool.h>

#include "core/fnref.h"
#include "core/report.h"
#include "core/time.h"
#include "executor/executor_internal.h"
#include "futures/future_internal.h"

#define MAX_PROC_WORKERS 256

/* What a task message carries: one pointer-sized value (cf_submit), one
 * byte input (cf_process_pool_submit), or a chunk of map items, each
 * passed to a cf_fn by pointer (KIND_CHUNK, cf_map_array) or to a
 * cf_proc_fn as bytes (KIND_CHUNK_BYTES, cf_process_pool_map_bytes). */
enum { KIND_VALUE = 1, KIND_BYTES = 2, KIND_CHUNK = 3, KIND_CHUNK_BYTES = 4 };

static bool is_chunk(uint32_t kind) {
  return kind == KIND_CHUNK || kind == KIND_CHUNK_BYTES;
}

/* A chunk's results (its reply, and the worker's result area: see
 * run_chunk) are a table of item_result, one per item, then each item's
 * data in item order: a failure's message (with its NUL), a byte item's
 * output. */
typedef struct item_result {
  int32_t code;
  uint32_t msg_len; /* a failure: bytes of its message in the data */
  /* A success: the value (KIND_CHUNK), or the output's length in the data
   * (KIND_CHUNK_BYTES). */
  uint64_t out;
} item_result;

/* The bytes of data item r has after the table. */
static uint64_t item_data_len(uint32_t kind, const item_result *r) {
  return r->code ? r->msg_len : kind == KIND_CHUNK_BYTES ? r->out : 0;
}
enum { MSG_TASK = 1, MSG_RESULT = 2, MSG_INIT_FAILED = 3, MSG_STARTED = 4 };
enum { CTL_SPAWN = 1, CTL_SPAWNED = 2, CTL_EXITED = 3, CTL_CONFIG = 4 };

/* A frame's header; the payload (len bytes) follows, or travels in a
 * memfd passed with the header's first byte (FLAG_MAPPED). Every header
 * starts with WIRE_MAGIC, so that bytes a task scribbles on its worker's
 * socket are caught at the first byte that differs, not taken for a
 * length to wait for. */
#define WIRE_MAGIC 0x31504643u /* "CFP1" */
typedef struct wire {
  uint32_t magic; /* WIRE_MAGIC, set by the senders */
  uint32_t type, kind;
  int32_t code;
  uint64_t fn;
  uint32_t flags, reserved;
  uint64_t len;
} wire;

typedef struct ctl {
  uint32_t op, slot;
  int32_t pid, status; /* SPAWNED with pid -1: status is fork's errno */
} ctl;

typedef struct ptask {
  struct ptask *next;
  cf_future *f;      /* KIND_VALUE, KIND_BYTES */
  cf_future **chunk; /* chunks: one future per item (NULL: handed on) */
  size_t count;
  uint32_t kind;
  uint64_t fn;
  void *data; /* a malloc'd copy of the input, or NULL with mfd */
  size_t len;
  int mfd; /* -1, or a memfd holding the input (written at submit time) */
  cf_destroy_fn destroy; /* KIND_VALUE results */
} ptask;

/* One per worker slot, in a MAP_SHARED mapping made before the fork
 * server is forked (so the server and every worker share it with the
 * manager): the worker in the slot counts the tasks it has started. When
 * a worker dies, the manager compares it with the results it has read:
 * only a task that had started is blamed; the others never ran. No
 * message, no syscall: one store per task.
 *
 * A chunk is blamed item by item: the worker also counts the items of
 * its current chunk that have finished (chunk_done), having written each
 * one's outcome to its result area, a memfd that the manager holds too
 * (see run_chunk). When the worker dies in a chunk, the items it finished
 * keep their outcomes (read from the area), the one it was running
 * fails, and the ones after it are queued again: none is lost, none runs
 * twice. Per item this costs a store to shared memory, no syscall. */
typedef struct slot_shared {
  /* Written by the slot's worker (reset by the server before each fork),
   * read by the manager after the worker's exit report, which the worker's
   * death orders before the read (through the kernel). Stored with
   * release, so that the compiler keeps the stores before each one ahead
   * of it should the worker die between them (chunk_done's reset before
   * `started`; an item's outcome before chunk_done). */
  _Atomic uint64_t started;
  _Atomic uint64_t chunk_done; /* items of the running chunk finished */
  char pad[64 - 2 * sizeof(uint64_t)];
} slot_shared;

/* The memory the manager shares with the fork server and every worker: a
 * memfd (in the server and the workers of CF_START_FORKSERVER, received
 * from the manager; inherited with CF_START_FORK), laid out as a head,
 * the slots, then (CF_START_FORKSERVER only) the paths of the objects
 * that tasks' functions come from, by fnref id (see core/fnref.h): the
 * manager publishes a path (nobjs, release) before it sends the first
 * task that needs it. The head also carries the options a fork server
 * that did not inherit them needs. */
#define REGION_MAGIC 0x52504643u /* "CFPR" */
typedef struct region_head {
  uint32_t magic, n;
  uint16_t has_init;       /* init_ref is set */
  uint16_t initarg_is_ref;  /* initarg points into an object: a reference */
  _Atomic uint32_t nobjs;   /* paths published */
  uint64_t init_ref, initarg;
  uint64_t max_tasks_per_child;
  double task_timeout_s;
  int64_t ff_skip, ff_fail; /* see fork_faults */
  char pad[128 - 4 * sizeof(uint32_t) - 5 * sizeof(uint64_t) -
           sizeof(double)];
} region_head;

static size_t region_size(size_t n, bool paths) {
  return sizeof(region_head) + n * sizeof(slot_shared) +
         (paths ? (size_t)CF__FNREF_MAX_OBJECTS * CF__FNREF_PATH_MAX : 0);
}

static slot_shared *region_slots(region_head *r) {
  return (slot_shared *)(r + 1);
}

static char *region_path(region_head *r, uint32_t id) {
  return (char *)(region_slots(r) + r->n) + (size_t)id * CF__FNREF_PATH_MAX;
}

/* In a fork server of CF_START_FORKSERVER and its workers: the region
 * (NULL elsewhere): a task's function is looked up through it. */
static region_head *exec_region;

/* The address, in this worker, of the task function the manager sent as
 * `fn`: as is with CF_START_FORK; with the fork server, a reference to
 * resolve. 0 (cf_last_error set) when it cannot be found. */
static uintptr_t task_fn(uint64_t fn) {
  if (!exec_region)
    return (uintptr_t)fn;
  uint32_t id = (uint32_t)(fn >> CF__FNREF_OFF_BITS);
  uintptr_t addr = 0;
  if (id < atomic_load_explicit(&exec_region->nobjs, memory_order_acquire))
    addr = cf__fnref_resolve(region_path(exec_region, id), fn);
  if (!addr)
    cf_fail(CF_ESYS, "the worker cannot find the task's function: %s",
            id < exec_region->nobjs ? cf_last_error() : "unknown object");
  return addr;
}

/* Workers that die before starting any task, in a row, that break the
 * pool (a crashing initializer would otherwise fork replacements for
 * ever, their tasks requeued each time). */
#define EARLY_DEATHS_MAX 5

/* A fork of a worker that fails (EAGAIN from RLIMIT_NPROC or a
 * container's pids.max, ENOMEM) is retried after a delay that doubles
 * from 1 ms up to 100 ms; the manager sleeps meanwhile (the fork server
 * only forks when asked): nothing spins. A pool left with no live worker
 * after FORK_GIVE_UP_NS of failures fails its waiting tasks, and those
 * submitted later while that lasts, with CF_ESYS naming fork's errno; it
 * goes on retrying every 100 ms and serves again once a fork works. With
 * a live worker it serves on with fewer workers, retrying the others. */
#define FORK_BACKOFF_MIN_NS 1000000ull
#define FORK_BACKOFF_MAX_NS 100000000ull
#define FORK_GIVE_UP_NS     2000000000ull

/* W_LIVE workers take tasks; W_DEAD ones wait for their exit report: they
 * have hung up, retired, or been killed by the manager (their socket is
 * still read: a result sent before the kill counts). */
enum { W_NONE, W_SPAWNING, W_LIVE, W_DEAD };

/* Tasks sent to a worker ahead of time, so that it never waits for the
 * manager between two tasks (only without a task timeout, which needs to
 * know when each task starts). Two: one running, one ready. More would
 * let short tasks queue behind a long one while another worker idles;
 * like Python, a task sent ahead counts as RUNNING (it cannot be
 * cancelled any more). */
#define PIPE_DEPTH 2

typedef struct pworker {
  int state;
  pid_t pid;
  int fd;
  int area_fd; /* its result area (see run_chunk), until its exit report */
  size_t done;          /* tasks finished by this process */
  ptask *q[PIPE_DEPTH]; /* sent, oldest (running) first */
  unsigned qh, qn;
  bool started;      /* the oldest task sent has started (STARTED read) */
  uint64_t deadline; /* ns; the running task's timeout, 0: none (yet) */
  bool timed_out;    /* killed by the manager at its deadline */
  const char *fault; /* it broke the protocol: the manager killed it */
  bool reaped;       /* its exit report came: its pid may be reused */
  /* What the manager has received and not yet handled: rx[rx_off,
   * rx_len) (partial frames wait here: a read never waits for bytes
   * that have not arrived), and the descriptors that came with it,
   * oldest first (RX_FD_DROPPED: one the kernel could not pass, EMFILE). */
  char *rx;
  size_t rx_off, rx_len, rx_cap;
  int rx_fds[4];
  unsigned rx_nfds;
} pworker;

static ptask *inflight_pop(pworker *w) {
  ptask *t = w->q[w->qh];
  w->qh = (w->qh + 1) % PIPE_DEPTH;
  w->qn--;
  return t;
}

typedef struct ppool {
  cf_executor base;
  cf_process_pool_opts o;
  size_t n;
  pid_t server;
  int ctl_fd;   /* manager; changed under fd_mu */
  int ctl_peer; /* the server's end, until the server is forked; fd_mu */
  pthread_mutex_t fd_mu;   /* see the fork handlers */
  struct ppool *next_pool; /* in the registry; guarded by pools_mu */
  int wake_fd;             /* eventfd */
  pthread_t manager;
  pthread_t manager_self; /* set by the manager itself, before it starts */
  pworker *workers;       /* manager only */
  bool exec_server;       /* CF_START_FORKSERVER */
  region_head *region;    /* see region_head; region_fd is its memfd */
  int region_fd;
  size_t region_len;
  slot_shared *shared;    /* the region's n slots */
  pthread_mutex_t objs_mu; /* publishing object paths into the region */
  unsigned early_deaths;  /* manager only: see EARLY_DEATHS_MAX */
  char broken_why[200];   /* manager only: why `broken` was set */
  /* Failed forks (manager only; see FORK_BACKOFF_MAX_NS): */
  uint64_t spawn_at;      /* ns; no SPAWN asked for before it (backoff) */
  uint64_t backoff_ns;    /* the next delay after a failure; 0: none yet */
  uint64_t failing_since; /* ns; the first failure of a run, 0: none */
  int fork_errno;         /* the last failure's errno */
  struct pollfd *pfds;    /* manager only: n + 2 */
  size_t *slot_of;        /* manager only: pfds index -> worker slot */
  pthread_cond_t started_cv;
  bool started; /* guarded by mu: the manager has forked the fork server */
  int start_rc; /* guarded by mu: how that went */
  int start_errno; /* guarded by mu: the errno of a failed start */
  pthread_mutex_t mu;
  ptask *head, *tail; /* pending; guarded by mu */
  size_t npending;    /* guarded by mu */
  bool shutdown;      /* guarded by mu */
  bool broken;        /* guarded by mu */
  bool joined;        /* guarded by join_mu */
  pthread_mutex_t join_mu;
} ppool;

/* ---- fork handlers (see the top of the file) ------------------------------
 */

static pthread_mutex_t pools_mu = PTHREAD_MUTEX_INITIALIZER;
static ppool *pools; /* every pool of this process; guarded by pools_mu */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static _Thread_local bool forking_server; /* this manager forks its server */
static bool atfork_off;                   /* in the fork server: never on */

static bool atfork_skip(void) {
  return forking_server || atfork_off;
}

static void atfork_prepare(void) {
  if (atfork_skip())
    return;
  pthread_mutex_lock(&pools_mu);
  for (ppool *p = pools; p; p = p->next_pool)
    pthread_mutex_lock(&p->fd_mu);
}

static void atfork_parent(void) {
  if (atfork_skip())
    return;
  for (ppool *p = pools; p; p = p->next_pool)
    pthread_mutex_unlock(&p->fd_mu);
  pthread_mutex_unlock(&pools_mu);
}

/* In the host's child: the pools' sockets are closed, so that the workers
 * and fork servers, which belong to the parent, see end-of-file when the
 * parent hangs up. The pools are unusable here (no manager thread). */
static void atfork_child(void) {
  if (atfork_skip())
    return;
  for (ppool *p = pools; p; p = p->next_pool) {
    int *fds[] = {&p->ctl_fd, &p->ctl_peer};
    for (size_t k = 0; k < 2; k++)
      if (*fds[k] >= 0) {
        close(*fds[k]);
        *fds[k] = -1;
      }
    for (size_t i = 0; i < p->n; i++) {
      pworker *w = &p->workers[i];
      if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
      }
      if (w->area_fd >= 0) {
        close(w->area_fd);
        w->area_fd = -1;
      }
    }
    pthread_mutex_unlock(&p->fd_mu);
  }
  pthread_mutex_unlock(&pools_mu);
}

static void atfork_register(void) {
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static void pool_register(ppool *p) {
  pthread_once(&atfork_once, atfork_register);
  pthread_mutex_lock(&pools_mu);
  p->next_pool = pools;
  pools = p;
  pthread_mutex_unlock(&pools_mu);
}

static void pool_unregister(ppool *p) {
  pthread_mutex_lock(&pools_mu);
  for (ppool **pp = &pools; *pp; pp = &(*pp)->next_pool)
    if (*pp == p) {
      *pp = p->next_pool;
      break;
    }
  pthread_mutex_unlock(&pools_mu);
}

/* ---- framing ------------------------------------------------------------- */

static int write_full(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* 0, or -1 on end-of-file or error. */
static int read_full(int fd, void *buf, size_t n) {
  char *p = buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

/* Payloads from this size on travel in a memfd passed with SCM_RIGHTS:
 * one copy in, none out (the receiver maps it), instead of two through the
 * socket. */
#define BIG_PAYLOAD (64 * 1024)
#define FLAG_MAPPED 1u /* wire.flags: the payload is a mapped memfd */

/* Inputs from this size on are written to their memfd by the submitting
 * thread, straight from the caller's buffer: no intermediate copy, and the
 * manager does not spend its time copying. Each such pending task holds a
 * descriptor, so at most EAGER_MAX of them exist per process; beyond that
 * (or if memfd_create fails) the input is copied and the manager writes
 * the memfd when it sends it. */
#define EAGER_PAYLOAD (1024 * 1024)
#define EAGER_MAX     64
static atomic_size_t eager_memfds; /* relaxed: a cap, publishes nothing */

/* Writes data[0..len) to fd; 0 or -1. */
static int write_all_fd(int fd, const void *data, size_t len) {
  const char *src = data;
  for (size_t off = 0; off < len;) {
    ssize_t w = write(fd, src + off, len - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    off += (size_t)w;
  }
  return 0;
}

/* A memfd holding a copy of data[0..len), or -1 (then copy it instead). */
static int eager_memfd(const void *data, size_t len) {
  if (len < EAGER_PAYLOAD)
    return -1;
  if (atomic_fetch_add_explicit(&eager_memfds, 1, memory_order_relaxed) >=
      EAGER_MAX) {
    atomic_fetch_sub_explicit(&eager_memfds, 1, memory_order_relaxed);
    return -1;
  }
  int fd = memfd_create("cfutures-payload", MFD_CLOEXEC);
  if (fd >= 0 && write_all_fd(fd, data, len) == 0)
    return fd;
  if (fd >= 0)
    close(fd);
  atomic_fetch_sub_explicit(&eager_memfds, 1, memory_order_relaxed);
  return -1;
}

static void eager_memfd_close(int fd) {
  close(fd);
  atomic_fetch_sub_explicit(&eager_memfds, 1, memory_order_relaxed);
}

/* ---- passing descriptors (the one place that speaks SCM_RIGHTS) ---------- */

#define MAX_PASS 8 /* descriptors one message may carry */

/* sendmsg of buf[0..len) with fds[0..nfds) attached (nfds <= MAX_PASS),
 * no SIGPIPE, EINTR retried: bytes sent, or -1 with errno. */
static ssize_t send_fds(int sock, const void *buf, size_t len, const int *fds,
                        size_t nfds, int flags) {
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  union {
    char buf[CMSG_SPACE(MAX_PASS * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    memset(&u, 0, sizeof u);
    m.msg_control = u.buf;
    m.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
  }
  ssize_t w;
  do
    w = sendmsg(sock, &m, MSG_NOSIGNAL | flags);
  while (w < 0 && errno == EINTR);
  return w;
}

/* Where recv_fds puts the descriptors that come with the bytes: appended
 * to fds[n..max); those beyond are closed (`excess`); `dropped` when the
 * kernel could not pass some (no descriptor slot here: MSG_CTRUNC). */
typedef struct fdbox {
  int *fds;
  size_t max, n;
  bool excess, dropped;
} fdbox;

/* recvmsg of up to len bytes into buf, close-on-exec descriptors into box,
 * EINTR retried: recvmsg's own return (0 at end of file, -1 with errno). */
static ssize_t recv_fds(int sock, void *buf, size_t len, fdbox *box,
                        int flags) {
  struct iovec iov = {.iov_base = buf, .iov_len = len};
  union {
    char buf[CMSG_SPACE(MAX_PASS * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr m = {.msg_iov = &iov,
                     .msg_iovlen = 1,
                     .msg_control = u.buf,
                     .msg_controllen = sizeof u.buf};
  ssize_t r;
  do
    r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC | flags);
  while (r < 0 && errno == EINTR);
  if (r <= 0)
    return r;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
      continue;
    size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t j = 0; j < k; j++) {
      int fd;
      memcpy(&fd, CMSG_DATA(cm) + j * sizeof(int), sizeof fd);
      if (box->n < box->max) {
        box->fds[box->n++] = fd;
      } else {
        close(fd);
        box->excess = true;
      }
    }
  }
  if (m.msg_flags & MSG_CTRUNC)
    box->dropped = true;
  return r;
}

static int send_header(int fd, wire *h, int pass_fd) {
  h->magic = WIRE_MAGIC;
  ssize_t w = send_fds(fd, h, sizeof *h, &pass_fd, pass_fd >= 0 ? 1 : 0, 0);
  if (w <= 0)
    return -1;
  /* The fd went with the first byte; the rest of the header is plain. */
  return (size_t)w < sizeof *h
             ? write_full(fd, (const char *)h + w, sizeof *h - (size_t)w)
             : 0;
}

/* A memfd holding data[0..len), or -1 (errno set). */
static int payload_memfd(const void *data, size_t len) {
  int mfd = memfd_create("cfutures-payload", MFD_CLOEXEC);
  if (mfd < 0)
    return -1;
  /* write() fills the memfd's pages directly: no page faults to take. */
  if (write_all_fd(mfd, data, len)) {
    int e = errno;
    close(mfd);
    errno = e;
    return -1;
  }
  return mfd;
}

/* Sends a message: 0; -1 when the socket failed (the peer is gone, or the
 * stream is cut); SEND_LOCAL when the payload could not be prepared
 * (memfd: errno says why), nothing sent, the stream intact. */
#define SEND_LOCAL (-2)
static int send_msg(int fd, wire *h, const void *data) {
  if (h->len < BIG_PAYLOAD) {
    h->magic = WIRE_MAGIC;
    h->flags = 0;
    if (write_full(fd, h, sizeof *h))
      return -1;
    return h->len ? write_full(fd, data, h->len) : 0;
  }
  int mfd = payload_memfd(data, h->len);
  if (mfd < 0)
    return SEND_LOCAL;
  h->flags = FLAG_MAPPED;
  int rc = send_header(fd, h, mfd);
  close(mfd);
  return rc;
}

/* Frees a payload from recv_msg. */
static void payload_free(const wire *h, void *data) {
  if (data && (h->flags & FLAG_MAPPED))
    munmap(data, h->len);
  else
    free(data);
}

/* recv_msg's failures besides -1 (end-of-file, socket error, stream cut):
 * RECV_BAD, a malformed message (the peer broke the protocol); RECV_LOCAL,
 * the payload could not be received here (no descriptor slot, no memory:
 * errno says which) and was skipped, the stream intact. */
#define RECV_BAD   (-2)
#define RECV_LOCAL (-3)

/* Reads a message, waiting for it: the worker's way (it has nothing else
 * to do; the manager never waits: see rx_take). *data is malloc'd, or
 * mapped when h->flags says so (free either with payload_free), NULL for
 * an empty payload. `populate` maps every page at once (a worker reads
 * its whole input). */
static int recv_msg(int fd, wire *h, void **data, bool populate) {
  *data = NULL;
  int mfd = -1;
  fdbox box = {.fds = &mfd, .max = 1};
  ssize_t r = recv_fds(fd, h, sizeof *h, &box, 0);
  if (r <= 0)
    return -1;
  if ((size_t)r < sizeof *h &&
      read_full(fd, (char *)h + r, sizeof *h - (size_t)r)) {
    if (mfd >= 0)
      close(mfd);
    return -1;
  }
  if (h->magic != WIRE_MAGIC) {
    if (mfd >= 0)
      close(mfd);
    return RECV_BAD;
  }
  if (h->flags & FLAG_MAPPED) {
    struct stat st;
    if (mfd >= 0 && (fstat(mfd, &st) != 0 || (uint64_t)st.st_size < h->len)) {
      close(mfd); /* a mapping past its end would fault (SIGBUS) */
      return RECV_BAD;
    }
    if (mfd < 0) {
      /* The descriptor was dropped for want of a slot here (EMFILE); or
       * it never came: the peer broke the protocol. */
      errno = EMFILE;
      return box.dropped ? RECV_LOCAL : RECV_BAD;
    }
    void *p = mmap(NULL, h->len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | (populate ? MAP_POPULATE : 0), mfd, 0);
    int e = errno;
    close(mfd);
    errno = e;
    if (p == MAP_FAILED)
      return RECV_LOCAL;
    *data = p;
    return 0;
  }
  if (mfd >= 0)
    close(mfd);
  if (h->len == 0)
    return 0;
  if (h->len >= BIG_PAYLOAD)
    return RECV_BAD; /* would have come in a memfd */
  *data = malloc(h->len);
  if (!*data) {
    /* Skip the payload: the stream stays in step. */
    char skip[4096];
    for (uint64_t left = h->len; left > 0;) {
      size_t k = left < sizeof skip ? (size_t)left : sizeof skip;
      if (read_full(fd, skip, k))
        return -1;
      left -= k;
    }
    errno = ENOMEM;
    return RECV_LOCAL;
  }
  if (read_full(fd, *data, h->len)) {
    free(*data);
    *data = NULL;
    return -1;
  }
  return 0;
}

static void close_other_fds(int keep1, int keep2) {
  for (int fd = 3; fd < 65536; fd++) {
    if (fd == keep1 || fd == keep2)
      continue;
    if (syscall(SYS_close_range, fd, fd, 0) != 0 && errno == ENOSYS)
      close(fd);
    else if (fd > keep1 && fd > keep2) {
      syscall(SYS_close_range, fd, ~0u, 0);
      break;
    }
  }
}

/* ---- the worker process -------------------------------------------------- */

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
           count > SIZE_MAX / sizeof(item_result))
    r.code = CF_EINVAL; /* not a chunk the manager made */
  else if (!area_reserve(a, tlen = count * sizeof(item_result)))
    r.code = CF_ENOMEM; /* every item fails; none ran */
  size_t used = tlen;
  for (uint64_t i = 0; r.code == 0 && i < count; i++) {
    const char *item = (const char *)in + 16 + i * size;
    item_result rec = {0};
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
    if (dlen && !area_reserve(a, used + dlen)) {
      /* No room for its output or message: the item fails (a failure
       * loses its message only). */
      if (rec.code == 0)
        rec.code = CF_ENOMEM;
      rec.out = 0;
      rec.msg_len = 0;
      dlen = 0;
    }
    if (dlen)
      memcpy(a->base + used, data, dlen);
    used += dlen;
    memcpy(a->base + i * sizeof rec, &rec, sizeof rec);
    free(msg);
    free(b.data);
    /* see slot_shared: publishes the item's outcome, written above, to a
     * manager that reads the area after this worker's death (acquire
     * there, in chunk_salvage) */
    atomic_store_explicit(&sh->chunk_done, i + 1, memory_order_release);
  }
  r.len = r.code == 0 ? used : 0;
  int src = send_msg(sock, &r, a->base);
  if (src == SEND_LOCAL) {
    wire f = {.type = MSG_RESULT, .kind = h->kind, .code = CF_ESYS};
    src = send_msg(sock, &f, NULL);
  }
  if (src)
    _exit(0);
  area_trim(a);
}

/* Polls fd for input for up to `ns` before the caller blocks: a warm
 * worker or manager picks the next message up without a sleep and wake-up
 * (tens of microseconds here). Returns true if input is ready. */
static bool spin_for_input(int fd, uint64_t ns) {
  uint64_t start = cf__now_ns();
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  do {
    if (poll(&pfd, 1, 0) > 0)
      return true;
  } while (cf__now_ns() - start < ns);
  return false;
}

#define SPIN_NS 50000u

static _Noreturn void worker_main(int sock, int area_fd,
                                  const cf_process_pool_opts *o,
                                  slot_shared *sh) {
  area a = {.fd = area_fd};
  if (o->initializer && o->initializer(o->initarg) != 0) {
    wire h = {.type = MSG_INIT_FAILED};
    send_msg(sock, &h, NULL);
    _exit(0);
  }
  size_t done = 0;
  for (;;) {
    wire h;
    void *in;
    spin_for_input(sock, SPIN_NS);
    int rrc = recv_msg(sock, &h, &in, true);
    if (rrc != 0 && rrc != RECV_LOCAL)
      _exit(0); /* the parent hung up: shutdown */
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
      if (send_msg(sock, &f, why))
        _exit(0);
      continue;
    }
    /* The function first (with the fork server, the first task of an
     * object may load it): not the task's time. */
    cf__fail_clear();
    uintptr_t addr = task_fn(h.fn);
    /* A task timeout counts from here, not from when the task was sent
     * (the initializer or the task before it may have run meanwhile). No
     * timeout, no report: it would cost every task a message. */
    wire st = {.type = MSG_STARTED};
    if (o->task_timeout_s > 0 && send_msg(sock, &st, NULL))
      _exit(0); /* the parent hung up: shutdown */
    wire r = {.type = MSG_RESULT};
    void *payload = NULL;
    char *msg = NULL;
    if (is_chunk(h.kind)) {
      run_chunk(sock, &h, addr, in, &a, sh);
      payload_free(&h, in);
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
    payload_free(&h, in);
    int src = send_msg(sock, &r, payload);
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
      src = send_msg(sock, &f, why);
    }
    if (src)
      _exit(0);
    free(payload);
    if (o->max_tasks_per_child && ++done >= o->max_tasks_per_child)
      _exit(0);
  }
}

/* ---- the fork server ----------------------------------------------------- */

/* Sends c with the descriptors pass[0..npass) attached (npass: 0 to 2).
 * flags: 0 in the fork server (it may block: the manager always drains),
 * MSG_DONTWAIT in the manager, which must never block on the server (both
 * blocking on full queues would deadlock). */
static int send_ctl(int fd, const ctl *c, const int *pass, size_t npass,
                    int flags) {
  return send_fds(fd, c, sizeof *c, pass, npass, flags) == (ssize_t)sizeof *c
             ? 0
             : -1;
}

/* Returns bytes read (0 at end-of-file, -1 on error); got[0..2): the
 * descriptors that came with it, in order, or -1. */
static ssize_t recv_ctl(int fd, ctl *c, int got[2], int flags) {
  got[0] = got[1] = -1;
  fdbox box = {.fds = got, .max = 2}; /* more than a message carries: closed */
  return recv_fds(fd, c, sizeof *c, &box, flags);
}

/* Signal handlers installed by the host (test frameworks, sanitizers,
 * crash reporters) must not run in workers: a crash there has to end the
 * worker with its signal, for the parent to report. Ignored signals stay
 * ignored, as across exec. */
static void default_signal_handlers(void) {
  for (int sig = 1; sig < NSIG; sig++) {
    struct sigaction sa;
    if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &sa) != 0)
      continue;
    if (sa.sa_handler != SIG_IGN && sa.sa_handler != SIG_DFL) {
      sa.sa_handler = SIG_DFL;
      sa.sa_flags = 0;
      sigaction(sig, &sa, NULL);
    }
  }
}

/* Test-only fault injection: CF__TEST_FAIL_FORK, read when a pool is
 * made, makes its fork server fail forks of workers with EAGAIN, as
 * RLIMIT_NPROC or a container's pids.max would (which do not apply to
 * root). "N": the next N forks fail; "always": every one; "K+N" or
 * "K+always": the same after K forks that work. Not an interface: the
 * tests use it to check how the pool copes. */
typedef struct fork_faults {
  long skip; /* forks that work first */
  long fail; /* then forks that fail; -1: all */
} fork_faults;

static fork_faults fork_faults_from_env(void) {
  fork_faults ff = {0, 0};
  const char *s = getenv("CF__TEST_FAIL_FORK");
  if (!s || !*s)
    return ff;
  char *end;
  long k = strtol(s, &end, 10);
  if (end != s && *end == '+') {
    ff.skip = k > 0 ? k : 0;
    s = end + 1;
  }
  if (strcmp(s, "always") == 0) {
    ff.fail = -1;
  } else {
    k = strtol(s, &end, 10);
    ff.fail = end != s && k > 0 ? k : 0;
  }
  return ff;
}

/* fork(), unless a test said it should fail (see fork_faults). */
static pid_t fork_worker(fork_faults *ff) {
  if (ff->skip > 0) {
    ff->skip--;
  } else if (ff->fail != 0) {
    if (ff->fail > 0)
      ff->fail--;
    errno = EAGAIN;
    return -1;
  }
  return fork();
}

/* A worker's socket is moved to a high descriptor number: the fork server
 * closes what the host had open, so the low numbers are free in a worker,
 * and a task writing to one it believes is the host's (a log file opened
 * before the pool, say) would write into the pool's socket. From
 * WORKER_FD_MIN on where the descriptor limit allows; else where it was. */
#define WORKER_FD_MIN 512
static int high_fd(int fd) {
  int hi = fcntl(fd, F_DUPFD_CLOEXEC, WORKER_FD_MIN);
  if (hi < 0)
    return fd;
  close(fd);
  return hi;
}

static _Noreturn void server_main(int ctl_fd, pid_t parent,
                                  const cf_process_pool_opts *o, size_t n,
                                  slot_shared *shared, fork_faults ff) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent)
    _exit(0);
  default_signal_handlers();
  /* The terminal's signals go to the whole foreground process group: a
   * host that handles Ctrl-C lives on, and so must its pool (with default
   * actions, the server and the running task died of it, and the pool was
   * broken for good). Ignored here, and in the workers, which inherit it.
   * The server dies with the parent anyway (PR_SET_PDEATHSIG). */
  static const int terminal_signals[] = {SIGINT,  SIGQUIT, SIGTSTP,
                                         SIGTTIN, SIGTTOU, SIGHUP};
  for (size_t k = 0; k < sizeof terminal_signals / sizeof *terminal_signals;
       k++) {
    struct sigaction ign = {.sa_handler = SIG_IGN};
    sigaction(terminal_signals[k], &ign, NULL);
  }
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  /* A SIGCHLD ignored by the host (inherited) would have the kernel reap
   * the workers itself, and their deaths would go unreported. */
  struct sigaction dfl = {.sa_handler = SIG_DFL};
  sigaction(SIGCHLD, &dfl, NULL);
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0)
    _exit(1); /* cannot see deaths: the parent sees us go, the pool breaks */
  for (;;) {
    struct pollfd p[2] = {{.fd = ctl_fd, .events = POLLIN},
                          {.fd = sfd, .events = POLLIN}};
    if (poll(p, 2, -1) < 0 && errno != EINTR)
      _exit(1);
    if (p[1].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) > 0)
        ;
    }
    /* Reap every exited worker and tell the parent how it ended. */
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      ctl c = {.op = CTL_EXITED, .pid = pid, .status = status};
      send_ctl(ctl_fd, &c, NULL, 0, 0);
    }
    if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
      continue;
    ctl c;
    int unused[2];
    if (recv_ctl(ctl_fd, &c, unused, 0) <= 0) {
      /* The parent is done with us: let the workers finish (their sockets
       * are closed, so they exit), reap them, leave. */
      while (waitpid(-1, &status, 0) > 0)
        ;
      _exit(0);
    }
    if (c.op != CTL_SPAWN || c.slot >= n)
      continue;
    /* The slot's previous worker has exited (its report came first). */
    atomic_store_explicit(&shared[c.slot].started, 0, memory_order_relaxed);
    atomic_store_explicit(&shared[c.slot].chunk_done, 0, memory_order_relaxed);
    int sv[2] = {-1, -1};
    /* the worker's result area: see run_chunk */
    int afd = memfd_create("cfutures-results", MFD_CLOEXEC);
    if (afd < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
      ctl fail = {.op = CTL_SPAWNED, .slot = c.slot, .pid = -1};
      fail.status = errno;
      if (afd >= 0)
        close(afd);
      send_ctl(ctl_fd, &fail, NULL, 0, 0); /* the manager will ask again */
      continue;
    }
    pid_t server = getpid();
    pid = fork_worker(&ff);
    int fork_errno = errno;
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      /* The server may have died before the line above (then no signal
       * will come): such a worker would live on, orphaned, running
       * whatever task reached it (seen: one sleeping in a task long after
       * its pool was gone, holding the test run's output pipe). */
      if (getppid() != server)
        _exit(0);
      close(ctl_fd);
      close(sfd);
      close(sv[0]);
      sigprocmask(SIG_UNBLOCK, &chld, NULL);
      int sock = high_fd(sv[1]);
      worker_main(sock, high_fd(afd), o, &shared[c.slot]);
    }
    close(sv[1]);
    ctl reply = {.op = CTL_SPAWNED,
                 .slot = c.slot,
                 .pid = pid > 0 ? pid : -1,
                 .status = pid > 0 ? 0 : fork_errno};
    int pass[2] = {sv[0], afd};
    send_ctl(ctl_fd, &reply, pass, pid > 0 ? 2 : 0, 0);
    close(sv[0]);
    close(afd);
  }
}

/* ---- the exec'd fork server (CF_START_FORKSERVER) ------------------------ */

/* The manager starts the server as /proc/self/exe with this argv:
 *   SERVER_ARGV0 SERVER_TAG <parent pid> <LD_PRELOAD to restore>
 * and its end of the control socket at SERVER_CTL_FD. The library's
 * constructor (server_entry) sees the argv and becomes the fork server
 * before the program's own constructors and main could run: nothing of
 * the host is in it but the program's code and static data as compiled. Its
 * first message from the manager (CTL_CONFIG) brings the region (see
 * region_head): the options, the slots, the object paths. */
#define SERVER_ARGV0  "cfutures-fork-server"
#define SERVER_TAG    "--cfutures-fork-server-v1"
#define SERVER_CTL_FD 3

/* The initializer the server could not find: each worker fails to start
 * with this message, as if the initializer had failed. */
static char init_missing[300];
static int missing_initializer(void *arg) {
  (void)arg;
  return cf_fail(CF_ESYS, "%s", init_missing);
}

/* The 4th argument: "k" LD_PRELOAD was not touched, "u" it was unset in
 * the host, "=value" its value in the host (the manager set it to reach
 * this library, see preload_path). */
static void restore_preload(const char *how) {
  if (how[0] == 'u')
    unsetenv("LD_PRELOAD");
  else if (how[0] == '=')
    setenv("LD_PRELOAD", how + 1, 1);
}

__attribute__((constructor)) static void server_entry(int argc, char **argv,
                                                      char **envp) {
  (void)envp;
  if (argc != 4 || !argv || !argv[0] || strcmp(argv[0], SERVER_ARGV0) != 0 ||
      strcmp(argv[1], SERVER_TAG) != 0)
    return; /* an ordinary start of the program */
  pid_t parent = (pid_t)strtol(argv[2], NULL, 10);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent)
    _exit(0); /* the parent has gone already: the signal will not come */
  restore_preload(argv[3]);
  atfork_off = true;
  ctl c;
  int got[2];
  if (recv_ctl(SERVER_CTL_FD, &c, got, 0) != (ssize_t)sizeof c ||
      c.op != CTL_CONFIG || got[0] < 0)
    _exit(1); /* the manager sees the server go: the pool fails to start */
  struct stat st;
  region_head *r = MAP_FAILED;
  if (fstat(got[0], &st) == 0 && (size_t)st.st_size >= sizeof *r)
    r = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
             got[0], 0);
  if (r == MAP_FAILED || r->magic != REGION_MAGIC ||
      (size_t)st.st_size < region_size(r->n, true))
    _exit(1);
  close_other_fds(SERVER_CTL_FD, -1);
  exec_region = r;
  /* the program's own bias, found once here: every worker inherits it */
  cf__fnref_resolve("", 0);
  cf_process_pool_opts o = {
      .max_tasks_per_child = (size_t)r->max_tasks_per_child,
      .task_timeout_s = r->task_timeout_s,
      .initarg = (void *)(uintptr_t)r->initarg,
  };
  if (r->initarg_is_ref)
    o.initarg = (void *)task_fn(r->initarg);
  if (r->has_init) {
    /* looked up once here: the workers inherit the address */
    o.initializer = (int (*)(void *))task_fn(r->init_ref);
    if (!o.initializer) {
      char *why = cf__fail_take_message();
      snprintf(init_missing, sizeof init_missing, "the initializer: %s",
               why ? why : "not found");
      free(why);
      o.initializer = missing_initializer;
    }
  }
  fork_faults ff = {.skip = r->ff_skip, .fail = r->ff_fail};
  server_main(SERVER_CTL_FD, parent, &o, r->n, region_slots(r), ff);
}

/* The names (DT_NEEDED, DT_SONAME) of a loaded object's dynamic section. */
typedef struct dyn_names {
  const char *soname;
  const char *needed[64];
  size_t nneeded;
} dyn_names;

static void read_dyn(const struct link_map *lm, dyn_names *d) {
  memset(d, 0, sizeof *d);
  if (!lm->l_ld)
    return;
  uintptr_t strtab = 0;
  for (const ElfW(Dyn) *e = lm->l_ld; e->d_tag != DT_NULL; e++)
    if (e->d_tag == DT_STRTAB)
      strtab = e->d_un.d_ptr;
  if (!strtab)
    return;
  /* glibc relocates the dynamic section's addresses in place on most
   * targets; where it does not they are still offsets */
  if (strtab < (uintptr_t)lm->l_addr)
    strtab += (uintptr_t)lm->l_addr;
  for (const ElfW(Dyn) *e = lm->l_ld; e->d_tag != DT_NULL; e++) {
    const char *name = (const char *)strtab + e->d_un.d_val;
    if (e->d_tag == DT_SONAME)
      d->soname = name;
    else if (e->d_tag == DT_NEEDED && d->nneeded < 64)
      d->needed[d->nneeded++] = name;
  }
}

static bool names_object(const char *name, const struct link_map *lm,
                         const dyn_names *d) {
  const char *base = strrchr(lm->l_name, '/');
  base = base ? base + 1 : lm->l_name;
  return (d->soname && strcmp(name, d->soname) == 0) ||
         strcmp(name, lm->l_name) == 0 || strcmp(name, base) == 0;
}

/* Whether `self` is loaded at the program's start: linked into it, needed
 * by it or by what it needs (the DT_NEEDED closure from the program), or
 * preloaded. Then a fresh image of the program runs this library's
 * constructor before main; a library the host dlopen'd is not. */
static bool in_initial_image(const struct link_map *self) {
  if (!self->l_name[0])
    return true; /* linked into the program */
  const char *pre = getenv("LD_PRELOAD");
  const char *base = strrchr(self->l_name, '/');
  base = base ? base + 1 : self->l_name;
  if (pre && strstr(pre, base))
    return true;
  struct link_map *head = NULL;
  void *h = dlopen(NULL, RTLD_NOW | RTLD_NOLOAD);
  if (!h || dlinfo(h, RTLD_DI_LINKMAP, &head) != 0 || !head)
    return false;
  enum { MAX = 512 };
  const struct link_map *in[MAX]; /* found in the closure */
  size_t nin = 0;
  in[nin++] = head;
  for (size_t k = 0; k < nin; k++) {
    dyn_names need;
    read_dyn(in[k], &need);
    for (size_t j = 0; j < need.nneeded; j++)
      for (const struct link_map *m = head; m && nin < MAX; m = m->l_next) {
        dyn_names d;
        read_dyn(m, &d);
        bool seen = false;
        for (size_t i = 0; i < nin && !seen; i++)
          seen = in[i] == m;
        if (!seen && names_object(need.needed[j], m, &d))
          in[nin++] = m;
      }
  }
  for (size_t k = 0; k < nin; k++)
    if (in[k] == self)
      return true;
  return false;
}

/* The path to preload into the fork server so that its image runs this
 * library's constructor: NULL when it would anyway. Decided once. */
static pthread_once_t preload_once = PTHREAD_ONCE_INIT;
static char preload_buf[CF__FNREF_PATH_MAX];
static void find_preload(void) {
  Dl_info info;
  struct link_map *self = NULL;
  if (!dladdr1((const void *)(uintptr_t)&cf_process_pool_new, &info, (void **)&self,
               RTLD_DL_LINKMAP) ||
      !self || in_initial_image(self))
    return;
  if (!realpath(self->l_name, preload_buf))
    snprintf(preload_buf, sizeof preload_buf, "%s", self->l_name);
}
static const char *preload_path(void) {
  pthread_once(&preload_once, find_preload);
  return preload_buf[0] ? preload_buf : NULL;
}

extern char **environ;

/* Starts the fork server as a fresh image of the program (see above) with
 * `peer` as its control socket; *pid is its pid. posix_spawn (vfork and
 * exec underneath) runs no fork handler and takes no lock of the host's
 * in the child. Returns 0 or an errno. */
static int spawn_server(int peer, pid_t *pid) {
  char parent[24], *pre_arg = "k", *pre_env = NULL;
  snprintf(parent, sizeof parent, "%ld", (long)getpid());
  const char *self = preload_path();
  char **copy = NULL;
  if (self) {
    /* environ plus LD_PRELOAD=self[:old]; the server puts the old back */
    const char *old = getenv("LD_PRELOAD");
    size_t n = 0;
    while (environ[n])
      n++;
    copy = malloc((n + 2) * sizeof *copy);
    size_t plen = strlen(self) + (old ? strlen(old) + 1 : 0) + 16;
    pre_env = malloc(plen);
    pre_arg = malloc((old ? strlen(old) : 0) + 2);
    if (!copy || !pre_env || !pre_arg) {
      free(copy);
      free(pre_env);
      free(pre_arg);
      return ENOMEM;
    }
    snprintf(pre_env, plen, "LD_PRELOAD=%s%s%s", self, old ? ":" : "",
             old ? old : "");
    if (old)
      sprintf(pre_arg, "=%s", old);
    else
      strcpy(pre_arg, "u");
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
      if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0)
        copy[k++] = environ[i];
    copy[k++] = pre_env;
    copy[k] = NULL;
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  int rc = posix_spawn_file_actions_init(&fa);
  if (rc == 0) {
    /* dup2 clears close-on-exec on the copy (glibc does it also when the
     * numbers are equal) */
    rc = posix_spawn_file_actions_adddup2(&fa, peer, SERVER_CTL_FD);
    if (rc == 0 && (rc = posix_spawnattr_init(&at)) == 0) {
      posix_spawnattr_setsigmask(&at, &chld);
      posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK);
      char *argv[] = {SERVER_ARGV0, SERVER_TAG, parent, pre_arg, NULL};
      /* EFAULT: another thread's setenv moved the environment while the
       * exec read it (glibc before 2.40 frees the old array); seen about
       * once in ten pools made while a thread loops on setenv. The exec
       * failed cleanly: try again. */
      for (int tries = 0; tries < 100; tries++) {
        rc = posix_spawn(pid, "/proc/self/exe", &fa, &at, argv,
                         copy ? copy : environ);
        if (rc != EFAULT)
          break;
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
      }
      posix_spawnattr_destroy(&at);
    }
    posix_spawn_file_actions_destroy(&fa);
  }
  if (self) {
    free(copy);
    free(pre_env);
    free(pre_arg);
  }
  return rc;
}

/* ---- the manager thread (parent) ----------------------------------------- */

static void ring(ppool *p) {
  uint64_t one = 1;
  ssize_t w = write(p->wake_fd, &one, sizeof one);
  (void)w;
}

/* A byte result: its data is malloc'd, or the mapped memfd it came in. */
typedef struct result_buf {
  cf_buf b;
  bool mapped;
} result_buf;

static void buf_free(void *v) {
  result_buf *r = v;
  if (!r)
    return;
  if (r->mapped)
    munmap(r->b.data, r->b.len);
  else
    free(r->b.data);
  free(r);
}

/* A received payload as a malloc'd string (for messages). */
static char *payload_string(const wire *h, void *payload) {
  if (!payload || h->len == 0) {
    payload_free(h, payload);
    return NULL;
  }
  char *s = strndup(payload, h->len);
  payload_free(h, payload);
  return s;
}

static void task_free(ptask *t) {
  cf_future_unref(t->f);
  for (size_t i = 0; t->chunk && i < t->count; i++)
    cf_future_unref(t->chunk[i]);
  free(t->chunk);
  free(t->data);
  if (t->mfd >= 0)
    eager_memfd_close(t->mfd);
  free(t);
}

/* The futures a task completes: its own, or its chunk's. */
static cf_future **task_futures(ptask *t, size_t *n) {
  *n = t->chunk ? t->count : 1;
  return t->chunk ? t->chunk : &t->f;
}

/* Fails the futures fs[0..n) with code and a copy of msg each. */
static void fail_futures(cf_future **fs, size_t n, int code, const char *msg) {
  for (size_t i = 0; i < n; i++) {
    char *m = msg ? strdup(msg) : NULL;
    if (fs[i] && cf__future_complete(fs[i], code, NULL, NULL, m) != 0)
      free(m);
  }
}

static void fail_task(ptask *t, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_task(ptask *t, int code, const char *fmt, ...) {
  char msg[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  size_t n;
  cf_future **fs = task_futures(t, &n);
  fail_futures(fs, n, code, msg);
  task_free(t);
}

/* Completes items [0, k) of chunk t from its results res[0..len) (a
 * reply, or the area of a worker that died: see run_chunk). An item whose
 * data lies past len fails: its outcome is lost, but it ran. */
static void complete_items(ptask *t, const char *res, size_t len, size_t k) {
  size_t off = t->count * sizeof(item_result);
  for (size_t i = 0; i < k; i++) {
    cf_future *f = t->chunk[i];
    item_result rec;
    uint64_t dlen = 0;
    bool ok = off <= len;
    if (ok) {
      memcpy(&rec, res + i * sizeof rec, sizeof rec);
      dlen = item_data_len(t->kind, &rec);
      ok = dlen <= len - off;
    }
    if (!ok) {
      off = len + 1; /* and every later one */
      char *m = strdup("the worker's report of this item's result was cut "
                       "short or overran its result area");
      if (cf__future_complete(f, CF_EBROKEN, NULL, NULL, m) != 0)
        free(m);
      continue;
    }
    const char *data = res + off;
    off += dlen;
    if (rec.code != 0) {
      char *m = dlen ? strndup(data, dlen) : NULL;
      if (cf__future_complete(f, rec.code, NULL, NULL, m) != 0)
        free(m);
    } else if (t->kind == KIND_CHUNK) {
      void *out = (void *)(uintptr_t)rec.out;
      if (cf__future_complete(f, 0, out, t->destroy, NULL) != 0 && t->destroy)
        t->destroy(out);
    } else {
      /* A byte item's output: its own copy, for its own future. */
      result_buf *b = malloc(sizeof *b);
      void *copy = dlen ? malloc(dlen) : NULL;
      if (!b || (dlen && !copy)) {
        free(b);
        free(copy);
        cf__future_complete(f, CF_ENOMEM, NULL, NULL, NULL);
        continue;
      }
      if (dlen)
        memcpy(copy, data, dlen);
      *b = (result_buf){.b = {.data = copy, .len = dlen}, .mapped = false};
      if (cf__future_complete(f, 0, &b->b, buf_free, NULL) != 0)
        buf_free(b);
    }
  }
}

static void complete_chunk(ptask *t, const wire *r, void *payload) {
  size_t tlen = t->count * sizeof(item_result);
  if (r->code != 0 || r->len < tlen) {
    payload_free(r, payload);
    fail_task(t, r->code ? r->code : CF_EBROKEN, "%s",
              "the worker could not report the chunk's results");
    return;
  }
  complete_items(t, payload, r->len, t->count);
  payload_free(r, payload);
  task_free(t);
}

static void complete_task(ptask *t, const wire *r, void *payload) {
  if (t->chunk) {
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
    payload_free(r, payload);
    if (cf__future_complete(t->f, 0, out, t->destroy, NULL) != 0 && t->destroy)
      t->destroy(out);
  } else {
    result_buf *b = malloc(sizeof *b);
    if (!b) {
      payload_free(r, payload);
      cf__future_complete(t->f, CF_ENOMEM, NULL, NULL, NULL);
    } else {
      b->b.data = payload;
      b->b.len = r->len;
      b->mapped = (r->flags & FLAG_MAPPED) != 0;
      /* the future's result is the cf_buf at the start of result_buf */
      if (cf__future_complete(t->f, 0, &b->b, buf_free, NULL) != 0)
        buf_free(b);
    }
  }
  task_free(t);
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
  p->workers[slot].state =
      send_ctl(p->ctl_fd, &c, NULL, 0, MSG_DONTWAIT) ? W_NONE : W_SPAWNING;
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
 * forked by a task may hold the socket open long after). Sends to a
 * worker do block, but never for long: a worker holds at most PIPE_DEPTH
 * unread tasks of under BIG_PAYLOAD bytes each (more goes in a memfd),
 * which the socket's buffer (~200 KiB) takes in without waiting. */

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
 * 0, *h and *data as recv_msg's; RECV_LOCAL, the payload could not be
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
  close(mfd);
  if (m == MAP_FAILED)
    return RECV_LOCAL;
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
  ssize_t r = recv_fds(w->fd, w->rx + w->rx_len, w->rx_cap - w->rx_len, &box,
                       MSG_DONTWAIT);
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

static void worker_lost(ppool *p, pworker *w) {
  pthread_mutex_lock(&p->fd_mu);
  if (w->fd >= 0)
    close(w->fd);
  w->fd = -1;
  pthread_mutex_unlock(&p->fd_mu);
  rx_reset(w);
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

static void on_worker_ready(ppool *p, pworker *w);

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
  if (res == MAP_FAILED) {
    char msg[160];
    snprintf(msg, sizeof msg,
             "worker %d died after this item finished, and its result "
             "could not be read (%s)",
             w->pid, strerror(errno));
    fail_futures(t->chunk, k, CF_EBROKEN, msg);
    return k;
  }
  complete_items(t, res, (size_t)st.st_size, k);
  munmap(res, (size_t)st.st_size);
  return k;
}

/* A new chunk of t's items [from, count), taking over their futures, for
 * the queue; NULL if there is no memory (then they fail: never lost). */
static ptask *chunk_rest(ptask *t, size_t from) {
  size_t n = t->count - from;
  uint64_t sz; /* the item size, from the chunk's header (see submit_chunk) */
  memcpy(&sz, (const char *)t->data + 8, 8);
  size_t size = (size_t)sz;
  ptask *r = calloc(1, sizeof *r);
  cf_future **fs = malloc(n * sizeof *fs);
  char *data = malloc(16 + n * size);
  if (!r || !fs || !data) {
    free(r);
    free(fs);
    free(data);
    fail_futures(t->chunk + from, n, CF_ENOMEM,
                 "no memory to queue again the items of a chunk after its "
                 "worker died (they had not started)");
    return NULL;
  }
  uint64_t c = n;
  memcpy(data, &c, 8);
  memcpy(data + 8, &sz, 8);
  memcpy(data + 16, (const char *)t->data + 16 + from * size, n * size);
  for (size_t i = 0; i < n; i++) {
    fs[i] = t->chunk[from + i];
    t->chunk[from + i] = NULL;
  }
  *r = (ptask){.kind = t->kind,
               .fn = t->fn,
               .chunk = fs,
               .count = n,
               .data = data,
               .len = 16 + n * size,
               .mfd = -1,
               .destroy = t->destroy};
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
    if (w->fd >= 0)
      on_worker_ready(p, w);
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
      if (t->chunk) {
        /* Item by item: those that finished keep their outcomes, the one
         * running fails, the others go back to the queue. */
        size_t k = chunk_salvage(p, i, t);
        if (k < t->count)
          fail_futures(t->chunk + k, 1, code, why);
        if (k + 1 < t->count)
          rest = chunk_rest(t, k + 1);
        task_free(t);
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

/* Beyond ~30 years a task timeout is as good as none (as for every
 * timeout in cfutures: see core/time.c); in nanoseconds it would overflow
 * (+inf converts to 0, 1.8e10 s wraps around), and a deadline in the past
 * kills every task at once. cf_process_pool_new turns such a timeout
 * into 0, no limit. */
#define MAX_TASK_TIMEOUT_S 1.0e9

static uint64_t task_deadline(const ppool *p) {
  return p->o.task_timeout_s > 0
             ? cf__now_ns() + (uint64_t)(p->o.task_timeout_s * 1e9)
             : 0;
}

/* How many tasks worker w may hold: the pipeline depth, one with a task
 * timeout, and never more than its max_tasks_per_child quota left. */
static unsigned depth_for(const ppool *p, const pworker *w) {
  size_t d = p->o.task_timeout_s > 0 ? 1 : PIPE_DEPTH;
  if (p->o.max_tasks_per_child) {
    size_t left = p->o.max_tasks_per_child - w->done;
    if (left < d)
      d = left;
  }
  return (unsigned)d;
}

/* Hands pending tasks out breadth first: every worker gets a task to run
 * before any gets one to keep ready, and tasks are kept ready only when
 * there is a backlog (at least one pending task per worker), so that a
 * lone task never waits behind a long one while a worker is free. */
static void dispatch(ppool *p) {
  for (unsigned level = 1; level <= PIPE_DEPTH; level++) {
    if (level > 1) {
      pthread_mutex_lock(&p->mu);
      bool backlog = p->npending >= p->n;
      pthread_mutex_unlock(&p->mu);
      if (!backlog)
        return;
    }
    for (size_t i = 0; i < p->n; i++) {
      pworker *w = &p->workers[i];
      if (w->state != W_LIVE || w->qn >= level || w->qn >= depth_for(p, w))
        continue;
      ptask *t = pop_pending(p);
      if (!t)
        return;
      size_t n, live = 0;
      cf_future **fs = task_futures(t, &n);
      /* A chunk runs if any item is live; a task put back by a dead worker
       * is RUNNING already. */
      for (size_t k = 0; k < n; k++) {
        int rc = cf__future_set_running(fs[k]);
        live += rc == 0 || (rc == CF_EINVALSTATE && cf_future_running(fs[k]));
      }
      if (live == 0) {
        task_free(t); /* cancelled while pending */
        i--;          /* this worker still wants one (wraps to 0: fine) */
        continue;
      }
      wire h = {.type = MSG_TASK, .kind = t->kind, .fn = t->fn, .len = t->len};
      int src, mfd = t->mfd;
      if (mfd < 0 && t->len >= BIG_PAYLOAD &&
          (mfd = payload_memfd(t->data, t->len)) < 0) {
        /* Out of descriptors or memory here (EMFILE, ENOMEM): the task
         * fails with the cause; the worker, which got nothing, stays. */
        fail_task(t, CF_ESYS,
                  "the task's input could not be passed to a worker "
                  "(memfd_create: %s)",
                  strerror(errno));
        i--; /* this worker still wants one (wraps to 0: fine) */
        continue;
      }
      w->q[(w->qh + w->qn) % PIPE_DEPTH] = t;
      w->qn++;
      if (mfd >= 0) {
        h.flags = FLAG_MAPPED;
        src = send_header(w->fd, &h, mfd);
        if (mfd != t->mfd)
          close(mfd);
      } else {
        src = send_msg(w->fd, &h, t->data);
      }
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
      payload_free(r, payload);
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
    payload_free(r, payload);
    w->started = true;
    w->deadline = task_deadline(p);
    return;
  }
  if (r->type == MSG_INIT_FAILED) {
    break_pool(p, "the pool's initializer failed in a worker");
    payload_free(r, payload);
    return;
  }
  ptask *t = inflight_pop(w);
  w->done++;
  w->started = false; /* the next one reports its own start */
  w->deadline = 0;
  p->early_deaths = 0;
  /* A worker that reached max_tasks_per_child exits on its own: wait for
   * its exit report (which brings the replacement) instead of feeding it. */
  if (p->o.max_tasks_per_child && w->done >= p->o.max_tasks_per_child)
    w->state = W_DEAD;
  complete_task(t, r, payload);
}

/* Reads what w has sent, without waiting, and handles every complete
 * frame; stops when nothing more has arrived (a task's result often
 * follows its STARTED report at once: it is read in the same turn). A
 * worker that sends what is not a frame is killed as a protocol error. */
static void on_worker_ready(ppool *p, pworker *w) {
  while (w->fd >= 0) {
    wire r;
    void *payload;
    int err = 0;
    const char *bad = NULL;
    int rc =
        w->rx_len > w->rx_off ? rx_take(w, &r, &payload, &err, &bad) : RX_MORE;
    if (rc == RECV_BAD) {
      worker_fault(p, w, bad);
      return;
    }
    if (rc != RX_MORE) {
      on_worker_msg(p, w, rc, &r, payload, err);
      continue;
    }
    int n = rx_fill(w);
    if (n == RX_AGAIN)
      return;
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

/* Forks the fork server from the calling (manager) thread, which runs with
 * every signal blocked, so that no handler of the host runs in the server;
 * the server keeps SIGCHLD blocked for its signalfd. Then asks for the
 * first workers. Returns 0 or CF_ESYS. */
static int start_server(ppool *p) {
  int sv[2];
  pthread_mutex_lock(&p->fd_mu);
  int src = socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
  if (src == 0) {
    p->ctl_fd = sv[0];
    p->ctl_peer = sv[1];
  }
  pthread_mutex_unlock(&p->fd_mu);
  if (src)
    return CF_ESYS;
  pid_t parent = getpid();
  pid_t pid = -1;
  if (p->exec_server) {
    int err = spawn_server(sv[1], &pid);
    if (err) {
      pid = -1;
      errno = err;
    } else {
      ctl c = {.op = CTL_CONFIG};
      if (send_ctl(sv[0], &c, &p->region_fd, 1, 0) != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        pid = -1;
      }
    }
  } else {
    fork_faults ff = fork_faults_from_env(); /* tests only */
    forking_server = true; /* no fork handler: see the top of the file */
    pid = fork();
    if (pid == 0) {
      atfork_off = true;
      close(sv[0]);
      close_other_fds(sv[1], -1);
      sigset_t keep;
      sigemptyset(&keep);
      sigaddset(&keep, SIGCHLD);
      sigprocmask(SIG_SETMASK, &keep, NULL);
      server_main(sv[1], parent, &p->o, p->n, p->shared, ff);
    }
    forking_server = false;
  }
  pthread_mutex_lock(&p->fd_mu);
  close(sv[1]);
  p->ctl_peer = -1;
  if (pid < 0) {
    close(sv[0]);
    p->ctl_fd = -1;
  }
  pthread_mutex_unlock(&p->fd_mu);
  if (pid < 0)
    return CF_ESYS;
  p->server = pid;
  for (size_t i = 0; i < p->n; i++)
    spawn(p, i);
  return 0;
}

static void *manager_main(void *arg) {
  ppool *p = arg;
  struct pollfd *fds = p->pfds;
  size_t *slot_of = p->slot_of;
  int start_rc = start_server(p);
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
    dispatch(p);
    /* Checked after dispatch, which may have dropped the last pending
     * (cancelled) task: nothing would wake us for that. */
    pthread_mutex_lock(&p->mu);
    bool done = p->shutdown && p->head == NULL;
    pthread_mutex_unlock(&p->mu);
    if (done && all_quiet(p))
      break;
    size_t nf = 0;
    fds[nf++] = (struct pollfd){.fd = p->wake_fd, .events = POLLIN};
    /* Room in the server's queue matters only to ask for a worker, which
     * a broken pool never does, nor one waiting to retry a failed fork:
     * polling for POLLOUT then would spin. */
    bool want_spawn = false;
    for (size_t i = 0; i < p->n && !broken; i++)
      want_spawn |= p->workers[i].state == W_NONE;
    int timeout_ms = -1;
    uint64_t now = cf__now_ns();
    if (want_spawn && now < p->spawn_at) {
      want_spawn = false;
      timeout_ms = (int)((p->spawn_at - now) / 1000000) + 1;
    }
    fds[nf++] = (struct pollfd){.fd = p->ctl_fd,
                                .events = POLLIN | (want_spawn ? POLLOUT : 0)};
    for (size_t i = 0; i < p->n; i++) {
      pworker *w = &p->workers[i];
      if (w->fd >= 0 && w->state != W_NONE) {
        slot_of[nf] = i;
        fds[nf++] = (struct pollfd){.fd = w->fd, .events = POLLIN};
      }
      if (w->qn && w->deadline && !w->timed_out) {
        if (now >= w->deadline) {
          /* The task may have ended and its result be on its way: it is
           * still read and counts. But the worker gets nothing more (it
           * would die with it): its exit report brings a replacement. */
          w->timed_out = true;
          w->state = W_DEAD;
          kill(w->pid, SIGKILL);
        } else {
          int ms = (int)((w->deadline - now) / 1000000) + 1;
          if (timeout_ms < 0 || ms < timeout_ms)
            timeout_ms = ms;
        }
      }
    }
    /* With tasks in flight, answers come soon: look for a while first. */
    if (!all_quiet(p)) {
      uint64_t start = cf__now_ns();
      while (poll(fds, nf, 0) == 0 && cf__now_ns() - start < SPIN_NS)
        ;
    }
    if (poll(fds, nf, timeout_ms) < 0 && errno != EINTR)
      break;
    if (fds[0].revents & POLLIN) {
      uint64_t v;
      ssize_t r = read(p->wake_fd, &v, sizeof v);
      (void)r;
    }
    for (size_t k = 2; k < nf; k++)
      if (fds[k].revents & (POLLIN | POLLHUP | POLLERR))
        on_worker_ready(p, &p->workers[slot_of[k]]);
    /* Drain every message from the fork server (it blocks on a full
     * queue, so the queue must not stay full). */
    bool server_gone = false;
    while (!server_gone && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ctl c;
      int fd[2];
      /* A worker's socket and result area may come with it: recorded
       * before a fork. */
      pthread_mutex_lock(&p->fd_mu);
      ssize_t r = recv_ctl(p->ctl_fd, &c, fd, MSG_DONTWAIT);
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
  }
  close(p->ctl_fd);
  p->ctl_fd = -1;
  pthread_mutex_unlock(&p->fd_mu);
  int st;
  while (waitpid(p->server, &st, 0) < 0 && errno == EINTR)
    ;
  return NULL;
}

/* ---- the executor interface ---------------------------------------------- */

/* Makes the region (see region_head) for p: a memfd, mapped. Returns 0
 * or -1 (errno). */
static int make_region(ppool *p, uint64_t init_ref, const uint64_t *arg_ref) {
  p->region_len = region_size(p->n, p->exec_server);
  p->region_fd = memfd_create("cfutures-pool", MFD_CLOEXEC);
  if (p->region_fd < 0 || ftruncate(p->region_fd, (off_t)p->region_len) != 0)
    return -1;
  void *m = mmap(NULL, p->region_len, PROT_READ | PROT_WRITE, MAP_SHARED,
                 p->region_fd, 0);
  if (m == MAP_FAILED)
    return -1;
  region_head *r = p->region = m;
  r->magic = REGION_MAGIC;
  r->n = (uint32_t)p->n;
  r->has_init = p->o.initializer != NULL;
  r->init_ref = init_ref;
  r->initarg = arg_ref ? *arg_ref : (uint64_t)(uintptr_t)p->o.initarg;
  r->initarg_is_ref = arg_ref != NULL;
  r->max_tasks_per_child = p->o.max_tasks_per_child;
  r->task_timeout_s = p->o.task_timeout_s;
  fork_faults ff = fork_faults_from_env(); /* tests only */
  r->ff_skip = ff.skip;
  r->ff_fail = ff.fail;
  p->shared = region_slots(r);
  return 0;
}

/* Publishes the path of ref's object in the region (and those of the
 * objects before it), before anything that needs it reaches a worker. */
static void publish_object(ppool *p, uint64_t ref) {
  uint32_t id = (uint32_t)(ref >> CF__FNREF_OFF_BITS);
  region_head *r = p->region;
  if (id < atomic_load_explicit(&r->nobjs, memory_order_acquire))
    return;
  pthread_mutex_lock(&p->objs_mu);
  uint32_t n = atomic_load_explicit(&r->nobjs, memory_order_relaxed);
  for (; n <= id; n++) {
    const char *path = cf__fnref_path(n);
    snprintf(region_path(r, n), CF__FNREF_PATH_MAX, "%s", path ? path : "");
  }
  /* the paths before the count: a worker reads them after it */
  atomic_store_explicit(&r->nobjs, n, memory_order_release);
  pthread_mutex_unlock(&p->objs_mu);
}

/* What goes on the wire for task function fn: its address with
 * CF_START_FORK, else its reference (core/fnref.h), its object's path
 * published in the region first. Returns 0 or CF_EINVAL/CF_ENOMEM
 * (cf_last_error set). */
static int fn_wire(ppool *p, uintptr_t fn, uint64_t *out) {
  if (!p->exec_server) {
    *out = (uint64_t)fn;
    return 0;
  }
  int rc = cf__fnref_make(fn, out);
  if (rc == 0)
    publish_object(p, *out);
  return rc;
}

/* Queues t (its futures already made); on error frees it. */
static int push_task(ppool *p, ptask *t) {
  pthread_mutex_lock(&p->mu);
  int rc = p->shutdown ? CF_ESHUTDOWN : p->broken ? CF_EBROKEN : 0;
  if (rc == 0) {
    if (p->tail)
      p->tail->next = t;
    else
      p->head = t;
    p->tail = t;
    p->npending++;
  }
  pthread_mutex_unlock(&p->mu);
  if (rc != 0)
    task_free(t);
  else
    ring(p);
  return rc;
}

static int enqueue(ppool *p, uint32_t kind, uint64_t fn, const void *data,
                   size_t len, cf_destroy_fn destroy, cf_future **out) {
  ptask *t = calloc(1, sizeof *t);
  cf_future *f = cf__future_new_owned();
  int mfd = t && f ? eager_memfd(data, len) : -1;
  void *copy = len && mfd < 0 ? malloc(len) : NULL;
  if (!t || !f || (len && mfd < 0 && !copy)) {
    free(t);
    cf_future_unref(f);
    free(copy);
    return CF_ENOMEM;
  }
  if (copy)
    memcpy(copy, data, len);
  t->mfd = mfd;
  t->f = cf_future_ref(f);
  t->kind = kind;
  t->fn = fn;
  t->data = copy;
  t->len = len;
  t->destroy = destroy;
  int rc = push_task(p, t);
  if (rc != 0) {
    cf_future_unref(f);
    return rc;
  }
  *out = f;
  return 0;
}

/* One message for `count` map items (a chunk of `kind`): each item's
 * bytes are copied; in the worker the task gets a pointer to its copy
 * (KIND_CHUNK) or the bytes (KIND_CHUNK_BYTES). */
static int submit_chunk(ppool *p, uint32_t kind, uint64_t fn, const void *items,
                        size_t count, size_t item_size, cf_destroy_fn destroy,
                        cf_future **outs) {
  if (count == 0)
    return 0;
  if (item_size > (SIZE_MAX - 16) / count)
    return CF_EINVAL;
  size_t len = 16 + count * item_size;
  ptask *t = calloc(1, sizeof *t);
  cf_future **fs = calloc(count, sizeof *fs);
  char *data = malloc(len);
  bool ok = t && fs && data;
  for (size_t i = 0; ok && i < count; i++)
    ok = (fs[i] = cf__future_new_owned()) != NULL;
  if (!ok) {
    for (size_t i = 0; fs && i < count; i++)
      cf_future_unref(fs[i]);
    free(fs);
    free(data);
    free(t);
    return CF_ENOMEM;
  }
  uint64_t c = count, sz = item_size;
  memcpy(data, &c, 8);
  memcpy(data + 8, &sz, 8);
  memcpy(data + 16, items, count * item_size);
  t->kind = kind;
  t->mfd = -1;
  t->fn = fn;
  t->data = data;
  t->len = len;
  t->destroy = destroy;
  t->count = count;
  t->chunk = fs;
  for (size_t i = 0; i < count; i++)
    outs[i] = cf_future_ref(fs[i]);
  int rc = push_task(p, t);
  if (rc != 0)
    for (size_t i = 0; i < count; i++) {
      cf_future_unref(outs[i]);
      outs[i] = NULL;
    }
  return rc;
}

static int pp_submit_batch(cf_executor *ex, cf_fn fn, const void *items,
                           size_t count, size_t item_size,
                           cf_destroy_fn destroy, cf_future **outs) {
  uint64_t w;
  int rc = fn_wire((ppool *)ex, (uintptr_t)fn, &w);
  return rc ? rc
            : submit_chunk((ppool *)ex, KIND_CHUNK, w, items, count, item_size,
                           destroy, outs);
}

static int pp_submit_batch_bytes(cf_executor *ex, cf_proc_fn fn,
                                 const void *items, size_t count,
                                 size_t item_size, cf_future **outs) {
  uint64_t w;
  int rc = fn_wire((ppool *)ex, (uintptr_t)fn, &w);
  return rc ? rc
            : submit_chunk((ppool *)ex, KIND_CHUNK_BYTES, w, items, count,
                           item_size, NULL, outs);
}

static int pp_submit(cf_executor *ex, cf_fn fn, void *arg,
                     cf_destroy_fn destroy, cf_future **out) {
  uint64_t w;
  int rc = fn_wire((ppool *)ex, (uintptr_t)fn, &w);
  return rc ? rc
            : enqueue((ppool *)ex, KIND_VALUE, w, &arg, sizeof arg, destroy,
                      out);
}

int cf_process_pool_submit(cf_executor *ex, cf_proc_fn fn, const void *data,
                           size_t len, cf_future **out) {
  if (out)
    *out = NULL;
  if (!ex || !fn || !out || (!data && len) || cf_process_pool_size(ex) == 0)
    return CF__FAIL(CF_EINVAL, !ex ? "NULL executor"
                               : !fn ? "NULL task function"
                               : !out ? "NULL out"
                               : (!data && len) ? "NULL data with len > 0"
                                                : "not a process pool");
  uint64_t w;
  int rc = fn_wire((ppool *)ex, (uintptr_t)fn, &w);
  if (rc)
    return cf__fail_retag(__func__, rc);
  rc = enqueue((ppool *)ex, KIND_BYTES, w, data, len, NULL, out);
  return rc ? cf__fail_submit(__func__, rc) : 0;
}

static int pp_shutdown(cf_executor *ex, bool wait, bool cancel_futures) {
  ppool *p = (ppool *)ex;
  pthread_mutex_lock(&p->mu);
  /* Done-callbacks run on the manager thread, which cannot wait for
   * itself: refuse, as the thread pool does from its workers. */
  if (wait && pthread_equal(pthread_self(), p->manager_self)) {
    pthread_mutex_unlock(&p->mu);
    return CF_EDEADLK;
  }
  p->shutdown = true;
  ptask *list = cancel_futures ? p->head : NULL;
  if (cancel_futures) {
    p->head = p->tail = NULL;
    p->npending = 0;
  }
  pthread_mutex_unlock(&p->mu);
  while (list) {
    ptask *next = list->next;
    size_t n;
    cf_future **fs = task_futures(list, &n);
    for (size_t i = 0; i < n; i++)
      cf__future_cancel(fs[i]);
    task_free(list);
    list = next;
  }
  ring(p);
  if (!wait)
    return 0;
  pthread_mutex_lock(&p->join_mu);
  if (!p->joined) {
    pthread_join(p->manager, NULL); /* it reaps the fork server */
    p->joined = true;
  }
  pthread_mutex_unlock(&p->join_mu);
  return 0;
}

static void pool_free(ppool *p) {
  pool_unregister(p);
  if (p->wake_fd >= 0)
    close(p->wake_fd);
  pthread_cond_destroy(&p->started_cv);
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->join_mu);
  pthread_mutex_destroy(&p->fd_mu);
  free(p->pfds);
  free(p->slot_of);
  free(p->workers);
  if (p->region)
    munmap(p->region, p->region_len);
  if (p->region_fd >= 0)
    close(p->region_fd);
  pthread_mutex_destroy(&p->objs_mu);
  free(p);
}

static void pp_destroy(cf_executor *ex) {
  pool_free((ppool *)ex);
}

static size_t pp_window(const cf_executor *ex) {
  return 2 * ((const ppool *)ex)->n;
}

static const struct cf_executor_vt pp_vt = {
    .name = "process_pool",
    .submit = pp_submit,
    .submit_batch = pp_submit_batch,
    .submit_batch_bytes = pp_submit_batch_bytes,
    .shutdown = pp_shutdown,
    .destroy = pp_destroy,
    .default_window = pp_window,
};

size_t cf_process_pool_size(const cf_executor *ex) {
  return ex && ex->vt == &pp_vt ? ((const ppool *)ex)->n : 0;
}

int cf_process_pool_map_bytes(cf_executor *ex, cf_proc_fn fn, const void *items,
                              size_t n, size_t item_size,
                              const cf_map_opts *opts, cf_map **out) {
  if (out)
    *out = NULL;
  if (ex && cf_process_pool_size(ex) == 0)
    return CF__FAIL(CF_EINVAL, "not a process pool");
  if (opts && opts->result_destroy)
    return CF__FAIL(CF_EINVAL, "result_destroy is set: the map owns each "
                               "item's cf_buf");
  return cf__map_array_bytes(__func__, ex, fn, items, n, item_size, opts, out);
}

int cf_process_pool_new(const cf_process_pool_opts *opts, cf_executor **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  cf_process_pool_opts o = opts ? *opts : (cf_process_pool_opts){0};
  if (o.task_timeout_s != o.task_timeout_s || o.task_timeout_s < 0)
    return CF__FAIL(CF_EINVAL, "task_timeout_s is NaN or negative");
  if (o.max_workers > MAX_PROC_WORKERS)
    return CF__FAILF(CF_EINVAL, "max_workers %zu is above %d", o.max_workers,
                     MAX_PROC_WORKERS);
  if (o.start_method != CF_START_FORKSERVER && o.start_method != CF_START_FORK)
    return CF__FAILF(CF_EINVAL, "start_method %d is neither "
                                "CF_START_FORKSERVER nor CF_START_FORK",
                     (int)o.start_method);
  uint64_t init_ref = 0, arg_ref = 0;
  bool arg_is_ref = false;
  if (o.start_method == CF_START_FORKSERVER && o.initializer) {
    if (cf__fnref_make((uintptr_t)o.initializer, &init_ref) != 0)
      return cf__fail_retag(__func__, CF_EINVAL);
    /* initarg pointing into the program's static data (or a library's)
     * travels as a reference, like a function; anything else as is */
    arg_is_ref = o.initarg && cf__fnref_make((uintptr_t)o.initarg, &arg_ref) == 0;
  }
  if (o.task_timeout_s > MAX_TASK_TIMEOUT_S) /* +inf too: forever */
    o.task_timeout_s = 0;
  size_t n = o.max_workers;
  if (n == 0) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    n = cpus > 0 ? (size_t)cpus : 1;
  }
  ppool *p = calloc(1, sizeof *p);
  if (!p)
    return CF__FAIL(CF_ENOMEM, "no memory for the pool");
  p->base.vt = &pp_vt;
  p->o = o;
  p->n = n;
  p->server = -1;
  p->ctl_fd = -1;
  p->ctl_peer = -1;
  p->region_fd = -1;
  p->exec_server = o.start_method == CF_START_FORKSERVER;
  pthread_mutex_init(&p->objs_mu, NULL);
  pthread_mutex_init(&p->mu, NULL);
  pthread_mutex_init(&p->fd_mu, NULL);
  pthread_mutex_init(&p->join_mu, NULL);
  pthread_cond_init(&p->started_cv, NULL);
  p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  p->workers = calloc(n, sizeof *p->workers);
  p->pfds = calloc(n + 2, sizeof *p->pfds);
  p->slot_of = calloc(n + 2, sizeof *p->slot_of);
  if (make_region(p, init_ref, arg_is_ref ? &arg_ref : NULL) != 0)
    p->shared = NULL;
  if (!p->workers || !p->pfds || !p->slot_of || !p->shared || p->wake_fd < 0) {
    int rc = p->wake_fd < 0 ? CF_ESYS : CF_ENOMEM;
    pool_free(p);
    return CF__FAIL(rc, rc == CF_ESYS ? "eventfd failed"
                                      : "no memory for the workers' tables");
  }
  for (size_t i = 0; i < n; i++)
    p->workers[i].fd = p->workers[i].area_fd = -1;
  if (p->exec_server && o.initializer) {
    publish_object(p, init_ref);
    if (arg_is_ref)
      publish_object(p, arg_ref);
  }
  pool_register(p); /* for the fork handlers */
  /* The manager runs with every signal blocked: the host's signals go to
   * the host's threads, and the fork server it forks starts with no
   * handler able to run. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int prc = pthread_create(&p->manager, NULL, manager_main, p);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (prc != 0) {
    pool_free(p);
    return CF__FAIL(CF_ESYS, "the manager thread could not be created");
  }
  pthread_mutex_lock(&p->mu);
  while (!p->started)
    pthread_cond_wait(&p->started_cv, &p->mu);
  int rc = p->start_rc, err = p->start_errno;
  pthread_mutex_unlock(&p->mu);
  if (rc != 0) {
    pthread_join(p->manager, NULL);
    pool_free(p);
    return CF__FAILF(rc, "the fork server could not be started: %s",
                     strerror(err));
  }
  *out = &p->base;
  return 0;
}
