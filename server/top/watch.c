/*
 * watch.c: inotify on DIR and every directory below it. A change to a file
 * whose name ends in .lua, or any directory made, removed or renamed,
 * (re)starts a 100 ms timer; when it fires, the callback runs once. Hidden
 * names (editor swap files such as .app.lua.swp) are ignored, except
 * directories and names starting with ".." (Kubernetes swaps a ConfigMap's
 * files in through ..data).
 *
 * DIR/tests is not watched: it holds the app's tests (`tycho test`), which the
 * server does not load, so saving a test reloads nothing.
 *
 * Directories come and go (renamed, removed, DIR itself replaced by a new
 * one), and a watch follows an inode, not a path. So after any such change
 * the whole watch set is rebuilt from DIR's path, on a fresh inotify
 * instance, before the callback runs.
 */
#include "top/watch.h"
#include "core/tycho.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define SETTLE_US 100000
#define WATCH_MASK (IN_CLOSE_WRITE | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_FROM | \
                    IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
#define MAX_DEPTH 16

struct tycho_watch {
    struct event_base *base;
    char *root;                     /* DIR as given */
    int fd;                         /* inotify, -1 when none */
    int root_wd;                    /* the watch on DIR itself */
    struct event *readable;
    struct event *settle;           /* the debounce timer */
    bool rebuild;                   /* directories changed: watch anew before the callback */
    bool failing;                   /* DIR cannot be watched now (gone?): retrying */
    const char *suffix;             /* borrowed: the file names that count; NULL: every one */
    tycho_watch_fn *fn;
    void *arg;
};

static bool is_dir(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Watches path and the directories below it (to MAX_DEPTH). TYCHO_ERR with err on failure. */
static int add_tree(struct tycho_watch *w, const char *path, int depth, char *err)
{
    DIR *d;
    struct dirent *e;

    int wd = inotify_add_watch(w->fd, path, WATCH_MASK);

    if (wd < 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --watch: cannot watch %s: %s%s", path,
                 strerror(errno),
                 errno == ENOSPC ? " (raise /proc/sys/fs/inotify/max_user_watches)" : "");
        return TYCHO_ERR;
    }
    if (depth == 0)
        w->root_wd = wd;
    if (depth >= MAX_DEPTH || !(d = opendir(path)))
        return TYCHO_OK;
    while ((e = readdir(d))) {
        char sub[PATH_MAX];
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
            (depth == 0 && strcmp(e->d_name, "tests") == 0))
            continue;
        if (e->d_type != DT_DIR && e->d_type != DT_LNK && e->d_type != DT_UNKNOWN)
            continue;
        if ((size_t)snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name) >= sizeof(sub) ||
            !is_dir(sub))
            continue;
        if (add_tree(w, sub, depth + 1, err) < 0) {
            closedir(d);
            return TYCHO_ERR;
        }
    }
    closedir(d);
    return TYCHO_OK;
}

static void on_readable(evutil_socket_t fd, short what, void *arg);

/* A fresh inotify instance watching the tree at w->root. TYCHO_ERR with err on failure. */
static int watch_tree(struct tycho_watch *w, char *err)
{
    if (w->readable)
        event_free(w->readable);
    w->readable = NULL;
    if (w->fd >= 0)
        close(w->fd);
    if ((w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --watch: inotify: %s", strerror(errno));
        return TYCHO_ERR;
    }
    if (add_tree(w, w->root, 0, err) < 0)
        return TYCHO_ERR;
    if (!(w->readable = event_new(w->base, w->fd, EV_READ | EV_PERSIST, on_readable, w)) ||
        event_add(w->readable, NULL) < 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --watch: cannot set up its events");
        return TYCHO_ERR;
    }
    return TYCHO_OK;
}

/* Whether an event may change what the scripts see; sets *structural for directory changes. */
static bool matters(const struct tycho_watch *w, const struct inotify_event *ev,
                    bool *structural)
{
    size_t len = ev->len ? strlen(ev->name) : 0;

    if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_Q_OVERFLOW)) {
        *structural = true;
        return true;
    }
    if (len == 0 || (ev->wd == w->root_wd && strcmp(ev->name, "tests") == 0))
        return false;
    if (ev->mask & IN_ISDIR) {
        *structural = true;
        return true;
    }
    if (strncmp(ev->name, "..", 2) == 0) {    /* ..data swapped in (Kubernetes) */
        *structural = true;
        return true;
    }
    if (ev->name[0] == '.')
        return false;
    return !w->suffix || (len > strlen(w->suffix) &&
                          strcmp(ev->name + len - strlen(w->suffix), w->suffix) == 0);
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
            changed |= matters(w, ev, &w->rebuild);
        }
    }
    if (changed)
        evtimer_add(w->settle, &settle);  /* re-armed by every change: fires once they settle */
}

static void on_settled(evutil_socket_t fd, short what, void *arg)
{
    struct tycho_watch *w = arg;
    char err[TYCHO_ERR_LEN];

    (void)fd;
    (void)what;
    if (w->rebuild) {
        if (watch_tree(w, err) < 0) {
            /* DIR gone for now, say: the old code keeps serving; look again every second. */
            struct timeval retry = {1, 0};
            if (!w->failing)
                tycho_log_warn("%s; trying again every second", err + strlen("tycho: "));
            w->failing = true;
            evtimer_add(w->settle, &retry);
            return;
        }
        if (w->failing)
            tycho_log_info("--watch: watching %s again", w->root);
        w->failing = false;
        w->rebuild = false;
    }
    w->fn(w->arg);
}

struct tycho_watch *tycho_watch_new(struct event_base *base, const char *dir, const char *suffix,
                                    tycho_watch_fn *fn, void *arg, char *err)
{
    struct tycho_watch *w = calloc(1, sizeof(*w));

    if (!w || !(w->root = strdup(dir))) {
        free(w);
        snprintf(err, TYCHO_ERR_LEN, "tycho: --watch: out of memory");
        return NULL;
    }
    w->base = base;
    w->fd = -1;
    w->suffix = suffix;
    w->fn = fn;
    w->arg = arg;
    if (!(w->settle = evtimer_new(base, on_settled, w))) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --watch: cannot set up its events");
        goto fail;
    }
    if (watch_tree(w, err) < 0)
        goto fail;
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
    free(w->root);
    free(w);
}
