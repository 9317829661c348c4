/*
 * bind_ws.c: WebSocket connections for app.ws (prelude.lua): the upgrade
 * (http/ws.h checks the handshake, http/stream.h answers 101 and hands the
 * connection's bytes over), then the `ws` object: receive, send, ping,
 * close, with the idle timeout, pings and the wait for the peer's close.
 * The protocol is http/ws.c's (libwslay); this file feeds it the
 * connection's input and sends what it makes. Worker thread, inside the
 * handler's coroutine. A wait (for input, for output to drain, for a timer)
 * is the C half of a Lua loop in prelude.lua: C cannot go on after a yield.
 * Misuse raises naming the call; the ws object frees its protocol state in
 * __gc, so nothing leaks whatever raises.
 */
#include "lua/bind.h"
#include "core/tycho.h"
#include "http/context.h"
#include "http/http.h"
#include "http/stream.h"
#include "http/ws.h"
#include "lua/task.h"
#include "lua/vm.h"

#include <event2/event.h>
#include <event2/event_struct.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#define WS_MT "tycho.ws"
/* How long a closed WebSocket waits for the peer's close frame before it ends anyway. */
#define CLOSE_WAIT_S 5.0

struct ws_obj {
    struct tycho_wait w;           /* first: task.c's handle is this struct */
    struct tycho_ws *ws;           /* owned */
    const struct tycho_obj_box *res_box; /* the request's res (kept alive by the ws's env) */
    struct event timer;            /* a wait's bound (ping, idle, close); assigned once */
    bool timer_added;
    double idle_timeout;           /* seconds without input before closing; 0: none */
    double ping_interval;          /* seconds without input before a ping; 0: none */
    double last_input;             /* when bytes last came (tycho_now_us seconds) */
    double closing_since;          /* when our close frame went; 0: it has not */
    const char *closed_why;        /* static: why the server closed it (idle, stop...); NULL */
    bool ping_out;                 /* a ping went since the last input */
    bool drain_only;               /* the wait is ws:send's: for the output to drain only */
};

static double now_s(void)
{
    return (double)tycho_now_us() / 1e6;
}

static struct ws_obj *check_obj(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, WS_MT);
}

/* The request behind a live ws; raises once it has ended. */
static struct tycho_req *req_of(lua_State *L, struct ws_obj *o, const char *fn)
{
    struct tycho_req *r = o->ws ? tycho_obj_req(o->res_box) : NULL;

    if (!r)
        luaL_error(L, "%s: this WebSocket has ended (its handler returned)", fn);
    return r;
}

/* Sends the frames the protocol has made. The push's verdict: OK, FULL or ERR. */
static int flush_frames(struct ws_obj *o, struct tycho_req *r)
{
    if (tycho_ws_want_write(o->ws) && tycho_ws_output(o->ws, tycho_stream_out(r)) < 0)
        return TYCHO_ERR;
    return tycho_stream_push(r);
}

static void close_with(struct ws_obj *o, struct tycho_req *r, int code, const char *reason);

/* ---- channels ---------------------------------------------------------------------------- */

/*
 * The worker's channel memberships: one list per worker thread, whatever
 * generation the sockets were accepted in (a reload keeps them). A broadcast
 * walks it once. A socket whose client reads too slowly to take broadcasts
 * (past TYCHO_STREAM_SLOW_BYTES waiting) is closed with 1008 rather than let
 * its output grow.
 */
struct member {
    struct member *next;
    struct ws_obj *o;
    size_t len;
    char channel[];
};

static __thread struct member *members;

void (*tycho_bind_ws_fanout)(const struct tycho_ws_broadcast *b);

static struct member **find_member(struct ws_obj *o, const char *ch, size_t len)
{
    struct member **p;

    for (p = &members; *p; p = &(*p)->next)
        if ((*p)->o == o && (*p)->len == len && memcmp((*p)->channel, ch, len) == 0)
            return p;
    return NULL;
}

/* Every membership of o goes (its WebSocket has ended). */
static void leave_all(struct ws_obj *o)
{
    struct member **p = &members;

    while (*p) {
        struct member *m = *p;
        if (m->o == o) {
            *p = m->next;
            free(m);
        } else {
            p = &m->next;
        }
    }
}

