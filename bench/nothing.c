/*
 * bench/nothing.c: a do-nothing HTTP/1.1 server, the floor of `make bench`
 * (server "floor" in plaintext, c1000, close and idle): what answering costs
 * when nothing but the sockets is done.
 *
 * One thread, one epoll set, LEVEL-triggered: every readiness of a connection
 * gets ONE recv (what is left is reported again by the next epoll_wait, so no
 * recv is spent to see EAGAIN); the listening socket (non-blocking, on
 * 127.0.0.1:PORT only, SO_REUSEADDR, backlog 4096) gets accept4 until EAGAIN
 * (at most 256 per readiness). Accepted sockets get TCP_NODELAY, as Tycho sets
 * it. Every complete request head ("\r\n\r\n") in what was read is answered,
 * pipelined ones included, with ONE send for all of them; the answer to every
 * GET is the bytes Tycho sends for GET /plaintext with scripts/hello.lua
 * (status line, Server, Date cached per second, Content-Length, Content-Type,
 * X-Request-Id: 16 hex digits, a counter here, body "Hello, World!"), with
 * "Connection: close" after Content-Length when the request asked for it (or
 * was HTTP/1.0 without keep-alive) and the connection closed after the send.
 * The path is not looked at. A request other than GET, or one with a body
 * (Content-Length other than 0, Transfer-Encoding), is answered
 * 400 + Connection: close.
 *
 * Memory: recv goes into one shared 8 KiB buffer; only a partial head left
 * at the end of a read is kept, in a per-connection buffer of 8 KiB allocated
 * then and freed when it is empty again, so an idle keep-alive connection
 * costs its small struct (and the kernel's socket). A head that does not fit
 * in 8 KiB closes the connection. A send that does not take everything keeps
 * the rest (heap) and waits for EPOLLOUT without reading until it is sent.
 *
 * Usage: nothing -p PORT [-b ADDR]   (ADDR: 127.0.0.1 only, anything else is
 * refused). It runs until SIGINT or SIGTERM (exit 0); exit 1 on a setup
 * failure (reason on stderr), 2 on bad arguments. Connections are bounded by
 * RLIMIT_NOFILE (the soft limit is raised to the hard one).
 * Built by bench/run.sh with `cc -O2 -Wall -Wextra -o TMP/nothing bench/nothing.c`.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define INBUF 8192            /* bound of a connection's unanswered bytes */
#define RESP_MAX 256          /* one answer, at most */
#define MAX_ANSWERS (INBUF / 4 + 1) /* a head is at least "\r\n\r\n" */
#define MAX_EVENTS 256
#define MAX_ACCEPTS 256

struct conn {
    int fd;
    unsigned len;   /* bytes of a partial head in buf */
    char *buf;      /* INBUF bytes, only while len > 0 */
    char *out;      /* unsent answers, only while outlen > 0 */
    size_t outlen, outoff;
    int closing;    /* close once out is sent */
};

static volatile sig_atomic_t stop;
static int ep;
static unsigned long long reqid = 0x5eed000000000000ULL;
static char rbuf[INBUF];
static char obuf[MAX_ANSWERS * RESP_MAX];

/* The answers, prebuilt; the Date (29 chars) and the id (16) patched in place. */
static char ok_keep[RESP_MAX], ok_close[RESP_MAX], bad[RESP_MAX];
static size_t ok_keep_len, ok_close_len, bad_len;
static size_t ok_keep_date, ok_close_date, bad_date, ok_keep_id, ok_close_id;
static time_t date_sec;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static size_t build(char *dst, const char *status, const char *conn, int withid, size_t *date_at,
                    size_t *id_at)
{
    int n = snprintf(dst, RESP_MAX,
                     "HTTP/1.1 %s\r\nServer: tycho\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
                     "Content-Length: %s\r\n%s%s%s\r\n%s",
                     status, withid ? "13" : "0", conn,
                     withid ? "Content-Type: text/plain; charset=utf-8\r\n" : "",
                     withid ? "X-Request-Id: 0000000000000000\r\n" : "",
                     withid ? "Hello, World!" : "");
    *date_at = (size_t)(strstr(dst, "Date: ") + 6 - dst);
    if (id_at)
        *id_at = (size_t)(strstr(dst, "X-Request-Id: ") + 14 - dst);
    return (size_t)n;
}

