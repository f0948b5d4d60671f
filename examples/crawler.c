/* crawler: a breadth-first web crawler on the cfutures thread pool.
 *
 *   crawler --demo [-n INFLIGHT] [-q]
 *       serves a generated site of 3000 pages on 127.0.0.1 (examples/httpd.c),
 *       crawls it, and exits 0 only if every page was fetched exactly once
 *       and every broken link was reported as what it is
 *   crawler URL [-n INFLIGHT] [-t TIMEOUT_S] [-l MAX_REQUESTS] [-q]
 *       crawls a real site, staying on URL's host
 *
 * How it uses cfutures:
 *   - one request = one task (fetch) on a thread pool of INFLIGHT workers;
 *     libcurl's blocking "easy" API is fine there, each task has its handle;
 *   - the main thread keeps a window of at most INFLIGHT futures, waits with
 *     cf_wait(CF_FIRST_COMPLETED), takes the finished pages out, and refills
 *     the window from the frontier: requests in flight stay bounded, and one
 *     slow page never holds the others back;
 *   - a task's result (a `page`) belongs to its future: cf_submit_with gives
 *     page_free as the destroy function, so dropping the future frees it.
 * Only the main thread touches the crawl state (frontier, seen set,
 * counters); the tasks only fetch. No locks are needed. */
#include <curl/curl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <cfutures.h>

#include "httpd.h"

#define MAX_INFLIGHT 256
#define MAX_BODY     (4u << 20) /* bigger pages are cut off and reported */
#define URL_MAX      2048

static bool quiet; /* -q: no per-URL failure lines */
static bool tty;   /* stderr is a terminal: progress updated in place */

/* ---- a set of strings (open addressing, linear probing) ----------------- */

typedef struct strset {
  char **slot;
  size_t cap, n; /* cap is a power of two, at most half full */
} strset;

static uint64_t fnv1a(const char *s) {
  uint64_t h = 1469598103934665603u;
  while (*s)
    h = (h ^ (unsigned char)*s++) * 1099511628211u;
  return h;
}

/* Inserts an owned string into a table with room for it. */
static bool strset_put(strset *set, char *s) {
  size_t i = fnv1a(s) & (set->cap - 1);
  for (; set->slot[i]; i = (i + 1) & (set->cap - 1))
    if (strcmp(set->slot[i], s) == 0)
      return false;
  set->slot[i] = s;
  set->n++;
  return true;
}

/* Adds a copy of s; returns false if s was there already. */
static bool strset_add(strset *set, const char *s) {
  if ((set->n + 1) * 2 > set->cap) {
    strset bigger = {calloc(set->cap ? set->cap * 2 : 1024, sizeof(char *)),
                     set->cap ? set->cap * 2 : 1024, 0};
    if (!bigger.slot)
      abort();
    for (size_t i = 0; i < set->cap; i++)
      if (set->slot[i])
        strset_put(&bigger, set->slot[i]);
    free(set->slot);
    *set = bigger;
  }
  char *copy = strdup(s);
  if (!copy)
    abort();
  if (strset_put(set, copy))
    return true;
  free(copy);
  return false;
}

static void strset_free(strset *set) {
  for (size_t i = 0; i < set->cap; i++)
    free(set->slot[i]);
  free(set->slot);
}

/* ---- fetching: the task that runs on the pool --------------------------- */

typedef struct page {
  char *url;
  long status;    /* HTTP status, 0 if there was no response */
  CURLcode error; /* CURLE_OK, CURLE_COULDNT_CONNECT, ... */
  char *redirect; /* Location of a 3xx, or NULL */
  char *body;     /* NUL-terminated */
  size_t len;
} page;

static long fetch_timeout_ms = 5000;

/* libcurl's write callback: appends to the page, up to MAX_BODY. */
static size_t collect(char *data, size_t size, size_t n, void *arg) {
  page *p = arg;
  size_t add = size * n;
  if (p->len + add > MAX_BODY)
    return 0; /* makes curl stop with CURLE_WRITE_ERROR */
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
  free(p->redirect);
  free(p->body);
  free(p);
}

/* Fetches one URL. Takes ownership of `arg` (the URL string); the result is
 * a page whose errors are data, not task failures: a 404 or a refused
 * connection is a normal outcome of crawling. */
