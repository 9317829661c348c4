/*
 * config.c: command-line parsing. Main thread only, before workers start.
 * Every flag takes its value as the next argument or after '='.
 */
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/proxies.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The lines --help prints before the flags. */
static const char usage_head[] =
    "usage: tycho [flags] DIR\n"
    "       tycho --request 'METHOD /path?query' [--header 'K: V']... [--body STR] DIR\n"
    "       tycho --check DIR\n"
    "       tycho test [DIR] [TESTDIR]   run the *_test.lua files in TESTDIR (default\n"
    "                                    DIR/tests, DIR default .) against the app in DIR\n"
    "       tycho new NAME               write a starter app (a route, a test) in NAME\n"
    "       tycho migrate [--status] [--db URL] [DIR]\n"
    "                                    apply DIR/migrations/*.sql to the app's database\n"
    "\n"
    "Serves the Lua route scripts in DIR over HTTP/1.1. SIGHUP reloads them.\n"
    "\n"
    "flags (times in seconds, fractions allowed; sizes in bytes):\n";

enum flag_kind { FLAG_INT, FLAG_SIZE, FLAG_SECONDS, FLAG_STRING, FLAG_SWITCH };

/*
 * A flag: the one description of it. Parsing, the defaults and --help all
 * come from this table; docs/cli.md and the man page are checked against
 * --help (tests/docs/flags.sh).
 */
struct flag {
    const char *name;
    const char *arg;        /* what --help shows after the name; NULL for a switch */
    enum flag_kind kind;
    double min, max;        /* numbers: the range accepted */
    size_t offset;          /* numbers: where the value goes in struct tycho_config */
    const char *value;      /* the default, parsed as a value of the flag is; NULL: none here */
    const char *shown;      /* the default as --help says it, when not just `value` */
    const char *help;       /* what it does; '\n' starts another line */
};

#define AT(field) offsetof(struct tycho_config, field)
#define NUM(kind, min, max, field) kind, min, max, AT(field)
#define STR FLAG_STRING, 0, 0, 0
#define SWITCH NULL, FLAG_SWITCH, 0, 0, 0

