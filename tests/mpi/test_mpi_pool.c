/* Tests for the MPI executor (executor/mpi_pool.c, executor/mpi_serve.c).
 *
 *   mpiexec -n 3 test_mpi_pool     rank 0 runs the tests, ranks 1-2 serve
 *   test_mpi_pool                  alone: each pool spawns 2 workers
 *
 * Every rank calls cf_mpi_serve first; only the main rank gets past it and
 * runs cmocka (its TAP output is the test's). Every process has a
 * watchdog (alarm): a hang ends the job with a message, well before
 * meson's timeout. Every blocking call has a timeout. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cfutures.h>
#include <cfutures/mpi_pool.h>

#define T 30.0 /* seconds: the timeout of every wait */

static void watchdog_fired(int sig) {
  (void)sig;
  static const char msg[] = "watchdog: test_mpi_pool hung; aborting\n";
  ssize_t w = write(2, msg, sizeof msg - 1);
  (void)w;
  _exit(99);
}

static bool spawned_mode; /* no mpiexec job: the pools spawn */
/* CFUTURES_MPI_SHM=0: large payloads go through MPI, not shared memory */
static bool shm_off;

/* Whether p lies in one of the MPI pool's memfds (mpi_shm.c) as mapped in
 * this process: /proc/self/maps names them "/memfd:cfutures-mpi". */
static bool in_pool_memfd(const void *p) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f)
    return false;
  char line[512];
  bool found = false;
  while (!found && fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && (uintptr_t)p >= lo &&
        (uintptr_t)p < hi)
      found = strstr(line, "memfd:cfutures-mpi") != NULL;
  }
  fclose(f);
  return found;
}

/* The pool's memfds open in this process (/proc/self/fd). */
static int pool_memfds(void) {
  int n = 0;
  char path[64], target[256];
  for (int fd = 0; fd < 4096; fd++) {
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t k = readlink(path, target, sizeof target - 1);
    if (k <= 0)
      continue;
    target[k] = '\0';
    n += strstr(target, "memfd:cfutures-mpi") != NULL;
  }
  return n;
}

/* ---- tasks (found in workers by their place in this program) --------------
 */

static int echo(const void *in, size_t len, cf_buf *out) {
  out->data = len ? malloc(len) : NULL;
  if (len && !out->data)
    return CF_ENOMEM;
  if (len)
    memcpy(out->data, in, len);
  out->len = len;
  return 0;
}

/* One byte: 1 if the input arrived in the pool's shared memory. */
static int input_where(const void *in, size_t len, cf_buf *out) {
  out->data = malloc(1);
  if (!out->data)
    return CF_ENOMEM;
  *(char *)out->data = len && in_pool_memfd(in);
  out->len = 1;
  return 0;
}

/* Input: a uint32 n and a seed byte; output n bytes (i * 7 + seed). */
static int grow_bytes(const void *in, size_t len, cf_buf *out) {
  uint32_t n;
  if (len != 5)
    return cf_fail(CF_EINVAL, "want 5 bytes, got %zu", len);
  memcpy(&n, in, sizeof n);
  unsigned char seed = ((const unsigned char *)in)[4];
  out->data = malloc(n ? n : 1);
  if (!out->data)
    return CF_ENOMEM;
  for (uint32_t i = 0; i < n; i++)
    ((unsigned char *)out->data)[i] = (unsigned char)(i * 7 + seed);
  out->len = n;
  return 0;
}

/* Fails, after reading its (large) input. */
static int big_fail(const void *in, size_t len, cf_buf *out) {
  unsigned sum = 0;
  for (size_t i = 0; i < len; i += 4096)
    sum += ((const unsigned char *)in)[i];
  return cf_fail(CF_EINVAL, "refused %zu bytes (%u)", len, sum);
}

/* Input: an int32 n; fails for negative n, sleeps n ms otherwise, returns
 * n + 1 as int32. */
static int slow_or_fail(const void *in, size_t len, cf_buf *out) {
  int32_t n;
  if (len != sizeof n)
    return cf_fail(CF_EINVAL, "want 4 bytes, got %zu", len);
  memcpy(&n, in, sizeof n);
  if (n < 0)
    return cf_fail(CF_EINVAL, "negative input %d", (int)n);
  struct timespec ts = {n / 1000, (long)(n % 1000) * 1000000L};
  nanosleep(&ts, NULL);
  int32_t r = n + 1;
  out->data = malloc(sizeof r);
  if (!out->data)
    return CF_ENOMEM;
  memcpy(out->data, &r, sizeof r);
  out->len = sizeof r;
  return 0;
}

static int twice(void *arg, void **out) {
  intptr_t x = (intptr_t)arg;
  if (x == 13)
    return cf_fail(CF_EPERM, "unlucky %ld", (long)x);
  *out = (void *)(x * 2);
  return 0;
}

static int item_square(void *arg, void **out) {
  int64_t x;
  memcpy(&x, arg, sizeof x);
  *out = (void *)(intptr_t)(x * x);
  return 0;
}

/* ---- fixtures --------------------------------------------------------------
 */

/* Two workers; caller: no progress thread (opts.caller_progress). */
static int pool_up_as(void **state, bool caller) {
  cf_mpi_pool_opts o = {.max_workers = 2, .caller_progress = caller};
  cf_executor *ex = NULL;
  int rc = cf_mpi_pool_new(&o, &ex);
  if (rc) {
    fprintf(stderr, "# cf_mpi_pool_new: %s\n", cf_last_error());
    return -1;
  }
  *state = ex;
  return 0;
}

