/* Tests for mp/shared.c: cf_value, cf_array and cf_dict (Python's
 * multiprocessing Value, Array and Manager().dict()) across forked
 * processes and process-pool workers. Children report through their exit
 * status (0: all well, else the number of the failed check); only the
 * test's own thread asserts. Every child is a daemon (it dies with the
 * test) and carries an alarm() as a bound. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cfutures.h>

static const cf_process_opts daemon_opts = {.daemon = true};

/* Starts n children running fn(arg), joins them all (bounded) and checks
 * that each exited with 0. */
static void run_children(int n, int (*fn)(void *), void *arg) {
  cf_process **ps = calloc((size_t)n, sizeof *ps);
  assert_non_null(ps);
  for (int k = 0; k < n; k++)
    assert_int_equal(cf_process_start(fn, arg, &daemon_opts, &ps[k]), 0);
  for (int k = 0; k < n; k++) {
    assert_int_equal(cf_process_join(ps[k], 60), 0);
    int code = -1;
    assert_int_equal(cf_process_exitcode(ps[k], &code), 0);
    assert_int_equal(code, 0);
    assert_int_equal(cf_process_free(ps[k]), 0);
  }
  free(ps);
}

/* ---- Value ----------------------------------------------------------------
 */

enum { ADD_PROCS = 8, ADDS = 10000 };

typedef struct four_values {
  cf_value *i32, *i64, *u64, *f64;
} four_values;

static int add_to_all(void *arg) {
  four_values *fv = arg;
  alarm(30);
  for (int k = 0; k < ADDS; k++) {
    if (cf_value_add_i32(fv->i32, 1, NULL) ||
        cf_value_add_i64(fv->i64, 3, NULL) ||
        cf_value_add_u64(fv->u64, 1, NULL) ||
        cf_value_add_f64(fv->f64, 0.5, NULL))
      return 1;
  }
  return 0;
}

static void test_value_adds_from_processes(void **state) {
  (void)state;
  four_values fv;
  assert_int_equal(cf_value_new(CF_CTYPE_I32, &fv.i32), 0);
  assert_int_equal(cf_value_new(CF_CTYPE_I64, &fv.i64), 0);
  assert_int_equal(cf_value_new(CF_CTYPE_U64, &fv.u64), 0);
  assert_int_equal(cf_value_new(CF_CTYPE_F64, &fv.f64), 0);
  assert_int_equal(cf_value_set_u64(fv.u64, UINT64_MAX - 100), 0);
  run_children(ADD_PROCS, add_to_all, &fv);
  int32_t a;
  int64_t b;
  uint64_t c;
  double e;
  assert_int_equal(cf_value_get_i32(fv.i32, &a), 0);
  assert_int_equal(cf_value_get_i64(fv.i64, &b), 0);
  assert_int_equal(cf_value_get_u64(fv.u64, &c), 0);
  assert_int_equal(cf_value_get_f64(fv.f64, &e), 0);
  assert_int_equal(a, ADD_PROCS * ADDS);
  assert_int_equal(b, 3 * ADD_PROCS * ADDS);
  /* Unsigned adds wrap around. */
  assert_true(c == (uint64_t)ADD_PROCS * ADDS - 101);
  assert_true(e == 0.5 * ADD_PROCS * ADDS);
  cf_value_free(fv.i32);
  cf_value_free(fv.i64);
  cf_value_free(fv.u64);
  cf_value_free(fv.f64);
}

