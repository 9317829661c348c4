-- web.lua: the everyday web helpers, compiled into the binary and run by the
-- prelude once per Lua state (so per worker and per script generation):
-- sessions (tycho.session) with CSRF tokens (tycho.csrf), CORS (tycho.cors), the redirect to
-- HTTPS (tycho.https_redirect),
-- a rate limiter (tycho.rate_limit), HTML escaping and templates
-- (tycho.html), and req:multipart() (whole, or streamed with its file parts written to disk
-- by bind_upload.c). It gets the tycho module and the
-- tables of req's and res's methods.
local tycho, req_methods = ...
local crypto, abort = tycho.crypto, tycho.abort
local type, error, pairs, ipairs, tostring = type, error, pairs, ipairs, tostring
local setmetatable, pcall, select = setmetatable, pcall, select
local concat, floor, ceil = table.concat, math.floor, math.ceil
local byte, sub, find, gsub, lower, format = string.byte, string.sub, string.find, string.gsub,
  string.lower, string.format

local function check_options(fn, opts, known)
  if opts == nil then
    return {}
  end
  if type(opts) ~= "table" then
    error(fn .. ": expected a table of options, got " .. type(opts), 3)
  end
  for k in pairs(opts) do
    if not known[k] then
      error(fn .. ": unknown option " .. tostring(k), 3)
    end
  end
  return opts
end

-- ---- sessions ----------------------------------------------------------------------------

local session = {}
local live = setmetatable({}, { __mode = "k" })   -- req -> what its session middleware knows

-- Session data is kept as tycho.json text in every store (cjson wrote 14 significant
-- digits, so an id such as 123456789012345 came back changed, and [] came back as {}).
local json_encode, json_decode = tycho.json.encode, tycho.json.decode

-- The table a stored text holds, or nil (missing, not JSON, not a table).
local function decode_table(text)
  local data = type(text) == "string" and json_decode(text)
  return type(data) == "table" and data or nil
end

local function new_id()
  return crypto.base64url(crypto.random(24))
end

-- The stores: load(id) -> table or nil; save(id, table, ttl); drop(id).
local function dict_store(dict)
  return {
    load = function(id) return decode_table(dict:get("session:" .. id)) end,
    save = function(id, data, ttl)
      local ok, err = dict:set("session:" .. id, json_encode(data), ttl)
      if not ok then error("tycho.session: cannot save the session: " .. tostring(err), 0) end
    end,
    drop = function(id) dict:delete("session:" .. id) end,
  }
end

local function redis_store(red)
  return {
    load = function(id) return decode_table(red:call("GET", "session:" .. id)) end,
    save = function(id, data, ttl)
      local ok, err = red:call("SET", "session:" .. id, json_encode(data), "EX", ttl)
      if not ok then error("tycho.session: cannot save the session: " .. tostring(err), 0) end
    end,
    drop = function(id) red:call("DEL", "session:" .. id) end,
  }
end

-- A tycho.db database (SQLite or PostgreSQL): the table tycho_sessions, made on first use.
-- The same SQL runs on both; rows past their time are deleted now and then by a save.
local function db_store(db)
  local ready = false
  local saves = 0
  local function prepare()
    if ready then return end
    local ok, err = db:exec("CREATE TABLE IF NOT EXISTS tycho_sessions (id TEXT PRIMARY KEY, "
      .. "data TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL)")
    if not ok then error("tycho.session: cannot make the table tycho_sessions: " .. err, 0) end
    ready = true
  end
  return {
    load = function(id)
      prepare()
      local rows = db:query("SELECT data FROM tycho_sessions WHERE id = $1 AND expires > $2",
        id, tycho.now())
      return rows and rows[1] and decode_table(rows[1].data) or nil
    end,
    save = function(id, data, ttl)
      prepare()
      local now = tycho.now()
      local ok, err = db:exec("INSERT INTO tycho_sessions (id, data, expires) VALUES ($1, $2, $3)"
        .. " ON CONFLICT (id) DO UPDATE SET data = excluded.data, expires = excluded.expires",
        id, json_encode(data), now + ttl)
      if not ok then error("tycho.session: cannot save the session: " .. tostring(err), 0) end
      saves = saves + 1
      if saves % 100 == 0 then
        db:exec("DELETE FROM tycho_sessions WHERE expires < $1", now)
      end
    end,
    drop = function(id)
      prepare()
      db:exec("DELETE FROM tycho_sessions WHERE id = $1", id)
    end,
  }
