/*
 * arena.h: a per-request bump allocator. The first block is allocated once
 * and kept while the owning request context sits in its pool; larger needs
 * get extra blocks, freed by tycho_arena_reset at the end of each request.
 * Single-threaded: owned by one request context on one worker.
 */
#ifndef TYCHO_ARENA_H
#define TYCHO_ARENA_H

#include <stddef.h>

struct tycho_arena_block;

struct tycho_arena {
    char *first;                      /* owned: the kept block */
    size_t first_bytes;               /* its size */
    char *cur;                        /* the block being filled (first or the newest extra) */
    size_t used, cap;                 /* bytes used and size of cur */
    struct tycho_arena_block *extra;  /* owned: blocks added since the last reset */
};

/* Allocates the first block. Returns TYCHO_OK, or TYCHO_ERR when out of memory. */
int tycho_arena_init(struct tycho_arena *a, size_t first_bytes);

/* Frees every block. The arena may be initialised again afterwards. */
void tycho_arena_dispose(struct tycho_arena *a);

/* Frees the extra blocks and empties the first. Every pointer it gave is then invalid. */
void tycho_arena_reset(struct tycho_arena *a);

/* Returns n bytes aligned for any type, or NULL when out of memory. */
void *tycho_arena_alloc(struct tycho_arena *a, size_t n);

/*
 * Grows the allocation p of old_len bytes by add bytes and copies add bytes
 * from src to its end. p may be NULL (with old_len 0). Grows in place when p is
 * the newest allocation and there is room; otherwise moves it, doubling, so
 * appending many small pieces costs linear time. Returns the (possibly moved)
 * pointer, or NULL when out of memory (p stays valid).
 */
char *tycho_arena_append(struct tycho_arena *a, char *p, size_t old_len, const char *src,
                         size_t add);

#endif
