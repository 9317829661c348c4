/*
 * gen.h: script generations. A generation is one lua_State (its vm, vm.h)
 * with the directory's scripts loaded, plus the router they filled; requests
 * and timers run in it as tasks (task.h, the only caller of lua_resume).
 * Each worker owns its generation and is the only thread that touches it;
 * main builds a scratch one at start-up (and for each reload) to report
 * load errors once and print the routes. To the http layer a generation is
 * the application behind struct tycho_app (tycho_gen_app).
 */
#ifndef TYCHO_GEN_H
#define TYCHO_GEN_H

#include "core/tycho.h"
#include "http/context.h"

struct tycho_gen;
struct tycho_req;
struct tycho_router;

/*
 * Builds a generation from every *.lua file in dir (name order), with
 * `require` finding modules in dir. worker_id names the worker in logs (0 for
 * main). Returns NULL with "FILE:LINE: message" in err (TYCHO_ERR_LEN bytes)
 * when a script fails to load. Any thread; the result belongs to the caller's.
 */
struct tycho_gen *tycho_gen_new(const char *dir, int worker_id, char *err);

/*
 * For the metrics: the memory of g's Lua state and of the retired ones still
 * finishing, in bytes, and g's timers pending; also samples their backend
 * pools (round: see tycho_metric_sample). Owning thread.
 */
void tycho_gen_sample(struct tycho_gen *g, unsigned round, double *lua_bytes, double *timers);

/* Closes the Lua state and frees the router. NULL is a no-op. */
void tycho_gen_free(struct tycho_gen *g);

struct lua_State;

/* g's Lua state (for `tycho test`, which runs its tests inside it). */
struct lua_State *tycho_gen_lua(struct tycho_gen *g);

/* The routes the scripts registered (borrowed, valid while g lives). */
const struct tycho_router *tycho_gen_router(const struct tycho_gen *g);

/*
 * Fills app with g's side of the application interface (http/context.h): its
 * routes, its static shortcut, running and abandoning a request. The worker
 * calls it at start and after each tycho_gen_replace.
 */
void tycho_gen_app(struct tycho_gen *g, struct tycho_app *app);

struct tycho_static;

/*
 * The app.static mount that handler_id serves, when the generation has no
 * middleware (then conn.c serves it without Lua); NULL otherwise.
 */
struct tycho_static *tycho_gen_static(const struct tycho_gen *g, int handler_id);

/* Number of script files loaded. */
unsigned tycho_gen_script_count(const struct tycho_gen *g);

struct event_base;

/*
 * Gives a worker's generation its event loop: from then on handlers and
 * timers may wait (tycho.sleep), tycho.timer works, and the functions given to
 * app.on_worker_start are started. Worker thread, once, before serving.
 * Returns TYCHO_OK or TYCHO_ERR (out of memory).
 */
int tycho_gen_attach(struct tycho_gen *g, struct event_base *base);


/*
 * Runs the handler that r->match names, with the middleware around it, in a
 * coroutine. Fills r's response. A Lua error is logged with its traceback and
 * turns r into a 500 with a generic body. Never raises.
 */
enum tycho_run tycho_gen_run(struct tycho_gen *g, struct tycho_req *r);

/*
 * Abandons a request whose handler is still waiting (its connection is
 * closing): the coroutine is never resumed, r->on_done is not called. A no-op
 * for a request with no handler running. The request's own generation (which
 * may be a retired one) is the one concerned.
 */
void tycho_gen_cancel(struct tycho_req *r);

/*
 * Hot reload: g (attached, its on_worker_start functions started) takes over
 * from old (generation old_number), which is retired: its timers stop and
 * timer runs that wait are abandoned; requests under way finish on it; it is
 * freed from the loop once the last has ended ("generation N closed" is
 * logged). A timer created by old code after that never runs. Freeing g
 * later also frees retired generations still finishing.
 */
void tycho_gen_replace(struct tycho_gen *old, struct tycho_gen *g, unsigned long old_number);

#endif
