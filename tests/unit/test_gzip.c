/*
 * test_gzip.c: unit tests for http/gzip.[ch]: Accept-Encoding negotiation
 * (table-driven, q-values, "*", case, white space, malformed elements), the
 * compressible types, the streaming compressor (every piece size, sync
 * flushes that make everything so far decodable, finish, reset and reuse,
 * empty input), and tycho_gzip_respond on request contexts (what it
 * compresses, Vary, a handler's Content-Encoding, statuses, sizes, route
 * options). Output is checked by inflating it with zlib. Single-threaded.
 * Ends with the harness line `N passed, M failed`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/config.h"
#include "harness.h"
#include "http/context.h"
#include "http/gzip.h"
#include "http/http.h"
#include "http/router.h"

static char what_buf[256];

static const char *what(const char *fmt, const char *a)
{
    snprintf(what_buf, sizeof(what_buf), fmt, a);
    return what_buf;
}

/* Inflates a whole gzip member (or a prefix of one, when partial) into out; its length or -1. */
static long gunzip(const char *in, size_t len, char *out, size_t cap, bool partial)
{
    z_stream s;
    int rc;
    long n;

    memset(&s, 0, sizeof(s));
    if (inflateInit2(&s, 15 + 16) != Z_OK)
        return -1;
    s.next_in = (Bytef *)(uintptr_t)in;
    s.avail_in = (uInt)len;
    s.next_out = (Bytef *)out;
    s.avail_out = (uInt)cap;
    rc = inflate(&s, Z_SYNC_FLUSH);
    n = (long)(cap - s.avail_out);
    inflateEnd(&s);
    if (partial ? (rc != Z_OK && rc != Z_STREAM_END) : rc != Z_STREAM_END)
        return -1;
    return n;
}

/* ---- Accept-Encoding ------------------------------------------------------- */

static const struct {
    const char *value;   /* one header's value; "\n" separates several headers */
    bool want;
} accepts[] = {
    {"gzip", true},
    {"GZIP", true},
    {"x-gzip", true},
    {"gzip, deflate, br", true},
    {"deflate, gzip;q=0.5", true},
    {"deflate", false},
    {"br;q=1.0, deflate", false},
    {"identity", false},
    {"", false},
    {"*", true},
    {"*;q=0", false},
    {"*;q=0.001", true},
    {"gzip;q=0", false},
    {"gzip;q=0.0", false},
    {"gzip;q=0.000", false},
    {"gzip; q=0", false},
    {"gzip ;q=0", false},
    {"gzip;Q=0", false},
    {"gzip;q=0, *", false},        /* gzip named: its own weight wins over "*" */
    {"*, gzip;q=0", false},
    {"gzip;q=0.5, *;q=0", true},
    {"gzip;q=1", true},
    {"gzip;q=1.000", true},
    {"gzip;q=1.5", false},         /* malformed: the element is ignored */
    {"gzip;q=0.0001", false},
    {"gzip;q=", false},
    {"gzip;q", false},
    {"gzip;level=9", true},        /* another parameter: ignored */
    {"gzip;level=9;q=0", false},
    {"  gzip  ", true},
    {"\tdeflate ,\tgzip\t;\tq=0.8", true},
    {",,gzip,,", true},
    {"gzipx", false},
    {"gzi", false},
    {"identity;q=0", false},
    {"identity;q=0, *;q=0", false},
    {"deflate\ngzip", true},       /* two Accept-Encoding headers: one list */
    {"gzip;q=0\n*", false},
};

static void check_accepts(void)
{
    for (size_t i = 0; i < sizeof(accepts) / sizeof(accepts[0]); i++) {
        struct tycho_header h[4];
        struct tycho_req r;
        const char *v = accepts[i].value;

        memset(&r, 0, sizeof(r));
        r.headers = h;
        for (const char *p = v; r.nheaders < 4;) {
            const char *nl = strchr(p, '\n');
            h[r.nheaders].name = r.nheaders % 2 ? "Accept-Encoding" : "accept-encoding";
            h[r.nheaders].name_len = 15;
            h[r.nheaders].value = p;
            h[r.nheaders].value_len = nl ? (size_t)(nl - p) : strlen(p);
            r.nheaders++;
            if (!nl)
                break;
            p = nl + 1;
        }
        is_int(tycho_gzip_accepts(&r), accepts[i].want, what("accepts \"%s\"", v));
    }
    struct tycho_req none;
    struct tycho_header other = {"Accept", 6, "gzip", 4};
    memset(&none, 0, sizeof(none));
    ok(!tycho_gzip_accepts(&none), "no Accept-Encoding: no gzip");
    none.headers = &other;
    none.nheaders = 1;
    ok(!tycho_gzip_accepts(&none), "another header saying gzip: no gzip");
}

