/*
 * iplimit.h: open connections per client address, for --max-conns-per-ip.
 * An open-addressing hash table sized once for the most addresses that can
 * be open at a time (--max-conns), so it never grows. Any thread: the
 * workers count on accept (a --proxy-protocol connection: once its header
 * names the client) and uncount on close, under the table's lock.
 */
#ifndef TYCHO_IPLIMIT_H
#define TYCHO_IPLIMIT_H

#include <sys/socket.h>

struct tycho_iplimit;

/* A table for up to max_addrs addresses at once. NULL when out of memory. */
struct tycho_iplimit *tycho_iplimit_new(unsigned max_addrs);

/* NULL is a no-op. */
void tycho_iplimit_free(struct tycho_iplimit *t);

/*
 * Counts one more connection from the address in sa (AF_INET or AF_INET6)
 * and returns how many are open from it now, or -1 when the table is full.
 * Past limit the count is not kept (the return value says by how much).
 */
int tycho_iplimit_add(struct tycho_iplimit *t, const struct sockaddr *sa, int limit);

/* Counts one connection fewer from sa; an address that reaches 0 leaves the table. */
void tycho_iplimit_remove(struct tycho_iplimit *t, const struct sockaddr *sa);

#endif
