/*
 * conn.c: one client connection on one worker: its socket. The requests it
 * carries are exchange.c's (conn_int.h); this half reads, writes, sends file
 * bodies, keeps the timeouts and closes.
 *
 * Reads go into the worker's scratch buffer and through the parser
 * (exchange.c), which copies what it keeps into the request's arena. Requests are answered one at
 * a time in order (the parser pauses after each), and their responses are
 * appended to the worker's output scratch, which is written to the socket at
 * the end of the event. Only what the socket does not take is copied into the
 * connection's own pending buffer; while that is not empty the connection
 * stops reading (back-pressure on a client that does not read).
 *
 * A connection that came on --tls-port has an SSL (http/tls.h): its reads
 * and writes go through it (conn_recv, conn_send), the handshake running in
 * its first reads, under --header-timeout counted from the connect. OpenSSL
 * frees its record buffers between records (SSL_MODE_RELEASE_BUFFERS), so an
 * idle TLS connection holds no buffer either; its file bodies are read and
 * written through the SSL (no sendfile).
 *
 * A connection on a --proxy-protocol listener begins with a PROXY header
 * (core/proxyproto.h) from a peer in --trusted-proxies (another peer is closed
 * at once): read_proxy_header peeks at it and takes exactly its bytes from the
 * socket, before any other read (the TLS handshake's included), then makes its
 * source the connection's peer and counts it against --max-conns-per-ip
 * (ctx->count_ip; c->ip_uncounted until then: the close gives back no
 * address before, exactly that one after). A connection
 * without a good header within --header-timeout is closed unanswered.
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
#include "core/proxies.h"
#include "core/proxyproto.h"
#include "http/conn_int.h"
#include "http/context.h"
#include "http/http.h"
#include "http/tls.h"

#include <assert.h>
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <time.h>
#include <unistd.h>

/* Reads per event before yielding to other connections. */
/* How long a new connection that has sent nothing may wait for its first request in a stop. */
#define DRAIN_GRACE_MS 1000
#define READS_PER_EVENT 4
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
    TIMER_BODY,      /* a handler reads its body: --body-timeout without a byte */
    TIMER_LINGER     /* lingering close */
};

/*
 * Every open connection pays for this struct, an idle one mostly for it
 * (the aim: at most 400 bytes of RSS per idle keep-alive connection; malloc
 * adds 8 bytes and rounds to 16). A field that only some connections need
 * goes in struct tycho_conn_extra.
 */
_Static_assert(sizeof(struct tycho_conn) <= 296, "struct tycho_conn grew: see conn_int.h");

