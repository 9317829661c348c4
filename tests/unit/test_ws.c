/*
 * test_ws.c: unit tests for the WebSocket protocol module (http/ws.[ch]).
 *
 * The handshake: requests parsed by the real glue (request.c), then checked;
 * the accept value of RFC 6455 §1.3; each missing or bad header and its
 * status; the 101 answer's exact bytes.
 *
 * A connection: client frames are built here by hand (masked, any length,
 * any bits), fed to a struct tycho_ws, and what comes out is written down
 * as one line of text: each message (kind, length, bytes), the output in
 * hex, whether it is closed, the close codes and the violation. Each case is
 * fed in one piece, a byte at a time and (when short) split in two at every
 * byte, and all must give the same text, which must hold what the case
 * expects. Then the server's own frames, byte-exact. Single-threaded. Ends
 * with the harness line `N passed, M failed`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/tycho.h"
#include "harness.h"
#include "http/http.h"
#include "http/ws.h"

static struct tycho_config cfg;

/* ---- building client frames ------------------------------------------------------------- */

/* A growing byte string. */
struct bytes {
    unsigned char *p;
    size_t len, cap;
};

static void put(struct bytes *b, const void *src, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            abort();
    }
    if (n)
        memcpy(b->p + b->len, src, n);
    b->len += n;
}

static const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Appends a frame: first byte b0 (FIN, RSV, opcode) as given; masked unless b0 has bit 8 set. */
static void frame_ex(struct bytes *b, unsigned b0, const void *payload, size_t n, bool masked)
{
    unsigned char h[14];
    size_t hl = 2;
    const unsigned char *p = payload;

    h[0] = (unsigned char)b0;
    if (n < 126) {
        h[1] = (unsigned char)n;
    } else if (n < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(n >> 8);
        h[3] = (unsigned char)n;
        hl = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    if (masked) {
        h[1] |= 0x80;
        memcpy(h + hl, key, 4);
        hl += 4;
    }
    put(b, h, hl);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i] ^ (masked ? key[i & 3] : 0);
        put(b, &c, 1);
    }
}

#define FIN 0x80
#define TEXT 0x1
#define BINARY 0x2
#define CONT 0x0
#define CLOSE 0x8
#define PING 0x9
#define PONG 0xA

static void frame(struct bytes *b, unsigned b0, const char *payload, size_t n)
{
    frame_ex(b, b0, payload, n, true);
}

static void text(struct bytes *b, unsigned b0, const char *s)
{
    frame(b, b0, s, strlen(s));
}

/* A close frame's payload: code (0: none) and reason. */
static void close_frame(struct bytes *b, unsigned code, const char *reason)
{
    char p[128];
    size_t n = 0;

    if (code) {
        p[0] = (char)(code >> 8);
        p[1] = (char)code;
        n = 2 + strlen(reason);
        memcpy(p + 2, reason, n - 2);
    }
    frame(b, FIN | CLOSE, p, n);
}

/* ---- running a connection and writing down what it did ---------------------------------- */

struct transcript {
    char *text;
    size_t len, cap;
};

static void say(struct transcript *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n) * 2 + 256;
        t->text = realloc(t->text, t->cap);
        if (!t->text)
            abort();
    }
    memcpy(t->text + t->len, s, n);
    t->len += n;
    t->text[t->len] = '\0';
}

static void says(struct transcript *t, const char *s)
{
    say(t, s, strlen(s));
}

static void say_hex(struct transcript *t, const unsigned char *p, size_t n)
{
    char h[4];

    for (size_t i = 0; i < n; i++) {
        snprintf(h, sizeof h, "%02x", p[i]);
        say(t, h, 2);
    }
}

/* Short bytes as themselves when printable, long ones as a length and a hash. */
static void say_data(struct transcript *t, const char *p, size_t n)
{
    char num[64];
    uint32_t h = 2166136261u;

    if (n <= 40) {
        say(t, "\"", 1);
        say_hex(t, (const unsigned char *)p, n);
        say(t, "\"", 1);
        return;
    }
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 16777619u;
    snprintf(num, sizeof num, "#%08x", h);
    says(t, num);
}

static void take_all(struct tycho_ws *ws, struct transcript *t)
{
    struct tycho_ws_msg m;
    char num[64];

    while (tycho_ws_next(ws, &m)) {
        snprintf(num, sizeof num, "%s%zu:", m.kind == TYCHO_WS_TEXT ? "T" : "B", m.len);
        says(t, num);
        say_data(t, m.data, m.len);
        says(t, " ");
    }
}

