-- 00_first.lua: loads first (files load in name order). Checks that
-- `require "tycho"` and the global `tycho` are one table, and registers a
-- route through the global.
local app = require "tycho"
local state = require "state"

table.insert(state.load_order, "00_first")

app.get("/global", function(req, res)
    return tostring(app == tycho)
end)

tycho.get("/via-global", function(req, res)
    return "registered through the global"
end)
