/*
 * test_buf.c: unit tests for buf.[ch] through its public header.
 *
 * append/puts, reserve + commit, consume from the front (partial and whole),
 * sliding consumed bytes out of the way before growing, growth by doubling,
 * zero-byte appends, and dispose (empty, reusable). Clean under ASan/LSan.
 * Single-threaded. Ends with the harness line `N passed, M failed`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/tycho.h"
#include "harness.h"

/* Whether the readable bytes of b are exactly s. */
static int holds(const struct tycho_buf *b, const char *s)
{
    size_t n = strlen(s);

    return b->len == n && (n == 0 || (b->data && memcmp(b->data + b->off, s, n) == 0));
}

static void test_append_consume(void)
{
    struct tycho_buf b = {0};

    is_int(tycho_buf_append(&b, "hello", 5), TYCHO_OK, "append");
    ok(holds(&b, "hello"), "holds hello");
    ok(b.cap >= 5, "cap covers len");
    is_int(tycho_buf_puts(&b, ", world"), TYCHO_OK, "puts");
    ok(holds(&b, "hello, world"), "holds hello, world");

    tycho_buf_consume(&b, 7);
    ok(holds(&b, "world"), "consume drops from the front");
    is_int(b.off, 7, "consume moves off");
    tycho_buf_append(&b, "!", 1);
    ok(holds(&b, "world!"), "append after consume goes after the rest");
    tycho_buf_consume(&b, 6);
    is_int(b.len, 0, "consume everything: empty");
    is_int(b.off, 0, "consume everything: off back to 0");
    tycho_buf_append(&b, "abc", 3);
    tycho_buf_consume(&b, 100);
    is_int(b.len, 0, "consume more than held: empty");
    is_int(b.off, 0, "consume more than held: off 0");
    tycho_buf_consume(&b, 0);
    is_int(b.len, 0, "consume 0 of empty");
    tycho_buf_append(&b, "xyz", 3);
    tycho_buf_consume(&b, 0);
    ok(holds(&b, "xyz"), "consume 0 keeps everything");

    tycho_buf_dispose(&b);
    ok(b.data == NULL && b.len == 0 && b.off == 0 && b.cap == 0, "dispose empties");
    is_int(tycho_buf_puts(&b, "again"), TYCHO_OK, "usable after dispose");
    ok(holds(&b, "again"), "holds again");
    tycho_buf_dispose(&b);
    tycho_buf_dispose(&b); /* twice is harmless */
}

static void test_reserve(void)
{
    struct tycho_buf b = {0};
    char *w;
    size_t cap;

    w = tycho_buf_reserve(&b, 10);
    ok(w != NULL, "reserve on an empty buffer");
    is_int(b.len, 0, "reserve does not commit");
    memcpy(w, "0123456789", 10);
    b.len += 10;
    ok(holds(&b, "0123456789"), "commit with len += n");
    w = tycho_buf_reserve(&b, 5);
    ok(w == b.data + b.off + b.len, "reserve returns the end of the data");
    memcpy(w, "ABCDE", 5);
    b.len += 5;
    ok(holds(&b, "0123456789ABCDE"), "second commit");

    /* Slide: consumed bytes make room without growing. */
    cap = b.cap;
    tycho_buf_consume(&b, 10);
    w = tycho_buf_reserve(&b, cap - 5);
    ok(w != NULL, "reserve that fits only after sliding");
    is_int(b.cap, cap, "sliding does not grow");
    is_int(b.off, 0, "sliding moves the data to the front");
    ok(holds(&b, "ABCDE"), "slid data kept");
    ok(w == b.data + 5, "reserve points after the slid data");

    /* Growth doubles and keeps the data. */
    w = tycho_buf_reserve(&b, 3 * cap);
    ok(w != NULL, "reserve beyond cap grows");
    ok(b.cap >= 5 + 3 * cap, "grown cap covers the request");
    ok((b.cap & (b.cap - 1)) == 0, "cap stays a power of two (doubling from 1024)");
    ok(holds(&b, "ABCDE"), "data kept across growth");
    tycho_buf_dispose(&b);

    /* Many appends. */
    {
        char piece[37];
        int bad = 0;
        memset(piece, 'p', sizeof(piece));
        for (int i = 0; i < 5000; i++) {
            piece[0] = (char)('a' + i % 26);
            bad += tycho_buf_append(&b, piece, sizeof(piece)) != TYCHO_OK;
            if (i % 3 == 0)
                tycho_buf_consume(&b, 10);
        }
        is_int(bad, 0, "5000 appends");
        is_int(b.len, 5000 * 37 - 1667 * 10, "length after appends and consumes");
        ok(b.data[b.off + b.len - 37] == (char)('a' + 4999 % 26), "last piece in place");
        tycho_buf_dispose(&b);
    }
}

static void test_zero_bytes(void)
{
    struct tycho_buf b = {0};

    /* buf.h: TYCHO_ERR only when out of memory; appending nothing cannot run out. */
    is_int(tycho_buf_append(&b, "", 0), TYCHO_OK, "append 0 bytes to a fresh buffer");
    is_int(tycho_buf_puts(&b, ""), TYCHO_OK, "puts \"\" to a fresh buffer");
    ok(tycho_buf_reserve(&b, 0) != NULL, "reserve 0 on a fresh buffer is not a failure");
    is_int(b.len, 0, "still empty");
    tycho_buf_puts(&b, "x");
    is_int(tycho_buf_append(&b, "", 0), TYCHO_OK, "append 0 bytes to a used buffer");
    ok(holds(&b, "x"), "holds x");
    tycho_buf_dispose(&b);
}

int main(void)
{
    test_append_consume();
    test_reserve();
    test_zero_bytes();
    return test_summary();
}
