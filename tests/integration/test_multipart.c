/*
 * test_multipart.c TYCHO_BINARY FIXTURE_DIR: req:multipart on routes that
 * stream their body (stream_body = true) over real sockets against the real
 * binary: a 20 MiB file part written to disk byte-exact with text fields
 * around it while the server's memory stays bounded; a body sent in odd
 * pieces with pauses (delimiters split across reads, near-delimiters in the
 * data); the upload files deleted when the handler ends (returned, raised,
 * abandoned when the client left) unless moved (part:move, os.rename);
 * max_file_bytes, max_field_bytes, max_parts, malformed bodies, bad options,
 * a directory that does not exist; and the 408 of req:read after
 * --body-timeout. The app and the upload directory are made in a temporary
 * directory. Ends with `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#define BOUNDARY "----tychoB0undary7MA4YWxk"
#define CTYPE "multipart/form-data; boundary=" BOUNDARY

static char dir[] = "/tmp/tycho-multipart-XXXXXX";
static char up[128];                  /* dir/up: where the app writes the uploads */

/* The app; %s is the upload directory (twice). */
static const char app_fmt[] =
    "local app = require 'tycho'\n"
    "local UP = '%s'\n"
    "local function list(parts)\n"
    "  local out = {}\n"
    "  for _, p in ipairs(parts) do\n"
    "    if p.path then\n"
    "      out[#out + 1] = p.name .. ':' .. p.filename .. ':' .. p.content_type .. ':' .. p.size\n"
    "        .. ':' .. tostring(p.body) .. ':'\n"
    "        .. (p.path:sub(1, #UP + 1) == UP .. '/' and 'in dir' or p.path)\n"
    "    else\n"
    "      out[#out + 1] = p.name .. '=' .. p.body\n"
    "    end\n"
    "  end\n"
    "  return table.concat(out, '\\n')\n"
    "end\n"
    "local S = { stream_body = true, max_body = 100 * 1024 * 1024 }\n"
    "app.post('/up', function(req)\n"
    "  local parts = req:multipart{ dir = UP, max_file_bytes = 30 * 1024 * 1024, max_parts = 5 }\n"
    "  local dest = req.query.move\n"
    "  for _, p in ipairs(parts) do\n"
    "    if p.path and dest then\n"
    "      local path = p.path\n"
    "      assert(p:move(UP .. '/' .. dest))\n"
    "      assert(p.path == UP .. '/' .. dest and path ~= p.path)\n"
    "      local ok, err = pcall(p.move, p, UP .. '/again')\n"
    "      assert(not ok and err:find('moved or deleted already'))\n"
    "    end\n"
    "  end\n"
    "  return list(parts)\n"
    "end, S)\n"
    "app.post('/renamed', function(req)\n"
    "  local parts = req:multipart{ dir = UP }\n"
    "  assert(os.rename(parts[1].path, UP .. '/renamed'))\n"
    "  return 'renamed'\n"
    "end, S)\n"
    "app.post('/fail', function(req)\n"
    "  local parts = req:multipart{ dir = UP }\n"
    "  error('the handler fails after ' .. #parts .. ' parts')\n"
    "end, S)\n"
    "app.post('/limits', function(req)\n"
    "  return list(req:multipart{ dir = UP, max_file_bytes = 1000, max_field_bytes = 100 })\n"
    "end, S)\n"
    "app.post('/nodir', function(req)\n"
    "  return list(req:multipart{ dir = UP .. '/none' })\n"
    "end, S)\n"
    "app.post('/whole', function(req) return list(req:multipart()) end)\n"
    "local function try(req, opts)\n"
    "  local ok, err = pcall(req.multipart, req, opts)\n"
    "  return ok and 'no error' or err:gsub('^.-:%%d+: ', '', 1)\n"
    "end\n"
    "app.post('/opts', function(req)\n"
    "  local out = {}\n"
    "  for _, o in ipairs({ { dir = 5 }, { dir = '' }, { max_file_bytes = 0 },\n"
    "      { max_field_bytes = 1.5 }, { max_parts = 'x' }, { max_header_bytes = -1 },\n"
    "      { bogus = 1 }, 'x' }) do\n"
    "    out[#out + 1] = try(req, o)\n"
    "  end\n"
    "  return table.concat(out, '\\n')\n"
    "end, S)\n"
    "app.post('/opts/whole', function(req) return try(req, { dir = '/tmp' }) end)\n"
    "app.get('/plain', function() return 'plain' end)\n";

