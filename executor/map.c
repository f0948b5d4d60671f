/* cf_map_array / cf_map_iter: map over an executor, results in input order.
 *
 * A map keeps a ring of futures in flight, oldest first. cf_map_next waits
 * on the oldest, hands out its outcome and tops the ring up from the input,
 * so a lazy input never has more than `window` tasks outstanding.
 *
 * Over a pool with submit_chunk (the process pool) an array map sends
 * `chunksize` items as one task with one future, whose result holds every
 * item's outcome (cf__chunk): the ring then holds chunks, and cf_map_next
 * reads the items of the oldest out of its buffer, one by one. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/report.h"
#include "executor/executor_internal.h"
#include "futures/future_internal.h"

struct cf_map {
  cf_executor *ex;
  cf_fn fn;         /* the task, or NULL for ... */
  cf_proc_fn bytes; /* ... a byte task (cf_process_pool_map_bytes) */
  cf_destroy_fn destroy;
  /* input: an array ... */
  const char *items;
  size_t n, item_size, next_index;
  /* ... or an iterator */
  cf_next_fn next;
  void *state;
  bool input_done;
  int input_rc; /* reported once the ring drains: 0 or the input's error */
  size_t chunk;
  cf_deadline deadline;
  bool timed_out;
  /* futures in flight (chunked: one per chunk, ring_n[] items each) */
  cf_future **ring;
  size_t *ring_n;
  size_t cap, head, count;
  /* the item last handed out */
  cf_future *last;
  int last_rc;
  /* chunked (submit_chunk): the chunk being read, and the last item's
   * failure code and message (in the chunk) and byte output (lent) */
  bool chunked, yielded;
  cf_future *cur_f;
  const cf__chunk *cur;
  cf__chunk_cursor cursor;
  size_t cur_left;
  int cur_fail; /* the chunk's future itself failed: each item fails so */
  const char *cur_f_msg; /* ... with this message (in the future) */
  int last_code;
  const char *last_msg;
  cf_buf lent;
};

static void ring_push(cf_map *m, cf_future *f, size_t items) {
  m->ring[(m->head + m->count) % m->cap] = f;
  if (m->ring_n)
    m->ring_n[(m->head + m->count) % m->cap] = items;
  m->count++;
}

static cf_future *ring_pop(cf_map *m) {
  cf_future *f = m->ring[m->head];
  m->head = (m->head + 1) % m->cap;
  m->count--;
  return f;
}

static void stop_input(cf_map *m, int rc) {
  m->input_done = true;
  if (m->input_rc == 0 && rc != CF_EDONE)
    m->input_rc = rc;
}

/* Tops the ring up. Errors end the input and surface after earlier items. */
static void refill(cf_map *m) {
  while (!m->input_done && m->count < m->cap) {
    size_t room = m->cap - m->count;
    if (!m->next) {
      size_t left = m->n - m->next_index;
      if (left == 0) {
        stop_input(m, CF_EDONE);
        break;
      }
      size_t k = m->chunk < left ? m->chunk : left;
      if (m->chunked) {
        cf_future *f = NULL;
        const char *at = m->items + m->next_index * m->item_size;
        int rc = m->ex->vt->submit_chunk(m->ex, m->fn, m->bytes, at, k,
                                         m->item_size, m->destroy, &f);
        if (rc != 0) {
          stop_input(m, rc);
          break;
        }
        ring_push(m, f, k);
        m->next_index += k;
        continue;
      }
      /* Whole chunks only: a chunk cut to the room left would send one
       * item per message once the window is full (pools with
       * submit_batch, e.g. the MPI pool). The window holds at least one
       * chunk (map_new), so an empty ring always has room. */
      if (k > room)
        break;
      cf_future *batch[64];
      cf_future **outs = k <= 64 ? batch : malloc(k * sizeof *outs);
      if (!outs) {
        stop_input(m, CF_ENOMEM);
        break;
      }
      const char *at = m->items + m->next_index * m->item_size;
      int rc = m->bytes
                   ? m->ex->vt->submit_batch_bytes(m->ex, m->bytes, at, k,
                                                   m->item_size, outs)
                   : m->ex->vt->submit_batch(m->ex, m->fn, at, k, m->item_size,
                                             m->destroy, outs);
      if (rc == 0) {
        for (size_t i = 0; i < k; i++)
          ring_push(m, outs[i], 1);
        m->next_index += k;
      } else {
        stop_input(m, rc);
      }
      if (outs != batch)
        free(outs);
    } else {
      void *item = NULL;
      int rc = m->next(m->state, &item);
      if (rc != 0) {
        stop_input(m, rc);
        break;
      }
      cf_future *f = NULL;
      rc = m->ex->vt->submit(m->ex, m->fn, item, m->destroy, &f);
      if (rc != 0) {
        stop_input(m, rc);
        break;
      }
      ring_push(m, f, 1);
    }
  }
}

