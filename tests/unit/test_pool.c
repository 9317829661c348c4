/*
 * test_pool.c: unit tests for pool.[ch] through its public header.
 *
 * Exhaustion at max_live (NULL and the fails counter), reuse of put objects,
 * init/dispose call counts, an init that fails, trim's low-water-mark rule
 * (it frees exactly the objects that stayed idle over a whole period) and
 * dispose. Every object the test takes is put back and every pool disposed,
 * so the test is clean under ASan/LSan. Single-threaded. Ends with the
 * harness line `N passed, M failed`.
 */
#include <stdlib.h>
#include <string.h>

#include "core/tycho.h"
#include "harness.h"
#include "core/pool.h"

/* A pooled object: the first pointer is the pool's link while free. */
struct thing {
    void *link;
    char *owned;     /* set up by init, freed by dispose */
    int serial;      /* which init made it */
    int payload;
};

static int inits, disposes, init_fail_at; /* init_fail_at: fail the Nth init (1-based), 0 never */

static int on_init(void *obj)
{
    struct thing *t = obj;

    inits++;
    if (init_fail_at && inits == init_fail_at)
        return TYCHO_ERR;
    if (!(t->owned = malloc(32)))
        return TYCHO_ERR;
    t->serial = inits;
    return TYCHO_OK;
}

static void on_dispose(void *obj)
{
    struct thing *t = obj;

    disposes++;
    free(t->owned);
    t->owned = NULL;
}

static void reset_counts(void)
{
    inits = disposes = init_fail_at = 0;
}

static void test_exhaustion(void)
{
    struct tycho_pool p;
    struct thing *got[4];
    int distinct = 1;

    reset_counts();
    tycho_pool_init(&p, sizeof(struct thing), 4, on_init, on_dispose);
    is_int(p.live, 0, "fresh pool: none live");
    is_int(p.free_count, 0, "fresh pool: free list empty");
    for (int i = 0; i < 4; i++) {
        got[i] = tycho_pool_get(&p);
        ok(got[i] != NULL, "get below max_live");
    }
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++)
            distinct &= got[i] != got[j];
    ok(distinct, "distinct objects");
    is_int(inits, 4, "init once per fresh object");
    is_int(p.live, 4, "live = 4");
    ok(got[0] && got[0]->owned && got[0]->payload == 0 && got[0]->link == NULL,
       "fresh object is zeroed then init'ed");
    ok(tycho_pool_get(&p) == NULL, "get at max_live: NULL");
    ok(tycho_pool_get(&p) == NULL, "get at max_live again: NULL");
    is_int(p.fails, 2, "fails counts refused gets");
    is_int(p.live, 4, "refused gets do not change live");
    is_int(inits, 4, "refused gets do not init");

    tycho_pool_put(&p, got[2]);
    is_int(p.live, 3, "put: live down");
    is_int(p.free_count, 1, "put: on the free list");
    got[2] = tycho_pool_get(&p);
    ok(got[2] != NULL, "get after a put");
    ok(tycho_pool_get(&p) == NULL, "full again");
    is_int(p.fails, 3, "fails = 3");

    for (int i = 0; i < 4; i++)
        tycho_pool_put(&p, got[i]);
    is_int(p.live, 0, "all put back");
    is_int(p.free_count, 4, "all on the free list");
    is_int(disposes, 0, "put does not dispose");
    tycho_pool_dispose(&p);
    is_int(disposes, 4, "dispose frees the free list, disposing each");
    is_int(p.free_count, 0, "dispose empties the free list");
    ok(p.free_head == NULL, "dispose: no head");
    is_int(inits, 4, "inits = 4 in all");

    /* max_live 0: nothing is ever handed out. */
    tycho_pool_init(&p, sizeof(struct thing), 0, NULL, NULL);
    ok(tycho_pool_get(&p) == NULL, "max_live 0: NULL");
    is_int(p.fails, 1, "max_live 0: counted");
    tycho_pool_dispose(&p);
}

static void test_reuse(void)
{
    struct tycho_pool p;
    struct thing *a, *b, *c;

    reset_counts();
    tycho_pool_init(&p, sizeof(struct thing), 8, on_init, on_dispose);
    a = tycho_pool_get(&p);
    a->payload = 1234;
    tycho_pool_put(&p, a);
    b = tycho_pool_get(&p);
    ok(b == a, "get after put returns the same object");
    is_int(inits, 1, "a reused object is not init'ed again");
    ok(b->link == NULL, "the link pointer is cleared on get");
    is_int(b->payload, 1234, "reused object comes back as the caller left it");
    ok(b->owned != NULL, "reused object keeps what init set up");
    is_int(b->serial, 1, "same serial");

    /* LIFO: the most recently put comes back first. */
    c = tycho_pool_get(&p);
    ok(c != b, "second object is fresh");
    is_int(inits, 2, "second init");
    tycho_pool_put(&p, b);
    tycho_pool_put(&p, c);
    ok(tycho_pool_get(&p) == c, "most recently put comes first");
    ok(tycho_pool_get(&p) == b, "then the one before");
    is_int(inits, 2, "no more inits");
    tycho_pool_put(&p, b);
    tycho_pool_put(&p, c);
    tycho_pool_dispose(&p);
    is_int(disposes, 2, "dispose: one per object made");

    /* obj_bytes below a pointer is raised to a pointer. */
    tycho_pool_init(&p, 1, 2, NULL, NULL);
    ok(p.obj_bytes >= sizeof(void *), "obj_bytes at least a pointer");
    a = tycho_pool_get(&p);
    ok(a != NULL, "tiny object");
    tycho_pool_put(&p, a);
    tycho_pool_dispose(&p);
}

