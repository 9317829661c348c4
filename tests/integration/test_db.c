/*
 * test_db.c: tycho.db with SQLite, over real sockets: every type in and out,
 * errors with their codes, parameters ($N and ?), misuse, the place rules,
 * data kept across a restart, and a slow query that does not hold up another
 * request on the same worker (shown by the order of the answers, not by
 * timing). The app is written into a temporary directory, with its database.
 */
#include "harness.h"
#include "support.h"
#include "client.h"

#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static const char app_lua[] =
    "local app = require \"tycho\"\n"
    "local cjson = require \"cjson\"\n"
    "local db = tycho.db.open(\"sqlite:data.db\")\n"
    "local function out(res, v) res:header('Content-Type', 'text/plain') return v end\n"
    "app.post('/setup', function(req, res)\n"
    "  assert(db:exec('CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY,'\n"
    "    .. ' title TEXT UNIQUE NOT NULL, n INTEGER, f REAL, b BLOB, note TEXT)'))\n"
    "  return 'ok'\n"
    "end)\n"
    "app.post('/notes', function(req, res)\n"
    "  local r, err, code = db:exec('INSERT INTO notes (title, n, f, b, note)'\n"
    "    .. ' VALUES ($1, $2, $3, $4, $5)', req.query.title, req.query.n, 1.5, 'x\\0y', nil)\n"
    "  if not r then res:status(409) return err .. '|' .. code end\n"
    "  return r.changes .. ' ' .. r.last_id\n"
    "end)\n"
    "app.get('/notes/:title', function(req, res)\n"
    "  local rows, err, code = db:query('SELECT * FROM notes WHERE title = ?', req.params.title)\n"
    "  if not rows then return err end\n"
    "  if #rows == 0 then res:status(404) return 'none' end\n"
    "  local r = rows[1]\n"
    "  return table.concat({r.title, type(r.n), tostring(r.n), tostring(r.f), #r.b,\n"
    "    tostring(r.b == 'x\\0y'), tostring(r.note == tycho.null), tostring(r.note == nil)}, ' ')\n"
    "end)\n"
    "app.get('/big', function(req, res)\n"
    "  local rows = assert(db:query('SELECT 9007199254740993 AS big, -5 AS small, 1 = 1 AS t'))\n"
    "  return type(rows[1].big) .. ' ' .. rows[1].big .. ' ' .. rows[1].small .. ' ' .. rows[1].t\n"
    "end)\n"
    "app.get('/count', function(req, res)\n"
    "  local rows = assert(db:query('SELECT count(*) AS n FROM notes'))\n"
    "  return tostring(rows[1].n)\n"
    "end)\n"
    "app.get('/json', function(req, res)\n"
    "  local rows = assert(db:query('SELECT title, note FROM notes ORDER BY id LIMIT 1'))\n"
    "  res:json(rows)\n"
    "end)\n"
    "app.get('/error/:which', function(req, res)\n"
    "  local sql = ({syntax = 'SELEC 1', table = 'SELECT * FROM nowhere',\n"
    "    notnull = 'INSERT INTO notes (title) VALUES (NULL)',\n"
    "    two = 'SELECT 1; SELECT 2', count = 'SELECT $1, $2',\n"
    "    named = 'SELECT :name'})[req.params.which]\n"
    "  local rows, err, code\n"
    "  if req.params.which == 'count' then rows, err, code = db:query(sql, 'one value')\n"
    "  else rows, err, code = db:query(sql) end\n"
    "  return tostring(rows) .. '|' .. err .. '|' .. tostring(code)\n"
    "end)\n"
    "app.get('/misuse/:which', function(req, res)\n"
    "  if req.params.which == 'table' then db:query('SELECT $1', {}) end\n"
    "  if req.params.which == 'sql' then db:query(42) end\n"
    "  if req.params.which == 'coroutine' then\n"
    "    coroutine.wrap(function() db:query('SELECT 1') end)()\n"
    "  end\n"
    "  return 'not raised'\n"
    "end)\n"
    "app.get('/slow', function(req, res)\n"
    "  local rows = assert(db:query('WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL'\n"
    "    .. ' SELECT x + 1 FROM c WHERE x < 1000000) SELECT count(*) AS n FROM c'))\n"
    "  return 'slow ' .. rows[1].n\n"
    "end)\n"
    "app.get('/fast', function() return 'fast' end)\n"
    "app.get('/schema', function()\n"
    "  assert(db:exec_script('DROP TABLE IF EXISTS sx; CREATE TABLE sx (a INTEGER);'\n"
    "    .. ' INSERT INTO sx VALUES (1);'))\n"
    "  local before\n"
    "  for i = 1, 4 do before = assert(db:query('SELECT * FROM sx')) end\n"
    "  assert(db:exec(\"ALTER TABLE sx ADD COLUMN b TEXT DEFAULT 'new'\"))\n"
    "  local after = {}\n"
    "  for i = 1, 4 do after[i] = assert(db:query('SELECT * FROM sx'))[1].b end\n"
    "  return tostring(before[1].b) .. ' ' .. table.concat(after, ' ')\n"
    "end)\n"
    "app.post('/acc', function()\n"
    "  assert(db:exec('CREATE TABLE IF NOT EXISTS acc (name TEXT PRIMARY KEY,'\n"
    "    .. ' bal INTEGER NOT NULL CHECK (bal >= 0))'))\n"
    "  assert(db:exec(\"INSERT OR REPLACE INTO acc VALUES ('a', 100), ('b', 0)\"))\n"
    "  return 'ok'\n"
    "end)\n"
    "app.get('/acc', function()\n"
    "  local rows = assert(db:query('SELECT name, bal FROM acc ORDER BY name'))\n"
    "  local out = {}\n"
    "  for _, r in ipairs(rows) do out[#out + 1] = r.name .. '=' .. r.bal end\n"
    "  return table.concat(out, ' ')\n"
    "end)\n"
    "app.post('/move/:n', function(req, res)\n"
    "  local n = tonumber(req.params.n)\n"
    "  local ok, committed, a, b = pcall(db.transaction, db, function(tx)\n"
    "    assert(tx:exec(\"UPDATE acc SET bal = bal + $1 WHERE name = 'b'\", n))\n"
    "    local r, err, code = tx:exec(\"UPDATE acc SET bal = bal - $1 WHERE name = 'a'\", n)\n"
    "    if not r then error({code = code}) end\n"
    "    return 'moved', n\n"
    "  end)\n"
    "  if not ok then res:status(409) return committed.code end\n"
    "  return a .. ' ' .. b .. ' ' .. tostring(committed)\n"
    "end)\n"
    "app.post('/hold', function()\n"
    "  db:transaction(function(tx)\n"
    "    assert(tx:exec(\"UPDATE acc SET bal = 0 WHERE name = 'a'\"))\n"
    "    tycho.sleep(30)\n"
    "  end)\n"
    "  return 'held'\n"
    "end)\n"
    "app.get('/tx/misuse/:which', function(req)\n"
    "  local w = req.params.which\n"
    "  local ok, err = pcall(db.transaction, db, function(tx)\n"
    "    if w == 'db' then return db:query('SELECT 1') end\n"
    "    if w == 'nested' then return db:transaction(function() end) end\n"
    "  end)\n"
    "  if w == 'ended' then\n"
    "    local kept\n"
    "    db:transaction(function(tx) kept = tx end)\n"
    "    ok, err = pcall(function() local r = kept:query('SELECT 1') return r end)\n"
    "  end\n"
    "  return tostring(ok) .. '|' .. tostring(err)\n"
    "end)\n";

