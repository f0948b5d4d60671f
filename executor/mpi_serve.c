/* The MPI executor's process side: cf_mpi_serve (the entry call), the
 * worker's serving loop, MPI start-up and the end of the job.
 *
 * A worker is single-threaded: its main thread receives task messages,
 * runs each record in order and sends each result with MPI_Isend (sends
 * complete in the background while it runs the next task; it tests them
 * between tasks). It never blocks inside MPI while idle: it probes, and
 * backs off from spinning to sched_yield to sleeps of up to 1 ms, so idle
 * workers cost little CPU on an oversubscribed machine.
 *
 * The end of the job, on the main rank (job_end): shut down a pool still
 * alive (waiting for it), send TAG_EXIT to every waiting worker, free the
 * duplicate communicator. It runs from whichever comes first: an attribute
 * on MPI_COMM_SELF whose delete callback MPI calls at the start of
 * MPI_Finalize (so a program that initialised and finalises MPI itself
 * still releases its workers), or the exit handler, which then finalises
 * MPI if cfutures initialised it.
 *
 * Locks: `world_mu` guards `world` and cf__mpi_live_pool; it is never held
 * while waiting for a pool. */
#include <dlfcn.h>
#include <limits.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cfutures/mpi_pool.h>

#include "core/fnref.h"
#include "core/report.h"
#include "executor/executor_internal.h"
#include "executor/mpi_internal.h"

static pthread_mutex_t world_mu = PTHREAD_MUTEX_INITIALIZER;
static cf__mpi_world world = {.comm = MPI_COMM_NULL};
struct cf_executor *cf__mpi_live_pool; /* guarded by world_mu */
static bool exit_registered;           /* guarded by world_mu */
static bool job_ended;                 /* guarded by world_mu */

void cf__mpi_lock(void) {
  pthread_mutex_lock(&world_mu);
}

void cf__mpi_unlock(void) {
  pthread_mutex_unlock(&world_mu);
}

cf__mpi_world *cf__mpi_world_get(void) {
  return &world;
}

const char *cf__mpi_strerror(int rc, char *buf, int cap) {
  int len = 0;
  if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS || len <= 0)
    snprintf(buf, (size_t)cap, "MPI error %d", rc);
  return buf;
}

/* ---- the end of the job (main rank) -------------------------------------- */

static void job_end(void) {
  pthread_mutex_lock(&world_mu);
  if (job_ended) {
    pthread_mutex_unlock(&world_mu);
    return;
  }
  job_ended = true;
  cf_executor *live = cf__mpi_live_pool;
  pthread_mutex_unlock(&world_mu);
  if (live) /* the progress thread ends: MPI is ours again */
    cf_executor_shutdown(live, true, false);
  int fin = 1;
  MPI_Finalized(&fin);
  if (fin || !world.main_of_job || world.broken)
    return;
  for (int r = 1; r < world.size; r++)
    MPI_Send(NULL, 0, MPI_BYTE, r, CF__MPI_TAG_EXIT, world.comm);
  MPI_Comm_free(&world.comm);
}

static int self_delete(MPI_Comm comm, int keyval, void *attr, void *extra) {
  job_end();
  return MPI_SUCCESS;
}

static void at_exit(void) {
  job_end();
  int init = 0, fin = 1;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  pthread_mutex_lock(&world_mu);
  bool broken = world.broken;
  pthread_mutex_unlock(&world_mu);
  /* After a spawned worker died, MPI_Finalize would wait for it for ever:
   * the process leaves without it (the launcher may complain). */
  if (init && !fin && world.initialized_by_us && !broken)
    MPI_Finalize();
}

/* With world_mu held, MPI initialised: job_end at MPI_Finalize or exit. */
static void register_job_end(void) {
  if (exit_registered)
    return;
  exit_registered = true;
  int key;
  if (MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, self_delete, &key, NULL) ==
      MPI_SUCCESS)
    MPI_Comm_set_attr(MPI_COMM_SELF, key, NULL);
  atexit(at_exit);
}

/* With world_mu held: MPI initialised (by us, at MPI_THREAD_SERIALIZED,
 * if it was not), its thread level in *level. */
