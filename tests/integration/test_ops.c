/*
 * test_ops.c TYCHO_BINARY FIXTURE_DIR: what operators use, over real
 * sockets against the real binary: --health (200 while serving, 503 while
 * draining, no Lua), --log-level, request ids and the access log (both
 * formats, SIGUSR1 reopen). Ends with `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"

#include <sys/wait.h>

static void test_health(int port)
{
    struct response r;
    struct client c;

    fetch(port, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, "health")) {
        expect_body(&r, "ok\n", "health: ok while serving");
        expect_header(&r, "Cache-Control", "no-store", "health: not cached");
        check_common(&r, 0, -1, "health");
    }
    response_free(&r);
    fetch(port, "GET /healthz?probe=1 HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    expect_status(&r, 200, "health: the query does not matter");
    response_free(&r);
    if (client_connect(&c, port) == 0) {
        client_sends(&c, "HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        read_response(&c, &r, 1);
        if (expect_status(&r, 200, "health: HEAD"))
            is_int((long)r.body_len, 0, "health: HEAD has no body");
        response_free(&r);
        exchange(&c, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n", &r);
        expect_status(&r, 200, "health: the connection keeps serving");
        response_free(&r);
        client_close(&c);
    }
    fetch(port, "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r);
    if (expect_status(&r, 405, "health: POST"))
        expect_header(&r, "Allow", "GET, HEAD", "health: Allow");
    response_free(&r);
    fetch(port, "GET /healthz/more HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    expect_status(&r, 404, "health: only the exact path");
    response_free(&r);
}

/*
 * While the server drains (a sleeping request keeps it going), a health
 * check whose head completes after SIGTERM gets 503 and Connection: close.
 */
