/*
 * gzip.c: response compression (gzip.h): Accept-Encoding, the types worth
 * compressing, a streaming deflate into a tycho_buf, and the decision and
 * compression of whole responses. Worker thread of the request or stream.
 *
 * A worker compresses whole responses with one z_stream, made on first use
 * and reset (deflateReset keeps its memory) after each response: allocating
 * zlib's state costs about 256 KiB and a page-fault storm, resetting it a
 * 64 KiB memset of the hash heads. The compressed bytes go to one buffer of
 * the worker's, kept between responses unless one made it large.
 */
#include "http/gzip.h"
#include "core/config.h"
#include "core/tycho.h"
#include "http/context.h"
#include "http/http.h"
#include "http/router.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* zlib's defaults: a 32 KiB window (15) and memLevel 8; 16 asks for the gzip wrapper. */
#define WINDOW_BITS (15 + 16)
#define MEM_LEVEL 8
/*
 * A streamed response keeps its own compressor for as long as it lasts, and
 * many may be open at once (Server-Sent Events): a 4 KiB window and memLevel
 * 4 hold about 24 KiB instead of 256, for a little less compression.
 */
#define LEAN_WINDOW_BITS (12 + 16)
#define LEAN_MEM_LEVEL 4
/* The most zlib is given or asked to fill at once (its counters are 32-bit). */
#define PIECE_MAX ((size_t)1 << 30)
/* A worker's output buffer larger than this is freed before its next use. */
#define KEEP_OUT_BYTES ((size_t)1 << 20)

struct tycho_gzip {
    struct tycho_gzip_stream z;   /* ready for the next response */
    struct tycho_buf out;         /* the last compressed body */
};

/* ---- the stream ---------------------------------------------------------- */

static int stream_init(struct tycho_gzip_stream *z, int level, int window_bits, int mem_level)
{
    memset(z, 0, sizeof(*z));
    if (level < 0 || level > 9)
        return TYCHO_ERR;
    if (deflateInit2(&z->_zs, level, Z_DEFLATED, window_bits, mem_level, Z_DEFAULT_STRATEGY) !=
        Z_OK)
        return TYCHO_ERR;
    z->_live = true;
    return TYCHO_OK;
}

int tycho_gzip_stream_init(struct tycho_gzip_stream *z, int level)
{
    return stream_init(z, level, WINDOW_BITS, MEM_LEVEL);
}

int tycho_gzip_stream_init_lean(struct tycho_gzip_stream *z, int level)
{
    return stream_init(z, level, LEAN_WINDOW_BITS, LEAN_MEM_LEVEL);
}

/*
 * Runs deflate over what z holds as input with mode (Z_NO_FLUSH,
 * Z_SYNC_FLUSH, Z_FINISH) until it has taken it all and, when flushing or
 * finishing, given out everything.
 */
static int pump(struct tycho_gzip_stream *z, int mode, struct tycho_buf *out)
{
    z_stream *s = &z->_zs;

    for (;;) {
        size_t room = s->avail_in ? deflateBound(s, s->avail_in) : 256;
        char *dst;
        int rc;

        room = room > PIECE_MAX ? PIECE_MAX : room;
        if (!(dst = tycho_buf_reserve(out, room)))
            return TYCHO_ERR;
        s->next_out = (Bytef *)dst;
        s->avail_out = (uInt)room;
        rc = deflate(s, mode);
        out->len += room - s->avail_out;
        if (rc == Z_STREAM_END)
            return TYCHO_OK;
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return TYCHO_ERR;
        /* Room left over means deflate had nothing more to give for this mode. */
        if (s->avail_in == 0 && s->avail_out > 0 && mode != Z_FINISH)
            return TYCHO_OK;
    }
}