static void test_value_calls(void **state) {
  (void)state;
  cf_value *v;
  assert_int_equal(cf_value_new(CF_CTYPE_I64, &v), 0);
  assert_int_equal(cf_value_type(v), CF_CTYPE_I64);
  int64_t x = -1, old = -1;
  assert_int_equal(cf_value_get_i64(v, &x), 0);
  assert_int_equal(x, 0);
  assert_int_equal(cf_value_set_i64(v, 40), 0);
  assert_int_equal(cf_value_add_i64(v, 2, &old), 0);
  assert_int_equal(old, 40);
  assert_int_equal(cf_value_add_i64(v, -50, NULL), 0);
  assert_int_equal(cf_value_get_i64(v, &x), 0);
  assert_int_equal(x, -8);
  /* Compare-and-set: a miss says what it saw. */
  int64_t expected = 5;
  assert_int_equal(cf_value_cas_i64(v, &expected, 9), CF_EINVALSTATE);
  assert_int_equal(expected, -8);
  assert_non_null(strstr(cf_last_error(), "cf_value_cas_i64"));
  assert_int_equal(cf_value_cas_i64(v, &expected, 9), 0);
  assert_int_equal(cf_value_get_i64(v, &x), 0);
  assert_int_equal(x, 9);
  /* Another type's call is an error, not a conversion. */
  int32_t y;
  assert_int_equal(cf_value_get_i32(v, &y), CF_EINVAL);
  assert_non_null(strstr(cf_last_error(), "int64"));
  assert_int_equal(cf_value_set_f64(v, 1.0), CF_EINVAL);
  assert_int_equal(cf_value_get_i64(v, NULL), CF_EINVAL);
  assert_int_equal(cf_value_get_i64(NULL, &x), CF_EINVAL);
  assert_non_null(strstr(cf_last_error(), "NULL"));
  /* Its lock. */
  cf_lock *l = cf_value_get_lock(v);
  assert_non_null(l);
  assert_int_equal(cf_lock_acquire(l, 1), 0);
  assert_true(cf_lock_locked(l));
  assert_int_equal(cf_lock_release(l), 0);
  assert_null(cf_value_get_lock(NULL));
  cf_value_free(v);
  cf_value_free(NULL);

  /* Doubles: compare-and-set compares bits. */
  cf_value *d;
  assert_int_equal(cf_value_new(CF_CTYPE_F64, &d), 0);
  double de = -0.0;
  assert_int_equal(cf_value_cas_f64(d, &de, 1.5), CF_EINVALSTATE);
  assert_true(de == 0.0 && !signbit(de));
  assert_int_equal(cf_value_cas_f64(d, &de, 1.5), 0);
  double dold;
  assert_int_equal(cf_value_add_f64(d, 0.25, &dold), 0);
  assert_true(dold == 1.5);
  assert_int_equal(cf_value_get_f64(d, &de), 0);
  assert_true(de == 1.75);
  cf_value_free(d);

  /* Bad creation. */
  assert_int_equal(cf_value_new((cf_ctype)99, &v), CF_EINVAL);
  assert_non_null(strstr(cf_last_error(), "cf_value_new"));
  assert_int_equal(cf_value_new(CF_CTYPE_I32, NULL), CF_EINVAL);
}

/* ---- Array ----------------------------------------------------------------
 */

enum { ARR_PROCS = 6, ARR_LEN = 10, ARR_ROUNDS = 2000 };

/* Atomic adds to every element, and a compound update under the lock:
 * a[0] and a[1] read and written back (+1 each) with plain get and set. */
static int array_worker(void *arg) {
  cf_array *a = arg;
  alarm(30);
  for (int r = 0; r < ARR_ROUNDS; r++) {
    for (size_t i = 2; i < ARR_LEN; i++)
      if (cf_array_add_f64(a, i, (double)i, NULL))
        return 1;
    if (cf_lock_acquire(cf_array_get_lock(a), CF_FOREVER))
      return 2;
    double x, y;
    if (cf_array_get_f64(a, 0, &x) || cf_array_get_f64(a, 1, &y))
      return 3;
    if (cf_array_set_f64(a, 0, x + 1) || cf_array_set_f64(a, 1, y + 2))
      return 4;
    if (cf_lock_release(cf_array_get_lock(a)))
      return 5;
  }
  return 0;
}

