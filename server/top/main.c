/*
 * main.c: start-up and shutdown order, signals, and the --request mode.
 *
 * Serve: parse flags; load the scripts once in a scratch generation (so a
 * load error is reported once, with file:line, before anything starts);
 * bind; start the workers (each loads its own generation) and wait for all;
 * tell them to accept; print the address and routes; run the main loop
 * until SIGINT/SIGTERM; then shut the sockets down, stop and join the
 * workers, close the sockets, free everything in reverse order.
 */
#include "http/access.h"
#include "lua/bind.h"
#include "core/config.h"
#include "http/conn.h"
#include "http/http.h"
#include "top/listener.h"
#include "http/tls.h"
#include "top/migrate.h"
#include "top/notify.h"
#include "net/sqlite.h"
#include "top/reload.h"
#include "top/scrape.h"
#include "core/log.h"
#include "core/metrics.h"
#include "http/router.h"
#include "core/shdict.h"
#include "top/testing.h"
#include "lua/gen.h"
#include "top/watch.h"
#include "top/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The address a socket is bound to, as text, into host; false when it cannot be had. */
static bool socket_host(int fd, char *host, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    const void *addr;

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return false;
    addr = ss.ss_family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr
                                    : (const void *)&((struct sockaddr_in *)&ss)->sin_addr;
    return inet_ntop(ss.ss_family, addr, host, (socklen_t)cap) != NULL;
}

static void print_route(const char *method, const char *path, int handler_id, void *arg)
{
    (void)handler_id;
    (void)arg;
    printf("  %-7s %s\n", method, path);
}

/* Loads the TLS certificates again; on an error the old ones stay, and the log says why. */
static void reload_certs(void)
{
    char err[TYCHO_ERR_LEN];

    if (!tycho_tls_enabled())
        return;
    if (tycho_tls_reload(err) < 0)
        tycho_log_error("%s; the certificates loaded before stay in use", err);
    else
        tycho_log_info("TLS certificates reloaded");
}

/* --watch: a certificate or key changed. */
static void on_cert_change(void *arg)
{
    (void)arg;
    reload_certs();
}

/*
 * --watch: watches the directories of the certificates and keys (the
 * directory itself for --tls-cert DIR), each once; at most TYCHO_TLS_WATCHES.
 */
#define TYCHO_TLS_WATCHES 8
static int watch_certs(struct event_base *base, const struct tycho_config *cfg,
                       struct tycho_watch **watches, char *err)
{
    char dirs[TYCHO_TLS_WATCHES][4096];
    int n = 0;

    for (int i = 0; i < cfg->tls_ncerts + cfg->tls_nkeys; i++) {
        const char *path = i < cfg->tls_ncerts ? cfg->tls_certs[i]
                                               : cfg->tls_keys[i - cfg->tls_ncerts];
        struct stat st;
        char dir[4096];
        const char *slash = strrchr(path, '/');
        bool seen = false;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            snprintf(dir, sizeof(dir), "%s", path);
        else if (slash)
            snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
        else
            snprintf(dir, sizeof(dir), ".");
        for (int j = 0; j < n && !seen; j++)
            seen = strcmp(dirs[j], dir) == 0;
        if (seen)
            continue;
        if (n == TYCHO_TLS_WATCHES) {
            tycho_log_warn("--watch: certificates in more than %d directories: the others are "
                           "reloaded by SIGHUP only", TYCHO_TLS_WATCHES);
            break;
        }
        memcpy(dirs[n], dir, sizeof(dir));
        if (!(watches[n] = tycho_watch_new(base, dir, NULL, on_cert_change, NULL, err)))
            return TYCHO_ERR;
        n++;
    }
    return TYCHO_OK;
}

static void on_hangup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    tycho_log_info("SIGHUP: reloading the scripts%s",
                   tycho_tls_enabled() ? " and certificates" : "");
    tycho_notify("RELOADING=1");
    reload_certs();
    tycho_reload(arg);
    tycho_notify("READY=1");
}

