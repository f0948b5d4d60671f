/* Unit tests of examples/crawl_links.c: which links a page yields, read
 * the way an HTML5 parser reads them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crawl_links.h"

#define PAGE "http://h/dir/page.html"

/* Extracts the links of html (as a page at PAGE) and compares them, in
 * order, with the NULL-terminated list want. */
static crawl_links expect(const char *html, const char *const *want) {
  crawl_links l;
  assert_int_equal(crawl_links_extract(html, strlen(html), PAGE, &l), 0);
  size_t n = 0;
  while (want[n])
    n++;
  for (size_t i = 0; i < l.n || i < n; i++)
    if (i >= l.n || i >= n || strcmp(l.url[i], want[i]) != 0)
      fail_msg("link %zu of %s: got %s, want %s", i, html,
               i < l.n ? l.url[i] : "(none)", i < n ? want[i] : "(none)");
  return l;
}

static void attribute_forms(void **state) {
  (void)state;
  const char *html = "<a href=/unquoted.html>1</a>"
                     "<A HREF = \"Spaces.html\" >2</A>"
                     "<a href=\"  inside.html  \">3</a>"
                     "<a href='single.html'>4</a>"
                     "<a\nhref\n=\n'/new\nline.html'>5</a>"
                     "<a title=\"x href='/no.html'\" href=real.html>6</a>"
                     "<a href=HTTP://H/Upper.html>7</a>"
                     "<a href=/a href=/second.html>8</a>"; /* first wins */
  const char *want[] = {"http://h/unquoted.html",
                        "http://h/dir/Spaces.html",
                        "http://h/dir/inside.html",
                        "http://h/dir/single.html",
                        "http://h/newline.html",
                        "http://h/dir/real.html",
                        "http://h/Upper.html",
                        "http://h/a",
                        NULL};
  crawl_links l = expect(html, want);
  crawl_links_fini(&l);
}

static void entities(void **state) {
  (void)state;
  const char *html = "<a href=\"/q?a=1&amp;b=2\">1</a>"
                     "<a href=\"/q?a=1&b=2\">2</a>"
                     "<a href=\"/e&#47;f&#x2e;html\">3</a>"
                     "<a href=/t?x=&lt;&gt;>4</a>"
                     "<a href=\"/%7Euser/\">5</a>"
                     "<a href=\"/~user/\">6</a>";
  const char *want[] = {"http://h/q?a=1&b=2",
                        "http://h/q?a=1&b=2",
                        "http://h/e/f.html",
                        "http://h/t?x=%3C%3E",
                        "http://h/~user/",
                        "http://h/~user/",
                        NULL};
  crawl_links l = expect(html, want);
  crawl_links_fini(&l);
}

/* The first <base href> counts, wherever it is; later ones do not. */
static void base_href(void **state) {
  (void)state;
  const char *html = "<html><head><title>t</title></head><body>"
                     "<a href=\"k.html\">before the base</a>"
                     "<base href=\"/other/sub/\">"
                     "<base href=\"http://elsewhere/\">"
                     "<a href=\"../up.html\">up</a>"
                     "<a href=\"/abs.html\">abs</a>"
                     "<a href=\"#frag\">frag</a></body></html>";
  const char *want[] = {"http://h/other/sub/k.html", "http://h/other/up.html",
                        "http://h/abs.html", "http://h/other/sub/", NULL};
  crawl_links l = expect(html, want);
  crawl_links_fini(&l);
  /* A relative base is resolved against the page; a base without href is
   * skipped. */
  const char *html2 = "<base target=_top><base href=sub/><a href=x>x</a>";
  const char *want2[] = {"http://h/dir/sub/x", NULL};
  l = expect(html2, want2);
  crawl_links_fini(&l);
}

/* Markup that looks like a link but is not one to an HTML parser. */
static void not_links(void **state) {
  (void)state;
  const char *html =
      "<!-- <a href=\"/commented.html\">x</a> -->"
      "<script>var s = '<a href=\"/script.html\">';</script>"
      "<style>a[href=\"/style.html\"] { color: red }</style>"
      "<template><a href=\"/template.html\">t</a></template>"
      "<textarea><a href=\"/textarea.html\"></textarea>"
      "<p>write href=\"/text.html\" in your page</p>"
      "<img src=\"/img.png\"><script src=\"/s.js\"></script>"
      "<link rel=stylesheet href=\"/c.css\">"
      "<link rel=canonical href=\"/canonical.html\">"
      "<link rel=alternate type=application/rss+xml href=\"/feed.xml\">"
      "<link rel=icon href=\"/favicon.ico\">"
      "<form action=\"/form\"></form>"
      "<a rel=\"external NoFollow\" href=\"/nofollow.html\">n</a>"
      "<a>no href</a><a name=anchor></a>"
      "<a href=\"mailto:x@y\">m</a><a href=\"javascript:void(0)\">j</a>"
      "<a href=\"http://bad host/\">b</a>"
      "<a href=\"/real.html\">the only link</a>";
  const char *want[] = {"http://h/real.html", NULL};
  crawl_links l = expect(html, want);
  assert_int_equal(l.other, 2);
  assert_int_equal(l.bad, 1);
  crawl_links_fini(&l);
}

