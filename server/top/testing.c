/*
 * testing.c: `tycho test [DIR] [TESTDIR]`, the in-process test runner, and
 * `tycho new NAME`, the starter app.
 *
 * The runner sets up one worker as --request does (the app's scripts
 * loaded, its loop, its pools), then runs testing.lua (compiled in) inside
 * that worker's Lua state with the sorted list of TESTDIR/ *_test.lua files
 * and a send function: send(raw) feeds raw request bytes through the same
 * connection code as a socket would (parser, router, middleware, handler),
 * running the worker's loop while a handler waits, and returns the raw
 * response.
 */
#include "top/testing.h"
#include "core/buf.h"
#include "http/conn.h"
#include "lua/gen.h"
#include "net/sqlite.h"
#include "top/worker.h"

#include <dirent.h>
#include <unistd.h>
#include <stdbool.h>
#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testing_lua.h" /* generated from testing.lua: tycho_testing_lua[] */

/* send(raw) -> the raw response (upvalue 1: the worker); raises when the handler is too late. */
static int send_request(lua_State *L)
{
    struct tycho_worker *w = lua_touserdata(L, lua_upvalueindex(1));
    struct tycho_buf out = {0};
    size_t len;
    const char *raw = luaL_checklstring(L, 1, &len);
    long timeout_ms = w->cfg->test_timeout_ms;
    int rc = tycho_conn_run_local(&w->ctx, raw, len, &out, timeout_ms);

    if (rc != TYCHO_OK) {
        char why[160];
        tycho_buf_dispose(&out);
        if (rc == TYCHO_CONN_LATE)
            snprintf(why, sizeof(why), "client: the handler had not finished after %g s "
                     "(--test-timeout); it was abandoned", (double)timeout_ms / 1000);
        else
            snprintf(why, sizeof(why), "client: out of memory running the request");
        /* No position here: testing.lua raises it again at the test's line. */
        lua_pushstring(L, why);
        return lua_error(L);
    }
    lua_pushlstring(L, out.data ? out.data + out.off : "", out.len);
    tycho_buf_dispose(&out);
    return 1;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Pushes the sorted dir/ *_test.lua paths (not hidden). Returns how many, or -1 (printed why). */
static int push_test_files(lua_State *L, const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    int n = 0;

    if (!d) {
        fprintf(stderr, "tycho test: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        char **grown;
        if (e->d_name[0] == '.' || len < 10 || strcmp(e->d_name + len - 9, "_test.lua") != 0)
            continue;
        if (!(grown = realloc(names, sizeof(*names) * (size_t)(n + 1))) ||
            !(grown[n] = strdup(e->d_name))) {
            names = grown ? grown : names;
            fprintf(stderr, "tycho test: out of memory\n");
            n = -n - 1;
            break;
        }
        names = grown;
        n++;
    }
    closedir(d);
    if (n < 0) {
        for (int i = 0; i < -n - 1; i++)
            free(names[i]);
        free(names);
        return -1;
    }
    if (n > 0)
        qsort(names, (size_t)n, sizeof(*names), by_name); /* names is NULL for none */
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushfstring(L, "%s/%s", dir, names[i]);
        lua_rawseti(L, -2, i + 1);
        free(names[i]);
    }
    free(names);
    return n;
}

/* Runs testing.lua in w's Lua state. Returns the number of failed tests, or -1 (printed). */
static int run_runner(struct tycho_worker *w, const char *test_dir)
{
    lua_State *L = tycho_gen_lua(w->gen);
    int top = lua_gettop(L), failed = -1, n;

    if (luaL_loadbuffer(L, tycho_testing_lua, sizeof(tycho_testing_lua) - 1, "=tycho.testing")) {
        fprintf(stderr, "tycho test: %s\n", lua_tostring(L, -1));
        goto out;
    }
    if ((n = push_test_files(L, test_dir)) < 0)
        goto out;
    if (n == 0) {
        fprintf(stderr, "tycho test: no *_test.lua files in %s\n", test_dir);
        goto out;
    }
    lua_pushlightuserdata(L, w);
    lua_pushcclosure(L, send_request, 1);
    lua_getglobal(L, "tycho");
    lua_getfield(L, -1, "json");
    lua_remove(L, -2);
    if (lua_pcall(L, 3, 1, 0) != 0) {
        fprintf(stderr, "tycho test: %s\n", lua_tostring(L, -1));
        goto out;
    }
    failed = (int)lua_tointeger(L, -1);
out:
    lua_settop(L, top);
    return failed;
}

/* A fresh directory under $TMPDIR (or /tmp) into buf; false (printed why) when none can be made. */
static bool make_data_dir(char *buf, size_t cap)
{
    const char *tmp = getenv("TMPDIR");

    snprintf(buf, cap, "%s/tycho-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(buf))
        return true;
    fprintf(stderr, "tycho test: cannot make a directory for the test databases (%s): %s\n",
            buf, strerror(errno));
    return false;
}

/* Removes dir and everything below it (the test databases; no symlinks are followed). */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096];

    while (d && (e = readdir(d))) {
        struct stat st;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(path);
        else
            unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

int tycho_test_run(const struct tycho_config *cfg)
{
    struct tycho_shared shared = {.cfg = cfg};
    struct tycho_worker w = {0};
    char err[TYCHO_ERR_LEN], test_dir[4096], data_dir[4096];
    int failed;

    if (cfg->test_dir)
        snprintf(test_dir, sizeof(test_dir), "%s", cfg->test_dir);
    else
        snprintf(test_dir, sizeof(test_dir), "%s/tests", cfg->dir);
    /* Results line by line, so they interleave sensibly with handlers' log lines on stderr. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* SQLite files with a relative path go in a fresh directory, removed after the run. */
    if (!make_data_dir(data_dir, sizeof(data_dir)))
        return 1;
    tycho_sqlite_dir = data_dir;
    if (tycho_worker_setup(&w, 0, &shared, err) < 0) {
        fprintf(stderr, "tycho: %s\n", err);
        remove_tree(data_dir);
        return 1;
    }
    failed = run_runner(&w, test_dir);
    fflush(stdout);
    tycho_worker_teardown(&w);
    tycho_sqlite_stop();              /* their connections closed before the files go */
    remove_tree(data_dir);
    tycho_sqlite_dir = NULL;
    return failed == 0 ? 0 : 1;
}

/* ---- tycho new NAME ------------------------------------------------------ */

static const char starter_app[] =
    "-- app.lua: serve with `tycho DIR`, test with `tycho test DIR`, edit while it runs\n"
    "-- with `tycho --watch DIR`.\n"
    "local app = require \"tycho\"\n"
    "\n"
    "app.get(\"/\", function(req, res)\n"
    "    return \"Hello from Tycho!\\n\"\n"
    "end)\n"
    "\n"
    "-- :name is a route parameter; res:json answers application/json.\n"
    "app.get(\"/hello/:name\", function(req, res)\n"
    "    res:json({ hello = req.params.name })\n"
    "end)\n";

static const char starter_test[] =
    "-- tests/app_test.lua: run with `tycho test DIR`.\n"
    "test(\"GET / says hello\", function()\n"
    "    local r = client:get(\"/\")\n"
    "    assert_eq(r.status, 200)\n"
    "    assert_match(r.body, \"Hello from Tycho\")\n"
    "end)\n"
    "\n"
    "test(\"GET /hello/:name answers JSON\", function()\n"
    "    local r = client:get(\"/hello/ada\")\n"
    "    assert_eq(r.status, 200)\n"
    "    assert_match(r.headers[\"content-type\"], \"^application/json\")\n"
    "    assert_eq(r:json(), { hello = \"ada\" })\n"
    "end)\n"
    "\n"
    "test(\"an unknown path is a 404\", function()\n"
    "    assert_eq(client:get(\"/nope\").status, 404)\n"
    "end)\n";

static const char starter_readme_fmt[] =
    "# %s\n"
    "\n"
    "A Tycho app: `tycho %s` serves it on http://127.0.0.1:8080, `tycho test %s` runs\n"
    "its tests (tests/*_test.lua), and `tycho --watch %s` reloads it on every edit.\n";

/* Writes text to path (a new file). TYCHO_OK, or TYCHO_ERR with the reason printed. */
static int write_new(const char *path, const char *text)
{
    FILE *f = fopen(path, "wx");

    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "tycho new: %s: %s\n", path, strerror(errno));
        return TYCHO_ERR;
    }
    return TYCHO_OK;
}

