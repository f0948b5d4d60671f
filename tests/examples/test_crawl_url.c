/* Unit tests of examples/crawl_url.c: resolution (the RFC 3986 5.4
 * examples), normalisation (RFC 3986 6.2.2 and what browsers do with
 * attribute values), de-duplication keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crawl_url.h"

#define RFC_BASE "http://a/b/c/d;p?q"

typedef struct want {
  const char *ref, *url; /* url NULL: the error code below */
  int rc;
} want;

static void check(const char *base, const want *w, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char *got = NULL;
    int rc = crawl_url_resolve(base, w[i].ref, &got);
    if (rc != w[i].rc || (w[i].url && (!got || strcmp(got, w[i].url) != 0)))
      fail_msg("resolve(%s, \"%s\") = %d \"%s\", want %d \"%s\"",
               base ? base : "NULL", w[i].ref, rc, got ? got : "(null)",
               w[i].rc, w[i].url ? w[i].url : "(null)");
    if (got) { /* normalising a normalised URL changes nothing */
      char *again = NULL;
      assert_int_equal(crawl_url_resolve(NULL, got, &again), CRAWL_URL_OK);
      assert_string_equal(again, got);
      free(again);
    }
    free(got);
  }
}

/* RFC 3986 5.4.1, fragments dropped. */
static void rfc_normal_examples(void **state) {
  (void)state;
  const want w[] = {
      {"g", "http://a/b/c/g", 0},
      {"./g", "http://a/b/c/g", 0},
      {"g/", "http://a/b/c/g/", 0},
      {"/g", "http://a/g", 0},
      {"//g", "http://g/", 0},
      {"?y", "http://a/b/c/d;p?y", 0},
      {"g?y", "http://a/b/c/g?y", 0},
      {"#s", "http://a/b/c/d;p?q", 0},
      {"g#s", "http://a/b/c/g", 0},
      {"g?y#s", "http://a/b/c/g?y", 0},
      {";x", "http://a/b/c/;x", 0},
      {"g;x", "http://a/b/c/g;x", 0},
      {"g;x?y#s", "http://a/b/c/g;x?y", 0},
      {"", "http://a/b/c/d;p?q", 0},
      {".", "http://a/b/c/", 0},
      {"./", "http://a/b/c/", 0},
      {"..", "http://a/b/", 0},
      {"../", "http://a/b/", 0},
      {"../g", "http://a/b/g", 0},
      {"../..", "http://a/", 0},
      {"../../", "http://a/", 0},
      {"../../g", "http://a/g", 0},
  };
  check(RFC_BASE, w, sizeof w / sizeof w[0]);
}

/* RFC 3986 5.4.2, with "http:g" read the non-strict way, as browsers do. */
static void rfc_abnormal_examples(void **state) {
  (void)state;
  const want w[] = {
      {"../../../g", "http://a/g", 0},
      {"../../../../g", "http://a/g", 0},
      {"/./g", "http://a/g", 0},
      {"/../g", "http://a/g", 0},
      {"g.", "http://a/b/c/g.", 0},
      {".g", "http://a/b/c/.g", 0},
      {"g..", "http://a/b/c/g..", 0},
      {"..g", "http://a/b/c/..g", 0},
      {"./../g", "http://a/b/g", 0},
      {"./g/.", "http://a/b/c/g/", 0},
      {"g/./h", "http://a/b/c/g/h", 0},
      {"g/../h", "http://a/b/c/h", 0},
      {"g;x=1/./y", "http://a/b/c/g;x=1/y", 0},
      {"g;x=1/../y", "http://a/b/c/y", 0},
      {"g?y/./x", "http://a/b/c/g?y/./x", 0},
      {"g?y/../x", "http://a/b/c/g?y/../x", 0},
      {"g#s/./x", "http://a/b/c/g", 0},
      {"g#s/../x", "http://a/b/c/g", 0},
      {"http:g", "http://a/b/c/g", 0},
  };
  check(RFC_BASE, w, sizeof w / sizeof w[0]);
}

/* Case, default ports, percent-encoding (RFC 3986 6.2.2). */
static void normalisation(void **state) {
  (void)state;
  const want w[] = {
      {"HTTP://Example.COM:80/%7euser/", "http://example.com/~user/", 0},
      {"HtTpS://X.Y:443/a", "https://x.y/a", 0},
      {"https://x:80/a", "https://x:80/a", 0},
      {"http://x:8080", "http://x:8080/", 0},
      {"//B:8080/x", "http://b:8080/x", 0},
      {"/%7E", "http://a/~", 0},
      {"/%7e", "http://a/~", 0},
      {"/~", "http://a/~", 0},
      {"/%41%62%2D%5f%2E%30", "http://a/Ab-_.0", 0},
      {"/a%2fb", "http://a/a%2Fb", 0},
      {"/a%2Fb?c=d%26e&f=%7e%3d", "http://a/a%2Fb?c=d%26e&f=~%3D", 0},
      {"/a/%2E%2E/b", "http://a/b", 0},
      {"/a/%2e/b", "http://a/a/b", 0},
      {"/Case/Kept.HTML", "http://a/Case/Kept.HTML", 0},
      {"http://127.1/", "http://127.0.0.1/", 0},
      {"http://x/a?", "http://x/a", 0},
      {"http://x/a#", "http://x/a", 0},
      {"http://user@x/", "http://user@x/", 0},
  };
  check(RFC_BASE, w, sizeof w / sizeof w[0]);
}

