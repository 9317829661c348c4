/*
 * ws.c: the WebSocket protocol, server side (ws.h): the opening handshake,
 * then a libwslay event context behind a gate.
 *
 * libwslay pulls its input through on_recv. That callback is the gate: it
 * walks the peer's byte stream frame by frame, checks each header before
 * handing it over, checks text payloads as UTF-8 as they pass (unmasking
 * each byte for the check only), and hands a control frame over only whole,
 * after checking a close frame's code and reason. So every violation is
 * caught here first, with its code and reason, and libwslay's own checks
 * (of masks, opcodes, UTF-8, close codes) are a second line that never
 * fires. Two things make the gate necessary rather than a nicety, in
 * libwslay 1.1.1: a framing error in its frame layer (a fragmented or too
 * long control frame, a length not in its shortest form) queues a close
 * frame with no code at all, and its UTF-8 check of a close reason skips
 * the first two bytes of every piece, not only of the first, so a close
 * frame that came in two reads could be refused or let through wrongly.
 *
 * The gate hands over a header only once it has all of it, and a control
 * frame only once it has all of it, so the bytes it keeps between two feeds
 * are at most a header or a control frame (HELD_MAX). libwslay asks for
 * input only once it used up what it had, with a 4096-byte buffer, so a
 * control frame always fits the room it offers.
 *
 * A violation found by the gate stops the input there; the connection is
 * failed only once libwslay has dealt with the bytes before it, and our close
 * frame is handed to libwslay only once the output has taken what was queued
 * before it. Both keep the outcome the same however the reads cut the
 * stream, which the tests and the fuzz target check.
 *
 * One thread: the owner of the struct tycho_ws. Owns the context, the
 * received messages and the held bytes.
 */
#include "http/ws.h"
#include "core/list.h"
#include "core/tycho.h"
#include "http/http.h"

#include <assert.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

/* ---- UTF-8 (RFC 3629 §4: the well-formed sequences, Unicode's table 3-7) ------------------- */

/* Where a check is in a sequence: continuation bytes still due and the range of the next one. */
struct utf8 {
    unsigned char need;
    unsigned char lo, hi;
};

static const struct utf8 utf8_start = {0, 0x80, 0xBF};

/* Takes one more byte. False when the bytes so far cannot begin any valid text. */
static bool utf8_step(struct utf8 *u, unsigned char c)
{
    if (u->need) {
        if (c < u->lo || c > u->hi)
            return false;
        u->need--;
        u->lo = 0x80;
        u->hi = 0xBF;
        return true;
    }
    if (c < 0x80)
        return true;
    if (c >= 0xC2 && c <= 0xDF) {
        u->need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        u->need = 2;
        if (c == 0xE0)
            u->lo = 0xA0;       /* else an overlong form */
        else if (c == 0xED)
            u->hi = 0x9F;       /* else a surrogate, U+D800..U+DFFF */
    } else if (c >= 0xF0 && c <= 0xF4) {
        u->need = 3;
        if (c == 0xF0)
            u->lo = 0x90;       /* else an overlong form */
        else if (c == 0xF4)
            u->hi = 0x8F;       /* else past U+10FFFF */
    } else {
        return false;           /* 0x80..0xC1 (a stray continuation, overlong), 0xF5.. */
    }
    return true;
}

bool tycho_ws_utf8_valid(const char *s, size_t len)
{
    struct utf8 u = utf8_start;

    for (size_t i = 0; i < len; i++)
        if (!utf8_step(&u, (unsigned char)s[i]))
            return false;
    return u.need == 0;
}

/* ---- the opening handshake ---------------------------------------------------------------- */

/* Appended to the key before hashing (RFC 6455 §1.3). */
static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#define KEY_CHARS 24 /* base64 of 16 bytes: 22 characters and "==" */

static bool named(const struct tycho_header *h, const char *name)
{
    size_t n = strlen(name);

    return h->name_len == n && strncasecmp(h->name, name, n) == 0;
}

