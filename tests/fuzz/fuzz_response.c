/*
 * fuzz_response.c: libFuzzer target for the framing of backend responses,
 * with a differential oracle.
 *
 * The bytes a backend sends back for one request go through framing.c and
 * http-parser as upstream.c drives them: the same check entry point
 * (tycho_framing_execute), the same head checks (tycho_framing_response_error),
 * 1xx interim responses skipped, no body for HEAD, 204 and 304, a pause when
 * the final response is complete, and the end of the connection given to the
 * parser as upstream.c does on EOF. The input is split in two reads at a
 * point its first byte chooses; its second byte's low bit makes the request a
 * HEAD.
 *
 * When the client takes a response as complete, tests/fuzz/oracle.h must say
 * the same and put its end at the same byte (a response ending earlier would
 * leave bytes for the next caller on a pooled connection); when it completes
 * one at the end of the connection, the oracle must see a body that runs to
 * the close. Anything else aborts (a crash to libFuzzer, with the input kept).
 *
 * Built by `make fuzz` with clang and -fsanitize=fuzzer,address,undefined.
 */
#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/framing.h"
#include "oracle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Bounds on what is kept of a head; past them the exchange fails (never truncated). */
#define MAX_FIELDS 64
#define MAX_FIELD_BYTES 1024

/* One exchange, as a client sees it. */
struct exchange {
    http_parser parser;
    struct tycho_framing framing;
    bool head;                              /* the request was HEAD */
    bool complete;                          /* the final response ended */
    char names[MAX_FIELDS][MAX_FIELD_BYTES]; /* field names */
    char values[MAX_FIELDS][MAX_FIELD_BYTES];
    size_t name_len[MAX_FIELDS], value_len[MAX_FIELDS];
    size_t nfields;
    bool in_value;
};

/* Appends a piece of a field; -1 past the bound (the call fails, as at upstream.c's bound). */
static int add(char *dst, size_t *len, const char *at, size_t n)
{
    if (n > MAX_FIELD_BYTES - *len)
        return -1;
    memcpy(dst + *len, at, n);
    *len += n;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct exchange *x = p->data;

    if (x->in_value || x->nfields == 0) {
        if (x->nfields == MAX_FIELDS)
            return -1;                        /* the call fails, as at upstream.c's bound */
        x->nfields++;
        x->name_len[x->nfields - 1] = x->value_len[x->nfields - 1] = 0;
        x->in_value = false;
    }
    return add(x->names[x->nfields - 1], &x->name_len[x->nfields - 1], at, n);
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct exchange *x = p->data;

    x->in_value = true;
    return add(x->values[x->nfields - 1], &x->value_len[x->nfields - 1], at, n);
}

static int on_headers_complete(http_parser *p)
{
    struct exchange *x = p->data;
    struct tycho_te_list te = {0};

    for (size_t i = 0; i < x->nfields; i++)
        if (x->name_len[i] == 17 && strncasecmp(x->names[i], "transfer-encoding", 17) == 0)
            tycho_te_add(&te, x->values[i], x->value_len[i]);
    if (tycho_framing_response_error(p, &te) || p->status_code == 101)
        return -1;
    return x->head || p->status_code < 200 || p->status_code == 204 || p->status_code == 304;
}

static int on_message_complete(http_parser *p)
{
    struct exchange *x = p->data;

    tycho_framing_next(&x->framing);
    if (p->status_code < 200) {
        x->nfields = 0;                       /* an interim response: the real one follows */
        x->in_value = false;
        return 0;
    }
    x->complete = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

/* Feeds one read; false once the exchange is over (complete or failed). */
static bool feed(struct exchange *x, const char *data, size_t len, size_t *taken)
{
    size_t n = tycho_framing_execute(&x->framing, &x->parser, &settings, data, len);

    if (n > len)
        abort();
    *taken += n;
    return !x->complete && !tycho_framing_refused(&x->framing) &&
           HTTP_PARSER_ERRNO(&x->parser) == HPE_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct exchange x;
    enum oracle_response verdict;
    size_t split, taken = 0, end = 0;
    bool at_eof = false;

    if (size < 2)
        return 0;
    memset(&x, 0, sizeof(x));
    split = data[0] % (size - 1);
    x.head = data[1] & 1;
    data += 2;
    size -= 2;
    http_parser_init(&x.parser, HTTP_RESPONSE);
    x.parser.data = &x;
    tycho_framing_init(&x.framing, TYCHO_FRAMING_RESPONSE);
    if (feed(&x, (const char *)data, split, &taken) &&
        feed(&x, (const char *)data + split, size - split, &taken)) {
        /* The backend closed: a body that runs to the close ends here. */
        http_parser_execute(&x.parser, &settings, NULL, 0);
        at_eof = x.complete;
    }
    if (!x.complete)
        return 0;
    verdict = oracle_frame_response(data, size, x.head, &end);
    if (at_eof ? verdict != ORACLE_RES_EOF_BODY
               : verdict != ORACLE_RES_COMPLETE || end != taken) {
        fprintf(stderr, "the client took a response %s at %zu; the oracle says %d at %zu\n",
                at_eof ? "ending at the close" : "as complete", taken, (int)verdict, end);
        abort();
    }
    return 0;
}