static int init_locked(const char *call, int *argc, char ***argv, int *level) {
  int init = 0, fin = 0;
  MPI_Finalized(&fin);
  if (fin)
    return cf__fail_at(call, CF_EINVALSTATE, "MPI was already finalised");
  MPI_Initialized(&init);
  *level = MPI_THREAD_SINGLE;
  if (!init) {
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, level);
    if (rc != MPI_SUCCESS) {
      char e[MPI_MAX_ERROR_STRING];
      return cf__fail_fmt(call, CF_ESYS, "MPI_Init_thread failed: %s",
                          cf__mpi_strerror(rc, e, sizeof e));
    }
    world.initialized_by_us = true;
  } else {
    MPI_Query_thread(level);
  }
  register_job_end();
  return 0;
}

int cf__mpi_ensure_init(const char *call) {
  pthread_mutex_lock(&world_mu);
  int level;
  int rc = init_locked(call, NULL, NULL, &level);
  pthread_mutex_unlock(&world_mu);
  if (rc == 0 && level < MPI_THREAD_SERIALIZED)
    rc = cf__fail_fmt(call, CF_EINVAL,
                      "MPI runs at thread level %d: the MPI pool's progress "
                      "thread needs MPI_THREAD_SERIALIZED or "
                      "MPI_THREAD_MULTIPLE",
                      level);
  return rc;
}

/* ---- the worker ---------------------------------------------------------- */

typedef struct pending_send {
  MPI_Request req;
  void *buf; /* freed once the send completes */
} pending_send;

typedef struct worker {
  MPI_Comm comm;
  int manager; /* the main rank, in comm */
  int rank;    /* this worker's rank in its world, for messages */
  char host[MPI_MAX_PROCESSOR_NAME];
  pending_send *sends;
  size_t nsends, cap_sends;
  /* the last function resolved, to skip the lookup for the next record */
  uint64_t last_ref;
  char last_path[CF__FNREF_PATH_MAX];
  uint32_t last_path_len;
  void *last_fn;
  char *rx; /* the receive buffer, reused while below 1 MiB */
  size_t rx_cap;
  int32_t shm_pid;    /* the main rank's pid once a probe passed; else 0 */
  uint64_t shm_min;   /* its threshold: smaller results go through MPI */
  uint64_t linger_ns; /* yield, not sleep, this long after the last message */
} worker;

/* Set while a worker runs a task: its crash handler and exit handler use
 * them (async-signal-safe: written before, read in the handler). */
static volatile sig_atomic_t in_task;
static char crash_prefix[MPI_MAX_PROCESSOR_NAME + 64];
static size_t crash_prefix_len;
static struct sigaction old_actions[NSIG];

static void put_uint(char *buf, size_t *n, unsigned v) {
  char d[12];
  int k = 0;
  do
    d[k++] = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  while (k)
    buf[(*n)++] = d[--k];
}

/* A fatal signal in a worker: say who died, then let the previous handler
 * (OpenMPI's backtrace, or the default action) have it. */
static void on_crash(int sig) {
  char msg[sizeof crash_prefix + 64];
  size_t n = crash_prefix_len;
  memcpy(msg, crash_prefix, n);
  const char *mid = in_task ? ": fatal signal " : ": fatal signal (idle) ";
  memcpy(msg + n, mid, strlen(mid));
  n += strlen(mid);
  put_uint(msg, &n, (unsigned)sig);
  const char *tail =
      in_task ? " in a task; the MPI job ends\n" : "; the MPI job ends\n";
  memcpy(msg + n, tail, strlen(tail));
  n += strlen(tail);
  ssize_t w = write(2, msg, n);
  (void)w;
  /* The previous handling now: a raised signal at once; a fault, should
   * the previous handler return, again when the instruction re-runs. */
  sigaction(sig, &old_actions[sig], NULL);
  raise(sig);
}

static void worker_exit_check(void) {
  if (!in_task)
    return;
  /* Leaving without MPI_Finalize (which would wait for the others) ends
   * the job under mpiexec, and trips the parent's watch when spawned. Not
   * MPI_Abort: from a spawned worker of a program started alone, OpenMPI
   * 4.1 crashes the parent inside its runtime (orte_rml_oob_send_buffer_nb,
   * seen here). */
  static const char tail[] =
      ": a task called exit(); the worker leaves, the MPI job ends (a worker "
      "cannot leave its job)\n";
  ssize_t w = write(2, crash_prefix, crash_prefix_len);
  w = write(2, tail, sizeof tail - 1);
  (void)w;
  _exit(70);
}

