/*
 * pg.c: see pg.h. A connection goes: start (from the loop, never inside the
 * pool's open) -> name lookup (evdns, names only) -> PQconnectStartParams ->
 * PQconnectPoll as the socket is ready -> ready. A statement goes:
 * PQsendQueryParams -> PQflush while the socket takes it -> PQconsumeInput
 * and PQgetResult as replies come -> the job is done.
 */
#include "net/pg.h"

#include "core/list.h"
#include "core/log.h"
#include "net/lookup.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* PostgreSQL's type oids (pg_type.dat) that are not read as text. */
#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_OID 26
#define OID_FLOAT4 700
#define OID_FLOAT8 701
#define OID_NUMERIC 1700
/* Integers a double holds exactly. */
#define EXACT_INT 9007199254740992LL

enum phase { PHASE_START, PHASE_LOOKUP, PHASE_CONNECT, PHASE_READY };

/*
 * Statements kept prepared on a connection, at most: the first STMT_CACHE
 * distinct SQL texts it runs (with values as $N, a handful per app). Others
 * run unnamed, parsed each time.
 */
#define STMT_CACHE 64

/* A statement prepared on a connection: its SQL text and its server-side name. */
struct pg_stmt {
    char *sql;                       /* owned */
    char name[24];                   /* t1, t2, ...: never reused on a connection */
};

struct pg_conn;

/* A job on its way: waiting for a connection, then on one. */
struct pg_req {
    struct tycho_pwaiter w;          /* first */
    struct tycho_pg *pg;
    struct tycho_sql_job *j;
    struct pg_conn *conn;            /* once it has one */
    tycho_sql_done_fn *done;
    bool cancelled;                  /* freed when back, never told */
    bool retried;                    /* sent again once, its prepared statement outdated */
};

struct pg_conn {
    struct tycho_pconn pc;           /* first */
    struct tycho_pg *pg;
    struct tycho_list all;           /* in pg->conns */
    PGconn *conn;
    enum phase phase;
    struct event io;                 /* the socket (persistent; anew when libpq changes it) */
    bool io_set;
    int io_fd;                       /* what io watches, while io_set */
    short io_what;
    struct event timer;              /* start, then connect timeout, then statement timeout */
    struct tycho_lookup *lookup;     /* the host name's, under way */
    struct pg_req *req;              /* the statement in flight */
    PGresult *result;                /* the statement's result so far (the first error wins) */
    bool pinned;                     /* a transaction holds it */
    bool broken;                     /* lost or timed out: closed when let go */
    bool doomed;                     /* its transaction was abandoned: closed when free */
    struct pg_stmt stmts[STMT_CACHE];
    unsigned nstmts;
    unsigned long serial;            /* the last statement name's number */
    struct pg_stmt *preparing;       /* the statement being prepared for req, or NULL */
    struct pg_stmt *running;         /* the prepared statement req runs, or NULL */
};

struct tycho_pg {
    char *url;
    struct tycho_connpool *pool;
    struct event_base *base;
    struct evdns_base *dns;          /* made at the first name lookup */
    char *host;                      /* the URL's host, to look up; NULL: none needed */
    struct tycho_list conns;         /* every connection, whatever its state */
};

static void conn_close(struct tycho_pconn *pc);
static struct tycho_pconn *conn_open(struct tycho_connpool *p, void *arg);
static bool conn_alive(struct tycho_pconn *pc);

static const struct tycho_connpool_driver pg_driver = {conn_open, conn_close, conn_alive};

/* libpq's messages end in a newline; the first line is the one to show. */
static void first_line(char *dst, size_t cap, const char *msg)
{
    size_t n = strcspn(msg ? msg : "", "\n");

    if (n >= cap)
        n = cap - 1;
    memcpy(dst, msg ? msg : "", n);
    dst[n] = '\0';
}

/* ---- jobs back ------------------------------------------------------------------- */

