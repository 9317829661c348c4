/*
 * pool.h: a bounded free list of fixed-size objects (connections, request
 * contexts). Objects are made on demand up to max_live, come back with
 * tycho_pool_put, and idle ones are given back to malloc by tycho_pool_trim.
 * No locks: only the owning worker's thread touches a pool.
 */
#ifndef TYCHO_POOL_H
#define TYCHO_POOL_H

#include <stddef.h>

/* Sets up a fresh object's owned parts (buffers); TYCHO_OK or TYCHO_ERR. */
typedef int tycho_pool_init_fn(void *obj);
/* Frees what init set up; the pool frees the object itself. */
typedef void tycho_pool_dispose_fn(void *obj);

struct tycho_pool {
    size_t obj_bytes;
    unsigned max_live;         /* bound on objects handed out at once */
    unsigned live;             /* handed out now */
    unsigned free_count;       /* on the free list now */
    unsigned free_low;         /* fewest on the free list since the last trim */
    void *free_head;           /* owned: objects link through their first pointer */
    tycho_pool_init_fn *init;       /* may be NULL */
    tycho_pool_dispose_fn *dispose; /* may be NULL */
    unsigned long fails;       /* gets refused: bound reached or out of memory */
    unsigned long made;        /* objects allocated over the pool's life */
};

/* obj_bytes must be at least sizeof(void *). */
void tycho_pool_init(struct tycho_pool *p, size_t obj_bytes, unsigned max_live,
                     tycho_pool_init_fn *init, tycho_pool_dispose_fn *dispose);

/*
 * Returns an object: from the free list as the caller last reset it, or
 * fresh (zeroed, then init). NULL when max_live objects are out or memory
 * ran out; the caller then answers 503 and closes.
 */
void *tycho_pool_get(struct tycho_pool *p);

/* Takes back an object the caller has reset. */
void tycho_pool_put(struct tycho_pool *p, void *obj);

/*
 * Frees the objects that stayed on the free list through the whole period
 * since the previous trim (they were not needed), so a quiet pool shrinks to
 * nothing and a busy one keeps what it uses. Returns how many it freed.
 */
unsigned tycho_pool_trim(struct tycho_pool *p);

/* Frees the free list. Objects still out are the caller's to put back first. */
void tycho_pool_dispose(struct tycho_pool *p);

#endif
