/*
 * bind_time.c: waiting and time on the `tycho` module: tycho.sleep,
 * tycho.timer.after/every (with handle:cancel()), tycho.now,
 * tycho.worker_id and tycho.log.info/warn/error. Worker thread, inside a
 * handler, middleware or timer coroutine (now, worker_id and log also work
 * while the scripts load). Misuse raises with a message naming the call.
 */
#include "lua/bind.h"
#include "lua/task.h"
#include "lua/vm.h"
#include "core/log.h"

#include <lauxlib.h>
#include <math.h>
#include <string.h>

#define TIMER_MT "tycho.timer"

/* A non-negative, finite number of seconds at idx. */
static double check_seconds(lua_State *L, int idx, const char *fn)
{
    double s = luaL_checknumber(L, idx);

    if (!(s >= 0) || isinf(s) || s > 31536000)
        luaL_error(L, "%s: expected seconds from 0 to 31536000, got %f", fn, s);
    return s;
}

/* tycho.sleep(seconds): suspends the handler or timer; the worker serves others meanwhile. */
static int time_sleep(lua_State *L)
{
    return tycho_task_sleep(L, check_seconds(L, 1, "tycho.sleep"));
}

/* tycho.now() -> seconds since the epoch, with microseconds (the loop's cached time). */
static int time_now(lua_State *L)
{
    lua_pushnumber(L, tycho_vm_now(tycho_vm_of(L)));
    return 1;
}

/* tycho.worker_id() -> 1..N (0 while main checks the scripts at start-up). */
static int time_worker_id(lua_State *L)
{
    lua_pushinteger(L, tycho_vm_of(L)->worker_id);
    return 1;
}

/* Joins the arguments with spaces, each through tostring, and logs them. */
static int log_at(lua_State *L, enum tycho_log_level level)
{
    int n = lua_gettop(L);
    luaL_Buffer b;

    lua_getglobal(L, "tostring");
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        /* The separator first: luaL_addchar must not run with a value on top of the buffer. */
        if (i > 1)
            luaL_addchar(&b, ' ');
        lua_pushvalue(L, n + 1);
        lua_pushvalue(L, i);
        lua_call(L, 1, 1);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    tycho_log(level, "worker %d: %s", tycho_vm_of(L)->worker_id, lua_tostring(L, -1));
    return 0;
}

static int log_info(lua_State *L)
{
    return log_at(L, TYCHO_LOG_INFO);
}

static int log_warn(lua_State *L)
{
    return log_at(L, TYCHO_LOG_WARN);
}

static int log_error(lua_State *L)
{
    return log_at(L, TYCHO_LOG_ERROR);
}

/* Makes a timer and pushes its handle. */
static int new_timer(lua_State *L, const char *fn, int repeat)
{
    double seconds = check_seconds(L, 1, fn);
    void **box;

    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (repeat && seconds < 0.001)
        return luaL_error(L, "%s: the period must be at least 0.001 seconds", fn);
    box = lua_newuserdata(L, sizeof(void *));
    *box = NULL;
    luaL_getmetatable(L, TIMER_MT);
    lua_setmetatable(L, -2);
    *box = tycho_task_timer(L, seconds, repeat ? seconds : 0, 2, lua_gettop(L));
    return 1;
}

/* tycho.timer.after(seconds, fn) -> handle: fn runs once, in its own coroutine. */
static int timer_after(lua_State *L)
{
    return new_timer(L, "tycho.timer.after", 0);
}

/*
 * tycho.timer.every(seconds, fn) -> handle: fn runs every `seconds` (a tick
 * is skipped while the previous run still waits).
 */
static int timer_every(lua_State *L)
{
    return new_timer(L, "tycho.timer.every", 1);
}

/* handle:cancel(): no more runs (one in progress finishes). Cancelling twice is fine. */
static int timer_cancel(lua_State *L)
{
    void **box = luaL_checkudata(L, 1, TIMER_MT);

    if (*box)
        tycho_task_timer_cancel(*box);
    return 0;
}

static const luaL_Reg time_functions[] = {
    {"sleep", time_sleep}, {"now", time_now}, {"worker_id", time_worker_id}, {NULL, NULL},
};

static const luaL_Reg log_functions[] = {
    {"info", log_info}, {"warn", log_warn}, {"error", log_error}, {NULL, NULL},
};

static const luaL_Reg timer_functions[] = {
    {"after", timer_after}, {"every", timer_every}, {NULL, NULL},
};

void tycho_bind_time(lua_State *L)
{
    luaL_setfuncs(L, time_functions, 0);
    lua_newtable(L);
    luaL_setfuncs(L, log_functions, 0);
    lua_setfield(L, -2, "log");
    lua_newtable(L);
    luaL_setfuncs(L, timer_functions, 0);
    lua_setfield(L, -2, "timer");

    luaL_newmetatable(L, TIMER_MT);
    lua_newtable(L);
    lua_pushcfunction(L, timer_cancel);
    lua_setfield(L, -2, "cancel");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}
