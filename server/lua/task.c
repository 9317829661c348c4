/*
 * task.c: the coroutines a worker runs (task.h). Coroutines are kept in a
 * small cache: one that returned normally is empty and is reused; one that
 * died in an error, yielded for good or was abandoned is dropped (unref) and
 * the GC takes it. Tasks come from a per-vm free list, so a steady load
 * allocates none.
 */
#include "lua/task.h"
#include "core/log.h"
#include "core/tycho.h"
#include "core/metrics.h"
#include "http/http.h"

#include <assert.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <lauxlib.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

/*
 * A task is one coroutine run on behalf of a request or a timer. It may
 * yield inside tycho.sleep or a wait; the wake event resumes it.
 */
struct tycho_task {
    struct tycho_task *next_free;
    struct tycho_vm *vm;
    struct tycho_thread t;         /* the coroutine */
    struct tycho_req *r;           /* a request's task; NULL for a timer's */
    struct tycho_timer *timer;     /* a timer's task; NULL for a request's */
    struct tycho_req_objects objects; /* a request's req and res objects (bind_req.c) */
    struct tycho_defer *defers;    /* what must be let go of when it ends (tycho_task_defer) */
    bool sleeping;                 /* yielded in tycho.sleep; wake is armed */
    bool yielded;                  /* it has waited: only then can wake be armed */
    struct tycho_wait *wait;       /* yielded in tycho_task_wait; its work is under way */
    struct timeval sleep_tv;       /* what tycho.sleep asked for, armed once the yield is done */
    struct event wake;             /* assigned once, when the task is made */
};

/* What tycho.sleep and tycho_task_wait yield: their addresses tell step() why. */
static const char sleep_token = 0;
static const char wait_token = 0;

struct tycho_timer {
    struct tycho_list link;        /* in vm->timers */
    struct tycho_vm *vm;
    struct event ev;               /* the tick */
    struct timeval every;          /* period; zero for a one-shot timer */
    int fn_ref;                    /* registry ref of the function */
    bool running;                  /* a run is in progress (it may wait) */
    struct tycho_task *task;       /* the run's task while it is in progress */
    bool cancelled;
    void **box;                    /* the Lua handle's pointer slot, or NULL */
    int box_ref;                   /* keeps the handle alive while the timer is: box stays valid */
};

/* ---- where code may be called ---------------------------------------------- */

const char *tycho_task_refusal(lua_State *L, enum tycho_place place)
{
    struct tycho_vm *vm = tycho_vm_of(L);

    switch (place) {
    case TYCHO_PLACE_LOAD:
        return vm->router ? NULL : "only while the scripts load, not in a handler";
    case TYCHO_PLACE_WORKER:
        return vm->base && !vm->router
                   ? NULL
                   : "only in a worker (a handler, a timer or app.on_worker_start), not while "
                     "the scripts load";
    case TYCHO_PLACE_WAIT:
        if (!vm->base || !vm->current)
            return "only in a handler, middleware or timer, not while the scripts load";
        if (vm->current->t.co != L)
            return "not inside a coroutine the script made itself";
        return NULL;
    }
    return "not here";
}

void tycho_task_check(lua_State *L, const char *fn, enum tycho_place place)
{
    const char *refusal = tycho_task_refusal(L, place);

    if (refusal)
        luaL_error(L, "%s: %s", fn, refusal);
}

/* ---- the coroutine cache ------------------------------------------------------ */