static void on_usr1(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    tycho_log_reopen();
    tycho_access_reopen();
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    tycho_log_info("%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    tycho_notify("STOPPING=1");
    event_base_loopbreak(arg);
}

static int serve(struct tycho_config *cfg)
{
    struct tycho_shared shared = {.cfg = cfg};
    struct tycho_listener listener = {.fd = -1, .tls_fd = -1};
    struct tycho_worker *workers = NULL;
    struct event_base *base = NULL;
    struct event *sigint = NULL, *sigterm = NULL, *sighup = NULL, *sigusr1 = NULL;
    struct tycho_watch *watch = NULL, *cert_watch[TYCHO_TLS_WATCHES] = {NULL};
    struct tycho_reloader rl = {.cfg = cfg, .shared = &shared, .generation = 1};
    struct tycho_gen *scratch = NULL;
    struct tycho_scrape *scrape = NULL;
    char err[TYCHO_ERR_LEN];
    int rc = 1;

    /*
     * Until libevent handles them (below), a SIGHUP or SIGUSR1 would end the
     * process by its default action: ignore them while starting (the workers
     * load the scripts as they are anyway, and no log is open yet to reopen).
     */
    signal(SIGHUP, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);
    if (!(base = event_base_new())) {
        fprintf(stderr, "tycho: cannot create the main event loop\n");
        return 1;
    }
    /* Watching starts before the first load, so that no change during start-up is missed. */
    if (cfg->watch && !(watch = tycho_watch_new(base, cfg->dir, ".lua", tycho_reload, &rl, err))) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    if (!(scratch = tycho_gen_new(cfg->dir, 0, err))) {
        fprintf(stderr, "tycho: %s\n", err);
        goto out;
    }
    if (tycho_access_open(cfg, err) < 0) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    if (cfg->error_log && tycho_log_open(cfg->error_log, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    if (tycho_tls_load(cfg, err) < 0) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    if (cfg->watch && tycho_tls_enabled() && watch_certs(base, cfg, cert_watch, err) < 0) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    if (tycho_listener_bind(&listener, &shared, err) < 0) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    tycho_tls_set_port(listener.tls_fd >= 0 ? listener.tls_port : 0);
    atomic_store(&shared.generation, 1);
    tycho_metrics_set_shared(&shared);
    /* Signals first: one that arrives while the workers start is handled once the loop runs. */
    sigint = evsignal_new(base, SIGINT, on_stop_signal, base);
    sigterm = evsignal_new(base, SIGTERM, on_stop_signal, base);
    sighup = evsignal_new(base, SIGHUP, on_hangup, &rl);
    sigusr1 = evsignal_new(base, SIGUSR1, on_usr1, NULL);
    if (!sigint || !sigterm || !sighup || !sigusr1 || evsignal_add(sigusr1, NULL) < 0 ||
        evsignal_add(sigint, NULL) < 0 || evsignal_add(sigterm, NULL) < 0 ||
        evsignal_add(sighup, NULL) < 0) {
        fprintf(stderr, "tycho: cannot set up signals\n");
        goto out;
    }
    if (!(workers = tycho_workers_start(cfg->workers, &shared, err))) {
        fprintf(stderr, "tycho: %s\n", err);
        goto out;
    }
    rl.workers = workers;
    tycho_workers_accept(workers, cfg->workers);
    {
        char host[INET6_ADDRSTRLEN] = "";
        const char *open, *close;
        if (!listener.activated || !socket_host(listener.fd, host, sizeof(host)))
            snprintf(host, sizeof(host), "%s", cfg->host);
        open = strchr(host, ':') ? "[" : "";
        close = *open ? "]" : "";
        printf("tycho %s listening on http://%s%s%s:%d", TYCHO_VERSION, open, host, close,
               listener.port);
        if (listener.tls_fd >= 0)
            printf(" and https://%s%s%s:%d", open, host, close, listener.tls_port);
        printf(" (%d workers%s)\n", cfg->workers,
               listener.activated ? "; sockets from systemd" : "");
    }
    if (cfg->metrics_addr && !(scrape = tycho_scrape_new(base, cfg, err))) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    printf("routes:\n");
    tycho_router_each(tycho_gen_router(scratch), print_route, NULL);
    tycho_log_redirect();             /* --error-log: from here on, the log goes to the file */
    if (tycho_router_count(tycho_gen_router(scratch)) == 0)
        printf("  (none: no script in %s registered a route)\n", cfg->dir);
    fflush(stdout);
    tycho_reload_routes(&rl, tycho_gen_router(scratch)); /* out of memory: all new next time */
    tycho_gen_free(scratch);
    scratch = NULL;

    tycho_notify("READY=1");          /* listening, the workers started, the routes printed */
    event_base_dispatch(base);
    rc = 0;
out:
    tycho_scrape_free(scrape);
    tycho_watch_free(watch);
    for (int i = 0; i < TYCHO_TLS_WATCHES; i++)
        tycho_watch_free(cert_watch[i]);
    tycho_listener_stop(&listener);
    if (tycho_workers_stop(workers, cfg->workers) < 0) {
        /* A worker is stuck in Lua: nothing it owns can be freed safely. */
        tycho_log_error("exiting without the stuck worker(s)");
        _exit(1);
    }
    tycho_listener_dispose(&listener);
    tycho_listener_free_counts(&listener);
    tycho_tls_unload();               /* the workers' connections are closed */
    tycho_metrics_set_shared(NULL);
    {
        /*
         * Freeing the signal events gives the signals back their default
         * action: one now (an impatient second kill, a log rotation) would
         * end the process by the signal instead of status 0. The workers are gone,
         * so blocking them in this thread is enough; we are stopping anyway.
         */
        sigset_t stop_signals;
        sigemptyset(&stop_signals);
        sigaddset(&stop_signals, SIGTERM);
        sigaddset(&stop_signals, SIGINT);
        sigaddset(&stop_signals, SIGHUP);   /* their default actions end the process too */
        sigaddset(&stop_signals, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    }
    if (sigint)
        event_free(sigint);
    if (sigterm)
        event_free(sigterm);
    if (sighup)
        event_free(sighup);
    if (sigusr1)
        event_free(sigusr1);
    tycho_access_close();
    if (base)
        event_base_free(base);
    tycho_gen_free(scratch);
    tycho_reload_dispose(&rl);
    if (rc == 0)
        tycho_log_info("stopped");
    return rc;
}

/* Appends "K: V\r\n" for a --header argument; explains a bad one in err. */
static int add_request_header(struct tycho_buf *raw, const char *header, char *err)
{
    const char *colon = strchr(header, ':');

    if (!colon || colon == header || strpbrk(header, "\r\n")) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --header: expected 'Name: value', got \"%s\"",
                 header);
        return TYCHO_ERR;
    }
    if (strncasecmp(header, "content-length:", 15) == 0 ||
        strncasecmp(header, "transfer-encoding:", 18) == 0) {
        snprintf(err, TYCHO_ERR_LEN,
                 "tycho: --header: \"%.*s\" is set from --body; leave it out",
                 (int)(colon - header), header);
        return TYCHO_ERR;
    }
    if (tycho_buf_puts(raw, header) < 0 || tycho_buf_puts(raw, "\r\n") < 0) {
        snprintf(err, TYCHO_ERR_LEN, "tycho: --request: out of memory");
        return TYCHO_ERR;
    }
    return TYCHO_OK;
}

/* Builds the raw HTTP/1.1 request that --request describes. */
static int build_request(const struct tycho_config *cfg, struct tycho_buf *raw, char *err)
{
    const char *line = cfg->request_line, *space = strchr(line, ' ');
    int has_host = 0;
    char length[64];

    if (!space || space == line || space[1] != '/' || strpbrk(line, "\r\n") ||
        strchr(space + 1, ' ')) {
        snprintf(err, TYCHO_ERR_LEN,
                 "tycho: --request: expected 'METHOD /path?query', got \"%s\"", line);
        return TYCHO_ERR;
    }
    if (tycho_buf_append(raw, line, strlen(line)) < 0 ||
        tycho_buf_puts(raw, " HTTP/1.1\r\n") < 0)
        goto oom;
    for (int i = 0; i < cfg->request_nheaders; i++) {
        if (add_request_header(raw, cfg->request_headers[i], err) < 0)
            return TYCHO_ERR;
        has_host |= strncasecmp(cfg->request_headers[i], "host:", 5) == 0;
    }
    if (!has_host && tycho_buf_puts(raw, "Host: localhost\r\n") < 0)
        goto oom;
    snprintf(length, sizeof(length), "Content-Length: %zu\r\n\r\n",
             cfg->request_body ? strlen(cfg->request_body) : 0);
    if (tycho_buf_puts(raw, length) < 0 ||
        (cfg->request_body && tycho_buf_puts(raw, cfg->request_body) < 0))
        goto oom;
    return TYCHO_OK;
oom:
    snprintf(err, TYCHO_ERR_LEN, "tycho: --request: out of memory");
    return TYCHO_ERR;
}

/* --request: one request through the same parse/route/run path, no socket. */
static int run_request(struct tycho_config *cfg)
{
    struct tycho_shared shared = {.cfg = cfg};
    struct tycho_worker w = {0};
    struct tycho_buf raw = {0}, out = {0};
    char err[TYCHO_ERR_LEN];
    int rc = 2;

    if (build_request(cfg, &raw, err) < 0) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    rc = 1;
    if (tycho_worker_setup(&w, 0, &shared, err) < 0) {
        fprintf(stderr, "tycho: %s\n", err);
        goto out;
    }
    if (tycho_conn_run_local(&w.ctx, raw.data + raw.off, raw.len, &out, 0) < 0) {
        fprintf(stderr, "tycho: --request: out of memory\n");
        goto out_worker;
    }
    if (out.len && fwrite(out.data + out.off, 1, out.len, stdout) != out.len) {
        fprintf(stderr, "tycho: --request: cannot write the response\n");
        goto out_worker;
    }
    rc = fflush(stdout) == 0 ? 0 : 1;
out_worker:
    tycho_worker_teardown(&w);
out:
    tycho_buf_dispose(&raw);
    tycho_buf_dispose(&out);
    return rc;
}

/* --check: loads the scripts as a worker would, prints the routes or the error. */
static int check(const struct tycho_config *cfg)
{
    char err[TYCHO_ERR_LEN];
    struct tycho_gen *g = tycho_gen_new(cfg->dir, 0, err);

    if (!g) {
        fprintf(stderr, "tycho: %s\n", err);
        return 1;
    }
    printf("%u scripts loaded from %s\nroutes:\n", tycho_gen_script_count(g), cfg->dir);
    tycho_router_each(tycho_gen_router(g), print_route, NULL);
    if (tycho_router_count(tycho_gen_router(g)) == 0)
        printf("  (none: no script in %s registered a route)\n", cfg->dir);
    tycho_gen_free(g);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* libevent's own messages (evdns's "nameserver ... has failed", say) go to Tycho's log. */
static void on_libevent_log(int severity, const char *msg)
{
    enum tycho_log_level level = severity == EVENT_LOG_ERR    ? TYCHO_LOG_ERROR
                                 : severity == EVENT_LOG_WARN ? TYCHO_LOG_WARN
                                 : severity == EVENT_LOG_MSG  ? TYCHO_LOG_INFO
                                                              : TYCHO_LOG_DEBUG;

    tycho_log(level, "libevent: %s", msg);
}

/* Bytes an app secret has at least (a shorter one could be guessed). */
#define SECRET_MIN 16

/*
 * The app's secret: the file --secret-file names (a trailing newline is not
 * part of it), or the variable TYCHO_SECRET; none is fine until something
 * signs. TYCHO_OK, or TYCHO_ERR with why.
 */
static int load_secret(const struct tycho_config *cfg, char *err)
{
    char buf[4096], from[TYCHO_ERR_LEN / 2];
    size_t len = 0;
    const char *env = getenv("TYCHO_SECRET");

    if (cfg->secret_file) {
        FILE *f = fopen(cfg->secret_file, "rb");
        snprintf(from, sizeof(from), "--secret-file %.200s", cfg->secret_file);
        if (!f) {
            snprintf(err, TYCHO_ERR_LEN, "%s: %s", from, strerror(errno));
            return TYCHO_ERR;
        }
        len = fread(buf, 1, sizeof(buf), f);
        if (ferror(f) || (len == sizeof(buf) && fgetc(f) != EOF)) {
            snprintf(err, TYCHO_ERR_LEN, "%s: %s", from,
                     ferror(f) ? strerror(errno) : "over 4096 bytes; a secret is 16 to 4096");
            fclose(f);
            return TYCHO_ERR;
        }
        fclose(f);
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
            len--;
    } else if (env) {
        snprintf(from, sizeof(from), "TYCHO_SECRET");
        len = strlen(env);
        if (len > sizeof(buf))
            len = sizeof(buf);
        memcpy(buf, env, len);
    } else {
        return TYCHO_OK;
    }
    if (len < SECRET_MIN) {
        snprintf(err, TYCHO_ERR_LEN, "%s: the secret must be %d bytes at least, got %zu (make "
                 "one with: head -c 32 /dev/urandom | base64)", from, SECRET_MIN, len);
        return TYCHO_ERR;
    }
    if (tycho_bind_set_secret(buf, len) < 0) {
        snprintf(err, TYCHO_ERR_LEN, "out of memory");
        return TYCHO_ERR;
    }
    return TYCHO_OK;
}

int main(int argc, char **argv)
{
    struct tycho_config cfg;
    char err[TYCHO_ERR_LEN];
    int rc = 0;

    if (tycho_config_parse(&cfg, argc, argv, err) < 0) {
        fprintf(stderr, "%s\n", err);
        tycho_config_dispose(&cfg);
        return 2;
    }
    /* Writes to a closed socket must fail with EPIPE, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    tycho_log_min_level = (enum tycho_log_level)cfg.log_level;
    event_set_log_callback(on_libevent_log);
    tycho_http_global_init(&cfg);
    tycho_shdict_default_bytes = cfg.shared_dict_bytes;
    /* Only the modes that load the scripts need it (--help, --version, new never do). */
    if (cfg.mode != TYCHO_MODE_HELP && cfg.mode != TYCHO_MODE_VERSION &&
        cfg.mode != TYCHO_MODE_NEW && load_secret(&cfg, err) < 0) {
        fprintf(stderr, "tycho: %s\n", err);
        tycho_config_dispose(&cfg);
        return 2;
    }
    if (tycho_metrics_init(cfg.mode == TYCHO_MODE_SERVE ? cfg.workers : 0,
                           (unsigned)cfg.metrics_max_series) < 0) {
        fprintf(stderr, "tycho: out of memory\n");
        tycho_config_dispose(&cfg);
        return 1;
    }
    /* The database threads, for modes that run handlers (they wait for work, idle). */
    if ((cfg.mode == TYCHO_MODE_SERVE || cfg.mode == TYCHO_MODE_REQUEST ||
         cfg.mode == TYCHO_MODE_TEST || cfg.mode == TYCHO_MODE_MIGRATE) &&
        tycho_sqlite_start((unsigned)cfg.db_threads, err) < 0) {
        fprintf(stderr, "tycho: %s\n", err);
        tycho_config_dispose(&cfg);
        return 1;
    }
    switch (cfg.mode) {
    case TYCHO_MODE_HELP:
        tycho_usage(stdout);
        break;
    case TYCHO_MODE_VERSION:
        printf("tycho %s\n", TYCHO_VERSION);
        break;
    case TYCHO_MODE_REQUEST:
        rc = run_request(&cfg);
        break;
    case TYCHO_MODE_SERVE:
        rc = serve(&cfg);
        break;
    case TYCHO_MODE_CHECK:
        rc = check(&cfg);
        break;
    case TYCHO_MODE_TEST:
        rc = tycho_test_run(&cfg);
        break;
    case TYCHO_MODE_NEW:
        rc = tycho_new_app(cfg.new_name);
        break;
    case TYCHO_MODE_MIGRATE:
        rc = tycho_migrate_run(&cfg);
        break;
    }
    tycho_sqlite_stop();              /* after the workers: no job is left to run */
    tycho_config_dispose(&cfg);
    tycho_shdict_free_all();
    tycho_metrics_free_all();
    return rc;
}
