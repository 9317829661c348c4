/*
 * client.h: what the socket-level integration tests share: a raw HTTP/1.1
 * client with timeouts (connect, send, read one response with Content-Length
 * or chunked framing), response checks, and control of the server under test
 * (start it on --port 0 with TYCHO_WRAP, read its banner, stop it with
 * SIGTERM and check its exit status, read its log). Single-threaded.
 * Include after harness.h and support.h; a program need not use all of it.
 */
#ifndef TYCHO_TEST_CLIENT_H
#define TYCHO_TEST_CLIENT_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-variable"

/* Generous: under valgrind everything is 20-50 times slower. */
static int io_timeout_ms = 10000;
static int startup_timeout_ms = 10000;

/* ======================================================================
 * Small utilities
 * ====================================================================== */

/* Prints up to max bytes of data, escaped, as a diagnostic line. */
static void note_bytes(const char *label, const char *data, size_t len, size_t max)
{
    size_t i;

    printf("# %s (%zu bytes): \"", label, len);
    for (i = 0; i < len && i < max; i++) {
        unsigned char ch = (unsigned char)data[i];
        if (ch == '\r')
            printf("\\r");
        else if (ch == '\n')
            printf("\\n");
        else if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 32 || ch >= 127)
            printf("\\x%02x", ch);
        else
            putchar(ch);
    }
    printf("\"%s\n", len > max ? "..." : "");
    fflush(stdout);
}

