/*
 * tls_client.h: the client side of TLS for outbound calls (tycho.http's
 * https:// backends): one OpenSSL client context (SSL_CTX) per distinct
 * setting (trust store, client certificate, verification on or off), built
 * once and kept in a cache, and the SSL objects made from them for a
 * connection to one host: the server name sent (SNI, not for an address),
 * the name or address checked against the certificate, TLS 1.2 at least,
 * and the last session of the connection's pool offered for resumption.
 * It also turns a failed handshake into a stable message.
 *
 * A cache (tycho_tls_cache) belongs to one thread: net/upstream.c keeps one
 * per tycho_upstreams, so per worker and script generation; a reload reads
 * the certificate files again. The contexts it holds are never shared with
 * another cache, so nothing here locks.
 */
#ifndef TYCHO_TLS_CLIENT_H
#define TYCHO_TLS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

/* A TLS setting as given (strings borrowed; NULL: not given). */
struct tycho_tls_client_opts {
    const char *ca_file;        /* PEM bundle trusted instead of the system store */
    const char *client_cert;    /* PEM certificate (chain) sent to a backend that asks */
    const char *client_key;     /* its PEM key; NULL: in client_cert's file */
    bool insecure_skip_verify;  /* no certificate or name check at all */
};

struct tycho_tls_client_cache;
struct tycho_tls_client;               /* one setting and its context: the cache's */

/*
 * Where a pool keeps the last session a backend gave it, for the next
 * connection to offer. Embedded in the pool; tycho_tls_client_session_dispose
 * frees the session.
 */
struct tycho_tls_client_session {
    SSL_SESSION *last;          /* owned; NULL: none yet */
};

/* An empty cache. NULL: out of memory. */
struct tycho_tls_client_cache *tycho_tls_client_cache_new(void);

/* Frees the cache and its contexts (no SSL made from them may be left). NULL is a no-op. */
void tycho_tls_client_cache_free(struct tycho_tls_client_cache *c);

/*
 * The setting for o: the cached one (the same pointer for the same
 * setting), or a new one whose files are read now. NULL with why in err
 * (cap bytes): "tls: cannot load ca_file F: REASON", "tls: cannot load
 * client_cert F: REASON", "tls: cannot load client_key F: REASON",
 * "tls: client_key F does not match client_cert G", "tls: client_key is
 * given without client_cert", or out of memory. A failure is not cached.
 */
struct tycho_tls_client *tycho_tls_client_get(struct tycho_tls_client_cache *c,
                                              const struct tycho_tls_client_opts *o, char *err,
                                              size_t cap);

/* The setting's options (its own copies of the strings, valid while the cache is). */
void tycho_tls_client_opts_of(const struct tycho_tls_client *t, struct tycho_tls_client_opts *o);

/*
 * A new client SSL for a connection to host (a name, or an address without
 * brackets): SNI and the name check for a name, the address check for an
 * address, nothing checked with insecure_skip_verify; offers s->last, and
 * stores into s each session the backend issues (s must outlive the SSL).
 * NULL: out of memory.
 */
SSL *tycho_tls_client_ssl_new(struct tycho_tls_client *t, const char *host,
                              struct tycho_tls_client_session *s);

/* Frees s's session. */
void tycho_tls_client_session_dispose(struct tycho_tls_client_session *s);

/*
 * Why the handshake on ssl failed, into out (cap bytes), if TLS says:
 * "tls: certificate verify failed: REASON" (OpenSSL's text for the
 * verification result: "unable to get local issuer certificate",
 * "certificate has expired", "hostname mismatch", ...) or "tls: handshake
 * failed: REASON" (the reason of the OpenSSL error code ssl_err, e.g.
 * "wrong version number", "tlsv13 alert certificate required"). false:
 * neither (ssl_err 0 and the certificate was not refused).
 */
bool tycho_tls_client_handshake_error(const struct tycho_tls_client *t, const SSL *ssl,
                                      unsigned long ssl_err, char *out, size_t cap);

#endif