end

local function store_of(store)
  if store == nil or store == "cookie" then
    return nil                        -- the data itself in a signed cookie
  end
  local t = type(store)
  if (t == "userdata" or t == "table") and store.call then
    return redis_store(store)
  end
  if (t == "userdata" or t == "table") and store.query and store.exec and store.transaction then
    return db_store(store)
  end
  if (t == "userdata" or t == "table") and store.get and store.set and store.delete then
    return dict_store(store)
  end
  error('tycho.session: store must be "cookie", a tycho.shared.dict, a tycho.redis handle or '
    .. "a tycho.db database", 3)
end

-- The cookie store's cookie: the data and its expiry as JSON, base64url, signed.
local function cookie_load(raw, name, now)
  local payload = raw and crypto.unsign(raw, "session:" .. name)
  local json = payload and crypto.from_base64url(payload)
  local box = decode_table(json)
  if box and type(box.d) == "table" and type(box.e) == "number" and box.e > now then
    return box.d
  end
  return nil
end

local function cookie_value(name, data, now, ttl)
  local value = crypto.sign(crypto.base64url(json_encode({ d = data, e = now + ttl })),
    "session:" .. name)
  if #value > 4000 then
    error("tycho.session: the session is " .. #value .. " bytes as a cookie, over the 4000 "
      .. "browsers keep: store less, or use a tycho.shared.dict or tycho.redis store", 0)
  end
  return value
end

local session_options = { store = true, ttl = true, name = true, secure = true,
  same_site = true, path = true, domain = true }

-- tycho.session{...}: middleware that gives req.session, saved after the handler when changed.
local function make_session(opts)
  opts = check_options("tycho.session", opts, session_options)
  local store = store_of(opts.store)
  local ttl = opts.ttl or 86400
  local name = opts.name or "tycho_session"
  if type(ttl) ~= "number" or ttl <= 0 then
    error("tycho.session: ttl must be a number of seconds above 0", 2)
  end
  local cookie_opts = { max_age = ttl, secure = opts.secure, same_site = opts.same_site,
    path = opts.path, domain = opts.domain }
  if not pcall(crypto.sign, "", "check") then  -- no secret: say so at load time
    error("tycho.session: no secret to sign the session cookie with: start Tycho with "
      .. "--secret-file FILE or the variable TYCHO_SECRET", 2)
  end

  return function(req, res, nxt)
    local now = tycho.now()
    local raw = req.cookies[name]
    local st = { name = name }
    local data
    if store then
      st.id = raw and crypto.unsign(raw, "session-id:" .. name)
      data = st.id and store.load(st.id)
      if not data then st.id = nil end
    else
      data = cookie_load(raw, name, now)
    end
    st.had = data ~= nil
    data = data or {}
    st.before = json_encode(data)
    live[req] = st
    req.session = data
    nxt()
    local after = req.session
    if st.destroyed then
      if store and st.id then store.drop(st.id) end
      res:clear_cookie(name, { path = opts.path, domain = opts.domain })
      return
    end
    local now_json = json_encode(after)
    if now_json == st.before and not st.rotated and st.had then
      return
    end
    if now_json == "{}" and not st.had then
      return                          -- nothing to keep: no cookie for a visitor
    end
    if store then
      if st.rotated and st.id then store.drop(st.id) end
      if st.rotated or not st.id then st.id = new_id() end
      store.save(st.id, after, ttl)
      res:cookie(name, crypto.sign(st.id, "session-id:" .. name), cookie_opts)
    else
      res:cookie(name, cookie_value(name, after, tycho.now(), ttl), cookie_opts)
    end
  end
end

local function session_of(req, fn)
  local st = live[req]
  if not st then
    error(fn .. ": no session: add app.use(tycho.session{...}) before the routes that use it", 3)
  end
  return st
end

-- tycho.session.rotate(req): a new id for the same data (after a log-in).
function session.rotate(req)
  session_of(req, "tycho.session.rotate").rotated = true
  req.session._csrf = nil             -- a token known before the log-in must not work after
end

-- tycho.session.destroy(req): the data goes, and the cookie (a log-out).
function session.destroy(req)
  session_of(req, "tycho.session.destroy").destroyed = true
  req.session = {}
end

