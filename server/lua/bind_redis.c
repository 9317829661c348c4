/*
 * bind_redis.c: tycho.redis, Redis from handlers, middleware and timers.
 * `tycho.redis.open(url, opts)` names a server (nothing connects yet); each
 * `red:call(...)` takes a connection from the worker's pool for that URL
 * (net/redis.c), sends one command and waits without blocking the worker.
 * As in bind_db.c, Lua code strings the C steps together (new_cmd, wait,
 * result) because a C function cannot go on after a yield in Lua 5.1.
 */
#include "lua/bind.h"
#include "lua/task.h"
#include "lua/vm.h"
#include "net/redis.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RED_MT "tycho.redis"
#define RCALL_MT "tycho.redis.call"
#define RBOX_MT "tycho.redis.pool"
/* Integers a Lua number holds exactly; beyond them an integer reply is a decimal string. */
#define EXACT_INT 9007199254740992LL
/* Words in one command at most (a bound on what one call copies). */
#define MAX_WORDS 1048576

/* A Redis server in one Lua state: one per URL, kept in the registry until the state closes. */
struct red_box {
    struct tycho_vm *vm;
    struct tycho_redis *rd;          /* owned; NULL until the first command */
    struct tycho_connpool_opts o;
    char url[2048];
    char name[2048];                 /* the URL without its password */
};

struct red_handle {
    struct red_box *box;
};

struct red_call {
    struct tycho_wait w;             /* first: the task's handle is this struct */
    struct tycho_redis_cmd *cmd;     /* owned while not sent or back; NULL once given up */
    struct red_box *box;
    bool sent, back;
};

/* ---- waiting ------------------------------------------------------------------- */

static void on_back(struct tycho_redis_cmd *cmd)
{
    struct red_call *call = cmd->arg;

    call->back = true;
    tycho_task_wake(&call->w);
}

static void wait_start(struct tycho_wait *w)
{
    struct red_call *call = (struct red_call *)w;
    struct red_box *box = call->box;

    call->sent = true;
    if (!box->rd)
        box->rd = tycho_redis_new(box->url, box->name, &box->o, box->vm->base,
                                  box->vm->worker_id, call->cmd->err);
    if (box->rd) {
        tycho_redis_send(box->rd, call->cmd, on_back, call);
        return;
    }
    call->cmd->rc = TYCHO_ERR;
    call->cmd->code = "CONNECTION";
    call->back = true;
    tycho_task_wake(w);
}

static void wait_cancel(struct tycho_wait *w)
{
    struct red_call *call = (struct red_call *)w;

    if (call->back)
        tycho_redis_cmd_free(call->cmd);
    else
        tycho_redis_cancel(call->cmd);
    call->cmd = NULL;
}

static int call_gc(lua_State *L)
{
    struct red_call *call = luaL_checkudata(L, 1, RCALL_MT);

    if (call->cmd && call->sent && !call->back)
        tycho_redis_cancel(call->cmd);   /* freed when it comes back */
    else
        tycho_redis_cmd_free(call->cmd);
    call->cmd = NULL;
    return 0;
}

/* ---- a command ------------------------------------------------------------------ */

/* Commands that need one connection across calls, or change it for the next user. */
static const char *refused(const char *word, size_t len)
{
    static const char *const names[] = {"MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH",
                                        "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE",
                                        "PUNSUBSCRIBE", "SUNSUBSCRIBE", "MONITOR", "SELECT",
                                        "AUTH", "QUIT", "RESET", "HELLO", NULL};

    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == len && strncasecmp(names[i], word, len) == 0)
            return names[i];
    return NULL;
}

