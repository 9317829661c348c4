/*
 * bench/idleconns.c: holds idle keep-alive connections open, for `make bench`'s
 * measure of a server's memory per idle connection (plain and TLS).
 *
 * Opens CONNS connections to 127.0.0.1:PORT (nothing else: the host is fixed),
 * one after the other, over TLS with -t (any certificate: what is measured is
 * the server, not the check). On each it sends one GET PATH (keep-alive) and
 * reads the whole answer (status 200, Content-Length body), so that every
 * connection has served one request, as an idle keep-alive connection has; the
 * connection is then left open and silent. Once all are open it prints
 *   idleconns conns N ready
 * on stdout and sleeps HOLD seconds (the caller reads the server's memory
 * meanwhile, then ends it with SIGTERM); the kernel closes the connections at
 * exit. Exit status: 0 after the hold; 1 when a connection, handshake or
 * answer fails (the reason on stderr); 2 on bad arguments. A hard limit
 * (alarm: HOLD + 60 s) ends it whatever the server does, and every socket has
 * 10 s send and receive timeouts.
 *
 * With -r N (and -t) it holds nothing: it makes N connections one after the
 * other on ONE SSL object, each one request with Connection: close, then
 * SSL_shutdown and SSL_clear (which keeps the session) before the next, as wrk
 * reconnects (its SSL_CTX set up as wrk's, SSL_SESS_CACHE_CLIENT included: so
 * a TLS 1.3 ticket is used once), and prints
 *   idleconns reconnects N resumed K
 * K = handshakes of the N that resumed the session of the one before (the
 * first one cannot: at most N - 1). A server that sends no new ticket on a
 * resumed TLS 1.3 handshake gets every other one resumed.
 *
 * Usage: idleconns -p PORT [-c CONNS] [-h HOLD] [-u PATH] [-t] [-r N]
 * Built by bench/run.sh with `cc -O2 -o TMP/idleconns bench/idleconns.c -lssl -lcrypto`.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define MAX_CONNS 20000
#define RESP_MAX 16384

static int port, conns = 1000, hold = 30, tls, reconnects;
static const char *path = "/plaintext";

static int fail(int i, const char *what)
{
    fprintf(stderr, "idleconns: connection %d: %s: %s\n", i, what, errno ? strerror(errno) : "");
    ERR_print_errors_fp(stderr);
    return 1;
}

/* One request and its whole answer, over fd or ssl: 0, or -1. */
static int exchange(int fd, SSL *ssl, const char *req, size_t reqlen)
{
    char buf[RESP_MAX + 1];
    size_t have = 0;
    ssize_t n;
    size_t off = 0;
    while (off < reqlen) {
        n = ssl ? SSL_write(ssl, req + off, (int)(reqlen - off)) : write(fd, req + off, reqlen - off);
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    for (;;) {
        char *end, *cl;
        if (have == RESP_MAX)
            return -1;
        n = ssl ? SSL_read(ssl, buf + have, (int)(RESP_MAX - have)) : read(fd, buf + have, RESP_MAX - have);
        if (n <= 0)
            return -1;
        have += (size_t)n;
        buf[have] = '\0';
        if (!(end = strstr(buf, "\r\n\r\n")))
            continue;
        if (strncmp(buf, "HTTP/1.1 200", 12) != 0)
            return -1;
        if (!(cl = strcasestr(buf, "\r\ncontent-length:")) || cl > end)
            return -1;
        if (have >= (size_t)(end + 4 - buf) + strtoul(cl + 17, NULL, 10))
            return 0;
    }
}

int main(int argc, char **argv)
{
    int opt, i;
    char req[512];
    SSL_CTX *ctx = NULL;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    struct timeval tv = {.tv_sec = 10};

    while ((opt = getopt(argc, argv, "p:c:h:u:tr:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'c': conns = atoi(optarg); break;
        case 'h': hold = atoi(optarg); break;
        case 'u': path = optarg; break;
        case 't': tls = 1; break;
        case 'r': reconnects = atoi(optarg); break;
        default: return 2;
        }
    }
    if (port <= 0 || port > 65535 || conns < 1 || conns > MAX_CONNS || hold < 0 || hold > 3600 ||
        path[0] != '/' || strlen(path) > 256 || reconnects < 0 || reconnects > MAX_CONNS ||
        (reconnects && !tls)) {
        fprintf(stderr, "usage: idleconns -p PORT [-c CONNS 1..%d] [-h HOLD 0..3600] [-u /PATH] [-t [-r N]]\n",
                MAX_CONNS);
        return 2;
    }
    alarm((unsigned)hold + 60);
    int reqlen = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n", path, port,
                          reconnects ? "Connection: close\r\n" : "");
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (tls) {
        if (!(ctx = SSL_CTX_new(TLS_client_method())))
            return fail(0, "SSL_CTX_new");
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
        /* as wrk's: with it, OpenSSL uses a TLS 1.3 ticket once (a resumed session is
         * not resumed again; the next resumption needs the new ticket the server sent) */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
    }
    if (reconnects) {
        SSL *ssl = SSL_new(ctx);
        int resumed = 0;
        if (!ssl)
            return fail(0, "SSL_new");
        for (i = 0; i < reconnects; i++) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            errno = 0;
            if (fd < 0)
                return fail(i, "socket");
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
            if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
                return fail(i, "connect");
            if (SSL_set_fd(ssl, fd) != 1 || SSL_connect(ssl) != 1)
                return fail(i, "TLS handshake");
            resumed += SSL_session_reused(ssl) == 1;
            if (exchange(fd, ssl, req, (size_t)reqlen) != 0)
                return fail(i, "request");
            SSL_shutdown(ssl);
            SSL_clear(ssl);
            close(fd);
        }
        printf("idleconns reconnects %d resumed %d\n", reconnects, resumed);
        return 0;
    }
    for (i = 0; i < conns; i++) {
        SSL *ssl = NULL;
        int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        errno = 0;
        if (fd < 0)
            return fail(i, "socket");
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
            return fail(i, "connect");
        if (tls) {
            if (!(ssl = SSL_new(ctx)) || SSL_set_fd(ssl, fd) != 1)
                return fail(i, "SSL_new");
            if (SSL_connect(ssl) != 1)
                return fail(i, "TLS handshake");
        }
        if (exchange(fd, ssl, req, (size_t)reqlen) != 0)
            return fail(i, "request");
        /* fd and ssl stay open (and allocated) until exit */
    }
    printf("idleconns conns %d ready\n", conns);
    fflush(stdout);
    sleep((unsigned)hold);
    return 0;
}
