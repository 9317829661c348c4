/*
 * test_http.c: integration tests for Tycho over real sockets.
 *
 *     test_http TYCHO_BINARY FIXTURE_DIR
 *
 * Starts the real binary (three times, with different limits) on 127.0.0.1
 * with --port 0, reads the chosen port from the "listening on" line on its
 * stdout, and talks raw HTTP/1.1 to it with the small socket client below.
 * The server's stderr goes to a temp file so tests can assert log lines.
 * Each server is stopped with SIGTERM and must exit with status 0; that is
 * how errors of a wrapper such as valgrind show up.
 *
 * TYCHO_WRAP, if set, is split on spaces and prefixed to the server command,
 * e.g. TYCHO_WRAP="valgrind --leak-check=full --error-exitcode=99 -q".
 *
 * Single-threaded. Every wait is bounded (poll with a deadline); no check
 * measures time. Only the PIDs this program started are ever signalled.
 * Ends with the harness line `N passed, M failed`.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "support.h"
#include "client.h"

/* ======================================================================
 * Tests: server A (defaults, --workers 2)
 * ====================================================================== */

/*
 * Returns 1 if stdout lists the route: a line "  METHOD PATH" (the gap
 * between method and path may be padded to align the columns).
 */
static int lists_route(const struct server *s, const char *method, const char *path)
{
    const char *line;

    for (line = strstr(s->out, "\n  "); line; line = strstr(line + 1, "\n  ")) {
        const char *p = line + 3;
        size_t m = strlen(method), n = strlen(path);
        if (strncmp(p, method, m) != 0 || p[m] != ' ')
            continue;
        p += m;
        while (*p == ' ')
            p++;
        if (strncmp(p, path, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
            return 1;
    }
    return 0;
}

static void test_startup_output(const struct server *s, int workers)
{
    char want[64];

    ok(strstr(s->out, "tycho 0.1.0 listening on http://127.0.0.1:") != NULL,
       "startup: stdout has \"tycho 0.1.0 listening on http://127.0.0.1:PORT\"");
    snprintf(want, sizeof want, "(%d worker", workers);
    ok(strstr(s->out, want) != NULL, what("startup", "listening line says %s", want));
    ok(strstr(s->out, "\nroutes:") != NULL, "startup: stdout has a \"routes:\" line");
    ok(lists_route(s, "GET", "/users/:id"), "startup: lists \"  GET /users/:id\"");
    ok(lists_route(s, "GET", "/static/*path"), "startup: lists \"  GET /static/*path\"");
    ok(lists_route(s, "POST", "/echo"), "startup: lists \"  POST /echo\"");
    ok(lists_route(s, "OPTIONS", "/items/:id"),
       "startup: lists \"  OPTIONS /items/:id\" (app.route)");
    ok(!lists_route(s, "GET", "/nope"), "startup: does not list unregistered routes");
    if (!lists_route(s, "GET", "/users/:id"))
        note_bytes("stdout", s->out, s->out_len, 1500);
}

static void test_basic(int port)
{
    struct response r;

    fetch(port, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, "GET /hello")) {
        expect_body(&r, "Hello, World!", "GET /hello");
        expect_header(&r, "Content-Type", "text/plain; charset=utf-8", "GET /hello");
        check_common(&r, 0, -1, "GET /hello");
        ok(r.minor == 1, "GET /hello: answered with HTTP/1.1");
    }
    response_free(&r);

    check_get(port, "/info", 200, "GET /info 127.0.0.1");
    check_get(port, "/info?x=1&y=2", 200, "GET /info 127.0.0.1");   /* path has no query */
    check_get(port, "/global", 200, "true");
    check_get(port, "/via-global", 200, "registered through the global");
    check_get(port, "/require", 200, "hello, tycho");
    check_get(port, "/load-order", 200, "00_first,10_middleware,20_routes,30_errors,99_last");
    check_get(port, "/body-type", 200, "string:0");
    check_get(port, "/empty", 200, "");
    check_get(port, "/teapot", 418, "short and stout");

    fetch(port, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, "GET /big")) {
        int good = r.body_len == 100000;
        size_t i;
        for (i = 0; good && i < r.body_len; i++)
            good = r.body[i] == (char)('0' + i % 10);
        ok(good, "GET /big: 100000 bytes of 0123456789...");
        check_common(&r, 0, -1, "GET /big");
    }
    response_free(&r);
}

static void test_routing(int port)
{
    check_get(port, "/users/42", 200, "{\"id\":\"42\"}");
    check_get(port, "/users/me", 200, "static me");
    check_get(port, "/users/42/posts/7", 200, "user 42 post 7");
    check_get(port, "/users/me/posts/7", 200, "user me post 7");
    check_get(port, "/static/a/b.css", 200, "wildcard a/b.css");
    check_get(port, "/static/x", 200, "wildcard x");
    check_get(port, "/static/fixed.txt", 200, "static fixed");
    check_get(port, "/static/fixed.txt/more", 200, "wildcard fixed.txt/more");
    check_get(port, "/files/readme", 200, "param readme");
    check_get(port, "/files/a/b/c", 200, "wildcard a/b/c");
    check_get(port, "/items/9", 200, "GET item 9");
    check_get(port, "/nope", 404, NULL);
    check_get(port, "/users/42/extra", 404, NULL);
    check_get(port, "/hello/more", 404, NULL);
    check_get(port, "/HELLO", 404, NULL);

    {
        static const char *const methods[] = {"PUT", "PATCH", "DELETE", "OPTIONS", "POST"};
        size_t i;
        for (i = 0; i < sizeof methods / sizeof methods[0]; i++) {
            char req[256], body[64];
            struct response r;
            snprintf(req, sizeof req,
                     "%s /items/5 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", methods[i]);
            snprintf(body, sizeof body, "%s item 5", methods[i]);
            fetch(port, req, &r);
            if (expect_status(&r, 200, methods[i]))
                expect_body(&r, body, methods[i]);
            response_free(&r);
        }
    }
}

static void test_query(int port)
{
    check_get(port, "/query?a=1&b=x%20y", 200, "a=1\nb=x y");
    check_get(port, "/query?c=p+q&d=%2F%3D%26&e=", 200, "c=p q\nd=/=&\ne=");
    check_get(port, "/query?name=J%C3%BCrgen", 200, "name=J\xc3\xbcrgen");
    check_get(port, "/query", 200, "");
}

static void test_headers(int port)
{
    struct response r;

    fetch(port,
          "GET /headers HTTP/1.1\r\nHost: t\r\nX-Custom: abc\r\ncontent-type: text/x-fixture\r\n"
          "X-Multi: one\r\nx-multi: two\r\n\r\n",
          &r);
    if (expect_status(&r, 200, "headers"))
        expect_body(&r, "abc|abc|abc|text/x-fixture|text/x-fixture|one, two|nil", "headers");
    response_free(&r);
    fetch(port,
          "GET /get-header HTTP/1.1\r\nHost: t\r\nX-Custom: abc\r\ncontent-type: text/x-fixture\r\n"
          "X-Multi: one\r\nx-multi: two\r\n\r\n",
          &r);
    if (expect_status(&r, 200, "req:get_header"))
        expect_body(&r, "abc|abc|text/x-fixture|one, two|nil|nil", "req:get_header");
    response_free(&r);
}

