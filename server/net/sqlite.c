/*
 * sqlite.c: SQLite on database threads (sqlite.h). One queue of jobs under a
 * mutex, taken by the threads in order; each thread owns its connections (a
 * connection is used by one thread only, so SQLite is opened without its own
 * mutexes). A job's result is copied out of SQLite before it goes back, so
 * nothing of SQLite is touched on a worker thread.
 */
#include "net/sqlite.h"

#include <assert.h>
#include <event2/event.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Databases one thread keeps open at once; past it the least recently used is closed. */
#define CONNS_PER_THREAD 16
/* Prepared statements a connection keeps for reuse; past it the least recently used goes. */
#define STMTS_PER_CONN 32

struct tycho_sqlite_owner {
    struct tycho_mq mq;               /* where its jobs come back */
    bool attached;
    pthread_mutex_t lock;
    pthread_cond_t idle;              /* signalled when inflight drops to 0 */
    unsigned inflight;                /* under lock: jobs sent and not yet pushed back */
};

/* A prepared statement kept for its SQL text: preparing is skipped when it comes again. */
struct cached_stmt {
    char *sql;                        /* owned */
    sqlite3_stmt *st;                 /* owned */
    unsigned long used;               /* when it last ran (the thread's job count) */
};

struct conn {
    char *path;                       /* owned */
    sqlite3 *db;                      /* owned */
    unsigned long used;               /* when it last ran a job (the thread's job count) */
    struct cached_stmt stmts[STMTS_PER_CONN];
};

struct db_thread {
    pthread_t thread;
    int index;
    struct conn conns[CONNS_PER_THREAD];
    unsigned long jobs;
    struct tycho_sql_job *own_head, *own_tail; /* under pool.lock: its transaction's jobs */
    bool pinned;                      /* under pool.lock: a transaction holds it */
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t work;
    struct tycho_sql_job *head, *tail; /* under lock: jobs waiting for a thread */
    bool stopping;
    unsigned nthreads;
    unsigned pinned;                  /* threads a transaction holds */
    struct db_thread *threads;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, false, 0, 0, NULL};

const char *tycho_sqlite_dir;

/* ---- result codes ------------------------------------------------------------ */

#define CODE(c) {c, #c}
static const struct {
    int code;
    const char *name;
} code_names[] = {
    CODE(SQLITE_CONSTRAINT_UNIQUE), CODE(SQLITE_CONSTRAINT_PRIMARYKEY),
    CODE(SQLITE_CONSTRAINT_FOREIGNKEY), CODE(SQLITE_CONSTRAINT_NOTNULL),
    CODE(SQLITE_CONSTRAINT_CHECK), CODE(SQLITE_CONSTRAINT_TRIGGER),
    CODE(SQLITE_CONSTRAINT_ROWID), CODE(SQLITE_CONSTRAINT_DATATYPE),
    CODE(SQLITE_BUSY_SNAPSHOT), CODE(SQLITE_BUSY_RECOVERY), CODE(SQLITE_READONLY_DBMOVED),
    CODE(SQLITE_CANTOPEN_ISDIR), CODE(SQLITE_CANTOPEN_FULLPATH), CODE(SQLITE_IOERR_READ),
    CODE(SQLITE_IOERR_WRITE), CODE(SQLITE_IOERR_FSYNC),
    CODE(SQLITE_ERROR), CODE(SQLITE_INTERNAL), CODE(SQLITE_PERM), CODE(SQLITE_ABORT),
    CODE(SQLITE_BUSY), CODE(SQLITE_LOCKED), CODE(SQLITE_NOMEM), CODE(SQLITE_READONLY),
    CODE(SQLITE_INTERRUPT), CODE(SQLITE_IOERR), CODE(SQLITE_CORRUPT), CODE(SQLITE_NOTFOUND),
    CODE(SQLITE_FULL), CODE(SQLITE_CANTOPEN), CODE(SQLITE_PROTOCOL), CODE(SQLITE_SCHEMA),
    CODE(SQLITE_TOOBIG), CODE(SQLITE_CONSTRAINT), CODE(SQLITE_MISMATCH), CODE(SQLITE_MISUSE),
    CODE(SQLITE_AUTH), CODE(SQLITE_RANGE), CODE(SQLITE_NOTADB),
};

