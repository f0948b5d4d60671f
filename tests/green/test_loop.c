/* The green-task loop: spawn and run, concurrent sleeps, waits on pool
 * futures from green tasks, timeouts, cancels, spawns from other threads,
 * spawn_after, yields, misuse, and freeing a loop with suspended tasks. */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cfutures.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static cf_loop *new_loop(void) {
  cf_loop *l = NULL;
  assert_int_equal(cf_loop_new(NULL, &l), 0);
  assert_non_null(l);
  return l;
}

static int twice(void *arg, void **out) {
  *out = (void *)((intptr_t)arg * 2);
  return 0;
}

static void test_spawn_and_run(void **state) {
  (void)state;
  cf_loop *l = new_loop();
  assert_null(cf_loop_current());
  cf_future *f;
  assert_int_equal(cf_loop_spawn(l, twice, (void *)21, &f), 0);
  assert_int_equal(cf_loop_tasks(l), 1);
  assert_int_equal(cf_loop_run_until_complete(l, f, 10), 0);
  void *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_int_equal((intptr_t)v, 42);
  assert_int_equal(cf_loop_tasks(l), 0);
  cf_future_unref(f);
  assert_int_equal(cf_loop_free(l), 0);
}

/* Ten tasks sleep 0.1 s each: together they take about 0.1 s, not 1 s
 * (gevent's "the total is the longest task, not the sum"). */
static _Atomic int slept;
static int nap(void *arg, void **out) {
  (void)arg;
  if (cf_loop_current() == NULL)
    return cf_fail(CF_EINVAL, "not in a green task");
  int rc = cf_green_sleep(0.1);
  atomic_fetch_add(&slept, 1);
  *out = NULL;
  return rc;
}

static void test_sleeps_overlap(void **state) {
  (void)state;
  cf_loop *l = new_loop();
  cf_future *fs[10];
  atomic_store(&slept, 0);
  double t0 = now_s();
  for (int i = 0; i < 10; i++)
    assert_int_equal(cf_loop_spawn(l, nap, NULL, &fs[i]), 0);
  assert_int_equal(cf_loop_run(l, 10), 0);
  double took = now_s() - t0;
  assert_int_equal(atomic_load(&slept), 10);
  assert_true(took >= 0.1);
  assert_true(took < 0.8); /* the sum would be 1 s */
  for (int i = 0; i < 10; i++) {
    assert_int_equal(cf_future_result(fs[i], 0, NULL), 0);
    cf_future_unref(fs[i]);
  }
  assert_int_equal(cf_loop_free(l), 0);
}

/* A green task waits for a thread-pool task (run_in_executor) while other
 * green tasks keep running on the loop. */
static cf_executor *pool;
static _Atomic int ticks;
static _Atomic bool pool_done;

static int slow_square(void *arg, void **out) {
  usleep(50000);
  *out = (void *)((intptr_t)arg * (intptr_t)arg);
  return 0;
}

static int await_pool(void *arg, void **out) {
  cf_future *f;
  int rc = cf_submit(pool, slow_square, arg, &f);
  if (rc != 0)
    return rc;
  void *v = NULL;
  rc = cf_future_result(f, 10, &v);
  cf_future_unref(f);
  atomic_store(&pool_done, true);
  *out = v;
  return rc;
}

static int ticker(void *arg, void **out) {
  (void)arg;
  while (!atomic_load(&pool_done)) {
    atomic_fetch_add(&ticks, 1);
    cf_green_sleep(0.005);
  }
  *out = NULL;
  return 0;
}

static void test_await_pool_future(void **state) {
  (void)state;
  cf_thread_pool_opts o = {.max_workers = 2};
  assert_int_equal(cf_thread_pool_new(&o, &pool), 0);
  cf_loop *l = new_loop();
  atomic_store(&ticks, 0);
  atomic_store(&pool_done, false);
  cf_future *a, *t;
  assert_int_equal(cf_loop_spawn(l, await_pool, (void *)12, &a), 0);
  assert_int_equal(cf_loop_spawn(l, ticker, NULL, &t), 0);
  assert_int_equal(cf_loop_run_until_complete(l, a, 10), 0);
  void *v;
  assert_int_equal(cf_future_result(a, 0, &v), 0);
  assert_int_equal((intptr_t)v, 144);
  assert_true(atomic_load(&ticks) >= 3); /* the loop ran meanwhile */
  assert_int_equal(cf_loop_run(l, 10), 0);
  cf_future_unref(a);
  cf_future_unref(t);
  assert_int_equal(cf_loop_free(l), 0);
  cf_executor_free(pool);
}

