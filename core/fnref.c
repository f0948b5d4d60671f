/* Code addresses across processes: see fnref.h. */
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <link.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <cfutures/common.h>

#include "core/fnref.h"
#include "core/report.h"

#define OFF_MASK ((UINT64_C(1) << CF__FNREF_OFF_BITS) - 1)

/* The sender's side: object paths by id. Append-only: an id, once given,
 * names the same path for ever, and readers of a published entry need no
 * lock (the count is stored with release after the entry). */
static struct {
  pthread_mutex_t mu;
  _Atomic uint32_t n;
  const char *paths[CF__FNREF_MAX_OBJECTS];
} objects = {.mu = PTHREAD_MUTEX_INITIALIZER};

const char *cf__fnref_path(uint32_t id) {
  uint32_t n = atomic_load_explicit(&objects.n, memory_order_acquire);
  return id < n ? objects.paths[id] : NULL;
}

static int object_id(const char *path, uint32_t *id) {
  uint32_t n = atomic_load_explicit(&objects.n, memory_order_acquire);
  for (uint32_t k = 0; k < n; k++)
    if (strcmp(objects.paths[k], path) == 0)
      return *id = k, 0;
  pthread_mutex_lock(&objects.mu);
  int rc = 0;
  n = atomic_load_explicit(&objects.n, memory_order_relaxed);
  uint32_t k = 0;
  while (k < n && strcmp(objects.paths[k], path) != 0)
    k++;
  if (k == n) {
    char *copy = NULL;
    if (n == CF__FNREF_MAX_OBJECTS || strlen(path) >= CF__FNREF_PATH_MAX)
      rc = CF__FAIL(CF_EINVAL, "functions from too many loaded objects, or "
                               "an object path too long, to pass to another "
                               "process");
    else if (!(copy = strdup(path)))
      rc = CF__FAIL(CF_ENOMEM, "out of memory");
    if (copy) {
      objects.paths[n] = copy;
      atomic_store_explicit(&objects.n, n + 1, memory_order_release);
    }
  }
  pthread_mutex_unlock(&objects.mu);
  *id = k;
  return rc;
}

int cf__fnref_make(uintptr_t addr, uint64_t *ref) {
  Dl_info info;
  struct link_map *lm = NULL;
  if (!dladdr1((const void *)addr, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm)
    return CF__FAILF(CF_EINVAL,
                     "address %p is in no loaded object: a function another "
                     "process can run must be in the program or a shared "
                     "object",
                     (void *)addr);
  uint64_t off = addr - (uintptr_t)lm->l_addr;
  if (off > OFF_MASK)
    return CF__FAILF(CF_EINVAL, "address %p lies too far into its object",
                     (void *)addr);
  uint32_t id;
  int rc = object_id(lm->l_name ? lm->l_name : "", &id);
  if (rc)
    return rc;
  *ref = (uint64_t)id << CF__FNREF_OFF_BITS | off;
  return 0;
}

/* The receiver's side: the load bias of each path met so far. */
static struct {
  pthread_mutex_t mu;
  size_t n;
  char *paths[CF__FNREF_MAX_OBJECTS];
  uintptr_t bias[CF__FNREF_MAX_OBJECTS];
} resolved = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int bias_of(const char *path, uintptr_t *bias) {
  /* "": the main program, dlopen(NULL). Otherwise the object if loaded
   * (RTLD_NOLOAD), else loaded now. The handle is kept: the object stays. */
  void *h = dlopen(*path ? path : NULL, RTLD_NOW | RTLD_NOLOAD);
  if (!h && *path)
    h = dlopen(path, RTLD_NOW);
  struct link_map *lm = NULL;
  if (!h || dlinfo(h, RTLD_DI_LINKMAP, &lm) != 0 || !lm) {
    const char *why = dlerror();
    return CF__FAILF(CF_ESYS, "cannot load '%s' to find a task's function: %s",
                     *path ? path : "the main program",
                     why ? why : "unknown error");
  }
  *bias = (uintptr_t)lm->l_addr;
  return 0;
}

uintptr_t cf__fnref_resolve(const char *path, uint64_t ref) {
  uintptr_t bias = 0;
  bool found = false;
  pthread_mutex_lock(&resolved.mu);
  for (size_t k = 0; k < resolved.n && !found; k++)
    if (strcmp(resolved.paths[k], path) == 0)
      bias = resolved.bias[k], found = true;
  if (!found && bias_of(path, &bias) == 0) {
    found = true;
    char *copy = resolved.n < CF__FNREF_MAX_OBJECTS ? strdup(path) : NULL;
    if (copy) { /* else: not cached, looked up again next time */
      resolved.paths[resolved.n] = copy;
      resolved.bias[resolved.n++] = bias;
    }
  }
  pthread_mutex_unlock(&resolved.mu);
  return found ? bias + (uintptr_t)(ref & OFF_MASK) : 0;
}
