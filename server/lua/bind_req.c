/*
 * bind_req.c: the `req` object a handler receives. A userdata holding a
 * tycho_obj_box (task.h): the request's slot in its task and the slot's
 * serial when the object was made. The task bumps the serial when the
 * request ends, so a stashed req raises "request finished" instead of
 * reading freed memory. Fields are made when read: strings are pushed on each
 * read, tables (query, params, headers) are built on first read and cached in
 * the userdata's environment table. Runs on the worker thread inside the
 * request coroutine; raises only on misuse.
 */
#include "lua/bind.h"
#include "lua/task.h"
#include "http/body.h"
#include "http/conn.h"
#include "http/http.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* Upvalues of req_index. */
#define UP_REQ_MT lua_upvalueindex(1)
#define UP_HEADERS_MT lua_upvalueindex(2)
#define UP_NO_CACHE lua_upvalueindex(3)
#define UP_METHODS lua_upvalueindex(4)

/* The fields the server gives a req; any other name is the app's own (req.user = ...). */
static const char *const builtin_fields[] = {"id", "path", "body", "query", "method", "params",
                                             "headers", "remote_addr", "query_string",
                                             "cookies", "scheme", NULL};

/* Returns the live request behind the req at idx; raises on misuse. */
static struct tycho_req *check_req(lua_State *L, int idx)
{
    const struct tycho_obj_box *box = lua_touserdata(L, idx);
    struct tycho_req *r;

    if (!box || !lua_getmetatable(L, idx) || !lua_rawequal(L, -1, UP_REQ_MT))
        luaL_typerror(L, idx, "tycho.req");
    lua_pop(L, 1);
    if (!(r = tycho_obj_req(box)))
        luaL_error(L, "request finished: this req belongs to a request that has ended");
    return r;
}

/*
 * The live request behind the req at 1 of a metamethod (__index,
 * __newindex): the VM calls these only for a userdata whose metatable is
 * req's (hidden behind __metatable), so only the end of its request is
 * checked. Raises "request finished".
 */
static struct tycho_req *self_req(lua_State *L)
{
    struct tycho_req *r = tycho_obj_req(lua_touserdata(L, 1));

    if (!r)
        luaL_error(L, "request finished: this req belongs to a request that has ended");
    return r;
}

static int hex_value(int c)
{
    return isdigit(c) ? c - '0' : (tolower(c) - 'a' + 10);
}

/* Pushes s percent-decoded ("+" as space too when plus_space). */
static void push_decoded(lua_State *L, const char *s, size_t len, int plus_space)
{
    luaL_Buffer b;

    if (!memchr(s, '%', len) && !(plus_space && memchr(s, '+', len))) {
        lua_pushlstring(L, s, len);
        return;
    }
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%' && i + 2 < len && isxdigit((unsigned char)s[i + 1]) &&
            isxdigit((unsigned char)s[i + 2])) {
            luaL_addchar(&b, (char)(hex_value((unsigned char)s[i + 1]) * 16 +
                                    hex_value((unsigned char)s[i + 2])));
            i += 2;
        } else if (c == '+' && plus_space) {
            luaL_addchar(&b, ' ');
        } else {
            luaL_addchar(&b, (char)c);
        }
    }
    luaL_pushresult(&b);
}

/*
 * Reads the urlencoded pairs of s (a query string, a form body) into the
 * table on top: every key its last value; or, with want (a decoded key),
 * only that key's values, appended in order.
 */
static void read_pairs(lua_State *L, const char *s, size_t len, const char *want,
                       size_t want_len)
{
    const char *p = s, *end = s ? s + len : NULL;
    int n = 0;

    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pair_end = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(pair_end - p));
        const char *key_end = eq ? eq : pair_end;

        if (key_end > p) {
            push_decoded(L, p, (size_t)(key_end - p), 1);
            if (want && !(lua_objlen(L, -1) == want_len &&
                          memcmp(lua_tostring(L, -1), want, want_len) == 0)) {
                lua_pop(L, 1);
            } else {
                if (eq)
                    push_decoded(L, eq + 1, (size_t)(pair_end - eq - 1), 1);
                else
                    lua_pushliteral(L, "");
                if (want) {
                    lua_remove(L, -2);
                    lua_rawseti(L, -2, ++n);
                } else {
                    lua_rawset(L, -3);
                }
            }
        }
        p = pair_end + 1;
    }
}

