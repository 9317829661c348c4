/*
 * framing.h: strict HTTP/1.1 message framing (RFC 9112) in front of
 * http-parser, for requests (request.c) and for the responses of backends
 * (net/wire.c).
 *
 * Debian's http-parser is built without HTTP_PARSER_STRICT: it then takes
 * any byte after a CR as the LF, skips the two bytes after chunk data
 * whatever they are, accepts "HTTX/1.1" and tabs in the target. Any build
 * also accepts bare LF line ends, several spaces in the request line and
 * anything up to the CR in a chunk extension. Where two parties frame the
 * same bytes differently, a request or response can be smuggled. So every
 * byte of a head and of chunked framing is first checked here, and only
 * bytes that passed are given to the parser: a
 * head's grammar (start line, field lines, CRLF line ends, no folding) and a
 * chunked body's (chunk-size, extensions, CRLF after the data, last chunk,
 * trailers). What the parser checks itself (methods, Content-Length digits,
 * the body bytes of a Content-Length body) is not checked again, and body
 * data is skipped by count, never scanned: the cost is one pass over the head.
 * docs/http.md lists each leniency and what answers it.
 *
 * One struct tycho_framing per connection (client or backend); it belongs to
 * the thread that owns that connection. No allocation; nothing to dispose.
 */
#ifndef TYCHO_FRAMING_H
#define TYCHO_FRAMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_parser;
struct http_parser_settings;

/* Which start line a head begins with. */
enum tycho_framing_kind {
    TYCHO_FRAMING_REQUEST,   /* method SP request-target SP HTTP/d.d CRLF */
    TYCHO_FRAMING_RESPONSE   /* HTTP/d.d SP 3DIGIT [SP reason] CRLF */
};

/* One message's framing check, fed the same bytes as the parser. Fields are private. */
struct tycho_framing {
    uint64_t _chunk_left;      /* data bytes of the current chunk still to come */
    unsigned _fields;          /* field lines begun in the head (or trailers) so far */
    unsigned _max_head;        /* with _skip: the parser's head limit (max header size) */
    unsigned char _state;      /* where in the grammar the next byte is */
    unsigned char _index;      /* position within a fixed token ("HTTP/1.1", a status) */
    unsigned char _kind;       /* an enum tycho_framing_kind */
    bool _gated;               /* bytes go through the check (head, chunked body) */
    bool _chunked;             /* the check is in a chunked body (or its trailers) */
    bool _bad;                 /* a byte broke the grammar: nothing more is parsed */
    bool _skip;                /* a request head's fields the parser ignores skip it */
    bool _skipping;            /* the bytes being checked are of such a field line */
    bool _whole;               /* the head is being checked whole (skips however short) */
};

/*
 * Starts f for a connection's first message of the given kind. Lengths are
 * not bounded here: http-parser counts the head, each chunk-size line and
 * the trailers against its header limit. Any thread (the connection's).
 */
void tycho_framing_init(struct tycho_framing *f, enum tycho_framing_kind kind);

/* After a message: the next bytes begin a new head. Call it from on_message_complete. */
void tycho_framing_next(struct tycho_framing *f);

/*
 * Feeds data to the parser p (with settings s) through the check: bytes are
 * checked up to the end of the head or of the chunked body, and the parser
 * gets only those that passed. After the head, the parser's own result says
 * how the body is framed: chunked bodies are checked too, Content-Length
 * bodies go to the parser as they are. Returns how many bytes the parser took
 * (it stops early when a callback pauses or fails it, and, for a request,
 * right after a head that a body follows, so that the caller can decide how
 * to read that body before any of it is parsed). When the check refused
 * a byte, tycho_framing_refused(f) is true and the parser stopped before it:
 * the message is bad (answer 400 or drop the backend connection) and no byte
 * after it may be parsed.
 */
size_t tycho_framing_execute(struct tycho_framing *f, struct http_parser *p,
                             const struct http_parser_settings *s, const char *data, size_t len);

