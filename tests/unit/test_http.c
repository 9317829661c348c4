/*
 * test_http.c: unit tests for the http-parser glue and the response writer
 * (http.[ch]) through the public header.
 *
 * Parsing is table-driven. Each raw input is fed (a) in one piece, (b) one
 * byte at a time and (c) split into two pieces at every byte boundary, the
 * way exchange.c drives the parser: parse, and after DONE record the
 * request, reset the context, start a fresh parser (tycho_http_init, as each
 * request's context does) and go on with the remaining
 * bytes; after ERROR stop. Every completed request is written down as one
 * line of text (method, path, query, version, keep-alive, HEAD, Expect,
 * headers, body), an error as "ERROR <status>", so all feeding modes must
 * produce the same text, equal to the table's. Then the response writer's
 * exact bytes. Single-threaded. Ends with the harness line `N passed, M failed`.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "harness.h"
#include "http/http.h"

#define MAX_HEADER_BYTES 2048
#define MAX_BODY_BYTES 1024

static struct tycho_config cfg;

/* ---- driving the parser --------------------------------------------------- */

/* One connection's worth of parsing, and what came out of it as text. */
struct session {
    struct tycho_http h;
    struct tycho_req *r;       /* one context, reset after every request */
    char log[8192];            /* one line per request or error */
    size_t log_len;
    size_t consumed;           /* bytes the parser took */
    int stopped;               /* after an ERROR no more bytes are fed */
    int anomalies;             /* MORE without taking every byte */
};

/* Appends printf-style text to the session's log (truncating when full). */
__attribute__((format(printf, 2, 3))) static void say(struct session *s, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (s->log_len >= sizeof(s->log) - 1)
        return;
    va_start(ap, fmt);
    n = vsnprintf(s->log + s->log_len, sizeof(s->log) - s->log_len, fmt, ap);
    va_end(ap);
    if (n > 0)
        s->log_len += (size_t)n < sizeof(s->log) - s->log_len ? (size_t)n
                                                              : sizeof(s->log) - 1 - s->log_len;
}

/* 32-bit FNV-1a, to write long bodies down briefly. */
static uint32_t fnv(const char *p, size_t n)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    return h;
}

/* Writes down a completed request as one line. */
static void record(struct session *s, const struct tycho_req *r)
{
    say(s, "%.*s %.*s q=", (int)r->method_len, r->method ? r->method : "",
        (int)r->path_len, r->path ? r->path : "");
    if (r->query)
        say(s, "%.*s", (int)r->query_len, r->query);
    else
        say(s, "-");
    say(s, " v%u.%u ka%d hd%d ec%d", r->http_major, r->http_minor, r->keep_alive, r->is_head,
        r->expect_continue);
    for (unsigned i = 0; i < r->nheaders; i++)
        say(s, " |%.*s:%.*s", (int)r->headers[i].name_len, r->headers[i].name,
            (int)r->headers[i].value_len, r->headers[i].value ? r->headers[i].value : "");
    if (r->body_len <= 64)
        say(s, " body=%.*s\n", (int)r->body_len, r->body ? r->body : "");
    else
        say(s, " body=%zu#%08x\n", r->body_len, (unsigned)fnv(r->body, r->body_len));
}

static void session_start(struct session *s)
{
    memset(s, 0, sizeof(*s));
    tycho_http_init(&s->h, &cfg);
    s->r = calloc(1, sizeof(*s->r));
    if (!s->r || tycho_req_init(s->r) < 0) {
        printf("Bail out: out of memory\n");
        exit(2);
    }
}

static void session_end(struct session *s)
{
    tycho_req_dispose(s->r);
    free(s->r);
    s->r = NULL;
}

/* Feeds one piece, as conn.c's feed() does. */
static void feed(struct session *s, const char *data, size_t len)
{
    while (len > 0 && !s->stopped) {
        size_t n = tycho_http_parse(&s->h, s->r, data, len);

        if (n > len) {
            s->anomalies++;
            n = len;
        }
        data += n;
        len -= n;
        s->consumed += n;
        switch (s->h.state) {
        case TYCHO_HTTP_DONE:
            record(s, s->r);
            tycho_req_reset(s->r);
            tycho_http_init(&s->h, &cfg);
            break;
        case TYCHO_HTTP_ERROR:
            say(s, "ERROR %d\n", s->h.error_status);
            s->stopped = 1;
            return;
        case TYCHO_HTTP_HEAD:
            /* As exchange.c's at_head for a route without options: the length is checked. */
            if (s->r->content_length != ULLONG_MAX &&
                s->r->content_length > s->h.cfg->max_body_bytes) {
                say(s, "ERROR 413\n");
                s->stopped = 1;
                return;
            }
            break;
        case TYCHO_HTTP_MORE:
            if (len > 0)
                s->anomalies++; /* MORE must mean every byte was taken */
            return;
        }
    }
}

/*
 * Parses raw split at the given points (ascending, 0 < cut < len) into out.
 * Returns how many bytes the parser took in all.
 */
static size_t run(const char *raw, size_t len, const size_t *cuts, size_t ncuts, char *out,
                  size_t out_len)
{
    size_t consumed;
    struct session s;
    size_t at = 0;

    session_start(&s);
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        feed(&s, raw + at, end - at);
        at = end;
    }
    if (s.h.in_message && !s.stopped)
        say(&s, "INCOMPLETE\n");
    if (s.anomalies)
        say(&s, "ANOMALIES %d\n", s.anomalies);
    snprintf(out, out_len, "%s", s.log);
    consumed = s.consumed;
    session_end(&s);
    return consumed;
}

/*
 * Checks that raw parses to want in one piece, byte by byte and split in two
 * at every point, and that the parser never takes more than limit bytes (the
 * offset of the first byte it must not parse; len when all may be). Reports
 * the first differing split only, so a broken case costs one failure line per
 * mode.
 */
static void check_parse_limit(const char *name, const char *raw, size_t len, const char *want,
                              size_t limit)
{
    static char got[8192], label[256];
    size_t *cuts = malloc(sizeof(size_t) * (len ? len : 1));
    size_t most = 0, n;
    int bad_split = -1;

    snprintf(label, sizeof(label), "%s: one piece", name);
    most = run(raw, len, NULL, 0, got, sizeof(got));
    is_str(got, want, label);

    for (size_t i = 0; i + 1 < len; i++)
        cuts[i] = i + 1;
    if ((n = run(raw, len, cuts, len ? len - 1 : 0, got, sizeof(got))) > most)
        most = n;
    snprintf(label, sizeof(label), "%s: byte by byte", name);
    is_str(got, want, label);

    for (size_t cut = 1; cut < len && bad_split < 0; cut++) {
        if ((n = run(raw, len, &cut, 1, got, sizeof(got))) > most)
            most = n;
        if (strcmp(got, want) != 0)
            bad_split = (int)cut;
    }
    snprintf(label, sizeof(label), "%s: every two-piece split", name);
    if (!ok(bad_split < 0, label)) {
        size_t cut = (size_t)bad_split;
        run(raw, len, &cut, 1, got, sizeof(got));
        printf("     split at %d: got \"%s\", want \"%s\"\n", bad_split, got, want);
    }
    if (limit < len) {
        snprintf(label, sizeof(label), "%s: nothing parsed from byte %zu on", name, limit);
        if (!ok(most <= limit, label))
            printf("     the parser took %zu bytes\n", most);
    }
    free(cuts);
}

