/*
 * tls_client.c: client TLS contexts, one per distinct setting, cached
 * (tls_client.h). Runs on the thread that owns the cache.
 *
 * Why a cache: building a context reads and parses the trust store (the
 * system's bundle is some 140 certificates) and the client key; doing it per
 * connection would cost more than the handshake. Contexts are built with
 * verification on (SSL_VERIFY_PEER against ca_file or the system store,
 * the name or address checked per SSL), TLS 1.2 at least, and a client
 * session cache that stores nothing itself: each new session goes to the
 * pool that owns the connection (on_new_session), which offers it on its
 * next connect. TLS 1.3 sends its sessions after the handshake (in
 * NewSessionTicket messages), so the callback, not the end of the
 * handshake, is where they are caught.
 */
#include "net/tls_client.h"
#include "core/tycho.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tycho_tls_client {
    struct tycho_tls_client *next;         /* the cache's list */
    char *ca_file, *client_cert, *client_key;   /* owned; NULL: not given */
    bool insecure_skip_verify;
    SSL_CTX *ctx;                   /* owned */
};

struct tycho_tls_client_cache {
    struct tycho_tls_client *list;
};

struct tycho_tls_client_cache *tycho_tls_client_cache_new(void)
{
    return calloc(1, sizeof(struct tycho_tls_client_cache));
}

static void tls_free(struct tycho_tls_client *t)
{
    SSL_CTX_free(t->ctx);
    free(t->ca_file);
    free(t->client_cert);
    free(t->client_key);
    free(t);
}

void tycho_tls_client_cache_free(struct tycho_tls_client_cache *c)
{
    if (!c)
        return;
    while (c->list) {
        struct tycho_tls_client *t = c->list;
        c->list = t->next;
        tls_free(t);
    }
    free(c);
}

static bool same(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* The reason of OpenSSL's first queued error (the queue is emptied). */
static const char *queued_reason(unsigned long *code)
{
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;

    ERR_clear_error();
    if (code)
        *code = e;
    return r ? r : "unknown error";
}

/* The file can be opened for reading: else why, as strerror says, into err. */
static int readable(const char *what, const char *file, char *err, size_t cap)
{
    FILE *f = fopen(file, "r");

    if (f) {
        fclose(f);
        return TYCHO_OK;
    }
    snprintf(err, cap, "tls: cannot load %s %s: %s", what, file, strerror(errno));
    return TYCHO_ERR;
}

/*
 * A session the backend issued: the pool's last one now (a TLS 1.3 ticket
 * comes after the handshake).
 */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct tycho_tls_client_session *s = SSL_get_app_data(ssl);

    if (!s || !SSL_SESSION_is_resumable(sess))
        return 0;                   /* OpenSSL frees it */
    SSL_SESSION_free(s->last);
    s->last = sess;                 /* the reference OpenSSL gave us */
    return 1;
}

/*
 * OpenSSL asks for an encrypted key's passphrase: none is given (its default
 * would prompt on the terminal, from a worker). arg: a bool to set, or NULL.
 */
static int no_passphrase(char *buf, int size, int rwflag, void *arg)
{
    (void)buf, (void)size, (void)rwflag;
    if (arg)
        *(bool *)arg = true;
    return 0;
}

/* Builds t->ctx from t's options. TYCHO_OK, or TYCHO_ERR with why in err. */
static int ctx_build(struct tycho_tls_client *t, char *err, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    unsigned long code;
    const char *why;
    bool encrypted = false, loaded;

    if (!ctx) {
        snprintf(err, cap, "tls: out of memory making a context");
        return TYCHO_ERR;
    }
    t->ctx = ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);  /* idle pooled connections hold no buffers */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    if (!t->insecure_skip_verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (t->ca_file) {
            if (readable("ca_file", t->ca_file, err, cap) < 0)
                return TYCHO_ERR;
            if (SSL_CTX_load_verify_locations(ctx, t->ca_file, NULL) != 1) {
                snprintf(err, cap, "tls: cannot load ca_file %s: %s", t->ca_file,
                         queued_reason(NULL));
                return TYCHO_ERR;
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            snprintf(err, cap, "tls: cannot load the system's trusted certificates: %s",
                     queued_reason(NULL));
            return TYCHO_ERR;
        }
    }
    if (t->client_cert) {
        if (readable("client_cert", t->client_cert, err, cap) < 0 ||
            readable("client_key", t->client_key, err, cap) < 0)
            return TYCHO_ERR;
        if (SSL_CTX_use_certificate_chain_file(ctx, t->client_cert) != 1) {
            snprintf(err, cap, "tls: cannot load client_cert %s: %s", t->client_cert,
                     queued_reason(NULL));
            return TYCHO_ERR;
        }
        SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
        SSL_CTX_set_default_passwd_cb_userdata(ctx, &encrypted);
        loaded = SSL_CTX_use_PrivateKey_file(ctx, t->client_key, SSL_FILETYPE_PEM) == 1;
        SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
        if (!loaded) {
            why = queued_reason(&code);
            if (encrypted)
                snprintf(err, cap, "tls: cannot load client_key %s: the key is encrypted "
                         "(no passphrase is taken: write it decrypted)", t->client_key);
            else if (ERR_GET_REASON(code) == X509_R_KEY_VALUES_MISMATCH)
                snprintf(err, cap, "tls: client_key %s does not match client_cert %s",
                         t->client_key, t->client_cert);
            else
                snprintf(err, cap, "tls: cannot load client_key %s: %s", t->client_key, why);
            return TYCHO_ERR;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            ERR_clear_error();
            snprintf(err, cap, "tls: client_key %s does not match client_cert %s",
                     t->client_key, t->client_cert);
            return TYCHO_ERR;
        }
    }
    return TYCHO_OK;
}

