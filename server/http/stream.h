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

#endif
