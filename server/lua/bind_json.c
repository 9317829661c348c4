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
#define MAX_DEPTH 128     /* (written out in a message below) */
/* Integers a double holds exactly; beyond them a decoded integer is a string. */
#define EXACT_INT 9007199254740992LL

/* ---- encoding ---------------------------------------------------------------------- */

/*
 * The text is built in `stack` while it fits, then in a userdata kept at
 * stack slot 2 (so the GC frees it if an error unwinds). A luaL_Buffer
 * would share the Lua stack with the values being walked.
 */
struct enc {
    lua_State *L;
    char *data;
    size_t len, cap;
    char stack[4096];
    int keep;                         /* the stack slot where a grown buffer is kept */
    bool where;                       /* errors name the caller's line (a Lua caller's) */
    /*
     * Where the value being written is, for errors, made only then: per
     * level, the stack index of its key (an object's) or minus its position
     * (an array's).
     */
    int at[MAX_DEPTH + 2];
    int depth;
};

static void encode_value(struct enc *e, int idx, int depth);

/* Makes room for n more bytes. */
static void grow(struct enc *e, size_t n)
{
    size_t cap = e->cap * 2 > e->len + n ? e->cap * 2 : e->len + n;
    char *data = lua_newuserdata(e->L, cap);

    memcpy(data, e->data, e->len);
    lua_replace(e->L, e->keep);       /* the old one (if any) may go now */
    e->data = data;
    e->cap = cap;
}

static inline void room(struct enc *e, size_t n)
{
    if (e->len + n > e->cap)
        grow(e, n);
}

static inline void put(struct enc *e, const char *s, size_t n)
{
    room(e, n);
    memcpy(e->data + e->len, s, n);
    e->len += n;
}

static inline void put_char(struct enc *e, char c)
{
    room(e, 1);
    e->data[e->len++] = c;
}

/* Raises "tycho.json.encode: PATH " .. fmt, PATH made from e->at (the value, .a, [2], ...). */
static int fail(struct enc *e, const char *fmt, const char *a, const char *b)
{
    lua_State *L = e->L;
    char path[512];
    size_t n = (size_t)snprintf(path, sizeof(path), "the value");

    for (int i = 1; i <= e->depth && n < sizeof(path) - 1; i++)
        n += (size_t)(e->at[i] < 0 ? snprintf(path + n, sizeof(path) - n, "[%d]", -e->at[i])
                                   : snprintf(path + n, sizeof(path) - n, ".%s",
                                              lua_tostring(L, e->at[i])));
    if (e->where) {
        luaL_where(L, 1);
        lua_pushfstring(L, fmt, path, a, b);
        lua_concat(L, 2);
    } else {
        lua_pushfstring(L, fmt, path, a, b);
    }
    return lua_error(L);
}

/* A JSON string: quotes, \" \\ \n \r \t, other control bytes as \u00XX; the rest as is. */
static void add_string(struct enc *e, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char *out;

    room(e, 2 + 6 * len);             /* the most it can take: every byte \u00XX */
    out = e->data + e->len;
    *out++ = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\n': *out++ = 'n'; break;
        case '\r': *out++ = 'r'; break;
        case '\t': *out++ = 't'; break;
        default:
            memcpy(out, "u00", 3);
            out[3] = hex[c >> 4];
            out[4] = hex[c & 15];
            out += 5;
        }
    }
    *out++ = '"';
    e->len = (size_t)(out - e->data);
}

static void add_number(struct enc *e, double d)
{
    char text[32];
    int n;

    if (isnan(d) || isinf(d))
        fail(e, "tycho.json.encode: %s is %s%s, which JSON cannot hold", isnan(d) ? "nan" : "",
             isnan(d) ? "" : d > 0 ? "inf" : "-inf");
    if (d == floor(d) && fabs(d) < 9.2e18)
        n = snprintf(text, sizeof(text), "%lld", (long long)d);   /* every digit, exact */
    else                              /* the shortest form that reads back as d */
        for (int digits = 15; digits <= 17; digits++) {
            n = snprintf(text, sizeof(text), "%.*g", digits, d);
            if (strtod(text, NULL) == d)
                break;
        }
    put(e, text, (size_t)n);
}

/* The length of the table at idx as an array (1..n, no holes), or -1 for an object. */
static long array_length(lua_State *L, int idx)
{
    long n = 0, max = 0;

    if (lua_objlen(L, idx) == 0) {    /* no [1]: an object, or empty (one step to tell) */
        lua_pushnil(L);
        if (!lua_next(L, idx))
            return 0;
        lua_pop(L, 2);
        return -1;
    }
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

static void encode_array(struct enc *e, int idx, long n, int depth)
{
    lua_State *L = e->L;

    put_char(e, '[');
    for (long i = 1; i <= n; i++) {
        if (i > 1)
            put_char(e, ',');
        e->at[depth + 1] = -(int)i;
        lua_rawgeti(L, idx, (int)i);
        encode_value(e, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
    }
    put_char(e, ']');
}

static void encode_object(struct enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    bool first = true;

    put_char(e, '{');
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        size_t klen;
        const char *k;
        if (lua_type(L, -2) != LUA_TSTRING && lua_type(L, -2) != LUA_TNUMBER)
            fail(e, "tycho.json.encode: %s has a %s key; JSON keys are strings",
                 luaL_typename(L, -2), "");
        if (!first)
            put_char(e, ',');
        first = false;
        lua_pushvalue(L, -2);         /* a copy: tolstring must not turn the key into a string */
        k = lua_tolstring(L, -1, &klen);
        add_string(e, k, klen);
        put_char(e, ':');
        e->at[depth + 1] = lua_gettop(L);   /* the key's copy, kept there while the value is */
        encode_value(e, lua_gettop(L) - 1, depth + 1);
        lua_pop(L, 1);
    }
    put_char(e, '}');
}

static void encode_value(struct enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    size_t len;
    const char *s;

    e->depth = depth;
    if (depth > MAX_DEPTH)
        fail(e, "tycho.json.encode: %s is nested over %s levels (a cycle?)", "128", "");
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        put(e, "null", 4);
        return;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            put(e, "true", 4);
        else
            put(e, "false", 5);
        return;
    case LUA_TNUMBER:
        add_number(e, lua_tonumber(L, idx));
        return;
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        add_string(e, s, len);
        return;
    case LUA_TLIGHTUSERDATA:
        if (!lua_touserdata(L, idx)) {
            put(e, "null", 4);   /* tycho.null (cjson.null) */
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
            fail(e, "tycho.json.encode: %s is marked an array but has other keys%s%s", "", "");
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
    fail(e, "tycho.json.encode: %s is a %s, which JSON cannot hold%s", luaL_typename(L, idx), "");
}

static void encode(lua_State *L, int idx, tycho_json_done done, void *arg, bool where)
{
    struct enc e;

    lua_pushnil(L);                   /* where a grown buffer is kept */
    e.keep = lua_gettop(L);
    e.where = where;
    e.L = L;
    e.depth = 0;
    e.data = e.stack;
    e.len = 0;
    e.cap = sizeof(e.stack);
    encode_value(&e, idx, 0);
    done(arg, e.data, e.len);
}

void tycho_json_encode_to(lua_State *L, int idx, tycho_json_done done, void *arg)
{
    encode(L, idx, done, arg, false);
}

static void push_text(void *arg, const char *text, size_t len)
{
    lua_pushlstring(arg, text, len);
}

/* tycho.json.encode(value) -> the JSON text. */
int tycho_json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    encode(L, 1, push_text, L, true);
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
