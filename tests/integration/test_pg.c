/*
 * test_pg.c: tycho.db with PostgreSQL, against a real server this test
 * starts (servers.h) and Tycho over real sockets: every type in and out,
 * errors with their SQLSTATE codes, transactions (committed, rolled back on
 * an error and when the client leaves), the pool's bound counted on the
 * server (pg_stat_activity) under 200 concurrent requests, an exhausted
 * pool, a statement timeout, the breaker, lifetime and idle replacement, a
 * server killed mid-query and restarted, a reload and a stop with queries
 * in flight, name lookup, metrics and `tycho migrate`.
 *
 * The app reads the server's URL from PG_URL (set here before Tycho starts).
 */
#include "harness.h"
#include "support.h"
#include "client.h"
#include "servers.h"

#include <sys/stat.h>
#include <unistd.h>

static char dir[64];
static struct pg_server pg;

static const char app_lua[] =
    "local app = require \"tycho\"\n"
    "local url = os.getenv('PG_URL')\n"
    "local db = tycho.db.open(url, { pool = 3, timeout = 2 })\n"
    "local one = tycho.db.open(url .. '&application_name=one', { pool = 1, max_waiting = 0 })\n"
    "local short = tycho.db.open(url .. '&application_name=short',\n"
    "  { pool = 2, max_lifetime = 1, idle_timeout = 1 })\n"
    "local nowhere = tycho.db.open(os.getenv('PG_NOWHERE'),\n"
    "  { max_failures = 2, cooldown = 60, connect_timeout = 2 })\n"
    "local byname = tycho.db.open(os.getenv('PG_BYNAME'))\n"
    "local function text(res, v) res:header('Content-Type', 'text/plain') return v end\n"
    "app.post('/setup', function()\n"
    "  assert(db:exec_script([[DROP TABLE IF EXISTS notes; CREATE TABLE notes (\n"
    "    id bigserial PRIMARY KEY, title text UNIQUE NOT NULL, n bigint, f double precision,\n"
    "    b bytea, ok boolean, j jsonb, num numeric, note text)]]))\n"
    "  return 'ok'\n"
    "end)\n"
    "app.post('/notes', function(req, res)\n"
    "  local r, err, code = db:exec('INSERT INTO notes (title, n, f, b, ok, j, num, note)'\n"
    "    .. ' VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id', req.query.title,\n"
    "    req.query.n, 1.5, 'x\\0y\\255', req.query.ok == 'yes', '{\"a\": [1, 2]}', 12.25, nil)\n"
    "  if not r then res:status(409) return err .. '|' .. code end\n"
    "  return r.changes .. ' ' .. r.last_id\n"
    "end)\n"
    "app.get('/notes/:title', function(req, res)\n"
    "  local rows, err, code = db:query('SELECT * FROM notes WHERE title = $1', req.params.title)\n"
    "  if not rows then return err end\n"
    "  if #rows == 0 then res:status(404) return 'none' end\n"
    "  local r = rows[1]\n"
    "  return table.concat({r.title, type(r.n), tostring(r.n), tostring(r.f), #r.b,\n"
    "    tostring(r.b == 'x\\0y\\255'), type(r.ok), tostring(r.ok), r.j, tostring(r.num),\n"
    "    tostring(r.note == tycho.null)}, ' ')\n"
    "end)\n"
    "app.get('/types', function()\n"
    "  local r = assert(db:query([[SELECT 9007199254740993::bigint AS big, -5::int2 AS small,\n"
    "    $1::bigint AS param_big, 'NaN'::float8 AS nan,\n"
    "    123456789012345678901.5::numeric AS bignum,\n"
    "    2.5::numeric AS num, true AS t, NULL::int AS nothing, '\\x00ff'::bytea AS bytes,\n"
    "    'é'::text AS accent]], '9007199254740995'))[1]\n"
    "  return table.concat({type(r.big), r.big, r.small, r.param_big, tostring(r.nan ~= r.nan),\n"
    "    type(r.bignum), r.bignum, r.num, tostring(r.t), tostring(r.nothing == tycho.null),\n"
    "    #r.bytes, r.bytes:byte(2), r.accent}, ' ')\n"
    "end)\n"
    "app.post('/update', function()\n"
    "  local r = assert(db:exec('UPDATE notes SET note = $1', 'seen'))\n"
    "  return r.changes .. ' ' .. tostring(r.last_id)\n"
    "end)\n"
    "app.get('/error/:which', function(req, res)\n"
    "  local sql = ({syntax = 'SELEC 1', table = 'SELECT * FROM nowhere',\n"
    "    notnull = 'INSERT INTO notes (title) VALUES (NULL)', count = 'SELECT $1::int + $2::int',\n"
    "    two = 'SELECT 1; SELECT 2', divide = 'SELECT 1 / 0'})[req.params.which]\n"
    "  local rows, err, code\n"
    "  if req.params.which == 'count' then rows, err, code = db:query(sql, 1)\n"
    "  else rows, err, code = db:query(sql) end\n"
    "  return tostring(rows) .. '|' .. err .. '|' .. tostring(code)\n"
    "end)\n"
    "app.get('/misuse/:which', function(req, res)\n"
    "  local w = req.params.which\n"
    "  if w == 'table' then db:query('SELECT $1', {}) end\n"
    "  if w == 'option' then tycho.db.open(url .. '&x=1', { pools = 3 }) end\n"
    "  if w == 'sqliteopt' then tycho.db.open('sqlite:x.db', { pool = 3 }) end\n"
    "  return 'not raised'\n"
    "end)\n"
    "app.get('/sleep/:s', function(req)\n"
    "  local rows, err, code = db:query('SELECT pg_sleep($1) AS s, 1 AS done', req.params.s)\n"
    "  if not rows then return 'failed|' .. err .. '|' .. code end\n"
    "  return 'slept'\n"
    "end)\n"
    "app.get('/one', function(req)\n"
    "  local first\n"
    "  tycho.timer.after(0, function() first = { one:query('SELECT pg_sleep(0.5)') } end)\n"
    "  tycho.sleep(0.1)\n"
    "  local rows, err, code = one:query('SELECT 1')\n"
    "  while not first do tycho.sleep(0.05) end\n"
    "  return tostring(rows) .. '|' .. err .. '|' .. code .. '|' .. #first[1]\n"
    "end)\n"
    "app.get('/prepared', function()\n"
    "  for i = 1, 3 do assert(one:query('SELECT 41 + $1::int AS n', i)) end\n"
    "  local rows = assert(one:query([[SELECT name, statement FROM pg_prepared_statements\n"
    "    WHERE statement LIKE 'SELECT 41%' ]]))\n"
    "  return #rows .. ' ' .. rows[1].statement\n"
    "end)\n"
    "app.get('/schema', function()\n"
    "  assert(one:exec_script('DROP TABLE IF EXISTS sx; CREATE TABLE sx (a int);'\n"
    "    .. ' INSERT INTO sx VALUES (1);'))\n"
    "  local before = assert(one:query('SELECT * FROM sx'))[1]\n"
    "  assert(one:query('SELECT * FROM sx'))\n"
    "  assert(one:exec(\"ALTER TABLE sx ADD COLUMN b text DEFAULT 'new'\"))\n"
    "  local after, err = one:query('SELECT * FROM sx')\n"
    "  return tostring(before.b) .. ' ' .. tostring(after and after[1].b or err)\n"
    "end)\n"
    "app.get('/pid', function()\n"
    "  local function pid() return assert(short:query('SELECT pg_backend_pid() AS p'))[1].p end\n"
    "  local a, b = pid(), pid()\n"
    "  tycho.sleep(1.2)\n"
    "  local c = pid()\n"
    "  return tostring(a == b) .. ' ' .. tostring(b ~= c)\n"
    "end)\n"
    "app.get('/nowhere', function()\n"
    "  local out = {}\n"
    "  for i = 1, 3 do\n"
    "    local rows, err, code = nowhere:query('SELECT 1')\n"
    "    out[i] = tostring(rows) .. '|' .. err .. '|' .. code\n"
    "  end\n"
    "  return table.concat(out, '\\n')\n"
    "end)\n"
    "app.get('/byname', function()\n"
    "  return assert(byname:query('SELECT current_user AS u'))[1].u\n"
    "end)\n"
    "app.get('/fast', function() return 'fast' end)\n"
    "app.post('/acc', function()\n"
    "  assert(db:exec_script([[DROP TABLE IF EXISTS acc; CREATE TABLE acc (name text PRIMARY KEY,\n"
    "    bal int NOT NULL CHECK (bal >= 0)); INSERT INTO acc VALUES ('a', 100), ('b', 0)]]))\n"
    "  return 'ok'\n"
    "end)\n"
    "app.get('/acc', function()\n"
    "  local out = {}\n"
    "  for _, r in ipairs(assert(db:query('SELECT name, bal FROM acc ORDER BY name'))) do\n"
    "    out[#out + 1] = r.name .. '=' .. r.bal\n"
    "  end\n"
    "  return table.concat(out, ' ')\n"
    "end)\n"
    "app.post('/move/:n', function(req, res)\n"
    "  local n = tonumber(req.params.n)\n"
    "  local ok, committed, a = pcall(db.transaction, db, function(tx)\n"
    "    assert(tx:exec(\"UPDATE acc SET bal = bal + $1 WHERE name = 'b'\", n))\n"
    "    local r, err, code = tx:exec(\"UPDATE acc SET bal = bal - $1 WHERE name = 'a'\", n)\n"
    "    if not r then error({code = code}) end\n"
    "    return 'moved'\n"
    "  end)\n"
    "  if not ok then res:status(409) return committed.code end\n"
    "  return a .. ' ' .. tostring(committed)\n"
    "end)\n"
    "app.post('/hold', function()\n"
    "  db:transaction(function(tx)\n"
    "    assert(tx:exec(\"UPDATE acc SET bal = 0 WHERE name = 'a'\"))\n"
    "    tycho.sleep(30)\n"
    "  end)\n"
    "  return 'held'\n"
    "end)\n";

