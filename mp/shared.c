/* Value, Array and dict in process-shared memory (cfutures/shared.h).
 *
 * Each object is one cf__sync_alloc'd MAP_SHARED mapping (sync/monitor.h):
 * a cf_lock (robust, process-shared) followed by the data. The creator
 * destroys the lock and unmaps; other processes only unmap.
 *
 * Value/Array: the elements are C11 atomics (lock-free, hence
 * address-free: they work between processes); doubles are stored as their
 * bits in a uint64_t so that compare-and-set compares bits and the add
 * loop cannot spin on a NaN.
 *
 * dict: open addressing with linear probing over a power-of-two number of
 * fixed-size slots. Every call holds the dict's lock for its whole length
 * (a call by the lock's holder does not take it again). A slot is
 *   meta   the state word: bits 0-1 EMPTY / FULL / TOMB, bit 2 which of
 *          the two value buffers is current, bits 32-63 the value length;
 *   hash, key_len, key;
 *   two value buffers of max_value bytes.
 * Crash safety: every change commits with one atomic store of a meta word,
 * after (release order) everything it makes visible was written: a new
 * value goes into the spare buffer, a new key into a slot that is not
 * FULL. A process killed anywhere in a call therefore leaves each slot
 * either as it was or as it was meant to be. Only the entry count can be
 * stale: `dirty` is set around every change, and whoever finds it set
 * under the lock (the holder died in a call) counts the FULL slots again.
 *
 * Lock ordering: each object has one lock, and no call holds two.
 */
#include <cfutures/shared.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/report.h"
#include "sync/lock_internal.h"
#include "sync/monitor.h"

/* Atomics in shared memory must not fall back to a lock table private to
 * each process. */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2 && ATOMIC_LLONG_LOCK_FREE == 2,
               "process-shared atomics need lock-free 32- and 64-bit atomics");

/* ---- Array and Value ------------------------------------------------------
 */

struct cf_array {
  cf_lock lock; /* the user's (get_lock()); no call here takes it */
  cf_ctype type;
  size_t len;
  _Alignas(8) unsigned char data[]; /* len atomic elements */
};

static size_t elem_size(cf_ctype t) {
  return t == CF_CTYPE_I32 ? 4 : 8;
}

static const char *type_name(cf_ctype t) {
  switch (t) {
  case CF_CTYPE_I32:
    return "int32";
  case CF_CTYPE_I64:
    return "int64";
  case CF_CTYPE_U64:
    return "uint64";
  case CF_CTYPE_F64:
    return "double";
  }
  return "?";
}

static bool is_value_call(const char *call) {
  return strncmp(call, "cf_value", 8) == 0;
}

static int array_new(cf_ctype type, size_t len, cf_array **out,
                     const char *call) {
  if (!out)
    return cf__fail_at(call, CF_EINVAL, "NULL out");
  *out = NULL;
  if (type < CF_CTYPE_I32 || type > CF_CTYPE_F64)
    return cf__fail_fmt(call, CF_EINVAL, "unknown type %d", (int)type);
  size_t bytes;
  if (len == 0)
    return cf__fail_at(call, CF_EINVAL, "length 0");
  if (__builtin_mul_overflow(len, elem_size(type), &bytes) ||
      bytes > SIZE_MAX / 2)
    return cf__fail_fmt(call, CF_EINVAL, "length %zu is too large", len);
  cf_array *a = cf__sync_alloc(sizeof *a + bytes, true);
  if (!a)
    return cf__fail_at(call, CF_ENOMEM, "the shared mapping failed");
  if (cf__lock_init(&a->lock, true)) {
    cf__sync_free(a, sizeof *a + bytes);
    return cf__fail_at(call, CF_ESYS,
                       "its process-shared lock could not be made");
  }
  a->type = type;
  a->len = len; /* the mapping is zeroed: every element is 0 */
  *out = a;
  return 0;
}

int cf_array_new(cf_ctype type, size_t len, cf_array **out) {
  return array_new(type, len, out, __func__);
}

int cf_value_new(cf_ctype type, cf_value **out) {
  return array_new(type, 1, (cf_array **)(void *)out, __func__);
}

