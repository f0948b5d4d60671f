/* URL resolution and normalisation for the crawler (see crawl_url.h):
 * curl_url does the parsing and RFC 3986 resolution, clean_ref and
 * crawl_url_pct_normalise what curl 7.88 leaves out. */
#include "crawl_url.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
         (c >= 'A' && c <= 'F');
}

static int hex_value(char c) {
  return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* RFC 3986 2.3: ALPHA / DIGIT / "-" / "." / "_" / "~" */
static bool is_unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
}

/* Bytes that may appear in a URL as they are: unreserved, gen-delims and
 * sub-delims (RFC 3986 2.2), and "%" (checked separately). */
static bool is_url_byte(unsigned char c) {
  return is_unreserved(c) || (c && strchr(":/?#[]@!$&'()*+,;=", c));
}

char *crawl_url_pct_normalise(const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  char *out = malloc(strlen(s) * 3 + 1), *o = out; /* each byte: at most 3 */
  if (!out)
    return NULL;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '%' && is_hex((char)p[1]) && is_hex((char)p[2])) {
      unsigned char c =
          (unsigned char)(hex_value((char)p[1]) * 16 + hex_value((char)p[2]));
      if (is_unreserved(c)) {
        *o++ = (char)c; /* %7E -> ~ */
      } else {
        *o++ = '%'; /* %2f -> %2F */
        *o++ = hex[c >> 4];
        *o++ = hex[c & 15];
      }
      p += 2;
    } else if (*p == '%' || !is_url_byte(*p)) {
      *o++ = '%'; /* a lone "%", a space, "<", a UTF-8 byte... */
      *o++ = hex[*p >> 4];
      *o++ = hex[*p & 15];
    } else {
      *o++ = (char)*p;
    }
  }
  *o = '\0';
  return out;
}

/* Length of the "scheme:" prefix of s (RFC 3986 3.1) without the colon, or
 * 0 if s has none. */
static size_t scheme_len(const char *s) {
  size_t n = 0;
  if (!((s[0] | 0x20) >= 'a' && (s[0] | 0x20) <= 'z'))
    return 0;
  while (((s[n] | 0x20) >= 'a' && (s[n] | 0x20) <= 'z') ||
         (s[n] >= '0' && s[n] <= '9') || s[n] == '+' || s[n] == '-' ||
         s[n] == '.')
    n++;
  return s[n] == ':' ? n : 0;
}

static bool is_http(const char *scheme, size_t n) {
  return (n == 4 && strncasecmp(scheme, "http", 4) == 0) ||
         (n == 5 && strncasecmp(scheme, "https", 5) == 0);
}

/* An attribute value made into a reference as browsers make it (WHATWG
 * URL parsing): C0 controls and spaces stripped at both ends, tabs and
 * newlines removed, "\" read as "/" before the query or fragment (http and
 * https are "special" schemes), then percent-encoded where needed. */
static char *clean_ref(const char *ref) {
  size_t len = strlen(ref);
  while (len && (unsigned char)ref[len - 1] <= ' ')
    len--;
  while (len && (unsigned char)*ref <= ' ')
    ref++, len--;
  char *tmp = malloc(len + 1), *t = tmp;
  if (!tmp)
    return NULL;
  bool in_path = true;
  for (size_t i = 0; i < len; i++) {
    char c = ref[i];
    if (c == '\t' || c == '\n' || c == '\r')
      continue;
    if (c == '?' || c == '#')
      in_path = false;
    *t++ = c == '\\' && in_path ? '/' : c;
  }
  *t = '\0';
  char *out = crawl_url_pct_normalise(tmp);
  free(tmp);
  return out;
}

/* The URL held by u, without its default port, or NULL. */
static char *get_url(CURLU *u) {
  char *s = NULL;
  if (curl_url_get(u, CURLUPART_URL, &s, CURLU_NO_DEFAULT_PORT) != CURLUE_OK)
    return NULL;
  char *copy = strdup(s);
  curl_free(s);
  return copy;
}