/* Green tasks joining green tasks: one waits for all with cf_wait. */
static cf_loop *jl;
static int joiner(void *arg, void **out) {
  (void)arg;
  cf_future *fs[5];
  for (intptr_t i = 0; i < 5; i++)
    if (cf_loop_spawn(jl, nap, NULL, &fs[i]) != 0)
      return CF_ENOMEM;
  int rc = cf_wait(fs, 5, 10, CF_ALL_COMPLETED, NULL);
  for (int i = 0; i < 5; i++)
    cf_future_unref(fs[i]);
  *out = (void *)(intptr_t)atomic_load(&slept);
  return rc;
}

static void test_joinall(void **state) {
  (void)state;
  jl = new_loop();
  atomic_store(&slept, 0);
  cf_future *f;
  assert_int_equal(cf_loop_spawn(jl, joiner, NULL, &f), 0);
  assert_int_equal(cf_loop_run_until_complete(jl, f, 10), 0);
  void *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_int_equal((intptr_t)v, 5);
  cf_future_unref(f);
  assert_int_equal(cf_loop_free(jl), 0);
}

/* Timeouts: inside a task, of run_until_complete, of run. */
static cf_future *never;
static int wait_never(void *arg, void **out) {
  (void)arg;
  double t0 = now_s();
  int rc = cf_future_result(never, 0.05, NULL);
  double took = now_s() - t0;
  *out = (void *)(intptr_t)(took >= 0.05 && took < 2.0);
  return rc == CF_ETIMEDOUT ? 0 : cf_fail(CF_EINVAL, "wait gave %d", rc);
}

static void test_timeouts(void **state) {
  (void)state;
  cf_loop *l = new_loop();
  never = cf_future_new();
  cf_future *f;
  assert_int_equal(cf_loop_spawn(l, wait_never, NULL, &f), 0);
  assert_int_equal(cf_loop_run_until_complete(l, f, 10), 0);
  void *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_true((intptr_t)v);
  cf_future_unref(f);
  double t0 = now_s();
  assert_int_equal(cf_loop_run_until_complete(l, never, 0.05), CF_ETIMEDOUT);
  assert_true(now_s() - t0 >= 0.05);
  assert_int_equal(cf_loop_run_until_complete(l, never, 0), CF_ETIMEDOUT);
  assert_int_equal(cf_loop_run_until_complete(l, never, -1), CF_ETIMEDOUT);
  assert_int_equal(cf_loop_spawn(l, nap, NULL, &f), 0);
  assert_int_equal(cf_loop_run(l, 0.01), CF_ETIMEDOUT);
  assert_int_equal(cf_loop_run(l, 10), 0);
  cf_future_unref(f);
  cf_future_unref(never);
  assert_int_equal(cf_loop_free(l), 0);
}

/* Cancels: before start, in a wait, and a task that goes on anyway. */
static _Atomic int started;
static int wait_forever(void *arg, void **out) {
  (void)arg;
  atomic_fetch_add(&started, 1);
  *out = NULL;
  int rc = cf_future_result(never, CF_FOREVER, NULL);
  if (rc != CF_ECANCELLED)
    return cf_fail(CF_EINVAL, "wait gave %d", rc);
  /* Every later wait is cancelled too. */
  if (cf_green_sleep(5) != CF_ECANCELLED)
    return cf_fail(CF_EINVAL, "sleep after cancel");
  return CF_ECANCELLED;
}

static int shrug_cancel(void *arg, void **out) {
  (void)arg;
  int rc = cf_green_sleep(5);
  *out = (void *)7;
  return rc == CF_ECANCELLED ? 0 : CF_EINVAL; /* handles it, returns 7 */
}

static void test_cancel(void **state) {
  (void)state;
  cf_loop *l = new_loop();
  never = cf_future_new();
  atomic_store(&started, 0);
  cf_future *a, *b, *c;
  assert_int_equal(cf_loop_spawn(l, wait_forever, NULL, &a), 0);
  assert_int_equal(cf_loop_spawn(l, wait_forever, NULL, &b), 0);
  assert_int_equal(cf_loop_spawn(l, shrug_cancel, NULL, &c), 0);
  assert_int_equal(cf_green_cancel(b), 0); /* before it starts */
  assert_true(cf_future_cancelled(b));
  assert_int_equal(cf_loop_run_until_complete(l, never, 0.05), CF_ETIMEDOUT);
  assert_int_equal(atomic_load(&started), 1); /* b never ran */
  assert_int_equal(cf_green_cancel(a), 0);
  assert_int_equal(cf_green_cancel(c), 0);
  assert_int_equal(cf_loop_run(l, 10), 0);
  assert_true(cf_future_cancelled(a));
  void *v;
  assert_int_equal(cf_future_result(c, 0, &v), 0);
  assert_int_equal((intptr_t)v, 7);
  assert_int_equal(cf_green_cancel(a), CF_EINVALSTATE);
  assert_int_equal(cf_green_cancel(NULL), CF_EINVAL);
  cf_future *p = cf_future_new();
  assert_int_equal(cf_green_cancel(p), CF_EINVAL); /* not a green task */
  cf_future_unref(p);
  cf_future_unref(a);
  cf_future_unref(b);
  cf_future_unref(c);
  cf_future_unref(never);
  assert_int_equal(cf_loop_free(l), 0);
}

