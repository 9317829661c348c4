/*
 * test_cluster.c TYCHO_BINARY TOP: two Tycho instances behind HAProxy, as
 * docs/deploy.md sets them up, on 127.0.0.x only. It starts Redis (the
 * session store; as nobody under root), two instances of an app (POST
 * /login puts the user in a Redis-backed session, GET /me answers the
 * session's user, req.remote_addr, req.scheme and the instance's name)
 * with --health, --trusted-proxies 127.0.0.1/32, --reuseport and an access
 * log each, and HAProxy (Debian's haproxy) with TOP/contrib/haproxy.cfg,
 * the file that TOP/docs/deploy.md shows (checked to be the same bytes),
 * behind a global section of the test's own (its stats socket in the temp
 * dir).
 *
 * Clients bound to 127.0.0.2 (the "real client"; HAProxy connects to Tycho
 * from 127.0.0.1) send GET /me through HAProxy without a pause, half of them
 * on keep-alive connections and half a connection per request, bounded in
 * count (LOAD_MAX_PER_CLIENT) and time (LOAD_MAX_MS), while the test
 * restarts each instance in turn (SIGTERM with a request in flight, wait
 * for its exit, start it again on its port, wait until HAProxy sees it up)
 * and then upgrades one in place (a new process beside it on the same port
 * with --reuseport, then SIGTERM to the old one, frozen a moment before so
 * that connections wait in its accept queue when it stops). It checks: no
 * request of the load failed (each a 200 saying "ada 127.0.0.2 http appN"),
 * both instances served, a session made by logging in on one instance is
 * good on the other and after the restarts, and every /me and /login line
 * of every access log names 127.0.0.2. What HAProxy had to retry for that
 * (connects refused, connections closed before a response) is printed per
 * step from its counters: those are what the restarts cost without the
 * balancer; so is what clients straight to the upgraded port saw. Where
 * nginx is installed, docs/deploy.md's nginx block is run too (with_nginx).
 *
 * Everything started here is stopped by its PID and the temp dirs removed
 * (with TYCHO_CLUSTER_KEEP set, the test's own is left, with HAProxy's log,
 * the access logs and the load clients' reports). Ends with `N passed, M
 * failed`.
 */
#include "harness.h"
#include "integration/support.h"
#include "integration/client.h"
#include "integration/servers.h"

#include <sys/un.h>

#define HAPROXY "/usr/sbin/haproxy"
#define CLIENT_ADDR "127.0.0.2"
#define LOAD_CLIENTS 4
#define LOAD_MAX_PER_CLIENT 50000   /* requests: the load's bound in count */
#define LOAD_MAX_MS 60000           /* and in time; the steps take about 10 s */
#define LOAD_PAUSE_US 500           /* between two requests of a client */
/* What a client may send itself; behind a proxy, neither may be taken. */
#define SPOOFED "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n"
#define UP_WAIT_MS 20000            /* HAProxy seeing an instance up (rise 2 x inter 1 s) */

static const char app_lua[] =
    "local app = require 'tycho'\n"
    "local instance = os.getenv('CLUSTER_INSTANCE')\n"
    "app.use(tycho.session{ store = tycho.redis.open(os.getenv('REDIS_URL')), ttl = 3600 })\n"
    "app.post('/login', function(req, res)\n"
    "    local name = req:form().name\n"
    "    tycho.session.rotate(req)\n"
    "    req.session.user = name\n"
    "    return 'logged in on ' .. instance\n"
    "end)\n"
    "app.get('/slow', function(req, res)\n"
    "    tycho.sleep(2.5)\n"
    "    return 'slow done'\n"
    "end)\n"
    "app.get('/me', function(req, res)\n"
    "    return (req.session.user or '-') .. ' ' .. req.remote_addr .. ' ' .. req.scheme ..\n"
    "        ' ' .. instance\n"
    "end)\n";

static struct srv_user self;
static char dir[64];              /* the test's temp dir: app, logs, HAProxy's files */
static char app_dir[96];
static struct redis_server redis;
static pid_t haproxy_pid = -1;
static char haproxy_log[96], admin_sock[96];
static int lb_port;

/* An instance slot: its port and the process serving it now. */
struct instance {
    const char *name;             /* app1, app2: HAProxy's server names too */
    int port;
    struct server proc;           /* proc.pid -1 when none */
    int starts;                   /* access logs: DIR/NAME-K.log, K = 1..starts */
};
static struct instance inst[2] = {{"app1", 0, {.pid = -1}, 0}, {"app2", 0, {.pid = -1}, 0}};

