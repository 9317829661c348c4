/*
 * acceptor.c: accept, count, refuse or open, on the worker's own thread.
 *
 * Fairness comes from the kernel: the listening sockets are in every
 * worker's epoll set with EPOLLEXCLUSIVE, and a new connection wakes only
 * one epoll_wait that is waiting. libevent (2.1) has no flag for it and
 * does not expose its epoll descriptor, so after event_add registers the
 * socket the usual way, its entry is replaced by an exclusive one in the
 * same set (same events and data, so libevent's later EPOLL_CTL_DEL works
 * as before). Without the descriptor (another backend) every waiting worker
 * is woken and all but one find nothing to accept: still fair, less cheap.
 *
 * The kernel wakes the first waiting worker in the socket's wait queue, so
 * a worker that is idle whenever a connection comes would take them all,
 * and with them all the later requests of keep-alive connections and
 * WebSockets. A worker holding more than its share of the open connections
 * (more than the average) therefore moves its entry to the back of the
 * queue after an accept (EPOLL_CTL_DEL then ADD), so that the next
 * connection goes to another waiting worker first: idle workers take turns.
 * A connection that comes between the two calls waits in the queue for
 * another worker, or for this one, which finds the socket ready on ADD.
 *
 * The open-connection count is an atomic shared by the workers, the
 * per-address counts a table under one lock (core/iplimit.h), so both
 * limits hold across workers exactly.
 *
 * A refused connection gets the static 503 and a lingering close: the write
 * side is shut, and what the client sends is read and dropped for a moment
 * before the socket is closed, so that closing with unread input does not
 * make the kernel reset the connection and destroy the 503 before the client
 * reads it.
 */
#include "top/acceptor.h"
#include "http/conn.h"
#include "http/context.h"
#include "http/http.h"
#include "core/iplimit.h"
#include "core/log.h"
#include "top/worker.h"

#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_LINGERING 1024 /* refused sockets lingering at once, over all the workers */
#define LINGER_ROUNDS 4    /* each waits up to 500 ms for input to drop */

static void on_linger(evutil_socket_t fd, short what, void *arg);

static void linger_wait(struct tycho_acceptor *a, int fd, int rounds)
{
    struct timeval wait = {0, 500 * 1000};

    /* event_base_once cannot pass two values; the round count rides in the low bits. */
    if (rounds > 0 && event_base_once(a->base, fd, EV_READ, on_linger,
                                      (void *)((uintptr_t)a | (uintptr_t)rounds), &wait) == 0)
        return;
    close(fd);
    a->lingering--;
}

static void on_linger(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_acceptor *a = (void *)((uintptr_t)arg & ~(uintptr_t)7);
    int rounds = (int)((uintptr_t)arg & 7);
    char drop[4096];
    ssize_t n = 0;

    if (what & EV_READ)
        n = recv(fd, drop, sizeof(drop), 0);
    /* Timeout, end of input or an error: done. */
    linger_wait(a, fd, n > 0 ? rounds - 1 : 0);
}

/*
 * Sends the 503 and closes fd, lingering so that the client can read it. A
 * TLS client would read plain text as a broken record: it is just closed.
 */
static void refuse_quietly(struct tycho_acceptor *a, int fd, bool tls)
{
    char busy[TYCHO_BUSY_BYTES];

    if (tls) {
        close(fd);
        return;
    }
    send(fd, busy, tycho_http_busy(busy, sizeof(busy), tycho_ctx_date(a->ctx)), MSG_NOSIGNAL);
    if (a->lingering >= MAX_LINGERING / a->shared->cfg->workers + 1) {
        close(fd);
        return;
    }
    shutdown(fd, SHUT_WR);
    a->lingering++;
    linger_wait(a, fd, LINGER_ROUNDS);
}

