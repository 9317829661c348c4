/*
 * config.h: the command line, parsed once on the main thread before any worker
 * starts. After start-up the config is read-only and shared by every thread.
 * Owned by main, freed after the workers are joined.
 */
#ifndef TYCHO_CONFIG_H
#define TYCHO_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "core/tycho.h"

struct tycho_proxies;

#define TYCHO_VERSION "0.1.0"

/* What the command line asks for. */
enum tycho_mode {
    TYCHO_MODE_SERVE,   /* tycho DIR */
    TYCHO_MODE_REQUEST, /* tycho --request 'GET /x' DIR */
    TYCHO_MODE_CHECK,   /* tycho --check DIR: load, print the routes or the error, exit */
    TYCHO_MODE_TEST,    /* tycho test [DIR] [TESTDIR]: run DIR's *_test.lua files in-process */
    TYCHO_MODE_NEW,     /* tycho new NAME: write a starter app */
    TYCHO_MODE_MIGRATE, /* tycho migrate [--status] [--db URL] [DIR]: apply DIR/migrations */
    TYCHO_MODE_HELP,    /* --help */
    TYCHO_MODE_VERSION  /* --version */
};

struct tycho_config {
    enum tycho_mode mode;
    bool watch;               /* --watch: reload when a script in DIR changes */
    const char *health_path;  /* --health PATH, or NULL: answered without Lua */
    const char *metrics_path; /* --metrics PATH, or NULL: no metrics */
    const char *metrics_addr; /* --metrics-addr [HOST:]PORT: serve them there, not on --port */
    int metrics_max_series;   /* --metrics-max-series: series per metric on each worker */
    int db_threads;           /* --db-threads: SQLite's database threads */
    const char *db_url;       /* tycho migrate --db URL; NULL: the database the scripts open */
    bool migrate_status;      /* tycho migrate --status: list, apply nothing */
    const char *secret_file;  /* --secret-file FILE: the app's secret; NULL: $TYCHO_SECRET */
    const char *access_log;   /* --access-log FILE, "-" (stdout) or "off" (NULL: off) */
    const char *error_log;    /* --error-log FILE, or NULL: stderr */
    bool access_log_json;     /* --access-log-format json */
    int log_level;            /* --log-level, an enum tycho_log_level */
    const char *dir;          /* borrowed from argv: the script directory */
    const char *test_dir;     /* tycho test: TESTDIR, or NULL for DIR/tests */
    long test_timeout_ms;     /* tycho test: how long one request's handler may take */
    const char *new_name;     /* tycho new: the directory to create */
    const char *host;         /* borrowed; default 127.0.0.1 */
    int port;                 /* 0 asks the kernel for a free port */
    bool reuseport;           /* --reuseport: SO_REUSEPORT on the listening sockets */
    int workers;              /* worker threads; default: online cores */
    int max_conns;            /* open connections in total, all workers */
    int max_conns_per_ip;     /* open connections from one address; 0: no bound */
    struct tycho_proxies *trusted_proxies; /* owned (core/proxies.h); NULL: none trusted */
    bool proxy_protocol_port; /* --proxy-protocol port: --port's connections start with PROXY */
    bool proxy_protocol_tls;  /* --proxy-protocol tls-port: --tls-port's, before TLS */
    size_t max_body_bytes;    /* request body; more gets 413 */
    size_t max_header_bytes;  /* request line + headers; more gets 431 (414 for the URL) */
    int max_headers;          /* header fields in a request; more gets 431 */
    int max_requests_per_conn;   /* then Connection: close; 0: no bound */
    long header_timeout_ms;   /* from a request's first byte to the end of its head: 408 */
    long body_timeout_ms;     /* from the end of the head to the end of the body: 408 */
    long idle_timeout_ms;     /* keep-alive wait for the next request; then close */
    long write_timeout_ms;    /* a client that takes no output for this long is closed */
    long max_conn_lifetime_ms;   /* then Connection: close on the next response; 0: none */
    long drain_timeout_ms;    /* on SIGTERM/SIGINT, how long in-flight requests may take */
    size_t shared_dict_bytes; /* bound of a tycho.shared.dict declared without max_bytes */
    bool gzip;                /* --gzip: compress responses (http/gzip.h) */
    int gzip_level;           /* --gzip-level: zlib's level, 1..9 */
    size_t gzip_min_bytes;    /* --gzip-min-bytes: shorter bodies are sent as they are */
    const char **tls_certs;   /* owned array of borrowed --tls-cert values (files or dirs) */
    int tls_ncerts;
    const char **tls_keys;    /* owned array of borrowed --tls-key values, one per cert file */
    int tls_nkeys;
    int tls_port;             /* --tls-port: HTTPS beside --port (with --tls-cert); 0: any */
    long tls_ticket_rotate_ms; /* --tls-ticket-rotate: a new session ticket key this often */
    long hsts_max_age_s;      /* --hsts: Strict-Transport-Security max-age on HTTPS; -1: off */
    /* --request mode */
    const char *request_line; /* borrowed: "METHOD /path?query" */
    const char **request_headers; /* owned array of borrowed "K: V" strings */
    int request_nheaders;
    const char *request_body; /* borrowed; NULL when none */
};

/* Whether the connections of a listener (tls: --tls-port's) start with a PROXY header. */
static inline bool tycho_config_proxied(const struct tycho_config *cfg, bool tls)
{
    return tls ? cfg->proxy_protocol_tls : cfg->proxy_protocol_port;
}

/*
 * Fills cfg from argv. On a bad flag, value or missing directory returns
 * TYCHO_ERR with a one-line message in err (no trailing newline) that names
 * the flag. Main thread only.
 */
int tycho_config_parse(struct tycho_config *cfg, int argc, char **argv, char *err);

/* Fills cfg with every default (what parsing no flag gives). */
void tycho_config_defaults(struct tycho_config *cfg);

/* Frees what tycho_config_parse allocated; cfg itself is the caller's. */
void tycho_config_dispose(struct tycho_config *cfg);

/* The text --help prints. */
void tycho_usage(FILE *out);

#endif
