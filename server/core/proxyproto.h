/*
 * proxyproto.h: the PROXY protocol (HAProxy's proxy-protocol.txt), versions 1
 * (a text line) and 2 (binary), told apart by their signatures: the header a
 * load balancer sends first on a connection to say whose connection it is.
 * A pure function over bytes: no sockets, no allocation, no state; any thread.
 * The caller peeks at what the connection has brought and consumes exactly
 * the header's length once this says it is complete, so the bytes after it
 * (a request, a TLS ClientHello) stay for the normal path.
 */
#ifndef TYCHO_PROXYPROTO_H
#define TYCHO_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>

/* A version 1 header is at most this long, its CRLF included (the spec's bound). */
#define TYCHO_PROXYPROTO_V1_MAX_BYTES 107

/*
 * The largest version 2 header accepted, its 16 fixed bytes included. The
 * format allows 16 + 65535, nearly all of it optional TLVs; those that senders
 * actually add (ALPN, authority, unique id, SSL details, AWS or GCP endpoint
 * ids, CRC32C) fit many times over in this, and the bound is what one
 * connection can make the server look at before it knows whose it is. A
 * larger header is refused (oversized).
 */
#define TYCHO_PROXYPROTO_MAX_BYTES 4096

/* What the bytes given are. */
enum tycho_proxyproto_result {
    TYCHO_PROXYPROTO_MORE,  /* a possible header, not complete yet: read more, then ask again */
    TYCHO_PROXYPROTO_BAD,   /* not a header, or a malformed, unsupported or oversized one */
    TYCHO_PROXYPROTO_OK     /* a complete header, of h->len bytes */
};

/* A parsed header. */
struct tycho_proxyproto {
    size_t len;               /* OK: bytes of the header (consume exactly these) */
    int version;              /* OK: 1 or 2 */
    /*
     * OK: true when the header carries no address to use: v2 LOCAL (a health
     * check from the balancer itself), v1 UNKNOWN, or v2 PROXY with an
     * unspecified, UNIX or datagram address. The connection keeps its own.
     */
    bool local;
    int family;               /* OK and !local: AF_INET or AF_INET6 */
    unsigned char src[16];    /* OK and !local: source address (4 bytes for AF_INET) */
    unsigned char dst[16];    /* OK and !local: destination address */
    unsigned src_port;        /* OK and !local: source port, host order */
    unsigned dst_port;        /* OK and !local: destination port, host order */
    const char *reason;       /* BAD: a short static reason, for a log line */
};

/*
 * Reads a PROXY header from the start of data (len bytes, possibly fewer than
 * the header). Never reads past data + len. MORE when data is a proper prefix
 * of what could still be a header (nothing at all included); BAD with
 * h->reason as soon as it cannot be one (a wrong signature, version or
 * command, a bad address or port, a v1 line without CRLF within 107 bytes, a
 * v2 header over TYCHO_PROXYPROTO_MAX_BYTES, a too-short address block, a TLV
 * running past the header); OK with the fields of h. Version 1 addresses are
 * dotted quads (no leading zeros, octets up to 255) and RFC 4291 text; ports
 * are 0..65535 in decimal without leading zeros.
 */
enum tycho_proxyproto_result tycho_proxyproto_parse(const unsigned char *data, size_t len,
                                                    struct tycho_proxyproto *h);

#endif