static int fetch(void *arg, void **out) {
  page *p = calloc(1, sizeof *p);
  CURL *c = p ? curl_easy_init() : NULL;
  if (!c) {
    free(arg);
    free(p);
    return cf_fail(CF_ENOMEM, "cannot allocate a request");
  }
  p->url = arg;
  curl_easy_setopt(c, CURLOPT_URL, p->url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, p);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, fetch_timeout_ms);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* we run on many threads */
  curl_easy_setopt(c, CURLOPT_USERAGENT, "cfutures-crawler/0.1");
  p->error = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &p->status);
  char *location = NULL;
  if (p->error == CURLE_OK && p->status / 100 == 3 &&
      curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &location) == CURLE_OK &&
      location)
    p->redirect = strdup(location);
  curl_easy_cleanup(c);
  *out = p;
  return 0;
}

/* ---- URLs --------------------------------------------------------------- */

/* Length of "scheme://authority" at the start of an absolute http(s) URL,
 * or 0 if url is not one. */
static size_t origin_len(const char *url) {
  size_t s = strncmp(url, "http://", 7) == 0    ? 7
             : strncmp(url, "https://", 8) == 0 ? 8
                                                : 0;
  return s ? s + strcspn(url + s, "/?#") : 0;
}

/* The host of an absolute URL, without the port. */
static void host_of(const char *url, char *out, size_t n) {
  const char *h = strstr(url, "://") + 3;
  snprintf(out, n, "%.*s", (int)strcspn(h, ":/?#"), h);
}

/* Resolves the link text `link` (len bytes) found on page `base` into an
 * absolute URL without fragment. Handles absolute, scheme-relative,
 * root-relative and plain relative links (no "../" folding); returns false
 * for anything else (mailto:, javascript:, too long...). */
static bool resolve(const char *base, const char *link, size_t len, char *out,
                    size_t n) {
  const char *hash = memchr(link, '#', len);
  len = hash ? (size_t)(hash - link) : len;
  const char *slash = memchr(link, '/', len);
  int w;
  if (len == 0 || memchr(link, ' ', len) || memchr(link, '\n', len))
    return false;
  if (origin_len(link)) { /* http://host/path */
    w = snprintf(out, n, "%.*s", (int)len, link);
  } else if (len > 1 && link[0] == '/' && link[1] == '/') { /* //host/x */
    w = snprintf(out, n, "%.*s%.*s", (int)(strstr(base, "//") - base), base,
                 (int)len, link);
  } else if (link[0] == '/') { /* /path */
    w = snprintf(out, n, "%.*s%.*s", (int)origin_len(base), base, (int)len,
                 link);
  } else if (memchr(link, ':', slash ? (size_t)(slash - link) : len)) {
    return false; /* another scheme: mailto:, javascript:, ftp:... */
  } else {        /* relative to the base's directory */
    size_t o = origin_len(base);
    const char *last = strrchr(base + o, '/');
    size_t dir = last ? (size_t)(last - base) + 1 : o;
    w = snprintf(out, n, "%.*s%s%.*s", (int)dir, base, last ? "" : "/",
                 (int)len, link);
  }
  if (w < 0 || (size_t)w + 1 >= n)
    return false;
  if (out[origin_len(out)] == '\0') /* "http://host" -> "http://host/" */
    strcat(out, "/");
  return true;
}

/* ---- the crawl (main thread only) --------------------------------------- */

typedef struct crawl {
  char host[256];  /* the only host followed */
  strset seen;     /* every URL ever enqueued or skipped */
  char **frontier; /* URLs to fetch, in discovery order (BFS) */
  size_t head, tail, cap;
  /* outcomes */
  size_t pages, bytes, redirects, offsite;
  size_t http[600]; /* count per HTTP error status */
  size_t http_errors, refused, timeouts, dns, other;
  double start, last_progress;
  size_t last_done; /* pages + failures at the last progress line */
} crawl;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static size_t failures(const crawl *cr) {
  return cr->http_errors + cr->refused + cr->timeouts + cr->dns + cr->other;
}

/* Adds url to the frontier unless seen before or on another host. */
static void enqueue(crawl *cr, const char *url) {
  char host[256];
  host_of(url, host, sizeof host);
  if (!strset_add(&cr->seen, url))
    return;
  if (strcasecmp(host, cr->host) != 0) {
    cr->offsite++; /* another host: counted, not followed */
    return;
  }
  if (cr->tail == cr->cap) {
    cr->cap = cr->cap ? cr->cap * 2 : 1024;
    cr->frontier = realloc(cr->frontier, cr->cap * sizeof(char *));
    if (!cr->frontier)
      abort();
  }
  cr->frontier[cr->tail++] = strdup(url);
}

