/* Greenlets: switching with values, parents, failures reaching the parent,
 * the states, misuse, stack pooling and the guard page. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <cfutures.h>

static cf_greenlet *g_main, *g_a, *g_b;

/* Ping-pong: receives 1, switches 2 back to main, gets 3, returns 4. */
static int pingpong(void *arg, void **out) {
  if ((intptr_t)arg != 1)
    return cf_fail(CF_EINVAL, "started with %ld", (long)(intptr_t)arg);
  void *v = NULL;
  int rc = cf_greenlet_switch(g_main, (void *)2, &v);
  if (rc != 0 || (intptr_t)v != 3)
    return cf_fail(CF_EINVAL, "resumed with %d/%ld", rc, (long)(intptr_t)v);
  *out = (void *)4;
  return 0;
}

static void test_switch_values(void **state) {
  (void)state;
  g_main = cf_greenlet_current();
  assert_non_null(g_main);
  assert_null(cf_greenlet_parent(g_main));
  assert_int_equal(cf_greenlet_new(pingpong, NULL, 0, &g_a), 0);
  assert_ptr_equal(cf_greenlet_parent(g_a), g_main);
  assert_false(cf_greenlet_started(g_a));
  void *v = NULL;
  assert_int_equal(cf_greenlet_switch(g_a, (void *)1, &v), 0);
  assert_int_equal((intptr_t)v, 2);
  assert_true(cf_greenlet_started(g_a));
  assert_false(cf_greenlet_dead(g_a));
  assert_ptr_equal(cf_greenlet_current(), g_main);
  assert_int_equal(cf_greenlet_switch(g_a, (void *)3, &v), 0);
  assert_int_equal((intptr_t)v, 4);
  assert_true(cf_greenlet_dead(g_a));
  cf_error e;
  assert_int_equal(cf_greenlet_error(g_a, &e), 0);
  assert_int_equal(e.code, 0);
  /* A dead greenlet cannot be switched to; the current one answers at once. */
  assert_int_equal(cf_greenlet_switch(g_a, NULL, &v), CF_EINVALSTATE);
  assert_int_equal(cf_greenlet_switch(g_main, (void *)9, &v), 0);
  assert_int_equal((intptr_t)v, 9);
  assert_int_equal(cf_greenlet_free(g_a), 0);
}

/* b's parent is a: when b returns, a gets b's value, then returns it + 1. */
static int child_b(void *arg, void **out) {
  *out = (void *)((intptr_t)arg * 10);
  return 0;
}

static int parent_a(void *arg, void **out) {
  void *v = NULL;
  int rc = cf_greenlet_switch(g_b, arg, &v);
  if (rc != 0)
    return rc;
  *out = (void *)((intptr_t)v + 1);
  return 0;
}

static void test_parents(void **state) {
  (void)state;
  g_main = cf_greenlet_current();
  assert_int_equal(cf_greenlet_new(parent_a, NULL, 0, &g_a), 0);
  assert_int_equal(cf_greenlet_new(child_b, g_a, 32 * 1024, &g_b), 0);
  assert_ptr_equal(cf_greenlet_parent(g_b), g_a);
  void *v = NULL;
  assert_int_equal(cf_greenlet_switch(g_a, (void *)7, &v), 0);
  assert_int_equal((intptr_t)v, 71);
  assert_true(cf_greenlet_dead(g_a) && cf_greenlet_dead(g_b));
  assert_int_equal(cf_greenlet_free(g_b), 0);
  assert_int_equal(cf_greenlet_free(g_a), 0);

  /* A child that ends after its parent ended goes to the grandparent. */
  assert_int_equal(cf_greenlet_new(parent_a, NULL, 0, &g_a), 0);
  assert_int_equal(cf_greenlet_new(child_b, g_a, 0, &g_b), 0);
  assert_int_equal(cf_greenlet_switch(g_a, (void *)1, &v), 0); /* a ends */
  assert_int_equal((intptr_t)v, 11);
  cf_greenlet_free(g_b);
  cf_greenlet_free(g_a);
}

static int failing(void *arg, void **out) {
  (void)arg;
  (void)out;
  return cf_fail(CF_ETOOBIG, "the answer is too big");
}

static void test_failure_reaches_parent(void **state) {
  (void)state;
  assert_int_equal(cf_greenlet_new(failing, NULL, 0, &g_a), 0);
  void *v = (void *)1;
  assert_int_equal(cf_greenlet_switch(g_a, NULL, &v), CF_ETOOBIG);
  assert_null(v);
  assert_non_null(strstr(cf_last_error(), "the answer is too big"));
  cf_error e;
  assert_int_equal(cf_greenlet_error(g_a, &e), 0);
  assert_int_equal(e.code, CF_ETOOBIG);
  assert_string_equal(e.message, "the answer is too big");
  assert_int_equal(cf_greenlet_free(g_a), 0);
}

static void *switch_from_other_thread(void *g) {
  return (void *)(intptr_t)cf_greenlet_switch(g, NULL, NULL);
}

static void *free_from_other_thread(void *g) {
  return (void *)(intptr_t)cf_greenlet_free(g);
}

static int suspend_once(void *arg, void **out) {
  (void)arg;
  cf_greenlet_switch(cf_greenlet_parent(cf_greenlet_current()), NULL, NULL);
  *out = NULL;
  return 0;
}