static int write_app(const char *extra)
{
    char path[128];
    FILE *f;

    snprintf(path, sizeof path, "%s/app.lua", dir);
    if (!(f = fopen(path, "w")))
        return -1;
    fputs(app_lua, f);
    fputs(extra, f);
    return fclose(f);
}

static void post(int port, const char *path, int status, const char *body)
{
    char req[512];
    struct response r;

    snprintf(req, sizeof req, "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", path);
    fetch(port, req, &r);
    expect_status(&r, status, path);
    expect_body(&r, body, path);
    response_free(&r);
}

/* Rows, every type, NULL as tycho.null, last_id and changes, and a unique violation's code. */
static void test_round_trip(int port)
{
    post(port, "/setup", 200, "ok");
    post(port, "/notes?title=first&n=42", 200, "1 1");
    post(port, "/notes?title=second&n=7", 200, "1 2");
    check_get(port, "/notes/first", 200, "first number 42 1.5 3 true true false");
    check_get(port, "/notes/nobody", 404, "none");
    post(port, "/notes?title=first&n=1", 409,
         "UNIQUE constraint failed: notes.title|SQLITE_CONSTRAINT_UNIQUE");
    check_get(port, "/big", 200, "string 9007199254740993 -5 1");
    ok(body_has(port, "/json", "\"note\":null", "\"title\":\"first\""),
       "tycho.null encodes as JSON null (it is cjson.null)");
    check_get(port, "/count", 200, "2");
    /* Statements are kept prepared: one kept from before an ALTER TABLE sees the new column. */
    check_get(port, "/schema", 200, "nil new new new new");
}

