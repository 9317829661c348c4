/*
 * framing.c: the strict HTTP/1.1 framing check in front of http-parser (see
 * framing.h). Runs on the thread that owns the connection; no allocation.
 *
 * The check is a byte-level state machine over the grammar of RFC 9112: the
 * start line (2.2, 3, 4), field lines (5), line ends (2.2: CRLF only) and
 * chunked framing (7.1). It keeps its place across reads, so a message may
 * arrive split anywhere. Runs of name, value and target bytes are skipped in
 * tight loops over a class table; chunk data is skipped by count.
 */
#include "http/framing.h"

#include <http_parser.h>
#include <string.h>
#include <strings.h>

/*
 * Character classes (RFC 9110 5.6.2 tchar, 5.5 field-vchar, 5.6.4 qdtext).
 * The tables use GNU range designators ([a ... b]), which gcc and clang take
 * in -std=c11 (we build without -pedantic): written out, 256 entries would
 * hide which bytes are in a class.
 */
enum {
    C_TCHAR = 0x01,  /* token character */
    C_VCHAR = 0x02,  /* visible ASCII, %x21-7E */
    C_OBS = 0x04,    /* obs-text, %x80-FF */
    C_WS = 0x08,     /* SP or HTAB */
    C_HEX = 0x10,    /* HEXDIG */
    C_DIGIT = 0x20,  /* DIGIT */
    C_QDTEXT = 0x40  /* what a quoted-string holds unescaped */
};
#define C_TEXT (C_VCHAR | C_OBS | C_WS) /* field-value and reason-phrase bytes */
/*
 * request-target bytes: visible ASCII, and obs-text, which RFC 3986 would
 * have percent-encoded but clients send raw and routes may hold (UTF-8
 * paths); no such byte can end the target or the line, so none moves a
 * boundary. Space, controls and DEL are refused.
 */
#define C_TARGET (C_VCHAR | C_OBS)

#define TVQ (C_TCHAR | C_VCHAR | C_QDTEXT)
#define VQ (C_VCHAR | C_QDTEXT)
static const unsigned char cls[256] = {
    ['\t'] = C_WS | C_QDTEXT,
    [' '] = C_WS | C_QDTEXT,
    ['!'] = TVQ,
    ['"'] = C_VCHAR,
    ['#' ... '\''] = TVQ,
    ['('] = VQ,
    [')'] = VQ,
    ['*'] = TVQ,
    ['+'] = TVQ,
    [','] = VQ,
    ['-'] = TVQ,
    ['.'] = TVQ,
    ['/'] = VQ,
    ['0' ... '9'] = TVQ | C_HEX | C_DIGIT,
    [':' ... '@'] = VQ,
    ['A' ... 'F'] = TVQ | C_HEX,
    ['G' ... 'Z'] = TVQ,
    ['['] = VQ,
    ['\\'] = C_VCHAR,
    [']'] = VQ,
    ['^' ... '`'] = TVQ,
    ['a' ... 'f'] = TVQ | C_HEX,
    ['g' ... 'z'] = TVQ,
    ['{'] = VQ,
    ['|'] = TVQ,
    ['}'] = VQ,
    ['~'] = TVQ,
    [0x80 ... 0xff] = C_OBS | C_QDTEXT,
};

