/*
 * bind_db.c: tycho.db, SQL from handlers, middleware and timers, and
 * tycho.null. `tycho.db.open("sqlite:PATH")` names a database (nothing is
 * opened yet; the database threads connect on first use); `db:query` and
 * `db:exec` hand their statement to a database thread (net/sqlite.c) and
 * wait without blocking the worker (tycho_task_wait).
 *
 * A call is a userdata holding the job. Lua code (below) strings the three C
 * steps together, because a C function cannot go on after a yield in Lua
 * 5.1: new_job (checks and copies everything; raises on misuse), wait
 * (yields until the job is back), result (rows, or nil, message, code).
 */
#include "lua/bind.h"
#include "core/metrics.h"
#include "http/context.h"
#include "lua/task.h"
#include "lua/vm.h"
#include "core/log.h"
#include "net/sqlite.h"

#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DB_MT "tycho.db"
#define CALL_MT "tycho.db.call"
#define TX_MT "tycho.db.tx"
/* Integers a Lua number holds exactly; beyond them a value is a decimal string. */
#define EXACT_INT 9007199254740992LL

struct db_handle {
    char path[4096];                 /* the database file */
};

struct db_call {
    struct tycho_wait w;             /* first: the task's handle is this struct */
    struct tycho_sqlite_job *job;    /* owned while not on a database thread; NULL once taken */
    int thread;                      /* a transaction's thread; -1: any */
    bool sent, back;
    int worker;                      /* whose metrics series count it */
    long long sent_us;               /* when it was handed over (monotonic) */
};

/* An open transaction: the database thread it holds, until its end is sent. */
struct db_tx {
    struct tycho_defer defer;        /* first: rolls it back if the task ends with it open */
    struct tycho_sqlite_owner *owner;
    char *path;                      /* owned */
    int thread;
    bool open;
};

/*
 * Raises fmt with the position of the script's code that made the call: two
 * levels up, past the Lua helper in db_lua (a tail call from the method).
 */
static int raise(lua_State *L, const char *fmt, ...)
{
    va_list ap;

    luaL_where(L, 2);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return lua_error(L);
}

/* ---- waiting ------------------------------------------------------------------- */

/*
 * Counts a statement in the metrics: by database (its file) and result, and
 * its time. The owner's (worker's) thread, as every series' writer is.
 */
static void count_query(const struct db_call *call, const struct tycho_sqlite_job *j)
{
    char key[TYCHO_METRIC_KEY_BYTES];
    size_t len = strlen(j->path);
    const char *result = j->rc == TYCHO_OK ? "ok" : "error";
    _Atomic double *v;

    if (len > TYCHO_METRIC_KEY_BYTES - 16 || !tycho_metric_utf8_ok(j->path, len))
        len = 0;                      /* a label value must be UTF-8 and fit: counted as "" */
    memcpy(key, j->path, len);
    key[len] = '\0';
    memcpy(key + len + 1, result, strlen(result) + 1);
    if ((v = tycho_metric_series(tycho_metric_db_queries, call->worker, key,
                                 len + 1 + strlen(result) + 1)))
        tycho_metric_add(v, 1);
    if ((v = tycho_metric_series(tycho_metric_db_duration, call->worker, key, len + 1)))
        tycho_metric_observe(tycho_metric_db_duration, v,
                             (double)(tycho_now_us() - call->sent_us) / 1e6);
}

static void on_back(struct tycho_sqlite_job *j)
{
    struct db_call *call = j->arg;

    call->back = true;
    count_query(call, j);
    tycho_task_wake(&call->w);
}

static void wait_start(struct tycho_wait *w)
{
    struct db_call *call = (struct db_call *)w;

    call->sent = true;
    call->sent_us = tycho_now_us();
    if ((call->thread < 0 ? tycho_sqlite_send(call->job, on_back, call)
                          : tycho_sqlite_send_to(call->job, call->thread, on_back, call)) ==
        TYCHO_OK)
        return;
    call->job->rc = TYCHO_ERR;
    call->job->code = "SQLITE_ERROR";
    strcpy(call->job->err, "no database thread is running");
    call->back = true;
    tycho_task_wake(w);
}

/* The task was abandoned (its client left, a reload, a stop): the job is freed when back. */
static void wait_cancel(struct tycho_wait *w)
{
    struct db_call *call = (struct db_call *)w;

    if (call->back)
        tycho_sqlite_job_free(call->job);
    else
        tycho_sqlite_cancel(call->job);
    call->job = NULL;
}

