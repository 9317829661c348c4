/*
 * chunks.h: the bytes of a streamed response's body (http/stream.c writes the
 * pieces, http/exchange.c the end): compressed with gzip when --gzip or the
 * route says so and the client accepts it (http/gzip.h decides), framed in
 * chunks for HTTP/1.1. Worker thread of r's connection.
 */
#ifndef TYCHO_CHUNKS_H
#define TYCHO_CHUNKS_H

#include <stddef.h>

struct tycho_buf;
struct tycho_ctx;
struct tycho_req;

/*
 * At the head of r's streamed response: whether its body goes compressed
 * (adding Vary and Content-Encoding); then r gets its own lean compressor
 * (r->stream_gzip, freed by tycho_chunks_free). Out of memory: plain.
 */
void tycho_chunks_gzip_start(struct tycho_ctx *ctx, struct tycho_req *r);

/*
 * Appends len bytes of r's body to out: compressed (each piece flushed, so
 * the client can read it now) when r is, in a chunk when r is chunked.
 * Nothing for len 0. TYCHO_OK or TYCHO_ERR (out of memory).
 */
int tycho_chunks_piece(struct tycho_req *r, struct tycho_buf *out, const char *data, size_t len);

/*
 * The end of r's body, into out: a body the handler still returned
 * (res_body), the rest of the compressed bytes, the last chunk. Once, when
 * the handler has returned, unless the stream was cut short. TYCHO_OK or
 * TYCHO_ERR (out of memory: out may hold part of it).
 */
int tycho_chunks_finish(struct tycho_req *r, struct tycho_buf *out);

/* Frees what r's streamed body holds (its compressor); idempotent. */
void tycho_chunks_free(struct tycho_req *r);

#endif
