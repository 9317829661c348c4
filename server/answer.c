/*
 * answer.c: what the server answers itself without Lua (--health, --metrics)
 * and the accounting at the end of every request (the access log line, the
 * request's metrics). Runs on the connection's worker thread.
 */
#include "conn_int.h"
#include "access.h"
#include "conn.h"
#include "metrics.h"
#include "router.h"
#include "worker.h"

#include <event2/event.h>
#include <string.h>
#include <time.h>

long long tycho_conn_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Appends the request's access log line to the worker's batch (written at 32 KiB or each second). */
static void log_access(struct tycho_conn *c, long long now)
{
    struct tycho_worker *w = c->w;
    struct tycho_req *r = c->req;
    char remote[64];
    struct tycho_access_entry e = {r, remote, r->log_status, r->log_bytes,
                                   now - r->started_us, w->id};

    tycho_conn_peer(c, remote, sizeof(remote));
    /* A full batch is written from the loop, after this request's response. */
    if (tycho_access_append(&w->access_buf, &e) == TYCHO_OK && w->access_buf.len >= 32 * 1024)
        event_active(w->access_ev, EV_TIMEOUT, 1);
}

/*
 * Counts a request in the metrics: by route (pattern, or the path the server
 * answered, or "(unmatched)" for 404 and 405), method and status class; and
 * its latency by route.
 */
static void count_request(struct tycho_worker *w, const struct tycho_req *r, long long now)
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
    if ((v = tycho_metric_series(tycho_metric_requests, w->id, key, route_len + method_len + 6)))
        tycho_metric_add(v, 1);
    if ((v = tycho_metric_series(tycho_metric_duration, w->id, key, route_len + 1)))
        tycho_metric_observe(tycho_metric_duration, v, (double)(now - r->started_us) / 1e6);
}

void tycho_conn_account(struct tycho_conn *c)
{
    struct tycho_worker *w = c->w;
    long long now = tycho_conn_now_us();

    if (w->access_ev)
        log_access(c, now);
    if (w->cfg->metrics_path)
        count_request(w, c->req, now);
}

/* Whether r is a GET or HEAD of path (a path the server answers itself). */
static bool is_builtin(const struct tycho_req *r, const char *path)
{
    return path && r->path_len == strlen(path) && memcmp(r->path, path, r->path_len) == 0;
}

/* Answers a server-answered path whose method is not GET or HEAD with 405; returns whether it did. */
static bool refuse_method(struct tycho_conn *c, bool keep_alive)
{
    struct tycho_req *r = c->req;
    char extra[200];

    if (strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0)
        return false;
    memcpy(extra, "Allow: GET, HEAD\r\n", 19);
    tycho_conn_id_line(r, extra + 18, sizeof(extra) - 18);
    tycho_conn_answer_simple(c, 405, extra, keep_alive, true);
    tycho_conn_end_request(c, keep_alive);
    return true;
}

/* Appends a 200 (or 503) with body and Cache-Control: no-store, then ends the request. */
static void answer_body(struct tycho_conn *c, bool keep_alive, int status, const char *type,
                        const char *body, size_t body_len)
{
    struct tycho_req *r = c->req;
    size_t before = tycho_conn_out(c)->len;
    char extra[200];

    memcpy(extra, "Cache-Control: no-store\r\n", 25);
    tycho_conn_id_line(r, extra + 25, sizeof(extra) - 25);
    if (tycho_http_write_body(tycho_conn_out(c), status, type, extra, tycho_worker_date(c->w),
                              keep_alive, body, body_len, !r->is_head) < 0 || !keep_alive)
        c->closing = true;
    tycho_conn_note_sent(c, status, before);
    tycho_conn_end_request(c, keep_alive);
}

/*
 * --health PATH: 200 "ok" while serving, 503 "draining" once stopping, with
 * no Lua (a load balancer asks often; a stuck script must not fake health).
 * Returns whether r was the health check.
 */
static bool answer_health(struct tycho_conn *c)
{
    struct tycho_req *r = c->req;
    bool keep_alive;

    if (!is_builtin(r, c->w->cfg->health_path))
        return false;
    r->route_label = c->w->cfg->health_path;
    keep_alive = tycho_conn_keeps_alive(c);
    if (refuse_method(c, keep_alive))
        return true;
    if (c->w->draining)
        answer_body(c, keep_alive, 503, "text/plain; charset=utf-8", "draining\n", 9);
    else
        answer_body(c, keep_alive, 200, "text/plain; charset=utf-8", "ok\n", 3);
    return true;
}

/*
 * --metrics PATH (unless --metrics-addr serves it elsewhere): the Prometheus
 * exposition, rendered by this worker from every worker's counters, no Lua.
 * Returns whether r was the scrape.
 */
static bool answer_metrics(struct tycho_conn *c)
{
    const struct tycho_config *cfg = c->w->cfg;
    struct tycho_req *r = c->req;
    struct tycho_buf text = {0};
    bool keep_alive;

    if (cfg->metrics_addr || !is_builtin(r, cfg->metrics_path))
        return false;
    r->route_label = cfg->metrics_path;
    keep_alive = tycho_conn_keeps_alive(c);
    if (refuse_method(c, keep_alive))
        return true;
    if (tycho_metrics_render(&text) < 0)
        answer_body(c, keep_alive, 503, "text/plain; charset=utf-8", "out of memory\n", 14);
    else
        answer_body(c, keep_alive, 200, TYCHO_METRICS_CONTENT_TYPE, text.data + text.off,
                    text.len);
    tycho_buf_dispose(&text);
    return true;
}

bool tycho_conn_answer_builtin(struct tycho_conn *c)
{
    return answer_health(c) || answer_metrics(c);
}
