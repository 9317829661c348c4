/*
 * tls.h: TLS on the server's own listener (--tls-cert, --tls-key,
 * --tls-port), with OpenSSL 3.
 *
 * The certificates are loaded once into a set of SSL_CTXs (one per
 * certificate; the first is the default and picks the others by the name a
 * client sends, SNI). Each connection's SSL object takes a reference on the
 * set it started with, so a reload (SIGHUP, --watch) swaps in a new set for
 * new connections while the open ones keep theirs; a set is freed with its
 * last connection. Protocols: TLS 1.2 and 1.3 only, Mozilla's "intermediate"
 * ciphers, ALPN http/1.1. Sessions resume by tickets (stateless, so across
 * workers and reloads), whose keys are made here, rotated every
 * --tls-ticket-rotate seconds and accepted for two rotations more; a ticket
 * lives twice that period (the session timeout).
 *
 * Threads: tycho_tls_load, tycho_tls_reload and tycho_tls_unload on the main
 * thread; tycho_tls_accept from any worker thread (the current set is read
 * under a lock; the ticket keys too).
 */
#ifndef TYCHO_TLS_H
#define TYCHO_TLS_H

#include <stdbool.h>

#include <openssl/ssl.h>

struct tycho_config;

/*
 * Loads cfg's certificates (cfg is kept, borrowed, for reloads). TYCHO_OK
 * (also when cfg has none: TLS is then off), or TYCHO_ERR with a one-line
 * reason naming the file in err (TYCHO_ERR_LEN). Main thread, at start.
 */
int tycho_tls_load(const struct tycho_config *cfg, char *err);

/*
 * Loads the certificates again from the same flags; on success new
 * connections use them, on failure (err says why) the old set stays.
 * Main thread.
 */
int tycho_tls_reload(char *err);

/* Whether certificates are loaded (--tls-cert was given). Any thread. */
bool tycho_tls_enabled(void);

/*
 * A server-side SSL for the accepted, non-blocking fd, in accept state
 * (the handshake runs in its first reads), using the current set. NULL when
 * out of memory. The caller owns it (SSL_free). Any thread.
 */
SSL *tycho_tls_accept(int fd);

/*
 * The --tls-port bound (the kernel's pick with --tls-port 0), for the
 * scripts (tycho.tls_port). Set by main before the workers start; 0 without
 * TLS. Any thread.
 */
void tycho_tls_set_port(int port);
int tycho_tls_port(void);

/* Drops the current set (connections still open keep theirs). Main thread, at exit. */
void tycho_tls_unload(void);

#endif