/* Skips the optional white space (SP, HTAB) around [*p, *end). */
static void trim(const char **p, const char **end)
{
    while (*p < *end && (**p == ' ' || **p == '\t'))
        (*p)++;
    while (*end > *p && ((*end)[-1] == ' ' || (*end)[-1] == '\t'))
        (*end)--;
}

/* Whether one of the comma-separated values of the header h is word. */
static bool list_has(const struct tycho_header *h, const char *word, bool any_case)
{
    const char *p = h->value, *end = h->value + h->value_len;
    size_t n = strlen(word);

    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *a = p, *b = comma ? comma : end;

        trim(&a, &b);
        if ((size_t)(b - a) == n &&
            (any_case ? strncasecmp(a, word, n) == 0 : memcmp(a, word, n) == 0))
            return true;
        if (!comma)
            break;
        p = comma + 1;
    }
    return false;
}

/* Whether any header named name lists word. */
static bool headers_list(const struct tycho_req *r, const char *name, const char *word,
                         bool any_case)
{
    for (unsigned i = 0; i < r->nheaders; i++)
        if (named(&r->headers[i], name) && list_has(&r->headers[i], word, any_case))
            return true;
    return false;
}

/* The one header named name, trimmed into [*v, *v + *len); false when none or several. */
static bool only_header(const struct tycho_req *r, const char *name, const char **v, size_t *len)
{
    const struct tycho_header *found = NULL;
    const char *end;

    for (unsigned i = 0; i < r->nheaders; i++) {
        if (!named(&r->headers[i], name))
            continue;
        if (found)
            return false;
        found = &r->headers[i];
    }
    if (!found)
        return false;
    *v = found->value;
    end = found->value + found->value_len;
    trim(v, &end);
    *len = (size_t)(end - *v);
    return true;
}

