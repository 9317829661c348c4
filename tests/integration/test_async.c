/*
 * test_async.c TYCHO_BINARY FIXTURE_DIR: handlers and timers that wait
 * (tycho.sleep), over real sockets against the real binary, one worker so
 * that waiting must not block other requests. Times are reported, never
 * asserted. Ends with `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"

#include <poll.h>

/*
 * Many concurrent requests to a handler that sleeps 0.5 s, on one worker:
 * all get 200. The wall time is printed (about half a second if the worker
 * serves the others while each sleeps).
 */
static void test_concurrent_sleep(int port, int n)
{
    struct client *cs = calloc((size_t)n, sizeof(*cs));
    struct response r;
    int sent = 0, good = 0, early = 0;
    long long t0 = now_ms();

    if (!cs) {
        ok(0, "concurrent sleep: memory");
        return;
    }
    for (int i = 0; i < n; i++) {
        if (client_connect(&cs[i], port) == 0 &&
            client_sends(&cs[i], "GET /sleep?s=0.5 HTTP/1.1\r\nHost: t\r\n\r\n") == 0)
            sent++;
    }
    for (int i = 0; i < n; i++) {
        if (read_response(&cs[i], &r, 0) == 0 && r.status == 200 &&
            strncmp(r.body, "slept 0.5", 9) == 0) {
            good++;
            early += strstr(r.body, "EARLY") != NULL;
        }
        response_free(&r);
        client_close(&cs[i]);
    }
    free(cs);
    is_int(sent, n, "concurrent sleep: all requests sent");
    is_int(good, n, "concurrent sleep: all answered 200 after sleeping");
    is_int(early, 0, "concurrent sleep: none woke before its time");
    printf("# %d concurrent requests sleeping 0.5 s on one worker took %lld ms\n", n,
           now_ms() - t0);
}

/* Pipelined: a sleeping request, then a quick one: responses in order, on the same connection. */
static void test_pipelined_sleep(int port)
{
    struct client c;
    struct response r;

    if (client_connect(&c, port) < 0) {
        ok(0, "pipelined sleep: connect");
        return;
    }
    client_sends(&c, "GET /sleep?s=0.2 HTTP/1.1\r\nHost: t\r\n\r\n"
                     "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
                     "GET /sleep-twice HTTP/1.1\r\nHost: t\r\n\r\n");
    read_response(&c, &r, 0);
    if (expect_status(&r, 200, "pipelined sleep: first"))
        ok(strncmp(r.body, "slept 0.2", 9) == 0, "pipelined sleep: the sleeping one comes first");
    response_free(&r);
    read_response(&c, &r, 0);
    if (expect_status(&r, 200, "pipelined sleep: second"))
        expect_body(&r, "Hello, World!", "pipelined sleep: then the quick one");
    response_free(&r);
    read_response(&c, &r, 0);
    if (expect_status(&r, 200, "pipelined sleep: third")) {
        expect_header(&r, "X-Slept-In-Middleware", "yes", "sleeping in middleware and handler");
        expect_body(&r, "{\"worker\":1}", "sleep-twice body");
    }
    response_free(&r);
    exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    expect_status(&r, 200, "pipelined sleep: the connection keeps serving");
    response_free(&r);
    client_close(&c);
}