/* Where in the grammar the next byte is. */
enum state {
    ST_START,            /* a request line, or the CRLF of an empty line before it */
    ST_START_LF,         /* the LF of such an empty line */
    ST_METHOD,           /* method = token, then SP */
    ST_TARGET_FIRST,     /* the target's first byte (a second SP is refused here) */
    ST_TARGET,           /* visible ASCII, then SP */
    ST_REQ_VERSION,      /* "HTTP/d.d" CR, matched by _index */
    ST_RES_START,        /* "HTTP/d.d SP ddd", matched by _index */
    ST_STATUS_END,       /* SP reason, or CR */
    ST_REASON,           /* reason-phrase bytes, then CR */
    ST_LINE_LF,          /* the LF after a start line or field line */
    ST_FIELD_START,      /* a field name, or the CR of the empty line */
    ST_NAME,             /* token bytes, then ':' (no space before it) */
    ST_VALUE,            /* field-value bytes, then CR */
    ST_END_LF,           /* the LF of the empty line that ends the head or trailers */
    ST_CHUNK_SIZE_FIRST, /* a chunk-size's first HEXDIG */
    ST_CHUNK_SIZE,       /* HEXDIG, then ';' or BWS, or CR */
    ST_EXT_BWS,          /* BWS that must lead to ';' */
    ST_EXT_PRE_NAME,     /* BWS, then an extension name */
    ST_EXT_NAME,         /* token bytes */
    ST_EXT_AFTER_NAME,   /* BWS after a name: '=' or ';' must follow */
    ST_EXT_PRE_VALUE,    /* BWS, then a token or a quoted-string */
    ST_EXT_TOKEN,        /* token bytes */
    ST_EXT_QUOTED,       /* inside a quoted-string */
    ST_EXT_QUOTED_PAIR,  /* the byte after a backslash */
    ST_EXT_AFTER_QUOTED, /* after the closing quote: ';', BWS or CR */
    ST_CHUNK_LF,         /* the LF of the chunk-size line */
    ST_DATA,             /* chunk data, skipped by count */
    ST_DATA_CR,          /* the CRLF after chunk data */
    ST_DATA_LF,
    ST_DONE              /* the head or the body ended; the caller decides what follows */
};

/* What one scan found. */
enum scan_result {
    SCAN_MORE,      /* all of it is valid so far */
    SCAN_END,       /* the head or chunked body ends at the byte before *valid */
    SCAN_BAD,       /* d[*valid] breaks the grammar */
    SCAN_SKIP,      /* d[*valid] begins field lines to skip (_skipping is set) */
    SCAN_RESUME     /* d[*valid] begins a line for the parser after skipped ones */
};

/* The fixed parts of start lines: '#' stands for a DIGIT. */
static const char request_version[] = "HTTP/#.#\r";
static const char response_start[] = "HTTP/#.# ###";

void tycho_framing_init(struct tycho_framing *f, enum tycho_framing_kind kind)
{
    f->_kind = (unsigned char)kind;
    f->_bad = false;
    f->_skip = false;
    f->_max_head = 0;
    tycho_framing_next(f);
}

void tycho_framing_next(struct tycho_framing *f)
{
    f->_state = f->_kind == TYCHO_FRAMING_REQUEST ? ST_START : ST_RES_START;
    f->_index = 0;
    f->_gated = true;
    f->_chunked = false;
    f->_chunk_left = 0;
    f->_fields = 0;
    f->_skipping = false;
    f->_whole = false;
}

void tycho_framing_skip_fields(struct tycho_framing *f, unsigned max_head_bytes)
{
    f->_skip = f->_kind == TYCHO_FRAMING_REQUEST;
    f->_max_head = max_head_bytes;
}

unsigned tycho_framing_fields(const struct tycho_framing *f)
{
    return f->_fields;
}

bool tycho_framing_refused(const struct tycho_framing *f)
{
    return f->_bad;
}

/* Matches c against position *index of a fixed pattern; true once it is whole. */
static bool match_fixed(const char *pattern, unsigned char *index, unsigned char c, bool *bad)
{
    char want = pattern[*index];

    if (want == '#' ? !(cls[c] & C_DIGIT) : c != (unsigned char)want) {
        *bad = true;
        return false;
    }
    return pattern[++*index] == '\0';
}

/* The chunk-size line's next state after a token, a quoted value or the size. */
static int after_ext_item(unsigned char c)
{
    if (c == ';')
        return ST_EXT_PRE_NAME;
    if (c == '\r')
        return ST_CHUNK_LF;
    if (cls[c] & C_WS)
        return ST_EXT_BWS;
    return -1;
}

