/*
 * access.c: formatting and writing access log lines. The file descriptor
 * is process-wide; a reopen swaps the file behind it with dup2, so workers
 * never see it change.
 */
#include "http/access.h"
#include "core/buf.h"
#include "core/config.h"
#include "http/http.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int access_fd = -1;
static const char *access_path;     /* NULL for stdout */
static bool access_json;

int tycho_access_open(const struct tycho_config *cfg, char *err)
{
    if (!cfg->access_log || strcmp(cfg->access_log, "off") == 0)
        return TYCHO_OK;
    access_json = cfg->access_log_json;
    if (strcmp(cfg->access_log, "-") == 0) {
        access_fd = STDOUT_FILENO;
        return TYCHO_OK;
    }
    access_path = cfg->access_log;
    access_fd = open(access_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (access_fd < 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --access-log %s: %s", access_path, strerror(errno));
        return TYCHO_ERR;
    }
    return TYCHO_OK;
}

bool tycho_access_enabled(void)
{
    return access_fd >= 0;
}

void tycho_access_reopen(void)
{
    int fd;

    if (!access_path)
        return;                       /* off, or stdout */
    fd = open(access_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || dup3(fd, access_fd, O_CLOEXEC) < 0) {
        tycho_log_error("SIGUSR1: cannot reopen the access log %s: %s; still writing to the "
                        "old file", access_path, strerror(errno));
    } else {
        tycho_log_info("SIGUSR1: access log %s reopened", access_path);
    }
    if (fd >= 0)
        close(fd);
}

void tycho_access_close(void)
{
    if (access_fd >= 0 && access_fd != STDOUT_FILENO)
        close(access_fd);
    access_fd = -1;
}

/*
 * One batch at a time: a write to a pipe or socket (--access-log - under
 * docker or systemd) over PIPE_BUF bytes is not atomic, and two workers'
 * batches must not interleave mid-line.
 */
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;

void tycho_access_flush(struct tycho_buf *buf)
{
    const char *p = buf->data + buf->off;
    size_t left = buf->len;

    pthread_mutex_lock(&write_lock);
    while (left > 0 && access_fd >= 0) {
        ssize_t n = write(access_fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            static _Atomic long last_complaint;
            if (tycho_log_allow(&last_complaint, 60))
                tycho_log_error("access log: write failed: %s (lines lost; logged at most once "
                                "a minute)", n < 0 ? strerror(errno) : "nothing written");
            /* A line cut short must not run into the next batch's first line. */
            if (left < buf->len && p[-1] != '\n' && write(access_fd, "\n", 1) < 0)
                left = 0;
            break;
        }
        p += n;
        left -= (size_t)n;
    }
    pthread_mutex_unlock(&write_lock);
    tycho_buf_consume(buf, buf->len);
}

/*
 * Appends s quoted for the format: in common log format `"` and `\` are
 * escaped and other bytes outside printable ASCII become \xHH (as nginx
 * does); in JSON, \uXXXX keeps the line valid JSON.
 */
static int put_escaped(struct tycho_buf *b, const char *s, size_t len)
{
    char tmp[8];
    size_t run = 0;                   /* start of the bytes that need no escape */

    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        int n;
        if (ch != '"' && ch != '\\' && ch >= 0x20 && ch < 0x7f)
            continue;
        if (tycho_buf_append(b, s + run, i - run) < 0)
            return TYCHO_ERR;
        run = i + 1;
        if (ch == '"' || ch == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)ch;
            n = 2;
        } else {
            n = snprintf(tmp, sizeof(tmp), access_json ? "\\u%04x" : "\\x%02X", ch);
        }
        if (tycho_buf_append(b, tmp, (size_t)n) < 0)
            return TYCHO_ERR;
    }
    return tycho_buf_append(b, s + run, len - run);
}

