-- The login example, end to end: the form, the CSRF token, the session cookie, rotation at
-- log-in, notes, log-out and the rate limit. The client keeps no cookies: each test sends
-- the session cookie it got. Run with a secret: TYCHO_SECRET=... tycho test examples/login

local FORM = { ["Content-Type"] = "application/x-www-form-urlencoded" }

-- "tycho_session=VALUE" from a response's Set-Cookie, or nil.
local function cookie_of(r)
    local set = r.headers["set-cookie"]
    return set and set:match("(tycho_session=[^;,]*)")
end

-- The CSRF token of the page's forms.
local function token_of(r)
    return r.body:match('name="csrf_token" value="([^"]+)"')
end

local function post_form(path, body, cookie)
    local headers = { ["Content-Type"] = FORM["Content-Type"], Cookie = cookie }
    return client:post(path, body, { headers = headers })
end

-- Opens the login page: its session cookie and CSRF token.
local function login_page()
    local r = client:get("/login")
    assert_eq(r.status, 200)
    local cookie, token = cookie_of(r), token_of(r)
    assert_true(cookie, "the login page starts a session")
    assert_true(token, "the login form carries a CSRF token")
    return cookie, token
end

-- Logs in as ada: the new session cookie.
local function log_in()
    local cookie, token = login_page()
    local r = post_form("/login", "name=ada&password=lovelace-1843&csrf_token=" .. token, cookie)
    assert_eq(r.status, 303)
    return cookie_of(r), cookie
end

test("GET / without a session sends the browser to /login", function()
    local r = client:get("/")
    assert_eq(r.status, 303)
    assert_eq(r.headers["location"], "/login")
end)

test("the login page is HTML with a CSRF token and an HttpOnly session cookie", function()
    local r = client:get("/login")
    assert_eq(r.status, 200)
    assert_match(r.headers["content-type"], "^text/html")
    assert_match(r.headers["set-cookie"], "HttpOnly")
    assert_match(r.headers["set-cookie"], "SameSite=Lax")
    assert_true(token_of(r))
end)

test("POST /login without the CSRF token is refused (403)", function()
    local cookie = login_page()
    local r = post_form("/login", "name=ada&password=lovelace-1843", cookie)
    assert_eq(r.status, 403)
    assert_match(r.body, "CSRF token")
end)

test("POST /login with another session's token is refused (403)", function()
    local _, token = login_page()
    local other = login_page()
    local r = post_form("/login", "name=ada&password=lovelace-1843&csrf_token=" .. token, other)
    assert_eq(r.status, 403)
end)

test("a wrong password is a 401 with the form again", function()
    local cookie, token = login_page()
    local r = post_form("/login", "name=ada&password=nope&csrf_token=" .. token, cookie)
    assert_eq(r.status, 401)
    assert_match(r.body, "Wrong name or password")
    assert_match(r.body, 'value="ada"')
end)

test("logging in rotates the session: a new cookie, and the old one is not logged in", function()
    local cookie, before = log_in()
    assert_true(cookie)
    assert_ne(cookie, before)
    local r = client:get("/", { headers = { Cookie = cookie } })
    assert_eq(r.status, 200)
    assert_match(r.body, "Hello, Ada")
    assert_eq(client:get("/", { headers = { Cookie = before } }).status, 303)
end)

test("the CSRF token changes at log-in", function()
    local cookie, token = login_page()
    local r = post_form("/login", "name=ada&password=lovelace-1843&csrf_token=" .. token, cookie)
    local logged_in = cookie_of(r)
    local home = client:get("/", { headers = { Cookie = logged_in } })
    assert_ne(token_of(home), token)
    r = post_form("/notes", "text=x&csrf_token=" .. token, logged_in)
    assert_eq(r.status, 403)
end)

-- One logged-in session for the tests below that do not end it (each log-in is a try
-- counted by the rate limit).
local shared
local function logged_in()
    shared = shared or log_in()
    return shared
end

test("a note is added with the token (form field or X-CSRF-Token), refused without", function()
    local cookie = logged_in()
    local token = token_of(client:get("/", { headers = { Cookie = cookie } }))
    local r = post_form("/notes", "text=%3Cb%3Emilk%3C%2Fb%3E&csrf_token=" .. token, cookie)
    assert_eq(r.status, 303)
    r = client:post("/notes", "text=bread",
        { headers = { Cookie = cookie, ["Content-Type"] = FORM["Content-Type"],
                      ["X-CSRF-Token"] = token } })
    assert_eq(r.status, 303)
    assert_eq(post_form("/notes", "text=eggs", cookie).status, 403)
    local home = client:get("/", { headers = { Cookie = cookie } })
    assert_match(home.body, "<li>&lt;b&gt;milk&lt;/b&gt;</li>")    -- escaped by the template
    assert_match(home.body, "<li>bread</li>")
    assert_false(home.body:find("eggs", 1, true))
end)

test("an empty note is a 400", function()
    local cookie = logged_in()
    local token = token_of(client:get("/", { headers = { Cookie = cookie } }))
    local r = post_form("/notes", "text=++&csrf_token=" .. token, cookie)
    assert_eq(r.status, 400)
end)

test("a tampered session cookie is no session", function()
    local cookie = logged_in()
    local tampered = cookie:gsub("%.(.)", function(c) return "." .. (c == "A" and "B" or "A") end)
    assert_ne(tampered, cookie)
    assert_eq(client:get("/", { headers = { Cookie = tampered } }).status, 303)
end)

test("logging out clears the cookie and ends the session on the server", function()
    local cookie = log_in()
    local token = token_of(client:get("/", { headers = { Cookie = cookie } }))
    local r = post_form("/logout", "csrf_token=" .. token, cookie)
    assert_eq(r.status, 303)
    assert_eq(r.headers["location"], "/login")
    assert_match(r.headers["set-cookie"], "^tycho_session=;")
    assert_match(r.headers["set-cookie"], "Max%-Age=0")
    -- a copy of the old cookie is worth nothing now
    assert_eq(client:get("/", { headers = { Cookie = cookie } }).status, 303)
end)

-- Last: it uses up this address's login tries.
test("too many login tries from one address get 429 with Retry-After", function()
    local cookie, token = login_page()
    local r
    for _ = 1, 20 do
        r = post_form("/login", "name=ada&password=nope&csrf_token=" .. token, cookie)
        if r.status == 429 then break end
        assert_eq(r.status, 401)
    end
    assert_eq(r.status, 429)
    assert_match(r.headers["retry-after"], "^%d+$")
end)
