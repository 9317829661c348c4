/*
 * vm.h: one Lua state and what its bindings may read of it: the worker it
 * runs on, its loop, the script directory, the routes while the scripts
 * load, the backend pools, the app.static mounts. The lowest module of lua/:
 * task.c, the bindings and gen.c use it; it uses none of them. A generation
 * (gen.c) owns one vm and makes its state; the thread that owns the
 * generation is the only one that touches it.
 */
#ifndef TYCHO_VM_H
#define TYCHO_VM_H

#include <lua.h>
#include <stdbool.h>

#include "core/list.h"
#include "http/router.h"

struct event_base;
struct tycho_req;
struct tycho_router;
struct tycho_static;
struct tycho_task;
struct tycho_upstreams;
struct tycho_sqlite_owner;

#define TYCHO_THREAD_CACHE_MAX 256

/* A coroutine kept for reuse (task.c). */
struct tycho_thread {
    lua_State *co;   /* borrowed: anchored by ref */
    int ref;         /* registry ref */
};

/* An app.static route: served without Lua while no middleware is registered. */
struct tycho_static_route {
    int handler_id;
    struct tycho_static *mount;    /* borrowed: lives in a userdata of L until lua_close */
};

struct tycho_vm {
    lua_State *L;                  /* owned by the generation */
    int worker_id;                 /* 1..N; 0 in main's scratch state */
    struct event_base *base;       /* borrowed: the worker's loop; NULL until attached */
    const char *dir;               /* borrowed: the script directory, as given */
    struct tycho_router *router;   /* borrowed: the routes, while loading; NULL once loaded */
    struct tycho_upstreams *upstreams; /* borrowed: backend pools (tycho.http) */
    struct tycho_sqlite_owner *sqlite; /* borrowed: where its SQLite jobs come back */
    struct tycho_static_route *statics; /* owned array: the app.static routes */
    unsigned nstatics;
    /* owned array indexed by handler id: the options of routes that have some (zeroes else) */
    struct tycho_route_opts *route_opts;
    unsigned nroute_opts;          /* entries in route_opts: the highest such id + 1 */
    bool retired;                  /* a newer generation serves: no new timers */
    /*
     * Registry ref of the function that makes a table a handler returned its
     * request's body (JSON: value, lightuserdata r); the generation's.
     */
    int json_body_ref;
    /* Called when a retired vm's last task has ended (from a task_put). */
    void (*idle)(struct tycho_vm *vm);
    void *idle_arg;

    /* task.c's own. */
    struct tycho_task *current;    /* the task whose coroutine runs now, or NULL */
    struct tycho_task *free_tasks; /* free list */
    struct tycho_list timers;      /* live timers */
    unsigned live_tasks;           /* tasks under way: requests and timer runs */
    struct tycho_thread threads[TYCHO_THREAD_CACHE_MAX]; /* idle coroutines */
    unsigned nthreads;
};

/* Registry keys (their addresses are the lightuserdata keys). */
extern const char tycho_key_vm;       /* -> struct tycho_vm * */
extern const char tycho_key_handlers; /* -> table: handler id -> function */
extern const char tycho_key_on_start; /* -> table: app.on_worker_start functions */

/* The vm whose state L (or a coroutine of it) is. */
struct tycho_vm *tycho_vm_of(lua_State *L);

/* The loop's cached time (the clock before the vm is attached), in seconds. */
double tycho_vm_now(const struct tycho_vm *vm);

/*
 * handler_id is an app.static route served by mount (borrowed: it lives in a
 * userdata of vm's state). Lets the connection serve it without Lua while
 * there is no middleware. Out of memory only loses that shortcut.
 */
void tycho_vm_add_static(struct tycho_vm *vm, int handler_id, struct tycho_static *mount);

/*
 * Records the options of handler_id's route (copied). TYCHO_OK, or TYCHO_ERR
 * when out of memory (nothing recorded).
 */
int tycho_vm_set_route_opts(struct tycho_vm *vm, int handler_id,
                            const struct tycho_route_opts *o);

/* The options of handler_id's route, or NULL when it has none. */
const struct tycho_route_opts *tycho_vm_route_opts(const struct tycho_vm *vm, int handler_id);

#endif