static void req_finish(struct pg_req *r)
{
    struct tycho_sql_job *j = r->j;

    j->sent = NULL;
    if (r->cancelled)
        tycho_sql_job_free(j);
    else
        r->done(j);
    free(r);
}

/* Fails r's job (no connection, or its connection failed) and tells its caller. */
static void req_fail(struct pg_req *r, const char *code, const char *msg)
{
    r->j->rc = TYCHO_ERR;
    r->j->code = code;
    snprintf(r->j->err, sizeof(r->j->err), "%s", msg);
    req_finish(r);
}

/* ---- connections ---------------------------------------------------------------- */

static void on_io(evutil_socket_t fd, short what, void *arg);

/*
 * Watches the socket for `what` (libpq may have a new one since last time).
 * The event persists, so a connection that goes on reading between
 * statements costs no epoll change per statement; it is changed only when
 * the socket or `what` does.
 */
static void watch(struct pg_conn *c, short what)
{
    int fd = PQsocket(c->conn);

    if (c->io_set && c->io_fd == fd && c->io_what == what)
        return;
    if (c->io_set)
        event_del(&c->io);
    c->io_set = false;
    if (fd < 0)
        return;
    event_assign(&c->io, c->pg->base, fd, what | EV_PERSIST, on_io, c);
    event_add(&c->io, NULL);
    c->io_set = true;
    c->io_fd = fd;
    c->io_what = what;
}

/* Stops watching the socket. */
static void unwatch(struct pg_conn *c)
{
    if (c->io_set)
        event_del(&c->io);
    c->io_set = false;
}

static void conn_close(struct tycho_pconn *pc)
{
    struct pg_conn *c = (struct pg_conn *)pc;

    if (c->io_set)
        event_del(&c->io);
    event_del(&c->timer);
    if (c->lookup)
        tycho_lookup_cancel(c->lookup);
    if (c->req)
        req_fail(c->req, "08006", "the connection was closed");
    PQclear(c->result);
    if (c->conn)
        PQfinish(c->conn);
    for (unsigned i = 0; i < c->nstmts; i++)
        free(c->stmts[i].sql);
    tycho_list_remove(&c->all);
    free(c);
}

