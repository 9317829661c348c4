/*
 * metrics.h: Prometheus metrics, per worker without locks, summed at scrape.
 *
 * A family (a metric name with its help, type and label names) is
 * registered once for the process, under a lock, by the server itself or by
 * a script's tycho.metrics.counter/gauge/histogram. Its series (one per set
 * of label values) are kept per worker: only that worker writes them, with
 * relaxed atomic loads and stores (plain moves on x86, no lock, no
 * read-modify-write), and the scrape, on any thread, reads them all and sums
 * them by label values. A worker's series list only grows, and a series is
 * published only once complete, so the scrape never sees a half-made one.
 *
 * The scrape renders the text exposition format 0.0.4: the families in the
 * order they were registered, the server's own first.
 */
#ifndef TYCHO_METRICS_H
#define TYCHO_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct tycho_buf;
struct tycho_shared;
struct tycho_family;

enum tycho_metric_kind { TYCHO_COUNTER, TYCHO_GAUGE, TYCHO_HISTOGRAM };

/* How a gauge's per-worker values make the exposed one. */
enum tycho_gauge_mode {
    TYCHO_GAUGE_SUM,     /* the sum over workers (inc/dec of a count) */
    TYCHO_GAUGE_MAX,     /* the largest */
    TYCHO_GAUGE_MIN,     /* the smallest */
    TYCHO_GAUGE_WORKER   /* one series per worker, with a worker="N" label */
};

#define TYCHO_METRIC_MAX_LABELS 16
#define TYCHO_METRIC_MAX_BUCKETS 64
/* The label values of one series, NUL-terminated one after the other, at most. */
#define TYCHO_METRIC_KEY_BYTES 1024

struct tycho_metric_spec {
    const char *name;
    const char *help;
    enum tycho_metric_kind kind;
    enum tycho_gauge_mode mode;          /* gauges only */
    const char *const *labels;           /* label names */
    unsigned nlabels;
    const double *buckets;               /* histograms: upper bounds, increasing (+Inf implied) */
    unsigned nbuckets;
};

/* Why the server answered a request it could not parse or take (tycho_http_rejected_total). */
enum tycho_reject {
    TYCHO_REJECT_BAD_REQUEST,      /* 400 */
    TYCHO_REJECT_TIMEOUT,          /* 408 */
    TYCHO_REJECT_BODY_TOO_LARGE,   /* 413 */
    TYCHO_REJECT_URI_TOO_LONG,     /* 414 */
    TYCHO_REJECT_EXPECTATION,      /* 417 */
    TYCHO_REJECT_HEADERS_TOO_LARGE,/* 431 */
    TYCHO_REJECT_OUT_OF_MEMORY,    /* 503 from the parser or with no request context */
    TYCHO_REJECT_BAD_VERSION,      /* 505 */
    TYCHO_REJECT_NOT_IMPLEMENTED,  /* 501: a transfer coding other than chunked */
    TYCHO_REJECT_OTHER,
    TYCHO_REJECT_COUNT
};

/* A worker's own counters and sampled gauges: written by the worker only, read by the scrape. */
struct tycho_worker_stats {
    _Atomic unsigned long bytes_in;        /* read from clients */
    _Atomic unsigned long bytes_out;       /* sent to clients */
    _Atomic unsigned long conns;           /* connections it took */
    _Atomic unsigned long websockets;      /* WebSockets it accepted */
    _Atomic unsigned long websockets_open; /* of those, open now */
    _Atomic unsigned long tls_handshakes;  /* TLS handshakes completed (--tls-port) */
    _Atomic unsigned long tls_resumed;     /* of those, sessions resumed (a ticket) */
    _Atomic unsigned long tls_failures;    /* TLS handshakes that failed (bad bytes, refused) */
    _Atomic unsigned long proxy_errors;    /* --proxy-protocol connections closed: no good header */
    _Atomic unsigned long lua_errors[2];   /* [0] in requests, [1] in timers */
    _Atomic unsigned long rejected[TYCHO_REJECT_COUNT];
    _Atomic double lua_bytes;              /* sampled each second: its Lua states' memory */
    _Atomic double timers;                 /* sampled: timers pending */
    _Atomic double generation;             /* the generation it serves */
};

/* The server's own families, registered by tycho_metrics_init. */
extern struct tycho_family *tycho_metric_requests;   /* {route, method, status}: counter */
extern struct tycho_family *tycho_metric_duration;   /* {route}: histogram, seconds */
extern struct tycho_family *tycho_metric_backend[7];  /* see enum tycho_backend_metric */
extern struct tycho_family *tycho_metric_db_queries;  /* {database, result}: counter */
extern struct tycho_family *tycho_metric_db_duration; /* {database}: histogram, seconds */
extern struct tycho_family *tycho_metric_pool[6];     /* see enum tycho_pool_metric */

