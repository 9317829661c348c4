/*
 * upstream.c: outbound HTTP/1.1 calls, over a connection pool (net/connpool.c)
 * per backend (scheme, host:port and TLS setting) and worker.
 *
 * The pool keeps the accounting: the bound, the wait queue, idle connections
 * and their checks, lifetimes, the breaker. This file is its HTTP driver
 * (a connection is a bufferevent, connected here, with evdns for names) and
 * the calls: a connection from the pool (one made for the call if need be)
 * -> send -> read the response (net/wire.c) -> finish, under the call's own
 * deadline. A connection that ends a clean keep-alive exchange goes back to
 * the pool; any other end closes it. An idempotent request that meets a
 * close on a reused connection before any byte of its response is sent once
 * more. Calls are owned by their caller (tycho_call_free); nothing here
 * frees one, so a done callback that runs early (inside tycho_call_start) is
 * safe.
 *
 * https:// connections are bufferevent_openssl's over the same socket
 * connect: the connect event comes once the handshake is done, so
 * connect_timeout covers name lookup, TCP and TLS. Everything else is the
 * same for both kinds, but that a request is never sent past the
 * bufferevent (call_send) and that a TLS error is told in TLS's words. A
 * pool keeps the last session its backend gave (tls_client.c) and offers it
 * on its next connect.
 */
#include "net/upstream.h"
#include "core/tycho.h"
#include "net/connpool.h"
#include "net/lookup.h"
#include "net/tls_client.h"
#include "net/wire.h"
#include "core/log.h"
#include "core/metrics.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/util.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define ERR_LEN TYCHO_REPLY_ERR_LEN

/* A call is the pool's (waiting, or its connection being made), then on a connection, then done. */
enum call_state { CALL_POOL, CALL_EXCHANGING, CALL_DONE };

struct tycho_pool;

/* One backend connection: the pool's part first. */
struct upconn {
    struct tycho_pconn pc;
    struct tycho_pool *pool;
    struct bufferevent *bev;        /* owned; closes the socket when freed */
    struct tycho_call *call;        /* the call exchanging on it, or NULL */
    struct event connect_timer;     /* starts the connect from the loop, then connect_timeout */
    SSL *ssl;                       /* https: the bufferevent's (freed with it); else NULL */
    bool started;
    bool connected;                 /* connected, and for https the handshake done */
};

struct tycho_call {
    struct tycho_pwaiter w;         /* its handle in the pool */
    struct tycho_pool *pool;
    struct tycho_call_spec spec;
    tycho_call_done_fn done;
    void *done_arg;
    enum call_state state;
    struct upconn *conn;            /* while exchanging */
    struct event timer;             /* the whole-call deadline */
    bool retried;                   /* already sent again once */
    bool got_bytes;                 /* the backend answered something */
    struct tycho_reply reply;       /* the response, read (wire.c) */
    struct evbuffer *body;          /* owned: the response body (reply.body borrows it) */
    char err[ERR_LEN];              /* why it failed; "" on success */
};

/* A backend: its settings and HTTP counts here, its connections in cp. */
struct tycho_pool {
    struct tycho_pool *next;        /* the upstreams' list */
    struct tycho_upstreams *u;
    bool https;
    bool own;                       /* https: the backend's own pool (tycho_upstreams_configure) */
    char *host;
    unsigned port;
    struct tycho_pool_opts o;       /* o.tls: https's setting (part of the pool's identity) */
    struct tycho_tls_client_session session;   /* https: the last session the backend gave */
    struct tycho_connpool *cp;      /* made at the first call, once the loop is known */
    struct tycho_pool_stats stats;  /* connects, requests, reused, failures (the rest: cp's) */
    _Atomic double *counted[4];     /* its metrics series (enum tycho_backend_metric); NULL: none */
};

struct tycho_upstreams {
    int worker;                     /* whose metrics series the pools count in */
    struct event_base *base;        /* borrowed: the worker's loop */
    struct evdns_base *dns;         /* made at the first name lookup */
    struct tycho_pool *pools;
    struct tycho_tls_client_cache *tls;    /* https's contexts, one per setting */
    struct tycho_tls_client *default_tls;  /* the cache's for no option given, once made */
};