/* An idle connection is alive when its socket has neither data nor EOF waiting. */
static bool conn_alive(struct tycho_pconn *pc)
{
    struct pg_conn *c = (struct pg_conn *)pc;
    int fd = PQsocket(c->conn);
    char byte;
    ssize_t n;

    if (fd < 0 || c->broken || PQstatus(c->conn) != CONNECTION_OK)
        return false;
    n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void connect_failed(struct pg_conn *c, const char *why)
{
    char err[2 * TYCHO_ERR_LEN];          /* cut to the job's size where it lands */

    snprintf(err, sizeof(err), "cannot connect to %s: %s", tycho_connpool_name(c->pg->pool),
             why);
    tycho_connpool_opened(&c->pc, err);   /* closes c */
}

static void connect_poll(struct pg_conn *c)
{
    char why[TYCHO_ERR_LEN];

    switch (PQconnectPoll(c->conn)) {
    case PGRES_POLLING_READING:
        watch(c, EV_READ);
        return;
    case PGRES_POLLING_WRITING:
        watch(c, EV_WRITE);
        return;
    case PGRES_POLLING_OK:
        watch(c, EV_READ);                /* from now on while it lives: replies, and EOF */
        event_del(&c->timer);
        c->phase = PHASE_READY;
        if (PQsetnonblocking(c->conn, 1) != 0) {
            connect_failed(c, "cannot make the connection non-blocking");
            return;
        }
        tycho_connpool_opened(&c->pc, NULL);
        return;
    default:
        first_line(why, sizeof(why), PQerrorMessage(c->conn));
        connect_failed(c, why);
    }
}

/* The server's notices (NOTICE, WARNING) go to the log at debug level, not to stderr bare. */
static void on_notice(void *arg, const char *message)
{
    struct pg_conn *c = arg;

    tycho_log(TYCHO_LOG_DEBUG, "%s: %.*s", tycho_connpool_name(c->pg->pool),
              (int)strcspn(message, "\n"), message);
}

/* Starts libpq's connect, to hostaddr when the name was looked up here. */
static void connect_start(struct pg_conn *c, const char *hostaddr)
{
    const char *keys[] = {"dbname", hostaddr ? "hostaddr" : NULL, NULL};
    const char *values[] = {c->pg->url, hostaddr, NULL};
    char why[TYCHO_ERR_LEN];

    c->phase = PHASE_CONNECT;
    c->conn = PQconnectStartParams(keys, values, 1);
    if (!c->conn || PQstatus(c->conn) == CONNECTION_BAD) {
        first_line(why, sizeof(why), c->conn ? PQerrorMessage(c->conn) : "out of memory");
        connect_failed(c, why);
        return;
    }
    PQsetNoticeProcessor(c->conn, on_notice, c);
    watch(c, EV_WRITE);                   /* libpq: poll once the socket is writable */
}

static void on_lookup(void *arg, const char *addr, const char *why)
{
    struct pg_conn *c = arg;

    c->lookup = NULL;
    if (!addr)
        connect_failed(c, why);
    else
        connect_start(c, addr);
}

static void lookup_start(struct pg_conn *c)
{
    struct tycho_lookup *l;

    c->phase = PHASE_LOOKUP;
    /* NULL when it has answered already: c may be gone. */
    l = tycho_lookup_start(&c->pg->dns, c->pg->base, c->pg->host, on_lookup, c);
    if (l)
        c->lookup = l;
}

static void statement_timeout(struct pg_conn *c);

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct pg_conn *c = arg;
    struct timeval tv = tycho_tv(tycho_connpool_opts(c->pg->pool)->connect_timeout);

    (void)fd;
    (void)what;
    switch (c->phase) {
    case PHASE_START:
        evtimer_add(&c->timer, &tv);      /* the connect timeout, the lookup included */
        if (c->pg->host)
            lookup_start(c);
        else
            connect_start(c, NULL);
        return;
    case PHASE_LOOKUP:
    case PHASE_CONNECT:
        connect_failed(c, "connect timeout");
        return;
    case PHASE_READY:
        statement_timeout(c);
        return;
    }
}

static struct tycho_pconn *conn_open(struct tycho_connpool *p, void *arg)
{
    struct tycho_pg *pg = arg;
    struct pg_conn *c = calloc(1, sizeof(*c));
    struct timeval now = {0, 0};

    (void)p;
    if (!c)
        return NULL;
    c->pg = pg;
    c->phase = PHASE_START;
    evtimer_assign(&c->timer, pg->base, on_timer, c);
    evtimer_add(&c->timer, &now);         /* starts from the loop: the pool is told later */
    tycho_list_push_back(&pg->conns, &c->all);
    return &c->pc;
}

/* ---- statements ----------------------------------------------------------------- */

static void copy_value(struct tycho_sql_value *v, const PGresult *res, int row, int col);

/* Copies res's rows into j (out of memory: j fails). */
static void copy_rows(struct tycho_sql_job *j, const PGresult *res)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);

    j->ncols = (unsigned)ncols;
    j->nrows = (size_t)nrows;
    j->cols = ncols ? calloc((size_t)ncols, sizeof(*j->cols)) : NULL;
    j->cells = nrows && ncols ? calloc((size_t)nrows * (size_t)ncols, sizeof(*j->cells)) : NULL;
    if ((ncols && !j->cols) || (nrows && ncols && !j->cells))
        goto oom;
    for (int c = 0; c < ncols; c++)
        if (!(j->cols[c] = strdup(PQfname(res, c))))
            goto oom;
    for (int r = 0; r < nrows; r++)
        for (int c = 0; c < ncols; c++) {
            struct tycho_sql_value *v = &j->cells[(size_t)r * (size_t)ncols + (size_t)c];
            copy_value(v, res, r, c);
            if ((v->type == TYCHO_SQL_TEXT || v->type == TYCHO_SQL_BLOB) && !v->s)
                goto oom;
        }
    return;
