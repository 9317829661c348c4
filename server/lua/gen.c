/*
 * gen.c: script generations. A generation is one Lua state (its vm) with the
 * directory's scripts loaded, the router they filled and the prelude's
 * dispatch function; requests run in it as tasks (task.c). A generation is
 * built inside lua_cpcall, so an out-of-memory raise during set-up becomes
 * an error, never a panic. Scripts load with lua_pcall (the only pcall: load
 * time). On a reload the old generation is retired: it finishes what runs in
 * it and is freed from the loop once idle.
 */
#include "lua/gen.h"
#include "core/log.h"
#include "http/http.h"
#include "http/router.h"
#include "lua/bind.h"
#include "lua/task.h"
#include "lua/vm.h"
#include "net/sqlite.h"
#include "net/upstream.h"

#include <dirent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prelude_lua.h" /* generated from prelude.lua: tycho_prelude_lua[] */
#include "web_lua.h"     /* generated from web.lua: tycho_web_lua[] */

struct tycho_gen {
    struct tycho_vm vm;            /* its Lua state (vm.L, owned) and what runs in it */
    struct tycho_router *router;   /* owned */
    int dispatch_ref;              /* the prelude's dispatch function */
    int seal_ref;                  /* the prelude's seal(): no more middleware */
    int handlers_ref;              /* table: handler id -> function */
    unsigned nscripts;
    unsigned long number;          /* its generation number, for the log once retired */
    /*
     * A ring of the worker's generations, newest first: the one served and
     * the retired ones still finishing. No sentinel: any member reaches all.
     */
    struct tycho_list ring;
    struct event free_ev;          /* frees a retired, idle generation from the loop */
    char *dir;                     /* owned: the script directory, as given */
    unsigned middleware;           /* app.use functions registered (known once loaded) */
    bool misses;                   /* the scripts answer 404 and 405 (middleware, not_found) */
};

lua_State *tycho_gen_lua(struct tycho_gen *g)
{
    return g->vm.L;
}

const struct tycho_router *tycho_gen_router(const struct tycho_gen *g)
{
    return g->router;
}

struct tycho_static *tycho_gen_static(const struct tycho_gen *g, int handler_id)
{
    if (g->middleware > 0)
        return NULL;                  /* the middleware must run: the Lua handler serves */
    for (unsigned i = 0; i < g->vm.nstatics; i++)
        if (g->vm.statics[i].handler_id == handler_id)
            return g->vm.statics[i].mount;
    return NULL;
}

static struct tycho_static *static_of(void *self, int handler_id)
{
    return tycho_gen_static(self, handler_id);
}

static const struct tycho_route_opts *route_opts(void *self, int handler_id)
{
    return tycho_vm_route_opts(&((struct tycho_gen *)self)->vm, handler_id);
}

static enum tycho_run run(void *self, struct tycho_req *r)
{
    return tycho_gen_run(self, r);
}

void tycho_gen_app(struct tycho_gen *g, struct tycho_app *app)
{
    app->self = g;
    app->router = g->router;
    app->static_of = static_of;
    /* None when no route has options: the connection then asks nothing per request. */
    app->route_opts = g->vm.nroute_opts ? route_opts : NULL;
    app->run = run;
    app->cancel = tycho_gen_cancel;
    app->misses = g->misses;
}

unsigned tycho_gen_script_count(const struct tycho_gen *g)
{
    return g->nscripts;
}

