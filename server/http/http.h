/*
 * http.h: HTTP/1.1 request framing (request.c: the http-parser glue) into
 * struct tycho_req, and the response writer (response.c). http-parser's own
 * types stay inside the framing files (framing.c, request.c; net/wire.c on
 * the client side), so that replacing the parser touches those alone.
 * Everything here runs on the worker thread that owns the connection,
 * unless a function says otherwise.
 */
#ifndef TYCHO_HTTP_H
#define TYCHO_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "core/arena.h"
#include "core/buf.h"
#include "http/framing.h"
#include "http/router.h"

struct tycho_config;
struct tycho_conn;
struct tycho_gzip_stream;

struct tycho_header {
    const char *name;          /* arena; as the client spelt it */
    size_t name_len;
    const char *value;         /* arena */
    size_t value_len;
};

/* Response flags. */
#define TYCHO_RES_SENT 0x1         /* res:send/json/redirect ran: the body is final */
#define TYCHO_RES_CONTENT_TYPE 0x2 /* the handler set Content-Type */
#define TYCHO_RES_SERVER 0x4       /* the handler set Server */
#define TYCHO_RES_CLOSE 0x8        /* the handler asked for Connection: close */
#define TYCHO_RES_REQUEST_ID 0x10  /* the handler set X-Request-Id itself */
#define TYCHO_RES_FILE 0x20        /* the body is res_body_len bytes of file_fd (app.static) */
#define TYCHO_RES_STREAM 0x40      /* res:write began: the head went out, the body follows */
#define TYCHO_RES_CONTENT_ENCODING 0x80 /* the handler set Content-Encoding */

/* What tycho_http_parse left behind. */
enum tycho_http_state {
    TYCHO_HTTP_MORE,    /* needs more bytes */
    TYCHO_HTTP_HEAD,    /* the head is in and a body follows (r->body_follows): route it,
                           then feed on (the body goes to r->body, or to r->sbuf when
                           r->stream_body; TYCHO_BODY_BUF_BYTES of it at most then) */
    TYCHO_HTTP_DONE,    /* a whole request is in the context; the next one gets a fresh context */
    TYCHO_HTTP_ERROR    /* bad input; error_status says what to answer, then close */
};

#define TYCHO_HTTP_PARSER_BYTES 32

/* The buffer of a streamed request body: what the server holds of it at most. */
#define TYCHO_BODY_BUF_BYTES (64 * 1024)

/*
 * Parser state of one request, embedded in its context (struct tycho_req
 * below): it is set up when the context is taken for a request's first byte
 * and goes with it, so an idle keep-alive connection holds none.
 */
struct tycho_http {
    _Alignas(8) unsigned char _parser[TYCHO_HTTP_PARSER_BYTES]; /* an http_parser */
    const struct tycho_config *cfg; /* borrowed, read-only */
    struct tycho_req *req;          /* borrowed: the context being filled */
    enum tycho_http_state state;
    int error_status;               /* 400, 413, 414, 431, 501, 505 when state is ERROR */
    bool in_message;                /* bytes of a request have been seen */
    bool last_was_value;            /* the previous header callback was a value */
    bool headers_done;              /* the head is complete: later fields are trailers */
    bool head_told;                 /* HEAD was reported for this request */
    struct tycho_framing framing;   /* the strict check every byte passes before the parser */
};

/*
 * One request and its response. Pooled per worker; every field below
 * _pool_next is reset (tycho_req_reset) before the context goes back.
 */
struct tycho_req {
    void *_pool_next;              /* the pool's link while free */
    struct tycho_arena arena;      /* owned: every string below lives here */
    struct tycho_conn *conn;       /* borrowed: the connection it came on */
    struct tycho_http http;        /* the parser, from the request's first byte to its end */
    long body_started_ms;          /* the connection's clock: when its head was complete; 0
                                      before (the --body-timeout deadline counts from it) */

    /* The request, filled by the parser. */
    const char *method;            /* static string, e.g. "GET" */
    size_t method_len;
    char *url;                     /* as sent: path?query */
    size_t url_len;
    const char *path;              /* into url; "/..." without the query */
    size_t path_len;
    const char *query;             /* into url, after '?'; NULL when none */
    size_t query_len;
    struct tycho_header *headers;  /* arena array */
    unsigned nheaders, headers_cap;
    char *head;                    /* arena: the head's bytes as they came (url, headers point
                                      into it) */
    size_t head_len;
    /* Fields the server reads itself, found as the head was split: index + 1; 0: none. */
    unsigned expect_at, request_id_at;
    bool fields_indexed;           /* the two above were filled (the parser made r) */
    char *body;                    /* arena; NULL when empty */
    size_t body_len;
    unsigned char http_major, http_minor;
    bool keep_alive;               /* what the client asked for (http_should_keep_alive) */
    bool is_head;                  /* HEAD: answer without body bytes */
    bool expect_continue;          /* Expect: 100-continue and a body is coming */
    bool continue_sent;            /* the 100 Continue was written */
    /*
     * The client behind a trusted proxy (--trusted-proxies; tycho_req_client,
     * tycho_req_https in conn.h), worked out the first time one asks: nothing is
     * read without the flag.
     */
    bool client_done;              /* worked out (the fields below hold) */
    unsigned char client_scheme;   /* an enum tycho_proxy_scheme a trusted proxy reported */
    const char *client;            /* arena, NUL-terminated: the address it reported; NULL:
                                      the peer's */

