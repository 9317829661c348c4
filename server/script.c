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
#include "metrics.h"
#include "router.h"
#include "upstream.h"

#include <dirent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdbool.h>
#include <sys/time.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prelude_lua.h" /* generated from prelude.lua: tycho_prelude_lua[] */

#define THREAD_CACHE_MAX 256

const char tycho_key_gen = 0;
const char tycho_key_handlers = 0;
const char tycho_key_on_start = 0;

/* An app.static route: conn.c serves it without Lua while no middleware is registered. */
struct static_route {
    int handler_id;
    struct tycho_static *mount;    /* borrowed: lives in a userdata of L until lua_close */
};

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
    struct event_base *base;       /* borrowed: the worker's loop; NULL for main's scratch */
    struct tycho_task *current;    /* the task whose coroutine runs now, or NULL */
    struct tycho_task *free_tasks; /* owned free list */
    struct tycho_timer *timers;    /* owned: live timers */
    struct tycho_upstreams *upstreams; /* owned: backend pools (tycho.http) */
    unsigned live_tasks;           /* tasks under way: requests and timer runs */
    bool retired;                  /* a newer generation serves: free this one once idle */
    unsigned long number;          /* its generation number, for the log once retired */
    struct tycho_gen *older, *newer; /* retired generations still finishing, newest first */
    struct event free_ev;          /* frees a retired, idle generation from the loop */
    char *dir;                     /* owned: the script directory, as given */
    struct static_route *statics;  /* owned array: the app.static routes */
    unsigned nstatics;
    unsigned middleware;           /* app.use functions registered (known once loaded) */
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

lua_State *tycho_gen_lua(struct tycho_gen *g)
{
    return g->L;
}

const struct tycho_router *tycho_gen_router(const struct tycho_gen *g)
{
    return g->router;
}

static struct tycho_gen *gen_of(lua_State *L);

const char *tycho_gen_dir_of(lua_State *L)
{
    return gen_of(L)->dir;
}

void tycho_gen_add_static(lua_State *L, int handler_id, struct tycho_static *mount)
{
    struct tycho_gen *g = gen_of(L);
    struct static_route *grown = realloc(g->statics, sizeof(*grown) * (g->nstatics + 1));

    if (!grown)
        return;                       /* the route still works, through its Lua handler */
    g->statics = grown;
    g->statics[g->nstatics].handler_id = handler_id;
    g->statics[g->nstatics].mount = mount;
    g->nstatics++;
}

struct tycho_static *tycho_gen_static(const struct tycho_gen *g, int handler_id)
{
    if (g->middleware > 0)
        return NULL;                  /* the middleware must run: the Lua handler serves */
    for (unsigned i = 0; i < g->nstatics; i++)
        if (g->statics[i].handler_id == handler_id)
            return g->statics[i].mount;
    return NULL;
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

    lua_pushlightuserdata(L, (void *)&tycho_key_on_start);
    lua_newtable(L);
    lua_rawset(L, LUA_REGISTRYINDEX);

    tycho_bind_app(L);                /* the module */
    tycho_bind_time(L);
    tycho_bind_shdict(L);
    tycho_bind_http(L);
    tycho_bind_metrics(L);
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

    if (!g || !dir || !(g->dir = strdup(dir)) || !(g->router = tycho_router_new()) ||
        !(g->upstreams = tycho_upstreams_new(worker_id)) ||
        !(g->L = luaL_newstate())) {
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
    if (lua_pcall(g->L, 0, 1, 0) != 0) {
        snprintf(err, TYCHO_ERR_LEN, "setting up Lua: %s", lua_tostring(g->L, -1));
        goto fail;
    }
    g->middleware = (unsigned)lua_tointeger(g->L, -1);   /* seal() returns #middleware */
    lua_pop(g->L, 1);
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


/* ---- coroutines ------------------------------------------------------------ */

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
    struct tycho_req *r;   /* the request, or NULL for a timer */
    lua_State *co;
    const char *what;      /* NULL: the error is on co's stack */
};

/* Inside lua_cpcall: logs the error with the coroutine's traceback. */
static int log_error_protected(lua_State *L)
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
    if (a->r)
        tycho_log_error("worker %d: %s %.*s [request %.*s]: %s", a->g->worker_id, a->r->method,
                        (int)a->r->path_len, a->r->path, (int)a->r->id_len,
                        a->r->id ? a->r->id : "", lua_tostring(L, -1));
    else
        tycho_log_error("worker %d: timer: %s", a->g->worker_id, lua_tostring(L, -1));
    return 0;
}

