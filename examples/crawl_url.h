/* crawl_url: resolving and normalising the URLs the crawler follows.
 *
 * libcurl's URL API (curl_url) does the RFC 3986 work: parsing, resolving a
 * relative reference against a base (section 5.2), removing dot segments,
 * lower-casing the scheme, dropping a default port, and the numeric forms of
 * IPv4 addresses (127.1 is 127.0.0.1). What libcurl 7.88 (Debian 12) does
 * not do is done here, in crawl_url_resolve's two helpers:
 *   - before parsing, an attribute value is cleaned as browsers clean it
 *     (WHATWG URL): leading and trailing whitespace and controls stripped,
 *     tabs and newlines removed, "\" read as "/" before the query, bytes
 *     that may not appear in a URL percent-encoded; an empty reference or
 *     a bare "#fragment" is the base document itself (curl 7.88 resolves
 *     "#s" against the base's directory, which is wrong); "http:g" with
 *     the base's scheme is the relative "g" (RFC 3986 5.2.2, non-strict);
 *   - after parsing, the RFC 3986 6.2.2 normalisations curl leaves out:
 *     the host in lower case, percent-encoded unreserved characters
 *     decoded (%7E and %7e are ~), the other escapes' hex digits in upper
 *     case; then curl parses the result again, so that a "%2E%2E" segment
 *     which decoding turned into ".." is removed too.
 * The fragment is dropped. Only http and https URLs are accepted. */
#ifndef CF_EXAMPLES_CRAWL_URL_H
#define CF_EXAMPLES_CRAWL_URL_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
  CRAWL_URL_OK = 0,
  CRAWL_URL_ENOTHTTP = -1, /* another scheme: mailto:, javascript:, ftp: */
  CRAWL_URL_EBAD = -2,     /* not a URL curl can parse (bad host, port...) */
  CRAWL_URL_ENOMEM = -3,
};

/* Resolves the reference `ref` (an attribute value as the HTML parser gave
 * it, entities decoded) against the absolute URL `base` and normalises the
 * result. `base` may be NULL when `ref` is absolute. On success returns
 * CRAWL_URL_OK and a malloc'd absolute http(s) URL without fragment in
 * *out, owned by the caller (free()); otherwise one of the codes above and
 * *out is NULL. Thread-safe (curl_url handles are per call). */
int crawl_url_resolve(const char *base, const char *ref, char **out);

/* The de-duplication key of a normalised URL: the URL itself, or, when
 * `dir_index` is a file name (e.g. "index.html") and the URL's last path
 * segment is exactly that name, the URL with that segment cut off, so that
 * /dir/index.html and /dir/ share one key. NULL or "" keeps them apart.
 * Returns a malloc'd string, or NULL when out of memory. */
char *crawl_url_key(const char *url, const char *dir_index);

/* Copies the host of an absolute URL (lower case, without port) into
 * host[n]. Returns false if there is none or it does not fit. */
bool crawl_url_host(const char *url, char *host, size_t n);

/* Copies "scheme://host[:port]" of a normalised URL into origin[n];
 * returns false if it does not fit. */
bool crawl_url_origin(const char *url, char *origin, size_t n);

/* The path and query of a normalised URL ("/a/b?q"), pointing into url
 * (its end if it has neither). */
const char *crawl_url_target(const char *url);

/* The RFC 3986 6.2.2.2 percent-encoding normalisation on its own, for
 * other strings that are compared with URLs (robots.txt paths): %XX of an
 * unreserved character decoded, other escapes upper-cased, a "%" that
 * starts no escape written %25, and bytes that may not appear in a URL
 * (controls, space, "<>\"^`{|}", non-ASCII) percent-encoded. Returns a
 * malloc'd string, or NULL when out of memory. */
char *crawl_url_pct_normalise(const char *s);

#ifdef __cplusplus
}
#endif

#endif