    /* Its id: the client's valid X-Request-Id, or id_buf (generated). */
    const char *id;
    size_t id_len;
    char id_buf[17];

    /* For the access log. */
    long long started_us;          /* when serving began (monotonic) */
    int log_status;                /* the status sent */
    size_t log_bytes;              /* the response's bytes */
    const char *route_label;       /* metrics: the route pattern or the path answered; NULL: none */

    /* The route, filled by the router. */
    struct tycho_route_match match;

    /* The response, filled by the handler. */
    int status;                    /* 200 unless set */
    unsigned res_flags;            /* TYCHO_RES_* */
    char *res_headers;             /* arena: "Name: value\r\n" lines */
    size_t res_headers_len;
    const char *res_body;          /* arena or static; NULL for a file body */
    size_t res_body_len;
    int file_fd;                   /* owned while file_open: a file body's descriptor */
    bool file_open;                /* file_fd is open; closed by tycho_req_reset unless taken */
    long long file_off;            /* where the file body starts */

    /* A streamed response (TYCHO_RES_STREAM; http/stream.h). */
    bool stream_chunked;           /* its body is framed in chunks (HTTP/1.1), else by the close */
    bool stream_keep_alive;        /* its head let the connection stay open */
    bool stream_failed;            /* the handler failed after the head went: cut it short */
    bool stream_closed;            /* a send failed (the client left): writes fail */
    struct tycho_gzip_stream *stream_gzip; /* owned: its compressor (--gzip), or NULL */
    /*
     * Set by the application while its handler waits for the output to
     * drain: the connection calls it once fewer than drained_below bytes
     * wait for the socket (or the connection closes: then never).
     */
    void (*on_drained)(struct tycho_req *r);
    size_t drained_below;
    void *drained_arg;             /* the application's, for on_drained */
    /*
     * Set by the application while its handler waits for input on a
     * connection it took over (a WebSocket): called once bytes came, the
     * client closed its side, or the server began to stop.
     */
    void (*on_input)(struct tycho_req *r);
    void *input_arg;               /* the application's, for on_input */

    /*
     * The body of a stream_body route (http/body.h): received piece by piece
     * into sbuf, a bounded buffer the handler reads from (req:read), while
     * the rest waits in the connection's input and the kernel.
     */
    unsigned long long content_length; /* as the head announced; ULLONG_MAX: chunked or none */
    bool body_follows;             /* the head announced a body (chunked, or a length > 0) */
    bool routed;                   /* match and route_result were filled at the head */
    unsigned char route_result;    /* an enum tycho_route_result, once routed */
    bool stream_body;              /* the route reads its body itself */
    bool body_done;                /* the whole body has been received (or discarded) */
    bool body_discard;             /* its bytes are dropped: the handler has finished */
    int body_error;                /* 0, or why the body stops: 413 over max_body, 408, 400 */
    size_t max_body;               /* the route's bound on the body, in bytes */
    size_t body_seen;              /* body bytes received so far */
    char *sbuf;                    /* arena, TYCHO_BODY_BUF_BYTES: received, not yet read */
    size_t sbuf_off, sbuf_len;     /* the unread bytes are sbuf[sbuf_off, +sbuf_len) */
    /*
     * Set by the application while its handler waits for body bytes: the
     * connection calls it once some came, or the wait ends (body_error: 408);
     * never when the connection closes.
     */
    void (*on_body)(struct tycho_req *r);
    void *body_arg;                /* the application's, for on_body */

    /* The application (the layer above: context.h's tycho_app). */
    void *app;                     /* its own state for r while it holds r (a running handler's
                                      task); NULL when it holds none. HTTP only tests it. */
    void (*on_done)(struct tycho_req *r); /* set by the connection: a handler that waited is done */
};

/* Makes a request context ready for first use (pool init). TYCHO_OK or TYCHO_ERR. */
int tycho_req_init(void *obj);

/* Frees a context's memory (pool dispose). */
void tycho_req_dispose(void *obj);

/* Empties a context for its next request; keeps the arena's first block; closes file_fd if open. */
void tycho_req_reset(struct tycho_req *r);

/*
 * Finds a request header by name, case-insensitively. Returns the first one,
 * or NULL.
 */
const struct tycho_header *tycho_req_header(const struct tycho_req *r, const char *name,
                                            size_t name_len);