static struct tycho_pconn *conn_open(struct tycho_connpool *cp, void *arg);
static void conn_close(struct tycho_pconn *pc);
static bool conn_alive(struct tycho_pconn *pc);

static const struct tycho_connpool_driver http_driver = {conn_open, conn_close, conn_alive};

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
    o->tls = NULL;
}

/* The pool's share of a backend's settings. */
static void pool_opts(const struct tycho_pool_opts *o, struct tycho_connpool_opts *co)
{
    co->max_conns = o->max_conns;
    co->max_waiting = o->max_waiting;
    co->wait_timeout = o->wait_timeout;
    co->idle_timeout = o->idle_timeout;
    co->max_lifetime = o->max_lifetime;
    co->connect_timeout = o->connect_timeout;
    co->timeout = o->read_timeout;    /* the pool does not read it; this file does */
    co->max_failures = o->max_failures;
    co->cooldown = o->cooldown;
}

/* ---- backends ---------------------------------------------------------------- */

struct tycho_upstreams *tycho_upstreams_new(int worker)
{
    struct tycho_upstreams *u = calloc(1, sizeof(struct tycho_upstreams));

    if (u && !(u->tls = tycho_tls_client_cache_new())) {
        free(u);
        return NULL;
    }
    if (u)
        u->worker = worker;
    return u;
}

struct tycho_tls_client *tycho_upstreams_tls(struct tycho_upstreams *u,
                                             const struct tycho_tls_client_opts *o, char *err,
                                             size_t cap)
{
    struct tycho_tls_client *t = tycho_tls_client_get(u->tls, o, err, cap);

    if (t && !o->ca_file && !o->client_cert && !o->client_key && !o->insecure_skip_verify)
        u->default_tls = t;
    return t;
}

/*
 * "host:port" ("[v6]:port"; "https://host:port" for https) and a NUL into
 * key (TYCHO_METRIC_KEY_BYTES); returns its length with the NUL.
 */
static size_t backend_label(const struct tycho_pool *p, char *key)
{
    int n = snprintf(key, TYCHO_METRIC_KEY_BYTES - 16,
                     strchr(p->host, ':') ? "%s[%s]:%u" : "%s%s:%u", p->https ? "https://" : "",
                     p->host, p->port);

    if (n < 0)
        return 1;
    return (size_t)(n < TYCHO_METRIC_KEY_BYTES - 16 ? n : TYCHO_METRIC_KEY_BYTES - 17) + 1;
}

/* Adds one to a backend's metrics counter, and to its own count. */
static void count(struct tycho_pool *p, enum tycho_backend_metric m, unsigned long long *stat)
{
    (*stat)++;
    if (p->counted[m])
        tycho_metric_add(p->counted[m], 1);
}