/* FNV-1a, 64 bits: what was sent against what is on disk. */
static uint64_t fnv(uint64_t h, const unsigned char *d, size_t len)
{
    for (size_t i = 0; i < len; i++)
        h = (h ^ d[i]) * 1099511628211u;
    return h;
}
#define FNV_START 14695981039346656037u

/* The hash and size of the file at path; -1 if it cannot be read. */
static long long file_hash(const char *path, uint64_t *h)
{
    unsigned char buf[65536];
    long long total = 0;
    size_t n;
    FILE *f = fopen(path, "rb");

    if (!f)
        return -1;
    *h = FNV_START;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        *h = fnv(*h, buf, n);
        total += (long long)n;
    }
    fclose(f);
    return total;
}

/* Piece i of a big file: bytes that differ from piece to piece. */
static void fill_piece(unsigned char *p, size_t len, unsigned i)
{
    unsigned x = 2463534242u + i * 2654435761u;

    for (size_t k = 0; k < len; k++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        p[k] = (unsigned char)x;
    }
}

/* How many upload files (tycho-upload-*) the upload directory holds. */
static int count_uploads(void)
{
    DIR *d = opendir(up);
    struct dirent *e;
    int n = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)))
        n += strncmp(e->d_name, "tycho-upload-", 13) == 0;
    closedir(d);
    return n;
}

/* Waits (bounded) until the upload directory holds want upload files; returns the count. */
static int wait_uploads(int want, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    int n;

    while ((n = count_uploads()) != want && now_ms() < deadline)
        sleep_ms(20);
    return n;
}

/* A field part (its delimiter first). */
static void add_field(char *out, size_t cap, const char *name, const char *value)
{
    size_t len = strlen(out);

    snprintf(out + len, cap - len,
             "--" BOUNDARY "\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n", name,
             value);
}

/* A file part's head (its delimiter first); the file's bytes and "\r\n" follow. */
static void add_file_head(char *out, size_t cap, const char *name, const char *filename)
{
    size_t len = strlen(out);

    snprintf(out + len, cap - len,
             "--" BOUNDARY "\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
             "Content-Type: application/octet-stream\r\n\r\n",
             name, filename);
}

/* Sends a whole multipart request (head and body) on c. */
static int send_request(struct client *c, const char *path, const char *body, size_t len)
{
    char head[256];

    snprintf(head, sizeof head,
             "POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: " CTYPE
             "\r\nContent-Length: %zu\r\n\r\n",
             path, len);
    if (client_sends(c, head) < 0)
        return -1;
    return client_send(c, body, len);
}

/* One small multipart request on a fresh connection; the response in r. */
static void post(int port, const char *path, const char *body, struct response *r)
{
    struct client c;

    memset(r, 0, sizeof *r);
    if (client_connect(&c, port) < 0)
        return;
    if (send_request(&c, path, body, strlen(body)) == 0)
        read_response(&c, r, 0);
    client_close(&c);
}

static void expect(int port, const char *path, const char *body, int status, const char *want,
                   const char *ctx)
{
    struct response r;

    post(port, path, body, &r);
    if (expect_status(&r, status, ctx) && want)
        expect_body(&r, want, what(ctx, "the body"));
    response_free(&r);
}

/*
 * A text field, a file of mib MiB sent as fast as the socket takes it, a
 * text field: the file is moved to dest and compared with what was sent.
 */
