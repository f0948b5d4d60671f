/* A chunk's outcomes: one future for many map items (see cf__chunk in
 * executor_internal.h). The pool fills it segment by segment as results
 * arrive (a worker's reply, what a dead worker left in its result area, a
 * failure), the map reads the items out of it in order. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "executor/executor_internal.h"

int cf__chunk_add(cf__chunk *c, const cf__chunk_seg *s) {
  if (c->nseg == c->cap) {
    size_t cap = c->cap ? 2 * c->cap : 2;
    cf__chunk_seg *n = realloc(c->segs, cap * sizeof *n);
    if (!n)
      return -1;
    c->segs = n;
    c->cap = cap;
  }
  /* Segments arrive in item order but for one case: a failed item and
   * the items re-run after it come in after the ones salvaged before it,
   * in order; a re-run rest always starts after every earlier segment.
   * Keep them sorted by first item anyway (insertion). */
  size_t k = c->nseg;
  while (k > 0 && c->segs[k - 1].first > s->first) {
    c->segs[k] = c->segs[k - 1];
    k--;
  }
  c->segs[k] = *s;
  c->nseg++;
  c->covered += s->count;
  return 0;
}

/* Runs destroy on each successful value of segment s. */
static void destroy_values(const cf__chunk *c, const cf__chunk_seg *s) {
  if (!c->destroy || c->bytes || !s->buf ||
      s->table_n > s->len / sizeof(cf__item_result))
    return;
  for (size_t i = 0; i < s->count && i < s->table_n; i++) {
    cf__item_result r;
    memcpy(&r, s->buf + i * sizeof r, sizeof r);
    if (r.code == 0)
      c->destroy((void *)(uintptr_t)r.out);
  }
}

void cf__chunk_free(void *v) {
  cf__chunk *c = v;
  if (!c)
    return;
  for (size_t k = 0; k < c->nseg; k++) {
    cf__chunk_seg *s = &c->segs[k];
    destroy_values(c, s);
    if (s->buf && s->mapped)
      munmap(s->buf, s->len);
    else
      free(s->buf);
    free(s->msg);
  }
  free(c->segs);
  free(c);
}

static const char overran[] = "the worker's report of this item's result "
                              "was cut short or overran its buffer";

int cf__chunk_next(const cf__chunk *c, cf__chunk_cursor *cur, void **value,
                   cf_buf *buf, const char **msg) {
  *msg = NULL;
  while (cur->seg < c->nseg && cur->in_seg >= c->segs[cur->seg].count) {
    cur->seg++;
    cur->in_seg = 0;
  }
  if (cur->seg >= c->nseg || cur->item >= c->count) {
    *msg = "the chunk has no outcome for this item";
    return CF_EBROKEN;
  }
  const cf__chunk_seg *s = &c->segs[cur->seg];
  size_t i = cur->in_seg++;
  cur->item++;
  if (!s->buf) {
    *msg = s->msg;
    return s->code;
  }
  size_t tbytes = s->table_n * sizeof(cf__item_result);
  if (i == 0)
    cur->off = tbytes;
  if (s->table_n > s->len / sizeof(cf__item_result) || i >= s->table_n ||
      cur->off > s->len) {
    cur->off = SIZE_MAX; /* and every later item of the segment */
    *msg = overran;
    return CF_EBROKEN;
  }
  cf__item_result r;
  memcpy(&r, s->buf + i * sizeof r, sizeof r);
  uint64_t dlen = r.code ? r.msg_len : c->bytes ? r.out : 0;
  uint64_t span = cf__item_span(c->bytes, &r);
  if (span < dlen || span > s->len - cur->off) {
    cur->off = SIZE_MAX;
    *msg = overran;
    return CF_EBROKEN;
  }
  const char *data = s->buf + cur->off;
  cur->off += (size_t)span;
  if (r.code != 0) {
    if (dlen && data[dlen - 1] == '\0')
      *msg = data;
    return r.code;
  }
  if (c->bytes) {
    buf->data = (void *)data;
    buf->len = (size_t)dlen;
  } else {
    *value = (void *)(uintptr_t)r.out;
  }
  return 0;
}