/* Feeds input in pieces cut at the given points, and writes down the outcome. */
static char *run_cut(const struct tycho_ws_limits *lim, const struct bytes *in,
                     const size_t *cuts, size_t ncuts)
{
    struct tycho_ws *ws = tycho_ws_new(lim);
    struct tycho_buf out = {0};
    struct transcript t = {0};
    size_t at = 0;
    char num[160];

    if (!ws)
        abort();
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : in->len;

        if (tycho_ws_feed(ws, (const char *)in->p + at, end - at) < 0)
            says(&t, "FEED-ERROR ");
        at = end;
        take_all(ws, &t);
        if (tycho_ws_output(ws, &out) < 0)
            says(&t, "OUTPUT-ERROR ");
    }
    says(&t, "out=");
    say_hex(&t, (const unsigned char *)out.data + out.off, out.len);
    snprintf(num, sizeof num, " closed=%d peer=%d:", tycho_ws_closed(ws), tycho_ws_peer_code(ws));
    says(&t, num);
    says(&t, tycho_ws_peer_reason(ws, NULL));
    snprintf(num, sizeof num, " sent=%d why=%s", tycho_ws_sent_code(ws),
             tycho_ws_violation(ws) ? tycho_ws_violation(ws) : "-");
    says(&t, num);
    tycho_buf_dispose(&out);
    tycho_ws_free(ws);
    return t.text;
}

/*
 * Feeds in one piece, byte by byte and (below 600 bytes) split at every point; checks that all
 * agree and that the outcome contains each of the want strings. Returns the outcome.
 */
static char *run_case(const char *name, const struct tycho_ws_limits *lim, const struct bytes *in,
                      const char *const *want)
{
    char *whole = run_cut(lim, in, NULL, 0), *other;
    size_t *cuts = malloc((in->len + 1) * sizeof *cuts);
    char what[256];
    bool same = true;

    for (size_t i = 0; i + 1 < in->len; i++)
        cuts[i] = i + 1;
    other = run_cut(lim, in, cuts, in->len ? in->len - 1 : 0);
    snprintf(what, sizeof what, "%s: byte by byte as in one piece", name);
    if (!ok(strcmp(whole, other) == 0, what))
        printf("     whole: %s\n     bytes: %s\n", whole, other);
    free(other);
    for (size_t c = 1; in->len < 600 && c < in->len && same; c++) {
        other = run_cut(lim, in, &c, 1);
        same = strcmp(whole, other) == 0;
        if (!same)
            printf("     split at %zu: %s\n", c, other);
        free(other);
    }
    snprintf(what, sizeof what, "%s: split in two anywhere as in one piece", name);
    ok(same, what);
    for (; want && *want; want++) {
        snprintf(what, sizeof what, "%s: has %.150s", name, *want);
        if (!ok(strstr(whole, *want) != NULL, what))
            printf("     got: %s\n", whole);
    }
    free(cuts);
    return whole;
}

static const struct tycho_ws_limits roomy = {1 << 20, 1 << 20};

/* Runs the case and frees what it gave. */
static void expect(const char *name, const struct tycho_ws_limits *lim, struct bytes *in,
                   const char *const *want)
{
    free(run_case(name, lim, in, want));
    free(in->p);
    *in = (struct bytes){0};
}

#define WANT(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Hex of a close frame we send: code and reason (a static buffer, until the next call). */
static const char *close_hex(unsigned code, const char *reason)
{
    static char buf[512];
    struct transcript t = {0};
    unsigned char h[4] = {0x88, (unsigned char)(2 + strlen(reason)), (unsigned char)(code >> 8),
                          (unsigned char)code};

    say_hex(&t, h, 4);
    say_hex(&t, (const unsigned char *)reason, strlen(reason));
    snprintf(buf, sizeof buf, "%s", t.text);
    free(t.text);
    return buf;
}

/* ---- the frame path ----------------------------------------------------------------------- */

