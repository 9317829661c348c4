-- Tests of proxy.lua. Without TYCHO_UPSTREAM it says what to set; with it
-- (tests/lua/test_runner.sh runs these with a real backend) it forwards.

local upstream = os.getenv("TYCHO_UPSTREAM")

test("the proxy forwards, or says what is missing", function()
    local r = client:get("/proxy/plaintext")
    if upstream then
        assert_eq(r.status, 200)
        assert_eq(r.body, "Hello, World!")
    else
        assert_eq(r.status, 503)
        assert_match(r.body, "TYCHO_UPSTREAM=host:port")
    end
end)

test("the query string and status are forwarded", function()
    if not upstream then return end
    local r = client:get("/proxy/users/7?q=a%20b")
    assert_eq(r:json(), { id = "7", q = "a b" })
    assert_eq(client:get("/proxy/nowhere").status, 404)
end)
