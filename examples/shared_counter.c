/* shared_counter: the tutorials' Manager().dict() program. A shared dict
 * holds a counter; 100 processes each count it down 100 times, every
 * step a read-modify-write (get, subtract, set) under the dict's lock, so
 * that no step is lost. The parent joins them all and checks that the
 * counter went from 10,000 to exactly 0 and that every child exited with
 * 0. Exits 0 on success.
 *
 *   def count_down(d, lock):
 *       for _ in range(100):
 *           with lock:
 *               d['count'] -= 1
 *   with Manager() as m:
 *       d = m.dict(count=10000); lock = m.Lock()
 *       ps = [Process(target=count_down, args=(d, lock)) for _ in range(100)]
 *       for p in ps: p.start()
 *       for p in ps: p.join()
 *       print(d['count'])   # 0
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cfutures.h>

enum { PROCS = 100, STEPS = 100 };

static cf_dict *shared; /* made before the children: they share it */

static int count_down(void *arg) {
  (void)arg;
  cf_lock *lock = cf_dict_lock(shared);
  for (int i = 0; i < STEPS; i++) {
    if (cf_lock_acquire(lock, 30) != 0)
      return 1;
    int64_t count;
    size_t len;
    /* The dict's calls made by the lock's holder do not take it again:
     * get and set below are one transaction. */
    int rc = cf_dict_get(shared, "count", &count, sizeof count, &len);
    if (rc == 0) {
      count--;
      rc = cf_dict_set(shared, "count", &count, sizeof count);
    }
    cf_lock_release(lock);
    if (rc != 0) {
      fprintf(stderr, "pid %d: %s\n", (int)getpid(), cf_last_error());
      return 1;
    }
  }
  return 0;
}

int main(void) {
  /* Room for a few keys of up to 8 bytes each. */
  if (cf_dict_new(4, sizeof(int64_t), &shared) != 0) {
    fprintf(stderr, "cf_dict_new: %s\n", cf_last_error());
    return 1;
  }
  int64_t count = (int64_t)PROCS * STEPS;
  cf_dict_set(shared, "count", &count, sizeof count);

  cf_process *ps[PROCS];
  int started = 0, bad = 0;
  for (; started < PROCS; started++) {
    cf_process_opts o = {.daemon = true};
    if (cf_process_start(count_down, NULL, &o, &ps[started]) != 0) {
      fprintf(stderr, "cf_process_start: %s\n", cf_last_error());
      bad = 1;
      break;
    }
  }
  for (int i = 0; i < started; i++) {
    int code = -1;
    if (cf_process_join(ps[i], 60) != 0 ||
        cf_process_exitcode(ps[i], &code) != 0 || code != 0) {
      fprintf(stderr, "%s: exit code %d (%s)\n", cf_process_name(ps[i]), code,
              cf_last_error());
      bad = 1;
      cf_process_kill(ps[i]);
      cf_process_join(ps[i], 5);
    }
    cf_process_free(ps[i]);
  }

  size_t len;
  if (cf_dict_get(shared, "count", &count, sizeof count, &len) != 0) {
    fprintf(stderr, "cf_dict_get: %s\n", cf_last_error());
    bad = 1;
  }
  printf("%d processes counted %d down each: count = %lld (expected 0)%s\n",
         started, STEPS, (long long)count, bad || count ? " FAILED" : "");
  cf_dict_free(shared);
  return bad || count != 0;
}
