/*
 * bind_upload.c: the files a streamed req:multipart writes its file parts to
 * (web.lua parses; this file creates, writes, moves and deletes). Each file
 * is made with mkostemp (a random name, mode 0600) in the directory the app
 * names, and deleted when the request's handler ends, however it ends
 * (returned, raised, abandoned when its client left), unless it was moved:
 * its record lives in the request's arena and is a tycho_task_defer of the
 * request's task, which ends before the arena is reset. The file I/O blocks
 * the worker: it is meant for local disks. Runs on the worker thread, inside
 * the request's coroutine; raises on misuse and on a file that cannot be
 * made or written, after letting go of what it held.
 */
#include "lua/bind.h"
#include "lua/task.h"
#include "http/http.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#define UPLOAD_MAGIC 0x75706c64u     /* "upld": a handle that is one of ours */
#define UPLOAD_NAME "/tycho-upload-XXXXXX"

/* One upload file of a request (in its arena). */
struct upload {
    struct tycho_defer defer;         /* first: the defer is this struct */
    unsigned magic;
    struct tycho_req *r;              /* borrowed: the request it belongs to */
    int fd;                           /* owned; -1 once closed */
    bool gone;                        /* moved or deleted: nothing left to delete */
    char path[];
};

/* The defer: the handler has ended, so the file goes unless it was moved. Never raises. */
static void upload_end(struct tycho_defer *d)
{
    struct upload *u = (struct upload *)d;

    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
    if (!u->gone)
        unlink(u->path);              /* ENOENT (os.rename moved it) is fine */
    u->gone = true;
}

/* The live request behind the req at 1; raises on misuse. */
static struct tycho_req *check_req(lua_State *L)
{
    const struct tycho_obj_box *box = luaL_checkudata(L, 1, "tycho.req");
    struct tycho_req *r = tycho_obj_req(box);

    if (!r)
        luaL_error(L, "request finished: this req belongs to a request that has ended");
    return r;
}

/* The upload at 2, one of r's; raises otherwise. */
static struct upload *check_upload(lua_State *L, struct tycho_req *r)
{
    struct upload *u = lua_touserdata(L, 2);

    if (!lua_islightuserdata(L, 2) || !u || u->magic != UPLOAD_MAGIC || u->r != r)
        luaL_argerror(L, 2, "not an upload of this request");
    return u;
}

/* open(req, dir) -> handle, path: a new empty file in dir, deleted when the handler ends. */
static int upload_open(lua_State *L)
{
    struct tycho_req *r = check_req(L);
    size_t dir_len;
    const char *dir = luaL_checklstring(L, 2, &dir_len);
    struct upload *u;
    int fd, err;

    tycho_task_check(L, "req:multipart", TYCHO_PLACE_WAIT);
    if (!tycho_task_runs_request(L, r))
        return luaL_error(L, "req:multipart: only in the handler of the request itself");
    if (dir_len == 0 || dir_len > PATH_MAX - sizeof(UPLOAD_NAME) || memchr(dir, 0, dir_len))
        return luaL_error(L, "req:multipart: dir must be a directory's path");
    u = tycho_arena_alloc(&r->arena, sizeof(*u) + dir_len + sizeof(UPLOAD_NAME));
    if (!u)
        return luaL_error(L, "req:multipart: out of memory");
    memcpy(u->path, dir, dir_len);
    memcpy(u->path + dir_len, UPLOAD_NAME, sizeof(UPLOAD_NAME));
    if ((fd = mkostemp(u->path, O_CLOEXEC)) < 0) {
        err = errno;
        return luaL_error(L, "req:multipart: cannot create a file in %s: %s", dir,
                          strerror(err));
    }
    u->defer.fn = upload_end;
    u->defer.next = NULL;
    u->magic = UPLOAD_MAGIC;
    u->r = r;
    u->fd = fd;
    u->gone = false;
    tycho_task_defer(L, &u->defer);   /* from here on the file is the task's */
    lua_pushlightuserdata(L, u);
    lua_pushstring(L, u->path);
    return 2;
}

/* write(req, handle, data): appends data to the file; raises when it cannot (a full disk). */
static int upload_write(lua_State *L)
{
    struct upload *u = check_upload(L, check_req(L));
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);

    if (u->fd < 0)
        return luaL_error(L, "req:multipart: the file %s is closed", u->path);
    while (len > 0) {
        ssize_t n = write(u->fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int err = n < 0 ? errno : ENOSPC;
            return luaL_error(L, "req:multipart: cannot write %s: %s", u->path, strerror(err));
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* close(req, handle): the part is complete; the file stays until the handler ends. */
static int upload_close(lua_State *L)
{
    struct upload *u = check_upload(L, check_req(L));

    if (u->fd >= 0)
        close(u->fd);
    u->fd = -1;
    return 0;
}

/* drop(req, handle): closes and deletes the file now (a part over its limit). */
static int upload_drop(lua_State *L)
{
    struct upload *u = check_upload(L, check_req(L));

    upload_end(&u->defer);            /* stays deferred: ending it again does nothing */
    return 0;
}

/* Copies from's bytes to a new file at to (mode 0600); 0 or an errno. to is removed on failure. */
static int copy_file(const char *from, const char *to)
{
    int in = -1, out = -1, err = 0;
    struct stat st;
    off_t off = 0;

    if ((in = open(from, O_RDONLY | O_CLOEXEC)) < 0 || fstat(in, &st) < 0) {
        err = errno;
        goto out;
    }
    if ((out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
        err = errno;
        goto out;
    }
    while (off < st.st_size) {
        ssize_t n = sendfile(out, in, &off, (size_t)(st.st_size - off));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? errno : EIO;
            break;
        }
    }
    if (close(out) < 0 && !err)
        err = errno;
    out = -1;
    if (err)
        unlink(to);
out:
    if (in >= 0)
        close(in);
    return err;
}

/*
 * move(req, handle, dest) -> true, or nil and why: rename(2), or a copy and
 * a delete when dest is on another file system. Either way the file is no
 * longer deleted when the handler ends.
 */
static int upload_move(lua_State *L)
{
    struct upload *u = check_upload(L, check_req(L));
    const char *dest = luaL_checkstring(L, 3);
    int err = 0;

    if (u->gone)
        return luaL_error(L, "part:move: the file was moved or deleted already");
    if (u->fd >= 0)
        return luaL_error(L, "part:move: the part is still being written");
    if (rename(u->path, dest) < 0) {
        err = errno;
        if (err == EXDEV && (err = copy_file(u->path, dest)) == 0)
            unlink(u->path);
    }
    if (err) {
        lua_pushnil(L);
        lua_pushfstring(L, "part:move: cannot move %s to %s: %s", u->path, dest, strerror(err));
        return 2;
    }
    u->gone = true;
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg upload_functions[] = {
    {"open", upload_open},   {"write", upload_write}, {"close", upload_close},
    {"drop", upload_drop},   {"move", upload_move},   {NULL, NULL},
};

void tycho_bind_upload(lua_State *L)
{
    /* tycho._upload for web.lua, which takes it away. */
    lua_newtable(L);
    luaL_register(L, NULL, upload_functions);
    lua_setfield(L, -2, "_upload");
}
