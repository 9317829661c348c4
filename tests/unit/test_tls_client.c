/*
 * test_tls_client.c: unit tests for net/tls_client.[ch] through its public
 * header: the cache gives one context per setting (the same pointer for the
 * same options, files read once), every load failure's message, and what an
 * SSL made for a host carries (SNI for a name, none for an address). The
 * certificates come from tests/integration/tls/mkcerts.sh, run into a temp
 * folder (the test runs from the repository's top). Handshakes are
 * test_https_out's. Single-threaded. Ends with `N passed, M failed`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "harness.h"
#include "net/tls_client.h"

static char dir[] = "/tmp/tycho-test-tls-XXXXXX";
static char paths[32][512];

/* DIR/name, in one of a few rotating buffers. */
static const char *file(const char *name)
{
    static int next;
    char *p = paths[next++ % 32];

    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

/* tycho_tls_client_get's error for o, or "" when it succeeds. */
static const char *get_error(struct tycho_tls_client_cache *c,
                             const struct tycho_tls_client_opts *o)
{
    static char err[1024];

    err[0] = '\0';
    if (tycho_tls_client_get(c, o, err, sizeof err))
        return "";
    return err;
}

static void test_cache(struct tycho_tls_client_cache *c)
{
    char err[512];
    struct tycho_tls_client_opts none = {NULL, NULL, NULL, false};
    struct tycho_tls_client_opts ca = {file("ca.pem"), NULL, NULL, false};
    struct tycho_tls_client_opts insecure = {NULL, NULL, NULL, true};
    struct tycho_tls_client_opts client = {file("ca.pem"), file("client.pem"),
                                           file("client.key"), false};
    struct tycho_tls_client_opts both = {file("ca.pem"), file("both.pem"), NULL, false};
    struct tycho_tls_client *t_none = tycho_tls_client_get(c, &none, err, sizeof err);
    struct tycho_tls_client *t_ca = tycho_tls_client_get(c, &ca, err, sizeof err);
    struct tycho_tls_client *t_insecure = tycho_tls_client_get(c, &insecure, err, sizeof err);
    struct tycho_tls_client *t_client = tycho_tls_client_get(c, &client, err, sizeof err);
    struct tycho_tls_client *t_both = tycho_tls_client_get(c, &both, err, sizeof err);
    struct tycho_tls_client_opts ca_again = {file("ca.pem"), NULL, NULL, false}, back;

    ok(t_none && t_ca && t_insecure && t_client && t_both, "every good setting loads");
    ok(t_none == tycho_tls_client_get(c, &none, err, sizeof err),
       "no option: the same context again");
    ok(t_ca == tycho_tls_client_get(c, &ca_again, err, sizeof err),
       "the same ca_file (another string): the same context");
    ok(t_none != t_ca && t_ca != t_insecure && t_ca != t_client && t_client != t_both,
       "each setting has a context of its own");
    if (t_client) {
        tycho_tls_client_opts_of(t_client, &back);
        is_str(back.client_cert, file("client.pem"), "the setting keeps its client_cert");
        is_str(back.client_key, file("client.key"), "... and its client_key");
        ok(!back.insecure_skip_verify, "... and verifies");
    }
    if (t_both) {
        tycho_tls_client_opts_of(t_both, &back);
        is_str(back.client_key, file("both.pem"),
               "no client_key: the key is in client_cert's file");
    }
}

static void test_errors(struct tycho_tls_client_cache *c)
{
    struct tycho_tls_client_opts o = {"/nonexistent/ca.pem", NULL, NULL, false};
    char want[1024];

    is_str(get_error(c, &o),
           "tls: cannot load ca_file /nonexistent/ca.pem: No such file or directory",
           "a ca_file that is not there");
    is_str(get_error(c, &o),
           "tls: cannot load ca_file /nonexistent/ca.pem: No such file or directory",
           "a failure is not cached: the file is tried again");
    o.ca_file = file("client.key");
    snprintf(want, sizeof want, "tls: cannot load ca_file %s: ", file("client.key"));
    ok(strncmp(get_error(c, &o), want, strlen(want)) == 0 &&
           strlen(get_error(c, &o)) > strlen(want),
       "a ca_file with no certificate: the file and OpenSSL's reason");
    o = (struct tycho_tls_client_opts){NULL, NULL, file("client.key"), false};
    is_str(get_error(c, &o), "tls: client_key is given without client_cert", "a key alone");
    o = (struct tycho_tls_client_opts){NULL, file("client.pem"), "/nonexistent/client.key", false};
    is_str(get_error(c, &o),
           "tls: cannot load client_key /nonexistent/client.key: No such file or directory",
           "a client_key that is not there");
    o = (struct tycho_tls_client_opts){NULL, "/nonexistent/client.pem", NULL, false};
    is_str(get_error(c, &o),
           "tls: cannot load client_cert /nonexistent/client.pem: No such file or directory",
           "a client_cert that is not there");
    o = (struct tycho_tls_client_opts){NULL, file("client.key"), file("client.key"), false};
    snprintf(want, sizeof want, "tls: cannot load client_cert %s: ", file("client.key"));
    ok(strncmp(get_error(c, &o), want, strlen(want)) == 0, "a client_cert that is a key");
    o = (struct tycho_tls_client_opts){NULL, file("client.pem"), file("enc.key"), false};
    snprintf(want, sizeof want, "tls: cannot load client_key %s: the key is encrypted (no "
             "passphrase is taken: write it decrypted)", file("enc.key"));
    is_str(get_error(c, &o), want, "an encrypted client_key: refused, no prompt");
    o = (struct tycho_tls_client_opts){NULL, file("client.pem"), file("server.key"), false};
    snprintf(want, sizeof want, "tls: client_key %s does not match client_cert %s",
             file("server.key"), file("client.pem"));
    is_str(get_error(c, &o), want, "a client_key of another certificate");
    o = (struct tycho_tls_client_opts){NULL, file("client.pem"), NULL, false};
    snprintf(want, sizeof want, "tls: cannot load client_key %s: ", file("client.pem"));
    ok(strncmp(get_error(c, &o), want, strlen(want)) == 0,
       "no client_key and none in client_cert's file");
}

static void test_ssl(struct tycho_tls_client_cache *c)
{
    char err[512];
    struct tycho_tls_client_opts ca = {file("ca.pem"), NULL, NULL, false};
    struct tycho_tls_client *t = tycho_tls_client_get(c, &ca, err, sizeof err);
    struct tycho_tls_client_session s = {NULL};
    SSL *name, *addr, *v6;

    if (!t) {
        ok(0, "a context for the SSL tests");
        return;
    }
    name = tycho_tls_client_ssl_new(t, "localhost", &s);
    addr = tycho_tls_client_ssl_new(t, "127.0.0.1", &s);
    v6 = tycho_tls_client_ssl_new(t, "::1", &s);
    ok(name && addr && v6, "SSLs for a name and addresses");
    if (name)
        is_str(SSL_get_servername(name, TLSEXT_NAMETYPE_host_name), "localhost",
               "a name is sent as SNI");
    ok(addr && SSL_get_servername(addr, TLSEXT_NAMETYPE_host_name) == NULL,
       "an IPv4 address is not sent as SNI");
    ok(v6 && SSL_get_servername(v6, TLSEXT_NAMETYPE_host_name) == NULL,
       "an IPv6 address is not sent as SNI");
    ok(name && SSL_get_verify_mode(name) == SSL_VERIFY_PEER, "verification is on");
    ok(!tycho_tls_client_handshake_error(t, name, 0, err, sizeof err),
       "no error and no refused certificate: nothing to say");
    SSL_free(name);
    SSL_free(addr);
    SSL_free(v6);
    tycho_tls_client_session_dispose(&s);
}

int main(void)
{
    struct tycho_tls_client_cache *c;
    char cmd[1024];

    if (!mkdtemp(dir)) {
        ok(0, "a temporary folder");
        return test_summary();
    }
    snprintf(cmd, sizeof cmd,
             "sh tests/integration/tls/mkcerts.sh %s >/dev/null 2>&1 && "
             "cat %s/client.pem %s/client.key > %s/both.pem && "
             "openssl pkey -in %s/client.key -aes256 -passout pass:secret -out %s/enc.key",
             dir, dir, dir, dir, dir, dir);
    if (!ok(system(cmd) == 0, "tests/integration/tls/mkcerts.sh makes the test PKI"))
        return test_summary();
    c = tycho_tls_client_cache_new();
    ok(c != NULL, "a cache");
    if (c) {
        test_cache(c);
        test_errors(c);
        test_ssl(c);
    }
    tycho_tls_client_cache_free(c);
    tycho_tls_client_cache_free(NULL);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
    return test_summary();
}