/*
 * Where a request's head goes besides the parser: head(arg, at, len) gets
 * every byte of the head (from the first byte after the previous message,
 * blank lines included, to the LF of the empty line that ends it) once it has
 * passed the check and before the parser sees it, in order, in as many pieces
 * as it arrives in; chunked trailers are not given. A non-zero return stops
 * the message as a refused byte would (the caller says why).
 */
struct tycho_framing_sink {
    int (*head)(void *arg, const char *at, size_t len);
    void *arg;
};

/* tycho_framing_execute for a request's bytes, giving the head to sink as well. */
size_t tycho_framing_execute_request(struct tycho_framing *f, struct http_parser *p,
                                     const struct http_parser_settings *s,
                                     const struct tycho_framing_sink *sink, const char *data,
                                     size_t len);

/*
 * Lets the bytes of an origin-form target after its '/' (http-parser takes any
 * there, and reads none), and the field lines of f's request heads that
 * http-parser would only pass on (every field whose name does not begin with Connection,
 * Proxy-Connection, Content-Length, Transfer-Encoding or Upgrade, any case:
 * the names it matches, the only fields that change its state) go to the
 * sink alone, not through the parser, whose cost is per byte. A line is
 * skipped only when its whole name is in the bytes at hand; any other goes
 * to the parser, which then sees a head of whole lines that frames the
 * request as the full head does, with the target "/". Skipped bytes still count against the
 * parser's head limit, max_head_bytes (what http_parser_set_max_header_size
 * was given): past it the parser fails with HPE_HEADER_OVERFLOW as it would
 * have. A head whole in one call's bytes, from its first byte, is checked
 * first and the parser then gets what it reads of it copied together, in one
 * call, so every other field line is skipped, however short (the parser
 * sees the same bytes the piecewise way would give it). For a connection's
 * requests, after tycho_framing_init.
 */
void tycho_framing_skip_fields(struct tycho_framing *f, unsigned max_head_bytes);

/*
 * Field lines begun in the current head so far (a field name's first byte
 * was checked), whether or not the head is complete.
 */
unsigned tycho_framing_fields(const struct tycho_framing *f);

/* Whether the check refused a byte of the current message. */
bool tycho_framing_refused(const struct tycho_framing *f);

/* What a Transfer-Encoding field list says about the body. */
enum tycho_te {
    TYCHO_TE_NONE,      /* no Transfer-Encoding field */
    TYCHO_TE_CHUNKED,   /* exactly "chunked": the only coding we decode */
    TYCHO_TE_UNKNOWN,   /* chunked last, after a coding we do not decode (501 for a request) */
    TYCHO_TE_BAD        /* chunked not last, twice, or an empty list (400: the length is unknown) */
};

/* The state of a Transfer-Encoding list read field by field. */
struct tycho_te_list {
    unsigned codings;   /* non-empty elements so far */
    unsigned chunked;   /* of which "chunked" */
    bool last_chunked;  /* the latest element was "chunked" */
    bool seen;          /* a Transfer-Encoding field was given */
};

/* Adds one Transfer-Encoding field value (a comma-separated list) to te. */
void tycho_te_add(struct tycho_te_list *te, const char *value, size_t len);

/* The verdict on everything added. */
enum tycho_te tycho_te_verdict(const struct tycho_te_list *te);

/*
 * The checks of a response head that http-parser has read (call it from
 * on_headers_complete, with te holding every Transfer-Encoding field):
 * NULL when the response can be read safely, else why not, as a static
 * string: a version other than 1.x, a status code outside 100-599 (RFC 9110
 * 15; one under 100 would be read as having no body), or a Transfer-Encoding
 * that is not exactly chunked on HTTP/1.1, or that http-parser reads
 * otherwise (it takes any field whose name begins "Transfer-Encoding" for
 * one, and finds no "chunked" behind an empty list element or before a
 * trailing tab; it would then read the body to the close).
 */
const char *tycho_framing_response_error(const struct http_parser *p,
                                         const struct tycho_te_list *te);

#endif
