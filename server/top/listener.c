/*
 * listener.c: the listening sockets, bound here or taken from systemd. The
 * workers accept from them (top/acceptor.c); main owns them, shuts them down
 * when the server stops and closes them once the workers are gone.
 */
#include "top/listener.h"
#include "core/iplimit.h"
#include "core/log.h"
#include "top/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BACKLOG 4096

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

int tycho_listener_bind(struct tycho_listener *l, struct tycho_shared *shared, char *err)
{
    const struct tycho_config *cfg = shared->cfg;
    int activated;

    memset(l, 0, sizeof(*l));
    l->fd = l->tls_fd = -1;
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
    if (cfg->max_conns_per_ip > 0 &&
        !(shared->per_ip = tycho_iplimit_new((unsigned)cfg->max_conns))) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: out of memory setting up --max-conns-per-ip");
        tycho_listener_dispose(l);
        return TYCHO_ERR;
    }
    shared->listen_fds[0] = l->fd;
    shared->listen_fds[1] = l->tls_fd;
    shared->nlisten = l->tls_fd >= 0 ? 2 : 1;
    return TYCHO_OK;
}

void tycho_listener_stop(struct tycho_listener *l)
{
    if (l->activated)
        return;
    if (l->fd >= 0)
        shutdown(l->fd, SHUT_RDWR);
    if (l->tls_fd >= 0)
        shutdown(l->tls_fd, SHUT_RDWR);
}

void tycho_listener_dispose(struct tycho_listener *l)
{
    if (l->fd >= 0)
        close(l->fd);
    if (l->tls_fd >= 0)
        close(l->tls_fd);
    l->fd = l->tls_fd = -1;
    if (l->shared)
        l->shared->nlisten = 0;
}

void tycho_listener_free_counts(struct tycho_listener *l)
{
    if (!l->shared)
        return;
    tycho_iplimit_free(l->shared->per_ip);
    l->shared->per_ip = NULL;
}