/* Sets process-wide parser limits from cfg. Main thread, before workers start. */
void tycho_http_global_init(const struct tycho_config *cfg);

/* Prepares h for a new request (its context was just taken from the pool). */
void tycho_http_init(struct tycho_http *h, const struct tycho_config *cfg);

/*
 * Feeds bytes into the request in r. Returns how many were consumed; the
 * rest belongs to the next request (DONE) or to the body (HEAD). Sets h->state. Bytes are
 * checked against RFC 9112's grammar before the parser sees them (framing.h);
 * after ERROR nothing more may be fed: answer error_status and close.
 */
size_t tycho_http_parse(struct tycho_http *h, struct tycho_req *r, const char *data, size_t len);

/* "OK", "Not Found", ... for a status code; "Unknown" for codes without one. */
const char *tycho_http_reason(int status);

/*
 * The first line of r's response headers, from byte *at on, whose name is
 * name (any case), or NULL; *at is moved past it and *line_len is its
 * length ("Name: value\r\n"). Worker thread, as r.
 */
const char *tycho_http_find_header(const struct tycho_req *r, size_t *at, const char *name,
                                   size_t name_len, size_t *line_len);

/*
 * Appends "name: value\r\n" to r's response headers, as given (the caller
 * checked them). TYCHO_OK, or TYCHO_ERR when out of memory.
 */
int tycho_http_add_header(struct tycho_req *r, const char *name, size_t name_len,
                          const char *value, size_t value_len);

/* Removes every line of r's response headers named name (any case). */
void tycho_http_remove_header(struct tycho_req *r, const char *name, size_t name_len);

/*
 * Appends r's response to out: status line, Server, Date (date_line is a whole
 * "Date: ...\r\n" line), Content-Length, Connection when needed, the handler's
 * headers, then the body (none for HEAD). keep_alive says whether the
 * connection stays open. TYCHO_OK or TYCHO_ERR (out of memory).
 */
int tycho_http_write_response(struct tycho_buf *out, const struct tycho_req *r,
                              const char *date_line, bool keep_alive);

/*
 * Whether r's response carries body bytes: not for HEAD, nor for a status
 * that has none (1xx, 204, 304). For a file body (TYCHO_RES_FILE) the
 * writer puts only the head; the caller sends the file after it.
 */
bool tycho_http_has_body(const struct tycho_req *r);

/*
 * Appends a response made by the server itself (errors, 404, 405, 503):
 * status, a short text body, extra_headers ("" or whole lines), Connection:
 * close when !keep_alive. with_body false for HEAD.
 */
int tycho_http_write_simple(struct tycho_buf *out, int status, const char *extra_headers,
                            const char *date_line, bool keep_alive, bool with_body);

/*
 * Appends the head of r's streamed response: as tycho_http_write_response's,
 * but with Transfer-Encoding: chunked when chunked, else no length at all
 * (the close ends the body; keep_alive must then be false).
 */
int tycho_http_write_stream_head(struct tycho_buf *out, const struct tycho_req *r,
                                 const char *date_line, bool keep_alive, bool chunked);

/* Appends one chunk of a chunked body (len > 0): its size line, the bytes, CRLF. */
int tycho_http_write_chunk(struct tycho_buf *out, const char *data, size_t len);

/* Appends the last chunk of a chunked body ("0\r\n\r\n": no trailers). */
int tycho_http_write_last_chunk(struct tycho_buf *out);

/* A response with body_len bytes of body of the given Content-Type. */
int tycho_http_write_body(struct tycho_buf *out, int status, const char *content_type,
                          const char *extra_headers, const char *date_line, bool keep_alive,
                          const char *body, size_t body_len, bool with_body);

/* The same with body (NUL-terminated text) instead of the reason phrase. */
int tycho_http_write_text(struct tycho_buf *out, int status, const char *extra_headers,
                          const char *date_line, bool keep_alive, const char *body,
                          bool with_body);

/*
 * Gives r its id: the request's X-Request-Id when it is 1 to 128 of
 * A-Z a-z 0-9 - _ . : (so it cannot forge log lines), else the 16 hex
 * digits of *next (which then advances).
 */
void tycho_req_assign_id(struct tycho_req *r, unsigned long long *next);

/* Whether s is an RFC 9110 token (a valid header name or method): not empty, no separators. */
bool tycho_http_is_token(const char *s, size_t len);

/* Writes "Date: <IMF-fixdate of t>\r\n" into buf (48 bytes suffice). Any thread. */
void tycho_http_date_line(char *buf, size_t len, time_t t);

/*
 * Writes the 503 for a connection that cannot be served (over --max-conns,
 * pools exhausted): Retry-After: 1, Connection: close. Returns its length
 * (TYCHO_BUSY_BYTES suffice). Any thread.
 */
#define TYCHO_BUSY_BYTES 320
size_t tycho_http_busy(char *buf, size_t len, const char *date_line);

#endif