/* Finds every href="..." (or href='...') in the page. */
static void extract_links(crawl *cr, const page *p) {
  char url[URL_MAX];
  for (const char *s = p->body; (s = strstr(s, "href=")) != NULL;) {
    s += 5;
    char quote = *s;
    if (quote != '"' && quote != '\'')
      continue;
    const char *e = strchr(++s, quote);
    if (!e)
      break;
    if (resolve(p->url, s, (size_t)(e - s), url, sizeof url))
      enqueue(cr, url);
    s = e + 1;
  }
}

/* One line per failed URL, on stderr (above the progress line on a tty). */
static void report_failure(const char *url, const char *what) {
  if (!quiet)
    fprintf(stderr, "%scrawler: %-14s %s\n", tty ? "\r\033[K" : "", what, url);
}

static void account(crawl *cr, const page *p) {
  char what[64];
  if (p->error == CURLE_OK && p->status / 100 == 2) {
    cr->pages++;
    cr->bytes += p->len;
    if (p->body)
      extract_links(cr, p);
    return;
  }
  if (p->error == CURLE_OK && p->status / 100 == 3 && p->redirect) {
    cr->redirects++;
    char url[URL_MAX];
    if (resolve(p->url, p->redirect, strlen(p->redirect), url, sizeof url))
      enqueue(cr, url);
    return;
  }
  if (p->error == CURLE_OK) {
    cr->http_errors++;
    cr->http[p->status >= 100 && p->status < 600 ? p->status : 0]++;
    snprintf(what, sizeof what, "HTTP %ld", p->status);
  } else if (p->error == CURLE_COULDNT_CONNECT) {
    cr->refused++;
    snprintf(what, sizeof what, "refused");
  } else if (p->error == CURLE_OPERATION_TIMEDOUT) {
    cr->timeouts++;
    snprintf(what, sizeof what, "timed out");
  } else if (p->error == CURLE_COULDNT_RESOLVE_HOST) {
    cr->dns++;
    snprintf(what, sizeof what, "unknown host");
  } else {
    cr->other++;
    snprintf(what, sizeof what, "%s", curl_easy_strerror(p->error));
  }
  report_failure(p->url, what);
}

/* A status line: in place on a terminal (10 times a second), else a line a
 * second so that logs stay short. */
static void progress(crawl *cr, size_t inflight, bool last) {
  double t = now_s();
  size_t finished = cr->pages + failures(cr) + cr->redirects;
  if (!last && t - cr->last_progress < (tty ? 0.1 : 1.0))
    return;
  if (last && (tty || finished == cr->last_done)) {
    if (tty) /* the summary follows: clear the line */
      fprintf(stderr, "\r\033[K");
    return;
  }
  cr->last_progress = t;
  cr->last_done = finished;
  fprintf(stderr,
          "%s[crawl] %zu pages, %zu failed, %zu in flight, %zu queued, "
          "%.0f pages/s%s",
          tty ? "\r\033[K" : "", cr->pages, failures(cr), inflight,
          cr->tail - cr->head, (double)cr->pages / (t - cr->start),
          tty ? "" : "\n");
}

/* The future of a finished fetch: account for its page. */
static void finish(crawl *cr, cf_future *f) {
  void *v;
  int rc = cf_future_result(f, 0, &v);
  if (rc == 0) {
    account(cr, v);
  } else { /* the task itself failed (out of memory): rare */
    cf_error e = {rc, cf_strerror(rc)};
    cf_future_exception(f, 0, &e);
    cr->other++;
    report_failure("(a request)", e.message);
  }
}

/* Crawls from `start`, at most `inflight` requests at a time and `limit`
 * requests in all. Returns 0, or -1 if the pool could not be made. */
