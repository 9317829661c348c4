/*
 * test_redis.c: tycho.redis against a real Redis this test starts
 * (servers.h), over real sockets: replies of every kind in Lua, error
 * replies with their prefix, log-in (AUTH with a user) and the URL's
 * database, refused commands, the pool's bound counted on the server
 * (CLIENT LIST) under 200 concurrent requests, a command timeout, the
 * breaker, a server killed mid-command and restarted, and metrics.
 *
 * The app reads the URLs from REDIS_URL and REDIS_NOWHERE.
 */
#include "harness.h"
#include "support.h"
#include "client.h"
#include "servers.h"

#include <unistd.h>

static char dir[64];
static struct redis_server rs;

static const char app_lua[] =
    "local app = require \"tycho\"\n"
    "local red = tycho.redis.open(os.getenv('REDIS_URL'), { pool = 3, timeout = 1 })\n"
    "local wrong = tycho.redis.open(os.getenv('REDIS_WRONG'))\n"
    "local nowhere = tycho.redis.open(os.getenv('REDIS_NOWHERE'), { max_failures = 2 })\n"
    "local byname = tycho.redis.open(os.getenv('REDIS_BYNAME'))\n"
    "app.get('/kinds', function()\n"
    "  local out = {}\n"
    "  local function add(...) for i = 1, select('#', ...) do\n"
    "    out[#out + 1] = tostring((select(i, ...))) end end\n"
    "  add(red:call('SET', 'k', 'v', 'EX', 60))\n"
    "  add(red:call('GET', 'k'))\n"
    "  add(red:call('GET', 'missing') == tycho.null)\n"
    "  red:call('DEL', 'n', 'l')\n"
    "  add(red:call('INCRBY', 'n', 5))\n"
    "  add(type(red:call('INCRBY', 'n', 1152921504606846976)))\n"
    "  add(red:call('GET', 'n'))\n"
    "  add(red:call('RPUSH', 'l', 'a', 'b\\0c', 3, 2.5))\n"
    "  local l = red:call('LRANGE', 'l', 0, -1)\n"
    "  add(#l, #l[2], l[2] == 'b\\0c', l[3], l[4])\n"
    "  local m = red:call('MGET', 'k', 'missing')\n"
    "  add(m[1], m[2] == tycho.null)\n"
    "  add(red:call('LPUSH', 'k', 'x'))\n"
    "  add(red:call('NOSUCHCOMMAND'))\n"
    "  return table.concat(out, ' ')\n"
    "end)\n"
    "app.get('/refused/:which', function(req)\n"
    "  if req.params.which == 'multi' then red:call('multi') end\n"
    "  if req.params.which == 'table' then red:call('SET', 'k', {}) end\n"
    "  if req.params.which == 'none' then red:call() end\n"
    "  return 'not raised'\n"
    "end)\n"
    "app.get('/block/:s', function(req)\n"
    "  local v, err, code = red:call('BLPOP', 'nothing', req.params.s)\n"
    "  if v == nil then return 'failed|' .. err .. '|' .. code end\n"
    "  return 'blocked ' .. tostring(v == tycho.null)\n"
    "end)\n"
    "app.get('/wrong', function()\n"
    "  local v, err, code = wrong:call('PING')\n"
    "  return tostring(v) .. '|' .. err .. '|' .. code\n"
    "end)\n"
    "app.get('/nowhere', function()\n"
    "  local out = {}\n"
    "  for i = 1, 3 do\n"
    "    local v, err, code = nowhere:call('PING')\n"
    "    out[i] = tostring(v) .. '|' .. err .. '|' .. code\n"
    "  end\n"
    "  return table.concat(out, '\\n')\n"
    "end)\n"
    "app.get('/ping', function() return red:call('PING') end)\n"
    "app.get('/byname', function() return byname:call('GET', 'k') end)\n";

static int write_app(void)
{
    char path[128];
    FILE *f;

    snprintf(path, sizeof path, "%s/app.lua", dir);
    if (!(f = fopen(path, "w")))
        return -1;
    fputs(app_lua, f);
    return fclose(f);
}

/* Clients of the pool of red (CLIENT LIST), or -1. */
static int server_conns(void)
{
    const char *words[] = {"CLIENT", "LIST", NULL};
    char out[65536];
    int n = 0;

    if (redis_cmd(&rs, words, out, sizeof out) != 0)
        return -1;
    /* A line per client; the pool's are in db 3 and were last used for BLPOP. */
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
        if (strstr(line, " db=3 ") && strstr(line, " cmd=blpop"))
            n++;
    return n;
}

static void test_kinds(int port)
{
    const char *get[] = {"-n", "3", "GET", "k", NULL};
    char out[256];

    check_get(port, "/kinds", 200,
              "OK v true 5 string 1152921504606846981 4 4 3 true 3 2.5 v true nil "
              "WRONGTYPE Operation against a key holding the wrong kind of value WRONGTYPE nil "
              "ERR unknown command 'NOSUCHCOMMAND', with args beginning with:  ERR");
    redis_cmd(&rs, get, out, sizeof out);
    is_str(out, "v", "the URL's database (3) is the one written");
    check_get(port, "/byname", 200, "v");
    expect_status_of(port, "GET /refused/multi HTTP/1.1\r\nHost: t\r\n\r\n", 500,
                     "MULTI raises (each call may take another connection)");
    expect_status_of(port, "GET /refused/table HTTP/1.1\r\nHost: t\r\n\r\n", 500,
                     "a table as a word raises");
    expect_status_of(port, "GET /refused/none HTTP/1.1\r\nHost: t\r\n\r\n", 500,
                     "no command raises");
    ok(body_has(port, "/wrong", "nil|cannot connect to redis://app@127.0.0.1:",
                "WRONGPASS invalid username-password pair or user is disabled.|CONNECTION"),
       "a wrong password: cannot connect, with Redis' reason");
}

