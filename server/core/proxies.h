/*
 * proxies.h: --trusted-proxies: a list of CIDRs, and the client address and
 * scheme that trusted proxies report in Forwarded (RFC 7239) or
 * X-Forwarded-For / X-Forwarded-Proto. Pure functions over bytes: no
 * sockets, no requests. The list is parsed once on the main thread and is
 * read-only afterwards (any thread).
 */
#ifndef TYCHO_PROXIES_H
#define TYCHO_PROXIES_H

#include <stdbool.h>
#include <stddef.h>

struct tycho_proxies;

/* An address: an IPv4 one (also an IPv4-mapped IPv6 one) is v6 false, in a[0..3]. */
struct tycho_ip {
    bool v6;
    unsigned char a[16];
};

/* The scheme a proxy reported, if any. */
enum tycho_proxy_scheme { TYCHO_SCHEME_NONE, TYCHO_SCHEME_HTTP, TYCHO_SCHEME_HTTPS };

/* One header field's value (not NUL-terminated). */
struct tycho_field {
    const char *value;
    size_t len;
};

/*
 * Parses "CIDR[,CIDR...]" (IPv4 or IPv6, a bare address is /32 or /128) into a
 * new list (*out, owned by the caller: tycho_proxies_free). On a bad entry returns
 * TYCHO_ERR with a one-line message in err (TYCHO_ERR_LEN bytes) naming
 * --trusted-proxies and the entry. Main thread.
 */
int tycho_proxies_parse(const char *text, struct tycho_proxies **out, char *err);

/* NULL is a no-op. */
void tycho_proxies_free(struct tycho_proxies *p);

/*
 * Reads an address from text (len bytes): IPv4, IPv6, "[IPv6]", "[IPv6]:port",
 * "IPv4:port"; surrounding blanks and one pair of double quotes are allowed.
 * true and *ip on success; false for anything else ("unknown", "_hidden").
 */
bool tycho_ip_parse(const char *text, size_t len, struct tycho_ip *ip);

/* Whether ip is in one of p's CIDRs (an IPv4-mapped IPv6 address counts as IPv4). */
bool tycho_proxies_trust(const struct tycho_proxies *p, const struct tycho_ip *ip);

/*
 * The client behind a trusted peer: walks the hops of the fields (one list:
 * the fields in order, their comma-separated elements in order) from the
 * right, skips the addresses p trusts, and takes the first one it does not
 * trust, or the left-most when it trusts them all. forwarded: the fields are
 * Forwarded ones (each element "for=...;proto=..."); else X-Forwarded-For
 * (each element an address). Returns true with *client, and for Forwarded
 * *scheme set from the chosen element's proto= (TYCHO_SCHEME_NONE when it has
 * none; untouched for X-Forwarded-For); false when there is no hop, or the
 * walk meets an element that is not an address (then keep the peer).
 */
bool tycho_proxies_client(const struct tycho_proxies *p, const struct tycho_field *fields,
                          unsigned nfields, bool forwarded, struct tycho_ip *client,
                          enum tycho_proxy_scheme *scheme);

/*
 * The scheme of X-Forwarded-Proto fields: the right-most element, "http" or
 * "https" in any case; TYCHO_SCHEME_NONE for anything else.
 */
enum tycho_proxy_scheme tycho_proxies_proto(const struct tycho_field *fields, unsigned nfields);

/*
 * ip from a socket's address bytes: family AF_INET (4 bytes at addr) or AF_INET6 (16; an
 * IPv4-mapped one becomes IPv4). false for another family.
 */
bool tycho_ip_from(int family, const unsigned char *addr, struct tycho_ip *ip);

/* Writes ip as text into buf (46 bytes at least); returns its length. */
size_t tycho_ip_text(const struct tycho_ip *ip, char *buf, size_t buf_len);

#endif
