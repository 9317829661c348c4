/*
 * exchange.c: the requests of a connection (conn_int.h): bytes read go
 * through the parser into a request context from the worker's pool; a whole
 * request is routed and handed to the application (ctx->app), or answered by
 * the server itself (answer.c: --health, --metrics; 404, 405, errors); its
 * response is appended to the connection's output, a file body is queued for
 * conn.c to send, and the request ends: accounting, keep-alive or close, the
 * context back to its pool. Requests are answered one at a time, in order.
 * Worker thread only.
 */
#include "http/conn_int.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/proxies.h"
#include "http/answer.h"
#include "http/conn.h"
#include "http/gzip.h"
#include "http/router.h"
#include "http/static.h"
#include "http/chunks.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* a.b.c.d into buf (16 bytes at least), without printf: the access log asks per request. */
static size_t ipv4_text(const unsigned char *a, char *buf)
{
    size_t n = 0;

    for (int i = 0; i < 4; i++) {
        unsigned v = a[i];
        if (v >= 100)
            buf[n++] = (char)('0' + v / 100);
        if (v >= 10)
            buf[n++] = (char)('0' + v / 10 % 10);
        buf[n++] = (char)('0' + v % 10);
        buf[n++] = i < 3 ? '.' : '\0';
    }
    return n - 1;
}

/* Here, not in conn.c: the access log line needs it, and exchange.c calls nothing of conn.c. */
bool tycho_conn_is_tls(const struct tycho_conn *c)
{
    return c && tycho_conn_ssl(c);
}

size_t tycho_conn_peer(const struct tycho_conn *c, char *buf, size_t buf_len)
{
    if (c && c->fd >= 0 && c->peer_family == AF_INET && buf_len >= 16)
        return ipv4_text(c->peer_addr, buf);
    if (!c || c->fd < 0 || !inet_ntop(c->peer_family, c->peer_addr, buf, (socklen_t)buf_len))
        snprintf(buf, buf_len, "127.0.0.1");
    return strlen(buf);
}

/*
 * Up to cap fields named name (lower case) of r, in order, into fields. -1
 * when there are more (nothing to be sure of: the peer's address stays).
 */
static int collect(const struct tycho_req *r, const char *name, size_t name_len,
                   struct tycho_field *fields, int cap)
{
    int n = 0;

    for (unsigned i = 0; i < r->nheaders; i++) {
        const struct tycho_header *h = &r->headers[i];
        if (h->name_len != name_len || strncasecmp(h->name, name, name_len) != 0)
            continue;
        if (n == cap)
            return -1;
        fields[n].value = h->value;
        fields[n++].len = h->value_len;
    }
    return n;
}

#define FORWARDED_FIELDS 16

/* Fills r's client fields from its headers, when its peer is a trusted proxy. */
static void work_out_client(struct tycho_req *r)
{
    const struct tycho_conn *c = r->conn;
    struct tycho_field fields[FORWARDED_FIELDS];
    enum tycho_proxy_scheme scheme = TYCHO_SCHEME_NONE;
    struct tycho_ip peer, ip;
    int n;
    bool found;

    r->client_done = true;
    if (c->fd < 0 || !tycho_ip_from(c->peer_family, c->peer_addr, &peer) ||
        !tycho_proxies_trust(c->ctx->cfg->trusted_proxies, &peer))
        return;                       /* from anyone else, these headers mean nothing */
    n = collect(r, "forwarded", 9, fields, FORWARDED_FIELDS);
    if (n != 0) {
        found = n > 0 && tycho_proxies_client(c->ctx->cfg->trusted_proxies, fields,
                                              (unsigned)n, true, &ip, &scheme);
        if (!found)
            return;
        r->client_scheme = (unsigned char)scheme;
    } else {
        n = collect(r, "x-forwarded-proto", 17, fields, FORWARDED_FIELDS);
        if (n > 0)
            r->client_scheme = (unsigned char)tycho_proxies_proto(fields, (unsigned)n);
        n = collect(r, "x-forwarded-for", 15, fields, FORWARDED_FIELDS);
        found = n > 0 && tycho_proxies_client(c->ctx->cfg->trusted_proxies, fields,
                                              (unsigned)n, false, &ip, &scheme);
        if (!found)
            return;
    }
    char *text = tycho_arena_alloc(&r->arena, INET6_ADDRSTRLEN);
    if (text) {
        tycho_ip_text(&ip, text, INET6_ADDRSTRLEN);
        r->client = text;
    }
}