/* 0, or CF_EINVAL recorded for `call`. */
static int check(const cf_array *a, size_t i, cf_ctype t, const void *ptr,
                 bool need_ptr, const char *call) {
  const char *noun = is_value_call(call) ? "value" : "array";
  if (!a)
    return cf__fail_fmt(call, CF_EINVAL, "NULL %s", noun);
  if (need_ptr && !ptr)
    return cf__fail_at(call, CF_EINVAL, "NULL pointer argument");
  if (a->type != t)
    return cf__fail_fmt(call, CF_EINVAL, "the %s holds %s, not %s", noun,
                        type_name(a->type), type_name(t));
  if (i >= a->len)
    return cf__fail_fmt(call, CF_EINVAL, "index %zu out of range (length %zu)",
                        i, a->len);
  return 0;
}

static int cas_missed(const char *call) {
  return cf__fail_at(call, CF_EINVALSTATE,
                     "the current value is not the expected one");
}

/* The integer calls: get, set, add (wrapping), cas. The user's numbers are
 * seq_cst: they order with each other as a lock would, in every process. */
#define INT_IMPL(sfx, T, CT)                                                   \
  static _Atomic T *at_##sfx(cf_array *a, size_t i) {                          \
    return (_Atomic T *)(void *)a->data + i;                                   \
  }                                                                            \
  static int get_##sfx(cf_array *a, size_t i, T *out, const char *call) {      \
    int rc = check(a, i, CT, out, true, call);                                 \
    if (rc)                                                                    \
      return rc;                                                               \
    /* seq_cst: the user's data (pairs with set/add/cas) */                    \
    *out = atomic_load_explicit(at_##sfx(a, i), memory_order_seq_cst);         \
    return 0;                                                                  \
  }                                                                            \
  static int set_##sfx(cf_array *a, size_t i, T v, const char *call) {         \
    int rc = check(a, i, CT, NULL, false, call);                               \
    if (rc)                                                                    \
      return rc;                                                               \
    /* seq_cst: publishes the user's data (pairs with get) */                  \
    atomic_store_explicit(at_##sfx(a, i), v, memory_order_seq_cst);            \
    return 0;                                                                  \
  }                                                                            \
  static int add_##sfx(cf_array *a, size_t i, T delta, T *old,                 \
                       const char *call) {                                     \
    int rc = check(a, i, CT, NULL, false, call);                               \
    if (rc)                                                                    \
      return rc;                                                               \
    /* seq_cst: a read-modify-write of the user's data (pairs with all) */     \
    T prev = atomic_fetch_add_explicit(at_##sfx(a, i), delta,                  \
                                       memory_order_seq_cst);                  \
    if (old)                                                                   \
      *old = prev;                                                             \
    return 0;                                                                  \
  }                                                                            \
  static int cas_##sfx(cf_array *a, size_t i, T *expected, T desired,          \
                       const char *call) {                                     \
    int rc = check(a, i, CT, expected, true, call);                            \
    if (rc)                                                                    \
      return rc;                                                               \
    /* seq_cst: a read-modify-write of the user's data (pairs with all) */     \
    if (atomic_compare_exchange_strong_explicit(at_##sfx(a, i), expected,      \
                                                desired, memory_order_seq_cst, \
                                                memory_order_seq_cst))         \
      return 0;                                                                \
    return cas_missed(call);                                                   \
  }

INT_IMPL(i32, int32_t, CF_CTYPE_I32)
INT_IMPL(i64, int64_t, CF_CTYPE_I64)
INT_IMPL(u64, uint64_t, CF_CTYPE_U64)

/* Doubles, stored as their bits. */
static _Atomic uint64_t *at_f64(cf_array *a, size_t i) {
  return (_Atomic uint64_t *)(void *)a->data + i;
}

static uint64_t bits_of(double x) {
  uint64_t b;
  memcpy(&b, &x, sizeof b);
  return b;
}

static double double_of(uint64_t b) {
  double x;
  memcpy(&x, &b, sizeof x);
  return x;
}

static int get_f64(cf_array *a, size_t i, double *out, const char *call) {
  int rc = check(a, i, CF_CTYPE_F64, out, true, call);
  if (rc)
    return rc;
  /* seq_cst: the user's data (pairs with set/add/cas) */
  *out = double_of(atomic_load_explicit(at_f64(a, i), memory_order_seq_cst));
  return 0;
}

