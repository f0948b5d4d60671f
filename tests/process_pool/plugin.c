/* A shared object the start-method tests dlopen after start: its functions
 * and static data must reach the workers of an exec'd fork server, which
 * has not loaded it. */
#include <stdint.h>
#include <string.h>

#include <cfutures.h>

int plugin_cube(void *arg, void **out);
int plugin_init(void *arg);
int plugin_initialized(void *arg, void **out);
const char *plugin_token(void);

static const char token[] = "plugin-token";
static int initialized; /* set by plugin_init in each worker */

int plugin_cube(void *arg, void **out) {
  intptr_t x = (intptr_t)arg;
  *out = (void *)(x * x * x);
  return 0;
}

/* The initializer: arg must be the plugin's own token, as the host saw it
 * (a pointer into this object's static data, translated for the worker). */
int plugin_init(void *arg) {
  if (arg != token || strcmp(arg, "plugin-token") != 0)
    return cf_fail(CF_EINVAL, "initarg %p is not the plugin's token", arg);
  initialized = 1;
  return 0;
}

int plugin_initialized(void *arg, void **out) {
  (void)arg;
  *out = (void *)(intptr_t)initialized;
  return 0;
}

const char *plugin_token(void) {
  return token;
}
