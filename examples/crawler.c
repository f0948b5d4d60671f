/* crawler: a breadth-first web crawler on the cfutures thread pool.
 *
 *   crawler --demo [options]
 *       serves a generated site on 127.0.0.1 (examples/crawl_site.c), crawls
 *       it, and exits 0 only if the site's own request log shows every page
 *       asked exactly once, nothing outside the site, nothing robots.txt
 *       disallows, and every broken link and redirect reported as what it is
 *   crawler URL [options]
 *       crawls a real site, staying on URL's host
 *
 * Options:
 *   -n INFLIGHT      requests at a time, 1..256 (default 16)
 *   -t TIMEOUT_S     seconds per request (default 5; the demo uses 2)
 *   -l MAX_PAGES     page requests at most, redirects included (default
 *                    100000); robots.txt requests do not count
 *   -d MAX_DEPTH     links followed from the start page at most (default
 *                    100; 0 fetches the start page only); a redirect is
 *                    not a link, its target keeps the depth
 *   -r MAX_REDIRECTS redirect hops followed from one link (default 10)
 *   --dir-index NAME a final path segment NAME is the directory itself:
 *                    /dir/ and /dir/NAME are one page, fetched under the
 *                    spelling met first (default index.html; "" keeps them
 *                    apart)
 *   --no-robots      do not read or obey robots.txt
 *   --green          run the requests as green tasks, all on ONE thread
 *                    (a loop and a green pool of INFLIGHT tasks) instead
 *                    of a thread pool: libcurl's blocking easy API stays
 *                    as it is, and libcfutures_patch (linked in) turns its
 *                    waits into switches between the tasks, as gevent's
 *                    monkey.patch_all does
 *   -q               no per-URL lines
 *
 * Exit status: 0 when the crawl ran to its end (failed URLs are results,
 * not errors; the demo: and its check passed), 1 when the demo's check
 * failed or the crawl could not start, 2 for bad usage, 130 when SIGINT
 * (Ctrl-C) stopped it: no new request is sent, requests not started are
 * cancelled, those running finish (each bounded by the timeout), and the
 * summary so far is printed. A second Ctrl-C kills at once.
 *
 * How it uses cfutures:
 *   - one request = one task (fetch) on a thread pool of INFLIGHT workers;
 *     libcurl's blocking "easy" API is fine there, each task has its
 *     handle; the task also parses the page (Gumbo) and resolves its links
 *     (crawl_links.c), so parsing runs in parallel too;
 *   - the main thread keeps a window of at most INFLIGHT futures, waits with
 *     cf_wait(CF_FIRST_COMPLETED), takes the finished pages out, and refills
 *     the window from the frontier: requests in flight stay bounded, and one
 *     slow page never holds the others back;
 *   - a task's result (a `page`) belongs to its future: cf_submit_with gives
 *     page_free as the destroy function, so dropping the future frees it.
 *     The task only reads its `job`, which the main thread owns.
 * Only the main thread touches the crawl state (frontier, seen set, robots
 * rules, counters); the tasks only fetch and parse. No locks are needed.
 * With --green the executor is a green pool on a loop that a thread of its
 * own runs; the main thread's part does not change (a green pool is an
 * executor like the others, and its futures are the same futures).
 *
 * Redirects are followed by the main thread, not by curl: the target is
 * resolved, checked against the start host, the seen set and robots.txt
 * like any link, and fetched as a job of its own, so a URL reached through
 * a redirect is fetched once however many ways lead to it. robots.txt is
 * read once per origin (scheme, host, port) before any other request to
 * it; URLs wait meanwhile. A 4xx robots.txt allows everything; a 5xx or a
 * network error disallows the whole origin (RFC 9309 2.3.1). */
#include <curl/curl.h>
#include <dlfcn.h>
#include <pthread.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cfutures.h>

#include "crawl_links.h"
#include "crawl_robots.h"
#include "crawl_site.h"
#include "crawl_url.h"

#define MAX_INFLIGHT 256
#define MAX_BODY     (4u << 20) /* bigger pages are cut off and reported */
#define AGENT        "cfutures-crawler" /* robots.txt product token */
#define EXIT_SIGINT  130

static bool quiet; /* -q: no per-URL lines */
static bool tty;   /* stderr is a terminal: progress updated in place */
static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
  (void)sig;
  interrupted = 1;
  signal(SIGINT, SIG_DFL); /* a second Ctrl-C kills */
}

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

