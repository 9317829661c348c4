/*
 * script.c: script generations and the Lua boundary of the request path.
 *
 * A generation is built inside lua_cpcall, so an out-of-memory raise during
 * set-up becomes an error, never a panic. Scripts load with lua_pcall (the
 * only pcall: load time). Requests run as coroutines kept in a small cache:
 * a coroutine that returned normally is empty and is reused; one that died
 * in an error or yielded is dropped (unref) and the GC takes it.
 */
#include "script.h"
#include "bind.h"
#include "http.h"
#include "log.h"
#include "router.h"

#include <dirent.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prelude.h" /* generated from prelude.lua: tycho_prelude_lua[] */

#define THREAD_CACHE_MAX 256

const char tycho_key_gen = 0;
const char tycho_key_handlers = 0;

struct cached_thread {
    lua_State *co;   /* borrowed: anchored by ref */
    int ref;         /* registry ref */
};

struct tycho_gen {
    lua_State *L;                  /* owned */
    struct tycho_router *router;   /* owned */
    int worker_id;
    int dispatch_ref;              /* the prelude's dispatch function */
    int seal_ref;                  /* the prelude's seal(): no more middleware */
    int loaded;                    /* the scripts have loaded: no more routes */
    int handlers_ref;              /* table: handler id -> function */
    unsigned nscripts;
    struct cached_thread threads[THREAD_CACHE_MAX]; /* idle coroutines */
    unsigned nthreads;
};

struct tycho_router *tycho_gen_router_of(lua_State *L)
{
    struct tycho_gen *g;

    lua_pushlightuserdata(L, (void *)&tycho_key_gen);
    lua_rawget(L, LUA_REGISTRYINDEX);
    g = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return g->loaded ? NULL : g->router;
}

const struct tycho_router *tycho_gen_router(const struct tycho_gen *g)
{
    return g->router;
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
    lua_pushlightuserdata(L, (void *)&tycho_key_gen);
    lua_pushlightuserdata(L, g);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, (void *)&tycho_key_handlers);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    g->handlers_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_rawset(L, LUA_REGISTRYINDEX);

    tycho_bind_app(L);                /* the module */
    if (luaL_loadbuffer(L, tycho_prelude_lua, sizeof(tycho_prelude_lua) - 1, "=tycho.prelude"))
        return lua_error(L);
    lua_pushvalue(L, -2);             /* app */
    tycho_bind_objects(L);            /* new_objects */
    lua_call(L, 2, 2);
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
        snprintf(err, TYCHO_ERR_LEN, "%s", msg ? msg : "error object is not a string");
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

struct tycho_gen *tycho_gen_new(const char *dir_arg, int worker_id, char *err)
{
    struct tycho_gen *g = calloc(1, sizeof(*g));
    struct setup_args args;
    char **names = NULL, *dir = clean_dir(dir_arg);
    unsigned count = 0;

