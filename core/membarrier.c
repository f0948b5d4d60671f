/* Process-wide memory barriers; see membarrier.h. */
#include "core/membarrier.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int cmd = -1; /* the command cf__membarrier issues; -1: none */

static long membarrier(int c, unsigned flags) {
  return syscall(SYS_membarrier, c, flags, 0);
}

static void probe(void) {
  long have = membarrier(MEMBARRIER_CMD_QUERY, 0);
  if (have < 0)
    return;
  if ((have & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
      membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0)
    cmd = MEMBARRIER_CMD_PRIVATE_EXPEDITED;
  else if (have & MEMBARRIER_CMD_GLOBAL)
    cmd = MEMBARRIER_CMD_GLOBAL;
}

bool cf__membarrier_usable(void) {
  pthread_once(&once, probe);
  return cmd >= 0;
}

void cf__membarrier(void) {
  /* The expedited command may fail for want of memory (ENOMEM, kernels
   * with an off-stack cpumask): the global one, slower, needs none. Abort
   * rather than lose the ordering a caller relies on. */
  if (cmd < 0)
    abort();
  if (membarrier(cmd, 0) == 0 || membarrier(MEMBARRIER_CMD_GLOBAL, 0) == 0)
    return;
  abort();
}