size_t tycho_conn_bytes(void)
{
    return sizeof(struct tycho_conn);
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

/* A TLS handshake has ended: counted once (tycho_tls_handshakes_total, _resumed_total). */
static void count_handshake(struct tycho_conn *c)
{
    c->tls_counted = true;
    tycho_stat_add(&c->ctx->stats.tls_handshakes, 1);
    if (SSL_session_reused(c->extra->ssl))
        tycho_stat_add(&c->ctx->stats.tls_resumed, 1);
}

/*
 * Reads through the connection's TLS as recv(2) does: n > 0 bytes, 0 at the
 * end of input (close_notify, or a plain close), -1 with errno: EAGAIN when
 * nothing can be read now (the handshake waiting for the client included),
 * ECONNRESET for a TLS error (a failed handshake, a bad record).
 */
static ssize_t tls_recv(struct tycho_conn *c, char *buf, size_t len)
{
    SSL *ssl = c->extra->ssl;
    int n, e;

    ERR_clear_error();
    c->tls_want_write = false;
    n = SSL_read(ssl, buf, (int)len);
    if (!c->tls_counted && SSL_is_init_finished(ssl))
        count_handshake(c);
    if (n > 0)
        return n;
    e = SSL_get_error(ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        /*
         * WANT_WRITE: the handshake's reply did not fit in the socket. Reading
         * again goes on with it, once the socket is writable (arm_read): the
         * client sends nothing more until it has the reply.
         */
        c->tls_want_write = e == SSL_ERROR_WANT_WRITE;
        errno = EAGAIN;
        return -1;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    if (e == SSL_ERROR_SSL && !c->tls_counted)
        tycho_stat_add(&c->ctx->stats.tls_failures, 1);
    if (e == SSL_ERROR_SSL && tycho_log_min_level == TYCHO_LOG_DEBUG) {
        unsigned long err = ERR_peek_last_error();
        tycho_log(TYCHO_LOG_DEBUG, "worker %d: TLS %s: %s", c->ctx->worker_id,
                  SSL_is_init_finished(ssl) ? "error" : "handshake failed",
                  err ? ERR_reason_error_string(err) : "unknown");
    }
    if (e != SSL_ERROR_SYSCALL || errno == 0 || errno == EAGAIN || errno == EINTR)
        errno = ECONNRESET;
    return -1;
}

/* The same, inline for the plain socket: a plain connection's reads pay no call for TLS. */
static inline ssize_t conn_recv(struct tycho_conn *c, char *buf, size_t len)
{
    return tycho_conn_ssl(c) ? tls_recv(c, buf, len) : recv(c->fd, buf, len, 0);
}

/* Writes through the connection's TLS as send(2) does (errno EAGAIN, EPIPE). */
static ssize_t tls_send(struct tycho_conn *c, const char *data, size_t len)
{
    SSL *ssl = c->extra->ssl;
    int n, e;

    ERR_clear_error();
    /* A write the socket did not take is sent again from the same bytes (c->pending). */
    n = SSL_write(ssl, data, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0)
        return n;
    e = SSL_get_error(ssl, n);
    errno = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN : EPIPE;
    return -1;
}

/* Writes through the connection's TLS, or to the socket, as send(2) does. */
static inline ssize_t conn_send(struct tycho_conn *c, const char *data, size_t len, int flags)
{
    return tycho_conn_ssl(c) ? tls_send(c, data, len) : send(c->fd, data, len, flags);
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
        ssize_t n = conn_send(c, buf->data + buf->off, buf->len,
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

/* TLS has no sendfile: a file's bytes are read into pending, a record's worth at a time. */
#define TLS_FILE_PIECE_BYTES 16384

/*
 * Sends the file body through the SSL: reads a piece into pending and sends
 * it, until the socket is full (the piece left in pending goes first next
 * time), the file has gone, or FILE_BYTES_PER_EVENT. TYCHO_ERR as send_file.
 */
static int send_file_tls(struct tycho_conn *c)
{
    struct tycho_conn_extra *x = c->extra;
    size_t budget = FILE_BYTES_PER_EVENT;

    while (x->file_left > 0 && budget > 0 && c->pending.len == 0) {
        size_t want = x->file_left < TLS_FILE_PIECE_BYTES ? x->file_left : TLS_FILE_PIECE_BYTES;
        char *room = tycho_buf_reserve(&c->pending, want);
        ssize_t n;
        if (!room)
            return TYCHO_ERR;
        n = pread(x->file_fd, room, want, x->file_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return TYCHO_ERR;         /* the file shrank after its length was sent */
        c->pending.len += (size_t)n;
        x->file_off += n;
        x->file_left -= (size_t)n;
        budget -= (size_t)n;
        if (send_some(c, &c->pending, false) < 0)
            return TYCHO_ERR;
    }
    if (c->pending.len == 0)
        tycho_buf_dispose(&c->pending);
    if (x->file_left == 0) {
        close(x->file_fd);
        c->sending_file = false;
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
    struct tycho_conn_extra *x = c->extra;
    size_t budget = FILE_BYTES_PER_EVENT;
    int stalled;

    if (x->ssl)
        return send_file_tls(c);
    while (x->file_left > 0 && budget > 0) {
        ssize_t n = sendfile(c->fd, x->file_fd, &x->file_off,
                             x->file_left < budget ? x->file_left : budget);
        if (n > 0) {
            x->file_left -= (size_t)n;
            budget -= (size_t)n;
            tycho_stat_add(&c->ctx->stats.bytes_out, (unsigned long)n);
        } else if ((stalled = send_stalled(n)) != 0) {
            return stalled > 0 ? TYCHO_OK : TYCHO_ERR;
        }
    }
    if (x->file_left == 0) {
        close(x->file_fd);
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

    if (out->len > 0 && c->ctx->out_owner == c) {
        rc = send_some(c, out, c->sending_file);
        if (rc == TYCHO_OK && out->len > 0 &&
            tycho_buf_append(&c->pending, out->data + out->off, out->len) < 0)
            rc = TYCHO_ERR;
        out->len = out->off = 0;
        c->ctx->out_owner = NULL;
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
 * for timer, or none (tv NULL). The event is persistent, so libevent re-arms
 * the timeout after each callback (an inactivity timeout); only a deadline
 * (TIMER_DEADLINE) is re-added with what is left of it each time.
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
    } else if (!tv) {
        /*
         * No timeout from now: the pending one goes, and so does the interval
         * libevent keeps for a persistent event (event_add(NULL) and event_del
         * leave it, and the next readable event would arm it again: a handler
         * that waits would be timed out). The event stays in epoll.
         */
        if (event_remove_timer(&c->ev) < 0)
            return TYCHO_ERR;
        c->timer = timer;
        return TYCHO_OK;
    }
    if (event_add(&c->ev, tv) < 0)
        return TYCHO_ERR;
    c->ev_what = what;
    c->timer = timer;
    return TYCHO_OK;
}

/* ---- the idle timeout of plain keep-alive connections (context.h: idle_check) ---- */

static void timed_out(struct tycho_conn *c);

/* Whether c waits idle for its next request, timed by idle_check. */
static bool waits_idle(const struct tycho_conn *c)
{
    return c->timer == TIMER_IDLE && !c->started && !c->lingering;
}

static void arm_idle_check(struct tycho_ctx *ctx, long delay_ms)
{
    struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};

    if (event_add(&ctx->idle_check, &tv) == 0)
        ctx->idle_check_armed = true;
}

/*
 * idle_check's time: the idle connections whose --idle-timeout is over are
 * closed, oldest first, until one is not; the check is then armed for that
 * one's deadline. Connections that do not wait idle are moved to the back on
 * the way (once each: the walk stops at the first one moved), so that those
 * busy for long do not lengthen every check.
 */
static void on_idle_check(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_ctx *ctx = arg;
    long now = tycho_ctx_now_ms(ctx), timeout = ctx->cfg->idle_timeout_ms;
    struct tycho_list *node, *first_moved = NULL;

    (void)fd;
    (void)what;
    ctx->idle_check_armed = false;
    while ((node = tycho_list_first(&ctx->conns)) && node != first_moved) {
        struct tycho_conn *c = tycho_container_of(node, struct tycho_conn, link);
        if (!waits_idle(c)) {
            tycho_list_remove(node);
            tycho_list_push_back(&ctx->conns, node);
            if (!first_moved)
                first_moved = node;
        } else if (c->idle_since_ms + timeout <= now) {
            timed_out(c);             /* an idle connection: closed, so off the list */
            assert(tycho_list_first(&ctx->conns) != node && "a timed-out idle connection closes");
        } else {
            arm_idle_check(ctx, c->idle_since_ms + timeout - now);
            return;
        }
    }
}

/*
 * c waits idle for its next request: no timeout of its own (its event waits
 * for reading only); it moves to the back of ctx->conns with the time it
 * began, and idle_check is armed if it was not. Per request this is a few
 * stores, where a timeout of its own would be re-added by libevent each time.
 */
static int arm_idle(struct tycho_conn *c)
{
    struct tycho_ctx *ctx = c->ctx;

    if (c->ev_what != EV_READ || c->timer != TIMER_IDLE)
        if (arm(c, EV_READ, TIMER_IDLE, NULL) < 0)
            return TYCHO_ERR;
    c->idle_since_ms = tycho_ctx_now_ms(ctx);
    tycho_list_remove(&c->link);
    tycho_list_push_back(&ctx->conns, &c->link);
    if (!ctx->idle_check_assigned) {
        evtimer_assign(&ctx->idle_check, ctx->base, on_idle_check, ctx);
        ctx->idle_check_assigned = true;
    }
    if (!ctx->idle_check_armed)
        arm_idle_check(ctx, ctx->cfg->idle_timeout_ms);
    return TYCHO_OK;
}

/*
 * Sets the timeout for what the connection waits for now (it has no pending
 * output). A plain connection's waits for a request are inactivity timeouts:
 * every readable event brings request bytes. A TLS connection's are
 * deadlines instead: records without request bytes (a handshake's, a
 * KeyUpdate) make it readable too and must not renew them; and its first
 * request's head counts from the connect, the handshake included. A
 * handshake whose reply the socket did not take waits for writability.
 */
static int arm_read(struct tycho_conn *c)
{
    struct tycho_ctx *ctx = c->ctx;
    const struct tycho_config *cfg = ctx->cfg;
    long now, deadline;
    struct timeval left;

    if (!c->started && !tycho_conn_ssl(c))
        return c->nrequests ? arm_idle(c) : arm(c, EV_READ, TIMER_FIRST, ctx->first_tv);
    now = tycho_ctx_now_ms(ctx);
    if (c->req && c->req->http.headers_done) {
        if (!c->req->body_started_ms)
            c->req->body_started_ms = now;
        deadline = c->req->body_started_ms + cfg->body_timeout_ms;
    } else if (tycho_conn_ssl(c) && c->nrequests == 0) {
        deadline = c->born_ms + cfg->header_timeout_ms;
    } else if (c->started) {
        deadline = c->req_started_ms + cfg->header_timeout_ms;
    } else {
        /* TLS, kept alive: --idle-timeout from the end of its last response. */
        struct tycho_conn_extra *x = c->extra;
        assert(x && x->ssl && "a plain connection waiting idle returned above");
        if (x->idle_nreq != c->nrequests || !x->idle_since_ms) {
            x->idle_since_ms = now;
            x->idle_nreq = c->nrequests;
        }
        deadline = x->idle_since_ms + cfg->idle_timeout_ms;
    }
    deadline = deadline > now ? deadline - now : 0;
    left.tv_sec = deadline / 1000;
    left.tv_usec = (deadline % 1000) * 1000;
    return arm(c, c->tls_want_write ? EV_WRITE : EV_READ, TIMER_DEADLINE, &left);
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

    assert(c->link.next && "a connection closed twice (it is back in the pool)");
    if (c->ev_what)
        event_del(&c->ev);
    if (ctx->out_owner == c) {
        ctx->out.len = ctx->out.off = 0;  /* its bytes: nobody to send them to */
        ctx->out_owner = NULL;
    }
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
        SSL *ssl = tycho_conn_ssl(c);
        if (ssl) {
            /* close_notify, if the socket takes it now (a client that left will not read it). */
            ERR_clear_error();
            if (!c->lingering && SSL_is_init_finished(ssl))
                SSL_shutdown(ssl);
            SSL_free(ssl);
            ERR_clear_error();
        }
        close(c->fd);
        /* The address counted: the peer's at accept, or the PROXY source after its header. */
        ctx->conn_gone(ctx, c->ip_uncounted ? NULL : peer_sockaddr(c, &peer));
    }
    tycho_exchange_release(c);
    if (c->upgraded)
        tycho_stat_add(&ctx->stats.websockets_open, (unsigned long)-1); /* wraps: one less */
    if (c->sending_file)
        close(c->extra->file_fd);     /* a client gone (or timed out) mid-file */
    free(c->extra);
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
    struct tycho_conn_extra *x;

    /* With no memory for the linger's deadline it is closed at once, as when shutdown fails. */
    if (c->fd < 0 || !c->linger || c->peer_eof || !(x = tycho_conn_extra(c))) {
        close_conn(c);
        return;
    }
    if (x->ssl && SSL_is_init_finished(x->ssl)) {
        ERR_clear_error();
        SSL_shutdown(x->ssl);         /* close_notify goes before the write side shuts */
        ERR_clear_error();
    }
    if (shutdown(c->fd, SHUT_WR) < 0) {
        close_conn(c);
        return;
    }
    c->lingering = true;
    x->linger_until = time(NULL) + (LINGER_MS + 999) / 1000;
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
    time_t until = c->extra->linger_until;

    for (int i = 0; i < READS_PER_EVENT && !(what & EV_TIMEOUT) && time(NULL) < until; i++) {
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
    return (c->req && c->req->http.in_message) || c->input.len > 0 ||
           tycho_conn_output_waits(c);
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
    if (c->req && c->req->body_started_ms)
        c->req->body_started_ms += waited;
}

/* Calls the callback in *slot once (it is cleared first: it may set itself again). */
static void call_once(struct tycho_req *r, void (**slot)(struct tycho_req *r))
{
    void (*fn)(struct tycho_req *r) = *slot;

    if (!fn)
        return;
    *slot = NULL;
    fn(r);
}

static void notify_input(struct tycho_conn *c);
static void stop_reading(struct tycho_conn *c);

/*
 * A handler that waits for its streamed output to drain goes on once less
 * than it asked for waits (it is woken from the loop, never from here).
 */
static void notify_drained(struct tycho_conn *c)
{
    struct tycho_req *r = c->req;

    if (r && !c->sending_file && c->pending.len < r->drained_below)
        call_once(r, &r->on_drained);
}

/* Whether c's handler waits for bytes of its streamed body. */
static bool wants_body(const struct tycho_conn *c)
{
    return c->req && c->req->on_body;
}

/* Tells a handler that waits for body bytes that some came (or why none will). */
static void notify_body(struct tycho_conn *c)
{
    if (c->req)
        call_once(c->req, &c->req->on_body);
}

/*
 * While a handler waits: read, to notice the client leaving and to keep
 * what comes (body bytes, pipelined requests); with --body-timeout while it
 * waits for body bytes, which it is told of at once if some are kept.
 */
static int arm_waiting(struct tycho_conn *c)
{
    struct timeval tv;

    if (!wants_body(c))
        return arm(c, EV_READ, TIMER_NONE, NULL);
    tv.tv_sec = c->ctx->cfg->body_timeout_ms / 1000;
    tv.tv_usec = (c->ctx->cfg->body_timeout_ms % 1000) * 1000;
    if (arm(c, EV_READ, TIMER_BODY, &tv) < 0)
        return TYCHO_ERR;
    if (c->input.len > 0)
        event_active(&c->ev, EV_READ, 0);
    return TYCHO_OK;
}

void tycho_conn_want_body(struct tycho_conn *c)
{
    /* Output waiting keeps the event on writability; next_wait arms reading once it has gone. */
    if (c->local_out || tycho_conn_output_waits(c))
        return;
    if (arm_waiting(c) < 0)
        c->closing = true;            /* no event: the handler's request ends the connection */
}

/* After output was written: what the connection waits for next, or its end. */
static void next_wait(struct tycho_conn *c)
{
    notify_drained(c);
    if (c->upgraded && (c->input.len > 0 || c->peer_eof))
        notify_input(c);              /* bytes kept after the 101, read with it */
    if (tycho_conn_output_waits(c)) {
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
        /*
         * No timeout while the handler works, unless it waits for its body. A
         * WebSocket's handler takes what is kept before more is read.
         */
        if (c->peer_eof || (c->upgraded && c->input.len >= KEPT_INPUT_BYTES))
            stop_reading(c);
        else if (arm_waiting(c) < 0)
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

int tycho_conn_push(struct tycho_conn *c)
{
    if (c->local_out)
        return TYCHO_OK;
    if (flush_out(c) < 0) {
        c->closing = true;            /* the client is gone: nothing more goes out */
        return TYCHO_ERR;
    }
    if (!tycho_conn_output_waits(c) || c->ev_what == EV_WRITE)
        return TYCHO_OK;
    if (!c->write_wait_ms)
        c->write_wait_ms = tycho_ctx_now_ms(c->ctx);
    return arm(c, EV_WRITE, TIMER_WRITE, c->ctx->write_tv);
}

/*
 * Answers requests read earlier and kept back while output was over the
 * mark or a handler waited. The kept bytes are taken out of c->input while they are fed: a handler
 * that runs meanwhile may read c->input itself (a WebSocket's frames, a
 * streamed body), and must see only what follows its own request, never
 * that request's bytes. What the feed leaves goes back in front.
 */
static void feed_kept_input(struct tycho_conn *c)
{
    struct tycho_buf kept = c->input;
    size_t used;

    memset(&c->input, 0, sizeof(c->input));
    used = tycho_exchange_feed(c, kept.data + kept.off, kept.len);
    tycho_buf_consume(&kept, used);
    if (kept.len > 0 && !c->closing && c->input.len > 0 &&
        tycho_buf_append(&kept, c->input.data + c->input.off, c->input.len) < 0)
        c->closing = true;            /* no memory to keep both: answer what we have, close */
    if (kept.len > 0 && !c->closing) {
        tycho_buf_dispose(&c->input);
        c->input = kept;
        return;
    }
    tycho_buf_dispose(&kept);
    if (c->closing)
        tycho_buf_dispose(&c->input);
}

static void read_and_serve(struct tycho_conn *c)
{
    struct tycho_ctx *ctx = c->ctx;

    if (c->input.len > 0 && !c->waiting)
        feed_kept_input(c);
    /* No new reads while earlier input or a handler waits: that is the back-pressure. */
    for (int i = 0; i < READS_PER_EVENT && !c->closing && !c->waiting && c->input.len == 0; i++) {
        ssize_t n = conn_recv(c, ctx->rbuf, TYCHO_READ_BYTES);
        if (n > 0) {
            size_t used;
            tycho_stat_add(&ctx->stats.bytes_in, (unsigned long)n);
            used = tycho_exchange_feed(c, ctx->rbuf, (size_t)n);
            /* Kept when feeding stopped for back-pressure or a waiting handler. */
            if (used < (size_t)n && !c->closing &&
                tycho_buf_append(&c->input, ctx->rbuf + used, (size_t)n - used) < 0)
                c->closing = true;    /* no memory to keep it: answer what we have, close */
            /* A short read emptied the socket; TLS reads a record at a time, so it goes on. */
            if ((size_t)n < TYCHO_READ_BYTES && !tycho_conn_ssl(c))
                break;
        } else if (n == 0) {
            c->closing = true;        /* the client is done; answer what was read, then close */
            c->peer_eof = true;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else {
            close_conn(c);            /* reset or error: nobody to answer (its output goes) */
            return;
        }
    }
    if (c->stream_start)
        tycho_exchange_start(c);      /* what came after the head is in c->input now */
    if (flush_out(c) < 0) {
        close_conn(c);
        return;
    }
    next_wait(c);
}

/*
 * --proxy-protocol: a connection that did not begin with a good PROXY header
 * is closed without an answer (the balancer in front of it would pass an
 * answer on to a client that did nothing wrong); counted, and logged at most
 * once a minute.
 */
static void proxy_failed(struct tycho_conn *c, const char *reason)
{
    static _Atomic long last_log_s;
    char remote[64];

    tycho_stat_add(&c->ctx->stats.proxy_errors, 1);
    if (tycho_log_allow(&last_log_s, 60)) {
        tycho_conn_peer(c, remote, sizeof(remote));
        tycho_log_warn("--proxy-protocol: closed a connection from %s: %s (logged at most once "
                       "a minute; tycho_proxy_protocol_errors_total counts them)",
                       remote, reason);
    }
    close_conn(c);
}

/* Waits for the rest of the PROXY header, until --header-timeout from the connect. */
static int arm_proxy(struct tycho_conn *c)
{
    long left = c->born_ms + c->ctx->cfg->header_timeout_ms - tycho_ctx_now_ms(c->ctx);
    struct timeval tv;

    if (left < 0)
        left = 0;
    tv.tv_sec = left / 1000;
    tv.tv_usec = (left % 1000) * 1000;
    return arm(c, EV_READ, TIMER_DEADLINE, &tv);
}

/*
 * The client behind a PROXY header, counted against --max-conns-per-ip now
 * that it is known (the listener counted nobody). Past the bound: the 503 a
 * plain connection gets at accept (a TLS one is just closed); TYCHO_ERR.
 */
static int count_source(struct tycho_conn *c)
{
    struct sockaddr_storage ss;
    char busy[TYCHO_BUSY_BYTES];

    if (!c->ctx->count_ip || c->ctx->count_ip(c->ctx, peer_sockaddr(c, &ss)) == TYCHO_OK) {
        c->ip_uncounted = false;      /* its close gives back this address */
        return TYCHO_OK;
    }
    if (tycho_conn_ssl(c)) {
        close_conn(c);
        return TYCHO_ERR;
    }
    /* A failed send means the client is gone already; the linger lets it read the 503. */
    send(c->fd, busy, tycho_http_busy(busy, sizeof(busy), tycho_ctx_date(c->ctx)), MSG_NOSIGNAL);
    c->linger = true;
    finish(c);
    return TYCHO_ERR;
}

/*
 * Reads the PROXY header a --proxy-protocol connection begins with: peeks at
 * what came, and takes from the socket exactly the header's bytes, so that
 * what follows it (a request, a TLS ClientHello) is read by the normal path.
 * While the header is incomplete, what came of it (all of it the header's)
 * is taken and kept in c->input, so that the socket is not readable again
 * until more comes. Once it is complete the connection's peer is the
 * header's source (a LOCAL or UNKNOWN header keeps the socket's peer), and
 * requests are served.
 */
static void read_proxy_header(struct tycho_conn *c)
{
    struct tycho_ctx *ctx = c->ctx;
    unsigned char *buf = (unsigned char *)ctx->rbuf;
    size_t kept = c->input.len, take;
    struct tycho_proxyproto h;
    enum tycho_proxyproto_result r;
    ssize_t n;

    /* kept < TYCHO_PROXYPROTO_MAX_BYTES: it is a proper prefix of an acceptable header. */
    if (kept)
        memcpy(buf, c->input.data + c->input.off, kept);
    do {
        n = recv(c->fd, buf + kept, TYCHO_PROXYPROTO_MAX_BYTES - kept, MSG_PEEK);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;                       /* the event stays armed */
    if (n <= 0) {
        proxy_failed(c, n < 0 ? "reset before its PROXY header was complete"
                        : kept ? "closed within its PROXY header" : "closed with no PROXY header");
        return;
    }
    r = tycho_proxyproto_parse(buf, kept + (size_t)n, &h);
    if (r == TYCHO_PROXYPROTO_BAD) {
        proxy_failed(c, h.reason);
        return;
    }
    take = r == TYCHO_PROXYPROTO_OK ? h.len - kept : (size_t)n;
    do {
        n = recv(c->fd, buf + kept, take, 0);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)take) {
        close_conn(c);                /* the kernel gave back less than it showed: gone */
        return;
    }
    tycho_stat_add(&ctx->stats.bytes_in, (unsigned long)take);
    if (r == TYCHO_PROXYPROTO_MORE) {
        if (tycho_buf_append(&c->input, buf + kept, take) < 0 || arm_proxy(c) < 0)
            close_conn(c);
        return;
    }
    tycho_buf_dispose(&c->input);
    c->proxy_wait = false;
    if (!h.local) {
        c->peer_family = (unsigned char)h.family;
        memcpy(c->peer_addr, h.src, h.family == AF_INET6 ? 16 : 4);
    }
    if (tycho_log_min_level == TYCHO_LOG_DEBUG) {
        char remote[64];
        tycho_conn_peer(c, remote, sizeof(remote));
        tycho_log(TYCHO_LOG_DEBUG, "worker %d: PROXY v%d header: the client is %s%s",
                  ctx->worker_id, h.version, remote, h.local ? " (the peer: LOCAL, UNKNOWN)" : "");
    }
    if (count_source(c) < 0)
        return;
    read_and_serve(c);                /* what followed the header is left in the socket */
}

/*
 * The connection's timeout fired: a request that did not arrive in time gets
 * 408 and a lingering close; an idle connection, or one whose client takes
 * no output, is closed.
 */
static void timed_out(struct tycho_conn *c)
{
    struct tycho_ctx *ctx = c->ctx;

    if (c->proxy_wait && ctx->draining && c->input.len == 0) {
        close_conn(c);                /* silent through a stop's grace (give_grace): no error */
        return;
    }
    if (c->proxy_wait) {
        proxy_failed(c, "no complete PROXY header within --header-timeout");
        return;
    }
    if (c->timer == TIMER_BODY) {
        /* A quiet spell while the handler waits for its body: its read fails (408). */
        if (wants_body(c)) {
            ctx->timeouts++;
            c->req->body_error = 408;
            notify_body(c);
        }
        return;                       /* (a handler busy otherwise is no reason to stop) */
    }
    if (c->timer == TIMER_DEADLINE && c->req && c->req->http.in_message) {
        /* A request that did not arrive in time (blank lines alone just close). */
        ctx->timeouts++;
        tycho_stat_add(&ctx->stats.rejected[TYCHO_REJECT_TIMEOUT], 1);
        tycho_exchange_answer_simple(c, 408, "", false, true);
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

/* The connection reads nothing for now (its event is off until armed again). */
static void stop_reading(struct tycho_conn *c)
{
    if (c->ev_what) {
        event_del(&c->ev);
        c->ev_what = 0;
        c->timer = TIMER_NONE;
    }
}

/* Tells a handler that reads the input itself (a WebSocket) that something came. */
static void notify_input(struct tycho_conn *c)
{
    if (c->req)
        call_once(c->req, &c->req->on_input);
}

/*
 * Readable while a handler waits: bytes (pipelined requests, a streamed
 * body, a WebSocket's frames) are kept, up to a bound, and a handler that
 * waits for them is told; a client that has gone (end of input, reset)
 * closes the connection, which abandons the handler, except a WebSocket's,
 * whose handler hears of it and ends.
 */
static void watch_while_waiting(struct tycho_conn *c)
{
    struct tycho_ctx *ctx = c->ctx;
    ssize_t n;

    if (wants_body(c) && c->input.len > 0) {
        notify_body(c);               /* kept before the handler asked */
        return;
    }
    n = conn_recv(c, ctx->rbuf, TYCHO_READ_BYTES);
    if (n > 0) {
        tycho_stat_add(&ctx->stats.bytes_in, (unsigned long)n);
        if (tycho_conn_ssl(c) && SSL_pending(c->extra->ssl) > 0)
            event_active(&c->ev, EV_READ, 0); /* decrypted bytes the socket will not signal */
        if (tycho_buf_append(&c->input, ctx->rbuf, (size_t)n) < 0) {
            close_conn(c);
            return;
        }
        notify_body(c);
        if (c->input.len >= KEPT_INPUT_BYTES)
            stop_reading(c);          /* enough kept: the rest waits in the kernel */
        notify_input(c);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (c->upgraded) {
        /* Its handler hears of it (a WebSocket's receive returns) and ends the connection. */
        c->peer_eof = true;
        stop_reading(c);
        notify_input(c);
        return;
    }
    close_conn(c);                    /* the client left: nobody to answer */
}

int tycho_conn_want_input(struct tycho_conn *c)
{
    if (c->local_out || c->peer_eof || c->ev_what || tycho_conn_output_waits(c) ||
        c->input.len >= KEPT_INPUT_BYTES)
        return TYCHO_OK;              /* reading already, or it resumes once output drains */
    return arm(c, EV_READ, TIMER_NONE, NULL);
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
    if ((what & EV_READ) && c->proxy_wait) {
        read_proxy_header(c);
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
    } else if (!tycho_conn_output_waits(c) && !c->closing && !c->waiting) {
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
                     socklen_t peer_len, bool tls)
{
    struct tycho_conn *c = tycho_pool_get(&ctx->conn_pool);
    /* --metrics-addr's connections (metrics_only) never carry a PROXY header. */
    bool proxied = !ctx->metrics_only && tycho_config_proxied(ctx->cfg, tls);

    (void)peer_len;
    if (c && tls) {
        /* A TLS connection has its extra from the start: its SSL lives there. */
        struct tycho_conn_extra *x = calloc(1, sizeof(*x));
        if (x && (x->ssl = tycho_tls_accept(fd))) {
            c->extra = x;
        } else {
            free(x);
            tycho_pool_put(&ctx->conn_pool, c);
            c = NULL;
        }
    }
    if (!c && tls) {
        close(fd);                    /* a TLS client would read the plain 503 as garbage */
        ctx->conn_gone(ctx, proxied ? NULL : peer);
        return;
    }
    if (!c) {
        char busy[TYCHO_BUSY_BYTES];
        /* A failed send means the client is gone already. */
        send(fd, busy, tycho_http_busy(busy, sizeof(busy), tycho_ctx_date(ctx)), MSG_NOSIGNAL);
        close(fd);
        ctx->conn_gone(ctx, proxied ? NULL : peer);
        return;
    }
    c->ctx = ctx;
    ctx->conn_resume = read_and_serve;
    c->fd = fd;
    c->born_ms = tycho_ctx_now_ms(ctx);
    tycho_stat_add(&ctx->stats.conns, 1);
    set_peer(c, peer);
    if (tycho_log_min_level == TYCHO_LOG_DEBUG) {
        char remote[64];
        tycho_conn_peer(c, remote, sizeof(remote));
        tycho_log(TYCHO_LOG_DEBUG, "worker %d: connection from %s", ctx->worker_id, remote);
    }
    tycho_list_push_front(&ctx->conns, &c->link);
    if (proxied) {
        struct tycho_ip ip;
        c->ip_uncounted = true;       /* its client is counted once the header names it */
        c->proxy_wait = true;
        if (!tycho_ip_from(c->peer_family, c->peer_addr, &ip) ||
            !tycho_proxies_trust(ctx->cfg->trusted_proxies, &ip)) {
            proxy_failed(c, "the peer is not one of --trusted-proxies");
            return;
        }
        /* The header is read on the first readiness, as a request is below. */
        if (arm_proxy(c) < 0)
            close_conn(c);
        return;
    }
    /*
     * Read on the first readiness: accepted as soon as the handshake ends, the
     * connection rarely has its request yet, and a read now would mostly cost
     * a recv that returns EAGAIN.
     */
    if (arm(c, EV_READ, TIMER_FIRST, ctx->first_tv) < 0)
        close_conn(c);
}

void tycho_conn_close_all(struct tycho_ctx *ctx)
{
    struct tycho_list *first;

    while ((first = tycho_list_first(&ctx->conns)))
        close_conn(tycho_container_of(first, struct tycho_conn, link));
    if (ctx->idle_check_assigned)
        event_del(&ctx->idle_check);  /* before its base goes (the owner frees it next) */
    ctx->idle_check_assigned = ctx->idle_check_armed = false;
}

/*
 * Stopping: a new connection that has not sent a byte of a request gets
 * DRAIN_GRACE_MS (at most --header-timeout) for its first one, not the whole
 * --header-timeout, which would hold the stop. Bytes that come renew its
 * timers as usual.
 */
static void give_grace(struct tycho_conn *c)
{
    long ms = c->ctx->cfg->header_timeout_ms;
    struct timeval tv;

    if (c->started || c->tls_want_write)
        return;
    if (ms > DRAIN_GRACE_MS)
        ms = DRAIN_GRACE_MS;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    if (arm(c, EV_READ, TIMER_DEADLINE, &tv) < 0)
        close_conn(c);
}

void tycho_conn_drain(struct tycho_ctx *ctx)
{
    struct tycho_list *node, *next;

    ctx->draining = true;
    tycho_list_each_safe(node, next, &ctx->conns) {
        struct tycho_conn *c = tycho_container_of(node, struct tycho_conn, link);
        if (c->upgraded) {
            notify_input(c);          /* a WebSocket's handler closes it (1001) and ends */
            continue;
        }
        if (c->lingering || in_flight(c))
            continue;                 /* it finishes (or its linger ends) by itself */
        /*
         * New, no request yet: its client connected before the stop and its
         * first request is on the way (a restart with --reuseport must not
         * drop it). It is answered with Connection: close; one that sends
         * nothing within a moment (a browser's preconnect) is closed then.
         */
        if (c->nrequests == 0) {
            give_grace(c);
            continue;
        }
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
    size_t used;

    if (!c)
        return TYCHO_ERR;
    c->ctx = ctx;
    ctx->conn_resume = read_and_serve; /* not called: --request's output is not a socket */
    c->fd = -1;
    tycho_list_init(&c->link);        /* not among the open connections */
    c->local_out = out;
    c->born_ms = tycho_ctx_now_ms(ctx);
    /* What is ready to run first: the app.on_worker_start functions. */
    event_base_loop(ctx->base, EVLOOP_NONBLOCK);
    used = tycho_exchange_feed(c, bytes, len);
    if (c->stream_start) {
        /* A stream_body route: its body is the rest of the bytes, read from c->input. */
        if (tycho_buf_append(&c->input, bytes + used, len - used) < 0)
            c->closing = true;
        tycho_exchange_start(c);
    }
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
    else if (c->req && c->req->http.in_message && !c->closing)
        tycho_exchange_answer_simple(c, 400, "", false, true); /* the bytes ended mid-request */
    close_conn(c);
    return rc;
}