-- tycho.session.csrf_token(req): this session's token for forms (made on first use).
function session.csrf_token(req)
  session_of(req, "tycho.session.csrf_token")
  local s = req.session
  if type(s._csrf) ~= "string" then
    s._csrf = crypto.base64url(crypto.random(24))
  end
  return s._csrf
end

setmetatable(session, { __call = function(_, opts) return make_session(opts) end })
tycho.session = session

local unsafe = { POST = true, PUT = true, PATCH = true, DELETE = true }

-- tycho.csrf(): middleware refusing (403) a POST, PUT, PATCH or DELETE without this session's
-- token, sent as the form field csrf_token or the header X-CSRF-Token.
function tycho.csrf()
  return function(req, res, nxt)
    if unsafe[req.method] then
      session_of(req, "tycho.csrf")
      local want = req.session._csrf
      local sent = req.headers["x-csrf-token"]
      if not sent then
        local ctype = req.headers["content-type"] or ""
        if find(lower(ctype), "application/x-www-form-urlencoded", 1, true) then
          sent = req:form().csrf_token
        end
      end
      if type(want) ~= "string" or type(sent) ~= "string" or not crypto.equals(sent, want) then
        abort(403, "the form's CSRF token is missing or wrong: reload the page and try again")
      end
    end
    nxt()
  end
end

-- ---- CORS ----------------------------------------------------------------------------------

local cors_options = { origins = true, methods = true, headers = true, expose = true,
  credentials = true, max_age = true }

local function list(v, default)
  if v == nil then return default end
  if type(v) == "table" then return concat(v, ", ") end
  return tostring(v)
end

-- tycho.cors{...}: Access-Control-* headers for allowed origins, and preflights answered.
function tycho.cors(opts)
  opts = check_options("tycho.cors", opts, cors_options)
  local origins = opts.origins or "*"
  local allowed
  if origins == "*" then
    if opts.credentials then
      error('tycho.cors: origins = "*" cannot go with credentials = true (browsers refuse it): '
        .. "list the origins", 2)
    end
    allowed = function() return true end
  elseif type(origins) == "table" then
    local set = {}
    for _, o in ipairs(origins) do set[o] = true end
    allowed = function(o) return set[o] == true end
  elseif type(origins) == "function" then
    allowed = origins
  else
    error('tycho.cors: origins must be "*", a list of origins or a function(origin)', 2)
  end
  local methods = list(opts.methods, "GET, HEAD, POST, PUT, PATCH, DELETE")
  local expose = opts.expose and list(opts.expose)
  local max_age = tostring(opts.max_age or 600)
  return function(req, res, nxt)
    local origin = req.headers.origin
    -- Whether the answer has CORS headers depends on Origin, allowed or not, sent or not: a
    -- cache must not give a response made without them to an allowed origin.
    if origins ~= "*" then res:add_header("Vary", "Origin") end
    if not origin or not allowed(origin) then
      return nxt()
    end
    res:header("Access-Control-Allow-Origin", origins == "*" and "*" or origin)
    if opts.credentials then res:header("Access-Control-Allow-Credentials", "true") end
    local wanted = req.headers["access-control-request-method"]
    if req.method == "OPTIONS" and wanted then
      res:header("Access-Control-Allow-Methods", methods)
      local headers = opts.headers and list(opts.headers)
        or req.headers["access-control-request-headers"]
      if headers then res:header("Access-Control-Allow-Headers", headers) end
      res:header("Access-Control-Max-Age", max_age)
      res:status(204)
      res:send("")
      return                          -- a preflight: answered here, whatever the route
    end
    if expose then res:header("Access-Control-Expose-Headers", expose) end
    nxt()
  end
end

-- ---- HTTPS ----------------------------------------------------------------------------------

local https_options = { port = true, status = true, host = true }
local redirect_statuses = { [301] = true, [302] = true, [307] = true, [308] = true }

-- The host of a Host header without its port ("[::1]:8080" -> "[::1]"), or nil when it is not
-- a plain host name or address (it goes into a Location header).
local function bare_host(host)
  if type(host) ~= "string" then return nil end
  host = host:match("^(%[[%x:%.]+%])") or host:match("^([%w%.%-]+)")
  return host
end

