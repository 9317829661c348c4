-- The app that tests/lua/test_runner.sh runs `tycho test` against.
local app = require "tycho"

app.use(function(req, res, next)
    res:header("X-Middleware", "ran")
    return next()
end)

app.get("/sleep", function()
    tycho.sleep(0.05)
    return "slept"
end)

-- Calls a real backend: TYCHO_TEST_BACKEND is its port.
app.get("/proxy", function()
    local res, err = tycho.http.get("http://127.0.0.1:" .. os.getenv("TYCHO_TEST_BACKEND") ..
                                    "/plaintext")
    if not res then return "error: " .. err end
    return "backend said " .. res.body
end)

app.post("/items", function(req, res)
    local item = require("cjson").decode(req.body)
    res:status(201)
    res:json({ created = item.name, type = req.headers["content-type"] })
end)

app.get("/headers", function(req)
    return req.headers["x-one"] .. "," .. (req.headers["host"] or "")
end)

app.get("/crash", function()
    error("crashing on purpose")
end)

app.get("/counter", function()
    local d = tycho.shared.dict("runner")
    return tostring(d:incr("n", 1, 0))
end)

-- Never finishes: `tycho test --test-timeout` must abandon it.
app.get("/forever", function()
    tycho.sleep(3600)
    return "never"
end)
