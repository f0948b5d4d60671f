/* The process pool, private: what its files share.
 *
 * Files: process_pool.c (the executor face: submit, shutdown, free, the
 * fork handlers), process_pool_wire.c (framing and descriptor passing),
 * process_pool_worker.c (a worker's loop), process_pool_server.c (the fork
 * server, forked or exec'd, and how it starts), process_pool_manager.c (the
 * manager thread in the parent).
 *
 * Processes: the parent (any number of threads), a fork server started at
 * pool creation (a fresh image of the program, or a fork of the host: see
 * process_pool_server.c), and workers forked by the fork server on
 * request. The fork server stays single-threaded, so forking a worker from
 * it is safe at any time; it dies with the parent (PR_SET_PDEATHSIG),
 * workers die with it, it reaps the workers and reports each exit status
 * to the parent.
 *
 * PR_SET_PDEATHSIG fires when the forking *thread* ends, not the process:
 * so the fork server is started by the manager thread, which lives exactly
 * as long as the pool (forking it from the thread that calls
 * cf_process_pool_new would kill the pool when that thread exits). The
 * manager also tears everything down before it returns: it hangs up on the
 * workers and the fork server and reaps the server.
 *
 * Channels:
 *   parent <-> fork server: a SOCK_SEQPACKET pair. SPAWN(slot) asks for a
 *     worker; SPAWNED(slot, pid) answers with the worker's socket and its
 *     result area (a memfd: see run_chunk) attached (SCM_RIGHTS);
 *     EXITED(pid, wait status) reports a death; CONFIG, first, hands an
 *     exec'd server the region (see region_head) and the manager's
 *     eventfd, the workers' bell (a forked server inherits both).
 *   parent <-> worker: a SOCK_STREAM pair carrying framed messages: TASK
 *     (function, as an address or a reference: see region_head; input
 *     bytes) and SPARE one way; STARTED (a header alone, sent as the
 *     worker starts a task, with a task timeout only: the timeout counts
 *     from it), RESULT (code, output bytes or failure message; for a
 *     chunk of map items, each item's) or INIT_FAILED the other. Small
 *     messages go through two rings in shared memory instead (see
 *     msg_ring); both ways are numbered, and read in that order. Every
 *     frame starts with a magic number and its length is bounded (below
 *     64 KiB inline, larger ones in a memfd no shorter than it): bytes a
 *     task scribbles on the socket are a protocol error, not a length to
 *     wait for. In a worker the socket sits at descriptor 512 or above
 *     (WORKER_FD_MIN), away from the low numbers that the host's own
 *     descriptors use in the parent; so do its result area and its bell
 *     (the manager's eventfd: see msg_ring).
 *
 * In the parent the manager's work (the workers table, every worker's
 * descriptors and buffers) belongs to whoever holds the pool's drive
 * (ppool.drive): the manager thread, except while it sleeps in poll, when
 * a submitter may hand its task out and a waiting thread may read its
 * result itself (see cf__pp_drive_wait). The manager thread polls the
 * fork server, the workers and an eventfd that shutdown, drivers and
 * workers ring; it hands pending tasks to idle workers, completes futures
 * (so done-callbacks run on it, or on a driver), kills workers past the
 * task timeout and asks for replacements (after a failed fork, with a
 * growing delay: see FORK_BACKOFF_MAX_NS). Nobody waits on a worker's
 * socket: what has arrived is read into a per-worker buffer, where partial
 * frames wait (see on_worker_ready). A worker is known dead from the fork
 * server's exit report, which settles its tasks; end-of-file is not
 * needed (a process forked by a task may keep the socket open).
 *
 * Locks: `mu` guards the pending list and the flags submitters and the
 * manager share; the workers table belongs to the drive's holder, except
 * that the numbers of the manager's sockets (ctl_fd, ctl_peer, each
 * worker's fd) change only under `fd_mu` (by the manager thread), for the
 * fork handlers. Order: a pool link's `mu` (see pp_link), then the drive,
 * then `mu` or `fd_mu` (never held together); `pools_mu` (the registry of
 * pools) before any `fd_mu`.
 *
 * A host that forks without exec: its child would keep copies of the
 * manager's sockets, and the workers and the fork server would not see
 * end-of-file until that child exits (cf_executor_free would wait for
 * it). A pthread_atfork handler closes them in the child: `prepare` takes
 * `pools_mu` and every pool's `fd_mu`, so the child's copy of the numbers
 * is consistent. The fork handlers do nothing in the manager's own fork of
 * the fork server (the server closes everything itself) nor in the
 * server (single-threaded, its locks' state inherited from anywhere);
 * posix_spawn, for an exec'd server, runs none.
 */
