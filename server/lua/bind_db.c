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
#include "net/pg.h"
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
#define PGPOOL_MT "tycho.db.pgpool"
/* Integers a Lua number holds exactly; beyond them a value is a decimal string. */
#define EXACT_INT 9007199254740992LL

/*
 * A PostgreSQL database in one Lua state: its URL, options and (made on the
 * worker, at the first statement) its pool. One per URL per state, kept in
 * the registry until the state closes, whatever handles name it.
 */
struct pg_box {
    struct tycho_vm *vm;
    struct tycho_pg *pg;             /* owned; NULL until the first statement */
    struct tycho_connpool_opts o;
    char url[2048];
    char name[2048];                 /* the URL without its password: logs, metrics, errors */
};

struct db_handle {
    char path[4096];                 /* SQLite: the database file; PostgreSQL: the name */
    struct pg_box *box;              /* PostgreSQL's pool; NULL for SQLite */
};

/* Where a statement goes: a database, and a transaction's thread or connection. */
struct db_target {
    const char *path;
    struct pg_box *box;
    int thread;                      /* SQLite: a transaction's thread; -1: any */
    void *pin;                       /* PostgreSQL: a transaction's connection */
};

struct db_call {
    struct tycho_wait w;             /* first: the task's handle is this struct */
    struct tycho_sql_job *job;    /* owned while not on a database thread; NULL once taken */
    int thread;                      /* a transaction's thread; -1: any */
    struct pg_box *box;              /* PostgreSQL's; NULL for SQLite */
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
    struct pg_box *box;              /* PostgreSQL's; NULL for SQLite */
    void *pin;                       /* PostgreSQL: the connection it holds */
    bool open;
};

int tycho_bind_raise(lua_State *L, const char *fmt, ...)
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
static void count_query(const struct db_call *call, const struct tycho_sql_job *j)
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

static void on_back(struct tycho_sql_job *j)
{
    struct db_call *call = j->arg;

    call->back = true;
    count_query(call, j);
    tycho_task_wake(&call->w);
}

/* Makes the box's pool on its worker's loop at the first statement; NULL with err. */
static struct tycho_pg *pg_of(struct pg_box *box, char *err)
{
    if (!box->pg)
        box->pg = tycho_pg_new(box->url, box->name, &box->o, box->vm->base, box->vm->worker_id,
                               err);
    return box->pg;
}

static void wait_start(struct tycho_wait *w)
{
    struct db_call *call = (struct db_call *)w;
    struct tycho_pg *pg;

    call->sent = true;
    call->sent_us = tycho_now_us();
    if (call->box) {
        if ((pg = pg_of(call->box, call->job->err))) {
            tycho_pg_send(pg, call->job, on_back, call);
            return;
        }
        call->job->rc = TYCHO_ERR;
        call->job->code = "08001";
        call->back = true;
        tycho_task_wake(w);
        return;
    }
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
        tycho_sql_job_free(call->job);
    else if (call->box)
        tycho_pg_cancel(call->job);
    else
        tycho_sqlite_cancel(call->job);
    call->job = NULL;
}

static int call_gc(lua_State *L)
{
    struct db_call *call = luaL_checkudata(L, 1, CALL_MT);

    if (call->job && call->sent && !call->back && call->box)
        tycho_pg_cancel(call->job);       /* freed when it comes back */
    else if (call->job && call->sent && !call->back)
        tycho_sqlite_cancel(call->job);   /* freed when it comes back */
    else
        tycho_sql_job_free(call->job);
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
        v->type = TYCHO_SQL_BOOL;         /* SQLite stores 1 or 0 */
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
            tycho_bind_raise(L, "%s: out of memory", fn);
        memcpy(v->s, s, len + 1);
        v->len = len;
    } else {
        tycho_bind_raise(L, "%s: value %d is a %s, which SQL cannot take (encode it first, e.g. "
                 "cjson.encode)", fn, n, lua_typename(L, type));
    }
}

/*
 * Pushes a call for sql (the string at sql_idx) to `to`, with the values
 * from sql_idx + 1 on. Raises on misuse.
 */
