/*
 * test_tls.c TYCHO_BINARY FIXTURE_DIR: HTTPS on the server's own listener
 * (--tls-cert, --tls-key, --tls-port), over real sockets against the real
 * binary, with a blocking OpenSSL client of its own (and curl): req.scheme
 * and tycho.tls_port, --hsts, the protocols and ciphers refused, ALPN, SNI
 * (several files, and a directory), session resumption across workers and
 * ticket key rotation, handshakes that fail or stall (--header-timeout),
 * --max-conns, bodies both ways (handler, static file and range, streamed,
 * keep-alive, pipelined, a 1 MB POST, a streamed request body), wss://,
 * certificates reloaded on SIGHUP under load and with --watch, 1,000 idle
 * TLS connections (memory per connection noted), the errors at start,
 * tycho.https_redirect, and SIGTERM with TLS connections open. The test PKI
 * is made at test time by tests/integration/tls/mkcerts.sh; the app is
 * written into a temporary directory. Ends with `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"

#include <dirent.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/time.h>

static char app_dir[] = "/tmp/tycho-tls-app-XXXXXX";
static char pki[] = "/tmp/tycho-tls-pki-XXXXXX";     /* mkcerts.sh's files */
static char work[] = "/tmp/tycho-tls-work-XXXXXX";   /* certificates the tests swap */

static const char app_lua[] =
    "local app = require 'tycho'\n"
    "local redir = tycho.https_redirect()\n"
    "local fixed = tycho.https_redirect({ host = 'example.com', port = 443 })\n"
    "local other = tycho.https_redirect({ port = 8443 })\n"
    "app.use(function(req, res, next)\n"
    "  local p = req.path\n"
    "  if p:sub(1, 8) == '/secure/' then return redir(req, res, next) end\n"
    "  if p:sub(1, 7) == '/fixed/' then return fixed(req, res, next) end\n"
    "  if p:sub(1, 7) == '/other/' then return other(req, res, next) end\n"
    "  return next()\n"
    "end)\n"
    "app.get('/scheme', function(req) return req.scheme .. ' ' .. tostring(tycho.tls_port) end)\n"
    "app.get('/secure/page', function(req) return 'secure ' .. req.scheme end)\n"
    "app.post('/secure/page', function(req) return 'posted ' .. req.scheme end)\n"
    "app.get('/fixed/page', function(req) return 'fixed ' .. req.scheme end)\n"
    "app.get('/other/page', function(req) return 'other ' .. req.scheme end)\n"
    "app.get('/big', function() return string.rep('0123456789abcdef', 19200) end)\n"
    "app.get('/stream', function(req, res)\n"
    "  for i = 1, 50 do assert(res:write('piece-' .. i .. ';')) end\n"
    "  return 'end'\n"
    "end)\n"
    "app.get('/slow', function(req, res)\n"
    "  for i = 1, 10 do res:write('s' .. i .. ';'); tycho.sleep(0.1) end\n"
    "  return 'done'\n"
    "end)\n"
    "app.get('/n', function(req) return 'n=' .. (req.query.i or '') end)\n"
    "app.post('/echo-len', function(req) return tostring(#req.body) end)\n"
    "app.post('/upload', function(req)\n"
    "  local n, reads = 0, 0\n"
    "  while true do\n"
    "    local s = req:read()\n"
    "    if not s then break end\n"
    "    n = n + #s; reads = reads + 1\n"
    "  end\n"
    "  return tostring(n)\n"
    "end, { stream_body = true })\n"
    "app.ws('/ws', function(ws)\n"
    "  while true do\n"
    "    local msg, kind = ws:receive()\n"
    "    if not msg then return end\n"
    "    ws:send(msg, kind == 'binary')\n"
    "  end\n"
    "end)\n"
    "app.static('/files', 'public')\n";

#define BIG_FILE_BYTES (3 * 1024 * 1024)
static unsigned char *big_file;     /* owned; public/big.bin's bytes */

/* ======================================================================
 * A blocking TLS client (timeouts by SO_RCVTIMEO / SO_SNDTIMEO)
 * ====================================================================== */

struct tls_opt {
    int min_v, max_v;           /* 0: the library's */
    const char *sni;            /* NULL: no server name */
    const unsigned char *alpn;  /* wire format; NULL: no ALPN */
    unsigned alpn_len;
    SSL_SESSION *session;       /* borrowed: a session to resume */
    const char *ciphers;        /* TLS 1.2 cipher list; NULL: the library's */
    int legacy;                 /* security level 0 (lets the client offer TLS 1.0/1.1) */
    const char *verify_host;    /* also check the certificate's name */
    int rcvbuf;                 /* SO_RCVBUF before connecting (a slow reader); 0: default */
};


static SSL_CTX *client_ctx;        /* verifies against the test CA */
static char ca_path[256];

static SSL_CTX *make_client_ctx(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (!ctx)
        return NULL;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_load_verify_locations(ctx, ca_path, NULL) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_AUTO_RETRY);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    return ctx;
}

static void set_timeouts(int fd, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    if (ms <= 0)
        tv.tv_usec = 1000;          /* 0 would mean no timeout */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* A blocking TCP connection to 127.0.0.1:port, with io timeouts; -1 on failure. */
static int tcp_connect_rcvbuf(int port, int rcvbuf)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    set_timeouts(fd, io_timeout_ms);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int tcp_connect(int port)
{
    return tcp_connect_rcvbuf(port, 0);
}

static void tls_close(struct client *t)
{
    if (t->ssl) {
        /* close_notify: a session freed without it is not resumable (OpenSSL drops it). */
        if (!t->reset && t->fd >= 0) {
            set_timeouts(t->fd, 1000);
            SSL_shutdown(t->ssl);
        }
        ERR_clear_error();
        SSL_free(t->ssl);
    }
    if (t->fd >= 0)
        close(t->fd);
    free(t->buf);
    memset(t, 0, sizeof *t);
    t->fd = -1;
}

/* recv(2) for a struct client through its SSL: n > 0, 0 at the end, -1 with errno. */
static ssize_t tls_recv(struct client *t, void *buf, size_t len)
{
    int n, e;

    ERR_clear_error();
    errno = 0;
    n = SSL_read(t->ssl, buf, len > 1 << 30 ? 1 << 30 : (int)len);
    if (n > 0)
        return n;
    e = SSL_get_error(t->ssl, n);
    ERR_clear_error();
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0))
        return 0;                     /* close_notify, or an end without it */
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE || errno == EAGAIN ||
        errno == EINTR) {
        errno = EAGAIN;               /* a record not whole yet, the timeout, a signal */
        return -1;
    }
    errno = ECONNRESET;
    return -1;
}

/* send(2) for a struct client through its SSL. */
static ssize_t tls_send_some(struct client *t, const void *buf, size_t len)
{
    int n;

    ERR_clear_error();
    n = SSL_write(t->ssl, buf, len > 1 << 30 ? 1 << 30 : (int)len);
    if (n > 0)
        return n;
    errno = SSL_get_error(t->ssl, n) == SSL_ERROR_WANT_WRITE ? EAGAIN : EPIPE;
    ERR_clear_error();
    return -1;
}

static char last_tls_error[256];

/* Connects and does the handshake. Returns 0, or -1 (t closed; last_tls_error says why). */
static int tls_connect_ctx(struct client *t, int port, SSL_CTX *ctx, const struct tls_opt *o)
{
    static const struct tls_opt none;
    unsigned long e;

    if (!o)
        o = &none;
    memset(t, 0, sizeof *t);
    last_tls_error[0] = '\0';
    if ((t->fd = tcp_connect_rcvbuf(port, o->rcvbuf)) < 0) {
        snprintf(last_tls_error, sizeof last_tls_error, "connect: %s", strerror(errno));
        t->fd = -1;
        return -1;
    }
    t->recv_fn = tls_recv;
    t->send_fn = tls_send_some;
    ERR_clear_error();
    if (!(t->ssl = SSL_new(ctx)) || SSL_set_fd(t->ssl, t->fd) != 1)
        goto fail;
    if (o->min_v)
        SSL_set_min_proto_version(t->ssl, o->min_v);
    if (o->max_v)
        SSL_set_max_proto_version(t->ssl, o->max_v);
    if (o->legacy) {
        SSL_set_security_level(t->ssl, 0);
        if (!o->ciphers)
            SSL_set_cipher_list(t->ssl, "DEFAULT@SECLEVEL=0");
    }
    if (o->ciphers && SSL_set_cipher_list(t->ssl, o->ciphers) != 1)
        goto fail;
    if (o->sni)
        SSL_set_tlsext_host_name(t->ssl, o->sni);
    if (o->alpn)
        SSL_set_alpn_protos(t->ssl, o->alpn, o->alpn_len);
    if (o->session)
        SSL_set_session(t->ssl, o->session);
    if (o->verify_host)
        SSL_set1_host(t->ssl, o->verify_host);
    if (SSL_connect(t->ssl) == 1)
        return 0;
fail:
    e = ERR_peek_last_error();
    snprintf(last_tls_error, sizeof last_tls_error, "handshake: %s (errno %s)",
             e ? ERR_reason_error_string(e) : "no OpenSSL error", strerror(errno));
    ERR_clear_error();
    tls_close(t);
    return -1;
}

static int tls_connect(struct client *t, int port, const struct tls_opt *o)
{
    return tls_connect_ctx(t, port, client_ctx, o);
}

/* Reads until needle is among the received bytes. Returns 0, or -1. */
static int tls_read_until(struct client *t, const char *needle, long long deadline)
{
    while (!t->len || !memmem(t->buf, t->len, needle, strlen(needle)))
        if (client_fill(t, deadline) <= 0)
            return -1;
    return 0;
}




