/*
 * conn.c: one client connection on one worker.
 *
 * Reads go into the worker's scratch buffer and through the parser, which
 * copies what it keeps into the request's arena. Requests are answered one at
 * a time in order (the parser pauses after each), and their responses are
 * appended to the worker's output scratch, which is written to the socket at
 * the end of the event. Only what the socket does not take is copied into the
 * connection's own pending buffer; while that is not empty the connection
 * stops reading (back-pressure on a client that does not read).
 *
 * A large file body (app.static) is the one piece of output that is not in
 * a buffer: the connection takes the response's descriptor and sends it with
 * sendfile(2) once the bytes before it (its head, earlier responses) have
 * gone, as much as the socket takes, then on writability. While it lasts
 * the connection counts as having output waiting, exactly like a non-empty
 * pending buffer: no later response is made (pipelined requests wait in the
 * input buffer), reads stop, and --write-timeout applies.
 */
#include "http/conn.h"
#include "core/config.h"
#include "core/list.h"
#include "core/log.h"
#include "core/metrics.h"
#include "http/answer.h"
#include "http/context.h"
#include "http/http.h"
#include "http/router.h"
#include "http/static.h"

#include <assert.h>
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <string.h>
#include <sys/sendfile.h>
#include <time.h>
#include <unistd.h>

/* Reads per event before yielding to other connections. */
#define READS_PER_EVENT 4
/*
 * Output a connection may have waiting before it stops answering pipelined
 * requests it has already read (their bytes wait in its input buffer). This
 * bounds the memory a client that sends many requests and reads nothing can
 * make the server hold.
 */
#define OUT_HIGH_BYTES (256 * 1024)
/* Input kept (unparsed) while a handler waits, before the connection stops reading. */
#define KEPT_INPUT_BYTES (64 * 1024)
/* How long a closing connection keeps reading (and dropping) what the client still sends. */
#define LINGER_MS 2000
/*
 * File bytes sent per event before yielding to other connections: a client
 * on a fast link (loopback) would otherwise keep the worker in one event for
 * a whole large file. The event stays armed for writability, so the next
 * turn of the loop goes on.
 */
#define FILE_BYTES_PER_EVENT (512 * 1024)

/* What the timeout of the connection's event means (c->timer). */
enum {
    TIMER_NONE,
    TIMER_FIRST,     /* a new connection waits for its first request: --header-timeout */
    TIMER_IDLE,      /* keep-alive, between requests: --idle-timeout */
    TIMER_DEADLINE,  /* a request is arriving: what is left of its head or body time */
    TIMER_WRITE,     /* output waits: --write-timeout without progress */
    TIMER_LINGER     /* lingering close */
};

/* A client connection; it belongs to its worker's thread. */
struct tycho_conn {
    void *_pool_next;                  /* the pool's link while free */
    struct tycho_ctx *ctx;             /* borrowed: the owning worker's context */
    struct tycho_list link;            /* in ctx->conns while open */
    struct tycho_req *req;             /* from the worker's pool while a request is in progress */
    struct tycho_buf *local_out;       /* borrowed: --request output, else NULL */
    int fd;                            /* owned; -1 for --request */
    unsigned nrequests;                /* answered on this connection */
    short ev_what;                     /* EV_READ or EV_WRITE: what ev waits for; 0: none */
    unsigned char timer;               /* TIMER_*: what ev's timeout stands for now */
    unsigned char peer_family;         /* AF_INET or AF_INET6 */
    bool closing;                      /* close once pending output is written */
    bool peer_eof;                     /* the client closed its side */
    bool linger;                       /* input may still be coming: close lingering */
    bool lingering;                    /* write side shut; dropping input until EOF or timeout */
    bool nodelay;                      /* TCP_NODELAY is set */
    bool started;                      /* bytes of the next request came (blank lines too) */
    bool waiting;                      /* its handler waits (tycho.sleep); nothing is read */
    bool sending_file;                 /* file_fd is open and its bytes are the next output */
    int file_fd;                       /* owned while sending_file: a file body (app.static) */
    off_t file_off;                    /* the next file byte to send */
    size_t file_left;                  /* file bytes still to send */
    unsigned char peer_addr[16];
    time_t linger_until;               /* lingering ends by then, however much keeps coming */
    long born_ms;                      /* when it was accepted (worker clock) */
    long req_started_ms;               /* when the next request's first bytes came */
    long body_started_ms;              /* when its head was complete; 0 before */
    long write_wait_ms;                /* when output began to wait; 0 when none waits */
    struct event ev;                   /* embedded, so a connection is one allocation */
    struct tycho_http http;            /* parser state */
    struct tycho_buf pending;          /* owned: output the socket has not taken */
    struct tycho_buf input;            /* owned: read but not parsed yet (back-pressure) */
};