static void test_big(const struct server *s, unsigned mib, const char *ctx)
{
    enum { PIECE = 1 << 20 };
    unsigned char *piece = malloc(PIECE);
    char head[512] = "", tail[512] = "\r\n", want[512], path[256], hd[256];
    uint64_t sent = FNV_START, got = 0;
    long before = rss_kib(s->pid), peak = before;
    struct client c;
    struct response r;
    size_t total;

    if (!piece || client_connect(&c, s->port) < 0) {
        ok(0, what(ctx, "connect"));
        free(piece);
        return;
    }
    add_field(head, sizeof head, "title", "holiday pictures");
    add_file_head(head, sizeof head, "photo", "big.bin");
    add_field(tail, sizeof tail, "note", "a second field");
    strcat(tail, "--" BOUNDARY "--\r\n");
    total = strlen(head) + (size_t)mib * PIECE + strlen(tail);
    snprintf(hd, sizeof hd,
             "POST /up?move=%s HTTP/1.1\r\nHost: t\r\nContent-Type: " CTYPE
             "\r\nContent-Length: %zu\r\n\r\n",
             ctx, total);
    client_sends(&c, hd);
    client_sends(&c, head);
    for (unsigned i = 0; i < mib; i++) {
        fill_piece(piece, PIECE, i);
        sent = fnv(sent, piece, PIECE);
        if (client_send(&c, piece, PIECE) < 0) {
            ok(0, what(ctx, "sending piece %u", i));
            break;
        }
        long now = rss_kib(s->pid);
        if (now > peak)
            peak = now;
    }
    client_sends(&c, tail);
    read_response(&c, &r, 0);
    note("%s: server RSS %ld KiB before, at most %ld KiB while %u MiB came", ctx, before, peak,
         mib);
    /* Under a wrapper (valgrind) RSS is the wrapper's: freed blocks are held back on purpose. */
    ok(n_wrap || sanitized(s->pid) || (before > 0 && peak - before < 5 * 1024),
       what(ctx, "the server's memory grows by less than 5 MiB"));
    snprintf(want, sizeof want,
             "title=holiday pictures\nphoto:big.bin:application/octet-stream:%u:nil:in dir\n"
             "note=a second field",
             mib * PIECE);
    if (expect_status(&r, 200, ctx))
        expect_body(&r, want, what(ctx, "the fields in memory, the file part on disk"));
    response_free(&r);
    snprintf(path, sizeof path, "%s/%s", up, ctx);
    ok(file_hash(path, &got) == (long long)mib * PIECE && got == sent,
       what(ctx, "the moved file holds every byte sent, in order"));
    unlink(path);
    is_int(count_uploads(), 0, what(ctx, "no upload file is left"));
    exchange(&c, "GET /plain HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    expect_status(&r, 200, what(ctx, "the connection serves on"));
    response_free(&r);
    client_close(&c);
    free(piece);
}

/*
 * A body sent in odd-sized pieces with pauses, so that delimiters (and a
 * file's bytes that look like the start of one) are split across reads.
 */
static void test_pieces(int port)
{
    static const size_t sizes[] = {1, 3, 7, 2, 13, 5, 31, 1, 17};
    char body[4096] = "", data[600];
    size_t len, off = 0, n = 0;
    struct client c;
    struct response r;
    char want[2048];

    /* The file's bytes hold near-delimiters: "\r\n--" then the boundary but its last byte. */
    snprintf(data, sizeof data, "%s",
             "line one\r\n------tychoB0undary7MA4YWxX\r\n------tychoB0und\r\n-"
             "-\r\n\r\nend of the file");
    add_field(body, sizeof body, "a", "first value");
    add_file_head(body, sizeof body, "doc", "notes.txt");
    strcat(body, data);
    strcat(body, "\r\n");
    add_field(body, sizeof body, "b", "");
    add_field(body, sizeof body, "c", "x\r\n--not the boundary");
    strcat(body, "--" BOUNDARY "--\r\n");
    len = strlen(body);
    if (client_connect(&c, port) < 0) {
        ok(0, "pieces: connect");
        return;
    }
    {
        char head[256];
        snprintf(head, sizeof head,
                 "POST /up?move=pieces HTTP/1.1\r\nHost: t\r\nContent-Type: " CTYPE
                 "\r\nContent-Length: %zu\r\n\r\n",
                 len);
        client_sends(&c, head);
    }
    while (off < len && n < 1000) {
        size_t k = sizes[n++ % (sizeof sizes / sizeof sizes[0])];
        if (k > len - off)
            k = len - off;
        if (client_send(&c, body + off, k) < 0)
            break;
        off += k;
        sleep_ms(3);
    }
    read_response(&c, &r, 0);
    snprintf(want, sizeof want,
             "a=first value\ndoc:notes.txt:application/octet-stream:%zu:nil:in dir\nb=\n"
             "c=x\r\n--not the boundary",
             strlen(data));
    if (expect_status(&r, 200, "pieces"))
        expect_body(&r, want, "pieces: every part, whatever the reads split");
    response_free(&r);
    client_close(&c);
    {
        char path[256];
        size_t flen;
        char *file;
        snprintf(path, sizeof path, "%s/pieces", up);
        file = slurp(path, &flen);
        ok(file && flen == strlen(data) && memcmp(file, data, flen) == 0,
           "pieces: the file holds its bytes exactly (near-delimiters included)");
        free(file);
        unlink(path);
    }
}

/* The upload files go when the handler ends, unless moved. */
static void test_cleanup(const struct server *s)
{
    char body[2048] = "", path[256];
    struct stat st;

    add_file_head(body, sizeof body, "f", "a.txt");
    strcat(body, "some text\r\n");
    add_file_head(body, sizeof body, "g", "b.txt");
    strcat(body, "more text\r\n--" BOUNDARY "--\r\n");
    expect(s->port, "/up", body, 200,
           "f:a.txt:application/octet-stream:9:nil:in dir\n"
           "g:b.txt:application/octet-stream:9:nil:in dir",
           "not moved");
    is_int(count_uploads(), 0, "not moved: the files are deleted when the handler returns");
    expect(s->port, "/renamed", body, 200, "renamed", "os.rename");
    snprintf(path, sizeof path, "%s/renamed", up);
    ok(stat(path, &st) == 0 && st.st_size == 9, "os.rename: the renamed file stays");
    ok((st.st_mode & 0777) == 0600, "os.rename: the file's mode is 0600");
    unlink(path);
    is_int(count_uploads(), 0, "os.rename: the other file is deleted");
    expect(s->port, "/fail", body, 500, NULL, "a handler that raises");
    ok(wait_for_log(s, "the handler fails after 2 parts", io_timeout_ms),
       "a handler that raises: its error is logged");
    is_int(count_uploads(), 0, "a handler that raises: its files are deleted");
}

/* The client leaves in the middle of a file part: the handler is abandoned, the file goes. */
static void test_client_leaves(int port)
{
    char body[1024] = "", head[256];
    char *chunk = calloc(1, 1 << 20);
    struct client c;

    if (!chunk || client_connect(&c, port) < 0) {
        ok(0, "client leaves: connect");
        free(chunk);
        return;
    }
    add_field(body, sizeof body, "a", "1");
    add_file_head(body, sizeof body, "f", "half.bin");
    snprintf(head, sizeof head,
             "POST /up HTTP/1.1\r\nHost: t\r\nContent-Type: " CTYPE
             "\r\nContent-Length: 10000000\r\n\r\n");
    client_sends(&c, head);
    client_sends(&c, body);
    client_send(&c, chunk, 1 << 20);
    is_int(wait_uploads(1, io_timeout_ms), 1, "client leaves: the file part is being written");
    client_close(&c);
    is_int(wait_uploads(0, io_timeout_ms), 0, "client leaves: the file is deleted");
    free(chunk);
}

/* Limits, malformed bodies, options. */
static void test_errors(const struct server *s)
{
    char body[8192] = "", big[6000];
    struct response r;

    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    add_field(body, sizeof body, "a", "1");
    add_file_head(body, sizeof body, "f", "big.bin");
    strcat(body, big);
    strcat(body, "\r\n--" BOUNDARY "--\r\n");
    expect(s->port, "/limits", body, 413,
           "multipart: a file part is over 1000 bytes (max_file_bytes)\n", "max_file_bytes");
    is_int(count_uploads(), 0, "max_file_bytes: the partial file is deleted at once");

    body[0] = '\0';
    big[101] = '\0';
    add_field(body, sizeof body, "a", big);
    strcat(body, "--" BOUNDARY "--\r\n");
    expect(s->port, "/limits", body, 413,
           "multipart: a field is over 100 bytes (max_field_bytes)\n", "max_field_bytes");
    big[100] = '\0';
    body[0] = '\0';
    add_field(body, sizeof body, "a", big);
    strcat(body, "--" BOUNDARY "--\r\n");
    expect(s->port, "/limits", body, 200, NULL, "max_field_bytes: a field of exactly 100");

    body[0] = '\0';
    for (int i = 0; i < 6; i++)
        add_field(body, sizeof body, "n", "v");
    strcat(body, "--" BOUNDARY "--\r\n");
    expect(s->port, "/up", body, 413, "multipart: more than 5 parts\n", "max_parts");

    body[0] = '\0';
    add_field(body, sizeof body, "a", "1");
    add_file_head(body, sizeof body, "f", "cut.bin");
    strcat(body, "the body ends here");
    expect(s->port, "/up", body, 400, "multipart: the body ends before its closing boundary\n",
           "malformed: no closing delimiter");
    is_int(wait_uploads(0, io_timeout_ms), 0, "malformed: the file begun is deleted");
    expect(s->port, "/up", "--" BOUNDARY "\r\nno colon here\r\n\r\nx\r\n--" BOUNDARY "--\r\n",
           400, "multipart: a part's header line is malformed\n", "malformed: a header line");
    expect(s->port, "/up", "no boundary at all", 400,
           "multipart: the body does not start with its boundary\n", "malformed: no boundary");
    expect(s->port, "/up", "--" BOUNDARY "\r\nContent-Disposition: form-data; name=a", 400,
           "multipart: a part's headers are not finished\n", "malformed: headers cut");

    /* The whole-body form on an ordinary route, unchanged. */
    body[0] = '\0';
    add_field(body, sizeof body, "a", "1");
    strcat(body, "--" BOUNDARY "--\r\n");
    expect(s->port, "/whole", body, 200, "a=1", "a route that reads its body whole");

    expect(s->port, "/nodir", "--" BOUNDARY "\r\nContent-Disposition: form-data; name=f; "
                              "filename=x\r\n\r\nx\r\n--" BOUNDARY "--\r\n",
           500, NULL, "a dir that does not exist");
    ok(wait_for_log(s, "req:multipart: cannot create a file in ", io_timeout_ms) &&
           log_has_line(s, "/up/none: No such file or directory", NULL),
       "a dir that does not exist: the error says which and why");

    post(s->port, "/opts", "x", &r);
    if (expect_status(&r, 200, "options"))
        is_str(r.body,
               "req:multipart: dir must be a directory's path (a string), got number\n"
               "req:multipart: dir must be a directory's path (a string), got string\n"
               "req:multipart: max_file_bytes must be a whole number from 1 to 2^53, got 0\n"
               "req:multipart: max_field_bytes must be a whole number from 1 to 2^53, got 1.5\n"
               "req:multipart: max_parts must be a whole number from 1 to 2^53, got x\n"
               "req:multipart: max_header_bytes must be a whole number from 1 to 2^53, got -1\n"
               "req:multipart: unknown option bogus\n"
               "req:multipart: expected a table of options, got string",
               "options: each bad one raises and says why");
    response_free(&r);
    post(s->port, "/opts/whole", "x", &r);
    if (expect_status(&r, 200, "options on a route that reads its body whole"))
        is_str(r.body,
               "req:multipart: dir applies to a route that streams its body (stream_body = true); "
               "this one reads its body whole",
               "options: dir on an ordinary route raises");
    response_free(&r);
}

/* --body-timeout 1: a body that stops arriving makes req:read raise 408. */
static void test_body_timeout(void)
{
    const char *args[] = {"--port", "0", "--workers", "1", "--body-timeout", "1", dir, NULL};
    struct server s;
    struct client c;
    struct response r;
    long long start;

    if (!ok(server_start(&s, args) == 0, "body timeout: the server starts")) {
        server_cleanup(&s);
        return;
    }
    if (client_connect(&c, s.port) == 0) {
        char body[1024] = "";
        add_field(body, sizeof body, "a", "1");
        add_file_head(body, sizeof body, "f", "stalled.bin");
        strcat(body, "the first bytes of the file");
        client_sends(&c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Type: " CTYPE
                         "\r\nContent-Length: 5000\r\n\r\n");
        client_sends(&c, body);
        start = now_ms();
        read_response(&c, &r, 0);
        note("body timeout: the 408 came after %lld ms", now_ms() - start);
        if (expect_status(&r, 408, "body timeout: a body that stalls"))
            expect_body(&r, "the request body stopped arriving (--body-timeout)\n",
                        "body timeout: the reason");
        ok(now_ms() - start < 8000 * (n_wrap ? 3 : 1), "body timeout: within a few seconds");
        response_free(&r);
        client_close(&c);
        is_int(wait_uploads(0, io_timeout_ms), 0, "body timeout: the file begun is deleted");
    }
    check_get(s.port, "/plain", 200, "plain");
    is_int(server_stop(&s), 0, "body timeout: exit status 0");
    server_cleanup(&s);
}

int main(int argc, char **argv)
{
    struct server s;
    char path[192];
    FILE *f;

    if (suite_setup(argc, argv))
        return 2;
    if (!mkdtemp(dir)) {
        ok(0, "the temporary directory is made");
        return test_summary();
    }
    snprintf(up, sizeof up, "%s/up", dir);
    snprintf(path, sizeof path, "%s/app.lua", dir);
    if (mkdir(up, 0700) < 0 || !(f = fopen(path, "w")) || fprintf(f, app_fmt, up) < 0 ||
        fclose(f) != 0) {
        ok(0, "the app is written");
        return test_summary();
    }
    {
        const char *args[] = {"--port", "0", "--workers", "1", dir, NULL};
        ok(server_start(&s, args) == 0, "server starts");
    }
    if (s.pid > 0) {
        /* The first upload makes the worker's buffers and Lua heap: not counted as growth. */
        test_big(&s, 2, "warm-up");
        test_big(&s, 20, "big");
        test_pieces(s.port);
        test_cleanup(&s);
        test_client_leaves(s.port);
        test_errors(&s);
        is_int(server_stop(&s), 0, "exit status 0");
    }
    server_cleanup(&s);
    test_body_timeout();
    unlink(path);
    rmdir(up);
    rmdir(dir);
    free(wrap_copy);
    return test_summary();
}
