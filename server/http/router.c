/*
 * router.c: one segment tree per method. A node has static children (matched
 * by exact segment text), at most one ":param" child and at most one "*wild"
 * child. The names of a route's parameters live on the route, so /u/:id and
 * /u/:name/posts can share the ":" node. Lookup is a depth-first search that
 * tries static, then parameter, then wildcard, backtracking on a dead end.
 */
#include "http/router.h"
#include "core/tycho.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct route {
    char *method;              /* owned, upper case */
    char *path;                /* owned, as registered */
    int handler_id;
    unsigned nparams;
    char *names[TYCHO_ROUTE_MAX_PARAMS]; /* owned */
};

struct node {
    char *seg;                 /* owned static segment text (NULL for ":"/"*" nodes and roots) */
    size_t seg_len;
    struct node **kids;        /* owned static children */
    unsigned nkids;
    struct node *param;        /* owned ":name" child */
    struct node *wild;         /* owned "*name" child; always a leaf */
    struct route *route;       /* borrowed from the router's list: a route ends here */
};

struct tree {
    char *method;              /* owned */
    struct node root;
};

struct tycho_router {
    struct tree *trees;        /* owned, one per method */
    unsigned ntrees;
    struct route **routes;     /* owned, registration order */
    unsigned nroutes;
};

struct tycho_router *tycho_router_new(void)
{
    return calloc(1, sizeof(struct tycho_router));
}

static void free_node(struct node *n)
{
    for (unsigned i = 0; i < n->nkids; i++) {
        free_node(n->kids[i]);
        free(n->kids[i]);
    }
    free(n->kids);
    free(n->seg);
    if (n->param) {
        free_node(n->param);
        free(n->param);
    }
    if (n->wild) {
        free_node(n->wild);
        free(n->wild);
    }
}

static void free_route(struct route *rt)
{
    for (unsigned j = 0; j < rt->nparams; j++)
        free(rt->names[j]);
    free(rt->method);
    free(rt->path);
    free(rt);
}

void tycho_router_free(struct tycho_router *r)
{
    if (!r)
        return;
    for (unsigned i = 0; i < r->ntrees; i++) {
        free_node(&r->trees[i].root);
        free(r->trees[i].method);
    }
    for (unsigned i = 0; i < r->nroutes; i++)
        free_route(r->routes[i]);
    free(r->trees);
    free(r->routes);
    free(r);
}

static struct tree *find_tree(const struct tycho_router *r, const char *method, size_t len)
{
    for (unsigned i = 0; i < r->ntrees; i++)
        if (strlen(r->trees[i].method) == len && memcmp(r->trees[i].method, method, len) == 0)
            return &r->trees[i];
    return NULL;
}

static struct tree *add_tree(struct tycho_router *r, const char *method)
{
    struct tree *grown = realloc(r->trees, sizeof(*grown) * (r->ntrees + 1));

    if (!grown)
        return NULL;
    r->trees = grown;
    memset(&r->trees[r->ntrees], 0, sizeof(struct tree));
    if (!(r->trees[r->ntrees].method = strdup(method)))
        return NULL;
    return &r->trees[r->ntrees++];
}

static struct node *static_child(struct node *n, const char *seg, size_t len, int create)
{
    struct node **grown, *kid;

    for (unsigned i = 0; i < n->nkids; i++)
        if (n->kids[i]->seg_len == len && memcmp(n->kids[i]->seg, seg, len) == 0)
            return n->kids[i];
    if (!create)
        return NULL;
    if (!(kid = calloc(1, sizeof(*kid))) || !(kid->seg = strndup(seg, len))) {
        free(kid);
        return NULL;
    }
    kid->seg_len = len;
    if (!(grown = realloc(n->kids, sizeof(*grown) * (n->nkids + 1)))) {
        free(kid->seg);
        free(kid);
        return NULL;
    }
    n->kids = grown;
    n->kids[n->nkids++] = kid;
    return kid;
}

static struct node *special_child(struct node **slot)
{
    if (!*slot)
        *slot = calloc(1, sizeof(struct node));
    return *slot;
}

/* A parameter name: letters, digits and '_', not empty. */
static int valid_name(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_')
            return 0;
    return 1;
}

