/*
 * proxies.c: --trusted-proxies (proxies.h): the CIDR list, and the walk over
 * Forwarded / X-Forwarded-For that finds the client behind trusted proxies.
 * The list is built on the main thread and only read afterwards; the rest
 * are pure functions over their arguments, callable from any thread.
 */
#include "core/proxies.h"
#include "core/tycho.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct cidr {
    struct tycho_ip net;    /* masked to bits */
    unsigned char bits;     /* prefix length: 0..32 for IPv4, 0..128 for IPv6 */
};

struct tycho_proxies {
    unsigned n;
    struct cidr cidrs[];
};

static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool tycho_ip_from(int family, const unsigned char *addr, struct tycho_ip *ip)
{
    memset(ip, 0, sizeof(*ip));
    if (family == AF_INET) {
        memcpy(ip->a, addr, 4);
        return true;
    }
    if (family != AF_INET6)
        return false;
    if (memcmp(addr, v4_mapped, sizeof(v4_mapped)) == 0) {
        memcpy(ip->a, addr + 12, 4);
        return true;
    }
    ip->v6 = true;
    memcpy(ip->a, addr, 16);
    return true;
}

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Moves [*s, *s + *len) past blanks on both sides. */
static void trim(const char **s, size_t *len)
{
    while (*len > 0 && is_blank(**s)) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && is_blank((*s)[*len - 1]))
        (*len)--;
}

/* A bare IPv4 or IPv6 address of len bytes, nothing else, into ip. */
static bool parse_bare(const char *s, size_t len, struct tycho_ip *ip)
{
    char text[INET6_ADDRSTRLEN];
    unsigned char bytes[16];

    if (len == 0 || len >= sizeof(text))
        return false;
    memcpy(text, s, len);
    text[len] = '\0';
    if (inet_pton(AF_INET, text, bytes) == 1)
        return tycho_ip_from(AF_INET, bytes, ip);
    if (inet_pton(AF_INET6, text, bytes) == 1)
        return tycho_ip_from(AF_INET6, bytes, ip);
    return false;
}

