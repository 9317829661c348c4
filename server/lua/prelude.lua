-- prelude.lua: the Lua half of the request path, compiled into the binary.
-- It gets the `tycho` module table and the C function that makes req/res
-- objects, adds app.use, and returns dispatch(handler, r) and seal(), which
-- gen.c calls once the scripts have loaded. Middleware and
-- next() live here, in Lua, so that a handler may one day yield through them
-- (C frames cannot be resumed across in LuaJIT).
local app, new_objects = ...

-- One script must not be able to stop the server for every client.
os.exit = function()
  error("os.exit is disabled in Tycho: it would stop the server for every client", 2)
end

local middleware = {}
local sealed = false

function app.use(fn)
  if sealed then
    error("app.use: middleware can only be added while the scripts load, not in a handler", 2)
  end
  if type(fn) ~= "function" then
    error("app.use: expected a function, got " .. type(fn), 2)
  end
  middleware[#middleware + 1] = fn
end

-- Ends registration; returns how many middleware functions there are (with
-- none, C serves app.static routes without entering Lua).
local function seal()
  sealed = true
  return #middleware
end

local function dispatch(handler, r)
  local req, res = new_objects(r)
  local n = #middleware
  if n == 0 then
    return handler(req, res)
  end
  local i, result = 0, nil
  local function next_step()
    i = i + 1
    local fn = middleware[i]
    if fn then
      fn(req, res, next_step)
    elseif i == n + 1 then
      result = handler(req, res)
    end
  end
  next_step()
  return result
end

return dispatch, seal
