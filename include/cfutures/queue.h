/* cfutures — queues and pipes.
 *
 * cf_queue: Python's queue.Queue / LifoQueue / PriorityQueue for threads;
 * it moves pointers (the caller owns what they point to). Every cf_queue
 * is joinable: cf_queue_task_done / cf_queue_join.
 *
 * cf_shm_queue: a process-shared FIFO, LIFO or priority queue of byte
 * messages of any size, in MAP_SHARED memory (create it before fork(); a
 * process pool's workers see it only with CF_START_FORK).
 * FIFO messages go through a byte ring; a message larger than the ring is
 * streamed through it and still delivered whole. Also joinable.
 *
 * cf_pipe: a connection between two processes (or threads) carrying whole
 * byte messages (length-prefixed: never split, never glued), duplex or
 * one-way.
 *
 * Timeouts as everywhere (see common.h): 0 makes put/get non-blocking.
 * A put that cannot proceed in time returns CF_EFULL, a get CF_EEMPTY.
 */
#ifndef CFUTURES_QUEUE_H
#define CFUTURES_QUEUE_H

#include <cfutures/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cf_queue_kind {
  CF_QUEUE_FIFO = 0,
  CF_QUEUE_LIFO = 1,
  CF_QUEUE_PRIORITY = 2, /* smallest first, by the compare function */
} cf_queue_kind;

/* Orders items of a priority queue: negative if a comes before b. */
typedef int (*cf_compare_fn)(const void *a, const void *b);

/* ---- cf_queue (threads) ------------------------------------------------- */

typedef struct cf_queue cf_queue;

/* Creates a queue holding at most `maxsize` items (0: unbounded). `cmp` is
 * required for CF_QUEUE_PRIORITY and ignored otherwise. Returns 0,
 * CF_EINVAL (NULL out, unknown kind, missing cmp), CF_ENOMEM, CF_ESYS. */
CF_API int cf_queue_new(cf_queue_kind kind, size_t maxsize, cf_compare_fn cmp,
                        cf_queue **out);
/* Adds item, waiting up to timeout_s for room. Returns 0, CF_EFULL,
 * CF_ENOMEM, CF_EINVAL. */
CF_API int cf_queue_put(cf_queue *q, void *item, double timeout_s);
/* Removes the next item into *out, waiting up to timeout_s. Returns 0,
 * CF_EEMPTY, CF_EINVAL. */
CF_API int cf_queue_get(cf_queue *q, double timeout_s, void **out);
/* cf_queue_put / cf_queue_get with timeout 0. */
CF_API int cf_queue_put_nowait(cf_queue *q, void *item);
CF_API int cf_queue_get_nowait(cf_queue *q, void **out);
/* Snapshots; 0 / true / false for NULL. */
CF_API size_t cf_queue_qsize(cf_queue *q);
CF_API bool cf_queue_empty(cf_queue *q);
CF_API bool cf_queue_full(cf_queue *q);
/* Marks one item taken with get as processed. Returns 0, or
 * CF_EINVALSTATE when called more times than items were put. */
CF_API int cf_queue_task_done(cf_queue *q);
/* Waits until every item put has been marked done: 0, CF_ETIMEDOUT. */
CF_API int cf_queue_join(cf_queue *q, double timeout_s);
/* Frees the queue (not the items still in it). NULL is a no-op. */
CF_API void cf_queue_free(cf_queue *q);

/* ---- cf_shm_queue (processes) ------------------------------------------- */

typedef struct cf_shm_queue cf_shm_queue;

/* Creates a process-shared queue of byte messages, holding at most
 * `maxsize` messages (0: unbounded; LIFO and priority queues then hold up
 * to 65536). FIFO messages stream through a byte ring of `ring_bytes` (0:
 * 64 KiB; at least 64), so a message larger than the ring is still
 * delivered whole. LIFO and priority queues keep each message in a POSIX
 * shared-memory object of its own (/dev/shm) and ignore ring_bytes.
 * Returns 0, CF_EINVAL, CF_ENOMEM, CF_ESYS. */
