/*
 * stream.h: streamed responses (res:write): the head goes out at the first
 * write, then each write's bytes, framed in chunks for HTTP/1.1 and ended by
 * the close for HTTP/1.0, are sent at once, as much as the socket takes.
 * What the socket does not take waits in the connection's own buffer; past
 * TYCHO_STREAM_HIGH_BYTES the writer is told to wait (the application
 * suspends its handler until r->on_drained), so a client that reads slowly
 * never makes the server hold more than about that much. The end of the
 * body (the last chunk) is written when the handler returns (exchange.c).
 * Worker thread of r's connection, while r's handler runs.
 */
#ifndef TYCHO_STREAM_H
#define TYCHO_STREAM_H

#include <stdbool.h>
#include <stddef.h>

struct tycho_req;

/* Output waiting for the socket past which a writer waits; it goes on below the low mark. */
#define TYCHO_STREAM_HIGH_BYTES (64 * 1024)
#define TYCHO_STREAM_LOW_BYTES (16 * 1024)

/* tycho_stream_write's answer when the bytes were taken but the writer must now wait. */
#define TYCHO_STREAM_FULL 1

/*
 * Sends len bytes of r's body (none for HEAD or a status without a body;
 * len 0 sends only the head if it has not gone). Returns TYCHO_OK,
 * TYCHO_STREAM_FULL (taken; wait until fewer than TYCHO_STREAM_LOW_BYTES
 * wait), or TYCHO_ERR: the client is gone or there is no memory, and every
 * later write fails too (r->stream_closed).
 */
int tycho_stream_write(struct tycho_req *r, const char *data, size_t len);

/* Bytes of r's connection still waiting for the socket. */
size_t tycho_stream_waiting(const struct tycho_req *r);

/*
 * Taking a connection over (a WebSocket, ws.h): answers r with the 101 of
 * the handshake (accept, protocol or NULL; the Server and Date lines and the
 * headers r's handler set, Set-Cookie say) and hands the connection's bytes
 * to the handler from then on: it reads them with tycho_stream_input and
 * writes with tycho_stream_out and tycho_stream_push. The connection closes
 * when the handler ends. TYCHO_ERR when out of memory or r's head went.
 */
int tycho_stream_upgrade(struct tycho_req *r, const char *accept, const char *protocol);

/* The input read and not yet taken (*data, returned length); 0 when none. */
size_t tycho_stream_input(const struct tycho_req *r, const char **data);

/* Takes n bytes of that input; reads again if reading had stopped. TYCHO_ERR: cannot. */
int tycho_stream_consume(struct tycho_req *r, size_t n);

/* Whether r's connection was taken over (tycho_stream_upgrade). */
bool tycho_stream_upgraded(const struct tycho_req *r);

/*
 * What a writer other than r's own handler (a timer, another request's
 * handler) may leave waiting for r's client: past it, its writes are
 * refused or the connection closed, since such a writer cannot wait.
 */
#define TYCHO_STREAM_SLOW_BYTES (1024 * 1024)

/* Whether the client has closed its side (no more input will come). */
bool tycho_stream_eof(const struct tycho_req *r);

/* Whether the server is stopping (a taken-over connection should close, 1001). */
bool tycho_stream_stopping(const struct tycho_req *r);

/* Where a taken-over connection's output goes (append, then tycho_stream_push). */
struct tycho_buf *tycho_stream_out(struct tycho_req *r);

/* Sends what was appended: TYCHO_OK, TYCHO_STREAM_FULL or TYCHO_ERR, as tycho_stream_write. */
int tycho_stream_push(struct tycho_req *r);

#endif
