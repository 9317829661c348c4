/*
 * test_cli.c: tests of Tycho's command line, without sockets.
 *
 *     test_cli TYCHO_BINARY FIXTURE_DIR
 *
 * Runs the binary with various arguments and checks exit status, stdout and
 * stderr: --version, --help, bad flags and values (exit 2), a missing or bad
 * script directory (exit 2), script load errors (exit 1, "tycho: FILE:LINE:"
 * on stderr) written into a mkdtemp directory at run time, and --request
 * mode against the fixture directory.
 *
 * TYCHO_WRAP, if set, is split on spaces and prefixed to every command,
 * e.g. TYCHO_WRAP="valgrind --leak-check=full --error-exitcode=99 -q".
 *
 * Single-threaded; every run is bounded (killed after a timeout). Only the
 * PIDs this program started are ever signalled. Ends with the harness line
 * `N passed, M failed`.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "support.h"

static int run_timeout_ms = 20000;

static const char *tycho_binary;
static const char *fixture_dir;
static char tmp_dir[64];            /* mkdtemp'd; removed at the end */

static volatile pid_t running_pid = -1;     /* for on_fatal_signal() */

/* SIGTERM/SIGINT/SIGHUP to the test (e.g. from timeout(1)): kill our child. */
static void on_fatal_signal(int sig)
{
    (void)sig;
    if (running_pid > 0)
        kill(running_pid, SIGKILL);
    _exit(2);
}


/* ======================================================================
 * Utilities
 * ====================================================================== */

/* Writes a file under tmp_dir (creating subdir first). Returns 0 or -1. */
static int write_file(const char *subdir, const char *name, const char *text)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", tmp_dir, subdir);
    mkdir(path, 0700);
    if (!name)
        return 0;
    snprintf(path, sizeof path, "%s/%s/%s", tmp_dir, subdir, name);
    f = fopen(path, "w");
    if (!f) {
        note("cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    fputs(text, f);
    fclose(f);
    return 0;
}

/* rm -r of the fixture tree we made (depth levels of subdirectories at most). */
static void remove_tree(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (d) {
        while ((e = readdir(d))) {
            char path[1024];
            struct stat st;
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
                if (depth > 0)
                    remove_tree(path, depth - 1);
            } else {
                unlink(path);
            }
        }
        closedir(d);
    }
    rmdir(dir);
}

/* ======================================================================
 * Running the binary
 * ====================================================================== */

struct run {
    int status;         /* exit status; -1 if killed by a signal or timed out */
    char *out;          /* owned; stdout, NUL-terminated */
    char *err;          /* owned; stderr, NUL-terminated */
    size_t out_len, err_len;
};

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

static int append(char **buf, size_t *len, const char *data, size_t n)
{
    char *grown = realloc(*buf, *len + n + 1);

    if (!grown)
        return -1;
    memcpy(grown + *len, data, n);
    *len += n;
    grown[*len] = '\0';
    *buf = grown;
    return 0;
}

/*
 * Runs TYCHO_WRAP... BINARY args... (args NULL-terminated) with stdin from
 * /dev/null, collecting stdout and stderr. Bounded by run_timeout_ms; on
 * timeout the child (the PID we started) is killed. Returns r->status.
 */
