/* The crawler's demo site (see crawl_site.h). Two descriptions make the
 * whole site, and both the answers and the expectations are derived from
 * them: site_links() for the generated pages /p/<i>.html, and the tables
 * hub[] (the markup of /t/) and tricks[] (what the site serves under /t/
 * and what a crawler must do with it). */
#include "crawl_site.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "httpd.h"

#define SITE_PAGES 3000
#define CHAIN_LEN  12 /* /t/chain/0 -> ... -> /t/chain/12 (a page) */
#define LOG_SLOTS  16384

/* ---- the generated pages ---------------------------------------------------
 * Page i links to 2i+1 and 2i+2 (a binary tree: every page is reachable from
 * page 0), to a pseudo-random page and to its parent (cycles), each spelled
 * differently (root-relative, relative, absolute, with a #fragment).
 * Broken links: every 50th page links to a missing page shared by two
 * pages (404); every 500th to a port where nothing listens (refused); page
 * 1 to a page slower than the crawler's timeout; page 0 to another host
 * and to the hub of tricky cases, /t/. */

enum link_kind { L_PAGE, L_MISSING, L_REFUSED, L_SLOW, L_OFFSITE, L_HUB };
typedef struct site_link {
  enum link_kind kind;
  int id;
} site_link;

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
  if (i == 0)
    out[n++] = (site_link){L_HUB, 0};
  return n;
}

/* ---- the tricky cases
 * -------------------------------------------------------- In the markup, "@P"
 * is the site's port and "@Q" the other host's. */

static const char *const hub[] = {
    "<!DOCTYPE html><html><head><title>tricky</title>",
    "<link rel=stylesheet href=/t/style.css>",
    "<link rel=\"next\" href=\"/t/next.html\">",
    "</head><body><h1>links as real sites write them</h1>",
    "<a href=/t/unquoted.html>unquoted</a>",
    "<A HREF = \"/t/spaces.html\" >spaces around =</A>",
    "<a href=\"  /t/inside.html\t\">spaces inside the quotes</a>",
    "<a href=\"/t/new\nline.html\">a newline inside</a>",
    "<a href='HTTP://127.0.0.1:@P/t/upper.html'>upper-case scheme</a>",
    "<a href=\"/t/q.html?a=1&amp;b=2\">an entity</a>",
    "<a href=\"/t/q.html?a=1&b=2\">the same</a>",
    "<a href=\"/t/q.html?a=1&#38;b=2#x\">the same, numeric, fragment</a>",
    "<a href=\"/t/q.html?b=2&amp;a=1\">another order: another URL</a>",
    "<a href=\"/t/%7Euser.html\">%7E</a> <a href=\"/t/%7euser.html\">%7e</a>",
    "<a href=\"/t/~user.html\">~</a> <a href=\"/t/a%2db.html\">%2d</a>",
    "<a href=\"/t/a-b.html\">-</a> <a href=\"/t/d/\">a directory</a>",
    "<a href=\"/t/d/index.html\">its index</a>",
    "<a href=\"/t/x/../d/./index.html\">dot segments</a>",
    "<a href=\"base.html\">a page with a base</a>",
    "<a href=\"/t/r1\">a redirect chain</a>",
    "<a href=\"/t/moved\">a redirect to a known page</a>",
    "<a href=\"/t/away\">a redirect to another host</a>",
    "<a href=\"/t/nowhere\">a redirect to a host that does not exist</a>",
    "<a href=\"/t/loop1\">a redirect loop</a>",
    "<a href=\"/t/chain/0\">a chain too long</a>",
    "<a href=\"/t/gone\">a redirect to a missing page</a>",
    "<a href=\"/t/broken.html\">a missing page</a>",
    "<a href=\"/t/private/secret.html\">disallowed</a>",
    "<a href=\"/t/%70rivate/s2.html\">disallowed, encoded</a>",
    "<a href=\"/t/private/ok.html\">allowed inside a disallowed path</a>",
    "<a rel=\"nofollow\" href=\"/t/nofollow.html\">nofollow</a>",
    "<a href=\"http://127.0.0.2:@Q/t/linked.html\">another host</a>",
    "<a href=\"mailto:x@example.invalid\">mail</a>",
    "<a href=\"javascript:void(0)\">script</a>",
    "<a href=\"#top\">this page</a> <a href=\"\">this page</a>",
    "<!-- <a href=\"/t/commented.html\">a comment</a> -->",
    "<script>document.write('<a href=\"/t/script.html\">');</script>",
    "<map><area shape=rect coords=0,0,9,9 href=\"/t/area.html\"></map>",
    "<iframe src=\"/t/iframe.html\"></iframe><img src=\"/t/img.png\">",
    "<a href=\"/t/data.txt\">a text file</a>",
    "<a href=\"/t/refresh.html\">a refresh</a>",
    "<a href=\"/t/frames.html\">frames</a>",
    "<a href=\"/t/meta-nofollow.html\">a page that says nofollow</a>",
    "</body></html>",
};

