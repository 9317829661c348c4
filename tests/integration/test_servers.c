/*
 * test_servers.c: the helper that starts real database servers for the
 * integration tests (servers.h), tested on its own: PostgreSQL and Redis
 * start, answer, run as nobody when we are root, survive a kill mid-query
 * and a restart on the same port, stop without leaving a process or a
 * directory behind, and die with the test when it is killed.
 *
 *     test_servers TYCHO_BINARY FIXTURE_DIR    (the arguments of every
 *                                               integration test; unused)
 *
 * Single-threaded. Ends with the harness line `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"
#include "servers.h"

/* 1 while pid is a live process (absent or a zombie: 0). */
static int alive(pid_t pid)
{
    char path[64], buf[512], *paren;
    FILE *f;
    size_t n;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "PID (COMM) STATE ...": COMM may hold spaces and parentheses, so the last ')' */
    paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X';
}

/* Waits (bounded) until every pid in the space-separated list is gone. */
static int all_gone(const char *pids, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;

    for (;;) {
        const char *p = pids;
        char *end;
        int any = 0;

        for (long v = strtol(p, &end, 10); end != p; p = end, v = strtol(p, &end, 10))
            if (v > 0 && alive((pid_t)v))
                any = 1;
        if (!any)
            return 1;
        if (now_ms() > deadline)
            return 0;
        sleep_ms(50);
    }
}

/* The uid a process runs as (the owner of /proc/PID), or -1. */
static long uid_of(pid_t pid)
{
    char path[64];
    struct stat st;

    snprintf(path, sizeof path, "/proc/%d", (int)pid);
    return stat(path, &st) == 0 ? (long)st.st_uid : -1;
}

static void check_runs_as_nobody(pid_t pid, const char *ctx)
{
    struct passwd *pw = getpwnam("nobody");

    if (geteuid() != 0 || !pw)
        return;
    is_int(uid_of(pid), pw->pw_uid, what(ctx, "runs as nobody (we are root)"));
}

/* The PIDs of the postmaster's processes (backends, checkpointer, ...) except this one's. */
static void pg_backend_pids(const struct pg_server *pg, char *out, size_t cap)
{
    pg_sql(pg, "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity "
               "WHERE pid <> pg_backend_pid()", out, cap);
}