/* Static segment text: printable, no characters that cannot appear in a path. */
static int valid_segment(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == '?' || s[i] == '#' || s[i] == 0x7f)
            return 0;
    return 1;
}

static int valid_method(const char *m)
{
    if (!*m)
        return 0;
    for (; *m; m++)
        if (!isalpha((unsigned char)*m))
            return 0;
    return 1;
}

/* Walks/creates the nodes for path, recording parameter names in rt. */
static struct node *insert_path(struct node *n, struct route *rt, char *err)
{
    const char *p = rt->path + 1, *end = p + strlen(p);

    for (;;) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *seg_end = slash ? slash : end;
        size_t len = (size_t)(seg_end - p);

        if (len > 0 && (*p == ':' || *p == '*')) {
            if (!valid_name(p + 1, len - 1)) {
                snprintf(err, TYCHO_ERR_LEN,
                         "bad route path \"%s\": parameter name \"%.*s\" must be letters, "
                         "digits or _", rt->path, (int)len, p);
                return NULL;
            }
            if (*p == '*' && slash) {
                snprintf(err, TYCHO_ERR_LEN,
                         "bad route path \"%s\": a wildcard (*%.*s) must be the last segment",
                         rt->path, (int)len - 1, p + 1);
                return NULL;
            }
            if (rt->nparams == TYCHO_ROUTE_MAX_PARAMS) {
                snprintf(err, TYCHO_ERR_LEN, "bad route path \"%s\": more than %d parameters",
                         rt->path, TYCHO_ROUTE_MAX_PARAMS);
                return NULL;
            }
            if (!(rt->names[rt->nparams] = strndup(p + 1, len - 1)))
                goto oom;
            rt->nparams++;
            n = special_child(*p == ':' ? &n->param : &n->wild);
        } else {
            if (!valid_segment(p, len)) {
                snprintf(err, TYCHO_ERR_LEN,
                         "bad route path \"%s\": spaces, control characters, '?' and '#' are "
                         "not allowed", rt->path);
                return NULL;
            }
            n = static_child(n, p, len, 1);
        }
        if (!n)
            goto oom;
        if (!slash)
            return n;
        p = slash + 1;
    }
oom:
    snprintf(err, TYCHO_ERR_LEN, "out of memory adding route %s %s", rt->method, rt->path);
    return NULL;
}

int tycho_router_add(struct tycho_router *r, const char *method, const char *path,
                     int handler_id, char *err)
{
    struct route *rt = NULL, **grown;
    struct tree *t;
    struct node *n;

    if (!valid_method(method)) {
        snprintf(err, TYCHO_ERR_LEN, "bad method \"%s\": expected a word such as GET", method);
        return TYCHO_ERR;
    }
    if (path[0] != '/') {
        snprintf(err, TYCHO_ERR_LEN, "bad route path \"%s\": it must start with '/'", path);
        return TYCHO_ERR;
    }
    if (!(rt = calloc(1, sizeof(*rt))) || !(rt->method = strdup(method)) ||
        !(rt->path = strdup(path)))
        goto oom;
    for (char *c = rt->method; *c; c++)
        *c = (char)toupper((unsigned char)*c);
    rt->handler_id = handler_id;
    if (!(t = find_tree(r, rt->method, strlen(rt->method))) && !(t = add_tree(r, rt->method)))
        goto oom;
    if (!(n = insert_path(&t->root, rt, err))) {
        free_route(rt);
        return TYCHO_ERR;
    }
    if (n->route) {
        snprintf(err, TYCHO_ERR_LEN, "route %s %s already registered (as %s %s)", rt->method,
                 path, n->route->method, n->route->path);
        free_route(rt);
        return TYCHO_ERR;
    }
    if (!(grown = realloc(r->routes, sizeof(*grown) * (r->nroutes + 1))))
        goto oom;
    r->routes = grown;
    r->routes[r->nroutes++] = rt;
    n->route = rt;
    return TYCHO_OK;
oom:
    snprintf(err, TYCHO_ERR_LEN, "out of memory adding route %s %s", method, path);
    if (rt)
        free_route(rt);
    return TYCHO_ERR;
}

