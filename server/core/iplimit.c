/*
 * iplimit.c: linear probing keyed by the 16 address bytes (IPv4 as
 * ::ffff:a.b.c.d) with backward-shift deletion, so no tombstones pile up.
 */
#include "core/iplimit.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct slot {
    unsigned char addr[16];
    int count;                 /* 0: empty */
};

/*
 * One lock for the table: it is held for a probe of a few slots (tens of
 * nanoseconds) once per accept and once per close, against tens of
 * microseconds of kernel work per connection, so the workers do not queue on it.
 */
struct tycho_iplimit {
    pthread_mutex_t lock;
    struct slot *slots;        /* owned; under lock */
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
    pthread_mutex_init(&t->lock, NULL);
    return t;
}

void tycho_iplimit_free(struct tycho_iplimit *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->lock);
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

/* Under t->lock: one fewer for key; an address that reaches 0 leaves the table. */
static void remove_locked(struct tycho_iplimit *t, const unsigned char key[16])
{
    size_t i = find(t, key), j;

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

/* Under t->lock: one more for key; how many now, or -1 when the table is full. */
static int add_locked(struct tycho_iplimit *t, const unsigned char key[16])
{
    size_t i = find(t, key);

    if (!t->slots[i].count) {
        /* Keep one empty slot at least, so find always ends. */
        if (t->used + 1 >= t->mask + 1)
            return -1;
        memcpy(t->slots[i].addr, key, 16);
        t->used++;
    }
    return ++t->slots[i].count;
}

int tycho_iplimit_add(struct tycho_iplimit *t, const struct sockaddr *sa, int limit)
{
    unsigned char key[16];
    int n;

    key_of(sa, key);
    pthread_mutex_lock(&t->lock);
    n = add_locked(t, key);
    if (n > limit)
        remove_locked(t, key);
    pthread_mutex_unlock(&t->lock);
    return n;
}

void tycho_iplimit_remove(struct tycho_iplimit *t, const struct sockaddr *sa)
{
    unsigned char key[16];

    key_of(sa, key);
    pthread_mutex_lock(&t->lock);
    remove_locked(t, key);
    pthread_mutex_unlock(&t->lock);
}
