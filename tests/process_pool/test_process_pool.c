/* Tests for executor/process_pool.c. Every blocking call has a timeout. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
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
#include <sys/resource.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cfutures.h>

#include "helpers.h"

/* Under LeakSanitizer, a task that calls exit() runs the leak check in its
 * worker. Workers descend (through the fork server) from the pool's manager
 * thread, so the check there cannot see the stacks of the parent's other
 * threads and reports what they hold as leaked. Check this process only. */
static pid_t test_pid;
int __lsan_is_turned_off(void);
int __lsan_is_turned_off(void) {
  return test_pid && getpid() != test_pid;
}

/* The start method every pool of this run uses: the suite runs this file
 * once with each (CF_TEST_START_METHOD=fork or forkserver, the default). */
static cf_start_method start_method = CF_START_FORKSERVER;

/* cf_process_pool_new with this run's start method. */
static int pool_new(cf_process_pool_opts *o, cf_executor **ex) {
  if (o)
    o->start_method = start_method;
  return cf_process_pool_new(o, ex);
}

static cf_executor *new_pool(size_t workers) {
  cf_process_pool_opts o = {.max_workers = workers};
  cf_executor *ex = NULL;
  assert_int_equal(pool_new(&o, &ex), 0);
  return ex;
}

static int count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  struct dirent *de;
  while ((de = readdir(d)))
    n += de->d_name[0] != '.';
  closedir(d);
  return n - 1; /* the directory's own fd */
}

static int count_children(void) {
  return list_children(NULL);
}

static int square(void *arg, void **out) {
  intptr_t x = (intptr_t)arg;
  *out = (void *)(x * x);
  return 0;
}

static int bad(void *arg, void **out) {
  (void)out;
  return cf_fail(CF_EINVAL, "bad input %ld", (long)(intptr_t)arg);
}

static int reverse(const void *in, size_t n, cf_buf *out) {
  out->data = malloc(n ? n : 1);
  if (!out->data)
    return CF_ENOMEM;
  for (size_t i = 0; i < n; i++)
    ((unsigned char *)out->data)[i] = ((const unsigned char *)in)[n - 1 - i];
  out->len = n;
  return 0;
}

static int crash(void *arg, void **out) {
  (void)arg;
  (void)out;
  raise(SIGSEGV);
  return 0;
}

static int do_abort(void *arg, void **out) {
  (void)arg;
  (void)out;
  abort();
}

static int do_exit(void *arg, void **out) {
  (void)out;
  exit((int)(intptr_t)arg);
}

static int hang(void *arg, void **out) {
  (void)arg;
  (void)out;
  sleep(3600); /* killed long before */
  return 0;
}

static int my_pid(void *arg, void **out) {
  (void)arg;
  *out = (void *)(intptr_t)getpid();
  return 0;
}

static int slow(void *arg, void **out) {
  usleep((useconds_t)(intptr_t)arg);
  *out = arg;
  return 0;
}

/* How many times each item of the chunk tests ran, counted by the workers
 * in a page shared with them: a file the host maps and names in
 * CF_TEST_RUNS, which a worker maps on first use (with CF_START_FORK it
 * inherits the host's mapping; a fork server's fresh image has none). The
 * last counter counts the starts of hang_counted. */
enum { RUNS_MAX = 1024, HANG_STARTS = RUNS_MAX - 1 };
static _Atomic int *item_runs;
static char runs_path[64];

static void runs_unlink(void) {
  if (runs_path[0] && getpid() == test_pid)
    unlink(runs_path);
}

static _Atomic int *runs(void) {
  if (!item_runs) {
    const char *path = getenv("CF_TEST_RUNS");
    int fd = path ? open(path, O_RDWR | O_CLOEXEC) : -1;
    void *m = fd < 0 ? MAP_FAILED
                     : mmap(NULL, RUNS_MAX * sizeof *item_runs,
                            PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED)
      abort(); /* a worker without its counters: the test fails loudly */
    close(fd);
    item_runs = m;
  }
  return item_runs;
}

static void runs_reset(void) {
  if (!item_runs) {
    snprintf(runs_path, sizeof runs_path, "/tmp/cf-test-runs-XXXXXX");
    int fd = mkstemp(runs_path);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, RUNS_MAX * sizeof *item_runs), 0);
    close(fd);
    atexit(runs_unlink);
    assert_int_equal(setenv("CF_TEST_RUNS", runs_path, 1), 0);
    runs();
  }
  for (int i = 0; i < RUNS_MAX; i++)
    atomic_store_explicit(&runs()[i], 0, memory_order_relaxed);
}

/* hang, counted when it starts in its worker (call runs_reset before the
 * pool is made). */
static int hang_counted(void *arg, void **out) {
  atomic_fetch_add_explicit(&runs()[HANG_STARTS], 1, memory_order_relaxed);
  return hang(arg, out);
}

static void test_round_trips(void **state) {
  (void)state;
  int fds0 = count_fds();
  cf_executor *ex = new_pool(2);
  assert_int_equal(cf_process_pool_size(ex), 2);
  cf_future *f;
  void *v;
  assert_int_equal(cf_submit(ex, square, (void *)(intptr_t)12, &f), 0);
  assert_int_equal(cf_future_result(f, 10, &v), 0);
  assert_int_equal((intptr_t)v, 144);
  /* the promise side refuses executor futures */
  assert_int_equal(cf_future_set_result(f, NULL, NULL), CF_EPERM);
  cf_future_unref(f);
  /* failures carry code and message */
  assert_int_equal(cf_submit(ex, bad, (void *)(intptr_t)7, &f), 0);
  assert_int_equal(cf_future_result(f, 10, &v), CF_EFAILED);
  cf_error e;
  assert_int_equal(cf_future_exception(f, 0, &e), 0);
  assert_int_equal(e.code, CF_EINVAL);
  assert_string_equal(e.message, "bad input 7");
  cf_future_unref(f);
  /* bytes */
  assert_int_equal(cf_process_pool_submit(ex, reverse, "hello", 5, &f), 0);
  assert_int_equal(cf_future_result(f, 10, &v), 0);
  cf_buf *b = v;
  assert_int_equal(b->len, 5);
  assert_memory_equal(b->data, "olleh", 5);
  cf_future_unref(f);
  assert_int_equal(cf_process_pool_submit(ex, reverse, NULL, 0, &f), 0);
  assert_int_equal(cf_future_result(f, 10, &v), 0);
  assert_int_equal(((cf_buf *)v)->len, 0);
  cf_future_unref(f);
  /* bad arguments */
  assert_int_equal(cf_process_pool_submit(ex, NULL, "x", 1, &f), CF_EINVAL);
  assert_int_equal(cf_process_pool_submit(ex, reverse, NULL, 3, &f), CF_EINVAL);
  cf_executor_free(ex);
  assert_int_equal(count_fds(), fds0);   /* nothing left open */
  assert_int_equal(count_children(), 0); /* no zombies */
  cf_process_pool_opts o = {.task_timeout_s = -1};
  assert_int_equal(pool_new(&o, &ex), CF_EINVAL);
  o = (cf_process_pool_opts){.max_workers = 100000};
  assert_int_equal(pool_new(&o, &ex), CF_EINVAL);
  assert_int_equal(cf_process_pool_new(NULL, NULL), CF_EINVAL);
}

static void test_many_small_tasks(void **state) {
  (void)state;
  cf_executor *ex = new_pool(2);
  enum { N = 10000 };
  cf_future **fs = malloc(N * sizeof *fs);
  for (intptr_t i = 0; i < N; i++)
    assert_int_equal(cf_submit(ex, square, (void *)i, &fs[i]), 0);
  for (intptr_t i = 0; i < N; i++) {
    void *v;
    assert_int_equal(cf_future_result(fs[i], 60, &v), 0);
    assert_int_equal((intptr_t)v, i * i);
    cf_future_unref(fs[i]);
  }
  free(fs);
  cf_executor_free(ex);
}

static void test_big_payloads(void **state) {
  (void)state;
  cf_executor *ex = new_pool(1);
  size_t n = 64u << 20;
  unsigned char *in = malloc(n);
  assert_non_null(in);
  for (size_t i = 0; i < n; i++)
    in[i] = (unsigned char)(i * 2654435761u >> 13);
  cf_future *f;
  assert_int_equal(cf_process_pool_submit(ex, reverse, in, n, &f), 0);
  void *v;
  assert_int_equal(cf_future_result(f, 120, &v), 0);
  cf_buf *b = v;
  assert_int_equal(b->len, n);
  const unsigned char *out = b->data;
  size_t bad_bytes = 0;
  for (size_t i = 0; i < n; i++)
    bad_bytes += out[i] != in[n - 1 - i];
  assert_int_equal(bad_bytes, 0);
  cf_future_unref(f);
  free(in);
  cf_executor_free(ex);
}

/* Checks a patterned input (byte j is seed + j, mod 256; the seed is byte
 * 0) and returns its seed; seed 13 crashes the worker. */
static int check_pattern(const void *in, size_t n, cf_buf *out) {
  const unsigned char *p = in;
  if (n == 0)
    return cf_fail(CF_EINVAL, "empty");
  if (p[0] == 13)
    raise(SIGSEGV);
  for (size_t j = 0; j < n; j++)
    if (p[j] != (unsigned char)(p[0] + j))
      return cf_fail(CF_EINVAL, "byte %zu is %u", j, p[j]);
  out->data = malloc(1);
  if (!out->data)
    return CF_ENOMEM;
  memcpy(out->data, p, 1);
  out->len = 1;
  return 0;
}

/* Many large inputs pending at once: more than the pool keeps in memfds
 * from submit time (the rest are copied), one crash among them (the tasks
 * queued behind it are sent again), every input arrives intact, and every
 * descriptor is closed afterwards. */
static void test_many_big_inputs(void **state) {
  (void)state;
  int fds0 = count_fds();
  cf_executor *ex = new_pool(2);
  enum { N = 80 };
  size_t n = (1u << 20) + 4096;
  unsigned char *in = malloc(n);
  assert_non_null(in);
  cf_future *fs[N];
  for (int i = 0; i < N; i++) {
    for (size_t j = 0; j < n; j++)
      in[j] = (unsigned char)(i + 7 + j);
    assert_int_equal(cf_process_pool_submit(ex, check_pattern, in, n, &fs[i]),
                     0);
  }
  free(in); /* the pool has its own copies */
  for (int i = 0; i < N; i++) {
    void *v;
    int rc = cf_future_result(fs[i], 60, &v);
    if (i + 7 == 13) {
      assert_int_equal(rc, CF_EBROKEN);
    } else {
      assert_int_equal(rc, 0);
      cf_buf *b = v;
      assert_int_equal(b->len, 1);
      assert_int_equal(*(unsigned char *)b->data, (unsigned char)(i + 7));
    }
    cf_future_unref(fs[i]);
  }
  cf_executor_free(ex);
  assert_int_equal(count_fds(), fds0);
}

