/*
 * body.c: streamed request bodies (body.h). The bytes of the body pass the
 * parser (chunked framing decoded there) into the request's buffer, fed by
 * exchange.c from the connection's input no faster than the buffer empties;
 * conn.c reads on and wakes a handler that waits. Worker thread only.
 */
#include "http/body.h"
#include "http/conn_int.h"
#include "http/http.h"

#include <assert.h>

/* The first read: a client that sent Expect: 100-continue may send its body now. */
static void answer_continue(struct tycho_conn *c, struct tycho_req *r)
{
    if (!r->expect_continue || r->continue_sent || (r->res_flags & TYCHO_RES_STREAM) ||
        c->local_out)
        return;                       /* --request: the body is all there, nobody to tell */
    r->continue_sent = true;
    if (tycho_buf_puts(tycho_conn_out(c), "HTTP/1.1 100 Continue\r\n\r\n") < 0 ||
        tycho_conn_push(c) < 0)
        c->closing = true;            /* the body will not come: the read fails at its wait */
}

enum tycho_body_result tycho_body_read(struct tycho_req *r, size_t max, const char **data,
                                       size_t *len)
{
    struct tycho_conn *c = r->conn;

    assert(r->stream_body && max > 0);
    if (r->sbuf_len == 0 && !r->body_done && !r->body_error) {
        answer_continue(c, r);
        tycho_exchange_pull_body(c);
    }
    if (r->sbuf_len > 0) {
        *len = r->sbuf_len < max ? r->sbuf_len : max;
        *data = r->sbuf + r->sbuf_off;
        r->sbuf_off += *len;
        r->sbuf_len -= *len;
        return TYCHO_BODY_DATA;
    }
    if (r->body_done)
        return TYCHO_BODY_END;
    if (!r->body_error && (c->local_out || c->closing))
        r->body_error = 400;          /* --request's bytes ended mid-body, or no way to read on */
    return r->body_error ? TYCHO_BODY_FAILED : TYCHO_BODY_WAIT;
}

void tycho_body_wait(struct tycho_req *r, void (*fn)(struct tycho_req *r), void *arg)
{
    r->on_body = fn;
    r->body_arg = arg;
    tycho_conn_want_body(r->conn);
}

void tycho_body_unwait(struct tycho_req *r)
{
    r->on_body = NULL;
}
