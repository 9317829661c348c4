-- The fixture of tests/integration/test_gzip.c, which copies this directory to
-- a temporary one and writes public/ there (files, their .gz siblings, a stale
-- one). Every body below but /small is over the default --gzip-min-bytes.
local app = require "tycho"

-- 5600 bytes of text; clients check what they decompress against GET /plain.
local big = string.rep("Lorem ipsum dolor sit amet, ", 200)

app.get("/text", function() return big end)
app.get("/plain", function(req, res) res:header("Content-Encoding", "identity"):send(big) end)
app.get("/small", function() return string.rep("ab", 50) end)
app.get("/send", function(req, res) res:send(big) end)
app.get("/json", function()
  local users = {}
  for i = 1, 100 do
    users[i] = {id = i, name = "user " .. i, email = "user" .. i .. "@example.com"}
  end
  return {users = users}
end)
app.get("/resjson", function(req, res) res:json({text = big}) end)
app.get("/png", function(req, res) res:header("Content-Type", "image/png"):send(big) end)
app.get("/own", function(req, res) res:header("Content-Encoding", "br"):send(big) end)
app.get("/partial", function(req, res)
  res:status(206):header("Content-Range", "bytes 0-5599/10000"):send(big)
end)
app.get("/vary", function(req, res) res:header("Vary", "Origin"):send(big) end)
app.get("/off", function() return big end, {gzip = false})
app.get("/on", function() return big end, {gzip = true})
app.route("GET", "/route-on", function() return big end, {gzip = true})

app.static("/s", "public")
app.static("/nogz", "public", {gzip = false})
