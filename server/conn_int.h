/*
 * conn_int.h: the inside of a client connection, shared by conn.c (reading,
 * parsing, writing, timeouts, closing) and answer.c (what the server answers
 * itself, --health and --metrics, and the accounting at the end of every
 * request: access log and metrics). Nothing else includes it. A connection
 * belongs to its worker's thread.
 */
#ifndef TYCHO_CONN_INT_H
#define TYCHO_CONN_INT_H

#include "buf.h"
#include "http.h"

#include <event2/event_struct.h>
#include <stdbool.h>
#include <sys/types.h>
#include <time.h>

struct tycho_worker;

struct tycho_conn {
    void *_pool_next;                  /* the pool's link while free */
    struct tycho_worker *w;            /* borrowed: the owning worker */
    struct tycho_conn *prev, *next;    /* the worker's list of open connections */
    struct tycho_req *req;             /* from the worker's pool while a request is in progress */
    struct tycho_buf *local_out;       /* borrowed: --request output, else NULL */
    int fd;                            /* owned; -1 for --request */
    unsigned nrequests;                /* answered on this connection */
    short ev_what;                     /* EV_READ or EV_WRITE: what ev waits for; 0: none */
    unsigned char timer;               /* TIMER_*: what ev's timeout stands for now */
    unsigned char peer_family;         /* AF_INET or AF_INET6 */
    bool closing;                      /* close once pending output is written */
    bool peer_eof;                     /* the client closed its side */
    bool linger;                       /* input may still be coming: close lingering */
    bool lingering;                    /* write side shut; dropping input until EOF or timeout */
    bool nodelay;                      /* TCP_NODELAY is set */
    bool started;                      /* bytes of the next request came (blank lines too) */
    bool waiting;                      /* its handler waits (tycho.sleep); nothing is read */
    bool sending_file;                 /* file_fd is open and its bytes are the next output */
    int file_fd;                       /* owned while sending_file: a file body (app.static) */
    off_t file_off;                    /* the next file byte to send */
    size_t file_left;                  /* file bytes still to send */
    unsigned char peer_addr[16];
    time_t linger_until;               /* lingering ends by then, however much keeps coming */
    long born_ms;                      /* when it was accepted (worker clock) */
    long req_started_ms;               /* when the next request's first bytes came */
    long body_started_ms;              /* when its head was complete; 0 before */
    long write_wait_ms;                /* when output began to wait; 0 when none waits */
    struct event ev;                   /* embedded, so a connection is one allocation */
    struct tycho_http http;            /* parser state */
    struct tycho_buf pending;          /* owned: output the socket has not taken */
    struct tycho_buf input;            /* owned: read but not parsed yet (back-pressure) */
};

/* Where responses go now: after pending output, so order is kept (conn.c). */
struct tycho_buf *tycho_conn_out(struct tycho_conn *c);

/* Records what was sent for c's request (access log): status, and the bytes since `before`. */
void tycho_conn_note_sent(struct tycho_conn *c, int status, size_t before);

/* Answers a request the server handles itself (errors, 404, 405) with the reason as body. */
void tycho_conn_answer_simple(struct tycho_conn *c, int status, const char *extra, bool keep_alive,
                              bool with_body);

/* The end of every request: accounting, keep-alive or close, the context back to its pool. */
void tycho_conn_end_request(struct tycho_conn *c, bool keep_alive);

/* Whether the connection stays open after this request (before the handler's say). */
bool tycho_conn_keeps_alive(struct tycho_conn *c);

/* "X-Request-Id: ID\r\n" for r into buf (cap >= 150), returned; "" when r has no id. */
const char *tycho_conn_id_line(const struct tycho_req *r, char *buf, size_t cap);

/* answer.c: the monotonic clock in microseconds (request durations). */
long long tycho_conn_now_us(void);

/* answer.c: answers c's request if it is --health or --metrics; returns whether it did. */
bool tycho_conn_answer_builtin(struct tycho_conn *c);

/* answer.c: the access log line and the metrics of c's request, which has been answered. */
void tycho_conn_account(struct tycho_conn *c);

#endif
