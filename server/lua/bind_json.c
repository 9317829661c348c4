/*
 * bind_json.c: tycho.json, JSON that keeps what lua-cjson 2.1.0 (Debian's)
 * loses: an empty array stays [] (arrays carry a marker metatable, and
 * tycho.json.array(t) marks one), integers are exact to 2^63 (cjson writes
 * 14 significant digits), and an error names the path of the value that
 * cannot be encoded. Encoding is written here, straight into a Lua buffer
 * (res:json's hot path); decoding is Jansson's (libjansson), then walked
 * into Lua values: null is tycho.null, an integer beyond 2^53 a string of
 * its digits. Any place; misuse raises.
 */
#include "lua/bind.h"

#include <jansson.h>
#include <lauxlib.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_MT "tycho.json.array"
/* Nesting deeper than this is refused both ways (a cycle, or a hostile body). */
#define MAX_DEPTH 128
/* Integers a double holds exactly; beyond them a decoded integer is a string. */
#define EXACT_INT 9007199254740992LL

/* ---- encoding ---------------------------------------------------------------------- */

struct enc {
    lua_State *L;
    luaL_Buffer b;
    char path[256];                   /* where the value being written is, for errors */
};

static void encode_value(struct enc *e, int idx, int depth);

static void add_string(luaL_Buffer *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    luaL_addchar(b, '"');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            run++;
            continue;
        }
        luaL_addlstring(b, s + i - run, run);
        run = 0;
        luaL_addchar(b, '\\');
        switch (c) {
        case '"': luaL_addchar(b, '"'); break;
        case '\\': luaL_addchar(b, '\\'); break;
        case '\n': luaL_addchar(b, 'n'); break;
        case '\r': luaL_addchar(b, 'r'); break;
        case '\t': luaL_addchar(b, 't'); break;
        default:
            luaL_addlstring(b, "u00", 3);
            luaL_addchar(b, hex[c >> 4]);
            luaL_addchar(b, hex[c & 15]);
        }
    }
    luaL_addlstring(b, s + len - run, run);
    luaL_addchar(b, '"');
}

static void add_number(struct enc *e, double d)
{
    char text[32];
    int n;

    if (isnan(d) || isinf(d))
        luaL_error(e->L, "tycho.json.encode: %s is %f, which JSON cannot hold", e->path, d);
    if (d == floor(d) && fabs(d) < 9.2e18)
        n = snprintf(text, sizeof(text), "%lld", (long long)d);   /* every digit, exact */
    else                              /* the shortest form that reads back as d */
        for (int digits = 15; digits <= 17; digits++) {
            n = snprintf(text, sizeof(text), "%.*g", digits, d);
            if (strtod(text, NULL) == d)
                break;
        }
    luaL_addlstring(&e->b, text, (size_t)n);
}

/* The length of the table at idx as an array (1..n, no holes), or -1 for an object. */
static long array_length(lua_State *L, int idx)
{
    long n = 0, max = 0;

    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        lua_Number k;
        if (lua_type(L, -2) != LUA_TNUMBER || (k = lua_tonumber(L, -2)) < 1 || k != floor(k)) {
            lua_pop(L, 2);
            return -1;
        }
        if (k > max)
            max = (long)k;
        n++;
    }
    return n == max ? n : -1;
}

/* Appends ".key" or "[i]" to the path for errors; returns the old length to restore. */
static size_t path_push(struct enc *e, lua_State *L, int key_idx)
{
    size_t old = strlen(e->path);

    if (lua_type(L, key_idx) == LUA_TNUMBER)
        snprintf(e->path + old, sizeof(e->path) - old, "[%d]", (int)lua_tonumber(L, key_idx));
    else
        snprintf(e->path + old, sizeof(e->path) - old, ".%s", lua_tostring(L, key_idx));
    return old;
}

static void encode_array(struct enc *e, int idx, long n, int depth)
{
    lua_State *L = e->L;

    luaL_addchar(&e->b, '[');
    for (long i = 1; i <= n; i++) {
        size_t old;
        if (i > 1)
            luaL_addchar(&e->b, ',');
        lua_pushnumber(L, (lua_Number)i);
        old = path_push(e, L, lua_gettop(L));
        lua_pop(L, 1);
        lua_rawgeti(L, idx, (int)i);
        encode_value(e, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
        e->path[old] = '\0';
    }
    luaL_addchar(&e->b, ']');
}

static void encode_object(struct enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    bool first = true;

    luaL_addchar(&e->b, '{');
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        size_t klen, old;
        const char *k;
        if (lua_type(L, -2) != LUA_TSTRING && lua_type(L, -2) != LUA_TNUMBER)
            luaL_error(L, "tycho.json.encode: %s has a %s key; JSON keys are strings", e->path,
                       luaL_typename(L, -2));
        if (!first)
            luaL_addchar(&e->b, ',');
        first = false;
        lua_pushvalue(L, -2);         /* a copy: tolstring must not turn the key into a string */
        k = lua_tolstring(L, -1, &klen);
        add_string(&e->b, k, klen);
        luaL_addchar(&e->b, ':');
        old = path_push(e, L, lua_gettop(L));
        lua_pop(L, 1);
        encode_value(e, lua_gettop(L), depth + 1);
        e->path[old] = '\0';
    }
    luaL_addchar(&e->b, '}');
}

