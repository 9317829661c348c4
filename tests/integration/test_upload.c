/*
 * test_upload.c TYCHO_BINARY FIXTURE_DIR: streamed request bodies (routes
 * with stream_body = true, req:read) over real sockets against the real
 * binary: 50 MiB uploads with Content-Length and chunked, byte-exact (a
 * checksum both sides compute) while the server's memory stays bounded;
 * pieces read as they arrive; Expect: 100-continue answered at the first
 * read only; max_body; a handler that does not read its body (pipelining
 * goes on after a small one, a large one closes the connection); bad route
 * options; req.body and req:json on a streamed route. The app is written
 * into a temporary directory. Ends with `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"

#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/tycho-upload-XXXXXX";

static const char app_lua[] =
    "local app = require 'tycho'\n"
    "local function sum(a, b, d)\n"
    "  for i = 1, #d do\n"
    "    a = (a + d:byte(i)) % 65521; b = (b + a) % 65521\n"
    "  end\n"
    "  return a, b\n"
    "end\n"
    "app.post('/count', function(req)\n"
    "  local n, a, b, biggest = 0, 1, 0, 0\n"
    "  while true do\n"
    "    local d = req:read(65536)\n"
    "    if not d then break end\n"
    "    n = n + #d; a, b = sum(a, b, d)\n"
    "    if #d > biggest then biggest = #d end\n"
    "  end\n"
    "  return n .. ' ' .. (b * 65536 + a) .. ' ' .. biggest\n"
    "end, { stream_body = true, max_body = 100 * 1024 * 1024 })\n"
    "app.post('/pieces', function(req, res)\n"
    "  while true do\n"
    "    local d = req:read(100)\n"
    "    if not d then break end\n"
    "    res:write(d .. '|')\n"
    "  end\n"
    "  res:write('end ' .. tostring(req:read(1)) .. ' ' .. tostring(req.body))\n"
    "end, { stream_body = true })\n"
    "app.post('/later', function(req)\n"
    "  tycho.sleep(0.4)\n"
    "  local d, all = req:read(), ''\n"
    "  while d do all = all .. d; d = req:read() end\n"
    "  return 'read ' .. all\n"
    "end, { stream_body = true })\n"
    "app.post('/deny', function(req, res) res:status(401); return 'no' end,\n"
    "  { stream_body = true })\n"
    "app.route('PUT', '/small', function(req)\n"
    "  local all, d = '', req:read(4)\n"
    "  while d do all = all .. d; d = req:read(4) end\n"
    "  return 'ok ' .. all\n"
    "end, { stream_body = true, max_body = 1000 })\n"
    "app.post('/json', function(req) return req:json() end, { stream_body = true })\n"
    "app.post('/whole', function(req) return 'whole ' .. #req.body end)\n"
    "app.get('/plain', function() return 'plain' end)\n"
    "app.post('/from-timer', function(req)\n"
    "  tycho.timer.after(0, function()\n"
    "    local ok, err = pcall(req.read, req, 10)\n"
    "    tycho.log.info('timer read: ' .. tostring(err))\n"
    "  end)\n"
    "  tycho.sleep(0.2)\n"
    "  return 'handler ' .. tostring(req:read(10))\n"
    "end, { stream_body = true })\n"
    "local errors = {}\n"
    "local function try(...)\n"
    "  local ok, err = pcall(...)\n"
    "  errors[#errors + 1] = ok and 'no error' or err:gsub('^.-: ', '', 1)\n"
    "end\n"
    "local f = function() end\n"
    "try(app.post, '/b1', f, { bogus = true })\n"
    "try(app.post, '/b2', f, { stream_body = 'yes' })\n"
    "try(app.post, '/b3', f, { stream_body = true, max_body = 0 })\n"
    "try(app.post, '/b4', f, { stream_body = true, max_body = 1.5 })\n"
    "try(app.get, '/b5', f, { stream_body = true })\n"
    "try(app.post, '/b6', f, { max_body = 10 })\n"
    "try(app.route, 'HEAD', '/b7', f, { stream_body = true })\n"
    "try(app.post, '/b8', f, 'x')\n"
    "app.get('/errors', function() return table.concat(errors, '\\n') end)\n";

/* The checksum the app computes (Adler-32's two sums), over a body made piece by piece. */
struct sum {
    unsigned long a, b;
};

static void sum_add(struct sum *s, const unsigned char *d, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        s->a = (s->a + d[i]) % 65521;
        s->b = (s->b + s->a) % 65521;
    }
}

