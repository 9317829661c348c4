/*
 * listener.c: accept, count, refuse or dispatch. The socket is plain (not an
 * evconnlistener) so that accepting costs one accept4 per connection. The open-connection count is
 * an atomic shared with the workers (they decrement it on close), so the
 * bound holds across all workers without a message per close.
 *
 * A refused connection gets the static 503 and a lingering close: the write
 * side is shut, and what the client sends is read and dropped for a moment
 * before the socket is closed, so that closing with unread input does not
 * make the kernel reset the connection and destroy the 503 before the client
 * reads it.
 */
#include "top/listener.h"
#include "http/http.h"
#include "core/iplimit.h"
#include "core/mq.h"
#include "core/log.h"
#include "top/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
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

/*
 * Sends the 503 and closes fd, lingering so that the client can read it. A
 * TLS client would read plain text as a broken record: it is just closed.
 */
static void refuse_quietly(struct tycho_listener *l, int fd, bool tls)
{
    char busy[TYCHO_BUSY_BYTES], date[48];

    if (tls) {
        close(fd);
        return;
    }
    tycho_http_date_line(date, sizeof(date), time(NULL));
    send(fd, busy, tycho_http_busy(busy, sizeof(busy), date), MSG_NOSIGNAL);
    if (l->lingering >= MAX_LINGERING) {
        close(fd);
        return;
    }
    shutdown(fd, SHUT_WR);
    l->lingering++;
    linger_wait(l, fd, LINGER_ROUNDS);
}

/* Over --max-conns: the 503, counted and logged at most once a minute. */
static void refuse(struct tycho_listener *l, int fd, bool tls)
{
    unsigned long refused =
        atomic_fetch_add_explicit(&l->shared->refused, 1, memory_order_relaxed) + 1;

    if (tycho_log_allow(&l->shared->refused_log_s, 60))
        tycho_log_warn("--max-conns %d reached: new connections get 503 (%lu refused so far; "
                       "logged at most once a minute)",
                       l->shared->cfg->max_conns, refused);
    refuse_quietly(l, fd, tls);
}

/* CLOSED reports from the workers: a connection from that address is gone. */
static void on_closed(struct tycho_msg *list, void *arg)
{
    struct tycho_listener *l = arg;
    struct tycho_msg *m, *next;

    for (m = list; m; m = next) {
        next = m->next;
        if (m->type == TYCHO_MSG_CLOSED && l->per_ip) {
            pthread_mutex_lock(&l->shared->per_ip_lock);
            tycho_iplimit_remove(l->per_ip, (struct sockaddr *)&m->peer);
            pthread_mutex_unlock(&l->shared->per_ip_lock);
        }
        free(m);
    }
}

/* Counts one more connection from peer; 0 when --max-conns-per-ip allows it. */
static int count_ip(struct tycho_listener *l, const struct sockaddr *peer)
{
    static _Atomic long last_log_s;
    int n;

    if (!l->per_ip || (peer->sa_family != AF_INET && peer->sa_family != AF_INET6))
        return 0;
    /* Closes the workers reported since the last event count before this connection does. */
    tycho_mq_drain(l->inbox);
    pthread_mutex_lock(&l->shared->per_ip_lock);
    n = tycho_iplimit_add(l->per_ip, peer);
    if (n > l->shared->cfg->max_conns_per_ip)
        tycho_iplimit_remove(l->per_ip, peer);
    pthread_mutex_unlock(&l->shared->per_ip_lock);
    if (n >= 0 && n <= l->shared->cfg->max_conns_per_ip)
        return 0;
    atomic_fetch_add_explicit(&l->shared->refused_ip, 1, memory_order_relaxed);
    if (tycho_log_allow(&last_log_s, 60))
        tycho_log_warn("--max-conns-per-ip %d reached by a client: its new connections get 503 "
                       "(logged at most once a minute)",
                       l->shared->cfg->max_conns_per_ip);
    return -1;
}

