-- app.lua: a login form, a session and a CSRF-protected POST (docs/sessions.md walks
-- through it). Serve it with a secret of your own:
--
--     TYCHO_SECRET="$(head -c 32 /dev/urandom | base64)" tycho examples/login
--
-- then open http://127.0.0.1:8080/ and log in as ada, password lovelace-1843.
-- Its tests: TYCHO_SECRET=... tycho test examples/login
local app = require "tycho"
local password = require "lib.password"
local views = require "lib.views"

-- The users, as a database table would hold them: the name shown and a password hash made
-- with password.hash("lovelace-1843") (lib/password.lua).
local users = {
    ada = { name = "Ada", hash = "pbkdf2-sha256$10000$lZrUj5B-2WcwCKkJgfww0w$"
        .. "0khwDZhAQRaVT9LOGHYB_a3Sc7F1pVIJBGWplKCkiN8" },
}
-- Checked for a name no user has, so that a wrong name takes as long as a wrong password.
local nobody = "pbkdf2-sha256$10000$lSDd7ordJdAup1-pBwFb_A$"
    .. "0tlT_fxUSP9Zb9y6xg3XD6D5T1NVa8vms3a2u1SLwDE"

-- A password check holds the worker for about 40 ms: 10 tries per client address, then one
-- more every 6 s (429 with Retry-After). Other requests are not limited (the key is nil).
app.use(tycho.rate_limit{ rate = 10 / 60, burst = 10, key = function(req)
    if req.method == "POST" and req.path == "/login" then
        return req.remote_addr
    end
end })
-- req.session, kept in the shared dictionary: logging out ends it on the server too.
app.use(tycho.session{ store = tycho.shared.dict("sessions"), ttl = 8 * 3600 })
-- Every POST (PUT, PATCH, DELETE) must carry the session's CSRF token, else 403.
app.use(tycho.csrf())

app.get("/", function(req, res)
    local user = users[req.session.user]
    if not user then
        return res:redirect("/login", 303)
    end
    return views.home(res, { user = user.name, notes = req.session.notes or {},
                             csrf = tycho.session.csrf_token(req) })
end)

app.get("/login", function(req, res)
    return views.login(res, { csrf = tycho.session.csrf_token(req) })
end)

app.post("/login", function(req, res)
    local form = req:form()
    local name = form.name or ""
    local user = users[name]
    local ok = password.verify(form.password or "", user and user.hash or nobody)
    if not (ok and user) then
        res:status(401)
        return views.login(res, { message = "Wrong name or password.", name = name,
                                  csrf = tycho.session.csrf_token(req) })
    end
    -- A new session id and a new CSRF token, so that an id planted in the browser before
    -- the login, and the token that went with it, are worth nothing.
    tycho.session.rotate(req)
    req.session.user = name
    return res:redirect("/", 303)
end)

-- The CSRF-protected POST: tycho.csrf() has checked the token before this runs.
app.post("/notes", function(req, res)
    if not users[req.session.user] then
        return res:redirect("/login", 303)
    end
    local text = req:form().text or ""
    text = text:gsub("^%s+", ""):gsub("%s+$", "")
    if text == "" or #text > 200 then
        tycho.abort(400, "a note is 1 to 200 characters")
    end
    local notes = req.session.notes or {}
    notes[#notes + 1] = text
    req.session.notes = notes
    return res:redirect("/", 303)
end)

app.post("/logout", function(req, res)
    tycho.session.destroy(req)
    return res:redirect("/login", 303)
end)
