/* Helpers shared by the futures unit tests: a monotonic clock and a
 * thread that completes futures on a script. Include after <cmocka.h>. */
#ifndef CF_TESTS_FUTURES_HELPERS_H
#define CF_TESTS_FUTURES_HELPERS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include <cfutures.h>

static inline double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Completes futures from another thread on a script: step i completes
 * fs[order[i]] after delay_us, with an exception when fail[i]. */
typedef struct script {
  cf_future **fs;
  const int *order;
  const bool *fail;
  int n;
  unsigned delay_us;
  pthread_t th;
} script;

static inline void *script_main(void *p) {
  script *s = p;
  for (int i = 0; i < s->n; i++) {
    usleep(s->delay_us);
    cf_future *f = s->fs[s->order[i]];
    if (s->fail && s->fail[i])
      cf_future_set_exception(f, CF_EINVAL, "step %d failed", i);
    else
      cf_future_set_result(f, (void *)(intptr_t)s->order[i], NULL);
  }
  return NULL;
}

static inline void script_run(script *s) {
  assert_int_equal(pthread_create(&s->th, NULL, script_main, s), 0);
}

static inline void new_futures(cf_future **fs, int n) {
  for (int i = 0; i < n; i++) {
    fs[i] = cf_future_new();
    assert_non_null(fs[i]);
  }
}

static inline void free_futures(cf_future **fs, int n) {
  for (int i = 0; i < n; i++)
    cf_future_unref(fs[i]);
}

#endif
