/* Tests for sync/queue.c, sync/shm_queue.c and sync/pipe.c. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cfutures.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int reap(pid_t pid, double limit) {
  double t0 = now_s();
  int st;
  while (waitpid(pid, &st, WNOHANG) != pid) {
    if (now_s() - t0 > limit) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return -1000;
    }
    usleep(1000);
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

/* ---- cf_queue ------------------------------------------------------------ */

static int cmp_int(const void *a, const void *b) {
  intptr_t x = (intptr_t)a, y = (intptr_t)b;
  return x < y ? -1 : x > y;
}

static void test_queue_orders(void **state) {
  (void)state;
  const intptr_t in[] = {5, 1, 4, 2, 3};
  const intptr_t want[3][5] = {
      {5, 1, 4, 2, 3}, {3, 2, 4, 1, 5}, {1, 2, 3, 4, 5}};
  for (int kind = 0; kind < 3; kind++) {
    cf_queue *q;
    assert_int_equal(cf_queue_new((cf_queue_kind)kind, 0, cmp_int, &q), 0);
    for (int round = 0; round < 3; round++) { /* across ring wrap-around */
      for (int i = 0; i < 5; i++)
        assert_int_equal(cf_queue_put(q, (void *)in[i], 0), 0);
      assert_int_equal(cf_queue_qsize(q), 5);
      for (int i = 0; i < 5; i++) {
        void *v;
        assert_int_equal(cf_queue_get(q, 0, &v), 0);
        assert_int_equal((intptr_t)v, want[kind][i]);
      }
      assert_true(cf_queue_empty(q));
    }
    cf_queue_free(q);
  }
  /* a priority queue keeps heap order over many items */
  cf_queue *q;
  assert_int_equal(cf_queue_new(CF_QUEUE_PRIORITY, 0, cmp_int, &q), 0);
  for (int i = 0; i < 1000; i++)
    assert_int_equal(cf_queue_put(q, (void *)(intptr_t)((i * 7919) % 1000), 0),
                     0);
  for (intptr_t i = 0; i < 1000; i++) {
    void *v;
    assert_int_equal(cf_queue_get(q, 0, &v), 0);
    assert_int_equal((intptr_t)v, i);
  }
  cf_queue_free(q);
  assert_int_equal(cf_queue_new(CF_QUEUE_PRIORITY, 0, NULL, &q), CF_EINVAL);
  assert_int_equal(cf_queue_new((cf_queue_kind)9, 0, NULL, &q), CF_EINVAL);
  assert_int_equal(cf_queue_new(CF_QUEUE_FIFO, 0, NULL, NULL), CF_EINVAL);
}

static void test_queue_bounds_and_timeouts(void **state) {
  (void)state;
  cf_queue *q;
  assert_int_equal(cf_queue_new(CF_QUEUE_FIFO, 2, NULL, &q), 0);
  void *v;
  assert_int_equal(cf_queue_get_nowait(q, &v), CF_EEMPTY);
  double t0 = now_s();
  assert_int_equal(cf_queue_get(q, 0.05, &v), CF_EEMPTY);
  double dt = now_s() - t0;
  assert_true(dt >= 0.05 && dt < 1.0);
  assert_int_equal(cf_queue_put_nowait(q, (void *)1), 0);
  assert_int_equal(cf_queue_put(q, (void *)2, 0), 0);
  assert_true(cf_queue_full(q));
  assert_int_equal(cf_queue_put_nowait(q, (void *)3), CF_EFULL);
  t0 = now_s();
  assert_int_equal(cf_queue_put(q, (void *)3, 0.05), CF_EFULL);
  dt = now_s() - t0;
  assert_true(dt >= 0.05 && dt < 1.0);
  assert_int_equal(cf_queue_qsize(q), 2);
  assert_int_equal(cf_queue_get(q, 0, &v), 0);
  assert_int_equal((intptr_t)v, 1);
  assert_false(cf_queue_full(q));
  /* task_done more often than items put is an error */
  assert_int_equal(cf_queue_task_done(q), 0);
  assert_int_equal(cf_queue_task_done(q), 0);
  assert_int_equal(cf_queue_task_done(q), CF_EINVALSTATE);
  assert_int_equal(cf_queue_join(q, 0), 0);
  assert_int_equal(cf_queue_put(NULL, NULL, 0), CF_EINVAL);
  assert_int_equal(cf_queue_get(q, 0, NULL), CF_EINVAL);
  cf_queue_free(q);
  cf_queue_free(NULL);
}

