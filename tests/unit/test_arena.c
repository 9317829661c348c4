/*
 * test_arena.c: unit tests for arena.[ch] through its public header.
 *
 * 16-byte alignment, many allocations spanning several blocks (no overlap),
 * an allocation larger than the first block, tycho_arena_append growing in
 * place and moving (content kept, few moves for many small appends), and
 * reset (extra blocks freed, the first block reused). Clean under ASan/LSan.
 * Single-threaded. Ends with the harness line `N passed, M failed`.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/tycho.h"
#include "harness.h"

/* How many blocks were added since the last reset (walks the opaque list by its first field). */
static unsigned extra_blocks(const struct tycho_arena *a)
{
    /* struct tycho_arena_block starts with its next pointer (arena.c). */
    const void *b = a->extra;
    unsigned n = 0;

    while (b) {
        n++;
        b = *(const void *const *)b;
    }
    return n;
}

static int aligned16(const void *p)
{
    return ((uintptr_t)p & 15) == 0;
}

static void test_alignment(void)
{
    struct tycho_arena a;
    int misaligned = 0, nulls = 0;

    is_int(tycho_arena_init(&a, 1024), TYCHO_OK, "init");
    for (size_t n = 1; n <= 300; n++) {
        char *p = tycho_arena_alloc(&a, n);
        nulls += p == NULL;
        if (p) {
            misaligned += !aligned16(p);
            memset(p, 0xAB, n); /* ASan: every byte is ours */
        }
    }
    is_int(nulls, 0, "no allocation failed");
    is_int(misaligned, 0, "every allocation 16-byte aligned, across blocks");
    ok(extra_blocks(&a) > 0, "300 allocations needed extra blocks");
    tycho_arena_dispose(&a);
    ok(a.first == NULL && a.extra == NULL, "dispose clears the arena");
    tycho_arena_dispose(&a); /* disposing twice is harmless after the memset */
}

static void test_many_allocations(void)
{
    struct tycho_arena a;
    enum { N = 2000 };
    unsigned char *ptrs[N];
    size_t sizes[N];
    int bad = 0;

    tycho_arena_init(&a, 512);
    for (int i = 0; i < N; i++) {
        sizes[i] = (size_t)(i * 7 % 97) + 1;
        ptrs[i] = tycho_arena_alloc(&a, sizes[i]);
        if (!ptrs[i]) {
            bad++;
            continue;
        }
        memset(ptrs[i], i & 0xff, sizes[i]);
    }
    is_int(bad, 0, "2000 allocations succeeded");
    /* Nothing overwrote anything: each allocation still holds its own byte. */
    for (int i = 0; i < N; i++)
        for (size_t j = 0; ptrs[i] && j < sizes[i]; j++)
            if (ptrs[i][j] != (unsigned char)(i & 0xff)) {
                bad++;
                break;
            }
    is_int(bad, 0, "allocations do not overlap");
    ok(extra_blocks(&a) >= 2, "several extra blocks");
    tycho_arena_dispose(&a);
}

static void test_large(void)
{
    struct tycho_arena a;
    char *small, *big, *after;

    tycho_arena_init(&a, 256);
    small = tycho_arena_alloc(&a, 10);
    ok(small == a.first, "first allocation at the start of the first block");
    memcpy(small, "0123456789", 10);
    big = tycho_arena_alloc(&a, 10000);
    ok(big != NULL, "allocation larger than the first block");
    ok(aligned16(big), "large allocation aligned");
    memset(big, 'x', 10000);
    is_int(extra_blocks(&a), 1, "one extra block for it");
    after = tycho_arena_alloc(&a, 100);
    ok(after != NULL, "small allocation after the large one");
    memset(after, 'y', 100);
    ok(memcmp(small, "0123456789", 10) == 0, "earlier allocation intact");
    ok(big[0] == 'x' && big[9999] == 'x', "large allocation intact");
    ok(tycho_arena_alloc(&a, 1 << 20) != NULL, "1 MiB allocation");
    tycho_arena_dispose(&a);
}