/* Another thread spawns 1,000 tasks into a running loop, then completes the
 * future the loop runs until. */
static cf_loop *sl;
static cf_future *spawner_done;
static _Atomic int counted;
static int count(void *arg, void **out) {
  (void)arg;
  atomic_fetch_add(&counted, 1);
  *out = NULL;
  return 0;
}

static void *spawner(void *arg) {
  (void)arg;
  for (int i = 0; i < 1000; i++) {
    cf_future *f;
    if (cf_loop_spawn(sl, count, NULL, &f) == 0)
      cf_future_unref(f);
    if (i % 100 == 0)
      usleep(1000);
  }
  cf_future_set_result(spawner_done, NULL, NULL);
  return NULL;
}

static void test_spawn_from_other_thread(void **state) {
  (void)state;
  sl = new_loop();
  atomic_store(&counted, 0);
  spawner_done = cf_future_new();
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, spawner, NULL), 0);
  assert_int_equal(cf_loop_run_until_complete(sl, spawner_done, 20), 0);
  pthread_join(th, NULL);
  assert_int_equal(cf_loop_run(sl, 10), 0);
  assert_int_equal(atomic_load(&counted), 1000);
  cf_future_unref(spawner_done);
  assert_int_equal(cf_loop_free(sl), 0);
}

/* spawn_after starts no earlier than its delay; yields interleave. */
static double started_at;
static int note_start(void *arg, void **out) {
  (void)arg;
  started_at = now_s();
  *out = NULL;
  return 0;
}

static char trace[64];
static _Atomic int tpos;
static int yielder(void *arg, void **out) {
  for (int i = 0; i < 3; i++) {
    trace[atomic_fetch_add(&tpos, 1)] = (char)(intptr_t)arg;
    cf_green_yield();
  }
  *out = NULL;
  return 0;
}

static void test_spawn_after_and_yield(void **state) {
  (void)state;
  cf_loop *l = new_loop();
  cf_future *f, *g;
  double t0 = now_s();
  assert_int_equal(cf_loop_spawn_after(l, 0.08, note_start, NULL, &f), 0);
  assert_int_equal(cf_loop_spawn_after(l, NAN, note_start, NULL, &g),
                   CF_EINVAL);
  assert_int_equal(cf_loop_run_until_complete(l, f, 10), 0);
  assert_true(started_at - t0 >= 0.08);
  cf_future_unref(f);
  atomic_store(&tpos, 0);
  memset(trace, 0, sizeof trace);
  assert_int_equal(cf_loop_spawn(l, yielder, (void *)'a', &f), 0);
  assert_int_equal(cf_loop_spawn(l, yielder, (void *)'b', &g), 0);
  assert_int_equal(cf_loop_run(l, 10), 0);
  assert_string_equal(trace, "ababab");
  cf_future_unref(f);
  cf_future_unref(g);
  assert_int_equal(cf_loop_free(l), 0);
}

/* Misuse: the wrong thread, from inside a task, NULLs, bad options. */
static cf_loop *ml;
static int run_inside(void *arg, void **out) {
  (void)arg;
  *out = (void *)(intptr_t)cf_loop_run(ml, 1);
  return 0;
}

static void *run_elsewhere(void *arg) {
  return (void *)(intptr_t)cf_loop_run(arg, 1);
}