static void other_elements(void **state) {
  (void)state;
  const char *html =
      "<head><meta http-equiv=\"Refresh\" content=\"5; URL='/refresh.html'\">"
      "<link rel=\"next\" href=\"/next.html\">"
      "<link rel=\"Prev\" href=\"/prev.html\">"
      "<link rel=alternate hreflang=fr href=\"/fr/\">"
      "<link rel=alternate type=text/html href=\"/alt.html\"></head>"
      "<body><map><area shape=rect coords=0,0,1,1 href=\"/area.html\"></map>"
      "<iframe src=\"/iframe.html\"></iframe>"
      "<a href=\"/a.html\">a</a></body>";
  const char *want[] = {
      "http://h/refresh.html", "http://h/next.html", "http://h/prev.html",
      "http://h/fr/",          "http://h/alt.html",  "http://h/area.html",
      "http://h/iframe.html",  "http://h/a.html",    NULL};
  crawl_links l = expect(html, want);
  crawl_links_fini(&l);
  const char *frames = "<frameset><frame src=\"f1.html\"><frame src=/f2.html>"
                       "</frameset>";
  const char *want2[] = {"http://h/dir/f1.html", "http://h/f2.html", NULL};
  l = expect(frames, want2);
  crawl_links_fini(&l);
  const char *refresh[] = {
      "<meta http-equiv=refresh content=\"0;url=/r\">",
      "<meta http-equiv=refresh content='1, /r'>",
      "<meta http-equiv=refresh content='2; url = \"/r\"'>"};
  const char *want3[] = {"http://h/r", NULL};
  for (size_t i = 0; i < 3; i++) {
    l = expect(refresh[i], want3);
    crawl_links_fini(&l);
  }
  const char *self = "<meta http-equiv=refresh content=\"30\">";
  const char *none[] = {NULL};
  l = expect(self, none);
  crawl_links_fini(&l);
}

static void robots_meta(void **state) {
  (void)state;
  const char *html = "<meta name=ROBOTS content=\"noindex, NoFollow\">"
                     "<a href=/x.html>x</a>";
  const char *none[] = {NULL};
  crawl_links l = expect(html, none);
  assert_true(l.nofollow);
  crawl_links_fini(&l);
  l = expect("<meta name=robots content=none><a href=/y>y</a>", none);
  assert_true(l.nofollow);
  crawl_links_fini(&l);
  const char *want[] = {"http://h/x.html", NULL};
  l = expect("<meta name=robots content=noindex><a href=/x.html>x</a>", want);
  assert_false(l.nofollow);
  crawl_links_fini(&l);
}

/* Broken markup, NUL bytes, invalid UTF-8 and deep nesting still parse. */
static void hostile_input(void **state) {
  (void)state;
  static const char nul[] = "<a href=/a>\0<a href=/b>\xff\xfe<a href=/c";
  crawl_links l;
  assert_int_equal(crawl_links_extract(nul, sizeof nul - 1, PAGE, &l), 0);
  assert_int_equal(l.n, 2); /* "/c" never ends its tag: no element */
  assert_string_equal(l.url[0], "http://h/a");
  assert_string_equal(l.url[1], "http://h/b");
  crawl_links_fini(&l);
  size_t depth = 3000, len = 0; /* Gumbo is quadratic in depth */
  char *deep = malloc(depth * 5 + 64);
  assert_non_null(deep);
  for (size_t i = 0; i < depth; i++)
    len += (size_t)sprintf(deep + len, "<div>");
  len += (size_t)sprintf(deep + len, "<a href=/deep.html>d</a>");
  assert_int_equal(crawl_links_extract(deep, len, PAGE, &l), 0);
  assert_int_equal(l.n, 1);
  assert_string_equal(l.url[0], "http://h/deep.html");
  crawl_links_fini(&l);
  free(deep);
  assert_int_equal(crawl_links_extract("", 0, PAGE, &l), 0);
  assert_int_equal(l.n, 0);
  crawl_links_fini(&l);
}

int main(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(attribute_forms), cmocka_unit_test(entities),
      cmocka_unit_test(base_href),       cmocka_unit_test(not_links),
      cmocka_unit_test(other_elements),  cmocka_unit_test(robots_meta),
      cmocka_unit_test(hostile_input),
  };
  int rc = cmocka_run_group_tests_name("crawl_links", tests, NULL, NULL);
  curl_global_cleanup();
  return rc;
}
