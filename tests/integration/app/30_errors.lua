-- 30_errors.lua: handlers that fail. test_http.c and test_cli.c look for
-- the exact file:line of these errors in the server's log, so keep the line
-- numbers stable (error at 7, helper at 11, its caller at 15, second send at 21).
local app = require "tycho"
table.insert(require("state").load_order, "30_errors")
app.get("/error", function(req, res)
    error("boom from the error fixture")
end)

local function helper(t)
    return t.missing.field
end

app.get("/error-nested", function(req, res)
    local v = helper({})
    return v
end)

app.get("/send-twice", function(req, res)
    res:send("first")
    res:send("second")
end)

app.get("/error-table", function(req, res)
    error({ code = 42 })
end)

app.get("/error-nil", function(req, res)
    error(nil)
end)

-- Misuse that must become a 500, never a broken response.
app.get("/status-1xx", function(req, res)
    res:status(101):send("upgrade?")
end)

app.get("/header-split", function(req, res)
    res:header("X-Split", "a\r\nInjected: yes"):send("split")
end)

app.get("/return-function", function(req, res)
    return function() end
end)

local stashed, stashed_res
app.get("/stash", function(req, res)
    stashed, stashed_res = req, res
    return "stashed"
end)

app.get("/use-stashed", function(req, res)
    return stashed.path -- the stashed req belongs to a finished request
end)

app.get("/use-stashed-res", function(req, res)
    stashed_res:status(201) -- so does the stashed res
    return "not reached"
end)

app.get("/stashed-names", function(req, res)
    return tostring(stashed) .. "|" .. tostring(stashed_res)
end)
