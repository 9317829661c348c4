/*
 * mq.h: the cross-thread message queue. A mutex-protected intrusive list plus
 * an eventfd whose read event lives in the receiver's event_base. Any thread
 * may push; only the receiver's thread runs the callback. The sender allocates
 * each RELOAD and BROADCAST message (and a BROADCAST's payload) and the
 * receiver frees it; ACCEPT and STOP are embedded in the worker.
 */
#ifndef TYCHO_MQ_H
#define TYCHO_MQ_H

#include <pthread.h>
#include <stdbool.h>
#include <sys/socket.h>

struct event_base;
struct event;

enum tycho_msg_type {
    TYCHO_MSG_ACCEPT,   /* start accepting from the listening sockets */
    TYCHO_MSG_STOP,     /* leave the event loop */
    TYCHO_MSG_RELOAD,   /* build the scripts anew as generation `generation` and switch to it */
    TYCHO_MSG_BROADCAST, /* a WebSocket broadcast from another worker: payload */
    TYCHO_MSG_WORK_DONE /* work handed back to its owner: the message is the first member of
                           the owner's job, which the owner's callback knows and frees */
};

struct tycho_msg {
    struct tycho_msg *next;     /* the queue's link */
    enum tycho_msg_type type;
    unsigned long generation;   /* RELOAD */
    void *payload;              /* BROADCAST: owned by the message; the receiver frees it */
};

/* Receives a list of messages, oldest first; the callee frees each one. */
typedef void tycho_mq_fn(struct tycho_msg *list, void *arg);

struct tycho_mq {
    pthread_mutex_t lock;
    struct tycho_msg *head, *tail; /* under lock */
    int efd;                       /* owned eventfd; -1 before init */
    struct event *ev;              /* owned read event in the receiver's base */
    tycho_mq_fn *fn;
    void *arg;
};

/* Sets up the queue in the receiver's base (receiver's thread). TYCHO_OK or TYCHO_ERR. */
int tycho_mq_init(struct tycho_mq *q, struct event_base *base, tycho_mq_fn *fn, void *arg);

/*
 * Queues msg (any thread). The eventfd is signalled only when the list goes
 * from empty to non-empty, after unlocking. Returns TYCHO_OK; on TYCHO_ERR the
 * message was not queued and still belongs to the caller.
 */
int tycho_mq_push(struct tycho_mq *q, struct tycho_msg *msg);

/* Handles what is queued now, without waiting for the event (receiver's thread). */
void tycho_mq_drain(struct tycho_mq *q);

/*
 * Frees queued messages (and the payload of BROADCAST ones) and the event; ACCEPT and STOP
 * messages are not allocated and are left alone. Receiver's thread,
 * after its loop.
 */
void tycho_mq_dispose(struct tycho_mq *q);

#endif
