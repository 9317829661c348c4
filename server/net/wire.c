/*
 * wire.c: client-side framing (wire.h): URLs through http-parser's URL
 * parser, and a backend's response through framing.c's check and
 * http-parser.
 */
#include "net/wire.h"

#include <event2/buffer.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int tycho_url_parse(const char *url, size_t len, struct tycho_url *t, char *err, size_t err_cap)
{
    struct http_parser_url u;
    size_t host_len;

    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] <= 0x20 || url[i] == 0x7f) {
            snprintf(err, err_cap, "the url has a space or a control byte (percent-encode it)");
            return TYCHO_ERR;
        }
    http_parser_url_init(&u);
    if (http_parser_parse_url(url, len, 0, &u) != 0 || !(u.field_set & (1 << UF_SCHEMA)) ||
        !(u.field_set & (1 << UF_HOST))) {
        snprintf(err, err_cap, "not an absolute http:// or https:// url: %.*s", (int)len, url);
        return TYCHO_ERR;
    }
    t->https = u.field_data[UF_SCHEMA].len == 5 &&
               strncasecmp(url + u.field_data[UF_SCHEMA].off, "https", 5) == 0;
    if (!t->https && (u.field_data[UF_SCHEMA].len != 4 ||
                      strncasecmp(url + u.field_data[UF_SCHEMA].off, "http", 4) != 0)) {
        snprintf(err, err_cap, "only http:// and https:// urls are supported, not %.*s://",
                 (int)u.field_data[UF_SCHEMA].len, url + u.field_data[UF_SCHEMA].off);
        return TYCHO_ERR;
    }
    if (u.field_set & (1 << UF_USERINFO)) {
        snprintf(err, err_cap, "user:password@ in the url is not supported (send an "
                 "Authorization header)");
        return TYCHO_ERR;
    }
    host_len = u.field_data[UF_HOST].len;
    if (host_len == 0 || host_len > TYCHO_URL_MAX_HOST) {
        snprintf(err, err_cap, "the url's host is empty or too long");
        return TYCHO_ERR;
    }
    memcpy(t->host, url + u.field_data[UF_HOST].off, host_len);
    t->host[host_len] = '\0';
    t->port = (u.field_set & (1 << UF_PORT)) ? u.port : t->https ? 443 : 80;
    if (t->port == 0) {
        snprintf(err, err_cap, "the url's port is 0");
        return TYCHO_ERR;
    }
    /* The target is the path and the query, never the fragment; no path is "/". */
    t->path = (u.field_set & (1 << UF_PATH)) ? url + u.field_data[UF_PATH].off : "/";
    t->path_len = (u.field_set & (1 << UF_PATH)) ? u.field_data[UF_PATH].len : 1;
    t->query = (u.field_set & (1 << UF_QUERY)) ? url + u.field_data[UF_QUERY].off : NULL;
    t->query_len = t->query ? u.field_data[UF_QUERY].len : 0;
    return TYCHO_OK;
}

_Static_assert(sizeof(http_parser) <= TYCHO_REPLY_PARSER_BYTES, "grow TYCHO_REPLY_PARSER_BYTES");

#define PARSER(rp) ((http_parser *)(void *)(rp)->_parser)

/* Appends a piece of a header name (lower-cased) or value to rp->head. */
static int head_add(struct tycho_reply *rp, const char *at, size_t len, bool lower)
{
    if (rp->head_len + len > TYCHO_REPLY_MAX_HEAD) {
        snprintf(rp->err, sizeof(rp->err), "%s:%u: response head over %d bytes", rp->host,
                 rp->port, TYCHO_REPLY_MAX_HEAD);
        return -1;
    }
    if (rp->head_len + len > rp->head_cap) {
        size_t cap = rp->head_cap ? rp->head_cap * 2 : 1024;
        char *grown;
        while (cap < rp->head_len + len)
            cap *= 2;
        if (!(grown = realloc(rp->head, cap))) {
            snprintf(rp->err, sizeof(rp->err), "out of memory reading the response");
            return -1;
        }
        rp->head = grown;
        rp->head_cap = cap;
    }
    memcpy(rp->head + rp->head_len, at, len);
    for (size_t i = 0; lower && i < len; i++) {
        char *ch = rp->head + rp->head_len + i;
        if (*ch >= 'A' && *ch <= 'Z')
            *ch = (char)(*ch + 32);
    }
    rp->head_len += len;
    return 0;
}

static int on_header_field(http_parser *parser, const char *at, size_t len)
{
    struct tycho_reply *rp = parser->data;

    if (rp->in_value || rp->nheaders == 0) {
        struct tycho_reply_header *h;
        if (rp->nheaders == TYCHO_REPLY_MAX_HEADERS) {
            snprintf(rp->err, sizeof(rp->err), "%s:%u: response has over %d header fields",
                     rp->host, rp->port, TYCHO_REPLY_MAX_HEADERS);
            return -1;
        }
        h = &rp->headers[rp->nheaders++];
        h->name_off = rp->head_len;
        h->name_len = h->value_len = 0;
        rp->in_value = false;
    }
    rp->headers[rp->nheaders - 1].name_len += len;
    return head_add(rp, at, len, true);
}

