/*
 * request.c: request framing: the request context, and the http-parser glue
 * that fills it (http.h). With framing.c the only file of the server side
 * that sees http-parser's types. Worker thread only.
 *
 * Every byte passes framing.c's strict check before the parser sees it, so
 * the grammar of the head and of chunked framing (CRLF line ends, tokens,
 * field-value bytes, no folding, the request line's shape) is already known
 * good in the callbacks; what remains here is meaning: the URL, Host,
 * Transfer-Encoding with the version, Expect, the limits.
 *
 * The head does not come through the parser's data callbacks (a crossing
 * for every piece of the URL, of each name and of each value): framing.c
 * hands every byte of the head to on_head_bytes before the parser sees it,
 * which appends it to r->head in the request arena (bytes may span reads),
 * and on_headers_complete splits that copy, whose grammar the check has
 * already proven, into the URL and the fields in one pass, finding the
 * fields the server reads itself on the way. The head size limit is the
 * parser's own (see tycho_http_global_init), the field count is framing.c's
 * count of field lines; the body limit is enforced in on_body (a
 * Content-Length over the limit is the caller's to refuse at
 * TYCHO_HTTP_HEAD, where the route that sets the limit is known): a callback
 * stores the status to answer in h->error_status and returns non-zero,
 * which stops the parser. A complete message pauses the parser so that
 * pipelined requests are answered one at a time, in order.
 */
#include "http/http.h"
#include "core/config.h"

#include <assert.h>
#include <arpa/inet.h>
#include <http_parser.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(http_parser) <= TYCHO_HTTP_PARSER_BYTES, "grow TYCHO_HTTP_PARSER_BYTES");

#define ARENA_FIRST_BYTES 4096

#define PARSER(h) ((http_parser *)(void *)(h)->_parser)

int tycho_req_init(void *obj)
{
    struct tycho_req *r = obj;

    if (tycho_arena_init(&r->arena, ARENA_FIRST_BYTES) < 0)
        return TYCHO_ERR;
    tycho_req_reset(r);
    return TYCHO_OK;
}

void tycho_req_dispose(void *obj)
{
    struct tycho_req *r = obj;

    tycho_arena_dispose(&r->arena);
}

void tycho_req_reset(struct tycho_req *r)
{
    struct tycho_arena arena = r->arena;

    if (r->file_open)
        close(r->file_fd);            /* a file body that was not sent (HEAD, an error, a close) */

    tycho_arena_reset(&arena);
    memset(r, 0, sizeof(*r));
    r->arena = arena;
    r->status = 200;
}

static bool valid_request_id(const char *s, size_t len)
{
    if (len == 0 || len > 128)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.' || ch == ':'))
            return false;
    }
    return true;
}

/*
 * Writes v as 16 lower-case hex digits into dst, without a loop per digit:
 * the nibbles are spread one to a byte, then turned into digits all at once.
 */
static void put_hex16(char *dst, unsigned long long v)
{
    for (int half = 0; half < 2; half++) {
        uint64_t x = (uint32_t)(v >> (half ? 0 : 32)), letters;

        x = (x | x << 16) & 0x0000ffff0000ffffULL;
        x = (x | x << 8) & 0x00ff00ff00ff00ffULL;
        x = (x | x << 4) & 0x0f0f0f0f0f0f0f0fULL;   /* nibble i of x in byte i */
        letters = ((x + 0x0606060606060606ULL) >> 4) & 0x0101010101010101ULL; /* nibbles > 9 */
        x += 0x3030303030303030ULL + letters * ('a' - '0' - 10);
        x = __builtin_bswap64(x);                    /* the most significant digit first */
        memcpy(dst + 8 * half, &x, 8);
    }
}

void tycho_req_assign_id(struct tycho_req *r, unsigned long long *next)
{
    const struct tycho_header *h = r->fields_indexed
                                       ? (r->request_id_at ? &r->headers[r->request_id_at - 1]
                                                           : NULL)
                                       : tycho_req_header(r, "x-request-id", 12);

    if (h && valid_request_id(h->value, h->value_len)) {
        r->id = h->value;
        r->id_len = h->value_len;
        return;
    }
    put_hex16(r->id_buf, (*next)++);
    r->id_buf[16] = '\0';
    r->id = r->id_buf;
    r->id_len = 16;
}

