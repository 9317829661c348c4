/*
 * test_static.c: app.static over real sockets.
 *
 *     test_static TYCHO_BINARY FIXTURE_DIR
 *
 * FIXTURE_DIR is tests/integration/app (what every suite gets); this suite's
 * own fixture is its sibling tests/integration/static/, which is copied to a
 * temporary directory where the test adds what is not committed: a file of
 * more than 1 MiB, one small file per content type, dotfiles, an empty file,
 * a directory without an index, a file literally named %2e%2e, and symlinks
 * pointing inside public/ and outside it (to ../outside/ and to an absolute
 * path).
 *
 * Three servers run the same core checks (content types, lengths, validators,
 * 304, ranges, 416, HEAD, indexes, every traversal form, dotfiles, large
 * files to a slow reader, pipelining): A serves the mounts from C (no
 * middleware), B through their Lua handler (STATIC_MIDDLEWARE makes the
 * fixture register a middleware), C with the realpath check instead of
 * openat2 (TYCHO_STATIC_NO_OPENAT2). A also checks --write-timeout on a
 * client that stops reading mid-file, clients that leave mid-file (the
 * server's descriptors come back to what they were), and the access log's
 * byte count. Load-time misuse is checked with --check, the "/" prefix and
 * --request with one-off script directories.
 *
 * Single-threaded; every wait is bounded; no check measures time. Ends with
 * the harness line `N passed, M failed`.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "support.h"
#include "client.h"

/* The big file: over 1 MiB and not a multiple of any buffer size. */
#define BIG_BYTES (1536 * 1024 + 12345)
/* The file a client stops reading: more than the kernel's buffers can take (sparse). */
#define HUGE_BYTES (64L * 1024 * 1024)

static char tmp_dir[64];       /* the fixture's copy, with the generated files */
static char *big;              /* owned: the big file's bytes */

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

static int make_dir(const char *rel)
{
    char path[512];

    snprintf(path, sizeof path, "%s/%s", tmp_dir, rel);
    return mkdir(path, 0755);
}

static int make_link(const char *target, const char *rel)
{
    char path[512];

    snprintf(path, sizeof path, "%s/%s", tmp_dir, rel);
    return symlink(target, path);
}

/* The content-type cases: a file public/types/NAME holding "file NAME\n" each. */
static const struct {
    const char *name;
    const char *type;
} type_cases[] = {
    {"f.html", "text/html; charset=utf-8"},
    {"f.htm", "text/html; charset=utf-8"},
    {"f.css", "text/css; charset=utf-8"},
    {"f.js", "text/javascript; charset=utf-8"},
    {"f.mjs", "text/javascript; charset=utf-8"},
    {"f.json", "application/json"},
    {"f.txt", "text/plain; charset=utf-8"},
    {"f.svg", "image/svg+xml"},
    {"f.png", "image/png"},
    {"f.jpg", "image/jpeg"},
    {"f.jpeg", "image/jpeg"},
    {"f.gif", "image/gif"},
    {"f.webp", "image/webp"},
    {"f.ico", "image/x-icon"},
    {"f.wasm", "application/wasm"},
    {"f.pdf", "application/pdf"},
    {"f.xml", "application/xml"},
    {"f.woff", "font/woff"},
    {"f.woff2", "font/woff2"},
    {"f.mp4", "video/mp4"},
    {"f.webm", "video/webm"},
    {"f.map", "application/json"},
    {"f.md", "text/markdown; charset=utf-8"},
    {"F.PNG", "image/png"},
    {"archive.tar.gz", "application/gzip"},
    {"f.unknownext", "application/octet-stream"},
    {"noext", "application/octet-stream"},
};

/* Copies tests/integration/static to a temporary directory and adds the generated files. */
static int make_fixture(void)
{
    char cmd[1024], out[1024], target[512];
    unsigned x = 12345;
    int bad = 0;

    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/tycho-static-XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        note("mkdtemp: %s", strerror(errno));
        return -1;
    }
    snprintf(cmd, sizeof cmd, "cp -R %s/../static/. %s/ 2>&1", fixture_dir, tmp_dir);
    if (run_command(cmd, out, sizeof out) != 0) {
        note("%s: %s", cmd, out);
        return -1;
    }
    if (!(big = malloc(BIG_BYTES)))
        return -1;
    for (size_t i = 0; i < BIG_BYTES; i++) {
        x = x * 1103515245u + 12345u;           /* any misplaced byte shows */
        big[i] = (char)(x >> 16);
    }
    bad |= write_file("public/big.bin", big, BIG_BYTES);
    /*
     * A sparse file far larger than a socket's send buffer can grow to
     * (net.ipv4.tcp_wmem's 4 MiB by default), so that a client that reads
     * nothing leaves the server waiting for writability mid-file.
     */
    bad |= write_file("public/huge.bin", "", 0);
    snprintf(target, sizeof target, "%s/public/huge.bin", tmp_dir);
    bad |= truncate(target, HUGE_BYTES);
    bad |= make_dir("public/types");
    for (size_t i = 0; i < sizeof type_cases / sizeof type_cases[0]; i++) {
        char rel[128], body[128];
        snprintf(rel, sizeof rel, "public/types/%s", type_cases[i].name);
        snprintf(body, sizeof body, "file %s\n", type_cases[i].name);
        bad |= write_file(rel, body, strlen(body));
    }
    bad |= write_file("public/empty.txt", "", 0);
    bad |= write_file("public/a b.txt", "a space\n", 8);
    bad |= write_file("public/%2e%2e", "a file named %2e%2e\n", 20);
    /* Names the mount refuses to serve although they exist. */
    bad |= write_file("public/back\\slash.txt", "a backslash\n", 12);
    bad |= write_file("public/tab\t.txt", "a tab\n", 6);
    bad |= write_file("public/.secret", "dotfile\n", 8);
    bad |= make_dir("public/.git");
    bad |= write_file("public/.git/config", "dotdir\n", 7);
    bad |= make_dir("public/nosub");
    bad |= write_file("public/nosub/file.txt", "no index here\n", 14);
    bad |= make_dir("outside");
    bad |= write_file("outside/secret.txt", "outside the mount\n", 18);
    bad |= make_link("../outside/secret.txt", "public/escape.txt");
    snprintf(target, sizeof target, "%s/outside/secret.txt", tmp_dir);
    bad |= make_link(target, "public/abs-escape.txt");
    bad |= make_link("../outside", "public/escdir");
    bad |= make_link("site.css", "public/inside.css");
    bad |= make_link("sub", "public/sublink");
    if (bad)
        note("making the fixture in %s failed: %s", tmp_dir, strerror(errno));
    return bad ? -1 : 0;
}

static void remove_fixture(void)
{
    char cmd[256], out[256];

    if (tmp_dir[0] && strncmp(tmp_dir, "/tmp/tycho-static-", 18) == 0) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
        run_command(cmd, out, sizeof out);
    }
}

/* The file's bytes (malloc'd) and length, or NULL. */
static char *fixture_file(const char *rel, size_t *len)
{
    char path[512];

    snprintf(path, sizeof path, "%s/%s", tmp_dir, rel);
    return slurp(path, len);
}