static void test_misuse(void **state) {
  (void)state;
  cf_loop *l = (cf_loop *)1;
  cf_loop_opts o = {.stack_size = 1024};
  assert_int_equal(cf_loop_new(&o, &l), CF_EINVAL);
  assert_null(l);
  assert_int_equal(cf_loop_new(NULL, NULL), CF_EINVAL);
  ml = new_loop();
  cf_future *f = (cf_future *)1;
  assert_int_equal(cf_loop_spawn(NULL, twice, NULL, &f), CF_EINVAL);
  assert_null(f);
  assert_int_equal(cf_loop_spawn(ml, NULL, NULL, &f), CF_EINVAL);
  assert_int_equal(cf_loop_run_until_complete(ml, NULL, 1), CF_EINVAL);
  assert_int_equal(cf_loop_run(ml, NAN), CF_EINVAL);
  assert_int_equal(cf_green_sleep(-1), CF_EINVAL);
  assert_int_equal(cf_green_sleep(0.001), 0); /* a plain thread sleeps */
  assert_int_equal(cf_green_yield(), 0);
  pthread_t th;
  void *rc;
  assert_int_equal(pthread_create(&th, NULL, run_elsewhere, ml), 0);
  pthread_join(th, &rc);
  assert_int_equal((intptr_t)rc, CF_EPERM);
  assert_int_equal(cf_loop_spawn(ml, run_inside, NULL, &f), 0);
  assert_int_equal(cf_loop_run_until_complete(ml, f, 10), 0);
  void *v;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_int_equal((intptr_t)v, CF_EDEADLK);
  cf_future_unref(f);
  assert_int_equal(cf_loop_free(ml), 0);
  assert_int_equal(cf_loop_free(NULL), 0);
}

/* Freeing a loop with tasks suspended and not started: the suspended ones
 * see their waits cancelled and return; the others never run. */
static void test_free_with_tasks(void **state) {
  (void)state;
  cf_loop *l = new_loop();
  never = cf_future_new();
  atomic_store(&started, 0);
  cf_future *fs[6];
  for (int i = 0; i < 3; i++)
    assert_int_equal(cf_loop_spawn(l, wait_forever, NULL, &fs[i]), 0);
  assert_int_equal(cf_loop_run_until_complete(l, never, 0.02), CF_ETIMEDOUT);
  for (int i = 3; i < 6; i++)
    assert_int_equal(cf_loop_spawn(l, wait_forever, NULL, &fs[i]), 0);
  assert_int_equal(cf_loop_free(l), 0);
  assert_int_equal(atomic_load(&started), 3);
  for (int i = 0; i < 6; i++) {
    assert_true(cf_future_cancelled(fs[i]));
    cf_future_unref(fs[i]);
  }
  cf_future_unref(never);
}

/* Waiting for descriptors: readiness, timeouts, one reader per fd, cancel,
 * and plain threads. */
static int pipefd[2];
static int read_pipe(void *arg, void **out) {
  char c = 0;
  size_t got = 0;
  int rc =
      cf_green_read(pipefd[0], &c, 1, (double)(intptr_t)arg / 1000.0, &got);
  *out = (void *)(intptr_t)(rc == 0 ? c : 0);
  return rc;
}

static int write_pipe_later(void *arg, void **out) {
  (void)arg;
  *out = NULL;
  int rc = cf_green_sleep(0.02);
  return rc ? rc : cf_green_write_all(pipefd[1], "x", 1, 1);
}

static void test_wait_fd(void **state) {
  (void)state;
  assert_int_equal(pipe(pipefd), 0);
  cf_loop *l = new_loop();
  cf_future *r, *w, *r2;
  /* A reader with a timeout and nothing to read. */
  assert_int_equal(cf_loop_spawn(l, read_pipe, (void *)30, &r), 0);
  double t0 = now_s();
  assert_int_equal(cf_loop_run_until_complete(l, r, 10), 0);
  assert_true(now_s() - t0 >= 0.03);
  assert_int_equal(cf_future_result(r, 0, NULL), CF_EFAILED);
  cf_error e;
  assert_int_equal(cf_future_exception(r, 0, &e), 0);
  assert_int_equal(e.code, CF_ETIMEDOUT);
  cf_future_unref(r);
  /* A reader woken by a writer task; a second reader on the same fd is
   * refused while the first waits. */
  assert_int_equal(cf_loop_spawn(l, read_pipe, (void *)5000, &r), 0);
  assert_int_equal(cf_loop_spawn(l, read_pipe, (void *)5000, &r2), 0);
  assert_int_equal(cf_loop_spawn(l, write_pipe_later, NULL, &w), 0);
  assert_int_equal(cf_loop_run(l, 10), 0);
  void *v;
  assert_int_equal(cf_future_result(r, 0, &v), 0);
  assert_int_equal((intptr_t)v, 'x');
  assert_int_equal(cf_future_exception(r2, 0, &e), 0);
  assert_int_equal(e.code, CF_EBUSY);
  assert_int_equal(cf_future_result(w, 0, NULL), 0);
  cf_future_unref(r);
  cf_future_unref(r2);
  cf_future_unref(w);
  /* A waiting reader cancelled. */
  assert_int_equal(cf_loop_spawn(l, read_pipe, (void *)60000, &r), 0);
  cf_future *never_done = cf_future_new();
  assert_int_equal(cf_loop_run_until_complete(l, never_done, 0.02),
                   CF_ETIMEDOUT);
  assert_int_equal(cf_green_cancel(r), 0);
  assert_int_equal(cf_loop_run(l, 10), 0);
  assert_true(cf_future_cancelled(r));
  cf_future_unref(r);
  cf_future_unref(never_done);
  assert_int_equal(cf_loop_free(l), 0);
  /* Plain thread: poll(2). */
  assert_int_equal(cf_green_wait_fd(pipefd[0], CF_GREEN_READ, 0.01),
                   CF_ETIMEDOUT);
  assert_int_equal(cf_green_wait_fd(pipefd[1], CF_GREEN_WRITE, 1), 0);
  assert_int_equal(cf_green_wait_fd(-1, CF_GREEN_READ, 1), CF_EINVAL);
  assert_int_equal(cf_green_wait_fd(pipefd[0], 4, 1), CF_EINVAL);
  assert_int_equal(cf_green_wait_fd(pipefd[0], CF_GREEN_READ, NAN), CF_EINVAL);
  close(pipefd[0]);
  close(pipefd[1]);
}

