/*
 * buf.h: a growable byte buffer for response output. Single-threaded: owned
 * by one worker (its shared output scratch) or one connection (output the
 * socket did not take yet).
 */
#ifndef TYCHO_BUF_H
#define TYCHO_BUF_H

#include <stddef.h>

struct tycho_buf {
    char *data;   /* owned; NULL until the first append */
    size_t len;   /* bytes held, from data + off */
    size_t off;   /* bytes already consumed from the front */
    size_t cap;   /* bytes allocated */
};

/* Appends n bytes. Returns TYCHO_OK or TYCHO_ERR (out of memory; b unchanged). */
int tycho_buf_append(struct tycho_buf *b, const void *src, size_t n);

/* Appends a NUL-terminated string. */
int tycho_buf_puts(struct tycho_buf *b, const char *s);

/* Makes room for n more bytes and returns where they go, or NULL. Commit with b->len += n. */
char *tycho_buf_reserve(struct tycho_buf *b, size_t n);

/* Drops n bytes from the front. */
void tycho_buf_consume(struct tycho_buf *b, size_t n);

/* Frees the memory; the buffer is empty and may be used again. */
void tycho_buf_dispose(struct tycho_buf *b);

#endif
