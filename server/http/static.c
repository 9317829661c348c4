/*
 * static.c: serving the files of a directory (app.static). Runs on the
 * worker that owns the request, in C, inside or outside Lua (see
 * tycho_static_serve's callers).
 *
 * Path safety, in order: the path after the prefix is split on '/', each
 * segment percent-decoded once; a malformed escape or a NUL is a 400; an
 * empty segment ("//"), "." and "..", an encoded '/', a backslash (raw or
 * encoded), a control character, or a segment starting with '.' (unless
 * dotfiles) is a 404. What is left is opened relative to the mount's
 * directory with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), which the
 * kernel refuses for anything (a symlink, "..") that resolves outside it.
 * Without openat2 (kernels before 5.6, or a seccomp filter that refuses it)
 * the path is resolved with realpath(3) and must lie under the directory's
 * real path before it is opened with O_NOFOLLOW; that leaves a window in
 * which a directory swapped for a symlink after the check is followed.
 *
 * Files are opened O_NONBLOCK (a FIFO put in the directory cannot block the
 * worker) and must be regular files.
 */
#include "http/static.h"
#include "http/gzip.h"
#include "http/http.h"
#include "core/log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define OPEN_FLAGS (O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)

/* ---- content types ------------------------------------------------------- */

static const struct {
    const char *ext;
    const char *type;
} types[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"cjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"map", "application/json"},
    {"webmanifest", "application/manifest+json"},
    {"txt", "text/plain; charset=utf-8"},
    {"md", "text/markdown; charset=utf-8"},
    {"csv", "text/csv; charset=utf-8"},
    {"xml", "application/xml"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"avif", "image/avif"},
    {"ico", "image/x-icon"},
    {"wasm", "application/wasm"},
    {"pdf", "application/pdf"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"otf", "font/otf"},
    {"mp4", "video/mp4"},
    {"webm", "video/webm"},
    {"mp3", "audio/mpeg"},
    {"ogg", "audio/ogg"},
    {"wav", "audio/wav"},
    {"zip", "application/zip"},
    {"gz", "application/gzip"},
};

const char *tycho_static_type(const char *name, size_t len)
{
    const char *slash = memrchr(name, '/', len), *dot;
    size_t ext_len;

    if (slash) {
        len -= (size_t)(slash + 1 - name);
        name = slash + 1;
    }
    if (!(dot = memrchr(name, '.', len)) || dot == name)
        return "application/octet-stream";
    ext_len = len - (size_t)(dot + 1 - name);
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (strlen(types[i].ext) == ext_len && strncasecmp(types[i].ext, dot + 1, ext_len) == 0)
            return types[i].type;
    return "application/octet-stream";
}

/* ---- mounts -------------------------------------------------------------- */

static long open_beneath_syscall(int dir_fd, const char *rel)
{
    struct open_how how = {
        .flags = OPEN_FLAGS,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };

    return syscall(SYS_openat2, dir_fd, rel, &how, sizeof(how));
}

