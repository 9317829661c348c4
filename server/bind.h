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

/*
 * script.c: the router of the generation whose state L is, while its
 * scripts load; NULL once loading is over (routes are fixed then).
 */
struct tycho_router *tycho_gen_router_of(lua_State *L);

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

/* bind_res.c: pushes the "tycho.res" metatable (made on first call). May raise. */
void tycho_bind_res_metatable(lua_State *L);

#endif
