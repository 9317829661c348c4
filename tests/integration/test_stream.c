/*
 * test_stream.c TYCHO_BINARY FIXTURE_DIR: streamed responses (res:write,
 * res:flush) and Server-Sent Events (res:sse) over real sockets against the
 * real binary: chunked framing byte for byte, HTTP/1.0 and HEAD,
 * middleware after next(), errors after the head, back-pressure on a client
 * that does not read (the server's memory stays bounded), a client that
 * leaves mid-stream. The app is written into a temporary directory (the
 * fixture directory is not used). Ends with `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"

#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char dir[] = "/tmp/tycho-stream-XXXXXX";

static const char app_lua[] =
    "local app = require 'tycho'\n"
    "local loops = 0\n"
    "app.use(function(req, res, next)\n"
    "  res:header('X-Before', 'yes')\n"
    "  next()\n"
    "  res:header('X-After', 'too late')\n"
    "end)\n"
    "app.get('/parts', function(req, res)\n"
    "  res:write('a'); res:write(''); res:write('bc')\n"
    "  return 'd'\n"
    "end)\n"
    "app.get('/empty', function(req, res) res:flush() end)\n"
    "app.get('/fail', function(req, res) res:write('a'); error('failed mid-stream') end)\n"
    "app.get('/send-after', function(req, res) res:write('a'); res:send('b') end)\n"
    "app.get('/big', function(req, res)\n"
    "  local chunk = string.rep('0123456789abcdef', 4096)\n"
    "  for i = 1, tonumber(req.query.n) do\n"
    "    assert(res:write(chunk))\n"
    "  end\n"
    "end)\n"
    "app.get('/forever', function(req, res)\n"
    "  while true do\n"
    "    loops = loops + 1\n"
    "    if not res:write('tick\\n') then return end\n"
    "    tycho.sleep(0.02)\n"
    "  end\n"
    "end)\n"
    "app.get('/loops', function() return tostring(loops) end)\n"
    "app.get('/sse', function(req, res)\n"
    "  local s = res:sse()\n"
    "  s:send{ event = 'e', id = 1, data = 'a\\r\\nb\\rc' }\n"
    "  s:comment('note')\n"
    "  s:send{ data = { n = 1 }, retry = 500 }\n"
    "  s:send{ id = req.headers['last-event-id'] or 'none' }\n"
    "end)\n"
    "app.get('/sse-quiet', function(req, res)\n"
    "  local s = res:sse({ heartbeat = 0.05 })\n"
    "  tycho.sleep(0.3)\n"
    "  s:close()\n"
    "end)\n"
    "app.get('/sse-bad', function(req, res)\n"
    "  local s = res:sse(); s:send{ event = 'a\\nb' }\n"
    "end)\n"
    "app.get('/plain', function() return 'plain' end)\n"
    "local shared = {}\n"
    "app.get('/held', function(req, res)\n"
    "  shared.res = res\n"
    "  for i = 1, 400 do res:write(string.rep('h', 65536)) end\n"
    "  shared.res = nil\n"
    "  return 'END'\n"
    "end)\n"
    "app.get('/poke', function()\n"
    "  local ok, err = shared.res:write('poke')\n"
    "  return tostring(ok) .. ' ' .. tostring(err)\n"
    "end)\n";

/* Reads until want is among the received bytes; returns where the head ends, or -1. */
static long read_until(struct client *c, const char *want)
{
    long long deadline = now_ms() + io_timeout_ms;
    char *end;

    while (!c->len || !memmem(c->buf, c->len, want, strlen(want)))
        if (client_fill(c, deadline) <= 0)
            return -1;
    end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    return end ? (long)(end - c->buf) + 4 : -1;
}

/* The raw body bytes after the head, as received so far, NUL-terminated (c->buf grows). */
static const char *raw_body(struct client *c, long head)
{
    if (head < 0)
        return "";
    c->buf[c->len < c->cap ? c->len : c->cap - 1] = '\0';
    return c->buf + head;
}