static int pool_up(void **state) {
  return pool_up_as(state, false);
}

static int pool_down(void **state) {
  cf_executor_free(*state); /* NULL: the test freed it */
  return 0;
}

static int32_t i32(const cf_buf *b) {
  int32_t v;
  assert_int_equal(b->len, sizeof v);
  memcpy(&v, b->data, sizeof v);
  return v;
}

static cf_future *submit_i32(cf_executor *ex, int32_t n) {
  cf_future *f = NULL;
  assert_int_equal(cf_mpi_pool_submit(ex, slow_or_fail, &n, sizeof n, &f), 0);
  return f;
}

/* ---- tests ----------------------------------------------------------------
 */

static void test_submit_bytes(void **state) {
  cf_executor *ex = *state;
  assert_int_equal(cf_mpi_pool_size(ex), 2);
  /* empty, small, and large payloads (a large input goes alone, a large
   * result in a message of its own) */
  size_t sizes[] = {0, 1, 1000, 64 * 1024 - 1, 64 * 1024, 300 * 1000, 3u << 20};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    size_t n = sizes[k];
    unsigned char *in = malloc(n ? n : 1);
    assert_non_null(in);
    for (size_t i = 0; i < n; i++)
      in[i] = (unsigned char)(i * 131 + k);
    cf_future *f;
    assert_int_equal(cf_mpi_pool_submit(ex, echo, n ? in : NULL, n, &f), 0);
    memset(in, 0, n); /* the pool copied it */
    void *v;
    assert_int_equal(cf_future_result(f, T, &v), 0);
    const cf_buf *b = v;
    assert_int_equal(b->len, n);
    for (size_t i = 0; i < n; i++)
      if (((unsigned char *)b->data)[i] != (unsigned char)(i * 131 + k))
        fail_msg("byte %zu of %zu differs", i, n);
    cf_future_unref(f);
    free(in);
  }
}

/* ---- large payloads: the same-host fast path (mpi_shm.c), or MPI -------- */

static unsigned char pattern(size_t i, unsigned seed) {
  return (unsigned char)((i * 2654435761u) >> 13 ^ seed);
}

static cf_future *submit_pattern(cf_executor *ex, size_t n, unsigned seed) {
  unsigned char *in = malloc(n ? n : 1);
  assert_non_null(in);
  for (size_t i = 0; i < n; i++)
    in[i] = pattern(i, seed);
  cf_future *f = NULL;
  assert_int_equal(cf_mpi_pool_submit(ex, echo, in, n, &f), 0);
  free(in); /* the pool copied it */
  return f;
}

static void check_pattern(cf_future *f, size_t n, unsigned seed) {
  void *v;
  assert_int_equal(cf_future_result(f, T, &v), 0);
  const cf_buf *b = v;
  assert_int_equal(b->len, n);
  for (size_t i = 0; i < n; i++)
    if (((const unsigned char *)b->data)[i] != pattern(i, seed))
      fail_msg("seed %u: byte %zu of %zu differs", seed, i, n);
}

/* Sizes around the threshold (64 KiB) and well above, both ways: the
 * bytes arrive intact, and by the path expected: from 64 KiB on the input
 * reaches the worker in the pool's memfd and the result is in one here,
 * unless CFUTURES_MPI_SHM=0. */
static void test_large_payloads_both_ways(void **state) {
  cf_executor *ex = *state;
  const size_t k64 = 64 * 1024;
  size_t sizes[] = {k64 - 1, k64, k64 + 1, 1u << 20, (16u << 20) + 3};
  for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    size_t n = sizes[k];
    for (int rep = 0; rep < 3; rep++) { /* fresh, then warm buffers */
      cf_future *f = submit_pattern(ex, n, (unsigned)(k * 3 + rep));
      check_pattern(f, n, (unsigned)(k * 3 + rep));
      void *v;
      assert_int_equal(cf_future_result(f, T, &v), 0);
      bool here = in_pool_memfd(((const cf_buf *)v)->data);
      if (here != (n >= k64 && !shm_off))
        fail_msg("a result of %zu bytes %s shared memory", n,
                 here ? "in" : "not in");
      cf_future_unref(f);
      char *in = calloc(1, n);
      assert_non_null(in);
      assert_int_equal(cf_mpi_pool_submit(ex, input_where, in, n, &f), 0);
      free(in);
      assert_int_equal(cf_future_result(f, T, &v), 0);
      bool there = *(const char *)((const cf_buf *)v)->data;
      /* a small result of a large input: not in a (large) spare */
      assert_false(in_pool_memfd(((const cf_buf *)v)->data));
      if (there != (n >= k64 && !shm_off))
        fail_msg("an input of %zu bytes %s shared memory in the worker", n,
                 there ? "in" : "not in");
      cf_future_unref(f);
    }
  }
}

/* A large result from a small input: the first through MPI, the next in
 * a spare lent for it (the worker's last result was large). */
static void test_large_result_small_input(void **state) {
  cf_executor *ex = *state;
  for (int rep = 0; rep < 6; rep++) {
    uint32_t n = (3u << 20) + (uint32_t)rep;
    unsigned char in[5];
    memcpy(in, &n, sizeof n);
    in[4] = (unsigned char)rep;
    cf_future *f;
    assert_int_equal(cf_mpi_pool_submit(ex, grow_bytes, in, sizeof in, &f), 0);
    void *v;
    assert_int_equal(cf_future_result(f, T, &v), 0);
    const cf_buf *b = v;
    assert_int_equal(b->len, n);
    for (uint32_t i = 0; i < n; i++)
      if (((const unsigned char *)b->data)[i] != (unsigned char)(i * 7 + rep))
        fail_msg("rep %d: byte %u differs", rep, i);
    cf_future_unref(f);
  }
}