static int run_tycho(struct run *r, const char *const *args)
{
    const char *argv[64];
    int argc = 0, i, out_pipe[2], err_pipe[2], status = 0, open_fds = 2;
    long long deadline;
    pid_t pid, w;
    struct pollfd pfd[2];
    char buf[8192];

    memset(r, 0, sizeof *r);
    r->status = -1;
    append(&r->out, &r->out_len, "", 0);
    append(&r->err, &r->err_len, "", 0);
    for (i = 0; i < n_wrap; i++)
        argv[argc++] = wrap_words[i];
    argv[argc++] = tycho_binary;
    for (i = 0; args[i] && argc < 63; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;

    if (pipe2(out_pipe, O_CLOEXEC) < 0)
        return -1;
    if (pipe2(err_pipe, O_CLOEXEC) < 0) {
        close(out_pipe[0]);
        close(out_pipe[1]);
        return -1;
    }
    fflush(stdout);
    pid = fork();
    if (pid < 0) {
        close(out_pipe[0]);
        close(out_pipe[1]);
        close(err_pipe[0]);
        close(err_pipe[1]);
        return -1;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(out_pipe[1], 1);
        dup2(err_pipe[1], 2);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);   /* never outlive the test */
        execvp(argv[0], (char *const *)argv);
        dprintf(2, "test_cli: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    running_pid = pid;
    close(out_pipe[1]);
    close(err_pipe[1]);
    pfd[0].fd = out_pipe[0];
    pfd[0].events = POLLIN;
    pfd[1].fd = err_pipe[0];
    pfd[1].events = POLLIN;

    deadline = now_ms() + run_timeout_ms;
    while (open_fds > 0) {
        long long left = deadline - now_ms();
        int rc;
        if (left <= 0) {
            note("timed out after %d ms; killing pid %d", run_timeout_ms, (int)pid);
            break;
        }
        rc = poll(pfd, 2, (int)left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            continue;
        for (i = 0; i < 2; i++) {
            ssize_t n;
            if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            n = read(pfd[i].fd, buf, sizeof buf);
            if (n > 0) {
                if (i == 0)
                    append(&r->out, &r->out_len, buf, (size_t)n);
                else
                    append(&r->err, &r->err_len, buf, (size_t)n);
            } else if (n == 0 || errno != EINTR) {
                close(pfd[i].fd);
                pfd[i].fd = -1;
                open_fds--;
            }
        }
    }
    for (i = 0; i < 2; i++)
        if (pfd[i].fd >= 0)
            close(pfd[i].fd);
    /* both pipes closed (or timed out): reap, bounded */
    for (;;) {
        w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            running_pid = -1;
            return r->status;
        }
        {
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    running_pid = -1;
    if (WIFEXITED(status))
        r->status = WEXITSTATUS(status);
    else
        note("killed by signal %d", WTERMSIG(status));
    return r->status;
}

static void dump_run(const struct run *r)
{
    note("exit status %d", r->status);
    note("stdout (%zu bytes): %.1500s", r->out_len, r->out);
    note("stderr (%zu bytes): %.1500s", r->err_len, r->err);
}

/* Number of '\n'-terminated lines in s (1 for "x\n"; an unterminated tail counts). */
static int count_lines(const char *s)
{
    int n = 0;

    for (; *s; s++)
        if (*s == '\n' || s[1] == '\0')
            n++;
    return n;
}

/* ======================================================================
 * Raw HTTP response printed by --request
 * ====================================================================== */

struct raw_response {
    int status;
    char head[8192];        /* status line and headers, "\r\n"-separated */
    const char *body;       /* points into the run's stdout */
    size_t body_len;
};

static int parse_raw(const struct run *run, struct raw_response *r)
{
    const char *end = strstr(run->out, "\r\n\r\n");
    size_t hlen;

    memset(r, 0, sizeof *r);
    if (!end || sscanf(run->out, "HTTP/1.1 %d", &r->status) != 1)
        return -1;
    hlen = (size_t)(end - run->out) + 2;
    if (hlen >= sizeof r->head)
        return -1;
    memcpy(r->head, run->out, hlen);
    r->head[hlen] = '\0';
    r->body = end + 4;
    r->body_len = run->out_len - (size_t)(r->body - run->out);
    return 0;
}

/* Copies the value of header name (case-insensitive) into val. Returns 1 if found. */
static int raw_header(const struct raw_response *r, const char *name, char *val, size_t size)
{
    const char *line = strstr(r->head, "\r\n");
    size_t nlen = strlen(name);

    while (line && line[2]) {
        const char *eol;
        line += 2;
        eol = strstr(line, "\r\n");
        if (!eol)
            break;
        if (strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            size_t n;
            while (*v == ' ' || *v == '\t')
                v++;
            n = (size_t)(eol - v);
            while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
                n--;
            if (n >= size)
                n = size - 1;
            memcpy(val, v, n);
            val[n] = '\0';
            return 1;
        }
        line = eol;
    }
    return 0;
}

static void expect_raw_header(const struct raw_response *r, const char *name, const char *want,
                              const char *ctx)
{
    char val[512];

    if (!raw_header(r, name, val, sizeof val))
        strcpy(val, "(missing)");
    is_str(val, want, what(ctx, "header %s", name));
}

/*
 * Runs --request with the given args (before DIR) against the fixture and
 * checks exit status 0, the HTTP status and (if body) the exact body.
 * Leaves the parsed response in *resp and the run in *run (caller frees run).
 */
static int request(struct run *run, struct raw_response *resp, const char *const *args,
                   int want_status, const char *body, const char *ctx)
{
    const char *argv[32];
    int n = 0, good;

    while (args[n] && n < 30) {
        argv[n] = args[n];
        n++;
    }
    argv[n++] = fixture_dir;
    argv[n] = NULL;
    run_tycho(run, argv);
    is_int(run->status, 0, what(ctx, "exit status"));
    good = parse_raw(run, resp) == 0;
    ok(good, what(ctx, "stdout is an HTTP/1.1 response"));
    if (!good) {
        dump_run(run);
        return 0;
    }
    is_int(resp->status, want_status, what(ctx, "HTTP status"));
    if (body) {
        is_int(resp->body_len, strlen(body), what(ctx, "body length"));
        ok(resp->body_len == strlen(body) && memcmp(resp->body, body, resp->body_len) == 0,
           what(ctx, "body is \"%s\"", body));
    }
    {
        char cl[64];
        int i, head = 0;
        for (i = 0; args[i]; i++)
            head |= (strcmp(args[i], "--request") == 0 && args[i + 1] &&
                     strncmp(args[i + 1], "HEAD ", 5) == 0) ||
                    strncmp(args[i], "--request=HEAD ", 15) == 0;
        ok(raw_header(resp, "Content-Length", cl, sizeof cl), what(ctx, "has Content-Length"));
        if (!head && raw_header(resp, "Content-Length", cl, sizeof cl))
            is_int(strtoll(cl, NULL, 10), (long long)resp->body_len,
                   what(ctx, "Content-Length matches the body"));
    }
    if (resp->status != want_status)
        dump_run(run);
    return 1;
}

/* ======================================================================
 * Tests
 * ====================================================================== */

static void test_version_help(void)
{
    struct run r;
    static const char *const flags[] = {"--host",     "--port",  "--workers", "--max-conns",
                                        "--max-body", "--max-header-bytes", "--request",
                                        "--header",   "--body",  "--help",    "--version"};
    size_t i;

    {
        const char *args[] = {"--version", NULL};
        run_tycho(&r, args);
        is_int(r.status, 0, "--version: exit status 0");
        is_str(r.out, "tycho 0.1.0\n", "--version: stdout");
        is_str(r.err, "", "--version: nothing on stderr");
        run_free(&r);
    }
    {
        const char *args[] = {"--help", NULL};
        run_tycho(&r, args);
        is_int(r.status, 0, "--help: exit status 0");
        ok(strcasestr(r.out, "usage") != NULL, "--help: stdout has a usage line");
        for (i = 0; i < sizeof flags / sizeof flags[0]; i++)
            ok(strstr(r.out, flags[i]) != NULL, what("--help", "mentions %s", flags[i]));
        ok(strstr(r.out, "DIR") != NULL || strcasestr(r.out, "dir"), "--help: mentions DIR");
        is_str(r.err, "", "--help: nothing on stderr");
        if (r.status != 0)
            dump_run(&r);
        run_free(&r);
    }
}

/* A bad flag or value: exit 2, one line "tycho: ..." naming the flag (and value). */
static void expect_usage_error(const char *const *args, const char *flag, const char *value,
                               const char *ctx)
{
    struct run r;

    run_tycho(&r, args);
    is_int(r.status, 2, what(ctx, "exit status 2"));
    ok(strncmp(r.err, "tycho: ", 7) == 0, what(ctx, "stderr starts with \"tycho: \""));
    is_int(count_lines(r.err), 1, what(ctx, "one line on stderr"));
    ok(strstr(r.err, flag) != NULL, what(ctx, "stderr names %s", flag));
    if (value)
        ok(strstr(r.err, value) != NULL, what(ctx, "stderr shows the value \"%s\"", value));
    ok(strstr(r.out, "listening") == NULL, what(ctx, "did not start"));
    if (r.status != 2 || !strstr(r.err, flag))
        dump_run(&r);
    run_free(&r);
}

static void test_bad_flags(void)
{
    const char *d = fixture_dir;
    struct {
        const char *args[6];
        const char *flag, *value;
    } cases[] = {
        {{"--frobnicate", d, NULL}, "--frobnicate", NULL},
        {{"--frobnicate=1", d, NULL}, "--frobnicate", NULL},
        {{"-x", d, NULL}, "-x", NULL},
        {{"--port", "abc", d, NULL}, "--port", "abc"},
        {{"--port=abc", d, NULL}, "--port", "abc"},
        {{"--port", "65536", d, NULL}, "--port", "65536"},
        {{"--port", "-1", d, NULL}, "--port", "-1"},
        {{"--port", "80x", d, NULL}, "--port", "80x"},
        {{"--port", "", d, NULL}, "--port", NULL},
        {{"--port=", d, NULL}, "--port", NULL},
        {{"--workers", "0", d, NULL}, "--workers", "0"},
        {{"--workers", "1025", d, NULL}, "--workers", "1025"},
        {{"--workers", "two", d, NULL}, "--workers", "two"},
        {{"--max-conns", "abc", d, NULL}, "--max-conns", "abc"},
        {{"--max-conns", "-3", d, NULL}, "--max-conns", "-3"},
        {{"--max-body", "big", d, NULL}, "--max-body", "big"},
        {{"--max-body", "-1", d, NULL}, "--max-body", "-1"},
        {{"--max-header-bytes", "lots", d, NULL}, "--max-header-bytes", "lots"},
        {{"--max-header-bytes=-5", d, NULL}, "--max-header-bytes", "-5"},
        {{"--host", "", d, NULL}, "--host", NULL},
        {{"--port", NULL}, "--port", NULL},
        {{d, "--workers", NULL}, "--workers", NULL},
    };
    size_t i;
    char ctx[128];

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t j, n = 0;
        ctx[0] = '\0';
        for (j = 0; cases[i].args[j]; j++)
            if (cases[i].args[j] != d)
                n += (size_t)snprintf(ctx + n, sizeof ctx - n, "%s'%s'", j ? " " : "",
                                      cases[i].args[j]);
        expect_usage_error(cases[i].args, cases[i].flag, cases[i].value, ctx);
    }
}

static void test_bad_dir(void)
{
    struct run r;
    char missing[128], file[128];

    {
        const char *args[] = {NULL};
        run_tycho(&r, args);
        is_int(r.status, 2, "no arguments: exit status 2");
        ok(strstr(r.err, "missing script directory") != NULL,
           "no arguments: \"missing script directory\"");
        is_int(count_lines(r.err), 1, "no arguments: one line on stderr");
        if (r.status != 2)
            dump_run(&r);
        run_free(&r);
    }
    {
        const char *args[] = {"--port", "0", "--workers", "1", NULL};
        run_tycho(&r, args);
        is_int(r.status, 2, "flags but no DIR: exit status 2");
        ok(strstr(r.err, "missing script directory") != NULL,
           "flags but no DIR: \"missing script directory\"");
        is_int(count_lines(r.err), 1, "flags but no DIR: one line on stderr");
        run_free(&r);
    }
    snprintf(missing, sizeof missing, "%s/does-not-exist", tmp_dir);
    {
        const char *args[] = {"--port", "0", missing, NULL};
        run_tycho(&r, args);
        is_int(r.status, 2, "nonexistent DIR: exit status 2");
        ok(strstr(r.err, missing) != NULL, "nonexistent DIR: stderr names it");
        is_int(count_lines(r.err), 1, "nonexistent DIR: one line on stderr");
        if (r.status != 2)
            dump_run(&r);
        run_free(&r);
    }
    snprintf(file, sizeof file, "%s/files/plain-file", tmp_dir);
    write_file("files", "plain-file", "not a directory\n");
    {
        const char *args[] = {"--port", "0", file, NULL};
        run_tycho(&r, args);
        is_int(r.status, 2, "DIR is a file: exit status 2");
        ok(strstr(r.err, file) != NULL, "DIR is a file: stderr names it");
        is_int(count_lines(r.err), 1, "DIR is a file: one line on stderr");
        if (r.status != 2)
            dump_run(&r);
        run_free(&r);
    }
}

/*
 * Loads the broken fixture tmp_dir/sub and expects exit 1 with a stderr line
 * starting "tycho: " that contains "tmp_dir/sub/FILE:LINE:" and msg.
 */
static void expect_load_error(const char *sub, const char *file_line, const char *msg,
                              int request_mode)
{
    struct run r;
    char dir[256], want[512], ctx[128];
    const char *line;
    int found = 0;

    snprintf(dir, sizeof dir, "%s/%s", tmp_dir, sub);
    snprintf(want, sizeof want, "tycho: %s/%s:", dir, file_line);
    snprintf(ctx, sizeof ctx, "load error %s%s", sub, request_mode ? " (--request)" : "");
    if (request_mode) {
        const char *args[] = {"--request", "GET /ok", dir, NULL};
        run_tycho(&r, args);
    } else {
        const char *args[] = {"--port", "0", "--workers", "1", dir, NULL};
        run_tycho(&r, args);
    }
    is_int(r.status, 1, what(ctx, "exit status 1"));
    /* the line that starts with "tycho: DIR/FILE:LINE:" */
    for (line = r.err; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (strncmp(line, want, strlen(want)) == 0) {
            const char *eol = strchr(line, '\n');
            size_t n = eol ? (size_t)(eol - line) : strlen(line);
            char copy[1024];
            snprintf(copy, sizeof copy, "%.*s", (int)n, line);
            found = 1;
            if (msg)
                ok(strstr(copy, msg) != NULL, what(ctx, "the line says \"%s\"", msg));
            break;
        }
    ok(found, what(ctx, "stderr has a line starting \"%s\"", want));
    ok(strstr(r.out, "listening") == NULL, what(ctx, "did not start listening"));
    if (!found || r.status != 1)
        dump_run(&r);
    run_free(&r);
}

static void test_load_errors(void)
{
    write_file("syntax", "bad.lua",
               "local app = require \"tycho\"\n"
               "app.get(\"/ok\", function() return \"ok\" end)\n"
               "local x = = 1\n");
    expect_load_error("syntax", "bad.lua:3", NULL, 0);
    expect_load_error("syntax", "bad.lua:3", NULL, 1);

    write_file("toplevel", "boom.lua",
               "local app = require \"tycho\"\n"
               "app.get(\"/ok\", function() return \"ok\" end)\n"
               "\n"
               "error(\"top-level failure in fixture\")\n");
    expect_load_error("toplevel", "boom.lua:4", "top-level failure in fixture", 0);

    write_file("index", "nil.lua",
               "local app = require \"tycho\"\n"
               "local t = nil\n"
               "print(t.field)\n");
    expect_load_error("index", "nil.lua:3", "attempt to index", 0);

    write_file("dup", "dup.lua",
               "local app = require \"tycho\"\n"
               "app.get(\"/same\", function() return \"a\" end)\n"
               "app.post(\"/same\", function() return \"b\" end)\n"
               "app.get(\"/same\", function() return \"c\" end)\n");
    expect_load_error("dup", "dup.lua:4", "already registered", 0);
    expect_load_error("dup", "dup.lua:4", "already registered", 1);

    write_file("sleep", "wait.lua",
               "local app = require \"tycho\"\n"
               "tycho.sleep(1)\n");
    expect_load_error("sleep", "wait.lua:2", "tycho.sleep: only in a handler", 0);

    write_file("timer", "tick.lua",
               "local app = require \"tycho\"\n"
               "\n"
               "tycho.timer.every(1, function() end)\n");
    expect_load_error("timer", "tick.lua:3", "on_worker_start", 0);

    write_file("dup2", "a.lua",
               "local app = require \"tycho\"\n"
               "app.get(\"/users/:id\", function() return \"a\" end)\n");
    write_file("dup2", "b.lua",
               "local app = require \"tycho\"\n"
               "\n"
               "app.route(\"GET\", \"/users/:id\", function() return \"b\" end)\n");
    expect_load_error("dup2", "b.lua:3", "already registered", 0);

    write_file("nomod", "a.lua",
               "local app = require \"tycho\"\n"
               "local m = require \"no_such_module_in_fixture\"\n");
    expect_load_error("nomod", "a.lua:2", "no_such_module_in_fixture", 0);

    /* a file that is fine, then one that fails: the second one is named */
    write_file("second", "a.lua",
               "local app = require \"tycho\"\n"
               "app.get(\"/ok\", function() return \"ok\" end)\n");
    write_file("second", "b.lua", "local app = require \"tycho\"\napp.get(\"/b\", 42)\n");
    {
        struct run r;
        char dir[256], want[320];
        const char *args[] = {"--port", "0", "--workers", "1", dir, NULL};
        snprintf(dir, sizeof dir, "%s/second", tmp_dir);
        snprintf(want, sizeof want, "tycho: %s/b.lua:2:", dir);
        run_tycho(&r, args);
        is_int(r.status, 1, "handler that is not a function: exit status 1");
        ok(strstr(r.err, want) != NULL, what("handler that is not a function", "stderr has %s", want));
        if (r.status != 1 || !strstr(r.err, want))
            dump_run(&r);
        run_free(&r);
    }
}

static void test_request_mode(void)
{
    struct run run;
    struct raw_response resp;
    char val[256];

    {
        const char *args[] = {"--request", "GET /hello", NULL};
        if (request(&run, &resp, args, 200, "Hello, World!", "--request GET /hello")) {
            ok(strncmp(run.out, "HTTP/1.1 200 OK\r\n", 17) == 0,
               "--request GET /hello: status line \"HTTP/1.1 200 OK\"");
            expect_raw_header(&resp, "Content-Length", "13", "--request GET /hello");
            expect_raw_header(&resp, "Content-Type", "text/plain; charset=utf-8",
                              "--request GET /hello");
            expect_raw_header(&resp, "Server", "tycho", "--request GET /hello");
            ok(raw_header(&resp, "Date", val, sizeof val), "--request GET /hello: has Date");
        }
        run_free(&run);
    }
    {
        const char *args[] = {"--request=GET /hello", NULL};
        request(&run, &resp, args, 200, "Hello, World!", "--request=GET /hello");
        run_free(&run);
    }
    {
        const char *args[] = {"--request", "GET /users/42", NULL};
        if (request(&run, &resp, args, 200, "{\"id\":\"42\"}", "--request GET /users/42")) {
            ok(raw_header(&resp, "Content-Type", val, sizeof val) &&
                   strncmp(val, "application/json", 16) == 0,
               "--request GET /users/42: Content-Type application/json");
        }
        run_free(&run);
    }
    {
        const char *args[] = {"--request", "GET /static/a/b.css", NULL};
        request(&run, &resp, args, 200, "wildcard a/b.css", "--request wildcard");
        run_free(&run);
    }
    {
        const char *args[] = {"--request", "GET /query?a=1&b=x%20y&c=p+q", NULL};
        request(&run, &resp, args, 200, "a=1\nb=x y\nc=p q", "--request query");
        run_free(&run);
    }
    {
        const char *args[] = {"--request", "POST /echo", "--body", "abc def", NULL};
        if (request(&run, &resp, args, 200, "abc def", "--request POST /echo --body"))
            expect_raw_header(&resp, "X-Body-Length", "7", "--request POST /echo --body");
        run_free(&run);
    }
    {
        const char *args[] = {"--request", "POST /echo", NULL};
        if (request(&run, &resp, args, 200, "", "--request POST /echo without body"))
            expect_raw_header(&resp, "X-Body-Length", "0", "--request POST /echo without body");
        run_free(&run);
    }
    {
        const char *args[] = {"--request", "GET /headers",          "--header",
                              "X-Custom: abc",     "--header",      "content-type: text/x-fixture",
                              "--header",          "X-Multi: one",  "--header",
                              "x-multi: two",      NULL};
        request(&run, &resp, args, 200,
                "abc|abc|abc|text/x-fixture|text/x-fixture|one, two|nil", "--request --header");
        run_free(&run);
    }
    {
        /* boundary values are accepted (checked without opening a socket) */
        const char *args[] = {"--workers", "1024", "--port", "65535", "--max-conns", "1",
                              "--max-body=5", "--max-header-bytes", "4096",
                              "--request", "POST /echo", "--body", "abc", NULL};
        request(&run, &resp, args, 200, "abc", "boundary flag values with --request");
        run_free(&run);
    }
    {
        const char *args[] = {"--request", "GET /nope", NULL};
        request(&run, &resp, args, 404, NULL, "--request 404");
        run_free(&run);
    }
    {
        const char *args[] = {"--request", "DELETE /only", NULL};
        if (request(&run, &resp, args, 405, NULL, "--request 405"))
            expect_raw_header(&resp, "Allow", "GET, HEAD, POST", "--request 405");
        run_free(&run);
    }
    {
        const char *args[] = {"--request", "HEAD /hello", NULL};
        if (request(&run, &resp, args, 200, "", "--request HEAD /hello"))
            expect_raw_header(&resp, "Content-Length", "13", "--request HEAD /hello");
        run_free(&run);
    }
    {
        const char *args[] = {"--request", "GET /mw/order", NULL};
        if (request(&run, &resp, args, 200, "ok", "--request middleware"))
            expect_raw_header(&resp, "X-Order", "mw1,mw2,handler,mw2-after,mw1-after",
                              "--request middleware");
        run_free(&run);
    }
    {
        const char *args[] = {"--request", "GET /redirect", NULL};
        if (request(&run, &resp, args, 302, NULL, "--request redirect"))
            expect_raw_header(&resp, "Location", "/hello", "--request redirect");
        run_free(&run);
    }
    {
        const char *args[] = {"--request", "GET /error", NULL};
        if (request(&run, &resp, args, 500, NULL, "--request GET /error")) {
            ok(!strstr(resp.body, "boom"), "--request GET /error: body hides the error");
            ok(strstr(run.err, "30_errors.lua:7:") != NULL,
               "--request GET /error: stderr names 30_errors.lua:7");
            ok(strstr(run.err, "traceback") != NULL, "--request GET /error: stderr has a traceback");
        }
        run_free(&run);
    }
    {
        const char *args[] = {"--request", "GET /send-twice", NULL};
        request(&run, &resp, args, 500, NULL, "--request res:send twice");
        run_free(&run);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s TYCHO_BINARY FIXTURE_DIR\n", argv[0]);
        return 2;
    }
    tycho_binary = argv[1];
    fixture_dir = argv[2];
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_fatal_signal);
    signal(SIGINT, on_fatal_signal);
    signal(SIGHUP, on_fatal_signal);
    if (parse_wrap())
        run_timeout_ms *= 3;        /* the server runs under a wrapper such as valgrind */
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/tycho-test-cli-XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }

    test_version_help();
    test_bad_flags();
    test_bad_dir();
    test_load_errors();
    test_request_mode();

    remove_tree(tmp_dir, 2);
    free(wrap_copy);
    return test_summary();
}