static void set_date(void)
{
    time_t now = time(NULL);
    char d[32];
    struct tm tm;
    if (now == date_sec)
        return;
    date_sec = now;
    gmtime_r(&now, &tm);
    strftime(d, sizeof d, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    memcpy(ok_keep + ok_keep_date, d, 29);
    memcpy(ok_close + ok_close_date, d, 29);
    memcpy(bad + bad_date, d, 29);
}

static char *put_ok(char *o, int close_it)
{
    static const char hex[] = "0123456789abcdef";
    unsigned long long id = reqid++;
    size_t len = close_it ? ok_close_len : ok_keep_len;
    char *idp = o + (close_it ? ok_close_id : ok_keep_id);
    memcpy(o, close_it ? ok_close : ok_keep, len);
    for (int i = 15; i >= 0; i--, id >>= 4)
        idp[i] = hex[id & 15];
    return o + len;
}

/* Is TOK (lower case) in the header value [v, end)? */
static int token(const char *v, const char *end, const char *tok)
{
    size_t n = strlen(tok);
    for (; v + n <= end; v++)
        if (strncasecmp(v, tok, n) == 0)
            return 1;
    return 0;
}

/* One complete head [p, h) (it ends with "\r\n\r\n"), read in one pass over its lines:
 * 0 = answer and keep the connection, 1 = answer and close, 2 = bad (400 and close). */
static int judge(const char *p, const char *h)
{
    const char *l, *eol = memchr(p, '\n', (size_t)(h - p));
    int close_it;
    if (eol - p < 14 || memcmp(p, "GET ", 4) != 0)
        return 2;
    /* HTTP/1.0 closes unless it asks for keep-alive */
    close_it = memcmp(eol - 9, "HTTP/1.0\r", 9) == 0;
    for (l = eol + 1; l < h - 2; l = eol + 1) {
        size_t n;
        eol = memchr(l, '\n', (size_t)(h - l));
        n = (size_t)(eol - l);
        if ((l[0] | 0x20) == 'c') {
            if (n > 15 && strncasecmp(l, "content-length:", 15) == 0) {
                const char *v = l + 15;
                while (*v == ' ' || *v == '\t')
                    v++;
                if (*v != '0')
                    return 2;
            } else if (n > 11 && strncasecmp(l, "connection:", 11) == 0) {
                if (token(l + 11, eol, "close"))
                    close_it = 1;
                else if (token(l + 11, eol, "keep-alive"))
                    close_it = 0;
            }
        } else if ((l[0] | 0x20) == 't' && n > 18 &&
                   strncasecmp(l, "transfer-encoding:", 18) == 0) {
            return 2;
        }
    }
    return close_it;
}

static void conn_close(struct conn *c)
{
    close(c->fd); /* also removes it from the epoll set */
    free(c->buf);
    free(c->out);
    free(c);
}

/* Answers every complete head in [p, p + n); keeps a partial one. 0, or -1: close. */
static int serve(struct conn *c, const char *p, size_t n)
{
    const char *end = p + n;
    char *o = obuf;
    int close_it = 0;
    while (!close_it) {
        const char *h = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!h)
            break;
        h += 4;
        close_it = judge(p, h);
        if (close_it == 2) {
            memcpy(o, bad, bad_len);
            o += bad_len;
            break;
        }
        o = put_ok(o, close_it);
        p = h;
    }
    if (!close_it && p < end) { /* a partial head: keep it */
        if (!c->buf && !(c->buf = malloc(INBUF)))
            return -1;
        memmove(c->buf, p, (size_t)(end - p));
        c->len = (unsigned)(end - p);
    } else {
        free(c->buf);
        c->buf = NULL;
        c->len = 0;
    }
    if (o > obuf) {
        size_t len = (size_t)(o - obuf);
        ssize_t s = send(c->fd, obuf, len, MSG_NOSIGNAL);
        if (s < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        if (s < 0)
            s = 0;
        if ((size_t)s < len) {
            struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
            if (!(c->out = malloc(len - (size_t)s)))
                return -1;
            memcpy(c->out, obuf + s, len - (size_t)s);
            c->outlen = len - (size_t)s;
            c->outoff = 0;
            c->closing = close_it;
            return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
    }
    return close_it ? -1 : 0;
}

static void on_readable(struct conn *c)
{
    ssize_t n;
    if (c->len) {
        n = recv(c->fd, c->buf + c->len, INBUF - c->len, 0);
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            conn_close(c);
            return;
        }
        c->len += (unsigned)n;
        if (serve(c, c->buf, c->len) != 0 || c->len == INBUF)
            conn_close(c);
        return;
    }
    n = recv(c->fd, rbuf, INBUF, 0);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        conn_close(c);
        return;
    }
    if (serve(c, rbuf, (size_t)n) != 0 || c->len == INBUF)
        conn_close(c);
}