int tycho_static_init(struct tycho_static *m, const char *dir, size_t prefix_len,
                      const struct tycho_static_opts *o, char *err)
{
    struct stat st;
    char *real;
    long probe;

    memset(m, 0, sizeof(*m));
    m->dir_fd = -1;
    m->prefix_len = prefix_len;
    m->dotfiles = o->dotfiles;
    m->max_age = o->max_age;
    m->gzip = o->gzip;
    if (stat(dir, &st) < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            snprintf(err, TYCHO_ERR_LEN, "directory \"%s\" does not exist", dir);
        else
            snprintf(err, TYCHO_ERR_LEN, "directory \"%s\" cannot be opened: %s", dir,
                     strerror(errno));
        return TYCHO_ERR;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, TYCHO_ERR_LEN, "\"%s\" is not a directory", dir);
        return TYCHO_ERR;
    }
    if (!(real = realpath(dir, NULL)) ||
        (m->dir_fd = open(real, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
        snprintf(err, TYCHO_ERR_LEN, "directory \"%s\" cannot be opened: %s", dir,
                 strerror(errno));
        free(real);
        return TYCHO_ERR;
    }
    m->root = real;
    m->root_len = strlen(real);
    if (o->index && !(m->index = strdup(o->index))) {
        snprintf(err, TYCHO_ERR_LEN, "out of memory");
        return TYCHO_ERR;
    }
    /* openat2 may be missing (before Linux 5.6) or refused by a seccomp filter: then realpath. */
    if (!getenv("TYCHO_STATIC_NO_OPENAT2") && (probe = open_beneath_syscall(m->dir_fd, ".")) >= 0) {
        close((int)probe);
        m->beneath = true;
    }
    return TYCHO_OK;
}

void tycho_static_dispose(struct tycho_static *m)
{
    if (m->dir_fd >= 0)
        close(m->dir_fd);
    m->dir_fd = -1;
    free(m->root);
    m->root = NULL;
    free(m->index);
    m->index = NULL;
}

/* ---- the request path ---------------------------------------------------- */

static int hex_value(unsigned char c)
{
    return isdigit(c) ? c - '0' : (tolower(c) - 'a' + 10);
}

/*
 * Decodes the URL path after the prefix (p, len: "" or "/...") into out as a
 * relative path ("" for the directory itself; cap bytes, NUL-terminated).
 * Returns 0, or the status to answer: 400 (a malformed escape, a NUL) or 404
 * (every other refusal, so that nothing tells a refused path from a
 * missing file). *trailing: the path ended in '/'.
 */
static int decode_path(const struct tycho_static *m, const char *p, size_t len, char *out,
                       size_t cap, bool *trailing)
{
    const char *end = p + len;
    size_t o = 0;

    *trailing = false;
    out[0] = '\0';
    if (len == 0)
        return 0;                     /* the prefix itself: the directory, without '/' */
    if (*p != '/')
        return 404;                   /* cannot happen: the router matched prefix + '/' */
    if (++p == end) {
        *trailing = true;
        return 0;
    }
    for (;;) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *seg_end = slash ? slash : end;
        size_t start = o;

        if (seg_end == p)
            return 404;               /* "//": one URL per file */
        for (const char *s = p; s < seg_end; s++) {
            unsigned char ch = (unsigned char)*s;
            if (ch == '%') {
                if (seg_end - s < 3 || !isxdigit((unsigned char)s[1]) ||
                    !isxdigit((unsigned char)s[2]))
                    return 400;
                ch = (unsigned char)(hex_value((unsigned char)s[1]) * 16 +
                                     hex_value((unsigned char)s[2]));
                s += 2;
                if (ch == '/')
                    return 404;       /* an encoded slash is not a separator, nor a name */
            }
            if (ch == '\0')
                return 400;
            if (ch == '\\' || ch < 0x20 || ch == 0x7f)
                return 404;
            if (o + 2 >= cap)
                return 404;           /* longer than any path we look up */
            out[o++] = (char)ch;
        }
        if (out[start] == '.') {
            size_t seg_len = o - start;
            if (seg_len == 1 || (seg_len == 2 && out[start + 1] == '.'))
                return 404;           /* "." and "..", however they were spelt */
            if (!m->dotfiles)
                return 404;           /* hidden files and directories */
        }
        if (o - start > NAME_MAX)
            return 404;
        if (!slash)
            break;
        p = slash + 1;
        if (p == end) {
            *trailing = true;
            break;
        }
        out[o++] = '/';
    }
    out[o] = '\0';
    return 0;
}

/* Whether real (an absolute path without symlinks) is m's directory or lies under it. */
static bool under_root(const struct tycho_static *m, const char *real)
{
    if (m->root_len == 1)
        return real[0] == '/';        /* the root directory is "/" */
    return strncmp(real, m->root, m->root_len) == 0 &&
           (real[m->root_len] == '/' || real[m->root_len] == '\0');
}

