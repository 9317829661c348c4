/*
 * test_proxy_protocol.c TYCHO_BINARY FIXTURE_DIR: --proxy-protocol over real
 * sockets against the real binary (127.0.0.1 and 127.0.0.2 only). PROXY v1
 * (TCP4, TCP6, UNKNOWN) and v2 (IPv4, IPv6, LOCAL, with TLVs) headers give
 * req.remote_addr and the access log's address; keep-alive requests after
 * one header; headers split over several writes with pauses; X-Forwarded-For
 * counts only when the PROXY source is itself trusted; v1 and v2 on
 * --tls-port before the TLS handshake (req.scheme https); malformed
 * headers of many kinds, none, a truncated one that times out, and a peer not
 * in --trusted-proxies are each closed without an answer while the next good
 * connection is served, and tycho_proxy_protocol_errors_total counts them;
 * --max-conns-per-ip counts the PROXY source (two sources through the same
 * peer are not limited together; a close releases its source); a real HAProxy
 * (send-proxy, send-proxy-v2, to --port and --tls-port, its health checks with
 * check-send-proxy counted as no error) with the client on 127.0.0.2; curl's
 * --haproxy-protocol; the start errors. The test PKI is made at test time by
 * tests/integration/tls/mkcerts.sh; the app is written into a temporary
 * directory. Ends with `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[] = "/tmp/tycho-pp-app-XXXXXX";
static char pki[] = "/tmp/tycho-pp-pki-XXXXXX";

static const char app_lua[] =
    "local app = require 'tycho'\n"
    "app.get('/who', function(req) return req.remote_addr .. ' ' .. req.scheme end)\n";

static const unsigned char v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A version 2 header into out: ver_cmd, fam, then the block (n bytes). Returns its length. */
static size_t v2(unsigned char *out, unsigned char ver_cmd, unsigned char fam,
                 const unsigned char *block, size_t n)
{
    memcpy(out, v2_sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (unsigned char)(n >> 8);
    out[15] = (unsigned char)n;
    if (n)
        memcpy(out + 16, block, n);
    return 16 + n;
}

/* A v2 PROXY TCP/IPv4 header from src (text) to 127.0.0.1:80. */
static size_t v2_inet(unsigned char *out, const char *src)
{
    unsigned char block[12] = {0};

    inet_pton(AF_INET, src, block);
    inet_pton(AF_INET, "127.0.0.1", block + 4);
    block[8] = 0x9C, block[9] = 0x40, block[11] = 80;
    return v2(out, 0x21, 0x11, block, sizeof block);
}

/* A v1 TCP4 line from src. */
static const char *v1_line(const char *src, char *buf, size_t cap)
{
    snprintf(buf, cap, "PROXY TCP4 %s 127.0.0.1 40000 80\r\n", src);
    return buf;
}

static const char who_req[] = "GET /who HTTP/1.1\r\nHost: t\r\n\r\n";
static const char who_close[] = "GET /who HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/*
 * Connects from src (NULL: 127.0.0.1), sends the header (len bytes) then req,
 * and expects a 200 whose body is want.
 */
static void expect_via(int port, const char *src, const void *hdr, size_t len, const char *req,
                       const char *want, const char *ctx)
{
    struct client c;
    struct response r;

    memset(&r, 0, sizeof r);
    if (client_connect_from(&c, port, src) < 0) {
        ok(0, what(ctx, "connects"));
        return;
    }
    if (client_send(&c, hdr, len) == 0 && exchange(&c, req, &r) == 0 &&
        expect_status(&r, 200, ctx))
        expect_body(&r, want, ctx);
    else if (!r.status)
        ok(0, what(ctx, "a response"));
    response_free(&r);
    client_close(&c);
}

/*
 * Connects from src, sends bytes (len) and expects the server to close the
 * connection without sending a byte (waiting io_timeout_ms at most, longer than
 * --header-timeout).
 */
static void expect_closed(int port, const char *src, const void *bytes, size_t len,
                          const char *ctx)
{
    struct client c;

    if (client_connect_from(&c, port, src) < 0) {
        ok(0, what(ctx, "connects"));
        return;
    }
    if (len)
        client_send(&c, bytes, len);    /* may fail once the server has closed */
    is_int(client_wait_closed(&c, io_timeout_ms), 1, what(ctx, "closed without an answer"));
    client_close(&c);
}

static unsigned errors_made;         /* connections the tests made the server close */

static void test_headers(int port)
{
    unsigned char b[256], block[64];
    char line[160];
    size_t n;

    v1_line("203.0.113.7", line, sizeof line);
    expect_via(port, NULL, line, strlen(line), who_close, "203.0.113.7 http", "v1 TCP4");
    snprintf(line, sizeof line, "PROXY TCP6 2001:db8::5 ::1 40000 80\r\n");
    expect_via(port, NULL, line, strlen(line), who_close, "2001:db8::5 http", "v1 TCP6");
    snprintf(line, sizeof line, "PROXY UNKNOWN\r\n");
    expect_via(port, NULL, line, strlen(line), who_close, "127.0.0.1 http",
               "v1 UNKNOWN keeps the peer");
    n = v2_inet(b, "198.51.100.9");
    expect_via(port, NULL, b, n, who_close, "198.51.100.9 http", "v2 IPv4");
    memset(block, 0, 36);
    inet_pton(AF_INET6, "2001:db8::77", block);
    block[31] = 1;
    n = v2(b, 0x21, 0x21, block, 36);
    expect_via(port, NULL, b, n, who_close, "2001:db8::77 http", "v2 IPv6");
    n = v2(b, 0x20, 0x00, NULL, 0);
    expect_via(port, NULL, b, n, who_close, "127.0.0.1 http", "v2 LOCAL keeps the peer");
    inet_pton(AF_INET, "192.0.2.44", block);
    inet_pton(AF_INET, "127.0.0.1", block + 4);
    memcpy(block + 8, "\x9c\x40\x00\x50" "\x01\x00\x08http/1.1" "\x04\x00\x03xyz", 4 + 11 + 6);
    n = v2(b, 0x21, 0x11, block, 12 + 11 + 6);
    expect_via(port, NULL, b, n, who_close, "192.0.2.44 http", "v2 with TLVs (ALPN, NOOP)");

    /* The header and the request in one write, and requests kept alive after one header. */
    {
        struct client c;
        struct response r;
        char both[256];
        snprintf(both, sizeof both, "%s%s", v1_line("203.0.113.8", line, sizeof line), who_req);
        memset(&r, 0, sizeof r);
        if (client_connect(&c, port) == 0 && exchange(&c, both, &r) == 0 &&
            expect_status(&r, 200, "header and request in one write"))
            expect_body(&r, "203.0.113.8 http", "header and request in one write");
        response_free(&r);
        if (c.fd >= 0 && exchange(&c, who_req, &r) == 0 &&
            expect_status(&r, 200, "a second request, kept alive"))
            expect_body(&r, "203.0.113.8 http", "a second request: the same client");
        response_free(&r);
        client_close(&c);
    }
}

/* The header in pieces with pauses between them, then the request. */
static void test_split(int port)
{
    unsigned char b[64];
    char line[160];
    size_t n = v2_inet(b, "198.51.100.10");
    struct client c;
    struct response r;
    size_t cuts[] = {1, 5, 12, 13, 16, 20, 28};

    memset(&r, 0, sizeof r);
    v1_line("203.0.113.9", line, sizeof line);
    if (client_connect(&c, port) == 0) {
        client_send(&c, line, 3);
        sleep_ms(80);
        client_send(&c, line + 3, 14);
        sleep_ms(80);
        client_send(&c, line + 17, strlen(line) - 17 - 1);  /* all but the LF */
        sleep_ms(80);
        client_send(&c, line + strlen(line) - 1, 1);
        sleep_ms(40);
        if (exchange(&c, who_close, &r) == 0 && expect_status(&r, 200, "v1 in four writes"))
            expect_body(&r, "203.0.113.9 http", "v1 in four writes: the source");
        response_free(&r);
        client_close(&c);
    }
    if (client_connect(&c, port) == 0) {
        size_t from = 0;
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0] && cuts[i] <= n; i++) {
            client_send(&c, b + from, cuts[i] - from);
            from = cuts[i];
            sleep_ms(30);
        }
        if (exchange(&c, who_close, &r) == 0 && expect_status(&r, 200, "v2 in seven writes"))
            expect_body(&r, "198.51.100.10 http", "v2 in seven writes: the source");
        response_free(&r);
        client_close(&c);
    }
}

