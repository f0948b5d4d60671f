/* Private: spinning before a sleep, and giving it up when it does not pay.
 *
 * A thread about to sleep on a futex first spins for a while: if what it
 * waits for comes meanwhile it saves a sleep and a wake-up (tens of us on
 * an idle vCPU). That pays only while the threads it waits for are running.
 * When other processes keep the CPUs busy it backfires: the spinners take
 * the CPU from those threads, and the scheduler, which charges them the
 * spin, lets them run after the other processes' woken threads. Issue 15
 * measured a round trip of ~80 us against ~1 us idle this way (GLib, which
 * never spins: ~11 us).
 *
 * So each spinner keeps a cf__spin: CF__SPIN_MISSES spins in a row that
 * run out (what they waited for did not come within the spin) turn its
 * owner's spins off for CF__SPIN_CALM_NS, and its owner sleeps at once
 * meanwhile, as GLib's threads do; then it probes again. A thread whose
 * waits end within its spin, as on an idle machine, keeps spinning, and
 * one spin that runs out now and then (a task that took long, a burst of
 * another process) does not stop it. Owner only: no atomics.
 */
#ifndef CF_CORE_SPIN_H
#define CF_CORE_SPIN_H

#include <stdint.h>

/* How long a spinner sleeps without spinning after a spin ran out. Short,
 * so that spinning comes back soon once the CPUs are free; long against a
 * spin (tens of us), so that probing costs a loaded machine little. */
#define CF__SPIN_CALM_NS 10000000u

/* Spins in a row that must run out before spinning stops: one alone
 * stopped it on an idle machine too, whenever another process ran for a
 * moment (the round trip's median went from 1.3 to 2.6 us). */
#define CF__SPIN_MISSES 3u

typedef struct cf__spin {
  uint64_t calm_until; /* cf__now_ns() before which it does not spin */
  uint32_t misses;     /* spins that ran out since one paid */
} cf__spin;

/* How long to spin (ns) at `now`: `ns`, or 0 while calm. */
static inline uint64_t cf__spin_budget(const cf__spin *s, uint64_t ns,
                                       uint64_t now) {
  return now < s->calm_until ? 0 : ns;
}

/* A spin ran out at `now` without what it waited for: after
 * CF__SPIN_MISSES in a row, no spins for a while. */
static inline void cf__spin_ran_out(cf__spin *s, uint64_t now) {
  if (++s->misses >= CF__SPIN_MISSES) {
    s->misses = 0;
    s->calm_until = now + CF__SPIN_CALM_NS;
  }
}

/* A spin saw what it waited for. */
static inline void cf__spin_paid(cf__spin *s) {
  s->misses = 0;
}

#endif