/* Pushes a table of the decoded query parameters; a repeated key keeps its last value. */
static void push_query(lua_State *L, const struct tycho_req *r)
{
    lua_newtable(L);
    read_pairs(L, r->query, r->query_len, NULL, 0);
}

/* Pushes the request's cookies (every Cookie header), name -> value; the first of a name wins. */
static void push_cookies(lua_State *L, const struct tycho_req *r)
{
    lua_newtable(L);
    for (unsigned i = 0; i < r->nheaders; i++) {
        const struct tycho_header *h = &r->headers[i];
        const char *p = h->value, *end = h->value + h->value_len;
        if (h->name_len != 6 || strncasecmp(h->name, "cookie", 6) != 0)
            continue;
        while (p < end) {
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *pair_end = semi ? semi : end, *eq;
            while (p < pair_end && (*p == ' ' || *p == '\t'))
                p++;
            eq = memchr(p, '=', (size_t)(pair_end - p));
            if (eq && eq > p) {
                const char *v = eq + 1, *v_end = pair_end;
                while (v_end > v && (v_end[-1] == ' ' || v_end[-1] == '\t'))
                    v_end--;
                if (v_end - v >= 2 && *v == '"' && v_end[-1] == '"')
                    v++, v_end--;            /* a quoted value: the quotes are not part of it */
                lua_pushlstring(L, p, (size_t)(eq - p));
                lua_pushvalue(L, -1);
                lua_rawget(L, -3);
                if (lua_isnil(L, -1)) {
                    lua_pop(L, 1);
                    lua_pushlstring(L, v, (size_t)(v_end - v));
                    lua_rawset(L, -3);
                } else {
                    lua_pop(L, 2);
                }
            }
            p = pair_end + 1;
        }
    }
}

/* req:query_all(name) -> every value of name in the query string, in order (maybe none). */
static int req_query_all(lua_State *L)
{
    struct tycho_req *r = check_req(L, 1);
    size_t len;
    const char *want = luaL_checklstring(L, 2, &len);

    lua_newtable(L);
    read_pairs(L, r->query, r->query_len, want, len);
    return 1;
}

/*
 * req:get_header(name) -> the value of header name (any spelling; repeated
 * headers joined with ", ", as in req.headers), or nil: found in C, without
 * building the req.headers table.
 */
static int req_get_header(lua_State *L)
{
    struct tycho_req *r = check_req(L, 1);
    size_t len;
    const char *name = luaL_checklstring(L, 2, &len);
    bool found = false;

    for (unsigned i = 0; i < r->nheaders; i++) {
        const struct tycho_header *h = &r->headers[i];
        if (h->name_len != len || strncasecmp(h->name, name, len) != 0)
            continue;
        if (found)
            lua_pushliteral(L, ", ");
        lua_pushlstring(L, h->value, h->value_len);
        if (found)
            lua_concat(L, 3);
        found = true;
    }
    if (!found)
        lua_pushnil(L);
    return 1;
}

/* tycho_form_all(body, name) / tycho_form(body): a urlencoded body read as req.query is. */
static int form_pairs(lua_State *L)
{
    size_t len, want_len = 0;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *want = luaL_optlstring(L, 2, NULL, &want_len);

    lua_newtable(L);
    read_pairs(L, s, len, want, want_len);
    return 1;
}

/* Pushes a table of the route parameters, percent-decoded. */
static void push_params(lua_State *L, const struct tycho_req *r)
{
    const struct tycho_route_match *m = &r->match;

    lua_createtable(L, 0, (int)m->nparams);
    for (unsigned i = 0; i < m->nparams; i++) {
        lua_pushstring(L, m->param_names[i]);
        push_decoded(L, m->param_values[i].at, m->param_values[i].len, 0);
        lua_rawset(L, -3);
    }
}

/* Pushes s lower-cased (a header name: on the C stack when short, as nearly all are). */
static void push_lower(lua_State *L, const char *s, size_t len)
{
    char small[64];
    luaL_Buffer b;

    if (len <= sizeof(small)) {
        for (size_t i = 0; i < len; i++)
            small[i] = (char)tolower((unsigned char)s[i]);
        lua_pushlstring(L, small, len);
        return;
    }
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i++)
        luaL_addchar(&b, (char)tolower((unsigned char)s[i]));
    luaL_pushresult(&b);
}