/* Last-Modified as the server must send it for the fixture file rel; "" if it cannot stat. */
static const char *http_date_of(const char *rel, long shift_s, char *buf, size_t cap)
{
    char path[512];
    struct stat st;
    struct tm tm;
    time_t t;

    snprintf(path, sizeof path, "%s/%s", tmp_dir, rel);
    buf[0] = '\0';
    if (stat(path, &st) < 0)
        return buf;
    t = st.st_mtime + shift_s;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    return buf;
}

/* ======================================================================
 * Requests
 * ====================================================================== */

/* METHOD path with extra header lines (each ending in CRLF, or NULL) on a fresh connection. */
static int req(int port, const char *method, const char *path, const char *headers,
               struct response *r)
{
    char buf[4096];

    snprintf(buf, sizeof buf, "%s %s HTTP/1.1\r\nHost: t\r\n%s\r\n", method, path,
             headers ? headers : "");
    return fetch(port, buf, r);
}

/* GET path: status want, and the body when body is not NULL. */
static void expect_get(int port, const char *path, int want, const char *body, const char *ctx)
{
    struct response r;

    req(port, "GET", path, NULL, &r);
    if (expect_status(&r, want, ctx) && body)
        expect_body(&r, body, ctx);
    response_free(&r);
}

/* Whether the body is exactly len bytes of want. */
static int same_bytes(const struct response *r, const char *want, size_t len)
{
    return r->body_len == len && memcmp(r->body, want, len) == 0;
}

/* ======================================================================
 * The checks every server runs
 * ====================================================================== */

static void test_types(int port, const char *label)
{
    char ctx[160], path[160], want[160];
    struct response r;

    for (size_t i = 0; i < sizeof type_cases / sizeof type_cases[0]; i++) {
        snprintf(ctx, sizeof ctx, "%s: GET /static/types/%s", label, type_cases[i].name);
        snprintf(path, sizeof path, "/static/types/%s", type_cases[i].name);
        snprintf(want, sizeof want, "file %s\n", type_cases[i].name);
        req(port, "GET", path, NULL, &r);
        if (expect_status(&r, 200, ctx)) {
            expect_header(&r, "Content-Type", type_cases[i].type, ctx);
            expect_body(&r, want, ctx);
            check_common(&r, 0, -1, ctx);
        }
        response_free(&r);
    }
    snprintf(ctx, sizeof ctx, "%s: GET /static/index.html", label);
    req(port, "GET", "/static/index.html", NULL, &r);
    if (expect_status(&r, 200, ctx)) {
        size_t len;
        char *want_body = fixture_file("public/index.html", &len);
        ok(want_body && same_bytes(&r, want_body, len), what(ctx, "the file's bytes"));
        expect_header(&r, "Content-Type", "text/html; charset=utf-8", ctx);
        free(want_body);
    }
    response_free(&r);
    snprintf(ctx, sizeof ctx, "%s: GET /static/empty.txt", label);
    req(port, "GET", "/static/empty.txt", NULL, &r);
    if (expect_status(&r, 200, ctx)) {
        expect_body(&r, "", ctx);
        expect_header(&r, "Content-Type", "text/plain; charset=utf-8", ctx);
        check_common(&r, 0, -1, ctx);
    }
    response_free(&r);
    snprintf(ctx, sizeof ctx, "%s: a name with a space, %%20-encoded", label);
    expect_get(port, "/static/a%20b.txt", 200, "a space\n", ctx);
    snprintf(ctx, sizeof ctx, "%s: a route under the mount wins over it", label);
    expect_get(port, "/static/special.txt", 200, "a route wins over the mount", ctx);
    snprintf(ctx, sizeof ctx, "%s: a symlink that stays inside", label);
    expect_get(port, "/static/inside.css", 200, "body { color: #333; }\n", ctx);
    snprintf(ctx, sizeof ctx, "%s: through a symlinked directory inside", label);
    expect_get(port, "/static/sublink/index.html", 200, NULL, ctx);
}

static void test_validators(int port, const char *label)
{
    char ctx[160], lm[64], hdr[512], etag[128] = "";
    struct response r;
    const char *v;

    snprintf(ctx, sizeof ctx, "%s: validators of /static/site.css", label);
    req(port, "GET", "/static/site.css", NULL, &r);
    if (expect_status(&r, 200, ctx)) {
        expect_header(&r, "Last-Modified", http_date_of("public/site.css", 0, lm, sizeof lm), ctx);
        expect_header(&r, "Accept-Ranges", "bytes", ctx);
        expect_header(&r, "Cache-Control", "max-age=60", ctx);
        v = header_get(&r, "ETag");
        ok(v && v[0] == '"' && strlen(v) > 2 && v[strlen(v) - 1] == '"',
           what(ctx, "a strong, quoted ETag (got %s)", v ? v : "none"));
        if (v)
            snprintf(etag, sizeof etag, "%s", v);
    }
    response_free(&r);
    req(port, "GET", "/static/site.css", NULL, &r);
    v = header_get(&r, "ETag");
    is_str(v ? v : "", etag, what(ctx, "the same ETag twice"));
    response_free(&r);
    req(port, "GET", "/dots/site.css", NULL, &r);
    ok(header_get(&r, "Cache-Control") == NULL, what(ctx, "no Cache-Control without max_age"));
    response_free(&r);

    /* If-None-Match */
    snprintf(hdr, sizeof hdr, "If-None-Match: %s\r\n", etag);
    snprintf(ctx, sizeof ctx, "%s: If-None-Match: the ETag", label);
    req(port, "GET", "/static/site.css", hdr, &r);
    if (expect_status(&r, 304, ctx)) {
        is_int(r.body_len, 0, what(ctx, "no body"));
        expect_header(&r, "ETag", etag, ctx);
        expect_header(&r, "Last-Modified", lm, ctx);
        expect_header(&r, "Cache-Control", "max-age=60", ctx);
        ok(!header_get(&r, "Content-Length"), what(ctx, "no Content-Length"));
    }
    response_free(&r);
    snprintf(hdr, sizeof hdr, "If-None-Match: \"other\", W/%s\r\n", etag);
    snprintf(ctx, sizeof ctx, "%s: If-None-Match: a list with the weak form", label);
    req(port, "GET", "/static/site.css", hdr, &r);
    expect_status(&r, 304, ctx);
    response_free(&r);
    snprintf(ctx, sizeof ctx, "%s: If-None-Match: *", label);
    req(port, "GET", "/static/site.css", "If-None-Match: *\r\n", &r);
    expect_status(&r, 304, ctx);
    response_free(&r);
    snprintf(ctx, sizeof ctx, "%s: HEAD with If-None-Match", label);
    req(port, "HEAD", "/static/site.css", hdr, &r);
    expect_status(&r, 304, ctx);
    response_free(&r);
    snprintf(ctx, sizeof ctx, "%s: If-None-Match: another tag", label);
    req(port, "GET", "/static/site.css", "If-None-Match: \"nope\"\r\n", &r);
    if (expect_status(&r, 200, ctx))
        expect_body(&r, "body { color: #333; }\n", ctx);
    response_free(&r);

    /* If-Modified-Since */
    snprintf(hdr, sizeof hdr, "If-Modified-Since: %s\r\n", lm);
    snprintf(ctx, sizeof ctx, "%s: If-Modified-Since: Last-Modified", label);
    req(port, "GET", "/static/site.css", hdr, &r);
    expect_status(&r, 304, ctx);
    response_free(&r);
    snprintf(hdr, sizeof hdr, "If-Modified-Since: %s\r\n",
             http_date_of("public/site.css", 86400, lm, sizeof lm));
    snprintf(ctx, sizeof ctx, "%s: If-Modified-Since: a day later", label);
    req(port, "GET", "/static/site.css", hdr, &r);
    expect_status(&r, 304, ctx);
    response_free(&r);
    snprintf(hdr, sizeof hdr, "If-Modified-Since: %s\r\n",
             http_date_of("public/site.css", -86400, lm, sizeof lm));
    snprintf(ctx, sizeof ctx, "%s: If-Modified-Since: a day earlier", label);
    req(port, "GET", "/static/site.css", hdr, &r);
    if (expect_status(&r, 200, ctx))
        expect_body(&r, "body { color: #333; }\n", ctx);
    response_free(&r);
    snprintf(ctx, sizeof ctx, "%s: If-Modified-Since: not a date", label);
    req(port, "GET", "/static/site.css", "If-Modified-Since: yesterday\r\n", &r);
    expect_status(&r, 200, ctx);
    response_free(&r);
    snprintf(ctx, sizeof ctx, "%s: If-Modified-Since in the asctime form", label);
    req(port, "GET", "/static/site.css", "If-Modified-Since: Fri Dec 31 23:59:59 2060\r\n", &r);
    expect_status(&r, 304, ctx);
    response_free(&r);
    snprintf(ctx, sizeof ctx, "%s: If-Modified-Since in the RFC 850 form", label);
    req(port, "GET", "/static/site.css",
        "If-Modified-Since: Friday, 31-Dec-60 23:59:59 GMT\r\n", &r);
    expect_status(&r, 304, ctx);
    response_free(&r);

    /* If-None-Match takes precedence (RFC 9110 13.2.2): a miss is a 200 whatever the date. */
    snprintf(hdr, sizeof hdr, "If-None-Match: \"nope\"\r\nIf-Modified-Since: %s\r\n",
             http_date_of("public/site.css", 86400, lm, sizeof lm));
    snprintf(ctx, sizeof ctx, "%s: If-None-Match wins over If-Modified-Since", label);
    req(port, "GET", "/static/site.css", hdr, &r);
    expect_status(&r, 200, ctx);
    response_free(&r);
    snprintf(hdr, sizeof hdr, "If-None-Match: %s\r\nIf-Modified-Since: %s\r\n", etag,
             http_date_of("public/site.css", -86400, lm, sizeof lm));
    snprintf(ctx, sizeof ctx, "%s: a matching If-None-Match with an old If-Modified-Since", label);
    req(port, "GET", "/static/site.css", hdr, &r);
    expect_status(&r, 304, ctx);
    response_free(&r);
}

