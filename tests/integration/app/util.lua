-- util.lua: a module found by `require "util"` (DIR/util.lua). No routes.
local util = {}

function util.greet(name)
    return "hello, " .. name
end

return util
