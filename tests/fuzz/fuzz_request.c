/*
 * fuzz_request.c: libFuzzer target for the request path without Lua, with a
 * differential oracle for framing.
 *
 * Any bytes go through the parser glue (split in two at a point the input
 * chooses, as reads would split them). Every complete request gets a response
 * built from what was parsed (headers, path, query and body echoed back)
 * through the response writer, and every error through the error writer.
 *
 * The same bytes go to tests/fuzz/oracle.h, a strict framing checker written
 * apart from the server. The glue may refuse more than the oracle (its limits,
 * unknown methods, Host, Expect), never less: each request the glue accepts
 * must be one the oracle accepts, ending at the same byte. A request the
 * oracle rejects, or a boundary it does not find, aborts the run (a crash to
 * libFuzzer, with the input kept).
 *
 * Built by `make fuzz` with clang and -fsanitize=fuzzer,address,undefined.
 */
#include <stddef.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/config.h"
#include "http/http.h"
#include "oracle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_REQUESTS 256

static struct tycho_config cfg;

/* What the glue did with one input. */
struct run {
    size_t ends[MAX_REQUESTS]; /* where each accepted request ended (offsets in the input) */
    size_t count;              /* requests accepted */
    size_t offset;             /* bytes the glue took so far */
};

/* Builds a response from what the request holds, as a handler might. */
static void respond(struct tycho_req *r, struct tycho_buf *out)
{
    static const char date[] = "Date: Mon, 23 Nov 2026 00:00:00 GMT\r\n";
    const struct tycho_header *h = tycho_req_header(r, "x-status", 8);

    r->status = h && h->value_len == 3 ? atoi(h->value) : 200;
    if (r->status < 200 || r->status > 599)
        r->status = 200;
    for (unsigned i = 0; i < r->nheaders && i < 4; i++) {
        const struct tycho_header *in = &r->headers[i];
        char *line = tycho_arena_append(&r->arena, r->res_headers, r->res_headers_len,
                                        "X-Echo: ", 8);
        if (!line)
            return;
        line = tycho_arena_append(&r->arena, line, r->res_headers_len + 8, in->value,
                                  in->value_len);
        if (!line)
            return;
        line = tycho_arena_append(&r->arena, line, r->res_headers_len + 8 + in->value_len,
                                  "\r\n", 2);
        if (!line)
            return;
        r->res_headers = line;
        r->res_headers_len += 8 + in->value_len + 2;
    }
    r->res_body = r->body ? r->body : r->path;
    r->res_body_len = r->body ? r->body_len : r->path_len;
    tycho_http_write_response(out, r, date, r->keep_alive);
}

/* Feeds one piece; returns 0 to go on, -1 once the connection would close. */
static int feed(struct tycho_http *h, struct tycho_req *r, struct tycho_buf *out,
                struct run *run, const char *data, size_t len)
{
    while (len > 0) {
        size_t n = tycho_http_parse(h, r, data, len);
        if (n > len)
            abort();                  /* the glue took bytes it was not given */
        data += n;
        len -= n;
        run->offset += n;
        if (h->state == TYCHO_HTTP_ERROR) {
            tycho_http_write_simple(out, h->error_status, "", "Date: x\r\n", false, true);
            return -1;
        }
        if (h->state == TYCHO_HTTP_HEAD) {
            /* As exchange.c's at_head for a route without options: the length is checked. */
            if (r->content_length != ULLONG_MAX && r->content_length > h->cfg->max_body_bytes) {
                tycho_http_write_simple(out, 413, "", "Date: x\r\n", false, true);
                return -1;
            }
            continue;
        }
        if (h->state == TYCHO_HTTP_MORE) {
            if (len > 0)
                abort();              /* MORE must mean every byte was taken */
            return 0;
        }
        if (run->count < MAX_REQUESTS)
            run->ends[run->count] = run->offset;
        run->count++;
        respond(r, out);
        if (!r->keep_alive)
            return -1;
        tycho_req_reset(r);
        tycho_http_init(h, &cfg);     /* each request's context parses from a fresh start */
    }
    return 0;
}

/* The differential check: every request the glue accepted, the oracle accepts, same end. */
static void check_against_oracle(const uint8_t *data, size_t size, const struct run *run)
{
    static size_t ends[MAX_REQUESTS];
    size_t complete = 0;

    oracle_frame(data, size, ends, MAX_REQUESTS, &complete, NULL);
    if (run->count > complete) {
        fprintf(stderr, "the glue accepted %zu requests, the oracle %zu\n", run->count, complete);
        abort();
    }
    for (size_t i = 0; i < run->count && i < MAX_REQUESTS; i++) {
        if (run->ends[i] != ends[i]) {
            fprintf(stderr, "request %zu ends at %zu for the glue, at %zu for the oracle\n", i,
                    run->ends[i], ends[i]);
            abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct tycho_req *r;
    static struct run run;
    struct tycho_http h;
    struct tycho_buf out = {0};
    size_t split;

    if (!r) {
        /* The three limits the glue reads, small so that the fuzzer reaches them. */
        cfg.max_header_bytes = 2048;
        cfg.max_body_bytes = 4096;
        cfg.max_headers = 32;
        tycho_http_global_init(&cfg);
        r = calloc(1, sizeof(*r));
        if (!r || tycho_req_init(r) < 0)
            abort();
    }
    if (size == 0)
        return 0;
    /* The first byte chooses where the rest is split in two reads. */
    split = data[0] % size;
    data++;
    size--;
    memset(&run, 0, sizeof(run));
    tycho_http_init(&h, &cfg);
    if (feed(&h, r, &out, &run, (const char *)data, split) == 0)
        feed(&h, r, &out, &run, (const char *)data + split, size - split);
    check_against_oracle(data, size, &run);
    tycho_req_reset(r);
    tycho_buf_dispose(&out);
    return 0;
}
