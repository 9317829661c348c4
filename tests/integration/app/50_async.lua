-- 50_async.lua: handlers and timers that wait (tycho.sleep), timers,
-- app.on_worker_start, tycho.now, tycho.log, tycho.worker_id.
local app = require "tycho"

app.get("/sleep", function(req, res)
    local started = tycho.now()
    tycho.sleep(tonumber(req.query.s) or 0.1)
    return string.format("slept %s on worker %d", req.query.s or "0.1", tycho.worker_id())
        .. (tycho.now() - started >= (tonumber(req.query.s) or 0.1) - 0.01 and "" or " EARLY")
end)

-- Sleeping in middleware, around a handler that sleeps too.
app.use(function(req, res, nxt)
    if req.path == "/sleep-twice" then
        tycho.sleep(0.05)
        nxt()
        res:header("X-Slept-In-Middleware", "yes")
    else
        nxt()
    end
end)

app.get("/sleep-twice", function(req, res)
    tycho.sleep(0.05)
    res:json({ worker = tycho.worker_id() })
end)

app.get("/sleep-then-fail", function(req, res)
    tycho.sleep(0.01)
    error("failed after sleeping")
end)

-- Timers: each worker counts ticks from its on_worker_start timer.
local ticks, started_workers = 0, 0
app.on_worker_start(function()
    started_workers = started_workers + 1
    tycho.log.info("on_worker_start ran", "id", tycho.worker_id())
    tycho.timer.every(0.05, function()
        ticks = ticks + 1
    end)
end)

app.get("/ticks", function()
    return tostring(ticks) .. " " .. tostring(started_workers)
end)

-- after() runs once; a cancelled timer never runs; a timer may sleep.
app.get("/timers", function(req, res)
    local ran, cancelled_ran, slept = 0, false, false
    tycho.timer.after(0.05, function() ran = ran + 1 end)
    local h = tycho.timer.after(0.05, function() cancelled_ran = true end)
    h:cancel()
    h:cancel()
    tycho.timer.after(0.01, function() tycho.sleep(0.05); slept = true end)
    tycho.sleep(0.3)
    return string.format("ran=%d cancelled_ran=%s slept=%s", ran, tostring(cancelled_ran),
        tostring(slept))
end)

app.get("/timer-error", function(req, res)
    tycho.timer.after(0.01, function() error("boom in a timer") end)
    return "scheduled"
end)

app.get("/bad-sleep", function(req, res)
    tycho.sleep(-1)
end)

app.get("/nested-sleep", function(req, res)
    local co = coroutine.wrap(function() tycho.sleep(0.01) end)
    co()
end)

-- tycho.sleep under a C call (a table.sort comparator) cannot yield: an error, nothing armed.
app.get("/sleep-in-sort", function(req, res)
    local t = { 3, 2, 1 }
    table.sort(t, function(a, b)
        tycho.sleep(0.05)
        return a < b
    end)
    return "sorted"
end)

-- Logs when it finishes; a client that leaves first must abandon it.
app.get("/sleep-log", function(req, res)
    tycho.sleep(0.3)
    tycho.log.info("sleep-log finished", req.query.tag)
    return "done"
end)