static bool strset_has(const strset *set, const char *s) {
  if (!set->cap)
    return false;
  for (size_t i = fnv1a(s) & (set->cap - 1); set->slot[i];
       i = (i + 1) & (set->cap - 1))
    if (strcmp(set->slot[i], s) == 0)
      return true;
  return false;
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

/* One request. The main thread owns it, from the frontier until its page
 * is accounted for; the task only reads it. */
typedef struct job {
  char *url;   /* normalised */
  int depth;   /* links from the start page */
  int hops;    /* redirects followed to reach it */
  bool robots; /* a robots.txt request (url is the file's) */
} job;

typedef struct page {
  long status;    /* HTTP status, 0 if there was no response */
  CURLcode error; /* CURLE_OK, CURLE_COULDNT_CONNECT, ... */
  char *redirect; /* Location of a 3xx, absolute, or NULL */
  char *body;     /* robots.txt only: NUL-terminated */
  size_t len;     /* bytes received */
  bool html;      /* parsed: links is valid */
  int parse_rc;   /* crawl_links_extract's result */
  crawl_links links;
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
  free(p->redirect);
  free(p->body);
  crawl_links_fini(&p->links);
  free(p);
}

/* Whether a Content-Type names HTML (no type: assume it does). */
static bool is_html(const char *type) {
  return !type || strncasecmp(type, "text/html", 9) == 0 ||
         strncasecmp(type, "application/xhtml+xml", 21) == 0;
}

/* Fetches one URL and, for an HTML page, extracts its links. `arg` is a
 * job, borrowed. The result is a page whose errors are data, not task
 * failures: a 404 or a refused connection is a normal outcome. */
/* The threads that ran requests (a summary line): up to 64 told apart. */
static pthread_mutex_t fetch_threads_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t fetch_threads[64];
static size_t n_fetch_threads;

static void note_thread(void) {
  pthread_t me = pthread_self();
  pthread_mutex_lock(&fetch_threads_mu);
  bool seen = false;
  for (size_t i = 0; i < n_fetch_threads && !seen; i++)
    seen = pthread_equal(fetch_threads[i], me);
  if (!seen && n_fetch_threads < 64)
    fetch_threads[n_fetch_threads++] = me;
  pthread_mutex_unlock(&fetch_threads_mu);
}

static int fetch(void *arg, void **out) {
  const job *j = arg;
  note_thread();
  page *p = calloc(1, sizeof *p);
  CURL *c = p ? curl_easy_init() : NULL;
  if (!c) {
    free(p);
    return cf_fail(CF_ENOMEM, "cannot allocate a request");
  }
  curl_easy_setopt(c, CURLOPT_URL, j->url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, p);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, fetch_timeout_ms);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* we run on many threads */
  curl_easy_setopt(c, CURLOPT_USERAGENT, AGENT "/0.2");
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  if (j->robots) { /* RFC 9309 2.3.1.2: follow at least five redirects */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  }
  p->error = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &p->status);
  char *location = NULL, *type = NULL;
  if (p->error == CURLE_OK && p->status / 100 == 3 &&
      curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &location) == CURLE_OK &&
      location)
    p->redirect = strdup(location);
  curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &type);
  if (!j->robots && p->error == CURLE_OK && p->status / 100 == 2 &&
      is_html(type)) {
    p->html = true;
    p->parse_rc =
        crawl_links_extract(p->body ? p->body : "", p->len, j->url, &p->links);
  }
  if (!j->robots) { /* only robots.txt is read by the main thread */
    free(p->body);
    p->body = NULL;
  }
  curl_easy_cleanup(c);
  *out = p;
  return 0;
}

/* ---- the crawl (main thread only) --------------------------------------- */

typedef struct options {
  size_t inflight, max_pages;
  int max_depth, max_redirects;
  const char *dir_index;
  bool robots, green;
} options;

/* robots.txt of one origin: rules NULL while its request is in flight. */
typedef struct origin {
  char *name; /* "http://host:port" */
  crawl_robots *rules;
  bool unreachable; /* its robots.txt failed: nothing there is fetched */
} origin;

typedef struct jobs {
  job *v;
  size_t head, tail, cap;
} jobs;

