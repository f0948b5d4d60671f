/* Private: the process's poller, which lets a waiter whose sleep suspends
 * a fiber (a thread-pool task: cf__waiter_ops.fiber_io) wait for a
 * descriptor without blocking its thread, as Go's netpoller does for
 * goroutines. One thread, started at the first such wait, sleeps in
 * epoll_wait on every descriptor waited for and wakes the waiter of each
 * one that becomes ready; meanwhile the fiber's worker runs other tasks.
 *
 * A wait registers its descriptor for one event (EPOLLONESHOT) and takes
 * it out again when it ends: 2 epoll_ctl per wait, plus the poller's wake
 * when it is not ready at once. Registrations are records that are never
 * freed (reused, with a generation number in each event), so an event that
 * the poller reads after its wait ended (timed out) is recognised as stale
 * and dropped; at worst a waiter wakes spuriously, which every wait loop
 * tolerates. A descriptor waited on by two tasks at once (a reader and a
 * writer) is registered the second time through a duplicate of it.
 *
 * In a child forked while the poller ran, it starts again at the next
 * wait (the child's copy of the epoll descriptor is closed). */
#ifndef CF_CORE_NETPOLL_H
#define CF_CORE_NETPOLL_H

#include <stdint.h>

#include "core/time.h"
#include "core/waiter.h"

/* Waits until fd is ready for `events` (EPOLLIN and/or EPOLLOUT; an error
 * or hang-up counts as ready), sleeping on w (cf__waiter_sleep: the
 * owner's) until the poller wakes it or the deadline d passes. A file that
 * epoll cannot watch (a regular file, always ready) is ready at once. A
 * deadline already passed (a zero timeout) may miss a descriptor that is
 * ready: callers ask poll(2) instead.
 * Returns 0, CF_ETIMEDOUT, CF_ENOMEM, or CF_ESYS (errno says why: the
 * poller could not start, or epoll_ctl refused fd, EBADF for a closed
 * one). A descriptor closed during the wait is not noticed: the wait ends
 * at its deadline. */
int cf__netpoll_wait(cf__waiter *w, int fd, uint32_t events,
                     const cf_deadline *d);

#endif
