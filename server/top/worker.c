/*
 * worker.c: worker threads. Each thread builds everything it owns (event
 * base, pools, script generation) itself, reports to main through the start
 * lock, then runs its loop until STOP. Start-up waits for every worker so
 * that the listener is enabled only once all can serve.
 */
#include "top/worker.h"
#include "http/access.h"
#include "http/conn.h"
#include "http/http.h"
#include "core/iplimit.h"
#include "core/log.h"
#include "lua/bind.h"
#include "lua/gen.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <unistd.h>

/* Idle objects are given back after this long without being needed. */
#define TRIM_INTERVAL_S 10

static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t start_cond = PTHREAD_COND_INITIALIZER;
static int started; /* workers that reported, under start_lock */

void tycho_worker_conn_gone(struct tycho_shared *shared, const struct sockaddr *peer)
{
    atomic_fetch_sub_explicit(&shared->open_conns, 1, memory_order_relaxed);
    if (peer && shared->per_ip && (peer->sa_family == AF_INET || peer->sa_family == AF_INET6))
        tycho_iplimit_remove(shared->per_ip, peer);
}

/* ctx->count_ip: a --proxy-protocol connection's client, counted as accepting counts a peer. */
static int ctx_count_ip(struct tycho_ctx *ctx, const struct sockaddr *peer)
{
    return tycho_acceptor_count_ip(&tycho_container_of(ctx, struct tycho_worker, ctx)->acceptor,
                                   peer);
}

/* ctx->conn_gone: the worker's context knows no worker; this is how it reaches it. */
static void ctx_conn_gone(struct tycho_ctx *ctx, const struct sockaddr *peer)
{
    struct tycho_worker *w = tycho_container_of(ctx, struct tycho_worker, ctx);

    tycho_acceptor_closed(&w->acceptor);
    tycho_worker_conn_gone(w->shared, peer);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_worker *w = arg;

    (void)fd;
    (void)what;
    tycho_log_warn("worker %d: --drain-timeout reached; closing the connections still open", w->id);
    tycho_conn_close_all(&w->ctx);
    event_base_loopbreak(w->base);
}

/* STOP: finish what is in flight (up to --drain-timeout), then leave the loop. */
static void start_drain(struct tycho_worker *w)
{
    long ms = w->cfg->drain_timeout_ms;
    struct timeval limit = {ms / 1000, (ms % 1000) * 1000};

    if (w->ctx.draining)
        return;
    if (!(w->drain_ev = evtimer_new(w->base, on_drain_timeout, w)) ||
        evtimer_add(w->drain_ev, &limit) < 0) {
        tycho_conn_close_all(&w->ctx);
        event_base_loopbreak(w->base);
        return;
    }
    tycho_conn_drain(&w->ctx);
}

static void sample_metrics(struct tycho_worker *w);

