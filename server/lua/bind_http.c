/*
 * bind_http.c: tycho.http, outbound HTTP and HTTPS from handlers, middleware
 * and timers: request{...}, get(url, opts), post(url, body, opts), and the
 * per-backend settings and counters, pool(backend, opts) and
 * stats(backend[, tls_opts]). The calls wait without blocking the worker
 * (tycho_task_wait); the pools and the TLS settings are net/upstream.c's.
 *
 * A call is a userdata holding the request bytes and the C call. The Lua
 * wrappers keep it in a local while the coroutine waits, so it lives as
 * long as the call can; its __gc frees what is left.
 */
#include "lua/bind.h"
#include "lua/task.h"
#include "lua/vm.h"
#include "http/http.h"
#include "net/tls_client.h"
#include "net/upstream.h"
#include "net/wire.h"

#include <lauxlib.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CALL_MT "tycho.http.call"
#define DEFAULT_TIMEOUT 60.0
#define MAX_HOST 255

struct http_call {
    struct tycho_wait w;            /* first: task.c's handle is this struct */
    struct tycho_upstreams *u;
    struct tycho_call_spec spec;
    struct tycho_call *call;        /* from the start until freed */
    bool started;
    char host[MAX_HOST + 1];
    char request[];                 /* spec.request points here */
};

/* ---- a call's life ------------------------------------------------------- */

static void on_call_done(struct tycho_call *c, void *arg)
{
    struct http_call *hc = arg;

    (void)c;
    tycho_task_wake(&hc->w);
}

static void wait_start(struct tycho_wait *w)
{
    struct http_call *hc = (struct http_call *)w;

    hc->started = true;
    hc->call = tycho_call_start(hc->u, &hc->spec, on_call_done, hc);
    if (!hc->call)
        tycho_task_wake(w);         /* out of memory: the result says so */
}

static void wait_cancel(struct tycho_wait *w)
{
    struct http_call *hc = (struct http_call *)w;

    tycho_call_free(hc->call);       /* closes its backend connection, leaves its queue */
    hc->call = NULL;
}

static int call_gc(lua_State *L)
{
    struct http_call *hc = luaL_checkudata(L, 1, CALL_MT);

    tycho_call_free(hc->call);
    hc->call = NULL;
    return 0;
}

/* ---- building the request -------------------------------------------------- */

/* Parses an http:// URL. NULL, or an error message (pushed on L). */
static const char *parse_url(lua_State *L, const char *url, size_t len, struct tycho_url *t)
{
    char err[TYCHO_ERR_LEN];

    if (tycho_url_parse(url, len, t, err, sizeof(err)) == TYCHO_OK)
        return NULL;
    lua_pushstring(L, err);
    return lua_tostring(L, -1);
}

/* A header value a request may carry: no CR, LF or NUL (they would split the request). */
static bool safe_value(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return false;
    return true;
}

/* Appends n bytes at *at when writing (out non-NULL); always counts them in *len. */
static void put(char *out, size_t *len, const char *s, size_t n)
{
    if (out)
        memcpy(out + *len, s, n);
    *len += n;
}

/*
 * Puts the headers table at idx ("Name: value\r\n" each; an array value
 * gives one line per element) at out + *len, or only counts them when out is
 * NULL. Sets *has_host. NULL, or an error message.
 */
