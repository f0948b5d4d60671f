/* Private: the MPI executor's wire format and the process-wide MPI state
 * shared by executor/mpi_serve.c (entry call, workers) and
 * executor/mpi_pool.c (the pool and its progress thread).
 *
 * Messages (all MPI_BYTE, one communicator per pool: a duplicate of
 * MPI_COMM_WORLD under mpiexec, the spawn's intercommunicator otherwise):
 *
 *   main -> worker  TAG_TASK: one or more task records back to back, each
 *                   a cf__mpi_task header, the function's object path
 *                   (path_len bytes, no NUL), zero-padded to 8, then the
 *                   payload (len bytes), zero-padded to 8.
 *                   TAG_EXIT: empty; the worker stops serving.
 *   worker -> main  TAG_RESULT: a cf__mpi_result header, then its payload
 *                   unless RES_SEPARATE; the worker answers every record,
 *                   in the order it received them.
 *                   TAG_RDATA: the payload of a RES_SEPARATE result, sent
 *                   right after its header straight from the task's own
 *                   buffer (large outputs: no copy into a message).
 *
 * MPI keeps messages between two ranks on one communicator in order
 * (non-overtaking), per tag: the main rank probes TAG_RESULT only and
 * posts the receive of a TAG_RDATA message as soon as it has read its
 * header, so each data message meets its own receive.
 *
 * Same host (mpi_shm.c): at the start of each pool the main rank sends
 * every worker a TAG_SHM_PROBE (a cf__mpi_shm_probe: its host id, pid and
 * a small memfd); the worker answers TAG_SHM_ACK (an int32, 1: it is on
 * the same host and boot, opened the memfd through /proc/<pid>/fd and
 * wrote the token it read there into its slot, which the main rank
 * checks). To such a worker a large byte task goes as KIND_BYTES_SHM: its
 * payload a cf__mpi_shm_task (the input in a memfd of the main rank, or
 * inline after it; a spare memfd lent for the result, or none). A result
 * written into the spare comes back as a header with RES_SHM and no
 * payload. TAG_SHM_DROP (empty, main -> worker, when a pool ends): the
 * worker unmaps what it mapped.
 *
 * A payload is: KIND_VALUE 8 bytes (the argument; the result: 8 bytes),
 * KIND_BYTES the input bytes (the result: the output bytes), the chunks a
 * table of `count` cf__mpi_item then each item's data in item order (a
 * failure's message, a byte item's output). A failure's payload is its
 * message, not NUL-terminated. */
#ifndef CF_EXECUTOR_MPI_INTERNAL_H
#define CF_EXECUTOR_MPI_INTERNAL_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CF__MPI_MAGIC 0x314d4643u /* "CFM1" */

enum {
  CF__MPI_TAG_TASK = 101,
  CF__MPI_TAG_EXIT = 102,
  CF__MPI_TAG_RESULT = 103,
  CF__MPI_TAG_RDATA = 104,
  /* spawned worker -> main, once: a cf__mpi_hello */
  CF__MPI_TAG_HELLO = 105,
  CF__MPI_TAG_SHM_PROBE = 106, /* main -> worker: a cf__mpi_shm_probe */
  CF__MPI_TAG_SHM_ACK = 107,   /* worker -> main: int32 1 or 0 */
  CF__MPI_TAG_SHM_DROP = 108,  /* main -> worker: unmap every buffer */
};

enum {
  CF__MPI_KIND_VALUE = 1,
  CF__MPI_KIND_BYTES = 2,
  CF__MPI_KIND_CHUNK = 3,       /* items to a cf_fn by pointer */
  CF__MPI_KIND_CHUNK_BYTES = 4, /* items to a cf_proc_fn as bytes */
  CF__MPI_KIND_BYTES_SHM = 5,   /* KIND_BYTES by a cf__mpi_shm_task */
};

typedef struct cf__mpi_task {
  uint32_t magic; /* CF__MPI_MAGIC */
  uint32_t kind;
  uint64_t id;        /* the main rank's; echoed in the result */
  uint64_t fn;        /* cf__fnref_make's reference */
  uint32_t path_len;  /* the object's path follows, no NUL */
  uint32_t count;     /* chunks: items; else 1 */
  uint64_t item_size; /* chunks: bytes per item */
  uint64_t len;       /* payload bytes after the padded path */
} cf__mpi_task;

#define CF__MPI_RES_SEPARATE 1u
#define CF__MPI_RES_SHM      2u /* the payload is in the task's spare */

typedef struct cf__mpi_result {
  uint32_t magic; /* CF__MPI_MAGIC */
  int32_t code;   /* 0, or the task's failure code */
  uint64_t id;
  uint64_t len; /* payload bytes */
  uint32_t flags;
  uint32_t reserved;
} cf__mpi_result;

/* Who a spawned worker is, for the main rank's watch (mpi_pool.c). */
typedef struct cf__mpi_hello {
  int32_t pid;
  char host[MPI_MAX_PROCESSOR_NAME];
} cf__mpi_hello;

/* ---- the same-host fast path (mpi_shm.c) ---- */

/* Byte payloads from this size on go through shared memory to a worker on
 * the same host (CFUTURES_MPI_SHM_MIN overrides it, for measuring;
 * CFUTURES_MPI_SHM=0 turns the path off). Measured: see docs/mpi.md. */