/* Pushes the headers table: lower-case names, repeated headers joined with ", ". */
static void push_headers(lua_State *L, const struct tycho_req *r)
{
    lua_createtable(L, 0, (int)r->nheaders);
    for (unsigned i = 0; i < r->nheaders; i++) {
        const struct tycho_header *h = &r->headers[i];
        push_lower(L, h->name, h->name_len);
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, h->value, h->value_len);
        } else {
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, h->value, h->value_len);
            lua_concat(L, 3);
        }
        lua_rawset(L, -3);
    }
    lua_pushvalue(L, UP_HEADERS_MT);
    lua_setmetatable(L, -2);
}

/* headers.__index: any spelling of a name finds its lower-case key. */
static int headers_index(lua_State *L)
{
    size_t len;
    const char *k = lua_tolstring(L, 2, &len);

    if (!k || lua_type(L, 2) != LUA_TSTRING)
        return 0;
    push_lower(L, k, len);
    lua_rawget(L, 1);
    return 1;
}

/*
 * Pushes the table of the req at 1 that holds its cached fields and the
 * app's own (its environment), making it on first use (until then the
 * environment is the shared "no cache" marker).
 */
static void push_fields(lua_State *L)
{
    lua_getfenv(L, 1);
    if (lua_rawequal(L, -1, UP_NO_CACHE)) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 3);
        lua_pushvalue(L, -1);
        lua_setfenv(L, 1);
    }
}

/* Pushes the cached table named key (building it with build on first use). */
static int push_cached(lua_State *L, const struct tycho_req *r, const char *key,
                       void (*build)(lua_State *, const struct tycho_req *))
{
    push_fields(L);
    lua_getfield(L, -1, key);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        build(L, r);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, key);
    }
    return 1;
}

static int req_index(lua_State *L)
{
    struct tycho_req *r = self_req(L);
    size_t len;
    const char *k = lua_tolstring(L, 2, &len);
    char addr[64];

    if (!k)
        return 0;
    switch (len) {
    case 2:
        if (memcmp(k, "id", 2) == 0) {
            lua_pushlstring(L, r->id ? r->id : "", r->id_len);
            return 1;
        }
        break;
    case 4:
        if (memcmp(k, "path", 4) == 0) {
            lua_pushlstring(L, r->path, r->path_len);
            return 1;
        }
        if (memcmp(k, "body", 4) == 0) {
            if (r->stream_body)
                return 0;             /* read with req:read */
            lua_pushlstring(L, r->body ? r->body : "", r->body_len);
            return 1;
        }
        break;
    case 5:
        if (memcmp(k, "query", 5) == 0)
            return push_cached(L, r, "query", push_query);
        break;
    case 6:
        if (memcmp(k, "method", 6) == 0) {
            lua_pushlstring(L, r->method, r->method_len);
            return 1;
        }
        if (memcmp(k, "scheme", 6) == 0) {
            lua_pushstring(L, tycho_req_https(r) ? "https" : "http");
            return 1;
        }
        if (memcmp(k, "params", 6) == 0)
            return push_cached(L, r, "params", push_params);
        break;
    case 7:
        if (memcmp(k, "headers", 7) == 0)
            return push_cached(L, r, "headers", push_headers);
        if (memcmp(k, "cookies", 7) == 0)
            return push_cached(L, r, "cookies", push_cookies);
        break;
    case 12:
        if (memcmp(k, "query_string", 12) == 0) {
            lua_pushlstring(L, r->query ? r->query : "", r->query_len);
            return 1;
        }
        break;
    case 11:
        if (memcmp(k, "remote_addr", 11) == 0) {
            lua_pushlstring(L, addr, tycho_req_client(r, addr, sizeof(addr)));
            return 1;
        }
        break;
    }
    /* A method (req:json, ...), else a field the app set (req.user), else nil. */
    lua_pushvalue(L, 2);
    lua_rawget(L, UP_METHODS);
    if (!lua_isnil(L, -1))
        return 1;
    lua_getfenv(L, 1);
    if (lua_rawequal(L, -1, UP_NO_CACHE))
        return 0;
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

/* req.NAME = value: the app's own fields (middleware to handler); the server's stay read-only. */
static int req_newindex(lua_State *L)
{
    const char *k = luaL_checkstring(L, 2);

    self_req(L);
    for (int i = 0; builtin_fields[i]; i++)
        if (strcmp(k, builtin_fields[i]) == 0)
            return luaL_error(L, "req.%s is read-only (set a field of your own: req.user = ...)",
                              k);
    lua_pushvalue(L, 2);
    lua_rawget(L, UP_METHODS);
    if (!lua_isnil(L, -1))
        return luaL_error(L, "req.%s is a method: choose another name", k);
    lua_pop(L, 1);
    push_fields(L);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, -3);
    return 0;
}