/* Malformed headers: each connection closed without an answer, the next good one served. */
static void test_malformed(int port)
{
    static const char *lines[] = {
        "GET /who HTTP/1.1\r\nHost: t\r\n\r\n",            /* no header at all */
        "PROXY TCP4 256.1.1.1 127.0.0.1 1 80\r\n",
        "PROXY TCP4 1.2.3.4 127.0.0.1 65536 80\r\n",
        "PROXY TCP4 1.2.3.4 127.0.0.1 x1 80\r\n",
        "PROXY TCP4 1.2.3.4 ::1 1 80\r\n",
        "PROXY TCP4 1.2.3.4 127.0.0.1 1\r\n",
        "PROXY FOO 1.2.3.4 127.0.0.1 1 80\r\n",
        "PROXY TCP4 1.2.3.4 127.0.0.1 1 80\n",
        "PROXY TCP4 1.2.3.4 127.0.0.1 1 80\rX",
        "proxy TCP4 1.2.3.4 127.0.0.1 1 80\r\n",
        "\x16\x03\x01\x00\x05hello",                         /* a ClientHello's start */
    };
    unsigned char b[256], block[16] = {1, 2, 3, 4, 127, 0, 0, 1, 0, 1, 0, 80};
    char long_line[200];
    size_t n;

    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        expect_closed(port, NULL, lines[i], strlen(lines[i]),
                      what("malformed", "%zu: \"%.20s\"", i, lines[i]));
        errors_made++;
    }
    memset(long_line, 'A', sizeof long_line);
    memcpy(long_line, "PROXY TCP4 ", 11);
    expect_closed(port, NULL, long_line, sizeof long_line, "v1: no CRLF within 107 bytes");
    n = v2(b, 0x31, 0x11, block, 12);
    expect_closed(port, NULL, b, n, "v2: version 3");
    n = v2(b, 0x22, 0x11, block, 12);
    expect_closed(port, NULL, b, n, "v2: command 2");
    n = v2(b, 0x21, 0x11, block, 8);
    expect_closed(port, NULL, b, n, "v2: IPv4 block of 8 bytes");
    n = v2(b, 0x21, 0x21, block, 12);
    expect_closed(port, NULL, b, n, "v2: IPv6 with an IPv4-sized block");
    n = v2(b, 0x21, 0x11, block, 12);
    b[14] = b[15] = 0xFF;
    expect_closed(port, NULL, b, 16, "v2: declared 65535 bytes (over 4096)");
    memcpy(block + 12, "\x04\x00\x09", 3);
    n = v2(b, 0x21, 0x11, block, 15);
    expect_closed(port, NULL, b, n, "v2: a TLV running past the header");
    errors_made += 7;
    /* A client that sends nothing: closed at --header-timeout (2 s here, 6 under a wrapper). */
    expect_closed(port, NULL, NULL, 0, "nothing sent: closed at --header-timeout");
    errors_made++;
    /* A peer that closes halfway through its header: nothing to answer, the server goes on. */
    {
        struct client c;
        if (client_connect(&c, port) == 0) {
            client_send(&c, "PROXY TCP4 1.2", 14);
            client_close(&c);
        }
        errors_made += 1;
    }
    /* A truncated header: closed at --header-timeout (2 s here, 6 under a wrapper). */
    expect_closed(port, NULL, "PROXY TCP4 1.2.3.4", 18,
                  "a truncated header: closed at --header-timeout");
    n = v2_inet(b, "198.51.100.11");
    expect_closed(port, NULL, b, 20, "a truncated v2 header: closed at --header-timeout");
    errors_made += 2;
    expect_via(port, NULL, b, n, who_close, "198.51.100.11 http",
               "after all of them, a good connection is served");
}

