/*
 * test_oracle.c: self-test of the strict framing oracle in tests/fuzz/oracle.h (the differential
 * fuzz target's reference; it is test code, not the server's parser).
 *
 * A table of byte streams with the expected verdict, count of complete requests, their end
 * offsets and, on a reject, the offending offset: request line, header fields (obs-fold, bare
 * LF, CR not followed by LF, controls), body length (Content-Length, Transfer-Encoding and their
 * conflicts), chunked bodies (sizes, extensions, quoted strings, trailers) and pipelining. For
 * every case, every shorter prefix up to the offending byte must be ORACLE_END (incomplete is
 * not a reject), and for syntax errors the prefix through the offending byte must already be
 * the same reject. A second table does the same for oracle_frame_response (a backend's
 * response(s) to one request: status line, interim 1xx, HEAD / 204 / 304, body to EOF).
 * Ends with the harness line `N passed, M failed`.
 */
#include <stdio.h>
#include <string.h>

#include "../fuzz/oracle.h"
#include "harness.h"

#define S(lit) lit, sizeof(lit) - 1 /* data and length of a literal (may hold NUL) */
#define L(lit) (sizeof(lit) - 1)    /* an offset given as the literal before it */

#define GET "GET / HTTP/1.1\r\n\r\n"
#define POST "POST /p HTTP/1.1\r\n"
#define TEC "Transfer-Encoding: chunked\r\n"
#define CL5 POST "Content-Length: 5\r\n\r\nhello"
#define CHUNKED POST TEC "\r\n5\r\nhello\r\n0\r\n\r\n"
#define HEX POST TEC "\r\na\r\n0123456789\r\nA\r\n0123456789\r\n000\r\n\r\n"
#define TE_ODD POST "transfer-encoding: , CHUNKED ,\t\r\n\r\n0\r\n\r\n"
#define TRAILERS POST TEC "\r\n0\r\nX-T: 1\r\nY:\r\n\r\n"

enum { END = ORACLE_END, REJECT = ORACLE_REJECT, SYNTAX = 0, FRAMING = 1 };

struct tcase {
    const char *name;
    const char *data;
    size_t len;
    int verdict;
    size_t n;       /* complete requests */
    size_t ends[3]; /* their end offsets */
    size_t bad;     /* the offending offset on REJECT */
    int framing;    /* a body-length reject: decided only once the header section is complete */
};

