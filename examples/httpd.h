/* A small HTTP/1.0 server on the cfutures thread pool, for the examples:
 * one task per connection, a handler callback that builds each response.
 * Loopback only; every connection is bounded by a receive timeout. */
#ifndef CF_EXAMPLES_HTTPD_H
#define CF_EXAMPLES_HTTPD_H

#include <stddef.h>

typedef struct httpd httpd;

/* Fills a response for `path`: returns the HTTP status, the body in *body
 * (malloc'd, freed by the server) and its length. */
typedef int (*httpd_handler)(const char *path, char **body, size_t *len,
                             void *ctx);

/* Starts serving on 127.0.0.1 with an ephemeral port; NULL on error. */
httpd *httpd_start(httpd_handler handler, void *ctx, size_t workers);
int httpd_port(const httpd *h);
/* Stops accepting, waits for connections in progress, frees. */
void httpd_stop(httpd *h);

#endif