static const char *put_headers(lua_State *L, int idx, char *out, size_t *len, bool *has_host)
{
    if (lua_isnil(L, idx))
        return NULL;
    if (!lua_istable(L, idx))
        return "headers must be a table of name = value";
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t name_len;
        const char *name;
        int n = 1;
        bool list = lua_istable(L, -1);
        if (lua_type(L, -2) != LUA_TSTRING)
            return "header names must be strings";
        name = lua_tolstring(L, -2, &name_len);
        if (!tycho_http_is_token(name, name_len))
            return lua_pushfstring(L, "header name '%s' is not a valid token", name);
        if (strcasecmp(name, "content-length") == 0 || strcasecmp(name, "transfer-encoding") == 0)
            return lua_pushfstring(L, "header %s is set from the body; do not give it", name);
        if (strcasecmp(name, "upgrade") == 0)
            return "header Upgrade: protocol upgrades are not supported";
        if (strcasecmp(name, "host") == 0) {
            if (*has_host)
                return "header Host is given twice";
            *has_host = true;
        }
        if (list)
            n = (int)lua_objlen(L, -1);
        for (int i = 1; i <= n; i++) {
            size_t value_len;
            const char *value;
            if (list)
                lua_rawgeti(L, -1, i);
            else
                lua_pushvalue(L, -1);
            if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
                return lua_pushfstring(L, "header %s: the value must be a string or a number",
                                       name);
            value = lua_tolstring(L, -1, &value_len);
            if (!safe_value(value, value_len))
                return lua_pushfstring(L, "header %s: the value has a CR, LF or NUL byte", name);
            put(out, len, name, name_len);
            put(out, len, ": ", 2);
            put(out, len, value, value_len);
            put(out, len, "\r\n", 2);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return NULL;
}

struct request_parts {
    const char *method;
    size_t method_len;
    const struct tycho_url *t;
    const char *body;               /* NULL: none */
    size_t body_len;
};

/* Puts the whole request at out (or counts it when out is NULL) in *len. NULL, or an error. */
static const char *put_request(lua_State *L, const struct request_parts *q, int headers_idx,
                               char *out, size_t *len)
{
    const struct tycho_url *t = q->t;
    bool has_host = false;
    const char *err;
    char line[64];

    *len = 0;
    put(out, len, q->method, q->method_len);
    put(out, len, " ", 1);
    put(out, len, t->path, t->path_len);
    if (t->query) {
        put(out, len, "?", 1);
        put(out, len, t->query, t->query_len);
    }
    put(out, len, " HTTP/1.1\r\n", 11);
    if ((err = put_headers(L, headers_idx, out, len, &has_host)))
        return err;
    if (!has_host) {
        bool v6 = strchr(t->host, ':') != NULL;
        put(out, len, "Host: ", 6);
        put(out, len, "[", v6);
        put(out, len, t->host, strlen(t->host));
        put(out, len, "]", v6);
        if (t->port != (t->https ? 443u : 80u))
            put(out, len, line, (size_t)snprintf(line, sizeof(line), ":%u", t->port));
        put(out, len, "\r\n", 2);
    }
    if (q->body || strcmp(q->method, "POST") == 0 || strcmp(q->method, "PUT") == 0 ||
        strcmp(q->method, "PATCH") == 0)
        put(out, len, line,
            (size_t)snprintf(line, sizeof(line), "Content-Length: %zu\r\n", q->body_len));
    put(out, len, "\r\n", 2);
    if (q->body)
        put(out, len, q->body, q->body_len);
    return NULL;
}

/* The TLS options a call or a pool may give. */
struct tls_given {
    struct tycho_tls_client_opts o;
    bool ca_file, client_cert, client_key, insecure_skip_verify;   /* given */
    bool any;
};

static const char *const tls_names[] = {"ca_file", "client_cert", "client_key",
                                        "insecure_skip_verify"};

static bool is_tls_name(const char *name)
{
    for (size_t i = 0; i < sizeof(tls_names) / sizeof(tls_names[0]); i++)
        if (strcmp(name, tls_names[i]) == 0)
            return true;
    return false;
}

/*
 * Reads the TLS options of the table at idx (nil: none) into g. NULL, or
 * the misuse (a string option that is not a string, the flag not a
 * boolean). The strings stay in the table, which the caller keeps.
 */
static const char *read_tls(lua_State *L, int idx, struct tls_given *g)
{
    const char **strs[] = {&g->o.ca_file, &g->o.client_cert, &g->o.client_key};
    bool *given[] = {&g->ca_file, &g->client_cert, &g->client_key};

    memset(g, 0, sizeof(*g));
    if (!lua_istable(L, idx))
        return NULL;
    for (int i = 0; i < 3; i++) {
        lua_getfield(L, idx, tls_names[i]);
        if (!lua_isnil(L, -1)) {
            if (lua_type(L, -1) != LUA_TSTRING) {
                lua_pop(L, 1);
                return lua_pushfstring(L, "%s must be a string (a file name)", tls_names[i]);
            }
            *strs[i] = lua_tostring(L, -1);
            *given[i] = g->any = true;
        }
        lua_pop(L, 1);
    }
    lua_getfield(L, idx, "insecure_skip_verify");
    if (!lua_isnil(L, -1)) {
        if (!lua_isboolean(L, -1)) {
            lua_pop(L, 1);
            return "insecure_skip_verify must be true or false";
        }
        g->o.insecure_skip_verify = lua_toboolean(L, -1);
        g->insecure_skip_verify = g->any = true;
    }
    lua_pop(L, 1);
    return NULL;
}

/*
 * The TLS setting of an https backend for the options given: each one given
 * replaces the backend's own pool's (tycho.http.pool). NULL with why in err.
 */
static struct tycho_tls_client *resolve_tls(struct tycho_upstreams *u, const char *host,
                                            unsigned port, const struct tls_given *g, char *err,
                                            size_t cap)
{
    struct tycho_pool_opts o;
    struct tycho_pool_stats s;
    struct tycho_tls_client_opts to = {NULL, NULL, NULL, false};

    tycho_upstreams_inspect(u, true, host, port, NULL, &o, &s);
    if (o.tls)
        tycho_tls_client_opts_of(o.tls, &to);
    if (g->ca_file)
        to.ca_file = g->o.ca_file;
    if (g->client_cert) {
        to.client_cert = g->o.client_cert;
        to.client_key = NULL;       /* a new certificate does not take the old one's key */
    }
    if (g->client_key)
        to.client_key = g->o.client_key;
    if (g->insecure_skip_verify)
        to.insecure_skip_verify = g->o.insecure_skip_verify;
    return tycho_upstreams_tls(u, &to, err, cap);
}

static bool method_is_idempotent(const char *m)
{
    static const char *const list[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"};

    for (size_t i = 0; i < sizeof(list) / sizeof(list[0]); i++)
        if (strcmp(m, list[i]) == 0)
            return true;
    return false;
}

/*
 * new_call(fn, url, method, headers, body, timeout, opts) -> call, or false
 * and a message (misuse: the Lua wrapper raises it at the caller's line),
 * or nil and a message (the call's TLS setting could not be loaded: the
 * wrapper returns them). opts: the table with the TLS options, or nil.
 */
static int new_call(lua_State *L)
{
    const char *fn = luaL_checkstring(L, 1);
    size_t url_len, method_len, body_len = 0, req_len;
    const char *url = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &url_len) : NULL;
    const char *method = luaL_optlstring(L, 3, "GET", &method_len);
    const char *body = NULL, *err = NULL;
    double timeout = DEFAULT_TIMEOUT;
    struct tycho_url t;
    struct request_parts q;
    struct http_call *hc;
    struct tls_given g;
    struct tycho_tls_client *tls = NULL;
    char tls_err[TYCHO_ERR_LEN];

    lua_settop(L, 7);
    if ((err = tycho_task_refusal(L, TYCHO_PLACE_WAIT)))
        ;
    else if (!url)
        err = "url must be a string";
    else if ((err = parse_url(L, url, url_len, &t)))
        ;
    else if (!tycho_http_is_token(method, method_len))
        err = lua_pushfstring(L, "method '%s' is not a valid token", method);
    else if (strcmp(method, "CONNECT") == 0)
        err = "method CONNECT is not supported";
    else if (!lua_isnil(L, 5) && !(body = lua_type(L, 5) == LUA_TSTRING
                                              ? lua_tolstring(L, 5, &body_len) : NULL))
        err = "body must be a string";
    else if (!lua_isnil(L, 6) && (!lua_isnumber(L, 6) || !((timeout = lua_tonumber(L, 6)) > 0) ||
                                  timeout > 31536000))
        err = "timeout must be seconds, more than 0 and at most 31536000";
    else if ((err = read_tls(L, 7, &g)))
        ;
    else if (g.any && !t.https)
        err = lua_pushfstring(L, "%s is for https:// urls",
                              g.ca_file ? "ca_file" : g.client_cert ? "client_cert"
                              : g.client_key ? "client_key" : "insecure_skip_verify");
    if (err) {
        lua_pushboolean(L, 0);
        lua_pushfstring(L, "%s: %s", fn, err);
        return 2;
    }
    if (t.https &&
        !(tls = resolve_tls(tycho_vm_of(L)->upstreams, t.host, t.port, &g, tls_err,
                            sizeof(tls_err)))) {
        lua_pushnil(L);
        lua_pushstring(L, tls_err);
        return 2;
    }
    q.method = method;
    q.method_len = method_len;
    q.t = &t;
    q.body = body;
    q.body_len = body_len;
    if ((err = put_request(L, &q, 4, NULL, &req_len))) {
        lua_pushboolean(L, 0);
        lua_pushfstring(L, "%s: %s", fn, err);
        return 2;
    }
    hc = lua_newuserdata(L, sizeof(*hc) + req_len);
    memset(hc, 0, sizeof(*hc));
    put_request(L, &q, 4, hc->request, &req_len);
    memcpy(hc->host, t.host, sizeof(hc->host));
    hc->w.start = wait_start;
    hc->w.cancel = wait_cancel;
    hc->u = tycho_vm_of(L)->upstreams;
    hc->spec.https = t.https;
    hc->spec.tls = tls;
    hc->spec.host = hc->host;
    hc->spec.port = t.port;
    hc->spec.request = hc->request;
    hc->spec.request_len = req_len;
    hc->spec.timeout = timeout;
    hc->spec.head = strcmp(method, "HEAD") == 0;
    hc->spec.idempotent = method_is_idempotent(method);
    luaL_getmetatable(L, CALL_MT);
    lua_setmetatable(L, -2);
    return 1;
}

/* wait(call): suspends the caller until the call has finished (new_call checked the place). */
static int wait_call(lua_State *L)
{
    struct http_call *hc = luaL_checkudata(L, 1, CALL_MT);

    if (hc->started)
        return luaL_error(L, "tycho.http: a call is waited for once");
    return tycho_task_wait(L, &hc->w, "tycho.http");
}

/* result(call) -> res {status, headers, body}, or nil and the error. Frees the C call. */
static int call_result(lua_State *L)
{
    struct http_call *hc = luaL_checkudata(L, 1, CALL_MT);
    struct tycho_call *c = hc->call;
    const char *err, *body;
    size_t n, body_len;

    if (!c || (err = tycho_call_error(c))) {
        lua_pushnil(L);
        lua_pushstring(L, c ? err : "out of memory starting the call");
        tycho_call_free(c);
        hc->call = NULL;
        return 2;
    }
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, tycho_call_status(c));
    lua_setfield(L, -2, "status");
    n = tycho_call_header_count(c);
    lua_createtable(L, 0, (int)n);
    for (size_t i = 0; i < n; i++) {
        const char *name, *value;
        size_t name_len, value_len;
        tycho_call_header(c, i, &name, &name_len, &value, &value_len);
        lua_pushlstring(L, name, name_len);
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, value, value_len);
        } else {                      /* a repeated field: values joined with ", " */
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, value, value_len);
            lua_concat(L, 3);
        }
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");
    body = tycho_call_body(c, &body_len);
    lua_pushlstring(L, body ? body : "", body_len);
    lua_setfield(L, -2, "body");
    tycho_call_free(c);
    hc->call = NULL;
    return 1;
}