static const struct tcase cases[] = {
    /* Valid streams, pipelining and empty lines. */
    { "empty input", S(""), END, 0, { 0 }, 0, 0 },
    { "one GET", S(GET), END, 1, { L(GET) }, 0, 0 },
    { "only empty lines", S("\r\n\r\n"), END, 0, { 0 }, 0, 0 },
    { "leading CRLFs", S("\r\n\r\n" GET), END, 1, { L("\r\n\r\n" GET) }, 0, 0 },
    { "two pipelined", S(GET CL5), END, 2, { L(GET), L(GET CL5) }, 0, 0 },
    { "three pipelined, CRLFs between", S(GET "\r\n" CL5 "\r\n\r\n" CHUNKED), END, 3,
      { L(GET), L(GET "\r\n" CL5), L(GET "\r\n" CL5 "\r\n\r\n" CHUNKED) }, 0, 0 },
    { "trailing CRLFs after a request", S(GET "\r\n\r\n"), END, 1, { L(GET) }, 0, 0 },
    { "HTTP/1.0 GET", S("GET / HTTP/1.0\r\n\r\n"), END, 1, { L("GET / HTTP/1.0\r\n\r\n") }, 0, 0 },
    { "tchar method, odd target", S("M-1!~ http://h/?a=b#c HTTP/1.1\r\n\r\n"), END, 1,
      { L("M-1!~ http://h/?a=b#c HTTP/1.1\r\n\r\n") }, 0, 0 },
    { "empty value, HTAB, obs-text", S("GET / HTTP/1.1\r\nA:\r\nB: \t\xc3\xa9 v\t\r\n\r\n"), END, 1,
      { L("GET / HTTP/1.1\r\nA:\r\nB: \t\xc3\xa9 v\t\r\n\r\n") }, 0, 0 },
    /* Content-Length. */
    { "CL body", S(CL5), END, 1, { L(CL5) }, 0, 0 },
    { "CL body of any bytes", S(POST "Content-Length: 4\r\n\r\n\0\r\n\xff"), END, 1,
      { L(POST "Content-Length: 4\r\n\r\n\0\r\n\xff") }, 0, 0 },
    { "CL 0", S(POST "Content-Length: 0\r\n\r\n"), END, 1,
      { L(POST "Content-Length: 0\r\n\r\n") }, 0, 0 },
    { "CL OWS, leading zeros, any case", S(POST "content-LENGTH: \t 007 \t\r\n\r\n1234567"), END,
      1, { L(POST "content-LENGTH: \t 007 \t\r\n\r\n1234567") }, 0, 0 },
    { "CL 2^53 accepted (body incomplete)", S(POST "Content-Length: 9007199254740992\r\n\r\nx"),
      END, 0, { 0 }, 0, 0 },
    /* Chunked. */
    { "chunked", S(CHUNKED), END, 1, { L(CHUNKED) }, 0, 0 },
    { "hex sizes, 000 last chunk", S(HEX), END, 1, { L(HEX) }, 0, 0 },
    { "TE any case, OWS, empty elements", S(TE_ODD), END, 1, { L(TE_ODD) }, 0, 0 },
    { "TE empty field + chunked field", S(POST "Transfer-Encoding:\r\n" TEC "\r\n0\r\n\r\n"), END,
      1, { L(POST "Transfer-Encoding:\r\n" TEC "\r\n0\r\n\r\n") }, 0, 0 },
    { "extensions", S(POST TEC "\r\n5;a=b\r\nhello\r\n0;last\r\n\r\n"), END, 1,
      { L(POST TEC "\r\n5;a=b\r\nhello\r\n0;last\r\n\r\n") }, 0, 0 },
    { "BWS and quoted-string", S(POST TEC "\r\n5 ; a = \"x y\"\r\nhello\r\n0\r\n\r\n"), END, 1,
      { L(POST TEC "\r\n5 ; a = \"x y\"\r\nhello\r\n0\r\n\r\n") }, 0, 0 },
    { "quoted-pairs, names without values",
      S(POST TEC "\r\n1 ;a ;b=\"q\\\"\\\\\t\xfe\";c\r\nX\r\n0\r\n\r\n"), END, 1,
      { L(POST TEC "\r\n1 ;a ;b=\"q\\\"\\\\\t\xfe\";c\r\nX\r\n0\r\n\r\n") }, 0, 0 },
    { "chunk data of any bytes", S(POST TEC "\r\n4\r\n\r\n\0\n\r\n0\r\n\r\n"), END, 1,
      { L(POST TEC "\r\n4\r\n\r\n\0\n\r\n0\r\n\r\n") }, 0, 0 },
    { "trailers", S(TRAILERS GET), END, 2, { L(TRAILERS), L(TRAILERS GET) }, 0, 0 },
    { "chunk size 2^53 accepted (data incomplete)", S(POST TEC "\r\n0020000000000000\r\nab"), END,
      0, { 0 }, 0, 0 },
    /* Incomplete at several points: END, not a reject. */
    { "incomplete request line", S("GET / HT"), END, 0, { 0 }, 0, 0 },
    { "incomplete lone CR", S("\r"), END, 0, { 0 }, 0, 0 },
    { "incomplete after CR of request line", S(GET "GET / HTTP/1.1\r"), END, 1, { L(GET) }, 0, 0 },
    { "incomplete CL body", S(GET POST "Content-Length: 5\r\n\r\nhel"), END, 1, { L(GET) }, 0, 0 },
    { "incomplete chunk size", S(POST TEC "\r\n5"), END, 0, { 0 }, 0, 0 },
    { "incomplete quoted ext", S(POST TEC "\r\n5;a=\"x\\"), END, 0, { 0 }, 0, 0 },
    { "incomplete chunk data", S(POST TEC "\r\n5\r\nhel"), END, 0, { 0 }, 0, 0 },
    { "incomplete trailer", S(POST TEC "\r\n0\r\nX: 1\r\n"), END, 0, { 0 }, 0, 0 },
    { "TE+CL undecided before the empty line", S(POST TEC "Content-Length: 5\r\n"), END, 0, { 0 },
      0, 0 },
    /* Line endings. */
    { "bare LF ends the request line", S("GET / HTTP/1.1\n\r\n"), REJECT, 0, { 0 },
      L("GET / HTTP/1.1"), SYNTAX },
    { "bare LF as a leading empty line", S("\n" GET), REJECT, 0, { 0 }, 0, SYNTAX },
    { "bare LF ends a field line", S("GET / HTTP/1.1\r\nA: b\n\r\n"), REJECT, 0, { 0 },
      L("GET / HTTP/1.1\r\nA: b"), SYNTAX },
    { "bare LF ends the header section", S("GET / HTTP/1.1\r\nA: b\r\n\n"), REJECT, 0, { 0 },
      L("GET / HTTP/1.1\r\nA: b\r\n"), SYNTAX },
    { "bare LF in a method", S("GE\nT / HTTP/1.1\r\n\r\n"), REJECT, 0, { 0 }, L("GE"), SYNTAX },
    { "bare LF between requests", S(GET "\n" GET), REJECT, 1, { L(GET) }, L(GET), SYNTAX },
    { "CR then X in the request line", S("GET / HTTP/1.1\rX\n\r\n"), REJECT, 0, { 0 },
      L("GET / HTTP/1.1\r"), SYNTAX },
    { "CR then X in a field value", S("GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"), REJECT, 0, { 0 },
      L("GET / HTTP/1.1\r\nA: b\r"), SYNTAX },
    { "CR then X as an empty line", S("\rX"), REJECT, 0, { 0 }, 1, SYNTAX },
    /* Request line. */
    { "HTTX/1.1", S("GET / HTTX/1.1\r\n\r\n"), REJECT, 0, { 0 }, L("GET / HTT"), SYNTAX },
    { "lower-case http", S("GET / http/1.1\r\n\r\n"), REJECT, 0, { 0 }, L("GET / "), SYNTAX },
    { "two-digit major", S("GET / HTTP/11.1\r\n\r\n"), REJECT, 0, { 0 }, L("GET / HTTP/1"),
      SYNTAX },
    { "junk after the version", S("GET / HTTP/1.1x\r\n\r\n"), REJECT, 0, { 0 },
      L("GET / HTTP/1.1"), SYNTAX },
    { "two spaces after the method", S("GET  / HTTP/1.1\r\n\r\n"), REJECT, 0, { 0 }, L("GET "),
      SYNTAX },
    { "two spaces after the target", S("GET /  HTTP/1.1\r\n\r\n"), REJECT, 0, { 0 }, L("GET / "),
      SYNTAX },
    { "no method", S(" / HTTP/1.1\r\n\r\n"), REJECT, 0, { 0 }, 0, SYNTAX },
    { "non-tchar in the method", S("G(T / HTTP/1.1\r\n\r\n"), REJECT, 0, { 0 }, 1, SYNTAX },
    { "obs-text in the target", S("GET /\x80\xff HTTP/1.1\r\n\r\n"), END, 1,
      { L("GET /\x80\xff HTTP/1.1\r\n\r\n") }, 0, SYNTAX },
    { "DEL in the target", S("GET /\x7f HTTP/1.1\r\n\r\n"), REJECT, 0, { 0 }, L("GET /"),
      SYNTAX },
    { "DEL first in the target", S("GET \x7f HTTP/1.1\r\n\r\n"), REJECT, 0, { 0 }, L("GET "),
      SYNTAX },
    { "HTAB in the target", S("GET /a\tb HTTP/1.1\r\n\r\n"), REJECT, 0, { 0 }, L("GET /a"),
      SYNTAX },
    { "second request bad", S(GET "XYZ\r\n\r\n"), REJECT, 1, { L(GET) }, L(GET "XYZ"), SYNTAX },
    /* Field lines. */
    { "obs-fold", S("GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"), REJECT, 0, { 0 },
      L("GET / HTTP/1.1\r\nA: b\r\n"), SYNTAX },
    { "obs-fold with HTAB", S("GET / HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n"), REJECT, 0, { 0 },
      L("GET / HTTP/1.1\r\nA: b\r\n"), SYNTAX },
    { "space before the colon", S("GET / HTTP/1.1\r\nA : b\r\n\r\n"), REJECT, 0, { 0 },
      L("GET / HTTP/1.1\r\nA"), SYNTAX },
    { "empty field name", S("GET / HTTP/1.1\r\n: b\r\n\r\n"), REJECT, 0, { 0 },
      L("GET / HTTP/1.1\r\n"), SYNTAX },
    { "NUL in a value", S("GET / HTTP/1.1\r\nA: b\0c\r\n\r\n"), REJECT, 0, { 0 },
      L("GET / HTTP/1.1\r\nA: b"), SYNTAX },
    { "DEL in a value", S("GET / HTTP/1.1\r\nA: \x7f\r\n\r\n"), REJECT, 0, { 0 },
      L("GET / HTTP/1.1\r\nA: "), SYNTAX },
    /* Body length. */
    { "HTTP/1.0 + chunked", S("POST / HTTP/1.0\r\nA: 1\r\n" TEC "\r\n0\r\n\r\n"), REJECT, 0,
      { 0 }, L("POST / HTTP/1.0\r\nA: 1\r\n"), FRAMING },
    { "TE + CL", S(POST TEC "Content-Length: 5\r\n\r\n"), REJECT, 0, { 0 }, L(POST TEC), FRAMING },
    { "CL + TE", S(POST "Content-Length: 5\r\n" TEC "\r\n"), REJECT, 0, { 0 },
      L(POST "Content-Length: 5\r\n"), FRAMING },
    { "two CL fields, same value", S(POST "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
      REJECT, 0, { 0 }, L(POST "Content-Length: 5\r\n"), FRAMING },
    { "CL list", S(POST "Content-Length: 5, 5\r\n\r\nhello"), REJECT, 0, { 0 }, L(POST), FRAMING },
    { "CL not digits", S(POST "Content-Length: 5a\r\n\r\n"), REJECT, 0, { 0 }, L(POST), FRAMING },
    { "CL negative", S(POST "Content-Length: -1\r\n\r\n"), REJECT, 0, { 0 }, L(POST), FRAMING },
    { "CL empty", S(POST "Content-Length: \r\n\r\n"), REJECT, 0, { 0 }, L(POST), FRAMING },
    { "CL over 2^53", S(POST "Content-Length: 9007199254740993\r\n\r\n"), REJECT, 0, { 0 },
      L(POST), FRAMING },
    { "TE chunked, chunked", S(POST "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
      REJECT, 0, { 0 }, L(POST), FRAMING },
    { "TE gzip, chunked", S(POST "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), REJECT, 0,
      { 0 }, L(POST), FRAMING },
    { "TE chunked then gzip fields", S(POST TEC "Transfer-Encoding: gzip\r\n\r\n0\r\n\r\n"),
      REJECT, 0, { 0 }, L(POST TEC), FRAMING },
    { "TE only empty", S(POST "Transfer-Encoding: ,\r\n\r\n"), REJECT, 0, { 0 }, L(POST),
      FRAMING },
    { "TE chunked with a parameter", S(POST "Transfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n"),
      REJECT, 0, { 0 }, L(POST), FRAMING },
    /* Chunked syntax. */
    { "chunk data then XX", S(POST TEC "\r\n5\r\nhelloXX"), REJECT, 0, { 0 },
      L(POST TEC "\r\n5\r\nhello"), SYNTAX },
    { "5 CR X hello", S(POST TEC "\r\n5\rXhello\r\n0\r\n\r\n"), REJECT, 0, { 0 },
      L(POST TEC "\r\n5\r"), SYNTAX },
    { "0 CRLF CR X", S(POST TEC "\r\n0\r\n\rX"), REJECT, 0, { 0 }, L(POST TEC "\r\n0\r\n\r"),
      SYNTAX },
    { "whitespace before CRLF", S(POST TEC "\r\n5 \r\nhello\r\n0\r\n\r\n"), REJECT, 0, { 0 },
      L(POST TEC "\r\n5 "), SYNTAX },
    { "whitespace after an ext value", S(POST TEC "\r\n5;a=b \r\nhello\r\n0\r\n\r\n"), REJECT, 0,
      { 0 }, L(POST TEC "\r\n5;a=b "), SYNTAX },
    { "LF inside an extension", S(POST TEC "\r\n5;a\nb\r\nhello\r\n0\r\n\r\n"), REJECT, 0, { 0 },
      L(POST TEC "\r\n5;a"), SYNTAX },
    { "LF inside a quoted ext value", S(POST TEC "\r\n5;a=\"x\ny\"\r\nhello\r\n0\r\n\r\n"), REJECT,
      0, { 0 }, L(POST TEC "\r\n5;a=\"x"), SYNTAX },
    { "DEL in a quoted-pair", S(POST TEC "\r\n5;a=\"\\\x7f\"\r\nhello\r\n0\r\n\r\n"), REJECT, 0,
      { 0 }, L(POST TEC "\r\n5;a=\"\\"), SYNTAX },
    { "empty ext name", S(POST TEC "\r\n5;=b\r\nhello\r\n0\r\n\r\n"), REJECT, 0, { 0 },
      L(POST TEC "\r\n5;"), SYNTAX },
    { "empty ext value", S(POST TEC "\r\n5;a=\r\nhello\r\n0\r\n\r\n"), REJECT, 0, { 0 },
      L(POST TEC "\r\n5;a="), SYNTAX },
    { "no chunk size", S(POST TEC "\r\n\r\n"), REJECT, 0, { 0 }, L(POST TEC "\r\n"), SYNTAX },
    { "non-hex chunk size", S(POST TEC "\r\ng\r\n"), REJECT, 0, { 0 }, L(POST TEC "\r\n"),
      SYNTAX },
    { "chunk size 2^53 + 1", S(POST TEC "\r\n20000000000001\r\n"), REJECT, 0, { 0 },
      L(POST TEC "\r\n2000000000000"), SYNTAX },
    { "17 significant hex digits", S(POST TEC "\r\nfffffffffffffffff\r\n"), REJECT, 0, { 0 },
      L(POST TEC "\r\nfffffffffffff"), SYNTAX },
    { "trailer obs-fold", S(POST TEC "\r\n0\r\nT: 1\r\n x\r\n\r\n"), REJECT, 0, { 0 },
      L(POST TEC "\r\n0\r\nT: 1\r\n"), SYNTAX },
    { "trailer bare LF", S(POST TEC "\r\n0\r\nT: 1\n\r\n"), REJECT, 0, { 0 },
      L(POST TEC "\r\n0\r\nT: 1"), SYNTAX },
};

/* Every prefix up to the offending byte is END with no more requests than expected; for a
   syntax reject, the prefix through the offending byte is already that reject. */
static int prefixes_ok(const struct tcase *t)
{
    const unsigned char *d = (const unsigned char *)t->data;
    size_t limit = t->verdict == REJECT ? t->bad : t->len, n, bad, ends[3];

    for (size_t k = 0; k < limit; k++) {
        size_t want = 0;

        while (want < t->n && t->ends[want] <= k)
            want++;
        if (oracle_frame(d, k, ends, 3, &n, NULL) != ORACLE_END || n != want) {
            printf("     prefix of %zu bytes: not END with %zu requests\n", k, want);
            return 0;
        }
    }
    if (t->verdict == REJECT && t->framing == SYNTAX &&
        (oracle_frame(d, t->bad + 1, ends, 3, &n, &bad) != ORACLE_REJECT || n != t->n ||
         bad != t->bad)) {
        printf("     prefix through the offending byte is not the reject\n");
        return 0;
    }
    return 1;
}

static void test_table(void)
{
    char what[160];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct tcase *t = &cases[i];
        size_t ends[3] = { 0, 0, 0 }, n = 99, bad = 99;
        enum oracle_verdict v;

        v = oracle_frame((const unsigned char *)t->data, t->len, ends, 3, &n, &bad);
        snprintf(what, sizeof what, "%s: verdict", t->name);
        is_int(v, t->verdict, what);
        snprintf(what, sizeof what, "%s: complete requests", t->name);
        is_int(n, t->n, what);
        for (size_t j = 0; j < t->n && j < 3; j++) {
            snprintf(what, sizeof what, "%s: end of request %zu", t->name, j);
            is_int(ends[j], t->ends[j], what);
        }
        if (t->verdict == REJECT) {
            snprintf(what, sizeof what, "%s: offending offset", t->name);
            is_int(bad, t->bad, what);
        }
        snprintf(what, sizeof what, "%s: prefixes", t->name);
        ok(prefixes_ok(t), what);
    }
}

/* max_ends caps what is stored, not the count; ends and bad_at may be NULL. */
static void test_api_edges(void)
{
    static const char three[] = GET GET GET;
    size_t ends[2] = { 7, 7 }, n = 0;

    is_int(oracle_frame((const unsigned char *)three, L(three), ends, 1, &n, NULL), ORACLE_END,
           "max_ends 1: END");
    is_int(n, 3, "max_ends 1: all three counted");
    is_int(ends[0], L(GET), "max_ends 1: first end stored");
    is_int(ends[1], 7, "max_ends 1: nothing stored past max_ends");
    is_int(oracle_frame((const unsigned char *)three, L(three), NULL, 0, &n, NULL), ORACLE_END,
           "NULL ends: END");
    is_int(n, 3, "NULL ends: all three counted");
    is_int(oracle_frame((const unsigned char *)"\n", 1, NULL, 0, &n, NULL), ORACLE_REJECT,
           "NULL bad_at: REJECT");
}

/* Responses to one request (oracle_frame_response). */
#define OK200 "HTTP/1.1 200 OK\r\n"
#define RCL5 OK200 "Content-Length: 5\r\n\r\nhello"
#define RCHUNKED OK200 TEC "\r\n5;a=b ; c=\"d e\"\r\nhello\r\n0;z\r\nX-T: 1\r\nY:\r\n\r\n"
#define R100 "HTTP/1.1 100 Continue\r\n\r\n"
#define R103 "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
#define RTE_ODD OK200 "Transfer-Encoding: , CHUNKED ,\r\n\r\n0\r\n\r\n"
#define RREASON "HTTP/1.1 200 O\tK \xc3\xa9\r\nContent-Length: 0\r\n\r\n"
#define R204 "HTTP/1.1 204 No Content\r\n\r\n"

enum {
    INCOMPLETE = ORACLE_RES_INCOMPLETE,
    COMPLETE = ORACLE_RES_COMPLETE,
    EOF_BODY = ORACLE_RES_EOF_BODY,
    RREJECT = ORACLE_RES_REJECT
};

struct rcase {
    const char *name;
    const char *data;
    size_t len;
    int head;    /* the request was HEAD */
    int verdict;
    size_t end;  /* *end: see oracle_frame_response */
    size_t hend; /* a body-length reject: the end of the head, where it is decided; else 0 */
};

static const struct rcase rcases[] = {
    /* Final responses with a length. */
    { "CL body", S(RCL5), 0, COMPLETE, L(RCL5), 0 },
    { "CL body, bytes after it", S(RCL5 "XYZ"), 0, COMPLETE, L(RCL5), 0 },
    { "CL 0", S(OK200 "Content-Length: 0\r\n\r\n"), 0, COMPLETE,
      L(OK200 "Content-Length: 0\r\n\r\n"), 0 },
    { "CL OWS, any case, body of any bytes", S(OK200 "content-length:\t 3 \r\n\r\n\r\n\0"), 0,
      COMPLETE, L(OK200 "content-length:\t 3 \r\n\r\n\r\n\0"), 0 },
    { "chunked, extensions, trailers", S(RCHUNKED "HTTP"), 0, COMPLETE, L(RCHUNKED), 0 },
    { "TE CHUNKED, OWS, empty elements", S(RTE_ODD), 0, COMPLETE, L(RTE_ODD), 0 },
    { "HTTP/1.9, 599, no reason", S("HTTP/1.9 599\r\nContent-Length: 0\r\n\r\n"), 0, COMPLETE,
      L("HTTP/1.9 599\r\nContent-Length: 0\r\n\r\n"), 0 },
    { "SP then empty reason", S("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"), 0, COMPLETE,
      L("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"), 0 },
    { "reason with HTAB, SP, obs-text", S(RREASON), 0, COMPLETE, L(RREASON), 0 },
    /* Interim responses. */
    { "100 then 200", S(R100 RCL5), 0, COMPLETE, L(R100 RCL5), 0 },
    { "100, 103 then 204", S(R100 R103 R204 "junk"), 0, COMPLETE, L(R100 R103 R204), 0 },
    { "1xx framing fields ignored", S("HTTP/1.1 199\r\nContent-Length: 9\r\n" TEC "\r\n" RCL5), 0,
      COMPLETE, L("HTTP/1.1 199\r\nContent-Length: 9\r\n" TEC "\r\n" RCL5), 0 },
    { "1xx on HEAD, then the head", S(R100 OK200 "Content-Length: 5\r\n\r\n"), 1, COMPLETE,
      L(R100 OK200 "Content-Length: 5\r\n\r\n"), 0 },
    /* No body whatever the fields say. */
    { "HEAD with CL", S(OK200 "Content-Length: 5\r\n\r\nhello"), 1, COMPLETE,
      L(OK200 "Content-Length: 5\r\n\r\n"), 0 },
    { "HEAD with TE + CL", S(OK200 TEC "Content-Length: x\r\n\r\n"), 1, COMPLETE,
      L(OK200 TEC "Content-Length: x\r\n\r\n"), 0 },
    { "304 with CL", S("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"), 0, COMPLETE,
      L("HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"), 0 },
    { "204 with TE chunked", S("HTTP/1.1 204\r\n" TEC "\r\n0\r\n\r\n"), 0, COMPLETE,
      L("HTTP/1.1 204\r\n" TEC "\r\n"), 0 },
    /* Body to the end of the connection. */
    { "EOF body", S(OK200 "Server: x\r\n\r\nabc"), 0, EOF_BODY, L(OK200 "Server: x\r\n\r\n"), 0 },
    { "EOF body, HTTP/1.0, nothing yet", S("HTTP/1.0 404 Nope\r\n\r\n"), 0, EOF_BODY,
      L("HTTP/1.0 404 Nope\r\n\r\n"), 0 },
    { "EOF body after 100", S(R100 "HTTP/1.1 500 E\r\n\r\n"), 0, EOF_BODY,
      L(R100 "HTTP/1.1 500 E\r\n\r\n"), 0 },
    /* Incomplete. */
    { "empty", S(""), 0, INCOMPLETE, 0, 0 },
    { "partial status line", S("HTTP/1.1 20"), 0, INCOMPLETE, 0, 0 },
    { "status line CR", S("HTTP/1.1 200 OK\r"), 0, INCOMPLETE, 0, 0 },
    { "partial head", S(OK200 "Content-Length: 5\r\n"), 0, INCOMPLETE, 0, 0 },
    { "partial CL body", S(OK200 "Content-Length: 5\r\n\r\nhell"), 0, INCOMPLETE, 0, 0 },
    { "CL 2^53 accepted", S(OK200 "Content-Length: 9007199254740992\r\n\r\nx"), 0, INCOMPLETE,
      0, 0 },
    { "chunked without the final CRLF", S(OK200 TEC "\r\n0\r\nX: 1\r\n"), 0, INCOMPLETE, 0, 0 },
    { "only a 100", S(R100), 0, INCOMPLETE, L(R100), 0 },
    { "100 then a partial 200", S(R100 "HTTP/1.1 2"), 0, INCOMPLETE, L(R100), 0 },
    /* Status line. */
    { "leading CRLF", S("\r\n" RCL5), 0, RREJECT, 0, 0 },
    { "leading LF", S("\n" RCL5), 0, RREJECT, 0, 0 },
    { "101", S("HTTP/1.1 101 Switching Protocols\r\n\r\n"), 0, RREJECT, L("HTTP/1.1 10"), 0 },
    { "100 then 101", S(R100 "HTTP/1.1 101\r\n\r\n"), 0, RREJECT, L(R100 "HTTP/1.1 10"), 0 },
    { "099", S("HTTP/1.1 099 X\r\n\r\n"), 0, RREJECT, L("HTTP/1.1 "), 0 },
    { "600", S("HTTP/1.1 600 X\r\n\r\n"), 0, RREJECT, L("HTTP/1.1 "), 0 },
    { "HTTP/2.0", S("HTTP/2.0 200 OK\r\n\r\n"), 0, RREJECT, L("HTTP/"), 0 },
    { "HTTP/1.10", S("HTTP/1.10 200 OK\r\n\r\n"), 0, RREJECT, L("HTTP/1.1"), 0 },
    { "lower-case http", S("http/1.1 200 OK\r\n\r\n"), 0, RREJECT, 0, 0 },
    { "two spaces before the code", S("HTTP/1.1  200 OK\r\n\r\n"), 0, RREJECT, L("HTTP/1.1 "),
      0 },
    { "code 20", S("HTTP/1.1 20\r\n\r\n"), 0, RREJECT, L("HTTP/1.1 20"), 0 },
    { "code 20 then SP", S("HTTP/1.1 20 OK\r\n\r\n"), 0, RREJECT, L("HTTP/1.1 20"), 0 },
    { "code 0200", S("HTTP/1.1 0200 OK\r\n\r\n"), 0, RREJECT, L("HTTP/1.1 "), 0 },
    { "code 2000", S("HTTP/1.1 2000 OK\r\n\r\n"), 0, RREJECT, L("HTTP/1.1 200"), 0 },
    { "control byte in the reason", S("HTTP/1.1 200 O\x01K\r\n\r\n"), 0, RREJECT,
      L("HTTP/1.1 200 O"), 0 },
    { "DEL in the reason", S("HTTP/1.1 200 \x7f\r\n\r\n"), 0, RREJECT, L("HTTP/1.1 200 "), 0 },
    { "bare LF after the status line", S("HTTP/1.1 200 OK\n\r\n"), 0, RREJECT,
      L("HTTP/1.1 200 OK"), 0 },
    { "bare LF after the code", S("HTTP/1.1 200\n\r\n"), 0, RREJECT, L("HTTP/1.1 200"), 0 },
    { "CR X after the status line", S("HTTP/1.1 200 OK\rX\n\r\n"), 0, RREJECT,
      L("HTTP/1.1 200 OK\r"), 0 },
    /* Field lines. */
    { "obs-fold", S(OK200 "A: b\r\n c\r\n\r\n"), 0, RREJECT, L(OK200 "A: b\r\n"), 0 },
    { "space before the colon", S(OK200 "A : b\r\n\r\n"), 0, RREJECT, L(OK200 "A"), 0 },
    { "bare LF ends the head", S(OK200 "A: b\r\n\n"), 0, RREJECT, L(OK200 "A: b\r\n"), 0 },
    { "bad field in a 100", S("HTTP/1.1 100\r\nA\r\n\r\n" RCL5), 0, RREJECT,
      L("HTTP/1.1 100\r\nA"), 0 },
    /* Body length (decided once the head is complete). */
    { "TE + CL", S(OK200 TEC "Content-Length: 5\r\n\r\n"), 0, RREJECT, L(OK200 TEC),
      L(OK200 TEC "Content-Length: 5\r\n\r\n") },
    { "CL + TE", S(OK200 "Content-Length: 5\r\n" TEC "\r\n"), 0, RREJECT,
      L(OK200 "Content-Length: 5\r\n"), L(OK200 "Content-Length: 5\r\n" TEC "\r\n") },
    { "TE on HTTP/1.0", S("HTTP/1.0 200 OK\r\n" TEC "\r\n0\r\n\r\n"), 0, RREJECT,
      L("HTTP/1.0 200 OK\r\n"), L("HTTP/1.0 200 OK\r\n" TEC "\r\n") },
    { "TE chunked, gzip", S(OK200 "Transfer-Encoding: chunked, gzip\r\n\r\n"), 0, RREJECT,
      L(OK200), L(OK200 "Transfer-Encoding: chunked, gzip\r\n\r\n") },
    { "TE gzip, chunked", S(OK200 "Transfer-Encoding: gzip, chunked\r\n\r\n"), 0, RREJECT,
      L(OK200), L(OK200 "Transfer-Encoding: gzip, chunked\r\n\r\n") },
    { "two TE fields chunked", S(OK200 TEC TEC "\r\n0\r\n\r\n"), 0, RREJECT, L(OK200 TEC),
      L(OK200 TEC TEC "\r\n") },
    { "TE gzip alone", S(OK200 "Transfer-Encoding: gzip\r\n\r\nabc"), 0, RREJECT, L(OK200),
      L(OK200 "Transfer-Encoding: gzip\r\n\r\n") },
    { "two CL fields", S(OK200 "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"), 0, RREJECT,
      L(OK200 "Content-Length: 5\r\n"), L(OK200 "Content-Length: 5\r\nContent-Length: 5\r\n\r\n") },
    { "CL not digits", S(OK200 "Content-Length: +5\r\n\r\nhello"), 0, RREJECT, L(OK200),
      L(OK200 "Content-Length: +5\r\n\r\n") },
    { "CL over 2^53", S(OK200 "Content-Length: 9007199254740993\r\n\r\n"), 0, RREJECT, L(OK200),
      L(OK200 "Content-Length: 9007199254740993\r\n\r\n") },
    /* Chunked syntax. */
    { "chunk data then XX", S(OK200 TEC "\r\n5\r\nhelloXX"), 0, RREJECT,
      L(OK200 TEC "\r\n5\r\nhello"), 0 },
    { "chunk size not hex", S(OK200 TEC "\r\nz\r\n"), 0, RREJECT, L(OK200 TEC "\r\n"), 0 },
    { "trailer bare LF", S(OK200 TEC "\r\n0\r\nT: 1\n\r\n"), 0, RREJECT,
      L(OK200 TEC "\r\n0\r\nT: 1"), 0 },
};

/* Every prefix before the point of decision is INCOMPLETE: before the end (COMPLETE,
   EOF_BODY), through the offending byte (a syntax reject) or before the end of the head (a
   body-length reject). The prefix that adds the offending byte (or completes the head) is
   already the same reject, and a COMPLETE or EOF_BODY prefix of exactly end bytes is the same. */
static int rprefixes_ok(const struct rcase *t)
{
    const unsigned char *d = (const unsigned char *)t->data;
    size_t limit, e = 0;
    enum oracle_response v;

    if (t->verdict == INCOMPLETE)
        limit = t->len;
    else if (t->verdict == RREJECT)
        limit = t->hend ? t->hend : t->end + 1;
    else
        limit = t->end;
    for (size_t k = 0; k < limit; k++)
        if ((v = oracle_frame_response(d, k, t->head, &e)) != ORACLE_RES_INCOMPLETE) {
            printf("     prefix of %zu bytes: %d, not INCOMPLETE\n", k, (int)v);
            return 0;
        }
    if (t->verdict != INCOMPLETE &&
        ((int)(v = oracle_frame_response(d, limit, t->head, &e)) != t->verdict || e != t->end)) {
        printf("     prefix of %zu bytes: %d at %zu\n", limit, (int)v, e);
        return 0;
    }
    return 1;
}

static void test_responses(void)
{
    char what[160];

    for (size_t i = 0; i < sizeof rcases / sizeof rcases[0]; i++) {
        const struct rcase *t = &rcases[i];
        size_t end = 99999;
        enum oracle_response v;

        v = oracle_frame_response((const unsigned char *)t->data, t->len, t->head, &end);
        snprintf(what, sizeof what, "response %s: verdict", t->name);
        is_int(v, t->verdict, what);
        snprintf(what, sizeof what, "response %s: end", t->name);
        is_int(end, t->end, what);
        snprintf(what, sizeof what, "response %s: prefixes", t->name);
        ok(rprefixes_ok(t), what);
    }
}

int main(void)
{
    test_table();
    test_api_edges();
    test_responses();
    return test_summary();
}
