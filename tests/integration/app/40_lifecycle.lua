-- 40_lifecycle.lua: request objects, the garbage collector, registration
-- after load, middleware after a body, and large pipelined responses.
local app = require "tycho"

-- A handler that takes no arguments: req and res are unreachable from Lua
-- while it churns the GC; the server must still own them safely.
app.get("/gc-churn", function()
    local n = 0
    for i = 1, 20000 do
        n = n + #tostring({})
    end
    collectgarbage()
    return "churned"
end)

app.get("/late-route", function(req, res)
    app.get("/added-late", function() return "late" end)
    return "unreachable"
end)

app.get("/late-use", function(req, res)
    app.use(function(rq, rs, nxt) nxt() end)
    return "unreachable"
end)

-- 1 MiB body, for pipelining against a client that does not read.
local big = string.rep("0123456789abcdef", 65536)
app.get("/mib", function(req, res)
    return big
end)

-- Middleware that adds a header after the handler set the body with res:json.
app.use(function(req, res, nxt)
    nxt()
    if req.path == "/json-then-header" then
        res:header("X-After-Next", "yes")
    end
end)

app.get("/json-then-header", function(req, res)
    res:json({ ok = true })
end)

-- A script must not stop the server for everyone.
app.get("/exit", function(req, res)
    os.exit(0)
end)

-- A handler that never returns (only test_limits.c asks for it).
app.get("/spin", function(req, res)
    local n = 0
    while true do
        n = n + 1
    end
end)
