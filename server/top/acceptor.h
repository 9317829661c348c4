/*
 * acceptor.h: a worker accepting from the shared listening sockets (--port,
 * --tls-port) in its own loop. Every worker watches them with EPOLLEXCLUSIVE,
 * so the kernel wakes one worker that is waiting for events: a worker busy
 * in a handler is not woken and takes no connection, and no thread hands
 * connections over. Counting against --max-conns and --max-conns-per-ip and
 * the 503 past them happen here too. The owning worker's thread only.
 */
#ifndef TYCHO_ACCEPTOR_H
#define TYCHO_ACCEPTOR_H

#include <stdbool.h>

struct event;
struct event_base;
struct tycho_ctx;
struct tycho_shared;
struct sockaddr;

struct tycho_acceptor {
    struct event *ev[2];            /* owned: readiness of --port's, --tls-port's socket */
    struct event *pause_ev;         /* owned: accepting again after EMFILE */
    struct event_base *base;        /* borrowed: the worker's */
    struct tycho_ctx *ctx;          /* borrowed: the worker's; connections open in it */
    struct tycho_shared *shared;    /* borrowed: the limits and the sockets */
    int epfd;                       /* base's epoll descriptor; -1: not found (no exclusivity) */
    int lingering;                  /* refused sockets still being drained */
    int open;                       /* connections it opened that have not closed */
    bool on;                        /* watching the sockets */
};

/*
 * Sets a up for the worker's base and ctx, not yet accepting. marker: a
 * descriptor that base alone watches, for EV_READ only (the worker's inbox
 * eventfd), by which base's epoll descriptor is found. TYCHO_OK, or
 * TYCHO_ERR when out of memory (a is then safe to dispose).
 */
int tycho_acceptor_init(struct tycho_acceptor *a, struct event_base *base,
                        struct tycho_ctx *ctx, struct tycho_shared *shared, int marker);

/* Starts accepting from shared->listen_fds (none for a worker of tycho --request). */
void tycho_acceptor_start(struct tycho_acceptor *a);

/*
 * Counts one more connection from peer against --max-conns-per-ip: at
 * accept, and for a --proxy-protocol connection (not counted at accept) once
 * its header names the client. TYCHO_OK, or TYCHO_ERR past the bound (then
 * nothing is counted; counted as refused, logged at most once a minute).
 * tycho_worker_conn_gone gives it back.
 */
int tycho_acceptor_count_ip(struct tycho_acceptor *a, const struct sockaddr *peer);

/* One of the connections it opened has closed. */
void tycho_acceptor_closed(struct tycho_acceptor *a);

/* Stops accepting (the server is stopping); what was accepted goes on. */
void tycho_acceptor_stop(struct tycho_acceptor *a);

/* Frees the events; refused sockets still lingering are left to the base's teardown. */
void tycho_acceptor_dispose(struct tycho_acceptor *a);

#endif