static void worker_signals(const worker *w) {
  int n = snprintf(crash_prefix, sizeof crash_prefix,
                   "cfutures: MPI worker rank %d on host %s", w->rank, w->host);
  crash_prefix_len = n > 0 ? (size_t)n : 0;
  int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
  for (size_t k = 0; k < sizeof sigs / sizeof sigs[0]; k++) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_crash;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_NODEFER;
    sigaction(sigs[k], &sa, &old_actions[sigs[k]]);
  }
  atexit(worker_exit_check);
}

/* Completes what can be completed of the worker's sends; with `all`,
 * waits for every one. */
static void sends_progress(worker *w, bool all) {
  size_t k = 0;
  for (size_t i = 0; i < w->nsends; i++) {
    int done = 0;
    if (all)
      MPI_Wait(&w->sends[i].req, MPI_STATUS_IGNORE), done = 1;
    else
      MPI_Test(&w->sends[i].req, &done, MPI_STATUS_IGNORE);
    if (done)
      free(w->sends[i].buf);
    else
      w->sends[k++] = w->sends[i];
  }
  w->nsends = k;
}

/* Sends buf[0..len) with `tag`; buf (malloc'd, or NULL) is freed once
 * sent. Returns 0 or -1 (out of memory: sent and waited for instead). */
static void send_owned(worker *w, void *buf, size_t len, int tag) {
  if (w->nsends == w->cap_sends) {
    size_t cap = w->cap_sends ? 2 * w->cap_sends : 16;
    pending_send *s = realloc(w->sends, cap * sizeof *s);
    if (!s) {
      MPI_Send(buf, (int)len, MPI_BYTE, w->manager, tag, w->comm);
      free(buf);
      return;
    }
    w->sends = s;
    w->cap_sends = cap;
  }
  pending_send *s = &w->sends[w->nsends++];
  s->buf = buf;
  MPI_Isend(buf, (int)len, MPI_BYTE, w->manager, tag, w->comm, &s->req);
}

/* A failure's message: "rank R on HOST: <the task's message>". */
static char *failure_message(const worker *w, int code, char *task_msg) {
  char *m = NULL;
  if (asprintf(&m, "rank %d on %s: %s", w->rank, w->host,
               task_msg ? task_msg : cf_strerror(code)) < 0)
    m = NULL;
  free(task_msg);
  return m;
}

/* Sends the result of record `id`: code (0: ok) and the payload
 * data[0..len), which `owned` says is the worker's to free once sent (a
 * byte task's output) or must be copied now. */
static void send_result(worker *w, uint64_t id, int code, void *data,
                        size_t len, bool owned) {
  cf__mpi_result h = {
      .magic = CF__MPI_MAGIC, .code = code, .id = id, .len = len};
  if (len > CF__MPI_MAX_MSG - sizeof h) {
    if (owned)
      free(data);
    char *m = failure_message(w, CF_ETOOBIG,
                              strdup("the task's result is "
                                     "larger than one MPI "
                                     "message (2 GiB)"));
    send_result(w, id, CF_ETOOBIG, m, m ? strlen(m) : 0, true);
    return;
  }
  if (owned && len >= 64 * 1024) {
    /* Large: the header, then the data straight from the task's buffer. */
    h.flags = CF__MPI_RES_SEPARATE;
    cf__mpi_result *hp = malloc(sizeof h);
    if (hp) {
      *hp = h;
      send_owned(w, hp, sizeof h, CF__MPI_TAG_RESULT);
      send_owned(w, data, len, CF__MPI_TAG_RDATA);
      return;
    }
  }
  char *msg = malloc(sizeof h + len);
  if (!msg) {
    if (owned)
      free(data);
    h.code = CF_ENOMEM;
    h.len = 0;
    MPI_Send(&h, sizeof h, MPI_BYTE, w->manager, CF__MPI_TAG_RESULT, w->comm);
    return;
  }
  memcpy(msg, &h, sizeof h);
  if (len)
    memcpy(msg + sizeof h, data, len);
  if (owned)
    free(data);
  send_owned(w, msg, sizeof h + len, CF__MPI_TAG_RESULT);
}