const struct tycho_header *tycho_req_header(const struct tycho_req *r, const char *name,
                                            size_t name_len)
{
    for (unsigned i = 0; i < r->nheaders; i++)
        if (r->headers[i].name_len == name_len &&
            strncasecmp(r->headers[i].name, name, name_len) == 0)
            return &r->headers[i];
    return NULL;
}

/* ---- parser callbacks ---------------------------------------------------- */

static struct tycho_http *state_of(http_parser *p)
{
    return p->data;
}

/* Stops the parser with status to answer. */
static int fail(struct tycho_http *h, int status)
{
    h->error_status = status;
    return -1;
}

static int on_message_begin(http_parser *p)
{
    state_of(p)->in_message = true;
    return 0;
}

/*
 * RFC 9110 5.6.2 tchar: what a header name or a method may hold (GNU range
 * designators, as in framing.c): one lookup a byte.
 */
static const bool tchar[256] = {
    ['0' ... '9'] = true, ['a' ... 'z'] = true, ['A' ... 'Z'] = true,
    ['!'] = true, ['#'] = true, ['$'] = true, ['%'] = true, ['&'] = true, ['\''] = true,
    ['*'] = true, ['+'] = true, ['-'] = true, ['.'] = true, ['^'] = true, ['_'] = true,
    ['`'] = true, ['|'] = true, ['~'] = true,
};

bool tycho_http_is_token(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!tchar[(unsigned char)s[i]])
            return false;
    return true;
}

/* The head's bytes as framing.c lets them through: appended to r->head. */
static int on_head_bytes(void *arg, const char *at, size_t len)
{
    struct tycho_http *h = arg;
    struct tycho_req *r = h->req;
    char *head = tycho_arena_append(&r->arena, r->head, r->head_len, at, len);

    if (!head) {
        h->error_status = 503;
        return -1;
    }
    r->head = head;
    r->head_len += len;
    return 0;
}

/* Splits the URL into path and query. Absolute-form URLs keep only their path. */
static int split_url(struct tycho_req *r)
{
    struct http_parser_url u;
    const char *q;

    if (r->url_len == 0)
        return -1;
    if (r->url[0] != '/') {
        if (r->url_len == 1 && r->url[0] == '*') {
            r->path = r->url;
            r->path_len = 1;
            return 0;
        }
        http_parser_url_init(&u);
        if (http_parser_parse_url(r->url, r->url_len, 0, &u) != 0)
            return -1;
        if (u.field_set & (1 << UF_PATH)) {
            r->path = r->url + u.field_data[UF_PATH].off;
            r->path_len = u.field_data[UF_PATH].len;
        } else {
            r->path = "/";            /* http://host is the root (RFC 9110 4.2.3) */
            r->path_len = 1;
        }
        if (u.field_set & (1 << UF_QUERY)) {
            r->query = r->url + u.field_data[UF_QUERY].off;
            r->query_len = u.field_data[UF_QUERY].len;
        }
        return 0;
    }
    r->path = r->url;
    q = memchr(r->url, '?', r->url_len);
    r->path_len = q ? (size_t)(q - r->url) : r->url_len;
    if (q) {
        r->query = q + 1;
        r->query_len = r->url_len - r->path_len - 1;
    }
    /* A fragment is never sent by clients; drop one if it is. */
    {
        const char *frag = memchr(r->path, '#', r->path_len);
        if (frag)
            r->path_len = (size_t)(frag - r->path);
    }
    return 0;
}

/* Whether name is lower, which holds letters and '-' only (name: token bytes, framing.c). */
static inline bool is_name(const char *name, size_t len, const char *lower, size_t lower_len)
{
    if (len != lower_len)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)(name[i] | 0x20) != (unsigned char)lower[i])
            return false;             /* (no token byte but a letter ORs into a letter or '-') */
    return true;
}

/* What the pass over the field names found of the fields that frame the request. */
struct framing_fields {
    const struct tycho_header *host; /* the last Host field */
    unsigned hosts;
    struct tycho_te_list te;         /* every Transfer-Encoding field */
};

/* Whether c is SP or HTAB: white space around a field value (RFC 9110 5.5). */
static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/*
 * Splits the head in r->head into the URL and the fields. framing.c has
 * checked every byte of it: blank lines (CRLF), the request line (method SP
 * target SP "HTTP/d.d" CRLF), field lines (a token name, ':', value bytes
 * without CR or LF, CRLF) and the empty line; no folding. So the split needs
 * no checks: the target is between the first SP and the SP ten bytes before
 * the line's LF, a name ends at its line's first ':', a value at its CR.
 * The value loses the white space around it (the parser's callbacks dropped
 * the leading, RFC 9110 5.5 the trailing). In the same pass over the names:
 * Host, Transfer-Encoding (into ff), Expect and X-Request-Id (r's indexes).
 * Returns 0, or the status to answer: 431 over --max-headers, 503 out of memory.
 */
