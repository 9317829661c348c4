/*
 * iplimit.c: linear probing keyed by the 16 address bytes (IPv4 as
 * ::ffff:a.b.c.d) with backward-shift deletion, so no tombstones pile up.
 */
#include "core/iplimit.h"

#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct slot {
    unsigned char addr[16];
    int count;                 /* 0: empty */
};

struct tycho_iplimit {
    struct slot *slots;        /* owned */
    size_t mask;               /* slots - 1; a power of two at least twice the addresses */
    size_t used;               /* slots with a count */
};

struct tycho_iplimit *tycho_iplimit_new(unsigned max_addrs)
{
    struct tycho_iplimit *t = calloc(1, sizeof(*t));
    size_t n = 16;

    while (n < (size_t)max_addrs * 2)
        n *= 2;
    if (!t || !(t->slots = calloc(n, sizeof(struct slot)))) {
        free(t);
        return NULL;
    }
    t->mask = n - 1;
    return t;
}

void tycho_iplimit_free(struct tycho_iplimit *t)
{
    if (!t)
        return;
    free(t->slots);
    free(t);
}

/* The 16-byte key of sa. */
static void key_of(const struct sockaddr *sa, unsigned char key[16])
{
    static const unsigned char v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
    } else {
        memcpy(key, v4_prefix, 12);
        memcpy(key + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    }
}

/* FNV-1a over the key. */
static size_t hash(const unsigned char key[16])
{
    uint64_t h = 1469598103934665603ULL;

    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 1099511628211ULL;
    return (size_t)h;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t find(const struct tycho_iplimit *t, const unsigned char key[16])
{
    size_t i = hash(key) & t->mask;

    while (t->slots[i].count && memcmp(t->slots[i].addr, key, 16) != 0)
        i = (i + 1) & t->mask;
    return i;
}

int tycho_iplimit_add(struct tycho_iplimit *t, const struct sockaddr *sa)
{
    unsigned char key[16];
    size_t i;

    key_of(sa, key);
    i = find(t, key);
    if (!t->slots[i].count) {
        /* Keep one empty slot at least, so find always ends. */
        if (t->used + 1 >= t->mask + 1)
            return -1;
        memcpy(t->slots[i].addr, key, 16);
        t->used++;
    }
    return ++t->slots[i].count;
}

void tycho_iplimit_remove(struct tycho_iplimit *t, const struct sockaddr *sa)
{
    unsigned char key[16];
    size_t i, j;

    key_of(sa, key);
    i = find(t, key);
    if (!t->slots[i].count || --t->slots[i].count > 0)
        return;
    t->used--;
    /* Backward-shift: move later entries of the same run into the hole. */
    for (j = (i + 1) & t->mask; t->slots[j].count; j = (j + 1) & t->mask) {
        size_t home = hash(t->slots[j].addr) & t->mask;
        /* Move j to i when its home is not in the (cyclic) range (i, j]. */
        if (((j - home) & t->mask) >= ((j - i) & t->mask)) {
            t->slots[i] = t->slots[j];
            t->slots[j].count = 0;
            i = j;
        }
    }
}
