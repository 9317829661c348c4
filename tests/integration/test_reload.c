/*
 * test_reload.c TYCHO_BINARY FIXTURE_DIR: hot reload over real sockets. The
 * scripts live in a temporary directory that the test rewrites (as editors
 * do: a new file renamed over the old one) while clients keep sending
 * requests: --watch and SIGHUP, a script that fails to load, a request in
 * flight across a reload, timers and app.on_worker_start per generation,
 * 100 reloads under load (RSS reported, and bounded loosely), --check.
 * Times are reported, never asserted (except generous deadlines for a
 * reload to happen at all). Ends with `N passed, M failed`.
 */
#include "harness.h"
#include "support.h"
#include "client.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>

static char dir[64];

/*
 * The app at version v: /v answers v; /slow sleeps 1.5 s, then starts a
 * timer; per version the shared dictionary counts timer ticks, the turns of
 * a timer loop that never ends, on_worker_start runs and the timers /slow
 * started that ran.
 */
static int write_app(const char *v, int broken)
{
    char tmp[128], path[128];
    FILE *f;

    snprintf(tmp, sizeof tmp, "%s/.app.lua.new", dir);
    snprintf(path, sizeof path, "%s/app.lua", dir);
    if (!(f = fopen(tmp, "w")))
        return -1;
    fprintf(f,
            "local app = require \"tycho\"\n"
            "local d = tycho.shared.dict(\"reload\")\n"
            "app.get(\"/v\", function() return \"%s\" end)\n"
            "app.get(\"/slow\", function()\n"
            "  tycho.sleep(1.5)\n"
            "  tycho.timer.after(0, function() d:incr(\"late-%s\", 1, 0) end)\n"
            "  return \"%s-slow\"\n"
            "end)\n"
            "app.get(\"/count\", function(req) return tostring(d:get(req.query.k) or 0) end)\n"
            "app.get(\"/m\", function() local ok, m = pcall(require, \"lib.m\") return ok and m.v or \"none\" end)\n"
            "app.on_worker_start(function()\n"
            "  d:incr(\"started-%s\", 1, 0)\n"
            "  tycho.timer.every(0.02, function() d:incr(\"ticks-%s\", 1, 0) end)\n"
            "  tycho.timer.after(0, function()\n"
            "    while true do d:incr(\"loop-%s\", 1, 0) tycho.sleep(0.02) end\n"
            "  end)\n"
            "end)\n"
            "%s\n",
            v, v, v, v, v, v, broken ? "this is not Lua" : "");
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, path);   /* as editors save: the watcher sees a rename */
}

static long count_of(int port, const char *key)
{
    char req[160];
    struct response r;
    long v = -1;

    snprintf(req, sizeof req, "GET /count?k=%s HTTP/1.1\r\nHost: t\r\n\r\n", key);
    if (fetch(port, req, &r) == 200)
        v = strtol(r.body, NULL, 10);
    response_free(&r);
    return v;
}