/* ---- types ------------------------------------------------------------------ */

static const struct {
    const char *type;
    bool want;
} types[] = {
    {"text/plain", true},
    {"text/html; charset=utf-8", true},
    {"TEXT/CSS", true},
    {"text/event-stream", true},
    {"application/json", true},
    {"application/json; charset=utf-8", true},
    {"application/javascript", true},
    {"application/xml", true},
    {"application/wasm", true},
    {"application/problem+json", true},
    {"application/atom+xml", true},
    {"application/manifest+json", true},
    {"image/svg+xml", true},
    {" application/json ;x=y", true},
    {"image/png", false},
    {"image/jpeg", false},
    {"application/octet-stream", false},
    {"application/gzip", false},
    {"application/zip", false},
    {"video/mp4", false},
    {"font/woff2", false},
    {"text/", false},
    {"text", false},
    {"", false},
    {"application/jsonx", false},
    {"image/svg+xmlx", false},
};

static void check_types(void)
{
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        is_int(tycho_gzip_type_ok(types[i].type, strlen(types[i].type)), types[i].want,
               what("type \"%s\"", types[i].type));
}

/* ---- the stream -------------------------------------------------------------- */

/* Some text that compresses, of len bytes. */
static char *sample(size_t len)
{
    static const char line[] = "{\"id\":12,\"name\":\"tycho\",\"tags\":[\"a\",\"b\"]}\n";
    char *s = malloc(len + 1);

    for (size_t i = 0; i < len; i++)
        s[i] = (char)(line[i % (sizeof(line) - 1)] + (char)(i / 997 % 3));
    s[len] = '\0';
    return s;
}

/* Writes data in pieces of piece bytes, flushing every flush_every pieces (0: never). */
static void check_stream(size_t len, size_t piece, int flush_every, int level)
{
    struct tycho_gzip_stream z;
    struct tycho_buf out = {0};
    char *data = sample(len), *back = malloc(len + 1);
    char label[128];
    bool good = true;
    int n = 0;

    snprintf(label, sizeof(label), "stream of %zu bytes in pieces of %zu, flush every %d, level %d",
             len, piece, flush_every, level);
    ok(tycho_gzip_stream_init(&z, level) == TYCHO_OK, label);
    for (size_t at = 0; at < len; at += piece) {
        size_t k = len - at < piece ? len - at : piece;
        bool flush = flush_every && ++n % flush_every == 0;
        good &= tycho_gzip_stream_write(&z, data + at, k, flush, &out) == TYCHO_OK;
        /* After a sync flush, everything written so far decodes from what came out. */
        if (flush && good)
            good &= gunzip(out.data, out.len, back, len, true) == (long)(at + k) &&
                    memcmp(back, data, at + k) == 0;
    }
    good &= tycho_gzip_stream_finish(&z, &out) == TYCHO_OK;
    ok(good, label);
    is_int(gunzip(out.data, out.len, back, len + 1, false), (long)len, label);
    ok(memcmp(back, data, len) == 0, label);
    if (len >= 4096)
        ok(out.len < len / 2, label);
    /* Reset and reuse: a second member from the same state. */
    out.len = 0;
    ok(tycho_gzip_stream_reset(&z) == TYCHO_OK &&
           tycho_gzip_stream_write(&z, data, len, false, &out) == TYCHO_OK &&
           tycho_gzip_stream_finish(&z, &out) == TYCHO_OK &&
           gunzip(out.data, out.len, back, len + 1, false) == (long)len &&
           memcmp(back, data, len) == 0,
       label);
    tycho_gzip_stream_dispose(&z);
    tycho_gzip_stream_dispose(&z);    /* idempotent */
    tycho_buf_dispose(&out);
    free(data);
    free(back);
}

static void check_streams(void)
{
    struct tycho_gzip_stream z;

    check_stream(0, 1, 0, 1);
    check_stream(1, 1, 1, 1);
    check_stream(100, 7, 3, 6);
    check_stream(5000, 5000, 0, 1);
    check_stream(5000, 1, 500, 1);
    check_stream(300000, 4096, 4, 1);
    check_stream(300000, 65536, 1, 9);
    check_stream(2000000, 2000000, 0, 1);
    ok(tycho_gzip_stream_init(&z, 10) == TYCHO_ERR, "level 10 is refused");
    tycho_gzip_stream_dispose(&z);
    ok(tycho_gzip_stream_init(&z, -1) == TYCHO_ERR, "level -1 is refused");
    tycho_gzip_stream_dispose(&z);
    struct tycho_buf out = {0};
    ok(tycho_gzip_stream_write(&z, "x", 1, false, &out) == TYCHO_ERR, "a disposed stream refuses");
}

