-- testing.lua: the `tycho test` runner, compiled into the binary.
--
-- Runs in the app's own Lua state (the scripts loaded as a worker loads
-- them), called with (files, send, json): files is the sorted list of test
-- files; send(raw) runs raw HTTP/1.1 request bytes through the real parser,
-- router, middleware and handlers, in-process, with the worker's event loop
-- running while a handler waits, and returns the raw response. Returns the
-- number of failed tests. json is tycho.json, as the server's own answers use.
local files, send, json = ...

local format, concat, sort = string.format, table.concat, table.sort

-- ---- showing values ----------------------------------------------------

local show

local function show_table(t, depth, seen)
    if seen[t] then return "<cycle>" end
    if depth > 3 then return "{...}" end
    seen[t] = true
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    sort(keys, function(a, b)
        local ta, tb = type(a), type(b)
        if ta ~= tb then return ta < tb end
        if ta == "number" or ta == "string" then return a < b end
        return tostring(a) < tostring(b)
    end)
    local parts, n = {}, #t
    for _, k in ipairs(keys) do
        local v = show(t[k], depth + 1, seen)
        if type(k) == "number" and k >= 1 and k <= n and k % 1 == 0 then
            parts[#parts + 1] = v
        elseif type(k) == "string" and k:match("^[%a_][%w_]*$") then
            parts[#parts + 1] = k .. " = " .. v
        else
            parts[#parts + 1] = "[" .. show(k, depth + 1, seen) .. "] = " .. v
        end
    end
    seen[t] = nil
    return "{" .. concat(parts, ", ") .. "}"
end

-- A value as it would be written in Lua (strings quoted, tables expanded).
show = function(v, depth, seen)
    if type(v) == "string" then
        if #v > 200 then
            return format("%q", v:sub(1, 200)) .. format("...(%d bytes)", #v)
        end
        return format("%q", v)
    end
    if type(v) == "table" then return show_table(v, depth or 0, seen or {}) end
    return tostring(v)
end

-- ---- errors ----------------------------------------------------------------

-- "FILE:LINE: " of the innermost caller outside this runner (the test, or a
-- helper of the test's own), whatever tail calls removed; "" when none.
local function caller_where()
    for level = 2, 30 do
        local info = debug.getinfo(level, "Sl")
        if not info then break end
        if info.source ~= "=tycho.testing" and info.what ~= "C" and (info.currentline or 0) > 0 then
            return info.short_src .. ":" .. info.currentline .. ": "
        end
    end
    return ""
end

-- Raises msg at the test's line.
local function raise(msg)
    error(caller_where() .. msg, 0)
end

-- ---- assertions ----------------------------------------------------------

local function deep_equal(a, b, seen)
    if a == b then return true end
    if type(a) ~= "table" or type(b) ~= "table" then return false end
    seen = seen or {}
    if seen[a] == b then return true end
    seen[a] = b
    for k, v in pairs(a) do
        if not deep_equal(v, b[k], seen) then return false end
    end
    for k in pairs(b) do
        if a[k] == nil then return false end
    end
    return true
end

-- Raises at the line of the test that called the assertion.
local function fail(what, message)
    raise(message and (what .. ": " .. tostring(message)) or what)
end

local env = {}

function env.assert_eq(actual, expected, message)
    if not deep_equal(actual, expected) then
        fail(format("assert_eq: expected %s, got %s", show(expected), show(actual)), message)
    end
end

function env.assert_ne(actual, unexpected, message)
    if deep_equal(actual, unexpected) then
        fail(format("assert_ne: expected anything but %s", show(unexpected)), message)
    end
end

function env.assert_match(s, pattern, message)
    if type(s) ~= "string" or not s:find(pattern) then
        fail(format("assert_match: expected a string matching %s, got %s", show(pattern),
                    show(s)), message)
    end
end

function env.assert_true(value, message)
    if not value then
        fail(format("assert_true: expected a true value, got %s", show(value)), message)
    end
end

function env.assert_false(value, message)
    if value then
        fail(format("assert_false: expected false or nil, got %s", show(value)), message)
    end
end

-- assert_error(fn[, pattern[, message]]): fn must raise (an error matching pattern); returns the error.
function env.assert_error(fn, pattern, message)
    local ok, err = pcall(fn)
    if ok then
        fail("assert_error: expected an error, none was raised", message)
    end
    if pattern and not tostring(err):find(pattern) then
        fail(format("assert_error: expected an error matching %s, got %s", show(pattern),
                    show(err)), message)
    end
    return err
end

-- ---- the client ----------------------------------------------------------

-- Header names are looked up in any case.
local headers_mt = {
    __index = function(t, k)
        if type(k) == "string" then return rawget(t, k:lower()) end
    end,
}

local response = {}
response.__index = response

-- r:json(): the body decoded as JSON (raises on a body that is not JSON).
function response:json()
    local value, err = json.decode(self.body)
    if value == nil then
        raise(format("r:json(): the body is not JSON (%s): %s", tostring(err), show(self.body)))
    end
    return value
end

-- Splits the raw response: status, headers (repeated ones joined with ", "), body.
local function parse_response(raw, fn)
    local head_end = raw:find("\r\n\r\n", 1, true)
    if not head_end then
        raise(fn .. ": no response (the request could not be run)")
    end
    local head, body = raw:sub(1, head_end - 1), raw:sub(head_end + 4)
    local status = tonumber(head:match("^HTTP/1%.1 (%d%d%d)"))
    local headers = setmetatable({}, headers_mt)
    for name, value in head:gmatch("\r\n([^:\r\n]+):[ \t]*([^\r\n]*)") do
        local key = name:lower()
        headers[key] = rawget(headers, key) and (rawget(headers, key) .. ", " .. value) or value
    end
    return setmetatable({status = status, headers = headers, body = body}, response)
end

local function check_text(fn, what, s)
    if type(s) ~= "string" then
        raise(format("%s: %s must be a string, got %s", fn, what, type(s)))
    end
    if s:find("[\r\n]") then
        raise(format("%s: %s contains CR or LF", fn, what))
    end
end

-- Builds the raw request and runs it.
local function run(fn, method, path, headers, body)
    check_text(fn, "the method", method)
    check_text(fn, "the path", path)
    if path:sub(1, 1) ~= "/" then
        raise(format("%s: the path must start with / (got %s)", fn, show(path)))
    end
    if body ~= nil and type(body) ~= "string" then
        raise(format("%s: the body must be a string, got %s", fn, type(body)))
    end
    if headers ~= nil and type(headers) ~= "table" then
        raise(format("%s: headers must be a table, got %s", fn, type(headers)))
    end
    local lines, has_host = {method:upper() .. " " .. path .. " HTTP/1.1"}, false
    for name, value in pairs(headers or {}) do
        check_text(fn, "a header name", name)
        value = tostring(value)
        check_text(fn, "header " .. name, value)
        local lower = name:lower()
        if lower == "content-length" or lower == "transfer-encoding" then
            raise(format("%s: %s is set from the body; leave it out", fn, name))
        end
        has_host = has_host or lower == "host"
        lines[#lines + 1] = name .. ": " .. value
    end
    if not has_host then lines[#lines + 1] = "Host: test" end
    body = body or ""
    lines[#lines + 1] = "Content-Length: " .. #body
    local ok, raw = pcall(send, concat(lines, "\r\n") .. "\r\n\r\n" .. body)
    if not ok then raise(raw) end
    return parse_response(raw, fn)
end

-- A body and its headers: opts.json encoded (with a JSON Content-Type unless one is given), or the body given.
local function body_of(fn, body, opts)
    if opts.headers ~= nil and type(opts.headers) ~= "table" then
        raise(format("%s: headers must be a table, got %s", fn, type(opts.headers)))
    end
    if opts.json == nil then return body, opts.headers end
    local headers, has_type = {}, false
    for k, v in pairs(opts.headers or {}) do
        headers[k] = v
        has_type = has_type or (type(k) == "string" and k:lower() == "content-type")
    end
    if not has_type then headers["Content-Type"] = "application/json" end
    local ok, encoded = pcall(json.encode, opts.json)
    if not ok then
        raise(format("%s: json cannot be encoded: %s", fn, tostring(encoded)))
    end
    return encoded, headers
end

local function options(fn, opts)
    if opts == nil then return {} end
    if type(opts) ~= "table" then
        raise(format("%s: options must be a table, got %s", fn, type(opts)))
    end
    return opts
end

local client = {}

-- client:request{method =, path =, headers =, body =, json =}
function client:request(req)
    if type(req) ~= "table" then
        raise("client:request: expected a table {method =, path =, headers =, body =}")
    end
    local body, headers = body_of("client:request", req.body, req)
    local r = run("client:request", req.method or "GET", req.path, headers, body)
    return r  -- not a tail call: the test's frame stays in tracebacks
end

-- client:get(path, opts), :head, :delete, :options: no body unless opts.body.
for _, method in ipairs({"get", "head", "delete", "options"}) do
    client[method] = function(self, path, opts)
        local fn = "client:" .. method
        opts = options(fn, opts)
        local body, headers = body_of(fn, opts.body, opts)
        local r = run(fn, method, path, headers, body)
        return r  -- not a tail call (see client:request)
    end
end

-- client:post(path, body, opts), :put, :patch.
for _, method in ipairs({"post", "put", "patch"}) do
    client[method] = function(self, path, body, opts)
        local fn = "client:" .. method
        opts = options(fn, opts)
        local headers
        body, headers = body_of(fn, body, opts)
        local r = run(fn, method, path, headers, body)
        return r  -- not a tail call (see client:request)
    end
end

env.client = client

-- ---- running ---------------------------------------------------------------

local passed, failed = 0, 0

local function report_failure(file, name, err)
    failed = failed + 1
    print(format("FAIL %s: %s", file, name))
    print("     " .. tostring(err):gsub("\n", "\n     "))
end

-- Runs one file: its top level declares tests with test(name, fn), then each runs in order.
local function run_file(file)
    local tests = {}
    local file_env = setmetatable({}, {__index = function(_, k)
        local v = env[k]
        if v == nil then return _G[k] end
        return v
    end})
    function file_env.test(name, fn)
        if type(name) ~= "string" or type(fn) ~= "function" then
            raise("test(name, fn): expected a name and a function")
        end
        tests[#tests + 1] = {name = name, fn = fn}
    end
    local chunk, err = loadfile(file)
    if not chunk then
        report_failure(file, "(loading the file)", err)
        return
    end
    setfenv(chunk, file_env)
    local ok, load_err = pcall(chunk)
    if not ok then
        report_failure(file, "(running the file's top level)", load_err)
        return
    end
    if #tests == 0 then
        report_failure(file, "(no tests)", "the file declares no test(name, fn)")
        return
    end
    for _, t in ipairs(tests) do
        local ok_test, test_err = xpcall(t.fn, function(e)
            -- An assertion's message already says where; other errors get a traceback.
            if type(e) == "string" and e:find("^[^\n]*: assert_") then return e end
            -- A message without a place (a tail call lost the test's frame) gets the test's.
            local msg = tostring(e)
            if not msg:find("^[^\n]-:%d+: ") then
                local info = debug.getinfo(t.fn, "S")
                msg = format("%s:%d: (in this test) %s", info.short_src, info.linedefined, msg)
            end
            -- The runner's own frames are noise: keep the test's (the message stays whole).
            local trace, lines = debug.traceback("", 2), {msg}
            for line in trace:gmatch("[^\n]+") do
                if line ~= "stack traceback:" and not line:find("tycho.testing", 1, true) and
                   not line:find("'xpcall'", 1, true) then
                    lines[#lines + 1] = line
                end
            end
            if #lines > 1 then table.insert(lines, 2, "stack traceback:") end
            return concat(lines, "\n")
        end)
        if ok_test then
            passed = passed + 1
            print(format("ok   %s: %s", file, t.name))
        else
            report_failure(file, t.name, test_err)
        end
    end
end

for _, file in ipairs(files) do
    run_file(file)
end
print(format("%d passed, %d failed", passed, failed))
return failed