/* Opens rel ("" for the directory) under m, refusing what resolves outside it. -1 with errno. */
static int open_under(const struct tycho_static *m, const char *rel)
{
    char full[PATH_MAX], real[PATH_MAX];
    int n;

    if (m->beneath)
        return (int)open_beneath_syscall(m->dir_fd, *rel ? rel : ".");
    n = snprintf(full, sizeof(full), "%s/%s", m->root, rel);
    if (n < 0 || (size_t)n >= sizeof(full)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (!realpath(full, real))
        return -1;
    if (!under_root(m, real)) {
        errno = EXDEV;
        return -1;
    }
    return open(real, OPEN_FLAGS | O_NOFOLLOW);
}

/* ---- the response -------------------------------------------------------- */

/* Appends n bytes to the response headers. Returns false when out of memory. */
static bool add_raw(struct tycho_req *r, const char *s, size_t n)
{
    char *grown = tycho_arena_append(&r->arena, r->res_headers, r->res_headers_len, s, n);

    if (!grown)
        return false;
    r->res_headers = grown;
    r->res_headers_len += n;
    return true;
}

/* A short text answer (errors); the writer adds Content-Type: text/plain unless one was set. */
static void answer_text(struct tycho_req *r, int status, const char *extra)
{
    static const char *const bodies[][2] = {
        {"400", "Bad Request\n"},
        {"404", "Not Found\n"},
        {"416", "Range Not Satisfiable\n"},
        {"503", "Service Unavailable\n"},
    };

    if (extra && !add_raw(r, extra, strlen(extra)))
        status = 503;
    r->status = status;
    r->res_body = "";
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
        if (atoi(bodies[i][0]) == status)
            r->res_body = bodies[i][1];
    r->res_body_len = strlen(r->res_body);
    r->res_flags |= TYCHO_RES_SENT;
}

/* open(2) failed with err: out of descriptors or memory is a 503 (and logged), the rest 404. */
static void answer_open_error(struct tycho_static *m, struct tycho_req *r, int err)
{
    if (err == EMFILE || err == ENFILE || err == ENOMEM) {
        if (tycho_log_allow(&m->open_fail_log_s, 60))
            tycho_log_error("app.static: cannot open files under %s: %s (answered 503; "
                            "logged at most once a minute)", m->root, strerror(err));
        answer_text(r, 503, "Retry-After: 1\r\n");
        return;
    }
    answer_text(r, 404, NULL);
}

/* A redirect to the same path with '/' added (and the query kept): a directory's index. */
static void answer_slash_redirect(struct tycho_req *r)
{
    bool good = add_raw(r, "Location: ", 10) && add_raw(r, r->path, r->path_len) &&
                add_raw(r, "/", 1) && (!r->query || (add_raw(r, "?", 1) &&
                                                     add_raw(r, r->query, r->query_len))) &&
                add_raw(r, "\r\n", 2);

    if (!good) {
        answer_text(r, 503, NULL);
        return;
    }
    r->status = 301;
    r->res_body = "";
    r->res_body_len = 0;
    r->res_flags |= TYCHO_RES_SENT;
}

/* Skips optional white space. */
static const char *skip_ows(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

/*
 * Whether one of the If-None-Match lists (every such header) names etag,
 * by the weak comparison RFC 9110 asks for here, or is "*". *present: any
 * If-None-Match was sent.
 */
static bool none_match_hits(const struct tycho_req *r, const char *etag, bool *present)
{
    size_t etag_len = strlen(etag);

    *present = false;
    for (unsigned i = 0; i < r->nheaders; i++) {
        const struct tycho_header *h = &r->headers[i];
        const char *p = h->value, *end = h->value + h->value_len;
        if (h->name_len != 13 || strncasecmp(h->name, "if-none-match", 13) != 0)
            continue;
        *present = true;
        while (p < end) {
            const char *comma = memchr(p, ',', (size_t)(end - p)), *e = comma ? comma : end;
            p = skip_ows(p, e);
            while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if (e - p == 1 && *p == '*')
                return true;
            if (e - p >= 2 && p[0] == 'W' && p[1] == '/')
                p += 2;
            if ((size_t)(e - p) == etag_len && memcmp(p, etag, etag_len) == 0)
                return true;
            p = comma ? comma + 1 : end;
        }
    }
    return false;
}

/* Parses an HTTP-date (IMF-fixdate, RFC 850 or asctime). Returns false when it is not one. */
static bool parse_http_date(const char *s, size_t len, time_t *out)
{
    static const char *const formats[] = {
        "%a, %d %b %Y %H:%M:%S GMT",
        "%A, %d-%b-%y %H:%M:%S GMT",
        "%a %b %e %H:%M:%S %Y",
    };
    char buf[64];

    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
        struct tm tm;
        const char *rest;
        memset(&tm, 0, sizeof(tm));
        rest = strptime(buf, formats[i], &tm);
        if (rest && *rest == '\0') {
            *out = timegm(&tm);
            return true;
        }
    }
    return false;
}

/*
 * RFC 9110 13.2.2: If-None-Match decides when present (a match is a 304);
 * otherwise If-Modified-Since does (not modified since that date: 304); an
 * invalid date is ignored.
 */
static bool not_modified(const struct tycho_req *r, const char *etag, time_t mtime)
{
    const struct tycho_header *h;
    bool present;
    time_t since;

    if (none_match_hits(r, etag, &present))
        return true;
    if (present)
        return false;
    h = tycho_req_header(r, "if-modified-since", 17);
    return h && parse_http_date(h->value, h->value_len, &since) && mtime <= since;
}

/*
 * If-Range: the Range applies only when the validator still holds: an
 * entity tag equal to ours by the strong comparison (a weak one never is),
 * or a date equal to Last-Modified.
 */
static bool if_range_holds(const struct tycho_req *r, const char *etag, time_t mtime)
{
    const struct tycho_header *h = tycho_req_header(r, "if-range", 8);
    const char *p, *end;
    time_t when;

    if (!h)
        return true;
    p = skip_ows(h->value, h->value + h->value_len);
    end = h->value + h->value_len;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (end - p >= 2 && p[0] == 'W' && p[1] == '/')
        return false;                 /* a weak tag never matches strongly */
    if (p < end && *p == '"')
        return (size_t)(end - p) == strlen(etag) && memcmp(p, etag, (size_t)(end - p)) == 0;
    return parse_http_date(p, (size_t)(end - p), &when) && when == mtime;
}

/* Reads decimal digits, saturating at UINT64_MAX. Returns how many were read. */
static size_t parse_digits(const char *p, const char *end, uint64_t *v)
{
    size_t n = 0;

    *v = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++, n++)
        *v = *v > (UINT64_MAX - 9) / 10 ? UINT64_MAX : *v * 10 + (uint64_t)(*p - '0');
    return n;
}

