/* Tests for mp/process.c: cf_process (Python's multiprocessing.Process).
 * Children report through their exit status or a pipe; only the test's
 * own thread asserts. Every child that could outlive a failed test is a
 * daemon (it dies with the test) and carries an alarm() as a bound. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
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

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
    ;
}

/* Waits (bounded) for a child of ours by pid; its exit status or -signal,
 * -1000 if it had to be killed. */
static int reap(pid_t pid, double limit) {
  double t0 = now_s();
  int st;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
      break;
    if (r < 0)
      return -2000;
    if (now_s() - t0 > limit) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return -1000;
    }
    usleep(1000);
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

static const cf_process_opts daemon_opts = {.daemon = true};

static int return_arg(void *arg) {
  return (int)(intptr_t)arg;
}

static int sleep_arg_ms(void *arg) {
  alarm(20);
  sleep_s((double)(intptr_t)arg / 1000.0);
  return 3;
}

static int sleep_forever(void *arg) {
  (void)arg;
  alarm(20);
  for (;;)
    pause();
  return 0;
}

/* Sleeps until the parent closes its end of the pipe, then returns 3. */
static int wait_for_hangup(void *arg) {
  int *fds = arg;
  alarm(20);
  close(fds[1]);
  char c;
  while (read(fds[0], &c, 1) < 0 && errno == EINTR)
    ;
  return 3;
}

/* ---- exit codes, names, pids --------------------------------------------- */

static void test_exitcode_and_names(void **state) {
  (void)state;
  cf_process *p;
  assert_int_equal(cf_process_start(return_arg, (void *)(intptr_t)7, NULL, &p),
                   0);
  assert_true(cf_process_pid(p) > 0);
  assert_true(cf_process_pid(p) != getpid());
  assert_false(cf_process_daemon(p));
  assert_non_null(strstr(cf_process_name(p), "Process-"));
  assert_int_equal(cf_process_join(p, 10), 0);
  assert_false(cf_process_is_alive(p));
  int code = -1;
  assert_int_equal(cf_process_exitcode(p, &code), 0);
  assert_int_equal(code, 7);
  /* Joining again, and with a zero or negative timeout: done at once. */
  assert_int_equal(cf_process_join(p, CF_FOREVER), 0);
  assert_int_equal(cf_process_join(p, 0), 0);
  assert_int_equal(cf_process_join(p, -1), 0);
  /* A finished process is left alone by terminate and kill. */
  assert_int_equal(cf_process_terminate(p), 0);
  assert_int_equal(cf_process_kill(p), 0);
  assert_int_equal(cf_process_exitcode(p, &code), 0);
  assert_int_equal(code, 7);
  assert_int_equal(cf_process_free(p), 0);

  /* Default names count up; given names are copied. */
  cf_process *a, *b;
  assert_int_equal(cf_process_start(return_arg, NULL, NULL, &a), 0);
  assert_int_equal(cf_process_start(return_arg, NULL, NULL, &b), 0);
  int na = -1, nb = -1;
  assert_int_equal(sscanf(cf_process_name(a), "Process-%d", &na), 1);
  assert_int_equal(sscanf(cf_process_name(b), "Process-%d", &nb), 1);
  assert_int_equal(nb, na + 1);
  char name[] = "mailer";
  cf_process_opts o = {.name = name, .daemon = true};
  cf_process *c;
  assert_int_equal(cf_process_start(return_arg, (void *)(intptr_t)-1, &o, &c),
                   0);
  name[0] = 'X';
  assert_string_equal(cf_process_name(c), "mailer");
  assert_true(cf_process_daemon(c));
  assert_int_equal(cf_process_join(a, 10), 0);
  assert_int_equal(cf_process_join(b, 10), 0);
  assert_int_equal(cf_process_join(c, 10), 0);
  assert_int_equal(cf_process_exitcode(c, &code), 0);
  assert_int_equal(code, 255); /* an exit status has 8 bits */
  assert_int_equal(cf_process_free(a), 0);
  assert_int_equal(cf_process_free(b), 0);
  assert_int_equal(cf_process_free(c), 0);
}

/* ---- join timeouts ------------------------------------------------------- */

