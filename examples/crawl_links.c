/* Link extraction with Gumbo (see crawl_links.h): one walk over the parse
 * tree collects the references and the base URL, then each reference is
 * resolved against the base (the first <base href> counts wherever it is,
 * so resolution waits for the walk to end). */
#include "crawl_links.h"

#include <gumbo.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crawl_url.h"

/* Whether the space-separated token list `list` holds `token` (ASCII case
 * insensitive), as for rel="..." and <meta content="...">. Commas separate
 * too, for the robots meta tag. */
static bool has_token(const char *list, const char *token) {
  static const char sep[] = " \t\n\f\r,";
  size_t n = strlen(token);
  for (const char *s = list; *s;) {
    s += strspn(s, sep);
    size_t k = strcspn(s, sep);
    if (k == n && strncasecmp(s, token, n) == 0)
      return true;
    s += k;
  }
  return false;
}

static const char *attr(const GumboElement *el, const char *name) {
  const GumboAttribute *a = gumbo_get_attribute(&el->attributes, name);
  return a ? a->value : NULL;
}

/* The URL part of <meta http-equiv=refresh content="5; url='x'">, as the
 * HTML standard's declarative refresh steps read it, copied into a new
 * string; NULL if there is none (a refresh of the page itself). */
static char *refresh_url(const char *c) {
  static const char ws[] = " \t\n\f\r";
  c += strspn(c, ws);
  c += strspn(c, "0123456789.");
  c += strspn(c, ws);
  if (*c == ';' || *c == ',')
    c++;
  c += strspn(c, ws);
  if (strncasecmp(c, "url", 3) == 0) {
    const char *eq = c + 3 + strspn(c + 3, ws);
    if (*eq == '=')
      c = eq + 1 + strspn(eq + 1, ws);
  }
  if (*c == '\0')
    return NULL;
  size_t n = strlen(c);
  if (*c == '"' || *c == '\'') {
    const char *end = strchr(c + 1, *c);
    n = end ? (size_t)(end - c - 1) : n - 1;
    c++;
  }
  return strndup(c, n);
}

/* The reference an element contributes, or NULL. *owned is set when the
 * returned string was allocated here. */
static const char *element_ref(const GumboElement *el, char **owned) {
  const char *rel = attr(el, "rel"), *type;
  *owned = NULL;
  switch (el->tag) {
  case GUMBO_TAG_A:
  case GUMBO_TAG_AREA:
    return rel && has_token(rel, "nofollow") ? NULL : attr(el, "href");
  case GUMBO_TAG_FRAME:
  case GUMBO_TAG_IFRAME:
    return attr(el, "src");
  case GUMBO_TAG_LINK:
    if (!rel || has_token(rel, "nofollow"))
      return NULL;
    if (has_token(rel, "next") || has_token(rel, "prev"))
      return attr(el, "href");
    type = attr(el, "type");
    if (has_token(rel, "alternate") &&
        (!type || strcasecmp(type, "text/html") == 0))
      return attr(el, "href");
    return NULL;
  case GUMBO_TAG_META:
    type = attr(el, "http-equiv");
    if (type && strcasecmp(type, "refresh") == 0 && attr(el, "content"))
      return *owned = refresh_url(attr(el, "content"));
    return NULL;
  default:
    return NULL;
  }
}

static int push(crawl_links *l, char *url) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 16;
    char **grown = realloc(l->url, cap * sizeof *grown);
    if (!grown) {
      free(url);
      return -1;
    }
    l->url = grown;
    l->cap = cap;
  }
  l->url[l->n++] = url;
  return 0;
}

/* What the walk collects: references in document order (borrowed from the
 * parse tree, or owned when flagged), the first base, the robots meta. */
typedef struct walk {
  const char **ref;
  bool *owned;
  size_t n, cap;
  const char *base;
  bool nofollow;
} walk;

static int walk_add(walk *w, const char *ref, bool owned) {
  if (w->n == w->cap) {
    size_t cap = w->cap ? w->cap * 2 : 64;
    const char **r = realloc(w->ref, cap * sizeof *r);
    if (r)
      w->ref = r;
    bool *o = r ? realloc(w->owned, cap * sizeof *o) : NULL;
    if (!o)
      return -1;
    w->owned = o;
    w->cap = cap;
  }
  w->ref[w->n] = ref;
  w->owned[w->n++] = owned;
  return 0;
}

/* Visits every element in tree order with an explicit stack (a page may
 * nest deeper than a thread's stack would like), skipping <template>
 * contents, which are inert. */
static int walk_tree(GumboNode *root, walk *w) {
  size_t cap = 256, n = 0;
  GumboNode **stack = malloc(cap * sizeof *stack);
  if (!stack)
    return -1;
  stack[n++] = root;
  int rc = 0;
  while (n > 0 && rc == 0) { /* children pushed in reverse: tree order */
    GumboNode *node = stack[--n];
    const GumboVector *kids;
    if (node->type == GUMBO_NODE_DOCUMENT) {
      kids = &node->v.document.children;
    } else if (node->type == GUMBO_NODE_ELEMENT) {
      const GumboElement *el = &node->v.element;
      const char *name, *content;
      char *owned;
      if (el->tag == GUMBO_TAG_BASE && !w->base && attr(el, "href"))
        w->base = attr(el, "href");
      if (el->tag == GUMBO_TAG_META && (name = attr(el, "name")) &&
          strcasecmp(name, "robots") == 0 && (content = attr(el, "content")) &&
          (has_token(content, "nofollow") || has_token(content, "none")))
        w->nofollow = true;
      const char *ref = element_ref(el, &owned);
      if (ref && walk_add(w, ref, owned != NULL) != 0) {
        free(owned);
        rc = -1;
      }
      kids = &el->children;
    } else {
      continue; /* text, comments, <template> */
    }
    if (n + kids->length > cap) {
      cap = (n + kids->length) * 2;
      GumboNode **grown = realloc(stack, cap * sizeof *grown);
      if (!grown) {
        rc = -1;
        break;
      }
      stack = grown;
    }
    for (size_t i = kids->length; i-- > 0;)
      stack[n++] = kids->data[i];
  }
  free(stack);
  return rc;
}

int crawl_links_extract(const char *html, size_t len, const char *page_url,
                        crawl_links *out) {
  *out = (crawl_links){0};
  GumboOutput *doc = gumbo_parse_with_options(&kGumboDefaultOptions, html, len);
  if (!doc)
    return -1;
  walk w = {0};
  int rc = walk_tree(doc->document, &w);
  char *base = NULL;
  if (w.base && crawl_url_resolve(page_url, w.base, &base) == CRAWL_URL_OK)
    page_url = base; /* an unusable <base href> is ignored */
  out->nofollow = w.nofollow;
  for (size_t i = 0; i < w.n && rc == 0 && !w.nofollow; i++) {
    char *url;
    int r = crawl_url_resolve(page_url, w.ref[i], &url);
    if (r == CRAWL_URL_OK)
      rc = push(out, url);
    else if (r == CRAWL_URL_ENOTHTTP)
      out->other++;
    else if (r == CRAWL_URL_EBAD)
      out->bad++;
    else
      rc = -1;
  }
  for (size_t i = 0; i < w.n; i++)
    if (w.owned[i])
      free((char *)w.ref[i]);
  free(w.ref);
  free(w.owned);
  free(base);
  gumbo_destroy_output(&kGumboDefaultOptions, doc);
  return rc;
}

void crawl_links_fini(crawl_links *l) {
  if (!l)
    return;
  for (size_t i = 0; i < l->n; i++)
    free(l->url[i]);
  free(l->url);
  *l = (crawl_links){0};
}