enum {
  F_DISALLOWED = 1,   /* robots.txt disallows it */
  F_NEVER = 2,        /* not followed, not linked: never asked */
  F_OFF_REDIRECT = 4, /* a redirect to another host */
  F_SEEN_REDIRECT = 8 /* a redirect to a URL known by then */
};

/* What the site serves under /t/ (and /robots.txt), keyed by request
 * target as the request log writes it. `what` is the body, or the Location
 * of a 3xx. `spellings` counts the distinct URLs that name the resource
 * (for a crawler that keeps /dir/ and /dir/index.html apart). */
static const struct trick {
  const char *key;
  int status;
  const char *type; /* NULL: text/html */
  const char *what;
  int flags;
  int spellings;
} tricks[] = {
    {"/robots.txt", 200, "text/plain",
     "# the demo site\nUser-agent: otherbot\nDisallow: /\n\n"
     "User-agent: *\nDisallow: /t/private/\nAllow: /t/private/ok.html\n",
     0, 1},
    {"/t/", 200, NULL, NULL /* hub[] */, 0, 1},
    {"/t/next.html", 200, NULL, "<p>next</p>", 0, 1},
    {"/t/style.css", 200, "text/css", "a{}", F_NEVER, 1},
    {"/t/img.png", 200, "image/png", "png", F_NEVER, 1},
    {"/t/unquoted.html", 200, NULL, "<p>leaf</p>", 0, 1},
    {"/t/spaces.html", 200, NULL, "<p>leaf</p>", 0, 1},
    {"/t/inside.html", 200, NULL, "<p>leaf</p>", 0, 1},
    {"/t/newline.html", 200, NULL, "<p>leaf</p>", 0, 1},
    {"/t/upper.html", 200, NULL, "<p>leaf</p>", 0, 1},
    {"/t/q.html?a=1&b=2", 200, NULL, "<p>a, b</p>", 0, 1},
    {"/t/q.html?b=2&a=1", 200, NULL, "<p>b, a</p>", 0, 1},
    {"/t/~user.html", 200, NULL, "<p>tilde</p>", 0, 1},
    {"/t/a-b.html", 200, NULL, "<p>dash</p>", 0, 1},
    {"/t/d/", 200, NULL, "<a href=\"../unquoted.html\">up</a>", 0, 2},
    {"/t/base.html", 200, NULL,
     "<html><head><base href=\"/t/b/\"></head><body>"
     "<a href=\"target.html\">relative to the base</a></body></html>",
     0, 1},
    {"/t/b/target.html", 200, NULL, "<p>found through the base</p>", 0, 1},
    {"/t/r1", 301, NULL, "/t/r2", 0, 1},
    {"/t/r2", 302, NULL, "r3.html#fragment", 0, 1},
    {"/t/r3.html", 200, NULL, "<p>the end of the chain</p>", 0, 1},
    {"/t/moved", 301, NULL, "http://127.0.0.1:@P/p/0.html", F_SEEN_REDIRECT, 1},
    {"/t/away", 302, NULL, "http://127.0.0.2:@Q/t/other.html", F_OFF_REDIRECT,
     1},
    {"/t/nowhere", 301, NULL, "http://no-such-host.invalid/", F_OFF_REDIRECT,
     1},
    {"/t/loop1", 302, NULL, "/t/loop2", 0, 1},
    {"/t/loop2", 302, NULL, "/t/loop1", F_SEEN_REDIRECT, 1},
    {"/t/gone", 301, NULL, "/t/broken2.html", 0, 1},
    {"/t/broken.html", 404, NULL, "<p>not here</p>", 0, 1},
    {"/t/broken2.html", 404, NULL, "<p>not here either</p>", 0, 1},
    {"/t/private/secret.html", 200, NULL, "<p>secret</p>", F_DISALLOWED, 1},
    {"/t/private/s2.html", 200, NULL, "<p>secret</p>", F_DISALLOWED, 1},
    {"/t/private/ok.html", 200, NULL, "<p>allowed</p>", 0, 1},
    {"/t/nofollow.html", 200, NULL, "<p>nofollow</p>", F_NEVER, 1},
    {"/t/commented.html", 200, NULL, "<p>comment</p>", F_NEVER, 1},
    {"/t/script.html", 200, NULL, "<p>script</p>", F_NEVER, 1},
    {"/t/area.html", 200, NULL, "<p>area</p>", 0, 1},
    {"/t/iframe.html", 200, NULL, "<p>iframe</p>", 0, 1},
    {"/t/data.txt", 200, "text/plain", "<a href=\"/t/fromtext.html\">x</a>", 0,
     1},
    {"/t/fromtext.html", 200, NULL, "<p>in a text file</p>", F_NEVER, 1},
    {"/t/refresh.html", 200, NULL,
     "<meta http-equiv=\"refresh\" content=\"0; URL='/t/refreshed.html'\">", 0,
     1},
    {"/t/refreshed.html", 200, NULL, "<p>refreshed</p>", 0, 1},
    {"/t/frames.html", 200, NULL,
     "<frameset><frame src=\"f1.html\"><frame src=/t/f2.html></frameset>", 0,
     1},
    {"/t/f1.html", 200, NULL, "<p>frame 1</p>", 0, 1},
    {"/t/f2.html", 200, NULL, "<p>frame 2</p>", 0, 1},
    {"/t/meta-nofollow.html", 200, NULL,
     "<meta name=robots content=nofollow><a href=/t/hidden.html>h</a>", 0, 1},
    {"/t/hidden.html", 200, NULL, "<p>hidden</p>", F_NEVER, 1},
    {"/t/target.html", 200, NULL, "<p>base ignored</p>", F_NEVER, 1},
};
#define N_TRICKS (sizeof tricks / sizeof tricks[0])

