/*
 * bind_app.c: the `tycho` module table as scripts see it through
 * `require "tycho"` (also the global `tycho`): the route functions and
 * app.static. They run at load time, inside lua_pcall, on the thread building
 * the generation. Misuse raises with the caller's file:line (luaL_error's
 * level 1 is the script that called app.get).
 */
#include "lua/bind.h"
#include "http/tls.h"
#include "lua/task.h"
#include "lua/vm.h"
#include "core/config.h"
#include "http/http.h"
#include "core/metrics.h"
#include "http/router.h"
#include "http/static.h"

#include <lauxlib.h>
#include <string.h>
#include <strings.h>

/*
 * Registers METHOD path -> the function at fn_idx; returns its handler id.
 * Raises on a bad path or a duplicate route, the message prefixed with who
 * ("" or "app.static: ").
 */
static int register_route(lua_State *L, const char *who, const char *method, const char *path,
                          int fn_idx)
{
    struct tycho_router *router = tycho_vm_of(L)->router;
    char err[TYCHO_ERR_LEN];
    int id;

    /* The pattern is the route's metrics label: it must fit one, and be UTF-8 as the exposition. */
    if (strlen(path) > TYCHO_ROUTE_MAX_BYTES)
        return luaL_error(L, "%sthe path is longer than %d bytes", who, TYCHO_ROUTE_MAX_BYTES);
    if (!tycho_metric_utf8_ok(path, strlen(path)))
        return luaL_error(L, "%sthe path is not valid UTF-8", who);
    lua_pushlightuserdata(L, (void *)&tycho_key_handlers);
    lua_rawget(L, LUA_REGISTRYINDEX);
    id = (int)lua_objlen(L, -1) + 1;
    /* Store the handler first: if that raises (no memory), the router is untouched. */
    lua_pushvalue(L, fn_idx);
    lua_rawseti(L, -2, id);
    if (tycho_router_add(router, method, path, id, err) < 0) {
        lua_pushnil(L);
        lua_rawseti(L, -2, id);
        return luaL_error(L, "%s%s", who, err);
    }
    lua_pop(L, 1);
    return id;
}

/* The max_body of a stream_body route that does not say (docs/api.md): 1 GiB. */
#define DEFAULT_MAX_BODY_BYTES (1024.0 * 1024 * 1024)
/* The largest max_body: the largest integer a Lua number holds exactly. */
#define MAX_BODY_LIMIT 9007199254740992.0

/* Reads one option of a route (key at -2, value at -1) into o. Raises naming fn. */
static void check_route_opt(lua_State *L, const char *fn, struct tycho_route_opts *o,
                            bool *has_max)
{
    const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;

    if (key && strcmp(key, "gzip") == 0) {
        if (lua_type(L, -1) != LUA_TBOOLEAN)
            luaL_error(L, "%s: gzip must be true or false, got %s", fn, luaL_typename(L, -1));
        o->gzip = lua_toboolean(L, -1) ? TYCHO_ROUTE_GZIP_ON : TYCHO_ROUTE_GZIP_OFF;
    } else if (key && strcmp(key, "stream_body") == 0) {
        if (lua_type(L, -1) != LUA_TBOOLEAN)
            luaL_error(L, "%s: stream_body must be true or false, got %s", fn,
                       luaL_typename(L, -1));
        o->stream_body = lua_toboolean(L, -1);
    } else if (key && strcmp(key, "max_body") == 0) {
        lua_Number v = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : 0;
        if (!(v >= 1 && v <= MAX_BODY_LIMIT) || v != (lua_Number)(long long)v)
            luaL_error(L, "%s: max_body must be a whole number of bytes from 1 to 2^53", fn);
        o->max_body = (size_t)v;
        *has_max = true;
    } else if (key) {
        luaL_error(L, "%s: unknown option \"%s\" (expected gzip, stream_body or max_body)", fn,
                   key);
    } else {
        luaL_error(L, "%s: option names are strings (gzip, stream_body, max_body), got a %s key",
                   fn, luaL_typename(L, -2));
    }
}