static void test_pool_bound(int port)
{
    enum { N = 200 };
    static struct client c[N];
    int connected = 0, answered = 0, most = 0;

    for (int i = 0; i < N; i++)
        if (client_connect(&c[i], port) == 0) {
            client_sends(&c[i], "GET /block/0.02 HTTP/1.1\r\nHost: t\r\n\r\n");
            connected++;
        }
    is_int(connected, N, "200 clients connected");
    for (int round = 0; round < 10; round++) {
        int n = server_conns();
        if (n > most)
            most = n;
        sleep_ms(50);
    }
    for (int i = 0; i < connected; i++) {
        struct response r = {0};
        if (read_response(&c[i], &r, 0) == 0 && r.status == 200 && r.body &&
            strcmp(r.body, "blocked true") == 0)
            answered++;
        else if (answered + 5 > i)
            dump_response(&r);
        response_free(&r);
        client_close(&c[i]);
    }
    is_int(answered, connected, "every one of the 200 requests got its reply");
    note("pool bound: the server saw at most %d connections of the pool", most);
    ok(most >= 1 && most <= 6, what("pool bound", "server-side connections at most 6, saw %d",
                                    most));
}

static const char *const acl[] = {"ACL", "SETUSER", "app", "on", ">secret", "~*", "+@all", NULL};

static void test_failures(int port)
{
    struct client slow;
    struct response r = {0};
    int good = 0;

    ok(body_has(port, "/block/3", "failed|", "no reply within 1 s (timeout)|TIMEOUT"),
       "a command past timeout fails with TIMEOUT");
    check_get(port, "/ping", 200, "PONG");
    ok(body_has(port, "/nowhere", "nil|cannot connect to redis://127.0.0.1:", "|CONNECTION\n"
                                  "nil|circuit open|POOL"),
       "a server that is not there: CONNECTION twice, then the breaker answers (POOL)");
    if (client_connect(&slow, port) == 0) {
        client_sends(&slow, "GET /block/0.9 HTTP/1.1\r\nHost: t\r\n\r\n");
        sleep_ms(200);
        redis_kill(&rs);
        read_response(&slow, &r, 0);
        ok(r.body && strstr(r.body, "failed|") && strstr(r.body, "connection lost") &&
               strstr(r.body, "|CONNECTION"),
           what("killed", "a command in flight fails: %s", r.body ? r.body : "(none)"));
        response_free(&r);
        client_close(&slow);
    }
    ok(redis_restart(&rs) == 0, "Redis restarts");
    redis_cmd(&rs, acl, NULL, 0);         /* it keeps nothing: the user again */
    for (int i = 0; i < 10 && !good; i++) {
        char body[256];
        body_of(port, "/ping", body, sizeof body);
        good = strcmp(body, "PONG") == 0;
        if (!good)
            sleep_ms(300);
    }
    ok(good, "commands work again after the restart");
}

static void test_metrics(int port)
{
    char want[256];

    snprintf(want, sizeof want, "tycho_pool_acquired_total{pool=\"redis://app@127.0.0.1:%d/3\"} ",
             rs.port);
    ok(body_has(port, "/metrics", want, NULL), "pool metrics, without the password");
}

/* A command at load time cannot wait: the load fails, naming the call and the place. */
static void test_load_time(void)
{
    char cmd[256], out[4096];
    FILE *f;

    snprintf(cmd, sizeof cmd, "%s/app.lua", dir);
    if (!(f = fopen(cmd, "w")))
        return;
    fputs("local red = tycho.redis.open('redis://127.0.0.1:1')\nred:call('PING')\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s --check %s 2>&1", tycho_binary, dir);
    is_int(run_command(cmd, out, sizeof out), 1, "a command at load time: the load fails");
    ok(strstr(out, "app.lua:2: red:call: only in a handler, middleware or timer, not while the "
                   "scripts load") != NULL, what("load time", "the message: %s", out));
}

int main(int argc, char **argv)
{
    struct server s;
    const char *args[] = {"--port", "0", "--workers", "2", "--metrics", "/metrics", dir, NULL};
    char url[256], out[256];

    if (suite_setup(argc, argv))
        return 2;
    snprintf(dir, sizeof dir, "/tmp/tycho-test-redis-XXXXXX");
    if (!mkdtemp(dir) || write_app() != 0) {
        ok(0, "a temporary app directory");
        return test_summary();
    }
    if (redis_start(&rs) != 0) {
        ok(0, "Redis starts (make test installs redis-server)");
        return test_summary();
    }
    is_int(redis_cmd(&rs, acl, out, sizeof out), 0, "a Redis user app with a password");
    snprintf(url, sizeof url, "redis://app:secret@127.0.0.1:%d/3", rs.port);
    setenv("REDIS_URL", url, 1);
    snprintf(url, sizeof url, "redis://app:nope@127.0.0.1:%d/3", rs.port);
    setenv("REDIS_WRONG", url, 1);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv_free_port());
    setenv("REDIS_NOWHERE", url, 1);
    snprintf(url, sizeof url, "redis://app:secret@localhost:%d/3", rs.port);
    setenv("REDIS_BYNAME", url, 1);
    if (server_start(&s, args) == 0) {
        test_kinds(s.port);
        test_pool_bound(s.port);
        test_metrics(s.port);
        test_failures(s.port);
        is_int(server_stop(&s), 0, "exit status 0 after SIGTERM");
    } else {
        ok(0, "server starts");
    }
    server_cleanup(&s);
    test_load_time();
    redis_stop(&rs);
    snprintf(url, sizeof url, "rm -rf %s", dir);
    system(url);
    return test_summary();
}