typedef struct crawl {
  options opt;
  char host[256]; /* the only host followed */
  strset seen;    /* keys of every URL ever enqueued or skipped */
  strset deep;    /* keys of URLs met beyond the depth limit */
  jobs frontier;  /* to fetch, in discovery order (breadth first) */
  jobs parked;    /* waiting for their origin's robots.txt */
  origin *origins;
  size_t n_origins;
  /* outcomes */
  size_t requests, page_requests, pages, bytes;
  size_t links, duplicates, other_schemes, bad_links, offsite;
  size_t redirects, redirects_offsite, redirects_seen, redirect_limit;
  size_t robots_fetched, disallowed, unreachable;
  size_t http[600]; /* count per HTTP error status */
  size_t http_errors, refused, timeouts, dns, other;
  size_t not_html, cancelled;
  size_t left; /* URLs not fetched when the crawl stopped (limit, Ctrl-C) */
  bool limited, stopped;
  double start, last_progress;
  size_t last_done; /* finished requests at the last progress line */
} crawl;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static size_t failures(const crawl *cr) {
  return cr->http_errors + cr->refused + cr->timeouts + cr->dns + cr->other +
         cr->redirect_limit;
}

static void jobs_push(jobs *q, job j) {
  if (q->tail == q->cap) {
    if (q->head > 0) { /* slide down before growing */
      memmove(q->v, q->v + q->head, (q->tail - q->head) * sizeof *q->v);
      q->tail -= q->head;
      q->head = 0;
    } else {
      q->cap = q->cap ? q->cap * 2 : 1024;
      q->v = realloc(q->v, q->cap * sizeof *q->v);
      if (!q->v)
        abort();
    }
  }
  q->v[q->tail++] = j;
}

static void jobs_free(jobs *q) {
  for (size_t i = q->head; i < q->tail; i++)
    free(q->v[i].url);
  free(q->v);
}

/* One line per URL that failed or was left alone, on stderr (above the
 * progress line on a tty). */
static void report(const char *what, const char *url, const char *more) {
  if (!quiet)
    fprintf(stderr, "%scrawler: %-16s %s%s%s\n", tty ? "\r\033[K" : "", what,
            url, more ? " -> " : "", more ? more : "");
}

/* Takes a URL found on a page (or as a redirect target, `via` set to the
 * redirecting URL) into the crawl: de-duplicated on its key, left alone if
 * on another host or too deep, else queued. Returns true if queued. */
static bool enqueue(crawl *cr, const char *url, int depth, int hops,
                    const char *via) {
  char host[256];
  char *key = crawl_url_key(url, cr->opt.dir_index);
  if (!key)
    abort();
  bool offsite =
      !crawl_url_host(url, host, sizeof host) || strcmp(host, cr->host) != 0;
  if (via && offsite) { /* reported whether or not it was seen */
    cr->redirects_offsite++;
    report("redirect offsite", via, url);
  }
  if (!offsite && depth > cr->opt.max_depth) {
    strset_add(&cr->deep, key); /* may still turn up less deep */
    free(key);
    return false;
  }
  if (!strset_add(&cr->seen, key)) {
    if (via && !offsite)
      cr->redirects_seen++; /* counted as visited already */
    else if (!via)
      cr->duplicates++;
    free(key);
    return false;
  }
  free(key);
  if (offsite) {
    cr->offsite += !via; /* another host: counted, not followed */
    return false;
  }
  char *copy = strdup(url);
  if (!copy)
    abort();
  jobs_push(&cr->frontier, (job){copy, depth, hops, false});
  return true;
}

static origin *find_origin(crawl *cr, const char *name) {
  for (size_t i = 0; i < cr->n_origins; i++)
    if (strcmp(cr->origins[i].name, name) == 0)
      return &cr->origins[i];
  return NULL;
}

static const char *failure_name(const page *p, char *buf, size_t n) {
  if (p->error == CURLE_OK)
    snprintf(buf, n, "HTTP %ld", p->status);
  else if (p->error == CURLE_COULDNT_CONNECT)
    snprintf(buf, n, "refused");
  else if (p->error == CURLE_OPERATION_TIMEDOUT)
    snprintf(buf, n, "timed out");
  else if (p->error == CURLE_COULDNT_RESOLVE_HOST)
    snprintf(buf, n, "unknown host");
  else
    snprintf(buf, n, "%s", curl_easy_strerror(p->error));
  return buf;
}

