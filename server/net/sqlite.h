/*
 * sqlite.h: SQLite on database threads, so that no worker loop ever waits on
 * a query. A process-wide pool of threads (--db-threads) takes jobs from one
 * queue; each thread keeps its own connection per database file (WAL mode, a
 * busy timeout, foreign keys on). A job carries its SQL and its parameters
 * (copied), runs on a thread, and goes back to its owner (one per script
 * generation, on the worker's loop) through a message queue, with its rows
 * copied out. The owner's thread turns them into Lua values.
 *
 * A transaction pins one thread (and so its connection): its BEGIN job
 * (begins) pins the thread that runs it, its later jobs are sent to that
 * thread alone (tycho_sqlite_send_to), and its COMMIT or ROLLBACK job (ends)
 * unpins it, rolling back whatever is still open. A pinned thread runs no
 * other job; at most all threads but one are pinned at once (one with a
 * single thread), so other queries go on while transactions are open.
 *
 * Threads: tycho_sqlite_start/stop on the main thread; jobs are made, sent
 * and freed on the owner's thread; the database threads touch a job only
 * between send and its return.
 */
#ifndef TYCHO_SQLITE_H
#define TYCHO_SQLITE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/mq.h"
#include "core/tycho.h"
#include "net/sql.h"

struct event_base;

/* The default and the bound of --db-threads. */
#define TYCHO_SQLITE_THREADS_DEFAULT 2
#define TYCHO_SQLITE_THREADS_MAX 64
/* How long a statement waits for a lock another connection holds (SQLITE_BUSY after). */
#define TYCHO_SQLITE_BUSY_MS 5000

/*
 * Where "sqlite:PATH" with a relative PATH goes: NULL for the app directory
 * (serving), or a directory of its own (`tycho test`: a fresh temporary one
 * per run). Set on the main thread before any generation is built.
 */
extern const char *tycho_sqlite_dir;

/* Starts n database threads (main thread, before workers). TYCHO_OK, or TYCHO_ERR with err. */
int tycho_sqlite_start(unsigned n, char *err);

/* Stops and joins them, closing their connections (main thread, after the workers). */
void tycho_sqlite_stop(void);

/* A script generation's side: where its jobs come back, on its worker's loop. */
struct tycho_sqlite_owner *tycho_sqlite_owner_new(void);

/* Jobs come back on base from now on (the worker's thread). TYCHO_OK or TYCHO_ERR. */
int tycho_sqlite_owner_attach(struct tycho_sqlite_owner *o, struct event_base *base);

/*
 * Frees o, first waiting for its jobs still on a database thread (a query
 * whose client left): their results are dropped. Owner's thread. NULL is a
 * no-op.
 */
void tycho_sqlite_owner_free(struct tycho_sqlite_owner *o);

/* A job for path and sql (copied), with room for nparams parameters. NULL: out of memory. */
struct tycho_sql_job *tycho_sqlite_job_new(struct tycho_sqlite_owner *o, const char *path,
                                              const char *sql, size_t sql_len, unsigned nparams);

/*
 * Hands j to a database thread; done(j) is called on the owner's thread when
 * it is back. TYCHO_ERR when the owner is not attached or no thread runs (j
 * still the caller's).
 */
int tycho_sqlite_send(struct tycho_sql_job *j, tycho_sql_done_fn *done, void *arg);

/*
 * Hands j to database thread `thread` (a transaction's), which is pinned to
 * it. Otherwise as tycho_sqlite_send.
 */
int tycho_sqlite_send_to(struct tycho_sql_job *j, int thread, tycho_sql_done_fn *done,
                         void *arg);

/*
 * Ends the transaction pinned to `thread` without waiting for it (its owner
 * gave up: a client left, a stop): a ROLLBACK job whose result is dropped.
 * TYCHO_ERR when out of memory (the thread stays pinned until the process
 * stops).
 */
int tycho_sqlite_abandon(struct tycho_sqlite_owner *o, const char *path, int thread);

/* The owner gives up on j (sent, not back yet): it is freed when it comes back. */
void tycho_sqlite_cancel(struct tycho_sql_job *j);


#endif
