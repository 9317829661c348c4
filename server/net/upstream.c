/*
 * upstream.c: per-worker pools of backend connections and the calls that
 * use them.
 *
 * A call goes: breaker check -> a connection (an idle one that passes the
 * liveness check, a new one if the pool has room, else the wait queue) ->
 * send -> read the response with http-parser -> finish. A connection that
 * ends a clean keep-alive exchange goes back to the pool (or straight to
 * the next waiter); any other end closes it. Calls are owned by their
 * caller (tycho_call_free); the pool never frees one, so a done callback
 * that runs early (inside tycho_call_start) is safe.
 */
#include "net/upstream.h"
#include "core/tycho.h"
#include "net/wire.h"
#include "core/list.h"
#include "core/log.h"
#include "core/metrics.h"

#include <assert.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/util.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define ERR_LEN TYCHO_REPLY_ERR_LEN

enum circuit { CIRCUIT_CLOSED, CIRCUIT_OPEN, CIRCUIT_HALF_OPEN };
enum call_state { CALL_NEW, CALL_WAITING, CALL_CONNECTING, CALL_EXCHANGING, CALL_DONE };

struct tycho_pool;

/* One backend connection. While idle it sits on its pool's idle list. */
struct upconn {
    struct tycho_pool *pool;
    struct bufferevent *bev;        /* owned; closes the socket when freed */
    struct tycho_list idle_link;    /* in its pool's idle list while idle */
    struct tycho_call *call;        /* the call using it, NULL while idle */
    struct event connect_timer;     /* connect_timeout, name lookup included */
    double born;                    /* when it connected (monotonic seconds) */
    unsigned long uses;             /* requests sent on it */
    bool connected;
};

struct tycho_call {
    struct tycho_pool *pool;        /* NULL once done */
    struct tycho_call_spec spec;
    tycho_call_done_fn done;
    void *done_arg;
    enum call_state state;
    struct upconn *conn;            /* while connecting or exchanging */
    struct tycho_list wait_link;    /* in its pool's wait queue while waiting */
    struct event timer;             /* wait bound, then the whole-call deadline */
    double deadline;                /* monotonic seconds */
    bool retried;                   /* already sent again once */
    bool got_bytes;                 /* the backend answered something */
    struct tycho_reply reply;       /* the response, read (wire.c) */
    struct evbuffer *body;          /* owned: the response body (reply.body borrows it) */
    char err[ERR_LEN];              /* why it failed; "" on success */
};

struct tycho_pool {
    struct tycho_pool *next;        /* the upstreams' list */
    struct tycho_upstreams *u;
    char *host;
    unsigned port;
    struct tycho_pool_opts o;
    unsigned open, idle;
    struct tycho_list idle_conns;   /* of struct upconn: most recently used first */
    struct tycho_list waiters;      /* of struct tycho_call: first come first */
    unsigned waiting;
    enum circuit circuit;
    unsigned fails;                 /* consecutive */
    double open_until;
    struct tycho_call *trial;       /* the half-open trial in flight, or NULL */
    struct event serve;             /* serves the queue from the loop (assigned at first use) */
    bool serve_ready;
    struct tycho_pool_stats stats;
    _Atomic double *counted[4];     /* its metrics series (enum tycho_backend_metric); NULL: none */
};

struct tycho_upstreams {
    int worker;                     /* whose metrics series the pools count in */
    struct event_base *base;        /* borrowed: the worker's loop */
    struct evdns_base *dns;         /* made at the first name lookup */
    struct tycho_pool *pools;
};

static void pool_serve_waiters(struct tycho_pool *p);

