/*
 * test_connpool.c: unit tests for net/connpool.[ch] through its public
 * header, with a fake driver whose connections are plain structs the test
 * opens, fails and closes by hand, on a real libevent loop (run without
 * blocking, for what the pool does from the loop).
 *
 * Both kinds of pool: connections the pool's (PostgreSQL, Redis: a new one
 * goes to the first waiter, connects settle the breaker) and per_call (HTTP:
 * a connection made for a caller is that caller's, the callers' results
 * settle the breaker, one half-open trial at a time, a retry passes the
 * breaker). Also: idle reuse, the idle check, drop, the bounded queue, cancel.
 * Pools count no metrics (worker -1). Single-threaded. Ends with the
 * harness line `N passed, M failed`.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "core/log.h"
#include "core/tycho.h"
#include "harness.h"
#include "net/connpool.h"

struct fconn {
    struct tycho_pconn pc;          /* first */
    bool alive;
};

static struct fconn *opened_conns[32];
static int nopened, nclosed;

static struct tycho_pconn *f_open(struct tycho_connpool *p, void *arg)
{
    struct fconn *c = calloc(1, sizeof(*c));

    (void)p;
    (void)arg;
    c->alive = true;
    opened_conns[nopened++] = c;
    return &c->pc;
}

static void f_close(struct tycho_pconn *pc)
{
    nclosed++;
    for (int i = 0; i < nopened; i++)
        if (opened_conns[i] == (struct fconn *)pc)
            opened_conns[i] = NULL;
    free(pc);
}

static bool f_alive(struct tycho_pconn *pc)
{
    return ((struct fconn *)pc)->alive;
}

static const struct tycho_connpool_driver fake = {f_open, f_close, f_alive};

/* A caller: what the pool answered. */
struct caller {
    struct tycho_pwaiter w;         /* first */
    struct tycho_pconn *conn;
    char err[64];
    int answers;
};

static void on_got(struct tycho_pwaiter *w, struct tycho_pconn *c, const char *err)
{
    struct caller *k = (struct caller *)w;

    k->answers++;
    k->conn = c;
    snprintf(k->err, sizeof(k->err), "%s", err ? err : "");
}

static struct event_base *base;