static int set_f64(cf_array *a, size_t i, double v, const char *call) {
  int rc = check(a, i, CF_CTYPE_F64, NULL, false, call);
  if (rc)
    return rc;
  /* seq_cst: publishes the user's data (pairs with get) */
  atomic_store_explicit(at_f64(a, i), bits_of(v), memory_order_seq_cst);
  return 0;
}

static int add_f64(cf_array *a, size_t i, double delta, double *old,
                   const char *call) {
  int rc = check(a, i, CF_CTYPE_F64, NULL, false, call);
  if (rc)
    return rc;
  _Atomic uint64_t *p = at_f64(a, i);
  uint64_t cur = atomic_load_explicit(p, memory_order_relaxed);
  /* seq_cst on success: a read-modify-write of the user's data; the bits
   * compared are the bits loaded, so a NaN cannot make this spin. */
  while (!atomic_compare_exchange_weak_explicit(
      p, &cur, bits_of(double_of(cur) + delta), memory_order_seq_cst,
      memory_order_relaxed))
    ;
  if (old)
    *old = double_of(cur);
  return 0;
}

static int cas_f64(cf_array *a, size_t i, double *expected, double desired,
                   const char *call) {
  int rc = check(a, i, CF_CTYPE_F64, expected, true, call);
  if (rc)
    return rc;
  uint64_t e = bits_of(*expected);
  /* seq_cst: a read-modify-write of the user's data (pairs with all) */
  if (atomic_compare_exchange_strong_explicit(
          at_f64(a, i), &e, bits_of(desired), memory_order_seq_cst,
          memory_order_seq_cst))
    return 0;
  *expected = double_of(e);
  return cas_missed(call);
}

#define PUBLIC_IMPL(sfx, T)                                                    \
  int cf_array_get_##sfx(cf_array *a, size_t i, T *out) {                      \
    return get_##sfx(a, i, out, __func__);                                     \
  }                                                                            \
  int cf_array_set_##sfx(cf_array *a, size_t i, T v) {                         \
    return set_##sfx(a, i, v, __func__);                                       \
  }                                                                            \
  int cf_array_add_##sfx(cf_array *a, size_t i, T delta, T *old) {             \
    return add_##sfx(a, i, delta, old, __func__);                              \
  }                                                                            \
  int cf_array_cas_##sfx(cf_array *a, size_t i, T *expected, T desired) {      \
    return cas_##sfx(a, i, expected, desired, __func__);                       \
  }                                                                            \
  int cf_value_get_##sfx(cf_value *v, T *out) {                                \
    return get_##sfx((cf_array *)(void *)v, 0, out, __func__);                 \
  }                                                                            \
  int cf_value_set_##sfx(cf_value *v, T x) {                                   \
    return set_##sfx((cf_array *)(void *)v, 0, x, __func__);                   \
  }                                                                            \
  int cf_value_add_##sfx(cf_value *v, T delta, T *old) {                       \
    return add_##sfx((cf_array *)(void *)v, 0, delta, old, __func__);          \
  }                                                                            \
  int cf_value_cas_##sfx(cf_value *v, T *expected, T desired) {                \
    return cas_##sfx((cf_array *)(void *)v, 0, expected, desired, __func__);   \
  }

PUBLIC_IMPL(i32, int32_t)
PUBLIC_IMPL(i64, int64_t)
PUBLIC_IMPL(u64, uint64_t)
PUBLIC_IMPL(f64, double)

cf_lock *cf_array_get_lock(cf_array *a) {
  return a ? &a->lock : NULL;
}

size_t cf_array_len(const cf_array *a) {
  return a ? a->len : 0;
}

cf_ctype cf_array_type(const cf_array *a) {
  return a ? a->type : (cf_ctype)0;
}

void cf_array_free(cf_array *a) {
  if (!a)
    return;
  if (cf__sync_is_creator(a))
    cf__lock_fini(&a->lock);
  cf__sync_free(a, 0);
}

cf_lock *cf_value_get_lock(cf_value *v) {
  return cf_array_get_lock((cf_array *)(void *)v);
}

cf_ctype cf_value_type(const cf_value *v) {
  return cf_array_type((const cf_array *)(const void *)v);
}

void cf_value_free(cf_value *v) {
  cf_array_free((cf_array *)(void *)v);
}

/* ---- dict -----------------------------------------------------------------
 */

enum { EMPTY = 0, FULL = 1, TOMB = 2 };

