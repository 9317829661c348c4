/*
 * fuzz_ws.c: libFuzzer target for the WebSocket frame path (http/ws.c), with
 * oracles of its own.
 *
 * The input's first byte chooses how the rest is cut into reads and what the
 * server does; the rest is what a client sends after the handshake. Each run
 * feeds the bytes to a connection with small limits, takes every message,
 * drains the output after every read, and checks:
 *
 *   - every text message is UTF-8, by a decoder written apart from ws.c's
 *     check (code points, then the rules on them), and no message is longer
 *     than the limit;
 *   - the output is a sequence of server frames as RFC 6455 wants them:
 *     unmasked, final, no reserved bit, a known opcode, the shortest length
 *     form, control frames of 125 bytes at most, a close frame without code
 *     or with one that may be sent and a UTF-8 reason, nothing after it;
 *   - a connection that reports closed has its close frame in the output,
 *     and takes no more messages;
 *   - when the server only answers (no send of its own), the messages, the
 *     output frames (but pings and pongs: libwslay drops those not yet out
 *     once a close is queued) and the close codes are the same whether the
 *     input came in one read or in the chosen pieces.
 *
 * A failed check aborts (a crash to libFuzzer, with the input kept); leaks
 * are found by LeakSanitizer. Built by `make fuzz` with clang and
 * -fsanitize=fuzzer,address,undefined.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "http/ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_MESSAGE 2000
#define MAX_FRAME 1500

#define check(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "fuzz_ws: check failed: %s (line %d)\n", #cond, __LINE__);     \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

/* UTF-8 by decoding: each sequence to a code point, then the rules on the code point. */
static bool oracle_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned c = s[i], len, cp;

        if (c < 0x80) {
            i++;
            continue;
        }
        len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
        if (!len || c >= 0xF8 || i + len > n)
            return false;
        cp = c & (0x7F >> len);
        for (unsigned k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000))
            return false; /* overlong */
        if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return false;
        i += len;
    }
    return true;
}

/* What a run saw, to compare two runs. */
struct run {
    struct tycho_buf log;      /* the messages, as kind, length, bytes */
    struct tycho_buf out;      /* every output byte */
    struct tycho_buf kept;     /* the output without pings and pongs */
    int peer_code, sent_code;
    bool closed;
};

/*
 * Checks the output as frames a server may send; copies all but pings and pongs to kept (once a
 * close is queued libwslay drops the control frames not yet out, so how many pongs went out
 * depends on when the output was drained).
 */
static void check_output(const unsigned char *p, size_t n, struct tycho_buf *kept)
{
    bool closed = false;

    while (n) {
        size_t hl = 2;
        uint64_t len;
        unsigned op;

        check(!closed);
        check(n >= 2);
        check((p[0] & 0xF0) == 0x80); /* FIN, no RSV */
        op = p[0] & 0xF;
        check(op == 1 || op == 2 || op == 8 || op == 9 || op == 10);
        check(!(p[1] & 0x80));        /* not masked */
        len = p[1] & 0x7F;
        if (len == 126) {
            check(n >= 4);
            len = (uint64_t)p[2] << 8 | p[3];
            check(len >= 126);
            hl = 4;
        } else if (len == 127) {
            check(n >= 10);
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | p[2 + i];
            check(len >= 65536 && !(len >> 63));
            hl = 10;
        }
        check(n - hl >= len);
        if (op >= 8)
            check(len <= 125);
        if (op == 1)
            check(oracle_utf8(p + hl, len));
        if (op == 8) {
            unsigned code = len >= 2 ? (unsigned)p[hl] << 8 | p[hl + 1] : 0;

            check(len != 1);
            check(len == 0 || (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
                  (code >= 3000 && code <= 4999));
            check(len < 2 || oracle_utf8(p + hl + 2, len - 2));
            closed = true;
        }
        if (op != 9 && op != 10)
            check(tycho_buf_append(kept, p, hl + len) == 0);
        p += hl + len;
        n -= hl + len;
    }
}

/* Takes every waiting message into the run's log, checking each. */
static void take(struct tycho_ws *ws, struct run *r, bool echo)
{
    struct tycho_ws_msg m;

    while (tycho_ws_next(ws, &m)) {
        unsigned char head[9];

        check(m.len <= MAX_MESSAGE);
        check(m.data[m.len] == '\0');
        check(m.kind == TYCHO_WS_TEXT || m.kind == TYCHO_WS_BINARY);
        if (m.kind == TYCHO_WS_TEXT)
            check(oracle_utf8((const unsigned char *)m.data, m.len));
        head[0] = (unsigned char)m.kind;
        memcpy(head + 1, &m.len, 8);
        check(tycho_buf_append(&r->log, head, sizeof head) == 0);
        check(tycho_buf_append(&r->log, m.data, m.len) == 0);
        if (echo && tycho_ws_can_send(ws))
            check(tycho_ws_send(ws, m.data, m.len, m.kind == TYCHO_WS_BINARY) == 0);
    }
}

/* One connection fed data in pieces of at most piece bytes (0: one read). */
static void run(const uint8_t *data, size_t size, size_t piece, unsigned acts, struct run *r)
{
    struct tycho_ws_limits lim = {MAX_MESSAGE, MAX_FRAME};
    struct tycho_ws *ws = tycho_ws_new(&lim);
    size_t at = 0;
    bool was_closed = false;

    check(ws);
    while (at < size || at == 0) {
        size_t n = piece && size - at > piece ? piece : size - at;
        size_t pending = tycho_ws_pending_bytes(ws);

        check(tycho_ws_feed(ws, (const char *)data + at, n) == 0);
        if (was_closed)
            check(tycho_ws_pending_bytes(ws) == pending);
        at += n;
        take(ws, r, acts & 1);
        if ((acts & 2) && tycho_ws_can_send(ws))
            check(tycho_ws_ping(ws, "p", 1) == 0);
        if ((acts & 4) && at > size / 2 && tycho_ws_can_send(ws))
            check(tycho_ws_close(ws, 1000, "bye", 3) == 0);
        check(tycho_ws_output(ws, &r->out) == 0);
        check(!tycho_ws_want_write(ws));
        was_closed = tycho_ws_closed(ws);
        if (size == 0)
            break;
    }
    if (r->out.len)
        check_output((const unsigned char *)r->out.data + r->out.off, r->out.len, &r->kept);
    r->closed = tycho_ws_closed(ws);
    r->peer_code = tycho_ws_peer_code(ws);
    r->sent_code = tycho_ws_sent_code(ws);
    if (r->closed)
        check(r->sent_code != 0);
    tycho_ws_free(ws);
}

static bool same(const struct tycho_buf *a, const struct tycho_buf *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->data + a->off, b->data + b->off,
                                                      a->len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t pieces[8] = {1, 2, 3, 7, 13, 64, 200, 1000};
    struct run whole = {0}, split = {0};
    unsigned acts;

    if (size < 1)
        return 0;
    acts = data[0] >> 3;
    run(data + 1, size - 1, pieces[data[0] & 7], acts, &split);
    if (!(acts & 7)) {
        run(data + 1, size - 1, 0, 0, &whole);
        check(same(&whole.log, &split.log));
        check(same(&whole.kept, &split.kept));
        check(whole.closed == split.closed);
        check(whole.peer_code == split.peer_code && whole.sent_code == split.sent_code);
    }
    tycho_buf_dispose(&whole.log);
    tycho_buf_dispose(&whole.out);
    tycho_buf_dispose(&whole.kept);
    tycho_buf_dispose(&split.kept);
    tycho_buf_dispose(&split.log);
    tycho_buf_dispose(&split.out);
    return 0;
}