/* The function of a record, or NULL (*why says why). */
static void *resolve(worker *w, const cf__mpi_task *t, const char *path,
                     char **why) {
  if (w->last_fn && t->fn == w->last_ref && t->path_len == w->last_path_len &&
      memcmp(path, w->last_path, t->path_len) == 0)
    return w->last_fn;
  if (t->path_len >= CF__FNREF_PATH_MAX) {
    *why = strdup("the function's object path is too long");
    return NULL;
  }
  char p[CF__FNREF_PATH_MAX];
  memcpy(p, path, t->path_len);
  p[t->path_len] = '\0';
  void *fn = (void *)cf__fnref_resolve(p, t->fn);
  if (!fn) {
    *why = strdup(cf_last_error());
    return NULL;
  }
  memcpy(w->last_path, p, t->path_len + 1);
  w->last_path_len = t->path_len;
  w->last_ref = t->fn;
  w->last_fn = fn;
  return fn;
}

/* Runs one item or task: a cf_fn on a value (or an item's address), or a
 * cf_proc_fn on bytes. Returns the code; *msg the failure's message. */
static int run_value(cf_fn fn, void *arg, uint64_t *out, char **msg) {
  void *o = NULL;
  cf__fail_clear();
  in_task = 1;
  int rc = fn(arg, &o);
  in_task = 0;
  *msg = rc ? cf__fail_take_message() : NULL;
  if (!rc)
    cf__fail_clear();
  *out = (uint64_t)(uintptr_t)o;
  return rc;
}

static int run_bytes(cf_proc_fn fn, const void *in, size_t len, cf_buf *out,
                     char **msg) {
  *out = (cf_buf){0};
  cf__fail_clear();
  in_task = 1;
  int rc = fn(in, len, out);
  in_task = 0;
  *msg = rc ? cf__fail_take_message() : NULL;
  if (!rc)
    cf__fail_clear();
  if (rc == 0 && out->len && !out->data) {
    *msg = strdup("the task set out->len but no out->data");
    rc = CF_EINVAL;
  }
  if (rc != 0) {
    free(out->data); /* a failed task's partial output, if malloc'd */
    *out = (cf_buf){0};
  }
  return rc;
}

/* Runs a chunk and sends its table and data as one result, laid out as a
 * cf__chunk_seg's buffer (executor_internal.h): each item's data (a
 * message with its NUL, or a byte item's output) padded to
 * CF__ITEM_ALIGN, so that the map hands byte outputs out in place. */
static void run_chunk(worker *w, const cf__mpi_task *t, void *fn,
                      const char *items) {
  size_t count = t->count, table = count * sizeof(cf__mpi_item);
  cf__mpi_item *recs = calloc(count ? count : 1, sizeof *recs);
  char **datas = calloc(count ? count : 1, sizeof *datas);
  if (!recs || !datas) {
    free(recs);
    free(datas);
    char *m = failure_message(w, CF_ENOMEM, NULL);
    send_result(w, t->id, CF_ENOMEM, m, m ? strlen(m) : 0, true);
    return;
  }
  size_t total = table;
  for (size_t i = 0; i < count; i++) {
    const char *item = items + i * t->item_size;
    char *msg = NULL;
    int rc;
    if (t->kind == CF__MPI_KIND_CHUNK) {
      /* The task gets its own copy: it may keep or write it. */
      rc = run_value((cf_fn)(uintptr_t)fn, (void *)item, &recs[i].out, &msg);
    } else {
      cf_buf b;
      rc = run_bytes((cf_proc_fn)(uintptr_t)fn, item, t->item_size, &b, &msg);
      if (rc == 0) {
        datas[i] = b.data;
        recs[i].out = b.len;
        total += (size_t)cf__item_span(true, &recs[i]);
      }
    }
    recs[i].code = rc;
    if (rc) {
      char *m = failure_message(w, rc, msg);
      size_t ml = m ? strlen(m) + 1 : 0; /* with its NUL */
      datas[i] = m;
      recs[i].msg_len = (uint32_t)ml;
      total += (size_t)cf__item_span(false, &recs[i]);
    }
  }
  char *out = malloc(total ? total : 1);
  size_t off = table;
  if (out) {
    memcpy(out, recs, table);
    for (size_t i = 0; i < count; i++) {
      bool bytes = t->kind == CF__MPI_KIND_CHUNK_BYTES;
      size_t dl = recs[i].code ? recs[i].msg_len : bytes ? recs[i].out : 0;
      size_t span = (size_t)cf__item_span(bytes, &recs[i]);
      if (dl)
        memcpy(out + off, datas[i], dl);
      memset(out + off + dl, 0, span - dl);
      off += span;
    }
  }
  for (size_t i = 0; i < count; i++)
    free(datas[i]);
  free(datas);
  free(recs);
  if (!out) {
    char *m = failure_message(w, CF_ENOMEM, NULL);
    send_result(w, t->id, CF_ENOMEM, m, m ? strlen(m) : 0, true);
    return;
  }
  send_result(w, t->id, 0, out, total, true);
}