/* A descriptor number closed without telling the loop and reused by
 * another file, while the old file lives on under a dup (as under a fork):
 * a wait on the new file is woken by the new file, not by the old one. */
static int old_write; /* the old pipe's write end */

static int reuse_steps(void *arg, void **out) {
  (void)arg;
  *out = NULL;
  int rc = cf_green_sleep(0.02);
  if (rc == 0) /* the old file becomes readable: must not wake the reader */
    rc = cf_green_write_all(old_write, "o", 1, 1);
  if (rc == 0)
    rc = cf_green_sleep(0.05);
  if (rc == 0)
    rc = cf_green_write_all(pipefd[1], "n", 1, 1);
  return rc;
}

static double woken_at;

static int read_one(void *arg, void **out) {
  (void)arg;
  char c = 0;
  size_t got = 0;
  int rc = cf_green_wait_fd(pipefd[0], CF_GREEN_READ, 5);
  woken_at = now_s();
  if (rc == 0)
    rc = cf_green_read(pipefd[0], &c, 1, 5, &got);
  *out = (void *)(intptr_t)c;
  return rc;
}

static void test_wait_fd_reused(void **state) {
  (void)state;
  cf_loop *l = new_loop();
  cf_future *r, *w;
  void *v;
  /* A first pipe, waited on in vain: its read end stays registered, armed
   * for reading. */
  assert_int_equal(pipe(pipefd), 0);
  assert_int_equal(cf_loop_spawn(l, read_pipe, (void *)20, &r), 0);
  assert_int_equal(cf_loop_run(l, 10), 0);
  assert_int_equal(cf_future_result(r, 0, NULL), CF_EFAILED);
  cf_future_unref(r);
  /* Its number closed but the file kept (a dup), and the number reused. */
  int old_fd = pipefd[0];
  int old_dup = dup(old_fd);
  old_write = pipefd[1];
  assert_true(old_dup >= 0);
  close(old_fd);
  assert_int_equal(pipe(pipefd), 0);
  assert_int_equal(pipefd[0], old_fd);
  double t0 = now_s();
  assert_int_equal(cf_loop_spawn(l, read_one, NULL, &r), 0);
  assert_int_equal(cf_loop_spawn(l, reuse_steps, NULL, &w), 0);
  assert_int_equal(cf_loop_run(l, 10), 0);
  assert_int_equal(cf_future_result(w, 0, NULL), 0);
  assert_int_equal(cf_future_result(r, 0, &v), 0);
  assert_int_equal((intptr_t)v, 'n');
  assert_true(woken_at - t0 >= 0.07); /* not by the old file, at 0.02 s */
  cf_future_unref(r);
  cf_future_unref(w);
  assert_int_equal(cf_loop_free(l), 0);
  close(old_dup);
  close(old_write);
  close(pipefd[0]);
  close(pipefd[1]);
}

/* Registrations that stay (edge-triggered; green/loop.c, wait_fd_green):
 * an edge that comes while the task does something else is kept for its
 * next wait; a task that closes a connection made by cf_green_connect with
 * close() and waits on another file given the same number is not left
 * waiting for ever (its trusted registration is checked after a while);
 * another task on a reused number registers it at once. A helper thread
 * plays the peer over loopback TCP: it accepts, then writes each byte of
 * `script` after its delay. */
