/* crawler: a breadth-first web crawler on the cfutures thread pool.
 *
 *   crawler --demo            crawl a generated site served on 127.0.0.1
 *   crawler URL [-n INFLIGHT] [-t TIMEOUT_S] [-l LIMIT]
 *
 * Pages are fetched with libcurl, one task per request, at most INFLIGHT at
 * a time: each wave of requests is collected with cf_as_completed, links are
 * extracted as pages arrive, URLs are de-duplicated, and only the start
 * host is followed. Failures (HTTP errors, refused connections, timeouts)
 * are counted and the crawl goes on. In --demo mode the program checks the
 * totals against what the generated site holds and exits non-zero if they
 * differ. */
#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cfutures.h>

#include "httpd.h"

/* ---- a set of strings (open addressing) --------------------------------- */

typedef struct strset {
  char **slot;
  size_t cap, n;
} strset;

static uint64_t hash(const char *s) {
  uint64_t h = 1469598103934665603u;
  while (*s)
    h = (h ^ (unsigned char)*s++) * 1099511628211u;
  return h;
}

/* Adds s (copied); returns false if it was there already. */
static bool strset_add(strset *set, const char *s) {
  if (set->n * 2 >= set->cap) {
    strset bigger = {calloc(set->cap ? set->cap * 2 : 1024, sizeof(char *)),
                     set->cap ? set->cap * 2 : 1024, 0};
    for (size_t i = 0; i < set->cap; i++)
      if (set->slot[i])
        strset_add(&bigger, set->slot[i]), free(set->slot[i]);
    free(set->slot);
    *set = bigger;
  }
  size_t i = hash(s) & (set->cap - 1);
  for (; set->slot[i]; i = (i + 1) & (set->cap - 1))
    if (strcmp(set->slot[i], s) == 0)
      return false;
  set->slot[i] = strdup(s);
  set->n++;
  return true;
}

static void strset_free(strset *set) {
  for (size_t i = 0; i < set->cap; i++)
    free(set->slot[i]);
  free(set->slot);
}

/* ---- fetching (runs on the pool) ---------------------------------------- */

typedef struct page {
  char *url;
  long status;    /* HTTP status, 0 if no response */
  CURLcode error; /* CURLE_OK, CURLE_COULDNT_CONNECT, ... */
  char *body;
  size_t len;
} page;

static long fetch_timeout_ms = 1000;

static size_t collect(char *data, size_t size, size_t n, void *arg) {
  page *p = arg;
  size_t add = size * n;
  char *grown = realloc(p->body, p->len + add + 1);
  if (!grown)
    return 0;
  memcpy(grown + p->len, data, add);
  p->body = grown;
  p->len += add;
  p->body[p->len] = '\0';
  return add;
}

static void page_free(void *v) {
  page *p = v;
  free(p->url);
  free(p->body);
  free(p);
}

/* A task: fetch one URL. The result is a page the future owns. */
static int fetch(void *arg, void **out) {
  page *p = calloc(1, sizeof *p);
  if (!p)
    return cf_fail(CF_ENOMEM, "out of memory");
  p->url = arg;
  CURL *c = curl_easy_init();
  if (!c) {
    page_free(p);
    return cf_fail(CF_ENOMEM, "curl_easy_init failed");
  }
  curl_easy_setopt(c, CURLOPT_URL, p->url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, p);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, fetch_timeout_ms);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  p->error = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &p->status);
  curl_easy_cleanup(c);
  *out = p;
  return 0;
}

/* ---- links ----------------------------------------------------------------
 */

/* "http://host:port" of a URL, into out. */
static void origin_of(const char *url, char *out, size_t n) {
  const char *s = strstr(url, "://");
  s = s ? s + 3 : url;
  const char *e = strchr(s, '/');
  size_t len = (size_t)(s - url) + (e ? (size_t)(e - s) : strlen(s));
  snprintf(out, n, "%.*s", (int)len, url);
}

/* The host alone (no port). */
static void host_of(const char *url, char *out, size_t n) {
  const char *s = strstr(url, "://");
  s = s ? s + 3 : url;
  size_t len = strcspn(s, ":/");
  snprintf(out, n, "%.*s", (int)len, s);
}

typedef struct crawl {
  strset seen;
  char **frontier;
  size_t head, tail, cap;
  char host[256];
  size_t ok, bytes, http_errors, refused, timeouts, other, skipped;
} crawl;