/* 5 producers and 3 consumers through a joinable queue: join returns only
 * once every item is processed. */
enum { PRODUCERS = 5, CONSUMERS = 3, PER_PRODUCER = 400 };
static cf_queue *jq;
static _Atomic long processed, processed_sum;

static void *producer(void *p) {
  intptr_t base = (intptr_t)p * PER_PRODUCER;
  for (intptr_t i = 0; i < PER_PRODUCER; i++)
    if (cf_queue_put(jq, (void *)(base + i + 1), 10) != 0)
      return (void *)1;
  return NULL;
}

static void *consumer(void *p) {
  (void)p;
  for (;;) {
    void *v;
    if (cf_queue_get(jq, 10, &v) != 0)
      return (void *)1;
    if (v == NULL) { /* stop */
      cf_queue_task_done(jq);
      return NULL;
    }
    if ((intptr_t)v % 50 == 0)
      usleep(100);
    atomic_fetch_add(&processed_sum, (intptr_t)v);
    atomic_fetch_add(&processed, 1);
    cf_queue_task_done(jq);
  }
}

static void test_queue_join(void **state) {
  (void)state;
  assert_int_equal(cf_queue_new(CF_QUEUE_FIFO, 16, NULL, &jq), 0);
  atomic_store(&processed, 0);
  atomic_store(&processed_sum, 0);
  pthread_t prod[PRODUCERS], cons[CONSUMERS];
  for (intptr_t i = 0; i < CONSUMERS; i++)
    assert_int_equal(pthread_create(&cons[i], NULL, consumer, NULL), 0);
  for (intptr_t i = 0; i < PRODUCERS; i++)
    assert_int_equal(pthread_create(&prod[i], NULL, producer, (void *)i), 0);
  for (int i = 0; i < PRODUCERS; i++) {
    void *r;
    pthread_join(prod[i], &r);
    assert_null(r);
  }
  assert_int_equal(cf_queue_join(jq, 30), 0);
  /* join returned: everything put so far was processed */
  const long n = PRODUCERS * PER_PRODUCER;
  assert_int_equal(atomic_load(&processed), n);
  assert_int_equal(atomic_load(&processed_sum), n * (n + 1) / 2);
  for (int i = 0; i < CONSUMERS; i++)
    assert_int_equal(cf_queue_put(jq, NULL, 10), 0);
  for (int i = 0; i < CONSUMERS; i++) {
    void *r;
    pthread_join(cons[i], &r);
    assert_null(r);
  }
  assert_int_equal(cf_queue_join(jq, 1), 0);
  cf_queue_free(jq);
}

/* ---- cf_shm_queue -------------------------------------------------------- */

/* Message k of producer p: a header and a pattern anyone can check. */
static size_t msg_size(int p, int k) {
  static const size_t sizes[] = {0, 1, 7, 100, 4000, 9000, 70000, 300000};
  return sizes[(p * 3 + k) % 8];
}

static void msg_fill(unsigned char *buf, size_t n, int p, int k) {
  for (size_t i = 0; i < n; i++)
    buf[i] = (unsigned char)(i * 31 + (size_t)p * 7 + (size_t)k);
}

static bool msg_check(const unsigned char *buf, size_t n, int *p_out) {
  /* the first two bytes (i = 0, 1) identify p and k up to the pattern */
  for (int p = 0; p < 8; p++)
    for (int k = 0; k < 64; k++) {
      if (msg_size(p, k) != n)
        continue;
      bool ok = true;
      for (size_t i = 0; i < n && ok; i++)
        ok = buf[i] == (unsigned char)(i * 31 + (size_t)p * 7 + (size_t)k);
      if (ok) {
        *p_out = p;
        return true;
      }
    }
  return false;
}

