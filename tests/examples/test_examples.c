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
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *exe; /* the example under test */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

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

/* The demo site (examples/crawl_site.c): 3000 generated pages and 25 pages
 * under /t/ reachable by a correct crawler (2 more that robots.txt
 * disallows), 32 missing pages (30 under /missing/, 2 under /t/), 6 links
 * to a closed port, whose robots.txt is refused, 1 slow page, 2 links to
 * other hosts, 19 redirects: 2 to other hosts, 2 to known URLs, and a
 * chain of 12 that the default limit of 10 hops cuts. The demo checks
 * itself from the site's request log; these are the totals it prints. */
static void crawler_demo(void **state) {
  (void)state;
  run r = run_example("--demo -n 16");
  assert_int_equal(r.status, 0);
  assert_true(has_line(&r, "demo: PASS"));
  assert_null(strstr(r.out, "MISMATCH"));
  assert_int_equal(field(&r, "pages"), 3025);
  assert_int_equal(field(&r, "failed"), 35);
  assert_int_equal(field(&r, "http 404"), 32);
  assert_int_equal(field(&r, "refused"), 1);
  assert_int_equal(field(&r, "timeouts"), 1);
  assert_int_equal(field(&r, "unknown host"), 0);
  assert_int_equal(field(&r, "redirect limit"), 1);
  assert_int_equal(field(&r, "other"), 0);
  assert_int_equal(field(&r, "offsite"), 2);
  assert_int_equal(field(&r, "redirects"), 19);
  assert_int_equal(field(&r, "disallowed"), 2);
  assert_int_equal(field(&r, "unreachable"), 6);
  assert_true(field(&r, "bytes") > 3000 * 100);
  assert_true(has_line(&r, "site:           3078 requests served, 0 repeated, "
                           "0 to the other host"));
  free(r.out);
}

/* --green: the requests are green tasks on ONE thread (libcurl's easy API
 * unchanged, its waits made cooperative by libcfutures_patch), the same
 * totals and check, and the site saw several connections at once: the
 * transfers really overlapped (without the patch they could not). */
static void crawler_demo_green(void **state) {
  (void)state;
  run r = run_example("--demo --green -n 16 -q");
  assert_int_equal(r.status, 0);
  assert_true(has_line(&r, "demo: PASS"));
  assert_int_equal(field(&r, "pages"), 3025);
  assert_int_equal(field(&r, "failed"), 35);
  assert_int_equal(field(&r, "redirects"), 19);
  assert_int_equal(field(&r, "threads"), 1);
  assert_true(field(&r, "concurrency") >= 2);
  assert_true(has_line(&r, "site:           3078 requests served, 0 repeated, "
                           "0 to the other host"));
  free(r.out);
}

/* One request in flight at a time gives the same totals. */
static void crawler_demo_one_in_flight(void **state) {
  (void)state;
  run r = run_example("--demo -n 1 -q");
  assert_int_equal(r.status, 0);
  assert_true(has_line(&r, "demo: PASS"));
  assert_int_equal(field(&r, "pages"), 3025);
  assert_int_equal(field(&r, "failed"), 35);
  free(r.out);
}

/* Without robots.txt: the 2 disallowed pages are fetched, and each of the
 * 6 links to the closed port is refused. */
static void crawler_demo_no_robots(void **state) {
  (void)state;
  run r = run_example("--demo --no-robots -q");
  assert_int_equal(r.status, 0);
  assert_true(has_line(&r, "demo: PASS"));
  assert_int_equal(field(&r, "pages"), 3027);
  assert_int_equal(field(&r, "refused"), 6);
  assert_int_equal(field(&r, "failed"), 40);
  assert_int_equal(field(&r, "disallowed"), -1); /* no such line */
  free(r.out);
}

/* --dir-index "": /t/d/ and /t/d/index.html are two pages (the site
 * serves one page there and expects it asked twice). */
static void crawler_demo_dir_index_off(void **state) {
  (void)state;
  run r = run_example("--demo --dir-index '' -q");
  assert_int_equal(r.status, 0);
  assert_true(has_line(&r, "demo: PASS"));
  assert_int_equal(field(&r, "pages"), 3026);
  free(r.out);
}

/* -r 2: chains are cut after 2 hops (the 12-hop chain and r1 -> r2 -> r3
 * still fits). */
static void crawler_demo_redirect_limit(void **state) {
  (void)state;
  run r = run_example("--demo -r 2 -q");
  assert_int_equal(r.status, 0);
  assert_true(has_line(&r, "demo: PASS"));
  assert_int_equal(field(&r, "redirects"), 11);
  assert_int_equal(field(&r, "redirect limit"), 1);
  free(r.out);
}

