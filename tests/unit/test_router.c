/*
 * test_router.c: unit tests for router.[ch] through its public header.
 *
 * Static, ":param" and "*wildcard" routes; static > param > wildcard with
 * backtracking; parameter names and values; duplicate and malformed routes;
 * 404 vs 405 and the Allow list; HEAD falling back to GET; method case;
 * trailing slashes; the root route; tycho_router_each; a few thousand routes.
 * Single-threaded. Ends with the harness line `N passed, M failed`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/tycho.h"
#include "harness.h"
#include "http/router.h"

/* Looks up method and path (C strings); returns the result and fills m. */
static enum tycho_route_result find(const struct tycho_router *r, const char *method,
                                    const char *path, struct tycho_route_match *m)
{
    memset(m, 0, sizeof(*m));
    return tycho_router_find(r, method, strlen(method), path, strlen(path), m);
}

/* The handler id found for method path, or -1 for 404 and -2 for 405. */
static int handler_of(const struct tycho_router *r, const char *method, const char *path)
{
    struct tycho_route_match m;

    switch (find(r, method, path, &m)) {
    case TYCHO_ROUTE_FOUND:
        return m.handler_id;
    case TYCHO_ROUTE_NOT_FOUND:
        return -1;
    case TYCHO_ROUTE_WRONG_METHOD:
        return -2;
    }
    return -3;
}

/* Parameter i of m, copied into buf as a C string. */
static const char *param_value(const struct tycho_route_match *m, unsigned i, char *buf,
                               size_t len)
{
    if (i >= m->nparams || m->param_values[i].len >= len)
        return "(none)";
    memcpy(buf, m->param_values[i].at, m->param_values[i].len);
    buf[m->param_values[i].len] = '\0';
    return buf;
}

/* Adds a route that must be accepted. */
static void add_ok(struct tycho_router *r, const char *method, const char *path, int id)
{
    char err[TYCHO_ERR_LEN] = "";
    int rc = tycho_router_add(r, method, path, id, err);

    if (!ok(rc == TYCHO_OK, "route accepted"))
        printf("     %s %s: %s\n", method, path, err);
}

/* Adds a route that must be refused; returns whether err contains want. */
static int add_fails(struct tycho_router *r, const char *method, const char *path,
                     const char *want)
{
    char err[TYCHO_ERR_LEN] = "";
    int rc = tycho_router_add(r, method, path, 99, err);

    if (!ok(rc == TYCHO_ERR, "bad route refused")) {
        printf("     %s %s was accepted\n", method, path);
        return 0;
    }
    if (!ok(strstr(err, want) != NULL, "error message names the problem")) {
        printf("     %s %s: err \"%s\", want it to contain \"%s\"\n", method, path, err, want);
        return 0;
    }
    return 1;
}

