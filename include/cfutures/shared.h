/* cfutures — state shared between processes: Python's multiprocessing
 * Value, Array and Manager().dict().
 *
 * Each object lives in one anonymous MAP_SHARED mapping made by the
 * process that creates it; processes forked after that (cf_process_start
 * children, plain fork(), workers of a process pool created after it with
 * CF_START_FORK; not those of the default fork server, a fresh image of the
 * program) see the same object at the same address. Create it before forking, free
 * it in the creating process once the others are done with it; cf_*_free
 * in another process only unmaps that process's view (as sync.h's
 * process-shared primitives).
 *
 * Value and Array hold numbers of one type (cf_ctype). Each single get,
 * set, add and compare-and-set is atomic (a C11 atomic on the shared
 * memory, lock-free), so a killed process can never leave a number half
 * written. Each object also has a robust process-shared lock of its own
 * (Python's get_lock()) for compound updates; the atomic calls do not take
 * it, so it only excludes code that takes it too.
 *
 * The dict maps string keys to byte values in a fixed-capacity
 * open-addressing table inside its one mapping (see cf_dict_new for why
 * a fixed value size). Every call takes the dict's lock, so each call is
 * atomic with respect to the others; cf_dict_lock exposes that lock for
 * transactions over several calls (calls made while holding it do not
 * take it again).
 *
 * Crashes: a process may die anywhere, in a call or holding a lock. The
 * locks are robust: the next acquirer gets the lock and CF_EOWNERDEAD.
 * Every single call that changes the dict commits with one atomic store
 * (a new value is written into a spare buffer of its slot, a new key into
 * a free slot, and only then is the slot's state word switched), so after
 * a death each call of the dead process either happened entirely or not
 * at all; the entry count is recomputed by the next call. What a dead
 * process did over several calls under the lock (its transaction) may be
 * half done: that is what CF_EOWNERDEAD tells.
 *
 * Thread safety: every call may be made from any thread of any process
 * sharing the object, except cf_*_free, which must come after every other
 * call on the object in that process has returned.
 */
#ifndef CFUTURES_SHARED_H
#define CFUTURES_SHARED_H

#include <cfutures/common.h>
#include <cfutures/sync.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The element type of a Value or Array, with Python's type codes. */
typedef enum cf_ctype {
  CF_CTYPE_I32 = 1, /* int32_t, Python 'i' */
  CF_CTYPE_I64,     /* int64_t, Python 'q' */
  CF_CTYPE_U64,     /* uint64_t, Python 'Q' */
  CF_CTYPE_F64,     /* double, Python 'd' */
} cf_ctype;

/* ---- Array: Python's multiprocessing.Array(typecode, n) -------------------
 */

typedef struct cf_array cf_array;

/* Creates an array of `len` (>= 1) zeroes of `type`, process-shared, with
 * a lock of its own. *out is owned by the caller until cf_array_free.
 * Returns 0; CF_EINVAL (NULL out, unknown type, len 0 or too large);
 * CF_ENOMEM (the mapping failed); CF_ESYS (the lock could not be made). */
CF_API int cf_array_new(cf_ctype type, size_t len, cf_array **out);

/* The calls below act on element i. `get` stores it in *out; `set` stores
 * v; `add` adds delta and stores the element's previous value in *old (old
 * may be NULL): integers wrap around (two's complement, as C11 atomics),
 * doubles are added in a compare-and-swap loop; `cas` (compare-and-set)
 * stores desired if the element equals *expected and returns 0, otherwise
 * stores the element in *expected and returns CF_EINVALSTATE (doubles are
 * compared bit for bit, so -0.0 is not 0.0 and a NaN equals the same NaN).
 * Each call is one atomic operation, sequentially consistent. None
 * blocks, none takes the array's lock. Returns 0; CF_EINVAL (NULL array or
 * pointer, i out of range, or a call for another type than the array's:
 * cf_array_get_i64 on an F64 array is an error, not a conversion);
 * CF_EINVALSTATE (cas only, as said). */
#define CF__ARRAY_DECL(sfx, T)                                                 \
  CF_API int cf_array_get_##sfx(cf_array *a, size_t i, T *out);                \
  CF_API int cf_array_set_##sfx(cf_array *a, size_t i, T v);                   \
  CF_API int cf_array_add_##sfx(cf_array *a, size_t i, T delta, T *old);       \
  CF_API int cf_array_cas_##sfx(cf_array *a, size_t i, T *expected, T desired);
CF__ARRAY_DECL(i32, int32_t)
CF__ARRAY_DECL(i64, int64_t)
CF__ARRAY_DECL(u64, uint64_t)
CF__ARRAY_DECL(f64, double)