static const struct flag flags[] = {
    {"--host", "ADDR", STR, "127.0.0.1", NULL, "address to listen on"},
    {"--port", "N", NUM(FLAG_INT, 0, 65535, port), "8080", NULL,
     "port to listen on, 0 for any free port"},
    {"--reuseport", SWITCH, NULL, NULL,
     "bind --port (and --tls-port) with SO_REUSEPORT, so that a\n"
     "new Tycho can listen beside a running one (a restart or an\n"
     "upgrade: start the new one, then SIGTERM the old)"},
    {"--workers", "N", NUM(FLAG_INT, 1, 1024, workers), NULL, "the number of cores",
     "worker threads, 1..1024"},
    {"--max-conns", "N", NUM(FLAG_INT, 1, 10000000, max_conns), "10000", NULL,
     "open connections in total; past it a new connection\n"
     "gets 503 with Retry-After and is closed"},
    {"--max-conns-per-ip", "N", NUM(FLAG_INT, 0, 10000000, max_conns_per_ip), "0",
     "0: no bound", "open connections from one client address, the same 503\npast it"},
    {"--trusted-proxies", "CIDR[,CIDR...]", STR, NULL, "off",
     "peers (load balancers) whose Forwarded or X-Forwarded-For\n"
     "and X-Forwarded-Proto give the client's address and\n"
     "scheme (req.remote_addr, req.scheme, the access log)"},
    {"--proxy-protocol", "LISTENERS", STR, NULL, "off",
     "port, tls-port or port,tls-port: every connection on\n"
     "these listeners starts with a PROXY protocol v1 or v2\n"
     "header from one of --trusted-proxies (needs it), which\n"
     "gives the client's address; others are closed\n"
     "unanswered"},
    {"--max-body", "BYTES", NUM(FLAG_SIZE, 0, 1099511627776.0, max_body_bytes), "1048576", NULL,
     "largest request body; larger gets 413"},
    {"--max-header-bytes", "BYTES", NUM(FLAG_SIZE, 256, 16777216, max_header_bytes), "16384",
     NULL, "largest request line + headers; larger gets 431,\n"
     "or 414 when the URL alone is larger"},
    {"--max-headers", "N", NUM(FLAG_INT, 1, 100000, max_headers), "100", NULL,
     "most header fields in a request; more gets 431"},
    {"--max-requests-per-conn", "N", NUM(FLAG_INT, 0, 2000000000, max_requests_per_conn),
     "10000", "10000; 0: no bound",
     "requests on one connection; the last is answered with\nConnection: close"},
    {"--header-timeout", "S", NUM(FLAG_SECONDS, 0.001, 86400, header_timeout_ms), "10", NULL,
     "time to receive a whole request head, counted from its\nfirst byte; then 408 and close"},
    {"--body-timeout", "S", NUM(FLAG_SECONDS, 0.001, 86400, body_timeout_ms), "60", NULL,
     "time to receive a whole body after the head; then 408\nand close"},
    {"--idle-timeout", "S", NUM(FLAG_SECONDS, 0.001, 86400, idle_timeout_ms), "75", NULL,
     "how long a keep-alive connection may wait for its next\nrequest; then it is closed"},
    {"--write-timeout", "S", NUM(FLAG_SECONDS, 0.001, 86400, write_timeout_ms), "60", NULL,
     "how long a client may take no response bytes; then it is\nclosed"},
    {"--max-conn-lifetime", "S", NUM(FLAG_SECONDS, 0, 31536000, max_conn_lifetime_ms), "3600",
     "3600; 0: no bound",
     "after this long a connection is closed after its next\nresponse"},
    {"--drain-timeout", "S", NUM(FLAG_SECONDS, 0, 86400, drain_timeout_ms), "10", NULL,
     "on SIGTERM/SIGINT, how long requests in flight may take to\n"
     "finish before their connections are closed"},
    {"--shared-dict-bytes", "BYTES",
     NUM(FLAG_SIZE, 4096, 1099511627776.0, shared_dict_bytes), "16777216", NULL,
     "bound of each tycho.shared.dict declared without\n"
     "max_bytes; least recently used entries make room"},
    {"--gzip", SWITCH, NULL, NULL,
     "compress responses of text types with gzip for clients\n"
     "that accept it (a route's gzip option overrides it)"},
    {"--gzip-level", "N", NUM(FLAG_INT, 1, 9, gzip_level), "1", NULL,
     "gzip's compression level: 1 fastest, 9 smallest"},
    {"--gzip-min-bytes", "BYTES", NUM(FLAG_SIZE, 0, 1099511627776.0, gzip_min_bytes), "1024",
     NULL, "bodies shorter than this are not compressed"},
    {"--tls-cert", "FILE|DIR", STR, NULL, NULL,
     "serve HTTPS with this PEM certificate (then its chain),\n"
     "or with each NAME.pem (or NAME.crt) and NAME.key of DIR;\n"
     "repeatable: a client's server name (SNI) picks one, the\n"
     "first is the default; SIGHUP reloads them"},
    {"--tls-key", "FILE", STR, NULL, NULL,
     "the PEM private key of the --tls-cert FILE given at the\nsame place (repeatable)"},
    {"--tls-port", "N", NUM(FLAG_INT, 0, 65535, tls_port), "8443", NULL,
     "port for HTTPS (with --tls-cert), beside HTTP on --port;\n0 for any free port"},
    {"--tls-ticket-rotate", "S", NUM(FLAG_SECONDS, 1, 604800, tls_ticket_rotate_ms), "3600",
     NULL, "a new TLS session ticket key this often; a ticket resumes\n"
     "for twice this at most"},
    {"--hsts", "S", STR, NULL, "off",
     "add Strict-Transport-Security: max-age=S to HTTPS\nresponses"},
    {"--request", "'METHOD /path?query'", STR, NULL, NULL,
     "run one request in-process (no socket), print the\nraw HTTP response and exit 0"},
    {"--header", "'K: V'", STR, NULL, NULL, "a request header for --request (repeatable)"},
    {"--body", "STR", STR, NULL, NULL, "the request body for --request"},
    {"--health", "PATH", STR, NULL, "off",
     "answer GET PATH with 200 ok while serving, 503 while\nstopping, without running Lua"},
    {"--metrics", "PATH", STR, NULL, "off",
     "serve Prometheus metrics at GET PATH, without running\nLua"},
    {"--metrics-addr", "[HOST:]PORT", STR, NULL, NULL,
     "serve them on this separate address instead of --port\n"
     "(HOST default 127.0.0.1; PATH default /metrics)"},
    {"--db-threads", "N", NUM(FLAG_INT, 1, 64, db_threads), "2", NULL,
     "threads that run SQLite queries (tycho.db), so no worker\nwaits on one"},
    {"--db", "URL", STR, NULL, NULL,
     "tycho migrate: the database; without it, the one the\nscripts open with tycho.db.open"},
    {"--secret-file", "FILE", STR, NULL, "$TYCHO_SECRET",
     "the app's secret (16 bytes at least), which signs cookies\n"
     "and sessions; without it, the variable TYCHO_SECRET"},
    {"--status", SWITCH, NULL, NULL,
     "tycho migrate: list the migrations, applied or pending;\napply nothing"},
    {"--metrics-max-series", "N", NUM(FLAG_INT, 1, 10000000, metrics_max_series), "10000", NULL,
     "series one metric may have on each worker; new label\nvalues past it are not counted"},
    {"--access-log", "FILE|-|off", STR, NULL, "off",
     "one line per request to FILE (appended), - for stdout;\nSIGUSR1 reopens FILE"},
    {"--access-log-format", "common|json", STR, "common", NULL,
     "common log format, or JSON lines"},
    {"--error-log", "FILE", STR, NULL, "stderr",
     "the log (errors, reloads, start and stop) to FILE,\n"
     "appended, instead of stderr once serving; SIGUSR1\nreopens it"},
    {"--log-level", "LEVEL", STR, "info", NULL,
     "debug, info, warn or error: lines below it are dropped"},
    {"--watch", SWITCH, NULL, NULL,
     "reload the scripts when a file in DIR (or below) changes\n(not in DIR/tests)"},
    {"--check", SWITCH, NULL, NULL,
     "load the scripts, print the routes or the load error,\nexit 0 or 1 (nothing is served)"},
    {"--test-timeout", "S", NUM(FLAG_SECONDS, 0.001, 86400, test_timeout_ms), "30", NULL,
     "tycho test: how long one request's handler may take\nbefore the test fails"},
    {"--help", SWITCH, NULL, NULL, "print this help and exit"},
    {"--version", SWITCH, NULL, NULL, "print the version and exit"},
};

