/*
 * shdict.c: sharded hash tables with an LRU list per shard. An entry is one
 * allocation: the header, then the key, then the value. Every function takes
 * one shard's lock for the copy and nothing else (no I/O, no Lua, no logs
 * under a lock).
 */
#include "core/shdict.h"
#include "core/list.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SHARDS 16
#define ENTRY_OVERHEAD 64 /* counted per entry against the bound: header and malloc */

struct entry {
    struct entry *next;          /* bucket chain */
    struct tycho_list lru;       /* in its shard's LRU list */
    uint64_t hash;
    double expires;              /* 0: never */
    size_t klen, vlen;
    char tag;
    char data[];                 /* key, then value */
};

struct shard {
    pthread_mutex_t lock;
    struct entry **buckets;      /* owned */
    size_t nbuckets, count;
    struct tycho_list lru;       /* of struct entry: the newest first */
    size_t bytes, max_bytes;
};

struct tycho_shdict {
    struct tycho_shdict *next;   /* the process's list */
    char *name;                  /* owned */
    size_t max_bytes;
    struct shard shards[SHARDS];
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tycho_shdict *registry; /* under registry_lock */

/* FNV-1a, then a splitmix64 finish so that the shard (top bits) depends on every byte. */
static uint64_t hash_key(const char *key, size_t klen)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < klen; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

static size_t entry_bytes(size_t klen, size_t vlen)
{
    return ENTRY_OVERHEAD + klen + vlen;
}

static struct tycho_shdict *make_dict(const char *name, size_t max_bytes)
{
    struct tycho_shdict *d = calloc(1, sizeof(*d));

    if (!d || !(d->name = strdup(name)))
        goto fail;
    d->max_bytes = max_bytes;
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &d->shards[i];
        tycho_list_init(&s->lru);
        s->nbuckets = 64;
        if (!(s->buckets = calloc(s->nbuckets, sizeof(*s->buckets))))
            goto fail;
        s->max_bytes = max_bytes / SHARDS;
        pthread_mutex_init(&s->lock, NULL);
    }
    return d;
fail:
    if (d) {
        for (int i = 0; i < SHARDS; i++)
            free(d->shards[i].buckets);
        free(d->name);
    }
    free(d);
    return NULL;
}

struct tycho_shdict *tycho_shdict_get(const char *name, size_t max_bytes)
{
    struct tycho_shdict *d;

    pthread_mutex_lock(&registry_lock);
    for (d = registry; d; d = d->next)
        if (strcmp(d->name, name) == 0)
            break;
    if (!d && (d = make_dict(name, max_bytes))) {
        d->next = registry;
        registry = d;
    }
    pthread_mutex_unlock(&registry_lock);
    return d;
}

size_t tycho_shdict_default_bytes = 16 * 1024 * 1024;

size_t tycho_shdict_max_bytes(const struct tycho_shdict *d)
{
    return d->max_bytes;
}

void tycho_shdict_free_all(void)
{
    pthread_mutex_lock(&registry_lock);
    while (registry) {
        struct tycho_shdict *d = registry;
        registry = d->next;
        for (int i = 0; i < SHARDS; i++) {
            struct tycho_list *node, *next;
            tycho_list_each_safe(node, next, &d->shards[i].lru)
                free(tycho_container_of(node, struct entry, lru));
            free(d->shards[i].buckets);
            pthread_mutex_destroy(&d->shards[i].lock);
        }
        free(d->name);
        free(d);
    }
    pthread_mutex_unlock(&registry_lock);
}

/* ---- one shard, its lock held ------------------------------------------- */

static void lru_push(struct shard *s, struct entry *e)
{
    tycho_list_push_front(&s->lru, &e->lru);
}

static struct entry **slot_of(struct shard *s, uint64_t h, const char *key, size_t klen)
{
    struct entry **p = &s->buckets[h & (s->nbuckets - 1)];

    while (*p && !((*p)->hash == h && (*p)->klen == klen && memcmp((*p)->data, key, klen) == 0))
        p = &(*p)->next;
    return p;
}

static void remove_entry(struct shard *s, struct entry **slot)
{
    struct entry *e = *slot;

    *slot = e->next;
    tycho_list_remove(&e->lru);
    s->count--;
    s->bytes -= entry_bytes(e->klen, e->vlen);
    free(e);
}

/* The live entry for key (an expired one is removed), or NULL. Its slot in *slotp. */
static struct entry *find(struct shard *s, uint64_t h, const char *key, size_t klen, double now,
                          struct entry ***slotp)
{
    struct entry **slot = slot_of(s, h, key, klen);

    if (*slot && (*slot)->expires && (*slot)->expires <= now) {
        remove_entry(s, slot);
        slot = slot_of(s, h, key, klen);
    }
    *slotp = slot;
    return *slot;
}