static int run_crawl(crawl *cr, const char *start, size_t inflight,
                     size_t limit) {
  cf_executor *pool;
  cf_thread_pool_opts o = {.max_workers = inflight,
                           .thread_name_prefix = "crawl"};
  if (cf_thread_pool_new(&o, &pool) != 0)
    return -1;
  cf_future *window[MAX_INFLIGHT];
  bool done[MAX_INFLIGHT];
  size_t n = 0, requested = 0;
  host_of(start, cr->host, sizeof cr->host);
  enqueue(cr, start);
  cr->start = now_s();
  for (;;) {
    /* Refill the window from the frontier, oldest first (breadth first). */
    while (n < inflight && cr->head < cr->tail && requested < limit) {
      char *url = cr->frontier[cr->head++];
      requested++;
      if (cf_submit_with(pool, fetch, url, page_free, &window[n]) != 0) {
        cr->other++;
        report_failure(url, "not submitted");
        free(url);
        continue;
      }
      n++; /* the task owns url now */
    }
    if (n == 0)
      break; /* nothing in flight and nothing left to send */
    /* Wait for at least one to finish; wake up anyway for the progress. */
    if (cf_wait(window, n, 0.1, CF_FIRST_COMPLETED, done) == 0) {
      size_t kept = 0;
      for (size_t i = 0; i < n; i++) {
        if (done[i]) {
          finish(cr, window[i]);
          cf_future_unref(window[i]); /* frees the page */
        } else {
          window[kept++] = window[i];
        }
      }
      n = kept;
    }
    progress(cr, n, false);
  }
  progress(cr, 0, true);
  cf_executor_free(pool);
  return 0;
}

static void print_summary(const crawl *cr, double secs) {
  printf("pages:          %zu\n", cr->pages);
  printf("bytes:          %zu\n", cr->bytes);
  printf("redirects:      %zu\n", cr->redirects);
  printf("failed:         %zu\n", failures(cr));
  for (int s = 0; s < 600; s++)
    if (cr->http[s])
      printf("  http %d:     %zu\n", s, cr->http[s]);
  printf("  refused:      %zu\n", cr->refused);
  printf("  timeouts:     %zu\n", cr->timeouts);
  printf("  unknown host: %zu\n", cr->dns);
  printf("  other:        %zu\n", cr->other);
  printf("offsite:        %zu (links to other hosts, not followed)\n",
         cr->offsite);
  printf("time:           %.2f s\n", secs);
  printf("pages/s:        %.0f\n", (double)cr->pages / secs);
}

/* ---- the demo site ---------------------------------------------------------
 * SITE_PAGES pages /p/<i>.html. Page i links to 2i+1 and 2i+2 (a binary tree:
 * every page is reachable from page 0), to a pseudo-random page and to its
 * parent (cycles: de-duplication matters), each spelled differently
 * (root-relative, relative, absolute, with a #fragment) so that one page has
 * several spellings. Broken links: every 50th page links to a missing page,
 * shared by two pages (404); every 500th to a port where nothing listens
 * (connection refused); page 1 to a page slower than the crawler's timeout;
 * page 0 to another host (never fetched). */

#define SITE_PAGES      3000
#define DEMO_TIMEOUT_MS 2000

enum link_kind { L_PAGE, L_MISSING, L_REFUSED, L_SLOW, L_OFFSITE, L_KINDS };
typedef struct site_link {
  enum link_kind kind;
  int id;
} site_link;

/* The links of page i, as (kind, id): the rendering and the expected
 * totals are both made from this one list. */
static int site_links(int i, site_link out[8]) {
  int n = 0;
  if (2 * i + 1 < SITE_PAGES)
    out[n++] = (site_link){L_PAGE, 2 * i + 1};
  if (2 * i + 2 < SITE_PAGES)
    out[n++] = (site_link){L_PAGE, 2 * i + 2};
  out[n++] = (site_link){L_PAGE, (int)((i * 7919L + 13) % SITE_PAGES)};
  if (i > 0)
    out[n++] = (site_link){L_PAGE, (i - 1) / 2};
  if (i % 50 == 0)
    out[n++] = (site_link){L_MISSING, i / 100};
  if (i % 500 == 0)
    out[n++] = (site_link){L_REFUSED, i};
  if (i == 1)
    out[n++] = (site_link){L_SLOW, 0};
  if (i == 0)
    out[n++] = (site_link){L_OFFSITE, 0};
  return n;
}

typedef struct site {
  int port, closed_port;
  /* Requests served per page, per missing page, for the slow page: read
   * after httpd_stop, which waits for the pool (that join orders them). */
  atomic_int hits[SITE_PAGES], missing_hits[SITE_PAGES], slow_hits;
} site;