/* A peer not in --trusted-proxies: closed, whatever it sends. */
static void test_untrusted(int port)
{
    char line[160];

    v1_line("203.0.113.7", line, sizeof line);
    expect_closed(port, "127.0.0.2", line, strlen(line),
                  "untrusted peer 127.0.0.2 with a good header");
    expect_closed(port, "127.0.0.2", who_close, strlen(who_close),
                  "untrusted peer 127.0.0.2 without a header");
    errors_made += 2;
    expect_via(port, NULL, line, strlen(line), who_close, "203.0.113.7 http",
               "a trusted peer next is served");
}

/* X-Forwarded-For counts only when the PROXY source is itself trusted. */
static void test_forwarded(int port)
{
    char line[160], req[256];

    snprintf(req, sizeof req, "GET /who HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 1.2.3.4\r\n"
             "Connection: close\r\n\r\n");
    v1_line("203.0.113.7", line, sizeof line);
    expect_via(port, NULL, line, strlen(line), req, "203.0.113.7 http",
               "X-Forwarded-For from an untrusted PROXY source is ignored");
    v1_line("10.1.2.3", line, sizeof line);
    expect_via(port, NULL, line, strlen(line), req, "1.2.3.4 http",
               "X-Forwarded-For from a trusted PROXY source (10.0.0.0/8) is taken");
    snprintf(line, sizeof line, "PROXY UNKNOWN\r\n");
    expect_via(port, NULL, line, strlen(line), req, "1.2.3.4 http",
               "UNKNOWN keeps the trusted peer, whose X-Forwarded-For is taken");
}

