/*
 * conn_int.h: the inside of a client connection, shared by the two halves of
 * the connection: conn.c (the socket: reading, writing, sendfile, timeouts,
 * lingering, closing) and exchange.c (the requests: parse, route, hand to
 * the application, answer, end each request). exchange.c never calls into
 * conn.c (server/layers: conn.c calls it): it uses the inline helpers here,
 * and ctx->conn_resume to go on after a handler that waited. Nothing else
 * includes it. A connection belongs to its worker's thread.
 */
#ifndef TYCHO_CONN_INT_H
#define TYCHO_CONN_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/types.h>
#include <time.h>

#include <event2/event_struct.h>
#include <openssl/ssl.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/list.h"
#include "http/context.h"
#include "http/http.h"

/*
 * Output a connection may have waiting before it stops answering pipelined
 * requests it has already read (their bytes wait in its input buffer). This
 * bounds the memory a client that sends many requests and reads nothing can
 * make the server hold.
 */
#define TYCHO_CONN_OUT_HIGH_BYTES (256 * 1024)

/*
 * The parts of a connection that only some connections need: TLS, a file
 * body being sent, a lingering close. They are allocated (tycho_conn_extra)
 * when first needed, and freed at the close: an idle plain keep-alive
 * connection does not carry them. A connection on --tls-port has them from
 * its accept.
 */
struct tycho_conn_extra {
    SSL *ssl;                          /* owned: TLS, for a connection on --tls-port; else NULL */
    int file_fd;                       /* owned while c->sending_file: a file body (app.static) */
    unsigned idle_nreq;                /* TLS: c->nrequests when idle_since_ms was taken */
    off_t file_off;                    /* the next file byte to send */
    size_t file_left;                  /* file bytes still to send */
    long idle_since_ms;                /* TLS, kept alive: when it began to wait (idle deadline) */
    time_t linger_until;               /* lingering ends by then, however much keeps coming */
};

/*
 * A client connection; it belongs to its worker's thread. An idle keep-alive
 * connection costs this struct and libevent's bookkeeping for its socket, so
 * it holds only what every open connection needs: its parser state lives in
 * its request context (http.h) while a request is in progress, its rarely
 * used parts in its extra, and its flags are bits. The pool links a free
 * connection through the word that holds ctx while it is open.
 */
struct tycho_conn {
    union {
        void *_pool_next;              /* the pool's link while free */
        struct tycho_ctx *ctx;         /* borrowed, while open: the owning worker's context */
    };
    struct tycho_list link;            /* in ctx->conns while open; zeroed once closed */
    struct tycho_req *req;             /* from the worker's pool while a request is in progress */
    struct tycho_buf *local_out;       /* borrowed: --request output, else NULL */
    struct tycho_conn_extra *extra;    /* owned: its rarely used parts, once needed; else NULL */
    int fd;                            /* owned; -1 for --request */
    unsigned nrequests;                /* answered on this connection */
    short ev_what;                     /* EV_READ or EV_WRITE: what ev waits for; 0: none */
    unsigned char timer;               /* TIMER_*: what ev's timeout stands for now */
    unsigned char peer_family;         /* AF_INET or AF_INET6 */
    bool ip_uncounted : 1;             /* --proxy-protocol: no address counted per IP (yet) */
    bool proxy_wait : 1;               /* --proxy-protocol: its header is not read yet */
    bool closing : 1;                  /* close once pending output is written */
    bool peer_eof : 1;                 /* the client closed its side */
    bool linger : 1;                   /* input may still be coming: close lingering */
    bool lingering : 1;                /* write side shut; dropping input until EOF or timeout */
    bool nodelay : 1;                  /* TCP_NODELAY is set */
    bool started : 1;                  /* bytes of the next request came (blank lines too) */
    bool waiting : 1;                  /* its handler waits (tycho.sleep); nothing is read */
    bool upgraded : 1;                 /* a WebSocket: its handler reads the input itself */
    bool tls_counted : 1;              /* its TLS handshake is done and counted */
    bool tls_want_write : 1;           /* TLS must write before it can read on (a handshake) */
    bool stream_start : 1;             /* a stream_body route's head is in: start its handler */
    bool sending_file : 1;             /* extra's file_fd is open; its bytes are the next output */
    unsigned char peer_addr[16];       /* the client: the socket peer, or the PROXY source */
    long born_ms;                      /* when it was accepted (worker clock) */
    union {
        long req_started_ms;           /* c->started: when the request's first bytes came */
        long idle_since_ms;            /* plain, waiting idle (TIMER_IDLE): since when */
    };
    long write_wait_ms;                /* when output began to wait; 0 when none waits */
    struct event ev;                   /* embedded: no allocation of its own */
    struct tycho_buf pending;          /* owned: output the socket has not taken */
    struct tycho_buf input;            /* owned: read but not parsed yet (back-pressure) */
};

/*
 * c's extra: allocated (zeroed) the first time, freed by the close; NULL when
 * memory ran out (the caller then closes, or answers 503). Not from a pool:
 * few connections need one at a time.
 */
