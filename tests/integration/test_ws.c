/*
 * test_ws.c TYCHO_BINARY FIXTURE_DIR: WebSockets (app.ws) over real sockets
 * against the real binary, two workers. A real client (Debian's
 * python3-websockets, tests/integration/ws_client.py) checks echo, binary,
 * large and fragmented messages, ping/pong, the close handshake, 1009 and
 * 1,000 concurrent sockets; raw frames written here check the handshake's
 * answers, 1002 (unmasked), 1007 (bad UTF-8), the idle timeout with pings,
 * middleware on the upgrade, the metrics and the 1001 of a graceful stop.
 * The app is written into a temporary directory. Ends with `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"

#include <unistd.h>

static char dir[] = "/tmp/tycho-ws-XXXXXX";

static const char app_lua[] =
    "local app = require 'tycho'\n"
    "app.use(function(req, res, next)\n"
    "  if req.path == '/private' and req.query.token ~= 'yes' then tycho.abort(401) end\n"
    "  next()\n"
    "end)\n"
    "local function echo(ws)\n"
    "  while true do\n"
    "    local msg, kind, code = ws:receive()\n"
    "    if not msg then tycho.log.info('ws ended: ' .. kind .. ' ' .. code) return end\n"
    "    ws:send(msg, kind == 'binary')\n"
    "  end\n"
    "end\n"
    "app.ws('/echo', echo, { max_message = 1048576, ping_interval = 0.3, idle_timeout = 1 })\n"
    "app.ws('/private', echo)\n"
    "app.ws('/bye', function(ws) ws:send('bye soon'); ws:close(4000, 'done'); ws:receive() end)\n"
    "local shared = {}\n"
    "app.ws('/held', function(ws)\n"
    "  shared.ws = ws\n"
    "  while ws:receive() do end\n"
    "  shared.ws = nil\n"
    "end, { ping_interval = 0, idle_timeout = 0 })\n"
    "app.get('/secret', function() return 'SECRET-OF-ANOTHER-CLIENT' end)\n"
    "app.get('/to-held', function()\n"
    "  local ran, sent = pcall(function() return shared.ws and shared.ws:send('hello') end)\n"
    "  return tostring(ran and sent)\n"
    "end)\n"
    "app.post('/flood', function()\n"
    "  local sent = 0\n"
    "  for i = 1, 100 do\n"
    "    if not (shared.ws and shared.ws:send(string.rep('x', 65536))) then break end\n"
    "    sent = sent + 1\n"
    "  end\n"
    "  return tostring(sent)\n"
    "end)\n"
    "app.get('/slow', function() tycho.sleep(0.2) return 'slow' end)\n"
    "app.ws('/tick', function(ws)\n"
    "  while ws:send('tick') do tycho.sleep(0.1) end\n"
    "end)\n"
    "app.ws('/chat', function(ws)\n"
    "  ws:join('room'); ws:send('joined ' .. tycho.worker_id())\n"
    "  while true do\n"
    "    local msg = ws:receive()\n"
    "    if not msg then return end\n"
    "    tycho.broadcast('room', msg)\n"
    "  end\n"
    "end)\n";

static const char upgrade[] = "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/* Opens a WebSocket on path with raw bytes; returns 0 once the 101 is read. */
static int ws_open(struct client *c, int port, const char *path)
{
    char req[512];
    struct response r;
    int ok101;

    if (client_connect(c, port) < 0)
        return -1;
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n%sSec-WebSocket-Version: 13\r\n\r\n",
             path, upgrade);
    client_sends(c, req);
    read_response(c, &r, 1);
    ok101 = r.status == 101;
    if (ok101)
        expect_header(&r, "Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
                      "handshake: the accept value of RFC 6455 1.3");
    response_free(&r);
    return ok101 ? 0 : -1;
}

/* Reads frames until a close frame; returns its code, or -1. Counts pings seen. */
static int read_close(struct client *c, int *pings)
{
    long long deadline = now_ms() + io_timeout_ms;

    for (;;) {
        size_t len;
        if (client_need(c, 2, deadline) < 0)
            return -1;
        len = (unsigned char)c->buf[1] & 0x7f;
        if (client_need(c, 2 + len, deadline) < 0)
            return -1;
        if (((unsigned char)c->buf[0] & 0x0f) == 0x8) {
            int code = len >= 2 ? ((unsigned char)c->buf[2] << 8) | (unsigned char)c->buf[3] : 0;
            client_consume(c, 2 + len);
            return code;
        }
        if (((unsigned char)c->buf[0] & 0x0f) == 0x9 && pings)
            (*pings)++;
        client_consume(c, 2 + len);
    }
}