#define LINGER_MAX 100000000 /* ns */

/* A byte task over shared memory (mpi_shm.c): the input in the main
 * rank's memfd (or inline), the result into the spare it lent when it
 * fits, else through MPI as any result. */
static void run_bytes_shm(worker *w, const cf__mpi_task *t, void *fn,
                          const char *payload) {
  cf__mpi_shm_task st;
  const char *in = NULL;
  char *why = NULL;
  if (t->len < sizeof st) {
    why = strdup("a malformed shared-memory task");
  } else {
    memcpy(&st, payload, sizeof st);
    if (st.in.id == 0 && st.in_len <= t->len - sizeof st)
      in = payload + sizeof st;
    else if (st.in.id != 0 && st.in_len <= st.in.cap && w->shm_pid)
      in = cf__mpi_shm_map(w->shm_pid, &st.in);
    if (!in)
      why = strdup(st.in.id ? "cannot map the input's shared memory"
                            : "a malformed shared-memory task");
  }
  if (why) {
    char *m = failure_message(w, CF_ESYS, why);
    send_result(w, t->id, CF_ESYS, m, m ? strlen(m) : 0, true);
    return;
  }
  cf_buf b;
  char *m = NULL;
  int rc = run_bytes((cf_proc_fn)(uintptr_t)fn, in, st.in_len, &b, &m);
  if (rc) {
    m = failure_message(w, rc, m);
    send_result(w, t->id, rc, m, m ? strlen(m) : 0, true);
    return;
  }
  /* Large payloads come in runs: stay awake (yielding) for about as long
   * as moving this one took, 1 ns a byte, rather than sleep through the
   * next one's arrival. A 64 MiB echo's round trip went from 48% to 68% of
   * memcpy's speed with both sides awake (see docs/mpi.md). */
  uint64_t linger = 2000000 + st.in_len + b.len;
  w->linger_ns = linger < LINGER_MAX ? linger : LINGER_MAX;
  /* The input's mapping may go now: the spare's may take its place. */
  bool fits = st.spare.id && b.len > 0 && b.len >= w->shm_min &&
              b.len <= st.spare.cap && w->shm_pid;
  char *spare = fits ? cf__mpi_shm_map(w->shm_pid, &st.spare) : NULL;
  if (!spare) {
    send_result(w, t->id, 0, b.data, b.len, true);
    return;
  }
  memcpy(spare, b.data, b.len);
  free(b.data);
  cf__mpi_result *h = malloc(sizeof *h);
  cf__mpi_result hv = {.magic = CF__MPI_MAGIC,
                       .id = t->id,
                       .len = b.len,
                       .flags = CF__MPI_RES_SHM};
  if (!h) {
    MPI_Send(&hv, sizeof hv, MPI_BYTE, w->manager, CF__MPI_TAG_RESULT, w->comm);
    return;
  }
  *h = hv;
  send_owned(w, h, sizeof *h, CF__MPI_TAG_RESULT);
}

