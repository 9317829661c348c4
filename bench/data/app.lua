-- bench/data/app.lua: the pgquery and redisget workloads' app. bench/run.sh
-- starts PostgreSQL (table world: 10,000 rows) and Redis (key bench:cache)
-- and sets DATABASE_URL and REDIS_URL; each worker has a pool of 16
-- connections to each (bench/gopeer uses the same size).
local app = require "tycho"

local db_url = os.getenv("DATABASE_URL")
local redis_url = os.getenv("REDIS_URL")
assert(db_url and redis_url, "DATABASE_URL and REDIS_URL must be set (bench/run.sh sets them)")
local db = tycho.db.open(db_url, { pool = 16 })
local red = tycho.redis.open(redis_url, { pool = 16 })

-- The TechEmpower "single query" test: the server picks the id.
app.get("/db", function(req, res)
    local rows, err = db:query('SELECT id, randomnumber AS "randomNumber" FROM world WHERE id = $1',
                               math.random(1, 10000))
    if not rows or not rows[1] then
        res:status(503)
        return err or "no row"
    end
    res:json(rows[1])
end)

app.get("/cache", function(req, res)
    local v, err = red:call("GET", "bench:cache")
    if type(v) ~= "string" then
        res:status(503)
        return err or "no value"
    end
    return v
end)
