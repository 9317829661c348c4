/*
 * servers.h: real database servers for the integration tests: a PostgreSQL
 * cluster and a Redis server, each in its own temporary directory under /tmp,
 * on a free TCP port of 127.0.0.1, started by the test and gone when it ends.
 *
 * Contract
 * - Single-threaded: call everything from the test's main thread. A started
 *   server gets PR_SET_PDEATHSIG(SIGKILL), which fires when the *thread* that
 *   forked it exits, so a server started from a short-lived thread would die
 *   with that thread.
 * - The caller owns the struct (zero it or not; *_start fills it in). The
 *   server process, its temporary directory and everything in it belong to
 *   the struct until *_stop(), which is idempotent and also cleans up after a
 *   failed *_start().
 * - If the test process dies (crash, SIGKILL, timeout(1)), the kernel kills
 *   the servers (PDEATHSIG; PostgreSQL's backends follow their postmaster).
 *   Only the temporary directory is left behind then.
 * - Errors: the functions return -1 (or a command's exit status) and say why
 *   with note(), with the tail of the server's log where there is one. They
 *   never count a check: the test decides what a failure means.
 * - As root (CI), the servers run as the user nobody: PostgreSQL refuses to
 *   run as root, and Redis gets the same for safety. The temporary directory
 *   is then owned by nobody. Otherwise they run as the current user. The
 *   clients (psql, pg_isready, redis-cli) always run as the current user.
 *
 * PostgreSQL (Debian's postgresql package: /usr/lib/postgresql/N/bin, 15
 * preferred, else the newest N): a cluster with the superuser postgres, and
 * a database app owned by a role app with the password "secret". Over TCP,
 * postgres logs in without a password (trust) and every other role must give
 * its password (scram-sha-256), so a client's password handling is really
 * exercised; over the Unix socket in DIR everything is trusted.
 *
 * Redis (Debian's redis-server package: /usr/bin/redis-server, redis-cli):
 * no persistence (no RDB, no AOF), so a restart starts empty.
 *
 * Include after harness.h and support.h (it uses note(), now_ms(),
 * sleep_ms()); it does not need client.h. A program need not use all of it.
 */
#ifndef TYCHO_TEST_SERVERS_H
#define TYCHO_TEST_SERVERS_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"

/* Bounds, in milliseconds. initdb takes about a second; recovery after a kill a few. */
#define SRV_READY_MS 30000      /* from exec to accepting connections */
#define SRV_STOP_MS 20000       /* from SIGINT/SIGTERM to exit, then SIGKILL */
#define SRV_COMMAND_MS 60000    /* one psql or redis-cli run, then SIGKILL */
#define SRV_PROBE_MS 3000       /* one readiness probe (a foreign listener may never answer) */
#define SRV_MAX_ARGS 64

/* ======================================================================
 * Processes
 * ====================================================================== */

/* Whom a server runs as. */
struct srv_user {
    int drop;       /* 1: switch to uid/gid before exec (we are root) */
    uid_t uid;
    gid_t gid;
};

/* Fills u in: nobody when we are root, else ourselves. Returns 0, or -1. */
static int srv_user_init(struct srv_user *u)
{
    struct passwd *pw;

    u->drop = 0;
    u->uid = geteuid();
    u->gid = getegid();
    if (u->uid != 0)
        return 0;
    pw = getpwnam("nobody");
    if (!pw) {
        note("running as root, and there is no user nobody to run the server as");
        return -1;
    }
    u->drop = 1;
    u->uid = pw->pw_uid;
    u->gid = pw->pw_gid;
    return 0;
}

/*
 * The environment for a child: ours without PG* (a PGHOST, PGOPTIONS or
 * PGPASSWORD of the caller's must not redirect or change the commands here)
 * and with LC_ALL=C (messages the tests can match), then extra (may be
 * NULL). Returns a malloc'd array whose strings are borrowed, or NULL.
 */
static char **srv_env(const char *const *extra)
{
    size_t n = 0, i, k = 0;
    char **env;

    while (environ && environ[n])
        n++;
    for (i = 0; extra && extra[i]; i++)
        n++;
    env = malloc((n + 2) * sizeof *env);
    if (!env)
        return NULL;
    for (i = 0; environ && environ[i]; i++)
        if (strncmp(environ[i], "PG", 2) != 0 && strncmp(environ[i], "LC_ALL=", 7) != 0)
            env[k++] = environ[i];
    env[k++] = (char *)"LC_ALL=C";
    for (i = 0; extra && extra[i]; i++)
        env[k++] = (char *)extra[i];
    env[k] = NULL;
    return env;
}