/* Inside lua_cpcall: a new coroutine, anchored by a registry ref. */
static int new_thread(lua_State *L)
{
    struct tycho_thread *t = lua_touserdata(L, 1);

    t->co = lua_newthread(L);
    t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static int get_thread(struct tycho_vm *vm, struct tycho_thread *t)
{
    if (vm->nthreads > 0) {
        *t = vm->threads[--vm->nthreads];
        return TYCHO_OK;
    }
    return lua_cpcall(vm->L, new_thread, t) == 0 ? TYCHO_OK : TYCHO_ERR;
}

static void drop_thread(struct tycho_vm *vm, struct tycho_thread *t)
{
    luaL_unref(vm->L, LUA_REGISTRYINDEX, t->ref);
    t->ref = LUA_NOREF;
}

static void keep_thread(struct tycho_vm *vm, struct tycho_thread *t)
{
    lua_settop(t->co, 0);
    if (vm->nthreads < TYCHO_THREAD_CACHE_MAX)
        vm->threads[vm->nthreads++] = *t;
    else
        drop_thread(vm, t);
}

/* ---- errors ------------------------------------------------------------------- */

struct error_args {
    int worker_id;
    struct tycho_req *r;   /* the request, or NULL for a timer */
    lua_State *co;
    const char *what;      /* NULL: the error is on co's stack */
};

/* Whether the value on top of co is what tycho.abort raises. */
static bool is_abort(lua_State *co)
{
    bool yes;

    if (!lua_istable(co, -1) || !lua_getmetatable(co, -1))
        return false;
    luaL_getmetatable(co, TYCHO_ABORT_MT);
    yes = lua_rawequal(co, -1, -2);
    lua_pop(co, 2);
    return yes;
}

/* Inside lua_cpcall: logs the error with the coroutine's traceback. */
static int log_error_protected(lua_State *L)
{
    struct error_args *a = lua_touserdata(L, 1);
    const char *msg = a->what;

    if (!msg) {
        msg = lua_tostring(a->co, -1);
        if (!msg && is_abort(a->co))
            msg = "tycho.abort: only in a handler or middleware, which it answers; here it "
                  "is an error";
        if (!msg)
            msg = lua_pushfstring(L, "(error object is a %s value)",
                                  luaL_typename(a->co, -1));
    }
    luaL_traceback(L, a->co, msg, 0);
    if (a->r)
        tycho_log_error("worker %d: %s %.*s [request %.*s]: %s", a->worker_id, a->r->method,
                        (int)a->r->path_len, a->r->path, (int)a->r->id_len,
                        a->r->id ? a->r->id : "", lua_tostring(L, -1));
    else
        tycho_log_error("worker %d: timer: %s", a->worker_id, lua_tostring(L, -1));
    return 0;
}

/* Logs a Lua error of task t (the message on co's stack, or what) with its traceback. */
static void log_error(struct tycho_task *t, lua_State *co, const char *what)
{
    struct tycho_vm *vm = t->vm;
    struct error_args a = {vm->worker_id, t->r, co, what};

    tycho_metrics_lua_error(vm->worker_id, !t->r);
    if (lua_cpcall(vm->L, log_error_protected, &a) != 0) {
        tycho_log_error("worker %d: Lua error (no memory to format it)", vm->worker_id);
        lua_pop(vm->L, 1);
    }
}

/* ---- tasks -------------------------------------------------------------------- */

static void on_wake(evutil_socket_t fd, short what, void *arg);

static struct tycho_task *task_get(struct tycho_vm *vm)
{
    struct tycho_task *t = vm->free_tasks;

    if (t) {
        vm->free_tasks = t->next_free;
    } else {
        if (!(t = calloc(1, sizeof(*t))))
            return NULL;
        t->vm = vm;
        if (vm->base)
            event_assign(&t->wake, vm->base, -1, 0, on_wake, t);
    }
    t->next_free = NULL;
    if (get_thread(vm, &t->t) < 0) {
        lua_pop(vm->L, 1);
        t->next_free = vm->free_tasks;
        vm->free_tasks = t;
        return NULL;
    }
    vm->live_tasks++;
    return t;
}

static void task_put(struct tycho_task *t)
{
    struct tycho_vm *vm = t->vm;

    assert(vm->live_tasks > 0);
    if (vm->base && t->yielded)
        event_del(&t->wake);          /* never back on the list with a wake-up pending */
    t->yielded = false;
    while (t->defers) {               /* a transaction still open, say: rolled back */
        struct tycho_defer *d = t->defers;
        t->defers = d->next;
        d->next = NULL;
        d->fn(d);
    }
    t->r = NULL;
    t->timer = NULL;
    t->sleeping = false;
    t->wait = NULL;
    t->next_free = vm->free_tasks;
    vm->free_tasks = t;
    if (--vm->live_tasks == 0 && vm->retired && vm->idle)
        vm->idle(vm);
}

/* The request's req and res objects stop reaching it: a stashed one raises "request finished". */
static void release_objects(struct tycho_task *t)
{
    t->objects.serial++;
    t->objects.r = NULL;
}

/*
 * The one way a task that waits ends without being resumed: its wake-up is
 * disarmed, a wait's work is cancelled, a request's objects stop reaching it,
 * the coroutine is dropped (the GC takes it) and the task goes back. Used for
 * a request whose client left, a timer run of a retired generation and
 * everything still waiting when a generation is freed.
 */
static void abandon(struct tycho_task *t)
{
    struct tycho_vm *vm = t->vm;

    if (vm->base)
        event_del(&t->wake);          /* a sleep's timer, or a wait's wake-up already due */
    if (t->wait)
        t->wait->cancel(t->wait);
    t->wait = NULL;
    if (t->r) {
        release_objects(t);
        t->r->app = NULL;
    }
    if (t->timer) {
        t->timer->task = NULL;
        t->timer->running = false;
    }
    drop_thread(vm, &t->t);
    task_put(t);
}

/* Turns r into the generic 500; a streamed response, whose head went, is cut short instead. */
static void fail_request(struct tycho_req *r)
{
    if (r->res_flags & TYCHO_RES_STREAM) {
        r->stream_failed = true;
        return;
    }
    r->status = 500;
    r->res_flags = 0;
    r->res_headers_len = 0;
    r->res_body = "Internal Server Error\n";
    r->res_body_len = strlen(r->res_body);
}

/*
 * Whether the error on co is tycho.abort's: then r is answered with its
 * status and message (plain text; the other headers set before stay).
 */
static bool aborted(struct tycho_req *r, lua_State *co)
{
    size_t len = 0;
    const char *msg;
    char *body;

    if (!is_abort(co))
        return false;
    if (r->res_flags & TYCHO_RES_STREAM) {
        r->stream_failed = true;      /* too late for its status: the head went */
        return true;
    }
    /*
     * The headers set so far stay (CORS, Set-Cookie: the browser must still
     * be able to read the answer); the body and its type are replaced.
     */
    tycho_http_remove_header(r, "Content-Type", 12);
    r->res_flags &= ~(unsigned)(TYCHO_RES_CONTENT_TYPE | TYCHO_RES_SENT);
    r->res_body = NULL;
    r->res_body_len = 0;
    lua_getfield(co, -1, "status");
    r->status = (int)lua_tointeger(co, -1);
    lua_getfield(co, -2, "message");
    msg = lua_tolstring(co, -1, &len);
    if (!msg) {
        msg = tycho_http_reason(r->status);
        len = strlen(msg);
    }
    if ((body = tycho_arena_alloc(&r->arena, len + 1))) {
        memcpy(body, msg, len);
        body[len] = '\n';
        r->res_body = body;
        r->res_body_len = len + 1;
    }
    lua_pop(co, 2);
    return true;
}

/*
 * A table returned by a handler: answered as JSON, as res:json answers it
 * (the generation's function), with Content-Type application/json unless one
 * was set. The table is at 1 on co; an encoding error fails the request.
 */
static void collect_table(struct tycho_task *t, lua_State *co)
{
    lua_rawgeti(co, LUA_REGISTRYINDEX, t->vm->json_body_ref);
    lua_pushvalue(co, 1);
    lua_pushlightuserdata(co, t->r);
    if (lua_pcall(co, 2, 0, 0) != 0) {
        log_error(t, co, NULL);
        fail_request(t->r);
    }
}

/*
 * Whether the userdata at idx of co is the res object of t's request (made
 * under serial): a res (by its metatable) whose box is t's slot at serial.
 */
static bool is_own_res(struct tycho_task *t, lua_State *co, int idx, uint64_t serial)
{
    const struct tycho_obj_box *b;
    bool res;

    if (!t->objects.res_mt || !lua_getmetatable(co, idx))
        return false;
    res = lua_topointer(co, -1) == t->objects.res_mt;
    lua_pop(co, 1);
    b = lua_touserdata(co, idx);
    return res && b->slot == &t->objects && b->serial == serial;
}

/*
 * A normal return of a request's coroutine: a string is the body, a table
 * is answered as JSON, res itself (return res:json(...)) and nil send what
 * res holds; once the body is set, a returned value is ignored. serial: the
 * objects' serial while the request ran, for telling its res apart.
 */
static void collect_result(struct tycho_task *t, uint64_t serial)
{
    struct tycho_req *r = t->r;
    lua_State *co = t->t.co;
    int type = lua_gettop(co) > 0 ? lua_type(co, 1) : LUA_TNIL;

    if (type == LUA_TNIL || (r->res_flags & TYCHO_RES_SENT) ||
        (type == LUA_TUSERDATA && is_own_res(t, co, 1, serial)))
        return;
    if (type == LUA_TTABLE) {
        collect_table(t, co);
        return;
    }
    if (type == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(co, 1, &len);
        char *body = len ? tycho_arena_alloc(&r->arena, len) : NULL;
        if (len && !body) {
            log_error(t, co, "out of memory copying the response body");
            fail_request(r);
            return;
        }
        if (len)
            memcpy(body, s, len);
        r->res_body = body;
        r->res_body_len = len;
        r->res_flags |= TYCHO_RES_SENT;
    } else {
        char what[128];
        snprintf(what, sizeof(what),
                 "handler returned a %s value; return a string or a table (sent as JSON), or "
                 "use res:send / res:json",
                 lua_typename(co, type));
        log_error(t, co, what);
        fail_request(r);
    }
}

/*
 * Resumes t's coroutine with nargs arguments on its stack: the only
 * lua_resume. Returns PENDING while it waits; otherwise it has ended
 * (returned or failed), its result is collected, the coroutine is kept or
 * dropped and the caller puts t back.
 */
static enum tycho_run step(struct tycho_task *t, int nargs)
{
    struct tycho_vm *vm = t->vm;
    lua_State *co = t->t.co;
    struct tycho_task *outer = vm->current;
    int rc;
    uint64_t serial;

    vm->current = t;
    rc = lua_resume(co, nargs);
    vm->current = outer;
    /*
     * tycho.sleep yields its token; the wake-up is armed only now that the
     * yield has really happened (a yield across a C call fails and must not
     * leave a wake-up behind).
     */
    if (rc == LUA_YIELD && lua_gettop(co) == 1 && lua_touserdata(co, 1) == &sleep_token) {
        lua_settop(co, 0);
        if (event_add(&t->wake, &t->sleep_tv) == 0) {
            t->sleeping = t->yielded = true;
            return TYCHO_RUN_PENDING;
        }
        rc = LUA_ERRRUN;
        lua_pushliteral(co, "tycho.sleep: cannot arm the timer");
    }
    /* Likewise a wait's work starts once the yield is done; it wakes t when finished. */
    if (rc == LUA_YIELD && lua_gettop(co) == 2 && lua_touserdata(co, 1) == &wait_token) {
        t->wait = lua_touserdata(co, 2);
        t->wait->task_ = t;
        t->yielded = true;            /* set first: start may wake t at once */
        lua_settop(co, 0);
        t->wait->start(t->wait);
        return TYCHO_RUN_PENDING;
    }
    serial = t->objects.serial;       /* the release bumps it */
    if (t->r)
        release_objects(t);           /* a stashed req/res must not reach r any more */
    if (rc == 0) {
        if (t->r)
            collect_result(t, serial);
        keep_thread(vm, &t->t);
        return TYCHO_RUN_DONE;
    }
    if (t->r && rc == LUA_ERRRUN && aborted(t->r, co)) {
        drop_thread(vm, &t->t);
        return TYCHO_RUN_DONE;
    }
    log_error(t, co,
              rc == LUA_YIELD ? "coroutine.yield cannot suspend a handler or a timer "
                                "(use tycho.sleep to wait)"
                              : NULL);
    if (t->r)
        fail_request(t->r);
    drop_thread(vm, &t->t);
    return TYCHO_RUN_DONE;
}

static void timer_done(struct tycho_timer *tm);

/*
 * A sleeping task's time is up, or its wait is over: resume it, and finish
 * its request or timer if it ends.
 */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_task *t = arg;
    struct tycho_req *r = t->r;
    struct tycho_timer *tm = t->timer;

    (void)fd;
    (void)what;
    t->sleeping = false;
    t->wait = NULL;
    assert(lua_status(t->t.co) == LUA_YIELD && "only a task that waits is woken");
    if (step(t, 0) == TYCHO_RUN_PENDING)
        return;
    task_put(t);
    if (r) {
        r->app = NULL;
        r->on_done(r);
    } else if (tm) {
        tm->task = NULL;
        timer_done(tm);
    }
}