static size_t default_window(cf_executor *ex) {
  size_t w = ex->vt->default_window ? ex->vt->default_window(ex) : 16;
  return w < 16 ? 16 : w;
}

/* array: an array map, which pools with submit_chunk run chunk by chunk. */
static int map_new(const char *call, cf_executor *ex, cf_fn fn,
                   cf_proc_fn bytes, const cf_map_opts *opts, size_t cap,
                   bool array, cf_map **out, cf_map **mp) {
  if (!out)
    return cf__fail_at(call, CF_EINVAL, "NULL out");
  *out = NULL;
  if (!ex || (!fn && !bytes))
    return cf__fail_at(call, CF_EINVAL,
                       ex ? "NULL task function" : "NULL executor");
  cf_map_opts o = opts ? *opts : (cf_map_opts){0};
  if (o.window > CF_MAP_MAX_WINDOW || o.chunksize > CF_MAP_MAX_WINDOW)
    return cf__fail_fmt(call, CF_EINVAL,
                        "%s %zu is above CF_MAP_MAX_WINDOW (%zu)",
                        o.window > CF_MAP_MAX_WINDOW ? "window" : "chunksize",
                        o.window > CF_MAP_MAX_WINDOW ? o.window : o.chunksize,
                        (size_t)CF_MAP_MAX_WINDOW);
  if (cap > CF_MAP_MAX_WINDOW) /* a huge array: keep this many in flight */
    cap = CF_MAP_MAX_WINDOW;
  cf_deadline d;
  if (cf__deadline_from_timeout(o.use_timeout ? o.timeout_s : CF_FOREVER, &d))
    return cf__fail_at(call, CF_EINVAL, "the timeout is NaN");
  cf_map *m = calloc(1, sizeof *m);
  if (!m)
    return cf__fail_at(call, CF_ENOMEM, "no memory for the map");
  m->ex = ex;
  m->fn = fn;
  m->bytes = bytes;
  m->destroy = o.result_destroy;
  m->deadline = d;
  m->chunk = o.chunksize ? o.chunksize : 1;
  if (o.window)
    cap = o.window;
  if (cap == 0)
    cap = 1;
  if (m->chunk > cap)
    cap = m->chunk;
  m->chunked = array && ex->vt->submit_chunk != NULL;
  if (m->chunked) { /* chunks in flight, for cap items */
    cap = (cap + m->chunk - 1) / m->chunk;
    /* With no window given, not the whole array at once: every chunk in
     * flight holds a copy of its items and, soon, its results, and fresh
     * memory for all of them costs more than the work (a 1M-item map of
     * 1,000-item chunks, 2 workers: 8.1 M items/s with all 1,000 chunks
     * sent at once, 14.6 with 16). The executor's window, in chunks,
     * keeps every worker busy. */
    size_t dw = default_window(ex);
    if (!o.window && cap > dw)
      cap = dw;
  }
  m->cap = cap;
  m->ring = malloc(cap * sizeof *m->ring);
  m->ring_n = m->chunked ? malloc(cap * sizeof *m->ring_n) : NULL;
  if (!m->ring || (m->chunked && !m->ring_n)) {
    free(m->ring);
    free(m->ring_n);
    free(m);
    return cf__fail_fmt(call, CF_ENOMEM, "no memory for a window of %zu", cap);
  }
  *mp = m;
  return 0;
}

