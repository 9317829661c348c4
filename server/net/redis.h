/*
 * redis.h: Redis on the worker's loop, through hiredis' asynchronous API and
 * its libevent adapter. Connections come from a tycho_connpool: each is
 * connected (the host name looked up with evdns first: hiredis would block
 * on it), logged in (AUTH) and switched to the URL's database (SELECT)
 * before it serves; one command at a time runs on it, under a timeout.
 *
 * Threads: everything on the worker thread that owns the tycho_redis.
 */
#ifndef TYCHO_REDIS_H
#define TYCHO_REDIS_H

#include <stddef.h>

#include "core/tycho.h"
#include "net/connpool.h"

struct event_base;
struct tycho_redis;

enum tycho_redis_type { TYCHO_REDIS_NIL, TYCHO_REDIS_STRING, TYCHO_REDIS_STATUS,
                        TYCHO_REDIS_INTEGER, TYCHO_REDIS_ARRAY, TYCHO_REDIS_ERROR };

/* A reply, copied out of hiredis'. */
struct tycho_redis_value {
    enum tycho_redis_type type;
    long long integer;
    char *str;                         /* owned: STRING, STATUS, ERROR */
    size_t len;
    struct tycho_redis_value *elems;   /* owned: ARRAY */
    size_t n;
};

struct tycho_redis_cmd;
typedef void tycho_redis_done_fn(struct tycho_redis_cmd *cmd);

/* A command and, once done, its reply or failure. Made, sent and freed by the caller. */
struct tycho_redis_cmd {
    char **argv;                       /* owned: the words */
    size_t *argvlen;                   /* owned */
    int argc;
    tycho_redis_done_fn *done;
    void *arg;
    void *sent;                        /* the driver's record while it is sent */
    int rc;                            /* TYCHO_OK: reply holds the reply (an error reply too) */
    struct tycho_redis_value reply;
    char err[TYCHO_ERR_LEN];           /* TYCHO_ERR: why (not connected, lost, timeout...) */
    const char *code;                  /* static, with err: CONNECTION, TIMEOUT or POOL */
};

/*
 * A pool for url ("redis://[[user]:password@]host[:port][/db]"), named name
 * (its metrics label). NULL with err (TYCHO_ERR_LEN) on a bad URL or memory.
 */
struct tycho_redis *tycho_redis_new(const char *url, const char *name,
                                    const struct tycho_connpool_opts *o, struct event_base *base,
                                    int worker, char *err);

/* Closes every connection; commands still sent are freed. NULL is a no-op. */
void tycho_redis_free(struct tycho_redis *rd);

/* Checks url as tycho_redis_new would: TYCHO_OK, or TYCHO_ERR with err. */
int tycho_redis_parse(const char *url, char *err);

/* A command of argc words (copied). NULL: out of memory. */
struct tycho_redis_cmd *tycho_redis_cmd_new(int argc, const char *const *argv,
                                            const size_t *argvlen);

/* Runs cmd; done(cmd) is called when it is back (maybe inside this call, having failed). */
void tycho_redis_send(struct tycho_redis *rd, struct tycho_redis_cmd *cmd,
                      tycho_redis_done_fn *done, void *arg);

/* The caller gives up on cmd (sent, not back): it is freed when it is. */
void tycho_redis_cancel(struct tycho_redis_cmd *cmd);

/* Frees cmd (never sent, or back). NULL is a no-op. */
void tycho_redis_cmd_free(struct tycho_redis_cmd *cmd);

#endif
