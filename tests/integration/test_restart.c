/*
 * test_restart.c TYCHO_BINARY FIXTURE_DIR: what a restart without refusing
 * connections stands on, over real sockets against the real binary:
 * --reuseport lets a second Tycho bind the port of a running one (without
 * it the second is refused), both serve, and the old one stops on SIGTERM
 * while the new one goes on; systemd's notifications (READY=1, RELOADING=1
 * then READY=1 on SIGHUP, STOPPING=1 on SIGTERM) reach the socket named by
 * $NOTIFY_SOCKET, here a datagram socket of the test standing in for
 * systemd; and socket activation (LISTEN_FDS), with a listening socket the
 * test passes at fd 3. Ends with `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"

#include <poll.h>
#include <sys/un.h>

static char dir[] = "/tmp/tycho-restart-XXXXXX";

static const char app_lua[] =
    "local app = require 'tycho'\n"
    "local name = os.getenv('TYCHO_TEST_INSTANCE') or '?'\n"
    "app.get('/who', function() return name end)\n";

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
    int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1, rc;
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
    snprintf(script, sizeof script, "LISTEN_PID=$$ LISTEN_FDS=1 exec %s --workers 1 %s",
             saved, dir);
    {
        const char *args[] = {"-c", script, NULL};
        tycho_binary = "/bin/sh";     /* server_start runs TYCHO_WRAP... BINARY args */
        rc = start_instance(&s, "S", args);
        tycho_binary = saved;
    }
    close(3);                         /* the server has its own copy */
    if (!ok(rc == 0, "LISTEN_FDS=1: the server starts on the passed socket"))
        return;
    is_int(s.port, ntohs(sa.sin_port), "it listens on the passed socket's port");
    ok(strstr(s.out, "sockets from systemd") != NULL, "its listening line says so");
    who(s.port, body, sizeof body);
    is_str(body, "S", "it serves on the passed socket");
    is_int(server_stop(&s), 0, "it stops (exit 0)");
    server_cleanup(&s);

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
    test_notify();
    test_activation();
    app_dir_remove(dir);
    return test_summary();
}
