/*
 * oracle.h: a strict HTTP/1.1 request-framing oracle for the tests (the differential fuzz target
 * and tests/unit/test_oracle.c). It is NOT the server's code and was written without reading
 * it: it gets the whole byte stream at once and walks it with a cursor, one recursive-descent
 * function per rule, where the server parses incrementally. Header-only C11, libc only.
 *
 * Grammar (strict: anything else is a reject; RFC 9112 sections, tokens from RFC 9110 5.6):
 *   stream         = *( *CRLF request ) *CRLF             ; 2.2: empty lines before a request
 *   request        = request-line *( field-line CRLF ) CRLF [ message-body ]      ; 2.1
 *   request-line   = 1*tchar SP 1*( %x21-7E / %x80-FF ) SP "HTTP/" DIGIT "." DIGIT CRLF ; 3
 *                    (obs-text in the target: raw UTF-8 paths; docs/http.md says why)
 *   field-line     = 1*tchar ":" *( SP / HTAB / %x21-7E / %x80-FF )   ; 5, 5.2: no obs-fold
 *   Body length (6.1, 6.3): a Transfer-Encoding field with HTTP/1.0 or with Content-Length is
 *   a reject; the Transfer-Encoding values joined as one list (OWS-trimmed, empty elements
 *   ignored) must be exactly "chunked", any case. Else one Content-Length field of 1*DIGIT
 *   (<= 2^53) gives that many body bytes; several fields or another value is a reject. Else
 *   there is no body.
 *   chunked-body   = *chunk last-chunk trailer-section CRLF                        ; 7.1
 *   chunk          = chunk-size [ chunk-ext ] CRLF chunk-data CRLF ; size 1*HEXDIG, > 0, <= 2^53
 *   last-chunk     = 1*"0" [ chunk-ext ] CRLF
 *   chunk-ext      = *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] ) ; 7.1.1
 *   trailer-section = *( field-line CRLF )                    ; 7.1.2, the header's field rules
 *
 * A reject names the first byte after which no continuation could be valid, except for the
 * body-length rules: those are decided once the header section's final CRLF is present and
 * name the start of the offending field line. No size limits (lines, fields) are applied.
 * oracle_frame_response (at the end) applies the same rules to a backend's response(s).
 */
#ifndef TYCHO_FUZZ_ORACLE_H
#define TYCHO_FUZZ_ORACLE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum oracle_verdict { ORACLE_END = 0, ORACLE_REJECT = 1 };

/* One grammar step: matched, ran out of data (valid so far), or hit a byte never valid. */
enum oracle_step { ORACLE_OK, ORACLE_MORE, ORACLE_BAD };

#define ORACLE_MAX_LENGTH ((uint64_t)1 << 53)

#define ORACLE_TRY(expr)                                                                      \
    do {                                                                                      \
        enum oracle_step oracle_s_ = (expr);                                                  \
        if (oracle_s_ != ORACLE_OK)                                                           \
            return oracle_s_;                                                                 \
    } while (0)

struct oracle_cursor {
    const unsigned char *d;
    size_t len;
    size_t pos;
    size_t bad; /* the offending offset when a step returned ORACLE_BAD */
};

/* What the header section says about the body (offsets are field-line starts). */
struct oracle_framing {
    size_t te_count, te_first, te_elems, te_bad_line;
    int te_invalid; /* the joined list already has a second or a non-"chunked" element */
    size_t cl_count, cl_first, cl_second;
    int cl_invalid;
    uint64_t cl_value;
};

static int oracle_is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int oracle_is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* SP / HTAB / VCHAR / obs-text: field-value bytes, also qdtext plus '"' and '\'. */
static int oracle_is_field_byte(unsigned char c)
{
    return c == ' ' || c == '\t' || (c >= 0x21 && c != 0x7f);
}

static int oracle_hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static unsigned char oracle_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

/* p[0..n) equals the lower-case literal, ASCII case-insensitively. */
static int oracle_ieq(const unsigned char *p, size_t n, const char *lit)
{
    if (n != strlen(lit))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (oracle_lower(p[i]) != (unsigned char)lit[i])
            return 0;
    return 1;
}

static enum oracle_step oracle_fail(struct oracle_cursor *c)
{
    c->bad = c->pos;
    return ORACLE_BAD;
}