struct tycho_task;

/* Logs a Lua error of task t (the message on co's stack, or what) with its traceback. */
static void log_error(struct tycho_gen *g, struct tycho_task *t, lua_State *co, const char *what);

/* ---- tasks: coroutines the worker resumes ------------------------------- */

/*
 * A task is one coroutine run on behalf of a request or a timer. It may
 * yield inside tycho.sleep; the wake event resumes it. Tasks come from a
 * per-generation free list, so a steady load allocates none.
 */
struct tycho_task {
    struct tycho_task *next_free;
    struct tycho_gen *g;
    struct cached_thread t;        /* the coroutine */
    struct tycho_req *r;           /* a request's task; NULL for a timer's */
    struct tycho_timer *timer;     /* a timer's task; NULL for a request's */
    bool sleeping;                 /* yielded in tycho.sleep; wake is armed */
    struct tycho_wait *wait;       /* yielded in tycho_script_wait; its work is under way */
    struct timeval sleep_tv;       /* what tycho.sleep asked for, armed once the yield is done */
    struct event wake;             /* assigned once, when the task is made */
};

/* What tycho.sleep and tycho_script_wait yield: their addresses tell step() why. */
static const char sleep_token = 0;
static const char wait_token = 0;

struct tycho_timer {
    struct tycho_timer *prev, *next; /* the generation's list */
    struct tycho_gen *g;
    struct event ev;               /* the tick */
    struct timeval every;          /* period; zero for a one-shot timer */
    int fn_ref;                    /* registry ref of the function */
    bool running;                  /* a run is in progress (it may sleep) */
    struct tycho_task *task;       /* the run's task while it is in progress */
    bool cancelled;
    void **box;                    /* the Lua handle's pointer slot, or NULL */
    int box_ref;                   /* keeps the handle alive while the timer is: box stays valid */
};

static void on_wake(evutil_socket_t fd, short what, void *arg);

static void log_error(struct tycho_gen *g, struct tycho_task *t, lua_State *co, const char *what)
{
    struct error_args a = {g, t->r, co, what};

    tycho_metrics_lua_error(g->worker_id, !t->r);
    if (lua_cpcall(g->L, log_error_protected, &a) != 0) {
        tycho_log_error("worker %d: Lua error (no memory to format it)", g->worker_id);
        lua_pop(g->L, 1);
    }
}

static struct tycho_task *task_get(struct tycho_gen *g)
{
    struct tycho_task *t = g->free_tasks;

    if (t) {
        g->free_tasks = t->next_free;
    } else {
        if (!(t = calloc(1, sizeof(*t))))
            return NULL;
        t->g = g;
        if (g->base)
            event_assign(&t->wake, g->base, -1, 0, on_wake, t);
    }
    t->next_free = NULL;
    if (get_thread(g, &t->t) < 0) {
        lua_pop(g->L, 1);
        t->next_free = g->free_tasks;
        g->free_tasks = t;
        return NULL;
    }
    g->live_tasks++;
    return t;
}

static void task_put(struct tycho_gen *g, struct tycho_task *t)
{
    if (g->base)
        event_del(&t->wake);          /* never back on the list with a wake-up pending */
    t->r = NULL;
    t->timer = NULL;
    t->sleeping = false;
    t->wait = NULL;
    t->next_free = g->free_tasks;
    g->free_tasks = t;
    /* A retired generation's last task: free it from the loop, not under this caller. */
    if (--g->live_tasks == 0 && g->retired)
        event_active(&g->free_ev, EV_TIMEOUT, 1);
}

/* Turns r into the generic 500. */
static void fail_request(struct tycho_req *r)
{
    r->status = 500;
    r->res_flags = 0;
    r->res_headers_len = 0;
    r->res_body = "Internal Server Error\n";
    r->res_body_len = strlen(r->res_body);
}