typedef struct slot {
  _Atomic uint64_t meta; /* state | buffer << 2 | value length << 32 */
  uint32_t hash;
  uint32_t key_len;
  char key[CF_DICT_KEY_MAX + 1];
  _Alignas(8) unsigned char values[]; /* two buffers of max_value bytes */
} slot;

struct cf_dict {
  cf_lock lock; /* guards everything below except the constants */
  size_t capacity, max_value, nslots, stride; /* constants */
  /* 1 while a call changes the table: found set by a locker, the last
   * holder died in a call and `count` may be stale. */
  _Atomic uint32_t dirty;
  /* The thread running an update function, so that it cannot call the
   * dict; 0 when none. */
  _Atomic pid_t fn_tid;
  size_t count;                       /* FULL slots */
  _Alignas(16) unsigned char slots[]; /* cf__sync_alloc aligns to 16 */
};

_Static_assert(_Alignof(struct cf_dict) <= 16 &&
                   _Alignof(struct cf_array) <= 16,
               "cf__sync_alloc's memory is 16-byte aligned");

static uint64_t meta_make(unsigned state, unsigned buf, size_t len) {
  return (uint64_t)state | (uint64_t)buf << 2 | (uint64_t)len << 32;
}
static unsigned meta_state(uint64_t m) {
  return (unsigned)(m & 3);
}
static unsigned meta_buf(uint64_t m) {
  return (unsigned)(m >> 2 & 1);
}
static size_t meta_len(uint64_t m) {
  return (size_t)(m >> 32);
}

static slot *slot_at(cf_dict *d, size_t i) {
  return (slot *)(void *)(d->slots + i * d->stride);
}

static unsigned char *buffer(cf_dict *d, slot *s, unsigned b) {
  return s->values + (size_t)b * d->max_value;
}

/* The meta word is only changed under the lock, so relaxed loads suffice
 * for its holder. */
static uint64_t meta_of(slot *s) {
  return atomic_load_explicit(&s->meta, memory_order_relaxed);
}

/* Commits a slot's new state. release: the key and value written before
 * it are in memory first, as a process killed right after would leave
 * them (pairs with the next holder's lock acquisition). */
static void commit(slot *s, uint64_t meta) {
  atomic_store_explicit(&s->meta, meta, memory_order_release);
}

int cf_dict_new(size_t capacity, size_t max_value, cf_dict **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  if (capacity == 0)
    return CF__FAIL(CF_EINVAL, "capacity 0");
  if (capacity > UINT32_MAX)
    return CF__FAILF(CF_EINVAL, "capacity %zu is above 2^32 - 1", capacity);
  if (max_value > UINT32_MAX)
    return CF__FAILF(CF_EINVAL, "max_value %zu is above 2^32 - 1", max_value);
  size_t nslots = 2;
  while (nslots < capacity + (capacity + 2) / 3)
    nslots *= 2;
  size_t stride, table, total;
  if (__builtin_mul_overflow(max_value, (size_t)2, &stride) ||
      __builtin_add_overflow(stride, sizeof(slot) + 7, &stride) ||
      __builtin_mul_overflow(stride & ~(size_t)7, nslots, &table) ||
      __builtin_add_overflow(table, sizeof(cf_dict), &total) ||
      total > SIZE_MAX / 2)
    return CF__FAIL(CF_EINVAL, "capacity * max_value is too large");
  stride &= ~(size_t)7;
  cf_dict *d = cf__sync_alloc(total, true);
  if (!d)
    return CF__FAILF(CF_ENOMEM, "a shared mapping of %zu bytes failed", total);
  if (cf__lock_init(&d->lock, true)) {
    cf__sync_free(d, total);
    return CF__FAIL(CF_ESYS, "its process-shared lock could not be made");
  }
  d->capacity = capacity;
  d->max_value = max_value;
  d->nslots = nslots;
  d->stride = stride;
  /* The mapping is zeroed: every slot EMPTY, count 0, not dirty. */
  *out = d;
  return 0;
}