/* Crashes of every kind fail their own future only; the pool goes on. */
static void test_worker_deaths(void **state) {
  (void)state;
  runs_reset();
  int fds0 = count_fds();
  cf_executor *ex = new_pool(2);
  cf_future *f;
  cf_error e;
  void *v;
  assert_int_equal(cf_submit(ex, crash, NULL, &f), 0);
  assert_int_equal(cf_future_result(f, 20, &v), CF_EBROKEN);
  assert_int_equal(cf_future_exception(f, 0, &e), 0);
  assert_non_null(strstr(e.message, "signal 11"));
  cf_future_unref(f);
  assert_int_equal(cf_submit(ex, do_abort, NULL, &f), 0);
  assert_int_equal(cf_future_result(f, 20, &v), CF_EBROKEN);
  assert_int_equal(cf_future_exception(f, 0, &e), 0);
  assert_non_null(strstr(e.message, "signal 6"));
  cf_future_unref(f);
  assert_int_equal(cf_submit(ex, do_exit, (void *)(intptr_t)3, &f), 0);
  assert_int_equal(cf_future_result(f, 20, &v), CF_EBROKEN);
  assert_int_equal(cf_future_exception(f, 0, &e), 0);
  assert_non_null(strstr(e.message, "exited with status 3"));
  cf_future_unref(f);
  /* SIGKILL from outside, mid-task */
  cf_future *pidf, *h;
  assert_int_equal(cf_submit(ex, hang_counted, NULL, &h), 0);
  /* started in its worker, not only sent there (a worker killed before it
   * starts a task is not blamed: the task would run again, and hang) */
  double t0 = now_s();
  while (atomic_load_explicit(&runs()[HANG_STARTS], memory_order_relaxed) ==
             0 &&
         now_s() - t0 < 10)
    usleep(1000);
  /* find the worker running `hang`: ask the other worker for its pid */
  assert_int_equal(cf_submit(ex, my_pid, NULL, &pidf), 0);
  assert_int_equal(cf_future_result(pidf, 20, &v), 0);
  pid_t other = (pid_t)(intptr_t)v;
  cf_future_unref(pidf);
  /* the hanging worker is the server's other child */
  pid_t victim = 0;
  DIR *d = opendir("/proc");
  struct dirent *de;
  while ((de = readdir(d)) && !victim) {
    pid_t pid = (pid_t)atoi(de->d_name);
    if (pid <= 0 || pid == other)
      continue;
    char path[300], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *fp = fopen(path, "r");
    if (!fp)
      continue;
    int ppid = 0;
    char st;
    if (fgets(buf, sizeof buf, fp)) {
      char *p = strrchr(buf, ')');
      /* not a zombie: a worker that died in an earlier task may not have
       * been reaped yet (killing it would kill nothing) */
      if (p && sscanf(p + 2, "%c %d", &st, &ppid) == 2 && st != 'Z') {
        /* a grandchild of ours: parent is our child (the fork server) */
        char path2[300], buf2[512];
        snprintf(path2, sizeof path2, "/proc/%d/stat", ppid);
        FILE *fp2 = fopen(path2, "r");
        int gp = 0;
        if (fp2 && fgets(buf2, sizeof buf2, fp2)) {
          char *q = strrchr(buf2, ')');
          if (q)
            sscanf(q + 2, "%c %d", &st, &gp);
        }
        if (fp2)
          fclose(fp2);
        if (gp == getpid())
          victim = pid;
      }
    }
    fclose(fp);
  }
  closedir(d);
  assert_true(victim > 0);
  assert_int_equal(kill(victim, SIGKILL), 0);
  assert_int_equal(cf_future_result(h, 20, &v), CF_EBROKEN);
  assert_int_equal(cf_future_exception(h, 0, &e), 0);
  assert_non_null(strstr(e.message, "signal 9"));
  cf_future_unref(h);
  /* and the pool still serves */
  for (intptr_t i = 0; i < 20; i++) {
    assert_int_equal(cf_submit(ex, square, (void *)i, &f), 0);
    assert_int_equal(cf_future_result(f, 20, &v), 0);
    assert_int_equal((intptr_t)v, i * i);
    cf_future_unref(f);
  }
  cf_executor_free(ex);
  assert_int_equal(count_fds(), fds0);
  assert_int_equal(count_children(), 0);
}

static void test_task_timeout(void **state) {
  (void)state;
  cf_process_pool_opts o = {.max_workers = 1, .task_timeout_s = 0.2};
  cf_executor *ex;
  assert_int_equal(pool_new(&o, &ex), 0);
  cf_future *f, *g;
  assert_int_equal(cf_submit(ex, hang, NULL, &f), 0);
  assert_int_equal(cf_submit(ex, square, (void *)(intptr_t)5, &g), 0);
  double t0 = now_s();
  void *v;
  assert_int_equal(cf_future_result(f, 20, &v), CF_EFAILED);
  assert_true(now_s() - t0 >= 0.2);
  cf_error e;
  assert_int_equal(cf_future_exception(f, 0, &e), 0);
  assert_int_equal(e.code, CF_ETIMEDOUT);
  assert_int_equal(cf_future_result(g, 20, &v), 0); /* on a replacement */
  assert_int_equal((intptr_t)v, 25);
  cf_future_unref(f);
  cf_future_unref(g);
  cf_executor_free(ex);
}

/* An infinite or huge task timeout means no limit (it once overflowed into
 * a deadline in the past and killed every task at once); a negative or NaN
 * one is CF_EINVAL. */
static void test_infinite_task_timeout(void **state) {
  (void)state;
  alarm(30);
  const double forever[] = {INFINITY, 1.8e10, 1e300, DBL_MAX, 2e9};
  for (size_t k = 0; k < sizeof forever / sizeof forever[0]; k++) {
    cf_process_pool_opts o = {.max_workers = 1, .task_timeout_s = forever[k]};
    cf_executor *ex;
    assert_int_equal(pool_new(&o, &ex), 0);
    cf_future *f, *g;
    void *v;
    assert_int_equal(cf_submit(ex, slow, (void *)(intptr_t)30000, &f), 0);
    assert_int_equal(cf_submit(ex, square, (void *)(intptr_t)9, &g), 0);
    assert_int_equal(cf_future_result(f, 10, &v), 0);
    assert_int_equal((intptr_t)v, 30000);
    assert_int_equal(cf_future_result(g, 10, &v), 0);
    assert_int_equal((intptr_t)v, 81);
    cf_future_unref(f);
    cf_future_unref(g);
    cf_executor_free(ex);
  }
  const double invalid[] = {-1, -INFINITY, NAN, -1e-9};
  for (size_t k = 0; k < sizeof invalid / sizeof invalid[0]; k++) {
    cf_process_pool_opts o = {.max_workers = 1, .task_timeout_s = invalid[k]};
    cf_executor *ex = (cf_executor *)&o;
    assert_int_equal(pool_new(&o, &ex), CF_EINVAL);
    assert_null(ex);
  }
}

/* Busy for `arg` microseconds (a sleep would add the scheduler's slack). */
static int busy(void *arg, void **out) {
  double end = now_s() + (double)(intptr_t)arg * 1e-6;
  while (now_s() < end)
    ;
  *out = arg;
  return 0;
}

/* Tasks that end right at their timeout: the manager could kill the worker
 * and still read the result it had sent (the task succeeds), but then took
 * the killed worker for live and sent it the next task, which failed with
 * CF_EBROKEN, "killed by signal 9". Now a killed worker gets nothing more:
 * a task either succeeds or fails with CF_ETIMEDOUT, none is blamed for
 * another's death. (A short task can time out too, on a machine so loaded
 * that it waits a whole timeout for a core: a few are tolerated.) */
static void test_task_ending_at_its_timeout(void **state) {
  (void)state;
  alarm(60);
  enum { N = 200, T_US = 10000 };
  cf_process_pool_opts o = {.max_workers = 2, .task_timeout_s = T_US * 1e-6};
  cf_executor *ex;
  assert_int_equal(pool_new(&o, &ex), 0);
  cf_future *fs[2 * N];
  for (int i = 0; i < N; i++) {
    /* from 0.9 T to 1.1 T, stepping through the instant of the kill */
    intptr_t us = T_US * 9 / 10 + (i * 37) % (T_US / 5);
    assert_int_equal(cf_submit(ex, busy, (void *)us, &fs[2 * i]), 0);
    assert_int_equal(cf_submit(ex, square, (void *)(intptr_t)i, &fs[2 * i + 1]),
                     0);
  }
  int ok = 0, timed_out = 0, innocent_timed_out = 0, blamed = 0, wrong = 0;
  for (int i = 0; i < 2 * N; i++) {
    void *v;
    cf_error e;
    int rc = cf_future_result(fs[i], 30, &v);
    bool innocent = i % 2;
    if (rc == 0) {
      ok++;
      intptr_t x = i / 2;
      wrong += innocent && (intptr_t)v != x * x;
    } else {
      assert_int_equal(cf_future_exception(fs[i], 0, &e), 0);
      if (e.code == CF_ETIMEDOUT) {
        timed_out++;
        innocent_timed_out += innocent;
      } else {
        blamed++;
        print_message("# task %d (%s): %s\n", i, innocent ? "short" : "edge",
                      e.message);
      }
    }
    cf_future_unref(fs[i]);
  }
  print_message("# %d in time, %d timed out (%d short ones)\n", ok, timed_out,
                innocent_timed_out);
  cf_executor_free(ex);
  assert_int_equal(count_children(), 0);
  assert_int_equal(blamed, 0);
  assert_int_equal(wrong, 0);
  assert_true(innocent_timed_out <= N / 20);
  assert_int_equal(ok + timed_out, 2 * N);
}

static void test_max_tasks_per_child(void **state) {
  (void)state;
  cf_process_pool_opts o = {.max_workers = 2, .max_tasks_per_child = 1};
  cf_executor *ex;
  assert_int_equal(pool_new(&o, &ex), 0);
  enum { N = 100 };
  cf_future *fs[N];
  for (int i = 0; i < N; i++)
    assert_int_equal(cf_submit(ex, my_pid, NULL, &fs[i]), 0);
  pid_t pids[N];
  for (int i = 0; i < N; i++) {
    void *v;
    assert_int_equal(cf_future_result(fs[i], 60, &v), 0);
    pids[i] = (pid_t)(intptr_t)v;
    cf_future_unref(fs[i]);
  }
  for (int i = 0; i < N; i++) /* a fresh process for every task */
    for (int j = 0; j < i; j++)
      assert_int_not_equal(pids[i], pids[j]);
  cf_executor_free(ex);
  assert_int_equal(count_children(), 0);
}

static int init_fails(void *arg) {
  (void)arg;
  return CF_EINVAL;
}

static int init_marks(void *arg) {
  return *(int *)arg == 42 ? 0 : CF_EINVAL;
}