static void test_array(void **state) {
  (void)state;
  cf_array *a;
  assert_int_equal(cf_array_new(CF_CTYPE_F64, ARR_LEN, &a), 0);
  assert_int_equal(cf_array_len(a), ARR_LEN);
  assert_int_equal(cf_array_type(a), CF_CTYPE_F64);
  run_children(ARR_PROCS, array_worker, a);
  for (size_t i = 0; i < ARR_LEN; i++) {
    double x;
    assert_int_equal(cf_array_get_f64(a, i, &x), 0);
    double want = (double)ARR_PROCS * ARR_ROUNDS *
                  (i == 0   ? 1
                   : i == 1 ? 2
                            : (double)i);
    assert_true(x == want);
  }
  double x;
  assert_int_equal(cf_array_get_f64(a, ARR_LEN, &x), CF_EINVAL);
  assert_non_null(strstr(cf_last_error(), "out of range"));
  assert_int_equal(cf_array_set_i64(a, 0, 1), CF_EINVAL);
  cf_array_free(a);

  /* Integer arrays: cas and add per element. */
  cf_array *b;
  assert_int_equal(cf_array_new(CF_CTYPE_I32, 3, &b), 0);
  assert_int_equal(cf_array_set_i32(b, 2, INT32_MAX), 0);
  int32_t old;
  assert_int_equal(cf_array_add_i32(b, 2, 1, &old), 0);
  assert_int_equal(old, INT32_MAX);
  assert_int_equal(cf_array_get_i32(b, 2, &old), 0);
  assert_int_equal(old, INT32_MIN); /* wraps */
  int32_t e = 0;
  assert_int_equal(cf_array_cas_i32(b, 1, &e, 7), 0);
  assert_int_equal(cf_array_get_i32(b, 1, &old), 0);
  assert_int_equal(old, 7);
  cf_array_free(b);

  assert_int_equal(cf_array_new(CF_CTYPE_I32, 0, &b), CF_EINVAL);
  assert_int_equal(cf_array_new(CF_CTYPE_I32, SIZE_MAX / 2, &b), CF_EINVAL);
  assert_null(b);
}

/* ---- dict: single process -------------------------------------------------
 */

static void test_dict_calls(void **state) {
  (void)state;
  cf_dict *d;
  assert_int_equal(cf_dict_new(8, 16, &d), 0);
  assert_int_equal(cf_dict_capacity(d), 8);
  assert_int_equal(cf_dict_max_value(d), 16);
  assert_int_equal(cf_dict_len(d), 0);
  assert_int_equal(cf_dict_set(d, "a", "one", 3), 0);
  assert_int_equal(cf_dict_set(d, "b", "two", 3), 0);
  assert_int_equal(cf_dict_set(d, "empty", NULL, 0), 0);
  assert_int_equal(cf_dict_set(d, "a", "uno!", 4), 0); /* overwrite */
  assert_int_equal(cf_dict_len(d), 3);
  assert_true(cf_dict_contains(d, "a"));
  assert_false(cf_dict_contains(d, "c"));

  char buf[16];
  size_t len = 0;
  assert_int_equal(cf_dict_get(d, "a", buf, sizeof buf, &len), 0);
  assert_int_equal(len, 4);
  assert_memory_equal(buf, "uno!", 4);
  assert_int_equal(cf_dict_get(d, "a", buf, 2, &len), CF_ETOOBIG);
  assert_int_equal(len, 4);
  assert_int_equal(cf_dict_get(d, "empty", NULL, 0, &len), 0);
  assert_int_equal(len, 0);
  assert_int_equal(cf_dict_get(d, "zz", buf, sizeof buf, &len), CF_ENOKEY);
  assert_non_null(strstr(cf_last_error(), "cf_dict_get"));
  assert_non_null(strstr(cf_last_error(), "zz"));

  void *p = NULL;
  assert_int_equal(cf_dict_get_alloc(d, "b", &p, &len), 0);
  assert_int_equal(len, 3);
  assert_string_equal(p, "two");
  free(p);
  assert_int_equal(cf_dict_get_alloc(d, "nope", &p, &len), CF_ENOKEY);
  assert_null(p);

  char **keys;
  size_t n;
  assert_int_equal(cf_dict_keys(d, &keys, &n), 0);
  assert_int_equal(n, 3);
  int seen = 0;
  for (size_t i = 0; i < n; i++)
    seen |= !strcmp(keys[i], "a")       ? 1
            : !strcmp(keys[i], "b")     ? 2
            : !strcmp(keys[i], "empty") ? 4
                                        : 8;
  assert_int_equal(seen, 7);
  free(keys);

  assert_int_equal(cf_dict_delete(d, "a"), 0);
  assert_int_equal(cf_dict_delete(d, "a"), CF_ENOKEY);
  assert_false(cf_dict_contains(d, "a"));
  assert_int_equal(cf_dict_len(d), 2);

  /* Bad input. */
  char long_key[CF_DICT_KEY_MAX + 2];
  memset(long_key, 'k', sizeof long_key - 1);
  long_key[sizeof long_key - 1] = 0;
  assert_int_equal(cf_dict_set(d, long_key, "x", 1), CF_EINVAL);
  assert_non_null(strstr(cf_last_error(), "longer"));
  long_key[CF_DICT_KEY_MAX] = 0; /* exactly the limit: fine */
  assert_int_equal(cf_dict_set(d, long_key, "x", 1), 0);
  assert_int_equal(cf_dict_get(d, long_key, buf, sizeof buf, &len), 0);
  assert_int_equal(cf_dict_set(d, "", "x", 1), CF_EINVAL);
  assert_non_null(strstr(cf_last_error(), "empty"));
  assert_int_equal(cf_dict_set(d, NULL, "x", 1), CF_EINVAL);
  assert_int_equal(cf_dict_set(NULL, "k", "x", 1), CF_EINVAL);
  assert_int_equal(cf_dict_set(d, "k", NULL, 1), CF_EINVAL);
  assert_int_equal(cf_dict_set(d, "k", buf, 17), CF_ETOOBIG);
  assert_non_null(strstr(cf_last_error(), "cf_dict_set"));
  assert_non_null(strstr(cf_last_error(), "17"));
  assert_int_equal(cf_dict_get(d, "b", buf, sizeof buf, NULL), CF_EINVAL);
  assert_int_equal(cf_dict_keys(d, NULL, &n), CF_EINVAL);
  assert_int_equal(cf_dict_len(NULL), 0);
  assert_false(cf_dict_contains(d, NULL));
  assert_null(cf_dict_lock(NULL));
  cf_dict *bad;
  assert_int_equal(cf_dict_new(0, 16, &bad), CF_EINVAL);
  assert_non_null(strstr(cf_last_error(), "cf_dict_new"));
  assert_int_equal(cf_dict_new(SIZE_MAX / 4, SIZE_MAX / 4, &bad), CF_EINVAL);
  assert_null(bad);
  assert_int_equal(cf_dict_new(1, 1, NULL), CF_EINVAL);
  cf_dict_free(NULL);
  cf_dict_free(d);
}