/* new_cmd(red, word, ...) -> call: checks the place and the words, copies them. */
static int new_cmd(lua_State *L)
{
    struct red_handle *red = luaL_checkudata(L, 1, RED_MT);
    int argc = lua_gettop(L) - 1;
    const char *refusal = tycho_task_refusal(L, TYCHO_PLACE_WAIT);
    const char **argv;
    size_t *lens;
    struct red_call *call;
    char nums[64];
    const char *which;

    if (refusal)
        return tycho_bind_raise(L, "red:call: %s", refusal);
    if (argc < 1 || lua_type(L, 2) != LUA_TSTRING)
        return tycho_bind_raise(L, "red:call: expected a command name (a string), got %s",
                          argc < 1 ? "nothing" : luaL_typename(L, 2));
    if (argc > MAX_WORDS)
        return tycho_bind_raise(L, "red:call: more than %d words", MAX_WORDS);
    if ((which = refused(lua_tostring(L, 2), lua_objlen(L, 2))))
        return tycho_bind_raise(L, "red:call: %s is not supported: each call may run on another "
                             "pooled connection (use EVAL for several commands at once, and "
                             "another URL for another database)", which);
    argv = lua_newuserdata(L, (size_t)argc * (sizeof(*argv) + sizeof(*lens)));
    lens = (size_t *)(argv + argc);
    for (int i = 0; i < argc; i++) {
        int idx = i + 2, type = lua_type(L, idx);
        if (type == LUA_TNUMBER) {
            lua_Number d = lua_tonumber(L, idx);
            /* A whole number is written as one, however large (2^60 is exact in a double). */
            if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
                snprintf(nums, sizeof(nums), "%lld", (long long)d);
            else
                snprintf(nums, sizeof(nums), "%.17g", d);
            lua_pushstring(L, nums);
            lua_replace(L, idx);          /* anchored where it was, for argv to borrow */
        } else if (type != LUA_TSTRING) {
            return tycho_bind_raise(L, "red:call: word %d is a %s; Redis takes strings and numbers",
                              i + 1, lua_typename(L, type));
        }
        argv[i] = lua_tolstring(L, idx, &lens[i]);
    }
    call = lua_newuserdata(L, sizeof(*call));
    memset(call, 0, sizeof(*call));
    call->box = red->box;
    luaL_getmetatable(L, RCALL_MT);
    lua_setmetatable(L, -2);
    call->w.start = wait_start;
    call->w.cancel = wait_cancel;
    if (!(call->cmd = tycho_redis_cmd_new(argc, argv, lens)))
        return tycho_bind_raise(L, "red:call: out of memory");
    return 1;
}

static int wait_cmd(lua_State *L)
{
    struct red_call *call = luaL_checkudata(L, 1, RCALL_MT);

    if (call->sent || !call->cmd)
        return luaL_error(L, "tycho.redis: a call is waited for once");
    return tycho_task_wait(L, &call->w, "tycho.redis");
}

static void push_value(lua_State *L, const struct tycho_redis_value *v)
{
    char text[24];

    switch (v->type) {
    case TYCHO_REDIS_NIL:
        lua_pushlightuserdata(L, NULL);   /* tycho.null */
        return;
    case TYCHO_REDIS_INTEGER:
        if (v->integer >= -EXACT_INT && v->integer <= EXACT_INT) {
            lua_pushnumber(L, (lua_Number)v->integer);
        } else {
            snprintf(text, sizeof(text), "%lld", v->integer);
            lua_pushstring(L, text);
        }
        return;
    case TYCHO_REDIS_ARRAY:
        lua_createtable(L, (int)v->n, 0);
        for (size_t i = 0; i < v->n; i++) {
            push_value(L, &v->elems[i]);
            lua_rawseti(L, -2, (int)i + 1);
        }
        return;
    default:                              /* a string, a status; errors inside an array */
        lua_pushlstring(L, v->str ? v->str : "", v->len);
        return;
    }
}