static void test_health_draining(struct server *s)
{
    struct client sleeper, probe;
    struct response r;

    if (client_connect(&sleeper, s->port) < 0 || client_connect(&probe, s->port) < 0) {
        ok(0, "draining: connect");
        return;
    }
    client_sends(&sleeper, "GET /sleep?s=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    client_sends(&probe, "GET /healthz HTTP/1.1\r\nHost: t\r\n");
    sleep_ms(200);
    kill(s->pid, SIGTERM);
    sleep_ms(200);
    client_sends(&probe, "\r\n");
    read_response(&probe, &r, 0);
    if (expect_status(&r, 503, "health while draining")) {
        expect_body(&r, "draining\n", "health: draining");
        expect_header(&r, "Connection", "close", "health: closes while draining");
    }
    response_free(&r);
    read_response(&sleeper, &r, 0);
    expect_status(&r, 200, "the sleeping request finished during the drain");
    response_free(&r);
    client_close(&probe);
    client_close(&sleeper);
    is_int(server_stop(s), 0, "exit status 0 after the drain");
}

/* --log-level warn: errors are logged, info lines are not. */
static void test_log_level(struct server *s)
{
    struct response r;

    fetch(s->port, "GET /error HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    expect_status(&r, 500, "a handler error");
    response_free(&r);
    is_int(server_stop(s), 0, "exit status 0");
    ok(log_has_line(s, "[error]", "GET /error"), "--log-level warn: errors are logged");
    ok(!log_has_line(s, "[info]", NULL), "--log-level warn: info lines are not");
}

static int is_hex16(const char *s)
{
    if (!s || strlen(s) != 16)
        return 0;
    for (int i = 0; i < 16; i++)
        if (!strchr("0123456789abcdef", s[i]))
            return 0;
    return 1;
}

/* Every response carries X-Request-Id: the client's when valid, else a new one; req.id agrees. */
static void test_request_ids(struct server *s)
{
    struct response r;
    char first[32] = "";

    fetch(s->port, "GET /request-id HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, "request id")) {
        ok(is_hex16(header_get(&r, "X-Request-Id")), "a generated id is 16 hex digits");
        is_str(r.body, header_get(&r, "X-Request-Id"), "req.id is the id in the response");
        snprintf(first, sizeof first, "%s", header_get(&r, "X-Request-Id"));
    }
    response_free(&r);
    fetch(s->port, "GET /request-id HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    ok(header_get(&r, "X-Request-Id") && strcmp(header_get(&r, "X-Request-Id"), first) != 0,
       "the next request gets another id");
    response_free(&r);
    fetch(s->port, "GET /request-id HTTP/1.1\r\nHost: t\r\nX-Request-Id: trace-42.a:b_c\r\n\r\n", &r);
    expect_header(&r, "X-Request-Id", "trace-42.a:b_c", "a valid client id is kept");
    expect_body(&r, "trace-42.a:b_c", "req.id is the client's id");
    response_free(&r);
    fetch(s->port, "GET /request-id HTTP/1.1\r\nHost: t\r\nX-Request-Id: evil id]\r\n\r\n", &r);
    ok(is_hex16(header_get(&r, "X-Request-Id")), "an invalid client id is replaced");
    response_free(&r);
    {
        char req[512], id[130];
        memset(id, 'a', 128);
        id[128] = '\0';
        snprintf(req, sizeof req, "GET /request-id HTTP/1.1\r\nHost: t\r\nX-Request-Id: %s\r\n\r\n", id);
        fetch(s->port, req, &r);
        expect_header(&r, "X-Request-Id", id, "a 128-character id is kept");
        response_free(&r);
        id[128] = 'a';
        id[129] = '\0';
        snprintf(req, sizeof req, "GET /request-id HTTP/1.1\r\nHost: t\r\nX-Request-Id: %s\r\n\r\n", id);
        fetch(s->port, req, &r);
        ok(is_hex16(header_get(&r, "X-Request-Id")), "a 129-character id is replaced");
        response_free(&r);
    }
    fetch(s->port, "GET /own-request-id HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    ok(header_count(&r, "X-Request-Id") == 1 && header_get(&r, "X-Request-Id") &&
           strcmp(header_get(&r, "X-Request-Id"), "mine") == 0,
       "a handler's own X-Request-Id replaces the server's");
    response_free(&r);
    fetch(s->port, "GET /no-such-route HTTP/1.1\r\nHost: t\r\nX-Request-Id: on-404\r\n\r\n", &r);
    if (expect_status(&r, 404, "404 with an id"))
        expect_header(&r, "X-Request-Id", "on-404", "a 404 carries the id");
    response_free(&r);
    fetch(s->port, "DELETE /hello HTTP/1.1\r\nHost: t\r\nX-Request-Id: on-405\r\n\r\n", &r);
    if (expect_status(&r, 405, "405 with an id"))
        expect_header(&r, "X-Request-Id", "on-405", "a 405 carries the id");
    response_free(&r);
    fetch(s->port, "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: on-health\r\n\r\n", &r);
    expect_header(&r, "X-Request-Id", "on-health", "the health answer carries the id");
    response_free(&r);
    fetch(s->port, "GET /error HTTP/1.1\r\nHost: t\r\nX-Request-Id: err-7\r\n\r\n", &r);
    if (expect_status(&r, 500, "error with an id"))
        expect_header(&r, "X-Request-Id", "err-7", "a 500 carries the id");
    response_free(&r);
    ok(wait_for_log(s, "GET /error [request err-7]: ", io_timeout_ms),
       "the error log line names the request id");
}

static int count_lines(const char *text)
{
    int n = 0;

    for (const char *p = text; p && *p; p++)
        n += *p == '\n';
    return n;
}

/* The line of text that contains needle (copied into out), or 0. */
static int line_with(const char *text, const char *needle, char *out, size_t cap)
{
    const char *p = text ? strstr(text, needle) : NULL, *start, *end;

    if (!p)
        return 0;
    for (start = p; start > text && start[-1] != '\n'; start--)
        ;
    end = strchr(p, '\n');
    snprintf(out, cap, "%.*s", (int)(end ? end - start : (long)strlen(start)), start);
    return 1;
}

/* JSON lines: one per request, with its id, route, status; a reopen after a rotation. */
static void test_access_json(struct server *s, const char *path)
{
    struct response r;
    char rotated[128], line[1024], *text;

    fetch(s->port, "GET /hello HTTP/1.1\r\nHost: t\r\nX-Request-Id: acc-1\r\n\r\n", &r);
    response_free(&r);
    fetch(s->port, "GET /users/7/posts/9?q=1 HTTP/1.1\r\nHost: t\r\nX-Request-Id: acc-2\r\n\r\n", &r);
    response_free(&r);
    fetch(s->port, "GET /no-such HTTP/1.1\r\nHost: t\r\nX-Request-Id: acc-3\r\n\r\n", &r);
    response_free(&r);
    fetch(s->port, "GET /error HTTP/1.1\r\nHost: t\r\nX-Request-Id: acc-4\r\n\r\n", &r);
    response_free(&r);
    fetch(s->port, "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: acc-5\r\n\r\n", &r);
    response_free(&r);
    fetch(s->port, "GET /hello?q=\"a\\b HTTP/1.1\r\nHost: t\r\nX-Request-Id: acc-6\r\n\r\n", &r);
    response_free(&r);
    fetch(s->port, "GET /hello?q=\xc3\xa9 HTTP/1.1\r\nHost: t\r\nX-Request-Id: acc-7\r\n\r\n", &r);
    response_free(&r);
    sleep_ms(1500);                     /* lines are written within a second */
    text = slurp(path, NULL);
    is_int(count_lines(text), 7, "access log: one line per request");
    ok(line_with(text, "\"id\":\"acc-7\"", line, sizeof line) &&
           strstr(line, "\"path\":\"/hello?q=\\u00c3\\u00a9\""),
       "access log: bytes outside ASCII are escaped (the line stays JSON)");
    ok(line_with(text, "\"id\":\"acc-6\"", line, sizeof line) &&
           strstr(line, "\"path\":\"/hello?q=\\\"a\\\\b\""),
       "access log: quotes and backslashes in the path are escaped");
    ok(line_with(text, "\"id\":\"acc-1\"", line, sizeof line) &&
           strstr(line, "\"method\":\"GET\",\"path\":\"/hello\",\"route\":\"/hello\",\"status\":200") &&
           strstr(line, "\"remote\":\"127.0.0.1\"") && strstr(line, "\"worker\":1}") &&
           strstr(line, "\"duration_us\":") && line[0] == '{',
       "access log: a JSON line with method, path, route, status, remote, worker");
    ok(line_with(text, "\"id\":\"acc-2\"", line, sizeof line) &&
           strstr(line, "\"path\":\"/users/7/posts/9?q=1\"") &&
           strstr(line, "\"route\":\"/users/:id/posts/:post\""),
       "access log: the route pattern next to the path");
    ok(line_with(text, "\"id\":\"acc-3\"", line, sizeof line) &&
           strstr(line, "\"route\":null,\"status\":404"), "access log: a 404 has no route");
    ok(line_with(text, "\"id\":\"acc-4\"", line, sizeof line) && strstr(line, "\"status\":500"),
       "access log: a handler error is a 500");
    ok(line_with(text, "\"id\":\"acc-5\"", line, sizeof line) && strstr(line, "\"status\":200"),
       "access log: the health check is logged");
    free(text);

    snprintf(rotated, sizeof rotated, "%s.1", path);
    ok(rename(path, rotated) == 0, "access log rotated away");
    kill(s->pid, SIGUSR1);
    ok(wait_for_log(s, "access log", io_timeout_ms) && log_has_line(s, "SIGUSR1", "reopened"),
       "SIGUSR1: the reopen is logged");
    fetch(s->port, "GET /hello HTTP/1.1\r\nHost: t\r\nX-Request-Id: after-reopen\r\n\r\n", &r);
    response_free(&r);
    sleep_ms(1500);
    text = slurp(path, NULL);
    ok(text && count_lines(text) == 1 && strstr(text, "after-reopen"),
       "after SIGUSR1 new lines go to a new file");
    free(text);
    text = slurp(rotated, NULL);
    ok(text && count_lines(text) == 7 && !strstr(text, "after-reopen"),
       "the rotated file keeps the old lines");
    free(text);
    unlink(rotated);
    unlink(path);
}

/* Common log format, written out when the server stops. */
static void test_access_common(struct server *s, const char *path)
{
    struct response r;
    char *text;

    fetch(s->port, "GET /hello?x=%22 HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    response_free(&r);
    fetch(s->port, "GET /no-such HTTP/1.0\r\n\r\n", &r);
    response_free(&r);
    fetch(s->port, "GET /hello?q=\xc3 HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    response_free(&r);
    is_int(server_stop(s), 0, "exit status 0");
    text = slurp(path, NULL);
    is_int(count_lines(text), 3, "common log: every line is written by the stop");
    ok(text && strstr(text, "\"GET /hello?q=\\xC3 HTTP/1.1\" 200 "),
       "common log: bytes outside ASCII become \\xHH");
    ok(text && strncmp(text, "127.0.0.1 - - [", 15) == 0 &&
           strstr(text, " +0000] \"GET /hello?x=%22 HTTP/1.1\" 200 "),
       "common log: remote, time, request line, status, bytes");
    ok(text && strstr(text, "\"GET /no-such HTTP/1.0\" 404 "), "common log: a 404 over HTTP/1.0");
    free(text);
    unlink(path);
}

/* Bad values stop start-up with exit status 2 and say why. */
static void test_bad_flags(void)
{
    static const struct {
        const char *flags, *want;
    } cases[] = {
        {"--log-level loud", "tycho: --log-level: expected debug, info, warn or error, got \"loud\""},
        {"--health healthz", "tycho: --health: expected a path such as /healthz, got \"healthz\""},
        {"--health /a?b", "tycho: --health: expected a path such as /healthz, got \"/a?b\""},
        {"--access-log-format xml", "tycho: --access-log-format: expected common or json, got \"xml\""},
        {"--access-log /nonexistent-dir/a.log", "tycho: --access-log /nonexistent-dir/a.log: No such file or directory"},
        {"--error-log /nonexistent-dir/e.log", "tycho: --error-log /nonexistent-dir/e.log: No such file or directory"},
        {"--error-log -", "tycho: --error-log: expected a file (stderr is the default)"},
    };
    char cmd[512], out[1024];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s %s %s 2>&1", tycho_binary, cases[i].flags, fixture_dir);
        ok(run_command(cmd, out, sizeof out) >= 1 && strstr(out, cases[i].want), cases[i].flags);
        if (!strstr(out, cases[i].want))
            note("got: %s", out);
    }
}

/* Waits (bounded) until the file at path contains needle. */
static int wait_file_has(const char *path, const char *needle, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;

    for (;;) {
        char *text = slurp(path, NULL);
        int found = text && strstr(text, needle) != NULL;
        free(text);
        if (found)
            return 1;
        if (now_ms() > deadline)
            return 0;
        sleep_ms(50);
    }
}

/* --error-log FILE: the log goes there once serving; SIGUSR1 reopens it after a rename. */
static void test_error_log(const char *path)
{
    struct server s;
    const char *args[] = {"--port", "0", "--workers", "1", "--error-log", path, fixture_dir,
                          NULL};
    char moved[128];
    char *text;

    snprintf(moved, sizeof moved, "%s.1", path);
    unlink(path);
    unlink(moved);
    ok(server_start(&s, args) == 0, "server with --error-log starts");
    if (s.pid <= 0) {
        server_cleanup(&s);
        return;
    }
    expect_status_of(s.port, "GET /error HTTP/1.1\r\nHost: t\r\n\r\n", 500, "a handler error");
    ok(wait_file_has(path, "[error] worker 1: GET /error", io_timeout_ms),
       "error log: the handler's error with its traceback is in the file");
    ok(!log_has_line(&s, "GET /error", NULL), "error log: not on stderr");
    ok(rename(path, moved) == 0, "error log: renamed (as logrotate does)");
    kill(s.pid, SIGUSR1);
    ok(wait_file_has(path, "SIGUSR1: error log", io_timeout_ms), "error log: reopened as a new file");
    expect_status_of(s.port, "GET /error HTTP/1.1\r\nHost: t\r\n\r\n", 500, "another error");
    ok(wait_file_has(path, "[error] worker 1: GET /error", io_timeout_ms),
       "error log: the next error goes to the new file");
    is_int(server_stop(&s), 0, "exit status 0");
    text = slurp(path, NULL);
    ok(text && strstr(text, "[info] stopped"), "error log: the stop is logged in it");
    free(text);
    text = slurp(moved, NULL);
    ok(text && strstr(text, "[error] worker 1: GET /error") &&
           !strstr(text, "SIGUSR1: error log"),
       "error log: the old file kept what came before the reopen");
    free(text);
    server_cleanup(&s);
    unlink(path);
    unlink(moved);
}

int main(int argc, char **argv)
{
    struct server s;

    if (suite_setup(argc, argv))
        return 2;
    {
        const char *args[] = {"--port", "0", "--workers", "1", "--health", "/healthz",
                              fixture_dir, NULL};
        ok(server_start(&s, args) == 0, "server with --health starts");
    }
    if (s.pid > 0) {
        test_health(s.port);
        test_request_ids(&s);
        test_health_draining(&s);
    }
    server_cleanup(&s);
    {
        const char *args[] = {"--port", "0", "--workers", "1", "--log-level", "warn",
                              fixture_dir, NULL};
        ok(server_start(&s, args) == 0, "server with --log-level warn starts");
    }
    if (s.pid > 0)
        test_log_level(&s);
    server_cleanup(&s);
    {
        const char *args[] = {"--port", "0", "--workers", "1", "--log-level", "debug",
                              fixture_dir, NULL};
        ok(server_start(&s, args) == 0, "server with --log-level debug starts");
    }
    if (s.pid > 0) {
        check_get(s.port, "/hello", 200, NULL);
        is_int(server_stop(&s), 0, "exit status 0");
        ok(log_has_line(&s, "[debug] worker 1: connection from 127.0.0.1", NULL),
           "--log-level debug: a line per connection opened");
        ok(log_has_line(&s, "[debug] worker 1: connection from 127.0.0.1 closed after 1 requests",
                        NULL), "--log-level debug: and closed, with its requests");
        ok(log_has_line(&s, "[info]", "stopped"), "--log-level debug: info lines too");
    }
    server_cleanup(&s);
    {
        char path[96];
        snprintf(path, sizeof path, "/tmp/tycho-test-access-%d.log", (int)getpid());
        unlink(path);
        {
            const char *args[] = {"--port", "0", "--workers", "1", "--health", "/healthz",
                                  "--access-log", path, "--access-log-format", "json",
                                  fixture_dir, NULL};
            ok(server_start(&s, args) == 0, "server with a JSON access log starts");
        }
        if (s.pid > 0) {
            test_access_json(&s, path);
            is_int(server_stop(&s), 0, "exit status 0");
        }
        server_cleanup(&s);
        {
            const char *args[] = {"--port", "0", "--workers", "1", "--access-log", path,
                                  fixture_dir, NULL};
            ok(server_start(&s, args) == 0, "server with a common access log starts");
        }
        if (s.pid > 0)
            test_access_common(&s, path);
        server_cleanup(&s);
    }
    {
        char path[96];
        snprintf(path, sizeof path, "/tmp/tycho-test-error-%d.log", (int)getpid());
        test_error_log(path);
    }
    test_bad_flags();
    free(wrap_copy);
    return test_summary();
}