int tycho_gzip_stream_write(struct tycho_gzip_stream *z, const char *data, size_t len, bool flush,
                            struct tycho_buf *out)
{
    if (!z->_live)
        return TYCHO_ERR;
    do {
        size_t n = len > PIECE_MAX ? PIECE_MAX : len;
        z->_zs.next_in = (Bytef *)(uintptr_t)data;   /* zlib does not write through next_in */
        z->_zs.avail_in = (uInt)n;
        if (pump(z, flush && n == len ? Z_SYNC_FLUSH : Z_NO_FLUSH, out) < 0)
            return TYCHO_ERR;
        data += n;
        len -= n;
    } while (len > 0);
    return TYCHO_OK;
}

int tycho_gzip_stream_finish(struct tycho_gzip_stream *z, struct tycho_buf *out)
{
    if (!z->_live)
        return TYCHO_ERR;
    z->_zs.next_in = NULL;
    z->_zs.avail_in = 0;
    return pump(z, Z_FINISH, out);
}

int tycho_gzip_stream_reset(struct tycho_gzip_stream *z)
{
    return z->_live && deflateReset(&z->_zs) == Z_OK ? TYCHO_OK : TYCHO_ERR;
}

void tycho_gzip_stream_dispose(struct tycho_gzip_stream *z)
{
    if (z->_live)
        deflateEnd(&z->_zs);
    z->_live = false;
}

/* ---- negotiation --------------------------------------------------------- */

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static const char *skip_ows(const char *p, const char *end)
{
    while (p < end && is_ows(*p))
        p++;
    return p;
}

/* A qvalue (RFC 9110 12.4.2: 0[.ddd] or 1[.000]) in thousandths, or -1 when malformed. */
static int parse_qvalue(const char *p, const char *end)
{
    int q, scale = 100;

    if (p >= end || (*p != '0' && *p != '1'))
        return -1;
    q = (*p++ - '0') * 1000;
    if (p == end)
        return q;
    if (*p++ != '.' || end - p > 3)
        return -1;
    for (; p < end; p++, scale /= 10) {
        if (*p < '0' || *p > '9' || (q == 1000 && *p != '0'))
            return -1;
        q += (*p - '0') * scale;
    }
    return q;
}

/*
 * The weight of one list element's parameters (p..end, after the coding):
 * its q, 1000 when it has none, -1 when they are malformed.
 */
static int element_weight(const char *p, const char *end)
{
    int q = 1000;

    for (;;) {
        const char *name, *value;
        p = skip_ows(p, end);
        if (p == end)
            return q;
        if (*p != ';')
            return -1;
        name = p = skip_ows(p + 1, end);
        while (p < end && *p != '=' && *p != ';' && !is_ows(*p))
            p++;
        if (p == end || *p != '=')
            return -1;
        value = ++p;
        while (p < end && *p != ';' && !is_ows(*p))
            p++;
        if (value - name == 2 && (*name == 'q' || *name == 'Q') &&
            (q = parse_qvalue(value, p)) < 0)
            return -1;
    }
}

static bool coding_is(const char *s, size_t len, const char *want)
{
    return strlen(want) == len && strncasecmp(s, want, len) == 0;
}

/* Takes one Accept-Encoding value into the weights of gzip and of "*" (-1: not named). */
static void scan_accept(const char *p, const char *end, int *gzip, int *star)
{
    while (p < end) {
        const char *elem = skip_ows(p, end), *stop = memchr(elem, ',', (size_t)(end - elem));
        const char *name_end = elem;
        int q;

        stop = stop ? stop : end;
        while (name_end < stop && *name_end != ';' && !is_ows(*name_end))
            name_end++;
        p = stop + (stop < end);
        if (name_end == elem || (q = element_weight(name_end, stop)) < 0)
            continue;                 /* an empty element, or malformed: ignored */
        if (coding_is(elem, (size_t)(name_end - elem), "gzip") ||
            coding_is(elem, (size_t)(name_end - elem), "x-gzip"))
            *gzip = q > *gzip ? q : *gzip;
        else if (coding_is(elem, (size_t)(name_end - elem), "*"))
            *star = q > *star ? q : *star;
    }
}