enum tycho_run tycho_task_run(struct tycho_vm *vm, struct tycho_req *r, tycho_task_push_fn push,
                              void *arg)
{
    struct tycho_task *t = task_get(vm);

    if (!t) {
        tycho_log_error("worker %d: out of memory starting a request coroutine", vm->worker_id);
        r->status = 503;
        r->res_body = "Service Unavailable\n";
        r->res_body_len = strlen(r->res_body);
        return TYCHO_RUN_DONE;
    }
    assert(!r->app && "a request runs one handler at a time");
    t->r = r;
    t->objects.r = r;
    r->app = t;
    if (step(t, push(t->t.co, r, arg)) == TYCHO_RUN_PENDING)
        return TYCHO_RUN_PENDING;
    r->app = NULL;
    task_put(t);
    return TYCHO_RUN_DONE;
}

void tycho_task_cancel(struct tycho_req *r)
{
    if (r->app)
        abandon(r->app);              /* the request's vm, maybe a retired one */
}

void tycho_task_defer(lua_State *L, struct tycho_defer *d)
{
    struct tycho_task *t = tycho_vm_of(L)->current;

    assert(t && "defer only from code a task runs");
    d->next = t->defers;
    t->defers = d;
}

void tycho_task_undefer(lua_State *L, struct tycho_defer *d)
{
    struct tycho_task *t = tycho_vm_of(L)->current;

    for (struct tycho_defer **p = t ? &t->defers : NULL; p && *p; p = &(*p)->next)
        if (*p == d) {
            *p = d->next;
            d->next = NULL;
            return;
        }
}

