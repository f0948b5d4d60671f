/* Greenlets: fibers switched by hand, with a parent that gets the result.
 *
 * Each thread has a "main" greenlet for its own stack (made on first use)
 * and a current one. A switch passes a `hop` (who leaves, the value, and a
 * failure if the one leaving has ended) through the fiber switch; the
 * greenlet that gets control reads it at once, since it lives on the
 * leaver's stack. A greenlet's stack is taken from the fiber pool at its
 * first switch and given back by whoever gets control from it when it has
 * ended (a fiber cannot give its own stack back while running on it).
 */
#include <cfutures/green.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/fiber.h"
#include "core/report.h"
#include "core/time.h" /* CF__TLS_FAST */
#include "executor/executor_internal.h"

typedef enum { G_NEW, G_ACTIVE, G_DEAD } gstate;

struct cf_greenlet {
  cf__fiber f; /* mapped at the first switch; native for a main greenlet */
  cf_greenlet *parent;
  cf_greenlet_fn fn;
  size_t stack_size;
  pthread_t thread; /* the owner */
  cf_greenlet *root; /* the owner thread's main greenlet (itself for one) */
  gstate state;
  bool is_main;
  int code;      /* when dead: what fn returned */
  char *message; /* when dead and failed: cf_fail's message, or NULL */
};

/* What travels with a switch. */
typedef struct hop {
  cf_greenlet *from;
  void *value;
  int code;      /* non-zero: `from` ended with this failure */
  char *message; /* its message (owned by `from`) */
} hop;

static _Thread_local cf_greenlet *current CF__TLS_FAST;

/* Frees the thread's main greenlet when the thread exits. */
static pthread_key_t main_key;
static pthread_once_t main_once = PTHREAD_ONCE_INIT;

static void main_free(void *g) {
  free(g);
}

static void main_key_init(void) {
  pthread_key_create(&main_key, main_free);
}

cf_greenlet *cf_greenlet_current(void) {
  if (current)
    return current;
  pthread_once(&main_once, main_key_init);
  cf_greenlet *g = calloc(1, sizeof *g);
  if (!g) {
    cf__fail_at(__func__, CF_ENOMEM, "no memory for the main greenlet");
    return NULL;
  }
  cf__fiber_init_native(&g->f);
  g->thread = pthread_self();
  g->root = g;
  g->state = G_ACTIVE;
  g->is_main = true;
  pthread_setspecific(main_key, g);
  current = g;
  return g;
}

int cf_greenlet_new(cf_greenlet_fn fn, cf_greenlet *parent, size_t stack_size,
                    cf_greenlet **out) {
  if (!out)
    return CF__FAIL(CF_EINVAL, "NULL out");
  *out = NULL;
  if (!fn)
    return CF__FAIL(CF_EINVAL, "NULL function");
  if (stack_size == 0)
    stack_size = CF_GREEN_STACK_DEFAULT;
  if (stack_size < CF_GREEN_STACK_MIN || stack_size > CF_GREEN_STACK_MAX)
    return CF__FAILF(CF_EINVAL, "stack_size %zu is outside [%zu, %zu]",
                     stack_size, CF_GREEN_STACK_MIN, CF_GREEN_STACK_MAX);
  if (!parent && !(parent = cf_greenlet_current()))
    return CF__FAIL(CF_ENOMEM, "no memory for the main greenlet");
  if (!pthread_equal(parent->thread, pthread_self()))
    return CF__FAIL(CF_EINVAL, "the parent belongs to another thread");
  cf_greenlet *g = calloc(1, sizeof *g);
  if (!g)
    return CF__FAIL(CF_ENOMEM, "no memory for the greenlet");
  g->parent = parent;
  g->root = parent->root;
  g->fn = fn;
  g->stack_size = stack_size;
  g->thread = pthread_self();
  g->state = G_NEW;
  *out = g;
  return 0;
}

static void greenlet_entry(cf__fiber *self, void *msg);

/* Leaves the current greenlet for g (started if new) with h; returns the
 * hop of whoever comes back, after giving back the stack of a greenlet
 * that came back by ending. */
