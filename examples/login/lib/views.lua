-- lib/views.lua: the login example's pages, as templates compiled once per script
-- generation (tycho.template.compile). {{ x }} is escaped, {{{ x }}} is not (only for HTML
-- made here), {% ... %} is Lua. A name the values do not give falls back to a global, so
-- the values avoid global names such as `error` or `type`.
local compile = tycho.template.compile

local views = {}

local layout = compile([[
<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{{ title }}</title></head>
<body>
{{{ content }}}
</body>
</html>
]], "layout")

local login = compile([[
<h1>Log in</h1>
{% if message then %}<p role="alert">{{ message }}</p>
{% end %}<form method="post" action="/login">
  <input type="hidden" name="csrf_token" value="{{ csrf }}">
  <label>Name <input name="name" value="{{ name }}" autocomplete="username"></label>
  <label>Password <input name="password" type="password" autocomplete="current-password"></label>
  <button>Log in</button>
</form>
]], "login")

local home = compile([[
<h1>Hello, {{ user }}</h1>
<ul>
{% for _, note in ipairs(notes) do %}  <li>{{ note }}</li>
{% end %}</ul>
<form method="post" action="/notes">
  <input type="hidden" name="csrf_token" value="{{ csrf }}">
  <input name="text" maxlength="200" required> <button>Add a note</button>
</form>
<form method="post" action="/logout">
  <input type="hidden" name="csrf_token" value="{{ csrf }}">
  <button>Log out</button>
</form>
]], "home")

-- Answers an HTML page made of the layout around one of the templates above.
local function page(res, title, body)
    res:header("Content-Type", "text/html; charset=utf-8")
    res:header("Cache-Control", "no-store")     -- pages with a CSRF token stay out of caches
    return layout({ title = title, content = body })
end

function views.login(res, values)
    return page(res, "Log in", login(values))
end

function views.home(res, values)
    return page(res, "Notes", home(values))
end

return views