#ifndef CF_EXECUTOR_PROCESS_POOL_INTERNAL_H
#define CF_EXECUTOR_PROCESS_POOL_INTERNAL_H

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <sched.h>
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

static inline bool is_chunk(uint32_t kind) {
  return kind == KIND_CHUNK || kind == KIND_CHUNK_BYTES;
}

/* A chunk's results (its reply, and the worker's result area: see
 * run_chunk) are laid out as a cf__chunk_seg's buffer
 * (executor/executor_internal.h): a table of cf__item_result, one per
 * item, then each item's data, padded. */
enum {
  MSG_TASK = 1,
  MSG_RESULT = 2,
  MSG_INIT_FAILED = 3,
  MSG_STARTED = 4,
  MSG_SPARE = 5 /* manager -> worker: a memfd for its next big result */
};
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
  uint32_t flags;
  uint32_t seq; /* 1, 2, ... each way, per worker (see msg_ring) */
  uint64_t len;
} wire;

/* Small messages between the manager and a worker (a task or a result
 * of up to RING_INLINE bytes, a start report) go through rings in shared
 * memory, one each way, instead of the worker's socket: no system call on
 * either side, and a reader that spins on the doorbell (slot_shared.sent,
 * .posted) sees them without being woken by the socket. Anything else (a
 * bigger or mapped payload, a descriptor, a ring that is full) goes on the
 * socket. Both ways carry message numbers (wire.seq, from 1, per worker
 * and direction), and the reader handles them in that order, whichever
 * way each came: a message is in the ring before any later one is on the
 * socket. A reader that sleeps is woken after a ring message: the worker
 * sleeps on a futex (slot_shared.asleep), the manager in poll, which the
 * worker wakes through the pool's eventfd (region_head.bell_wanted and
 * bell_rung: one bell per sleep of the manager). Neither
 * side trusts the other's entries blindly: a bad magic, flags or length,
 * or a ring that claims more than RING_N entries, is a protocol error. */
#define RING_N      32
#define RING_INLINE 216
typedef struct ring_entry {
  wire h;
  char data[RING_INLINE];
} ring_entry;

/* One writer, one reader: the writer fills an entry, then publishes
 * `tail` (release); the reader takes it, then moves `head`. Both count
 * entries from 0, reset by the fork server before each fork. */
typedef struct msg_ring {
  _Atomic uint64_t tail;
  char pad_tail[64 - sizeof(uint64_t)];
  _Atomic uint64_t head;
  char pad_head[64 - sizeof(uint64_t)];
  ring_entry e[RING_N];
} msg_ring;

/* Writer: puts h (magic and flags set here) and its payload in r, if it
 * fits and there is room: true. */
static inline bool ring_put(msg_ring *r, const wire *h, const void *data) {
  uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
  /* acquire: the reader is done with the entry this reuses */
  uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
  if (h->len > RING_INLINE || tail - head >= RING_N)
    return false;
  ring_entry *e = &r->e[tail % RING_N];
  e->h = *h;
  e->h.magic = WIRE_MAGIC;
  e->h.flags = 0;
  if (h->len)
    memcpy(e->data, data, h->len);
  atomic_store_explicit(&r->tail, tail + 1, memory_order_release);
  return true;
}

/* Reader: if r's oldest entry is message `seq`, copies its header to *h
 * and returns 1, with *data pointing at its payload (valid until
 * ring_pop); 0 if it is not there (yet); -1 if the ring or the entry is
 * not well formed (*bad says how). */