/* ======================================================================
 * Files
 * ====================================================================== */

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The first fenced block opened by fence ("```haproxy") in md, malloc'd, or NULL. */
static char *fenced_block(const char *md, const char *fence)
{
    char open[64];
    const char *start, *end;
    char *out;

    snprintf(open, sizeof open, "\n%s\n", fence);
    if (!(start = strstr(md, open)))
        return NULL;
    start += strlen(open);
    if (!(end = strstr(start, "\n```\n")))
        return NULL;
    out = strndup(start, (size_t)(end - start) + 1);   /* with its last newline */
    return out;
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    if (!f || fputs(text, f) < 0) {
        if (f)
            fclose(f);
        return -1;
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* ======================================================================
 * HAProxy's stats socket
 * ====================================================================== */

/* Sends cmd to HAProxy's admin socket; its answer into out. 0, or -1. */
static int admin(const char *cmd, char *out, size_t cap)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    long long deadline = now_ms() + 5000;
    size_t len = 0;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    out[0] = '\0';
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", admin_sock);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        write(fd, cmd, strlen(cmd)) != (ssize_t)strlen(cmd)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t n;
        if (now_ms() > deadline || poll(&p, 1, 1000) < 0)
            break;
        n = read(fd, out + len, cap - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len + 1 >= cap)
            break;
    }
    out[len] = '\0';
    close(fd);
    return len ? 0 : -1;
}

/* One server's (or the frontend's) counters from `show stat`. */
struct stat_row {
    long long req_tot, econ, eresp, wretr, wredis, hrsp_5xx, chkfail;
    char status[32];
};

/* The column of name in the `show stat` header line, or -1. */
static int column(const char *header, const char *name)
{
    int i = 0;
    size_t n = strlen(name);

    for (const char *p = header; *p && *p != '\n'; i++) {
        if (strncmp(p, name, n) == 0 && (p[n] == ',' || p[n] == '\n'))
            return i;
        p = strchr(p, ',');
        if (!p)
            break;
        p++;
    }
    return -1;
}

/* Field i of a CSV line (no quoting in `show stat`) into out. */
static void field(const char *line, int i, char *out, size_t cap)
{
    const char *p = line, *e;

    out[0] = '\0';
    if (i < 0)
        return;
    while (i-- > 0 && p)
        if ((p = strchr(p, ',')))
            p++;
    if (!p)
        return;
    e = p + strcspn(p, ",\n");
    snprintf(out, cap, "%.*s", (int)(e - p), p);
}

/* The row of pxname,svname ("tycho", "app1"; "www", "FRONTEND"). 0, or -1. */
static int stat_of(const char *px, const char *sv, struct stat_row *r)
{
    static char buf[65536];
    static const char *const names[] = {"req_tot", "econ", "eresp", "wretr", "wredis",
                                        "hrsp_5xx", "chkfail"};
    long long *vals[] = {&r->req_tot, &r->econ, &r->eresp, &r->wretr, &r->wredis, &r->hrsp_5xx,
                         &r->chkfail};
    char key[64], v[64];
    const char *line;

    memset(r, 0, sizeof *r);
    if (admin("show stat\n", buf, sizeof buf) < 0 || strncmp(buf, "# ", 2) != 0)
        return -1;
    snprintf(key, sizeof key, "\n%s,%s,", px, sv);
    if (!(line = strstr(buf, key)))
        return -1;
    line++;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        field(line, column(buf + 2, names[i]), v, sizeof v);
        *vals[i] = atoll(v);
    }
    field(line, column(buf + 2, "status"), r->status, sizeof r->status);
    return 0;
}

/* Waits until HAProxy reports server sv UP. 1, or 0 after UP_WAIT_MS. */
static int wait_up(const char *sv)
{
    long long deadline = now_ms() + UP_WAIT_MS;
    struct stat_row r;

    while (now_ms() < deadline) {
        if (stat_of("tycho", sv, &r) == 0 && strcmp(r.status, "UP") == 0)
            return 1;
        sleep_ms(50);
    }
    note("HAProxy: %s is \"%s\" after %d ms", sv, r.status, UP_WAIT_MS);
    return 0;
}

/* srv_launch()'s readiness check for HAProxy: both servers UP. */
static int haproxy_ready(const void *ctx)
{
    struct stat_row a, b;

    (void)ctx;
    return stat_of("tycho", "app1", &a) == 0 && stat_of("tycho", "app2", &b) == 0 &&
           strcmp(a.status, "UP") == 0 && strcmp(b.status, "UP") == 0;
}

/* Totals over both servers, for the notes of what each step cost. */
struct cost {
    long long econ, eresp, wretr, wredis, at_ms;
};

static void cost_now(struct cost *c)
{
    struct stat_row r;

    memset(c, 0, sizeof *c);
    c->at_ms = now_ms();
    for (int i = 0; i < 2; i++)
        if (stat_of("tycho", inst[i].name, &r) == 0) {
            c->econ += r.econ;
            c->eresp += r.eresp;
            c->wretr += r.wretr;
            c->wredis += r.wredis;
        }
}

