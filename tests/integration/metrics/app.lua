-- The metrics suite's app (test_metrics.c): routes with known outcomes, and
-- a script's own metrics of every kind.
local app = require "tycho"

local hits = tycho.metrics.counter("app_hits_total", "Hits, by kind.", {"kind"})
local plain = tycho.metrics.counter("app_plain_total", "A counter without labels.")
local level = tycho.metrics.gauge("app_level", "The largest level set on any worker.", nil,
                                  {mode = "max"})
local inflight = tycho.metrics.gauge("app_inflight", "Requests inside /slow now.", nil,
                                     {mode = "sum"})
-- The default mode: one series per worker.
local seen = tycho.metrics.gauge("app_worker_requests", "Requests to /seen, per worker.")
local sizes = tycho.metrics.histogram("app_size_bytes", "Sizes put.", {"op"},
                                      {buckets = {10, 100}})

app.get("/hello", function() return "hello" end)
app.get("/users/:id", function(req) return "user " .. req.params.id end)
app.get("/fail", function() error("failing on purpose") end)

-- /count?kind=K[&n=N]: adds N (default 1) to app_hits_total{kind=K}.
app.get("/count", function(req)
    hits:inc(tonumber(req.query.n), {kind = req.query.kind})
    plain:inc()
    return "counted"
end)

app.get("/level/:n", function(req)
    level:set(tonumber(req.params.n))
    return "set"
end)

app.get("/size/:n", function(req)
    sizes:observe(tonumber(req.params.n), {op = "put"})
    return "observed"
end)

app.get("/seen", function()
    seen:inc()
    return "worker " .. tycho.worker_id()
end)

app.get("/slow", function()
    inflight:inc()
    tycho.sleep(0.5)
    inflight:dec()
    return "slow"
end)

app.get("/proxy", function(req)
    local res, err = tycho.http.get("http://127.0.0.1:" .. req.query.port .. "/hello")
    return res and res.body or err
end)

-- Every misuse raises a clear error: one line each.
app.get("/misuse", function()
    local tries = {
        function() hits:inc(-1, {kind = "x"}) end,
        function() hits:inc(1) end,
        function() hits:inc(1, {kind = "x", other = "y"}) end,
        function() hits:inc(1, {}) end,
        function() hits:inc(1, {kind = {}}) end,
        function() hits:inc(0 / 0, {kind = "x"}) end,
        function() plain:inc(1, {kind = "x"}) end,
        function() inflight:observe(1) end,
        function() hits:set(1, {kind = "x"}) end,
        function() level:set() end,
        function() tycho.metrics.counter("app_hits_total", "again", {"other"}) end,
        function() tycho.metrics.gauge("app_hits_total", "again", {"kind"}) end,
        function() tycho.metrics.counter("tycho_mine_total", "reserved") end,
        function() tycho.metrics.counter("9lives", "bad name") end,
        function() tycho.metrics.counter("app_x_total", "bad label", {"__x"}) end,
        function() tycho.metrics.histogram("app_h", "le", {"le"}) end,
        function() tycho.metrics.histogram("app_h", "buckets", nil, {buckets = {2, 1}}) end,
        function() tycho.metrics.gauge("app_g", "mode", nil, {mode = "avg"}) end,
        function() tycho.metrics.counter("app_size_bytes_count", "clash") end,
        function() hits:inc(1, {kind = "\255"}) end,
    }
    local out = {}
    for i, try in ipairs(tries) do
        local ok, err = pcall(try)
        out[i] = ok and "no error" or tostring(err):gsub("^[^:]*:%d+: ", "")
    end
    -- Registering the same metric again gives the same one.
    local again = tycho.metrics.counter("app_hits_total", "Hits, by kind.", {"kind"})
    again:inc(1, {kind = "again"})
    return table.concat(out, "\n")
end)

app.on_worker_start(function()
    tycho.timer.every(3600, function() end)
end)