static void test_messages(void)
{
    struct bytes in = {0};
    unsigned char all[256];
    char *got;

    text(&in, FIN | TEXT, "Hello");
    expect("text", &roomy, &in, WANT("T5:\"48656c6c6f\" out= closed=0 peer=1006: sent=0 why=-"));

    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    frame(&in, FIN | BINARY, (const char *)all, 256);
    frame(&in, FIN | BINARY, "", 0);
    text(&in, FIN | TEXT, "");
    got = run_case("binary, empty", &roomy, &in, WANT("B0:\"\" T0:\"\" out= closed=0"));
    ok(strncmp(got, "B256:#", 6) == 0, "binary: 256 bytes first");
    free(got);
    free(in.p);
    in = (struct bytes){0};

    /* Each length form at its edges: 7 bits, 16 bits, 64 bits. */
    {
        static const size_t lens[] = {125, 126, 65535, 65536, 70000};
        char *big = malloc(70000), name[64], want[64];

        for (size_t i = 0; i < 70000; i++)
            big[i] = (char)('a' + i % 26);
        for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
            frame(&in, FIN | (i % 2 ? BINARY : TEXT), big, lens[i]);
            snprintf(name, sizeof name, "a %zu-byte message", lens[i]);
            snprintf(want, sizeof want, "%s%zu:#", i % 2 ? "B" : "T", lens[i]);
            expect(name, &roomy, &in, WANT(want, "out= closed=0"));
        }
        free(big);
    }

    /* Two messages in one read: both, in order; tycho_ws_next owns each until the next call. */
    {
        struct tycho_ws *ws = tycho_ws_new(NULL);
        struct tycho_ws_msg m;

        text(&in, FIN | TEXT, "one");
        text(&in, FIN | BINARY, "two!");
        ok(tycho_ws_feed(ws, (const char *)in.p, in.len) == TYCHO_OK, "two messages: fed");
        is_int(tycho_ws_pending_bytes(ws), 7, "two messages: 7 bytes wait");
        ok(tycho_ws_next(ws, &m) && m.kind == TYCHO_WS_TEXT, "two messages: the text first");
        is_str(m.data, "one", "two messages: its bytes, NUL-terminated");
        is_int(tycho_ws_pending_bytes(ws), 4, "two messages: 4 bytes wait");
        ok(tycho_ws_next(ws, &m) && m.kind == TYCHO_WS_BINARY && m.len == 4,
           "two messages: the binary second");
        ok(!tycho_ws_next(ws, &m), "two messages: then none");
        is_int(tycho_ws_pending_bytes(ws), 0, "two messages: nothing waits");
        tycho_ws_free(ws);
        free(in.p);
        in = (struct bytes){0};
    }
}

static void test_fragments(void)
{
    struct bytes in = {0};

    /* A ping between fragments: answered at once, the message whole after. */
    text(&in, TEXT, "Hel");
    text(&in, FIN | PING, "ping");
    text(&in, CONT, "lo ");
    text(&in, FIN | CONT, "world");
    expect("fragments with a ping between", &roomy, &in,
           WANT("T11:\"48656c6c6f20776f726c64\" out=8a0470696e67 closed=0"));

    /* A pong between fragments: counted, nothing sent. */
    frame(&in, BINARY, "\x00\x01", 2);
    text(&in, FIN | PONG, "");
    frame(&in, FIN | CONT, "\x02", 1);
    expect("fragments with a pong between", &roomy, &in, WANT("B3:\"000102\" out= closed=0"));

    /* Many fragments, some empty. */
    text(&in, TEXT, "");
    for (int i = 0; i < 20; i++)
        text(&in, CONT, i % 3 ? "ab" : "");
    text(&in, FIN | CONT, "");
    expect("many fragments", &roomy, &in, WANT("T26:", "out= closed=0"));

    /* A continuation with no message. */
    text(&in, FIN | CONT, "x");
    expect("continuation first", &roomy, &in,
           WANT(close_hex(1002, "continuation frame without a message"), "closed=1",
                "sent=1002 why=continuation frame without a message"));

    text(&in, FIN | TEXT, "done");
    text(&in, FIN | CONT, "x");
    expect("continuation after a whole message", &roomy, &in,
           WANT("T4:\"646f6e65\"", close_hex(1002, "continuation frame without a message")));

    /* A new message inside a fragmented one. */
    text(&in, TEXT, "a");
    text(&in, FIN | TEXT, "b");
    expect("new message inside a fragmented one", &roomy, &in,
           WANT(close_hex(1002, "new message inside a fragmented one"), "closed=1"));
}