static inline struct tycho_conn_extra *tycho_conn_extra(struct tycho_conn *c)
{
    if (!c->extra)
        c->extra = calloc(1, sizeof(*c->extra));
    return c->extra;
}

/* c's TLS, or NULL for a plain connection. */
static inline SSL *tycho_conn_ssl(const struct tycho_conn *c)
{
    return c->extra ? c->extra->ssl : NULL;
}

/* The Date line for c's responses: with --hsts's header after it on a TLS connection. */
static inline const char *tycho_conn_date(struct tycho_conn *c)
{
    return tycho_conn_ssl(c) && c->ctx->cfg->hsts_max_age_s >= 0 ? tycho_ctx_date_hsts(c->ctx)
                                                       : tycho_ctx_date(c->ctx);
}

/* Whether output waits for the socket: bytes in pending, or a file body being sent. */
static inline bool tycho_conn_output_waits(const struct tycho_conn *c)
{
    return c->pending.len > 0 || c->sending_file;
}

/*
 * Where c's output goes now: after its pending output, so order is kept.
 * The worker's scratch holds one connection's bytes at a time (they are
 * written at the end of its event); while it holds another's, c's go to its
 * own buffer: a handler may write to a connection other than the one being
 * served (a broadcast, a shared ws or res), which must never send the bytes
 * of the one being served.
 */
static inline struct tycho_buf *tycho_conn_out(struct tycho_conn *c)
{
    struct tycho_ctx *ctx = c->ctx;

    if (c->local_out)
        return c->local_out;
    if (c->pending.len || (ctx->out.len && ctx->out_owner != c))
        return &c->pending;
    ctx->out_owner = c;
    return &ctx->out;
}

/*
 * Whether this request must be the connection's last: --max-requests-per-conn
 * reached, --max-conn-lifetime over, or the server is stopping. Its response
 * then says Connection: close.
 */
static inline bool tycho_conn_last_request(const struct tycho_conn *c)
{
    const struct tycho_config *cfg = c->ctx->cfg;

    return c->ctx->draining ||
           (cfg->max_requests_per_conn &&
            c->nrequests + 1 >= (unsigned)cfg->max_requests_per_conn) ||
           (cfg->max_conn_lifetime_ms &&
            tycho_ctx_now_ms(c->ctx) - c->born_ms >= cfg->max_conn_lifetime_ms);
}

/* Whether the connection stays open after this request (before the handler's say). */
static inline bool tycho_conn_keeps_alive(struct tycho_conn *c)
{
    struct tycho_req *r = c->req;
    bool keep_alive = r->keep_alive && !tycho_conn_last_request(c);

    /* Closing a connection the client meant to keep: its next request may be on the way. */
    c->linger |= r->keep_alive && !keep_alive;
    return keep_alive;
}

/*
 * conn.c: sends what output the connection has now, as much as the socket
 * takes, and makes it wait for writability (--write-timeout) if some is
 * left: a streamed response's bytes go out while its handler runs. Never
 * closes c; TYCHO_ERR when the client is gone (the caller's request then
 * ends the connection). A no-op for --request.
 */
int tycho_conn_push(struct tycho_conn *c);

/*
 * conn.c: reads again, for a connection whose handler reads its input
 * itself (upgraded) and has taken what was kept. TYCHO_ERR: cannot arm.
 */
int tycho_conn_want_input(struct tycho_conn *c);

/*
 * exchange.c: feeds bytes read to the parser and answers the requests they
 * hold; returns how many it used. It stops early when the connection is
 * closing (the rest is dropped), when its handler waits, or when the output
 * waiting is over the high-water mark (the caller keeps the rest).
 */
size_t tycho_exchange_feed(struct tycho_conn *c, const char *data, size_t len);

/*
 * exchange.c: starts the handler of a stream_body route whose head
 * tycho_exchange_feed stopped at (c->stream_start), once the bytes read
 * after the head are in c->input. Its response is appended now or when it
 * is done, as for any request.
 */
void tycho_exchange_start(struct tycho_conn *c);

/*
 * exchange.c: parses what c->input holds of c->req's streamed body into its
 * buffer, as much as there is room for (all of it, dropped, once
 * r->body_discard), up to the end of the body; sets r->body_done or
 * r->body_error. The bytes of a next request stay in c->input.
 */
void tycho_exchange_pull_body(struct tycho_conn *c);

/*
 * conn.c: c's handler waits for body bytes (c->req->on_body is set): read
 * on, with --body-timeout as the limit of a quiet spell, and call on_body
 * from the loop when bytes are kept in c->input (already, or once they
 * come). A no-op for --request.
 */
void tycho_conn_want_body(struct tycho_conn *c);

/* exchange.c: gives c's request context back (abandoning a handler that waits). */
void tycho_exchange_release(struct tycho_conn *c);

/* exchange.c: answers c's request itself with status (408 on a timeout, 400 cut short). */
void tycho_exchange_answer_simple(struct tycho_conn *c, int status, const char *extra,
                                  bool keep_alive, bool with_body);

#endif
