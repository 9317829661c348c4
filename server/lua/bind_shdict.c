/*
 * bind_shdict.c: tycho.shared.dict(name[, opts]) and the dictionary's
 * methods (get, set, add, incr, delete, keys). Values are strings, numbers,
 * booleans or tables (tables are stored as JSON through tycho.json, so they
 * hold what JSON holds). Worker or main thread, inside Lua. Misuse raises;
 * a full or failed store returns nil, message.
 */
#include "lua/bind.h"
#include "lua/task.h"
#include "lua/vm.h"
#include "core/tycho.h"
#include "core/shdict.h"

#include <lauxlib.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define DICT_MT "tycho.dict"
#define UP_ENCODE lua_upvalueindex(1)
#define UP_DECODE lua_upvalueindex(2)

static struct tycho_shdict *check_dict(lua_State *L)
{
    return *(struct tycho_shdict **)luaL_checkudata(L, 1, DICT_MT);
}

/* The key at idx: a string (a number is turned into one). */
static const char *check_key(lua_State *L, int idx, size_t *len)
{
    const char *k = luaL_checklstring(L, idx, len);

    if (*len == 0)
        luaL_argerror(L, idx, "the key is empty");
    return k;
}

/* Expiry time from an optional ttl at idx (seconds; nil or 0: never). */
static double check_expires(lua_State *L, int idx)
{
    double ttl = luaL_optnumber(L, idx, 0);

    luaL_argcheck(L, ttl >= 0, idx, "expected a ttl in seconds, 0 or more");
    return ttl > 0 ? tycho_vm_now(tycho_vm_of(L)) + ttl : 0;
}

/* Encodes the value at idx: its tag, and its bytes left on the stack top as a string. */
static char encode_value(lua_State *L, int idx)
{
    double n;

    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        lua_pushvalue(L, idx);
        return 's';
    case LUA_TNUMBER:
        n = lua_tonumber(L, idx);
        lua_pushlstring(L, (const char *)&n, sizeof(n));
        return 'n';
    case LUA_TBOOLEAN:
        lua_pushlstring(L, lua_toboolean(L, idx) ? "1" : "0", 1);
        return 'b';
    case LUA_TTABLE:
        lua_pushvalue(L, UP_ENCODE);
        lua_pushvalue(L, idx);
        lua_call(L, 1, 1);
        return 't';
    default:
        return (char)luaL_argerror(L, idx, "expected a string, number, boolean or table");
    }
}

/* Pushes a stored value back as Lua. */
static void push_value(lua_State *L, char tag, const char *bytes, size_t len)
{
    double n;

    switch (tag) {
    case 'n':
        memcpy(&n, bytes, sizeof(n));
        lua_pushnumber(L, n);
        break;
    case 'b':
        lua_pushboolean(L, bytes[0] == '1');
        break;
    case 't':
        lua_pushvalue(L, UP_DECODE);
        lua_pushlstring(L, bytes, len);
        lua_call(L, 1, 1);
        break;
    default:
        lua_pushlstring(L, bytes, len);
    }
}

/* d:get(key) -> the value, or nil when missing or expired. */
static int dict_get(lua_State *L)
{
    struct tycho_shdict *d = check_dict(L);
    size_t klen, vlen = 0, cap = 512;
    const char *key = check_key(L, 2, &klen);
    double now = tycho_vm_now(tycho_vm_of(L));
    char small[512], tag = 's';
    void *buf = small;

    /* A larger value: a Lua buffer of its size (nothing to free if a raise comes). */
    for (int tries = 0; tries < 4; tries++) {
        if (tycho_shdict_lookup(d, key, klen, now, &tag, buf, cap, &vlen) != TYCHO_SHDICT_OK) {
            lua_pushnil(L);
            return 1;
        }
        if (vlen <= cap) {
            push_value(L, tag, buf, vlen);
            return 1;
        }
        cap = vlen;
        buf = lua_newuserdata(L, cap);
    }
    return luaL_error(L, "dict:get: the value kept changing size while being read");
}

/* Pushes nil and the message for a failed operation; returns 2. */
static int push_failure(lua_State *L, enum tycho_shdict_rc rc)
{
    switch (rc) {
    case TYCHO_SHDICT_EXISTS:
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "exists");
        return 2;
    case TYCHO_SHDICT_MISSING:
        lua_pushnil(L);
        lua_pushliteral(L, "not found");
        return 2;
    case TYCHO_SHDICT_NOT_NUMBER:
        lua_pushnil(L);
        lua_pushliteral(L, "not a number");
        return 2;
    case TYCHO_SHDICT_TOO_BIG:
        lua_pushnil(L);
        lua_pushliteral(L, "too big: the entry is larger than the dictionary's share");
        return 2;
    default:
        lua_pushnil(L);
        lua_pushliteral(L, "no memory");
        return 2;
    }
}