static void srv_child_fail(const char *what, const char *arg)
{
    const char *err = strerror(errno);

    /* write(), not stdio: only async-signal-safe calls between fork and exec */
    if (write(2, what, strlen(what)) < 0 || write(2, arg, strlen(arg)) < 0 ||
        write(2, ": ", 2) < 0 || write(2, err, strlen(err)) < 0 || write(2, "\n", 1) < 0) {
    }
    _exit(127);
}

/*
 * In the child, after fork: stdin/stdout/stderr from in/out/err, no other
 * descriptor of ours, default signals, the user switched, then exec. Never
 * returns. Only async-signal-safe calls: the test may have threads.
 */
static void srv_child(const char *const *argv, char *const *envp, const struct srv_user *u,
                      const char *cwd, int in, int out, int err, pid_t parent)
{
    sigset_t all;
    int fd;

    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    /* The test ignores SIGPIPE and catches the others; an ignored signal survives exec. */
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        _exit(127);
    /* No descriptor of the test's (a client socket, a pipe to tycho) may live on in a server. */
    if (close_range(3, ~0U, 0) < 0)
        for (fd = 3; fd < 65536; fd++)
            close(fd);
    if (cwd && chdir(cwd) < 0)
        srv_child_fail("chdir ", cwd);
    if (u && u->drop && (setgroups(0, NULL) < 0 || setgid(u->gid) < 0 || setuid(u->uid) < 0))
        srv_child_fail("cannot switch user for ", argv[0]);
    /*
     * Never outlive the test. This must come after setuid(): the kernel clears
     * the parent-death signal on any change of credentials (setuid() by the
     * process itself too, not only a set-user-ID exec). exec of an ordinary
     * binary keeps it. If the test died before this line, the signal will
     * never come, hence the getppid() check.
     */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    execve(argv[0], (char *const *)argv, envp);
    srv_child_fail("exec ", argv[0]);
}

/*
 * Starts argv (argv[0] a full path) in the background, as u, in cwd, with
 * stdout and stderr appended to log. Returns its pid, or -1.
 */
static pid_t srv_spawn(const char *const *argv, const struct srv_user *u, const char *cwd,
                       const char *log)
{
    char **env = srv_env(NULL);
    int in = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid_t parent = getpid(), pid = -1;

    if (!env || in < 0 || out < 0) {
        note("cannot start %s: %s (log %s)", argv[0], strerror(errno), log);
        goto done;
    }
    if (u->drop && fchown(out, u->uid, u->gid) < 0)
        note("chown %s: %s", log, strerror(errno));
    fflush(stdout);
    pid = fork();
    if (pid == 0)
        srv_child(argv, env, u, cwd, in, out, out, parent);
    if (pid < 0)
        note("fork: %s", strerror(errno));
done:
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    free(env);
    return pid;
}

/*
 * Waits up to timeout_ms for our child pid to exit. Returns 1 once reaped
 * (*status set when status is not NULL), 0 on timeout.
 */
static int srv_wait_exit(pid_t pid, int timeout_ms, int *status)
{
    long long deadline = now_ms() + timeout_ms;
    int st = 0;

    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid || (w < 0 && errno == ECHILD)) {
            if (status)
                *status = w == pid ? st : 0;
            return 1;
        }
        if (now_ms() >= deadline)
            return 0;
        sleep_ms(20);
    }
}

/*
 * Sends sig to our child *pid and waits up to SRV_STOP_MS, then SIGKILL.
 * Returns 0 if it exited with status 0, else -1. *pid becomes -1.
 */
static int srv_signal_stop(pid_t *pid, int sig, const char *name)
{
    int status = 0, rc = -1;

    if (*pid <= 0)
        return 0;
    kill(*pid, sig);
    if (srv_wait_exit(*pid, SRV_STOP_MS, &status)) {
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            rc = 0;
        else
            note("%s exited with status 0x%x after signal %d", name, status, sig);
    } else {
        note("%s did not exit within %d ms of signal %d; killing it", name, SRV_STOP_MS, sig);
        kill(*pid, SIGKILL);
        srv_wait_exit(*pid, SRV_STOP_MS, NULL);
    }
    *pid = -1;
    return rc;
}