/* Expected failures are nil, message, code; misuse raises (a 500). */
static void test_errors(int port)
{
    check_get(port, "/error/syntax", 200, "nil|near \"SELEC\": syntax error|SQLITE_ERROR");
    check_get(port, "/error/table", 200, "nil|no such table: nowhere|SQLITE_ERROR");
    check_get(port, "/error/notnull", 200,
              "nil|NOT NULL constraint failed: notes.title|SQLITE_CONSTRAINT_NOTNULL");
    check_get(port, "/error/two", 200,
              "nil|one statement per call (this SQL holds more)|SQLITE_MISUSE");
    check_get(port, "/error/count", 200, "nil|the statement takes 2 values, 1 given|SQLITE_RANGE");
    check_get(port, "/error/named", 200,
              "nil|parameter :name: use $1, $2, ... or ? (named parameters are not supported)|"
              "SQLITE_RANGE");
    expect_status_of(port, "GET /misuse/table HTTP/1.1\r\nHost: t\r\n\r\n", 500,
                     "a table as a value raises");
    expect_status_of(port, "GET /misuse/sql HTTP/1.1\r\nHost: t\r\n\r\n", 500,
                     "SQL that is not a string raises");
    expect_status_of(port, "GET /misuse/coroutine HTTP/1.1\r\nHost: t\r\n\r\n", 500,
                     "a query inside the script's own coroutine raises");
}

/* Statements are counted by database and result, and timed. */
static void test_metrics(int port)
{
    char ok_series[256], error_series[256], timed[256];

    snprintf(ok_series, sizeof ok_series,
             "tycho_db_queries_total{database=\"%s/data.db\",result=\"ok\"} ", dir);
    snprintf(error_series, sizeof error_series,
             "tycho_db_queries_total{database=\"%s/data.db\",result=\"error\"} ", dir);
    snprintf(timed, sizeof timed,
             "tycho_db_query_duration_seconds_count{database=\"%s/data.db\"} ", dir);
    ok(body_has(port, "/metrics", ok_series, NULL),
       "tycho_db_queries_total counts the statements that worked");
    ok(body_has(port, "/metrics", error_series, NULL), "and those that failed");
    ok(body_has(port, "/metrics", timed, NULL), "tycho_db_query_duration_seconds times them");
}

/*
 * A query that runs on a database thread for a while does not hold up another
 * request on the same worker: the second request, sent after it, is answered
 * while the first still waits.
 */