bool tycho_gzip_accepts(const struct tycho_req *r)
{
    int gzip = -1, star = -1;

    for (unsigned i = 0; i < r->nheaders; i++) {
        const struct tycho_header *h = &r->headers[i];
        if (h->name_len == 15 && strncasecmp(h->name, "accept-encoding", 15) == 0)
            scan_accept(h->value, h->value + h->value_len, &gzip, &star);
    }
    return gzip >= 0 ? gzip > 0 : star > 0;
}

static bool has_prefix(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && strncasecmp(s, prefix, n) == 0;
}

static bool has_suffix(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && strncasecmp(s + len - n, suffix, n) == 0;
}

bool tycho_gzip_type_ok(const char *content_type, size_t len)
{
    static const char *const exact[] = {
        "application/json", "application/javascript", "application/ecmascript",
        "application/xml", "application/wasm", "application/x-www-form-urlencoded",
        "image/svg+xml",
    };
    const char *end = content_type + len, *p = skip_ows(content_type, end), *t = p;

    while (p < end && *p != ';' && !is_ows(*p))
        p++;
    len = (size_t)(p - t);
    if (has_prefix(t, len, "text/") && len > 5)
        return true;
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++)
        if (coding_is(t, len, exact[i]))
            return true;
    return has_prefix(t, len, "application/") &&
           (has_suffix(t, len, "+json") || has_suffix(t, len, "+xml"));
}

/* ---- whole responses ----------------------------------------------------- */

/* The value of r's first response header named name, trimmed; NULL when none. */
static const char *res_header(const struct tycho_req *r, const char *name, size_t *len)
{
    size_t at = 0, line_len, name_len = strlen(name);
    const char *line = tycho_http_find_header(r, &at, name, name_len, &line_len);
    const char *v, *end;

    if (!line)
        return NULL;
    end = line + line_len;
    v = skip_ows(line + name_len + 1, end);
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || is_ows(end[-1])))
        end--;
    *len = (size_t)(end - v);
    return v;
}

/* Whether a Vary line of r's already names Accept-Encoding or "*". */
static bool varies_already(const struct tycho_req *r)
{
    size_t at = 0, line_len;
    const char *line;

    while ((line = tycho_http_find_header(r, &at, "Vary", 4, &line_len))) {
        const char *p = line + 5, *end = line + line_len, *e;
        while (p < end) {
            p = skip_ows(p, end);
            for (e = p; e < end && *e != ',' && !is_ows(*e) && *e != '\r'; e++) {
            }
            size_t n = (size_t)(e - p);
            if (coding_is(p, n, "accept-encoding") || coding_is(p, n, "*"))
                return true;
            while (e < end && *e != ',')
                e++;
            p = e + 1;
        }
    }
    return false;
}

/*
 * A handler's "Content-Encoding: identity" (its way to keep one response
 * uncompressed) is removed; any other Content-Encoding stays. Whether r's
 * response had one.
 */
static bool take_content_encoding(struct tycho_req *r)
{
    size_t len;
    const char *v = res_header(r, "Content-Encoding", &len);

    if (v && coding_is(v, len, "identity"))
        tycho_http_remove_header(r, "Content-Encoding", 16);
    return v != NULL;
}

/* Whether compression is on for r's route: the route's option, else --gzip. */
static bool enabled_for(const struct tycho_ctx *ctx, const struct tycho_req *r)
{
    const struct tycho_route_opts *o =
        ctx->app.route_opts ? ctx->app.route_opts(ctx->app.self, r->match.handler_id) : NULL;
    enum tycho_route_gzip mode = o ? o->gzip : TYCHO_ROUTE_GZIP_DEFAULT;

    return mode == TYCHO_ROUTE_GZIP_ON || (mode == TYCHO_ROUTE_GZIP_DEFAULT && ctx->cfg->gzip);
}

/*
 * Whether r's response is one that compression applies to (before asking
 * the client): see tycho_gzip_respond.
 */
