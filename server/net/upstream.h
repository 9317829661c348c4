/*
 * upstream.h: outbound HTTP/1.1 calls through per-worker connection pools.
 *
 * A worker owns one tycho_upstreams: a pool per backend scheme, host:port
 * and, for https://, TLS setting (net/connpool.c, the pool every backend
 * kind uses; an http and an https pool to one host:port never share a
 * connection, nor do two TLS settings), each with a bound on
 * its connections, a bounded queue of callers waiting for one, keep-alive
 * reuse with idle and lifetime limits, a liveness check before a connection
 * is reused, and a circuit breaker counted per call. This module is the
 * pool's HTTP driver and the calls: libevent's bufferevents do the socket
 * work (bufferevent_openssl for https://, with net/tls_client.c's contexts,
 * cached per tycho_upstreams) and evdns the name lookups; net/wire.c reads
 * responses. It counts
 * the tycho_backend_* metrics itself (the pools count none). Everything
 * here runs on the worker thread that owns the upstreams.
 */
#ifndef TYCHO_UPSTREAM_H
#define TYCHO_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct tycho_upstreams;
struct tycho_call;
struct tycho_tls_client;
struct tycho_tls_client_opts;

/* One backend's settings (see tycho_pool_opts_default for the defaults). */
struct tycho_pool_opts {
    unsigned max_conns;      /* open connections at most, idle or busy */
    unsigned max_waiting;    /* callers queued for a connection at most */
    double wait_timeout;     /* seconds a caller waits in the queue */
    double idle_timeout;     /* seconds an idle connection is kept; 0: not kept */
    double max_lifetime;     /* seconds a connection is reused for; 0: no limit */
    double connect_timeout;  /* seconds for name lookup and connect */
    double read_timeout;     /* seconds without a byte from the backend (or sent to it) */
    unsigned max_failures;   /* consecutive failures that open the breaker; 0: no breaker */
    double cooldown;         /* seconds the breaker stays open */
    bool fail_on_5xx;        /* a 5xx response counts as a failure */
    size_t max_body;         /* response body bytes at most */
    /* https: the TLS setting (the upstreams' cache's); NULL: http, or an https backend whose
       setting is the default and not made yet */
    struct tycho_tls_client *tls;
};

struct tycho_pool_stats {
    unsigned open;           /* connections open or connecting */
    unsigned idle;           /* of which idle */
    unsigned waiting;        /* callers queued */
    unsigned long long connects;  /* connections opened, ever */
    unsigned long long requests;  /* requests sent */
    unsigned long long reused;    /* requests sent on a connection used before */
    unsigned long long failures;  /* calls that failed (breaker's sense) */
    const char *circuit;     /* "closed", "open" or "half-open" */
    unsigned long long tls_handshakes;  /* https: TLS handshakes completed */
    unsigned long long tls_resumed;     /* of which resumed a session the backend gave before */
};

/* What to send. The strings are borrowed until the call is freed. */
struct tycho_call_spec {
    bool https;              /* TLS with the setting tls (not NULL) */
    struct tycho_tls_client *tls;   /* from tycho_upstreams_tls */
    const char *host;        /* name or address, NUL-terminated, no brackets */
    unsigned port;
    const char *request;     /* the whole request: head and body */
    size_t request_len;
    double timeout;          /* seconds for the whole call, waiting included */
    bool head;               /* a HEAD request: the response has no body */
    bool idempotent;         /* may be sent again once if a reused connection was closed */
};

/* Called once when a call has finished (its result is ready). May run inside tycho_call_start. */
typedef void (*tycho_call_done_fn)(struct tycho_call *c, void *arg);

void tycho_pool_opts_default(struct tycho_pool_opts *o);

/*
 * A worker's pools, empty, counting in worker's metrics series. NULL: out of
 * memory. Any thread; used by one.
 */
struct tycho_upstreams *tycho_upstreams_new(int worker);

/*
 * Sets the worker's sampled backend gauges (connections busy and idle,
 * waiting, breaker) from the pools of these upstreams (one worker's: the
 * current generation's and the retired ones still finishing), added up per
 * backend; round numbers this sampling (see tycho_metric_sample).
 */
void tycho_upstreams_sample(struct tycho_upstreams *const *us, size_t count, unsigned round);

/* Gives the upstreams the worker's loop; calls can start from then on. */
void tycho_upstreams_attach(struct tycho_upstreams *u, struct event_base *base);

/* Closes every connection. Calls still in flight must have been freed. NULL is a no-op. */
void tycho_upstreams_free(struct tycho_upstreams *u);

/*
 * The TLS setting for o, from the upstreams' cache (its files read at its
 * first use). NULL with why in err (cap bytes): see tycho_tls_client_get.
 */
struct tycho_tls_client *tycho_upstreams_tls(struct tycho_upstreams *u,
                                             const struct tycho_tls_client_opts *o, char *err,
                                             size_t cap);

/*
 * Sets the settings of a backend (http:// or https://, host:port): every
 * pool to it takes o but for o->tls, and for https the pool with the
 * setting o->tls (not NULL) becomes the backend's own: the one a call
 * without TLS options goes to, made if need be. TYCHO_OK or TYCHO_ERR
 * (memory).
 */
int tycho_upstreams_configure(struct tycho_upstreams *u, bool https, const char *host,
                              unsigned port, const struct tycho_pool_opts *o);

/*
 * A backend's settings and counters: the pool with the TLS setting tls,
 * or with tls NULL the backend's own (defaults, o->tls NULL, and zeros for
 * one not configured or used yet).
 */
void tycho_upstreams_inspect(struct tycho_upstreams *u, bool https, const char *host,
                             unsigned port, const struct tycho_tls_client *tls,
                             struct tycho_pool_opts *o, struct tycho_pool_stats *s);

/*
 * Starts a call; done(c, arg) runs when it has finished, successfully or
 * not. NULL: out of memory (done is not called).
 */
struct tycho_call *tycho_call_start(struct tycho_upstreams *u, const struct tycho_call_spec *spec,
                                    tycho_call_done_fn done, void *arg);

/*
 * Frees a call. One still in flight stops: its connection is closed (it is
 * mid-exchange), its place in a queue is given up, done is never called.
 */
void tycho_call_free(struct tycho_call *c);

/* After done: NULL on success, else why the call failed ("pool exhausted", "circuit open", ...). */
const char *tycho_call_error(const struct tycho_call *c);

/* After a successful done: the response (header names in lower case). */
int tycho_call_status(const struct tycho_call *c);
size_t tycho_call_header_count(const struct tycho_call *c);
void tycho_call_header(const struct tycho_call *c, size_t i, const char **name, size_t *name_len,
                       const char **value, size_t *value_len);
/* The body, contiguous (NULL with *len 0 if empty or out of memory). */
const char *tycho_call_body(struct tycho_call *c, size_t *len);

#endif