#define NFLAGS (sizeof(flags) / sizeof(flags[0]))
/* Where --help starts a flag's description, and how wide its lines may be. */
#define HELP_COLUMN 26
#define HELP_WIDTH 90

/* One flag's entry: name and argument, the description, then its default. */
static void print_flag(FILE *out, const struct flag *f)
{
    const char *def = f->shown ? f->shown : f->value, *line = f->help;
    int col = fprintf(out, "  %s%s%s", f->name, f->arg ? " " : "", f->arg ? f->arg : "");

    if (col >= HELP_COLUMN) {         /* a long name and argument: the text starts below */
        fputc('\n', out);
        col = 0;
    }
    for (;;) {
        const char *nl = strchr(line, '\n');
        int len = nl ? (int)(nl - line) : (int)strlen(line);
        col += fprintf(out, "%*s%.*s", HELP_COLUMN - col, "", len, line);
        if (!nl)
            break;
        fputc('\n', out);
        col = 0;
        line = nl + 1;
    }
    if (def && col + (int)strlen(" (default )") + (int)strlen(def) > HELP_WIDTH)
        fprintf(out, "\n%*s(default %s)", HELP_COLUMN, "", def);
    else if (def)
        fprintf(out, " (default %s)", def);
    fputc('\n', out);
}

