/*
 * bind_metrics.c: tycho.metrics.counter/gauge/histogram, a script's own
 * Prometheus metrics. A metric object names a process-wide family and the
 * worker whose series it updates; :inc, :set, :dec and :observe find the
 * series of the label values given and change it without a lock (metrics.c).
 */
#include "lua/bind.h"
#include "lua/task.h"
#include "lua/vm.h"
#include "core/tycho.h"
#include "core/metrics.h"

#include <lauxlib.h>
#include <math.h>
#include <string.h>

#define METRIC_MT "tycho.metric"

struct metric_box {
    struct tycho_family *f;
    int worker;
};

static const char *const kind_names[] = {"counter", "gauge", "histogram"};

/* Default histogram buckets (Prometheus's client libraries' own), seconds. */
static const double default_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

/* The label names at idx (nil or a list of strings) into names; returns how many. */
static unsigned read_label_names(lua_State *L, int idx, const char *fn, const char **names)
{
    unsigned n = 0;

    if (lua_isnoneornil(L, idx))
        return 0;
    if (!lua_istable(L, idx))
        luaL_error(L, "%s: labels must be a list of label names", fn);
    for (;; n++) {
        lua_rawgeti(L, idx, (int)n + 1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            break;
        }
        if (n >= TYCHO_METRIC_MAX_LABELS || lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "%s: labels must be a list of at most %d strings", fn,
                       TYCHO_METRIC_MAX_LABELS);
        names[n] = lua_tostring(L, -1);   /* anchored by the labels table */
        lua_pop(L, 1);
    }
    return n;
}

/*
 * opts.mode of a gauge: "worker" (the default: one series per worker, never
 * misleading), "sum", "max" or "min".
 */
static enum tycho_gauge_mode read_mode(lua_State *L, int opts, const char *fn)
{
    static const char *const modes[] = {"sum", "max", "min", "worker", NULL};
    enum tycho_gauge_mode mode = TYCHO_GAUGE_WORKER;

    if (!opts)
        return mode;
    lua_getfield(L, opts, "mode");
    if (!lua_isnil(L, -1)) {
        const char *s = lua_tostring(L, -1);
        int i = 0;
        while (modes[i] && (!s || strcmp(s, modes[i]) != 0))
            i++;
        if (!modes[i])
            luaL_error(L, "%s: mode must be \"sum\", \"max\", \"min\" or \"worker\"", fn);
        mode = (enum tycho_gauge_mode)i;
    }
    lua_pop(L, 1);
    return mode;
}