static void test_dict_capacity(void **state) {
  (void)state;
  cf_dict *d;
  assert_int_equal(cf_dict_new(5, 8, &d), 0);
  char key[16];
  for (int k = 0; k < 5; k++) {
    snprintf(key, sizeof key, "k%d", k);
    assert_int_equal(cf_dict_set(d, key, &k, sizeof k), 0);
  }
  assert_int_equal(cf_dict_set(d, "k5", "x", 1), CF_EFULL);
  assert_non_null(strstr(cf_last_error(), "cf_dict_set"));
  assert_int_equal(cf_dict_cas(d, "k5", NULL, 0, "x", 1), CF_EFULL);
  assert_int_equal(cf_dict_set(d, "k4", "over", 4), 0); /* a present key */
  assert_int_equal(cf_dict_len(d), 5);
  /* Churn: deletes and inserts of ever new keys never run out of slots
   * nor loop (tombstones are reused). */
  for (int k = 5; k < 5000; k++) {
    snprintf(key, sizeof key, "k%d", k - 5);
    assert_int_equal(cf_dict_delete(d, key), 0);
    snprintf(key, sizeof key, "k%d", k);
    assert_int_equal(cf_dict_set(d, key, &k, sizeof k), 0);
    assert_false(cf_dict_contains(d, "absent"));
  }
  assert_int_equal(cf_dict_len(d), 5);
  int v;
  size_t len;
  assert_int_equal(cf_dict_get(d, "k4999", &v, sizeof v, &len), 0);
  assert_int_equal(v, 4999);
  cf_dict_free(d);

  /* Keys only. */
  assert_int_equal(cf_dict_new(1, 0, &d), 0);
  assert_int_equal(cf_dict_set(d, "only", NULL, 0), 0);
  assert_int_equal(cf_dict_set(d, "only", "x", 1), CF_ETOOBIG);
  assert_int_equal(cf_dict_set(d, "two", NULL, 0), CF_EFULL);
  cf_dict_free(d);
}

/* An update function: the value is an int64 counter, added to by *arg. */
static int add_counter(const void *old, size_t old_len, void *out,
                       size_t out_cap, size_t *out_len, void *arg) {
  int64_t x = 0;
  if (old) {
    if (old_len != sizeof x)
      return CF_EINVAL;
    memcpy(&x, old, sizeof x);
  }
  x += *(int64_t *)arg;
  memcpy(out, &x, sizeof x);
  *out_len = sizeof x;
  return 0;
}

