/*
 * connpool.h: a worker's pool of connections to one server (a PostgreSQL
 * database, a Redis server, an HTTP backend), whatever speaks on them. It
 * bounds the connections, queues callers for one (a bounded queue, each
 * with a wait timeout), keeps idle ones for reuse (most recently used first)
 * under an idle timeout and a maximum lifetime, checks an idle connection
 * before it is reused and every second while it waits, and opens a circuit
 * breaker after consecutive failures. The driver (net/pg.c, net/redis.c,
 * net/upstream.c) makes and closes connections and says when one is ready
 * or failed; the pool decides who gets which.
 *
 * Two kinds of pool (tycho_connpool_set_per_call):
 * - Connections are the pool's (PostgreSQL, Redis): a new one goes to
 *   whoever has waited longest, a connect's failure or success settles the
 *   breaker, and so do the driver's later failures (tycho_connpool_failed,
 *   tycho_connpool_succeeded).
 * - The call is the unit (HTTP): a connection made for a caller is that
 *   caller's (its failure is that caller's error), only the callers' results
 *   settle the breaker (tycho_connpool_ended), and while the breaker is
 *   half-open one caller at a time, the trial, is let through.
 *
 * Counts go to the tycho_pool_* metrics, labelled with the pool's name
 * (its URL without a password): gauges by deltas, so the pools of an old and
 * a new script generation add up in one series. A driver with metrics of its
 * own (tycho.http's tycho_backend_*) makes its pools with no worker (-1):
 * they count nothing, and it reads tycho_connpool_inspect.
 *
 * Threads: a pool and its connections and waiters belong to the worker
 * whose loop they run on; nothing here locks.
 */
#ifndef TYCHO_CONNPOOL_H
#define TYCHO_CONNPOOL_H

#include <stdbool.h>

#include <event2/event_struct.h>

#include "core/list.h"

struct event_base;
struct tycho_connpool;
struct tycho_pwaiter;

struct tycho_connpool_opts {
    unsigned max_conns;      /* open connections at most, busy, idle or connecting */
    unsigned max_waiting;    /* callers queued for a connection at most */
    double wait_timeout;     /* seconds a caller waits in the queue; 0: never waits */
    double idle_timeout;     /* seconds an idle connection is kept; 0: not kept */
    double max_lifetime;     /* seconds a connection is reused for; 0: no limit */
    double connect_timeout;  /* seconds to connect, name lookup and log-in included (driver) */
    double timeout;          /* seconds a query or command may take (driver) */
    unsigned max_failures;   /* consecutive failures that open the breaker; 0: none */
    double cooldown;         /* seconds the breaker stays open */
};

/* One connection: the first member of the driver's own connection struct. */
struct tycho_pconn {
    struct tycho_connpool *pool;
    struct tycho_list link;   /* in the pool's idle list while idle */
    struct tycho_pwaiter *owner; /* per_call: the caller it is being made for, until ready */
    double born;              /* when it became ready (monotonic seconds) */
    double idle_since;
    unsigned long uses;       /* times it was handed to a caller */
    bool ready;               /* connected (and logged in) */
};

/*
 * A caller's answer: c (the caller's until tycho_connpool_release) or NULL
 * with err ("pool exhausted", "circuit open", "pool closed", "out of memory
 * opening a connection", or the driver's connect error, which sets
 * w->connect_failed). May be called from inside tycho_connpool_acquire.
 */
typedef void tycho_pwaiter_fn(struct tycho_pwaiter *w, struct tycho_pconn *c, const char *err);

/* A caller waiting for a connection: embedded in the caller's struct. */
struct tycho_pwaiter {
    struct tycho_connpool *pool;  /* set while queued */
    struct tycho_list link;
    struct event timer;
    tycho_pwaiter_fn *got;
    struct tycho_pconn *conn;     /* per_call: the connection being made for it */
    bool connect_failed;          /* out: err is the driver's connect error, not the pool's */
};

struct tycho_connpool_driver {
    /*
     * Starts a connection; the driver later calls tycho_connpool_opened on
     * it (from the loop, never from inside open). NULL: out of memory.
     */
    struct tycho_pconn *(*open)(struct tycho_connpool *p, void *arg);
    /* Closes and frees a connection (idle, busy or connecting). */
    void (*close)(struct tycho_pconn *c);
    /* Whether an idle connection still looks usable (no byte, no EOF waiting). */
    bool (*alive)(struct tycho_pconn *c);
};