/* Builds the scripts anew and switches to them; the old generation finishes what it runs. */
static void reload(struct tycho_worker *w, unsigned long generation)
{
    struct timespec t0, t1;
    struct tycho_gen *g;
    char err[TYCHO_ERR_LEN];

    if (w->ctx.draining)
        return;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!(g = tycho_gen_new(w->cfg->dir, w->id, err))) {
        tycho_log_error("worker %d: reload failed: %s; still serving generation %lu", w->id, err,
                        w->generation);
        return;
    }
    if (tycho_gen_attach(g, w->base) < 0) {
        tycho_log_error("worker %d: reload failed: out of memory starting on_worker_start "
                        "functions; still serving generation %lu", w->id, w->generation);
        tycho_gen_free(g);
        return;
    }
    tycho_gen_replace(w->gen, g, w->generation);
    w->gen = g;
    tycho_gen_app(g, &w->ctx.app);
    w->generation = generation;
    if (w->metrics_ev)
        sample_metrics(w);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    tycho_log_info("worker %d: serving generation %lu (built in %.1f ms)", w->id, generation,
                   (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
}

/*
 * The workers a WebSocket broadcast goes to (tycho_bind_ws_fanout): set
 * before they start; a worker's inbox takes broadcasts from when it is made
 * until its teardown (inbox_open, under fanout_lock, which also keeps a
 * push from racing the inbox's disposal).
 */
static pthread_mutex_t fanout_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tycho_worker *fanout_workers;
static int fanout_n;

static void fanout(const struct tycho_ws_broadcast *b)
{
    size_t size = sizeof(*b) + b->channel_len + b->len;

    pthread_mutex_lock(&fanout_lock);
    for (int i = 0; i < fanout_n; i++) {
        struct tycho_worker *w = &fanout_workers[i];
        struct tycho_msg *m;
        if (w->id == b->from_worker || !w->inbox_open)
            continue;
        if (!(m = calloc(1, sizeof(*m))) || !(m->payload = malloc(size))) {
            free(m);
            tycho_log_error("worker %d: out of memory: a WebSocket broadcast did not reach "
                            "worker %d", b->from_worker, w->id);
            continue;
        }
        memcpy(m->payload, b, size);
        m->type = TYCHO_MSG_BROADCAST;
        if (tycho_mq_push(&w->inbox, m) < 0) {
            free(m->payload);
            free(m);
        }
    }
    pthread_mutex_unlock(&fanout_lock);
}

static void set_inbox_open(struct tycho_worker *w, bool open)
{
    pthread_mutex_lock(&fanout_lock);
    w->inbox_open = open;
    pthread_mutex_unlock(&fanout_lock);
}

/* The workers are gone: broadcasts go nowhere (main thread, after every worker stopped). */
static void fanout_end(void)
{
    pthread_mutex_lock(&fanout_lock);
    fanout_workers = NULL;
    fanout_n = 0;
    tycho_bind_ws_fanout = NULL;
    pthread_mutex_unlock(&fanout_lock);
}

static void on_inbox(struct tycho_msg *list, void *arg)
{
    struct tycho_worker *w = arg;
    struct tycho_msg *m, *next;

    for (m = list; m; m = next) {
        next = m->next;
        if (m->type == TYCHO_MSG_ACCEPT) {
            if (!w->ctx.draining)     /* embedded in the worker, like STOP */
                tycho_acceptor_start(&w->acceptor);
        } else if (m->type == TYCHO_MSG_STOP) {
            tycho_acceptor_stop(&w->acceptor);
            start_drain(w);           /* the stop message is embedded in the worker */
        } else if (m->type == TYCHO_MSG_RELOAD) {
            reload(w, m->generation);
            free(m);
        } else if (m->type == TYCHO_MSG_BROADCAST) {
            tycho_bind_ws_deliver(m->payload);
            free(m->payload);
            free(m);
        }
    }
}

static void on_access_flush(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_worker *w = arg;

    (void)fd;
    (void)what;
    if (w->ctx.access_buf.len)
        tycho_access_flush(&w->ctx.access_buf);
}

static void on_trim(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_worker *w = arg;

    (void)fd;
    (void)what;
    tycho_pool_trim(&w->ctx.conn_pool);
    tycho_pool_trim(&w->ctx.req_pool);
    /* The output scratch grows to the largest batch seen; give it back when quiet. */
    if (w->ctx.out.len == 0 && w->ctx.out.cap > 64 * 1024)
        tycho_buf_dispose(&w->ctx.out);
}

/* --metrics: the gauges only the worker can read (its Lua states, timers, pools), each second. */
static void sample_metrics(struct tycho_worker *w)
{
    double lua_bytes, timers;

    tycho_gen_sample(w->gen, ++w->metrics_round, &lua_bytes, &timers);
    tycho_metric_set(&w->ctx.stats.lua_bytes, lua_bytes);
    tycho_metric_set(&w->ctx.stats.timers, timers);
    tycho_metric_set(&w->ctx.stats.generation, (double)w->generation);
}

static void on_metrics_sample(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    sample_metrics(arg);
}

int tycho_worker_setup(struct tycho_worker *w, int id, struct tycho_shared *shared, char *err)
{
    struct event_config *ec = NULL;
    struct timeval every = {TRIM_INTERVAL_S, 0};
    const struct tycho_config *cfg = shared->cfg;

    /* w arrives zeroed; no memset here: pthread_create may still be writing w->thread. */
    w->id = id;
    w->cfg = cfg;
    w->shared = shared;
    w->inbox.efd = -1;
    tycho_list_init(&w->ctx.conns);   /* teardown walks it, whatever failed */
    if (!(ec = event_config_new()) || event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK) < 0 ||
        !(w->base = event_base_new_with_config(ec)) ||
        tycho_ctx_init(&w->ctx, cfg, w->base, id, (unsigned)cfg->max_conns,
                       tycho_conn_bytes()) < 0 ||
        tycho_mq_init(&w->inbox, w->base, on_inbox, w) < 0 ||
        tycho_acceptor_init(&w->acceptor, w->base, &w->ctx, shared, w->inbox.efd) < 0 ||
        !(w->trim_ev = event_new(w->base, -1, EV_PERSIST, on_trim, w)) ||
        event_add(w->trim_ev, &every) < 0) {
        snprintf(err, TYCHO_ERR_LEN, "worker %d: out of memory or file descriptors", id);
        goto fail;
    }
    event_config_free(ec);
    ec = NULL;
    set_inbox_open(w, true);
    w->ctx.conn_gone = ctx_conn_gone;
    w->ctx.count_ip = ctx_count_ip;
    if (tycho_access_enabled()) {
        struct timeval second = {1, 0};
        if (!(w->access_ev = event_new(w->base, -1, EV_PERSIST, on_access_flush, w)) ||
            event_add(w->access_ev, &second) < 0) {
            snprintf(err, TYCHO_ERR_LEN, "worker %d: out of memory", id);
            goto fail;
        }
        w->ctx.access_ev = w->access_ev;
    }
    if (!(w->gen = tycho_gen_new(cfg->dir, id, err)))
        goto fail;
    w->generation = 1;
    tycho_gen_app(w->gen, &w->ctx.app);
    /* A random start per worker: ids stay unique across workers and restarts. */
    if (getrandom(&w->ctx.next_request_id, sizeof(w->ctx.next_request_id), GRND_NONBLOCK) !=
        (ssize_t)sizeof(w->ctx.next_request_id))
        w->ctx.next_request_id =
            ((unsigned long long)time(NULL) << 20) ^ ((unsigned long long)id << 56);
    if (tycho_gen_attach(w->gen, w->base) < 0) {
        snprintf(err, TYCHO_ERR_LEN, "worker %d: out of memory starting on_worker_start "
                 "functions", id);
        goto fail;
    }
    if (cfg->metrics_path) {
        struct timeval second = {1, 0};
        if (!(w->metrics_ev = event_new(w->base, -1, EV_PERSIST, on_metrics_sample, w)) ||
            event_add(w->metrics_ev, &second) < 0) {
            snprintf(err, TYCHO_ERR_LEN, "worker %d: out of memory", id);
            goto fail;
        }
        sample_metrics(w);
    }
    tycho_metrics_attach(id, &w->ctx.stats);
    return TYCHO_OK;
fail:
    if (ec)
        event_config_free(ec);
    tycho_worker_teardown(w);
    return TYCHO_ERR;
}