/* ---- pool settings and counters ----------------------------------------- */

/*
 * A backend at idx into https, host and port: "host:port" or "[v6]:port"
 * (http), or the same after "http://" or "https://", where the port may be
 * left out (80, 443). Raises naming fn.
 */
static void check_backend(lua_State *L, int idx, const char *fn, bool *https, char *host,
                          unsigned *port)
{
    const char *given = luaL_checkstring(L, idx), *s = given, *h, *rest;
    bool scheme = false, bad;
    size_t host_len;
    char *end = NULL;
    unsigned long p;

    *https = false;
    if (strncasecmp(s, "https://", 8) == 0) {
        s += 8;
        scheme = *https = true;
    } else if (strncasecmp(s, "http://", 7) == 0) {
        s += 7;
        scheme = true;
    }
    if (s[0] == '[') {              /* "[v6]" then ":port" or, after a scheme, nothing */
        h = s + 1;
        rest = strchr(h, ']');
        host_len = rest ? (size_t)(rest - h) : 0;
        rest = rest ? rest + 1 : "?";
    } else {
        h = s;
        rest = strrchr(s, ':');
        rest = rest ? rest : s + strlen(s);
        host_len = (size_t)(rest - h);
    }
    if (*rest == ':')
        p = strtoul(rest + 1, &end, 10);
    else
        p = *rest == '\0' && scheme ? (*https ? 443 : 80) : 0;
    bad = host_len == 0 || host_len > MAX_HOST || p == 0 || p > 65535 ||
          (end && (*end || rest[1] < '0' || rest[1] > '9')) || memchr(h, '/', host_len);
    if (bad)
        luaL_error(L, "%s: expected \"host:port\" or \"https://host[:port]\", got \"%s\"", fn,
                   given);
    memcpy(host, h, host_len);
    host[host_len] = '\0';
    *port = (unsigned)p;
}