static int call_gc(lua_State *L)
{
    struct db_call *call = luaL_checkudata(L, 1, CALL_MT);

    if (call->job && call->sent && !call->back)
        tycho_sqlite_cancel(call->job);   /* freed when it comes back */
    else
        tycho_sqlite_job_free(call->job);
    call->job = NULL;
    return 0;
}

/* ---- building a job ------------------------------------------------------------ */

/* Copies the Lua value at idx into v; raises (naming fn and the value's number) on a table etc. */
static void to_value(lua_State *L, int idx, int n, const char *fn, struct tycho_sql_value *v)
{
    int type = lua_type(L, idx);

    if (type == LUA_TNIL || (type == LUA_TLIGHTUSERDATA && !lua_touserdata(L, idx))) {
        v->type = TYCHO_SQL_NULL;
    } else if (type == LUA_TBOOLEAN) {
        v->type = TYCHO_SQL_INT;
        v->i = lua_toboolean(L, idx);
    } else if (type == LUA_TNUMBER) {
        double d = lua_tonumber(L, idx);
        if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
            v->type = TYCHO_SQL_INT;
            v->i = (long long)d;
        } else {
            v->type = TYCHO_SQL_FLOAT;
            v->d = d;
        }
    } else if (type == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        /* Bytes that are not text (a NUL, invalid UTF-8) go in as a blob, unchanged. */
        v->type = memchr(s, '\0', len) || !tycho_metric_utf8_ok(s, len) ? TYCHO_SQL_BLOB
                                                                      : TYCHO_SQL_TEXT;
        if (!(v->s = malloc(len + 1)))
            raise(L, "%s: out of memory", fn);
        memcpy(v->s, s, len + 1);
        v->len = len;
    } else {
        raise(L, "%s: value %d is a %s, which SQL cannot take (encode it first, e.g. "
                 "cjson.encode)", fn, n, lua_typename(L, type));
    }
}

/*
 * Pushes a call for sql (the string at sql_idx) on path, with the values from
 * sql_idx + 1 on; thread: a transaction's, or -1. Raises on misuse.
 */
static struct db_call *push_call(lua_State *L, const char *fn, const char *path, int sql_idx,
                                 int thread)
{
    size_t sql_len;
    const char *sql = lua_type(L, sql_idx) == LUA_TSTRING ? lua_tolstring(L, sql_idx, &sql_len)
                                                          : NULL;
    int nvalues = lua_gettop(L) - sql_idx;
    struct db_call *call;

    const char *refusal = tycho_task_refusal(L, TYCHO_PLACE_WAIT);

    if (refusal)
        raise(L, "%s: %s", fn, refusal);
    if (!sql)
        raise(L, "%s: the SQL must be a string, got %s", fn, luaL_typename(L, sql_idx));
    call = lua_newuserdata(L, sizeof(*call));
    memset(call, 0, sizeof(*call));
    call->thread = thread;
    call->worker = tycho_vm_of(L)->worker_id;
    luaL_getmetatable(L, CALL_MT);
    lua_setmetatable(L, -2);          /* from here on __gc frees what the call holds */
    call->w.start = wait_start;
    call->w.cancel = wait_cancel;
    call->job = tycho_sqlite_job_new(tycho_vm_of(L)->sqlite, path, sql, sql_len,
                                     (unsigned)nvalues);
    if (!call->job)
        raise(L, "%s: out of memory", fn);
    for (int i = 0; i < nvalues; i++)
        to_value(L, sql_idx + 1 + i, i + 1, fn, &call->job->params[i]);
    return call;
}

/* new_job(db, fn, sql, ...) -> call: checks the place and the arguments, copies them. */
static int new_job(lua_State *L)
{
    struct db_handle *db = luaL_checkudata(L, 1, DB_MT);

    push_call(L, luaL_checkstring(L, 2), db->path, 3, -1);
    return 1;
}

/* script_job(db or tx, fn, sql) -> call: several statements in turn, no values. */
static int script_job(lua_State *L)
{
    struct db_tx *tx = luaL_testudata(L, 1, TX_MT);
    struct db_handle *db = tx ? NULL : luaL_checkudata(L, 1, DB_MT);
    const char *fn = luaL_checkstring(L, 2);

    if (tx && !tx->open)
        return raise(L, "%s: the transaction has ended", fn);
    lua_settop(L, 3);
    push_call(L, fn, tx ? tx->path : db->path, 3, tx ? tx->thread : -1)->job->script = true;
    return 1;
}

