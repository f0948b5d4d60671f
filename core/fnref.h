/* Code addresses that another process running the same program can use.
 *
 * A function pointer is only meaningful in the process that took it: with
 * ASLR every process (an exec'd fork server, an MPI rank on another host)
 * loads each object at its own address. What stays the same is the object
 * (the main program, or a shared object by its path) and the function's
 * offset from that object's load bias. cf__fnref_make turns an address
 * into that pair; cf__fnref_resolve turns the pair back into an address in
 * the calling process, loading the object if it is not loaded yet (a
 * library the host dlopen'd after start).
 *
 * Both are thread-safe. The object table is process-wide and append-only
 * (CF__FNREF_MAX_OBJECTS objects at most): an object keeps its id for the
 * life of the process. */
#ifndef CF_CORE_FNREF_H
#define CF_CORE_FNREF_H

#include <stddef.h>
#include <stdint.h>

#include "core/sibling.h"
#define CF__FNREF_MAX_OBJECTS 256
#define CF__FNREF_PATH_MAX    4096

/* A reference packs the object's id in the top 16 bits and the offset in
 * the low 48 (an object spans far less than 256 TiB). */
#define CF__FNREF_OFF_BITS 48

/* The object holding addr, and addr's offset from its load bias: sets
 * *ref; the object's path (empty for the main program) is
 * cf__fnref_path(id). Returns 0, or -1 (cf_last_error set) when addr lies
 * in no loaded object (a JIT's code, a stack address) or the table is
 * full. */
CF__SIBLING int cf__fnref_make(uintptr_t addr, uint64_t *ref);

/* The path of object `id` as cf__fnref_make recorded it ("" for the main
 * program), or NULL for an id not in the table. The string lives as long
 * as the process. */
CF__SIBLING const char *cf__fnref_path(uint32_t id);

/* The address in this process of `ref`, whose object is `path` (the
 * sender's cf__fnref_path). Loads the object (dlopen) when this process
 * has not. Returns 0 (cf_last_error set) when the object cannot be
 * found or loaded. Caches each path's bias: cheap after the first call. */
CF__SIBLING uintptr_t cf__fnref_resolve(const char *path, uint64_t ref);

#endif