/* Whether name begins with lower (letters and '-'), in any case: name holds token bytes. */
static inline bool name_begins(const unsigned char *name, size_t len, const char *lower,
                               size_t lower_len)
{
    if (len < lower_len)
        return false;
    for (size_t i = 0; i < lower_len; i++)
        if ((name[i] | 0x20) != (unsigned char)lower[i])
            return false;             /* (no token byte but a letter ORs into a letter or '-') */
    return true;
}

/*
 * Whether http-parser matches a field name (n bytes) as one that changes its
 * state. Its name matching (http_parser.c 2.9, s_header_field) starts on c,
 * p, t or u and ends in a matched state only for these names, whole: one
 * byte more and the field is general; but Transfer-Encoding sets a flag as
 * soon as its last byte matches, so any name that begins with it counts too.
 */
static bool parser_field(const unsigned char *name, size_t n)
{
    switch (name[0] | 0x20) {
    case 'c':
        return (n == 10 && name_begins(name, n, "connection", 10)) ||
               (n == 14 && name_begins(name, n, "content-length", 14));
    case 'p':
        return n == 16 && name_begins(name, n, "proxy-connection", 16);
    case 't':
        return name_begins(name, n, "transfer-encoding", 17);
    case 'u':
        return n == 7 && name_begins(name, n, "upgrade", 7);
    default:
        return false;
    }
}

/*
 * Whether skipping begins to pay at the line d[0..len) begins: the parser is
 * called once more for the lines after a skipped run, which costs about what
 * it spends on a line of 20 bytes (measured with callgrind); so a run begins
 * only at a line of SKIP_MIN_BYTES (with its CRLF), and goes on over shorter
 * ones.
 */
#define SKIP_MIN_BYTES 16

static bool worth_skipping(const unsigned char *d, size_t len)
{
    return len >= SKIP_MIN_BYTES && !memchr(d, '\n', SKIP_MIN_BYTES - 1);
}

/*
 * An origin-form target ("/" and then any target bytes) is all http-parser
 * reads of the request line's target, and it takes any target bytes after
 * the '/' (http_parser.c 2.9, parse_url_char from s_req_path: each visible
 * ASCII or obs-text byte is a path, query or fragment byte); the glue reads
 * the target from the head's copy. So the parser can be given "/" alone, which
 * pays (it spends a function call per target byte) once TARGET_SKIP_BYTES
 * follow the '/' in the bytes at hand (d[0..len)).
 */
#define TARGET_SKIP_BYTES 8
static bool target_worth_skipping(const unsigned char *d, size_t len)
{
    if (len < TARGET_SKIP_BYTES)
        return false;
    for (size_t i = 0; i < TARGET_SKIP_BYTES; i++)
        if (!(cls[d[i]] & C_TARGET))
            return false;
    return true;
}

/* Skips bytes of class want from d[*i]; false when the data ran out first. */
static inline bool skip_class(const unsigned char *d, size_t len, size_t *i, unsigned want)
{
    while (*i < len && (cls[d[*i]] & want))
        ++*i;
    return *i < len;
}

/*
 * One state's handling of the bytes of the chunk-size line (the size and its
 * extensions, RFC 9112 7.1.1). Returns the next state, or -1 when c is refused.
 */
