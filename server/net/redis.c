/*
 * redis.c: see redis.h.
 *
 * hiredis owns a connection's context (ac) and calls every command's callback
 * exactly once: with its reply, or with NULL when the context goes away. So a
 * struct red_conn lives until hiredis is done with it: it is freed in the
 * disconnect callback (a context that had connected), after a failed
 * connect's callback, or at once when its context never connected. Closing
 * a connection (the pool's close) marks it dead and frees the context; the
 * callbacks still to come see `dead` and do nothing.
 */
#include "net/redis.h"

#include "core/log.h"
#include "net/lookup.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

enum phase { PHASE_START, PHASE_LOOKUP, PHASE_CONNECT, PHASE_SETUP, PHASE_READY };

struct red_conn;

/* A command on its way: waiting for a connection, then on one. */
struct red_req {
    struct tycho_pwaiter w;            /* first */
    struct tycho_redis *rd;
    struct tycho_redis_cmd *cmd;
    struct red_conn *conn;
    bool cancelled;
};

struct red_conn {
    struct tycho_pconn pc;             /* first */
    struct tycho_redis *rd;
    redisAsyncContext *ac;             /* hiredis'; NULL once it has gone */
    enum phase phase;
    struct event timer;                /* start, then connect timeout, then command timeout */
    struct tycho_lookup *lookup;     /* the host name's, under way */
    struct red_req *req;
    struct tycho_list all;             /* in rd->conns until freed */
    unsigned setup_left;               /* AUTH and SELECT replies still to come */
    bool connected;                    /* hiredis called back connected: it will say disconnect */
    bool dead;                         /* closed by the pool: callbacks do nothing */
    bool lost;                         /* hiredis dropped it: no longer usable */
};

struct tycho_redis {
    struct tycho_connpool *pool;
    struct event_base *base;
    struct evdns_base *dns;
    char host[256];
    int port;
    char *user, *password;             /* owned; NULL when not given */
    char db[16];                       /* "" for 0 */
    bool name;                         /* host is a name to look up */
    struct tycho_list conns;           /* every connection not yet freed */
};

static struct tycho_pconn *conn_open(struct tycho_connpool *p, void *arg);
static void conn_close(struct tycho_pconn *pc);
static bool conn_alive(struct tycho_pconn *pc);

static const struct tycho_connpool_driver redis_driver = {conn_open, conn_close, conn_alive};

/* ---- replies ------------------------------------------------------------------- */

static void value_free(struct tycho_redis_value *v)
{
    for (size_t i = 0; i < v->n; i++)
        value_free(&v->elems[i]);
    free(v->elems);
    free(v->str);
    memset(v, 0, sizeof(*v));
}

/* Copies hiredis' reply r into v; TYCHO_ERR when out of memory (v freed). */
static int value_copy(struct tycho_redis_value *v, const redisReply *r)
{
    memset(v, 0, sizeof(*v));
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        v->type = r->type == REDIS_REPLY_STRING   ? TYCHO_REDIS_STRING
                  : r->type == REDIS_REPLY_STATUS ? TYCHO_REDIS_STATUS
                                                  : TYCHO_REDIS_ERROR;
        if (!(v->str = malloc(r->len + 1)))
            return TYCHO_ERR;
        memcpy(v->str, r->str, r->len);
        v->str[r->len] = '\0';
        v->len = r->len;
        return TYCHO_OK;
    case REDIS_REPLY_INTEGER:
        v->type = TYCHO_REDIS_INTEGER;
        v->integer = r->integer;
        return TYCHO_OK;
    case REDIS_REPLY_ARRAY:
        v->type = TYCHO_REDIS_ARRAY;
        if (r->elements && !(v->elems = calloc(r->elements, sizeof(*v->elems))))
            return TYCHO_ERR;
        for (size_t i = 0; i < r->elements; i++, v->n++)
            if (value_copy(&v->elems[i], r->element[i]) < 0) {
                v->n++;
                value_free(v);
                return TYCHO_ERR;
            }
        return TYCHO_OK;
    default:
        v->type = TYCHO_REDIS_NIL;
        return TYCHO_OK;
    }
}

/* ---- commands back --------------------------------------------------------------- */