/* A normal return of a request's coroutine: a string result is the body. */
static void collect_result(struct tycho_gen *g, struct tycho_task *t)
{
    struct tycho_req *r = t->r;
    lua_State *co = t->t.co;
    int type = lua_gettop(co) > 0 ? lua_type(co, 1) : LUA_TNIL;

    if (type == LUA_TSTRING && !(r->res_flags & TYCHO_RES_SENT)) {
        size_t len;
        const char *s = lua_tolstring(co, 1, &len);
        char *body = len ? tycho_arena_alloc(&r->arena, len) : NULL;
        if (len && !body) {
            log_error(g, t, co, "out of memory copying the response body");
            fail_request(r);
            return;
        }
        if (len)
            memcpy(body, s, len);
        r->res_body = body;
        r->res_body_len = len;
        r->res_flags |= TYCHO_RES_SENT;
    } else if (type != LUA_TNIL && type != LUA_TSTRING) {
        char what[128];
        snprintf(what, sizeof(what),
                 "handler returned a %s value; return a string, or use res:send / res:json",
                 lua_typename(co, type));
        log_error(g, t, co, what);
        fail_request(r);
    }
}

/*
 * Resumes t's coroutine with nargs arguments on its stack. Returns PENDING
 * while it sleeps; otherwise it has ended (returned or failed), its result
 * is collected, the coroutine is kept or dropped and the caller puts t back.
 */
static enum tycho_run step(struct tycho_gen *g, struct tycho_task *t, int nargs)
{
    lua_State *co = t->t.co;
    struct tycho_task *outer = g->current;
    int rc;

    g->current = t;
    rc = lua_resume(co, nargs);
    g->current = outer;
    /*
     * tycho.sleep yields its token; the wake-up is armed only now that the
     * yield has really happened (a yield across a C call fails and must not
     * leave a wake-up behind).
     */
    if (rc == LUA_YIELD && lua_gettop(co) == 1 && lua_touserdata(co, 1) == &sleep_token) {
        lua_settop(co, 0);
        if (event_add(&t->wake, &t->sleep_tv) == 0) {
            t->sleeping = true;
            return TYCHO_RUN_PENDING;
        }
        rc = LUA_ERRRUN;
        lua_pushliteral(co, "tycho.sleep: cannot arm the timer");
    }
    /* Likewise a wait's work starts once the yield is done; it wakes t when finished. */
    if (rc == LUA_YIELD && lua_gettop(co) == 2 && lua_touserdata(co, 1) == &wait_token) {
        t->wait = lua_touserdata(co, 2);
        t->wait->task_ = t;
        lua_settop(co, 0);
        t->wait->start(t->wait);
        return TYCHO_RUN_PENDING;
    }
    if (t->r)
        tycho_bind_release(g->L, t->r);  /* a stashed req/res must not reach r any more */
    if (rc == 0) {
        if (t->r)
            collect_result(g, t);
        keep_thread(g, &t->t);
        return TYCHO_RUN_DONE;
    }
    log_error(g, t, co,
              rc == LUA_YIELD ? "coroutine.yield cannot suspend a handler or a timer "
                                "(use tycho.sleep to wait)"
                              : NULL);
    if (t->r)
        fail_request(t->r);
    drop_thread(g, &t->t);
    return TYCHO_RUN_DONE;
}

static void timer_done(struct tycho_gen *g, struct tycho_timer *tm);

/* A sleeping task's time is up, or its wait is over: resume it, and finish its request or timer if it ends. */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_task *t = arg;
    struct tycho_gen *g = t->g;
    struct tycho_req *r = t->r;
    struct tycho_timer *tm = t->timer;

    (void)fd;
    (void)what;
    t->sleeping = false;
    t->wait = NULL;
    if (lua_status(t->t.co) != LUA_YIELD)
        return;                       /* cannot happen: only a sleeping task is woken */
    if (step(g, t, 0) == TYCHO_RUN_PENDING)
        return;
    task_put(g, t);
    if (r) {
        r->_task = NULL;
        r->on_done(r);
    } else if (tm) {
        tm->task = NULL;
        timer_done(g, tm);
    }
}

enum tycho_run tycho_gen_run(struct tycho_gen *g, struct tycho_req *r)
{
    struct tycho_task *t = task_get(g);
    lua_State *co;