/* The name of an extended result code, or of its primary code when it has none here. */
static const char *code_name(int code)
{
    for (size_t i = 0; i < sizeof(code_names) / sizeof(code_names[0]); i++)
        if (code_names[i].code == code)
            return code_names[i].name;
    for (size_t i = 0; i < sizeof(code_names) / sizeof(code_names[0]); i++)
        if (code_names[i].code == (code & 0xff))
            return code_names[i].name;
    return "SQLITE_ERROR";
}

static void fail(struct tycho_sql_job *j, int code, const char *msg)
{
    j->rc = TYCHO_ERR;
    j->code = code_name(code);
    snprintf(j->err, sizeof(j->err), "%s", msg);
}

/* ---- connections ----------------------------------------------------------------- */

static void conn_close(struct conn *c)
{
    for (int i = 0; i < STMTS_PER_CONN; i++) {
        sqlite3_finalize(c->stmts[i].st);
        free(c->stmts[i].sql);
    }
    sqlite3_close_v2(c->db);
    free(c->path);
    memset(c, 0, sizeof(*c));
}

/* WAL (readers do not wait for the writer), a busy timeout, foreign keys enforced. */
static int conn_setup(sqlite3 *db)
{
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, TYCHO_SQLITE_BUSY_MS);
    return sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;", NULL, NULL,
                        NULL);
}

/* The thread's connection to j's database, opened if need be; NULL with j failed. */
static struct conn *conn_for(struct db_thread *t, struct tycho_sql_job *j)
{
    struct conn *c = NULL, *oldest = &t->conns[0];
    int rc;

