-- 20_routes.lua: the main routes used by tests/integration/test_http.c and
-- test_cli.c. Bodies are plain strings so the tests can compare exact bytes.
local app = require "tycho"
local state = require "state"
local util = require "util"

table.insert(state.load_order, "20_routes")

app.get("/hello", function(req, res)
    return "Hello, World!"
end)

-- "METHOD PATH REMOTE_ADDR"
app.get("/info", function(req, res)
    return req.method .. " " .. req.path .. " " .. tostring(req.remote_addr)
end)

-- Router: static beats :param beats *wildcard.
app.get("/users/:id", function(req, res)
    res:json({ id = req.params.id })
end)

app.get("/users/me", function(req, res)
    return "static me"
end)

app.get("/users/:id/posts/:post", function(req, res)
    return "user " .. req.params.id .. " post " .. req.params.post
end)

app.get("/static/*path", function(req, res)
    return "wildcard " .. req.params.path
end)

app.get("/static/fixed.txt", function(req, res)
    return "static fixed"
end)

app.get("/files/:name", function(req, res)
    return "param " .. req.params.name
end)

app.get("/files/*rest", function(req, res)
    return "wildcard " .. req.params.rest
end)

-- Decoded query parameters, sorted by key, one "k=v" per line.
app.get("/query", function(req, res)
    local keys = {}
    for k in pairs(req.query) do
        keys[#keys + 1] = k
    end
    table.sort(keys)
    local out = {}
    for _, k in ipairs(keys) do
        out[#out + 1] = k .. "=" .. tostring(req.query[k])
    end
    return table.concat(out, "\n")
end)

-- Case-insensitive header lookup and repeated headers.
app.get("/headers", function(req, res)
    local h = req.headers
    return table.concat({
        tostring(h["x-custom"]), tostring(h["X-Custom"]), tostring(h["X-CUSTOM"]),
        tostring(h["content-type"]), tostring(h["Content-Type"]),
        tostring(h["x-multi"]), tostring(h["x-absent"]),
    }, "|")
end)

-- The same lookups with req:get_header (found in C, no table).
app.get("/get-header", function(req, res)
    return table.concat({
        tostring(req:get_header("x-custom")), tostring(req:get_header("X-CUSTOM")),
        tostring(req:get_header("Content-Type")), tostring(req:get_header("x-multi")),
        tostring(req:get_header("x-absent")), tostring(req:get_header("x-custo")),
    }, "|")
end)

-- Body echo (Content-Length or chunked); X-Body-Length is #req.body.
app.post("/echo", function(req, res)
    res:header("X-Body-Length", tostring(#req.body))
    return req.body
end)

app.put("/echo", function(req, res)
    return req.body
end)

-- "string:0" for a request without a body.
app.get("/body-type", function(req, res)
    return type(req.body) .. ":" .. #req.body
end)

local function item(req, res)
    return req.method .. " item " .. req.params.id
end

app.get("/items/:id", item)
app.put("/items/:id", item)
app.patch("/items/:id", item)
app.delete("/items/:id", item)
app.route("OPTIONS", "/items/:id", item)
app.route("POST", "/items/:id", item)

-- 405: GET and POST only.
app.get("/only", function(req, res)
    return "only get"
end)

app.post("/only", function(req, res)
    return "only post"
end)

app.get("/json", function(req, res)
    res:json({ ok = true })
end)

app.get("/json-array", function(req, res)
    res:json({ 1, 2, 3 })
end)

app.get("/json-string", function(req, res)
    res:json("hi")
end)

app.get("/redirect", function(req, res)
    res:redirect("/hello")
end)

app.get("/redirect-301", function(req, res)
    res:redirect("https://example.com/moved", 301)
end)

app.get("/teapot", function(req, res)
    res:status(418):send("short and stout")
end)

app.get("/chain", function(req, res)
    res:status(201):header("X-A", "1"):header("X-B", "2"):send("created")
end)

app.get("/custom-type", function(req, res)
    res:header("Content-Type", "text/html; charset=utf-8")
    return "<p>hi</p>"
end)

app.get("/empty", function(req, res)
    return ""
end)

-- 100000 bytes: "0123456789" ten thousand times.
app.get("/big", function(req, res)
    return string.rep("0123456789", 10000)
end)

app.get("/require", function(req, res)
    return util.greet("tycho")
end)
