/*
 * bind.h: the Lua-facing API (the `tycho` module, req and res objects): what
 * gen.c calls to fill a new state. The bindings themselves call only down:
 * task.h (where they may be called, waiting, timers), vm.h (the state's
 * record) and the layers below lua/. Everything here runs on the thread that
 * owns the lua_State. Functions that can raise are called inside
 * lua_cpcall/pcall.
 */
#ifndef TYCHO_BIND_H
#define TYCHO_BIND_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

struct tycho_gen;
struct tycho_req;
struct tycho_router;

/*
 * bind_app.c: pushes the `tycho` module table (route functions), registers
 * it as package.loaded.tycho and the global `tycho`. May raise.
 */
void tycho_bind_app(lua_State *L);

/*
 * bind_req.c: registers the "tycho.req" and "tycho.res" metatables and
 * pushes four values for the prelude: the C function
 * new_objects(lightuserdata r) -> req, res that it calls at the start of
 * every request; the tables of req's and res's methods, to which it adds
 * those written in Lua; and form_pairs(body[, name]), which reads a
 * urlencoded body as req.query and req:query_all read the query string.
 * May raise.
 */
void tycho_bind_objects(lua_State *L);

/* bind_http.c: adds tycho.http to the module table on top. May raise. */
void tycho_bind_http(lua_State *L);

/*
 * bind_db.c: adds tycho.db (SQLite and PostgreSQL) and tycho.null to the
 * module table on top. May raise.
 */
void tycho_bind_db(lua_State *L);
/* bind_crypto.c: adds tycho.crypto to the module table on top. May raise. */
void tycho_bind_crypto(lua_State *L);
/*
 * bind_crypto.c: the app's secret (copied), which tycho.crypto.sign uses.
 * Main thread, once, before any state is made. TYCHO_OK or TYCHO_ERR.
 */
int tycho_bind_set_secret(const char *secret, size_t len);
/* bind_crypto.c: seeds the state's math.random from the kernel (each state its own). */
void tycho_bind_seed(lua_State *L);
/* bind_json.c: adds tycho.json to the module table on top. May raise. */
void tycho_bind_json(lua_State *L);
/*
 * bind_res.c: json_body(value, lightuserdata r), a lua_CFunction: what a
 * handler returned as a table becomes r's body as res:json(value) makes it.
 * Raises on an unencodable value.
 */
int tycho_bind_json_body(lua_State *L);

/* bind_json.c: tycho.json.encode(value) -> text, as a lua_CFunction. */
int tycho_json_encode(lua_State *L);
/*
 * bind_json.c: encodes the value at idx of L as tycho.json.encode does and
 * hands the text to done(arg, text, len), without making a Lua string: the
 * text lives until done returns (res:json copies it into the response).
 * Leaves one value pushed on L (where a grown buffer was kept). Raises as
 * tycho.json.encode does, without the caller's position, and whatever done
 * raises.
 */
typedef void (*tycho_json_done)(void *arg, const char *text, size_t len);
void tycho_json_encode_to(lua_State *L, int idx, tycho_json_done done, void *arg);
/* bind_json.c: tycho.json.decode(text) -> value, or nil and why, as a lua_CFunction. */
int tycho_json_decode(lua_State *L);
/* bind_redis.c: adds tycho.redis to the module table on top. May raise. */
void tycho_bind_redis(lua_State *L);

struct tycho_connpool_opts;
/*
 * bind_db.c, for every binding with a pool: a pool's options from the
 * table at idx (none: the defaults), for fn's messages: pool, max_waiting,
 * wait_timeout, idle_timeout, max_lifetime, connect_timeout, timeout,
 * max_failures, cooldown. Raises on an unknown or bad one.
 */
void tycho_bind_pool_opts(lua_State *L, int idx, const char *fn, struct tycho_connpool_opts *o);
/*
 * bind_db.c: raises fmt at the script's line that called a method written
 * in Lua (db:query, red:call, ...): the position two levels up, past the
 * method's Lua helper. Never returns.
 */
int tycho_bind_raise(lua_State *L, const char *fmt, ...);
/* url without the password of its user part (its name in logs, metrics and errors). */
void tycho_bind_redact(const char *url, char *out, size_t cap);

/* bind_db.c: pushes an array of the URLs tycho.db.open was given (tycho migrate). May raise. */
void tycho_bind_db_opened(lua_State *L);

/* bind_metrics.c: adds tycho.metrics to the module table on top. May raise. */
void tycho_bind_metrics(lua_State *L);

/* bind_shdict.c: adds tycho.shared to the module table on top. May raise. */
void tycho_bind_shdict(lua_State *L);

/* bind_time.c: adds sleep, now, worker_id, log and timer to the module table on top. */
void tycho_bind_time(lua_State *L);

/* tycho.broadcast, tycho._ws (taken by prelude.lua for app.ws) and the ws object's metatable. */
void tycho_bind_ws(lua_State *L);

/* A tycho.broadcast on its way to the other workers: one allocation, channel then message. */
struct tycho_ws_broadcast {
    int from_worker;                  /* the worker that sent it (it has delivered it itself) */
    bool binary;
    size_t channel_len, len;
    char data[];                      /* channel_len bytes of channel, then len of message */
};

/*
 * Set by the owner of the workers (top/worker.c) before they start: hands b
 * to every worker but b->from_worker, whose loop calls
 * tycho_bind_ws_deliver with it. b stays the caller's. NULL: one worker,
 * nothing to hand. Called on any worker's thread.
 */
extern void (*tycho_bind_ws_fanout)(const struct tycho_ws_broadcast *b);

/* Sends b's message to the WebSockets of this worker (its thread) that joined b's channel. */
void tycho_bind_ws_deliver(const struct tycho_ws_broadcast *b);

/*
 * bind_upload.c: adds tycho._upload to the module table on top: the C half
 * of a streamed req:multipart (files for its file parts, deleted when the
 * handler ends unless moved), which web.lua takes away. May raise.
 */
void tycho_bind_upload(lua_State *L);

/* bind_res.c: pushes the "tycho.res" metatable (made on first call). May raise. */
void tycho_bind_res_metatable(lua_State *L);

#endif