/* Counts a failed request under its cause and reports it. */
static void count_failure(crawl *cr, const job *j, const page *p) {
  char what[64];
  if (p->error == CURLE_OK) {
    cr->http_errors++;
    cr->http[p->status >= 100 && p->status < 600 ? p->status : 0]++;
  } else if (p->error == CURLE_COULDNT_CONNECT) {
    cr->refused++;
  } else if (p->error == CURLE_OPERATION_TIMEDOUT) {
    cr->timeouts++;
  } else if (p->error == CURLE_COULDNT_RESOLVE_HOST) {
    cr->dns++;
  } else {
    cr->other++;
  }
  report(failure_name(p, what, sizeof what), j->url, NULL);
}

/* robots.txt of an origin arrived: keep its rules, release the URLs that
 * waited for it (they go through the robots check again). */
static void account_robots(crawl *cr, const job *j, const page *p) {
  char name[512];
  crawl_url_origin(j->url, name, sizeof name);
  origin *o = find_origin(cr, name);
  if (p->error == CURLE_OK && p->status / 100 == 2) {
    cr->robots_fetched++;
    o->rules = crawl_robots_parse(p->body ? p->body : "", p->len, AGENT);
  } else if (p->error == CURLE_OK && p->status / 100 == 4) {
    o->rules = crawl_robots_all(true); /* no robots.txt: all allowed */
  } else { /* 5xx, 3xx beyond 5 hops, network error: all disallowed */
    count_failure(cr, j, p);
    o->rules = crawl_robots_all(false);
    o->unreachable = true;
  }
  if (!o->rules)
    abort();
  for (size_t i = cr->parked.head; i < cr->parked.tail; i++)
    jobs_push(&cr->frontier, cr->parked.v[i]);
  cr->parked.head = cr->parked.tail = 0;
}

static void account(crawl *cr, const job *j, const page *p) {
  if (j->robots) {
    account_robots(cr, j, p);
    return;
  }
  if (p->error == CURLE_OK && p->status / 100 == 2) {
    cr->pages++;
    cr->bytes += p->len;
    if (!p->html) {
      cr->not_html++;
      return;
    }
    if (p->parse_rc != 0) {
      cr->other++;
      report("out of memory", j->url, "links lost");
    }
    cr->links += p->links.n;
    cr->other_schemes += p->links.other;
    cr->bad_links += p->links.bad;
    for (size_t i = 0; i < p->links.n; i++)
      enqueue(cr, p->links.url[i], j->depth + 1, 0, NULL);
    return;
  }
  if (p->error == CURLE_OK && p->status / 100 == 3 && p->redirect) {
    char *target;
    cr->redirects++;
    if (crawl_url_resolve(j->url, p->redirect, &target) != CRAWL_URL_OK) {
      cr->other++;
      report("bad redirect", j->url, p->redirect);
    } else if (j->hops >= cr->opt.max_redirects) {
      cr->redirect_limit++;
      report("redirect limit", j->url, target);
    } else {
      enqueue(cr, target, j->depth, j->hops + 1, j->url);
    }
    free(target);
    return;
  }
  count_failure(cr, j, p);
}

/* A status line: in place on a terminal (10 times a second), else a line a
 * second so that logs stay short. */
static void progress(crawl *cr, size_t inflight, bool last) {
  double t = now_s();
  size_t finished = cr->requests - inflight;
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
          cr->frontier.tail - cr->frontier.head,
          (double)cr->pages / (t - cr->start), tty ? "" : "\n");
}

/* The next job that may be sent now, or false if none is ready: takes jobs
 * off the frontier, parks those whose origin's robots.txt is not known
 * yet (asking for it once), drops those it disallows. */
