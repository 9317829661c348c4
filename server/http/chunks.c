/*
 * chunks.c: the bytes of a streamed body (chunks.h): each piece compressed when
 * the response is, framed in a chunk when it is chunked; then its end.
 */
#include "http/chunks.h"
#include "core/config.h"
#include "core/tycho.h"
#include "http/context.h"
#include "http/gzip.h"
#include "http/http.h"

#include <stdlib.h>

void tycho_chunks_gzip_start(struct tycho_ctx *ctx, struct tycho_req *r)
{
    struct tycho_gzip_stream *z;

    /* HEAD too: its head says what GET's would. */
    if (!tycho_gzip_stream_start(ctx, r) || !tycho_http_has_body(r))
        return;
    if (!(z = malloc(sizeof(*z))) || tycho_gzip_stream_init_lean(z, ctx->cfg->gzip_level) < 0) {
        if (z)
            tycho_gzip_stream_dispose(z);
        free(z);
        tycho_http_remove_header(r, "Content-Encoding", 16);
        return;
    }
    r->stream_gzip = z;
}

static int append_piece_plain(struct tycho_req *r, struct tycho_buf *out, const char *data,
                              size_t len)
{
    if (len == 0)
        return TYCHO_OK;
    return r->stream_chunked ? tycho_http_write_chunk(out, data, len)
                             : tycho_buf_append(out, data, len);
}

int tycho_chunks_piece(struct tycho_req *r, struct tycho_buf *out, const char *data, size_t len)
{
    struct tycho_buf z = {0};
    int rc;

    if (r->stream_gzip) {
        /* Flushed each time: a piece written is a piece the client can read now. */
        rc = tycho_gzip_stream_write(r->stream_gzip, data, len, true, &z);
        if (rc == TYCHO_OK)
            rc = append_piece_plain(r, out, z.data + z.off, z.len);
        tycho_buf_dispose(&z);
        return rc;
    }
    return append_piece_plain(r, out, data, len);
}

int tycho_chunks_finish(struct tycho_req *r, struct tycho_buf *out)
{
    struct tycho_buf z = {0};
    int rc = TYCHO_OK;

    if (r->res_body_len > 0 && tycho_http_has_body(r))
        rc = tycho_chunks_piece(r, out, r->res_body, r->res_body_len);
    if (rc == TYCHO_OK && r->stream_gzip && tycho_http_has_body(r)) {
        rc = tycho_gzip_stream_finish(r->stream_gzip, &z);
        if (rc == TYCHO_OK)
            rc = append_piece_plain(r, out, z.data + z.off, z.len);
        tycho_buf_dispose(&z);
    }
    if (rc == TYCHO_OK && r->stream_chunked)
        rc = tycho_http_write_last_chunk(out);
    return rc;
}

void tycho_chunks_free(struct tycho_req *r)
{
    if (r->stream_gzip) {
        tycho_gzip_stream_dispose(r->stream_gzip);
        free(r->stream_gzip);
        r->stream_gzip = NULL;
    }
}