-- tycho.https_redirect{port =, status =, host =}: middleware sending a request that came over
-- plain HTTP to the same path and query on HTTPS: 301 for GET and HEAD, 308 for the others (so
-- a POST stays a POST); a request over HTTPS goes on.
function tycho.https_redirect(opts)
  opts = check_options("tycho.https_redirect", opts, https_options)
  local port = opts.port or tycho.tls_port or 443
  if type(port) ~= "number" or port < 1 or port > 65535 or port % 1 ~= 0 then
    error("tycho.https_redirect: port must be a whole number from 1 to 65535", 2)
  end
  if opts.status ~= nil and not redirect_statuses[opts.status] then
    error("tycho.https_redirect: status must be 301, 302, 307 or 308", 2)
  end
  if opts.host ~= nil and not (bare_host(opts.host) == opts.host) then
    error("tycho.https_redirect: host must be a host name or address without a port", 2)
  end
  local suffix = port == 443 and "" or ":" .. port
  return function(req, res, nxt)
    if req.scheme == "https" then
      return nxt()
    end
    local host = opts.host or bare_host(req.headers.host)
    if not host then
      abort(400, "Bad Request: a Host header is needed to redirect to HTTPS\n")
    end
    local query = req.query_string
    local status = opts.status or ((req.method == "GET" or req.method == "HEAD") and 301 or 308)
    res:redirect("https://" .. host .. suffix .. req.path .. (query ~= "" and "?" .. query or ""),
      status)
  end
end

-- ---- rate limits ----------------------------------------------------------------------------

local limit_options = { rate = true, burst = true, key = true, dict = true, name = true }
local limiters = 0                    -- numbers the limiters, the same in every worker