static void test_initializer(void **state) {
  (void)state;
  static int token = 42;
  cf_process_pool_opts o = {
      .max_workers = 2, .initializer = init_marks, .initarg = &token};
  cf_executor *ex;
  assert_int_equal(pool_new(&o, &ex), 0);
  cf_future *f;
  void *v;
  assert_int_equal(cf_submit(ex, square, (void *)(intptr_t)4, &f), 0);
  assert_int_equal(cf_future_result(f, 20, &v), 0);
  cf_future_unref(f);
  cf_executor_free(ex);

  o.initializer = init_fails;
  assert_int_equal(pool_new(&o, &ex), 0);
  int rc = cf_submit(ex, square, (void *)(intptr_t)4, &f);
  if (rc == 0) {
    assert_int_equal(cf_future_result(f, 20, &v), CF_EBROKEN);
    cf_future_unref(f);
  } else {
    assert_int_equal(rc, CF_EBROKEN);
  }
  double t0 = now_s();
  while ((rc = cf_submit(ex, square, NULL, &f)) == 0 && now_s() - t0 < 10) {
    assert_int_equal(cf_future_result(f, 20, &v), CF_EBROKEN);
    cf_future_unref(f);
  }
  assert_int_equal(rc, CF_EBROKEN);
  cf_executor_free(ex);
}

static double cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A pool broken by its initializer sits idle until freed: its manager
 * once polled the fork server's socket for POLLOUT (to ask for
 * replacements it never asked for), a full core until cf_executor_free. */
static int init_slow(void *arg) {
  usleep((useconds_t)(uintptr_t)arg);
  return 0;
}

/* The task timeout counts from the moment the task starts in its worker,
 * not from when it was sent: a slow initializer (0.6 s, with a 0.4 s
 * timeout) once made every first task time out, and every replacement
 * worker ran the initializer again, so no task ever completed. */
static void test_timeout_counts_from_task_start(void **state) {
  (void)state;
  alarm(30);
  cf_process_pool_opts o = {.max_workers = 1,
                            .task_timeout_s = 0.4,
                            .initializer = init_slow,
                            .initarg = (void *)(uintptr_t)600000};
  cf_executor *ex;
  assert_int_equal(pool_new(&o, &ex), 0);
  cf_future *f, *g, *h;
  void *v;
  /* 0.25 s of work, sent while the initializer runs */
  assert_int_equal(cf_submit(ex, slow, (void *)(intptr_t)250000, &f), 0);
  assert_int_equal(cf_submit(ex, square, (void *)(intptr_t)3, &g), 0);
  assert_int_equal(cf_submit(ex, hang, NULL, &h), 0); /* still times out */
  double t0 = now_s();
  assert_int_equal(cf_future_result(f, 10, &v), 0);
  assert_int_equal((intptr_t)v, 250000);
  assert_true(now_s() - t0 >= 0.6); /* after the initializer */
  assert_int_equal(cf_future_result(g, 10, &v), 0);
  assert_int_equal((intptr_t)v, 9);
  assert_int_equal(cf_future_result(h, 10, &v), CF_EFAILED);
  cf_error e;
  assert_int_equal(cf_future_exception(h, 0, &e), 0);
  assert_int_equal(e.code, CF_ETIMEDOUT);
  cf_future_unref(f);
  cf_future_unref(g);
  cf_future_unref(h);
  cf_executor_free(ex);
  assert_int_equal(count_children(), 0);
}

static void test_broken_pool_is_idle(void **state) {
  (void)state;
  alarm(30);
  cf_process_pool_opts o = {.max_workers = 2, .initializer = init_fails};
  cf_executor *ex;
  assert_int_equal(pool_new(&o, &ex), 0);
  cf_future *f;
  int rc;
  double t0 = now_s();
  while ((rc = cf_submit(ex, square, NULL, &f)) == 0 && now_s() - t0 < 10) {
    assert_int_equal(cf_future_result(f, 10, NULL), CF_EBROKEN);
    cf_future_unref(f);
    usleep(1000);
  }
  assert_int_equal(rc, CF_EBROKEN);
  usleep(50000); /* both workers' exit reports are in */
  double c0 = cpu_s();
  usleep(300000);
  double used = cpu_s() - c0;
  cf_executor_free(ex);
  assert_int_equal(count_children(), 0);
  assert_true(used < 0.05); /* spinning: ~0.3 s */
}

/* A worker of this process's pool (a child of our child, the fork server),
 * other than `other`; 0 if none. */
static pid_t find_worker(pid_t other) {
  pid_t found = 0;
  DIR *d = opendir("/proc");
  struct dirent *de;
  while ((de = readdir(d)) && !found) {
    pid_t pid = (pid_t)atoi(de->d_name);
    if (pid <= 0 || pid == other)
      continue;
    char path[300], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *fp = fopen(path, "r");
    if (!fp)
      continue;
    int ppid = 0, gp = 0;
    char st;
    if (fgets(buf, sizeof buf, fp)) {
      char *q = strrchr(buf, ')');
      if (q && sscanf(q + 2, "%c %d", &st, &ppid) == 2) {
        snprintf(path, sizeof path, "/proc/%d/stat", ppid);
        FILE *fp2 = fopen(path, "r");
        if (fp2 && fgets(buf, sizeof buf, fp2) && (q = strrchr(buf, ')')))
          sscanf(q + 2, "%c %d", &st, &gp);
        if (fp2)
          fclose(fp2);
      }
    }
    fclose(fp);
    if (gp == getpid())
      found = pid;
  }
  closedir(d);
  return found;
}

/* Blame is exact: tasks sent ahead to a worker that dies before starting
 * them (here killed in its initializer) go back to the queue; they were
 * blamed, the oldest failing with "killed by signal 9 while running". */
static void test_death_before_start_blames_no_task(void **state) {
  (void)state;
  alarm(30);
  cf_process_pool_opts o = {.max_workers = 1,
                            .initializer = init_slow,
                            .initarg = (void *)(uintptr_t)300000};
  cf_executor *ex;
  assert_int_equal(pool_new(&o, &ex), 0);
  cf_future *f, *g;
  assert_int_equal(cf_submit(ex, square, (void *)(intptr_t)2, &f), 0);
  assert_int_equal(cf_submit(ex, square, (void *)(intptr_t)3, &g), 0);
  double t0 = now_s();
  while (!(cf_future_running(f) && cf_future_running(g)) && now_s() - t0 < 10)
    usleep(1000); /* both sent to the worker, which is in its initializer */
  pid_t w = find_worker(0);
  assert_true(w > 0);
  assert_int_equal(kill(w, SIGKILL), 0);
  void *v;
  assert_int_equal(cf_future_result(f, 10, &v), 0);
  assert_int_equal((intptr_t)v, 4);
  assert_int_equal(cf_future_result(g, 10, &v), 0);
  assert_int_equal((intptr_t)v, 9);
  cf_future_unref(f);
  cf_future_unref(g);
  cf_executor_free(ex);
  assert_int_equal(count_children(), 0);
}

static int init_crashes(void *arg) {
  (void)arg;
  raise(SIGSEGV);
  return 0;
}

/* Workers that die before they can start any task (a crashing
 * initializer) break the pool after a few tries, with the cause, instead
 * of forking replacements for ever. */
static void test_initializer_crash_breaks_pool(void **state) {
  (void)state;
  alarm(30);
  cf_process_pool_opts o = {.max_workers = 2, .initializer = init_crashes};
  cf_executor *ex;
  assert_int_equal(pool_new(&o, &ex), 0);
  cf_future *f;
  int rc = cf_submit(ex, square, (void *)(intptr_t)2, &f);
  if (rc == 0) {
    assert_int_equal(cf_future_result(f, 10, NULL), CF_EBROKEN);
    cf_error e;
    assert_int_equal(cf_future_exception(f, 0, &e), 0);
    print_message("# %s\n", e.message);
    assert_non_null(strstr(e.message, "signal 11"));
    cf_future_unref(f);
  }
  double t0 = now_s();
  while ((rc = cf_submit(ex, square, NULL, &f)) == 0 && now_s() - t0 < 10) {
    assert_int_equal(cf_future_result(f, 10, NULL), CF_EBROKEN);
    cf_future_unref(f);
  }
  assert_int_equal(rc, CF_EBROKEN);
  cf_executor_free(ex);
  assert_int_equal(count_children(), 0);
}

/* The manager running out of descriptors (EMFILE in memfd_create, for an
 * input of 64 KiB) fails that task with CF_ESYS and says so; the worker,
 * healthy, is kept (it was cut off, and the task blamed on its "exit"). */
static void test_manager_out_of_fds(void **state) {
  (void)state;
  alarm(30);
  cf_executor *ex = new_pool(1);
  cf_future *f;
  void *v;
  assert_int_equal(cf_submit(ex, my_pid, NULL, &f), 0);
  assert_int_equal(cf_future_result(f, 10, &v), 0);
  pid_t worker = (pid_t)(intptr_t)v;
  cf_future_unref(f);
  size_t n = 100 * 1024;
  char *in = calloc(1, n);
  assert_non_null(in);
  struct rlimit old, low;
  assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
  low = old;
  low.rlim_cur = (rlim_t)count_fds() + 16;
  int held[64], nheld = 0;
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
  while (nheld < 64 && (held[nheld] = dup(0)) >= 0)
    nheld++;
  int rc = cf_process_pool_submit(ex, reverse, in, n, &f);
  int rrc = rc == 0 ? cf_future_result(f, 10, &v) : rc;
  cf_error e = {0};
  int erc = rc == 0 ? cf_future_exception(f, 0, &e) : rc;
  char msg[256] = "";
  if (e.message)
    snprintf(msg, sizeof msg, "%s", e.message);
  if (rc == 0)
    cf_future_unref(f);
  while (nheld > 0)
    close(held[--nheld]);
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
  print_message("# %s\n", msg);
  assert_int_equal(rc, 0);
  assert_int_equal(rrc, CF_EFAILED);
  assert_int_equal(erc, 0);
  assert_int_equal(e.code, CF_ESYS);
  assert_non_null(strstr(msg, "Too many open files"));
  /* the same worker serves the next tasks, big input included */
  assert_int_equal(cf_submit(ex, my_pid, NULL, &f), 0);
  assert_int_equal(cf_future_result(f, 10, &v), 0);
  assert_int_equal((pid_t)(intptr_t)v, worker);
  cf_future_unref(f);
  assert_int_equal(cf_process_pool_submit(ex, reverse, in, n, &f), 0);
  assert_int_equal(cf_future_result(f, 10, &v), 0);
  assert_int_equal(((cf_buf *)v)->len, n);
  cf_future_unref(f);
  free(in);
  cf_executor_free(ex);
}

/* A task that writes garbage into its worker's socket: the manager reads
 * a message of no known type. The task fails with CF_EBROKEN and a message
 * naming the protocol error (it used to "succeed" with a NULL result); the
 * worker is replaced and the pool goes on. */
/* Writes buf to every socket this process holds (in a worker: its
 * channel to the parent, wherever it sits). Returns how many. */
static int write_to_sockets(const void *buf, size_t n) {
  int count = 0;
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    int fd = atoi(de->d_name);
    struct stat st;
    if (de->d_name[0] == '.' || fd <= 2 || fd == dirfd(d) ||
        fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
      continue;
    count += write(fd, buf, n) == (ssize_t)n;
  }
  closedir(d);
  return count;
}

