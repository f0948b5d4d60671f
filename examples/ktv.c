/* ktv: a karaoke room for at most 3 singers at once (a Semaphore); 10
 * singers take turns. Exits 0 if the room never held more than 3. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include <cfutures.h>

enum { SINGERS = 10, ROOM = 3, SONGS = 5 };
static cf_sem *room;
static atomic_int inside, most;

static void *singer(void *arg) {
  intptr_t id = (intptr_t)arg;
  for (int s = 0; s < SONGS; s++) {
    if (cf_sem_acquire(room, 10) != 0)
      return (void *)1;
    int now = atomic_fetch_add(&inside, 1) + 1;
    int m = atomic_load(&most);
    while (now > m && !atomic_compare_exchange_weak(&most, &m, now))
      ;
    printf("singer %ld sings song %d (%d in the room)\n", (long)id, s + 1, now);
    usleep(2000);
    atomic_fetch_sub(&inside, 1);
    cf_sem_release(room, 1);
  }
  return NULL;
}

int main(void) {
  if (cf_bounded_sem_new(false, ROOM, &room) != 0)
    return 1;
  pthread_t th[SINGERS];
  for (intptr_t i = 0; i < SINGERS; i++)
    pthread_create(&th[i], NULL, singer, (void *)i);
  int bad = 0;
  for (int i = 0; i < SINGERS; i++) {
    void *r;
    pthread_join(th[i], &r);
    bad += r != NULL;
  }
  cf_sem_free(room);
  printf("at most %d singers were in the room (limit %d)\n", atomic_load(&most),
         ROOM);
  return bad == 0 && atomic_load(&most) <= ROOM ? 0 : 1;
}