/* One byte in lo..hi. */
static enum oracle_step oracle_range(struct oracle_cursor *c, unsigned char lo, unsigned char hi)
{
    if (c->pos >= c->len)
        return ORACLE_MORE;
    if (c->d[c->pos] < lo || c->d[c->pos] > hi)
        return oracle_fail(c);
    c->pos++;
    return ORACLE_OK;
}

static enum oracle_step oracle_expect(struct oracle_cursor *c, unsigned char want)
{
    return oracle_range(c, want, want);
}

static enum oracle_step oracle_crlf(struct oracle_cursor *c)
{
    ORACLE_TRY(oracle_expect(c, '\r'));
    return oracle_expect(c, '\n');
}

/* 1*tchar. Stops at the first other byte (or the end: every caller needs a byte after it). */
static enum oracle_step oracle_token(struct oracle_cursor *c)
{
    if (c->pos >= c->len)
        return ORACLE_MORE;
    if (!oracle_is_tchar(c->d[c->pos]))
        return oracle_fail(c);
    while (c->pos < c->len && oracle_is_tchar(c->d[c->pos]))
        c->pos++;
    return ORACLE_OK;
}

/* OWS; returns how many bytes it skipped. */
static size_t oracle_ows(struct oracle_cursor *c)
{
    size_t start = c->pos;

    while (c->pos < c->len && oracle_is_ows(c->d[c->pos]))
        c->pos++;
    return c->pos - start;
}

/* request-line; *http10 tells whether the version is exactly HTTP/1.0. */
static enum oracle_step oracle_request_line(struct oracle_cursor *c, int *http10)
{
    static const char name[] = "HTTP/";

    ORACLE_TRY(oracle_token(c));
    ORACLE_TRY(oracle_expect(c, ' '));
    /* request-target: visible ASCII and obs-text (raw UTF-8 paths), Tycho's documented choice. */
    ORACLE_TRY(oracle_range(c, 0x21, 0xff));
    if (c->d[c->pos - 1] == 0x7f)
        return c->pos--, oracle_fail(c);
    while (c->pos < c->len && c->d[c->pos] >= 0x21 && c->d[c->pos] != 0x7f)
        c->pos++;
    ORACLE_TRY(oracle_expect(c, ' '));
    for (size_t i = 0; i < sizeof name - 1; i++)
        ORACLE_TRY(oracle_expect(c, (unsigned char)name[i]));
    ORACLE_TRY(oracle_range(c, '0', '9'));
    ORACLE_TRY(oracle_expect(c, '.'));
    ORACLE_TRY(oracle_range(c, '0', '9'));
    *http10 = c->d[c->pos - 3] == '1' && c->d[c->pos - 1] == '0';
    return oracle_crlf(c);
}

/* Trims OWS from both ends of p[0..*n). */
static const unsigned char *oracle_trim(const unsigned char *p, size_t *n)
{
    while (*n > 0 && oracle_is_ows(p[0])) {
        p++;
        (*n)--;
    }
    while (*n > 0 && oracle_is_ows(p[*n - 1]))
        (*n)--;
    return p;
}

/* Notes one complete field line (name, value untrimmed) starting at `line` for body framing. */
static void oracle_note_field(struct oracle_framing *f, size_t line, const unsigned char *name,
                              size_t name_len, const unsigned char *value, size_t value_len)
{
    if (oracle_ieq(name, name_len, "content-length")) {
        uint64_t v = 0;
        const unsigned char *p = oracle_trim(value, &value_len);

        if (f->cl_count++ == 0)
            f->cl_first = line;
        else if (f->cl_count == 2)
            f->cl_second = line;
        if (value_len == 0)
            f->cl_invalid = 1;
        for (size_t i = 0; i < value_len && !f->cl_invalid; i++) {
            if (p[i] < '0' || p[i] > '9')
                f->cl_invalid = 1;
            else if ((v = v * 10 + (uint64_t)(p[i] - '0')) > ORACLE_MAX_LENGTH)
                f->cl_invalid = 1; /* v <= 2^53 before the step: no overflow */
        }
        f->cl_value = v;
    } else if (oracle_ieq(name, name_len, "transfer-encoding")) {
        size_t i = 0;

        if (f->te_count++ == 0)
            f->te_first = line;
        while (i <= value_len) { /* each comma-separated element, the last one included */
            size_t start = i, n;
            const unsigned char *elem;

            while (i < value_len && value[i] != ',')
                i++;
            n = i - start;
            elem = oracle_trim(value + start, &n);
            i++;
            if (n == 0)
                continue;
            f->te_elems++;
            if (!f->te_invalid && (f->te_elems > 1 || !oracle_ieq(elem, n, "chunked"))) {
                f->te_invalid = 1;
                f->te_bad_line = line;
            }
        }
    }
}