static hop *transfer(cf_greenlet *g, hop *h) {
  cf_greenlet *me = current;
  current = g;
  hop *back = cf__fiber_switch(&me->f, &g->f, h);
  current = me;
  if (back->from->state == G_DEAD)
    cf__fiber_give(&back->from->f);
  return back;
}

/* Runs on g's own stack: calls fn, then hands the result to the nearest
 * ancestor that has not ended (starting it if it never ran). */
static void greenlet_entry(cf__fiber *self, void *msg) {
  cf_greenlet *g = (cf_greenlet *)((char *)self - offsetof(cf_greenlet, f));
  hop *start = msg;
  if (start->from->state == G_DEAD)
    cf__fiber_give(&start->from->f);
  void *out = NULL;
  cf__fail_clear();
  int rc = g->fn(start->value, &out);
  g->code = rc;
  g->message = rc ? cf__fail_take_message() : NULL;
  g->state = G_DEAD;
  cf_greenlet *to = g->parent;
  while (to->state == G_DEAD)
    to = to->parent; /* a main greenlet never ends */
  if (to->state == G_NEW) {
    if (cf__fiber_take(&to->f, to->stack_size, greenlet_entry) != 0)
      abort(); /* no stack to hand a result to: nothing sane is left */
    to->state = G_ACTIVE;
  }
  hop h = {.from = g, .value = rc ? NULL : out, .code = rc,
           .message = g->message};
  current = to;
  cf__fiber_switch(&g->f, &to->f, &h);
  abort(); /* a dead greenlet is never switched to */
}

int cf_greenlet_switch(cf_greenlet *g, void *value, void **out) {
  if (out)
    *out = NULL;
  if (!g)
    return CF__FAIL(CF_EINVAL, "NULL greenlet");
  cf_greenlet *me = current ? current : cf_greenlet_current();
  if (!me)
    return CF__FAIL(CF_ENOMEM, "no memory for the main greenlet");
  /* Same thread: same main greenlet (no pthread_self call per switch). */
  if (g->root != me->root)
    return CF__FAIL(CF_EPERM, "the greenlet belongs to another thread");
  if (g->state == G_DEAD)
    return CF__FAIL(CF_EINVALSTATE, "the greenlet has finished");
  if (g == me) {
    if (out)
      *out = value;
    return 0;
  }
  if (g->state == G_NEW) {
    int rc = cf__fiber_take(&g->f, g->stack_size, greenlet_entry);
    if (rc != 0)
      return CF__FAIL(rc, "no memory or mappings for the greenlet's stack");
    g->state = G_ACTIVE;
  }
  hop h = {.from = me, .value = value};
  hop *back = transfer(g, &h);
  if (back->code != 0)
    return CF__FAILF(back->code, "the greenlet's function failed: %s",
                     back->message ? back->message
                                   : cf_strerror(back->code));
  if (out)
    *out = back->value;
  return 0;
}

cf_greenlet *cf_greenlet_parent(const cf_greenlet *g) {
  return g ? g->parent : NULL;
}

bool cf_greenlet_dead(const cf_greenlet *g) {
  return g && g->state == G_DEAD;
}

bool cf_greenlet_started(const cf_greenlet *g) {
  return g && g->state == G_ACTIVE && !g->is_main;
}

int cf_greenlet_error(const cf_greenlet *g, cf_error *err) {
  if (!g || !err)
    return CF__FAIL(CF_EINVAL, g ? "NULL error record" : "NULL greenlet");
  if (g->state != G_DEAD)
    return CF__FAIL(CF_EINVALSTATE, "the greenlet has not finished");
  err->code = g->code;
  err->message = g->code == 0 ? NULL
                 : g->message ? g->message
                              : cf_strerror(g->code);
  return 0;
}

int cf_greenlet_free(cf_greenlet *g) {
  if (!g)
    return 0;
  if (!pthread_equal(g->thread, pthread_self()))
    return CF__FAIL(CF_EPERM, "the greenlet belongs to another thread");
  if (g->is_main || g == current)
    return CF__FAIL(CF_EINVAL, g->is_main ? "a main greenlet is the thread's"
                                          : "the greenlet is running");
  if (g->state == G_ACTIVE)
    return CF__FAIL(CF_EBUSY, "the greenlet is suspended in its function: "
                              "switch to it until it returns");
  free(g->message);
  free(g);
  return 0;
}
