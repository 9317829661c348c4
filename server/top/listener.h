/*
 * listener.h: the listening sockets (--port, and --tls-port with --tls-cert),
 * bound or taken from systemd, which the workers accept from
 * (top/acceptor.h), and the per-address table of --max-conns-per-ip. Main
 * thread only.
 */
#ifndef TYCHO_LISTENER_H
#define TYCHO_LISTENER_H

#include <stdbool.h>

struct tycho_shared;

struct tycho_listener {
    int fd;                         /* owned listening socket; -1 when closed */
    int tls_fd;                     /* owned --tls-port socket; -1 without TLS */
    struct tycho_shared *shared;    /* borrowed */
    int port;                       /* the port bound (useful with --port 0) */
    int tls_port;                   /* the --tls-port bound; 0 without TLS */
    bool activated;                 /* the sockets came from systemd (LISTEN_FDS) */
};

/*
 * Binds cfg's --host/--port (and --tls-port), or takes the sockets systemd
 * passed (LISTEN_PID, LISTEN_FDS: fd 3 for --port, fd 4 for --tls-port), and
 * publishes them in shared->listen_fds for the workers; makes shared->per_ip
 * with --max-conns-per-ip. Returns TYCHO_OK, or TYCHO_ERR with a one-line
 * reason in err.
 */
int tycho_listener_bind(struct tycho_listener *l, struct tycho_shared *shared, char *err);

/*
 * The server is stopping: shuts the sockets down, so that the kernel sends
 * new connections elsewhere (another process on the port with --reuseport)
 * or refuses them, and the workers stop accepting (accept fails). Sockets
 * from systemd are left alone: systemd keeps them for the next start, and
 * the workers stop accepting on STOP.
 */
void tycho_listener_stop(struct tycho_listener *l);

/* Closes the sockets. Only after the workers have stopped: they accept from them. */
void tycho_listener_dispose(struct tycho_listener *l);

/* Frees the per-address counts. Only after the workers have stopped. */
void tycho_listener_free_counts(struct tycho_listener *l);

#endif