    if (!g || !dir || !(g->router = tycho_router_new()) || !(g->L = luaL_newstate())) {
        snprintf(err, TYCHO_ERR_LEN, "out of memory creating a Lua state");
        goto fail;
    }
    lua_atpanic(g->L, on_panic);
    g->worker_id = worker_id;
    g->dispatch_ref = g->handlers_ref = g->seal_ref = LUA_NOREF;
    args.g = g;
    args.dir = dir;
    if (lua_cpcall(g->L, setup_state, &args) != 0) {
        snprintf(err, TYCHO_ERR_LEN, "setting up Lua: %s", lua_tostring(g->L, -1));
        goto fail;
    }
    if (!(names = list_scripts(dir, &count, err)))
        goto fail;
    for (unsigned i = 0; i < count; i++)
        if (run_script(g->L, dir, names[i], err) < 0)
            goto fail;
    g->nscripts = count;
    /* From here on routes and middleware are fixed: a handler cannot add any. */
    g->loaded = 1;
    lua_rawgeti(g->L, LUA_REGISTRYINDEX, g->seal_ref);
    if (lua_pcall(g->L, 0, 0, 0) != 0) {
        snprintf(err, TYCHO_ERR_LEN, "setting up Lua: %s", lua_tostring(g->L, -1));
        goto fail;
    }
    luaL_unref(g->L, LUA_REGISTRYINDEX, g->seal_ref);
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

void tycho_gen_free(struct tycho_gen *g)
{
    if (!g)
        return;
    if (g->L)
        lua_close(g->L);   /* also frees the cached coroutines */
    tycho_router_free(g->router);
    free(g);
}

/* ---- running a request --------------------------------------------------- */

/* Inside lua_cpcall: a new coroutine, anchored by a registry ref. */
static int new_thread(lua_State *L)
{
    struct cached_thread *t = lua_touserdata(L, 1);

    t->co = lua_newthread(L);
    t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static int get_thread(struct tycho_gen *g, struct cached_thread *t)
{
    if (g->nthreads > 0) {
        *t = g->threads[--g->nthreads];
        return TYCHO_OK;
    }
    return lua_cpcall(g->L, new_thread, t) == 0 ? TYCHO_OK : TYCHO_ERR;
}

static void drop_thread(struct tycho_gen *g, struct cached_thread *t)
{
    luaL_unref(g->L, LUA_REGISTRYINDEX, t->ref);
    t->ref = LUA_NOREF;
}

static void keep_thread(struct tycho_gen *g, struct cached_thread *t)
{
    lua_settop(t->co, 0);
    if (g->nthreads < THREAD_CACHE_MAX)
        g->threads[g->nthreads++] = *t;
    else
        drop_thread(g, t);
}

struct error_args {
    struct tycho_gen *g;
    struct tycho_req *r;
    lua_State *co;
    const char *what;  /* NULL: the error is on co's stack */
};

/* Inside lua_cpcall: logs the error with the coroutine's traceback. */
static int log_error(lua_State *L)
{
    struct error_args *a = lua_touserdata(L, 1);
    const char *msg = a->what;

    if (!msg) {
        msg = lua_tostring(a->co, -1);
        if (!msg)
            msg = lua_pushfstring(L, "(error object is a %s value)",
                                  luaL_typename(a->co, -1));
    }
    luaL_traceback(L, a->co, msg, 0);
    tycho_log_error("worker %d: %s %.*s: %s", a->g->worker_id, a->r->method,
                    (int)a->r->path_len, a->r->path, lua_tostring(L, -1));
    return 0;
}

/* Turns r into the generic 500. */
static void fail_request(struct tycho_gen *g, struct tycho_req *r, lua_State *co,
                         const char *what)
{
    struct error_args a = {g, r, co, what};

    if (lua_cpcall(g->L, log_error, &a) != 0) {
        tycho_log_error("worker %d: %s %.*s: Lua error (no memory to format it)", g->worker_id,
                        r->method, (int)r->path_len, r->path);
        lua_pop(g->L, 1);
    }
    r->status = 500;
    r->res_flags = 0;
    r->res_headers_len = 0;
    r->res_body = "Internal Server Error\n";
    r->res_body_len = strlen(r->res_body);
}

/* A normal return: a string result is the body, unless the handler already sent one. */
static void collect_result(struct tycho_gen *g, struct tycho_req *r, struct cached_thread *t)
{
    lua_State *co = t->co;
    int type = lua_gettop(co) > 0 ? lua_type(co, 1) : LUA_TNIL;

    if (type == LUA_TSTRING && !(r->res_flags & TYCHO_RES_SENT)) {
        size_t len;
        const char *s = lua_tolstring(co, 1, &len);
        char *body = len ? tycho_arena_alloc(&r->arena, len) : NULL;
        if (len && !body) {
            fail_request(g, r, co, "out of memory copying the response body");
        } else {
            if (len)
                memcpy(body, s, len);
            r->res_body = body;
            r->res_body_len = len;
            r->res_flags |= TYCHO_RES_SENT;
        }
    } else if (type != LUA_TNIL && type != LUA_TSTRING) {
        char what[128];
        snprintf(what, sizeof(what),
                 "handler returned a %s value; return a string, or use res:send / res:json",
                 lua_typename(co, type));
        fail_request(g, r, co, what);
    }
    keep_thread(g, t);
}

void tycho_gen_run(struct tycho_gen *g, struct tycho_req *r)
{
    struct cached_thread t;
    lua_State *co;
    int rc;

    if (get_thread(g, &t) < 0) {
        lua_pop(g->L, 1);
        tycho_log_error("worker %d: out of memory starting a request coroutine", g->worker_id);
        r->status = 503;
        r->res_body = "Service Unavailable\n";
        r->res_body_len = strlen(r->res_body);
        return;
    }
    co = t.co;
    /* None of these pushes allocate, so none can raise outside a protected call. */
    lua_rawgeti(co, LUA_REGISTRYINDEX, g->dispatch_ref);
    lua_rawgeti(co, LUA_REGISTRYINDEX, g->handlers_ref);
    lua_rawgeti(co, -1, r->match.handler_id);
    lua_remove(co, -2);
    lua_pushlightuserdata(co, r);
    rc = lua_resume(co, 2);
    /* A stashed req/res must not reach r any more. */
    tycho_bind_release(g->L, r);
    if (rc == 0) {
        collect_result(g, r, &t);
        return;
    }
    fail_request(g, r, co,
                 rc == LUA_YIELD ? "handler yielded: coroutine.yield cannot suspend a request"
                                 : NULL);
    drop_thread(g, &t);
}