static void test_no_blocking(int port)
{
    struct client slow, fast;
    struct response r = {0};
    long long deadline = now_ms() + 60000;

    if (client_connect(&slow, port) < 0 || client_connect(&fast, port) < 0) {
        ok(0, "two connections");
        return;
    }
    client_sends(&slow, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(50);                     /* the slow query is on its thread */
    client_sends(&fast, "GET /fast HTTP/1.1\r\nHost: t\r\n\r\n");
    read_response(&fast, &r, 0);
    expect_status(&r, 200, "the request after a slow query");
    expect_body(&r, "fast", "the request after a slow query");
    response_free(&r);
    ok(slow.len == 0 && client_fill(&slow, now_ms()) < 0,
       "the slow query's request is still waiting when the other one is answered");
    read_response(&slow, &r, 0);
    expect_body(&r, "slow 1000000", "the slow query answers afterwards");
    ok(now_ms() < deadline, "within a minute");
    response_free(&r);
    client_close(&slow);
    client_close(&fast);
}

/*
 * Transactions: committed together; rolled back on an error inside (the
 * error raised again); rolled back when the client leaves while one is open,
 * letting its database thread go (a later transaction gets the write lock).
 */
static void test_transactions(int port)
{
    struct client gone;

    post(port, "/acc", 200, "ok");
    post(port, "/move/30", 200, "moved 30 true");
    check_get(port, "/acc", 200, "a=70 b=30");
    post(port, "/move/100", 409, "SQLITE_CONSTRAINT_CHECK");
    check_get(port, "/acc", 200, "a=70 b=30");
    check_get(port, "/tx/misuse/db", 200,
              "false|db:query: inside a transaction use its tx (tx:query, tx:exec)");
    check_get(port, "/tx/misuse/nested", 200,
              "false|db:transaction: inside a transaction use its tx (tx:query, tx:exec)");
    ok(body_has(port, "/tx/misuse/ended", "false|", "/app.lua:") &&
           body_has(port, "/tx/misuse/ended", ": tx:query: the transaction has ended", NULL),
       "a tx kept past its transaction raises, at the script's line");
    /* A client that leaves while its transaction is open (sleeping inside it). */
    if (client_connect(&gone, port) == 0) {
        client_sends(&gone, "POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        sleep_ms(300);                /* the transaction is open, its update made */
        client_close(&gone);
    }
    sleep_ms(100);
    /* Only if that transaction was rolled back and let go can these take the write lock. */
    post(port, "/move/5", 200, "moved 5 true");
    check_get(port, "/acc", 200, "a=65 b=35");
}

/* tycho.db.open at load time is fine; a query at load time is refused, naming the call. */
static void test_load_time(void)
{
    char cmd[256], out[4096];

    write_app("db:query('SELECT 1')\n");
    snprintf(cmd, sizeof cmd, "%s --check %s 2>&1", tycho_binary, dir);
    is_int(run_command(cmd, out, sizeof out), 1, "a query at load time: the load fails");
    ok(strstr(out, "db:query: only in a handler, middleware or timer, not while the scripts "
                   "load") != NULL, "a query at load time: the message names the call and place");
    write_app("tycho.db.open('mysql://x')\n");
    run_command(cmd, out, sizeof out);
    ok(strstr(out, "tycho.db.open: expected \"sqlite:PATH\" or \"postgres://...\", got "
                   "\"mysql://x\"") != NULL, "an unsupported URL is refused by name");
    write_app("");
}

static void write_file(const char *name, const char *text)
{
    char path[160];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    if ((f = fopen(path, "w"))) {
        fputs(text, f);
        fclose(f);
    }
}

/* tycho migrate: each file once, in name order, in a transaction; --status; a failure. */
static void test_migrate(void)
{
    char cmd[512], out[8192];

    snprintf(cmd, sizeof cmd, "%s/migrations", dir);
    mkdir(cmd, 0755);
    write_file("migrations/002_tags.sql", "ALTER TABLE notes ADD COLUMN tags TEXT;\n"
                                          "UPDATE notes SET tags = 'x';\n");
    write_file("migrations/001_kinds.sql", "CREATE TABLE kinds (name TEXT PRIMARY KEY);\n"
                                           "INSERT INTO kinds VALUES ('a'), ('b');\n");
    snprintf(cmd, sizeof cmd, "%s migrate --status %s 2>&1", tycho_binary, dir);
    is_int(run_command(cmd, out, sizeof out), 0, "migrate --status: exit 0");
    ok(strstr(out, "pending  001_kinds.sql\npending  002_tags.sql\n") != NULL,
       "migrate --status lists both as pending, in name order");
    snprintf(cmd, sizeof cmd, "%s migrate %s 2>&1", tycho_binary, dir);
    is_int(run_command(cmd, out, sizeof out), 0, "migrate: exit 0");
    ok(strstr(out, "applied  001_kinds.sql\napplied  002_tags.sql\n2 applied, 0 already") !=
       NULL, "migrate applies both, in name order");
    is_int(run_command(cmd, out, sizeof out), 0, "migrate again: exit 0");
    ok(strstr(out, "0 applied, 2 already") != NULL, "migrate again applies nothing");
    write_file("migrations/003_bad.sql", "INSERT INTO kinds VALUES ('c');\nSELEC nope;\n");
    is_int(run_command(cmd, out, sizeof out), 1, "a failing migration: exit 1");
    ok(strstr(out, "tycho migrate: 003_bad.sql: near \"SELEC\": syntax error (SQLITE_ERROR); "
                   "nothing of it was applied") != NULL, "a failing migration says so");
    snprintf(cmd, sizeof cmd, "%s migrate --status %s 2>&1", tycho_binary, dir);
    run_command(cmd, out, sizeof out);
    ok(strstr(out, "applied  001_kinds.sql  ") && strstr(out, "pending  003_bad.sql"),
       "--status: applied with their time, the failed one pending");
    write_file("migrations/003_bad.sql", "SELECT 1;\n");
    snprintf(cmd, sizeof cmd, "%s migrate --db sqlite:%s/other.db %s 2>&1", tycho_binary, dir,
             dir);
    is_int(run_command(cmd, out, sizeof out), 1, "migrate --db another database: its own list");
    ok(strstr(out, "applied  001_kinds.sql") && strstr(out, "002_tags.sql: no such table: notes"),
       "--db: the migrations run against that database");
    snprintf(cmd, sizeof cmd, "%s migrate --db sqlite:%s/other.db --status %s 2>&1",
             tycho_binary, dir, dir);
    run_command(cmd, out, sizeof out);
    ok(strstr(out, "applied  001_kinds.sql") && strstr(out, "pending  002_tags.sql"),
       "--db --status: that database's list");
    unlink(strcat(strcpy(out, dir), "/migrations/001_kinds.sql"));
    unlink(strcat(strcpy(out, dir), "/migrations/002_tags.sql"));
    unlink(strcat(strcpy(out, dir), "/migrations/003_bad.sql"));
    rmdir(strcat(strcpy(out, dir), "/migrations"));
}

static void cleanup(void)
{
    char path[128];
    const char *files[] = {"app.lua", "data.db", "data.db-wal", "data.db-shm", "other.db",
                           "other.db-wal", "other.db-shm"};

    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

int main(int argc, char **argv)
{
    struct server s;
    const char *args[] = {"--port", "0", "--workers", "1", "--metrics", "/metrics", dir, NULL};

    if (suite_setup(argc, argv))
        return 2;
    snprintf(dir, sizeof dir, "/tmp/tycho-test-db-XXXXXX");
    if (!mkdtemp(dir) || write_app("") != 0) {
        ok(0, "a temporary app directory");
        return test_summary();
    }
    if (server_start(&s, args) == 0) {
        test_round_trip(s.port);
        test_errors(s.port);
        test_metrics(s.port);
        test_no_blocking(s.port);
        test_transactions(s.port);
        is_int(server_stop(&s), 0, "exit status 0 after SIGTERM");
    } else {
        ok(0, "server starts");
    }
    server_cleanup(&s);
    /* The data is in the file: a new server sees it. */
    if (server_start(&s, args) == 0) {
        check_get(s.port, "/count", 200, "2");
        check_get(s.port, "/notes/second", 200, "second number 7 1.5 3 true true false");
        is_int(server_stop(&s), 0, "second start: exit status 0");
    } else {
        ok(0, "server starts again");
    }
    server_cleanup(&s);
    test_migrate();
    test_load_time();
    cleanup();
    return test_summary();
}
