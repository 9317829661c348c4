/*
 * response.c: the response writer (http.h): status line, Server, Date,
 * Content-Length, Connection, the handler's headers and the body; and the
 * responses the server makes itself. Any thread for the functions that say
 * so; the rest on the worker thread of the connection.
 */
#include "http/http.h"
#include "core/tycho.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The statuses with a reason phrase; X(code, reason). */
#define REASONS(X) \
    X(100, "Continue") \
    X(101, "Switching Protocols") \
    X(200, "OK") \
    X(201, "Created") \
    X(202, "Accepted") \
    X(204, "No Content") \
    X(206, "Partial Content") \
    X(301, "Moved Permanently") \
    X(302, "Found") \
    X(303, "See Other") \
    X(304, "Not Modified") \
    X(307, "Temporary Redirect") \
    X(308, "Permanent Redirect") \
    X(400, "Bad Request") \
    X(401, "Unauthorized") \
    X(403, "Forbidden") \
    X(404, "Not Found") \
    X(405, "Method Not Allowed") \
    X(408, "Request Timeout") \
    X(409, "Conflict") \
    X(410, "Gone") \
    X(411, "Length Required") \
    X(413, "Content Too Large") \
    X(414, "URI Too Long") \
    X(415, "Unsupported Media Type") \
    X(416, "Range Not Satisfiable") \
    X(417, "Expectation Failed") \
    X(422, "Unprocessable Content") \
    X(429, "Too Many Requests") \
    X(431, "Request Header Fields Too Large") \
    X(500, "Internal Server Error") \
    X(501, "Not Implemented") \
    X(502, "Bad Gateway") \
    X(503, "Service Unavailable") \
    X(504, "Gateway Timeout") \
    X(505, "HTTP Version Not Supported")

const char *tycho_http_reason(int status)
{
    switch (status) {
#define X(code, reason) \
    case code:          \
        return reason;
        REASONS(X)
#undef X
    default:
        return "Unknown";
    }
}

/*
 * The whole status line of a status with a reason phrase, made by the
 * compiler ("HTTP/1.1 200 OK\r\n"), and its length; NULL for another code.
 */