/*
 * Reads a route's opts (at idx: nil or a table) into o; returns whether
 * there was a table. Raises naming fn on a bad one, or on stream_body for a method
 * without a body.
 */
static bool check_route_opts(lua_State *L, int idx, const char *fn, const char *method,
                             struct tycho_route_opts *o)
{
    bool has_max = false;

    memset(o, 0, sizeof(*o));
    o->max_body = (size_t)DEFAULT_MAX_BODY_BYTES;
    if (lua_isnoneornil(L, idx))
        return false;
    if (!lua_istable(L, idx))
        luaL_error(L, "%s: opts must be a table, got %s", fn, luaL_typename(L, idx));
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        check_route_opt(L, fn, o, &has_max);
        lua_pop(L, 1);
    }
    if (has_max && !o->stream_body)
        luaL_error(L, "%s: max_body applies to a stream_body route (a body read whole is "
                      "bounded by --max-body-bytes)", fn);
    if (o->stream_body && (strcasecmp(method, "GET") == 0 || strcasecmp(method, "HEAD") == 0))
        luaL_error(L, "%s: stream_body is for methods that carry a body (POST, PUT, PATCH, "
                      "...), not %s", fn, method);
    return true;
}

/*
 * Registers METHOD path -> fn (at path_idx + 1), with the options at
 * path_idx + 2. Raises naming fn on bad options, a bad path or a duplicate
 * route.
 */
static int add_route(lua_State *L, const char *fn, const char *method, int path_idx)
{
    const char *path = luaL_checkstring(L, path_idx);
    struct tycho_route_opts o;
    bool has_opts;
    int id;

    luaL_checktype(L, path_idx + 1, LUA_TFUNCTION);
    has_opts = check_route_opts(L, path_idx + 2, fn, method, &o);
    if (tycho_task_refusal(L, TYCHO_PLACE_LOAD))
        return luaL_error(L, "routes can only be registered while the scripts load, not in a "
                             "handler (%s %s)", method, path);
    id = register_route(L, "", method, path, path_idx + 1);
    if (has_opts && tycho_vm_set_route_opts(tycho_vm_of(L), id, &o) < 0)
        return luaL_error(L, "%s: out of memory", fn);
    return 0;
}

/* app.get(path, fn[, opts]) and friends: the method and the name are the closure's upvalues. */
static int app_method(lua_State *L)
{
    return add_route(L, lua_tostring(L, lua_upvalueindex(2)),
                     lua_tostring(L, lua_upvalueindex(1)), 1);
}

/* app.route(method, path, fn[, opts]) */
static int app_route(lua_State *L)
{
    return add_route(L, "app.route", luaL_checkstring(L, 1), 2);
}

/* app.on_worker_start(fn): fn runs once in each worker after its scripts load. */
static int app_on_worker_start(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    tycho_task_check(L, "app.on_worker_start", TYCHO_PLACE_LOAD);
    lua_pushlightuserdata(L, (void *)&tycho_key_on_start);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
    return 0;
}

/* ---- app.static ----------------------------------------------------------- */

#define STATIC_PREFIX_MAX 1024
#define STATIC_MAX_AGE_MAX 2147483647L

/* __gc of a mount's userdata: closes its directory. */
static int mount_gc(lua_State *L)
{
    tycho_static_dispose(lua_touserdata(L, 1));
    return 0;
}

/*
 * The handler of an app.static route, which runs when there is middleware
 * (without, conn.c serves the mount directly): fills res's request with the
 * file's response. Upvalue 1: the mount.
 */
static int static_handler(lua_State *L)
{
    struct tycho_static *m = lua_touserdata(L, lua_upvalueindex(1));
    const struct tycho_obj_box *box = luaL_checkudata(L, 2, "tycho.res");
    struct tycho_req *r = tycho_obj_req(box);

    if (!r)
        return luaL_error(L, "request finished: this res belongs to a request that has ended");
    if (r->res_flags & TYCHO_RES_SENT)
        return luaL_error(L, "app.static: the response body was already sent");
    tycho_static_serve(m, r);
    return 0;
}

/*
 * Checks the prefix at index 1 and copies it into buf without trailing '/'
 * ("" for "/"). Raises naming app.static when it is not plain path segments.
 */