/* Over --max-conns: the 503, counted and logged at most once a minute. */
static void refuse(struct tycho_acceptor *a, int fd, bool tls)
{
    struct tycho_shared *s = a->shared;
    unsigned long refused = atomic_fetch_add_explicit(&s->refused, 1, memory_order_relaxed) + 1;

    if (tycho_log_allow(&s->refused_log_s, 60))
        tycho_log_warn("--max-conns %d reached: new connections get 503 (%lu refused so far; "
                       "logged at most once a minute)",
                       s->cfg->max_conns, refused);
    refuse_quietly(a, fd, tls);
}

int tycho_acceptor_count_ip(struct tycho_acceptor *a, const struct sockaddr *peer)
{
    static _Atomic long last_log_s;
    struct tycho_shared *s = a->shared;
    int n, limit = s->cfg->max_conns_per_ip;

    if (!s->per_ip || (peer->sa_family != AF_INET && peer->sa_family != AF_INET6))
        return TYCHO_OK;
    n = tycho_iplimit_add(s->per_ip, peer, limit);
    if (n >= 0 && n <= limit)
        return TYCHO_OK;
    atomic_fetch_add_explicit(&s->refused_ip, 1, memory_order_relaxed);
    if (tycho_log_allow(&last_log_s, 60))
        tycho_log_warn("--max-conns-per-ip %d reached by a client: its new connections get 503 "
                       "(logged at most once a minute)", limit);
    return TYCHO_ERR;
}

/* Opens an accepted connection in this worker, or refuses it past --max-conns(-per-ip). */
static void admit(struct tycho_acceptor *a, int fd, const struct sockaddr *peer,
                  socklen_t peer_len, bool tls)
{
    struct tycho_shared *s = a->shared;
    int open = atomic_fetch_add_explicit(&s->open_conns, 1, memory_order_relaxed);

    if (open >= s->cfg->max_conns) {
        atomic_fetch_sub_explicit(&s->open_conns, 1, memory_order_relaxed);
        refuse(a, fd, tls);
        return;
    }
    /* A --proxy-protocol connection's client is counted once its header names it (conn.c). */
    if (!tycho_config_proxied(s->cfg, tls) && tycho_acceptor_count_ip(a, peer) < 0) {
        atomic_fetch_sub_explicit(&s->open_conns, 1, memory_order_relaxed);
        refuse_quietly(a, fd, tls);
        return;
    }
    a->open++;
    tycho_conn_open(a->ctx, fd, peer, peer_len, tls);
}

static void make_exclusive(struct tycho_acceptor *a, int lfd);

/* After an accept on lfd: more than our share of the connections? To the back of the queue. */
static void keep_balance(struct tycho_acceptor *a, int lfd)
{
    int n = a->shared->cfg->workers;
    int total = atomic_load_explicit(&a->shared->open_conns, memory_order_relaxed);

    if (n > 1 && a->open * n > total)
        make_exclusive(a, lfd);
}

/* Out of descriptors or memory: stop for 100 ms instead of spinning on the ready socket. */
static void pause_accepting(struct tycho_acceptor *a)
{
    struct timeval pause = {0, 100 * 1000};

    tycho_acceptor_stop(a);
    event_add(a->pause_ev, &pause);
}

/*
 * One accept per readiness, as nginx does by default: the level-triggered
 * event fires again while connections wait, and no accept is wasted on
 * EAGAIN. The sockets are shut down when the server stops: accept then
 * fails with EINVAL, and this worker stops watching them.
 */