/* ---- whole responses ---------------------------------------------------------- */

static struct tycho_config cfg;
static struct tycho_route_opts route_opts;
static bool has_route_opts;

static const struct tycho_route_opts *opts_of(void *self, int handler_id)
{
    (void)self;
    return has_route_opts && handler_id == 7 ? &route_opts : NULL;
}

/* A request context with a response: status, body, headers ("" or lines), Accept-Encoding. */
static struct tycho_req *make_req(int status, const char *body, const char *headers,
                                  const char *accept)
{
    static struct tycho_header h;
    struct tycho_req *r = malloc(sizeof(*r));

    memset(r, 0, sizeof(*r));
    if (tycho_req_init(r) < 0)
        abort();
    r->status = status;
    r->res_body = body;
    r->res_body_len = strlen(body);
    r->match.handler_id = 7;
    if (*headers) {
        r->res_headers = tycho_arena_alloc(&r->arena, strlen(headers));
        memcpy(r->res_headers, headers, strlen(headers));
        r->res_headers_len = strlen(headers);
    }
    if (accept) {
        h = (struct tycho_header){"Accept-Encoding", 15, accept, strlen(accept)};
        r->headers = &h;
        r->nheaders = 1;
    }
    return r;
}

static void drop_req(struct tycho_req *r)
{
    r->headers = NULL;
    tycho_req_dispose(r);
    free(r);
}

/* The response's header lines as one string (for strstr). */
static const char *headers_of(const struct tycho_req *r)
{
    static char buf[1024];
    size_t n = r->res_headers_len < sizeof(buf) - 1 ? r->res_headers_len : sizeof(buf) - 1;

    memcpy(buf, r->res_headers ? r->res_headers : "", n);
    buf[n] = '\0';
    return buf;
}

/* Runs tycho_gzip_respond; says whether it compressed, and checks the body when it did. */
static bool respond(struct tycho_ctx *ctx, struct tycho_req *r, const char *label)
{
    const char *orig = r->res_body;
    size_t orig_len = r->res_body_len;
    char *back = malloc(orig_len + 1);
    bool zipped;

    tycho_gzip_respond(ctx, r);
    zipped = strstr(headers_of(r), "Content-Encoding: gzip\r\n") != NULL;
    if (zipped) {
        ok(r->res_body != orig && r->res_body_len < orig_len, label);
        ok(gunzip(r->res_body, r->res_body_len, back, orig_len + 1, false) == (long)orig_len &&
               memcmp(back, orig, orig_len) == 0,
           label);
    } else {
        ok(r->res_body == orig && r->res_body_len == orig_len, label);
    }
    free(back);
    return zipped;
}

struct respond_case {
    const char *label;
    int status;
    const char *headers;
    const char *accept;     /* NULL: no Accept-Encoding */
    bool big;               /* a body over --gzip-min-bytes (else 10 bytes) */
    bool zipped;            /* the body is compressed */
    bool vary;              /* our Vary line is added */
    const char *after;      /* the response headers must then contain this ("" any) */
};

static const struct respond_case cases[] = {
    {"text, gzip accepted", 200, "", "gzip", true, true, true, ""},
    {"no Accept-Encoding", 200, "", NULL, true, false, true, ""},
    {"gzip;q=0", 200, "", "gzip;q=0", true, false, true, ""},
    {"small body", 200, "", "gzip", false, false, false, ""},
    {"json", 200, "Content-Type: application/json\r\n", "gzip", true, true, true, ""},
    {"png", 200, "Content-Type: image/png\r\n", "gzip", true, false, false, ""},
    {"the handler's own encoding", 200, "Content-Encoding: br\r\n", "gzip", true, false, false,
     "Content-Encoding: br\r\n"},
    {"identity: kept as is, header removed", 200, "X-A: 1\r\nContent-Encoding: identity\r\n",
     "gzip", true, false, false, "X-A: 1\r\n"},
    {"206", 206, "Content-Range: bytes 0-9/100\r\n", "gzip", true, false, false, ""},
    {"Content-Range on a 200", 200, "Content-Range: bytes 0-9/100\r\n", "gzip", true, false,
     false, ""},
    {"204", 204, "", "gzip", true, false, false, ""},
    {"304", 304, "", "gzip", true, false, false, ""},
    {"500 text", 500, "", "gzip", true, true, true, ""},
    {"Vary: Origin kept, ours added", 200, "Vary: Origin\r\n", "gzip", true, true, true,
     "Vary: Origin\r\n"},
    {"Vary already names it", 200, "Vary: Origin, accept-encoding\r\n", "gzip", true, true, false,
     ""},
    {"Vary: *", 200, "Vary: *\r\n", "gzip", true, true, false, ""},
};