enum range_result { RANGE_IGNORE, RANGE_ONE, RANGE_UNSATISFIABLE };

/*
 * Parses a Range value for a representation of size bytes (> 0): one range
 * of bytes (a-b, a-, -n) is RANGE_ONE with [*first, *last]; a range that
 * starts at or past the end, or "-0", is RANGE_UNSATISFIABLE; anything else
 * (another unit, bad syntax, b < a, several ranges) is ignored and the whole
 * file is sent.
 */
static enum range_result parse_range(const char *v, size_t len, uint64_t size, uint64_t *first,
                                     uint64_t *last)
{
    const char *p = v, *end = v + len;
    uint64_t a, b;
    size_t na, nb;

    p = skip_ows(p, end);
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (end - p < 6 || strncasecmp(p, "bytes=", 6) != 0)
        return RANGE_IGNORE;
    p = skip_ows(p + 6, end);
    if (memchr(p, ',', (size_t)(end - p)))
        return RANGE_IGNORE;          /* several ranges: answered with the whole file */
    if (p < end && *p == '-') {
        nb = parse_digits(p + 1, end, &b);
        if (nb == 0 || p + 1 + nb != end)
            return RANGE_IGNORE;
        if (b == 0)
            return RANGE_UNSATISFIABLE;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return RANGE_ONE;
    }
    na = parse_digits(p, end, &a);
    if (na == 0 || p + na >= end || p[na] != '-')
        return RANGE_IGNORE;
    p += na + 1;
    nb = parse_digits(p, end, &b);
    if (p + nb != end || (nb > 0 && b < a))
        return RANGE_IGNORE;
    if (a >= size)
        return RANGE_UNSATISFIABLE;
    *first = a;
    *last = nb > 0 && b < size ? b : size - 1;
    return RANGE_ONE;
}

