/*
 * listener.c: accept, count, refuse or dispatch. The open-connection count is
 * an atomic shared with the workers (they decrement it on close), so the
 * bound holds across all workers without a message per close.
 *
 * A refused connection gets the static 503 and a lingering close: the write
 * side is shut, and what the client sends is read and dropped for a moment
 * before the socket is closed, so that closing with unread input does not
 * make the kernel reset the connection and destroy the 503 before the client
 * reads it.
 */
#include "listener.h"
#include "http.h"
#include "log.h"
#include "worker.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BACKLOG 4096
#define MAX_LINGERING 1024
#define LINGER_ROUNDS 4 /* each waits up to 500 ms for input to drop */

static void on_linger(evutil_socket_t fd, short what, void *arg);

static void linger_wait(struct tycho_listener *l, int fd, int rounds)
{
    struct timeval wait = {0, 500 * 1000};

    /* event_base_once cannot pass two values; the round count rides in the low bits. */
    if (rounds > 0 && event_base_once(l->base, fd, EV_READ, on_linger,
                                      (void *)((uintptr_t)l | (uintptr_t)rounds), &wait) == 0)
        return;
    close(fd);
    l->lingering--;
}

static void on_linger(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_listener *l = (void *)((uintptr_t)arg & ~(uintptr_t)7);
    int rounds = (int)((uintptr_t)arg & 7);
    char drop[4096];
    ssize_t n = 0;

    if (what & EV_READ)
        n = recv(fd, drop, sizeof(drop), 0);
    /* Timeout, end of input or an error: done. */
    linger_wait(l, fd, n > 0 ? rounds - 1 : 0);
}

static void refuse(struct tycho_listener *l, int fd)
{
    unsigned long refused =
        atomic_fetch_add_explicit(&l->shared->refused, 1, memory_order_relaxed) + 1;

    char busy[TYCHO_BUSY_BYTES], date[48];

    tycho_http_date_line(date, sizeof(date), time(NULL));
    send(fd, busy, tycho_http_busy(busy, sizeof(busy), date), MSG_NOSIGNAL);
    if (tycho_log_allow(&l->shared->refused_log_s, 60))
        tycho_log_warn("--max-conns %d reached: new connections get 503 (%lu refused so far; "
                       "logged at most once a minute)",
                       l->shared->cfg->max_conns, refused);
    if (l->lingering >= MAX_LINGERING) {
        close(fd);
        return;
    }
    shutdown(fd, SHUT_WR);
    l->lingering++;
    linger_wait(l, fd, LINGER_ROUNDS);
}

static void on_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *peer,
                      int peer_len, void *arg)
{
    struct tycho_listener *l = arg;
    int open = atomic_fetch_add_explicit(&l->shared->open_conns, 1, memory_order_relaxed);

    (void)evl;
    if (open >= l->shared->cfg->max_conns) {
        atomic_fetch_sub_explicit(&l->shared->open_conns, 1, memory_order_relaxed);
        refuse(l, fd);
        return;
    }
    tycho_worker_give_conn(&l->workers[l->next_worker++ % (unsigned)l->nworkers], fd, peer,
                           (socklen_t)peer_len);
}

static void on_accept_error(struct evconnlistener *evl, void *arg)
{
    static _Atomic long last_s;
    int err = EVUTIL_SOCKET_ERROR();

    (void)evl;
    (void)arg;
    /* EMFILE and friends: libevent retries on the next readiness; say so once a minute. */
    if (tycho_log_allow(&last_s, 60))
        tycho_log_error("accept failed: %s", evutil_socket_error_to_string(err));
}

int tycho_listener_bind(struct tycho_listener *l, struct event_base *base,
                        struct tycho_shared *shared, char *err)
{
    const struct tycho_config *cfg = shared->cfg;
    struct addrinfo hints, *ai = NULL;
    char port[16];
    int rc;

    memset(l, 0, sizeof(*l));
    l->base = base;
    l->shared = shared;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%d", cfg->port);
    if ((rc = getaddrinfo(cfg->host, port, &hints, &ai)) != 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --host %s: %s", cfg->host, gai_strerror(rc));
        return TYCHO_ERR;
    }
    l->evl = evconnlistener_new_bind(base, on_accept, l,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC |
                                         LEV_OPT_REUSEABLE | LEV_OPT_DISABLED,
                                     BACKLOG, ai->ai_addr, (int)ai->ai_addrlen);
    if (!l->evl) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: cannot listen on %s:%d: %s", cfg->host, cfg->port,
                 strerror(errno));
        freeaddrinfo(ai);
        return TYCHO_ERR;
    }
    freeaddrinfo(ai);
    evconnlistener_set_error_cb(l->evl, on_accept_error);
    {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        getsockname(evconnlistener_get_fd(l->evl), (struct sockaddr *)&ss, &len);
        l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    }
    return TYCHO_OK;
}

int tycho_listener_enable(struct tycho_listener *l, struct tycho_worker *workers, int n)
{
    l->workers = workers;
    l->nworkers = n;
    return evconnlistener_enable(l->evl) == 0 ? TYCHO_OK : TYCHO_ERR;
}

void tycho_listener_dispose(struct tycho_listener *l)
{
    if (l->evl)
        evconnlistener_free(l->evl);
    l->evl = NULL;
}