static void test_misuse(void **state) {
  (void)state;
  cf_greenlet *g = (cf_greenlet *)1;
  assert_int_equal(cf_greenlet_new(NULL, NULL, 0, &g), CF_EINVAL);
  assert_null(g);
  assert_int_equal(cf_greenlet_new(suspend_once, NULL, 0, NULL), CF_EINVAL);
  assert_int_equal(cf_greenlet_new(suspend_once, NULL, 1024, &g), CF_EINVAL);
  assert_int_equal(cf_greenlet_new(suspend_once, NULL, (size_t)1 << 40, &g),
                   CF_EINVAL);
  assert_int_equal(cf_greenlet_switch(NULL, NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_greenlet_error(NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_greenlet_free(NULL), 0);
  assert_int_equal(cf_greenlet_free(cf_greenlet_current()), CF_EINVAL);

  assert_int_equal(cf_greenlet_new(suspend_once, NULL, 0, &g), 0);
  cf_error e;
  assert_int_equal(cf_greenlet_error(g, &e), CF_EINVALSTATE);
  assert_int_equal(cf_greenlet_switch(g, NULL, NULL), 0); /* suspended */
  assert_int_equal(cf_greenlet_free(g), CF_EBUSY);
  pthread_t th;
  void *rc;
  assert_int_equal(pthread_create(&th, NULL, switch_from_other_thread, g), 0);
  pthread_join(th, &rc);
  assert_int_equal((intptr_t)rc, CF_EPERM);
  assert_int_equal(pthread_create(&th, NULL, free_from_other_thread, g), 0);
  pthread_join(th, &rc);
  assert_int_equal((intptr_t)rc, CF_EPERM);
  assert_int_equal(cf_greenlet_switch(g, NULL, NULL), 0); /* it ends */
  assert_true(cf_greenlet_dead(g));
  assert_int_equal(cf_greenlet_free(g), 0);
  /* Never started: freed as is. */
  assert_int_equal(cf_greenlet_new(suspend_once, NULL, 0, &g), 0);
  assert_int_equal(cf_greenlet_free(g), 0);
}

/* Two greenlets sum and multiply 1..n, switching after every step (the
 * greenlet exercise); stacks are pooled across many short greenlets. */
typedef struct acc {
  uint64_t value;
  int n;
  bool add;
} acc;

/* One step, then back to the parent (main), n times. */
static int accumulate(void *arg, void **out) {
  acc *a = arg;
  for (int i = 1; i <= a->n; i++) {
    a->value = a->add ? a->value + (uint64_t)i
                      : (a->value * (uint64_t)i) % 1000003u;
    cf_greenlet_switch(cf_greenlet_parent(cf_greenlet_current()), NULL, NULL);
  }
  *out = NULL;
  return 0;
}

static void test_many_switches_and_pooling(void **state) {
  (void)state;
  acc sum = {.n = 10000, .add = true, .value = 0};
  acc prod = {.n = 10000, .add = false, .value = 1};
  assert_int_equal(cf_greenlet_new(accumulate, NULL, 0, &g_a), 0);
  assert_int_equal(cf_greenlet_new(accumulate, NULL, 0, &g_b), 0);
  assert_int_equal(cf_greenlet_switch(g_a, &sum, NULL), 0);
  assert_int_equal(cf_greenlet_switch(g_b, &prod, NULL), 0);
  int rounds = 0;
  while (!cf_greenlet_dead(g_a) || !cf_greenlet_dead(g_b)) {
    if (!cf_greenlet_dead(g_a))
      assert_int_equal(cf_greenlet_switch(g_a, NULL, NULL), 0);
    if (!cf_greenlet_dead(g_b))
      assert_int_equal(cf_greenlet_switch(g_b, NULL, NULL), 0);
    rounds++;
  }
  assert_int_equal(rounds, 10000);
  assert_true(sum.value == 50005000u);
  uint64_t want = 1;
  for (uint64_t i = 1; i <= 10000; i++)
    want = want * i % 1000003u;
  assert_true(prod.value == want);
  assert_int_equal(cf_greenlet_free(g_a), 0);
  assert_int_equal(cf_greenlet_free(g_b), 0);
  for (int i = 0; i < 5000; i++) {
    cf_greenlet *g;
    assert_int_equal(cf_greenlet_new(child_b, NULL, 0, &g), 0);
    void *v;
    assert_int_equal(cf_greenlet_switch(g, (void *)(intptr_t)i, &v), 0);
    assert_int_equal((intptr_t)v, i * 10);
    assert_int_equal(cf_greenlet_free(g), 0);
  }
}

static int recurse(int depth) {
  volatile char pad[512];
  pad[0] = (char)depth;
  return depth > 0 ? recurse(depth - 1) + pad[0] : 0;
}

static int overflow(void *arg, void **out) {
  (void)arg;
  *out = (void *)(intptr_t)recurse(1 << 20);
  return 0;
}

/* A greenlet that overflows its stack hits the guard page: the process
 * dies (SIGSEGV, or the sanitizer's report and abort), it does not go on
 * with corrupted memory. */
static void test_guard_page(void **state) {
  (void)state;
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    alarm(20);
    cf_greenlet *g;
    if (cf_greenlet_new(overflow, NULL, 16 * 1024, &g) != 0)
      _exit(3);
    cf_greenlet_switch(g, NULL, NULL);
    _exit(0); /* reached only if the overflow went unnoticed */
  }
  int st = 0;
  waitpid(pid, &st, 0);
  assert_false(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  if (WIFSIGNALED(st))
    assert_true(WTERMSIG(st) == SIGSEGV || WTERMSIG(st) == SIGABRT ||
                WTERMSIG(st) == SIGBUS);
  else
    assert_int_not_equal(WEXITSTATUS(st), 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_switch_values),
      cmocka_unit_test(test_parents),
      cmocka_unit_test(test_failure_reaches_parent),
      cmocka_unit_test(test_misuse),
      cmocka_unit_test(test_many_switches_and_pooling),
      cmocka_unit_test(test_guard_page),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