static inline int ring_peek(msg_ring *r, uint32_t seq, wire *h,
                            const char **data, const char **bad) {
  uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
  /* acquire: pairs with the writer's release; the entry is written */
  uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
  if (tail - head > RING_N) {
    *bad = "a ring that claims more entries than it holds";
    return -1;
  }
  if (tail == head)
    return 0;
  const ring_entry *e = &r->e[head % RING_N];
  memcpy(h, &e->h, sizeof *h);
  if (h->seq != seq)
    return 0; /* an earlier message is on the socket */
  if (h->magic != WIRE_MAGIC || h->flags || h->len > RING_INLINE) {
    *bad = "a ring entry that is not a message";
    return -1;
  }
  *data = e->data;
  return 1;
}

static inline void ring_pop(msg_ring *r) {
  uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
  atomic_store_explicit(&r->head, head + 1, memory_order_release);
}

typedef struct ctl {
  uint32_t op, slot;
  int32_t pid, status; /* SPAWNED with pid -1: status is fork's errno */
} ctl;

typedef struct ptask {
  struct ptask *next;
  cf_future *f; /* its future (a chunk's: one for all its items) */
  /* A chunk (KIND_CHUNK*): items [base, base + count) of the chunk whose
   * outcomes `acc` gathers (shared with the tasks that re-run the rest of
   * it after a worker died: see chunk_rest); f completes with acc once
   * every item has its outcome. */
  cf__chunk *acc;
  size_t base, count;
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
  /* Doorbells, so that a warm worker or manager spins on memory instead
   * of polling its socket (a system call each time): `sent` counts the
   * messages the manager has sent the slot's worker, `posted` those the
   * worker has sent back (by ring or socket: see msg_ring; bells do not
   * count). Whoever stops spinning sleeps on its socket. */
  _Atomic uint64_t sent;
  _Atomic uint64_t posted;
  char pad[64 - 4 * sizeof(uint64_t)];
  /* 1: the worker is about to sleep, or sleeps, on this word (a futex
   * shared between processes): the manager wakes it after a message (see
   * msg_ring). Set by the worker, seq_cst against `sent` (a Dekker pair
   * with the manager). */
  _Atomic uint32_t asleep;
  char pad_asleep[64 - sizeof(uint32_t)];
  msg_ring tasks;   /* manager -> worker */
  msg_ring results; /* worker -> manager */
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
  uint16_t initarg_is_ref; /* initarg points into an object: a reference */
  _Atomic uint32_t nobjs;  /* paths published */
  /* 1 while nobody in the parent watches the workers' doorbells: a
   * worker rings the manager's eventfd after a ring message (see
   * msg_ring; bell_rung). Written
   * by whoever holds the pool's drive (ppool.drive); seq_cst against the
   * workers' `posted` (a Dekker pair). */
  _Atomic uint32_t bell_wanted;
  /* A worker has rung since the manager last woke: the others need not
   * (one bell per sleep). Set by the worker that rings, cleared by the
   * manager thread when it wakes, before it reads the rings. */
  _Atomic uint32_t bell_rung;
  /* The manager is done with the workers: one asleep on its doorbell
   * (slot_shared.asleep) exits instead (it would not see end-of-file). */
  _Atomic uint32_t closing;
  uint32_t pad32;
  uint64_t init_ref, initarg;
  uint64_t max_tasks_per_child;
  double task_timeout_s;
  int64_t ff_skip, ff_fail; /* see fork_faults */
  char pad[128 - 9 * sizeof(uint32_t) - 5 * sizeof(uint64_t) - sizeof(double)];
} region_head;

_Static_assert(sizeof(region_head) == 128, "region_head: one size");

/* The region of the slots `shared` (region_slots's inverse). */
static inline region_head *slots_region(slot_shared *shared) {
  return (region_head *)shared - 1;
}

static inline size_t region_size(size_t n, bool paths) {
  return sizeof(region_head) + n * sizeof(slot_shared) +
         (paths ? (size_t)CF__FNREF_MAX_OBJECTS * CF__FNREF_PATH_MAX : 0);
}

static inline slot_shared *region_slots(region_head *r) {
  return (slot_shared *)(r + 1);
}