static void test_shm_queue_processes(void **state) {
  (void)state;
  enum { PROD = 3, CONS = 2, EACH = 24 };
  cf_shm_queue *q;
  assert_int_equal(cf_shm_queue_new(CF_QUEUE_FIFO, 8, 4096, &q),
                   0); /* small ring */
  long *stats = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  assert_true(stats != MAP_FAILED);
  cf_lock *l;
  assert_int_equal(cf_lock_new(true, &l), 0);
  pid_t kids[PROD + CONS];
  for (int c = 0; c < CONS; c++) {
    kids[c] = fork();
    if (kids[c] == 0) {
      for (;;) {
        void *data;
        size_t len;
        if (cf_shm_queue_get(q, 30, &data, &len) != 0)
          _exit(1);
        if (len == 1 && ((unsigned char *)data)[0] == 0xEE) { /* stop */
          free(data);
          cf_shm_queue_task_done(q);
          _exit(0);
        }
        int p = -1;
        bool ok = msg_check(data, len, &p);
        cf_lock_acquire(l, 10);
        stats[0] += 1;
        stats[1] += (long)len;
        stats[2] += ok ? 0 : 1;
        cf_lock_release(l);
        free(data);
        cf_shm_queue_task_done(q);
      }
    }
  }
  long want_bytes = 0;
  for (int p = 0; p < PROD; p++) {
    for (int k = 0; k < EACH; k++)
      want_bytes += (long)msg_size(p, k);
    kids[CONS + p] = fork();
    if (kids[CONS + p] == 0) {
      unsigned char *buf = malloc(300000);
      for (int k = 0; k < EACH; k++) {
        size_t n = msg_size(p, k);
        msg_fill(buf, n, p, k);
        if (cf_shm_queue_put(q, buf, n, 30) != 0)
          _exit(1);
      }
      free(buf);
      _exit(0);
    }
  }
  for (int p = 0; p < PROD; p++)
    assert_int_equal(reap(kids[CONS + p], 60), 0);
  assert_int_equal(cf_shm_queue_join(q, 60), 0);
  assert_int_equal(stats[0], PROD * EACH); /* join saw them all processed */
  assert_int_equal(stats[1], want_bytes);
  assert_int_equal(stats[2], 0); /* every message whole and intact */
  unsigned char stop = 0xEE;
  for (int c = 0; c < CONS; c++)
    assert_int_equal(cf_shm_queue_put(q, &stop, 1, 10), 0);
  for (int c = 0; c < CONS; c++)
    assert_int_equal(reap(kids[c], 30), 0);
  assert_int_equal(cf_shm_queue_task_done(q), CF_EINVALSTATE);
  cf_lock_free(l);
  cf_shm_queue_free(q);
  munmap(stats, 4096);
}

static void test_shm_queue_timeouts(void **state) {
  (void)state;
  cf_shm_queue *q;
  assert_int_equal(cf_shm_queue_new(CF_QUEUE_FIFO, 0, 256, &q), 0);
  void *data;
  size_t len;
  double t0 = now_s();
  assert_int_equal(cf_shm_queue_get(q, 0.05, &data, &len), CF_EEMPTY);
  assert_true(now_s() - t0 >= 0.05);
  const char a[] = "first";
  assert_int_equal(cf_shm_queue_put(q, a, sizeof a, 0), 0);
  /* a message far larger than the ring, with no reader: withdrawn */
  char big[2000];
  memset(big, 'x', sizeof big);
  t0 = now_s();
  assert_int_equal(cf_shm_queue_put(q, big, sizeof big, 0.05), CF_EFULL);
  assert_true(now_s() - t0 >= 0.05);
  assert_int_equal(cf_shm_queue_get(q, 1, &data, &len), 0);
  assert_int_equal(len, sizeof a);
  assert_string_equal(data, "first");
  free(data);
  /* the withdrawn partial message is skipped, never delivered */
  assert_int_equal(cf_shm_queue_get(q, 0.05, &data, &len), CF_EEMPTY);
  const char c[] = "third";
  assert_int_equal(cf_shm_queue_put(q, c, sizeof c, 1), 0);
  assert_int_equal(cf_shm_queue_get(q, 1, &data, &len), 0);
  assert_string_equal(data, "third");
  free(data);
  /* bounded by message count */
  cf_shm_queue_free(q);
  assert_int_equal(cf_shm_queue_new(CF_QUEUE_FIFO, 1, 0, &q), 0);
  assert_int_equal(cf_shm_queue_put(q, a, sizeof a, 0), 0);
  assert_int_equal(cf_shm_queue_put(q, a, sizeof a, 0), CF_EFULL);
  assert_int_equal(cf_shm_queue_qsize(q), 1);
  assert_int_equal(cf_shm_queue_put(q, NULL, 3, 0), CF_EINVAL);
  cf_shm_queue_free(q);
  assert_int_equal(cf_shm_queue_new(CF_QUEUE_FIFO, 0, 10, &q), CF_EINVAL);
}

