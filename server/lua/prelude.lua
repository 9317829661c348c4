-- prelude.lua: the Lua half of the request path, compiled into the binary.
-- It gets the `tycho` module table, the C function that makes req/res
-- objects, the tables of req's and res's methods (it adds those written in
-- Lua), form_pairs (a urlencoded body read as the query string is) and the
-- handlers table (ids -1 and -2 answer 404 and 405 when the app does). It
-- adds app.use, app.not_found and app.error, and returns dispatch(handler, r)
-- and seal(), which gen.c calls once the scripts have loaded. Middleware and
-- next() live here, in Lua, so that a handler may yield through them (C
-- frames cannot be resumed across in LuaJIT).
local app, new_objects, req_methods, res_methods, form_pairs, handlers, web = ...
local json_decode, json_encode = app.json.decode, app.json.encode
local type, error, pcall, xpcall, tostring = type, error, pcall, xpcall, tostring
local getmetatable = getmetatable
local traceback = debug.traceback
local abort = app.abort
local abort_mt = debug.getregistry()["tycho.abort"]

-- One script must not be able to stop the server for every client.
os.exit = function()
  error("os.exit is disabled in Tycho: it would stop the server for every client", 2)
end

local middleware = {}
local sealed = false
local error_fn

-- Registration functions run while the scripts load only.
local function loading(fn, what)
  if sealed then
    error(what .. ": only while the scripts load, not in a handler", 3)
  end
  if type(fn) ~= "function" then
    error(what .. ": expected a function, got " .. type(fn), 3)
  end
end