static void test_violations(void)
{
    struct bytes in = {0};
    const char *p1002;

    frame_ex(&in, FIN | TEXT, "hi", 2, false);
    expect("unmasked frame", &roomy, &in,
           WANT(close_hex(1002, "frame not masked"), "closed=1 peer=1006:",
                "sent=1002 why=frame not masked"));

    /* Messages before the violation still arrive, a ping before it is still answered. */
    text(&in, FIN | TEXT, "ok");
    text(&in, FIN | PING, "p");
    frame_ex(&in, FIN | TEXT, "hi", 2, false);
    expect("unmasked frame after a message and a ping", &roomy, &in,
           WANT("T2:\"6f6b\" out=8a0170", close_hex(1002, "frame not masked")));

    for (unsigned rsv = 1; rsv < 8; rsv++) {
        text(&in, FIN | rsv << 4 | TEXT, "x");
        expect("reserved bits", &roomy, &in, WANT(close_hex(1002, "reserved bits set")));
    }
    for (unsigned op = 3; op < 16; op++) {
        if (op >= 8 && op <= 10)
            continue;
        text(&in, FIN | op, "x");
        expect("reserved opcode", &roomy, &in, WANT(close_hex(1002, "unknown opcode")));
    }

    text(&in, PING, "x");
    expect("fragmented ping", &roomy, &in, WANT(close_hex(1002, "fragmented control frame")));
    {
        char p[126];

        memset(p, 'p', sizeof p);
        frame(&in, FIN | PING, p, 126);
        expect("126-byte ping", &roomy, &in, WANT(close_hex(1002, "control frame too long")));
        frame(&in, FIN | PING, p, 125);
        expect("125-byte ping", &roomy, &in, WANT("out=8a7d7070", "closed=0"));
    }

    /* A length in a longer form than needed. */
    {
        unsigned char h[] = {FIN | BINARY, 0x80 | 126, 0, 5, 1, 2, 3, 4, 1, 2, 3, 4, 5};
        unsigned char g[] = {FIN | BINARY, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4};
        unsigned char t[] = {FIN | BINARY, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4};

        p1002 = close_hex(1002, "frame length not in its shortest form");
        put(&in, h, sizeof h);
        expect("16-bit length of 5", &roomy, &in, WANT(p1002));
        put(&in, g, sizeof g);
        expect("64-bit length of 65535", &roomy, &in, WANT(p1002));
        put(&in, t, sizeof t);
        expect("64-bit length with its top bit", &roomy, &in,
               WANT(close_hex(1002, "frame length out of range")));
    }
}

static void test_utf8(void)
{
    static const struct {
        const char *name, *bytes;
    } bad[] = {
        {"a lone continuation byte", "a\x80"},
        {"overlong 2-byte", "\xc0\xaf"},
        {"overlong 2-byte (C1)", "\xc1\xbf"},
        {"overlong 3-byte", "\xe0\x80\xaf"},
        {"overlong 4-byte", "\xf0\x80\x80\xaf"},
        {"a surrogate (U+D800)", "\xed\xa0\x80"},
        {"a surrogate (U+DFFF)", "\xed\xbf\xbf"},
        {"past U+10FFFF", "\xf4\x90\x80\x80"},
        {"F5", "\xf5\x80\x80\x80"},
        {"FF", "\xff"},
        {"a sequence cut short", "\xe2\x82"},
        {"a sequence cut by ASCII", "\xe2\x28\xa1"},
        {"a 4-byte sequence cut short", "ok\xf0\x9f\x98"},
    };
    static const char *const good[] = {
        "\x7f", "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xed\x9f\xbf", "\xee\x80\x80",
        "\xef\xbf\xbf", "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf", "\xce\xba\xe1\xbd\xb9\xcf\x83",
    };
    struct bytes in = {0};
    const char *p1007 = close_hex(1007, "text not UTF-8");
    char name[128];

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        text(&in, FIN | TEXT, bad[i].bytes);
        snprintf(name, sizeof name, "not UTF-8: %s", bad[i].name);
        expect(name, &roomy, &in, WANT(p1007, "closed=1", "sent=1007"));
        ok(!tycho_ws_utf8_valid(bad[i].bytes, strlen(bad[i].bytes)), bad[i].name);
        /* The same bytes as binary are fine. */
        text(&in, FIN | BINARY, bad[i].bytes);
        expect(name, &roomy, &in, WANT("out= closed=0"));
    }
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        text(&in, FIN | TEXT, good[i]);
        snprintf(name, sizeof name, "UTF-8 edge %zu", i);
        expect(name, &roomy, &in, WANT("out= closed=0", "T"));
        ok(tycho_ws_utf8_valid(good[i], strlen(good[i])), name);
    }

    /* Split across fragments: whole code points from pieces, with a ping between. */
    text(&in, TEXT, "\xe2");
    text(&in, CONT, "\x82");
    text(&in, FIN | PING, "");
    text(&in, FIN | CONT, "\xac!");
    expect("a euro sign over three fragments", &roomy, &in, WANT("T4:\"e282ac21\"", "closed=0"));

    text(&in, TEXT, "\xe2\x82");
    text(&in, FIN | CONT, "(");
    expect("a sequence cut by the next fragment's ASCII", &roomy, &in, WANT(p1007));

    text(&in, TEXT, "ok\xf0\x9f");
    text(&in, FIN | CONT, "");
    expect("a sequence left open by an empty last fragment", &roomy, &in, WANT(p1007));

    text(&in, TEXT, "\xed");
    text(&in, FIN | CONT, "\xa0\x80");
    expect("a surrogate across fragments", &roomy, &in, WANT(p1007));

    /* The message before the bad one still arrives. */
    text(&in, FIN | TEXT, "fine");
    text(&in, FIN | TEXT, "bad\xff");
    expect("bad text after good", &roomy, &in, WANT("T4:\"66696e65\"", p1007));
}

