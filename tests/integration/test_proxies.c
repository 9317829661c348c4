/*
 * test_proxies.c TYCHO_BINARY FIXTURE_DIR: --trusted-proxies over real
 * sockets against the real binary (127.0.0.1 only): without the flag the
 * forwarding headers are ignored; from a trusted peer X-Forwarded-For and
 * Forwarded (RFC 7239) give req.remote_addr (the right-most untrusted hop,
 * the left-most when all are trusted, the peer's on garbage or for=unknown),
 * X-Forwarded-Proto and proto= give req.scheme (tycho.https_redirect then lets
 * the request through); from an untrusted peer they are ignored; the access
 * log shows the client; bad values exit 2 naming the flag. The app is written
 * into a temporary directory. Ends with `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"

#include <unistd.h>

static char dir[] = "/tmp/tycho-proxies-XXXXXX";

static const char app_lua[] =
    "local app = require 'tycho'\n"
    "local redirect = tycho.https_redirect{ port = 8443 }\n"
    "app.use(function(req, res, nxt)\n"
    "  if req.path == '/secure' then return redirect(req, res, nxt) end\n"
    "  return nxt()\n"
    "end)\n"
    "app.get('/who', function(req) return req.remote_addr .. ' ' .. req.scheme end)\n"
    "app.get('/secure', function(req) return 'secure ' .. req.scheme end)\n";

/* GET path with the extra header lines (each ending \r\n): the body must be want. */
static void expect_who(int port, const char *path, const char *headers, const char *want,
                       const char *ctx)
{
    char req[1024];
    struct response r;

    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n", path,
             headers);
    if (fetch(port, req, &r) < 0) {
        ok(0, what(ctx, "a response"));
        return;
    }
    if (expect_status(&r, 200, ctx))
        expect_body(&r, want, ctx);
    response_free(&r);
}

static void test_no_flag(int port)
{
    expect_who(port, "/who", "", "127.0.0.1 http", "no flag: the peer");
    expect_who(port, "/who", "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n",
               "127.0.0.1 http", "no flag: X-Forwarded-For and -Proto are ignored");
    expect_who(port, "/who", "Forwarded: for=1.2.3.4;proto=https\r\n", "127.0.0.1 http",
               "no flag: Forwarded is ignored");
}

static void test_trusted(int port)
{
    expect_who(port, "/who", "", "127.0.0.1 http", "trusted: no header, the peer");
    expect_who(port, "/who", "X-Forwarded-For: 1.2.3.4\r\n", "1.2.3.4 http",
               "trusted: X-Forwarded-For");
    expect_who(port, "/who", "X-Forwarded-For: 6.6.6.6, 1.2.3.4\r\n", "1.2.3.4 http",
               "trusted: the right-most untrusted address");
    expect_who(port, "/who", "X-Forwarded-For: 1.2.3.4, 10.0.0.5\r\n", "1.2.3.4 http",
               "trusted: a trusted hop (10.0.0.0/8) is skipped");
    expect_who(port, "/who", "X-Forwarded-For: 10.0.0.7, 10.0.0.5\r\n", "10.0.0.7 http",
               "trusted: all trusted, the left-most");
    expect_who(port, "/who", "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 10.0.0.5\r\n",
               "1.2.3.4 http", "trusted: two fields are one list");
    expect_who(port, "/who", "Forwarded: for=\"[2001:db8::1]:4711\";proto=https\r\n",
               "2001:db8::1 https", "trusted: Forwarded, quoted IPv6 with a port, proto=");
    expect_who(port, "/who",
               "Forwarded: for=1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\nX-Forwarded-Proto: https\r\n",
               "1.2.3.4 http", "trusted: Forwarded comes before X-Forwarded-*");
    expect_who(port, "/who", "Forwarded: for=unknown\r\n", "127.0.0.1 http",
               "trusted: for=unknown keeps the peer");
    expect_who(port, "/who", "Forwarded: for=_hidden\r\n", "127.0.0.1 http",
               "trusted: an obfuscated identifier keeps the peer");
    expect_who(port, "/who", "X-Forwarded-For: not-an-address\r\n", "127.0.0.1 http",
               "trusted: garbage keeps the peer");
    expect_who(port, "/who", "X-Forwarded-For: 1.2.3.4, 1.2.3.4.5\r\n", "127.0.0.1 http",
               "trusted: garbage where the walk needs it keeps the peer");
    expect_who(port, "/who", "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n",
               "1.2.3.4 https", "trusted: X-Forwarded-Proto https");
    expect_who(port, "/who", "X-Forwarded-Proto: gopher\r\n", "127.0.0.1 http",
               "trusted: another X-Forwarded-Proto is ignored");
    expect_who(port, "/secure", "X-Forwarded-Proto: https\r\n", "secure https",
               "trusted: https_redirect lets an https request through");
    expect_status_of(port, "GET /secure HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 301,
                     "trusted: https_redirect redirects without X-Forwarded-Proto");
}