static void test_static(void)
{
    struct tycho_router *r = tycho_router_new();
    struct tycho_route_match m;

    ok(r != NULL, "router_new");
    is_int(tycho_router_count(r), 0, "empty router has no routes");
    is_int(find(r, "GET", "/", &m), TYCHO_ROUTE_NOT_FOUND, "empty router: 404");
    add_ok(r, "GET", "/", 1);
    add_ok(r, "GET", "/users", 2);
    add_ok(r, "GET", "/users/", 3);
    add_ok(r, "GET", "/users/list", 4);
    add_ok(r, "GET", "/a/b/c/d/e", 5);
    is_int(tycho_router_count(r), 5, "count");

    is_int(find(r, "GET", "/", &m), TYCHO_ROUTE_FOUND, "root route found");
    is_int(m.handler_id, 1, "root route handler");
    is_int(m.nparams, 0, "root route has no params");
    is_int(handler_of(r, "GET", "/users"), 2, "/users");
    is_int(handler_of(r, "GET", "/users/"), 3, "trailing slash is a distinct route");
    is_int(handler_of(r, "GET", "/users/list"), 4, "/users/list");
    is_int(handler_of(r, "GET", "/users/list/"), -1, "/users/list/ not registered: 404");
    is_int(handler_of(r, "GET", "/a/b/c/d/e"), 5, "deep static route");
    is_int(handler_of(r, "GET", "/a/b/c/d"), -1, "prefix of a route: 404");
    is_int(handler_of(r, "GET", "/a/b/c/d/e/f"), -1, "longer than a route: 404");
    is_int(handler_of(r, "GET", "/user"), -1, "prefix of a segment: 404");
    is_int(handler_of(r, "GET", "/usersx"), -1, "longer segment: 404");
    is_int(handler_of(r, "GET", "/Users"), -1, "static segments are case-sensitive");
    is_int(handler_of(r, "GET", ""), -1, "empty path: 404");
    is_int(handler_of(r, "GET", "users"), -1, "path without '/': 404");
    is_int(handler_of(r, "GET", "//users"), -1, "double slash: 404");

    /* The path length is honoured: bytes after path_len are not part of the path. */
    is_int(tycho_router_find(r, "GET", 3, "/users/listXYZ", 11, &m), TYCHO_ROUTE_FOUND,
           "path_len bounds the path");
    is_int(m.handler_id, 4, "path_len bounds the path: handler");
    is_int(tycho_router_find(r, "GETX", 3, "/users", 6, &m), TYCHO_ROUTE_FOUND,
           "method_len bounds the method");
    tycho_router_free(r);
    tycho_router_free(NULL);
}

static void test_params(void)
{
    struct tycho_router *r = tycho_router_new();
    struct tycho_route_match m;
    char v[64];

    add_ok(r, "GET", "/users/:id", 1);
    add_ok(r, "GET", "/users/:user_id/posts/:post2", 2);
    add_ok(r, "GET", "/files/*path", 3);
    add_ok(r, "GET", "/x/:a/:b/:c", 4);

    is_int(find(r, "GET", "/users/42", &m), TYCHO_ROUTE_FOUND, "param route found");
    is_int(m.handler_id, 1, "param route handler");
    is_int(m.nparams, 1, "one param");
    is_str(m.param_names[0], "id", "param name");
    is_str(param_value(&m, 0, v, sizeof(v)), "42", "param value");

    is_int(find(r, "GET", "/users/a%20b", &m), TYCHO_ROUTE_FOUND, "encoded param found");
    is_str(param_value(&m, 0, v, sizeof(v)), "a%20b", "param value stays %-encoded");

    is_int(find(r, "GET", "/users/7/posts/99", &m), TYCHO_ROUTE_FOUND, "two params found");
    is_int(m.handler_id, 2, "two params handler");
    is_int(m.nparams, 2, "two params");
    is_str(m.param_names[0], "user_id", "first param name (shared ':' node)");
    is_str(m.param_names[1], "post2", "second param name");
    is_str(param_value(&m, 0, v, sizeof(v)), "7", "first param value");
    is_str(param_value(&m, 1, v, sizeof(v)), "99", "second param value");

    is_int(find(r, "GET", "/x/1/22/333", &m), TYCHO_ROUTE_FOUND, "three params");
    is_int(m.nparams, 3, "three params count");
    is_str(m.param_names[2], "c", "third name");
    is_str(param_value(&m, 0, v, sizeof(v)), "1", "value a");
    is_str(param_value(&m, 1, v, sizeof(v)), "22", "value b");
    is_str(param_value(&m, 2, v, sizeof(v)), "333", "value c");

    is_int(handler_of(r, "GET", "/users/"), -1, "a param takes a non-empty segment");
    is_int(handler_of(r, "GET", "/users"), -1, "a param is not optional");
    is_int(handler_of(r, "GET", "/users/42/"), -1, "param then trailing slash: 404");
    is_int(handler_of(r, "GET", "/users/7/posts"), -1, "missing last param: 404");
    is_int(handler_of(r, "GET", "/users/7/posts/"), -1, "empty last param: 404");

    is_int(find(r, "GET", "/files/a/b/c.txt", &m), TYCHO_ROUTE_FOUND, "wildcard found");
    is_int(m.handler_id, 3, "wildcard handler");
    is_int(m.nparams, 1, "wildcard is a param");
    is_str(m.param_names[0], "path", "wildcard name");
    is_str(param_value(&m, 0, v, sizeof(v)), "a/b/c.txt", "wildcard takes the rest");
    is_int(find(r, "GET", "/files/x", &m), TYCHO_ROUTE_FOUND, "wildcard, one segment");
    is_str(param_value(&m, 0, v, sizeof(v)), "x", "wildcard, one segment value");
    is_int(find(r, "GET", "/files/dir/", &m), TYCHO_ROUTE_FOUND, "wildcard keeps a trailing /");
    is_str(param_value(&m, 0, v, sizeof(v)), "dir/", "wildcard value with trailing /");
    tycho_router_free(r);
}

