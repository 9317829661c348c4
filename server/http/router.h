/*
 * router.h: the route table. A tree of path segments per HTTP method, with
 * static segments, ":name" parameters and a final "*name" wildcard. Built
 * from Lua at script load time, then only read; lookups allocate nothing and
 * run no Lua. One router belongs to one script generation, on one thread.
 */
#ifndef TYCHO_ROUTER_H
#define TYCHO_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

/* The handler ids of a request no route takes, when the app answers those itself. */
#define TYCHO_HANDLER_NOT_FOUND (-1)
#define TYCHO_HANDLER_WRONG_METHOD (-2)
#define TYCHO_ROUTE_MAX_PARAMS 16

struct tycho_router;

/* A piece of the request path, pointing into it (not NUL-terminated). */
struct tycho_span {
    const char *at;
    size_t len;
};

/* The longest route pattern, in bytes (it is also the route's metrics label). */
#define TYCHO_ROUTE_MAX_BYTES 512

/* A route's compression (app.get(path, fn, {gzip = ...}); http/gzip.h does it). */
enum tycho_route_gzip {
    TYCHO_ROUTE_GZIP_DEFAULT,  /* as --gzip says */
    TYCHO_ROUTE_GZIP_OFF,      /* gzip = false: never compressed */
    TYCHO_ROUTE_GZIP_ON        /* gzip = true: compressed even without --gzip */
};

/*
 * The options of one route, as the application registered them (the last
 * argument of app.get and friends). The http layer asks for them through
 * struct tycho_app's route_opts; a route without options has none (NULL),
 * which means every field's default. New options go here.
 * stream_body: the handler runs as soon as the head is in and reads the
 * body itself (req:read) instead of receiving it whole; max_body then bounds
 * that body in bytes (413 past it) in place of --max-body-bytes.
 */
struct tycho_route_opts {
    enum tycho_route_gzip gzip;
    bool stream_body;
    size_t max_body;
};

struct tycho_route_match {
    int handler_id;                       /* what tycho_router_add was given */
    const char *pattern;                  /* borrowed from the router: the path as registered */
    unsigned nparams;
    const char *const *param_names;       /* borrowed from the router; nparams names */
    struct tycho_span param_values[TYCHO_ROUTE_MAX_PARAMS]; /* raw (still %-encoded) */
};


enum tycho_route_result {
    TYCHO_ROUTE_FOUND,
    TYCHO_ROUTE_NOT_FOUND,     /* 404 */
    TYCHO_ROUTE_WRONG_METHOD   /* 405: the path exists for other methods */
};

/* Returns an empty router, or NULL when out of memory. */
struct tycho_router *tycho_router_new(void);

/* Frees the router; NULL is a no-op. */
void tycho_router_free(struct tycho_router *r);

/*
 * Adds METHOD PATH -> handler_id. PATH starts with '/'; ":name" takes one
 * non-empty segment; "*name" must be the last segment and takes the rest.
 * Returns TYCHO_OK, or TYCHO_ERR with a message in err (TYCHO_ERR_LEN bytes):
 * a bad path, a bad method, too many parameters, or "route GET /x already
 * registered". handler_id must be >= 0.
 */
int tycho_router_add(struct tycho_router *r, const char *method, const char *path,
                     int handler_id, char *err);

/*
 * Looks up method and path (path without the query string). Fills m when
 * FOUND. Static segments win over parameters, parameters over wildcards;
 * the search backtracks, so /a/:x/c and /a/b/d both match what they should.
 */
enum tycho_route_result tycho_router_find(const struct tycho_router *r, const char *method,
                                          size_t method_len, const char *path, size_t path_len,
                                          struct tycho_route_match *m);

/*
 * Writes the methods that do have path into buf as "GET, HEAD, POST" (HEAD
 * follows GET), NUL-terminated. Returns the length written.
 */
size_t tycho_router_allow(const struct tycho_router *r, const char *path, size_t path_len,
                          char *buf, size_t buf_len);

/* Calls fn for every route, in registration order. */
typedef void tycho_route_fn(const char *method, const char *path, int handler_id, void *arg);
void tycho_router_each(const struct tycho_router *r, tycho_route_fn *fn, void *arg);

/* Number of routes. */
unsigned tycho_router_count(const struct tycho_router *r);

#endif