/* What became of a precompressed sibling (FILE.gz) of the file asked for. */
enum sibling { SIBLING_NONE, SIBLING_NOT_USED, SIBLING_USED };

/*
 * Swaps *fd and *st for those of rel's precompressed sibling when there is
 * one to serve (see tycho_static_serve); closes the one not kept. Any
 * failure to open or check the sibling only means it is not there.
 */
static enum sibling pick_sibling(const struct tycho_static *m, const struct tycho_req *r,
                                 int *fd, struct stat *st, const char *rel)
{
    char gz_rel[TYCHO_STATIC_PATH_MAX + NAME_MAX + 6];
    const char *type = tycho_static_type(rel, strlen(rel));
    struct stat gz_st;
    int gz_fd;

    if (!m->gzip || !tycho_gzip_type_ok(type, strlen(type)) ||
        (size_t)snprintf(gz_rel, sizeof(gz_rel), "%s.gz", rel) >= sizeof(gz_rel) ||
        (gz_fd = open_under(m, gz_rel)) < 0)
        return SIBLING_NONE;
    if (fstat(gz_fd, &gz_st) < 0 || !S_ISREG(gz_st.st_mode) ||
        gz_st.st_mtim.tv_sec < st->st_mtim.tv_sec ||
        (gz_st.st_mtim.tv_sec == st->st_mtim.tv_sec &&
         gz_st.st_mtim.tv_nsec < st->st_mtim.tv_nsec)) {
        close(gz_fd);                 /* not a file, or older than FILE: stale */
        return SIBLING_NONE;
    }
    /* Range is answered from FILE (a range of the gzip bytes would be a surprise). */
    if (!tycho_gzip_accepts(r) || (!r->is_head && tycho_req_header(r, "range", 5))) {
        close(gz_fd);
        return SIBLING_NOT_USED;
    }
    close(*fd);
    *fd = gz_fd;
    *st = gz_st;
    return SIBLING_USED;
}

/*
 * Answers with the open regular file fd (st): 200, 206, 304 or 416. Takes fd.
 * sib: fd is rel's precompressed sibling (USED), or rel has one not used.
 */