static struct db_call *push_call(lua_State *L, const char *fn, const struct db_target *to,
                                 int sql_idx)
{
    size_t sql_len;
    const char *sql = lua_type(L, sql_idx) == LUA_TSTRING ? lua_tolstring(L, sql_idx, &sql_len)
                                                          : NULL;
    int nvalues = lua_gettop(L) - sql_idx;
    struct db_call *call;

    const char *refusal = tycho_task_refusal(L, TYCHO_PLACE_WAIT);

    if (refusal)
        tycho_bind_raise(L, "%s: %s", fn, refusal);
    if (!sql)
        tycho_bind_raise(L, "%s: the SQL must be a string, got %s", fn, luaL_typename(L, sql_idx));
    call = lua_newuserdata(L, sizeof(*call));
    memset(call, 0, sizeof(*call));
    call->thread = to->thread;
    call->box = to->box;
    call->worker = tycho_vm_of(L)->worker_id;
    luaL_getmetatable(L, CALL_MT);
    lua_setmetatable(L, -2);          /* from here on __gc frees what the call holds */
    call->w.start = wait_start;
    call->w.cancel = wait_cancel;
    call->job = tycho_sqlite_job_new(tycho_vm_of(L)->sqlite, to->path, sql, sql_len,
                                     (unsigned)nvalues);
    if (!call->job)
        tycho_bind_raise(L, "%s: out of memory", fn);
    call->job->pin = to->pin;
    for (int i = 0; i < nvalues; i++)
        to_value(L, sql_idx + 1 + i, i + 1, fn, &call->job->params[i]);
    return call;
}

static struct db_target db_target(const struct db_handle *db)
{
    struct db_target to = {db->path, db->box, -1, NULL};

    return to;
}

static struct db_target tx_target(const struct db_tx *tx)
{
    struct db_target to = {tx->path, tx->box, tx->thread, tx->pin};

    return to;
}

/* new_job(db, fn, sql, ...) -> call: checks the place and the arguments, copies them. */
static int new_job(lua_State *L)
{
    struct db_handle *db = luaL_checkudata(L, 1, DB_MT);
    struct db_target to = db_target(db);

    push_call(L, luaL_checkstring(L, 2), &to, 3);
    return 1;
}

/* script_job(db or tx, fn, sql) -> call: several statements in turn, no values. */
static int script_job(lua_State *L)
{
    struct db_tx *tx = luaL_testudata(L, 1, TX_MT);
    struct db_handle *db = tx ? NULL : luaL_checkudata(L, 1, DB_MT);
    const char *fn = luaL_checkstring(L, 2);
    struct db_target to;

    if (tx && !tx->open)
        return tycho_bind_raise(L, "%s: the transaction has ended", fn);
    to = tx ? tx_target(tx) : db_target(db);
    lua_settop(L, 3);
    push_call(L, fn, &to, 3)->job->script = true;
    return 1;
}

/* tx_job(tx, fn, sql, ...) -> call on the transaction's thread. */
static int tx_job(lua_State *L)
{
    struct db_tx *tx = luaL_checkudata(L, 1, TX_MT);
    const char *fn = luaL_checkstring(L, 2);
    struct db_target to = tx_target(tx);

    if (!tx->open)
        return tycho_bind_raise(L, "%s: the transaction has ended", fn);
    push_call(L, fn, &to, 3);
    return 1;
}

/*
 * begin(db) -> call: BEGIN on a thread or connection it then holds; SQLite's
 * BEGIN IMMEDIATE takes the write lock at once.
 */
static int tx_begin(lua_State *L)
{
    struct db_handle *db = luaL_checkudata(L, 1, DB_MT);
    struct db_target to = db_target(db);

    lua_settop(L, 1);
    if (db->box)
        lua_pushliteral(L, "BEGIN");
    else
        lua_pushliteral(L, "BEGIN IMMEDIATE");
    push_call(L, "db:transaction", &to, 2)->job->begins = true;
    return 1;
}

/* The task ended with the transaction open (client gone, error, stop): roll it back. */
static void tx_abandon(struct tycho_defer *d)
{
    struct db_tx *tx = (struct db_tx *)d;

    if (tx->open && tx->box) {
        tycho_pg_abandon(tx->pin);    /* closed: PostgreSQL rolls it back */
        tx->open = false;
        return;
    }
    if (tx->open && tycho_sqlite_abandon(tx->owner, tx->path, tx->thread) < 0)
        tycho_log_error("tycho.db: out of memory rolling back an abandoned transaction: its "
                        "database thread stays held");
    tx->open = false;
}

/* The job of a call that is back; raises (misuse of the helpers) otherwise. */
static struct tycho_sql_job *back_job(lua_State *L, struct db_call *call)
{
    if (!call->job || !call->back)
        luaL_error(L, "tycho.db: no result to read");
    return call->job;
}