oom:
    j->rc = TYCHO_ERR;
    j->code = "53200";                    /* out_of_memory */
    snprintf(j->err, sizeof(j->err), "out of memory reading the rows");
}

/* A numeric's text as an integer or float where that is exact, else as text. */
static void copy_numeric(struct tycho_sql_value *v, const char *s, size_t len)
{
    size_t digits = 0;
    bool point = false;

    for (size_t i = 0; i < len; i++) {
        if (s[i] >= '0' && s[i] <= '9')
            digits++;
        else if (s[i] == '.')
            point = true;
        else if (s[i] != '-')
            digits = 99;                  /* NaN, Infinity, an exponent: kept as text */
    }
    if (!point && digits <= 15) {
        v->type = TYCHO_SQL_INT;
        v->i = strtoll(s, NULL, 10);
    } else if (point && digits <= 15) {
        v->type = TYCHO_SQL_FLOAT;
        v->d = strtod(s, NULL);
    } else {
        v->type = TYCHO_SQL_TEXT;
        v->s = strndup(s, len);
        v->len = len;
    }
}

static void copy_value(struct tycho_sql_value *v, const PGresult *res, int row, int col)
{
    const char *s = PQgetvalue(res, row, col);
    size_t len = (size_t)PQgetlength(res, row, col);

    if (PQgetisnull(res, row, col)) {
        v->type = TYCHO_SQL_NULL;
        return;
    }
    switch (PQftype(res, col)) {
    case OID_BOOL:
        v->type = TYCHO_SQL_BOOL;
        v->i = s[0] == 't';
        return;
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
    case OID_OID:
        v->type = TYCHO_SQL_INT;
        v->i = strtoll(s, NULL, 10);
        return;
    case OID_FLOAT4:
    case OID_FLOAT8:
        v->type = TYCHO_SQL_FLOAT;
        v->d = strtod(s, NULL);           /* NaN, Infinity and -Infinity included */
        return;
    case OID_NUMERIC:
        copy_numeric(v, s, len);
        return;
    case OID_BYTEA: {
        size_t n = 0;
        unsigned char *bytes = PQunescapeBytea((const unsigned char *)s, &n);
        v->type = TYCHO_SQL_BLOB;
        if (bytes && (v->s = malloc(n + 1))) {
            memcpy(v->s, bytes, n);
            v->s[n] = '\0';
            v->len = n;
        }
        PQfreemem(bytes);
        return;
    }
    default:
        v->type = TYCHO_SQL_TEXT;
        v->s = strndup(s, len);
        v->len = len;
    }
}

/* The statement's result into its job: rows, changes, or the error with its SQLSTATE. */
static void take_result(struct tycho_sql_job *j, const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    const char *state, *primary, *detail;

    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
        j->rc = TYCHO_OK;
        j->changes = strtoll(PQcmdTuples((PGresult *)res), NULL, 10);
        copy_rows(j, res);
        /* INSERT ... RETURNING id: the first column of the first row is the new id. */
        j->no_last_id = !(j->nrows > 0 && j->ncols > 0 && j->cells[0].type == TYCHO_SQL_INT);
        j->last_id = j->no_last_id ? 0 : j->cells[0].i;
        return;
    }
    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    j->rc = TYCHO_ERR;
    j->code = "XX000";                    /* internal_error: a reply without its code */
    if (state && strlen(state) == 5) {
        memcpy(j->state, state, 6);
        j->code = j->state;
    }
    if (!primary)
        first_line(j->err, sizeof(j->err), PQresultErrorMessage(res));
    else if (detail)
        snprintf(j->err, sizeof(j->err), "%s (%s)", primary, detail);
    else
        snprintf(j->err, sizeof(j->err), "%s", primary);
}

