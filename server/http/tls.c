/*
 * tls.c: the server's certificates, their SSL_CTXs and session tickets (tls.h).
 * The connection's reads and writes through the SSL are conn.c's.
 */
#include "http/tls.h"
#include "core/config.h"
#include "core/log.h"
#include "core/tycho.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Mozilla's "intermediate" configuration (TLS 1.2 suites; TLS 1.3 keeps OpenSSL's). */
#define CIPHERS_TLS12                                                                          \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                               \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"
#define GROUPS "X25519:prime256v1:secp384r1"
/* Ticket keys kept: the current one and the two before it (a ticket lives two periods). */
#define TICKET_KEYS 3
/* A certificate this close to its end gets a warning in the log when loaded. */
#define EXPIRY_WARN_S (14 * 86400)

/* The certificates of one load: set->ctx[0] is the default, and owns the set (ex_data). */
struct cert_set {
    size_t n;
    SSL_CTX **ctx;                 /* owned: ctx[1..n-1] (ctx[0] owns this set) */
};

/* A session ticket key: its name is in every ticket it sealed. */
struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
};

static const struct tycho_config *config;    /* borrowed; main thread sets it */
static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX *current;                      /* under current_lock: the set new conns use */
static int set_index = -1;                    /* ex_data slot of ctx[0] holding its set */

static _Atomic int bound_port;                /* tycho_tls_set_port's */

static pthread_mutex_t keys_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ticket_key keys[TICKET_KEYS];   /* under keys_lock: [0] seals, all open */
static int nkeys;                             /* under keys_lock */
static time_t keys_rotated;                   /* under keys_lock: when keys[0] was made */

static void set_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    struct cert_set *set = ptr;

    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    if (!set)
        return;
    for (size_t i = 1; i < set->n; i++)
        SSL_CTX_free(set->ctx[i]);
    free(set->ctx);
    free(set);
}

/* The first OpenSSL error of the queue as text (the most precise one), and the queue emptied. */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;

    ERR_clear_error();
    return r ? r : "unknown error";
}

/* Makes a new ticket key the sealing one; the oldest is dropped. Under keys_lock. */
static int rotate_keys(time_t now)
{
    struct ticket_key k;

    if (RAND_bytes((unsigned char *)&k, sizeof(k)) != 1)
        return TYCHO_ERR;
    memmove(&keys[1], &keys[0], sizeof(keys[0]) * (TICKET_KEYS - 1));
    keys[0] = k;
    nkeys += nkeys < TICKET_KEYS;
    keys_rotated = now;
    return TYCHO_OK;
}

/*
 * Rotates as many times as whole periods have passed since the last
 * rotation (a quiet server rotates at its next handshake, and a key must not
 * outlive its periods for want of handshakes); makes the first key. Under
 * keys_lock.
 */
static int catch_up_keys(time_t now)
{
    long period = config->tls_ticket_rotate_ms / 1000;
    long due = nkeys == 0 ? 1 : (long)(now - keys_rotated) / (period > 0 ? period : 1);

    if (due >= TICKET_KEYS) {
        OPENSSL_cleanse(keys, sizeof(keys));
        nkeys = 0;                    /* every key is too old: start afresh */
        due = 1;
    }
    while (due-- > 0)
        if (rotate_keys(now) < 0)
            return TYCHO_ERR;
    return TYCHO_OK;
}

static int set_ticket_mac(EVP_MAC_CTX *hctx, unsigned char *hmac)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, hmac, 32),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    return EVP_MAC_CTX_set_params(hctx, params);
}

/*
 * OpenSSL asks for a key to seal a new ticket (enc = 1) or to open one a
 * client presents (enc = 0). Returns 1 to go on, 2 to open and then issue a
 * ticket under the current key, 0 for a full handshake (an unknown key), -1
 * on error.
 */
static int on_ticket_key(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                         EVP_MAC_CTX *hctx, int enc)
{
    time_t now = time(NULL);
    struct ticket_key k;
    int found = -1;

    pthread_mutex_lock(&keys_lock);
    if (catch_up_keys(now) < 0 && nkeys == 0) {
        pthread_mutex_unlock(&keys_lock);
        return -1;
    }
    for (int i = 0; i < nkeys && found < 0; i++)
        if (enc || memcmp(name, keys[i].name, sizeof(keys[i].name)) == 0)
            found = i;
    if (found >= 0)
        k = keys[found];
    pthread_mutex_unlock(&keys_lock);
    if (found < 0)
        return 0;
    if (enc) {
        memcpy(name, k.name, sizeof(k.name));
        if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1 ||
            EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1)
            return -1;
    } else if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k.aes, iv) != 1) {
        return -1;
    }
    OPENSSL_cleanse(&k.aes, sizeof(k.aes));
    if (set_ticket_mac(hctx, k.hmac) != 1)
        return -1;
    OPENSSL_cleanse(&k, sizeof(k));
    /*
     * 2 issues a new ticket: for one sealed by an older key, and always in TLS
     * 1.3, whose clients use a ticket once (without a new one, every other
     * connection would do a full handshake).
     */
    return enc || (found == 0 && SSL_version(ssl) != TLS1_3_VERSION) ? 1 : 2;
}

