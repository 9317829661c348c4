-- Every test here passes: test_runner.sh checks the summary and exit status 0.

test("a handler that sleeps", function()
    local r = client:get("/sleep")
    assert_eq(r.status, 200)
    assert_eq(r.body, "slept")
end)

test("a handler that calls a backend", function()
    assert_eq(client:get("/proxy").body, "backend said Hello, World!")
end)

test("middleware runs", function()
    assert_eq(client:get("/sleep").headers["x-middleware"], "ran")
end)

test("post with json", function()
    local r = client:post("/items", nil, { json = { name = "pen" } })
    assert_eq(r.status, 201)
    assert_eq(r:json(), { created = "pen", type = "application/json" })
end)

test("request{} with headers", function()
    local r = client:request{ method = "GET", path = "/headers", headers = { ["X-One"] = "1" } }
    assert_eq(r.body, "1,test")
end)

test("a handler error is a 500", function()
    local r = client:get("/crash")
    assert_eq(r.status, 500)
end)

test("state lasts across requests in one run", function()
    local first = tonumber(client:get("/counter").body)
    assert_eq(tonumber(client:get("/counter").body), first + 1)
end)

test("assertion helpers", function()
    assert_true(1)
    assert_false(nil)
    assert_ne({ 1 }, { 2 })
    assert_eq({ a = { 1, 2 } }, { a = { 1, 2 } })
    assert_match("abc", "^a")
    local err = assert_error(function() error("boom") end, "boom")
    assert_match(err, "boom")
end)

test("client misuse raises", function()
    assert_error(function() client:get("nope") end, "client:get: the path must start with /")
    assert_error(function() client:get("/x", { headers = { ["X-A"] = "a\r\nb" } }) end,
                 "contains CR or LF")
    assert_error(function() client:post("/x", "b", { headers = { ["Content-Length"] = "1" } }) end,
                 "is set from the body")
    assert_error(function() client:get("/crash"):json() end, "the body is not JSON")
    assert_error(function() client:post("/items", nil, { json = { f = print } }) end,
                 "client:post: json cannot be encoded: tycho.json.encode: the value.f is a "
                 .. "function")
    assert_error(function() client:post("/items", nil, { json = {}, headers = "x" }) end,
                 "client:post: headers must be a table, got string")
end)

test("a request the parser refuses gets one response", function()
    local r = client:request{ method = "GET", path = "/sleep", headers = { ["Bad Name"] = "1" } }
    assert_eq(r.status, 400)
    assert_eq(r.body, "Bad Request\n")
end)

test("the app's modules and globals are reachable", function()
    assert_eq(type(tycho.sleep), "function")
    assert_eq(type(require("cjson").encode), "function")
end)