static size_t check_prefix(lua_State *L, char *buf)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);

    if (len == 0 || s[0] != '/')
        luaL_error(L, "app.static: the prefix must start with '/' (got \"%s\")", s);
    while (len > 1 && s[len - 1] == '/')
        len--;
    if (len == 1)
        len = 0;                      /* "/": the whole site */
    if (len >= STATIC_PREFIX_MAX)
        luaL_error(L, "app.static: the prefix is longer than %d bytes", STATIC_PREFIX_MAX - 1);
    for (size_t i = 0; i < len;) {
        size_t seg = i + 1, end = seg;
        while (end < len && s[end] != '/')
            end++;
        for (size_t j = seg; j < end; j++) {
            unsigned char c = (unsigned char)s[j];
            if (c <= ' ' || c == 0x7f || c == '?' || c == '#' || c == '%' || c == '\\')
                end = seg;            /* marks the segment bad */
        }
        if (end == seg || s[seg] == ':' || s[seg] == '*' ||
            (s[seg] == '.' && (end - seg == 1 || (end - seg == 2 && s[seg + 1] == '.'))))
            luaL_error(L, "app.static: bad prefix \"%s\": expected plain path segments such "
                          "as /static (no :param, *wildcard, '.', '..', empty segments, '%%', "
                          "'?', '#', backslashes, spaces or control characters)", s);
        i = end;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    return len;
}

/* Reads app.static's opts (index 3: nil or a table) into o. Raises on a bad one. */
static void check_static_opts(lua_State *L, struct tycho_static_opts *o)
{
    o->index = "index.html";
    o->dotfiles = false;
    o->max_age = -1;
    o->gzip = true;
    if (lua_isnoneornil(L, 3))
        return;
    if (!lua_istable(L, 3))
        luaL_error(L, "app.static: opts must be a table, got %s", luaL_typename(L, 3));
    lua_pushnil(L);
    while (lua_next(L, 3)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (key && strcmp(key, "index") == 0) {
            size_t n = 0;
            const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
            if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))
                o->index = NULL;
            else if (!v || n == 0 || n > 255 || memchr(v, '/', n) || memchr(v, '\0', n) ||
                     strcmp(v, ".") == 0 || strcmp(v, "..") == 0)
                luaL_error(L, "app.static: index must be a file name such as \"index.html\", "
                              "or false");
            else
                o->index = v;         /* a string of opts: valid while opts is on the stack */
        } else if (key && strcmp(key, "dotfiles") == 0) {
            if (lua_type(L, -1) != LUA_TBOOLEAN)
                luaL_error(L, "app.static: dotfiles must be true or false");
            o->dotfiles = lua_toboolean(L, -1);
        } else if (key && strcmp(key, "max_age") == 0) {
            lua_Number v = lua_type(L, -1) == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
            if (!(v >= 0 && v <= (lua_Number)STATIC_MAX_AGE_MAX) || v != (lua_Number)(long)v)
                luaL_error(L, "app.static: max_age must be a whole number of seconds from 0 to "
                              "%d", (int)STATIC_MAX_AGE_MAX);
            o->max_age = (long)v;
        } else if (key && strcmp(key, "gzip") == 0) {
            if (lua_type(L, -1) != LUA_TBOOLEAN)
                luaL_error(L, "app.static: gzip must be true or false");
            o->gzip = lua_toboolean(L, -1);
        } else if (key) {
            luaL_error(L, "app.static: unknown option \"%s\" (expected index, dotfiles, "
                          "max_age or gzip)", key);
        } else {
            luaL_error(L, "app.static: option names are strings (index, dotfiles, max_age, "
                          "gzip), got a %s key", luaL_typename(L, -2));
        }
        lua_pop(L, 1);
    }
}

/*
 * app.static(prefix, dir[, opts]): serves the files under dir (relative to
 * the script directory unless absolute) for GET and HEAD of prefix/...,
 * as two GET routes: the prefix followed by a wildcard named path, and the
 * prefix itself (which redirects to prefix/ when there is an index). Raises
 * naming app.static on any misuse.
 */