size_t tycho_conn_bytes(void)
{
    return sizeof(struct tycho_conn);
}

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

size_t tycho_conn_peer(const struct tycho_conn *c, char *buf, size_t buf_len)
{
    if (c && c->fd >= 0 && c->peer_family == AF_INET && buf_len >= 16)
        return ipv4_text(c->peer_addr, buf);
    if (!c || c->fd < 0 || !inet_ntop(c->peer_family, c->peer_addr, buf, (socklen_t)buf_len))
        snprintf(buf, buf_len, "127.0.0.1");
    return strlen(buf);
}

/* Whether output waits for the socket: bytes in pending, or a file body being sent. */
static bool output_waits(const struct tycho_conn *c)
{
    return c->pending.len > 0 || c->sending_file;
}

/* Where responses go now: after pending output, so order is kept. */
static struct tycho_buf *conn_out(struct tycho_conn *c)
{
    if (c->local_out)
        return c->local_out;
    return c->pending.len ? &c->pending : &c->ctx->out;
}

static struct tycho_req *take_req(struct tycho_conn *c)
{
    struct tycho_req *r = tycho_pool_get(&c->ctx->req_pool);

    if (r)
        r->conn = c;
    if (!c->started) {
        /* Blank lines before a request count too: they cannot hold the connection open. */
        c->started = true;
        c->req_started_ms = tycho_ctx_now_ms(c->ctx);
        c->body_started_ms = 0;
    }
    return r;
}

static void release_req(struct tycho_conn *c)
{
    if (!c->req)
        return;
    if (c->req->app) {
        /* The connection goes while its handler waits: that coroutine is never resumed. */
        c->ctx->app.cancel(c->req);
        c->waiting = false;
    }
    tycho_req_reset(c->req);
    tycho_pool_put(&c->ctx->req_pool, c->req);
    c->req = NULL;
}

/* Records what was sent for r (the access log): status, and the bytes since `before`. */
static void note_sent(struct tycho_conn *c, int status, size_t before)
{
    if (c->req) {
        c->req->log_status = status;
        c->req->log_bytes = conn_out(c)->len - before;
    }
}