/* A key: 0 and its length, or CF_EINVAL recorded for `call`. */
static int check_key(cf_dict *d, const char *key, size_t *klen,
                     const char *call) {
  if (!d)
    return cf__fail_at(call, CF_EINVAL, "NULL dict");
  if (!key)
    return cf__fail_at(call, CF_EINVAL, "NULL key");
  *klen = strnlen(key, CF_DICT_KEY_MAX + 1);
  if (*klen == 0)
    return cf__fail_at(call, CF_EINVAL, "empty key");
  if (*klen > CF_DICT_KEY_MAX)
    return cf__fail_fmt(call, CF_EINVAL, "the key is longer than %d bytes",
                        CF_DICT_KEY_MAX);
  return 0;
}

/* FNV-1a. */
static uint32_t hash_key(const char *key, size_t klen) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < klen; i++)
    h = (h ^ (unsigned char)key[i]) * 16777619u;
  return h;
}

/* Recounts after a death in a call (lock held). */
static void recover(cf_dict *d) {
  size_t n = 0;
  /* Holds d->lock. */
  for (size_t i = 0; i < d->nslots; i++)
    n += meta_state(meta_of(slot_at(d, i))) == FULL;
  d->count = n;
  atomic_store_explicit(&d->fn_tid, 0, memory_order_relaxed);
  atomic_store_explicit(&d->dirty, 0, memory_order_relaxed);
}

/* Marks the start and end of a change; the signal fence keeps the
 * compiler from moving the table's stores across the flag, as a death
 * would see them. */
static void begin_change(cf_dict *d) {
  atomic_store_explicit(&d->dirty, 1, memory_order_relaxed);
  atomic_signal_fence(memory_order_seq_cst);
}

static void end_change(cf_dict *d) {
  atomic_signal_fence(memory_order_seq_cst);
  atomic_store_explicit(&d->dirty, 0, memory_order_relaxed);
}

/* Takes the dict's lock unless the caller holds it already (*took says
 * which) and repairs the count after a death. Returns 0 or CF_EOWNERDEAD
 * (locked either way), or an error recorded for `call` (not locked). */
static int enter(cf_dict *d, bool *took, const char *call) {
  *took = false;
  if (atomic_load_explicit(&d->fn_tid, memory_order_relaxed) == gettid())
    return cf__fail_at(call, CF_EDEADLK,
                       "called from inside an update function of the dict");
  int rc = 0;
  if (!cf__lock_held_by_me(&d->lock)) {
    rc = cf__lock_acquire(&d->lock, NULL);
    if (rc != 0 && rc != CF_EOWNERDEAD)
      return cf__fail_rc(call, rc);
    *took = true;
  }
  if (atomic_load_explicit(&d->dirty, memory_order_relaxed))
    recover(d);
  return rc;
}

/* Releases what enter took; `rc` is the call's own outcome, `entered` what
 * enter said: a success after a death becomes CF_EOWNERDEAD. */
static int leave(cf_dict *d, bool took, int entered, int rc, const char *call) {
  if (took) {
    atomic_store_explicit(&d->lock.owner, 0, memory_order_relaxed);
    pthread_mutex_unlock(&d->lock.mu);
  }
  if (rc == 0 && entered == CF_EOWNERDEAD)
    return cf__fail_at(call, CF_EOWNERDEAD,
                       "done, but a process had died holding the dict's lock "
                       "(the dict is consistent; what that process did under "
                       "the lock may be half done)");
  return rc;
}

/* Looks key up (lock held): the index of its FULL slot, or -1 and in
 * *free the first slot a new key may take (-1 if none). */
static long find(cf_dict *d, const char *key, size_t klen, uint32_t h,
                 long *free_slot) {
  size_t mask = d->nslots - 1;
  *free_slot = -1;
  /* Holds d->lock. At most nslots probes: a table with no EMPTY slot left
   * (all FULL or TOMB) is walked once. */
  for (size_t n = 0, i = h & mask; n < d->nslots; n++, i = (i + 1) & mask) {
    slot *s = slot_at(d, i);
    unsigned st = meta_state(meta_of(s));
    if (st == EMPTY) {
      if (*free_slot < 0)
        *free_slot = (long)i;
      return -1;
    }
    if (st == TOMB) {
      if (*free_slot < 0)
        *free_slot = (long)i;
      continue;
    }
    if (s->hash == h && s->key_len == klen && !memcmp(s->key, key, klen))
      return (long)i;
  }
  return -1;
}

/* Stores a value of `len` bytes already written into the spare buffer of
 * FULL slot s (lock held, within begin/end_change). */