static void test_join_timeouts(void **state) {
  (void)state;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  cf_process *p;
  assert_int_equal(cf_process_start(wait_for_hangup, fds, &daemon_opts, &p), 0);
  close(fds[0]);
  /* Expires: not before its time, and not long after. */
  double t0 = now_s();
  assert_int_equal(cf_process_join(p, 0.1), CF_ETIMEDOUT);
  double waited = now_s() - t0;
  assert_true(waited >= 0.1);
  assert_true(waited < 1.0);
  assert_non_null(strstr(cf_last_error(), "cf_process_join"));
  /* Polls never block. */
  t0 = now_s();
  assert_int_equal(cf_process_join(p, 0), CF_ETIMEDOUT);
  assert_int_equal(cf_process_join(p, -1), CF_ETIMEDOUT);
  assert_true(now_s() - t0 < 0.5);
  assert_true(cf_process_is_alive(p));
  int code = 12345;
  assert_int_equal(cf_process_exitcode(p, &code), CF_EINVALSTATE);
  assert_int_equal(code, 12345);
  /* Still running: not freed. */
  assert_int_equal(cf_process_free(p), CF_EBUSY);
  assert_non_null(strstr(cf_last_error(), "cf_process_free"));
  /* Succeeds when the child ends in time, as soon as it ends. */
  close(fds[1]);
  t0 = now_s();
  assert_int_equal(cf_process_join(p, 10), 0);
  assert_true(now_s() - t0 < 1.0);
  assert_int_equal(cf_process_exitcode(p, &code), 0);
  assert_int_equal(code, 3);
  assert_int_equal(cf_process_free(p), 0);

  /* A finite timeout that is longer than the child needs. */
  assert_int_equal(
      cf_process_start(sleep_arg_ms, (void *)(intptr_t)50, &daemon_opts, &p),
      0);
  assert_int_equal(cf_process_join(p, 5.0), 0);
  assert_int_equal(cf_process_free(p), 0);

  /* A child that ended unjoined is reaped by is_alive, exitcode and free. */
  assert_int_equal(cf_process_start(return_arg, (void *)(intptr_t)4, NULL, &p),
                   0);
  t0 = now_s();
  while (cf_process_is_alive(p) && now_s() - t0 < 10)
    usleep(1000);
  assert_false(cf_process_is_alive(p));
  assert_int_equal(cf_process_exitcode(p, &code), 0);
  assert_int_equal(code, 4);
  assert_int_equal(cf_process_free(p), 0);
}

/* ---- signals ------------------------------------------------------------- */

static void test_kill_and_terminate(void **state) {
  (void)state;
  cf_process *p;
  int code = 0;
  assert_int_equal(cf_process_start(sleep_forever, NULL, &daemon_opts, &p), 0);
  assert_int_equal(cf_process_join(p, 0.05), CF_ETIMEDOUT);
  assert_int_equal(cf_process_kill(p), 0);
  assert_int_equal(cf_process_join(p, 10), 0);
  assert_int_equal(cf_process_exitcode(p, &code), 0);
  assert_int_equal(code, -SIGKILL);
  assert_int_equal(cf_process_free(p), 0);

  assert_int_equal(cf_process_start(sleep_forever, NULL, &daemon_opts, &p), 0);
  assert_int_equal(cf_process_terminate(p), 0);
  assert_int_equal(cf_process_join(p, 10), 0);
  assert_int_equal(cf_process_exitcode(p, &code), 0);
  assert_int_equal(code, -SIGTERM);
  /* Signalling an ended, reaped child is a no-op, not a stray signal. */
  assert_int_equal(cf_process_kill(p), 0);
  assert_int_equal(cf_process_free(p), 0);
}

/* ---- bad input ----------------------------------------------------------- */

static void test_bad_input(void **state) {
  (void)state;
  cf_process *p = (cf_process *)1;
  int code;
  assert_int_equal(cf_process_start(NULL, NULL, NULL, &p), CF_EINVAL);
  assert_null(p);
  assert_non_null(strstr(cf_last_error(), "cf_process_start"));
  assert_int_equal(cf_process_start(return_arg, NULL, NULL, NULL), CF_EINVAL);
  assert_int_equal(cf_process_join(NULL, 1), CF_EINVAL);
  assert_non_null(strstr(cf_last_error(), "cf_process_join"));
  assert_int_equal(cf_process_exitcode(NULL, &code), CF_EINVAL);
  assert_int_equal(cf_process_terminate(NULL), CF_EINVAL);
  assert_int_equal(cf_process_kill(NULL), CF_EINVAL);
  assert_false(cf_process_is_alive(NULL));
  assert_int_equal(cf_process_pid(NULL), 0);
  assert_null(cf_process_name(NULL));
  assert_false(cf_process_daemon(NULL));
  assert_int_equal(cf_process_free(NULL), 0);

  assert_int_equal(cf_process_start(return_arg, NULL, NULL, &p), 0);
  assert_int_equal(cf_process_join(p, NAN), CF_EINVAL);
  assert_non_null(strstr(cf_last_error(), "NaN"));
  assert_int_equal(cf_process_exitcode(p, NULL), CF_EINVAL);
  assert_int_equal(cf_process_join(p, 10), 0);
  assert_int_equal(cf_process_join(p, NAN), CF_EINVAL);
  assert_int_equal(cf_process_free(p), 0);
}