static void test_reset(void)
{
    struct tycho_arena a;
    char *p;

    tycho_arena_init(&a, 1024);
    for (int i = 0; i < 100; i++)
        tycho_arena_alloc(&a, 200);
    ok(extra_blocks(&a) > 0, "extra blocks before reset");
    tycho_arena_reset(&a);
    is_int(extra_blocks(&a), 0, "reset frees the extra blocks");
    ok(a.cur == a.first, "reset goes back to the first block");
    is_int(a.used, 0, "reset empties the first block");
    is_int(a.cap, 1024, "reset restores the first block's size");
    p = tycho_arena_alloc(&a, 100);
    ok(p == a.first, "after reset the first block is reused from its start");
    /* Reset many times: no growth, no leak (LSan). */
    for (int round = 0; round < 50; round++) {
        for (int i = 0; i < 20; i++)
            tycho_arena_alloc(&a, 500);
        tycho_arena_reset(&a);
    }
    is_int(extra_blocks(&a), 0, "repeated reset");
    ok(tycho_arena_alloc(&a, 8) == a.first, "first block still reused");
    tycho_arena_dispose(&a);

    /* May be initialised again after dispose. */
    is_int(tycho_arena_init(&a, 64), TYCHO_OK, "init again after dispose");
    ok(tycho_arena_alloc(&a, 64) == a.first, "a 64-byte block holds 64 bytes");
    ok(tycho_arena_alloc(&a, 1) != NULL, "then a new block");
    tycho_arena_dispose(&a);
}

static void test_append(void)
{
    struct tycho_arena a;
    char *s, *t, *other, *moved;
    char want[8192];
    size_t len = 0;
    int moves = 0, bad = 0;

    tycho_arena_init(&a, 4096);
    s = tycho_arena_append(&a, NULL, 0, "abc", 3);
    ok(s != NULL, "append to NULL");
    ok(s && memcmp(s, "abc", 3) == 0, "append to NULL copies");
    t = tycho_arena_append(&a, s, 3, "def", 3);
    ok(t == s, "newest allocation grows in place");
    ok(memcmp(t, "abcdef", 6) == 0, "in-place content");
    t = tycho_arena_append(&a, t, 6, "", 0);
    ok(t == s, "append of nothing stays in place");

    other = tycho_arena_alloc(&a, 5);
    memcpy(other, "ZZZZZ", 5);
    moved = tycho_arena_append(&a, t, 6, "ghi", 3);
    ok(moved != NULL && moved != s, "not the newest allocation: moved");
    ok(moved && memcmp(moved, "abcdefghi", 9) == 0, "moved content preserved");
    ok(memcmp(other, "ZZZZZ", 5) == 0, "the allocation in between is untouched");
    ok(memcmp(s, "abcdef", 6) == 0, "the old copy is untouched");
    t = tycho_arena_append(&a, moved, 9, "jk", 2);
    ok(t == moved, "after a move the string is newest again: in place");
    ok(memcmp(t, "abcdefghijk", 11) == 0, "content after move + in place");
    ok(aligned16(moved), "moved allocation aligned");
    tycho_arena_reset(&a);

    /* Many one-byte appends across blocks: content kept, few moves (doubling). */
    s = NULL;
    for (int i = 0; i < 8000; i++) {
        char c = (char)('a' + i % 26);
        t = tycho_arena_append(&a, s, len, &c, 1);
        if (!t) {
            bad++;
            break;
        }
        moves += t != s;
        s = t;
        want[len++] = c;
    }
    is_int(bad, 0, "8000 appends succeeded");
    ok(s && memcmp(s, want, len) == 0, "8000 appended bytes preserved");
    ok(moves <= 8, "appending grows in place between a few doublings");
    if (moves > 8)
        printf("     %d moves\n", moves);
    ok(extra_blocks(&a) >= 1, "the string outgrew the first block");

    /* Two strings appended in turn (like header names and values): both kept. */
    tycho_arena_reset(&a);
    {
        char *x = NULL, *y = NULL;
        size_t xl = 0, yl = 0;
        for (int i = 0; i < 3000 && !bad; i++) {
            char cx = (char)('A' + i % 26), cy = (char)('0' + i % 10);
            if (!(x = tycho_arena_append(&a, x, xl, &cx, 1)) ||
                !(y = tycho_arena_append(&a, y, yl, &cy, 1)))
                bad++;
            else
                xl++, yl++;
        }
        for (size_t i = 0; !bad && i < xl; i++)
            if (x[i] != (char)('A' + i % 26) || y[i] != (char)('0' + i % 10))
                bad++;
        is_int(bad, 0, "interleaved appends keep both strings");
    }

    /* A large append to a small string moves it into a big enough block. */
    tycho_arena_reset(&a);
    s = tycho_arena_append(&a, NULL, 0, "head", 4);
    memset(want, 'q', sizeof(want));
    t = tycho_arena_append(&a, s, 4, want, sizeof(want));
    ok(t != NULL, "large append");
    ok(t && memcmp(t, "head", 4) == 0 && memcmp(t + 4, want, sizeof(want)) == 0,
       "large append content");
    tycho_arena_dispose(&a);
}

int main(void)
{
    test_alignment();
    test_many_allocations();
    test_large();
    test_reset();
    test_append();
    return test_summary();
}
