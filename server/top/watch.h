/*
 * watch.h: --watch. Watches a directory (the scripts; a certificate's) and those below it with
 * inotify (files written, created, deleted, renamed in or out: editors that
 * save by rename included) and calls back once changes have settled for
 * 100 ms. Main thread.
 */
#ifndef TYCHO_WATCH_H
#define TYCHO_WATCH_H

struct event_base;
struct tycho_watch;

typedef void tycho_watch_fn(void *arg);

/*
 * Starts watching dir: a change to a file whose name ends in suffix (".lua";
 * NULL: any file; names starting with '.' never count, but for the "..data"
 * swap of Kubernetes volumes), or to the directories. NULL with a message in
 * err (TYCHO_ERR_LEN bytes).
 */
struct tycho_watch *tycho_watch_new(struct event_base *base, const char *dir, const char *suffix,
                                    tycho_watch_fn *fn, void *arg, char *err);

/* Stops watching. NULL is a no-op. */
void tycho_watch_free(struct tycho_watch *w);

#endif