static void req_finish(struct red_req *r)
{
    struct tycho_redis_cmd *cmd = r->cmd;

    cmd->sent = NULL;
    if (r->cancelled)
        tycho_redis_cmd_free(cmd);
    else
        cmd->done(cmd);
    free(r);
}

/* The code of a failure on this side, from its message: Redis' own prefixes' style. */
static const char *code_of(const char *msg)
{
    if (strstr(msg, "pool exhausted") || strstr(msg, "circuit open") || strstr(msg, "pool closed"))
        return "POOL";
    if (strstr(msg, "(timeout)"))
        return "TIMEOUT";
    return "CONNECTION";
}

static void req_fail(struct red_req *r, const char *msg)
{
    r->cmd->code = code_of(msg);
    r->cmd->rc = TYCHO_ERR;
    snprintf(r->cmd->err, sizeof(r->cmd->err), "%s", msg);
    req_finish(r);
}

/* ---- connections ----------------------------------------------------------------- */

/* Frees c once hiredis is done with it (its context gone). */
static void conn_free(struct red_conn *c)
{
    event_del(&c->timer);
    tycho_list_remove(&c->all);
    free(c);
}

static void conn_close(struct tycho_pconn *pc)
{
    struct red_conn *c = (struct red_conn *)pc;
    redisAsyncContext *ac = c->ac;

    c->dead = true;
    event_del(&c->timer);
    if (c->lookup)
        tycho_lookup_cancel(c->lookup);
    c->lookup = NULL;
    if (c->req) {
        struct red_req *r = c->req;
        c->req = NULL;
        req_fail(r, "the connection was closed");
    }
    if (!ac) {
        conn_free(c);
        return;
    }
    /*
     * A context that connected says disconnect when freed (there c is
     * freed); one that never did says nothing, so c goes now. Inside one of
     * its callbacks hiredis frees it once the callback returns.
     */
    if (c->connected) {
        redisAsyncFree(ac);
        return;
    }
    ac->data = NULL;
    redisAsyncFree(ac);
    conn_free(c);
}

