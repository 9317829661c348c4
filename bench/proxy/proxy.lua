-- bench/proxy/proxy.lua: the proxy workload's app. Each request calls the
-- backend that bench/run.sh starts (TYCHO_BENCH_BACKEND is its port) through
-- the worker's pool and answers with the backend's body.
local app = require "tycho"

local port = os.getenv("TYCHO_BENCH_BACKEND")
assert(port, "TYCHO_BENCH_BACKEND is not set (bench/run.sh sets it)")
local backend = "http://127.0.0.1:" .. port .. "/plaintext"

app.get("/proxy", function(req, res)
    local r, err = tycho.http.get(backend)
    if not r then
        res:status(502)
        return err
    end
    res:header("Content-Type", "text/plain; charset=utf-8")
    return r.body
end)
