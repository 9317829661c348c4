/*
 * arena.c: bump allocation over a kept first block plus a list of extra
 * blocks. Alignment is 16 bytes so any object can live here.
 */
#include "core/arena.h"
#include "core/tycho.h"

#include <stdlib.h>
#include <string.h>

#define ALIGN 16
#define ALIGN_UP(n) (((n) + (ALIGN - 1)) & ~(size_t)(ALIGN - 1))

struct tycho_arena_block {
    struct tycho_arena_block *next;
    size_t cap;
    _Alignas(16) char data[];
};

int tycho_arena_init(struct tycho_arena *a, size_t first_bytes)
{
    memset(a, 0, sizeof(*a));
    a->first = malloc(first_bytes);
    if (!a->first)
        return TYCHO_ERR;
    a->first_bytes = first_bytes;
    a->cur = a->first;
    a->cap = first_bytes;
    return TYCHO_OK;
}

static void free_extra(struct tycho_arena *a)
{
    struct tycho_arena_block *b = a->extra, *next;

    for (; b; b = next) {
        next = b->next;
        free(b);
    }
    a->extra = NULL;
}

void tycho_arena_dispose(struct tycho_arena *a)
{
    free_extra(a);
    free(a->first);
    memset(a, 0, sizeof(*a));
}

void tycho_arena_reset(struct tycho_arena *a)
{
    free_extra(a);
    a->cur = a->first;
    a->cap = a->first_bytes;
    a->used = 0;
}

/* Starts a new block of at least n bytes; the rest of the current one is abandoned. */
static int add_block(struct tycho_arena *a, size_t n)
{
    size_t cap = n > a->cap * 2 ? n : a->cap * 2;
    struct tycho_arena_block *b;

    if (cap < a->first_bytes)
        cap = a->first_bytes;
    b = malloc(sizeof(*b) + cap);
    if (!b)
        return TYCHO_ERR;
    b->cap = cap;
    b->next = a->extra;
    a->extra = b;
    a->cur = b->data;
    a->cap = cap;
    a->used = 0;
    return TYCHO_OK;
}

void *tycho_arena_alloc(struct tycho_arena *a, size_t n)
{
    size_t start = ALIGN_UP(a->used);
    void *p;

    if (n > a->cap || start > a->cap - n) {
        if (add_block(a, n) < 0)
            return NULL;
        start = 0;
    }
    p = a->cur + start;
    a->used = start + n;
    return p;
}

char *tycho_arena_append(struct tycho_arena *a, char *p, size_t old_len, const char *src,
                         size_t add)
{
    char *grown;

    /* In place: p is the newest allocation of the current block and add fits. */
    if (p && p + old_len == a->cur + a->used && add <= a->cap - a->used) {
        memcpy(p + old_len, src, add);
        a->used += add;
        return p;
    }
    grown = tycho_arena_alloc(a, (old_len + add) * 2);
    if (!grown)
        return NULL;
    if (old_len)
        memcpy(grown, p, old_len);
    memcpy(grown + old_len, src, add);
    /* Give back the slack so the next append can grow in place. */
    a->used -= (old_len + add) * 2 - (old_len + add);
    return grown;
}
