/* The MPI executor's same-host fast path: large byte payloads between the
 * main rank and a worker on the same host travel through shared memory
 * that both map, and only a small descriptor (cf__mpi_shm_ref) goes
 * through MPI. See mpi_internal.h for the wire, mpi_pool.c and
 * mpi_serve.c for the two sides.
 *
 * The memory: memfds of the main rank. A worker opens one through
 * /proc/<main pid>/fd/<fd> (same user, same host, same boot: checked once
 * per pool by a probe, cf__mpi_shm_probe_answer). A memfd has no name:
 * nothing to unlink, and its memory goes when the last process that maps
 * or holds it lets go, also when a process dies or a pool breaks. memfds
 * are not in /dev/shm, so a container's small /dev/shm does not limit
 * them.
 *
 * Main rank: buffers are kept warm (pre-faulted with MAP_POPULATE when
 * made, reused across tasks: fresh pages fault, and in a VM a fresh 64 MiB
 * costs far more than copying into warm pages). A buffer is `busy` while a
 * task's input sits in it, while it is lent to a worker as the spare for a
 * task's result, and while a future's result points into it; then it goes
 * back to the idle ones (cf__mpi_shm_give). Ids are never reused, so a
 * worker may key its mappings by id.
 *
 * Worker: mappings by id, the least recently used unmapped when more than
 * WMAP_SLOTS or WMAP_BYTES would be kept (cf__mpi_shm_map); all unmapped
 * when the pool ends (TAG_SHM_DROP). Single-threaded.
 *
 * Locks: `reg.mu` guards the registry (main rank; any thread: submitters
 * take, futures' owners give, the progress thread lends and discards). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "executor/executor_internal.h"
#include "executor/mpi_internal.h"

#define SHM_SLOTS  64                  /* buffers at most, busy or idle */
#define SHM_BYTES  ((size_t)1 << 30)   /* their bytes at most */
#define KEEP_BYTES ((size_t)512 << 20) /* idle bytes kept for reuse */
#define SHM_ALIGN  ((size_t)64 << 10)  /* capacities are multiples */

struct cf__mpi_shm {
  uint64_t id;
  int fd;
  char *map;
  size_t cap;
  bool busy; /* guarded by reg.mu */
};

static struct {
  pthread_mutex_t mu;
  cf__mpi_shm *slot[SHM_SLOTS]; /* guarded by mu */
  size_t bytes;                 /* guarded by mu: of every slot */
  size_t idle_bytes;            /* guarded by mu */
  int users;                    /* guarded by mu: live pools using it */
  uint64_t next_id;             /* guarded by mu */
} reg = {.mu = PTHREAD_MUTEX_INITIALIZER, .next_id = 1};

size_t cf__mpi_shm_min(void) {
  /* relaxed: every thread computes the same value; publishes nothing */
  static _Atomic size_t min;
  size_t m = atomic_load_explicit(&min, memory_order_relaxed);
  if (m == 0) {
    const char *s = getenv("CFUTURES_MPI_SHM_MIN");
    long long v = s ? atoll(s) : 0;
    m = v > 0 ? (size_t)v : CF__MPI_SHM_MIN;
    atomic_store_explicit(&min, m, memory_order_relaxed);
  }
  return m;
}

bool cf__mpi_shm_wanted(void) {
  const char *s = getenv("CFUTURES_MPI_SHM");
  return !(s && strcmp(s, "0") == 0);
}

void cf__mpi_host_id(char *buf, size_t cap) {
  char host[256] = "";
  char boot[64] = "";
  if (gethostname(host, sizeof host - 1) != 0)
    host[0] = '\0';
  int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t k = read(fd, boot, sizeof boot - 1);
    boot[k > 0 ? k : 0] = '\0';
    boot[strcspn(boot, "\n")] = '\0';
    close(fd);
  }
  snprintf(buf, cap, "%s/%s", host, boot);
}

/* ---- main rank: the registry ---------------------------------------------
 */

static void shm_close(cf__mpi_shm *b) {
  munmap(b->map, b->cap);
  close(b->fd);
  free(b);
}

/* reg.mu held: removes b from the registry (not freed). */
static void unlink_slot(cf__mpi_shm *b) {
  for (size_t i = 0; i < SHM_SLOTS; i++)
    if (reg.slot[i] == b) {
      reg.slot[i] = NULL;
      reg.bytes -= b->cap;
      if (!b->busy)
        reg.idle_bytes -= b->cap;
      return;
    }
}

/* reg.mu held: frees idle buffers, largest first, until `need` more bytes
 * fit under SHM_BYTES and a slot is free; false if they cannot. */