static bool compressible(const struct tycho_ctx *ctx, const struct tycho_req *r)
{
    const char *v;
    size_t len;

    if ((r->res_flags & TYCHO_RES_FILE) || r->status < 200 || r->status == 204 ||
        r->status == 206 || r->status == 304 || r->res_body_len < ctx->cfg->gzip_min_bytes)
        return false;
    if (res_header(r, "Content-Range", &len))
        return false;
    v = res_header(r, "Content-Type", &len);
    return !v || tycho_gzip_type_ok(v, len);   /* none: the writer says text/plain */
}

/* The worker's compressor, made on first use; NULL when out of memory. */
static struct tycho_gzip *compressor(struct tycho_ctx *ctx)
{
    struct tycho_gzip *g = ctx->gzip;

    if (g)
        return g;
    if (!(g = calloc(1, sizeof(*g))))
        return NULL;
    if (tycho_gzip_stream_init(&g->z, ctx->cfg->gzip_level) < 0) {
        tycho_gzip_stream_dispose(&g->z);
        free(g);
        return NULL;
    }
    return ctx->gzip = g;
}

/* Compresses len bytes of body into g->out; the stream is left ready for the next body. */
static int compress_body(struct tycho_ctx *ctx, const char *body, size_t len)
{
    struct tycho_gzip *g = compressor(ctx);
    int rc;

    if (!g)
        return TYCHO_ERR;
    if (g->out.cap > KEEP_OUT_BYTES)
        tycho_buf_dispose(&g->out);   /* the last body was large: not kept for the next */
    g->out.len = g->out.off = 0;
    rc = tycho_gzip_stream_write(&g->z, body, len, false, &g->out) == TYCHO_OK &&
                 tycho_gzip_stream_finish(&g->z, &g->out) == TYCHO_OK
             ? TYCHO_OK
             : TYCHO_ERR;
    if (tycho_gzip_stream_reset(&g->z) < 0) {
        tycho_gzip_free(g);           /* made anew on the next use */
        ctx->gzip = NULL;
        return TYCHO_ERR;
    }
    return rc;
}

void tycho_gzip_respond(struct tycho_ctx *ctx, struct tycho_req *r)
{
    struct tycho_gzip *g;

    /* The common case, compression off and no Content-Encoding to look at, costs one test. */
    if (!(r->res_flags & TYCHO_RES_CONTENT_ENCODING) && !enabled_for(ctx, r))
        return;
    if (take_content_encoding(r) || !enabled_for(ctx, r) || !compressible(ctx, r))
        return;
    if (!varies_already(r) && tycho_http_add_header(r, "Vary", 4, "Accept-Encoding", 15) < 0)
        return;
    if (!tycho_gzip_accepts(r) || compress_body(ctx, r->res_body, r->res_body_len) < 0)
        return;
    g = ctx->gzip;
    if (g->out.len >= r->res_body_len)
        return;                       /* it did not shrink: sent as it is */
    if (tycho_http_add_header(r, "Content-Encoding", 16, "gzip", 4) < 0)
        return;
    r->res_body = g->out.data + g->out.off;
    r->res_body_len = g->out.len;
}

bool tycho_gzip_stream_start(struct tycho_ctx *ctx, struct tycho_req *r)
{
    size_t len;
    const char *v;

    if (take_content_encoding(r) || !enabled_for(ctx, r) || r->status < 200 ||
        r->status == 204 || r->status == 206 || r->status == 304 ||
        res_header(r, "Content-Range", &len))
        return false;
    v = res_header(r, "Content-Type", &len);
    if (v && !tycho_gzip_type_ok(v, len))
        return false;
    if (!varies_already(r) && tycho_http_add_header(r, "Vary", 4, "Accept-Encoding", 15) < 0)
        return false;
    return tycho_gzip_accepts(r) &&
           tycho_http_add_header(r, "Content-Encoding", 16, "gzip", 4) == TYCHO_OK;
}

void tycho_gzip_free(struct tycho_gzip *g)
{
    if (!g)
        return;
    tycho_gzip_stream_dispose(&g->z);
    tycho_buf_dispose(&g->out);
    free(g);
}
