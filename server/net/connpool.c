/*
 * connpool.c: see connpool.h. The pool's own bookkeeping: who waits, which
 * connection idles, when the breaker opens. It never reads or writes a
 * socket itself; the driver does.
 */
#include "net/connpool.h"
#include "net/lookup.h"

#include "core/log.h"
#include "core/metrics.h"

#include <assert.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum circuit { CIRCUIT_CLOSED, CIRCUIT_OPEN, CIRCUIT_HALF_OPEN };

struct tycho_connpool {
    char *name;
    struct tycho_connpool_opts o;
    const struct tycho_connpool_driver *d;
    void *arg;
    struct event_base *base;
    unsigned open;                 /* connections counted against max_conns */
    unsigned idle;
    unsigned connecting;
    unsigned waiting;
    struct tycho_list idle_conns;  /* of tycho_pconn: most recently used first */
    struct tycho_list waiters;     /* of tycho_pwaiter: first come first */
    struct event sweep;            /* each second while connections idle */
    struct event serve;            /* per_call: serves the queue from the loop */
    enum circuit circuit;
    unsigned fails;                /* consecutive */
    double open_until;
    bool per_call;                 /* the call is the unit (connpool.h) */
    struct tycho_pwaiter *trial;   /* per_call: the caller the half-open breaker let through */
    _Atomic double *series[TYCHO_POOL_METRIC_COUNT + 1]; /* CONNECTIONS takes two: busy, idle */
};

static double now_mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void tycho_connpool_opts_default(struct tycho_connpool_opts *o)
{
    o->max_conns = 10;
    o->max_waiting = 1024;
    o->wait_timeout = 5;
    o->idle_timeout = 60;
    o->max_lifetime = 1800;
    o->connect_timeout = 5;
    o->timeout = 30;
    o->max_failures = 5;
    o->cooldown = 10;
}

/* ---- metrics ------------------------------------------------------------------- */

/* The series of f for this pool's name (and a second label value, or NULL). */
static _Atomic double *series_of(struct tycho_connpool *p, struct tycho_family *f, int worker,
                                 const char *second)
{
    char key[TYCHO_METRIC_KEY_BYTES];
    size_t len = strlen(p->name), len2 = second ? strlen(second) + 1 : 0;

    if (!f || len + 1 + len2 > sizeof(key))
        return NULL;
    memcpy(key, p->name, len + 1);
    if (second)
        memcpy(key + len + 1, second, len2);
    return tycho_metric_series(f, worker, key, len + 1 + len2);
}

static void metrics_find(struct tycho_connpool *p, int worker)
{
    struct tycho_family **f = tycho_metric_pool;

    p->series[TYCHO_POOL_CONNECTS] = series_of(p, f[TYCHO_POOL_CONNECTS], worker, NULL);
    p->series[TYCHO_POOL_ACQUIRED] = series_of(p, f[TYCHO_POOL_ACQUIRED], worker, NULL);
    p->series[TYCHO_POOL_ERRORS] = series_of(p, f[TYCHO_POOL_ERRORS], worker, NULL);
    p->series[TYCHO_POOL_CONNECTIONS] = series_of(p, f[TYCHO_POOL_CONNECTIONS], worker, "busy");
    p->series[TYCHO_POOL_METRIC_COUNT] = series_of(p, f[TYCHO_POOL_CONNECTIONS], worker, "idle");
    p->series[TYCHO_POOL_WAITING] = series_of(p, f[TYCHO_POOL_WAITING], worker, NULL);
    p->series[TYCHO_POOL_CIRCUIT] = series_of(p, f[TYCHO_POOL_CIRCUIT], worker, NULL);
}

/* NULL series (no metrics for this pool, or the series bound was met) count nothing. */
static void add(struct tycho_connpool *p, int which, double n)
{
    if (p->series[which])
        tycho_metric_add(p->series[which], n);
}

#define IDLE_SERIES TYCHO_POOL_METRIC_COUNT

/* ---- connections ---------------------------------------------------------------- */

