/* Private: the executor interface every pool implements.
 *
 * A pool embeds `struct cf_executor` as its first member and fills in a
 * vtable; the public cf_submit / cf_map_* / cf_executor_shutdown /
 * cf_executor_free calls (executor/executor.c, executor/map.c) validate
 * their arguments and dispatch here.
 */
#ifndef CF_EXECUTOR_INTERNAL_H
#define CF_EXECUTOR_INTERNAL_H

#include <cfutures/executor.h>
#include <cfutures/process_pool.h>
#include <stdatomic.h>

#include "core/sibling.h"
struct cf_executor_vt {
  const char *name; /* "thread_pool", "process_pool" */
  /* Submit one task; arguments already checked non-NULL. On error *out is
   * untouched and fn never runs. */
  int (*submit)(cf_executor *ex, cf_fn fn, void *arg, cf_destroy_fn destroy,
                cf_future **out);
  /* Submit `count` items of a map in one go: item i is the `item_size`
   * bytes at items + i * item_size. Fills outs[0..count) with new references
   * on success; on error no future is returned and no item runs. Pools that
   * can batch (process pools with chunksize) send one message per call. */
  int (*submit_batch)(cf_executor *ex, cf_fn fn, const void *items,
                      size_t count, size_t item_size, cf_destroy_fn destroy,
                      cf_future **outs);
  /* submit_batch for byte tasks: item i's bytes go to fn(item, item_size,
   * &buf), and its future's result is a cf_buf * the future owns. NULL in
   * pools without byte tasks (all but process pools). */
  int (*submit_batch_bytes)(cf_executor *ex, cf_proc_fn fn, const void *items,
                            size_t count, size_t item_size, cf_future **outs);
  /* Submit `count` items of an array map as ONE task (NULL in pools that
   * run items one by one): exactly one of fn (item i passed by pointer to
   * a copy of its bytes; its result a pointer-sized value) and bytes (a
   * byte task over item i's bytes) is set. *out is a new future whose
   * result is a cf__chunk (owned by the future) holding each item's own
   * outcome. The map's per-item cost is then reading one buffer. */
  int (*submit_chunk)(cf_executor *ex, cf_fn fn, cf_proc_fn bytes,
                      const void *items, size_t count, size_t item_size,
                      cf_destroy_fn destroy, cf_future **out);
  int (*shutdown)(cf_executor *ex, bool wait, bool cancel_futures);
  void (*destroy)(cf_executor *ex); /* after shutdown(wait=true) */
  /* Default map window for lazy inputs. */
  size_t (*default_window)(const cf_executor *ex);
};

struct cf_executor {
  const struct cf_executor_vt *vt;
};

/* ---- a chunk's outcomes (submit_chunk) ------------------------------------
 *
 * Items [first, first + count) of a chunk, in a segment: either a uniform
 * failure (buf NULL: every item failed with code and msg), or a buffer
 * laid out as the worker wrote it: a table of `table_n` (>= count)
 * cf__item_result, whose first `count` describe the items in order, then
 * each item's data (a failure's message with its NUL, a byte item's
 * output), each padded to CF__ITEM_ALIGN from the buffer's start. Nothing
 * in a buffer is trusted: a reader checks every length against `len`. */
typedef struct cf__item_result {
  int32_t code;
  uint32_t msg_len; /* a failure: bytes of its message in the data */
  /* A success: the value (a cf_fn's out), or the output's length in the
   * data (a byte task's). */
  uint64_t out;
} cf__item_result;

#define CF__ITEM_ALIGN 16
/* The space item r takes in the data (bytes: whether items carry output). */
static inline uint64_t cf__item_span(bool bytes, const cf__item_result *r) {
  uint64_t n = r->code ? r->msg_len : bytes ? r->out : 0;
  return (n + CF__ITEM_ALIGN - 1) & ~(uint64_t)(CF__ITEM_ALIGN - 1);
}