static int refuse(const void *old, size_t old_len, void *out, size_t out_cap,
                  size_t *out_len, void *arg) {
  memcpy(out, "garbage!", 8);
  *out_len = 8;
  return CF_ECANCELLED;
}

static int too_long(const void *old, size_t old_len, void *out, size_t out_cap,
                    size_t *out_len, void *arg) {
  *out_len = out_cap + 1;
  return 0;
}

static int reenter(const void *old, size_t old_len, void *out, size_t out_cap,
                   size_t *out_len, void *arg) {
  int rc = cf_dict_set(arg, "other", "x", 1);
  *out_len = 0;
  return rc == CF_EDEADLK ? 0 : CF_EFAILED;
}

static int64_t get_i64(cf_dict *d, const char *key) {
  int64_t x = -999;
  size_t len = 0;
  if (cf_dict_get(d, key, &x, sizeof x, &len) || len != sizeof x)
    return -999;
  return x;
}

static void test_dict_update_and_cas(void **state) {
  (void)state;
  cf_dict *d;
  assert_int_equal(cf_dict_new(4, 8, &d), 0);
  int64_t five = 5, one = 1;
  assert_int_equal(cf_dict_update(d, "n", add_counter, &five), 0); /* new */
  assert_int_equal(cf_dict_update(d, "n", add_counter, &one), 0);
  assert_int_equal(get_i64(d, "n"), 6);
  assert_int_equal(cf_dict_update(d, "n", refuse, NULL), CF_ECANCELLED);
  assert_int_equal(get_i64(d, "n"), 6);
  assert_int_equal(cf_dict_update(d, "m", refuse, NULL), CF_ECANCELLED);
  assert_false(cf_dict_contains(d, "m"));
  assert_int_equal(cf_dict_update(d, "n", too_long, NULL), CF_ETOOBIG);
  assert_int_equal(get_i64(d, "n"), 6);
  assert_int_equal(cf_dict_update(d, "r", reenter, d), 0);
  assert_false(cf_dict_contains(d, "other"));
  assert_true(cf_dict_contains(d, "r"));
  assert_int_equal(cf_dict_update(d, "n", NULL, NULL), CF_EINVAL);

  /* Compare-and-set. */
  int64_t six = 6, seven = 7;
  assert_int_equal(cf_dict_cas(d, "n", &seven, 8, &seven, 8), CF_EINVALSTATE);
  assert_non_null(strstr(cf_last_error(), "cf_dict_cas"));
  assert_int_equal(cf_dict_cas(d, "n", &six, 4, &seven, 8), CF_EINVALSTATE);
  assert_int_equal(cf_dict_cas(d, "n", &six, 8, &seven, 8), 0);
  assert_int_equal(get_i64(d, "n"), 7);
  assert_int_equal(cf_dict_cas(d, "missing", &six, 8, &seven, 8), CF_ENOKEY);
  assert_int_equal(cf_dict_cas(d, "n", NULL, 0, &six, 8), CF_EINVALSTATE);
  assert_int_equal(cf_dict_cas(d, "fresh", NULL, 0, &six, 8), 0);
  assert_int_equal(get_i64(d, "fresh"), 6);
  assert_int_equal(cf_dict_cas(d, "fresh", &six, 8, &six, 9), CF_ETOOBIG);

  /* Calls made while holding the dict's lock do not take it again. */
  assert_int_equal(cf_lock_acquire(cf_dict_lock(d), 1), 0);
  assert_int_equal(cf_dict_set(d, "n", &one, 8), 0);
  assert_int_equal(cf_dict_update(d, "n", add_counter, &one), 0);
  assert_int_equal(cf_lock_release(cf_dict_lock(d)), 0);
  assert_int_equal(get_i64(d, "n"), 2);
  cf_dict_free(d);
}

/* ---- dict: many processes -------------------------------------------------
 */

enum { DICT_PROCS = 20, DICT_ROUNDS = 500 };

/* Each round: a read-modify-write under the dict's lock (get, add, set:
 * three calls, one transaction), one update(), and one cas loop. */
