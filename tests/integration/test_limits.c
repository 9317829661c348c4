/*
 * test_limits.c TYCHO_BINARY FIXTURE_DIR: limits, timeouts, smuggling and
 * the graceful stop, over real sockets against the real binary.
 *
 * The servers here run with short timeouts (a second or so) so that a slow
 * client is cut off quickly. Checks are about what happens (a 408, a close,
 * a Connection: close) and allow several times the configured time for it;
 * none measures speed. Single-threaded; only PIDs this program started are
 * signalled. Ends with `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"

/* Sends s one byte at a time, gap_ms apart, until done, the peer closes or until_ms passes. */
static size_t drip(struct client *c, const char *s, int gap_ms, long long until_ms)
{
    size_t sent = 0, len = strlen(s);

    while (sent < len && now_ms() < until_ms) {
        struct pollfd pfd = {c->fd, POLLIN, 0};
        if (poll(&pfd, 1, 0) > 0)
            break;                  /* the server answered (or closed) */
        if (client_send(c, s + sent, 1) < 0)
            break;
        sent++;
        sleep_ms(gap_ms);
    }
    return sent;
}

/* Slowloris: one header byte every 100 ms is cut off with a 408 at --header-timeout. */
static void test_slowloris(int port)
{
    static const char head[] = "GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow-1: aaaaaaaaaaaaaaaa\r\n"
                               "X-Slow-2: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\r\n\r\n";
    struct client c;
    struct response r;
    size_t sent;

    if (client_connect(&c, port) < 0) {
        ok(0, "slowloris: connect");
        return;
    }
    sent = drip(&c, head, 100, now_ms() + 8000);
    ok(sent < strlen(head), "slowloris: cut off before the whole head was sent");
    read_response(&c, &r, 0);
    expect_status(&r, 408, "slowloris: 408 Request Timeout");
    expect_header(&r, "Connection", "close", "slowloris: Connection: close");
    response_free(&r);
    ok(client_wait_closed(&c, 5000) == 1, "slowloris: connection closed");
    client_close(&c);
}

/* Blank lines dripped before a request do not hold a connection open either. */
static void test_blank_line_drip(int port)
{
    struct client c;
    long long until = now_ms() + 8000;
    int closed = 0;

    if (client_connect(&c, port) < 0) {
        ok(0, "blank lines: connect");
        return;
    }
    while (!closed && now_ms() < until) {
        if (client_sends(&c, "\r\n") < 0)
            closed = 1;
        else
            closed = client_wait_closed(&c, 300) == 1;
    }
    ok(closed, "blank lines dripped every 300 ms are cut off by --header-timeout");
    client_close(&c);
}

/* A body that drips is cut off at --body-timeout. */
static void test_slow_body(int port)
{
    struct client c;
    struct response r;
    char body[101];

    memset(body, 'b', 100);
    body[100] = '\0';
    if (client_connect(&c, port) < 0) {
        ok(0, "slow body: connect");
        return;
    }
    client_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n");
    ok(drip(&c, body, 100, now_ms() + 8000) < 100, "slow body: cut off before the whole body");
    read_response(&c, &r, 0);
    expect_status(&r, 408, "slow body: 408 Request Timeout");
    response_free(&r);
    ok(client_wait_closed(&c, 5000) == 1, "slow body: connection closed");
    client_close(&c);
}

/* A keep-alive connection idle past --idle-timeout, and a new one that sends nothing, close. */
static void test_idle(int port)
{
    struct client c, quiet;
    struct response r;

    if (client_connect(&c, port) < 0 || client_connect(&quiet, port) < 0) {
        ok(0, "idle: connect");
        return;
    }
    exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    expect_status(&r, 200, "idle: first request");
    response_free(&r);
    ok(client_wait_closed(&c, 6000) == 1, "idle keep-alive connection closed by --idle-timeout");
    ok(!c.reset, "idle close is a clean close, not a reset");
    ok(client_wait_closed(&quiet, 6000) == 1,
       "a connection that never sends a request is closed by --header-timeout");
    ok(quiet.len == 0, "nothing is written to a connection that never sent a request");
    client_close(&c);
    client_close(&quiet);
}

/*
 * Several idle connections (--idle-timeout 1.5): each is closed once its own
 * last answer is 1.5 s old, not before, and a request restarts its clock (one
 * timer serves them all, oldest first).
 */