static void render_link(const site *s, const site_link *l, int k, char *buf,
                        size_t n) {
  switch (l->kind) {
  case L_PAGE:
    if (k % 4 == 0)
      snprintf(buf, n, "/p/%d.html", l->id);
    else if (k % 4 == 1)
      snprintf(buf, n, "%d.html", l->id); /* relative to /p/ */
    else if (k % 4 == 2)
      snprintf(buf, n, "http://127.0.0.1:%d/p/%d.html#top", s->port, l->id);
    else
      snprintf(buf, n, "/p/%d.html#section-%d", l->id, k);
    break;
  case L_MISSING:
    snprintf(buf, n, "/missing/%d.html", l->id);
    break;
  case L_REFUSED:
    snprintf(buf, n, "http://127.0.0.1:%d/r%d.html", s->closed_port, l->id);
    break;
  case L_SLOW:
    snprintf(buf, n, "/slow.html");
    break;
  default:
    snprintf(buf, n, "http://example.invalid/");
    break;
  }
}

/* The site's request handler (runs on the server's pool). */
static void site_handler(void *ctx, const httpd_request *req,
                         httpd_response *res) {
  site *s = ctx;
  int i, used = 0;
  char tail;
  if (strcmp(req->path, "/slow.html") == 0) {
    atomic_fetch_add_explicit(&s->slow_hits, 1, memory_order_relaxed);
    httpd_sleep(req->server, 30); /* cut short when the server stops */
    res->body = strdup("<html>late</html>");
    res->len = res->body ? strlen(res->body) : 0;
    return;
  }
  if (sscanf(req->path, "/p/%d.htm%c", &i, &tail) != 2 || tail != 'l' ||
      i < 0 || i >= SITE_PAGES) {
    if (sscanf(req->path, "/missing/%d.html", &i) == 1 && i >= 0 &&
        i < SITE_PAGES)
      atomic_fetch_add_explicit(&s->missing_hits[i], 1, memory_order_relaxed);
    res->status = 404;
    res->body = strdup("<html>not here</html>");
    res->len = res->body ? strlen(res->body) : 0;
    return;
  }
  atomic_fetch_add_explicit(&s->hits[i], 1, memory_order_relaxed);
  size_t cap = 2048;
  char *b = malloc(cap), href[128];
  if (!b) {
    res->status = 503;
    return;
  }
  site_link links[8];
  int n = site_links(i, links);
  used += snprintf(b, cap, "<html><body><h1>page %d</h1>\n<ul>\n", i);
  for (int k = 0; k < n; k++) {
    render_link(s, &links[k], k, href, sizeof href);
    used += snprintf(b + used, cap - (size_t)used,
                     "<li><a href=\"%s\">link %d</a></li>\n", href, k);
  }
  used += snprintf(b + used, cap - (size_t)used, "</ul></body></html>\n");
  res->body = b;
  res->len = (size_t)used;
}

/* A port where connections are refused for as long as fd stays open: a
 * socket bound to it but not listening, so no one else can take it. */
static int reserve_closed_port(int *fd) {
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof a;
  *fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (*fd < 0 || bind(*fd, (struct sockaddr *)&a, sizeof a) ||
      getsockname(*fd, (struct sockaddr *)&a, &alen))
    return -1;
  return ntohs(a.sin_port);
}

/* Compares what the crawler saw with what the site holds and what the
 * server served; prints one line per check. */