static void on_writable(struct conn *c)
{
    ssize_t s = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
    if (s < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_close(c);
        return;
    }
    c->outoff += (size_t)s;
    if (c->outoff < c->outlen)
        return;
    free(c->out);
    c->out = NULL;
    c->outlen = c->outoff = 0;
    if (c->closing) {
        conn_close(c);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        conn_close(c);
}

static void on_accept(int lfd)
{
    for (int i = 0; i < MAX_ACCEPTS; i++) {
        int one = 1, fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct conn *c;
        if (fd < 0)
            return; /* EAGAIN, or out of fds (EMFILE): the next readiness retries */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (!(c = calloc(1, sizeof *c))) {
            close(fd);
            continue;
        }
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
            conn_close(c);
    }
}

int main(int argc, char **argv)
{
    int opt, port = 0, lfd, one = 1;
    const char *addr = "127.0.0.1";
    struct sockaddr_in sa = {.sin_family = AF_INET};
    struct rlimit rl;
    struct sigaction sig = {.sa_handler = on_signal};
    struct epoll_event evs[MAX_EVENTS], lev = {.events = EPOLLIN, .data.ptr = NULL};

    while ((opt = getopt(argc, argv, "p:b:")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'b': addr = optarg; break;
        default: return 2;
        }
    }
    if (port <= 0 || port > 65535 || strcmp(addr, "127.0.0.1") != 0 || optind != argc) {
        fprintf(stderr, "usage: nothing -p PORT [-b 127.0.0.1]  (127.0.0.1 only)\n");
        return 2;
    }
    ok_keep_len = build(ok_keep, "200 OK", "", 1, &ok_keep_date, &ok_keep_id);
    ok_close_len =
        build(ok_close, "200 OK", "Connection: close\r\n", 1, &ok_close_date, &ok_close_id);
    bad_len = build(bad, "400 Bad Request", "Connection: close\r\n", 0, &bad_date, NULL);
    set_date();
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    sigaction(SIGINT, &sig, NULL);
    sigaction(SIGTERM, &sig, NULL);
    signal(SIGPIPE, SIG_IGN);

    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 4096) != 0) {
        perror("nothing: listen on 127.0.0.1");
        return 1;
    }
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) != 0) {
        perror("nothing: epoll");
        return 1;
    }
    while (!stop) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, 1000);
        if (n < 0 && errno != EINTR) {
            perror("nothing: epoll_wait");
            return 1;
        }
        set_date();
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c)
                on_accept(lfd);
            else if (c->out)
                on_writable(c);
            else
                on_readable(c);
        }
    }
    return 0;
}