static int on_panic(lua_State *L)
{
    tycho_log_error("Lua panic: %s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    abort();
}

/* ---- building a generation ---------------------------------------------- */

struct setup_args {
    struct tycho_gen *g;
    const char *dir;
};

/* Sets package.path so that require finds DIR/name.lua and DIR/name/init.lua first. */
static void set_package_path(lua_State *L, const char *dir)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

/* Inside lua_cpcall: libraries, the tycho module, the prelude, the handler table. */
static int setup_state(lua_State *L)
{
    struct setup_args *a = lua_touserdata(L, 1);
    struct tycho_gen *g = a->g;

    luaL_openlibs(L);
    set_package_path(L, a->dir);
    lua_pushlightuserdata(L, (void *)&tycho_key_vm);
    lua_pushlightuserdata(L, &g->vm);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, (void *)&tycho_key_handlers);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    g->handlers_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_rawset(L, LUA_REGISTRYINDEX);

    lua_pushlightuserdata(L, (void *)&tycho_key_on_start);
    lua_newtable(L);
    lua_rawset(L, LUA_REGISTRYINDEX);

    tycho_bind_app(L);                /* the module */
    tycho_bind_time(L);
    tycho_bind_ws(L);
    tycho_bind_shdict(L);
    tycho_bind_http(L);
    tycho_bind_metrics(L);
    tycho_bind_db(L);
    tycho_bind_redis(L);
    tycho_bind_crypto(L);
    tycho_bind_json(L);
    tycho_bind_upload(L);
    lua_pushcfunction(L, tycho_bind_json_body);
    g->vm.json_body_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    tycho_bind_seed(L);               /* never the same math.random in two workers or loads */
    if (luaL_loadbuffer(L, tycho_prelude_lua, sizeof(tycho_prelude_lua) - 1, "=tycho.prelude"))
        return lua_error(L);
    lua_pushvalue(L, -2);             /* app */
    tycho_bind_objects(L);            /* new_objects, req's and res's methods, form_pairs */
    lua_rawgeti(L, LUA_REGISTRYINDEX, g->handlers_ref);
    if (luaL_loadbuffer(L, tycho_web_lua, sizeof(tycho_web_lua) - 1, "=tycho.web"))
        return lua_error(L);
    lua_call(L, 7, 2);
    g->seal_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    g->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists DIR's *.lua files (not hidden), sorted by name. NULL with err on failure. */
static char **list_scripts(const char *dir, unsigned *count, char *err)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL, **grown;
    unsigned n = 0;

    if (!d) {
        snprintf(err, TYCHO_ERR_LEN, "%s: cannot open directory", dir);
        return NULL;
    }
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 5 || strcmp(e->d_name + len - 4, ".lua") != 0)
            continue;
        if (!(grown = realloc(names, sizeof(*names) * (n + 2))))
            goto oom;
        names = grown;
        if (!(names[n] = strdup(e->d_name)))
            goto oom;
        names[++n] = NULL;
    }
    closedir(d);
    if (!names && !(names = calloc(1, sizeof(*names))))
        goto oom_closed;
    qsort(names, n, sizeof(*names), by_name);
    *count = n;
    return names;
oom:
    closedir(d);
oom_closed:
    for (unsigned i = 0; i < n; i++)
        free(names[i]);
    free(names);
    snprintf(err, TYCHO_ERR_LEN, "%s: out of memory listing scripts", dir);
    return NULL;
}

/*
 * Loads one script file and runs it. Each file runs once: if an earlier
 * script already required it, it is skipped; once it has run, its result is
 * in package.loaded so that a later require does not run it again.
 */
static int run_script(lua_State *L, const char *dir, const char *name, char *err)
{
    size_t mod_len = strlen(name) - 4;
    int top = lua_gettop(L), rc = TYCHO_ERR;

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushlstring(L, name, mod_len);
    lua_rawget(L, -2);
    if (!lua_isnil(L, -1)) {
        rc = TYCHO_OK;                /* already required by an earlier script */
        goto out;
    }
    lua_pop(L, 1);
    lua_pushfstring(L, "%s/%s", dir, name);
    if (luaL_loadfile(L, lua_tostring(L, -1)) != 0 || lua_pcall(L, 0, 1, 0) != 0) {
        const char *msg = lua_tostring(L, -1);
        if (msg)
            snprintf(err, TYCHO_ERR_LEN, "%s", msg);
        else                          /* no position in it: name the file at least */
            snprintf(err, TYCHO_ERR_LEN, "%s/%s: %s", dir, name,
                     lua_istable(L, -1) ? "a table was raised (tycho.abort answers requests: "
                                          "only in a handler or middleware)"
                                        : "error object is not a string");
        goto out;
    }
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushlstring(L, name, mod_len);
    lua_insert(L, -2);
    lua_rawset(L, -4);                /* package.loaded[name] = result */
    rc = TYCHO_OK;
out:
    lua_settop(L, top);
    return rc;
}

