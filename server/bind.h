/*
 * bind.h: the Lua-facing API (the `tycho` module, req and res objects),
 * for script.c only. Everything here runs on the thread that owns the
 * lua_State. Functions that can raise are called inside lua_cpcall/pcall.
 */
#ifndef TYCHO_BIND_H
#define TYCHO_BIND_H

#include <lua.h>

struct tycho_gen;
struct tycho_req;
struct tycho_router;

/* Registry keys (their addresses are the lightuserdata keys). */
extern const char tycho_key_gen;      /* -> struct tycho_gen * */
extern const char tycho_key_handlers; /* -> table: handler id -> function */
extern const char tycho_key_on_start; /* -> table: app.on_worker_start functions */

/*
 * script.c: the router of the generation whose state L is, while its
 * scripts load; NULL once loading is over (routes are fixed then).
 */
struct tycho_router *tycho_gen_router_of(lua_State *L);

/* script.c: the script directory of the generation whose state L is (as given). */
const char *tycho_gen_dir_of(lua_State *L);

/*
 * script.c: handler_id is an app.static route served by mount (borrowed: it
 * lives in a userdata of L's state). Lets conn.c serve it without Lua while
 * there is no middleware. Out of memory only loses that shortcut.
 */
struct tycho_static;
void tycho_gen_add_static(lua_State *L, int handler_id, struct tycho_static *mount);

/*
 * bind_app.c: pushes the `tycho` module table (route functions), registers
 * it as package.loaded.tycho and the global `tycho`. May raise.
 */
void tycho_bind_app(lua_State *L);

/*
 * bind_req.c: registers the "tycho.req" and "tycho.res" metatables and
 * pushes the C function new_objects(lightuserdata r) -> req, res that the
 * prelude calls at the start of every request. May raise.
 */
void tycho_bind_objects(lua_State *L);

/*
 * bind_req.c: after a request's coroutine returned, errored or yielded for
 * good: the req and res objects stop pointing at r, and are no longer kept
 * alive for it. Never raises, allocates nothing.
 */
void tycho_bind_release(lua_State *L, struct tycho_req *r);

/*
 * script.c, for bind_time.c (each may raise with a message naming the call):
 * - tycho_script_sleep: yields the running handler or timer for seconds;
 *   call as `return tycho_script_sleep(L, s)`.
 * - tycho_script_now: the worker loop's cached time, in seconds.
 * - tycho_script_worker_id: 1..N, 0 in main's scratch state.
 * - tycho_script_timer: a timer running the function at fn_idx after delay
 *   seconds, or every `every` seconds when every > 0; the userdata at
 *   box_idx is its handle, whose pointer slot is set to NULL when the timer
 *   ends. Returns the timer.
 * - tycho_script_timer_cancel: stops a timer (a run in progress finishes).
 */
int tycho_script_sleep(lua_State *L, double seconds);
double tycho_script_now(lua_State *L);
int tycho_script_worker_id(lua_State *L);
void *tycho_script_timer(lua_State *L, double delay, double every, int fn_idx, int box_idx);
void tycho_script_timer_cancel(void *timer);

/*
 * Waiting for work done outside Lua (an outbound call): the binding fills a
 * tycho_wait and returns tycho_script_wait(L, w, "tycho.x"), which checks the
 * place (raising with fn in the message) and yields. Once the yield is done,
 * script.c calls w->start(w); the work calls tycho_script_wake(w) when it has
 * finished (even from inside start), and the coroutine resumes with no
 * values from the loop. If the task is abandoned first (its client left,
 * the worker stops), w->cancel(w) is called instead and wake must not be.
 */
struct tycho_wait {
    void (*start)(struct tycho_wait *w);
    void (*cancel)(struct tycho_wait *w);
    void *task_;                      /* script.c's */
};
int tycho_script_wait(lua_State *L, struct tycho_wait *w, const char *fn);
/* Why the running code cannot wait here (a message to prefix with the call's name), or NULL. */
const char *tycho_script_wait_refusal(lua_State *L);
void tycho_script_wake(struct tycho_wait *w);

/* script.c: the generation's backend pools (see upstream.h). */
struct tycho_upstreams *tycho_script_upstreams(lua_State *L);

/* bind_http.c: adds tycho.http to the module table on top. May raise. */
void tycho_bind_http(lua_State *L);

/* bind_metrics.c: adds tycho.metrics to the module table on top. May raise. */
void tycho_bind_metrics(lua_State *L);

/* bind_shdict.c: adds tycho.shared to the module table on top. May raise. */
void tycho_bind_shdict(lua_State *L);

/* The bound of a dictionary declared without max_bytes (--shared-dict-bytes); set before workers start. */
extern size_t tycho_shdict_default_bytes;

/* bind_time.c: adds sleep, now, worker_id, log and timer to the module table on top. */
void tycho_bind_time(lua_State *L);

/* bind_res.c: pushes the "tycho.res" metatable (made on first call). May raise. */
void tycho_bind_res_metatable(lua_State *L);

#endif
