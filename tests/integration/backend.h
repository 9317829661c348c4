/*
 * backend.h: a small HTTP/1.1 backend inside the test process, on
 * 127.0.0.1, for the outbound-call tests. One thread accepts; one thread
 * per connection serves keep-alive requests. It counts connections
 * (accepted, open now, most open at once) and can close its idle
 * connections or stop listening on command.
 *
 * Routes (path only):
 *   /hello            200 "hello"
 *   /echo             200 "METHOD BODY x-test=V1,V2 host=H"
 *   /slow/MS          200 "slow" after MS milliseconds
 *   /hang             no answer; closes when the client does or the backend stops
 *   /status/NNN       status NNN, body "status NNN"
 *   /chunked          200, chunked "hel" "lo"
 *   /eof              200 with no length, body "until eof", then close
 *   /close            200 "closing" with Connection: close, then close
 *   /multi            200 with two Set-Cookie and two X-Multi fields
 *   /big/N            200 with N bytes of 'x'
 *   /interim          100 Continue, then 200 "after interim"
 *   /no-content       204
 *   /not-modified     304 with Content-Length: 5 and no body
 *   /switch           101 Switching Protocols, then close
 *   /extra            200 "extra", then bytes nobody asked for
 *   /then-drop        200 "then-drop"; the next request on the connection is
 *                     read and the connection closed without an answer
 *   /close-soon       200 "soon", then the connection closes 50 ms later
 *   /?QUERY           200 with the request target as the body
 *   /many-headers     200 with 130 header fields
 *   /lenient/N        response N of backend_lenient[]: framing that a lenient
 *                     parser takes as a whole "hello" response. Then waits up
 *                     to 5 s: a close by the client (EOF or reset) counts in
 *                     lenient_closed; a client that pooled the connection
 *                     instead stays silent or sends its next request
 *   anything else     404
 */
#ifndef TYCHO_TEST_BACKEND_H
#define TYCHO_TEST_BACKEND_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct backend {
    int listen_fd;
    int port;
    pthread_t acceptor;
    atomic_int stopping;
    atomic_int accepted;       /* connections ever accepted */
    atomic_int open;           /* connections open now */
    atomic_int max_open;       /* most open at once */
    atomic_int close_idle;     /* bumped: idle connections close */
    atomic_int threads;        /* connection threads still running */
    atomic_int lenient_closed; /* /lenient/N connections the client closed */
};

/* Responses whose framing is not RFC 9112's (see /lenient/N). */
static const char *const backend_lenient[] = {
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\rXhello",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\rXhello\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\rX",
    "HTTX/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "HTTP/1.1 200 OK\nContent-Length: 5\n\nhello",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"
    "5\r\nhello\r\n0\r\n\r\n",
    "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
    "5\r\nhello\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\rX0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 5\r\n\r\nhello",
    "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
    "HTTP/1.1 200 OK\rXContent-Length: 5\r\n\r\nhello",
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: \x01\r\n\r\nhello",
    "HTTP/1.1  200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "HTTP/1.1 20 OK\r\nContent-Length: 5\r\n\r\nhello",
    "HTTP/1.1 0200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "HTTP/1.1 200\nContent-Length: 5\r\n\r\nhello",
    "HTTP/1.1 200 O\x01K\r\nContent-Length: 5\r\n\r\nhello",
    "\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "HTTP/1.1 099 X\r\nContent-Length: 5\r\n\r\nhello",
    "HTTP/2.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: , chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding:\r\n\r\n"
    "5\r\nhello\r\n0\r\n\r\n",
};
#define BACKEND_LENIENT_COUNT ((int)(sizeof backend_lenient / sizeof backend_lenient[0]))

struct backend_conn {
    struct backend *b;
    int fd;
    int drop_next;             /* /then-drop was served: close at the next request */
};

static void backend_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static int backend_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Set while serving a HEAD request: replies carry no body. */
static __thread int backend_head_only;

static int backend_reply(int fd, int status, const char *extra, const char *body, size_t len)
{
    char head[4096];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n", status,
                     len, extra ? extra : "");

    if (backend_write_all(fd, head, (size_t)n) < 0)
        return -1;
    return backend_head_only ? 0 : backend_write_all(fd, body, len);
}

/* The value of header NAME in the head (first only), or "" (copied into out). */
static void backend_header(const char *head, const char *name, char *out, size_t cap, int all)
{
    size_t nlen = strlen(name), used = 0;
    const char *p = strstr(head, "\r\n");

    out[0] = '\0';
    while (p && p[2] != '\r') {
        const char *line = p + 2, *end = strstr(line, "\r\n");
        if (!end)
            break;
        if ((size_t)(end - line) > nlen && strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (*v == ' ')
                v++;
            if (used && used + 1 < cap)
                out[used++] = ',';
            while (v < end && used + 1 < cap)
                out[used++] = *v++;
            out[used] = '\0';
            if (!all)
                break;
        }
        p = end;
    }
}