static void test_timers(const struct server *s)
{
    struct response r;
    long long until = now_ms() + 5000;
    int ticks = 0, workers = 0;

    while (now_ms() < until && ticks < 3) {
        if (fetch(s->port, "GET /ticks HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 200)
            sscanf(r.body, "%d %d", &ticks, &workers);
        response_free(&r);
        sleep_ms(100);
    }
    ok(ticks >= 3, "timer.every from on_worker_start keeps ticking");
    is_int(workers, 1, "on_worker_start ran once in the worker");
    ok(wait_for_log(s, "on_worker_start ran id 1", io_timeout_ms),
       "tycho.log.info joins its arguments with spaces");

    if (fetch(s->port, "GET /timers HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 200)
        expect_body(&r, "ran=1 cancelled_ran=false slept=true",
                    "after() runs once, a cancelled timer never runs, a timer may sleep");
    else
        ok(0, "GET /timers: 200");
    response_free(&r);

    expect_status_of(s->port, "GET /timer-error HTTP/1.1\r\nHost: t\r\n\r\n", 200,
                     "scheduling a failing timer");
    ok(wait_for_log(s, "timer: ", io_timeout_ms) && wait_for_log(s, "boom in a timer", 0),
       "an error in a timer is logged");
    ok(wait_for_log(s, "50_async.lua:", 0), "... with file:line");
    check_get(s->port, "/hello", 200, "Hello, World!");
}

static void test_errors(const struct server *s)
{
    expect_status_of(s->port, "GET /sleep-then-fail HTTP/1.1\r\nHost: t\r\n\r\n", 500,
                     "an error after sleeping is a 500");
    ok(wait_for_log(s, "failed after sleeping", io_timeout_ms), "... and logged");
    expect_status_of(s->port, "GET /bad-sleep HTTP/1.1\r\nHost: t\r\n\r\n", 500,
                     "tycho.sleep(-1) is a 500");
    ok(wait_for_log(s, "tycho.sleep: expected seconds", io_timeout_ms), "... explained");
    expect_status_of(s->port, "GET /nested-sleep HTTP/1.1\r\nHost: t\r\n\r\n", 500,
                     "tycho.sleep in a coroutine of the script's own is a 500");
    ok(wait_for_log(s, "not inside a coroutine the script made", io_timeout_ms),
       "... explained");
}

/* tycho.sleep that cannot yield leaves nothing armed: later sleeps all work. */
static void test_sleep_in_c_call(const struct server *s)
{
    expect_status_of(s->port, "GET /sleep-in-sort HTTP/1.1\r\nHost: t\r\n\r\n", 500,
                     "tycho.sleep inside a table.sort comparator: 500");
    ok(wait_for_log(s, "yield across", io_timeout_ms), "... explained (yield across a C call)");
    sleep_ms(200);                     /* past when a wrongly armed wake-up would fire */
    test_concurrent_sleep(s->port, 20);
}

/* A client that leaves while its handler sleeps: the handler is abandoned. */
static void test_abandoned(const struct server *s)
{
    struct client c;

    if (client_connect(&c, s->port) == 0) {
        client_sends(&c, "GET /sleep-log?tag=abandoned HTTP/1.1\r\nHost: t\r\n\r\n");
        sleep_ms(50);
        client_close(&c);
    }
    expect_status_of(s->port, "GET /sleep-log?tag=kept HTTP/1.1\r\nHost: t\r\n\r\n", 200,
                     "a handler whose client stays finishes");
    ok(wait_for_log(s, "sleep-log finished kept", io_timeout_ms), "... and logs");
    ok(!log_has_line(s, "sleep-log finished abandoned", NULL),
       "a handler whose client left while it slept is abandoned (never resumed)");
}

/* A client that leaves while its handler sleeps: the worker carries on. */
static void test_client_leaves(int port)
{
    for (int i = 0; i < 20; i++) {
        struct client c;
        if (client_connect(&c, port) < 0)
            continue;
        client_sends(&c, "GET /sleep?s=0.2 HTTP/1.1\r\nHost: t\r\n\r\n");
        client_close(&c);
    }
    sleep_ms(400);
    check_get(port, "/hello", 200, "Hello, World!");
}

/* SIGTERM while a handler sleeps: its response still arrives; exit 0. */
static void test_stop_while_sleeping(struct server *s)
{
    struct client c;
    struct response r;

    if (client_connect(&c, s->port) < 0) {
        ok(0, "stop while sleeping: connect");
        return;
    }
    client_sends(&c, "GET /sleep?s=0.5 HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(100);
    kill(s->pid, SIGTERM);
    read_response(&c, &r, 0);
    if (expect_status(&r, 200, "stop while sleeping: the sleeping request is answered"))
        expect_header(&r, "Connection", "close", "stop while sleeping: with Connection: close");
    response_free(&r);
    is_int(server_stop(s), 0, "stop while sleeping: exit status 0");
    client_close(&c);
}

/* 200 concurrent requests of 100 increments each, on every worker: the sum is exact. */
static void test_concurrent_incr(int port)
{
    enum { N = 200 };
    struct client cs[N];
    struct response r;
    int good = 0;

    for (int i = 0; i < N; i++) {
        cs[i].fd = -1;
        if (client_connect(&cs[i], port) == 0)
            client_sends(&cs[i], "POST /incr-many HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    }
    for (int i = 0; i < N; i++) {
        if (cs[i].fd >= 0 && read_response(&cs[i], &r, 0) == 0 && r.status == 200)
            good++;
        response_free(&r);
        client_close(&cs[i]);
    }
    is_int(good, N, "concurrent incr: every request answered");
    if (fetch(port, "GET /incr-many HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 200)
        expect_body(&r, "20000", "concurrent incr from all workers: the sum is exact");
    else
        ok(0, "GET /incr-many: 200");
    response_free(&r);
}

/* tycho.shared.dict, across two workers. */
static void test_shared_dict(int port)
{
    struct response r;
    int last = 0, seen1 = 0, seen2 = 0;

    for (int i = 0; i < 20; i++) {
        int n = 0, worker = 0;
        if (fetch(port, "GET /hits HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 200 &&
            sscanf(r.body, "%d %d", &n, &worker) == 2) {
            last = n;
            seen1 |= worker == 1;
            seen2 |= worker == 2;
        }
        response_free(&r);
    }
    is_int(last, 20, "shared dict: incr from both workers counts every request");
    ok(seen1 && seen2, "shared dict: both workers answered");

    expect_status_of(port, "POST /kv/greeting HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
                     200, "shared dict: set");
    for (int i = 0; i < 4; i++) {
        if (fetch(port, "GET /kv/greeting HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 200)
            expect_body(&r, "hello", "shared dict: every worker reads what one stored");
        else
            ok(0, "shared dict: get 200");
        response_free(&r);
    }
    expect_status_of(port,
                     "POST /kv/brief?ttl=0.3 HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx",
                     200, "shared dict: set with a ttl");
    expect_status_of(port, "GET /kv/brief HTTP/1.1\r\nHost: t\r\n\r\n", 200,
                     "shared dict: there before its ttl");
    sleep_ms(800);
    expect_status_of(port, "GET /kv/brief HTTP/1.1\r\nHost: t\r\n\r\n", 404,
                     "shared dict: gone after its ttl");
    if (fetch(port, "GET /kv-types HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 200)
        expect_body(&r, "tycho 3 1.5 false false exists not a number not found",
                    "shared dict: tables, numbers, booleans; add, incr errors");
    else
        ok(0, "GET /kv-types: 200");
    response_free(&r);
    if (fetch(port, "GET /incr-too-big HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 200)
        expect_body(&r, "nil too big: the entry is larger than the dictionary's share",
                    "shared dict: incr of an entry over the bound is refused");
    else
        ok(0, "GET /incr-too-big: 200");
    response_free(&r);
    if (fetch(port, "GET /evict HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 200) {
        int live = 0;
        char newest[8] = "", oldest[8] = "";
        sscanf(r.body, "%d %7s %7s", &live, newest, oldest);
        ok(live > 0 && live < 200, "shared dict: 2000 entries into a 16 KiB dictionary keep < 200");
        is_str(newest, "true", "shared dict: the newest entry stays");
        is_str(oldest, "false", "shared dict: the oldest entry was evicted");
        note("16 KiB dictionary after 2000 sets of 100-byte values: %d entries", live);
    } else {
        ok(0, "GET /evict: 200");
    }
    response_free(&r);
}


/*
 * A handler may wait longer than the read timeouts: they are for a client
 * sending, not for the server working. With --header-timeout 1 and
 * --idle-timeout 1, a handler sleeping 2.5 s answers, on a connection's
 * first request and on a later one (the timer armed for reading used to stay);
 * and when the next request comes while it sleeps (libevent used to arm the
 * reading's timeout again on that readable event, and the connection closed
 * after 1 s with neither answer).
 */
static void test_wait_past_timeouts(void)
{
    const char *args[] = {"--port", "0", "--workers", "1", "--header-timeout", "1",
                          "--idle-timeout", "1", fixture_dir, NULL};
    struct server s;
    struct client c;
    struct response r;

    if (server_start(&s, args) != 0) {
        ok(0, "server with 1 s timeouts starts");
        return;
    }
    if (client_connect(&c, s.port) == 0) {
        exchange(&c, "GET /sleep?s=2.5 HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        expect_status(&r, 200, "a first request waiting past --header-timeout");
        response_free(&r);
        exchange(&c, "GET /sleep?s=2.5 HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        expect_status(&r, 200, "a second request waiting past --idle-timeout");
        response_free(&r);
        client_sends(&c, "GET /sleep?s=2.5 HTTP/1.1\r\nHost: t\r\n\r\n");
        usleep(300 * 1000);           /* the handler sleeps: the next request comes meanwhile */
        client_sends(&c, "GET /sleep?s=0 HTTP/1.1\r\nHost: t\r\n\r\n");
        read_response(&c, &r, 0);
        expect_status(&r, 200, "a request waiting past --idle-timeout, the next one sent meanwhile");
        response_free(&r);
        read_response(&c, &r, 0);
        expect_status(&r, 200, "the request sent while the one before waited");
        response_free(&r);
        client_close(&c);
    } else {
        ok(0, "a connection");
    }
    is_int(server_stop(&s), 0, "1 s timeouts: exit status 0");
    server_cleanup(&s);
}

int main(int argc, char **argv)
{
    struct server s;
    int rc, n = 500;

    if (suite_setup(argc, argv))
        return 2;
    if (n_wrap)
        n = 100;                        /* under valgrind */
    raise_fd_limit(2048);
    {
        const char *args[] = {"--port", "0", "--workers", "1", fixture_dir, NULL};
        rc = server_start(&s, args);
        ok(rc == 0, "server (one worker) starts");
    }
    if (rc == 0) {
        test_concurrent_sleep(s.port, n);
        test_pipelined_sleep(s.port);
        test_timers(&s);
        test_errors(&s);
        test_client_leaves(s.port);
        test_sleep_in_c_call(&s);
        test_abandoned(&s);
        test_stop_while_sleeping(&s);
    }
    server_cleanup(&s);
    {
        const char *args[] = {"--port", "0", "--workers", "2", fixture_dir, NULL};
        rc = server_start(&s, args);
        ok(rc == 0, "server (two workers) starts");
    }
    if (rc == 0) {
        test_shared_dict(s.port);
        test_concurrent_incr(s.port);
        is_int(server_stop(&s), 0, "two-worker server: exit status 0");
    }
    server_cleanup(&s);
    test_wait_past_timeouts();
    free(wrap_copy);
    return test_summary();
}