struct opt_field {
    const char *name;
    size_t offset;
    char kind;                      /* 'u' unsigned, 'd' seconds, 'z' bytes, 'b' boolean */
};

#define OPT(name, kind) {#name, offsetof(struct tycho_pool_opts, name), kind}
static const struct opt_field opt_fields[] = {
    OPT(max_conns, 'u'),       OPT(max_waiting, 'u'),    OPT(wait_timeout, 'd'),
    OPT(idle_timeout, 'd'),    OPT(max_lifetime, 'd'),   OPT(connect_timeout, 'd'),
    OPT(read_timeout, 'd'),    OPT(max_failures, 'u'),   OPT(cooldown, 'd'),
    OPT(fail_on_5xx, 'b'),     OPT(max_body, 'z'),
};
#define NFIELDS (sizeof(opt_fields) / sizeof(opt_fields[0]))

/* Sets one option from the value on top of the stack; raises on a bad value. */
static void set_opt(lua_State *L, const struct opt_field *f, struct tycho_pool_opts *o)
{
    char *at = (char *)o + f->offset;
    double v;

    if (f->kind == 'b') {
        if (!lua_isboolean(L, -1))
            luaL_error(L, "tycho.http.pool: %s must be true or false", f->name);
        *(bool *)at = lua_toboolean(L, -1);
        return;
    }
    v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : -1;
    if (!(v >= 0) || isinf(v) || (f->kind == 'd' && v > 31536000) ||
        (f->kind == 'u' && (v != floor(v) || v > 1e9)) ||
        (f->kind == 'z' && (v != floor(v) || v > 1e15)))
        luaL_error(L, "tycho.http.pool: %s must be a %s from 0, got %s", f->name,
                   f->kind == 'd' ? "number of seconds" : "whole number",
                   luaL_typename(L, -1));
    if (f->kind == 'u' && strcmp(f->name, "max_conns") == 0 && v < 1)
        luaL_error(L, "tycho.http.pool: max_conns must be at least 1");
    if ((strcmp(f->name, "connect_timeout") == 0 || strcmp(f->name, "read_timeout") == 0) &&
        v <= 0)
        luaL_error(L, "tycho.http.pool: %s must be more than 0", f->name);
    if (f->kind == 'u')
        *(unsigned *)at = (unsigned)v;
    else if (f->kind == 'z')
        *(size_t *)at = (size_t)v;
    else
        *(double *)at = v;
}