function app.use(fn)
  if sealed then
    error("app.use: middleware can only be added while the scripts load, not in a handler", 2)
  end
  if type(fn) ~= "function" then
    error("app.use: expected a function, got " .. type(fn), 2)
  end
  middleware[#middleware + 1] = fn
end

-- The server's own answers to a request no route takes, when middleware runs for it.
local function default_not_found() return "Not Found\n" end
handlers[-1] = default_not_found
handlers[-2] = function() return "Method Not Allowed\n" end

-- app.not_found(fn): fn(req, res) answers a request no route takes (the status is 404).
function app.not_found(fn)
  loading(fn, "app.not_found")
  handlers[-1] = fn
end

-- app.error(fn): fn(err, req, res) answers a request whose handler raised (the status is 500).
function app.error(fn)
  loading(fn, "app.error")
  error_fn = fn
end

-- Ends registration; returns how many middleware functions there are (with
-- none, C serves app.static routes without entering Lua) and whether the
-- app answers 404 itself.
local function seal()
  sealed = true
  return #middleware, handlers[-1] ~= default_not_found
end

-- ---- req and res methods written in Lua ---------------------------------------------

-- req:json(): the body decoded, or a 400 that says why.
function req_methods.json(req)
  local body = req.body
  if body == "" then
    abort(400, "expected a JSON body, got an empty one")
  end
  local value, err = json_decode(body)
  if value == nil then
    abort(400, "the body is not valid JSON: " .. err)
  end
  return value
end

local function form_body(req, fn)
  local ctype = req.headers["content-type"]
  if ctype and not ctype:lower():find("^%s*application/x%-www%-form%-urlencoded") then
    abort(415, fn .. ": expected a body of type application/x-www-form-urlencoded, got "
      .. ctype)
  end
  return req.body
end

-- req:form(): the urlencoded body's fields, each its last value (as req.query).
function req_methods.form(req)
  return form_pairs(form_body(req, "req:form"))
end

-- req:form_all(name): every value of name in the urlencoded body, in order.
function req_methods.form_all(req, name)
  if type(name) ~= "string" then
    error("req:form_all: expected a field name (a string), got " .. type(name), 2)
  end
  return form_pairs(form_body(req, "req:form_all"), name)
end

-- ---- cookies (RFC 6265) --------------------------------------------------------------

local crypto = tycho.crypto
local date = os.date
local floor = math.floor

-- A cookie name is an HTTP token; a value, cookie-octets (no space, quote, comma, ; or \).
local function check_cookie(fn, name, value)
  if type(name) ~= "string" or not name:find("^[!#$%%&'*+%-.^_`|~%w]+$") then
    error(fn .. ": bad cookie name " .. tostring(name) .. " (letters, digits, !#$%&'*+-.^_`|~)", 3)
  end
  if type(value) ~= "string" then
    error(fn .. ": the value must be a string, got " .. type(value), 3)
  end
  if value:find('[%c%s",;\\\127-\255]') then
    error(fn .. ": the value of " .. name .. " holds a space, a quote, a comma, a semicolon, "
      .. "a backslash or a byte that is not ASCII: encode it first (tycho.crypto.base64url)", 3)
  end
end

local same_sites = { Strict = true, Lax = true, None = true }

-- The attributes of a Set-Cookie line from opts; defaults: Path=/, HttpOnly, SameSite=Lax.
local function cookie_attributes(fn, opts)
  local parts = {}
  if opts.max_age ~= nil then
    if type(opts.max_age) ~= "number" then
      error(fn .. ": max_age must be a number of seconds", 3)
    end
    parts[#parts + 1] = "Max-Age=" .. floor(opts.max_age)
  end
  if opts.expires ~= nil then
    if type(opts.expires) ~= "number" then
      error(fn .. ": expires must be a time in seconds since the epoch (tycho.now())", 3)
    end
    parts[#parts + 1] = "Expires=" .. date("!%a, %d %b %Y %H:%M:%S GMT", floor(opts.expires))
  end
  local path = opts.path == nil and "/" or opts.path
  if path then
    parts[#parts + 1] = "Path=" .. path
  end
  if opts.domain then
    parts[#parts + 1] = "Domain=" .. opts.domain
  end
  if opts.secure then
    parts[#parts + 1] = "Secure"
  end
  if opts.http_only ~= false then
    parts[#parts + 1] = "HttpOnly"
  end
  local same_site = opts.same_site == nil and "Lax" or opts.same_site
  if same_site then
    if not same_sites[same_site] then
      error(fn .. ': same_site must be "Strict", "Lax" or "None", got ' .. tostring(same_site),
        3)
    end
    if same_site == "None" and not opts.secure then
      error(fn .. ': same_site = "None" needs secure = true (browsers refuse it otherwise)', 3)
    end
    parts[#parts + 1] = "SameSite=" .. same_site
  end
  return #parts > 0 and "; " .. table.concat(parts, "; ") or ""
end

-- res:cookie(name, value[, opts]): a Set-Cookie header; opts.signed signs the value.
function res_methods.cookie(res, name, value, opts)
  opts = opts or {}
  check_cookie("res:cookie", name, value)
  if opts.signed then
    local ok, signed = pcall(crypto.sign, value, "cookie:" .. name)
    if not ok then
      error("res:cookie: " .. tostring(signed):gsub("^.-tycho%.crypto%.sign: ", ""), 2)
    end
    value = signed
  end
  res:add_header("Set-Cookie", name .. "=" .. value .. cookie_attributes("res:cookie", opts))
  return res
end

-- res:clear_cookie(name[, opts]): tells the browser to drop it (same path and domain).
function res_methods.clear_cookie(res, name, opts)
  opts = opts or {}
  check_cookie("res:clear_cookie", name, "")
  local o = { path = opts.path, domain = opts.domain, secure = opts.secure,
              http_only = opts.http_only, same_site = opts.same_site, max_age = 0, expires = 0 }
  res:add_header("Set-Cookie", name .. "=" .. cookie_attributes("res:clear_cookie", o))
  return res
end

-- req:signed_cookie(name): the value of a cookie set with signed = true, or nil and why.
function req_methods.signed_cookie(req, name)
  local raw = req.cookies[name]
  if raw == nil then
    return nil, "no such cookie"
  end
  return crypto.unsign(raw, "cookie:" .. name)
end

web(app, req_methods)

-- ---- streamed request bodies (routes with stream_body = true) ----------------------------

-- req:read's C half says false when no byte has come yet: then wait here (C frames cannot be
-- resumed in LuaJIT) and ask again. A body that fails ends the handler with its status.
local c_read, c_wait_body, c_streamed = req_methods._read, req_methods._wait_body,
  req_methods._streamed
req_methods._read, req_methods._wait_body, req_methods._streamed = nil, nil, nil
local body_failures = {
  [413] = "the request body is larger than this route's max_body",
  [408] = "the request body stopped arriving (--body-timeout)",
  [400] = "the request body is malformed or ended early",
}

function req_methods.read(req, n)
  if n == nil then
    n = 65536
  elseif type(n) ~= "number" then
    error("req:read: expected a number of bytes, got " .. type(n), 2)
  end
  while true do
    local data, status = c_read(req, n)
    if data ~= false then
      if status then
        abort(status, body_failures[status] or "the request body failed")
      end
      return data
    end
    c_wait_body(req)
  end
end

-- The helpers that need the whole body say so on a streamed route (req.body is nil there).
-- (req:multipart reads a streamed body itself: web.lua.)
for _, name in ipairs({ "json", "form", "form_all" }) do
  local whole = req_methods[name]
  req_methods[name] = function(req, ...)
    if c_streamed(req) then
      error("req:" .. name .. ": the body of this route is streamed (stream_body = true): "
        .. "read it with req:read", 2)
    end
    return whole(req, ...)
  end
end

-- ---- streamed responses and Server-Sent Events ----------------------------------------

-- res:write's C half sends at once and says false when the client is slow: then wait here
-- (C frames cannot be resumed in LuaJIT). A client that leaves meanwhile ends the handler.
local c_write, c_drain, c_closed = res_methods.write, res_methods._drain, res_methods._closed
res_methods._drain, res_methods._closed = nil, nil

function res_methods.write(res, data)
  local ok, err = c_write(res, data)
  if ok == false then
    c_drain(res, false)
    return true
  end
  return ok, err
end

function res_methods.flush(res)
  if c_closed(res) then
    return nil, "closed"
  end
  local ok, err = c_write(res, "")    -- the head, if it has not gone
  if ok == nil then
    return nil, err
  end
  c_drain(res, true)
  return true
end

local sse_methods = {}
sse_methods.__index = sse_methods

-- A field value may not hold a line break (it would end the field early).
local function sse_line(fn, name, value)
  local s = tostring(value)
  if s:find("[\r\n]") then
    error(fn .. ": " .. name .. " may not contain a line break", 3)
  end
  return name .. ": " .. s .. "\n"
end

-- Each line of data (CRLF, CR or LF end one) becomes its own "data:" field.
local function sse_data(data, out)
  local s = tostring(data)
  s = s:gsub("\r\n", "\n"):gsub("\r", "\n")
  for line in (s .. "\n"):gmatch("([^\n]*)\n") do
    out[#out + 1] = "data: " .. line .. "\n"
  end
end

-- Sends the lines in out and waits until they have gone: an event is of use only once sent.
local function sse_emit(stream, out)
  local ok, err = stream.res:write(table.concat(out))
  if ok then
    return stream.res:flush()
  end
  return ok, err
end

function sse_methods.send(stream, ev)
  if type(ev) ~= "table" then
    error("stream:send: expected a table {event=, data=, id=, retry=}, got " .. type(ev), 2)
  end
  local out = {}
  if ev.event ~= nil then out[#out + 1] = sse_line("stream:send", "event", ev.event) end
  if ev.id ~= nil then out[#out + 1] = sse_line("stream:send", "id", ev.id) end
  if ev.retry ~= nil then
    if type(ev.retry) ~= "number" or ev.retry < 0 or ev.retry % 1 ~= 0 then
      error("stream:send: retry must be a whole number of milliseconds", 2)
    end
    out[#out + 1] = ("retry: %d\n"):format(ev.retry)
  end
  local data = ev.data
  if type(data) == "table" then
    data = json_encode(data)
  end
  if data ~= nil or ev.event ~= nil then
    sse_data(data or "", out)
  end
  if #out == 0 then
    error("stream:send: nothing to send (give data, event, id or retry)", 2)
  end
  out[#out + 1] = "\n"
  return sse_emit(stream, out)
end

-- Each line of text becomes a comment line (": ..."), which clients ignore.
function sse_methods.comment(stream, text)
  local out = {}
  local s = tostring(text or ""):gsub("\r\n", "\n"):gsub("\r", "\n")
  for line in (s .. "\n"):gmatch("([^\n]*)\n") do
    out[#out + 1] = ": " .. line .. "\n"
  end
  return sse_emit(stream, out)
end

-- Ends the heartbeat timer (the response itself ends when the handler returns).
function sse_methods.close(stream)
  if stream.heartbeat then
    stream.heartbeat:cancel()
    stream.heartbeat = nil
  end
end

function res_methods.sse(res, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("res:sse: opts must be a table, got " .. type(opts), 2)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "heartbeat" then
      error("res:sse: unknown option \"" .. tostring(k) .. "\" (expected heartbeat)", 2)
    end
  end
  local every = opts.heartbeat
  if every ~= nil and (type(every) ~= "number" or every <= 0) then
    error("res:sse: heartbeat must be a number of seconds above 0", 2)
  end
  res:header("Content-Type", "text/event-stream; charset=utf-8")
  res:header("Cache-Control", "no-cache")
  res:header("X-Accel-Buffering", "no")
  local stream = setmetatable({ res = res }, sse_methods)
  local ok, err = res:flush()
  if not ok then
    return nil, err
  end
  if every then
    -- A comment line keeps proxies and browsers from taking a quiet stream for a dead one.
    -- It goes without waiting; a finished request ends the timer.
    local timer
    timer = app.timer.every(every, function()
      local ran, sent = pcall(c_write, res, ": heartbeat\n\n")
      if not ran or sent == nil then
        timer:cancel()
      end
    end)
    stream.heartbeat = timer
  end
  return stream
end

-- ---- WebSocket ------------------------------------------------------------------------

-- bind_ws.c's half: the upgrade and the ws object's C methods. Waiting is done here, in Lua.
local ws_c = app._ws
app._ws = nil
local ws_methods = ws_c.methods
local ws_receive, ws_wait, ws_send, ws_finish =
  ws_methods._receive, ws_methods._wait, ws_methods._send, ws_methods._finish
ws_methods._receive, ws_methods._wait, ws_methods._send, ws_methods._finish = nil, nil, nil, nil

function ws_methods.receive(ws)
  while true do
    local msg, kind, code = ws_receive(ws)
    if msg ~= false then
      return msg, kind, code
    end
    ws_wait(ws)
  end
end

function ws_methods.send(ws, msg, binary)
  if type(msg) ~= "string" then
    error("ws:send: expected a string, got " .. type(msg), 2)
  end
  local ok, err = ws_send(ws, msg, binary)
  if ok == false then
    ws_wait(ws, true)                 -- a slow client: until most of the output has gone
    return true
  end
  return ok, err
end

local ws_options = { max_message = true, max_frame = true, idle_timeout = true,
                     ping_interval = true, protocols = true }

function app.ws(path, fn, opts)
  loading(fn, "app.ws")
  if opts ~= nil and type(opts) ~= "table" then
    error("app.ws: opts must be a table, got " .. type(opts), 2)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if not ws_options[k] then
      error("app.ws: unknown option \"" .. tostring(k) .. "\" (expected max_message, "
        .. "max_frame, idle_timeout, ping_interval or protocols)", 2)
    end
  end
  if opts.protocols ~= nil and type(opts.protocols) ~= "table" then
    error("app.ws: protocols must be a list of strings", 2)
  end
  app.get(path, function(req, res)
    local ws, status, why = ws_c.accept(res, opts)
    if not ws then
      res:status(status)
      if status == 426 then
        res:header("Sec-WebSocket-Version", "13")
      end
      return why .. "\n"
    end
    local ok, err = xpcall(fn, traceback, ws, req)
    ws_finish(ws, not ok)
    if not ok then
      error(err, 0)
    end
  end)
end

-- ---- dispatch -----------------------------------------------------------------------

-- What the handler returns is answered in C (task.c): a string is the body, a table is sent
-- as JSON, nil (or res itself) sends what res holds.
local function run(handler, req, res)
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

-- Keeps tycho.abort's value as it is; gives any other error its traceback.
local function with_traceback(err)
  if type(err) == "table" and getmetatable(err) == abort_mt then
    return err
  end
  return { err = err, trace = traceback(tostring(err), 2) }
end

-- With app.error: the error is logged here, and fn's answer replaces the generic 500.
-- A returned table is sent as JSON here, inside the guard, so that one JSON cannot hold
-- reaches fn too.
local function run_and_send(handler, req, res)
  local result = run(handler, req, res)
  if type(result) == "table" then
    res:json(result)
    return nil
  end
  return result
end

local function run_guarded(handler, req, res)
  local ok, result = xpcall(run_and_send, with_traceback, handler, req, res)
  if ok then
    return result
  end
  if result.trace == nil then
    error(result, 0)                  -- tycho.abort: C answers it
  end
  tycho.log.error(req.method .. " " .. req.path .. " [request " .. req.id .. "]: "
    .. result.trace)
  res:status(500)
  return error_fn(result.err, req, res)
end

local function dispatch(handler, r)
  local req, res = new_objects(r)
  if error_fn then
    return run_guarded(handler, req, res)
  end
  if #middleware == 0 then
    return handler(req, res)          -- a tail call: the common case costs nothing more
  end
  return run(handler, req, res)
end

return dispatch, seal