static double now_mono(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct timeval to_tv(double seconds)
{
    struct timeval tv;

    if (seconds < 0)
        seconds = 0;
    else if (seconds > 0 && seconds < 0.001)
        seconds = 0.001;              /* libevent reads a zero timeval as "no timeout" */
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    return tv;
}

void tycho_pool_opts_default(struct tycho_pool_opts *o)
{
    o->max_conns = 64;
    o->max_waiting = 1024;
    o->wait_timeout = 5;
    o->idle_timeout = 60;
    o->max_lifetime = 600;
    o->connect_timeout = 3;
    o->read_timeout = 30;
    o->max_failures = 5;
    o->cooldown = 10;
    o->fail_on_5xx = false;
    o->max_body = 8 * 1024 * 1024;
}

/* ---- pools ----------------------------------------------------------------- */

struct tycho_upstreams *tycho_upstreams_new(int worker)
{
    struct tycho_upstreams *u = calloc(1, sizeof(struct tycho_upstreams));

    if (u)
        u->worker = worker;
    return u;
}

/*
 * "host:port" ("[v6]:port") and a NUL into key (TYCHO_METRIC_KEY_BYTES);
 * returns its length with the NUL.
 */
static size_t backend_label(const struct tycho_pool *p, char *key)
{
    int n = snprintf(key, TYCHO_METRIC_KEY_BYTES - 16, strchr(p->host, ':') ? "[%s]:%u" : "%s:%u",
                     p->host, p->port);

    if (n < 0)
        return 1;
    return (size_t)(n < TYCHO_METRIC_KEY_BYTES - 16 ? n : TYCHO_METRIC_KEY_BYTES - 17) + 1;
}

/* Adds one to a pool's metrics counter, and to its own count. */
static void count(struct tycho_pool *p, enum tycho_backend_metric m, unsigned long long *stat)
{
    (*stat)++;
    if (p->counted[m])
        tycho_metric_add(p->counted[m], 1);
}

/* One backend's gauges, added up over the generations' pools. */
struct backend_sum {
    const struct tycho_pool *p;       /* the first pool seen for it (its label) */
    double busy, idle, waiting, circuit;
};

/* Adds p to the sums (finding its backend's entry or appending one). */
static int sum_pool(struct backend_sum **sums, size_t *n, size_t *cap, const struct tycho_pool *p)
{
    struct backend_sum *b = NULL;

    for (size_t i = 0; i < *n && !b; i++)
        if ((*sums)[i].p->port == p->port && strcasecmp((*sums)[i].p->host, p->host) == 0)
            b = &(*sums)[i];
    if (!b) {
        if (*n == *cap) {
            size_t grown = *cap ? *cap * 2 : 8;
            struct backend_sum *more = realloc(*sums, grown * sizeof(**sums));
            if (!more)
                return TYCHO_ERR;
            *sums = more;
            *cap = grown;
        }
        b = &(*sums)[(*n)++];
        *b = (struct backend_sum){p, 0, 0, 0, 0};
    }
    b->busy += p->open - p->idle;
    b->idle += p->idle;
    b->waiting += p->waiting;
    if (p->circuit != CIRCUIT_CLOSED)
        b->circuit = 1;
    return TYCHO_OK;
}

void tycho_upstreams_sample(struct tycho_upstreams *const *us, size_t count, unsigned round)
{
    struct tycho_family *const *f = tycho_metric_backend;
    struct backend_sum *sums = NULL;
    size_t n = 0, cap = 0;
    char key[TYCHO_METRIC_KEY_BYTES];
    int worker;

    if (count == 0)
        return;
    worker = us[0]->worker;
    for (size_t i = 0; i < count; i++)
        for (const struct tycho_pool *p = us[i]->pools; p; p = p->next)
            if (sum_pool(&sums, &n, &cap, p) < 0) {
                free(sums);
                return;                   /* out of memory: the gauges keep their last values */
            }
    for (size_t i = 0; i < n; i++) {
        size_t len = backend_label(sums[i].p, key);
        tycho_metric_sample(f[TYCHO_BACKEND_WAITING], worker, key, len, sums[i].waiting, round);
        tycho_metric_sample(f[TYCHO_BACKEND_CIRCUIT], worker, key, len, sums[i].circuit, round);
        memcpy(key + len, "busy", 5);
        tycho_metric_sample(f[TYCHO_BACKEND_CONNECTIONS], worker, key, len + 5, sums[i].busy,
                            round);
        memcpy(key + len, "idle", 5);
        tycho_metric_sample(f[TYCHO_BACKEND_CONNECTIONS], worker, key, len + 5, sums[i].idle,
                            round);
    }
    for (int m = TYCHO_BACKEND_CONNECTIONS; m <= TYCHO_BACKEND_CIRCUIT; m++)
        tycho_metric_sweep(f[m], worker, round);
    free(sums);
}

void tycho_upstreams_attach(struct tycho_upstreams *u, struct event_base *base)
{
    u->base = base;
}

static struct tycho_pool *pool_find(struct tycho_upstreams *u, const char *host, unsigned port)
{
    for (struct tycho_pool *p = u->pools; p; p = p->next)
        if (p->port == port && strcasecmp(p->host, host) == 0)
            return p;
    return NULL;
}

static struct tycho_pool *pool_get(struct tycho_upstreams *u, const char *host, unsigned port)
{
    struct tycho_pool *p = pool_find(u, host, port);

    if (p)
        return p;
    if (!(p = calloc(1, sizeof(*p))) || !(p->host = strdup(host))) {
        free(p);
        return NULL;
    }
    p->u = u;
    p->port = port;
    tycho_list_init(&p->idle_conns);
    tycho_list_init(&p->waiters);
    tycho_pool_opts_default(&p->o);
    {
        char key[TYCHO_METRIC_KEY_BYTES];
        size_t len = backend_label(p, key);
        for (int m = TYCHO_BACKEND_CONNECTS; m <= TYCHO_BACKEND_FAILURES; m++)
            p->counted[m] = tycho_metric_series(tycho_metric_backend[m], u->worker, key, len);
    }
    p->next = u->pools;
    u->pools = p;
    return p;
}

int tycho_upstreams_configure(struct tycho_upstreams *u, const char *host, unsigned port,
                              const struct tycho_pool_opts *o)
{
    struct tycho_pool *p = pool_get(u, host, port);

    if (!p)
        return TYCHO_ERR;
    p->o = *o;
    if (u->base)
        pool_serve_waiters(p);        /* a larger max_conns lets waiters in */
    return TYCHO_OK;
}

static const char *circuit_name(enum circuit c)
{
    return c == CIRCUIT_OPEN ? "open" : c == CIRCUIT_HALF_OPEN ? "half-open" : "closed";
}

void tycho_upstreams_inspect(struct tycho_upstreams *u, const char *host, unsigned port,
                             struct tycho_pool_opts *o, struct tycho_pool_stats *s)
{
    struct tycho_pool *p = pool_find(u, host, port);

    memset(s, 0, sizeof(*s));
    s->circuit = "closed";
    if (!p) {
        tycho_pool_opts_default(o);
        return;
    }
    *o = p->o;
    *s = p->stats;
    s->open = p->open;
    s->idle = p->idle;
    s->waiting = p->waiting;
    s->circuit = circuit_name(p->circuit);
}

/* ---- connections ------------------------------------------------------- */

static void conn_read(struct bufferevent *bev, void *arg);
static void conn_event(struct bufferevent *bev, short what, void *arg);
static void idle_read(struct bufferevent *bev, void *arg);
static void idle_event(struct bufferevent *bev, short what, void *arg);
static struct tycho_call *pool_pop_waiter(struct tycho_pool *p);
static void call_fail(struct tycho_call *c, const char *err, bool counts);
static void call_unqueue(struct tycho_call *c);
static void call_send(struct tycho_call *c, struct upconn *conn);

static void idle_unlink(struct upconn *conn)
{
    struct tycho_pool *p = conn->pool;

    tycho_list_remove(&conn->idle_link);
    p->idle--;
}

/* Frees a connection that is on no list and counted in its pool's open. */
static void conn_free(struct upconn *conn)
{
    conn->pool->open--;
    event_del(&conn->connect_timer);
    bufferevent_free(conn->bev);
    free(conn);
}

/* Closes a connection that is not on the idle list; a waiter may get a new one. */
static void conn_close(struct upconn *conn)
{
    struct tycho_pool *p = conn->pool;

    conn_free(conn);
    pool_serve_waiters(p);
}

static void idle_close(struct upconn *conn)
{
    idle_unlink(conn);
    conn_close(conn);
}

/* The socket of an idle connection has neither data nor EOF waiting: the backend kept it. */
static bool conn_alive(struct upconn *conn)
{
    evutil_socket_t fd = bufferevent_getfd(conn->bev);
    char byte;
    ssize_t n;

    if (evbuffer_get_length(bufferevent_get_input(conn->bev)) > 0 || fd < 0)
        return false;
    n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* An idle connection that is alive and young enough, or NULL. Others met on the way are closed. */
static struct upconn *pool_take_idle(struct tycho_pool *p)
{
    double now = now_mono();

    struct tycho_list *first;

    while ((first = tycho_list_first(&p->idle_conns))) {
        struct upconn *conn = tycho_container_of(first, struct upconn, idle_link);
        bool old = p->o.max_lifetime > 0 && now - conn->born >= p->o.max_lifetime;
        if (!old && conn_alive(conn)) {
            idle_unlink(conn);
            return conn;
        }
        idle_unlink(conn);
        conn_free(conn);              /* the caller takes the freed place */
    }
    return NULL;
}

/* A connection whose exchange ended cleanly: to the next waiter, the idle list, or closed. */
static void conn_release(struct upconn *conn)
{
    struct tycho_pool *p = conn->pool;
    struct timeval idle_tv = to_tv(p->o.idle_timeout);

    conn->call = NULL;
    if (p->o.max_lifetime > 0 && now_mono() - conn->born >= p->o.max_lifetime) {
        conn_close(conn);
        return;
    }
    if (!tycho_list_empty(&p->waiters)) {
        call_send(pool_pop_waiter(p), conn);
        return;
    }
    if (p->o.idle_timeout <= 0) {
        conn_close(conn);             /* idle_timeout 0: connections are not kept */
        return;
    }
    /* Idle: any byte or EOF from the backend, or the idle time running out, closes it. */
    bufferevent_setcb(conn->bev, idle_read, NULL, idle_event, conn);
    bufferevent_set_timeouts(conn->bev, &idle_tv, NULL);
    bufferevent_enable(conn->bev, EV_READ);
    tycho_list_push_front(&p->idle_conns, &conn->idle_link);
    p->idle++;
}

static void idle_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    idle_close(arg);                  /* a backend does not speak first: unusable */
}

static void idle_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    (void)what;
    idle_close(arg);                  /* closed by the backend, or idle too long */
}