static int scribble(void *arg, void **out) {
  (void)arg;
  *out = (void *)(intptr_t)1;
  unsigned char junk[32] = {99, 0, 0, 0, 7};
  write_to_sockets(junk, sizeof junk);
  return 0;
}

static void test_protocol_error(void **state) {
  (void)state;
  alarm(30);
  cf_executor *ex = new_pool(1);
  cf_future *f;
  void *v;
  assert_int_equal(cf_submit(ex, scribble, NULL, &f), 0);
  assert_int_equal(cf_future_result(f, 10, &v), CF_EBROKEN);
  cf_error e;
  assert_int_equal(cf_future_exception(f, 0, &e), 0);
  print_message("# %s\n", e.message);
  assert_non_null(strstr(e.message, "protocol"));
  cf_future_unref(f);
  assert_int_equal(cf_submit(ex, square, (void *)(intptr_t)5, &f), 0);
  assert_int_equal(cf_future_result(f, 10, &v), 0);
  assert_int_equal((intptr_t)v, 25);
  cf_future_unref(f);
  cf_executor_free(ex);
  assert_int_equal(count_children(), 0);
}

static volatile sig_atomic_t terminal_signals;
static void count_signal(int sig) {
  (void)sig;
  terminal_signals++;
}

/* Runs in a child of the test, leader of its own process group: a pool,
 * a task running, then the terminal's signals sent to the whole group (as
 * Ctrl-C, Ctrl-\, Ctrl-Z or a hang-up would), which the host handles.
 * Returns 0, or the number of the check that failed. */
static int terminal_signals_child(void) {
  if (setpgid(0, 0) != 0)
    return 1;
  const int sigs[] = {SIGINT, SIGQUIT, SIGTSTP, SIGHUP};
  for (int k = 0; k < 4; k++) {
    struct sigaction sa = {.sa_handler = count_signal};
    sigaction(sigs[k], &sa, NULL);
  }
  cf_process_pool_opts o = {.max_workers = 1};
  cf_executor *ex;
  if (pool_new(&o, &ex) != 0)
    return 2;
  cf_future *f, *g;
  void *v;
  if (cf_submit(ex, slow, (void *)(intptr_t)300000, &f) != 0)
    return 3;
  double t0 = now_s();
  while (!cf_future_running(f) && now_s() - t0 < 10)
    usleep(1000);
  usleep(50000); /* the task runs in its worker */
  for (int k = 0; k < 4; k++)
    if (kill(0, sigs[k]) != 0)
      return 4;
  if (cf_future_result(f, 10, &v) != 0 || (intptr_t)v != 300000)
    return 5; /* the worker or the fork server died */
  cf_future_unref(f);
  if (cf_submit(ex, square, (void *)(intptr_t)7, &g) != 0)
    return 6;
  if (cf_future_result(g, 10, &v) != 0 || (intptr_t)v != 49)
    return 7;
  cf_future_unref(g);
  cf_executor_free(ex);
  return terminal_signals == 4 ? 0 : 8;
}

/* Ctrl-C goes to the whole foreground process group: the host handles it
 * and lives on, and so must its pool (the fork server, whose handlers are
 * reset to default, died of it; the running task failed and the pool was
 * broken for good). The fork server and workers ignore the terminal's
 * signals. */
static void test_terminal_signals(void **state) {
  (void)state;
  alarm(30);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0)
    _exit(terminal_signals_child());
  int st = 0;
  double t0 = now_s();
  pid_t r;
  while ((r = waitpid(child, &st, WNOHANG)) == 0 && now_s() - t0 < 20)
    usleep(10000);
  if (r == 0) {
    kill(-child, SIGKILL);
    waitpid(child, &st, 0);
    fail_msg("the child hung");
  }
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
}

/* The host forks a child that does not exec and lives on (3 s here): the
 * child held copies of the pool's sockets, so the workers and the fork
 * server never saw end-of-file and cf_executor_free waited for the child
 * to exit. The child now closes them at once (pthread_atfork). */
static void test_host_fork_does_not_hold_the_pool(void **state) {
  (void)state;
  alarm(30);
  cf_executor *ex = new_pool(2);
  cf_future *f;
  void *v;
  assert_int_equal(cf_submit(ex, square, (void *)(intptr_t)6, &f), 0);
  assert_int_equal(cf_future_result(f, 10, &v), 0);
  cf_future_unref(f);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    usleep(3000000);
    _exit(0);
  }
  /* the pool still works in the parent */
  assert_int_equal(cf_submit(ex, square, (void *)(intptr_t)7, &f), 0);
  assert_int_equal(cf_future_result(f, 10, &v), 0);
  assert_int_equal((intptr_t)v, 49);
  cf_future_unref(f);
  double t0 = now_s();
  cf_executor_free(ex);
  double took = now_s() - t0;
  kill(child, SIGKILL);
  int st;
  waitpid(child, &st, 0);
  print_message("# cf_executor_free took %.3f s\n", took);
  assert_true(took < 1.0);
  assert_int_equal(count_children(), 0);
}

static void test_shutdown(void **state) {
  (void)state;
  cf_executor *ex = new_pool(1);
  cf_future *fs[10];
  for (int i = 0; i < 10; i++)
    assert_int_equal(cf_submit(ex, slow, (void *)(intptr_t)20000, &fs[i]), 0);
  assert_int_equal(cf_executor_shutdown(ex, true, false), 0);
  for (int i = 0; i < 10; i++) {
    assert_int_equal(cf_future_result(fs[i], 0, NULL), 0);
    cf_future_unref(fs[i]);
  }
  cf_future *f;
  assert_int_equal(cf_submit(ex, square, NULL, &f), CF_ESHUTDOWN);
  cf_executor_free(ex);

  ex = new_pool(1);
  for (int i = 0; i < 10; i++)
    assert_int_equal(cf_submit(ex, slow, (void *)(intptr_t)50000, &fs[i]), 0);
  double t0 = now_s();
  while (!cf_future_running(fs[0]) && now_s() - t0 < 10)
    usleep(1000);
  assert_int_equal(cf_executor_shutdown(ex, true, true), 0);
  assert_int_equal(cf_future_result(fs[0], 0, NULL), 0); /* was running */
  int cancelled = 0;
  for (int i = 0; i < 10; i++) {
    cancelled += cf_future_cancelled(fs[i]);
    assert_true(cf_future_done(fs[i]));
    cf_future_unref(fs[i]);
  }
  assert_true(cancelled >= 8);
  cf_executor_free(ex);
  assert_int_equal(count_children(), 0);
}

/* A process pool made while a thread pool runs; futures of both mix. */
static int spin_a_bit(void *arg, void **out) {
  usleep(1000);
  *out = arg;
  return 0;
}

static void test_with_thread_pool(void **state) {
  (void)state;
  cf_executor *tp;
  assert_int_equal(cf_thread_pool_new(NULL, &tp), 0);
  cf_future *busy[8];
  for (int i = 0; i < 8; i++)
    assert_int_equal(cf_submit(tp, spin_a_bit, NULL, &busy[i]), 0);
  cf_executor *pp = new_pool(2);
  cf_future *fs[4];
  assert_int_equal(cf_submit(pp, square, (void *)(intptr_t)3, &fs[0]), 0);
  assert_int_equal(cf_submit(tp, spin_a_bit, (void *)(intptr_t)4, &fs[1]), 0);
  assert_int_equal(cf_submit(pp, square, (void *)(intptr_t)5, &fs[2]), 0);
  assert_int_equal(cf_submit(tp, spin_a_bit, (void *)(intptr_t)6, &fs[3]), 0);
  assert_int_equal(cf_wait(fs, 4, 20, CF_ALL_COMPLETED, NULL), 0);
  cf_as_completed *it;
  assert_int_equal(cf_as_completed_new(fs, 4, 20, &it), 0);
  int n = 0;
  cf_future *f;
  while (cf_as_completed_next(it, &f) == 0)
    n++;
  assert_int_equal(n, 4);
  cf_as_completed_free(it);
  void *v;
  assert_int_equal(cf_future_result(fs[2], 0, &v), 0);
  assert_int_equal((intptr_t)v, 25);
  for (int i = 0; i < 4; i++)
    cf_future_unref(fs[i]);
  for (int i = 0; i < 8; i++)
    cf_future_unref(busy[i]);
  cf_executor_free(pp);
  cf_executor_free(tp);
}

/* Map items travel as bytes, a chunk per message; each item reports its
 * own outcome, in input order. */
static int square_item(void *arg, void **out) {
  int64_t x;
  memcpy(&x, arg, sizeof x); /* arg points at the worker's copy */
  if (x % 50 == 7)
    return cf_fail(CF_EINVAL, "item %ld refused", (long)x);
  *out = (void *)(intptr_t)(x * x);
  return 0;
}

static void test_map_chunks(void **state) {
  (void)state;
  cf_executor *ex = new_pool(2);
  enum { N = 1000 };
  int64_t *xs = malloc(N * sizeof *xs); /* made after the pool: copied */
  for (int i = 0; i < N; i++)
    xs[i] = i;
  const size_t chunks[] = {1, 16, 1000};
  for (int c = 0; c < 3; c++) {
    cf_map_opts o = {.chunksize = chunks[c]};
    cf_map *m;
    assert_int_equal(cf_map_array(ex, square_item, xs, N, sizeof xs[0], &o, &m),
                     0);
    for (int64_t i = 0; i < N; i++) {
      void *v;
      int rc = cf_map_next(m, &v);
      if (i % 50 == 7) {
        assert_int_equal(rc, CF_EFAILED);
        cf_error e;
        assert_int_equal(cf_map_error(m, &e), 0);
        char want[64];
        snprintf(want, sizeof want, "item %ld refused", (long)i);
        assert_string_equal(e.message, want);
      } else {
        assert_int_equal(rc, 0);
        assert_int_equal((intptr_t)v, i * i);
      }
    }
    void *v;
    assert_int_equal(cf_map_next(m, &v), CF_EDONE);
    cf_map_free(m);
  }
  free(xs);
  cf_executor_free(ex);
}

/* Items that crash their worker in test_map_chunk_crash: the third of a
 * chunk of four, and spread over every position of chunks of 16 (79 is
 * the last of its chunk, 32 the first). */
static bool crashes(int64_t x, int64_t n) {
  return n == 4 ? x == 2 : x % 37 == 5 || x == 32;
}

/* arg: the item; n travels in the item's upper bits (x + n * 65536). */
static int count_square_or_crash(void *arg, void **out) {
  int64_t v, x, n;
  memcpy(&v, arg, sizeof v);
  x = v % 65536;
  n = v / 65536;
  atomic_fetch_add_explicit(&runs()[x], 1, memory_order_relaxed);
  if (crashes(x, n))
    raise(SIGSEGV);
  if (x % 50 == 7)
    return cf_fail(CF_EINVAL, "item %ld refused", (long)x);
  *out = (void *)(intptr_t)(x * x);
  return 0;
}

/* A worker that dies in the middle of a chunk: the items it finished keep
 * their results (and failures, with their messages), the one it was
 * running fails with the signal, and the ones it never started run once,
 * elsewhere or in its replacement. Item runs are counted: none twice. */