static bool make_room(size_t need, cf__mpi_shm **freed, size_t *nfreed) {
  for (;;) {
    bool slot_free = false;
    cf__mpi_shm *big = NULL;
    for (size_t i = 0; i < SHM_SLOTS; i++) {
      cf__mpi_shm *b = reg.slot[i];
      if (!b)
        slot_free = true;
      else if (!b->busy && (!big || b->cap > big->cap))
        big = b;
    }
    if (slot_free && reg.bytes + need <= SHM_BYTES)
      return true;
    if (!big)
      return false;
    unlink_slot(big);
    freed[(*nfreed)++] = big; /* closed outside the lock */
  }
}

cf__mpi_shm *cf__mpi_shm_take(size_t len) {
  if (len == 0 || len > SHM_BYTES)
    return NULL;
  size_t cap = (len + SHM_ALIGN - 1) & ~(SHM_ALIGN - 1);
  cf__mpi_shm *freed[SHM_SLOTS];
  size_t nfreed = 0;
  pthread_mutex_lock(&reg.mu);
  cf__mpi_shm *best = NULL;
  for (size_t i = 0; i < SHM_SLOTS; i++) {
    cf__mpi_shm *b = reg.slot[i];
    if (b && !b->busy && b->cap >= len && b->cap / 2 <= len &&
        (!best || b->cap < best->cap))
      best = b;
  }
  if (best) {
    best->busy = true;
    reg.idle_bytes -= best->cap;
    pthread_mutex_unlock(&reg.mu);
    return best;
  }
  bool room = make_room(cap, freed, &nfreed);
  uint64_t id = reg.next_id++;
  if (room)
    reg.bytes += cap; /* reserved; given back below on failure */
  pthread_mutex_unlock(&reg.mu);
  for (size_t i = 0; i < nfreed; i++)
    shm_close(freed[i]);
  if (!room)
    return NULL;
  cf__mpi_shm *b = calloc(1, sizeof *b);
  int fd = b ? memfd_create("cfutures-mpi", MFD_CLOEXEC) : -1;
  void *m = MAP_FAILED;
  /* MAP_POPULATE: the pages exist before the first copy into them */
  if (fd >= 0 && ftruncate(fd, (off_t)cap) == 0)
    m = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
             0);
  pthread_mutex_lock(&reg.mu);
  size_t at = SHM_SLOTS;
  for (size_t i = 0; i < SHM_SLOTS && at == SHM_SLOTS; i++)
    if (!reg.slot[i])
      at = i;
  if (m == MAP_FAILED || at == SHM_SLOTS) { /* a slot went meanwhile */
    reg.bytes -= cap;
    pthread_mutex_unlock(&reg.mu);
    if (m != MAP_FAILED)
      munmap(m, cap);
    if (fd >= 0)
      close(fd);
    free(b);
    return NULL;
  }
  *b = (cf__mpi_shm){.id = id, .fd = fd, .map = m, .cap = cap, .busy = true};
  reg.slot[at] = b;
  pthread_mutex_unlock(&reg.mu);
  return b;
}

void cf__mpi_shm_give(cf__mpi_shm *b) {
  if (!b)
    return;
  pthread_mutex_lock(&reg.mu);
  b->busy = false;
  reg.idle_bytes += b->cap;
  /* kept while a pool lives and the idle ones stay under KEEP_BYTES */
  bool drop = reg.users == 0 || reg.idle_bytes > KEEP_BYTES;
  if (drop)
    unlink_slot(b);
  pthread_mutex_unlock(&reg.mu);
  if (drop)
    shm_close(b);
}

void cf__mpi_shm_discard(cf__mpi_shm *b) {
  if (!b)
    return;
  pthread_mutex_lock(&reg.mu);
  unlink_slot(b);
  pthread_mutex_unlock(&reg.mu);
  shm_close(b);
}

void cf__mpi_shm_use(int delta) {
  cf__mpi_shm *freed[SHM_SLOTS];
  size_t nfreed = 0;
  pthread_mutex_lock(&reg.mu);
  reg.users += delta;
  if (reg.users == 0) /* the last pool ended: no idle buffer stays */
    for (size_t i = 0; i < SHM_SLOTS; i++)
      if (reg.slot[i] && !reg.slot[i]->busy) {
        freed[nfreed++] = reg.slot[i];
        unlink_slot(reg.slot[i]);
      }
  pthread_mutex_unlock(&reg.mu);
  for (size_t i = 0; i < nfreed; i++)
    shm_close(freed[i]);
}

size_t cf__mpi_shm_count(void) {
  size_t n = 0;
  pthread_mutex_lock(&reg.mu);
  for (size_t i = 0; i < SHM_SLOTS; i++)
    n += reg.slot[i] != NULL;
  pthread_mutex_unlock(&reg.mu);
  return n;
}

cf__mpi_shm_ref cf__mpi_shm_ref_of(const cf__mpi_shm *b) {
  return (cf__mpi_shm_ref){.id = b->id, .cap = b->cap, .fd = b->fd};
}

char *cf__mpi_shm_data(const cf__mpi_shm *b) {
  return b->map;
}

