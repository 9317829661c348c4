/*
 * watch.c: inotify on DIR and every directory below it. A change to a file
 * whose name ends in .lua, or any directory created, removed or renamed,
 * (re)starts a 100 ms timer; when it fires, the callback runs once. New
 * sub-directories are watched as they appear. Hidden names (editor swap
 * files such as .app.lua.swp) are ignored.
 */
#include "watch.h"
#include "config.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#define SETTLE_US 100000
#define WATCH_MASK (IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | \
                    IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
#define MAX_DEPTH 16

/* Which directory a watch descriptor is. */
struct watched {
    int wd;
    char *path;
};

struct tycho_watch {
    int fd;                         /* inotify */
    struct event *readable;
    struct event *settle;           /* the debounce timer */
    tycho_watch_fn *fn;
    void *arg;
    struct watched *dirs;
    size_t ndirs, cap;
};

static const char *path_of(const struct tycho_watch *w, int wd)
{
    for (size_t i = 0; i < w->ndirs; i++)
        if (w->dirs[i].wd == wd)
            return w->dirs[i].path;
    return NULL;
}

/* Watches path and the directories below it (to MAX_DEPTH). TYCHO_ERR with err on failure. */
static int add_tree(struct tycho_watch *w, const char *path, int depth, char *err)
{
    int wd = inotify_add_watch(w->fd, path, WATCH_MASK);
    DIR *d;
    struct dirent *e;

    if (wd < 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --watch: cannot watch %s: %s%s", path,
                 strerror(errno),
                 errno == ENOSPC ? " (raise /proc/sys/fs/inotify/max_user_watches)" : "");
        return TYCHO_ERR;
    }
    if (!path_of(w, wd)) {
        if (w->ndirs == w->cap) {
            size_t cap = w->cap ? w->cap * 2 : 8;
            struct watched *grown = realloc(w->dirs, cap * sizeof(*grown));
            if (!grown)
                goto oom;
            w->dirs = grown;
            w->cap = cap;
        }
        if (!(w->dirs[w->ndirs].path = strdup(path)))
            goto oom;
        w->dirs[w->ndirs++].wd = wd;
    }
    if (depth >= MAX_DEPTH || !(d = opendir(path)))
        return TYCHO_OK;
    while ((e = readdir(d))) {
        char sub[PATH_MAX];
        if (e->d_name[0] == '.' || e->d_type != DT_DIR)
            continue;
        if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name) >= sizeof(sub))
            continue;
        if (add_tree(w, sub, depth + 1, err) < 0) {
            closedir(d);
            return TYCHO_ERR;
        }
    }
    closedir(d);
    return TYCHO_OK;
oom:
    snprintf(err, TYCHO_ERR_LEN, "tycho: --watch: out of memory");
    return TYCHO_ERR;
}

/* Whether an event is a change the scripts may see. */
static bool matters(const struct inotify_event *ev)
{
    size_t len = ev->len ? strlen(ev->name) : 0;

    if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_Q_OVERFLOW))
        return true;
    if (len == 0 || ev->name[0] == '.')
        return false;
    return (ev->mask & IN_ISDIR) || (len > 4 && strcmp(ev->name + len - 4, ".lua") == 0);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_watch *w = arg;
    char buf[16 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
    struct timeval settle = {0, SETTLE_US};
    bool changed = false;
    ssize_t n;

    (void)what;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof(*ev) + ev->len;
            if (!matters(ev))
                continue;
            changed = true;
            if ((ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO))) {
                const char *parent = path_of(w, ev->wd);
                char sub[PATH_MAX], err[TYCHO_ERR_LEN];
                if (parent && (size_t)snprintf(sub, sizeof(sub), "%s/%s", parent, ev->name) <
                                  sizeof(sub) &&
                    add_tree(w, sub, 1, err) < 0)
                    tycho_log_warn("%s", err + strlen("tycho: "));
            }
        }
    }
    if (changed)
        evtimer_add(w->settle, &settle);  /* re-armed by every change: fires once they settle */
}

static void on_settled(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_watch *w = arg;

    (void)fd;
    (void)what;
    w->fn(w->arg);
}

struct tycho_watch *tycho_watch_new(struct event_base *base, const char *dir, tycho_watch_fn *fn,
                                    void *arg, char *err)
{
    struct tycho_watch *w = calloc(1, sizeof(*w));

    if (!w) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --watch: out of memory");
        return NULL;
    }
    w->fn = fn;
    w->arg = arg;
    if ((w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --watch: inotify: %s", strerror(errno));
        goto fail;
    }
    if (add_tree(w, dir, 0, err) < 0)
        goto fail;
    if (!(w->readable = event_new(base, w->fd, EV_READ | EV_PERSIST, on_readable, w)) ||
        !(w->settle = evtimer_new(base, on_settled, w)) || event_add(w->readable, NULL) < 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --watch: cannot set up its events");
        goto fail;
    }
    return w;
fail:
    tycho_watch_free(w);
    return NULL;
}

void tycho_watch_free(struct tycho_watch *w)
{
    if (!w)
        return;
    if (w->readable)
        event_free(w->readable);
    if (w->settle)
        event_free(w->settle);
    if (w->fd >= 0)
        close(w->fd);
    for (size_t i = 0; i < w->ndirs; i++)
        free(w->dirs[i].path);
    free(w->dirs);
    free(w);
}