static int write_file(const char *name, const char *text)
{
    char path[160];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!(f = fopen(path, "w")))
        return -1;
    fputs(text, f);
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

/* The body of GET path (status 200 expected), into out. */
/* Connections the server has for application_name app (pg_stat_activity), or -1. */
static int server_conns(const char *app)
{
    char sql[256], out[64];

    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'", app);
    if (pg_sql(&pg, sql, out, sizeof out) != 0)
        return -1;
    return atoi(out);
}

static void test_round_trip(int port)
{
    post(port, "/setup", 200, "ok");
    post(port, "/notes?title=first&n=42&ok=yes", 200, "1 1");
    post(port, "/notes?title=second&n=7", 200, "1 2");
    check_get(port, "/notes/first", 200,
              "first number 42 1.5 4 true boolean true {\"a\": [1, 2]} 12.25 true");
    check_get(port, "/notes/second", 200,
              "second number 7 1.5 4 true boolean false {\"a\": [1, 2]} 12.25 true");
    check_get(port, "/notes/nobody", 404, "none");
    check_get(port, "/types", 200,
              "string 9007199254740993 -5 9007199254740995 true string "
              "123456789012345678901.5 2.5 true true 2 255 é");
    post(port, "/update", 200, "2 nil");
    post(port, "/notes?title=first&n=1", 409,
         "duplicate key value violates unique constraint \"notes_title_key\" "
         "(Key (title)=(first) already exists.)|23505");
}