/* p is the start of a segment; returns the route found below n, filling vals from depth. */
static const struct route *match(const struct node *n, const char *p, const char *end,
                                 struct tycho_span *vals, unsigned depth)
{
    const char *slash = memchr(p, '/', (size_t)(end - p));
    size_t len = (size_t)((slash ? slash : end) - p);
    const struct route *hit;

    for (unsigned i = 0; i < n->nkids; i++) {
        const struct node *kid = n->kids[i];
        if (kid->seg_len != len || memcmp(kid->seg, p, len) != 0)
            continue;
        hit = slash ? match(kid, slash + 1, end, vals, depth) : kid->route;
        if (hit)
            return hit;
        break;
    }
    if (n->param && len > 0 && depth < TYCHO_ROUTE_MAX_PARAMS) {
        vals[depth].at = p;
        vals[depth].len = len;
        hit = slash ? match(n->param, slash + 1, end, vals, depth + 1) : n->param->route;
        if (hit)
            return hit;
    }
    if (n->wild && n->wild->route && depth < TYCHO_ROUTE_MAX_PARAMS) {
        vals[depth].at = p;
        vals[depth].len = (size_t)(end - p);
        return n->wild->route;
    }
    return NULL;
}

static const struct route *find_in(const struct tree *t, const char *path, size_t path_len,
                                   struct tycho_span *vals)
{
    if (!t || path_len == 0 || path[0] != '/')
        return NULL;
    return match(&t->root, path + 1, path + path_len, vals, 0);
}

enum tycho_route_result tycho_router_find(const struct tycho_router *r, const char *method,
                                          size_t method_len, const char *path, size_t path_len,
                                          struct tycho_route_match *m)
{
    const struct route *rt = find_in(find_tree(r, method, method_len), path, path_len,
                                     m->param_values);

    /* HEAD falls back to GET: same handler, the body is dropped on the way out. */
    if (!rt && method_len == 4 && memcmp(method, "HEAD", 4) == 0)
        rt = find_in(find_tree(r, "GET", 3), path, path_len, m->param_values);
    if (rt) {
        m->handler_id = rt->handler_id;
        m->pattern = rt->path;
        m->nparams = rt->nparams;
        m->param_names = (const char *const *)rt->names;
        return TYCHO_ROUTE_FOUND;
    }
    for (unsigned i = 0; i < r->ntrees; i++)
        if (find_in(&r->trees[i], path, path_len, m->param_values))
            return TYCHO_ROUTE_WRONG_METHOD;
    return TYCHO_ROUTE_NOT_FOUND;
}

/* Appends ", word" (or "word" first) to buf if the whole of it fits; else leaves buf as is. */
static size_t add_word(char *buf, size_t used, size_t cap, const char *word)
{
    size_t add = (used ? 2 : 0) + strlen(word);

    if (used + add >= cap)
        return used;
    snprintf(buf + used, cap - used, "%s%s", used ? ", " : "", word);
    return used + add;
}

size_t tycho_router_allow(const struct tycho_router *r, const char *path, size_t path_len,
                          char *buf, size_t buf_len)
{
    struct tycho_span vals[TYCHO_ROUTE_MAX_PARAMS];
    int has_head = 0;
    size_t used = 0;

    buf[0] = '\0';
    for (unsigned i = 0; i < r->ntrees; i++) {
        if (!find_in(&r->trees[i], path, path_len, vals))
            continue;
        has_head |= strcmp(r->trees[i].method, "HEAD") == 0;
    }
    for (unsigned i = 0; i < r->ntrees; i++) {
        const char *m = r->trees[i].method;
        if (!find_in(&r->trees[i], path, path_len, vals))
            continue;
        used = add_word(buf, used, buf_len, m);
        if (strcmp(m, "GET") == 0 && !has_head)
            used = add_word(buf, used, buf_len, "HEAD");
    }
    return used;
}

void tycho_router_each(const struct tycho_router *r, tycho_route_fn *fn, void *arg)
{
    for (unsigned i = 0; i < r->nroutes; i++)
        fn(r->routes[i]->method, r->routes[i]->path, r->routes[i]->handler_id, arg);
}

unsigned tycho_router_count(const struct tycho_router *r)
{
    return r->nroutes;
}