/* Many large tasks in flight at once, more than there are shared buffers
 * (some go through MPI then), with failures among them; every result is
 * right, and once the pool and the results are gone no memfd is left. */
static void test_many_large_in_flight(void **state) {
  cf_executor *ex = *state;
  enum { N = 160 };
  const size_t n = 300 * 1000;
  cf_future *fs[N];
  for (int i = 0; i < N; i++) {
    if (i % 10 == 9) {
      char *in = calloc(1, n);
      assert_non_null(in);
      assert_int_equal(cf_mpi_pool_submit(ex, big_fail, in, n, &fs[i]), 0);
      free(in);
    } else {
      fs[i] = submit_pattern(ex, n + (size_t)i, (unsigned)i);
    }
  }
  for (int i = 0; i < N; i++) {
    if (i % 10 == 9) {
      assert_int_equal(cf_future_result(fs[i], T, NULL), CF_EFAILED);
      cf_error e = {0, NULL};
      assert_int_equal(cf_future_exception(fs[i], 0, &e), 0);
      assert_non_null(strstr(e.message, "refused"));
    } else {
      check_pattern(fs[i], n + (size_t)i, (unsigned)i);
    }
  }
  for (int i = 0; i < N; i++)
    cf_future_unref(fs[i]);
}

/* Results kept alive while more large tasks run: a result's buffer is
 * never reused under it; it is given back when the future goes, also
 * after the pool is freed. */
static void test_results_outlive_tasks_and_pool(void **state) {
  cf_executor *ex = *state;
  enum { KEEP = 12, MORE = 40 };
  const size_t n = (2u << 20) + 5;
  cf_future *kept[KEEP];
  for (int i = 0; i < KEEP; i++) {
    kept[i] = submit_pattern(ex, n, 100u + (unsigned)i);
    check_pattern(kept[i], n, 100u + (unsigned)i);
  }
  for (int i = 0; i < MORE; i++) { /* each dropped at once: warm reuse */
    cf_future *f = submit_pattern(ex, n, 200u + (unsigned)i);
    check_pattern(f, n, 200u + (unsigned)i);
    cf_future_unref(f);
  }
  for (int i = 0; i < KEEP; i++)
    check_pattern(kept[i], n, 100u + (unsigned)i);
  cf_executor_free(ex); /* the test owns the pool here */
  *state = NULL;
  for (int i = 0; i < KEEP; i++) { /* still there */
    check_pattern(kept[i], n, 100u + (unsigned)i);
    cf_future_unref(kept[i]);
  }
  assert_int_equal(pool_memfds(), 0);
}

/* After a pool with large payloads is freed, no memfd of it is left. */
static void test_no_memfd_left(void **state) {
  cf_executor *ex = *state;
  for (int i = 0; i < 8; i++) {
    cf_future *f = submit_pattern(ex, 1u << 20, (unsigned)i);
    check_pattern(f, 1u << 20, (unsigned)i);
    cf_future_unref(f);
  }
  cf_executor_free(ex);
  *state = NULL;
  assert_int_equal(pool_memfds(), 0);
}

static void test_submit_values(void **state) {
  cf_executor *ex = *state;
  enum { N = 200 };
  cf_future *fs[N];
  for (intptr_t i = 0; i < N; i++)
    assert_int_equal(cf_submit(ex, twice, (void *)i, &fs[i]), 0);
  for (intptr_t i = 0; i < N; i++) {
    void *v;
    int rc = cf_future_result(fs[i], T, &v);
    if (i == 13) {
      assert_int_equal(rc, CF_EFAILED);
      cf_error e;
      assert_int_equal(cf_future_exception(fs[i], 0, &e), 0);
      assert_int_equal(e.code, CF_EPERM);
      assert_non_null(strstr(e.message, "unlucky 13"));
    } else {
      assert_int_equal(rc, 0);
      assert_int_equal((intptr_t)v, 2 * i);
    }
    cf_future_unref(fs[i]);
  }
}

static void test_failure_names_rank_and_host(void **state) {
  cf_executor *ex = *state;
  cf_future *f = submit_i32(ex, -5);
  assert_int_equal(cf_future_result(f, T, NULL), CF_EFAILED);
  cf_error e;
  assert_int_equal(cf_future_exception(f, 0, &e), 0);
  assert_int_equal(e.code, CF_EINVAL);
  printf("# failure message: %s\n", e.message);
  assert_non_null(strstr(e.message, "negative input -5"));
  assert_true(strncmp(e.message, "rank ", 5) == 0);
  assert_non_null(strstr(e.message, " on "));
  /* the pool goes on */
  cf_future *g = submit_i32(ex, 0);
  void *v;
  assert_int_equal(cf_future_result(g, T, &v), 0);
  assert_int_equal(i32(v), 1);
  /* a wrong input size is the task's own failure */
  cf_future *h;
  assert_int_equal(cf_mpi_pool_submit(ex, slow_or_fail, "abc", 3, &h), 0);
  assert_int_equal(cf_future_result(h, T, NULL), CF_EFAILED);
  cf_future_unref(f);
  cf_future_unref(g);
  cf_future_unref(h);
}