static const char *status_line(int status, size_t *len)
{
    switch (status) {
#define X(code, reason)                                          \
    case code:                                                   \
        *len = sizeof("HTTP/1.1 " #code " " reason "\r\n") - 1; \
        return "HTTP/1.1 " #code " " reason "\r\n";
        REASONS(X)
#undef X
    default:
        return NULL;
    }
}

/* Statuses that never carry a body (RFC 9110 6.4.1). */
static bool bodyless(int status)
{
    return status < 200 || status == 204 || status == 304;
}

/* Writes a decimal into dst (at least 20 bytes); returns its length. */
static size_t put_uint(char *dst, size_t v)
{
    char tmp[24];
    size_t n = 0, i;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

bool tycho_http_has_body(const struct tycho_req *r)
{
    return !r->is_head && !bodyless(r->status);
}

#define PUT(lit) (memcpy(w, lit, sizeof(lit) - 1), w += sizeof(lit) - 1)
#define PUTN(s, n) ((n) ? (memcpy(w, s, n), w += (n)) : w)

/* How a response's body is delimited (write_head). */
enum body_framing { BY_LENGTH, BY_CHUNKS, BY_CLOSE };

/*
 * Appends r's head, then body_len bytes of its body (none for a streamed
 * response: framing BY_CHUNKS or BY_CLOSE).
 */
static int write_head(struct tycho_buf *out, const struct tycho_req *r, const char *date_line,
                      bool keep_alive, enum body_framing framing, size_t body_len)
{
    size_t line_len = 0, date_len = strlen(date_line);
    const char *line = status_line(r->status, &line_len);
    bool no_body = bodyless(r->status);
    size_t max = 64 + line_len + date_len + r->res_headers_len + body_len + 96 + 32 + r->id_len;
    char *start = tycho_buf_reserve(out, max), *w = start;

    if (!start)
        return TYCHO_ERR;
    if (line) {
        PUTN(line, line_len);
    } else {
        PUT("HTTP/1.1 ");
        w += put_uint(w, (size_t)r->status);   /* (an int: 20 bytes hold it, in the 64) */
        PUT(" Unknown\r\n");
    }
    if (!(r->res_flags & TYCHO_RES_SERVER))
        PUT("Server: tycho\r\n");
    PUTN(date_line, date_len);
    if (!no_body && framing == BY_LENGTH) {
        PUT("Content-Length: ");
        w += put_uint(w, r->res_body_len);
        PUT("\r\n");
    } else if (!no_body && framing == BY_CHUNKS) {
        PUT("Transfer-Encoding: chunked\r\n");
    }
    if (!keep_alive)
        PUT("Connection: close\r\n");
    else if (r->http_minor == 0)
        PUT("Connection: keep-alive\r\n");
    if (!(r->res_flags & TYCHO_RES_CONTENT_TYPE) && !no_body &&
        (r->res_body_len || framing != BY_LENGTH))
        PUT("Content-Type: text/plain; charset=utf-8\r\n");
    if (r->id_len && !(r->res_flags & TYCHO_RES_REQUEST_ID)) {
        PUT("X-Request-Id: ");
        PUTN(r->id, r->id_len);
        PUT("\r\n");
    }
    PUTN(r->res_headers, r->res_headers_len);
    PUT("\r\n");
    PUTN(r->res_body, body_len);
    out->len += (size_t)(w - start);
    return TYCHO_OK;
}

int tycho_http_write_response(struct tycho_buf *out, const struct tycho_req *r,
                              const char *date_line, bool keep_alive)
{
    /* A file body is the caller's to send after the head. */
    size_t body_len = bodyless(r->status) || r->is_head || (r->res_flags & TYCHO_RES_FILE)
                          ? 0
                          : r->res_body_len;

    return write_head(out, r, date_line, keep_alive, BY_LENGTH, body_len);
}

int tycho_http_write_stream_head(struct tycho_buf *out, const struct tycho_req *r,
                                 const char *date_line, bool keep_alive, bool chunked)
{
    return write_head(out, r, date_line, keep_alive, chunked ? BY_CHUNKS : BY_CLOSE, 0);
}

int tycho_http_write_chunk(struct tycho_buf *out, const char *data, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    char *start = tycho_buf_reserve(out, len + 16 + 4), *w = start;
    int digits = 1;

    if (!start)
        return TYCHO_ERR;
    while (digits < 16 && (len >> (4 * digits)) != 0)
        digits++;
    for (int i = digits - 1; i >= 0; i--)
        *w++ = hex[(len >> (4 * i)) & 0xf];
    PUT("\r\n");
    PUTN(data, len);
    PUT("\r\n");
    out->len += (size_t)(w - start);
    return TYCHO_OK;
}

int tycho_http_write_last_chunk(struct tycho_buf *out)
{
    return tycho_buf_append(out, "0\r\n\r\n", 5);
}

void tycho_http_date_line(char *buf, size_t len, time_t t)
{
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(buf, len, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
}

size_t tycho_http_busy(char *buf, size_t len, const char *date_line)
{
    int n = snprintf(buf, len,
                     "HTTP/1.1 503 Service Unavailable\r\nServer: tycho\r\n%sRetry-After: 1\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\n"
                     "Connection: close\r\n\r\nService Unavailable\n",
                     date_line);

    return n < 0 ? 0 : ((size_t)n < len ? (size_t)n : len - 1);
}

int tycho_http_write_body(struct tycho_buf *out, int status, const char *content_type,
                          const char *extra_headers, const char *date_line, bool keep_alive,
                          const char *body, size_t body_len, bool with_body)
{
    char head[1024];                  /* extra_headers: an Allow list and an id line at most */
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nServer: tycho\r\n%sContent-Type: %s\r\n"
                     "Content-Length: %zu\r\n%s%s\r\n",
                     status, tycho_http_reason(status), date_line, content_type, body_len,
                     keep_alive ? "" : "Connection: close\r\n", extra_headers);

    if (n < 0 || (size_t)n >= sizeof(head) || tycho_buf_append(out, head, (size_t)n) < 0)
        return TYCHO_ERR;
    if (with_body && tycho_buf_append(out, body, body_len) < 0)
        return TYCHO_ERR;
    return TYCHO_OK;
}

int tycho_http_write_text(struct tycho_buf *out, int status, const char *extra_headers,
                          const char *date_line, bool keep_alive, const char *body,
                          bool with_body)
{
    return tycho_http_write_body(out, status, "text/plain; charset=utf-8", extra_headers,
                                 date_line, keep_alive, body, strlen(body), with_body);
}

int tycho_http_write_simple(struct tycho_buf *out, int status, const char *extra_headers,
                            const char *date_line, bool keep_alive, bool with_body)
{
    char body[64];

    snprintf(body, sizeof(body), "%s\n", tycho_http_reason(status));
    return tycho_http_write_text(out, status, extra_headers, date_line, keep_alive, body,
                                 with_body);
}

const char *tycho_http_find_header(const struct tycho_req *r, size_t *at, const char *name,
                                   size_t name_len, size_t *line_len)
{
    while (*at < r->res_headers_len) {
        const char *line = r->res_headers + *at;
        const char *end = memchr(line, '\n', r->res_headers_len - *at);
        size_t len = end ? (size_t)(end - line) + 1 : r->res_headers_len - *at;
        *at += len;
        if (len > name_len && line[name_len] == ':' && strncasecmp(line, name, name_len) == 0) {
            *line_len = len;
            return line;
        }
    }
    return NULL;
}

void tycho_http_remove_header(struct tycho_req *r, const char *name, size_t name_len)
{
    size_t at = 0, len;
    const char *line;

    while ((line = tycho_http_find_header(r, &at, name, name_len, &len))) {
        size_t start = (size_t)(line - r->res_headers);
        memmove(r->res_headers + start, r->res_headers + start + len,
                r->res_headers_len - start - len);
        r->res_headers_len -= len;
        at = start;
    }
}

int tycho_http_add_header(struct tycho_req *r, const char *name, size_t name_len,
                          const char *value, size_t value_len)
{
    size_t old = r->res_headers_len, n = name_len + 2 + value_len + 2;
    char small[256], *line;

    /* Nearly every line fits here: made whole, it is one append. */
    if (n <= sizeof(small)) {
        memcpy(small, name, name_len);
        memcpy(small + name_len, ": ", 2);
        memcpy(small + name_len + 2, value, value_len);
        memcpy(small + n - 2, "\r\n", 2);
        if (!(line = tycho_arena_append(&r->arena, r->res_headers, old, small, n)))
            return TYCHO_ERR;
        r->res_headers = line;
        r->res_headers_len = old + n;
        return TYCHO_OK;
    }
    line = tycho_arena_append(&r->arena, r->res_headers, old, name, name_len);

    /* Appends grow in place while the header block is the arena's newest allocation. */
    line = line ? tycho_arena_append(&r->arena, line, old + name_len, ": ", 2) : NULL;
    line = line ? tycho_arena_append(&r->arena, line, old + name_len + 2, value, value_len) : NULL;
    line = line ? tycho_arena_append(&r->arena, line, old + name_len + 2 + value_len, "\r\n", 2)
                : NULL;
    if (!line)
        return TYCHO_ERR;
    r->res_headers = line;
    r->res_headers_len = old + name_len + 2 + value_len + 2;
    return TYCHO_OK;
}