/* opts.buckets of a histogram into buckets; returns how many (the defaults when not given). */
static unsigned read_buckets(lua_State *L, int opts, const char *fn, double *buckets)
{
    unsigned n = 0;

    if (opts)
        lua_getfield(L, opts, "buckets");
    if (!opts || lua_isnil(L, -1)) {
        if (opts)
            lua_pop(L, 1);
        memcpy(buckets, default_buckets, sizeof(default_buckets));
        return sizeof(default_buckets) / sizeof(default_buckets[0]);
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "%s: buckets must be a list of increasing numbers", fn);
    for (;; n++) {
        lua_rawgeti(L, -1, (int)n + 1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            break;
        }
        if (n >= TYCHO_METRIC_MAX_BUCKETS || lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "%s: buckets must be a list of at most %d numbers", fn,
                       TYCHO_METRIC_MAX_BUCKETS);
        buckets[n] = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return n;
}

/* tycho.metrics.<kind>(name, help, labels[, opts]) -> the metric object. */
static int new_metric(lua_State *L, enum tycho_metric_kind kind, const char *fn)
{
    const char *labels[TYCHO_METRIC_MAX_LABELS];
    double buckets[TYCHO_METRIC_MAX_BUCKETS];
    struct tycho_metric_spec spec = {0};
    struct metric_box *box;
    char err[TYCHO_ERR_LEN];
    int opts = lua_istable(L, 4) ? 4 : 0;

    spec.name = luaL_checkstring(L, 1);
    spec.help = luaL_optstring(L, 2, "");
    spec.kind = kind;
    if (!opts && !lua_isnoneornil(L, 4))
        return luaL_argerror(L, 4, "expected a table of options");
    if (strncmp(spec.name, "tycho_", 6) == 0 || strncmp(spec.name, "process_", 8) == 0)
        return luaL_error(L, "%s: metric names starting with tycho_ or process_ are the "
                          "server's own (got \"%s\")", fn, spec.name);
    spec.labels = labels;
    spec.nlabels = read_label_names(L, 3, fn, labels);
    if (kind == TYCHO_GAUGE)
        spec.mode = read_mode(L, opts, fn);
    if (kind == TYCHO_HISTOGRAM) {
        spec.buckets = buckets;
        spec.nbuckets = read_buckets(L, opts, fn, buckets);
    }
    box = lua_newuserdata(L, sizeof(*box));
    box->f = NULL;
    box->worker = tycho_vm_of(L)->worker_id;
    luaL_getmetatable(L, METRIC_MT);
    lua_setmetatable(L, -2);
    if (!(box->f = tycho_metric_family(&spec, err)))
        return luaL_error(L, "%s: %s", fn, err);
    return 1;
}

static int metrics_counter(lua_State *L)
{
    return new_metric(L, TYCHO_COUNTER, "tycho.metrics.counter");
}

static int metrics_gauge(lua_State *L)
{
    return new_metric(L, TYCHO_GAUGE, "tycho.metrics.gauge");
}

static int metrics_histogram(lua_State *L)
{
    return new_metric(L, TYCHO_HISTOGRAM, "tycho.metrics.histogram");
}

/* Appends one label value (no NUL inside) and its NUL to key; raises when it does not fit. */
static size_t add_label_value(lua_State *L, const char *fn, const char *name, char *key,
                              size_t used)
{
    size_t len;
    const char *value;

    if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "%s: label \"%s\" must be given a string or a number", fn, name);
    value = lua_tolstring(L, -1, &len);
    if (memchr(value, '\0', len))
        luaL_error(L, "%s: the value of label \"%s\" contains a NUL byte", fn, name);
    /* One bad value would make Prometheus refuse every later scrape. */
    if (!tycho_metric_utf8_ok(value, len))
        luaL_error(L, "%s: the value of label \"%s\" is not valid UTF-8", fn, name);
    if (used + len + 1 > TYCHO_METRIC_KEY_BYTES)
        luaL_error(L, "%s: label values longer than %d bytes in all", fn,
                   TYCHO_METRIC_KEY_BYTES - 1);
    memcpy(key + used, value, len);
    key[used + len] = '\0';
    return used + len + 1;
}

/*
 * The values of the series the labels at idx name (a table label -> value,
 * every label of the metric and no other), or NULL when the metric has too
 * many series. Raises on bad labels.
 */
static _Atomic double *series_of(lua_State *L, struct metric_box *box, int idx, const char *fn)
{
    char key[TYCHO_METRIC_KEY_BYTES];
    unsigned nlabels = tycho_metric_label_count(box->f), given = 0;
    size_t used = 0;

    if (nlabels == 0) {
        if (lua_isnoneornil(L, idx))
            return tycho_metric_series(box->f, box->worker, "", 0);
        if (lua_istable(L, idx)) {
            lua_pushnil(L);
            if (lua_next(L, idx) == 0)    /* {} is no labels too */
                return tycho_metric_series(box->f, box->worker, "", 0);
        }
        luaL_error(L, "%s: this metric has no labels", fn);
    }
    if (!lua_istable(L, idx))
        luaL_error(L, "%s: expected a table of label values", fn);
    for (unsigned i = 0; i < nlabels; i++) {
        const char *name = tycho_metric_label_name(box->f, i);
        lua_getfield(L, idx, name);
        if (lua_isnil(L, -1))
            luaL_error(L, "%s: label \"%s\" is missing", fn, name);
        used = add_label_value(L, fn, name, key, used);
        lua_pop(L, 1);
    }
    for (lua_pushnil(L); lua_next(L, idx) != 0; lua_pop(L, 1))
        given++;
    if (given != nlabels)
        luaL_error(L, "%s: unknown label given (this metric has %u)", fn, nlabels);
    return tycho_metric_series(box->f, box->worker, key, used);
}