/* Sends one broadcast message to o (its request live); false when o could not take it. */
static bool deliver_to(struct ws_obj *o, const char *msg, size_t len, bool binary)
{
    struct tycho_req *r = tycho_obj_req(o->res_box);

    if (!r || r->stream_closed || !tycho_ws_can_send(o->ws))
        return false;
    if (tycho_stream_waiting(r) >= TYCHO_STREAM_SLOW_BYTES) {
        close_with(o, r, 1008, "too slow to take broadcasts");
        return false;
    }
    return tycho_ws_send(o->ws, msg, len, binary) == TYCHO_OK &&
           flush_frames(o, r) != TYCHO_ERR;
}

/* The local half of a broadcast: returns how many sockets took it. */
static unsigned deliver(const char *ch, size_t ch_len, const char *msg, size_t len, bool binary)
{
    unsigned sent = 0;

    for (struct member *m = members; m; m = m->next)
        if (m->len == ch_len && memcmp(m->channel, ch, ch_len) == 0)
            sent += deliver_to(m->o, msg, len, binary);
    return sent;
}

void tycho_bind_ws_deliver(const struct tycho_ws_broadcast *b)
{
    deliver(b->data, b->channel_len, b->data + b->channel_len, b->len, b->binary);
}

/* ws:join(channel) -> ws: broadcasts to channel reach it (on any worker) until it leaves. */
static int ws_join(lua_State *L)
{
    struct ws_obj *o = check_obj(L, 1);
    size_t len;
    const char *ch = luaL_checklstring(L, 2, &len);
    struct member *m;

    req_of(L, o, "ws:join");
    if (!find_member(o, ch, len)) {
        if (!(m = malloc(sizeof(*m) + len)))
            return luaL_error(L, "ws:join: out of memory");
        m->o = o;
        m->len = len;
        memcpy(m->channel, ch, len);
        m->next = members;
        members = m;
    }
    lua_settop(L, 1);
    return 1;
}

/* ws:leave(channel) -> ws. */
static int ws_leave(lua_State *L)
{
    struct ws_obj *o = check_obj(L, 1);
    size_t len;
    const char *ch = luaL_checklstring(L, 2, &len);
    struct member **p = find_member(o, ch, len);

    if (p) {
        struct member *m = *p;
        *p = m->next;
        free(m);
    }
    lua_settop(L, 1);
    return 1;
}

/*
 * tycho.broadcast(channel, msg[, binary]) -> the sockets of this worker
 * that took it; the other workers get it through their inboxes.
 */
static int ws_broadcast(lua_State *L)
{
    size_t ch_len, len;
    const char *ch = luaL_checklstring(L, 1, &ch_len);
    const char *msg = luaL_checklstring(L, 2, &len);
    bool binary = lua_toboolean(L, 3);
    struct tycho_ws_broadcast *b;

    tycho_task_check(L, "tycho.broadcast", TYCHO_PLACE_WORKER);
    if (!binary && !tycho_ws_utf8_valid(msg, len))
        return luaL_error(L, "tycho.broadcast: a text message must be UTF-8 (give true as "
                             "the third argument for binary data)");
    if (tycho_bind_ws_fanout) {
        if (!(b = malloc(sizeof(*b) + ch_len + len)))
            return luaL_error(L, "tycho.broadcast: out of memory");
        b->from_worker = tycho_vm_of(L)->worker_id;
        b->binary = binary;
        b->channel_len = ch_len;
        b->len = len;
        memcpy(b->data, ch, ch_len);
        memcpy(b->data + ch_len, msg, len);
        tycho_bind_ws_fanout(b);
        free(b);
    }
    lua_pushinteger(L, deliver(ch, ch_len, msg, len, binary));
    return 1;
}

static int ws_gc(lua_State *L)
{
    struct ws_obj *o = lua_touserdata(L, 1);

    leave_all(o);
    if (o->timer_added)
        event_del(&o->timer);
    tycho_ws_free(o->ws);
    o->ws = NULL;
    return 0;
}

/* ---- waiting ------------------------------------------------------------------------- */

/* Takes back everything a wait set: the connection's callbacks and the timer. */
static void disarm(struct ws_obj *o)
{
    struct tycho_req *r = tycho_obj_req(o->res_box);

    if (r) {
        r->on_input = NULL;
        r->on_drained = NULL;
    }
    if (o->timer_added) {
        event_del(&o->timer);
        o->timer_added = false;
    }
}