/* Links from the hub to another host (distinct URLs). */
static size_t hub_offsite_links(void) {
  size_t n = 0;
  for (size_t i = 0; i < sizeof hub / sizeof hub[0]; i++)
    n += strstr(hub[i], "href=\"http://127.0.0.2:") != NULL;
  return n;
}

/* ---- the request log ---------------------------------------------------- */

typedef struct log_entry {
  char *key;
  int hits;
} log_entry;

struct crawl_site {
  httpd *server, *other;
  int port, other_port, closed_port, closed_fd;
  size_t max_open; /* the site's most connections at once, kept at stop */
  char start[64];
  pthread_mutex_t lock; /* protects log, overflow, other_hits */
  log_entry log[LOG_SLOTS];
  size_t logged, overflow, other_hits;
};

static size_t hash(const char *s) {
  size_t h = 1469598103934665603u;
  while (*s)
    h = (h ^ (unsigned char)*s++) * 1099511628211u;
  return h;
}

/* The slot of key, or of the empty slot where it would go; NULL if full.
 * Caller holds s->lock (or the servers are stopped). */
static log_entry *log_slot(crawl_site *s, const char *key) {
  for (size_t i = hash(key) & (LOG_SLOTS - 1), k = 0; k < LOG_SLOTS;
       i = (i + 1) & (LOG_SLOTS - 1), k++)
    if (!s->log[i].key || strcmp(s->log[i].key, key) == 0)
      return &s->log[i];
  return NULL;
}