static int tls_exchange(struct client *t, const char *req, struct response *r)
{
    if (client_sends(t, req) < 0) {
        memset(r, 0, sizeof *r);
        note("TLS send failed");
        return -1;
    }
    return read_response(t, r, strncmp(req, "HEAD ", 5) == 0);
}

/* What a connection's handshake gave: the certificate's subject, CN, ALPN, version. */
struct tls_info {
    char cn[128];
    char subject[256];
    char alpn[32];
    char version[16];
    int reused;
};

static void tls_info_of(struct client *t, struct tls_info *info)
{
    X509 *cert = SSL_get1_peer_certificate(t->ssl);
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;

    memset(info, 0, sizeof *info);
    if (cert) {
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, info->cn,
                                  sizeof info->cn);
        X509_NAME_oneline(X509_get_subject_name(cert), info->subject, sizeof info->subject);
        X509_free(cert);
    }
    SSL_get0_alpn_selected(t->ssl, &alpn, &alpn_len);
    if (alpn_len >= sizeof info->alpn)
        alpn_len = sizeof info->alpn - 1;
    memcpy(info->alpn, alpn ? (const char *)alpn : "", alpn ? alpn_len : 0);
    snprintf(info->version, sizeof info->version, "%s", SSL_get_version(t->ssl));
    info->reused = SSL_session_reused(t->ssl);
}

/*
 * One GET over a new TLS connection: status (0 when none), the body into
 * body (cap bytes) and what the handshake gave into info (either may be
 * NULL); *session_out (when given) the session to resume, got after the
 * response (TLS 1.3 sends its ticket after the handshake).
 */
static int tls_get(int port, const struct tls_opt *o, const char *path, char *body, size_t cap,
                   struct tls_info *info, SSL_SESSION **session_out)
{
    struct client t;
    struct response r;
    char req[512];
    int status;

    if (body && cap)
        body[0] = '\0';
    if (info)
        memset(info, 0, sizeof *info);
    if (tls_connect(&t, port, o) < 0) {
        note("TLS GET %s: %s", path, last_tls_error);
        return 0;
    }
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path);
    tls_exchange(&t, req, &r);
    status = r.status;
    if (body && cap && r.body)
        snprintf(body, cap, "%s", r.body);
    if (info)
        tls_info_of(&t, info);
    if (session_out)
        *session_out = SSL_get1_session(t.ssl);
    response_free(&r);
    tls_close(&t);
    return status;
}

/* ======================================================================
 * Servers and files
 * ====================================================================== */

static int tls_port_of(const struct server *s)
{
    const char *p = strstr(s->out, "https://127.0.0.1:");

    return p ? atoi(p + strlen("https://127.0.0.1:")) : 0;
}

/* Starts a server with args (NULL-terminated); 0 with *tls_port set, or -1 (a check failed). */
static int start(struct server *s, int *tls_port, const char *const *args, const char *ctx)
{
    if (server_start(s, args) < 0) {
        ok(0, what(ctx, "the server starts"));
        return -1;
    }
    *tls_port = tls_port_of(s);
    if (!ok(*tls_port > 0 && *tls_port != s->port, what(ctx, "the banner names an https port"))) {
        note_bytes("stdout", s->out, s->out_len, 400);
        return -1;
    }
    return 0;
}

static void stop(struct server *s, const char *ctx)
{
    is_int(server_stop(s), 0, what(ctx, "the server exits 0 on SIGTERM"));
    server_cleanup(s);
}

static char *path_in(const char *dir, const char *name)
{
    static char paths[8][512];
    static int next;
    char *p = paths[next++ % 8];

    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static int copy_file(const char *from, const char *to)
{
    size_t len;
    char *data = slurp(from, &len);
    FILE *f;
    int rc = -1;

    if (!data)
        return -1;
    if ((f = fopen(to, "wb"))) {
        rc = fwrite(data, 1, len, f) == len ? 0 : -1;
        if (fclose(f) != 0)
            rc = -1;
    }
    free(data);
    return rc;
}

/* Puts a copy of from at to by rename (a reader sees the old file or the new one, whole). */
static int replace_file(const char *from, const char *to)
{
    char tmp[600];

    snprintf(tmp, sizeof tmp, "%s.new", to);
    if (copy_file(from, tmp) < 0)
        return -1;
    return rename(tmp, to);
}

static int sh(const char *fmt, ...)
{
    char cmd[4096], out[4096];
    va_list ap;
    int rc;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    rc = run_command(cmd, out, sizeof out);
    if (rc != 0)
        note("`%s` exited %d: %s", cmd, rc, out);
    return rc;
}

static void remove_tree(const char *dir)
{
    char cmd[600];

    if (dir[0] && strncmp(dir, "/tmp/tycho-tls-", 15) == 0) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            note("could not remove %s", dir);
    }
}

/* ======================================================================
 * 1, 2, 17: req.scheme, tycho.tls_port, curl, --hsts, https_redirect
 * ====================================================================== */

