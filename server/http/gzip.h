/*
 * gzip.h: response compression with zlib. Three parts:
 *
 *   - content negotiation: whether a request accepts gzip (Accept-Encoding with
 *     its q-values) and whether a Content-Type is worth compressing;
 *   - a streaming compressor (struct tycho_gzip_stream) that appends gzip bytes to
 *     a struct tycho_buf piece by piece, flushing when asked, for bodies written
 *     in parts;
 *   - tycho_gzip_respond, which the connection calls on a whole response just
 *     before writing it: it decides (--gzip, the route's option, the handler's
 *     headers, status, type, size, the client), adds Vary and Content-Encoding,
 *     and points the body at the compressed bytes.
 *
 * Everything here runs on the worker thread that owns the request or the
 * stream; nothing is shared. A worker keeps one deflate state (about 256 KiB
 * with zlib's window and memory defaults) and one output buffer for whole
 * responses, made on first use and reset for each response (struct tycho_gzip,
 * owned by the worker's context, freed with it).
 */
#ifndef TYCHO_GZIP_H
#define TYCHO_GZIP_H

#include <stdbool.h>
#include <stddef.h>
#include <zlib.h>

#include "core/buf.h"

struct tycho_ctx;
struct tycho_req;

/* The defaults of --gzip-level and --gzip-min-bytes (core/config.c says them too). */
#define TYCHO_GZIP_DEFAULT_LEVEL 1
#define TYCHO_GZIP_DEFAULT_MIN_BYTES 1024

/*
 * A streaming gzip compressor. Embedded in its owner (a response being
 * written in parts); its fields are zlib's and nobody else's. One thread.
 */
struct tycho_gzip_stream {
    z_stream _zs;      /* zlib's state; its allocation is owned while _live */
    bool _live;        /* deflateInit2 succeeded and deflateEnd has not run */
};

/*
 * Makes z ready to compress a new gzip member at level (1..9; 0 stores).
 * Allocates zlib's state (about 256 KiB). TYCHO_OK, or TYCHO_ERR (out of
 * memory, a bad level); z is then disposable either way.
 */
int tycho_gzip_stream_init(struct tycho_gzip_stream *z, int level);

/*
 * The same with a 4 KiB window and memLevel 4 (about 24 KiB of zlib state):
 * for a streamed response, which keeps its compressor while it lasts.
 */
int tycho_gzip_stream_init_lean(struct tycho_gzip_stream *z, int level);

/*
 * Compresses len bytes of data and appends what zlib produced to out. With
 * flush, every byte given so far is emitted (Z_SYNC_FLUSH: the client can
 * decompress all of it now, at some cost in ratio); without, zlib may keep
 * some back until later. data is borrowed for the call. TYCHO_OK, or
 * TYCHO_ERR (out of memory: out may hold part of the output; z is then only
 * fit for tycho_gzip_stream_dispose).
 */
int tycho_gzip_stream_write(struct tycho_gzip_stream *z, const char *data, size_t len, bool flush,
                            struct tycho_buf *out);

/*
 * Ends the gzip member: appends the rest of the compressed bytes and the
 * trailer (CRC and length) to out. After it, only _reset or _dispose.
 * TYCHO_OK or TYCHO_ERR (out of memory).
 */
int tycho_gzip_stream_finish(struct tycho_gzip_stream *z, struct tycho_buf *out);

/* Starts a new member with the same level, keeping zlib's memory. TYCHO_OK or TYCHO_ERR. */
int tycho_gzip_stream_reset(struct tycho_gzip_stream *z);

/* Frees zlib's state. Idempotent; fine after a failed init. */
void tycho_gzip_stream_dispose(struct tycho_gzip_stream *z);

/*
 * Whether r's Accept-Encoding headers (all of them, as one list) accept
 * gzip: "gzip" or "x-gzip" with a q-value above 0, or, when neither is
 * named, "*" with a q-value above 0. Names are case-insensitive; white space
 * around elements and parameters is allowed; an element with a malformed
 * q-value is ignored. No header: false.
 */
bool tycho_gzip_accepts(const struct tycho_req *r);

/*
 * Whether a Content-Type value (len bytes, parameters allowed) is worth
 * compressing: every text/ type, image/svg+xml, application/json, application/javascript,
 * application/ecmascript, application/xml, application/wasm,
 * application/x-www-form-urlencoded, and any application/...+json or
 * application/...+xml. Case-insensitive.
 */
bool tycho_gzip_type_ok(const char *content_type, size_t len);

/* A worker's compressor for whole responses (opaque; in struct tycho_ctx). */
struct tycho_gzip;

/*
 * Compresses r's response in place when it should be, just before it is
 * written (http/exchange.c). Nothing happens unless compression is on for
 * r's route (--gzip, or the route's gzip option; see struct tycho_route_opts),
 * the body is in memory (not a file), the status carries a body (not 1xx,
 * 204, 304) and is not 206, the handler set no Content-Encoding or
 * Content-Range, the Content-Type passes tycho_gzip_type_ok (no Content-Type
 * counts as text/plain) and the body has at least --gzip-min-bytes. Such a
 * response gets Vary: Accept-Encoding (unless its Vary already names it or
 * "*"); then, if the client accepts gzip and the compressed body is smaller,
 * Content-Encoding: gzip and the compressed body (also for HEAD, so that its
 * Content-Length is GET's). A handler's "Content-Encoding: identity" is
 * removed (compression on or off) and keeps its response as it is. The compressed bytes live in
 * ctx's buffer until the next call. Out of memory leaves the body as it was.
 */
void tycho_gzip_respond(struct tycho_ctx *ctx, struct tycho_req *r);

/*
 * At the head of a streamed response (http/stream.c): the decision of
 * tycho_gzip_respond without the size, which is not known yet. Adds Vary
 * when compression applies to r; returns true, with Content-Encoding: gzip
 * added, when the client accepts it too (the caller then compresses each
 * piece). A handler's "Content-Encoding: identity" is removed as there.
 */
bool tycho_gzip_stream_start(struct tycho_ctx *ctx, struct tycho_req *r);

/* Frees a worker's compressor (tycho_ctx_dispose). NULL is a no-op. */
void tycho_gzip_free(struct tycho_gzip *g);

#endif
