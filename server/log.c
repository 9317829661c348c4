/*
 * log.c: stderr logging. Each line is formatted into a stack buffer and
 * written with one write(2), which POSIX keeps whole for pipes up to
 * PIPE_BUF and which in practice does not interleave for files either.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const level_names[] = {"debug", "info", "warn", "error"};

enum tycho_log_level tycho_log_min_level = TYCHO_LOG_INFO;

int tycho_log_level_parse(const char *s, enum tycho_log_level *level)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0) {
            *level = (enum tycho_log_level)i;
            return 0;
        }
    return -1;
}

static void vlog(enum tycho_log_level level, const char *fmt, va_list ap)
{
    char line[8192];
    struct tm tm;
    time_t now = time(NULL);
    size_t len;
    int n;

    if (level < tycho_log_min_level)
        return;
    gmtime_r(&now, &tm);
    len = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%SZ", &tm);
    n = snprintf(line + len, sizeof(line) - len, " [%s] ", level_names[level]);
    len += (size_t)n;
    n = vsnprintf(line + len, sizeof(line) - len - 1, fmt, ap);
    if (n < 0)
        n = 0;
    len += (size_t)n < sizeof(line) - len - 1 ? (size_t)n : sizeof(line) - len - 2;
    line[len++] = '\n';
    /* Nothing sensible to do if stderr is gone. */
    if (write(STDERR_FILENO, line, len) < 0)
        return;
}

void tycho_log(enum tycho_log_level level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

int tycho_log_allow(_Atomic long *last_s, long interval_s)
{
    long now = (long)time(NULL);
    long last = atomic_load_explicit(last_s, memory_order_relaxed);

    if (last != 0 && now - last < interval_s)
        return 0;
    /* Only the thread that wins the exchange logs. */
    return atomic_compare_exchange_strong(last_s, &last, now);
}

void tycho_fatal(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(TYCHO_LOG_ERROR, fmt, ap);
    va_end(ap);
    exit(1);
}
