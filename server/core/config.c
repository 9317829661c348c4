/*
 * config.c: command-line parsing. Main thread only, before workers start.
 * Every flag takes its value as the next argument or after '='.
 */
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char tycho_usage[] =
    "usage: tycho [flags] DIR\n"
    "       tycho --request 'METHOD /path?query' [--header 'K: V']... [--body STR] DIR\n"
    "       tycho --check DIR\n"
    "       tycho test [DIR] [TESTDIR]   run the *_test.lua files in TESTDIR (default\n"
    "                                    DIR/tests, DIR default .) against the app in DIR\n"
    "       tycho new NAME               write a starter app (a route, a test) in NAME\n"
    "\n"
    "Serves the Lua route scripts in DIR over HTTP/1.1. SIGHUP reloads them.\n"
    "\n"
    "flags (times in seconds, fractions allowed; sizes in bytes):\n"
    "  --host ADDR             address to listen on (default 127.0.0.1)\n"
    "  --port N                port to listen on, 0 for any free port (default 8080)\n"
    "  --workers N             worker threads, 1..1024 (default: number of cores)\n"
    "  --max-conns N           open connections in total; past it a new connection\n"
    "                          gets 503 with Retry-After and is closed (default 10000)\n"
    "  --max-conns-per-ip N    open connections from one client address, the same 503\n"
    "                          past it (default 0: no bound)\n"
    "  --max-body BYTES        largest request body; larger gets 413 (default 1048576)\n"
    "  --max-header-bytes BYTES\n"
    "                          largest request line + headers; larger gets 431,\n"
    "                          or 414 when the URL alone is larger (default 16384)\n"
    "  --max-headers N         most header fields in a request; more gets 431 (default 100)\n"
    "  --max-requests-per-conn N\n"
    "                          requests on one connection; the last is answered with\n"
    "                          Connection: close (default 10000; 0: no bound)\n"
    "  --header-timeout S      time to receive a whole request head, counted from its\n"
    "                          first byte; then 408 and close (default 10)\n"
    "  --body-timeout S        time to receive a whole body after the head; then 408\n"
    "                          and close (default 60)\n"
    "  --idle-timeout S        how long a keep-alive connection may wait for its next\n"
    "                          request; then it is closed (default 75)\n"
    "  --write-timeout S       how long a client may take no response bytes; then it is\n"
    "                          closed (default 60)\n"
    "  --max-conn-lifetime S   after this long a connection is closed after its next\n"
    "                          response (default 3600; 0: no bound)\n"
    "  --drain-timeout S       on SIGTERM/SIGINT, how long requests in flight may take to\n"
    "                          finish before their connections are closed (default 10)\n"
    "  --shared-dict-bytes BYTES\n"
    "                          bound of each tycho.shared.dict declared without\n"
    "                          max_bytes; least recently used entries make room\n"
    "                          (default 16777216)\n"
    "  --request 'METHOD /path?query'\n"
    "                          run one request in-process (no socket), print the\n"
    "                          raw HTTP response and exit 0\n"
    "  --header 'K: V'         a request header for --request (repeatable)\n"
    "  --body STR              the request body for --request\n"
    "  --health PATH           answer GET PATH with 200 ok while serving, 503 while\n"
    "                          stopping, without running Lua (default: off)\n"
    "  --metrics PATH          serve Prometheus metrics at GET PATH, without running\n"
    "                          Lua (default: off)\n"
    "  --metrics-addr [HOST:]PORT\n"
    "                          serve them on this separate address instead of --port\n"
    "                          (HOST default 127.0.0.1; PATH default /metrics)\n"
    "  --metrics-max-series N  series one metric may have on each worker; new label\n"
    "                          values past it are not counted (default 10000)\n"
    "  --access-log FILE|-|off one line per request to FILE (appended), - for stdout;\n"
    "                          SIGUSR1 reopens FILE (default off)\n"
    "  --access-log-format common|json\n"
    "                          common log format, or JSON lines (default common)\n"
    "  --error-log FILE        the log (errors, reloads, start and stop) to FILE,\n"
    "                          appended, instead of stderr once serving; SIGUSR1\n"
    "                          reopens it (default: stderr)\n"
    "  --log-level LEVEL       debug, info, warn or error: lines below it are dropped\n"
    "                          (default info)\n"
    "  --watch                 reload the scripts when a file in DIR (or below) changes\n"
    "  --check                 load the scripts, print the routes or the load error,\n"
    "                          exit 0 or 1 (nothing is served)\n"
    "  --test-timeout S        tycho test: how long one request's handler may take\n"
    "                          before the test fails (default 30)\n"
    "  --help                  print this help and exit\n"
    "  --version               print the version and exit\n";

enum flag_kind { FLAG_INT, FLAG_SIZE, FLAG_SECONDS };

/* A flag with a number: where it goes and what it may be. */
struct number_flag {
    const char *name;
    enum flag_kind kind;
    double min, max;
    size_t offset;      /* into struct tycho_config */
};

#define AT(field) offsetof(struct tycho_config, field)

