/*
 * metrics.c: the metric registry, per-worker series and the exposition.
 *
 * Writers never lock: each worker has its own series of each family, found
 * through an index only it touches, and updates values with relaxed atomic
 * loads and stores. The registry lock is taken to register a family (script
 * load time) and, briefly, by the scrape to read where the family list ends;
 * it then walks the list without it (families are only appended, and freed
 * at exit).
 */
#include "core/metrics.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "top/worker.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

struct tycho_series {
    struct tycho_series *next;       /* the worker's list of this family, newest first */
    char *key;                       /* owned: the label values, each NUL-terminated */
    size_t key_len;
    unsigned long hash;
    unsigned mark;                   /* the last sampling round that set it (sampled gauges) */
    _Atomic double values[];         /* see tycho_metric_series */
};

/* One worker's series of a family. */
struct family_slot {
    struct tycho_series *_Atomic head; /* published list, read by the scrape */
    struct tycho_series **index;     /* owned, open addressing; the worker only */
    size_t cap, count;
    bool full_logged;                /* the series bound was logged */
};

struct tycho_family {
    struct tycho_family *next;       /* registration order */
    char *name, *help;               /* owned */
    enum tycho_metric_kind kind;
    enum tycho_gauge_mode mode;
    char **labels;                   /* owned */
    unsigned nlabels;
    double *buckets;                 /* owned */
    unsigned nbuckets;
    unsigned nvalues;                /* doubles per series */
    struct family_slot *slots;       /* owned: one per worker, 0..nworkers */
};

static struct {
    pthread_mutex_t lock;            /* families list; registration and scrape */
    struct tycho_family *families, **tail, *last; /* last: the newest family */
    int nslots;
    unsigned max_series;
    struct tycho_worker_stats *_Atomic *stats; /* per worker slot */
    const struct tycho_shared *shared;
    time_t start_time;               /* wall clock, for process_start_time_seconds */
    struct timespec start_mono;      /* for tycho_uptime_seconds */
} reg = {.lock = PTHREAD_MUTEX_INITIALIZER};

struct tycho_family *tycho_metric_requests;
struct tycho_family *tycho_metric_duration;
struct tycho_family *tycho_metric_backend[7];
struct tycho_family *tycho_metric_db_queries;
struct tycho_family *tycho_metric_db_duration;
struct tycho_family *tycho_metric_pool[6];

static const char *const reject_names[TYCHO_REJECT_COUNT] = {
    "bad_request",       "timeout",           "body_too_large",
    "uri_too_long",      "expectation_failed", "headers_too_large",
    "out_of_memory",     "version_not_supported", "not_implemented",
    "other",
};

enum tycho_reject tycho_reject_of(int status)
{
    switch (status) {
    case 400: return TYCHO_REJECT_BAD_REQUEST;
    case 408: return TYCHO_REJECT_TIMEOUT;
    case 413: return TYCHO_REJECT_BODY_TOO_LARGE;
    case 414: return TYCHO_REJECT_URI_TOO_LONG;
    case 417: return TYCHO_REJECT_EXPECTATION;
    case 431: return TYCHO_REJECT_HEADERS_TOO_LARGE;
    case 503: return TYCHO_REJECT_OUT_OF_MEMORY;
    case 505: return TYCHO_REJECT_BAD_VERSION;
    case 501: return TYCHO_REJECT_NOT_IMPLEMENTED;
    default: return TYCHO_REJECT_OTHER;
    }
}

/* ---- names and registration ---------------------------------------------- */