/* Returns a malloc'd, NUL-terminated copy of a file's contents, or NULL. */
static char *slurp(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    char *data = NULL;
    size_t len = 0, cap = 0, n;

    if (!f)
        return NULL;
    for (;;) {
        if (cap - len < 4096) {
            char *grown = realloc(data, cap ? cap * 2 : 8192);
            if (!grown) {
                free(data);
                fclose(f);
                return NULL;
            }
            data = grown;
            cap = cap ? cap * 2 : 8192;
        }
        n = fread(data + len, 1, cap - len - 1, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    data[len] = '\0';
    if (len_out)
        *len_out = len;
    return data;
}

/* ======================================================================
 * Socket client
 *
 * A client is a non-blocking TCP connection plus a buffer of received bytes
 * not yet consumed, so that pipelined responses can be read one by one.
 * Every wait goes through poll() with a deadline.
 * ====================================================================== */

struct client {
    int fd;       /* owned; -1 once closed */
    char *buf;    /* owned; received bytes not yet consumed */
    size_t len;   /* bytes in buf */
    size_t cap;   /* bytes allocated for buf */
    int closed;   /* 1 once the peer closed (EOF) or reset the connection */
    int reset;    /* 1 if the close was a reset (ECONNRESET) */
    /*
     * A layer over the socket (TLS in test_tls.c; its SSL in ssl): reads and
     * writes as recv(2) and send(2) on fd would, errno EAGAIN when nothing can
     * be done now. NULL: the socket itself.
     */
    ssize_t (*recv_fn)(struct client *c, void *buf, size_t len);
    ssize_t (*send_fn)(struct client *c, const void *buf, size_t len);
    void *ssl;
};

#define MAX_HEADERS 64

struct response {
    int status;                      /* 0 if no response could be read */
    int minor;                       /* x in HTTP/1.x */
    int nheaders;
    char *name[MAX_HEADERS];         /* point into head */
    char *value[MAX_HEADERS];        /* point into head; trimmed */
    char *head;                      /* owned; status line and headers */
    char *body;                      /* owned; NUL-terminated */
    size_t body_len;
    size_t head_len;                 /* bytes of the head on the wire, blank line included */
};

/*
 * Connects to 127.0.0.1:port from source address src (another loopback
 * address such as "127.0.0.2", to be another client address), or from the
 * default with NULL. Returns 0, or -1 with c->fd == -1.
 */
static int client_connect_from(struct client *c, int port, const char *src)
{
    struct sockaddr_in sa;
    struct pollfd pfd;
    int one = 1, err = 0;
    socklen_t errlen = sizeof err;

    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        note("socket: %s", strerror(errno));
        return -1;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    if (src && (inet_pton(AF_INET, src, &sa.sin_addr) != 1 ||
                bind(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0)) {
        err = errno ? errno : EINVAL;
        goto fail;
    }
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (errno != EINPROGRESS) {
            err = errno;
            goto fail;
        }
        pfd.fd = c->fd;
        pfd.events = POLLOUT;
        if (poll(&pfd, 1, io_timeout_ms) != 1) {
            err = ETIMEDOUT;
            goto fail;
        }
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0 || err != 0)
            goto fail;
    }
    return 0;
fail:
    note("connect to port %d: %s", port, strerror(err ? err : errno));
    close(c->fd);
    c->fd = -1;
    return -1;
}

/* Connects to 127.0.0.1:port. Returns 0, or -1 with c->fd == -1. */
static int client_connect(struct client *c, int port)
{
    return client_connect_from(c, port, NULL);
}

static void client_close(struct client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

/* Sends all len bytes. Returns 0, or -1 on error or timeout. */
static int client_send(struct client *c, const void *data, size_t len)
{
    const char *p = data;
    long long deadline = now_ms() + io_timeout_ms;

    if (c->fd < 0)
        return -1;
    while (len > 0) {
        ssize_t n = c->send_fn ? c->send_fn(c, p, len) : send(c->fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd pfd = {c->fd, POLLOUT, 0};
            long long left = deadline - now_ms();
            if (left <= 0 || poll(&pfd, 1, (int)left) < 0) {
                note("send: timed out");
                return -1;
            }
            continue;
        }
        return -1;
    }
    return 0;
}

static int client_sends(struct client *c, const char *s)
{
    return client_send(c, s, strlen(s));
}

/*
 * Reads more bytes into c->buf, waiting until deadline at most. Returns the
 * number of bytes read, 0 once the peer has closed (EOF or reset), -1 on
 * timeout or another error.
 */
static int client_fill(struct client *c, long long deadline)
{
    if (c->fd < 0 || c->closed)
        return 0;
    for (;;) {
        struct pollfd pfd = {c->fd, POLLIN, 0};
        long long left = deadline - now_ms();
        ssize_t n;
        int rc;

        if (left < 0)
            left = 0;
        rc = poll(&pfd, 1, (int)left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            return -1;
        if (c->cap - c->len < 65536) {
            size_t cap = c->cap ? c->cap * 2 : 131072;
            char *grown = realloc(c->buf, cap);
            if (!grown)
                return -1;
            c->buf = grown;
            c->cap = cap;
        }
        n = c->recv_fn ? c->recv_fn(c, c->buf + c->len, c->cap - c->len)
                       : recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n > 0) {
            c->len += (size_t)n;
            return (int)n;
        }
        if (n == 0) {
            c->closed = 1;
            return 0;
        }
        if (errno == ECONNRESET) {
            c->closed = 1;
            c->reset = 1;
            return 0;
        }
        if (errno != EAGAIN && errno != EINTR)
            return -1;
        if (now_ms() >= deadline)
            return -1;
    }
}

/* Drops the first n buffered bytes. */
static void client_consume(struct client *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* Waits until at least n bytes are buffered. Returns 0, or -1. */
static int client_need(struct client *c, size_t n, long long deadline)
{
    while (c->len < n)
        if (client_fill(c, deadline) <= 0)
            return -1;
    return 0;
}

/*
 * Waits up to timeout_ms for the peer to close. Returns 1 if it closed with
 * no further bytes, 0 if bytes arrived instead, -1 on timeout.
 */
static int client_wait_closed(struct client *c, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;

    while (c->len == 0) {
        int n = client_fill(c, deadline);
        if (n == 0)
            return 1;
        if (n < 0)
            return -1;
    }
    note_bytes("unexpected bytes after the response", c->buf, c->len, 200);
    return 0;
}

static void response_free(struct response *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* Returns the first value of header name (case-insensitive), or NULL. */
static const char *header_get(const struct response *r, const char *name)
{
    int i;

    for (i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->name[i], name) == 0)
            return r->value[i];
    return NULL;
}

static int header_count(const struct response *r, const char *name)
{
    int i, n = 0;

    for (i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->name[i], name) == 0)
            n++;
    return n;
}

static int body_append(struct response *r, const char *data, size_t n)
{
    char *grown = realloc(r->body, r->body_len + n + 1);

    if (!grown)
        return -1;
    r->body = grown;
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return 0;
}

/* Parses the status line and headers in r->head (NUL-terminated). */
static int parse_head(struct response *r)
{
    char *line = r->head, *eol, *colon, *v, *e;
    int major = 0;

    if (sscanf(line, "HTTP/%d.%d %d", &major, &r->minor, &r->status) != 3 || major != 1 ||
        r->status < 100 || r->status > 999) {
        r->status = 0;
        return -1;
    }
    eol = strstr(line, "\r\n");
    while (eol) {
        line = eol + 2;
        if (*line == '\0')
            break;
        eol = strstr(line, "\r\n");
        if (eol)
            *eol = '\0';
        colon = strchr(line, ':');
        if (!colon || r->nheaders == MAX_HEADERS)
            return -1;
        *colon = '\0';
        v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        e = v + strlen(v);
        while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        r->name[r->nheaders] = line;
        r->value[r->nheaders] = v;
        r->nheaders++;
        if (!eol)
            break;
    }
    return 0;
}

/* Reads a chunked body into r. Returns 0, or -1. */
static int read_chunked(struct client *c, struct response *r, long long deadline)
{
    for (;;) {
        char *eol;
        unsigned long size;

        while (!(eol = (c->len ? memmem(c->buf, c->len, "\r\n", 2) : NULL)))
            if (client_fill(c, deadline) <= 0)
                return -1;
        size = strtoul(c->buf, NULL, 16);
        client_consume(c, (size_t)(eol - c->buf) + 2);
        if (size == 0) {
            /* trailers, up to an empty line */
            for (;;) {
                while (!(eol = (c->len ? memmem(c->buf, c->len, "\r\n", 2) : NULL)))
                    if (client_fill(c, deadline) <= 0)
                        return -1;
                if (eol == c->buf) {
                    client_consume(c, 2);
                    return 0;
                }
                client_consume(c, (size_t)(eol - c->buf) + 2);
            }
        }
        if (client_need(c, size + 2, deadline) < 0 || body_append(r, c->buf, size) < 0)
            return -1;
        client_consume(c, size + 2);
    }
}

/*
 * Reads one response (interim 1xx responses included) from c. head_only:
 * the request was HEAD, so there is no body whatever Content-Length says.
 * Returns 0, or -1 with r->status == 0 if no complete response arrived.
 */
static int read_response(struct client *c, struct response *r, int head_only)
{
    long long deadline = now_ms() + io_timeout_ms;
    const char *te, *cl;
    char *end;
    size_t hlen;

    memset(r, 0, sizeof *r);
    if (body_append(r, "", 0) < 0)
        return -1;
    while (!(end = (c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL))) {
        if (c->len > (1u << 20) || client_fill(c, deadline) <= 0) {
            note("no complete response head: %s",
                 c->closed ? (c->reset ? "connection reset" : "connection closed") : "timeout");
            if (c->len)
                note_bytes("received", c->buf, c->len, 300);
            return -1;
        }
    }
    hlen = (size_t)(end - c->buf) + 2;
    r->head_len = hlen + 2;
    r->head = malloc(hlen + 1);
    if (!r->head)
        return -1;
    memcpy(r->head, c->buf, hlen);
    r->head[hlen] = '\0';
    client_consume(c, hlen + 2);
    if (parse_head(r) < 0) {
        note_bytes("unparseable response head", r->head, hlen, 300);
        r->status = 0;
        return -1;
    }
    if (head_only || r->status / 100 == 1 || r->status == 204 || r->status == 304)
        return 0;
    te = header_get(r, "Transfer-Encoding");
    cl = header_get(r, "Content-Length");
    if (te && strcasestr(te, "chunked")) {
        if (read_chunked(c, r, deadline) < 0) {
            note("incomplete chunked response body");
            r->status = 0;
            return -1;
        }
    } else if (cl) {
        size_t n = (size_t)strtoull(cl, NULL, 10);
        if (client_need(c, n, deadline) < 0) {
            note("response body shorter than Content-Length %zu (got %zu)", n, c->len);
            r->status = 0;
            return -1;
        }
        body_append(r, c->buf, n);
        client_consume(c, n);
    } else {
        /* delimited by close */
        while (!c->closed)
            if (client_fill(c, deadline) < 0) {
                note("body without length: no close");
                r->status = 0;
                return -1;
            }
        body_append(r, c->buf, c->len);
        client_consume(c, c->len);
    }
    return 0;
}

/* Sends a raw request and reads its response (HEAD if it starts "HEAD "). */
static int exchange(struct client *c, const char *req, struct response *r)
{
    if (client_sends(c, req) < 0) {
        memset(r, 0, sizeof *r);
        note("send failed: %s", strerror(errno));
        return -1;
    }
    return read_response(c, r, strncmp(req, "HEAD ", 5) == 0);
}

/* One request on a fresh connection, closed afterwards. Returns r->status. */
static int fetch(int port, const char *req, struct response *r)
{
    struct client c;

    memset(r, 0, sizeof *r);
    if (client_connect(&c, port) < 0)
        return 0;
    exchange(&c, req, r);
    client_close(&c);
    return r->status;
}

/* ======================================================================
 * Checks with context (the harness reports this file's line; ctx says which
 * test failed)
 * ====================================================================== */

static void dump_response(const struct response *r)
{
    if (r->head)
        note_bytes("response head", r->head, strlen(r->head), 600);
    if (r->body)
        note_bytes("response body", r->body, r->body_len, 300);
}

static int expect_status(const struct response *r, int want, const char *ctx)
{
    int good = r->status == want;

    is_int(r->status, want, what(ctx, "status"));
    if (!good)
        dump_response(r);
    return good;
}

static void expect_body(const struct response *r, const char *want, const char *ctx)
{
    is_int(r->body_len, strlen(want), what(ctx, "body length"));
    is_str(r->body ? r->body : "", want, what(ctx, "body"));
}

static void expect_header(const struct response *r, const char *name, const char *want,
                          const char *ctx)
{
    const char *got = header_get(r, name);

    is_str(got ? got : "(missing)", want, what(ctx, "header %s", name));
}

/*
 * The headers every response must carry: Date, Server: tycho and one
 * Content-Length equal to the body length (for HEAD: equal to head_len, the
 * GET length, or just present when head_len < 0).
 */
static void check_common(const struct response *r, int head_only, long head_len, const char *ctx)
{
    const char *date = header_get(r, "Date"), *cl = header_get(r, "Content-Length");

    if (r->status == 0)
        return;     /* already reported */
    ok(date != NULL, what(ctx, "has a Date header"));
    if (date)
        ok(strlen(date) > 4 && strcmp(date + strlen(date) - 4, " GMT") == 0,
           what(ctx, "Date ends in GMT (got \"%s\")", date));
    expect_header(r, "Server", "tycho", ctx);
    is_int(header_count(r, "Content-Length"), 1, what(ctx, "exactly one Content-Length"));
    if (cl && !head_only)
        is_int(strtoll(cl, NULL, 10), (long long)r->body_len, what(ctx, "Content-Length"));
    if (cl && head_only && head_len >= 0)
        is_int(strtoll(cl, NULL, 10), head_len, what(ctx, "HEAD Content-Length as for GET"));
}

/* GET-style one-shot request with the usual checks. */
/* One request on a fresh connection; checks only its status. */
static void expect_status_of(int port, const char *req, int want, const char *ctx)
{
    struct response r;

    fetch(port, req, &r);
    expect_status(&r, want, ctx);
    response_free(&r);
}

static void check_get(int port, const char *path, int status, const char *body)
{
    char req[2048];
    struct response r;

    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    fetch(port, req, &r);
    if (expect_status(&r, status, path)) {
        if (body)
            expect_body(&r, body, path);
        check_common(&r, 0, -1, path);
    }
    response_free(&r);
}

/* The body of GET path on a fresh connection, into out ("" when none came). */
static void body_of(int port, const char *path, char *out, size_t cap)
{
    char req[512];
    struct response r;

    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    out[0] = '\0';
    if (fetch(port, req, &r) > 0 && r.body)
        snprintf(out, cap, "%s", r.body);
    response_free(&r);
}

/* Whether GET path answers a body holding a and b (b may be NULL); notes the body if not. */
static int body_has(int port, const char *path, const char *a, const char *b)
{
    static char body[65536];

    body_of(port, path, body, sizeof body);
    if (strstr(body, a) && (!b || strstr(body, b)))
        return 1;
    note("GET %s: %.400s", path, body);
    return 0;
}

/*
 * Runs a shell command, its stdout and stderr captured into out (cap bytes,
 * NUL-terminated). Returns its exit status, or -1 when it did not exit
 * normally or could not run.
 */
static int run_command(const char *cmd, char *out, size_t cap)
{
    FILE *f = popen(cmd, "r");
    size_t n;
    int status;

    out[0] = '\0';
    if (!f)
        return -1;
    n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    status = pclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ======================================================================
 * Server process
 * ====================================================================== */

struct server {
    pid_t pid;              /* the server we started; -1 when not running */
    int port;
    int out_fd;             /* owned; read end of the server's stdout */
    char out[65536];        /* stdout captured at startup */
    size_t out_len;
    char err_path[64];      /* the server's stderr, a temp file */
};


static const char *tycho_binary;
static const char *fixture_dir;

/* The running server, for on_fatal_signal(): it must not outlive us. */
static volatile pid_t running_pid = -1;
static char running_err_path[64];

/* SIGTERM/SIGINT/SIGHUP to the test (e.g. from timeout(1)): kill our server. */
static void on_fatal_signal(int sig)
{
    (void)sig;
    if (running_pid > 0)
        kill(running_pid, SIGKILL);
    if (running_err_path[0])
        unlink(running_err_path);
    _exit(2);
}

/* Reads what the server wrote on stdout so far, waiting at most wait_ms. */
static int server_read_out(struct server *s, int wait_ms)
{
    struct pollfd pfd = {s->out_fd, POLLIN, 0};
    ssize_t n;

    if (s->out_fd < 0 || poll(&pfd, 1, wait_ms) <= 0)
        return -1;
    if (s->out_len + 1 >= sizeof s->out)
        return -1;
    n = read(s->out_fd, s->out + s->out_len, sizeof s->out - s->out_len - 1);
    if (n <= 0) {
        close(s->out_fd);
        s->out_fd = -1;
        return 0;
    }
    s->out_len += (size_t)n;
    s->out[s->out_len] = '\0';
    return (int)n;
}

static void note_server_stderr(const struct server *s, size_t max)
{
    size_t len = 0;
    char *err = slurp(s->err_path, &len);

    if (err) {
        if (len > max)
            note("server stderr (last %zu of %zu bytes):\n%s", max, len, err + len - max);
        else
            note("server stderr:\n%s", err);
    }
    free(err);
}

/*
 * Starts TYCHO_WRAP... BINARY args... and waits (bounded) for the listening
 * line. args is NULL-terminated. Returns 0 with s->port set, or -1.
 */
static int server_start(struct server *s, const char *const *args)
{
    const char *argv[64];
    int argc = 0, i, out_pipe[2] = {-1, -1}, err_fd = -1;
    long long deadline;
    const char *p;

    memset(s, 0, sizeof *s);
    s->pid = -1;
    s->out_fd = -1;
    for (i = 0; i < n_wrap; i++)
        argv[argc++] = wrap_words[i];
    argv[argc++] = tycho_binary;
    for (i = 0; args[i] && argc < 63; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;

    snprintf(s->err_path, sizeof s->err_path, "/tmp/tycho-test-http-XXXXXX");
    err_fd = mkstemp(s->err_path);
    if (err_fd < 0 || pipe2(out_pipe, O_CLOEXEC) < 0) {
        note("mkstemp/pipe: %s", strerror(errno));
        goto fail;
    }
    fflush(stdout);
    s->pid = fork();
    if (s->pid < 0) {
        note("fork: %s", strerror(errno));
        goto fail;
    }
    if (s->pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(out_pipe[1], 1);
        dup2(err_fd, 2);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);   /* never outlive the test */
        execvp(argv[0], (char *const *)argv);
        dprintf(2, "test_http: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    running_pid = s->pid;
    memcpy(running_err_path, s->err_path, sizeof running_err_path);
    close(out_pipe[1]);
    out_pipe[1] = -1;
    close(err_fd);
    err_fd = -1;
    s->out_fd = out_pipe[0];

    deadline = now_ms() + startup_timeout_ms;
    for (;;) {
        int status;
        p = strstr(s->out, "listening on http://");
        if (p && strchr(p, '\n'))
            break;
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            note("server exited during startup (status 0x%x)", status);
            s->pid = -1;
            goto fail;
        }
        if (now_ms() > deadline) {
            note("no \"listening on\" line within %d ms", startup_timeout_ms);
            goto fail;
        }
        if (server_read_out(s, 100) == 0 && !strstr(s->out, "listening on http://")) {
            note("server closed stdout before the listening line");
            sleep_ms(200);
        }
    }
    p = strstr(s->out, "http://127.0.0.1:");
    if (!p || (s->port = atoi(p + strlen("http://127.0.0.1:"))) <= 0) {
        note_bytes("cannot find the port in stdout", s->out, s->out_len, 400);
        goto fail;
    }
    /* The route list follows the listening line; collect it until quiet. */
    deadline = now_ms() + 3000;
    while (now_ms() < deadline && server_read_out(s, 300) > 0) {
    }
    return 0;
fail:
    if (out_pipe[1] >= 0)
        close(out_pipe[1]);
    if (err_fd >= 0)
        close(err_fd);
    if (s->out_len)
        note_bytes("server stdout", s->out, s->out_len, 400);
    note_server_stderr(s, 3000);
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = -1;
    }
    running_pid = -1;
    return -1;
}

/*
 * Sends SIGTERM to the server we started and waits (bounded, 30 s) for it.
 * Returns its exit status, or -1 if it was killed by a signal or hung.
 */
static int server_stop(struct server *s)
{
    long long deadline = now_ms() + 30000 * (n_wrap ? 2 : 1);
    int status = 0, rc = -1;

    if (s->pid <= 0)
        return -1;
    kill(s->pid, SIGTERM);
    for (;;) {
        pid_t w = waitpid(s->pid, &status, WNOHANG);
        if (w == s->pid) {
            if (WIFEXITED(status))
                rc = WEXITSTATUS(status);
            else
                note("server died from signal %d", WTERMSIG(status));
            break;
        }
        if (now_ms() > deadline) {
            note("server did not exit within 30 s of SIGTERM; killing it");
            kill(s->pid, SIGKILL);
            waitpid(s->pid, NULL, 0);
            break;
        }
        sleep_ms(50);
    }
    s->pid = -1;
    running_pid = -1;
    if (s->out_fd >= 0)
        close(s->out_fd);
    s->out_fd = -1;
    if (rc != 0)
        note_server_stderr(s, 6000);
    return rc;
}

static void server_cleanup(struct server *s)
{
    if (s->err_path[0])
        unlink(s->err_path);
    s->err_path[0] = '\0';
    running_err_path[0] = '\0';
}

/* Waits (bounded) until the server's stderr contains needle. */
static int wait_for_log(const struct server *s, const char *needle, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;

    for (;;) {
        char *err = slurp(s->err_path, NULL);
        int found = err && strstr(err, needle) != NULL;
        free(err);
        if (found)
            return 1;
        if (now_ms() > deadline)
            return 0;
        sleep_ms(50);
    }
}

/* Returns 1 if the server's stderr has a line containing all of a, b (b may be NULL). */
static int log_has_line(const struct server *s, const char *a, const char *b)
{
    char *err = slurp(s->err_path, NULL), *line, *save = NULL;
    int found = 0;

    if (!err)
        return 0;
    for (line = strtok_r(err, "\n", &save); line && !found; line = strtok_r(NULL, "\n", &save))
        found = strcasestr(line, a) && (!b || strcasestr(line, b));
    free(err);
    return found;
}

/*
 * Raises the open-file limit of this process (and so of the servers it
 * starts) to n. Returns 0, or -1 when it cannot.
 */
static int raise_fd_limit(rlim_t n)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    if (rl.rlim_cur >= n)
        return 0;
    rl.rlim_cur = n;
    if (rl.rlim_max < n)
        rl.rlim_max = n;        /* allowed for root; otherwise fall back below */
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
        return 0;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_max < n)
        return -1;
    rl.rlim_cur = n;
    return setrlimit(RLIMIT_NOFILE, &rl);
}

/*
 * The common start of a socket test program: `PROG TYCHO_BINARY FIXTURE_DIR`,
 * SIGPIPE ignored, the started server killed if the test is, TYCHO_WRAP
 * read (timeouts lengthened under a wrapper). Returns 0, or 2 on a usage
 * error (the exit status for main).
 */
static int suite_setup(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s TYCHO_BINARY FIXTURE_DIR\n", argv[0]);
        return 2;
    }
    tycho_binary = argv[1];
    fixture_dir = argv[2];
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_fatal_signal);
    signal(SIGINT, on_fatal_signal);
    signal(SIGHUP, on_fatal_signal);
    if (parse_wrap()) {
        io_timeout_ms *= 3;     /* the server runs under a wrapper such as valgrind */
        startup_timeout_ms *= 3;
    }
    return 0;
}