static const struct number_flag number_flags[] = {
    {"--port", FLAG_INT, 0, 65535, AT(port)},
    {"--workers", FLAG_INT, 1, 1024, AT(workers)},
    {"--max-conns", FLAG_INT, 1, 10000000, AT(max_conns)},
    {"--max-conns-per-ip", FLAG_INT, 0, 10000000, AT(max_conns_per_ip)},
    {"--max-body", FLAG_SIZE, 0, 1099511627776.0, AT(max_body_bytes)},
    {"--max-header-bytes", FLAG_SIZE, 256, 16777216, AT(max_header_bytes)},
    {"--max-headers", FLAG_INT, 1, 100000, AT(max_headers)},
    {"--max-requests-per-conn", FLAG_INT, 0, 2000000000, AT(max_requests_per_conn)},
    {"--header-timeout", FLAG_SECONDS, 0.001, 86400, AT(header_timeout_ms)},
    {"--body-timeout", FLAG_SECONDS, 0.001, 86400, AT(body_timeout_ms)},
    {"--idle-timeout", FLAG_SECONDS, 0.001, 86400, AT(idle_timeout_ms)},
    {"--write-timeout", FLAG_SECONDS, 0.001, 86400, AT(write_timeout_ms)},
    {"--max-conn-lifetime", FLAG_SECONDS, 0, 31536000, AT(max_conn_lifetime_ms)},
    {"--drain-timeout", FLAG_SECONDS, 0, 86400, AT(drain_timeout_ms)},
    {"--shared-dict-bytes", FLAG_SIZE, 4096, 1099511627776.0, AT(shared_dict_bytes)},
    {"--metrics-max-series", FLAG_INT, 1, 10000000, AT(metrics_max_series)},
    {"--test-timeout", FLAG_SECONDS, 0.001, 86400, AT(test_timeout_ms)},
};

/* Flags that take a string. */
static const char *const string_flags[] = {"--host", "--request", "--header", "--body",
                                            "--health", "--log-level", "--access-log",
                                            "--access-log-format", "--metrics", "--error-log",
                                            "--metrics-addr", NULL};

static int default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 1024 ? 1024 : (int)n);
}

void tycho_config_defaults(struct tycho_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->mode = TYCHO_MODE_SERVE;
    cfg->host = "127.0.0.1";
    cfg->port = 8080;
    cfg->workers = default_workers();
    cfg->max_conns = 10000;
    cfg->max_body_bytes = 1024 * 1024;
    cfg->max_header_bytes = 16 * 1024;
    cfg->max_headers = 100;
    cfg->max_requests_per_conn = 10000;
    cfg->header_timeout_ms = 10 * 1000;
    cfg->body_timeout_ms = 60 * 1000;
    cfg->idle_timeout_ms = 75 * 1000;
    cfg->write_timeout_ms = 60 * 1000;
    cfg->max_conn_lifetime_ms = 3600 * 1000;
    cfg->drain_timeout_ms = 10 * 1000;
    cfg->shared_dict_bytes = 16 * 1024 * 1024;
    cfg->log_level = TYCHO_LOG_INFO;
    cfg->metrics_max_series = 10000;
    cfg->test_timeout_ms = 30 * 1000;
}

static const struct number_flag *find_number_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof(number_flags) / sizeof(number_flags[0]); i++)
        if (strlen(number_flags[i].name) == len && strncmp(number_flags[i].name, name, len) == 0)
            return &number_flags[i];
    return NULL;
}

static int is_string_flag(const char *name, size_t len)
{
    for (int i = 0; string_flags[i]; i++)
        if (strlen(string_flags[i]) == len && strncmp(string_flags[i], name, len) == 0)
            return 1;
    return 0;
}

/* Parses text for f into cfg; explains a bad value in err. */
static int set_number(struct tycho_config *cfg, const struct number_flag *f, const char *text,
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
    if (argc > 1 && (strcmp(argv[1], "test") == 0 || strcmp(argv[1], "new") == 0)) {
        cfg->mode = strcmp(argv[1], "test") == 0 ? TYCHO_MODE_TEST : TYCHO_MODE_NEW;
        first = 2;
    }
    for (int i = first; i < argc; i++) {
        const char *arg = argv[i], *eq, *val;
        const struct number_flag *number;
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
        if (strcmp(arg, "--check") == 0) {
            check = 1;
            continue;
        }
        if (arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (set_positional(cfg, arg, err) < 0)
                return TYCHO_ERR;
            continue;
        }
        eq = strchr(arg, '=');
        name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        number = find_number_flag(arg, name_len);
        if ((!number && !is_string_flag(arg, name_len)) || name_len >= sizeof(flag)) {
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
        if ((number ? set_number(cfg, number, val, err) : set_string(cfg, flag, val, err)) < 0)
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

static int check_combinations(struct tycho_config *cfg, bool check, char *err)
{
    if (cfg->mode == TYCHO_MODE_NEW) {
        if (!cfg->new_name) {
            snprintf(err, TYCHO_ERR_LEN, "tycho: new: missing NAME (usage: tycho new NAME)");
            return TYCHO_ERR;
        }
        return TYCHO_OK;
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
    cfg->request_headers = NULL;
    cfg->request_nheaders = 0;
}
