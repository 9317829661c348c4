/*
 * test_restart.c TYCHO_BINARY FIXTURE_DIR: what a restart without refusing
 * connections stands on, over real sockets against the real binary:
 * --reuseport lets a second Tycho bind the port of a running one (without it
 * the second is refused), both serve, and the old one stops on SIGTERM while
 * the new one goes on; a stop answers a connection made before it whose
 * request comes after, and closes one that sends nothing within a second;
 * systemd's notifications (READY=1, RELOADING=1 then READY=1 on SIGHUP,
 * STOPPING=1 on SIGTERM) reach the socket named by $NOTIFY_SOCKET, here a
 * datagram socket of the test standing in for systemd; and socket activation
 * (LISTEN_FDS), with a listening socket the test passes at fd 3, which a
 * stopping Tycho leaves listening for the next one. Under load (clients
 * opening new connections without pause), an upgrade with --reuseport (the new
 * one started, the old one stopped) fails no request, with
 * net.ipv4.tcp_migrate_req=1 (the test sets it when it can, and puts the old
 * value back). Ends with `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/un.h>

static char dir[] = "/tmp/tycho-restart-XXXXXX";

static const char app_lua[] =
    "local app = require 'tycho'\n"
    "local name = os.getenv('TYCHO_TEST_INSTANCE') or '?'\n"
    "app.get('/who', function() return name end)\n"
    "app.ws('/ws', function(ws) ws:send('hi') end)\n";

/* Starts an instance named name (its /who answers it) with args. 0, or -1. */
static int start_instance(struct server *s, const char *name, const char *const *args)
{
    setenv("TYCHO_TEST_INSTANCE", name, 1);
    return server_start(s, args);
}

/* GET /who on port: the instance's name into out, or "" when nothing answered. */
static void who(int port, char *out, size_t cap)
{
    body_of(port, "/who", out, cap);
}

static void test_reuseport(void)
{
    struct server a, b;
    char port_arg[16], body[64], cmd[1024], out[4096];
    const char *args_a[] = {"--port", "0", "--reuseport", "--workers", "1", dir, NULL};
    int seen_a = 0, seen_b = 0, rc;

    if (start_instance(&a, "A", args_a) < 0) {
        ok(0, "--reuseport: the first instance starts");
        return;
    }
    snprintf(port_arg, sizeof port_arg, "%d", a.port);

    /* Without --reuseport, the port is taken. */
    snprintf(cmd, sizeof cmd, "timeout 20 %s --port %d --workers 1 %s 2>&1", tycho_binary,
             a.port, dir);
    rc = run_command(cmd, out, sizeof out);
    ok(rc == 1 && strstr(out, "Address already in use"),
       "without --reuseport, a second instance on the port is refused (exit 1)");
    if (!(rc == 1 && strstr(out, "Address already in use")))
        note("got exit %d: %s", rc, out);

    {
        const char *args_b[] = {"--port", port_arg, "--reuseport", "--workers", "1", dir, NULL};
        if (start_instance(&b, "B", args_b) < 0) {
            ok(0, "--reuseport: a second instance binds the same port");
            server_stop(&a);
            server_cleanup(&a);
            return;
        }
    }
    ok(b.port == a.port, "--reuseport: the second instance listens on the first one's port");
    /* The kernel spreads new connections over both (by a hash of the client's port). */
    for (int i = 0; i < 200 && !(seen_a && seen_b); i++) {
        who(a.port, body, sizeof body);
        seen_a |= strcmp(body, "A") == 0;
        seen_b |= strcmp(body, "B") == 0;
    }
    ok(seen_a && seen_b, "--reuseport: both instances answer on the port");
    is_int(server_stop(&a), 0, "the old instance stops on SIGTERM (exit 0)");
    server_cleanup(&a);
    {
        int all_b = 1;
        for (int i = 0; i < 50; i++) {
            who(b.port, body, sizeof body);
            all_b &= strcmp(body, "B") == 0;
        }
        ok(all_b, "after the old one stopped, the new one answers every connection");
    }
    is_int(server_stop(&b), 0, "the new instance stops on SIGTERM (exit 0)");
    server_cleanup(&b);
}

/*
 * A stop with new connections whose first request has not come: one sends it
 * after SIGTERM and is answered (Connection: close), one sends a WebSocket
 * handshake and is answered 503; one never sends and is
 * closed after a second's grace, so the stop lasts neither --header-timeout
 * (10 s by default) nor --drain-timeout.
 */