static void test_map_bytes_chunked(void **state) {
  cf_executor *ex = *state;
  enum { N = 1000 };
  int32_t *xs = malloc(N * sizeof *xs);
  for (int i = 0; i < N; i++)
    xs[i] = i == 500 ? -1 : 0; /* item 500 fails */
  /* chunk sizes, and windows (0: everything at once; a window that is no
   * multiple of the chunk: whole chunks go as room frees up) */
  size_t chunks[] = {1, 7, 1000, 5000, 7, 300};
  size_t windows[] = {0, 0, 0, 0, 20, 500};
  for (size_t c = 0; c < 6; c++) {
    cf_map_opts o = {.chunksize = chunks[c],
                     .window = windows[c],
                     .use_timeout = true,
                     .timeout_s = T};
    cf_map *m;
    assert_int_equal(
        cf_mpi_pool_map_bytes(ex, slow_or_fail, xs, N, sizeof xs[0], &o, &m),
        0);
    void *v;
    for (int i = 0; i < N; i++) {
      int rc = cf_map_next(m, &v);
      if (i == 500) {
        assert_int_equal(rc, CF_EFAILED);
        cf_error e;
        assert_int_equal(cf_map_error(m, &e), 0);
        assert_int_equal(e.code, CF_EINVAL);
        assert_non_null(strstr(e.message, "negative input -1"));
        assert_non_null(strstr(e.message, "rank "));
      } else {
        assert_int_equal(rc, 0);
        assert_int_equal(i32(v), 1);
      }
    }
    assert_int_equal(cf_map_next(m, &v), CF_EDONE);
    cf_map_free(m);
  }
  free(xs);
}

static void test_map_array_values(void **state) {
  cf_executor *ex = *state;
  enum { N = 20000 };
  int64_t *xs = malloc(N * sizeof *xs);
  for (int i = 0; i < N; i++)
    xs[i] = i;
  cf_map_opts o = {.chunksize = 1000};
  cf_map *m;
  assert_int_equal(cf_map_array(ex, item_square, xs, N, sizeof xs[0], &o, &m),
                   0);
  void *v;
  for (int64_t i = 0; i < N; i++) {
    assert_int_equal(cf_map_next(m, &v), 0);
    assert_int_equal((intptr_t)v, i * i);
  }
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  cf_map_free(m);
  free(xs);
}

static int next_int(void *state, void **item) {
  intptr_t *i = state;
  if (*i >= 300)
    return CF_EDONE;
  *item = (void *)(*i)++;
  return 0;
}

static void test_map_iter(void **state) {
  cf_executor *ex = *state;
  intptr_t i = 0;
  cf_map *m;
  assert_int_equal(cf_map_iter(ex, twice, next_int, &i, NULL, &m), 0);
  void *v;
  for (intptr_t k = 0; k < 300; k++) {
    int rc = cf_map_next(m, &v);
    if (k == 13) {
      assert_int_equal(rc, CF_EFAILED);
    } else {
      assert_int_equal(rc, 0);
      assert_int_equal((intptr_t)v, 2 * k);
    }
  }
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  cf_map_free(m);
}

static void test_wait_and_as_completed(void **state) {
  cf_executor *ex = *state;
  /* A slow task and quick ones. With a backlog a quick one may be sent
   * ahead to the slow one's worker and wait behind it (documented), but
   * the other worker finishes the rest long before the slow one ends. */
  cf_future *fs[6];
  fs[0] = submit_i32(ex, 1500);
  for (int i = 1; i < 6; i++)
    fs[i] = submit_i32(ex, 0);
  bool done[6];
  assert_int_equal(cf_wait(fs, 6, T, CF_FIRST_COMPLETED, done), 0);
  assert_false(done[0]);
  assert_false(cf_future_done(fs[0]));
  assert_int_equal(cf_wait(fs, 1, 0.05, CF_ALL_COMPLETED, NULL), CF_ETIMEDOUT);
  /* FIRST_EXCEPTION on a failure */
  cf_future *bad = submit_i32(ex, -1);
  cf_future *pair[2] = {fs[0], bad};
  assert_int_equal(cf_wait(pair, 2, T, CF_FIRST_EXCEPTION, done), 0);
  assert_true(done[1]);
  /* as_completed: each once, the slow one not first */
  cf_as_completed *it;
  assert_int_equal(cf_as_completed_new(fs, 6, T, &it), 0);
  cf_future *f, *first = NULL;
  int n = 0;
  while (cf_as_completed_next(it, &f) == 0) {
    if (n++ == 0)
      first = f;
  }
  assert_int_equal(n, 6);
  assert_ptr_not_equal(first, fs[0]);
  cf_as_completed_free(it);
  assert_int_equal(cf_wait(fs, 6, T, CF_ALL_COMPLETED, done), 0);
  for (int i = 0; i < 6; i++) {
    void *v;
    assert_int_equal(cf_future_result(fs[i], 0, &v), 0);
    assert_int_equal(i32(v), i == 0 ? 1501 : 1);
    cf_future_unref(fs[i]);
  }
  cf_future_unref(bad);
}