static void wake(struct ws_obj *o)
{
    disarm(o);
    tycho_task_wake(&o->w);
}

static void on_input(struct tycho_req *r)
{
    wake(r->input_arg);
}

static void on_drained(struct tycho_req *r)
{
    wake(r->drained_arg);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ((struct ws_obj *)arg)->timer_added = false;
    wake(arg);
}

/*
 * Seconds until the next thing a receive must do by itself (ping, idle,
 * the end of the wait for the peer's close): 0 when it is due already;
 * -1 when there is none.
 */
static double next_deadline(const struct ws_obj *o)
{
    double now = now_s(), due = 0;
    bool any = false;

    if (o->closing_since > 0) {
        due = o->closing_since + CLOSE_WAIT_S - now;
        any = true;
    } else {
        if (o->ping_interval > 0 && !o->ping_out) {
            due = o->last_input + o->ping_interval - now;
            any = true;
        }
        if (o->idle_timeout > 0) {
            double idle = o->last_input + o->idle_timeout - now;
            if (!any || idle < due)
                due = idle;
            any = true;
        }
    }
    if (!any)
        return -1;
    return due > 0 ? due : 0;         /* past already (time went by since the check): now */
}

static void wait_start(struct tycho_wait *w)
{
    struct ws_obj *o = (struct ws_obj *)w;
    struct tycho_req *r = tycho_obj_req(o->res_box);
    double due = next_deadline(o);

    if (o->drain_only) {
        r->on_drained = on_drained;
        r->drained_arg = o;
        r->drained_below = TYCHO_STREAM_LOW_BYTES;
        return;
    }
    r->on_input = on_input;
    r->input_arg = o;
    if (tycho_stream_waiting(r) >= TYCHO_STREAM_LOW_BYTES) {
        r->on_drained = on_drained;
        r->drained_arg = o;
        r->drained_below = TYCHO_STREAM_LOW_BYTES;
    }
    if (due >= 0) {
        struct timeval tv = {(time_t)due, (suseconds_t)((due - (double)(time_t)due) * 1e6)};
        o->timer_added = evtimer_add(&o->timer, &tv) == 0;
    }
}

static void wait_cancel(struct tycho_wait *w)
{
    disarm((struct ws_obj *)w);
}

/*
 * ws:_wait([drain_only]): suspends the WebSocket's own handler until input,
 * drained output, a deadline or a stop; with drain_only (ws:send), until
 * less than TYCHO_STREAM_LOW_BYTES of output waits. A wait belongs to one
 * task: another task's is refused.
 */
static int ws_wait(lua_State *L)
{
    struct ws_obj *o = check_obj(L, 1);
    struct tycho_req *r = req_of(L, o, "ws:receive");
    bool drain_only = lua_toboolean(L, 2);

    if (!tycho_task_runs_request(L, r))
        return luaL_error(L, "ws:receive: only the WebSocket's own handler receives (its "
                             "messages go to one reader)");
    if (drain_only && tycho_stream_waiting(r) < TYCHO_STREAM_LOW_BYTES)
        return 0;
    o->drain_only = drain_only;
    return tycho_task_wait(L, &o->w, drain_only ? "ws:send" : "ws:receive");
}

/* ---- receiving ------------------------------------------------------------------------- */

/* Pushes nil, the reason and the code of the end: ours (a violation), the peer's, or a loss. */
static int push_end(lua_State *L, struct ws_obj *o, struct tycho_req *r)
{
    const char *violation = tycho_ws_violation(o->ws);
    int code = tycho_ws_peer_code(o->ws);
    size_t len = 0;
    const char *reason = tycho_ws_peer_reason(o->ws, &len);

    lua_pushnil(L);
    if (violation || o->closed_why) {
        /* The server closed it: for a violation, or idle, stopping, too slow, ws:close. */
        lua_pushstring(L, violation ? violation : o->closed_why);
        lua_pushinteger(L, tycho_ws_sent_code(o->ws));
    } else if (code == TYCHO_WS_ABNORMAL || (r && r->stream_closed)) {
        lua_pushliteral(L, "connection lost");
        lua_pushinteger(L, TYCHO_WS_ABNORMAL);
    } else {
        lua_pushlstring(L, len ? reason : "closed", len ? len : 6);
        lua_pushinteger(L, code);
    }
    return 3;
}

