/* producer_consumer: producers and consumers through a joinable queue;
 * the main thread's cf_queue_join returns once every item is processed.
 * Exits 0 if every item was consumed exactly once. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include <cfutures.h>

enum { PRODUCERS = 4, CONSUMERS = 3, ITEMS = 2500 };

static cf_queue *q;
static atomic_long consumed_sum, consumed_count;

static void *producer(void *arg) {
  intptr_t id = (intptr_t)arg;
  for (intptr_t i = 1; i <= ITEMS; i++)
    if (cf_queue_put(q, (void *)(id * ITEMS + i), 10) != 0)
      fprintf(stderr, "producer %ld: queue stuck\n", (long)id);
  return NULL;
}

static void *consumer(void *arg) {
  (void)arg;
  for (;;) {
    void *item;
    if (cf_queue_get(q, 10, &item) != 0)
      return NULL;
    if (item == NULL) { /* the stop signal */
      cf_queue_task_done(q);
      return NULL;
    }
    atomic_fetch_add(&consumed_sum, (intptr_t)item);
    atomic_fetch_add(&consumed_count, 1);
    cf_queue_task_done(q);
  }
}

int main(void) {
  if (cf_queue_new(CF_QUEUE_FIFO, 64, NULL, &q) != 0)
    return 1;
  pthread_t p[PRODUCERS], c[CONSUMERS];
  for (intptr_t i = 0; i < CONSUMERS; i++)
    pthread_create(&c[i], NULL, consumer, NULL);
  for (intptr_t i = 0; i < PRODUCERS; i++)
    pthread_create(&p[i], NULL, producer, (void *)i);
  for (int i = 0; i < PRODUCERS; i++)
    pthread_join(p[i], NULL);
  int rc = cf_queue_join(q, 30); /* every item put so far is processed */
  long n = atomic_load(&consumed_count), sum = atomic_load(&consumed_sum);
  for (int i = 0; i < CONSUMERS; i++)
    cf_queue_put(q, NULL, 10);
  for (int i = 0; i < CONSUMERS; i++)
    pthread_join(c[i], NULL);
  cf_queue_free(q);
  long want_n = (long)PRODUCERS * ITEMS, want_sum = 0;
  for (long id = 0; id < PRODUCERS; id++)
    want_sum += id * ITEMS * ITEMS + (long)ITEMS * (ITEMS + 1) / 2;
  printf("join: %s; consumed %ld items (want %ld), sum %ld (want %ld)\n",
         rc == 0 ? "ok" : cf_strerror(rc), n, want_n, sum, want_sum);
  return rc == 0 && n == want_n && sum == want_sum ? 0 : 1;
}