static void run_loop(void)
{
    event_base_loop(base, EVLOOP_NONBLOCK);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static struct tycho_connpool *pool_new(unsigned max_conns, unsigned max_failures, bool per_call)
{
    struct tycho_connpool_opts o;
    struct tycho_connpool *p;

    tycho_connpool_opts_default(&o);
    o.max_conns = max_conns;
    o.max_waiting = 1;
    o.max_failures = max_failures;
    o.cooldown = 0.05;
    p = tycho_connpool_new("test", &o, &fake, NULL, base, -1);
    if (p && per_call)
        tycho_connpool_set_per_call(p);
    nopened = nclosed = 0;
    return p;
}

static struct fconn *last_opened(void)
{
    return nopened ? opened_conns[nopened - 1] : NULL;
}

static const char *circuit(struct tycho_connpool *p)
{
    struct tycho_connpool_stats s;

    tycho_connpool_inspect(p, &s);
    return s.circuit;
}

/* per_call: each connection goes to the caller it was made for; reuse; the queue. */
static void test_per_call_owners(void)
{
    struct tycho_connpool *p = pool_new(2, 5, true);
    struct caller a = {0}, b = {0}, q = {0}, r = {0};
    struct tycho_connpool_stats s;
    struct fconn *ca, *cb;

    tycho_connpool_acquire(p, &a.w, on_got);
    ca = last_opened();
    tycho_connpool_acquire(p, &b.w, on_got);
    cb = last_opened();
    is_int(nopened, 2, "per_call: a connection is made for each caller");
    ok(a.w.conn == &ca->pc && b.w.conn == &cb->pc, "per_call: each knows the one made for it");
    tycho_connpool_inspect(p, &s);
    is_int(s.waiting, 0, "per_call: a caller whose connection is being made is not queued");
    tycho_connpool_acquire(p, &q.w, on_got);
    tycho_connpool_inspect(p, &s);
    is_int(s.waiting, 1, "per_call: a third caller queues");
    tycho_connpool_acquire(p, &r.w, on_got);
    is_str(r.err, "pool exhausted", "per_call: past max_waiting, refused at once");

    tycho_connpool_opened(&cb->pc, NULL);
    ok(b.conn == &cb->pc && a.answers == 0 && q.answers == 0,
       "per_call: the second connection goes to its own caller, not the first in line");
    tycho_connpool_opened(&ca->pc, "connect refused");
    is_str(a.err, "connect refused", "per_call: a failed connect fails the caller it was for");
    ok(a.w.connect_failed, "per_call: and says the error is the driver's");
    is_int(q.answers, 0, "per_call: the queued caller is not served from inside the close");
    is_str(circuit(p), "closed", "per_call: a connect failure alone does not count");
    run_loop();
    is_int(nopened, 3, "per_call: from the loop, the queued caller gets a connection of its own");
    tycho_connpool_opened(&last_opened()->pc, NULL);
    ok(q.conn == &last_opened()->pc && !q.w.connect_failed, "per_call: and is answered with it");
    tycho_connpool_ended(p, &b.w, NULL, false);
    tycho_connpool_release(b.conn, true);
    tycho_connpool_inspect(p, &s);
    is_int(s.idle, 1, "per_call: a released connection idles");
    memset(&a, 0, sizeof(a));
    tycho_connpool_acquire(p, &a.w, on_got);
    ok(a.conn == &cb->pc && cb->pc.uses == 2, "per_call: an idle connection is reused");
    tycho_connpool_release(a.conn, false);
    tycho_connpool_release(q.conn, true);
    tycho_connpool_free(p);
    is_int(nclosed, 3, "per_call: every connection closed");
}

/* per_call: giving up while a connection is made for it closes that connection. */
static void test_per_call_cancel(void)
{
    struct tycho_connpool *p = pool_new(1, 5, true);
    struct caller a = {0}, q = {0};

    tycho_connpool_acquire(p, &a.w, on_got);
    tycho_connpool_acquire(p, &q.w, on_got);
    tycho_connpool_cancel(&a.w);
    is_int(nclosed, 1, "cancel: the connection being made for the caller is closed");
    ok(a.w.conn == NULL && a.answers == 0, "cancel: the caller is never answered");
    run_loop();
    is_int(nopened, 2, "cancel: the freed place goes to the queued caller, from the loop");
    tycho_connpool_cancel(&q.w);
    tycho_connpool_free(p);
    is_int(nclosed, 2, "cancel: nothing left open");
}

/* per_call: the callers' results drive the breaker; one trial at a time; a retry passes. */
static void test_per_call_breaker(void)
{
    struct tycho_connpool *p = pool_new(4, 2, true);
    struct caller a = {0}, b = {0}, t = {0}, u = {0}, old = {0};

    tycho_connpool_acquire(p, &old.w, on_got);      /* a call still under way meanwhile */
    tycho_connpool_opened(&last_opened()->pc, NULL);
    tycho_connpool_acquire(p, &a.w, on_got);
    tycho_connpool_opened(&last_opened()->pc, NULL);
    tycho_connpool_release(a.conn, true);
    tycho_connpool_ended(p, &a.w, "HOST:PORT: read timeout", true);
    is_str(circuit(p), "closed", "breaker: one failure of two");
    tycho_connpool_ended(p, &a.w, NULL, false);
    tycho_connpool_ended(p, &a.w, "x", true);
    is_str(circuit(p), "closed", "breaker: a success in between starts the count again");
    tycho_connpool_ended(p, &a.w, "y", true);
    is_str(circuit(p), "open", "breaker: two failures in a row open it");
    tycho_connpool_acquire(p, &b.w, on_got);
    is_str(b.err, "circuit open", "breaker: open, a caller is refused at once");
    ok(!b.w.connect_failed, "breaker: the refusal is the pool's");
    tycho_connpool_ended(p, &b.w, b.err, false);

    sleep_ms(60);
    tycho_connpool_acquire(p, &t.w, on_got);
    ok(t.answers == 1 && t.conn, "half-open: after the cooldown one caller, the trial, goes");
    is_str(circuit(p), "half-open", "half-open: while the trial is under way");
    tycho_connpool_acquire(p, &u.w, on_got);
    is_str(u.err, "circuit open", "half-open: others are refused while the trial is under way");
    tycho_connpool_ended(p, &u.w, u.err, false);
    tycho_connpool_ended(p, &old.w, "z", true);
    is_str(circuit(p), "half-open", "half-open: a failure of an older call decides nothing");
    tycho_connpool_release(t.conn, false);          /* the trial's request goes again */
    tycho_connpool_retry(p, &t.w, on_got);
    ok(t.w.conn != NULL, "half-open: the trial's retry is not stopped by the breaker");
    tycho_connpool_opened(&last_opened()->pc, NULL);
    tycho_connpool_ended(p, &t.w, "HOST:PORT: connect timeout", true);
    is_str(circuit(p), "open", "half-open: the trial's failure opens it again");
    tycho_connpool_release(t.conn, false);

    sleep_ms(60);
    memset(&t, 0, sizeof(t));
    tycho_connpool_acquire(p, &t.w, on_got);
    tycho_connpool_cancel(&t.w);                    /* the trial's caller leaves */
    tycho_connpool_ended(p, &t.w, "abandoned", false);
    memset(&u, 0, sizeof(u));
    tycho_connpool_acquire(p, &u.w, on_got);
    ok(u.w.conn != NULL, "half-open: a trial with no verdict lets the next caller try");
    tycho_connpool_opened(&last_opened()->pc, NULL);
    tycho_connpool_release(u.conn, true);
    tycho_connpool_ended(p, &u.w, NULL, false);
    is_str(circuit(p), "closed", "half-open: a successful trial closes it");
    tycho_connpool_release(old.conn, false);
    tycho_connpool_free(p);
}

/* Connections the pool's: a new one to the first waiter; connects settle the breaker. */
static void test_fifo(void)
{
    struct tycho_connpool *p = pool_new(2, 1, false);
    struct caller a = {0}, b = {0}, c = {0};
    struct fconn *first, *second;

    tycho_connpool_acquire(p, &a.w, on_got);
    first = last_opened();
    tycho_connpool_acquire(p, &b.w, on_got);
    second = last_opened();
    ok(a.w.conn == NULL && nopened == 2, "fifo: connections are made for the queue");
    tycho_connpool_opened(&second->pc, NULL);
    ok(a.conn == &second->pc && b.answers == 0,
       "fifo: the first ready one goes to the first waiter");
    tycho_connpool_opened(&first->pc, "cannot connect");
    is_str(b.err, "cannot connect", "fifo: a failed connect fails the first waiter");
    ok(b.w.connect_failed, "fifo: and says so");
    is_str(circuit(p), "open", "fifo: a connect failure counts (max_failures 1)");
    tycho_connpool_release(a.conn, true);
    sleep_ms(60);
    tycho_connpool_acquire(p, &c.w, on_got);
    ok(c.conn == &second->pc, "fifo: half-open, the idle connection serves");
    is_str(circuit(p), "half-open", "fifo: and the breaker waits for a verdict");
    tycho_connpool_succeeded(p);
    is_str(circuit(p), "closed", "fifo: the driver's success closes it");
    tycho_connpool_release(c.conn, true);
    tycho_connpool_free(p);
    is_int(nclosed, 2, "fifo: every connection closed");
}

/* Connections the pool's: a caller left while its connection was made; the next one may wait. */
static void test_fifo_left(void)
{
    struct tycho_connpool *p = pool_new(1, 5, false);
    struct caller a = {0}, b = {0};
    struct tycho_connpool_stats s;

    tycho_connpool_acquire(p, &a.w, on_got);
    tycho_connpool_cancel(&a.w);
    tycho_connpool_acquire(p, &b.w, on_got);
    tycho_connpool_inspect(p, &s);
    ok(b.answers == 0 && s.waiting == 1, "fifo: a caller queues for the connection under way");
    tycho_connpool_opened(&last_opened()->pc, NULL);
    ok(b.conn != NULL, "fifo: and gets it");
    tycho_connpool_release(b.conn, true);
    tycho_connpool_free(p);
}

/* The check before reuse: a dead idle connection is closed, the caller gets a new one. */
static void test_idle_check(void)
{
    struct tycho_connpool *p = pool_new(2, 5, true);
    struct caller a = {0}, b = {0};
    struct fconn *c;

    tycho_connpool_acquire(p, &a.w, on_got);
    c = last_opened();
    tycho_connpool_opened(&c->pc, NULL);
    tycho_connpool_release(a.conn, true);
    c->alive = false;
    tycho_connpool_acquire(p, &b.w, on_got);
    ok(b.answers == 0 && nclosed == 1 && nopened == 2,
       "idle check: a closed idle connection is replaced");
    tycho_connpool_cancel(&b.w);
    tycho_connpool_free(p);
}

/* The driver drops an idle connection the server closed: it is gone from the counts at once. */
static void test_drop(void)
{
    struct tycho_connpool *p = pool_new(2, 5, true);
    struct caller a = {0};
    struct tycho_connpool_stats s;

    tycho_connpool_acquire(p, &a.w, on_got);
    tycho_connpool_opened(&last_opened()->pc, NULL);
    tycho_connpool_release(a.conn, true);
    tycho_connpool_drop(a.conn);
    tycho_connpool_inspect(p, &s);
    ok(s.open == 0 && s.idle == 0 && nclosed == 1, "drop: the idle connection is closed now");
    tycho_connpool_free(p);
}

int main(void)
{
    tycho_log_min_level = TYCHO_LOG_ERROR;    /* the breaker's lines are expected */
    base = event_base_new();
    if (!base)
        return 1;
    test_per_call_owners();
    test_per_call_cancel();
    test_per_call_breaker();
    test_fifo();
    test_fifo_left();
    test_idle_check();
    test_drop();
    event_base_free(base);
    return test_summary();
}