/* Lets go of c after a statement: kept by its transaction, back to the pool, or closed. */
static void conn_done(struct pg_conn *c, bool begins, bool ends, bool ok)
{
    bool idle = !c->broken && PQtransactionStatus(c->conn) == PQTRANS_IDLE;

    if (c->doomed) {
        c->pinned = false;
        tycho_connpool_release(&c->pc, false);
    } else if (begins && ok) {
        c->pinned = true;                 /* the transaction's until its end */
    } else if (c->pinned && !ends) {
        /* a statement inside the transaction: it keeps the connection */
    } else {
        c->pinned = false;
        tycho_connpool_release(&c->pc, idle);
    }
}

/* The statement on c is over: its result (or failure) goes to its job, c is let go. */
static void statement_end(struct pg_conn *c, const char *code, const char *msg)
{
    struct pg_req *r = c->req;
    struct tycho_sql_job *j = r->j;
    bool begins = j->begins, ends = j->ends, ok;

    c->req = NULL;
    r->conn = NULL;
    c->preparing = NULL;
    c->running = NULL;
    event_del(&c->timer);
    watch(c, EV_READ);                    /* idle: an EOF or a notice may still come */
    if (code) {
        c->broken = true;
        tycho_connpool_failed(c->pg->pool, msg);
        j->rc = TYCHO_ERR;
        j->code = code;
        snprintf(j->err, sizeof(j->err), "%s", msg);
    } else {
        take_result(j, c->result);
        tycho_connpool_succeeded(c->pg->pool);
    }
    PQclear(c->result);
    c->result = NULL;
    ok = j->rc == TYCHO_OK;
    if (begins && ok)
        j->pin = c;
    /* c first: the caller, told next, may send its next statement at once. */
    conn_done(c, begins, ends, ok);
    req_finish(r);
}

static void statement_timeout(struct pg_conn *c)
{
    char msg[TYCHO_ERR_LEN];

    snprintf(msg, sizeof(msg), "%s: no result within %g s (timeout)",
             tycho_connpool_name(c->pg->pool), tycho_connpool_opts(c->pg->pool)->timeout);
    statement_end(c, "57014", msg);
}

static void statement_lost(struct pg_conn *c)
{
    char why[TYCHO_ERR_LEN], msg[2 * TYCHO_ERR_LEN];

    first_line(why, sizeof(why), PQerrorMessage(c->conn));
    snprintf(msg, sizeof(msg), "%s: connection lost: %s", tycho_connpool_name(c->pg->pool),
             why[0] ? why : "closed");
    statement_end(c, "08006", msg);
}

static void statement_flush(struct pg_conn *c);

static void statement_send(struct pg_conn *c, struct pg_req *r);
static bool statement_again(struct pg_conn *c);
static void prepared(struct pg_conn *c);

/* Reads what came; ends the statement once libpq has its whole result. */
static void statement_read(struct pg_conn *c)
{
    PGresult *res;

    if (!PQconsumeInput(c->conn)) {
        statement_lost(c);
        return;
    }
    while (!PQisBusy(c->conn)) {
        if (!(res = PQgetResult(c->conn))) {
            if (!c->result) {
                statement_lost(c);
                return;
            }
            if (c->preparing)
                prepared(c);
            else if (!statement_again(c))
                statement_end(c, NULL, NULL);
            return;
        }
        /* Several results (a script): the first error, else the last result, counts. */
        if (c->result && PQresultStatus(c->result) == PGRES_FATAL_ERROR) {
            PQclear(res);
        } else {
            PQclear(c->result);
            c->result = res;
        }
    }
    statement_flush(c);                   /* still waiting: for a reply, or to send the rest */
}