/* ---- the probe -------------------------------------------------------------
 */

int cf__mpi_shm_probe_make(size_t n, cf__mpi_shm_probe *pr, void **map,
                           size_t *len) {
  size_t cap = 64 + 8 * n;
  int fd = memfd_create("cfutures-mpi-probe", MFD_CLOEXEC);
  if (fd < 0)
    return -1;
  void *m = ftruncate(fd, (off_t)cap) == 0
                ? mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                : MAP_FAILED;
  if (m == MAP_FAILED) {
    close(fd);
    return -1;
  }
  memset(pr, 0, sizeof *pr);
  pr->n = (uint32_t)n;
  pr->min = cf__mpi_shm_min();
  pr->pid = (int32_t)getpid();
  pr->ref = (cf__mpi_shm_ref){.id = 0, .cap = cap, .fd = fd};
  /* a token a worker can only know by reading this memory */
  pr->token = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)m ^
              (uint64_t)time(NULL) ^ 0x9e3779b97f4a7c15u;
  memcpy(m, &pr->token, sizeof pr->token);
  pr->token = 0; /* not sent: the worker must read it */
  cf__mpi_host_id(pr->host_id, sizeof pr->host_id);
  *map = m;
  *len = cap;
  return fd;
}

/* Opens and maps the main rank's memfd r (pid: the main rank's), read and
 * write, shared; MAP_FAILED if it cannot. */
static void *open_map(int32_t pid, const cf__mpi_shm_ref *r, bool populate) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, (int)r->fd);
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return MAP_FAILED;
  struct stat st;
  void *m = MAP_FAILED;
  /* a mapping past the memfd's end would fault (SIGBUS) */
  if (fstat(fd, &st) == 0 && (uint64_t)st.st_size >= r->cap && r->cap > 0 &&
      r->cap <= SIZE_MAX)
    m = mmap(NULL, (size_t)r->cap, PROT_READ | PROT_WRITE,
             MAP_SHARED | (populate ? MAP_POPULATE : 0), fd, 0);
  close(fd);
  return m;
}

bool cf__mpi_shm_probe_answer(const cf__mpi_shm_probe *pr) {
  char me[sizeof pr->host_id];
  cf__mpi_host_id(me, sizeof me);
  if (strncmp(me, pr->host_id, sizeof me) != 0 || pr->slot >= pr->n ||
      64 + 8 * (uint64_t)pr->n > pr->ref.cap)
    return false;
  char *m = open_map(pr->pid, &pr->ref, false);
  if (m == MAP_FAILED)
    return false;
  uint64_t token;
  memcpy(&token, m, sizeof token);
  token += 1 + pr->slot; /* what the main rank checks in this slot */
  memcpy(m + 64 + 8 * (size_t)pr->slot, &token, sizeof token);
  munmap(m, (size_t)pr->ref.cap);
  return true;
}

/* ---- worker: mappings ------------------------------------------------------
 */

#define WMAP_SLOTS 8
#define WMAP_BYTES ((size_t)1 << 30)

static struct {
  uint64_t id;
  char *p;
  size_t len;
  uint64_t used;
} wmap[WMAP_SLOTS];
static uint64_t wmap_clock;

void *cf__mpi_shm_map(int32_t pid, const cf__mpi_shm_ref *r) {
  size_t total = 0;
  for (size_t k = 0; k < WMAP_SLOTS; k++) {
    if (wmap[k].p && wmap[k].id == r->id && wmap[k].len == r->cap) {
      wmap[k].used = ++wmap_clock;
      return wmap[k].p;
    }
    total += wmap[k].len;
  }
  if (r->cap > WMAP_BYTES)
    return NULL;
  /* room: the least recently used go */
  for (;;) {
    size_t victim = WMAP_SLOTS, empty = WMAP_SLOTS;
    for (size_t k = 0; k < WMAP_SLOTS; k++) {
      if (!wmap[k].p)
        empty = k;
      else if (victim == WMAP_SLOTS || wmap[k].used < wmap[victim].used)
        victim = k;
    }
    if (empty < WMAP_SLOTS && total + r->cap <= WMAP_BYTES) {
      char *m = open_map(pid, r, true);
      if (m == MAP_FAILED)
        return NULL;
      wmap[empty].id = r->id;
      wmap[empty].p = m;
      wmap[empty].len = (size_t)r->cap;
      wmap[empty].used = ++wmap_clock;
      return m;
    }
    munmap(wmap[victim].p, wmap[victim].len);
    total -= wmap[victim].len;
    wmap[victim].p = NULL;
    wmap[victim].len = 0;
  }
}

void cf__mpi_shm_unmap_all(void) {
  for (size_t k = 0; k < WMAP_SLOTS; k++)
    if (wmap[k].p) {
      munmap(wmap[k].p, wmap[k].len);
      wmap[k].p = NULL;
      wmap[k].len = 0;
    }
}