static int chunk_line_byte(struct tycho_framing *f, int state, unsigned char c)
{
    switch (state) {
    case ST_CHUNK_SIZE:
        if (cls[c] & C_HEX) {
            unsigned digit = cls[c] & C_DIGIT ? c - '0' : (c | 0x20) - 'a' + 10;
            if (f->_chunk_left > (UINT64_MAX >> 4))
                return -1;                /* larger than any body could be */
            f->_chunk_left = f->_chunk_left << 4 | digit;
            return ST_CHUNK_SIZE;
        }
        return after_ext_item(c);
    case ST_EXT_BWS:
        return cls[c] & C_WS ? ST_EXT_BWS : c == ';' ? ST_EXT_PRE_NAME : -1;
    case ST_EXT_PRE_NAME:
        return cls[c] & C_WS ? ST_EXT_PRE_NAME : cls[c] & C_TCHAR ? ST_EXT_NAME : -1;
    case ST_EXT_NAME:
        if (cls[c] & C_TCHAR)
            return ST_EXT_NAME;
        if (c == '=')
            return ST_EXT_PRE_VALUE;
        if (cls[c] & C_WS)
            return ST_EXT_AFTER_NAME;
        return after_ext_item(c);
    case ST_EXT_AFTER_NAME:
        if (cls[c] & C_WS)
            return ST_EXT_AFTER_NAME;
        return c == '=' ? ST_EXT_PRE_VALUE : c == ';' ? ST_EXT_PRE_NAME : -1;
    case ST_EXT_PRE_VALUE:
        if (cls[c] & C_WS)
            return ST_EXT_PRE_VALUE;
        return c == '"' ? ST_EXT_QUOTED : cls[c] & C_TCHAR ? ST_EXT_TOKEN : -1;
    case ST_EXT_TOKEN:
        return cls[c] & C_TCHAR ? ST_EXT_TOKEN : after_ext_item(c);
    case ST_EXT_QUOTED:
        if (c == '"')
            return ST_EXT_AFTER_QUOTED;
        if (c == '\\')
            return ST_EXT_QUOTED_PAIR;
        return cls[c] & C_QDTEXT ? ST_EXT_QUOTED : -1;
    case ST_EXT_QUOTED_PAIR:
        return cls[c] & C_TEXT ? ST_EXT_QUOTED : -1;
    case ST_EXT_AFTER_QUOTED:
        return after_ext_item(c);
    default:
        return -1;
    }
}

/*
 * Checks d[0..len) from f's place. SCAN_MORE: all of it is valid so far;
 * SCAN_END: the head or chunked body ends at the byte before *valid;
 * SCAN_BAD: d[*valid] breaks the grammar.
 */