static void check_respond_case(struct tycho_ctx *ctx, const struct respond_case *c, char *big)
{
    struct tycho_req *r = make_req(c->status, c->big ? big : "0123456789", c->headers, c->accept);
    const char *h;

    is_int(respond(ctx, r, c->label), c->zipped, c->label);
    h = headers_of(r);
    is_int(strstr(h, "Vary: Accept-Encoding\r\n") != NULL, c->vary, c->label);
    ok(strstr(h, c->after) != NULL, c->label);
    if (strstr(c->label, "identity"))
        ok(!strstr(h, "Content-Encoding"), "identity: no Content-Encoding is sent");
    drop_req(r);
}

static void check_responses(void)
{
    struct tycho_ctx ctx;
    char *big = sample(3000);
    struct tycho_req *r;

    tycho_config_defaults(&cfg);
    memset(&ctx, 0, sizeof(ctx));
    ctx.cfg = &cfg;

    r = make_req(200, big, "", "gzip");
    ok(!respond(&ctx, r, "off by default"), "off by default");
    ok(r->res_headers_len == 0, "off: no Vary");
    drop_req(r);

    cfg.gzip = true;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_respond_case(&ctx, &cases[i], big);

    r = make_req(200, big, "", "gzip");
    r->is_head = true;
    ok(respond(&ctx, r, "HEAD: compressed too (its length is GET's)"), "HEAD compressed");
    drop_req(r);

    /* A body that does not shrink is sent as it is (with Vary). */
    char noise[2000];
    unsigned x = 12345;
    for (size_t i = 0; i < sizeof(noise) - 1; i++, x = x * 1103515245 + 12345)
        noise[i] = (char)(1 + (x >> 16) % 255);
    noise[sizeof(noise) - 1] = '\0';
    r = make_req(200, noise, "", "gzip");
    ok(!respond(&ctx, r, "incompressible"), "a body that does not shrink is not compressed");
    ok(strstr(headers_of(r), "Vary: Accept-Encoding\r\n") != NULL, "incompressible: Vary");
    drop_req(r);

    cfg.gzip_min_bytes = 5;
    r = make_req(200, "0123456789", "", "gzip");
    tycho_gzip_respond(&ctx, r);
    ok(strstr(headers_of(r), "Vary") != NULL, "--gzip-min-bytes 5: a 10-byte body qualifies");
    drop_req(r);
    cfg.gzip_min_bytes = 1024;

    /* Route options: off on a route while --gzip is on; on while --gzip is off. */
    ctx.app.route_opts = opts_of;
    has_route_opts = true;
    route_opts.gzip = TYCHO_ROUTE_GZIP_OFF;
    r = make_req(200, big, "", "gzip");
    ok(!respond(&ctx, r, "route gzip = false"), "route gzip = false");
    ok(r->res_headers_len == 0, "route gzip = false: no Vary");
    drop_req(r);
    cfg.gzip = false;
    route_opts.gzip = TYCHO_ROUTE_GZIP_ON;
    r = make_req(200, big, "", "gzip");
    ok(respond(&ctx, r, "route gzip = true without --gzip"), "route gzip = true");
    drop_req(r);
    r = make_req(200, big, "", "gzip");
    r->match.handler_id = 3;       /* a route without options: --gzip (off) */
    ok(!respond(&ctx, r, "another route"), "a route without options follows --gzip");
    drop_req(r);

    /* A file body (app.static) is never compressed here. */
    cfg.gzip = true;
    r = make_req(200, big, "", "gzip");
    r->res_flags |= TYCHO_RES_FILE;
    ok(!respond(&ctx, r, "a file body"), "a file body is not compressed");
    drop_req(r);

    tycho_gzip_free(ctx.gzip);
    tycho_gzip_free(NULL);
    free(big);
}

int main(void)
{
    check_accepts();
    check_types();
    check_streams();
    check_responses();
    return test_summary();
}