/* tx_job(tx, fn, sql, ...) -> call on the transaction's thread. */
static int tx_job(lua_State *L)
{
    struct db_tx *tx = luaL_checkudata(L, 1, TX_MT);
    const char *fn = luaL_checkstring(L, 2);

    if (!tx->open)
        return raise(L, "%s: the transaction has ended", fn);
    push_call(L, fn, tx->path, 3, tx->thread);
    return 1;
}

/* begin(db) -> call: BEGIN IMMEDIATE on a thread it then holds (the write lock at once). */
static int tx_begin(lua_State *L)
{
    struct db_handle *db = luaL_checkudata(L, 1, DB_MT);

    lua_settop(L, 1);
    lua_pushliteral(L, "BEGIN IMMEDIATE");
    push_call(L, "db:transaction", db->path, 2, -1)->job->begins = true;
    return 1;
}

/* The task ended with the transaction open (client gone, error, stop): roll it back. */
static void tx_abandon(struct tycho_defer *d)
{
    struct db_tx *tx = (struct db_tx *)d;

    if (tx->open && tycho_sqlite_abandon(tx->owner, tx->path, tx->thread) < 0)
        tycho_log_error("tycho.db: out of memory rolling back an abandoned transaction: its "
                        "database thread stays held");
    tx->open = false;
}

/* The job of a call that is back; raises (misuse of the helpers) otherwise. */
static struct tycho_sqlite_job *back_job(lua_State *L, struct db_call *call)
{
    if (!call->job || !call->back)
        luaL_error(L, "tycho.db: no result to read");
    return call->job;
}

/* Pushes nil, message, code for a job that failed; returns 3. */
static int push_failure(lua_State *L, const struct tycho_sqlite_job *j)
{
    lua_pushnil(L);
    lua_pushstring(L, j->err);
    lua_pushstring(L, j->code);
    return 3;
}

/* tx_open(call) -> tx, or nil, message, code: the BEGIN's result. */
static int tx_open(lua_State *L)
{
    struct db_call *call = luaL_checkudata(L, 1, CALL_MT);
    struct tycho_sqlite_job *j = back_job(L, call);
    struct db_tx *tx;

    if (j->rc != TYCHO_OK)
        return push_failure(L, j);
    tx = lua_newuserdata(L, sizeof(*tx));
    memset(tx, 0, sizeof(*tx));
    tx->owner = j->owner;
    tx->thread = j->thread;
    tx->defer.fn = tx_abandon;
    luaL_getmetatable(L, TX_MT);
    lua_setmetatable(L, -2);
    tx->path = j->path;               /* the job's copy, taken over */
    j->path = NULL;
    tx->open = true;
    tycho_task_defer(L, &tx->defer);
    tycho_sqlite_job_free(j);
    call->job = NULL;
    return 1;
}

/* tx_end(tx, commit) -> call: COMMIT (or ROLLBACK), after which the thread is let go. */
static int tx_end(lua_State *L)
{
    struct db_tx *tx = luaL_checkudata(L, 1, TX_MT);
    bool commit = lua_toboolean(L, 2);

    if (!tx->open)
        return luaL_error(L, "db:transaction: the transaction has ended");
    lua_settop(L, 1);
    lua_pushstring(L, commit ? "COMMIT" : "ROLLBACK");
    push_call(L, "db:transaction", tx->path, 2, tx->thread)->job->ends = true;
    tycho_task_undefer(L, &tx->defer);  /* the end is on its way: nothing left to roll back */
    tx->open = false;
    return 1;
}

static int tx_gc(lua_State *L)
{
    struct db_tx *tx = luaL_checkudata(L, 1, TX_MT);

    free(tx->path);                   /* still open is impossible: its task rolled it back */
    tx->path = NULL;
    return 0;
}

/* wait(call): suspends the caller until the job is back (new_job checked the place). */
static int wait_job(lua_State *L)
{
    struct db_call *call = luaL_checkudata(L, 1, CALL_MT);

    if (call->sent || !call->job)
        return luaL_error(L, "tycho.db: a call is waited for once");
    return tycho_task_wait(L, &call->w, "tycho.db");
}

/* ---- results ----------------------------------------------------------------------- */

static void push_int(lua_State *L, long long i)
{
    char text[24];

    if (i >= -EXACT_INT && i <= EXACT_INT) {
        lua_pushnumber(L, (lua_Number)i);
        return;
    }
    snprintf(text, sizeof(text), "%lld", i);
    lua_pushstring(L, text);          /* not rounded: a string keeps every digit */
}

