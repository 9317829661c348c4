/*
 * scrape.c: --metrics-addr on main's loop (scrape.h). A listener hands each
 * accepted socket to http/conn.c with main's own context, whose application
 * has no route: answer.c answers the metrics path itself (ctx->metrics_only),
 * everything else gets 404.
 */
#include "top/scrape.h"
#include "core/config.h"
#include "http/conn.h"
#include "http/context.h"
#include "http/http.h"
#include "http/router.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Connections open at once on the metrics address; past it a new one gets 503. */
#define SCRAPE_CONNS 64

struct tycho_scrape {
    struct tycho_ctx ctx;
    struct tycho_router *router;      /* owned: empty */
    struct evconnlistener *listener;
};

static struct tycho_static *no_static(void *self, int handler_id)
{
    (void)self;
    (void)handler_id;
    return NULL;
}

/* Never called: an empty router finds no route to run. */
static enum tycho_run no_run(void *self, struct tycho_req *r)
{
    (void)self;
    r->status = 404;
    return TYCHO_RUN_DONE;
}

static void no_cancel(struct tycho_req *r)
{
    (void)r;
}

/* The listener does not count these connections against --max-conns: nothing to give back. */
static void conn_gone(struct tycho_ctx *ctx, const struct sockaddr *peer)
{
    (void)ctx;
    (void)peer;
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *peer,
                      int peer_len, void *arg)
{
    struct tycho_scrape *s = arg;

    (void)l;
    tycho_conn_open(&s->ctx, fd, peer, (socklen_t)peer_len, false);
}

/* HOST (default 127.0.0.1) and PORT of --metrics-addr [HOST:]PORT ([v6]:PORT too). */
static void split_addr(const char *addr, char *host, size_t host_cap, char *port, size_t port_cap)
{
    const char *colon = strrchr(addr, ':');

    snprintf(host, host_cap, "127.0.0.1");
    snprintf(port, port_cap, "%s", colon ? colon + 1 : addr);
    if (colon) {
        size_t n = (size_t)(colon - addr);
        if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
            addr++;
            n -= 2;                   /* [v6]:port */
        }
        snprintf(host, host_cap, "%.*s", (int)n, addr);
    }
}

static int bound_port(struct evconnlistener *l)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&ss, &len) != 0)
        return 0;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

struct tycho_scrape *tycho_scrape_new(struct event_base *base, const struct tycho_config *cfg,
                                      char *err)
{
    struct tycho_scrape *s = calloc(1, sizeof(*s));
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char host[256], port[16];
    int rc;

    if (!s) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --metrics-addr: out of memory");
        return NULL;
    }
    tycho_list_init(&s->ctx.conns);
    split_addr(cfg->metrics_addr, host, sizeof(host), port, sizeof(port));
    if ((rc = getaddrinfo(host, port, &hints, &ai)) != 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --metrics-addr %s: %s", host, gai_strerror(rc));
        goto fail;
    }
    if (!(s->router = tycho_router_new()) ||
        tycho_ctx_init(&s->ctx, cfg, base, 0, SCRAPE_CONNS, tycho_conn_bytes()) < 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --metrics-addr: out of memory");
        goto fail;
    }
    s->ctx.metrics_only = true;
    s->ctx.conn_gone = conn_gone;
    s->ctx.app = (struct tycho_app){.self = s, .router = s->router, .static_of = no_static,
                                 .run = no_run, .cancel = no_cancel};
    if (!(s->listener = evconnlistener_new_bind(base, on_accept, s,
                                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                                    LEV_OPT_CLOSE_ON_EXEC,
                                                128, ai->ai_addr, (int)ai->ai_addrlen))) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --metrics-addr: cannot listen on %s:%s", host, port);
        goto fail;
    }
    freeaddrinfo(ai);
    printf("metrics on http://%s%s%s:%d%s\n", strchr(host, ':') ? "[" : "", host,
           strchr(host, ':') ? "]" : "", bound_port(s->listener), cfg->metrics_path);
    return s;
fail:
    if (ai)
        freeaddrinfo(ai);
    tycho_scrape_free(s);
    return NULL;
}

void tycho_scrape_free(struct tycho_scrape *s)
{
    if (!s)
        return;
    if (s->listener)
        evconnlistener_free(s->listener);
    if (s->ctx.base)
        tycho_conn_close_all(&s->ctx);
    tycho_ctx_dispose(&s->ctx);
    tycho_router_free(s->router);
    free(s);
}
