/*
 * ws.h: the WebSocket protocol (RFC 6455), server side, with no socket, no
 * loop and no Lua: the opening handshake checked and answered, then bytes
 * in, messages out, messages in, bytes out. The framing, the reassembly of
 * fragments, the pong to each ping and the echo of a close are libwslay's
 * (a server context of its event API); this module stands in front of it
 * and checks each frame before libwslay sees any of its bytes, so that
 * every violation fails the connection with its close code and a short
 * reason:
 *
 *   1002  unmasked frame, reserved bits or opcode, a fragmented or too long
 *         control frame, a length not in its shortest form, a continuation
 *         with no message or a new message inside one, a close frame of one
 *         byte or with a code that may not be sent (RFC 6455 §7.4)
 *   1007  a text message or a close reason that is not UTF-8 (RFC 3629:
 *         no overlong form, no surrogate, nothing past U+10FFFF), checked
 *         as its bytes arrive, across fragments and reads
 *   1009  a frame past max_frame_bytes, a message past max_message_bytes
 *         (checked from the frame headers: no byte of it is kept)
 *
 * The caller uses 1000 for a normal close and 1001 when the server stops.
 *
 * Threads: a struct tycho_ws belongs to the thread that made it (a worker,
 * for its connection); nothing here is shared or locked. The handshake
 * functions are pure and may be called from any thread.
 *
 * Ownership: tycho_ws_new allocates, tycho_ws_free frees everything (the
 * libwslay context, received messages not taken, queued output). Input
 * bytes are borrowed for the duration of tycho_ws_feed; the few that end
 * in the middle of a frame header or a control frame are copied and kept.
 * Output goes into the caller's struct tycho_buf.
 *
 * Errors: functions return TYCHO_OK or TYCHO_ERR (out of memory, or a
 * misuse their comment names); queries never fail. A violation by the peer
 * is not an error of the call: it queues the close frame and
 * tycho_ws_closed() turns true once that frame is in the output.
 *
 * The loop, as the connection drives it:
 *
 *     read bytes  -> tycho_ws_feed -> tycho_ws_next until false (messages)
 *     app sends   -> tycho_ws_send / _ping / _close
 *     then        -> tycho_ws_output into the connection's buffer, write it
 *     tycho_ws_closed() -> write what is left of the buffer, close the socket
 *
 * Back-pressure is the caller's: stop reading the socket while messages
 * wait (tycho_ws_pending_bytes) or the output buffer is long, since a ping
 * read is a pong written. Timing is the caller's too (idle, the wait for
 * the peer's close after ours): every arrival goes through tycho_ws_feed,
 * and tycho_ws_pongs counts the pongs that answer tycho_ws_ping.
 */
#ifndef TYCHO_WS_H
#define TYCHO_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

struct tycho_req;

/* ---- the opening handshake (RFC 6455 §4.2) ----------------------------------------------- */

/* Bytes of a Sec-WebSocket-Accept value with its NUL: 28 characters of base64 and '\0'. */
#define TYCHO_WS_ACCEPT_LEN 29

/* The header line a 426 answer must carry (RFC 6455 §4.4). */
#define TYCHO_WS_VERSION_HEADER "Sec-WebSocket-Version: 13\r\n"

/*
 * Checks that r is a WebSocket opening handshake (RFC 6455 §4.2.1): GET,
 * HTTP/1.1 or later, an Upgrade header with the token "websocket" in its
 * list and a Connection header with "upgrade" (both any case, in any of the
 * headers of that name), exactly one Sec-WebSocket-Key whose value is the
 * base64 of 16 bytes, and Sec-WebSocket-Version 13. On success fills accept
 * (accept_len >= TYCHO_WS_ACCEPT_LEN) with the Sec-WebSocket-Accept value
 * and returns 0. Otherwise returns the status to answer: 400, or 426 for a
 * version other than 13 (answer it with TYCHO_WS_VERSION_HEADER); *why
 * then says what was wrong (a static string). r is only read.
 */
