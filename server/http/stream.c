/*
 * stream.c: streamed responses (stream.h). The head is decided at the
 * first write, as respond() in exchange.c decides it for a whole response:
 * keep-alive unless this must be the connection's last request or the
 * handler asked for Connection: close; a body without a length needs
 * chunks (HTTP/1.1) or the close (HTTP/1.0).
 */
#include "http/stream.h"
#include "core/metrics.h"
#include "core/tycho.h"
#include "http/conn_int.h"
#include "http/chunks.h"
#include "http/http.h"
#include "http/ws.h"

#include <string.h>

/* Writes r's head into the connection's output and marks r streamed. */
static int start(struct tycho_conn *c, struct tycho_req *r)
{
    bool body = tycho_http_has_body(r);
    bool chunked = r->http_minor >= 1;
    bool keep_alive = tycho_conn_keeps_alive(c) && !(r->res_flags & TYCHO_RES_CLOSE);
    struct tycho_buf *out = tycho_conn_out(c);
    size_t before = out->len;

    if (body && !chunked)
        keep_alive = false;           /* the close is what ends the body */
    if (!keep_alive)
        c->linger |= r->keep_alive;   /* the client may already be sending its next request */
    tycho_chunks_gzip_start(c->ctx, r);
    if (tycho_http_write_stream_head(out, r, tycho_conn_date(c), keep_alive, chunked) < 0)
        return TYCHO_ERR;
    r->res_flags |= TYCHO_RES_STREAM;
    r->stream_chunked = chunked && body;
    r->stream_keep_alive = keep_alive;
    r->log_status = r->status;
    r->log_bytes = out->len - before;
    return TYCHO_OK;
}

int tycho_stream_write(struct tycho_req *r, const char *data, size_t len)
{
    struct tycho_conn *c = r->conn;
    struct tycho_buf *out;
    size_t before;

    if (r->stream_closed || r->stream_failed)
        return TYCHO_ERR;
    if (!(r->res_flags & TYCHO_RES_STREAM) && start(c, r) < 0)
        goto closed;
    out = tycho_conn_out(c);
    before = out->len;
    if (len > 0 && tycho_http_has_body(r) && tycho_chunks_piece(r, out, data, len) < 0) {
        out->len = before;            /* no part of a piece is left behind */
        goto closed;
    }
    r->log_bytes += out->len - before;
    if (tycho_conn_push(c) < 0)
        goto closed;
    return tycho_stream_waiting(r) >= TYCHO_STREAM_HIGH_BYTES ? TYCHO_STREAM_FULL : TYCHO_OK;
closed:
    r->stream_closed = true;
    return TYCHO_ERR;
}

size_t tycho_stream_waiting(const struct tycho_req *r)
{
    const struct tycho_conn *c = r->conn;

    if (c->local_out)
        return 0;
    return c->pending.len + (c->ctx->out_owner == c ? c->ctx->out.len : 0);
}

int tycho_stream_upgrade(struct tycho_req *r, const char *accept, const char *protocol)
{
    struct tycho_conn *c = r->conn;
    struct tycho_buf extra = {0};
    struct tycho_buf *out = tycho_conn_out(c);
    size_t before = out->len;
    int rc;

    if (r->res_flags & TYCHO_RES_STREAM)
        return TYCHO_ERR;
    rc = tycho_buf_puts(&extra, (r->res_flags & TYCHO_RES_SERVER) ? "" : "Server: tycho\r\n");
    if (rc == TYCHO_OK)
        rc = tycho_buf_puts(&extra, tycho_conn_date(c));
    if (rc == TYCHO_OK && r->res_headers_len)
        rc = tycho_buf_append(&extra, r->res_headers, r->res_headers_len);
    if (rc == TYCHO_OK && tycho_buf_append(&extra, "", 1) == TYCHO_OK)
        rc = tycho_ws_write_accept(out, accept, protocol, extra.data + extra.off);
    else
        rc = TYCHO_ERR;
    tycho_buf_dispose(&extra);
    if (rc < 0)
        return TYCHO_ERR;
    r->status = 101;
    r->res_flags |= TYCHO_RES_STREAM;
    r->stream_keep_alive = false;     /* the connection is the WebSocket's to its end */
    r->log_status = 101;
    r->log_bytes = out->len - before;
    c->upgraded = true;
    tycho_stat_add(&c->ctx->stats.websockets, 1);
    tycho_stat_add(&c->ctx->stats.websockets_open, 1);
    return tycho_stream_push(r) == TYCHO_ERR ? TYCHO_ERR : TYCHO_OK;
}

size_t tycho_stream_input(const struct tycho_req *r, const char **data)
{
    const struct tycho_conn *c = r->conn;

    *data = c->input.data ? c->input.data + c->input.off : NULL;
    return c->input.len;
}

int tycho_stream_consume(struct tycho_req *r, size_t n)
{
    struct tycho_conn *c = r->conn;

    tycho_buf_consume(&c->input, n);
    if (c->input.len == 0)
        tycho_buf_dispose(&c->input);
    return tycho_conn_want_input(c);
}

bool tycho_stream_upgraded(const struct tycho_req *r)
{
    return r->conn->upgraded;
}

bool tycho_stream_eof(const struct tycho_req *r)
{
    return r->conn->peer_eof;
}

bool tycho_stream_stopping(const struct tycho_req *r)
{
    return r->conn->ctx->draining;
}

struct tycho_buf *tycho_stream_out(struct tycho_req *r)
{
    return tycho_conn_out(r->conn);
}

int tycho_stream_push(struct tycho_req *r)
{
    if (r->stream_closed)
        return TYCHO_ERR;
    if (tycho_conn_push(r->conn) < 0) {
        r->stream_closed = true;
        return TYCHO_ERR;
    }
    return tycho_stream_waiting(r) >= TYCHO_STREAM_HIGH_BYTES ? TYCHO_STREAM_FULL : TYCHO_OK;
}