static void test_map_chunk_crash(void **state) {
  (void)state;
  const struct {
    size_t workers, n, chunk;
  } cases[] = {{1, 4, 4}, {2, 200, 16}, {1, 40, 16}};
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    size_t n = cases[c].n;
    assert_true(n <= RUNS_MAX);
    runs_reset();
    cf_executor *ex = new_pool(cases[c].workers);
    int64_t *xs = malloc(n * sizeof *xs);
    for (size_t i = 0; i < n; i++)
      xs[i] = (int64_t)i + (int64_t)n * 65536;
    cf_map_opts o = {.chunksize = cases[c].chunk};
    cf_map *m;
    assert_int_equal(
        cf_map_array(ex, count_square_or_crash, xs, n, sizeof xs[0], &o, &m),
        0);
    for (int64_t i = 0; i < (int64_t)n; i++) {
      void *v;
      int rc = cf_map_next(m, &v);
      cf_error e;
      if (crashes(i, (int64_t)n)) {
        assert_int_equal(rc, CF_EBROKEN);
        assert_int_equal(cf_map_error(m, &e), 0);
        assert_non_null(strstr(e.message, "killed by signal 11"));
        assert_non_null(strstr(e.message, "while running the task"));
      } else if (i % 50 == 7) {
        assert_int_equal(rc, CF_EFAILED);
        assert_int_equal(cf_map_error(m, &e), 0);
        char want[64];
        snprintf(want, sizeof want, "item %ld refused", (long)i);
        assert_string_equal(e.message, want);
      } else {
        if (rc != 0)
          fail_msg("case %zu item %ld: %s", c, (long)i, cf_err_name(rc));
        assert_int_equal((intptr_t)v, i * i);
      }
    }
    void *v;
    assert_int_equal(cf_map_next(m, &v), CF_EDONE);
    cf_map_free(m);
    cf_executor_free(ex);
    for (size_t i = 0; i < n; i++)
      if (atomic_load_explicit(&runs()[i], memory_order_relaxed) != 1)
        fail_msg("case %zu: item %zu ran %d times", c, i,
                 atomic_load_explicit(&runs()[i], memory_order_relaxed));
    free(xs);
  }
}

/* Item x: 1 sleeps 10 s; a negative one -x tenths of a second; the others
 * not at all. Returns x + 1. */
static int sleep_item(void *arg, void **out) {
  int64_t x;
  memcpy(&x, arg, sizeof x);
  atomic_fetch_add_explicit(&runs()[x < 0 ? -x : x], 1, memory_order_relaxed);
  usleep(x == 1 ? 10000000 : x < 0 ? (useconds_t)(-x) * 100000 : 0);
  *out = (void *)(intptr_t)(x + 1);
  return 0;
}

/* With a task timeout a chunk counts as one task: the item running when
 * the worker is killed fails with CF_ETIMEDOUT, the ones before keep their
 * results, the ones after run (once) in a chunk of their own. */
static void test_map_chunk_timeout(void **state) {
  (void)state;
  runs_reset();
  cf_process_pool_opts po = {.max_workers = 1, .task_timeout_s = 1.0};
  cf_executor *ex;
  assert_int_equal(cf_process_pool_new(&po, &ex), 0);
  /* 0 and 2 are quick, 1 sleeps 10 s: killed at 1 s; 3 takes 0.3 s */
  int64_t xs[4] = {0, 1, 2, -3};
  cf_map_opts o = {.chunksize = 4};
  cf_map *m;
  assert_int_equal(cf_map_array(ex, sleep_item, xs, 4, sizeof xs[0], &o, &m),
                   0);
  double t0 = now_s();
  void *v;
  assert_int_equal(cf_map_next(m, &v), 0);
  assert_int_equal((intptr_t)v, 1);
  assert_int_equal(cf_map_next(m, &v), CF_EFAILED);
  cf_error e;
  assert_int_equal(cf_map_error(m, &e), 0);
  assert_int_equal(e.code, CF_ETIMEDOUT);
  int rc = cf_map_next(m, &v);
  if (rc != 0 && cf_map_error(m, &e) == 0)
    fail_msg("item 2: %s: %s", cf_err_name(e.code), e.message);
  assert_int_equal((intptr_t)v, 3);
  assert_int_equal(cf_map_next(m, &v), 0);
  assert_int_equal((intptr_t)v, -2);
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  assert_true(now_s() - t0 < 8); /* not the 10 s sleep */
  cf_map_free(m);
  cf_executor_free(ex);
  for (int i = 0; i < 4; i++)
    assert_int_equal(atomic_load_explicit(&runs()[i], memory_order_relaxed), 1);
}

/* Byte tasks mapped in chunks: the sum of the squares of 1..10^7, which
 * does not fit in 64 bits, as 128-bit partial sums (16 bytes out per
 * range of 16 in). */
__extension__ typedef unsigned __int128 u128; /* GCC and Clang */

typedef struct range128 {
  uint64_t lo, hi; /* [lo, hi) */
} range128;

static int sum_squares(const void *in, size_t n, cf_buf *out) {
  range128 r;
  if (n != sizeof r)
    return cf_fail(CF_EINVAL, "item of %zu bytes", n);
  memcpy(&r, in, sizeof r);
  u128 s = 0;
  for (uint64_t i = r.lo; i < r.hi; i++)
    s += (u128)i * i;
  out->data = malloc(sizeof s);
  if (!out->data)
    return CF_ENOMEM;
  memcpy(out->data, &s, sizeof s);
  out->len = sizeof s;
  return 0;
}

/* Item x (an int64): counted in item_runs; 21 crashes its worker, x % 10
 * == 3 fails with a message; else the worker's pid (4 bytes) then x % 5
 * bytes of value x, or far more for 50 (100 kB: the reply goes in a
 * memfd) and 60 (2 MB: the worker's result area grows, then shrinks). */
static size_t bytes_item_len(int64_t x) {
  return x == 50 ? 100000 : x == 60 ? 2000000 : (size_t)(x % 5);
}

static int bytes_item(const void *in, size_t n, cf_buf *out) {
  int64_t x;
  if (n != sizeof x)
    return cf_fail(CF_EINVAL, "item of %zu bytes", n);
  memcpy(&x, in, sizeof x);
  atomic_fetch_add_explicit(&runs()[x], 1, memory_order_relaxed);
  if (x == 21)
    raise(SIGSEGV);
  if (x % 10 == 3)
    return cf_fail(CF_EINVAL, "item %ld refused", (long)x);
  size_t k = bytes_item_len(x);
  int32_t pid = (int32_t)getpid();
  out->data = malloc(sizeof pid + k);
  if (!out->data)
    return CF_ENOMEM;
  memcpy(out->data, &pid, sizeof pid);
  memset((char *)out->data + sizeof pid, (int)x, k);
  out->len = sizeof pid + k;
  return 0;
}

static void test_map_bytes(void **state) {
  (void)state;
  runs_reset();
  cf_executor *ex = new_pool(2);
  /* the sum of squares */
  enum { PARTS = 100 };
  const uint64_t top = 10000000;
  range128 parts[PARTS];
  for (uint64_t i = 0; i < PARTS; i++)
    parts[i] = (range128){1 + top * i / PARTS, 1 + top * (i + 1) / PARTS};
  cf_map_opts o = {.chunksize = 8};
  cf_map *m;
  assert_int_equal(cf_process_pool_map_bytes(ex, sum_squares, parts, PARTS,
                                             sizeof parts[0], &o, &m),
                   0);
  u128 total = 0, want = (u128)top * (top + 1) * (2 * top + 1) / 6;
  void *v;
  for (int i = 0; i < PARTS; i++) {
    assert_int_equal(cf_map_next(m, &v), 0);
    const cf_buf *b = v;
    assert_int_equal(b->len, sizeof total);
    /* the data is 16-byte aligned: a u128 can be read in place */
    assert_int_equal((uintptr_t)b->data % 16, 0);
    total += *(const u128 *)b->data;
  }
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  cf_map_free(m);
  assert_true(want > UINT64_MAX); /* what a cf_fn's value could not hold */
  assert_true(total == want);

  /* per-item outcomes, in input order, with chunksize honoured, a crash
   * in a chunk (item 21), outputs of every length */
  enum { N = 80, CHUNK = 8 };
  int64_t xs[N];
  for (int i = 0; i < N; i++)
    xs[i] = i;
  o.chunksize = CHUNK;
  assert_int_equal(
      cf_process_pool_map_bytes(ex, bytes_item, xs, N, sizeof xs[0], &o, &m),
      0);
  int32_t chunk_pid[N / CHUNK] = {0};
  for (int64_t i = 0; i < N; i++) {
    int rc = cf_map_next(m, &v);
    cf_error e;
    if (i == 21) {
      assert_int_equal(rc, CF_EBROKEN);
      assert_int_equal(cf_map_error(m, &e), 0);
      assert_non_null(strstr(e.message, "killed by signal 11"));
      continue;
    }
    if (i % 10 == 3) {
      assert_int_equal(rc, CF_EFAILED);
      assert_int_equal(cf_map_error(m, &e), 0);
      char msg[64];
      snprintf(msg, sizeof msg, "item %ld refused", (long)i);
      assert_string_equal(e.message, msg);
      continue;
    }
    if (rc != 0)
      fail_msg("item %ld: %s", (long)i, cf_err_name(rc));
    const cf_buf *b = v;
    size_t k = bytes_item_len(i);
    assert_int_equal(b->len, sizeof(int32_t) + k);
    const unsigned char *d = b->data;
    for (size_t j = 0; j < k; j++)
      if (d[sizeof(int32_t) + j] != (unsigned char)i)
        fail_msg("item %ld: byte %zu is %d", (long)i, j,
                 d[sizeof(int32_t) + j]);
    /* a chunk runs in one worker: its items' pids agree (but for the
     * items after the crash, which ran in another chunk) */
    int32_t pid;
    memcpy(&pid, d, sizeof pid);
    if (i / CHUNK == 21 / CHUNK && i > 21)
      continue;
    if (!chunk_pid[i / CHUNK])
      chunk_pid[i / CHUNK] = pid;
    assert_int_equal(pid, chunk_pid[i / CHUNK]);
  }
  assert_int_equal(cf_map_next(m, &v), CF_EDONE);
  cf_map_free(m);
  for (int i = 0; i < N; i++)
    if (atomic_load_explicit(&runs()[i], memory_order_relaxed) != 1)
      fail_msg("item %d ran %d times", i,
               atomic_load_explicit(&runs()[i], memory_order_relaxed));

  /* bad arguments */
  cf_map_opts with_destroy = {.result_destroy = free};
  m = (cf_map *)&o; /* not left as it was */
  assert_int_equal(cf_process_pool_map_bytes(ex, bytes_item, xs, N,
                                             sizeof xs[0], &with_destroy, &m),
                   CF_EINVAL);
  assert_null(m);
  assert_int_equal(
      cf_process_pool_map_bytes(ex, NULL, xs, N, sizeof xs[0], NULL, &m),
      CF_EINVAL);
  assert_int_equal(
      cf_process_pool_map_bytes(ex, bytes_item, xs, N, 0, NULL, &m), CF_EINVAL);
  cf_executor *tp;
  assert_int_equal(cf_thread_pool_new(NULL, &tp), 0);
  assert_int_equal(
      cf_process_pool_map_bytes(tp, bytes_item, xs, N, sizeof xs[0], NULL, &m),
      CF_EINVAL);
  assert_null(m);
  cf_executor_free(tp);
  cf_executor_free(ex);
}