static void answer_file(const struct tycho_static *m, struct tycho_req *r, int fd,
                        const struct stat *st, const char *rel, enum sibling sib)
{
    char etag[84], date[64], head[600];
    uint64_t size = (uint64_t)st->st_size, first = 0, last = size ? size - 1 : 0;
    int status = 200, n = 0;
    struct tm tm;

    snprintf(etag, sizeof(etag), "\"%llx-%llx-%llx%s\"", (unsigned long long)st->st_ino,
             (unsigned long long)size,
             (unsigned long long)st->st_mtim.tv_sec * 1000000000ULL +
                 (unsigned long long)st->st_mtim.tv_nsec,
             sib == SIBLING_USED ? "-gz" : "");
    gmtime_r(&st->st_mtime, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (not_modified(r, etag, st->st_mtime)) {
        status = 304;
    } else if (!r->is_head && size > 0) {
        /* Range applies to GET only (RFC 9110 14.2); an empty file has no bytes to range over. */
        const struct tycho_header *h = tycho_req_header(r, "range", 5);
        if (h && if_range_holds(r, etag, st->st_mtime)) {
            switch (parse_range(h->value, h->value_len, size, &first, &last)) {
            case RANGE_IGNORE:
                break;
            case RANGE_ONE:
                status = 206;
                break;
            case RANGE_UNSATISFIABLE:
                close(fd);
                snprintf(head, sizeof(head), "Content-Range: bytes */%llu\r\n",
                         (unsigned long long)size);
                answer_text(r, 416, head);
                return;
            }
        }
    }
    if (status != 304 && !(r->res_flags & TYCHO_RES_CONTENT_TYPE))
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Type: %s\r\n",
                      tycho_static_type(rel, strlen(rel)));
    n += snprintf(head + n, sizeof(head) - (size_t)n, "Last-Modified: %s\r\nETag: %s\r\n", date,
                  etag);
    if (status != 304 && sib != SIBLING_USED)  /* ranges are of FILE, not of FILE.gz */
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Accept-Ranges: bytes\r\n");
    if (m->max_age >= 0)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Cache-Control: max-age=%ld\r\n",
                      m->max_age);
    if (sib != SIBLING_NONE)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Vary: Accept-Encoding\r\n%s",
                      sib == SIBLING_USED && status != 304 ? "Content-Encoding: gzip\r\n" : "");
    if (status == 206)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Content-Range: bytes %llu-%llu/%llu\r\n",
                      (unsigned long long)first, (unsigned long long)last,
                      (unsigned long long)size);
    if (!add_raw(r, head, (size_t)n)) {
        close(fd);
        answer_text(r, 503, NULL);
        return;
    }
    r->status = status;
    r->res_flags |= TYCHO_RES_SENT | TYCHO_RES_CONTENT_TYPE;
    r->res_body = NULL;
    r->res_body_len = 0;
    if (status == 304) {
        close(fd);
        return;
    }
    r->res_flags |= TYCHO_RES_FILE;
    r->file_fd = fd;
    r->file_open = true;
    r->file_off = (long long)first;
    r->res_body_len = size ? (size_t)(last - first + 1) : 0;
}

void tycho_static_serve(struct tycho_static *m, struct tycho_req *r)
{
    char rel[TYCHO_STATIC_PATH_MAX + NAME_MAX + 2];
    size_t rel_len;
    bool trailing;
    struct stat st;
    int status, fd;

    status = decode_path(m, r->path + m->prefix_len, r->path_len - m->prefix_len, rel,
                         TYCHO_STATIC_PATH_MAX, &trailing);
    if (status) {
        answer_text(r, status, NULL);
        return;
    }
    if ((fd = open_under(m, rel)) < 0) {
        answer_open_error(m, r, errno);
        return;
    }
    if (fstat(fd, &st) < 0 || (!S_ISDIR(st.st_mode) && (trailing || !S_ISREG(st.st_mode)))) {
        close(fd);                    /* a FIFO, a device, or a file asked for as a directory */
        answer_text(r, 404, NULL);
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        if (!m->index) {
            answer_text(r, 404, NULL);  /* no listings */
            return;
        }
        rel_len = strlen(rel);
        snprintf(rel + rel_len, sizeof(rel) - rel_len, "%s%s", rel_len ? "/" : "", m->index);
        if ((fd = open_under(m, rel)) < 0) {
            answer_open_error(m, r, errno);
            return;
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
            close(fd);
            answer_text(r, 404, NULL);
            return;
        }
        if (!trailing) {
            /* Relative links in the index resolve against the directory only with the '/'. */
            close(fd);
            answer_slash_redirect(r);
            return;
        }
    }
    enum sibling sib = pick_sibling(m, r, &fd, &st, rel);   /* may swap fd and st */
    answer_file(m, r, fd, &st, rel, sib);
}