static int hits(const crawl_site *s, const char *key) {
  log_entry *e = log_slot((crawl_site *)s, key);
  return e && e->key ? e->hits : 0;
}

static void log_request(crawl_site *s, const char *key) {
  pthread_mutex_lock(&s->lock);
  log_entry *e = s->logged * 2 < LOG_SLOTS ? log_slot(s, key) : NULL;
  if (e && !e->key && (e->key = strdup(key)) != NULL)
    s->logged++;
  if (e && e->key)
    e->hits++;
  else
    s->overflow++;
  pthread_mutex_unlock(&s->lock);
}

/* The log's key of a request target: escapes of unreserved characters
 * decoded (the site serves /t/%7Euser.html and /t/~user.html as one page)
 * and a final "index.html" dropped (it serves /dir/ and /dir/index.html
 * as one page). Written without crawl_url.c, so that the check does not
 * share the crawler's mistakes. */
static void request_key(const char *target, char *key, size_t n) {
  size_t o = 0;
  for (const char *p = target; *p && o + 1 < n; p++) {
    unsigned v;
    char c;
    if (*p == '%' && sscanf(p + 1, "%2x", &v) == 1 && p[1] && p[2] &&
        ((v >= 'a' && v <= 'z') || (v >= 'A' && v <= 'Z') ||
         (v >= '0' && v <= '9') || v == '-' || v == '.' || v == '_' ||
         v == '~')) {
      c = (char)v;
      p += 2;
    } else {
      c = *p;
    }
    key[o++] = c;
  }
  key[o] = '\0';
  size_t path = strcspn(key, "?");
  static const char idx[] = "/index.html";
  if (path >= sizeof idx - 1 &&
      strncmp(key + path - (sizeof idx - 2), idx + 1, sizeof idx - 2) == 0 &&
      key[path - (sizeof idx - 1)] == '/')
    memmove(key + path - (sizeof idx - 2), key + path, strlen(key + path) + 1);
}

/* ---- answers ------------------------------------------------------------ */

/* A copy of t with "@P" and "@Q" replaced by the ports. */
static char *expand(const crawl_site *s, const char *t) {
  size_t cap = strlen(t) + 64, o = 0;
  char *out = malloc(cap);
  if (!out)
    return NULL;
  for (; *t; t++) {
    if (o + 8 >= cap && !(out = realloc(out, cap *= 2)))
      return NULL;
    if (t[0] == '@' && (t[1] == 'P' || t[1] == 'Q')) {
      o += (size_t)snprintf(out + o, cap - o, "%d",
                            t[1] == 'P' ? s->port : s->other_port);
      t++;
    } else {
      out[o++] = *t;
    }
  }
  out[o] = '\0';
  return out;
}

static void set_body(httpd_response *res, char *body) {
  res->body = body;
  res->len = body ? strlen(body) : 0;
  if (!body)
    res->status = 503;
}

static void render_link(const crawl_site *s, const site_link *l, int k,
                        char *buf, size_t n) {
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
  case L_HUB:
    snprintf(buf, n, "/t/");
    break;
  default:
    snprintf(buf, n, "http://example.invalid/");
    break;
  }
}

static char *render_page(const crawl_site *s, int i) {
  size_t cap = 2048;
  int used = 0;
  char *b = malloc(cap), href[128];
  if (!b)
    return NULL;
  site_link links[8];
  int n = site_links(i, links);
  used += snprintf(b, cap, "<html><body><h1>page %d</h1>\n<ul>\n", i);
  for (int k = 0; k < n; k++) {
    render_link(s, &links[k], k, href, sizeof href);
    used += snprintf(b + used, cap - (size_t)used,
                     "<li><a href=\"%s\">link %d</a></li>\n", href, k);
  }
  snprintf(b + used, cap - (size_t)used, "</ul></body></html>\n");
  return b;
}