-- tycho.rate_limit{rate = N, burst = M, key = fn, dict = d}: a token bucket per key (the
-- client's address by default) shared by every worker; past it 429 with Retry-After.
function tycho.rate_limit(opts)
  opts = check_options("tycho.rate_limit", opts, limit_options)
  local rate = opts.rate
  if type(rate) ~= "number" or rate <= 0 then
    error("tycho.rate_limit: rate must be a number of requests a second above 0", 2)
  end
  local burst = opts.burst or math.max(1, rate)
  if type(burst) ~= "number" or burst < 1 then
    error("tycho.rate_limit: burst must be a number, 1 or more", 2)
  end
  local key = opts.key or function(req) return req.remote_addr end
  local dict = opts.dict or tycho.shared.dict("tycho.rate_limit")
  -- Each limiter its own buckets (two on one dictionary would share a client's otherwise).
  limiters = limiters + 1
  local prefix = "rate:" .. tostring(opts.name or limiters) .. ":"
  local warned = false
  return function(req, res, nxt)
    local k = key(req)
    if k ~= nil then
      local ok, wait = dict:take(prefix .. tostring(k), rate, burst)
      if ok == nil then               -- the dictionary failed: let it through, say so once
        if not warned then
          warned = true
          tycho.log.warn("tycho.rate_limit " .. prefix .. ": not limiting: " .. tostring(wait))
        end
      end
      if ok == false then
        res:status(429)
        res:header("Retry-After", tostring(ceil(wait)))
        res:send("Too Many Requests\n")
        return
      end
    end
    nxt()
  end
end

-- ---- HTML escaping and templates -----------------------------------------------------------

local html = {}
local entities = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
  ["'"] = "&#39;" }

-- tycho.html.escape(v): text safe inside HTML elements and quoted attributes.
function html.escape(v)
  if v == nil then return "" end
  return (gsub(tostring(v), "[&<>\"']", entities))
end
tycho.html = html

local template = {}
local compiled = {}                   -- source -> render function, for this state's life

-- The Lua code of a template: {{ expr }} escaped, {{{ expr }}} as it is, {% code %} run.
-- The chunk returns a new render function at each call, so that every render has its own
-- environment (the values): a render that waits (a value that queries a database) or that
-- renders the same template inside (a tree) must not see another render's values. The
-- helpers are locals taken before, so that a value named table or tostring changes nothing.
local function translate(src, name)
  local out, pos = { "local _concat, _tostring = table.concat, tostring\n"
    .. "local function _raw(v) if v == nil then return '' end return _tostring(v) end\n"
    .. "return function(_e)\nlocal _b = {}\n" }, 1
  while true do
    local s, e, kind = find(src, "{([{%%])", pos)
    if not s then break end
    if s > pos then out[#out + 1] = format("_b[#_b+1] = %q\n", sub(src, pos, s - 1)) end
    local code, close
    if kind == "%" then
      close = find(src, "%}", e + 1, true)
      if not close then error(name .. ": a {% with no %}", 0) end
      out[#out + 1] = sub(src, e + 1, close - 1) .. "\n"
      pos = close + 2
    elseif sub(src, e + 1, e + 1) == "{" then
      close = find(src, "}}}", e + 2, true)
      if not close then error(name .. ": a {{{ with no }}}", 0) end
      code = sub(src, e + 2, close - 1)
      out[#out + 1] = "_b[#_b+1] = _raw(" .. code .. ")\n"
      pos = close + 3
    else
      close = find(src, "}}", e + 1, true)
      if not close then error(name .. ": a {{ with no }}", 0) end
      code = sub(src, e + 1, close - 1)
      out[#out + 1] = "_b[#_b+1] = _e(" .. code .. ")\n"
      pos = close + 2
    end
  end
  if pos <= #src then out[#out + 1] = format("_b[#_b+1] = %q\n", sub(src, pos)) end
  out[#out + 1] = "return _concat(_b)\nend\n"
  return concat(out)
end

-- tycho.template.compile(src[, name]) -> render(values): compiled once per source.
function template.compile(src, name)
  if type(src) ~= "string" then
    error("tycho.template.compile: expected the template (a string), got " .. type(src), 2)
  end
  local render = compiled[src]
  if render then return render end
  name = name or "template"
  local ok, code = pcall(translate, src, name)
  if not ok then error("tycho.template.compile: " .. code, 2) end
  local chunk, err = loadstring(code, "=" .. name)
  if not chunk then error("tycho.template.compile: " .. err, 2) end
  render = function(values)
    local env = setmetatable({}, { __index = function(_, k)
      local v = values and values[k]
      if v == nil then v = _G[k] end
      return v
    end })
    return setfenv(chunk(), env)(html.escape)
  end
  compiled[src] = render
  return render
end

-- tycho.template.render(src, values): compile (once) and render.
function template.render(src, values)
  return template.compile(src)(values)
end
tycho.template = template

-- ---- multipart/form-data (RFC 7578) -----------------------------------------------------

local multipart_options = { max_parts = true, max_header_bytes = true, dir = true,
  max_file_bytes = true, max_field_bytes = true }

-- The parameter key of a header value (key="x" or key=x), unquoted. Parameter names are
-- case-insensitive (RFC 2045: Boundary= is a boundary); their values are not.
local function param(value, key)
  local _, e = find(lower(value), ";%s*" .. key .. "%s*=%s*")
  if not e then return nil end
  if sub(value, e + 1, e + 1) == '"' then
    -- A quoted string ends at the first quote that is not escaped: name="a\"b" is a"b.
    local out, i = {}, e + 2
    while true do
      local q = find(value, '[\\"]', i)
      if not q then return nil end
      out[#out + 1] = sub(value, i, q - 1)
      if sub(value, q, q) == '"' then return concat(out) end
      out[#out + 1] = sub(value, q + 1, q + 1)
      i = q + 2
    end
  end
  return (sub(value, e + 1):match("^[^;%s]+"))
end

local function part_headers(block)
  local headers = {}
  for line in block:gmatch("[^\r\n]+") do
    local k, v = line:match("^([!#$%%&'*+%-.^_`|~%w]+):%s*(.-)%s*$")
    if not k then abort(400, "multipart: a part's header line is malformed") end
    headers[lower(k)] = v
  end
  return headers
end

-- Options shared by both forms: whole numbers from 1 to 2^53. Raise at the app's call.
local function whole_option(opts, key, default)
  local v = opts[key]
  if v == nil then return default end
  if type(v) ~= "number" or v < 1 or v ~= floor(v) or v > 2^53 then
    error("req:multipart: " .. key .. " must be a whole number from 1 to 2^53, got "
      .. tostring(v), 3)
  end
  return v
end

-- The boundary of a multipart/form-data request (415 or 400 otherwise).
local function multipart_boundary(req)
  local ctype = req.headers["content-type"] or ""
  if not find(lower(ctype), "^%s*multipart/form%-data") then
    abort(415, "req:multipart: expected a body of type multipart/form-data, got "
      .. (ctype == "" and "none" or ctype))
  end
  local boundary = param(ctype, "boundary")
  if not boundary or #boundary < 1 or #boundary > 70 then
    abort(400, "multipart: the Content-Type has no boundary (or one over 70 characters)")
  end
  return boundary
end

-- The whole body, in memory (a route that reads its body whole).
local function whole_multipart(req, max_parts, max_header)
  local body, delim = req.body, "--" .. multipart_boundary(req)
  local parts = {}
  local s, e = find(body, delim, 1, true)
  if not s or (s > 1 and sub(body, s - 2, s - 1) ~= "\r\n") then
    abort(400, "multipart: the body does not start with its boundary")
  end
  while true do
    if sub(body, e + 1, e + 2) == "--" then
      return parts                    -- the closing delimiter
    end
    local line_end = find(body, "\r\n", e + 1, true)
    if not line_end then abort(400, "multipart: the body ends before its closing boundary") end
    local head_end = find(body, "\r\n\r\n", line_end, true)
    if not head_end or head_end - line_end > max_header then
      if not head_end then abort(400, "multipart: a part's headers are not finished") end
      abort(431, "multipart: a part's headers are over " .. max_header .. " bytes")
    end
    if #parts >= max_parts then
      abort(413, "multipart: more than " .. max_parts .. " parts")
    end
    local headers = part_headers(sub(body, line_end + 2, head_end - 1))
    local next_s, next_e = find(body, "\r\n" .. delim, head_end + 4, true)
    if not next_s then abort(400, "multipart: the body ends before its closing boundary") end
    local disposition = headers["content-disposition"] or ""
    parts[#parts + 1] = {
      name = param(disposition, "name"),
      filename = param(disposition, "filename"),
      content_type = headers["content-type"] or "text/plain",
      headers = headers,
      body = sub(body, head_end + 4, next_s - 1),
    }
    e = next_e
  end
end

-- ---- the streamed form: file parts written to disk as the body arrives -------------------

-- bind_upload.c's half: open(req, dir) -> handle, path; write; close; drop; move.
local upload = tycho._upload
tycho._upload = nil
local getenv = os.getenv
local c_streamed = req_methods._streamed
local READ_BYTES = 65536
local file_parts = setmetatable({}, { __mode = "k" })   -- part -> { req, handle }
local file_part_methods = {}
local file_part_mt = { __index = file_part_methods }

-- part:move(dest) -> true, or nil and why: the upload is dest's now, and stays.
function file_part_methods.move(part, dest)
  local f = file_parts[part]
  if not f then error("part:move: expected a file part that req:multipart returned", 2) end
  if type(dest) ~= "string" or dest == "" then
    error("part:move: expected the destination's path (a string), got " .. type(dest), 2)
  end
  local ok, err = upload.move(f[1], f[2], dest)
  if ok then part.path = dest end
  return ok, err
end

-- The body as it arrives: buf holds what is not parsed yet (at most a part's headers, or a
-- delimiter's length in a part's body), more() appends the next read.
local function body_reader(req)
  -- As if a line break came before the body: the first delimiter needs none.
  local r = { buf = "\r\n", eof = false }
  function r.more()
    if r.eof then return false end
    local d = req:read(READ_BYTES)
    if not d then
      r.eof = true
      return false
    end
    r.buf = r.buf .. d
    return true
  end
  return r
end

-- Skips to the end of the first delimiter; returns where the text after it starts.
local function skip_preamble(r, delim, max_header)
  local skipped = 0
  while true do
    local _, e = find(r.buf, delim, 1, true)
    if e then return e + 1 end
    local keep = #delim - 1
    if #r.buf > keep then
      skipped = skipped + #r.buf - keep
      r.buf = sub(r.buf, -keep)
    end
    if skipped > max_header or not r.more() then
      abort(400, "multipart: the body does not start with its boundary")
    end
  end
end

-- After a delimiter at pos: nil at the closing one, else the part's headers (buf then starts
-- at its body).
local function read_part_head(r, pos, max_header)
  while #r.buf < pos + 1 do
    if not r.more() then abort(400, "multipart: the body ends before its closing boundary") end
  end
  if sub(r.buf, pos, pos + 1) == "--" then return nil end
  while true do
    local line_end = find(r.buf, "\r\n", pos, true)
    local head_end = line_end and find(r.buf, "\r\n\r\n", line_end, true)
    if head_end then
      if head_end - line_end > max_header then
        abort(431, "multipart: a part's headers are over " .. max_header .. " bytes")
      end
      local block = sub(r.buf, line_end + 2, head_end - 1)
      r.buf = sub(r.buf, head_end + 4)
      return part_headers(block)
    end
    if #r.buf - pos > max_header + 4 then
      abort(431, "multipart: a part's headers are over " .. max_header .. " bytes")
    end
    if not r.more() then abort(400, "multipart: a part's headers are not finished") end
  end
end

-- Hands a part's body to consume(piece) up to the next delimiter; returns where the text
-- after that delimiter starts. Only the last #delim - 1 bytes are ever held back.
local function read_part_body(r, delim, consume)
  while true do
    local s, e = find(r.buf, delim, 1, true)
    if s then
      if s > 1 then consume(sub(r.buf, 1, s - 1)) end
      return e + 1
    end
    local keep = #delim - 1
    if #r.buf > keep then
      consume(sub(r.buf, 1, #r.buf - keep))
      r.buf = sub(r.buf, -keep)
    end
    if not r.more() then abort(400, "multipart: the body ends before its closing boundary") end
  end
end

-- A file part's body, into a new file of dir: the part gets path and size.
local function read_file_part(req, r, delim, part, dir, max_file)
  local h, path = upload.open(req, dir)
  local size = 0
  part.path = path
  file_parts[part] = { req, h }
  setmetatable(part, file_part_mt)
  local pos = read_part_body(r, delim, function(piece)
    size = size + #piece
    if size > max_file then
      upload.drop(req, h)
      abort(413, "multipart: a file part is over " .. max_file .. " bytes (max_file_bytes)")
    end
    upload.write(req, h, piece)
  end)
  upload.close(req, h)
  part.size = size
  return pos
end

-- A field's body, in memory: the part gets body.
local function read_field_part(r, delim, part, max_field)
  local chunks, size = {}, 0
  local pos = read_part_body(r, delim, function(piece)
    size = size + #piece
    if size > max_field then
      abort(413, "multipart: a field is over " .. max_field .. " bytes (max_field_bytes)")
    end
    chunks[#chunks + 1] = piece
  end)
  part.body = concat(chunks)
  return pos
end

local function streamed_multipart(req, dir, max_parts, max_header, max_file, max_field)
  if dir == nil then
    dir = getenv("TMPDIR")
    if dir == nil or dir == "" then dir = "/tmp" end
  end
  local delim = "\r\n--" .. multipart_boundary(req)
  local r, parts = body_reader(req), {}
  local pos = skip_preamble(r, delim, max_header)
  while true do
    local headers = read_part_head(r, pos, max_header)
    if not headers then break end     -- the closing delimiter
    if #parts >= max_parts then
      abort(413, "multipart: more than " .. max_parts .. " parts")
    end
    local disposition = headers["content-disposition"] or ""
    local part = {
      name = param(disposition, "name"),
      filename = param(disposition, "filename"),
      content_type = headers["content-type"] or "text/plain",
      headers = headers,
    }
    parts[#parts + 1] = part
    if part.filename then
      pos = read_file_part(req, r, delim, part, dir, max_file)
    else
      pos = read_field_part(r, delim, part, max_field)
    end
  end
  r.buf = ""
  while r.more() do r.buf = "" end   -- the epilogue, if any: read so the connection can stay
  return parts
end

local stream_only = { dir = true, max_file_bytes = true, max_field_bytes = true }

-- req:multipart{max_parts = 100, max_header_bytes = 8192} -> the parts, in order. On a
-- stream_body route also dir, max_file_bytes and max_field_bytes: file parts go to disk.
function req_methods.multipart(req, opts)
  opts = check_options("req:multipart", opts, multipart_options)
  local max_parts = whole_option(opts, "max_parts", 100)
  local max_header = whole_option(opts, "max_header_bytes", 8192)
  local max_file = whole_option(opts, "max_file_bytes", 100 * 1024 * 1024)
  local max_field = whole_option(opts, "max_field_bytes", 65536)
  local dir = opts.dir
  if dir ~= nil and (type(dir) ~= "string" or dir == "") then
    error("req:multipart: dir must be a directory's path (a string), got " .. type(dir), 2)
  end
  if c_streamed(req) then
    return streamed_multipart(req, dir, max_parts, max_header, max_file, max_field)
  end
  for k in pairs(stream_only) do
    if opts[k] ~= nil then
      error("req:multipart: " .. k .. " applies to a route that streams its body (stream_body "
        .. "= true); this one reads its body whole", 2)
    end
  end
  return whole_multipart(req, max_parts, max_header)
end