/* GET /static/big.bin with a Range: want status, Content-Range and the bytes [first, last]. */
static void expect_range(int port, const char *range, int want, long long first, long long last,
                         const char *label)
{
    char hdr[256], ctx[200], cr[128];
    struct response r;

    snprintf(hdr, sizeof hdr, "Range: %s\r\n", range);
    snprintf(ctx, sizeof ctx, "%s: Range: %s", label, range);
    req(port, "GET", "/static/big.bin", hdr, &r);
    if (expect_status(&r, want, ctx)) {
        if (want == 206) {
            snprintf(cr, sizeof cr, "bytes %lld-%lld/%d", first, last, BIG_BYTES);
            expect_header(&r, "Content-Range", cr, ctx);
            ok(same_bytes(&r, big + first, (size_t)(last - first + 1)),
               what(ctx, "the %lld bytes from %lld", last - first + 1, first));
        } else if (want == 416) {
            snprintf(cr, sizeof cr, "bytes */%d", BIG_BYTES);
            expect_header(&r, "Content-Range", cr, ctx);
        } else {
            ok(same_bytes(&r, big, BIG_BYTES), what(ctx, "the whole file"));
            ok(!header_get(&r, "Content-Range"), what(ctx, "no Content-Range"));
        }
        check_common(&r, 0, -1, ctx);
    }
    response_free(&r);
}

static void test_ranges(int port, const char *label)
{
    char ctx[160], hdr[512], etag[128] = "", lm[64];
    struct response r;
    const char *v;

    expect_range(port, "bytes=0-9", 206, 0, 9, label);
    expect_range(port, "bytes=100-199999", 206, 100, 199999, label);       /* sendfile'd */
    expect_range(port, "bytes=1000000-", 206, 1000000, BIG_BYTES - 1, label);
    expect_range(port, "bytes=-5", 206, BIG_BYTES - 5, BIG_BYTES - 1, label);
    expect_range(port, "bytes=-100000", 206, BIG_BYTES - 100000, BIG_BYTES - 1, label);
    expect_range(port, "bytes=-99999999", 206, 0, BIG_BYTES - 1, label);   /* all of it */
    expect_range(port, "bytes=5-99999999", 206, 5, BIG_BYTES - 1, label);  /* clipped */
    expect_range(port, "BYTES=7-8", 206, 7, 8, label);       /* the unit in any case */
    expect_range(port, "bytes = 7-8", 200, 0, 0, label);     /* no spaces around = */
    snprintf(hdr, sizeof hdr, "bytes=%d-", BIG_BYTES);
    expect_range(port, hdr, 416, 0, 0, label);                             /* at the size */
    expect_range(port, "bytes=99999999-", 416, 0, 0, label);
    expect_range(port, "bytes=-0", 416, 0, 0, label);
    expect_range(port, "bytes=0-1,5-6", 200, 0, 0, label);     /* several: the whole file */
    expect_range(port, "bytes=9-5", 200, 0, 0, label);         /* invalid: ignored */
    expect_range(port, "items=0-5", 200, 0, 0, label);
    expect_range(port, "bytes=x-5", 200, 0, 0, label);

    snprintf(ctx, sizeof ctx, "%s: Range on a small file", label);
    req(port, "GET", "/static/site.css", "Range: bytes=5-9\r\n", &r);
    if (expect_status(&r, 206, ctx)) {
        expect_body(&r, "{ col", ctx);
        expect_header(&r, "Content-Range", "bytes 5-9/22", ctx);
        expect_header(&r, "Content-Type", "text/css; charset=utf-8", ctx);
    }
    response_free(&r);
    snprintf(ctx, sizeof ctx, "%s: Range on an empty file is ignored", label);
    req(port, "GET", "/static/empty.txt", "Range: bytes=0-5\r\n", &r);
    expect_status(&r, 200, ctx);
    response_free(&r);
    snprintf(ctx, sizeof ctx, "%s: HEAD ignores Range", label);
    req(port, "HEAD", "/static/big.bin", "Range: bytes=0-9\r\n", &r);
    if (expect_status(&r, 200, ctx))
        check_common(&r, 1, BIG_BYTES, ctx);
    response_free(&r);

    /* If-Range */
    req(port, "HEAD", "/static/big.bin", NULL, &r);
    if ((v = header_get(&r, "ETag")))
        snprintf(etag, sizeof etag, "%s", v);
    response_free(&r);
    snprintf(hdr, sizeof hdr, "Range: bytes=0-3\r\nIf-Range: %s\r\n", etag);
    snprintf(ctx, sizeof ctx, "%s: If-Range: the ETag", label);
    req(port, "GET", "/static/big.bin", hdr, &r);
    if (expect_status(&r, 206, ctx))
        ok(same_bytes(&r, big, 4), what(ctx, "4 bytes"));
    response_free(&r);
    snprintf(ctx, sizeof ctx, "%s: If-Range: another ETag", label);
    req(port, "GET", "/static/big.bin", "Range: bytes=0-3\r\nIf-Range: \"old\"\r\n", &r);
    if (expect_status(&r, 200, ctx))
        ok(same_bytes(&r, big, BIG_BYTES), what(ctx, "the whole file"));
    response_free(&r);
    snprintf(hdr, sizeof hdr, "Range: bytes=0-3\r\nIf-Range: W/%s\r\n", etag);
    snprintf(ctx, sizeof ctx, "%s: If-Range: a weak ETag never matches", label);
    req(port, "GET", "/static/big.bin", hdr, &r);
    expect_status(&r, 200, ctx);
    response_free(&r);
    snprintf(hdr, sizeof hdr, "Range: bytes=0-3\r\nIf-Range: %s\r\n",
             http_date_of("public/big.bin", 0, lm, sizeof lm));
    snprintf(ctx, sizeof ctx, "%s: If-Range: Last-Modified", label);
    req(port, "GET", "/static/big.bin", hdr, &r);
    expect_status(&r, 206, ctx);
    response_free(&r);
    snprintf(hdr, sizeof hdr, "Range: bytes=0-3\r\nIf-Range: %s\r\n",
             http_date_of("public/big.bin", -1, lm, sizeof lm));
    snprintf(ctx, sizeof ctx, "%s: If-Range: another date", label);
    req(port, "GET", "/static/big.bin", hdr, &r);
    expect_status(&r, 200, ctx);
    response_free(&r);
}

