/* A program outside the cfutures tree, built against an installed copy. */
#include <cfutures.h>
#include <stdint.h>
#include <stdio.h>

static int twice(void *arg, void **out) {
  *out = (void *)((intptr_t)arg * 2);
  return 0;
}

int main(void) {
  cf_future *p = cf_future_new();
  if (!p || cf_future_set_result(p, (void *)(intptr_t)20, NULL) != 0)
    return 1;
  cf_executor *ex;
  if (cf_thread_pool_new(NULL, &ex) != 0)
    return 2;
  cf_future *f;
  if (cf_submit(ex, twice, (void *)(intptr_t)21, &f) != 0)
    return 3;
  cf_future *both[2] = {p, f};
  if (cf_wait(both, 2, 10, CF_ALL_COMPLETED, NULL) != 0)
    return 4;
  void *a, *b;
  if (cf_future_result(p, 0, &a) != 0 || cf_future_result(f, 0, &b) != 0)
    return 5;
  printf("consumer: %ld %ld\n", (long)(intptr_t)a, (long)(intptr_t)b);
  cf_future_unref(p);
  cf_future_unref(f);
  cf_executor_free(ex);
  return 0;
}