bool tycho_task_runs_request(lua_State *L, const struct tycho_req *r)
{
    struct tycho_task *t = tycho_vm_of(L)->current;

    return t && r && t->t.co == L && t->r == r;
}

struct tycho_req_objects *tycho_task_objects(struct tycho_req *r)
{
    struct tycho_task *t = r->app;

    assert(t && t->r == r);
    return &t->objects;
}

/* ---- sleep and waits ---------------------------------------------------------- */

int tycho_task_sleep(lua_State *L, double seconds)
{
    struct tycho_vm *vm = tycho_vm_of(L);
    struct timeval tv;

    tycho_task_check(L, "tycho.sleep", TYCHO_PLACE_WAIT);
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    vm->current->sleep_tv = tv;
    lua_pushlightuserdata(L, (void *)&sleep_token);
    return lua_yield(L, 1);           /* step() arms the wake-up once the yield is done */
}

int tycho_task_wait(lua_State *L, struct tycho_wait *w, const char *fn)
{
    tycho_task_check(L, fn, TYCHO_PLACE_WAIT);
    lua_pushlightuserdata(L, (void *)&wait_token);
    lua_pushlightuserdata(L, w);
    return lua_yield(L, 2);           /* step() starts w once the yield is done */
}

void tycho_task_wake(struct tycho_wait *w)
{
    struct tycho_task *t = w->task_;

    event_active(&t->wake, EV_TIMEOUT, 1);  /* resumed from the loop, never from inside w's work */
}