/* Reads one unmasked server frame; returns its payload length and copies it to out, or -1. */
static int read_frame(struct client *c, char *out, size_t cap)
{
    long long deadline = now_ms() + io_timeout_ms;
    size_t len;

    if (client_need(c, 2, deadline) < 0)
        return -1;
    len = (unsigned char)c->buf[1] & 0x7f;
    if (len > 125 || client_need(c, 2 + len, deadline) < 0 || len >= cap)
        return -1;
    memcpy(out, c->buf + 2, len);
    out[len] = '\0';
    client_consume(c, 2 + len);
    return (int)len;
}

/* A masked client frame (mask 0: the payload is as given) of opcode op. */
static void send_frame(struct client *c, int op, const char *data, size_t len, int masked)
{
    char f[256];
    size_t n = 0;

    f[n++] = (char)(0x80 | op);
    f[n++] = (char)((masked ? 0x80 : 0) | len);
    if (masked) {
        memset(f + n, 0, 4);
        n += 4;
    }
    memcpy(f + n, data, len);
    client_send(c, f, n + len);
}

static void test_violations(int port)
{
    struct client c;
    int pings = 0;

    if (ws_open(&c, port, "/echo") == 0) {
        send_frame(&c, 1, "hi", 2, 0);
        is_int(read_close(&c, NULL), 1002, "an unmasked client frame: closed 1002");
        client_close(&c);
    } else {
        ok(0, "unmasked: the handshake");
    }
    if (ws_open(&c, port, "/echo") == 0) {
        send_frame(&c, 1, "a\xff\xfe", 3, 1);
        is_int(read_close(&c, NULL), 1007, "a text message that is not UTF-8: closed 1007");
        client_close(&c);
    } else {
        ok(0, "bad UTF-8: the handshake");
    }
    if (ws_open(&c, port, "/echo") == 0) {
        long long t0 = now_ms();
        int code = read_close(&c, &pings);
        is_int(code, 1001, "a client that answers nothing: closed 1001 (idle timeout)");
        ok(pings >= 1, "... after the server pinged it");
        note("idle close after %lld ms, %d pings", now_ms() - t0, pings);
        client_close(&c);
    } else {
        ok(0, "idle: the handshake");
    }
}

static void test_handshake_errors(int port)
{
    struct response r;
    char req[512];

    expect_status_of(port, "GET /echo HTTP/1.1\r\nHost: t\r\n\r\n", 400,
                     "a plain GET to a WebSocket route: 400");
    snprintf(req, sizeof req,
             "GET /echo HTTP/1.1\r\nHost: t\r\n%sSec-WebSocket-Version: 12\r\n\r\n", upgrade);
    if (fetch(port, req, &r) == 426)
        expect_header(&r, "Sec-WebSocket-Version", "13", "version 12: 426 says 13");
    else
        ok(0, "version 12: 426");
    response_free(&r);
    snprintf(req, sizeof req,
             "GET /private HTTP/1.1\r\nHost: t\r\n%sSec-WebSocket-Version: 13\r\n\r\n", upgrade);
    is_int(fetch(port, req, &r), 401, "middleware runs on the upgrade (401 without the token)");
    response_free(&r);
    {
        struct client c;
        ok(ws_open(&c, port, "/private?token=yes") == 0, "... and lets it through with it");
        client_close(&c);
    }
}

/*
 * A handler that writes to another connection (a ws kept in a module) while
 * the worker holds the served connection's responses: those go to their own
 * client only, the message to the other.
 */