static void test_idle_several(int port)
{
    static const char req[] = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";
    struct client c[3];
    struct response r;
    long long last[3];
    int n = 0;

    for (; n < 3; n++) {
        if (client_connect(&c[n], port) < 0)
            break;
        exchange(&c[n], req, &r);
        last[n] = now_ms();
        expect_status(&r, 200, "idle, several: a request");
        response_free(&r);
        usleep(300 * 1000);
    }
    if (n < 3) {
        ok(0, "idle, several: connect");
        while (n > 0)
            client_close(&c[--n]);
        return;
    }
    exchange(&c[1], req, &r);         /* the middle one's clock starts again */
    last[1] = now_ms();
    expect_status(&r, 200, "idle, several: a second request on the middle one");
    response_free(&r);
    for (int i = 0; i < 3; i++) {
        ok(client_wait_closed(&c[i], 8000) == 1,
           what("idle, several", "connection %d closed by --idle-timeout", i + 1));
        ok(now_ms() - last[i] >= 1400,
           what("idle, several", "connection %d closed 1.5 s after its last answer, not before "
                "(%lld ms)", i + 1, now_ms() - last[i]));
        client_close(&c[i]);
    }
}

/* A client that reads nothing while output waits is closed at --write-timeout. */
static void test_write_timeout(int port)
{
    static const char req[] = "GET /mib HTTP/1.1\r\nHost: t\r\n\r\n";
    char batch[32 * (sizeof(req) - 1)];
    struct client c;
    struct response r;
    int got = 0;

    if (client_connect(&c, port) < 0) {
        ok(0, "write timeout: connect");
        return;
    }
    for (int i = 0; i < 32; i++)
        memcpy(batch + (size_t)i * (sizeof(req) - 1), req, sizeof(req) - 1);
    client_send(&c, batch, sizeof(batch));
    sleep_ms(4000);                 /* --write-timeout is 1 s */
    while (got < 32 && read_response(&c, &r, 0) == 0 && r.status == 200) {
        got++;
        response_free(&r);
    }
    response_free(&r);
    ok(got < 32, "write timeout: a client that does not read is cut off (not all 32 MiB sent)");
    ok(c.closed, "write timeout: connection closed");
    client_close(&c);
    check_get(port, "/hello", 200, "Hello, World!");
}