/* *( field-line CRLF ) CRLF; f (may be NULL, for trailers) gets each field. */
static enum oracle_step oracle_field_section(struct oracle_cursor *c, struct oracle_framing *f)
{
    for (;;) {
        size_t line = c->pos, value;

        if (c->pos >= c->len)
            return ORACLE_MORE;
        if (c->d[c->pos] == '\r')
            return oracle_crlf(c); /* the empty line ends the section */
        /* A line starting with SP or HTAB (obs-fold) fails here: they are not tchars. */
        ORACLE_TRY(oracle_token(c));
        ORACLE_TRY(oracle_expect(c, ':'));
        value = c->pos;
        while (c->pos < c->len && oracle_is_field_byte(c->d[c->pos]))
            c->pos++;
        ORACLE_TRY(oracle_crlf(c));
        if (f)
            oracle_note_field(f, line, c->d + line, value - 1 - line, c->d + value,
                              c->pos - 2 - value);
    }
}

/* quoted-string (RFC 9110 5.6.4), at its opening DQUOTE. */
static enum oracle_step oracle_quoted_string(struct oracle_cursor *c)
{
    ORACLE_TRY(oracle_expect(c, '"'));
    for (;;) {
        unsigned char b;

        if (c->pos >= c->len)
            return ORACLE_MORE;
        b = c->d[c->pos];
        if (b == '"') {
            c->pos++;
            return ORACLE_OK;
        }
        if (b == '\\') {
            c->pos++;
            if (c->pos >= c->len)
                return ORACLE_MORE;
            b = c->d[c->pos];
        }
        if (!oracle_is_field_byte(b)) /* qdtext and the quoted-pair byte: the same set */
            return oracle_fail(c);
        c->pos++;
    }
}

/* chunk-ext, up to (not including) the CR that ends the chunk line. */
static enum oracle_step oracle_chunk_ext(struct oracle_cursor *c)
{
    for (;;) {
        size_t ws = oracle_ows(c), after_name;

        if (c->pos >= c->len)
            return ORACLE_MORE;
        if (c->d[c->pos] == '\r' && ws == 0)
            return ORACLE_OK;
        ORACLE_TRY(oracle_expect(c, ';')); /* BWS must be followed by ";" */
        oracle_ows(c);
        ORACLE_TRY(oracle_token(c));
        after_name = c->pos;
        oracle_ows(c);
        if (c->pos >= c->len)
            return ORACLE_MORE;
        if (c->d[c->pos] != '=') {
            c->pos = after_name; /* no value: the loop wants ";" or the CR next */
            continue;
        }
        c->pos++;
        oracle_ows(c);
        if (c->pos >= c->len)
            return ORACLE_MORE;
        if (c->d[c->pos] == '"')
            ORACLE_TRY(oracle_quoted_string(c));
        else
            ORACLE_TRY(oracle_token(c));
    }
}

/* chunk-size: 1*HEXDIG whose value stays <= 2^53 (rejected at the digit that exceeds it). */
static enum oracle_step oracle_chunk_size(struct oracle_cursor *c, uint64_t *size)
{
    uint64_t v = 0;

    if (c->pos >= c->len)
        return ORACLE_MORE;
    if (oracle_hex_value(c->d[c->pos]) < 0)
        return oracle_fail(c);
    while (c->pos < c->len && oracle_hex_value(c->d[c->pos]) >= 0) {
        v = v * 16 + (uint64_t)oracle_hex_value(c->d[c->pos]); /* v <= 2^53: no overflow */
        if (v > ORACLE_MAX_LENGTH)
            return oracle_fail(c);
        c->pos++;
    }
    *size = v;
    return ORACLE_OK;
}

/* chunked-body = *chunk last-chunk trailer-section CRLF */
static enum oracle_step oracle_chunked_body(struct oracle_cursor *c)
{
    for (;;) {
        uint64_t size;

        ORACLE_TRY(oracle_chunk_size(c, &size));
        ORACLE_TRY(oracle_chunk_ext(c));
        ORACLE_TRY(oracle_crlf(c));
        if (size == 0)
            return oracle_field_section(c, NULL); /* trailers and the final CRLF */
        if (size > c->len - c->pos)
            return ORACLE_MORE;
        c->pos += (size_t)size;
        ORACLE_TRY(oracle_crlf(c));
    }
}