void tycho_usage(FILE *out)
{
    fputs(usage_head, out);
    for (size_t i = 0; i < NFLAGS; i++)
        print_flag(out, &flags[i]);
}

static int default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 1024 ? 1024 : (int)n);
}

static int set_number(struct tycho_config *cfg, const struct flag *f, const char *text,
                      char *err);
static int set_string(struct tycho_config *cfg, const char *flag, const char *val, char *err);

void tycho_config_defaults(struct tycho_config *cfg)
{
    char err[TYCHO_ERR_LEN];

    memset(cfg, 0, sizeof(*cfg));
    cfg->mode = TYCHO_MODE_SERVE;
    cfg->hsts_max_age_s = -1;
    cfg->workers = default_workers();
    /* Every other default is the table's, set as if given on the command line. */
    for (size_t i = 0; i < NFLAGS; i++) {
        const struct flag *f = &flags[i];
        int rc = TYCHO_OK;
        if (f->value && f->kind == FLAG_STRING)
            rc = set_string(cfg, f->name, f->value, err);
        else if (f->value)
            rc = set_number(cfg, f, f->value, err);
        assert(rc == TYCHO_OK && "a default the flag itself refuses");
        (void)rc;
    }
}

static const struct flag *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < NFLAGS; i++)
        if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0)
            return &flags[i];
    return NULL;
}

/* Parses text for f into cfg; explains a bad value in err. */
static int set_number(struct tycho_config *cfg, const struct flag *f, const char *text,
                      char *err)
{
    char *end = NULL, *field = (char *)cfg + f->offset;
    double v;

    errno = 0;
    v = strtod(text, &end);
    if (*text == '\0' || *end != '\0' || errno != 0 || v != v || v < f->min || v > f->max ||
        (f->kind != FLAG_SECONDS && v != (double)(long long)v)) {
        if (f->kind == FLAG_SECONDS)
            snprintf(err, TYCHO_ERR_LEN, "tycho: %s: expected seconds from %g to %g, got \"%s\"",
                     f->name, f->min, f->max, text);
        else
            snprintf(err, TYCHO_ERR_LEN,
                     "tycho: %s: expected a number from %.0f to %.0f, got \"%s\"", f->name,
                     f->min, f->max, text);
        return TYCHO_ERR;
    }
    if (f->kind == FLAG_INT)
        *(int *)(void *)field = (int)v;
    else if (f->kind == FLAG_SIZE)
        *(size_t *)(void *)field = (size_t)v;
    else
        *(long *)(void *)field = (long)(v * 1000 + 0.5);
    return TYCHO_OK;
}

/* --proxy-protocol port|tls-port|port,tls-port: the listeners whose connections start so. */
static int set_proxy_protocol(struct tycho_config *cfg, const char *val, char *err)
{
    bool port = false, tls_port = false, good = *val != '\0';
    const char *p = val;

    while (good && *p) {
        size_t n = strcspn(p, ",");
        if (n == 4 && strncmp(p, "port", 4) == 0)
            port = true;
        else if (n == 8 && strncmp(p, "tls-port", 8) == 0)
            tls_port = true;
        else
            good = false;
        p += n;
        if (*p == ',' && *++p == '\0')
            good = false;             /* a trailing comma */
    }
    if (!good) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --proxy-protocol: expected port, tls-port or "
                 "port,tls-port, got \"%s\"", val);
        return TYCHO_ERR;
    }
    cfg->proxy_protocol_port = port;
    cfg->proxy_protocol_tls = tls_port;
    return TYCHO_OK;
}

