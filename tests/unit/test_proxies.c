/*
 * test_proxies.c: unit tests for core/proxies.[ch] through its public header.
 *
 * --trusted-proxies parsing (IPv4, IPv6, bare addresses, IPv4-mapped, bad
 * entries and their message), membership at prefix edges, address parsing
 * (ports, brackets, quotes, garbage), and the walk over X-Forwarded-For and
 * Forwarded: right-most untrusted, all trusted (left-most), several fields as
 * one list, for=unknown and garbage where the walk needs them, proto=, and
 * X-Forwarded-Proto. Single-threaded. Ends with `N passed, M failed`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/proxies.h"
#include "core/tycho.h"
#include "harness.h"

static struct tycho_proxies *list(const char *text)
{
    struct tycho_proxies *p = NULL;
    char err[TYCHO_ERR_LEN];

    if (tycho_proxies_parse(text, &p, err) < 0) {
        printf("     %s\n", err);
        return NULL;
    }
    return p;
}

static int trusts(const struct tycho_proxies *p, const char *addr)
{
    struct tycho_ip ip;

    return tycho_ip_parse(addr, strlen(addr), &ip) && tycho_proxies_trust(p, &ip);
}

static void test_parse(void)
{
    struct tycho_proxies *p = list("127.0.0.1/32, 10.0.0.0/8,::1,2001:db8::/32,192.168.1.7");
    char err[TYCHO_ERR_LEN];
    const char *bad[] = {"", "10.0.0.0/33", "::1/129", "10.0.0.0/", "10.0.0.0/x", "1.2.3",
                         "10.0.0.0/8,", "host.example", "10.0.0.0/8,,::1", "::ffff:1.2.3.4/95"};

    ok(p != NULL, "a list of IPv4 and IPv6 CIDRs and bare addresses");
    ok(trusts(p, "127.0.0.1"), "127.0.0.1/32");
    ok(!trusts(p, "127.0.0.2"), "127.0.0.2 is not in 127.0.0.1/32");
    ok(trusts(p, "10.255.1.2") && !trusts(p, "11.0.0.1"), "10.0.0.0/8 at its edges");
    ok(trusts(p, "::1") && !trusts(p, "::2"), "::1 bare is /128");
    ok(trusts(p, "2001:db8:ffff::1") && !trusts(p, "2001:db9::1"), "2001:db8::/32");
    ok(trusts(p, "192.168.1.7") && !trusts(p, "192.168.1.8"), "a bare IPv4 address");
    ok(trusts(p, "::ffff:10.1.2.3"), "an IPv4-mapped address counts as IPv4");
    tycho_proxies_free(p);
    p = list("::ffff:10.0.0.0/104,0.0.0.0/0");
    ok(p && trusts(p, "10.9.9.9") && trusts(p, "8.8.8.8") && !trusts(p, "::5"),
       "a mapped CIDR; /0 is every IPv4 address");
    tycho_proxies_free(p);
    p = list("10.1.2.3/20");
    ok(p && trusts(p, "10.1.15.255") && !trusts(p, "10.1.16.0"), "a CIDR's host bits are masked");
    tycho_proxies_free(p);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p = NULL;
        ok(tycho_proxies_parse(bad[i], &p, err) == TYCHO_ERR && !p &&
               strstr(err, "--trusted-proxies") != NULL,
           bad[i]);
    }
    tycho_proxies_parse("10.0.0.0/33", &p, err);
    is_str(err, "tycho: --trusted-proxies: expected IPv4 or IPv6 addresses or CIDRs such as "
                "10.0.0.0/8,::1, got \"10.0.0.0/33\"", "the message names the flag and the entry");
    tycho_proxies_free(NULL);
}

static const char *text_of(const char *addr)
{
    static char buf[64];
    struct tycho_ip ip;

    if (!tycho_ip_parse(addr, strlen(addr), &ip))
        return "(not an address)";
    tycho_ip_text(&ip, buf, sizeof(buf));
    return buf;
}

static void test_ip(void)
{
    is_str(text_of("1.2.3.4"), "1.2.3.4", "IPv4");
    is_str(text_of(" 1.2.3.4:8080 "), "1.2.3.4", "IPv4 with a port and blanks");
    is_str(text_of("2001:DB8::1"), "2001:db8::1", "IPv6");
    is_str(text_of("[2001:db8::1]"), "2001:db8::1", "bracketed IPv6");
    is_str(text_of("\"[2001:db8::1]:4711\""), "2001:db8::1", "quoted, bracketed, a port");
    is_str(text_of("::ffff:1.2.3.4"), "1.2.3.4", "IPv4-mapped");
    is_str(text_of("unknown"), "(not an address)", "unknown");
    is_str(text_of("_hidden"), "(not an address)", "an obfuscated identifier");
    is_str(text_of("1.2.3.4:"), "(not an address)", "an empty port");
    is_str(text_of("1.2.3.4:x"), "(not an address)", "a bad port");
    is_str(text_of("[1.2.3.4]"), "(not an address)", "IPv4 in brackets");
    is_str(text_of("[::1"), "(not an address)", "an open bracket");
    is_str(text_of(""), "(not an address)", "empty");
    is_str(text_of("1.2.3.4 5.6.7.8"), "(not an address)", "two addresses");
}

/* The walk over one or more fields; "keep" when it keeps the peer, else "ADDR SCHEME". */
static const char *walk(const char *trusted, int forwarded, const char *f1, const char *f2)
{
    static char out[96];
    struct tycho_proxies *p = list(trusted);
    struct tycho_field fields[2] = {{f1, strlen(f1)}, {f2 ? f2 : "", f2 ? strlen(f2) : 0}};
    struct tycho_ip ip;
    enum tycho_proxy_scheme scheme = TYCHO_SCHEME_NONE;
    char addr[64];

    if (!tycho_proxies_client(p, fields, f2 ? 2 : 1, forwarded, &ip, &scheme)) {
        tycho_proxies_free(p);
        return "keep";
    }
    tycho_ip_text(&ip, addr, sizeof(addr));
    snprintf(out, sizeof(out), "%s %s", addr,
             scheme == TYCHO_SCHEME_HTTPS ? "https" : scheme == TYCHO_SCHEME_HTTP ? "http" : "-");
    tycho_proxies_free(p);
    return out;
}