/* [a-zA-Z_:][a-zA-Z0-9_:]* for metric names (colon allowed), the same without ':' for labels. */
static bool valid_name(const char *s, bool colon_ok)
{
    if (!s || !*s)
        return false;
    for (size_t i = 0; s[i]; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (colon_ok && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static const char *const kind_names[] = {"counter", "gauge", "histogram"};

static void family_free(struct tycho_family *f)
{
    if (!f)
        return;
    for (int s = 0; f->slots && s < reg.nslots; s++) {
        struct tycho_series *se = atomic_load(&f->slots[s].head), *next;
        for (; se; se = next) {
            next = se->next;
            free(se->key);
            free(se);
        }
        free(f->slots[s].index);
    }
    free(f->slots);
    for (unsigned i = 0; f->labels && i < f->nlabels; i++)
        free(f->labels[i]);
    free(f->labels);
    free(f->buckets);
    free(f->name);
    free(f->help);
    free(f);
}

/* Why spec cannot be registered, or NULL. Suffixes a histogram makes must stay free too. */
static const char *spec_problem(const struct tycho_metric_spec *spec)
{
    if (!valid_name(spec->name, true))
        return "a metric name is letters, digits, _ and : and does not start with a digit";
    if (spec->help && !tycho_metric_utf8_ok(spec->help, strlen(spec->help)))
        return "the help text is not valid UTF-8";
    if (spec->nlabels > TYCHO_METRIC_MAX_LABELS)
        return "at most 16 labels";
    for (unsigned i = 0; i < spec->nlabels; i++) {
        if (!valid_name(spec->labels[i], false))
            return "a label name is letters, digits and _ and does not start with a digit";
        if (strncmp(spec->labels[i], "__", 2) == 0)
            return "label names starting with __ are reserved";
        if (spec->kind == TYCHO_HISTOGRAM && strcmp(spec->labels[i], "le") == 0)
            return "a histogram cannot have a label named le";
        if (spec->mode == TYCHO_GAUGE_WORKER && strcmp(spec->labels[i], "worker") == 0)
            return "a per-worker gauge cannot have a label named worker";
        for (unsigned j = 0; j < i; j++)
            if (strcmp(spec->labels[i], spec->labels[j]) == 0)
                return "a label name is given twice";
    }
    if (spec->kind == TYCHO_HISTOGRAM) {
        if (spec->nbuckets == 0 || spec->nbuckets > TYCHO_METRIC_MAX_BUCKETS)
            return "a histogram has 1 to 64 buckets";
        for (unsigned i = 0; i < spec->nbuckets; i++)
            if (!isfinite(spec->buckets[i]) || (i > 0 && spec->buckets[i] <= spec->buckets[i - 1]))
                return "bucket bounds must be finite and increasing";
    }
    return NULL;
}

/* Whether an existing family f is what spec asks for. */
static const char *spec_conflict(const struct tycho_family *f, const struct tycho_metric_spec *spec)
{
    if (f->kind != spec->kind)
        return "with another type";
    if (f->nlabels != spec->nlabels)
        return "with other labels";
    for (unsigned i = 0; i < f->nlabels; i++)
        if (strcmp(f->labels[i], spec->labels[i]) != 0)
            return "with other labels";
    if (f->kind == TYCHO_GAUGE && f->mode != spec->mode)
        return "with another mode";
    if (f->kind == TYCHO_HISTOGRAM &&
        (f->nbuckets != spec->nbuckets ||
         memcmp(f->buckets, spec->buckets, sizeof(double) * f->nbuckets) != 0))
        return "with other buckets";
    return NULL;
}

static struct tycho_family *family_new(const struct tycho_metric_spec *spec)
{
    struct tycho_family *f = calloc(1, sizeof(*f));

    if (!f)
        return NULL;
    f->kind = spec->kind;
    f->mode = spec->kind == TYCHO_GAUGE ? spec->mode : TYCHO_GAUGE_SUM;
    f->nlabels = spec->nlabels;
    f->nbuckets = spec->kind == TYCHO_HISTOGRAM ? spec->nbuckets : 0;
    f->nvalues = spec->kind == TYCHO_HISTOGRAM ? f->nbuckets + 2 : 1;
    if (!(f->name = strdup(spec->name)) || !(f->help = strdup(spec->help ? spec->help : "")) ||
        !(f->labels = calloc(spec->nlabels + 1, sizeof(char *))) ||
        !(f->slots = calloc((size_t)reg.nslots, sizeof(*f->slots))) ||
        (f->nbuckets && !(f->buckets = malloc(sizeof(double) * f->nbuckets))))
        goto fail;
    for (unsigned i = 0; i < f->nlabels; i++)
        if (!(f->labels[i] = strdup(spec->labels[i])))
            goto fail;
    if (f->nbuckets)
        memcpy(f->buckets, spec->buckets, sizeof(double) * f->nbuckets);
    return f;
fail:
    family_free(f);
    return NULL;
}

/*
 * A histogram "x" exposes x_bucket, x_sum and x_count: a name that clashes
 * with those (either way round) would make the whole exposition invalid.
 * Returns the clashing family or NULL. Under the registry lock.
 */
static const struct tycho_family *suffix_clash(const struct tycho_metric_spec *spec)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    size_t len = strlen(spec->name);

    for (const struct tycho_family *f = reg.families; f; f = f->next) {
        size_t flen = strlen(f->name);
        for (int i = 0; i < 3; i++) {
            size_t slen = strlen(suffixes[i]);
            if (f->kind == TYCHO_HISTOGRAM && len == flen + slen &&
                strncmp(spec->name, f->name, flen) == 0 &&
                strcmp(spec->name + flen, suffixes[i]) == 0)
                return f;
            if (spec->kind == TYCHO_HISTOGRAM && flen == len + slen &&
                strncmp(f->name, spec->name, len) == 0 && strcmp(f->name + len, suffixes[i]) == 0)
                return f;
        }
    }
    return NULL;
}

struct tycho_family *tycho_metric_family(const struct tycho_metric_spec *spec, char *err)
{
    const struct tycho_family *clash;
    const char *problem = spec_problem(spec);
    struct tycho_family *f;

    if (problem) {
        snprintf(err, TYCHO_ERR_LEN, "%s (metric \"%s\")", problem, spec->name ? spec->name : "");
        return NULL;
    }
    pthread_mutex_lock(&reg.lock);
    for (f = reg.families; f; f = f->next) {
        if (strcmp(f->name, spec->name) != 0)
            continue;
        if ((problem = spec_conflict(f, spec))) {
            snprintf(err, TYCHO_ERR_LEN, "metric \"%s\" is already registered %s (a %s with %u "
                     "labels)", spec->name, problem, kind_names[f->kind], f->nlabels);
            f = NULL;
        }
        pthread_mutex_unlock(&reg.lock);
        return f;
    }
    if ((clash = suffix_clash(spec))) {
        snprintf(err, TYCHO_ERR_LEN, "metric \"%s\" clashes with the %s \"%s\" (a histogram "
                 "also exposes NAME_bucket, NAME_sum and NAME_count)", spec->name,
                 kind_names[clash->kind], clash->name);
        pthread_mutex_unlock(&reg.lock);
        return NULL;
    }
    if (reg.nslots == 0 || !(f = family_new(spec))) {
        pthread_mutex_unlock(&reg.lock);
        snprintf(err, TYCHO_ERR_LEN, "out of memory registering metric \"%s\"", spec->name);
        return NULL;
    }
    *reg.tail = f;
    reg.tail = &f->next;
    reg.last = f;
    pthread_mutex_unlock(&reg.lock);
    return f;
}

unsigned tycho_metric_label_count(const struct tycho_family *f)
{
    return f->nlabels;
}

const char *tycho_metric_label_name(const struct tycho_family *f, unsigned i)
{
    return f->labels[i];
}

enum tycho_metric_kind tycho_metric_kind_of(const struct tycho_family *f)
{
    return f->kind;
}

/* ---- the server's own families ------------------------------------------- */

/* Request latency buckets, seconds: 0.5 ms to 10 s. */
static const double duration_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                          0.1,    0.25,  0.5,    1,     2.5,  5,    10};

static struct tycho_family *builtin(const char *name, const char *help,
                                    enum tycho_metric_kind kind, enum tycho_gauge_mode mode,
                                    const char *l1, const char *l2, const char *l3)
{
    const char *labels[3] = {l1, l2, l3};
    struct tycho_metric_spec spec = {name, help, kind, mode, labels,
                                     (unsigned)(!!l1 + !!l2 + !!l3), NULL, 0};
    char err[TYCHO_ERR_LEN];

    if (kind == TYCHO_HISTOGRAM) {
        spec.buckets = duration_buckets;
        spec.nbuckets = sizeof(duration_buckets) / sizeof(duration_buckets[0]);
    }
    return tycho_metric_family(&spec, err);
}

/* The database and Redis pools' families (net/connpool.c). */
static int pool_families(void)
{
    struct tycho_family **p = tycho_metric_pool;

    p[TYCHO_POOL_CONNECTS] = builtin("tycho_pool_connects_total",
                                     "Connections opened by a database or Redis pool.",
                                     TYCHO_COUNTER, 0, "pool", NULL, NULL);
    p[TYCHO_POOL_ACQUIRED] = builtin("tycho_pool_acquired_total",
                                     "Connections handed to a query or command by a pool.",
                                     TYCHO_COUNTER, 0, "pool", NULL, NULL);
    p[TYCHO_POOL_ERRORS] = builtin("tycho_pool_errors_total",
                                   "Connection failures of a pool: connect errors, connections "
                                   "lost mid-query, timeouts (the circuit breaker's sense).",
                                   TYCHO_COUNTER, 0, "pool", NULL, NULL);
    p[TYCHO_POOL_CONNECTIONS] = builtin("tycho_pool_connections",
                                        "Open connections of a pool, busy or idle.", TYCHO_GAUGE,
                                        TYCHO_GAUGE_SUM, "pool", "state", NULL);
    p[TYCHO_POOL_WAITING] = builtin("tycho_pool_waiting",
                                    "Queries or commands queued for a pool's connection.",
                                    TYCHO_GAUGE, TYCHO_GAUGE_SUM, "pool", NULL, NULL);
    p[TYCHO_POOL_CIRCUIT] = builtin("tycho_pool_circuit_open",
                                    "1 while a worker's circuit breaker for the pool is open or "
                                    "half-open.", TYCHO_GAUGE, TYCHO_GAUGE_WORKER, "pool", NULL,
                                    NULL);
    for (int i = 0; i < TYCHO_POOL_METRIC_COUNT; i++)
        if (!p[i])
            return TYCHO_ERR;
    return TYCHO_OK;
}

int tycho_metrics_init(int nworkers, unsigned max_series)
{
    struct tycho_family **b = tycho_metric_backend;

    reg.nslots = nworkers + 1;
    reg.max_series = max_series;
    reg.tail = &reg.families;
    reg.start_time = time(NULL);
    clock_gettime(CLOCK_MONOTONIC, &reg.start_mono);
    if (!(reg.stats = calloc((size_t)reg.nslots, sizeof(*reg.stats))))
        return TYCHO_ERR;
    tycho_metric_requests = builtin("tycho_http_requests_total",
                                    "HTTP requests answered, by route pattern, method and status "
                                    "class.", TYCHO_COUNTER, 0, "route", "method", "status");
    tycho_metric_duration = builtin("tycho_http_request_duration_seconds",
                                    "Time from a complete request to its response, by route "
                                    "pattern.", TYCHO_HISTOGRAM, 0, "route", NULL, NULL);
    b[TYCHO_BACKEND_CONNECTS] = builtin("tycho_backend_connects_total",
                                        "Connections opened to a backend.", TYCHO_COUNTER, 0,
                                        "backend", NULL, NULL);
    b[TYCHO_BACKEND_REQUESTS] = builtin("tycho_backend_requests_total",
                                        "Requests sent to a backend.", TYCHO_COUNTER, 0,
                                        "backend", NULL, NULL);
    b[TYCHO_BACKEND_REUSED] = builtin("tycho_backend_reused_total",
                                      "Requests sent on a pooled connection used before.",
                                      TYCHO_COUNTER, 0, "backend", NULL, NULL);
    b[TYCHO_BACKEND_FAILURES] = builtin("tycho_backend_failures_total",
                                        "Backend calls that failed (the circuit breaker's sense).",
                                        TYCHO_COUNTER, 0, "backend", NULL, NULL);
    b[TYCHO_BACKEND_CONNECTIONS] = builtin("tycho_backend_connections",
                                           "Open backend connections, busy or idle (sampled each "
                                           "second).", TYCHO_GAUGE, TYCHO_GAUGE_SUM, "backend",
                                           "state", NULL);
    b[TYCHO_BACKEND_WAITING] = builtin("tycho_backend_waiting",
                                       "Calls queued for a backend connection (sampled each "
                                       "second).", TYCHO_GAUGE, TYCHO_GAUGE_SUM, "backend", NULL,
                                       NULL);
    b[TYCHO_BACKEND_CIRCUIT] = builtin("tycho_backend_circuit_open",
                                       "1 while a worker's circuit breaker for the backend is "
                                       "open or half-open (sampled each second).", TYCHO_GAUGE,
                                       TYCHO_GAUGE_WORKER, "backend", NULL, NULL);
    tycho_metric_db_queries = builtin("tycho_db_queries_total",
                                      "SQL statements run (tycho.db), by database and result "
                                      "(ok or error).", TYCHO_COUNTER, 0, "database", "result",
                                      NULL);
    tycho_metric_db_duration = builtin("tycho_db_query_duration_seconds",
                                       "Time from a statement handed to a database thread to its "
                                       "result back, waiting for a thread included.",
                                       TYCHO_HISTOGRAM, 0, "database", NULL, NULL);
    for (int i = 0; i < 7; i++)
        if (!b[i])
            return TYCHO_ERR;
    if (pool_families() < 0)
        return TYCHO_ERR;
    return tycho_metric_requests && tycho_metric_duration && tycho_metric_db_queries &&
                   tycho_metric_db_duration
               ? TYCHO_OK
               : TYCHO_ERR;
}

void tycho_metrics_free_all(void)
{
    struct tycho_family *f, *next;

    for (f = reg.families; f; f = next) {
        next = f->next;
        family_free(f);
    }
    reg.families = reg.last = NULL;
    reg.tail = &reg.families;
    free((void *)reg.stats);
    reg.stats = NULL;
    reg.nslots = 0;
}

void tycho_metrics_attach(int worker, struct tycho_worker_stats *stats)
{
    if (worker >= 0 && worker < reg.nslots)
        atomic_store(&reg.stats[worker], stats);
}

void tycho_metrics_set_shared(const struct tycho_shared *shared)
{
    reg.shared = shared;
}

void tycho_metrics_lua_error(int worker, bool in_timer)
{
    struct tycho_worker_stats *st;

    if (worker >= 0 && worker < reg.nslots && (st = atomic_load_explicit(
                                                   &reg.stats[worker], memory_order_relaxed)))
        tycho_stat_add(&st->lua_errors[in_timer], 1);
}

/* ---- series ---------------------------------------------------------------- */

static unsigned long hash_key(const char *key, size_t len)
{
    unsigned long h = 1469598103934665603UL;

    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211UL;
    return h;
}

/* Puts se into the slot's index (which has room). */
static void index_put(struct family_slot *slot, struct tycho_series *se)
{
    size_t i = se->hash & (slot->cap - 1);

    while (slot->index[i])
        i = (i + 1) & (slot->cap - 1);
    slot->index[i] = se;
}

/* Doubles the index when it is half full. */
static int index_grow(struct family_slot *slot)
{
    struct tycho_series **old = slot->index;
    size_t old_cap = slot->cap, cap = old_cap ? old_cap * 2 : 16;

    if (slot->count * 2 < old_cap)
        return TYCHO_OK;
    if (!(slot->index = calloc(cap, sizeof(*slot->index)))) {
        slot->index = old;
        return TYCHO_ERR;
    }
    slot->cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i])
            index_put(slot, old[i]);
    free(old);
    return TYCHO_OK;
}

