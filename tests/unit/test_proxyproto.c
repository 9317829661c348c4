/*
 * test_proxyproto.c: unit tests for core/proxyproto.[ch] through its public
 * header.
 *
 * Version 1: TCP4, TCP6, UNKNOWN (with and without addresses after it), the
 * bytes after the header left alone, bad addresses (octets over 255, leading
 * zeros, the wrong family), bad ports (over 65535, leading zeros or junk,
 * signs), missing and extra fields, double spaces, CR without LF, control
 * bytes, no CRLF within 107 bytes (and a line of exactly 107). Version 2:
 * PROXY over TCP/IPv4 and TCP/IPv6, LOCAL, AF_UNSPEC, UNIX and UDP (the peer's
 * address is kept), TLVs skipped, a TLV running past the header, wrong
 * version, wrong command, unknown family, address blocks too short, the size
 * bound (at it and one over, refused before the bytes come). Any other first
 * byte. Every header fed 1..n bytes at a time: MORE until complete, then OK
 * with the same result. Single-threaded. Ends with `N passed, M failed`.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/proxyproto.h"
#include "harness.h"

static enum tycho_proxyproto_result parse_str(const char *s, struct tycho_proxyproto *h)
{
    return tycho_proxyproto_parse((const unsigned char *)s, strlen(s), h);
}

/* A version 1 line that must be refused (with a reason). */
static void v1_bad(const char *line, const char *what)
{
    struct tycho_proxyproto h;
    enum tycho_proxyproto_result r = parse_str(line, &h);

    is_int(r, TYCHO_PROXYPROTO_BAD, what);
    ok(r != TYCHO_PROXYPROTO_BAD || (h.reason && *h.reason), "a bad header has a reason");
}

/* The address text of h's source or destination. */
static const char *addr(const struct tycho_proxyproto *h, int dst, char *buf)
{
    return inet_ntop(h->family, dst ? h->dst : h->src, buf, INET6_ADDRSTRLEN) ? buf : "?";
}