static void test_chunked_framing(int port)
{
    struct client c;
    struct response r;
    long head;

    if (client_connect(&c, port) < 0) {
        ok(0, "framing: connect");
        return;
    }
    client_sends(&c, "GET /parts HTTP/1.1\r\nHost: t\r\n\r\n");
    /* The last chunk: CRLF before its 0, or a request id ending in 0 would match the head. */
    head = read_until(&c, "\r\n0\r\n\r\n");
    ok(head > 0 && memmem(c.buf, (size_t)head, "Transfer-Encoding: chunked\r\n", 28) != NULL,
       "framing: an HTTP/1.1 stream is chunked");
    ok(head > 0 && memmem(c.buf, (size_t)head, "X-Before: yes\r\n", 15) != NULL,
       "framing: a header set before the first write is in the head");
    ok(head > 0 && !memmem(c.buf, (size_t)head, "Content-Length", 14),
       "framing: no Content-Length");
    is_str(raw_body(&c, head), "1\r\na\r\n2\r\nbc\r\n1\r\nd\r\n0\r\n\r\n",
           "framing: chunks byte for byte (the empty write sends nothing; the returned string "
           "is the last piece)");
    ok(head > 0 && !memmem(c.buf, (size_t)head, "X-After", 7),
       "framing: a header set after next() does not reach a streamed response");
    client_consume(&c, c.len);
    exchange(&c, "GET /plain HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, "framing: the connection serves on"))
        expect_body(&r, "plain", "framing: the next response is whole");
    response_free(&r);
    client_close(&c);
}

static void test_head_and_empty(int port)
{
    struct client c;
    struct response r;

    if (client_connect(&c, port) < 0) {
        ok(0, "HEAD: connect");
        return;
    }
    client_sends(&c, "HEAD /parts HTTP/1.1\r\nHost: t\r\n\r\nGET /empty HTTP/1.1\r\nHost: t\r\n\r\n"
                     "GET /plain HTTP/1.1\r\nHost: t\r\n\r\n");
    read_response(&c, &r, 1);
    expect_status(&r, 200, "HEAD of a streamed response");
    expect_header(&r, "Transfer-Encoding", "chunked", "HEAD: the head says what GET's says");
    response_free(&r);
    read_response(&c, &r, 0);
    if (expect_status(&r, 200, "res:flush alone: a streamed response with no body"))
        is_int((int)r.body_len, 0, "res:flush alone: empty body (only the last chunk)");
    response_free(&r);
    read_response(&c, &r, 0);
    if (expect_status(&r, 200, "HEAD: no body bytes were sent (the next response parses)"))
        expect_body(&r, "plain", "HEAD: then the pipelined request");
    response_free(&r);
    client_close(&c);
}

static void test_http10(int port)
{
    struct client c;
    long head;

    if (client_connect(&c, port) < 0) {
        ok(0, "HTTP/1.0: connect");
        return;
    }
    client_sends(&c, "GET /parts HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    while (client_fill(&c, now_ms() + io_timeout_ms) > 0) {
    }
    ok(c.closed, "HTTP/1.0: the close ends the body");
    head = c.len ? (long)((char *)memmem(c.buf, c.len, "\r\n\r\n", 4) - c.buf) + 4 : -1;
    ok(head > 0 && memmem(c.buf, (size_t)head, "Connection: close\r\n", 19) &&
           !memmem(c.buf, (size_t)head, "Transfer-Encoding", 17),
       "HTTP/1.0: Connection: close, no chunks");
    is_str(raw_body(&c, head), "abcd", "HTTP/1.0: the body as written");
    client_close(&c);
}

static void test_cut_short(const struct server *s, const char *path, const char *logged)
{
    struct client c;
    long head;

    if (client_connect(&c, s->port) < 0) {
        ok(0, "cut short: connect");
        return;
    }
    client_sends(&c, path);
    while (client_fill(&c, now_ms() + io_timeout_ms) > 0) {
    }
    head = c.len ? (long)((char *)memmem(c.buf, c.len, "\r\n\r\n", 4) - c.buf) + 4 : -1;
    ok(c.closed, what(path, "an error after the head closes the connection"));
    is_str(raw_body(&c, head), "1\r\na\r\n", what(path, "no last chunk: the body is cut short"));
    ok(wait_for_log(s, logged, io_timeout_ms), what(path, "the error is logged"));
    client_close(&c);
}

/*
 * A client that asks for 50 MiB and reads nothing for a while: the server
 * holds about the stream's bound, not the body; then everything arrives.
 */
static void test_back_pressure(const struct server *s)
{
    struct client c;
    struct response r;
    long before = rss_kib(s->pid), during;
    int n = 800;                      /* 800 writes of 64 KiB */

    if (client_connect(&c, s->port) < 0) {
        ok(0, "back-pressure: connect");
        return;
    }
    client_sends(&c, "GET /big?n=800 HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(1500);
    during = rss_kib(s->pid);
    note("back-pressure: server RSS %ld KiB before, %ld KiB while the client reads nothing",
         before, during);
    ok(before > 0 && during - before < 5 * 1024,
       "back-pressure: the server's memory grows by less than 5 MiB");
    read_response(&c, &r, 0);
    if (expect_status(&r, 200, "back-pressure: then the client reads"))
        is_int((int)(r.body_len / 65536), n, "back-pressure: every byte arrives");
    response_free(&r);
    client_close(&c);
}

/* A client that leaves mid-stream: the handler ends (its loop stops counting). */
static void test_client_leaves(int port)
{
    struct client c;
    char a[32] = "", b[32] = "";

    if (client_connect(&c, port) < 0) {
        ok(0, "leaves: connect");
        return;
    }
    client_sends(&c, "GET /forever HTTP/1.1\r\nHost: t\r\n\r\n");
    ok(read_until(&c, "tick\n") > 0, "leaves: the stream starts");
    client_close(&c);
    sleep_ms(300);
    body_of(port, "/loops", a, sizeof a);
    sleep_ms(300);
    body_of(port, "/loops", b, sizeof b);
    ok(a[0] && strcmp(a, b) == 0, what("leaves", "the handler stopped (%s, then %s)", a, b));
}

static void test_sse(const struct server *s)
{
    struct response r;
    struct client c;

    if (client_connect(&c, s->port) < 0) {
        ok(0, "sse: connect");
        return;
    }
    exchange(&c, "GET /sse HTTP/1.1\r\nHost: t\r\nLast-Event-ID: 41\r\n\r\n", &r);
    if (expect_status(&r, 200, "sse")) {
        expect_header(&r, "Content-Type", "text/event-stream; charset=utf-8", "sse: type");
        expect_header(&r, "Cache-Control", "no-cache", "sse: not cached");
        is_str(r.body,
               "event: e\nid: 1\ndata: a\ndata: b\ndata: c\n\n: note\n"
               "retry: 500\ndata: {\"n\":1}\n\nid: 41\n\n",
               "sse: framing: one data field per line, comments, retry, Last-Event-ID");
    }
    response_free(&r);
    exchange(&c, "GET /sse-quiet HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, "sse heartbeat"))
        ok(strstr(r.body, ": heartbeat\n\n") != NULL, "sse: a quiet stream gets heartbeats");
    response_free(&r);
    client_close(&c);
    is_int(fetch(s->port, "GET /sse-bad HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0,
           "sse: a bad event after the head cuts the stream short");
    response_free(&r);
    ok(wait_for_log(s, "stream:send: event may not contain a line break", io_timeout_ms),
       "sse: a line break in a field raises");
}

/* Inflates a gzip body into out (NUL-terminated); returns its length, or -1. */
static long gunzip(const char *in, size_t len, char *out, size_t cap)
{
    z_stream z;
    long n;

    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, 16 + 15) != Z_OK)
        return -1;
    z.next_in = (Bytef *)(uintptr_t)in;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)(cap - 1);
    n = inflate(&z, Z_FINISH) == Z_STREAM_END ? (long)z.total_out : -1;
    inflateEnd(&z);
    if (n >= 0)
        out[n] = '\0';
    return n;
}

/* --gzip: a streamed body is compressed as it goes (each piece readable at once). */
static void test_gzip(int port)
{
    struct client c;
    struct response r;
    static char plain[2 << 20];

    if (client_connect(&c, port) < 0) {
        ok(0, "gzip: connect");
        return;
    }
    exchange(&c, "GET /parts HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n", &r);
    if (expect_status(&r, 200, "gzip: streamed")) {
        expect_header(&r, "Content-Encoding", "gzip", "gzip: Content-Encoding");
        expect_header(&r, "Vary", "Accept-Encoding", "gzip: Vary");
        ok(gunzip(r.body, r.body_len, plain, sizeof plain) == 4 && strcmp(plain, "abcd") == 0,
           "gzip: the chunks inflate to what was written");
    }
    response_free(&r);
    exchange(&c, "GET /big?n=16 HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n", &r);
    if (expect_status(&r, 200, "gzip: a large stream"))
        is_int((int)gunzip(r.body, r.body_len, plain, sizeof plain), 16 * 65536,
               "gzip: 1 MiB written in 64 KiB pieces inflates whole");
    response_free(&r);
    exchange(&c, "GET /parts HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, "gzip: not accepted")) {
        ok(header_get(&r, "Content-Encoding") == NULL, "gzip: not asked for, not compressed");
        expect_body(&r, "abcd", "gzip: the plain body");
        expect_header(&r, "Vary", "Accept-Encoding", "gzip: Vary all the same");
    }
    response_free(&r);
    client_sends(&c, "HEAD /parts HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    read_response(&c, &r, 1);
    expect_header(&r, "Content-Encoding", "gzip", "gzip: HEAD's head says what GET's says");
    response_free(&r);
    client_close(&c);
}

/*
 * Another request writes to a streamed response whose client is slow: it
 * cannot wait for that client (the wait is the response's own handler's),
 * so it is taken or refused at once, and the response still ends whole.
 */
static void test_write_from_elsewhere(int port)
{
    struct client c;
    struct response r;
    if (client_connect(&c, port) < 0) {
        ok(0, "elsewhere: connect");
        return;
    }
    client_sends(&c, "GET /held HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(300);                    /* 26 MB, more than the sockets hold: its handler waits */
    if (fetch(port, "GET /poke HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 200)
        ok(strcmp(r.body, "true nil") == 0 || strcmp(r.body, "nil slow client") == 0,
           what("elsewhere", "the other writer is answered at once (%s)", r.body));
    else
        ok(0, "elsewhere: /poke 200");
    response_free(&r);
    read_response(&c, &r, 0);
    ok(r.status == 200 && r.body_len >= 3 && memcmp(r.body + r.body_len - 3, "END", 3) == 0,
       "elsewhere: the response's own handler goes on and ends it whole");
    response_free(&r);
    client_close(&c);
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
        test_chunked_framing(s.port);
        ok(wait_for_log(&s, "res:header(X-After) after the head of the streamed response",
                        io_timeout_ms),
           "framing: the late header is logged as ignored");
        test_head_and_empty(s.port);
        test_http10(s.port);
        test_cut_short(&s, "GET /fail HTTP/1.1\r\nHost: t\r\n\r\n", "failed mid-stream");
        test_cut_short(&s, "GET /send-after HTTP/1.1\r\nHost: t\r\n\r\n",
                       "res:send: the response is streamed (res:write)");
        test_back_pressure(&s);
        test_client_leaves(s.port);
        test_sse(&s);
        test_write_from_elsewhere(s.port);
        is_int(server_stop(&s), 0, "exit status 0");
    }
    server_cleanup(&s);
    {
        const char *args[] = {"--port", "0", "--workers", "1", "--gzip", "--gzip-min-bytes", "1",
                              dir, NULL};
        ok(server_start(&s, args) == 0, "server with --gzip starts");
    }
    if (s.pid > 0) {
        test_gzip(s.port);
        is_int(server_stop(&s), 0, "--gzip: exit status 0");
    }
    server_cleanup(&s);
    app_dir_remove(dir);
    free(wrap_copy);
    return test_summary();
}