static void test_head_and_methods(int port, const char *label)
{
    char ctx[160];
    struct response r;
    struct client c;

    /* HEAD of the big file, then a GET on the same connection: no body bytes in between. */
    snprintf(ctx, sizeof ctx, "%s: HEAD /static/big.bin then GET /hello", label);
    if (client_connect(&c, port) == 0) {
        exchange(&c, "HEAD /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        if (expect_status(&r, 200, ctx)) {
            check_common(&r, 1, BIG_BYTES, ctx);
            expect_header(&r, "Content-Type", "application/octet-stream", ctx);
            ok(header_get(&r, "ETag") != NULL, what(ctx, "an ETag"));
            ok(header_get(&r, "Last-Modified") != NULL, what(ctx, "a Last-Modified"));
        }
        response_free(&r);
        exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        if (expect_status(&r, 200, ctx))
            expect_body(&r, "hello", ctx);
        response_free(&r);
        client_close(&c);
    }
    snprintf(ctx, sizeof ctx, "%s: HEAD /static/site.css", label);
    req(port, "HEAD", "/static/site.css", NULL, &r);
    if (expect_status(&r, 200, ctx))
        check_common(&r, 1, 22, ctx);
    response_free(&r);
    snprintf(ctx, sizeof ctx, "%s: HEAD of a missing file", label);
    req(port, "HEAD", "/static/nope.txt", NULL, &r);
    expect_status(&r, 404, ctx);
    response_free(&r);

    static const char *const others[] = {"POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        snprintf(ctx, sizeof ctx, "%s: %s /static/site.css", label, others[i]);
        req(port, others[i], "/static/site.css", "Content-Length: 0\r\n", &r);
        if (expect_status(&r, 405, ctx))
            expect_header(&r, "Allow", "GET, HEAD", ctx);
        response_free(&r);
    }
    snprintf(ctx, sizeof ctx, "%s: DELETE /static", label);
    req(port, "DELETE", "/static", NULL, &r);
    if (expect_status(&r, 405, ctx))
        expect_header(&r, "Allow", "GET, HEAD", ctx);
    response_free(&r);
}

static void test_indexes(int port, const char *label)
{
    char ctx[160];
    struct response r;
    size_t len;
    char *index = fixture_file("public/index.html", &len);

    snprintf(ctx, sizeof ctx, "%s: GET /static/", label);
    req(port, "GET", "/static/", NULL, &r);
    if (expect_status(&r, 200, ctx)) {
        ok(index && same_bytes(&r, index, len), what(ctx, "index.html"));
        expect_header(&r, "Content-Type", "text/html; charset=utf-8", ctx);
    }
    response_free(&r);
    snprintf(ctx, sizeof ctx, "%s: GET /static", label);
    req(port, "GET", "/static", NULL, &r);
    if (expect_status(&r, 301, ctx))
        expect_header(&r, "Location", "/static/", ctx);
    response_free(&r);
    snprintf(ctx, sizeof ctx, "%s: GET /static/sub?x=1", label);
    req(port, "GET", "/static/sub?x=1", NULL, &r);
    if (expect_status(&r, 301, ctx))
        expect_header(&r, "Location", "/static/sub/?x=1", ctx);
    response_free(&r);
    snprintf(ctx, sizeof ctx, "%s: GET /static/sub/", label);
    expect_get(port, "/static/sub/", 200,
               "<!doctype html>\n<title>sub</title>\n<p>the index of public/sub/\n", ctx);
    snprintf(ctx, sizeof ctx, "%s: a directory without index.html (no listing)", label);
    expect_get(port, "/static/nosub/", 404, "Not Found\n", ctx);
    snprintf(ctx, sizeof ctx, "%s: ... nor a redirect to it", label);
    expect_get(port, "/static/nosub", 404, NULL, ctx);
    snprintf(ctx, sizeof ctx, "%s: ... its files are served", label);
    expect_get(port, "/static/nosub/file.txt", 200, "no index here\n", ctx);
    snprintf(ctx, sizeof ctx, "%s: index = false", label);
    expect_get(port, "/dots/", 404, NULL, ctx);
    expect_get(port, "/dots/sub/", 404, NULL, ctx);
    expect_get(port, "/dots", 404, NULL, ctx);
    snprintf(ctx, sizeof ctx, "%s: an absolute directory, index = home.html", label);
    expect_get(port, "/abs/", 200,
               "<!doctype html>\n<title>home</title>\n<p>home.html, the index of /abs/\n", ctx);
    snprintf(ctx, sizeof ctx, "%s: /abs/sub/ has no home.html", label);
    expect_get(port, "/abs/sub/", 404, NULL, ctx);
    snprintf(ctx, sizeof ctx, "%s: /abs/site.css", label);
    expect_get(port, "/abs/site.css", 200, "body { color: #333; }\n", ctx);
    free(index);
    snprintf(ctx, sizeof ctx, "%s: HEAD /static/", label);
    req(port, "HEAD", "/static/", NULL, &r);
    if (expect_status(&r, 200, ctx))
        check_common(&r, 1, (long)len, ctx);
    response_free(&r);
}

