/*
 * test_gzip.c: response compression over real sockets.
 *
 *     test_gzip TYCHO_BINARY FIXTURE_DIR
 *
 * FIXTURE_DIR is tests/integration/app (what every suite gets); this suite's
 * own fixture is its sibling tests/integration/gzip/, copied to a temporary
 * directory where the test writes public/: a JavaScript file with a fresh
 * .gz sibling, a CSS file whose .gz is older (stale), a PNG with a .gz (not a
 * compressible type), and a large text file without one.
 *
 * Server A runs with --gzip: Accept-Encoding negotiation (q-values, "*",
 * case, white space, several headers), bodies that decompress (zlib here,
 * and `curl --compressed` once) to what the uncompressed answer holds,
 * Content-Length the compressed length, Vary, short bodies, types, the
 * handler's own Content-Encoding, "identity", 206, HEAD, the route options,
 * keep-alive with compressed and plain responses in turn, and app.static's
 * precompressed files (served, not served, ETag, Range, 304, stale, the
 * mount's gzip = false). Server B runs without the flag (the default: only
 * routes with gzip = true, and .gz siblings). Server C: --gzip-min-bytes and
 * --gzip-level.
 *
 * Single-threaded; every wait is bounded; no check measures time. Ends with
 * the harness line `N passed, M failed`.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "harness.h"
#include "support.h"
#include "client.h"

static char tmp_dir[64];       /* the fixture's copy, with public/ */
static char big[8192];         /* the fixture's 5600-byte text */
static char js[16384];         /* public/app.js */

/* ======================================================================
 * The fixture
 * ====================================================================== */

static int write_file(const char *rel, const char *data, size_t len)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", tmp_dir, rel);
    if (!(f = fopen(path, "wb")))
        return -1;
    if (len && fwrite(data, 1, len, f) != len) {
        fclose(f);
        return -1;
    }
    return fclose(f);
}

/* Writes rel as a gzip file of data (zlib's gzwrite). */
static int write_gz(const char *rel, const char *data, size_t len)
{
    char path[512];
    gzFile f;

    snprintf(path, sizeof path, "%s/%s", tmp_dir, rel);
    if (!(f = gzopen(path, "wb9")))
        return -1;
    if (gzwrite(f, data, (unsigned)len) != (int)len) {
        gzclose(f);
        return -1;
    }
    return gzclose(f) == Z_OK ? 0 : -1;
}

/* Sets rel's modification time to now + delta_s seconds. */
static int touch(const char *rel, long delta_s)
{
    char path[512];
    struct timespec ts[2];

    snprintf(path, sizeof path, "%s/%s", tmp_dir, rel);
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec += delta_s;
    ts[1] = ts[0];
    return utimensat(AT_FDCWD, path, ts, 0);
}

