/*
 * bind_app.c: the `tycho` module table as scripts see it through
 * `require "tycho"` (also the global `tycho`): the route functions. They run
 * at load time, inside lua_pcall, on the thread building the generation.
 * Misuse raises with the caller's file:line (luaL_error's level 1 is the
 * script that called app.get).
 */
#include "bind.h"
#include "config.h"
#include "router.h"

#include <lauxlib.h>

/* Registers METHOD path -> fn. Raises on a bad path or a duplicate route. */
static int add_route(lua_State *L, const char *method, int path_idx)
{
    const char *path = luaL_checkstring(L, path_idx);
    struct tycho_router *router = tycho_gen_router_of(L);
    char err[TYCHO_ERR_LEN];
    int id;

    luaL_checktype(L, path_idx + 1, LUA_TFUNCTION);
    if (!router)
        return luaL_error(L, "routes can only be registered while the scripts load, not in a "
                             "handler (%s %s)", method, path);
    lua_pushlightuserdata(L, (void *)&tycho_key_handlers);
    lua_rawget(L, LUA_REGISTRYINDEX);
    id = (int)lua_objlen(L, -1) + 1;
    /* Store the handler first: if that raises (no memory), the router is untouched. */
    lua_pushvalue(L, path_idx + 1);
    lua_rawseti(L, -2, id);
    if (tycho_router_add(router, method, path, id, err) < 0) {
        lua_pushnil(L);
        lua_rawseti(L, -2, id);
        return luaL_error(L, "%s", err);
    }
    lua_pop(L, 1);
    return 0;
}

/* app.get(path, fn) and friends: the method is the closure's upvalue. */
static int app_method(lua_State *L)
{
    return add_route(L, lua_tostring(L, lua_upvalueindex(1)), 1);
}

/* app.route(method, path, fn) */
static int app_route(lua_State *L)
{
    return add_route(L, luaL_checkstring(L, 1), 2);
}

/* app.on_worker_start(fn): fn runs once in each worker after its scripts load. */
static int app_on_worker_start(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (!tycho_gen_router_of(L))
        return luaL_error(L, "app.on_worker_start: only while the scripts load, not in a "
                             "handler");
    lua_pushlightuserdata(L, (void *)&tycho_key_on_start);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    return 0;
}

static const char *const methods[][2] = {
    {"get", "GET"},       {"post", "POST"},       {"put", "PUT"},   {"patch", "PATCH"},
    {"delete", "DELETE"}, {"options", "OPTIONS"}, {"head", "HEAD"},
};

void tycho_bind_app(lua_State *L)
{
    lua_createtable(L, 0, 16);
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        lua_pushstring(L, methods[i][1]);
        lua_pushcclosure(L, app_method, 1);
        lua_setfield(L, -2, methods[i][0]);
    }
    lua_pushcfunction(L, app_route);
    lua_setfield(L, -2, "route");
    lua_pushcfunction(L, app_on_worker_start);
    lua_setfield(L, -2, "on_worker_start");
    lua_pushliteral(L, TYCHO_VERSION);
    lua_setfield(L, -2, "version");

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "tycho");
    lua_pop(L, 2);
    lua_pushvalue(L, -1);
    lua_setglobal(L, "tycho");
}