/* One request line sent as is; the status must be want. */
static void expect_raw(int port, const char *target, int want, const char *label)
{
    char buf[1024], ctx[200];
    struct response r;

    snprintf(buf, sizeof buf, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", target);
    snprintf(ctx, sizeof ctx, "%s: GET %s", label, target);
    fetch(port, buf, &r);
    if (expect_status(&r, want, ctx) && want == 404)
        expect_body(&r, "Not Found\n", ctx);
    response_free(&r);
}

static void test_missing_and_traversal(int port, const char *label)
{
    static const char *const not_found[] = {
        "/static/nope.txt",
        "/static/nope/",
        "/static/sub/nope.html",
        "/static/site.css/",          /* a file asked for as a directory */
        "/static/../app.lua",
        "/static/sub/../../app.lua",
        "/static/%2e%2e/app.lua",
        "/static/%2E%2E/app.lua",
        "/static/%2E%2e/app.lua",
        "/static/.%2e/app.lua",
        "/static/%2e./app.lua",
        "/static/..%2fapp.lua",
        "/static/sub/..%2f..%2fapp.lua",
        "/static/sub%2f..%2f..%2fapp.lua",
        "/static/..%2F..%2Foutside/secret.txt",
        "/static/sub%2findex.html",   /* an encoded slash is not a separator */
        "/static/sub%2Findex.html",
        "/static/..%5capp.lua",       /* backslash, encoded */
        "/static/sub%5cindex.html",
        "/static/back%5cslash.txt",   /* the file exists */
        "/static/back%5Cslash.txt",
        "/static/back\\slash.txt",    /* raw (http-parser lets it through) */
        "/static/tab%09.txt",         /* the file exists, but a control character is refused */
        "/static/./site.css",
        "/static/%2e/site.css",
        "/static//site.css",
        "/static/sub//index.html",
        "/static/escape.txt",         /* symlink to ../outside/secret.txt */
        "/static/abs-escape.txt",     /* symlink to its absolute path */
        "/static/escdir/secret.txt",  /* a symlinked directory outside */
        "/static/escdir/",
        "/dots/escape.txt",
        "/static/%0a.txt",            /* a control character */
        "/static/.secret",            /* dotfiles */
        "/static/%2esecret",
        "/static/.git/config",
        "/static/.git/",
        "/abs/.secret",
        "//static/site.css",
    };
    static const char *const bad_request[] = {
        "/static/site.css%00",
        "/static/site.css%00.txt",
        "/static/%00/site.css",
        "/static/%zz.txt",
        "/static/site.css%2",
        "/static/%",
    };
    char ctx[160];

    for (size_t i = 0; i < sizeof not_found / sizeof not_found[0]; i++)
        expect_raw(port, not_found[i], 404, label);
    for (size_t i = 0; i < sizeof bad_request / sizeof bad_request[0]; i++)
        expect_raw(port, bad_request[i], 400, label);

    /* Decoded once: %252e%252e is the file named %2e%2e, not "..". */
    snprintf(ctx, sizeof ctx, "%s: %%252e%%252e is decoded once", label);
    expect_get(port, "/static/%252e%252e", 200, "a file named %2e%2e\n", ctx);

    /* dotfiles = true */
    snprintf(ctx, sizeof ctx, "%s: dotfiles = true", label);
    expect_get(port, "/dots/.secret", 200, "dotfile\n", ctx);
    expect_get(port, "/dots/%2esecret", 200, "dotfile\n", ctx);
    expect_get(port, "/dots/.git/config", 200, "dotdir\n", ctx);
    expect_raw(port, "/dots/../app.lua", 404, label);
    expect_raw(port, "/dots/%2e%2e/app.lua", 404, label);
    expect_raw(port, "/dots/./site.css", 404, label);
    /* Dot segments are refused even where they would resolve inside the directory. */
    expect_raw(port, "/dots/sub/../site.css", 404, label);
    expect_raw(port, "/dots/sub/%2e%2e/site.css", 404, label);
    expect_raw(port, "/dots/sub/%2E%2E/site.css", 404, label);
    expect_raw(port, "/dots/sub/./index.html", 404, label);
}

/* One recv of at most chunk bytes into c's buffer. Returns bytes, 0 at close, -1 on timeout. */
static int fill_some(struct client *c, size_t chunk, long long deadline)
{
    struct pollfd pfd = {c->fd, POLLIN, 0};
    long long left = deadline - now_ms();
    ssize_t n;

    if (c->closed)
        return 0;
    if (c->cap - c->len < chunk) {
        size_t cap = c->cap ? c->cap * 2 : 65536;
        char *grown;
        while (cap - c->len < chunk)
            cap *= 2;
        if (!(grown = realloc(c->buf, cap)))
            return -1;
        c->buf = grown;
        c->cap = cap;
    }
    if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
        return -1;
    n = recv(c->fd, c->buf + c->len, chunk, 0);
    if (n > 0) {
        c->len += (size_t)n;
        return (int)n;
    }
    if (n == 0 || errno == ECONNRESET) {
        c->closed = 1;
        return 0;
    }
    return errno == EAGAIN || errno == EINTR ? 1 : -1;
}

/*
 * Reads a response slowly: chunk bytes at a time with pause_ms between
 * reads, until the head and Content-Length bytes of body are buffered; then
 * parses it. Returns 0, or -1 (r->status 0).
 */
static int read_slowly(struct client *c, struct response *r, size_t chunk, int pause_ms)
{
    long long deadline = now_ms() + io_timeout_ms * 3;
    size_t want = 0;

    memset(r, 0, sizeof *r);
    for (;;) {
        char *end = c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (end && !want) {
            const char *cl = strcasestr(c->buf, "\r\nContent-Length:");
            want = (size_t)(end - c->buf) + 4 + (cl && cl < end ? strtoull(cl + 17, NULL, 10) : 0);
        }
        if (want && c->len >= want)
            return read_response(c, r, 0);
        if (fill_some(c, chunk, deadline) <= 0) {
            note("slow read: %zu bytes of %zu, then %s", c->len, want,
                 c->closed ? "the connection closed" : "a timeout");
            return -1;
        }
        sleep_ms(pause_ms);
    }
}

/* Connects with a small receive buffer, so that the server's sends fill the socket. */
static int connect_small(struct client *c, int port)
{
    struct sockaddr_in sa;
    struct pollfd pfd;
    int small = 4096, err = 0;
    socklen_t errlen = sizeof err;

    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);   /* before the handshake */
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        pfd.fd = c->fd;
        pfd.events = POLLOUT;
        if (errno != EINPROGRESS || poll(&pfd, 1, io_timeout_ms) != 1 ||
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0 || err) {
            client_close(c);
            return -1;
        }
    }
    return 0;
}