/* The metric object at 1, checked to be of kind for method fn. */
static struct metric_box *check_metric(lua_State *L, enum tycho_metric_kind kind, const char *fn)
{
    struct metric_box *box = luaL_checkudata(L, 1, METRIC_MT);

    if (tycho_metric_kind_of(box->f) != kind)
        luaL_error(L, "%s: this metric is a %s", fn, kind_names[tycho_metric_kind_of(box->f)]);
    return box;
}

/* The number at idx, which must be finite; nil gives def, or an error when def is NAN. */
static double check_amount(lua_State *L, int idx, double def, const char *fn)
{
    double n = lua_isnoneornil(L, idx) && !isnan(def) ? def : luaL_checknumber(L, idx);

    if (!isfinite(n))
        luaL_error(L, "%s: expected a finite number", fn);
    return n;
}

/* counter:inc([n[, labels]]): adds n (default 1, never negative). */
static int counter_inc(lua_State *L)
{
    struct metric_box *box = check_metric(L, TYCHO_COUNTER, "counter:inc");
    double n = check_amount(L, 2, 1, "counter:inc");
    _Atomic double *v;

    if (n < 0)
        return luaL_error(L, "counter:inc: a counter only goes up (got %s)", lua_tostring(L, 2));
    if ((v = series_of(L, box, 3, "counter:inc")))
        tycho_metric_add(v, n);
    return 0;
}

/* gauge:set(v[, labels]), gauge:inc([n[, labels]]), gauge:dec([n[, labels]]). */
static int gauge_change(lua_State *L, const char *fn, double sign, bool set)
{
    struct metric_box *box = check_metric(L, TYCHO_GAUGE, fn);
    double n = check_amount(L, 2, set ? NAN : 1, fn);
    _Atomic double *v = series_of(L, box, 3, fn);

    if (v && set)
        tycho_metric_set(v, n);
    else if (v)
        tycho_metric_add(v, sign * n);
    return 0;
}

static int gauge_set(lua_State *L)
{
    return gauge_change(L, "gauge:set", 1, true);
}

static int gauge_inc(lua_State *L)
{
    return gauge_change(L, "gauge:inc", 1, false);
}

static int gauge_dec(lua_State *L)
{
    return gauge_change(L, "gauge:dec", -1, false);
}

/* histogram:observe(v[, labels]). */
static int histogram_observe(lua_State *L)
{
    struct metric_box *box = check_metric(L, TYCHO_HISTOGRAM, "histogram:observe");
    double x = check_amount(L, 2, NAN, "histogram:observe");
    _Atomic double *v = series_of(L, box, 3, "histogram:observe");

    if (v)
        tycho_metric_observe(box->f, v, x);
    return 0;
}

/* A counter's inc and a gauge's inc share the name: dispatch on the kind. */
static int metric_inc(lua_State *L)
{
    struct metric_box *box = luaL_checkudata(L, 1, METRIC_MT);

    return tycho_metric_kind_of(box->f) == TYCHO_GAUGE ? gauge_inc(L) : counter_inc(L);
}

static const luaL_Reg metric_methods[] = {
    {"inc", metric_inc},
    {"dec", gauge_dec},
    {"set", gauge_set},
    {"observe", histogram_observe},
    {NULL, NULL},
};

static const luaL_Reg metrics_functions[] = {
    {"counter", metrics_counter},
    {"gauge", metrics_gauge},
    {"histogram", metrics_histogram},
    {NULL, NULL},
};

void tycho_bind_metrics(lua_State *L)
{
    luaL_newmetatable(L, METRIC_MT);
    lua_newtable(L);
    luaL_setfuncs(L, metric_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_newtable(L);
    luaL_setfuncs(L, metrics_functions, 0);
    lua_setfield(L, -2, "metrics");
}