static bool next_job(crawl *cr, job *out) {
  while (cr->frontier.head < cr->frontier.tail) {
    job j = cr->frontier.v[cr->frontier.head++];
    char name[512];
    if (!cr->opt.robots || !crawl_url_origin(j.url, name, sizeof name)) {
      *out = j;
      return true;
    }
    origin *o = find_origin(cr, name);
    if (!o) { /* first URL of this origin: ask for its robots.txt first */
      origin *grown =
          realloc(cr->origins, (cr->n_origins + 1) * sizeof *cr->origins);
      char *robots = malloc(strlen(name) + sizeof "/robots.txt");
      if (!grown || !(grown[cr->n_origins].name = strdup(name)) || !robots)
        abort();
      cr->origins = grown;
      grown[cr->n_origins++].rules = NULL;
      grown[cr->n_origins - 1].unreachable = false;
      sprintf(robots, "%s/robots.txt", name);
      jobs_push(&cr->parked, j);
      *out = (job){robots, 0, 0, true};
      return true;
    }
    if (!o->rules) {
      jobs_push(&cr->parked, j); /* its robots.txt is in flight */
    } else if (!crawl_robots_allowed(o->rules, crawl_url_target(j.url))) {
      if (o->unreachable) {
        cr->unreachable++;
        report("robots.txt failed", j.url, NULL);
      } else {
        cr->disallowed++;
        report("disallowed", j.url, NULL);
      }
      free(j.url);
    } else {
      *out = j;
      return true;
    }
  }
  return false;
}

/* The future of a finished (or cancelled) fetch: account for its page. */
static void finish(crawl *cr, cf_future *f, job *j) {
  void *v;
  int rc = cf_future_result(f, 0, &v);
  if (rc == 0) {
    account(cr, j, v);
  } else if (rc == CF_ECANCELLED) {
    cr->cancelled++;
  } else { /* the task itself failed (out of memory): rare */
    cf_error e = {rc, cf_strerror(rc)};
    cf_future_exception(f, 0, &e);
    cr->other++;
    report(e.message, j->url, NULL);
  }
  free(j->url);
}

/* --green: a loop on a thread of its own, and a green pool on it. */
typedef struct green_rt {
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool ready;
  int rc;
  size_t size;
  cf_loop *loop;
  cf_executor *pool;
  cf_future *stop; /* completed by green_stop: the loop thread ends */
} green_rt;

static void *green_main(void *arg) {
  green_rt *g = arg;
  /* curl and Gumbo want more than the default 64 KiB of stack */
  cf_loop_opts lo = {.stack_size = 512 * 1024};
  int rc = cf_loop_new(&lo, &g->loop);
  if (rc == 0 && (rc = cf_green_pool_new(g->loop, g->size, &g->pool)) != 0)
    cf_loop_free(g->loop);
  pthread_mutex_lock(&g->mu);
  g->rc = rc;
  g->ready = true;
  pthread_cond_signal(&g->cv);
  pthread_mutex_unlock(&g->mu);
  if (rc != 0)
    return NULL;
  cf_loop_run_until_complete(g->loop, g->stop, CF_FOREVER);
  cf_loop_free(g->loop);
  return NULL;
}

static int green_start(green_rt *g, size_t size) {
  *g = (green_rt){.size = size, .stop = cf_future_new()};
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
  if (!g->stop || pthread_create(&g->th, NULL, green_main, g) != 0) {
    cf_future_unref(g->stop);
    return -1;
  }
  pthread_mutex_lock(&g->mu);
  while (!g->ready)
    pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
  if (g->rc != 0) {
    pthread_join(g->th, NULL);
    cf_future_unref(g->stop);
    return -1;
  }
  return 0;
}

/* After cf_executor_free(g->pool): the loop thread frees the loop, ends. */
static void green_stop(green_rt *g) {
  cf_future_set_result(g->stop, NULL, NULL);
  pthread_join(g->th, NULL);
  cf_future_unref(g->stop);
  pthread_mutex_destroy(&g->mu);
  pthread_cond_destroy(&g->cv);
}