typedef struct {
  int lfd;
  const char *bytes;
  const int *delays_ms;
} peer_script;

static void *peer(void *arg) {
  peer_script *ps = arg;
  int c = accept(ps->lfd, NULL, NULL);
  if (c < 0)
    return NULL;
  for (size_t i = 0; ps->bytes[i]; i++) {
    usleep((useconds_t)ps->delays_ms[i] * 1000);
    if (write(c, &ps->bytes[i], 1) != 1)
      break;
  }
  char sink;
  while (read(c, &sink, 1) > 0) { /* until the task's side is closed */
  }
  close(c);
  return NULL;
}

static int listener(struct sockaddr_in *addr) {
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  *addr = (struct sockaddr_in){.sin_family = AF_INET,
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof *addr;
  assert_true(lfd >= 0);
  assert_int_equal(bind(lfd, (struct sockaddr *)addr, sizeof *addr), 0);
  assert_int_equal(listen(lfd, 4), 0);
  assert_int_equal(getsockname(lfd, (struct sockaddr *)addr, &len), 0);
  return lfd;
}

static struct sockaddr_in peer_addr;
static int reuse_pipe[2]; /* made before the task, read under a reused number */
static double reuse_took, edge_took;

static int connect_peer(int *fd) {
  *fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (*fd < 0)
    return CF_ESYS;
  return cf_green_connect(*fd, (struct sockaddr *)&peer_addr,
                          sizeof peer_addr, 5);
}

/* Reads one byte into a bigger buffer: a short read, after which the next
 * read waits for readiness before it tries (green/io.c). */
static int read_byte(int fd, double timeout_s, char *c) {
  char buf[16];
  size_t got = 0;
  int rc = cf_green_read(fd, buf, sizeof buf, timeout_s, &got);
  *c = buf[0];
  return rc ? rc : got == 1 ? 0 : CF_EFAILED;
}

/* Peer writes 'a' at once, 'b' 30 ms later: the task reads 'a', sleeps
 * 100 ms ('b' comes meanwhile), and its next read, after a short one,
 * waits first: the kept edge must wake it at once (else nothing would:
 * no more bytes come). Then the same task closes the connection and reads
 * a pipe given its number; the pipe's byte comes a little later. */
static int edges_then_reuse(void *arg, void **out) {
  (void)arg;
  *out = NULL;
  int fd, rc;
  char c = 0;
  if ((rc = connect_peer(&fd)) != 0)
    return rc;
  if ((rc = read_byte(fd, 5, &c)) != 0 || c != 'a')
    return rc ? rc : CF_EFAILED;
  if ((rc = cf_green_sleep(0.1)) != 0)
    return rc;
  double t0 = now_s();
  if ((rc = read_byte(fd, 5, &c)) != 0 || c != 'b')
    return rc ? rc : CF_EFAILED;
  edge_took = now_s() - t0;
  close(fd); /* without a word to the loop */
  /* the number, reused by another file (a pipe made before the task) */
  if (dup2(reuse_pipe[0], fd) != fd)
    return CF_ESYS;
  t0 = now_s();
  rc = read_byte(fd, 10, &c);
  close(fd);
  if (rc != 0 || c != 'p')
    return rc ? rc : CF_EFAILED;
  reuse_took = now_s() - t0;
  *out = (void *)1;
  return 0;
}

static void *write_pipe_later_on(void *arg) {
  (void)arg;
  usleep(200 * 1000); /* the task is waiting by then (it needs ~130 ms) */
  ssize_t w = write(reuse_pipe[1], "p", 1);
  (void)w;
  return NULL;
}

static void test_kept_edges_and_reused_numbers(void **state) {
  (void)state;
  alarm(60);
  int lfd = listener(&peer_addr);
  static const int delays[] = {0, 30};
  peer_script ps = {.lfd = lfd, .bytes = "ab", .delays_ms = delays};
  pthread_t pt, wt;
  assert_int_equal(pthread_create(&pt, NULL, peer, &ps), 0);
  assert_int_equal(pipe(reuse_pipe), 0);
  cf_loop *l = new_loop();
  cf_future *f;
  assert_int_equal(cf_loop_spawn(l, edges_then_reuse, NULL, &f), 0);
  assert_int_equal(pthread_create(&wt, NULL, write_pipe_later_on, NULL), 0);
  assert_int_equal(cf_loop_run_until_complete(l, f, 30), 0);
  void *v = NULL;
  int rc = cf_future_result(f, 0, &v);
  if (rc)
    fail_msg("the task failed: %s", cf_last_error());
  print_message("# a kept edge: %.4f s; a reused number, same task: %.3f s\n",
                edge_took, reuse_took);
  assert_true(edge_took < 1); /* the kept edge, not a 5 s timeout */
  assert_true(reuse_took < 3); /* checked after 1 s, not a 10 s timeout */
  cf_future_unref(f);
  pthread_join(wt, NULL);
  close(reuse_pipe[0]);
  close(reuse_pipe[1]);
  pthread_join(pt, NULL);
  assert_int_equal(cf_loop_free(l), 0);
  close(lfd);
  alarm(0);
}

/* cf_green_wait_fd is level-triggered whatever the loop keeps: on a
 * connection made by cf_green_connect (whose registration a task may
 * otherwise trust), a second wait for a writable socket and a wait after a
 * read that left bytes behind return at once, not at their timeout. */
static int level_waits(void *arg, void **out) {
  (void)arg;
  *out = NULL;
  int fd, rc;
  if ((rc = connect_peer(&fd)) != 0)
    return rc;
  for (int k = 0; k < 2 && rc == 0; k++)
    rc = cf_green_wait_fd(fd, CF_GREEN_WRITE, 0.5);
  if (rc == 0)
    rc = cf_green_wait_fd(fd, CF_GREEN_READ, 5); /* "xy" arrives */
  char c;
  if (rc == 0 && recv(fd, &c, 1, 0) != 1) /* 'y' stays */
    rc = CF_ESYS;
  if (rc == 0)
    rc = cf_green_wait_fd(fd, CF_GREEN_READ, 0.5);
  if (rc == 0 && (recv(fd, &c, 1, 0) != 1 || c != 'y'))
    rc = CF_EFAILED;
  close(fd);
  *out = (void *)(intptr_t)(rc == 0);
  return rc;
}

static void test_wait_fd_is_level_triggered(void **state) {
  (void)state;
  alarm(60);
  int lfd = listener(&peer_addr);
  static const int delays[] = {20, 0};
  peer_script ps = {.lfd = lfd, .bytes = "xy", .delays_ms = delays};
  pthread_t pt;
  assert_int_equal(pthread_create(&pt, NULL, peer, &ps), 0);
  cf_loop *l = new_loop();
  cf_future *f;
  assert_int_equal(cf_loop_spawn(l, level_waits, NULL, &f), 0);
  assert_int_equal(cf_loop_run_until_complete(l, f, 30), 0);
  if (cf_future_result(f, 0, NULL) != 0)
    fail_msg("a wait failed: %s", cf_last_error());
  cf_future_unref(f);
  pthread_join(pt, NULL);
  assert_int_equal(cf_loop_free(l), 0);
  close(lfd);
  alarm(0);
}

/* Reads after a short read (green/io.c waits first then, guessing the
 * socket drained): data that came meanwhile is still read at once, a read
 * that may not wait (timeout 0) still tries, one that finds nothing still
 * times out, and a plain thread's reads are unaffected. */
static int sp[2];

static int short_reads(void *arg, void **out) {
  (void)arg;
  char buf[64];
  size_t got = 0;
  *out = NULL;
  int rc;
  if (write(sp[1], "abc", 3) != 3)
    return CF_ESYS;
  if ((rc = cf_green_read(sp[0], buf, sizeof buf, 5, &got)) != 0 || got != 3)
    return rc ? rc : CF_EFAILED;  /* short: the hint is set */
  if (write(sp[1], "de", 2) != 2) /* here before the next read */
    return CF_ESYS;
  if ((rc = cf_green_read(sp[0], buf, sizeof buf, 5, &got)) != 0 || got != 2)
    return rc ? rc : CF_EFAILED;
  if (write(sp[1], "f", 1) != 1)
    return CF_ESYS;
  if ((rc = cf_green_read(sp[0], buf, sizeof buf, 0, &got)) != 0 || got != 1 ||
      buf[0] != 'f')
    return rc ? rc : CF_EFAILED; /* timeout 0 after a short read: tried */
  if (write(sp[1], "g", 1) != 1)
    return CF_ESYS;
  if ((rc = cf_green_read(sp[0], buf, sizeof buf, 0.001, &got)) != 0 ||
      got != 1 || buf[0] != 'g')
    return rc ? rc : CF_EFAILED; /* a short timeout: read, not timed out */
  if (cf_green_read(sp[0], buf, sizeof buf, 0.01, &got) != CF_ETIMEDOUT ||
      cf_green_read(sp[0], buf, sizeof buf, 0, &got) != CF_ETIMEDOUT)
    return CF_EFAILED; /* nothing there: still a timeout */
  *out = (void *)1;
  return 0;
}

static void test_read_after_short_read(void **state) {
  (void)state;
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sp), 0);
  cf_loop *l = new_loop();
  cf_future *f;
  assert_int_equal(cf_loop_spawn(l, short_reads, NULL, &f), 0);
  assert_int_equal(cf_loop_run_until_complete(l, f, 30), 0);
  void *v = NULL;
  assert_int_equal(cf_future_result(f, 0, &v), 0);
  assert_int_equal((intptr_t)v, 1);
  cf_future_unref(f);
  /* A plain thread: no hint, poll(2) as before. */
  char buf[8];
  size_t got = 0;
  assert_int_equal(write(sp[1], "h", 1), 1);
  assert_int_equal(cf_green_read(sp[0], buf, sizeof buf, 1, &got), 0);
  assert_int_equal(got, 1);
  assert_int_equal(cf_green_read(sp[0], buf, sizeof buf, 0.01, &got),
                   CF_ETIMEDOUT);
  assert_int_equal(cf_loop_free(l), 0);
  close(sp[0]);
  close(sp[1]);
}

