/*
 * test_https_out.c TYCHO_BINARY FIXTURE_DIR: outbound HTTPS (tycho.http with
 * https:// urls) against real TLS backends on loopback: Python's ssl and
 * http.server (tls/https_backend.py, run with /usr/bin/python3), with a
 * throwaway PKI made at test time (tls/mkcerts.sh). Covers trust (ca_file,
 * the system store by default, insecure_skip_verify), every refusal with its
 * message (unknown CA, name and address mismatch, expired, handshake
 * timeout, files that cannot be loaded), SNI, mutual TLS per call and per
 * pool, pooled reuse counted at the backend, session resumption after the
 * backend closed, an idle connection the backend closes, separate pools for
 * http and https and for two TLS settings, a client leaving mid-handshake,
 * TLS 1.2 resumption and TLS 1.1 refused, metrics labels, and misuse. The
 * fixture is FIXTURE_DIR/../https_out. One worker. Times are never asserted.
 * Ends with `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"
#include "backend.h"

#include <signal.h>
#include <sys/wait.h>

enum { B_MAIN, B_ROGUE, B_EXPIRED, B_OTHER, B_MTLS, B_TLS12, B_TLS11, B_COUNT };
static const char *const names[B_COUNT] = {"main", "rogue",  "expired", "other",
                                           "mtls", "tls12", "tls11"};
static int ports[B_COUNT], control_port;
static pid_t py_pid = -1;
static int py_stdin = -1;           /* closing it stops the backends */
static int hang_fd = -1, hang_port; /* listens, never accepts: TCP connects, TLS never answers */
static struct backend plain;
static char certs[256];

