/*
 * test_upstream.c TYCHO_BINARY FIXTURE_DIR: outbound calls (tycho.http)
 * from handlers and timers to backends that this test runs on loopback
 * (backend.h), through the per-worker pools: reuse and the pool bound,
 * backends that close idle connections, connection lifetime, a backend
 * going down and the circuit breaker, the wait queue, a client leaving
 * mid-call, and every misuse error. The fixture is FIXTURE_DIR/../upstream.
 * One worker, so that one pool serves every request. Times are reported,
 * never asserted. Ends with `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"
#include "backend.h"

static struct backend backend_a, backend_b, backend_c;
static int blackhole_fd = -1, blackhole_port;    /* listens, never accepts, queue full */
static int blackhole_clients[4] = {-1, -1, -1, -1};

/* GET path on a new connection; returns the status (0: no response). */
static int get(int port, const char *path, struct response *r)
{
    char req[512];

    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    return fetch(port, req, r);
}

/* A number field of a JSON object body ("name":N), or -1. */
static long json_number(const char *body, const char *name)
{
    char key[64];
    const char *p;

    snprintf(key, sizeof key, "\"%s\":", name);
    p = body ? strstr(body, key) : NULL;
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

/* tycho.http.stats for backend b ("a", "b", "c"), field name; host "localhost" or NULL. */
static long stat_of(int port, const char *b, const char *host, const char *name)
{
    char path[128];
    struct response r;
    long v;

    snprintf(path, sizeof path, "/stats/%s%s%s", b, host ? "?host=" : "", host ? host : "");
    get(port, path, &r);
    v = r.status == 200 ? json_number(r.body, name) : -1;
    response_free(&r);
    return v;
}

static int stat_circuit_is(int port, const char *b, const char *state)
{
    struct response r;
    char want[64];
    int yes;

    snprintf(want, sizeof want, "\"circuit\":\"%s\"", state);
    get(port, b, &r);
    yes = r.status == 200 && strstr(r.body, want) != NULL;
    if (!yes)
        note("stats: %s", r.body ? r.body : "(none)");
    response_free(&r);
    return yes;
}

static void test_responses(int port, int backend_port)
{
    struct response r;
    char want[128];

    check_get(port, "/via/a/hello", 200, "hello");
    fetch(port, "POST /post/a HTTP/1.1\r\nHost: t\r\nX-Test: hi\r\nContent-Length: 3\r\n\r\nabc", &r);
    snprintf(want, sizeof want, "POST abc x-test=hi host=127.0.0.1:%d", backend_port);
    if (expect_status(&r, 200, "post"))
        expect_body(&r, want, "post: method, body, a header and Host reach the backend");
    response_free(&r);
    check_get(port, "/put/a", 200, "PUT put-body x-test=one,two host=example.test");
    check_get(port, "/via/a/chunked", 200, "hello");
    check_get(port, "/via/a/eof", 200, "until eof");
    check_get(port, "/via/a/close", 200, "closing");
    check_get(port, "/via/a/interim", 200, "after interim");
    check_get(port, "/head/a", 200, "200 5 0");
    get(port, "/via/a/status/503", &r);
    if (expect_status(&r, 200, "a backend 503 is a response, not an error"))
        expect_header(&r, "X-Backend-Status", "503", "backend status");
    response_free(&r);
    get(port, "/via/a/no-content", &r);
    if (expect_status(&r, 200, "backend 204"))
        expect_header(&r, "X-Backend-Status", "204", "backend 204 status");
    response_free(&r);
    get(port, "/via/a/nope", &r);
    expect_header(&r, "X-Backend-Status", "404", "backend 404");
    response_free(&r);
    get(port, "/via/a/big/300000", &r);
    if (expect_status(&r, 200, "300 kB body"))
        is_int((long)r.body_len, 300000, "300 kB body arrives whole");
    response_free(&r);
    get(port, "/headers/a", &r);
    if (expect_status(&r, 200, "headers")) {
        ok(strstr(r.body, "\"cookie\":\"a=1, b=2\"") != NULL, "repeated fields are joined");
        ok(strstr(r.body, "\"multi\":\"one, two\"") != NULL, "names are matched case-insensitively");
        ok(strstr(r.body, "\"length\":\"5\"") != NULL, "header names are lower case");
    }
    response_free(&r);
    check_get(port, "/three/a", 200, "hello,hello,hello");
    get(port, "/via/a/not-modified", &r);
    if (expect_status(&r, 200, "304 with Content-Length"))
        expect_header(&r, "X-Backend-Status", "304", "a 304 has no body, whatever its length says");
    response_free(&r);
    get(port, "/via/a/switch", &r);
    ok(r.status == 502 && strstr(r.body, "switched protocols (101); upgrades are not supported"),
       "a 101 is an error, at once");
    response_free(&r);
    check_get(port, "/query/a", 200, "/?x=1&y=2");
    /* Bytes after a response: that connection is not reused (else the next call reads "sneak"). */
    check_get(port, "/via/a/extra", 200, "extra");
    for (int i = 0; i < 5; i++)
        check_get(port, "/via/a/hello", 200, "hello");
}

/*
 * Responses with framing a lenient parser would take (backend.h's
 * /lenient/N): the call fails as an invalid response, the backend connection
 * is closed at once (a pooled one would stay open until its idle timeout, 60
 * s by default), and the next calls get their own answers.
 */
static void test_lenient_backend(int port)
{
    char path[64], what_[96];

    for (int i = 0; i < BACKEND_LENIENT_COUNT; i++) {
        struct response r;
        int closed = atomic_load(&backend_a.lenient_closed);
        long long deadline = now_ms() + 6000;

        snprintf(path, sizeof path, "/via/a/lenient/%d", i);
        get(port, path, &r);
        snprintf(what_, sizeof what_, "lenient response %d: the call fails (502)", i);
        ok(r.status == 502 && r.body && strstr(r.body, "invalid response"), what_);
        if (r.status != 502)
            dump_response(&r);
        response_free(&r);
        while (atomic_load(&backend_a.lenient_closed) == closed && now_ms() < deadline)
            sleep_ms(10);
        snprintf(what_, sizeof what_, "lenient response %d: the backend connection is closed", i);
        ok(atomic_load(&backend_a.lenient_closed) == closed + 1, what_);
        for (int k = 0; k < 3; k++)
            check_get(port, "/via/a/hello", 200, "hello");
    }
}

/*
 * The backend closes a reused connection as the next request arrives: an
 * idempotent call is sent once more and succeeds; a POST gets the error.
 */
static void test_retry(int port)
{
    long requests = stat_of(port, "a", NULL, "requests");
    long failures = stat_of(port, "a", NULL, "failures");
    struct response r;

    check_get(port, "/via/a/then-drop", 200, "then-drop");
    check_get(port, "/via/a/hello", 200, "hello");
    is_int(stat_of(port, "a", NULL, "requests"), requests + 3,
           "retry: the GET was sent twice (once on the dropped connection)");
    is_int(stat_of(port, "a", NULL, "failures"), failures, "retry: and did not fail");
    check_get(port, "/via/a/then-drop", 200, "then-drop");
    fetch(port, "POST /post/a HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx", &r);
    ok(r.status == 502 && strstr(r.body, "the backend closed the connection"),
       "retry: a POST is not sent again");
    response_free(&r);
}

/* The backend closes an idle connection while the worker is busy: the check before reuse sees it. */
static void test_liveness(int port)
{
    long requests = stat_of(port, "a", NULL, "requests");
    long failures = stat_of(port, "a", NULL, "failures");

    check_get(port, "/liveness/a", 200, "soon,hello");
    is_int(stat_of(port, "a", NULL, "requests"), requests + 2,
           "liveness: the closed connection was not used (no request lost, no retry)");
    is_int(stat_of(port, "a", NULL, "failures"), failures, "liveness: no failure");
}

/* A connect that never completes: connect_timeout (0.3 s for d) ends it. */
static void test_connect_timeout(int port)
{
    struct response r;
    long long t0 = now_ms();

    get(port, "/via/d/hello", &r);
    ok(r.status == 502 && strstr(r.body, "connect timeout"), "connect_timeout ends a hanging connect");
    if (!r.body || !strstr(r.body, "connect timeout"))
        note("got: %s", r.body ? r.body : "(no response)");
    response_free(&r);
    printf("# a connect to a full listen queue with connect_timeout 0.3 s took %lld ms\n",
           now_ms() - t0);
}

/* A listening socket whose queue is full: further connects get no answer. */
static int blackhole_start(void)
{
    struct sockaddr_in sa = {0};
    socklen_t sl = sizeof sa;

    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    blackhole_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (blackhole_fd < 0 || bind(blackhole_fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(blackhole_fd, 0) < 0 ||
        getsockname(blackhole_fd, (struct sockaddr *)&sa, &sl) < 0)
        return -1;
    blackhole_port = ntohs(sa.sin_port);
    for (int i = 0; i < 4; i++) {
        blackhole_clients[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (blackhole_clients[i] >= 0)
            connect(blackhole_clients[i], (struct sockaddr *)&sa, sizeof sa);
    }
    backend_sleep_ms(50);
    return 0;
}

/* The call an on_worker_start timer made. */
static void test_timer_call(int port)
{
    struct response r;
    long long deadline = now_ms() + 3000;

    for (;;) {
        get(port, "/timer-result", &r);
        if (r.status != 200 || strcmp(r.body, "pending") != 0 || now_ms() > deadline)
            break;
        response_free(&r);
        backend_sleep_ms(20);
    }
    if (expect_status(&r, 200, "timer result"))
        expect_body(&r, "200 hello", "a timer's outbound call");
    response_free(&r);
}

/*
 * n sequential proxied requests on one keep-alive connection: every one
 * answered, and the backend sees at most the pool size of connections.
 */
static void test_sequential(int port, int n)
{
    struct client c;
    struct response r;
    int good = 0, before = atomic_load(&backend_a.accepted);
    long long t0 = now_ms();

    if (client_connect(&c, port) < 0) {
        ok(0, "sequential: connect");
        return;
    }
    for (int i = 0; i < n; i++) {
        exchange(&c, "GET /via/a/hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        good += r.status == 200 && strcmp(r.body, "hello") == 0;
        response_free(&r);
    }
    client_close(&c);
    is_int(good, n, "sequential proxied requests all answered");
    ok(atomic_load(&backend_a.accepted) - before <= 4,
       "sequential: the backend saw at most the pool size (4) of new connections");
    ok(stat_of(port, "a", NULL, "open") <= 4, "sequential: at most 4 connections open");
    ok(stat_of(port, "a", NULL, "reused") >= n - 4, "sequential: connections are reused");
    printf("# %d sequential proxied requests: %lld ms, %d new backend connections\n", n,
           now_ms() - t0, atomic_load(&backend_a.accepted) - before);
}

/* Many clients at once: the pool bound holds at the backend, everyone is answered. */
static void test_concurrent(int port, int clients, int rounds)
{
    struct client *cs = calloc((size_t)clients, sizeof(*cs));
    struct response r;
    int good = 0;

    atomic_store(&backend_a.max_open, atomic_load(&backend_a.open));
    for (int round = 0; cs && round < rounds; round++) {
        for (int i = 0; i < clients; i++)
            if (client_connect(&cs[i], port) == 0)
                client_sends(&cs[i], "GET /via/a/slow/5 HTTP/1.1\r\nHost: t\r\n\r\n");
        for (int i = 0; i < clients; i++) {
            good += read_response(&cs[i], &r, 0) == 0 && r.status == 200;
            response_free(&r);
            client_close(&cs[i]);
        }
    }
    free(cs);
    is_int(good, clients * rounds, "concurrent proxied requests all answered");
    ok(atomic_load(&backend_a.max_open) <= 4, "concurrent: never more than 4 backend connections");
    note("concurrent: at most %d backend connections at once", atomic_load(&backend_a.max_open));
    is_int(stat_of(port, "a", NULL, "waiting"), 0, "concurrent: nobody left in the queue");
}

/* The backend closes its idle connections: the next calls still succeed, on new ones. */
static void test_backend_closes_idle(int port)
{
    long connects, failures = stat_of(port, "a", NULL, "failures");

    check_get(port, "/via/a/hello", 200, "hello");
    connects = stat_of(port, "a", NULL, "connects");
    backend_close_idle(&backend_a);
    is_int(atomic_load(&backend_a.open), 0, "the backend closed every idle connection");
    check_get(port, "/via/a/hello", 200, "hello");
    check_get(port, "/via/a/hello", 200, "hello");
    is_int(stat_of(port, "a", NULL, "connects"), connects + 1,
           "a closed idle connection is replaced by one new connection");
    is_int(stat_of(port, "a", NULL, "failures"), failures, "and no call failed");
}

/* A pool with max_lifetime 0.3 s (through "localhost", which needs a lookup). */
static void test_lifetime(int port)
{
    check_get(port, "/via/a/hello?host=localhost", 200, "hello");
    check_get(port, "/via/a/hello?host=localhost", 200, "hello");
    is_int(stat_of(port, "a", "localhost", "connects"), 1, "lifetime: young connection reused");
    backend_sleep_ms(400);
    check_get(port, "/via/a/hello?host=localhost", 200, "hello");
    is_int(stat_of(port, "a", "localhost", "connects"), 2,
           "lifetime: a connection older than max_lifetime is replaced");
    is_int(stat_of(port, "a", "localhost", "open"), 1, "lifetime: the old one is closed");
}

/* Calls to b while it is down: errors, then the breaker; then b is back. */
static void test_backend_down(int port)
{
    struct response r;
    long long t0;
    int bport = backend_b.port;

    check_get(port, "/via/b/hello", 200, "hello");
    backend_stop(&backend_b);
    for (int i = 0; i < 3; i++) {
        get(port, "/via/b/hello", &r);
        if (expect_status(&r, 502, "backend down"))
            ok(strstr(r.body, "connect") != NULL, "backend down: the error says connect");
        note("backend down: %s", r.body ? r.body : "");
        response_free(&r);
    }
    ok(stat_circuit_is(port, "/stats/b", "open"), "three failures open the circuit");
    t0 = now_ms();
    check_get(port, "/via/b/hello", 502, "error: circuit open");
    printf("# a call with the circuit open took %lld ms\n", now_ms() - t0);

    /* The cooldown passes while b is still down: the trial fails, the circuit opens again. */
    backend_sleep_ms(600);
    get(port, "/via/b/hello", &r);
    ok(r.status == 502 && strstr(r.body, "connect") != NULL, "half-open: the trial call is made");
    response_free(&r);
    check_get(port, "/via/b/hello", 502, "error: circuit open");

    /* b is back: after the cooldown the trial succeeds and closes the circuit. */
    if (backend_start(&backend_b, bport) < 0) {
        ok(0, "backend b restarts on its port");
        return;
    }
    backend_sleep_ms(600);
    check_get(port, "/via/b/hello", 200, "hello");
    ok(stat_circuit_is(port, "/stats/b", "closed"), "a successful trial closes the circuit");
    check_get(port, "/via/b/hello", 200, "hello");

    /* A backend that never answers: the call's timeout ends it. */
    t0 = now_ms();
    check_get(port, "/via/b/hang?timeout=0.3", 502, "error: timeout");
    printf("# a call with timeout 0.3 s to a silent backend took %lld ms\n", now_ms() - t0);
    check_get(port, "/via/b/hello", 200, "hello");
    {
        char want[96];
        snprintf(want, sizeof want, "error: 127.0.0.1:%d: read timeout", bport);
        check_get(port, "/via/b/hang", 502, want);    /* b's read_timeout: 0.5 s */
    }
    check_get(port, "/via/b/hello", 200, "hello");
}

/* Pool c has one connection and one waiting place (wait_timeout 0.2 s). */
static void test_pool_exhausted(int port)
{
    struct client cs[3];
    struct response r;
    int served = 0, exhausted = 0;

    for (int i = 0; i < 3; i++) {
        if (client_connect(&cs[i], port) == 0)
            client_sends(&cs[i], "GET /via/c/slow/600 HTTP/1.1\r\nHost: t\r\n\r\n");
        backend_sleep_ms(20);   /* in this order */
    }
    for (int i = 0; i < 3; i++) {
        if (read_response(&cs[i], &r, 0) == 0) {
            served += r.status == 200 && strcmp(r.body, "slow") == 0;
            exhausted += r.status == 502 && strcmp(r.body, "error: pool exhausted") == 0;
        }
        response_free(&r);
        client_close(&cs[i]);
    }
    is_int(served, 1, "pool of one: one call is served");
    is_int(exhausted, 2, "pool of one: the waiter times out, the one past the queue is refused");
    check_get(port, "/via/c/hello", 200, "hello");
}

/* Responses past the bounds are errors, and the connection is not reused. */
static void test_response_bounds(int port, int c_port, int a_port)
{
    char want[128];

    snprintf(want, sizeof want, "error: 127.0.0.1:%d: response body over 1000 bytes", c_port);
    check_get(port, "/via/c/big/2000", 502, want);
    {
        struct response r;
        get(port, "/via/c/big/1000", &r);
        ok(r.status == 200 && r.body_len == 1000, "a body of exactly max_body arrives");
        response_free(&r);
    }
    snprintf(want, sizeof want, "error: 127.0.0.1:%d: response has over 128 header fields", a_port);
    check_get(port, "/via/a/many-headers", 502, want);
    check_get(port, "/via/a/hello", 200, "hello");
}

/* A client leaves while its handler waits on the backend: nothing is left behind. */
static void test_client_leaves(int port)
{
    struct client c;
    long open;

    if (client_connect(&c, port) < 0) {
        ok(0, "client leaves: connect");
        return;
    }
    client_sends(&c, "GET /via/a/slow/400 HTTP/1.1\r\nHost: t\r\n\r\n");
    backend_sleep_ms(100);
    client_close(&c);
    backend_sleep_ms(700);
    open = stat_of(port, "a", NULL, "open");
    is_int(open, stat_of(port, "a", NULL, "idle"), "client left: no backend connection stays busy");
    open += stat_of(port, "a", "localhost", "open");   /* the other pool to the same backend */
    is_int(atomic_load(&backend_a.open), (int)open,
           "client left: the abandoned backend connection was closed");
    check_get(port, "/via/a/hello", 200, "hello");
}

static void test_misuse(int port)
{
    static const struct {
        const char *kind, *want;
    } cases[] = {
        {"https", "app.lua:83: tycho.http.get: only http:// and https:// urls are supported, not "
                  "ftp://"},
        {"crlf", "tycho.http.get: header X: the value has a CR, LF or NUL byte"},
        {"length", "tycho.http.post: header Content-Length is set from the body; do not give it"},
        {"method", "tycho.http.request: method 'GE T' is not a valid token"},
        {"timeout", "tycho.http.get: timeout must be seconds, more than 0 and at most 31536000"},
        {"notable", "tycho.http.request: expected a table {url=, method=, headers=, body=, timeout=}"},
        {"relative", "tycho.http.get: not an absolute http:// or https:// url: /just/a/path"},
        {"option", "tycho.http.pool: unknown option 'max_conn'"},
        {"hostport", "tycho.http.pool: expected \"host:port\" or \"https://host[:port]\", got "
                     "\"127.0.0.1\""},
        {"coroutine", "app.lua:92: tycho.http.get: not inside a coroutine the script made itself"},
        {"upgrade", "tycho.http.get: header Upgrade: protocol upgrades are not supported"},
        {"hosttwice", "tycho.http.get: header Host is given twice"},
        {"connect", "tycho.http.request: method CONNECT is not supported"},
        {"zerotimeout", "tycho.http.pool: read_timeout must be more than 0"},
    };
    char path[64];
    struct response r;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(path, sizeof path, "/misuse/%s", cases[i].kind);
        get(port, path, &r);
        if (expect_status(&r, 200, path)) {
            char name[96];
            snprintf(name, sizeof name, "misuse: %s", cases[i].kind);
            ok(strstr(r.body, cases[i].want) != NULL, name);
            if (!strstr(r.body, cases[i].want))
                note("got: %s", r.body);
        }
        response_free(&r);
    }
}

/* A call while the scripts load is refused with a clear message. */
static void test_load_time_call(void)
{
    char dir[] = "/tmp/tycho-test-upstream-XXXXXX", cmd[512], out[2048];
    FILE *f;

    if (!mkdtemp(dir)) {
        ok(0, "load time: mkdtemp");
        return;
    }
    snprintf(cmd, sizeof cmd, "%s/app.lua", dir);
    if ((f = fopen(cmd, "w"))) {
        fputs("local r = tycho.http.get('http://127.0.0.1:9/')\n", f);
        fclose(f);
    }
    snprintf(cmd, sizeof cmd, "timeout 20 %s --port 0 %s 2>&1", tycho_binary, dir);
    ok(run_command(cmd, out, sizeof out) != 0,
       "load time: a call while the scripts load stops start-up");
    ok(strstr(out, "app.lua:1: tycho.http.get: only in a handler, middleware or timer, not "
                   "while the scripts load") != NULL,
       "load time: the error names the line and says where calls may be made");
    if (!strstr(out, "app.lua:1: tycho.http.get"))
        note("got: %s", out);
    snprintf(cmd, sizeof cmd, "%s/app.lua", dir);
    unlink(cmd);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    struct server s;
    char dir[4096], env[32];
    int rc, n = 10000;

    if (suite_setup(argc, argv))
        return 2;
    if (n_wrap)
        n = 1000;                       /* under valgrind */
    raise_fd_limit(2048);
    snprintf(dir, sizeof dir, "%s/../upstream", fixture_dir);
    rc = backend_start(&backend_a, 0) | backend_start(&backend_b, 0) | backend_start(&backend_c, 0);
    ok(rc == 0, "three backends listen on loopback");
    if (rc != 0)
        return test_summary();
    snprintf(env, sizeof env, "%d", backend_a.port);
    setenv("TYCHO_TEST_BACKEND_A", env, 1);
    snprintf(env, sizeof env, "%d", backend_b.port);
    setenv("TYCHO_TEST_BACKEND_B", env, 1);
    snprintf(env, sizeof env, "%d", backend_c.port);
    setenv("TYCHO_TEST_BACKEND_C", env, 1);
    ok(blackhole_start() == 0, "a listening socket with a full queue");
    snprintf(env, sizeof env, "%d", blackhole_port);
    setenv("TYCHO_TEST_BACKEND_D", env, 1);
    {
        const char *args[] = {"--port", "0", "--workers", "1", dir, NULL};
        rc = server_start(&s, args);
        ok(rc == 0, "server (one worker) starts");
    }
    if (rc == 0) {
        test_responses(s.port, backend_a.port);
        test_lenient_backend(s.port);
        test_timer_call(s.port);
        test_sequential(s.port, n);
        test_concurrent(s.port, 64, n_wrap ? 2 : 10);
        test_backend_closes_idle(s.port);
        test_retry(s.port);
        test_liveness(s.port);
        test_connect_timeout(s.port);
        test_lifetime(s.port);
        test_backend_down(s.port);
        test_pool_exhausted(s.port);
        test_response_bounds(s.port, backend_c.port, backend_a.port);
        test_client_leaves(s.port);
        test_misuse(s.port);
        is_int(server_stop(&s), 0, "server: exit status 0 after SIGTERM");
    }
    server_cleanup(&s);
    test_load_time_call();
    backend_stop(&backend_a);
    backend_stop(&backend_b);
    backend_stop(&backend_c);
    for (int i = 0; i < 4; i++)
        if (blackhole_clients[i] >= 0)
            close(blackhole_clients[i]);
    close(blackhole_fd);
    free(wrap_copy);
    return test_summary();
}