/* ---- TLS on --tls-port: the header first, then the handshake on the same connection ---- */

static SSL_CTX *client_ctx;

static ssize_t tls_recv(struct client *t, void *buf, size_t len)
{
    int n, e;

    ERR_clear_error();
    errno = 0;
    n = SSL_read(t->ssl, buf, (int)len);
    if (n > 0)
        return n;
    e = SSL_get_error(t->ssl, n);
    ERR_clear_error();
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0))
        return 0;
    errno = e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? EAGAIN : ECONNRESET;
    return -1;
}

static ssize_t tls_send(struct client *t, const void *buf, size_t len)
{
    int n;

    ERR_clear_error();
    n = SSL_write(t->ssl, buf, (int)len);
    if (n > 0)
        return n;
    errno = SSL_get_error(t->ssl, n) == SSL_ERROR_WANT_WRITE ? EAGAIN : EPIPE;
    ERR_clear_error();
    return -1;
}

/*
 * Sends hdr (len bytes, in two writes with a pause when split), then does the
 * handshake on the non-blocking socket (polling) and GET /who. Returns the
 * body in out, or -1 when the handshake failed.
 */
static int tls_who(int port, const char *src, const void *hdr, size_t len, bool split, char *out,
                   size_t cap)
{
    struct client c;
    struct response r;
    long long deadline = now_ms() + io_timeout_ms;
    int rc = -1;

    out[0] = '\0';
    if (client_connect_from(&c, port, src) < 0)
        return -1;
    if (len && split) {
        client_send(&c, hdr, len / 2);
        sleep_ms(60);
        client_send(&c, (const char *)hdr + len / 2, len - len / 2);
    } else if (len) {
        client_send(&c, hdr, len);
    }
    if (!(c.ssl = SSL_new(client_ctx)) || SSL_set_fd(c.ssl, c.fd) != 1)
        goto out;
    for (;;) {
        int n = SSL_connect(c.ssl), e = SSL_get_error(c.ssl, n);
        struct pollfd pfd = {c.fd, e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN, 0};
        if (n == 1)
            break;
        if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) || now_ms() > deadline ||
            poll(&pfd, 1, 500) < 0)
            goto out;
    }
    c.recv_fn = tls_recv;
    c.send_fn = tls_send;
    memset(&r, 0, sizeof r);
    if (exchange(&c, who_close, &r) == 0 && r.status == 200) {
        snprintf(out, cap, "%s", r.body);
        rc = 0;
    }
    response_free(&r);
out:
    ERR_clear_error();
    if (c.ssl)
        SSL_free(c.ssl);
    c.ssl = NULL;
    client_close(&c);
    return rc;
}

