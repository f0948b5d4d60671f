/* The poller: see core/netpoll.h. */
#include "core/netpoll.h"

#include <cfutures/common.h>
#include <ck_pr.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

/* A registration: its state word is (gen << 2) | IDLE, ARMED, FIRED or
 * WOKEN. The waiting side arms it and, when its wait ends, either takes it
 * back (ARMED -> IDLE: it timed out) or finds it fired by the poller,
 * whose event must carry the same generation: FIRED while the poller
 * wakes the waiter, WOKEN once the wake has returned. The waiter does not
 * return before WOKEN: the wake may touch the scheduler of the waiting
 * fiber (a thread pool, which could be freed once the task that waited
 * ends), as a future's listeners wait for their completer (see
 * cf__node_settle). Records live for the life of the process, so a late
 * event only ever touches a record, never freed memory.
 * `gen` and `next_free` belong to the record's owner (the waiting side
 * between rec_get and rec_put; the free list, under mu, otherwise). */
enum { IDLE, ARMED, FIRED, WOKEN };
typedef struct np_rec {
  _Atomic uint64_t state;
  cf__waiter *_Atomic waiter;
  uint32_t gen;
  uint32_t next_free;
} np_rec;

/* Records come in chunks of NP_CHUNK, NP_CHUNKS of them at most: over
 * 4 million waits at once. */
#define NP_CHUNK_BITS 10
#define NP_CHUNK      (1u << NP_CHUNK_BITS)
#define NP_CHUNKS     4096u
#define NP_NONE       UINT32_MAX

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static np_rec *_Atomic chunks[NP_CHUNKS]; /* published with release */
static uint32_t nchunks;                  /* under mu */
static uint32_t free_head = NP_NONE;      /* under mu */
/* The poller's epoll instance, -1 until the first wait (and in a child
 * forked since). Written under mu (release, once the poller runs). */
static _Atomic int epfd = -1;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static np_rec *rec_at(uint32_t idx) {
  np_rec *c = atomic_load_explicit(&chunks[idx >> NP_CHUNK_BITS],
                                   memory_order_acquire);
  return c ? &c[idx & (NP_CHUNK - 1)] : NULL;
}

/* A free record and its index, or false when out of memory or records. */
static bool rec_get(np_rec **out, uint32_t *idx) {
  pthread_mutex_lock(&mu);
  if (free_head == NP_NONE && nchunks < NP_CHUNKS) {
    np_rec *c = calloc(NP_CHUNK, sizeof *c);
    if (c) {
      uint32_t base = nchunks << NP_CHUNK_BITS;
      for (uint32_t i = 0; i < NP_CHUNK; i++)
        c[i].next_free = i + 1 < NP_CHUNK ? base + i + 1 : NP_NONE;
      atomic_store_explicit(&chunks[nchunks], c, memory_order_release);
      nchunks++;
      free_head = base;
    }
  }
  bool ok = free_head != NP_NONE;
  if (ok) {
    *idx = free_head;
    *out = rec_at(free_head);
    free_head = (*out)->next_free;
  }
  pthread_mutex_unlock(&mu);
  return ok;
}

static void rec_put(np_rec *r, uint32_t idx) {
  pthread_mutex_lock(&mu);
  r->next_free = free_head;
  free_head = idx;
  pthread_mutex_unlock(&mu);
}

/* An event for record idx of generation gen: fires it if its wait still
 * stands, and wakes the waiter. */
static void fire(uint64_t data) {
  np_rec *r = rec_at((uint32_t)(data >> 32));
  if (!r)
    return;
  uint64_t gen = (uint32_t)data;
  uint64_t armed = gen << 2 | ARMED;
  /* seq_cst: the waiter reads FIRED after its sequence (cf__waiter_seq),
   * so either it sees FIRED or the wake below changes its sequence. */
  if (atomic_compare_exchange_strong(&r->state, &armed, gen << 2 | FIRED)) {
    cf__waiter_wake(atomic_load_explicit(&r->waiter, memory_order_acquire));
    /* release: the wake's last touch of the waiter's scheduler */
    atomic_store_explicit(&r->state, gen << 2 | WOKEN, memory_order_release);
  }
}

static void *poller(void *arg) {
  int ep = (int)(intptr_t)arg;
  struct epoll_event ev[64];
  for (;;) {
    int n = epoll_wait(ep, ev, 64, -1);
    for (int i = 0; i < n; i++)
      fire(ev[i].data.u64);
    if (n < 0 && errno != EINTR)
      return NULL; /* cannot happen with a valid epoll descriptor */
  }
}

