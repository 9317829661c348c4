-- app.lua: the fixture for test_https_out.c. Handlers call the test's HTTPS
-- backends (tls/https_backend.py; their ports and the certificates' folder
-- come from the environment) through tycho.http.
local app = require "tycho"

local certs = os.getenv("TYCHO_TEST_TLS_DIR") or "/nonexistent"
local function port(name)
    return tonumber(os.getenv("TYCHO_TEST_TLS_" .. name:upper())) or 9
end
local function file(name)
    return certs .. "/" .. name
end

-- mtls through "localhost": the pool's own settings trust the test CA and send the client
-- certificate, so calls give no TLS option.
tycho.http.pool("https://localhost:" .. port("mtls"), {
    ca_file = file("ca.pem"), client_cert = file("client.pem"), client_key = file("client.key"),
    max_conns = 2,
})
-- hang accepts TCP and never answers: the handshake must end within connect_timeout.
tycho.http.pool("https://127.0.0.1:" .. port("hang"), { connect_timeout = 0.5 })

-- The TLS options of a request, from its query: ca=ca|ca2|none|bad, cert=1|bad|mismatch,
-- insecure=1.
local function tls_opts(q)
    local o = {}
    if q.ca == "ca" or q.ca == nil then o.ca_file = file("ca.pem")
    elseif q.ca == "ca2" then o.ca_file = file("ca-copy.pem")
    elseif q.ca == "bad" then o.ca_file = "/nonexistent/ca.pem" end
    if q.cert == "1" then
        o.client_cert, o.client_key = file("client.pem"), file("client.key")
    elseif q.cert == "bad" then
        o.client_cert, o.client_key = file("ca.key"), file("client.key")
    elseif q.cert == "mismatch" then
        o.client_cert, o.client_key = file("client.pem"), file("server.key")
    end
    if q.insecure == "1" then o.insecure_skip_verify = true end
    return o
end

local function backend(req)
    return "https://" .. (req.query.host or "localhost") .. ":" .. port(req.params.b)
end

local function answer(res, r, err)
    if not r then
        res:status(502)
        return "error: " .. err
    end
    return "ok " .. r.status .. " " .. r.body
end

app.get("/call/:b", function(req, res)
    local o = tls_opts(req.query)
    o.timeout = 10
    local r, err = tycho.http.get(backend(req) .. "/" .. (req.query.path or "hello"), o)
    return answer(res, r, err)
end)

-- The same through tycho.http.request, the options in its table.
app.get("/request/:b", function(req, res)
    local o = tls_opts(req.query)
    o.url = backend(req) .. "/req"
    local r, err = tycho.http.request(o)
    return answer(res, r, err)
end)

-- A backend's own pool: mtls's settings come from tycho.http.pool above.
app.get("/pooled", function(req, res)
    local r, err = tycho.http.get("https://localhost:" .. port("mtls") .. "/pooled")
    return answer(res, r, err)
end)

app.get("/stats/:b", function(req, res)
    local opts
    if not req.query.own then opts = tls_opts(req.query) end
    res:json(tycho.http.stats(backend(req), opts))
end)

app.get("/pool/mtls", function(req, res)
    res:json(tycho.http.pool("https://localhost:" .. port("mtls")))
end)

-- Plain http:// still: to the plain backend, and to a TLS port (its own pool, which fails).
app.get("/plain/:b", function(req, res)
    local p = req.params.b == "plain" and tonumber(os.getenv("TYCHO_TEST_PLAIN")) or port(req.params.b)
    local r, err = tycho.http.get("http://localhost:" .. p .. "/hello", { timeout = 5 })
    return answer(res, r, err)
end)

app.get("/plainstats/:b", function(req, res)
    local p = req.params.b == "plain" and tonumber(os.getenv("TYCHO_TEST_PLAIN")) or port(req.params.b)
    res:json(tycho.http.stats("localhost:" .. p))
end)

-- Misuse: each raises; the handler returns the message.
local misuse = {
    httpca = function() tycho.http.get("http://127.0.0.1:9/", { ca_file = file("ca.pem") }) end,
    insecure = function() tycho.http.get("https://127.0.0.1:9/", { insecure_skip_verify = "yes" }) end,
    cafile = function() tycho.http.get("https://127.0.0.1:9/", { ca_file = 1 }) end,
    poolhttp = function() tycho.http.pool("127.0.0.1:9", { ca_file = file("ca.pem") }) end,
    poolbad = function() tycho.http.pool("https://127.0.0.1:9", { ca_file = "/nonexistent/ca.pem" }) end,
    scheme = function() tycho.http.get("ftp://127.0.0.1/") end,
    backend = function() tycho.http.stats("https://") end,
}
app.get("/misuse/:kind", function(req)
    local ok, msg = pcall(misuse[req.params.kind])
    return ok and "no error" or tostring(msg)
end)