/* How the body is framed once the header section is complete (RFC 9112 6.1, 6.3). */
enum oracle_body { ORACLE_BODY_NONE, ORACLE_BODY_LENGTH, ORACLE_BODY_CHUNKED };

/* Applies the body-length rules to a complete header section: ORACLE_BAD (c->bad = the start
   of the offending field line) or ORACLE_OK with *body (the length is f->cl_value). */
static enum oracle_step oracle_body_rules(struct oracle_cursor *c, const struct oracle_framing *f,
                                          int http10, enum oracle_body *body)
{
    if (f->te_count > 0) {
        if (http10) {
            c->bad = f->te_first;
            return ORACLE_BAD;
        }
        if (f->cl_count > 0) {
            c->bad = f->te_first > f->cl_first ? f->te_first : f->cl_first;
            return ORACLE_BAD;
        }
        if (f->te_invalid || f->te_elems != 1) {
            c->bad = f->te_invalid ? f->te_bad_line : f->te_first;
            return ORACLE_BAD;
        }
        *body = ORACLE_BODY_CHUNKED;
        return ORACLE_OK;
    }
    if (f->cl_count > 1 || f->cl_invalid) {
        c->bad = f->cl_count > 1 ? f->cl_second : f->cl_first;
        return ORACLE_BAD;
    }
    *body = f->cl_count == 1 ? ORACLE_BODY_LENGTH : ORACLE_BODY_NONE;
    return ORACLE_OK;
}

/* One request, from its first byte (leading empty lines already skipped). */
static enum oracle_step oracle_request(struct oracle_cursor *c)
{
    struct oracle_framing f;
    enum oracle_body body;
    int http10 = 0;

    memset(&f, 0, sizeof f);
    ORACLE_TRY(oracle_request_line(c, &http10));
    ORACLE_TRY(oracle_field_section(c, &f));
    ORACLE_TRY(oracle_body_rules(c, &f, http10, &body));
    if (body == ORACLE_BODY_CHUNKED)
        return oracle_chunked_body(c);
    if (body == ORACLE_BODY_LENGTH) {
        if (f.cl_value > c->len - c->pos)
            return ORACLE_MORE;
        c->pos += (size_t)f.cl_value;
    }
    return ORACLE_OK;
}

/* Walks data[0..len) as a stream of pipelined HTTP/1.1 requests. Stores in ends[] the offset
   just past each complete, valid request (at most max_ends; counting goes on past that), sets
   *n_complete. Returns ORACLE_REJECT when request number *n_complete (0-based) is invalid at a
   byte that can never become valid, ORACLE_END when the data ran out (the last request, if any,
   is an incomplete but so far valid prefix) or ended exactly after a complete request.
   *bad_at (may be NULL) gets the offset of the offending byte on REJECT. */
static enum oracle_verdict oracle_frame(const unsigned char *data, size_t len, size_t *ends,
                                        size_t max_ends, size_t *n_complete, size_t *bad_at)
{
    struct oracle_cursor c = { data, len, 0, 0 };
    enum oracle_step s = ORACLE_OK;
    size_t n = 0;

    for (;;) {
        while (c.pos < c.len && c.d[c.pos] == '\r' && (s = oracle_crlf(&c)) == ORACLE_OK)
            ;
        if (s == ORACLE_OK && c.pos < c.len)
            s = oracle_request(&c);
        else if (s == ORACLE_OK)
            s = ORACLE_MORE; /* nothing left: the stream ended between requests */
        if (s != ORACLE_OK)
            break;
        if (ends && n < max_ends)
            ends[n] = c.pos;
        n++;
    }
    *n_complete = n;
    if (s == ORACLE_BAD) {
        if (bad_at)
            *bad_at = c.bad;
        return ORACLE_REJECT;
    }
    return ORACLE_END;
}

/*
 * Response framing, for the bytes a backend sends back for ONE request (RFC 9112 4, 6.3):
 *   exchange       = *interim final                   ; no empty lines before a status line
 *   interim        = status-line *( field-line CRLF ) CRLF   ; 1xx except 101: never a body
 *   status-line    = "HTTP/1." DIGIT SP status-code [ SP reason-phrase ] CRLF
 *   status-code    = %x31-35 2DIGIT                   ; 100..599; 101 is a reject
 *   reason-phrase  = *( HTAB / SP / %x21-7E / %x80-FF )
 * The final response's body: none after HEAD or for 204 / 304 (framing fields are ignored);
 * else the request's body-length rules (chunked, or one Content-Length); else the body runs to
 * the end of the connection. Interim responses' framing fields are ignored.
 */