static enum scan_result scan(struct tycho_framing *f, const unsigned char *d, size_t len,
                             size_t *valid)
{
    size_t i = 0;
    int state = f->_state;
    bool bad = false;
    enum scan_result result;

    while (i < len) {
        unsigned char c = d[i];

        switch (state) {
        case ST_START:
            if (c == '\r')
                state = ST_START_LF;
            else if (cls[c] & C_TCHAR)
                state = ST_METHOD;
            else
                goto refused;
            break;
        case ST_START_LF:
            if (c != '\n')
                goto refused;
            state = ST_START;
            break;
        case ST_METHOD:
            if (!skip_class(d, len, &i, C_TCHAR))
                goto more;
            if (d[i] != ' ')
                goto refused;
            state = ST_TARGET_FIRST;
            break;
        case ST_TARGET_FIRST:
            if (!(cls[c] & C_TARGET))
                goto refused;             /* a second SP, a control byte */
            state = ST_TARGET;
            if (c == '/' && f->_skip &&
                (f->_whole || target_worth_skipping(d + i + 1, len - i - 1))) {
                f->_skipping = true;
                i++;                      /* the parser gets the '/' */
                goto skip_from;
            }
            break;
        case ST_TARGET:
            if (!skip_class(d, len, &i, C_TARGET))
                goto more;
            if (d[i] != ' ')
                goto refused;
            if (f->_skipping) {
                f->_skipping = false;
                goto resume;              /* the parser gets the SP and the rest of the line */
            }
            state = ST_REQ_VERSION;
            f->_index = 0;
            break;
        case ST_REQ_VERSION:
            /* The usual case, the whole version in this read, in one comparison. */
            if (f->_index == 0 && len - i >= sizeof(request_version) - 1 &&
                memcmp(d + i, "HTTP/", 5) == 0 && (cls[d[i + 5]] & C_DIGIT) && d[i + 6] == '.' &&
                (cls[d[i + 7]] & C_DIGIT) && d[i + 8] == '\r') {
                i += sizeof(request_version) - 2;   /* the loop's i++ passes the CR */
                state = ST_LINE_LF;
                break;
            }
            if (match_fixed(request_version, &f->_index, c, &bad))
                state = ST_LINE_LF;
            if (bad)
                goto refused;
            break;
        case ST_RES_START:
            if (match_fixed(response_start, &f->_index, c, &bad))
                state = ST_STATUS_END;
            if (bad)
                goto refused;
            break;
        case ST_STATUS_END:
            /* RFC 9112 4 wants "SP [reason]"; a bare CR after the code moves no boundary. */
            if (c == ' ')
                state = ST_REASON;
            else if (c == '\r')
                state = ST_LINE_LF;
            else
                goto refused;
            break;
        case ST_REASON:
        case ST_VALUE:
            if (!skip_class(d, len, &i, C_TEXT))
                goto more;
            if (d[i] != '\r')
                goto refused;             /* a control byte, DEL, or a bare LF */
            state = ST_LINE_LF;
            break;
        case ST_LINE_LF:
            if (c != '\n')
                goto refused;
            state = ST_FIELD_START;
            break;
        case ST_FIELD_START: {
            size_t name_end = i;
            bool whole, skip;

            if (c == '\r') {
                if (f->_skipping) {
                    f->_skipping = false;
                    goto resume;          /* the parser gets the empty line */
                }
                state = ST_END_LF;
                break;
            }
            if (!(cls[c] & C_TCHAR))
                goto refused;             /* SP/HTAB here is obs-fold; ':' an empty name */
            whole = skip_class(d, len, &name_end, C_TCHAR);
            if (whole && d[name_end] != ':') {
                i = name_end;
                goto refused;             /* RFC 9112 5.1: no whitespace before the colon */
            }
            skip = f->_skip && !f->_chunked && whole && !parser_field(d + i, name_end - i) &&
                   (f->_skipping || f->_whole || worth_skipping(d + i, len - i));
            if (skip != f->_skipping) {
                f->_skipping = skip;
                if (skip)
                    goto skip_from;
                goto resume;
            }
            f->_fields++;
            /* The name was read: on to its value (the loop's i++ passes the colon). */
            i = name_end - !whole;
            state = whole ? ST_VALUE : ST_NAME;
            break;
        }
        case ST_NAME:
            if (!skip_class(d, len, &i, C_TCHAR))
                goto more;
            if (d[i] != ':')
                goto refused;             /* RFC 9112 5.1: no whitespace before the colon */
            state = ST_VALUE;
            break;
        case ST_END_LF:
            if (c != '\n')
                goto refused;
            f->_state = ST_DONE;
            *valid = i + 1;
            return SCAN_END;
        case ST_CHUNK_SIZE_FIRST:
            if (!(cls[c] & C_HEX))
                goto refused;
            f->_chunk_left = 0;
            state = chunk_line_byte(f, ST_CHUNK_SIZE, c);
            break;
        case ST_CHUNK_LF:
            if (c != '\n')
                goto refused;
            state = f->_chunk_left ? ST_DATA : ST_FIELD_START; /* the last chunk: trailers */
            break;
        case ST_DATA: {
            size_t take = len - i < f->_chunk_left ? len - i : (size_t)f->_chunk_left;
            f->_chunk_left -= take;
            i += take;
            if (f->_chunk_left == 0)
                state = ST_DATA_CR;
            continue;
        }
        case ST_DATA_CR:
            if (c != '\r')
                goto refused;
            state = ST_DATA_LF;
            break;
        case ST_DATA_LF:
            if (c != '\n')
                goto refused;
            state = ST_CHUNK_SIZE_FIRST;
            break;
        case ST_DONE:
            goto refused;                 /* the caller feeds no byte past the end */
        default:
            /* The rest of the chunk-size line; http-parser counts its length (431). */
            if ((state = chunk_line_byte(f, state, c)) < 0) {
                state = ST_CHUNK_SIZE;    /* any valid state to store; nothing is scanned after */
                goto refused;
            }
            break;
        }
        i++;
    }
more:
    f->_state = (unsigned char)state;
    *valid = len;
    return SCAN_MORE;
refused:
    result = SCAN_BAD;
    goto stop;
skip_from:
    result = SCAN_SKIP;
    goto stop;
resume:
    result = SCAN_RESUME;
stop:                                 /* at d[i], which the result is about */
    f->_state = (unsigned char)state;
    *valid = i;
    return result;
}

