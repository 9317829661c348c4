/*
 * buf.c: growable byte buffer; doubles on growth and slides consumed bytes
 * out of the way before growing.
 */
#include "core/buf.h"
#include "core/tycho.h"

#include <stdlib.h>
#include <string.h>

char *tycho_buf_reserve(struct tycho_buf *b, size_t n)
{
    size_t need, cap;
    char *grown;

    if (b->data && b->off + b->len + n <= b->cap)
        return b->data + b->off + b->len;
    if (b->off) {
        memmove(b->data, b->data + b->off, b->len);
        b->off = 0;
        if (b->len + n <= b->cap)
            return b->data + b->len;
    }
    need = b->len + n;
    cap = b->cap ? b->cap : 1024;
    while (cap < need)
        cap *= 2;
    grown = realloc(b->data, cap);
    if (!grown)
        return NULL;
    b->data = grown;
    b->cap = cap;
    return b->data + b->len;
}

int tycho_buf_append(struct tycho_buf *b, const void *src, size_t n)
{
    char *dst = tycho_buf_reserve(b, n);

    if (!dst)
        return TYCHO_ERR;
    memcpy(dst, src, n);
    b->len += n;
    return TYCHO_OK;
}

int tycho_buf_puts(struct tycho_buf *b, const char *s)
{
    return tycho_buf_append(b, s, strlen(s));
}

void tycho_buf_consume(struct tycho_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        b->off = 0;
    } else {
        b->off += n;
        b->len -= n;
    }
}

void tycho_buf_dispose(struct tycho_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->off = b->cap = 0;
}
