#include "core/waiter.h"
#include "sync/monitor.h"

#include <cfutures/common.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* A header before each primitive's memory records how it was made. */
typedef struct header {
  pid_t creator; /* 0 for private memory */
  size_t size;
  _Alignas(16) char body[];
} header;

void *cf__sync_alloc(size_t size, bool shared) {
  size_t total = sizeof(header) + size;
  header *h;
  if (shared) {
    h = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
             -1, 0);
    if (h == MAP_FAILED)
      return NULL;
    h->creator = getpid();
  } else {
    h = calloc(1, total);
    if (!h)
      return NULL;
    h->creator = 0;
  }
  h->size = total;
  return h->body;
}

static header *header_of(const void *p) {
  return (header *)((char *)p - offsetof(header, body));
}

bool cf__sync_is_creator(const void *p) {
  pid_t c = header_of(p)->creator;
  return c == 0 || c == getpid();
}

void cf__sync_free(void *p, size_t size) {
  (void)size;
  header *h = header_of(p);
  if (h->creator)
    munmap(h, h->size);
  else
    free(h);
}

int cf__mutex_init(pthread_mutex_t *mu, bool shared, bool recursive) {
  pthread_mutexattr_t a;
  if (pthread_mutexattr_init(&a))
    return CF_ESYS;
  int rc = pthread_mutexattr_settype(&a, recursive ? PTHREAD_MUTEX_RECURSIVE
                                                   : PTHREAD_MUTEX_ERRORCHECK);
  rc = rc ? rc : pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  if (shared && !rc)
    rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  rc = rc ? rc : pthread_mutex_init(mu, &a);
  pthread_mutexattr_destroy(&a);
  return rc ? CF_ESYS : 0;
}

int cf__cond_init(pthread_cond_t *cv, bool shared) {
  pthread_condattr_t a;
  if (pthread_condattr_init(&a))
    return CF_ESYS;
  int rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  if (shared && !rc)
    rc = pthread_condattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  rc = rc ? rc : pthread_cond_init(cv, &a);
  pthread_condattr_destroy(&a);
  return rc ? CF_ESYS : 0;
}

/* pthread_mutex_timedlock takes a CLOCK_REALTIME time: convert the
 * monotonic deadline at each try, and try again if the wall clock jumped
 * so that the lock timed out before our deadline. (pthread_mutex_clocklock
 * would avoid the conversion, but sanitizers do not intercept it.) */
static int timedlock(pthread_mutex_t *mu, const cf_deadline *d) {
  for (;;) {
    double left = cf__deadline_remaining(d);
    if (left <= 0)
      return pthread_mutex_trylock(mu);
    struct timespec at;
    clock_gettime(CLOCK_REALTIME, &at);
    long ns = at.tv_nsec + (long)((left - (double)(long)left) * 1e9);
    at.tv_sec += (time_t)left + ns / 1000000000L;
    at.tv_nsec = ns % 1000000000L;
    int rc = pthread_mutex_timedlock(mu, &at);
    if (rc != ETIMEDOUT || cf__deadline_passed(d))
      return rc;
  }
}

int cf__mutex_lock(pthread_mutex_t *mu, const cf_deadline *d) {
  int rc;
  if (!d || d->forever)
    rc = pthread_mutex_lock(mu);
  else
    rc = timedlock(mu, d);
  switch (rc) {
  case 0:
    return 0;
  case EOWNERDEAD:
    pthread_mutex_consistent(mu);
    return CF_EOWNERDEAD;
  case EDEADLK:
    return CF_EDEADLK;
  case EBUSY:
  case ETIMEDOUT:
    return CF_ETIMEDOUT;
  default:
    return CF_ESYS;
  }
}

int cf__monitor_init(cf__monitor *m, bool shared) {
  int rc = cf__mutex_init(&m->mu, shared, false);
  if (rc)
    return rc;
  rc = cf__cond_init(&m->cv, shared);
  if (rc)
    pthread_mutex_destroy(&m->mu);
  return rc;
}

void cf__monitor_destroy(cf__monitor *m) {
  pthread_cond_destroy(&m->cv);
  pthread_mutex_destroy(&m->mu);
}

void cf__monitor_lock(cf__monitor *m) {
  cf__mutex_lock(&m->mu, NULL); /* 0 or CF_EOWNERDEAD: locked either way */
}

void cf__monitor_unlock(cf__monitor *m) {
  pthread_mutex_unlock(&m->mu);
}

int cf__cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu,
                  const cf_deadline *d) {
  int rc;
  cf__thread_pool_before_block();
  if (!d || d->forever) {
    rc = pthread_cond_wait(cv, mu);
  } else {
    if (cf__deadline_passed(d))
      return CF_ETIMEDOUT;
    rc = pthread_cond_timedwait(cv, mu, &d->at); /* a CLOCK_MONOTONIC cv */
  }
  if (rc == EOWNERDEAD)
    pthread_mutex_consistent(mu);
  return rc == ETIMEDOUT ? CF_ETIMEDOUT : 0;
}

int cf__monitor_wait(cf__monitor *m, const cf_deadline *d) {
  return cf__cond_wait(&m->cv, &m->mu, d);
}