static void check_parse(const char *name, const char *raw, size_t len, const char *want)
{
    check_parse_limit(name, raw, len, want, len);
}

/* ---- the tables ------------------------------------------------------------ */

struct parse_case {
    const char *name;
    const char *raw;
    const char *want;  /* one line per request (or ERROR n) */
};

static const struct parse_case good[] = {
    {"simple GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
     "GET / q=- v1.1 ka1 hd0 ec0 |Host:a body=\n"},
    {"headers",
     "GET /x/y HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1.0\r\nAccept: */*\r\n"
     "X-Multi: a, b;q=0.5\r\nx-lower: MiXeD\r\nX-Spaces:    padded\r\n\r\n",
     "GET /x/y q=- v1.1 ka1 hd0 ec0 |Host:example.com |User-Agent:t/1.0 |Accept:*/* "
     "|X-Multi:a, b;q=0.5 |x-lower:MiXeD |X-Spaces:padded body=\n"},
    {"empty header value", "GET / HTTP/1.1\r\nX-Empty:\r\nHost: a\r\nX-E2: \r\n\r\n",
     "GET / q=- v1.1 ka1 hd0 ec0 |X-Empty: |Host:a |X-E2: body=\n"},
    {"query", "GET /search?q=a+b&x=%20&y HTTP/1.1\r\nHost: a\r\n\r\n",
     "GET /search q=q=a+b&x=%20&y v1.1 ka1 hd0 ec0 |Host:a body=\n"},
    {"empty query", "GET /p? HTTP/1.1\r\nHost: a\r\n\r\n",
     "GET /p q= v1.1 ka1 hd0 ec0 |Host:a body=\n"},
    {"Content-Length body",
     "POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n"
     "\r\nhello world",
     "POST /submit q=- v1.1 ka1 hd0 ec0 |Host:a |Content-Length:11 |Content-Type:text/plain "
     "body=hello world\n"},
    {"Content-Length 0", "POST /z HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
     "POST /z q=- v1.1 ka1 hd0 ec0 |Host:a |Content-Length:0 body=\n"},
    {"chunked body",
     "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5\r\nhello\r\n6;ext=1\r\n world\r\nA\r\n0123456789\r\n0\r\n\r\n",
     "POST /up q=- v1.1 ka1 hd0 ec0 |Host:a |Transfer-Encoding:chunked "
     "body=hello world0123456789\n"},
    {"pipelined two",
     "GET /one HTTP/1.1\r\nHost: a\r\n\r\nPOST /two?k=v HTTP/1.1\r\nHost: b\r\n"
     "Content-Length: 3\r\n\r\nabc",
     "GET /one q=- v1.1 ka1 hd0 ec0 |Host:a body=\n"
     "POST /two q=k=v v1.1 ka1 hd0 ec0 |Host:b |Content-Length:3 body=abc\n"},
    {"pipelined three, chunked in the middle, close at the end",
     "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
     "PUT /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n"
     "DELETE /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
     "GET /a q=- v1.1 ka1 hd0 ec0 |Host:h body=\n"
     "PUT /b q=- v1.1 ka1 hd0 ec0 |Host:h |Transfer-Encoding:chunked body=xyz\n"
     "DELETE /c q=- v1.1 ka0 hd0 ec0 |Host:h |Connection:close body=\n"},
    {"HTTP/1.0", "GET /old HTTP/1.0\r\n\r\n", "GET /old q=- v1.0 ka0 hd0 ec0 body=\n"},
    {"HTTP/1.0 keep-alive", "GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
     "GET /old q=- v1.0 ka1 hd0 ec0 |Connection:keep-alive body=\n"},
    {"HTTP/1.0 body", "POST /f HTTP/1.0\r\nContent-Length: 2\r\n\r\nok",
     "POST /f q=- v1.0 ka0 hd0 ec0 |Content-Length:2 body=ok\n"},
    {"HTTP/1.1 Connection: close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
     "GET / q=- v1.1 ka0 hd0 ec0 |Host:a |Connection:close body=\n"},
    {"Expect: 100-continue",
     "PUT /file HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\ndata",
     "PUT /file q=- v1.1 ka1 hd0 ec1 |Host:a |Expect:100-continue |Content-Length:4 "
     "body=data\n"},
    {"Expect: 100-continue, chunked",
     "POST /c HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n"
     "2\r\nhi\r\n0\r\n\r\n",
     "POST /c q=- v1.1 ka1 hd0 ec1 |Host:a |Expect:100-Continue |Transfer-Encoding:chunked "
     "body=hi\n"},
    {"Expect without a body", "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
     "GET / q=- v1.1 ka1 hd0 ec0 |Host:a |Expect:100-continue body=\n"},
    {"absolute-form URL",
     "GET http://example.com:8080/abs/path?k=v&w HTTP/1.1\r\nHost: example.com\r\n\r\n",
     "GET /abs/path q=k=v&w v1.1 ka1 hd0 ec0 |Host:example.com body=\n"},
    {"absolute-form URL, no query", "GET https://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
     "GET /x q=- v1.1 ka1 hd0 ec0 |Host:h body=\n"},
    {"HEAD", "HEAD /r HTTP/1.1\r\nHost: a\r\n\r\n", "HEAD /r q=- v1.1 ka1 hd1 ec0 |Host:a body=\n"},
    {"OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
     "OPTIONS * q=- v1.1 ka1 hd0 ec0 |Host:a body=\n"},
    /* Fields http-parser does not read reach the glue without it (framing.h): all are kept. */
    {"long fields the parser is not given, around those it reads",
     "POST /s HTTP/1.1\r\nHost: a-long-host.example.com\r\nUser-Agent: Mozilla/5.0 (X11)\r\n"
     "Content-Length: 3\r\nAccept-Language: en-US,en;q=0.5\r\nUpgrade-Insecure-Requests: 1\r\n"
     "Connection: close\r\nSec-Fetch-Dest: document-long\r\n\r\nabc",
     "POST /s q=- v1.1 ka0 hd0 ec0 |Host:a-long-host.example.com |User-Agent:Mozilla/5.0 (X11) "
     "|Content-Length:3 |Accept-Language:en-US,en;q=0.5 |Upgrade-Insecure-Requests:1 "
     "|Connection:close |Sec-Fetch-Dest:document-long body=abc\n"},
    {"long fields around Transfer-Encoding: chunked",
     "POST /c HTTP/1.1\r\nX-Long-Field-Name: some long value\r\nHost: a\r\n"
     "Transfer-Encoding: chunked\r\nX-After-It-Long: another long value\r\n\r\n"
     "2\r\nhi\r\n0\r\nX-Trailer-Field-Long: dropped\r\n\r\n",
     "POST /c q=- v1.1 ka1 hd0 ec0 |X-Long-Field-Name:some long value |Host:a "
     "|Transfer-Encoding:chunked |X-After-It-Long:another long value body=hi\n"},
    /* A long origin-form target: http-parser is given "/" alone (framing.h). */
    {"long target with a query and a fragment",
     "GET /a/long/path/\xc3\xa9t\xc3\xa9?q=1&x=%20?y#frag#x HTTP/1.1\r\nHost: a\r\n\r\n",
     "GET /a/long/path/\xc3\xa9t\xc3\xa9 q=q=1&x=%20?y#frag#x v1.1 ka1 hd0 ec0 |Host:a body=\n"},
    {"long target with a fragment, no query",
     "GET /a/long/path#fragment HTTP/1.1\r\nHost: a\r\n\r\n",
     "GET /a/long/path q=- v1.1 ka1 hd0 ec0 |Host:a body=\n"},
    {"blank lines before the request", "\r\n\r\nGET /late HTTP/1.1\r\nHost: a\r\n\r\n",
     "GET /late q=- v1.1 ka1 hd0 ec0 |Host:a body=\n"},
    /* RFC 9110 5.5: leading and trailing whitespace is not part of a field value. */
    {"whitespace around header values", "GET /ows HTTP/1.1\r\nHost:a \r\nX-Pad:\t v w \t\r\n\r\n",
     "GET /ows q=- v1.1 ka1 hd0 ec0 |Host:a |X-Pad:v w body=\n"},
    {"Expect: 100-continue with trailing whitespace",
     "PUT /ows HTTP/1.1\r\nHost: a\r\nExpect: 100-continue \r\nContent-Length: 1\r\n\r\nx",
     "PUT /ows q=- v1.1 ka1 hd0 ec1 |Host:a |Expect:100-continue |Content-Length:1 body=x\n"},
    /* RFC 9112 7.1.1: extensions are token or quoted-string, around BWS; ignored. */
    {"chunk extensions",
     "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "2;a\r\nab\r\n2 ; b = c ;d\r\ncd\r\n2;q=\"x \\\" ;\\\\y\"\t;z\r\nef\r\n0;last=1\r\n\r\n",
     "POST /x q=- v1.1 ka1 hd0 ec0 |Host:a |Transfer-Encoding:chunked body=abcdef\n"},
    {"trailers are read and not kept",
     "POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-Other:\r\n\r\nGET /n HTTP/1.1\r\nHost: a\r\n\r\n",
     "POST /t q=- v1.1 ka1 hd0 ec0 |Host:a |Transfer-Encoding:chunked body=abc\n"
     "GET /n q=- v1.1 ka1 hd0 ec0 |Host:a body=\n"},
    {"Transfer-Encoding is case-insensitive",
     "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n",
     "POST /c q=- v1.1 ka1 hd0 ec0 |Host:a |Transfer-Encoding:Chunked body=z\n"},
    {"chunk size with leading zeros and upper-case hex",
     "POST /h HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "000A\r\n0123456789\r\n000\r\n\r\n",
     "POST /h q=- v1.1 ka1 hd0 ec0 |Host:a |Transfer-Encoding:chunked body=0123456789\n"},
    /* RFC 9112 3.2: uri-host [ ":" port ], empty allowed. */
    {"Host forms",
     "GET /1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\nGET /2 HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"
     "GET /3 HTTP/1.1\r\nHost:\r\n\r\nGET /4 HTTP/1.1\r\nHost: ex-am_ple.%41b~c!$&'()*+,;=:\r\n\r\n"
     "GET /5 HTTP/1.1\r\nHost: [v1.fe80::a+b]\r\n\r\n",
     "GET /1 q=- v1.1 ka1 hd0 ec0 |Host:127.0.0.1:8080 body=\n"
     "GET /2 q=- v1.1 ka1 hd0 ec0 |Host:[::1]:80 body=\n"
     "GET /3 q=- v1.1 ka1 hd0 ec0 |Host: body=\n"
     "GET /4 q=- v1.1 ka1 hd0 ec0 |Host:ex-am_ple.%41b~c!$&'()*+,;=: body=\n"
     "GET /5 q=- v1.1 ka1 hd0 ec0 |Host:[v1.fe80::a+b] body=\n"},
    /* Bytes >= 0x80 in the target (raw UTF-8) cannot move a boundary: taken as sent. */
    {"obs-text in the target", "GET /caf\xc3\xa9?q=\xff HTTP/1.1\r\nHost: a\r\n\r\n",
     "GET /caf\xc3\xa9 q=q=\xff v1.1 ka1 hd0 ec0 |Host:a body=\n"},
    {"obs-text in a header value", "GET / HTTP/1.1\r\nHost: a\r\nX-U: caf\xc3\xa9\r\n\r\n",
     "GET / q=- v1.1 ka1 hd0 ec0 |Host:a |X-U:caf\xc3\xa9 body=\n"},
    {"extra CRLF after a body, before the next request",
     "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx\r\n"
     "GET /b HTTP/1.1\r\nHost: a\r\n\r\n",
     "POST /a q=- v1.1 ka1 hd0 ec0 |Host:a |Content-Length:1 body=x\n"
     "GET /b q=- v1.1 ka1 hd0 ec0 |Host:a body=\n"},
};