/* Attribute values as they come out of real pages. */
static void attribute_values(void **state) {
  (void)state;
  const want w[] = {
      {"  /x.html  ", "http://a/x.html", 0},
      {"\t\n/x.html\r\n", "http://a/x.html", 0},
      {"/x\n.ht\tml", "http://a/x.html", 0},
      {"\\x\\y.html", "http://a/x/y.html", 0},
      {"/q?p=a\\b", "http://a/q?p=a%5Cb", 0},
      {"/caf\xc3\xa9", "http://a/caf%C3%A9", 0},
      {"/a b?c d", "http://a/a%20b?c%20d", 0},
      {"/a<b>\"{x}|^`", "http://a/a%3Cb%3E%22%7Bx%7D%7C%5E%60", 0},
      {"/100%", "http://a/100%25", 0},
      {"/%zz", "http://a/%25zz", 0},
      {"?a=1&b=2", "http://a/b/c/d;p?a=1&b=2", 0},
      {"HTTP://A/B", "http://a/B", 0},
      {"mailto:x@y", NULL, CRAWL_URL_ENOTHTTP},
      {"javascript:void(0)", NULL, CRAWL_URL_ENOTHTTP},
      {"JavaScript:go()", NULL, CRAWL_URL_ENOTHTTP},
      {"ftp://x/", NULL, CRAWL_URL_ENOTHTTP},
      {"data:text/html,hi", NULL, CRAWL_URL_ENOTHTTP},
      {"tel:+1", NULL, CRAWL_URL_ENOTHTTP},
      {"http://x:99999/", NULL, CRAWL_URL_EBAD},
      {"http://a b/", NULL, CRAWL_URL_EBAD},
      {"http://[::1/", NULL, CRAWL_URL_EBAD},
  };
  check(RFC_BASE, w, sizeof w / sizeof w[0]);
}

/* Without a base only absolute URLs resolve. */
static void no_base(void **state) {
  (void)state;
  const want w[] = {
      {"http://X/%7e#f", "http://x/~", 0},
      {"/x", NULL, CRAWL_URL_EBAD},
      {"x.html", NULL, CRAWL_URL_EBAD},
  };
  check(NULL, w, sizeof w / sizeof w[0]);
}

static void keys(void **state) {
  (void)state;
  const struct {
    const char *url, *index, *key;
  } k[] = {
      {"http://a/d/index.html", "index.html", "http://a/d/"},
      {"http://a/d/index.html?x=1", "index.html", "http://a/d/?x=1"},
      {"http://a/index.html", "index.html", "http://a/"},
      {"http://a:81/index.html", "index.html", "http://a:81/"},
      {"http://a/d/", "index.html", "http://a/d/"},
      {"http://a/d/myindex.html", "index.html", "http://a/d/myindex.html"},
      {"http://a/d/index.html/", "index.html", "http://a/d/index.html/"},
      {"http://a/d/index.htm", "index.html", "http://a/d/index.htm"},
      {"http://a/d/x?f=/index.html", "index.html",
       "http://a/d/x?f=/index.html"},
      {"http://a/d/index.html", NULL, "http://a/d/index.html"},
      {"http://a/d/index.html", "", "http://a/d/index.html"},
  };
  for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
    char *key = crawl_url_key(k[i].url, k[i].index);
    assert_non_null(key);
    assert_string_equal(key, k[i].key);
    free(key);
  }
}

static void parts(void **state) {
  (void)state;
  char buf[64];
  assert_true(crawl_url_host("http://u@Ex.COM:81/x?y", buf, sizeof buf));
  assert_string_equal(buf, "ex.com");
  assert_false(crawl_url_host("http://example.com/", buf, 5));
  assert_true(crawl_url_origin("http://a:81/x/y?z", buf, sizeof buf));
  assert_string_equal(buf, "http://a:81");
  assert_true(crawl_url_origin("https://a?z", buf, sizeof buf));
  assert_string_equal(buf, "https://a");
  assert_string_equal(crawl_url_target("http://a:81/x/y?z"), "/x/y?z");
  assert_string_equal(crawl_url_target("http://a?z"), "?z");
  assert_string_equal(crawl_url_target("http://a"), "");
}

static void pct_normalise(void **state) {
  (void)state;
  char *s = crawl_url_pct_normalise("/%7e%7E~/%2f%3A*$ %");
  assert_non_null(s);
  assert_string_equal(s, "/~~~/%2F%3A*$%20%25");
  free(s);
}

int main(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(rfc_normal_examples),
      cmocka_unit_test(rfc_abnormal_examples),
      cmocka_unit_test(normalisation),
      cmocka_unit_test(attribute_values),
      cmocka_unit_test(no_base),
      cmocka_unit_test(keys),
      cmocka_unit_test(parts),
      cmocka_unit_test(pct_normalise),
  };
  int rc = cmocka_run_group_tests_name("crawl_url", tests, NULL, NULL);
  curl_global_cleanup();
  return rc;
}