int tycho_ws_handshake(const struct tycho_req *r, char *accept, size_t accept_len,
                       const char **why);

/*
 * Whether the client offered the subprotocol name (exactly, among the
 * comma-separated values of its Sec-WebSocket-Protocol headers).
 */
bool tycho_ws_offered(const struct tycho_req *r, const char *name);

/*
 * Appends the handshake's answer to out: "HTTP/1.1 101 Switching Protocols",
 * Upgrade, Connection, Sec-WebSocket-Accept: accept, then
 * "Sec-WebSocket-Protocol: protocol" when protocol is not NULL (the one the
 * server chose among those offered), then extra_headers as given ("" or
 * whole "Name: value\r\n" lines, e.g. Date and Server), then the empty line.
 * TYCHO_ERR when protocol is not a token (RFC 9110 §5.6.2) or out of memory;
 * out is then unchanged.
 */
int tycho_ws_write_accept(struct tycho_buf *out, const char *accept, const char *protocol,
                          const char *extra_headers);

/* ---- a connection after the handshake ---------------------------------------------------- */

/* Close codes (RFC 6455 §7.4.1). */
#define TYCHO_WS_NORMAL 1000        /* done */
#define TYCHO_WS_GOING_AWAY 1001    /* the server stops */
#define TYCHO_WS_PROTOCOL 1002      /* a protocol violation */
#define TYCHO_WS_NO_STATUS 1005     /* received: a close frame without a code (never sent) */
#define TYCHO_WS_ABNORMAL 1006      /* received: no close frame at all (never sent) */
#define TYCHO_WS_BAD_DATA 1007      /* text that is not UTF-8 */
#define TYCHO_WS_TOO_BIG 1009       /* a frame or message past the limits */
#define TYCHO_WS_INTERNAL 1011      /* the server failed */

/* Bytes of a close reason at most: a control frame's 125 less the code's 2. */
#define TYCHO_WS_MAX_REASON 123

/* Bytes of a ping's payload at most. */
#define TYCHO_WS_MAX_PING 125

/*
 * What a peer may send; past either the connection fails with 1009. libwslay
 * allocates a frame's payload when its header arrives, so a connection holds
 * at most max_message_bytes of a message being received, plus the messages
 * waiting for tycho_ws_next.
 */
struct tycho_ws_limits {
    size_t max_message_bytes;   /* a whole received message, its fragments together */
    size_t max_frame_bytes;     /* one received frame's payload */
};

/* The limits tycho_ws_new(NULL) uses. */
#define TYCHO_WS_DEFAULT_MAX_MESSAGE_BYTES (1024 * 1024)
#define TYCHO_WS_DEFAULT_MAX_FRAME_BYTES TYCHO_WS_DEFAULT_MAX_MESSAGE_BYTES

enum tycho_ws_kind {
    TYCHO_WS_TEXT = 1,          /* valid UTF-8 (checked) */
    TYCHO_WS_BINARY = 2
};

/* A received message, as tycho_ws_next gives it. */
struct tycho_ws_msg {
    enum tycho_ws_kind kind;
    const char *data;           /* borrowed: the module's until the next tycho_ws_next or
                                   tycho_ws_free; NUL-terminated (the NUL not counted) */
    size_t len;
};

struct tycho_ws;

/*
 * A server-side connection that has just answered 101. lim is copied (NULL:
 * the defaults above; a zero field: its default). NULL when out of memory.
 */
struct tycho_ws *tycho_ws_new(const struct tycho_ws_limits *lim);

/* Frees ws and all it holds. NULL is a no-op. */
void tycho_ws_free(struct tycho_ws *ws);