    if (!t) {
        tycho_log_error("worker %d: out of memory starting a request coroutine", g->worker_id);
        r->status = 503;
        r->res_body = "Service Unavailable\n";
        r->res_body_len = strlen(r->res_body);
        return TYCHO_RUN_DONE;
    }
    t->r = r;
    r->_task = t;
    co = t->t.co;
    /* None of these pushes allocate, so none can raise outside a protected call. */
    lua_rawgeti(co, LUA_REGISTRYINDEX, g->dispatch_ref);
    lua_rawgeti(co, LUA_REGISTRYINDEX, g->handlers_ref);
    lua_rawgeti(co, -1, r->match.handler_id);
    lua_remove(co, -2);
    lua_pushlightuserdata(co, r);
    if (step(g, t, 2) == TYCHO_RUN_PENDING)
        return TYCHO_RUN_PENDING;
    r->_task = NULL;
    task_put(g, t);
    return TYCHO_RUN_DONE;
}

void tycho_gen_cancel(struct tycho_req *r)
{
    struct tycho_task *t = r->_task;
    struct tycho_gen *g;

    if (!t)
        return;
    g = t->g;                         /* the request's generation, maybe a retired one */
    event_del(&t->wake);              /* a sleep's timer, or a wait's wake-up already due */
    if (t->wait)
        t->wait->cancel(t->wait);
    tycho_bind_release(g->L, r);
    drop_thread(g, &t->t);            /* never resumed; the GC takes the coroutine */
    r->_task = NULL;
    task_put(g, t);
}

/* ---- sleep and timers (called by bind_time.c) ---------------------------- */

static struct tycho_gen *gen_of(lua_State *L)
{
    struct tycho_gen *g;

    lua_pushlightuserdata(L, (void *)&tycho_key_gen);
    lua_rawget(L, LUA_REGISTRYINDEX);
    g = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return g;
}

const char *tycho_script_wait_refusal(lua_State *L)
{
    struct tycho_gen *g = gen_of(L);
    struct tycho_task *t = g->current;

    if (!g->base || !t)
        return "only in a handler, middleware or timer, not while the scripts load";
    if (t->t.co != L)
        return "not inside a coroutine the script made itself";
    return NULL;
}

int tycho_script_sleep(lua_State *L, double seconds)
{
    struct tycho_gen *g = gen_of(L);
    struct tycho_task *t = g->current;
    struct timeval tv;

    const char *refusal = tycho_script_wait_refusal(L);

    if (refusal)
        return luaL_error(L, "tycho.sleep: %s", refusal);
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    t->sleep_tv = tv;
    lua_pushlightuserdata(L, (void *)&sleep_token);
    return lua_yield(L, 1);           /* step() arms the wake-up once the yield is done */
}

int tycho_script_wait(lua_State *L, struct tycho_wait *w, const char *fn)
{
    const char *refusal = tycho_script_wait_refusal(L);

    if (refusal)
        return luaL_error(L, "%s: %s", fn, refusal);
    lua_pushlightuserdata(L, (void *)&wait_token);
    lua_pushlightuserdata(L, w);
    return lua_yield(L, 2);           /* step() starts w once the yield is done */
}

void tycho_script_wake(struct tycho_wait *w)
{
    struct tycho_task *t = w->task_;

    event_active(&t->wake, EV_TIMEOUT, 1);  /* resumed from the loop, never from inside w's work */
}

struct tycho_upstreams *tycho_script_upstreams(lua_State *L)
{
    return gen_of(L)->upstreams;
}

double tycho_script_now(lua_State *L)
{
    struct tycho_gen *g = gen_of(L);
    struct timeval now;

    if (!g->base || event_base_gettimeofday_cached(g->base, &now) < 0)
        gettimeofday(&now, NULL);
    return (double)now.tv_sec + (double)now.tv_usec / 1e6;
}

int tycho_script_worker_id(lua_State *L)
{
    return gen_of(L)->worker_id;
}

static void on_tick(evutil_socket_t fd, short what, void *arg);

static void timer_free(struct tycho_gen *g, struct tycho_timer *tm)
{
    event_del(&tm->ev);
    if (tm->prev)
        tm->prev->next = tm->next;
    else
        g->timers = tm->next;
    if (tm->next)
        tm->next->prev = tm->prev;
    if (tm->box)
        *tm->box = NULL;              /* the Lua handle now says "finished" */
    luaL_unref(g->L, LUA_REGISTRYINDEX, tm->box_ref);
    luaL_unref(g->L, LUA_REGISTRYINDEX, tm->fn_ref);
    free(tm);
}

