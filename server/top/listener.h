/*
 * listener.h: the listening sockets (--port, and --tls-port with --tls-cert:
 * read events in the main thread's base),
 * the --max-conns bound, and round-robin dispatch of accepted connections to
 * the workers. Main thread only.
 */
#ifndef TYCHO_LISTENER_H
#define TYCHO_LISTENER_H

#include <stdbool.h>

struct event_base;
struct event;
struct tycho_shared;
struct tycho_iplimit;
struct tycho_mq;
struct tycho_worker;

struct tycho_listener {
    int fd;                         /* owned listening socket; -1 when closed */
    struct event *accept_ev;        /* owned: readiness of fd */
    int tls_fd;                     /* owned --tls-port socket; -1 without TLS */
    struct event *tls_accept_ev;    /* owned: readiness of tls_fd; NULL without TLS */
    struct event *pause_ev;         /* owned: re-enables accepting after EMFILE */
    struct event_base *base;        /* borrowed: main's */
    struct tycho_shared *shared;    /* borrowed */
    struct tycho_worker *workers;   /* borrowed; set before tycho_listener_enable */
    int nworkers;
    unsigned next_worker;           /* round-robin cursor */
    int lingering;                  /* refused sockets still being drained */
    struct tycho_iplimit *per_ip;   /* owned: counts per address; NULL without the flag */
    struct tycho_mq *inbox;         /* owned: CLOSED reports from the workers */
    int port;                       /* the port bound (useful with --port 0) */
    int tls_port;                   /* the --tls-port bound; 0 without TLS */
    bool activated;                 /* the sockets came from systemd (LISTEN_FDS) */
};

/*
 * Binds cfg's --host/--port (and --tls-port), or takes the sockets systemd
 * passed (LISTEN_PID, LISTEN_FDS: fd 3 for --port, fd 4 for --tls-port),
 * disabled until tycho_listener_enable. Returns
 * TYCHO_OK, or TYCHO_ERR with a one-line reason in err.
 */
int tycho_listener_bind(struct tycho_listener *l, struct event_base *base,
                        struct tycho_shared *shared, char *err);

/* Starts accepting and handing connections to the n workers. */
int tycho_listener_enable(struct tycho_listener *l, struct tycho_worker *workers, int n);

/* Stops accepting and closes the socket. */
void tycho_listener_dispose(struct tycho_listener *l);

/*
 * Frees the per-address counts and main's inbox. Only after the workers
 * have stopped: until then they may still report closes.
 */
void tycho_listener_free_counts(struct tycho_listener *l);

#endif