/* --metrics-addr [HOST:]PORT ([v6]:PORT too): checked here, split when binding. */
static int set_metrics_addr(struct tycho_config *cfg, const char *val, char *err)
{
    const char *colon = strrchr(val, ':'), *port = colon ? colon + 1 : val;
    char *end = NULL;
    long n;

    errno = 0;
    n = strtol(port, &end, 10);
    if (*port == '\0' || *end != '\0' || errno || n < 0 || n > 65535 || (colon && colon == val)) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --metrics-addr: expected [HOST:]PORT such as "
                 "127.0.0.1:9145, got \"%s\"", val);
        return TYCHO_ERR;
    }
    cfg->metrics_addr = val;
    return TYCHO_OK;
}

/* Appends a --tls-cert or --tls-key value to its list. */
static int add_tls_file(struct tycho_config *cfg, const char *flag, const char *val, char *err)
{
    bool cert = strcmp(flag, "--tls-cert") == 0;
    const char ***list = cert ? &cfg->tls_certs : &cfg->tls_keys;
    int *n = cert ? &cfg->tls_ncerts : &cfg->tls_nkeys;
    const char **grown = realloc(*list, sizeof(*grown) * (size_t)(*n + 1));

    if (!grown) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: %s: out of memory", flag);
        return TYCHO_ERR;
    }
    *list = grown;
    (*list)[(*n)++] = val;
    return TYCHO_OK;
}

/* Applies one string flag with its value; returns TYCHO_ERR with err filled on a bad value. */
static int set_string(struct tycho_config *cfg, const char *flag, const char *val, char *err)
{
    if (strcmp(flag, "--host") == 0) {
        if (*val == '\0') {
            snprintf(err, TYCHO_ERR_LEN, "tycho: --host: expected an address, got \"\"");
            return TYCHO_ERR;
        }
        cfg->host = val;
    } else if (strcmp(flag, "--request") == 0) {
        cfg->mode = TYCHO_MODE_REQUEST;
        cfg->request_line = val;
    } else if (strcmp(flag, "--header") == 0) {
        const char **grown = realloc(cfg->request_headers,
                                     sizeof(*grown) * (size_t)(cfg->request_nheaders + 1));
        if (!grown) {
            snprintf(err, TYCHO_ERR_LEN, "tycho: --header: out of memory");
            return TYCHO_ERR;
        }
        cfg->request_headers = grown;
        cfg->request_headers[cfg->request_nheaders++] = val;
    } else if (strcmp(flag, "--tls-cert") == 0 || strcmp(flag, "--tls-key") == 0) {
        return add_tls_file(cfg, flag, val, err);
    } else if (strcmp(flag, "--hsts") == 0) {
        char *end = NULL;
        errno = 0;
        cfg->hsts_max_age_s = strtol(val, &end, 10);
        if (*val < '0' || *val > '9' || *end != '\0' || errno || cfg->hsts_max_age_s > 1000000000) {
            snprintf(err, TYCHO_ERR_LEN, "tycho: --hsts: expected whole seconds from 0 to "
                     "1000000000 (a year is 31536000), got \"%s\"", val);
            return TYCHO_ERR;
        }
    } else if (strcmp(flag, "--body") == 0) {
        cfg->request_body = val;
    } else if (strcmp(flag, "--health") == 0 || strcmp(flag, "--metrics") == 0) {
        bool health = strcmp(flag, "--health") == 0;
        if (val[0] != '/' || strpbrk(val, "?# \t") || strlen(val) > 512 ||
            !tycho_metric_utf8_ok(val, strlen(val))) {
            snprintf(err, TYCHO_ERR_LEN, "tycho: %s: expected a path such as %s, got \"%s\"",
                     flag, health ? "/healthz" : "/metrics", val);
            return TYCHO_ERR;
        }
        *(health ? &cfg->health_path : &cfg->metrics_path) = val;
    } else if (strcmp(flag, "--trusted-proxies") == 0) {
        struct tycho_proxies *p = NULL;
        if (tycho_proxies_parse(val, &p, err) < 0)
            return TYCHO_ERR;
        tycho_proxies_free(cfg->trusted_proxies);  /* given twice: the last one counts */
        cfg->trusted_proxies = p;
    } else if (strcmp(flag, "--proxy-protocol") == 0) {
        return set_proxy_protocol(cfg, val, err);
    } else if (strcmp(flag, "--db") == 0) {
        cfg->db_url = val;
    } else if (strcmp(flag, "--secret-file") == 0) {
        cfg->secret_file = val;
    } else if (strcmp(flag, "--metrics-addr") == 0) {
        return set_metrics_addr(cfg, val, err);
    } else if (strcmp(flag, "--access-log") == 0) {
        if (*val == '\0') {
            snprintf(err, TYCHO_ERR_LEN, "tycho: --access-log: expected a file, - or off");
            return TYCHO_ERR;
        }
        cfg->access_log = val;
    } else if (strcmp(flag, "--error-log") == 0) {
        if (*val == '\0' || strcmp(val, "-") == 0) {
            snprintf(err, TYCHO_ERR_LEN, "tycho: --error-log: expected a file (stderr is the "
                     "default)");
            return TYCHO_ERR;
        }
        cfg->error_log = val;
    } else if (strcmp(flag, "--access-log-format") == 0) {
        if (strcmp(val, "common") != 0 && strcmp(val, "json") != 0) {
            snprintf(err, TYCHO_ERR_LEN, "tycho: --access-log-format: expected common or json, "
                     "got \"%s\"", val);
            return TYCHO_ERR;
        }
        cfg->access_log_json = strcmp(val, "json") == 0;
    } else if (strcmp(flag, "--log-level") == 0) {
        enum tycho_log_level level;
        if (tycho_log_level_parse(val, &level) < 0) {
            snprintf(err, TYCHO_ERR_LEN, "tycho: --log-level: expected debug, info, warn or "
                     "error, got \"%s\"", val);
            return TYCHO_ERR;
        }
        cfg->log_level = (int)level;
    }
    return TYCHO_OK;
}

