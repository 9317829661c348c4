/*
 * pool.c: free list through the first pointer of each free object. The low
 * water mark of the free list over a trim period says how many objects were
 * never needed in that period; trim frees exactly those.
 */
#include "core/pool.h"
#include "core/tycho.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void tycho_pool_init(struct tycho_pool *p, size_t obj_bytes, unsigned max_live,
                     tycho_pool_init_fn *init, tycho_pool_dispose_fn *dispose)
{
    memset(p, 0, sizeof(*p));
    p->obj_bytes = obj_bytes < sizeof(void *) ? sizeof(void *) : obj_bytes;
    p->max_live = max_live;
    p->init = init;
    p->dispose = dispose;
}

void *tycho_pool_get(struct tycho_pool *p)
{
    void *obj;

    if (p->live >= p->max_live) {
        p->fails++;
        return NULL;
    }
    if (p->free_head) {
        obj = p->free_head;
        p->free_head = *(void **)obj;
        *(void **)obj = NULL;
        p->free_count--;
        if (p->free_count < p->free_low)
            p->free_low = p->free_count;
    } else {
        obj = calloc(1, p->obj_bytes);
        if (!obj || (p->init && p->init(obj) < 0)) {
            free(obj);
            p->fails++;
            return NULL;
        }
        p->made++;
    }
    p->live++;
    return obj;
}

void tycho_pool_put(struct tycho_pool *p, void *obj)
{
    assert(obj && p->live > 0 && "put back more than was taken");
    *(void **)obj = p->free_head;
    p->free_head = obj;
    p->free_count++;
    p->live--;
}

/* Unlinks and frees one object from the front of the free list. */
static void free_one(struct tycho_pool *p)
{
    void *obj = p->free_head;

    p->free_head = *(void **)obj;
    p->free_count--;
    if (p->dispose)
        p->dispose(obj);
    free(obj);
}

unsigned tycho_pool_trim(struct tycho_pool *p)
{
    unsigned unused = p->free_low, n;

    for (n = 0; n < unused && p->free_head; n++)
        free_one(p);
    p->free_low = p->free_count;
    return n;
}

void tycho_pool_dispose(struct tycho_pool *p)
{
    while (p->free_head)
        free_one(p);
    p->free_low = 0;
}
