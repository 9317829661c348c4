/*
 * context.c: the per-worker context's clock and Date line (context.h).
 */
#include "http/context.h"
#include "http/http.h"

#include <event2/event.h>
#include <sys/time.h>

/* The loop's cached time (one clock read per loop turn), or the clock when there is no loop. */
static void cached_time(struct tycho_ctx *ctx, struct timeval *now)
{
    if (!ctx->base || event_base_gettimeofday_cached(ctx->base, now) < 0)
        gettimeofday(now, NULL);
}

const char *tycho_ctx_date(struct tycho_ctx *ctx)
{
    struct timeval now;

    cached_time(ctx, &now);
    if (now.tv_sec != ctx->date_sec) {
        ctx->date_sec = now.tv_sec;
        tycho_http_date_line(ctx->date_line, sizeof(ctx->date_line), ctx->date_sec);
    }
    return ctx->date_line;
}

long tycho_ctx_now_ms(struct tycho_ctx *ctx)
{
    struct timeval now;

    cached_time(ctx, &now);
    return (long)now.tv_sec * 1000 + now.tv_usec / 1000;
}

long long tycho_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