/* Crawls from `start`. Returns 0, or -1 if the pool could not be made. */
static int run_crawl(crawl *cr, const char *start) {
  cf_executor *pool;
  green_rt g;
  cf_thread_pool_opts o = {.max_workers = cr->opt.inflight,
                           .thread_name_prefix = "crawl"};
  if (cr->opt.green) {
    if (green_start(&g, cr->opt.inflight) != 0)
      return -1;
    pool = g.pool;
  } else if (cf_thread_pool_new(&o, &pool) != 0) {
    return -1;
  }
  static cf_future *window[MAX_INFLIGHT];
  static job *running[MAX_INFLIGHT]; /* the job of window[i], stable */
  bool done[MAX_INFLIGHT];
  size_t n = 0;
  crawl_url_host(start, cr->host, sizeof cr->host);
  enqueue(cr, start, 0, 0, NULL);
  cr->start = now_s();
  for (;;) {
    if (interrupted && !cr->stopped) { /* Ctrl-C: no new request */
      cr->stopped = true;
      for (size_t i = 0; i < n; i++)
        cf_future_cancel(window[i]); /* only those not started yet */
    }
    /* Refill the window from the frontier, oldest first (breadth first). */
    job j;
    while (!cr->stopped && n < cr->opt.inflight &&
           cr->page_requests < cr->opt.max_pages && next_job(cr, &j)) {
      if (!(running[n] = malloc(sizeof *running[n])))
        abort();
      *running[n] = j;
      if (cf_submit_with(pool, fetch, running[n], page_free, &window[n]) != 0) {
        cr->other++;
        report("not submitted", j.url, NULL);
        free(j.url);
        free(running[n]);
        continue;
      }
      cr->requests++;
      cr->page_requests += !j.robots;
      n++;
    }
    if (n == 0)
      break; /* nothing in flight, nothing that may be sent */
    /* Wait for at least one to finish; wake up anyway for the progress
     * and for Ctrl-C. */
    if (cf_wait(window, n, 0.1, CF_FIRST_COMPLETED, done) == 0) {
      size_t kept = 0;
      for (size_t i = 0; i < n; i++) {
        if (done[i]) {
          finish(cr, window[i], running[i]);
          cf_future_unref(window[i]); /* frees the page */
          free(running[i]);
        } else {
          window[kept] = window[i];
          running[kept++] = running[i];
        }
      }
      n = kept;
    }
    progress(cr, n, false);
  }
  progress(cr, 0, true);
  cr->left =
      cr->frontier.tail - cr->frontier.head + cr->parked.tail - cr->parked.head;
  cr->limited = !cr->stopped && cr->left > 0;
  cf_executor_free(pool);
  if (cr->opt.green)
    green_stop(&g);
  return 0;
}

/* URLs met only beyond the depth limit. */
static size_t too_deep(const crawl *cr) {
  size_t n = 0;
  for (size_t i = 0; i < cr->deep.cap; i++)
    n += cr->deep.slot[i] && !strset_has(&cr->seen, cr->deep.slot[i]);
  return n;
}

static void print_summary(const crawl *cr, double secs) {
  printf("pages:          %zu\n", cr->pages);
  printf("bytes:          %zu\n", cr->bytes);
  printf("requests:       %zu (%zu for pages, %zu for robots.txt)\n",
         cr->requests, cr->page_requests, cr->requests - cr->page_requests);
  printf("urls:           %zu (distinct, de-duplicated)\n", cr->seen.n);
  printf("links:          %zu\n", cr->links);
  printf("  duplicates:   %zu (links to a URL already known)\n",
         cr->duplicates);
  printf("  not http:     %zu (mailto:, javascript:...)\n", cr->other_schemes);
  printf("  unparsable:   %zu\n", cr->bad_links);
  printf("  not html:     %zu (pages fetched, not parsed)\n", cr->not_html);
  printf("redirects:      %zu\n", cr->redirects);
  printf("  to known:     %zu (not fetched again)\n", cr->redirects_seen);
  printf("  offsite:      %zu (reported, not followed)\n",
         cr->redirects_offsite);
  printf("failed:         %zu\n", failures(cr));
  for (int s = 0; s < 600; s++)
    if (cr->http[s])
      printf("  http %d:     %zu\n", s, cr->http[s]);
  printf("  refused:      %zu\n", cr->refused);
  printf("  timeouts:     %zu\n", cr->timeouts);
  printf("  unknown host: %zu\n", cr->dns);
  printf("  redirect limit: %zu\n", cr->redirect_limit);
  printf("  other:        %zu\n", cr->other);
  printf("offsite:        %zu (links to other hosts, not followed)\n",
         cr->offsite);
  if (cr->opt.robots) {
    printf("robots.txt:     %zu read\n", cr->robots_fetched);
    printf("  disallowed:   %zu\n", cr->disallowed);
    printf("  unreachable:  %zu (URLs of origins whose robots.txt failed)\n",
           cr->unreachable);
  } else {
    printf("robots.txt:     ignored (--no-robots)\n");
  }
  printf("too deep:       %zu (URLs beyond depth %d)\n", too_deep(cr),
         cr->opt.max_depth);
  printf("left:           %zu (URLs not fetched: page limit %zu%s)\n", cr->left,
         cr->opt.max_pages, cr->stopped ? ", interrupted" : "");
  if (cr->stopped)
    printf("interrupted:    %zu requests cancelled, summary so far\n",
           cr->cancelled);
  printf("threads:        %zu ran the requests (%s)\n", n_fetch_threads,
         cr->opt.green ? "green tasks on one loop" : "a thread pool");
  printf("time:           %.2f s\n", secs);
  printf("pages/s:        %.0f\n", (double)cr->pages / secs);
}