/* First fill: an error before any task went in fails the call itself. */
static int map_start(const char *call, cf_map *m, cf_map **out) {
  refill(m);
  if (m->count == 0 && m->input_rc != 0 && m->input_rc != CF_EDONE &&
      !m->next) {
    int rc = m->input_rc;
    cf_map_free(m);
    return cf__fail_submit(call, rc);
  }
  *out = m;
  return 0;
}


/* cf_map_array of a cf_fn (fn) or of a byte task (bytes): one mechanism. */
static int map_array(const char *call, cf_executor *ex, cf_fn fn,
                     cf_proc_fn bytes, const void *items, size_t n,
                     size_t item_size, const cf_map_opts *opts, cf_map **out) {
  if ((!items && n > 0) || item_size == 0 ||
      (n > 0 && item_size > SIZE_MAX / n)) {
    if (out)
      *out = NULL;
    return cf__fail_at(call, CF_EINVAL,
                       item_size == 0 ? "item_size is 0"
                       : !items       ? "NULL items with n > 0"
                                      : "n * item_size overflows");
  }
  cf_map *m = NULL;
  int rc = map_new(call, ex, fn, bytes, opts, n, true, out, &m);
  if (rc != 0)
    return rc;
  if (bytes && !ex->vt->submit_batch_bytes && !ex->vt->submit_chunk) {
    free(m->ring);
    free(m->ring_n);
    free(m);
    return cf__fail_at(call, CF_EINVAL, "the executor has no byte tasks");
  }
  m->items = items;
  m->n = n;
  m->item_size = item_size;
  return map_start(call, m, out);
}

int cf_map_array(cf_executor *ex, cf_fn fn, void *items, size_t n,
                 size_t item_size, const cf_map_opts *opts, cf_map **out) {
  return map_array(__func__, ex, fn, NULL, items, n, item_size, opts, out);
}

int cf__map_array_bytes(const char *call, cf_executor *ex, cf_proc_fn fn,
                        const void *items, size_t n, size_t item_size,
                        const cf_map_opts *opts, cf_map **out) {
  return map_array(call, ex, NULL, fn, items, n, item_size, opts, out);
}

int cf_map_iter(cf_executor *ex, cf_fn fn, cf_next_fn next, void *state,
                const cf_map_opts *opts, cf_map **out) {
  if (!next) {
    if (out)
      *out = NULL;
    return CF__FAIL(CF_EINVAL, "NULL next function");
  }
  cf_map *m = NULL;
  int rc = map_new(__func__, ex, fn, NULL, opts, ex ? default_window(ex) : 0,
                   false, out, &m);
  if (rc != 0)
    return rc;
  m->next = next;
  m->state = state;
  m->chunk = 1; /* lazy items are pointers: one task each */
  return map_start(__func__, m, out);
}

static void cancel_ring(cf_map *m) {
  for (size_t i = 0; i < m->count; i++)
    cf_future_cancel(m->ring[(m->head + i) % m->cap]);
}

/* The next item of the chunk being read (m->cur_left > 0). */
static int chunk_item(cf_map *m, void **out) {
  m->cur_left--;
  m->yielded = true;
  void *value = NULL;
  int code = m->cur_fail;
  const char *msg = NULL;
  if (code == 0)
    code = cf__chunk_next(m->cur, &m->cursor, &value, &m->lent, &msg);
  else
    msg = cf_future_cancelled(m->cur_f) ? NULL : m->cur_f_msg;
  m->last_code = code;
  m->last_msg = msg;
  if (code == 0) {
    *out = m->cur->bytes ? (void *)&m->lent : value;
    return 0;
  }
  if (code == CF_ECANCELLED)
    return CF__FAIL(code, "the item's chunk was cancelled");
  int rc = code == CF_EBROKEN ? CF_EBROKEN : CF_EFAILED;
  return CF__FAILF(rc, "the task failed with %s: %s", cf_err_name(code),
                   msg ? msg : cf_strerror(code));
}