/* LIFO and priority queues across processes: children put, the parent
 * takes in the queue's order; big messages come through whole. */
static void test_shm_queue_lifo_priority(void **state) {
  (void)state;
  for (int kind = CF_QUEUE_LIFO; kind <= CF_QUEUE_PRIORITY; kind++) {
    cf_shm_queue *q;
    assert_int_equal(cf_shm_queue_new((cf_queue_kind)kind, 0, 0, &q), 0);
    enum { KIDS = 3, EACH = 10 };
    pid_t kids[KIDS];
    for (int k = 0; k < KIDS; k++) {
      kids[k] = fork();
      if (kids[k] == 0) {
        unsigned char *buf = malloc(1 << 20);
        for (int i = 0; i < EACH; i++) {
          int64_t prio = (int64_t)((k * EACH + i) * 7919 % 97);
          size_t n = (size_t)((k * EACH + i) % 4 == 0 ? (1 << 20) : 16);
          memset(buf, (int)prio, n);
          memcpy(buf, &prio, sizeof prio);
          int rc = kind == CF_QUEUE_PRIORITY
                       ? cf_shm_queue_put_prio(q, buf, n, prio, 10)
                       : cf_shm_queue_put(q, buf, n, 10);
          if (rc != 0)
            _exit(1);
        }
        _exit(0);
      }
    }
    for (int k = 0; k < KIDS; k++)
      assert_int_equal(reap(kids[k], 60), 0);
    assert_int_equal(cf_shm_queue_qsize(q), KIDS * EACH);
    int64_t last = -1;
    for (int i = 0; i < KIDS * EACH; i++) {
      void *data;
      size_t len;
      assert_int_equal(cf_shm_queue_get(q, 1, &data, &len), 0);
      int64_t prio;
      memcpy(&prio, data, sizeof prio);
      for (size_t j = sizeof prio; j < len; j++)
        assert_int_equal(((unsigned char *)data)[j], (unsigned char)prio);
      if (kind == CF_QUEUE_PRIORITY)
        assert_true(prio >= last); /* smallest first */
      last = prio;
      free(data);
      assert_int_equal(cf_shm_queue_task_done(q), 0);
    }
    assert_int_equal(cf_shm_queue_join(q, 0), 0);
    void *data;
    size_t len;
    assert_int_equal(cf_shm_queue_get(q, 0, &data, &len), CF_EEMPTY);
    cf_shm_queue_free(q);
  }
  /* LIFO order within one process, and leftovers cleaned up at free */
  cf_shm_queue *q;
  assert_int_equal(cf_shm_queue_new(CF_QUEUE_LIFO, 2, 0, &q), 0);
  assert_int_equal(cf_shm_queue_put(q, "a", 1, 0), 0);
  assert_int_equal(cf_shm_queue_put(q, "b", 1, 0), 0);
  assert_true(cf_shm_queue_full(q));
  assert_false(cf_shm_queue_empty(q));
  assert_int_equal(cf_shm_queue_put(q, "c", 1, 0), CF_EFULL);
  assert_int_equal(cf_shm_queue_put_prio(q, "c", 1, 1, 0), CF_EINVAL);
  void *data;
  size_t len;
  assert_int_equal(cf_shm_queue_get(q, 0, &data, &len), 0);
  assert_memory_equal(data, "b", 1);
  free(data);
  cf_shm_queue_free(q); /* "a" is still in it */
}

