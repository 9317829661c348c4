-- Failing on purpose: test_runner.sh checks that each failure is reported
-- with the file:line of its assertion, expected and actual, and exit 1.

test("passes", function()
    assert_eq(client:get("/sleep").body, "slept")
end)

test("wrong status", function()
    assert_eq(client:get("/nowhere").status, 200)
end)

test("wrong body with a message", function()
    assert_eq(client:get("/sleep").body, "awake", "the sleeper's body")
end)

test("no match", function()
    assert_match(client:get("/sleep").body, "^z")
end)

test("runtime error", function()
    local t = nil
    return t.field
end)

test("client misuse", function()
    client:get("no-slash")
end)

test("tail-called assertion", function()
    return assert_eq(1, 2)
end)