static void test_limits(void)
{
    struct tycho_ws_limits lim = {100, 50};
    struct bytes in = {0};
    char p[120];

    memset(p, 'x', sizeof p);
    frame(&in, FIN | BINARY, p, 50);
    expect("a frame at the limit", &lim, &in, WANT("B50:", "closed=0"));

    frame(&in, FIN | BINARY, p, 51);
    expect("a frame past the limit", &lim, &in,
           WANT(close_hex(1009, "frame too big"), "closed=1", "sent=1009 why=frame too big"));

    frame(&in, BINARY, p, 50);
    frame(&in, FIN | CONT, p, 50);
    expect("a message at the limit", &lim, &in, WANT("B100:", "closed=0"));

    frame(&in, TEXT, p, 50);
    frame(&in, CONT, p, 40);
    frame(&in, FIN | CONT, p, 11);
    expect("a message past the limit", &lim, &in,
           WANT(close_hex(1009, "message too big"), "closed=1"));

    /* A header that announces more than the limit: refused before its payload comes. */
    {
        struct tycho_ws *ws = tycho_ws_new(&lim);
        unsigned char h[] = {FIN | BINARY, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4};
        struct tycho_buf out = {0};

        ok(tycho_ws_feed(ws, (const char *)h, sizeof h) == TYCHO_OK, "a 4 GiB header: fed");
        ok(tycho_ws_output(ws, &out) == TYCHO_OK && tycho_ws_closed(ws),
           "a 4 GiB header: closed at once");
        is_int(tycho_ws_sent_code(ws), 1009, "a 4 GiB header: 1009");
        tycho_buf_dispose(&out);
        tycho_ws_free(ws);
    }
}

static void test_peer_close(void)
{
    struct bytes in = {0};
    char reason[124];

    close_frame(&in, 1000, "bye");
    expect("the peer closes", &roomy, &in,
           WANT("out=880503e8627965 closed=1 peer=1000:bye sent=1000 why=-"));

    close_frame(&in, 0, "");
    expect("the peer closes without a code", &roomy, &in,
           WANT("out=8800 closed=1 peer=1005: sent=1005 why=-"));

    /* Bytes after the close are ignored, even bad ones. */
    close_frame(&in, 4000, "");
    text(&in, FIN | TEXT, "late");
    frame_ex(&in, FIN | TEXT, "bad", 3, false);
    expect("bytes after the close", &roomy, &in, WANT("out=88020fa0 closed=1 peer=4000:"));

    /* A message, then the close: both. */
    text(&in, FIN | TEXT, "last");
    close_frame(&in, 1001, "going");
    expect("a message then the close", &roomy, &in, WANT("T4:\"6c617374\"", "peer=1001:going"));

    memset(reason, 'r', 123);
    reason[123] = '\0';
    close_frame(&in, 3000, reason);
    expect("a 123-byte reason", &roomy, &in, WANT("closed=1 peer=3000:rrrrrrr", "sent=3000"));

    {
        static const unsigned codes[] = {0, 999, 1004, 1005, 1006, 1012, 1015, 1016, 2000,
                                         2999, 5000, 65535};
        static const unsigned fine[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                        3000, 4999};
        char name[64];

        for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
            char p[2] = {(char)(codes[i] >> 8), (char)codes[i]};

            frame(&in, FIN | CLOSE, p, 2);
            snprintf(name, sizeof name, "close code %u", codes[i]);
            expect(name, &roomy, &in,
                   WANT(close_hex(1002, "invalid close code"), "closed=1 peer=1006:"));
        }
        for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
            close_frame(&in, fine[i], "");
            snprintf(name, sizeof name, "close code %u", fine[i]);
            snprintf(reason, sizeof reason, "closed=1 peer=%u:", fine[i]);
            expect(name, &roomy, &in, WANT(reason));
        }
    }

    frame(&in, FIN | CLOSE, "\x03", 1);
    expect("a close frame of one byte", &roomy, &in,
           WANT(close_hex(1002, "close frame of one byte")));

    close_frame(&in, 1000, "\xc3\x28");
    expect("a close reason not UTF-8", &roomy, &in,
           WANT(close_hex(1007, "close reason not UTF-8"), "peer=1006:"));

    close_frame(&in, 1000, "caf\xc3\xa9");
    expect("a close reason in UTF-8", &roomy, &in, WANT("peer=1000:caf\xc3\xa9"));

    text(&in, TEXT, "par");
    close_frame(&in, 1000, "");
    expect("a close inside a fragmented message", &roomy, &in, WANT("out=880203e8 closed=1"));
}