static bool is_base64(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

/* Whether v is the base64 of 16 bytes (RFC 6455 §4.2.1, item 5). */
static bool valid_key(const char *v, size_t len)
{
    if (len != KEY_CHARS || v[22] != '=' || v[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (!is_base64(v[i]))
            return false;
    return true;
}

/* accept = base64(SHA-1(key GUID)): 28 characters and a NUL. */
static void make_accept(const char *key, char *accept)
{
    unsigned char digest[SHA_DIGEST_LENGTH];
    unsigned char in[KEY_CHARS + sizeof ws_guid - 1];

    memcpy(in, key, KEY_CHARS);
    memcpy(in + KEY_CHARS, ws_guid, sizeof ws_guid - 1);
    SHA1(in, sizeof in, digest);
    EVP_EncodeBlock((unsigned char *)accept, digest, SHA_DIGEST_LENGTH);
}

int tycho_ws_handshake(const struct tycho_req *r, char *accept, size_t accept_len,
                       const char **why)
{
    const char *v;
    size_t len;

    assert(accept_len >= TYCHO_WS_ACCEPT_LEN);
    (void)accept_len;
    *why = NULL;
    if (r->method_len != 3 || memcmp(r->method, "GET", 3) != 0)
        *why = "a WebSocket handshake must be a GET";
    else if (r->http_major < 1 || (r->http_major == 1 && r->http_minor < 1))
        *why = "a WebSocket handshake needs HTTP/1.1";
    else if (!headers_list(r, "upgrade", "websocket", true))
        *why = "no Upgrade: websocket";
    else if (!headers_list(r, "connection", "upgrade", true))
        *why = "no Connection: upgrade";
    if (*why)
        return 400;
    if (!only_header(r, "sec-websocket-version", &v, &len) || len != 2 || memcmp(v, "13", 2)) {
        *why = "Sec-WebSocket-Version must be 13";
        return 426;
    }
    if (!only_header(r, "sec-websocket-key", &v, &len) || !valid_key(v, len)) {
        *why = "Sec-WebSocket-Key must be one base64 value of 16 bytes";
        return 400;
    }
    make_accept(v, accept);
    return 0;
}

bool tycho_ws_offered(const struct tycho_req *r, const char *name)
{
    return headers_list(r, "sec-websocket-protocol", name, false);
}

/* Whether s is a token (RFC 9110 §5.6.2). */
static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!(((*s | 0x20) >= 'a' && (*s | 0x20) <= 'z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *s)))
            return false;
    return true;
}

int tycho_ws_write_accept(struct tycho_buf *out, const char *accept, const char *protocol,
                          const char *extra_headers)
{
    size_t len = out->len;

    if (protocol && !is_token(protocol))
        return TYCHO_ERR;
    if (tycho_buf_puts(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\nSec-WebSocket-Accept: ") < 0 ||
        tycho_buf_puts(out, accept) < 0 || tycho_buf_puts(out, "\r\n") < 0 ||
        (protocol && (tycho_buf_puts(out, "Sec-WebSocket-Protocol: ") < 0 ||
                      tycho_buf_puts(out, protocol) < 0 || tycho_buf_puts(out, "\r\n") < 0)) ||
        tycho_buf_puts(out, extra_headers) < 0 || tycho_buf_puts(out, "\r\n") < 0) {
        out->len = len;
        return TYCHO_ERR;
    }
    return TYCHO_OK;
}

/* ---- a connection ------------------------------------------------------------------------- */

#define HEADER_MAX 14                         /* 2, 8 bytes of length, 4 of mask */
#define CONTROL_MAX 125                       /* payload bytes of a control frame */
#define HELD_MAX (6 + CONTROL_MAX)            /* a masked control frame, or less than a header */

/* A received message waiting for tycho_ws_next. */
struct msg {
    struct tycho_list link;                   /* in ws->msgs */
    enum tycho_ws_kind kind;
    size_t len;
    char data[];                              /* len bytes and a NUL */
};

/* A frame header as the gate reads it. */
struct frame {
    bool fin, masked;
    unsigned rsv, opcode;
    unsigned len7;                            /* the 7-bit length field */
    uint64_t len;                             /* the payload's bytes */
    size_t header_len;
    unsigned char key[4];
};

struct tycho_ws {
    wslay_event_context_ptr ctx;              /* owned */
    struct tycho_ws_limits lim;

    /* The input during tycho_ws_feed: [0] what was held from the last feed, [1] the caller's. */
    const unsigned char *in[2];               /* borrowed */
    size_t in_len[2];
    unsigned char held[HELD_MAX];             /* an incomplete header or control frame */
    size_t held_len;

    /* The gate's place in the peer's stream. */
    uint64_t frame_left;                      /* payload bytes of this frame not handed over;
                                                 0: the next byte starts a header */
    uint64_t frame_off;                       /* payload bytes handed over (mask index) */
    unsigned char key[4];
    bool frame_fin;
    bool frame_text;                          /* its payload is text to check */
    unsigned msg_kind;                        /* 0, or the opcode of the message under way */
    uint64_t msg_bytes;                       /* its payload so far, headers handed over */
    struct utf8 utf8;                         /* the check of its text */

    struct tycho_list msgs;                   /* struct msg, oldest first */
    struct msg *taken;                        /* owned: the one tycho_ws_next gave last */
    size_t pending_bytes;

    struct tycho_buf *out;                    /* borrowed, during tycho_ws_output */

    /* Our close frame (not the echo of the peer's), once decided. libwslay sends control frames
       before the data frames queued earlier and nothing after a close, so it is handed over
       only once the output took all that was queued before it. */
    bool close_queued;                        /* decided: nothing more may be queued */
    bool close_due;                           /* decided, not yet handed to libwslay */
    int close_code;                           /* 0: a close frame without code */
    char close_reason[TYCHO_WS_MAX_REASON];
    size_t close_reason_len;
    const char *violation;                    /* static; the peer's violation */
    int violation_code;                       /* its close code; 0: none */
    bool close_received;
    int peer_code;                            /* 1006 until a close frame comes */
    char peer_reason[TYCHO_WS_MAX_REASON + 1];
    size_t peer_reason_len;
    unsigned long pongs;
    bool failed;                              /* out of memory: the connection must close */
};

/* Gives up on the connection: nothing more is read or sent. */
static void fail(struct tycho_ws *ws)
{
    ws->failed = true;
    wslay_event_shutdown_read(ws->ctx);
    wslay_event_shutdown_write(ws->ctx);
}

/* Decides our close frame; tycho_ws_output sends it after what was queued before. */
static void queue_close(struct tycho_ws *ws, int code, const char *reason, size_t len)
{
    assert(len <= TYCHO_WS_MAX_REASON);
    ws->close_queued = ws->close_due = true;
    ws->close_code = code;
    if (len)
        memcpy(ws->close_reason, reason, len);
    ws->close_reason_len = len;
}

/* Hands our close frame to libwslay. A close of the peer's since makes it moot (its echo). */
static int hand_close(struct tycho_ws *ws)
{
    int rc = wslay_event_queue_close(ws->ctx, (uint16_t)ws->close_code,
                                     (const uint8_t *)ws->close_reason, ws->close_reason_len);

    ws->close_due = false;
    return rc == 0 || rc == WSLAY_ERR_NO_MORE_MSG ? TYCHO_OK : TYCHO_ERR;
}

/*
 * Notes a violation of the peer's. The gate hands over nothing more, and tycho_ws_feed fails the
 * connection once libwslay has dealt with all that came before (answered a ping, taken a
 * message), so that where the reads split the stream changes nothing.
 */
static void violate(struct tycho_ws *ws, int code, const char *why)
{
    ws->violation = why;
    ws->violation_code = code;
}

/*
 * Fails the connection for the violation noted (RFC 6455 §7.1.7): our close, no more input.
 * Moot when a close frame before it ended the input.
 */
static void fail_for_violation(struct tycho_ws *ws)
{
    if (!wslay_event_get_read_enabled(ws->ctx)) {
        ws->violation = NULL;
        ws->violation_code = 0;
        return;
    }
    wslay_event_shutdown_read(ws->ctx);
    if (!ws->close_queued)
        queue_close(ws, ws->violation_code, ws->violation, strlen(ws->violation));
}

/* Whether code may be sent in a close frame (RFC 6455 §7.4.1, §7.4.2). */
static bool sendable_code(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

/* ---- the gate's input: the held bytes, then the caller's ---- */

static size_t input_left(const struct tycho_ws *ws)
{
    return ws->in_len[0] + ws->in_len[1];
}

/* Copies up to n bytes from the front of the input, leaving them there; returns how many. */
static size_t input_peek(const struct tycho_ws *ws, unsigned char *dst, size_t n)
{
    size_t a = n < ws->in_len[0] ? n : ws->in_len[0];
    size_t b = n - a < ws->in_len[1] ? n - a : ws->in_len[1];

    memcpy(dst, ws->in[0], a);
    if (b)
        memcpy(dst + a, ws->in[1], b);
    return a + b;
}

/* Moves n bytes (n <= input_left) from the front of the input to dst. */
static void input_take(struct tycho_ws *ws, unsigned char *dst, size_t n)
{
    for (int i = 0; i < 2 && n; i++) {
        size_t k = n < ws->in_len[i] ? n : ws->in_len[i];

        if (!k)
            continue;
        memcpy(dst, ws->in[i], k);
        ws->in[i] += k;
        ws->in_len[i] -= k;
        dst += k;
        n -= k;
    }
}

/* Keeps what the gate did not hand over for the next feed (none once reading stopped). */
static void input_keep(struct tycho_ws *ws)
{
    size_t left = input_left(ws);

    if (!wslay_event_get_read_enabled(ws->ctx))
        left = 0;
    assert(left <= HELD_MAX);
    if (left > HELD_MAX) {
        violate(ws, TYCHO_WS_INTERNAL, "internal error");
        fail_for_violation(ws);
        left = 0;
    }
    if (left)
        input_peek(ws, ws->held, left);
    ws->held_len = left;
    ws->in[0] = ws->in[1] = NULL;
    ws->in_len[0] = ws->in_len[1] = 0;
}

/* ---- the gate's checks ---- */

/* Reads a header from the h[0..have) bytes: 1, 0 when more bytes are needed. */
static int read_header(const unsigned char *h, size_t have, struct frame *f)
{
    size_t ext;

    if (have < 2)
        return 0;
    f->fin = h[0] >> 7;
    f->rsv = (h[0] >> 4) & 7;
    f->opcode = h[0] & 0xF;
    f->masked = h[1] >> 7;
    f->len7 = h[1] & 0x7F;
    ext = f->len7 == 126 ? 2 : f->len7 == 127 ? 8 : 0;
    f->header_len = 2 + ext + (f->masked ? 4 : 0);
    if (have < f->header_len)
        return 0;
    f->len = ext ? 0 : f->len7;
    for (size_t i = 0; i < ext; i++)
        f->len = f->len << 8 | h[2 + i];
    if (f->masked)
        memcpy(f->key, h + 2 + ext, 4);
    return 1;
}

/* Why the frame f breaks RFC 6455 §5 whatever came before it, or NULL. */
static const char *frame_error(const struct frame *f)
{
    bool control = f->opcode & 8;

    if (f->rsv)
        return "reserved bits set";
    if (!f->masked)
        return "frame not masked";
    if ((f->opcode > 2 && f->opcode < 8) || f->opcode > 10)
        return "unknown opcode";
    if (control && !f->fin)
        return "fragmented control frame";
    if (control && f->len7 > CONTROL_MAX)
        return "control frame too long";
    if ((f->len7 == 126 && f->len < 126) || (f->len7 == 127 && f->len < 65536))
        return "frame length not in its shortest form";
    if (f->len >> 63)
        return "frame length out of range";
    if (f->opcode == WSLAY_CONNECTION_CLOSE && f->len == 1)
        return "close frame of one byte";
    return NULL;
}

/* Checks a data frame's header against the message under way and the limits. */
static bool check_data_frame(struct tycho_ws *ws, const struct frame *f)
{
    uint64_t before = f->opcode == WSLAY_CONTINUATION_FRAME ? ws->msg_bytes : 0;

    if (f->opcode == WSLAY_CONTINUATION_FRAME && !ws->msg_kind)
        violate(ws, TYCHO_WS_PROTOCOL, "continuation frame without a message");
    else if (f->opcode != WSLAY_CONTINUATION_FRAME && ws->msg_kind)
        violate(ws, TYCHO_WS_PROTOCOL, "new message inside a fragmented one");
    else if (f->len > ws->lim.max_frame_bytes)
        violate(ws, TYCHO_WS_TOO_BIG, "frame too big");
    else if (before + f->len > ws->lim.max_message_bytes)
        violate(ws, TYCHO_WS_TOO_BIG, "message too big");
    else
        return true;
    return false;
}

/* Checks a whole close frame (payload at p, masked with f->key) before it is handed over. */
static bool check_close(struct tycho_ws *ws, const struct frame *f, const unsigned char *p)
{
    unsigned char b[CONTROL_MAX];

    if (f->len < 2)
        return true;
    for (size_t i = 0; i < f->len; i++)
        b[i] = p[i] ^ f->key[i & 3];
    if (!sendable_code((unsigned)b[0] << 8 | b[1]))
        violate(ws, TYCHO_WS_PROTOCOL, "invalid close code");
    else if (!tycho_ws_utf8_valid((const char *)b + 2, f->len - 2))
        violate(ws, TYCHO_WS_BAD_DATA, "close reason not UTF-8");
    else
        return true;
    return false;
}

/* Starts the gate's record of a data frame whose header is handed over. */
static void begin_data_frame(struct tycho_ws *ws, const struct frame *f)
{
    if (f->opcode != WSLAY_CONTINUATION_FRAME) {
        ws->msg_kind = f->opcode;
        ws->msg_bytes = 0;
        ws->utf8 = utf8_start;
    }
    ws->msg_bytes += f->len;
    ws->frame_left = f->len;
    ws->frame_off = 0;
    ws->frame_fin = f->fin;
    ws->frame_text = ws->msg_kind == WSLAY_TEXT_FRAME;
    memcpy(ws->key, f->key, 4);
    if (f->len == 0 && f->fin)
        ws->msg_kind = 0;
}

/* An empty final continuation ends the text under way: its last sequence must be complete. */
static bool text_may_end(struct tycho_ws *ws, const struct frame *f)
{
    if (f->opcode != WSLAY_CONTINUATION_FRAME || !f->fin || f->len ||
        ws->msg_kind != WSLAY_TEXT_FRAME || ws->utf8.need == 0)
        return true;
    violate(ws, TYCHO_WS_BAD_DATA, "text not UTF-8");
    return false;
}

/*
 * At the first byte of a frame: hands over its header (a control frame whole) to buf, which
 * has room bytes. Returns the bytes handed over; 0 when the frame is not all here yet, does not
 * fit, or broke a rule (the connection is then failed).
 */
static size_t pass_header(struct tycho_ws *ws, unsigned char *buf, size_t room)
{
    unsigned char h[HELD_MAX + HEADER_MAX];
    size_t have = input_peek(ws, h, sizeof h), total;
    struct frame f;
    const char *why;

    if (!read_header(h, have, &f))
        return 0;
    if ((why = frame_error(&f))) {
        violate(ws, TYCHO_WS_PROTOCOL, why);
        return 0;
    }
    if (f.opcode & 8) {
        total = f.header_len + (size_t)f.len;
        if (have < total || room < total)
            return 0;
        if (f.opcode == WSLAY_CONNECTION_CLOSE && !check_close(ws, &f, h + f.header_len))
            return 0;
        input_take(ws, buf, total);
        return total;
    }
    if (room < f.header_len || !check_data_frame(ws, &f) || !text_may_end(ws, &f))
        return 0;
    input_take(ws, buf, f.header_len);
    begin_data_frame(ws, &f);
    return f.header_len;
}

/* Checks text bytes as they pass (masked, from frame_off on); false when not UTF-8. */
static bool check_text(struct tycho_ws *ws, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!utf8_step(&ws->utf8, p[i] ^ ws->key[(ws->frame_off + i) & 3]))
            return false;
    return !(ws->frame_fin && n == ws->frame_left && ws->utf8.need);
}

/* Inside a data frame: hands over what is here of its payload. Returns the bytes, 0 on failure. */
static size_t pass_payload(struct tycho_ws *ws, unsigned char *buf, size_t room)
{
    size_t n = input_left(ws);

    if (n > room)
        n = room;
    if (n > ws->frame_left)
        n = (size_t)ws->frame_left;
    input_peek(ws, buf, n);
    if (ws->frame_text && !check_text(ws, buf, n)) {
        violate(ws, TYCHO_WS_BAD_DATA, "text not UTF-8");
        return 0;
    }
    input_take(ws, buf, n);
    ws->frame_off += n;
    ws->frame_left -= n;
    if (!ws->frame_left && ws->frame_fin)
        ws->msg_kind = 0;
    return n;
}

/* ---- libwslay's callbacks ---- */

/* libwslay wants input: the gate hands it over, up to len bytes. */
static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *user)
{
    struct tycho_ws *ws = user;
    size_t n = 0, k = 1;

    (void)flags;
    while (k && n < len && input_left(ws) && !ws->violation_code) {
        if (ws->frame_left)
            k = pass_payload(ws, buf + n, len - n);
        else
            k = pass_header(ws, buf + n, len - n);
        n += k;
    }
    if (n == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    return (ssize_t)n;
}

/* libwslay has bytes to send: they go to the output buffer. */
static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    struct tycho_ws *ws = user;

    (void)flags;
    if (tycho_buf_append(ws->out, data, len) < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static void keep_message(struct tycho_ws *ws, enum tycho_ws_kind kind, const uint8_t *data,
                         size_t len)
{
    struct msg *m = malloc(sizeof *m + len + 1);

    if (!m) {
        fail(ws);
        return;
    }
    m->kind = kind;
    m->len = len;
    if (len)
        memcpy(m->data, data, len);
    m->data[len] = '\0';
    tycho_list_init(&m->link);
    tycho_list_push_back(&ws->msgs, &m->link);
    ws->pending_bytes += len;
}

static void keep_close(struct tycho_ws *ws, const struct wslay_event_on_msg_recv_arg *a)
{
    size_t len = a->msg_length >= 2 ? a->msg_length - 2 : 0;

    assert(len <= TYCHO_WS_MAX_REASON);
    ws->close_received = true;
    ws->peer_code = a->status_code ? a->status_code : TYCHO_WS_NO_STATUS;
    if (len)
        memcpy(ws->peer_reason, a->msg + 2, len);
    ws->peer_reason[len] = '\0';
    ws->peer_reason_len = len;
}

/* A whole message came through libwslay (it answers pings and echoes a close itself). */
static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a,
                   void *user)
{
    struct tycho_ws *ws = user;

    (void)ctx;
    if (a->opcode == WSLAY_TEXT_FRAME)
        keep_message(ws, TYCHO_WS_TEXT, a->msg, a->msg_length);
    else if (a->opcode == WSLAY_BINARY_FRAME)
        keep_message(ws, TYCHO_WS_BINARY, a->msg, a->msg_length);
    else if (a->opcode == WSLAY_PONG)
        ws->pongs++;
    else if (a->opcode == WSLAY_CONNECTION_CLOSE)
        keep_close(ws, a);
}

/* ---- the API ---- */

struct tycho_ws *tycho_ws_new(const struct tycho_ws_limits *lim)
{
    static const struct wslay_event_callbacks callbacks = {
        .recv_callback = on_recv,
        .send_callback = on_send,
        .on_msg_recv_callback = on_msg,
    };
    struct tycho_ws *ws = calloc(1, sizeof *ws);

    if (!ws)
        return NULL;
    if (lim)
        ws->lim = *lim;
    if (!ws->lim.max_message_bytes)
        ws->lim.max_message_bytes = TYCHO_WS_DEFAULT_MAX_MESSAGE_BYTES;
    if (!ws->lim.max_frame_bytes)
        ws->lim.max_frame_bytes = TYCHO_WS_DEFAULT_MAX_FRAME_BYTES;
    tycho_list_init(&ws->msgs);
    ws->utf8 = utf8_start;
    ws->peer_code = TYCHO_WS_ABNORMAL;
    if (wslay_event_context_server_init(&ws->ctx, &callbacks, ws) != 0) {
        free(ws);
        return NULL;
    }
    wslay_event_config_set_max_recv_msg_length(ws->ctx, ws->lim.max_message_bytes);
    return ws;
}

void tycho_ws_free(struct tycho_ws *ws)
{
    struct tycho_list *l;

    if (!ws)
        return;
    while ((l = tycho_list_first(&ws->msgs))) {
        tycho_list_remove(l);
        free(tycho_container_of(l, struct msg, link));
    }
    free(ws->taken);
    wslay_event_context_free(ws->ctx);
    free(ws);
}

int tycho_ws_feed(struct tycho_ws *ws, const char *data, size_t len)
{
    unsigned char held[HELD_MAX];
    int rc;

    if (ws->failed || !wslay_event_get_read_enabled(ws->ctx))
        return ws->failed ? TYCHO_ERR : TYCHO_OK;
    memcpy(held, ws->held, ws->held_len);       /* input_keep writes ws->held */
    ws->in[0] = held;
    ws->in_len[0] = ws->held_len;
    ws->in[1] = (const unsigned char *)data;
    ws->in_len[1] = len;
    rc = wslay_event_recv(ws->ctx);
    if (ws->violation_code)
        fail_for_violation(ws);
    input_keep(ws);
    if (rc == WSLAY_ERR_NOMEM)
        fail(ws);
    else if (rc != 0 && !ws->violation)
        ws->violation = "protocol error";       /* libwslay's own check: cannot pass the gate */
    return ws->failed ? TYCHO_ERR : TYCHO_OK;
}

bool tycho_ws_next(struct tycho_ws *ws, struct tycho_ws_msg *out)
{
    struct tycho_list *l = tycho_list_first(&ws->msgs);
    struct msg *m;

    free(ws->taken);
    ws->taken = NULL;
    if (!l)
        return false;
    tycho_list_remove(l);
    m = tycho_container_of(l, struct msg, link);
    ws->pending_bytes -= m->len;
    ws->taken = m;
    out->kind = m->kind;
    out->data = m->data;
    out->len = m->len;
    return true;
}

size_t tycho_ws_pending_bytes(const struct tycho_ws *ws)
{
    return ws->pending_bytes;
}

static int queue_msg(struct tycho_ws *ws, unsigned opcode, const char *data, size_t len)
{
    struct wslay_event_msg m = {(uint8_t)opcode, (const uint8_t *)data, len};

    if (!tycho_ws_can_send(ws))
        return TYCHO_ERR;
    return wslay_event_queue_msg(ws->ctx, &m) == 0 ? TYCHO_OK : TYCHO_ERR;
}

int tycho_ws_send(struct tycho_ws *ws, const char *data, size_t len, bool binary)
{
    if (!binary && !tycho_ws_utf8_valid(data, len))
        return TYCHO_ERR;
    return queue_msg(ws, binary ? WSLAY_BINARY_FRAME : WSLAY_TEXT_FRAME, data, len);
}

int tycho_ws_ping(struct tycho_ws *ws, const char *data, size_t len)
{
    if (len > TYCHO_WS_MAX_PING)
        return TYCHO_ERR;
    return queue_msg(ws, WSLAY_PING, data, len);
}

int tycho_ws_close(struct tycho_ws *ws, int code, const char *reason, size_t reason_len)
{
    if (!tycho_ws_can_send(ws) || reason_len > TYCHO_WS_MAX_REASON ||
        (code == 0 && reason_len) || (code != 0 && !sendable_code((unsigned)code)) ||
        !tycho_ws_utf8_valid(reason, reason_len))
        return TYCHO_ERR;
    queue_close(ws, code, reason, reason_len);
    return TYCHO_OK;
}

int tycho_ws_output(struct tycho_ws *ws, struct tycho_buf *out)
{
    int rc;

    if (ws->failed)
        return TYCHO_ERR;
    ws->out = out;
    rc = wslay_event_send(ws->ctx);
    if (rc == 0 && ws->close_due)
        rc = hand_close(ws) < 0 ? WSLAY_ERR_NOMEM : wslay_event_send(ws->ctx);
    ws->out = NULL;
    if (rc != 0) {
        fail(ws);
        return TYCHO_ERR;
    }
    return TYCHO_OK;
}

bool tycho_ws_want_write(const struct tycho_ws *ws)
{
    return ws->close_due || wslay_event_want_write(ws->ctx);
}

size_t tycho_ws_queued_bytes(const struct tycho_ws *ws)
{
    return wslay_event_get_queued_msg_length(ws->ctx);
}

bool tycho_ws_can_send(const struct tycho_ws *ws)
{
    return !ws->failed && !ws->close_queued && wslay_event_get_read_enabled(ws->ctx);
}

bool tycho_ws_closed(const struct tycho_ws *ws)
{
    if (ws->failed)
        return true;
    return wslay_event_get_close_sent(ws->ctx) &&
           (ws->close_received || !wslay_event_get_read_enabled(ws->ctx));
}

int tycho_ws_peer_code(const struct tycho_ws *ws)
{
    return ws->peer_code;
}

const char *tycho_ws_peer_reason(const struct tycho_ws *ws, size_t *len)
{
    if (len)
        *len = ws->peer_reason_len;
    return ws->peer_reason;
}

int tycho_ws_sent_code(const struct tycho_ws *ws)
{
    if (wslay_event_get_close_sent(ws->ctx))
        return wslay_event_get_status_code_sent(ws->ctx);
    if (ws->close_queued)
        return ws->close_code ? ws->close_code : TYCHO_WS_NO_STATUS;
    return ws->close_received ? ws->peer_code : 0;  /* the echo, or none */
}

const char *tycho_ws_violation(const struct tycho_ws *ws)
{
    return ws->violation;
}

unsigned long tycho_ws_pongs(const struct tycho_ws *ws)
{
    return ws->pongs;
}