/* ---- the demo's check --------------------------------------------------- */

/* Compares what the crawler reported with what the site expects and with
 * the site's own request log; prints one line per check. A crawl cut short
 * (limits, Ctrl-C) is checked only for what must hold anyway. */
static bool demo_check(const crawl *cr, const crawl_site *s) {
  crawl_site_crawler c = {cr->opt.max_redirects, cr->opt.robots,
                          strcmp(cr->opt.dir_index, "index.html") == 0};
  crawl_site_expect e;
  crawl_site_expected(s, &c, &e);
  bool partial = cr->stopped || cr->limited || too_deep(cr) > 0;
  size_t served = crawl_site_requests(s), other = crawl_site_other_requests(s);
  size_t repeats = crawl_site_repeats(s);
  printf("site:           %zu requests served, %zu repeated, %zu to the "
         "other host\n",
         served, repeats, other);
  printf("concurrency:    %zu connections open at once at most\n",
         crawl_site_max_open(s));
  size_t diff = partial ? crawl_site_forbidden_requests(s, &c, stdout)
                        : crawl_site_check_log(s, &c, stdout);
  struct {
    const char *what;
    size_t got, want;
  } full[] =
      {
          {"request log as expected", diff, 0},
          {"requests reached the site", served,
           cr->requests - cr->refused - cr->dns},
          {"pages fetched", cr->pages, e.pages},
          {"404s reported", cr->http[404], e.http404},
          {"refused reported", cr->refused, e.refused},
          {"timeouts reported", cr->timeouts, e.timeouts},
          {"offsite links skipped", cr->offsite, e.offsite},
          {"redirects", cr->redirects, e.redirects},
          {"redirects offsite reported", cr->redirects_offsite,
           e.redirects_offsite},
          {"redirects to known URLs", cr->redirects_seen, e.redirects_seen},
          {"redirect chains too long", cr->redirect_limit, e.redirect_limit},
          {"disallowed by robots.txt", cr->disallowed, e.disallowed},
          {"robots.txt unreachable", cr->unreachable, e.unreachable},
          {"other failures",
           cr->http_errors - cr->http[404] + cr->dns + cr->other, 0},
      },
    cut[] = {
        {"forbidden requests", diff, 0},
        {"requests reached the site", served,
         cr->requests - cr->refused - cr->dns},
        {"pages asked twice", repeats, 0},
        {"requests to the other host", other, 0},
    };
  size_t n =
      partial ? sizeof cut / sizeof cut[0] : sizeof full / sizeof full[0];
  bool ok = true;
  for (size_t i = 0; i < n; i++) {
    size_t got = partial ? cut[i].got : full[i].got;
    size_t want = partial ? cut[i].want : full[i].want;
    const char *what = partial ? cut[i].what : full[i].what;
    printf("check: %-29s %6zu (expected %zu)%s\n", what, got, want,
           got == want ? "" : "  <-- MISMATCH");
    ok &= got == want;
  }
  printf("demo: %s%s\n", ok ? "PASS" : "FAIL",
         partial ? " (a partial crawl: checked what must hold anyway)" : "");
  return ok;
}

/* ---- main --------------------------------------------------------------- */

static int usage(const char *argv0) {
  fprintf(stderr,
          "usage: %s --demo [options]\n"
          "       %s URL [options]\n"
          "options: -n INFLIGHT (1..%d, default 16)  -t TIMEOUT_S (default 5)\n"
          "         -l MAX_PAGES (default 100000)  -d MAX_DEPTH (default 100)\n"
          "         -r MAX_REDIRECTS (default 10)  --dir-index NAME (default\n"
          "         index.html, \"\" for none)  --no-robots  --green  -q\n"
          "exit: 0 done, 1 demo check failed or could not start, 2 usage,\n"
          "      130 interrupted (Ctrl-C)\n",
          argv0, argv0, MAX_INFLIGHT);
  return 2;
}