static void test_other_connection(int port)
{
    struct client held, c;
    struct response r;
    char got[128] = "";

    if (ws_open(&held, port, "/held") < 0 || client_connect(&c, port) < 0) {
        ok(0, "another connection: connect");
        return;
    }
    client_sends(&c, "GET /secret HTTP/1.1\r\nHost: t\r\n\r\n"
                     "GET /to-held HTTP/1.1\r\nHost: t\r\n\r\n");
    read_response(&c, &r, 0);
    expect_body(&r, "SECRET-OF-ANOTHER-CLIENT", "another connection: the first answer");
    response_free(&r);
    read_response(&c, &r, 0);
    expect_body(&r, "true", "another connection: the second, which sent to the WebSocket");
    response_free(&r);
    read_frame(&held, got, sizeof got);
    is_str(got, "hello", "another connection: the WebSocket gets the message and nothing else");
    client_close(&c);
    client_close(&held);
}

/*
 * Another request floods a WebSocket whose client reads nothing: it cannot
 * wait for that client, so the socket is closed (1008) past the bound; the
 * WebSocket's own handler still ends when its client leaves.
 */
static void test_flood_from_elsewhere(int port)
{
    struct client held;
    struct response r;
    int one = 4096;

    if (ws_open(&held, port, "/held") < 0) {
        ok(0, "flood: the handshake");
        return;
    }
    setsockopt(held.fd, SOL_SOCKET, SO_RCVBUF, &one, sizeof(one));
    if (fetch(port, "POST /flood HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r) == 200)
        ok(atoi(r.body) < 100, what("flood", "refused past the bound (%s of 100 sent)", r.body));
    else
        ok(0, "flood: 200");
    response_free(&r);
    client_close(&held);
    for (long long until = now_ms() + io_timeout_ms;; sleep_ms(50)) {
        int gone = fetch(port, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 200 &&
                   strstr(r.body, "\ntycho_websockets_open 0\n") != NULL;
        response_free(&r);
        if (gone || now_ms() > until) {
            ok(gone, "flood: the WebSocket closes when its client leaves (none open)");
            break;
        }
    }
}

/* An upgrade pipelined behind a request that waits: its frames, not its head, are frames. */
static void test_pipelined_upgrade(int port)
{
    struct client c;
    struct response r;
    char req[512], got[128] = "";

    if (client_connect(&c, port) < 0) {
        ok(0, "pipelined upgrade: connect");
        return;
    }
    snprintf(req, sizeof req,
             "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"
             "GET /private?token=yes HTTP/1.1\r\nHost: t\r\n%sSec-WebSocket-Version: 13\r\n\r\n",
             upgrade);
    client_sends(&c, req);
    send_frame(&c, 1, "hi", 2, 1);
    read_response(&c, &r, 0);
    expect_body(&r, "slow", "pipelined upgrade: the request before it");
    response_free(&r);
    read_response(&c, &r, 1);
    is_int(r.status, 101, "pipelined upgrade: then the 101");
    response_free(&r);
    read_frame(&c, got, sizeof got);
    is_str(got, "hi", "pipelined upgrade: the frame sent with it is echoed");
    client_close(&c);
}

/* The real client's checks: each line it prints is one. */
static void test_client(int port, int n)
{
    char cmd[512], line[512];
    FILE *p;
    int lines = 0;

    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/integration/ws_client.py %d %d 2>&1", port,
             n);
    if (!(p = popen(cmd, "r"))) {
        ok(0, "the WebSocket client runs");
        return;
    }
    while (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "ok ", 3) == 0)
            ok(1, line + 3), lines++;
        else if (strncmp(line, "not ok ", 7) == 0)
            ok(0, line + 7), lines++;
        else
            note("client: %s", line);
    }
    is_int(pclose(p), 0, "the WebSocket client exits 0");
    is_int(lines, 11, "the client made all its checks");
}

/* A reload while a WebSocket is open: it goes on (old generation), and new ones open. */
static void test_reload(struct server *s)
{
    struct client c, d;
    char got[128] = "";

    if (ws_open(&c, s->port, "/private?token=yes") < 0) {
        ok(0, "reload: the handshake");
        return;
    }
    kill(s->pid, SIGHUP);
    ok(wait_for_log(s, "serving generation 2", io_timeout_ms), "reload: the workers switch");
    send_frame(&c, 1, "still", 5, 1);
    read_frame(&c, got, sizeof got);
    is_str(got, "still", "reload: a WebSocket opened before it keeps echoing");
    ok(ws_open(&d, s->port, "/private?token=yes") == 0, "reload: a new one opens after it");
    client_close(&d);
    client_close(&c);
}