static void test_stop_new_connections(void)
{
    struct server s;
    struct client late, silent, upgrade;
    struct response r;
    const char *args[] = {"--port", "0", "--workers", "2", "--drain-timeout", "20", dir, NULL};
    long long t0;

    if (start_instance(&s, "S", args) < 0) {
        ok(0, "stop with new connections: the server starts");
        return;
    }
    if (client_connect(&late, s.port) < 0 || client_connect(&silent, s.port) < 0 ||
        client_connect(&upgrade, s.port) < 0) {
        ok(0, "stop with new connections: connect");
        server_stop(&s);
        server_cleanup(&s);
        return;
    }
    sleep_ms(n_wrap ? 2000 : 200);     /* accepted by now */
    t0 = now_ms();
    kill(s.pid, SIGTERM);
    wait_for_log(&s, "SIGTERM: stopping", io_timeout_ms);
    sleep_ms(n_wrap ? 300 : 100);     /* the workers have begun their drain */
    /* Both within the second a new connection has: the request, and a WebSocket handshake. */
    client_sends(&late, "GET /who HTTP/1.1\r\nHost: t\r\n\r\n");
    client_sends(&upgrade, "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n");
    read_response(&late, &r, 0);
    if (expect_status(&r, 200, "stop: a connection made before it, request sent after, answered"))
        expect_header(&r, "Connection", "close", "stop: that answer says Connection: close");
    response_free(&r);
    client_close(&late);
    read_response(&upgrade, &r, 0);
    expect_status(&r, 503, "stop: a WebSocket handshake after SIGTERM is answered 503");
    expect_body(&r, "server stopping\n", "stop: 503 server stopping");
    response_free(&r);
    client_close(&upgrade);
    is_int(server_stop(&s), 0, "stop with a connection that never sends: exit 0");
    note("stop with a connection that never sends: %lld ms", now_ms() - t0);
    ok(now_ms() - t0 < (n_wrap ? 9000 : 5000), "stop: a connection that never sends is closed "
       "after a second, not at --header-timeout or --drain-timeout");
    client_close(&silent);
    server_cleanup(&s);
}

/* ---- an upgrade under load ---- */

#define LOAD_THREADS 4
#define LOAD_MAX_PER_THREAD 50000     /* a bound on top of the time bound */

struct load {
    int port;
    atomic_bool stop;
    atomic_long served, refused, failed, by_a, by_b;
};

