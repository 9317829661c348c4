/*
 * access.h: the access log (--access-log FILE|-, --access-log-format
 * common|json): one line per request. Each worker gathers its lines in a
 * buffer of its own and writes it out from its loop when it holds 32 KiB,
 * once a second and when the worker stops, so a request makes no system
 * call for the log. SIGUSR1 reopens the file (logrotate).
 */
#ifndef TYCHO_ACCESS_H
#define TYCHO_ACCESS_H

#include <stdbool.h>
#include <stddef.h>

struct tycho_buf;
struct tycho_config;
struct tycho_req;

/* Opens the log cfg names (nothing for "off"). Main thread, before workers. TYCHO_OK/TYCHO_ERR. */
int tycho_access_open(const struct tycho_config *cfg, char *err);

/* Whether lines are written. */
bool tycho_access_enabled(void);

/* SIGUSR1: opens the file again under its name (after a rotation); logs a failure. Main thread. */
void tycho_access_reopen(void);

/* Closes the log. Main thread, after the workers stopped. */
void tycho_access_close(void);

/* One request as the log records it. */
struct tycho_access_entry {
    const struct tycho_req *r;
    const char *remote;       /* the client's address as text */
    int status;
    size_t bytes;             /* response bytes, head included */
    long long duration_us;    /* from the complete request to its response */
    int worker;
};

/* Appends e's line to buf (the worker's). TYCHO_OK, or TYCHO_ERR (no memory: the line is lost). */
int tycho_access_append(struct tycho_buf *buf, const struct tycho_access_entry *e);

/* Writes buf out and empties it. Any thread (one write per batch, O_APPEND). */
void tycho_access_flush(struct tycho_buf *buf);

#endif