/* A directory as the user gave it, without trailing slashes ("/" stays "/"). */
static char *clean_dir(const char *dir)
{
    char *d = strdup(dir);
    size_t len = d ? strlen(d) : 0;

    while (len > 1 && d[len - 1] == '/')
        d[--len] = '\0';
    return d;
}

/* A retired generation's last task has ended: free it from the loop, not under that caller. */
static void on_idle(struct tycho_vm *vm)
{
    struct tycho_gen *g = vm->idle_arg;

    event_active(&g->free_ev, EV_TIMEOUT, 1);
}

struct tycho_gen *tycho_gen_new(const char *dir_arg, int worker_id, char *err)
{
    struct tycho_gen *g = calloc(1, sizeof(*g));
    struct setup_args args;
    char **names = NULL, *dir = clean_dir(dir_arg);
    unsigned count = 0;

    if (g) {
        tycho_list_init(&g->vm.timers);
        tycho_list_init(&g->ring);
    }

    if (!g || !dir || !(g->dir = strdup(dir)) || !(g->router = tycho_router_new()) ||
        !(g->vm.upstreams = tycho_upstreams_new(worker_id)) ||
        !(g->vm.sqlite = tycho_sqlite_owner_new()) ||
        !(g->vm.L = luaL_newstate())) {
        snprintf(err, TYCHO_ERR_LEN, "out of memory creating a Lua state");
        goto fail;
    }
    lua_atpanic(g->vm.L, on_panic);
    g->vm.worker_id = worker_id;
    g->vm.dir = g->dir;
    g->vm.router = g->router;         /* routes may be added until the scripts have loaded */
    g->vm.idle = on_idle;
    g->vm.idle_arg = g;
    g->dispatch_ref = g->handlers_ref = g->seal_ref = g->vm.json_body_ref = LUA_NOREF;
    args.g = g;
    args.dir = dir;
    if (lua_cpcall(g->vm.L, setup_state, &args) != 0) {
        snprintf(err, TYCHO_ERR_LEN, "setting up Lua: %s", lua_tostring(g->vm.L, -1));
        goto fail;
    }
    if (!(names = list_scripts(dir, &count, err)))
        goto fail;
    for (unsigned i = 0; i < count; i++)
        if (run_script(g->vm.L, dir, names[i], err) < 0)
            goto fail;
    g->nscripts = count;
    /* From here on routes and middleware are fixed: a handler cannot add any. */
    g->vm.router = NULL;
    lua_rawgeti(g->vm.L, LUA_REGISTRYINDEX, g->seal_ref);
    if (lua_pcall(g->vm.L, 0, 2, 0) != 0) {
        snprintf(err, TYCHO_ERR_LEN, "setting up Lua: %s", lua_tostring(g->vm.L, -1));
        goto fail;
    }
    /* seal() returns #middleware and whether there is an app.not_found function. */
    g->middleware = (unsigned)lua_tointeger(g->vm.L, -2);
    g->misses = g->middleware > 0 || lua_toboolean(g->vm.L, -1);
    lua_pop(g->vm.L, 2);
    luaL_unref(g->vm.L, LUA_REGISTRYINDEX, g->seal_ref);
    g->seal_ref = LUA_NOREF;
    for (unsigned i = 0; i < count; i++)
        free(names[i]);
    free(names);
    free(dir);
    return g;
fail:
    for (unsigned i = 0; names && i < count; i++)
        free(names[i]);
    free(names);
    free(dir);
    tycho_gen_free(g);
    return NULL;
}


static void gen_free_one(struct tycho_gen *g);

/* A retired generation has no task left: out of the chain, and freed. */
static void on_free_retired(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_gen *g = arg;

    (void)fd;
    (void)what;
    if (g->vm.live_tasks > 0)
        return;                       /* the event was made active twice; the count decides */
    tycho_log_info("worker %d: generation %lu closed (its last request ended)", g->vm.worker_id,
                   g->number);
    tycho_list_remove(&g->ring);
    gen_free_one(g);
}