static int dict_worker(void *arg) {
  cf_dict *d = arg;
  alarm(60);
  int64_t one = 1;
  for (int r = 0; r < DICT_ROUNDS; r++) {
    cf_lock *l = cf_dict_lock(d);
    if (cf_lock_acquire(l, CF_FOREVER))
      return 1;
    int64_t x;
    size_t len;
    if (cf_dict_get(d, "locked", &x, sizeof x, &len))
      return 2;
    x++;
    if (cf_dict_set(d, "locked", &x, sizeof x))
      return 3;
    if (cf_lock_release(l))
      return 4;
    if (cf_dict_update(d, "updated", add_counter, &one))
      return 5;
    for (;;) {
      if (cf_dict_get(d, "cas", &x, sizeof x, &len))
        return 6;
      int64_t y = x + 1;
      int rc = cf_dict_cas(d, "cas", &x, sizeof x, &y, sizeof y);
      if (rc == 0)
        break;
      if (rc != CF_EINVALSTATE)
        return 7;
    }
  }
  char key[32];
  snprintf(key, sizeof key, "child-%d", (int)getpid());
  return cf_dict_set(d, key, "done", 4) ? 8 : 0;
}

static void test_dict_from_processes(void **state) {
  (void)state;
  cf_dict *d;
  assert_int_equal(cf_dict_new(64, 8, &d), 0);
  int64_t zero = 0;
  assert_int_equal(cf_dict_set(d, "locked", &zero, 8), 0);
  assert_int_equal(cf_dict_set(d, "cas", &zero, 8), 0);
  run_children(DICT_PROCS, dict_worker, d);
  assert_int_equal(get_i64(d, "locked"), DICT_PROCS * DICT_ROUNDS);
  assert_int_equal(get_i64(d, "updated"), DICT_PROCS * DICT_ROUNDS);
  assert_int_equal(get_i64(d, "cas"), DICT_PROCS * DICT_ROUNDS);
  assert_int_equal(cf_dict_len(d), 3 + DICT_PROCS);
  cf_dict_free(d);
}

/* ---- crashes ---------------------------------------------------------------
 */

typedef struct crash_ctx {
  cf_dict *d;
  int fds[2]; /* the child writes one byte when it is where it should die */
} crash_ctx;

static int hold_lock_and_wait(void *arg) {
  crash_ctx *c = arg;
  alarm(20);
  if (cf_lock_acquire(cf_dict_lock(c->d), CF_FOREVER))
    return 1;
  cf_dict_set(c->d, "a", "held", 4);
  (void)!write(c->fds[1], "x", 1);
  for (;;)
    pause();
  return 0;
}

/* An update function that writes half of its value, says so and waits to
 * be killed. */
static int half_then_wait(const void *old, size_t old_len, void *out,
                          size_t out_cap, size_t *out_len, void *arg) {
  crash_ctx *c = arg;
  memset(out, 'X', out_cap / 2);
  *out_len = out_cap;
  (void)!write(c->fds[1], "x", 1);
  for (;;)
    pause();
  return 0;
}

static int update_and_wait(void *arg) {
  crash_ctx *c = arg;
  alarm(20);
  cf_dict_update(c->d, "a", half_then_wait, c);
  return 1;
}

static int insert_and_wait(void *arg) {
  crash_ctx *c = arg;
  alarm(20);
  cf_dict_update(c->d, "new", half_then_wait, c);
  return 1;
}

static void kill_when_ready(crash_ctx *c, int (*fn)(void *)) {
  assert_int_equal(pipe(c->fds), 0);
  cf_process *p;
  assert_int_equal(cf_process_start(fn, c, &daemon_opts, &p), 0);
  char b;
  assert_int_equal(read(c->fds[0], &b, 1), 1);
  assert_int_equal(cf_process_kill(p), 0);
  assert_int_equal(cf_process_join(p, 10), 0);
  int code = 0;
  assert_int_equal(cf_process_exitcode(p, &code), 0);
  assert_int_equal(code, -SIGKILL);
  assert_int_equal(cf_process_free(p), 0);
  close(c->fds[0]);
  close(c->fds[1]);
}

