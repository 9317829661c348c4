/*
 * reload.c: reloading the scripts, and the log line saying what changed in
 * the routes (reload.h).
 */
#include "top/reload.h"
#include "core/config.h"
#include "core/log.h"
#include "http/router.h"
#include "lua/gen.h"
#include "top/worker.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Routes named in one log line; past it, "and N more". */
#define ROUTES_NAMED 20

struct route_list {
    char **names;
    unsigned n;
    bool failed;                      /* out of memory: the list is short */
};

static void add_route(const char *method, const char *path, int handler_id, void *arg)
{
    struct route_list *l = arg;
    size_t len = strlen(method) + 1 + strlen(path) + 1;
    char **grown = realloc(l->names, sizeof(*grown) * (l->n + 1));

    (void)handler_id;
    if (!grown || !(grown[l->n] = malloc(len))) {
        if (grown)
            l->names = grown;
        l->failed = true;
        return;
    }
    l->names = grown;
    snprintf(l->names[l->n++], len, "%s %s", method, path);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static int list_routes(const struct tycho_router *router, struct route_list *l)
{
    *l = (struct route_list){0};
    tycho_router_each(router, add_route, l);
    if (l->failed) {
        free_names(l->names, l->n);
        *l = (struct route_list){0};
        return TYCHO_ERR;
    }
    qsort(l->names, l->n, sizeof(*l->names), by_name);
    return TYCHO_OK;
}

int tycho_reload_routes(struct tycho_reloader *rl, const struct tycho_router *router)
{
    struct route_list l;
    int rc = list_routes(router, &l);

    free_names(rl->routes, rl->nroutes);
    rl->routes = l.names;
    rl->nroutes = l.n;
    return rc;
}

/* Appends "; routes added: A, B" (or removed) to line: the names of a not in b. */
static void append_diff(char *line, size_t cap, const char *what, char **a, unsigned na,
                        char **b, unsigned nb)
{
    unsigned i = 0, j = 0, named = 0, more = 0;
    size_t len = strlen(line);

    while (i < na) {
        int cmp = j < nb ? strcmp(a[i], b[j]) : -1;
        if (cmp > 0) {
            j++;
            continue;
        }
        if (cmp < 0) {
            if (named < ROUTES_NAMED)
                len += (size_t)snprintf(line + len, len < cap ? cap - len : 0, "%s%s",
                                        named ? ", " : what, a[i]);
            else
                more++;
            named++;
        } else {
            j++;
        }
        i++;
    }
    if (more && len < cap)
        snprintf(line + len, cap - len, " and %u more", more);
}

/* The routes part of the reload line: what was added and removed, or that nothing was. */
static void describe_routes(struct tycho_reloader *rl, const struct tycho_router *router,
                            char *line, size_t cap)
{
    struct route_list now;

    line[0] = '\0';
    if (list_routes(router, &now) < 0) {
        snprintf(line, cap, "; routes: out of memory comparing them");
        return;
    }
    append_diff(line, cap, "; routes added: ", now.names, now.n, rl->routes, rl->nroutes);
    append_diff(line, cap, "; routes removed: ", rl->routes, rl->nroutes, now.names, now.n);
    if (!line[0])
        snprintf(line, cap, "; routes unchanged (%u)", now.n);
    free_names(rl->routes, rl->nroutes);
    rl->routes = now.names;
    rl->nroutes = now.n;
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

void tycho_reload(void *arg)
{
    struct tycho_reloader *rl = arg;
    struct tycho_gen *scratch = NULL;
    struct timespec t0;
    char err[TYCHO_ERR_LEN], routes[2048];
    unsigned nscripts;

    if (!rl->workers)
        return;                       /* still starting: the workers load the files anyway */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!(scratch = tycho_gen_new(rl->cfg->dir, 0, err))) {
        tycho_log_error("reload failed: %s; still serving generation %lu", err, rl->generation);
        atomic_fetch_add(&rl->shared->reload_failures, 1);
        return;
    }
    nscripts = tycho_gen_script_count(scratch);
    describe_routes(rl, tycho_gen_router(scratch), routes, sizeof(routes));
    tycho_gen_free(scratch);
    rl->generation++;
    tycho_log_info("reloaded %u scripts in %.1f ms (generation %lu)%s", nscripts, ms_since(&t0),
                   rl->generation, routes);
    tycho_workers_reload(rl->workers, rl->cfg->workers, rl->generation);
    atomic_fetch_add(&rl->shared->reloads, 1);
    atomic_store(&rl->shared->generation, rl->generation);
}

void tycho_reload_dispose(struct tycho_reloader *rl)
{
    free_names(rl->routes, rl->nroutes);
    rl->routes = NULL;
    rl->nroutes = 0;
}