/* The descriptors a worker holds above stderr (bytes task): two counts,
 * all of them and those that are the pool's own (a socket, or the memfd
 * of the worker's result area). */
static int worker_fds(const void *in, size_t n, cf_buf *out) {
  (void)in;
  (void)n;
  int *count = calloc(2, sizeof *count);
  if (!count)
    return CF_ENOMEM;
  DIR *d = opendir("/proc/self/fd");
  if (!d) {
    free(count);
    return cf_fail(CF_ESYS, "opendir");
  }
  struct dirent *de;
  while ((de = readdir(d))) {
    int fd = atoi(de->d_name);
    if (de->d_name[0] == '.' || fd <= 2 || fd == dirfd(d))
      continue;
    char path[64], target[256] = "";
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t k = readlink(path, target, sizeof target - 1);
    if (k > 0)
      target[k] = 0;
    count[0]++;
    count[1] += strncmp(target, "socket:", 7) == 0 ||
                strncmp(target, "/memfd:cfutures-results", 23) == 0 ||
                strcmp(target, "anon_inode:[eventfd]") == 0;
  }
  closedir(d);
  out->data = count;
  out->len = 2 * sizeof *count;
  return 0;
}

/* No descriptor of the parent leaks into a worker: not one opened without
 * O_CLOEXEC, not another pool's. A worker holds its socket, its result
 * area and its pool's bell (the manager's eventfd) alone. */
static void test_no_fd_leaks_into_workers(void **state) {
  (void)state;
  int fds0 = count_fds();
  int leaky[2];
  assert_int_equal(pipe(leaky), 0); /* no O_CLOEXEC */
  cf_executor *other = new_pool(1);
  cf_executor *ex = new_pool(2);
  for (int round = 0; round < 2; round++) {
    cf_future *f;
    void *v;
    assert_int_equal(cf_process_pool_submit(ex, worker_fds, NULL, 0, &f), 0);
    assert_int_equal(cf_future_result(f, 20, &v), 0);
    cf_buf *b = v;
    assert_int_equal(b->len, 2 * sizeof(int));
    assert_int_equal(((int *)b->data)[0], 3);
    assert_int_equal(((int *)b->data)[1], 3);
    cf_future_unref(f);
    /* a replacement worker too */
    assert_int_equal(cf_submit(ex, crash, NULL, &f), 0);
    assert_int_equal(cf_future_result(f, 20, &v), CF_EBROKEN);
    cf_future_unref(f);
  }
  cf_executor_free(ex);
  cf_executor_free(other);
  close(leaky[0]);
  close(leaky[1]);
  assert_int_equal(count_fds(), fds0);
  assert_int_equal(count_children(), 0);
}

/* The fork server killed from outside: the pool breaks instead of hanging.
 * The running task and later submits fail with CF_EBROKEN; the workers die
 * with the server; nothing stays open. */
static void test_fork_server_killed(void **state) {
  (void)state;
  int fds0 = count_fds();
  cf_executor *ex = new_pool(1);
  cf_future *h, *f;
  assert_int_equal(cf_submit(ex, hang, NULL, &h), 0);
  double t0 = now_s();
  while (!cf_future_running(h) && now_s() - t0 < 10)
    usleep(1000);
  pid_t server = 0;
  assert_int_equal(list_children(&server), 1); /* the server is our child */
  assert_int_equal(kill(server, SIGKILL), 0);
  assert_int_equal(cf_future_result(h, 20, NULL), CF_EBROKEN);
  cf_error e;
  assert_int_equal(cf_future_exception(h, 0, &e), 0);
  assert_non_null(strstr(e.message, "fork server"));
  cf_future_unref(h);
  assert_int_equal(cf_submit(ex, square, NULL, &f), CF_EBROKEN);
  assert_null(f);
  cf_executor_free(ex);
  assert_int_equal(count_fds(), fds0);
  assert_int_equal(count_children(), 0);
}

/* PR_SET_PDEATHSIG follows the forking thread: a pool made by a thread
 * that then ends must keep working (and keep replacing workers). */
static void *make_pool(void *arg) {
  cf_process_pool_opts o = {.max_workers = 1};
  cf_executor **ex = arg;
  if (cf_process_pool_new(&o, ex) != 0)
    *ex = NULL;
  return NULL;
}

static void test_pool_outlives_its_creator_thread(void **state) {
  (void)state;
  cf_executor *ex = NULL;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, make_pool, &ex), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_non_null(ex);
  usleep(50000); /* a death signal, if any, has arrived by now */
  cf_future *f;
  void *v;
  assert_int_equal(cf_submit(ex, crash, NULL, &f), 0);
  assert_int_equal(cf_future_result(f, 20, &v), CF_EBROKEN);
  cf_error e;
  assert_int_equal(cf_future_exception(f, 0, &e), 0);
  assert_non_null(strstr(e.message, "signal 11"));
  cf_future_unref(f);
  for (intptr_t i = 0; i < 5; i++) { /* on the replacement */
    assert_int_equal(cf_submit(ex, square, (void *)i, &f), 0);
    assert_int_equal(cf_future_result(f, 20, &v), 0);
    assert_int_equal((intptr_t)v, i * i);
    cf_future_unref(f);
  }
  cf_executor_free(ex);
  assert_int_equal(count_children(), 0);
}

/* A host that ignores SIGCHLD still gets its workers' deaths reported. */
static void test_sigchld_ignored_by_host(void **state) {
  (void)state;
  struct sigaction ign = {.sa_handler = SIG_IGN}, old;
  assert_int_equal(sigaction(SIGCHLD, &ign, &old), 0);
  cf_executor *ex = new_pool(1);
  cf_future *f;
  void *v;
  assert_int_equal(cf_submit(ex, do_exit, (void *)(intptr_t)5, &f), 0);
  int rc = cf_future_result(f, 20, &v);
  cf_error e = {0};
  int erc = cf_future_exception(f, 0, &e);
  bool named = e.message && strstr(e.message, "exited with status 5");
  cf_future_unref(f);
  assert_int_equal(cf_submit(ex, square, (void *)(intptr_t)6, &f), 0);
  int rc2 = cf_future_result(f, 20, &v);
  cf_future_unref(f);
  cf_executor_free(ex);
  sigaction(SIGCHLD, &old, NULL);
  assert_int_equal(rc, CF_EBROKEN);
  assert_int_equal(erc, 0);
  assert_true(named);
  assert_int_equal(rc2, 0);
  assert_int_equal((intptr_t)v, 36);
}

/* CPU seconds used by process `pid` (user + system), from /proc. */
static double proc_cpu_s(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  double s = 0;
  if (fgets(buf, sizeof buf, f)) {
    char *q = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime */
    if (q &&
        sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &ut, &st) == 2)
      s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
  }
  fclose(f);
  return s;
}

/* A pool whose fork server is told (test-only CF__TEST_FAIL_FORK, read
 * when the pool is made) to fail forks of workers with EAGAIN. */
static cf_executor *new_pool_failing_forks(size_t workers, const char *how) {
  setenv("CF__TEST_FAIL_FORK", how, 1);
  cf_executor *ex = new_pool(workers);
  unsetenv("CF__TEST_FAIL_FORK");
  return ex;
}

/* fork() failing in the fork server for good (RLIMIT_NPROC, a container's
 * pids.max): futures never completed while the manager and the server
 * spun both CPUs, asking for and failing forks. The pool now retries with
 * a growing delay and, with no live worker after a few seconds, fails the
 * waiting futures with CF_ESYS naming fork's errno; it never spins. A
 * pool that got one worker before forks began to fail (`one`, alongside)
 * serves on past that time, retrying the other slot slowly. */
static void test_fork_always_fails(void **state) {
  (void)state;
  alarm(30);
  cf_executor *ex = new_pool_failing_forks(2, "always");
  pid_t server = 0;
  assert_int_equal(list_children(&server), 1);
  cf_executor *one = new_pool_failing_forks(2, "1+always");
  double t0 = now_s(), c0 = cpu_s(), s0 = proc_cpu_s(server);
  cf_future *fs[3];
  for (intptr_t i = 0; i < 3; i++)
    assert_int_equal(cf_submit(ex, square, (void *)i, &fs[i]), 0);
  int rcs[3];
  for (int i = 0; i < 3; i++)
    rcs[i] = cf_future_result(fs[i], 8, NULL);
  double wall = now_s() - t0;
  double cpu = cpu_s() - c0, server_cpu = proc_cpu_s(server) - s0;
  print_message("# failed after %.2f s; CPU: this process %.3f s, the fork "
                "server %.3f s\n",
                wall, cpu, server_cpu);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(rcs[i], CF_EFAILED);
    cf_error e;
    assert_int_equal(cf_future_exception(fs[i], 0, &e), 0);
    assert_int_equal(e.code, CF_ESYS);
    if (i == 0)
      print_message("# %s\n", e.message);
    char want[128];
    snprintf(want, sizeof want, "fork of a worker failed: %s",
             strerror(EAGAIN));
    assert_non_null(strstr(e.message, want));
    cf_future_unref(fs[i]);
  }
  assert_true(wall < 6);
  assert_true(cpu < 0.3 * wall);
  assert_true(server_cpu < 0.3 * wall);
  /* Still no worker: a later task fails without the wait. */
  cf_future *f;
  assert_int_equal(cf_submit(ex, square, NULL, &f), 0);
  t0 = now_s();
  assert_int_equal(cf_future_result(f, 8, NULL), CF_EFAILED);
  assert_true(now_s() - t0 < 1);
  cf_future_unref(f);
  cf_executor_free(ex);
  /* `one` was made as long ago as ex gave up, and more: it serves. */
  usleep(200000);
  cf_future *gs[10];
  for (intptr_t i = 0; i < 10; i++)
    assert_int_equal(cf_submit(one, square, (void *)i, &gs[i]), 0);
  for (intptr_t i = 0; i < 10; i++) {
    void *v;
    assert_int_equal(cf_future_result(gs[i], 10, &v), 0);
    assert_int_equal((intptr_t)v, i * i);
    cf_future_unref(gs[i]);
  }
  cf_executor_free(one);
  assert_int_equal(count_children(), 0);
}

/* The first forks fail, then they work again: retried, every task
 * completes. */
