/*
 * worker.h: worker threads. Each worker owns an event_base (NOLOCK), an inbox
 * queue, its connection and request pools, its read and write scratch
 * buffers and its script generation; only its own thread touches them. Main
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

#include "buf.h"
#include "config.h"
#include "metrics.h"
#include "mq.h"
#include "pool.h"

struct event_base;
struct event;
struct tycho_gen;
struct tycho_conn;

/* State shared by every thread; counters are atomic, the rest read-only after start. */
struct tycho_shared {
    const struct tycho_config *cfg;
    _Atomic int open_conns;         /* accepted and not yet closed, all workers */
    _Atomic long refused_log_s;     /* rate limit of the "max-conns reached" line */
    _Atomic unsigned long refused;  /* connections refused by --max-conns */
    _Atomic unsigned long refused_ip; /* connections refused by --max-conns-per-ip */
    struct tycho_mq *main_inbox;    /* main's queue for CLOSED; NULL without --max-conns-per-ip */
    _Atomic unsigned long reloads;  /* script reloads that succeeded (main writes) */
    _Atomic unsigned long reload_failures; /* and failed */
    _Atomic unsigned long generation; /* the generation being served */
};

struct tycho_worker {
    int id;                          /* 1..N; 0 for the in-process --request worker */
    const struct tycho_config *cfg;  /* borrowed, read-only */
    struct tycho_shared *shared;     /* borrowed */
    pthread_t thread;
    struct event_base *base;         /* owned */
    struct tycho_mq inbox;           /* owned; receives NEW_CONN and STOP */
    struct tycho_pool conn_pool;     /* of struct tycho_conn */
    struct tycho_pool req_pool;      /* of struct tycho_req */
    struct tycho_gen *gen;           /* owned: the current script generation (and retired ones) */
    unsigned long generation;        /* its number: 1 at start, one more per reload */
    char *rbuf;                      /* owned read scratch, TYCHO_READ_BYTES */
    struct tycho_buf out;            /* write scratch: responses of the connection being served */
    struct tycho_conn *conns;        /* open connections (list through conn links) */
    struct event *trim_ev;           /* owned: periodic pool trim */
    struct tycho_msg stop_msg;       /* STOP needs no allocation, so stopping cannot fail */
    unsigned long requests;          /* requests answered (for the stop log line) */
    unsigned long long next_request_id; /* generated X-Request-Id: random start, then +1 */
    struct tycho_buf access_buf;     /* access log lines not yet written */
    struct event *access_ev;         /* owned: writes them out every second */
    unsigned long timeouts;          /* requests or writes cut off by a timeout */
    struct tycho_worker_stats stats; /* its metrics counters (read by the scrape) */
    struct event *metrics_ev;        /* owned: samples the gauges each second (--metrics) */
    unsigned metrics_round;          /* sampling rounds so far */
    bool draining;                   /* stopping: no new requests, in-flight ones finish */
    struct event *drain_ev;          /* owned: ends the drain at --drain-timeout */
    const struct timeval *first_tv;  /* common timeouts (libevent): --header-timeout, */
    const struct timeval *idle_tv;   /* --idle-timeout, */
    const struct timeval *write_tv;  /* --write-timeout */
    time_t date_sec;                 /* second date_line was made for */
    char date_line[48];              /* "Date: ...\r\n" */
    /* start-up report, under the start lock */
    int start_rc;
    char start_err[TYCHO_ERR_LEN];
};

#define TYCHO_READ_BYTES (64 * 1024)

/*
 * Starts n workers and waits until each has loaded its scripts. On failure
 * stops the ones that started and returns NULL with err filled. Main thread.
 */
struct tycho_worker *tycho_workers_start(int n, struct tycho_shared *shared, char *err);

/* Hands an accepted fd to worker w (main thread). Closes fd itself if it cannot. */
void tycho_worker_give_conn(struct tycho_worker *w, int fd, const struct sockaddr *peer,
                            socklen_t peer_len);

/*
 * Accounts for the close of a connection from peer that the listener counted:
 * the open-connection count, and the per-address count through main's inbox.
 * Any thread.
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

/* Milliseconds on the worker's clock (the event loop's cached time). Owning thread. */
long tycho_worker_now_ms(struct tycho_worker *w);

/* The "Date: ...\r\n" line for now, cached per second. Owning thread. */
const char *tycho_worker_date(struct tycho_worker *w);

#endif
