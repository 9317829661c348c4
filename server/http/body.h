/*
 * body.h: streamed request bodies (a route with stream_body): the handler
 * runs as soon as the head is in and reads the body as it arrives. The
 * server holds at most TYCHO_BODY_BUF_BYTES of it (the request's buffer)
 * plus what a connection keeps of its input while a handler runs; the rest
 * waits in the kernel, so a client sending faster than the handler reads is
 * slowed by TCP itself. Worker thread of r's connection, while r's handler
 * runs.
 */
#ifndef TYCHO_BODY_H
#define TYCHO_BODY_H

#include <stddef.h>

struct tycho_req;

enum tycho_body_result {
    TYCHO_BODY_DATA,    /* *data holds *len bytes (1 to max) */
    TYCHO_BODY_END,     /* the whole body has been read (again at each later call) */
    TYCHO_BODY_WAIT,    /* no byte has come yet: wait with tycho_body_wait, then read again */
    TYCHO_BODY_FAILED   /* r->body_error says why: 413 over max_body, 408 no byte for
                           --body-timeout, 400 bad chunked framing or the input ended */
};

/*
 * Takes up to max (> 0) bytes of r's streamed body. *data stays valid until
 * the next call or the end of the request; the bytes taken are gone from the
 * buffer. The first call that finds the buffer empty answers a pending
 * Expect: 100-continue (unless the response's head went already), so a
 * handler that never reads makes the client send nothing.
 */
enum tycho_body_result tycho_body_read(struct tycho_req *r, size_t max, const char **data,
                                       size_t *len);

/*
 * After WAIT: calls fn(r) from the loop once body bytes came or the wait
 * failed (then r->body_error is set), never from inside this call and never
 * once the connection has closed (its handler is abandoned). arg is kept in
 * r->body_arg for fn.
 */
void tycho_body_wait(struct tycho_req *r, void (*fn)(struct tycho_req *r), void *arg);

/* Cancels a wait begun by tycho_body_wait (its handler is abandoned): fn is not called. */
void tycho_body_unwait(struct tycho_req *r);

#endif