static void test_cancel_pending(void **state) {
  cf_executor *ex = *state;
  /* Two slow tasks occupy both workers; no backlog is sent ahead beyond
   * the queue's share, so most of the later ones stay pending. */
  enum { N = 40 };
  cf_future *fs[N];
  for (int i = 0; i < N; i++)
    fs[i] = submit_i32(ex, i < 2 ? 400 : 0);
  int cancelled = 0;
  for (int i = N - 1; i >= 2; i--)
    cancelled += cf_future_cancel(fs[i]);
  assert_true(cancelled > 0);
  for (int i = 0; i < N; i++) {
    void *v;
    int rc = cf_future_result(fs[i], T, &v);
    if (cf_future_cancelled(fs[i]))
      assert_int_equal(rc, CF_ECANCELLED);
    else {
      assert_int_equal(rc, 0);
      assert_int_equal(i32(v), i < 2 ? 401 : 1);
    }
    cf_future_unref(fs[i]);
  }
  printf("# cancelled %d of %d\n", cancelled, N - 2);
}

static atomic_int callbacks;
static cf_executor *callback_pool;
static atomic_int callback_shutdown_rc;

static int on_done(cf_future *f, void *arg) {
  (void)f;
  (void)arg;
  /* on the progress thread: shutdown(wait) of its own pool would wait
   * for itself */
  atomic_store(&callback_shutdown_rc,
               cf_executor_shutdown(callback_pool, true, false));
  atomic_fetch_add(&callbacks, 1);
  return 0;
}

static void test_done_callbacks(void **state) {
  cf_executor *ex = *state;
  callback_pool = ex;
  atomic_store(&callbacks, 0);
  atomic_store(&callback_shutdown_rc, 1);
  cf_future *f = submit_i32(ex, 50);
  assert_int_equal(cf_future_add_done_callback(f, on_done, NULL), 0);
  assert_int_equal(cf_future_result(f, T, NULL), 0);
  /* a callback added to a done future runs at once, here */
  for (int k = 0; k < 1000 && atomic_load(&callbacks) == 0; k++)
    usleep(1000);
  assert_int_equal(atomic_load(&callbacks), 1);
  assert_int_equal(atomic_load(&callback_shutdown_rc), CF_EDEADLK);
  assert_int_equal(cf_future_add_done_callback(f, on_done, NULL), 0);
  assert_int_equal(atomic_load(&callbacks), 2);
  cf_future_unref(f);
}

static void test_shutdown_cancel_futures(void **state) {
  cf_executor *ex = *state;
  enum { N = 30 };
  cf_future *fs[N];
  for (int i = 0; i < N; i++)
    fs[i] = submit_i32(ex, 100);
  usleep(20000); /* let the first ones start */
  assert_int_equal(cf_executor_shutdown(ex, true, true), 0);
  int ok = 0, cancelled = 0;
  for (int i = 0; i < N; i++) {
    assert_true(cf_future_done(fs[i])); /* nothing left hanging */
    int rc = cf_future_result(fs[i], 0, NULL);
    ok += rc == 0;
    cancelled += rc == CF_ECANCELLED;
    cf_future_unref(fs[i]);
  }
  assert_int_equal(ok + cancelled, N);
  assert_true(ok >= 1);
  printf("# shutdown: %d ran, %d cancelled\n", ok, cancelled);
  /* use after shutdown */
  cf_future *f = (cf_future *)1;
  int32_t n = 0;
  assert_int_equal(cf_mpi_pool_submit(ex, slow_or_fail, &n, sizeof n, &f),
                   CF_ESHUTDOWN);
  assert_null(f);
  assert_int_equal(cf_submit(ex, twice, NULL, &f), CF_ESHUTDOWN);
  cf_map *m = (cf_map *)1;
  assert_int_equal(cf_mpi_pool_map_bytes(ex, echo, &n, 1, sizeof n, NULL, &m),
                   CF_ESHUTDOWN);
  assert_null(m);
  /* shutdown again is fine */
  assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
}

static void test_shutdown_waits(void **state) {
  cf_executor *ex = *state;
  enum { N = 10 };
  cf_future *fs[N];
  for (int i = 0; i < N; i++)
    fs[i] = submit_i32(ex, 20);
  assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
  for (int i = 0; i < N; i++) {
    void *v;
    assert_int_equal(cf_future_result(fs[i], 0, &v), 0);
    assert_int_equal(i32(v), 21);
    cf_future_unref(fs[i]);
  }
}