/* Answers a request the server handles itself (errors, 404, 405). */
static void answer_simple(struct tycho_conn *c, int status, const char *extra, bool keep_alive,
                          bool with_body)
{
    size_t before = conn_out(c)->len;

    if (tycho_http_write_simple(conn_out(c), status, extra, tycho_ctx_date(c->ctx), keep_alive,
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

/*
 * Whether this request must be the connection's last: --max-requests-per-conn
 * reached, --max-conn-lifetime over, or the server is stopping. Its response
 * then says Connection: close.
 */
static bool last_request(const struct tycho_conn *c)
{
    const struct tycho_config *cfg = c->ctx->cfg;

    return c->ctx->draining ||
           (cfg->max_requests_per_conn && c->nrequests + 1 >= (unsigned)cfg->max_requests_per_conn) ||
           (cfg->max_conn_lifetime_ms &&
            tycho_ctx_now_ms(c->ctx) - c->born_ms >= cfg->max_conn_lifetime_ms);
}

/* The access log line and the metrics of c's request, which has been answered. */
static void account(struct tycho_conn *c)
{
    char remote[64] = "";

    if (c->ctx->access_ev)
        tycho_conn_peer(c, remote, sizeof(remote));
    tycho_answer_account(c->ctx, c->req, remote);
}

/* The end of every request: the access log, metrics, keep-alive or close, counters, the context back to its pool. */
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
    release_req(c);
    tycho_http_next(&c->http);
}

/* Whether the connection stays open after this request (before the handler's say). */
static bool keeps_alive(struct tycho_conn *c)
{
    struct tycho_req *r = c->req;
    bool keep_alive = r->keep_alive && !last_request(c);

    /* Closing a connection the client meant to keep: its next request may be on the way. */
    c->linger |= r->keep_alive && !keep_alive;
    return keep_alive;
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
 * The file body of r, whose head was just appended to conn_out(c) (which held
 * `before` bytes until then): read into the output when small (or for
 * --request), else the connection takes the descriptor and sends it after
 * what is queued. A small file that can no longer be read whole (it shrank
 * since its size was taken) turns the response into a 500 before any of it
 * goes out. Returns the bytes the connection took to send itself (not in
 * the output), for the access log.
 */
static size_t queue_file(struct tycho_conn *c, struct tycho_req *r, size_t before,
                         bool keep_alive)
{
    struct tycho_buf *out = conn_out(c);
    size_t len = r->res_body_len;
    char id[150];

    if (c->local_out || len <= TYCHO_STATIC_SMALL_BYTES) {
        if (read_file_into(out, r->file_fd, (off_t)r->file_off, len) == TYCHO_OK)
            return 0;
        tycho_log_error("worker %d: %s %.*s: the file could not be read whole; answered 500",
                        c->ctx->worker_id, r->method, (int)r->path_len, r->path);
        out->len = before;            /* the head and any part of the body: not sent */
        r->status = 500;
        answer_simple(c, 500, tycho_answer_id_line(r, id, sizeof(id)), keep_alive, true);
        return 0;
    }
    c->file_fd = r->file_fd;
    c->file_off = (off_t)r->file_off;
    c->file_left = len;
    c->sending_file = true;
    r->file_open = false;             /* the connection owns the descriptor now */
    return len;
}

/* Appends the handler's response to a request, then ends the request. */
static void respond(struct tycho_conn *c)
{
    struct tycho_req *r = c->req;
    bool keep_alive = keeps_alive(c);
    size_t file_bytes = 0;

    if (r->res_flags & TYCHO_RES_CLOSE) {
        keep_alive = false;
        c->linger |= r->keep_alive;   /* the client may already be sending its next request */
    }
    size_t before = conn_out(c)->len;

    if (tycho_http_write_response(conn_out(c), r, tycho_ctx_date(c->ctx), keep_alive) < 0) {
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

static void read_and_serve(struct tycho_conn *c);

/* A handler that waited has finished (from the worker's loop, in a timer callback). */
static void on_request_done(struct tycho_req *r)
{
    struct tycho_conn *c = r->conn;

    assert(c->waiting && c->req == r && "only the request a connection waits for is done");
    c->waiting = false;
    respond(c);
    if (c->local_out)
        return;                       /* --request: run_local sees waiting is over */
    read_and_serve(c);                /* requests kept back meanwhile, then what came */
}

/* Answers a request for a path the server answers itself (--health, --metrics), without Lua. */
static void answer_builtin(struct tycho_conn *c)
{
    bool keep_alive = keeps_alive(c);
    size_t before = conn_out(c)->len;
    int status = tycho_answer_builtin(c->ctx, c->req, conn_out(c), keep_alive);

    if (status < 0 || !keep_alive)
        c->closing = true;
    note_sent(c, status < 0 ? 503 : status, before);
    end_request(c, keep_alive);
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
    char allow[7 + 247 + 2 + 150];    /* "Allow: " list CRLF, then the id line */

    tycho_req_assign_id(r, &ctx->next_request_id);
    if (ctx->access_ev || ctx->cfg->metrics_path)
        r->started_us = tycho_now_us();
    if (tycho_answer_is_builtin(ctx, r)) {
        answer_builtin(c);
        return;
    }
    switch (tycho_router_find(ctx->app.router, r->method, r->method_len, r->path,
                              r->path_len, &r->match)) {
    case TYCHO_ROUTE_FOUND: {
        struct tycho_static *st = ctx->app.static_of(ctx->app.self, r->match.handler_id);
        r->route_label = r->match.pattern;
        if (st) {
            /* app.static with no middleware to run: no Lua at all (the handler would do this). */
            tycho_static_serve(st, r);
            respond(c);
            return;
        }
        r->on_done = on_request_done;
        if (ctx->app.run(ctx->app.self, r) == TYCHO_RUN_PENDING) {
            c->waiting = true;
            return;
        }
        respond(c);
        return;
    }
    case TYCHO_ROUTE_NOT_FOUND: {
        bool keep_alive = keeps_alive(c);
        answer_simple(c, 404, tycho_answer_id_line(r, allow, sizeof(allow)), keep_alive, !r->is_head);
        end_request(c, keep_alive);
        return;
    }
    case TYCHO_ROUTE_WRONG_METHOD: {
        bool keep_alive = keeps_alive(c);
        size_t used;
        memcpy(allow, "Allow: ", 7);
        tycho_router_allow(ctx->app.router, r->path, r->path_len, allow + 7,
                           sizeof(allow) - 7 - 2 - 150);   /* room for CRLF and the id line */
        strcat(allow, "\r\n");
        used = strlen(allow);
        tycho_answer_id_line(r, allow + used, sizeof(allow) - used);
        answer_simple(c, 405, allow, keep_alive, !r->is_head);
        end_request(c, keep_alive);
        return;
    }
    }
}

/*
 * Whether the output waiting is over the high-water mark, or a file body is
 * being sent, which nothing may follow until it has gone (never for --request).
 */
static bool output_full(struct tycho_conn *c)
{
    return !c->local_out && (conn_out(c)->len >= OUT_HIGH_BYTES || c->sending_file);
}

/*
 * Parses and answers what arrived; returns how many bytes it used. It stops
 * early when the connection is closing (the rest is dropped) or when the
 * output waiting is over the high-water mark (the caller keeps the rest).
 */
static size_t feed(struct tycho_conn *c, const char *data, size_t len)
{
    size_t total = len;

    while (len > 0 && !c->closing && !c->waiting && !output_full(c)) {
        size_t n;

        if (!c->req && !(c->req = take_req(c))) {
            char busy[TYCHO_BUSY_BYTES];
            /* If even this cannot be appended, the close says it all. */
            tycho_buf_append(conn_out(c), busy,
                             tycho_http_busy(busy, sizeof(busy), tycho_ctx_date(c->ctx)));
            tycho_stat_add(&c->ctx->stats.rejected[TYCHO_REJECT_OUT_OF_MEMORY], 1);
            c->closing = true;
            c->linger = true;
            return total - len;
        }
        n = tycho_http_parse(&c->http, c->req, data, len);
        data += n;
        len -= n;
        switch (c->http.state) {
        case TYCHO_HTTP_DONE:
            serve(c);
            break;
        case TYCHO_HTTP_ERROR:
            tycho_stat_add(&c->ctx->stats.rejected[tycho_reject_of(c->http.error_status)], 1);
            answer_simple(c, c->http.error_status, "", false, true);
            c->linger = true;         /* the rest of the bad request may still be coming */
            return total - len;
        case TYCHO_HTTP_MORE:
            if (c->req->expect_continue && !c->req->continue_sent) {
                c->req->continue_sent = true;
                if (tycho_buf_puts(conn_out(c), "HTTP/1.1 100 Continue\r\n\r\n") < 0)
                    c->closing = true;
            }
            if (!c->http.in_message)
                release_req(c);       /* only blank lines so far */
            return total - len;
        }
    }
    /* Bytes after a request that closes the connection: the client is still sending. */
    if (len > 0 && c->closing)
        c->linger = true;
    return total - len;
}

/*
 * After a send or sendfile that took nothing (n <= 0): 0 to try again
 * (EINTR), 1 when the socket is full for now, -1 when the peer is gone.
 */
static int send_stalled(ssize_t n)
{
    if (n < 0 && errno == EINTR)
        return 0;
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 1 : -1;
}

/*
 * Sends as much of buf as the socket takes. more: a file body follows, so
 * the kernel may hold a partial segment for it (MSG_MORE) instead of
 * sending the head alone (the socket has TCP_NODELAY once kept alive).
 * Returns TYCHO_ERR when the peer is gone.
 */
static int send_some(struct tycho_conn *c, struct tycho_buf *buf, bool more)
{
    int stalled;

    while (buf->len > 0) {
        ssize_t n = send(c->fd, buf->data + buf->off, buf->len,
                         MSG_NOSIGNAL | (more ? MSG_MORE : 0));
        if (n > 0) {
            tycho_buf_consume(buf, (size_t)n);
            tycho_stat_add(&c->ctx->stats.bytes_out, (unsigned long)n);
        } else if ((stalled = send_stalled(n)) != 0) {
            return stalled > 0 ? TYCHO_OK : TYCHO_ERR;
        }
    }
    return TYCHO_OK;
}

/*
 * Sends the file body from where it is, as much as the socket takes and at
 * most FILE_BYTES_PER_EVENT; closes the file once it has gone. Returns
 * TYCHO_ERR when the peer is gone or the file ends early (it shrank after
 * its length was sent: the connection must close).
 */
static int send_file(struct tycho_conn *c)
{
    size_t budget = FILE_BYTES_PER_EVENT;
    int stalled;

    while (c->file_left > 0 && budget > 0) {
        ssize_t n = sendfile(c->fd, c->file_fd, &c->file_off,
                             c->file_left < budget ? c->file_left : budget);
        if (n > 0) {
            c->file_left -= (size_t)n;
            budget -= (size_t)n;
            tycho_stat_add(&c->ctx->stats.bytes_out, (unsigned long)n);
        } else if ((stalled = send_stalled(n)) != 0) {
            return stalled > 0 ? TYCHO_OK : TYCHO_ERR;
        }
    }
    if (c->file_left == 0) {
        close(c->file_fd);
        c->sending_file = false;
    }
    return TYCHO_OK;
}

/*
 * Writes the worker's output scratch, keeping what the socket did not take,
 * or else what pending holds; then the file body, once nothing is before it.
 */
static int flush_out(struct tycho_conn *c)
{
    struct tycho_buf *out = &c->ctx->out;
    int rc = TYCHO_OK;

    if (out->len > 0) {
        rc = send_some(c, out, c->sending_file);
        if (rc == TYCHO_OK && out->len > 0 &&
            tycho_buf_append(&c->pending, out->data + out->off, out->len) < 0)
            rc = TYCHO_ERR;
        out->len = out->off = 0;
    } else if (c->pending.len > 0) {
        rc = send_some(c, &c->pending, c->sending_file);
        if (c->pending.len == 0)
            tycho_buf_dispose(&c->pending); /* an idle connection holds no buffer */
    }
    if (rc == TYCHO_OK && c->sending_file && c->pending.len == 0)
        rc = send_file(c);
    return rc;
}

static void on_event(evutil_socket_t fd, short what, void *arg);

/*
 * Makes ev wait for what (EV_READ or EV_WRITE) with the timeout tv standing
 * for timer. The event is persistent, so libevent re-arms the timeout after
 * each callback (an inactivity timeout); only a deadline (TIMER_DEADLINE) is
 * re-added with what is left of it each time.
 */
static int arm(struct tycho_conn *c, short what, unsigned char timer, const struct timeval *tv)
{
    if (c->ev_what != what) {
        if (c->ev_what)
            event_del(&c->ev);
        c->ev_what = 0;
        c->timer = TIMER_NONE;
        if (event_assign(&c->ev, c->ctx->base, c->fd, what | EV_PERSIST, on_event, c) < 0)
            return TYCHO_ERR;
    } else if (c->timer == timer && timer != TIMER_DEADLINE) {
        return TYCHO_OK;
    }
    if (event_add(&c->ev, tv) < 0)
        return TYCHO_ERR;
    c->ev_what = what;
    c->timer = timer;
    return TYCHO_OK;
}

/* Sets the timeout for what the connection waits for now (it has no pending output). */
static int arm_read(struct tycho_conn *c)
{
    struct tycho_ctx *ctx = c->ctx;
    const struct tycho_config *cfg = ctx->cfg;
    long now, deadline;
    struct timeval left;

    if (!c->started)
        return arm(c, EV_READ, c->nrequests ? TIMER_IDLE : TIMER_FIRST,
                   c->nrequests ? ctx->idle_tv : ctx->first_tv);
    now = tycho_ctx_now_ms(ctx);
    if (c->req && c->http.headers_done) {
        if (!c->body_started_ms)
            c->body_started_ms = now;
        deadline = c->body_started_ms + cfg->body_timeout_ms;
    } else {
        deadline = c->req_started_ms + cfg->header_timeout_ms;
    }
    deadline = deadline > now ? deadline - now : 0;
    left.tv_sec = deadline / 1000;
    left.tv_usec = (deadline % 1000) * 1000;
    return arm(c, EV_READ, TIMER_DEADLINE, &left);
}

/* The peer address as a sockaddr (port 0), from what set_peer kept. */
static const struct sockaddr *peer_sockaddr(const struct tycho_conn *c, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    ss->ss_family = c->peer_family;
    if (c->peer_family == AF_INET6)
        memcpy(&((struct sockaddr_in6 *)ss)->sin6_addr, c->peer_addr, 16);
    else
        memcpy(&((struct sockaddr_in *)ss)->sin_addr, c->peer_addr, 4);
    return (const struct sockaddr *)ss;
}

static void close_conn(struct tycho_conn *c)
{
    struct tycho_ctx *ctx = c->ctx;

    assert(ctx && "a connection closed twice (it is back in the pool)");
    if (c->ev_what)
        event_del(&c->ev);
    if (ctx->draining && tycho_list_first(&ctx->conns) == &c->link && c->link.next == &ctx->conns)
        event_base_loopbreak(ctx->base); /* the last connection of a stopping worker */
    if (c->fd >= 0) {
        struct sockaddr_storage peer;
        if (tycho_log_min_level == TYCHO_LOG_DEBUG) {
            char remote[64];
            tycho_conn_peer(c, remote, sizeof(remote));
            tycho_log(TYCHO_LOG_DEBUG, "worker %d: connection from %s closed after %u requests",
                      ctx->worker_id, remote, c->nrequests);
        }
        close(c->fd);
        ctx->conn_gone(ctx, peer_sockaddr(c, &peer));
    }
    release_req(c);
    if (c->sending_file)
        close(c->file_fd);            /* a client gone (or timed out) mid-file */
    tycho_buf_dispose(&c->pending);
    tycho_buf_dispose(&c->input);
    tycho_list_remove(&c->link);
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    tycho_pool_put(&ctx->conn_pool, c);
}

/*
 * Closes a connection the server decided to close, after its last response.
 * Closing a socket with unread input makes the kernel send a reset, which can
 * destroy the response before the client reads it. So when input may still be
 * coming (an error mid-request, bytes dropped after a closing request) and the
 * client has not closed yet, shut the write side and drop what still comes in
 * for a moment (a lingering close, as nginx does). A client that asked for the
 * close and sent nothing more is closed at once.
 */
static void finish(struct tycho_conn *c)
{
    struct timeval linger = {LINGER_MS / 1000, (LINGER_MS % 1000) * 1000};

    if (c->fd < 0 || !c->linger || c->peer_eof || shutdown(c->fd, SHUT_WR) < 0) {
        close_conn(c);
        return;
    }
    c->lingering = true;
    c->linger_until = time(NULL) + (LINGER_MS + 999) / 1000;
    if (arm(c, EV_READ, TIMER_LINGER, &linger) < 0)
        close_conn(c);
}

/*
 * Lingering: reads and drops input; closes on EOF, error, a quiet spell or
 * the deadline (each read re-arms the event's timeout, so a client dripping
 * bytes would otherwise keep it open).
 */
static void drain(struct tycho_conn *c, short what)
{
    for (int i = 0; i < READS_PER_EVENT && !(what & EV_TIMEOUT) && time(NULL) < c->linger_until;
         i++) {
        ssize_t n = recv(c->fd, c->ctx->rbuf, TYCHO_READ_BYTES, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n == 0 || (n < 0 && errno != EINTR))
            break;
    }
    close_conn(c);
}

/* Reads what is there (a bounded number of times) and answers it. */
/* A request partly read, requests read and kept back, or output not yet taken. */
static bool in_flight(const struct tycho_conn *c)
{
    return (c->req && c->http.in_message) || c->input.len > 0 || output_waits(c);
}

/*
 * Output has drained. The server did not read while it waited, so that time
 * does not count against the request being received: its clock moves on.
 */
static void resume_clock(struct tycho_conn *c)
{
    long waited;

    if (!c->write_wait_ms)
        return;
    waited = tycho_ctx_now_ms(c->ctx) - c->write_wait_ms;
    c->write_wait_ms = 0;
    if (waited <= 0)
        return;
    c->req_started_ms += waited;
    if (c->body_started_ms)
        c->body_started_ms += waited;
}

/* After output was written: what the connection waits for next, or its end. */
static void next_wait(struct tycho_conn *c)
{
    if (output_waits(c)) {
        if (!c->write_wait_ms)
            c->write_wait_ms = tycho_ctx_now_ms(c->ctx);
        if (arm(c, EV_WRITE, TIMER_WRITE, c->ctx->write_tv) < 0)
            close_conn(c);
        return;
    }
    resume_clock(c);                  /* the output has drained, however that happened */
    if (c->closing) {
        finish(c);
    } else if (c->waiting) {
        /* No timeout while the handler works; reading only notices the client leaving. */
        if (arm(c, EV_READ, TIMER_NONE, NULL) < 0)
            close_conn(c);
    } else if (c->ctx->draining && !in_flight(c)) {
        c->linger = true;             /* stopping: nothing in flight here */
        finish(c);
    } else if (arm_read(c) < 0) {
        close_conn(c);
    } else if (c->input.len > 0) {
        /* The socket took everything: go on with the kept requests on the next turn. */
        event_active(&c->ev, EV_READ, 0);
    }
}

/* Answers requests read earlier and kept back while output was over the mark. */
static void feed_kept_input(struct tycho_conn *c)
{
    tycho_buf_consume(&c->input, feed(c, c->input.data + c->input.off, c->input.len));
    if (c->input.len == 0 || c->closing)
        tycho_buf_dispose(&c->input);
}

static void read_and_serve(struct tycho_conn *c)
{
    struct tycho_ctx *ctx = c->ctx;

    if (c->input.len > 0 && !c->waiting)
        feed_kept_input(c);
    /* No new reads while earlier input or a handler waits: that is the back-pressure. */
    for (int i = 0; i < READS_PER_EVENT && !c->closing && !c->waiting && c->input.len == 0; i++) {
        ssize_t n = recv(c->fd, ctx->rbuf, TYCHO_READ_BYTES, 0);
        if (n > 0) {
            size_t used;
            tycho_stat_add(&ctx->stats.bytes_in, (unsigned long)n);
            used = feed(c, ctx->rbuf, (size_t)n);
            /* Kept when feeding stopped for back-pressure or a waiting handler. */
            if (used < (size_t)n && !c->closing &&
                tycho_buf_append(&c->input, ctx->rbuf + used, (size_t)n - used) < 0)
                c->closing = true;    /* no memory to keep it: answer what we have, close */
            if ((size_t)n < TYCHO_READ_BYTES)
                break;
        } else if (n == 0) {
            c->closing = true;        /* the client is done; answer what was read, then close */
            c->peer_eof = true;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else {
            ctx->out.len = ctx->out.off = 0; /* reset or error: nobody to answer */
            close_conn(c);
            return;
        }
    }
    if (flush_out(c) < 0) {
        close_conn(c);
        return;
    }
    next_wait(c);
}

/*
 * The connection's timeout fired: a request that did not arrive in time gets
 * 408 and a lingering close; an idle connection, or one whose client takes
 * no output, is closed.
 */
static void timed_out(struct tycho_conn *c)
{
    struct tycho_ctx *ctx = c->ctx;

    if (c->timer == TIMER_DEADLINE && c->req && c->http.in_message) {
        /* A request that did not arrive in time (blank lines alone just close). */
        ctx->timeouts++;
        tycho_stat_add(&ctx->stats.rejected[TYCHO_REJECT_TIMEOUT], 1);
        answer_simple(c, 408, "", false, true);
        c->linger = true;
        if (flush_out(c) < 0) {
            close_conn(c);
            return;
        }
        next_wait(c);
        return;
    }
    if (c->timer == TIMER_WRITE)
        ctx->timeouts++;
    close_conn(c);
}


/*
 * Readable while a handler waits: bytes (pipelined requests) are kept, up
 * to a bound; a client that has gone (end of input, reset) closes the
 * connection, which abandons the handler.
 */
static void watch_while_waiting(struct tycho_conn *c)
{
    struct tycho_ctx *ctx = c->ctx;
    ssize_t n = recv(c->fd, ctx->rbuf, TYCHO_READ_BYTES, 0);

    if (n > 0) {
        tycho_stat_add(&ctx->stats.bytes_in, (unsigned long)n);
        if (tycho_buf_append(&c->input, ctx->rbuf, (size_t)n) < 0)
            close_conn(c);
        else if (c->input.len >= KEPT_INPUT_BYTES && c->ev_what) {
            event_del(&c->ev);        /* enough kept: the rest waits in the kernel */
            c->ev_what = 0;
            c->timer = TIMER_NONE;
        }
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    close_conn(c);                    /* the client left: nobody to answer */
}

static void on_event(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_conn *c = arg;

    (void)fd;
    if (c->lingering) {
        drain(c, what);
        return;
    }
    if (what & EV_TIMEOUT) {
        timed_out(c);
        return;
    }
    if ((what & EV_READ) && c->waiting) {
        watch_while_waiting(c);
        return;
    }
    if (what & EV_READ) {
        read_and_serve(c);
        return;
    }
    /* EV_WRITE: the socket takes output again. */
    if (flush_out(c) < 0) {
        close_conn(c);
    } else if (!output_waits(c) && !c->closing && !c->waiting) {
        resume_clock(c);
        read_and_serve(c);            /* kept-back requests, and what came meanwhile */
    } else {
        next_wait(c);
    }
}

/* Remembers the peer address compactly (the connection keeps no sockaddr_storage). */
static void set_peer(struct tycho_conn *c, const struct sockaddr *peer)
{
    c->peer_family = (unsigned char)peer->sa_family;
    if (peer->sa_family == AF_INET6)
        memcpy(c->peer_addr, &((const struct sockaddr_in6 *)peer)->sin6_addr, 16);
    else
        memcpy(c->peer_addr, &((const struct sockaddr_in *)peer)->sin_addr, 4);
}

void tycho_conn_open(struct tycho_ctx *ctx, int fd, const struct sockaddr *peer,
                     socklen_t peer_len)
{
    struct tycho_conn *c = tycho_pool_get(&ctx->conn_pool);

    (void)peer_len;
    if (!c) {
        char busy[TYCHO_BUSY_BYTES];
        /* A failed send means the client is gone already. */
        send(fd, busy, tycho_http_busy(busy, sizeof(busy), tycho_ctx_date(ctx)), MSG_NOSIGNAL);
        close(fd);
        ctx->conn_gone(ctx, peer);
        return;
    }
    c->ctx = ctx;
    c->fd = fd;
    c->born_ms = tycho_ctx_now_ms(ctx);
    tycho_stat_add(&ctx->stats.conns, 1);
    set_peer(c, peer);
    if (tycho_log_min_level == TYCHO_LOG_DEBUG) {
        char remote[64];
        tycho_conn_peer(c, remote, sizeof(remote));
        tycho_log(TYCHO_LOG_DEBUG, "worker %d: connection from %s", ctx->worker_id, remote);
    }
    tycho_http_init(&c->http, ctx->cfg);
    tycho_list_push_front(&ctx->conns, &c->link);
    if (arm(c, EV_READ, TIMER_FIRST, ctx->first_tv) < 0) {
        close_conn(c);
        return;
    }
    /* Clients send right after connecting: the request is usually here already. */
    read_and_serve(c);
}

void tycho_conn_close_all(struct tycho_ctx *ctx)
{
    struct tycho_list *first;

    while ((first = tycho_list_first(&ctx->conns)))
        close_conn(tycho_container_of(first, struct tycho_conn, link));
}

void tycho_conn_drain(struct tycho_ctx *ctx)
{
    struct tycho_list *node, *next;

    ctx->draining = true;
    tycho_list_each_safe(node, next, &ctx->conns) {
        struct tycho_conn *c = tycho_container_of(node, struct tycho_conn, link);
        if (c->lingering || in_flight(c))
            continue;                 /* it finishes (or its linger ends) by itself */
        c->linger = true;             /* its client may be sending a request right now */
        finish(c);
    }
    if (tycho_list_empty(&ctx->conns))
        event_base_loopbreak(ctx->base);
}

static void on_local_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(bool *)arg = true;
}

int tycho_conn_run_local(struct tycho_ctx *ctx, const char *bytes, size_t len,
                         struct tycho_buf *out, long timeout_ms)
{
    struct tycho_conn *c = tycho_pool_get(&ctx->conn_pool);
    struct event deadline;
    bool late = false, armed = false;
    int rc = TYCHO_OK;

    if (!c)
        return TYCHO_ERR;
    c->ctx = ctx;
    c->fd = -1;
    tycho_list_init(&c->link);        /* not among the open connections */
    c->local_out = out;
    c->born_ms = tycho_ctx_now_ms(ctx);
    tycho_http_init(&c->http, ctx->cfg);
    /* What is ready to run first: the app.on_worker_start functions. */
    event_base_loop(ctx->base, EVLOOP_NONBLOCK);
    feed(c, bytes, len);
    if (c->waiting && timeout_ms > 0) {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        armed = evtimer_assign(&deadline, ctx->base, on_local_deadline, &late) == 0 &&
                evtimer_add(&deadline, &tv) == 0;
    }
    /* A handler that waits: run the worker's loop until it is done (or too late). */
    while (c->waiting && !late && event_base_loop(ctx->base, EVLOOP_ONCE) == 0) {
    }
    if (armed)
        evtimer_del(&deadline);
    if (c->waiting)
        rc = TYCHO_CONN_LATE;         /* close_conn abandons the handler */
    else if (c->req && c->http.in_message && !c->closing)
        answer_simple(c, 400, "", false, true); /* the bytes ended mid-request */
    close_conn(c);
    return rc;
}