static char *render_hub(const crawl_site *s) {
  size_t len = 0;
  for (size_t i = 0; i < sizeof hub / sizeof hub[0]; i++)
    len += strlen(hub[i]) + 1;
  char *raw = malloc(len + 1), *o = raw;
  if (!raw)
    return NULL;
  for (size_t i = 0; i < sizeof hub / sizeof hub[0]; i++)
    o += sprintf(o, "%s\n", hub[i]);
  char *body = expand(s, raw);
  free(raw);
  return body;
}

/* The request handler of 127.0.0.1 (runs on the server's pool). */
static void site_handler(void *ctx, const httpd_request *req,
                         httpd_response *res) {
  crawl_site *s = ctx;
  char key[1024], tail;
  int i;
  request_key(req->path, key, sizeof key);
  log_request(s, key);
  if (strcmp(key, "/slow.html") == 0) {
    httpd_sleep(req->server, 30); /* cut short when the server stops */
    set_body(res, strdup("<html>late</html>"));
    return;
  }
  if (sscanf(key, "/p/%d.htm%c", &i, &tail) == 2 && tail == 'l' && i >= 0 &&
      i < SITE_PAGES &&
      strlen(key) == (size_t)snprintf(NULL, 0, "/p/%d.html", i)) {
    set_body(res, render_page(s, i));
    return;
  }
  if (sscanf(key, "/t/chain/%d%c", &i, &tail) == 1 && i >= 0 &&
      i <= CHAIN_LEN) {
    if (i < CHAIN_LEN) {
      char next[64];
      snprintf(next, sizeof next, "/t/chain/%d", i + 1);
      res->status = 302;
      res->location = strdup(next);
    }
    set_body(res, strdup("<p>chain</p>"));
    return;
  }
  for (size_t t = 0; t < N_TRICKS; t++) {
    if (strcmp(key, tricks[t].key) != 0)
      continue;
    res->status = tricks[t].status;
    if (tricks[t].type)
      res->content_type = tricks[t].type;
    if (tricks[t].status / 100 == 3) {
      res->location = expand(s, tricks[t].what);
      set_body(res, strdup(""));
    } else {
      set_body(res, tricks[t].what ? expand(s, tricks[t].what) : render_hub(s));
    }
    return;
  }
  res->status = 404; /* /missing/<k>.html, and anything unexpected */
  set_body(res, strdup("<html>not here</html>"));
}