static void enqueue(crawl *cr, const char *url) {
  char host[256];
  host_of(url, host, sizeof host);
  if (strcmp(host, cr->host) != 0) {
    if (strset_add(&cr->seen, url))
      cr->skipped++; /* another host: not followed */
    return;
  }
  if (!strset_add(&cr->seen, url))
    return;
  if (cr->tail == cr->cap) {
    cr->cap = cr->cap ? cr->cap * 2 : 1024;
    cr->frontier = realloc(cr->frontier, cr->cap * sizeof(char *));
  }
  cr->frontier[cr->tail++] = strdup(url);
}

static void extract_links(crawl *cr, const page *p) {
  char origin[512];
  origin_of(p->url, origin, sizeof origin);
  for (const char *s = p->body; s && (s = strstr(s, "href=\""));) {
    s += 6;
    const char *e = strchr(s, '"');
    if (!e)
      break;
    char link[1024];
    if (*s == '/')
      snprintf(link, sizeof link, "%s%.*s", origin, (int)(e - s), s);
    else if (strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0)
      snprintf(link, sizeof link, "%.*s", (int)(e - s), s);
    else
      link[0] = '\0'; /* relative paths: not used by the demo site */
    if (link[0])
      enqueue(cr, link);
    s = e + 1;
  }
}

