/*
 * stream.c: streamed responses (stream.h). The head is decided at the
 * first write, as respond() in exchange.c decides it for a whole response:
 * keep-alive unless this must be the connection's last request or the
 * handler asked for Connection: close; a body without a length needs
 * chunks (HTTP/1.1) or the close (HTTP/1.0).
 */
#include "http/stream.h"
#include "core/tycho.h"
#include "http/conn_int.h"
#include "http/http.h"

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
    if (tycho_http_write_stream_head(out, r, tycho_ctx_date(c->ctx), keep_alive, chunked) < 0)
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
    int rc;

    if (r->stream_closed || r->stream_failed)
        return TYCHO_ERR;
    if (!(r->res_flags & TYCHO_RES_STREAM) && start(c, r) < 0)
        goto closed;
    out = tycho_conn_out(c);
    before = out->len;
    if (len > 0 && tycho_http_has_body(r)) {
        rc = r->stream_chunked ? tycho_http_write_chunk(out, data, len)
                               : tycho_buf_append(out, data, len);
        if (rc < 0)
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

    return c->local_out ? 0 : c->pending.len + c->ctx->out.len;
}