static void waiter_unqueue(struct tycho_pwaiter *w);
static void waiter_answer(struct tycho_pwaiter *w, struct tycho_pconn *c, const char *err);

/* Closes c (on no list), giving its place back; a caller it was being made for loses it. */
static void conn_close(struct tycho_pconn *c, bool busy)
{
    struct tycho_connpool *p = c->pool;

    if (c->owner)
        c->owner->conn = NULL;
    c->owner = NULL;
    p->open--;
    if (!c->ready)
        p->connecting--;
    else if (busy)
        add(p, TYCHO_POOL_CONNECTIONS, -1);
    p->d->close(c);
}

static void idle_remove(struct tycho_pconn *c)
{
    tycho_list_remove(&c->link);
    c->pool->idle--;
    add(c->pool, IDLE_SERIES, -1);
}

/* Whether an idle c may serve now: young enough, not idle too long, and still there. */
static bool reusable(struct tycho_connpool *p, struct tycho_pconn *c, double now)
{
    if (p->o.max_lifetime > 0 && now - c->born >= p->o.max_lifetime)
        return false;
    if (now - c->idle_since >= p->o.idle_timeout)
        return false;                 /* the sweep has not come by yet */
    return p->d->alive(c);
}

/* Starts a connection (the caller checked for room), made for owner when not NULL. */
static struct tycho_pconn *start_connect(struct tycho_connpool *p, struct tycho_pwaiter *owner)
{
    struct tycho_pconn *c;

    if (!(c = p->d->open(p, p->arg)))
        return NULL;
    c->pool = p;
    tycho_list_init(&c->link);
    c->owner = owner;
    if (owner)
        owner->conn = c;
    p->open++;
    p->connecting++;
    add(p, TYCHO_POOL_CONNECTS, 1);
    return c;
}

/* per_call: a connection made for w, which is told at once if there is no memory for one. */
static void connect_for(struct tycho_connpool *p, struct tycho_pwaiter *w)
{
    if (!start_connect(p, w))
        waiter_answer(w, NULL, "out of memory opening a connection");
}

/* Queued callers no connection is on its way to (per_call: those being made are not queued). */
static unsigned unserved(const struct tycho_connpool *p)
{
    if (p->per_call)
        return p->waiting;
    return p->waiting > p->connecting ? p->waiting - p->connecting : 0;
}

/*
 * Room was made or asked for: connections for queued callers. Pools whose
 * connections are theirs start them now (the driver reports later anyway).
 * per_call pools serve from the loop: never inside the close that made room,
 * and never during a teardown, whose cancellations free places the loop
 * will not run to fill.
 */
static void serve_waiters(struct tycho_connpool *p)
{
    if (p->per_call) {
        if (p->waiting > 0 && p->open < p->o.max_conns)
            event_active(&p->serve, EV_TIMEOUT, 1);
        return;
    }
    while (unserved(p) > 0 && p->circuit != CIRCUIT_OPEN && p->open < p->o.max_conns &&
           start_connect(p, NULL))
        ;
}

/* per_call: the first queued callers get connections of their own, while there is room. */
static void on_serve(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_connpool *p = arg;
    struct tycho_list *first;

    (void)fd;
    (void)what;
    while (p->open < p->o.max_conns && (first = tycho_list_first(&p->waiters))) {
        struct tycho_pwaiter *w = tycho_container_of(first, struct tycho_pwaiter, link);
        waiter_unqueue(w);
        connect_for(p, w);
    }
}

static void sweep_arm(struct tycho_connpool *p)
{
    struct timeval tv = {1, 0};

    if (!evtimer_pending(&p->sweep, NULL))
        evtimer_add(&p->sweep, &tv);
}