/* Statements are kept prepared per connection; one outdated by ALTER TABLE is prepared anew. */
static void test_prepared(int port)
{
    check_get(port, "/prepared", 200, "1 SELECT 41 + $1::int AS n");
    check_get(port, "/schema", 200, "nil new");
}

static void test_errors(int port)
{
    check_get(port, "/error/syntax", 200, "nil|syntax error at or near \"SELEC\"|42601");
    check_get(port, "/error/table", 200, "nil|relation \"nowhere\" does not exist|42P01");
    ok(body_has(port, "/error/notnull", "nil|null value in column \"title\" of relation "
                                        "\"notes\" violates not-null constraint (Failing row "
                                        "contains (", "null).)|23502"),
       "a NOT NULL violation: 23502, with the server's detail");
    ok(body_has(port, "/error/count", "nil|bind message supplies 1 parameters, but prepared "
                                      "statement \"t", "\" requires 2|08P01"),
       "a wrong number of values: PostgreSQL's protocol error");
    ok(body_has(port, "/error/two", "nil|cannot insert multiple commands into a prepared "
                                    "statement|42601", NULL),
       "two statements in one call are refused");
    check_get(port, "/error/divide", 200, "nil|division by zero|22012");
    expect_status_of(port, "GET /misuse/table HTTP/1.1\r\nHost: t\r\n\r\n", 500,
                     "a table as a value raises");
    expect_status_of(port, "GET /misuse/option HTTP/1.1\r\nHost: t\r\n\r\n", 500,
                     "an unknown pool option raises");
    expect_status_of(port, "GET /misuse/sqliteopt HTTP/1.1\r\nHost: t\r\n\r\n", 500,
                     "pool options on SQLite raise");
}