/* Pushes nil, message, code for a job that failed; returns 3. */
static int push_failure(lua_State *L, const struct tycho_sql_job *j)
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
    struct tycho_sql_job *j = back_job(L, call);
    struct db_tx *tx;

    if (j->rc != TYCHO_OK)
        return push_failure(L, j);
    tx = lua_newuserdata(L, sizeof(*tx));
    memset(tx, 0, sizeof(*tx));
    tx->owner = j->owner;
    tx->thread = j->thread;
    tx->box = call->box;
    tx->pin = j->pin;
    tx->defer.fn = tx_abandon;
    luaL_getmetatable(L, TX_MT);
    lua_setmetatable(L, -2);
    tx->path = j->path;               /* the job's copy, taken over */
    j->path = NULL;
    tx->open = true;
    tycho_task_defer(L, &tx->defer);
    tycho_sql_job_free(j);
    call->job = NULL;
    return 1;
}

/* tx_end(tx, commit) -> call: COMMIT (or ROLLBACK), after which the thread is let go. */
static int tx_end(lua_State *L)
{
    struct db_tx *tx = luaL_checkudata(L, 1, TX_MT);
    bool commit = lua_toboolean(L, 2);
    struct db_target to = tx_target(tx);

    if (!tx->open)
        return luaL_error(L, "db:transaction: the transaction has ended");
    lua_settop(L, 1);
    lua_pushstring(L, commit ? "COMMIT" : "ROLLBACK");
    push_call(L, "db:transaction", &to, 2)->job->ends = true;
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
    case TYCHO_SQL_BOOL:
        lua_pushboolean(L, (int)v->i);
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
static void push_rows(lua_State *L, const struct tycho_sql_job *j)
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
    struct tycho_sql_job *j = back_job(L, call);
    int n = 1;

    if (j->rc != TYCHO_OK) {
        n = push_failure(L, j);
    } else if (exec) {
        lua_createtable(L, 0, 2);
        push_int(L, j->changes);
        lua_setfield(L, -2, "changes");
        if (!j->no_last_id) {
            push_int(L, j->last_id);
            lua_setfield(L, -2, "last_id");
        }
    } else {
        push_rows(L, j);
    }
    tycho_sql_job_free(j);
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

/* Makes the directories above the file at path (mkdir -p of its dirname); failures are left
 * to the open. */
static void make_parents(char *path)
{
    for (char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
        *p = '\0';
        mkdir(path, 0755);
        *p = '/';
    }
}

/* Reads number field `key` of the options table at idx into *v, within [min, max]. */
static void opt_number(lua_State *L, int idx, const char *fn, const char *key, double min,
                       double max, double *v)
{
    lua_getfield(L, idx, key);
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER || !(lua_tonumber(L, -1) >= min) ||
            !(lua_tonumber(L, -1) <= max))
            luaL_error(L, "%s: option %s must be a number from %g to %g", fn, key, min, max);
        *v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
}

static void opt_count(lua_State *L, int idx, const char *fn, const char *key, double min,
                      double max, unsigned *v)
{
    double d = *v;

    opt_number(L, idx, fn, key, min, max, &d);
    if (d != floor(d))
        luaL_error(L, "%s: option %s must be a whole number", fn, key);
    *v = (unsigned)d;
}

void tycho_bind_pool_opts(lua_State *L, int idx, const char *fn, struct tycho_connpool_opts *o)
{
    static const char *const known[] = {"pool", "max_waiting", "wait_timeout", "idle_timeout",
                                        "max_lifetime", "connect_timeout", "timeout",
                                        "max_failures", "cooldown", NULL};

    tycho_connpool_opts_default(o);
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        int i = 0;
        while (known[i] && strcmp(known[i], key) != 0)
            i++;
        if (!known[i])
            luaL_error(L, "%s: unknown option %s", fn, lua_type(L, -2) == LUA_TSTRING
                                                         ? key : luaL_typename(L, -2));
    }
    opt_count(L, idx, fn, "pool", 1, 10000, &o->max_conns);
    opt_count(L, idx, fn, "max_waiting", 0, 1000000, &o->max_waiting);
    opt_number(L, idx, fn, "wait_timeout", 0, 86400, &o->wait_timeout);
    opt_number(L, idx, fn, "idle_timeout", 0, 86400, &o->idle_timeout);
    opt_number(L, idx, fn, "max_lifetime", 0, 31536000, &o->max_lifetime);
    opt_number(L, idx, fn, "connect_timeout", 0.001, 86400, &o->connect_timeout);
    opt_number(L, idx, fn, "timeout", 0.001, 86400, &o->timeout);
    opt_count(L, idx, fn, "max_failures", 0, 1000000, &o->max_failures);
    opt_number(L, idx, fn, "cooldown", 0, 86400, &o->cooldown);
}