static bool demo_check(const crawl *cr, const site *s) {
  int expected[L_KINDS] = {0};
  static bool linked[L_KINDS][SITE_PAGES];
  site_link links[8];
  for (int i = 0; i < SITE_PAGES; i++)
    for (int k = 0, n = site_links(i, links); k < n; k++)
      if (!linked[links[k].kind][links[k].id]) {
        linked[links[k].kind][links[k].id] = true;
        expected[links[k].kind]++;
      }
  int once = 0, missing_once = 0;
  for (int i = 0; i < SITE_PAGES; i++) {
    once += atomic_load_explicit(&s->hits[i], memory_order_relaxed) == 1;
    missing_once +=
        atomic_load_explicit(&s->missing_hits[i], memory_order_relaxed) ==
        (linked[L_MISSING][i] ? 1 : 0);
  }
  int slow = atomic_load_explicit(&s->slow_hits, memory_order_relaxed);
  struct {
    const char *what;
    size_t got, want;
  } checks[] = {
      {"pages fetched", cr->pages, SITE_PAGES},
      {"pages served exactly once", (size_t)once, SITE_PAGES},
      {"404s reported", cr->http[404], (size_t)expected[L_MISSING]},
      {"missing pages asked as linked", (size_t)missing_once, SITE_PAGES},
      {"refused reported", cr->refused, (size_t)expected[L_REFUSED]},
      {"timeouts reported", cr->timeouts, (size_t)expected[L_SLOW]},
      {"slow page asked once", (size_t)slow, 1},
      {"offsite links skipped", cr->offsite, (size_t)expected[L_OFFSITE]},
      {"other failures", cr->http_errors - cr->http[404] + cr->dns + cr->other,
       0},
  };
  bool ok = true;
  for (size_t c = 0; c < sizeof checks / sizeof checks[0]; c++) {
    bool good = checks[c].got == checks[c].want;
    printf("check: %-29s %6zu (expected %zu)%s\n", checks[c].what,
           checks[c].got, checks[c].want, good ? "" : "  <-- MISMATCH");
    ok &= good;
  }
  printf("demo: %s\n", ok ? "PASS" : "FAIL");
  return ok;
}

/* ---- main --------------------------------------------------------------- */

static int usage(const char *argv0) {
  fprintf(stderr,
          "usage: %s --demo [-n INFLIGHT] [-q]\n"
          "       %s URL [-n INFLIGHT] [-t TIMEOUT_S] [-l MAX_REQUESTS] [-q]\n"
          "  INFLIGHT 1..%d (default 16), TIMEOUT_S per request (default 5)\n",
          argv0, argv0, MAX_INFLIGHT);
  return 2;
}

int main(int argc, char **argv) {
  bool demo = false;
  const char *start = NULL;
  long inflight = 16, limit = -1;
  double timeout_s = 5;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--demo") == 0)
      demo = true;
    else if (strcmp(argv[i], "-q") == 0)
      quiet = true;
    else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
      inflight = atol(argv[++i]);
    else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
      timeout_s = atof(argv[++i]);
    else if (strcmp(argv[i], "-l") == 0 && i + 1 < argc)
      limit = atol(argv[++i]);
    else if (argv[i][0] != '-' && !start)
      start = argv[i];
    else
      return usage(argv[0]);
  }
  if (demo == (start != NULL) || inflight < 1 || inflight > MAX_INFLIGHT ||
      !(timeout_s > 0 && timeout_s < 3600) || (start && !origin_len(start)))
    return usage(argv[0]);
  fetch_timeout_ms = demo ? DEMO_TIMEOUT_MS : (long)(timeout_s * 1000);
  tty = isatty(STDERR_FILENO);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) /* before threads */
    return 1;

  httpd *server = NULL;
  site *s = NULL;
  int closed_fd = -1;
  char url[URL_MAX];
  if (demo) {
    s = calloc(1, sizeof *s);
    if (!s || (s->closed_port = reserve_closed_port(&closed_fd)) < 0 ||
        !(server = httpd_start(&(httpd_opts){.workers = 8}, site_handler, s))) {
      perror("crawler: cannot start the demo site");
      return 1;
    }
    s->port = httpd_port(server);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/p/0.html", s->port);
    start = url;
    printf("demo site: %d pages at %s, %ld requests in flight, %.1f s "
           "timeout\n",
           SITE_PAGES, url, inflight, DEMO_TIMEOUT_MS / 1000.0);
  } else {
    printf("crawling %s, %ld requests in flight\n", start, inflight);
  }
  fflush(stdout);

  crawl *cr = calloc(1, sizeof *cr);
  if (!cr || run_crawl(cr, start, (size_t)inflight,
                       limit < 0 ? SIZE_MAX : (size_t)limit) != 0) {
    fprintf(stderr, "crawler: cannot create the thread pool\n");
    return 1;
  }
  print_summary(cr, now_s() - cr->start);
  int rc = 0;
  if (demo) {
    httpd_stop(server); /* waits for its pool: the hit counts are final */
    close(closed_fd);
    rc = demo_check(cr, s) ? 0 : 1;
    free(s);
  }
  for (size_t i = cr->head; i < cr->tail; i++) /* unvisited (-l) */
    free(cr->frontier[i]);
  free(cr->frontier);
  strset_free(&cr->seen);
  free(cr);
  curl_global_cleanup();
  return rc;
}