/* A client: a new connection per request, GET /who, until told to stop (60 s at most). */
static void *load_loop(void *arg)
{
    struct load *l = arg;
    long long until = now_ms() + 60000;

    for (int i = 0; i < LOAD_MAX_PER_THREAD && !atomic_load(&l->stop) && now_ms() < until; i++) {
        struct client c;
        struct response r;
        if (client_connect(&c, l->port) < 0) {
            atomic_fetch_add(&l->refused, 1);
            continue;
        }
        if (exchange(&c, "GET /who HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r) == 0 &&
            r.status == 200) {
            atomic_fetch_add(&l->served, 1);
            atomic_fetch_add(r.body && strcmp(r.body, "A") == 0 ? &l->by_a : &l->by_b, 1);
        } else {
            atomic_fetch_add(&l->failed, 1);
        }
        response_free(&r);
        client_close(&c);
    }
    return NULL;
}

/* net.ipv4.tcp_migrate_req set to want; the old value in *old. 0, or -1 when it cannot be. */
static int set_migrate_req(const char *want, char *old, size_t cap)
{
    const char *path = "/proc/sys/net/ipv4/tcp_migrate_req";
    FILE *f = fopen(path, "r");
    int rc = -1;

    if (!f || !fgets(old, (int)cap, f)) {
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    old[strcspn(old, "\n")] = '\0';
    if ((f = fopen(path, "w"))) {
        rc = fputs(want, f) < 0 ? -1 : 0;
        rc |= fclose(f);
    }
    return rc;
}

/*
 * A runs with --reuseport; four clients connect without pause; B starts on
 * the port, A gets SIGTERM and drains; the clients go on for a moment. The
 * kernel moves the connections waiting in A's accept queue to B
 * (tcp_migrate_req), and A answers those it accepted before the stop.
 */
static void test_upgrade_under_load(void)
{
    struct server a, b;
    struct load l = {0};
    pthread_t threads[LOAD_THREADS];
    char port_arg[16], old[16];
    const char *args_a[] = {"--port", "0", "--reuseport", "--workers", "2", dir, NULL};
    int started = 0;

    if (set_migrate_req("1", old, sizeof old) < 0) {
        note("skipped: an upgrade under load needs net.ipv4.tcp_migrate_req=1, which this "
             "test cannot set here (not root, or a kernel before 5.14)");
        return;
    }
    if (start_instance(&a, "A", args_a) < 0) {
        ok(0, "under load: A starts");
        set_migrate_req(old, old, sizeof old);
        return;
    }
    l.port = a.port;
    snprintf(port_arg, sizeof port_arg, "%d", a.port);
    for (int i = 0; i < LOAD_THREADS; i++)
        started += pthread_create(&threads[i], NULL, load_loop, &l) == 0;
    sleep_ms(n_wrap ? 3000 : 500);
    {
        const char *args_b[] = {"--port", port_arg, "--reuseport", "--workers", "2", dir, NULL};
        if (start_instance(&b, "B", args_b) < 0)
            ok(0, "under load: B starts beside A");
    }
    sleep_ms(n_wrap ? 3000 : 500);
    is_int(server_stop(&a), 0, "under load: A stops on SIGTERM (exit 0)");
    sleep_ms(n_wrap ? 3000 : 500);
    atomic_store(&l.stop, true);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    note("under load: %ld requests served (%ld by A, %ld by B), %ld refused, %ld failed",
         atomic_load(&l.served), atomic_load(&l.by_a), atomic_load(&l.by_b),
         atomic_load(&l.refused), atomic_load(&l.failed));
    ok(atomic_load(&l.by_a) > 0 && atomic_load(&l.by_b) > 0,
       "under load: both instances served some of the requests");
    is_int(atomic_load(&l.refused), 0, "under load: the upgrade refused no connection");
    is_int(atomic_load(&l.failed), 0, "under load: the upgrade failed no request");
    if (b.pid > 0)
        is_int(server_stop(&b), 0, "under load: B stops (exit 0)");
    server_cleanup(&a);
    server_cleanup(&b);
    if (set_migrate_req(old, port_arg, sizeof port_arg) < 0)
        note("could not put net.ipv4.tcp_migrate_req back to %s", old);
}

/* Reads datagrams from fd until one holds want (up to timeout_ms); 1 when seen. */
static int notified(int fd, const char *want, int timeout_ms, char *last, size_t cap)
{
    long long deadline = now_ms() + timeout_ms;

    while (now_ms() < deadline) {
        struct pollfd pfd = {fd, POLLIN, 0};
        ssize_t n;
        if (poll(&pfd, 1, (int)(deadline - now_ms())) <= 0)
            continue;
        n = recv(fd, last, cap - 1, 0);
        if (n <= 0)
            continue;
        last[n] = '\0';
        if (strstr(last, want))
            return 1;
    }
    return 0;
}

static void test_notify(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char path[100], msg[512];
    const char *args[] = {"--port", "0", "--workers", "1", dir, NULL};
    struct server s;
    int fd;

    snprintf(path, sizeof path, "%s/notify.sock", dir);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (!ok(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0,
            "a datagram socket stands in for systemd's")) {
        if (fd >= 0)
            close(fd);
        return;
    }
    setenv("NOTIFY_SOCKET", path, 1);
    if (start_instance(&s, "N", args) < 0) {
        ok(0, "notify: the server starts");
        unsetenv("NOTIFY_SOCKET");
        close(fd);
        unlink(path);
        return;
    }
    unsetenv("NOTIFY_SOCKET");
    ok(notified(fd, "READY=1", io_timeout_ms, msg, sizeof msg), "READY=1 once it serves");
    kill(s.pid, SIGHUP);
    ok(notified(fd, "RELOADING=1", io_timeout_ms, msg, sizeof msg) &&
           strstr(msg, "\nMONOTONIC_USEC="),
       "SIGHUP: RELOADING=1 with MONOTONIC_USEC");
    ok(notified(fd, "READY=1", io_timeout_ms, msg, sizeof msg), "then READY=1 again");
    kill(s.pid, SIGTERM);
    ok(notified(fd, "STOPPING=1", io_timeout_ms, msg, sizeof msg), "SIGTERM: STOPPING=1");
    is_int(server_stop(&s), 0, "it stops (exit 0)");
    server_cleanup(&s);
    close(fd);
    unlink(path);

    /* A NOTIFY_SOCKET that is not a socket path is logged, and changes nothing else. */
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    if (start_instance(&s, "N", args) == 0) {
        char body[64];
        who(s.port, body, sizeof body);
        is_str(body, "N", "a bad NOTIFY_SOCKET: the server serves anyway");
        ok(wait_for_log(&s, "NOTIFY_SOCKET=relative/path: not a socket path", io_timeout_ms),
           "a bad NOTIFY_SOCKET is logged");
        server_stop(&s);
        server_cleanup(&s);
    } else {
        ok(0, "a bad NOTIFY_SOCKET: the server starts");
    }
    unsetenv("NOTIFY_SOCKET");
}

/*
 * Socket activation: a listening socket at fd 3 with LISTEN_PID and
 * LISTEN_FDS, as systemd passes it (sh sets LISTEN_PID to its own pid, which
 * exec keeps for Tycho).
 */
static void test_activation(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1, rc, keep;
    char script[1024], body[64], cmd[1024], out[4096];
    const char *saved = tycho_binary;
    struct server s;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (!ok(lfd >= 0 && bind(lfd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
                listen(lfd, 64) == 0 && getsockname(lfd, (struct sockaddr *)&sa, &len) == 0 &&
                dup2(lfd, 3) == 3,
            "a listening socket at fd 3, as systemd passes it")) {
        if (lfd >= 0)
            close(lfd);
        return;
    }
    if (lfd != 3)
        close(lfd);
    keep = dup(3);                    /* systemd keeps its copy across restarts */
    snprintf(script, sizeof script, "LISTEN_PID=$$ LISTEN_FDS=1 exec %s --workers 1 %s",
             saved, dir);
    {
        const char *args[] = {"-c", script, NULL};
        tycho_binary = "/bin/sh";     /* server_start runs TYCHO_WRAP... BINARY args */
        rc = start_instance(&s, "S", args);
        tycho_binary = saved;
    }
    close(3);                         /* the server has its own copy */
    if (!ok(rc == 0, "LISTEN_FDS=1: the server starts on the passed socket")) {
        close(keep);
        return;
    }
    is_int(s.port, ntohs(sa.sin_port), "it listens on the passed socket's port");
    ok(strstr(s.out, "sockets from systemd") != NULL, "its listening line says so");
    who(s.port, body, sizeof body);
    is_str(body, "S", "it serves on the passed socket");
    is_int(server_stop(&s), 0, "it stops (exit 0)");
    server_cleanup(&s);

    /* The stopped server left the socket listening: a connection made now waits for the next. */
    {
        struct client c;
        struct response r;
        int port = ntohs(sa.sin_port);
        rc = dup2(keep, 3) == 3 ? 0 : -1;   /* first, so that the client's fd is not 3 */
        ok(client_connect(&c, port) == 0 &&
               client_sends(&c, "GET /who HTTP/1.1\r\nHost: t\r\n\r\n") == 0,
           "between two servers, a client connects to the passed socket and sends");
        if (rc == 0) {
            const char *args[] = {"-c", script, NULL};
            tycho_binary = "/bin/sh";
            rc = start_instance(&s, "T", args);
            tycho_binary = saved;
            close(3);
        }
        if (ok(rc == 0, "the next server starts on the same passed socket")) {
            read_response(&c, &r, 0);
            is_str(r.body ? r.body : "", "T", "and answers the client that connected meanwhile");
            response_free(&r);
            is_int(server_stop(&s), 0, "the next server stops (exit 0)");
        }
        server_cleanup(&s);
        client_close(&c);
    }
    close(keep);

    snprintf(cmd, sizeof cmd, "sh -c 'LISTEN_PID=$$ LISTEN_FDS=2 exec %s --workers 1 %s' "
             "3</dev/null 4</dev/null 2>&1", tycho_binary, dir);
    rc = run_command(cmd, out, sizeof out);
    ok(rc == 1 && strstr(out, "tycho: LISTEN_FDS=2: expected 1 socket (--port's)"),
       "LISTEN_FDS=2 without --tls-cert: refused, saying what it expected");
    snprintf(cmd, sizeof cmd, "sh -c 'LISTEN_PID=$$ LISTEN_FDS=1 exec %s --workers 1 %s' "
             "3</dev/null 2>&1", tycho_binary, dir);
    rc = run_command(cmd, out, sizeof out);
    ok(rc == 1 && strstr(out, "tycho: LISTEN_FDS: fd 3 (for --port) is not a listening TCP "
                              "socket (a socket unit needs ListenStream=)"),
       "fd 3 not a listening socket: refused");
    if (rc != 1)
        note("got exit %d: %s", rc, out);
}

int main(int argc, char **argv)
{
    int rc = suite_setup(argc, argv);

    if (rc)
        return rc;
    if (app_dir_make(dir, app_lua) < 0)
        return test_summary();
    test_reuseport();
    test_stop_new_connections();
    test_upgrade_under_load();
    test_notify();
    test_activation();
    app_dir_remove(dir);
    return test_summary();
}