/* Hands an accepted connection to a worker, or refuses it past --max-conns(-per-ip). */
static void dispatch(struct tycho_listener *l, int fd, const struct sockaddr *peer,
                     socklen_t peer_len, bool tls)
{
    int open = atomic_fetch_add_explicit(&l->shared->open_conns, 1, memory_order_relaxed);

    if (open >= l->shared->cfg->max_conns) {
        atomic_fetch_sub_explicit(&l->shared->open_conns, 1, memory_order_relaxed);
        refuse(l, fd, tls);
        return;
    }
    /* A --proxy-protocol client is counted by its worker, once its header says who it is. */
    if (!tycho_config_proxied(l->shared->cfg, tls) && count_ip(l, peer) < 0) {
        atomic_fetch_sub_explicit(&l->shared->open_conns, 1, memory_order_relaxed);
        refuse_quietly(l, fd, tls);
        return;
    }
    tycho_worker_give_conn(&l->workers[l->next_worker++ % (unsigned)l->nworkers], fd, peer,
                           peer_len, tls);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_listener *l = arg;

    (void)fd;
    (void)what;
    event_add(l->accept_ev, NULL);
    if (l->tls_accept_ev)
        event_add(l->tls_accept_ev, NULL);
}

/*
 * One accept per readiness, as nginx does by default: the level-triggered
 * event fires again while connections wait, and no accept is wasted on
 * EAGAIN. Out of descriptors, accepting pauses for 100 ms instead of spinning.
 */
static void on_acceptable(evutil_socket_t lfd, short what, void *arg)
{
    static _Atomic long last_log_s;
    struct tycho_listener *l = arg;
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof(peer);
    struct timeval pause = {0, 100 * 1000};
    int fd;

    (void)what;
    fd = accept4(lfd, (struct sockaddr *)&peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
        dispatch(l, fd, (struct sockaddr *)&peer, peer_len, lfd == l->tls_fd);
        return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
        return;
    if (tycho_log_allow(&last_log_s, 60))
        tycho_log_error("accept failed: %s%s", strerror(errno),
                        errno == EMFILE || errno == ENFILE ? " (raise the open-file limit)" : "");
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        event_del(l->accept_ev);
        if (l->tls_accept_ev)
            event_del(l->tls_accept_ev);
        event_add(l->pause_ev, &pause);
    }
}

/*
 * A listening, non-blocking socket for ai; -1 with errno set on failure.
 * reuseport: another process may bind the same address and port
 * (--reuseport); the kernel spreads new connections over the sockets.
 */
static int open_listen_socket(const struct addrinfo *ai, bool reuseport)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1, saved;

    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
        (!reuseport || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == 0) &&
        bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, BACKLOG) == 0)
        return fd;
    saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

/* The port fd is bound to (useful with --port 0). */
static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

/*
 * Binds --host at port; the socket in *fd, its port in *bound. TYCHO_ERR:
 * err says why (flag: the port's flag, for the message).
 */
static int bind_port(const char *host, int port, const char *flag, bool reuseport, int *fd,
                     int *bound, char *err)
{
    struct addrinfo hints, *ai = NULL;
    char service[16];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(service, sizeof(service), "%d", port);
    if ((rc = getaddrinfo(host, service, &hints, &ai)) != 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --host %s: %s", host, gai_strerror(rc));
        return TYCHO_ERR;
    }
    *fd = open_listen_socket(ai, reuseport);
    freeaddrinfo(ai);
    if (*fd < 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: cannot listen on %s:%d (%s): %s", host, port, flag,
                 strerror(errno));
        return TYCHO_ERR;
    }
    *bound = bound_port(*fd);
    return TYCHO_OK;
}

/*
 * An inherited socket (fd 3 and up from systemd) that must be a listening
 * TCP socket; made non-blocking and close-on-exec. TYCHO_ERR: err says why.
 */
static int take_socket(int fd, const char *what, int *bound, char *err)
{
    int listening = 0, type = 0;
    socklen_t len = sizeof(int);

    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM ||
        (*bound = bound_port(fd)) <= 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: LISTEN_FDS: fd %d (for %s) is not a listening TCP "
                 "socket (a socket unit needs ListenStream=)", fd, what);
        return TYCHO_ERR;
    }
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: LISTEN_FDS: fd %d: %s", fd, strerror(errno));
        return TYCHO_ERR;
    }
    return TYCHO_OK;
}

/*
 * Socket activation (sd_listen_fds(3)'s protocol): when LISTEN_PID is this
 * process, LISTEN_FDS sockets start at fd 3: the first is --port's, the
 * second --tls-port's (with --tls-cert). 0 when none were passed, 1 when
 * they were taken, TYCHO_ERR with err filled when they do not fit.
 */