static void test_v1(void)
{
    struct tycho_proxyproto h;
    char a[INET6_ADDRSTRLEN], line[256];
    const char *tcp4 = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";

    is_int(parse_str(tcp4, &h), TYCHO_PROXYPROTO_OK, "v1 TCP4");
    is_int(h.version, 1, "v1 TCP4: version 1");
    is_int(h.len, strlen("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"),
           "v1 TCP4: the length stops at the CRLF (what follows is not the header's)");
    ok(!h.local, "v1 TCP4: an address to use");
    is_int(h.family, AF_INET, "v1 TCP4: AF_INET");
    is_str(addr(&h, 0, a), "192.0.2.1", "v1 TCP4: the source");
    is_str(addr(&h, 1, a), "198.51.100.2", "v1 TCP4: the destination");
    is_int(h.src_port, 56324, "v1 TCP4: the source port");
    is_int(h.dst_port, 443, "v1 TCP4: the destination port");

    is_int(parse_str("PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 0 65535\r\n", &h), TYCHO_PROXYPROTO_OK,
           "v1 TCP6");
    is_int(h.family, AF_INET6, "v1 TCP6: AF_INET6");
    is_str(addr(&h, 0, a), "2001:db8::1", "v1 TCP6: the source");
    is_str(addr(&h, 1, a), "::ffff:10.0.0.1", "v1 TCP6: the destination (mapped IPv4)");
    is_int(h.src_port, 0, "v1 TCP6: port 0");
    is_int(h.dst_port, 65535, "v1 TCP6: port 65535");

    is_int(parse_str("PROXY UNKNOWN\r\n", &h), TYCHO_PROXYPROTO_OK, "v1 UNKNOWN");
    ok(h.local, "v1 UNKNOWN: no address (the peer's stays)");
    is_int(h.len, 15, "v1 UNKNOWN: its length");
    is_int(parse_str("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", &h),
           TYCHO_PROXYPROTO_OK, "v1 UNKNOWN: what follows it on the line is ignored");
    ok(h.local, "v1 UNKNOWN with more: no address");

    v1_bad("PROXY UNKNOWNX\r\n", "v1: UNKNOWNX");
    v1_bad("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "v1: protocol TCP5");
    v1_bad("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "v1: protocol in lower case");
    v1_bad("PROXY TCP4 256.1.1.1 5.6.7.8 1 2\r\n", "v1: an octet over 255");
    v1_bad("PROXY TCP4 1.2.3.4 5.6.7.300 1 2\r\n", "v1: a destination octet over 255");
    v1_bad("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "v1: an octet with a leading zero");
    v1_bad("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "v1: three octets");
    v1_bad("PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "v1: TCP4 with an IPv6 address");
    v1_bad("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "v1: TCP6 with an IPv4 address");
    v1_bad("PROXY TCP6 2001:db8:::1 ::1 1 2\r\n", "v1: a malformed IPv6 address");
    v1_bad("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "v1: a port over 65535");
    v1_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "v1: a destination port over 65535");
    v1_bad("PROXY TCP4 1.2.3.4 5.6.7.8 123456 2\r\n", "v1: a six-digit port");
    v1_bad("PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "v1: a port with a leading zero");
    v1_bad("PROXY TCP4 1.2.3.4 5.6.7.8 x80 2\r\n", "v1: a port with leading junk");
    v1_bad("PROXY TCP4 1.2.3.4 5.6.7.8 80x 2\r\n", "v1: a port with trailing junk");
    v1_bad("PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n", "v1: a port with a sign");
    v1_bad("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "v1: a negative port");
    v1_bad("PROXY TCP4 x1.2.3.4 5.6.7.8 1 2\r\n", "v1: an address with leading junk");
    v1_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "v1: a field missing");
    v1_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "v1: a field too many");
    v1_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "v1: a trailing space");
    v1_bad("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "v1: two spaces");
    v1_bad("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "v1: two spaces after PROXY");
    v1_bad("PROXY \r\n", "v1: nothing after PROXY");
    v1_bad("PROXY\r\n", "v1: PROXY without its space");
    v1_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "v1: CR without LF");
    v1_bad("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "v1: LF without CR");
    v1_bad("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "v1: a tab");
    is_int(tycho_proxyproto_parse((const unsigned char *)"PROXY TCP4 1.2.3.4\0005.6.7.8 1 2\r\n",
                                  34, &h),
           TYCHO_PROXYPROTO_BAD, "v1: a NUL");
    v1_bad("PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "v1: PROXZ");
    v1_bad("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "an HTTP request is no header");
    v1_bad("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "a TLS ClientHello is no header");
    is_int(parse_str("P", &h), TYCHO_PROXYPROTO_MORE, "v1: \"P\" is a prefix: MORE");
    is_int(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", &h), TYCHO_PROXYPROTO_MORE,
           "v1: CR as the last byte: MORE (the LF may follow)");
    is_int(tycho_proxyproto_parse((const unsigned char *)"", 0, &h), TYCHO_PROXYPROTO_MORE,
           "nothing yet: MORE");

    /* The 107-byte bound: a TCP6 line of exactly 107 bytes passes, 108 does not. */
    snprintf(line, sizeof line, "PROXY TCP6 %s %s 65535 65535\r\n",
             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    is_int(strlen(line), 104, "the longest TCP6 line is 104 bytes");
    snprintf(line, sizeof line, "PROXY UNKNOWN %s %s 65535 65535\r\n",
             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    is_int(strlen(line), 107, "an UNKNOWN line of 107 bytes");
    is_int(parse_str(line, &h), TYCHO_PROXYPROTO_OK, "v1: a line of exactly 107 bytes");
    snprintf(line, sizeof line, "PROXY UNKNOWN %s %s 65535 655350\r\n",
             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    v1_bad(line, "v1: a line of 108 bytes");
    memset(line, 'A', sizeof line);
    memcpy(line, "PROXY ", 6);
    is_int(tycho_proxyproto_parse((unsigned char *)line, 105, &h), TYCHO_PROXYPROTO_MORE,
           "v1: 105 bytes without CRLF: MORE");
    is_int(tycho_proxyproto_parse((unsigned char *)line, 106, &h), TYCHO_PROXYPROTO_BAD,
           "v1: 106 bytes without CR: no CRLF can end within 107");
    is_int(tycho_proxyproto_parse((unsigned char *)line, sizeof line, &h), TYCHO_PROXYPROTO_BAD,
           "v1: no CRLF within 107 bytes");
}

/* A version 2 header: the signature, ver_cmd, fam, then body (n bytes) as the block. */
static size_t v2(unsigned char *out, unsigned char ver_cmd, unsigned char fam,
                 const unsigned char *body, size_t n)
{
    static const unsigned char sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                          0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (unsigned char)(n >> 8);
    out[15] = (unsigned char)n;
    if (n)
        memcpy(out + 16, body, n);
    return 16 + n;
}

static const unsigned char inet_block[12] = {192, 0, 2, 1, 198, 51, 100, 2, 0xDC, 0x04, 0x01, 0xBB};

static void v2_bad(const unsigned char *b, size_t n, const char *what)
{
    struct tycho_proxyproto h;
    enum tycho_proxyproto_result r = tycho_proxyproto_parse(b, n, &h);

    is_int(r, TYCHO_PROXYPROTO_BAD, what);
    ok(r != TYCHO_PROXYPROTO_BAD || (h.reason && *h.reason), "a bad v2 header has a reason");
}

static void test_v2(void)
{
    unsigned char b[8192], body[5000];
    struct tycho_proxyproto h;
    char a[INET6_ADDRSTRLEN];
    size_t n;

    n = v2(b, 0x21, 0x11, inet_block, sizeof inet_block);
    memcpy(b + n, "GET /", 5);
    is_int(tycho_proxyproto_parse(b, n + 5, &h), TYCHO_PROXYPROTO_OK, "v2 PROXY TCP/IPv4");
    is_int(h.version, 2, "v2: version 2");
    is_int(h.len, 28, "v2 IPv4: 16 + 12 bytes (what follows is not the header's)");
    ok(!h.local, "v2 PROXY: an address to use");
    is_int(h.family, AF_INET, "v2 IPv4: AF_INET");
    is_str(addr(&h, 0, a), "192.0.2.1", "v2 IPv4: the source");
    is_str(addr(&h, 1, a), "198.51.100.2", "v2 IPv4: the destination");
    is_int(h.src_port, 56324, "v2 IPv4: the source port (network order)");
    is_int(h.dst_port, 443, "v2 IPv4: the destination port");

    memset(body, 0, 36);
    inet_pton(AF_INET6, "2001:db8::7", body);
    inet_pton(AF_INET6, "2001:db8::8", body + 16);
    body[32] = 0x30, body[33] = 0x39, body[34] = 0, body[35] = 80;
    n = v2(b, 0x21, 0x21, body, 36);
    is_int(tycho_proxyproto_parse(b, n, &h), TYCHO_PROXYPROTO_OK, "v2 PROXY TCP/IPv6");
    is_int(h.family, AF_INET6, "v2 IPv6: AF_INET6");
    is_str(addr(&h, 0, a), "2001:db8::7", "v2 IPv6: the source");
    is_str(addr(&h, 1, a), "2001:db8::8", "v2 IPv6: the destination");
    is_int(h.src_port, 12345, "v2 IPv6: the source port");
    is_int(h.dst_port, 80, "v2 IPv6: the destination port");
    is_int(h.len, 52, "v2 IPv6: 16 + 36 bytes");

    /* TLVs after the addresses: skipped, the header's length covers them. */
    memcpy(body, inet_block, 12);
    memcpy(body + 12, "\x01\x00\x02h2\x04\x00\x00\x20\x00\x03" "abc", 14);
    n = v2(b, 0x21, 0x11, body, 26);
    is_int(tycho_proxyproto_parse(b, n, &h), TYCHO_PROXYPROTO_OK, "v2 with TLVs (ALPN, NOOP)");
    is_int(h.len, 42, "v2 with TLVs: they are in its length");
    is_str(addr(&h, 0, a), "192.0.2.1", "v2 with TLVs: the source");
    memcpy(body + 12, "\x01\x00\x05h2", 5);
    n = v2(b, 0x21, 0x11, body, 17);
    v2_bad(b, n, "v2: a TLV longer than what is left of the header");
    memcpy(body + 12, "\x01\x00", 2);
    n = v2(b, 0x21, 0x11, body, 14);
    v2_bad(b, n, "v2: a TLV cut in its own head");

    n = v2(b, 0x20, 0x00, NULL, 0);
    is_int(tycho_proxyproto_parse(b, n, &h), TYCHO_PROXYPROTO_OK, "v2 LOCAL");
    ok(h.local, "v2 LOCAL: the peer's address stays");
    is_int(h.len, 16, "v2 LOCAL: 16 bytes");
    n = v2(b, 0x20, 0x11, inet_block, sizeof inet_block);
    is_int(tycho_proxyproto_parse(b, n, &h), TYCHO_PROXYPROTO_OK, "v2 LOCAL with an IPv4 block");
    ok(h.local && h.len == 28, "v2 LOCAL: the block is skipped, not used");
    n = v2(b, 0x20, 0x11, inet_block, 4);
    is_int(tycho_proxyproto_parse(b, n, &h), TYCHO_PROXYPROTO_OK,
           "v2 LOCAL: its family is ignored, so a short block is no error");
    n = v2(b, 0x21, 0x00, NULL, 0);
    is_int(tycho_proxyproto_parse(b, n, &h), TYCHO_PROXYPROTO_OK, "v2 PROXY AF_UNSPEC");
    ok(h.local, "v2 AF_UNSPEC: the peer's address stays");
    memset(body, 0, 216);
    n = v2(b, 0x21, 0x31, body, 216);
    is_int(tycho_proxyproto_parse(b, n, &h), TYCHO_PROXYPROTO_OK, "v2 PROXY AF_UNIX");
    ok(h.local && h.len == 232, "v2 AF_UNIX: the peer's address stays");
    n = v2(b, 0x21, 0x12, inet_block, sizeof inet_block);
    is_int(tycho_proxyproto_parse(b, n, &h), TYCHO_PROXYPROTO_OK, "v2 PROXY UDP/IPv4");
    ok(h.local, "v2 UDP: no TCP peer to stand for: the peer's stays");

    n = v2(b, 0x11, 0x11, inet_block, sizeof inet_block);
    v2_bad(b, n, "v2: version 1 in the binary format");
    n = v2(b, 0x31, 0x11, inet_block, sizeof inet_block);
    v2_bad(b, n, "v2: version 3");
    v2_bad(b, 13, "v2: a wrong version is refused from its byte on");
    n = v2(b, 0x22, 0x11, inet_block, sizeof inet_block);
    v2_bad(b, n, "v2: command 2");
    n = v2(b, 0x2F, 0x11, inet_block, sizeof inet_block);
    v2_bad(b, n, "v2: command 15");
    n = v2(b, 0x21, 0x41, inet_block, sizeof inet_block);
    v2_bad(b, n, "v2: address family 4");
    n = v2(b, 0x21, 0x13, inet_block, sizeof inet_block);
    v2_bad(b, n, "v2: transport 3");
    n = v2(b, 0x21, 0x11, inet_block, 11);
    v2_bad(b, n, "v2: IPv4 block of 11 bytes");
    v2_bad(b, 16, "v2: a too-short block is refused from the fixed 16 bytes on");
    n = v2(b, 0x21, 0x21, body, 35);
    v2_bad(b, n, "v2: IPv6 block of 35 bytes");
    n = v2(b, 0x21, 0x21, inet_block, 12);
    v2_bad(b, n, "v2: IPv6 family with an IPv4-sized block");
    n = v2(b, 0x21, 0x31, body, 100);
    v2_bad(b, n, "v2: UNIX block of 100 bytes");
    memcpy(b, "\r\n\r\n\0\r\nQUIX\n", 12);
    v2_bad(b, 16, "v2: a wrong signature");

    /* The bound: 4096 in all is accepted, 4097 refused as soon as the length is known. */
    memset(body, 0, sizeof body);
    memcpy(body, inet_block, 12);
    body[12] = 0x04;                   /* PP2_TYPE_NOOP over the rest */
    body[13] = (unsigned char)((4096 - 16 - 12 - 3) >> 8);
    body[14] = (unsigned char)(4096 - 16 - 12 - 3);
    n = v2(b, 0x21, 0x11, body, 4096 - 16);
    is_int(tycho_proxyproto_parse(b, n, &h), TYCHO_PROXYPROTO_OK, "v2: a header of 4096 bytes");
    is_int(h.len, 4096, "v2: its length");
    body[14] = (unsigned char)(4096 - 16 - 12 - 3 + 1);
    n = v2(b, 0x21, 0x11, body, 4096 - 16 + 1);
    v2_bad(b, 16, "v2: a header of 4097 bytes: refused from its 16 fixed bytes");
    v2_bad(b, n, "v2: a header of 4097 bytes");
    b[14] = b[15] = 0xFF;
    v2_bad(b, 16, "v2: a declared length of 65535");
}

/*
 * Feeds the whole header (plus one byte after it) 1..n bytes at a time: MORE
 * for every proper prefix, then OK with the same length and addresses.
 */
static void split(const unsigned char *b, size_t n, const char *what)
{
    struct tycho_proxyproto whole, h;
    size_t bad_at = 0;
    char msg[160];

    if (tycho_proxyproto_parse(b, n, &whole) != TYCHO_PROXYPROTO_OK || whole.len != n) {
        ok(0, what);
        return;
    }
    for (size_t i = 0; i < n && !bad_at; i++) {
        /* A copy of exactly i bytes on the heap, so a read past it is caught under ASan. */
        unsigned char *part = malloc(i ? i : 1);
        if (!part)
            break;
        memcpy(part, b, i);
        if (tycho_proxyproto_parse(part, i, &h) != TYCHO_PROXYPROTO_MORE)
            bad_at = i ? i : n + 1;
        free(part);
    }
    snprintf(msg, sizeof msg, "%s: MORE for each of the %zu prefixes", what, n);
    ok(!bad_at, msg);
    if (bad_at)
        printf("     not MORE at %zu bytes\n", bad_at);
    snprintf(msg, sizeof msg, "%s: then OK, the same header", what);
    ok(tycho_proxyproto_parse(b, n, &h) == TYCHO_PROXYPROTO_OK && h.len == whole.len &&
           h.local == whole.local && h.family == whole.family &&
           memcmp(h.src, whole.src, 16) == 0 && h.src_port == whole.src_port,
       msg);
}

static void test_split(void)
{
    unsigned char b[512], body[64];
    const char *lines[] = {
        "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n",
        "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
        "PROXY UNKNOWN\r\n",
    };
    size_t n;

    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++)
        split((const unsigned char *)lines[i], strlen(lines[i]), lines[i]);
    n = v2(b, 0x21, 0x11, inet_block, sizeof inet_block);
    split(b, n, "v2 IPv4");
    memset(body, 0, sizeof body);
    body[15] = 1, body[31] = 2;
    n = v2(b, 0x21, 0x21, body, 36);
    split(b, n, "v2 IPv6");
    memcpy(body, inet_block, 12);
    memcpy(body + 12, "\x01\x00\x02h2", 5);
    n = v2(b, 0x21, 0x11, body, 17);
    split(b, n, "v2 IPv4 with a TLV");
    n = v2(b, 0x20, 0x00, NULL, 0);
    split(b, n, "v2 LOCAL");
}

int main(void)
{
    test_v1();
    test_v2();
    test_split();
    return test_summary();
}
