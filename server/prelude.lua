-- prelude.lua: the Lua half of the request path, compiled into the binary.
-- It gets the `tycho` module table and the C function that makes req/res
-- objects, adds app.use, and returns dispatch(handler, r). Middleware and
-- next() live here, in Lua, so that a handler may one day yield through them
-- (C frames cannot be resumed across in LuaJIT).
local app, new_objects = ...

local middleware = {}

function app.use(fn)
  if type(fn) ~= "function" then
    error("app.use: expected a function, got " .. type(fn), 2)
  end
  middleware[#middleware + 1] = fn
end

return function(handler, r)
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