/* What a pool holds now, for a driver's stats. */
struct tycho_connpool_stats {
    unsigned open;            /* connections counted against max_conns: busy, idle, connecting */
    unsigned idle;            /* of which idle */
    unsigned waiting;         /* callers queued */
    const char *circuit;      /* "closed", "open" or "half-open" (static) */
};

void tycho_connpool_opts_default(struct tycho_connpool_opts *o);

/*
 * A pool named name (copied; its metrics label and the name its breaker
 * logs under) on base; it counts in worker's tycho_pool_* series, or in
 * none when worker is -1. arg goes to the driver's open. NULL: out of memory.
 */
struct tycho_connpool *tycho_connpool_new(const char *name, const struct tycho_connpool_opts *o,
                                          const struct tycho_connpool_driver *d, void *arg,
                                          struct event_base *base, int worker);

/*
 * Makes p a pool where the call is the unit (per_call, see the top of this
 * file), as its driver needs; right after tycho_connpool_new, before any
 * caller. Pools are made with connections their own.
 */
void tycho_connpool_set_per_call(struct tycho_connpool *p);

/*
 * Closes the idle connections and fails every queued caller ("pool
 * closed"). Busy and connecting connections must have been closed first
 * (released, or aborted by the driver). NULL is a no-op.
 */
void tycho_connpool_free(struct tycho_connpool *p);

const struct tycho_connpool_opts *tycho_connpool_opts(const struct tycho_connpool *p);
const char *tycho_connpool_name(const struct tycho_connpool *p);

/*
 * New settings. Connections already open stay (a lower max_conns is met as
 * they close); a higher max_conns lets queued callers in.
 */
void tycho_connpool_configure(struct tycho_connpool *p, const struct tycho_connpool_opts *o);

/* Fills s from p. */
void tycho_connpool_inspect(const struct tycho_connpool *p, struct tycho_connpool_stats *s);

/*
 * Gets w a connection: now (w->got inside this call) or later: an idle one
 * that passes the checks, a new one while there is room (per_call: made for
 * w, whose answer is its result), else a place in the queue.
 */
void tycho_connpool_acquire(struct tycho_connpool *p, struct tycho_pwaiter *w,
                            tycho_pwaiter_fn *got);

/*
 * per_call: as acquire, for a caller the breaker let through already and
 * that goes again (a request sent once more after its connection was lost).
 */
void tycho_connpool_retry(struct tycho_connpool *p, struct tycho_pwaiter *w,
                          tycho_pwaiter_fn *got);

/*
 * Gives up waiting (the caller left): w leaves the queue; per_call, the
 * connection being made for it is closed. A no-op once w->got was called.
 */
void tycho_connpool_cancel(struct tycho_pwaiter *w);

/*
 * The driver: c has connected (err NULL) or failed (err: why; c is closed
 * by the pool). per_call: c or err goes to the caller it was made for.
 * Otherwise a failure counts toward the breaker and fails the first queued
 * caller; a success closes the breaker and goes to the first queued caller
 * or idles.
 */
void tycho_connpool_opened(struct tycho_pconn *c, const char *err);

/*
 * The caller is done with c. reusable: nothing is left half-done on it (a
 * reply still owed, a transaction open), so it may serve someone else;
 * otherwise it is closed.
 */
void tycho_connpool_release(struct tycho_pconn *c, bool reusable);

/*
 * The driver: an idle connection (on no caller's hands) is done for: the
 * server closed it or sent something unasked. It is closed now rather than
 * at the next check.
 */
void tycho_connpool_drop(struct tycho_pconn *c);

/* The driver: closes a connection still connecting, without counting a failure (a teardown). */
void tycho_connpool_abort(struct tycho_pconn *c);

/*
 * Not per_call. The driver: a connection-level failure (lost mid-query, a
 * timeout) counts toward the breaker; a query that went through closes it.
 */
void tycho_connpool_failed(struct tycho_connpool *p, const char *err);
void tycho_connpool_succeeded(struct tycho_connpool *p);

/*
 * per_call: w's call is over, or abandoned; it was let through the breaker
 * (acquire answered it, or it left). failure: it failed in the breaker's
 * sense (err says why, for the log). Otherwise err NULL: it went through,
 * and the breaker closes; err set: it ended without a verdict ("pool
 * exhausted", the caller left), and a trial's place goes to the next caller.
 */
void tycho_connpool_ended(struct tycho_connpool *p, struct tycho_pwaiter *w, const char *err,
                          bool failure);

#endif