enum oracle_response {
    ORACLE_RES_INCOMPLETE,
    ORACLE_RES_COMPLETE,
    ORACLE_RES_EOF_BODY,
    ORACLE_RES_REJECT
};

/* status-line; *code gets the status code, *http10 whether the version is exactly HTTP/1.0.
   101 is rejected at its last digit; a code outside 100..599 at its first digit. */
static enum oracle_step oracle_status_line(struct oracle_cursor *c, int *code, int *http10)
{
    static const char name[] = "HTTP/1.";

    for (size_t i = 0; i < sizeof name - 1; i++)
        ORACLE_TRY(oracle_expect(c, (unsigned char)name[i]));
    ORACLE_TRY(oracle_range(c, '0', '9'));
    *http10 = c->d[c->pos - 1] == '0';
    ORACLE_TRY(oracle_expect(c, ' '));
    ORACLE_TRY(oracle_range(c, '1', '5'));
    ORACLE_TRY(oracle_range(c, '0', '9'));
    ORACLE_TRY(oracle_range(c, '0', '9'));
    *code = (c->d[c->pos - 3] - '0') * 100 + (c->d[c->pos - 2] - '0') * 10 +
            (c->d[c->pos - 1] - '0');
    if (*code == 101)
        return c->pos--, oracle_fail(c);
    if (c->pos < c->len && c->d[c->pos] == ' ') {
        c->pos++;
        while (c->pos < c->len && oracle_is_field_byte(c->d[c->pos]))
            c->pos++;
    }
    return oracle_crlf(c);
}

/* Walks data[0..len) as the response(s) to ONE request (head_request: the request was HEAD).
   Interim 1xx responses (100..199 except 101) are skipped: another response follows them.
   COMPLETE: the final response ends at *end (bytes after it are not its). EOF_BODY: the final
   response's body runs to the end of the connection (no length). INCOMPLETE: the data ran out
   in a response that could still become valid. REJECT: a byte or a header makes it invalid
   (*end gets the offending offset when known, else the start of the offending response).
   Also: on EOF_BODY *end is where the body starts (the end of the head); on INCOMPLETE it is the
   start of the response still in progress (len when the data ends right after an interim). A
   body-length reject names the start of the offending field line, as oracle_frame does. */
static enum oracle_response oracle_frame_response(const unsigned char *data, size_t len,
                                                  int head_request, size_t *end)
{
    struct oracle_cursor c = { data, len, 0, 0 };

    for (;;) {
        struct oracle_framing f;
        enum oracle_body body = ORACLE_BODY_NONE;
        enum oracle_step s;
        size_t start = c.pos;
        int code = 0, http10 = 0;

        memset(&f, 0, sizeof f);
        s = oracle_status_line(&c, &code, &http10);
        if (s == ORACLE_OK)
            s = oracle_field_section(&c, &f);
        if (s == ORACLE_OK && code < 200)
            continue; /* interim: the next response starts right after its head */
        if (s == ORACLE_OK && (head_request || code == 204 || code == 304)) {
            *end = c.pos;
            return ORACLE_RES_COMPLETE;
        }
        if (s == ORACLE_OK)
            s = oracle_body_rules(&c, &f, http10, &body);
        if (s == ORACLE_OK && body == ORACLE_BODY_NONE) {
            *end = c.pos;
            return ORACLE_RES_EOF_BODY;
        }
        if (s == ORACLE_OK && body == ORACLE_BODY_CHUNKED)
            s = oracle_chunked_body(&c);
        else if (s == ORACLE_OK && f.cl_value > c.len - c.pos)
            s = ORACLE_MORE;
        else if (s == ORACLE_OK)
            c.pos += (size_t)f.cl_value;
        if (s == ORACLE_MORE) {
            *end = start;
            return ORACLE_RES_INCOMPLETE;
        }
        if (s == ORACLE_BAD) {
            *end = c.bad;
            return ORACLE_RES_REJECT;
        }
        *end = c.pos;
        return ORACLE_RES_COMPLETE;
    }
}

#endif
