/*
 * reload.h: reloading the scripts (SIGHUP, --watch). The scripts are loaded
 * once in a scratch generation on the main thread; if that fails nothing
 * changes, otherwise every worker builds the new generation and switches to
 * it between requests (worker.c), its old one finishing what it runs. The
 * log line says what changed in the routes. Main thread only.
 */
#ifndef TYCHO_RELOAD_H
#define TYCHO_RELOAD_H

#include "core/tycho.h"

struct tycho_config;
struct tycho_shared;
struct tycho_worker;
struct tycho_router;

struct tycho_reloader {
    const struct tycho_config *cfg;   /* borrowed */
    struct tycho_shared *shared;      /* borrowed: its reload counts (metrics) */
    struct tycho_worker *workers;     /* borrowed; NULL while starting (no reload then) */
    unsigned long generation;         /* the generation served */
    char **routes;                    /* owned: "METHOD path" of the generation served, sorted */
    unsigned nroutes;
};

/*
 * Remembers router's routes as those being served (at start-up, from the
 * scratch generation), so that the next reload can say what changed.
 * TYCHO_OK, or TYCHO_ERR when out of memory (a reload then lists every route
 * as added).
 */
int tycho_reload_routes(struct tycho_reloader *rl, const struct tycho_router *router);

/* Reloads (a tycho_watch or signal callback: arg is the reloader). Logs what happened. */
void tycho_reload(void *arg);

/* Frees what the reloader holds. */
void tycho_reload_dispose(struct tycho_reloader *rl);

#endif