/*
 * req:_read(n) -> up to n bytes of a streamed body; nil at its end; false
 * when none came yet (the prelude's req:read then waits with _wait_body and
 * asks again: C frames cannot be resumed in LuaJIT); nil, status when it
 * failed (413, 408, 400: body.h).
 */
static int req_read(lua_State *L)
{
    struct tycho_req *r = check_req(L, 1);
    lua_Number n = luaL_checknumber(L, 2);
    const char *data;
    size_t len;

    luaL_argcheck(L, n >= 1 && n == (lua_Number)(long long)n, 2,
                  "expected a whole number of bytes, 1 or more");
    if (!tycho_task_runs_request(L, r))
        return luaL_error(L, "req:read: only in the handler of the request itself (its body "
                             "has one reader)");
    if (!r->stream_body)
        return luaL_error(L, "req:read: the body of this route is not streamed: read req.body, "
                             "or register the route with { stream_body = true }");
    switch (tycho_body_read(r, n > 1e9 ? (size_t)1e9 : (size_t)n, &data, &len)) {
    case TYCHO_BODY_DATA:
        lua_pushlstring(L, data, len);
        return 1;
    case TYCHO_BODY_END:
        lua_pushnil(L);
        return 1;
    case TYCHO_BODY_WAIT:
        lua_pushboolean(L, 0);
        return 1;
    case TYCHO_BODY_FAILED:
    default:
        lua_pushnil(L);
        lua_pushinteger(L, r->body_error);
        return 2;
    }
}

/* What a handler waiting for body bytes holds (in its request's arena). */
struct body_wait {
    struct tycho_wait w;              /* first: task.c's handle is this struct */
    struct tycho_req *r;
};

static void on_body(struct tycho_req *r)
{
    tycho_task_wake(r->body_arg);
}

static void body_wait_start(struct tycho_wait *w)
{
    struct body_wait *b = (struct body_wait *)w;

    tycho_body_wait(b->r, on_body, b);
}

static void body_wait_cancel(struct tycho_wait *w)
{
    tycho_body_unwait(((struct body_wait *)w)->r);
}

/* req:_wait_body(): suspends the handler until body bytes came (or the wait failed). */
static int req_wait_body(lua_State *L)
{
    struct tycho_req *r = check_req(L, 1);
    struct body_wait *b = r->body_arg;

    if (!tycho_task_runs_request(L, r))
        return luaL_error(L, "req:read: only in the handler of the request itself (its body "
                             "has one reader)");
    /* One per request, made at its first wait: a long body's waits take no more memory. */
    if (!b && !(b = tycho_arena_alloc(&r->arena, sizeof(*b))))
        return luaL_error(L, "req:read: out of memory");
    b->w.start = body_wait_start;
    b->w.cancel = body_wait_cancel;
    b->r = r;
    r->body_arg = b;
    return tycho_task_wait(L, &b->w, "req:read");
}

/* req:_streamed() -> whether the route reads its body with req:read. */
static int req_streamed(lua_State *L)
{
    lua_pushboolean(L, check_req(L, 1)->stream_body);
    return 1;
}

/* req's methods written in C (the prelude wraps the _ ones and adds the rest). */
static const luaL_Reg req_c_methods[] = {
    {"query_all", req_query_all}, {"get_header", req_get_header}, {"_read", req_read},
    {"_wait_body", req_wait_body}, {"_streamed", req_streamed},    {NULL, NULL},
};