/* ---- timers ------------------------------------------------------------------- */

static void on_tick(evutil_socket_t fd, short what, void *arg);

static void timer_free(struct tycho_timer *tm)
{
    lua_State *L = tm->vm->L;

    event_del(&tm->ev);
    tycho_list_remove(&tm->link);
    if (tm->box)
        *tm->box = NULL;              /* the Lua handle now says "finished" */
    luaL_unref(L, LUA_REGISTRYINDEX, tm->box_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, tm->fn_ref);
    free(tm);
}

/* A run of tm has ended: a one-shot or cancelled timer goes away. */
static void timer_done(struct tycho_timer *tm)
{
    tm->running = false;
    if (tm->cancelled || (!tm->every.tv_sec && !tm->every.tv_usec))
        timer_free(tm);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_timer *tm = arg;
    struct tycho_task *t;

    (void)fd;
    (void)what;
    if (tm->running)
        return;                       /* the previous run still waits: skip this tick */
    if (!(t = task_get(tm->vm))) {
        tycho_log_error("worker %d: out of memory running a timer", tm->vm->worker_id);
        return;
    }
    t->timer = tm;
    tm->running = true;
    tm->task = t;
    lua_rawgeti(t->t.co, LUA_REGISTRYINDEX, tm->fn_ref);
    if (step(t, 0) == TYCHO_RUN_PENDING)
        return;
    tm->task = NULL;
    task_put(t);
    timer_done(tm);
}