static void test_bad_input(void **state) {
  cf_executor *ex = *state;
  cf_future *f = (cf_future *)1;
  int32_t n = 0;
  assert_int_equal(cf_mpi_pool_submit(NULL, echo, &n, 4, &f), CF_EINVAL);
  assert_null(f);
  assert_int_equal(cf_mpi_pool_submit(ex, NULL, &n, 4, &f), CF_EINVAL);
  assert_int_equal(cf_mpi_pool_submit(ex, echo, NULL, 4, &f), CF_EINVAL);
  assert_int_equal(cf_mpi_pool_submit(ex, echo, &n, 4, NULL), CF_EINVAL);
  /* a task function that lies in no loaded object */
  assert_int_equal(cf_mpi_pool_submit(ex, (cf_proc_fn)(uintptr_t)16, &n, 4, &f),
                   CF_EINVAL);
  assert_null(f);
  assert_non_null(strstr(cf_last_error(), "no loaded object"));
  assert_int_equal(cf_submit(ex, NULL, NULL, &f), CF_EINVAL);
  cf_map *m = (cf_map *)1;
  assert_int_equal(cf_mpi_pool_map_bytes(ex, echo, &n, 1, 0, NULL, &m),
                   CF_EINVAL);
  assert_null(m);
  assert_int_equal(cf_mpi_pool_map_bytes(ex, echo, NULL, 1, 4, NULL, &m),
                   CF_EINVAL);
  assert_int_equal(cf_mpi_pool_map_bytes(NULL, echo, &n, 1, 4, NULL, &m),
                   CF_EINVAL);
  cf_map_opts bad = {.result_destroy = free};
  assert_int_equal(cf_mpi_pool_map_bytes(ex, echo, &n, 1, 4, &bad, &m),
                   CF_EINVAL);
  /* zero items: a map that ends at once */
  assert_int_equal(cf_mpi_pool_map_bytes(ex, echo, NULL, 0, 4, NULL, &m), 0);
  void *v;
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  cf_map_free(m);
  /* not an MPI pool */
  cf_executor *tp;
  assert_int_equal(cf_thread_pool_new(NULL, &tp), 0);
  assert_int_equal(cf_mpi_pool_submit(tp, echo, &n, 4, &f), CF_EINVAL);
  assert_int_equal(cf_mpi_pool_map_bytes(tp, echo, &n, 1, 4, NULL, &m),
                   CF_EINVAL);
  assert_int_equal(cf_mpi_pool_size(tp), 0);
  assert_int_equal(cf_mpi_pool_size(NULL), 0);
  cf_executor_free(tp);
  /* pool creation */
  cf_executor *other = (cf_executor *)1;
  assert_int_equal(cf_mpi_pool_new(NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_mpi_pool_new(NULL, &other), CF_EBUSY); /* one alive */
  assert_null(other);
  cf_mpi_pool_opts big = {.max_workers = 5000};
  assert_int_equal(cf_mpi_pool_new(&big, &other), CF_EINVAL);
  /* cf_mpi_serve twice */
  assert_int_equal(cf_mpi_serve(NULL, NULL), CF_EINVALSTATE);
}

static void test_bad_pool_options(void **state) {
  (void)state;
  cf_executor *ex = (cf_executor *)1;
  if (spawned_mode) {
    /* no fixed count of ranks; a program that cannot be spawned */
    cf_mpi_pool_opts bad = {.max_workers = 1, .command = "/nonexistent/x"};
    assert_int_equal(cf_mpi_pool_new(&bad, &ex), CF_EINVAL);
    assert_null(ex);
    assert_non_null(strstr(cf_last_error(), "no such executable"));
    return;
  }
  cf_mpi_pool_opts o = {.max_workers = 3}; /* the job has 2 worker ranks */
  assert_int_equal(cf_mpi_pool_new(&o, &ex), CF_EINVAL);
  assert_null(ex);
  assert_non_null(strstr(cf_last_error(), "worker ranks"));
}

static void test_many_tasks_from_threads_backlog(void **state) {
  cf_executor *ex = *state;
  enum { N = 20000 };
  cf_future **fs = malloc(N * sizeof *fs);
  for (intptr_t i = 0; i < N; i++)
    assert_int_equal(cf_submit(ex, twice, (void *)(i + 100), &fs[i]), 0);
  assert_int_equal(cf_wait(fs, N, T, CF_ALL_COMPLETED, NULL), 0);
  for (intptr_t i = 0; i < N; i++) {
    void *v;
    assert_int_equal(cf_future_result(fs[i], 0, &v), 0);
    assert_int_equal((intptr_t)v, 2 * (i + 100));
    cf_future_unref(fs[i]);
  }
  free(fs);
}

/* For check_death.py: a task that crashes, one that calls exit(). */
static int crash(const void *in, size_t len, cf_buf *out) {
  raise(SIGSEGV);
  return 0;
}

static int leave(const void *in, size_t len, cf_buf *out) {
  exit(3);
}

/* Under mpiexec the job must end (mpiexec kills it) before this returns;
 * alone (spawned workers), the future fails with CF_EBROKEN (exit 3). */
static int die_in_a_task(cf_proc_fn fn, size_t len) {
  cf_mpi_pool_opts o = {.max_workers = 2};
  cf_executor *ex;
  if (cf_mpi_pool_new(&o, &ex) != 0)
    return 2;
  cf_future *f;
  char *in = calloc(1, len); /* large: in shared memory, with a spare */
  if (!in || cf_mpi_pool_submit(ex, fn, in, len, &f) != 0)
    return 2;
  free(in);
  int rc = cf_future_result(f, 60, NULL);
  cf_error e = {0, NULL};
  if (rc == CF_EBROKEN && cf_future_exception(f, 0, &e) == 0) {
    printf("future failed: %s\n", e.message);
    fflush(stdout);
    /* a later submit is refused, at once */
    cf_future *g;
    int src = cf_mpi_pool_submit(ex, fn, "x", 1, &g);
    printf("submit after: %s\n", cf_err_name(src));
    fflush(stdout);
    cf_future_unref(f);
    cf_executor_free(ex); /* joins the progress thread, which has ended */
    _exit(3);             /* MPI cannot be finalised: its job lost a process */
  }
  printf("the job outlived its dead worker (%s)\n", cf_err_name(rc));
  return 0;
}

/* ---- caller-driven progress (opts.caller_progress) ------------------- */

static int caller_pool_up(void **state) {
  return pool_up_as(state, true);
}

static double secs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Nothing moves until the program drives the pool; then a given future,
 * then everything queued, completes; every wait's timeout holds. */
static void test_caller_progress(void **state) {
  cf_executor *ex = *state;
  enum { N = 50 };
  cf_future *fs[N];
  for (int i = 0; i < N; i++)
    fs[i] = submit_i32(ex, i % 3);
  usleep(50000); /* no thread of the pool's: nothing is sent */
  assert_false(cf_future_done(fs[0]));
  assert_int_equal(cf_mpi_pool_progress(ex, fs[0], T), 0);
  assert_true(cf_future_done(fs[0]));
  assert_int_equal(cf_mpi_pool_progress(ex, NULL, T), 0);
  for (int i = 0; i < N; i++) {
    assert_true(cf_future_done(fs[i]));
    void *v;
    assert_int_equal(cf_future_result(fs[i], 0, &v), 0);
    assert_int_equal(i32(v), i % 3 + 1);
    cf_future_unref(fs[i]);
  }
  /* nothing to do: at once, whatever the timeout */
  assert_int_equal(cf_mpi_pool_progress(ex, NULL, 0), 0);
  /* a future no task of this pool completes: the timeout */
  cf_future *never = cf_future_new();
  double t0 = secs();
  assert_int_equal(cf_mpi_pool_progress(ex, never, 0.05), CF_ETIMEDOUT);
  double took = secs() - t0;
  assert_true(took >= 0.045 && took < 5);
  assert_int_equal(cf_mpi_pool_progress(ex, never, 0), CF_ETIMEDOUT);
  /* a slow task: the timeout, then done on a later call */
  cf_future *slow = submit_i32(ex, 300);
  assert_int_equal(cf_mpi_pool_progress(ex, slow, 0.02), CF_ETIMEDOUT);
  assert_false(cf_future_done(slow));
  assert_int_equal(cf_mpi_pool_progress(ex, slow, T), 0);
  void *v;
  assert_int_equal(cf_future_result(slow, 0, &v), 0);
  assert_int_equal(i32(v), 301);
  cf_future_unref(slow);
  cf_future_unref(never);
  /* bad input */
  assert_int_equal(cf_mpi_pool_progress(NULL, NULL, 0), CF_EINVAL);
  assert_int_equal(cf_mpi_pool_progress(ex, NULL, __builtin_nan("")),
                   CF_EINVAL);
}

/* A thread that drives the pool lets blocking waits (cf_map_next) work. */
static atomic_bool stop_driving;
static void *driver(void *arg) {
  while (!atomic_load(&stop_driving)) {
    int rc = cf_mpi_pool_progress(arg, NULL, 0.01);
    if (rc != 0 && rc != CF_ETIMEDOUT)
      return (void *)(intptr_t)rc;
  }
  return NULL;
}

static void test_caller_progress_driver_thread(void **state) {
  cf_executor *ex = *state;
  atomic_store(&stop_driving, false);
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, driver, ex), 0);
  enum { N = 2000 };
  int32_t *xs = calloc(N, sizeof *xs);
  assert_non_null(xs);
  cf_map_opts o = {.chunksize = 50, .use_timeout = true, .timeout_s = T};
  cf_map *m;
  assert_int_equal(
      cf_mpi_pool_map_bytes(ex, slow_or_fail, xs, N, sizeof xs[0], &o, &m), 0);
  void *v;
  for (int i = 0; i < N; i++) {
    assert_int_equal(cf_map_next(m, &v), 0);
    assert_int_equal(i32(v), 1);
  }
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  cf_map_free(m);
  free(xs);
  atomic_store(&stop_driving, true);
  void *ret;
  assert_int_equal(pthread_join(th, &ret), 0);
  assert_null(ret);
}