static void push_opts(lua_State *L, const struct tycho_pool_opts *o, bool https)
{
    struct tycho_tls_client_opts to = {NULL, NULL, NULL, false};

    lua_createtable(L, 0, (int)NFIELDS + 4);
    for (size_t i = 0; i < NFIELDS; i++) {
        const char *at = (const char *)o + opt_fields[i].offset;
        switch (opt_fields[i].kind) {
        case 'b': lua_pushboolean(L, *(const bool *)at); break;
        case 'u': lua_pushnumber(L, *(const unsigned *)at); break;
        case 'z': lua_pushnumber(L, (double)*(const size_t *)at); break;
        default: lua_pushnumber(L, *(const double *)at); break;
        }
        lua_setfield(L, -2, opt_fields[i].name);
    }
    if (!https)
        return;
    if (o->tls)
        tycho_tls_client_opts_of(o->tls, &to);
    lua_pushstring(L, to.ca_file);          /* nil when not given */
    lua_setfield(L, -2, "ca_file");
    lua_pushstring(L, to.client_cert);
    lua_setfield(L, -2, "client_cert");
    lua_pushstring(L, to.client_key);
    lua_setfield(L, -2, "client_key");
    lua_pushboolean(L, to.insecure_skip_verify);
    lua_setfield(L, -2, "insecure_skip_verify");
}

