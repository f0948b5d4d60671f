/* crawl_links: the links a crawler follows in an HTML page.
 *
 * The page is parsed with Gumbo, an HTML5 parser that follows the WHATWG
 * parsing algorithm, so attributes are read as browsers read them (quoted,
 * unquoted, any case, whitespace around "=", entities such as &amp;
 * decoded) and markup that only looks like a link (inside a comment, a
 * script, a style or a <template>) is not one.
 *
 * Followed, each resolved against the document's base URL (crawl_url.h):
 *   <a href>, <area href>         links, unless rel has "nofollow"
 *   <frame src>, <iframe src>     documents shown inside the page
 *   <link href> with rel "next", "prev" or "alternate" (an alternate only
 *                                 without a type or with type text/html,
 *                                 so feeds are left alone)
 *   <meta http-equiv=refresh content="N; url=...">
 * Not followed: images, scripts, style sheets, <link rel=canonical> (it
 * names the page itself), form actions (they need a submission), and
 * nothing at all when <meta name=robots> says "nofollow" or "none".
 * The base URL is the page's URL, or the first <base href> of the document
 * resolved against it (HTML: the first one in tree order counts). */
#ifndef CF_EXAMPLES_CRAWL_LINKS_H
#define CF_EXAMPLES_CRAWL_LINKS_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct crawl_links {
  char **url;    /* n normalised absolute http(s) URLs, document order */
  size_t n, cap; /* duplicates kept: the crawl de-duplicates */
  size_t other;  /* links to other schemes (mailto:, javascript:...) */
  size_t bad;    /* links that are not URLs curl can parse */
  bool nofollow; /* <meta name=robots content=nofollow>: url is empty */
} crawl_links;

/* Parses len bytes of HTML (NUL bytes allowed, invalid UTF-8 replaced)
 * fetched from the absolute URL page_url and fills *out, which the caller
 * provides and later passes to crawl_links_fini. Returns 0, or -1 when out
 * of memory (then *out holds what was found so far). Thread-safe. */
int crawl_links_extract(const char *html, size_t len, const char *page_url,
                        crawl_links *out);

/* Frees what crawl_links_extract put in *l (not l itself). */
void crawl_links_fini(crawl_links *l);

#ifdef __cplusplus
}
#endif

#endif