static void on_acceptable(evutil_socket_t lfd, short what, void *arg)
{
    static _Atomic long last_log_s;
    struct tycho_acceptor *a = arg;
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof(peer);
    int fd;

    (void)what;
    fd = accept4(lfd, (struct sockaddr *)&peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
        admit(a, fd, (struct sockaddr *)&peer, peer_len, lfd == a->shared->listen_fds[1]);
        keep_balance(a, lfd);
        return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
        return;
    if (errno == EINVAL) {
        tycho_acceptor_stop(a);
        return;
    }
    if (tycho_log_allow(&last_log_s, 60))
        tycho_log_error("accept failed: %s%s", strerror(errno),
                        errno == EMFILE || errno == ENFILE ? " (raise the open-file limit)" : "");
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
        pause_accepting(a);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tycho_acceptor_start(arg);
}

/*
 * The epoll descriptor of base, or -1. marker is a descriptor only base
 * watches, for EV_READ alone: libevent registered it as {EPOLLIN, data.fd =
 * marker}. EPOLL_CTL_MOD with exactly that changes nothing in base's set and
 * fails on any other descriptor (ENOENT in another epoll set, EINVAL or
 * EBADF otherwise), so the first that takes it is base's. Once per worker.
 *
 * base made its descriptor shortly before the worker made marker, so the
 * search goes down from marker first and probes only what any thread opened
 * in between; counting up from 0 probed every descriptor the workers set up
 * earlier had opened (256 workers: 150,000 calls at start-up, now 40,000).
 */
static int base_epoll_fd(struct event_base *base, int marker)
{
    struct rlimit rl;
    long limit = 1L << 20;

    if (strcmp(event_base_get_method(base), "epoll") != 0)
        return -1;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)limit)
        limit = (long)rl.rlim_cur;
    for (long i = 1; i < limit; i++) {
        int fd = i <= marker ? marker - (int)i : (int)i;   /* marker - 1 ... 0, marker + 1 ... */
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = marker};
        if (epoll_ctl(fd, EPOLL_CTL_MOD, marker, &ev) == 0)
            return fd;
    }
    return -1;
}

/*
 * Replaces base's entry for lfd by an exclusive one, at the back of the
 * socket's wait queue (after event_add, and to step back: keep_balance).
 */
static void make_exclusive(struct tycho_acceptor *a, int lfd)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.fd = lfd};

    if (a->epfd < 0 || epoll_ctl(a->epfd, EPOLL_CTL_DEL, lfd, NULL) < 0)
        return;
    if (epoll_ctl(a->epfd, EPOLL_CTL_ADD, lfd, &ev) == 0)
        return;
    ev.events = EPOLLIN;              /* a kernel without EPOLLEXCLUSIVE (before 4.5) */
    epoll_ctl(a->epfd, EPOLL_CTL_ADD, lfd, &ev);
}

int tycho_acceptor_init(struct tycho_acceptor *a, struct event_base *base,
                        struct tycho_ctx *ctx, struct tycho_shared *shared, int marker)
{
    memset(a, 0, sizeof(*a));
    a->base = base;
    a->ctx = ctx;
    a->shared = shared;
    a->epfd = -1;
    for (int i = 0; i < shared->nlisten; i++)
        if (!(a->ev[i] = event_new(base, shared->listen_fds[i], EV_READ | EV_PERSIST,
                                   on_acceptable, a)))
            return TYCHO_ERR;
    if (!(a->pause_ev = evtimer_new(base, on_resume, a)))
        return TYCHO_ERR;
    if (shared->nlisten > 0)
        a->epfd = base_epoll_fd(base, marker);
    return TYCHO_OK;
}

void tycho_acceptor_start(struct tycho_acceptor *a)
{
    if (a->on)
        return;
    for (int i = 0; i < 2; i++)
        if (a->ev[i] && event_add(a->ev[i], NULL) == 0)
            make_exclusive(a, event_get_fd(a->ev[i]));
    a->on = true;
}

void tycho_acceptor_closed(struct tycho_acceptor *a)
{
    a->open--;
}

void tycho_acceptor_stop(struct tycho_acceptor *a)
{
    for (int i = 0; i < 2; i++)
        if (a->ev[i])
            event_del(a->ev[i]);
    if (a->pause_ev)
        event_del(a->pause_ev);
    a->on = false;
}

void tycho_acceptor_dispose(struct tycho_acceptor *a)
{
    for (int i = 0; i < 2; i++)
        if (a->ev[i])
            event_free(a->ev[i]);
    if (a->pause_ev)
        event_free(a->pause_ev);
    memset(a->ev, 0, sizeof(a->ev));
    a->pause_ev = NULL;
    a->on = false;
}