_Atomic double *tycho_metric_series(struct tycho_family *f, int worker, const char *key,
                                    size_t key_len)
{
    struct family_slot *slot;
    struct tycho_series *se;
    unsigned long h = hash_key(key, key_len);

    if (!f || worker < 0 || worker >= reg.nslots)
        return NULL;
    slot = &f->slots[worker];
    for (size_t i = slot->cap ? h & (slot->cap - 1) : 0; slot->cap && (se = slot->index[i]);
         i = (i + 1) & (slot->cap - 1))
        if (se->hash == h && se->key_len == key_len && memcmp(se->key, key, key_len) == 0)
            return se->values;
    if (slot->count >= reg.max_series) {
        if (!slot->full_logged)
            tycho_log_warn("worker %d: metric %s has %u series (--metrics-max-series): new label "
                           "values are not counted", worker, f->name, reg.max_series);
        slot->full_logged = true;
        return NULL;
    }
    if (index_grow(slot) < 0 ||
        !(se = calloc(1, sizeof(*se) + sizeof(_Atomic double) * f->nvalues)))
        return NULL;
    if (!(se->key = malloc(key_len + 1))) {
        free(se);
        return NULL;
    }
    memcpy(se->key, key, key_len);
    se->key[key_len] = '\0';
    se->key_len = key_len;
    se->hash = h;
    for (unsigned i = 0; i < f->nvalues; i++)
        atomic_init(&se->values[i], 0.0);
    index_put(slot, se);
    slot->count++;
    se->next = atomic_load_explicit(&slot->head, memory_order_relaxed);
    /* Release: a scrape that sees the new head sees the series complete. */
    atomic_store_explicit(&slot->head, se, memory_order_release);
    return se->values;
}