static void test_dict_holder_killed(void **state) {
  (void)state;
  crash_ctx c;
  assert_int_equal(cf_dict_new(4, 32, &c.d), 0);
  assert_int_equal(cf_dict_set(c.d, "a", "before", 6), 0);

  /* Killed holding the lock, between calls: the next call says so and
   * works; so do the ones after it. */
  kill_when_ready(&c, hold_lock_and_wait);
  char buf[32];
  size_t len;
  assert_int_equal(cf_dict_get(c.d, "a", buf, sizeof buf, &len), CF_EOWNERDEAD);
  assert_int_equal(len, 4);
  assert_memory_equal(buf, "held", 4);
  assert_int_equal(cf_dict_set(c.d, "b", "x", 1), 0);
  assert_int_equal(cf_dict_len(c.d), 2);

  /* Killed inside update(), half-way through writing the new value: the
   * old value stands. The next acquirer of the lock itself sees
   * CF_EOWNERDEAD. */
  kill_when_ready(&c, update_and_wait);
  /* CF_FOREVER: the plain lock path, whose recovery ThreadSanitizer
   * models (not the timed one); the holder is dead, so this cannot block,
   * and meson's timeout bounds the test anyway. */
  assert_int_equal(cf_lock_acquire(cf_dict_lock(c.d), CF_FOREVER),
                   CF_EOWNERDEAD);
  assert_int_equal(cf_dict_get(c.d, "a", buf, sizeof buf, &len), 0);
  assert_int_equal(len, 4);
  assert_memory_equal(buf, "held", 4);
  assert_int_equal(cf_lock_release(cf_dict_lock(c.d)), 0);

  /* Killed inside update() of a new key: the key never appears. */
  kill_when_ready(&c, insert_and_wait);
  assert_false(cf_dict_contains(c.d, "new"));
  assert_int_equal(cf_dict_len(c.d), 2);
  assert_int_equal(cf_dict_set(c.d, "new", "ok", 2), 0);
  assert_int_equal(cf_dict_len(c.d), 3);
  char **keys;
  size_t n;
  assert_int_equal(cf_dict_keys(c.d, &keys, &n), 0);
  assert_int_equal(n, 3);
  free(keys);
  cf_dict_free(c.d);
}

/* ---- process-pool workers --------------------------------------------------
 */

static cf_value *g_count;
static cf_dict *g_dict;

static int pool_task(const void *in, size_t in_len, cf_buf *out) {
  int64_t n;
  memcpy(&n, in, sizeof n);
  if (cf_value_add_i64(g_count, n, NULL))
    return cf_fail(CF_EFAILED, "add: %s", cf_last_error());
  int64_t one = 1;
  int rc = cf_dict_update(g_dict, "tasks", add_counter, &one);
  if (rc)
    return cf_fail(rc, "update: %s", cf_last_error());
  out->data = NULL;
  out->len = 0;
  return 0;
}

enum { POOL_TASKS = 200 };

static void test_from_pool_workers(void **state) {
  (void)state;
  assert_int_equal(cf_value_new(CF_CTYPE_I64, &g_count), 0);
  assert_int_equal(cf_dict_new(4, 8, &g_dict), 0);
  cf_executor *ex;
  /* the workers must be forks of this process to see g_count and g_dict
   * (the default fork server is a fresh image) */
  cf_process_pool_opts o = {.max_workers = 4, .start_method = CF_START_FORK};
  assert_int_equal(cf_process_pool_new(&o, &ex), 0);
  cf_future *fs[POOL_TASKS];
  for (int64_t k = 0; k < POOL_TASKS; k++)
    assert_int_equal(
        cf_process_pool_submit(ex, pool_task, &k, sizeof k, &fs[k]), 0);
  for (int k = 0; k < POOL_TASKS; k++) {
    void *r;
    assert_int_equal(cf_future_result(fs[k], 60, &r), 0);
    cf_future_unref(fs[k]);
  }
  cf_executor_free(ex);
  int64_t total;
  assert_int_equal(cf_value_get_i64(g_count, &total), 0);
  assert_int_equal(total, (int64_t)POOL_TASKS * (POOL_TASKS - 1) / 2);
  assert_int_equal(get_i64(g_dict, "tasks"), POOL_TASKS);
  cf_value_free(g_count);
  cf_dict_free(g_dict);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_value_calls),
      cmocka_unit_test(test_value_adds_from_processes),
      cmocka_unit_test(test_array),
      cmocka_unit_test(test_dict_calls),
      cmocka_unit_test(test_dict_capacity),
      cmocka_unit_test(test_dict_update_and_cas),
      cmocka_unit_test(test_dict_from_processes),
      cmocka_unit_test(test_dict_holder_killed),
      cmocka_unit_test(test_from_pool_workers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
