-- items.lua: a JSON CRUD API kept in a shared dictionary, so every worker
-- sees the same items (and they survive a reload, not a restart).
--
--   GET    /items          all items, by id
--   POST   /items          {"name": "..."} -> 201 with the new item
--   GET    /items/:id      the item, or 404
--   PUT    /items/:id      {"name": "..."} replaces it (404 if missing)
--   DELETE /items/:id      204 (404 if missing)
local app = require "tycho"
local cjson = require "cjson"

local items = tycho.shared.dict("items")

-- The JSON body as a table with a non-empty string name, or nil and why.
local function read_item(req)
    local ok, body = pcall(cjson.decode, req.body or "")
    if not ok or type(body) ~= "table" then
        return nil, "the body must be a JSON object"
    end
    if type(body.name) ~= "string" or body.name == "" then
        return nil, "name must be a non-empty string"
    end
    return { name = body.name }
end

local function fail(res, status, message)
    res:status(status)
    res:json({ error = message })
end

app.get("/items", function(req, res)
    local list = {}
    for _, key in ipairs(items:keys()) do
        if key:match("^item:") then
            list[#list + 1] = items:get(key)
        end
    end
    table.sort(list, function(a, b) return a.id < b.id end)
    -- cjson writes an empty table as {}: answer [] for no items.
    if #list == 0 then
        res:header("Content-Type", "application/json"):send("[]")
        return
    end
    res:json(list)
end)

app.post("/items", function(req, res)
    local item, err = read_item(req)
    if not item then return fail(res, 400, err) end
    item.id = items:incr("next_id", 1, 0)
    local ok, set_err = items:set("item:" .. item.id, item)
    if not ok then return fail(res, 507, set_err) end
    res:status(201)
    res:header("Location", "/items/" .. item.id)
    res:json(item)
end)

app.get("/items/:id", function(req, res)
    local item = items:get("item:" .. req.params.id)
    if not item then return fail(res, 404, "no item " .. req.params.id) end
    res:json(item)
end)

app.put("/items/:id", function(req, res)
    local key = "item:" .. req.params.id
    local old = items:get(key)
    if not old then return fail(res, 404, "no item " .. req.params.id) end
    local item, err = read_item(req)
    if not item then return fail(res, 400, err) end
    item.id = old.id
    items:set(key, item)
    res:json(item)
end)

app.delete("/items/:id", function(req, res)
    local key = "item:" .. req.params.id
    if not items:get(key) then return fail(res, 404, "no item " .. req.params.id) end
    items:delete(key)
    res:status(204):send()
end)
