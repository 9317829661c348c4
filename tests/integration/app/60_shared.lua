-- 60_shared.lua: tycho.shared.dict across workers, TTL, eviction.
local app = require "tycho"
local hits = tycho.shared.dict("hits")
local small = tycho.shared.dict("small", { max_bytes = 16384 })

app.get("/hits", function(req, res)
    return string.format("%d %d", hits:incr("n", 1, 0), tycho.worker_id())
end)

app.post("/kv/:key", function(req, res)
    local ttl = tonumber(req.query.ttl)
    local ok, err = hits:set(req.params.key, req.body, ttl)
    return ok and "stored" or err
end)

app.get("/kv/:key", function(req, res)
    local v = hits:get(req.params.key)
    if v == nil then
        res:status(404)
        return "missing"
    end
    return v
end)

app.get("/kv-types", function(req, res)
    hits:set("t-table", { name = "tycho", list = { 1, 2, 3 } })
    hits:set("t-number", 1.5)
    hits:set("t-bool", false)
    local t = hits:get("t-table")
    local added, why = hits:add("t-number", 2)
    return string.format("%s %d %s %s %s %s %s %s", t.name, #t.list, tostring(hits:get("t-number")),
        tostring(hits:get("t-bool")), tostring(added), why, select(2, hits:incr("t-table", 1)),
        select(2, hits:incr("none", 1)))
end)

-- Fills the small dictionary far past its bound; least recently used entries go.
app.get("/evict", function(req, res)
    for i = 1, 2000 do
        small:set("k" .. i, string.rep("v", 100))
    end
    local live = #small:keys()
    return string.format("%d %s %s", live, tostring(small:get("k2000") ~= nil),
        tostring(small:get("k1") ~= nil))
end)

-- Many increments per request, from concurrent requests on every worker.
app.post("/incr-many", function(req, res)
    for i = 1, 100 do
        hits:incr("many", 1, 0)
    end
    return "ok"
end)

app.get("/incr-many", function()
    return tostring(hits:get("many"))
end)

app.get("/incr-too-big", function(req, res)
    local v, err = small:incr(string.rep("k", 2000), 1, 0)
    return tostring(v) .. " " .. tostring(err)
end)