/* Checks that the script directory exists and is a directory. */
static int check_dir(const char *dir, char *err)
{
    struct stat st;

    if (stat(dir, &st) != 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: %s: %s", dir, strerror(errno));
        return TYCHO_ERR;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: %s: not a directory", dir);
        return TYCHO_ERR;
    }
    return TYCHO_OK;
}

/* A positional argument: DIR, or for `tycho test` also TESTDIR, or for `tycho new` NAME. */
static int set_positional(struct tycho_config *cfg, const char *arg, char *err)
{
    if (cfg->mode == TYCHO_MODE_NEW && !cfg->new_name) {
        cfg->new_name = arg;
    } else if (cfg->mode != TYCHO_MODE_NEW && !cfg->dir) {
        cfg->dir = arg;
    } else if (cfg->mode == TYCHO_MODE_TEST && !cfg->test_dir) {
        cfg->test_dir = arg;
    } else {
        snprintf(err, TYCHO_ERR_LEN, "tycho: unexpected argument \"%s\" (%s)", arg,
                 cfg->mode == TYCHO_MODE_TEST  ? "tycho test takes DIR and TESTDIR at most"
                 : cfg->mode == TYCHO_MODE_NEW ? "tycho new takes one NAME"
                                               : "one script directory only");
        return TYCHO_ERR;
    }
    return TYCHO_OK;
}

/* Checks the combinations of modes and flags once everything is parsed. */
static int check_combinations(struct tycho_config *cfg, bool check, char *err);

