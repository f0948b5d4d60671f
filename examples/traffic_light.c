/* traffic_light: a light switches between green and red with an Event;
 * cars wait for green before they go. Exits 0 if no car went on red. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include <cfutures.h>

enum { CARS = 8, TRIPS = 6 };
static cf_event *green;
static cf_lock *light_lock; /* held while the light changes or a car passes */
static atomic_int passed;   /* crossings, each checked green under the lock */
static atomic_bool done;

static void *light(void *arg) {
  (void)arg;
  for (int cycle = 0; !atomic_load(&done) && cycle < 1000; cycle++) {
    cf_lock_acquire(light_lock, CF_FOREVER);
    cf_event_set(green);
    cf_lock_release(light_lock);
    printf("light: green\n");
    usleep(3000);
    cf_lock_acquire(light_lock, CF_FOREVER);
    cf_event_clear(green);
    cf_lock_release(light_lock);
    printf("light: red\n");
    usleep(3000);
  }
  cf_event_set(green); /* let everyone go home */
  return NULL;
}

static void *car(void *arg) {
  intptr_t id = (intptr_t)arg;
  for (int t = 0; t < TRIPS; t++) {
    if (cf_event_wait(green, 10) != 0)
      return (void *)1;
    /* Crossing: check the light under the same lock it changes under. */
    cf_lock_acquire(light_lock, CF_FOREVER);
    bool is_green = cf_event_is_set(green);
    if (is_green)
      atomic_fetch_add(&passed, 1);
    cf_lock_release(light_lock);
    if (!is_green) {
      t--; /* turned red meanwhile: wait again */
      continue;
    }
    printf("car %ld crosses (trip %d)\n", (long)id, t + 1);
    usleep(1000);
  }
  return NULL;
}

int main(void) {
  if (cf_event_new(false, &green) || cf_lock_new(false, &light_lock))
    return 1;
  pthread_t l, c[CARS];
  pthread_create(&l, NULL, light, NULL);
  for (intptr_t i = 0; i < CARS; i++)
    pthread_create(&c[i], NULL, car, (void *)i);
  int stuck = 0;
  for (int i = 0; i < CARS; i++) {
    void *r;
    pthread_join(c[i], &r);
    stuck += r != NULL;
  }
  atomic_store(&done, true);
  pthread_join(l, NULL);
  cf_event_free(green);
  cf_lock_free(light_lock);
  printf("%d crossings, all on green; %d cars stuck\n", atomic_load(&passed),
         stuck);
  return stuck == 0 && atomic_load(&passed) == CARS * TRIPS ? 0 : 1;
}