/* A copy of s into *out (NULL stays NULL). false: out of memory. */
static bool copy(const char *s, char **out)
{
    *out = s ? strdup(s) : NULL;
    return !s || *out;
}

struct tycho_tls_client *tycho_tls_client_get(struct tycho_tls_client_cache *c,
                                              const struct tycho_tls_client_opts *o, char *err,
                                              size_t cap)
{
    const char *key = o->client_key ? o->client_key : o->client_cert;
    struct tycho_tls_client *t;

    if (o->client_key && !o->client_cert) {
        snprintf(err, cap, "tls: client_key is given without client_cert");
        return NULL;
    }
    for (t = c->list; t; t = t->next)
        if (t->insecure_skip_verify == o->insecure_skip_verify && same(t->ca_file, o->ca_file) &&
            same(t->client_cert, o->client_cert) && same(t->client_key, key))
            return t;
    if (!(t = calloc(1, sizeof(*t))) || !copy(o->ca_file, &t->ca_file) ||
        !copy(o->client_cert, &t->client_cert) || !copy(key, &t->client_key)) {
        if (t)
            tls_free(t);
        snprintf(err, cap, "tls: out of memory");
        return NULL;
    }
    t->insecure_skip_verify = o->insecure_skip_verify;
    if (ctx_build(t, err, cap) < 0) {
        tls_free(t);
        return NULL;
    }
    t->next = c->list;
    c->list = t;
    return t;
}

void tycho_tls_client_opts_of(const struct tycho_tls_client *t, struct tycho_tls_client_opts *o)
{
    o->ca_file = t->ca_file;
    o->client_cert = t->client_cert;
    o->client_key = t->client_key;
    o->insecure_skip_verify = t->insecure_skip_verify;
}

SSL *tycho_tls_client_ssl_new(struct tycho_tls_client *t, const char *host,
                              struct tycho_tls_client_session *s)
{
    SSL *ssl = SSL_new(t->ctx);
    unsigned char addr[16];
    bool is_addr = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
    int rc = 1;

    if (!ssl)
        return NULL;
    SSL_set_app_data(ssl, s);
    /* SNI carries names only (RFC 6066); an address is checked against the certificate's IPs. */
    if (!is_addr)
        rc = SSL_set_tlsext_host_name(ssl, host);
    if (rc == 1 && !t->insecure_skip_verify) {
        SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        rc = is_addr ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host)
                     : SSL_set1_host(ssl, host);
    }
    if (rc == 1 && s->last)
        rc = SSL_set_session(ssl, s->last);
    if (rc != 1) {
        ERR_clear_error();
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

void tycho_tls_client_session_dispose(struct tycho_tls_client_session *s)
{
    SSL_SESSION_free(s->last);
    s->last = NULL;
}

bool tycho_tls_client_handshake_error(const struct tycho_tls_client *t, const SSL *ssl,
                                      unsigned long ssl_err, char *out, size_t cap)
{
    long v = ssl && !t->insecure_skip_verify ? SSL_get_verify_result(ssl) : X509_V_OK;
    const char *r;

    if (v != X509_V_OK) {
        snprintf(out, cap, "tls: certificate verify failed: %s", X509_verify_cert_error_string(v));
        return true;
    }
    if (!ssl_err)
        return false;
    r = ERR_reason_error_string(ssl_err);
    if (r)
        snprintf(out, cap, "tls: handshake failed: %s", r);
    else
        snprintf(out, cap, "tls: handshake failed: error %lu", ssl_err);
    return true;
}