CF_API int cf_shm_queue_new(cf_queue_kind kind, size_t maxsize,
                            size_t ring_bytes, cf_shm_queue **out);
/* Copies len bytes (data may be NULL when len is 0) in as one message,
 * waiting up to timeout_s for room. For a FIFO queue, a message larger than
 * the free ring space is streamed as readers make room; if readers stall
 * past the timeout mid-message, the partial message is withdrawn (readers
 * skip it). Returns 0, CF_EFULL (nothing delivered), CF_ESYS (a
 * shared-memory object could not be made), CF_EINVAL. */
CF_API int cf_shm_queue_put(cf_shm_queue *q, const void *data, size_t len,
                            double timeout_s);
/* cf_shm_queue_put with a priority (smallest first; equal priorities come
 * out first-in first-out). Only for priority queues (else CF_EINVAL). */
CF_API int cf_shm_queue_put_prio(cf_shm_queue *q, const void *data, size_t len,
                                 int64_t priority, double timeout_s);
/* Receives the next whole message into a malloc'd buffer (*data, freed by
 * the caller with free(); NULL for an empty message) and its length.
 * Returns 0, CF_EEMPTY, CF_ENOMEM (the message stays queued), CF_EINVAL.
 * A FIFO reader that times out in the middle of a message whose writer
 * stalled drops that message. */
CF_API int cf_shm_queue_get(cf_shm_queue *q, double timeout_s, void **data,
                            size_t *len);
/* Snapshots: messages queued (including one being written); 0 / true /
 * false for NULL. */
CF_API size_t cf_shm_queue_qsize(cf_shm_queue *q);
CF_API bool cf_shm_queue_empty(cf_shm_queue *q);
CF_API bool cf_shm_queue_full(cf_shm_queue *q);
CF_API int cf_shm_queue_task_done(cf_shm_queue *q);
CF_API int cf_shm_queue_join(cf_shm_queue *q, double timeout_s);
/* Frees (in the creator) or unmaps (elsewhere) the queue. */
CF_API void cf_shm_queue_free(cf_shm_queue *q);

/* ---- cf_pipe ------------------------------------------------------------ */

typedef struct cf_pipe cf_pipe;

/* Creates a connected pair of ends. Duplex: both send and receive. One-way:
 * *a only sends, *b only receives (the other direction is CF_EPERM). The
 * ends are plain objects holding a file descriptor (close-on-exec): after
 * fork() each process holds both; close the one you do not use with
 * cf_pipe_close so that end-of-file can be seen. As with Python's Pipe,
 * one end must not be used by several threads or processes at once: their
 * messages could interleave on the stream; for many senders use a
 * cf_shm_queue. Returns 0, CF_EINVAL,
 * CF_ENOMEM, CF_ESYS. */
CF_API int cf_pipe_new(bool duplex, cf_pipe **a, cf_pipe **b);
/* Sends one message. Waits up to timeout_s for the peer to take it; if the
 * timeout passes mid-message, the connection cannot be resynchronised: the
 * end stops sending (the peer sees end-of-file) and returns CF_ETIMEDOUT;
 * later sends return CF_EBROKEN. Returns 0, CF_ETIMEDOUT, CF_EBROKEN,
 * CF_EEOF (the peer closed), CF_EPERM (a receive-only end), CF_EINVAL. */
CF_API int cf_pipe_send(cf_pipe *p, const void *data, size_t len,
                        double timeout_s);
/* Receives one whole message into a malloc'd buffer (*data, caller frees;
 * NULL for an empty message). Returns 0, CF_EEOF once every copy of the
 * other end is closed (a message cut short by that is dropped),
 * CF_ETIMEDOUT (nothing consumed), CF_ENOMEM, CF_EPERM, CF_EINVAL. A
 * timeout that passes in the middle of a message waits on for the rest. */
CF_API int cf_pipe_recv(cf_pipe *p, double timeout_s, void **data, size_t *len);
/* Closes this end and frees it. NULL is a no-op. */
CF_API void cf_pipe_close(cf_pipe *p);

#ifdef __cplusplus
}
#endif
#endif
