-- 99_last.lua: loads last; reports the order the fixture files loaded in.
local app = require "tycho"
local state = require "state"

table.insert(state.load_order, "99_last")

app.get("/load-order", function(req, res)
    return table.concat(state.load_order, ",")
end)

-- The request's id (X-Request-Id), as the handler sees it.
app.get("/request-id", function(req, res)
    return req.id
end)

-- A handler that sets X-Request-Id itself: the server adds none.
app.get("/own-request-id", function(req, res)
    res:header("X-Request-Id", "mine")
    return "own"
end)
