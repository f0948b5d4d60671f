/* crawl_site: the crawler's demo site, served on 127.0.0.1 by httpd.c.
 *
 * 3,000 generated pages (a binary tree with cross links, spelled in
 * several ways), broken links (404s, a refused port, a page slower than
 * the crawler's timeout, another host), and under /t/ the markup and URLs
 * that real sites have: <base href>, unquoted and odd attributes, entities,
 * redirect chains, loops and redirects to other hosts, percent-encoding
 * variants, query strings, /dir/ and /dir/index.html, links that must not
 * be followed, a robots.txt. A second server on 127.0.0.2 plays "another
 * host": it must never be asked anything.
 *
 * The site keeps its own request log (by request target, with the
 * percent-encodings of unreserved characters decoded and /dir/index.html
 * read as /dir/, since it serves one page there), and derives from its own
 * description what a correct crawl must have asked and reported. */
#ifndef CF_EXAMPLES_CRAWL_SITE_H
#define CF_EXAMPLES_CRAWL_SITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct crawl_site crawl_site;

/* How the crawler under test is configured (the expectations depend on
 * it). */
typedef struct crawl_site_crawler {
  int max_redirects; /* redirect hops followed */
  bool robots;       /* robots.txt obeyed */
  bool dir_index;    /* /dir/index.html counted as /dir/ */
} crawl_site_crawler;

/* What a complete crawl must report. */
typedef struct crawl_site_expect {
  size_t pages;             /* 2xx answers */
  size_t http404;           /* distinct missing pages linked */
  size_t refused;           /* requests refused (closed port) */
  size_t timeouts;          /* requests timed out (the slow page) */
  size_t offsite;           /* distinct links to other hosts */
  size_t redirects;         /* 3xx answers */
  size_t redirects_offsite; /* to another host: reported, not followed */
  size_t redirects_seen;    /* to a URL already known: not fetched again */
  size_t redirect_limit;    /* chains longer than max_redirects */
  size_t disallowed;        /* URLs robots.txt disallows */
  size_t unreachable;       /* URLs on an origin whose robots.txt failed */
} crawl_site_expect;

/* Starts the servers. Returns NULL (errno set) on failure. */
crawl_site *crawl_site_start(void);

/* The URL the crawl starts from (valid until crawl_site_free). */
const char *crawl_site_start_url(const crawl_site *s);

/* Pages generated and the deadline the slow page outlasts, for the
 * banner. */
int crawl_site_pages(void);

/* Stops the servers, which waits for their requests: the log is final. */
void crawl_site_stop(crawl_site *s);

/* The most connections the site had open at once (after crawl_site_stop):
 * how many requests the crawler really had in flight. */
size_t crawl_site_max_open(const crawl_site *s);

/* Requests the site answered (after crawl_site_stop). */
size_t crawl_site_requests(const crawl_site *s);

/* Requests the other host received (after crawl_site_stop). */
size_t crawl_site_other_requests(const crawl_site *s);

/* Requests for the same resource beyond the first (after stop). */
size_t crawl_site_repeats(const crawl_site *s);

/* Fills *e for a crawler configured as c. */
void crawl_site_expected(const crawl_site *s, const crawl_site_crawler *c,
                         crawl_site_expect *e);

/* Compares the request log with what a complete crawl by c must have
 * asked: each resource the expected number of times (mostly once, never
 * for a disallowed, unlinked or not-followed one), nothing else. Prints
 * one line per difference to out; returns the number of differences. */
size_t crawl_site_check_log(const crawl_site *s, const crawl_site_crawler *c,
                            FILE *out);

/* Requests for resources a crawler by c must never ask for (disallowed,
 * not followed, unlinked), whatever its limits: for partial crawls. */
size_t crawl_site_forbidden_requests(const crawl_site *s,
                                     const crawl_site_crawler *c, FILE *out);

/* NULL is a no-op. Call crawl_site_stop first. */
void crawl_site_free(crawl_site *s);

#endif
