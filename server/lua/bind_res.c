/*
 * bind_res.c: the `res` object a handler receives: status, header, send,
 * json, redirect. Like req, a userdata holding a tycho_obj_box (task.h)
 * that stops reaching the request once it ended. The response is built in
 * the request context (strings copied into its arena) and written by conn.c
 * after the handler returns.
 * Worker thread, inside the request coroutine. Misuse raises (a 500); no
 * function here holds a resource when it raises (arena memory belongs to
 * the request and goes with it).
 */
#include "lua/bind.h"
#include "core/log.h"
#include "core/tycho.h"
#include "http/http.h"
#include "http/stream.h"
#include "lua/task.h"

#include <lauxlib.h>
#include <string.h>
#include <strings.h>

#define UP_RES_MT lua_upvalueindex(1)

/* Returns the live request behind the res at idx; raises on misuse. */
static struct tycho_req *check_res(lua_State *L, int idx)
{
    const struct tycho_obj_box *box = lua_touserdata(L, idx);
    struct tycho_req *r;

    if (!box || !lua_getmetatable(L, idx) || !lua_rawequal(L, -1, UP_RES_MT))
        luaL_typerror(L, idx, "tycho.res");
    lua_pop(L, 1);
    if (!(r = tycho_obj_req(box)))
        luaL_error(L, "request finished: this res belongs to a request that has ended");
    return r;
}

/*
 * The request behind res, which must not have its body yet. Status and
 * headers may still change after the body is set (nothing is written before
 * the handler and its middleware return), so middleware can add headers
 * after next(); a second body is an error.
 */
static struct tycho_req *check_no_body(lua_State *L, const char *fn)
{
    struct tycho_req *r = check_res(L, 1);

    if (r->res_flags & TYCHO_RES_SENT)
        luaL_error(L, "res:%s: the response body was already sent", fn);
    if (r->res_flags & TYCHO_RES_STREAM)
        luaL_error(L, "res:%s: the response is streamed (res:write); write the rest with "
                      "res:write", fn);
    return r;
}

/*
 * Whether r's head has gone (res:write): a status or header set now cannot
 * reach the client. Middleware that sets them after next() must keep
 * working on a streamed response, so this is logged, not raised.
 */
static bool head_sent(struct tycho_req *r, const char *fn, const char *what)
{
    if (!(r->res_flags & TYCHO_RES_STREAM))
        return false;
    tycho_log_warn("%s %.*s [request %.*s]: %s(%s) after the head of the streamed response "
                   "went (res:write): ignored",
                   r->method, (int)r->path_len, r->path, (int)r->id_len, r->id ? r->id : "", fn,
                   what);
    return true;
}