/* Starts psql running a long query in the background; its pid, or -1. */
static pid_t start_long_query(const struct pg_server *pg)
{
    char prog[256], port[16];
    const char *argv[] = {prog, "-X", "-q", "-h", "127.0.0.1", "-p", port, "-U", "postgres",
                          "-d", "app", "-c", "SELECT pg_sleep(60)", NULL};
    pid_t pid;

    snprintf(prog, sizeof prog, "%s/psql", pg->bin);
    snprintf(port, sizeof port, "%d", pg->port);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        dup2(devnull, 2);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execv(prog, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

static void test_postgres(void)
{
    struct pg_server pg;
    char out[4096], pids[1024];
    pid_t old_pid, query_pid;
    int port, status = 0, rc;
    long long t0;

    t0 = now_ms();
    if (!ok(pg_start(&pg) == 0, "pg: starts")) {
        pg_stop(&pg);
        return;
    }
    note("pg: started in %lld ms, port %d, %s", now_ms() - t0, pg.port, pg.dir);
    ok(pg.pid > 0 && alive(pg.pid), "pg: the postmaster runs");
    check_runs_as_nobody(pg.pid, "pg");

    is_int(pg_sql(&pg, "SELECT 1", out, sizeof out), 0, "pg: SELECT 1 exit status");
    is_str(out, "1", "pg: SELECT 1");
    pg_sql(&pg, "SELECT current_user, current_database()", out, sizeof out);
    is_str(out, "postgres|app", "pg: pg_sql is postgres on app");
    pg_sql(&pg, "SELECT 'it''s \"quoted\" $1 `x` \\n'", out, sizeof out);
    is_str(out, "it's \"quoted\" $1 `x` \\n", "pg: SQL passed as is, no shell");
    pg_sql(&pg, "SELECT g FROM generate_series(1, 3) g", out, sizeof out);
    is_str(out, "1\n2\n3", "pg: one row a line");
    pg_sql(&pg, "SHOW max_connections", out, sizeof out);
    is_str(out, "300", "pg: max_connections");
    rc = pg_sql(&pg, "SELEC 1", out, sizeof out);
    ok(rc != 0, what("pg", "an SQL error: exit status %d, not 0", rc));
    ok(strstr(out, "syntax error") != NULL, what("pg", "an SQL error's message (%s)", out));
    is_int(pg_sql(&pg, "SELECT 2", NULL, 0), 0, "pg: out may be NULL");

    /* The role app: a password over TCP, owner of the database app. */
    is_int(pg_sql_as(&pg, "app", "secret", "SELECT current_user", out, sizeof out), 0,
           "pg: app logs in with its password");
    is_str(out, "app", "pg: current_user as app");
    rc = pg_sql_as(&pg, "app", "wrong", "SELECT current_user", out, sizeof out);
    ok(rc != 0 && strstr(out, "password authentication failed") != NULL,
       what("pg", "a wrong password is refused (exit %d: %s)", rc, out));
    pg_sql(&pg, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'", out,
           sizeof out);
    is_str(out, "app", "pg: app owns the database app");
    is_int(pg_sql_as(&pg, "app", "secret", "CREATE TABLE t (n int); INSERT INTO t VALUES (41)",
                     NULL, 0), 0, "pg: app creates a table");

    /* Killed mid-query: the query fails, the committed row survives the restart. */
    query_pid = start_long_query(&pg);
    t0 = now_ms();
    do {
        sleep_ms(50);
        pg_sql(&pg, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'",
               out, sizeof out);
    } while (strcmp(out, "1") != 0 && now_ms() - t0 < 10000);
    is_str(out, "1", "pg: the long query runs");
    pg_backend_pids(&pg, pids, sizeof pids);
    ok(pids[0] != '\0', what("pg", "backend pids: %s", pids));
    old_pid = pg.pid;
    port = pg.port;
    pg_kill(&pg);
    is_int(pg.pid, -1, "pg_kill: pid cleared");
    ok(!alive(old_pid), "pg_kill: the postmaster is gone");
    ok(srv_wait_exit(query_pid, 10000, &status) && WIFEXITED(status) &&
       WEXITSTATUS(status) != 0, what("pg", "the query fails (status 0x%x)", status));
    rc = pg_sql(&pg, "SELECT 1", out, sizeof out);
    ok(rc != 0, what("pg", "no answer after the kill (exit %d: %s)", rc, out));
    t0 = now_ms();
    is_int(pg_restart(&pg), 0, "pg_restart after a kill");
    note("pg: restarted in %lld ms", now_ms() - t0);
    is_int(pg.port, port, "pg_restart: the same port");
    ok(pg.pid > 0 && pg.pid != old_pid, "pg_restart: a new postmaster");
    ok(all_gone(pids, 10000), "pg: the killed postmaster's processes are gone");
    pg_sql(&pg, "SELECT n + 1 FROM t", out, sizeof out);
    is_str(out, "42", "pg: the committed row survives the kill");

    /* Restart while running: a fast shutdown first. */
    old_pid = pg.pid;
    is_int(pg_restart(&pg), 0, "pg_restart while running");
    ok(!alive(old_pid) && pg.pid != old_pid, "pg_restart: the old postmaster stopped");
    pg_sql(&pg, "SELECT n FROM t", out, sizeof out);
    is_str(out, "41", "pg: data after a clean restart");

    pg_backend_pids(&pg, pids, sizeof pids);
    old_pid = pg.pid;
    snprintf(out, sizeof out, "%s", pg.dir);
    is_int(pg_stop(&pg), 0, "pg_stop: a clean shutdown");
    ok(!alive(old_pid), "pg_stop: the postmaster is gone");
    ok(all_gone(pids, 5000), what("pg", "pg_stop: its processes are gone (%s)", pids));
    ok(access(out, F_OK) != 0, "pg_stop: the directory is removed");
    is_int(pg_stop(&pg), 0, "pg_stop again: nothing to do");
    ok(pg_sql(&pg, "SELECT 1", out, sizeof out) != 0, "pg: no answer after pg_stop");
    is_int(pg_restart(&pg), -1, "pg_restart after pg_stop: refused");
}

static void test_redis(void)
{
    struct redis_server rd;
    const char *const set[] = {"SET", "k", "it's \"a\" value $x", NULL};
    const char *const get[] = {"GET", "k", NULL};
    const char *const incr[] = {"INCR", "k", NULL};
    const char *const ping[] = {"PING", NULL};
    char out[1024], dir[64];
    pid_t old_pid;
    int port, rc;

    if (!ok(redis_start(&rd) == 0, "redis: starts")) {
        redis_stop(&rd);
        return;
    }
    ok(rd.pid > 0 && alive(rd.pid), "redis: the server runs");
    check_runs_as_nobody(rd.pid, "redis");
    is_int(redis_cmd(&rd, ping, out, sizeof out), 0, "redis: PING exit status");
    is_str(out, "PONG", "redis: PING");
    redis_cmd(&rd, set, out, sizeof out);
    is_str(out, "OK", "redis: SET");
    redis_cmd(&rd, get, out, sizeof out);
    is_str(out, "it's \"a\" value $x", "redis: GET, words passed as is");
    rc = redis_cmd(&rd, incr, out, sizeof out);
    ok(rc == 1 && strstr(out, "ERR") != NULL,
       what("redis", "an error reply: exit 1 and the message (exit %d: %s)", rc, out));

    old_pid = rd.pid;
    port = rd.port;
    redis_kill(&rd);
    is_int(rd.pid, -1, "redis_kill: pid cleared");
    ok(!alive(old_pid), "redis_kill: the server is gone");
    rc = redis_cmd(&rd, ping, out, sizeof out);
    ok(rc != 0, what("redis", "no answer after the kill (exit %d: %s)", rc, out));
    is_int(redis_restart(&rd), 0, "redis_restart after a kill");
    is_int(rd.port, port, "redis_restart: the same port");
    is_int(redis_cmd(&rd, get, out, sizeof out), 0, "redis: GET after the restart");
    is_str(out, "", "redis: empty after the restart (no persistence)");
    redis_cmd(&rd, set, NULL, 0);
    redis_cmd(&rd, get, out, sizeof out);
    is_str(out, "it's \"a\" value $x", "redis: SET and GET after the restart");

    old_pid = rd.pid;
    snprintf(dir, sizeof dir, "%s", rd.dir);
    is_int(redis_stop(&rd), 0, "redis_stop: a clean shutdown");
    ok(!alive(old_pid), "redis_stop: the server is gone");
    ok(access(dir, F_OK) != 0, "redis_stop: the directory is removed");
    is_int(redis_stop(&rd), 0, "redis_stop again: nothing to do");
}

/*
 * A test process that dies (SIGKILL: no handler, no cleanup) takes its
 * servers with it: the parent-death signal, set after the switch to nobody.
 * We are a subreaper meanwhile, so that the orphaned servers become our
 * children and we reap them (PID 1 of a container may leave them zombies).
 */
static void test_die_with_test(void)
{
    int fds[2];
    pid_t child;
    char buf[512] = "";
    long pg_pid = 0, redis_pid = 0;
    char pg_dir[64] = "", redis_dir[64] = "";
    long long deadline;
    ssize_t n;

    if (pipe(fds) < 0) {
        ok(0, "pipe");
        return;
    }
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    fflush(stdout);
    child = fork();
    if (child == 0) {
        struct pg_server pg;
        struct redis_server rd;

        close(fds[0]);
        if (pg_start(&pg) == 0 && redis_start(&rd) == 0)
            dprintf(fds[1], "%d %d %s %s\n", (int)pg.pid, (int)rd.pid, pg.dir, rd.dir);
        close(fds[1]);
        pause();    /* until killed */
        _exit(0);
    }
    close(fds[1]);
    if (child < 0) {
        close(fds[0]);
        prctl(PR_SET_CHILD_SUBREAPER, 0);
        ok(0, "fork");
        return;
    }
    n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    buf[n > 0 ? n : 0] = '\0';
    ok(sscanf(buf, "%ld %ld %63s %63s", &pg_pid, &redis_pid, pg_dir, redis_dir) == 4,
       what("death", "the child started both servers (%s)", buf));
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    if (pg_pid > 0) {
        char list[64];
        snprintf(list, sizeof list, "%ld %ld", pg_pid, redis_pid);
        ok(all_gone(list, 10000), "death: the servers die with the test process");
    }
    /* No other child of ours is left at this point: reap what was orphaned to us. */
    deadline = now_ms() + 5000;
    while (waitpid(-1, NULL, WNOHANG) >= 0 && now_ms() < deadline)   /* -1: none left */
        sleep_ms(20);
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    /* What a killed test leaves behind: the directories; ours to remove here. */
    if (pg_dir[0])
        srv_remove_tree(pg_dir);
    if (redis_dir[0])
        srv_remove_tree(redis_dir);
}

int main(int argc, char **argv)
{
    if (suite_setup(argc, argv))
        return 2;
    test_postgres();
    test_redis();
    test_die_with_test();
    return test_summary();
}
