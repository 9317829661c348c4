-- hello.lua: the smallest Tycho app, and the routes `make bench` measures.
local app = require "tycho"

app.get("/", function(req, res)
  return "Tycho is running. Try /plaintext, /json, /users/7 or POST /echo.\n"
end)

-- A string return is the body, with status 200 and text/plain.
app.get("/plaintext", function(req, res)
  return "Hello, World!"
end)

app.get("/json", function(req, res)
  res:json({ message = "Hello, World!" })
end)

-- :id is a route parameter; req.query holds the decoded query string.
app.get("/users/:id", function(req, res)
  res:json({ id = req.params.id, q = req.query.q })
end)

-- req:get_header finds one header without building the req.headers table.
app.post("/echo", function(req, res)
  res:header("Content-Type", req:get_header("Content-Type") or "application/octet-stream")
  res:send(req.body)
end)