/* Header values: no control characters but tab (this is what stops response splitting). */
static int is_field_value(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

static int name_is(const char *name, size_t len, const char *want)
{
    return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

/* Appends "name: value\r\n" to the response headers; raises on bad input. */
static void add_header(lua_State *L, struct tycho_req *r, const char *fn, const char *name,
                       size_t name_len, const char *value, size_t value_len)
{
    if (!tycho_http_is_token(name, name_len))
        luaL_error(L, "%s: bad header name \"%s\"", fn, name);
    if (!is_field_value(value, value_len))
        luaL_error(L, "%s: the value of %s contains CR, LF, NUL or another control "
                      "character", fn, name);
    if (name_is(name, name_len, "content-length") || name_is(name, name_len, "transfer-encoding"))
        luaL_error(L, "%s: %s is set by the server", fn, name);
    if (name_is(name, name_len, "connection")) {
        if (value_len != 5 || strncasecmp(value, "close", 5) != 0)
            luaL_error(L, "%s: Connection can only be set to \"close\"", fn);
        r->res_flags |= TYCHO_RES_CLOSE;
        return;
    }
    if (name_is(name, name_len, "content-type"))
        r->res_flags |= TYCHO_RES_CONTENT_TYPE;
    else if (name_is(name, name_len, "content-encoding"))
        r->res_flags |= TYCHO_RES_CONTENT_ENCODING;
    else if (name_is(name, name_len, "server"))
        r->res_flags |= TYCHO_RES_SERVER;
    else if (name_is(name, name_len, "x-request-id"))
        r->res_flags |= TYCHO_RES_REQUEST_ID;
    if (tycho_http_add_header(r, name, name_len, value, value_len) < 0)
        luaL_error(L, "%s: out of memory", fn);
}

/* res:status(code) -> res. code: 200..599 (1xx are interim answers only the server sends). */
static int res_status(lua_State *L)
{
    struct tycho_req *r = check_res(L, 1);
    lua_Integer code = luaL_checkinteger(L, 2);

    luaL_argcheck(L, code >= 200 && code <= 599 && lua_tonumber(L, 2) == (lua_Number)code, 2,
                  "expected an HTTP status from 200 to 599");
    if (!head_sent(r, "res:status", lua_tostring(L, 2)))
        r->status = (int)code;
    lua_settop(L, 1);
    return 1;
}

/* res:header(name, value) -> res: sets the header, replacing any of the same name. */
static int res_header(lua_State *L)
{
    struct tycho_req *r = check_res(L, 1);
    size_t name_len, value_len;
    const char *name = luaL_checklstring(L, 2, &name_len);
    const char *value = luaL_checklstring(L, 3, &value_len);

    if (head_sent(r, "res:header", name)) {
        lua_settop(L, 1);
        return 1;
    }
    if (tycho_http_is_token(name, name_len))
        tycho_http_remove_header(r, name, name_len);
    add_header(L, r, "res:header", name, name_len, value, value_len);
    lua_settop(L, 1);
    return 1;
}

/* res:add_header(name, value) -> res: adds a line, keeping those of the same name (Set-Cookie). */
static int res_add_header(lua_State *L)
{
    struct tycho_req *r = check_res(L, 1);
    size_t name_len, value_len;
    const char *name = luaL_checklstring(L, 2, &name_len);
    const char *value = luaL_checklstring(L, 3, &value_len);

    if (!head_sent(r, "res:add_header", name))
        add_header(L, r, "res:add_header", name, name_len, value, value_len);
    lua_settop(L, 1);
    return 1;
}

/* res:get_header(name) -> the value of the first header of that name set so far, or nil. */
static int res_get_header(lua_State *L)
{
    struct tycho_req *r = check_res(L, 1);
    size_t name_len, at = 0, len;
    const char *name = luaL_checklstring(L, 2, &name_len);
    const char *line = tycho_http_find_header(r, &at, name, name_len, &len);

    if (!line) {
        lua_pushnil(L);
        return 1;
    }
    line += name_len + 1;
    len -= name_len + 1;
    while (len > 0 && (*line == ' ' || *line == '\t'))
        line++, len--;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    lua_pushlstring(L, line, len);
    return 1;
}

/* res:get_status() -> the status set so far (200 unless set). */
static int res_get_status(lua_State *L)
{
    struct tycho_req *r = check_res(L, 1);

    lua_pushinteger(L, r->status ? r->status : 200);
    return 1;
}

/* Copies the body string at idx into the response and marks it sent. */
static void set_body(lua_State *L, struct tycho_req *r, int idx)
{
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    char *body = len ? tycho_arena_alloc(&r->arena, len) : NULL;

    if (len && !body)
        luaL_error(L, "res:send: out of memory");
    if (len)
        memcpy(body, s, len);
    r->res_body = body;
    r->res_body_len = len;
    r->res_flags |= TYCHO_RES_SENT;
}

/* res:send([body]) -> res. body: a string or a number; none sends an empty body. */
static int res_send(lua_State *L)
{
    struct tycho_req *r = check_no_body(L, "send");

    if (lua_isnoneornil(L, 2))
        lua_pushliteral(L, "");
    else
        luaL_checkstring(L, 2);
    set_body(L, r, 2);
    lua_settop(L, 1);
    return 1;
}

struct json_body {
    lua_State *L;
    struct tycho_req *r;
    char *body;
    size_t len;
};

/* res:json's encoder hands the text here: copied into the request's arena, no Lua string. */
static void json_to_body(void *arg, const char *text, size_t len)
{
    struct json_body *jb = arg;

    if (!(jb->body = tycho_arena_alloc(&jb->r->arena, len)))   /* JSON text is never empty */
        luaL_error(jb->L, "res:json: out of memory");
    memcpy(jb->body, text, len);
    jb->len = len;
}

/*
 * The value at idx, encoded as JSON, becomes r's body, with Content-Type
 * application/json unless one was set. Raises on an unencodable value.
 */
static void json_into(lua_State *L, struct tycho_req *r, int idx)
{
    struct json_body jb = {L, r, NULL, 0};

    tycho_json_encode_to(L, idx, json_to_body, &jb);
    /* A header known to be valid: added without add_header's checks. */
    if (!(r->res_flags & TYCHO_RES_CONTENT_TYPE) &&
        tycho_http_add_header(r, "Content-Type", 12, "application/json", 16) < 0)
        luaL_error(L, "res:json: out of memory");
    r->res_flags |= TYCHO_RES_CONTENT_TYPE | TYCHO_RES_SENT;
    r->res_body = jb.body;
    r->res_body_len = jb.len;
}

/* res:json(value) -> res. Encodes as tycho.json.encode does; an unencodable value raises. */
static int res_json(lua_State *L)
{
    struct tycho_req *r = check_no_body(L, "json");

    luaL_checkany(L, 2);
    lua_settop(L, 2);
    json_into(L, r, 2);
    lua_settop(L, 1);
    return 1;
}

int tycho_bind_json_body(lua_State *L)
{
    json_into(L, lua_touserdata(L, 2), 1);
    return 0;
}

/* res:redirect(url[, code]) -> res. code: 300..399, default 302. */
static int res_redirect(lua_State *L)
{
    struct tycho_req *r = check_no_body(L, "redirect");
    size_t url_len;
    const char *url = luaL_checklstring(L, 2, &url_len);
    lua_Integer code = luaL_optinteger(L, 3, 302);

    luaL_argcheck(L, code >= 300 && code <= 399, 3, "expected a redirect status from 300 to 399");
    add_header(L, r, "res:redirect", "Location", 8, url, url_len);
    r->status = (int)code;
    lua_pushliteral(L, "");
    set_body(L, r, -1);
    lua_settop(L, 1);
    return 1;
}

/*
 * res:write(data) (C half; prelude.lua adds the wait): sends data as the
 * next piece of a streamed response, the head first if it has not gone.
 * Returns true, false when taken but the output is over its bound (the
 * caller, r's own handler, then waits), nil, "closed" when the client is
 * gone, or, for another task (which cannot wait), nil, "slow client" past
 * TYCHO_STREAM_SLOW_BYTES waiting.
 */
static int res_write(lua_State *L)
{
    struct tycho_req *r = check_res(L, 1);
    size_t len;
    const char *data;
    int rc;

    bool own;

    if (r->res_flags & TYCHO_RES_SENT)
        return luaL_error(L, "res:write: the response body was already sent (res:send, "
                             "res:json or res:redirect)");
    if ((r->res_flags & TYCHO_RES_STREAM) && tycho_stream_upgraded(r))
        return luaL_error(L, "res:write: this connection is a WebSocket's (use ws:send)");
    if (lua_type(L, 2) != LUA_TSTRING && lua_type(L, 2) != LUA_TNUMBER)
        return luaL_error(L, "res:write: expected a string, got %s", luaL_typename(L, 2));
    data = lua_tolstring(L, 2, &len);
    /* Another task cannot wait for this client: it is refused past a bound instead. */
    own = tycho_task_runs_request(L, r);
    if (!own && tycho_stream_waiting(r) >= TYCHO_STREAM_SLOW_BYTES) {
        lua_pushnil(L);
        lua_pushliteral(L, "slow client");
        return 2;
    }
    rc = tycho_stream_write(r, data, len);
    if (rc == TYCHO_ERR) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    lua_pushboolean(L, rc == TYCHO_OK || !own);
    return 1;
}

/* What a handler waiting for its output to drain holds (in its request's arena). */
struct drain_wait {
    struct tycho_wait w;              /* first: task.c's handle is this struct */
    struct tycho_req *r;
};

static void on_drained(struct tycho_req *r)
{
    tycho_task_wake(r->drained_arg);
}

static void drain_start(struct tycho_wait *w)
{
    struct drain_wait *d = (struct drain_wait *)w;

    if (tycho_stream_waiting(d->r) < d->r->drained_below || d->r->stream_closed) {
        tycho_task_wake(w);
        return;
    }
    d->r->on_drained = on_drained;
}

static void drain_cancel(struct tycho_wait *w)
{
    struct drain_wait *d = (struct drain_wait *)w;

    d->r->on_drained = NULL;
}

/*
 * res:_drain(all): suspends the handler until fewer than
 * TYCHO_STREAM_LOW_BYTES (all: no byte) of its output wait for the socket.
 * A client that leaves meanwhile ends the handler (it is not resumed).
 */
static int res_drain(lua_State *L)
{
    struct tycho_req *r = check_res(L, 1);
    struct drain_wait *d;

    if (!(r->res_flags & TYCHO_RES_STREAM) || r->stream_closed || tycho_stream_upgraded(r) ||
        !tycho_task_runs_request(L, r))
        return 0;                     /* only r's own handler waits on r's connection */
    r->drained_below = lua_toboolean(L, 2) ? 1 : TYCHO_STREAM_LOW_BYTES;
    if (tycho_stream_waiting(r) < r->drained_below)
        return 0;
    /* One per request, made at its first wait: a long stream's waits take no more memory. */
    if (!(d = r->drained_arg) && !(d = r->drained_arg = tycho_arena_alloc(&r->arena, sizeof(*d))))
        return luaL_error(L, "res:write: out of memory");
    d->w.start = drain_start;
    d->w.cancel = drain_cancel;
    d->r = r;
    return tycho_task_wait(L, &d->w, "res:write");
}

/* res:_closed() -> whether a write failed because the client is gone. */
static int res_closed(lua_State *L)
{
    lua_pushboolean(L, check_res(L, 1)->stream_closed);
    return 1;
}

static int res_tostring(lua_State *L)
{
    const struct tycho_obj_box *box = lua_touserdata(L, 1);

    lua_pushstring(L, box && tycho_obj_req(box) ? "tycho.res" : "tycho.res (finished)");
    return 1;
}

static const luaL_Reg res_methods[] = {
    {"status", res_status},         {"header", res_header},
    {"add_header", res_add_header}, {"get_header", res_get_header},
    {"get_status", res_get_status}, {"send", res_send},
    {"redirect", res_redirect},     {"write", res_write},
    {"json", res_json},             {"_drain", res_drain},
    {"_closed", res_closed},
    {NULL, NULL},
};

void tycho_bind_res_metatable(lua_State *L)
{
    int mt;

    luaL_newmetatable(L, "tycho.res");
    mt = lua_gettop(L);
    lua_newtable(L);                  /* the methods */
    lua_pushvalue(L, mt);
    luaL_setfuncs(L, res_methods, 1);
    lua_setfield(L, mt, "__index");   /* pops methods */
    lua_pushcfunction(L, res_tostring);
    lua_setfield(L, mt, "__tostring");
    lua_pushliteral(L, "tycho.res");
    lua_setfield(L, mt, "__metatable");
}