/*
 * tycho.http.pool(backend[, opts]) -> the settings now in force. Unknown
 * option names raise (a typo must not pass silently), and so do TLS files
 * that cannot be loaded: a pool is set at the top of a script, where a
 * raise stops a start or a reload with the file and line.
 */
static int http_pool(lua_State *L)
{
    struct tycho_upstreams *u = tycho_vm_of(L)->upstreams;
    struct tycho_pool_opts o;
    struct tycho_pool_stats s;
    char host[MAX_HOST + 1], err[TYCHO_ERR_LEN];
    unsigned port;
    bool https;
    struct tls_given g;
    const char *misuse;

    check_backend(L, 1, "tycho.http.pool", &https, host, &port);
    tycho_upstreams_inspect(u, https, host, port, NULL, &o, &s);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            size_t i = 0;
            const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
            while (i < NFIELDS && strcmp(opt_fields[i].name, key) != 0)
                i++;
            if (i < NFIELDS)
                set_opt(L, &opt_fields[i], &o);
            else if (!is_tls_name(key))
                luaL_error(L, "tycho.http.pool: unknown option '%s'", key);
            else if (!https)
                luaL_error(L, "tycho.http.pool: %s is for https:// backends", key);
            lua_pop(L, 1);
        }
        if ((misuse = read_tls(L, 2, &g)))
            luaL_error(L, "tycho.http.pool: %s", misuse);
        if (https && !(o.tls = resolve_tls(u, host, port, &g, err, sizeof(err))))
            luaL_error(L, "tycho.http.pool: %s", err);
        if (tycho_upstreams_configure(u, https, host, port, &o) < 0)
            luaL_error(L, "tycho.http.pool: out of memory");
    }
    push_opts(L, &o, https);
    return 1;
}

/*
 * tycho.http.stats(backend[, tls_opts]) -> this worker's counters for the
 * backend: its own pool, or the pool for the TLS options given (as a call
 * with them would use).
 */