/* SIGKILL to our child *pid, reaped; *pid becomes -1. */
static void srv_kill(pid_t *pid)
{
    if (*pid <= 0)
        return;
    kill(*pid, SIGKILL);
    srv_wait_exit(*pid, SRV_STOP_MS, NULL);
    *pid = -1;
}

/* Appends what fd has to read into buf (len of cap kept, the rest dropped). 0 at EOF. */
static int srv_drain(int fd, char *buf, size_t cap, size_t *len)
{
    char chunk[4096];
    ssize_t n = read(fd, chunk, sizeof chunk);
    size_t keep;

    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 1 : 0;
    if (n == 0)
        return 0;
    if (!buf || cap == 0)
        return 1;   /* read and dropped: the child must not block on a full pipe */
    keep = *len + 1 < cap ? cap - 1 - *len : 0;
    if (keep > (size_t)n)
        keep = (size_t)n;
    memcpy(buf + *len, chunk, keep);
    *len += keep;
    buf[*len] = '\0';
    return 1;
}

/* Drops trailing newlines (and CRs) from s. */
static void srv_chomp(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
}

/*
 * Runs argv (argv[0] a full path) as the current user with extra environment
 * (may be NULL), killed after timeout_ms. Its stdout goes into out (cap
 * bytes, NUL-terminated, excess dropped); its stderr into err, or into out
 * too when err is NULL. Returns the exit status, or -1 if it could not run,
 * was killed by a signal or timed out.
 */
static int srv_run(const char *const *argv, const char *const *extra, char *out, size_t cap,
                   char *err, size_t errcap, int timeout_ms)
{
    int opipe[2] = {-1, -1}, epipe[2] = {-1, -1}, in = -1, status = 0, open_fds;
    size_t olen = 0, elen = 0;
    struct srv_user self = {0, 0, 0};
    char **env = srv_env(extra);
    long long deadline = now_ms() + timeout_ms;
    pid_t parent = getpid(), pid = -1;

    if (cap)
        out[0] = '\0';
    if (err && errcap)
        err[0] = '\0';
    if (!env || pipe2(opipe, O_CLOEXEC) < 0 || (err && pipe2(epipe, O_CLOEXEC) < 0) ||
        (in = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
        note("cannot run %s: %s", argv[0], strerror(errno));
        goto fail;
    }
    fflush(stdout);
    pid = fork();
    if (pid == 0)
        srv_child(argv, env, &self, NULL, in, opipe[1], err ? epipe[1] : opipe[1], parent);
    if (pid < 0) {
        note("fork: %s", strerror(errno));
        goto fail;
    }
    close(opipe[1]);
    opipe[1] = -1;
    if (err) {
        close(epipe[1]);
        epipe[1] = -1;
    }
    open_fds = err ? 2 : 1;
    while (open_fds > 0) {
        struct pollfd p[2] = {{opipe[0], POLLIN, 0}, {epipe[0], POLLIN, 0}};
        long long left = deadline - now_ms();
        int i;

        if (left <= 0 || poll(p, err ? 2 : 1, (int)left) < 0) {
            if (errno == EINTR && left > 0)
                continue;
            if (timeout_ms >= SRV_COMMAND_MS)    /* a probe's timeout is no news */
                note("%s: no answer within %d ms; killing it", argv[0], timeout_ms);
            srv_kill(&pid);
            goto fail;
        }
        for (i = 0; i < (err ? 2 : 1); i++) {
            if (p[i].fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (!srv_drain(p[i].fd, i ? err : out, i ? errcap : cap, i ? &elen : &olen)) {
                close(p[i].fd);
                *(i ? &epipe[0] : &opipe[0]) = -1;
                open_fds--;
            }
        }
    }
    if (!srv_wait_exit(pid, (int)(deadline > now_ms() ? deadline - now_ms() : 1), &status)) {
        note("%s: did not exit within %d ms; killing it", argv[0], timeout_ms);
        srv_kill(&pid);
        goto fail;
    }
    free(env);
    close(in);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
fail:
    for (int i = 0; i < 2; i++) {
        if (opipe[i] >= 0)
            close(opipe[i]);
        if (epipe[i] >= 0)
            close(epipe[i]);
    }
    if (in >= 0)
        close(in);
    free(env);
    return -1;
}

/* ======================================================================
 * Files and ports
 * ====================================================================== */

/* Makes dir (cap >= 32) = /tmp/tycho-NAME-XXXXXX, owned by u. Returns 0, or -1. */
static int srv_make_dir(char *dir, size_t cap, const char *name, const struct srv_user *u)
{
    snprintf(dir, cap, "/tmp/tycho-%s-XXXXXX", name);
    if (!mkdtemp(dir)) {
        note("mkdtemp %s: %s", dir, strerror(errno));
        dir[0] = '\0';
        return -1;
    }
    if (u->drop && chown(dir, u->uid, u->gid) < 0) {
        note("chown %s: %s", dir, strerror(errno));
        rmdir(dir);
        dir[0] = '\0';
        return -1;
    }
    return 0;
}

static int srv_remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) < 0 && errno != ENOENT)
        note("remove %s: %s", path, strerror(errno));
    return 0;   /* go on: remove as much as we can */
}