static void test_tls(int tls_port)
{
    unsigned char b[64];
    char line[160], body[256];
    size_t n = v2_inet(b, "198.51.100.20");

    is_int(tls_who(tls_port, NULL, b, n, false, body, sizeof body), 0,
           "TLS: v2, then the handshake");
    is_str(body, "198.51.100.20 https", "TLS: v2: the source, over https");
    v1_line("203.0.113.21", line, sizeof line);
    is_int(tls_who(tls_port, NULL, line, strlen(line), true, body, sizeof body), 0,
           "TLS: v1 in two writes, then the handshake");
    is_str(body, "203.0.113.21 https", "TLS: v1: the source");
    is_int(tls_who(tls_port, NULL, NULL, 0, false, body, sizeof body), -1,
           "TLS: a handshake without a header fails (closed)");
    errors_made++;
    is_int(tls_who(tls_port, NULL, b, n, false, body, sizeof body), 0,
           "TLS: the next good one works");
}

/* ---- A real balancer: HAProxy in TCP mode with send-proxy and send-proxy-v2 ---- */

#define HAPROXY "/usr/sbin/haproxy"

/* A free port on 127.0.0.1 (bound, read, closed: the kernel does not hand it out at once). */
static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/*
 * HAProxy in front of the server: 127.0.0.1:v1 -> port with send-proxy,
 * :v2 -> port with send-proxy-v2, :tls -> tls_port with send-proxy-v2 (TLS
 * passed through); each server line health-checked every 100 ms with
 * check-send-proxy, as docs/operations.md advises. The client connects from
 * 127.0.0.2: that is the address the server must see.
 */