/* Sends what libpq still holds; then waits for the reply. */
static void statement_flush(struct pg_conn *c)
{
    int rc = PQflush(c->conn);

    if (rc < 0)
        statement_lost(c);
    else if (rc > 0)
        watch(c, EV_READ | EV_WRITE);     /* reading too: the server may be sending to us */
    else
        watch(c, EV_READ);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    struct pg_conn *c = arg;

    (void)fd;
    if (c->phase != PHASE_READY) {
        connect_poll(c);
        return;
    }
    if (!c->req) {
        /* Idle (or its transaction between statements): a notice, or the server leaving. */
        if (!PQconsumeInput(c->conn)) {
            c->broken = true;             /* the pool's check closes it */
            unwatch(c);
        }
        return;
    }
    if (what & EV_WRITE) {
        statement_flush(c);
        if (!c->req || !(what & EV_READ))
            return;
    }
    statement_read(c);
}

/* A parameter as libpq takes it: text, or a blob in binary format as bytea. */
static void param_of(const struct tycho_sql_value *v, char *num, size_t cap, const char **value,
                     int *len, int *format, Oid *type)
{
    *format = 0;
    *type = 0;                            /* the server infers it from the statement */
    *len = 0;
    switch (v->type) {
    case TYCHO_SQL_NULL:
        *value = NULL;
        return;
    case TYCHO_SQL_INT:
        snprintf(num, cap, "%lld", v->i);
        *value = num;
        return;
    case TYCHO_SQL_BOOL:
        *value = v->i ? "true" : "false";
        return;
    case TYCHO_SQL_FLOAT:
        snprintf(num, cap, "%.17g", v->d);
        *value = num;
        return;
    case TYCHO_SQL_TEXT:
        *value = v->s ? v->s : "";
        return;
    case TYCHO_SQL_BLOB:
        *value = v->s ? v->s : "";
        *len = (int)v->len;
        *format = 1;
        *type = OID_BYTEA;
        return;
    }
}

#define NUM_BYTES 32

/* Whether j may run as a statement kept prepared: one statement, no blob (typed as bytea). */
static bool cacheable(const struct tycho_sql_job *j)
{
    if (j->script)
        return false;
    for (unsigned i = 0; i < j->nparams; i++)
        if (j->params[i].type == TYCHO_SQL_BLOB)
            return false;
    return true;
}

static struct pg_stmt *stmt_find(struct pg_conn *c, const char *sql)
{
    for (unsigned i = 0; i < c->nstmts; i++)
        if (strcmp(c->stmts[i].sql, sql) == 0)
            return &c->stmts[i];
    return NULL;
}

/* Forgets stmt (the server's copy stays until the connection closes: its name is not reused). */
static void stmt_forget(struct pg_conn *c, struct pg_stmt *stmt)
{
    free(stmt->sql);
    *stmt = c->stmts[--c->nstmts];
}

/* Sends j's statement with its values bound: by stmt's name, or unnamed when stmt is NULL. */
static int send_query(struct pg_conn *c, const struct tycho_sql_job *j, const struct pg_stmt *stmt)
{
    unsigned n = j->nparams;
    const char **values = n ? calloc(n, sizeof(*values)) : NULL;
    int *lens = n ? calloc(n, sizeof(*lens)) : NULL, *formats = n ? calloc(n, sizeof(int)) : NULL;
    Oid *types = n ? calloc(n, sizeof(*types)) : NULL;
    char *nums = n ? malloc((size_t)n * NUM_BYTES) : NULL;
    int sent = 0;

    if (!n || (values && lens && formats && types && nums)) {
        for (unsigned i = 0; i < n; i++)
            param_of(&j->params[i], nums + (size_t)i * NUM_BYTES, NUM_BYTES, &values[i],
                     &lens[i], &formats[i], &types[i]);
        if (j->script)
            sent = PQsendQuery(c->conn, j->sql);
        else if (stmt)
            sent = PQsendQueryPrepared(c->conn, stmt->name, (int)n, values, lens, formats, 0);
        else
            sent = PQsendQueryParams(c->conn, j->sql, (int)n, types, values, lens, formats, 0);
    }
    free(values);
    free(lens);
    free(formats);
    free(types);
    free(nums);
    return sent;
}

