/*
 * support.h: what the integration test programs share: time, diagnostics,
 * and the TYCHO_WRAP prefix (e.g. "valgrind -q") put before the server's
 * command line. Single-threaded; include once per program, after harness.h.
 */
#ifndef TYCHO_TEST_SUPPORT_H
#define TYCHO_TEST_SUPPORT_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    int tries = 0;

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR && ++tries < 100) {
    }
}

/* Prints a diagnostic line (prefixed "# ") that is not a check. */
static void note(const char *fmt, ...)
{
    va_list ap;

    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

static char what_buf[512];

/* Formats a check description: "ctx: ...". The result lives until the next call. */
static const char *what(const char *ctx, const char *fmt, ...)
{
    va_list ap;
    int n = snprintf(what_buf, sizeof what_buf, "%s: ", ctx);

    va_start(ap, fmt);
    vsnprintf(what_buf + n, sizeof what_buf - (size_t)n, fmt, ap);
    va_end(ap);
    return what_buf;
}

static char *wrap_copy;             /* owned; TYCHO_WRAP split in place */
static char *wrap_words[32];
static int n_wrap;

/* Splits TYCHO_WRAP into wrap_words; returns how many words (0: no wrapper). */
static int parse_wrap(void)
{
    const char *w = getenv("TYCHO_WRAP");
    char *tok, *save = NULL;

    if (!w || !*w)
        return 0;
    wrap_copy = strdup(w);
    for (tok = strtok_r(wrap_copy, " ", &save); tok && n_wrap < 31;
         tok = strtok_r(NULL, " ", &save))
        wrap_words[n_wrap++] = tok;
    return n_wrap;
}

#endif