static inline char *region_path(region_head *r, uint32_t id) {
  return (char *)(region_slots(r) + r->n) + (size_t)id * CF__FNREF_PATH_MAX;
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
 * know when each task starts), one running and the rest ready, as many as
 * the backlog allows (see dispatch). Like Python, a task sent ahead counts
 * as RUNNING: it cannot be cancelled any more. So a worker whose tasks
 * take SHORT_TASK_NS or more (or are not timed yet) holds PIPE_DEPTH_LONG
 * (two: one running, one ready, as Python's max_workers + 1 queued calls
 * for one worker), and one whose tasks are shorter, up to PIPE_DEPTH: it
 * then reads several tasks in one system call and waits less on the
 * manager, and a shutdown that cancels pending tasks loses at most
 * PIPE_DEPTH short ones per worker (under 8 ms of work) to RUNNING.
 * cfutures_procs, 2 workers, interleaved runs, medians: tiny tasks
 * submitted, 2 ahead 40 k tasks/s, this 98 k; map of 1M items in chunks
 * of 1,000, 12.4 M -> 15.8 M items/s. */
#define PIPE_DEPTH      8
#define PIPE_DEPTH_LONG 2
#define SHORT_TASK_NS   1000000u

typedef struct pworker {
  int state;
  pid_t pid;
  int fd;
  int area_fd; /* its result area (see run_chunk), until its exit report */
  size_t done; /* tasks finished by this process */
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
  /* What the manager has still to send it: tx[tx_off, tx_len), the rest
   * of a message its socket did not take at once, and tx_fd, a descriptor
   * (owned) that goes with the first of those bytes (-1: none). While
   * anything is left the worker gets no new message. */
  char *tx;
  size_t tx_off, tx_len, tx_cap;
  int tx_fd;
  ino_t spare;  /* a warm buffer lent to it (cf__pp_warm_spare), 0: none */
  int last_mfd; /* the memfd of the last mapped payload read (rx_take) */
  /* Frames taken from it: when they match its doorbell (slot_shared.posted)
   * the manager does not read its socket again only to find it empty. */
  uint64_t heard;
  uint32_t next_seq; /* the message number it sends next (wire.seq) */
  uint32_t out_seq;  /* the number of the next message sent to it */
  /* Its result ring's tail just before the last read of its socket: see
   * next_msg. */
  uint64_t ring_mark;
  unsigned phantoms; /* reads that found no message its doorbell announced */
  /* How long its tasks take, a moving average of the gaps between its
   * results while it had the next task in hand (UINT64_MAX: not known),
   * when its last result came, and whether the task after that one had
   * been sent by then: see PIPE_DEPTH. */
  uint64_t task_ns_avg, last_result_ns;
  bool next_in_hand;
} pworker;

static inline ptask *inflight_pop(pworker *w) {
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
  slot_shared *shared;     /* the region's n slots */
  pthread_mutex_t objs_mu; /* publishing object paths into the region */
  /* Tasks pushed so far: a holder of the drive that sees it move hands
   * them out (see drive_leave). */
  _Atomic uint64_t pushes;
  uint64_t spin_pushes; /* the manager thread's: see news() */
  /* The drive: who runs the manager's work right now (0 free, 1 held, 2
   * held with a thread blocked for it; a futex). The manager thread holds
   * it except while it sleeps in poll; meanwhile a submitter hands its
   * task to a worker itself, and a thread that waits for a result reads
   * it itself (see cf__pp_drive_wait): on a warm pool neither wakes the
   * manager thread. Everything the manager thread owns (the workers
   * table, its buffers) belongs to whoever holds the drive. */
  _Atomic uint32_t drive;
  /* What the manager thread's poll watches (see poll_sig), as of its last
   * poll: a driver that changes it rings wake_fd. Drive holder only. */
  uint64_t poll_sig;
  struct pp_link *link; /* see pp_link */
  unsigned early_deaths; /* manager only: see EARLY_DEATHS_MAX */
  char broken_why[200];  /* manager only: why `broken` was set */
  /* Failed forks (manager only; see FORK_BACKOFF_MAX_NS): */
  uint64_t spawn_at;      /* ns; no SPAWN asked for before it (backoff) */
  uint64_t backoff_ns;    /* the next delay after a failure; 0: none yet */
  uint64_t failing_since; /* ns; the first failure of a run, 0: none */
  int fork_errno;         /* the last failure's errno */
  struct pollfd *pfds;    /* manager only: n + 2 */
  size_t *slot_of;        /* manager only: pfds index -> worker slot */
  pthread_cond_t started_cv;
  bool started;    /* guarded by mu: the manager has forked the fork server */
  int start_rc;    /* guarded by mu: how that went */
  int start_errno; /* guarded by mu: the errno of a failed start */
  pthread_mutex_t mu;
  ptask *head, *tail; /* pending; guarded by mu */
  size_t npending;    /* guarded by mu */
  bool shutdown;      /* guarded by mu */
  bool broken;        /* guarded by mu */
  bool joined;        /* guarded by join_mu */
  pthread_mutex_t join_mu;
} ppool;

