/* greenlet_sum: the greenlet exercise. Two greenlets compute the sum of
 * 1..N and the product of 1..N (modulo 1,000,000,007, since the real one
 * has 35,660 digits), once switching to each other after every step and
 * once each on its own, and print how long each way took: switching costs
 * a few nanoseconds per step here, where Python's greenlet costs hundreds.
 *
 *   greenlet_sum [N]      (default 10000; exit 0 when both results check)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <cfutures.h>

#define MOD 1000000007u

typedef struct job {
  uint64_t n, value;
  bool product;
  bool switching; /* back to main after every step */
} job;

static int run(void *arg, void **out) {
  job *j = arg;
  cf_greenlet *main_g = cf_greenlet_parent(cf_greenlet_current());
  for (uint64_t i = 1; i <= j->n; i++) {
    j->value = j->product ? j->value * i % MOD : j->value + i;
    if (j->switching)
      cf_greenlet_switch(main_g, NULL, NULL);
  }
  *out = NULL;
  return 0;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Runs both jobs, switching between them or one after the other. */
static double both(uint64_t n, bool switching, job *sum, job *prod) {
  *sum = (job){.n = n, .value = 0, .switching = switching};
  *prod = (job){.n = n, .value = 1, .product = true, .switching = switching};
  cf_greenlet *a, *b;
  if (cf_greenlet_new(run, NULL, 0, &a) || cf_greenlet_new(run, NULL, 0, &b)) {
    fprintf(stderr, "greenlet_sum: %s\n", cf_last_error());
    exit(1);
  }
  double t0 = now_s();
  /* The first switch starts each with its job; then main alternates
   * between them until both have ended (without switching, each runs to
   * its end at once). */
  cf_greenlet_switch(a, sum, NULL);
  cf_greenlet_switch(b, prod, NULL);
  while (!cf_greenlet_dead(a) || !cf_greenlet_dead(b)) {
    if (!cf_greenlet_dead(a))
      cf_greenlet_switch(a, NULL, NULL);
    if (!cf_greenlet_dead(b))
      cf_greenlet_switch(b, NULL, NULL);
  }
  double took = now_s() - t0;
  cf_greenlet_free(a);
  cf_greenlet_free(b);
  return took;
}

int main(int argc, char **argv) {
  uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 10000;
  if (n == 0 || n > 100000000) {
    fprintf(stderr, "usage: greenlet_sum [N, 1..100000000]\n");
    return 2;
  }
  uint64_t want_sum = n * (n + 1) / 2, want_prod = 1;
  for (uint64_t i = 1; i <= n; i++)
    want_prod = want_prod * i % MOD;
  int bad = 0;
  for (int k = 0; k < 2; k++) {
    job s, p;
    double t = both(n, k == 1, &s, &p);
    printf("%-13s sum %llu, product mod 1e9+7 %llu, %.3f ms (%.1f ns/step)\n",
           k ? "switching:" : "one by one:", (unsigned long long)s.value,
           (unsigned long long)p.value, t * 1e3, t * 1e9 / (double)(2 * n));
    bad += s.value != want_sum || p.value != want_prod;
  }
  return bad ? 1 : 0;
}