/* What p's connection pool holds: zeros for a backend no call has used yet. */
static void pool_inspect(const struct tycho_pool *p, struct tycho_connpool_stats *s)
{
    if (p->cp) {
        tycho_connpool_inspect(p->cp, s);
        return;
    }
    memset(s, 0, sizeof(*s));
    s->circuit = "closed";
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
    struct tycho_connpool_stats s;

    for (size_t i = 0; i < *n && !b; i++)
        if ((*sums)[i].p->port == p->port && (*sums)[i].p->https == p->https &&
            strcasecmp((*sums)[i].p->host, p->host) == 0)
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
    pool_inspect(p, &s);
    b->busy += s.open - s.idle;
    b->idle += s.idle;
    b->waiting += s.waiting;
    if (strcmp(s.circuit, "closed") != 0)
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

static bool same_backend(const struct tycho_pool *p, bool https, const char *host, unsigned port)
{
    return p->port == port && p->https == https && strcasecmp(p->host, host) == 0;
}

/* The pool to a backend with a TLS setting (ignored for http). */
static struct tycho_pool *pool_find(struct tycho_upstreams *u, bool https, const char *host,
                                    unsigned port, const struct tycho_tls_client *tls)
{
    for (struct tycho_pool *p = u->pools; p; p = p->next)
        if (same_backend(p, https, host, port) && (!https || p->o.tls == tls))
            return p;
    return NULL;
}

/* The backend's own pool: configured, or else (https) the one with the default setting. */
static struct tycho_pool *pool_own(struct tycho_upstreams *u, bool https, const char *host,
                                   unsigned port)
{
    struct tycho_pool *found = NULL;

    if (!https)
        return pool_find(u, false, host, port, NULL);
    for (struct tycho_pool *p = u->pools; p; p = p->next)
        if (same_backend(p, true, host, port)) {
            if (p->own)
                return p;
            if (p->o.tls == u->default_tls)
                found = p;
        }
    return found;
}

/*
 * The pool to a backend with a TLS setting, made if need be: a new https
 * pool takes the settings of the backend's own pool (its TLS setting apart).
 */
static struct tycho_pool *pool_get(struct tycho_upstreams *u, bool https, const char *host,
                                   unsigned port, struct tycho_tls_client *tls)
{
    struct tycho_pool *p = pool_find(u, https, host, port, tls), *own;
    char key[TYCHO_METRIC_KEY_BYTES];
    struct tycho_tls_client_opts to;
    size_t len;

    if (p)
        return p;
    if (!(p = calloc(1, sizeof(*p))) || !(p->host = strdup(host))) {
        free(p);
        return NULL;
    }
    p->u = u;
    p->https = https;
    p->port = port;
    if (https && (own = pool_own(u, true, host, port)))
        p->o = own->o;
    else
        tycho_pool_opts_default(&p->o);
    p->o.tls = https ? tls : NULL;
    len = backend_label(p, key);
    for (int m = TYCHO_BACKEND_CONNECTS; m <= TYCHO_BACKEND_FAILURES; m++)
        p->counted[m] = tycho_metric_series(tycho_metric_backend[m], u->worker, key, len);
    p->next = u->pools;
    u->pools = p;
    if (https && tls) {
        tycho_tls_client_opts_of(tls, &to);
        if (to.insecure_skip_verify)
            tycho_log_warn("backend %s: insecure_skip_verify: its certificate and name are not "
                           "checked", key);
    }
    return p;
}

/*
 * p's connection pool, made at its first call (settings come earlier, while
 * the scripts load, before the worker's loop is known). It counts no
 * metrics: tycho_backend_* are this file's. TYCHO_ERR: out of memory.
 */
static int pool_start(struct tycho_pool *p)
{
    struct tycho_connpool_opts co;
    char name[TYCHO_METRIC_KEY_BYTES + 16], key[TYCHO_METRIC_KEY_BYTES];

    if (p->cp)
        return TYCHO_OK;
    backend_label(p, key);
    pool_opts(&p->o, &co);
    snprintf(name, sizeof(name), "backend %s", key);    /* its log lines */
    if (!(p->cp = tycho_connpool_new(name, &co, &http_driver, p, p->u->base, -1)))
        return TYCHO_ERR;
    tycho_connpool_set_per_call(p->cp);   /* a connection made for a call is that call's */
    return TYCHO_OK;
}

int tycho_upstreams_configure(struct tycho_upstreams *u, bool https, const char *host,
                              unsigned port, const struct tycho_pool_opts *o)
{
    struct tycho_pool *own = pool_get(u, https, host, port, o->tls);
    struct tycho_connpool_opts co;

    if (!own)
        return TYCHO_ERR;
    for (struct tycho_pool *p = u->pools; p; p = p->next) {
        struct tycho_tls_client *tls = p->o.tls;
        if (!same_backend(p, https, host, port))
            continue;
        p->o = *o;
        p->o.tls = tls;                       /* the pool's identity */
        p->own = p == own;
        if (p->cp) {
            pool_opts(o, &co);
            tycho_connpool_configure(p->cp, &co);   /* a larger max_conns lets waiters in */
        }
    }
    return TYCHO_OK;
}

void tycho_upstreams_inspect(struct tycho_upstreams *u, bool https, const char *host,
                             unsigned port, const struct tycho_tls_client *tls,
                             struct tycho_pool_opts *o, struct tycho_pool_stats *s)
{
    struct tycho_pool *p = tls ? pool_find(u, https, host, port, tls)
                               : pool_own(u, https, host, port);
    struct tycho_connpool_stats ps;

    memset(s, 0, sizeof(*s));
    s->circuit = "closed";
    if (!p) {
        if (!(p = pool_own(u, https, host, port)))
            tycho_pool_opts_default(o);
        else
            *o = p->o;                         /* a setting no call used yet: the backend's */
        o->tls = https ? (struct tycho_tls_client *)tls : NULL;
        return;
    }
    *o = p->o;
    *s = p->stats;
    pool_inspect(p, &ps);
    s->open = ps.open;
    s->idle = ps.idle;
    s->waiting = ps.waiting;
    s->circuit = ps.circuit;
}

/* ---- connections: the pool's driver ------------------------------------------- */

static void conn_read(struct bufferevent *bev, void *arg);
static void conn_event(struct bufferevent *bev, short what, void *arg);
static void call_send(struct tycho_call *c, struct upconn *conn);
static void call_fail(struct tycho_call *c, const char *err, bool counts);
static void on_conn(struct tycho_pwaiter *w, struct tycho_pconn *pc, const char *err);

/* Starts connecting conn (from the loop); the outcome goes to the pool. */
static void conn_start(struct upconn *conn)
{
    struct tycho_pool *p = conn->pool;
    struct tycho_upstreams *u = p->u;
    struct timeval connect_tv = tycho_tv(p->o.connect_timeout);
    struct in6_addr addr;
    struct evdns_base *dns = NULL;

    conn->started = true;
    /* Addresses need no resolver; names go through evdns, made on first use. */
    if (inet_pton(AF_INET, p->host, &addr) != 1 && inet_pton(AF_INET6, p->host, &addr) != 1) {
        if (!u->dns)
            u->dns = evdns_base_new(u->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                                 EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (!(dns = u->dns)) {
            tycho_connpool_opened(&conn->pc, "cannot start the name resolver");
            return;
        }
    }
    count(p, TYCHO_BACKEND_CONNECTS, &p->stats.connects);
    bufferevent_setcb(conn->bev, conn_read, NULL, conn_event, conn);
    event_add(&conn->connect_timer, &connect_tv);
    /* Last: a failure may be reported (and conn closed) before this returns. */
    if (bufferevent_socket_connect_hostname(conn->bev, dns, AF_UNSPEC, p->host, (int)p->port) < 0)
        tycho_connpool_opened(&conn->pc, "cannot start connecting");  /* conn is still here */
}

/* Whether conn's socket is connected (https: the handshake is what is still under way). */
static bool tcp_connected(const struct upconn *conn)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    evutil_socket_t fd = bufferevent_getfd(conn->bev);

    return fd >= 0 && getpeername(fd, (struct sockaddr *)&ss, &len) == 0;
}

/* First the start, then connect_timeout running out (name lookup, and the TLS handshake). */
static void on_connect_timer(evutil_socket_t fd, short what, void *arg)
{
    struct upconn *conn = arg;
    char err[ERR_LEN];

    (void)fd;
    (void)what;
    if (!conn->started) {
        conn_start(conn);
        return;
    }
    snprintf(err, sizeof(err), "%s:%u: %s", conn->pool->host, conn->pool->port,
             conn->ssl && tcp_connected(conn) ? "tls: handshake timed out" : "connect timeout");
    tycho_connpool_opened(&conn->pc, err);
}

static struct tycho_pconn *conn_open(struct tycho_connpool *cp, void *arg)
{
    struct tycho_pool *p = arg;
    struct upconn *conn = calloc(1, sizeof(*conn));

    (void)cp;
    if (!conn)
        return NULL;
    if (p->https) {
        /* The handshake starts once the socket is connected; the bufferevent frees ssl. */
        if ((conn->ssl = tycho_tls_client_ssl_new(p->o.tls, p->host, &p->session)) &&
            !(conn->bev = bufferevent_openssl_socket_new(p->u->base, -1, conn->ssl,
                                                         BUFFEREVENT_SSL_CONNECTING,
                                                         BEV_OPT_CLOSE_ON_FREE)))
            SSL_free(conn->ssl);
        /* A backend that closes without close_notify ends the response (or the idle
           connection) as a TCP close does: most do, and a body read to the close is whole. */
        if (conn->bev)
            bufferevent_openssl_set_allow_dirty_shutdown(conn->bev, 1);
    } else {
        conn->bev = bufferevent_socket_new(p->u->base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!conn->bev) {
        free(conn);
        return NULL;
    }
    conn->pool = p;
    evtimer_assign(&conn->connect_timer, p->u->base, on_connect_timer, conn);
    /* The pool hears back from the loop, never from inside open: a failure can be at once. */
    event_active(&conn->connect_timer, EV_TIMEOUT, 1);
    return &conn->pc;
}

/* The pool closes conn: idle, connecting, or let go by its call (which no longer points at it). */
static void conn_close(struct tycho_pconn *pc)
{
    struct upconn *conn = (struct upconn *)pc;

    event_del(&conn->connect_timer);
    /*
     * A close_notify (best effort, never waited for): it also keeps the
     * session resumable, which OpenSSL would drop for a connection freed
     * without one.
     */
    if (conn->ssl && conn->connected) {
        SSL_shutdown(conn->ssl);
        ERR_clear_error();
    }
    bufferevent_free(conn->bev);
    free(conn);
}

/*
 * The socket of an idle connection has neither data nor EOF waiting: the
 * backend kept it. For https too: a close_notify is bytes waiting, and any
 * other record (a late session ticket) is taken for one; an idle connection
 * reads all the while, so what comes while it waits between two checks is
 * read, and a close_notify or EOF drops it then.
 */
static bool conn_alive(struct tycho_pconn *pc)
{
    struct upconn *conn = (struct upconn *)pc;
    evutil_socket_t fd = bufferevent_getfd(conn->bev);
    char byte;
    ssize_t n;

    if (evbuffer_get_length(bufferevent_get_input(conn->bev)) > 0 || fd < 0)
        return false;
    n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void conn_connected(struct upconn *conn)
{
    struct tycho_pool *p = conn->pool;

    event_del(&conn->connect_timer);
    conn->connected = true;
    if (conn->ssl) {
        p->stats.tls_handshakes++;
        if (SSL_session_reused(conn->ssl))
            p->stats.tls_resumed++;
    }
    /* Requests go out in one write; do not let Nagle hold a body's tail. */
    setsockopt(bufferevent_getfd(conn->bev), IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    tycho_connpool_opened(&conn->pc, NULL);    /* to the call it was made for: call_send */
}

/*
 * The first OpenSSL error the bufferevent kept (0: none); the rest are
 * dropped. It keeps SSL_get_error's code (a small number, no library) ahead
 * of the error queue's entries, and hands them out newest first.
 */
static unsigned long ssl_error(struct upconn *conn)
{
    unsigned long e, first = 0;

    while ((e = bufferevent_get_openssl_error(conn->bev)))
        if (ERR_GET_LIB(e) != 0)
            first = e;
    ERR_clear_error();
    return first;
}

/* Why a connect failed, into err (ERR_LEN bytes). */
static void connect_error(struct upconn *conn, bool eof, char *err)
{
    const struct tycho_pool *p = conn->pool;
    int dns_err = bufferevent_socket_get_dns_error(conn->bev);
    int e = EVUTIL_SOCKET_ERROR();
    char why[ERR_LEN - 64];

    if (conn->ssl && !dns_err) {
        if (tycho_tls_client_handshake_error(p->o.tls, conn->ssl, ssl_error(conn), why,
                                             sizeof(why))) {
            snprintf(err, ERR_LEN, "%s:%u: %s", p->host, p->port, why);
            return;
        }
        /* A refused connect reads as EOF too (dirty shutdowns allowed): the socket tells. */
        if (tcp_connected(conn)) {
            if (eof)
                snprintf(err, ERR_LEN, "%s:%u: tls: the backend closed the connection during "
                         "the handshake", p->host, p->port);
            else
                snprintf(err, ERR_LEN, "%s:%u: tls: handshake failed: %s", p->host, p->port,
                         evutil_socket_error_to_string(e));
            return;
        }
    }
    if (dns_err)
        snprintf(err, ERR_LEN, "%s:%u: cannot resolve: %s", p->host, p->port,
                 evutil_gai_strerror(dns_err));
    else
        snprintf(err, ERR_LEN, "%s:%u: connect: %s", p->host, p->port,
                 evutil_socket_error_to_string(e));
}

/*
 * A reused connection that the backend had closed (nothing came back): an
 * idempotent request is sent once more, on another connection, without
 * asking the breaker again.
 */
static bool call_retry(struct tycho_call *c)
{
    struct upconn *conn = c->conn;

    if (c->retried || c->got_bytes || !c->spec.idempotent || !conn || conn->pc.uses < 2)
        return false;
    c->retried = true;
    conn->call = NULL;
    c->conn = NULL;
    c->state = CALL_POOL;
    tycho_connpool_release(&conn->pc, false);
    tycho_connpool_retry(c->pool->cp, &c->w, on_conn);
    return true;
}

static void conn_event(struct bufferevent *bev, short what, void *arg)
{
    struct upconn *conn = arg;
    struct tycho_call *c = conn->call;
    struct tycho_pool *p = conn->pool;
    char err[ERR_LEN];

    if (what & BEV_EVENT_CONNECTED) {
        conn_connected(conn);
        return;
    }
    if (!conn->connected) {
        connect_error(conn, (what & BEV_EVENT_EOF) != 0, err);
        tycho_connpool_opened(&conn->pc, err);     /* closes conn; its call gets err */
        return;
    }
    if (!c) {
        /* Idle. Its read_timeout ran out: it may idle on (idle_timeout is the pool's). */
        if (what & BEV_EVENT_TIMEOUT)
            bufferevent_enable(bev, EV_READ);
        else
            tycho_connpool_drop(&conn->pc);      /* closed by the backend */
        return;
    }
    if (what & BEV_EVENT_EOF) {
        /* A body that runs to EOF ends here. */
        tycho_reply_eof(&c->reply);
        if (c->reply.complete) {
            conn_read(bev, arg);
            return;
        }
    }
    if (what & BEV_EVENT_TIMEOUT) {
        snprintf(err, sizeof(err), "%s:%u: %s timeout", p->host, p->port,
                 (what & BEV_EVENT_READING) ? "read" : "write");
    } else if (what & BEV_EVENT_EOF) {
        if (call_retry(c))
            return;
        snprintf(err, sizeof(err), "%s:%u: the backend closed the connection%s", p->host,
                 p->port, c->got_bytes ? " mid-response" : "");
    } else {
        int e = EVUTIL_SOCKET_ERROR();
        unsigned long tls_err = conn->ssl ? ssl_error(conn) : 0;
        const char *reason = tls_err ? ERR_reason_error_string(tls_err) : NULL;
        if (!tls_err && (e == ECONNRESET || e == EPIPE) && call_retry(c))
            return;
        if (tls_err)
            snprintf(err, sizeof(err), "%s:%u: tls: %s", p->host, p->port,
                     reason ? reason : "error");
        else
            snprintf(err, sizeof(err), "%s:%u: %s", p->host, p->port,
                     evutil_socket_error_to_string(e));
    }
    call_fail(c, err, true);
}

/* ---- calls ----------------------------------------------------------------- */

/*
 * Records the result, tells the pool (the breaker), and tells the caller.
 * The connection is already let go. counts: a failure in the breaker's
 * sense (a 5xx response with fail_on_5xx counts without being an error).
 */
static void call_finish(struct tycho_call *c, const char *err, bool counts)
{
    struct tycho_pool *p = c->pool;

    event_del(&c->timer);
    c->conn = NULL;
    c->state = CALL_DONE;
    if (err)
        snprintf(c->err, sizeof(c->err), "%s", err);
    if (counts)
        count(p, TYCHO_BACKEND_FAILURES, &p->stats.failures);
    tycho_connpool_ended(p->cp, &c->w, counts && !err ? "a 5xx response" : err, counts);
    c->done(c, c->done_arg);
}

/* Fails c: its place in the pool is given up, its connection (mid-exchange) closed. */
static void call_fail(struct tycho_call *c, const char *err, bool counts)
{
    struct upconn *conn = c->conn;

    tycho_connpool_cancel(&c->w);
    if (conn) {
        conn->call = NULL;
        c->conn = NULL;
        tycho_connpool_release(&conn->pc, false);
    }
    call_finish(c, err, counts);
}

/* The pool's answer: a connection, or why there is none. */
static void on_conn(struct tycho_pwaiter *w, struct tycho_pconn *pc, const char *err)
{
    struct tycho_call *c = tycho_container_of(w, struct tycho_call, w);

    if (!pc) {
        call_finish(c, err, w->connect_failed);   /* a connect error counts, a refusal not */
        return;
    }
    call_send(c, (struct upconn *)pc);
}

/* The deadline: in the queue still, the call never had a connection; else it timed out. */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_call *c = arg;

    (void)fd;
    (void)what;
    if (c->w.pool) {
        tycho_connpool_cancel(&c->w);
        call_finish(c, "pool exhausted", false);
        return;
    }
    call_fail(c, "timeout", true);
}

/* Sends c's request on conn, a connected one. */
static void call_send(struct tycho_call *c, struct upconn *conn)
{
    struct tycho_pool *p = c->pool;
    struct timeval io_tv = tycho_tv(p->o.read_timeout);
    const char *req = c->spec.request;
    size_t len = c->spec.request_len;

    c->conn = conn;
    conn->call = c;
    c->state = CALL_EXCHANGING;
    count(p, TYCHO_BACKEND_REQUESTS, &p->stats.requests);
    if (conn->pc.uses > 1)
        count(p, TYCHO_BACKEND_REUSED, &p->stats.reused);
    tycho_reply_start(&c->reply, p->host, p->port, c->spec.head, p->o.max_body, c->body);
    /* read_timeout counts from now, not from the last byte read while it idled. */
    bufferevent_set_timeouts(conn->bev, &io_tv, &io_tv);
    /*
     * With nothing queued the request goes out now, in one send; only what
     * the socket does not take waits for the write event (an error is left
     * for that write to report). Saves arming and disarming the write event
     * per request. (A TLS connection's bytes go through its bufferevent.)
     */
    if (!conn->ssl && evbuffer_get_length(bufferevent_get_output(conn->bev)) == 0) {
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

/* Feeds the backend's bytes to the parser; a complete response finishes the call. */
static void conn_read(struct bufferevent *bev, void *arg)
{
    struct upconn *conn = arg;
    struct tycho_call *c = conn->call;
    struct evbuffer *in = bufferevent_get_input(bev);
    bool reusable;
    int status;

    if (!c) {
        tycho_connpool_drop(&conn->pc);           /* idle: a backend does not speak first */
        return;
    }
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
    conn->call = NULL;
    c->conn = NULL;
    /* Reading stays on while it idles: a byte or a close from the backend drops it at once. */
    tycho_connpool_release(&conn->pc, reusable);
    call_finish(c, NULL, status >= 500 && c->pool->o.fail_on_5xx);
}

struct tycho_call *tycho_call_start(struct tycho_upstreams *u, const struct tycho_call_spec *spec,
                                    tycho_call_done_fn done, void *arg)
{
    struct tycho_call *c = calloc(1, sizeof(*c));
    struct timeval tv = tycho_tv(spec->timeout);
    struct tycho_pool *p = NULL;

    if (!c || !(c->body = evbuffer_new()) ||
        !(p = pool_get(u, spec->https, spec->host, spec->port, spec->tls)) ||
        pool_start(p) < 0) {
        if (c)
            evbuffer_free(c->body);
        free(c);
        return NULL;
    }
    c->pool = p;
    c->spec = *spec;
    c->done = done;
    c->done_arg = arg;
    c->state = CALL_POOL;
    evtimer_assign(&c->timer, u->base, on_deadline, c);
    event_add(&c->timer, &tv);
    tycho_connpool_acquire(p->cp, &c->w, on_conn);
    return c;
}

void tycho_call_free(struct tycho_call *c)
{
    if (!c)
        return;
    if (c->state != CALL_DONE) {
        event_del(&c->timer);
        tycho_connpool_cancel(&c->w);
        if (c->conn) {
            c->conn->call = NULL;
            tycho_connpool_release(&c->conn->pc, false);   /* mid-exchange */
        }
        tycho_connpool_ended(c->pool->cp, &c->w, "abandoned", false);  /* a trial decided nothing */
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
        tycho_connpool_free(p->cp);   /* its idle connections; the calls took theirs */
        tycho_tls_client_session_dispose(&p->session);
        free(p->host);
        free(p);
    }
    if (u->dns)
        evdns_base_free(u->dns, 0);
    tycho_tls_client_cache_free(u->tls);
    free(u);
}