static int split_head(struct tycho_http *h, struct tycho_req *r, struct framing_fields *ff)
{
    const char *s = r->head, *end = r->head + r->head_len, *lf;
    unsigned n = tycho_framing_fields(&h->framing);

    while (*s == '\r')
        s += 2;                       /* blank lines before the request line */
    r->url = memchr(s, ' ', (size_t)(end - s)) + 1;
    lf = memchr(r->url, '\n', (size_t)(end - r->url));
    r->url_len = (size_t)(lf - (sizeof(" HTTP/1.1\r") - 1) - r->url);
    r->fields_indexed = true;
    if (n > (unsigned)h->cfg->max_headers)
        return 431;
    if (n && !(r->headers = tycho_arena_alloc(&r->arena, sizeof(*r->headers) * n)))
        return 503;
    r->headers_cap = n;
    for (unsigned i = 0; i < n; i++) {
        struct tycho_header *hd = &r->headers[i];
        const char *name = lf + 1, *colon = memchr(name, ':', (size_t)(end - name));
        const char *v = colon + 1, *ve;
        size_t len = (size_t)(colon - name);

        lf = memchr(v, '\n', (size_t)(end - v));
        ve = lf - 1;                  /* the CR */
        while (v < ve && is_ows(*v))
            v++;
        while (ve > v && is_ows(ve[-1]))
            ve--;
        hd->name = name;
        hd->name_len = len;
        hd->value = v;
        hd->value_len = (size_t)(ve - v);
        /* Only the lengths of the names looked for are compared further. */
        switch (len) {
        case 4:
            if (is_name(name, len, "host", 4)) {
                ff->host = hd;
                ff->hosts++;
            }
            break;
        case 6:
            if (!r->expect_at && is_name(name, len, "expect", 6))
                r->expect_at = i + 1;
            break;
        case 12:
            if (!r->request_id_at && is_name(name, len, "x-request-id", 12))
                r->request_id_at = i + 1;
            break;
        case 17:
            if (is_name(name, len, "transfer-encoding", 17))
                tycho_te_add(&ff->te, hd->value, hd->value_len);
            break;
        default:
            break;
        }
    }
    r->nheaders = n;
    assert(lf + 3 == end && lf[1] == '\r' && "the head ends with its empty line");
    return 0;
}

/*
 * RFC 3986 2.3 unreserved and 2.2 sub-delims: what a reg-name holds besides
 * pct-encoded (GNU range designators, as in framing.c).
 */
static const bool host_chars[256] = {
    ['0' ... '9'] = true, ['a' ... 'z'] = true, ['A' ... 'Z'] = true,
    ['-'] = true, ['.'] = true, ['_'] = true, ['~'] = true,
    ['!'] = true, ['$'] = true, ['&'] = true, ['\''] = true, ['('] = true, [')'] = true,
    ['*'] = true, ['+'] = true, [','] = true, [';'] = true, ['='] = true,
};

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* RFC 3986 3.2.2 IP-literal without its brackets: an IPv6 address or IPvFuture. */
static bool ip_literal_ok(const char *s, size_t len)
{
    char addr[INET6_ADDRSTRLEN];
    struct in6_addr a6;
    size_t i = 1;

    if (len && (s[0] == 'v' || s[0] == 'V')) {      /* "v" 1*HEXDIG "." 1*( ... / ":" ) */
        while (i < len && is_hex((unsigned char)s[i]))
            i++;
        if (i == 1 || i + 1 >= len || s[i] != '.')
            return false;
        for (i++; i < len; i++)
            if (!host_chars[(unsigned char)s[i]] && s[i] != ':')
                return false;
        return true;
    }
    if (len == 0 || len >= sizeof(addr))
        return false;
    memcpy(addr, s, len);
    addr[len] = '\0';
    return inet_pton(AF_INET6, addr, &a6) == 1;
}

/*
 * RFC 9112 3.2: Host = uri-host [ ":" port ], uri-host an IP-literal, an
 * IPv4 address or a reg-name (RFC 3986 3.2.2); empty is allowed.
 */
