/*
 * proxyproto.c: the PROXY protocol header, versions 1 and 2 (proxyproto.h).
 * Pure: reads the bytes it is given and nothing else; any thread.
 *
 * Every length is checked against len before a byte is read: a version 1
 * line is looked at no further than its 107 bytes, a version 2 header no
 * further than its declared length, which is refused beyond
 * TYCHO_PROXYPROTO_MAX_BYTES before anything is waited for.
 */
#include "core/proxyproto.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

static const unsigned char v1_sig[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
static const unsigned char v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

#define V2_FIXED_BYTES 16
#define V2_INET_BYTES 12   /* two IPv4 addresses, two ports */
#define V2_INET6_BYTES 36  /* two IPv6 addresses, two ports */
#define V2_UNIX_BYTES 216  /* two 108-byte paths */

static enum tycho_proxyproto_result bad(struct tycho_proxyproto *h, const char *reason)
{
    h->reason = reason;
    return TYCHO_PROXYPROTO_BAD;
}

/* A port in decimal: 1 to 5 digits, no leading zero (but "0"), at most 65535. */
static bool parse_port(const char *s, unsigned *port)
{
    size_t n = strlen(s);
    unsigned long v = 0;

    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *port = (unsigned)v;
    return true;
}

/*
 * The line of a version 1 header (its CRLF already found, not in line):
 * "PROXY TCP4|TCP6 SRC DST SPORT DPORT" with single spaces, or "PROXY UNKNOWN"
 * followed by anything.
 */
static enum tycho_proxyproto_result parse_v1_line(const unsigned char *line, size_t n,
                                                  struct tycho_proxyproto *h)
{
    char text[TYCHO_PROXYPROTO_V1_MAX_BYTES + 1];
    char *tok[6];
    int ntok = 0, af;
    char *p;

    memcpy(text, line, n);
    text[n] = '\0';
    /* "PROXY UNKNOWN" then the end of the line or a space: whatever follows is ignored. */
    if (n >= 13 && memcmp(text, "PROXY UNKNOWN", 13) == 0 && (n == 13 || text[13] == ' ')) {
        h->local = true;
        return TYCHO_PROXYPROTO_OK;
    }
    for (p = text; ntok < 6; ntok++) {
        tok[ntok] = p;
        p = strchr(p, ' ');
        if (!p) {
            ntok++;
            break;
        }
        *p++ = '\0';
    }
    if (p)
        return bad(h, "v1: more fields than PROXY TCPx SRC DST SPORT DPORT");
    for (int i = 0; i < ntok; i++)
        if (tok[i][0] == '\0')
            return bad(h, "v1: an empty field (two spaces, or one at an end)");
    if (strcmp(tok[1], "TCP4") == 0)
        af = AF_INET;
    else if (strcmp(tok[1], "TCP6") == 0)
        af = AF_INET6;
    else
        return bad(h, "v1: the protocol is not TCP4, TCP6 or UNKNOWN");
    if (ntok != 6)
        return bad(h, "v1: fewer fields than PROXY TCPx SRC DST SPORT DPORT");
    if (inet_pton(af, tok[2], h->src) != 1 || inet_pton(af, tok[3], h->dst) != 1)
        return bad(h, af == AF_INET ? "v1: a bad IPv4 address" : "v1: a bad IPv6 address");
    if (!parse_port(tok[4], &h->src_port) || !parse_port(tok[5], &h->dst_port))
        return bad(h, "v1: a bad port");
    h->family = af;
    return TYCHO_PROXYPROTO_OK;
}

static enum tycho_proxyproto_result parse_v1(const unsigned char *data, size_t len,
                                             struct tycho_proxyproto *h)
{
    /* The CR can be at most at 105: with its LF, the line is then 107 bytes. */
    size_t scan = len < TYCHO_PROXYPROTO_V1_MAX_BYTES - 1 ? len : TYCHO_PROXYPROTO_V1_MAX_BYTES - 1;

    if (memcmp(data, v1_sig, len < sizeof(v1_sig) ? len : sizeof(v1_sig)) != 0)
        return bad(h, "not a PROXY header (v1 starts \"PROXY \")");
    for (size_t i = 0; i < scan; i++) {
        if (data[i] == '\r') {
            if (i + 1 == len)
                return TYCHO_PROXYPROTO_MORE;
            if (data[i + 1] != '\n')
                return bad(h, "v1: CR without LF");
            h->version = 1;
            h->len = i + 2;
            return parse_v1_line(data, i, h);
        }
        if (data[i] < 0x20 || data[i] > 0x7e)
            return bad(h, "v1: a byte that is not printable ASCII");
    }
    if (len >= TYCHO_PROXYPROTO_V1_MAX_BYTES - 1)
        return bad(h, "v1: no CRLF within 107 bytes");
    return TYCHO_PROXYPROTO_MORE;
}

/* The TLVs in data[0..n): skipped, but each must lie within the header. */
static bool tlvs_fit(const unsigned char *data, size_t n)
{
    size_t off = 0;

    while (off < n) {
        size_t vlen;
        if (n - off < 3)
            return false;
        vlen = (size_t)data[off + 1] << 8 | data[off + 2];
        if (vlen > n - off - 3)
            return false;
        off += 3 + vlen;
    }
    return true;
}

static enum tycho_proxyproto_result parse_v2(const unsigned char *data, size_t len,
                                             struct tycho_proxyproto *h)
{
    size_t alen, total, need = 0;
    unsigned cmd, af, transport;

    if (memcmp(data, v2_sig, len < sizeof(v2_sig) ? len : sizeof(v2_sig)) != 0)
        return bad(h, "not a PROXY header (v2 signature)");
    if (len <= sizeof(v2_sig))
        return TYCHO_PROXYPROTO_MORE;
    if (data[12] >> 4 != 2)
        return bad(h, "v2: version is not 2");
    cmd = data[12] & 0x0F;
    if (cmd > 1)
        return bad(h, "v2: command is neither LOCAL nor PROXY");
    if (len < V2_FIXED_BYTES)
        return TYCHO_PROXYPROTO_MORE;
    af = data[13] >> 4;
    transport = data[13] & 0x0F;
    alen = (size_t)data[14] << 8 | data[15];
    total = V2_FIXED_BYTES + alen;
    if (total > TYCHO_PROXYPROTO_MAX_BYTES)
        return bad(h, "v2: header over the 4096 bytes accepted");
    /* LOCAL: the balancer's own connection; its address block, whatever it holds, is ignored. */
    if (cmd == 1) {
        if (af > 3 || transport > 2)
            return bad(h, "v2: unknown address family or transport");
        need = af == 1 ? V2_INET_BYTES : af == 2 ? V2_INET6_BYTES : af == 3 ? V2_UNIX_BYTES : 0;
        if (alen < need)
            return bad(h, "v2: address block too short for its family");
    }
    if (len < total)
        return TYCHO_PROXYPROTO_MORE;
    h->version = 2;
    h->len = total;
    if (cmd == 0 || af == 0) {
        h->local = true;            /* TLVs of an unspecified block: it is ignored whole */
        return TYCHO_PROXYPROTO_OK;
    }
    if (!tlvs_fit(data + V2_FIXED_BYTES + need, alen - need))
        return bad(h, "v2: a TLV runs past the header");
    if (af == 3 || transport != 1) {
        h->local = true;            /* UNIX or datagram: no TCP peer to stand for */
        return TYCHO_PROXYPROTO_OK;
    }
    data += V2_FIXED_BYTES;
    if (af == 1) {
        h->family = AF_INET;
        memcpy(h->src, data, 4);
        memcpy(h->dst, data + 4, 4);
        data += 8;
    } else {
        h->family = AF_INET6;
        memcpy(h->src, data, 16);
        memcpy(h->dst, data + 16, 16);
        data += 32;
    }
    h->src_port = (unsigned)data[0] << 8 | data[1];
    h->dst_port = (unsigned)data[2] << 8 | data[3];
    return TYCHO_PROXYPROTO_OK;
}

enum tycho_proxyproto_result tycho_proxyproto_parse(const unsigned char *data, size_t len,
                                                    struct tycho_proxyproto *h)
{
    memset(h, 0, sizeof(*h));
    if (len == 0)
        return TYCHO_PROXYPROTO_MORE;
    if (data[0] == v1_sig[0])
        return parse_v1(data, len, h);
    if (data[0] == v2_sig[0])
        return parse_v2(data, len, h);
    return bad(h, "no PROXY header");
}