static int on_header_value(http_parser *parser, const char *at, size_t len)
{
    struct tycho_reply *rp = parser->data;
    struct tycho_reply_header *h = &rp->headers[rp->nheaders - 1];

    if (!rp->in_value) {
        h->value_off = rp->head_len;
        rp->in_value = true;
    }
    h->value_len += len;
    return head_add(rp, at, len, false);
}

/* Why the response head cannot be read safely (framing.h), or NULL. */
static const char *head_error(const struct tycho_reply *rp, const http_parser *parser)
{
    struct tycho_te_list te = {0};

    for (size_t i = 0; i < rp->nheaders; i++) {
        const struct tycho_reply_header *h = &rp->headers[i];
        if (h->name_len == 17 && memcmp(rp->head + h->name_off, "transfer-encoding", 17) == 0)
            tycho_te_add(&te, h->value_len ? rp->head + h->value_off : "", h->value_len);
    }
    return tycho_framing_response_error(parser, &te);
}

static int on_headers_complete(http_parser *parser)
{
    struct tycho_reply *rp = parser->data;
    unsigned status = parser->status_code;
    const char *reason = head_error(rp, parser);

    if (reason) {
        snprintf(rp->err, sizeof(rp->err), "%s:%u: invalid response: %s", rp->host,
                 rp->port, reason);
        return -1;
    }
    if (status == 101) {
        snprintf(rp->err, sizeof(rp->err), "%s:%u: the backend switched protocols (101); "
                 "upgrades are not supported", rp->host, rp->port);
        return -1;
    }
    /* 1: no body, whatever Content-Length says (RFC 9110 6.4.1). */
    return rp->head_only || status < 200 || status == 204 || status == 304 ? 1 : 0;
}

static int on_body(http_parser *parser, const char *at, size_t len)
{
    struct tycho_reply *rp = parser->data;
    if (evbuffer_get_length(rp->body) + len > rp->max_body) {
        snprintf(rp->err, sizeof(rp->err), "%s:%u: response body over %zu bytes", rp->host,
                 rp->port, rp->max_body);
        return -1;
    }
    if (evbuffer_add(rp->body, at, len) < 0) {
        snprintf(rp->err, sizeof(rp->err), "out of memory reading the response");
        return -1;
    }
    return 0;
}

static int on_message_complete(http_parser *parser)
{
    struct tycho_reply *rp = parser->data;

    tycho_framing_next(&rp->framing);
    if (parser->status_code >= 100 && parser->status_code < 200) {
        rp->nheaders = 0;              /* an interim response: the real one follows */
        rp->head_len = 0;
        rp->in_value = false;
        return 0;
    }
    rp->complete = true;
    http_parser_pause(parser, 1);     /* what follows is not this response's */
    return 0;
}

static http_parser_settings settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void tycho_reply_start(struct tycho_reply *rp, const char *host, unsigned port, bool head_only,
                       size_t max_body, struct evbuffer *body)
{
    http_parser_init(PARSER(rp), HTTP_RESPONSE);
    PARSER(rp)->data = rp;
    tycho_framing_init(&rp->framing, TYCHO_FRAMING_RESPONSE);
    rp->host = host;
    rp->port = port;
    rp->head_only = head_only;
    rp->max_body = max_body;
    rp->body = body;
    rp->complete = rp->in_value = false;
    rp->head_len = 0;
    rp->nheaders = 0;
    rp->err[0] = '\0';
}

size_t tycho_reply_feed(struct tycho_reply *rp, const char *data, size_t len)
{
    http_parser *parser = PARSER(rp);
    size_t n = tycho_framing_execute(&rp->framing, parser, &settings, data, len);

    if (rp->err[0])
        return n;                     /* a callback said why */
    if (tycho_framing_refused(&rp->framing)) {
        /* Where this response ends is in doubt: the connection must not be reused. */
        snprintf(rp->err, sizeof(rp->err), "%s:%u: invalid response: malformed framing (status "
                 "line, field line or chunk not as RFC 9112 has it)", rp->host, rp->port);
    } else if (!rp->complete && HTTP_PARSER_ERRNO(parser) != HPE_OK) {
        snprintf(rp->err, sizeof(rp->err), "%s:%u: invalid response: %s", rp->host, rp->port,
                 http_errno_description(HTTP_PARSER_ERRNO(parser)));
    }
    return n;
}

void tycho_reply_eof(struct tycho_reply *rp)
{
    http_parser_execute(PARSER(rp), &settings, NULL, 0);
}

int tycho_reply_status(const struct tycho_reply *rp)
{
    return (int)((const http_parser *)(const void *)rp->_parser)->status_code;
}

bool tycho_reply_keep_alive(const struct tycho_reply *rp)
{
    return http_should_keep_alive((const http_parser *)(const void *)rp->_parser) != 0;
}

void tycho_reply_dispose(struct tycho_reply *rp)
{
    free(rp->head);
    rp->head = NULL;
    rp->head_len = rp->head_cap = 0;
}