static void test_precedence(void)
{
    struct tycho_router *r = tycho_router_new();
    struct tycho_route_match m;
    char v[64];

    add_ok(r, "GET", "/a/b/d", 1);
    add_ok(r, "GET", "/a/:x/c", 2);
    add_ok(r, "GET", "/a/*rest", 3);
    add_ok(r, "GET", "/a/b", 4);
    add_ok(r, "GET", "/a/:y", 5);

    is_int(handler_of(r, "GET", "/a/b/d"), 1, "static wins");
    is_int(find(r, "GET", "/a/b/c", &m), TYCHO_ROUTE_FOUND, "backtrack into the param");
    is_int(m.handler_id, 2, "/a/b/c matches /a/:x/c");
    is_str(m.param_names[0], "x", "param name after backtracking");
    is_str(param_value(&m, 0, v, sizeof(v)), "b", "param value after backtracking");
    is_int(find(r, "GET", "/a/b/e", &m), TYCHO_ROUTE_FOUND, "backtrack into the wildcard");
    is_int(m.handler_id, 3, "/a/b/e matches /a/*rest");
    is_str(m.param_names[0], "rest", "wildcard name after backtracking");
    is_str(param_value(&m, 0, v, sizeof(v)), "b/e", "wildcard value after backtracking");
    is_int(handler_of(r, "GET", "/a/b"), 4, "static over param (leaf)");
    is_int(find(r, "GET", "/a/z", &m), TYCHO_ROUTE_FOUND, "param over wildcard (leaf)");
    is_int(m.handler_id, 5, "/a/z matches /a/:y");
    is_str(m.param_names[0], "y", "leaf param name");
    is_int(handler_of(r, "GET", "/a/z/c"), 2, "param route");
    is_int(find(r, "GET", "/a/z/q/r", &m), TYCHO_ROUTE_FOUND, "param dead end -> wildcard");
    is_int(m.handler_id, 3, "/a/z/q/r matches /a/*rest");
    is_str(param_value(&m, 0, v, sizeof(v)), "z/q/r", "wildcard value");
    tycho_router_free(r);

    /* Deeper backtracking: the static branch fails two levels down. */
    r = tycho_router_new();
    add_ok(r, "GET", "/s/t/u/v", 1);
    add_ok(r, "GET", "/s/:p/u/w", 2);
    add_ok(r, "GET", "/s/:p/:q/x", 3);
    add_ok(r, "GET", "/*all", 4);
    is_int(handler_of(r, "GET", "/s/t/u/v"), 1, "deep static");
    is_int(find(r, "GET", "/s/t/u/w", &m), TYCHO_ROUTE_FOUND, "deep backtrack to param");
    is_int(m.handler_id, 2, "/s/t/u/w -> /s/:p/u/w");
    is_str(param_value(&m, 0, v, sizeof(v)), "t", "p = t");
    is_int(find(r, "GET", "/s/t/u/x", &m), TYCHO_ROUTE_FOUND, "deep backtrack to two params");
    is_int(m.handler_id, 3, "/s/t/u/x -> /s/:p/:q/x");
    is_int(m.nparams, 2, "two params");
    is_str(param_value(&m, 0, v, sizeof(v)), "t", "p = t");
    is_str(param_value(&m, 1, v, sizeof(v)), "u", "q = u");
    is_int(find(r, "GET", "/s/t/u/y", &m), TYCHO_ROUTE_FOUND, "deep backtrack to root wildcard");
    is_int(m.handler_id, 4, "/s/t/u/y -> /*all");
    is_str(param_value(&m, 0, v, sizeof(v)), "s/t/u/y", "all = s/t/u/y");
    is_int(find(r, "GET", "/", &m), TYCHO_ROUTE_FOUND, "root wildcard takes /");
    is_str(param_value(&m, 0, v, sizeof(v)), "", "root wildcard value empty");
    tycho_router_free(r);

    /* A static node that is only a prefix of longer routes does not hide a param leaf. */
    r = tycho_router_new();
    add_ok(r, "GET", "/q/b/c", 1);
    add_ok(r, "GET", "/q/:x", 2);
    add_ok(r, "GET", "/u/:id/*rest", 3);
    is_int(find(r, "GET", "/q/b", &m), TYCHO_ROUTE_FOUND, "static prefix node without a route");
    is_int(m.handler_id, 2, "/q/b -> /q/:x");
    is_str(param_value(&m, 0, v, sizeof(v)), "b", "x = b");
    is_int(find(r, "GET", "/u/7/a/b", &m), TYCHO_ROUTE_FOUND, "param then wildcard");
    is_int(m.nparams, 2, "param then wildcard: two values");
    is_str(m.param_names[0], "id", "names[0] = id");
    is_str(m.param_names[1], "rest", "names[1] = rest");
    is_str(param_value(&m, 0, v, sizeof(v)), "7", "id = 7");
    is_str(param_value(&m, 1, v, sizeof(v)), "a/b", "rest = a/b");
    tycho_router_free(r);
}