/* Removes dir and everything under it (symbolic links not followed). Returns 0, or -1. */
static int srv_remove_tree(const char *dir)
{
    struct stat st;

    nftw(dir, srv_remove_one, 16, FTW_DEPTH | FTW_PHYS);
    return lstat(dir, &st) == 0 ? -1 : 0;
}

/*
 * A TCP port of 127.0.0.1 that was free a moment ago: bound to port 0, read
 * back, closed. Another process may take it before the server binds it; the
 * start functions retry with another port when that happens. Returns it, or -1.
 */
static int srv_free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    if (port < 0)
        note("no free port: %s", strerror(errno));
    return port;
}

/* The size of a file (where the next start's log lines will begin), 0 if none. */
static long srv_file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* Reads up to cap-1 bytes of path from offset from (from < 0: the last cap-1 bytes). */
static void srv_read_from(const char *path, long from, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n = 0;

    buf[0] = '\0';
    if (!f)
        return;
    if (from < 0) {
        long size = srv_file_size(path);
        from = size > (long)cap - 1 ? size - (long)cap + 1 : 0;
    }
    if (fseek(f, from, SEEK_SET) == 0)
        n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* note()s the end of a server's log. */
static void srv_note_log(const char *log)
{
    char tail[2048];

    srv_read_from(log, -1, tail, sizeof tail);
    srv_chomp(tail);
    note("the end of %s:\n%s", log, tail[0] ? tail : "(empty)");
}

/* 1 if the log written since offset from mentions a port taken by another process. */
static int srv_port_was_taken(const char *log, long from)
{
    char buf[8192];

    srv_read_from(log, from, buf, sizeof buf);
    return strstr(buf, "Address already in use") != NULL;
}

/*
 * Starts argv as u and waits until ready(ctx) says it answers (bounded by
 * SRV_READY_MS). Returns 0 with *pid running; 1 if it exited first (*pid
 * -1: the caller may retry); -1 on another failure (*pid -1, killed).
 */
static int srv_launch(pid_t *pid, const char *const *argv, const struct srv_user *u,
                      const char *cwd, const char *log, int (*ready)(const void *),
                      const void *ctx, const char *name)
{
    long long deadline = now_ms() + SRV_READY_MS;
    int status;

    *pid = srv_spawn(argv, u, cwd, log);
    if (*pid < 0)
        return -1;
    for (;;) {
        /* Exited first: else a probe may wait on whoever else listens on the port. */
        if (srv_wait_exit(*pid, 0, &status)) {
            *pid = -1;
            return 1;
        }
        if (ready(ctx))
            return 0;
        if (now_ms() > deadline) {
            note("%s does not answer within %d ms", name, SRV_READY_MS);
            srv_kill(pid);
            return -1;
        }
        sleep_ms(50);
    }
}

/* ======================================================================
 * PostgreSQL
 * ====================================================================== */

struct pg_server {
    pid_t pid;              /* the postmaster, our child; -1 when not running */
    int port;               /* its TCP port on 127.0.0.1; kept by pg_restart() */
    char dir[64];           /* owned temp dir (the socket is here); "" once removed */
    char data[96];          /* DIR/data, the cluster */
    char log[96];           /* DIR/postgres.log: the server's output, every start appended */
    char bin[200];          /* the folder of initdb, postgres, pg_isready and psql */
    struct srv_user user;   /* whom initdb and postgres run as */
};

/* 1 if folder has the four programs we run. */
static int pg_bin_complete(const char *folder)
{
    static const char *const progs[] = {"initdb", "postgres", "pg_isready", "psql"};
    char path[300];
    size_t i;

    for (i = 0; i < sizeof progs / sizeof progs[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", folder, progs[i]);
        if (access(path, X_OK) != 0)
            return 0;
    }
    return 1;
}

/*
 * Finds Debian's server binaries: /usr/lib/postgresql/15/bin, else the newest
 * /usr/lib/postgresql/N/bin (the server is not on PATH in Debian). Returns 0, or -1.
 */
static int pg_find_bin(char *bin, size_t cap)
{
    glob_t g;
    long best = -1;
    size_t i;

    if (pg_bin_complete("/usr/lib/postgresql/15/bin")) {
        snprintf(bin, cap, "/usr/lib/postgresql/15/bin");
        return 0;
    }
    bin[0] = '\0';
    if (glob("/usr/lib/postgresql/*/bin", 0, NULL, &g) != 0)
        return -1;
    for (i = 0; i < g.gl_pathc; i++) {
        long v = strtol(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"), NULL, 10);
        if (v > best && pg_bin_complete(g.gl_pathv[i])) {
            best = v;
            snprintf(bin, cap, "%s", g.gl_pathv[i]);
        }
    }
    globfree(&g);
    return bin[0] ? 0 : -1;
}

/*
 * psql as user (password: NULL or given in PGPASSWORD) on database db, one
 * SQL string passed as an argument (no shell, no quoting). out gets what it
 * printed, unaligned, tuples only, trailing newlines trimmed; when it fails,
 * its error message (stderr) after that. out may be NULL. Returns psql's exit
 * status: 0, 1 (fatal error), 2 (no connection), 3 (SQL error), or -1.
 */
static int pg_psql(const struct pg_server *s, const char *user, const char *password,
                   const char *db, const char *sql, char *out, size_t cap)
{
    char prog[256], port[16], pw[256], scratch[4096], err[2048];
    const char *argv[] = {prog, "-X", "-A", "-t", "-q", "-h", "127.0.0.1", "-p", port, "-U", user,
                          "-d", db, "-v", "ON_ERROR_STOP=1", "-c", sql, NULL};
    const char *extra[] = {"PGCONNECT_TIMEOUT=10", password ? pw : NULL, NULL};
    int rc;

    if (!out || cap == 0) {
        out = scratch;
        cap = sizeof scratch;
    }
    out[0] = '\0';
    if (s->port <= 0 || !s->bin[0]) {
        snprintf(out, cap, "no server");
        return -1;
    }
    snprintf(prog, sizeof prog, "%s/psql", s->bin);
    snprintf(port, sizeof port, "%d", s->port);
    snprintf(pw, sizeof pw, "PGPASSWORD=%s", password ? password : "");
    rc = srv_run(argv, extra, out, cap, err, sizeof err, SRV_COMMAND_MS);
    srv_chomp(out);
    srv_chomp(err);
    if (rc != 0 && err[0]) {
        size_t n = strlen(out);
        snprintf(out + n, cap - n, "%s%s", n ? "\n" : "", err);
    }
    return rc;
}

/* SQL as the superuser postgres on database app; see pg_psql() for out and the result. */
static int pg_sql(const struct pg_server *s, const char *sql, char *out, size_t cap)
{
    return pg_psql(s, "postgres", NULL, "app", sql, out, cap);
}

/* SQL as user with password (over TCP: checked) on database app; see pg_psql(). */
static int pg_sql_as(const struct pg_server *s, const char *user, const char *password,
                     const char *sql, char *out, size_t cap)
{
    return pg_psql(s, user, password, "app", sql, out, cap);
}

/* srv_launch()'s readiness check: pg_isready says the server accepts connections. */
static int pg_ready(const void *ctx)
{
    const struct pg_server *s = ctx;
    char prog[256], port[16], out[512];
    const char *argv[] = {prog, "-q", "-h", "127.0.0.1", "-p", port, "-U", "postgres",
                          "-d", "postgres", "-t", "2", NULL};

    snprintf(prog, sizeof prog, "%s/pg_isready", s->bin);
    snprintf(port, sizeof port, "%d", s->port);
    return srv_run(argv, NULL, out, sizeof out, NULL, 0, SRV_PROBE_MS) == 0;
}

/*
 * Starts the postmaster on s->port and waits until it accepts connections.
 * new_port: a fresh cluster, so when another process took the port, pick
 * another (3 tries). Otherwise (a restart) keep the port, and when the
 * postmaster exits at once, try again until SRV_READY_MS: after a SIGKILL,
 * the old backends may still hold the shared memory for a moment ("pre-existing
 * shared memory block is still in use"), or the port.
 */
static int pg_launch(struct pg_server *s, int new_port)
{
    char prog[256], port[16], sock[128];
    const char *argv[] = {
        prog, "-D", s->data, "-p", port, "-c", "listen_addresses=127.0.0.1", "-c", sock,
        /* Speed: a test's data need not survive an operating-system crash. */
        "-c", "fsync=off",
        /*
         * Not synchronous_commit=off: a commit must reach the kernel before it
         * is acknowledged, or a test that kills the server would lose it.
         */
        "-c", "max_connections=300",
        /* Predictable: no JIT pauses on a big query, messages and times the same everywhere. */
        "-c", "jit=off", "-c", "lc_messages=C", "-c", "TimeZone=UTC", NULL};
    long long deadline = now_ms() + SRV_READY_MS;
    int tries = 0, rc;

    snprintf(prog, sizeof prog, "%s/postgres", s->bin);
    snprintf(sock, sizeof sock, "unix_socket_directories=%s", s->dir);
    for (;;) {
        long from = srv_file_size(s->log);

        snprintf(port, sizeof port, "%d", s->port);
        rc = srv_launch(&s->pid, argv, &s->user, s->dir, s->log, pg_ready, s, "postgres");
        if (rc <= 0)
            break;
        if (new_port && ++tries < 3 && srv_port_was_taken(s->log, from)) {
            s->port = srv_free_port();
            continue;
        }
        if (new_port || now_ms() > deadline) {
            note("postgres exited during startup");
            break;
        }
        sleep_ms(200);
    }
    if (rc != 0) {
        srv_note_log(s->log);
        return -1;
    }
    return 0;
}

/*
 * Stops the postmaster with SIGINT (fast shutdown: clients disconnected,
 * a clean checkpoint), SIGKILL after SRV_STOP_MS. Returns 0 if it exited 0.
 */
static int pg_shutdown(struct pg_server *s)
{
    int rc = srv_signal_stop(&s->pid, SIGINT, "postgres");

    if (rc != 0)
        srv_note_log(s->log);
    return rc;
}

/* Writes the client authentication rules (see the top of this file). Returns 0, or -1. */
static int pg_write_hba(const struct pg_server *s)
{
    char path[128];
    FILE *f;
    int rc;

    snprintf(path, sizeof path, "%s/pg_hba.conf", s->data);
    f = fopen(path, "w");  /* keeps the owner initdb gave it */
    if (!f) {
        note("%s: %s", path, strerror(errno));
        return -1;
    }
    fputs("# written by tests/integration/servers.h\n"
          "local all all trust\n"
          "host all postgres 127.0.0.1/32 trust\n"
          "host all all 127.0.0.1/32 scram-sha-256\n", f);
    rc = fclose(f);
    return rc == 0 ? 0 : -1;
}

/*
 * Stops the server (if running; fast shutdown) and removes its directory.
 * Idempotent. Returns 0, or -1 if it did not exit cleanly or the directory
 * could not be removed.
 */
static int pg_stop(struct pg_server *s)
{
    int rc = 0;

    if (s->pid > 0)
        rc = pg_shutdown(s);
    s->pid = -1;
    if (s->dir[0]) {
        if (srv_remove_tree(s->dir) < 0) {
            note("cannot remove %s", s->dir);
            rc = -1;
        }
        s->dir[0] = '\0';
    }
    return rc;
}

/*
 * A new cluster in a new temporary directory, its server started and
 * accepting connections, with the role and database app (see the top).
 * Returns 0, or -1 with a note() (and nothing left running or on disk).
 */
static int pg_start(struct pg_server *s)
{
    char initdb[256], out[4096];
    const char *init_argv[] = {initdb, "-D", s->data, "-U", "postgres", "--auth-local=trust",
                               "--auth-host=trust", "--no-sync", "--locale=C",
                               "--encoding=UTF8", "--no-instructions", NULL};
    int rc;

    memset(s, 0, sizeof *s);
    s->pid = -1;
    if (pg_find_bin(s->bin, sizeof s->bin) < 0) {
        note("PostgreSQL not found: no /usr/lib/postgresql/*/bin with initdb, postgres, "
             "pg_isready and psql (Debian: apt-get install postgresql; `make test` does)");
        return -1;
    }
    if (srv_user_init(&s->user) < 0 || srv_make_dir(s->dir, sizeof s->dir, "pg", &s->user) < 0)
        return -1;
    snprintf(s->data, sizeof s->data, "%s/data", s->dir);
    snprintf(s->log, sizeof s->log, "%s/postgres.log", s->dir);
    snprintf(initdb, sizeof initdb, "%s/initdb", s->bin);

    /* initdb refuses root too, so it runs through srv_spawn() as the server's user. */
    {
        char initlog[128];
        pid_t pid;
        int status = -1;

        snprintf(initlog, sizeof initlog, "%s/initdb.log", s->dir);
        pid = srv_spawn(init_argv, &s->user, s->dir, initlog);
        if (pid < 0)
            goto fail;
        if (!srv_wait_exit(pid, SRV_READY_MS, &status)) {
            note("initdb did not finish within %d ms", SRV_READY_MS);
            srv_kill(&pid);
            srv_note_log(initlog);
            goto fail;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            note("initdb failed (status 0x%x)", status);
            srv_note_log(initlog);
            goto fail;
        }
    }
    if (pg_write_hba(s) < 0 || (s->port = srv_free_port()) < 0 || pg_launch(s, 1) < 0)
        goto fail;
    /* Two -c: each its own transaction (CREATE DATABASE cannot run inside one). */
    {
        char prog[256], port[16];
        const char *argv[] = {prog, "-X", "-q", "-h", "127.0.0.1", "-p", port, "-U", "postgres",
                              "-d", "postgres", "-v", "ON_ERROR_STOP=1",
                              "-c", "CREATE ROLE app LOGIN PASSWORD 'secret'",
                              "-c", "CREATE DATABASE app OWNER app", NULL};

        snprintf(prog, sizeof prog, "%s/psql", s->bin);
        snprintf(port, sizeof port, "%d", s->port);
        rc = srv_run(argv, NULL, out, sizeof out, NULL, 0, SRV_COMMAND_MS);
        if (rc != 0) {
            srv_chomp(out);
            note("creating the role and database app: psql exit %d: %s", rc, out);
            srv_note_log(s->log);
            goto fail;
        }
    }
    return 0;
fail:
    pg_stop(s);
    return -1;
}

/*
 * SIGKILL to the postmaster (a crash, e.g. mid-query), reaped. Its backends
 * see it gone and exit on their own: an idle or waiting one (pg_sleep, a
 * lock) at once, its client getting an error; one busy computing only when
 * its statement ends (seen: seconds), holding the shared memory until then,
 * which pg_restart() waits out. The directory stays, for pg_restart() or
 * pg_stop().
 */
static void pg_kill(struct pg_server *s)
{
    srv_kill(&s->pid);
}

/*
 * Starts the server again on the same data directory and port, after
 * pg_kill() (it recovers from its write-ahead log) or while running (a fast
 * shutdown first), and waits until it accepts connections. Returns 0, or -1.
 */
static int pg_restart(struct pg_server *s)
{
    if (!s->dir[0]) {
        note("pg_restart: no cluster (not started, or stopped)");
        return -1;
    }
    if (s->pid > 0)
        pg_shutdown(s);
    return pg_launch(s, 0);
}

/* ======================================================================
 * Redis
 * ====================================================================== */

#define REDIS_SERVER "/usr/bin/redis-server"
#define REDIS_CLI "/usr/bin/redis-cli"

struct redis_server {
    pid_t pid;              /* redis-server, our child; -1 when not running */
    int port;               /* its TCP port on 127.0.0.1; kept by redis_restart() */
    char dir[64];           /* owned temp dir, its working directory; "" once removed */
    char log[96];           /* DIR/redis.log: its log and output, every start appended */
    struct srv_user user;   /* whom it runs as */
};

/*
 * redis-cli -e -h 127.0.0.1 -p PORT WORDS... (words: NULL-terminated, each
 * one argument, no quoting needed). out (may be NULL) gets its output, raw
 * (a nil or a missing key: an empty string), trailing newlines trimmed, an
 * error reply's message included. Returns redis-cli's exit status: 0, or 1
 * on an error reply or no connection; -1 if it could not run.
 */
static int redis_cmd_within(const struct redis_server *s, const char *const *argv_words,
                            char *out, size_t cap, int timeout_ms)
{
    const char *argv[SRV_MAX_ARGS + 8];
    char port[16], scratch[4096];
    int argc = 0, i, rc;

    if (!out || cap == 0) {
        out = scratch;
        cap = sizeof scratch;
    }
    out[0] = '\0';
    snprintf(port, sizeof port, "%d", s->port);
    argv[argc++] = REDIS_CLI;
    argv[argc++] = "-e";    /* exit status 1 on an error reply, not 0 */
    argv[argc++] = "-h";
    argv[argc++] = "127.0.0.1";
    argv[argc++] = "-p";
    argv[argc++] = port;
    for (i = 0; argv_words[i]; i++) {
        if (i == SRV_MAX_ARGS) {
            note("redis_cmd: more than %d words", SRV_MAX_ARGS);
            return -1;
        }
        argv[argc++] = argv_words[i];
    }
    argv[argc] = NULL;
    rc = srv_run(argv, NULL, out, cap, NULL, 0, timeout_ms);
    srv_chomp(out);
    return rc;
}

static int redis_cmd(const struct redis_server *s, const char *const *argv_words, char *out,
                     size_t cap)
{
    return redis_cmd_within(s, argv_words, out, cap, SRV_COMMAND_MS);
}

/* srv_launch()'s readiness check: PING answers PONG. */
static int redis_ready(const void *ctx)
{
    const char *const ping[] = {"PING", NULL};
    char out[256];

    return redis_cmd_within(ctx, ping, out, sizeof out, SRV_PROBE_MS) == 0 &&
           strcmp(out, "PONG") == 0;
}

/* Like pg_launch(): new_port picks another port if it was taken; else retry the same. */
static int redis_launch(struct redis_server *s, int new_port)
{
    char port[16], logfile[96];
    const char *argv[] = {REDIS_SERVER, "--port", port, "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", s->dir, "--daemonize", "no",
                          "--protected-mode", "no", "--logfile", logfile, NULL};
    long long deadline = now_ms() + SRV_READY_MS;
    int tries = 0, rc;

    snprintf(logfile, sizeof logfile, "%s", s->log);
    for (;;) {
        long from = srv_file_size(s->log);

        snprintf(port, sizeof port, "%d", s->port);
        rc = srv_launch(&s->pid, argv, &s->user, s->dir, s->log, redis_ready, s,
                        "redis-server");
        if (rc <= 0)
            break;
        if (new_port && ++tries < 3 && srv_port_was_taken(s->log, from)) {
            s->port = srv_free_port();
            continue;
        }
        if (new_port || now_ms() > deadline) {
            note("redis-server exited during startup");
            break;
        }
        sleep_ms(200);
    }
    if (rc != 0) {
        srv_note_log(s->log);
        return -1;
    }
    return 0;
}

/* Stops the server (SIGTERM; no data to save) and removes its directory. Idempotent. */
static int redis_stop(struct redis_server *s)
{
    int rc = 0;

    if (s->pid > 0 && (rc = srv_signal_stop(&s->pid, SIGTERM, "redis-server")) != 0)
        srv_note_log(s->log);
    s->pid = -1;
    if (s->dir[0]) {
        if (srv_remove_tree(s->dir) < 0) {
            note("cannot remove %s", s->dir);
            rc = -1;
        }
        s->dir[0] = '\0';
    }
    return rc;
}

/* A new server in a new temporary directory, answering PING. Returns 0, or -1. */
static int redis_start(struct redis_server *s)
{
    memset(s, 0, sizeof *s);
    s->pid = -1;
    if (access(REDIS_SERVER, X_OK) != 0 || access(REDIS_CLI, X_OK) != 0) {
        note("Redis not found: no %s or %s (Debian: apt-get install redis-server; "
             "`make test` does)", REDIS_SERVER, REDIS_CLI);
        return -1;
    }
    if (srv_user_init(&s->user) < 0 ||
        srv_make_dir(s->dir, sizeof s->dir, "redis", &s->user) < 0)
        return -1;
    snprintf(s->log, sizeof s->log, "%s/redis.log", s->dir);
    if ((s->port = srv_free_port()) < 0 || redis_launch(s, 1) < 0) {
        redis_stop(s);
        return -1;
    }
    return 0;
}

/* SIGKILL to the server, reaped; the directory stays. */
static void redis_kill(struct redis_server *s)
{
    srv_kill(&s->pid);
}

/*
 * Starts the server again on the same port (after redis_kill(), or while
 * running: SIGTERM first), empty: nothing is persisted. Returns 0, or -1.
 */
static int redis_restart(struct redis_server *s)
{
    if (!s->dir[0]) {
        note("redis_restart: no server (not started, or stopped)");
        return -1;
    }
    if (s->pid > 0)
        srv_signal_stop(&s->pid, SIGTERM, "redis-server");
    return redis_launch(s, 0);
}

#pragma GCC diagnostic pop

#endif
