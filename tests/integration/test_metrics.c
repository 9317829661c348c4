/*
 * test_metrics.c TYCHO_BINARY FIXTURE_DIR: --metrics over real sockets.
 * A known sequence of requests, then the scrape must show exactly those
 * counts (by route, method and status class, over two workers), the bytes
 * that went both ways, the rejections by reason, Lua errors, a script's own
 * metrics of every kind, backend pool counts, reloads; `promtool check
 * metrics` must accept the output; --metrics-addr serves it on its own
 * listener; --metrics-max-series bounds a metric. The fixture is
 * FIXTURE_DIR/../metrics. Ends with `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"
#include "backend.h"


#include <math.h>
#include <sys/stat.h>
#include <sys/wait.h>

static char app_dir[4096];

/* GET /metrics on port: the exposition (malloc'd), or NULL. *len gets its length. */
static char *scrape(int port, const char *path)
{
    char req[256];
    struct response r;
    char *text = NULL;

    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    if (fetch(port, req, &r) == 200) {
        text = malloc(r.body_len + 1);
        if (text) {
            memcpy(text, r.body, r.body_len);
            text[r.body_len] = '\0';
        }
    }
    response_free(&r);
    return text;
}

/* The value of the sample `series` (name and labels exactly as exposed), or NAN when absent. */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);

    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = nl ? nl + 1 : NULL;
    }
    return NAN;
}

/* Checks one sample's value; prints the expected and actual value on failure. */
#define is_sample(text, series, want, what)                                                  \
    do {                                                                                     \
        double g_ = sample((text), (series)), w_ = (want);                                   \
        if (!test_check(g_ == w_, __FILE__, __LINE__, (what)))                               \
            printf("     %s: got %g, want %g\n", (series), g_, w_);                         \
    } while (0)

/* Scrapes until series has value want (sampled gauges move each second). */
static double wait_sample(int port, const char *series, double want, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    double v = NAN;

    for (;;) {
        char *text = scrape(port, "/metrics");
        v = text ? sample(text, series) : NAN;
        free(text);
        if (v == want || now_ms() > deadline)
            return v;
        sleep_ms(100);
    }
}

/* Writes text to a temp file and runs promtool on it: its exit status, its output in out. */
static int promtool(const char *text, char *out, size_t cap)
{
    char path[64], cmd[256];
    int fd, rc;

    snprintf(path, sizeof path, "/tmp/tycho-test-metrics-XXXXXX");
    if ((fd = mkstemp(path)) < 0)
        return -1;
    rc = write(fd, text, strlen(text)) == (ssize_t)strlen(text) ? 0 : -1;
    close(fd);
    if (rc == 0) {
        snprintf(cmd, sizeof cmd, "promtool check metrics < %s 2>&1", path);
        rc = run_command(cmd, out, cap);
    }
    unlink(path);
    return rc;
}

/* Sends raw bytes on a new connection and reads one response; returns its status. */
static int raw_status(int port, const char *bytes)
{
    struct response r;
    int status = fetch(port, bytes, &r);

    response_free(&r);
    return status;
}