static void note_cost(const char *step, const struct cost *before)
{
    struct cost now;

    cost_now(&now);
    note("%s (%lld ms): HAProxy sent %lld requests to the other instance after a connect "
         "refused or a connection closed without a response (redispatches), tried %lld again "
         "on the same one (retries), and counted %lld connection and %lld response errors",
         step, now.at_ms - before->at_ms, now.wredis - before->wredis,
         now.wretr - before->wretr, now.econ - before->econ, now.eresp - before->eresp);
}

static int start_haproxy(const char *top)
{
    char global[128], cfg[256], text[512], bind[64], a1[64], a2[64];
    const char *argv[] = {HAPROXY, "-db", "-f", global, "-f", cfg, NULL};

    snprintf(global, sizeof global, "%s/global.cfg", dir);
    snprintf(cfg, sizeof cfg, "%s/contrib/haproxy.cfg", top);
    snprintf(admin_sock, sizeof admin_sock, "%s/admin.sock", dir);
    snprintf(haproxy_log, sizeof haproxy_log, "%s/haproxy.log", dir);
    /* Stands in for Debian's global section: a stats socket, the log on stdout. */
    snprintf(text, sizeof text,
             "global\n"
             "    log stdout format raw local0\n"
             "    stats socket %s mode 600 level admin\n",
             admin_sock);
    if (write_file(global, text) < 0 || (lb_port = srv_free_port()) < 0)
        return -1;
    snprintf(bind, sizeof bind, "127.0.0.1:%d", lb_port);
    snprintf(a1, sizeof a1, "127.0.0.1:%d", inst[0].port);
    snprintf(a2, sizeof a2, "127.0.0.1:%d", inst[1].port);
    setenv("TYCHO_LB_BIND", bind, 1);
    setenv("TYCHO_APP1", a1, 1);
    setenv("TYCHO_APP2", a2, 1);
    if (srv_launch(&haproxy_pid, argv, &self, dir, haproxy_log, haproxy_ready, NULL,
                   "haproxy") != 0) {
        srv_note_log(haproxy_log);
        haproxy_pid = -1;
        return -1;
    }
    return 0;
}

/* ======================================================================
 * Tycho instances
 * ====================================================================== */

/* Starts a process for slot i on its port (0 the first time), with a new access log. */
static int start_instance(struct instance *in, struct server *proc)
{
    char port[16], log[128];
    const char *args[] = {"--host", "127.0.0.1", "--port", port, "--reuseport",
                          "--workers", "2", "--health", "/healthz",
                          "--trusted-proxies", "127.0.0.1/32", "--access-log", log,
                          app_dir, NULL};

    snprintf(port, sizeof port, "%d", in->port);
    snprintf(log, sizeof log, "%s/%s-%d.log", dir, in->name, ++in->starts);
    setenv("CLUSTER_INSTANCE", in->name, 1);
    if (server_start(proc, args) < 0)
        return -1;
    in->port = proc->port;
    return 0;
}