/* Each second: idle connections too old, idle too long or gone are closed. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_connpool *p = arg;
    double now = now_mono();
    struct tycho_list *it, *next;

    (void)fd;
    (void)what;
    for (it = p->idle_conns.next; it != &p->idle_conns; it = next) {
        struct tycho_pconn *c = tycho_container_of(it, struct tycho_pconn, link);
        next = it->next;
        if (!reusable(p, c, now)) {
            idle_remove(c);
            conn_close(c, false);
        }
    }
    if (p->idle > 0)
        sweep_arm(p);
}

/* Puts a ready c on the idle list, or closes it when idle ones are not kept. */
static void conn_idle(struct tycho_pconn *c)
{
    struct tycho_connpool *p = c->pool;

    if (p->o.idle_timeout <= 0) {
        conn_close(c, false);
        return;
    }
    c->idle_since = now_mono();
    tycho_list_push_front(&p->idle_conns, &c->link);
    p->idle++;
    add(p, IDLE_SERIES, 1);
    sweep_arm(p);
}

/* ---- the breaker ---------------------------------------------------------------- */

static const char *circuit_name(enum circuit c)
{
    return c == CIRCUIT_OPEN ? "open" : c == CIRCUIT_HALF_OPEN ? "half-open" : "closed";
}

static void fail_all(struct tycho_connpool *p, const char *err)
{
    struct tycho_list *first;

    while ((first = tycho_list_first(&p->waiters)))
        waiter_answer(tycho_container_of(first, struct tycho_pwaiter, link), NULL, err);
}

/* One more failure; the breaker opens after max_failures in a row, or at once when reopen. */
static void breaker_fail(struct tycho_connpool *p, const char *err, bool reopen)
{
    add(p, TYCHO_POOL_ERRORS, 1);
    p->fails++;
    if (!reopen && !(p->circuit == CIRCUIT_CLOSED && p->o.max_failures &&
                     p->fails >= p->o.max_failures))
        return;
    if (p->circuit == CIRCUIT_CLOSED)
        add(p, TYCHO_POOL_CIRCUIT, 1);
    tycho_log_warn("%s: circuit open for %g s after %u failures in a row (last: %s)", p->name,
                   p->o.cooldown, p->fails, err);
    p->circuit = CIRCUIT_OPEN;
    p->trial = NULL;
    p->open_until = now_mono() + p->o.cooldown;
    fail_all(p, "circuit open");
}

/* Something went through: the breaker closes (a trial still under way is a plain call now). */
static void breaker_close(struct tycho_connpool *p)
{
    p->fails = 0;
    p->trial = NULL;
    if (p->circuit == CIRCUIT_CLOSED)
        return;
    tycho_log_info("%s: circuit closed", p->name);
    add(p, TYCHO_POOL_CIRCUIT, -1);
    p->circuit = CIRCUIT_CLOSED;
}

/*
 * Whether the breaker lets w try. Once the cooldown is over it is half-open:
 * the next connection decides, or, per_call, w's call does, and nobody else
 * is let through until it has.
 */
static bool breaker_admits(struct tycho_connpool *p, struct tycho_pwaiter *w)
{
    if (p->circuit == CIRCUIT_CLOSED)
        return true;
    if (p->circuit == CIRCUIT_OPEN && now_mono() >= p->open_until) {
        p->circuit = CIRCUIT_HALF_OPEN;
        if (p->per_call)
            p->trial = w;
        return true;
    }
    return p->circuit == CIRCUIT_HALF_OPEN && !p->per_call;
}

void tycho_connpool_failed(struct tycho_connpool *p, const char *err)
{
    breaker_fail(p, err, p->circuit == CIRCUIT_HALF_OPEN);
}

void tycho_connpool_succeeded(struct tycho_connpool *p)
{
    breaker_close(p);
}

void tycho_connpool_ended(struct tycho_connpool *p, struct tycho_pwaiter *w, const char *err,
                          bool failure)
{
    bool trial = p->trial == w;

    if (trial)
        p->trial = NULL;
    if (failure) {
        breaker_fail(p, err, trial);
    } else if (!err) {
        breaker_close(p);
    } else if (trial) {
        p->circuit = CIRCUIT_OPEN;    /* no verdict: the next caller is the trial */
        p->open_until = now_mono();
    }
}

