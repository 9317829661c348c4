-- bench/gzip/app.lua: the jsongz workload's app, run with --gzip --gzip-level 1
-- --gzip-min-bytes 1024. GET /users.json encodes 50 users (about 4 KiB of
-- JSON) per request; bench/run.sh's nginx encodes the same table with cjson
-- and compresses it with gzip on at the same level, minimum length and types.
local app = require "tycho"

local users = {}
for i = 1, 50 do
    users[i] = { id = i, name = "user" .. i, email = "user" .. i .. "@example.com",
                 active = i % 2 == 0 }
end

app.get("/users.json", function()
    return { users = users }
end)