    for (int i = 0; i < CONNS_PER_THREAD; i++) {
        struct conn *x = &t->conns[i];
        if (x->db && strcmp(x->path, j->path) == 0) {
            x->used = t->jobs;
            return x;
        }
        if (!x->db && !c)
            c = x;
        if (x->used < oldest->used)
            oldest = x;
    }
    if (!c) {
        conn_close(oldest);
        c = oldest;
    }
    if (!(c->path = strdup(j->path))) {
        fail(j, SQLITE_NOMEM, "out of memory opening the database");
        return NULL;
    }
    rc = sqlite3_open_v2(j->path, &c->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = conn_setup(c->db);
    if (rc != SQLITE_OK) {
        char msg[TYCHO_ERR_LEN];
        snprintf(msg, sizeof(msg), "%s: %s", j->path,
                 c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        fail(j, c->db ? sqlite3_extended_errcode(c->db) : rc, msg);
        conn_close(c);
        return NULL;
    }
    c->used = t->jobs;
    return c;
}

/* ---- running a job ------------------------------------------------------------- */

/*
 * The value index of statement parameter i: `$N` and `?N` mean the Nth value
 * (so `$1` works as in PostgreSQL), a plain `?` its position. 0: a named
 * parameter (:name, @name, $name), which has no value.
 */
static unsigned value_index(sqlite3_stmt *st, int i)
{
    const char *name = sqlite3_bind_parameter_name(st, i);
    char *end;
    unsigned long n;

    if (!name)
        return (unsigned)i;
    if ((name[0] != '$' && name[0] != '?') || name[1] < '0' || name[1] > '9')
        return 0;
    n = strtoul(name + 1, &end, 10);
    return *end || n == 0 || n > 32766 ? 0 : (unsigned)n;
}

static int bind_value(sqlite3_stmt *st, int i, const struct tycho_sql_value *v)
{
    switch (v->type) {
    case TYCHO_SQL_NULL:
        return sqlite3_bind_null(st, i);
    case TYCHO_SQL_INT:
    case TYCHO_SQL_BOOL:
        return sqlite3_bind_int64(st, i, v->i);
    case TYCHO_SQL_FLOAT:
        return sqlite3_bind_double(st, i, v->d);
    case TYCHO_SQL_TEXT:
        return sqlite3_bind_text64(st, i, v->s ? v->s : "", v->len, SQLITE_STATIC, SQLITE_UTF8);
    case TYCHO_SQL_BLOB:
        return sqlite3_bind_blob64(st, i, v->s ? v->s : "", v->len, SQLITE_STATIC);
    }
    return SQLITE_MISUSE;
}

/* Binds j's values to st's parameters; TYCHO_ERR with j failed on a mismatch. */
static int bind_params(sqlite3_stmt *st, struct tycho_sql_job *j)
{
    int n = sqlite3_bind_parameter_count(st);
    unsigned most = 0;
    char msg[TYCHO_ERR_LEN];

    for (int i = 1; i <= n; i++) {
        unsigned k = value_index(st, i);
        if (k == 0) {
            snprintf(msg, sizeof(msg), "parameter %s: use $1, $2, ... or ? (named parameters "
                     "are not supported)", sqlite3_bind_parameter_name(st, i));
            fail(j, SQLITE_RANGE, msg);
            return TYCHO_ERR;
        }
        most = k > most ? k : most;
        if (k <= j->nparams && bind_value(st, i, &j->params[k - 1]) != SQLITE_OK) {
            fail(j, SQLITE_NOMEM, "out of memory binding the parameters");
            return TYCHO_ERR;
        }
    }
    if (most != j->nparams) {
        snprintf(msg, sizeof(msg), "the statement takes %u value%s, %u given", most,
                 most == 1 ? "" : "s", j->nparams);
        fail(j, SQLITE_RANGE, msg);
        return TYCHO_ERR;
    }
    return TYCHO_OK;
}

/* Copies the cell at column c of st's current row into v. TYCHO_ERR: out of memory. */
static int copy_cell(sqlite3_stmt *st, int c, struct tycho_sql_value *v)
{
    int type = sqlite3_column_type(st, c);
    const void *bytes;

    memset(v, 0, sizeof(*v));
    if (type == SQLITE_NULL) {
        v->type = TYCHO_SQL_NULL;
    } else if (type == SQLITE_INTEGER) {
        v->type = TYCHO_SQL_INT;
        v->i = sqlite3_column_int64(st, c);
    } else if (type == SQLITE_FLOAT) {
        v->type = TYCHO_SQL_FLOAT;
        v->d = sqlite3_column_double(st, c);
    } else {
        v->type = type == SQLITE_BLOB ? TYCHO_SQL_BLOB : TYCHO_SQL_TEXT;
        bytes = type == SQLITE_BLOB ? sqlite3_column_blob(st, c) : sqlite3_column_text(st, c);
        v->len = (size_t)sqlite3_column_bytes(st, c);
        if (!(v->s = malloc(v->len + 1)))
            return TYCHO_ERR;
        if (v->len)
            memcpy(v->s, bytes, v->len);
        v->s[v->len] = '\0';
    }
    return TYCHO_OK;
}

/* Appends st's current row to j's cells. */
static int copy_row(sqlite3_stmt *st, struct tycho_sql_job *j, size_t *cap)
{
    if ((j->nrows + 1) * j->ncols > *cap) {
        size_t want = *cap ? *cap * 2 : (size_t)j->ncols * 8;
        struct tycho_sql_value *grown = realloc(j->cells, want * sizeof(*grown));
        if (!grown)
            return TYCHO_ERR;
        j->cells = grown;
        *cap = want;
    }
    for (unsigned c = 0; c < j->ncols; c++)
        if (copy_cell(st, (int)c, &j->cells[j->nrows * j->ncols + c]) < 0) {
            for (unsigned d = 0; d < c; d++)
                free(j->cells[j->nrows * j->ncols + d].s);
            return TYCHO_ERR;
        }
    j->nrows++;
    return TYCHO_OK;
}

static int copy_columns(sqlite3_stmt *st, struct tycho_sql_job *j)
{
    j->ncols = (unsigned)sqlite3_column_count(st);
    if (j->ncols == 0)
        return TYCHO_OK;
    if (!(j->cols = calloc(j->ncols, sizeof(*j->cols))))
        return TYCHO_ERR;
    for (unsigned c = 0; c < j->ncols; c++) {
        const char *name = sqlite3_column_name(st, (int)c);
        if (!(j->cols[c] = strdup(name ? name : "?")))
            return TYCHO_ERR;
    }
    return TYCHO_OK;
}

/* Whether only white space and semicolons are left after the first statement. */
static bool only_blank(const char *tail)
{
    for (; tail && *tail; tail++)
        if (*tail != ';' && *tail != ' ' && *tail != '\t' && *tail != '\n' && *tail != '\r')
            return false;
    return true;
}

static void step_all(sqlite3 *db, sqlite3_stmt *st, struct tycho_sql_job *j)
{
    size_t cap = 0;
    int rc = sqlite3_step(st);

    /*
     * The columns after the first step: a kept statement whose table changed
     * (ALTER TABLE) is prepared anew by that step, and its columns with it.
     */
    if ((rc == SQLITE_ROW || rc == SQLITE_DONE) && copy_columns(st, j) < 0) {
        fail(j, SQLITE_NOMEM, "out of memory reading the result");
        return;
    }
    for (; rc == SQLITE_ROW; rc = sqlite3_step(st))
        if (copy_row(st, j, &cap) < 0) {
            fail(j, SQLITE_NOMEM, "out of memory reading the result");
            return;
        }
    if (rc != SQLITE_DONE) {
        fail(j, sqlite3_extended_errcode(db), sqlite3_errmsg(db));
        return;
    }
    j->changes = sqlite3_changes64(db);
    j->last_id = sqlite3_last_insert_rowid(db);
}

static void run_statement(struct db_thread *t, struct tycho_sql_job *j, struct conn *c);

/* Pins or unpins t (under pool.lock). */
static void set_pinned(struct db_thread *t, bool pinned)
{
    pthread_mutex_lock(&pool.lock);
    if (t->pinned != pinned) {
        t->pinned = pinned;
        pool.pinned += pinned ? 1 : (unsigned)-1;
        pthread_cond_broadcast(&pool.work);
    }
    pthread_mutex_unlock(&pool.lock);
}

/* Rolls back what is open on db, if anything (the end of a transaction, however it ends). */
static void roll_back(sqlite3 *db)
{
    if (db && !sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

/*
 * Runs j, and keeps the transaction rules: a BEGIN that worked pins the
 * thread (unless its owner gave up meanwhile: rolled back at once); an end
 * unpins it, rolling back what a failed COMMIT left open.
 */
static void run_job(struct db_thread *t, struct tycho_sql_job *j)
{
    struct conn *c;
    sqlite3 *db;

    if (atomic_load(&j->cancelled) && !j->begins && !j->ends)
        return;                       /* given up on: nothing to run, nothing to keep */
    c = conn_for(t, j);
    db = c ? c->db : NULL;

    j->thread = t->index;
    if (db && (!atomic_load(&j->cancelled) || j->ends))
        run_statement(t, j, c);
    if (j->begins && j->rc == TYCHO_OK && db) {
        if (atomic_load(&j->cancelled)) {
            roll_back(db);
            j->rolled_back = true;
        } else {
            set_pinned(t, true);
        }
    }
    if (j->ends) {
        roll_back(db);
        set_pinned(t, false);
    }
}

/* c's prepared statement for sql, if it keeps one (then marked used now). */
static sqlite3_stmt *cached(struct db_thread *t, struct conn *c, const char *sql)
{
    for (int i = 0; i < STMTS_PER_CONN; i++)
        if (c->stmts[i].st && strcmp(c->stmts[i].sql, sql) == 0) {
            c->stmts[i].used = t->jobs;
            return c->stmts[i].st;
        }
    return NULL;
}

/* Keeps st for sql in c, in place of the least recently used; false: not kept (memory). */
static bool keep(struct db_thread *t, struct conn *c, const char *sql, sqlite3_stmt *st)
{
    struct cached_stmt *slot = &c->stmts[0];
    char *copy = strdup(sql);

    if (!copy)
        return false;
    for (int i = 1; i < STMTS_PER_CONN && slot->st; i++)
        if (!c->stmts[i].st || c->stmts[i].used < slot->used)
            slot = &c->stmts[i];
    sqlite3_finalize(slot->st);
    free(slot->sql);
    slot->sql = copy;
    slot->st = st;
    slot->used = t->jobs;
    return true;
}

static void run_statement(struct db_thread *t, struct tycho_sql_job *j, struct conn *c)
{
    sqlite3 *db = c->db;
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    bool kept = false;
    int rc;

    if (j->script) {
        if (sqlite3_exec(db, j->sql, NULL, NULL, NULL) != SQLITE_OK)
            fail(j, sqlite3_extended_errcode(db), sqlite3_errmsg(db));
        j->changes = sqlite3_changes64(db);
        j->last_id = sqlite3_last_insert_rowid(db);
        return;
    }
    if ((st = cached(t, c, j->sql))) {
        kept = true;
    } else {
        rc = sqlite3_prepare_v3(db, j->sql, -1, SQLITE_PREPARE_PERSISTENT, &st, &tail);
        if (rc != SQLITE_OK) {
            fail(j, sqlite3_extended_errcode(db), sqlite3_errmsg(db));
            return;
        }
        if (!st) {
            fail(j, SQLITE_MISUSE, "the SQL holds no statement");
            return;
        }
        if (!only_blank(tail)) {
            fail(j, SQLITE_MISUSE, "one statement per call (this SQL holds more)");
            sqlite3_finalize(st);
            return;
        }
        kept = keep(t, c, j->sql, st);
    }
    if (bind_params(st, j) == TYCHO_OK)
        step_all(db, st, j);
    /* The values are the job's memory: unbound before the job goes back. */
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (!kept)
        sqlite3_finalize(st);
}

/* ---- the threads ----------------------------------------------------------------- */

/* Gives j back to its owner, and counts it out. */
static void hand_back(struct tycho_sql_job *j)
{
    struct tycho_sqlite_owner *o = j->owner;

    j->msg.type = TYCHO_MSG_WORK_DONE;
    tycho_mq_push(&o->mq, &j->msg);
    pthread_mutex_lock(&o->lock);
    if (--o->inflight == 0)
        pthread_cond_broadcast(&o->idle);
    pthread_mutex_unlock(&o->lock);
}

/* The most threads transactions may hold at once: all but one, so plain queries go on. */
static unsigned max_pinned(void)
{
    return pool.nthreads > 1 ? pool.nthreads - 1 : 1;
}

/* Unlinks j from the list head/tail, where prev is the job before it (NULL: first). */
static void unlink_job(struct tycho_sql_job **head, struct tycho_sql_job **tail,
                       struct tycho_sql_job *prev, struct tycho_sql_job *j)
{
    struct tycho_sql_job *next = (struct tycho_sql_job *)(void *)j->msg.next;

    if (prev)
        prev->msg.next = j->msg.next;
    else
        *head = next;
    if (*tail == j)
        *tail = prev;
}

/*
 * The next job t may run (under pool.lock): its transaction's first; else,
 * when no transaction holds t, the first shared job it may take (a BEGIN
 * only while fewer than max_pinned threads are held). NULL: none now.
 */
static struct tycho_sql_job *next_job(struct db_thread *t)
{
    struct tycho_sql_job *j, *prev = NULL;

    if ((j = t->own_head)) {
        unlink_job(&t->own_head, &t->own_tail, NULL, j);
        return j;
    }
    if (t->pinned)
        return NULL;
    for (j = pool.head; j; prev = j, j = (struct tycho_sql_job *)(void *)j->msg.next)
        if (!j->begins || pool.pinned < max_pinned()) {
            unlink_job(&pool.head, &pool.tail, prev, j);
            return j;
        }
    return NULL;
}

static void *thread_main(void *arg)
{
    struct db_thread *t = arg;

    for (;;) {
        struct tycho_sql_job *j;
        pthread_mutex_lock(&pool.lock);
        while (!(j = next_job(t)) && !pool.stopping)
            pthread_cond_wait(&pool.work, &pool.lock);
        pthread_mutex_unlock(&pool.lock);
        if (!j)
            break;                    /* stopping, and nothing left for this thread */
        t->jobs++;
        run_job(t, j);                /* a cancelled job is skipped there, its end kept */
        hand_back(j);
    }
    for (int i = 0; i < CONNS_PER_THREAD; i++)
        if (t->conns[i].db)
            conn_close(&t->conns[i]);  /* sqlite3_close rolls back what is still open */
    return NULL;
}

int tycho_sqlite_start(unsigned n, char *err)
{
    sigset_t all, old;

    pthread_mutex_lock(&pool.lock);
    if (pool.nthreads) {
        pthread_mutex_unlock(&pool.lock);
        return TYCHO_OK;
    }
    if (!(pool.threads = calloc(n, sizeof(*pool.threads)))) {
        pthread_mutex_unlock(&pool.lock);
        snprintf(err, TYCHO_ERR_LEN, "out of memory starting the database threads");
        return TYCHO_ERR;
    }
    pool.stopping = false;
    pool.pinned = 0;
    /* Signals are main's: the threads start with every one blocked (they inherit the mask). */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (unsigned i = 0; i < n; i++) {
        pool.threads[i].index = (int)i;
        if (pthread_create(&pool.threads[i].thread, NULL, thread_main, &pool.threads[i]) != 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            snprintf(err, TYCHO_ERR_LEN, "cannot start database thread %u of %u", i + 1, n);
            pool.nthreads = i;
            pthread_mutex_unlock(&pool.lock);
            tycho_sqlite_stop();
            return TYCHO_ERR;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pool.nthreads = n;
    pthread_mutex_unlock(&pool.lock);
    return TYCHO_OK;
}

void tycho_sqlite_stop(void)
{
    unsigned n;

    pthread_mutex_lock(&pool.lock);
    pool.stopping = true;
    n = pool.nthreads;
    pthread_cond_broadcast(&pool.work);
    pthread_mutex_unlock(&pool.lock);
    for (unsigned i = 0; i < n; i++)
        pthread_join(pool.threads[i].thread, NULL);
    pthread_mutex_lock(&pool.lock);
    free(pool.threads);
    pool.threads = NULL;
    pool.nthreads = 0;
    pthread_mutex_unlock(&pool.lock);
}

/* ---- owners and jobs --------------------------------------------------------------- */

/* Jobs back on the owner's thread: a cancelled one is freed, the others go to done. */
static void on_back(struct tycho_msg *list, void *arg)
{
    struct tycho_msg *m, *next;

    (void)arg;
    for (m = list; m; m = next) {
        struct tycho_sql_job *j = (struct tycho_sql_job *)(void *)m;
        next = m->next;
        assert(m->type == TYCHO_MSG_WORK_DONE);
        if (!atomic_load(&j->cancelled)) {
            j->done(j);
            continue;
        }
        /* A BEGIN given up on after the thread took it: its transaction is rolled back. */
        if (j->begins && j->rc == TYCHO_OK && !j->rolled_back)
            tycho_sqlite_abandon(j->owner, j->path, j->thread);
        tycho_sql_job_free(j);
    }
}

struct tycho_sqlite_owner *tycho_sqlite_owner_new(void)
{
    struct tycho_sqlite_owner *o = calloc(1, sizeof(*o));

    if (!o)
        return NULL;
    o->mq.efd = -1;
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->idle, NULL);
    return o;
}

int tycho_sqlite_owner_attach(struct tycho_sqlite_owner *o, struct event_base *base)
{
    if (tycho_mq_init(&o->mq, base, on_back, o) < 0)
        return TYCHO_ERR;
    o->attached = true;
    return TYCHO_OK;
}

void tycho_sqlite_owner_free(struct tycho_sqlite_owner *o)
{
    if (!o)
        return;
    /* Jobs back may send more (a rollback): wait, and drain, until none is left. */
    for (;;) {
        pthread_mutex_lock(&o->lock);
        while (o->inflight > 0)
            pthread_cond_wait(&o->idle, &o->lock);
        pthread_mutex_unlock(&o->lock);
        if (!o->attached || !o->mq.head)
            break;
        tycho_mq_drain(&o->mq);       /* every job still queued was cancelled: freed */
    }
    if (o->attached)
        tycho_mq_dispose(&o->mq);
    pthread_mutex_destroy(&o->lock);
    pthread_cond_destroy(&o->idle);
    free(o);
}

struct tycho_sql_job *tycho_sqlite_job_new(struct tycho_sqlite_owner *o, const char *path,
                                              const char *sql, size_t sql_len, unsigned nparams)
{
    struct tycho_sql_job *j = tycho_sql_job_new(path, sql, sql_len, nparams);

    if (j)
        j->owner = o;
    return j;
}

/* Queues j for any thread (thread < 0) or for one; TYCHO_ERR: not attached, no such thread. */
static int queue_job(struct tycho_sql_job *j, int thread, tycho_sql_done_fn *done,
                     void *arg)
{
    struct tycho_sqlite_owner *o = j->owner;
    struct tycho_sql_job **head, **tail;

    if (!o->attached)
        return TYCHO_ERR;
    j->done = done;
    j->arg = arg;
    j->msg.next = NULL;
    pthread_mutex_lock(&pool.lock);
    if (!pool.nthreads || pool.stopping || thread >= (int)pool.nthreads) {
        pthread_mutex_unlock(&pool.lock);
        return TYCHO_ERR;
    }
    pthread_mutex_lock(&o->lock);
    o->inflight++;
    pthread_mutex_unlock(&o->lock);
    head = thread < 0 ? &pool.head : &pool.threads[thread].own_head;
    tail = thread < 0 ? &pool.tail : &pool.threads[thread].own_tail;
    if (*tail)
        (*tail)->msg.next = &j->msg;
    else
        *head = j;
    *tail = j;
    pthread_cond_broadcast(&pool.work);
    pthread_mutex_unlock(&pool.lock);
    return TYCHO_OK;
}

int tycho_sqlite_send(struct tycho_sql_job *j, tycho_sql_done_fn *done, void *arg)
{
    return queue_job(j, -1, done, arg);
}

int tycho_sqlite_send_to(struct tycho_sql_job *j, int thread, tycho_sql_done_fn *done,
                         void *arg)
{
    return queue_job(j, thread < 0 ? 0 : thread, done, arg);
}

int tycho_sqlite_abandon(struct tycho_sqlite_owner *o, const char *path, int thread)
{
    struct tycho_sql_job *j = tycho_sqlite_job_new(o, path, "ROLLBACK", 8, 0);

    if (!j)
        return TYCHO_ERR;
    j->ends = true;
    atomic_store(&j->cancelled, true);  /* its result is dropped when it comes back */
    if (queue_job(j, thread, NULL, NULL) < 0) {   /* cancelled: done is never called */
        tycho_sql_job_free(j);
        return TYCHO_ERR;
    }
    return TYCHO_OK;
}

void tycho_sqlite_cancel(struct tycho_sql_job *j)
{
    atomic_store(&j->cancelled, true);
}
