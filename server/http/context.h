/*
 * context.h: the per-worker context that connections and requests take (after
 * h2o's h2o_context_t): the event loop, the settings, the pools, the scratch
 * buffers, the counters, the cached clock and Date line, and the application
 * the connections hand their requests to. Each worker (top/worker.c) embeds
 * one and fills it, and main has one for --metrics-addr (top/scrape.c); the
 * http layer reads and updates it and knows nothing of threads, inboxes or
 * Lua. Everything here belongs to the thread that runs the context's loop.
 */
#ifndef TYCHO_CONTEXT_H
#define TYCHO_CONTEXT_H

#include <event2/event_struct.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <time.h>

#include "core/buf.h"
#include "core/list.h"
#include "core/metrics.h"
#include "core/pool.h"

struct event;
struct event_base;
struct timeval;
struct tycho_config;
struct tycho_conn;
struct tycho_ctx;
struct tycho_req;
struct tycho_gzip;
struct tycho_route_opts;
struct tycho_router;
struct tycho_static;

enum tycho_run {
    TYCHO_RUN_DONE,     /* r holds its response */
    TYCHO_RUN_PENDING   /* the handler waits; r->on_done(r) is called when it has finished */
};

/*
 * The application a connection hands its requests to: the layer above HTTP
 * (a script generation), reached only through these calls so that http/
 * never calls lua/. The owner sets it (a worker: anew on each reload).
 */
struct tycho_app {
    void *self;                            /* the application's state (a generation) */
    const struct tycho_router *router;     /* borrowed: its routes, valid while self is */
    /* The app.static mount that serves handler_id without running the app, or NULL. */
    struct tycho_static *(*static_of)(void *self, int handler_id);
    /*
     * The options of handler_id's route (borrowed, valid while self is), or
     * NULL for a route without any (or an id that is no route): then every
     * default applies. Asked at the head of a request with a body, before the
     * body is read (a stream_body route runs then), and by compression. The
     * function itself may be NULL (an application with no options).
     */
    const struct tycho_route_opts *(*route_opts)(void *self, int handler_id);
    /* Runs r's route (r->match); fills r's response now or, when PENDING, before on_done. */
    enum tycho_run (*run)(void *self, struct tycho_req *r);
    /* Abandons r's handler, which waits (its connection is closing); r->on_done is not called. */
    void (*cancel)(struct tycho_req *r);
    /*
     * The app answers 404 and 405 itself (it has middleware or a not-found
     * handler): such a request goes to run with r->match.handler_id
     * TYCHO_HANDLER_NOT_FOUND or TYCHO_HANDLER_WRONG_METHOD, its status and
     * (405) its Allow header already set.
     */
    bool misses;
};

/*
 * The context itself. Fields marked "owner" are set by whoever owns the
 * context (a worker; main for --metrics-addr) and only read by http/.
 */