/* Pushes the next message and its kind, if one waits. */
static bool push_message(lua_State *L, struct ws_obj *o)
{
    struct tycho_ws_msg m;

    if (!tycho_ws_next(o->ws, &m))
        return false;
    lua_pushlstring(L, m.data, m.len);
    if (m.kind == TYCHO_WS_TEXT)
        lua_pushliteral(L, "text");
    else
        lua_pushliteral(L, "binary");
    return true;
}

/* Our close frame with code and a static reason, unless one went already. */
static void close_with(struct ws_obj *o, struct tycho_req *r, int code, const char *reason)
{
    if (!tycho_ws_can_send(o->ws))
        return;
    tycho_ws_close(o->ws, code, reason, strlen(reason));
    o->closing_since = now_s();
    o->closed_why = *reason ? reason : "closed";
    flush_frames(o, r);
}

/* Gives the protocol what was read; false when out of memory. */
static bool feed_input(struct ws_obj *o, struct tycho_req *r)
{
    const char *data;
    size_t len = tycho_stream_input(r, &data);

    if (!len)
        return true;
    o->last_input = now_s();
    o->ping_out = false;
    if (tycho_ws_feed(o->ws, data, len) < 0)
        return false;
    tycho_stream_consume(r, len);
    return true;
}

/* Pings, idle and the bounded wait for the peer's close; true when the WebSocket is over. */
static bool keep_time(struct ws_obj *o, struct tycho_req *r)
{
    double now = now_s();

    if (o->closing_since > 0)
        return now - o->closing_since >= CLOSE_WAIT_S;
    if (o->idle_timeout > 0 && now - o->last_input >= o->idle_timeout) {
        close_with(o, r, TYCHO_WS_GOING_AWAY, "idle timeout");
        return true;
    }
    if (o->ping_interval > 0 && !o->ping_out && now - o->last_input >= o->ping_interval) {
        tycho_ws_ping(o->ws, "", 0);
        o->ping_out = true;
        flush_frames(o, r);
    }
    return false;
}

/*
 * ws:_receive() -> msg, kind; nil, reason, code once closed; or false: wait
 * (ws:_wait) and ask again.
 */
static int ws_receive(lua_State *L)
{
    struct ws_obj *o = check_obj(L, 1);
    struct tycho_req *r = req_of(L, o, "ws:receive");

    if (push_message(L, o))
        return 2;
    if (!feed_input(o, r)) {
        close_with(o, r, TYCHO_WS_INTERNAL, "out of memory");
        return push_end(L, o, r);
    }
    if (flush_frames(o, r) == TYCHO_ERR)
        return push_end(L, o, r);
    if (push_message(L, o))
        return 2;
    if (tycho_ws_closed(o->ws) || tycho_stream_eof(r) || r->stream_closed)
        return push_end(L, o, r);
    if (tycho_stream_stopping(r))
        close_with(o, r, TYCHO_WS_GOING_AWAY, "server stopping");
    if (keep_time(o, r))
        return push_end(L, o, r);
    lua_pushboolean(L, 0);
    return 1;
}

/* ---- sending ----------------------------------------------------------------------------- */

/* Pushes the verdict of a send: true, false (wait for the output to drain), nil "closed". */
static int push_sent(lua_State *L, int rc)
{
    if (rc == TYCHO_ERR) {
        lua_pushnil(L);
        lua_pushliteral(L, "closed");
        return 2;
    }
    lua_pushboolean(L, rc == TYCHO_OK);
    return 1;
}

/* ws:_send(msg[, binary]) -> true, false (then ws:_wait), or nil, "closed". */
static int ws_send(lua_State *L)
{
    struct ws_obj *o = check_obj(L, 1);
    struct tycho_req *r = req_of(L, o, "ws:send");
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    bool binary = lua_toboolean(L, 3);
    bool own = tycho_task_runs_request(L, r);
    int rc;

    if (!binary && !tycho_ws_utf8_valid(data, len))
        return luaL_error(L, "ws:send: a text message must be UTF-8 (send binary data with "
                             "ws:send(msg, true))");
    if (tycho_stream_stopping(r))
        close_with(o, r, TYCHO_WS_GOING_AWAY, "server stopping");
    if (!own && tycho_stream_waiting(r) >= TYCHO_STREAM_SLOW_BYTES)
        close_with(o, r, 1008, "too slow");   /* another task cannot wait for this client */
    if (!tycho_ws_can_send(o->ws) || r->stream_closed)
        return push_sent(L, TYCHO_ERR);
    if (tycho_ws_send(o->ws, data, len, binary) < 0)
        return luaL_error(L, "ws:send: out of memory");
    rc = flush_frames(o, r);
    return push_sent(L, rc == TYCHO_STREAM_FULL && !own ? TYCHO_OK : rc);
}