/* connect_timeout ran out before the connection was made (name lookup included). */
static void conn_on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct upconn *conn = arg;
    struct tycho_pool *p = conn->pool;
    char err[ERR_LEN];

    (void)fd;
    (void)what;
    if (!conn->call) {
        conn_close(conn);
        return;
    }
    snprintf(err, sizeof(err), "%s:%u: connect timeout", p->host, p->port);
    call_fail(conn->call, err, true);
}

/* A new connection for c; connecting finishes in conn_event. */
static void conn_open(struct tycho_pool *p, struct tycho_call *c)
{
    struct tycho_upstreams *u = p->u;
    struct upconn *conn = calloc(1, sizeof(*conn));
    struct timeval connect_tv = to_tv(p->o.connect_timeout);
    struct in6_addr addr;
    struct evdns_base *dns = NULL;

    if (!conn || !(conn->bev = bufferevent_socket_new(u->base, -1, BEV_OPT_CLOSE_ON_FREE))) {
        free(conn);
        call_fail(c, "out of memory opening a connection", false);
        return;
    }
    conn->pool = p;
    tycho_list_init(&conn->idle_link);
    p->open++;
    evtimer_assign(&conn->connect_timer, u->base, conn_on_connect_timeout, conn);
    /* Addresses need no resolver; names go through evdns, made on first use. */
    if (inet_pton(AF_INET, p->host, &addr) != 1 && inet_pton(AF_INET6, p->host, &addr) != 1) {
        if (!u->dns)
            u->dns = evdns_base_new(u->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                                 EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (!(dns = u->dns)) {
            conn_free(conn);
            call_fail(c, "cannot start the name resolver", true);
            return;
        }
    }
    conn->call = c;
    c->conn = conn;
    c->state = CALL_CONNECTING;
    count(p, TYCHO_BACKEND_CONNECTS, &p->stats.connects);
    bufferevent_setcb(conn->bev, conn_read, NULL, conn_event, conn);
    event_add(&conn->connect_timer, &connect_tv);
    /* Last: a failure may be reported (and conn freed) before this returns. */
    if (bufferevent_socket_connect_hostname(conn->bev, dns, AF_UNSPEC, p->host, (int)p->port) < 0)
        call_fail(c, "cannot start connecting", true);  /* reported nothing: conn is still here */
}

static void pool_on_serve(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_pool *p = arg;

    (void)fd;
    (void)what;
    while (!tycho_list_empty(&p->waiters) && p->open < p->o.max_conns)
        conn_open(p, pool_pop_waiter(p));
}

/*
 * Serves queued callers, from the loop: never from inside the close that
 * made room (no recursion through failing connects), and never during a
 * teardown, whose cancellations free places the loop will not run to fill.
 */
static void pool_serve_waiters(struct tycho_pool *p)
{
    if (tycho_list_empty(&p->waiters) || p->open >= p->o.max_conns)
        return;
    if (!p->serve_ready) {
        event_assign(&p->serve, p->u->base, -1, 0, pool_on_serve, p);
        p->serve_ready = true;
    }
    event_active(&p->serve, EV_TIMEOUT, 1);
}

/* ---- calls ----------------------------------------------------------------- */

static void call_timer_arm(struct tycho_call *c, double seconds)
{
    struct timeval tv = to_tv(seconds);

    event_add(&c->timer, &tv);
}

static void call_finish(struct tycho_call *c, const char *err, bool counts);

/* Opens p's breaker for a cooldown; callers queued for the backend fail at once. */
static void breaker_open(struct tycho_pool *p, const char *last_err)
{
    if (p->circuit != CIRCUIT_OPEN)
        tycho_log_warn("backend %s:%u: circuit open for %g s after %u failures in a row "
                       "(last: %s)", p->host, p->port, p->o.cooldown, p->fails, last_err);
    p->circuit = CIRCUIT_OPEN;
    p->trial = NULL;
    p->open_until = now_mono() + p->o.cooldown;
    while (!tycho_list_empty(&p->waiters)) {
        struct tycho_call *w = tycho_container_of(p->waiters.next, struct tycho_call, wait_link);
        call_unqueue(w);
        call_finish(w, "circuit open", false);
    }
}

/*
 * Records the result, settles the breaker, and tells the caller. The
 * connection is already gone. counts: a failure in the breaker's sense (a
 * 5xx response with fail_on_5xx counts without being an error).
 */
static void call_finish(struct tycho_call *c, const char *err, bool counts)
{
    struct tycho_pool *p = c->pool;
    bool trial = p->trial == c;

    event_del(&c->timer);
    c->conn = NULL;
    c->pool = NULL;
    c->state = CALL_DONE;
    if (err && err != c->err)         /* a parser callback wrote c->err itself */
        snprintf(c->err, sizeof(c->err), "%s", err);
    if (trial)
        p->trial = NULL;
    if (counts) {
        count(p, TYCHO_BACKEND_FAILURES, &p->stats.failures);
        p->fails++;
        if (trial || (p->circuit == CIRCUIT_CLOSED && p->o.max_failures &&
                      p->fails >= p->o.max_failures))
            breaker_open(p, err ? err : "a 5xx response");
    } else if (!err) {
        /* Any success closes the breaker; a trial still in flight then counts as a plain call. */
        if (p->circuit != CIRCUIT_CLOSED)
            tycho_log_info("backend %s:%u: circuit closed", p->host, p->port);
        p->circuit = CIRCUIT_CLOSED;
        p->trial = NULL;
        p->fails = 0;
    } else if (trial) {
        /* The trial did not decide (pool exhausted): the next call tries. */
        p->circuit = CIRCUIT_OPEN;
        p->open_until = now_mono();
    }
    c->done(c, c->done_arg);
}

/* Fails c: its connection (if any) is closed, being mid-exchange. */
static void call_fail(struct tycho_call *c, const char *err, bool counts)
{
    struct upconn *conn = c->conn;

    if (conn) {
        conn->call = NULL;
        c->conn = NULL;
        conn_close(conn);
    }
    call_finish(c, err, counts);
}

/* Gets c a connection: an idle one, a new one, or a place in the queue. */
static void call_acquire(struct tycho_call *c)
{
    struct tycho_pool *p = c->pool;
    struct upconn *conn = pool_take_idle(p);
    double left = c->deadline - now_mono();

    if (conn) {
        call_send(c, conn);
        return;
    }
    if (p->open < p->o.max_conns) {
        conn_open(p, c);
        return;
    }
    if (p->waiting >= p->o.max_waiting || p->o.wait_timeout <= 0) {
        call_fail(c, "pool exhausted", false);
        return;
    }
    c->state = CALL_WAITING;
    tycho_list_push_back(&p->waiters, &c->wait_link);
    p->waiting++;
    call_timer_arm(c, p->o.wait_timeout < left ? p->o.wait_timeout : left);
}

/* Takes the first queued caller; its timer goes from the queue's bound to its own deadline. */
static struct tycho_call *pool_pop_waiter(struct tycho_pool *p)
{
    struct tycho_call *c = tycho_container_of(p->waiters.next, struct tycho_call, wait_link);

    assert(!tycho_list_empty(&p->waiters));
    call_unqueue(c);
    c->state = CALL_NEW;
    call_timer_arm(c, c->deadline - now_mono());
    return c;
}

static void call_unqueue(struct tycho_call *c)
{
    struct tycho_pool *p = c->pool;

    tycho_list_remove(&c->wait_link);
    p->waiting--;
}

static void call_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_call *c = arg;

    (void)fd;
    (void)what;
    if (c->state == CALL_WAITING) {
        call_unqueue(c);
        call_fail(c, "pool exhausted", false);
        return;
    }
    call_fail(c, "timeout", true);
}