#define CF__MPI_SHM_MIN ((size_t)64 << 10)

/* A memfd of the main rank: the worker opens /proc/<pid>/fd/<fd>. Ids are
 * never reused in a process: the worker keys its mappings by them. */
typedef struct cf__mpi_shm_ref {
  uint64_t id; /* 0: none */
  uint64_t cap;
  int32_t fd;
  uint32_t reserved;
} cf__mpi_shm_ref;

/* The payload of a KIND_BYTES_SHM record; in_len bytes of input follow
 * inline (padded to 8) when in.id is 0. */
typedef struct cf__mpi_shm_task {
  cf__mpi_shm_ref in;
  cf__mpi_shm_ref spare; /* for the result, from offset 0; id 0: none */
  uint64_t in_len;
} cf__mpi_shm_task;

#define CF__MPI_HOST_ID 320

typedef struct cf__mpi_shm_probe {
  int32_t pid;   /* the main rank's */
  uint32_t slot; /* the worker's index: it writes at 64 + 8 * slot */
  uint32_t n;    /* slots */
  uint32_t reserved;
  cf__mpi_shm_ref ref; /* the probe's memfd */
  uint64_t token;      /* 0 on the wire: the worker reads it at offset 0 */
  uint64_t min;        /* the threshold: smaller results skip the spare */
  char host_id[CF__MPI_HOST_ID]; /* hostname/boot_id */
} cf__mpi_shm_probe;

/* "hostname/boot_id" of this host. */
void cf__mpi_host_id(char *buf, size_t cap);
/* The threshold in bytes; whether the path is wanted (CFUTURES_MPI_SHM). */
size_t cf__mpi_shm_min(void);
bool cf__mpi_shm_wanted(void);

/* Main rank: warm buffers. take: an idle one of at least len bytes, or a
 * new one (pre-faulted), busy; NULL when none can be had (over the limits,
 * or no memfd): then the payload goes through MPI. give: back to the idle
 * ones (freed if no pool lives or too many bytes are idle). discard:
 * closed and forgotten (a worker may still write into it: a broken pool).
 * use(+1/-1): a pool starts or ends using them; the last one's end frees
 * the idle ones. count: buffers that exist (tests). Thread-safe. */
typedef struct cf__mpi_shm cf__mpi_shm;
cf__mpi_shm *cf__mpi_shm_take(size_t len);
void cf__mpi_shm_give(cf__mpi_shm *b);
void cf__mpi_shm_discard(cf__mpi_shm *b);
void cf__mpi_shm_use(int delta);
size_t cf__mpi_shm_count(void);
cf__mpi_shm_ref cf__mpi_shm_ref_of(const cf__mpi_shm *b);
char *cf__mpi_shm_data(const cf__mpi_shm *b);

/* Main rank: a probe for n workers (fd returned, -1 on failure; *map and
 * *len its mapping, which the caller unmaps, and closes fd). */
int cf__mpi_shm_probe_make(size_t n, cf__mpi_shm_probe *pr, void **map,
                           size_t *len);
/* Worker: answers a probe (true: the fast path works from here). */
bool cf__mpi_shm_probe_answer(const cf__mpi_shm_probe *pr);
/* Worker: the mapping of r (cached by id), or NULL. */
void *cf__mpi_shm_map(int32_t pid, const cf__mpi_shm_ref *r);
void cf__mpi_shm_unmap_all(void);

/* A chunk item's record: the executors' (executor_internal.h). */
typedef cf__item_result cf__mpi_item;

static inline uint64_t cf__mpi_pad8(uint64_t n) {
  return (n + 7) & ~(uint64_t)7;
}

/* The largest message: MPI counts are int. */
#define CF__MPI_MAX_MSG ((uint64_t)INT32_MAX - 4096)

/* The process's MPI state (mpi_serve.c). */
typedef struct cf__mpi_world {
  bool initialized_by_us; /* we called MPI_Init_thread: we finalise */
  bool served;            /* cf_mpi_serve ran */
  bool main_of_job;       /* rank 0 of an mpiexec job, workers waiting */
  MPI_Comm comm;          /* main_of_job: the duplicate of the world */
  int size;               /* main_of_job: the world's size */
  bool broken;            /* a spawned worker died: MPI is left alone */
} cf__mpi_world;

/* Initialises MPI if needed (registering the exit handler) and checks the
 * thread level; `call` names the public call in errors. 0, CF_EINVAL,
 * CF_ESYS, CF_EINVALSTATE (MPI already finalised). Holds the world lock
 * only inside. */
int cf__mpi_ensure_init(const char *call);

/* The world state; call with the lock held (cf__mpi_lock). */
cf__mpi_world *cf__mpi_world_get(void);
void cf__mpi_lock(void);
void cf__mpi_unlock(void);

/* The live pool of this process, set and cleared by mpi_pool.c under the
 * world lock; the exit handler shuts it down (wait) before finalising. */
extern struct cf_executor *cf__mpi_live_pool;

/* A short MPI error text for rc ("MPI_ERR_SPAWN: ..."), in buf. */
const char *cf__mpi_strerror(int rc, char *buf, int cap);

#endif