/* The array's lock (Python's get_lock()), borrowed from a: valid until
 * cf_array_free. Take it around compound updates (read several elements,
 * then write); a holder that dies gives the next acquirer CF_EOWNERDEAD.
 * NULL for NULL. */
CF_API cf_lock *cf_array_get_lock(cf_array *a);
/* The length and the element type; 0 for NULL. */
CF_API size_t cf_array_len(const cf_array *a);
CF_API cf_ctype cf_array_type(const cf_array *a);
/* Frees the array (creator) or unmaps it (other processes); its lock must
 * not be held by the caller. NULL is a no-op. */
CF_API void cf_array_free(cf_array *a);

/* ---- Value: Python's multiprocessing.Value(typecode, initial) -------------
 * A one-element array under a type of its own: the same calls without the
 * index, the same errors (CF_EINVAL, CF_EINVALSTATE for a failed cas). */

typedef struct cf_value cf_value;

/* Creates a value of `type`, zero, process-shared. Returns 0, CF_EINVAL,
 * CF_ENOMEM, CF_ESYS, as cf_array_new. */
CF_API int cf_value_new(cf_ctype type, cf_value **out);
#define CF__VALUE_DECL(sfx, T)                                                 \
  CF_API int cf_value_get_##sfx(cf_value *v, T *out);                          \
  CF_API int cf_value_set_##sfx(cf_value *v, T x);                             \
  CF_API int cf_value_add_##sfx(cf_value *v, T delta, T *old);                 \
  CF_API int cf_value_cas_##sfx(cf_value *v, T *expected, T desired);
CF__VALUE_DECL(i32, int32_t)
CF__VALUE_DECL(i64, int64_t)
CF__VALUE_DECL(u64, uint64_t)
CF__VALUE_DECL(f64, double)
/* The value's lock (get_lock()), borrowed; NULL for NULL. */
CF_API cf_lock *cf_value_get_lock(cf_value *v);
CF_API cf_ctype cf_value_type(const cf_value *v);
/* Frees (creator) or unmaps the value. NULL is a no-op. */
CF_API void cf_value_free(cf_value *v);

/* ---- dict: Python's multiprocessing.Manager().dict() ---------------------
 */

typedef struct cf_dict cf_dict;

/* The longest key, in bytes (without the terminating NUL). */
#define CF_DICT_KEY_MAX 255

/* Creates an empty process-shared dict that holds up to `capacity`
 * entries (>= 1) of at most `max_value` bytes each (0 allowed: keys only),
 * with keys of 1..CF_DICT_KEY_MAX bytes (C strings). All the memory is
 * reserved at once, in one mapping of about
 *   slots * (2 * max_value + 272) bytes (rounded up to 8 per slot),
 * slots being the power of two at or above capacity * 4/3 (the table is
 * never more than 3/4 full). Anonymous shared pages cost memory only once
 * touched. A fixed size per value rather than one arena for all values:
 * nothing to allocate or compact in shared memory, so no allocator state a
 * dying process could leave broken, and a slot's two value buffers let
 * every change commit with one store (see the top of this file).
 * *out is owned by the caller until cf_dict_free. Returns 0; CF_EINVAL
 * (NULL out, capacity 0, capacity or max_value above 2^32 - 1, a size that
 * overflows); CF_ENOMEM (the mapping failed);
 * CF_ESYS (the lock could not be made). */
CF_API int cf_dict_new(size_t capacity, size_t max_value, cf_dict **out);

/* Errors of the calls below: CF_EINVAL for a NULL dict or pointer, a NULL
 * or empty key or one longer than CF_DICT_KEY_MAX bytes; CF_ENOKEY when
 * the key is not there (Python's KeyError); CF_ETOOBIG for a value longer
 * than the dict's max_value; CF_EFULL when a new key finds the dict at
 * capacity; CF_EDEADLK for a call made from inside an update function
 * (it would change the entry under the function's feet). Every call blocks
 * only on the dict's lock (held for a copy of at most one value, for
 * update's fn, or for one walk of the table in cf_dict_keys). CF_EOWNERDEAD
 * means success too: the call was done (its outputs are set), but it found that
 * a process had died holding the lock; see the top of this file. */

/* Sets key to a copy of data[0..len) (data may be NULL if len is 0),
 * adding the key if need be. The caller keeps key and data. Returns 0,
 * CF_EOWNERDEAD, CF_EINVAL, CF_ETOOBIG, CF_EFULL. */
CF_API int cf_dict_set(cf_dict *d, const char *key, const void *data,
                       size_t len);

