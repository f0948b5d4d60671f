/* httpd: a small HTTP/1.1 server on the cfutures thread pool, used by the
 * examples (the crawler's --demo serves its generated site with it).
 *
 * An accept thread hands each connection to the pool as one task; the task
 * reads the request head, asks the handler for the response and writes it
 * with "Connection: close". Everything is bounded: the request head size,
 * the time each read or write may wait, and the number of connections
 * accepted but not yet finished (beyond it, new ones get a 503 at once).
 * It listens on a loopback address only (127.0.0.1 unless told another one
 * of 127.0.0.0/8, such as 127.0.0.2 for a second "host"). */
#ifndef CF_EXAMPLES_HTTPD_H
#define CF_EXAMPLES_HTTPD_H

#include <stdbool.h>
#include <stddef.h>

typedef struct httpd httpd;

typedef struct httpd_opts {
  const char *addr;   /* an IPv4 address in 127.0.0.0/8 (NULL: 127.0.0.1) */
  int port;           /* 0: an ephemeral port (see httpd_port) */
  size_t workers;     /* pool threads = requests handled at once (0: 8) */
  size_t max_pending; /* connections waiting for a worker (0: 256) */
  double io_timeout;  /* seconds a read or a write may wait (0: 5) */
} httpd_opts;

typedef struct httpd_request {
  httpd *server;      /* the server handling it (for httpd_sleep) */
  const char *method; /* "GET", "HEAD", ... */
  const char *path;   /* as sent, e.g. "/p/12.html?x=1" */
} httpd_request;

typedef struct httpd_response {
  int status;               /* preset to 200 */
  const char *content_type; /* preset to "text/html" (a static string) */
  char *body;               /* malloc'd by the handler, freed by the server */
  size_t len;
  char *location; /* a 3xx's Location, malloc'd (or NULL), freed likewise */
} httpd_response;

/* Builds the response to one request. Runs on a pool worker, concurrently
 * with other requests: `ctx` must be safe to share. */
typedef void (*httpd_handler)(void *ctx, const httpd_request *req,
                              httpd_response *res);

/* Starts serving (opts may be NULL). Returns the server, or NULL with errno
 * set if the socket, the pool or the accept thread could not be made
 * (EINVAL: addr is not a loopback address). */
httpd *httpd_start(const httpd_opts *opts, httpd_handler handler, void *ctx);

/* The port the server listens on. */
int httpd_port(const httpd *h);

/* The most connections that were open at once (accepted, not finished). */
size_t httpd_max_open(const httpd *h);

/* For handlers that simulate slow work: sleeps `seconds`, or less if the
 * server is stopping. Returns false if it was cut short. */
bool httpd_sleep(httpd *h, double seconds);

/* Stops accepting, wakes handlers in httpd_sleep, waits until every
 * accepted connection is finished, and frees the server. */
void httpd_stop(httpd *h);

#endif