static void test_fork_fails_then_recovers(void **state) {
  (void)state;
  alarm(30);
  cf_executor *ex = new_pool_failing_forks(2, "7");
  cf_future *fs[20];
  for (intptr_t i = 0; i < 20; i++)
    assert_int_equal(cf_submit(ex, square, (void *)i, &fs[i]), 0);
  for (intptr_t i = 0; i < 20; i++) {
    void *v;
    assert_int_equal(cf_future_result(fs[i], 10, &v), 0);
    assert_int_equal((intptr_t)v, i * i);
    cf_future_unref(fs[i]);
  }
  cf_executor_free(ex);
  assert_int_equal(count_children(), 0);
}

/* A task that forks a helper process (living `arg` microseconds): the
 * helper keeps a copy of the worker's socket, so end-of-file never comes
 * when the worker dies. Returns the helper's pid. */
static int fork_helper(void *arg, void **out) {
  pid_t pid = fork();
  if (pid == 0) {
    usleep((useconds_t)(intptr_t)arg);
    _exit(0);
  }
  *out = (void *)(intptr_t)pid;
  return pid > 0 ? 0 : cf_fail(CF_ESYS, "fork");
}

static int fork_helper_and_hang(void *arg, void **out) {
  int rc = fork_helper(arg, out);
  if (rc == 0)
    sleep(3600); /* killed at its timeout */
  return rc;
}

/* The manager learnt of a worker's death from end-of-file on its socket,
 * and read the socket to its end when the exit report came: a helper
 * forked by a task, holding the socket, froze the whole pool (every task,
 * every timeout, cf_executor_free) until the helper exited. Death is now
 * known from the fork server's exit report alone. Here helpers live 3 s;
 * the worker retires after its task (max_tasks_per_child = 1), or is
 * killed at its timeout. */
static void test_helper_holds_worker_socket(void **state) {
  (void)state;
  alarm(30);
  pid_t helpers[2] = {0, 0};
  for (int round = 0; round < 2; round++) {
    cf_process_pool_opts o = {.max_workers = 2};
    if (round == 0)
      o.max_tasks_per_child = 1;
    else
      o.task_timeout_s = 0.2;
    cf_executor *ex;
    assert_int_equal(pool_new(&o, &ex), 0);
    cf_future *h, *fs[6];
    void *v;
    double t0 = now_s();
    assert_int_equal(cf_submit(ex, round ? fork_helper_and_hang : fork_helper,
                               (void *)(intptr_t)3000000, &h),
                     0);
    int hrc = cf_future_result(h, 10, &v);
    if (hrc == 0)
      helpers[round] = (pid_t)(intptr_t)v;
    for (intptr_t i = 0; i < 6; i++)
      assert_int_equal(cf_submit(ex, square, (void *)i, &fs[i]), 0);
    int rcs[6];
    for (intptr_t i = 0; i < 6; i++)
      rcs[i] = cf_future_result(fs[i], 10, &v);
    double tasks = now_s() - t0;
    double t1 = now_s();
    cf_executor_free(ex);
    double freed = now_s() - t1;
    cf_error e = {0};
    if (round == 1)
      assert_int_equal(cf_future_exception(h, 0, &e), 0);
    print_message("# %s: tasks done in %.3f s, cf_executor_free took %.3f s\n",
                  round ? "timeout" : "max_tasks_per_child", tasks, freed);
    cf_future_unref(h);
    for (int i = 0; i < 6; i++) {
      assert_int_equal(rcs[i], 0);
      cf_future_unref(fs[i]);
    }
    assert_int_equal(hrc, round ? CF_EFAILED : 0);
    if (round == 1)
      assert_int_equal(e.code, CF_ETIMEDOUT);
    assert_true(tasks < 1.5);
    assert_true(freed < 1.0);
    assert_int_equal(count_children(), 0);
  }
  for (int i = 0; i < 2; i++)
    if (helpers[i] > 0)
      kill(helpers[i], SIGKILL); /* not our child: init reaps it */
}

/* A fake message header in the layout the pool used before its frames
 * carried a magic number: a result of 60000 bytes (below 64 KiB, which
 * would have been refused at once), then a little text. The manager read
 * the header and blocked for ever waiting for the payload. */
static int fake_header(void *arg, void **out) {
  (void)arg;
  struct {
    uint32_t type, kind;
    uint64_t fn;
    int32_t code;
    uint32_t flags;
    uint64_t len;
  } h = {.type = 2, .kind = 1, .len = 60000};
  char buf[sizeof h + 16];
  memcpy(buf, &h, sizeof h);
  memcpy(buf + sizeof h, "garbage garbage\n", 16);
  *out = (void *)(intptr_t)write_to_sockets(buf, sizeof buf);
  return 0;
}

/* A few bytes of text, less than a header, then the task goes on for a
 * while: the manager waited for the rest of the header, holding up the
 * pool as long as the task ran. */
static int short_garbage(void *arg, void **out) {
  write_to_sockets("oops!\n", 6);
  usleep((useconds_t)(intptr_t)arg);
  *out = arg;
  return 0;
}

static void check_protocol_error(cf_future *f, double within) {
  double t0 = now_s();
  int rc = cf_future_result(f, within, NULL);
  double took = now_s() - t0;
  cf_error e = {0};
  if (rc != CF_ETIMEDOUT)
    assert_int_equal(cf_future_exception(f, 0, &e), 0);
  print_message("# %.3f s: %s\n", took, e.message ? e.message : "(none)");
  assert_int_equal(rc, CF_EBROKEN);
  assert_non_null(strstr(e.message, "protocol error"));
}

/* Garbage written by a task into its worker's socket: the worker is killed
 * and its task fails with a protocol error, at once; the pool never blocks
 * on it and every other task completes. */
static void test_garbage_on_worker_socket(void **state) {
  (void)state;
  alarm(30);
  cf_executor *ex = new_pool(2);
  cf_future *g, *s, *fs[6];
  void *v;
  assert_int_equal(cf_submit(ex, fake_header, NULL, &g), 0);
  check_protocol_error(g, 5);
  cf_future_unref(g);
  /* A task holding its worker for 60 s after writing less than a header:
   * found out long before it ends (within 10 s, however slow the build);
   * meanwhile the other worker serves. */
  assert_int_equal(cf_submit(ex, short_garbage, (void *)(intptr_t)60000000, &s),
                   0);
  double t0 = now_s();
  while (!cf_future_running(s) && now_s() - t0 < 10)
    usleep(1000);
  for (intptr_t i = 0; i < 6; i++)
    assert_int_equal(cf_submit(ex, square, (void *)i, &fs[i]), 0);
  for (intptr_t i = 0; i < 6; i++) {
    assert_int_equal(cf_future_result(fs[i], 10, &v), 0);
    assert_int_equal((intptr_t)v, i * i);
    cf_future_unref(fs[i]);
  }
  check_protocol_error(s, 10);
  cf_future_unref(s);
  assert_int_equal(cf_submit(ex, square, (void *)(intptr_t)9, &g), 0);
  assert_int_equal(cf_future_result(g, 10, &v), 0);
  assert_int_equal((intptr_t)v, 81);
  cf_future_unref(g);
  cf_executor_free(ex);
  assert_int_equal(count_children(), 0);
}

/* Writes a line to every descriptor from 3 to 63 that is open, as a task
 * would to a log file the host opened before the pool (the fork server
 * closes inherited descriptors, so the numbers are free in a worker).
 * Returns how many writes went through. */
static int write_low_fds(void *arg, void **out) {
  (void)arg;
  int n = 0;
  for (int fd = 3; fd < 64; fd++)
    n += write(fd, "log: hello\n", 11) == 11;
  *out = (void *)(intptr_t)n;
  return 0;
}

/* The worker's socket sat on the lowest free descriptor number, one that
 * the host's own descriptors (a log file opened before the pool) use in
 * the parent: a task writing to such a number wrote into the pool's
 * socket. The socket now sits high (from 512 where the limit allows):
 * the writes fail with EBADF and the task succeeds. */
static void test_task_writes_to_low_fds(void **state) {
  (void)state;
  alarm(30);
  cf_executor *ex = new_pool(1);
  for (int i = 0; i < 2; i++) {
    cf_future *f;
    void *v;
    assert_int_equal(cf_submit(ex, write_low_fds, NULL, &f), 0);
    assert_int_equal(cf_future_result(f, 10, &v), 0);
    assert_int_equal((intptr_t)v, 0);
    cf_future_unref(f);
  }
  cf_executor_free(ex);
  assert_int_equal(count_children(), 0);
}

/* Done-callbacks run in the parent, on the pool's manager thread, which
 * cannot wait for its own pool to shut down. */
typedef struct cb_seen {
  pid_t pid;
  pthread_t thread;
  int shutdown_wait_rc;
  cf_executor *ex;
  _Atomic int calls;
} cb_seen;

static int record_cb(cf_future *f, void *arg) {
  (void)f;
  cb_seen *s = arg;
  s->pid = getpid();
  s->thread = pthread_self();
  s->shutdown_wait_rc = cf_executor_shutdown(s->ex, true, false);
  atomic_fetch_add_explicit(&s->calls, 1, memory_order_release);
  return 0;
}

static void test_callbacks_in_parent(void **state) {
  (void)state;
  cf_executor *ex = new_pool(1);
  cb_seen s = {.ex = ex, .shutdown_wait_rc = 1};
  cf_future *f;
  assert_int_equal(cf_submit(ex, slow, (void *)(intptr_t)20000, &f), 0);
  assert_int_equal(cf_future_add_done_callback(f, record_cb, &s), 0);
  assert_int_equal(cf_future_result(f, 20, NULL), 0);
  double t0 = now_s(); /* the callback may still be running */
  while (atomic_load_explicit(&s.calls, memory_order_acquire) == 0 &&
         now_s() - t0 < 20)
    usleep(1000);
  assert_int_equal(atomic_load(&s.calls), 1);
  assert_int_equal(s.pid, getpid());
  assert_false(pthread_equal(s.thread, pthread_self()));
  assert_int_equal(s.shutdown_wait_rc, CF_EDEADLK);
  /* the refused shutdown changed nothing */
  void *v;
  cf_future_unref(f);
  assert_int_equal(cf_submit(ex, square, (void *)(intptr_t)7, &f), 0);
  assert_int_equal(cf_future_result(f, 20, &v), 0);
  assert_int_equal((intptr_t)v, 49);
  cf_future_unref(f);
  cf_executor_free(ex);
}

/* A worker that stops reading its socket (stopped here; a task could
 * also fill or shrink its buffers) must not freeze the pool: the manager
 * never waits to send. The manager's socket buffers are made as small as
 * the kernel allows, so that a ~60 KB message cannot go at once. */
static int stop_self(void *arg, void **out) {
  (void)arg;
  raise(SIGSTOP);
  *out = (void *)(intptr_t)getpid();
  return 0;
}

static int pid_after_nap(void *arg, void **out) {
  (void)arg;
  usleep(50000);
  *out = (void *)(intptr_t)getpid();
  return 0;
}

static int length_of(const void *in, size_t n, cf_buf *out) {
  (void)in;
  out->data = malloc(sizeof(uint64_t));
  if (!out->data)
    return CF_ENOMEM;
  uint64_t v = n;
  memcpy(out->data, &v, sizeof v);
  out->len = sizeof v;
  return 0;
}