int tycho_config_parse(struct tycho_config *cfg, int argc, char **argv, char *err)
{
    int help = 0, version = 0, check = 0, first = 1;

    tycho_config_defaults(cfg);
    /* Subcommands come first: `tycho test ...`, `tycho new NAME`. */
    if (argc > 1 && (strcmp(argv[1], "test") == 0 || strcmp(argv[1], "new") == 0 ||
                     strcmp(argv[1], "migrate") == 0)) {
        cfg->mode = strcmp(argv[1], "test") == 0      ? TYCHO_MODE_TEST
                    : strcmp(argv[1], "migrate") == 0 ? TYCHO_MODE_MIGRATE
                                                      : TYCHO_MODE_NEW;
        first = 2;
    }
    for (int i = first; i < argc; i++) {
        const char *arg = argv[i], *eq, *val;
        const struct flag *f;
        char flag[64];
        size_t name_len;

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            help = 1;
            continue;
        }
        if (strcmp(arg, "--version") == 0) {
            version = 1;
            continue;
        }
        if (strcmp(arg, "--watch") == 0) {
            cfg->watch = true;
            continue;
        }
        if (strcmp(arg, "--gzip") == 0) {
            cfg->gzip = true;
            continue;
        }
        if (strcmp(arg, "--reuseport") == 0) {
            cfg->reuseport = true;
            continue;
        }
        if (strcmp(arg, "--check") == 0) {
            check = 1;
            continue;
        }
        if (strcmp(arg, "--status") == 0) {
            cfg->migrate_status = true;
            continue;
        }
        if (arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (set_positional(cfg, arg, err) < 0)
                return TYCHO_ERR;
            continue;
        }
        eq = strchr(arg, '=');
        name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        f = find_flag(arg, name_len);
        if (!f || f->kind == FLAG_SWITCH || name_len >= sizeof(flag)) {
            snprintf(err, TYCHO_ERR_LEN, "tycho: unknown flag %.*s (see tycho --help)",
                     (int)name_len, arg);
            return TYCHO_ERR;
        }
        memcpy(flag, arg, name_len);
        flag[name_len] = '\0';
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            snprintf(err, TYCHO_ERR_LEN, "tycho: %s: missing value", flag);
            return TYCHO_ERR;
        }
        if ((f->kind == FLAG_STRING ? set_string(cfg, flag, val, err)
                                    : set_number(cfg, f, val, err)) < 0)
            return TYCHO_ERR;
    }
    if (help) {
        cfg->mode = TYCHO_MODE_HELP;
        return TYCHO_OK;
    }
    if (version) {
        cfg->mode = TYCHO_MODE_VERSION;
        return TYCHO_OK;
    }
    if (first == 2 && cfg->mode == TYCHO_MODE_REQUEST) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: %s: --request does not go with it", argv[1]);
        return TYCHO_ERR;
    }
    return check_combinations(cfg, check, err);
}

/*
 * --tls-key pairs with the --tls-cert files in order (a directory brings its
 * own keys); the HTTPS port differs from the HTTP one; --hsts needs HTTPS.
 */
static int check_tls(const struct tycho_config *cfg, char *err)
{
    int files = 0;

    for (int i = 0; i < cfg->tls_ncerts; i++) {
        struct stat st;
        files += !(stat(cfg->tls_certs[i], &st) == 0 && S_ISDIR(st.st_mode));
    }
    if (files != cfg->tls_nkeys) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --tls-key: %d given for %d --tls-cert file%s (each "
                 "certificate file needs its key, in the same order; a directory brings its own)",
                 cfg->tls_nkeys, files, files == 1 ? "" : "s");
        return TYCHO_ERR;
    }
    if (cfg->tls_ncerts && cfg->tls_port && cfg->tls_port == cfg->port) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --tls-port %d: the same port as --port", cfg->port);
        return TYCHO_ERR;
    }
    if (cfg->proxy_protocol_tls && cfg->tls_ncerts == 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --proxy-protocol tls-port: only goes with "
                 "--tls-cert (there is no --tls-port listener without it)");
        return TYCHO_ERR;
    }
    if (cfg->hsts_max_age_s >= 0 && cfg->tls_ncerts == 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --hsts: only goes with --tls-cert (browsers ignore "
                 "it over HTTP)");
        return TYCHO_ERR;
    }
    return TYCHO_OK;
}