static void test_walk(void)
{
    const char *lo = "127.0.0.1/32", *lan = "127.0.0.1/32,10.0.0.0/8";

    is_str(walk(lo, 0, "1.2.3.4", NULL), "1.2.3.4 -", "one address");
    is_str(walk(lo, 0, "6.6.6.6, 1.2.3.4", NULL), "1.2.3.4 -", "the right-most untrusted");
    is_str(walk(lan, 0, "1.2.3.4, 10.0.0.5", NULL), "1.2.3.4 -", "trusted hops are skipped");
    is_str(walk(lan, 0, "10.0.0.9,10.0.0.5, 127.0.0.1", NULL), "10.0.0.9 -",
           "all trusted: the left-most");
    is_str(walk(lan, 0, "1.2.3.4", "10.0.0.5"), "1.2.3.4 -", "two fields are one list");
    is_str(walk(lan, 0, "1.2.3.4, ", NULL), "1.2.3.4 -", "an empty element is no hop");
    is_str(walk(lan, 0, "", NULL), "keep", "an empty field");
    is_str(walk(lan, 0, "garbage", NULL), "keep", "garbage");
    is_str(walk(lan, 0, "1.2.3.4, garbage", NULL), "keep", "garbage where the walk needs it");
    is_str(walk(lan, 0, "garbage, 1.2.3.4", NULL), "1.2.3.4 -", "garbage the walk never reaches");
    is_str(walk(lan, 0, "garbage, 10.0.0.1", NULL), "keep", "garbage behind a trusted hop");
    is_str(walk(lo, 1, "for=\"[2001:db8::1]:4711\";proto=https", NULL), "2001:db8::1 https",
           "Forwarded: quoted IPv6 with a port, proto");
    is_str(walk(lo, 1, "For=1.2.3.4;Proto=HTTP;by=10.0.0.1", NULL), "1.2.3.4 http",
           "Forwarded: names and proto in any case");
    is_str(walk(lan, 1, "for=1.2.3.4;proto=https, for=10.0.0.2;proto=http", NULL),
           "1.2.3.4 https", "Forwarded: the chosen hop's proto");
    is_str(walk(lan, 1, "for=1.2.3.4", "for=10.0.0.2"), "1.2.3.4 -", "Forwarded: two fields");
    is_str(walk(lo, 1, "for=unknown", NULL), "keep", "for=unknown");
    is_str(walk(lo, 1, "for=_hidden", NULL), "keep", "an obfuscated identifier");
    is_str(walk(lo, 1, "proto=https", NULL), "keep", "an element without for=");
    is_str(walk(lo, 1, "for=1.2.3.4;for=5.6.7.8", NULL), "keep", "for= twice");
    is_str(walk(lo, 1, "for", NULL), "keep", "a pair without =");
    is_str(walk(lo, 1, "for=\"1.2.3.4, 5.6.7.8\"", NULL), "keep", "a comma inside quotes");
}

static enum tycho_proxy_scheme proto(const char *f1, const char *f2)
{
    struct tycho_field fields[2] = {{f1, strlen(f1)}, {f2 ? f2 : "", f2 ? strlen(f2) : 0}};

    return tycho_proxies_proto(fields, f2 ? 2 : 1);
}

static void test_proto(void)
{
    is_int(proto("https", NULL), TYCHO_SCHEME_HTTPS, "https");
    is_int(proto(" HTTP ", NULL), TYCHO_SCHEME_HTTP, "HTTP with blanks");
    is_int(proto("http, https", NULL), TYCHO_SCHEME_HTTPS, "the right-most element");
    is_int(proto("https", "http"), TYCHO_SCHEME_HTTP, "the last field");
    is_int(proto("ftp", NULL), TYCHO_SCHEME_NONE, "anything else");
    is_int(proto("", NULL), TYCHO_SCHEME_NONE, "empty");
    is_int(tycho_proxies_proto(NULL, 0), TYCHO_SCHEME_NONE, "no field");
}

int main(void)
{
    test_parse();
    test_ip();
    test_walk();
    test_proto();
    return test_summary();
}