static char proc_state(pid_t pid) {
  char path[64], buf[512], st = '?';
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (f && fgets(buf, sizeof buf, f)) {
    char *p = strrchr(buf, ')');
    if (p)
      st = p[2];
  }
  if (f)
    fclose(f);
  return st;
}

static void test_stopped_worker_does_not_freeze_the_pool(void **state) {
  (void)state;
  cf_executor *ex = new_pool(2);
  /* both workers up (their sockets exist) */
  pid_t pids[2] = {0, 0};
  for (int k = 0; k < 20 && !(pids[0] && pids[1]); k++) {
    cf_future *f[2];
    for (int j = 0; j < 2; j++)
      assert_int_equal(cf_submit(ex, pid_after_nap, NULL, &f[j]), 0);
    for (int j = 0; j < 2; j++) {
      void *v;
      assert_int_equal(cf_future_result(f[j], 20, &v), 0);
      pid_t pid = (pid_t)(intptr_t)v;
      if (pid != pids[0])
        pids[pids[0] ? 1 : 0] = pid;
      cf_future_unref(f[j]);
    }
  }
  assert_true(pids[0] && pids[1] && pids[0] != pids[1]);
  /* shrink the send buffers of our sockets: the pool's */
  DIR *d = opendir("/proc/self/fd");
  struct dirent *de;
  int shrunk = 0;
  while ((de = readdir(d))) {
    int fd = atoi(de->d_name);
    int type = 0, domain = 0, one = 1;
    socklen_t len = sizeof type;
    if (fd > 2 && getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
        (len = sizeof domain,
         getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0) &&
        domain == AF_UNIX && type == SOCK_STREAM &&
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &one, sizeof one) == 0)
      shrunk++;
  }
  closedir(d);
  assert_true(shrunk >= 2);
  cf_future *stopper;
  assert_int_equal(cf_submit(ex, stop_self, NULL, &stopper), 0);
  pid_t stopped = 0;
  double t0 = now_s();
  while (!stopped && now_s() - t0 < 20) {
    for (int k = 0; k < 2; k++)
      if (proc_state(pids[k]) == 'T')
        stopped = pids[k];
    usleep(1000);
  }
  assert_true(stopped > 0);
  enum { N = 8, SIZE = 60000 };
  char *in = calloc(1, SIZE);
  assert_non_null(in);
  cf_future *fs[N];
  for (int k = 0; k < N; k++)
    assert_int_equal(cf_process_pool_submit(ex, length_of, in, SIZE, &fs[k]),
                     0);
  /* all but (at most) the one sent to the stopped worker complete */
  int done = 0;
  t0 = now_s();
  while (done < N - 1 && now_s() - t0 < 20) {
    done = 0;
    for (int k = 0; k < N; k++)
      done += cf_future_done(fs[k]);
    usleep(1000);
  }
  print_message("# %d of %d done while a worker is stopped\n", done, N);
  assert_true(done >= N - 1);
  kill(stopped, SIGCONT);
  void *v;
  assert_int_equal(cf_future_result(stopper, 20, &v), 0);
  assert_int_equal((pid_t)(intptr_t)v, stopped);
  cf_future_unref(stopper);
  for (int k = 0; k < N; k++) {
    assert_int_equal(cf_future_result(fs[k], 20, &v), 0);
    uint64_t got;
    memcpy(&got, ((cf_buf *)v)->data, sizeof got);
    assert_int_equal(got, SIZE);
    cf_future_unref(fs[k]);
  }
  free(in);
  cf_executor_free(ex);
  assert_int_equal(count_children(), 0);
}

/* result_destroy on a chunked value map: run once for every item that ran
 * and succeeded, whether cf_map_next handed it out or the map was freed
 * first (chunks that had not started are cancelled then); never for a
 * failed item. */
static _Atomic int destroyed;
static void count_destroy(void *v) {
  (void)v;
  atomic_fetch_add(&destroyed, 1);
}

static int fails_on_sevens(void *arg, void **out) {
  int64_t x;
  memcpy(&x, arg, sizeof x);
  atomic_fetch_add_explicit(&runs()[x], 1, memory_order_relaxed);
  if (x % 7 == 3)
    return cf_fail(CF_EINVAL, "item %ld refused", (long)x);
  *out = (void *)(intptr_t)(x + 1);
  return 0;
}

static void test_map_chunk_destroy(void **state) {
  (void)state;
  runs_reset();
  cf_executor *ex = new_pool(2);
  enum { N = 100, TAKEN = 35 };
  int64_t xs[N];
  for (int i = 0; i < N; i++)
    xs[i] = i;
  atomic_store(&destroyed, 0);
  cf_map_opts o = {.chunksize = 10, .result_destroy = count_destroy};
  cf_map *m;
  assert_int_equal(
      cf_map_array(ex, fails_on_sevens, xs, N, sizeof xs[0], &o, &m), 0);
  for (int i = 0; i < TAKEN; i++) {
    void *v;
    int rc = cf_map_next(m, &v);
    cf_error e;
    assert_int_equal(cf_map_error(m, &e), 0);
    if (i % 7 == 3) {
      assert_int_equal(rc, CF_EFAILED);
      assert_int_equal(e.code, CF_EINVAL);
      char want[40];
      snprintf(want, sizeof want, "item %d refused", i);
      assert_string_equal(e.message, want);
    } else {
      assert_int_equal(rc, 0);
      assert_int_equal((intptr_t)v, i + 1);
      assert_int_equal(e.code, 0);
    }
  }
  cf_map_free(m); /* waits for the chunks that run */
  int ok = 0;
  for (int i = 0; i < N; i++) {
    int r = atomic_load_explicit(&runs()[i], memory_order_relaxed);
    assert_true(r <= 1);
    assert_true(r == 1 || i >= TAKEN);
    ok += r == 1 && i % 7 != 3;
  }
  /* the last reference to a chunk may be the manager's, dropped just
   * after the chunk completed: its values are destroyed there */
  double t0 = now_s();
  while (atomic_load(&destroyed) < ok && now_s() - t0 < 10)
    usleep(1000);
  assert_int_equal(atomic_load(&destroyed), ok);
  cf_executor_free(ex);
}

/* Big inputs and results travel through memfds the pool recycles (warm
 * input buffers, spares lent to workers for their results): a result held
 * by its future must never be written again while later tasks reuse
 * buffers, and every byte must come back as sent. */
static int negate_bytes(const void *in, size_t n, cf_buf *out) {
  out->data = malloc(n);
  if (!out->data)
    return CF_ENOMEM;
  for (size_t i = 0; i < n; i++)
    ((unsigned char *)out->data)[i] =
        (unsigned char)~((const unsigned char *)in)[i];
  out->len = n;
  return 0;
}

static void fill(unsigned char *b, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    b[i] = (unsigned char)(seed * 131 + i * 7 + (i >> 12));
}

static bool negated(const cf_buf *r, size_t n, unsigned seed) {
  if (r->len != n)
    return false;
  const unsigned char *d = r->data;
  for (size_t i = 0; i < n; i++)
    if (d[i] != (unsigned char)~(unsigned char)(seed * 131 + i * 7 + (i >> 12)))
      return false;
  return true;
}

static void test_recycled_buffers_keep_results(void **state) {
  (void)state;
  cf_executor *ex = new_pool(2);
  enum { HELD = 6, ROUNDS = 4 };
  size_t sizes[] = {2u << 20, 1u << 20, 3u << 20, 200000, 2u << 20, 5u << 20};
  unsigned char *in = malloc(5u << 20);
  assert_non_null(in);
  for (unsigned round = 0; round < ROUNDS; round++) {
    cf_future *held[HELD];
    for (unsigned k = 0; k < HELD; k++) {
      fill(in, sizes[k], round * 10 + k);
      assert_int_equal(
          cf_process_pool_submit(ex, negate_bytes, in, sizes[k], &held[k]), 0);
    }
    for (unsigned k = 0; k < HELD; k++)
      assert_int_equal(cf_future_result(held[k], 30, NULL), 0);
    /* more big tasks while the results above are held */
    for (unsigned k = 0; k < HELD; k++) {
      cf_future *f;
      void *v;
      fill(in, sizes[k], 1000 + round * 10 + k);
      assert_int_equal(
          cf_process_pool_submit(ex, negate_bytes, in, sizes[k], &f), 0);
      assert_int_equal(cf_future_result(f, 30, &v), 0);
      assert_true(negated(v, sizes[k], 1000 + round * 10 + k));
      cf_future_unref(f);
    }
    for (unsigned k = 0; k < HELD; k++) {
      void *v;
      assert_int_equal(cf_future_result(held[k], 0, &v), 0);
      if (!negated(v, sizes[k], round * 10 + k))
        fail_msg("round %u: held result %u was changed", round, k);
      cf_future_unref(held[k]);
    }
  }
  free(in);
  cf_executor_free(ex);
  assert_int_equal(count_children(), 0);
}

/* Each test runs with the watchdog armed. */
#define TEST(f)                                                                \
  cmocka_unit_test_setup_teardown(f, arm_watchdog, disarm_watchdog)

int main(void) {
  test_pid = getpid();
  const char *method = getenv("CF_TEST_START_METHOD");
  if (method && strcmp(method, "fork") == 0)
    start_method = CF_START_FORK;
  const struct CMUnitTest tests[] = {
      TEST(test_round_trips),
      TEST(test_many_small_tasks),
      TEST(test_big_payloads),
      TEST(test_many_big_inputs),
      TEST(test_worker_deaths),
      TEST(test_task_timeout),
      TEST(test_infinite_task_timeout),
      TEST(test_task_ending_at_its_timeout),
      TEST(test_max_tasks_per_child),
      TEST(test_initializer),
      TEST(test_timeout_counts_from_task_start),
      TEST(test_broken_pool_is_idle),
      TEST(test_death_before_start_blames_no_task),
      TEST(test_initializer_crash_breaks_pool),
      TEST(test_manager_out_of_fds),
      TEST(test_protocol_error),
      TEST(test_terminal_signals),
      TEST(test_host_fork_does_not_hold_the_pool),
      TEST(test_shutdown),
      TEST(test_with_thread_pool),
      TEST(test_map_chunks),
      TEST(test_map_chunk_crash),
      TEST(test_map_bytes),
      TEST(test_map_chunk_timeout),
      TEST(test_no_fd_leaks_into_workers),
      TEST(test_fork_server_killed),
      TEST(test_pool_outlives_its_creator_thread),
      TEST(test_sigchld_ignored_by_host),
      TEST(test_callbacks_in_parent),
      TEST(test_fork_always_fails),
      TEST(test_fork_fails_then_recovers),
      TEST(test_helper_holds_worker_socket),
      TEST(test_garbage_on_worker_socket),
      TEST(test_task_writes_to_low_fds),
      TEST(test_stopped_worker_does_not_freeze_the_pool),
      TEST(test_map_chunk_destroy),
      TEST(test_recycled_buffers_keep_results),
  };
  return cmocka_run_group_tests_name("process_pool", tests, NULL, NULL);
}