static int http_stats(lua_State *L)
{
    struct tycho_upstreams *u = tycho_vm_of(L)->upstreams;
    struct tycho_pool_opts o;
    struct tycho_pool_stats s;
    char host[MAX_HOST + 1], err[TYCHO_ERR_LEN];
    unsigned port;
    bool https;
    struct tls_given g;
    const struct tycho_tls_client *tls = NULL;
    const char *misuse;

    check_backend(L, 1, "tycho.http.stats", &https, host, &port);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        if ((misuse = read_tls(L, 2, &g)))
            luaL_error(L, "tycho.http.stats: %s", misuse);
        if (g.any && !https)
            luaL_error(L, "tycho.http.stats: TLS options are for https:// backends");
        if (g.any && !(tls = resolve_tls(u, host, port, &g, err, sizeof(err))))
            luaL_error(L, "tycho.http.stats: %s", err);
    }
    tycho_upstreams_inspect(u, https, host, port, tls, &o, &s);
    lua_createtable(L, 0, 10);
    lua_pushnumber(L, s.open);
    lua_setfield(L, -2, "open");
    lua_pushnumber(L, s.idle);
    lua_setfield(L, -2, "idle");
    lua_pushnumber(L, s.waiting);
    lua_setfield(L, -2, "waiting");
    lua_pushnumber(L, (double)s.connects);
    lua_setfield(L, -2, "connects");
    lua_pushnumber(L, (double)s.requests);
    lua_setfield(L, -2, "requests");
    lua_pushnumber(L, (double)s.reused);
    lua_setfield(L, -2, "reused");
    lua_pushnumber(L, (double)s.failures);
    lua_setfield(L, -2, "failures");
    lua_pushstring(L, s.circuit);
    lua_setfield(L, -2, "circuit");
    if (https) {
        lua_pushnumber(L, (double)s.tls_handshakes);
        lua_setfield(L, -2, "tls_handshakes");
        lua_pushnumber(L, (double)s.tls_resumed);
        lua_setfield(L, -2, "tls_resumed");
    }
    return 1;
}

/*
 * The public functions, in Lua: they keep the call in a local while it
 * waits. No tail calls, so that error level 3 is the user's line.
 */
static const char http_lua[] =
    "local new_call, wait, result = ...\n"
    "local http = {}\n"
    "local function call(fn, url, method, headers, body, timeout, o)\n"
    "  local c, err = new_call(fn, url, method, headers, body, timeout, o)\n"
    "  if c == nil then return nil, err end\n"
    "  if not c then error(err, 3) end\n"
    "  wait(c)\n"
    "  local res, msg = result(c)\n"
    "  return res, msg\n"
    "end\n"
    "local function opts(fn, o)\n"
    "  if o ~= nil and type(o) ~= 'table' then error(fn .. ': opts must be a table', 3) end\n"
    "  return o or {}\n"
    "end\n"
    "function http.request(o)\n"
    "  if type(o) ~= 'table' then\n"
    "    error('tycho.http.request: expected a table '\n"
    "          .. '{url=, method=, headers=, body=, timeout=}', 2)\n"
    "  end\n"
    "  local res, err = call('tycho.http.request', o.url, o.method, o.headers, o.body, o.timeout,\n"
    "                        o)\n"
    "  return res, err\n"
    "end\n"
    "function http.get(url, o)\n"
    "  o = opts('tycho.http.get', o)\n"
    "  local res, err = call('tycho.http.get', url, 'GET', o.headers, nil, o.timeout, o)\n"
    "  return res, err\n"
    "end\n"
    "function http.post(url, body, o)\n"
    "  o = opts('tycho.http.post', o)\n"
    "  local res, err = call('tycho.http.post', url, 'POST', o.headers, body, o.timeout, o)\n"
    "  return res, err\n"
    "end\n"
    "return http\n";

void tycho_bind_http(lua_State *L)
{
    luaL_newmetatable(L, CALL_MT);
    lua_pushcfunction(L, call_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    if (luaL_loadbuffer(L, http_lua, sizeof(http_lua) - 1, "=tycho.http"))
        lua_error(L);
    lua_pushcfunction(L, new_call);
    lua_pushcfunction(L, wait_call);
    lua_pushcfunction(L, call_result);
    lua_call(L, 3, 1);
    lua_pushcfunction(L, http_pool);
    lua_setfield(L, -2, "pool");
    lua_pushcfunction(L, http_stats);
    lua_setfield(L, -2, "stats");
    lua_setfield(L, -2, "http");
}