/* --max-requests-per-conn 3: the third response says Connection: close, then the close. */
static void test_requests_per_conn(int port)
{
    struct client c;
    struct response r;

    if (client_connect(&c, port) < 0) {
        ok(0, "requests per conn: connect");
        return;
    }
    for (int i = 1; i <= 3; i++) {
        exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        expect_status(&r, 200, what("requests per conn", "request %d", i));
        ok((header_get(&r, "Connection") && strcasecmp(header_get(&r, "Connection"), "close") == 0) ==
               (i == 3),
           what("requests per conn", "Connection: close on request %d only if it is the 3rd", i));
        response_free(&r);
    }
    ok(client_wait_closed(&c, 5000) == 1, "requests per conn: closed after the 3rd");
    client_close(&c);

    /*
     * The client pipelines a 4th request behind a large 3rd response: the
     * server closes (lingering), so the whole 3rd response still arrives
     * instead of being cut off by a reset.
     */
    if (client_connect(&c, port) < 0) {
        ok(0, "requests per conn, pipelined: connect");
        return;
    }
    client_sends(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
                     "GET /mib HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(50);
    client_sends(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        read_response(&c, &r, 0);
        expect_status(&r, 200, what("requests per conn, pipelined", "response %d", i + 1));
        if (i == 2)
            is_int(r.body_len, 1048576, "the last response arrives whole (no reset)");
        response_free(&r);
    }
    ok(client_wait_closed(&c, 5000) == 1 && !c.reset,
       "requests per conn, pipelined: then a clean close");
    client_close(&c);
}

/* --max-conn-lifetime 2: after 2 s a response says Connection: close. */
static void test_lifetime(int port)
{
    /* Waits shorter than --idle-timeout (1.5 s), adding up to more than the lifetime (2 s). */
    static const int waits_ms[] = {800, 1300};
    struct client c;
    struct response r;
    const char *conn;

    if (client_connect(&c, port) < 0) {
        ok(0, "lifetime: connect");
        return;
    }
    for (int i = 0; i < 2; i++) {
        sleep_ms(waits_ms[i]);
        exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        expect_status(&r, 200, what("lifetime", "request %d", i + 1));
        conn = header_get(&r, "Connection");
        ok((conn && strcasecmp(conn, "close") == 0) == (i == 1),
           i == 1 ? "a connection older than --max-conn-lifetime gets Connection: close"
                  : "a young connection stays open");
        response_free(&r);
    }
    client_close(&c);
}

/* --max-headers 20: 21 fields is a 431. */
static void test_header_count(int port)
{
    char req[2048];
    size_t n = (size_t)snprintf(req, sizeof(req), "GET /hello HTTP/1.1\r\nHost: t\r\n");
    struct response r;

    for (int i = 0; i < 19; i++)
        n += (size_t)snprintf(req + n, sizeof(req) - n, "X-%d: v\r\n", i);
    snprintf(req + n, sizeof(req) - n, "\r\n");
    fetch(port, req, &r);
    expect_status(&r, 200, "20 header fields (the limit) are fine");
    response_free(&r);
    snprintf(req + n, sizeof(req) - n, "X-Extra: v\r\n\r\n");
    fetch(port, req, &r);
    expect_status(&r, 431, "21 header fields (over --max-headers 20): 431");
    response_free(&r);
}

/*
 * Pipelined requests with a smuggling attempt in the middle: the good one
 * before it is answered, the bad one gets 400 and the connection closes, so
 * nothing after it (the smuggled request) is ever answered.
 */
static void test_smuggling(int port)
{
    static const char *const attacks[] = {
        /* CL and TE together: the classic CL.TE / TE.CL desync. */
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\nX",
        /* Two different Content-Lengths. */
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 30\r\n\r\nhello",
        /* Transfer-Encoding that does not end in chunked. */
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        /* Obsolete line folding hiding a header. */
        "POST /echo HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n"
        "Content-Length: 4\r\n\r\n0\r\n\r\n",
        /* A space before the colon (a header some proxies ignore). */
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n"
        "0\r\n\r\n",
        /* A bad chunk size. */
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        /* A NUL in a header value. */
        "GET /hello HTTP/1.1\r\nHost: t\r\nX-N: a\0b\r\n\r\n",
    };
    /* The NUL attack has a NUL inside: its length (42) is given, the others are strlen. */
    static const size_t attack_lens[] = {0, 0, 0, 0, 0, 0, 42};
    static const char smuggled[] = "GET /hello?smuggled=1 HTTP/1.1\r\nHost: t\r\n\r\n";

    for (size_t i = 0; i < sizeof(attacks) / sizeof(attacks[0]); i++) {
        char buf[1024];
        size_t alen = attack_lens[i] ? attack_lens[i] : strlen(attacks[i]), n = 0;
        struct client c;
        struct response r;
        const char *ctx = what("smuggling", "attack %zu", i + 1);
        char ctx_copy[64];

        snprintf(ctx_copy, sizeof(ctx_copy), "%s", ctx);
        n += (size_t)snprintf(buf, sizeof(buf), "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        memcpy(buf + n, attacks[i], alen);
        n += alen;
        memcpy(buf + n, smuggled, sizeof(smuggled) - 1);
        n += sizeof(smuggled) - 1;
        if (client_connect(&c, port) < 0) {
            ok(0, what(ctx_copy, "connect"));
            continue;
        }
        client_send(&c, buf, n);
        read_response(&c, &r, 0);
        expect_status(&r, 200, what(ctx_copy, "the request before it is answered"));
        response_free(&r);
        read_response(&c, &r, 0);
        expect_status(&r, 400, what(ctx_copy, "the bad request gets 400"));
        response_free(&r);
        ok(client_wait_closed(&c, 5000) == 1 && c.len == 0,
           what(ctx_copy, "then the connection closes with nothing more (no smuggled answer)"));
        client_close(&c);
    }
}

/* --max-conns-per-ip 3: the 4th connection from 127.0.0.1 gets 503; a close frees a place. */
static void test_per_ip(const struct server *s)
{
    struct client cs[3], extra;
    struct response r;
    int served = 0;

    for (int i = 0; i < 3; i++) {
        cs[i].fd = -1;
        if (client_connect(&cs[i], s->port) == 0 &&
            exchange(&cs[i], "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0 && r.status == 200)
            served++;
        response_free(&r);
    }
    is_int(served, 3, "per-ip: three connections served");
    if (client_connect(&extra, s->port) == 0) {
        client_sends(&extra, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
        read_response(&extra, &r, 0);
        expect_status(&r, 503, "per-ip: the 4th connection gets 503");
        expect_header(&r, "Retry-After", "1", "per-ip: Retry-After: 1");
        response_free(&r);
        client_close(&extra);
    }
    ok(wait_for_log(s, "--max-conns-per-ip 3 reached", io_timeout_ms), "per-ip: logged");
    client_close(&cs[0]);
    {
        long long until = now_ms() + 5000;
        int ok_again = 0;
        while (!ok_again && now_ms() < until) {
            if (fetch(s->port, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r) ==
                200)
                ok_again = 1;
            response_free(&r);
            if (!ok_again)
                sleep_ms(100);
        }
        ok(ok_again, "per-ip: after one closes, a new connection is served");
    }
    client_close(&cs[1]);
    client_close(&cs[2]);

    /* One client connecting, asking, closing, again and again, is never over the bound. */
    {
        int refused = 0;
        sleep_ms(200);
        for (int i = 0; i < 200; i++) {
            if (fetch(s->port, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                      &r) == 503)
                refused++;
            response_free(&r);
        }
        is_int(refused, 0, "per-ip: 200 sequential connections, none refused");
    }
}

/*
 * SIGTERM with one request in flight (its body half sent) and one idle
 * keep-alive connection: the idle one is closed at once, the request in
 * flight still gets its whole response (with Connection: close), and the
 * server exits 0.
 */
static void test_drain(struct server *s)
{
    struct client busy, idle;
    struct response r;

    if (client_connect(&busy, s->port) < 0 || client_connect(&idle, s->port) < 0) {
        ok(0, "drain: connect");
        return;
    }
    exchange(&idle, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    expect_status(&r, 200, "drain: idle connection's request");
    response_free(&r);
    client_sends(&busy, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234");
    sleep_ms(300);
    kill(s->pid, SIGTERM);
    ok(client_wait_closed(&idle, 5000) == 1, "drain: the idle keep-alive connection is closed");
    sleep_ms(300);
    client_sends(&busy, "56789");
    read_response(&busy, &r, 0);
    if (expect_status(&r, 200, "drain: the request in flight is answered"))
        expect_body(&r, "0123456789", "drain: its whole body");
    expect_header(&r, "Connection", "close", "drain: with Connection: close");
    response_free(&r);
    is_int(server_stop(s), 0, "drain: exit status 0");
    ok(wait_for_log(s, "SIGTERM: stopping", 0), "drain: logged");
    client_close(&busy);
    client_close(&idle);
}

/* SIGTERM while a client sends nothing more: --drain-timeout ends the wait. */
static void test_drain_timeout(struct server *s)
{
    struct client stuck;
    long long t0;

    if (client_connect(&stuck, s->port) < 0) {
        ok(0, "drain timeout: connect");
        return;
    }
    client_sends(&stuck, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01");
    sleep_ms(200);
    t0 = now_ms();
    is_int(server_stop(s), 0, "drain timeout: exit status 0 with a request stuck in flight");
    note("drain with a stuck request took %lld ms (--drain-timeout 1)", now_ms() - t0);
    ok(wait_for_log(s, "--drain-timeout reached", 0), "drain timeout: logged");
    client_close(&stuck);
}

/* os.exit in a handler is a 500, and the server carries on. */
static void test_os_exit(const struct server *s)
{
    expect_status_of(s->port, "GET /exit HTTP/1.1\r\nHost: t\r\n\r\n", 500,
                     "os.exit in a handler: 500");
    ok(wait_for_log(s, "os.exit is disabled", io_timeout_ms), "os.exit: logged");
    check_get(s->port, "/hello", 200, "Hello, World!");
}

/*
 * A handler that never returns blocks its worker; SIGTERM must still end
 * the process (status 1, after --drain-timeout plus 5 s), not hang.
 */
static void test_stuck_worker(struct server *s)
{
    struct client c;
    int status = 0, exited = 0;
    long long until;

    if (client_connect(&c, s->port) < 0) {
        ok(0, "stuck worker: connect");
        return;
    }
    client_sends(&c, "GET /spin HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(n_wrap ? 3000 : 300);      /* until the worker is inside the handler */
    kill(s->pid, SIGTERM);
    /* Under valgrind a thread spinning in Lua delays the exit by many seconds. */
    until = now_ms() + (n_wrap ? 180000 : 20000);
    while (now_ms() < until && !exited) {
        exited = waitpid(s->pid, &status, WNOHANG) == s->pid;
        if (!exited)
            sleep_ms(100);
    }
    /* Under a wrapper (valgrind) the memory the stuck worker holds is reported, changing the status. */
    ok(exited && WIFEXITED(status) && (WEXITSTATUS(status) == 1 || n_wrap),
       "a worker stuck in a handler: the process still exits (status 1) after SIGTERM");
    if (exited && WIFEXITED(status))
        note("stuck worker: exit status %d", WEXITSTATUS(status));
    else if (exited && WIFSIGNALED(status))
        note("stuck worker: ended by signal %d", WTERMSIG(status));
    else
        note("stuck worker: still running %lld ms after SIGTERM", now_ms() - (until -
             (n_wrap ? 180000 : 20000)));
    if (!exited) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &status, 0);
    }
    s->pid = -1;
    running_pid = -1;
    ok(wait_for_log(s, "did not stop in time", 0), "stuck worker: logged");
    client_close(&c);
}

int main(int argc, char **argv)
{
    struct server s;
    int rc;

    if (suite_setup(argc, argv))
        return 2;

    /* ---- short timeouts and small bounds ---- */
    {
        const char *args[] = {"--port", "0", "--workers", "1", "--header-timeout", "1",
                              "--body-timeout", "1", "--idle-timeout", "1.5", "--write-timeout",
                              "1", "--max-requests-per-conn", "3", "--max-conn-lifetime", "2",
                              "--max-headers", "20", fixture_dir, NULL};
        rc = server_start(&s, args);
        ok(rc == 0, "server with short timeouts starts");
    }
    if (rc == 0) {
        test_slowloris(s.port);
        test_blank_line_drip(s.port);
        test_slow_body(s.port);
        test_idle(s.port);
        test_idle_several(s.port);
        test_write_timeout(s.port);
        test_requests_per_conn(s.port);
        test_lifetime(s.port);
        test_header_count(s.port);
        test_smuggling(s.port);
        /* the server is still serving after all of it */
        check_get(s.port, "/hello", 200, "Hello, World!");
        is_int(server_stop(&s), 0, "short-timeout server: exit status 0");
        ok(log_has_line(&s, "timeouts", NULL), "stop line counts the timeouts");
    }
    server_cleanup(&s);

    /* ---- per-address bound ---- */
    {
        const char *args[] = {"--port", "0", "--workers", "2", "--max-conns-per-ip", "3",
                              fixture_dir, NULL};
        rc = server_start(&s, args);
        ok(rc == 0, "server with --max-conns-per-ip 3 starts");
    }
    if (rc == 0) {
        test_per_ip(&s);
        is_int(server_stop(&s), 0, "per-ip server: exit status 0");
    }
    server_cleanup(&s);

    /* ---- graceful stop ---- */
    {
        const char *args[] = {"--port", "0", "--workers", "1", "--drain-timeout", "5",
                              fixture_dir, NULL};
        rc = server_start(&s, args);
        ok(rc == 0, "server for the drain starts");
    }
    if (rc == 0)
        test_drain(&s);
    server_cleanup(&s);
    {
        const char *args[] = {"--port", "0", "--workers", "1", "--drain-timeout", "1",
                              "--body-timeout", "30", fixture_dir, NULL};
        rc = server_start(&s, args);
        ok(rc == 0, "server for the drain timeout starts");
    }
    if (rc == 0)
        test_drain_timeout(&s);
    server_cleanup(&s);
    {
        const char *args[] = {"--port", "0", "--workers", "1", "--drain-timeout", "0.5",
                              fixture_dir, NULL};
        rc = server_start(&s, args);
        ok(rc == 0, "server for the stuck worker starts");
    }
    if (rc == 0) {
        test_os_exit(&s);
        test_stuck_worker(&s);
    }
    server_cleanup(&s);

    free(wrap_copy);
    return test_summary();
}