/* Database and Redis pools (net/connpool.c), labelled {pool}; gauges kept by deltas. */
enum tycho_pool_metric {
    TYCHO_POOL_CONNECTS,       /* counters */
    TYCHO_POOL_ACQUIRED,
    TYCHO_POOL_ERRORS,
    TYCHO_POOL_CONNECTIONS,    /* gauge, {pool, state}: busy, idle */
    TYCHO_POOL_WAITING,        /* gauge */
    TYCHO_POOL_CIRCUIT,        /* gauge per worker: 1 while the breaker is open or half-open */
    TYCHO_POOL_METRIC_COUNT
};

enum tycho_backend_metric {
    TYCHO_BACKEND_CONNECTS,    /* counters, {backend} */
    TYCHO_BACKEND_REQUESTS,
    TYCHO_BACKEND_REUSED,
    TYCHO_BACKEND_FAILURES,
    TYCHO_BACKEND_CONNECTIONS, /* gauge, {backend, state}: busy, idle (sampled) */
    TYCHO_BACKEND_WAITING,     /* gauge, {backend} (sampled) */
    TYCHO_BACKEND_CIRCUIT      /* gauge per worker, {backend}: 1 open or half-open (sampled) */
};

/*
 * Sets up the registry for workers 1..nworkers (0 is main's scratch state
 * and --request, never exposed) with at most max_series series per family
 * on each worker. Main thread, before any worker. TYCHO_OK or TYCHO_ERR.
 */
int tycho_metrics_init(int nworkers, unsigned max_series);

/* Frees every family and series. Main thread, after the workers are joined. */
void tycho_metrics_free_all(void);

/* Makes the worker's stats visible to the scrape (NULL: no longer). Worker thread. */
void tycho_metrics_attach(int worker, struct tycho_worker_stats *stats);

/* The main thread's share: the process-wide counts the scrape reads. */
void tycho_metrics_set_shared(const struct tycho_shared *shared);

/*
 * Finds the family `name` or registers it. One already registered must have
 * the same type, label names, buckets and mode, else TYCHO_ERR with why in
 * err (TYCHO_ERR_LEN bytes); the help of the first registration is kept.
 * Names are checked too. Any thread.
 */
struct tycho_family *tycho_metric_family(const struct tycho_metric_spec *spec, char *err);

unsigned tycho_metric_label_count(const struct tycho_family *f);
const char *tycho_metric_label_name(const struct tycho_family *f, unsigned i);
enum tycho_metric_kind tycho_metric_kind_of(const struct tycho_family *f);

/*
 * The values of the series with label values key (each value followed by a
 * NUL; key_len bytes in all) on worker `worker`, made at zero if need be:
 * one double for counters and gauges; for histograms, one count per bucket
 * and +Inf, then the sum. NULL when out of memory or when the family has
 * --metrics-max-series series on this worker already (logged once per
 * family and worker). The worker's thread only.
 */
_Atomic double *tycho_metric_series(struct tycho_family *f, int worker, const char *key,
                                    size_t key_len);

/*
 * Sampled gauges: tycho_metric_sample sets the worker's series key of f to v
 * and marks it with this sampling round; tycho_metric_sweep then zeroes the
 * worker's series that this round did not set (a backend no longer used).
 * Nothing is zeroed first, so a scrape never sees a value drop to 0 midway.
 */
void tycho_metric_sample(struct tycho_family *f, int worker, const char *key, size_t len,
                         double v, unsigned round);
void tycho_metric_sweep(struct tycho_family *f, int worker, unsigned round);

/* Whether s is valid UTF-8 (the exposition is; Prometheus refuses a scrape that is not). */
bool tycho_metric_utf8_ok(const char *s, size_t len);

/* Adds n to a value (single writer: no read-modify-write). */
static inline void tycho_metric_add(_Atomic double *v, double n)
{
    atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void tycho_metric_set(_Atomic double *v, double n)
{
    atomic_store_explicit(v, n, memory_order_relaxed);
}

/* Adds one to a worker counter (single writer). */
static inline void tycho_stat_add(_Atomic unsigned long *c, unsigned long n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* Counts a Lua error on worker `worker` (its thread): in a request, or in a timer. */
void tycho_metrics_lua_error(int worker, bool in_timer);

/* Records x in the histogram series v of f. */
void tycho_metric_observe(const struct tycho_family *f, _Atomic double *v, double x);

/* The reason a server-made error status stands for. */
enum tycho_reject tycho_reject_of(int status);

/*
 * Appends the whole exposition to out. TYCHO_OK, or TYCHO_ERR when out of
 * memory. Any thread.
 */
int tycho_metrics_render(struct tycho_buf *out);

/* The Content-Type of the exposition. */
#define TYCHO_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