/* A done-callback run by the caller's progress may not drive the pool
 * again, nor wait for its shutdown. */
static atomic_int nested_rc, nested_shutdown_rc;
static int drive_in_callback(cf_future *f, void *arg) {
  (void)f;
  atomic_store(&nested_rc, cf_mpi_pool_progress(arg, NULL, 0));
  atomic_store(&nested_shutdown_rc, cf_executor_shutdown(arg, true, false));
  return 0;
}

static void test_caller_progress_callbacks(void **state) {
  cf_executor *ex = *state;
  atomic_store(&nested_rc, 1);
  atomic_store(&nested_shutdown_rc, 1);
  cf_future *f = submit_i32(ex, 1);
  assert_int_equal(cf_future_add_done_callback(f, drive_in_callback, ex), 0);
  assert_int_equal(cf_mpi_pool_progress(ex, f, T), 0);
  assert_int_equal(atomic_load(&nested_rc), CF_EDEADLK);
  assert_int_equal(atomic_load(&nested_shutdown_rc), CF_EDEADLK);
  cf_future_unref(f);
}

/* A waiting shutdown runs what is queued (the caller's thread drives),
 * then releases the workers: nothing moves after it. */
static void test_caller_progress_shutdown(void **state) {
  cf_executor *ex = *state;
  test_shutdown_waits(state); /* nothing moved before the shutdown */
  cf_future *f = NULL;
  int32_t one = 1;
  assert_int_equal(cf_mpi_pool_submit(ex, slow_or_fail, &one, sizeof one, &f),
                   CF_ESHUTDOWN);
  assert_int_equal(cf_mpi_pool_progress(ex, NULL, 0), 0);
  cf_future *never = cf_future_new();
  assert_int_equal(cf_mpi_pool_progress(ex, never, 0), CF_ESHUTDOWN);
  cf_future_unref(never);
}

/* A pool with its own progress thread refuses to be driven. */
static void test_progress_needs_caller_mode(void **state) {
  cf_executor *ex = *state;
  assert_int_equal(cf_mpi_pool_progress(ex, NULL, 0), CF_EINVAL);
  cf_executor *tp;
  assert_int_equal(cf_thread_pool_new(NULL, &tp), 0);
  assert_int_equal(cf_mpi_pool_progress(tp, NULL, 0), CF_EINVAL);
  cf_executor_free(tp);
}

