-- proxy.lua: a small proxy through the worker's backend pool.
--
--   GET /proxy/*path   fetches http://$TYCHO_UPSTREAM/path?query (TYCHO_UPSTREAM
--                      is host:port, read when the scripts load) and answers
--                      with its status, body and Content-Type; 502 with the
--                      error when the backend cannot be reached, 503 when no
--                      TYCHO_UPSTREAM is set.
local app = require "tycho"

local upstream = os.getenv("TYCHO_UPSTREAM")
if upstream then
    -- At most 32 connections per worker to it; its breaker opens after 5 failures in a row.
    tycho.http.pool(upstream, { max_conns = 32, connect_timeout = 1, read_timeout = 10 })
end

local function encode(s)
    return (tostring(s):gsub("[^%w%-._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- req.query decoded the query string: encode it again, in a stable order.
local function query_string(query)
    local keys, parts = {}, {}
    for k in pairs(query) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do parts[#parts + 1] = encode(k) .. "=" .. encode(query[k]) end
    return #parts > 0 and ("?" .. table.concat(parts, "&")) or ""
end

app.get("/proxy/*path", function(req, res)
    if not upstream then
        res:status(503)
        return "no upstream configured: start tycho with TYCHO_UPSTREAM=host:port\n"
    end
    -- req.path is the path as sent (still percent-encoded): forward what follows /proxy.
    local url = "http://" .. upstream .. req.path:sub(#"/proxy" + 1) .. query_string(req.query)
    local r, err = tycho.http.get(url, { headers = { ["X-Request-Id"] = req.id }, timeout = 15 })
    if not r then
        res:status(502)
        return "bad gateway: " .. err .. "\n"
    end
    res:status(r.status)
    if r.headers["content-type"] then
        res:header("Content-Type", r.headers["content-type"])
    end
    res:send(r.body)
end)
