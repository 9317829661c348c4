/*
 * pg.h: PostgreSQL on the worker's loop, through libpq's asynchronous API:
 * connecting (the host name looked up with evdns first, so libpq never
 * resolves and blocks), sending a statement with its values bound
 * (PQsendQueryParams: never interpolated), and reading its result as the
 * socket is ready. Connections come from a tycho_connpool (net/connpool.h).
 *
 * A job (net/sql.h) is one statement, or a script of several (j->script),
 * whose result is copied into the job as SQLite's is. Types: bool as
 * TYCHO_SQL_BOOL; int2/int4/int8/oid as integers; float4/float8 as floats;
 * numeric as an integer or a float where that is exact, else its text;
 * bytea as a blob; everything else (text, json, uuid, timestamps...) as
 * text.
 *
 * Transactions: a job with `begins` keeps its connection (j->pin) after a
 * good result; jobs with that pin run on it; a job with `ends` lets it go.
 * A connection is only ever returned to the pool outside a transaction.
 *
 * Threads: everything on the worker thread that owns the tycho_pg.
 */
#ifndef TYCHO_PG_H
#define TYCHO_PG_H

#include "net/connpool.h"
#include "net/sql.h"

struct event_base;
struct tycho_pg;

/*
 * A pool for url ("postgres://..." or "postgresql://...", libpq's URI
 * form), named name (its metrics label: the URL without its password).
 * NULL with err (TYCHO_ERR_LEN) when url does not parse or out of memory.
 */
struct tycho_pg *tycho_pg_new(const char *url, const char *name,
                              const struct tycho_connpool_opts *o, struct event_base *base,
                              int worker, char *err);

/* Closes every connection, in flight or not; jobs still sent are freed. NULL is a no-op. */
void tycho_pg_free(struct tycho_pg *pg);

/*
 * Runs j on a pooled connection, or on j->pin's when set; done(j) is called
 * when it is back (maybe inside this call, for a job that failed at once).
 * j->rc, err and code say how it went: SQLSTATE codes, the server's or, for
 * what happens on this side, 08001 (cannot connect), 08006 (connection
 * lost), 57014 (timeout), 53300 (pool exhausted, circuit open).
 */
void tycho_pg_send(struct tycho_pg *pg, struct tycho_sql_job *j, tycho_sql_done_fn *done,
                   void *arg);

/* The caller gives up on j (sent, not back): it is freed when it is. */
void tycho_pg_cancel(struct tycho_sql_job *j);

/*
 * A transaction given up while open (its task ended): its connection is
 * closed, and PostgreSQL rolls it back, once any statement on it is back.
 */
void tycho_pg_abandon(void *pin);

#endif