static struct timeval seconds_tv(double s)
{
    struct timeval tv = {(time_t)s, 0};

    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

void *tycho_task_timer(lua_State *L, double delay, double every, int fn_idx, int box_idx)
{
    struct tycho_vm *vm = tycho_vm_of(L);
    struct tycho_timer *tm;
    struct timeval first = seconds_tv(delay);
    int fn_ref, box_ref;

    tycho_task_check(L, "tycho.timer", TYCHO_PLACE_WORKER);
    if (vm->retired)
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
    tm->vm = vm;
    tm->every = seconds_tv(every);
    /* A repeating timer's first tick is after `every`; libevent repeats it from there. */
    event_assign(&tm->ev, vm->base, -1, every > 0 ? EV_PERSIST : 0, on_tick, tm);
    if (event_add(&tm->ev, every > 0 ? &tm->every : &first) < 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, tm->fn_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, tm->box_ref);
        free(tm);
        luaL_error(L, "tycho.timer: cannot arm the timer");
    }
    tycho_list_push_front(&vm->timers, &tm->link);
    return tm;
}

void tycho_task_timer_cancel(void *timer)
{
    struct tycho_timer *tm = timer;

    tm->cancelled = true;
    event_del(&tm->ev);
    if (!tm->running)
        timer_free(tm);
}

unsigned tycho_task_timer_count(const struct tycho_vm *vm)
{
    struct tycho_list *node, *next;
    unsigned n = 0;

    tycho_list_each_safe(node, next, &vm->timers)
        n += !tycho_container_of(node, struct tycho_timer, link)->cancelled;
    return n;
}

int tycho_task_start_functions(struct tycho_vm *vm)
{
    lua_State *L = vm->L;
    int n, rc = TYCHO_OK;

    assert(vm->base);
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
        tm->vm = vm;
        tycho_list_push_front(&vm->timers, &tm->link);
        event_assign(&tm->ev, vm->base, -1, 0, on_tick, tm);
        event_active(&tm->ev, EV_TIMEOUT, 0);
    }
    lua_pop(L, 1);
    return rc;
}

/*
 * A timer run that waits (in tycho.sleep or a call) is abandoned like a
 * request whose client left. A timer loop (`while true do ... tycho.sleep(1)
 * end`) would otherwise keep its retired generation, and the old code, alive
 * for ever.
 */
void tycho_task_retire(struct tycho_vm *vm)
{
    struct tycho_list *node, *next;

    vm->retired = true;
    tycho_list_each_safe(node, next, &vm->timers) {
        struct tycho_timer *tm = tycho_container_of(node, struct tycho_timer, link);
        if (tm->running && tm->task)
            abandon(tm->task);
        tycho_task_timer_cancel(tm);
    }
}

void tycho_task_free_all(struct tycho_vm *vm)
{
    struct tycho_list *node, *next;

    vm->idle = NULL;                  /* being freed: no "idle" call back into the generation */
    tycho_list_each_safe(node, next, &vm->timers) {
        struct tycho_timer *tm = tycho_container_of(node, struct tycho_timer, link);
        if (tm->task)
            abandon(tm->task);        /* a run that waits: its wake-up and its work go too */
        timer_free(tm);
    }
}

void tycho_task_free_tasks(struct tycho_vm *vm)
{
    while (vm->free_tasks) {
        struct tycho_task *t = vm->free_tasks;
        vm->free_tasks = t->next_free;
        free(t);
    }
}