/* result(call) -> the reply; or nil, message, code (an error reply's first word). */
static int cmd_result(lua_State *L)
{
    struct red_call *call = luaL_checkudata(L, 1, RCALL_MT);
    struct tycho_redis_cmd *cmd = call->cmd;
    int n = 1;

    if (!cmd || !call->back)
        return luaL_error(L, "tycho.redis: no result to read");
    if (cmd->rc != TYCHO_OK) {
        lua_pushnil(L);
        lua_pushstring(L, cmd->err);
        lua_pushstring(L, cmd->code);
        n = 3;
    } else if (cmd->reply.type == TYCHO_REDIS_ERROR) {
        const char *msg = cmd->reply.str ? cmd->reply.str : "";
        lua_pushnil(L);
        lua_pushstring(L, msg);
        lua_pushlstring(L, msg, strcspn(msg, " "));
        n = 3;
    } else {
        push_value(L, &cmd->reply);
    }
    tycho_redis_cmd_free(cmd);
    call->cmd = NULL;
    return n;
}

/* ---- the handle ------------------------------------------------------------------ */

static int box_gc(lua_State *L)
{
    struct red_box *box = luaL_checkudata(L, 1, RBOX_MT);

    tycho_redis_free(box->rd);        /* connections closed, commands in flight dropped */
    box->rd = NULL;
    return 0;
}

static const char boxes_key = 0;  /* registry: url -> its red_box, for the state's life */

/* tycho.redis.open(url, opts) -> red: nothing connects until the first command. */
static int red_open(lua_State *L)
{
    size_t len;
    const char *url = luaL_checklstring(L, 1, &len);
    char err[TYCHO_ERR_LEN];
    struct red_box *box;
    struct red_handle *red;

    lua_settop(L, 2);                 /* the options at 2, even when not given */
    if (memchr(url, '\0', len) || len >= sizeof(box->url))
        return luaL_error(L, "tycho.redis.open: the URL is too long or holds a NUL byte");
    if (tycho_redis_parse(url, err) < 0)
        return luaL_error(L, "tycho.redis.open: %s, got \"%s\"", err, url);
    lua_pushlightuserdata(L, (void *)&boxes_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, url);
    if (!(box = luaL_testudata(L, -1, RBOX_MT))) {
        lua_pop(L, 1);
        box = lua_newuserdata(L, sizeof(*box));
        memset(box, 0, sizeof(*box));
        tycho_bind_pool_opts(L, 2, "tycho.redis.open", &box->o);
        box->vm = tycho_vm_of(L);
        snprintf(box->url, sizeof(box->url), "%s", url);
        tycho_bind_redact(url, box->name, sizeof(box->name));
        luaL_getmetatable(L, RBOX_MT);
        lua_setmetatable(L, -2);
        lua_setfield(L, -2, url);
    } else {
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    red = lua_newuserdata(L, sizeof(*red));
    red->box = box;
    luaL_getmetatable(L, RED_MT);
    lua_setmetatable(L, -2);
    return 1;
}

static int red_tostring(lua_State *L)
{
    struct red_handle *red = luaL_checkudata(L, 1, RED_MT);

    lua_pushfstring(L, "tycho.redis (%s)", red->box->name);
    return 1;
}

static const char red_lua[] =
    "local new_cmd, wait, result = ...\n"
    "local methods = {}\n"
    "function methods.call(red, ...)\n"
    "  local c = new_cmd(red, ...)\n"
    "  wait(c)\n"
    "  return result(c)\n"
    "end\n"
    "return methods\n";

void tycho_bind_redis(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&boxes_key);
    lua_newtable(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
    luaL_newmetatable(L, RBOX_MT);
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, RCALL_MT);
    lua_pushcfunction(L, call_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, RED_MT);
    if (luaL_loadbuffer(L, red_lua, sizeof(red_lua) - 1, "=tycho.redis") != 0)
        lua_error(L);
    lua_pushcfunction(L, new_cmd);
    lua_pushcfunction(L, wait_cmd);
    lua_pushcfunction(L, cmd_result);
    lua_call(L, 3, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, red_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, red_open);
    lua_setfield(L, -2, "open");
    lua_setfield(L, -2, "redis");
}