static void commit_spare(slot *s, size_t len) {
  commit(s, meta_make(FULL, !meta_buf(meta_of(s)), len));
}

/* Makes free slot s hold key with the value already written in its
 * buffer 0 (lock held, within begin/end_change). */
static void commit_new(cf_dict *d, slot *s, const char *key, size_t klen,
                       uint32_t h, size_t len) {
  memcpy(s->key, key, klen);
  s->key[klen] = 0;
  s->key_len = (uint32_t)klen;
  s->hash = h;
  commit(s, meta_make(FULL, 0, len));
  d->count++;
}

/* Where a new value for key goes (lock held): the spare buffer of its
 * slot, or buffer 0 of a free slot. CF_EFULL when the key is new and the
 * dict is at capacity. */
static int target(cf_dict *d, long found, long free_slot, unsigned char **buf,
                  const char *call) {
  if (found >= 0) {
    slot *s = slot_at(d, (size_t)found);
    *buf = buffer(d, s, !meta_buf(meta_of(s)));
    return 0;
  }
  if (d->count >= d->capacity || free_slot < 0)
    return cf__fail_fmt(call, CF_EFULL,
                        "the dict holds %zu entries, its capacity", d->count);
  *buf = buffer(d, slot_at(d, (size_t)free_slot), 0);
  return 0;
}

static int not_found(const char *key, const char *call) {
  return cf__fail_fmt(call, CF_ENOKEY, "no key \"%.64s\"", key);
}

static int too_big(cf_dict *d, size_t len, const char *call) {
  return cf__fail_fmt(call, CF_ETOOBIG,
                      "a value of %zu bytes, above the dict's max_value %zu",
                      len, d->max_value);
}

/* Stores data as key's value (lock held): the body of set and cas. */
static int store(cf_dict *d, const char *key, size_t klen, uint32_t h,
                 long found, long free_slot, const void *data, size_t len,
                 const char *call) {
  unsigned char *buf;
  int rc = target(d, found, free_slot, &buf, call);
  if (rc)
    return rc;
  begin_change(d);
  if (len)
    memcpy(buf, data, len);
  if (found >= 0)
    commit_spare(slot_at(d, (size_t)found), len);
  else
    commit_new(d, slot_at(d, (size_t)free_slot), key, klen, h, len);
  end_change(d);
  return 0;
}

int cf_dict_set(cf_dict *d, const char *key, const void *data, size_t len) {
  size_t klen;
  int rc = check_key(d, key, &klen, __func__);
  if (rc)
    return rc;
  if (!data && len)
    return CF__FAIL(CF_EINVAL, "NULL data with len > 0");
  if (len > d->max_value)
    return too_big(d, len, __func__);
  uint32_t h = hash_key(key, klen);
  bool took;
  int entered = enter(d, &took, __func__);
  if (entered && entered != CF_EOWNERDEAD)
    return entered;
  long free_slot, found = find(d, key, klen, h, &free_slot);
  rc = store(d, key, klen, h, found, free_slot, data, len, __func__);
  return leave(d, took, entered, rc, __func__);
}

/* Finds `key` under the dict's lock and hands its value to take(ctx, data,
 * n), whose return is the call's; CF_ENOKEY when absent. For the get
 * calls, which differ only in where the bytes go. */
static int read_value(cf_dict *d, const char *key, size_t klen,
                      const char *call,
                      int (*take)(void *ctx, const void *data, size_t n),
                      void *ctx) {
  bool took;
  int entered = enter(d, &took, call);
  if (entered && entered != CF_EOWNERDEAD)
    return entered;
  int rc;
  long free_slot, found = find(d, key, klen, hash_key(key, klen), &free_slot);
  if (found < 0) {
    rc = not_found(key, call);
  } else {
    slot *s = slot_at(d, (size_t)found);
    uint64_t m = meta_of(s);
    rc = take(ctx, buffer(d, s, meta_buf(m)), meta_len(m));
  }
  return leave(d, took, entered, rc, call);
}

typedef struct into_buffer {
  void *buf;
  size_t cap, *len;
} into_buffer;

static int copy_into(void *ctx, const void *data, size_t n) {
  into_buffer *b = ctx;
  *b->len = n;
  if (n > b->cap)
    return cf__fail_fmt("cf_dict_get", CF_ETOOBIG,
                        "the value has %zu bytes, the buffer %zu", n, b->cap);
  if (n)
    memcpy(b->buf, data, n);
  return 0;
}

