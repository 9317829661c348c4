/*
 * worker.h: worker threads. Each worker owns an event_base (NOLOCK), an inbox
 * queue, its script generation and the context its connections take (pools,
 * scratch buffers, counters: http/context.h) and its acceptor (top/acceptor.h);
 * only its own thread touches them. Main starts the workers, tells them to
 * accept (ACCEPT), to reload (RELOAD) and to stop (STOP) through their inboxes.
 */
#ifndef TYCHO_WORKER_H
#define TYCHO_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <time.h>

#include "http/context.h"
#include "core/config.h"
#include "core/metrics.h"
#include "core/mq.h"
#include "core/pool.h"
#include "top/acceptor.h"

struct event_base;
struct event;
struct tycho_gen;
struct tycho_iplimit;
struct tycho_conn;

/* State shared by every thread; counters are atomic, the rest read-only after start. */
struct tycho_shared {
    const struct tycho_config *cfg;
    _Atomic int open_conns;         /* accepted and not yet closed, all workers */
    _Atomic long refused_log_s;     /* rate limit of the "max-conns reached" line */
    _Atomic unsigned long refused;  /* connections refused by --max-conns */
    _Atomic unsigned long refused_ip; /* connections refused by --max-conns-per-ip */
    struct tycho_iplimit *per_ip;   /* counts per address; NULL without --max-conns-per-ip */
    int listen_fds[2];              /* --port's and --tls-port's sockets, which every worker */
    int nlisten;                    /* accepts from: 0 (tycho --request, test), 1 or 2 */
    _Atomic unsigned long reloads;  /* script reloads that succeeded (main writes) */
    _Atomic unsigned long reload_failures; /* and failed */
    _Atomic unsigned long generation; /* the generation being served */
};

struct tycho_worker {
    struct tycho_ctx ctx;            /* what its connections and requests take (context.h) */
    int id;                          /* 1..N; 0 for the in-process --request worker */
    const struct tycho_config *cfg;  /* borrowed, read-only */
    struct tycho_shared *shared;     /* borrowed */
    pthread_t thread;
    struct event_base *base;         /* owned (ctx.base borrows it) */
    struct tycho_mq inbox;           /* owned; receives ACCEPT, STOP, RELOAD, BROADCAST */
    struct tycho_acceptor acceptor;  /* owned: its accepting from the listening sockets */
    bool inbox_open;                 /* broadcasts may be pushed to it (under fanout_lock) */
    struct tycho_gen *gen;           /* owned: the current script generation (and retired ones) */
    unsigned long generation;        /* its number: 1 at start, one more per reload */
    struct event *trim_ev;           /* owned: periodic pool trim */
    struct tycho_msg stop_msg;       /* STOP needs no allocation, so stopping cannot fail */
    struct tycho_msg accept_msg;     /* nor does ACCEPT */
    struct event *access_ev;         /* owned: writes ctx.access_buf out every second */
    struct event *metrics_ev;        /* owned: samples the gauges each second (--metrics) */
    unsigned metrics_round;          /* sampling rounds so far */
    struct event *drain_ev;          /* owned: ends the drain at --drain-timeout */
    /* start-up report, under the start lock */
    int start_rc;
    char start_err[TYCHO_ERR_LEN];
};

/*
 * Starts n workers and waits until each has loaded its scripts. On failure
 * stops the ones that started and returns NULL with err filled. Main thread.
 */
struct tycho_worker *tycho_workers_start(int n, struct tycho_shared *shared, char *err);

/*
 * Main thread, once every worker started: each begins accepting from
 * shared->listen_fds in its own loop.
 */
void tycho_workers_accept(struct tycho_worker *ws, int n);

/*
 * Accounts for the close of a connection from peer that a worker's acceptor
 * counted: the open-connection count and the per-address count (peer NULL:
 * none was counted, a --proxy-protocol connection whose header did not name
 * its client). Any thread.
 */
void tycho_worker_conn_gone(struct tycho_shared *shared, const struct sockaddr *peer);

/*
 * Sends STOP to every worker, joins them and frees the array. Returns
 * TYCHO_ERR, freeing nothing, when a worker has not stopped by
 * --drain-timeout plus 5 s (its loop is blocked, e.g. a handler that never
 * returns): the caller must then end the process with _exit. Main thread.
 */
int tycho_workers_stop(struct tycho_worker *ws, int n);

/*
 * Main thread: asks every worker to build the scripts anew as generation
 * `generation` and switch to it between requests. A worker that cannot
 * (out of memory, a script that fails on it) logs why and keeps its
 * generation. Returns the number of workers asked.
 */
int tycho_workers_reload(struct tycho_worker *ws, int n, unsigned long generation);

/*
 * Sets up w on the calling thread without starting a thread (for --request):
 * base, pools, generation. TYCHO_OK, or TYCHO_ERR with err filled.
 */
int tycho_worker_setup(struct tycho_worker *w, int id, struct tycho_shared *shared, char *err);

/* Frees what tycho_worker_setup made, closing any open connection. Owning thread. */
void tycho_worker_teardown(struct tycho_worker *w);

#endif