/* ---- waiters ---------------------------------------------------------------------- */

static void waiter_unqueue(struct tycho_pwaiter *w)
{
    struct tycho_connpool *p = w->pool;

    tycho_list_remove(&w->link);
    event_del(&w->timer);
    p->waiting--;
    add(p, TYCHO_POOL_WAITING, -1);
    w->pool = NULL;
}

/* Answers a queued w (taking it off the queue) or one never queued. */
static void waiter_answer(struct tycho_pwaiter *w, struct tycho_pconn *c, const char *err)
{
    if (w->pool)
        waiter_unqueue(w);
    if (c) {
        c->uses++;
        add(c->pool, TYCHO_POOL_ACQUIRED, 1);
        add(c->pool, TYCHO_POOL_CONNECTIONS, 1);
    }
    w->got(w, c, err);
}

static void on_wait_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    waiter_answer(arg, NULL, "pool exhausted");
}

/* Hands a ready connection to the first waiter, or idles it. */
static void conn_serve(struct tycho_pconn *c)
{
    struct tycho_list *first = tycho_list_first(&c->pool->waiters);

    if (first)
        waiter_answer(tycho_container_of(first, struct tycho_pwaiter, link), c, NULL);
    else
        conn_idle(c);
}

/* Past the breaker: an idle connection, a new one, or a place in the queue. */
static void take(struct tycho_connpool *p, struct tycho_pwaiter *w)
{
    double now = now_mono();
    struct tycho_list *first;
    struct timeval tv;

    while ((first = tycho_list_first(&p->idle_conns))) {
        struct tycho_pconn *c = tycho_container_of(first, struct tycho_pconn, link);
        idle_remove(c);
        if (reusable(p, c, now)) {
            waiter_answer(w, c, NULL);
            return;
        }
        conn_close(c, false);         /* the caller may take its place */
    }
    if (p->per_call && p->open < p->o.max_conns) {
        connect_for(p, w);
        return;
    }
    /* With room for a connection it waits for one; else for someone's, if the queue may. */
    if (p->open >= p->o.max_conns &&
        (unserved(p) >= p->o.max_waiting || p->o.wait_timeout <= 0)) {
        waiter_answer(w, NULL, "pool exhausted");
        return;
    }
    w->pool = p;
    tycho_list_push_back(&p->waiters, &w->link);
    p->waiting++;
    add(p, TYCHO_POOL_WAITING, 1);
    /* One whose connection is being made waits for the connect too. */
    tv = tycho_tv(p->o.wait_timeout + (p->open < p->o.max_conns ? p->o.connect_timeout : 0));
    evtimer_assign(&w->timer, p->base, on_wait_timeout, w);
    evtimer_add(&w->timer, &tv);
    serve_waiters(p);
}

static void waiter_init(struct tycho_pwaiter *w, tycho_pwaiter_fn *got)
{
    w->got = got;
    w->pool = NULL;
    w->conn = NULL;
    w->connect_failed = false;
}

void tycho_connpool_acquire(struct tycho_connpool *p, struct tycho_pwaiter *w,
                            tycho_pwaiter_fn *got)
{
    waiter_init(w, got);
    if (!breaker_admits(p, w)) {
        waiter_answer(w, NULL, "circuit open");
        return;
    }
    take(p, w);
}

void tycho_connpool_retry(struct tycho_connpool *p, struct tycho_pwaiter *w,
                          tycho_pwaiter_fn *got)
{
    waiter_init(w, got);
    take(p, w);
}

void tycho_connpool_cancel(struct tycho_pwaiter *w)
{
    struct tycho_connpool *p;

    if (w->pool)
        waiter_unqueue(w);
    if (w->conn) {
        p = w->conn->pool;
        conn_close(w->conn, false);   /* made for w alone */
        serve_waiters(p);
    }
}