/* The known sequence, over fresh connections (so both workers serve some). */
static void send_known_sequence(int port)
{
    char big[20000];

    for (int i = 0; i < 5; i++)
        check_get(port, "/hello", 200, "hello");
    for (int i = 0; i < 3; i++)
        check_get(port, "/users/7", 200, "user 7");
    for (int i = 0; i < 2; i++)
        expect_status_of(port, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", 404, "unknown path");
    expect_status_of(port, "POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 405,
                     "wrong method");
    expect_status_of(port, "HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n", 200, "HEAD");
    for (int i = 0; i < 2; i++)
        expect_status_of(port, "GET /fail HTTP/1.1\r\nHost: t\r\n\r\n", 500, "a Lua error");
    check_get(port, "/healthz", 200, "ok\n");
    is_int(raw_status(port, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400,
           "two Host fields: 400");
    memset(big, 'a', sizeof big);
    memcpy(big, "GET / HTTP/1.1\r\nHost: t\r\nX-Big: ", 32);
    memcpy(big + sizeof big - 5, "\r\n\r\n", 5);
    is_int(raw_status(port, big), 431, "a 20 KB head: 431");
    is_int(raw_status(port,
                      "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
           501, "a transfer coding other than chunked: 501");
    is_int(raw_status(port, "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n"),
           413, "a body over --max-body: 413");
}

static void test_known_counts(int port)
{
    char *text, out[8192];

    send_known_sequence(port);
    text = scrape(port, "/metrics");
    ok(text != NULL, "GET /metrics answers 200");
    if (!text)
        return;
    is_sample(text, "tycho_http_requests_total{route=\"/hello\",method=\"GET\",status=\"2xx\"}", 5,
              "5 GET /hello, summed over the workers");
    is_sample(text, "tycho_http_requests_total{route=\"/hello\",method=\"HEAD\",status=\"2xx\"}",
              1, "1 HEAD /hello");
    is_sample(text,
              "tycho_http_requests_total{route=\"/users/:id\",method=\"GET\",status=\"2xx\"}", 3,
              "3 by the route pattern, not the path");
    is_sample(text,
              "tycho_http_requests_total{route=\"(unmatched)\",method=\"GET\",status=\"4xx\"}", 2,
              "2 unmatched GETs (404)");
    is_sample(text,
              "tycho_http_requests_total{route=\"(unmatched)\",method=\"POST\",status=\"4xx\"}", 1,
              "1 wrong method (405)");
    is_sample(text, "tycho_http_requests_total{route=\"/fail\",method=\"GET\",status=\"5xx\"}", 2,
              "2 handler errors (500)");
    is_sample(text, "tycho_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"2xx\"}",
              1, "the health check, under its path");
    ok(isnan(sample(text, "tycho_http_requests_total{route=\"/metrics\",method=\"GET\","
                          "status=\"2xx\"}")),
       "the scrape counts itself only once answered");
    is_sample(text, "tycho_http_request_duration_seconds_count{route=\"/hello\"}", 6,
              "latency: 6 requests on /hello");
    is_sample(text, "tycho_http_request_duration_seconds_bucket{route=\"/hello\",le=\"+Inf\"}", 6,
              "latency: the +Inf bucket holds them all");
    ok(sample(text, "tycho_http_request_duration_seconds_sum{route=\"/hello\"}") > 0,
       "latency: a positive sum");
    is_sample(text, "tycho_http_rejected_total{reason=\"bad_request\"}", 1, "rejected: 400");
    is_sample(text, "tycho_http_rejected_total{reason=\"headers_too_large\"}", 1,
              "rejected: 431");
    is_sample(text, "tycho_http_rejected_total{reason=\"body_too_large\"}", 1, "rejected: 413");
    is_sample(text, "tycho_http_rejected_total{reason=\"not_implemented\"}", 1, "rejected: 501");
    is_sample(text, "tycho_http_rejected_total{reason=\"timeout\"}", 0, "rejected: no 408");
    is_sample(text, "tycho_lua_errors_total{in=\"request\"}", 2, "2 Lua errors in requests");
    is_sample(text, "tycho_lua_errors_total{in=\"timer\"}", 0, "no Lua error in timers");
    is_sample(text, "tycho_connections_accepted_total", 20, "20 connections taken");
    is_sample(text, "tycho_workers", 2, "2 workers");
    is_sample(text, "tycho_generation", 1, "generation 1");
    is_sample(text, "tycho_worker_generation{worker=\"1\"}", 1, "worker 1: generation 1");
    is_sample(text, "tycho_reloads_total", 0, "no reload yet");
    ok(sample(text, "process_resident_memory_bytes") > 1e6, "RSS over 1 MB");
    ok(sample(text, "tycho_uptime_seconds") > 0, "uptime");
    ok(sample(text, "process_start_time_seconds") > 1.7e9, "start time");
    ok(sample(text, "tycho_lua_memory_bytes{worker=\"1\"}") > 10000 &&
           sample(text, "tycho_lua_memory_bytes{worker=\"2\"}") > 10000,
       "Lua memory of each worker");
    is_sample(text, "tycho_timers_pending{worker=\"1\"}", 1, "worker 1: its timer");
    is_sample(text, "tycho_timers_pending{worker=\"2\"}", 1, "worker 2: its timer");
    is_sample(text, "tycho_build_info{version=\"0.1.0\"}", 1, "build info");
    is_int(promtool(text, out, sizeof out), 0, "promtool check metrics accepts the exposition");
    if (out[0])
        note("promtool: %s", out);
    free(text);
}

/* Bytes both ways, exactly, between two scrapes on one connection. */
static void test_bytes(int port)
{
    static const char req1[] = "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n";
    static const char scrape_req[] = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
    struct client c;
    struct response r;
    double in0, out0, in1, out1;
    size_t first_len, hello_len;
    char *first;

    if (client_connect(&c, port) < 0) {
        ok(0, "bytes: connect");
        return;
    }
    exchange(&c, scrape_req, &r);
    first = malloc(r.body_len + 1);
    memcpy(first, r.body, r.body_len);
    first[r.body_len] = '\0';
    first_len = r.head_len + r.body_len;
    response_free(&r);
    exchange(&c, req1, &r);
    hello_len = r.head_len + r.body_len;
    response_free(&r);
    exchange(&c, scrape_req, &r);
    r.body[r.body_len - 1] = '\0';
    in0 = sample(first, "tycho_http_received_bytes_total");
    out0 = sample(first, "tycho_http_sent_bytes_total");
    in1 = sample(r.body, "tycho_http_received_bytes_total");
    out1 = sample(r.body, "tycho_http_sent_bytes_total");
    is_int((long long)(in1 - in0), (long long)(sizeof req1 - 1 + sizeof scrape_req - 1),
           "bytes in: the request and the second scrape's");
    is_int((long long)(out1 - out0), (long long)(first_len + hello_len),
           "bytes out: the first scrape's response and the /hello response");
    response_free(&r);
    free(first);
    client_close(&c);
}

/* The script's own metrics: counters, gauges in each mode, a histogram, and misuse. */
static void test_script_metrics(int port)
{
    struct response r;
    char *text;

    for (int i = 0; i < 4; i++)
        check_get(port, "/count?kind=a", 200, "counted");
    check_get(port, "/count?kind=b&n=2.5", 200, "counted");
    check_get(port, "/level/3", 200, "set");
    check_get(port, "/level/7", 200, "set");
    check_get(port, "/size/5", 200, "observed");
    check_get(port, "/size/50", 200, "observed");
    check_get(port, "/size/500", 200, "observed");
    for (int i = 0; i < 6; i++)
        expect_status_of(port, "GET /seen HTTP/1.1\r\nHost: t\r\n\r\n", 200, "/seen");
    fetch(port, "GET /misuse HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, "misuse")) {
        static const char *const want[] = {
            "counter:inc: a counter only goes up (got -1)",
            "counter:inc: expected a table of label values",
            "counter:inc: unknown label given (this metric has 1)",
            "counter:inc: label \"kind\" is missing",
            "counter:inc: label \"kind\" must be given a string or a number",
            "counter:inc: expected a finite number",
            "counter:inc: this metric has no labels",
            "histogram:observe: this metric is a gauge",
            "gauge:set: this metric is a counter",
            "bad argument #1 to 'set' (number expected, got no value)",
            "tycho.metrics.counter: metric \"app_hits_total\" is already registered with other "
            "labels (a counter with 1 labels)",
            "tycho.metrics.gauge: metric \"app_hits_total\" is already registered with another "
            "type (a counter with 1 labels)",
            "tycho.metrics.counter: metric names starting with tycho_ or process_ are the "
            "server's own (got \"tycho_mine_total\")",
            "tycho.metrics.counter: a metric name is letters, digits, _ and : and does not start "
            "with a digit (metric \"9lives\")",
            "tycho.metrics.counter: label names starting with __ are reserved (metric "
            "\"app_x_total\")",
            "tycho.metrics.histogram: a histogram cannot have a label named le (metric "
            "\"app_h\")",
            "tycho.metrics.histogram: bucket bounds must be finite and increasing (metric "
            "\"app_h\")",
            "tycho.metrics.gauge: mode must be \"sum\", \"max\", \"min\" or \"worker\"",
            "tycho.metrics.counter: metric \"app_size_bytes_count\" clashes with the histogram "
            "\"app_size_bytes\" (a histogram also exposes NAME_bucket, NAME_sum and NAME_count)",
            "counter:inc: the value of label \"kind\" is not valid UTF-8",
        };
        char *body = strndup(r.body, r.body_len), *save = NULL;
        char *line = strtok_r(body, "\n", &save);
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
            is_str(line, want[i], what("misuse", "%zu", i + 1));
            line = strtok_r(NULL, "\n", &save);
        }
        free(body);
    }
    response_free(&r);
    text = scrape(port, "/metrics");
    if (!text) {
        ok(0, "scrape after the script's metrics");
        return;
    }
    is_sample(text, "app_hits_total{kind=\"a\"}", 4, "counter with a label: 4");
    is_sample(text, "app_hits_total{kind=\"b\"}", 2.5, "counter: inc by 2.5");
    is_sample(text, "app_hits_total{kind=\"again\"}", 1, "the same metric registered again");
    is_sample(text, "app_plain_total", 5, "counter without labels");
    is_sample(text, "app_level", 7, "gauge, mode max: the largest set");
    is_sample(text, "app_inflight", 0, "gauge (sum) never incremented: 0");
    is_sample(text, "app_size_bytes_bucket{op=\"put\",le=\"10\"}", 1, "histogram: <= 10");
    is_sample(text, "app_size_bytes_bucket{op=\"put\",le=\"100\"}", 2, "histogram: <= 100");
    is_sample(text, "app_size_bytes_bucket{op=\"put\",le=\"+Inf\"}", 3, "histogram: all");
    is_sample(text, "app_size_bytes_sum{op=\"put\"}", 555, "histogram: sum");
    is_sample(text, "app_size_bytes_count{op=\"put\"}", 3, "histogram: count");
    is_int((long long)((isnan(sample(text, "app_worker_requests{worker=\"1\"}"))
                            ? 0 : sample(text, "app_worker_requests{worker=\"1\"}")) +
                       (isnan(sample(text, "app_worker_requests{worker=\"2\"}"))
                            ? 0 : sample(text, "app_worker_requests{worker=\"2\"}"))),
           6, "gauge per worker (the default mode): the two add up to 6");
    ok(isnan(sample(text, "app_worker_requests")), "gauge per worker: no unlabelled series");
    ok(strstr(text, "# HELP app_hits_total Hits, by kind.\n# TYPE app_hits_total counter\n"),
       "HELP and TYPE of a script's metric");
    ok(strstr(text, "# TYPE app_size_bytes histogram\n") != NULL, "histogram TYPE");
    free(text);
}

/* A gauge incremented while requests sleep, and back to 0 after. */
static void test_gauge_in_flight(int port)
{
    struct client c[3];
    struct response r;
    char *text;

    for (int i = 0; i < 3; i++)
        if (client_connect(&c[i], port) == 0)
            client_sends(&c[i], "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(200);
    text = scrape(port, "/metrics");
    if (text)
        is_sample(text, "app_inflight", 3, "gauge: 3 requests inside /slow");
    free(text);
    for (int i = 0; i < 3; i++) {
        read_response(&c[i], &r, 0);
        expect_status(&r, 200, "/slow");
        response_free(&r);
        client_close(&c[i]);
    }
    text = scrape(port, "/metrics");
    if (text)
        is_sample(text, "app_inflight", 0, "gauge: back to 0");
    free(text);
}

/* Label values with ", \ and a newline are escaped, and promtool still accepts the output. */
static void test_escaping(int port)
{
    char *text, out[4096];

    check_get(port, "/count?kind=q%22b%5Cs%0An", 200, "counted");
    text = scrape(port, "/metrics");
    if (!text)
        return;
    is_sample(text, "app_hits_total{kind=\"q\\\"b\\\\s\\nn\"}", 1, "label value escaped");
    is_int(promtool(text, out, sizeof out), 0, "promtool accepts escaped label values");
    free(text);
}

/* Method and format of the scrape itself. */
static void test_scrape_http(int port)
{
    struct response r;
    struct client c;

    fetch(port, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, "scrape")) {
        expect_header(&r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8",
                      "scrape: the 0.0.4 Content-Type");
        expect_header(&r, "Cache-Control", "no-store", "scrape: not cached");
        check_common(&r, 0, -1, "scrape");
    }
    response_free(&r);
    fetch(port, "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r);
    if (expect_status(&r, 405, "scrape: POST"))
        expect_header(&r, "Allow", "GET, HEAD", "scrape: Allow");
    response_free(&r);
    if (client_connect(&c, port) == 0) {
        client_sends(&c, "HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        read_response(&c, &r, 1);
        if (expect_status(&r, 200, "scrape: HEAD"))
            is_int((long)r.body_len, 0, "scrape: HEAD has no body");
        response_free(&r);
        client_close(&c);
    }
}

/* Backend pools through tycho.http: requests, connects and reuse; sampled gauges. */
static void test_backend(int port, int bport)
{
    char path[64], series[256];
    char *text;
    double connects, reused;

    snprintf(path, sizeof path, "/proxy?port=%d", bport);
    for (int i = 0; i < 10; i++)
        check_get(port, path, 200, "hello");
    text = scrape(port, "/metrics");
    if (!text)
        return;
    snprintf(series, sizeof series, "tycho_backend_requests_total{backend=\"127.0.0.1:%d\"}",
             bport);
    is_sample(text, series, 10, "backend: 10 requests");
    snprintf(series, sizeof series, "tycho_backend_connects_total{backend=\"127.0.0.1:%d\"}",
             bport);
    connects = sample(text, series);
    snprintf(series, sizeof series, "tycho_backend_reused_total{backend=\"127.0.0.1:%d\"}",
             bport);
    reused = sample(text, series);
    ok(connects >= 1 && connects <= 2, "backend: one connection per worker at most");
    is_int((long long)(connects + reused), 10, "backend: every request on a new or reused one");
    snprintf(series, sizeof series, "tycho_backend_failures_total{backend=\"127.0.0.1:%d\"}",
             bport);
    is_sample(text, series, 0, "backend: no failure");
    free(text);
    snprintf(series, sizeof series,
             "tycho_backend_connections{backend=\"127.0.0.1:%d\",state=\"idle\"}", bport);
    is_int((long long)wait_sample(port, series, connects, 3000), (long long)connects,
           "backend: the pooled connections idle (sampled)");
    snprintf(series, sizeof series,
             "tycho_backend_circuit_open{backend=\"127.0.0.1:%d\",worker=\"1\"}", bport);
    text = scrape(port, "/metrics");
    if (text && connects == 2)
        is_sample(text, series, 0, "backend: breaker closed");
    free(text);
}

/* Reloads: counted, with the generation; a script's counter keeps its count. */
static void test_reload(struct server *s)
{
    char path[4200];
    char *text;
    FILE *f;

    kill(s->pid, SIGHUP);
    is_int((long long)wait_sample(s->port, "tycho_generation", 2, 5000), 2,
           "after SIGHUP: generation 2");
    wait_for_log(s, "worker 2: serving generation 2", io_timeout_ms);
    check_get(s->port, "/count?kind=a", 200, "counted");
    text = scrape(s->port, "/metrics");
    if (text) {
        is_sample(text, "tycho_reloads_total", 1, "1 reload");
        is_sample(text, "tycho_worker_generation{worker=\"2\"}", 2, "worker 2 serves generation 2");
        is_sample(text, "app_hits_total{kind=\"a\"}", 5, "a counter keeps counting over a reload");
    }
    free(text);
    snprintf(path, sizeof path, "%s/zz_broken.lua", app_dir);
    if ((f = fopen(path, "w"))) {
        fputs("this is not Lua\n", f);
        fclose(f);
    }
    kill(s->pid, SIGHUP);
    is_int((long long)wait_sample(s->port, "tycho_reload_failures_total", 1, 5000), 1,
           "a failed reload is counted");
    text = scrape(s->port, "/metrics");
    if (text)
        is_sample(text, "tycho_generation", 2, "still generation 2");
    free(text);
    unlink(path);
}

/* Copies the fixture into a temp directory (the reload test changes it). */
static int copy_fixture(void)
{
    char cmd[8400], out[4096];

    snprintf(app_dir, sizeof app_dir, "/tmp/tycho-test-metrics-app-XXXXXX");
    if (!mkdtemp(app_dir))
        return -1;
    snprintf(cmd, sizeof cmd, "cp %s/../metrics/app.lua %s/", fixture_dir, app_dir);
    return run_command(cmd, out, sizeof out);
}

static void test_main_server(int bport)
{
    struct server s;
    const char *args[] = {"--port", "0", "--workers", "2", "--metrics", "/metrics",
                          "--health", "/healthz", "--max-body", "1000", app_dir, NULL};

    ok(server_start(&s, args) == 0, "server with --metrics starts");
    if (s.pid > 0) {
        test_known_counts(s.port);
        test_bytes(s.port);
        test_script_metrics(s.port);
        test_gauge_in_flight(s.port);
        test_escaping(s.port);
        test_scrape_http(s.port);
        test_backend(s.port, bport);
        test_reload(&s);
        is_int(server_stop(&s), 0, "exit status 0");
    }
    server_cleanup(&s);
}

/* --metrics-addr: the exposition on its own listener; the main port routes the path as usual. */
static void test_metrics_addr(void)
{
    struct server s;
    const char *args[] = {"--port", "0", "--workers", "1", "--metrics-addr", "127.0.0.1:0",
                          app_dir, NULL};
    const char *at;
    int mport = 0;
    char *text;

    ok(server_start(&s, args) == 0, "server with --metrics-addr starts");
    if (s.pid <= 0) {
        server_cleanup(&s);
        return;
    }
    at = strstr(s.out, "metrics on http://127.0.0.1:");
    ok(at != NULL, "it prints where the metrics are");
    if (at)
        mport = atoi(at + strlen("metrics on http://127.0.0.1:"));
    check_get(s.port, "/hello", 200, "hello");
    expect_status_of(s.port, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", 404,
                     "the main port does not serve /metrics");
    text = mport ? scrape(mport, "/metrics") : NULL;
    ok(text != NULL, "the metrics port serves /metrics");
    if (text) {
        is_sample(text, "tycho_http_requests_total{route=\"/hello\",method=\"GET\",status=\"2xx\"}",
                  1, "metrics port: the /hello request");
        is_sample(text, "tycho_http_requests_total{route=\"(unmatched)\",method=\"GET\","
                        "status=\"4xx\"}", 1, "metrics port: the 404");
    }
    free(text);
    if (mport)
        expect_status_of(mport, "GET /other HTTP/1.1\r\nHost: t\r\n\r\n", 404,
                         "metrics port: other paths 404");
    if (mport) {
        /* Tycho's own connection code serves it: the same strict framing, the same answers. */
        expect_status_of(mport, "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
                         405, "metrics port: POST /metrics is 405");
        expect_status_of(mport, "GET /metrics HTTP/1.1\nHost: t\n\n", 400,
                         "metrics port: a bare LF is refused as on --port");
        expect_status_of(mport, "GET /metrics HTTP/1.1\r\n\r\n", 400,
                         "metrics port: no Host is refused as on --port");
        expect_status_of(mport, "HEAD /metrics HTTP/1.1\r\nHost: t\r\n\r\n", 200,
                         "metrics port: HEAD /metrics is 200");
        text = scrape(mport, "/metrics");
        ok(text && !strstr(text, "route=\"/metrics\""),
           "metrics port: scrapes are not counted as the app's requests");
        free(text);
    }
    is_int(server_stop(&s), 0, "exit status 0");
    server_cleanup(&s);
}

/* --metrics-max-series: past the bound new label values are not counted, and it says so. */
static void test_max_series(void)
{
    struct server s;
    const char *args[] = {"--port", "0", "--workers", "1", "--metrics", "/metrics",
                          "--metrics-max-series", "3", app_dir, NULL};
    char path[64], *text;

    ok(server_start(&s, args) == 0, "server with --metrics-max-series 3 starts");
    if (s.pid <= 0) {
        server_cleanup(&s);
        return;
    }
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "/count?kind=k%d", i);
        check_get(s.port, path, 200, "counted");
    }
    text = scrape(s.port, "/metrics");
    if (text) {
        is_sample(text, "app_hits_total{kind=\"k2\"}", 1, "the third series is counted");
        ok(isnan(sample(text, "app_hits_total{kind=\"k3\"}")), "the fourth is not");
    }
    free(text);
    ok(wait_for_log(&s, "metric app_hits_total has 3 series (--metrics-max-series)",
                    io_timeout_ms), "the bound is logged");
    is_int(server_stop(&s), 0, "exit status 0");
    server_cleanup(&s);
}

/* GET /metrics from another client address (127.0.0.2): not held back by --max-conns-per-ip. */
static char *scrape_from_other_address(int port)
{
    struct client c;
    struct response r;
    char *text = NULL;

    if (client_connect_from(&c, port, "127.0.0.2") < 0)
        return NULL;
    if (exchange(&c, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0 && r.status == 200)
        text = strndup(r.body, r.body_len);
    response_free(&r);
    client_close(&c);
    return text;
}

/* Refused connections, by limit. */
static void test_refused(void)
{
    struct server s;
    const char *args[] = {"--port", "0", "--workers", "1", "--metrics", "/metrics",
                          "--max-conns-per-ip", "2", app_dir, NULL};
    struct client c[2];
    char *text;

    ok(server_start(&s, args) == 0, "server with --max-conns-per-ip 2 starts");
    if (s.pid <= 0) {
        server_cleanup(&s);
        return;
    }
    for (int i = 0; i < 2; i++)
        client_connect(&c[i], s.port);
    sleep_ms(100);
    expect_status_of(s.port, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", 503, "third: refused");
    /* The two stay open: the scrape comes from another address. */
    text = scrape_from_other_address(s.port);
    ok(text != NULL, "a scrape from 127.0.0.2 is served");
    if (text) {
        is_sample(text, "tycho_connections_refused_total{limit=\"max_conns_per_ip\"}", 1,
                  "1 refused by --max-conns-per-ip");
        is_sample(text, "tycho_connections_refused_total{limit=\"max_conns\"}", 0,
                  "none by --max-conns");
        is_sample(text, "tycho_connections_open", 3, "3 open: the two clients and the scrape");
    }
    free(text);
    for (int i = 0; i < 2; i++)
        client_close(&c[i]);
    is_int(server_stop(&s), 0, "exit status 0");
    server_cleanup(&s);
}

/* Flags that make no sense are refused with a message. */
static void test_bad_flags(void)
{
    static const struct {
        const char *args, *message;
    } cases[] = {
        {"--metrics metrics", "--metrics: expected a path such as /metrics, got \"metrics\""},
        {"--metrics-addr x:y", "--metrics-addr: expected [HOST:]PORT such as 127.0.0.1:9145"},
        {"--metrics-addr 70000", "--metrics-addr: expected [HOST:]PORT"},
        {"--metrics /x --health /x", "--metrics and --health cannot be the same path (/x)"},
        {"--metrics /m --check", "--metrics only goes with serving (not with --check)"},
        {"--metrics-max-series 0", "--metrics-max-series: expected a number from 1 to"},
    };
    char cmd[8400], out[4096];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s %s %s 2>&1", tycho_binary, cases[i].args, app_dir);
        is_int(run_command(cmd, out, sizeof out), 2, what(cases[i].args, "exit 2"));
        ok(strstr(out, cases[i].message) != NULL, what(cases[i].args, "says why"));
    }
}

int main(int argc, char **argv)
{
    struct backend b;
    char out[256];

    if (suite_setup(argc, argv))
        return 2;
    ok(run_command("command -v promtool", out, sizeof out) == 0,
       "promtool is installed (Debian package prometheus; make test installs it)");
    if (copy_fixture() != 0) {
        ok(0, "copy the fixture to a temp directory");
        return test_summary();
    }
    ok(backend_start(&b, 0) == 0, "a backend listens on loopback");
    test_main_server(b.port);
    test_metrics_addr();
    test_max_series();
    test_refused();
    test_bad_flags();
    backend_stop(&b);
    {
        char path[4200];
        snprintf(path, sizeof path, "%s/app.lua", app_dir);
        unlink(path);
    }
    rmdir(app_dir);
    free(wrap_copy);
    return test_summary();
}
