/* Debug mode (CFUTURES_DEBUG=1, read at the first allocation): futures come
 * from libc's malloc, so memory tools see them, and misuse is reported by
 * name and aborts instead of silently working.
 *
 * Each scenario runs in a fresh exec of this program (the mode is read once
 * per process) with the variable set; the test reads its stderr and exit
 * status. Bounded: a child that takes more than 20 s is killed. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <cfutures.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif
#ifdef UNDER_SANITIZER
/* From the sanitizers' allocator interface (no header in gcc 12): true
 * when their malloc made p. */
int __sanitizer_get_ownership(const volatile void *p);
#endif

/* ---- the scenarios, run in the child -------------------------------------- */

static int identity(void *arg, void **out) {
  *out = arg;
  return 0;
}

static int scenario(const char *name) {
  if (strcmp(name, "double_unref") == 0) {
    cf_future *f = cf_future_new();
    cf_future_unref(f);
    cf_future_unref(f); /* reported, aborts */
  } else if (strcmp(name, "use_after_unref") == 0) {
    cf_future *f = cf_future_new();
    cf_future_set_result(f, (void *)7, NULL);
    cf_future_unref(f);
    void *v = NULL;
    cf_future_result(f, 0, &v); /* reported, aborts */
  } else if (strcmp(name, "wait_on_freed") == 0) {
    cf_future *a = cf_future_new(), *b = cf_future_new();
    cf_future_unref(b);
    cf_future *fs[2] = {a, b};
    cf_wait(fs, 2, 0, CF_ALL_COMPLETED, NULL); /* reported, aborts */
  } else if (strcmp(name, "task_double_unref") == 0) {
    cf_executor *ex = NULL;
    cf_thread_pool_opts o = {.max_workers = 2};
    if (cf_thread_pool_new(&o, &ex) != 0)
      return 3;
    cf_future *f = NULL;
    if (cf_submit(ex, identity, (void *)5, &f) != 0 ||
        cf_future_result(f, 10, NULL) != 0)
      return 3;
    cf_executor_free(ex);
    cf_future_unref(f);
    cf_future_unref(f); /* reported, aborts */
  } else if (strcmp(name, "malloc_visible") == 0) {
#ifdef UNDER_SANITIZER
    /* The sanitizer's malloc made the future: its tools see it. */
    cf_future *f = cf_future_new();
    int owned = f && __sanitizer_get_ownership(f);
    cf_future_unref(f);
    return owned ? 0 : 4;
#else
    /* Futures come from libc's malloc: its counters see them. */
    enum { N = 1000 };
    static cf_future *fs[N];
    struct mallinfo2 before = mallinfo2();
    for (int i = 0; i < N; i++)
      if (!(fs[i] = cf_future_new()))
        return 3;
    struct mallinfo2 after = mallinfo2();
    size_t grew = after.uordblks - before.uordblks;
    for (int i = 0; i < N; i++)
      cf_future_unref(fs[i]);
    printf("# grew %zu\n", grew); /* a TAP comment: it reaches the log */
    return grew >= N * 48 ? 0 : 4;
#endif
  } else if (strcmp(name, "normal_use") == 0) {
    /* A correct program runs as usual in debug mode (quarantine and all). */
    cf_executor *ex = NULL;
    if (cf_thread_pool_new(NULL, &ex) != 0)
      return 3;
    for (intptr_t i = 0; i < 20000; i++) {
      cf_future *f = NULL;
      void *v = NULL;
      if (cf_submit(ex, identity, (void *)i, &f) != 0 ||
          cf_future_result(f, 10, &v) != 0 || (intptr_t)v != i)
        return 5;
      cf_future_unref(f);
    }
    cf_executor_free(ex);
    return 0;
  } else {
    return 2;
  }
  return 6; /* the misuse was not caught */
}

/* ---- the parent ------------------------------------------------------------ */

static char self_path[4096];

typedef struct outcome {
  int status;
  char err[4096];
} outcome;

static outcome run_child(const char *name, const char *debug) {
  outcome o = {0};
  int pfd[2];
  assert_int_equal(pipe(pfd), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(pfd[1], 2);
    close(pfd[0]);
    close(pfd[1]);
    if (debug)
      setenv("CFUTURES_DEBUG", debug, 1);
    else
      unsetenv("CFUTURES_DEBUG");
    execl(self_path, self_path, name, (char *)NULL);
    _exit(127);
  }
  close(pfd[1]);
  size_t len = 0;
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    struct pollfd p = {.fd = pfd[0], .events = POLLIN};
    int r = poll(&p, 1, 100);
    if (r > 0) {
      ssize_t k = read(pfd[0], o.err + len, sizeof o.err - 1 - len);
      if (k <= 0)
        break;
      len += (size_t)k;
    }
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (t.tv_sec - t0.tv_sec > 20) {
      kill(pid, SIGKILL);
      break;
    }
  }
  close(pfd[0]);
  waitpid(pid, &o.status, 0);
  o.err[len] = '\0';
  return o;
}

static void expect_report(const char *name, const char *call,
                          const char *what) {
  outcome o = run_child(name, "1");
  if (!WIFSIGNALED(o.status) || WTERMSIG(o.status) != SIGABRT)
    fail_msg("%s: expected an abort, got status 0x%x; stderr: %s", name,
             o.status, o.err);
  if (!strstr(o.err, call) || !strstr(o.err, what))
    fail_msg("%s: the report does not name %s / %s: %s", name, call, what,
             o.err);
}

static void test_double_unref(void **state) {
  (void)state;
  expect_report("double_unref", "cf_future_unref", "was freed");
}

static void test_use_after_unref(void **state) {
  (void)state;
  expect_report("use_after_unref", "cf_future_result", "was freed");
}

static void test_wait_on_freed(void **state) {
  (void)state;
  expect_report("wait_on_freed", "cf_wait", "was freed");
}

static void test_task_double_unref(void **state) {
  (void)state;
  expect_report("task_double_unref", "cf_future_unref", "was freed");
}

static void test_malloc_visible(void **state) {
  (void)state;
  outcome o = run_child("malloc_visible", "1");
  if (!WIFEXITED(o.status) || WEXITSTATUS(o.status) != 0)
    fail_msg("malloc_visible: status 0x%x; %s", o.status, o.err);
}

static void test_normal_use(void **state) {
  (void)state;
  const char *modes[] = {"1", "0", NULL};
  for (int i = 0; i < 3; i++) {
    outcome o = run_child("normal_use", modes[i]);
    if (!WIFEXITED(o.status) || WEXITSTATUS(o.status) != 0)
      fail_msg("normal_use (CFUTURES_DEBUG=%s): status 0x%x; %s",
               modes[i] ? modes[i] : "unset", o.status, o.err);
  }
}

int main(int argc, char **argv) {
  if (argc > 1)
    return scenario(argv[1]);
  ssize_t k = readlink("/proc/self/exe", self_path, sizeof self_path - 1);
  if (k <= 0)
    return 1;
  self_path[k] = '\0';
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_double_unref),
      cmocka_unit_test(test_use_after_unref),
      cmocka_unit_test(test_wait_on_freed),
      cmocka_unit_test(test_task_double_unref),
      cmocka_unit_test(test_malloc_visible),
      cmocka_unit_test(test_normal_use),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