static int check_combinations(struct tycho_config *cfg, bool check, char *err)
{
    if (cfg->mode == TYCHO_MODE_NEW) {
        if (!cfg->new_name) {
            snprintf(err, TYCHO_ERR_LEN, "tycho: new: missing NAME (usage: tycho new NAME)");
            return TYCHO_ERR;
        }
        return TYCHO_OK;
    }
    if ((cfg->db_url || cfg->migrate_status) && cfg->mode != TYCHO_MODE_MIGRATE) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: %s: only goes with tycho migrate",
                 cfg->db_url ? "--db" : "--status");
        return TYCHO_ERR;
    }
    if (cfg->mode == TYCHO_MODE_MIGRATE) {
        if (check || cfg->watch || cfg->metrics_path || cfg->metrics_addr) {
            snprintf(err, TYCHO_ERR_LEN, "tycho: migrate: %s does not go with it",
                     check ? "--check" : cfg->watch ? "--watch" : "--metrics");
            return TYCHO_ERR;
        }
        if (!cfg->dir)
            cfg->dir = ".";
    }
    if (cfg->mode == TYCHO_MODE_TEST) {
        if (check || cfg->watch || cfg->metrics_path || cfg->metrics_addr) {
            snprintf(err, TYCHO_ERR_LEN, "tycho: test: %s does not go with it",
                     check ? "--check" : cfg->watch ? "--watch" : "--metrics");
            return TYCHO_ERR;
        }
        if (!cfg->dir)
            cfg->dir = ".";
    }
    if (!cfg->dir) {
        snprintf(err, TYCHO_ERR_LEN,
                 "tycho: missing script directory (usage: tycho [flags] DIR; see tycho --help)");
        return TYCHO_ERR;
    }
    if (check && cfg->mode == TYCHO_MODE_REQUEST) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --check and --request do not go together");
        return TYCHO_ERR;
    }
    if (cfg->watch && (check || cfg->mode == TYCHO_MODE_REQUEST)) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --watch only goes with serving (not with %s)",
                 check ? "--check" : "--request");
        return TYCHO_ERR;
    }
    if ((cfg->metrics_path || cfg->metrics_addr) && (check || cfg->mode == TYCHO_MODE_REQUEST)) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: %s only goes with serving (not with %s)",
                 cfg->metrics_path ? "--metrics" : "--metrics-addr",
                 check ? "--check" : "--request");
        return TYCHO_ERR;
    }
    if (cfg->metrics_addr && !cfg->metrics_path)
        cfg->metrics_path = "/metrics";
    if (cfg->metrics_path && cfg->health_path && strcmp(cfg->metrics_path, cfg->health_path) == 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --metrics and --health cannot be the same path (%s)",
                 cfg->metrics_path);
        return TYCHO_ERR;
    }
    if (check_tls(cfg, err) < 0)
        return TYCHO_ERR;
    if ((cfg->proxy_protocol_port || cfg->proxy_protocol_tls) && !cfg->trusted_proxies) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --proxy-protocol needs --trusted-proxies (the "
                 "load balancers allowed to send the header)");
        return TYCHO_ERR;
    }
    if (check)
        cfg->mode = TYCHO_MODE_CHECK;
    if ((cfg->request_nheaders > 0 || cfg->request_body) && cfg->mode != TYCHO_MODE_REQUEST) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: %s: only goes with --request",
                 cfg->request_body ? "--body" : "--header");
        return TYCHO_ERR;
    }
    return check_dir(cfg->dir, err);
}

void tycho_config_dispose(struct tycho_config *cfg)
{
    free(cfg->request_headers);
    free(cfg->tls_certs);
    free(cfg->tls_keys);
    tycho_proxies_free(cfg->trusted_proxies);
    cfg->trusted_proxies = NULL;
    cfg->tls_certs = cfg->tls_keys = NULL;
    cfg->tls_ncerts = cfg->tls_nkeys = 0;
    cfg->request_headers = NULL;
    cfg->request_nheaders = 0;
}
