/*
 * migrate.c: `tycho migrate [--status] [--db URL] [DIR]`. Loads the app as a
 * worker would (in-process, no socket), then runs the migrations as a task in
 * its Lua state: each DIR/migrations/NAME.sql file not yet recorded in the
 * database's table tycho_migrations is applied, in name order, in a
 * transaction of its own that also records it. It stops at the first that
 * fails. --status lists them instead. Main thread.
 */
#include "top/migrate.h"
#include "lua/bind.h"
#include "lua/gen.h"
#include "top/worker.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The runner, in the app's Lua state; its last argument tells C it has finished. */
static const char runner_lua[] =
    "local url, names, dir, status_only, finish = ...\n"
    "local function fail(msg) io.stderr:write('tycho migrate: ', msg, '\\n') finish(1) end\n"
    "if not url then\n"
    "  local opened = tycho.db._opened()\n"
    "  if #opened ~= 1 then\n"
    "    return fail(#opened == 0 and 'the scripts open no database: name one with --db URL'\n"
    "      or 'the scripts open ' .. #opened .. ' databases (' .. table.concat(opened, ', ')\n"
    "      .. '): name one with --db URL')\n"
    "  end\n"
    "  url = opened[1]\n"
    "end\n"
    "local ok, db = pcall(tycho.db.open, url)\n"
    "if not ok then return fail(db) end\n"
    "local now = url:match('^postgres') and\n"
    "  [[to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')]] or\n"
    "  [[strftime('%Y-%m-%dT%H:%M:%SZ', 'now')]]\n"
    "local function run()\n"
    "  local ok, err = db:exec('CREATE TABLE IF NOT EXISTS tycho_migrations (name TEXT PRIMARY'\n"
    "    .. ' KEY, applied_at TEXT NOT NULL DEFAULT (' .. now .. '))')\n"
    "  if not ok then return fail(url .. ': ' .. err) end\n"
    "  local rows = assert(db:query('SELECT name, applied_at FROM tycho_migrations'))\n"
    "  local applied = {}\n"
    "  for _, r in ipairs(rows) do applied[r.name] = r.applied_at end\n"
    "  local done = 0\n"
    "  for _, name in ipairs(names) do\n"
    "    if status_only then\n"
    "      print((applied[name] and 'applied  ' or 'pending  ') .. name\n"
    "        .. (applied[name] and ('  ' .. applied[name]) or ''))\n"
    "    elseif not applied[name] then\n"
    "      local f, ferr = io.open(dir .. '/migrations/' .. name, 'rb')\n"
    "      if not f then return fail(ferr) end\n"
    "      local sql = f:read('*a')\n"
    "      f:close()\n"
    "      local ok, committed, err, code = pcall(db.transaction, db, function(tx)\n"
    "        local r, e, c = tx:exec_script(sql)\n"
    "        if not r then error({ err = e, code = c }) end\n"
    "        assert(tx:exec('INSERT INTO tycho_migrations (name) VALUES ($1)', name))\n"
    "      end)\n"
    "      if not ok and type(committed) == 'table' then\n"
    "        err, code = committed.err, committed.code\n"
    "      elseif not ok then\n"
    "        err, code = tostring(committed), 'error'\n"
    "      end\n"
    "      if not ok or not committed then\n"
    "        return fail(name .. ': ' .. tostring(err) .. ' (' .. tostring(code) .. ')'\n"
    "          .. '; nothing of it was applied')\n"
    "      end\n"
    "      print('applied  ' .. name)\n"
    "      done = done + 1\n"
    "    end\n"
    "  end\n"
    "  if not status_only then print(done .. ' applied, ' .. (#names - done) .. ' already') end\n"
    "  finish(0)\n"
    "end\n"
    "tycho.timer.after(0, function()\n"
    "  local ok, err = pcall(run)\n"
    "  if not ok then fail(tostring(err)) end\n"
    "end)\n";

/* tycho.db._opened() -> the URLs the scripts gave tycho.db.open. */
static int opened(lua_State *L)
{
    tycho_bind_db_opened(L);
    return 1;
}

/* The migrations' runner calls this once it has finished: the exit status. */
static int finish(lua_State *L)
{
    int *status = lua_touserdata(L, lua_upvalueindex(1));

    *status = (int)luaL_checkinteger(L, 1);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Pushes the sorted names of the .sql files in DIR/migrations (not hidden).
 * -1 (printed why) on failure.
 */
static int push_migrations(lua_State *L, const char *dir)
{
    char path[4096];
    char **names = NULL;
    size_t n = 0;
    DIR *d;
    struct dirent *e;

    snprintf(path, sizeof(path), "%s/migrations", dir);
    if (!(d = opendir(path))) {
        fprintf(stderr, "tycho migrate: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        char **grown;
        if (e->d_name[0] == '.' || len < 5 || strcmp(e->d_name + len - 4, ".sql") != 0)
            continue;
        if (!(grown = realloc(names, sizeof(*names) * (n + 1))) ||
            !(grown[n] = strdup(e->d_name))) {
            names = grown ? grown : names;
            break;
        }
        names = grown;
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof(*names), by_name);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, (int)i + 1);
        free(names[i]);
    }
    free(names);
    return 0;
}

/* Loads the runner with its arguments and starts it. TYCHO_ERR (printed why) on failure. */
static int start_runner(lua_State *L, const struct tycho_config *cfg, int *status)
{
    if (luaL_loadbuffer(L, runner_lua, sizeof(runner_lua) - 1, "=tycho.migrate")) {
        fprintf(stderr, "tycho migrate: %s\n", lua_tostring(L, -1));
        return TYCHO_ERR;
    }
    if (cfg->db_url)
        lua_pushstring(L, cfg->db_url);
    else
        lua_pushnil(L);
    if (push_migrations(L, cfg->dir) < 0)
        return TYCHO_ERR;
    lua_pushstring(L, cfg->dir);
    lua_pushboolean(L, cfg->migrate_status);
    lua_pushlightuserdata(L, status);
    lua_pushcclosure(L, finish, 1);
    if (lua_pcall(L, 5, 0, 0) != 0) {
        fprintf(stderr, "tycho migrate: %s\n", lua_tostring(L, -1));
        return TYCHO_ERR;
    }
    return TYCHO_OK;
}

int tycho_migrate_run(const struct tycho_config *cfg)
{
    struct tycho_shared shared = {.cfg = cfg};
    struct tycho_worker w = {0};
    char err[TYCHO_ERR_LEN];
    int status = -1;
    lua_State *L;

    if (tycho_worker_setup(&w, 0, &shared, err) < 0) {
        fprintf(stderr, "tycho: %s\n", err);
        return 1;
    }
    L = tycho_gen_lua(w.gen);
    /* tycho.db._opened(): what the scripts opened, for the runner to pick from. */
    lua_getglobal(L, "tycho");
    lua_getfield(L, -1, "db");
    lua_pushcfunction(L, opened);
    lua_setfield(L, -2, "_opened");
    lua_pop(L, 2);
    if (start_runner(L, cfg, &status) == TYCHO_OK)
        while (status < 0 && event_base_loop(w.base, EVLOOP_ONCE) == 0) {
        }
    fflush(stdout);
    tycho_worker_teardown(&w);
    return status == 0 ? 0 : 1;
}