/* Payloads from this size on travel in a memfd passed with SCM_RIGHTS:
 * one copy in, none out (the receiver maps it), instead of two through the
 * socket. */
#define BIG_PAYLOAD (64 * 1024)

#define FLAG_MAPPED 1u /* wire.flags: the payload is a mapped memfd */
#define FLAG_SPARE  2u /* wire.flags: MSG_SPARE's memfd comes with it */

/* Sends a message: 0; -1 when the socket failed (the peer is gone, or the
 * stream is cut); SEND_LOCAL when the payload could not be prepared
 * (memfd: errno says why), nothing sent, the stream intact. */
#define SEND_LOCAL (-2)

/* cf__pp_recv_msg's failures besides -1 (end-of-file, socket error, stream
 * cut): RECV_BAD, a malformed message (the peer broke the protocol);
 * RECV_LOCAL, the payload could not be received here (no descriptor slot, no
 * memory: errno says which) and was skipped, the stream intact. */
#define RECV_BAD (-2)

#define RECV_LOCAL (-3)

/* Where cf__pp_recv_fds puts the descriptors that come with the bytes: appended
 * to fds[n..max); those beyond are closed (`excess`); `dropped` when the
 * kernel could not pass some (no descriptor slot here: MSG_CTRUNC). */
typedef struct fdbox {
  int *fds;
  size_t max, n;
  bool excess, dropped;
} fdbox;

#define SPIN_NS 50000u

/* A spin loop's pause between two looks at memory. */
static inline void cf__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Spins until cond(ctx) holds (true) or `ns` have passed (false). Past
 * SPIN_YIELD_NS it yields the CPU between rounds of looks: the pool's
 * parties (submitters, the manager, the workers) often outnumber the
 * cores, and a spinner that keeps its core holds up the one it waits
 * for. cfutures_procs, 2 cores, 2 workers, medians of 3: submit 190 k ->
 * 240 k tasks/s, map 14 M -> 21 M items/s, round trip 3.7 -> 3.8 us. */
