/*
 * config.c: command-line parsing. Main thread only, before workers start.
 * Every flag takes its value as the next argument or after '='.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char tycho_usage[] =
    "usage: tycho [flags] DIR\n"
    "       tycho --request 'METHOD /path?query' [--header 'K: V']... [--body STR] DIR\n"
    "\n"
    "Serves the Lua route scripts in DIR over HTTP/1.1.\n"
    "\n"
    "flags:\n"
    "  --host ADDR             address to listen on (default 127.0.0.1)\n"
    "  --port N                port to listen on, 0 for any free port (default 8080)\n"
    "  --workers N             worker threads, 1..1024 (default: number of cores)\n"
    "  --max-conns N           open connections in total; past it a new connection\n"
    "                          gets 503 with Retry-After and is closed (default 10000)\n"
    "  --max-body BYTES        largest request body; larger gets 413 (default 1048576)\n"
    "  --max-header-bytes BYTES\n"
    "                          largest request line + headers; larger gets 431,\n"
    "                          or 414 when the URL alone is larger (default 16384)\n"
    "  --request 'METHOD /path?query'\n"
    "                          run one request in-process (no socket), print the\n"
    "                          raw HTTP response and exit 0\n"
    "  --header 'K: V'         a request header for --request (repeatable)\n"
    "  --body STR              the request body for --request\n"
    "  --help                  print this help and exit\n"
    "  --version               print the version and exit\n";

/* Parses a decimal integer in [min, max] for flag; explains a bad value in err. */
static int parse_long(const char *flag, const char *text, long min, long max, long *out, char *err)
{
    char *end = NULL;
    long v;

    errno = 0;
    v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno != 0 || v < min || v > max) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: %s: expected a number from %ld to %ld, got \"%s\"",
                 flag, min, max, text);
        return TYCHO_ERR;
    }
    *out = v;
    return TYCHO_OK;
}

static int default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 1024 ? 1024 : (int)n);
}

static void set_defaults(struct tycho_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->mode = TYCHO_MODE_SERVE;
    cfg->host = "127.0.0.1";
    cfg->port = 8080;
    cfg->workers = default_workers();
    cfg->max_conns = 10000;
    cfg->max_body_bytes = 1024 * 1024;
    cfg->max_header_bytes = 16 * 1024;
}

/* Flags that take a value. */
static const char *const value_flags[] = {
    "--host", "--port", "--workers", "--max-conns", "--max-body", "--max-header-bytes",
    "--request", "--header", "--body", NULL,
};

static int takes_value(const char *name, size_t len)
{
    for (int i = 0; value_flags[i]; i++)
        if (strlen(value_flags[i]) == len && strncmp(value_flags[i], name, len) == 0)
            return 1;
    return 0;
}

/* Applies one flag with its value; returns TYCHO_ERR with err filled on a bad value. */
static int apply_flag(struct tycho_config *cfg, const char *flag, const char *val, char *err)
{
    long v = 0;

    if (strcmp(flag, "--host") == 0) {
        if (*val == '\0') {
            snprintf(err, TYCHO_ERR_LEN, "tycho: --host: expected an address, got \"\"");
            return TYCHO_ERR;
        }
        cfg->host = val;
    } else if (strcmp(flag, "--port") == 0) {
        if (parse_long(flag, val, 0, 65535, &v, err) < 0)
            return TYCHO_ERR;
        cfg->port = (int)v;
    } else if (strcmp(flag, "--workers") == 0) {
        if (parse_long(flag, val, 1, 1024, &v, err) < 0)
            return TYCHO_ERR;
        cfg->workers = (int)v;
    } else if (strcmp(flag, "--max-conns") == 0) {
        if (parse_long(flag, val, 1, 10000000, &v, err) < 0)
            return TYCHO_ERR;
        cfg->max_conns = (int)v;
    } else if (strcmp(flag, "--max-body") == 0) {
        if (parse_long(flag, val, 0, 1L << 40, &v, err) < 0)
            return TYCHO_ERR;
        cfg->max_body_bytes = (size_t)v;
    } else if (strcmp(flag, "--max-header-bytes") == 0) {
        if (parse_long(flag, val, 256, 1L << 24, &v, err) < 0)
            return TYCHO_ERR;
        cfg->max_header_bytes = (size_t)v;
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

int tycho_config_parse(struct tycho_config *cfg, int argc, char **argv, char *err)
{
    int help = 0, version = 0;

    set_defaults(cfg);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *eq, *val;
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
        if (arg[0] != '-' || strcmp(arg, "-") == 0) {
            if (cfg->dir) {
                snprintf(err, TYCHO_ERR_LEN,
                         "tycho: unexpected argument \"%s\" (one script directory only)", arg);
                return TYCHO_ERR;
            }
            cfg->dir = arg;
            continue;
        }
        eq = strchr(arg, '=');
        name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (!takes_value(arg, name_len) || name_len >= sizeof(flag)) {
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
        if (apply_flag(cfg, flag, val, err) < 0)
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
    if (!cfg->dir) {
        snprintf(err, TYCHO_ERR_LEN,
                 "tycho: missing script directory (usage: tycho [flags] DIR; see tycho --help)");
        return TYCHO_ERR;
    }
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