int cf_map_next(cf_map *m, void **out) {
  if (!m || !out)
    return CF__FAIL(CF_EINVAL, m ? "NULL out" : "NULL map");
  *out = NULL;
  if (m->timed_out)
    return CF__FAIL(CF_ETIMEDOUT, "the map's deadline has passed");
  if (m->chunked && m->cur_left > 0)
    return chunk_item(m, out);
  if (m->chunked && m->cur_f) { /* done with that chunk */
    cf_future_unref(m->cur_f);
    m->cur_f = NULL;
    m->cur = NULL;
  }
  if (m->count == 0)
    refill(m);
  if (m->count == 0) {
    int rc = m->input_rc ? m->input_rc : CF_EDONE;
    m->input_rc = 0; /* an input error is reported once, then the end */
    return rc == CF_EDONE
               ? CF__FAIL(rc, "every item was yielded")
               : CF__FAILF(rc, "the input stopped with %s", cf_err_name(rc));
  }
  int rc = cf__future_wait(m->ring[m->head], &m->deadline);
  if (rc == CF_ETIMEDOUT) {
    /* The map is over: cancel what has not started. */
    m->timed_out = true;
    cancel_ring(m);
    return CF__FAIL(rc, "the map's deadline has passed");
  }
  if (rc != 0)
    return cf__fail_outcome(__func__, rc, m->ring[m->head]);
  if (m->chunked) {
    size_t items = m->ring_n[m->head];
    m->cur_f = ring_pop(m);
    void *acc = NULL;
    m->cur_fail = cf__future_outcome(m->cur_f, &acc);
    if (m->cur_fail != 0) {
      /* the chunk failed as a whole (cancelled, no memory): so does each
       * of its items, with the future's code and message */
      cf_error e = {0};
      if (m->cur_fail != CF_ECANCELLED &&
          cf_future_exception(m->cur_f, 0, &e) == 0)
        m->cur_fail = e.code ? e.code : m->cur_fail;
      m->cur_f_msg = e.message;
    }
    m->cur = acc;
    memset(&m->cursor, 0, sizeof m->cursor);
    m->cur_left = items;
    refill(m);
    return chunk_item(m, out);
  }
  cf_future_unref(m->last);
  m->last = ring_pop(m);
  m->last_rc = cf__future_outcome(m->last, out);
  refill(m);
  return m->last_rc ? cf__fail_outcome(__func__, m->last_rc, m->last) : 0;
}

int cf_map_error(const cf_map *m, cf_error *err) {
  if (!m || !err)
    return CF__FAIL(CF_EINVAL, m ? "NULL error record" : "NULL map");
  if (!m->last && !m->yielded)
    return CF__FAIL(CF_EINVALSTATE, "cf_map_next has yielded no item yet");
  err->code = 0;
  err->message = NULL;
  if (m->chunked) {
    err->code = m->last_code;
    err->message = m->last_code == 0 ? NULL
                   : m->last_msg     ? m->last_msg
                                     : cf_strerror(m->last_code);
    return 0;
  }
  if (m->last_rc == 0)
    return 0;
  if (m->last_rc == CF_ECANCELLED) {
    err->code = CF_ECANCELLED;
    err->message = cf_strerror(CF_ECANCELLED);
    return 0;
  }
  int rc = cf_future_exception(m->last, 0, err);
  return rc ? cf__fail_retag(__func__, rc) : 0;
}

void cf_map_free(cf_map *m) {
  if (!m)
    return;
  cancel_ring(m);
  /* Items already running may still read the caller's input: wait for
   * them, so that the input can go as soon as we return. */
  cf_deadline forever;
  cf__deadline_from_timeout(CF_FOREVER, &forever);
  while (m->count) {
    cf_future *f = ring_pop(m);
    cf__future_wait(f, &forever);
    cf_future_unref(f);
  }
  cf_future_unref(m->last);
  cf_future_unref(m->cur_f);
  free(m->ring);
  free(m->ring_n);
  free(m);
}