/* Copies key's value into buf[0..cap) and its length into *len (len may
 * not be NULL; buf may be NULL if cap is 0). A value longer than cap is
 * not copied: CF_ETOOBIG, and *len says how long it is. Returns 0,
 * CF_EOWNERDEAD, CF_ENOKEY, CF_ETOOBIG, CF_EINVAL. */
CF_API int cf_dict_get(cf_dict *d, const char *key, void *buf, size_t cap,
                       size_t *len);

/* Copies key's value into a new malloc'd buffer *out (the caller frees it
 * with free(); one byte is allocated for an empty value, and a NUL is
 * stored after the value, so text values can be read as strings) and its
 * length into *len (may be NULL). On error *out is NULL. Returns 0,
 * CF_EOWNERDEAD, CF_ENOKEY, CF_ENOMEM, CF_EINVAL. */
CF_API int cf_dict_get_alloc(cf_dict *d, const char *key, void **out,
                             size_t *len);

/* Removes key. Returns 0, CF_EOWNERDEAD, CF_ENOKEY, CF_EINVAL. */
CF_API int cf_dict_delete(cf_dict *d, const char *key);

/* Whether key is there (false for a bad key or NULL dict). This call and
 * cf_dict_len cannot say CF_EOWNERDEAD: after a death they repair the
 * count silently. */
CF_API bool cf_dict_contains(cf_dict *d, const char *key);

/* The number of entries (0 for NULL). */
CF_API size_t cf_dict_len(cf_dict *d);

/* The most entries the dict takes and the longest value (0 for NULL). */
CF_API size_t cf_dict_capacity(const cf_dict *d);
CF_API size_t cf_dict_max_value(const cf_dict *d);

/* A snapshot of the keys, in table order (no order to rely on): *keys is
 * one malloc'd block holding an array of *n pointers to the key strings
 * that follow it in the same block; the caller frees it with one free().
 * For an empty dict *keys is a valid block with *n == 0. Returns 0,
 * CF_EOWNERDEAD, CF_ENOMEM, CF_EINVAL. */
CF_API int cf_dict_keys(cf_dict *d, char ***keys, size_t *n);

/* An update function, run under the dict's lock: `old` points to the
 * current value (old_len bytes; valid during the call only), or is NULL
 * when the key is not there. It writes the new value into out[0..out_cap)
 * (out_cap is the dict's max_value), sets *out_len and returns 0; or
 * returns a non-zero code to leave the entry as it was. Calls on the same
 * dict from inside it return CF_EDEADLK. */
typedef int (*cf_dict_update_fn)(const void *old, size_t old_len, void *out,
                                 size_t out_cap, size_t *out_len, void *arg);

/* Runs fn(old value, ..., arg) under the dict's lock and stores what it
 * wrote as key's new value, as one atomic step (Python's `with lock:
 * d[k] = f(d.get(k))`). A missing key is offered as old == NULL and added
 * if fn succeeds (CF_EFULL without calling fn when the dict is at
 * capacity). If fn dies or fails, the entry is as it was. Returns 0,
 * CF_EOWNERDEAD, fn's non-zero code (nothing changed), CF_ETOOBIG (fn set
 * *out_len above out_cap: nothing changed), CF_EFULL, CF_EINVAL (NULL fn
 * too). */
CF_API int cf_dict_update(cf_dict *d, const char *key, cf_dict_update_fn fn,
                          void *arg);

/* Compare-and-set: if key's value is exactly expected[0..expected_len),
 * sets it to data[0..len) and returns 0. With expected NULL the key must
 * be absent and is added (insert-if-absent). Otherwise nothing changes
 * and it returns CF_EINVALSTATE (the value differs, or the key is there
 * when expected is NULL) or CF_ENOKEY (the key is not there). Also
 * CF_EOWNERDEAD (done), CF_ETOOBIG, CF_EFULL, CF_EINVAL. */
CF_API int cf_dict_cas(cf_dict *d, const char *key, const void *expected,
                       size_t expected_len, const void *data, size_t len);

/* The dict's lock, borrowed from d (valid until cf_dict_free). Hold it to
 * make several calls one transaction; the dict's calls made by the holder
 * do not take it again. A holder that dies gives the next acquirer
 * CF_EOWNERDEAD; the dict itself is consistent then (each call whole or
 * not at all), the transaction maybe not. NULL for NULL. */
CF_API cf_lock *cf_dict_lock(cf_dict *d);

/* Frees the dict (creator) or unmaps it (other processes). NULL is a
 * no-op. */
CF_API void cf_dict_free(cf_dict *d);

#ifdef __cplusplus
}
#endif
#endif