struct tycho_ctx {
    int worker_id;                   /* owner: 1..N; 0 for the in-process --request worker */
    const struct tycho_config *cfg;  /* owner: borrowed, read-only */
    struct event_base *base;         /* owner: borrowed: the loop every event here is on */
    struct tycho_app app;            /* owner: where requests go */
    /*
     * owner: a connection has closed; the owner gives back what was counted:
     * the connection, and peer's per-address count (peer NULL: no address was
     * counted: a --proxy-protocol connection closed before its header named
     * its client, or refused by count_ip).
     */
    void (*conn_gone)(struct tycho_ctx *ctx, const struct sockaddr *peer);
    /*
     * owner: counts one connection more from peer against --max-conns-per-ip:
     * a --proxy-protocol connection's client, known only once its header is
     * read (accepting counted no address for it); conn_gone(peer) gives it
     * back. TYCHO_ERR when that passes the bound (nothing is counted then).
     * NULL: no per-address bound.
     */
    int (*count_ip)(struct tycho_ctx *ctx, const struct sockaddr *peer);
    struct tycho_pool conn_pool;     /* of struct tycho_conn */
    struct tycho_pool req_pool;      /* of struct tycho_req */
    char *rbuf;                      /* read scratch, TYCHO_READ_BYTES */
    struct tycho_buf out;            /* write scratch: responses of the connection being served */
    struct tycho_conn *out_owner;    /* the connection whose bytes out holds; NULL when empty */
    struct tycho_gzip *gzip;         /* owned: compressor of whole responses; NULL until used */
    struct tycho_list conns;         /* open connections */
    /*
     * conn.c's, set each time it opens a connection here: goes on with a
     * connection once the handler it waited for has been answered (writes,
     * answers the requests kept back, reads what came). exchange.c calls it
     * through this pointer: conn.c calls exchange.c, so it cannot call back
     * (server/layers: no two files depend on each other).
     */
    void (*conn_resume)(struct tycho_conn *c);
    unsigned long requests;          /* requests answered (for the stop log line) */
    unsigned long timeouts;          /* requests or writes cut off by a timeout */
    unsigned long long next_request_id; /* generated X-Request-Id: random start, then +1 */
    struct tycho_buf access_buf;     /* access log lines not yet written */
    struct event *access_ev;         /* owner: borrowed: writes access_buf out; NULL: no log */
    struct tycho_worker_stats stats; /* metrics counters (read by the scrape) */
    bool draining;                   /* stopping: no new requests, in-flight ones finish */
    bool metrics_only;               /* owner: it serves --metrics-addr: the metrics path only */
    const struct timeval *first_tv;  /* owner: common timeouts (libevent): --header-timeout, */
    const struct timeval *write_tv;  /* --write-timeout */
    /*
     * owner (conn.c): the --idle-timeout of plain keep-alive connections, one
     * timer for all of them rather than a timeout each, which libevent would
     * re-add on every request. A connection that begins to wait idle moves to
     * the back of conns, so the oldest idle one comes first; idle_check fires
     * at its deadline. idle_check is assigned on first use, and deleted by
     * tycho_conn_close_all (the base may be gone by tycho_ctx_dispose).
     */
    struct event idle_check;
    bool idle_check_assigned;
    bool idle_check_armed;
    time_t date_sec;                 /* second date_line was made for */
    char date_line[48];              /* "Date: ...\r\n" */
    time_t hsts_sec;                 /* second date_hsts was made for */
    char date_hsts[112];             /* date_line, then --hsts's header line */
};

#define TYCHO_READ_BYTES (64 * 1024)

/*
 * Sets up ctx's own parts for a loop on base: the connection and request
 * pools (max_conns objects each, a connection being conn_bytes:
 * tycho_conn_bytes()), the read buffer, the list of connections, and cfg's
 * timeouts as common timeouts of base. The owner sets the rest (app,
 * conn_gone, access_ev). TYCHO_OK, or TYCHO_ERR when out of memory (then
 * tycho_ctx_dispose still frees what was made).
 */
int tycho_ctx_init(struct tycho_ctx *ctx, const struct tycho_config *cfg, struct event_base *base,
                   int worker_id, unsigned max_conns, size_t conn_bytes);

/* Frees what tycho_ctx_init made, and the output and access-log buffers (connections closed). */
void tycho_ctx_dispose(struct tycho_ctx *ctx);

/* Milliseconds on the context's clock (the event loop's cached time). */
long tycho_ctx_now_ms(struct tycho_ctx *ctx);

/* The "Date: ...\r\n" line for now, cached per second. */
const char *tycho_ctx_date(struct tycho_ctx *ctx);

/*
 * The same, followed by "Strict-Transport-Security: max-age=N\r\n" (--hsts),
 * for the heads of responses sent over TLS.
 */
const char *tycho_ctx_date_hsts(struct tycho_ctx *ctx);

/* The monotonic clock in microseconds (request durations). Any thread. */
long long tycho_now_us(void);

#endif