static void encode_value(struct enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    size_t len;
    const char *s;

    if (depth > MAX_DEPTH)
        luaL_error(L, "tycho.json.encode: %s is nested over %d levels (a cycle?)", e->path,
                   MAX_DEPTH);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        luaL_addlstring(&e->b, "null", 4);
        return;
    case LUA_TBOOLEAN:
        luaL_addstring(&e->b, lua_toboolean(L, idx) ? "true" : "false");
        return;
    case LUA_TNUMBER:
        add_number(e, lua_tonumber(L, idx));
        return;
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        add_string(&e->b, s, len);
        return;
    case LUA_TLIGHTUSERDATA:
        if (!lua_touserdata(L, idx)) {
            luaL_addlstring(&e->b, "null", 4);   /* tycho.null (cjson.null) */
            return;
        }
        break;
    case LUA_TTABLE: {
        bool marked = false;
        long n;
        if (lua_getmetatable(L, idx)) {
            luaL_getmetatable(L, ARRAY_MT);
            marked = lua_rawequal(L, -1, -2);
            lua_pop(L, 2);
        }
        n = array_length(L, idx);
        if (marked && n < 0)
            luaL_error(L, "tycho.json.encode: %s is marked an array but has other keys",
                       e->path);
        /* An empty table is an object unless marked: {} stays {}, tycho.json.array{} is []. */
        if (n > 0 || (marked && n == 0))
            encode_array(e, idx, n, depth);
        else
            encode_object(e, idx, depth);
        return;
    }
    default:
        break;
    }
    luaL_error(L, "tycho.json.encode: %s is a %s, which JSON cannot hold", e->path,
               luaL_typename(L, idx));
}

/* tycho.json.encode(value) -> the JSON text (res:json's encoder too). */
int tycho_json_encode(lua_State *L)
{
    struct enc e;

    luaL_checkany(L, 1);
    lua_settop(L, 1);
    e.L = L;
    strcpy(e.path, "the value");
    luaL_buffinit(L, &e.b);
    encode_value(&e, 1, 0);
    luaL_pushresult(&e.b);
    return 1;
}

/* ---- decoding -------------------------------------------------------------------------- */

static void push_json(lua_State *L, json_t *v, int depth)
{
    const char *key;
    json_t *item;
    size_t i;
    char text[24];

    luaL_checkstack(L, 4, "tycho.json.decode: nested too deep");
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        lua_createtable(L, 0, (int)json_object_size(v));
        json_object_foreach(v, key, item) {
            push_json(L, item, depth + 1);
            lua_setfield(L, -2, key);
        }
        return;
    case JSON_ARRAY:
        lua_createtable(L, (int)json_array_size(v), 0);
        json_array_foreach(v, i, item) {
            push_json(L, item, depth + 1);
            lua_rawseti(L, -2, (int)i + 1);
        }
        luaL_getmetatable(L, ARRAY_MT);
        lua_setmetatable(L, -2);      /* so that [] encodes as [] again */
        return;
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER: {
        json_int_t n = json_integer_value(v);
        if (n >= -EXACT_INT && n <= EXACT_INT) {
            lua_pushnumber(L, (lua_Number)n);
        } else {
            snprintf(text, sizeof(text), "%" JSON_INTEGER_FORMAT, n);
            lua_pushstring(L, text);  /* every digit kept */
        }
        return;
    }
    case JSON_REAL:
        lua_pushnumber(L, json_real_value(v));
        return;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        return;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        return;
    case JSON_NULL:
        lua_pushlightuserdata(L, NULL);   /* tycho.null */
        return;
    }
}

/*
 * tycho.json.decode(text) -> the value, or nil and why ("line 1, column 6:
 * ..."). Any JSON value at the top; integers too large for 64 bits fail.
 */
int tycho_json_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    json_error_t err;
    json_t *root = json_loadb(s, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);

    if (!root) {
        lua_pushnil(L);
        lua_pushfstring(L, "line %d, column %d: %s", err.line, err.column, err.text);
        return 2;
    }
    push_json(L, root, 0);
    json_decref(root);
    return 1;
}

/* tycho.json.array([t]) -> t (a new table if none), marked to encode as an array, even empty. */
static int json_mark_array(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
    }
    luaL_getmetatable(L, ARRAY_MT);
    lua_setmetatable(L, 1);
    return 1;
}

void tycho_bind_json(lua_State *L)
{
    luaL_newmetatable(L, ARRAY_MT);
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, tycho_json_encode);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, tycho_json_decode);
    lua_setfield(L, -2, "decode");
    lua_pushcfunction(L, json_mark_array);
    lua_setfield(L, -2, "array");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_setfield(L, -2, "json");
}
