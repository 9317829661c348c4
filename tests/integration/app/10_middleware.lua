-- 10_middleware.lua: two middlewares. They only act on paths under /mw/ and
-- call next() straight away for everything else, so a middleware bug cannot
-- break the other tests.
--   /mw/order   -> X-Order: mw1,mw2,handler,mw2-after,mw1-after
--   /mw/blocked -> the second middleware answers 403 and does not call next()
--   /mw/halt    -> the second middleware sets 401 + a header, sends nothing,
--                  does not call next(); whatever res has is sent
local app = require "tycho"
local state = require "state"

table.insert(state.load_order, "10_middleware")

local function is_mw(req)
    return req.path:sub(1, 4) == "/mw/"
end

app.use(function(req, res, next)
    if not is_mw(req) then
        next()
        return
    end
    state.trace = { "mw1" }
    res:header("X-Mw1", "yes")
    next()
    if req.path == "/mw/order" then
        table.insert(state.trace, "mw1-after")
        res:header("X-Order", table.concat(state.trace, ","))
    end
end)

app.use(function(req, res, next)
    if not is_mw(req) then
        next()
        return
    end
    table.insert(state.trace, "mw2")
    res:header("X-Mw2", "yes")
    if req.path == "/mw/blocked" then
        res:status(403):send("blocked by middleware")
        return
    end
    if req.path == "/mw/halt" then
        res:status(401):header("WWW-Authenticate", 'Basic realm="fixture"')
        return
    end
    next()
    table.insert(state.trace, "mw2-after")
end)

app.get("/mw/order", function(req, res)
    table.insert(state.trace, "handler")
    return "ok"
end)

app.get("/mw/blocked", function(req, res)
    return "the handler ran"
end)

app.get("/mw/halt", function(req, res)
    return "the handler ran"
end)
