/*
 * conn.h: the connection state machine: read, parse, route, hand to the
 * application (ctx->app), write. A connection lives on one worker for its
 * whole life; everything here runs on that worker's thread and takes the
 * worker's context (context.h). Connections come from the context's pool; an
 * idle keep-alive connection holds no read or write buffer (reads go through
 * the context's scratch buffer; only output the socket did not take is kept).
 */
#ifndef TYCHO_CONN_H
#define TYCHO_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "core/buf.h"

struct tycho_ctx;
struct tycho_conn;

/* Size of a connection object, for the worker's pool. */
size_t tycho_conn_bytes(void);

/*
 * Takes over the accepted, non-blocking fd from the listener; tls: it came
 * on --tls-port (http/tls.h has the certificates). On failure (pool
 * exhausted, out of memory) answers 503 (a TLS one is just closed) and
 * closes fd. Never fails otherwise. On a --proxy-protocol listener
 * (tycho_config_proxied; not for a metrics_only ctx) peer must be one of
 * --trusted-proxies and the connection begin with a PROXY header, whose
 * source then stands for peer everywhere; peer's address must not have been
 * counted for --max-conns-per-ip (ctx->count_ip counts the source).
 */
void tycho_conn_open(struct tycho_ctx *ctx, int fd, const struct sockaddr *peer,
                     socklen_t peer_len, bool tls);

/* Whether c is a TLS connection (req.scheme "https"). */
bool tycho_conn_is_tls(const struct tycho_conn *c);

/* Closes every open connection of ctx and stops its idle check (shutdown, before the base goes). */
void tycho_conn_close_all(struct tycho_ctx *ctx);

/*
 * Starts a graceful stop of ctx's connections: idle keep-alive connections are closed now;
 * those with a request in flight, and new ones whose first request has not come yet, finish
 * it (its response says Connection: close) and close. ctx's loop is broken when the last one
 * has closed.
 */
void tycho_conn_drain(struct tycho_ctx *ctx);

/*
 * Runs raw request bytes through the same parse/route/run path as a socket
 * would, with no socket, and appends the responses to out (--request,
 * tycho test), running ctx's loop while a handler waits. Returns
 * TYCHO_OK, TYCHO_ERR (no connection object could be had), or
 * TYCHO_CONN_LATE when a handler still waited after timeout_ms (0: no
 * bound); it is then abandoned, as when a client leaves.
 */
#define TYCHO_CONN_LATE 1
int tycho_conn_run_local(struct tycho_ctx *ctx, const char *bytes, size_t len,
                         struct tycho_buf *out, long timeout_ms);

/* Writes the peer's address ("127.0.0.1", "::1") into buf; returns its length. */
size_t tycho_conn_peer(const struct tycho_conn *c, char *buf, size_t buf_len);

struct tycho_req;

/*
 * The address of r's client into buf (64 bytes): the peer's, or, when the peer
 * is one of --trusted-proxies, the client its Forwarded or X-Forwarded-For
 * reports (core/proxies.h: the right-most untrusted hop; the peer's when the
 * header is missing or malformed). Worked out once per request, on the first
 * call; without --trusted-proxies, just tycho_conn_peer. Returns the length.
 * Worker thread, as r.
 */
size_t tycho_req_client(struct tycho_req *r, char *buf, size_t buf_len);

/*
 * Whether r came over HTTPS (req.scheme): its connection is TLS, unless a
 * trusted proxy reported the client's scheme (X-Forwarded-Proto, or the chosen
 * Forwarded element's proto=). Worker thread, as r.
 */
bool tycho_req_https(struct tycho_req *r);

#endif