static void account(crawl *cr, const page *p) {
  if (p->error == CURLE_OK && p->status == 200) {
    cr->ok++;
    cr->bytes += p->len;
    extract_links(cr, p);
  } else if (p->error == CURLE_OK) {
    cr->http_errors++;
  } else if (p->error == CURLE_COULDNT_CONNECT) {
    cr->refused++;
  } else if (p->error == CURLE_OPERATION_TIMEDOUT) {
    cr->timeouts++;
  } else {
    cr->other++;
  }
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void progress(const crawl *cr, bool tty, bool final) {
  size_t failed = cr->http_errors + cr->refused + cr->timeouts + cr->other;
  if (tty)
    fprintf(stderr, "\r[crawl] fetched %zu, failed %zu, queued %zu   %s",
            cr->ok, failed, cr->tail - cr->head, final ? "\n" : "");
  else if (final || cr->ok % 500 == 0)
    fprintf(stderr, "[crawl] fetched %zu, failed %zu, queued %zu\n", cr->ok,
            failed, cr->tail - cr->head);
}

/* Crawls from start with at most `inflight` requests at a time. */
static int run_crawl(crawl *cr, const char *start, size_t inflight,
                     size_t limit) {
  cf_executor *pool;
  cf_thread_pool_opts o = {.max_workers = inflight,
                           .thread_name_prefix = "crawl"};
  if (cf_thread_pool_new(&o, &pool) != 0)
    return 1;
  host_of(start, cr->host, sizeof cr->host);
  enqueue(cr, start);
  bool tty = isatty(2);
  cf_future **wave = malloc(inflight * sizeof *wave);
  size_t fetched = 0;
  while (cr->head < cr->tail && fetched < limit) {
    /* A wave: up to `inflight` requests, collected as they complete. */
    size_t n = 0;
    while (n < inflight && cr->head < cr->tail && fetched < limit) {
      char *url = cr->frontier[cr->head++];
      if (cf_submit_with(pool, fetch, url, page_free, &wave[n]) != 0) {
        free(url);
        cr->other++;
        continue;
      }
      n++;
      fetched++;
    }
    if (n == 0)
      break;
    cf_as_completed *it;
    if (cf_as_completed_new(wave, n, 60, &it) != 0)
      break;
    cf_future *f;
    while (cf_as_completed_next(it, &f) == 0) {
      void *v;
      if (cf_future_result(f, 0, &v) == 0)
        account(cr, v);
      else
        cr->other++;
    }
    cf_as_completed_free(it);
    for (size_t i = 0; i < n; i++)
      cf_future_unref(wave[i]);
    progress(cr, tty, false);
  }
  progress(cr, tty, true);
  free(wave);
  cf_executor_free(pool);
  return 0;
}

/* ---- the demo site --------------------------------------------------------
 */

#define SITE_PAGES 2000
static int closed_port;

/* Page i links to 2i+1 and 2i+2 (a tree: all reachable from 0), to a
 * pseudo-random page (cycles: de-duplication matters), every 50th to a
 * missing page, every 400th to a closed port, page 0 to a slow page and to
 * another host. */
static int site(const char *path, char **body, size_t *len, void *ctx) {
  (void)ctx;
  int i;
  if (strcmp(path, "/slow.html") == 0) {
    sleep(3); /* longer than the crawler's timeout */
    *body = strdup("<html>late</html>");
    *len = strlen(*body);
    return 200;
  }
  if (sscanf(path, "/p/%d.html", &i) != 1 || i < 0 || i >= SITE_PAGES) {
    *body = strdup("<html>not here</html>");
    *len = strlen(*body);
    return 404;
  }
  char *b = malloc(4096);
  int n = snprintf(b, 4096, "<html><body><h1>page %d</h1>\n", i);
  int kids[3] = {2 * i + 1, 2 * i + 2, (i * 7919 + 13) % SITE_PAGES};
  for (int k = 0; k < 3; k++)
    if (kids[k] < SITE_PAGES)
      n += snprintf(b + n, (size_t)(4096 - n),
                    "<a href=\"/p/%d.html\">p%d</a>\n", kids[k], kids[k]);
  if (i % 50 == 0)
    n += snprintf(b + n, (size_t)(4096 - n),
                  "<a href=\"/missing/%d.html\">x</a>\n", i);
  if (i % 400 == 0)
    n += snprintf(b + n, (size_t)(4096 - n),
                  "<a href=\"http://127.0.0.1:%d/r%d.html\">gone</a>\n",
                  closed_port, i);
  if (i == 0)
    n += snprintf(b + n, (size_t)(4096 - n),
                  "<a href=\"/slow.html\">slow</a>\n"
                  "<a href=\"http://example.invalid/\">elsewhere</a>\n");
  n += snprintf(b + n, (size_t)(4096 - n), "</body></html>\n");
  *body = b;
  *len = (size_t)n;
  return 200;
}

/* A port nothing listens on: bind one, note it, close it. */
static int find_closed_port(void) {
  httpd *h = httpd_start(site, NULL, 1);
  int port = h ? httpd_port(h) : 1;
  if (h)
    httpd_stop(h);
  return port;
}

static void summary(const crawl *cr, double secs) {
  printf("pages fetched:   %zu\n", cr->ok);
  printf("bytes:           %zu\n", cr->bytes);
  printf("HTTP errors:     %zu\n", cr->http_errors);
  printf("refused:         %zu\n", cr->refused);
  printf("timeouts:        %zu\n", cr->timeouts);
  printf("other failures:  %zu\n", cr->other);
  printf("other hosts:     %zu (not followed)\n", cr->skipped);
  printf("time:            %.2f s (%.0f pages/s)\n", secs, cr->ok / secs);
}

int main(int argc, char **argv) {
  bool demo = false;
  const char *start = NULL;
  size_t inflight = 16, limit = (size_t)-1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--demo") == 0)
      demo = true;
    else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
      inflight = (size_t)atol(argv[++i]);
    else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
      fetch_timeout_ms = (long)(atof(argv[++i]) * 1000);
    else if (strcmp(argv[i], "-l") == 0 && i + 1 < argc)
      limit = (size_t)atol(argv[++i]);
    else
      start = argv[i];
  }
  if ((!demo && !start) || inflight == 0 || inflight > 256) {
    fprintf(stderr,
            "usage: %s --demo | URL [-n INFLIGHT] [-t TIMEOUT_S] [-l LIMIT]\n",
            argv[0]);
    return 2;
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  httpd *server = NULL;
  char url[128];
  if (demo) {
    closed_port = find_closed_port();
    server = httpd_start(site, NULL, 8);
    if (!server) {
      fprintf(stderr, "crawler: cannot start the demo server\n");
      return 1;
    }
    snprintf(url, sizeof url, "http://127.0.0.1:%d/p/0.html",
             httpd_port(server));
    start = url;
    printf("demo site: %d pages at %s\n", SITE_PAGES, url);
  }
  crawl cr = {0};
  double t0 = now_s();
  int rc = run_crawl(&cr, start, inflight, limit);
  summary(&cr, now_s() - t0);
  for (size_t i = cr.head; i < cr.tail; i++)
    free(cr.frontier[i]);
  free(cr.frontier);
  strset_free(&cr.seen);
  if (server)
    httpd_stop(server);
  curl_global_cleanup();
  if (demo && rc == 0) {
    /* What the generated site holds. */
    size_t want_missing = (SITE_PAGES + 49) / 50,
           want_refused = (SITE_PAGES + 399) / 400;
    bool good = cr.ok == SITE_PAGES && cr.http_errors == want_missing &&
                cr.refused == want_refused && cr.timeouts == 1 &&
                cr.other == 0 && cr.skipped == 1;
    printf("demo check: %s\n",
           good ? "every page fetched once, every failure reported"
                : "MISMATCH");
    return good ? 0 : 1;
  }
  return rc;
}