static int take_activated(struct tycho_listener *l, const struct tycho_config *cfg, char *err)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    long n = fds ? strtol(fds, NULL, 10) : 0;
    bool tls = cfg->tls_ncerts > 0;

    if (!pid || strtol(pid, NULL, 10) != (long)getpid() || n <= 0)
        return 0;
    unsetenv("LISTEN_PID");           /* the scripts' child processes must not take them */
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (n != (tls ? 2 : 1)) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: LISTEN_FDS=%ld: expected %d socket%s (--port's%s)",
                 n, tls ? 2 : 1, tls ? "s" : "", tls ? ", then --tls-port's" : "");
        return TYCHO_ERR;
    }
    if (take_socket(3, "--port", &l->port, err) < 0)
        return TYCHO_ERR;
    l->fd = 3;
    if (tls && take_socket(4, "--tls-port", &l->tls_port, err) < 0)
        return TYCHO_ERR;
    l->tls_fd = tls ? 4 : -1;
    l->activated = true;
    return 1;
}

int tycho_listener_bind(struct tycho_listener *l, struct event_base *base,
                        struct tycho_shared *shared, char *err)
{
    const struct tycho_config *cfg = shared->cfg;
    int activated;

    memset(l, 0, sizeof(*l));
    l->fd = l->tls_fd = -1;
    l->base = base;
    l->shared = shared;
    if ((activated = take_activated(l, cfg, err)) < 0) {
        tycho_listener_dispose(l);
        return TYCHO_ERR;
    }
    if (!activated &&
        bind_port(cfg->host, cfg->port, "--port", cfg->reuseport, &l->fd, &l->port, err) < 0)
        return TYCHO_ERR;
    if (!activated && cfg->tls_ncerts > 0 &&
        bind_port(cfg->host, cfg->tls_port, "--tls-port", cfg->reuseport, &l->tls_fd,
                  &l->tls_port, err) < 0) {
        tycho_listener_dispose(l);
        return TYCHO_ERR;
    }
    l->accept_ev = event_new(base, l->fd, EV_READ | EV_PERSIST, on_acceptable, l);
    if (l->tls_fd >= 0)
        l->tls_accept_ev = event_new(base, l->tls_fd, EV_READ | EV_PERSIST, on_acceptable, l);
    l->pause_ev = evtimer_new(base, on_resume, l);
    if (cfg->max_conns_per_ip > 0) {
        l->per_ip = tycho_iplimit_new((unsigned)cfg->max_conns);
        l->inbox = calloc(1, sizeof(*l->inbox));
        if (!l->per_ip || !l->inbox || tycho_mq_init(l->inbox, base, on_closed, l) < 0) {
            free(l->inbox);
            l->inbox = NULL;
            snprintf(err, TYCHO_ERR_LEN, "tycho: out of memory setting up --max-conns-per-ip");
            tycho_listener_dispose(l);
            return TYCHO_ERR;
        }
        shared->main_inbox = l->inbox;
        pthread_mutex_init(&shared->per_ip_lock, NULL);
        shared->per_ip = l->per_ip;
    }
    if (!l->accept_ev || !l->pause_ev || (l->tls_fd >= 0 && !l->tls_accept_ev)) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: out of memory setting up the listener");
        tycho_listener_dispose(l);
        return TYCHO_ERR;
    }
    return TYCHO_OK;
}

int tycho_listener_enable(struct tycho_listener *l, struct tycho_worker *workers, int n)
{
    l->workers = workers;
    l->nworkers = n;
    if (l->tls_accept_ev && event_add(l->tls_accept_ev, NULL) < 0)
        return TYCHO_ERR;
    return event_add(l->accept_ev, NULL) == 0 ? TYCHO_OK : TYCHO_ERR;
}

void tycho_listener_dispose(struct tycho_listener *l)
{
    if (l->accept_ev)
        event_free(l->accept_ev);
    if (l->tls_accept_ev)
        event_free(l->tls_accept_ev);
    if (l->pause_ev)
        event_free(l->pause_ev);
    l->accept_ev = l->tls_accept_ev = l->pause_ev = NULL;
    if (l->fd >= 0)
        close(l->fd);
    if (l->tls_fd >= 0)
        close(l->tls_fd);
    l->fd = l->tls_fd = -1;
}

void tycho_listener_free_counts(struct tycho_listener *l)
{
    if (l->inbox) {
        tycho_mq_dispose(l->inbox);
        free(l->inbox);
        l->inbox = NULL;
        l->shared->main_inbox = NULL;
    }
    if (l->shared && l->shared->per_ip) {
        l->shared->per_ip = NULL;
        pthread_mutex_destroy(&l->shared->per_ip_lock);
    }
    tycho_iplimit_free(l->per_ip);
    l->per_ip = NULL;
}
