/* Private: what green/ modules share about the running green task. */
#ifndef CF_GREEN_INTERNAL_H
#define CF_GREEN_INTERNAL_H

#include <stdbool.h>

/* A pointer the running green task carries for whoever needs to know who it
 * works for (the green pool marks its workers); NULL outside green tasks or
 * when unset. Owner thread of the loop only. */
void *cf__green_tag(void);
void cf__green_set_tag(void *tag);

/* A hint for reads, kept per descriptor by the running task's loop: true
 * when the last green read of fd returned less than it asked for (the
 * socket was drained then), so the next read waits for readiness before
 * trying (a wrong guess costs one turn of the loop: re-arming a
 * registration reports a descriptor that is ready already). False outside
 * green tasks. The setter does nothing outside green tasks (nor, out of
 * memory, for a descriptor the loop's table does not hold yet). Owner
 * thread of the loop only; no errors. */
bool cf__green_fd_drained(int fd);
void cf__green_fd_set_drained(int fd, bool drained);

/* The loop's registrations of descriptors (see wait_fd_green in loop.c):
 * cf__green_fd_new says fd was just made by cf_green_accept or
 * cf_green_connect in the running task (its number is new: a wait on it
 * may then trust its registration); cf__green_fd_ended, that a green
 * read or write on fd saw end of file or an error (it is likely to be
 * closed: the next wait re-registers). Nothing outside green tasks. */
void cf__green_fd_new(int fd);
void cf__green_fd_ended(int fd);

/* cf_green_wait_fd for green I/O (failing as `call`): after a short read
 * (after_eagain false) an edge that came meanwhile ends the wait at once;
 * after EAGAIN none can have. Unlike cf_green_wait_fd, a registration the
 * task may trust is not renewed (see wait_fd_green): the caller retries
 * its call, so a wake that finds nothing only costs a turn. */
int cf__green_wait_io(const char *call, int fd, int events, double timeout_s,
                      bool after_eagain);

#endif