static int make_fixture(void)
{
    char cmd[1024], out[1024];
    size_t n = 0;

    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/tycho-gzip-XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        note("mkdtemp: %s", strerror(errno));
        return -1;
    }
    snprintf(cmd, sizeof cmd, "cp -R %s/../gzip/. %s/ && mkdir %s/public 2>&1", fixture_dir,
             tmp_dir, tmp_dir);
    if (run_command(cmd, out, sizeof out) != 0) {
        note("%s: %s", cmd, out);
        return -1;
    }
    for (int i = 0; i < 200; i++)
        strcat(big, "Lorem ipsum dolor sit amet, ");
    for (int i = 0; n + 64 < sizeof js; i++)
        n += (size_t)snprintf(js + n, sizeof js - n, "function f%d(x) { return x + %d; }\n", i,
                              i * 7);
    if (write_file("public/app.js", js, strlen(js)) < 0 ||
        write_gz("public/app.js.gz", js, strlen(js)) < 0 || touch("public/app.js", -10) < 0 ||
        write_file("public/old.css", big, strlen(big)) < 0 ||
        write_gz("public/old.css.gz", "stale", 5) < 0 || touch("public/old.css.gz", -100) < 0 ||
        write_file("public/pic.png", big, strlen(big)) < 0 ||
        write_gz("public/pic.png.gz", big, strlen(big)) < 0 ||
        write_file("public/plain.txt", big, strlen(big)) < 0) {
        note("writing public/: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static void remove_fixture(void)
{
    char cmd[256], out[256];

    if (tmp_dir[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir);
        run_command(cmd, out, sizeof out);
    }
}

/* ======================================================================
 * Requests
 * ====================================================================== */

/* METHOD path with extra header lines (each ending in \r\n, or ""), on a fresh connection. */
static int request(int port, const char *method, const char *path, const char *extra,
                   struct response *r)
{
    char req[2048];

    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: t\r\n%s\r\n", method, path, extra);
    return fetch(port, req, r);
}

/* Inflates r's gzip body into out (cap bytes); its length, or -1 when it is no gzip. */
static long gunzip_body(const struct response *r, char *out, size_t cap)
{
    z_stream s;
    int rc;
    long n;

    memset(&s, 0, sizeof s);
    if (!r->body || inflateInit2(&s, 15 + 16) != Z_OK)
        return -1;
    s.next_in = (Bytef *)r->body;
    s.avail_in = (uInt)r->body_len;
    s.next_out = (Bytef *)out;
    s.avail_out = (uInt)cap;
    rc = inflate(&s, Z_FINISH);
    n = (long)(cap - s.avail_out);
    inflateEnd(&s);
    return rc == Z_STREAM_END && s.avail_in == 0 ? n : -1;
}

/*
 * Whether r is gzip that decompresses to want (want_len bytes); checks the
 * Content-Length is the compressed length. ctx names the case.
 */
static void expect_gzip(const struct response *r, const char *want, size_t want_len,
                        const char *ctx)
{
    static char out[65536];
    long n;

    expect_header(r, "Content-Encoding", "gzip", ctx);
    check_common(r, 0, -1, ctx);
    ok(r->body_len < want_len, what(ctx, "compressed is shorter (%zu < %zu)", r->body_len,
                                    want_len));
    n = gunzip_body(r, out, sizeof out);
    is_int(n, (long)want_len, what(ctx, "decompressed length"));
    ok(n == (long)want_len && memcmp(out, want, want_len) == 0,
       what(ctx, "decompresses to the original"));
}

/* Whether r is plain: no Content-Encoding, the body is want. */
static void expect_plain(const struct response *r, const char *want, const char *ctx)
{
    ok(header_get(r, "Content-Encoding") == NULL, what(ctx, "no Content-Encoding"));
    check_common(r, 0, -1, ctx);
    if (want) {
        is_int(r->body_len, strlen(want), what(ctx, "body length"));
        ok(r->body && memcmp(r->body, want, strlen(want)) == 0, what(ctx, "the body as sent"));
    }
}

/* Whether r's Vary is Accept-Encoding (vary), or r has none (!vary). */
static void expect_vary(const struct response *r, bool vary, const char *ctx)
{
    if (vary)
        expect_header(r, "Vary", "Accept-Encoding", ctx);
    else
        ok(header_get(r, "Vary") == NULL, what(ctx, "no Vary"));
}

/* ======================================================================
 * The checks
 * ====================================================================== */

static const struct {
    const char *accept;     /* the request's Accept-Encoding lines, or "" */
    bool gzip;
} negotiation[] = {
    {"", false},
    {"Accept-Encoding: gzip\r\n", true},
    {"Accept-Encoding: gzip, deflate, br\r\n", true},
    {"Accept-Encoding: gzip;q=0\r\n", false},
    {"Accept-Encoding: gzip; q=0.000\r\n", false},
    {"Accept-Encoding: *\r\n", true},
    {"Accept-Encoding: *;q=0\r\n", false},
    {"Accept-Encoding: identity;q=0\r\n", false},
    {"Accept-Encoding: identity\r\n", false},
    {"Accept-Encoding: deflate\r\n", false},
    {"Accept-Encoding: deflate, br\r\n", false},
    {"Accept-Encoding: GZip\r\n", true},
    {"Accept-Encoding: X-GZIP\r\n", true},
    {"Accept-Encoding:   deflate ,\t gzip ; q=0.5  \r\n", true},
    {"Accept-Encoding: br, gzip;q=0, *\r\n", false},
    {"Accept-Encoding: br;q=1, *;q=0.1\r\n", true},
    {"Accept-Encoding: gzip;q=2\r\n", false},
    {"Accept-Encoding: deflate\r\nAccept-Encoding: gzip\r\n", true},
    {"Accept-Encoding:\r\n", false},
};

static void test_negotiation(int port)
{
    for (size_t i = 0; i < sizeof negotiation / sizeof negotiation[0]; i++) {
        struct response r;
        char ctx[160];
        snprintf(ctx, sizeof ctx, "A: GET /text with \"%.*s\"",
                 (int)strcspn(negotiation[i].accept, "\r"), negotiation[i].accept);
        if (request(port, "GET", "/text", negotiation[i].accept, &r) == 200) {
            if (negotiation[i].gzip)
                expect_gzip(&r, big, strlen(big), ctx);
            else
                expect_plain(&r, big, ctx);
            expect_vary(&r, true, ctx);
        } else {
            expect_status(&r, 200, ctx);
        }
        response_free(&r);
    }
}

/* GET path with gzip accepted: compressed to want (NULL: the body of GET /plain) or plain. */
static void check_route(int port, const char *path, bool gzip, bool vary, const char *want,
                        const char *ctx)
{
    struct response r, plain;

    memset(&plain, 0, sizeof plain);
    if (!want && request(port, "GET", path, "", &plain) == 200 && plain.body)
        want = plain.body;
    if (request(port, "GET", path, "Accept-Encoding: gzip\r\n", &r) > 0) {
        if (gzip)
            expect_gzip(&r, want ? want : "", want ? strlen(want) : 0, ctx);
        else
            expect_plain(&r, want, ctx);
        expect_vary(&r, vary, ctx);
    } else {
        ok(0, what(ctx, "an answer"));
    }
    response_free(&r);
    response_free(&plain);
}

static void test_routes(int port)
{
    struct response r;
    char head_len[32] = "";

    check_route(port, "/send", true, true, big, "A: res:send");
    check_route(port, "/json", true, true, NULL, "A: a returned table (JSON)");
    check_route(port, "/resjson", true, true, NULL, "A: res:json");
    check_route(port, "/small", false, false, NULL, "A: a body under --gzip-min-bytes");
    check_route(port, "/png", false, false, big, "A: image/png");
    check_route(port, "/off", false, false, big, "A: a route with gzip = false");
    check_route(port, "/on", true, true, big, "A: a route with gzip = true");
    check_route(port, "/plain", false, false, big, "A: Content-Encoding: identity");
    check_route(port, "/nothing-here", false, false, NULL, "A: the server's own 404");

    request(port, "GET", "/plain", "Accept-Encoding: gzip\r\n", &r);
    ok(header_get(&r, "Content-Encoding") == NULL, "A: identity is not sent to the client");
    response_free(&r);

    request(port, "GET", "/own", "Accept-Encoding: gzip\r\n", &r);
    expect_header(&r, "Content-Encoding", "br", "A: the handler's own Content-Encoding");
    is_int(r.body_len, strlen(big), "A: the handler's own encoding: its body untouched");
    expect_vary(&r, false, "A: the handler's own encoding");
    response_free(&r);

    request(port, "GET", "/partial", "Accept-Encoding: gzip\r\n", &r);
    expect_status(&r, 206, "A: a handler's 206");
    expect_plain(&r, big, "A: a handler's 206");
    response_free(&r);

    request(port, "GET", "/vary", "Accept-Encoding: gzip\r\n", &r);
    expect_gzip(&r, big, strlen(big), "A: a handler's Vary");
    is_int(header_count(&r, "Vary"), 2, "A: the handler's Vary and ours");
    response_free(&r);

    /* HEAD: the headers of GET, the compressed length, no body. */
    if (request(port, "GET", "/text", "Accept-Encoding: gzip\r\n", &r) == 200 &&
        header_get(&r, "Content-Length"))
        snprintf(head_len, sizeof head_len, "%s", header_get(&r, "Content-Length"));
    response_free(&r);
    request(port, "HEAD", "/text", "Accept-Encoding: gzip\r\n", &r);
    expect_status(&r, 200, "A: HEAD");
    expect_header(&r, "Content-Encoding", "gzip", "A: HEAD");
    expect_vary(&r, true, "A: HEAD");
    check_common(&r, 1, strtol(head_len, NULL, 10), "A: HEAD");
    is_int(r.body_len, 0, "A: HEAD has no body");
    response_free(&r);
    request(port, "HEAD", "/text", "", &r);
    ok(header_get(&r, "Content-Encoding") == NULL, "A: HEAD without gzip: no Content-Encoding");
    check_common(&r, 1, (long)strlen(big), "A: HEAD without gzip");
    expect_vary(&r, true, "A: HEAD without gzip");
    response_free(&r);
}

/* Compressed and plain responses in turn on one keep-alive connection, pipelined too. */
static void test_keep_alive(int port)
{
    struct client c;
    struct response r;
    const char *gz = "GET /text HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n";
    const char *plain = "GET /text HTTP/1.1\r\nHost: t\r\n\r\n";
    char both[512];

    if (client_connect(&c, port) < 0) {
        ok(0, "A: keep-alive: connect");
        return;
    }
    for (int i = 0; i < 3; i++) {
        exchange(&c, gz, &r);
        expect_gzip(&r, big, strlen(big), "A: keep-alive, gzip");
        response_free(&r);
        exchange(&c, plain, &r);
        expect_plain(&r, big, "A: keep-alive, plain");
        response_free(&r);
    }
    snprintf(both, sizeof both, "%s%s%s", gz, plain, gz);
    client_sends(&c, both);
    read_response(&c, &r, 0);
    expect_gzip(&r, big, strlen(big), "A: pipelined 1");
    response_free(&r);
    read_response(&c, &r, 0);
    expect_plain(&r, big, "A: pipelined 2");
    response_free(&r);
    read_response(&c, &r, 0);
    expect_gzip(&r, big, strlen(big), "A: pipelined 3");
    response_free(&r);
    client_close(&c);
}

/* curl decompresses what the server sends. */
static void test_curl(int port)
{
    static char out[16384];
    char cmd[256];
    int rc;

    snprintf(cmd, sizeof cmd, "curl -sS --compressed --max-time 10 http://127.0.0.1:%d/text",
             port);
    rc = run_command(cmd, out, sizeof out);
    is_int(rc, 0, "A: curl --compressed exits 0");
    is_str(out, big, "A: curl --compressed gets the text");
    snprintf(cmd, sizeof cmd,
             "curl -sS --compressed --max-time 10 -o /dev/null -w '%%{size_download}' "
             "http://127.0.0.1:%d/text", port);
    run_command(cmd, out, sizeof out);
    ok(atol(out) > 0 && atol(out) < (long)strlen(big),
       what("A", "curl downloaded fewer bytes than the text (%s)", out));
}

/* app.static's precompressed siblings. with_flag: --gzip is on (it changes nothing here). */
static void test_static(int port, const char *who)
{
    struct response r, plain;
    char ctx[128], inm[160];
    struct stat st;
    char path[512];

    snprintf(ctx, sizeof ctx, "%s: app.js with gzip", who);
    request(port, "GET", "/s/app.js", "", &plain);
    expect_status(&plain, 200, ctx);
    expect_plain(&plain, js, ctx);
    expect_vary(&plain, true, ctx);
    request(port, "GET", "/s/app.js", "Accept-Encoding: gzip\r\n", &r);
    expect_status(&r, 200, ctx);
    expect_gzip(&r, js, strlen(js), ctx);
    expect_vary(&r, true, ctx);
    expect_header(&r, "Content-Type", "text/javascript; charset=utf-8", ctx);
    snprintf(path, sizeof path, "%s/public/app.js.gz", tmp_dir);
    is_int(stat(path, &st) == 0 ? (long long)st.st_size : -1, (long long)r.body_len,
           what(ctx, "the .gz file's bytes"));
    ok(header_get(&r, "ETag") && header_get(&plain, "ETag") &&
           strcmp(header_get(&r, "ETag"), header_get(&plain, "ETag")) != 0,
       what(ctx, "its ETag differs from the file's"));
    ok(header_get(&r, "Accept-Ranges") == NULL, what(ctx, "no Accept-Ranges"));

    /* Conditional: the .gz's ETag gives a 304 with Vary. */
    snprintf(inm, sizeof inm, "Accept-Encoding: gzip\r\nIf-None-Match: %s\r\n",
             header_get(&r, "ETag") ? header_get(&r, "ETag") : "x");
    response_free(&r);
    request(port, "GET", "/s/app.js", inm, &r);
    expect_status(&r, 304, what(who, "If-None-Match with the .gz's ETag"));
    expect_vary(&r, true, what(who, "304"));
    response_free(&r);
    response_free(&plain);

    request(port, "HEAD", "/s/app.js", "Accept-Encoding: gzip\r\n", &r);
    expect_header(&r, "Content-Encoding", "gzip", what(who, "HEAD app.js"));
    check_common(&r, 1, (long)st.st_size, what(who, "HEAD app.js"));
    response_free(&r);

    request(port, "GET", "/s/app.js", "Accept-Encoding: gzip\r\nRange: bytes=0-9\r\n", &r);
    expect_status(&r, 206, what(who, "Range with gzip accepted"));
    ok(header_get(&r, "Content-Encoding") == NULL, what(who, "Range: the file's bytes"));
    ok(r.body_len == 10 && memcmp(r.body, js, 10) == 0, what(who, "Range: the first 10 bytes"));
    response_free(&r);

    request(port, "GET", "/s/old.css", "Accept-Encoding: gzip\r\n", &r);
    expect_plain(&r, big, what(who, "a .gz older than its file is not served"));
    expect_vary(&r, false, what(who, "a stale .gz"));
    response_free(&r);

    request(port, "GET", "/s/pic.png", "Accept-Encoding: gzip\r\n", &r);
    expect_plain(&r, big, what(who, "pic.png.gz is not served (image/png)"));
    response_free(&r);

    request(port, "GET", "/nogz/app.js", "Accept-Encoding: gzip\r\n", &r);
    expect_plain(&r, js, what(who, "a mount with gzip = false"));
    expect_vary(&r, false, what(who, "a mount with gzip = false"));
    response_free(&r);

    request(port, "GET", "/s/plain.txt", "Accept-Encoding: gzip\r\n", &r);
    expect_plain(&r, big, what(who, "a file without .gz is sent as it is on disk"));
    response_free(&r);
}

/* Server B: no --gzip. */
static void test_default_off(int port)
{
    struct response r;

    request(port, "GET", "/text", "Accept-Encoding: gzip\r\n", &r);
    expect_plain(&r, big, "B: off by default");
    expect_vary(&r, false, "B: off by default");
    response_free(&r);
    check_route(port, "/on", true, true, big, "B: a route with gzip = true");
    check_route(port, "/route-on", true, true, big, "B: app.route with gzip = true");
    check_route(port, "/off", false, false, big, "B: a route with gzip = false");
    test_static(port, "B");
}

/* Server C: --gzip-min-bytes 50 --gzip-level 9. */
static void test_flags(int port)
{
    check_route(port, "/small", true, true, NULL, "C: 100 bytes over --gzip-min-bytes 50");
    check_route(port, "/text", true, true, big, "C: level 9");
}

/* Starts the server with args (the directory last); runs fn; stops it. */
static void with_server(const char *name, const char *const *args, void (*fn)(int port))
{
    struct server s;

    if (server_start(&s, args) == 0) {
        ok(1, what(name, "starts"));
        fn(s.port);
        is_int(server_stop(&s), 0, what(name, "exit status 0 after SIGTERM"));
    } else {
        ok(0, what(name, "starts"));
    }
    server_cleanup(&s);
}

static void test_server_a(int port)
{
    test_negotiation(port);
    test_routes(port);
    test_keep_alive(port);
    test_curl(port);
    test_static(port, "A");
}

int main(int argc, char **argv)
{
    int rc;

    if ((rc = suite_setup(argc, argv)) != 0)
        return rc;
    if (make_fixture() < 0) {
        ok(0, "the fixture is made");
        remove_fixture();
        return test_summary();
    }
    {
        const char *a[] = {"--port", "0", "--workers", "1", "--gzip", tmp_dir, NULL};
        const char *b[] = {"--port", "0", "--workers", "1", tmp_dir, NULL};
        const char *c[] = {"--port", "0", "--workers", "2", "--gzip", "--gzip-min-bytes", "50",
                           "--gzip-level", "9", tmp_dir, NULL};
        with_server("server A (--gzip)", a, test_server_a);
        with_server("server B (no --gzip)", b, test_default_off);
        with_server("server C (--gzip-min-bytes 50 --gzip-level 9)", c, test_flags);
    }
    remove_fixture();
    free(wrap_copy);
    return test_summary();
}