/* ws:ping([data]) -> true, or nil, "closed". */
static int ws_ping(lua_State *L)
{
    struct ws_obj *o = check_obj(L, 1);
    struct tycho_req *r = req_of(L, o, "ws:ping");
    size_t len = 0;
    const char *data = luaL_optlstring(L, 2, "", &len);

    if (len > TYCHO_WS_MAX_PING)
        return luaL_error(L, "ws:ping: at most %d bytes of data", TYCHO_WS_MAX_PING);
    if (tycho_stream_stopping(r))
        close_with(o, r, TYCHO_WS_GOING_AWAY, "server stopping");
    if (!tycho_ws_can_send(o->ws) || tycho_ws_ping(o->ws, data, len) < 0)
        return push_sent(L, TYCHO_ERR);
    return push_sent(L, flush_frames(o, r) == TYCHO_ERR ? TYCHO_ERR : TYCHO_OK);
}

/* ws:close([code[, reason]]) -> true, or nil, "closed" when it was closed already. */
static int ws_close(lua_State *L)
{
    struct ws_obj *o = check_obj(L, 1);
    struct tycho_req *r = req_of(L, o, "ws:close");
    lua_Integer code = luaL_optinteger(L, 2, TYCHO_WS_NORMAL);
    size_t len = 0;
    const char *reason = luaL_optlstring(L, 3, "", &len);

    if (len > TYCHO_WS_MAX_REASON)
        return luaL_error(L, "ws:close: the reason is at most %d bytes", TYCHO_WS_MAX_REASON);
    if (!tycho_ws_utf8_valid(reason, len))
        return luaL_error(L, "ws:close: the reason must be UTF-8");
    if (!tycho_ws_can_send(o->ws))
        return push_sent(L, TYCHO_ERR);
    if (tycho_ws_close(o->ws, (int)code, reason, len) < 0)
        return luaL_error(L, "ws:close: code %d may not be sent (1000, 1001, 1003, 1007-1011 "
                             "or 3000-4999)", (int)code);
    o->closing_since = now_s();
    o->closed_why = "closed";
    return push_sent(L, flush_frames(o, r) == TYCHO_ERR ? TYCHO_ERR : TYCHO_OK);
}

/* ws:_finish(failed): the handler has ended: close 1000 (1011 when it failed) if still open. */
static int ws_finish(lua_State *L)
{
    struct ws_obj *o = check_obj(L, 1);
    struct tycho_req *r = o->ws ? tycho_obj_req(o->res_box) : NULL;

    leave_all(o);
    if (r && !r->stream_closed)
        close_with(o, r, lua_toboolean(L, 2) ? TYCHO_WS_INTERNAL : TYCHO_WS_NORMAL,
                   lua_toboolean(L, 2) ? "server error" : "");
    return 0;
}

/* ---- the upgrade ------------------------------------------------------------------------- */

/* An integer option of opts (at idx) from lo up, or def when absent. */
static double num_opt(lua_State *L, int idx, const char *name, double def, double lo)
{
    double v = 0;

    lua_getfield(L, idx, name);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return def;
    }
    if (!lua_isnumber(L, -1) || (v = lua_tonumber(L, -1)) < lo)
        luaL_error(L, "app.ws: %s must be a number of at least %f", name, lo);
    lua_pop(L, 1);
    return v;
}

/* The subprotocol to answer: the first of opts.protocols the client offered, or NULL. */
static const char *choose_protocol(lua_State *L, int idx, const struct tycho_req *r)
{
    const char *chosen = NULL;

    lua_getfield(L, idx, "protocols");
    for (int i = 1; lua_istable(L, -1) && !chosen; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            break;
        }
        if (lua_type(L, -1) == LUA_TSTRING && tycho_ws_offered(r, lua_tostring(L, -1)))
            chosen = lua_tostring(L, -1);   /* anchored by opts, which stays on the stack */
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return chosen;
}

