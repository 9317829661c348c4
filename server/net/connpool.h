/*
 * connpool.h: a worker's pool of connections to one server (a PostgreSQL
 * database, a Redis server), whatever speaks on them. It bounds the
 * connections, queues callers for one (a bounded queue, each with a wait
 * timeout), keeps idle ones for reuse (most recently used first) under an
 * idle timeout and a maximum lifetime, checks an idle connection before it
 * is reused and every second while it waits, and opens a circuit breaker
 * after consecutive connection failures. The driver (net/pg.c, net/redis.c)
 * makes and closes connections and says when one is ready or failed; the
 * pool decides who gets which.
 *
 * Counts go to the tycho_pool_* metrics, labelled with the pool's name
 * (its URL without a password): gauges by deltas, so the pools of an old and
 * a new script generation add up in one series.
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

struct tycho_connpool_opts {
    unsigned max_conns;      /* open connections at most, busy, idle or connecting */
    unsigned max_waiting;    /* callers queued for a connection at most */
    double wait_timeout;     /* seconds a caller waits in the queue */
    double idle_timeout;     /* seconds an idle connection is kept; 0: not kept */
    double max_lifetime;     /* seconds a connection is reused for; 0: no limit */
    double connect_timeout;  /* seconds to connect, name lookup and log-in included (driver) */
    double timeout;          /* seconds a query or command may take (driver) */
    unsigned max_failures;   /* consecutive connection failures that open the breaker; 0: none */
    double cooldown;         /* seconds the breaker stays open */
};

/* One connection: the first member of the driver's own connection struct. */
struct tycho_pconn {
    struct tycho_connpool *pool;
    struct tycho_list link;   /* in the pool's idle list while idle */
    double born;              /* when it became ready (monotonic seconds) */
    double idle_since;
    unsigned long uses;       /* times it was handed to a caller */
    bool ready;               /* connected (and logged in) */
};

struct tycho_pwaiter;
/*
 * A caller's answer: c (the caller's until tycho_connpool_release) or NULL
 * with err ("pool exhausted", "circuit open", or the driver's connect error).
 * May be called from inside tycho_connpool_acquire.
 */
typedef void tycho_pwaiter_fn(struct tycho_pwaiter *w, struct tycho_pconn *c, const char *err);

/* A caller waiting for a connection: embedded in the caller's struct. */
struct tycho_pwaiter {
    struct tycho_connpool *pool;  /* set while queued */
    struct tycho_list link;
    struct event timer;
    tycho_pwaiter_fn *got;
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

void tycho_connpool_opts_default(struct tycho_connpool_opts *o);

/*
 * A pool named name (copied; its metrics label) on base, for worker's
 * metrics series; arg goes to the driver's open. NULL: out of memory.
 */
struct tycho_connpool *tycho_connpool_new(const char *name, const struct tycho_connpool_opts *o,
                                          const struct tycho_connpool_driver *d, void *arg,
                                          struct event_base *base, int worker);

/* Closes every connection and fails every queued caller ("pool closed"). NULL is a no-op. */
void tycho_connpool_free(struct tycho_connpool *p);

const struct tycho_connpool_opts *tycho_connpool_opts(const struct tycho_connpool *p);
const char *tycho_connpool_name(const struct tycho_connpool *p);

/* Gets w a connection: now (w->got inside this call) or later. */
void tycho_connpool_acquire(struct tycho_connpool *p, struct tycho_pwaiter *w,
                            tycho_pwaiter_fn *got);

/* Gives up waiting (the caller left). A no-op once w->got was called. */
void tycho_connpool_cancel(struct tycho_pwaiter *w);

/*
 * The driver: c has connected (err NULL) or failed (err: why; c is closed
 * by the pool). A failure counts toward the breaker and fails the first
 * queued caller; a success is handed to the first queued caller or idles.
 */
void tycho_connpool_opened(struct tycho_pconn *c, const char *err);

/*
 * The caller is done with c. reusable: nothing is left half-done on it (a
 * reply still owed, a transaction open), so it may serve someone else;
 * otherwise it is closed.
 */
void tycho_connpool_release(struct tycho_pconn *c, bool reusable);

/* The driver: closes a connection still connecting, without counting a failure (a teardown). */
void tycho_connpool_abort(struct tycho_pconn *c);

/* The driver: a connection-level failure (lost mid-query, timeout) counts toward the breaker. */
void tycho_connpool_failed(struct tycho_connpool *p, const char *err);

/* The driver: a query went through; the breaker closes. */
void tycho_connpool_succeeded(struct tycho_connpool *p);

#endif
