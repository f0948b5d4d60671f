/* Helpers shared by the process-pool tests: a watchdog that ends a hung
 * run with a message, a monotonic clock, and our child processes from
 * /proc. Include after <cmocka.h>. */
#ifndef CF_TESTS_PROCESS_POOL_HELPERS_H
#define CF_TESTS_PROCESS_POOL_HELPERS_H

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../watchdog.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Our children, alive or zombie, from /proc; *first gets one's pid. */
static int list_children(pid_t *first) {
  int n = 0;
  DIR *d = opendir("/proc");
  struct dirent *de;
  pid_t me = getpid();
  while ((de = readdir(d))) {
    char path[300], buf[512];
    if (de->d_name[0] < '0' || de->d_name[0] > '9')
      continue;
    snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
    FILE *f = fopen(path, "r");
    if (!f)
      continue;
    if (fgets(buf, sizeof buf, f)) {
      char *p = strrchr(buf, ')');
      int ppid = 0;
      char st;
      if (p && sscanf(p + 2, "%c %d", &st, &ppid) == 2 && ppid == me) {
        n++;
        if (first)
          *first = (pid_t)atoi(de->d_name);
      }
    }
    fclose(f);
  }
  closedir(d);
  return n;
}

#endif