/* ---- concurrent joins ---------------------------------------------------- */

typedef struct joiner {
  cf_process *p;
  double timeout;
  int rc, code, code_rc;
  bool alive_after;
} joiner;

static void *join_main(void *arg) {
  joiner *j = arg;
  j->rc = cf_process_join(j->p, j->timeout);
  j->alive_after = cf_process_is_alive(j->p);
  j->code_rc = cf_process_exitcode(j->p, &j->code);
  return NULL;
}

static void test_concurrent_joins(void **state) {
  (void)state;
  for (int round = 0; round < 3; round++) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    cf_process *p;
    assert_int_equal(cf_process_start(wait_for_hangup, fds, &daemon_opts, &p),
                     0);
    close(fds[0]);
    enum { N = 6 };
    joiner js[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
      /* Two give up early; the others wait, forever or long enough. */
      double t = i < 2 ? 0.02 : i % 2 ? CF_FOREVER : 10.0;
      js[i] = (joiner){.p = p, .timeout = t};
      assert_int_equal(pthread_create(&th[i], NULL, join_main, &js[i]), 0);
    }
    /* The child ends only once the early ones have given up. */
    for (int i = 0; i < 2; i++)
      assert_int_equal(pthread_join(th[i], NULL), 0);
    usleep(round * 20000); /* the others are waiting by now, or not yet */
    close(fds[1]);
    for (int i = 2; i < N; i++)
      assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < N; i++) {
      if (i < 2) {
        assert_int_equal(js[i].rc, CF_ETIMEDOUT);
        assert_true(js[i].alive_after);
        assert_int_equal(js[i].code_rc, CF_EINVALSTATE);
        continue;
      }
      assert_int_equal(js[i].rc, 0);
      assert_false(js[i].alive_after);
      assert_int_equal(js[i].code_rc, 0);
      assert_int_equal(js[i].code, 3);
    }
    assert_int_equal(cf_process_free(p), 0);
  }
}

/* ---- only our children are reaped ---------------------------------------- */

static void test_leaves_other_children(void **state) {
  (void)state;
  pid_t other = fork();
  assert_true(other >= 0);
  if (other == 0) {
    usleep(100000);
    _exit(42);
  }
  cf_process *p;
  assert_int_equal(
      cf_process_start(sleep_arg_ms, (void *)(intptr_t)300, NULL, &p), 0);
  assert_int_equal(cf_process_join(p, 10), 0);
  /* The other child ended while we joined ours; its status is still ours
   * to collect. */
  assert_int_equal(reap(other, 10), 42);
  assert_int_equal(cf_process_free(p), 0);
}

/* ---- daemons ------------------------------------------------------------- */

/* The intermediate parent, a fresh run of this program (see main):
 * starts a child that sleeps, writes its pid to the pipe, and exits
 * without joining it. */
static _Noreturn void intermediate(int wfd, bool daemon) {
  cf_process_opts o = {.daemon = daemon};
  cf_process *p;
  if (cf_process_start(sleep_forever, NULL, &o, &p) != 0)
    _exit(1);
  pid_t pid = cf_process_pid(p);
  if (write(wfd, &pid, sizeof pid) != (ssize_t)sizeof pid)
    _exit(2);
  usleep(50000); /* let it settle in its sleep */
  _exit(0);
}

