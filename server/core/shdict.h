/*
 * shdict.h: dictionaries shared by every worker (tycho.shared.dict). The one
 * deliberate piece of shared mutable state (STYLE 7): each dictionary is
 * split in shards, each with its own mutex, least-recently-used list and
 * share of the byte bound; values are copied in and out as bytes, and a lock
 * is held only for the copy. Dictionaries live for the whole process (they
 * survive script reloads). Any thread.
 */
#ifndef TYCHO_SHDICT_H
#define TYCHO_SHDICT_H

#include <stdbool.h>
#include <stddef.h>

struct tycho_shdict;

/*
 * The dictionary called name, made with a bound of max_bytes (keys, values
 * and a per-entry overhead) on first use; later calls return the same one
 * and their max_bytes is ignored. NULL when out of memory.
 */
struct tycho_shdict *tycho_shdict_get(const char *name, size_t max_bytes);

/* Frees every dictionary (at exit, once no thread uses them). */
void tycho_shdict_free_all(void);

/* The bound a dictionary was made with. */
size_t tycho_shdict_max_bytes(const struct tycho_shdict *d);

/*
 * The bound of a dictionary declared without max_bytes (--shared-dict-bytes);
 * set before workers start.
 */
extern size_t tycho_shdict_default_bytes;

enum tycho_shdict_rc {
    TYCHO_SHDICT_OK,
    TYCHO_SHDICT_MISSING,    /* get/incr: no such key (or it expired) */
    TYCHO_SHDICT_EXISTS,     /* add: the key is there */
    TYCHO_SHDICT_TOO_BIG,    /* set/add: the entry alone is larger than the bound */
    TYCHO_SHDICT_NOT_NUMBER, /* incr: the value is not a number */
    TYCHO_SHDICT_NOMEM
};

/*
 * Finds key: sets *tag and *vlen, and copies the value into buf when it fits
 * in cap bytes (call again with a larger buffer when *vlen > cap). now is the
 * caller's clock in seconds (for expiry). Nothing here allocates.
 */
enum tycho_shdict_rc tycho_shdict_lookup(struct tycho_shdict *d, const char *key, size_t klen,
                                         double now, char *tag, void *buf, size_t cap,
                                         size_t *vlen);

/*
 * Stores value under key (replacing; or only if absent when only_new),
 * expiring at expires (0: never), evicting least-recently-used entries of
 * its shard to make room.
 */
enum tycho_shdict_rc tycho_shdict_store(struct tycho_shdict *d, const char *key, size_t klen,
                                        char tag, const void *value, size_t vlen, double expires,
                                        int only_new, double now);

/*
 * Adds n to the number under key and puts the result in *out. A missing key
 * starts at init when has_init (with expiry 0), else MISSING; TOO_BIG when
 * the entry alone would be larger than the bound.
 */
enum tycho_shdict_rc tycho_shdict_incr(struct tycho_shdict *d, const char *key, size_t klen,
                                       double n, int has_init, double init, double now,
                                       double *out);

/*
 * A token bucket under key (a rate limiter shared by every worker): it
 * holds at most burst tokens and gains rate per second; a call takes one.
 * *allowed says whether there was one; if not, *wait is the seconds until
 * there will be. A bucket left alone until full is dropped. TOO_BIG or
 * NOMEM as for set; another kind of value under key is replaced.
 */
enum tycho_shdict_rc tycho_shdict_take(struct tycho_shdict *d, const char *key, size_t klen,
                                       double rate, double burst, double now, bool *allowed,
                                       double *wait);

/* Removes key; a missing key is fine. */
void tycho_shdict_delete(struct tycho_shdict *d, const char *key, size_t klen);

/*
 * Writes the live keys into buf as (4-byte length, bytes) records while they
 * fit in cap; returns the bytes all of them need (call again with a larger
 * buffer when that is more than cap) and their number in *count.
 */
size_t tycho_shdict_keys(struct tycho_shdict *d, double now, void *buf, size_t cap,
                         size_t *count);

#endif