/* Many suspended tasks at once: more than vm.max_map_count (65,530) allows
 * with a guard page made by mprotect (two memory areas per stack: ~32,000
 * stacks). With the guard in the page tables (MADV_GUARD_INSTALL, Linux
 * 6.13+) the stacks merge into few areas; an older kernel gets 20,000
 * tasks. TSan keeps a heavy state per fiber: there the test runs 2,000
 * tasks, which checks the rest of it. */
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

static int many_sleepers(void) {
#if defined(__SANITIZE_THREAD__)
  return 2000;
#else
  void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  bool guards = p != MAP_FAILED && madvise(p, 4096, MADV_GUARD_INSTALL) == 0;
  if (p != MAP_FAILED)
    munmap(p, 4096);
  return guards ? 40000 : 20000;
#endif
}

static int short_nap(void *arg, void **out) {
  (void)arg;
  *out = NULL;
  return cf_green_sleep(0.5);
}

static int map_count(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  int n = 0, c;
  while (f && (c = fgetc(f)) != EOF)
    n += c == '\n';
  if (f)
    fclose(f);
  return n;
}

static void test_many_sleepers(void **state) {
  (void)state;
  const int MANY_SLEEPERS = many_sleepers();
  cf_loop *l = new_loop();
  cf_future **fs = malloc(MANY_SLEEPERS * sizeof *fs);
  assert_non_null(fs);
  for (int i = 0; i < MANY_SLEEPERS; i++)
    assert_int_equal(cf_loop_spawn(l, short_nap, NULL, &fs[i]), 0);
  /* every task started and is asleep now: none failed for want of a
   * stack (that would complete its future with CF_ENOMEM) */
  assert_int_equal(cf_loop_run(l, 0.2), CF_ETIMEDOUT);
  int done = 0;
  for (int i = 0; i < MANY_SLEEPERS; i++)
    done += cf_future_done(fs[i]);
  int maps = map_count();
  print_message("# %d tasks asleep, %d done early, %d memory areas\n",
                MANY_SLEEPERS, done, maps);
  assert_int_equal(done, 0);
  assert_int_equal(cf_loop_run(l, 60), 0);
  for (int i = 0; i < MANY_SLEEPERS; i++) {
    void *v;
    assert_int_equal(cf_future_result(fs[i], 0, &v), 0);
    cf_future_unref(fs[i]);
  }
  free(fs);
  assert_int_equal(cf_loop_free(l), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_spawn_and_run),
      cmocka_unit_test(test_sleeps_overlap),
      cmocka_unit_test(test_await_pool_future),
      cmocka_unit_test(test_joinall),
      cmocka_unit_test(test_timeouts),
      cmocka_unit_test(test_cancel),
      cmocka_unit_test(test_spawn_from_other_thread),
      cmocka_unit_test(test_spawn_after_and_yield),
      cmocka_unit_test(test_misuse),
      cmocka_unit_test(test_free_with_tasks),
      cmocka_unit_test(test_wait_fd),
      cmocka_unit_test(test_wait_fd_reused),
      cmocka_unit_test(test_read_after_short_read),
      cmocka_unit_test(test_kept_edges_and_reused_numbers),
      cmocka_unit_test(test_wait_fd_is_level_triggered),
      cmocka_unit_test(test_many_sleepers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
