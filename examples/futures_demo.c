/* futures_demo: cfutures end to end in one page.
 *
 * Submits work to a thread pool, waits on it with cf_wait, collects it with
 * cf_as_completed, maps a function over an array in input order, shows a
 * failing task, a cancelled one, a done-callback and nested parallelism. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cfutures.h>

/* Counts the primes below n: a little CPU work per task. */
static int count_primes(void *arg, void **out) {
  intptr_t n = (intptr_t)arg, count = 0;
  for (intptr_t i = 2; i < n; i++) {
    bool prime = true;
    for (intptr_t d = 2; d * d <= i && prime; d++)
      prime = i % d != 0;
    count += prime;
  }
  *out = (void *)count;
  return 0;
}

static int square(void *arg, void **out) {
  int x = *(int *)arg;
  if (x == 7)
    return cf_fail(CF_EINVAL, "seven is not welcome here");
  *out = (void *)(intptr_t)(x * x);
  return 0;
}

static cf_executor *pool;

/* Nested parallelism: each call submits its children and waits on them;
 * waiting workers run other tasks, so this never deadlocks. */
static int fib(void *arg, void **out) {
  intptr_t n = (intptr_t)arg;
  if (n < 2) {
    *out = (void *)n;
    return 0;
  }
  cf_future *a;
  int rc = cf_submit(pool, fib, (void *)(n - 1), &a);
  if (rc != 0)
    return rc;
  void *b;
  fib((void *)(n - 2), &b);
  void *va;
  rc = cf_future_result(a, CF_FOREVER, &va);
  cf_future_unref(a);
  *out = (void *)((intptr_t)va + (intptr_t)b);
  return rc;
}

static int announce(cf_future *f, void *arg) {
  void *v;
  if (cf_future_result(f, 0, &v) == 0)
    printf("  callback: %s finished with %ld\n", (const char *)arg,
           (long)(intptr_t)v);
  return 0;
}

static int check(int rc, const char *what) {
  if (rc != 0) {
    fprintf(stderr, "futures_demo: %s: %s\n", what, cf_strerror(rc));
    exit(1);
  }
  return rc;
}

int main(void) {
  cf_thread_pool_opts opts = {.thread_name_prefix = "demo"};
  check(cf_thread_pool_new(&opts, &pool), "cf_thread_pool_new");
  printf("thread pool with %zu workers\n", cf_thread_pool_size(pool));

  /* submit + wait */
  enum { N = 6 };
  cf_future *fs[N];
  for (int i = 0; i < N; i++)
    check(cf_submit(pool, count_primes, (void *)(intptr_t)(20000 * (N - i)),
                    &fs[i]),
          "cf_submit");
  check(cf_future_add_done_callback(fs[0], announce, "primes below 120000"),
        "add_done_callback");
  bool done[N];
  check(cf_wait(fs, N, 30, CF_ALL_COMPLETED, done), "cf_wait");
  printf("cf_wait: all %d tasks done\n", N);

  /* as_completed: in completion order */
  cf_future *more[N];
  for (int i = 0; i < N; i++)
    check(cf_submit(pool, count_primes, (void *)(intptr_t)(5000 * (i + 1)),
                    &more[i]),
          "cf_submit");
  cf_as_completed *it;
  check(cf_as_completed_new(more, N, 30, &it), "cf_as_completed_new");
  cf_future *f;
  printf("as_completed:");
  while (cf_as_completed_next(it, &f) == 0) {
    void *v;
    cf_future_result(f, 0, &v);
    printf(" %ld", (long)(intptr_t)v);
  }
  printf("\n");
  cf_as_completed_free(it);

  /* map: input order, a failed item reported in place */
  int xs[10];
  for (int i = 0; i < 10; i++)
    xs[i] = i + 1;
  cf_map *m;
  check(cf_map_array(pool, square, xs, 10, sizeof xs[0], NULL, &m),
        "cf_map_array");
  printf("map:");
  void *v;
  int rc;
  while ((rc = cf_map_next(m, &v)) != CF_EDONE) {
    if (rc == 0) {
      printf(" %ld", (long)(intptr_t)v);
    } else {
      cf_error e;
      cf_map_error(m, &e);
      printf(" [failed: %s]", e.message);
    }
  }
  printf("\n");
  cf_map_free(m);

  /* nested parallelism */
  check(cf_submit(pool, fib, (void *)(intptr_t)20, &f), "cf_submit");
  check(cf_future_result(f, 30, &v), "fib");
  printf("fib(20) with a task per call = %ld\n", (long)(intptr_t)v);
  cf_future_unref(f);

  /* shutdown: later submits are refused */
  check(cf_executor_shutdown(pool, true, false), "shutdown");
  rc = cf_submit(pool, square, xs, &f);
  printf("submit after shutdown: %s\n", cf_err_name(rc));

  for (int i = 0; i < N; i++) {
    cf_future_unref(fs[i]);
    cf_future_unref(more[i]);
  }
  cf_executor_free(pool);
  return rc == CF_ESHUTDOWN ? 0 : 1;
}