static void push_value(lua_State *L, const struct tycho_sql_value *v)
{
    switch (v->type) {
    case TYCHO_SQL_NULL:
        lua_pushlightuserdata(L, NULL);
        break;
    case TYCHO_SQL_INT:
        push_int(L, v->i);
        break;
    case TYCHO_SQL_FLOAT:
        lua_pushnumber(L, v->d);
        break;
    case TYCHO_SQL_TEXT:
    case TYCHO_SQL_BLOB:
        lua_pushlstring(L, v->s ? v->s : "", v->len);
        break;
    }
}

/* The rows: an array of tables keyed by column name. */
static void push_rows(lua_State *L, const struct tycho_sqlite_job *j)
{
    lua_createtable(L, (int)j->nrows, 0);
    for (size_t r = 0; r < j->nrows; r++) {
        lua_createtable(L, 0, (int)j->ncols);
        for (unsigned c = 0; c < j->ncols; c++) {
            push_value(L, &j->cells[r * j->ncols + c]);
            lua_setfield(L, -2, j->cols[c]);
        }
        lua_rawseti(L, -2, (int)r + 1);
    }
}

/* result(call, exec) -> rows | {changes=, last_id=} ; or nil, message, code. */
static int job_result(lua_State *L)
{
    struct db_call *call = luaL_checkudata(L, 1, CALL_MT);
    bool exec = lua_toboolean(L, 2);
    struct tycho_sqlite_job *j = back_job(L, call);
    int n = 1;

    if (j->rc != TYCHO_OK) {
        n = push_failure(L, j);
    } else if (exec) {
        lua_createtable(L, 0, 2);
        push_int(L, j->changes);
        lua_setfield(L, -2, "changes");
        push_int(L, j->last_id);
        lua_setfield(L, -2, "last_id");
    } else {
        push_rows(L, j);
    }
    tycho_sqlite_job_free(j);
    call->job = NULL;
    return n;
}

/* ---- the handle ------------------------------------------------------------------- */

static const char opened_key = 0;  /* registry: url -> true for every tycho.db.open */

/* Notes url among the databases the scripts open (tycho migrate uses the only one). */
static void remember(lua_State *L, const char *url)
{
    lua_pushlightuserdata(L, (void *)&opened_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_istable(L, -1)) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, url);
    }
    lua_pop(L, 1);
}

void tycho_bind_db_opened(lua_State *L)
{
    int n = 0;

    lua_newtable(L);
    lua_pushlightuserdata(L, (void *)&opened_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return;
    }
    for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {
        lua_pushvalue(L, -2);
        lua_rawseti(L, -5, ++n);
    }
    lua_pop(L, 1);
}

/* Makes the directories above the file at path (mkdir -p of its dirname); failures are left to the open. */
static void make_parents(char *path)
{
    for (char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
        *p = '\0';
        mkdir(path, 0755);
        *p = '/';
    }
}

/* tycho.db.open("sqlite:PATH") -> db: PATH relative to the app directory unless absolute. */
static int db_open(lua_State *L)
{
    size_t len;
    const char *url = luaL_checklstring(L, 1, &len);
    const char *dir = tycho_sqlite_dir ? tycho_sqlite_dir : tycho_vm_of(L)->dir;
    struct db_handle *db;
    int n;

    if (strncmp(url, "sqlite:", 7) != 0 || len == 7 || memchr(url, '\0', len))
        return luaL_error(L, "tycho.db.open: expected \"sqlite:PATH\", got \"%s\" (PostgreSQL "
                             "is not supported yet)", url);
    if (strcmp(url + 7, ":memory:") == 0)
        return luaL_error(L, "tycho.db.open: sqlite::memory: is not supported (each database "
                             "thread would have its own); use a file");
    db = lua_newuserdata(L, sizeof(*db));
    if (url[7] == '/' || !dir)
        n = snprintf(db->path, sizeof(db->path), "%s", url + 7);
    else
        n = snprintf(db->path, sizeof(db->path), "%s/%s", dir, url + 7);
    if (n < 0 || (size_t)n >= sizeof(db->path))
        return luaL_error(L, "tycho.db.open: the path is too long");
    if (tycho_sqlite_dir && url[7] != '/')
        make_parents(db->path);       /* `tycho test`: its fresh directory has none yet */
    luaL_getmetatable(L, DB_MT);
    lua_setmetatable(L, -2);
    remember(L, url);
    return 1;
}

static int db_tostring(lua_State *L)
{
    struct db_handle *db = luaL_checkudata(L, 1, DB_MT);

    lua_pushfstring(L, "tycho.db (sqlite:%s)", db->path);
    return 1;
}