/* ---- the server's frames ------------------------------------------------------------------ */

/* The output so far, in hex, then empties out. */
static char *drain(struct tycho_ws *ws, struct tycho_buf *out)
{
    struct transcript t = {0};

    says(&t, "");
    if (tycho_ws_output(ws, out) < 0)
        says(&t, "ERROR");
    say_hex(&t, (const unsigned char *)out->data + out->off, out->len);
    tycho_buf_consume(out, out->len);
    return t.text;
}

static void is_out(struct tycho_ws *ws, struct tycho_buf *out, const char *want, const char *what)
{
    char *got = drain(ws, out);

    is_str(got, want, what);
    free(got);
}

static void test_server_frames(void)
{
    struct tycho_ws *ws = tycho_ws_new(NULL);
    struct tycho_buf out = {0};
    struct bytes in = {0};
    char *big = malloc(65536), *got;

    memset(big, 'z', 65536);
    ok(!tycho_ws_want_write(ws), "nothing to write at first");
    ok(tycho_ws_send(ws, "hi", 2, false) == TYCHO_OK, "send text");
    ok(tycho_ws_want_write(ws), "then something to write");
    is_int(tycho_ws_queued_bytes(ws), 2, "2 bytes queued");
    is_out(ws, &out, "81026869", "a text frame, unmasked");
    is_int(tycho_ws_queued_bytes(ws), 0, "none queued after the output");
    ok(tycho_ws_send(ws, "\x00\xff\x10", 3, true) == TYCHO_OK, "send binary");
    is_out(ws, &out, "820300ff10", "a binary frame");
    ok(tycho_ws_send(ws, "", 0, false) == TYCHO_OK, "send an empty text");
    is_out(ws, &out, "8100", "an empty text frame");
    ok(tycho_ws_send(ws, big, 126, true) == TYCHO_OK, "send 126 bytes");
    got = drain(ws, &out);
    ok(strncmp(got, "827e007e7a7a", 12) == 0 && strlen(got) == 8 + 252, "a 16-bit length");
    free(got);
    ok(tycho_ws_send(ws, big, 65536, true) == TYCHO_OK, "send 65536 bytes");
    got = drain(ws, &out);
    ok(strncmp(got, "827f00000000000100007a", 22) == 0 && strlen(got) == 20 + 131072,
       "a 64-bit length");
    free(got);
    ok(tycho_ws_ping(ws, "x", 1) == TYCHO_OK, "ping");
    is_out(ws, &out, "890178", "a ping frame");
    ok(tycho_ws_ping(ws, big, 125) == TYCHO_OK, "a 125-byte ping");
    tycho_buf_consume(&out, out.len);
    free(drain(ws, &out));
    ok(tycho_ws_ping(ws, big, 126) == TYCHO_ERR, "no 126-byte ping");
    ok(tycho_ws_send(ws, "\xc0\xaf", 2, false) == TYCHO_ERR, "no text that is not UTF-8");
    ok(tycho_ws_send(ws, "\xc0\xaf", 2, true) == TYCHO_OK, "the same bytes as binary");
    free(drain(ws, &out));

    /* The peer's pong is counted. */
    text(&in, FIN | PONG, "x");
    ok(tycho_ws_feed(ws, (const char *)in.p, in.len) == TYCHO_OK, "a pong: fed");
    is_int(tycho_ws_pongs(ws), 1, "a pong: counted");
    is_out(ws, &out, "", "a pong: nothing answered");

    /* Bad closes are refused. */
    ok(tycho_ws_close(ws, 1005, NULL, 0) == TYCHO_ERR, "no close with 1005");
    ok(tycho_ws_close(ws, 1006, NULL, 0) == TYCHO_ERR, "no close with 1006");
    ok(tycho_ws_close(ws, 1004, NULL, 0) == TYCHO_ERR, "no close with 1004");
    ok(tycho_ws_close(ws, 5000, NULL, 0) == TYCHO_ERR, "no close with 5000");
    ok(tycho_ws_close(ws, 0, "x", 1) == TYCHO_ERR, "no reason without a code");
    ok(tycho_ws_close(ws, 1000, big, 124) == TYCHO_ERR, "no 124-byte reason");
    ok(tycho_ws_close(ws, 1000, "\xff", 1) == TYCHO_ERR, "no reason that is not UTF-8");
    ok(tycho_ws_can_send(ws), "still open");

    /* Our close, then the peer's. */
    ok(tycho_ws_send(ws, "last", 4, false) == TYCHO_OK, "a message before the close");
    ok(tycho_ws_close(ws, 1000, "bye", 3) == TYCHO_OK, "close");
    ok(!tycho_ws_can_send(ws), "no sending after the close");
    ok(tycho_ws_send(ws, "more", 4, false) == TYCHO_ERR, "send after the close fails");
    ok(tycho_ws_ping(ws, "", 0) == TYCHO_ERR, "ping after the close fails");
    ok(tycho_ws_close(ws, 1000, NULL, 0) == TYCHO_ERR, "a second close fails");
    is_out(ws, &out, "81046c617374880503e8627965", "the message, then the close frame");
    is_int(tycho_ws_sent_code(ws), 1000, "our code");
    ok(!tycho_ws_closed(ws), "not closed before the peer's close");
    free(in.p);
    in = (struct bytes){0};
    text(&in, FIN | TEXT, "in flight");
    close_frame(&in, 1000, "ok");
    ok(tycho_ws_feed(ws, (const char *)in.p, in.len) == TYCHO_OK, "the peer's close: fed");
    {
        struct tycho_ws_msg m;

        ok(tycho_ws_next(ws, &m) && m.len == 9, "a message sent before the peer saw our close");
    }
    is_out(ws, &out, "", "no echo of the peer's close after ours");
    ok(tycho_ws_closed(ws), "closed after both closes");
    is_int(tycho_ws_peer_code(ws), 1000, "the peer's code");
    is_str(tycho_ws_peer_reason(ws, NULL), "ok", "the peer's reason");
    is_int(tycho_ws_sent_code(ws), 1000, "still our code");
    tycho_ws_free(ws);

    /* A close without a code; 1001 as a stopping server sends it. */
    ws = tycho_ws_new(NULL);
    ok(tycho_ws_close(ws, 0, NULL, 0) == TYCHO_OK, "a close without a code");
    is_out(ws, &out, "8800", "an empty close frame");
    is_int(tycho_ws_sent_code(ws), 1005, "sent: no code");
    tycho_ws_free(ws);
    ws = tycho_ws_new(NULL);
    ok(tycho_ws_close(ws, 1001, "", 0) == TYCHO_OK, "going away");
    is_out(ws, &out, "880203e9", "1001");
    tycho_ws_free(ws);

    /* Messages queued but not output when the connection is freed: no leak (valgrind, ASan). */
    ws = tycho_ws_new(NULL);
    ok(tycho_ws_send(ws, big, 1000, true) == TYCHO_OK, "queued, never output");
    tycho_ws_free(ws);
    tycho_ws_free(NULL);

    tycho_buf_dispose(&out);
    free(in.p);
    free(big);
}