static const struct parse_case bad[] = {
    {"garbage request line", "GARBAGE\r\n\r\n", "ERROR 400\n"},
    /* http-parser takes a line without a version as HTTP/0.9; the request line needs one. */
    {"request line without version", "GET /\r\nHost: a\r\n\r\n", "ERROR 400\n"},
    {"space in a header name", "GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
     "ERROR 400\n"},
    /* RFC 9112 5.1: whitespace between the name and the colon MUST get a 400. */
    {"space before the colon", "GET / HTTP/1.1\r\nHost: a\r\nX-Name : x\r\n\r\n",
     "ERROR 400\n"},
    {"control byte in a header name", "GET / HTTP/1.1\r\nHost: a\r\nBad\x01: x\r\n\r\n",
     "ERROR 400\n"},
    {"bad chunk size",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
     "ERROR 400\n"},
    {"Content-Length and Transfer-Encoding",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     "0\r\n\r\n",
     "ERROR 400\n"},
    {"two different Content-Length",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
     "ERROR 400\n"},
    {"bad Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\nhello",
     "ERROR 400\n"},
    {"missing Host on HTTP/1.1", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", "ERROR 400\n"},
    {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", "ERROR 505\n"},
    {"HTTP/0.9 style version", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", "ERROR 505\n"},
    {"unknown Expect", "PUT / HTTP/1.1\r\nHost: a\r\nExpect: gzip\r\nContent-Length: 1\r\n\r\nx",
     "ERROR 417\n"},
    {"body over max_body_bytes (Content-Length)",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n", "ERROR 413\n"},
    {"good request, then garbage",
     "GET /ok HTTP/1.1\r\nHost: a\r\n\r\nNOT HTTP AT ALL\r\n\r\n",
     "GET /ok q=- v1.1 ka1 hd0 ec0 |Host:a body=\nERROR 400\n"},
    {"obsolete line folding", "GET / HTTP/1.1\r\nHost: a\r\nX-Fold: one\r\n two\r\n\r\n",
     "ERROR 400\n"},
    {"obsolete line folding with a tab",
     "GET / HTTP/1.1\r\nHost: a\r\nX-Fold: one\r\n\ttwo\r\n\r\n", "ERROR 400\n"},
    {"control character in a header value", "GET / HTTP/1.1\r\nHost: a\r\nX-C: a\x01b\r\n\r\n",
     "ERROR 400\n"},
    {"DEL in a header value", "GET / HTTP/1.1\r\nHost: a\r\nX-C: a\x7f\r\n\r\n", "ERROR 400\n"},
    {"Transfer-Encoding not ending in chunked",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
     "ERROR 400\n"},
    {"Transfer-Encoding gzip alone",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello", "ERROR 400\n"},
    /* RFC 9112 6.1: chunked last after a coding we do not decode: 501. */
    {"Transfer-Encoding gzip, chunked",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
     "ERROR 501\n"},
    {"negative Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
     "ERROR 400\n"},
    {"overflowing Content-Length",
     "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
     "ERROR 400\n"},
    {"overflowing chunk size",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "fffffffffffffffffffff\r\n",
     "ERROR 400\n"},
    {"two Content-Length among long fields",
     "POST / HTTP/1.1\r\nX-Padding-Field: 0123456789abcdef\r\nContent-Length: 5\r\nHost: a\r\n"
     "X-Padding-Field2: 0123456789abcdef\r\nContent-Length: 6\r\n\r\nhello!",
     "ERROR 400\n"},
    {"a long field name that begins with Transfer-Encoding",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding-Extra: something long\r\n"
     "Content-Length: 1\r\n\r\nx",
     "ERROR 400\n"},
    {"control byte in a long target", "GET /abcdefghijkl\x01m HTTP/1.1\r\nHost: a\r\n\r\n",
     "ERROR 400\n"},
    {"two spaces after a long target", "GET /abcdefghijklm  HTTP/1.1\r\nHost: a\r\n\r\n",
     "ERROR 400\n"},
    {"CONNECT with a long origin-form target",
     "CONNECT /abcdefghijklm HTTP/1.1\r\nHost: a\r\n\r\n", "ERROR 400\n"},
    {"good request, then missing Host",
     "GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
     "GET /ok q=- v1.1 ka1 hd0 ec0 |Host:a body=\nERROR 400\n"},
};

/*
 * Framing attacks, each a row of docs/http.md's table: what the non-strict
 * http-parser would take (and where a second party could frame the bytes
 * otherwise) is refused with the status in want, and the parser takes no
 * byte from the first occurrence of stop on: nothing after the bad bytes,
 * not the request smuggled behind them, is parsed.
 */
struct smuggle_case {
    const char *name;
    const char *raw;
    const char *want;  /* the requests seen before, then "ERROR n" */
    const char *stop;  /* the parser must not take this substring's first byte */
};

#define TE_CHUNKED "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
#define NEXT "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"

static const struct smuggle_case smuggle[] = {
    /* The five findings. */
    {"chunk data followed by XX, not CRLF", TE_CHUNKED "5\r\nhelloXX0\r\n\r\n" NEXT,
     "ERROR 400\n", "XX0"},
    {"CR then X at the end of the head", "GET /a HTTP/1.1\r\nHost: x\r\n\rX" NEXT, "ERROR 400\n",
     "X" NEXT},
    {"CR then X after a chunk size", TE_CHUNKED "5\rXhello\r\n0\r\n\r\n" NEXT, "ERROR 400\n",
     "Xhello"},
    {"CR then X after the last chunk", TE_CHUNKED "5\r\nhello\r\n0\r\n\rX" NEXT, "ERROR 400\n",
     "X" NEXT},
    {"HTTP/1.0 with Transfer-Encoding: chunked and keep-alive",
     "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
     "5\r\nhello\r\n0\r\n\r\n" NEXT,
     "ERROR 400\n", "5\r\nhello"},
    {"Host with a space and a slash", "GET / HTTP/1.1\r\nHost: bad host/x\r\n\r\n" NEXT,
     "ERROR 400\n", NEXT},
    {"HTTX instead of HTTP", "GET / HTTX/1.1\r\nHost: a\r\n\r\n" NEXT, "ERROR 400\n", "X/1.1"},
    {"HTT\\xb3 instead of HTTP", "GET / HTT\xb3/1.1\r\nHost: a\r\n\r\n" NEXT, "ERROR 400\n",
     "\xb3/1.1"},
    /* http-parser 2.9.4's other STRICT_CHECK sites. */
    {"HTTP followed by another byte than /", "GET / HTTP|1.1\r\nHost: a\r\n\r\n" NEXT,
     "ERROR 400\n", "|1.1"},
    {"ICE/1.0 taken as HTTP for SOURCE", "SOURCE / ICE/1.0\r\nHost: a\r\n\r\n" NEXT,
     "ERROR 400\n", "ICE/"},
    {"CR then X after an empty field value", "GET / HTTP/1.1\r\nX:\rYHost: a\r\n\r\n" NEXT,
     "ERROR 400\n", "YHost"},
    {"CR then X after a field line", "GET / HTTP/1.1\r\nHost: a\rXY: b\r\n\r\n" NEXT,
     "ERROR 400\n", "XY: b"},
    {"chunk data followed by CR X", TE_CHUNKED "5\r\nhello\rX0\r\n\r\n" NEXT, "ERROR 400\n",
     "X0\r\n"},
    {"chunk data followed by X LF", TE_CHUNKED "5\r\nhelloX\n0\r\n\r\n" NEXT, "ERROR 400\n",
     "X\n0"},
    {"CR then X after a trailer field", TE_CHUNKED "0\r\nT: 1\rX\r\n\r\n" NEXT, "ERROR 400\n",
     "X\r\n\r\n"},
    /*
     * Leniencies that are not STRICT_CHECKs, and cases http-parser refuses
     * itself (a CR then X after a field line, DEL in the target, lower-case
     * http, an empty field name, 0x or a space in a chunk size, a bare LF
     * after a chunk size, a space after the version), kept as guards.
     */
    {"bare LF after the request line", "GET / HTTP/1.1\nHost: a\r\n\r\n" NEXT, "ERROR 400\n",
     "\nHost"},
    {"bare LF after a field line", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n" NEXT, "ERROR 400\n",
     "\nX: y"},
    {"bare LF ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\n" NEXT, "ERROR 400\n",
     "\n" NEXT},
    {"bare LF after a chunk size", TE_CHUNKED "5\nhello\r\n0\r\n\r\n" NEXT, "ERROR 400\n",
     "\nhello"},
    {"bare LF after an empty field value", "GET / HTTP/1.1\r\nX:\nHost: a\r\n\r\n" NEXT,
     "ERROR 400\n", "\nHost"},
    {"bare CR before the request line", "\rGET / HTTP/1.1\r\nHost: a\r\n\r\n" NEXT, "ERROR 400\n",
     "GET / HTTP"},
    {"bare LF before the request line", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n" NEXT, "ERROR 400\n",
     "\nGET"},
    {"two spaces before the target", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n" NEXT, "ERROR 400\n",
     " / HTTP"},
    {"two spaces before the version", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n" NEXT, "ERROR 400\n",
     " HTTP/1.1"},
    {"space after the version", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n" NEXT, "ERROR 400\n",
     " \r\nHost"},
    {"tab in the target", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n" NEXT, "ERROR 400\n", "\tb"},
    {"form feed in the target", "GET /a\fb HTTP/1.1\r\nHost: a\r\n\r\n" NEXT, "ERROR 400\n",
     "\fb"},
    {"DEL in the target", "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n" NEXT, "ERROR 400\n",
     "\x7f"},
    {"lower-case http", "GET / http/1.1\r\nHost: a\r\n\r\n" NEXT, "ERROR 400\n", "http/"},
    {"two-digit minor version", "GET / HTTP/1.10\r\nHost: a\r\n\r\n" NEXT, "ERROR 400\n",
     "0\r\nHost"},
    {"space in a field name", "GET / HTTP/1.1\r\nHost: a\r\nA B: c\r\n\r\n" NEXT, "ERROR 400\n",
     " B: c"},
    {"empty field name", "GET / HTTP/1.1\r\nHost: a\r\n: c\r\n\r\n" NEXT, "ERROR 400\n",
     ": c"},
    {"whitespace before the first field line", "GET / HTTP/1.1\r\n Host: a\r\n\r\n" NEXT,
     "ERROR 400\n", " Host"},
    {"LF inside a chunk extension", TE_CHUNKED "5;a\nb\r\nhello\r\n0\r\n\r\n" NEXT,
     "ERROR 400\n", "\nb\r\n"},
    {"control byte inside a chunk extension", TE_CHUNKED "5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n" NEXT,
     "ERROR 400\n", "\x01"},
    {"chunk size followed by a space only", TE_CHUNKED "5 \r\nhello\r\n0\r\n\r\n" NEXT,
     "ERROR 400\n", "\r\nhello"},
    {"chunk extension name followed by a space only", TE_CHUNKED "5;a \r\nhello\r\n0\r\n\r\n" NEXT,
     "ERROR 400\n", "\r\nhello"},
    {"unterminated quoted chunk extension", TE_CHUNKED "5;a=\"b\r\nhello\r\n0\r\n\r\n" NEXT,
     "ERROR 400\n", "\r\nhello"},
    {"chunk size with 0x", TE_CHUNKED "0x5\r\nhello\r\n0\r\n\r\n" NEXT, "ERROR 400\n",
     "x5"},
    {"space before a chunk size", TE_CHUNKED " 5\r\nhello\r\n0\r\n\r\n" NEXT, "ERROR 400\n",
     " 5"},
    {"obs-fold in a trailer", TE_CHUNKED "0\r\nT: 1\r\n 2\r\n\r\n" NEXT, "ERROR 400\n",
     " 2\r\n"},
    {"space before the colon in a trailer", TE_CHUNKED "0\r\nT : 1\r\n\r\n" NEXT, "ERROR 400\n",
     " : 1"},
    /* RFC 9110 5.6.1 allows empty list elements; http-parser 2.9.4 does not find chunked then. */
    {"Transfer-Encoding with an empty list element",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n0\r\n\r\n" NEXT,
     "ERROR 400\n", "0\r\n\r\n" NEXT},
    {"Transfer-Encoding chunked twice in one field",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n" NEXT,
     "ERROR 400\n", "0\r\n\r\n" NEXT},
    {"Transfer-Encoding chunked, then gzip in a second field",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"
     "\r\n0\r\n\r\n" NEXT,
     "ERROR 400\n", "0\r\n\r\n" NEXT},
    {"Transfer-Encoding chunked in two fields",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
     "\r\n0\r\n\r\n" NEXT,
     "ERROR 400\n", "0\r\n\r\n" NEXT},
    {"empty Transfer-Encoding",
     "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\nContent-Length: 2\r\n\r\nab" NEXT,
     "ERROR 400\n", "ab" NEXT},
    {"HTTP/1.0 with Transfer-Encoding and Content-Length",
     "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
     "0\r\n\r\n" NEXT,
     "ERROR 400\n", "0\r\n\r\n" NEXT},
    {"Host with a user", "GET / HTTP/1.1\r\nHost: u@h\r\n\r\n" NEXT, "ERROR 400\n", NEXT},
    {"Host with a bad port", "GET / HTTP/1.1\r\nHost: h:8x\r\n\r\n" NEXT, "ERROR 400\n", NEXT},
    {"Host with a bad percent-encoding", "GET / HTTP/1.1\r\nHost: h%zz\r\n\r\n" NEXT,
     "ERROR 400\n", NEXT},
    {"Host with a bad IPv6 literal", "GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n" NEXT, "ERROR 400\n",
     NEXT},
    {"Host with an unclosed bracket", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n" NEXT, "ERROR 400\n",
     NEXT},
    {"asterisk-form for GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n" NEXT, "ERROR 400\n", NEXT},
    {"CONNECT with a body", "CONNECT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" NEXT,
     "ERROR 400\n", "hello"},
    {"CONNECT in authority-form", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n" NEXT,
     "ERROR 400\n", NEXT},
    {"a good request, then CR X",
     "GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\rX" NEXT,
     "GET /ok q=- v1.1 ka1 hd0 ec0 |Host:a body=\nERROR 400\n", "X" NEXT},
};

/* A NUL byte needs an explicit length. */
static void test_nul_bytes(void)
{
    static const char value[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n" NEXT;
    static const char ext[] = TE_CHUNKED "5;a\0\r\nhello\r\n0\r\n\r\n" NEXT;
    static const char target[] = "GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n" NEXT;

    check_parse_limit("NUL in a field value", value, sizeof(value) - 1, "ERROR 400\n",
                      (size_t)(strchr(value, 'X') - value) + 4);
    check_parse_limit("NUL in a chunk extension", ext, sizeof(ext) - 1, "ERROR 400\n",
                      strlen(ext) + 0);
    check_parse_limit("NUL in the target", target, sizeof(target) - 1, "ERROR 400\n",
                      strlen(target));
}

/* A chunk-size line with its extensions counts against max_header_bytes (http-parser's count). */
static void test_chunk_line_bound(void)
{
    static char raw[8192];
    size_t n = (size_t)snprintf(raw, sizeof(raw), TE_CHUNKED "1;x=");

    memset(raw + n, 'a', MAX_HEADER_BYTES);
    n += MAX_HEADER_BYTES;
    n += (size_t)snprintf(raw + n, sizeof(raw) - n, "\r\nz\r\n0\r\n\r\n");
    check_parse("chunk extension over max_header_bytes", raw, n, "ERROR 431\n");
    n = (size_t)snprintf(raw, sizeof(raw), TE_CHUNKED "1;x=");
    memset(raw + n, 'a', MAX_HEADER_BYTES - 8);
    n += MAX_HEADER_BYTES - 8;
    n += (size_t)snprintf(raw + n, sizeof(raw) - n, "\r\nz\r\n0\r\n\r\n");
    check_parse("chunk extension just under max_header_bytes", raw, n,
                "POST /echo q=- v1.1 ka1 hd0 ec0 |Host:a |Transfer-Encoding:chunked body=z\n");
}

/*
 * The head limit counts each head from its own first byte, however the bytes
 * came: a request after one with long trailers is not charged for them.
 */
static void test_limit_after_trailers(void)
{
    static char raw[8192], want[4096];
    char pad[2048];
    size_t n;

    memset(pad, 't', sizeof(pad));
    n = (size_t)snprintf(raw, sizeof(raw), TE_CHUNKED "1\r\nz\r\n0\r\nX-Trailer: %.*s\r\n\r\n"
                         "GET /%.*s HTTP/1.1\r\nHost: a\r\n\r\n",
                         1500, pad, 700, pad);
    snprintf(want, sizeof(want),
             "POST /echo q=- v1.1 ka1 hd0 ec0 |Host:a |Transfer-Encoding:chunked body=z\n"
             "GET /%.*s q=- v1.1 ka1 hd0 ec0 |Host:a body=\n", 700, pad);
    check_parse("a request after 1500 bytes of trailers", raw, n, want);
}

/* Builds inputs whose size depends on the limits, then checks them like the tables. */
static void test_limits(void)
{
    static char raw[16384], want[512];
    char big[4096];
    size_t n;
    int len;

    /* A header value over max_header_bytes: 431. */
    memset(big, 'v', sizeof(big));
    len = snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\nX-Big: %.*s\r\n\r\n",
                   MAX_HEADER_BYTES + 1, big);
    check_parse("header over max_header_bytes", raw, (size_t)len, "ERROR 431\n");

    /* Many small headers adding up to more than max_header_bytes: 431. */
    n = (size_t)snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; n < MAX_HEADER_BYTES + 200; i++)
        n += (size_t)snprintf(raw + n, sizeof(raw) - n, "X-H%03d: 0123456789abcdef\r\n", i);
    n += (size_t)snprintf(raw + n, sizeof(raw) - n, "\r\n");
    check_parse("many headers over max_header_bytes", raw, n, "ERROR 431\n");

    /* More header fields than max_headers: 431. */
    n = (size_t)snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < cfg.max_headers; i++)
        n += (size_t)snprintf(raw + n, sizeof(raw) - n, "X%d: v\r\n", i);
    n += (size_t)snprintf(raw + n, sizeof(raw) - n, "\r\n");
    check_parse("more header fields than max_headers", raw, n, "ERROR 431\n");

    /* A URL over max_header_bytes: 414. */
    memset(big, 'u', sizeof(big));
    len = snprintf(raw, sizeof(raw), "GET /%.*s HTTP/1.1\r\nHost: a\r\n\r\n", MAX_HEADER_BYTES,
                   big);
    check_parse("URL over max_header_bytes", raw, (size_t)len, "ERROR 414\n");

    /* Just under both limits: fine. */
    len = snprintf(raw, sizeof(raw), "GET /%.*s HTTP/1.1\r\nHost: a\r\n\r\n",
                   MAX_HEADER_BYTES / 2, big);
    {
        static char want_url[4096];
        snprintf(want_url, sizeof(want_url), "GET /%.*s q=- v1.1 ka1 hd0 ec0 |Host:a body=\n",
                 MAX_HEADER_BYTES / 2, big);
        check_parse("URL of half max_header_bytes", raw, (size_t)len, want_url);
    }

    /* A chunked body over max_body_bytes: 413 while the body arrives. */
    n = (size_t)snprintf(raw, sizeof(raw),
                         "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 5; i++) {
        n += (size_t)snprintf(raw + n, sizeof(raw) - n, "100\r\n");
        memset(raw + n, 'b', 256);
        n += 256;
        n += (size_t)snprintf(raw + n, sizeof(raw) - n, "\r\n");
    }
    n += (size_t)snprintf(raw + n, sizeof(raw) - n, "0\r\n\r\n");
    check_parse("chunked body over max_body_bytes", raw, n, "ERROR 413\n");

    /* A body of exactly max_body_bytes is accepted, in both framings. */
    memset(big, 'B', sizeof(big));
    len = snprintf(raw, sizeof(raw), "POST /max HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
                   "%.*s", MAX_BODY_BYTES, MAX_BODY_BYTES, big);
    snprintf(want, sizeof(want),
             "POST /max q=- v1.1 ka1 hd0 ec0 |Host:a |Content-Length:%d body=%d#%08x\n",
             MAX_BODY_BYTES, MAX_BODY_BYTES, (unsigned)fnv(big, MAX_BODY_BYTES));
    check_parse("body of exactly max_body_bytes", raw, (size_t)len, want);
    len = snprintf(raw, sizeof(raw), "POST /max HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
                   "chunked\r\n\r\n%x\r\n%.*s\r\n0\r\n\r\n", MAX_BODY_BYTES, MAX_BODY_BYTES, big);
    snprintf(want, sizeof(want),
             "POST /max q=- v1.1 ka1 hd0 ec0 |Host:a |Transfer-Encoding:chunked body=%d#%08x\n",
             MAX_BODY_BYTES, (unsigned)fnv(big, MAX_BODY_BYTES));
    check_parse("chunked body of exactly max_body_bytes", raw, (size_t)len, want);

    /* Forty headers: the header array grows past its first 16 entries. */
    n = (size_t)snprintf(raw, sizeof(raw), "GET /many HTTP/1.1\r\nHost: a\r\n");
    len = snprintf(want, sizeof(want), "GET /many q=- v1.1 ka1 hd0 ec0 |Host:a");
    {
        static char want_long[2048];
        size_t w = (size_t)snprintf(want_long, sizeof(want_long), "%s", want);
        for (int i = 0; i < 40; i++) {
            n += (size_t)snprintf(raw + n, sizeof(raw) - n, "H%d: v%d\r\n", i, i);
            w += (size_t)snprintf(want_long + w, sizeof(want_long) - w, " |H%d:v%d", i, i);
        }
        n += (size_t)snprintf(raw + n, sizeof(raw) - n, "\r\n");
        snprintf(want_long + w, sizeof(want_long) - w, " body=\n");
        check_parse("forty headers", raw, n, want_long);
    }
}

/* RFC 9110 4.2.3: an empty path in an http(s) URI is the same as "/". */
static void test_absolute_form_empty_path(void)
{
    const char *raw = "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n";

    check_parse("absolute-form URL with an empty path", raw, strlen(raw),
                "GET / q=- v1.1 ka1 hd0 ec0 |Host:example.com body=\n");
}

/* Context lifecycle and header lookup. */
static void test_req_context(void)
{
    struct session s;
    const struct tycho_header *hd;
    const char *raw = "GET /h HTTP/1.1\r\nHost: a\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n";
    size_t n;

    session_start(&s);
    is_int(s.r->status, 200, "fresh context: status 200");
    ok(s.r->app == NULL, "fresh context: no application state");
    ok(s.r->arena.first != NULL, "fresh context: arena ready");
    n = tycho_http_parse(&s.h, s.r, raw, strlen(raw));
    is_int(n, strlen(raw), "whole request consumed");
    is_int(s.h.state, TYCHO_HTTP_DONE, "DONE");
    hd = tycho_req_header(s.r, "HOST", 4);
    ok(hd && hd->value_len == 1 && hd->value[0] == 'a', "header lookup ignores case");
    hd = tycho_req_header(s.r, "x-dup", 5);
    ok(hd && hd->value_len == 1 && hd->value[0] == '1', "header lookup returns the first");
    ok(tycho_req_header(s.r, "Hos", 3) == NULL, "no prefix match");
    ok(tycho_req_header(s.r, "Hostx", 5) == NULL, "no longer match");
    ok(s.r->path >= s.r->url && s.r->path < s.r->url + s.r->url_len, "path points into url");

    s.r->status = 404;
    tycho_req_reset(s.r);
    is_int(s.r->status, 200, "reset: status 200");
    is_int(s.r->nheaders, 0, "reset: no headers");
    ok(s.r->url == NULL && s.r->body == NULL, "reset: no url, no body");
    ok(s.r->app == NULL, "reset: no application state");
    ok(s.r->arena.first != NULL && s.r->arena.used == 0, "reset keeps the arena's first block");

    /* Parse the same request again with a fresh parser, as the next request's context has. */
    tycho_http_init(&s.h, &cfg);
    is_int(s.h.state, TYCHO_HTTP_MORE, "next: MORE");
    n = tycho_http_parse(&s.h, s.r, raw, 5);
    is_int(n, 5, "partial input consumed");
    is_int(s.h.state, TYCHO_HTTP_MORE, "partial: MORE");
    ok(s.h.in_message, "partial: in a message");
    n = tycho_http_parse(&s.h, s.r, raw + 5, strlen(raw) - 5);
    is_int(n, strlen(raw) - 5, "rest consumed");
    is_int(s.h.state, TYCHO_HTTP_DONE, "DONE again");
    is_int(s.r->nheaders, 3, "three headers the second time");
    session_end(&s);
}

/* ---- the response writer ----------------------------------------------------- */

static void out_is(struct tycho_buf *out, const char *want, const char *what)
{
    char got[2048];
    size_t n = out->len < sizeof(got) - 1 ? out->len : sizeof(got) - 1;

    memcpy(got, out->data ? out->data + out->off : "", n);
    got[n] = '\0';
    is_str(got, want, what);
    is_int(out->len, strlen(want), what);
    tycho_buf_consume(out, out->len);
}

#define DATE "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
#define TEXT "Content-Type: text/plain; charset=utf-8\r\n"

/*
 * Heads whose parts for the parser do not fit the copy a whole head is parsed
 * from (an absolute-form target of 600 bytes; many Content-Length fields):
 * they are parsed piece by piece, as a head split over reads is.
 */
static void test_long_parser_parts(void)
{
    static char raw[2048], want[2048];
    char path[601];
    int n;

    memset(path, 'p', sizeof(path) - 1);
    path[0] = '/';
    path[sizeof(path) - 1] = '\0';
    n = snprintf(raw, sizeof(raw), "GET http://h%s?q HTTP/1.1\r\nHost: h\r\n\r\n", path);
    snprintf(want, sizeof(want), "GET %s q=q v1.1 ka1 hd0 ec0 |Host:h body=\n", path);
    check_parse("a 600-byte absolute-form target", raw, (size_t)n, want);
    n = snprintf(raw, sizeof(raw), "POST /x HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < 30; i++)
        n += snprintf(raw + n, sizeof(raw) - (size_t)n, "Content-Length: 1\r\n");
    n += snprintf(raw + n, sizeof(raw) - (size_t)n, "\r\nx");
    check_parse("30 Content-Length fields", raw, (size_t)n, "ERROR 400\n");
}

/* tycho_http_is_token against RFC 9110 5.6.2's tchar, byte by byte. */
static void test_is_token(void)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    int wrong = 0;

    for (int c = 0; c < 256; c++) {
        char s[3] = {'a', (char)c, 'b'};
        bool want = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c != 0 && strchr(extra, c) != NULL);
        wrong += tycho_http_is_token(s, 3) != want;
    }
    ok(wrong == 0, "each byte is a token byte exactly when RFC 9110 says so");
    ok(!tycho_http_is_token("", 0), "the empty string is no token");
    ok(tycho_http_is_token("Content-Type", 12), "a header name is a token");
}

/* The request id: the client's valid X-Request-Id, else 16 hex digits of the counter. */
static void test_request_id(void)
{
    static const char raw[] = "GET / HTTP/1.1\r\nHost: a\r\nX-Request-ID: abc-1.2:3\r\n\r\n";
    static const struct {
        unsigned long long v;
        const char *want;
    } ids[] = {
        {0, "0000000000000000"},
        {0x0123456789abcdefULL, "0123456789abcdef"},
        {0xfedcba9876543210ULL, "fedcba9876543210"},
        {0xffffffffffffffffULL, "ffffffffffffffff"},
        {0xa0000000000000f9ULL, "a0000000000000f9"},
    };
    struct session s;

    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        struct tycho_req *r = calloc(1, sizeof(*r));
        unsigned long long next = ids[i].v;
        if (!r || tycho_req_init(r) < 0)
            return;
        tycho_req_assign_id(r, &next);
        is_str(r->id, ids[i].want, "a generated id is the counter in hex");
        ok(r->id_len == 16 && next == ids[i].v + 1, "the counter moves on");
        tycho_req_dispose(r);
        free(r);
    }
    session_start(&s);
    tycho_http_parse(&s.h, s.r, raw, sizeof(raw) - 1);
    if (ok(s.h.state == TYCHO_HTTP_DONE, "a request with X-Request-ID")) {
        unsigned long long next = 7;
        tycho_req_assign_id(s.r, &next);
        ok(s.r->id_len == 9 && memcmp(s.r->id, "abc-1.2:3", 9) == 0 && next == 7,
           "the client's id is taken, any case of the name");
    }
    session_end(&s);
}

static void test_write_response(void)
{
    struct tycho_buf out = {0};
    struct tycho_req *r = calloc(1, sizeof(*r));
    char date[48];

    tycho_http_date_line(date, sizeof(date), 0);
    is_str(date, DATE, "date line for the epoch");
    tycho_http_date_line(date, sizeof(date), 1700000000);
    is_str(date, "Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n", "date line for 1700000000");
    tycho_http_date_line(date, sizeof(date), 0);

    tycho_req_init(r);
    r->http_major = 1;
    r->http_minor = 1;
    r->res_body = "hello";
    r->res_body_len = 5;
    is_int(tycho_http_write_response(&out, r, date, true), TYCHO_OK, "write 200");
    out_is(&out,
           "HTTP/1.1 200 OK\r\nServer: tycho\r\n" DATE "Content-Length: 5\r\n" TEXT "\r\nhello",
           "200 with a body");

    r->is_head = true;
    tycho_http_write_response(&out, r, date, true);
    out_is(&out, "HTTP/1.1 200 OK\r\nServer: tycho\r\n" DATE "Content-Length: 5\r\n" TEXT "\r\n",
           "HEAD: same Content-Length, no body");
    r->is_head = false;

    tycho_http_write_response(&out, r, date, false);
    out_is(&out,
           "HTTP/1.1 200 OK\r\nServer: tycho\r\n" DATE "Content-Length: 5\r\n"
           "Connection: close\r\n" TEXT "\r\nhello",
           "keep_alive false: Connection: close");

    r->http_minor = 0;
    tycho_http_write_response(&out, r, date, true);
    out_is(&out,
           "HTTP/1.1 200 OK\r\nServer: tycho\r\n" DATE "Content-Length: 5\r\n"
           "Connection: keep-alive\r\n" TEXT "\r\nhello",
           "HTTP/1.0 kept alive: Connection: keep-alive");
    r->http_minor = 1;

    r->status = 201;
    r->res_flags = TYCHO_RES_CONTENT_TYPE | TYCHO_RES_SERVER;
    r->res_headers = (char *)"Content-Type: application/json\r\nServer: mine\r\nX-A: b\r\n";
    r->res_headers_len = strlen(r->res_headers);
    r->res_body = "{}";
    r->res_body_len = 2;
    tycho_http_write_response(&out, r, date, true);
    out_is(&out,
           "HTTP/1.1 201 Created\r\n" DATE "Content-Length: 2\r\n"
           "Content-Type: application/json\r\nServer: mine\r\nX-A: b\r\n\r\n{}",
           "handler headers, no default Server or Content-Type");

    r->status = 204;
    r->res_flags = 0;
    r->res_headers = NULL;
    r->res_headers_len = 0;
    tycho_http_write_response(&out, r, date, true);
    out_is(&out, "HTTP/1.1 204 No Content\r\nServer: tycho\r\n" DATE "\r\n",
           "204: no Content-Length, no body");

    r->status = 304;
    tycho_http_write_response(&out, r, date, false);
    out_is(&out, "HTTP/1.1 304 Not Modified\r\nServer: tycho\r\n" DATE "Connection: close\r\n\r\n",
           "304: no body");

    r->status = 200;
    r->res_body = NULL;
    r->res_body_len = 0;
    tycho_http_write_response(&out, r, date, true);
    out_is(&out, "HTTP/1.1 200 OK\r\nServer: tycho\r\n" DATE "Content-Length: 0\r\n\r\n",
           "empty body: Content-Length 0, no Content-Type");

    r->status = 299;
    tycho_http_write_response(&out, r, date, true);
    out_is(&out, "HTTP/1.1 299 Unknown\r\nServer: tycho\r\n" DATE "Content-Length: 0\r\n\r\n",
           "unknown status: reason Unknown");

    /* Appends after what is already there, including consumed bytes at the front. */
    r->status = 200;
    tycho_buf_puts(&out, "xxPREVIOUS");
    tycho_buf_consume(&out, 2);
    tycho_http_write_response(&out, r, date, true);
    out_is(&out,
           "PREVIOUSHTTP/1.1 200 OK\r\nServer: tycho\r\n" DATE "Content-Length: 0\r\n\r\n",
           "response appended after pending output");

    /* A large body is copied whole. */
    {
        static char body[100000];
        memset(body, 'z', sizeof(body));
        r->res_body = body;
        r->res_body_len = sizeof(body);
        tycho_http_write_response(&out, r, date, true);
        ok(out.len > sizeof(body) &&
               memcmp(out.data + out.off + out.len - sizeof(body), body, sizeof(body)) == 0,
           "100 kB body copied");
        ok(strstr(out.data + out.off, "Content-Length: 100000\r\n") != NULL,
           "100 kB Content-Length");
        tycho_buf_consume(&out, out.len);
    }

    tycho_req_dispose(r);
    free(r);
    tycho_buf_dispose(&out);
}

static void test_write_simple(void)
{
    struct tycho_buf out = {0};
    char busy[TYCHO_BUSY_BYTES];
    size_t n;

    is_int(tycho_http_write_simple(&out, 404, "", DATE, true, true), TYCHO_OK, "simple 404");
    out_is(&out,
           "HTTP/1.1 404 Not Found\r\nServer: tycho\r\n" DATE TEXT
           "Content-Length: 10\r\n\r\nNot Found\n",
           "simple 404 bytes");
    tycho_http_write_simple(&out, 405, "Allow: GET, HEAD\r\n", DATE, true, false);
    out_is(&out,
           "HTTP/1.1 405 Method Not Allowed\r\nServer: tycho\r\n" DATE TEXT
           "Content-Length: 19\r\nAllow: GET, HEAD\r\n\r\n",
           "simple 405 for HEAD: extra header, Content-Length, no body");
    tycho_http_write_simple(&out, 400, "", DATE, false, true);
    out_is(&out,
           "HTTP/1.1 400 Bad Request\r\nServer: tycho\r\n" DATE TEXT
           "Content-Length: 12\r\nConnection: close\r\n\r\nBad Request\n",
           "simple 400, closing");
    tycho_buf_dispose(&out);

    n = tycho_http_busy(busy, sizeof(busy), DATE);
    is_int(n, strlen(busy), "busy returns its length");
    is_str(busy,
           "HTTP/1.1 503 Service Unavailable\r\nServer: tycho\r\n" DATE "Retry-After: 1\r\n" TEXT
           "Content-Length: 20\r\nConnection: close\r\n\r\nService Unavailable\n",
           "busy 503 bytes");

    is_str(tycho_http_reason(200), "OK", "reason 200");
    is_str(tycho_http_reason(413), "Content Too Large", "reason 413");
    is_str(tycho_http_reason(431), "Request Header Fields Too Large", "reason 431");
    is_str(tycho_http_reason(505), "HTTP Version Not Supported", "reason 505");
    is_str(tycho_http_reason(999), "Unknown", "reason for an unknown code");
}

int main(void)
{
    memset(&cfg, 0, sizeof(cfg));
    tycho_config_defaults(&cfg);
    cfg.max_header_bytes = MAX_HEADER_BYTES;
    cfg.max_body_bytes = MAX_BODY_BYTES;
    tycho_http_global_init(&cfg);

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        check_parse(good[i].name, good[i].raw, strlen(good[i].raw), good[i].want);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        check_parse(bad[i].name, bad[i].raw, strlen(bad[i].raw), bad[i].want);
    for (size_t i = 0; i < sizeof(smuggle) / sizeof(smuggle[0]); i++) {
        const char *raw = smuggle[i].raw, *stop = strstr(raw, smuggle[i].stop);
        if (!ok(stop != NULL, "the stop marker is in the input"))
            continue;
        check_parse_limit(smuggle[i].name, raw, strlen(raw), smuggle[i].want,
                          (size_t)(stop - raw));
    }
    test_nul_bytes();
    test_chunk_line_bound();
    test_limit_after_trailers();
    test_limits();
    test_absolute_form_empty_path();
    test_req_context();
    test_request_id();
    test_is_token();
    test_long_parser_parts();
    test_write_response();
    test_write_simple();
    return test_summary();
}