/*
 * Waits for readable data, checking for stop and close-idle every 50 ms.
 * Returns 1 readable, 0 to close.
 */
static int backend_wait(struct backend_conn *bc, int idle, int gen)
{
    struct pollfd pfd = {bc->fd, POLLIN, 0};

    for (;;) {
        int r = poll(&pfd, 1, 50);
        if (atomic_load(&bc->b->stopping))
            return 0;
        if (idle && atomic_load(&bc->b->close_idle) != gen)
            return 0;
        if (r > 0)
            return 1;
    }
}

/* Serves one request from buf (head complete at head_end). Returns 0 to keep going, -1 to close. */
static int backend_serve(struct backend_conn *bc, const char *head, const char *body, size_t body_len)
{
    char method[16] = "", path[256] = "", xtest[256], host[256], out[1024];
    int fd = bc->fd, n;

    sscanf(head, "%15s %255s", method, path);
    backend_head_only = strcmp(method, "HEAD") == 0;
    if (bc->drop_next)
        return -1;
    if (strcmp(path, "/hello") == 0)
        return backend_reply(fd, 200, NULL, "hello", 5);
    if (strcmp(path, "/echo") == 0) {
        backend_header(head, "x-test", xtest, sizeof xtest, 1);
        backend_header(head, "host", host, sizeof host, 0);
        n = snprintf(out, sizeof out, "%s %.*s x-test=%s host=%s", method, (int)body_len, body,
                     xtest, host);
        return backend_reply(fd, 200, NULL, out, (size_t)n);
    }
    if (strncmp(path, "/slow/", 6) == 0) {
        backend_sleep_ms(atoi(path + 6));
        return backend_reply(fd, 200, NULL, "slow", 4);
    }
    if (strcmp(path, "/hang") == 0) {
        char c;
        while (backend_wait(bc, 0, 0) && recv(fd, &c, 1, 0) > 0)
            ;
        return -1;
    }
    if (strncmp(path, "/status/", 8) == 0) {
        n = snprintf(out, sizeof out, "status %d", atoi(path + 8));
        return backend_reply(fd, atoi(path + 8), NULL, out, (size_t)n);
    }
    if (strcmp(path, "/chunked") == 0) {
        static const char r[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                "3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n";
        return backend_write_all(fd, r, sizeof r - 1);
    }
    if (strcmp(path, "/eof") == 0) {
        static const char r[] = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil eof";
        backend_write_all(fd, r, sizeof r - 1);
        return -1;
    }
    if (strcmp(path, "/close") == 0) {
        backend_reply(fd, 200, "Connection: close\r\n", "closing", 7);
        return -1;
    }
    if (strcmp(path, "/multi") == 0)
        return backend_reply(fd, 200,
                             "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Multi: one\r\nX-MULTI: two\r\n",
                             "multi", 5);
    if (strncmp(path, "/big/", 5) == 0) {
        size_t len = (size_t)atol(path + 5);
        char *big = malloc(len + 1);
        int rc;
        if (!big)
            return -1;
        memset(big, 'x', len);
        rc = backend_reply(fd, 200, NULL, big, len);
        free(big);
        return rc;
    }
    if (strcmp(path, "/interim") == 0) {
        static const char r[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (backend_write_all(fd, r, sizeof r - 1) < 0)
            return -1;
        return backend_reply(fd, 200, NULL, "after interim", 13);
    }
    if (strcmp(path, "/no-content") == 0)
        return backend_write_all(fd, "HTTP/1.1 204 No Content\r\n\r\n", 27);
    if (strcmp(path, "/not-modified") == 0) {
        static const char r[] = "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n";
        return backend_write_all(fd, r, sizeof r - 1);
    }
    if (strcmp(path, "/switch") == 0) {
        static const char r[] = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
                                "Connection: upgrade\r\n\r\n";
        backend_write_all(fd, r, sizeof r - 1);
        return -1;
    }
    if (strcmp(path, "/extra") == 0) {
        static const char r[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra"
                                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsneak";
        return backend_write_all(fd, r, sizeof r - 1);
    }
    if (strcmp(path, "/then-drop") == 0) {
        bc->drop_next = 1;
        return backend_reply(fd, 200, NULL, "then-drop", 9);
    }
    if (strcmp(path, "/close-soon") == 0) {
        backend_reply(fd, 200, NULL, "soon", 4);
        backend_sleep_ms(50);
        return -1;
    }
    if (strcmp(path, "/many-headers") == 0) {
        char many[130 * 16 + 1];
        size_t used = 0;
        for (int i = 0; i < 130; i++)
            used += (size_t)snprintf(many + used, sizeof many - used, "X-H%03d: v\r\n", i);
        return backend_reply(fd, 200, many, "many", 4);
    }
    if (strncmp(path, "/lenient/", 9) == 0 && atoi(path + 9) >= 0 &&
        atoi(path + 9) < BACKEND_LENIENT_COUNT) {
        const char *r = backend_lenient[atoi(path + 9)];
        struct pollfd pfd = {fd, POLLIN, 0};
        char c;
        if (backend_write_all(fd, r, strlen(r)) < 0)
            return -1;
        /*
         * A client that pooled the connection keeps it open and silent, or
         * sends its next request here. A close shows as EOF, or as a reset
         * when bytes of the response were still unread in the client's socket.
         */
        if (poll(&pfd, 1, 5000) == 1) {
            ssize_t got = recv(fd, &c, 1, MSG_PEEK);
            if (got == 0 || (got < 0 && errno == ECONNRESET))
                atomic_fetch_add(&bc->b->lenient_closed, 1);
        }
        return -1;
    }
    if (strncmp(path, "/?", 2) == 0)
        return backend_reply(fd, 200, NULL, path, strlen(path));
    return backend_reply(fd, 404, NULL, "no such path", 12);
}

static void *backend_conn_main(void *arg)
{
    struct backend_conn *bc = arg;
    struct backend *b = bc->b;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);

    while (buf) {
        char *end;
        size_t head_len, body_len = 0;
        char cl[32];
        int gen = atomic_load(&b->close_idle);
        /* A request head, then its body. */
        while (!(buf[len] = '\0', end = strstr(buf, "\r\n\r\n"))) {
            ssize_t r;
            if (len == cap || !backend_wait(bc, len == 0, gen))
                goto out;
            r = recv(bc->fd, buf + len, cap - len, 0);
            if (r <= 0)
                goto out;
            len += (size_t)r;
        }
        head_len = (size_t)(end + 4 - buf);
        end[2] = '\0';
        backend_header(buf, "content-length", cl, sizeof cl, 0);
        body_len = (size_t)atol(cl);
        while (len < head_len + body_len) {
            ssize_t r;
            if (head_len + body_len > cap || !backend_wait(bc, 0, 0))
                goto out;
            r = recv(bc->fd, buf + len, cap - len, 0);
            if (r <= 0)
                goto out;
            len += (size_t)r;
        }
        if (backend_serve(bc, buf, buf + head_len, body_len) < 0)
            goto out;
        memmove(buf, buf + head_len + body_len, len - head_len - body_len);
        len -= head_len + body_len;
    }
out:
    free(buf);
    close(bc->fd);
    atomic_fetch_sub(&b->open, 1);
    atomic_fetch_sub(&b->threads, 1);
    free(bc);
    return NULL;
}

static void *backend_accept_main(void *arg)
{
    struct backend *b = arg;
    struct pollfd pfd = {b->listen_fd, POLLIN, 0};

    while (!atomic_load(&b->stopping)) {
        struct backend_conn *bc;
        pthread_t th;
        int fd, open_now, max;
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        if ((fd = accept(b->listen_fd, NULL, NULL)) < 0)
            continue;
        if (!(bc = malloc(sizeof *bc))) {
            close(fd);
            continue;
        }
        bc->b = b;
        bc->fd = fd;
        bc->drop_next = 0;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
        atomic_fetch_add(&b->accepted, 1);
        open_now = atomic_fetch_add(&b->open, 1) + 1;
        max = atomic_load(&b->max_open);
        while (open_now > max && !atomic_compare_exchange_weak(&b->max_open, &max, open_now))
            ;
        atomic_fetch_add(&b->threads, 1);
        if (pthread_create(&th, NULL, backend_conn_main, bc) != 0) {
            close(fd);
            atomic_fetch_sub(&b->open, 1);
            atomic_fetch_sub(&b->threads, 1);
            free(bc);
            continue;
        }
        pthread_detach(th);
    }
    return NULL;
}

/* Listens on 127.0.0.1:port (0: any free port) and starts serving. 0, or -1. */
static int backend_start(struct backend *b, int port)
{
    struct sockaddr_in sa = {0};
    socklen_t sl = sizeof sa;
    int one = 1;

    atomic_store(&b->stopping, 0);
    b->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (b->listen_fd < 0)
        return -1;
    setsockopt(b->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    if (bind(b->listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(b->listen_fd, 256) < 0 ||
        getsockname(b->listen_fd, (struct sockaddr *)&sa, &sl) < 0) {
        close(b->listen_fd);
        return -1;
    }
    b->port = ntohs(sa.sin_port);
    if (pthread_create(&b->acceptor, NULL, backend_accept_main, b) != 0) {
        close(b->listen_fd);
        return -1;
    }
    return 0;
}

/* Stops listening and closes every connection (waits at most 3 s for them). */
static void backend_stop(struct backend *b)
{
    atomic_store(&b->stopping, 1);
    pthread_join(b->acceptor, NULL);
    close(b->listen_fd);
    for (int i = 0; i < 300 && atomic_load(&b->threads) > 0; i++)
        backend_sleep_ms(10);
}

/* Closes the connections that are idle now (waits up to 1 s until they are). */
__attribute__((unused)) static void backend_close_idle(struct backend *b)
{
    atomic_fetch_add(&b->close_idle, 1);
    for (int i = 0; i < 100 && atomic_load(&b->open) > 0; i++)
        backend_sleep_ms(10);
}

#endif
