/* Smoke tests of the example programs: each test runs an example as a child
 * process (only on 127.0.0.1, bounded by the example's own limits and by
 * meson's timeout), then checks its exit status and the numbers in its
 * summary.
 *
 *   test_examples crawler PATH/TO/crawler
 *   test_examples echo    PATH/TO/echo_server
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static const char *exe; /* the example under test */

typedef struct run {
  int status; /* exit status, or -1 if it did not exit normally */
  char *out;  /* its stdout (stderr goes to the test log) */
} run;

/* Runs `exe args` and collects its stdout and exit status. */
static run run_example(const char *args) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "'%s' %s", exe, args);
  run r = {-1, NULL};
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t len = 0, cap = 1 << 16;
  r.out = malloc(cap);
  assert_non_null(r.out);
  size_t k;
  while ((k = fread(r.out + len, 1, cap - 1 - len, p)) > 0) {
    len += k;
    if (len + 1 == cap) {
      r.out = realloc(r.out, cap *= 2);
      assert_non_null(r.out);
    }
  }
  r.out[len] = '\0';
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  printf("# %s -> exit %d\n", cmd, r.status); /* TAP comments */
  for (char *line = r.out, *end; *line; line = end + (*end != '\0')) {
    end = line + strcspn(line, "\n");
    printf("#   %.*s\n", (int)(end - line), line);
  }
  return r;
}

/* The number after "name:" at the start of a summary line (leading spaces
 * allowed); -1 if no such line. */
static long field(const run *r, const char *name) {
  size_t n = strlen(name);
  for (const char *line = r->out; *line;) {
    line += strspn(line, " ");
    if (strncmp(line, name, n) == 0 && line[n] == ':')
      return strtol(line + n + 1, NULL, 10);
    line += strcspn(line, "\n");
    line += *line != '\0';
  }
  return -1;
}

static bool has_line(const run *r, const char *text) {
  size_t n = strlen(text);
  for (const char *s = r->out; (s = strstr(s, text)) != NULL; s += n)
    if ((s == r->out || s[-1] == '\n') && (s[n] == '\n' || s[n] == '\0'))
      return true;
  return false;
}

/* ---- crawler ------------------------------------------------------------ */

/* The demo site has 3000 pages, 30 distinct missing pages, 6 links to a
 * closed port, 1 slow page and 1 link to another host (see crawler.c). */
static void crawler_demo(void **state) {
  (void)state;
  run r = run_example("--demo -n 16");
  assert_int_equal(r.status, 0);
  assert_true(has_line(&r, "demo: PASS"));
  assert_null(strstr(r.out, "MISMATCH"));
  assert_int_equal(field(&r, "pages"), 3000);
  assert_int_equal(field(&r, "failed"), 37);
  assert_int_equal(field(&r, "http 404"), 30);
  assert_int_equal(field(&r, "refused"), 6);
  assert_int_equal(field(&r, "timeouts"), 1);
  assert_int_equal(field(&r, "unknown host"), 0);
  assert_int_equal(field(&r, "other"), 0);
  assert_int_equal(field(&r, "offsite"), 1);
  assert_true(field(&r, "bytes") > 3000 * 100);
  free(r.out);
}

/* One request in flight at a time gives the same totals. */
static void crawler_demo_one_in_flight(void **state) {
  (void)state;
  run r = run_example("--demo -n 1 -q");
  assert_int_equal(r.status, 0);
  assert_true(has_line(&r, "demo: PASS"));
  assert_int_equal(field(&r, "pages"), 3000);
  assert_int_equal(field(&r, "failed"), 37);
  free(r.out);
}

/* Crawling a URL where nothing listens: one refused request, a summary,
 * exit 0 (a failed URL is a result, not a crash). Port 1 is privileged
 * and unused here. */
static void crawler_refused_start(void **state) {
  (void)state;
  run r = run_example("http://127.0.0.1:1/ -t 2 -q");
  assert_int_equal(r.status, 0);
  assert_int_equal(field(&r, "pages"), 0);
  assert_int_equal(field(&r, "refused"), 1);
  assert_int_equal(field(&r, "failed"), 1);
  free(r.out);
}

static void crawler_usage(void **state) {
  (void)state;
  const char *bad[] = {"", "ftp://127.0.0.1/", "--demo -n 0",
                       "--demo -n 100000", "--demo http://127.0.0.1/"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    run r = run_example(bad[i]);
    assert_int_equal(r.status, 2);
    free(r.out);
  }
}

/* ---- echo_server -------------------------------------------------------- */

/* 50 connections x 200 messages of 0..64 KiB, every reply checked. */
static void echo_selftest(void **state) {
  (void)state;
  run r = run_example("selftest -c 50 -m 200");
  assert_int_equal(r.status, 0);
  assert_true(has_line(&r, "result:         PASS"));
  assert_int_equal(field(&r, "connections"), 50);
  assert_int_equal(field(&r, "failed"), 0);
  assert_int_equal(field(&r, "messages"), 10000);
  assert_int_equal(field(&r, "server echoed"), 10000);
  assert_int_equal(field(&r, "server errors"), 0);
  assert_true(field(&r, "bytes") > 0);
  free(r.out);
}

/* Tiny frames, often glued two to a write and cut anywhere (even inside
 * the 4-byte header): the framing must keep them apart. */
static void echo_tiny_frames(void **state) {
  (void)state;
  run r = run_example("selftest -c 4 -m 3000 -s 8");
  assert_int_equal(r.status, 0);
  assert_int_equal(field(&r, "messages"), 12000);
  assert_int_equal(field(&r, "server echoed"), 12000);
  free(r.out);
}

/* Empty messages only: a frame of length 0 is still a message. */
static void echo_empty_frames(void **state) {
  (void)state;
  run r = run_example("selftest -c 2 -m 500 -s 0");
  assert_int_equal(r.status, 0);
  assert_int_equal(field(&r, "messages"), 1000);
  assert_int_equal(field(&r, "bytes"), 0);
  free(r.out);
}

/* A client against a port where nothing listens fails, and says so. */
static void echo_client_refused(void **state) {
  (void)state;
  run r = run_example("client -p 1 -c 3 -m 5");
  assert_int_equal(r.status, 1);
  assert_int_equal(field(&r, "failed"), 3);
  assert_true(has_line(&r, "result:         FAIL"));
  free(r.out);
}

static void echo_usage(void **state) {
  (void)state;
  const char *bad[] = {"selftest -c 0", "selftest -s 65537", "client",
                       "serve -w 0", "nonsense"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    run r = run_example(bad[i]);
    assert_int_equal(r.status, 2);
    free(r.out);
  }
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s crawler|echo PATH\n", argv[0]);
    return 2;
  }
  exe = argv[2];
  if (strcmp(argv[1], "crawler") == 0) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crawler_demo),
        cmocka_unit_test(crawler_demo_one_in_flight),
        cmocka_unit_test(crawler_refused_start),
        cmocka_unit_test(crawler_usage),
    };
    return cmocka_run_group_tests_name("crawler", tests, NULL, NULL);
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(echo_selftest),
      cmocka_unit_test(echo_tiny_frames),
      cmocka_unit_test(echo_empty_frames),
      cmocka_unit_test(echo_client_refused),
      cmocka_unit_test(echo_usage),
  };
  return cmocka_run_group_tests_name("echo_server", tests, NULL, NULL);
}