/* A whole decimal number in [lo, hi], or false. */
static bool number(const char *s, long lo, long hi, long *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (end == s || *end || v < lo || v > hi)
    return false;
  *out = v;
  return true;
}

int main(int argc, char **argv) {
  bool demo = false;
  const char *start = NULL;
  long inflight = 16, pages = 100000, depth = 100, redirects = 10;
  double timeout_s = 5;
  options opt = {.dir_index = "index.html", .robots = true};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--demo") == 0)
      demo = true;
    else if (strcmp(a, "-q") == 0)
      quiet = true;
    else if (strcmp(a, "--no-robots") == 0)
      opt.robots = false;
    else if (strcmp(a, "--green") == 0)
      opt.green = true;
    else if (strcmp(a, "--dir-index") == 0 && v && !strchr(v, '/'))
      opt.dir_index = argv[++i];
    else if (strcmp(a, "-n") == 0 && v && number(v, 1, MAX_INFLIGHT, &inflight))
      i++;
    else if (strcmp(a, "-l") == 0 && v && number(v, 1, LONG_MAX, &pages))
      i++;
    else if (strcmp(a, "-d") == 0 && v && number(v, 0, 1000000, &depth))
      i++;
    else if (strcmp(a, "-r") == 0 && v && number(v, 0, 1000, &redirects))
      i++;
    else if (strcmp(a, "-t") == 0 && v && (timeout_s = atof(v)) > 0 &&
             timeout_s < 3600)
      i++;
    else if (a[0] != '-' && !start)
      start = a;
    else
      return usage(argv[0]);
  }
  if (demo == (start != NULL))
    return usage(argv[0]);
  opt.inflight = (size_t)inflight;
  opt.max_pages = (size_t)pages;
  opt.max_depth = (int)depth;
  opt.max_redirects = (int)redirects;
  fetch_timeout_ms = demo ? 2000 : (long)(timeout_s * 1000);
  tty = isatty(STDERR_FILENO);
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) /* before threads */
    return 1;
  char *start_url = NULL;
  if (start && crawl_url_resolve(NULL, start, &start_url) != CRAWL_URL_OK) {
    curl_global_cleanup();
    return usage(argv[0]);
  }

  crawl_site *site = NULL;
  if (demo) {
    if (!(site = crawl_site_start())) {
      perror("crawler: cannot start the demo site");
      return 1;
    }
    start_url = strdup(crawl_site_start_url(site));
    printf("demo site: %d pages and tricky cases at %s, %ld requests in "
           "flight, %.1f s timeout\n",
           crawl_site_pages(), start_url, inflight, fetch_timeout_ms / 1000.0);
  } else {
    printf("crawling %s, %ld requests in flight\n", start_url, inflight);
  }
  fflush(stdout);
  struct sigaction sa = {.sa_handler = on_sigint};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);

  crawl *cr = calloc(1, sizeof *cr);
  if (!cr || !start_url) {
    fprintf(stderr, "crawler: out of memory\n");
    return 1;
  }
  cr->opt = opt;
  if (opt.green && !dlsym(RTLD_DEFAULT, "cf_patch_active"))
    fprintf(stderr, "crawler: libcfutures_patch is not loaded: the green "
                    "tasks' transfers will run one at a time\n");
  if (run_crawl(cr, start_url) != 0) {
    fprintf(stderr, "crawler: cannot create the %s\n",
            opt.green ? "loop and green pool" : "thread pool");
    return 1;
  }
  print_summary(cr, now_s() - cr->start);
  int rc = cr->stopped ? EXIT_SIGINT : 0;
  if (demo) {
    crawl_site_stop(site); /* waits for its requests: the log is final */
    if (!demo_check(cr, site) && rc == 0)
      rc = 1;
    crawl_site_free(site);
  }
  jobs_free(&cr->frontier);
  jobs_free(&cr->parked);
  for (size_t i = 0; i < cr->n_origins; i++) {
    free(cr->origins[i].name);
    crawl_robots_free(cr->origins[i].rules);
  }
  free(cr->origins);
  strset_free(&cr->seen);
  strset_free(&cr->deep);
  free(cr);
  free(start_url);
  curl_global_cleanup();
  return rc;
}