static void test_untrusted(int port)
{
    expect_who(port, "/who", "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n",
               "127.0.0.1 http", "untrusted peer: X-Forwarded-* ignored");
    expect_who(port, "/who", "Forwarded: for=1.2.3.4;proto=https\r\n", "127.0.0.1 http",
               "untrusted peer: Forwarded ignored");
    expect_status_of(port,
                     "GET /secure HTTP/1.1\r\nHost: t\r\nX-Forwarded-Proto: https\r\n"
                     "Connection: close\r\n\r\n",
                     301, "untrusted peer: https_redirect still redirects");
}

static void test_bad_values(void)
{
    const char *bad[] = {"10.0.0.0/33", "::1/129", "example.com", "10.0.0.0/8,", ""};
    char cmd[512], out[2048];

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cmd, sizeof cmd, "'%s' --trusted-proxies '%s' '%s' 2>&1", tycho_binary, bad[i],
                 dir);
        is_int(run_command(cmd, out, sizeof out), 2, what("bad value", "\"%s\": exit 2", bad[i]));
        ok(strstr(out, "tycho: --trusted-proxies: expected") != NULL,
           what("bad value", "\"%s\": the message names the flag", bad[i]));
    }
    snprintf(cmd, sizeof cmd, "'%s' --trusted-proxies '2001:db8::/32, ::1,127.0.0.1' --check '%s'"
             " 2>&1", tycho_binary, dir);
    is_int(run_command(cmd, out, sizeof out), 0, "IPv6 CIDRs and bare addresses are accepted");
}

int main(int argc, char **argv)
{
    struct server s;
    char log_path[] = "/tmp/tycho-proxies-log-XXXXXX";
    int log_fd;

    if (suite_setup(argc, argv))
        return 2;
    if (app_dir_make(dir, app_lua) < 0)
        return test_summary();
    {
        const char *args[] = {"--port", "0", "--workers", "1", dir, NULL};
        ok(server_start(&s, args) == 0, "server without --trusted-proxies starts");
    }
    if (s.pid > 0) {
        test_no_flag(s.port);
        is_int(server_stop(&s), 0, "no flag: exit status 0");
    }
    server_cleanup(&s);

    log_fd = mkstemp(log_path);
    ok(log_fd >= 0, "a temporary access log");
    if (log_fd >= 0)
        close(log_fd);
    {
        const char *args[] = {"--port", "0", "--workers", "1", "--trusted-proxies",
                              "127.0.0.1/32,10.0.0.0/8", "--access-log", log_path, dir, NULL};
        ok(server_start(&s, args) == 0, "server trusting 127.0.0.1/32,10.0.0.0/8 starts");
    }
    if (s.pid > 0) {
        test_trusted(s.port);
        expect_who(s.port, "/who?logged", "X-Forwarded-For: 9.8.7.6\r\n", "9.8.7.6 http",
                   "access log: the request");
        is_int(server_stop(&s), 0, "trusted: exit status 0");
        {
            size_t len = 0;
            char *log = slurp(log_path, &len);
            ok(log && strstr(log, "\n9.8.7.6 ") != NULL && strstr(log, "/who?logged") != NULL,
               "access log: the line shows the client, not the proxy");
            if (log && !strstr(log, "\n9.8.7.6 "))
                note("access log:\n%s", log);
            free(log);
        }
    }
    server_cleanup(&s);
    unlink(log_path);

    {
        const char *args[] = {"--port", "0", "--workers", "1", "--trusted-proxies",
                              "10.0.0.0/8,::1", dir, NULL};
        ok(server_start(&s, args) == 0, "server trusting 10.0.0.0/8,::1 starts");
    }
    if (s.pid > 0) {
        test_untrusted(s.port);
        is_int(server_stop(&s), 0, "untrusted: exit status 0");
    }
    server_cleanup(&s);

    test_bad_values();
    app_dir_remove(dir);
    free(wrap_copy);
    return test_summary();
}