static void test_metrics_and_stop(struct server *s)
{
    struct client c, t;
    struct response r;
    int pings = 0;

    if (ws_open(&c, s->port, "/private?token=yes") < 0 || ws_open(&t, s->port, "/tick") < 0) {
        ok(0, "stop: the handshake");
        return;
    }
    {
        char got[128] = "";
        read_frame(&t, got, sizeof got);
        is_str(got, "tick", "stop: a handler that only sends ticks");
    }
    /* The sockets of the tests before close as their clients leave: wait for the count. */
    for (long long until = now_ms() + io_timeout_ms; ; sleep_ms(50)) {
        int found = fetch(s->port, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 200 &&
                    strstr(r.body, "\ntycho_websockets_open 2\n") != NULL;
        response_free(&r);
        if (found || now_ms() > until) {
            ok(found, "metrics: tycho_websockets_open counts the two open");
            break;
        }
    }
    kill(s->pid, SIGTERM);
    is_int(read_close(&c, NULL), 1001, "a graceful stop closes open WebSockets with 1001");
    send_frame(&c, 8, "\x03\xe9", 2, 1);
    is_int(read_close(&t, &pings), 1001, "... a handler that only sends too, at its next send");
    send_frame(&t, 8, "\x03\xe9", 2, 1);
    is_int(server_stop(s), 0, "... and the server exits 0");
    client_close(&c);
    client_close(&t);
}

/* What needs every connection on one worker: module state shared between handlers. */
static void test_one_worker(void)
{
    struct server s;
    const char *args[] = {"--port", "0", "--workers", "1", "--metrics", "/metrics", dir, NULL};

    if (server_start(&s, args) != 0) {
        ok(0, "one worker: server starts");
        server_cleanup(&s);
        return;
    }
    test_other_connection(s.port);
    test_flood_from_elsewhere(s.port);
    test_pipelined_upgrade(s.port);
    is_int(server_stop(&s), 0, "one worker: exit status 0");
    server_cleanup(&s);
}

/* WebSockets are connections: they count against --max-conns. */
static void test_max_conns(void)
{
    struct server s;
    struct client a, b;
    struct response r;
    const char *args[] = {"--port", "0", "--workers", "1", "--max-conns", "2", dir, NULL};

    if (server_start(&s, args) != 0) {
        ok(0, "--max-conns 2: server starts");
        server_cleanup(&s);
        return;
    }
    ok(ws_open(&a, s.port, "/private?token=yes") == 0 &&
           ws_open(&b, s.port, "/private?token=yes") == 0,
       "--max-conns 2: two WebSockets open");
    is_int(fetch(s.port, "GET /private HTTP/1.1\r\nHost: t\r\n\r\n", &r), 503,
           "--max-conns 2: a third connection is refused (503)");
    response_free(&r);
    client_close(&a);
    client_close(&b);
    is_int(server_stop(&s), 0, "--max-conns 2: exit status 0");
    server_cleanup(&s);
}

int main(int argc, char **argv)
{
    struct server s;

    if (suite_setup(argc, argv))
        return 2;
    raise_fd_limit(4096);
    if (app_dir_make(dir, app_lua) < 0)
        return test_summary();
    {
        const char *args[] = {"--port", "0", "--workers", "2", "--metrics", "/metrics",
                              "--max-conns", "3000", dir, NULL};
        ok(server_start(&s, args) == 0, "server starts");
    }
    if (s.pid > 0) {
        test_handshake_errors(s.port);
        test_violations(s.port);
        ok(wait_for_log(&s, "ws ended: frame not masked 1002", io_timeout_ms),
           "ws:receive gives the violation and its code");
        ok(wait_for_log(&s, "ws ended: text not UTF-8 1007", io_timeout_ms),
           "... bad UTF-8");
        ok(wait_for_log(&s, "ws ended: idle timeout 1001", io_timeout_ms),
           "... the idle timeout, which the server closed for");
        test_client(s.port, n_wrap ? 100 : 1000);
        test_reload(&s);
        test_metrics_and_stop(&s);
    }
    server_cleanup(&s);
    test_one_worker();
    test_max_conns();
    app_dir_remove(dir);
    free(wrap_copy);
    return test_summary();
}