/* A run of tm has ended: a one-shot or cancelled timer goes away. */
static void timer_done(struct tycho_gen *g, struct tycho_timer *tm)
{
    tm->running = false;
    if (tm->cancelled || (!tm->every.tv_sec && !tm->every.tv_usec))
        timer_free(g, tm);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_timer *tm = arg;
    struct tycho_gen *g = tm->g;
    struct tycho_task *t;

    (void)fd;
    (void)what;
    if (tm->running)
        return;                       /* the previous run still sleeps: skip this tick */
    if (!(t = task_get(g))) {
        tycho_log_error("worker %d: out of memory running a timer", g->worker_id);
        return;
    }
    t->timer = tm;
    tm->running = true;
    tm->task = t;
    lua_rawgeti(t->t.co, LUA_REGISTRYINDEX, tm->fn_ref);
    if (step(g, t, 0) == TYCHO_RUN_PENDING)
        return;
    tm->task = NULL;
    task_put(g, t);
    timer_done(g, tm);
}

void *tycho_script_timer(lua_State *L, double delay, double every, int fn_idx, int box_idx)
{
    struct tycho_gen *g = gen_of(L);
    struct tycho_timer *tm;
    struct timeval first;
    int fn_ref, box_ref;

    if (!g->base)
        luaL_error(L, "tycho.timer: timers start in workers: create them in a handler, a "
                      "timer or app.on_worker_start, not while the scripts load");
    if (g->retired)
        return NULL;                  /* old code finishing after a reload: the timer never runs */
    /* The refs first: they may raise, and nothing is held yet. */
    lua_pushvalue(L, fn_idx);
    fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, box_idx);
    box_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (!(tm = calloc(1, sizeof(*tm)))) {
        luaL_unref(L, LUA_REGISTRYINDEX, fn_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, box_ref);
        luaL_error(L, "tycho.timer: out of memory");
    }
    tm->fn_ref = fn_ref;
    tm->box_ref = box_ref;
    tm->box = lua_touserdata(L, box_idx);
    tm->g = g;
    tm->every.tv_sec = (time_t)every;
    tm->every.tv_usec = (suseconds_t)((every - (double)tm->every.tv_sec) * 1e6);
    first.tv_sec = (time_t)delay;
    first.tv_usec = (suseconds_t)((delay - (double)first.tv_sec) * 1e6);
    /* A repeating timer's first tick is after `every`; libevent repeats it from there. */
    event_assign(&tm->ev, g->base, -1, every > 0 ? EV_PERSIST : 0, on_tick, tm);
    if (event_add(&tm->ev, every > 0 ? &tm->every : &first) < 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, tm->fn_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, tm->box_ref);
        free(tm);
        luaL_error(L, "tycho.timer: cannot arm the timer");
    }
    tm->next = g->timers;
    if (g->timers)
        g->timers->prev = tm;
    g->timers = tm;
    return tm;
}

void tycho_script_timer_cancel(void *timer)
{
    struct tycho_timer *tm = timer;

    tm->cancelled = true;
    event_del(&tm->ev);
    if (!tm->running)
        timer_free(tm->g, tm);
}

/* Runs each function given to app.on_worker_start, as a timer firing now. */
static int start_worker_functions(struct tycho_gen *g)
{
    lua_State *L = g->L;
    int n, rc = TYCHO_OK;

    lua_pushlightuserdata(L, (void *)&tycho_key_on_start);
    lua_rawget(L, LUA_REGISTRYINDEX);
    n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 0;
    for (int i = 1; i <= n && rc == TYCHO_OK; i++) {
        struct tycho_timer *tm = calloc(1, sizeof(*tm));
        if (!tm) {
            rc = TYCHO_ERR;
            break;
        }
        lua_rawgeti(L, -1, i);
        tm->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        tm->box_ref = LUA_NOREF;
        tm->g = g;
        tm->next = g->timers;
        if (g->timers)
            g->timers->prev = tm;
        g->timers = tm;
        event_assign(&tm->ev, g->base, -1, 0, on_tick, tm);
        event_active(&tm->ev, EV_TIMEOUT, 0);
    }
    lua_pop(L, 1);
    return rc;
}

