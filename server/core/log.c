/*
 * log.c: stderr logging. Each line is formatted into a stack buffer and
 * written with one write(2), which POSIX keeps whole for pipes up to
 * PIPE_BUF and which in practice does not interleave for files either.
 */
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
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

/* --error-log FILE: its path, and the descriptor opened early that becomes stderr. */
static const char *error_log_path;
static int error_log_fd = -1;

int tycho_log_open(const char *path, char *err, size_t err_len)
{
    error_log_path = path;
    error_log_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (error_log_fd < 0) {
        snprintf(err, err_len, "tycho: --error-log %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

void tycho_log_redirect(void)
{
    if (error_log_fd < 0)
        return;
    /* stderr itself becomes the file: libevent's and LuaJIT's own messages go there too. */
    if (dup2(error_log_fd, STDERR_FILENO) < 0)
        tycho_log_error("--error-log %s: %s; logging to stderr", error_log_path, strerror(errno));
    close(error_log_fd);
    error_log_fd = -1;
}

void tycho_log_reopen(void)
{
    int fd;

    if (!error_log_path)
        return;
    fd = open(error_log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || dup2(fd, STDERR_FILENO) < 0) {
        tycho_log_error("SIGUSR1: cannot reopen the error log %s: %s; still writing to the old "
                        "file", error_log_path, strerror(errno));
    } else {
        tycho_log_info("SIGUSR1: error log %s reopened", error_log_path);
    }
    if (fd >= 0)
        close(fd);
}
