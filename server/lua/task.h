/*
 * task.h: tasks, the coroutines a worker runs and resumes: a request's
 * handler (with its middleware), a timer's run, an app.on_worker_start
 * function. task.c is the only caller of lua_resume. It owns yielding
 * (tycho.sleep, waits for work done outside Lua), waking, timers and the one
 * path by which a task that waits is abandoned. The bindings call only this
 * API (and vm.h); they never resume a coroutine or touch a task themselves.
 * Everything here runs on the thread that owns the vm.
 */
#ifndef TYCHO_TASK_H
#define TYCHO_TASK_H

#include <lua.h>
#include <stdbool.h>
#include <stdint.h>

#include "http/context.h"
#include "lua/vm.h"

struct tycho_req;

/* Where a Lua function may be called (docs/api.md says it for each function). */
enum tycho_place {
    TYCHO_PLACE_LOAD,    /* while the scripts load: the top level of a script */
    TYCHO_PLACE_WORKER,  /* in a worker once loaded: handler, middleware, timer, on_worker_start */
    TYCHO_PLACE_WAIT     /* where code may wait: a handler, middleware or timer coroutine itself */
};

/* Why the running code is not at place (a message to prefix with the call's name), or NULL. */
const char *tycho_task_refusal(lua_State *L, enum tycho_place place);

/* Raises "fn: <why>" unless the running code is at place. The one check every binding uses. */
void tycho_task_check(lua_State *L, const char *fn, enum tycho_place place);

/*
 * Pushes onto co the function to run and its arguments; returns how many
 * arguments. Must not raise (no allocation beyond the stack's own slots).
 */
typedef int (*tycho_task_push_fn)(lua_State *co, const struct tycho_req *r, void *arg);

/*
 * Runs r's handler in a new task: push puts the function and its arguments
 * on the coroutine. r->app holds the task while it runs. Returns DONE with
 * r's response filled (a Lua error is logged with its traceback and turns r
 * into the generic 500; no memory for a task gives 503), or PENDING: the
 * handler waits, and r->on_done(r) is called from the loop once it has
 * finished. Never raises.
 */
enum tycho_run tycho_task_run(struct tycho_vm *vm, struct tycho_req *r, tycho_task_push_fn push,
                              void *arg);

/*
 * Abandons r's task, which waits (its client left, the worker stops): the
 * coroutine is never resumed, a wait's work is cancelled, r->on_done is not
 * called. A no-op when r has no task.
 */
void tycho_task_cancel(struct tycho_req *r);

/*
 * Something the running task holds that must be let go of however the task
 * ends (an open transaction): fn(d) is called when the task ends, normally
 * or abandoned, unless tycho_task_undefer(d) was called first. d lives in
 * the binding's memory until then; fn must not raise or resume anything.
 */
struct tycho_defer {
    void (*fn)(struct tycho_defer *d);
    struct tycho_defer *next;         /* task.c's */
};
void tycho_task_defer(lua_State *L, struct tycho_defer *d);
void tycho_task_undefer(lua_State *L, struct tycho_defer *d);

/*
 * How a request's req and res objects (bind_req.c) reach it: each holds a
 * tycho_obj_box, the slot of the task that runs the request and the slot's
 * serial when they were made. When the request ends the task bumps the
 * serial and clears r, so every box made before stops reaching the request
 * at once: nothing keeps the userdata alive for C, nothing writes into them.
 * A slot lives as long as its vm (tasks are reused, and freed only after
 * lua_close), so a box kept past its request still points at valid memory.
 * Worker thread only.
 */
struct tycho_req_objects {
    struct tycho_req *r;              /* the request while its handler runs; NULL after */
    uint64_t serial;                  /* bumped when a request ends: 64 bits never wrap */
    const void *res_mt;               /* the res metatable: tells a returned res apart */
};
struct tycho_obj_box {
    struct tycho_req_objects *slot;
    uint64_t serial;                  /* slot->serial when the object was made */
};
struct tycho_req_objects *tycho_task_objects(struct tycho_req *r);

/* The request behind a req or res box; NULL once that request has ended. */
static inline struct tycho_req *tycho_obj_req(const struct tycho_obj_box *b)
{
    return b->serial == b->slot->serial ? b->slot->r : NULL;
}

/*
 * Whether the code running on L is r's own handler (its coroutine), not a
 * timer or another request's handler that was given r's objects. Only the
 * handler itself may wait on r's connection (a wait belongs to one task),
 * and what it defers ends before r's arena is reset, so a tycho_defer may
 * live there.
 */
bool tycho_task_runs_request(lua_State *L, const struct tycho_req *r);

/*
 * tycho.sleep: yields the running handler or timer for seconds; call as
 * `return tycho_task_sleep(L, s)`. Raises (naming tycho.sleep) where code may
 * not wait.
 */
int tycho_task_sleep(lua_State *L, double seconds);

/*
 * Waiting for work done outside Lua (an outbound call): the binding fills a
 * tycho_wait and returns tycho_task_wait(L, w, "tycho.x"), which checks the
 * place (raising with fn in the message) and yields. Once the yield is done,
 * w->start(w) is called; the work calls tycho_task_wake(w) when it has
 * finished (even from inside start), and the coroutine resumes with no
 * values from the loop. If the task is abandoned first (its client left, the
 * worker stops, a reload retires a timer), w->cancel(w) is called instead and
 * wake must not be.
 */
struct tycho_wait {
    void (*start)(struct tycho_wait *w);
    void (*cancel)(struct tycho_wait *w);
    struct tycho_task *task_;         /* task.c's */
};
int tycho_task_wait(lua_State *L, struct tycho_wait *w, const char *fn);
void tycho_task_wake(struct tycho_wait *w);

/*
 * A timer running the function at fn_idx after delay seconds, or every
 * `every` seconds when every > 0; the userdata at box_idx is its handle,
 * whose pointer slot is set to NULL when the timer ends. Returns the timer,
 * or NULL when the vm is retired (the timer never runs). Raises outside a
 * worker or when out of memory.
 */
void *tycho_task_timer(lua_State *L, double delay, double every, int fn_idx, int box_idx);

/* Stops a timer (a run in progress finishes). */
void tycho_task_timer_cancel(void *timer);

/* Timers not cancelled (for the metrics). */
unsigned tycho_task_timer_count(const struct tycho_vm *vm);

/*
 * Starts the functions given to app.on_worker_start, each as a timer firing
 * now. The vm must be attached (vm->base set). TYCHO_OK or TYCHO_ERR (memory).
 */
int tycho_task_start_functions(struct tycho_vm *vm);

/* Retires vm: its timers stop and timer runs that wait are abandoned. */
void tycho_task_retire(struct tycho_vm *vm);

/* Frees vm's timers (before its state is closed; requests were cancelled). */
void tycho_task_free_all(struct tycho_vm *vm);

/* Frees vm's idle tasks: after lua_close, as req and res objects point into them. */
void tycho_task_free_tasks(struct tycho_vm *vm);

/* The metatable (registry name) of the error value tycho.abort raises. */
#define TYCHO_ABORT_MT "tycho.abort"

#endif