/* Runs every record of a task message msg[0..len). */
static void run_message(worker *w, char *msg, size_t len) {
  size_t off = 0;
  while (len - off >= sizeof(cf__mpi_task)) {
    cf__mpi_task t;
    memcpy(&t, msg + off, sizeof t);
    uint64_t plen = cf__mpi_pad8(t.path_len);
    if (t.magic != CF__MPI_MAGIC || plen > len - off - sizeof t ||
        t.len > len - off - sizeof t - plen) {
      /* Only cfutures writes these messages: a bad one is a bug. */
      fprintf(stderr,
              "%.*s: a task message that is not one (bad magic or "
              "length); aborting the MPI job\n",
              (int)crash_prefix_len, crash_prefix);
      MPI_Abort(MPI_COMM_WORLD, 70);
    }
    const char *path = msg + off + sizeof t;
    char *payload = msg + off + sizeof t + plen;
    off += sizeof t + plen + cf__mpi_pad8(t.len);
    char *why = NULL;
    void *fn = resolve(w, &t, path, &why);
    if (!fn) {
      char *m = failure_message(w, CF_ESYS, why);
      send_result(w, t.id, CF_ESYS, m, m ? strlen(m) : 0, true);
      continue;
    }
    bool chunk =
        t.kind == CF__MPI_KIND_CHUNK || t.kind == CF__MPI_KIND_CHUNK_BYTES;
    if (chunk && (t.item_size == 0 || t.count > t.len / t.item_size)) {
      char *m = failure_message(w, CF_EINVAL, strdup("a malformed chunk"));
      send_result(w, t.id, CF_EINVAL, m, m ? strlen(m) : 0, true);
      continue;
    }
    if (chunk) {
      run_chunk(w, &t, fn, payload);
    } else if (t.kind == CF__MPI_KIND_VALUE) {
      uint64_t arg = 0, out = 0;
      memcpy(&arg, payload, t.len < 8 ? t.len : 8);
      char *m = NULL;
      int rc =
          run_value((cf_fn)(uintptr_t)fn, (void *)(uintptr_t)arg, &out, &m);
      if (rc) {
        m = failure_message(w, rc, m);
        send_result(w, t.id, rc, m, m ? strlen(m) : 0, true);
      } else {
        send_result(w, t.id, 0, &out, sizeof out, false);
      }
    } else if (t.kind == CF__MPI_KIND_BYTES_SHM) {
      run_bytes_shm(w, &t, fn, payload);
    } else {
      cf_buf b;
      char *m = NULL;
      int rc = run_bytes((cf_proc_fn)(uintptr_t)fn, payload, t.len, &b, &m);
      if (rc) {
        m = failure_message(w, rc, m);
        send_result(w, t.id, rc, m, m ? strlen(m) : 0, true);
      } else {
        send_result(w, t.id, 0, b.data, b.len, true);
      }
    }
  }
}

