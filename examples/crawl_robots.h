/* crawl_robots: robots.txt as RFC 9309 (the Robots Exclusion Protocol)
 * defines it, for one crawler.
 *
 * Groups start with one or more "User-agent:" lines and hold "Allow:" and
 * "Disallow:" rules; other lines (Sitemap:, Crawl-delay:...) are skipped
 * without ending a group; "#" starts a comment; field names are case
 * insensitive. The rules that apply are those of every group naming our
 * product token (case-insensitive), or, if none does, those of every "*"
 * group, or none. A path is allowed unless the longest matching rule (the
 * one with the most octets) is a Disallow; an Allow wins a tie. "*" in a
 * rule matches any run of characters and a final "$" anchors it at the
 * end. Rules and paths are compared after the same percent-encoding
 * normalisation as URLs (%7E is ~). /robots.txt itself is always allowed. */
#ifndef CF_EXAMPLES_CRAWL_ROBOTS_H
#define CF_EXAMPLES_CRAWL_ROBOTS_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct crawl_robots crawl_robots;

/* Parses len bytes of a robots.txt for the crawler whose product token is
 * `agent` (e.g. "cfutures-crawler"). Returns a new rule set (free it with
 * crawl_robots_free), or NULL when out of memory. */
crawl_robots *crawl_robots_parse(const char *text, size_t len,
                                 const char *agent);

/* A rule set that allows everything (robots.txt missing: a 4xx answer) or
 * nothing (unreachable: a 5xx answer or a network error, RFC 9309 2.3.1).
 * NULL when out of memory. */
crawl_robots *crawl_robots_all(bool allowed);

/* Whether `target`, the path and query of a URL ("/a/b?q", "" counts as
 * "/"), may be fetched. r must not be NULL. */
bool crawl_robots_allowed(const crawl_robots *r, const char *target);

/* Number of rules that apply to us (for the summary). */
size_t crawl_robots_rules(const crawl_robots *r);

/* NULL is a no-op. */
void crawl_robots_free(crawl_robots *r);

#ifdef __cplusplus
}
#endif

#endif