void tycho_bind_redact(const char *url, char *out, size_t cap)
{
    const char *auth = strstr(url, "://");
    const char *at, *colon;

    snprintf(out, cap, "%s", url);
    if (!auth)
        return;
    auth += 3;
    at = strchr(auth, '@');
    colon = strchr(auth, ':');
    if (at && colon && colon < at && !memchr(auth, '/', (size_t)(at - auth)))
        snprintf(out, cap, "%.*s%s", (int)(colon - url), url, at);
}

static int pgpool_gc(lua_State *L)
{
    struct pg_box *box = luaL_checkudata(L, 1, PGPOOL_MT);

    tycho_pg_free(box->pg);           /* connections closed, statements in flight dropped */
    box->pg = NULL;
    return 0;
}

static const char pgpools_key = 0;  /* registry: url -> its pg_box, for the state's life */

/* The box for url, made with the options at opts_idx if it is the first open of url. */
static struct pg_box *pg_box_for(lua_State *L, const char *url, int opts_idx)
{
    struct pg_box *box;

    lua_pushlightuserdata(L, (void *)&pgpools_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, url);
    if ((box = luaL_testudata(L, -1, PGPOOL_MT))) {
        lua_pop(L, 2);
        return box;                   /* the first open's pool and options serve */
    }
    lua_pop(L, 1);
    box = lua_newuserdata(L, sizeof(*box));
    memset(box, 0, sizeof(*box));
    tycho_bind_pool_opts(L, opts_idx, "tycho.db.open", &box->o);
    box->vm = tycho_vm_of(L);
    snprintf(box->url, sizeof(box->url), "%s", url);
    tycho_bind_redact(url, box->name, sizeof(box->name));
    luaL_getmetatable(L, PGPOOL_MT);
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, url);
    lua_pop(L, 1);
    return box;
}

/* tycho.db.open("postgres://...", opts) -> db: nothing connects until the first statement. */
static int pg_open(lua_State *L, const char *url, size_t len)
{
    struct db_handle *db;
    struct pg_box *box;

    if (len >= sizeof(box->url))
        return luaL_error(L, "tycho.db.open: the URL is too long");
    box = pg_box_for(L, url, 2);
    db = lua_newuserdata(L, sizeof(*db));
    db->box = box;
    snprintf(db->path, sizeof(db->path), "%s", box->name);
    luaL_getmetatable(L, DB_MT);
    lua_setmetatable(L, -2);
    remember(L, url);
    return 1;
}

/*
 * tycho.db.open("sqlite:PATH") -> db: PATH relative to the app directory
 * unless absolute; or a PostgreSQL URL (pg_open).
 */
static int db_open(lua_State *L)
{
    size_t len;
    const char *url = luaL_checklstring(L, 1, &len);
    const char *dir = tycho_sqlite_dir ? tycho_sqlite_dir : tycho_vm_of(L)->dir;
    struct db_handle *db;
    int n;

    lua_settop(L, 2);                 /* the options at 2, even when not given */
    if (memchr(url, '\0', len))
        return luaL_error(L, "tycho.db.open: the URL holds a NUL byte");
    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0)
        return pg_open(L, url, len);
    if (strncmp(url, "sqlite:", 7) != 0 || len == 7)
        return luaL_error(L, "tycho.db.open: expected \"sqlite:PATH\" or \"postgres://...\", "
                             "got \"%s\"", url);
    if (!lua_isnoneornil(L, 2))
        return luaL_error(L, "tycho.db.open: options are for PostgreSQL's pool; SQLite takes "
                             "none (see --db-threads)");
    if (strcmp(url + 7, ":memory:") == 0)
        return luaL_error(L, "tycho.db.open: sqlite::memory: is not supported (each database "
                             "thread would have its own); use a file");
    db = lua_newuserdata(L, sizeof(*db));
    db->box = NULL;
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

    if (db->box)
        lua_pushfstring(L, "tycho.db (%s)", db->path);
    else
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
    lua_pushlightuserdata(L, (void *)&pgpools_key);
    lua_newtable(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
    luaL_newmetatable(L, PGPOOL_MT);
    lua_pushcfunction(L, pgpool_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
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