void tycho_worker_teardown(struct tycho_worker *w)
{
    tycho_metrics_attach(w->id, NULL);
    if (w->metrics_ev)
        event_free(w->metrics_ev);
    w->metrics_ev = NULL;
    tycho_acceptor_dispose(&w->acceptor);
    if (w->base)
        tycho_conn_close_all(&w->ctx);
    tycho_gen_free(w->gen);
    w->gen = NULL;
    if (w->ctx.access_buf.len)
        tycho_access_flush(&w->ctx.access_buf);
    if (w->access_ev)
        event_free(w->access_ev);
    w->access_ev = w->ctx.access_ev = NULL;
    set_inbox_open(w, false);         /* no broadcast is pushed to it from now on */
    tycho_mq_dispose(&w->inbox);
    if (w->trim_ev)
        event_free(w->trim_ev);
    w->trim_ev = NULL;
    if (w->drain_ev)
        event_free(w->drain_ev);
    w->drain_ev = NULL;
    if (w->base)
        event_base_free(w->base);
    w->base = w->ctx.base = NULL;
    tycho_ctx_dispose(&w->ctx);
}

static void report_start(struct tycho_worker *w, int rc)
{
    pthread_mutex_lock(&start_lock);
    w->start_rc = rc;
    started++;
    pthread_cond_broadcast(&start_cond);
    pthread_mutex_unlock(&start_lock);
}

static void *worker_main(void *arg)
{
    struct tycho_worker *w = arg;
    char err[TYCHO_ERR_LEN];

    if (tycho_worker_setup(w, w->id, w->shared, err) < 0) {
        snprintf(w->start_err, sizeof(w->start_err), "%s", err);
        report_start(w, TYCHO_ERR);
        return NULL;
    }
    report_start(w, TYCHO_OK);
    event_base_dispatch(w->base);
    tycho_log_info("worker %d: %lu requests; made %lu connection objects and %lu request "
                   "contexts (bound %u each); %lu timeouts",
                   w->id, w->ctx.requests, w->ctx.conn_pool.made, w->ctx.req_pool.made,
                   w->ctx.req_pool.max_live, w->ctx.timeouts);
    tycho_worker_teardown(w);
    return NULL;
}

