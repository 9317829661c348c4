-- The fixture of tests/integration/test_static.c, which copies this directory
-- to a temporary one and adds the files it generates there (a file of more
-- than 1 MiB, one file per content type, dotfiles, an empty file, symlinks
-- pointing inside and outside public/, a directory without an index).
--   STATIC_MIDDLEWARE set: a middleware runs around every route, so the
--     mounts are served through their Lua handler (otherwise C serves them
--     without entering Lua); it answers /static/private/... with 403 itself,
--     sleeps first when the query has sleep=1, and adds X-Mw after next().
local app = require "tycho"

-- The directory this script is in, as an absolute path (the test passes one).
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$")

if os.getenv("STATIC_MIDDLEWARE") then
  app.use(function(req, res, next)
    if req.path:find("^/static/private/") then
      res:status(403):send("private")
      return
    end
    if req.query.sleep then
      tycho.sleep(0.05)
    end
    next()
    res:header("X-Mw", "after")
  end)
end

app.static("/static", "public", {max_age = 60})
app.static("/dots", "public", {dotfiles = true, index = false})
app.static("/abs/", here .. "/public", {index = "home.html"})

-- A route of its own under a mount wins over the mount's wildcard.
app.get("/static/special.txt", function()
  return "a route wins over the mount"
end)

app.get("/hello", function()
  return "hello"
end)

-- app.static at request time is refused (a 500, and the log says why).
app.get("/late", function()
  app.static("/late", "public")
end)