int cf_dict_get(cf_dict *d, const char *key, void *buf, size_t cap,
                size_t *len) {
  size_t klen;
  int rc = check_key(d, key, &klen, __func__);
  if (rc)
    return rc;
  if (!len || (!buf && cap))
    return CF__FAIL(CF_EINVAL, len ? "NULL buf with cap > 0" : "NULL len");
  into_buffer b = {.buf = buf, .cap = cap, .len = len};
  return read_value(d, key, klen, __func__, copy_into, &b);
}

typedef struct into_malloc {
  void **out;
  size_t *len;
} into_malloc;

static int copy_malloc(void *ctx, const void *data, size_t n) {
  into_malloc *b = ctx;
  unsigned char *p = malloc(n + 1);
  if (!p)
    return cf__fail_at("cf_dict_get_alloc", CF_ENOMEM, "out of memory");
  memcpy(p, data, n);
  p[n] = 0;
  *b->out = p;
  if (b->len)
    *b->len = n;
  return 0;
}

int cf_dict_get_alloc(cf_dict *d, const char *key, void **out, size_t *len) {
  size_t klen;
  if (out)
    *out = NULL;
  int rc = check_key(d, key, &klen, __func__);
  if (rc)
    return rc;
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  into_malloc b = {.out = out, .len = len};
  return read_value(d, key, klen, __func__, copy_malloc, &b);
}

int cf_dict_delete(cf_dict *d, const char *key) {
  size_t klen;
  int rc = check_key(d, key, &klen, __func__);
  if (rc)
    return rc;
  bool took;
  int entered = enter(d, &took, __func__);
  if (entered && entered != CF_EOWNERDEAD)
    return entered;
  long free_slot, found = find(d, key, klen, hash_key(key, klen), &free_slot);
  if (found < 0) {
    rc = not_found(key, __func__);
  } else {
    size_t mask = d->nslots - 1, i = (size_t)found;
    begin_change(d);
    commit(slot_at(d, i), meta_make(TOMB, 0, 0));
    d->count--;
    /* Tombstones followed by an EMPTY slot end no probe chain: turn them
     * back into EMPTY, last first, so that each store alone is right. */
    if (meta_state(meta_of(slot_at(d, (i + 1) & mask))) == EMPTY) {
      /* Holds d->lock; stops at the first non-TOMB slot (there is one:
       * the EMPTY slot after i). */
      while (meta_state(meta_of(slot_at(d, i))) == TOMB) {
        commit(slot_at(d, i), meta_make(EMPTY, 0, 0));
        i = (i - 1) & mask;
      }
    }
    end_change(d);
  }
  return leave(d, took, entered, rc, __func__);
}

bool cf_dict_contains(cf_dict *d, const char *key) {
  size_t klen;
  if (check_key(d, key, &klen, __func__))
    return false;
  bool took;
  int entered = enter(d, &took, __func__);
  if (entered && entered != CF_EOWNERDEAD)
    return false;
  long free_slot, found = find(d, key, klen, hash_key(key, klen), &free_slot);
  leave(d, took, 0, 0, __func__);
  return found >= 0;
}

size_t cf_dict_len(cf_dict *d) {
  if (!d)
    return 0;
  bool took;
  int entered = enter(d, &took, __func__);
  if (entered && entered != CF_EOWNERDEAD)
    return 0;
  size_t n = d->count;
  leave(d, took, 0, 0, __func__);
  return n;
}

size_t cf_dict_capacity(const cf_dict *d) {
  return d ? d->capacity : 0;
}

size_t cf_dict_max_value(const cf_dict *d) {
  return d ? d->max_value : 0;
}