/*
 * Makes the temporary directory dir (a mkdtemp template, changed in place)
 * with app_lua as its app.lua. Returns 0, or -1 (a check has failed).
 * app_dir_remove takes both away.
 */
static int app_dir_make(char *dir, const char *app_lua)
{
    char path[256];
    FILE *f;

    if (!mkdtemp(dir)) {
        ok(0, "the app's directory is made");
        return -1;
    }
    snprintf(path, sizeof path, "%s/app.lua", dir);
    if (!(f = fopen(path, "w")) || fputs(app_lua, f) < 0 || fclose(f) != 0) {
        ok(0, "the app is written");
        return -1;
    }
    return 0;
}

static void app_dir_remove(const char *dir)
{
    char path[256];

    snprintf(path, sizeof path, "%s/app.lua", dir);
    unlink(path);
    rmdir(dir);
}

/* A process's resident memory in KiB (VmRSS), or -1. */
static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/*
 * Whether a process runs with AddressSanitizer (`make asan`): its allocator
 * holds freed blocks back on purpose, so its RSS measures churn, not what is
 * kept (valgrind's too: see n_wrap).
 */
static int sanitized(pid_t pid)
{
    char path[64], line[512];
    int found = 0;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    if (!(f = fopen(path, "r")))
        return 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, "libasan") != NULL;
    fclose(f);
    return found;
}

#pragma GCC diagnostic pop

#endif