/* Doubles the bucket array when entries outnumber buckets twice (best effort). */
static void maybe_grow(struct shard *s)
{
    size_t n = s->nbuckets * 2;
    struct entry **grown;

    if (s->count < s->nbuckets * 2 || !(grown = calloc(n, sizeof(*grown))))
        return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        struct entry *e = s->buckets[i], *next;
        for (; e; e = next) {
            next = e->next;
            e->next = grown[e->hash & (n - 1)];
            grown[e->hash & (n - 1)] = e;
        }
    }
    free(s->buckets);
    s->buckets = grown;
    s->nbuckets = n;
}

/* Frees the least recently used entries until `need` more bytes fit. */
static void evict_for(struct shard *s, size_t need)
{
    struct tycho_list *oldest;

    while ((oldest = tycho_list_last(&s->lru)) && s->bytes + need > s->max_bytes) {
        struct entry *e = tycho_container_of(oldest, struct entry, lru);
        remove_entry(s, slot_of(s, e->hash, e->data, e->klen));
    }
}

static struct shard *shard_of(struct tycho_shdict *d, uint64_t h)
{
    return &d->shards[(h >> 56) % SHARDS];
}

/* ---- the operations ----------------------------------------------------- */

enum tycho_shdict_rc tycho_shdict_lookup(struct tycho_shdict *d, const char *key, size_t klen,
                                         double now, char *tag, void *buf, size_t cap,
                                         size_t *vlen)
{
    uint64_t h = hash_key(key, klen);
    struct shard *s = shard_of(d, h);
    struct entry **slot, *e;
    enum tycho_shdict_rc rc = TYCHO_SHDICT_MISSING;

    pthread_mutex_lock(&s->lock);
    if ((e = find(s, h, key, klen, now, &slot))) {
        *tag = e->tag;
        *vlen = e->vlen;
        if (e->vlen <= cap)
            memcpy(buf, e->data + e->klen, e->vlen);
        tycho_list_remove(&e->lru);
        lru_push(s, e);
        rc = TYCHO_SHDICT_OK;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Builds an entry outside any lock. */
static struct entry *new_entry(uint64_t h, const char *key, size_t klen, char tag,
                               const void *value, size_t vlen, double expires)
{
    struct entry *e = malloc(sizeof(*e) + klen + vlen);

    if (!e)
        return NULL;
    memset(e, 0, sizeof(*e));
    e->hash = h;
    e->klen = klen;
    e->vlen = vlen;
    e->tag = tag;
    e->expires = expires;
    memcpy(e->data, key, klen);
    if (vlen)
        memcpy(e->data + klen, value, vlen);
    return e;
}

/* Puts e in the shard in place of what *slot holds (lock held). */
static void insert(struct shard *s, struct entry **slot, struct entry *e)
{
    if (*slot)
        remove_entry(s, slot);
    evict_for(s, entry_bytes(e->klen, e->vlen));
    slot = slot_of(s, e->hash, e->data, e->klen);
    e->next = *slot;
    *slot = e;
    lru_push(s, e);
    s->count++;
    s->bytes += entry_bytes(e->klen, e->vlen);
    maybe_grow(s);
}

enum tycho_shdict_rc tycho_shdict_store(struct tycho_shdict *d, const char *key, size_t klen,
                                        char tag, const void *value, size_t vlen, double expires,
                                        int only_new, double now)
{
    uint64_t h = hash_key(key, klen);
    struct shard *s = shard_of(d, h);
    struct entry **slot, *e;

    if (entry_bytes(klen, vlen) > s->max_bytes)
        return TYCHO_SHDICT_TOO_BIG;
    if (!(e = new_entry(h, key, klen, tag, value, vlen, expires)))
        return TYCHO_SHDICT_NOMEM;
    pthread_mutex_lock(&s->lock);
    if (find(s, h, key, klen, now, &slot) && only_new) {
        pthread_mutex_unlock(&s->lock);
        free(e);
        return TYCHO_SHDICT_EXISTS;
    }
    insert(s, slot, e);
    pthread_mutex_unlock(&s->lock);
    return TYCHO_SHDICT_OK;
}

enum tycho_shdict_rc tycho_shdict_incr(struct tycho_shdict *d, const char *key, size_t klen,
                                       double n, int has_init, double init, double now,
                                       double *out)
{
    uint64_t h = hash_key(key, klen);
    struct shard *s = shard_of(d, h);
    struct entry **slot, *e, *fresh;
    enum tycho_shdict_rc rc = TYCHO_SHDICT_OK;
    double v;

    if (entry_bytes(klen, sizeof(double)) > s->max_bytes)
        return TYCHO_SHDICT_TOO_BIG;
    /* An entry for a missing key is made before locking (no malloc under the lock). */
    if (!(fresh = new_entry(h, key, klen, 'n', &init, sizeof(double), 0)))
        return TYCHO_SHDICT_NOMEM;
    pthread_mutex_lock(&s->lock);
    if ((e = find(s, h, key, klen, now, &slot))) {
        if (e->tag != 'n' || e->vlen != sizeof(double)) {
            rc = TYCHO_SHDICT_NOT_NUMBER;
        } else {
            memcpy(&v, e->data + e->klen, sizeof(v));
            v += n;
            memcpy(e->data + e->klen, &v, sizeof(v));
            tycho_list_remove(&e->lru);
            lru_push(s, e);
            *out = v;
        }
    } else if (!has_init) {
        rc = TYCHO_SHDICT_MISSING;
    } else {
        v = init + n;
        memcpy(fresh->data + klen, &v, sizeof(v));
        insert(s, slot, fresh);
        fresh = NULL;
        *out = v;
    }
    pthread_mutex_unlock(&s->lock);
    free(fresh);
    return rc;
}

/*
 * Refills a bucket {tokens, stamp} to now and takes one token if there is one.
 * now may be behind the stamp: each worker reads its event loop's cached time,
 * so the next take, on another worker, can come a little "earlier" (and the
 * wall clock can step back). Time that goes back refills nothing and must not
 * drain the bucket: a bucket left at exactly 1 token refused its next request.
 */
static bool bucket_take(double b[2], double rate, double burst, double now, double *wait)
{
    double tokens = b[0] + (now > b[1] ? (now - b[1]) * rate : 0);

    if (tokens > burst)
        tokens = burst;
    if (now > b[1])
        b[1] = now;
    if (tokens >= 1) {
        b[0] = tokens - 1;
        *wait = 0;
        return true;
    }
    b[0] = tokens;
    *wait = (1 - tokens) / rate;
    return false;
}

enum tycho_shdict_rc tycho_shdict_take(struct tycho_shdict *d, const char *key, size_t klen,
                                       double rate, double burst, double now, bool *allowed,
                                       double *wait)
{
    uint64_t h = hash_key(key, klen);
    struct shard *s = shard_of(d, h);
    struct entry **slot, *e, *fresh;
    double b[2] = {burst, now};
    double idle = burst / rate;       /* a bucket untouched this long is full: it may go */

    if (entry_bytes(klen, sizeof(b)) > s->max_bytes)
        return TYCHO_SHDICT_TOO_BIG;
    if (!(fresh = new_entry(h, key, klen, 'k', b, sizeof(b), now + idle)))
        return TYCHO_SHDICT_NOMEM;
    pthread_mutex_lock(&s->lock);
    if ((e = find(s, h, key, klen, now, &slot)) && e->tag == 'k' && e->vlen == sizeof(b)) {
        memcpy(b, e->data + e->klen, sizeof(b));
        *allowed = bucket_take(b, rate, burst, now, wait);
        memcpy(e->data + e->klen, b, sizeof(b));
        e->expires = now + idle;
        tycho_list_remove(&e->lru);
        lru_push(s, e);
    } else {
        /* New, or another kind of value under the key: insert replaces it. */
        *allowed = bucket_take(b, rate, burst, now, wait);
        memcpy(fresh->data + klen, b, sizeof(b));
        insert(s, slot, fresh);
        fresh = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    free(fresh);
    return TYCHO_SHDICT_OK;
}

void tycho_shdict_delete(struct tycho_shdict *d, const char *key, size_t klen)
{
    uint64_t h = hash_key(key, klen);
    struct shard *s = shard_of(d, h);
    struct entry **slot;

    pthread_mutex_lock(&s->lock);
    if (find(s, h, key, klen, 0, &slot))
        remove_entry(s, slot);
    pthread_mutex_unlock(&s->lock);
}

size_t tycho_shdict_keys(struct tycho_shdict *d, double now, void *buf, size_t cap,
                         size_t *count)
{
    size_t need = 0;

    *count = 0;
    for (int i = 0; i < SHARDS; i++) {
        struct shard *s = &d->shards[i];
        pthread_mutex_lock(&s->lock);
        for (struct tycho_list *node = s->lru.next; node != &s->lru; node = node->next) {
            const struct entry *e = tycho_container_of(node, struct entry, lru);
            uint32_t len = (uint32_t)e->klen;
            if (e->expires && e->expires <= now)
                continue;
            if (need + 4 + e->klen <= cap) {
                memcpy((char *)buf + need, &len, 4);
                memcpy((char *)buf + need + 4, e->data, e->klen);
            }
            need += 4 + e->klen;
            (*count)++;
        }
        pthread_mutex_unlock(&s->lock);
    }
    return need;
}
