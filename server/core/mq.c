/*
 * mq.c: mutex + intrusive list + eventfd. The receiver swaps the whole list
 * out under the lock and handles it unlocked.
 */
#include "core/mq.h"
#include "core/tycho.h"

#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

void tycho_mq_drain(struct tycho_mq *q)
{
    struct tycho_msg *list;

    pthread_mutex_lock(&q->lock);
    list = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->lock);
    if (list)
        q->fn(list, q->arg);
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    uint64_t count;

    (void)what;
    /* EAGAIN only means another wake-up already drained the counter. */
    if (read(fd, &count, sizeof(count)) < 0)
        count = 0;
    tycho_mq_drain(arg);
}

int tycho_mq_init(struct tycho_mq *q, struct event_base *base, tycho_mq_fn *fn, void *arg)
{
    q->head = q->tail = NULL;
    q->fn = fn;
    q->arg = arg;
    q->ev = NULL;
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q->efd < 0)
        return TYCHO_ERR;
    if (pthread_mutex_init(&q->lock, NULL) != 0)
        goto err;
    q->ev = event_new(base, q->efd, EV_READ | EV_PERSIST, on_signal, q);
    if (!q->ev || event_add(q->ev, NULL) < 0)
        goto err_lock;
    return TYCHO_OK;
err_lock:
    if (q->ev)
        event_free(q->ev);
    q->ev = NULL;
    pthread_mutex_destroy(&q->lock);
err:
    close(q->efd);
    q->efd = -1;
    return TYCHO_ERR;
}

int tycho_mq_push(struct tycho_mq *q, struct tycho_msg *msg)
{
    uint64_t one = 1;
    int was_empty;

    msg->next = NULL;
    pthread_mutex_lock(&q->lock);
    was_empty = q->head == NULL;
    if (q->tail)
        q->tail->next = msg;
    else
        q->head = msg;
    q->tail = msg;
    pthread_mutex_unlock(&q->lock);
    /* A failed write can only be EAGAIN (counter full): the receiver wakes anyway. */
    if (was_empty && write(q->efd, &one, sizeof(one)) < 0)
        return TYCHO_OK;
    return TYCHO_OK;
}

void tycho_mq_dispose(struct tycho_mq *q)
{
    struct tycho_msg *m, *next;

    if (q->efd < 0)
        return;
    for (m = q->head; m; m = next) {
        next = m->next;
        if (m->type == TYCHO_MSG_BROADCAST)
            free(m->payload);         /* a broadcast that came as the worker stopped */
        if (m->type != TYCHO_MSG_STOP && m->type != TYCHO_MSG_ACCEPT &&
            m->type != TYCHO_MSG_WORK_DONE)
            free(m);                  /* WORK_DONE: the owner drains its queue before this */
    }
    q->head = q->tail = NULL;
    event_free(q->ev);
    q->ev = NULL;
    pthread_mutex_destroy(&q->lock);
    close(q->efd);
    q->efd = -1;
}