static void test_bad_routes(void)
{
    struct tycho_router *r = tycho_router_new();
    struct tycho_route_match m;

    add_ok(r, "GET", "/dup", 1);
    add_fails(r, "GET", "/dup", "already registered");
    add_fails(r, "get", "/dup", "already registered");
    add_ok(r, "POST", "/dup", 2);
    add_ok(r, "GET", "/p/:id", 3);
    add_fails(r, "GET", "/p/:other", "already registered");
    add_ok(r, "GET", "/w/*a", 4);
    add_fails(r, "GET", "/w/*b", "already registered");

    add_fails(r, "GET", "nope", "must start with '/'");
    add_fails(r, "GET", "", "must start with '/'");
    add_fails(r, "GET", "/a/*w/b", "last segment");
    add_fails(r, "GET", "/a/*w/", "last segment");
    add_fails(r, "GET", "/a/:", "parameter name");
    add_fails(r, "GET", "/a/:b-c", "parameter name");
    add_fails(r, "GET", "/a/*", "parameter name");
    add_fails(r, "GET", "/a/:x y", "parameter name");
    add_fails(r, "GET", "/a b", "not allowed");
    add_fails(r, "GET", "/a?b", "not allowed");
    add_fails(r, "GET", "/a#b", "not allowed");
    add_fails(r, "", "/x", "bad method");
    add_fails(r, "G T", "/x", "bad method");
    add_fails(r, "GET", "/:a/:b/:c/:d/:e/:f/:g/:h/:i/:j/:k/:l/:m/:n/:o/:p/:q",
              "more than 16 parameters");
    add_ok(r, "GET", "/:a/:b/:c/:d/:e/:f/:g/:h/:i/:j/:k/:l/:m/:n/:o/:p", 5);
    is_int(find(r, "GET", "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16", &m), TYCHO_ROUTE_FOUND,
           "16 params found");
    is_int(m.nparams, 16, "16 params");
    is_str(m.param_names[15], "p", "16th name");

    is_int(tycho_router_count(r), 5, "refused routes are not counted");
    is_int(handler_of(r, "GET", "/dup"), 1, "first registration kept");
    is_int(handler_of(r, "GET", "/p/x"), 3, "first param registration kept");
    is_int(handler_of(r, "GET", "/a/x/b"), -1, "refused wildcard route is not there");
    tycho_router_free(r);
}