/*
 * Sends r's statement on c: by the name it was prepared under on c, or, the
 * first time c sees its SQL (with room left), prepares it first (prepared()
 * then sends it), or unnamed.
 */
static void statement_send(struct pg_conn *c, struct pg_req *r)
{
    struct tycho_sql_job *j = r->j;
    struct timeval tv = tycho_tv(tycho_connpool_opts(c->pg->pool)->timeout);
    struct pg_stmt *stmt = cacheable(j) ? stmt_find(c, j->sql) : NULL;
    int sent;

    c->req = r;
    r->conn = c;
    evtimer_add(&c->timer, &tv);
    if (!stmt && cacheable(j) && c->nstmts < STMT_CACHE) {
        stmt = &c->stmts[c->nstmts];
        snprintf(stmt->name, sizeof(stmt->name), "t%lu", ++c->serial);
        c->preparing = stmt;
        sent = PQsendPrepare(c->conn, stmt->name, j->sql, 0, NULL);
    } else {
        c->running = stmt;
        sent = send_query(c, j, stmt);
    }
    if (!sent) {
        statement_lost(c);
        return;
    }
    statement_flush(c);
}

/* The PREPARE is back: kept and run, or its error is the statement's. */
static void prepared(struct pg_conn *c)
{
    struct pg_stmt *stmt = c->preparing;
    struct tycho_sql_job *j = c->req->j;

    c->preparing = NULL;
    if (PQresultStatus(c->result) != PGRES_COMMAND_OK) {
        statement_end(c, NULL, NULL);
        return;
    }
    PQclear(c->result);
    c->result = NULL;
    stmt->sql = strdup(j->sql);
    if (stmt->sql)
        c->nstmts++;                  /* out of memory: run by name this once, not kept */
    c->running = stmt;
    if (!send_query(c, j, stmt)) {
        statement_lost(c);
        return;
    }
    statement_flush(c);
}

/*
 * A kept statement whose tables changed since it was prepared (SQLSTATE
 * 0A000, "cached plan must not change result type", after an ALTER TABLE)
 * is prepared again and sent once more, outside a transaction (inside, the
 * error has aborted it). Returns whether it was.
 */
static bool statement_again(struct pg_conn *c)
{
    struct pg_req *r = c->req;
    const char *state = PQresultErrorField(c->result, PG_DIAG_SQLSTATE);

    if (!c->running || r->retried || !state || strcmp(state, "0A000") != 0 ||
        PQtransactionStatus(c->conn) != PQTRANS_IDLE)
        return false;
    stmt_forget(c, c->running);
    c->running = NULL;
    r->retried = true;
    PQclear(c->result);
    c->result = NULL;
    statement_send(c, r);
    return true;
}

/* ---- sending -------------------------------------------------------------------- */

static void on_conn(struct tycho_pwaiter *w, struct tycho_pconn *pc, const char *err)
{
    struct pg_req *r = (struct pg_req *)w;

    if (!pc) {
        req_fail(r, strstr(err, "cannot connect") ? "08001" : "53300", err);
        return;
    }
    statement_send((struct pg_conn *)pc, r);
}