typedef struct cf__chunk_seg {
  size_t first, count, table_n;
  char *buf; /* malloc'd, or a mapping when `mapped` */
  size_t len;
  bool mapped;
  int code;  /* buf NULL: the failure */
  char *msg; /* buf NULL: malloc'd, may be NULL */
} cf__chunk_seg;

typedef struct cf__chunk {
  size_t count;          /* items in the chunk */
  bool bytes;            /* byte items (cf_buf outputs), else values */
  cf_destroy_fn destroy; /* values: run on each success when freed */
  size_t covered;        /* items with an outcome so far */
  size_t pool_refs;      /* the pool's own count of tasks filling it */
  bool lost;             /* an outcome could not be kept (no memory) */
  cf__chunk_seg *segs;   /* in item order once complete */
  size_t nseg, cap;
} cf__chunk;

/* Adds a segment (taking its buf or msg); -1 with no memory (then the
 * caller still owns them). */
CF__SIBLING int cf__chunk_add(cf__chunk *c, const cf__chunk_seg *s);
/* Frees c with its segments, running destroy on each successful value. */
CF__SIBLING void cf__chunk_free(void *c);

/* One item's outcome, read out of a complete chunk: code 0 and *value (a
 * value) or *buf (a byte item's output, pointing into the segment), or a
 * failure's code and message (NULL if none; pointing into the segment). A
 * record that overruns its buffer reads as CF_EBROKEN. `cur` walks the
 * items in order: start it zeroed. */
typedef struct cf__chunk_cursor {
  size_t seg, in_seg, off, item;
} cf__chunk_cursor;
int cf__chunk_next(const cf__chunk *c, cf__chunk_cursor *cur, void **value,
                   cf_buf *buf, const char **msg);

/* cf_map_array for byte tasks (the machinery of executor/map.c, items sent
 * through submit_batch_bytes): the map behind cf_process_pool_map_bytes,
 * which has checked that ex, if not NULL, has byte tasks. `call` names the
 * public call in errors. */
CF__SIBLING int cf__map_array_bytes(const char *call, cf_executor *ex,
                                    cf_proc_fn fn, const void *items, size_t n,
                                    size_t item_size, const cf_map_opts *opts,
                                    cf_map **out);

/* Runs a task the way every pool does: clears the thread's cf_fail message,
 * calls fn(arg, &out), then completes `f` (already RUNNING) with the result
 * or with the failure code and recorded message. */
void cf__run_task(cf_future *f, cf_fn fn, void *arg, cf_destroy_fn destroy);
/* cf__run_task for a task that can be cancelled while it runs: when *cancel
 * is set and the task returns CF_ECANCELLED, its future becomes CANCELLED. */
void cf__run_task_cancellable(cf_future *f, cf_fn fn, void *arg,
                              cf_destroy_fn destroy,
                              const _Atomic bool *cancel);
/* cf__run_task that also drops one reference the caller holds to f (a
 * queue's), in the completion itself (cf__future_complete_drop): f may be
 * freed when it returns. */
void cf__run_task_drop(cf_future *f, cf_fn fn, void *arg,
                       cf_destroy_fn destroy);

/* Records why a submit failed (rc: CF_ESHUTDOWN, CF_EBROKEN, CF_ENOMEM...)
 * as the last error of `call`; returns rc. */
CF__SIBLING int cf__fail_submit(const char *call, int rc);

/* Generic submit_batch for pools without batching: one submit per item
 * (item pointer = items + i * item_size). */
int cf__submit_batch_each(cf_executor *ex, cf_fn fn, const void *items,
                          size_t count, size_t item_size, cf_destroy_fn destroy,
                          cf_future **outs);

/* The message recorded by cf_fail on this thread since the last clear (NULL
 * if none); the caller takes ownership (free with free()). */
CF__SIBLING char *cf__fail_take_message(void);
CF__SIBLING void cf__fail_clear(void);

#endif