static void test_methods(void)
{
    struct tycho_router *r = tycho_router_new();
    struct tycho_route_match m;
    char allow[128];
    size_t n;

    add_ok(r, "get", "/lower", 1);
    add_ok(r, "GET", "/thing", 2);
    add_ok(r, "POST", "/thing", 3);
    add_ok(r, "DELETE", "/only-delete", 4);
    add_ok(r, "HEAD", "/h", 5);
    add_ok(r, "GET", "/h", 6);
    add_ok(r, "Put", "/thing", 7);
    add_ok(r, "GET", "/item/:id", 8);
    add_ok(r, "PATCH", "/item/*rest", 9);

    is_int(handler_of(r, "GET", "/lower"), 1, "lowercase method is upper-cased");
    is_int(handler_of(r, "get", "/lower"), -2, "lookup is by the exact (upper-case) method");
    is_int(handler_of(r, "PUT", "/thing"), 7, "mixed-case method is upper-cased");
    is_int(handler_of(r, "POST", "/thing"), 3, "POST");
    is_int(handler_of(r, "HEAD", "/thing"), 2, "HEAD falls back to GET");
    is_int(handler_of(r, "HEAD", "/h"), 5, "an explicit HEAD route wins over GET");
    is_int(handler_of(r, "GET", "/h"), 6, "GET next to HEAD");
    is_int(handler_of(r, "HEAD", "/only-delete"), -2, "HEAD without GET: 405");
    is_int(handler_of(r, "GET", "/only-delete"), -2, "other method: 405");
    is_int(handler_of(r, "DELETE", "/thing"), -2, "DELETE /thing: 405");
    is_int(handler_of(r, "GET", "/nothing"), -1, "unknown path: 404");
    is_int(handler_of(r, "OPTIONS", "/nothing"), -1, "unknown method and path: 404");
    is_int(handler_of(r, "OPTIONS", "/thing"), -2, "unknown method, known path: 405");
    is_int(find(r, "HEAD", "/item/12", &m), TYCHO_ROUTE_FOUND, "HEAD falls back to a GET param");
    is_int(m.handler_id, 8, "HEAD -> GET /item/:id");
    is_str(m.param_names[0], "id", "HEAD fallback param name");
    is_int(handler_of(r, "PATCH", "/item/12"), 9, "PATCH wildcard");
    is_int(handler_of(r, "POST", "/item/12"), -2, "POST /item/12: 405");

    n = tycho_router_allow(r, "/thing", 6, allow, sizeof(allow));
    is_str(allow, "GET, HEAD, POST, PUT", "Allow: HEAD follows GET");
    is_int(n, strlen("GET, HEAD, POST, PUT"), "allow returns the length");
    tycho_router_allow(r, "/only-delete", 12, allow, sizeof(allow));
    is_str(allow, "DELETE", "Allow: one method");
    tycho_router_allow(r, "/h", 2, allow, sizeof(allow));
    is_str(allow, "GET, HEAD", "Allow: explicit HEAD is listed once");
    tycho_router_allow(r, "/item/5", 7, allow, sizeof(allow));
    is_str(allow, "GET, HEAD, PATCH", "Allow with param and wildcard routes");
    n = tycho_router_allow(r, "/nothing", 8, allow, sizeof(allow));
    is_str(allow, "", "Allow for an unknown path is empty");
    is_int(n, 0, "Allow length 0");
    /* A buffer too small keeps whole words only. */
    n = tycho_router_allow(r, "/thing", 6, allow, 12);
    is_str(allow, "GET, HEAD", "Allow truncates at whole words");
    is_int(n, 9, "truncated length");
    tycho_router_free(r);

    /* Method order follows registration order of the methods. */
    r = tycho_router_new();
    add_ok(r, "POST", "/o", 1);
    add_ok(r, "GET", "/o", 2);
    tycho_router_allow(r, "/o", 2, allow, sizeof(allow));
    is_str(allow, "POST, GET, HEAD", "Allow in method registration order");
    tycho_router_free(r);
}