void tycho_connpool_opened(struct tycho_pconn *c, const char *err)
{
    struct tycho_connpool *p = c->pool;
    struct tycho_pwaiter *w = c->owner;
    struct tycho_list *first;

    if (err) {
        if (!p->per_call && (first = tycho_list_first(&p->waiters)))
            w = tycho_container_of(first, struct tycho_pwaiter, link);
        conn_close(c, false);
        if (w) {
            w->connect_failed = true;
            waiter_answer(w, NULL, err);
        }
        if (!p->per_call)
            tycho_connpool_failed(p, err);    /* per_call: the caller's result counts */
        serve_waiters(p);
        return;
    }
    p->connecting--;
    c->ready = true;
    c->born = now_mono();
    if (!p->per_call)
        tycho_connpool_succeeded(p);
    if (w) {
        c->owner = NULL;
        w->conn = NULL;
        waiter_answer(w, c, NULL);
        return;
    }
    conn_serve(c);
}

void tycho_connpool_drop(struct tycho_pconn *c)
{
    assert(c->ready && tycho_list_linked(&c->link));
    idle_remove(c);
    conn_close(c, false);             /* idle: nobody waits, so no place to hand on */
}

void tycho_connpool_abort(struct tycho_pconn *c)
{
    assert(!c->ready);
    conn_close(c, false);
}

void tycho_connpool_release(struct tycho_pconn *c, bool reusable_now)
{
    struct tycho_connpool *p = c->pool;

    add(p, TYCHO_POOL_CONNECTIONS, -1);
    if (!reusable_now || (p->o.max_lifetime > 0 && now_mono() - c->born >= p->o.max_lifetime)) {
        conn_close(c, false);
        serve_waiters(p);
        return;
    }
    conn_serve(c);
}

/* ---- the pool ------------------------------------------------------------------------ */

struct tycho_connpool *tycho_connpool_new(const char *name, const struct tycho_connpool_opts *o,
                                          const struct tycho_connpool_driver *d, void *arg,
                                          struct event_base *base, int worker)
{
    struct tycho_connpool *p = calloc(1, sizeof(*p));

    if (!p || !(p->name = strdup(name))) {
        free(p);
        return NULL;
    }
    p->o = *o;
    p->d = d;
    p->arg = arg;
    p->base = base;
    tycho_list_init(&p->idle_conns);
    tycho_list_init(&p->waiters);
    evtimer_assign(&p->sweep, base, on_sweep, p);
    event_assign(&p->serve, base, -1, 0, on_serve, p);
    if (worker >= 0)
        metrics_find(p, worker);
    return p;
}

void tycho_connpool_free(struct tycho_connpool *p)
{
    struct tycho_list *first;

    if (!p)
        return;
    fail_all(p, "pool closed");
    while ((first = tycho_list_first(&p->idle_conns))) {
        struct tycho_pconn *c = tycho_container_of(first, struct tycho_pconn, link);
        idle_remove(c);
        conn_close(c, false);
    }
    /* Busy and connecting connections are the driver's to close first (tycho_pg_free). */
    assert(p->open == 0);
    if (p->circuit != CIRCUIT_CLOSED)
        add(p, TYCHO_POOL_CIRCUIT, -1);
    event_del(&p->sweep);
    event_del(&p->serve);
    free(p->name);
    free(p);
}

void tycho_connpool_set_per_call(struct tycho_connpool *p)
{
    p->per_call = true;
}

const struct tycho_connpool_opts *tycho_connpool_opts(const struct tycho_connpool *p)
{
    return &p->o;
}

const char *tycho_connpool_name(const struct tycho_connpool *p)
{
    return p->name;
}

void tycho_connpool_configure(struct tycho_connpool *p, const struct tycho_connpool_opts *o)
{
    p->o = *o;
    serve_waiters(p);
}

void tycho_connpool_inspect(const struct tycho_connpool *p, struct tycho_connpool_stats *s)
{
    s->open = p->open;
    s->idle = p->idle;
    s->waiting = p->waiting;
    s->circuit = circuit_name(p->circuit);
}
