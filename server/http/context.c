/*
 * context.c: the per-worker context's clock and Date line (context.h).
 */
#include "http/context.h"
#include "core/config.h"
#include "http/gzip.h"
#include "http/http.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

static struct timeval ms_tv(long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    return tv;
}

int tycho_ctx_init(struct tycho_ctx *ctx, const struct tycho_config *cfg, struct event_base *base,
                   int worker_id, unsigned max_conns, size_t conn_bytes)
{
    /*
     * The connection timeouts as libevent common timeouts: thousands of
     * connections sharing one duration sit in one queue, O(1) to re-arm.
     */
    struct timeval first = ms_tv(cfg->header_timeout_ms), write = ms_tv(cfg->write_timeout_ms);

    ctx->worker_id = worker_id;
    ctx->cfg = cfg;
    ctx->gzip = NULL;
    ctx->base = base;
    tycho_list_init(&ctx->conns);
    tycho_pool_init(&ctx->conn_pool, conn_bytes, max_conns, NULL, NULL);
    tycho_pool_init(&ctx->req_pool, sizeof(struct tycho_req), max_conns, tycho_req_init,
                    tycho_req_dispose);
    ctx->first_tv = event_base_init_common_timeout(base, &first);
    ctx->write_tv = event_base_init_common_timeout(base, &write);
    ctx->rbuf = malloc(TYCHO_READ_BYTES);
    ctx->idle_check_assigned = ctx->idle_check_armed = false;
    return ctx->rbuf && ctx->first_tv && ctx->write_tv ? TYCHO_OK : TYCHO_ERR;
}

void tycho_ctx_dispose(struct tycho_ctx *ctx)
{
    tycho_pool_dispose(&ctx->conn_pool);
    tycho_pool_dispose(&ctx->req_pool);
    tycho_buf_dispose(&ctx->out);
    tycho_gzip_free(ctx->gzip);
    ctx->gzip = NULL;
    tycho_buf_dispose(&ctx->access_buf);
    free(ctx->rbuf);
    ctx->rbuf = NULL;
}

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

const char *tycho_ctx_date_hsts(struct tycho_ctx *ctx)
{
    const char *date = tycho_ctx_date(ctx);

    if (ctx->hsts_sec != ctx->date_sec) {
        ctx->hsts_sec = ctx->date_sec;
        snprintf(ctx->date_hsts, sizeof(ctx->date_hsts),
                 "%sStrict-Transport-Security: max-age=%ld\r\n", date, ctx->cfg->hsts_max_age_s);
    }
    return ctx->date_hsts;
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
