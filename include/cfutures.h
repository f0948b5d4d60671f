/* cfutures — the umbrella header: futures, executors and the sync toolbox.
 * Link with `pkg-config --cflags --libs cfutures`. */
#ifndef CFUTURES_H
#define CFUTURES_H

#include <cfutures/common.h>
#include <cfutures/future.h>
#include <cfutures/executor.h>
#include <cfutures/thread_pool.h>
#include <cfutures/process_pool.h>
#include <cfutures/sync.h>
#include <cfutures/process.h>
#include <cfutures/shared.h>
#include <cfutures/queue.h>
#include <cfutures/green.h>

#endif