/* ---- the handshake ------------------------------------------------------------------------ */

static struct tycho_req *parse(const char *raw)
{
    static struct tycho_http h;
    static struct tycho_req r;
    static bool inited;

    if (inited)
        tycho_req_reset(&r);
    else if (tycho_req_init(&r) < 0)
        abort();
    inited = true;
    tycho_http_init(&h, &cfg);
    tycho_http_parse(&h, &r, raw, strlen(raw));
    if (h.state != TYCHO_HTTP_DONE) {
        printf("FAIL could not parse: %s\n", raw);
        return NULL;
    }
    return &r;
}

#define RFC_HEAD                                                                             \
    "Host: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"              \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n"

static void check_handshake(const char *name, const char *raw, int want, const char *accept)
{
    struct tycho_req *r = parse(raw);
    char got[TYCHO_WS_ACCEPT_LEN], what[160];
    const char *why = NULL;
    int status;

    snprintf(what, sizeof what, "handshake %s: status", name);
    if (!ok(r != NULL, what))
        return;
    status = tycho_ws_handshake(r, got, sizeof got, &why);
    is_int(status, want, what);
    snprintf(what, sizeof what, "handshake %s: %s", name, accept ? "accept value" : "a reason");
    if (accept)
        is_str(got, accept, what);
    else
        ok(why && *why, what);
}

