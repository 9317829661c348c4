/*
 * answer.c: what the server answers itself without Lua (--health, --metrics)
 * and the accounting at the end of every request (the access log line, the
 * request's metrics). Runs on the worker thread of the request's connection.
 */
#include "http/answer.h"
#include "core/config.h"
#include "core/metrics.h"
#include "http/access.h"
#include "http/context.h"
#include "http/http.h"
#include "http/router.h"

#include <event2/event.h>
#include <stdio.h>
#include <string.h>

const char *tycho_answer_id_line(const struct tycho_req *r, char *buf, size_t cap)
{
    buf[0] = '\0';
    if (r->id_len)
        snprintf(buf, cap, "X-Request-Id: %.*s\r\n", (int)r->id_len, r->id);
    return buf;
}

/* Appends r's access log line to the worker's batch (written at 32 KiB or each second). */
static void log_access(struct tycho_ctx *ctx, const struct tycho_req *r, const char *remote,
                       long long now)
{
    struct tycho_access_entry e = {r, remote, r->log_status, r->log_bytes,
                                   now - r->started_us, ctx->worker_id};

    /* A full batch is written from the loop, after this request's response. */
    if (tycho_access_append(&ctx->access_buf, &e) == TYCHO_OK && ctx->access_buf.len >= 32 * 1024)
        event_active(ctx->access_ev, EV_TIMEOUT, 1);
}

/*
 * Counts a request in the metrics: by route (pattern, or the path the server
 * answered, or "(unmatched)" for 404 and 405), method and status class; and
 * its latency by route.
 */
static void count_request(int worker_id, const struct tycho_req *r, long long now)
{
    char key[TYCHO_METRIC_KEY_BYTES];
    const char *route = r->route_label ? r->route_label : "(unmatched)";
    /* A HEAD is routed as a GET; it is counted as what it was. */
    const char *method = r->is_head ? "HEAD" : r->method;
    size_t route_len = strnlen(route, TYCHO_ROUTE_MAX_BYTES), method_len = strnlen(method, 64);
    int class = r->log_status / 100;
    _Atomic double *v;

    memcpy(key, route, route_len);
    key[route_len] = '\0';
    memcpy(key + route_len + 1, method, method_len);
    key[route_len + 1 + method_len] = '\0';
    memcpy(key + route_len + method_len + 2, "0xx", 4);
    key[route_len + method_len + 2] = (char)('0' + (class >= 1 && class <= 5 ? class : 5));
    v = tycho_metric_series(tycho_metric_requests, worker_id, key, route_len + method_len + 6);
    if (v)
        tycho_metric_add(v, 1);
    if ((v = tycho_metric_series(tycho_metric_duration, worker_id, key, route_len + 1)))
        tycho_metric_observe(tycho_metric_duration, v, (double)(now - r->started_us) / 1e6);
}

void tycho_answer_account(struct tycho_ctx *ctx, const struct tycho_req *r, const char *remote)
{
    long long now = tycho_now_us();

    if (ctx->access_ev)
        log_access(ctx, r, remote, now);
    if (ctx->cfg->metrics_path && !ctx->metrics_only)  /* a scrape is not the app's traffic */
        count_request(ctx->worker_id, r, now);
}

/* Whether r is a GET or HEAD of path (a path the server answers itself). */
static bool is_builtin(const struct tycho_req *r, const char *path)
{
    return path && r->path_len == strlen(path) && memcmp(r->path, path, r->path_len) == 0;
}

/* Appends a 405 when r's method is not GET or HEAD; returns its status, 0 when it is neither. */
static int refuse_method(const char *date, const struct tycho_req *r, struct tycho_buf *out,
                         bool keep_alive)
{
    char extra[200];

    if (strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0)
        return 0;
    memcpy(extra, "Allow: GET, HEAD\r\n", 19);
    tycho_answer_id_line(r, extra + 18, sizeof(extra) - 18);
    return tycho_http_write_simple(out, 405, extra, date, keep_alive, true) < 0
               ? -1 : 405;
}

/* Appends a 200 (or 503) with body and Cache-Control: no-store; returns status, or -1. */
static int answer_body(const char *date, const struct tycho_req *r, struct tycho_buf *out,
                       bool keep_alive, int status, const char *type, const char *body,
                       size_t body_len)
{
    char extra[200];

    memcpy(extra, "Cache-Control: no-store\r\n", 25);
    tycho_answer_id_line(r, extra + 25, sizeof(extra) - 25);
    if (tycho_http_write_body(out, status, type, extra, date, keep_alive, body,
                              body_len, !r->is_head) < 0)
        return -1;
    return status;
}

/*
 * --health PATH: 200 "ok" while serving, 503 "draining" once stopping, with
 * no Lua (a load balancer asks often; a stuck script must not fake health).
 */
static int answer_health(struct tycho_ctx *ctx, const char *date, const struct tycho_req *r,
                         struct tycho_buf *out, bool keep_alive)
{
    if (ctx->draining)
        return answer_body(date, r, out, keep_alive, 503, "text/plain; charset=utf-8",
                           "draining\n", 9);
    return answer_body(date, r, out, keep_alive, 200, "text/plain; charset=utf-8", "ok\n", 3);
}

/*
 * --metrics PATH (unless --metrics-addr serves it elsewhere): the Prometheus
 * exposition, rendered by this worker from every worker's counters, no Lua.
 */
static int answer_metrics(const char *date, const struct tycho_req *r, struct tycho_buf *out,
                          bool keep_alive)
{
    struct tycho_buf text = {0};
    int status;

    if (tycho_metrics_render(&text) < 0)
        status = answer_body(date, r, out, keep_alive, 503, "text/plain; charset=utf-8",
                             "out of memory\n", 14);
    else
        status = answer_body(date, r, out, keep_alive, 200, TYCHO_METRICS_CONTENT_TYPE,
                             text.data + text.off, text.len);
    tycho_buf_dispose(&text);
    return status;
}

bool tycho_answer_is_builtin(const struct tycho_ctx *ctx, const struct tycho_req *r)
{
    const struct tycho_config *cfg = ctx->cfg;

    /* --metrics-addr: the metrics on their own address (its context), not on --port's. */
    if (ctx->metrics_only)
        return is_builtin(r, cfg->metrics_path);
    return is_builtin(r, cfg->health_path) ||
           (!cfg->metrics_addr && is_builtin(r, cfg->metrics_path));
}

int tycho_answer_builtin(struct tycho_ctx *ctx, struct tycho_req *r, const char *date,
                         struct tycho_buf *out, bool keep_alive)
{
    bool health = !ctx->metrics_only && is_builtin(r, ctx->cfg->health_path);
    int status;

    r->route_label = health ? ctx->cfg->health_path : ctx->cfg->metrics_path;
    if ((status = refuse_method(date, r, out, keep_alive)) != 0)
        return status;
    return health ? answer_health(ctx, date, r, out, keep_alive)
                  : answer_metrics(date, r, out, keep_alive);
}