/* The time for this second, in the format's style (made once per second per thread). */
static const char *time_text(void)
{
    static __thread time_t sec;
    static __thread char text[40];
    time_t now = time(NULL);
    struct tm tm;

    if (now != sec) {
        sec = now;
        gmtime_r(&now, &tm);
        strftime(text, sizeof(text), access_json ? "%Y-%m-%dT%H:%M:%SZ" : "%d/%b/%Y:%H:%M:%S +0000",
                 &tm);
    }
    return text;
}

/* Appends v in decimal (the access log's numbers; no printf on the request path). */
static int put_number(struct tycho_buf *b, unsigned long long v)
{
    char digits[24];
    size_t i = sizeof(digits);

    do {
        digits[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return tycho_buf_append(b, digits + i, sizeof(digits) - i);
}

static int put_signed(struct tycho_buf *b, long long v)
{
    if (v < 0 && tycho_buf_puts(b, "-") < 0)
        return TYCHO_ERR;
    return put_number(b, v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v);
}

static int append_json(struct tycho_buf *b, const struct tycho_access_entry *e)
{
    const struct tycho_req *r = e->r;
    const char *route = r->match.pattern;

    return tycho_buf_puts(b, "{\"time\":\"") < 0 || tycho_buf_puts(b, time_text()) < 0 ||
                   tycho_buf_puts(b, "\",\"id\":\"") < 0 || put_escaped(b, r->id, r->id_len) < 0 ||
                   tycho_buf_puts(b, "\",\"remote\":\"") < 0 || tycho_buf_puts(b, e->remote) < 0 ||
                   tycho_buf_puts(b, "\",\"method\":\"") < 0 ||
                   tycho_buf_append(b, r->method, r->method_len) < 0 ||
                   tycho_buf_puts(b, "\",\"path\":\"") < 0 ||
                   put_escaped(b, r->url, r->url_len) < 0 ||
                   tycho_buf_puts(b, route ? "\",\"route\":\"" : "\",\"route\":null") < 0 ||
                   (route && (put_escaped(b, route, strlen(route)) < 0 ||
                              tycho_buf_puts(b, "\"") < 0)) ||
                   tycho_buf_puts(b, ",\"status\":") < 0 || put_signed(b, e->status) < 0 ||
                   tycho_buf_puts(b, ",\"bytes\":") < 0 || put_number(b, e->bytes) < 0 ||
                   tycho_buf_puts(b, ",\"duration_us\":") < 0 ||
                   put_signed(b, e->duration_us) < 0 ||
                   tycho_buf_puts(b, ",\"worker\":") < 0 || put_signed(b, e->worker) < 0 ||
                   tycho_buf_puts(b, "}\n") < 0
               ? TYCHO_ERR
               : TYCHO_OK;
}

static int append_common(struct tycho_buf *b, const struct tycho_access_entry *e)
{
    const struct tycho_req *r = e->r;
    char version[] = " HTTP/1.1\" ";

    version[6] = (char)('0' + r->http_major % 10);
    version[8] = (char)('0' + r->http_minor % 10);
    return tycho_buf_puts(b, e->remote) < 0 || tycho_buf_puts(b, " - - [") < 0 ||
                   tycho_buf_puts(b, time_text()) < 0 || tycho_buf_puts(b, "] \"") < 0 ||
                   tycho_buf_append(b, r->method, r->method_len) < 0 ||
                   tycho_buf_puts(b, " ") < 0 || put_escaped(b, r->url, r->url_len) < 0 ||
                   tycho_buf_puts(b, version) < 0 || put_signed(b, e->status) < 0 ||
                   tycho_buf_puts(b, " ") < 0 || put_number(b, e->bytes) < 0 ||
                   tycho_buf_puts(b, "\n") < 0
               ? TYCHO_ERR
               : TYCHO_OK;
}

int tycho_access_append(struct tycho_buf *b, const struct tycho_access_entry *e)
{
    size_t mark = b->len;

    if ((access_json ? append_json(b, e) : append_common(b, e)) < 0) {
        b->len = mark;                /* no half line */
        return TYCHO_ERR;
    }
    return TYCHO_OK;
}
