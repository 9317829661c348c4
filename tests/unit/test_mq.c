/*
 * test_mq.c: unit tests for mq.[ch] through its public header.
 *
 * Order and the single wake-up for a batch (one thread), STOP messages left
 * alone and queued messages freed by dispose, then 8 producer threads x 10,000
 * messages into a receiver running its own event_base: every message arrives
 * once, in FIFO order per producer, and the receiver frees each one.
 *
 * Messages are `struct tagged` with struct tycho_msg as their first member,
 * so the queue's free() of a RELOAD message frees the whole wrapper. Checks
 * run on the main thread only (the harness is not
 * thread-safe). Ends with the harness line `N passed, M failed`.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/tycho.h"
#include "harness.h"
#include "core/mq.h"

#define PRODUCERS 8
#define PER_PRODUCER 10000

struct tagged {
    struct tycho_msg msg; /* first: the queue frees a RELOAD message through it */
    int producer;
    int seq;
};

/* What the receiver saw; touched only on the receiver's (main) thread. */
struct receiver {
    struct event_base *base;
    long received;
    long expected_total;
    long out_of_order;
    long bad_producer;
    long batches;
    int next_seq[PRODUCERS];
    char order[64];   /* single-thread test: producer ids in arrival order */
};

static struct tagged *new_tagged(int producer, int seq)
{
    struct tagged *t = calloc(1, sizeof(*t));

    if (t) {
        t->msg.type = TYCHO_MSG_RELOAD;
        t->producer = producer;
        t->seq = seq;
    }
    return t;
}

/* The queue callback: checks order and frees every message it is given. */
static void on_messages(struct tycho_msg *list, void *arg)
{
    struct receiver *rc = arg;
    struct tycho_msg *m, *next;

    rc->batches++;
    for (m = list; m; m = next) {
        struct tagged *t = (struct tagged *)m;
        next = m->next;
        if (t->producer < 0 || t->producer >= PRODUCERS) {
            rc->bad_producer++;
        } else {
            if (t->seq != rc->next_seq[t->producer])
                rc->out_of_order++;
            rc->next_seq[t->producer] = t->seq + 1;
            size_t used = strlen(rc->order);
            if (used + 1 < sizeof(rc->order)) {
                rc->order[used] = (char)('0' + t->seq % 10);
                rc->order[used + 1] = '\0';
            }
        }
        rc->received++;
        free(t);
    }
    if (rc->expected_total && rc->received >= rc->expected_total)
        event_base_loopbreak(rc->base);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg); /* only so a lost message cannot hang the suite */
}

static void test_single_thread(void)
{
    struct event_base *base = event_base_new();
    struct receiver rc;
    struct tycho_mq q;
    uint64_t count = 0;
    ssize_t n;

    memset(&rc, 0, sizeof(rc));
    rc.base = base;
    ok(base != NULL, "event_base_new");
    is_int(tycho_mq_init(&q, base, on_messages, &rc), TYCHO_OK, "mq_init");
    ok(q.efd >= 0, "eventfd open");
    for (int i = 0; i < 3; i++) {
        struct tagged *t = new_tagged(0, i);
        is_int(tycho_mq_push(&q, &t->msg), TYCHO_OK, "push");
    }
    /* Only the push onto the empty list signalled. */
    n = read(q.efd, &count, sizeof(count));
    is_int(n, (ssize_t)sizeof(count), "eventfd was signalled");
    is_int(count, 1, "signalled once for three pushes");
    count = 1;
    n = write(q.efd, &count, sizeof(count)); /* put the wake-up back */
    is_int(n, (ssize_t)sizeof(count), "re-signal");
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    is_int(rc.received, 3, "three received");
    is_int(rc.batches, 1, "in one batch");
    is_str(rc.order, "012", "oldest first");
    is_int(rc.out_of_order, 0, "in order");

    /* After the batch the list is empty, so the next push signals again. */
    {
        struct tagged *t = new_tagged(0, 3);
        tycho_mq_push(&q, &t->msg);
    }
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    is_int(rc.received, 4, "a push after a drain wakes the receiver");
    is_int(rc.batches, 2, "second batch");
    /* A wake-up with nothing queued does not call back. */
    count = 1;
    n = write(q.efd, &count, sizeof(count));
    (void)n;
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    is_int(rc.batches, 2, "spurious wake-up: no callback");
    tycho_mq_dispose(&q);
    is_int(q.efd, -1, "dispose closes the eventfd");
    tycho_mq_dispose(&q); /* a second dispose is a no-op */
    event_base_free(base);
}

