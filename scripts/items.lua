-- items.lua: a JSON CRUD API kept in SQLite (items.db beside the scripts), so the
-- items survive a restart. `tycho test` gives the file a fresh directory per run.
--
--   GET    /items          all items, by id
--   POST   /items          {"name": "..."} -> 201 with the new item
--   GET    /items/:id      the item, or 404
--   PUT    /items/:id      {"name": "..."} replaces it (404 if missing)
--   DELETE /items/:id      204 (404 if missing)
local app = require "tycho"
local cjson = require "cjson"

local db = tycho.db.open("sqlite:items.db")

-- The table, made once per worker before its first use.
local ready = false
local function ensure_table()
    if not ready then
        assert(db:exec("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"))
        ready = true
    end
end

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
    ensure_table()
    local list = assert(db:query("SELECT id, name FROM items ORDER BY id"))
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
    ensure_table()
    local r, db_err = db:exec("INSERT INTO items (name) VALUES ($1)", item.name)
    if not r then return fail(res, 500, db_err) end
    item.id = r.last_id
    res:status(201)
    res:header("Location", "/items/" .. item.id)
    res:json(item)
end)

app.get("/items/:id", function(req, res)
    ensure_table()
    local rows = assert(db:query("SELECT id, name FROM items WHERE id = $1", req.params.id))
    if not rows[1] then return fail(res, 404, "no item " .. req.params.id) end
    res:json(rows[1])
end)

app.put("/items/:id", function(req, res)
    local item, err = read_item(req)
    ensure_table()
    local rows = assert(db:query("SELECT id FROM items WHERE id = $1", req.params.id))
    if not rows[1] then return fail(res, 404, "no item " .. req.params.id) end
    if not item then return fail(res, 400, err) end
    assert(db:exec("UPDATE items SET name = $1 WHERE id = $2", item.name, rows[1].id))
    item.id = rows[1].id
    res:json(item)
end)

app.delete("/items/:id", function(req, res)
    ensure_table()
    local r = assert(db:exec("DELETE FROM items WHERE id = $1", req.params.id))
    if r.changes == 0 then return fail(res, 404, "no item " .. req.params.id) end
    res:status(204):send()
end)