static void atfork_prepare(void) {
  pthread_mutex_lock(&mu);
}

static void atfork_parent(void) {
  pthread_mutex_unlock(&mu);
}

/* The child has no poller thread: the next wait starts one, on an epoll
 * instance of its own (the inherited one is the parent's). Waits of the
 * parent's other threads are not in the child: their records stay armed,
 * never reused. */
static void atfork_child(void) {
  int ep = atomic_exchange_explicit(&epfd, -1, memory_order_relaxed);
  if (ep >= 0)
    close(ep);
  pthread_mutex_unlock(&mu);
}

static void atfork_install(void) {
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* The poller's epoll descriptor, the poller started if it was not: >= 0,
 * or -1 with errno set. */
static int start(void) {
  int ep = atomic_load_explicit(&epfd, memory_order_acquire);
  if (ep >= 0)
    return ep;
  pthread_once(&atfork_once, atfork_install);
  pthread_mutex_lock(&mu);
  ep = atomic_load_explicit(&epfd, memory_order_relaxed);
  if (ep < 0) {
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep >= 0) {
      /* The poller takes no signal: the program's handlers run on its
       * own threads. */
      sigset_t all, old;
      sigfillset(&all);
      pthread_sigmask(SIG_SETMASK, &all, &old);
      pthread_attr_t a;
      pthread_attr_init(&a);
      pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
      pthread_attr_setstacksize(&a, 64 * 1024);
      pthread_t th;
      int e = pthread_create(&th, &a, poller, (void *)(intptr_t)ep);
      pthread_attr_destroy(&a);
      pthread_sigmask(SIG_SETMASK, &old, NULL);
      if (e != 0) {
        close(ep);
        ep = -1;
        errno = e;
      } else {
        atomic_store_explicit(&epfd, ep, memory_order_release);
      }
    }
  }
  int e = errno;
  pthread_mutex_unlock(&mu);
  errno = e;
  return ep;
}

int cf__netpoll_wait(cf__waiter *w, int fd, uint32_t events,
                     const cf_deadline *d) {
  int ep = start();
  if (ep < 0)
    return CF_ESYS;
  np_rec *r;
  uint32_t idx;
  if (!rec_get(&r, &idx))
    return CF_ENOMEM;
  uint64_t gen = r->gen;
  atomic_store_explicit(&r->waiter, w, memory_order_relaxed);
  /* release: the waiter pointer, before the poller can fire */
  atomic_store_explicit(&r->state, gen << 2 | ARMED, memory_order_release);
  struct epoll_event ev = {.events = events | EPOLLONESHOT,
                           .data.u64 = (uint64_t)idx << 32 | gen};
  int used = fd, dup_fd = -1, rc = 0, e = 0;
  bool added = epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0;
  if (!added && errno == EEXIST) {
    /* Another wait has fd registered (a reader and a writer): this one
     * goes through a duplicate, a key of its own for epoll. */
    dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd >= 0) {
      used = dup_fd;
      added = epoll_ctl(ep, EPOLL_CTL_ADD, dup_fd, &ev) == 0;
    }
  }
  if (!added) {
    e = errno;
    /* EPERM: a regular file or a directory, which epoll does not watch
     * because it is always ready. */
    rc = e == EPERM ? 0 : CF_ESYS;
  } else {
    for (;;) {
      uint32_t seen = cf__waiter_seq(w);
      if ((atomic_load(&r->state) & 3) >= FIRED)
        break;
      int s = cf__waiter_sleep(w, seen, d);
      if (s != 0) { /* CF_ETIMEDOUT */
        rc = s;
        break;
      }
    }
  }
  uint64_t armed = gen << 2 | ARMED;
  if (!atomic_compare_exchange_strong(&r->state, &armed, gen << 2 | IDLE)) {
    rc = 0; /* fired: ready, even if the deadline passed meanwhile */
    /* the poller's wake is a few instructions from its end */
    for (unsigned spins = 0; (atomic_load_explicit(&r->state,
                                                   memory_order_acquire) &
                              3) != WOKEN;
         spins++)
      spins < 64 ? ck_pr_stall() : (void)sched_yield();
  }
  if (added)
    epoll_ctl(ep, EPOLL_CTL_DEL, used, NULL);
  if (dup_fd >= 0)
    close(dup_fd);
  r->gen = (uint32_t)(gen + 1); /* its events from now on are stale */
  rec_put(r, idx);
  if (rc == CF_ESYS)
    errno = e;
  return rc;
}