/* Stores (only_new: add) the value at 3; nil deletes (set only). */
static int store(lua_State *L, int only_new)
{
    struct tycho_shdict *d = check_dict(L);
    size_t klen, vlen;
    const char *key = check_key(L, 2, &klen), *bytes;
    double expires = check_expires(L, 4);
    enum tycho_shdict_rc rc;
    char tag;

    if (lua_isnoneornil(L, 3)) {
        if (only_new)
            return luaL_argerror(L, 3, "expected a value");
        tycho_shdict_delete(d, key, klen);
        lua_pushboolean(L, 1);
        return 1;
    }
    tag = encode_value(L, 3);
    bytes = lua_tolstring(L, -1, &vlen);
    rc = tycho_shdict_store(d, key, klen, tag, bytes, vlen, expires, only_new,
                            tycho_vm_now(tycho_vm_of(L)));
    if (rc != TYCHO_SHDICT_OK)
        return push_failure(L, rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* d:set(key, value[, ttl]) -> true, or nil, err. A nil value deletes. */
static int dict_set(lua_State *L)
{
    return store(L, 0);
}

/* d:add(key, value[, ttl]) -> true, or false, "exists". */
static int dict_add(lua_State *L)
{
    return store(L, 1);
}

/* d:incr(key, n[, init]) -> the new number, or nil, "not found" / "not a number". */
static int dict_incr(lua_State *L)
{
    struct tycho_shdict *d = check_dict(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen);
    double n = luaL_checknumber(L, 3), init = luaL_optnumber(L, 4, 0), out = 0;

    enum tycho_shdict_rc rc = tycho_shdict_incr(d, key, klen, n, !lua_isnoneornil(L, 4), init,
                                                tycho_vm_now(tycho_vm_of(L)), &out);

    if (rc != TYCHO_SHDICT_OK)
        return push_failure(L, rc);
    lua_pushnumber(L, out);
    return 1;
}

/*
 * d:take(key, rate, burst) -> true, or false and the seconds to wait: one
 * token from the bucket under key (rate tokens a second, burst at most),
 * shared by every worker. For rate limits (tycho.rate_limit).
 */
static int dict_take(lua_State *L)
{
    struct tycho_shdict *d = check_dict(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen);
    double rate = luaL_checknumber(L, 3), burst = luaL_checknumber(L, 4), wait = 0;
    bool allowed = false;
    enum tycho_shdict_rc rc;

    luaL_argcheck(L, rate > 0 && rate < 1e9, 3, "expected a rate above 0 (tokens a second)");
    luaL_argcheck(L, burst >= 1 && burst < 1e9, 4, "expected a burst of 1 token or more");
    rc = tycho_shdict_take(d, key, klen, rate, burst, tycho_vm_now(tycho_vm_of(L)), &allowed,
                           &wait);
    if (rc != TYCHO_SHDICT_OK)
        return push_failure(L, rc);
    lua_pushboolean(L, allowed);
    if (allowed)
        return 1;
    lua_pushnumber(L, wait);
    return 2;
}

/* d:delete(key) */
static int dict_delete(lua_State *L)
{
    struct tycho_shdict *d = check_dict(L);
    size_t klen;
    const char *key = check_key(L, 2, &klen);

    tycho_shdict_delete(d, key, klen);
    return 0;
}

/* d:keys() -> an array of the live keys (no order promised). */
static int dict_keys(lua_State *L)
{
    struct tycho_shdict *d = check_dict(L);
    double now = tycho_vm_now(tycho_vm_of(L));
    size_t cap = 0, need, count = 0;
    char *buf = NULL;

    need = tycho_shdict_keys(d, now, NULL, 0, &count);
    for (int tries = 0; tries < 4 && need > cap; tries++) {
        cap = need + need / 4 + 64;  /* room for keys added meanwhile */
        buf = lua_newuserdata(L, cap);
        need = tycho_shdict_keys(d, now, buf, cap, &count);
    }
    if (need > cap)
        return luaL_error(L, "dict:keys: the dictionary kept growing while being read");
    lua_createtable(L, (int)count, 0);
    for (size_t off = 0, i = 1; off < need; i++) {
        uint32_t len;
        memcpy(&len, buf + off, 4);
        lua_pushlstring(L, buf + off + 4, len);
        lua_rawseti(L, -2, (int)i);
        off += 4 + len;
    }
    return 1;
}

/* tycho.shared.dict(name[, {max_bytes = N}]) -> the dictionary shared by all workers. */
static int shared_dict(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    size_t max_bytes = tycho_shdict_default_bytes;
    struct tycho_shdict *d, **box;

    if (lua_istable(L, 2)) {
        lua_getfield(L, 2, "max_bytes");
        if (!lua_isnil(L, -1)) {
            lua_Number n = luaL_checknumber(L, -1);
            if (!(n >= 4096 && n <= 1099511627776.0))
                return luaL_error(L, "tycho.shared.dict: max_bytes must be from 4096 to 2^40");
            max_bytes = (size_t)n;
        }
        lua_pop(L, 1);
    } else if (!lua_isnoneornil(L, 2)) {
        return luaL_argerror(L, 2, "expected a table of options");
    }
    box = lua_newuserdata(L, sizeof(*box));
    *box = NULL;
    luaL_getmetatable(L, DICT_MT);
    lua_setmetatable(L, -2);
    if (!(d = tycho_shdict_get(name, max_bytes)))
        return luaL_error(L, "tycho.shared.dict: out of memory");
    *box = d;
    return 1;
}

static const luaL_Reg dict_methods[] = {
    {"get", dict_get},       {"set", dict_set},   {"add", dict_add}, {"incr", dict_incr},
    {"take", dict_take},     {"delete", dict_delete}, {"keys", dict_keys}, {NULL, NULL},
};

void tycho_bind_shdict(lua_State *L)
{
    luaL_newmetatable(L, DICT_MT);
    lua_newtable(L);
    lua_pushcfunction(L, tycho_json_encode);
    lua_pushcfunction(L, tycho_json_decode);
    luaL_setfuncs(L, dict_methods, 2);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_newtable(L);
    lua_pushcfunction(L, shared_dict);
    lua_setfield(L, -2, "dict");
    lua_setfield(L, -2, "shared");
}
