/* A host that loads cfutures with dlopen, as a plugin system or a
 * language binding does: the fresh image of this program would not load
 * the library by itself, so the pool preloads it into its fork server.
 * Exits 0 when tasks defined here ran in the workers and returned right.
 * argv[1]: the path of libcfutures.so. Bounded by alarm(). */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The types, declared here: this program does not include cfutures.h
 * nor link with the library. */
typedef struct cf_executor cf_executor;
typedef struct cf_future cf_future;
typedef int (*task_fn)(void *arg, void **out);

static int doubled(void *arg, void **out) {
  *out = (void *)(2 * (intptr_t)arg);
  return 0;
}

static int preload_seen(void *arg, void **out) {
  (void)arg;
  /* the server puts LD_PRELOAD back as the host had it: unset */
  *out = (void *)(intptr_t)(getenv("LD_PRELOAD") != NULL);
  return 0;
}

#define LOAD(var, name)                                                        \
  do {                                                                         \
    *(void **)&var = dlsym(lib, name);                                         \
    if (!var) {                                                                \
      fprintf(stderr, "dlsym %s: %s\n", name, dlerror());                      \
      return 1;                                                                \
    }                                                                          \
  } while (0)

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: dlopen_host LIBCFUTURES\n");
    return 2;
  }
  alarm(60);
  unsetenv("LD_PRELOAD");
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 1;
  }
  int (*pool_new)(const void *, cf_executor **);
  int (*submit)(cf_executor *, task_fn, void *, cf_future **);
  int (*result)(cf_future *, double, void **);
  void (*unref)(cf_future *);
  void (*ex_free)(cf_executor *);
  const char *(*last_error)(void);
  LOAD(pool_new, "cf_process_pool_new");
  LOAD(submit, "cf_submit");
  LOAD(result, "cf_future_result");
  LOAD(unref, "cf_future_unref");
  LOAD(ex_free, "cf_executor_free");
  LOAD(last_error, "cf_last_error");
  cf_executor *ex;
  if (pool_new(NULL, &ex) != 0) {
    fprintf(stderr, "cf_process_pool_new: %s\n", last_error());
    return 1;
  }
  int bad = 0;
  for (intptr_t i = 0; i < 10; i++) {
    cf_future *f;
    void *v = NULL;
    if (submit(ex, doubled, (void *)i, &f) != 0 || result(f, 30, &v) != 0) {
      fprintf(stderr, "task %ld: %s\n", (long)i, last_error());
      return 1;
    }
    bad += (intptr_t)v != 2 * i;
    unref(f);
  }
  cf_future *f;
  void *v = (void *)1;
  if (submit(ex, preload_seen, NULL, &f) != 0 || result(f, 30, &v) != 0) {
    fprintf(stderr, "preload_seen: %s\n", last_error());
    return 1;
  }
  unref(f);
  ex_free(ex);
  if (bad || v) {
    fprintf(stderr, "%d wrong results; LD_PRELOAD %s in the workers\n", bad,
            v ? "left set" : "restored");
    return 1;
  }
  printf("dlopen_host: 10 tasks of a host that dlopen'd cfutures: ok\n");
  return 0;
}
