/*
 * static.h: static files (app.static). A mount maps a URL prefix to a
 * directory; tycho_static_serve turns a GET or HEAD under the prefix into a
 * response in the request context: the file's headers, its status (200, 206,
 * 304, 301, 400, 404, 416, 503) and, for a body, an open file descriptor
 * that conn.c sends (read into the response when small, sendfile(2) from
 * the worker when large). No Lua here.
 *
 * A mount is made at script load time (bind_app.c embeds it in a Lua
 * userdata whose __gc disposes it) on the thread that builds the generation,
 * and only that thread serves from it.
 */
#ifndef TYCHO_STATIC_H
#define TYCHO_STATIC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/tycho.h"

struct tycho_req;

/*
 * Files up to this size are read into the response (one copy, one send with
 * the head, no descriptor kept past the request); larger ones are sent with
 * sendfile(2) as the socket takes them. 64 KiB is what fits in a loopback or
 * LAN socket's send buffer at once and well under the 256 KiB of output a
 * connection may hold, so a small file never makes the worker wait or grow.
 */
#define TYCHO_STATIC_SMALL_BYTES (64 * 1024)

/* The longest path (after the prefix, decoded) a mount looks up; longer gets 404. */
#define TYCHO_STATIC_PATH_MAX 4096

/* What app.static's opts say. */
struct tycho_static_opts {
    const char *index;        /* borrowed: file served for a directory; NULL: none */
    bool dotfiles;            /* serve path segments starting with '.' */
    long max_age;             /* Cache-Control: max-age=N; -1: no Cache-Control */
    bool gzip;                /* serve FILE.gz for FILE to clients that accept gzip */
};

struct tycho_static {
    int dir_fd;               /* owned: O_PATH of the directory; -1 once disposed */
    char *root;               /* owned: the directory's real path */
    size_t root_len;
    char *index;              /* owned, or NULL: no index */
    bool dotfiles;
    long max_age;
    bool gzip;                /* look for precompressed FILE.gz siblings */
    bool beneath;             /* openat2(RESOLVE_BENEATH) works; else the realpath check */
    size_t prefix_len;        /* bytes of the URL prefix before the file path ("/" counts 0) */
    _Atomic long open_fail_log_s; /* rate limit of the "cannot open files" line */
};

/*
 * Opens dir (an absolute or cwd-relative path) for serving under a URL
 * prefix of prefix_len bytes (0 for "/"). Probes openat2; the environment
 * variable TYCHO_STATIC_NO_OPENAT2 (any value) forces the realpath check,
 * for tests. Returns TYCHO_OK, or TYCHO_ERR with err filled ("directory X
 * does not exist", "... is not a directory", "... cannot be opened: why")
 * and m left disposable.
 */
int tycho_static_init(struct tycho_static *m, const char *dir, size_t prefix_len,
                      const struct tycho_static_opts *o, char *err);

/* Closes and frees what init made; idempotent. */
void tycho_static_dispose(struct tycho_static *m);

/*
 * Answers r (a GET or HEAD routed to m) into r: status, headers (appended to
 * r->res_headers), a text body for errors, or a file body (r->file_fd owned
 * by r, TYCHO_RES_FILE set, r->res_body_len bytes from r->file_off). Never
 * raises, never fails: a failure is the status. The body is marked sent.
 *
 * Precompressed files: when the mount has gzip on and FILE's type is one
 * worth compressing (tycho_gzip_type_ok), a regular file FILE.gz beside it
 * that is not older than FILE is served instead to a client that accepts
 * gzip, for a request without Range: FILE's Content-Type, Content-Encoding:
 * gzip, FILE.gz's own length, Last-Modified and ETag (its own, marked "-gz",
 * so it never equals FILE's). Either way such a FILE's responses carry Vary:
 * Accept-Encoding. A Range request is answered from FILE. Nothing is
 * compressed on the fly here: a file body is sent as it is on disk.
 */
void tycho_static_serve(struct tycho_static *m, struct tycho_req *r);

/* The Content-Type for a file name, by its extension; "application/octet-stream" by default. */
const char *tycho_static_type(const char *name, size_t len);

#endif
