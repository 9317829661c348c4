/*
 * worker.h: worker threads. Each worker owns an event_base (NOLOCK), an inbox
 * queue, its script generation and the context its connections take (pools,
 * scratch buffers, counters: http/context.h); only its own thread touches them. Main
 * starts the workers, hands them connections through their inboxes and stops
 * them with a STOP message.
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

struct event_base;
struct event;
struct tycho_gen;
struct tycho_conn;
struct tycho_iplimit;

/* State shared by every thread; counters are atomic, the rest read-only after start. */
struct tycho_shared {
    const struct tycho_config *cfg;
    _Atomic int open_conns;         /* accepted and not yet closed, all workers */
    _Atomic long refused_log_s;     /* rate limit of the "max-conns reached" line */
    _Atomic unsigned long refused;  /* connections refused by --max-conns */
    _Atomic unsigned long refused_ip; /* connections refused by --max-conns-per-ip */
    struct tycho_mq *main_inbox;    /* main's queue for CLOSED; NULL without --max-conns-per-ip */
    /*
     * --max-conns-per-ip's table (the listener's), NULL without it; under
     * per_ip_lock, because workers count --proxy-protocol clients themselves.
     */
    struct tycho_iplimit *per_ip;
    pthread_mutex_t per_ip_lock;    /* initialised by the listener when per_ip is set */
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
    struct tycho_mq inbox;           /* owned; receives NEW_CONN and STOP */
    bool inbox_open;                 /* broadcasts may be pushed to it (under fanout_lock) */
    struct tycho_gen *gen;           /* owned: the current script generation (and retired ones) */
    unsigned long generation;        /* its number: 1 at start, one more per reload */
    struct event *trim_ev;           /* owned: periodic pool trim */
    struct tycho_msg stop_msg;       /* STOP needs no allocation, so stopping cannot fail */
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

/* Hands an accepted fd to worker w (main thread). Closes fd itself if it cannot. */
void tycho_worker_give_conn(struct tycho_worker *w, int fd, const struct sockaddr *peer,
                            socklen_t peer_len, bool tls);

/*
 * Accounts for the close of a connection from peer that the listener counted:
 * the open-connection count, and the per-address count through main's inbox
 * (peer NULL: none, the listener counted no address for it). Any thread.
 */
void tycho_worker_conn_gone(struct tycho_shared *shared, const struct sockaddr *peer);

/*
 * Counts one connection more (add) or fewer from peer in --max-conns-per-ip's
 * table directly, under its lock: for a --proxy-protocol connection, whose
 * client is known only on its worker, after its header. TYCHO_ERR when adding
 * passes the bound (then nothing is counted; it is counted as refused and
 * logged at most once a minute). A no-op without --max-conns-per-ip. Any thread.
 */
int tycho_worker_count_ip(struct tycho_shared *shared, const struct sockaddr *peer, bool add);

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