/*
 * The methods, in Lua: each step that waits is a C function of its own. The
 * coroutine running a transaction is marked, so that a query on `db` or a
 * second transaction inside it (which would wait for a database thread the
 * transaction may hold) is refused instead of hanging.
 */
static const char db_lua[] =
    "local new_job, wait, result, begin, tx_open, tx_end, tx_job, tx_mt, script_job = ...\n"
    "local pcall, error, unpack, select, type = pcall, error, unpack, select, type\n"
    "local running = coroutine.running\n"
    "local in_tx = setmetatable({}, { __mode = 'k' })\n"
    "local methods, tx_methods = {}, {}\n"
    "tx_mt.__index = tx_methods\n"
    "local function pack(...) return { n = select('#', ...), ... } end\n"
    "local function outside(fn)\n"
    "  local co = running()\n"
    "  if co and in_tx[co] then\n"
    "    error(fn .. ': inside a transaction use its tx (tx:query, tx:exec)', 3)\n"
    "  end\n"
    "end\n"
    "local function call(make, handle, fn, exec, sql, ...)\n"
    "  local c = make(handle, fn, sql, ...)\n"
    "  wait(c)\n"
    "  return result(c, exec)\n"
    "end\n"
    "function methods.query(db, sql, ...)\n"
    "  outside('db:query')\n"
    "  return call(new_job, db, 'db:query', false, sql, ...)\n"
    "end\n"
    "function methods.exec(db, sql, ...)\n"
    "  outside('db:exec')\n"
    "  return call(new_job, db, 'db:exec', true, sql, ...)\n"
    "end\n"
    "function methods.exec_script(db, sql)\n"
    "  outside('db:exec_script')\n"
    "  local r, err, code = call(script_job, db, 'db:exec_script', true, sql)\n"
    "  if not r then return nil, err, code end\n"
    "  return true\n"
    "end\n"
    "function tx_methods.exec_script(tx, sql)\n"
    "  local r, err, code = call(script_job, tx, 'tx:exec_script', true, sql)\n"
    "  if not r then return nil, err, code end\n"
    "  return true\n"
    "end\n"
    "function tx_methods.query(tx, sql, ...)\n"
    "  return call(tx_job, tx, 'tx:query', false, sql, ...)\n"
    "end\n"
    "function tx_methods.exec(tx, sql, ...)\n"
    "  return call(tx_job, tx, 'tx:exec', true, sql, ...)\n"
    "end\n"
    "function methods.transaction(db, fn)\n"
    "  if type(fn) ~= 'function' then\n"
    "    error('db:transaction: expected a function, got ' .. type(fn), 2)\n"
    "  end\n"
    "  outside('db:transaction')\n"
    "  local c = begin(db)\n"
    "  wait(c)\n"
    "  local tx, err, code = tx_open(c)\n"
    "  if not tx then return nil, err, code end\n"
    "  local co = running()\n"
    "  in_tx[co] = true\n"
    "  local done = pack(pcall(fn, tx))\n"
    "  in_tx[co] = nil\n"
    "  local fin = tx_end(tx, done[1])\n"
    "  wait(fin)\n"
    "  local r, ferr, fcode = result(fin, true)\n"
    "  if not done[1] then error(done[2], 0) end\n"
    "  if not r then return nil, ferr, fcode end\n"
    "  return true, unpack(done, 2, done.n)\n"
    "end\n"
    "return methods\n";

void tycho_bind_db(lua_State *L)
{
    lua_pushlightuserdata(L, (void *)&opened_key);
    lua_newtable(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
    luaL_newmetatable(L, CALL_MT);
    lua_pushcfunction(L, call_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, DB_MT);
    if (luaL_loadbuffer(L, db_lua, sizeof(db_lua) - 1, "=tycho.db") != 0)
        lua_error(L);
    lua_pushcfunction(L, new_job);
    lua_pushcfunction(L, wait_job);
    lua_pushcfunction(L, job_result);
    lua_pushcfunction(L, tx_begin);
    lua_pushcfunction(L, tx_open);
    lua_pushcfunction(L, tx_end);
    lua_pushcfunction(L, tx_job);
    luaL_newmetatable(L, TX_MT);
    lua_pushcfunction(L, tx_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, script_job);
    lua_call(L, 9, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, db_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, db_open);
    lua_setfield(L, -2, "open");
    lua_setfield(L, -2, "db");
    lua_pushlightuserdata(L, NULL);   /* the same value as cjson.null */
    lua_setfield(L, -2, "null");
}