size_t tycho_req_client(struct tycho_req *r, char *buf, size_t buf_len)
{
    if (!r->conn || !r->conn->ctx->cfg->trusted_proxies)
        return tycho_conn_peer(r->conn, buf, buf_len);
    if (!r->client_done)
        work_out_client(r);
    if (!r->client)
        return tycho_conn_peer(r->conn, buf, buf_len);
    snprintf(buf, buf_len, "%s", r->client);
    return strlen(buf);
}

bool tycho_req_https(struct tycho_req *r)
{
    if (r->conn && r->conn->ctx->cfg->trusted_proxies) {
        if (!r->client_done)
            work_out_client(r);
        if (r->client_scheme != TYCHO_SCHEME_NONE)
            return r->client_scheme == TYCHO_SCHEME_HTTPS;
    }
    return tycho_conn_is_tls(r->conn);
}

static struct tycho_req *take_req(struct tycho_conn *c)
{
    struct tycho_req *r = tycho_pool_get(&c->ctx->req_pool);

    if (r) {
        r->conn = c;
        tycho_http_init(&r->http, c->ctx->cfg); /* each request is parsed from a fresh start */
    }
    if (!c->started) {
        /* Blank lines before a request count too: they cannot hold the connection open. */
        c->started = true;
        c->req_started_ms = tycho_ctx_now_ms(c->ctx);
    }
    return r;
}

void tycho_exchange_release(struct tycho_conn *c)
{
    if (!c->req)
        return;
    if (c->req->app) {
        /* The connection goes while its handler waits: that coroutine is never resumed. */
        c->ctx->app.cancel(c->req);
        c->waiting = false;
    }
    if (c->req->stream_gzip)
        tycho_chunks_free(c->req);
    tycho_req_reset(c->req);
    tycho_pool_put(&c->ctx->req_pool, c->req);
    c->req = NULL;
}

/* Records what was sent for r (the access log): status, and the bytes since `before`. */
static void note_sent(struct tycho_conn *c, int status, size_t before)
{
    if (c->req) {
        c->req->log_status = status;
        c->req->log_bytes = tycho_conn_out(c)->len - before;
    }
}

/* Answers a request the server handles itself (errors, 404, 405). */
void tycho_exchange_answer_simple(struct tycho_conn *c, int status, const char *extra,
                                  bool keep_alive, bool with_body)
{
    size_t before = tycho_conn_out(c)->len;

    if (tycho_http_write_simple(tycho_conn_out(c), status, extra, tycho_conn_date(c),
                                keep_alive,
                                with_body) < 0)
        c->closing = true;            /* no memory even for an error: just close */
    note_sent(c, status, before);
    if (!keep_alive)
        c->closing = true;
}

/*
 * Nagle's algorithm can hold back a response while the previous one is not
 * yet acknowledged: only a connection that stays open for more requests needs
 * it off, so a one-request connection is spared the system call (as nginx does).
 */
