/*
 * lookup.h: what the database drivers (pg.c, redis.c) share to connect
 * without blocking the worker: a host name looked up to one address with
 * libevent's evdns (libpq and hiredis would call getaddrinfo and block); and
 * seconds as a libevent timeval, for every timer in net/.
 *
 * Threads: the loop's (the worker's) thread, as the driver that calls it.
 */
#ifndef TYCHO_LOOKUP_H
#define TYCHO_LOOKUP_H

#include <sys/time.h>

struct event_base;
struct evdns_base;
struct tycho_lookup;

/* The answer: addr ("127.0.0.1", "::1") or NULL with why. */
typedef void tycho_lookup_fn(void *arg, const char *addr, const char *why);

/*
 * Looks host up through *dns (made on base at the first call). fn(arg, ...)
 * is called once: later from the loop, or before this returns (a failure,
 * an answer at hand), in which case this returns NULL; otherwise it returns
 * the lookup, which tycho_lookup_cancel can stop.
 */
struct tycho_lookup *tycho_lookup_start(struct evdns_base **dns, struct event_base *base,
                                        const char *host, tycho_lookup_fn *fn, void *arg);

/* Stops a lookup under way: fn is not called. */
void tycho_lookup_cancel(struct tycho_lookup *l);

/* seconds as a timeval for libevent (at least 1 ms: a zero timeval reads as "no timeout"). */
struct timeval tycho_tv(double seconds);

#endif