/* What /v answers now (copied into out), or "" when there is no 200. */
static void version_now(int port, char *out, size_t cap)
{
    struct response r;

    out[0] = '\0';
    if (fetch(port, "GET /v HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 200)
        snprintf(out, cap, "%s", r.body);
    response_free(&r);
}

/* Waits (bounded) until /v answers want; returns the ms it took, or -1. */
static long long wait_version(int port, const char *want, int timeout_ms)
{
    long long t0 = now_ms();
    char got[64];

    for (;;) {
        version_now(port, got, sizeof got);
        if (strcmp(got, want) == 0)
            return now_ms() - t0;
        if (now_ms() - t0 > timeout_ms)
            return -1;
        sleep_ms(10);
    }
}

static int log_count(const struct server *s, const char *needle)
{
    char *err = slurp(s->err_path, NULL), *p;
    int n = 0;

    for (p = err; p && (p = strstr(p, needle)); p += strlen(needle))
        n++;
    free(err);
    return n;
}

/* ---- a load of keep-alive clients in a thread ----------------------------- */

struct load {
    int port, nconns;
    atomic_int stop;
    atomic_long good, bad;
    atomic_int seen_v2;         /* a response with the version the test waits for */
    char want[32];
    long long first_want_ms;    /* when want was first seen (now_ms) */
    pthread_t th;
};

static void *load_main(void *arg)
{
    struct load *l = arg;
    struct client c[16];
    struct response r;
    int n = l->nconns;

    for (int i = 0; i < n; i++)
        if (client_connect(&c[i], l->port) < 0)
            atomic_fetch_add(&l->bad, 1);
    while (!atomic_load(&l->stop)) {
        for (int i = 0; i < n; i++) {
            if (c[i].fd < 0)
                continue;
            if (exchange(&c[i], "GET /v HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 0 && r.status == 200) {
                const char *conn = header_get(&r, "Connection");
                atomic_fetch_add(&l->good, 1);
                if (l->want[0] && strcmp(r.body, l->want) == 0 && !atomic_load(&l->seen_v2)) {
                    l->first_want_ms = now_ms();
                    atomic_store(&l->seen_v2, 1);
                }
                /* The connection's last response (--max-requests-per-conn): go on on a new one. */
                if (conn && strcasecmp(conn, "close") == 0) {
                    client_close(&c[i]);
                    client_connect(&c[i], l->port);
                }
            } else {
                atomic_fetch_add(&l->bad, 1);   /* a non-200, a reset or a timeout */
                client_close(&c[i]);
                client_connect(&c[i], l->port);
            }
            response_free(&r);
        }
    }
    for (int i = 0; i < n; i++)
        client_close(&c[i]);
    return NULL;
}

static int load_start(struct load *l, int port, int nconns, const char *want)
{
    memset(l, 0, sizeof *l);
    l->port = port;
    l->nconns = nconns;
    snprintf(l->want, sizeof l->want, "%s", want ? want : "");
    return pthread_create(&l->th, NULL, load_main, l);
}

static void load_stop(struct load *l)
{
    atomic_store(&l->stop, 1);
    pthread_join(l->th, NULL);
}

/* ---- tests ------------------------------------------------------------------ */

/* A handler changes while 8 keep-alive clients keep asking: all 2xx, the new answer comes. */
static void test_change_under_load(int port)
{
    struct load l;
    long long written;

    if (load_start(&l, port, 8, "v2") != 0) {
        ok(0, "load thread");
        return;
    }
    sleep_ms(200);
    written = now_ms();
    ok(write_app("v2", 0) == 0, "v2 written");
    for (int i = 0; i < 500 && !atomic_load(&l.seen_v2); i++)
        sleep_ms(10);
    sleep_ms(200);
    load_stop(&l);
    ok(atomic_load(&l.seen_v2), "under load: the new response appears");
    if (!n_wrap)                        /* the bound; 100 ms of it is the settle time */
        ok(atomic_load(&l.seen_v2) && l.first_want_ms - written <= 1000,
           "under load: the new response appears within 1 s of the write");
    is_int(atomic_load(&l.bad), 0, "under load: every request got a 200, no connection reset");
    ok(atomic_load(&l.good) > 100, "under load: the clients were busy");
    if (atomic_load(&l.seen_v2))
        printf("# the new response appeared %lld ms after the write (%ld requests answered)\n",
               l.first_want_ms - written, atomic_load(&l.good));
}

/* A script that does not load changes nothing; the log names the file and the line. */
static void test_broken_script(const struct server *s)
{
    char got[64];

    ok(write_app("v3", 1) == 0, "a broken v3 written");
    ok(wait_for_log(s, "reload failed: ", 5000), "the failed reload is logged");
    ok(log_has_line(s, "reload failed: ", "app.lua:18:") &&
           log_has_line(s, "reload failed: ", "still serving generation 2"),
       "the log names file, line and the generation still serving");
    version_now(s->port, got, sizeof got);
    is_str(got, "v2", "the old code keeps serving");
    ok(write_app("v3", 0) == 0, "v3 fixed");
    ok(wait_version(s->port, "v3", 5000) >= 0, "fixing the file brings the new code");
}

/*
 * A request in flight (sleeping 1.5 s) across a reload finishes on the old
 * code; while it does, the old generation's timers and its timer loop have
 * stopped; a timer the old code starts after the reload never runs; a
 * client that leaves while its request sleeps on the old generation is
 * fine; on_worker_start ran on the new one; the old one closes at the end.
 */
static void test_in_flight(const struct server *s)
{
    struct client c, gone;
    struct response r;
    long ticks, loops;
    int switched = log_count(s, "serving generation 4 ");

    if (client_connect(&c, s->port) < 0 || client_connect(&gone, s->port) < 0) {
        ok(0, "in flight: connect");
        return;
    }
    client_sends(&c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    client_sends(&gone, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(200);
    ok(write_app("v4", 0) == 0, "v4 written while requests sleep");
    for (int i = 0; i < 500 && log_count(s, "serving generation 4 ") < switched + 2; i++)
        sleep_ms(10);
    is_int(log_count(s, "serving generation 4 "), switched + 2, "both workers switched");
    client_close(&gone);              /* leaves while its request sleeps on generation 3 */
    ticks = count_of(s->port, "ticks-v3");
    loops = count_of(s->port, "loop-v3");
    sleep_ms(300);
    ok(ticks > 0 && loops > 0, "the old generation's timers had run");
    is_int(count_of(s->port, "ticks-v3"), ticks, "the old generation's timers stopped");
    is_int(count_of(s->port, "loop-v3"), loops, "the old generation's timer loop was stopped");

    read_response(&c, &r, 0);
    if (expect_status(&r, 200, "in flight"))
        expect_body(&r, "v3-slow", "the request in flight finished on the old code");
    response_free(&r);
    for (int i = 0; i < 300 && log_count(s, "generation 3 closed") < 2; i++)
        sleep_ms(10);
    is_int(log_count(s, "generation 3 closed"), 2, "the old generation closed on both workers");
    exchange(&c, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n", &r);
    if (expect_status(&r, 200, "after the reload"))
        expect_body(&r, "v4-slow", "the next request on the same connection runs the new code");
    response_free(&r);
    client_close(&c);
    sleep_ms(100);
    is_int(count_of(s->port, "late-v3"), 0, "a timer the old code started after the reload never ran");
    is_int(count_of(s->port, "late-v4"), 1, "the new code's timer runs");
    ok(count_of(s->port, "ticks-v4") > 0 && count_of(s->port, "loop-v4") > 0,
       "the new generation's timers run");
    is_int(count_of(s->port, "started-v4"), 2, "app.on_worker_start ran on the new one, per worker");
}

/* A module in a sub-directory made after the start: watched, and loaded anew at each reload. */
static void test_module(const struct server *s)
{
    char sub[96], tmp[128], path[128];
    FILE *f;

    check_get(s->port, "/m", 200, "none");
    snprintf(sub, sizeof sub, "%s/lib", dir);
    ok(mkdir(sub, 0755) == 0, "lib/ made");
    sleep_ms(300);                      /* the new directory is watched once its event is read */
    for (int i = 1; i <= 2; i++) {
        char want[16];
        snprintf(want, sizeof want, "m%d", i);
        snprintf(tmp, sizeof tmp, "%s/.m.lua.new", sub);
        snprintf(path, sizeof path, "%s/m.lua", sub);
        if ((f = fopen(tmp, "w"))) {
            fprintf(f, "return { v = \"%s\" }\n", want);
            fclose(f);
        }
        ok(rename(tmp, path) == 0, "lib/m.lua written");
        {
            long long t0 = now_ms();
            char got[32] = "";
            struct response r;
            while (now_ms() - t0 < 5000) {
                if (fetch(s->port, "GET /m HTTP/1.1\r\nHost: t\r\n\r\n", &r) == 200)
                    snprintf(got, sizeof got, "%s", r.body);
                response_free(&r);
                if (strcmp(got, want) == 0)
                    break;
                sleep_ms(20);
            }
            is_str(got, want, "a changed module in a new sub-directory is reloaded");
        }
    }
    unlink(path);
    rmdir(sub);
}

/* --watch does not watch DIR/tests: saving a test file (tycho test) reloads nothing. */
static void test_tests_dir_ignored(const struct server *s)
{
    char tests[160], path[200];
    int before;
    FILE *f;

    sleep_ms(600);                    /* the reload the previous test's clean-up causes */
    before = log_count(s, "reloaded ");
    snprintf(tests, sizeof tests, "%s/tests", dir);
    snprintf(path, sizeof path, "%s/app_test.lua", tests);
    ok(mkdir(tests, 0755) == 0, "DIR/tests made while watching");
    sleep_ms(400);                    /* the watcher's 100 ms settling, and more */
    if ((f = fopen(path, "w"))) {
        fputs("test(\"v\", function() end)\n", f);
        fclose(f);
    }
    sleep_ms(400);
    is_int(log_count(s, "reloaded "), before, "--watch: a file saved in DIR/tests reloads nothing");
    unlink(path);
    rmdir(tests);
    sleep_ms(400);
    is_int(log_count(s, "reloaded "), before, "--watch: DIR/tests removed: no reload either");
}

/* DIR replaced by another directory (a deploy: mv new DIR): watched anew, reloaded. */
static void test_dir_replaced(const struct server *s)
{
    char old[96], path[128];

    snprintf(old, sizeof old, "%s.old", dir);
    ok(rename(dir, old) == 0 && mkdir(dir, 0755) == 0, "DIR moved away, an empty one made");
    ok(write_app("v5", 0) == 0, "v5 written into the new DIR");
    ok(wait_version(s->port, "v5", 5000) >= 0, "the replaced DIR is loaded");
    ok(write_app("v6", 0) == 0, "v6 written");
    ok(wait_version(s->port, "v6", 5000) >= 0, "and watched: a change in it reloads");
    snprintf(path, sizeof path, "%s/app.lua", old);
    unlink(path);
    rmdir(old);
}

/* 100 reloads (SIGHUP) while clients send requests: no failure; memory comes back. */
static void test_many_reloads(const struct server *s, int n, int workers)
{
    struct load l;
    int base = log_count(s, "reloaded ");
    long rss_first = -1, rss_last;

    if (load_start(&l, s->port, 4, NULL) != 0) {
        ok(0, "load thread");
        return;
    }
    for (int i = 1; i <= n; i++) {
        kill(s->pid, SIGHUP);
        for (int k = 0; k < 500 && log_count(s, "reloaded ") < base + i; k++)
            sleep_ms(5);
        if (i == 1) {
            sleep_ms(300);
            rss_first = rss_kib(s->pid);
        }
    }
    sleep_ms(300);                      /* retired generations finish and are freed */
    load_stop(&l);
    rss_last = rss_kib(s->pid);
    is_int(log_count(s, "reloaded ") - base, n, "every SIGHUP reloaded");
    /*
     * Every reload of this server retired one generation per worker. Closing
     * one (lua_close) is slow under valgrind, about a second each, one after
     * another on a worker: the wait is longer there (it ends as soon as all
     * have closed).
     */
    const char *closed = " closed (its last request ended)";
    int tries = n_wrap ? 4500 : 300;
    for (int i = 0; i < tries && log_count(s, closed) < workers * log_count(s, "reloaded "); i++)
        sleep_ms(10);
    is_int(log_count(s, " closed (its last request ended)"), workers * log_count(s, "reloaded "),
           "every retired generation was closed, on every worker");
    is_int(atomic_load(&l.bad), 0, "reloads under load: no failed request");
    printf("# %d reloads under load: %ld requests answered; RSS %ld KiB after the first, "
           "%ld KiB after the last\n", n, atomic_load(&l.good), rss_first, rss_last);
#ifndef __SANITIZE_ADDRESS__             /* ASan keeps freed memory in quarantine */
    if (!n_wrap)                        /* under valgrind RSS is valgrind's; it checks leaks */
        ok(rss_last <= rss_first + rss_first / 10 + 512,
           "RSS after the reloads is within 10% (+512 KiB) of what it was after the first");
#endif
}

/* A reload's log line names the routes it added and removed. */
static void test_route_changes_logged(struct server *s)
{
    char path[160];
    FILE *f;

    snprintf(path, sizeof path, "%s/extra.lua", dir);
    if (!(f = fopen(path, "w"))) {
        ok(0, "extra.lua written");
        return;
    }
    fprintf(f, "local app = require \"tycho\"\n"
               "app.get(\"/extra\", function() return \"x\" end)\n"
               "app.post(\"/extra/:id\", function() return \"y\" end)\n");
    fclose(f);
    kill(s->pid, SIGHUP);
    ok(wait_for_log(s, "(generation 3); routes added: GET /extra, POST /extra/:id", 5000),
       "a reload that adds routes names them");
    unlink(path);
    kill(s->pid, SIGHUP);
    ok(wait_for_log(s, "(generation 4); routes removed: GET /extra, POST /extra/:id", 5000),
       "a reload that removes routes names them");
}

/* SIGHUP without --watch: a change is not seen until the signal. */
static void test_sighup_only(void)
{
    struct server s;
    const char *args[] = {"--port", "0", "--workers", "2", dir, NULL};
    char got[64];

    write_app("h1", 0);
    if (server_start(&s, args) != 0) {
        ok(0, "server without --watch starts");
        return;
    }
    write_app("h2", 0);
    sleep_ms(400);
    version_now(s.port, got, sizeof got);
    is_str(got, "h1", "without --watch a change is not loaded by itself");
    kill(s.pid, SIGHUP);
    ok(wait_version(s.port, "h2", 5000) >= 0, "SIGHUP reloads");
    ok(log_has_line(&s, "reloaded 1 scripts in ", "(generation 2)"), "the reload is logged");
    ok(log_has_line(&s, "(generation 2)", "; routes unchanged (4)"),
       "the reload line says the routes did not change");
    test_route_changes_logged(&s);
    test_many_reloads(&s, n_wrap ? 10 : 100, 2);
    is_int(server_stop(&s), 0, "exit status 0 after SIGTERM");
    server_cleanup(&s);
}

/* --check prints the routes, or the error, and exits 0 or 1. */
static void test_check_flag(void)
{
    char cmd[256], out[4096];
    int status;

    for (int broken = 0; broken <= 1; broken++) {
        write_app("c1", broken);
        snprintf(cmd, sizeof cmd, "%s --check %s 2>&1", tycho_binary, dir);
        status = run_command(cmd, out, sizeof out);
        if (!broken) {
            ok(status == 0, "--check: exit 0 for good scripts");
            ok(strstr(out, "GET     /slow") != NULL, "--check prints the routes");
        } else {
            ok(status == 1, "--check: exit 1 for a load error");
            ok(strstr(out, "app.lua:18:") != NULL, "--check prints the error with file:line");
        }
    }
}

int main(int argc, char **argv)
{
    struct server s;
    char path[128];

    if (suite_setup(argc, argv))
        return 2;
    snprintf(dir, sizeof dir, "/tmp/tycho-test-reload-XXXXXX");
    if (!mkdtemp(dir)) {
        ok(0, "mkdtemp");
        return test_summary();
    }
    write_app("v1", 0);
    {
        const char *args[] = {"--watch", "--port", "0", "--workers", "2", dir, NULL};
        ok(server_start(&s, args) == 0, "server with --watch starts");
    }
    if (s.pid > 0) {
        check_get(s.port, "/v", 200, "v1");
        test_change_under_load(s.port);
        test_broken_script(&s);
        test_in_flight(&s);
        test_module(&s);
        test_tests_dir_ignored(&s);
        test_dir_replaced(&s);
        is_int(server_stop(&s), 0, "--watch server: exit status 0 after SIGTERM");
    }
    server_cleanup(&s);
    test_sighup_only();
    test_check_flag();
    snprintf(path, sizeof path, "%s/app.lua", dir);
    unlink(path);
    rmdir(dir);
    return test_summary();
}