/* ALPN: http/1.1 when the client offers it; nothing otherwise (HTTP/1.1 anyway). */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1";

    (void)ssl, (void)arg;
    if (SSL_select_next_proto((unsigned char **)out, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    return SSL_TLSEXT_ERR_OK;
}

/*
 * SNI: the first certificate of the set that is valid for the name the
 * client sent (wildcards included); the default one when none is.
 */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    struct cert_set *set = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), set_index);

    (void)alert, (void)arg;
    if (!name || !set)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < set->n; i++) {
        X509 *cert = SSL_CTX_get0_certificate(set->ctx[i]);
        if (cert && X509_check_host(cert, name, 0, 0, NULL) == 1) {
            if (i > 0)
                SSL_set_SSL_CTX(ssl, set->ctx[i]);
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

/* Logs a warning for a certificate that has ended or ends within two weeks. */
static void warn_expiry(SSL_CTX *ctx, const char *file)
{
    X509 *cert = SSL_CTX_get0_certificate(ctx);
    time_t soon = time(NULL) + EXPIRY_WARN_S;

    if (!cert)
        return;
    if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0)
        tycho_log_warn("TLS certificate %s has expired: clients will refuse it", file);
    else if (X509_cmp_time(X509_get0_notAfter(cert), &soon) < 0)
        tycho_log_warn("TLS certificate %s expires within 14 days", file);
}

/* A context for one certificate and key, set up as every one of ours is. NULL: err says why. */
static SSL_CTX *ctx_for(const char *cert, const char *key, char *err)
{
    SSL_CTX *ctx;

    if (access(cert, R_OK) != 0 || access(key, R_OK) != 0) {
        const char *bad = access(cert, R_OK) != 0 ? cert : key;
        snprintf(err, TYCHO_ERR_LEN, "tycho: %s %s: %s",
                 bad == cert ? "--tls-cert" : "--tls-key", bad, strerror(errno));
        return NULL;
    }
    if (!(ctx = SSL_CTX_new(TLS_server_method()))) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: TLS: %s", ssl_reason());
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* A client that just closes (no close_notify) is an end of input, as with plain TCP. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                 SSL_OP_NO_COMPRESSION);
    /* Idle connections free their record buffers; a write goes out as it is, in parts. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Tickets only: a per-worker session cache would miss half the time. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_timeout(ctx, (long)(config->tls_ticket_rotate_ms / 1000) * 2);
    SSL_CTX_set_num_tickets(ctx, 1);
    if (SSL_CTX_set_cipher_list(ctx, CIPHERS_TLS12) != 1 ||
        SSL_CTX_set1_groups_list(ctx, GROUPS) != 1 || SSL_CTX_set_dh_auto(ctx, 1) != 1 ||
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key) != 1) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: TLS: %s", ssl_reason());
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --tls-cert %s: %s (expected PEM, the "
                 "certificate then its chain)", cert, ssl_reason());
    } else if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_error()) == X509_R_KEY_VALUES_MISMATCH)
            snprintf(err, TYCHO_ERR_LEN, "tycho: --tls-key %s does not match --tls-cert %s: %s",
                     key, cert, ssl_reason());
        else
            snprintf(err, TYCHO_ERR_LEN, "tycho: --tls-key %s: %s (expected a PEM private key)",
                     key, ssl_reason());
    } else if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --tls-key %s does not match --tls-cert %s: %s",
                 key, cert, ssl_reason());
    } else {
        warn_expiry(ctx, cert);
        return ctx;
    }
    SSL_CTX_free(ctx);
    return NULL;
}

/* Adds a context for cert and key to set. TYCHO_ERR: err says why. */
static int set_add(struct cert_set *set, const char *cert, const char *key, char *err)
{
    SSL_CTX **grown = realloc(set->ctx, sizeof(*grown) * (set->n + 1));

    if (!grown) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: TLS: out of memory");
        return TYCHO_ERR;
    }
    set->ctx = grown;
    if (!(set->ctx[set->n] = ctx_for(cert, key, err)))
        return TYCHO_ERR;
    set->n++;
    return TYCHO_OK;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether name is NAME.pem or NAME.crt; its stem length in *stem. */
static bool cert_file_name(const char *name, size_t *stem)
{
    size_t len = strlen(name);

    if (len < 5 || name[0] == '.' ||
        (strcmp(name + len - 4, ".pem") != 0 && strcmp(name + len - 4, ".crt") != 0))
        return false;
    *stem = len - 4;
    return true;
}

/* Adds every NAME.pem (or NAME.crt) of dir with its NAME.key, in name order. */
static int set_add_dir(struct cert_set *set, const char *dir, char *err)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, stem;
    int rc = TYCHO_OK;

    if (!d) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --tls-cert %s: %s", dir, strerror(errno));
        return TYCHO_ERR;
    }
    while ((e = readdir(d)))
        if (cert_file_name(e->d_name, &stem)) {
            char **grown = realloc(names, sizeof(*names) * (n + 1));
            if (!grown || !(grown[n] = strdup(e->d_name))) {
                names = grown ? grown : names;
                rc = TYCHO_ERR;
                snprintf(err, TYCHO_ERR_LEN, "tycho: TLS: out of memory");
                break;
            }
            names = grown;
            n++;
        }
    closedir(d);
    if (rc == TYCHO_OK && n == 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --tls-cert %s: no NAME.pem or NAME.crt with its "
                 "NAME.key in the directory", dir);
        rc = TYCHO_ERR;
    }
    if (names)
        qsort(names, n, sizeof(*names), by_name);
    for (size_t i = 0; i < n && rc == TYCHO_OK; i++) {
        char cert[4096], key[4096];
        cert_file_name(names[i], &stem);
        snprintf(cert, sizeof(cert), "%s/%s", dir, names[i]);
        snprintf(key, sizeof(key), "%s/%.*s.key", dir, (int)stem, names[i]);
        rc = set_add(set, cert, key, err);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

static bool is_dir(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Builds the set from the flags; its default context (owning it), or NULL: err says why. */
static SSL_CTX *load_set(char *err)
{
    struct cert_set *set = calloc(1, sizeof(*set));
    int rc = set ? TYCHO_OK : TYCHO_ERR;
    int key = 0;

    if (!set)
        snprintf(err, TYCHO_ERR_LEN, "tycho: TLS: out of memory");
    for (int i = 0; i < config->tls_ncerts && rc == TYCHO_OK; i++) {
        const char *cert = config->tls_certs[i];
        rc = is_dir(cert) ? set_add_dir(set, cert, err)
                          : set_add(set, cert, config->tls_keys[key++], err);
    }
    if (rc == TYCHO_OK) {
        SSL_CTX_set_tlsext_servername_callback(set->ctx[0], on_servername);
        if (SSL_CTX_set_ex_data(set->ctx[0], set_index, set) == 1)
            return set->ctx[0];
        snprintf(err, TYCHO_ERR_LEN, "tycho: TLS: out of memory");
    }
    if (set) {
        for (size_t i = 0; i < set->n; i++)
            SSL_CTX_free(set->ctx[i]);
        free(set->ctx);
        free(set);
    }
    return NULL;
}

int tycho_tls_load(const struct tycho_config *cfg, char *err)
{
    SSL_CTX *ctx;

    config = cfg;
    if (cfg->tls_ncerts == 0)
        return TYCHO_OK;
    if (set_index < 0 &&
        (set_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, set_free)) < 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: TLS: %s", ssl_reason());
        return TYCHO_ERR;
    }
    if (!(ctx = load_set(err)))
        return TYCHO_ERR;
    pthread_mutex_lock(&current_lock);
    current = ctx;
    pthread_mutex_unlock(&current_lock);
    return TYCHO_OK;
}

int tycho_tls_reload(char *err)
{
    SSL_CTX *ctx, *old;

    if (!config || config->tls_ncerts == 0)
        return TYCHO_OK;
    if (!(ctx = load_set(err)))
        return TYCHO_ERR;
    pthread_mutex_lock(&current_lock);
    old = current;
    current = ctx;
    pthread_mutex_unlock(&current_lock);
    SSL_CTX_free(old);                /* freed once its last connection has gone */
    return TYCHO_OK;
}

bool tycho_tls_enabled(void)
{
    return config && config->tls_ncerts > 0;
}

SSL *tycho_tls_accept(int fd)
{
    SSL_CTX *ctx;
    SSL *ssl;

    pthread_mutex_lock(&current_lock);
    ctx = current;
    if (ctx)
        SSL_CTX_up_ref(ctx);          /* SSL_new below takes its own; a reload may drop ours */
    pthread_mutex_unlock(&current_lock);
    if (!ctx)
        return NULL;
    ssl = SSL_new(ctx);
    SSL_CTX_free(ctx);
    if (ssl && SSL_set_fd(ssl, fd) != 1) {
        SSL_free(ssl);
        ssl = NULL;
    }
    if (ssl)
        SSL_set_accept_state(ssl);
    ERR_clear_error();
    return ssl;
}

void tycho_tls_set_port(int port)
{
    atomic_store(&bound_port, port);
}

int tycho_tls_port(void)
{
    return atomic_load(&bound_port);
}

void tycho_tls_unload(void)
{
    pthread_mutex_lock(&current_lock);
    SSL_CTX_free(current);
    current = NULL;
    pthread_mutex_unlock(&current_lock);
    pthread_mutex_lock(&keys_lock);
    OPENSSL_cleanse(keys, sizeof(keys));
    nkeys = 0;
    pthread_mutex_unlock(&keys_lock);
}