static void test_scheme_and_curl(const struct server *s, int tp)
{
    char cmd[1024], out[4096], want[64];
    struct response r;
    int rc;

    snprintf(cmd, sizeof cmd,
             "curl -sS --max-time %d --cacert %s -D - https://localhost:%d/scheme 2>&1",
             io_timeout_ms / 1000, ca_path, tp);
    rc = run_command(cmd, out, sizeof out);
    is_int(rc, 0, "curl --cacert over HTTPS: exits 0 (the certificate verifies)");
    ok(strncmp(out, "HTTP/1.1 200", 12) == 0, "curl over HTTPS: 200");
    snprintf(want, sizeof want, "\r\n\r\nhttps %d", tp);
    ok(strstr(out, want) != NULL, "curl over HTTPS: req.scheme is \"https\", tycho.tls_port the "
       "printed port");
    ok(strcasestr(out, "\r\nStrict-Transport-Security: max-age=600\r\n") != NULL,
       "curl over HTTPS: --hsts 600 sends Strict-Transport-Security: max-age=600");
    if (!strstr(out, want))
        note("curl: %.600s", out);

    fetch(s->port, "GET /scheme HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, "the same app over --port")) {
        snprintf(want, sizeof want, "http %d", tp);
        expect_body(&r, want, "over --port: req.scheme is \"http\" (tycho.tls_port the same)");
    }
    ok(!header_get(&r, "Strict-Transport-Security"), "no HSTS header on an HTTP route's answer");
    response_free(&r);
    fetch(s->port, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    expect_status(&r, 404, "HTTP 404");
    ok(!header_get(&r, "Strict-Transport-Security"), "no HSTS header on an HTTP 404");
    response_free(&r);
    fetch(s->port, "GARBAGE\r\n\r\n", &r);
    expect_status(&r, 400, "HTTP 400");
    ok(!header_get(&r, "Strict-Transport-Security"), "no HSTS header on an HTTP 400");
    response_free(&r);
}

static void test_hsts_tls(int tp)
{
    struct client t;
    struct response r;

    if (tls_connect(&t, tp, NULL) < 0) {
        ok(0, what("HSTS", "TLS connect: %s", last_tls_error));
        return;
    }
    tls_exchange(&t, "GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
    expect_status(&r, 404, "HTTPS 404");
    expect_header(&r, "Strict-Transport-Security", "max-age=600", "HTTPS 404");
    response_free(&r);
    tls_exchange(&t, "GET /n?i=1 HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
    expect_status(&r, 200, "HTTPS route");
    expect_header(&r, "Strict-Transport-Security", "max-age=600", "HTTPS route");
    is_int(header_count(&r, "Strict-Transport-Security"), 1, "HTTPS route: one HSTS header");
    response_free(&r);
    tls_exchange(&t, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
    expect_status(&r, 200, "HTTPS --health");
    expect_header(&r, "Strict-Transport-Security", "max-age=600", "HTTPS --health");
    response_free(&r);
    tls_exchange(&t, "POST /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
                 &r);
    expect_status(&r, 405, "HTTPS --health, POST");
    expect_header(&r, "Strict-Transport-Security", "max-age=600", "HTTPS --health's 405");
    response_free(&r);
    tls_exchange(&t, "GARBAGE\r\n\r\n", &r);
    expect_status(&r, 400, "HTTPS 400");
    expect_header(&r, "Strict-Transport-Security", "max-age=600", "HTTPS 400");
    response_free(&r);
    tls_close(&t);
}

static void test_redirect(int port, int tp)
{
    struct response r;
    struct client t;
    char want[256];

    fetch(port, "GET /secure/page?q=1&b=2 HTTP/1.1\r\nHost: example.org:8080\r\n\r\n", &r);
    expect_status(&r, 301, "https_redirect: GET over HTTP");
    snprintf(want, sizeof want, "https://example.org:%d/secure/page?q=1&b=2", tp);
    expect_header(&r, "Location", want,
                  "https_redirect: to --tls-port, the same path and query, Host's port dropped");
    response_free(&r);
    fetch(port, "HEAD /secure/page HTTP/1.1\r\nHost: example.org\r\n\r\n", &r);
    expect_status(&r, 301, "https_redirect: HEAD over HTTP");
    response_free(&r);
    fetch(port, "POST /secure/page HTTP/1.1\r\nHost: example.org\r\nContent-Length: 2\r\n\r\n{}",
          &r);
    expect_status(&r, 308, "https_redirect: POST over HTTP");
    snprintf(want, sizeof want, "https://example.org:%d/secure/page", tp);
    expect_header(&r, "Location", want, "https_redirect: POST");
    response_free(&r);
    fetch(port, "GET /secure/page HTTP/1.1\r\n\r\n", &r);
    expect_status(&r, 400, "https_redirect: no Host");
    response_free(&r);
    fetch(port, "GET /secure/page HTTP/1.1\r\nHost: internal_api.example.org\r\n\r\n", &r);
    snprintf(want, sizeof want, "https://internal_api.example.org:%d/secure/page", tp);
    expect_header(&r, "Location", want, "https_redirect: the whole host name, '_' and all");
    response_free(&r);
    fetch(port, "GET /secure/page HTTP/1.1\r\nHost: example.org:80x\r\n\r\n", &r);
    expect_status(&r, 400, "https_redirect: a Host that is not a host and port");
    response_free(&r);
    fetch(port, "GET /fixed/page?x=y HTTP/1.1\r\nHost: example.org:8080\r\n\r\n", &r);
    expect_status(&r, 301, "https_redirect{host, port = 443}");
    expect_header(&r, "Location", "https://example.com/fixed/page?x=y",
                  "https_redirect{host = example.com, port = 443}: port left out");
    response_free(&r);
    fetch(port, "GET /other/page HTTP/1.1\r\nHost: 127.0.0.1:1234\r\n\r\n", &r);
    expect_status(&r, 301, "https_redirect{port = 8443}");
    expect_header(&r, "Location", "https://127.0.0.1:8443/other/page",
                  "https_redirect{port = 8443}: an address Host, its port replaced");
    response_free(&r);

    if (tls_connect(&t, tp, NULL) < 0) {
        ok(0, what("https_redirect", "TLS connect: %s", last_tls_error));
        return;
    }
    tls_exchange(&t, "GET /secure/page?q=1 HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
    if (expect_status(&r, 200, "https_redirect over HTTPS: the handler runs"))
        expect_body(&r, "secure https", "https_redirect over HTTPS");
    response_free(&r);
    tls_exchange(&t, "POST /secure/page HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
                 &r);
    if (expect_status(&r, 200, "https_redirect: POST over HTTPS"))
        expect_body(&r, "posted https", "https_redirect: POST over HTTPS");
    response_free(&r);
    tls_close(&t);
}

/* ======================================================================
 * 3, 4, 5: protocols, ciphers, ALPN, SNI
 * ====================================================================== */

static void test_protocols(int tp)
{
    struct tls_opt o;
    struct tls_info info;
    char body[256];

    memset(&o, 0, sizeof o);
    o.min_v = o.max_v = TLS1_2_VERSION;
    is_int(tls_get(tp, &o, "/n?i=12", body, sizeof body, &info, NULL), 200,
           "a TLS 1.2 client is served");
    is_str(info.version, "TLSv1.2", "TLS 1.2: the version");
    o.min_v = o.max_v = TLS1_3_VERSION;
    is_int(tls_get(tp, &o, "/n?i=13", body, sizeof body, &info, NULL), 200,
           "a TLS 1.3 client is served");
    is_str(info.version, "TLSv1.3", "TLS 1.3: the version");
    is_str(body, "n=13", "TLS 1.3: the body");

    memset(&o, 0, sizeof o);
    o.legacy = 1;
    o.min_v = o.max_v = TLS1_VERSION;
    is_int(tls_get(tp, &o, "/n", NULL, 0, NULL, NULL), 0, "a TLS 1.0 client is refused");
    note("TLS 1.0: %s", last_tls_error);
    o.min_v = o.max_v = TLS1_1_VERSION;
    is_int(tls_get(tp, &o, "/n", NULL, 0, NULL, NULL), 0, "a TLS 1.1 client is refused");
    note("TLS 1.1: %s", last_tls_error);
    o.min_v = TLS1_VERSION;
    o.max_v = TLS1_3_VERSION;
    is_int(tls_get(tp, &o, "/n", NULL, 0, &info, NULL), 200,
           "the same legacy-enabled client offering up to TLS 1.3 is served (the refusals were "
           "the server's)");

    memset(&o, 0, sizeof o);
    o.max_v = TLS1_2_VERSION;
    o.ciphers = "ECDHE-ECDSA-AES128-SHA";
    o.legacy = 1;
    is_int(tls_get(tp, &o, "/n", NULL, 0, NULL, NULL), 0,
           "a TLS 1.2 client offering only ECDHE-ECDSA-AES128-SHA (not intermediate) is refused");
    note("AES128-SHA: %s", last_tls_error);
    o.ciphers = "ECDHE-ECDSA-CHACHA20-POLY1305";
    is_int(tls_get(tp, &o, "/n", NULL, 0, NULL, NULL), 200,
           "a TLS 1.2 client offering only ECDHE-ECDSA-CHACHA20-POLY1305 is served");
}

static void test_alpn(int tp)
{
    static const unsigned char both[] = "\x02h2\x08http/1.1", h2[] = "\x02h2";
    struct tls_opt o;
    struct tls_info info;
    char body[64];

    memset(&o, 0, sizeof o);
    o.alpn = both;
    o.alpn_len = sizeof both - 1;
    is_int(tls_get(tp, &o, "/n?i=a", body, sizeof body, &info, NULL), 200, "ALPN h2,http/1.1: 200");
    is_str(info.alpn, "http/1.1", "ALPN h2,http/1.1: http/1.1 selected");
    o.alpn = h2;
    o.alpn_len = sizeof h2 - 1;
    is_int(tls_get(tp, &o, "/n?i=b", body, sizeof body, &info, NULL), 200,
           "ALPN h2 only: the handshake succeeds and the request is served");
    is_str(info.alpn, "", "ALPN h2 only: no protocol selected");
    is_str(body, "n=b", "ALPN h2 only: HTTP/1.1 spoken");
}

/* The CN of the certificate the server shows for sni (NULL: none). */
static void expect_cn(int tp, const char *sni, const char *want, const char *ctx)
{
    struct tls_opt o;
    struct tls_info info;

    memset(&o, 0, sizeof o);
    o.sni = sni;
    is_int(tls_get(tp, &o, "/n", NULL, 0, &info, NULL), 200, what(ctx, "served"));
    is_str(info.cn, want, what(ctx, "certificate CN"));
}

static void test_sni(int tp, const char *ctx)
{
    expect_cn(tp, "other.test", "other.test", what(ctx, "SNI other.test"));
    expect_cn(tp, "a.other.test", "other.test", what(ctx, "SNI a.other.test (wildcard)"));
    expect_cn(tp, "localhost", "localhost", what(ctx, "SNI localhost"));
    expect_cn(tp, NULL, "localhost", what(ctx, "no SNI: the default (the first)"));
    expect_cn(tp, "unknown.test", "localhost", what(ctx, "SNI unknown.test: the default"));
}

/* ======================================================================
 * 6: session resumption, ticket rotation
 * ====================================================================== */

static void test_resumption(int tp, int version, const char *ctx)
{
    struct tls_opt o;
    struct tls_info info;
    SSL_SESSION *sess = NULL, *next = NULL;
    int reused = 0, served = 0, renewed = 0, i;

    memset(&o, 0, sizeof o);
    o.min_v = o.max_v = version;
    o.sni = "localhost";
    served += tls_get(tp, &o, "/n", NULL, 0, &info, &sess) == 200;
    ok(!info.reused && sess, what(ctx, "a first full handshake gives a session"));
    for (i = 0; i < 6 && sess; i++) {
        o.session = sess;
        served += tls_get(tp, &o, "/n", NULL, 0, &info, &next) == 200;
        reused += info.reused;
        /* After a resumption the client holds the ticket the server sent then, if any. */
        renewed += info.reused && next && next != sess;
        if (!info.reused)
            note("%s: resumption %d was a full handshake", ctx, i + 1);
        SSL_SESSION_free(sess);
        sess = next;
        next = NULL;
    }
    SSL_SESSION_free(sess);
    is_int(served, 7, what(ctx, "all served"));
    /*
     * Each connection offers the newest ticket, as clients do. In TLS 1.3 a client uses a
     * ticket once (RFC 8446, C.4; OpenSSL and curl do), so this needs a new ticket from
     * every resumed connection.
     */
    is_int(reused, 6, what(ctx, "6 connections in a row resume (on either worker)"));
    if (version == TLS1_3_VERSION)
        is_int(renewed, reused, what(ctx, "every resumed connection brings a new ticket"));
}

static void test_ticket_rotation(int tp)
{
    struct tls_opt o;
    struct tls_info info;
    SSL_SESSION *s13 = NULL, *s12 = NULL, *tmp = NULL;

    memset(&o, 0, sizeof o);
    o.min_v = o.max_v = TLS1_3_VERSION;
    tls_get(tp, &o, "/n", NULL, 0, &info, &s13);
    o.min_v = o.max_v = TLS1_2_VERSION;
    tls_get(tp, &o, "/n", NULL, 0, &info, &s12);
    if (!ok(s13 && s12, "--tls-ticket-rotate 1: sessions to resume")) {
        SSL_SESSION_free(s13);
        SSL_SESSION_free(s12);
        return;
    }
    o.min_v = o.max_v = TLS1_3_VERSION;
    o.session = s13;
    is_int(tls_get(tp, &o, "/n", NULL, 0, &info, &tmp), 200, "ticket rotation: TLS 1.3 resumed at once");
    ok(info.reused, "--tls-ticket-rotate 1: a TLS 1.3 ticket resumes at once");
    SSL_SESSION_free(tmp);
    tmp = NULL;
    o.min_v = o.max_v = TLS1_2_VERSION;
    o.session = s12;
    is_int(tls_get(tp, &o, "/n", NULL, 0, &info, NULL), 200, "ticket rotation: TLS 1.2 resumed at once");
    ok(info.reused, "--tls-ticket-rotate 1: a TLS 1.2 ticket resumes at once");

    sleep_ms(n_wrap ? 13000 : 5000);    /* more than three rotations (1 s, 3 s under a wrapper) */
    o.min_v = o.max_v = TLS1_3_VERSION;
    o.session = s13;
    is_int(tls_get(tp, &o, "/n", NULL, 0, &info, NULL), 200, "rotate 1: after 3+ rotations, TLS 1.3 served");
    ok(!info.reused, "--tls-ticket-rotate 1: after 3+ rotations a TLS 1.3 ticket no longer resumes");
    o.min_v = o.max_v = TLS1_2_VERSION;
    o.session = s12;
    is_int(tls_get(tp, &o, "/n", NULL, 0, &info, NULL), 200, "rotate 1: after 3+ rotations, TLS 1.2 served");
    ok(!info.reused, "--tls-ticket-rotate 1: after 3+ rotations a TLS 1.2 ticket no longer resumes");
    SSL_SESSION_free(s13);
    SSL_SESSION_free(s12);
}

/* ======================================================================
 * 7, 8: handshakes that fail or stall
 * ====================================================================== */

/* Waits until the server closes fd (EOF or reset), reading what comes; 1 if it did. */
static int raw_wait_closed(int fd, int timeout_ms, size_t *got, int *http_seen)
{
    long long deadline = now_ms() + timeout_ms;
    char buf[4096];

    *got = 0;
    for (;;) {
        long long left = deadline - now_ms();
        ssize_t n;
        if (left <= 0)
            return 0;
        set_timeouts(fd, (int)left);
        n = recv(fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return 1;
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n < 0)
            return 1;
        if (*got == 0 && n >= 5 && memcmp(buf, "HTTP/", 5) == 0)
            *http_seen = 1;
        *got += (size_t)n;
    }
}

static void serves_still(int tp, const char *ctx)
{
    char body[64];

    is_int(tls_get(tp, NULL, "/n?i=ok", body, sizeof body, NULL, NULL), 200,
           what(ctx, "the server still serves HTTPS"));
}

static void test_garbage(int tp)
{
    static const char *const sends[] = {
        NULL, /* random bytes */
        "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", /* a ClientHello record, nonsense inside */
    };
    static const char *const names[] = {"random bytes", "plain HTTP on the TLS port",
                                        "a malformed ClientHello"};
    unsigned char junk[512];
    size_t i;

    for (i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)(rand() & 0xff);
    junk[0] = 0x47;     /* not a handshake record's type */
    for (i = 0; i < 3; i++) {
        int fd = tcp_connect(tp), http = 0, closed;
        size_t got = 0;
        if (fd < 0) {
            ok(0, what(names[i], "connect"));
            continue;
        }
        if (i == 0)
            send(fd, junk, sizeof junk, MSG_NOSIGNAL);
        else if (i == 2)
            send(fd, sends[i], 10, MSG_NOSIGNAL);
        else
            send(fd, sends[i], strlen(sends[i]), MSG_NOSIGNAL);
        closed = raw_wait_closed(fd, io_timeout_ms, &got, &http);
        ok(closed, what(names[i], "the server closes the connection (EOF or reset)"));
        ok(!http, what(names[i], "no plain HTTP answer"));
        if (got)
            note("%s: %zu bytes before the close (an alert)", names[i], got);
        close(fd);
        serves_still(tp, names[i]);
    }
}

/* A real ClientHello, as the client would send it (from a memory BIO). */
static size_t client_hello(unsigned char *out, size_t cap)
{
    SSL *s = SSL_new(client_ctx);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    int n;

    SSL_set_bio(s, rb, wb);
    SSL_set_tlsext_host_name(s, "localhost");
    SSL_connect(s);
    n = BIO_read(wb, out, (int)cap);
    SSL_free(s);
    ERR_clear_error();
    return n > 0 ? (size_t)n : 0;
}

/* With --header-timeout 1: a client that sends nothing, a part, or a byte at a time. */
static void test_stalls(int tp)
{
    unsigned char hello[2048];
    size_t hello_len = client_hello(hello, sizeof hello), dripped = 0;
    int fd[3], closed[3] = {0, 0, 0}, served = 0, i;
    long long start = now_ms(), deadline = start + io_timeout_ms, at[3] = {0, 0, 0};
    static const char *const names[] = {"a client that sends nothing",
                                        "a client that sends 20 bytes of its ClientHello",
                                        "a client that drips its ClientHello a byte per 200 ms"};

    ok(hello_len > 100 && hello[0] == 0x16, "a ClientHello is captured");
    note("ClientHello: %zu bytes", hello_len);
    for (i = 0; i < 3; i++) {
        fd[i] = tcp_connect(tp);
        if (fd[i] >= 0)
            fcntl(fd[i], F_SETFL, O_NONBLOCK);
    }
    if (fd[1] >= 0)
        send(fd[1], hello, 20, MSG_NOSIGNAL);
    while (now_ms() < deadline && !(closed[0] && closed[1] && closed[2])) {
        if (!closed[2] && fd[2] >= 0 && dripped < hello_len &&
            send(fd[2], hello + dripped, 1, MSG_NOSIGNAL) == 1)
            dripped++;
        if (!served && now_ms() - start > 300) {
            char body[64];
            served = 1 + (tls_get(tp, NULL, "/n?i=meanwhile", body, sizeof body, NULL, NULL) ==
                          200);
        }
        sleep_ms(200);
        for (i = 0; i < 3; i++) {
            char buf[256];
            ssize_t n;
            if (closed[i] || fd[i] < 0)
                continue;
            while ((n = recv(fd[i], buf, sizeof buf, 0)) > 0) {
            }
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                closed[i] = 1;
                at[i] = now_ms() - start;
            }
        }
    }
    for (i = 0; i < 3; i++) {
        ok(fd[i] >= 0 && closed[i], what(names[i], "closed by the server within %d ms",
                                         io_timeout_ms));
        if (closed[i])
            note("%s: closed after %lld ms", names[i], at[i]);
        if (fd[i] >= 0)
            close(fd[i]);
    }
    note("dripped %zu of %zu bytes", dripped, hello_len);
    is_int(served, 2, "a normal client is served while three stall in the handshake");
}

/*
 * Whether the server ends t (close_notify, EOF or reset) within timeout_ms,
 * while the client sends a TLS 1.3 KeyUpdate (a record with no request bytes)
 * every 200 ms.
 */
static int closed_while_keyupdating(struct client *t, int timeout_ms, long long *after_ms)
{
    long long start = now_ms();
    char b;

    set_timeouts(t->fd, 200);
    while (now_ms() - start < timeout_ms) {
        int n, e;
        if (SSL_key_update(t->ssl, SSL_KEY_UPDATE_NOT_REQUESTED) != 1 ||
            SSL_do_handshake(t->ssl) != 1) {
            *after_ms = now_ms() - start;
            ERR_clear_error();
            return 1;                 /* the write failed: the server has closed */
        }
        n = SSL_read(t->ssl, &b, 1);
        e = SSL_get_error(t->ssl, n);
        ERR_clear_error();
        if (n > 0)
            continue;                 /* (no bytes are expected) */
        if (e == SSL_ERROR_ZERO_RETURN ||
            (e == SSL_ERROR_SYSCALL && errno != EAGAIN && errno != EWOULDBLOCK) ||
            e == SSL_ERROR_SSL) {
            *after_ms = now_ms() - start;
            return 1;
        }
    }
    return 0;
}

/*
 * --header-timeout and --idle-timeout are deadlines on TLS: records without
 * request bytes (KeyUpdates) do not renew them, and a first request's head
 * counts from the connect.
 */
static void test_tls_deadlines(int tp, int timeout_ms)
{
    struct client t;
    struct response r;
    long long after = 0;
    const struct tls_opt v13 = {.min_v = TLS1_3_VERSION, .max_v = TLS1_3_VERSION};

    if (tls_connect(&t, tp, &v13) < 0) {
        ok(0, what("KeyUpdates", "TLS connect: %s", last_tls_error));
        return;
    }
    ok(closed_while_keyupdating(&t, io_timeout_ms + 3 * timeout_ms, &after),
       "a TLS client that sends KeyUpdates and no request is closed (--header-timeout)");
    note("closed after %lld ms of KeyUpdates (--header-timeout %d ms)", after, timeout_ms);
    tls_close(&t);

    if (tls_connect(&t, tp, &v13) < 0) {
        ok(0, what("KeyUpdates when idle", "TLS connect: %s", last_tls_error));
        return;
    }
    tls_exchange(&t, "GET /n?i=1 HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
    expect_status(&r, 200, "KeyUpdates when idle: a first request");
    response_free(&r);
    ok(closed_while_keyupdating(&t, io_timeout_ms + 3 * timeout_ms, &after),
       "a kept-alive TLS client that sends only KeyUpdates is closed (--idle-timeout)");
    note("closed after %lld ms of KeyUpdates (--idle-timeout %d ms)", after, timeout_ms);
    tls_close(&t);

    /*
     * A first head that starts at half the timeout and would end at 1.5 times it: it
     * gets 408 (the deadline counts from the connect), not an answer.
     */
    if (tls_connect(&t, tp, NULL) < 0) {
        ok(0, what("first head", "TLS connect: %s", last_tls_error));
        return;
    }
    sleep_ms(timeout_ms / 2);
    client_sends(&t, "GET /n?i=late HTTP/1.1\r\n");
    sleep_ms(timeout_ms);
    client_sends(&t, "Host: localhost\r\n\r\n");
    read_response(&t, &r, 0);
    is_int(r.status, 408, "TLS: a first head that ends after --header-timeout from the connect");
    response_free(&r);
    tls_close(&t);
}

/*
 * A handshake whose reply does not fit in the socket at once (a long
 * certificate chain, a client with a small window): the server goes on when
 * the socket is writable, and does not spin meanwhile.
 */
static void test_big_handshake(void)
{
    struct server s;
    struct client t;
    struct tls_opt small = {.rcvbuf = 1024};
    char *chain = strdup(path_in(work, "bigchain.pem"));
    int tp;
    const char *args[] = {"--port", "0", "--tls-port", "0", "--workers", "1",
                          "--tls-cert", chain, "--tls-key", path_in(pki, "server.key"),
                          app_dir, NULL};

    if (!ok(sh("(cat '%s'; i=0; while [ $i -lt 140 ]; do cat '%s'; i=$((i+1)); done) > '%s'",
               path_in(pki, "server.pem"), path_in(pki, "inter.pem"), chain) == 0,
            "a 140-certificate chain")) {
        free(chain);
        return;
    }
    if (start(&s, &tp, args, "a long chain") == 0) {
        int done = tls_connect(&t, tp, &small) == 0;
        ok(done, what("a long chain", "the handshake ends for a client with a 1 KiB window (%s)",
                      done ? "ok" : last_tls_error));
        if (done) {
            struct response r;
            tls_exchange(&t, "GET /n?i=chain HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
            expect_status(&r, 200, "a long chain: a request after it");
            response_free(&r);
            tls_close(&t);
        }
        stop(&s, "a long chain");
    }
    free(chain);
}

/* --header-timeout 1, --hsts: a head that does not end over TLS gets 408, with HSTS. */
/* --max-requests-per-conn 3: the third answer says Connection: close, then a clean end. */
static void test_max_requests(int tp)
{
    struct client t;
    struct response r;
    int i;

    if (tls_connect(&t, tp, NULL) < 0) {
        ok(0, what("max-requests", "TLS connect: %s", last_tls_error));
        return;
    }
    for (i = 0; i < 3; i++) {
        tls_exchange(&t, "GET /n?i=m HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
        expect_status(&r, 200, "--max-requests-per-conn 3 over TLS");
        if (i == 2)
            expect_header(&r, "Connection", "close", "--max-requests-per-conn 3: the third");
        response_free(&r);
    }
    ok(client_wait_closed(&t, io_timeout_ms) == 1 && !t.reset,
       "--max-requests-per-conn 3: then the TLS connection ends cleanly");
    tls_close(&t);
}

static void test_408(int tp)
{
    struct client t;
    struct response r;

    if (tls_connect(&t, tp, NULL) < 0) {
        ok(0, what("408", "TLS connect: %s", last_tls_error));
        return;
    }
    client_sends(&t, "GET /n HTTP/1.1\r\nHost: localhost\r\n");
    read_response(&t, &r, 0);
    expect_status(&r, 408, "HTTPS: a head not done within --header-timeout");
    expect_header(&r, "Strict-Transport-Security", "max-age=600", "HTTPS 408");
    response_free(&r);
    tls_close(&t);
}

/* ======================================================================
 * 9: --max-conns 4
 * ====================================================================== */

static void test_max_conns(int port, int tp)
{
    struct client t[4], extra;
    struct response r;
    int i, n = 0, served = 0;
    long long deadline;

    for (i = 0; i < 4; i++)
        n += tls_connect(&t[i], tp, NULL) == 0;
    is_int(n, 4, "--max-conns 4: four TLS connections made (handshakes done)");
    ok(tls_connect(&extra, tp, NULL) < 0, "--max-conns 4: a fifth TLS connection is closed "
       "without a handshake");
    note("the fifth: %s", last_tls_error);
    fetch(port, "GET /n HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    expect_status(&r, 503, "--max-conns 4: a plain connection then");
    response_free(&r);
    tls_close(&t[0]);
    deadline = now_ms() + io_timeout_ms;
    while (!served && now_ms() < deadline) {
        char body[64];
        served = tls_get(tp, NULL, "/n?i=again", body, sizeof body, NULL, NULL) == 200;
        if (!served)
            sleep_ms(100);
    }
    ok(served, "--max-conns 4: after one TLS connection closed, a new one is served");
    for (i = 1; i < 4; i++) {
        /* The three still open serve on. */
        if (t[i].ssl) {
            tls_exchange(&t[i], "GET /n?i=x HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
            expect_status(&r, 200, "--max-conns 4: an open TLS connection serves on");
            response_free(&r);
        }
        tls_close(&t[i]);
    }
}

/* ======================================================================
 * 10, 11, 12: bodies, keep-alive, pipelining, uploads, wss://
 * ====================================================================== */

static unsigned long checksum(const void *data, size_t len)
{
    const unsigned char *p = data;
    unsigned long h = 5381;

    while (len--)
        h = h * 33 + *p++;
    return h;
}

static void test_bodies(int tp)
{
    struct client t;
    struct response r;
    char *want, req[256];
    size_t i;
    int good;

    if (tls_connect(&t, tp, NULL) < 0) {
        ok(0, what("bodies", "TLS connect: %s", last_tls_error));
        return;
    }
    tls_exchange(&t, "GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
    want = malloc(307200 + 1);
    for (i = 0; i < 307200; i++)
        want[i] = "0123456789abcdef"[i % 16];
    good = r.status == 200 && r.body_len == 307200 && memcmp(r.body, want, 307200) == 0;
    ok(good, "a 300 KB handler body over TLS, byte for byte");
    if (!good)
        note("status %d, %zu bytes", r.status, r.body_len);
    free(want);
    response_free(&r);

    tls_exchange(&t, "GET /files/big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
    expect_status(&r, 200, "app.static 3 MB over TLS");
    is_int(r.body_len, BIG_FILE_BYTES, "app.static 3 MB over TLS: length");
    ok(r.body_len == BIG_FILE_BYTES && checksum(r.body, r.body_len) ==
       checksum(big_file, BIG_FILE_BYTES) && memcmp(r.body, big_file, BIG_FILE_BYTES) == 0,
       "app.static 3 MB over TLS: byte for byte (checksum)");
    response_free(&r);

    tls_exchange(&t, "GET /files/big.bin HTTP/1.1\r\nHost: localhost\r\n"
                     "Range: bytes=1000000-1099999\r\n\r\n", &r);
    expect_status(&r, 206, "a Range of the static file over TLS");
    expect_header(&r, "Content-Range", "bytes 1000000-1099999/3145728", "Range over TLS");
    ok(r.body_len == 100000 && memcmp(r.body, big_file + 1000000, 100000) == 0,
       "Range over TLS: the exact slice");
    response_free(&r);

    tls_exchange(&t, "GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
    expect_status(&r, 200, "a streamed response over TLS");
    expect_header(&r, "Transfer-Encoding", "chunked", "streamed over TLS");
    {
        char expect_body_text[2048];
        size_t off = 0;
        for (i = 1; i <= 50; i++)
            off += (size_t)snprintf(expect_body_text + off, sizeof expect_body_text - off,
                                    "piece-%zu;", i);
        snprintf(expect_body_text + off, sizeof expect_body_text - off, "end");
        expect_body(&r, expect_body_text, "streamed over TLS: decoded exactly");
    }
    response_free(&r);

    good = 0;
    for (i = 0; i < 200; i++) {
        snprintf(req, sizeof req, "GET /n?i=%zu HTTP/1.1\r\nHost: localhost\r\n\r\n", i);
        tls_exchange(&t, req, &r);
        snprintf(req, sizeof req, "n=%zu", i);
        good += r.status == 200 && r.body && strcmp(r.body, req) == 0;
        response_free(&r);
    }
    is_int(good, 200, "200 keep-alive requests on one TLS connection");

    {
        char pipe_reqs[20 * 64];
        size_t off = 0;
        for (i = 0; i < 20; i++)
            off += (size_t)snprintf(pipe_reqs + off, sizeof pipe_reqs - off,
                                    "GET /n?i=p%zu HTTP/1.1\r\nHost: localhost\r\n\r\n", i);
        client_send(&t, pipe_reqs, off);
        good = 0;
        for (i = 0; i < 20; i++) {
            read_response(&t, &r, 0);
            snprintf(req, sizeof req, "n=p%zu", i);
            good += r.status == 200 && r.body && strcmp(r.body, req) == 0;
            response_free(&r);
        }
        is_int(good, 20, "20 pipelined requests in one write over TLS, answered in order");
    }

    tls_exchange(&t, "HEAD /files/big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
    expect_status(&r, 200, "HEAD of the static file over TLS");
    expect_header(&r, "Content-Length", "3145728", "HEAD over TLS");
    response_free(&r);
    /* A streamed response that waits (tycho.sleep), then a request pipelined behind it. */
    client_sends(&t, "GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n"
                  "GET /n?i=behind HTTP/1.1\r\nHost: localhost\r\n\r\n");
    read_response(&t, &r, 0);
    expect_body(&r, "s1;s2;s3;s4;s5;s6;s7;s8;s9;s10;done", "a waiting streamed response over TLS");
    response_free(&r);
    read_response(&t, &r, 0);
    expect_body(&r, "n=behind", "the request pipelined behind a waiting handler over TLS");
    response_free(&r);
    tls_close(&t);
}

/* Reads slowly (a small receive buffer, a pause per record) until a whole response is in. */
static void slow_read_response(struct client *t, struct response *r)
{
    long long deadline = now_ms() + 3 * io_timeout_ms;
    char *end = NULL;
    size_t want = 0;

    while (now_ms() < deadline && !t->closed) {
        if (!want && t->len && (end = memmem(t->buf, t->len, "\r\n\r\n", 4))) {
            char *cl = strcasestr(t->buf, "Content-Length:");
            if (cl && cl < end)
                want = (size_t)(end - t->buf) + 4 + strtoull(cl + 15, NULL, 10);
        }
        if (want && t->len >= want)
            break;
        if (client_fill(t, deadline) <= 0)
            break;
        sleep_ms(1);
    }
    read_response(t, r, 0);
}

static void test_slow_reader(int tp)
{
    struct client t;
    struct tls_opt o;
    struct response r;

    memset(&o, 0, sizeof o);
    o.rcvbuf = 4096;
    if (tls_connect(&t, tp, &o) < 0) {
        ok(0, what("slow reader", "TLS connect: %s", last_tls_error));
        return;
    }
    client_sends(&t, "GET /files/big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n");
    slow_read_response(&t, &r);
    ok(r.status == 200 && r.body_len == BIG_FILE_BYTES &&
       memcmp(r.body, big_file, BIG_FILE_BYTES) == 0,
       "a client reading slowly gets the 3 MB static file over TLS byte for byte");
    response_free(&r);
    client_sends(&t, "GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n");
    slow_read_response(&t, &r);
    ok(r.status == 200 && r.body_len == 307200 && memcmp(r.body, "0123456789abcdef", 16) == 0 &&
       memcmp(r.body + 307184, "0123456789abcdef", 16) == 0,
       "a client reading slowly gets the 300 KB handler body over TLS");
    response_free(&r);
    tls_close(&t);
}

static void test_uploads(int tp)
{
    struct client t;
    struct response r;
    size_t n = 1024 * 1024, i;
    char *body = malloc(2 * n), head[256];

    if (tls_connect(&t, tp, NULL) < 0) {
        ok(0, what("uploads", "TLS connect: %s", last_tls_error));
        free(body);
        return;
    }
    for (i = 0; i < 2 * n; i++)
        body[i] = (char)('a' + i % 26);
    snprintf(head, sizeof head, "POST /echo-len HTTP/1.1\r\nHost: localhost\r\n"
             "Content-Length: %zu\r\n\r\n", n);
    client_sends(&t, head);
    client_send(&t, body, n);
    read_response(&t, &r, 0);
    if (expect_status(&r, 200, "a 1 MB POST over TLS"))
        expect_body(&r, "1048576", "a 1 MB POST over TLS: req.body's length");
    response_free(&r);

    snprintf(head, sizeof head, "POST /upload HTTP/1.1\r\nHost: localhost\r\n"
             "Content-Length: %zu\r\n\r\n", 2 * n);
    client_sends(&t, head);
    client_send(&t, body, 2 * n);
    read_response(&t, &r, 0);
    if (expect_status(&r, 200, "a 2 MB stream_body POST over TLS"))
        expect_body(&r, "2097152", "stream_body over TLS: req:read read it all");
    response_free(&r);

    client_sends(&t, "POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (i = 0; i < 8; i++) {
        char size[16];
        snprintf(size, sizeof size, "%x\r\n", 10000);
        client_sends(&t, size);
        client_send(&t, body, 10000);
        client_sends(&t, "\r\n");
    }
    client_sends(&t, "0\r\n\r\n");
    read_response(&t, &r, 0);
    if (expect_status(&r, 200, "a chunked stream_body POST over TLS"))
        expect_body(&r, "80000", "chunked stream_body over TLS: decoded and counted");
    response_free(&r);
    tls_close(&t);
    free(body);
}

static void test_wss(int tp)
{
    static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";
    unsigned char digest[20], frame[64], accept_b64[64];
    char src[128];
    const char *msg = "hello over wss";
    size_t len = strlen(msg), i;
    struct client t;
    struct response r;
    long long deadline;

    if (tls_connect(&t, tp, NULL) < 0) {
        ok(0, what("wss", "TLS connect: %s", last_tls_error));
        return;
    }
    client_sends(&t, "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n");
    read_response(&t, &r, 0);
    expect_status(&r, 101, "wss: the upgrade");
    snprintf(src, sizeof src, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    EVP_Digest(src, strlen(src), digest, NULL, EVP_sha1(), NULL);
    EVP_EncodeBlock(accept_b64, digest, 20);
    expect_header(&r, "Sec-WebSocket-Accept", (const char *)accept_b64, "wss: the accept key");
    response_free(&r);

    frame[0] = 0x81;
    frame[1] = (unsigned char)(0x80 | len);
    memcpy(frame + 2, "\x12\x34\x56\x78", 4);
    for (i = 0; i < len; i++)
        frame[6 + i] = (unsigned char)(msg[i] ^ frame[2 + i % 4]);
    client_send(&t, frame, 6 + len);
    deadline = now_ms() + io_timeout_ms;
    if (client_need(&t, 2 + len, deadline) == 0) {
        ok((unsigned char)t.buf[0] == 0x81 && (unsigned char)t.buf[1] == len,
           "wss: an unmasked text frame of the same length comes back");
        ok(memcmp(t.buf + 2, msg, len) == 0, "wss: the echo");
    } else {
        ok(0, "wss: the echo arrives");
    }
    client_consume(&t, t.len >= 2 + len ? 2 + len : t.len);
    {
        /* A 200 KB binary message, masked (64-bit length), and its echo. */
        size_t big = 200 * 1024, j;
        unsigned char *f = malloc(big + 14);
        f[0] = 0x82;
        f[1] = 0x80 | 127;
        for (j = 0; j < 8; j++)
            f[2 + j] = (unsigned char)((uint64_t)big >> (56 - 8 * j));
        memcpy(f + 10, "\x01\x02\x03\x04", 4);
        for (j = 0; j < big; j++)
            f[14 + j] = (unsigned char)((j * 7) ^ f[10 + j % 4]);
        client_send(&t, f, big + 14);
        if (client_need(&t, 10 + big, now_ms() + io_timeout_ms) == 0) {
            int same = (unsigned char)t.buf[0] == 0x82 && (unsigned char)t.buf[1] == 127;
            for (j = 0; same && j < big; j++)
                same = (unsigned char)t.buf[10 + j] == (unsigned char)(j * 7);
            ok(same, "wss: a 200 KB binary message echoed byte for byte");
            client_consume(&t, 10 + big);
        } else {
            ok(0, "wss: a 200 KB binary message echoed");
        }
        free(f);
    }
    /* A close frame, masked, code 1000. */
    memcpy(frame, "\x88\x82\x00\x00\x00\x00\x03\xe8", 8);
    client_send(&t, frame, 8);
    if (client_need(&t, 2, now_ms() + io_timeout_ms) == 0)
        ok((unsigned char)t.buf[0] == 0x88, "wss: the server answers the close");
    else
        ok(0, "wss: the server answers the close");
    tls_close(&t);
}

/* ======================================================================
 * 13, 14: certificates reloaded (SIGHUP under load, --watch)
 * ====================================================================== */

static char leaf2_pem[512], leaf2_key[512];

/* A second localhost leaf signed by the same CA, told apart by its OU. */
static int make_second_leaf(void)
{
    snprintf(leaf2_pem, sizeof leaf2_pem, "%s/second.pem", pki);
    snprintf(leaf2_key, sizeof leaf2_key, "%s/second.key", pki);
    return sh("cd '%s' && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
              "-out second.key 2>&1 && openssl req -new -key second.key "
              "-subj '/OU=second/CN=localhost' -out second.csr 2>&1 && "
              "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n'"
              " > second.ext && openssl x509 -req -in second.csr -CA ca.pem -CAkey ca.key "
              "-CAcreateserial -days 30 -extfile second.ext -out second.pem 2>&1 && "
              "rm -f second.csr second.ext ca.srl", pki);
}

/* Whether a new verified connection shows the certificate whose subject has ou (NULL: none). */
static int shows(int tp, const char *ou)
{
    struct tls_opt o;
    struct tls_info info;

    memset(&o, 0, sizeof o);
    o.sni = "localhost";
    o.verify_host = "localhost";
    if (tls_get(tp, &o, "/n", NULL, 0, &info, NULL) != 200)
        return 0;
    return ou ? strstr(info.subject, ou) != NULL : strstr(info.subject, "OU=") == NULL;
}

static int wait_shows(int tp, const char *ou, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;

    while (!shows(tp, ou)) {
        if (now_ms() > deadline)
            return 0;
        sleep_ms(100);
    }
    return 1;
}

/* Puts the pair (cert, key) in place as served.pem / served.key: both files, by rename. */
static int install_pair(const char *cert, const char *key)
{
    return replace_file(cert, path_in(work, "served.pem")) < 0 ||
                   replace_file(key, path_in(work, "served.key")) < 0
               ? -1
               : 0;
}

static void test_reload_under_load(void)
{
    struct server s;
    int tp, pfd[2], i, counts[3] = {-1, -1, -1}, status;
    char cert[512], key[512];
    pid_t child;
    const int n = n_wrap ? 100 : 300;

    snprintf(cert, sizeof cert, "%s/served.pem", work);
    snprintf(key, sizeof key, "%s/served.key", work);
    if (install_pair(path_in(pki, "server.pem"), path_in(pki, "server.key")) < 0) {
        ok(0, "reload: the first pair is written");
        return;
    }
    {
        const char *args[] = {"--port", "0", "--tls-port", "0", "--workers", "2",
                              "--tls-cert", cert, "--tls-key", key, app_dir, NULL};
        if (start(&s, &tp, args, "reload") < 0)
            return;
    }
    ok(shows(tp, NULL), "reload: the first certificate is served");
    if (pipe(pfd) < 0) {
        ok(0, "reload: pipe");
        stop(&s, "reload");
        return;
    }
    fflush(stdout);
    child = fork();
    if (child == 0) {
        /* N new verified connections in a row: failures, and how many showed each leaf. */
        int fails = 0, first = 0, second = 0, j;
        close(pfd[0]);
        for (j = 0; j < n; j++) {
            struct tls_opt o;
            struct tls_info info;
            memset(&o, 0, sizeof o);
            o.sni = "localhost";
            o.verify_host = "localhost";
            if (tls_get(tp, &o, "/n", NULL, 0, &info, NULL) != 200)
                fails++;
            else if (strstr(info.subject, "OU=second"))
                second++;
            else
                first++;
        }
        {
            int out[3] = {fails, first, second};
            if (write(pfd[1], out, sizeof out) != (ssize_t)sizeof out)
                _exit(3);
        }
        _exit(0);
    }
    close(pfd[1]);
    for (i = 0; i < 5; i++) {
        const char *c = i % 2 == 0 ? leaf2_pem : path_in(pki, "server.pem");
        const char *k = i % 2 == 0 ? leaf2_key : path_in(pki, "server.key");
        sleep_ms(n_wrap ? 400 : 60);
        if (install_pair(c, k) < 0 || kill(s.pid, SIGHUP) < 0)
            note("reload %d: could not swap or signal", i + 1);
    }
    if (child > 0) {
        long long deadline = now_ms() + 6 * io_timeout_ms;
        ssize_t got = 0;
        struct pollfd p = {pfd[0], POLLIN, 0};
        if (poll(&p, 1, (int)(deadline - now_ms())) == 1)
            got = read(pfd[0], counts, sizeof counts);
        if (got != (ssize_t)sizeof counts) {
            kill(child, SIGKILL);
            counts[0] = -1;
        }
        waitpid(child, &status, 0);
    }
    close(pfd[0]);
    is_int(counts[0], 0, what("reload", "%d new connections during 5 SIGHUP reloads: no failure",
                              n));
    note("reload: %d connections showed the first leaf, %d the second", counts[1], counts[2]);
    ok(wait_shows(tp, "OU=second", io_timeout_ms),
       "reload: after the last SIGHUP new connections get the new certificate");

    /* A key that does not match: logged, the old certificate stays. */
    if (install_pair(path_in(pki, "server.pem"), leaf2_key) < 0 || kill(s.pid, SIGHUP) < 0)
        note("broken pair: could not swap or signal");
    ok(wait_for_log(&s, "stay in use", io_timeout_ms),
       "reload: a key that does not match is logged (\"... stay in use\")");
    ok(log_has_line(&s, "does not match", "stay in use"), "reload: the log line names the mismatch");
    ok(shows(tp, "OU=second"), "reload: the certificate loaded before is still served");
    for (i = 0; i < 5; i++)
        if (!shows(tp, "OU=second"))
            break;
    is_int(i, 5, "reload: connections after the failed reload are served, no failure");
    stop(&s, "reload");
}

static void test_watch(void)
{
    struct server s;
    int tp;
    char cert[512], key[512];

    snprintf(cert, sizeof cert, "%s/served.pem", work);
    snprintf(key, sizeof key, "%s/served.key", work);
    if (install_pair(path_in(pki, "server.pem"), path_in(pki, "server.key")) < 0) {
        ok(0, "--watch: the first pair is written");
        return;
    }
    {
        const char *args[] = {"--port", "0", "--tls-port", "0", "--workers", "2", "--watch",
                              "--tls-cert", cert, "--tls-key", key, app_dir, NULL};
        if (start(&s, &tp, args, "--watch") < 0)
            return;
    }
    ok(shows(tp, NULL), "--watch: the first certificate is served");
    install_pair(leaf2_pem, leaf2_key);
    /*
     * docs/https.md: "With --watch, a change to a file in a certificate's or key's directory
     * does the same [as SIGHUP]".
     */
    ok(wait_shows(tp, "OU=second", n_wrap ? 3 * 5000 : 5000),
       "--watch: replaced files are served to new connections without a signal (within 5 s)");
    ok(log_has_line(&s, "TLS certificates reloaded", NULL), "--watch: the reload is logged");
    stop(&s, "--watch");
}

/* ======================================================================
 * 15, 18: 1,000 idle TLS connections; SIGTERM with TLS connections open
 * ====================================================================== */

static void test_idle_and_sigterm(void)
{
    const int n = n_wrap ? 200 : 1000;
    struct server s;
    struct client *conns = calloc((size_t)n, sizeof *conns), slow;
    struct response r;
    int tp, i, made = 0, answered = 0, ended = 0;
    long before, after;
    const char *args[] = {"--port", "0", "--tls-port", "0", "--workers", "2",
                          "--tls-cert", path_in(pki, "server.pem"),
                          "--tls-key", path_in(pki, "server.key"), app_dir, NULL};
    char body[64];

    if (raise_fd_limit((rlim_t)(2 * n + 256)) < 0)
        note("could not raise the open-file limit to %d", 2 * n + 256);
    if (!conns || start(&s, &tp, args, "idle") < 0) {
        free(conns);
        return;
    }
    /* Warm up: the workers' first handshakes, pools and Lua. */
    for (i = 0; i < 20; i++)
        tls_get(tp, NULL, "/n", body, sizeof body, NULL, NULL);
    sleep_ms(200);
    before = rss_kib(s.pid);
    for (i = 0; i < n; i++) {
        if (tls_connect(&conns[i], tp, NULL) < 0) {
            note("idle connection %d: %s", i, last_tls_error);
            break;
        }
        tls_exchange(&conns[i], "GET /n?i=idle HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
        made += r.status == 200;
        response_free(&r);
    }
    is_int(made, n, what("idle", "%d TLS connections made, each did one request", n));
    sleep_ms(300);
    after = rss_kib(s.pid);
    if (before > 0 && after > 0 && made > 0) {
        double per = (double)(after - before) * 1024.0 / made;
        note("RSS %ld KiB before, %ld KiB with %d idle TLS connections: %.0f bytes each", before,
             after, made, per);
        if (n_wrap == 0 && !sanitized(s.pid))
            ok(per < 40 * 1024, "idle TLS connections: under 40 KiB of RSS each");
    }
    is_int(fetch(s.port, "GET /n?i=plain HTTP/1.1\r\nHost: t\r\n\r\n", &r), 200,
           "idle: the plain port serves meanwhile");
    response_free(&r);
    for (i = 0; i < made; i++) {
        tls_exchange(&conns[i], "GET /n?i=again HTTP/1.1\r\nHost: localhost\r\n\r\n", &r);
        answered += r.status == 200 && r.body && strcmp(r.body, "n=again") == 0;
        response_free(&r);
    }
    is_int(answered, made, "idle: every idle TLS connection answers a second request");

    /* SIGTERM with a streamed response under way and the idle connections open. */
    if (tls_connect(&slow, tp, NULL) == 0) {
        long long t0 = now_ms();
        client_sends(&slow, "GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n");
        ok(tls_read_until(&slow, "s1;", now_ms() + io_timeout_ms) == 0,
           "SIGTERM: the streamed response has begun");
        kill(s.pid, SIGTERM);
        read_response(&slow, &r, 0);
        /* The head was already buffered: read_response parses it from slow.buf. */
        expect_status(&r, 200, "SIGTERM: the streamed response");
        is_str(r.body, "s1;s2;s3;s4;s5;s6;s7;s8;s9;s10;done",
               "SIGTERM: the streamed TLS response ends whole (the last chunk)");
        response_free(&r);
        ok(client_wait_closed(&slow, io_timeout_ms) == 1,
           "SIGTERM: then the streamed TLS connection ends cleanly");
        note("SIGTERM: streamed response done %lld ms after the start", now_ms() - t0);
        tls_close(&slow);
    } else {
        ok(0, what("SIGTERM", "TLS connect: %s", last_tls_error));
        kill(s.pid, SIGTERM);
    }
    for (i = 0; i < made; i++) {
        int rc = client_wait_closed(&conns[i], io_timeout_ms);
        ended += rc == 1 && !conns[i].reset;
    }
    is_int(ended, made, "SIGTERM: every idle keep-alive TLS connection sees a clean end");
    stop(&s, "SIGTERM with TLS connections open");
    for (i = 0; i < n; i++)
        if (conns[i].ssl || conns[i].fd > 0)
            tls_close(&conns[i]);
    free(conns);
}

/* A certificate with its chain is sent whole; an expired one is named in a warning at load. */
static void test_chain_and_expiry(void)
{
    struct server s;
    struct tls_opt o;
    struct tls_info info;
    int tp;
    char *expired = strdup(path_in(pki, "expired.pem"));
    const char *args[] = {"--port", "0", "--tls-port", "0", "--workers", "1",
                          "--tls-cert", path_in(pki, "server-chain.pem"),
                          "--tls-key", path_in(pki, "chain.key"),
                          "--tls-cert", expired, "--tls-key", path_in(pki, "expired.key"),
                          app_dir, NULL};

    if (start(&s, &tp, args, "chain") == 0) {
        memset(&o, 0, sizeof o);
        o.sni = "localhost";
        o.verify_host = "localhost";
        is_int(tls_get(tp, &o, "/n", NULL, 0, &info, NULL), 200,
               "a leaf signed by an intermediate verifies against the CA alone (the chain is "
               "sent)");
        ok(log_has_line(&s, "has expired", expired),
           "an expired certificate is named in a warning when loaded");
        stop(&s, "chain");
    }
    free(expired);
}

/* ======================================================================
 * 16: errors at start
 * ====================================================================== */

/* Runs the binary with args and checks its exit status and that want is a line of its output. */
static void expect_start_error(const char *args, int want_rc, const char *want, const char *ctx)
{
    char cmd[4096], out[8192], line[1024];
    int rc, i;
    size_t off = 0;

    for (i = 0; i < n_wrap; i++)
        off += (size_t)snprintf(cmd + off, sizeof cmd - off, "%s ", wrap_words[i]);
    snprintf(cmd + off, sizeof cmd - off, "%s --port 0 %s %s 2>&1 </dev/null", tycho_binary, args,
             app_dir);
    rc = run_command(cmd, out, sizeof out);
    is_int(rc, want_rc, what(ctx, "exit status"));
    snprintf(line, sizeof line, "%s\n", want);
    ok(strstr(out, line) != NULL, what(ctx, "the message: %s", want));
    if (!strstr(out, line))
        note("%s: got: %.500s", ctx, out);
}

static void test_start_errors(void)
{
    char args[2048], want[2048];
    char *cert = strdup(path_in(pki, "server.pem")), *keyf = strdup(path_in(pki, "server.key"));
    char *other_key = strdup(path_in(pki, "other.key")), *other = strdup(path_in(pki, "other.pem"));
    char *missing = strdup(path_in(pki, "missing.pem")), *empty = strdup(path_in(work, "empty"));
    int fd, port;
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;

    snprintf(args, sizeof args, "--tls-cert %s --tls-key %s", missing, keyf);
    snprintf(want, sizeof want, "tycho: --tls-cert %s: No such file or directory", missing);
    expect_start_error(args, 1, want, "start: a missing certificate file");

    snprintf(args, sizeof args, "--tls-cert %s --tls-key %s", keyf, keyf);
    snprintf(want, sizeof want, "tycho: --tls-cert %s: no start line (expected PEM, the "
             "certificate then its chain)", keyf);
    expect_start_error(args, 1, want, "start: a certificate file that is not a PEM certificate");

    snprintf(args, sizeof args, "--tls-cert %s --tls-key %s", cert, cert);
    snprintf(want, sizeof want, "tycho: --tls-key %s: unsupported (expected a PEM private key)",
             cert);
    expect_start_error(args, 1, want, "start: a key file that is not a PEM key");

    {
        char *enc = strdup(path_in(work, "encrypted.key"));
        if (ok(sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes256 "
                  "-pass pass:secret -out '%s' 2>/dev/null", enc) == 0, "an encrypted key")) {
            snprintf(args, sizeof args, "--tls-cert %s --tls-key %s", cert, enc);
            snprintf(want, sizeof want, "tycho: --tls-key %s: the key is encrypted and Tycho "
                     "takes no passphrase (write it decrypted: openssl pkey -in KEY -out "
                     "NEW.key)", enc);
            expect_start_error(args, 1, want, "start: an encrypted key (no prompt)");
        }
        free(enc);
    }

    snprintf(args, sizeof args, "--tls-cert %s --tls-key %s", cert, other_key);
    snprintf(want, sizeof want, "tycho: --tls-key %s does not match --tls-cert %s: key values "
             "mismatch", other_key, cert);
    expect_start_error(args, 1, want, "start: a key that is not the certificate's");

    /*
     * The three below are command-line errors: exit status 2, as docs/cli.md says of a bad
     * command line (docs/https.md's table does not give the statuses).
     */
    snprintf(args, sizeof args, "--tls-cert %s --tls-key %s --tls-cert %s", cert, keyf, other);
    expect_start_error(args, 2, "tycho: --tls-key: 1 given for 2 --tls-cert files (each "
                       "certificate file needs its key, in the same order; a directory brings its "
                       "own)", "start: keys and certificates not in pairs");

    mkdir(empty, 0700);
    snprintf(args, sizeof args, "--tls-cert %s", empty);
    snprintf(want, sizeof want, "tycho: --tls-cert %s: no NAME.pem or NAME.crt with its NAME.key "
             "in the directory", empty);
    expect_start_error(args, 1, want, "start: a directory with no pair");
    rmdir(empty);

    snprintf(args, sizeof args, "--tls-port 8080 --port 8080 --tls-cert %s --tls-key %s", cert,
             keyf);
    expect_start_error(args, 2, "tycho: --tls-port 8080: the same port as --port",
                       "start: --tls-port equal to --port");

    expect_start_error("--hsts 600", 2,
                       "tycho: --hsts: only goes with --tls-cert (browsers ignore it over HTTP)",
                       "start: --hsts without --tls-cert");

    /* A port taken: bind one ourselves. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 1) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0) {
        port = ntohs(sa.sin_port);
        snprintf(args, sizeof args, "--tls-port %d --tls-cert %s --tls-key %s", port, cert, keyf);
        snprintf(want, sizeof want, "tycho: cannot listen on 127.0.0.1:%d (--tls-port): Address "
                 "already in use", port);
        expect_start_error(args, 1, want, "start: --tls-port taken");
    } else {
        ok(0, "start: a port to take");
    }
    if (fd >= 0)
        close(fd);
    free(cert);
    free(keyf);
    free(other_key);
    free(other);
    free(missing);
    free(empty);
}

/* ======================================================================
 * main
 * ====================================================================== */

static int write_big_file(void)
{
    char path[512];
    FILE *f;
    size_t i;
    unsigned x = 12345;

    snprintf(path, sizeof path, "%s/public", app_dir);
    if (mkdir(path, 0700) < 0)
        return -1;
    big_file = malloc(BIG_FILE_BYTES);
    if (!big_file)
        return -1;
    for (i = 0; i < BIG_FILE_BYTES; i++) {
        x = x * 1103515245u + 12345u;
        big_file[i] = (unsigned char)(x >> 16);
    }
    snprintf(path, sizeof path, "%s/public/big.bin", app_dir);
    if (!(f = fopen(path, "wb")))
        return -1;
    i = fwrite(big_file, 1, BIG_FILE_BYTES, f);
    return fclose(f) == 0 && i == BIG_FILE_BYTES ? 0 : -1;
}

int main(int argc, char **argv)
{
    int rc = suite_setup(argc, argv), tp;
    struct server s;
    char mkcerts[512];

    if (rc)
        return rc;
    srand((unsigned)getpid());
    if (!mkdtemp(pki) || !mkdtemp(work)) {
        ok(0, "temporary directories");
        return test_summary();
    }
    if (app_dir_make(app_dir, app_lua) < 0 || write_big_file() < 0) {
        ok(0, "the app and its files are written");
        goto out;
    }
    snprintf(mkcerts, sizeof mkcerts, "tests/integration/tls/mkcerts.sh");
    if (access(mkcerts, R_OK) != 0)
        snprintf(mkcerts, sizeof mkcerts, "%s/../tls/mkcerts.sh", fixture_dir);
    if (!ok(sh("sh '%s' '%s'", mkcerts, pki) == 0, "mkcerts.sh makes the test PKI") ||
        !ok(make_second_leaf() == 0, "a second localhost leaf signed by the test CA"))
        goto out;
    snprintf(ca_path, sizeof ca_path, "%s/ca.pem", pki);
    if (!ok((client_ctx = make_client_ctx()) != NULL, "the client's SSL_CTX trusts the test CA"))
        goto out;

    test_start_errors();

    /* The main server: two certificates (SNI), HSTS, two workers. */
    {
        const char *args[] = {"--port", "0", "--tls-port", "0", "--workers", "2",
                              "--hsts", "600", "--max-body", "4194304", "--health", "/healthz",
                              "--tls-cert", path_in(pki, "server.pem"),
                              "--tls-key", path_in(pki, "server.key"),
                              "--tls-cert", path_in(pki, "other.pem"),
                              "--tls-key", path_in(pki, "other.key"), app_dir, NULL};
        if (start(&s, &tp, args, "main") == 0) {
            test_scheme_and_curl(&s, tp);
            test_hsts_tls(tp);
            test_protocols(tp);
            test_alpn(tp);
            test_sni(tp, "two files");
            test_resumption(tp, TLS1_3_VERSION, "resumption TLS 1.3");
            test_resumption(tp, TLS1_2_VERSION, "resumption TLS 1.2");
            test_garbage(tp);
            test_bodies(tp);
            test_slow_reader(tp);
            test_uploads(tp);
            test_wss(tp);
            test_redirect(s.port, tp);
            stop(&s, "main");
        }
    }

    /* --header-timeout 1: stalled handshakes, a late head. */
    {
        const char *args[] = {"--port", "0", "--tls-port", "0", "--workers", "2",
                              "--header-timeout", n_wrap ? "3" : "1", "--hsts", "600",
                              "--idle-timeout", n_wrap ? "3" : "1",
                              "--max-requests-per-conn", "3",
                              "--tls-cert", path_in(pki, "server.pem"),
                              "--tls-key", path_in(pki, "server.key"), app_dir, NULL};
        if (start(&s, &tp, args, "header-timeout") == 0) {
            test_stalls(tp);
            test_408(tp);
            test_max_requests(tp);
            test_tls_deadlines(tp, n_wrap ? 3000 : 1000);
            serves_still(tp, "after the stalls");
            stop(&s, "header-timeout");
        }
    }

    /* --max-conns 4. */
    {
        const char *args[] = {"--port", "0", "--tls-port", "0", "--workers", "2",
                              "--max-conns", "4",
                              "--tls-cert", path_in(pki, "server.pem"),
                              "--tls-key", path_in(pki, "server.key"), app_dir, NULL};
        if (start(&s, &tp, args, "max-conns") == 0) {
            test_max_conns(s.port, tp);
            stop(&s, "max-conns");
        }
    }

    /* A directory of certificates; tickets rotated every second. */
    {
        char *dir = strdup(path_in(work, "certs"));
        mkdir(dir, 0700);
        copy_file(path_in(pki, "server.pem"), path_in(dir, "a.pem"));
        copy_file(path_in(pki, "server.key"), path_in(dir, "a.key"));
        copy_file(path_in(pki, "other.pem"), path_in(dir, "b.pem"));
        copy_file(path_in(pki, "other.key"), path_in(dir, "b.key"));
        {
            const char *args[] = {"--port", "0", "--tls-port", "0", "--workers", "2",
                                  "--tls-ticket-rotate", n_wrap ? "3" : "1", "--tls-cert",
                                  dir, app_dir, NULL};
            if (start(&s, &tp, args, "directory") == 0) {
                test_sni(tp, "--tls-cert DIR");
                test_ticket_rotation(tp);
                stop(&s, "directory");
            }
        }
        free(dir);
    }

    test_chain_and_expiry();
    test_big_handshake();
    test_reload_under_load();
    test_watch();
    test_idle_and_sigterm();

out:
    if (client_ctx)
        SSL_CTX_free(client_ctx);
    free(big_file);
    remove_tree(app_dir);
    remove_tree(pki);
    remove_tree(work);
    return test_summary();
}