int tycho_gen_attach(struct tycho_gen *g, struct event_base *base)
{
    g->vm.base = base;
    event_assign(&g->free_ev, base, -1, 0, on_free_retired, g);
    tycho_upstreams_attach(g->vm.upstreams, base);
    if (tycho_sqlite_owner_attach(g->vm.sqlite, base) < 0)
        return TYCHO_ERR;
    return tycho_task_start_functions(&g->vm);
}

/* Pushes what a request's task runs: dispatch(handler, r) (none of it allocates). */
static int push_dispatch(lua_State *co, const struct tycho_req *r, void *arg)
{
    struct tycho_gen *g = arg;

    lua_rawgeti(co, LUA_REGISTRYINDEX, g->dispatch_ref);
    lua_rawgeti(co, LUA_REGISTRYINDEX, g->handlers_ref);
    lua_rawgeti(co, -1, r->match.handler_id);
    lua_remove(co, -2);
    lua_pushlightuserdata(co, (void *)r);
    return 2;
}

enum tycho_run tycho_gen_run(struct tycho_gen *g, struct tycho_req *r)
{
    return tycho_task_run(&g->vm, r, push_dispatch, g);
}

void tycho_gen_cancel(struct tycho_req *r)
{
    tycho_task_cancel(r);
}

void tycho_gen_replace(struct tycho_gen *old, struct tycho_gen *g, unsigned long old_number)
{
    /* g goes just before old: the newest first, from g round the ring. */
    tycho_list_insert_after(old->ring.prev, &g->ring);
    old->number = old_number;
    /* Its timers stop: none fires again, and runs that wait are abandoned. */
    tycho_task_retire(&old->vm);
    if (old->vm.live_tasks == 0)
        event_active(&old->free_ev, EV_TIMEOUT, 1);
}

void tycho_gen_sample(struct tycho_gen *g, unsigned round, double *lua_bytes, double *timers)
{
    struct tycho_upstreams *us[64];
    size_t n = 0;

    *lua_bytes = *timers = 0;
    if (!g)
        return;
    *timers = tycho_task_timer_count(&g->vm);
    /* The retired generations still finishing count too: their memory and connections are held. */
    for (struct tycho_list *node = &g->ring;; ) {
        const struct tycho_gen *x = tycho_container_of(node, struct tycho_gen, ring);
        lua_State *L = x->vm.L;
        *lua_bytes += (double)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + lua_gc(L, LUA_GCCOUNTB, 0);
        if (n < sizeof(us) / sizeof(us[0]))
            us[n++] = x->vm.upstreams;
        if ((node = node->next) == &g->ring)
            break;
    }
    tycho_upstreams_sample(us, n, round);
}

void tycho_gen_free(struct tycho_gen *g)
{
    if (!g)
        return;
    while (tycho_list_linked(&g->ring)) {  /* retired ones still finishing go too */
        struct tycho_gen *old = tycho_container_of(g->ring.next, struct tycho_gen, ring);
        tycho_list_remove(&old->ring);
        gen_free_one(old);
    }
    gen_free_one(g);
}

static void gen_free_one(struct tycho_gen *g)
{
    if (g->vm.base)
        event_del(&g->free_ev);
    /* Requests were cancelled by their connections' close; timers and idle tasks remain. */
    if (g->vm.L)
        tycho_task_free_all(&g->vm);
    tycho_upstreams_free(g->vm.upstreams);  /* no call is in flight any more */
    tycho_sqlite_owner_free(g->vm.sqlite);  /* waits for queries whose client left */
    if (g->vm.L)
        lua_close(g->vm.L);   /* also frees the cached coroutines, and closes app.static's mounts */
    tycho_task_free_tasks(&g->vm);    /* after lua_close: a req or res box points into a task */
    tycho_router_free(g->router);
    free(g->vm.statics);
    free(g->vm.route_opts);
    free(g->dir);
    free(g);
}