int crawl_url_resolve(const char *base, const char *ref, char **out) {
  *out = NULL;
  char *r = clean_ref(ref);
  if (!r)
    return CRAWL_URL_ENOMEM;
  const char *rel = r;
  size_t sn = scheme_len(r);
  if (sn && !is_http(r, sn)) {
    free(r);
    return CRAWL_URL_ENOTHTTP; /* mailto:, javascript:, ftp:, data: ... */
  }
  if (base && sn && strncmp(r + sn + 1, "//", 2) != 0 &&
      strncasecmp(r, base, sn) == 0 && base[sn] == ':')
    rel += sn + 1; /* "http:g" on an http page is "g" (RFC 3986 5.2.2) */
  if (base && (*rel == '\0' || *rel == '#'))
    rel = base; /* the document itself; curl 7.88 gets "#s" wrong */

  int rc = CRAWL_URL_EBAD;
  char *host = NULL, *scheme = NULL, *url = NULL, *norm = NULL;
  CURLU *u = curl_url(), *again = curl_url();
  if (!u || !again) {
    rc = CRAWL_URL_ENOMEM;
    goto done;
  }
  if ((base && curl_url_set(u, CURLUPART_URL, base, 0) != CURLUE_OK) ||
      curl_url_set(u, CURLUPART_URL, rel, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK)
    goto done;
  if (!is_http(scheme, strlen(scheme))) {
    rc = CRAWL_URL_ENOTHTTP;
    goto done;
  }
  if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
    goto done;
  for (char *h = host; *h; h++)
    if (*h >= 'A' && *h <= 'Z')
      *h = (char)(*h | 0x20);
  if (curl_url_set(u, CURLUPART_HOST, host, 0) != CURLUE_OK ||
      curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) != CURLUE_OK ||
      !(url = get_url(u)))
    goto done;
  /* Percent-decoding may reveal dot segments ("%2E%2E"): parse again. */
  if (!(norm = crawl_url_pct_normalise(url))) {
    rc = CRAWL_URL_ENOMEM;
    goto done;
  }
  if (curl_url_set(again, CURLUPART_URL, norm, 0) != CURLUE_OK ||
      !(*out = get_url(again)))
    goto done;
  rc = CRAWL_URL_OK;
done:
  curl_free(scheme);
  curl_free(host);
  free(url);
  free(norm);
  curl_url_cleanup(u);
  curl_url_cleanup(again);
  free(r);
  return rc;
}

const char *crawl_url_target(const char *url) {
  const char *a = strstr(url, "://");
  a = a ? a + 3 : url + strlen(url);
  return a + strcspn(a, "/?");
}

char *crawl_url_key(const char *url, const char *dir_index) {
  const char *target = crawl_url_target(url);
  size_t path_len = strcspn(target, "?"), n = dir_index ? strlen(dir_index) : 0;
  if (n == 0 || *target != '/' || path_len < n + 1 ||
      target[path_len - n - 1] != '/' ||
      strncmp(target + path_len - n, dir_index, n) != 0)
    return strdup(url);
  size_t head = (size_t)(target - url) + path_len - n;
  char *key = malloc(strlen(url) - n + 1);
  if (!key)
    return NULL;
  memcpy(key, url, head);
  strcpy(key + head, target + path_len); /* the query, if any */
  return key;
}

bool crawl_url_host(const char *url, char *host, size_t n) {
  CURLU *u = curl_url();
  char *h = NULL;
  bool ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK &&
            strlen(h) < n;
  if (ok)
    for (size_t i = 0; (host[i] = h[i]) != '\0'; i++)
      if (host[i] >= 'A' && host[i] <= 'Z')
        host[i] = (char)(host[i] | 0x20);
  curl_free(h);
  curl_url_cleanup(u);
  return ok;
}

bool crawl_url_origin(const char *url, char *origin, size_t n) {
  size_t len = (size_t)(crawl_url_target(url) - url);
  if (len >= n || !strstr(url, "://"))
    return false;
  memcpy(origin, url, len);
  origin[len] = '\0';
  return true;
}
