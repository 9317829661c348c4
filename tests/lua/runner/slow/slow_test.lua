-- Run with --test-timeout 0.3: the first test fails on the bound, the next still runs.
test("a handler that never finishes", function()
    client:get("/forever")
end)

test("the app still answers after that", function()
    assert_eq(client:get("/sleep").body, "slept")
end)