int tycho_workers_reload(struct tycho_worker *ws, int n, unsigned long generation)
{
    int asked = 0;

    for (int i = 0; i < n; i++) {
        struct tycho_msg *m = calloc(1, sizeof(*m));
        if (!m) {
            tycho_log_error("reload: out of memory asking worker %d", ws[i].id);
            continue;
        }
        m->type = TYCHO_MSG_RELOAD;
        m->generation = generation;
        if (tycho_mq_push(&ws[i].inbox, m) < 0) {
            free(m);
            continue;
        }
        asked++;
    }
    return asked;
}

static void send_stop(struct tycho_worker *w)
{
    w->stop_msg.type = TYCHO_MSG_STOP;
    tycho_mq_push(&w->inbox, &w->stop_msg);
}

/* Waits until count workers have reported. */
static void wait_started(int count)
{
    pthread_mutex_lock(&start_lock);
    while (started < count)
        pthread_cond_wait(&start_cond, &start_lock);
    pthread_mutex_unlock(&start_lock);
}

struct tycho_worker *tycho_workers_start(int n, struct tycho_shared *shared, char *err)
{
    struct tycho_worker *ws = calloc((size_t)n, sizeof(*ws));
    int launched = 0, failed = -1;

    if (!ws) {
        snprintf(err, TYCHO_ERR_LEN, "out of memory starting workers");
        return NULL;
    }
    started = 0;
    pthread_mutex_lock(&fanout_lock);
    fanout_workers = ws;
    fanout_n = n;
    pthread_mutex_unlock(&fanout_lock);
    tycho_bind_ws_fanout = n > 1 ? fanout : NULL;
    for (; launched < n; launched++) {
        ws[launched].id = launched + 1;
        ws[launched].shared = shared;
        if (pthread_create(&ws[launched].thread, NULL, worker_main, &ws[launched]) != 0) {
            snprintf(err, TYCHO_ERR_LEN, "cannot start worker thread %d", launched + 1);
            break;
        }
    }
    wait_started(launched);
    for (int i = 0; i < launched && failed < 0; i++)
        if (ws[i].start_rc != TYCHO_OK) {
            failed = i;
            snprintf(err, TYCHO_ERR_LEN, "%s", ws[i].start_err);
        }
    if (launched == n && failed < 0)
        return ws;
    for (int i = 0; i < launched; i++) {
        if (ws[i].start_rc == TYCHO_OK)
            send_stop(&ws[i]);
        pthread_join(ws[i].thread, NULL);
    }
    fanout_end();
    free(ws);
    return NULL;
}

void tycho_workers_accept(struct tycho_worker *ws, int n)
{
    for (int i = 0; i < n; i++) {
        ws[i].accept_msg.type = TYCHO_MSG_ACCEPT;
        tycho_mq_push(&ws[i].inbox, &ws[i].accept_msg);
    }
}

int tycho_workers_stop(struct tycho_worker *ws, int n)
{
    /* A worker drains for --drain-timeout at most; allow it that and a margin. */
    long wait_ms = ws ? ws[0].shared->cfg->drain_timeout_ms + 5000 : 0;
    struct timespec until;
    int stuck = 0;

    if (!ws)
        return TYCHO_OK;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += wait_ms / 1000 + (until.tv_nsec + (wait_ms % 1000) * 1000000L) / 1000000000L;
    until.tv_nsec = (until.tv_nsec + (wait_ms % 1000) * 1000000L) % 1000000000L;
    for (int i = 0; i < n; i++)
        send_stop(&ws[i]);
    for (int i = 0; i < n; i++) {
        if (pthread_timedjoin_np(ws[i].thread, NULL, &until) != 0) {
            tycho_log_error("worker %d did not stop in time (a handler that never returns?)",
                            i + 1);
            stuck++;
        }
    }
    if (stuck)
        return TYCHO_ERR;             /* its memory is still in use: do not free it */
    fanout_end();
    free(ws);
    return TYCHO_OK;
}