static bool host_value_ok(const char *s, size_t len)
{
    size_t i = 0;

    if (len && s[0] == '[') {
        const char *end = memchr(s, ']', len);
        if (!end || !ip_literal_ok(s + 1, (size_t)(end - s) - 1))
            return false;
        i = (size_t)(end - s) + 1;
    } else {
        while (i < len) {
            while (i < len && host_chars[(unsigned char)s[i]])
                i++;
            if (i == len || s[i] == ':')
                break;
            if (s[i] != '%' || i + 2 >= len || !is_hex((unsigned char)s[i + 1]) ||
                !is_hex((unsigned char)s[i + 2]))
                return false;                       /* neither a reg-name byte nor pct-encoded */
            i += 3;
        }
    }
    if (i == len)
        return true;
    if (s[i] != ':')
        return false;
    for (i++; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/*
 * The fields that decide how the request is read, as split_head found them:
 * exactly one valid Host (none is allowed on HTTP/1.0, RFC 9112 3.2), and
 * a Transfer-Encoding that is exactly chunked, on HTTP/1.1 only (6.1), which
 * http-parser reads as chunked too. Returns 0 or the status to answer.
 */
static int framing_fields_status(const struct tycho_req *r, const http_parser *p,
                                 const struct framing_fields *ff)
{
    if (ff->hosts > 1 || (ff->hosts == 0 && r->http_minor != 0))
        return 400;
    if (ff->host && !host_value_ok(ff->host->value, ff->host->value_len))
        return 400;
    switch (tycho_te_verdict(&ff->te)) {
    case TYCHO_TE_NONE:
        return 0;
    case TYCHO_TE_CHUNKED:
        /* An HTTP/1.0 message with Transfer-Encoding has faulty framing (RFC 9112 6.1). */
        return r->http_minor == 0 || !(p->flags & F_CHUNKED) ? 400 : 0;
    case TYCHO_TE_UNKNOWN:
        return r->http_minor == 0 ? 400 : 501;
    case TYCHO_TE_BAD:
    default:
        return 400;
    }
}

static int on_headers_complete(http_parser *p)
{
    struct tycho_http *h = state_of(p);
    struct tycho_req *r = h->req;
    const struct tycho_header *expect;
    struct framing_fields ff = {0};
    int status;

    h->headers_done = true;
    if ((status = split_head(h, r, &ff)) != 0)
        return fail(h, status);
    r->method = http_method_str((enum http_method)p->method);
    r->method_len = strlen(r->method);
    r->http_major = (unsigned char)p->http_major;
    r->http_minor = (unsigned char)p->http_minor;
    r->is_head = p->method == HTTP_HEAD;
    /*
     * Known from the head already (the version and Connection): a handler that
     * starts before its body is in (stream_body) and streams its response must
     * not have to say Connection: close for want of it. The end of the message
     * sets it again.
     */
    r->keep_alive = http_should_keep_alive(p) && !p->upgrade;
    /*
     * CONNECT asks for a tunnel, which Tycho does not make; http-parser would
     * also end the message at the head whatever Content-Length says.
     */
    if (p->method == HTTP_CONNECT || split_url(r) < 0)
        return fail(h, 400);
    /* RFC 9112 3.2.4: the asterisk-form is for OPTIONS only. */
    if (r->path_len == 1 && r->path[0] == '*' && p->method != HTTP_OPTIONS)
        return fail(h, 400);
    if (r->http_major != 1)
        return fail(h, 505);
    if ((status = framing_fields_status(r, p, &ff)) != 0)
        return fail(h, status);
    /* The body limit depends on the route (stream_body): the caller checks it at HEAD. */
    r->content_length = (p->flags & F_CHUNKED) ? ULLONG_MAX : p->content_length;
    r->body_follows = (p->flags & F_CHUNKED) || (p->content_length != ULLONG_MAX &&
                                                 p->content_length > 0);
    expect = r->expect_at ? &r->headers[r->expect_at - 1] : NULL;
    if (expect) {
        if (expect->value_len != 12 || strncasecmp(expect->value, "100-continue", 12) != 0)
            return fail(h, 417);
        r->expect_continue = r->http_minor >= 1 &&
                             ((p->flags & F_CHUNKED) || (p->content_length != ULLONG_MAX &&
                                                         p->content_length > 0));
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct tycho_http *h = state_of(p);
    struct tycho_req *r = h->req;
    char *body;

    if (r->stream_body) {
        if (r->body_discard)
            return 0;                 /* the handler has finished: the rest is dropped */
        if (len > r->max_body - r->body_seen)
            return fail(h, 413);
        /* The caller feeds no more bytes than sbuf has room for (body bytes <= bytes fed). */
        assert(r->sbuf_off + r->sbuf_len + len <= TYCHO_BODY_BUF_BYTES);
        memcpy(r->sbuf + r->sbuf_off + r->sbuf_len, at, len);
        r->sbuf_len += len;
        r->body_seen += len;
        return 0;
    }
    if (r->body_len + len > h->cfg->max_body_bytes)
        return fail(h, 413);
    if (!(body = tycho_arena_append(&r->arena, r->body, r->body_len, at, len)))
        return fail(h, 503);
    r->body = body;
    r->body_len += len;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct tycho_http *h = state_of(p);

    /* An upgrade (e.g. websocket) is not spoken here: answer, then close. */
    h->req->keep_alive = http_should_keep_alive(p) && !p->upgrade;
    h->state = TYCHO_HTTP_DONE;
    tycho_framing_next(&h->framing);
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void tycho_http_global_init(const struct tycho_config *cfg)
{
    /*
     * The parser counts every byte of the head (request line, names, values,
     * separators, CRLFs) against this process-wide limit and fails with
     * HPE_HEADER_OVERFLOW, answered as 431.
     */
    http_parser_set_max_header_size((uint32_t)cfg->max_header_bytes);
}

void tycho_http_init(struct tycho_http *h, const struct tycho_config *cfg)
{
    memset(h, 0, sizeof(*h));
    http_parser_init(PARSER(h), HTTP_REQUEST);
    PARSER(h)->data = h;
    h->cfg = cfg;
    tycho_framing_init(&h->framing, TYCHO_FRAMING_REQUEST);
    /* The glue reads every field from the head's copy: the parser needs only those it matches. */
    tycho_framing_skip_fields(&h->framing, (unsigned)cfg->max_header_bytes);
    h->state = TYCHO_HTTP_MORE;
}

/* Maps a parser error to the status to answer. */
static int status_for(enum http_errno err)
{
    switch (err) {
    case HPE_HEADER_OVERFLOW:
        return 431;
    case HPE_INVALID_VERSION:
        return 505;
    default:
        return 400;
    }
}

/* Whether the first parsed bytes of r's head (its copy) hold the request line's end. */
static bool request_line_ended(const struct tycho_req *r, size_t parsed)
{
    size_t i = 0;

    if (parsed > r->head_len)
        parsed = r->head_len;
    while (i + 1 < parsed && r->head[i] == '\r')
        i += 2;                       /* blank lines before it */
    return i < parsed && memchr(r->head + i, '\n', parsed - i) != NULL;
}

size_t tycho_http_parse(struct tycho_http *h, struct tycho_req *r, const char *data, size_t len)
{
    http_parser *p = PARSER(h);
    const struct tycho_framing_sink sink = {on_head_bytes, h};
    size_t n, head_before = r->head_len;
    enum http_errno err;

    assert(h->state != TYCHO_HTTP_ERROR && "nothing may be fed after ERROR");
    h->req = r;
    n = tycho_framing_execute_request(&h->framing, p, &settings, &sink, data, len);
    err = HTTP_PARSER_ERRNO(p);
    if (h->state == TYCHO_HTTP_DONE)
        return n;
    /* Past --max-headers before the head is complete (on_headers_complete counts a whole one). */
    if (!h->headers_done && !h->error_status &&
        tycho_framing_fields(&h->framing) > (unsigned)h->cfg->max_headers)
        h->error_status = 431;
    if (err != HPE_OK || tycho_framing_refused(&h->framing) || h->error_status) {
        h->state = TYCHO_HTTP_ERROR;
        if (!h->error_status)
            h->error_status = err == HPE_OK ? 400 : status_for(err);
        /* Over the head limit before any header: the request line, i.e. the URL, is too long. */
        if (err == HPE_HEADER_OVERFLOW && !h->headers_done &&
            !request_line_ended(r, head_before + n))
            h->error_status = 414;
        return n;
    }
    /* (framing.c stops right after such a head, so no byte of the body was parsed yet.) */
    h->state = TYCHO_HTTP_MORE;
    if (h->headers_done && !h->head_told && r->body_follows) {
        h->head_told = true;
        h->state = TYCHO_HTTP_HEAD;
    }
    return n;
}