/* Sends c's request on conn (connected or not yet: the output waits for the connect). */
static void call_send(struct tycho_call *c, struct upconn *conn)
{
    struct tycho_pool *p = c->pool;
    struct timeval io_tv = to_tv(p->o.read_timeout);
    const char *req = c->spec.request;
    size_t len = c->spec.request_len;

    c->conn = conn;
    conn->call = c;
    c->state = CALL_EXCHANGING;
    count(p, TYCHO_BACKEND_REQUESTS, &p->stats.requests);
    if (conn->uses++ > 0)
        count(p, TYCHO_BACKEND_REUSED, &p->stats.reused);
    tycho_reply_start(&c->reply, p->host, p->port, c->spec.head, p->o.max_body, c->body);
    bufferevent_setcb(conn->bev, conn_read, NULL, conn_event, conn);
    if (conn->connected)
        bufferevent_set_timeouts(conn->bev, &io_tv, &io_tv);
    /*
     * On a connected socket with nothing queued the request goes out now,
     * in one send; only what the socket does not take waits for the write
     * event (an error is left for that write to report). Saves arming and
     * disarming the write event per request.
     */
    if (conn->connected && evbuffer_get_length(bufferevent_get_output(conn->bev)) == 0) {
        ssize_t n = send(bufferevent_getfd(conn->bev), req, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            req += n;
            len -= (size_t)n;
        }
    }
    if (len > 0 && bufferevent_write(conn->bev, req, len) < 0) {
        call_fail(c, "out of memory sending the request", false);
        return;
    }
    bufferevent_enable(conn->bev, EV_READ);   /* writing stays enabled, as bufferevents start */
}