static void test_transactions(int port)
{
    struct client gone;
    long long deadline;
    int left = -1;

    post(port, "/acc", 200, "ok");
    post(port, "/move/30", 200, "moved true");
    check_get(port, "/acc", 200, "a=70 b=30");
    post(port, "/move/100", 409, "23514");
    check_get(port, "/acc", 200, "a=70 b=30");
    if (client_connect(&gone, port) == 0) {
        client_sends(&gone, "POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        sleep_ms(500);                    /* the UPDATE is done, the handler sleeps */
        client_close(&gone);
        /* Its connection is closed, so the server rolls back and lets the row go. */
        deadline = now_ms() + 10000;
        do {
            char out[64];
            sleep_ms(100);
            if (pg_sql(&pg, "SELECT count(*) FROM pg_stat_activity WHERE state = "
                            "'idle in transaction'", out, sizeof out) == 0)
                left = atoi(out);
        } while (left != 0 && now_ms() < deadline);
        is_int(left, 0, "a transaction whose client left is not left open on the server");
        check_get(port, "/acc", 200, "a=70 b=30");
        post(port, "/move/10", 200, "moved true");
        check_get(port, "/acc", 200, "a=60 b=40");
    } else {
        ok(0, "a connection for the transaction left open");
    }
}

/*
 * 200 requests at once on pool = 3 per worker (2 workers): every one is
 * answered, and the server never sees more than 6 connections of the pool.
 */
static void test_pool_bound(int port)
{
    enum { N = 200 };
    static struct client c[N];
    int connected = 0, answered = 0, most = 0;
    long long deadline = now_ms() + 60000;

    for (int i = 0; i < N; i++)
        if (client_connect(&c[i], port) == 0) {
            client_sends(&c[i], "GET /sleep/0.02 HTTP/1.1\r\nHost: t\r\n\r\n");
            connected++;
        }
    is_int(connected, N, "200 clients connected");
    for (int round = 0; round < 10 && now_ms() < deadline; round++) {
        int n = server_conns("pooltest");
        if (n > most)
            most = n;
        sleep_ms(50);
    }
    for (int i = 0; i < connected; i++) {
        struct response r = {0};
        if (read_response(&c[i], &r, 0) == 0 && r.status == 200 && r.body &&
            strcmp(r.body, "slept") == 0)
            answered++;
        else if (answered + 5 > i)
            dump_response(&r);
        response_free(&r);
        client_close(&c[i]);
    }
    is_int(answered, connected, "every one of the 200 requests got its rows");
    note("pool bound: the server saw at most %d connections of the pool", most);
    ok(most >= 1 && most <= 6, what("pool bound", "server-side connections at most 6, saw %d",
                                    most));
}

static void test_exhausted_and_timeout(int port)
{
    check_get(port, "/one", 200, "nil|pool exhausted|53300|1");
    ok(body_has(port, "/sleep/5", "failed|", "no result within 2 s (timeout)|57014"),
       "a statement past timeout fails with 57014");
    check_get(port, "/sleep/0", 200, "slept");
}

static void test_breaker_and_lifetime(int port)
{
    int n = -1;
    long long deadline;

    /* One request, three calls: two fail to connect, then the breaker (per worker) is open. */
    {
        char body[1024];
        body_of(port, "/nowhere", body, sizeof body);
        ok(strstr(body, "nil|cannot connect to postgres://app@127.0.0.1:") &&
               strstr(body, "|08001\nnil|cannot connect to postgres://app@127.0.0.1:"),
           "a server that is not there: cannot connect, 08001, twice");
        ok(strstr(body, "|08001\nnil|circuit open|53300"),
           "after max_failures the breaker answers at once");
        if (!strstr(body, "|08001\nnil|circuit open|53300"))
            note("GET /nowhere: %s", body);
    }
    /* max_lifetime 1: a connection is reused, but not after a second. */
    check_get(port, "/pid", 200, "true true");
    /* idle_timeout 1: closed within the sweep's second after. */
    deadline = now_ms() + 10000;
    while (n != 0 && now_ms() < deadline) {
        sleep_ms(200);
        n = server_conns("short");
    }
    is_int(n, 0, "idle connections past idle_timeout are closed");
    check_get(port, "/byname", 200, "app");
}

/* The server killed mid-query: an error, not a hang; restarted: the pool recovers. */
static void test_server_killed(int port)
{
    struct client slow;
    struct response r = {0};
    long long start = now_ms();
    int good = 0;

    if (client_connect(&slow, port) < 0) {
        ok(0, "a connection for the slow query");
        return;
    }
    client_sends(&slow, "GET /sleep/1.5 HTTP/1.1\r\nHost: t\r\n\r\n");
    sleep_ms(300);
    pg_kill(&pg);
    read_response(&slow, &r, 0);
    ok(r.body && strstr(r.body, "failed|") && strstr(r.body, "|08006"),
       what("killed", "the query in flight fails with 08006: %s", r.body ? r.body : "(none)"));
    ok(now_ms() - start < 15000, "and does not hang");
    response_free(&r);
    client_close(&slow);
    ok(pg_restart(&pg) == 0, "the server restarts");
    for (int i = 0; i < 10 && !good; i++) {
        char body[256];
        body_of(port, "/sleep/0", body, sizeof body);
        good = strcmp(body, "slept") == 0;
        if (!good)
            sleep_ms(300);
    }
    ok(good, "queries work again after the restart");
    check_get(port, "/sleep/0", 200, "slept");
}

/* A reload and a stop with a query in flight: it finishes; no connection is left behind. */
static void test_reload_and_stop(struct server *s)
{
    struct client slow;
    struct response r = {0};
    int n = -1;
    long long deadline;

    /* Fill the pools: twelve requests at once, each a connection's for 0.3 s. */
    {
        struct client c[12];
        int opened = 0;
        for (int i = 0; i < 12; i++)
            if (client_connect(&c[i], s->port) == 0) {
                client_sends(&c[i], "GET /sleep/0.3 HTTP/1.1\r\nHost: t\r\n\r\n");
                opened = i + 1;
            } else {
                break;
            }
        for (int i = 0; i < opened; i++) {
            read_response(&c[i], &r, 0);
            response_free(&r);
            client_close(&c[i]);
        }
    }
    n = server_conns("pooltest");
    ok(n >= 3, what("before reload", "before the reload the pools hold connections: %d", n));
    if (client_connect(&slow, s->port) == 0) {
        client_sends(&slow, "GET /sleep/1 HTTP/1.1\r\nHost: t\r\n\r\n");
        sleep_ms(200);
        kill(s->pid, SIGHUP);
        read_response(&slow, &r, 0);
        expect_body(&r, "slept", "a query in flight across a reload finishes");
        response_free(&r);
        client_close(&slow);
    }
    check_get(s->port, "/sleep/0", 200, "slept");
    /* The old scripts' pools are closed once their last request ended: one connection left. */
    deadline = now_ms() + 10000;
    while ((n = server_conns("pooltest")) > 1 && now_ms() < deadline)
        sleep_ms(100);
    is_int(n, 1, "after a reload the old pools' connections are closed (no leak)");
    if (client_connect(&slow, s->port) == 0) {
        client_sends(&slow, "GET /sleep/1 HTTP/1.1\r\nHost: t\r\n\r\n");
        sleep_ms(200);
        kill(s->pid, SIGTERM);
        read_response(&slow, &r, 0);
        expect_body(&r, "slept", "a query in flight at SIGTERM finishes (drain)");
        response_free(&r);
        client_close(&slow);
    }
    is_int(server_stop(s), 0, "exit status 0 after SIGTERM");
    deadline = now_ms() + 10000;
    while (n != 0 && now_ms() < deadline) {
        n = server_conns("pooltest");
        if (n)
            sleep_ms(100);
    }
    is_int(n, 0, "no connection is left on the server after the stop");
}

static void test_metrics(int port)
{
    char want[256];

    snprintf(want, sizeof want, "tycho_pool_connections{pool=\"postgres://app@127.0.0.1:%d/"
                                "app?application_name=pooltest\",state=\"idle\"} ", pg.port);
    ok(body_has(port, "/metrics", want, "tycho_pool_acquired_total{pool=\"postgres://app@"),
       "pool metrics, labelled with the URL without its password");
    ok(body_has(port, "/metrics", "tycho_pool_circuit_open{pool=\"postgres://app@127.0.0.1:",
                NULL), "the breaker's state");
}

static void test_migrate(const char *url)
{
    char cmd[1024], out[4096];
    int rc;

    mkdir(strcat(strcpy(cmd, dir), "/migrations"), 0755);
    write_file("migrations/001_notes.sql", "CREATE TABLE mig (id serial PRIMARY KEY, t text);\n"
                                           "INSERT INTO mig (t) VALUES ('one');\n");
    write_file("migrations/002_more.sql", "ALTER TABLE mig ADD COLUMN n int DEFAULT 7;\n");
    snprintf(cmd, sizeof cmd, "%s migrate --db '%s' %s 2>&1", tycho_binary, url, dir);
    rc = run_command(cmd, out, sizeof out);
    is_int(rc, 0, what("migrate", "tycho migrate on PostgreSQL: %s", out));
    snprintf(cmd, sizeof cmd, "%s migrate --status --db '%s' %s 2>&1", tycho_binary, url, dir);
    run_command(cmd, out, sizeof out);
    ok(strstr(out, "applied  001_notes.sql") && strstr(out, "applied  002_more.sql"),
       what("migrate --status", "both applied: %s", out));
    pg_sql(&pg, "SELECT t || n FROM mig", out, sizeof out);
    is_str(out, "one7", "the migrations ran");
    snprintf(cmd, sizeof cmd, "%s migrate --db '%s' %s 2>&1", tycho_binary, url, dir);
    rc = run_command(cmd, out, sizeof out);
    is_int(rc, 0, "a second run applies nothing and succeeds");
}

int main(int argc, char **argv)
{
    struct server s;
    const char *args[] = {"--port", "0", "--workers", "2", "--metrics", "/metrics", dir, NULL};
    char url[256], nowhere[256], byname[256];

    if (suite_setup(argc, argv))
        return 2;
    snprintf(dir, sizeof dir, "/tmp/tycho-test-pg-XXXXXX");
    if (!mkdtemp(dir) || write_file("app.lua", app_lua) != 0) {
        ok(0, "a temporary app directory");
        return test_summary();
    }
    if (pg_start(&pg) != 0) {
        ok(0, "PostgreSQL starts (make test installs postgresql)");
        return test_summary();
    }
    snprintf(url, sizeof url, "postgres://app:secret@127.0.0.1:%d/app?application_name=pooltest",
             pg.port);
    snprintf(nowhere, sizeof nowhere, "postgres://app:secret@127.0.0.1:%d/app?application_name=x",
             srv_free_port());
    snprintf(byname, sizeof byname, "postgresql://app:secret@localhost:%d/app", pg.port);
    setenv("PG_URL", url, 1);
    setenv("PG_NOWHERE", nowhere, 1);
    setenv("PG_BYNAME", byname, 1);
    if (server_start(&s, args) == 0) {
        test_round_trip(s.port);
        test_errors(s.port);
        test_prepared(s.port);
        test_transactions(s.port);
        test_pool_bound(s.port);
        test_exhausted_and_timeout(s.port);
        test_breaker_and_lifetime(s.port);
        test_metrics(s.port);
        test_server_killed(s.port);
        test_reload_and_stop(&s);
    } else {
        ok(0, "server starts");
    }
    server_cleanup(&s);
    test_migrate(url);
    pg_stop(&pg);
    snprintf(url, sizeof url, "rm -rf %s", dir);
    system(url);
    return test_summary();
}