/* Sleeps ns nanoseconds. */
static void nap(long ns) {
  struct timespec ts = {0, ns};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Serves until TAG_EXIT. Idle, it backs off: polls for 50 µs after the
 * last message, then yields until 2 ms (after a large shared-memory
 * payload: longer, w->linger_ns), then sleeps from 50 µs doubling up to
 * 1 ms between polls; never sleeps while results are still going out (a
 * large send needs this process's progress calls). */
static void serve(worker *w) {
  uint64_t quiet_since = now_ns();
  long delay = 50000;
  for (;;) {
    int flag = 0;
    MPI_Message m;
    MPI_Status st;
    MPI_Improbe(w->manager, MPI_ANY_TAG, w->comm, &flag, &m, &st);
    if (!flag) {
      if (w->nsends)
        sends_progress(w, false);
      uint64_t quiet = now_ns() - quiet_since;
      if (quiet > 2000000 && quiet > w->linger_ns && w->nsends == 0) {
        nap(delay);
        if (delay < 1000000)
          delay *= 2;
      } else if (quiet > 50000) {
        sched_yield();
      }
      continue;
    }
    quiet_since = now_ns();
    delay = 50000;
    w->linger_ns = 0; /* until this message says otherwise */
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    size_t n = count > 0 ? (size_t)count : 0;
    if (st.MPI_TAG == CF__MPI_TAG_EXIT) {
      MPI_Mrecv(NULL, 0, MPI_BYTE, &m, MPI_STATUS_IGNORE);
      break;
    }
    if (st.MPI_TAG == CF__MPI_TAG_SHM_DROP) { /* a pool ended */
      MPI_Mrecv(NULL, 0, MPI_BYTE, &m, MPI_STATUS_IGNORE);
      cf__mpi_shm_unmap_all();
      continue;
    }
    if (st.MPI_TAG == CF__MPI_TAG_SHM_PROBE) { /* a pool starts */
      cf__mpi_shm_probe pr;
      if (n != sizeof pr) {
        fprintf(stderr,
                "%.*s: a probe message that is not one; aborting the MPI "
                "job\n",
                (int)crash_prefix_len, crash_prefix);
        MPI_Abort(MPI_COMM_WORLD, 70);
      }
      MPI_Mrecv(&pr, (int)sizeof pr, MPI_BYTE, &m, MPI_STATUS_IGNORE);
      pr.host_id[sizeof pr.host_id - 1] = '\0';
      int32_t ok = cf__mpi_shm_probe_answer(&pr);
      w->shm_pid = ok ? pr.pid : 0;
      w->shm_min = pr.min;
      MPI_Send(&ok, 1, MPI_INT32_T, w->manager, CF__MPI_TAG_SHM_ACK, w->comm);
      continue;
    }
    if (n > w->rx_cap) {
      free(w->rx);
      w->rx_cap = n;
      w->rx = malloc(n);
      if (!w->rx) {
        fprintf(stderr,
                "%.*s: no memory for a task message of %zu bytes; "
                "aborting the MPI job\n",
                (int)crash_prefix_len, crash_prefix, n);
        MPI_Abort(MPI_COMM_WORLD, 71);
      }
    }
    MPI_Mrecv(w->rx, count, MPI_BYTE, &m, MPI_STATUS_IGNORE);
    if (st.MPI_TAG == CF__MPI_TAG_TASK)
      run_message(w, w->rx, n);
    if (w->rx_cap > ((size_t)256 << 20)) { /* keep it warm up to 256 MiB */
      free(w->rx);
      w->rx = NULL;
      w->rx_cap = 0;
    }
    if (w->nsends)
      sends_progress(w, false);
  }
  sends_progress(w, true);
  cf__mpi_shm_unmap_all();
  free(w->sends);
  free(w->rx);
}

static void worker_run(MPI_Comm comm, int manager, bool spawned) {
  worker w;
  memset(&w, 0, sizeof w);
  w.comm = comm;
  w.manager = manager;
  MPI_Comm_rank(MPI_COMM_WORLD, &w.rank);
  int hl = 0;
  if (MPI_Get_processor_name(w.host, &hl) != MPI_SUCCESS)
    snprintf(w.host, sizeof w.host, "?");
  if (spawned) { /* for the parent's watch (mpi_pool.c) */
    cf__mpi_hello h;
    memset(&h, 0, sizeof h);
    h.pid = (int32_t)getpid();
    memcpy(h.host, w.host, sizeof h.host);
    MPI_Send(&h, sizeof h, MPI_BYTE, manager, CF__MPI_TAG_HELLO, comm);
  }
  worker_signals(&w);
  /* A worker's memory is kept for reuse rather than given back: no mmap'd
   * blocks, no trimming (glibc). Fresh pages cost more than copying them
   * for large payloads: a task's 64 MiB output buffer, fresh, faults for
   * 200-370 ms in the VM we measured on, against 4.5 ms to copy it warm.
   * The price: a worker's heap stays at its high-water mark. */
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
  serve(&w);
}

/* ---- the entry call ------------------------------------------------------ */

int cf_mpi_serve(int *argc, char ***argv) {
  pthread_mutex_lock(&world_mu);
  if (world.served) {
    pthread_mutex_unlock(&world_mu);
    return CF__FAIL(CF_EINVALSTATE, "cf_mpi_serve was already called");
  }
  world.served = true;
  int level; /* checked by cf_mpi_pool_new: workers need none */
  int rc = init_locked(__func__, argc, argv, &level);
  if (rc) {
    pthread_mutex_unlock(&world_mu);
    return rc;
  }
  MPI_Comm parent = MPI_COMM_NULL;
  MPI_Comm_get_parent(&parent);
  if (parent != MPI_COMM_NULL) {
    /* Spawned by a pool: serve it, then leave it. */
    pthread_mutex_unlock(&world_mu);
    worker_run(parent, 0, true);
    MPI_Comm_disconnect(&parent);
    in_task = 0;
    if (world.initialized_by_us)
      MPI_Finalize();
    return 0;
  }
  int size = 1, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (size == 1) {
    pthread_mutex_unlock(&world_mu);
    return 1;
  }
  MPI_Comm dup = MPI_COMM_NULL;
  int mrc = MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  if (mrc != MPI_SUCCESS) {
    pthread_mutex_unlock(&world_mu);
    char e[MPI_MAX_ERROR_STRING];
    return CF__FAILF(CF_ESYS, "MPI_Comm_dup failed: %s",
                     cf__mpi_strerror(mrc, e, sizeof e));
  }
  if (rank == 0) {
    world.main_of_job = true;
    world.comm = dup;
    world.size = size;
    pthread_mutex_unlock(&world_mu);
    return 1;
  }
  pthread_mutex_unlock(&world_mu);
  worker_run(dup, 0, false);
  MPI_Comm_free(&dup);
  if (world.initialized_by_us)
    MPI_Finalize();
  return 0;
}