/* ":digits" (a port, 1 to 5 digits) and nothing more. */
static bool is_port(const char *s, size_t len)
{
    if (len < 2 || len > 6 || s[0] != ':')
        return false;
    for (size_t i = 1; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

bool tycho_ip_parse(const char *s, size_t len, struct tycho_ip *ip)
{
    const char *colon, *close;

    trim(&s, &len);
    if (len >= 2 && s[0] == '"' && s[len - 1] == '"') {
        s++;
        len -= 2;
    }
    if (len > 0 && s[0] == '[') {          /* "[v6]" or "[v6]:port" */
        close = memchr(s, ']', len);
        if (!close || (close + 1 != s + len && !is_port(close + 1, (size_t)(s + len - close - 1))))
            return false;
        return parse_bare(s + 1, (size_t)(close - s - 1), ip) && ip->v6;
    }
    colon = memchr(s, ':', len);
    if (colon && !memchr(colon + 1, ':', (size_t)(s + len - colon - 1))) {   /* "v4:port" */
        if (!is_port(colon, (size_t)(s + len - colon)))
            return false;
        return parse_bare(s, (size_t)(colon - s), ip) && !ip->v6;
    }
    return parse_bare(s, len, ip);
}

/* Clears the bits of ip past the first bits. */
static void mask(struct tycho_ip *ip, unsigned bits)
{
    for (unsigned i = 0; i < 16; i++) {
        unsigned keep = bits >= 8 * (i + 1) ? 8 : (bits > 8 * i ? bits - 8 * i : 0);
        ip->a[i] &= (unsigned char)(0xff00u >> keep);
    }
}

/* One entry "ADDR[/BITS]" of --trusted-proxies into c. */
static bool parse_cidr(const char *s, size_t len, struct cidr *c)
{
    const char *slash = memchr(s, '/', len);
    size_t alen = slash ? (size_t)(slash - s) : len;
    unsigned long bits;
    bool mapped;

    if (!parse_bare(s, alen, &c->net))
        return false;
    /* An IPv4-mapped IPv6 CIDR (::ffff:10.0.0.0/104) became IPv4: its bits count from 96. */
    mapped = !c->net.v6 && memchr(s, ':', alen) != NULL;
    bits = c->net.v6 ? 128 : 32;
    if (slash) {
        const char *d = slash + 1;
        size_t dlen = len - alen - 1;
        if (dlen == 0 || dlen > 3)
            return false;
        bits = 0;
        for (size_t i = 0; i < dlen; i++) {
            if (d[i] < '0' || d[i] > '9')
                return false;
            bits = bits * 10 + (unsigned long)(d[i] - '0');
        }
        if (mapped) {
            if (bits < 96 || bits > 128)
                return false;
            bits -= 96;
        }
        if (bits > (c->net.v6 ? 128u : 32u))
            return false;
    }
    c->bits = (unsigned char)bits;
    mask(&c->net, c->bits);
    return true;
}

int tycho_proxies_parse(const char *text, struct tycho_proxies **out, char *err)
{
    unsigned n = 1;
    struct tycho_proxies *p;
    const char *s = text;

    for (const char *c = text; *c; c++)
        n += *c == ',';
    p = malloc(sizeof(*p) + n * sizeof(p->cidrs[0]));
    if (!p) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --trusted-proxies: out of memory");
        return TYCHO_ERR;
    }
    p->n = 0;
    for (;;) {
        const char *comma = strchr(s, ',');
        const char *e = s;
        size_t len = comma ? (size_t)(comma - s) : strlen(s);
        trim(&e, &len);
        if (!parse_cidr(e, len, &p->cidrs[p->n])) {
            snprintf(err, TYCHO_ERR_LEN, "tycho: --trusted-proxies: expected IPv4 or IPv6 "
                     "addresses or CIDRs such as 10.0.0.0/8,::1, got \"%.*s\"", (int)len, e);
            free(p);
            return TYCHO_ERR;
        }
        p->n++;
        if (!comma)
            break;
        s = comma + 1;
    }
    *out = p;
    return TYCHO_OK;
}

void tycho_proxies_free(struct tycho_proxies *p)
{
    free(p);
}

bool tycho_proxies_trust(const struct tycho_proxies *p, const struct tycho_ip *ip)
{
    for (unsigned i = 0; p && i < p->n; i++) {
        const struct cidr *c = &p->cidrs[i];
        unsigned full = c->bits / 8, rest = c->bits % 8;
        if (c->net.v6 != ip->v6 || memcmp(c->net.a, ip->a, full) != 0)
            continue;
        if (rest == 0 || ((ip->a[full] ^ c->net.a[full]) & (0xff00u >> rest)) == 0)
            return true;
    }
    return false;
}

static bool same_word(const char *s, size_t len, const char *word)
{
    size_t n = strlen(word);

    if (len != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((s[i] | 0x20) != word[i])
            return false;
    return true;
}

static enum tycho_proxy_scheme scheme_of(const char *s, size_t len)
{
    trim(&s, &len);
    if (same_word(s, len, "https"))
        return TYCHO_SCHEME_HTTPS;
    if (same_word(s, len, "http"))
        return TYCHO_SCHEME_HTTP;
    return TYCHO_SCHEME_NONE;
}

/*
 * One Forwarded element "pair;pair;...": its for= address into ip and its
 * proto= into *scheme. false when for= is missing, repeated or not an address.
 */
static bool parse_forwarded(const char *s, size_t len, struct tycho_ip *ip,
                            enum tycho_proxy_scheme *scheme)
{
    bool found = false;
    size_t i = 0;

    *scheme = TYCHO_SCHEME_NONE;
    while (i <= len) {
        size_t start = i, eq;
        bool quoted = false;
        while (i < len && (quoted || s[i] != ';')) {
            if (s[i] == '"')
                quoted = !quoted;
            i++;
        }
        const char *pair = s + start;
        size_t plen = i - start;
        trim(&pair, &plen);
        i++;                                /* past the ';' (or the end) */
        if (plen == 0)
            continue;
        const char *e = memchr(pair, '=', plen);
        if (!e)
            return false;
        eq = (size_t)(e - pair);
        const char *name = pair, *value = e + 1;
        size_t nlen = eq, vlen = plen - eq - 1;
        trim(&name, &nlen);
        if (same_word(name, nlen, "for")) {
            if (found || !tycho_ip_parse(value, vlen, ip))
                return false;
            found = true;
        } else if (same_word(name, nlen, "proto")) {
            trim(&value, &vlen);
            if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
                value++;
                vlen -= 2;
            }
            *scheme = scheme_of(value, vlen);
        }
    }
    return found;
}

bool tycho_proxies_client(const struct tycho_proxies *p, const struct tycho_field *fields,
                          unsigned nfields, bool forwarded, struct tycho_ip *client,
                          enum tycho_proxy_scheme *scheme)
{
    bool any = false;

    /* Right to left: the last field's last element is what the nearest proxy added. */
    for (unsigned f = nfields; f-- > 0;) {
        const char *v = fields[f].value;
        size_t end = fields[f].len;
        for (;;) {
            size_t start = end;
            bool quoted = false;
            struct tycho_ip ip;
            enum tycho_proxy_scheme proto = TYCHO_SCHEME_NONE;
            while (start > 0 && (quoted || v[start - 1] != ',')) {
                if (v[start - 1] == '"')
                    quoted = !quoted;
                start--;
            }
            const char *el = v + start;
            size_t len = end - start;
            trim(&el, &len);
            if (len > 0) {                  /* a list may have empty elements: not hops */
                if (forwarded ? !parse_forwarded(el, len, &ip, &proto)
                              : !tycho_ip_parse(el, len, &ip))
                    return false;           /* not an address: nothing to be sure of */
                *client = ip;
                if (forwarded)
                    *scheme = proto;
                any = true;
                if (!tycho_proxies_trust(p, &ip))
                    return true;
            }
            if (start == 0)
                break;
            end = start - 1;
        }
    }
    return any;                             /* all trusted: the left-most */
}

enum tycho_proxy_scheme tycho_proxies_proto(const struct tycho_field *fields, unsigned nfields)
{
    if (nfields == 0)
        return TYCHO_SCHEME_NONE;
    const char *v = fields[nfields - 1].value;
    size_t len = fields[nfields - 1].len;
    const char *comma = len ? memrchr(v, ',', len) : NULL;

    if (comma) {
        len -= (size_t)(comma + 1 - v);
        v = comma + 1;
    }
    return scheme_of(v, len);
}

size_t tycho_ip_text(const struct tycho_ip *ip, char *buf, size_t buf_len)
{
    if (!inet_ntop(ip->v6 ? AF_INET6 : AF_INET, ip->a, buf, (socklen_t)buf_len)) {
        snprintf(buf, buf_len, "?");
    }
    return strlen(buf);
}