static void set_nodelay(struct tycho_conn *c)
{
    int one = 1;

    c->nodelay = true;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* The access log line and the metrics of c's request, which has been answered. */
static void account(struct tycho_conn *c)
{
    char remote[64] = "";

    if (c->ctx->access_ev)
        tycho_req_client(c->req, remote, sizeof(remote));
    tycho_answer_account(c->ctx, c->req, remote);
}

/*
 * The end of every request: the access log, metrics, keep-alive or close,
 * counters, the context back to its pool.
 */
static void end_request(struct tycho_conn *c, bool keep_alive)
{
    assert(!c->waiting && "a request ends once its handler has finished");
    struct tycho_ctx *ctx = c->ctx;

    if (c->req && (ctx->access_ev || ctx->cfg->metrics_path))
        account(c);
    if (!keep_alive)
        c->closing = true;
    else if (!c->nodelay && c->fd >= 0)
        set_nodelay(c);
    ctx->requests++;
    c->nrequests++;
    c->started = false;
    /* Nothing is parsed after an error (a streamed body that failed): the next parser is fresh. */
    if (c->req && c->req->http.state == TYCHO_HTTP_ERROR)
        c->closing = true;
    tycho_exchange_release(c);
}

/*
 * Reads len bytes of fd from off into out (a small file, or --request).
 * Returns TYCHO_ERR when the file is shorter than that now or cannot be read
 * (out then holds part of them: the caller cuts it back).
 */
static int read_file_into(struct tycho_buf *out, int fd, off_t off, size_t len)
{
    char *dst = tycho_buf_reserve(out, len);
    size_t got = 0;

    if (!dst)
        return TYCHO_ERR;
    while (got < len) {
        ssize_t n = pread(fd, dst + got, len - got, off + (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return TYCHO_ERR;
        got += (size_t)n;
    }
    out->len += len;
    return TYCHO_OK;
}

/*
 * The file body of r, whose head was just appended to tycho_conn_out(c) (which held
 * `before` bytes until then): read into the output when small (or for
 * --request), else the connection takes the descriptor and sends it after
 * what is queued. A small file that can no longer be read whole (it shrank
 * since its size was taken) turns the response into a 500 before any of it
 * goes out (a large one with no memory left to send it, a 503). Returns the
 * bytes the connection took to send itself (not in the output), for the
 * access log.
 */
static size_t queue_file(struct tycho_conn *c, struct tycho_req *r, size_t before,
                         bool keep_alive)
{
    struct tycho_buf *out = tycho_conn_out(c);
    struct tycho_conn_extra *x;
    size_t len = r->res_body_len;
    char id[150];

    if (c->local_out || len <= TYCHO_STATIC_SMALL_BYTES) {
        if (read_file_into(out, r->file_fd, (off_t)r->file_off, len) == TYCHO_OK)
            return 0;
        tycho_log_error("worker %d: %s %.*s: the file could not be read whole; answered 500",
                        c->ctx->worker_id, r->method, (int)r->path_len, r->path);
        out->len = before;            /* the head and any part of the body: not sent */
        r->status = 500;
        tycho_exchange_answer_simple(c, 500, tycho_answer_id_line(r, id, sizeof(id)), keep_alive,
                                     true);
        return 0;
    }
    if (!(x = tycho_conn_extra(c))) {
        /* No memory for the sending state: 503, as when no context is left, and close. */
        out->len = before;
        r->status = 503;
        tycho_stat_add(&c->ctx->stats.rejected[TYCHO_REJECT_OUT_OF_MEMORY], 1);
        tycho_exchange_answer_simple(c, 503, tycho_answer_id_line(r, id, sizeof(id)), false,
                                     true);
        return 0;
    }
    x->file_fd = r->file_fd;
    x->file_off = (off_t)r->file_off;
    x->file_left = len;
    c->sending_file = true;
    r->file_open = false;             /* the connection owns the descriptor now */
    return len;
}

/*
 * The end of a streamed response (its head and body went as they were
 * written): a body the handler still returned, then the last chunk. A
 * handler that failed after the head, or a client gone, leaves the body cut
 * short: the connection closes without the last chunk, so the client
 * cannot take the response for whole.
 */
static void end_stream(struct tycho_conn *c, struct tycho_req *r)
{
    struct tycho_buf *out = tycho_conn_out(c);
    size_t before = out->len;
    bool whole = !r->stream_failed && !r->stream_closed;
    bool keep_alive = whole && r->stream_keep_alive;

    if (whole && tycho_chunks_finish(r, out) < 0)
        keep_alive = false;
    if (!keep_alive)
        c->linger |= r->keep_alive;
    r->log_bytes += out->len - before;
    end_request(c, keep_alive);
}

/*
 * Whether what is left of a streamed body is gone, once its handler has
 * finished: the bytes already read (c->input) are parsed and dropped; a body
 * longer than that (or a refused one) cannot be skipped without reading it,
 * so the connection then closes, lingering, after the response.
 */
static bool body_finished(struct tycho_conn *c, struct tycho_req *r)
{
    if (!r->stream_body || r->body_done)
        return true;
    r->body_discard = true;
    if (!r->body_error)
        tycho_exchange_pull_body(c);
    if (!r->body_done)
        c->linger = true;             /* the client may still be sending it */
    return r->body_done;
}

/* Appends the handler's response to a request, then ends the request. */
static void respond(struct tycho_conn *c)
{
    struct tycho_req *r = c->req;
    bool keep_alive;
    size_t file_bytes = 0;

    if (!body_finished(c, r)) {
        r->res_flags |= TYCHO_RES_CLOSE;
        r->stream_keep_alive = false;
    }
    if (r->res_flags & TYCHO_RES_STREAM) {
        end_stream(c, r);
        return;
    }
    keep_alive = tycho_conn_keeps_alive(c);

    if (r->res_flags & TYCHO_RES_CLOSE) {
        keep_alive = false;
        c->linger |= r->keep_alive;   /* the client may already be sending its next request */
    }
    size_t before = tycho_conn_out(c)->len;

    tycho_gzip_respond(c->ctx, r);    /* Vary, and the body compressed when it should be */
    if (tycho_http_write_response(tycho_conn_out(c), r, tycho_conn_date(c), keep_alive) < 0) {
        keep_alive = false;
        c->closing = true;
    } else if ((r->res_flags & TYCHO_RES_FILE) && r->file_open && tycho_http_has_body(r) &&
               r->res_body_len > 0) {
        file_bytes = queue_file(c, r, before, keep_alive);
    }
    note_sent(c, r->status, before);
    r->log_bytes += file_bytes;
    end_request(c, keep_alive);
}

/* A handler that waited has finished (from the worker's loop, in a timer callback). */
static void on_request_done(struct tycho_req *r)
{
    struct tycho_conn *c = r->conn;

    assert(c->waiting && c->req == r && "only the request a connection waits for is done");
    c->waiting = false;
    respond(c);
    if (c->local_out)
        return;                       /* --request: run_local sees waiting is over */
    c->ctx->conn_resume(c);           /* requests kept back meanwhile, then what came */
}

/* Answers a request for a path the server answers itself (--health, --metrics), without Lua. */
static void answer_builtin(struct tycho_conn *c)
{
    bool keep_alive = tycho_conn_keeps_alive(c);
    size_t before = tycho_conn_out(c)->len;
    int status = tycho_answer_builtin(c->ctx, c->req, tycho_conn_date(c), tycho_conn_out(c),
                                      keep_alive);

    if (status < 0 || !keep_alive)
        c->closing = true;
    note_sent(c, status < 0 ? 503 : status, before);
    end_request(c, keep_alive);
}

/* Hands r to the application; its response is appended now or when it is done. */
static void run_app(struct tycho_conn *c)
{
    struct tycho_req *r = c->req;

    r->on_done = on_request_done;
    if (c->ctx->app.run(c->ctx->app.self, r) == TYCHO_RUN_PENDING) {
        c->waiting = true;
        return;
    }
    respond(c);
}

/*
 * A 405 the app answers itself: status 405 and the Allow line (allow,
 * "Allow: ...\r\n") set, then the app runs. False when out of memory (the
 * server answers).
 */
static bool run_miss_405(struct tycho_conn *c, const char *allow)
{
    struct tycho_req *r = c->req;
    size_t len = strlen(allow);
    char *line = tycho_arena_alloc(&r->arena, len);

    if (!line)
        return false;
    memcpy(line, allow, len);
    r->res_headers = line;
    r->res_headers_len = len;
    r->match.handler_id = TYCHO_HANDLER_WRONG_METHOD;
    r->match.nparams = 0;
    r->status = 405;
    run_app(c);
    return true;
}

/* The server's own 404. */
static void answer_404(struct tycho_conn *c)
{
    bool keep_alive = tycho_conn_keeps_alive(c);
    char id_line[150];

    tycho_exchange_answer_simple(c, 404, tycho_answer_id_line(c->req, id_line, sizeof(id_line)),
                                 keep_alive, !c->req->is_head);
    end_request(c, keep_alive);
}

/* A 405 with its Allow list: the app's to answer when it answers misses, else the server's. */
static void answer_405(struct tycho_conn *c)
{
    struct tycho_req *r = c->req;
    bool keep_alive = tycho_conn_keeps_alive(c);
    char allow[7 + 247 + 2 + 150];    /* "Allow: " list CRLF, then the id line */
    size_t used;

    memcpy(allow, "Allow: ", 7);
    tycho_router_allow(c->ctx->app.router, r->path, r->path_len, allow + 7,
                       sizeof(allow) - 7 - 2 - 150);   /* room for CRLF and the id line */
    strcat(allow, "\r\n");
    if (c->ctx->app.misses && run_miss_405(c, allow))
        return;
    used = strlen(allow);
    tycho_answer_id_line(r, allow + used, sizeof(allow) - used);
    tycho_exchange_answer_simple(c, 405, allow, keep_alive, !r->is_head);
    end_request(c, keep_alive);
}

/*
 * A request to a stream_body route that came without a body (no length, or
 * 0) never stopped at its head: it is streamed all the same, an empty body
 * at its end, so that req:read answers nil and req.body is nil as on any
 * request to that route.
 */
static void mark_empty_stream(struct tycho_conn *c, struct tycho_req *r)
{
    const struct tycho_app *app = &c->ctx->app;
    const struct tycho_route_opts *o;

    if (r->stream_body || !app->route_opts)
        return;
    o = app->route_opts(app->self, r->match.handler_id);
    if (o && o->stream_body) {
        r->stream_body = true;
        r->body_done = true;
    }
}

/*
 * Routes and runs a complete request. Its response is appended now, or, when
 * the handler waits (tycho.sleep), by on_request_done later; meanwhile the
 * connection reads nothing more.
 */
static void serve(struct tycho_conn *c)
{
    struct tycho_req *r = c->req;
    struct tycho_ctx *ctx = c->ctx;

    tycho_req_assign_id(r, &ctx->next_request_id);
    if (ctx->access_ev || ctx->cfg->metrics_path)
        r->started_us = tycho_now_us();
    if (tycho_answer_is_builtin(ctx, r)) {
        answer_builtin(c);
        return;
    }
    if (!r->routed)
        r->route_result = (unsigned char)tycho_router_find(ctx->app.router, r->method,
                                                           r->method_len, r->path, r->path_len,
                                                           &r->match);
    switch ((enum tycho_route_result)r->route_result) {
    case TYCHO_ROUTE_FOUND: {
        struct tycho_static *st = ctx->app.static_of(ctx->app.self, r->match.handler_id);
        r->route_label = r->match.pattern;
        if (st) {
            /* app.static with no middleware to run: no Lua at all (the handler would do this). */
            tycho_static_serve(st, r);
            respond(c);
            return;
        }
        mark_empty_stream(c, r);
        run_app(c);
        return;
    }
    case TYCHO_ROUTE_NOT_FOUND:
        if (ctx->app.misses) {
            r->match.handler_id = TYCHO_HANDLER_NOT_FOUND;
            r->match.nparams = 0;
            r->status = 404;
            run_app(c);
            return;
        }
        answer_404(c);
        return;
    case TYCHO_ROUTE_WRONG_METHOD:
        answer_405(c);
        return;
    }
}

/* Answers 100 Continue to a client that waits for it before sending its body. */
static void send_continue(struct tycho_conn *c, struct tycho_req *r)
{
    if (!r->expect_continue || r->continue_sent)
        return;
    r->continue_sent = true;
    if (tycho_buf_puts(tycho_conn_out(c), "HTTP/1.1 100 Continue\r\n\r\n") < 0)
        c->closing = true;
}

/* Refuses the request being read with status (400, 413, ...), then closes (lingering). */
static void refuse(struct tycho_conn *c, int status)
{
    tycho_stat_add(&c->ctx->stats.rejected[tycho_reject_of(status)], 1);
    tycho_exchange_answer_simple(c, status, "", false, true);
    c->linger = true;                 /* the rest of the request may still be coming */
}

/* The options of the route r goes to, routing it now (serve keeps the result); NULL: none. */
static const struct tycho_route_opts *route_opts_at_head(struct tycho_conn *c,
                                                         struct tycho_req *r)
{
    const struct tycho_app *app = &c->ctx->app;

    if (!app->route_opts || tycho_answer_is_builtin(c->ctx, r))
        return NULL;
    r->route_result = (unsigned char)tycho_router_find(app->router, r->method, r->method_len,
                                                       r->path, r->path_len, &r->match);
    r->routed = true;
    if (r->route_result != TYCHO_ROUTE_FOUND)
        return NULL;
    return app->route_opts(app->self, r->match.handler_id);
}

/*
 * The head of a request with a body is in. A stream_body route gets its
 * buffer and its handler is started by the caller (c->stream_start: the
 * bytes after the head must first be kept in c->input, where the handler's
 * reads find them); any other request reads on, its body into the arena.
 * A Content-Length over the route's limit is refused at once.
 */
static void at_head(struct tycho_conn *c)
{
    struct tycho_req *r = c->req;
    const struct tycho_route_opts *o = route_opts_at_head(c, r);
    bool stream = o && o->stream_body;
    size_t limit = stream ? o->max_body : c->ctx->cfg->max_body_bytes;

    if (r->content_length != ULLONG_MAX && r->content_length > limit) {
        refuse(c, 413);
        return;
    }
    if (!stream) {
        /*
         * Routed again once the body is in: a reload meanwhile swaps the
         * app, whose handler ids and router are not the old ones.
         */
        r->routed = false;
        send_continue(c, r);
        return;
    }
    if (!(r->sbuf = tycho_arena_alloc(&r->arena, TYCHO_BODY_BUF_BYTES))) {
        refuse(c, 503);
        return;
    }
    r->stream_body = true;
    r->max_body = o->max_body;
    c->waiting = true;                /* the handler holds the connection from now on */
    c->stream_start = true;
}

void tycho_exchange_start(struct tycho_conn *c)
{
    assert(c->stream_start && c->waiting);
    c->stream_start = false;
    c->waiting = false;
    serve(c);
}

void tycho_exchange_pull_body(struct tycho_conn *c)
{
    struct tycho_req *r = c->req;
    struct tycho_http *h = &r->http;

    while (c->input.len > 0 && !r->body_done && !r->body_error) {
        size_t room = r->body_discard ? c->input.len : TYCHO_BODY_BUF_BYTES - r->sbuf_len;
        size_t n;

        if (room == 0)
            return;
        if (r->sbuf_len == 0)
            r->sbuf_off = 0;
        else if (r->sbuf_off + r->sbuf_len + room > TYCHO_BODY_BUF_BYTES) {
            memmove(r->sbuf, r->sbuf + r->sbuf_off, r->sbuf_len);
            r->sbuf_off = 0;
        }
        n = tycho_http_parse(h, r, c->input.data + c->input.off,
                             c->input.len < room ? c->input.len : room);
        tycho_buf_consume(&c->input, n);
        if (h->state == TYCHO_HTTP_DONE)
            r->body_done = true;      /* the parser waits (paused) for the request's end */
        else if (h->state == TYCHO_HTTP_ERROR)
            r->body_error = h->error_status;
    }
    if (c->input.len == 0)
        tycho_buf_dispose(&c->input);
}

/*
 * Whether the output waiting is over the high-water mark, or a file body is
 * being sent, which nothing may follow until it has gone (never for --request).
 */
static bool output_full(struct tycho_conn *c)
{
    return !c->local_out &&
           (tycho_conn_out(c)->len >= TYCHO_CONN_OUT_HIGH_BYTES || c->sending_file);
}

/*
 * Parses and answers what arrived; returns how many bytes it used. It stops
 * early when the connection is closing (the rest is dropped) or when the
 * output waiting is over the high-water mark (the caller keeps the rest).
 */
size_t tycho_exchange_feed(struct tycho_conn *c, const char *data, size_t len)
{
    size_t total = len;

    while (len > 0 && !c->closing && !c->waiting && !output_full(c)) {
        size_t n;

        if (!c->req && !(c->req = take_req(c))) {
            char busy[TYCHO_BUSY_BYTES];
            /* If even this cannot be appended, the close says it all. */
            tycho_buf_append(tycho_conn_out(c), busy,
                             tycho_http_busy(busy, sizeof(busy), tycho_conn_date(c)));
            tycho_stat_add(&c->ctx->stats.rejected[TYCHO_REJECT_OUT_OF_MEMORY], 1);
            c->closing = true;
            c->linger = true;
            return total - len;
        }
        n = tycho_http_parse(&c->req->http, c->req, data, len);
        data += n;
        len -= n;
        switch (c->req->http.state) {
        case TYCHO_HTTP_HEAD:
            at_head(c);
            break;
        case TYCHO_HTTP_DONE:
            serve(c);
            break;
        case TYCHO_HTTP_ERROR:
            refuse(c, c->req->http.error_status);
            return total - len;
        case TYCHO_HTTP_MORE:
            if (!c->req->stream_body)
                send_continue(c, c->req);
            /*
             * Only blank lines so far: the context stays, so that its parser
             * goes on counting them against --max-header-bytes across reads
             * (and --header-timeout bounds how long they may come).
             */
            return total - len;
        }
    }
    /* Bytes after a request that closes the connection: the client is still sending. */
    if (len > 0 && c->closing)
        c->linger = true;
    return total - len;
}