static void test_bodies(int port)
{
    struct client c;
    struct response r;
    static const char binary[] = "a\0b\xff" "c";
    char req[256];
    size_t i;

    /* Content-Length body with NUL and high bytes */
    if (client_connect(&c, port) == 0) {
        snprintf(req, sizeof req, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n");
        client_sends(&c, req);
        client_send(&c, binary, 5);
        read_response(&c, &r, 0);
        if (expect_status(&r, 200, "echo binary")) {
            ok(r.body_len == 5 && memcmp(r.body, binary, 5) == 0, "echo binary: exact bytes");
            expect_header(&r, "X-Body-Length", "5", "echo binary");
            check_common(&r, 0, -1, "echo binary");
        }
        response_free(&r);
        client_close(&c);
    }

    /* Content-Length body split across sends with pauses */
    if (client_connect(&c, port) == 0) {
        client_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Len");
        sleep_ms(50);
        client_sends(&c, "gth: 11\r\n\r\n");
        sleep_ms(50);
        client_sends(&c, "hello");
        sleep_ms(100);
        client_sends(&c, " wor");
        sleep_ms(100);
        client_sends(&c, "ld");
        read_response(&c, &r, 0);
        if (expect_status(&r, 200, "echo split"))
            expect_body(&r, "hello world", "echo split");
        response_free(&r);

        /* and a chunked body on the same connection, split mid chunk-size */
        client_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
        sleep_ms(50);
        client_sends(&c, "lo\r\n1");
        sleep_ms(50);
        client_sends(&c, "0\r\n, chunked body!!");     /* 0x10 = 16 bytes */
        sleep_ms(50);
        client_sends(&c, "\r\n0\r\n");
        sleep_ms(50);
        client_sends(&c, "\r\n");
        read_response(&c, &r, 0);
        if (expect_status(&r, 200, "echo chunked split")) {
            expect_body(&r, "hello, chunked body!!", "echo chunked split");
            expect_header(&r, "X-Body-Length", "21", "echo chunked split");
            check_common(&r, 0, -1, "echo chunked split");
        }
        response_free(&r);
        client_close(&c);
    }

    /* chunked with upper-case hex, an extension and a trailer */
    fetch(port,
          "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
          "A;name=value\r\n0123456789\r\n1\r\n!\r\n0\r\nX-Trailer: yes\r\n\r\n",
          &r);
    if (expect_status(&r, 200, "chunked ext+trailer"))
        expect_body(&r, "0123456789!", "chunked ext+trailer");
    response_free(&r);

    /* a POST body fed one byte per send() */
    if (client_connect(&c, port) == 0) {
        const char *msg = "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\nbytewise!";
        int sent = 1;
        for (i = 0; msg[i] && sent; i++) {
            sent = client_send(&c, msg + i, 1) == 0;
            if (i % 8 == 0)
                sleep_ms(1);
        }
        read_response(&c, &r, 0);
        if (expect_status(&r, 200, "byte-wise request"))
            expect_body(&r, "bytewise!", "byte-wise request");
        response_free(&r);
        client_close(&c);
    }

    /* a 200 KB chunked body (in 4 KB chunks) */
    if (client_connect(&c, port) == 0) {
        char chunk[4096 + 16];
        int good = 1;
        size_t n;
        client_sends(&c, "PUT /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
        for (i = 0; i < 50 && good; i++) {
            n = (size_t)sprintf(chunk, "1000\r\n");
            memset(chunk + n, 'a' + (int)(i % 26), 4096);
            memcpy(chunk + n + 4096, "\r\n", 2);
            good = client_send(&c, chunk, n + 4098) == 0;
        }
        client_sends(&c, "0\r\n\r\n");
        read_response(&c, &r, 0);
        if (expect_status(&r, 200, "200 KB chunked echo")) {
            good = r.body_len == 50 * 4096;
            for (i = 0; good && i < r.body_len; i++)
                good = r.body[i] == 'a' + (int)((i / 4096) % 26);
            ok(good, "200 KB chunked echo: body intact");
        }
        response_free(&r);
        client_close(&c);
    }
}

static void test_middleware(int port)
{
    struct response r;

    fetch(port, "GET /mw/order HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, "middleware order")) {
        expect_body(&r, "ok", "middleware order");
        expect_header(&r, "X-Order", "mw1,mw2,handler,mw2-after,mw1-after", "middleware order");
        expect_header(&r, "X-Mw1", "yes", "middleware order");
        expect_header(&r, "X-Mw2", "yes", "middleware order");
    }
    response_free(&r);

    fetch(port, "GET /mw/blocked HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 403, "middleware without next")) {
        expect_body(&r, "blocked by middleware", "middleware without next");
        expect_header(&r, "X-Mw1", "yes", "middleware without next");
        check_common(&r, 0, -1, "middleware without next");
    }
    response_free(&r);

    fetch(port, "GET /mw/halt HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 401, "middleware halt, nothing sent")) {
        expect_body(&r, "", "middleware halt, nothing sent");
        expect_header(&r, "WWW-Authenticate", "Basic realm=\"fixture\"",
                      "middleware halt, nothing sent");
        check_common(&r, 0, -1, "middleware halt, nothing sent");
    }
    response_free(&r);

    /* other paths are untouched by the middlewares */
    fetch(port, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    ok(header_get(&r, "X-Mw1") == NULL, "middleware: /hello has no X-Mw1");
    response_free(&r);
}

static void test_responses(int port)
{
    struct response r;
    const char *ct;

    fetch(port, "GET /json HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, "json")) {
        expect_body(&r, "{\"ok\":true}", "json");
        ct = header_get(&r, "Content-Type");
        ok(ct && strncmp(ct, "application/json", 16) == 0,
           what("json", "Content-Type application/json (got %s)", ct ? ct : "none"));
        check_common(&r, 0, -1, "json");
    }
    response_free(&r);
    check_get(port, "/json-array", 200, "[1,2,3]");
    check_get(port, "/json-string", 200, "\"hi\"");

    fetch(port, "GET /redirect HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 302, "redirect")) {
        expect_header(&r, "Location", "/hello", "redirect");
        check_common(&r, 0, -1, "redirect");
    }
    response_free(&r);

    fetch(port, "GET /redirect-301 HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 301, "redirect 301"))
        expect_header(&r, "Location", "https://example.com/moved", "redirect 301");
    response_free(&r);

    fetch(port, "GET /chain HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 201, "chained res calls")) {
        expect_body(&r, "created", "chained res calls");
        expect_header(&r, "X-A", "1", "chained res calls");
        expect_header(&r, "X-B", "2", "chained res calls");
    }
    response_free(&r);

    fetch(port, "GET /custom-type HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, "custom Content-Type")) {
        expect_body(&r, "<p>hi</p>", "custom Content-Type");
        expect_header(&r, "Content-Type", "text/html; charset=utf-8", "custom Content-Type");
        is_int(header_count(&r, "Content-Type"), 1, "custom Content-Type: only one");
    }
    response_free(&r);
}

/* Checks that the Allow header lists exactly the given methods. */
static void expect_allow(const struct response *r, const char *const *want, int n,
                         const char *ctx)
{
    const char *allow = header_get(r, "Allow");
    char copy[256], *tok, *save = NULL;
    int count = 0, i, found;

    ok(allow != NULL, what(ctx, "has an Allow header"));
    if (!allow)
        return;
    snprintf(copy, sizeof copy, "%s", allow);
    for (tok = strtok_r(copy, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        found = 0;
        for (i = 0; i < n; i++)
            found |= strcmp(tok, want[i]) == 0;
        ok(found, what(ctx, "Allow \"%s\": %s is expected", allow, tok));
        count++;
    }
    is_int(count, n, what(ctx, "Allow \"%s\" lists %d methods", allow, n));
}

static void test_methods(int port)
{
    static const char *const get_head_post[] = {"GET", "HEAD", "POST"};
    static const char *const get_head[] = {"GET", "HEAD"};
    struct response r, g;
    struct client c;

    fetch(port, "DELETE /only HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 405, "DELETE /only")) {
        expect_allow(&r, get_head_post, 3, "DELETE /only");
        expect_header(&r, "Allow", "GET, HEAD, POST", "DELETE /only");
        check_common(&r, 0, -1, "DELETE /only");
    }
    response_free(&r);

    fetch(port, "PUT /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi", &r);
    if (expect_status(&r, 405, "PUT /hello")) {
        expect_allow(&r, get_head, 2, "PUT /hello");
        check_common(&r, 0, -1, "PUT /hello");
    }
    response_free(&r);

    fetch(port, "POST /only HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r);
    if (expect_status(&r, 200, "POST /only"))
        expect_body(&r, "only post", "POST /only");
    response_free(&r);

    fetch(port, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 404, "404"))
        check_common(&r, 0, -1, "404");
    response_free(&r);

    /* HEAD: same headers and Content-Length as GET, no body bytes: the next
     * response on the connection must start right after the HEAD's head. */
    if (client_connect(&c, port) == 0) {
        exchange(&c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\n", &g);
        exchange(&c, "HEAD /big HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        if (expect_status(&r, 200, "HEAD /big")) {
            check_common(&r, 1, (long)g.body_len, "HEAD /big");
            expect_header(&r, "Content-Type", "text/plain; charset=utf-8", "HEAD /big");
        }
        response_free(&r);
        response_free(&g);
        exchange(&c, "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        if (expect_status(&r, 200, "HEAD /hello"))
            check_common(&r, 1, 13, "HEAD /hello");
        response_free(&r);
        ok(client_wait_closed(&c, 300) == -1, "HEAD /hello: no body bytes follow");
        exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        if (expect_status(&r, 200, "GET after HEAD"))
            expect_body(&r, "Hello, World!", "GET after HEAD");
        response_free(&r);
        exchange(&c, "HEAD /nope HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        expect_status(&r, 404, "HEAD /nope");
        response_free(&r);
        exchange(&c, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        expect_status(&r, 404, "GET /nope on a keep-alive connection");
        response_free(&r);
        exchange(&c, "DELETE /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        expect_status(&r, 405, "DELETE /hello on a keep-alive connection");
        response_free(&r);
        exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        if (expect_status(&r, 200, "GET after 404 and 405 on the same connection"))
            expect_body(&r, "Hello, World!", "GET after 404 and 405 on the same connection");
        response_free(&r);
        client_close(&c);
    }
}

static void test_pipelining(int port)
{
    struct client c;
    struct response r;
    char all[8192], ctx[64], body[64];
    size_t len = 0;
    int i;
    static const char six[] =
        "GET /query?n=1 HTTP/1.1\r\nHost: t\r\n\r\n"
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\ntwo"
        "GET /query?n=3 HTTP/1.1\r\nHost: t\r\n\r\n"
        "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n"
        "GET /error HTTP/1.1\r\nHost: t\r\n\r\n"
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsix\r\n0\r\n\r\n"
        "GET /query?n=7 HTTP/1.1\r\nHost: t\r\n\r\n";
    static const int head_only[] = {0, 0, 0, 1, 0, 0, 0};
    static const int status[] = {200, 200, 200, 200, 500, 200, 200};
    static const char *const bodies[] = {"n=1", "two", "n=3", "", NULL, "six", "n=7"};

    if (client_connect(&c, port) == 0) {
        client_sends(&c, six);
        for (i = 0; i < 7; i++) {
            snprintf(ctx, sizeof ctx, "pipelined response %d of 7", i + 1);
            read_response(&c, &r, head_only[i]);
            if (expect_status(&r, status[i], ctx) && bodies[i])
                expect_body(&r, bodies[i], ctx);
            response_free(&r);
        }
        client_close(&c);
    }

    /* 20 requests in one write; the last one asks to close */
    for (i = 1; i <= 20; i++)
        len += (size_t)snprintf(all + len, sizeof all - len,
                                "GET /query?n=%d HTTP/1.1\r\nHost: t\r\n%s\r\n", i,
                                i == 20 ? "Connection: close\r\n" : "");
    if (client_connect(&c, port) == 0) {
        int good = 0;
        client_send(&c, all, len);
        for (i = 1; i <= 20; i++) {
            read_response(&c, &r, 0);
            snprintf(body, sizeof body, "n=%d", i);
            if (r.status == 200 && strcmp(r.body, body) == 0)
                good++;
            else
                note("pipelined 20: response %d: status %d body \"%s\"", i, r.status,
                     r.body ? r.body : "");
            response_free(&r);
        }
        is_int(good, 20, "20 pipelined requests answered in order");
        ok(client_wait_closed(&c, io_timeout_ms) == 1,
           "pipeline ending in Connection: close: server closes");
        client_close(&c);
    }
}

/*
 * Empty lines before a request, their CR and LF in separate reads: the
 * request context taken for them stays until the request (its parser counts
 * them), and the strict check waits for the LF of a CR.
 */
static void test_split_blank_lines(int port)
{
    static const char *const pieces[] = {"\r", "\n\r", "\n", "\r",
                                         "\nGET /query?n=1 HTTP/1.1\r\nHost: t\r\n\r\n"};
    struct client c;
    struct response r;

    if (client_connect(&c, port) < 0) {
        ok(0, "split blank lines: connect");
        return;
    }
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        client_sends(&c, pieces[i]);
        sleep_ms(50);
    }
    read_response(&c, &r, 0);
    if (expect_status(&r, 200, "split blank lines: CR and LF apart, then a request"))
        expect_body(&r, "n=1", "split blank lines: its answer");
    response_free(&r);
    /* The same after a first request on the connection (a kept-alive one). */
    client_sends(&c, "\r");
    sleep_ms(50);
    client_sends(&c, "\nGET /query?n=2 HTTP/1.1\r\nHost: t\r\n\r\n");
    read_response(&c, &r, 0);
    if (expect_status(&r, 200, "split blank lines: after a request too"))
        expect_body(&r, "n=2", "split blank lines: its answer after a request");
    response_free(&r);
    client_close(&c);
}

static void test_connection_handling(int port)
{
    struct client c;
    struct response r;
    const char *conn;

    /* HTTP/1.0 without keep-alive: response, then close */
    if (client_connect(&c, port) == 0) {
        exchange(&c, "GET /hello HTTP/1.0\r\n\r\n", &r);
        if (expect_status(&r, 200, "HTTP/1.0"))
            expect_body(&r, "Hello, World!", "HTTP/1.0");
        check_common(&r, 0, -1, "HTTP/1.0");
        response_free(&r);
        ok(client_wait_closed(&c, io_timeout_ms) == 1, "HTTP/1.0: server closes after response");
        client_close(&c);
    }

    /* HTTP/1.0 with keep-alive: stays open */
    if (client_connect(&c, port) == 0) {
        exchange(&c, "GET /query?n=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r);
        if (expect_status(&r, 200, "HTTP/1.0 keep-alive 1")) {
            expect_body(&r, "n=1", "HTTP/1.0 keep-alive 1");
            conn = header_get(&r, "Connection");
            ok(conn && strcasecmp(conn, "keep-alive") == 0,
               what("HTTP/1.0 keep-alive", "response says Connection: keep-alive (got %s)",
                    conn ? conn : "none"));
        }
        response_free(&r);
        exchange(&c, "GET /query?n=2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r);
        if (expect_status(&r, 200, "HTTP/1.0 keep-alive 2"))
            expect_body(&r, "n=2", "HTTP/1.0 keep-alive 2");
        response_free(&r);
        exchange(&c, "GET /query?n=3 HTTP/1.0\r\n\r\n", &r);
        if (expect_status(&r, 200, "HTTP/1.0 keep-alive 3"))
            expect_body(&r, "n=3", "HTTP/1.0 keep-alive 3");
        response_free(&r);
        ok(client_wait_closed(&c, io_timeout_ms) == 1,
           "HTTP/1.0: closes after the first request without keep-alive");
        client_close(&c);
    }

    /* HTTP/1.1 Connection: close */
    if (client_connect(&c, port) == 0) {
        exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        expect_status(&r, 200, "keep-alive before close");
        response_free(&r);
        exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
        if (expect_status(&r, 200, "Connection: close"))
            expect_body(&r, "Hello, World!", "Connection: close");
        response_free(&r);
        ok(client_wait_closed(&c, io_timeout_ms) == 1, "Connection: close: read returns 0");
        client_close(&c);
    }

    /* HTTP/1.1 keep-alive by default: still open after a pause */
    if (client_connect(&c, port) == 0) {
        exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        expect_status(&r, 200, "keep-alive default 1");
        response_free(&r);
        ok(client_wait_closed(&c, 300) == -1, "keep-alive: connection stays open");
        exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        expect_status(&r, 200, "keep-alive default 2");
        response_free(&r);
        client_close(&c);
    }

    /* Expect: 100-continue */
    if (client_connect(&c, port) == 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        long long deadline = now_ms() + io_timeout_ms;
        client_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                         "Expect: 100-continue\r\n\r\n");
        client_need(&c, sizeof cont - 1, deadline);
        ok(c.len >= sizeof cont - 1 && memcmp(c.buf, cont, sizeof cont - 1) == 0,
           "100-continue: \"HTTP/1.1 100 Continue\\r\\n\\r\\n\" before the body is sent");
        if (c.len >= sizeof cont - 1 && memcmp(c.buf, cont, sizeof cont - 1) == 0)
            client_consume(&c, sizeof cont - 1);
        else
            note_bytes("got", c.buf, c.len, 200);
        client_sends(&c, "hello");
        read_response(&c, &r, 0);
        if (expect_status(&r, 200, "100-continue final"))
            expect_body(&r, "hello", "100-continue final");
        response_free(&r);
        /* chunked + Expect */
        client_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                         "Expect: 100-continue\r\n\r\n");
        deadline = now_ms() + io_timeout_ms;
        client_need(&c, sizeof cont - 1, deadline);
        ok(c.len >= sizeof cont - 1 && memcmp(c.buf, cont, sizeof cont - 1) == 0,
           "100-continue chunked: interim response");
        if (c.len >= sizeof cont - 1 && memcmp(c.buf, cont, sizeof cont - 1) == 0)
            client_consume(&c, sizeof cont - 1);
        client_sends(&c, "4\r\nabcd\r\n0\r\n\r\n");
        read_response(&c, &r, 0);
        if (expect_status(&r, 200, "100-continue chunked final"))
            expect_body(&r, "abcd", "100-continue chunked final");
        response_free(&r);
        /* no stray interim response without Expect */
        exchange(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok", &r);
        if (expect_status(&r, 200, "no Expect: no 100"))
            expect_body(&r, "ok", "no Expect: no 100");
        response_free(&r);
        client_close(&c);
    }
}

/*
 * Request boundary attacks (docs/http.md's table): each is followed in the
 * same write by a valid request. Exactly one response comes back, the 4xx,
 * then the close: the request behind the bad bytes is never served.
 */
static void test_smuggling(int port)
{
#define TE_POST "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
#define NEXT_REQ "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
    static const struct {
        const char *name;
        const char *req;
        int status;
    } cases[] = {
        {"chunk data followed by XX", TE_POST "5\r\nhelloXX0\r\n\r\n" NEXT_REQ, 400},
        {"CR X at the end of the head", "GET /hello HTTP/1.1\r\nHost: t\r\n\rX" NEXT_REQ, 400},
        {"CR X after a chunk size", TE_POST "5\rXhello\r\n0\r\n\r\n" NEXT_REQ, 400},
        {"CR X after the last chunk", TE_POST "5\r\nhello\r\n0\r\n\rX" NEXT_REQ, 400},
        {"HTTP/1.0 chunked keep-alive",
         "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
         "5\r\nhello\r\n0\r\n\r\n" NEXT_REQ,
         400},
        {"Host with a space and a slash",
         "GET /hello HTTP/1.1\r\nHost: bad host/x\r\n\r\n" NEXT_REQ, 400},
        {"HTTX/1.1", "GET /hello HTTX/1.1\r\nHost: t\r\n\r\n" NEXT_REQ, 400},
        {"HTT\\xb3/1.1", "GET /hello HTT\xb3/1.1\r\nHost: t\r\n\r\n" NEXT_REQ, 400},
        {"bare LF line ends", "GET /hello HTTP/1.1\nHost: t\n\n" NEXT_REQ, 400},
        {"two spaces in the request line", "GET  /hello HTTP/1.1\r\nHost: t\r\n\r\n" NEXT_REQ, 400},
        {"tab in the target", "GET /he\tllo HTTP/1.1\r\nHost: t\r\n\r\n" NEXT_REQ, 400},
        {"LF in a chunk extension", TE_POST "5;a\nb\r\nhello\r\n0\r\n\r\n" NEXT_REQ, 400},
        {"chunk data followed by CR X", TE_POST "5\r\nhello\rX0\r\n\r\n" NEXT_REQ, 400},
        {"Transfer-Encoding chunked then gzip",
         "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip"
         "\r\n\r\n0\r\n\r\n" NEXT_REQ,
         400},
        {"Transfer-Encoding gzip, chunked",
         "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
         NEXT_REQ,
         501},
        {"obs-fold in a trailer", TE_POST "0\r\nT: 1\r\n 2\r\n\r\n" NEXT_REQ, 400},
        {"asterisk-form for GET", "GET * HTTP/1.1\r\nHost: t\r\n\r\n" NEXT_REQ, 400},
        /* http-parser (non-strict) would go on parsing after a message that closes. */
        {"a request behind Connection: close",
         "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" NEXT_REQ, 200},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct client c;
        struct response r;

        if (client_connect(&c, port) < 0) {
            ok(0, what(cases[i].name, "connect"));
            continue;
        }
        client_sends(&c, cases[i].req);
        read_response(&c, &r, 0);
        if (expect_status(&r, cases[i].status, cases[i].name) && cases[i].status >= 400)
            check_common(&r, 0, -1, cases[i].name);
        response_free(&r);
        ok(client_wait_closed(&c, io_timeout_ms) == 1,
           what(cases[i].name, "no second response, then the close"));
        client_close(&c);
    }
    /* The same bodies, well framed, are served, and so is the request behind them. */
    {
        struct client c;
        struct response r;
        if (client_connect(&c, port) == 0) {
            client_sends(&c, TE_POST "5;a=\"b c\"\r\nhello\r\n0\r\nT: 1\r\n\r\n" NEXT_REQ);
            read_response(&c, &r, 0);
            if (expect_status(&r, 200, "well-framed chunked body"))
                expect_body(&r, "hello", "well-framed chunked body");
            response_free(&r);
            read_response(&c, &r, 0);
            if (expect_status(&r, 200, "the request behind it"))
                expect_body(&r, "Hello, World!", "the request behind it");
            response_free(&r);
            client_close(&c);
        }
    }
#undef TE_POST
#undef NEXT_REQ
}

static void test_malformed(int port)
{
    static const struct {
        const char *name;
        const char *req;
        size_t len;     /* 0: strlen(req) */
    } cases[] = {
        {"garbage request line", "GARBAGE\r\n\r\n", 0},
        {"garbage request line 2", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 0},
        {"header without colon", "GET /hello HTTP/1.1\r\nHost: t\r\nThis is not a header\r\n\r\n",
         0},
        {"control byte in URL", "GET /he\x01llo HTTP/1.1\r\nHost: t\r\n\r\n", 0},
        {"NUL in header value", "GET /hello HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n", 42},
        {"bad chunk size",
         "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
         0},
        {"overflowing chunk size",
         "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
         "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
         0},
        {"bad Content-Length", "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n", 0},
        {"two different Content-Lengths",
         "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
         0},
        {"Content-Length with chunked",
         "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
         "5\r\nhello\r\n0\r\n\r\n",
         0},
        {"Transfer-Encoding not ending in chunked",
         "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\nhello", 0},
    };
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct client c;
        struct response r;
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].req);

        if (cases[i].len)
            ok(cases[i].req[len - 1] == '\n' && cases[i].req[len - 2] == '\r',
               what(cases[i].name, "test data length"));
        if (client_connect(&c, port) < 0) {
            ok(0, what(cases[i].name, "connect"));
            continue;
        }
        client_send(&c, cases[i].req, len);
        read_response(&c, &r, 0);
        if (expect_status(&r, 400, cases[i].name))
            check_common(&r, 0, -1, cases[i].name);
        response_free(&r);
        ok(client_wait_closed(&c, io_timeout_ms) == 1, what(cases[i].name, "connection closed"));
        client_close(&c);
    }
    /* A well-formed request line with an unknown method: 501 is also right
     * (RFC 9110 15.6.2), but the connection must still close. */
    {
        struct client c;
        struct response r;
        if (client_connect(&c, port) == 0) {
            exchange(&c, "BREW /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
            ok(r.status == 400 || r.status == 501,
               what("unknown method BREW", "status 400 or 501 (got %d)", r.status));
            check_common(&r, 0, -1, "unknown method BREW");
            response_free(&r);
            ok(client_wait_closed(&c, io_timeout_ms) == 1, "unknown method: connection closed");
            client_close(&c);
        }
    }
    /* An HTTP/0.9-style request line (no version): 505 is also defensible. */
    {
        struct client c;
        struct response r;
        if (client_connect(&c, port) == 0) {
            exchange(&c, "GET /hello\r\nHost: t\r\n\r\n", &r);
            ok(r.status == 400 || r.status == 505,
               what("request line without version", "status 400 or 505 (got %d)", r.status));
            check_common(&r, 0, -1, "request line without version");
            response_free(&r);
            ok(client_wait_closed(&c, io_timeout_ms) == 1,
               "request line without version: connection closed");
            client_close(&c);
        }
    }
    /* the server keeps serving */
    check_get(port, "/hello", 200, "Hello, World!");

    /* a bad request after a good one on the same connection */
    {
        struct client c;
        struct response r;
        if (client_connect(&c, port) == 0) {
            client_sends(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGARBAGE\r\n\r\n");
            read_response(&c, &r, 0);
            if (expect_status(&r, 200, "good then bad"))
                expect_body(&r, "Hello, World!", "good then bad");
            response_free(&r);
            read_response(&c, &r, 0);
            expect_status(&r, 400, "good then bad: second");
            response_free(&r);
            ok(client_wait_closed(&c, io_timeout_ms) == 1, "good then bad: closed");
            client_close(&c);
        }
    }
}

static void test_lua_errors(const struct server *s)
{
    static const char *const paths[] = {"/error",       "/error-nested", "/send-twice",
                                        "/error-table", "/error-nil",    "/status-1xx",
                                        "/header-split", "/return-function", "/use-stashed",
                                        "/use-stashed-res"};
    static const char *const secrets[] = {"boom", "30_errors", "traceback", "attempt to",
                                          "missing", "second"};
    struct client c;
    struct response r;
    size_t i, j;
    char req[256], ctx[128];

    if (client_connect(&c, s->port) < 0) {
        ok(0, "lua errors: connect");
        return;
    }
    /* /use-stashed reads a req kept from /stash; the same connection reaches the same worker. */
    exchange(&c, "GET /stash HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    expect_status(&r, 200, "/stash");
    response_free(&r);
    exchange(&c, "GET /stashed-names HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, "/stashed-names"))
        expect_body(&r, "tycho.req (finished)|tycho.res (finished)", "/stashed-names");
    response_free(&r);
    for (i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", paths[i]);
        exchange(&c, req, &r);
        if (expect_status(&r, 500, paths[i])) {
            check_common(&r, 0, -1, paths[i]);
            for (j = 0; j < sizeof secrets / sizeof secrets[0]; j++)
                ok(!strstr(r.body, secrets[j]),
                   what(paths[i], "500 body does not contain \"%s\"", secrets[j]));
        }
        response_free(&r);
        /* the same keep-alive connection then serves the next request */
        exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        snprintf(ctx, sizeof ctx, "%s: next request on the same connection", paths[i]);
        if (expect_status(&r, 200, ctx))
            expect_body(&r, "Hello, World!", ctx);
        response_free(&r);
    }
    client_close(&c);

    ok(wait_for_log(s, "30_errors.lua:7: boom from the error fixture", io_timeout_ms),
       "log: \"30_errors.lua:7: boom from the error fixture\"");
    ok(wait_for_log(s, "traceback", io_timeout_ms), "log: has a traceback");
    ok(wait_for_log(s, "30_errors.lua:11:", io_timeout_ms),
       "log: nested error names 30_errors.lua:11");
    ok(wait_for_log(s, "30_errors.lua:15", io_timeout_ms),
       "log: traceback names the caller, 30_errors.lua:15");
    ok(wait_for_log(s, "30_errors.lua:21", io_timeout_ms),
       "log: res:send twice names 30_errors.lua:21");
    ok(wait_for_log(s, "expected an HTTP status from 200 to 599", io_timeout_ms),
       "log: res:status(101) is refused");
    ok(wait_for_log(s, "contains CR, LF, NUL", io_timeout_ms),
       "log: a header value with CR LF is refused (no response splitting)");
    ok(wait_for_log(s, "handler returned a function value", io_timeout_ms),
       "log: returning a function is an error");
    ok(wait_for_log(s, "request finished", io_timeout_ms),
       "log: a stashed req raises \"request finished\"");
    ok(wait_for_log(s, "this res belongs to a request that has ended", io_timeout_ms),
       "log: a stashed res raises \"request finished\"");
    if (!wait_for_log(s, "30_errors.lua:15", 0))
        note_server_stderr(s, 3000);

    /* both workers keep serving */
    for (i = 0; i < 8; i++)
        check_get(s->port, "/hello", 200, "Hello, World!");
}

/*
 * Sends head (with a Content-Length above the limit) and, if no answer comes
 * within a short wait, the body; then expects status and a close.
 */
static void expect_rejected_body(int port, const char *head, size_t body_len, int want,
                                 const char *ctx)
{
    struct client c;
    struct response r;

    if (client_connect(&c, port) < 0) {
        ok(0, what(ctx, "connect"));
        return;
    }
    client_sends(&c, head);
    if (client_fill(&c, now_ms() + (n_wrap ? 4000 : 1000)) < 0) {
        /* not rejected from the headers alone: send the body */
        char *body = malloc(body_len);
        if (body) {
            memset(body, 'b', body_len);
            client_send(&c, body, body_len);
            free(body);
        }
    }
    read_response(&c, &r, 0);
    if (expect_status(&r, want, ctx))
        check_common(&r, 0, -1, ctx);
    response_free(&r);
    ok(client_wait_closed(&c, io_timeout_ms) == 1, what(ctx, "connection closed"));
    client_close(&c);
}

/* A request with one X-Big header of pad bytes. */
static char *big_header_request(size_t pad)
{
    static const char pre[] = "GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: ";
    char *req = malloc(sizeof pre + pad + 8);

    if (!req)
        return NULL;
    memcpy(req, pre, sizeof pre - 1);
    memset(req + sizeof pre - 1, 'h', pad);
    memcpy(req + sizeof pre - 1 + pad, "\r\n\r\n", 5);
    return req;
}

static void expect_header_limit(int port, size_t pad, int want, const char *ctx)
{
    struct client c;
    struct response r;
    char *req = big_header_request(pad);

    if (!req || client_connect(&c, port) < 0) {
        ok(0, what(ctx, "setup"));
        free(req);
        return;
    }
    exchange(&c, req, &r);
    if (expect_status(&r, want, ctx))
        check_common(&r, 0, -1, ctx);
    response_free(&r);
    if (want != 200)
        ok(client_wait_closed(&c, io_timeout_ms) == 1, what(ctx, "connection closed"));
    client_close(&c);
    free(req);
}

static void test_default_limits(int port)
{
    expect_header_limit(port, 15000, 200, "15 KB of headers (default limit 16384)");
    expect_header_limit(port, 17000, 431, "17 KB of headers (default limit 16384)");
    expect_rejected_body(port,
                         "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1048577\r\n\r\n",
                         1048577, 413, "body of 1048577 bytes (default limit 1048576)");
    check_get(port, "/hello", 200, "Hello, World!");
}

static void test_burst(int port)
{
    struct client c;
    struct response r;
    int i, good = 0;

    if (client_connect(&c, port) < 0) {
        ok(0, "burst: connect");
        return;
    }
    for (i = 0; i < 2000; i++) {
        if (exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0 && r.status == 200 &&
            strcmp(r.body, "Hello, World!") == 0)
            good++;
        else if (i - good < 5)
            note("burst: request %d failed (status %d)", i + 1, r.status);
        response_free(&r);
        if (c.closed)
            break;
    }
    is_int(good, 2000, "2000 keep-alive requests on one connection");
    client_close(&c);
}

static void test_concurrent(int port)
{
    struct rlimit rl;
    struct client *cs;
    int n = 300, i, connected = 0, good = 0;
    char req[128], body[32];
    long long deadline;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 512) {
        rl.rlim_cur = rl.rlim_max < 1024 ? rl.rlim_max : 1024;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        if ((long long)rl.rlim_cur - 64 < n)
            n = (int)rl.rlim_cur - 64;
    }
    cs = calloc((size_t)n, sizeof *cs);
    if (!cs)
        return;
    for (i = 0; i < n; i++)
        if (client_connect(&cs[i], port) == 0)
            connected++;
    is_int(connected, n, "concurrent: all connections open");
    for (i = 0; i < n; i++) {
        snprintf(req, sizeof req, "GET /query?n=%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
        if (cs[i].fd >= 0)
            client_sends(&cs[i], req);
    }
    /* bounded overall: 30 s (60 s wrapped) for all of them */
    deadline = now_ms() + 3LL * io_timeout_ms;
    for (i = 0; i < n; i++) {
        struct response r;
        if (cs[i].fd < 0)
            continue;
        if (now_ms() > deadline) {
            note("concurrent: overall deadline passed at connection %d", i);
            break;
        }
        read_response(&cs[i], &r, 0);
        snprintf(body, sizeof body, "n=%d", i);
        if (r.status == 200 && strcmp(r.body, body) == 0)
            good++;
        else if (i - good < 5)
            note("concurrent: connection %d got status %d", i, r.status);
        response_free(&r);
    }
    is_int(good, n, "concurrent: every connection got its own response");
    for (i = 0; i < n; i++)
        client_close(&cs[i]);
    free(cs);
    check_get(port, "/hello", 200, "Hello, World!");
}

/* Clients that go away mid-request or before reading: the server carries on. */

/* ---- lifecycle: GC and request objects, load-time registration, back-pressure ---- */

static void test_lifecycle(const struct server *s)
{
    struct response r;
    struct client c;
    int good = 0;

    /* req/res unreachable from Lua while the GC runs: must not crash the worker. */
    for (int i = 0; i < 6; i++) {
        if (fetch(s->port, "GET /gc-churn HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 200 &&
            strcmp(r.body, "churned") == 0)
            good++;
        response_free(&r);
    }
    is_int(good, 6, "GC during a handler that keeps no req/res: every request 200");

    expect_status_of(s->port, "GET /late-route HTTP/1.1\r\nHost: t\r\n\r\n", 500,
                     "app.get in a handler is a 500");
    expect_status_of(s->port, "GET /added-late HTTP/1.1\r\nHost: t\r\n\r\n", 404,
                     "a route registered in a handler does not exist");
    expect_status_of(s->port, "GET /late-use HTTP/1.1\r\nHost: t\r\n\r\n", 500,
                     "app.use in a handler is a 500");
    ok(wait_for_log(s, "routes can only be registered while the scripts load", io_timeout_ms),
       "log: late route explained");
    ok(wait_for_log(s, "middleware can only be added while the scripts load", io_timeout_ms),
       "log: late middleware explained");

    if (fetch(s->port, "GET /json-then-header HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 200) {
        expect_header(&r, "X-After-Next", "yes", "middleware adds a header after res:json");
        expect_body(&r, "{\"ok\":true}", "json body kept");
    } else {
        ok(0, "GET /json-then-header: 200");
    }
    response_free(&r);

    expect_status_of(s->port, "GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400,
                     "two Host headers: 400");

    /*
     * 64 pipelined requests for 1 MiB each from a client that reads nothing
     * for a while: the server keeps at most a bounded amount of output, so
     * its RSS must not grow by anything like 64 MiB; then every response
     * arrives, in order.
     */
    if (client_connect(&c, s->port) == 0) {
        static const char req[] = "GET /mib HTTP/1.1\r\nHost: t\r\n\r\n";
        char batch[64 * (sizeof(req) - 1)];
        long before = rss_kib(s->pid), during;

        for (int i = 0; i < 64; i++)
            memcpy(batch + (size_t)i * (sizeof(req) - 1), req, sizeof(req) - 1);
        client_send(&c, batch, sizeof(batch));
        sleep_ms(1000);
        during = rss_kib(s->pid);
        printf("# 64 x 1 MiB pipelined, client not reading: server RSS %ld -> %ld KiB\n", before,
               during);
        ok(before > 0 && during > 0 && during - before < 24 * 1024,
           "pipelined large responses to a client that does not read: RSS grows < 24 MiB");
        good = 0;
        for (int i = 0; i < 64; i++) {
            if (read_response(&c, &r, 0) == 0 && r.status == 200 && r.body_len == 1048576)
                good++;
            response_free(&r);
        }
        is_int(good, 64, "all 64 large pipelined responses arrive once the client reads");
        client_close(&c);
    } else {
        ok(0, "back-pressure: connect");
    }
}

/*
 * A bad request makes the server close lingering; a client that keeps
 * dripping bytes must not hold the connection past the linger deadline
 * (2 s; this allows 8).
 */
static void test_linger_deadline(int port)
{
    struct client c;
    long long until = now_ms() + 8000;
    int closed = 0;

    if (client_connect(&c, port) < 0) {
        ok(0, "linger: connect");
        return;
    }
    {
        struct response r;
        client_sends(&c, "GARBAGE\r\n\r\n");
        read_response(&c, &r, 0);
        expect_status(&r, 400, "linger: garbage gets 400");
        response_free(&r);
    }
    while (now_ms() < until && !closed) {
        if (client_send(&c, "x", 1) < 0)
            closed = 1;
        else
            closed = client_wait_closed(&c, 250) == 1;
    }
    ok(closed, "a client dripping bytes after a 400 is closed by the linger deadline");
    client_close(&c);
}

static void test_vanishing_clients(int port)
{
    struct client c;
    struct response r;
    int i, good;

    for (i = 0; i < 20; i++) {
        if (client_connect(&c, port) < 0)
            continue;
        switch (i % 4) {
        case 0: /* partial request line */
            client_sends(&c, "GET /hel");
            break;
        case 1: /* headers, then gone before the body */
            client_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc");
            break;
        case 2: /* a full request for a big response, then gone unread */
            client_sends(&c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\nGET /big HTTP/1.1\r\nHost: t\r\n\r\n");
            break;
        default: { /* the same, then a reset (SO_LINGER 0) */
            struct linger lg = {1, 0};
            client_sends(&c, "GET /big HTTP/1.1\r\nHost: t\r\n\r\nGET /big HTTP/1.1\r\nHost: t\r\n\r\n");
            sleep_ms(5);
            setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            break;
        }
        }
        client_close(&c);
    }
    check_get(port, "/hello", 200, "Hello, World!");

    /* 20 pipelined 100 KB responses, read only after a pause */
    if (client_connect(&c, port) == 0) {
        char all[40 * 20];
        size_t len = 0;
        for (i = 0; i < 20; i++)
            len += (size_t)snprintf(all + len, sizeof all - len,
                                    "GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
        client_send(&c, all, len);
        sleep_ms(300);
        for (i = 0, good = 0; i < 20; i++) {
            read_response(&c, &r, 0);
            good += r.status == 200 && r.body_len == 100000;
            response_free(&r);
        }
        is_int(good, 20, "20 pipelined 100 KB responses read late");
        client_close(&c);
    }
    check_get(port, "/hello", 200, "Hello, World!");
}

/* ======================================================================
 * Tests: server B (--max-conns 4) and server C (small body/header limits)
 * ====================================================================== */

/*
 * Opens a connection and tries to get a 200 for /hello, retrying (bounded)
 * while the server still answers 503. Returns 1 once served.
 */
static int served_after_retries(int port, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    int attempts = 0;

    while (now_ms() < deadline) {
        struct client c;
        struct response r;
        int status = 0;

        attempts++;
        if (client_connect(&c, port) == 0) {
            /* a rejected connection gets its 503 unasked; wait for it a little */
            if (client_fill(&c, now_ms() + 200) > 0 || c.closed) {
                read_response(&c, &r, 0);
            } else {
                exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
            }
            status = r.status;
            response_free(&r);
            client_close(&c);
        }
        if (status == 200)
            return 1;
        sleep_ms(100);
    }
    note("still not served after %d attempts", attempts);
    return 0;
}

static void test_max_conns(const struct server *s)
{
    struct client held[4], extra;
    struct response r;
    int i;

    for (i = 0; i < 4; i++) {
        if (client_connect(&held[i], s->port) < 0)
            continue;
        exchange(&held[i], "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        expect_status(&r, 200, what("max-conns", "held connection %d", i + 1));
        response_free(&r);
    }
    if (client_connect(&extra, s->port) == 0) {
        /* the 5th connection: 503 without sending anything */
        read_response(&extra, &r, 0);
        if (expect_status(&r, 503, "5th connection with --max-conns 4")) {
            ok(strncmp(r.head, "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0,
               "max-conns: status line \"HTTP/1.1 503 Service Unavailable\"");
            expect_header(&r, "Retry-After", "1", "max-conns");
            check_common(&r, 0, -1, "max-conns 503");
        }
        response_free(&r);
        ok(client_wait_closed(&extra, io_timeout_ms) == 1, "max-conns: 503 connection closed");
        client_close(&extra);
    }
    {
        long long deadline = now_ms() + io_timeout_ms;
        int logged = 0;
        while (!logged && now_ms() < deadline) {
            logged = log_has_line(s, "max-conns", NULL) || log_has_line(s, "limit", NULL) ||
                     log_has_line(s, "max conn", NULL);
            if (!logged)
                sleep_ms(50);
        }
        ok(logged, "max-conns: stderr has a line mentioning the limit");
        if (!logged)
            note_server_stderr(s, 2000);
    }

    /* the held ones still work */
    exchange(&held[1], "GET /query?n=2 HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, "max-conns: held connection still served"))
        expect_body(&r, "n=2", "max-conns: held connection");
    response_free(&r);

    /* after one closes, new connections are served again */
    client_close(&held[0]);
    ok(served_after_retries(s->port, io_timeout_ms),
       "max-conns: served again after one connection closed");
    for (i = 1; i < 4; i++)
        client_close(&held[i]);
    ok(served_after_retries(s->port, io_timeout_ms), "max-conns: served after all closed");
}

static void test_small_limits(int port)
{
    struct response r;
    struct client c;
    char req[2200];
    size_t n;

    /* --max-body 1000: exactly 1000 is fine */
    n = (size_t)snprintf(req, sizeof req,
                         "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n");
    memset(req + n, 'x', 1000);
    req[n + 1000] = '\0';
    fetch(port, req, &r);
    if (expect_status(&r, 200, "body of 1000 bytes (limit 1000)"))
        expect_header(&r, "X-Body-Length", "1000", "body of 1000 bytes (limit 1000)");
    response_free(&r);

    expect_rejected_body(port, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n",
                         1001, 413, "body of 1001 bytes (limit 1000)");
    expect_rejected_body(port, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n",
                         2000, 413, "body of 2000 bytes (limit 1000)");

    /* chunked: the limit applies to the de-chunked total */
    if (client_connect(&c, port) == 0) {
        n = (size_t)snprintf(req, sizeof req,
                             "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "258\r\n");
        memset(req + n, 'y', 600);
        n += 600;
        n += (size_t)snprintf(req + n, sizeof req - n, "\r\n258\r\n");
        memset(req + n, 'z', 600);
        n += 600;
        n += (size_t)snprintf(req + n, sizeof req - n, "\r\n0\r\n\r\n");
        client_send(&c, req, n);
        read_response(&c, &r, 0);
        if (expect_status(&r, 413, "chunked body of 1200 bytes (limit 1000)"))
            check_common(&r, 0, -1, "chunked 413");
        response_free(&r);
        ok(client_wait_closed(&c, io_timeout_ms) == 1, "chunked 413: connection closed");
        client_close(&c);
    }

    /* --max-header-bytes 1024 */
    expect_header_limit(port, 800, 200, "~850 bytes of headers (limit 1024)");
    expect_header_limit(port, 1100, 431, "~1150 bytes of headers (limit 1024)");
    expect_header_limit(port, 5000, 431, "~5 KB of headers (limit 1024)");

    /* blank lines before a request count too, however many reads bring them */
    if (client_connect(&c, port) == 0) {
        char blank[200];
        for (size_t i = 0; i < sizeof blank; i += 2)
            memcpy(blank + i, "\r\n", 2);
        for (int i = 0; i < 6; i++) {
            client_send(&c, blank, sizeof blank);
            usleep(20 * 1000);        /* each its own read */
        }
        exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        ok(r.status == 431 || r.status == 414,
           what("1200 bytes of blank lines in 6 sends (limit 1024)", "status 431 or 414 (got %d)",
                r.status));
        response_free(&r);
        client_close(&c);
    }

    /* the request line counts too */
    n = (size_t)snprintf(req, sizeof req, "GET /query?pad=");
    memset(req + n, 'u', 1200);
    n += 1200;
    snprintf(req + n, sizeof req - n, " HTTP/1.1\r\nHost: t\r\n\r\n");
    if (client_connect(&c, port) == 0) {
        exchange(&c, req, &r);
        /* the contract says 431; 414 URI Too Long is the more precise answer */
        ok(r.status == 431 || r.status == 414,
           what("1.2 KB request line (limit 1024)", "status 431 or 414 (got %d)", r.status));
        check_common(&r, 0, -1, "1.2 KB request line");
        response_free(&r);
        ok(client_wait_closed(&c, io_timeout_ms) == 1, "1.2 KB request line: connection closed");
        client_close(&c);
    }

    /* many small headers (~1400 raw bytes: the limit is on the raw request
     * line + headers, separators included), trickled in 16-byte sends */
    n = (size_t)snprintf(req, sizeof req, "GET /hello HTTP/1.1\r\nHost: t\r\n");
    while (n < 1400)
        n += (size_t)snprintf(req + n, sizeof req - n, "X-H%zu: v\r\n", n);
    n += (size_t)snprintf(req + n, sizeof req - n, "\r\n");
    if (client_connect(&c, port) == 0) {
        size_t off;
        for (off = 0; off < n && !c.closed; off += 16) {
            if (client_send(&c, req + off, n - off < 16 ? n - off : 16) < 0)
                break;
            if (off % 256 == 0)
                sleep_ms(2);
        }
        read_response(&c, &r, 0);
        if (expect_status(&r, 431, "1400-byte head of many small headers, trickled (limit 1024)"))
            ok(client_wait_closed(&c, io_timeout_ms) == 1,
               "many headers trickled: connection closed");
        response_free(&r);
        client_close(&c);
    }

    /* Expect: 100-continue with a body over the limit: 413, no 100 */
    if (client_connect(&c, port) == 0) {
        client_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n"
                         "Expect: 100-continue\r\n\r\n");
        read_response(&c, &r, 0);
        if (expect_status(&r, 413, "Expect: 100-continue with 5000 bytes (limit 1000)"))
            check_common(&r, 0, -1, "Expect + 413");
        response_free(&r);
        ok(client_wait_closed(&c, io_timeout_ms) == 1, "Expect + 413: connection closed");
        client_close(&c);
    }
    check_get(port, "/hello", 200, "Hello, World!");
}

/* ======================================================================
 * main
 * ====================================================================== */

/* ---- memory: pools and RSS under steady load, idle keep-alive connections ---- */

/* Sends `batch` pipelined requests and reads their responses; returns how many were 200. */
static int pipelined_batch(struct client *c, int batch)
{
    static const char req[] = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";
    char buf[64 * sizeof(req)];
    struct response r;
    int good = 0;

    for (int i = 0; i < batch; i++)
        memcpy(buf + (size_t)i * (sizeof(req) - 1), req, sizeof(req) - 1);
    if (client_send(c, buf, (size_t)batch * (sizeof(req) - 1)) < 0)
        return 0;
    for (int i = 0; i < batch; i++) {
        if (read_response(c, &r, 0) == 0 && r.status == 200)
            good++;
        response_free(&r);
    }
    return good;
}

/*
 * 100,000 requests over one keep-alive connection (fewer under a wrapper such
 * as valgrind): the process RSS after the last must be within 2 MiB of what it
 * was after the first tenth (a leak of 24 bytes a request would show), and the
 * worker's stop line must say one connection object and one request context
 * were ever made (the pools reuse them).
 */
static void test_steady_memory(struct server *s)
{
    int total = n_wrap ? 20000 : 100000, batch = 50, good = 0;
    long warm = -1, end;
    struct client c;
    char want[128];

    if (client_connect(&c, s->port) < 0) {
        ok(0, "steady memory: connect");
        return;
    }
    for (int done = 0; done < total && !c.closed; done += batch) {
        good += pipelined_batch(&c, batch);
        if (done + batch == total / 10)
            warm = rss_kib(s->pid);
    }
    end = rss_kib(s->pid);
    client_close(&c);
    is_int(good, total, "steady memory: every keep-alive request answered 200");
    printf("# RSS after %d requests: %ld KiB; after %d: %ld KiB\n", total / 10, warm, total, end);
    ok(warm > 0 && end > 0 && end - warm <= 2048,
       "steady memory: RSS does not grow over the run (within 2 MiB)");
    is_int(server_stop(s), 0, "steady memory: exit status 0 after SIGTERM");
    snprintf(want, sizeof(want), "worker 1: %d requests; made 1 connection objects and 1 request",
             total);
    ok(log_has_line(s, want, "contexts"),
       "steady memory: the pools made one connection and one request context in all");
}

/*
 * Opens many keep-alive connections, one request each, and leaves them idle;
 * reports the server's RSS per idle connection (no assertion on the figure),
 * and checks that a new connection is still served and that all get answers.
 */
static void test_idle_connections(struct server *s, int want_conns)
{
    struct client *cs = calloc((size_t)want_conns, sizeof(*cs));
    int opened = 0, good = 0;
    long before, after;
    struct response r;

    if (!cs) {
        ok(0, "idle connections: memory");
        return;
    }
    /* One request first so that the worker's buffers and Lua state are warm. */
    if (fetch(s->port, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r) == 200)
        good++;
    response_free(&r);
    before = rss_kib(s->pid);
    for (; opened < want_conns; opened++) {
        if (client_connect(&cs[opened], s->port) < 0)
            break;
        if (exchange(&cs[opened], "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0 &&
            r.status == 200)
            good++;
        response_free(&r);
    }
    after = rss_kib(s->pid);
    is_int(opened, want_conns, "idle connections: all opened");
    is_int(good, opened + 1, "idle connections: each answered 200");
    if (opened > 0 && before > 0 && after > 0)
        printf("# %d idle keep-alive connections: server RSS %ld -> %ld KiB, %ld bytes each\n",
               opened, before, after, (after - before) * 1024 / opened);
    ok(fetch(s->port, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r) == 200,
       "idle connections: a new connection is served while they are open");
    response_free(&r);
    for (int i = 0; i < opened; i++)
        client_close(&cs[i]);
    free(cs);
}


int main(int argc, char **argv)
{
    struct server s;
    struct client idle;
    struct response r;
    int rc;

    if (suite_setup(argc, argv))
        return 2;

    /* ---- server A: defaults, two workers ---- */
    {
        const char *args[] = {"--host", "127.0.0.1", "--port", "0", "--workers", "2",
                              fixture_dir, NULL};
        rc = server_start(&s, args);
        ok(rc == 0, "server A starts and prints its address");
    }
    if (rc == 0) {
        test_startup_output(&s, 2);
        test_basic(s.port);
        test_routing(s.port);
        test_query(s.port);
        test_headers(s.port);
        test_bodies(s.port);
        test_middleware(s.port);
        test_responses(s.port);
        test_methods(s.port);
        test_pipelining(s.port);
        test_split_blank_lines(s.port);
        test_connection_handling(s.port);
        test_malformed(s.port);
        test_smuggling(s.port);
        test_lua_errors(&s);
        test_default_limits(s.port);
        test_burst(s.port);
        test_concurrent(s.port);
        test_vanishing_clients(s.port);
        test_lifecycle(&s);
        test_linger_deadline(s.port);

        /* SIGTERM with an idle keep-alive connection open */
        idle.fd = -1;
        if (client_connect(&idle, s.port) == 0) {
            exchange(&idle, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
            expect_status(&r, 200, "idle connection before SIGTERM");
            response_free(&r);
        }
        is_int(server_stop(&s), 0, "server A: exit status 0 after SIGTERM (idle connection open)");
        if (idle.fd >= 0)
            ok(client_wait_closed(&idle, 2000) == 1, "SIGTERM: idle connection was closed");
        client_close(&idle);
    }
    server_cleanup(&s);

    /* ---- server B: --max-conns 4 ---- */
    {
        const char *args[] = {"--port=0", "--workers", "1", "--max-conns", "4", fixture_dir, NULL};
        rc = server_start(&s, args);
        ok(rc == 0, "server B (--max-conns 4) starts");
    }
    if (rc == 0) {
        test_startup_output(&s, 1);
        test_max_conns(&s);
        is_int(server_stop(&s), 0, "server B: exit status 0 after SIGTERM");
    }
    server_cleanup(&s);

    /* ---- server C: --max-body 1000 --max-header-bytes 1024 ---- */
    {
        const char *args[] = {"--port", "0", "--workers", "1", "--max-body=1000",
                              "--max-header-bytes", "1024", fixture_dir, NULL};
        rc = server_start(&s, args);
        ok(rc == 0, "server C (--max-body 1000 --max-header-bytes 1024) starts");
    }
    if (rc == 0) {
        test_small_limits(s.port);
        is_int(server_stop(&s), 0, "server C: exit status 0 after SIGTERM");
    }
    server_cleanup(&s);

    /* ---- server D: one worker, steady keep-alive load ---- */
    {
        const char *args[] = {"--port", "0", "--workers", "1", "--max-requests-per-conn", "0",
                              fixture_dir, NULL};
        rc = server_start(&s, args);
        ok(rc == 0, "server D (steady memory) starts");
    }
    if (rc == 0)
        test_steady_memory(&s);
    server_cleanup(&s);

    /* ---- server E: many idle keep-alive connections ---- */
    {
        int conns = n_wrap ? 1000 : 10000;
        const char *args[] = {"--port", "0", "--workers", "1", "--max-conns", "20000",
                              fixture_dir, NULL};
        /* Each side (this process and the server) holds one fd per connection. */
        if (raise_fd_limit((rlim_t)conns + 512) < 0) {
            printf("# idle connections: open-file limit too low for %d connections; using 500\n",
                   conns);
            conns = 500;
        }
        rc = server_start(&s, args);
        ok(rc == 0, "server E (idle connections) starts");
        if (rc == 0) {
            test_idle_connections(&s, conns);
            is_int(server_stop(&s), 0, "server E: exit status 0 after SIGTERM");
        }
    }
    server_cleanup(&s);

    free(wrap_copy);
    return test_summary();
}