/* Fills o's limits and times from opts (idx, a table checked by app.ws). */
static void read_opts(lua_State *L, int idx, struct ws_obj *o, struct tycho_ws_limits *lim)
{
    lim->max_message_bytes =
        (size_t)num_opt(L, idx, "max_message", TYCHO_WS_DEFAULT_MAX_MESSAGE_BYTES, 1);
    lim->max_frame_bytes = (size_t)num_opt(L, idx, "max_frame", (double)lim->max_message_bytes, 1);
    o->idle_timeout = num_opt(L, idx, "idle_timeout", 120, 0);
    o->ping_interval = num_opt(L, idx, "ping_interval", 30, 0);
}

/*
 * _accept(res, opts) -> ws, or nil, status, why: checks the handshake of
 * res's request and answers 101; the connection is the WebSocket's from then.
 * While the server stops: nil, 503, "server stopping".
 */
static int ws_accept(lua_State *L)
{
    const struct tycho_obj_box *box = luaL_checkudata(L, 1, "tycho.res");
    struct tycho_req *r = tycho_obj_req(box);
    char accept[TYCHO_WS_ACCEPT_LEN];
    const char *why = NULL;
    struct tycho_ws_limits lim;
    struct ws_obj *o;
    int status;

    luaL_checktype(L, 2, LUA_TTABLE);
    if (!r)
        return luaL_error(L, "app.ws: the request has ended");
    /* A stop: a WebSocket opened now would be closed (1001) at once. */
    if (tycho_stream_stopping(r)) {
        lua_pushnil(L);
        lua_pushinteger(L, 503);
        lua_pushstring(L, "server stopping");
        return 3;
    }
    if ((status = tycho_ws_handshake(r, accept, sizeof(accept), &why)) != 0) {
        lua_pushnil(L);
        lua_pushinteger(L, status);
        lua_pushstring(L, why);
        return 3;
    }
    o = lua_newuserdata(L, sizeof(*o));
    memset(o, 0, sizeof(*o));
    luaL_getmetatable(L, WS_MT);
    lua_setmetatable(L, -2);
    read_opts(L, 2, o, &lim);
    if (!(o->ws = tycho_ws_new(&lim)))
        return luaL_error(L, "app.ws: out of memory");
    o->res_box = box;
    o->w.start = wait_start;
    o->w.cancel = wait_cancel;
    o->last_input = now_s();
    evtimer_assign(&o->timer, tycho_vm_of(L)->base, on_timer, o);
    lua_createtable(L, 1, 0);         /* keeps res (and so its box) alive as long as ws */
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_setfenv(L, -2);
    if (tycho_stream_upgrade(r, accept, choose_protocol(L, 2, r)) < 0)
        return luaL_error(L, "app.ws: out of memory answering the handshake");
    return 1;
}

static const luaL_Reg ws_methods[] = {
    {"_receive", ws_receive}, {"_wait", ws_wait},   {"_send", ws_send},
    {"ping", ws_ping},        {"close", ws_close},  {"_finish", ws_finish},
    {"join", ws_join},        {"leave", ws_leave},  {NULL, NULL},
};

static int ws_tostring(lua_State *L)
{
    struct ws_obj *o = check_obj(L, 1);

    lua_pushstring(L, o->ws && tycho_obj_req(o->res_box) ? "tycho.ws" : "tycho.ws (ended)");
    return 1;
}

void tycho_bind_ws(lua_State *L)
{
    luaL_newmetatable(L, WS_MT);
    lua_newtable(L);
    luaL_register(L, NULL, ws_methods);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "__index");
    lua_pushcfunction(L, ws_gc);
    lua_setfield(L, -3, "__gc");
    lua_pushcfunction(L, ws_tostring);
    lua_setfield(L, -3, "__tostring");
    /* tycho._ws = { methods = ..., accept = ... } for prelude.lua, which takes it away. */
    lua_createtable(L, 0, 2);
    lua_insert(L, -2);
    lua_setfield(L, -2, "methods");
    lua_pushcfunction(L, ws_accept);
    lua_setfield(L, -2, "accept");
    lua_setfield(L, -3, "_ws");
    lua_pop(L, 1);                    /* the metatable */
    lua_pushcfunction(L, ws_broadcast);
    lua_setfield(L, -2, "broadcast");
}
