/* robots.txt parsing and matching (see crawl_robots.h). One pass over the
 * lines keeps the rules of the groups that name us and, apart, those of
 * the "*" groups; the first list is used if it had any group. */
#include "crawl_robots.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crawl_url.h"

typedef struct rule {
  char *pattern; /* percent-normalised; "*" and a final "$" are special */
  size_t len;    /* octets of the rule as written, after normalisation */
  bool allow;
} rule;

typedef struct rules {
  rule *v;
  size_t n, cap;
  bool seen; /* a group was found for this list, even an empty one */
} rules;

struct crawl_robots {
  rules r;
  bool all_denied; /* robots.txt unreachable */
};

static void rules_free(rules *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i].pattern);
  free(l->v);
}

static int rules_add(rules *l, const char *value, size_t n, bool allow) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 16;
    rule *grown = realloc(l->v, cap * sizeof *grown);
    if (!grown)
      return -1;
    l->v = grown;
    l->cap = cap;
  }
  char *raw = strndup(value, n);
  char *p = raw ? crawl_url_pct_normalise(raw) : NULL;
  free(raw);
  if (!p)
    return -1;
  l->v[l->n++] = (rule){p, strlen(p), allow};
  return 0;
}

/* Whether the user-agent value names our product token: the value's token
 * (letters, digits, "-" and "_", RFC 9309 2.2.1) compared without case. */
static bool names_us(const char *v, size_t n, const char *agent) {
  size_t k = 0;
  while (k < n && (v[k] == '-' || v[k] == '_' ||
                   ((v[k] | 0x20) >= 'a' && (v[k] | 0x20) <= 'z') ||
                   (v[k] >= '0' && v[k] <= '9')))
    k++;
  return k > 0 && k == strlen(agent) && strncasecmp(v, agent, k) == 0;
}

crawl_robots *crawl_robots_parse(const char *text, size_t len,
                                 const char *agent) {
  crawl_robots *r = calloc(1, sizeof *r);
  rules ours = {0}, star = {0};
  if (!r)
    return NULL;
  /* Where the rules that follow go: both, one or none of the lists. A
   * User-agent line after a rule starts a new group. */
  bool to_ours = false, to_star = false, in_agents = false;
  const char *end = text + len, *line = text;
  if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
    line += 3; /* a UTF-8 byte order mark */
  while (line < end) {
    const char *eol = line;
    while (eol < end && *eol != '\n' && *eol != '\r')
      eol++;
    const char *hash = memchr(line, '#', (size_t)(eol - line));
    const char *stop = hash ? hash : eol,
               *colon = memchr(line, ':', (size_t)(stop - line));
    if (colon) {
      const char *k = line, *ke = colon, *v = colon + 1, *ve = stop;
      while (k < ke && (*k == ' ' || *k == '\t'))
        k++;
      while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
        ke--;
      while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
      while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
      size_t kn = (size_t)(ke - k), vn = (size_t)(ve - v);
      if (kn == 10 && strncasecmp(k, "user-agent", 10) == 0) {
        if (!in_agents)
          to_ours = to_star = false; /* a new group */
        in_agents = true;
        if (vn == 1 && *v == '*')
          to_star = star.seen = true;
        else if (names_us(v, vn, agent))
          to_ours = ours.seen = true;
      } else if ((kn == 5 && strncasecmp(k, "allow", 5) == 0) ||
                 (kn == 8 && strncasecmp(k, "disallow", 8) == 0)) {
        bool allow = kn == 5;
        in_agents = false;
        /* An empty value is no rule ("Disallow:" allows everything). */
        if (vn > 0 && ((to_ours && rules_add(&ours, v, vn, allow) != 0) ||
                       (to_star && rules_add(&star, v, vn, allow) != 0)))
          goto nomem;
      } else {
        in_agents = false; /* Sitemap:, Crawl-delay:... */
      }
    }
    line = eol;
    if (line < end && *line == '\r')
      line++;
    if (line < end && *line == '\n')
      line++;
  }
  if (ours.seen) {
    r->r = ours;
    rules_free(&star);
  } else {
    r->r = star;
    rules_free(&ours);
  }
  return r;
nomem:
  rules_free(&ours);
  rules_free(&star);
  free(r);
  return NULL;
}

crawl_robots *crawl_robots_all(bool allowed) {
  crawl_robots *r = calloc(1, sizeof *r);
  if (r)
    r->all_denied = !allowed;
  return r;
}

/* Whether pattern p (n octets) matches a prefix of s, or all of s when it
 * ends with "$". "*" matches any run; backtracks to the latest "*" only,
 * which is enough since each "*" absorbs what a later one would. */
static bool matches(const char *p, size_t n, const char *s) {
  const char *pe = p + n, *star_p = NULL, *star_s = NULL;
  for (;;) {
    if (p == pe)
      return true; /* a prefix matched */
    if (*p == '$' && p + 1 == pe) {
      if (*s == '\0')
        return true;
    } else if (*p == '*') {
      star_p = ++p;
      star_s = s;
      continue;
    } else if (*s && *p == *s) {
      p++, s++;
      continue;
    }
    if (!star_p || !*star_s)
      return false;
    p = star_p; /* let the last "*" take one more character */
    s = ++star_s;
  }
}

bool crawl_robots_allowed(const crawl_robots *r, const char *target) {
  if (r->all_denied)
    return strcmp(target, "/robots.txt") == 0;
  if (*target == '\0')
    target = "/";
  if (strcmp(target, "/robots.txt") == 0)
    return true;
  char *t = crawl_url_pct_normalise(target);
  if (!t)
    return false; /* out of memory: the safe answer */
  size_t best = 0;
  bool allowed = true;
  for (size_t i = 0; i < r->r.n; i++) {
    const rule *ru = &r->r.v[i];
    if ((ru->len > best || (ru->len == best && ru->allow && !allowed)) &&
        matches(ru->pattern, ru->len, t)) {
      best = ru->len;
      allowed = ru->allow;
    }
  }
  free(t);
  return allowed;
}

size_t crawl_robots_rules(const crawl_robots *r) {
  return r->r.n;
}

void crawl_robots_free(crawl_robots *r) {
  if (!r)
    return;
  rules_free(&r->r);
  free(r);
}