static void test_large(int port, const char *label)
{
    char ctx[160];
    struct response r;
    struct client c;

    snprintf(ctx, sizeof ctx, "%s: GET /static/big.bin", label);
    req(port, "GET", "/static/big.bin", NULL, &r);
    if (expect_status(&r, 200, ctx)) {
        ok(same_bytes(&r, big, BIG_BYTES), what(ctx, "%d bytes intact", BIG_BYTES));
        check_common(&r, 0, -1, ctx);
        expect_header(&r, "Content-Type", "application/octet-stream", ctx);
    }
    response_free(&r);

    /* A slow reader with a small window, then more requests on the same connection. */
    snprintf(ctx, sizeof ctx, "%s: slow reader of /static/big.bin, kept alive", label);
    if (connect_small(&c, port) == 0) {
        for (int round = 0; round < 2; round++) {
            client_sends(&c, "GET /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
            read_slowly(&c, &r, 16384, 1);
            if (expect_status(&r, 200, ctx))
                ok(same_bytes(&r, big, BIG_BYTES), what(ctx, "round %d: intact", round + 1));
            response_free(&r);
        }
        exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        if (expect_status(&r, 200, ctx))
            expect_body(&r, "hello", ctx);
        response_free(&r);
        exchange(&c, "GET /static/big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=-70000\r\n\r\n",
                 &r);
        if (expect_status(&r, 206, ctx))
            ok(same_bytes(&r, big + BIG_BYTES - 70000, 70000), what(ctx, "then a range"));
        response_free(&r);
        client_close(&c);
    } else {
        ok(0, what(ctx, "connect"));
    }

    /* Pipelined: all requests in one send, the responses in order. */
    snprintf(ctx, sizeof ctx, "%s: pipelined requests around big files", label);
    if (connect_small(&c, port) == 0) {
        client_sends(&c, "GET /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n"
                         "GET /static/site.css HTTP/1.1\r\nHost: t\r\n\r\n"
                         "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
                         "HEAD /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n"
                         "GET /static/big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=10-200009\r\n\r\n"
                         "GET /static/nope HTTP/1.1\r\nHost: t\r\n\r\n"
                         "GET /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n"
                         "GET /static/sub/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        read_slowly(&c, &r, 32768, 1);
        if (expect_status(&r, 200, ctx))
            ok(same_bytes(&r, big, BIG_BYTES), what(ctx, "1: the big file"));
        response_free(&r);
        read_response(&c, &r, 0);
        if (expect_status(&r, 200, ctx))
            expect_body(&r, "body { color: #333; }\n", what(ctx, "2"));
        response_free(&r);
        read_response(&c, &r, 0);
        if (expect_status(&r, 200, ctx))
            expect_body(&r, "hello", ctx);
        response_free(&r);
        read_response(&c, &r, 1);
        if (expect_status(&r, 200, ctx))
            check_common(&r, 1, BIG_BYTES, what(ctx, "4: HEAD"));
        response_free(&r);
        read_response(&c, &r, 0);
        if (expect_status(&r, 206, ctx))
            ok(same_bytes(&r, big + 10, 200000), what(ctx, "5: a range"));
        response_free(&r);
        read_response(&c, &r, 0);
        expect_status(&r, 404, ctx);
        response_free(&r);
        read_response(&c, &r, 0);
        if (expect_status(&r, 200, ctx))
            ok(same_bytes(&r, big, BIG_BYTES), what(ctx, "7: the big file again"));
        response_free(&r);
        read_response(&c, &r, 0);
        if (expect_status(&r, 200, ctx))
            expect_header(&r, "Connection", "close", what(ctx, "8: the last"));
        response_free(&r);
        is_int(client_wait_closed(&c, io_timeout_ms), 1, what(ctx, "then the close"));
        client_close(&c);
    } else {
        ok(0, what(ctx, "connect"));
    }
}

/* ======================================================================
 * Server A only
 * ====================================================================== */

/* The server's open file descriptors, or -1. */
static int open_fds(pid_t pid)
{
    char path[64];
    DIR *d;
    struct dirent *e;
    int n = 0;

    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    if (!(d = opendir(path)))
        return -1;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/*
 * The server's descriptors at rest: the fewest seen over a few samples (a
 * connection the client just closed may not have been closed by the server
 * yet).
 */
static int resting_fds(pid_t pid)
{
    int least = open_fds(pid);

    for (int i = 0; i < 10; i++) {
        int n;
        sleep_ms(30);
        n = open_fds(pid);
        if (n >= 0 && n < least)
            least = n;
    }
    return least;
}

/* Waits (bounded) until the server has at most want descriptors open; returns the last count. */
static int wait_fds(pid_t pid, int want)
{
    long long deadline = now_ms() + io_timeout_ms * 2;
    int n;

    while ((n = open_fds(pid)) > want && now_ms() < deadline)
        sleep_ms(20);
    return n;
}

/*
 * Clients that leave mid-file (a reset: they close with unread bytes), and
 * one that stops reading until --write-timeout (2 s) closes it: the server
 * closes their files and sockets and goes on serving.
 */
static void test_abandoned(const struct server *s)
{
    const char *ctx = "A: clients leaving mid-file";
    int base, n;
    struct response r;
    struct client c;

    expect_get(s->port, "/hello", 200, "hello", ctx);
    base = resting_fds(s->pid);
    ok(base > 0, what(ctx, "the server's descriptors can be counted (%d)", base));
    for (int i = 0; i < 5; i++) {
        if (connect_small(&c, s->port) < 0)
            continue;
        client_sends(&c, "GET /static/big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        while (c.len < 65536 && fill_some(&c, 8192, now_ms() + io_timeout_ms) > 0) {
        }
        ok(c.len >= 65536, what(ctx, "%d: a part of the file came (%zu bytes)", i + 1, c.len));
        client_close(&c);             /* unread bytes: the close is a reset */
    }
    n = wait_fds(s->pid, base);
    ok(n <= base, what(ctx, "the server's descriptors come back to %d (%d)", base, n));
    expect_get(s->port, "/hello", 200, "hello", ctx);
    req(s->port, "GET", "/static/big.bin", NULL, &r);
    if (expect_status(&r, 200, ctx))
        ok(same_bytes(&r, big, BIG_BYTES), what(ctx, "the big file again, intact"));
    response_free(&r);

    ctx = "A: a client that stops reading mid-file (--write-timeout 2)";
    if (connect_small(&c, s->port) == 0) {
        long long deadline;
        client_sends(&c, "GET /static/huge.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        fill_some(&c, 4096, now_ms() + io_timeout_ms);   /* the transfer has started */
        ok(open_fds(s->pid) > base, what(ctx, "the connection and its file are open"));
        n = wait_fds(s->pid, base);
        ok(n <= base, what(ctx, "the server closed them after the timeout (%d open, %d before)", n,
                           base));
        deadline = now_ms() + io_timeout_ms;
        while (fill_some(&c, 65536, deadline) > 0) {
        }
        ok(c.closed, what(ctx, "the client then sees the close"));
        ok(c.len < (size_t)HUGE_BYTES, what(ctx, "before the whole file (%zu bytes)", c.len));
        note("the client got %zu of the %ld bytes before the close", c.len, HUGE_BYTES);
        client_close(&c);
    }
    expect_get(s->port, "/hello", 200, "hello", ctx);
    expect_get(s->port, "/static/site.css", 200, "body { color: #333; }\n", ctx);
}

/* A changed file gets a new ETag; the old one no longer gives a 304. */
static void test_changed_file(int port)
{
    const char *ctx = "A: a changed file";
    char hdr[256], etag[128] = "", path[512];
    struct response r;
    struct timespec times[2] = {{0, UTIME_OMIT}, {0, 0}};
    const char *v;

    req(port, "GET", "/static/nosub/file.txt", NULL, &r);
    if ((v = header_get(&r, "ETag")))
        snprintf(etag, sizeof etag, "%s", v);
    response_free(&r);
    snprintf(path, sizeof path, "%s/public/nosub/file.txt", tmp_dir);
    times[1].tv_sec = time(NULL) + 3600;          /* the same bytes, a new mtime */
    ok(utimensat(AT_FDCWD, path, times, 0) == 0, what(ctx, "touched"));
    snprintf(hdr, sizeof hdr, "If-None-Match: %s\r\n", etag);
    req(port, "GET", "/static/nosub/file.txt", hdr, &r);
    if (expect_status(&r, 200, ctx)) {
        v = header_get(&r, "ETag");
        ok(v && strcmp(v, etag) != 0, what(ctx, "a new ETag (%s, was %s)", v ? v : "none", etag));
    }
    response_free(&r);
}

/* app.static in a handler: a 500, with the reason in the log. */
static void test_late(const struct server *s)
{
    const char *ctx = "A: app.static in a handler";

    expect_get(s->port, "/late", 500, NULL, ctx);
    ok(wait_for_log(s, "app.static: only while the scripts load, not in a handler", 5000),
       what(ctx, "the log says why"));
}

/* The access log counts a sendfile'd body in the response's bytes. */
static void test_access_log(const char *path)
{
    const char *ctx = "A: access log";
    char *log = slurp(path, NULL), want[128], *line;
    int found = 0;

    ok(log != NULL, what(ctx, "written"));
    snprintf(want, sizeof want, "%s", "\"path\":\"/static/big.bin\",\"route\":\"/static/*path\","
                                      "\"status\":200,\"bytes\":");
    for (line = log ? strstr(log, want) : NULL; line && !found; line = strstr(line + 1, want)) {
        long long bytes = strtoll(line + strlen(want), NULL, 10);
        found = bytes > BIG_BYTES && bytes < BIG_BYTES + 1024;
    }
    ok(found, what(ctx, "a GET of big.bin counts its head and %d body bytes", BIG_BYTES));
    free(log);
}

/* ======================================================================
 * Load-time errors (--check) and --request
 * ====================================================================== */

/* Writes DIR/app.lua (with a public/ directory) holding code; returns DIR in dir. */
static int one_off_app(const char *name, const char *code, char *dir, size_t cap)
{
    char rel[128];

    snprintf(dir, cap, "%s/%s", tmp_dir, name);
    snprintf(rel, sizeof rel, "%s", name);
    if (make_dir(rel) < 0 && errno != EEXIST)
        return -1;
    snprintf(rel, sizeof rel, "%s/public", name);
    if (make_dir(rel) < 0 && errno != EEXIST)
        return -1;
    snprintf(rel, sizeof rel, "%s/app.lua", name);
    return write_file(rel, code, strlen(code));
}

static void test_load_errors(void)
{
    static const struct {
        const char *code;
        const char *want;
    } cases[] = {
        {"app.static('static', 'public')",
         "app.static: the prefix must start with '/' (got \"static\")"},
        {"app.static('', 'public')", "app.static: the prefix must start with '/' (got \"\")"},
        {"app.static('/a/../b', 'public')", "app.static: bad prefix \"/a/../b\": expected plain"},
        {"app.static('/a//b', 'public')", "app.static: bad prefix \"/a//b\""},
        {"app.static('/:x', 'public')", "app.static: bad prefix \"/:x\""},
        {"app.static('/a/*x', 'public')", "app.static: bad prefix \"/a/*x\""},
        {"app.static('/a b', 'public')", "app.static: bad prefix \"/a b\""},
        {"app.static('/a%2e', 'public')", "app.static: bad prefix \"/a%2e\""},
        {"app.static('/a?b', 'public')", "app.static: bad prefix \"/a?b\""},
        {"app.static('/s', 'nope')", "app.static: directory \"DIR/nope\" does not exist"},
        {"app.static('/s', '/nonexistent-tycho-dir')",
         "app.static: directory \"/nonexistent-tycho-dir\" does not exist"},
        {"app.static('/s', 'app.lua')", "app.static: \"DIR/app.lua\" is not a directory"},
        {"app.static('/s', '')", "app.static: expected a directory, got \"\""},
        {"app.static('/s')", "bad argument #2 to 'static' (string expected, got no value)"},
        {"app.static('/s', 'public', 5)", "app.static: opts must be a table, got number"},
        {"app.static('/s', 'public', {idx = 1})",
         "app.static: unknown option \"idx\" (expected index, dotfiles, max_age or gzip)"},
        {"app.static('/s', 'public', {1})",
         "app.static: option names are strings (index, dotfiles, max_age, gzip), got a number key"},
        {"app.static('/s', 'public', {index = true})",
         "app.static: index must be a file name such as \"index.html\", or false"},
        {"app.static('/s', 'public', {index = 'a/b.html'})",
         "app.static: index must be a file name such as \"index.html\", or false"},
        {"app.static('/s', 'public', {index = '..'})",
         "app.static: index must be a file name such as \"index.html\", or false"},
        {"app.static('/s', 'public', {dotfiles = 1})",
         "app.static: dotfiles must be true or false"},
        {"app.static('/s', 'public', {max_age = -1})",
         "app.static: max_age must be a whole number of seconds from 0 to 2147483647"},
        {"app.static('/s', 'public', {max_age = 1.5})",
         "app.static: max_age must be a whole number of seconds from 0 to 2147483647"},
        {"app.static('/s', 'public', {max_age = '60'})",
         "app.static: max_age must be a whole number of seconds from 0 to 2147483647"},
        {"app.static('/s', 'public'); app.static('/s/', 'public')",
         "app.static: route GET /s already registered (as GET /s)"},
        {"app.get('/s/*rest', function() end); app.static('/s', 'public')",
         "app.static: route GET /s/*path already registered (as GET /s/*rest)"},
    };
    char dir[512], cmd[1200], out[4096], want[600];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char code[600], name[32];
        snprintf(name, sizeof name, "bad%zu", i);
        snprintf(code, sizeof code, "local app = require 'tycho'\n%s\n", cases[i].code);
        if (one_off_app(name, code, dir, sizeof dir) < 0) {
            ok(0, what("load errors", "write %s", name));
            continue;
        }
        snprintf(cmd, sizeof cmd, "%s --check %s 2>&1", tycho_binary, dir);
        const char *at = strstr(cases[i].want, "DIR");
        if (at)
            snprintf(want, sizeof want, "%.*s%s%s", (int)(at - cases[i].want), cases[i].want, dir,
                     at + 3);
        else
            snprintf(want, sizeof want, "%s", cases[i].want);
        is_int(run_command(cmd, out, sizeof out), 1, what("--check", "%s: exit 1", cases[i].code));
        ok(strstr(out, "app.lua:2: ") && strstr(out, want),
           what("--check", "%s: says \"%s\"", cases[i].code, want));
        if (!strstr(out, want))
            note("got: %s", out);
    }
}

/* The "/" prefix, through --request (which also reads a large file whole into the output). */
static void test_root_prefix(void)
{
    const char *ctx = "prefix /";
    char dir[512], cmd[1200], rel[128], *out = malloc(BIG_BYTES + 65536);
    int rc;

    if (!out || one_off_app("root", "local app = require 'tycho'\n"
                                    "app.static('/', 'public', {max_age = 0})\n"
                                    "app.get('/hello', function() return 'hi' end)\n",
                            dir, sizeof dir) < 0) {
        ok(0, what(ctx, "set-up"));
        free(out);
        return;
    }
    snprintf(rel, sizeof rel, "root/public/index.html");
    write_file(rel, "root index\n", 11);
    snprintf(rel, sizeof rel, "root/public/big.bin");
    write_file(rel, big, BIG_BYTES);
    snprintf(cmd, sizeof cmd, "%s --request 'GET /' %s 2>&1", tycho_binary, dir);
    rc = run_command(cmd, out, BIG_BYTES + 65536);
    ok(rc == 0 && strstr(out, "HTTP/1.1 200 OK\r\n") && strstr(out, "\r\n\r\nroot index\n"),
       what(ctx, "GET / is the index"));
    ok(strstr(out, "Cache-Control: max-age=0\r\n") != NULL, what(ctx, "max_age = 0"));
    snprintf(cmd, sizeof cmd, "%s --request 'GET /hello' %s 2>&1", tycho_binary, dir);
    run_command(cmd, out, BIG_BYTES + 65536);
    ok(strstr(out, "\r\n\r\nhi") != NULL, what(ctx, "a route next to the mount"));
    snprintf(cmd, sizeof cmd, "%s --request 'GET //index.html' %s 2>&1", tycho_binary, dir);
    run_command(cmd, out, BIG_BYTES + 65536);
    ok(strstr(out, "HTTP/1.1 404 ") != NULL, what(ctx, "//index.html is a 404"));
    snprintf(cmd, sizeof cmd, "%s --request 'GET /../app.lua' %s 2>&1", tycho_binary, dir);
    run_command(cmd, out, BIG_BYTES + 65536);
    ok(strstr(out, "HTTP/1.1 404 ") != NULL, what(ctx, "/../app.lua is a 404"));
    snprintf(cmd, sizeof cmd, "%s --request 'GET /big.bin' %s", tycho_binary, dir);
    {
        FILE *f = popen(cmd, "r");
        size_t n = f ? fread(out, 1, BIG_BYTES + 65536, f) : 0;
        char *body = n ? memmem(out, n, "\r\n\r\n", 4) : NULL;
        if (f)
            pclose(f);
        ok(body && (size_t)(out + n - body - 4) == BIG_BYTES &&
               memcmp(body + 4, big, BIG_BYTES) == 0,
           what(ctx, "--request GET /big.bin prints the whole file"));
    }
    free(out);
}

/* ======================================================================
 * The middleware server (B)
 * ====================================================================== */

static void test_middleware(int port)
{
    const char *ctx = "B: middleware around the mount";
    struct response r;
    struct client c;

    req(port, "GET", "/static/site.css", NULL, &r);
    if (expect_status(&r, 200, ctx)) {
        expect_header(&r, "X-Mw", "after", ctx);
        expect_body(&r, "body { color: #333; }\n", ctx);
    }
    response_free(&r);
    req(port, "GET", "/static/big.bin", NULL, &r);
    if (expect_status(&r, 200, ctx)) {
        expect_header(&r, "X-Mw", "after", ctx);
        ok(same_bytes(&r, big, BIG_BYTES), what(ctx, "a big file, intact"));
    }
    response_free(&r);
    req(port, "GET", "/static/nope.txt", NULL, &r);
    if (expect_status(&r, 404, ctx))
        expect_header(&r, "X-Mw", "after", ctx);
    response_free(&r);
    expect_get(port, "/static/private/site.css", 403, "private", ctx);

    /* A middleware that waits, pipelined behind and before file responses. */
    ctx = "B: a waiting middleware, pipelined";
    if (client_connect(&c, port) == 0) {
        client_sends(&c, "GET /static/big.bin?sleep=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                         "GET /static/site.css?sleep=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                         "GET /static/big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=-3\r\n\r\n");
        read_response(&c, &r, 0);
        if (expect_status(&r, 200, ctx))
            ok(same_bytes(&r, big, BIG_BYTES), what(ctx, "1: the big file"));
        response_free(&r);
        read_response(&c, &r, 0);
        if (expect_status(&r, 200, ctx))
            expect_body(&r, "body { color: #333; }\n", ctx);
        response_free(&r);
        read_response(&c, &r, 0);
        if (expect_status(&r, 206, ctx))
            ok(same_bytes(&r, big + BIG_BYTES - 3, 3), what(ctx, "3: a range"));
        response_free(&r);
        client_close(&c);
    }
}

/* ======================================================================
 * main
 * ====================================================================== */

static void core_checks(const struct server *s, const char *label)
{
    test_types(s->port, label);
    test_validators(s->port, label);
    test_ranges(s->port, label);
    test_head_and_methods(s->port, label);
    test_indexes(s->port, label);
    test_missing_and_traversal(s->port, label);
    test_large(s->port, label);
}

int main(int argc, char **argv)
{
    struct server s;
    char log_path[128];
    int rc;

    if ((rc = suite_setup(argc, argv)) != 0)
        return rc;
    if (make_fixture() < 0) {
        ok(0, "the fixture is made");
        remove_fixture();
        return test_summary();
    }
    snprintf(log_path, sizeof log_path, "%s/access.log", tmp_dir);

    /* ---- A: mounts served from C; --write-timeout 2; the access log ---- */
    {
        const char *args[] = {"--port", "0", "--workers", "2", "--write-timeout", "2",
                              "--access-log", log_path, "--access-log-format", "json",
                              tmp_dir, NULL};
        rc = server_start(&s, args);
        ok(rc == 0, "server A starts");
    }
    if (rc == 0) {
        ok(strstr(s.out, "GET     /static/*path") && strstr(s.out, "GET     /static\n"),
           "A: the routes list the mount's two routes");
        core_checks(&s, "A");
        test_abandoned(&s);
        test_changed_file(s.port);
        test_late(&s);
        is_int(server_stop(&s), 0, "server A: exit status 0 after SIGTERM");
        ok(log_has_line(&s, "requests;", "; 1 timeouts"),
           "A: a worker counted the write timeout (its stop line says 1 timeouts)");
        test_access_log(log_path);
    }
    server_cleanup(&s);

    /* ---- B: the same through the mounts' Lua handler (a middleware is registered) ---- */
    setenv("STATIC_MIDDLEWARE", "1", 1);
    {
        const char *args[] = {"--port", "0", "--workers", "1", tmp_dir, NULL};
        rc = server_start(&s, args);
        ok(rc == 0, "server B (middleware) starts");
    }
    unsetenv("STATIC_MIDDLEWARE");
    if (rc == 0) {
        core_checks(&s, "B");
        test_middleware(s.port);
        is_int(server_stop(&s), 0, "server B: exit status 0 after SIGTERM");
    }
    server_cleanup(&s);

    /* ---- C: the realpath check instead of openat2 ---- */
    setenv("TYCHO_STATIC_NO_OPENAT2", "1", 1);
    {
        const char *args[] = {"--port", "0", "--workers", "1", tmp_dir, NULL};
        rc = server_start(&s, args);
        ok(rc == 0, "server C (no openat2) starts");
    }
    unsetenv("TYCHO_STATIC_NO_OPENAT2");
    if (rc == 0) {
        core_checks(&s, "C");
        is_int(server_stop(&s), 0, "server C: exit status 0 after SIGTERM");
    }
    server_cleanup(&s);

    test_load_errors();
    test_root_prefix();

    remove_fixture();
    free(big);
    free(wrap_copy);
    return test_summary();
}