/* After a head passed: the parser knows the body's framing; checks a chunked one too. */
static void begin_body(struct tycho_framing *f, const struct http_parser *p)
{
    if (p->flags & F_CHUNKED) {
        f->_state = ST_CHUNK_SIZE_FIRST;
        f->_chunked = true;
    } else {
        f->_gated = false;                /* Content-Length or until EOF: counted by the parser */
    }
}

/* What the parser is given of a head checked whole: at most this much (else the long way). */
#define WHOLE_HEAD_PARSER_BYTES 512

/*
 * A request head that is whole in data[0..len), from its first byte: it is
 * checked first, and the parser then gets what it reads of it (as the long
 * way would give it, see tycho_framing_skip_fields: the target "/" and the
 * fields it matches) in one call, copied together, instead of one call per
 * run between skipped bytes; so every other field line is skipped, however
 * short. Returns the bytes used (up to the head's end, or fewer when the
 * parser failed: then nothing more is parsed), or 0 with f as it was when the
 * head is not whole here, breaks the grammar, or would go past the head limit
 * or the copy's room: the long way then checks and parses it.
 */
static size_t parse_whole_head(struct tycho_framing *f, struct http_parser *p,
                               const struct http_parser_settings *s,
                               const struct tycho_framing_sink *sink, const char *data,
                               size_t len)
{
    const struct tycho_framing before = *f;
    char parsed[WHOLE_HEAD_PARSER_BYTES];
    size_t at = 0, parsed_len = 0, skipped = 0, n;
    enum scan_result sr;

    f->_whole = true;
    do {
        bool skipping = f->_skipping;
        size_t valid;

        sr = scan(f, (const unsigned char *)data + at, len - at, &valid);
        if (sr == SCAN_MORE || sr == SCAN_BAD)
            goto long_way;
        if (skipping) {
            skipped += valid;
        } else {
            if (valid > sizeof(parsed) - parsed_len)
                goto long_way;
            memcpy(parsed + parsed_len, data + at, valid);
            parsed_len += valid;
        }
        at += valid;
    } while (sr != SCAN_END);
    f->_whole = false;
    /* Over the limit: the long way fails it where the parser would. */
    if (at > f->_max_head - p->nread)
        goto long_way;
    if (sink->head(sink->arg, data, at) != 0) {
        f->_bad = true;
        return 0;
    }
    p->nread += (uint32_t)skipped;    /* counted as the parser counts a head's bytes */
    n = http_parser_execute(p, s, parsed, parsed_len);
    if (n < parsed_len || (HTTP_PARSER_ERRNO(p) != HPE_OK && HTTP_PARSER_ERRNO(p) != HPE_PAUSED))
        return 0;                     /* failed (the message is bad: no byte is parsed on) */
    if (HTTP_PARSER_ERRNO(p) == HPE_OK)
        begin_body(f, p);             /* (paused: the message is over, and f restarted) */
    return at;
long_way:
    *f = before;
    return 0;
}

