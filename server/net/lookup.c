/*
 * lookup.c: see lookup.h.
 */
#include "net/lookup.h"

#include <arpa/inet.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct tycho_lookup {
    struct evdns_getaddrinfo_request *req;
    tycho_lookup_fn *fn;
    void *arg;
    bool cancelled;
};

static void on_answer(int result, struct evutil_addrinfo *res, void *arg)
{
    struct tycho_lookup *l = arg;
    char addr[INET6_ADDRSTRLEN] = "";

    if (!l->cancelled && result == 0 && res) {
        if (res->ai_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, addr,
                      sizeof(addr));
        else
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, addr,
                      sizeof(addr));
    }
    if (res)
        evutil_freeaddrinfo(res);
    if (!l->cancelled && result != EVUTIL_EAI_CANCEL)
        l->fn(l->arg, addr[0] ? addr : NULL, result ? evutil_gai_strerror(result)
                                                    : "no address for the name");
    free(l);
}

struct tycho_lookup *tycho_lookup_start(struct evdns_base **dns, struct event_base *base,
                                        const char *host, tycho_lookup_fn *fn, void *arg)
{
    struct tycho_lookup *l;
    struct evutil_addrinfo hints;
    struct evdns_getaddrinfo_request *req;

    if (!*dns && !(*dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                                   EVDNS_BASE_DISABLE_WHEN_INACTIVE))) {
        fn(arg, NULL, "cannot start the name resolver");
        return NULL;
    }
    if (!(l = calloc(1, sizeof(*l)))) {
        fn(arg, NULL, "out of memory");
        return NULL;
    }
    l->fn = fn;
    l->arg = arg;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /* NULL when it has answered already (and l is freed). */
    req = evdns_getaddrinfo(*dns, host, NULL, &hints, on_answer, l);
    if (!req)
        return NULL;
    l->req = req;
    return l;
}

void tycho_lookup_cancel(struct tycho_lookup *l)
{
    l->cancelled = true;
    evdns_getaddrinfo_cancel(l->req);   /* calls on_answer, which frees l */
}

struct timeval tycho_tv(double seconds)
{
    struct timeval tv;

    if (seconds < 0.001)
        seconds = 0.001;
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    return tv;
}