/* Starts https_backend.py with every backend; TYCHO_OK when it said ready. */
static int tls_backends_start(void)
{
    int in[2], out[2];
    char script[4096], line[256], buf[4096];
    size_t len = 0;
    long long deadline = now_ms() + 15000;
    FILE *f;

    snprintf(script, sizeof script, "%s/../tls/https_backend.py", fixture_dir);
    if (pipe(in) < 0 || pipe(out) < 0)
        return -1;
    py_pid = fork();
    if (py_pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        execl("/usr/bin/python3", "python3", script, certs, "main:server:server",
              "rogue:rogue:rogue", "expired:expired:expired", "other:other:other",
              "mtls:server:server:client", "tls12:server:server:tls12",
              "tls11:server:server:tls11", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    py_stdin = in[1];
    if (py_pid < 0)
        return -1;
    f = fdopen(out[0], "r");
    while (f && now_ms() < deadline && fgets(line, sizeof line, f)) {
        char name[64];
        int port;
        if (len + strlen(line) < sizeof buf) {
            memcpy(buf + len, line, strlen(line) + 1);
            len += strlen(line);
        }
        if (strncmp(line, "ready", 5) == 0) {
            fclose(f);
            return 0;
        }
        if (sscanf(line, "%63s %d", name, &port) != 2)
            continue;
        if (strcmp(name, "control") == 0)
            control_port = port;
        for (int i = 0; i < B_COUNT; i++)
            if (strcmp(name, names[i]) == 0)
                ports[i] = port;
    }
    note("https_backend.py said: %.*s", (int)len, buf);
    if (f)
        fclose(f);
    return -1;
}

static void tls_backends_stop(void)
{
    int status;

    if (py_stdin >= 0)
        close(py_stdin);
    if (py_pid > 0) {
        kill(py_pid, SIGTERM);
        waitpid(py_pid, &status, 0);
    }
    py_pid = -1;
}

/* A socket that listens on loopback and never accepts (the kernel completes the connects). */
static int hang_start(void)
{
    struct sockaddr_in sa = {0};
    socklen_t sl = sizeof sa;

    hang_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (hang_fd < 0 || bind(hang_fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(hang_fd, 16) < 0 || getsockname(hang_fd, (struct sockaddr *)&sa, &sl) < 0)
        return -1;
    hang_port = ntohs(sa.sin_port);
    return 0;
}

static int get(int port, const char *path, struct response *r)
{
    char req[1024];

    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    return fetch(port, req, r);
}

/* GET path, the answer dropped. */
static void call_only(int port, const char *path)
{
    struct response r;

    get(port, path, &r);
    response_free(&r);
}

/* A number field of a JSON object body ("name":N or "name": N), or -1. */
static long json_number(const char *body, const char *name)
{
    char key[64];
    const char *p;

    snprintf(key, sizeof key, "\"%s\":", name);
    p = body ? strstr(body, key) : NULL;
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

/* A string field ("name": "V") of a JSON object body into out; "" if none. */
static void json_string(const char *body, const char *name, char *out, size_t cap)
{
    char key[64];
    const char *p, *end;

    snprintf(key, sizeof key, "\"%s\": \"", name);
    out[0] = '\0';
    if (!body || !(p = strstr(body, key)))
        return;
    p += strlen(key);
    end = strchr(p, '"');
    if (end && (size_t)(end - p) < cap) {
        memcpy(out, p, (size_t)(end - p));
        out[end - p] = '\0';
    }
}

/* What backend b saw (https_backend.py's control port), field name. */
static long seen(int b, const char *name)
{
    struct response r;
    char path[64];
    long v;

    snprintf(path, sizeof path, "/stats/%s", names[b]);
    get(control_port, path, &r);
    v = r.status == 200 ? json_number(r.body, name) : -1;
    response_free(&r);
    return v;
}

static void seen_string(int b, const char *name, char *out, size_t cap)
{
    struct response r;
    char path[64];

    snprintf(path, sizeof path, "/stats/%s", names[b]);
    get(control_port, path, &r);
    json_string(r.status == 200 ? r.body : NULL, name, out, cap);
    response_free(&r);
}

/* tycho.http.stats through the fixture: path like "/stats/main?host=localhost", field name. */
static long stat_of(int port, const char *path, const char *name)
{
    struct response r;
    long v;

    get(port, path, &r);
    v = r.status == 200 ? json_number(r.body, name) : -1;
    if (v < 0)
        note("%s: %d %s", path, r.status, r.body ? r.body : "(none)");
    response_free(&r);
    return v;
}

/* GET path on the server; the status is want and the body has text (else a note). */
static void expect_call(int port, const char *path, int want, const char *text, const char *ctx)
{
    struct response r;

    get(port, path, &r);
    ok(r.status == want && r.body && strstr(r.body, text), ctx);
    if (!(r.status == want && r.body && strstr(r.body, text)))
        note("%s: got %d %s (wanted %d with \"%s\")", path, r.status, r.body ? r.body : "",
             want, text);
    response_free(&r);
}

static void test_trust(int port)
{
    char path[256], want[256];

    snprintf(path, sizeof path, "/call/main?host=127.0.0.1");
    expect_call(port, path, 200, "ok 200 tls ok /hello", "ca_file: a call to 127.0.0.1 succeeds");
    expect_call(port, "/call/main?host=localhost", 200, "ok 200 tls ok /hello",
                "ca_file: a call to localhost succeeds");
    expect_call(port, "/request/main", 200, "ok 200 tls ok /req",
                "tycho.http.request takes the TLS options in its table");
    snprintf(want, sizeof want,
             "error: localhost:%d: tls: certificate verify failed: unable to get local issuer "
             "certificate", ports[B_MAIN]);
    expect_call(port, "/call/main?ca=none", 502, want,
                "no ca_file: the system store is used, and it does not trust the test CA");
    snprintf(want, sizeof want,
             "error: localhost:%d: tls: certificate verify failed: unable to get local issuer "
             "certificate", ports[B_ROGUE]);
    expect_call(port, "/call/rogue", 502, want, "a certificate from an unknown CA is refused");
    snprintf(want, sizeof want, "error: localhost:%d: tls: certificate verify failed: "
             "certificate has expired", ports[B_EXPIRED]);
    expect_call(port, "/call/expired", 502, want, "an expired certificate is refused");
    snprintf(want, sizeof want, "error: localhost:%d: tls: certificate verify failed: "
             "hostname mismatch", ports[B_OTHER]);
    expect_call(port, "/call/other", 502, want,
                "a certificate for another name is refused (hostname mismatch)");
    snprintf(want, sizeof want, "error: 127.0.0.1:%d: tls: certificate verify failed: "
             "IP address mismatch", ports[B_OTHER]);
    expect_call(port, "/call/other?host=127.0.0.1", 502, want,
                "a certificate without the address is refused (IP address mismatch)");
    expect_call(port, "/call/rogue?insecure=1&ca=none", 200, "ok 200 tls ok /hello",
                "insecure_skip_verify: the rogue certificate is taken");
    expect_call(port, "/call/other?insecure=1", 200, "ok 200 tls ok /hello",
                "insecure_skip_verify: the name is not checked either");
}

static void test_files(int port, const struct server *s)
{
    char want[1024];

    expect_call(port, "/call/main?ca=bad", 502,
                "error: tls: cannot load ca_file /nonexistent/ca.pem: No such file or directory",
                "a ca_file that is not there: nil and a message naming it");
    snprintf(want, sizeof want, "error: tls: cannot load client_cert %s/ca.key: ", certs);
    expect_call(port, "/call/mtls?cert=bad", 502, want,
                "a client_cert that is not a certificate: nil and a message naming it");
    snprintf(want, sizeof want, "error: tls: client_key %s/server.key does not match "
             "client_cert %s/client.pem", certs, certs);
    expect_call(port, "/call/mtls?cert=mismatch", 502, want,
                "a client_key of another certificate: nil and a message naming both");
    ok(wait_for_log(s, "insecure_skip_verify: its certificate and name are not checked", 5000),
       "insecure_skip_verify logs a warning");
}

static void test_sni(int port)
{
    char sni[128];
    long before = seen(B_OTHER, "handshakes");

    /* other's pools are fresh here only for these settings: each call below opens its own. */
    expect_call(port, "/call/other?insecure=1&host=127.0.0.1", 200, "ok 200",
                "a call to an address");
    ok(seen(B_OTHER, "handshakes") == before + 1, "SNI: the call made a handshake");
    seen_string(B_OTHER, "sni", sni, sizeof sni);
    is_str(sni, "", "SNI: none is sent for an address");
    call_only(port, "/call/main?host=localhost&ca=ca2");
    seen_string(B_MAIN, "sni", sni, sizeof sni);
    is_str(sni, "localhost", "SNI: the host name is sent");
}

static void test_mtls(int port)
{
    char cn[128], want[256];

    snprintf(want, sizeof want, "error: 127.0.0.1:%d: tls: ", ports[B_MTLS]);
    /* 127.0.0.1: not the pool set up with a client certificate (localhost, below). */
    expect_call(port, "/call/mtls?host=127.0.0.1", 502, want,
                "mutual TLS: without a client certificate, an error");
    expect_call(port, "/call/mtls?host=127.0.0.1", 502, "certificate required",
                "mutual TLS: ... saying the backend wanted a certificate");
    expect_call(port, "/call/mtls?host=127.0.0.1&cert=1", 200, "ok 200 tls ok /hello",
                "mutual TLS: with client_cert and client_key, 200");
    seen_string(B_MTLS, "client_cn", cn, sizeof cn);
    is_str(cn, "Tycho Test Client", "mutual TLS: the backend saw the client certificate");
    expect_call(port, "/pooled", 200, "ok 200 tls ok /pooled",
                "mutual TLS from the pool's own settings (tycho.http.pool)");
    expect_call(port, "/pool/mtls", 200, "client.pem", "tycho.http.pool shows the TLS settings");
}

static void test_reuse_and_resumption(int port)
{
    long conns, hs, resumed, t_resumed;
    const int n = 20;

    /* A pool of its own (ca2: another file with the same CA): the backend counts from here. */
    conns = seen(B_MAIN, "connections");
    for (int i = 0; i < n; i++)
        expect_call(port, "/call/main?host=127.0.0.1&ca=ca2", 200, "ok 200",
                    "sequential calls on one pool");
    is_int(seen(B_MAIN, "connections") - conns, 1,
           "pool reuse: 20 sequential calls, one TCP connection at the backend");
    is_int(stat_of(port, "/stats/main?host=127.0.0.1&ca=ca2", "reused"), n - 1,
           "pool reuse: tycho.http.stats counts 19 reused");
    /* The backend closes after a response; the next call connects again and resumes. */
    hs = seen(B_MAIN, "handshakes");
    resumed = seen(B_MAIN, "resumed");
    t_resumed = stat_of(port, "/stats/main?host=127.0.0.1&ca=ca2", "tls_resumed");
    expect_call(port, "/call/main?host=127.0.0.1&ca=ca2&path=close", 200, "ok 200 closing",
                "the backend answers and closes");
    expect_call(port, "/call/main?host=127.0.0.1&ca=ca2", 200, "ok 200",
                "the next call after the close");
    is_int(seen(B_MAIN, "handshakes") - hs, 1, "resumption: one new handshake");
    is_int(seen(B_MAIN, "resumed") - resumed, 1,
           "resumption: the backend resumed the session (session_reused)");
    is_int(stat_of(port, "/stats/main?host=127.0.0.1&ca=ca2", "tls_resumed") - t_resumed, 1,
           "resumption: tycho.http.stats' tls_resumed counts it");
    is_int(stat_of(port, "/stats/main?host=127.0.0.1&ca=ca2", "tls_handshakes"), 2,
           "tls_handshakes counts both connections' handshakes");
    /* Two TLS settings never share: the ca.pem pool to the same host:port has its own. */
    is_int(stat_of(port, "/stats/main?host=127.0.0.1", "connects"), 1,
           "two ca_file settings: two pools (the ca.pem one made its own connection)");
}

/* TLS 1.2: a session from the handshake itself, resumed by session id or ticket; 1.1 refused. */
static void test_tls12(int port)
{
    char want[128];

    expect_call(port, "/call/tls12?path=close", 200, "ok 200 closing", "TLS 1.2: a call");
    expect_call(port, "/call/tls12", 200, "ok 200 tls ok", "TLS 1.2: the next call connects again");
    is_int(seen(B_TLS12, "handshakes"), 2, "TLS 1.2: two handshakes");
    is_int(seen(B_TLS12, "resumed"), 1, "TLS 1.2: the second resumed the first's session");
    is_int(stat_of(port, "/stats/tls12", "tls_resumed"), 1, "TLS 1.2: tls_resumed counts it");
    snprintf(want, sizeof want, "error: localhost:%d: tls: handshake failed: ", ports[B_TLS11]);
    expect_call(port, "/call/tls11", 502, want, "a backend with TLS 1.1 at most is refused");
}

/*
 * A body with no length ends at the close: whole with a close_notify before
 * the TCP close; an error without one (anyone on the path can forge a close).
 */
static void test_body_to_close(int port)
{
    char want[200];

    expect_call(port, "/call/main?host=localhost&path=eof-notify", 200,
                "ok 200 to the end to the end", "a body ended by close_notify and the close");
    snprintf(want, sizeof want, "error: localhost:%d: tls: unexpected eof while reading",
             ports[B_MAIN]);
    expect_call(port, "/call/main?host=localhost&path=eof-cut", 502, want,
                "a body ended by a TCP close without close_notify is an error");
}

/* The backend closes an idle connection (close_notify): it is dropped, the next call connects. */
static void test_idle_close(int port)
{
    long conns;
    long long deadline;

    expect_call(port, "/call/main?host=localhost&path=close-later", 200, "ok 200",
                "a response after which the backend closes the idle connection");
    deadline = now_ms() + 10000;
    while (stat_of(port, "/stats/main?host=localhost", "idle") != 0 && now_ms() < deadline)
        sleep_ms(20);
    is_int(stat_of(port, "/stats/main?host=localhost", "idle"), 0,
           "idle close: the closed connection left the pool");
    conns = seen(B_MAIN, "connections");
    expect_call(port, "/call/main?host=localhost", 200, "ok 200",
                "idle close: the next call succeeds");
    is_int(seen(B_MAIN, "connections") - conns, 1, "idle close: ... on a new connection");
}

static void test_handshake_timeout(int port)
{
    char want[128];

    snprintf(want, sizeof want, "error: 127.0.0.1:%d: tls: handshake timed out", hang_port);
    expect_call(port, "/call/hang?host=127.0.0.1", 502, want,
                "a backend that never answers the handshake: timed out within connect_timeout");
}

/* A client that leaves while its call is mid-handshake: the connection is closed, none stays. */
static void test_client_leaves(int port)
{
    struct client c;
    long long deadline;

    if (client_connect(&c, port) == 0) {
        client_sends(&c, "GET /call/hang?host=127.0.0.1 HTTP/1.1\r\nHost: t\r\n\r\n");
        sleep_ms(100);
        client_close(&c);
    }
    deadline = now_ms() + 10000;
    while (stat_of(port, "/stats/hang?host=127.0.0.1", "open") != 0 && now_ms() < deadline)
        sleep_ms(20);
    is_int(stat_of(port, "/stats/hang?host=127.0.0.1", "open"), 0,
           "client left mid-handshake: no connection stays open");
    expect_call(port, "/call/main?host=localhost", 200, "ok 200",
                "client left mid-handshake: the server carries on");
}

/* Not TLS at the other end, and nothing at all. */
static void test_not_tls(int port, int refused_port)
{
    char want[128];

    snprintf(want, sizeof want, "error: 127.0.0.1:%d: tls: handshake failed: ", control_port);
    expect_call(port, "/call/plain?host=127.0.0.1", 502, want,
                "https:// to a plain HTTP backend: the handshake fails");
    snprintf(want, sizeof want, "error: 127.0.0.1:%d: connect: Connection refused", refused_port);
    expect_call(port, "/call/refused?host=127.0.0.1", 502, want,
                "https:// to a closed port: connect: Connection refused");
}

/* A loopback port nobody listens on (bound, then closed). */
static int closed_port(void)
{
    struct sockaddr_in sa = {0};
    socklen_t sl = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = 9;

    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static void test_plain(int port)
{
    long https_conns = stat_of(port, "/stats/main?host=localhost", "connects");

    expect_call(port, "/plain/plain", 200, "ok 200 hello", "http:// still works");
    expect_call(port, "/plain/main", 502, "error: ", "http:// to a TLS port: an error");
    is_int(stat_of(port, "/plainstats/main", "connects"), 1,
           "http:// to the TLS port: a pool of its own, which made the connection");
    is_int(stat_of(port, "/stats/main?host=localhost", "connects"), https_conns,
           "https:// to the same host:port: its pool made none");
    expect_call(port, "/call/main?host=localhost", 200, "ok 200",
                "https:// to the same host:port still answers");
}

static void test_metrics(int mport)
{
    struct response r;
    char want[256];

    if (!mport) {
        ok(0, "metrics: the server said where its metrics are");
        return;
    }
    get(mport, "/metrics", &r);
    snprintf(want, sizeof want, "tycho_backend_connects_total{backend=\"https://localhost:%d\"}",
             ports[B_MAIN]);
    ok(r.body && strstr(r.body, want), "metrics: an https backend's label has the scheme");
    snprintf(want, sizeof want, "tycho_backend_connects_total{backend=\"localhost:%d\"}",
             plain.port);
    ok(r.body && strstr(r.body, want), "metrics: an http backend's label is host:port as before");
    response_free(&r);
}

static void test_misuse(int port)
{
    static const struct {
        const char *kind, *want;
    } cases[] = {
        {"httpca", "tycho.http.get: ca_file is for https:// urls"},
        {"insecure", "tycho.http.get: insecure_skip_verify must be true or false"},
        {"cafile", "tycho.http.get: ca_file must be a string (a file name)"},
        {"poolhttp", "tycho.http.pool: ca_file is for https:// backends"},
        {"poolbad", "tycho.http.pool: tls: cannot load ca_file /nonexistent/ca.pem: No such "
                    "file or directory"},
        {"scheme", "tycho.http.get: only http:// and https:// urls are supported, not ftp://"},
        {"backend", "tycho.http.stats: expected \"host:port\" or \"https://host[:port]\", got "
                    "\"https://\""},
    };
    char path[64], name[96];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(path, sizeof path, "/misuse/%s", cases[i].kind);
        snprintf(name, sizeof name, "misuse: %s", cases[i].kind);
        expect_call(port, path, 200, cases[i].want, name);
    }
}

/* A bad ca_file in tycho.http.pool at the top of a script stops start-up, naming the line. */
static void test_load_time(void)
{
    char dir[] = "/tmp/tycho-test-https-XXXXXX", cmd[512], out[2048];

    if (app_dir_make(dir, "tycho.http.pool('https://127.0.0.1:9', "
                          "{ ca_file = '/nonexistent/ca.pem' })\n") < 0)
        return;
    snprintf(cmd, sizeof cmd, "timeout 20 %s --port 0 %s 2>&1", tycho_binary, dir);
    ok(run_command(cmd, out, sizeof out) != 0, "load time: a pool whose ca_file cannot be loaded "
                                               "stops start-up");
    ok(strstr(out, "app.lua:1: tycho.http.pool: tls: cannot load ca_file /nonexistent/ca.pem: No "
                   "such file or directory") != NULL,
       "load time: the error names the line, the file and why");
    if (!strstr(out, "app.lua:1: tycho.http.pool"))
        note("got: %s", out);
    app_dir_remove(dir);
}

int main(int argc, char **argv)
{
    struct server s;
    char dir[4096], env[64], tmp[] = "/tmp/tycho-test-pki-XXXXXX", cmd[8192], out[4096];
    const char *at;
    int rc, mport = 0, refused = closed_port();

    if (suite_setup(argc, argv))
        return 2;
    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(tmp)) {
        ok(0, "a temporary folder for the test PKI");
        return test_summary();
    }
    snprintf(certs, sizeof certs, "%s/certs", tmp);
    snprintf(cmd, sizeof cmd, "sh %s/../tls/mkcerts.sh %s && cp %s/ca.pem %s/ca-copy.pem 2>&1",
             fixture_dir, certs, certs, certs);
    rc = run_command(cmd, out, sizeof out);
    ok(rc == 0, "tls/mkcerts.sh makes the test PKI");
    if (rc != 0) {
        note("%s", out);
        return test_summary();
    }
    rc = tls_backends_start();
    ok(rc == 0, "the TLS backends (https_backend.py) listen on loopback");
    ok(hang_start() == 0 && backend_start(&plain, 0) == 0, "a silent listener and a plain backend");
    if (rc == 0) {
        setenv("TYCHO_TEST_TLS_DIR", certs, 1);
        for (int i = 0; i < B_COUNT; i++) {
            char name[64];
            snprintf(name, sizeof name, "TYCHO_TEST_TLS_%s", names[i]);
            for (char *c = name; *c; c++)
                *c = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
            snprintf(env, sizeof env, "%d", ports[i]);
            setenv(name, env, 1);
        }
        snprintf(env, sizeof env, "%d", hang_port);
        setenv("TYCHO_TEST_TLS_HANG", env, 1);
        snprintf(env, sizeof env, "%d", plain.port);
        setenv("TYCHO_TEST_PLAIN", env, 1);
        snprintf(env, sizeof env, "%d", control_port);   /* Python's http.server: answers 400 */
        setenv("TYCHO_TEST_TLS_PLAIN", env, 1);
        snprintf(env, sizeof env, "%d", refused);
        setenv("TYCHO_TEST_TLS_REFUSED", env, 1);
        snprintf(dir, sizeof dir, "%s/../https_out", fixture_dir);
        {
            const char *args[] = {"--port", "0", "--workers", "1", "--metrics-addr",
                                  "127.0.0.1:0", dir, NULL};
            rc = server_start(&s, args);
            ok(rc == 0, "server (one worker) starts");
        }
        if (rc == 0) {
            at = strstr(s.out, "metrics on http://127.0.0.1:");
            if (at)
                mport = atoi(at + strlen("metrics on http://127.0.0.1:"));
            test_trust(s.port);
            test_files(s.port, &s);
            test_sni(s.port);
            test_mtls(s.port);
            test_reuse_and_resumption(s.port);
            test_idle_close(s.port);
            test_body_to_close(s.port);
            test_tls12(s.port);
            test_handshake_timeout(s.port);
            test_not_tls(s.port, refused);
            test_client_leaves(s.port);
            test_plain(s.port);
            test_metrics(mport);
            test_misuse(s.port);
            is_int(server_stop(&s), 0, "server: exit status 0 after SIGTERM");
        }
        server_cleanup(&s);
    }
    test_load_time();
    tls_backends_stop();
    backend_stop(&plain);
    if (hang_fd >= 0)
        close(hang_fd);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    run_command(cmd, out, sizeof out);
    free(wrap_copy);
    return test_summary();
}