static void test_handshake(void)
{
    static const char *const rfc = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    static const struct {
        const char *name, *raw;
        int want;
    } cases[] = {
        {"RFC 6455 §1.3", "GET /chat HTTP/1.1\r\n" RFC_HEAD "Sec-WebSocket-Version: 13\r\n\r\n", 0},
        {"any case, in lists, over headers",
         "GET /chat HTTP/1.1\r\nhost: a\r\nupgrade: foo/2, WebSocket\r\n"
         "connection: keep-alive\r\nCONNECTION: x,  UPGRADE \r\n"
         "sec-websocket-key:   dGhlIHNhbXBsZSBub25jZQ==  \r\nsec-websocket-version: 13\r\n\r\n",
         0},
        {"POST", "POST /chat HTTP/1.1\r\n" RFC_HEAD "Sec-WebSocket-Version: 13\r\n"
                 "Content-Length: 0\r\n\r\n", 400},
        {"HTTP/1.0", "GET /chat HTTP/1.0\r\n" RFC_HEAD "Sec-WebSocket-Version: 13\r\n\r\n", 400},
        {"no Upgrade",
         "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 400},
        {"Upgrade: h2c",
         "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 400},
        {"Upgrade: websocketx",
         "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocketx\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 400},
        {"no Connection: upgrade",
         "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 400},
        {"no Connection",
         "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 400},
        {"version 8", "GET / HTTP/1.1\r\n" RFC_HEAD "Sec-WebSocket-Version: 8\r\n\r\n", 426},
        {"version 13, 8", "GET / HTTP/1.1\r\n" RFC_HEAD "Sec-WebSocket-Version: 13, 8\r\n\r\n",
         426},
        {"two versions",
         "GET / HTTP/1.1\r\n" RFC_HEAD
         "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 13\r\n\r\n", 426},
        {"no version", "GET / HTTP/1.1\r\n" RFC_HEAD "\r\n", 426},
        {"no key",
         "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Version: 13\r\n\r\n", 400},
        {"a key of 15 bytes",
         "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=\r\nSec-WebSocket-Version: 13\r\n\r\n", 400},
        {"a key of 17 bytes",
         "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQAA\r\nSec-WebSocket-Version: 13\r\n\r\n", 400},
        {"a key not base64",
         "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ*==\r\nSec-WebSocket-Version: 13\r\n\r\n", 400},
        {"two keys",
         "GET / HTTP/1.1\r\n" RFC_HEAD
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 400},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_handshake(cases[i].name, cases[i].raw, cases[i].want,
                        cases[i].want ? NULL : rfc);
    check_handshake("another key",
                    "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n",
                    0, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

static void test_accept_answer(void)
{
    struct tycho_req *r = parse("GET / HTTP/1.1\r\nHost: a\r\n"
                                "Sec-WebSocket-Protocol: chat, superchat\r\n"
                                "Sec-WebSocket-Protocol: v2.json\r\n\r\n");
    struct tycho_buf out = {0};

    if (r) {
        ok(tycho_ws_offered(r, "chat"), "offered: chat");
        ok(tycho_ws_offered(r, "superchat"), "offered: superchat");
        ok(tycho_ws_offered(r, "v2.json"), "offered: in a second header");
        ok(!tycho_ws_offered(r, "super"), "not offered: a prefix");
        ok(!tycho_ws_offered(r, "Chat"), "not offered: another case");
    }
    ok(tycho_ws_write_accept(&out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", NULL, "") == TYCHO_OK,
       "the 101 answer");
    tycho_buf_reserve(&out, 1);
    out.data[out.off + out.len] = '\0';
    is_str(out.data + out.off,
           "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
           "the 101 answer's bytes");
    tycho_buf_consume(&out, out.len);
    ok(tycho_ws_write_accept(&out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "chat",
                             "Server: tycho\r\n") == TYCHO_OK,
       "the 101 answer with a subprotocol");
    tycho_buf_reserve(&out, 1);
    out.data[out.off + out.len] = '\0';
    is_str(out.data + out.off,
           "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
           "Sec-WebSocket-Protocol: chat\r\nServer: tycho\r\n\r\n",
           "the 101 answer with a subprotocol: bytes");
    tycho_buf_consume(&out, out.len);
    ok(tycho_ws_write_accept(&out, "x", "a b", "") == TYCHO_ERR, "a subprotocol not a token");
    ok(tycho_ws_write_accept(&out, "x", "a\r\nX: y", "") == TYCHO_ERR, "no header injection");
    ok(tycho_ws_write_accept(&out, "x", "", "") == TYCHO_ERR, "an empty subprotocol");
    is_int(out.len, 0, "out unchanged on error");
    tycho_buf_dispose(&out);
}

int main(void)
{
    memset(&cfg, 0, sizeof(cfg));
    tycho_config_defaults(&cfg);
    tycho_http_global_init(&cfg);

    test_handshake();
    test_accept_answer();
    test_messages();
    test_fragments();
    test_violations();
    test_utf8();
    test_limits();
    test_peer_close();
    test_server_frames();
    return test_summary();
}
