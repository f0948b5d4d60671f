/* green_cooking: gevent's "cook while you watch TV" on a cfutures loop.
 * Boiling water, cooking rice and watching TV each take a while of waiting
 * (cf_green_sleep); chopping vegetables is real work, done on a thread pool
 * and awaited from a green task (asyncio's run_in_executor). On one loop
 * thread the whole evening takes about as long as the longest task, not
 * the sum of them.
 *
 *   green_cooking        (exit 0 when the total is well below the sum)
 */
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <cfutures.h>

typedef struct chore {
  const char *name;
  double seconds;
} chore;

static double t0;
static cf_executor *pool;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int wait_for(void *arg, void **out) {
  const chore *c = arg;
  printf("%5.2f s  start %s\n", now_s() - t0, c->name);
  int rc = cf_green_sleep(c->seconds);
  printf("%5.2f s  done  %s\n", now_s() - t0, c->name);
  *out = NULL;
  return rc;
}

/* Real work: busy for the chore's time, on a pool thread. */
static int chop(void *arg, void **out) {
  const chore *c = arg;
  double until = now_s() + c->seconds;
  uint64_t cuts = 0;
  while (now_s() < until)
    cuts++;
  *out = (void *)(uintptr_t)cuts;
  return 0;
}

static int chop_on_pool(void *arg, void **out) {
  const chore *c = arg;
  printf("%5.2f s  start %s (on the pool)\n", now_s() - t0, c->name);
  cf_future *f;
  int rc = cf_submit(pool, chop, arg, &f);
  if (rc == 0)
    rc = cf_future_result(f, 10, out); /* suspends this green task only */
  cf_future_unref(f);
  printf("%5.2f s  done  %s\n", now_s() - t0, c->name);
  return rc;
}

int main(void) {
  static const chore chores[] = {{"boiling water", 0.30},
                                 {"cooking rice", 0.20},
                                 {"chopping vegetables", 0.25},
                                 {"watching TV", 0.40}};
  enum { N = sizeof chores / sizeof chores[0] };
  cf_loop *loop;
  cf_thread_pool_opts o = {.max_workers = 1};
  if (cf_loop_new(NULL, &loop) != 0 || cf_thread_pool_new(&o, &pool) != 0) {
    fprintf(stderr, "green_cooking: %s\n", cf_last_error());
    return 1;
  }
  t0 = now_s();
  cf_future *fs[N];
  double sum = 0, longest = 0;
  for (int i = 0; i < N; i++) {
    cf_fn fn = i == 2 ? chop_on_pool : wait_for;
    if (cf_loop_spawn(loop, fn, (void *)&chores[i], &fs[i]) != 0) {
      fprintf(stderr, "green_cooking: %s\n", cf_last_error());
      return 1;
    }
    sum += chores[i].seconds;
    longest = chores[i].seconds > longest ? chores[i].seconds : longest;
  }
  int rc = cf_loop_run(loop, 10); /* gevent.joinall */
  double total = now_s() - t0;
  int failed = 0;
  for (int i = 0; i < N; i++) {
    failed += cf_future_result(fs[i], 0, NULL) != 0;
    cf_future_unref(fs[i]);
  }
  cf_loop_free(loop);
  cf_executor_free(pool);
  printf("evening: %.2f s on one thread (longest chore %.2f s, all of them "
         "one after another %.2f s)\n",
         total, longest, sum);
  return rc == 0 && failed == 0 && total < 0.8 * sum ? 0 : 1;
}