/* Limits end the crawl early; the demo then checks only what must hold
 * anyway (nothing asked twice, nothing forbidden, nothing elsewhere). */
static void crawler_demo_limits(void **state) {
  (void)state;
  run r = run_example("--demo -d 0 -q");
  assert_int_equal(r.status, 0);
  assert_true(has_line(&r, "demo: PASS (a partial crawl: checked what must "
                           "hold anyway)"));
  assert_int_equal(field(&r, "pages"), 1);
  assert_int_equal(field(&r, "too deep"), 6); /* page 0's links */
  free(r.out);
  r = run_example("--demo -l 100 -q");
  assert_int_equal(r.status, 0);
  assert_true(has_line(&r, "demo: PASS (a partial crawl: checked what must "
                           "hold anyway)"));
  assert_true(has_line(&r, "requests:       102 (100 for pages, 2 for "
                           "robots.txt)"));
  assert_true(field(&r, "left") > 0);
  free(r.out);
}

/* Ctrl-C: SIGINT half a second into a crawl that takes longer (one request
 * at a time, a page that times out after 2 s) stops it with exit 130, the
 * summary so far and the demo's partial check. */
static void crawler_sigint(void **state) {
  (void)state;
  int out[2];
  assert_int_equal(pipe(out), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    close(out[1]);
    execl(exe, exe, "--demo", "-n", "1", "-q", (char *)NULL);
    _exit(127);
  }
  close(out[1]);
  char buf[1 << 16];
  size_t len = 0;
  ssize_t k;
  /* The banner comes first: the crawl has begun. */
  while (!memchr(buf, '\n', len) &&
         (k = read(out[0], buf + len, sizeof buf - 1 - len)) > 0)
    len += (size_t)k;
  struct timespec half = {0, 500 * 1000 * 1000};
  nanosleep(&half, NULL);
  kill(pid, SIGINT);
  double t0 = now();
  while ((k = read(out[0], buf + len, sizeof buf - 1 - len)) > 0)
    len += (size_t)k;
  buf[len] = '\0';
  close(out[0]);
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  for (char *line = buf, *end; *line; line = end + (*end != '\0')) {
    end = line + strcspn(line, "\n");
    printf("#   %.*s\n", (int)(end - line), line); /* TAP comments */
  }
  assert_true(now() - t0 < 4.0); /* in-flight requests end within 2 s */
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 130);
  run r = {130, buf};
  assert_true(field(&r, "interrupted") >= 0);
  assert_true(field(&r, "pages") < 3025);
  assert_true(has_line(&r, "demo: PASS (a partial crawl: checked what must "
                           "hold anyway)"));
}

/* Crawling a URL where nothing listens: its robots.txt is refused, which
 * (RFC 9309) disallows the origin: one refused request, the start URL left
 * alone, a summary, exit 0 (a failed URL is a result, not a crash). Port 1
 * is privileged and unused here. */
static void crawler_refused_start(void **state) {
  (void)state;
  run r = run_example("http://127.0.0.1:1/ -t 2 -q");
  assert_int_equal(r.status, 0);
  assert_int_equal(field(&r, "pages"), 0);
  assert_int_equal(field(&r, "refused"), 1);
  assert_int_equal(field(&r, "failed"), 1);
  assert_int_equal(field(&r, "unreachable"), 1);
  free(r.out);
  r = run_example("http://127.0.0.1:1/ -t 2 -q --no-robots");
  assert_int_equal(r.status, 0);
  assert_int_equal(field(&r, "pages"), 0);
  assert_int_equal(field(&r, "refused"), 1);
  assert_int_equal(field(&r, "failed"), 1);
  free(r.out);
}

static void crawler_usage(void **state) {
  (void)state;
  const char *bad[] = {"",
                       "ftp://127.0.0.1/",
                       "--demo -n 0",
                       "--demo -n 100000",
                       "--demo http://127.0.0.1/",
                       "--demo -d -1",
                       "--demo -r x",
                       "--demo -l 0",
                       "--demo --dir-index a/b",
                       "'http://bad host/'"};
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
        cmocka_unit_test(crawler_demo_green),
        cmocka_unit_test(crawler_demo_no_robots),
        cmocka_unit_test(crawler_demo_dir_index_off),
        cmocka_unit_test(crawler_demo_redirect_limit),
        cmocka_unit_test(crawler_demo_limits),
        cmocka_unit_test(crawler_sigint),
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