/*
 * Gives ws the next bytes read from the peer (any split: a frame may come
 * in any number of pieces, with the same outcome). Complete messages are
 * queued for tycho_ws_next; a ping queues its pong, a close its echo (a pong
 * still queued then is dropped: libwslay sends nothing but the close once it
 * is queued). Bytes after the peer's close, after a violation or once closed
 * are ignored. TYCHO_ERR when out of memory: the connection must close
 * (tycho_ws_closed is then true).
 */
int tycho_ws_feed(struct tycho_ws *ws, const char *data, size_t len);

/*
 * Takes the oldest received message into *out: true, or false when none
 * waits. The previous message given is freed by this call.
 */
bool tycho_ws_next(struct tycho_ws *ws, struct tycho_ws_msg *out);

/* Bytes of the received messages waiting for tycho_ws_next. */
size_t tycho_ws_pending_bytes(const struct tycho_ws *ws);

/*
 * Queues a message (text when !binary: it must be valid UTF-8), sent whole
 * as one frame. The bytes are copied. TYCHO_ERR, nothing queued, when text
 * is not UTF-8, when ws can no longer send (tycho_ws_can_send) or out of
 * memory.
 */
int tycho_ws_send(struct tycho_ws *ws, const char *data, size_t len, bool binary);

/*
 * Queues a ping with len <= TYCHO_WS_MAX_PING bytes of payload (the peer's
 * pong is counted by tycho_ws_pongs). TYCHO_ERR when too long, when ws can
 * no longer send, or out of memory.
 */
int tycho_ws_ping(struct tycho_ws *ws, const char *data, size_t len);

/*
 * Starts the closing handshake: queues a close frame with code and reason
 * (reason_len <= TYCHO_WS_MAX_REASON bytes of UTF-8; code 0: a close frame
 * without code nor reason), to go out after all that was queued before it.
 * Nothing can be sent after it; received messages still arrive until the
 * peer's close. TYCHO_ERR when the code may not be
 * sent (1000-1003, 1007-1011 and 3000-4999 may), the reason is bad, ws can no
 * longer send, or out of memory.
 */
int tycho_ws_close(struct tycho_ws *ws, int code, const char *reason, size_t reason_len);

/*
 * Appends every frame waiting to be sent to out (server frames are never
 * masked). TYCHO_ERR when out of memory: the connection must close.
 */
int tycho_ws_output(struct tycho_ws *ws, struct tycho_buf *out);

/* Whether frames wait for tycho_ws_output. */
bool tycho_ws_want_write(const struct tycho_ws *ws);

/* Bytes of the messages queued by tycho_ws_send and not yet in an output buffer. */
size_t tycho_ws_queued_bytes(const struct tycho_ws *ws);

/* Whether messages may still be queued: no close frame queued (ours or our echo) and no failure. */
bool tycho_ws_can_send(const struct tycho_ws *ws);

/*
 * Whether the connection is over, once the output buffer is written: our
 * close frame is in the output and the peer's close was received or will not
 * be waited for (a violation), or a call failed. After a close of ours the
 * caller bounds the wait for the peer's.
 */
bool tycho_ws_closed(const struct tycho_ws *ws);

/*
 * The peer's close: its code (1005 when the frame had none, 1006 when no close
 * frame came) and its reason (borrowed, NUL-terminated, "" when none; *len its
 * bytes if len is not NULL).
 */
int tycho_ws_peer_code(const struct tycho_ws *ws);
const char *tycho_ws_peer_reason(const struct tycho_ws *ws, size_t *len);

/*
 * Our close: the code of the close frame queued or sent (0 when none), and
 * the reason we gave for failing the connection on a violation (a static
 * string; NULL when the peer did not violate anything).
 */
int tycho_ws_sent_code(const struct tycho_ws *ws);
const char *tycho_ws_violation(const struct tycho_ws *ws);

/* Pongs received so far (solicited or not). */
unsigned long tycho_ws_pongs(const struct tycho_ws *ws);

/* Whether s holds len bytes of valid UTF-8 (RFC 3629). */
bool tycho_ws_utf8_valid(const char *s, size_t len);

#endif