static int req_tostring(lua_State *L)
{
    const struct tycho_obj_box *box = lua_touserdata(L, 1);
    struct tycho_req *r = box ? tycho_obj_req(box) : NULL;

    if (!r)
        lua_pushliteral(L, "tycho.req (finished)");
    else {
        lua_pushfstring(L, "tycho.req (%s ", r->method);
        lua_pushlstring(L, r->path, r->path_len);
        lua_pushliteral(L, ")");
        lua_concat(L, 3);
    }
    return 1;
}

/* Upvalues of new_objects. */
#define UP_NEW_REQ_MT lua_upvalueindex(1)
#define UP_NEW_RES_MT lua_upvalueindex(2)

/*
 * new_objects(r): the req and res objects for one request (called by the
 * prelude). Both take new_objects' environment, the "no cache yet" marker
 * (lua_newuserdata gives a userdata the running C function's), so req needs
 * no lua_setfenv until a table field is read. Nothing anchors them: they
 * reach r through its task's slot, which forgets r when the request ends.
 */
static int new_objects(lua_State *L)
{
    struct tycho_req_objects *slot = tycho_task_objects(lua_touserdata(L, 1));
    struct tycho_obj_box *req_box, *res_box;

    req_box = lua_newuserdata(L, sizeof(*req_box));       /* 2 */
    req_box->slot = slot;
    req_box->serial = slot->serial;
    lua_pushvalue(L, UP_NEW_REQ_MT);
    lua_setmetatable(L, 2);
    res_box = lua_newuserdata(L, sizeof(*res_box));       /* 3 */
    res_box->slot = slot;
    res_box->serial = slot->serial;
    lua_pushvalue(L, UP_NEW_RES_MT);
    lua_setmetatable(L, 3);
    slot->res_mt = lua_topointer(L, UP_NEW_RES_MT);
    return 2;
}

void tycho_bind_objects(lua_State *L)
{
    int req_mt, headers_mt, no_cache, methods;

    luaL_newmetatable(L, "tycho.req");
    req_mt = lua_gettop(L);
    lua_newtable(L);
    headers_mt = lua_gettop(L);
    lua_pushcfunction(L, headers_index);
    lua_setfield(L, headers_mt, "__index");
    lua_newtable(L);
    no_cache = lua_gettop(L);
    lua_newtable(L);                  /* req's methods: query_all, get_header, the prelude's */
    methods = lua_gettop(L);
    lua_pushvalue(L, req_mt);
    luaL_setfuncs(L, req_c_methods, 1);  /* each with the req metatable as its upvalue */

    lua_pushvalue(L, req_mt);
    lua_pushvalue(L, headers_mt);
    lua_pushvalue(L, no_cache);
    lua_pushvalue(L, methods);
    lua_pushcclosure(L, req_index, 4);
    lua_setfield(L, req_mt, "__index");
    lua_pushvalue(L, req_mt);
    lua_pushvalue(L, headers_mt);
    lua_pushvalue(L, no_cache);
    lua_pushvalue(L, methods);
    lua_pushcclosure(L, req_newindex, 4);
    lua_setfield(L, req_mt, "__newindex");
    lua_pushcfunction(L, req_tostring);
    lua_setfield(L, req_mt, "__tostring");
    lua_pushliteral(L, "tycho.req");
    lua_setfield(L, req_mt, "__metatable");

    lua_pushvalue(L, req_mt);
    tycho_bind_res_metatable(L);    /* pushes res_mt */
    lua_pushcclosure(L, new_objects, 2);
    lua_pushvalue(L, no_cache);     /* its environment: the one of the userdata it makes */
    lua_setfenv(L, -2);
    lua_replace(L, req_mt);
    lua_pushvalue(L, methods);
    lua_replace(L, req_mt + 1);
    luaL_getmetatable(L, "tycho.res");
    lua_getfield(L, -1, "__index");  /* res's methods */
    lua_replace(L, req_mt + 2);
    lua_pop(L, 1);
    lua_pushcfunction(L, form_pairs);
    lua_replace(L, req_mt + 3);
    lua_settop(L, req_mt + 3);      /* leaves new_objects, req's and res's methods, form_pairs */
}