/* The other host's handler: counts, answers nothing useful. */
static void other_handler(void *ctx, const httpd_request *req,
                          httpd_response *res) {
  crawl_site *s = ctx;
  (void)req;
  pthread_mutex_lock(&s->lock);
  s->other_hits++;
  pthread_mutex_unlock(&s->lock);
  res->status = 404;
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

crawl_site *crawl_site_start(void) {
  crawl_site *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  pthread_mutex_init(&s->lock, NULL);
  s->closed_fd = -1;
  if ((s->closed_port = reserve_closed_port(&s->closed_fd)) < 0 ||
      !(s->server =
            httpd_start(&(httpd_opts){.workers = 8}, site_handler, s)) ||
      !(s->other = httpd_start(&(httpd_opts){.addr = "127.0.0.2", .workers = 2},
                               other_handler, s))) {
    int saved = errno;
    crawl_site_stop(s);
    crawl_site_free(s);
    errno = saved;
    return NULL;
  }
  s->port = httpd_port(s->server);
  s->other_port = httpd_port(s->other);
  snprintf(s->start, sizeof s->start, "http://127.0.0.1:%d/p/0.html", s->port);
  return s;
}

const char *crawl_site_start_url(const crawl_site *s) {
  return s->start;
}

int crawl_site_pages(void) {
  return SITE_PAGES;
}

void crawl_site_stop(crawl_site *s) {
  if (s->server)
    s->max_open = httpd_max_open(s->server);
  httpd_stop(s->server); /* waits for its pool: the log is final */
  httpd_stop(s->other);
  s->server = s->other = NULL;
  if (s->closed_fd >= 0)
    close(s->closed_fd);
  s->closed_fd = -1;
}

size_t crawl_site_max_open(const crawl_site *s) {
  return s->max_open;
}

size_t crawl_site_requests(const crawl_site *s) {
  size_t n = s->overflow;
  for (size_t i = 0; i < LOG_SLOTS; i++)
    n += s->log[i].key ? (size_t)s->log[i].hits : 0;
  return n;
}

size_t crawl_site_other_requests(const crawl_site *s) {
  return s->other_hits;
}

size_t crawl_site_repeats(const crawl_site *s) {
  size_t n = 0;
  for (size_t i = 0; i < LOG_SLOTS; i++)
    n += s->log[i].key && s->log[i].hits > 1 ? (size_t)s->log[i].hits - 1 : 0;
  return n;
}

/* ---- expectations ------------------------------------------------------- */

/* Requests a complete crawl by c makes for trick t. */
static int trick_want(const struct trick *t, const crawl_site_crawler *c) {
  if (t->flags & F_NEVER)
    return 0;
  if (t->flags & F_DISALLOWED)
    return c->robots ? 0 : 1;
  if (strcmp(t->key, "/robots.txt") == 0)
    return c->robots ? 1 : 0;
  return c->dir_index ? 1 : t->spellings;
}

/* Requests a complete crawl by c makes for /t/chain/<i>: hop i. */
static int chain_want(int i, const crawl_site_crawler *c) {
  return i <= c->max_redirects ? 1 : 0;
}

void crawl_site_expected(const crawl_site *s, const crawl_site_crawler *c,
                         crawl_site_expect *e) {
  (void)s;
  static bool linked[L_HUB + 1][SITE_PAGES];
  int distinct[L_HUB + 1] = {0};
  site_link links[8];
  memset(linked, 0, sizeof linked);
  for (int i = 0; i < SITE_PAGES; i++)
    for (int k = 0, n = site_links(i, links); k < n; k++)
      if (!linked[links[k].kind][links[k].id]) {
        linked[links[k].kind][links[k].id] = true;
        distinct[links[k].kind]++;
      }
  *e = (crawl_site_expect){0};
  e->pages = SITE_PAGES;
  e->http404 = (size_t)distinct[L_MISSING];
  e->timeouts = (size_t)distinct[L_SLOW];
  e->offsite = (size_t)distinct[L_OFFSITE] + hub_offsite_links();
  /* The closed port: with robots.txt, its /robots.txt is refused and
   * every URL there is left alone; without, each URL is refused. */
  e->refused = c->robots ? 1 : (size_t)distinct[L_REFUSED];
  e->unreachable = c->robots ? (size_t)distinct[L_REFUSED] : 0;
  for (size_t t = 0; t < N_TRICKS; t++) {
    if (strcmp(tricks[t].key, "/robots.txt") == 0)
      continue; /* not a page: the crawler counts it apart */
    int want = trick_want(&tricks[t], c);
    if (tricks[t].status / 100 == 2)
      e->pages += (size_t)want;
    else if (tricks[t].status == 404)
      e->http404 += (size_t)want;
    else if (tricks[t].status / 100 == 3) {
      e->redirects += (size_t)want;
      if (want && (tricks[t].flags & F_OFF_REDIRECT))
        e->redirects_offsite++;
      if (want && (tricks[t].flags & F_SEEN_REDIRECT))
        e->redirects_seen++;
    }
    if ((tricks[t].flags & F_DISALLOWED) && c->robots)
      e->disallowed++;
  }
  for (int i = 0; i <= CHAIN_LEN; i++) {
    if (!chain_want(i, c))
      continue;
    if (i < CHAIN_LEN)
      e->redirects++;
    else
      e->pages++;
  }
  e->redirect_limit = c->max_redirects < CHAIN_LEN ? 1 : 0;
}

/* Whether key names a resource of the site. */
static bool is_known(const char *key) {
  char again[64];
  int i;
  if ((sscanf(key, "/p/%d.html", &i) == 1 ||
       sscanf(key, "/missing/%d.html", &i) == 1) &&
      i >= 0 && i < SITE_PAGES) {
    snprintf(again, sizeof again,
             key[1] == 'p' ? "/p/%d.html" : "/missing/%d.html", i);
    return strcmp(again, key) == 0;
  }
  if (sscanf(key, "/t/chain/%d", &i) == 1 && i >= 0 && i <= CHAIN_LEN) {
    snprintf(again, sizeof again, "/t/chain/%d", i);
    return strcmp(again, key) == 0;
  }
  for (size_t t = 0; t < N_TRICKS; t++)
    if (strcmp(key, tricks[t].key) == 0)
      return true;
  return strcmp(key, "/slow.html") == 0;
}

/* Compares one resource's hits with what is wanted; prints a difference.
 * With `partial`, only asking for what must never be asked counts. */
static size_t compare(const char *key, int got, int want, bool partial,
                      FILE *out) {
  if (partial ? (want == 0 && got > 0) : got != want) {
    fprintf(out, "site: %-32s asked %d times, expected %d\n", key, got, want);
    return 1;
  }
  return 0;
}

static size_t check(const crawl_site *s, const crawl_site_crawler *c,
                    bool partial, FILE *out) {
  size_t diff = 0;
  char key[64];
  static bool missing[SITE_PAGES];
  site_link links[8];
  memset(missing, 0, sizeof missing);
  for (int i = 0; i < SITE_PAGES; i++)
    for (int k = 0, n = site_links(i, links); k < n; k++)
      if (links[k].kind == L_MISSING)
        missing[links[k].id] = true;
  for (int i = 0; i < SITE_PAGES; i++) {
    snprintf(key, sizeof key, "/p/%d.html", i);
    diff += compare(key, hits(s, key), 1, partial, out);
    snprintf(key, sizeof key, "/missing/%d.html", i);
    diff += compare(key, hits(s, key), missing[i], partial, out);
  }
  diff += compare("/slow.html", hits(s, "/slow.html"), 1, partial, out);
  for (size_t t = 0; t < N_TRICKS; t++) {
    int want = trick_want(&tricks[t], c);
    diff += compare(tricks[t].key, hits(s, tricks[t].key), want, partial, out);
  }
  for (int i = 0; i <= CHAIN_LEN; i++) {
    snprintf(key, sizeof key, "/t/chain/%d", i);
    diff += compare(key, hits(s, key), chain_want(i, c), partial, out);
  }
  /* Anything else the site was asked for is a request it did not expect. */
  size_t unknown = s->overflow, shown = 0;
  for (size_t i = 0; i < LOG_SLOTS; i++) {
    const log_entry *e = &s->log[i];
    if (!e->key || is_known(e->key))
      continue;
    unknown += (size_t)e->hits;
    if (shown++ < 10)
      fprintf(out, "site: %-32s asked %d times, not a URL of the site\n",
              e->key, e->hits);
  }
  if (unknown) {
    fprintf(out, "site: %zu requests for URLs the site does not have\n",
            unknown);
    diff++;
  }
  if (s->other_hits) {
    fprintf(out, "site: the other host was asked %zu times\n", s->other_hits);
    diff++;
  }
  return diff;
}

size_t crawl_site_check_log(const crawl_site *s, const crawl_site_crawler *c,
                            FILE *out) {
  return check(s, c, false, out);
}

size_t crawl_site_forbidden_requests(const crawl_site *s,
                                     const crawl_site_crawler *c, FILE *out) {
  return check(s, c, true, out);
}

void crawl_site_free(crawl_site *s) {
  if (!s)
    return;
  for (size_t i = 0; i < LOG_SLOTS; i++)
    free(s->log[i].key);
  pthread_mutex_destroy(&s->lock);
  free(s);
}