/*
 * A reused connection that the backend had closed (nothing came back): an
 * idempotent request is sent once more, on another connection.
 */
static bool call_retry(struct tycho_call *c)
{
    struct upconn *conn = c->conn;

    if (c->retried || c->got_bytes || !c->spec.idempotent || !conn || conn->uses < 2)
        return false;
    c->retried = true;
    conn->call = NULL;
    c->conn = NULL;
    c->state = CALL_NEW;
    /* Free it without serving waiters: c goes first, it was already being served. */
    bufferevent_free(conn->bev);
    free(conn);
    c->pool->open--;
    call_acquire(c);
    return true;
}

static void conn_event(struct bufferevent *bev, short what, void *arg)
{
    struct upconn *conn = arg;
    struct tycho_call *c = conn->call;
    struct tycho_pool *p = conn->pool;
    char err[ERR_LEN];
    int dns_err;

    if (what & BEV_EVENT_CONNECTED) {
        struct timeval io_tv = to_tv(p->o.read_timeout);
        event_del(&conn->connect_timer);
        conn->connected = true;
        conn->born = now_mono();
        /* Requests go out in one write; do not let Nagle hold a body's tail. */
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
        bufferevent_set_timeouts(bev, &io_tv, &io_tv);
        if (c && c->state == CALL_CONNECTING)
            call_send(c, conn);
        return;
    }
    if (!c) {
        conn_close(conn);
        return;
    }
    if ((what & BEV_EVENT_EOF) && c->state == CALL_EXCHANGING) {
        /* A body that runs to EOF ends here. */
        tycho_reply_eof(&c->reply);
        if (c->reply.complete) {
            conn_read(bev, arg);
            return;
        }
    }
    if (!conn->connected && (dns_err = bufferevent_socket_get_dns_error(bev)) != 0)
        snprintf(err, sizeof(err), "%s:%u: cannot resolve: %s", p->host, p->port,
                 evutil_gai_strerror(dns_err));
    else if (what & BEV_EVENT_TIMEOUT)
        snprintf(err, sizeof(err), "%s:%u: %s timeout", p->host, p->port,
                 !conn->connected ? "connect" : (what & BEV_EVENT_READING) ? "read" : "write");
    else if (!conn->connected)
        snprintf(err, sizeof(err), "%s:%u: connect: %s", p->host, p->port,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    else if (what & BEV_EVENT_EOF) {
        if (call_retry(c))
            return;
        snprintf(err, sizeof(err), "%s:%u: the backend closed the connection%s", p->host,
                 p->port, c->got_bytes ? " mid-response" : "");
    } else {
        int e = EVUTIL_SOCKET_ERROR();
        if ((e == ECONNRESET || e == EPIPE) && call_retry(c))
            return;
        snprintf(err, sizeof(err), "%s:%u: %s", p->host, p->port,
                 evutil_socket_error_to_string(e));
    }
    call_fail(c, err, true);
}

/* Feeds the backend's bytes to the parser; a complete response finishes the call. */
static void conn_read(struct bufferevent *bev, void *arg)
{
    struct upconn *conn = arg;
    struct tycho_call *c = conn->call;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct tycho_pool *p = conn->pool;
    bool reusable;
    int status;

    while (!c->reply.complete && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        size_t n;
        evbuffer_peek(in, -1, NULL, &v, 1);
        c->got_bytes = true;
        n = tycho_reply_feed(&c->reply, v.iov_base, v.iov_len);
        if (c->reply.err[0]) {
            call_fail(c, c->reply.err, true);   /* closed, never pooled */
            return;
        }
        evbuffer_drain(in, n);
    }
    if (!c->reply.complete)
        return;
    status = tycho_reply_status(&c->reply);
    /* Extra bytes after the response, or a close asked for: not reusable. */
    reusable = evbuffer_get_length(in) == 0 && tycho_reply_keep_alive(&c->reply);
    c->conn = NULL;
    if (reusable) {
        conn_release(conn);
    } else {
        conn->call = NULL;
        conn_close(conn);
    }
    call_finish(c, NULL, status >= 500 && p->o.fail_on_5xx);
}

struct tycho_call *tycho_call_start(struct tycho_upstreams *u, const struct tycho_call_spec *spec,
                                    tycho_call_done_fn done, void *arg)
{
    struct tycho_call *c = calloc(1, sizeof(*c));
    struct tycho_pool *p;

    if (!c || !(c->body = evbuffer_new()) || !(p = pool_get(u, spec->host, spec->port))) {
        if (c)
            evbuffer_free(c->body);
        free(c);
        return NULL;
    }
    c->pool = p;
    tycho_list_init(&c->wait_link);
    c->spec = *spec;
    c->done = done;
    c->done_arg = arg;
    c->deadline = now_mono() + spec->timeout;
    evtimer_assign(&c->timer, u->base, call_on_timer, c);
    call_timer_arm(c, spec->timeout);
    if (p->circuit == CIRCUIT_OPEN && now_mono() >= p->open_until) {
        p->circuit = CIRCUIT_HALF_OPEN;
        p->trial = c;                 /* this call decides */
    } else if (p->circuit != CIRCUIT_CLOSED) {
        call_finish(c, "circuit open", false);
        return c;
    }
    call_acquire(c);
    return c;
}

void tycho_call_free(struct tycho_call *c)
{
    if (!c)
        return;
    if (c->state == CALL_WAITING)
        call_unqueue(c);
    if (c->state != CALL_DONE) {
        struct tycho_pool *p = c->pool;
        event_del(&c->timer);
        if (p->trial == c) {
            p->trial = NULL;
            p->circuit = CIRCUIT_OPEN;    /* abandoned trial: the next call tries */
            p->open_until = now_mono();
        }
        if (c->conn) {
            c->conn->call = NULL;
            conn_close(c->conn);
        }
    }
    evbuffer_free(c->body);
    tycho_reply_dispose(&c->reply);
    free(c);
}

/* ---- the response ------------------------------------------------------------ */

const char *tycho_call_error(const struct tycho_call *c)
{
    return c->err[0] ? c->err : NULL;
}

int tycho_call_status(const struct tycho_call *c)
{
    return tycho_reply_status(&c->reply);
}

size_t tycho_call_header_count(const struct tycho_call *c)
{
    return c->reply.nheaders;
}

void tycho_call_header(const struct tycho_call *c, size_t i, const char **name, size_t *name_len,
                       const char **value, size_t *value_len)
{
    const struct tycho_reply_header *h = &c->reply.headers[i];

    *name = c->reply.head + h->name_off;
    *name_len = h->name_len;
    *value = h->value_len ? c->reply.head + h->value_off : "";
    *value_len = h->value_len;
}

const char *tycho_call_body(struct tycho_call *c, size_t *len)
{
    size_t n = evbuffer_get_length(c->body);
    const char *flat = n ? (const char *)evbuffer_pullup(c->body, -1) : NULL;

    *len = flat ? n : 0;
    return flat;
}

/* ---- teardown -------------------------------------------------------------- */

void tycho_upstreams_free(struct tycho_upstreams *u)
{
    if (!u)
        return;
    while (u->pools) {
        struct tycho_pool *p = u->pools;
        u->pools = p->next;
        struct tycho_list *first;
        while ((first = tycho_list_first(&p->idle_conns))) {
            struct upconn *conn = tycho_container_of(first, struct upconn, idle_link);
            idle_unlink(conn);
            conn_free(conn);
        }
        if (p->serve_ready)
            event_del(&p->serve);
        free(p->host);
        free(p);
    }
    if (u->dns)
        evdns_base_free(u->dns, 0);
    free(u);
}