int cf_dict_keys(cf_dict *d, char ***keys, size_t *n) {
  if (keys)
    *keys = NULL;
  if (!d || !keys || !n)
    return CF__FAIL(CF_EINVAL, d ? "NULL keys or n" : "NULL dict");
  bool took;
  int entered = enter(d, &took, __func__);
  if (entered && entered != CF_EOWNERDEAD)
    return entered;
  size_t count = 0, bytes = 0;
  /* Holds d->lock; both loops walk the table once. */
  for (size_t i = 0; i < d->nslots; i++) {
    slot *s = slot_at(d, i);
    if (meta_state(meta_of(s)) == FULL) {
      count++;
      bytes += s->key_len + 1;
    }
  }
  int rc = 0;
  char **arr = malloc(count * sizeof(char *) + bytes + 1);
  if (!arr) {
    rc = CF__FAIL(CF_ENOMEM, "out of memory");
  } else {
    char *p = (char *)(arr + count);
    size_t k = 0;
    for (size_t i = 0; i < d->nslots; i++) {
      slot *s = slot_at(d, i);
      if (meta_state(meta_of(s)) != FULL)
        continue;
      arr[k++] = p;
      memcpy(p, s->key, s->key_len + 1);
      p += s->key_len + 1;
    }
    *keys = arr;
    *n = count;
  }
  return leave(d, took, entered, rc, __func__);
}

int cf_dict_update(cf_dict *d, const char *key, cf_dict_update_fn fn,
                   void *arg) {
  size_t klen;
  int rc = check_key(d, key, &klen, __func__);
  if (rc)
    return rc;
  if (!fn)
    return CF__FAIL(CF_EINVAL, "NULL fn");
  uint32_t h = hash_key(key, klen);
  bool took;
  int entered = enter(d, &took, __func__);
  if (entered && entered != CF_EOWNERDEAD)
    return entered;
  long free_slot, found = find(d, key, klen, h, &free_slot);
  unsigned char *buf;
  rc = target(d, found, free_slot, &buf, __func__);
  if (rc == 0) {
    const void *old = NULL;
    size_t old_len = 0, len = 0;
    if (found >= 0) {
      uint64_t m = meta_of(slot_at(d, (size_t)found));
      old = buffer(d, slot_at(d, (size_t)found), meta_buf(m));
      old_len = meta_len(m);
    }
    begin_change(d);
    atomic_store_explicit(&d->fn_tid, gettid(), memory_order_relaxed);
    rc = fn(old, old_len, buf, d->max_value, &len, arg);
    atomic_store_explicit(&d->fn_tid, 0, memory_order_relaxed);
    if (rc != 0)
      rc = CF__FAILF(rc, "the update function failed (%s)", cf_err_name(rc));
    else if (len > d->max_value)
      rc = CF__FAILF(CF_ETOOBIG,
                     "the update function wrote %zu bytes, above max_value %zu",
                     len, d->max_value);
    else if (found >= 0)
      commit_spare(slot_at(d, (size_t)found), len);
    else
      commit_new(d, slot_at(d, (size_t)free_slot), key, klen, h, len);
    end_change(d);
  }
  return leave(d, took, entered, rc, __func__);
}

int cf_dict_cas(cf_dict *d, const char *key, const void *expected,
                size_t expected_len, const void *data, size_t len) {
  size_t klen;
  int rc = check_key(d, key, &klen, __func__);
  if (rc)
    return rc;
  if ((!data && len) || (!expected && expected_len))
    return CF__FAIL(CF_EINVAL, "NULL data with a length > 0");
  if (len > d->max_value)
    return too_big(d, len, __func__);
  uint32_t h = hash_key(key, klen);
  bool took;
  int entered = enter(d, &took, __func__);
  if (entered && entered != CF_EOWNERDEAD)
    return entered;
  long free_slot, found = find(d, key, klen, h, &free_slot);
  if (!expected && found >= 0) {
    rc = CF__FAILF(CF_EINVALSTATE, "the key \"%.64s\" is already there", key);
  } else if (expected && found < 0) {
    rc = not_found(key, __func__);
  } else if (expected) {
    slot *s = slot_at(d, (size_t)found);
    uint64_t m = meta_of(s);
    if (meta_len(m) != expected_len ||
        (expected_len &&
         memcmp(buffer(d, s, meta_buf(m)), expected, expected_len)))
      rc = CF__FAIL(CF_EINVALSTATE, "the value is not the expected one");
  }
  if (rc == 0)
    rc = store(d, key, klen, h, found, free_slot, data, len, __func__);
  return leave(d, took, entered, rc, __func__);
}

cf_lock *cf_dict_lock(cf_dict *d) {
  return d ? &d->lock : NULL;
}

void cf_dict_free(cf_dict *d) {
  if (!d)
    return;
  if (cf__sync_is_creator(d))
    cf__lock_fini(&d->lock);
  cf__sync_free(d, 0);
}