/* Piece i of a big body: 1 MiB of bytes that differ from piece to piece. */
static void fill_piece(unsigned char *p, size_t len, unsigned i)
{
    unsigned x = 2463534242u + i * 2654435761u;

    for (size_t k = 0; k < len; k++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        p[k] = (unsigned char)x;
    }
}

/*
 * Sends 50 MiB as fast as the socket takes it (chunked: in 1 MiB chunks),
 * sampling the server's memory as it goes; the handler reads 64 KiB at a
 * time and answers the length and checksum it saw.
 */
static void test_big(const struct server *s, bool chunked, unsigned PIECES)
{
    const char *what_ = PIECES < 50 ? (chunked ? "warm-up chunked" : "warm-up")
                                    : (chunked ? "big chunked" : "big");
    enum { PIECE = 1 << 20 };
    unsigned char *piece = malloc(PIECE);
    struct sum sum = {1, 0};
    struct client c;
    struct response r;
    long before = rss_kib(s->pid), peak = before;
    char head[256], want[96];

    if (!piece || client_connect(&c, s->port) < 0) {
        ok(0, what(what_, "connect"));
        free(piece);
        return;
    }
    if (chunked)
        snprintf(head, sizeof head, "POST /count HTTP/1.1\r\nHost: t\r\n"
                                    "Transfer-Encoding: chunked\r\n\r\n");
    else
        snprintf(head, sizeof head, "POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: %u\r\n\r\n",
                 PIECE * PIECES);
    client_sends(&c, head);
    for (unsigned i = 0; i < PIECES; i++) {
        char size[32];
        fill_piece(piece, PIECE, i);
        sum_add(&sum, piece, PIECE);
        if (chunked) {
            snprintf(size, sizeof size, "%x\r\n", PIECE);
            client_sends(&c, size);
        }
        if (client_send(&c, piece, PIECE) < 0 || (chunked && client_sends(&c, "\r\n") < 0)) {
            ok(0, what(what_, "sending piece %u", i));
            break;
        }
        long now = rss_kib(s->pid);
        if (now > peak)
            peak = now;
    }
    if (chunked)
        client_sends(&c, "0\r\n\r\n");
    read_response(&c, &r, 0);
    note("%s: server RSS %ld KiB before, at most %ld KiB while %u MiB came", what_, before, peak, PIECES);
    /* Under valgrind or ASan, RSS is theirs: freed blocks are held back on purpose. */
    ok(n_wrap || sanitized(s->pid) || (before > 0 && peak - before < 5 * 1024),
       what(what_, "the server's memory grows by less than 5 MiB"));
    snprintf(want, sizeof want, "%u %lu 65536", PIECE * PIECES, sum.b * 65536 + sum.a);
    if (expect_status(&r, 200, what_))
        expect_body(&r, want, what(what_, "every byte arrives, in order, in 64 KiB reads"));
    response_free(&r);
    exchange(&c, "GET /plain HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, what(what_, "the connection serves on")))
        expect_body(&r, "plain", what(what_, "the next response"));
    response_free(&r);
    client_close(&c);
    free(piece);
}

/* Reads until want is among the received bytes; 0, or -1 on timeout or close. */
static int read_until(struct client *c, const char *want, int timeout)
{
    long long deadline = now_ms() + timeout;

    while (!c->len || !memmem(c->buf, c->len, want, strlen(want)))
        if (client_fill(c, deadline) <= 0)
            return -1;
    return 0;
}

/* The body arrives in pieces with pauses: each read returns what came; nil at the end, twice. */
static void test_pieces(int port)
{
    struct client c;

    if (client_connect(&c, port) < 0) {
        ok(0, "pieces: connect");
        return;
    }
    client_sends(&c, "POST /pieces HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n\r\nabc");
    ok(read_until(&c, "abc|", io_timeout_ms) == 0, "pieces: the first piece is read at once");
    sleep_ms(200);
    ok(!memmem(c.buf, c.len, "end", 3), "pieces: the handler waits for more (no end yet)");
    client_sends(&c, "de");
    ok(read_until(&c, "de|", io_timeout_ms) == 0, "pieces: the second piece as it arrives");
    sleep_ms(100);
    client_sends(&c, "fg");
    /* The last chunk: CRLF before its 0, or a request id ending in 0 would match the head. */
    ok(read_until(&c, "\r\n0\r\n\r\n", io_timeout_ms) == 0, "pieces: the response ends");
    if (!ok(memmem(c.buf, c.len, "fg|", 3) != NULL, "pieces: the last piece"))
        note_bytes("received", c.buf, c.len, 400);
    ok(memmem(c.buf, c.len, "end nil nil", 11) != NULL,
       "pieces: req:read gives nil after the end, and again; req.body is nil");
    client_close(&c);
}

/* Expect: 100-continue is answered when the handler first reads, not before. */
static void test_continue(int port)
{
    struct client c;
    struct response r;

    if (client_connect(&c, port) < 0) {
        ok(0, "continue: connect");
        return;
    }
    client_sends(&c, "POST /later HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                     "Expect: 100-continue\r\n\r\n");
    ok(read_until(&c, "HTTP/1.1", 200) < 0 && c.len == 0,
       "continue: no 100 while the handler has not read");
    ok(read_until(&c, "HTTP/1.1 100 Continue\r\n\r\n", io_timeout_ms) == 0,
       "continue: the 100 comes at the first req:read");
    client_consume(&c, c.len);
    client_sends(&c, "hello");
    read_response(&c, &r, 0);
    if (expect_status(&r, 200, "continue"))
        expect_body(&r, "read hello", "continue: then the body is read");
    response_free(&r);
    client_close(&c);

    if (client_connect(&c, port) < 0)
        return;
    client_sends(&c, "POST /deny HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n"
                     "Expect: 100-continue\r\n\r\n");
    read_response(&c, &r, 0);
    if (expect_status(&r, 401, "continue: a handler that does not read"))
        ok(r.head && strstr(r.head, "100 Continue") == NULL, "continue: no 100 before the 401");
    expect_header(&r, "Connection", "close", "continue: the unread body closes the connection");
    response_free(&r);
    ok(client_wait_closed(&c, io_timeout_ms) == 1, "continue: the connection closes");
    client_close(&c);
}

/* Over max_body: 413 from the head (Content-Length) or from the read (chunked). */
static void test_too_large(int port)
{
    struct client c;
    struct response r;
    char body[2200];

    expect_status_of(port, "PUT /small HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n", 413,
                     "max_body: a Content-Length over it");
    if (client_connect(&c, port) < 0)
        return;
    memset(body, 'x', sizeof body);
    client_sends(&c, "PUT /small HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "3e8\r\n");
    client_send(&c, body, 1000);
    client_sends(&c, "\r\n1\r\nx\r\n0\r\n\r\n");
    read_response(&c, &r, 0);
    expect_status(&r, 413, "max_body: a chunked body over it");
    response_free(&r);
    client_close(&c);
    if (client_connect(&c, port) < 0)
        return;
    exchange(&c, "PUT /small HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", &r);
    if (expect_status(&r, 200, "max_body: a chunked body under it"))
        expect_body(&r, "ok abcde", "max_body: chunked, decoded");
    response_free(&r);
    client_close(&c);
}

/* A handler that answers without reading: a small body is skipped, a large one closes. */
static void test_unread(int port)
{
    struct client c;
    struct response r;
    char *big = malloc(300000);

    if (!big || client_connect(&c, port) < 0) {
        ok(0, "unread: connect");
        free(big);
        return;
    }
    client_sends(&c, "POST /deny HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nGET /"
                     "GET /plain HTTP/1.1\r\nHost: t\r\n\r\n");
    read_response(&c, &r, 0);
    expect_status(&r, 401, "unread: small");
    ok(header_get(&r, "Connection") == NULL, "unread: a small body read already: kept alive");
    response_free(&r);
    read_response(&c, &r, 0);
    if (expect_status(&r, 200, "unread: the pipelined request after it"))
        expect_body(&r, "plain", "unread: its bytes were not taken for a request");
    response_free(&r);
    client_close(&c);

    if (client_connect(&c, port) < 0) {
        free(big);
        return;
    }
    memset(big, 'G', 300000);
    client_sends(&c, "POST /deny HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\n");
    client_send(&c, big, 300000);
    client_sends(&c, "GET /plain HTTP/1.1\r\nHost: t\r\n\r\n");
    read_response(&c, &r, 0);
    expect_status(&r, 401, "unread: large");
    expect_header(&r, "Connection", "close", "unread: a large body unread closes the connection");
    response_free(&r);
    ok(client_wait_closed(&c, io_timeout_ms) == 1,
       "unread: nothing of the body is answered as a request");
    client_close(&c);
    free(big);
}

/* A stream_body route with no body, or an empty one: req:read says nil, req.body is nil. */
static void test_no_body(int port)
{
    struct response r;

    if (fetch(port, "POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r) == 200)
        expect_body(&r, "0 1 0", "no body: Content-Length 0 reads nothing");
    else
        ok(0, "no body: Content-Length 0 is 200");
    response_free(&r);
    if (fetch(port, "POST /count HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 200)
        expect_body(&r, "0 1 0", "no body: no length reads nothing");
    else
        ok(0, "no body: without a length is 200");
    response_free(&r);
    if (fetch(port, "POST /pieces HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r) == 200)
        expect_body(&r, "end nil nil", "no body: req:read and req.body are nil");
    else
        ok(0, "no body: /pieces is 200");
    response_free(&r);
}

/*
 * A reload between the head of an ordinary POST and the end of its body:
 * the request runs the route of its path in the new scripts, whose handler
 * ids are not the old ones (the last test: the app is replaced).
 */
static void test_reload_mid_body(const struct server *s)
{
    static const char v2[] =
        "local app = require 'tycho'\n"
        "for i = 1, 20 do app.post('/evil' .. i, function() return 'EVIL' end) end\n"
        "app.post('/whole', function(req) return 'v2 whole ' .. #req.body end)\n";
    char path[256];
    struct client c;
    struct response r;
    FILE *f;

    if (client_connect(&c, s->port) < 0) {
        ok(0, "reload mid-body: connect");
        return;
    }
    client_sends(&c, "POST /whole HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nab");
    snprintf(path, sizeof path, "%s/app.lua", dir);
    ok((f = fopen(path, "w")) && fputs(v2, f) >= 0 && fclose(f) == 0, "reload mid-body: v2");
    kill(s->pid, SIGHUP);
    ok(wait_for_log(s, "serving generation 2", io_timeout_ms), "reload mid-body: reloaded");
    client_sends(&c, "cde");
    read_response(&c, &r, 0);
    expect_body(&r, "v2 whole 5", "reload mid-body: the path's route of the new scripts runs");
    response_free(&r);
    client_close(&c);
}

/* Only the request's own handler reads its body: another task's req:read raises. */
static void test_read_elsewhere(const struct server *s)
{
    struct response r;

    if (fetch(s->port, "POST /from-timer HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
              &r) == 200)
        expect_body(&r, "handler abc", "elsewhere: the handler reads its body");
    else
        ok(0, "elsewhere: 200");
    response_free(&r);
    ok(wait_for_log(s, "req:read: only in the handler of the request itself (its body",
                    io_timeout_ms),
       "elsewhere: a timer's req:read raises");
}

static void test_misuse(const struct server *s)
{
    struct response r;
    char errors[2048] = "";

    body_of(s->port, "/errors", errors, sizeof errors);
    is_str(errors,
           "unknown option \"bogus\" (expected gzip, stream_body or max_body)\n"
           "stream_body must be true or false, got string\n"
           "max_body must be a whole number of bytes from 1 to 2^53\n"
           "max_body must be a whole number of bytes from 1 to 2^53\n"
           "stream_body is for methods that carry a body (POST, PUT, PATCH, ...), not GET\n"
           "max_body applies to a stream_body route (a body read whole is bounded by "
           "--max-body-bytes)\n"
           "stream_body is for methods that carry a body (POST, PUT, PATCH, ...), not HEAD\n"
           "opts must be a table, got string",
           "options: each bad one raises and says why");
    fetch(s->port, "POST /json HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}", &r);
    expect_status(&r, 500, "req:json on a streamed route");
    response_free(&r);
    ok(wait_for_log(s, "req:json: the body of this route is streamed (stream_body = true): read "
                       "it with req:read", io_timeout_ms),
       "req:json on a streamed route: the error says why");
    expect_status_of(s->port, "POST /whole HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
                     200, "a route without options reads its body whole");
}

int main(int argc, char **argv)
{
    struct server s;

    if (suite_setup(argc, argv))
        return 2;
    if (app_dir_make(dir, app_lua) < 0)
        return test_summary();
    {
        const char *args[] = {"--port", "0", "--workers", "1", dir, NULL};
        ok(server_start(&s, args) == 0, "server starts");
    }
    if (s.pid > 0) {
        /* The first uploads make the worker's buffers and Lua heap: not counted as growth. */
        test_big(&s, false, 4);
        test_big(&s, true, 4);
        test_big(&s, false, 50);
        test_big(&s, true, 50);
        test_pieces(s.port);
        test_continue(s.port);
        test_too_large(s.port);
        test_unread(s.port);
        test_misuse(&s);
        test_no_body(s.port);
        test_read_elsewhere(&s);
        test_reload_mid_body(&s);
        is_int(server_stop(&s), 0, "exit status 0");
    }
    server_cleanup(&s);
    app_dir_remove(dir);
    free(wrap_copy);
    return test_summary();
}
