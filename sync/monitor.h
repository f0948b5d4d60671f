/* Private: the one mechanism every sync primitive is built on.
 *
 * A monitor is a mutex and a condition variable that work either between
 * threads or between processes. Process-shared monitors live in an
 * anonymous MAP_SHARED mapping made before fork(), so a child sees the
 * same object at the same address. Both flavours use robust mutexes: if a
 * holder dies (a thread exits, a process is killed), the next locker gets
 * the mutex back with EOWNERDEAD instead of hanging; the monitor marks it
 * consistent and says so. Timeouts run on CLOCK_MONOTONIC.
 */
#ifndef CF_SYNC_MONITOR_H
#define CF_SYNC_MONITOR_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/time.h"

typedef struct cf__monitor {
  pthread_mutex_t mu;
  pthread_cond_t cv;
} cf__monitor;

/* Memory for a primitive: zeroed; from MAP_SHARED memory when `shared`.
 * Returns NULL when out of memory. The creating process's pid is kept so
 * that only it destroys the pthread objects (see cf__sync_release). */
void *cf__sync_alloc(size_t size, bool shared);
/* True if this process created the object at p (always for !shared). */
bool cf__sync_is_creator(const void *p);
void cf__sync_free(void *p, size_t size);

/* Initialises a mutex: robust, error-checking (or recursive), private or
 * process-shared. Returns 0 or CF_ESYS. */
int cf__mutex_init(pthread_mutex_t *mu, bool shared, bool recursive);
/* Locks with a deadline (NULL: forever; a passed deadline: try once).
 * Returns 0, CF_EOWNERDEAD (locked; the previous holder died and the
 * mutex was made consistent), CF_ETIMEDOUT, CF_EDEADLK (already ours, for
 * non-recursive mutexes). */
int cf__mutex_lock(pthread_mutex_t *mu, const cf_deadline *d);

int cf__monitor_init(cf__monitor *m, bool shared);
void cf__monitor_destroy(cf__monitor *m);
/* Locks; a dead previous holder is recovered silently (the monitors'
 * critical sections only update counters). */
void cf__monitor_lock(cf__monitor *m);
void cf__monitor_unlock(cf__monitor *m);
/* Waits on the condition (monitor locked) until signalled or the
 * deadline: 0 (maybe spurious) or CF_ETIMEDOUT. */
int cf__monitor_wait(cf__monitor *m, const cf_deadline *d);
/* Waits on `cv` with mutex `mu` (locked). */
int cf__cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu,
                  const cf_deadline *d);
int cf__cond_init(pthread_cond_t *cv, bool shared);

#endif