/* GET /healthz on the instance's port answers 200 (whichever process takes it). */
static int healthy(int port)
{
    struct response r;
    int good;

    fetch(port, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    good = r.status == 200;
    response_free(&r);
    return good;
}

/* ======================================================================
 * Requests from the client address
 * ====================================================================== */

/*
 * One request from CLIENT_ADDR to port on a fresh connection; r filled.
 * Returns r->status (0: no response).
 */
static int ask(int port, const char *req, struct response *r)
{
    struct client c;

    memset(r, 0, sizeof *r);
    if (client_connect_from(&c, port, CLIENT_ADDR) < 0)
        return 0;
    exchange(&c, req, r);
    client_close(&c);
    return r->status;
}

/* POST /login as name to port; the session cookie ("tycho_session=...") into cookie. */
static int login(int port, const char *name, char *cookie, size_t cap, char *body, size_t bcap)
{
    char req[512];
    struct response r;
    const char *set, *end;

    cookie[0] = body[0] = '\0';
    snprintf(req, sizeof req,
             "POST /login HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
             "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %zu\r\n\r\n"
             "name=%s",
             strlen("name=") + strlen(name), name);
    if (ask(port, req, &r) == 200 && (set = header_get(&r, "Set-Cookie")) &&
        strncmp(set, "tycho_session=", 14) == 0) {
        end = set + strcspn(set, ";");
        snprintf(cookie, cap, "%.*s", (int)(end - set), set);
        snprintf(body, bcap, "%s", r.body ? r.body : "");
    } else {
        dump_response(&r);
    }
    response_free(&r);
    return cookie[0] ? 0 : -1;
}

/* GET /me on port with cookie (and extra header lines); the body into out. */
static void me(int port, const char *cookie, const char *extra, char *out, size_t cap)
{
    char req[1024];
    struct response r;

    snprintf(req, sizeof req, "GET /me HTTP/1.1\r\nHost: t\r\nCookie: %s\r\n%s"
             "Connection: close\r\n\r\n", cookie, extra);
    out[0] = '\0';
    if (ask(port, req, &r) == 200)
        snprintf(out, cap, "%s", r.body);
    else
        dump_response(&r);
    response_free(&r);
}

/* ======================================================================
 * The load
 * ====================================================================== */

/* A load client: a child process sending GET /me from CLIENT_ADDR to a port. */
struct load {
    pid_t pid;                    /* -1 when not running */
    int stop_fd;                  /* write end; closing it stops the client; -1 when closed */
    char out[128];                /* its report: DIR/load-K.out */
};

/* What a group of load clients reports, summed. */
struct tally {
    long sent, good, failed, by[2];
    int reports;                  /* clients whose last line was read */
};

/* The clients sending through HAProxy. */
static struct load loads[LOAD_CLIENTS];

/*
 * The body of one load client: GET /me with the cookie to port until the
 * stop pipe closes, LOAD_MAX_PER_CLIENT requests or LOAD_MAX_MS.
 * keep_alive: one connection for as long as it lasts; else a connection per
 * request. A request fails unless it gets a 200 "ada 127.0.0.2 http appN"; it is
 * never sent again. Prints each failure (the first 20) and last the line
 * "sent S ok O failed F app1 A app2 B".
 */
static void load_client(int stop_fd, int port, const char *cookie, int keep_alive)
{
    long long deadline = now_ms() + LOAD_MAX_MS;
    long sent = 0, good = 0, failed = 0, by[2] = {0, 0};
    char req[1024], want[64];
    struct client c = {.fd = -1};

    snprintf(req, sizeof req, "GET /me HTTP/1.1\r\nHost: t\r\nCookie: %s\r\n%s\r\n", cookie,
             keep_alive ? "" : "Connection: close\r\n");
    snprintf(want, sizeof want, "ada %s http app", CLIENT_ADDR);
    while (sent < LOAD_MAX_PER_CLIENT && now_ms() < deadline) {
        struct pollfd p = {stop_fd, POLLIN, 0};
        struct response r;
        const char *conn;
        int fine;

        if (poll(&p, 1, 0) != 0)
            break;                /* the test closed the pipe: stop */
        usleep(LOAD_PAUSE_US);
        sent++;
        if (c.fd < 0 && client_connect_from(&c, port, CLIENT_ADDR) < 0) {
            if (++failed <= 20)
                printf("request %ld: no connection\n", sent);
            continue;
        }
        exchange(&c, req, &r);
        fine = r.status == 200 && r.body && strncmp(r.body, want, strlen(want)) == 0;
        if (fine) {
            good++;
            by[strcmp(r.body + strlen(want), "1") == 0 ? 0 : 1]++;
        } else if (++failed <= 20) {
            printf("request %ld: status %d%s, body \"%.100s\"\n", sent, r.status,
                   c.reset ? " (connection reset)" : c.closed ? " (connection closed)" : "",
                   r.body ? r.body : "");
        }
        conn = header_get(&r, "Connection");
        if (!keep_alive || !fine || c.closed || (conn && strcasestr(conn, "close")))
            client_close(&c);
        response_free(&r);
    }
    client_close(&c);
    printf("sent %ld ok %ld failed %ld app1 %ld app2 %ld\n", sent, good, failed, by[0], by[1]);
    fflush(stdout);
}

/* Starts load client k against port. 0, or -1. */
static int start_client(int k, int port, const char *cookie, int keep_alive)
{
    struct load *l = &loads[k];
    pid_t parent = getpid();
    int fds[2], out;

    snprintf(l->out, sizeof l->out, "%s/load-%d.out", dir, k + 1);
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    if ((out = open(l->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    fflush(stdout);
    l->pid = fork();
    if (l->pid == 0) {
        /* Only the test may hold the write ends, or closing one would stop no one. */
        close(fds[1]);
        for (int i = 0; i < LOAD_CLIENTS; i++)
            if (loads[i].stop_fd >= 0)
                close(loads[i].stop_fd);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        running_pid = -1;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        dup2(out, 1);
        load_client(fds[0], port, cookie, keep_alive);
        _exit(0);
    }
    close(fds[0]);
    close(out);
    l->stop_fd = fds[1];
    return l->pid > 0 ? 0 : -1;
}

/* Stops load clients from .. to-1 and adds their reports into t (zeroed first). */
static void stop_clients(int from, int to, struct tally *t)
{
    memset(t, 0, sizeof *t);
    for (int i = from; i < to; i++)
        if (loads[i].stop_fd >= 0) {
            close(loads[i].stop_fd);
            loads[i].stop_fd = -1;
        }
    for (int i = from; i < to; i++) {
        long sent, good, failed, a, b;
        char *text, *last;

        if (loads[i].pid <= 0)
            continue;
        if (!srv_wait_exit(loads[i].pid, 30000, NULL))
            srv_kill(&loads[i].pid);
        loads[i].pid = -1;
        text = slurp(loads[i].out, NULL);
        last = text ? strstr(text, "\nsent ") : NULL;
        last = last ? last + 1 : text && strncmp(text, "sent ", 5) == 0 ? text : NULL;
        if (text && last != text)
            note("load client %d:\n%.*s", i + 1, last ? (int)(last - text) : 4000, text);
        if (last && sscanf(last, "sent %ld ok %ld failed %ld app1 %ld app2 %ld", &sent, &good,
                           &failed, &a, &b) == 5) {
            t->sent += sent;
            t->good += good;
            t->failed += failed;
            t->by[0] += a;
            t->by[1] += b;
            t->reports++;
        }
        free(text);
    }
}

/* ======================================================================
 * The steps
 * ====================================================================== */

/* Waits until HAProxy reports server sv DOWN. 1, or 0 after UP_WAIT_MS. */
static int wait_down(const char *sv)
{
    long long deadline = now_ms() + UP_WAIT_MS;
    struct stat_row r;

    while (now_ms() < deadline) {
        if (stat_of("tycho", sv, &r) == 0 && strncmp(r.status, "DOWN", 4) == 0)
            return 1;
        sleep_ms(20);
    }
    note("HAProxy: %s is \"%s\" after %d ms", sv, r.status, UP_WAIT_MS);
    return 0;
}

/*
 * A restart: SIGTERM while a request (GET /slow, 2.5 s) is in flight on the
 * instance; HAProxy's checks take it out while it drains; the request is
 * answered; it exits 0; it starts again on its port and HAProxy sees it up.
 */
static void restart(struct instance *in)
{
    struct cost before;
    struct client slow;
    struct response r;
    char ctx[64];

    snprintf(ctx, sizeof ctx, "restart %s", in->name);
    cost_now(&before);
    if (!ok(client_connect_from(&slow, in->port, CLIENT_ADDR) == 0 &&
                client_sends(&slow, "GET /slow HTTP/1.1\r\nHost: t\r\n\r\n") == 0,
            what(ctx, "a slow request is sent")))
        return;
    sleep_ms(200);                /* into its handler */
    kill(in->proc.pid, SIGTERM);
    ok(wait_down(in->name), what(ctx, "HAProxy's checks take it out while it drains"));
    read_response(&slow, &r, 0);
    ok(r.status == 200 && r.body && strcmp(r.body, "slow done") == 0,
       what(ctx, "the request in flight at SIGTERM is answered"));
    response_free(&r);
    client_close(&slow);
    is_int(server_stop(&in->proc), 0, what(ctx, "it exits 0"));
    server_cleanup(&in->proc);
    if (!ok(start_instance(in, &in->proc) == 0, what(ctx, "started again on port %d",
                                                      in->port)))
        return;
    ok(healthy(in->port), what(ctx, "--health answers 200"));
    ok(wait_up(in->name), what(ctx, "HAProxy sees it up"));
    note_cost(ctx, &before);
}

/*
 * Waits (bounded) for whatever comes back on fd, a request sent. 1 when it
 * is a 200, 0 when the connection was reset or closed without one.
 */
static int answered_200(int fd)
{
    char buf[4096];
    size_t len = 0;
    long long deadline = now_ms() + io_timeout_ms;

    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        ssize_t n;

        if (now_ms() > deadline || poll(&p, 1, 100) < 0)
            break;
        if (!(p.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len + 1 >= sizeof buf)
            break;
    }
    buf[len] = '\0';
    return strncmp(buf, "HTTP/1.1 200 ", 13) == 0;
}

#define QUEUED 40   /* connections made while the old process is frozen */

/*
 * An upgrade in place: a new process beside the running one on the same
 * port (--reuseport), then SIGTERM to the old. To see what happens to
 * connections in the old one's accept queue when it stops, the old one is
 * frozen (SIGSTOP) for a moment first: the kernel goes on completing the
 * connections it gives the old socket, HAProxy's and QUEUED of the test's
 * own straight to the port, which wait in its queue; then it gets SIGTERM
 * and SIGCONT. The test's connections show what a client without a
 * balancer sees (printed, not checked: docs/deploy.md, "What the balancer
 * covers"); HAProxy's must all be answered, the load's check.
 */
static void upgrade(struct instance *in, const char *cookie)
{
    struct client queued[QUEUED];
    struct server fresh;
    struct cost before;
    char ctx[64], req[512], migrate[32] = "?";
    int made = 0, good = 0;
    FILE *f;

    snprintf(ctx, sizeof ctx, "upgrade %s with --reuseport", in->name);
    snprintf(req, sizeof req, "GET /me HTTP/1.1\r\nHost: t\r\nCookie: %s\r\n"
             "Connection: close\r\n\r\n", cookie);
    cost_now(&before);
    if (!ok(start_instance(in, &fresh) == 0, what(ctx, "a new process starts on port %d",
                                                   in->port)))
        return;
    ok(healthy(in->port), what(ctx, "--health answers 200 with both listening"));
    kill(in->proc.pid, SIGSTOP);
    for (int i = 0; i < QUEUED; i++) {
        if (client_connect_from(&queued[made], in->port, CLIENT_ADDR) < 0)
            break;
        if (client_sends(&queued[made], req) < 0) {
            client_close(&queued[made]);
            break;
        }
        made++;
    }
    sleep_ms(300);
    kill(in->proc.pid, SIGTERM);
    kill(in->proc.pid, SIGCONT);
    for (int i = 0; i < made; i++) {
        good += answered_200(queued[i].fd);
        client_close(&queued[i]);
    }
    is_int(server_stop(&in->proc), 0, what(ctx, "SIGTERM to the old process: it exits 0"));
    server_cleanup(&in->proc);
    in->proc = fresh;
    running_pid = fresh.pid;
    ok(wait_up(in->name), what(ctx, "HAProxy sees the instance up"));
    if ((f = fopen("/proc/sys/net/ipv4/tcp_migrate_req", "r"))) {
        if (fgets(migrate, sizeof migrate, f))
            srv_chomp(migrate);
        fclose(f);
    }
    note("%s: of %d connections made straight to the port while the old process was frozen, "
         "%d were answered and %d reset: those the kernel had queued for the old socket when "
         "it closed (net.ipv4.tcp_migrate_req = %s)", ctx, made, good, made - good, migrate);
    note_cost(ctx, &before);
}

/* Every /me and /login line of every access log names CLIENT_ADDR. */
static void check_access_logs(void)
{
    for (int i = 0; i < 2; i++) {
        long lines = 0, wrong = 0;

        for (int k = 1; k <= inst[i].starts; k++) {
            char path[128], *text, *line, *save = NULL;

            snprintf(path, sizeof path, "%s/%s-%d.log", dir, inst[i].name, k);
            if (!(text = slurp(path, NULL)))
                continue;
            for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                if (!strstr(line, "\"GET /me ") && !strstr(line, "\"POST /login "))
                    continue;
                lines++;
                if (strncmp(line, CLIENT_ADDR " ", strlen(CLIENT_ADDR) + 1) != 0 &&
                    ++wrong <= 5)
                    note("%s: %s", path, line);
            }
            free(text);
        }
        ok(lines > 0 && wrong == 0,
           what(inst[i].name, "its access logs show the client %s on all %ld /me and /login "
                "lines (%ld other)", CLIENT_ADDR, lines, wrong));
    }
}

/* srv_launch()'s readiness check for nginx: its port takes a connection. */
static int port_open(const void *ctx)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), up;

    sa.sin_port = htons((unsigned short)*(const int *)ctx);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    up = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (fd >= 0)
        close(fd);
    return up;
}

/* Replaces the first from in *text (malloc'd) with to. 0, or -1 when from is not there. */
static int replace(char **text, const char *from, const char *to)
{
    char *at = strstr(*text, from), *out;
    size_t head, len;

    if (!at)
        return -1;
    head = (size_t)(at - *text);
    len = strlen(*text) - strlen(from) + strlen(to);
    if (!(out = malloc(len + 1)))
        return -1;
    snprintf(out, len + 1, "%.*s%s%s", (int)head, *text, to, at + strlen(from));
    free(*text);
    *text = out;
    return 0;
}

/*
 * nginx instead of HAProxy, when it is installed (NGINX, default
 * /usr/sbin/nginx): docs/deploy.md's nginx block with its addresses made
 * loopback ones, in an http block of the test's own. Requests from
 * CLIENT_ADDR reach both instances with the client's address; with one
 * instance stopped, every request is passed to the other.
 */
static void with_nginx(const char *top, const char *cookie)
{
    const char *bin = getenv("NGINX") ? getenv("NGINX") : "/usr/sbin/nginx";
    char path[256], conf[128], a[64], b[64], listen[64], want[64], body[256], *doc, *block;
    const char *argv[] = {bin, "-p", dir, "-c", conf, NULL};
    pid_t pid = -1;
    int port, seen[2] = {0, 0}, all = 1;
    FILE *f;

    if (access(bin, X_OK) != 0) {
        note("nginx: %s is not installed, so docs/deploy.md's nginx block is not run here "
             "(Debian: apt-get install nginx)", bin);
        return;
    }
    snprintf(path, sizeof path, "%s/docs/deploy.md", top);
    doc = slurp(path, NULL);
    block = doc ? fenced_block(doc, "```nginx") : NULL;
    free(doc);
    if (!ok(block != NULL, "nginx: docs/deploy.md has an nginx block"))
        return;
    port = srv_free_port();
    snprintf(listen, sizeof listen, "listen 127.0.0.1:%d;", port);
    snprintf(a, sizeof a, "127.0.0.1:%d", inst[0].port);
    snprintf(b, sizeof b, "127.0.0.1:%d", inst[1].port);
    if (!ok(replace(&block, "listen 80;", listen) == 0 &&
                replace(&block, "10.0.0.11:8080", a) == 0 &&
                replace(&block, "10.0.0.12:8080", b) == 0,
            "nginx: the block listens on port 80 and names 10.0.0.11:8080 and 10.0.0.12:8080")) {
        free(block);
        return;
    }
    snprintf(conf, sizeof conf, "%s/nginx.conf", dir);
    if ((f = fopen(conf, "w"))) {
        fprintf(f, "daemon off;\npid %s/nginx.pid;\nerror_log %s/nginx.log;\nevents {}\n"
                "http {\naccess_log off;\nclient_body_temp_path %s;\nproxy_temp_path %s;\n"
                "fastcgi_temp_path %s;\nuwsgi_temp_path %s;\nscgi_temp_path %s;\n%s}\n",
                dir, dir, dir, dir, dir, dir, dir, block);
        fclose(f);
    }
    free(block);
    snprintf(path, sizeof path, "%s/nginx.out", dir);
    if (!ok(srv_launch(&pid, argv, &self, dir, path, port_open, &port, "nginx") == 0,
            "nginx: starts with the doc's block")) {
        srv_note_log(path);
        return;
    }
    snprintf(want, sizeof want, "ada %s http app", CLIENT_ADDR);
    for (int i = 0; i < 20; i++) {
        me(port, cookie, SPOOFED, body, sizeof body);
        all &= strncmp(body, want, strlen(want)) == 0;
        if (strncmp(body, want, strlen(want)) == 0)
            seen[strcmp(body + strlen(want), "1") == 0 ? 0 : 1] = 1;
    }
    ok(all, "nginx: every request answered with the session's user and the client's address");
    ok(seen[0] && seen[1], "nginx: both instances answer");
    is_int(server_stop(&inst[1].proc), 0, "nginx: app2 stops (exit 0)");
    server_cleanup(&inst[1].proc);
    all = 1;
    for (int i = 0; i < 20; i++) {
        me(port, cookie, "", body, sizeof body);
        all &= strcmp(body, "ada 127.0.0.2 http app1") == 0;
    }
    ok(all, "nginx: with app2 stopped, every request is passed to app1 (proxy_next_upstream)");
    ok(start_instance(&inst[1], &inst[1].proc) == 0, "nginx: app2 starts again");
    is_int(srv_signal_stop(&pid, SIGQUIT, "nginx"), 0, "nginx: stops (exit 0)");
}

static void run(const char *top)
{
    char cookie[256], cookie2[256], body[256], want[128];
    struct tally load;
    struct stat_row fe;
    int started = 0;

    for (int i = 0; i < 2; i++)
        if (!ok(start_instance(&inst[i], &inst[i].proc) == 0, what(inst[i].name, "starts")))
            return;
    if (!ok(start_haproxy(top) == 0, "HAProxy starts with contrib/haproxy.cfg and sees both "
            "instances up"))
        return;

    /* A session made on one instance is good on the other: directly, no balancer. */
    ok(login(inst[1].port, "bob", cookie2, sizeof cookie2, body, sizeof body) == 0,
       "log in on app2 directly");
    me(inst[0].port, cookie2, "", body, sizeof body);
    is_str(body, "bob 127.0.0.2 http app1", "the session made on app2 is good on app1");

    /* Through HAProxy: the client's address comes from X-Forwarded-For. */
    if (!ok(login(lb_port, "ada", cookie, sizeof cookie, body, sizeof body) == 0,
            "log in through HAProxy"))
        return;
    ok(starts(body, "logged in on app"), "the login was served by an instance");
    me(lb_port, cookie, "", body, sizeof body);
    ok(starts(body, "ada 127.0.0.2 http app"),
       "through HAProxy: the session's user and the client's address (127.0.0.2)");
    me(lb_port, cookie, SPOOFED, body, sizeof body);
    ok(starts(body, "ada 127.0.0.2 http app"),
       "an X-Forwarded-For or X-Forwarded-Proto the client sent itself is not taken");

    /* Half the clients keep their connection to HAProxy, half make one per request. */
    for (int i = 0; i < LOAD_CLIENTS; i++)
        started += start_client(i, lb_port, cookie, i % 2 == 0) == 0;
    if (!ok(started == LOAD_CLIENTS, "the load clients start"))
        return;
    sleep_ms(1000);
    restart(&inst[0]);
    restart(&inst[1]);
    upgrade(&inst[0], cookie);
    sleep_ms(1000);
    stop_clients(0, LOAD_CLIENTS, &load);
    note("the load: %ld requests through HAProxy (app1 answered %ld, app2 %ld)", load.sent,
         load.by[0], load.by[1]);
    is_int(load.reports, LOAD_CLIENTS, "every load client reports");
    is_int(load.failed, 0, "no request of the load failed across two restarts and an upgrade");
    ok(load.sent > 1000, what("the load", "%ld requests (over 1000)", load.sent));
    ok(load.by[0] > 0 && load.by[1] > 0, "both instances served the load");
    if (stat_of("www", "FRONTEND", &fe) == 0) {
        note("HAProxy's frontend: %lld requests, %lld answered 5xx", fe.req_tot, fe.hrsp_5xx);
        is_int(fe.hrsp_5xx, 0, "HAProxy answered no 5xx");
    }

    /* The sessions outlived every process that served them. */
    for (int i = 0; i < 2; i++) {
        snprintf(want, sizeof want, "ada 127.0.0.2 http %s", inst[i].name);
        me(inst[i].port, cookie, "", body, sizeof body);
        is_str(body, want, what(inst[i].name, "after the restarts, the session is still good"));
    }
    me(lb_port, cookie2, "", body, sizeof body);
    ok(starts(body, "bob 127.0.0.2 http app"),
       "after the restarts, the session made on app2 is good through HAProxy");

    with_nginx(top, cookie);

    /* Stopping writes out what the access logs hold. */
    for (int i = 0; i < 2; i++) {
        is_int(server_stop(&inst[i].proc), 0, what(inst[i].name, "stops (exit 0)"));
        server_cleanup(&inst[i].proc);
    }
    check_access_logs();
}

static void stop_all(void)
{
    for (int i = 0; i < LOAD_CLIENTS; i++) {
        if (loads[i].stop_fd >= 0)
            close(loads[i].stop_fd);
        if (loads[i].pid > 0)
            srv_kill(&loads[i].pid);
    }
    if (haproxy_pid > 0 && srv_signal_stop(&haproxy_pid, SIGUSR1, "haproxy") != 0)
        srv_note_log(haproxy_log);
    for (int i = 0; i < 2; i++) {
        if (inst[i].proc.pid > 0)
            is_int(server_stop(&inst[i].proc), 0, what(inst[i].name, "stops (exit 0)"));
        server_cleanup(&inst[i].proc);
    }
    redis_stop(&redis);
}

int main(int argc, char **argv)
{
    const char *top;
    char url[64], path[256], *doc = NULL, *cfg = NULL, *shown = NULL;

    if (suite_setup(argc, argv))
        return 2;
    if (!(top = realpath(fixture_dir, NULL))) {
        fprintf(stderr, "%s: %s\n", fixture_dir, strerror(errno));
        return 2;
    }
    for (int i = 0; i < LOAD_CLIENTS; i++)
        loads[i] = (struct load){.pid = -1, .stop_fd = -1};

    /* The doc shows the file the test runs. */
    snprintf(path, sizeof path, "%s/docs/deploy.md", top);
    doc = slurp(path, NULL);
    snprintf(path, sizeof path, "%s/contrib/haproxy.cfg", top);
    cfg = slurp(path, NULL);
    shown = doc ? fenced_block(doc, "```haproxy") : NULL;
    ok(cfg && shown && strcmp(cfg, shown) == 0,
       "docs/deploy.md shows contrib/haproxy.cfg as it is (its ```haproxy block)");
    free(doc);
    free(cfg);
    free(shown);

    if (!ok(access(HAPROXY, X_OK) == 0, "HAProxy is installed (Debian: apt-get install haproxy; "
            "make test-cluster does)"))
        return test_summary();
    self = (struct srv_user){0, geteuid(), getegid()};
    if (!ok(srv_make_dir(dir, sizeof dir, "cluster", &self) == 0, "a temp dir"))
        return test_summary();
    snprintf(app_dir, sizeof app_dir, "%s/app", dir);
    snprintf(path, sizeof path, "%s/app.lua", app_dir);
    if (ok(mkdir(app_dir, 0755) == 0 && write_file(path, app_lua) == 0, "the app is written") &&
        ok(redis_start(&redis) == 0, "Redis starts")) {
        snprintf(url, sizeof url, "redis://127.0.0.1:%d/0", redis.port);
        setenv("REDIS_URL", url, 1);
        /* Both instances sign with the same secret: a throwaway value for this test only. */
        setenv("TYCHO_SECRET", "cluster-test-only-not-a-real-secret-0123456789", 1);
        run(top);
    }
    stop_all();
    if (getenv("TYCHO_CLUSTER_KEEP"))
        note("TYCHO_CLUSTER_KEEP: the logs are left in %s", dir);
    else
        srv_remove_tree(dir);
    free((char *)top);
    free(wrap_copy);
    return test_summary();
}
