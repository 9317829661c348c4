/*
 * watch.h: --watch. Watches a script directory and its sub-directories with
 * inotify (files written, created, deleted, renamed in or out: editors that
 * save by rename included) and calls back once changes have settled for
 * 100 ms. Main thread.
 */
#ifndef TYCHO_WATCH_H
#define TYCHO_WATCH_H

struct event_base;
struct tycho_watch;

typedef void tycho_watch_fn(void *arg);

/* Starts watching dir. NULL with a message in err (TYCHO_ERR_LEN bytes). */
struct tycho_watch *tycho_watch_new(struct event_base *base, const char *dir, tycho_watch_fn *fn,
                                    void *arg, char *err);

/* Stops watching. NULL is a no-op. */
void tycho_watch_free(struct tycho_watch *w);

#endif