static void test_init_failure(void)
{
    struct tycho_pool p;
    struct thing *a, *b;

    reset_counts();
    init_fail_at = 2;
    tycho_pool_init(&p, sizeof(struct thing), 4, on_init, on_dispose);
    a = tycho_pool_get(&p);
    ok(a != NULL, "first init succeeds");
    b = tycho_pool_get(&p);
    ok(b == NULL, "failing init: NULL");
    is_int(p.fails, 1, "failing init counted in fails");
    is_int(p.live, 1, "failing init does not count as live");
    is_int(disposes, 0, "a failed init is not disposed");
    b = tycho_pool_get(&p);
    ok(b != NULL, "next init succeeds");
    is_int(p.live, 2, "live = 2");
    tycho_pool_put(&p, a);
    tycho_pool_put(&p, b);
    tycho_pool_dispose(&p);
    is_int(disposes, 2, "dispose: only the objects that were made");
}

/* Takes n objects into out[]; returns how many it got. */
static int take(struct tycho_pool *p, struct thing **out, int n)
{
    int got = 0;

    for (int i = 0; i < n; i++)
        if ((out[i] = tycho_pool_get(p)))
            got++;
    return got;
}

static void give(struct tycho_pool *p, struct thing **objs, int n)
{
    for (int i = 0; i < n; i++)
        tycho_pool_put(p, objs[i]);
}

static void test_trim(void)
{
    struct tycho_pool p;
    struct thing *t[16];

    reset_counts();
    tycho_pool_init(&p, sizeof(struct thing), 16, on_init, on_dispose);
    is_int(tycho_pool_trim(&p), 0, "trim of an empty pool");

    /* Period 1: ten objects made and returned. None was on the list for the whole period. */
    is_int(take(&p, t, 10), 10, "take 10");
    give(&p, t, 10);
    is_int(tycho_pool_trim(&p), 0, "objects put back during the period are kept");
    is_int(p.free_count, 10, "10 free after the first trim");
    is_int(disposes, 0, "nothing disposed yet");

    /* Period 2: only 3 used at once, so 7 stayed idle the whole period. */
    take(&p, t, 3);
    give(&p, t, 3);
    take(&p, t, 2);
    give(&p, t, 2);
    is_int(p.free_low, 7, "low-water mark is the fewest free during the period");
    is_int(tycho_pool_trim(&p), 7, "trim frees exactly the idle ones");
    is_int(disposes, 7, "each freed object disposed");
    is_int(p.free_count, 3, "the used ones are kept");
    is_int(inits, 10, "no object made by trim");

    /* Period 3: all three kept ones used, plus two more made and returned. */
    take(&p, t, 5);
    is_int(inits, 12, "two fresh objects");
    give(&p, t, 5);
    is_int(tycho_pool_trim(&p), 0, "every free object was needed: none freed");
    is_int(p.free_count, 5, "5 free");

    /* Period 4: objects taken while the list is empty do not lower a mark below 0. */
    take(&p, t, 1);
    give(&p, t, 1);
    is_int(tycho_pool_trim(&p), 4, "4 of 5 were idle");
    is_int(p.free_count, 1, "1 kept");

    /* Period 5: nothing happens; period 6: a quiet pool shrinks to nothing. */
    is_int(tycho_pool_trim(&p), 1, "quiet period frees the rest");
    is_int(p.free_count, 0, "empty");
    is_int(tycho_pool_trim(&p), 0, "nothing left to trim");

    /* Live objects are never touched by trim. */
    take(&p, t, 4);
    is_int(tycho_pool_trim(&p), 0, "trim with everything out");
    is_int(tycho_pool_trim(&p), 0, "trim with everything out, twice");
    is_int(p.live, 4, "live untouched");
    give(&p, t, 4);
    /* Puts after the last trim: not idle for a whole period yet. */
    is_int(tycho_pool_trim(&p), 0, "just returned: kept");
    is_int(tycho_pool_trim(&p), 4, "then idle for a period: freed");
    is_int(inits, 16, "16 objects made in all");
    tycho_pool_dispose(&p);
    is_int(disposes, 16, "every object made was disposed exactly once");

    /* Dispose frees what trim left. */
    reset_counts();
    tycho_pool_init(&p, sizeof(struct thing), 16, on_init, on_dispose);
    take(&p, t, 6);
    give(&p, t, 6);
    tycho_pool_trim(&p);
    take(&p, t, 2);
    give(&p, t, 2);
    is_int(tycho_pool_trim(&p), 4, "4 idle");
    tycho_pool_dispose(&p);
    is_int(disposes, 6, "dispose frees the rest");
    is_int(p.free_count, 0, "nothing free after dispose");
}

int main(void)
{
    test_exhaustion();
    test_reuse();
    test_init_failure();
    test_trim();
    return test_summary();
}