static void test_dispose_queued(void)
{
    struct event_base *base = event_base_new();
    struct receiver rc;
    struct tycho_mq q, never;
    struct tycho_msg stop;
    struct tagged *a = new_tagged(0, 0), *b = new_tagged(0, 1);

    memset(&rc, 0, sizeof(rc));
    memset(&stop, 0, sizeof(stop));
    rc.base = base;
    tycho_mq_init(&q, base, on_messages, &rc);
    stop.type = TYCHO_MSG_STOP;
    tycho_mq_push(&q, &a->msg);
    tycho_mq_push(&q, &stop);       /* embedded: dispose must not free it */
    tycho_mq_push(&q, &b->msg);
    tycho_mq_dispose(&q);           /* frees a and b (LSan, valgrind) */
    is_int(rc.received, 0, "dispose does not call back");
    is_int(stop.type, TYCHO_MSG_STOP, "the STOP message is left alone");

    memset(&never, 0, sizeof(never));
    never.efd = -1;
    tycho_mq_dispose(&never);       /* never initialised: nothing to do */
    ok(1, "dispose of an uninitialised queue (efd -1)");
    event_base_free(base);
}

struct producer {
    pthread_t thread;
    struct tycho_mq *q;
    int id;
    int push_errors;   /* read by main after join */
    int alloc_errors;
};

static void *produce(void *arg)
{
    struct producer *p = arg;

    for (int i = 0; i < PER_PRODUCER; i++) {
        struct tagged *t = new_tagged(p->id, i);
        if (!t) {
            p->alloc_errors++;
            continue;
        }
        if (tycho_mq_push(p->q, &t->msg) != TYCHO_OK) {
            p->push_errors++;
            free(t);
        }
        if (i % 1000 == 0)
            sched_yield(); /* mix the producers up a little */
    }
    return NULL;
}

static void test_many_producers(void)
{
    struct event_base *base = event_base_new();
    struct producer prod[PRODUCERS];
    struct receiver rc;
    struct tycho_mq q;
    struct event *watchdog;
    struct timeval limit = {30, 0};
    int started = 0, errors = 0, in_order = 1;

    memset(&rc, 0, sizeof(rc));
    rc.base = base;
    rc.expected_total = (long)PRODUCERS * PER_PRODUCER;
    is_int(tycho_mq_init(&q, base, on_messages, &rc), TYCHO_OK, "mq_init");
    watchdog = evtimer_new(base, on_watchdog, base);
    evtimer_add(watchdog, &limit);
    for (int i = 0; i < PRODUCERS; i++) {
        prod[i].q = &q;
        prod[i].id = i;
        prod[i].push_errors = prod[i].alloc_errors = 0;
        if (pthread_create(&prod[i].thread, NULL, produce, &prod[i]) == 0)
            started++;
        else
            break;
    }
    is_int(started, PRODUCERS, "producer threads started");
    if (started == PRODUCERS)
        event_base_dispatch(base);
    for (int i = 0; i < started; i++) {
        pthread_join(prod[i].thread, NULL);
        errors += prod[i].push_errors + prod[i].alloc_errors;
    }
    is_int(errors, 0, "every push returned TYCHO_OK");
    is_int(rc.received, rc.expected_total, "every message received exactly once");
    is_int(rc.bad_producer, 0, "no corrupted message");
    is_int(rc.out_of_order, 0, "FIFO per producer");
    for (int i = 0; i < PRODUCERS; i++)
        in_order &= rc.next_seq[i] == PER_PRODUCER;
    ok(in_order, "each producer's last message arrived last");
    ok(rc.batches >= 1 && rc.batches <= rc.expected_total, "messages arrive in batches");
    printf("# %ld messages in %ld batches\n", rc.received, rc.batches);
    event_free(watchdog);
    tycho_mq_dispose(&q); /* empty by now: closes no fd of ours */
    event_base_free(base);
}

int main(void)
{
    test_single_thread();
    test_dispose_queued();
    test_many_producers();
    return test_summary();
}