static pid_t grandchild(bool daemon) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t mid = fork();
  assert_true(mid >= 0);
  if (mid == 0) {
    /* A fresh program, single-threaded like a real parent (a fork of this
     * threaded test could not start threads under TSan). */
    char fd[16];
    snprintf(fd, sizeof fd, "%d", fds[1]);
    close(fds[0]);
    execl("/proc/self/exe", "test_process", "--intermediate", fd,
          daemon ? "daemon" : "plain", (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  pid_t pid = 0;
  assert_int_equal(read(fds[0], &pid, sizeof pid), (ssize_t)sizeof pid);
  close(fds[0]);
  assert_int_equal(reap(mid, 10), 0);
  return pid;
}

static void test_daemon_dies_with_parent(void **state) {
  (void)state;
  /* Orphans come to us, so that we can see how they end. */
  assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  pid_t d = grandchild(true);
  double t0 = now_s();
  assert_int_equal(reap(d, 5), -SIGKILL); /* killed, well within 5 s */
  assert_true(now_s() - t0 < 5);

  /* A non-daemon lives on after its parent: still there, and it is ours
   * (the subreaper's) to end. */
  pid_t nd = grandchild(false);
  usleep(200000);
  int st;
  assert_int_equal(waitpid(nd, &st, WNOHANG), 0);
  kill(nd, SIGKILL);
  assert_int_equal(reap(nd, 5), -SIGKILL);
  assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
}

static void *start_daemon(void *arg) {
  cf_process **out = arg;
  if (cf_process_start(sleep_forever, NULL, &daemon_opts, out) != 0)
    *out = NULL;
  return NULL;
}

/* PR_SET_PDEATHSIG fires when the forking thread ends: a daemon started
 * by a short-lived thread must not die with that thread. */
static void test_daemon_outlives_starting_thread(void **state) {
  (void)state;
  cf_process *p = NULL;
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, start_daemon, &p), 0);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_non_null(p);
  assert_int_equal(cf_process_join(p, 0.3), CF_ETIMEDOUT);
  assert_true(cf_process_is_alive(p));
  assert_int_equal(cf_process_kill(p), 0);
  assert_int_equal(cf_process_join(p, 10), 0);
  int code;
  assert_int_equal(cf_process_exitcode(p, &code), 0);
  assert_int_equal(code, -SIGKILL);
  assert_int_equal(cf_process_free(p), 0);
}

/* ---- the child works on copies of our memory and descriptors ------------- */

static int write_arg(void *arg) {
  int fd = (int)(intptr_t)arg;
  return write(fd, "c", 1) == 1 ? 0 : 1;
}

static void test_child_sees_memory_and_fds(void **state) {
  (void)state;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  cf_process *p;
  assert_int_equal(
      cf_process_start(write_arg, (void *)(intptr_t)fds[1], NULL, &p), 0);
  assert_int_equal(cf_process_join(p, 10), 0);
  int code;
  assert_int_equal(cf_process_exitcode(p, &code), 0);
  assert_int_equal(code, 0);
  char c = 0;
  assert_int_equal(read(fds[0], &c, 1), 1);
  assert_int_equal(c, 'c');
  close(fds[0]);
  close(fds[1]);
  assert_int_equal(cf_process_free(p), 0);
}

static int write_comm(void *arg) {
  char comm[16] = {0};
  prctl(PR_GET_NAME, comm);
  return write((int)(intptr_t)arg, comm, sizeof comm) == sizeof comm ? 0 : 1;
}

/* A daemon is forked by the library's helper thread, but it carries the
 * name of the thread that started it, as a plain fork would. */
static void test_daemon_command_name(void **state) {
  (void)state;
  char old[16];
  assert_int_equal(pthread_getname_np(pthread_self(), old, sizeof old), 0);
  assert_int_equal(pthread_setname_np(pthread_self(), "mail-sender"), 0);
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  for (int daemon = 0; daemon < 2; daemon++) {
    cf_process_opts o = {.daemon = daemon};
    cf_process *p;
    assert_int_equal(
        cf_process_start(write_comm, (void *)(intptr_t)fds[1], &o, &p), 0);
    assert_int_equal(cf_process_join(p, 10), 0);
    char comm[16];
    assert_int_equal(read(fds[0], comm, sizeof comm), (ssize_t)sizeof comm);
    assert_string_equal(comm, "mail-sender");
    assert_int_equal(cf_process_free(p), 0);
  }
  close(fds[0]);
  close(fds[1]);
  assert_int_equal(pthread_setname_np(pthread_self(), old), 0);
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "--intermediate") == 0)
    intermediate(atoi(argv[2]), strcmp(argv[3], "daemon") == 0);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_exitcode_and_names),
      cmocka_unit_test(test_join_timeouts),
      cmocka_unit_test(test_kill_and_terminate),
      cmocka_unit_test(test_bad_input),
      cmocka_unit_test(test_concurrent_joins),
      cmocka_unit_test(test_leaves_other_children),
      cmocka_unit_test(test_daemon_dies_with_parent),
      cmocka_unit_test(test_daemon_outlives_starting_thread),
      cmocka_unit_test(test_child_sees_memory_and_fds),
      cmocka_unit_test(test_daemon_command_name),
  };
  return cmocka_run_group_tests_name("process", tests, NULL, NULL);
}