static void test_haproxy(int port, int tls_port)
{
    char cfg_path[] = "/tmp/tycho-pp-haproxy-XXXXXX", log_path[64], body[256];
    int v1 = free_port(), v2 = free_port(), tls = free_port(), fd = -1, up = 0;
    pid_t pid;
    FILE *f;

    if (access(HAPROXY, X_OK) != 0) {
        note("no %s: the HAProxy checks are skipped (make test installs it)", HAPROXY);
        return;
    }
    if (!ok(v1 > 0 && v2 > 0 && tls > 0 && (fd = mkstemp(cfg_path)) >= 0, "HAProxy: its ports"))
        return;
    snprintf(log_path, sizeof log_path, "%s.log", cfg_path);
    f = fdopen(fd, "w");
    if (!f) {
        close(fd);
        unlink(cfg_path);
        ok(0, "HAProxy: its configuration is written");
        return;
    }
    fprintf(f, "global\n    maxconn 64\n"
            "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n"
            "    timeout server 30s\n"
            "frontend v1\n    bind 127.0.0.1:%d\n    default_backend v1\n"
            "backend v1\n    server t 127.0.0.1:%d send-proxy check check-send-proxy inter 100\n"
            "frontend v2\n    bind 127.0.0.1:%d\n    default_backend v2\n"
            "backend v2\n    server t 127.0.0.1:%d send-proxy-v2 check check-send-proxy inter 100\n"
            "frontend tls\n    bind 127.0.0.1:%d\n    default_backend tls\n"
            "backend tls\n"
            "    server t 127.0.0.1:%d send-proxy-v2 check check-send-proxy inter 100\n",
            v1, port, v2, port, tls, tls_port);
    fclose(f);
    pid = fork();
    if (pid == 0) {
        int out = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (out >= 0) {
            dup2(out, 1);
            dup2(out, 2);
        }
        execl(HAPROXY, "haproxy", "-f", cfg_path, "-db", (char *)NULL);
        _exit(127);
    }
    if (!ok(pid > 0, "HAProxy: started")) {
        unlink(cfg_path);
        return;
    }
    /* Up once its frontend accepts and a request goes through (bounded: 10 s). */
    for (int i = 0; i < 100 && !up; i++) {
        struct client c;
        struct response r;
        memset(&r, 0, sizeof r);
        if (client_connect_from(&c, v2, "127.0.0.2") == 0 && exchange(&c, who_close, &r) == 0 &&
            r.status == 200)
            up = 1;
        response_free(&r);
        client_close(&c);
        if (!up)
            sleep_ms(100);
    }
    if (ok(up, "HAProxy: a request goes through it")) {
        expect_via(v1, "127.0.0.2", "", 0, who_close, "127.0.0.2 http",
                   "HAProxy send-proxy (v1): the client's address, not HAProxy's");
        expect_via(v2, "127.0.0.2", "", 0, who_close, "127.0.0.2 http",
                   "HAProxy send-proxy-v2: the client's address");
        is_int(tls_who(tls, "127.0.0.2", NULL, 0, false, body, sizeof body), 0,
               "HAProxy send-proxy-v2 to --tls-port: the handshake goes through");
        is_str(body, "127.0.0.2 https", "HAProxy send-proxy-v2 to --tls-port: the client, https");
        sleep_ms(400);                /* a few rounds of its health checks, which send LOCAL */
    } else {
        size_t len = 0;
        char *log = slurp(log_path, &len);
        note("haproxy's output:\n%s", log ? log : "(none)");
        free(log);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    unlink(cfg_path);
    unlink(log_path);
}

/* tycho_proxy_protocol_errors_total, through a PROXY connection (the port needs one). */
static double proxy_errors(int port)
{
    struct client c;
    struct response r;
    char line[160];
    const char *p;
    double v = -1;

    memset(&r, 0, sizeof r);
    if (client_connect(&c, port) < 0)
        return -1;
    client_sends(&c, v1_line("192.0.2.1", line, sizeof line));
    if (exchange(&c, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r) == 0 &&
        r.body && (p = strstr(r.body, "\ntycho_proxy_protocol_errors_total ")))
        v = strtod(p + strlen("\ntycho_proxy_protocol_errors_total "), NULL);
    response_free(&r);
    client_close(&c);
    return v;
}

/* GET /who from source src through a kept-open connection; its status (0: none). */
static int open_as(struct client *c, int port, const char *src)
{
    struct response r;
    char line[160];
    int status;

    memset(&r, 0, sizeof r);
    if (client_connect(c, port) < 0)
        return 0;
    client_sends(c, v1_line(src, line, sizeof line));
    exchange(c, who_req, &r);
    status = r.status;
    response_free(&r);
    return status;
}

static void test_per_ip(void)
{
    const char *args[] = {"--port", "0", "--workers", "2", "--trusted-proxies", "127.0.0.1/32",
                          "--proxy-protocol", "port", "--max-conns-per-ip", "1", dir, NULL};
    struct server s;
    struct client a, b2, a2, a3;
    int status = 0;

    if (!ok(server_start(&s, args) == 0, "per-IP: server with --max-conns-per-ip 1 starts"))
        return;
    is_int(open_as(&a, s.port, "198.51.100.1"), 200, "per-IP: source A's first connection");
    is_int(open_as(&b2, s.port, "198.51.100.2"), 200,
           "per-IP: source B through the same peer is not limited with A");
    is_int(open_as(&a2, s.port, "198.51.100.1"), 503, "per-IP: A's second connection gets 503");
    client_close(&a2);
    client_close(&a);
    /* A's close is released by its worker once it sees the client go: bounded retries. */
    for (int i = 0; i < 40 && status != 200; i++) {
        sleep_ms(50);
        status = open_as(&a3, s.port, "198.51.100.1");
        if (status != 200)
            client_close(&a3);
    }
    is_int(status, 200, "per-IP: once A's connection closed, A is served again");
    client_close(&a3);
    client_close(&b2);
    is_int(server_stop(&s), 0, "per-IP: exit status 0");
    server_cleanup(&s);
}

static void test_start_errors(void)
{
    char cmd[1024], out[2048];

    snprintf(cmd, sizeof cmd, "'%s' --proxy-protocol port --check '%s' 2>&1", tycho_binary, dir);
    is_int(run_command(cmd, out, sizeof out), 2, "without --trusted-proxies: exit 2");
    ok(strstr(out, "--proxy-protocol") && strstr(out, "--trusted-proxies") &&
           (!strchr(out, '\n') || !strchr(out, '\n')[1]),
       "without --trusted-proxies: one line naming both flags");
    snprintf(cmd, sizeof cmd, "'%s' --proxy-protocol ports --trusted-proxies 127.0.0.1 '%s' 2>&1",
             tycho_binary, dir);
    is_int(run_command(cmd, out, sizeof out), 2, "a bad value: exit 2");
    ok(strstr(out, "tycho: --proxy-protocol: expected") != NULL, "a bad value: says so");
    snprintf(cmd, sizeof cmd, "'%s' --proxy-protocol port,tls-port --trusted-proxies 127.0.0.1 "
             "'%s' 2>&1", tycho_binary, dir);
    is_int(run_command(cmd, out, sizeof out), 2, "tls-port without --tls-cert: exit 2");
    ok(strstr(out, "--tls-cert") != NULL, "tls-port without --tls-cert: says so");
}

static int sh_ok(const char *fmt, const char *a, const char *b)
{
    char cmd[1024];
    int rc;

    snprintf(cmd, sizeof cmd, fmt, a, b);
    rc = system(cmd);
    return rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0;
}

int main(int argc, char **argv)
{
    char log_path[] = "/tmp/tycho-pp-log-XXXXXX", cert[300], key[300], mkcerts[512], cmd[512];
    char out[512];
    struct server s;
    int log_fd, tls_port = 0;

    if (suite_setup(argc, argv))
        return 2;
    if (app_dir_make(dir, app_lua) < 0)
        return test_summary();
    test_start_errors();
    if (!mkdtemp(pki)) {
        ok(0, "a temporary directory for the PKI");
        app_dir_remove(dir);
        return test_summary();
    }
    snprintf(mkcerts, sizeof mkcerts, "tests/integration/tls/mkcerts.sh");
    if (access(mkcerts, R_OK) != 0)
        snprintf(mkcerts, sizeof mkcerts, "%s/../tls/mkcerts.sh", fixture_dir);
    ok(sh_ok("sh '%s' '%s' >/dev/null 2>&1", mkcerts, pki), "mkcerts.sh makes the test PKI");
    snprintf(cert, sizeof cert, "%s/server.pem", pki);
    snprintf(key, sizeof key, "%s/server.key", pki);
    client_ctx = SSL_CTX_new(TLS_client_method());
    ok(client_ctx != NULL, "a client SSL_CTX");
    if (client_ctx)
        SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL); /* the test is not about trust */
    log_fd = mkstemp(log_path);
    ok(log_fd >= 0, "a temporary access log");
    if (log_fd >= 0)
        close(log_fd);
    {
        const char *args[] = {"--port", "0", "--workers", "2", "--trusted-proxies",
                              "127.0.0.1/32,10.0.0.0/8", "--proxy-protocol", "port,tls-port",
                              "--tls-cert", cert, "--tls-key", key, "--tls-port", "0",
                              "--header-timeout", n_wrap ? "6" : "2", "--metrics", "/metrics",
                              "--access-log", log_path, dir, NULL};
        ok(server_start(&s, args) == 0, "server with --proxy-protocol port,tls-port starts");
    }
    if (s.pid > 0) {
        const char *p = strstr(s.out, "https://127.0.0.1:");
        tls_port = p ? atoi(p + strlen("https://127.0.0.1:")) : 0;
        test_headers(s.port);
        test_split(s.port);
        test_forwarded(s.port);
        test_malformed(s.port);
        test_untrusted(s.port);
        if (ok(tls_port > 0, "the banner names the https port") && client_ctx) {
            test_tls(tls_port);
            test_haproxy(s.port, tls_port);
        }
        is_int(proxy_errors(s.port), errors_made,
               "tycho_proxy_protocol_errors_total counts every connection closed so");
        ok(log_has_line(&s, "--proxy-protocol: closed a connection", "logged at most once"),
           "a warning line, rate-limited");
        snprintf(cmd, sizeof cmd, "curl -s --max-time 5 --haproxy-protocol "
                 "http://127.0.0.1:%d/who 2>&1", s.port);
        if (run_command("command -v curl >/dev/null 2>&1", out, sizeof out) == 0) {
            is_int(run_command(cmd, out, sizeof out), 0, "curl --haproxy-protocol: exit 0");
            is_str(out, "127.0.0.1 http", "curl --haproxy-protocol: its v1 header is read");
        }
        is_int(server_stop(&s), 0, "exit status 0");
        {
            size_t len = 0;
            char *log = slurp(log_path, &len);
            ok(log && strstr(log, "203.0.113.7 - - [") && strstr(log, "198.51.100.9 - - [") &&
                   strstr(log, "198.51.100.20 - - ["),
               "the access log shows the PROXY sources (v1, v2, TLS)");
            free(log);
        }
    }
    server_cleanup(&s);
    unlink(log_path);
    test_per_ip();
    if (client_ctx)
        SSL_CTX_free(client_ctx);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", pki);
    run_command(cmd, out, sizeof out);
    app_dir_remove(dir);
    free(wrap_copy);
    return test_summary();
}
