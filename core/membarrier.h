/* Private: a full memory barrier on every running thread of the process,
 * for asymmetric synchronisation: a hot path that must order a store
 * before a load (Dekker) keeps a compiler barrier only, and the rare side
 * calls cf__membarrier() between its own store and load. Either the hot
 * thread's load sees the rare side's store, or the rare side's load sees
 * the hot thread's store (D. Dice et al., "Asymmetric Dekker
 * synchronization"). Linux membarrier(2): MEMBARRIER_CMD_PRIVATE_EXPEDITED
 * (IPIs to the CPUs running this process's threads, microseconds), or
 * MEMBARRIER_CMD_GLOBAL (waits for every CPU to schedule, milliseconds)
 * where the expedited one is missing. */
#ifndef CF_CORE_MEMBARRIER_H
#define CF_CORE_MEMBARRIER_H

#include <stdbool.h>

/* Whether cf__membarrier works here (registers the process for the
 * expedited command on first use; thread-safe). False where membarrier(2)
 * is missing or filtered (old kernels, seccomp): callers must then use
 * symmetric fences. */
bool cf__membarrier_usable(void);

/* The barrier. Only after cf__membarrier_usable() returned true. */
void cf__membarrier(void);

#endif