int main(int argc, char **argv) {
  struct sigaction sa = {.sa_handler = watchdog_fired};
  sigaction(SIGALRM, &sa, NULL);
  alarm(150);
  int rc = cf_mpi_serve(&argc, &argv);
  if (rc <= 0) {
    if (rc < 0)
      fprintf(stderr, "cf_mpi_serve: %s\n", cf_last_error());
    return rc < 0;
  }
  if (argc > 1 && strcmp(argv[1], "--crash") == 0)
    return die_in_a_task(crash, 1);
  if (argc > 1 && strcmp(argv[1], "--crash-big") == 0)
    return die_in_a_task(crash, 4u << 20);
  if (argc > 1 && strcmp(argv[1], "--exit") == 0)
    return die_in_a_task(leave, 1);
  spawned_mode = getenv("OMPI_COMM_WORLD_SIZE") == NULL ||
                 strcmp(getenv("OMPI_COMM_WORLD_SIZE"), "1") == 0;
  shm_off = getenv("CFUTURES_MPI_SHM") &&
            strcmp(getenv("CFUTURES_MPI_SHM"), "0") == 0;
  printf("# mode: %s, large payloads through %s\n",
         spawned_mode ? "spawned workers" : "mpiexec ranks",
         shm_off ? "MPI (CFUTURES_MPI_SHM=0)" : "shared memory");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_submit_bytes, pool_up, pool_down),
      cmocka_unit_test_setup_teardown(test_large_payloads_both_ways, pool_up,
                                      pool_down),
      cmocka_unit_test_setup_teardown(test_large_result_small_input, pool_up,
                                      pool_down),
      cmocka_unit_test_setup_teardown(test_many_large_in_flight, pool_up,
                                      pool_down),
      cmocka_unit_test_setup_teardown(test_results_outlive_tasks_and_pool,
                                      pool_up, pool_down),
      cmocka_unit_test_setup_teardown(test_no_memfd_left, pool_up, pool_down),
      cmocka_unit_test_setup_teardown(test_submit_values, pool_up, pool_down),
      cmocka_unit_test_setup_teardown(test_failure_names_rank_and_host, pool_up,
                                      pool_down),
      cmocka_unit_test_setup_teardown(test_map_bytes_chunked, pool_up,
                                      pool_down),
      cmocka_unit_test_setup_teardown(test_map_array_values, pool_up,
                                      pool_down),
      cmocka_unit_test_setup_teardown(test_map_iter, pool_up, pool_down),
      cmocka_unit_test_setup_teardown(test_wait_and_as_completed, pool_up,
                                      pool_down),
      cmocka_unit_test_setup_teardown(test_cancel_pending, pool_up, pool_down),
      cmocka_unit_test_setup_teardown(test_done_callbacks, pool_up, pool_down),
      cmocka_unit_test_setup_teardown(test_shutdown_cancel_futures, pool_up,
                                      pool_down),
      cmocka_unit_test_setup_teardown(test_shutdown_waits, pool_up, pool_down),
      cmocka_unit_test_setup_teardown(test_bad_input, pool_up, pool_down),
      cmocka_unit_test(test_bad_pool_options),
      cmocka_unit_test_setup_teardown(test_many_tasks_from_threads_backlog,
                                      pool_up, pool_down),
      cmocka_unit_test_setup_teardown(test_caller_progress, caller_pool_up,
                                      pool_down),
      cmocka_unit_test_setup_teardown(test_caller_progress_driver_thread,
                                      caller_pool_up, pool_down),
      cmocka_unit_test_setup_teardown(test_caller_progress_callbacks,
                                      caller_pool_up, pool_down),
      cmocka_unit_test_setup_teardown(test_caller_progress_shutdown,
                                      caller_pool_up, pool_down),
      cmocka_unit_test_setup_teardown(test_progress_needs_caller_mode,
                                      pool_up, pool_down),
  };
  /* Spawned workers: every test's pool spawns two (MPI_Comm_spawn) and
   * disconnects them. OpenMPI 4.1 here has hung, rarely, in a spawn
   * following many spawns and disconnects in one process (twice in CI
   * runs of this file, at different tests; never under mpiexec, never
   * reproduced in 22 local runs). The spawned run therefore takes the
   * tests that differ when spawned (pool creation, payloads, failures
   * naming the host, shutdown and release, caller progress), and the
   * mpiexec runs take them all. */
  const struct CMUnitTest spawned[] = {
      cmocka_unit_test_setup_teardown(test_submit_bytes, pool_up, pool_down),
      cmocka_unit_test_setup_teardown(test_large_payloads_both_ways, pool_up,
                                      pool_down),
      cmocka_unit_test_setup_teardown(test_failure_names_rank_and_host, pool_up,
                                      pool_down),
      cmocka_unit_test_setup_teardown(test_map_bytes_chunked, pool_up,
                                      pool_down),
      cmocka_unit_test_setup_teardown(test_shutdown_cancel_futures, pool_up,
                                      pool_down),
      cmocka_unit_test_setup_teardown(test_caller_progress_shutdown,
                                      caller_pool_up, pool_down),
      cmocka_unit_test(test_bad_pool_options),
  };
  if (spawned_mode)
    return cmocka_run_group_tests(spawned, NULL, NULL);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