/* ---- cf_pipe ------------------------------------------------------------- */

static void test_pipe(void **state) {
  (void)state;
  cf_pipe *a, *b;
  assert_int_equal(cf_pipe_new(true, &a, &b), 0);
  void *data;
  size_t len;
  double t0 = now_s();
  assert_int_equal(cf_pipe_recv(b, 0.05, &data, &len), CF_ETIMEDOUT);
  assert_true(now_s() - t0 >= 0.05);
  assert_int_equal(cf_pipe_send(a, "ping", 4, 1), 0);
  assert_int_equal(cf_pipe_send(a, NULL, 0, 1), 0); /* an empty message */
  assert_int_equal(cf_pipe_send(b, "pong", 4, 1), 0);
  assert_int_equal(cf_pipe_recv(b, 1, &data, &len), 0);
  assert_int_equal(len, 4);
  assert_memory_equal(data, "ping", 4);
  free(data);
  assert_int_equal(cf_pipe_recv(b, 1, &data, &len), 0); /* not glued */
  assert_int_equal(len, 0);
  assert_null(data);
  assert_int_equal(cf_pipe_recv(a, 1, &data, &len), 0);
  assert_memory_equal(data, "pong", 4);
  free(data);
  cf_pipe_close(a);
  assert_int_equal(cf_pipe_recv(b, 1, &data, &len), CF_EEOF);
  assert_int_equal(cf_pipe_send(b, "x", 1, 1), CF_EEOF);
  cf_pipe_close(b);

  /* one-way */
  assert_int_equal(cf_pipe_new(false, &a, &b), 0);
  assert_int_equal(cf_pipe_recv(a, 0, &data, &len), CF_EPERM);
  assert_int_equal(cf_pipe_send(b, "x", 1, 0), CF_EPERM);
  cf_pipe_close(a);
  cf_pipe_close(b);
  assert_int_equal(cf_pipe_new(true, NULL, &b), CF_EINVAL);
}

/* A child sends messages of many sizes (some far beyond the socket buffer);
 * the parent gets each whole, then end-of-file when the child is gone. */
static void test_pipe_processes(void **state) {
  (void)state;
  cf_pipe *a, *b;
  assert_int_equal(cf_pipe_new(false, &a, &b), 0);
  enum { N = 60 };
  pid_t pid = fork();
  if (pid == 0) {
    cf_pipe_close(b);
    unsigned char *buf = malloc(1 << 20);
    for (int k = 0; k < N; k++) {
      size_t n = msg_size(k % 5, k) * (k % 3 + 1);
      msg_fill(buf, n, k % 5, k);
      if (cf_pipe_send(a, buf, n, 30) != 0)
        _exit(1);
    }
    _exit(0); /* closes a */
  }
  cf_pipe_close(a); /* ours: otherwise no end-of-file ever */
  for (int k = 0; k < N; k++) {
    void *data;
    size_t len;
    assert_int_equal(cf_pipe_recv(b, 30, &data, &len), 0);
    size_t n = msg_size(k % 5, k) * (k % 3 + 1);
    assert_int_equal(len, n);
    unsigned char *want = malloc(n ? n : 1);
    msg_fill(want, n, k % 5, k);
    assert_memory_equal(data ? data : want, want, n);
    free(want);
    free(data);
  }
  void *data;
  size_t len;
  assert_int_equal(cf_pipe_recv(b, 30, &data, &len), CF_EEOF);
  assert_int_equal(reap(pid, 30), 0);
  cf_pipe_close(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_queue_orders),
      cmocka_unit_test(test_queue_bounds_and_timeouts),
      cmocka_unit_test(test_queue_join),
      cmocka_unit_test(test_shm_queue_processes),
      cmocka_unit_test(test_shm_queue_timeouts),
      cmocka_unit_test(test_shm_queue_lifo_priority),
      cmocka_unit_test(test_pipe),
      cmocka_unit_test(test_pipe_processes),
  };
  return cmocka_run_group_tests_name("queue", tests, NULL, NULL);
}