static bool conn_alive(struct tycho_pconn *pc)
{
    struct red_conn *c = (struct red_conn *)pc;
    char byte;
    ssize_t n;

    if (!c->ac || c->lost || c->ac->c.fd < 0)
        return false;
    n = recv(c->ac->c.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void connect_failed(struct red_conn *c, const char *why)
{
    char err[2 * TYCHO_ERR_LEN];

    snprintf(err, sizeof(err), "cannot connect to %s: %s", tycho_connpool_name(c->rd->pool),
             why);
    tycho_connpool_opened(&c->pc, err);   /* closes c */
}

static void on_setup_reply(redisAsyncContext *ac, void *reply, void *priv);

/* Connected: AUTH and SELECT as the URL asks, then it serves. */
static void setup_start(struct red_conn *c)
{
    struct tycho_redis *rd = c->rd;

    c->phase = PHASE_SETUP;
    if (rd->password) {
        if (rd->user)
            redisAsyncCommand(c->ac, on_setup_reply, c, "AUTH %s %s", rd->user, rd->password);
        else
            redisAsyncCommand(c->ac, on_setup_reply, c, "AUTH %s", rd->password);
        c->setup_left++;
    }
    if (rd->db[0]) {
        redisAsyncCommand(c->ac, on_setup_reply, c, "SELECT %s", rd->db);
        c->setup_left++;
    }
    if (!c->setup_left) {
        event_del(&c->timer);
        c->phase = PHASE_READY;
        tycho_connpool_opened(&c->pc, NULL);
    }
}

static void on_setup_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct red_conn *c = priv;
    redisReply *r = reply;

    (void)ac;
    if (c->dead || c->phase != PHASE_SETUP)
        return;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        c->phase = PHASE_CONNECT;         /* failed: one answer is enough */
        connect_failed(c, r ? r->str : "the connection was lost while logging in");
        return;
    }
    if (--c->setup_left == 0) {
        event_del(&c->timer);
        c->phase = PHASE_READY;
        tycho_connpool_opened(&c->pc, NULL);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct red_conn *c = ac->data;
    char why[TYCHO_ERR_LEN];

    if (!c || c->dead)
        return;
    if (status != REDIS_OK) {
        snprintf(why, sizeof(why), "%s", ac->errstr);
        c->ac = NULL;                     /* hiredis frees it when this returns */
        connect_failed(c, why);
        return;
    }
    c->connected = true;
    setup_start(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct red_conn *c = ac->data;

    (void)status;
    if (!c)
        return;
    c->ac = NULL;
    if (c->dead) {
        conn_free(c);
        return;
    }
    c->lost = true;                       /* idle: the pool's check closes it */
    if (c->phase != PHASE_READY)
        connect_failed(c, "the connection was lost while logging in");
    else if (c->req)
        tycho_connpool_release(&c->pc, false);
}

static void connect_start(struct red_conn *c, const char *addr)
{
    struct tycho_redis *rd = c->rd;
    redisAsyncContext *ac = redisAsyncConnect(addr, rd->port);

    c->phase = PHASE_CONNECT;
    if (!ac) {
        connect_failed(c, "out of memory");
        return;
    }
    if (ac->err) {
        char why[TYCHO_ERR_LEN];
        snprintf(why, sizeof(why), "%s", ac->errstr);
        redisAsyncFree(ac);
        connect_failed(c, why);
        return;
    }
    c->ac = ac;
    ac->data = c;
    redisLibeventAttach(ac, rd->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

static void on_lookup(void *arg, const char *addr, const char *why)
{
    struct red_conn *c = arg;

    c->lookup = NULL;
    if (!addr)
        connect_failed(c, why);
    else
        connect_start(c, addr);
}

static void lookup_start(struct red_conn *c)
{
    struct tycho_lookup *l;

    c->phase = PHASE_LOOKUP;
    /* NULL when it has answered already: c may be gone. */
    l = tycho_lookup_start(&c->rd->dns, c->rd->base, c->rd->host, on_lookup, c);
    if (l)
        c->lookup = l;
}

static void command_end(struct red_conn *c, redisReply *reply, const char *err);

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct red_conn *c = arg;
    struct timeval tv = tycho_tv(tycho_connpool_opts(c->rd->pool)->connect_timeout);
    char msg[2 * TYCHO_ERR_LEN];

    (void)fd;
    (void)what;
    switch (c->phase) {
    case PHASE_START:
        evtimer_add(&c->timer, &tv);
        if (c->rd->name)
            lookup_start(c);
        else
            connect_start(c, c->rd->host);
        return;
    case PHASE_LOOKUP:
    case PHASE_CONNECT:
    case PHASE_SETUP:
        connect_failed(c, "connect timeout");
        return;
    case PHASE_READY:
        snprintf(msg, sizeof(msg), "%s: no reply within %g s (timeout)",
                 tycho_connpool_name(c->rd->pool), tycho_connpool_opts(c->rd->pool)->timeout);
        command_end(c, NULL, msg);
        return;
    }
}

static struct tycho_pconn *conn_open(struct tycho_connpool *p, void *arg)
{
    struct tycho_redis *rd = arg;
    struct red_conn *c = calloc(1, sizeof(*c));
    struct timeval now = {0, 0};

    (void)p;
    if (!c)
        return NULL;
    c->rd = rd;
    tycho_list_push_back(&rd->conns, &c->all);
    evtimer_assign(&c->timer, rd->base, on_timer, c);
    evtimer_add(&c->timer, &now);         /* starts from the loop: the pool is told later */
    return &c->pc;
}

/* ---- commands -------------------------------------------------------------------- */

/* The command on c is over (reply, or err): the caller is told, c is let go first. */
static void command_end(struct red_conn *c, redisReply *reply, const char *err)
{
    struct red_req *r = c->req;
    struct tycho_redis_cmd *cmd = r->cmd;

    c->req = NULL;
    r->conn = NULL;
    event_del(&c->timer);
    if (err) {
        cmd->rc = TYCHO_ERR;
        cmd->code = code_of(err);
        snprintf(cmd->err, sizeof(cmd->err), "%s", err);
        c->lost = true;                   /* a reply may still come: never reuse it */
        tycho_connpool_failed(c->rd->pool, err);
        tycho_connpool_release(&c->pc, false);
    } else {
        cmd->rc = value_copy(&cmd->reply, reply);
        cmd->code = "CONNECTION";
        if (cmd->rc < 0)
            snprintf(cmd->err, sizeof(cmd->err), "out of memory reading the reply");
        tycho_connpool_succeeded(c->rd->pool);
        tycho_connpool_release(&c->pc, !c->lost);
    }
    req_finish(r);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct red_conn *c = priv;
    char msg[2 * TYCHO_ERR_LEN];

    if (c->dead || !c->req)
        return;
    if (!reply) {
        snprintf(msg, sizeof(msg), "%s: connection lost: %s", tycho_connpool_name(c->rd->pool),
                 ac->err ? ac->errstr : "closed");
        command_end(c, NULL, msg);
        return;
    }
    command_end(c, reply, NULL);
}

static void command_send(struct red_conn *c, struct red_req *r)
{
    struct tycho_redis_cmd *cmd = r->cmd;
    struct timeval tv = tycho_tv(tycho_connpool_opts(c->rd->pool)->timeout);

    c->req = r;
    r->conn = c;
    evtimer_add(&c->timer, &tv);
    if (redisAsyncCommandArgv(c->ac, on_reply, c, cmd->argc, (const char **)cmd->argv,
                              cmd->argvlen) != REDIS_OK)
        command_end(c, NULL, "cannot send the command (the connection is closing)");
}

static void on_conn(struct tycho_pwaiter *w, struct tycho_pconn *pc, const char *err)
{
    struct red_req *r = (struct red_req *)w;

    if (!pc) {
        req_fail(r, err);
        return;
    }
    command_send((struct red_conn *)pc, r);
}

void tycho_redis_send(struct tycho_redis *rd, struct tycho_redis_cmd *cmd,
                      tycho_redis_done_fn *done, void *arg)
{
    struct red_req *r = calloc(1, sizeof(*r));

    cmd->done = done;
    cmd->arg = arg;
    if (!r) {
        cmd->rc = TYCHO_ERR;
        cmd->code = "CONNECTION";
        snprintf(cmd->err, sizeof(cmd->err), "out of memory");
        done(cmd);
        return;
    }
    r->rd = rd;
    r->cmd = cmd;
    cmd->sent = r;
    tycho_connpool_acquire(rd->pool, &r->w, on_conn);
}

void tycho_redis_cancel(struct tycho_redis_cmd *cmd)
{
    struct red_req *r = cmd->sent;

    if (!r)
        return;
    if (!r->conn) {
        tycho_connpool_cancel(&r->w);
        cmd->sent = NULL;
        tycho_redis_cmd_free(cmd);
        free(r);
        return;
    }
    r->cancelled = true;
}

struct tycho_redis_cmd *tycho_redis_cmd_new(int argc, const char *const *argv,
                                            const size_t *argvlen)
{
    struct tycho_redis_cmd *cmd = calloc(1, sizeof(*cmd));

    if (!cmd)
        return NULL;
    cmd->argv = calloc((size_t)argc, sizeof(*cmd->argv));
    cmd->argvlen = calloc((size_t)argc, sizeof(*cmd->argvlen));
    if (!cmd->argv || !cmd->argvlen) {
        tycho_redis_cmd_free(cmd);
        return NULL;
    }
    for (int i = 0; i < argc; i++, cmd->argc++) {
        if (!(cmd->argv[i] = malloc(argvlen[i] + 1))) {
            tycho_redis_cmd_free(cmd);
            return NULL;
        }
        memcpy(cmd->argv[i], argv[i], argvlen[i]);
        cmd->argv[i][argvlen[i]] = '\0';
        cmd->argvlen[i] = argvlen[i];
    }
    return cmd;
}

void tycho_redis_cmd_free(struct tycho_redis_cmd *cmd)
{
    if (!cmd)
        return;
    for (int i = 0; i < cmd->argc; i++)
        free(cmd->argv[i]);
    free(cmd->argv);
    free(cmd->argvlen);
    value_free(&cmd->reply);
    free(cmd);
}

/* ---- the pool ---------------------------------------------------------------------- */

/* Reads url into rd (when not NULL); TYCHO_OK, or TYCHO_ERR with err. */
static int parse_url(const char *url, struct tycho_redis *rd, char *err)
{
    const char *p = url + 8, *at, *slash, *hostend, *colon;
    struct tycho_redis tmp;
    char port[8] = "6379";
    unsigned char addr[16];
    char *end;
    long n;

    if (!rd)
        rd = &tmp;
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, TYCHO_ERR_LEN, "expected \"redis://[[user]:password@]host[:port][/db]\"");
        return TYCHO_ERR;
    }
    slash = strchr(p, '/');
    at = memchr(p, '@', slash ? (size_t)(slash - p) : strlen(p));
    if (at) {
        const char *sep = memchr(p, ':', (size_t)(at - p));
        if (sep && sep > p && rd != &tmp)
            rd->user = strndup(p, (size_t)(sep - p));
        if (sep && rd != &tmp)
            rd->password = strndup(sep + 1, (size_t)(at - sep - 1));
        p = at + 1;
    }
    hostend = slash ? slash : p + strlen(p);
    if (*p == '[') {                      /* [IPv6]:port */
        const char *close = memchr(p, ']', (size_t)(hostend - p));
        if (!close)
            goto bad;
        snprintf(rd->host, sizeof(rd->host), "%.*s", (int)(close - p - 1), p + 1);
        colon = close[1] == ':' ? close + 1 : NULL;
    } else {
        colon = memchr(p, ':', (size_t)(hostend - p));
        snprintf(rd->host, sizeof(rd->host), "%.*s",
                 (int)((colon ? colon : hostend) - p), p);
    }
    if (!rd->host[0] || (size_t)(hostend - p) >= sizeof(rd->host))
        goto bad;
    if (colon) {
        if (hostend - colon - 1 < 1 || hostend - colon - 1 > 5)
            goto bad;
        snprintf(port, sizeof(port), "%.*s", (int)(hostend - colon - 1), colon + 1);
    }
    n = strtol(port, &end, 10);
    if (*end || n < 1 || n > 65535)
        goto bad;
    rd->port = (int)n;
    if (slash && slash[1]) {
        n = strtol(slash + 1, &end, 10);
        if (*end || n < 0 || n > 9999)
            goto bad;
        if (n)
            snprintf(rd->db, sizeof(rd->db), "%ld", n);
    }
    rd->name = inet_pton(AF_INET, rd->host, addr) != 1 &&
               inet_pton(AF_INET6, rd->host, addr) != 1;
    return TYCHO_OK;
bad:
    snprintf(err, TYCHO_ERR_LEN, "bad Redis URL (expected \"redis://[[user]:password@]host"
                                 "[:port][/db]\")");
    return TYCHO_ERR;
}

int tycho_redis_parse(const char *url, char *err)
{
    return parse_url(url, NULL, err);
}

struct tycho_redis *tycho_redis_new(const char *url, const char *name,
                                    const struct tycho_connpool_opts *o, struct event_base *base,
                                    int worker, char *err)
{
    struct tycho_redis *rd = calloc(1, sizeof(*rd));

    if (!rd) {
        snprintf(err, TYCHO_ERR_LEN, "out of memory");
        return NULL;
    }
    tycho_list_init(&rd->conns);
    if (parse_url(url, rd, err) < 0) {
        tycho_redis_free(rd);
        return NULL;
    }
    rd->base = base;
    if (!(rd->pool = tycho_connpool_new(name, o, &redis_driver, rd, base, worker))) {
        snprintf(err, TYCHO_ERR_LEN, "out of memory");
        tycho_redis_free(rd);
        return NULL;
    }
    return rd;
}

void tycho_redis_free(struct tycho_redis *rd)
{
    struct tycho_list *it, *next;

    if (!rd)
        return;
    /* Busy and connecting connections first (the pool closes the idle ones). */
    for (it = rd->conns.next; rd->pool && it != &rd->conns; it = next) {
        struct red_conn *c = tycho_container_of(it, struct red_conn, all);
        next = it->next;
        if (c->dead)
            continue;                     /* closed: hiredis has yet to let it go */
        if (c->phase != PHASE_READY) {
            tycho_connpool_abort(&c->pc);
        } else if (c->req) {
            c->req->cancelled = true;     /* its caller is gone with the generation */
            tycho_connpool_release(&c->pc, false);
        }
    }
    tycho_connpool_free(rd->pool);
    if (rd->dns)
        evdns_base_free(rd->dns, 0);
    free(rd->user);
    free(rd->password);
    free(rd);
}