void tycho_pg_send(struct tycho_pg *pg, struct tycho_sql_job *j, tycho_sql_done_fn *done,
                   void *arg)
{
    struct pg_req *r = calloc(1, sizeof(*r));
    struct pg_conn *pinned = j->pin;

    if (!r) {
        j->arg = arg;
        j->rc = TYCHO_ERR;
        j->code = "53200";
        snprintf(j->err, sizeof(j->err), "out of memory");
        done(j);
        return;
    }
    r->pg = pg;
    r->j = j;
    r->done = done;
    j->done = done;
    j->arg = arg;
    j->sent = r;
    if (!pinned) {
        tycho_connpool_acquire(pg->pool, &r->w, on_conn);
    } else if (pinned->broken || pinned->req) {
        if (j->ends && !pinned->req)
            conn_done(pinned, false, true, false);
        req_fail(r, "08006", "the transaction's connection was lost");
    } else {
        statement_send(pinned, r);
    }
}

void tycho_pg_cancel(struct tycho_sql_job *j)
{
    struct pg_req *r = j->sent;

    if (!r)
        return;
    if (!r->conn) {                       /* still queued for a connection */
        tycho_connpool_cancel(&r->w);
        j->sent = NULL;
        tycho_sql_job_free(j);
        free(r);
        return;
    }
    r->cancelled = true;                  /* freed when its result is back */
}

void tycho_pg_abandon(void *pin)
{
    struct pg_conn *c = pin;

    c->doomed = true;
    if (!c->req)
        conn_done(c, false, true, false);
}

/* ---- the pool ------------------------------------------------------------------- */

/* The URL's host when it is a name to look up; NULL for an address, a socket or several. */
static char *host_to_look_up(const char *url, char *err)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &msg);
    char *host = NULL;
    unsigned char addr[16];

    if (!opts) {
        first_line(err, TYCHO_ERR_LEN, msg ? msg : "out of memory");
        PQfreemem(msg);
        return (char *)-1;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (strcmp(o->keyword, "hostaddr") == 0 && o->val && o->val[0])
            break;                        /* an address is given: nothing to look up */
        if (strcmp(o->keyword, "host") == 0 && o->val && o->val[0] && o->val[0] != '/' &&
            !strchr(o->val, ',') && inet_pton(AF_INET, o->val, addr) != 1 &&
            inet_pton(AF_INET6, o->val, addr) != 1)
            host = strdup(o->val);
    }
    PQconninfoFree(opts);
    return host;
}

struct tycho_pg *tycho_pg_new(const char *url, const char *name,
                              const struct tycho_connpool_opts *o, struct event_base *base,
                              int worker, char *err)
{
    struct tycho_pg *pg = calloc(1, sizeof(*pg));
    char *host;

    if (!pg || !(pg->url = strdup(url))) {
        free(pg);
        snprintf(err, TYCHO_ERR_LEN, "out of memory");
        return NULL;
    }
    if ((host = host_to_look_up(url, err)) == (char *)-1) {
        free(pg->url);
        free(pg);
        return NULL;
    }
    pg->host = host;
    pg->base = base;
    tycho_list_init(&pg->conns);
    if (!(pg->pool = tycho_connpool_new(name, o, &pg_driver, pg, base, worker))) {
        snprintf(err, TYCHO_ERR_LEN, "out of memory");
        tycho_pg_free(pg);
        return NULL;
    }
    return pg;
}

void tycho_pg_free(struct tycho_pg *pg)
{
    struct tycho_list *it, *next;

    if (!pg)
        return;
    /* Busy and connecting connections first (the pool closes the idle ones). */
    for (it = pg->conns.next; pg->pool && it != &pg->conns; it = next) {
        struct pg_conn *c = tycho_container_of(it, struct pg_conn, all);
        next = it->next;
        if (c->phase != PHASE_READY) {
            tycho_connpool_abort(&c->pc);
        } else if (c->req || c->pinned) {
            if (c->req)
                c->req->cancelled = true;  /* its caller is gone with the generation */
            tycho_connpool_release(&c->pc, false);
        }
    }
    tycho_connpool_free(pg->pool);
    if (pg->dns)
        evdns_base_free(pg->dns, 0);
    free(pg->host);
    free(pg->url);
    free(pg);
}