void tycho_metric_sample(struct tycho_family *f, int worker, const char *key, size_t len,
                         double v, unsigned round)
{
    _Atomic double *values = tycho_metric_series(f, worker, key, len);

    if (!values)
        return;
    tycho_metric_set(values, v);
    /* values is the series' flexible array member: step back to its series. */
    ((struct tycho_series *)(void *)((char *)values - offsetof(struct tycho_series, values)))
        ->mark = round;
}

void tycho_metric_sweep(struct tycho_family *f, int worker, unsigned round)
{
    if (!f || worker < 0 || worker >= reg.nslots)
        return;
    for (struct tycho_series *se = atomic_load_explicit(&f->slots[worker].head,
                                                        memory_order_relaxed);
         se; se = se->next)
        if (se->mark != round)
            for (unsigned i = 0; i < f->nvalues; i++)
                tycho_metric_set(&se->values[i], 0);
}

bool tycho_metric_utf8_ok(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + len;

    while (p < end) {
        unsigned c = *p, n = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2
                                        : (c & 0xf8) == 0xf0 ? 3 : 9;
        unsigned cp;
        if (n == 9 || (size_t)(end - p) <= n)
            return false;
        cp = n == 0 ? c : c & (0x3f >> n);
        for (unsigned i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        /* No overlong forms, no surrogates, nothing past U+10FFFF. */
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
            return false;
        p += n + 1;
    }
    return true;
}

void tycho_metric_observe(const struct tycho_family *f, _Atomic double *v, double x)
{
    unsigned i = 0;

    while (i < f->nbuckets && x > f->buckets[i])
        i++;
    tycho_metric_add(&v[i], 1);
    tycho_metric_add(&v[f->nbuckets + 1], x);
}

/* ---- exposition ------------------------------------------------------------ */

struct out {
    struct tycho_buf *buf;
    bool failed;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (!o->failed && tycho_buf_append(o->buf, s, n) < 0)
        o->failed = true;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void putf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void putf(struct out *o, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n > 0)
        put(o, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* A sample value: integers without a fraction, others in the shortest form that reads back. */
static void put_number(struct out *o, double v)
{
    char s[40];

    if (isnan(v))
        snprintf(s, sizeof(s), "NaN");
    else if (isinf(v))
        snprintf(s, sizeof(s), v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(s, sizeof(s), "%.0f", v);
    else {
        snprintf(s, sizeof(s), "%.15g", v);
        if (strtod(s, NULL) != v)
            snprintf(s, sizeof(s), "%.17g", v);
    }
    puts_(o, s);
}

/* A label value or help text with \, newline (and " in label values) escaped. */
static void put_escaped(struct out *o, const char *s, size_t n, bool quote)
{
    size_t start = 0;

    for (size_t i = 0; i < n; i++) {
        const char *esc = s[i] == '\\' ? "\\\\" : s[i] == '\n' ? "\\n"
                          : quote && s[i] == '"' ? "\\\"" : NULL;
        if (!esc)
            continue;
        put(o, s + start, i - start);
        puts_(o, esc);
        start = i + 1;
    }
    put(o, s + start, n - start);
}

/*
 * name{labels...} value: the label values come from key; extra is one more
 * label (le="..." or worker="N") already formatted, or NULL.
 */
static void put_sample(struct out *o, const struct tycho_family *f, const char *suffix,
                       const char *key, const char *extra, double v)
{
    const char *value = key;
    bool any = false;

    puts_(o, f->name);
    puts_(o, suffix);
    for (unsigned i = 0; i < f->nlabels; i++) {
        size_t len = strlen(value);
        puts_(o, any ? ",": "{");
        puts_(o, f->labels[i]);
        puts_(o, "=\"");
        put_escaped(o, value, len, true);
        puts_(o, "\"");
        value += len + 1;
        any = true;
    }
    if (extra) {
        puts_(o, any ? "," : "{");
        puts_(o, extra);
        any = true;
    }
    puts_(o, any ? "} " : " ");
    put_number(o, v);
    puts_(o, "\n");
}

static void put_header(struct out *o, const char *name, const char *help, const char *type)
{
    puts_(o, "# HELP ");
    puts_(o, name);
    puts_(o, " ");
    put_escaped(o, help, strlen(help), false);
    puts_(o, "\n# TYPE ");
    puts_(o, name);
    puts_(o, " ");
    puts_(o, type);
    puts_(o, "\n");
}

/* The series of one key, over workers, with where it came from. */
struct found {
    const struct tycho_series *se;
    int worker;
};

/* Orders label-value keys (which hold NULs) byte by byte, a prefix first. */
static int key_cmp(const struct tycho_series *x, const struct tycho_series *y)
{
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);

    return c ? c : (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

static int by_key(const void *a, const void *b)
{
    const struct found *x = a, *y = b;
    int c = key_cmp(x->se, y->se);

    return c ? c : x->worker - y->worker;
}

/* Collects the series of f on workers 1..N (0 is never exposed). *n: how many. */
static struct found *collect(const struct tycho_family *f, size_t *n)
{
    const struct tycho_series *heads[reg.nslots];
    size_t count = 0, i = 0;
    struct found *all;

    /*
     * Lists only grow at their head: walking from the heads read now gives
     * exactly these series, whatever a worker adds meanwhile.
     */
    for (int w = 1; w < reg.nslots; w++) {
        heads[w] = atomic_load_explicit(&f->slots[w].head, memory_order_acquire);
        for (const struct tycho_series *se = heads[w]; se; se = se->next)
            count++;
    }
    *n = 0;
    if (!(all = malloc(sizeof(*all) * (count ? count : 1))))
        return NULL;
    for (int w = 1; w < reg.nslots; w++)
        for (const struct tycho_series *se = heads[w]; se; se = se->next)
            all[i++] = (struct found){se, w};
    qsort(all, i, sizeof(*all), by_key);
    *n = i;
    return all;
}

static double value_at(const struct tycho_series *se, unsigned i)
{
    return atomic_load_explicit(&se->values[i], memory_order_relaxed);
}

/* Renders one histogram from the summed values (per bucket, then the sum). */
static void put_histogram(struct out *o, const struct tycho_family *f, const char *key,
                          const double *sum)
{
    double cumulative = 0;
    char le[64];

    for (unsigned b = 0; b <= f->nbuckets; b++) {
        cumulative += sum[b];
        if (b < f->nbuckets) {
            char bound[40];
            snprintf(bound, sizeof(bound), "%.15g", f->buckets[b]);
            if (strtod(bound, NULL) != f->buckets[b])
                snprintf(bound, sizeof(bound), "%.17g", f->buckets[b]);
            snprintf(le, sizeof(le), "le=\"%s\"", bound);
        } else {
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        }
        put_sample(o, f, "_bucket", key, le, cumulative);
    }
    put_sample(o, f, "_sum", key, NULL, sum[f->nbuckets + 1]);
    put_sample(o, f, "_count", key, NULL, cumulative);
}

/* Combines the values of the group [from, to) into sum (nvalues doubles). */
static void combine(const struct tycho_family *f, const struct found *from, const struct found *to,
                    double *sum)
{
    for (unsigned v = 0; v < f->nvalues; v++)
        sum[v] = value_at(from->se, v);
    for (const struct found *x = from + 1; x < to; x++)
        for (unsigned v = 0; v < f->nvalues; v++) {
            double y = value_at(x->se, v);
            if (f->mode == TYCHO_GAUGE_MAX)
                sum[v] = y > sum[v] ? y : sum[v];
            else if (f->mode == TYCHO_GAUGE_MIN)
                sum[v] = y < sum[v] ? y : sum[v];
            else
                sum[v] += y;
        }
}

static void put_family(struct out *o, const struct tycho_family *f)
{
    double sum[TYCHO_METRIC_MAX_BUCKETS + 2] = {0};
    size_t n, i = 0;
    struct found *all = collect(f, &n);

    if (!all) {
        o->failed = true;
        return;
    }
    put_header(o, f->name, f->help, kind_names[f->kind]);
    /* A metric without labels is shown at zero before anything counts it. */
    if (n == 0 && f->nlabels == 0 && f->mode != TYCHO_GAUGE_WORKER) {
        if (f->kind == TYCHO_HISTOGRAM)
            put_histogram(o, f, "", sum);
        else
            put_sample(o, f, "", "", NULL, 0);
    }
    while (i < n) {
        size_t j = i + 1;
        if (f->mode == TYCHO_GAUGE_WORKER) {
            char worker[32];
            snprintf(worker, sizeof(worker), "worker=\"%d\"", all[i].worker);
            put_sample(o, f, "", all[i].se->key, worker, value_at(all[i].se, 0));
            i = j;
            continue;
        }
        while (j < n && key_cmp(all[j].se, all[i].se) == 0)
            j++;
        combine(f, &all[i], &all[j], sum);
        if (f->kind == TYCHO_HISTOGRAM)
            put_histogram(o, f, all[i].se->key, sum);
        else
            put_sample(o, f, "", all[i].se->key, NULL, sum[0]);
        i = j;
    }
    free(all);
}

static struct tycho_worker_stats *stats_of(int worker)
{
    return atomic_load_explicit(&reg.stats[worker], memory_order_acquire);
}

static unsigned long stat_value(const _Atomic unsigned long *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* The sum of one worker counter over the workers; offset into struct tycho_worker_stats. */
static double sum_stat(size_t offset)
{
    double total = 0;

    for (int w = 1; w < reg.nslots; w++) {
        struct tycho_worker_stats *st = stats_of(w);
        if (st)
            total += (double)stat_value((const _Atomic unsigned long *)(const void *)(
                (const char *)st + offset));
    }
    return total;
}

static void put_simple(struct out *o, const char *name, const char *help, const char *type,
                       double v)
{
    put_header(o, name, help, type);
    puts_(o, name);
    puts_(o, " ");
    put_number(o, v);
    puts_(o, "\n");
}

/* The per-worker sampled gauges: name{worker="N"} value. */
static void put_per_worker(struct out *o, const char *name, const char *help, size_t offset)
{
    put_header(o, name, help, "gauge");
    for (int w = 1; w < reg.nslots; w++) {
        struct tycho_worker_stats *st = stats_of(w);
        if (!st)
            continue;
        putf(o, "%s{worker=\"%d\"} ", name, w);
        put_number(o, atomic_load_explicit((const _Atomic double *)(const void *)(
                                               (const char *)st + offset),
                                           memory_order_relaxed));
        puts_(o, "\n");
    }
}

/* The resident set size, from /proc/self/statm (pages). */
static double rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "re");
    unsigned long size = 0, resident = 0;

    if (!f)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return (double)resident * (double)sysconf(_SC_PAGESIZE);
}

static void put_process(struct out *o)
{
    struct rusage ru;
    struct timespec now;
    double cpu = 0;

    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
              (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    clock_gettime(CLOCK_MONOTONIC, &now);
    put_simple(o, "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge",
               rss_bytes());
    put_simple(o, "process_cpu_seconds_total", "User and system CPU time spent in seconds.",
               "counter", cpu);
    put_simple(o, "process_start_time_seconds", "Start time of the process since the Unix "
               "epoch in seconds.", "gauge", (double)reg.start_time);
    put_simple(o, "tycho_uptime_seconds", "Seconds since the server started.", "gauge",
               (double)(now.tv_sec - reg.start_mono.tv_sec) +
                   (double)(now.tv_nsec - reg.start_mono.tv_nsec) / 1e9);
    put_header(o, "tycho_build_info", "The version of the server, as a label.", "gauge");
    puts_(o, "tycho_build_info{version=\"" TYCHO_VERSION "\"} 1\n");
    put_simple(o, "tycho_workers", "Worker threads.", "gauge", reg.nslots - 1);
}

/* Connections, reloads and the worker counters that are not families. */
static void put_server(struct out *o)
{
    const struct tycho_shared *sh = reg.shared;

    if (sh) {
        put_simple(o, "tycho_connections_open", "Client connections open now.", "gauge",
                   atomic_load(&sh->open_conns));
        put_header(o, "tycho_connections_refused_total",
                   "Connections refused with 503, by the limit that refused them.", "counter");
        putf(o, "tycho_connections_refused_total{limit=\"max_conns\"} %lu\n",
             atomic_load(&sh->refused));
        putf(o, "tycho_connections_refused_total{limit=\"max_conns_per_ip\"} %lu\n",
             atomic_load(&sh->refused_ip));
        put_simple(o, "tycho_reloads_total", "Script reloads that succeeded.", "counter",
                   (double)atomic_load(&sh->reloads));
        put_simple(o, "tycho_reload_failures_total",
                   "Script reloads that failed (the old generation kept serving).", "counter",
                   (double)atomic_load(&sh->reload_failures));
        put_simple(o, "tycho_generation", "The script generation being served (1 at start).",
                   "gauge", (double)atomic_load(&sh->generation));
    }
    put_simple(o, "tycho_connections_accepted_total", "Client connections taken by the workers.",
               "counter", sum_stat(offsetof(struct tycho_worker_stats, conns)));
    put_simple(o, "tycho_websockets_total", "WebSocket connections accepted.", "counter",
               sum_stat(offsetof(struct tycho_worker_stats, websockets)));
    put_simple(o, "tycho_websockets_open", "WebSocket connections open now.", "gauge",
               sum_stat(offsetof(struct tycho_worker_stats, websockets_open)));
    put_simple(o, "tycho_tls_handshakes_total", "TLS handshakes completed on --tls-port.",
               "counter", sum_stat(offsetof(struct tycho_worker_stats, tls_handshakes)));
    put_simple(o, "tycho_tls_resumed_total", "TLS handshakes that resumed a session (a ticket).",
               "counter", sum_stat(offsetof(struct tycho_worker_stats, tls_resumed)));
    put_simple(o, "tycho_tls_handshake_failures_total",
               "TLS handshakes that failed (a protocol or cipher refused, bytes that are not TLS).",
               "counter", sum_stat(offsetof(struct tycho_worker_stats, tls_failures)));
    put_simple(o, "tycho_proxy_protocol_errors_total",
               "Connections on a --proxy-protocol listener closed without a good PROXY header "
               "(missing, malformed, too large, late, or from a peer not trusted).",
               "counter", sum_stat(offsetof(struct tycho_worker_stats, proxy_errors)));
    put_simple(o, "tycho_http_received_bytes_total", "Bytes read from clients.", "counter",
               sum_stat(offsetof(struct tycho_worker_stats, bytes_in)));
    put_simple(o, "tycho_http_sent_bytes_total", "Bytes sent to clients.", "counter",
               sum_stat(offsetof(struct tycho_worker_stats, bytes_out)));
    put_header(o, "tycho_http_rejected_total",
               "Requests the server answered itself because they could not be taken, by reason.",
               "counter");
    for (int r = 0; r < TYCHO_REJECT_COUNT; r++) {
        putf(o, "tycho_http_rejected_total{reason=\"%s\"} ", reject_names[r]);
        put_number(o, sum_stat(offsetof(struct tycho_worker_stats, rejected) +
                               sizeof(_Atomic unsigned long) * (size_t)r));
        puts_(o, "\n");
    }
    put_header(o, "tycho_lua_errors_total", "Lua errors raised by handlers and timers.",
               "counter");
    for (int k = 0; k < 2; k++) {
        putf(o, "tycho_lua_errors_total{in=\"%s\"} ", k ? "timer" : "request");
        put_number(o, sum_stat(offsetof(struct tycho_worker_stats, lua_errors) +
                               sizeof(_Atomic unsigned long) * (size_t)k));
        puts_(o, "\n");
    }
    put_per_worker(o, "tycho_lua_memory_bytes", "Memory of a worker's Lua states (sampled each "
                   "second).", offsetof(struct tycho_worker_stats, lua_bytes));
    put_per_worker(o, "tycho_worker_generation", "The script generation a worker serves (it "
                   "may lag tycho_generation for a moment, or stay behind if its rebuild failed).",
                   offsetof(struct tycho_worker_stats, generation));
    put_per_worker(o, "tycho_timers_pending", "Timers a worker's scripts have pending (sampled "
                   "each second).", offsetof(struct tycho_worker_stats, timers));
}

int tycho_metrics_render(struct tycho_buf *buf)
{
    struct out o = {buf, false};

    const struct tycho_family *last;

    put_process(&o);
    put_server(&o);
    /*
     * Families are only ever appended, and freed only at exit: the list up to
     * the last one seen under the lock can be walked without it, so a big
     * scrape does not hold up a script registering a metric.
     */
    pthread_mutex_lock(&reg.lock);
    last = reg.last;
    pthread_mutex_unlock(&reg.lock);
    for (const struct tycho_family *f = last ? reg.families : NULL; f && !o.failed; f = f->next) {
        put_family(&o, f);
        if (f == last)
            break;
    }
    return o.failed ? TYCHO_ERR : TYCHO_OK;
}
