/* A watchdog for cmocka tests: arm_watchdog / disarm_watchdog as a
 * test's setup and teardown, and a hung test ends the run with a message
 * (exit 99) instead of holding it until meson's timeout. WATCHDOG_S
 * (default 150) is each test's bound, in seconds. */
#ifndef CF_TESTS_WATCHDOG_H
#define CF_TESTS_WATCHDOG_H

#include <signal.h>
#include <unistd.h>

#ifndef WATCHDOG_S
#define WATCHDOG_S 150
#endif

static void watchdog_fired(int sig) {
  (void)sig;
  static const char msg[] = "watchdog: a test hung; aborting the run\n";
  ssize_t w = write(2, msg, sizeof msg - 1);
  (void)w;
  _exit(99);
}

static int arm_watchdog(void **state) {
  (void)state;
  struct sigaction sa = {.sa_handler = watchdog_fired};
  sigaction(SIGALRM, &sa, NULL);
  alarm(WATCHDOG_S);
  return 0;
}

static int disarm_watchdog(void **state) {
  (void)state;
  alarm(0);
  return 0;
}

#endif