size_t tycho_framing_execute_request(struct tycho_framing *f, struct http_parser *p,
                                     const struct http_parser_settings *s,
                                     const struct tycho_framing_sink *sink, const char *data,
                                     size_t len)
{
    size_t used = 0;

    /* A head that begins here: checked and parsed whole, when it is whole here. */
    if (sink && f->_skip && f->_state == ST_START && f->_gated && !f->_chunked && p->nread == 0) {
        used = parse_whole_head(f, p, s, sink, data, len);
        if (used || f->_bad || HTTP_PARSER_ERRNO(p) != HPE_OK)
            return used;
    }

    while (used < len && !f->_bad) {
        size_t valid = len - used, n;
        enum scan_result sr = SCAN_MORE;

        if (f->_gated) {
            bool in_head = !f->_chunked;  /* (a head's end returns below before its body) */
            bool skipped = f->_skipping;  /* the bytes checked now are not for the parser */
            sr = scan(f, (const unsigned char *)data + used, len - used, &valid);
            if (sink && in_head && valid &&
                sink->head(sink->arg, data + used, valid) != 0) {
                f->_bad = true;
                return used;
            }
            if (skipped) {
                /* Counted as the parser counts a head's bytes, against its limit. */
                if (valid > f->_max_head - p->nread) {
                    p->http_errno = HPE_HEADER_OVERFLOW;
                    return used;
                }
                p->nread += (uint32_t)valid;
                used += valid;
                if (sr == SCAN_BAD)
                    f->_bad = true;
                continue;
            }
        }
        /* (No call with 0 bytes: to http-parser that means the peer closed.) */
        n = valid ? http_parser_execute(p, s, data + used, valid) : 0;
        used += n;
        if (HTTP_PARSER_ERRNO(p) != HPE_OK || n < valid)
            return used;                  /* paused at a message's end, or failed */
        if (sr == SCAN_BAD) {
            f->_bad = true;
        } else if (sr == SCAN_END && f->_state == ST_DONE) {
            /* (on_message_complete restarts f: then the message is over and f is ready.) */
            if (f->_chunked)
                f->_bad = true;           /* the parser saw no end where the check did */
            else
                begin_body(f, p);
            /* A request's head is complete and a body follows: its route decides how it is read. */
            if (f->_kind == TYCHO_FRAMING_REQUEST)
                return used;
        }
    }
    return used;
}

size_t tycho_framing_execute(struct tycho_framing *f, struct http_parser *p,
                             const struct http_parser_settings *s, const char *data, size_t len)
{
    return tycho_framing_execute_request(f, p, s, NULL, data, len);
}

void tycho_te_add(struct tycho_te_list *te, const char *value, size_t len)
{
    size_t i = 0;

    te->seen = true;
    while (i <= len) {
        size_t start, end;

        while (i < len && (value[i] == ' ' || value[i] == '\t'))
            i++;
        start = i;
        while (i < len && value[i] != ',')
            i++;
        end = i++;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
            end--;
        if (end == start)
            continue;                     /* an empty list element (RFC 9110 5.6.1) */
        te->codings++;
        te->last_chunked = end - start == 7 && strncasecmp(value + start, "chunked", 7) == 0;
        te->chunked += te->last_chunked;
    }
}

enum tycho_te tycho_te_verdict(const struct tycho_te_list *te)
{
    if (!te->seen)
        return TYCHO_TE_NONE;
    if (!te->last_chunked || te->chunked != 1)
        return TYCHO_TE_BAD;
    return te->codings == 1 ? TYCHO_TE_CHUNKED : TYCHO_TE_UNKNOWN;
}

const char *tycho_framing_response_error(const struct http_parser *p,
                                         const struct tycho_te_list *te)
{
    enum tycho_te verdict = tycho_te_verdict(te);

    if (p->http_major != 1)
        return "not HTTP/1.x";
    if (p->status_code < 100 || p->status_code > 599)
        return "a status code outside 100-599";
    if (verdict == TYCHO_TE_UNKNOWN)
        return "a Transfer-Encoding other than chunked";
    if (verdict == TYCHO_TE_BAD)
        return "a Transfer-Encoding without chunked last, once";
    if (verdict == TYCHO_TE_CHUNKED && p->http_minor == 0)
        return "Transfer-Encoding on HTTP/1.0";
    if ((verdict == TYCHO_TE_CHUNKED) != ((p->flags & F_CHUNKED) != 0) ||
        (verdict == TYCHO_TE_NONE) != !p->uses_transfer_encoding)
        return "a Transfer-Encoding http-parser reads otherwise";
    return NULL;
}
