/*
 * sql.h: a SQL statement and its result, as both SQL drivers (net/sqlite.c
 * on database threads, net/pg.c on the worker's loop) take and fill it, and
 * lua/bind_db.c turns into Lua values. A job owns everything it points to.
 * Threads: made and freed on the caller's thread; a driver touches it only
 * between send and its done call.
 */
#ifndef TYCHO_SQL_H
#define TYCHO_SQL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/mq.h"
#include "core/tycho.h"

enum tycho_sql_type { TYCHO_SQL_NULL, TYCHO_SQL_INT, TYCHO_SQL_FLOAT, TYCHO_SQL_TEXT,
                      TYCHO_SQL_BLOB, TYCHO_SQL_BOOL };

/* A parameter or a cell. text/blob bytes are owned by the job. */
struct tycho_sql_value {
    enum tycho_sql_type type;
    long long i;                      /* INT, and BOOL (0 or 1) */
    double d;
    char *s;
    size_t len;
};

struct tycho_sqlite_owner;
struct tycho_sql_job;

/* Called on the owner's thread when a job is back (not for a job cancelled first). */
typedef void tycho_sql_done_fn(struct tycho_sql_job *j);

struct tycho_sql_job {
    struct tycho_msg msg;             /* first: how it goes back (TYCHO_MSG_WORK_DONE) */
    struct tycho_sqlite_owner *owner; /* SQLite's */
    char *path;                       /* owned: the database file; PostgreSQL: the pool's name */
    char *sql;                        /* owned, NUL-terminated */
    struct tycho_sql_value *params;   /* owned array */
    unsigned nparams;
    tycho_sql_done_fn *done;
    void *arg;                        /* the owner side's */
    _Atomic bool cancelled;           /* the owner gave up on it: freed on return */
    bool script;                      /* sql is several statements, run in turn, no values */
    bool begins;                      /* a transaction's BEGIN: pins the thread it runs on */
    bool ends;                        /* its COMMIT or ROLLBACK: unpins the thread */
    int thread;                       /* the thread that ran it (where a transaction goes on) */
    bool rolled_back;                 /* begins, but given up on: the thread rolled it back */
    /* The result, filled on the database thread. */
    int rc;                           /* TYCHO_OK, or TYCHO_ERR with err and code */
    char err[TYCHO_ERR_LEN];          /* SQLite's message */
    const char *code;                 /* static (SQLite's code names) or state */
    char state[6];                    /* PostgreSQL: the SQLSTATE code */
    long long changes, last_id;       /* rows changed by the statement, the last rowid */
    bool no_last_id;                  /* PostgreSQL without RETURNING: last_id means nothing */
    void *pin;                        /* PostgreSQL: a transaction's connection */
    void *sent;                       /* PostgreSQL: the driver's record while it is sent */
    unsigned ncols;
    char **cols;                      /* owned: column names */
    struct tycho_sql_value *cells;    /* owned: nrows * ncols, row by row */
    size_t nrows;
};

/* A job for path and sql (copied), with room for nparams parameters. NULL: out of memory. */
struct tycho_sql_job *tycho_sql_job_new(const char *path, const char *sql, size_t sql_len,
                                        unsigned nparams);

/* Frees j and what it owns (a job that was never sent, or is back). NULL is a no-op. */
void tycho_sql_job_free(struct tycho_sql_job *j);

#endif
