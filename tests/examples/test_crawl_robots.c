/* Unit tests of examples/crawl_robots.c against RFC 9309's rules: group
 * selection, longest match, Allow on ties, wildcards, encodings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crawl_robots.h"

#define AGENT "cfutures-crawler"

typedef struct verdict {
  const char *target;
  bool allowed;
} verdict;

static void check(const char *txt, const verdict *v, size_t n) {
  crawl_robots *r = crawl_robots_parse(txt, strlen(txt), AGENT);
  assert_non_null(r);
  for (size_t i = 0; i < n; i++)
    if (crawl_robots_allowed(r, v[i].target) != v[i].allowed)
      fail_msg("%s: %s should be %s by\n%s", v[i].target,
               v[i].allowed ? "allowed" : "disallowed",
               v[i].allowed ? "allowed" : "disallowed", txt);
  crawl_robots_free(r);
}

static void star_group(void **state) {
  (void)state;
  const char *txt = "User-agent: otherbot\n"
                    "Disallow: /\n"
                    "\n"
                    "User-agent: *\n"
                    "Disallow: /private/\n"
                    "Allow: /private/ok.html\n";
  const verdict v[] = {
      {"/", true},
      {"", true},
      {"/public.html", true},
      {"/private", true},
      {"/private/", false},
      {"/private/secret.html", false},
      {"/private/ok.html", true},
      {"/private/ok.html?x=1", true},
      {"/robots.txt", true},
  };
  check(txt, v, sizeof v / sizeof v[0]);
}

/* A group naming us replaces the "*" groups; several such groups merge;
 * the token is matched without case and without a version. */
static void our_group(void **state) {
  (void)state;
  const char *txt = "User-agent: *\n"
                    "Disallow: /\n"
                    "\n"
                    "USER-AGENT: CFutures-Crawler/1.0\n"
                    "disallow: /mine/\n"
                    "\n"
                    "User-agent: cfutures-crawler\n"
                    "Disallow: /also/\n"
                    "User-agent: cfutures-crawler-pro\n"
                    "Disallow: /other/\n"
                    "User-agent: cfutures\n"
                    "Disallow: /prefix/\n";
  const verdict v[] = {
      {"/x", true},       {"/mine/a", false},  {"/also/b", false},
      {"/other/c", true}, {"/prefix/d", true}, {"/minefield", true},
  };
  check(txt, v, sizeof v / sizeof v[0]);
  /* An empty group naming us allows everything, whatever "*" says. */
  const char *empty = "User-agent: *\nDisallow: /\n\n"
                      "User-agent: cfutures-crawler\n";
  const verdict all[] = {{"/anything", true}};
  check(empty, all, 1);
}

/* Consecutive User-agent lines share one group; a rule ends the list of
 * agents; other fields do not end a group; rules before any User-agent
 * line belong to no group. */
static void grouping(void **state) {
  (void)state;
  const char *txt = "Disallow: /orphan/\n"
                    "User-agent: a\n"
                    "User-agent: *\n"
                    "User-agent: b\n"
                    "Disallow: /x/\n"
                    "Crawl-delay: 10\n"
                    "Sitemap: http://h/sitemap.xml\n"
                    "Disallow: /y/\n"
                    "User-agent: c\n"
                    "Disallow: /z/\n";
  const verdict v[] = {
      {"/orphan/1", true},
      {"/x/1", false},
      {"/y/1", false},
      {"/z/1", true},
  };
  check(txt, v, sizeof v / sizeof v[0]);
}

/* The most specific (longest) match decides; Allow wins a tie. */
static void longest_match(void **state) {
  (void)state;
  const char *txt = "User-agent: *\n"
                    "Allow: /p\n"
                    "Disallow: /p/\n"
                    "Disallow: /q\n"
                    "Allow: /q/\n"
                    "Disallow: /t\n"
                    "Allow: /t\n"
                    "Disallow: /folder/\n"
                    "Allow: /folder/page$\n";
  const verdict v[] = {
      {"/p", true},
      {"/page", true},
      {"/p/x", false},
      {"/q", false},
      {"/q/x", true},
      {"/qx", false},
      {"/t", true},
      {"/tx", true},
      {"/folder/x", false},
      {"/folder/page", true},
      {"/folder/page2", false},
  };
  check(txt, v, sizeof v / sizeof v[0]);
}

static void wildcards(void **state) {
  (void)state;
  const char *txt = "User-agent: *\n"
                    "Disallow: /*.php$\n"
                    "Disallow: /s*/x\n"
                    "Disallow: /*?sessionid=\n"
                    "Disallow: /a$b\n"
                    "Disallow: /**/deep\n";
  const verdict v[] = {
      {"/index.php", false},  {"/a/b.php", false},
      {"/a/b.php?x=1", true}, {"/a/b.phpx", true},
      {"/s1/2/x", false},     {"/s/x", false},
      {"/sx", true},          {"/t?sessionid=1", false},
      {"/t?id=1", true},      {"/a$b/c", false},
      {"/ab", true},          {"/1/2/deep/3", false},
  };
  check(txt, v, sizeof v / sizeof v[0]);
}

/* Percent-encodings compare equal to what they encode when unreserved. */
static void encodings(void **state) {
  (void)state;
  const char *txt = "\xEF\xBB\xBFUser-agent: *\r\n"
                    "Disallow: /%7ejoe/   # a comment\r\n"
                    "Disallow: /caf\xc3\xa9/\r"
                    "Disallow: /a%2fb\n";
  const verdict v[] = {
      {"/~joe/x", false},     {"/%7Ejoe/x", false},   {"/%7ejoe/", false},
      {"/caf%C3%A9/", false}, {"/caf%c3%a9/", false}, {"/a%2Fb", false},
      {"/a/b", true},         {"/joe/", true},
  };
  check(txt, v, sizeof v / sizeof v[0]);
}

/* "Disallow:" with no path allows everything; empty or odd files too. */
static void degenerate(void **state) {
  (void)state;
  const verdict v[] = {{"/", true}, {"/x", true}};
  check("User-agent: *\nDisallow:\n", v, 2);
  check("", v, 2);
  check("<html>not a robots.txt</html>", v, 2);
  check("User-agent *\nDisallow /\n", v, 2); /* no colons: no fields */
  crawl_robots *r = crawl_robots_all(false);
  assert_non_null(r);
  assert_false(crawl_robots_allowed(r, "/"));
  assert_false(crawl_robots_allowed(r, "/x"));
  assert_true(crawl_robots_allowed(r, "/robots.txt"));
  crawl_robots_free(r);
  r = crawl_robots_all(true);
  assert_true(crawl_robots_allowed(r, "/x"));
  crawl_robots_free(r);
  crawl_robots_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(star_group), cmocka_unit_test(our_group),
      cmocka_unit_test(grouping),   cmocka_unit_test(longest_match),
      cmocka_unit_test(wildcards),  cmocka_unit_test(encodings),
      cmocka_unit_test(degenerate),
  };
  return cmocka_run_group_tests_name("crawl_robots", tests, NULL, NULL);
}