static void gen_free_one(struct tycho_gen *g);

/* A retired generation has no task left: out of the chain, and freed. */
static void on_free_retired(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_gen *g = arg;

    (void)fd;
    (void)what;
    if (g->live_tasks > 0)
        return;                       /* the event was made active twice; the count decides */
    tycho_log_info("worker %d: generation %lu closed (its last request ended)", g->worker_id,
                   g->number);
    if (g->newer)
        g->newer->older = g->older;
    if (g->older)
        g->older->newer = g->newer;
    gen_free_one(g);
}

int tycho_gen_attach(struct tycho_gen *g, struct event_base *base)
{
    g->base = base;
    event_assign(&g->free_ev, base, -1, 0, on_free_retired, g);
    tycho_upstreams_attach(g->upstreams, base);
    return start_worker_functions(g);
}

/*
 * A timer run that waits (in tycho.sleep or a call) is abandoned like a
 * request whose client left: never resumed, its call stopped. A timer loop
 * (`while true do ... tycho.sleep(1) end`) would otherwise keep its retired
 * generation, and the old code, alive for ever.
 */
static void timer_abandon_run(struct tycho_gen *g, struct tycho_timer *tm)
{
    struct tycho_task *t = tm->task;

    event_del(&t->wake);
    if (t->wait)
        t->wait->cancel(t->wait);
    drop_thread(g, &t->t);
    tm->task = NULL;
    tm->running = false;
    task_put(g, t);
}

void tycho_gen_replace(struct tycho_gen *old, struct tycho_gen *g, unsigned long old_number)
{
    struct tycho_timer *tm, *next;

    g->older = old;
    old->newer = g;
    old->retired = true;
    old->number = old_number;
    /* Its timers stop: none fires again, and runs that wait are abandoned. */
    for (tm = old->timers; tm; tm = next) {
        next = tm->next;
        if (tm->running && tm->task)
            timer_abandon_run(old, tm);
        tycho_script_timer_cancel(tm);
    }
    if (old->live_tasks == 0)
        event_active(&old->free_ev, EV_TIMEOUT, 1);
}

void tycho_gen_sample(struct tycho_gen *g, unsigned round, double *lua_bytes, double *timers)
{
    struct tycho_upstreams *us[64];
    size_t n = 0;

    *lua_bytes = *timers = 0;
    if (!g)
        return;
    for (struct tycho_timer *tm = g->timers; tm; tm = tm->next)
        *timers += !tm->cancelled;
    /* The retired generations still finishing count too: their memory and connections are held. */
    for (struct tycho_gen *x = g; x; x = x->older) {
        *lua_bytes += (double)lua_gc(x->L, LUA_GCCOUNT, 0) * 1024 + lua_gc(x->L, LUA_GCCOUNTB, 0);
        if (n < sizeof(us) / sizeof(us[0]))
            us[n++] = x->upstreams;
    }
    tycho_upstreams_sample(us, n, round);
}

void tycho_gen_free(struct tycho_gen *g)
{
    if (!g)
        return;
    while (g->older) {                /* retired ones still finishing go too */
        struct tycho_gen *old = g->older;
        g->older = old->older;
        gen_free_one(old);
    }
    gen_free_one(g);
}

static void gen_free_one(struct tycho_gen *g)
{
    if (g->base)
        event_del(&g->free_ev);
    /* Requests were cancelled by their connections' close; timers and idle tasks remain. */
    while (g->timers) {
        struct tycho_timer *tm = g->timers;
        g->timers = tm->next;
        event_del(&tm->ev);
        if (tm->task) {               /* a run that waits: its wake-up and its work go too */
            event_del(&tm->task->wake);
            if (tm->task->wait)
                tm->task->wait->cancel(tm->task->wait);
            free(tm->task);
        }
        free(tm);                     /* its refs go with the state */
    }
    while (g->free_tasks) {
        struct tycho_task *t = g->free_tasks;
        g->free_tasks = t->next_free;
        free(t);
    }
    tycho_upstreams_free(g->upstreams);  /* no call is in flight any more */
    if (g->L)
        lua_close(g->L);   /* also frees the cached coroutines, and closes app.static's mounts */
    tycho_router_free(g->router);
    free(g->statics);
    free(g->dir);
    free(g);
}