int tycho_new_app(const char *name)
{
    char path[4200], readme[20000];

    if (!*name || strlen(name) > 4000) {
        fprintf(stderr, "tycho new: %s\n", *name ? "the name is too long" : "the name is empty");
        return 1;
    }
    if (mkdir(name, 0755) != 0) {
        fprintf(stderr, "tycho new: %s: %s\n", name,
                errno == EEXIST ? "already exists (choose a new name)" : strerror(errno));
        return 1;
    }
    snprintf(path, sizeof(path), "%s/tests", name);
    if (mkdir(path, 0755) != 0) {
        fprintf(stderr, "tycho new: %s: %s\n", path, strerror(errno));
        return 1;
    }
    snprintf(readme, sizeof(readme), starter_readme_fmt, name, name, name, name);
    snprintf(path, sizeof(path), "%s/app.lua", name);
    if (write_new(path, starter_app) < 0)
        return 1;
    snprintf(path, sizeof(path), "%s/tests/app_test.lua", name);
    if (write_new(path, starter_test) < 0)
        return 1;
    snprintf(path, sizeof(path), "%s/README.md", name);
    if (write_new(path, readme) < 0)
        return 1;
    printf("created %s/app.lua, %s/tests/app_test.lua and %s/README.md\n"
           "  tycho test %s     run its tests\n"
           "  tycho %s          serve it on http://127.0.0.1:8080\n",
           name, name, name, name, name);
    return fflush(stdout) == 0 ? 0 : 1;
}
