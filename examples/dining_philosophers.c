/* dining_philosophers: five philosophers, five forks (Locks). Each picks up
 * the lower-numbered fork first, which makes a cycle of waiting, and so a
 * deadlock, impossible. Exits 0 when everyone has eaten every meal. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include <cfutures.h>

enum { N = 5, MEALS = 50 };
static cf_lock *fork_[N];
static int meals[N];

static void *philosopher(void *arg) {
  intptr_t i = (intptr_t)arg;
  int left = (int)i, right = (int)(i + 1) % N;
  int first = left < right ? left : right, second = left < right ? right : left;
  for (int m = 0; m < MEALS; m++) {
    /* a bounded wait: a deadlock would show as a failure, not a hang */
    if (cf_lock_acquire(fork_[first], 10) != 0)
      return (void *)1;
    if (cf_lock_acquire(fork_[second], 10) != 0) {
      cf_lock_release(fork_[first]);
      return (void *)1;
    }
    meals[i]++;
    usleep(100); /* eat */
    cf_lock_release(fork_[second]);
    cf_lock_release(fork_[first]);
    usleep(100); /* think */
  }
  return NULL;
}

int main(void) {
  for (int i = 0; i < N; i++)
    if (cf_lock_new(false, &fork_[i]) != 0)
      return 1;
  pthread_t th[N];
  for (intptr_t i = 0; i < N; i++)
    pthread_create(&th[i], NULL, philosopher, (void *)i);
  int failed = 0;
  for (int i = 0; i < N; i++) {
    void *r;
    pthread_join(th[i], &r);
    failed += r != NULL;
    printf("philosopher %d ate %d meals\n", i, meals[i]);
  }
  for (int i = 0; i < N; i++) /* only now: neighbours share forks */
    cf_lock_free(fork_[i]);
  return failed == 0 ? 0 : 1;
}
