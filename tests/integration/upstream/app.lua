-- app.lua: the fixture for test_upstream.c. Handlers call the test's
-- backends (their ports come from the environment) through tycho.http.
-- Line numbers of the misuse functions are asserted: add new code at the end.
local app = require "tycho"

local ports = {
    a = tonumber(os.getenv("TYCHO_TEST_BACKEND_A")) or 9,
    b = tonumber(os.getenv("TYCHO_TEST_BACKEND_B")) or 9,
    c = tonumber(os.getenv("TYCHO_TEST_BACKEND_C")) or 9,
    d = tonumber(os.getenv("TYCHO_TEST_BACKEND_D")) or 9,
}
local function host_port(name, host)
    return (host or "127.0.0.1") .. ":" .. ports[name]
end

-- a: the main backend; "localhost" reaches it through a pool of its own
-- (a name lookup, and connections that are replaced after 0.3 s).
tycho.http.pool(host_port("a"), { max_conns = 4 })
tycho.http.pool(host_port("a", "localhost"), { max_lifetime = 0.3 })
-- b: stopped and restarted by the test; a breaker that opens after 3 failures.
tycho.http.pool(host_port("b"), { max_failures = 3, cooldown = 0.5, connect_timeout = 0.5,
                                  read_timeout = 0.5 })
-- c: one connection, one waiter.
tycho.http.pool(host_port("c"), { max_conns = 1, max_waiting = 1, wait_timeout = 0.2,
                                  max_body = 1000 })

local function url(req, path)
    return "http://" .. host_port(req.params.b, req.query.host) .. "/" .. path
end

-- The backend's body, its status in X-Backend-Status; 502 with the error otherwise.
local function answer(res, r, err)
    if not r then
        res:status(502)
        return "error: " .. err
    end
    res:header("X-Backend-Status", tostring(r.status))
    return r.body
end

app.get("/via/:b/*path", function(req, res)
    local r, err = tycho.http.get(url(req, req.params.path), { timeout = tonumber(req.query.timeout) })
    return answer(res, r, err)
end)

app.post("/post/:b", function(req, res)
    local r, err = tycho.http.post(url(req, "echo"), req.body,
                                   { headers = { ["X-Test"] = req.headers["x-test"] } })
    return answer(res, r, err)
end)

app.get("/put/:b", function(req, res)
    local r, err = tycho.http.request {
        method = "PUT", url = url(req, "echo"), body = "put-body",
        headers = { ["X-Test"] = { "one", "two" }, Host = "example.test" },
    }
    return answer(res, r, err)
end)

app.get("/head/:b", function(req, res)
    local r, err = tycho.http.request { method = "HEAD", url = url(req, "hello") }
    if not r then return answer(res, r, err) end
    return r.status .. " " .. tostring(r.headers["content-length"]) .. " " .. #r.body
end)

app.get("/headers/:b", function(req, res)
    local r, err = tycho.http.get(url(req, "multi"))
    if not r then return answer(res, r, err) end
    res:json({ cookie = r.headers["set-cookie"], multi = r.headers["x-multi"],
               length = r.headers["content-length"] })
end)

app.get("/stats/:b", function(req, res)
    res:json(tycho.http.stats(host_port(req.params.b, req.query.host)))
end)

app.get("/pool/:b", function(req, res)
    res:json(tycho.http.pool(host_port(req.params.b)))
end)

-- Misuse: each raises; the handler returns the message.
local misuse = {
    https = function() tycho.http.get("ftp://127.0.0.1/") end,
    crlf = function() tycho.http.get("http://127.0.0.1:9/", { headers = { X = "a\r\nB: c" } }) end,
    length = function() tycho.http.post("http://127.0.0.1:9/", "x", { headers = { ["Content-Length"] = "1" } }) end,
    method = function() tycho.http.request { url = "http://127.0.0.1:9/", method = "GE T" } end,
    timeout = function() tycho.http.get("http://127.0.0.1:9/", { timeout = -1 }) end,
    notable = function() tycho.http.request("http://127.0.0.1:9/") end,
    relative = function() tycho.http.get("/just/a/path") end,
    option = function() tycho.http.pool("127.0.0.1:9", { max_conn = 3 }) end,
    hostport = function() tycho.http.pool("127.0.0.1", {}) end,
    coroutine = function() coroutine.wrap(function() tycho.http.get("http://127.0.0.1:9/") end)() end,
    upgrade = function() tycho.http.get("http://127.0.0.1:9/", { headers = { Upgrade = "websocket" } }) end,
    hosttwice = function() tycho.http.get("http://127.0.0.1:9/", { headers = { Host = "a", host = "b" } }) end,
    connect = function() tycho.http.request { url = "http://127.0.0.1:9/", method = "CONNECT" } end,
    zerotimeout = function() tycho.http.pool("127.0.0.1:9", { read_timeout = 0 }) end,
}
app.get("/misuse/:kind", function(req)
    local ok, msg = pcall(misuse[req.params.kind])
    return ok and "no error" or tostring(msg)
end)

-- A timer calls the backend once each worker starts; /timer-result tells what it got.
local timer_result = "pending"
app.on_worker_start(function()
    tycho.timer.after(0, function()
        local r, err = tycho.http.get("http://" .. host_port("a") .. "/hello")
        timer_result = r and (r.status .. " " .. r.body) or ("error: " .. err)
    end)
end)
app.get("/timer-result", function() return timer_result end)

-- Several calls from one handler, one after another.
app.get("/three/:b", function(req, res)
    local out = {}
    for i = 1, 3 do
        local r, err = tycho.http.get(url(req, "hello"))
        out[i] = r and r.body or err
    end
    return table.concat(out, ",")
end)

-- d: a port whose listen queue is full, so connects hang (connect_timeout 0.3 s).
tycho.http.pool(host_port("d"), { connect_timeout = 0.3, read_timeout = 0.5 })

-- A url with a query and no path.
app.get("/query/:b", function(req, res)
    local r, err = tycho.http.get("http://" .. host_port(req.params.b) .. "?x=1&y=2")
    return answer(res, r, err)
end)

-- Two calls with a CPU-bound pause between them: the loop does not run in
-- between, so a close by the backend meanwhile is only seen by the liveness
-- check before reuse.
app.get("/liveness/:b", function(req, res)
    local r1, err1 = tycho.http.get(url(req, "close-soon"))
    local t = os.clock()
    while os.clock() - t < 0.2 do end
    local r2, err2 = tycho.http.get(url(req, "hello"))
    return (r1 and r1.body or err1) .. "," .. (r2 and r2.body or err2)
end)