#define SPIN_YIELD_NS 5000u
static inline bool pp_spin_until(bool (*cond)(void *ctx), void *ctx,
                                 uint64_t ns) {
  uint64_t start = cf__now_ns(), now;
  do {
    for (int k = 0; k < 64; k++) {
      if (cond(ctx))
        return true;
      cf__cpu_relax();
    }
    now = cf__now_ns();
    if (now - start > SPIN_YIELD_NS)
      sched_yield();
  } while (now - start < ns);
  return false;
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

/* Beyond ~30 years a task timeout is as good as none (as for every
 * timeout in cfutures: see core/time.c); in nanoseconds it would overflow
 * (+inf converts to 0, 1.8e10 s wraps around), and a deadline in the past
 * kills every task at once. cf_process_pool_new turns such a timeout
 * into 0, no limit. */
#define MAX_TASK_TIMEOUT_S 1.0e9

/* In the host: the registry's fork handlers do nothing in the manager
 * thread that forks its fork server (process_pool.c), nor in a fork
 * server (its own locks' state was inherited from anywhere). */
extern _Thread_local bool cf__pp_forking_server;
extern bool cf__pp_atfork_off;
/* In a fork server of CF_START_FORKSERVER and its workers: the region
 * (NULL elsewhere); see cf__pp_task_fn. */
extern region_head *cf__pp_exec_region;

/* process_pool_wire.c: framing, descriptor passing */
int cf__pp_eager_memfd(const void *data, size_t len);
void cf__pp_eager_memfd_close(int fd);
void cf__pp_warm_drop(void);
/* An idle warm buffer of at least min_cap bytes, now busy, lent as a
 * worker's spare for its next big result (its fd, still the pool's; *ino
 * names it), or -1. cf__pp_warm_release puts it back (the worker died
 * with it); cf__pp_warm_give takes a result's memfd (owned) back: a lent
 * one becomes idle, another is kept warm if there is room, else closed. */
int cf__pp_warm_spare(size_t min_cap, ino_t *ino);
void cf__pp_warm_release(ino_t ino);
void cf__pp_warm_give(int fd);
/* A worker's cached shared mapping of memfd fd (see worker_maps); pinned
 * ones stay mapped until cf__pp_worker_unpin. */
void *cf__pp_worker_map(int fd, const struct stat *st, size_t len, bool pin);
bool cf__pp_worker_unpin(const void *p); /* false: p was not kept */
/* Sends h, whose payload is already in memfd mfd, blocking (a worker). */
int cf__pp_send_mapped(int fd, wire *h, int mfd);
ssize_t cf__pp_sendv_fds(int sock, const struct iovec *iov, size_t niov,
                         const int *fds, size_t nfds, int flags);
ssize_t cf__pp_send_fds(int sock, const void *buf, size_t len, const int *fds,
                        size_t nfds, int flags);
ssize_t cf__pp_recv_fds(int sock, void *buf, size_t len, fdbox *box, int flags);
int cf__pp_payload_memfd(const void *data, size_t len);
int cf__pp_send_msg(int fd, wire *h, const void *data);
void cf__pp_payload_free(const wire *h, void *data);
int cf__pp_recv_msg(int fd, wire *h, void **data, bool populate, int *spare_fd);
void cf__pp_close_other_fds(int keep1, int keep2);
int cf__pp_send_ctl(int fd, const ctl *c, const int *pass, size_t npass,
                    int flags);
ssize_t cf__pp_recv_ctl(int fd, ctl *c, int got[2], int flags);

/* process_pool_worker.c: the worker process */
_Noreturn void cf__pp_worker_main(int sock, int area_fd, int bell_fd,
                                  const cf_process_pool_opts *o,
                                  slot_shared *sh, region_head *region);
uintptr_t cf__pp_task_fn(uint64_t fn);

/* process_pool_server.c: the fork server */
fork_faults cf__pp_fork_faults_from_env(void);
int cf__pp_start_server(ppool *p);
_Noreturn void cf__pp_server_main(int ctl_fd, int bell_fd, pid_t parent,
                                  const cf_process_pool_opts *o, size_t n,
                                  slot_shared *shared, fork_faults ff);
int cf__pp_spawn_server(int peer, pid_t *pid);

/* process_pool_manager.c: the manager thread */
void cf__pp_ring(ppool *p);
void cf__pp_task_free(ptask *t);
void *cf__pp_manager_main(void *arg);
/* A submitter's push: if the drive is free, hands the pool's pending
 * tasks to idle workers on this thread (see ppool.drive). */
void cf__pp_drive_submit(ppool *p);
/* A thread waiting for f: if the drive is free, does the manager's work
 * on this thread (hands out tasks, reads results, completes futures: so
 * done-callbacks may run here) until f is done, d passes (CF_ETIMEDOUT),
 * or nothing has come for a while (CF_EBUSY; also when the drive is
 * taken): the caller then sleeps as usual. 0: f is done. */
int cf__pp_drive_wait(ppool *p, cf_future *f, const cf_deadline *d);
/* This thread drives p: the manager thread, or a driver (a done-callback
 * runs in it). */
bool cf__pp_driving(const ppool *p);

#endif
