/* Private: the internal calls that cfutures' sibling libraries use.
 *
 * libcfutures is built with hidden visibility: only cf_* calls are
 * exported. A sibling library built from this tree but linked separately,
 * so that programs which do not use it need none of its dependencies
 * (libcfutures-mpi and MPI), completes futures and records errors with
 * the same internal calls as the pools inside libcfutures; those few are
 * marked CF__SIBLING and exported too. They are not API: their names keep
 * the cf__ prefix, no installed header declares them, and a sibling is
 * always built together with the libcfutures it links against. */
#ifndef CF_CORE_SIBLING_H
#define CF_CORE_SIBLING_H

#define CF__SIBLING __attribute__((visibility("default")))

#endif
