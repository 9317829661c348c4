-- Tests of items.lua (the database lasts for the whole run: each test makes its own items).

test("create, read, update, delete", function()
    local r = client:post("/items", nil, { json = { name = "pen" } })
    assert_eq(r.status, 201)
    local item = r:json()
    assert_eq(item.name, "pen")
    assert_eq(r.headers.location, "/items/" .. item.id)

    assert_eq(client:get("/items/" .. item.id):json(), { id = item.id, name = "pen" })

    r = client:put("/items/" .. item.id, nil, { json = { name = "pencil" } })
    assert_eq(r.status, 200)
    assert_eq(client:get("/items/" .. item.id):json().name, "pencil")

    assert_eq(client:delete("/items/" .. item.id).status, 204)
    assert_eq(client:get("/items/" .. item.id).status, 404)
    assert_eq(client:delete("/items/" .. item.id).status, 404)
end)

test("the list holds the items in id order", function()
    local a = client:post("/items", nil, { json = { name = "a" } }):json()
    local b = client:post("/items", nil, { json = { name = "b" } }):json()
    local list = client:get("/items"):json()
    assert_eq(list[#list - 1], a)
    assert_eq(list[#list], b)
end)

test("bad bodies are 400 with a reason", function()
    local r = client:post("/items", "not json")
    assert_eq(r.status, 400)
    assert_eq(r:json().error, "the body must be a JSON object")
    r = client:post("/items", nil, { json = { name = "" } })
    assert_eq(r.status, 400)
    assert_eq(r:json().error, "name must be a non-empty string")
end)

test("an empty list is []", function()
    for _, item in ipairs(client:get("/items"):json()) do
        client:delete("/items/" .. item.id)
    end
    local r = client:get("/items")
    assert_eq(r.body, "[]")
    assert_match(r.headers["content-type"], "^application/json")
end)