struct each_log {
    char text[512];
    unsigned calls;
};

static void on_route(const char *method, const char *path, int handler_id, void *arg)
{
    struct each_log *log = arg;
    size_t used = strlen(log->text);

    snprintf(log->text + used, sizeof(log->text) - used, "%s%s %s=%d", used ? "; " : "", method,
             path, handler_id);
    log->calls++;
}

static void test_each(void)
{
    struct tycho_router *r = tycho_router_new();
    struct each_log log = {"", 0};

    tycho_router_each(r, on_route, &log);
    is_int(log.calls, 0, "each on an empty router");
    add_ok(r, "GET", "/a", 1);
    add_ok(r, "post", "/b", 2);
    add_ok(r, "GET", "/c/:id", 3);
    add_ok(r, "DELETE", "/d", 4);
    add_ok(r, "POST", "/e", 5);
    add_fails(r, "GET", "/a", "already registered");
    tycho_router_each(r, on_route, &log);
    is_int(log.calls, 5, "each visits every route once");
    /* router.h: "in registration order" (what the start-up route list shows). */
    is_str(log.text, "GET /a=1; POST /b=2; GET /c/:id=3; DELETE /d=4; POST /e=5",
           "each: registration order");
    tycho_router_free(r);
}

static void test_many(void)
{
    struct tycho_router *r = tycho_router_new();
    struct tycho_route_match m;
    char path[64], v[64];
    int i, bad_add = 0, bad_find = 0, bad_param = 0;
    enum { N = 3000 };

    for (i = 0; i < N; i++) {
        char err[TYCHO_ERR_LEN];
        snprintf(path, sizeof(path), "/r%d/s%d/:id", i % 50, i);
        bad_add += tycho_router_add(r, i % 2 ? "POST" : "GET", path, i, err) != TYCHO_OK;
        snprintf(path, sizeof(path), "/static/%d", i);
        bad_add += tycho_router_add(r, "GET", path, N + i, err) != TYCHO_OK;
    }
    is_int(bad_add, 0, "thousands of routes added");
    is_int(tycho_router_count(r), 2 * N, "count after thousands");
    for (i = 0; i < N; i++) {
        char want[16];
        snprintf(path, sizeof(path), "/r%d/s%d/v%d", i % 50, i, i);
        snprintf(want, sizeof(want), "v%d", i);
        if (find(r, i % 2 ? "POST" : "GET", path, &m) != TYCHO_ROUTE_FOUND || m.handler_id != i)
            bad_find++;
        else if (strcmp(param_value(&m, 0, v, sizeof(v)), want) != 0)
            bad_param++;
        if (find(r, i % 2 ? "GET" : "POST", path, &m) != TYCHO_ROUTE_WRONG_METHOD)
            bad_find++;
        snprintf(path, sizeof(path), "/static/%d", i);
        if (find(r, "GET", path, &m) != TYCHO_ROUTE_FOUND || m.handler_id != N + i)
            bad_find++;
    }
    is_int(bad_find, 0, "thousands of routes found");
    is_int(bad_param, 0, "thousands of param values");
    is_int(handler_of(r, "GET", "/static/3000"), -1, "one past the end: 404");
    tycho_router_free(r);
}

int main(void)
{
    test_static();
    test_params();
    test_precedence();
    test_bad_routes();
    test_methods();
    test_each();
    test_many();
    return test_summary();
}