static int app_static(lua_State *L)
{
    char prefix[STATIC_PREFIX_MAX], route[STATIC_PREFIX_MAX + 8], err[TYCHO_ERR_LEN];
    size_t prefix_len = check_prefix(L, prefix), dir_len;
    const char *dir = luaL_checklstring(L, 2, &dir_len);
    struct tycho_static_opts o;
    struct tycho_static *m;
    int mount_idx, fn_idx, id;

    if (dir_len == 0 || memchr(dir, '\0', dir_len))
        return luaL_error(L, "app.static: expected a directory, got \"%s\"", dir);
    check_static_opts(L, &o);
    tycho_task_check(L, "app.static", TYCHO_PLACE_LOAD);
    if (dir[0] != '/') {
        lua_pushfstring(L, "%s/%s", tycho_vm_of(L)->dir, dir);
        dir = lua_tostring(L, -1);
    }
    /* The mount lives in a userdata, so nothing leaks whatever raises from here on. */
    m = lua_newuserdata(L, sizeof(*m));
    mount_idx = lua_gettop(L);
    memset(m, 0, sizeof(*m));
    m->dir_fd = -1;
    if (luaL_newmetatable(L, "tycho.static")) {
        lua_pushcfunction(L, mount_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, mount_idx);
    if (tycho_static_init(m, dir, prefix_len, &o, err) < 0)
        return luaL_error(L, "app.static: %s", err);
    lua_pushvalue(L, mount_idx);
    lua_pushcclosure(L, static_handler, 1);
    fn_idx = lua_gettop(L);
    if (prefix_len > 0) {
        id = register_route(L, "app.static: ", "GET", prefix, fn_idx);
        tycho_vm_add_static(tycho_vm_of(L), id, m);
    }
    snprintf(route, sizeof(route), "%s/*path", prefix);
    id = register_route(L, "app.static: ", "GET", route, fn_idx);
    tycho_vm_add_static(tycho_vm_of(L), id, m);
    return 0;
}

static const char *const methods[][2] = {
    {"get", "GET"},       {"post", "POST"},       {"put", "PUT"},   {"patch", "PATCH"},
    {"delete", "DELETE"}, {"options", "OPTIONS"}, {"head", "HEAD"},
};

/*
 * tycho.abort(status[, message]): ends the request with status (400..599)
 * and message as a plain-text body, from any depth of a handler or
 * middleware; nothing is logged (task.c answers it, see tycho_task_abort).
 */
static int app_abort(lua_State *L)
{
    lua_Integer status = luaL_checkinteger(L, 1);
    const char *message = luaL_optstring(L, 2, NULL);

    luaL_argcheck(L, status >= 400 && status <= 599, 1, "expected a status from 400 to 599");
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "status");
    if (message) {
        lua_pushstring(L, message);
        lua_setfield(L, -2, "message");
    }
    luaL_getmetatable(L, TYCHO_ABORT_MT);
    lua_setmetatable(L, -2);
    return lua_error(L);
}

void tycho_bind_app(lua_State *L)
{
    lua_createtable(L, 0, 16);
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        lua_pushstring(L, methods[i][1]);
        lua_pushfstring(L, "app.%s", methods[i][0]);
        lua_pushcclosure(L, app_method, 2);
        lua_setfield(L, -2, methods[i][0]);
    }
    lua_pushcfunction(L, app_route);
    lua_setfield(L, -2, "route");
    lua_pushcfunction(L, app_on_worker_start);
    lua_setfield(L, -2, "on_worker_start");
    lua_pushcfunction(L, app_static);
    lua_setfield(L, -2, "static");
    lua_pushliteral(L, TYCHO_VERSION);
    lua_setfield(L, -2, "version");
    if (tycho_tls_port() > 0) {
        lua_pushinteger(L, tycho_tls_port());
        lua_setfield(L, -2, "tls_port");
    }
    luaL_newmetatable(L, TYCHO_ABORT_MT);
    lua_pop(L, 1);
    lua_pushcfunction(L, app_abort);
    lua_setfield(L, -2, "abort");

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "tycho");
    lua_pop(L, 2);
    lua_pushvalue(L, -1);
    lua_setglobal(L, "tycho");
}
