/*
 * fuzz_proxyproto.c: libFuzzer target for the PROXY protocol parser
 * (core/proxyproto.c), with oracles of its own.
 *
 * The input is what a connection's first bytes could be. The parser is given
 * an exact heap copy of them (so that a read past the end is an ASan report)
 * and the checks are:
 *
 *   - OK: the header's length is within what was given, at most 107 bytes
 *     for version 1 and TYCHO_PROXYPROTO_MAX_BYTES for version 2; the header
 *     alone parses to the same result, and so does the input one byte
 *     shorter when it still holds the header; the header one byte shorter,
 *     and half of it, are MORE; a version 1 header ends with CRLF; an
 *     address to use is AF_INET or AF_INET6 with ports up to 65535;
 *   - BAD: a reason is given, and the input one byte shorter is not OK;
 *   - MORE: fewer bytes than the bound, and the input one byte shorter is
 *     MORE too.
 * Together: one more byte never turns MORE or OK into something else, nor
 * BAD into anything but BAD.
 *
 * A failed check aborts (a crash to libFuzzer, with the input kept). Built by
 * `make fuzz` with clang and -fsanitize=fuzzer,address,undefined.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/proxyproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "oracle: %s (line %d)\n", #cond, __LINE__);               \
            abort();                                                                  \
        }                                                                             \
    } while (0)

/* Parses an exact heap copy of data[0..n). */
static enum tycho_proxyproto_result parse(const uint8_t *data, size_t n,
                                          struct tycho_proxyproto *h)
{
    uint8_t *copy = malloc(n ? n : 1);
    enum tycho_proxyproto_result r;

    CHECK(copy != NULL);
    if (n)
        memcpy(copy, data, n);
    r = tycho_proxyproto_parse(copy, n, h);
    free(copy);
    return r;
}

static int same(const struct tycho_proxyproto *a, const struct tycho_proxyproto *b)
{
    return a->len == b->len && a->version == b->version && a->local == b->local &&
           a->family == b->family && memcmp(a->src, b->src, 16) == 0 &&
           memcmp(a->dst, b->dst, 16) == 0 && a->src_port == b->src_port &&
           a->dst_port == b->dst_port;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tycho_proxyproto h, again;
    enum tycho_proxyproto_result r = parse(data, size, &h);

    if (r == TYCHO_PROXYPROTO_OK) {
        CHECK(h.len > 0 && h.len <= size);
        CHECK(h.version == 1 || h.version == 2);
        CHECK(h.version != 1 || (h.len <= TYCHO_PROXYPROTO_V1_MAX_BYTES &&
                                 data[h.len - 2] == '\r' && data[h.len - 1] == '\n'));
        CHECK(h.version != 2 || h.len <= TYCHO_PROXYPROTO_MAX_BYTES);
        CHECK(h.local || ((h.family == AF_INET || h.family == AF_INET6) && h.src_port <= 65535 &&
                          h.dst_port <= 65535));
        CHECK(parse(data, h.len, &again) == TYCHO_PROXYPROTO_OK && same(&h, &again));
        if (size > h.len)
            CHECK(parse(data, size - 1, &again) == TYCHO_PROXYPROTO_OK && same(&h, &again));
        if (h.len > 1) {
            /* Every shorter prefix of a header is MORE (checked for a few, to stay fast). */
            CHECK(parse(data, h.len - 1, &again) == TYCHO_PROXYPROTO_MORE);
            CHECK(parse(data, h.len / 2, &again) == TYCHO_PROXYPROTO_MORE);
        }
    } else if (r == TYCHO_PROXYPROTO_BAD) {
        CHECK(h.reason != NULL && h.reason[0] != '\0');
        if (size > 0) {
            enum tycho_proxyproto_result shorter = parse(data, size - 1, &again);
            CHECK(shorter != TYCHO_PROXYPROTO_OK);
        }
    } else {
        CHECK(r == TYCHO_PROXYPROTO_MORE);
        CHECK(size < TYCHO_PROXYPROTO_MAX_BYTES);
        if (size > 0)
            CHECK(parse(data, size - 1, &again) == TYCHO_PROXYPROTO_MORE);
    }
    return 0;
}
