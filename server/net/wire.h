/*
 * wire.h: client-side framing, what an outbound call puts on the wire and
 * reads back: the parts of its URL, and the backend's response. With
 * http/framing.c and http/request.c the only files that see http-parser's
 * types. Every response byte passes framing.c's strict check, then
 * http-parser; the head is kept as name/value spans (names lower-cased), the
 * body in an evbuffer. 1xx interim responses are skipped. Runs on the thread
 * of the loop the connection is on.
 */
#ifndef TYCHO_WIRE_H
#define TYCHO_WIRE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/tycho.h"
#include "http/framing.h"

struct evbuffer;

#define TYCHO_URL_MAX_HOST 255

/* The parts of an absolute http:// or https:// URL. */
struct tycho_url {
    bool https;                        /* https://: TLS to the backend */
    char host[TYCHO_URL_MAX_HOST + 1]; /* as written: a name, an IPv4 address or an IPv6 one */
    unsigned port;                     /* 80 (https: 443) when the URL has none */
    const char *path;                  /* within the url, or "/" */
    size_t path_len;
    const char *query;                 /* after the '?', within the url; NULL if none */
    size_t query_len;
};

/*
 * Splits url (len bytes, not NUL-terminated) into u. TYCHO_OK, or TYCHO_ERR
 * with why in err (err_cap bytes): a space or control byte, not absolute,
 * not http:// or https://, userinfo, an empty or long host, port 0. The fragment is
 * dropped.
 */
int tycho_url_parse(const char *url, size_t len, struct tycho_url *u, char *err, size_t err_cap);

#define TYCHO_REPLY_MAX_HEADERS 128
#define TYCHO_REPLY_MAX_HEAD (64 * 1024)
#define TYCHO_REPLY_ERR_LEN 384
#define TYCHO_REPLY_PARSER_BYTES 32

struct tycho_reply_header {
    size_t name_off, name_len, value_off, value_len;   /* into head */
};

struct tycho_reply {
    _Alignas(8) unsigned char _parser[TYCHO_REPLY_PARSER_BYTES]; /* an http_parser */
    struct tycho_framing framing;   /* the strict check the response passes first */
    const char *host;               /* borrowed: the backend, for messages */
    unsigned port;
    bool head_only;                 /* the request was a HEAD: no body whatever the head says */
    size_t max_body;                /* a longer body fails the response */
    struct evbuffer *body;          /* borrowed: where the body goes */
    bool complete;                  /* a whole final response has been read */
    bool in_value;                  /* the last header piece was a value */
    char *head;                     /* owned: header names and values; headers index it */
    size_t head_len, head_cap;
    struct tycho_reply_header headers[TYCHO_REPLY_MAX_HEADERS];
    size_t nheaders;
    char err[TYCHO_REPLY_ERR_LEN];  /* why the response cannot be used; "" while it can */
};

/* Prepares rp for a response (keeps head's memory when rp was used before). */
void tycho_reply_start(struct tycho_reply *rp, const char *host, unsigned port, bool head_only,
                       size_t max_body, struct evbuffer *body);

/*
 * Reads bytes of the response; returns how many it used. Stops at the end of
 * the response (complete; the rest is not this response's) or at an error
 * (err says "HOST:PORT: invalid response: ...", "response body over N
 * bytes", ...: the connection must close, never be reused).
 */
size_t tycho_reply_feed(struct tycho_reply *rp, const char *data, size_t len);

/* The backend closed the connection: a body read to the close ends here (complete). */
void tycho_reply_eof(struct tycho_reply *rp);

/* The final response's status (0 before its head). */
int tycho_reply_status(const struct tycho_reply *rp);

/* Whether the connection may carry another request after this complete response. */
bool tycho_reply_keep_alive(const struct tycho_reply *rp);

/* Frees what rp holds. */
void tycho_reply_dispose(struct tycho_reply *rp);

#endif
