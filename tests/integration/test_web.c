/*
 * test_web.c: the web essentials (issue 15) over real sockets, two workers:
 * fields middleware sets on req and the read-only built-ins; the query and
 * forms with repeated keys; req:json(); cookies, plain and signed (a
 * tampered one refused); res:header, add_header, get_header, get_status; a
 * table answered as JSON; 404 and 405 through middleware; app.not_found,
 * app.error, tycho.abort; tycho.crypto against published vectors;
 * tycho.json; sessions in the three stores (a signed cookie, a shared
 * dictionary, a real Redis this test starts) and CSRF; CORS and a preflight;
 * a rate limit both workers share; templates; multipart bodies, good and
 * hostile (4xx, never a crash or a hang). Then 1,000 session ids and random
 * sequences from both workers, none shared; a hot reload that keeps every
 * session; a server without a secret (signing raises) or with --secret-file;
 * secrets refused at start; mistakes refused while the scripts load.
 *
 * The main server gets its secret from TYCHO_SECRET, Redis's URL from
 * REDIS_URL.
 */
#include "harness.h"
#include "support.h"
#include "client.h"
#include "servers.h"

#include <unistd.h>

#define SECRET "test-secret-0123456789abcdef"
#define EXPIRED "Expires=Thu, 01 Jan 1970 00:00:00 GMT"

static char dir[64], other[64];
static struct redis_server rs;

/* The main app; write_app() puts `local VERSION = '...'` before it. */
static const char app_lua[] =
    "local app = require 'tycho'\n"
    "local c, json = tycho.crypto, tycho.json\n"
    "local red = tycho.redis.open(os.getenv('REDIS_URL'))\n"
    "local function under(prefix, mw)\n"
    "  return function(req, res, nxt)\n"
    "    if req.path:sub(1, #prefix) == prefix then return mw(req, res, nxt) end\n"
    "    return nxt()\n"
    "  end\n"
    "end\n"
    "local function join(...) return table.concat({ ... }, ' ') end\n"
    "app.use(tycho.cors{ origins = { 'https://a.example' }, methods = { 'GET', 'POST' },\n"
    "  headers = { 'Content-Type', 'X-Token' }, expose = { 'X-Total' }, credentials = true,\n"
    "  max_age = 300 })\n"
    "app.use(function(req, res, nxt)\n"
    "  res:header('X-MW', 'yes')\n"
    "  if req.headers['x-user'] then req.user = req.headers['x-user'] end\n"
    "  nxt()\n"
    "  res:header('X-Seen-Status', tostring(res:get_status()))\n"
    "  res:header('X-Seen-Type', res:get_header('content-type') or 'none')\n"
    "end)\n"
    "app.use(under('/limited/key', tycho.rate_limit{ rate = 0.1, burst = 20,\n"
    "  key = function(req) return req.headers['x-client'] end }))\n"
    "app.use(under('/limited/ip', tycho.rate_limit{ rate = 0.1, burst = 2 }))\n"
    "app.use(under('/s/cookie/', tycho.session{ name = 'sc' }))\n"
    "app.use(under('/s/dict/', tycho.session{ store = tycho.shared.dict('sessions'), name = 'sd',\n"
    "  ttl = 600, secure = true, same_site = 'Strict' }))\n"
    "app.use(under('/s/redis/', tycho.session{ store = red, name = 'sr', ttl = 900 }))\n"
    "app.use(under('/s/db/', tycho.session{ store = tycho.db.open('sqlite:sessions.db'),\n"
    "  name = 'sq', ttl = 300 }))\n"
    "app.use(under('/s/short/', tycho.session{ name = 'ss', ttl = 1 }))\n"
    "app.use(under('/f/', tycho.session{ store = tycho.shared.dict('forms'), name = 'sf' }))\n"
    "app.use(under('/f/', tycho.csrf()))\n"
    "app.not_found(function(req, res) return 'no route for ' .. req.path end)\n"
    "app.error(function(err, req, res)\n"
    "  if req.path == '/boom/again' then error('again') end\n"
    "  if req.path == '/boom/table' then return { error = err.code } end\n"
    "  res:header('Content-Type', 'text/plain')\n"
    "  return 'handled: ' .. tostring(err)\n"
    "end)\n"
    "\n"
    "app.get('/version', function() return VERSION end)\n"
    "app.get('/x', function() return 'x' end)\n"
    "app.get('/ctx', function(req) return tostring(req.user) end)\n"
    "app.get('/readonly/:field', function(req)\n"
    "  local ok, err = pcall(function() req[req.params.field] = 'x' end)\n"
    "  return tostring(ok) .. '|' .. tostring(err)\n"
    "end)\n"
    "app.get('/q', function(req)\n"
    "  local q = req.query\n"
    "  return table.concat({ req.query_string, q.tag, table.concat(req:query_all('tag'), ','),\n"
    "    #req:query_all('none'), q.x, '[' .. q.empty .. '][' .. q.flag .. ']' }, '|')\n"
    "end)\n"
    "app.get('/q/misuse', function(req) return select(2, pcall(req.query_all, req)) end)\n"
    "app.post('/form', function(req)\n"
    "  local f = req:form()\n"
    "  return table.concat({ f.tag, table.concat(req:form_all('tag'), ','), f.x, f.y,\n"
    "    '[' .. f.z .. ']', #req:form_all('none') }, '|')\n"
    "end)\n"
    "app.post('/form/misuse', function(req) return select(2, pcall(req.form_all, req, 5)) end)\n"
    "app.post('/json', function(req)\n"
    "  local v = req:json()\n"
    "  return join(json.encode(v.a), json.encode(v.b), type(v.n), v.n, v.f, #v.s,\n"
    "    tostring(v.z == json.null))\n"
    "end)\n"
    "app.post('/json/echo', function(req) return req:json() end)\n"
    "\n"
    "app.get('/cookies', function(req)\n"
    "  local k = req.cookies\n"
    "  return join(tostring(k.a), tostring(k.b), tostring(k.c), tostring(k.d))\n"
    "end)\n"
    "app.get('/setcookies', function(req, res)\n"
    "  res:cookie('plain', 'v')\n"
    "  res:cookie('full', 'w', { max_age = 60, expires = 0, path = '/p', domain = 'example.com',\n"
    "    secure = true, http_only = false, same_site = 'None' })\n"
    "  res:cookie('sig', 'hello', { signed = true })\n"
    "  res:clear_cookie('old', { path = '/p' })\n"
    "  return 'set'\n"
    "end)\n"
    "app.get('/signed', function(req)\n"
    "  local v, err = req:signed_cookie(req.query.name or 'sig')\n"
    "  return tostring(v) .. '|' .. tostring(err)\n"
    "end)\n"
    "app.get('/cookie-err/:which', function(req, res)\n"
    "  local w, ok, err = req.params.which\n"
    "  if w == 'name' then ok, err = pcall(res.cookie, res, 'bad name', 'v') end\n"
    "  if w == 'value' then ok, err = pcall(res.cookie, res, 'v', 'a b') end\n"
    "  if w == 'type' then ok, err = pcall(res.cookie, res, 'v', 5) end\n"
    "  if w == 'none' then ok, err = pcall(res.cookie, res, 'v', 'x', { same_site = 'None' }) end\n"
    "  if w == 'bogus' then ok, err = pcall(res.cookie, res, 'v', 'x', { same_site = 'lax' }) end\n"
    "  if w == 'max_age' then ok, err = pcall(res.cookie, res, 'v', 'x', { max_age = '1' }) end\n"
    "  if w == 'clear' then ok, err = pcall(res.clear_cookie, res, 'a;b') end\n"
    "  return tostring(ok) .. '|' .. tostring(err)\n"
    "end)\n"
    "app.get('/headers', function(req, res)\n"
    "  res:header('Content-Type', 'text/a')\n"
    "  res:header('content-type', 'text/b')\n"
    "  res:add_header('X-L', '1')\n"
    "  res:add_header('X-L', '2')\n"
    "  res:header('X-R', '1')\n"
    "  res:header('X-R', '2')\n"
    "  res:status(201)\n"
    "  return join(res:get_header('x-l'), res:get_header('X-R'),\n"
    "    tostring(res:get_header('nope')), res:get_status())\n"
    "end)\n"
    "app.get('/table', function() return { a = 1 } end)\n"
    "app.get('/table/empty', function() return json.array() end)\n"
    "app.get('/table/bad', function() return { f = print } end)\n"
    "\n"
    "app.get('/abort/:code', function(req)\n"
    "  tycho.abort(tonumber(req.params.code), req.query.msg)\n"
    "end)\n"
    "app.get('/abort-json', function(req, res)\n"
    "  res:header('X-Before', 'kept')\n"
    "  res:json({ half = 'done' })\n"
    "  tycho.abort(422, 'changed my mind')\n"
    "end)\n"
    "app.get('/return-res', function(req, res) return res:redirect('/x', 303) end)\n"
    "app.get('/abort-deep', function(req)\n"
    "  local function deeper() tycho.abort(409, 'conflict, deep down') end\n"
    "  deeper()\n"
    "  return 'not reached'\n"
    "end)\n"
    "app.get('/boom', function() error('kaboom') end)\n"
    "app.get('/boom/again', function() error('kaboom') end)\n"
    "app.get('/boom/table', function() error({ code = 7 }) end)\n"
    "\n"
    "-- Sessions: the same routes in every store.\n"
    "app.get('/s/:store/show', function(req)\n"
    "  local s = req.session\n"
    "  return join(tostring(s.user), json.encode(s.big), json.encode(s.list or false),\n"
    "    tostring(s.n))\n"
    "end)\n"
    "app.post('/s/:store/login', function(req)\n"
    "  req.session.user = req.query.user\n"
    "  req.session.big = 123456789012345\n"
    "  req.session.list = json.array()\n"
    "  tycho.session.rotate(req)\n"
    "  return 'ok'\n"
    "end)\n"
    "app.post('/s/:store/incr', function(req)\n"
    "  req.session.n = (req.session.n or 0) + 1\n"
    "  return tostring(req.session.n)\n"
    "end)\n"
    "app.post('/s/:store/logout', function(req) tycho.session.destroy(req) return 'bye' end)\n"
    "app.post('/s/:store/fresh', function(req)\n"
    "  req.session.n = 1\n"
    "  local r = function() return math.random(0, 2^31 - 1) end\n"
    "  return join(tycho.worker_id(), r() .. '-' .. r() .. '-' .. r(), c.uuid(), c.uuid7())\n"
    "end)\n"
    "app.post('/s/:store/huge', function(req)\n"
    "  req.session.blob = string.rep('x', 5000)\n"
    "  return 'ok'\n"
    "end)\n"
    "app.get('/nosession', function(req)\n"
    "  return select(2, pcall(tycho.session.rotate, req)) .. '|'\n"
    "    .. select(2, pcall(tycho.session.csrf_token, req))\n"
    "end)\n"
    "\n"
    "-- CSRF: the token in a form field or the header.\n"
    "app.get('/f/form', function(req) return tycho.session.csrf_token(req) end)\n"
    "app.post('/f/submit', function(req) return 'posted' end)\n"
    "\n"
    "-- Rate limits.\n"
    "app.get('/limited/key', function() return tostring(tycho.worker_id()) end)\n"
    "app.get('/limited/ip', function() return 'ip ok' end)\n"
    "app.get('/take', function()\n"
    "  local d = tycho.shared.dict('take')\n"
    "  local a, b, c3 = d:take('k', 1, 2), d:take('k', 1, 2), d:take('k', 1, 2)\n"
    "  local _, wait = d:take('k', 1, 2)\n"
    "  local _, e1 = pcall(d.take, d, 'k', 0, 2)\n"
    "  local _, e2 = pcall(d.take, d, 'k', 1, 0.5)\n"
    "  return join(tostring(a), tostring(b), tostring(c3), tostring(wait > 0.9 and wait <= 1))\n"
    "    .. '|' .. e1 .. '|' .. e2\n"
    "end)\n"
    "\n"
    "-- Multipart.\n"
    "local function parts_text(parts)\n"
    "  local out = {}\n"
    "  for i, p in ipairs(parts) do\n"
    "    out[i] = table.concat({ tostring(p.name), tostring(p.filename), p.content_type,\n"
    "      tostring(p.headers['x-extra']), #p.body, p.body }, '|')\n"
    "  end\n"
    "  return #parts .. '\\n' .. table.concat(out, '\\n')\n"
    "end\n"
    "app.post('/mp', function(req) return parts_text(req:multipart()) end)\n"
    "app.post('/mp/small', function(req)\n"
    "  return parts_text(req:multipart{ max_parts = 3, max_header_bytes = 100 })\n"
    "end)\n"
    "app.post('/mp/misuse', function(req)\n"
    "  return select(2, pcall(req.multipart, req, { bogus = 1 }))\n"
    "end)\n"
    "\n"
    "-- Templates.\n"
    "app.get('/tpl', function(req)\n"
    "  return tycho.template.render('<p title=\"{{ title }}\">{{ name }}</p>{{{ raw }}}'\n"
    "    .. '{% for i = 1, n do %}<i>{{ i }}</i>{% end %}{{ missing }}|{{ string.upper(name) }}',\n"
    "    { title = [[\"q\" & 'a']], name = '<b>', raw = '<br>', n = 2 })\n"
    "end)\n"
    "app.get('/tpl/misc', function(req)\n"
    "  local t, h = '{{ v }}!', tycho.html\n"
    "  local same = tycho.template.compile(t) == tycho.template.compile(t)\n"
    "  local out = { tostring(same), tycho.template.compile(t){ v = 1 },\n"
    "    h.escape([[<a href=\"x\">&'</a>]]), h.escape(nil), h.escape(5),\n"
    "    tycho.template.render('{{ table }}{{{ tostring }}}', { table = 1, tostring = 2 }) }\n"
    "  for _, bad in ipairs({ '{{ x', '{{{ x }}', '{% x' }) do\n"
    "    out[#out + 1] = select(2, pcall(tycho.template.compile, bad))\n"
    "  end\n"
    "  out[#out + 1] = select(2, pcall(tycho.template.compile, 42))\n"
    "  out[#out + 1] = tostring(select(1, pcall(tycho.template.compile, '{% if %}')))\n"
    "  return table.concat(out, '\\n')\n"
    "end)\n"
    "local tree = tycho.template.compile('{{ name }}[{% if child then %}{{{ sub(child) }}}'\n"
    "  .. '{% end %}]{{ name }}')\n"
    "local function sub(node) node.sub = sub return tree(node) end\n"
    "app.get('/tpl/tree', function() return sub({ name = 'a', child = { name = 'b' } }) end)\n"
    "app.get('/tpl/yield', function(req)\n"
    "  local tpl = tycho.template.compile('{{ who }}:{{ wait() }}{{ who }}')\n"
    "  local function wait() tycho.sleep(tonumber(req.query.s)) return '' end\n"
    "  return tpl({ who = req.query.who, wait = wait })\n"
    "end)\n"
    "\n"
    "-- Crypto.\n"
    "app.get('/crypto/vectors', function()\n"
    "  local b64, jefe = {}, 'what do ya want for nothing?'\n"
    "  for _, s in ipairs({ '', 'f', 'fo', 'foo', 'foob', 'fooba', 'foobar' }) do\n"
    "    b64[#b64 + 1] = table.concat({ c.base64(s), c.base64url(s), c.from_base64(c.base64(s)),\n"
    "      c.from_base64url(c.base64url(s)) }, ',')\n"
    "  end\n"
    "  return table.concat({\n"
    "    c.hex(c.sha1('abc')), c.hex(c.sha256('abc')), c.hex(c.sha512('abc')),\n"
    "    c.hex(c.hmac('sha256', 'Jefe', jefe)), c.hex(c.hmac('sha1', 'Jefe', jefe)),\n"
    "    c.hex(c.hmac('sha512', 'Jefe', jefe)), table.concat(b64, ' '),\n"
    "    join(c.base64('\\251\\255'), c.base64url('\\251\\255'), c.hex(c.from_base64url('-_8')),\n"
    "      c.hex(c.from_base64('+/8='))),\n"
    "    c.hex('\\0\\255\\16') .. ' ' .. c.hex(c.from_hex('00FFa0')),\n"
    "    join(tostring(c.equals('abc', 'abc')), tostring(c.equals('abc', 'abd')),\n"
    "      tostring(c.equals('abc', 'ab'))),\n"
    "  }, '\\n')\n"
    "end)\n"
    "app.get('/crypto/errors', function()\n"
    "  local function e(a, b) return tostring(a) .. ',' .. tostring(b) end\n"
    "  local function raised(fn, ...) return select(2, pcall(fn, ...)) end\n"
    "  return table.concat({\n"
    "    e(c.from_base64('Zm9v!')), e(c.from_base64('Z')), e(c.from_hex('abc')),\n"
    "    e(c.from_hex('zz')), raised(c.random, -1), raised(c.random, 65537),\n"
    "    raised(c.hmac, 'md5', 'k', 'm'), e(c.unsign('nodot')), e(c.unsign('a.b')),\n"
    "  }, '\\n')\n"
    "end)\n"
    "app.get('/crypto/random', function()\n"
    "  local a, b = c.random(16), c.random(16)\n"
    "  local function shape(id)\n"
    "    return id:gsub('%x', 'x') .. ' ' .. id:sub(15, 15) .. ' '\n"
    "      .. tostring(id:sub(20, 20):find('[89ab]') ~= nil)\n"
    "  end\n"
    "  local u7 = c.uuid7()\n"
    "  return join(#a, tostring(a ~= b), #c.random(0), #c.random(65536), shape(c.uuid()),\n"
    "    shape(u7), tonumber(u7:sub(1, 8) .. u7:sub(10, 13), 16))\n"
    "end)\n"
    "app.get('/crypto/sign', function()\n"
    "  local secret = os.getenv('TYCHO_SECRET')\n"
    "  local s, sp = c.sign('v'), c.sign('a.b', 'purpose')\n"
    "  return join(tostring(s == 'v.' .. c.base64url(c.hmac('sha256', secret, '\\0v'))),\n"
    "    tostring(sp == 'a.b.' .. c.base64url(c.hmac('sha256', secret, 'purpose\\0a.b'))),\n"
    "    c.unsign(s), c.unsign(sp, 'purpose'), tostring(select(2, c.unsign(sp))),\n"
    "    tostring(select(2, c.unsign('w' .. s:sub(2)))), tostring(select(2, c.unsign(s .. 'x'))))\n"
    "end)\n"
    "\n"
    "-- tycho.json.\n"
    "app.get('/json/rt', function()\n"
    "  local d = json.decode('{\"a\":[],\"b\":{}}')\n"
    "  return join(json.encode(json.array()), json.encode({}), json.encode(json.decode('[]')),\n"
    "    json.encode(d.a), json.encode(d.b), json.encode(123456789012345), json.encode(2^53),\n"
    "    json.encode(-2^53), json.encode(1.5), json.encode(0.1), json.encode(1/3),\n"
    "    json.encode(1e300), tostring(json.decode('9007199254740993')),\n"
    "    type(json.decode('9007199254740993')), tostring(json.decode('-9007199254740993')),\n"
    "    type(json.decode('9007199254740992')),\n"
    "    json.encode(json.decode('[1,\"two\",true,false,null]')),\n"
    "    tostring(json.decode('null') == json.null), json.encode(json.null),\n"
    "    json.encode('a\"b\\\\c\\n\\r\\t\\1/caf\\195\\169'), #json.decode('\"a\\\\u0000b\"'),\n"
    "    json.encode({ 1, 2, { x = json.array{ 3 } } }))\n"
    "end)\n"
    "app.get('/json/errors', function()\n"
    "  local function raised(v) return select(2, pcall(json.encode, v)) end\n"
    "  local cyc = {} cyc.self = cyc\n"
    "  return table.concat({\n"
    "    raised({ a = { b = { 1, print } } }), raised({ x = 1/0 }), raised({ [{}] = 1 }),\n"
    "    raised(setmetatable({ 1, x = 2 }, getmetatable(json.array()))), raised(print),\n"
    "    raised(cyc):sub(1, 40) .. '...' .. raised(cyc):sub(-35),\n"
    "    select(2, json.decode('{\"a\":}')), select(2, json.decode('')),\n"
    "    select(2, json.decode('18446744073709551616')),\n"
    "  }, '\\n')\n"
    "end)\n";

/* The app of the server without a secret (and then with --secret-file); CORS's defaults. */
static const char plain_lua[] =
    "local app = require 'tycho'\n"
    "local c = tycho.crypto\n"
    "app.use(tycho.cors())\n"
    "app.use(function(req, res, nxt) res:header('X-MW', 'yes') nxt() end)\n"
    "app.get('/x', function() return 'x' end)\n"
    "app.get('/sign', function() return c.sign('v') end)\n"
    "app.get('/unsign', function() return tostring(c.unsign('v.abc')) end)\n"
    "app.get('/cookie', function(req, res) res:cookie('a', 'b', { signed = true }) end)\n"
    "app.get('/check', function()\n"
    "  local want = 'v.' .. c.base64url(c.hmac('sha256', os.getenv('EXPECT_SECRET'), '\\0v'))\n"
    "  return tostring(c.sign('v') == want) .. ' ' .. c.unsign(c.sign('w'))\n"
    "end)\n";

/* Writes text (then more, when not NULL) into d/name through a rename. Returns 0, or -1. */
static int write_file(const char *d, const char *name, const char *text, const char *more)
{
    char tmp[160], path[160];
    FILE *f;

    snprintf(tmp, sizeof tmp, "%s/.%s.new", d, name);
    snprintf(path, sizeof path, "%s/%s", d, name);
    if (!(f = fopen(tmp, "w")))
        return -1;
    fputs(text, f);
    if (more)
        fputs(more, f);
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, path);
}

static int write_app(const char *version)
{
    char first[64];

    snprintf(first, sizeof first, "local VERSION = '%s'\n", version);
    return write_file(dir, "app.lua", first, app_lua);
}

/* ======================================================================
 * Requests
 * ====================================================================== */

/*
 * Sends METHOD path with the extra header lines (each ending in CRLF; NULL
 * for none) and len bytes of body (NULL: no body and no Content-Length) on
 * c, and reads the answer into r. Returns r->status (0: none).
 */
static int send_on(struct client *c, const char *method, const char *path, const char *headers,
                   const char *body, size_t len, struct response *r)
{
    char head[16384];
    int n;

    memset(r, 0, sizeof *r);
    n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: t\r\n%s", method, path,
                 headers ? headers : "");
    if (body && n < (int)sizeof head)
        n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %zu\r\n", len);
    if (n < (int)sizeof head)
        n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    if (n >= (int)sizeof head) {
        note("request head over %zu bytes", sizeof head);
        return 0;
    }
    if (client_send(c, head, (size_t)n) == 0 && (!body || client_send(c, body, len) == 0))
        read_response(c, r, strcmp(method, "HEAD") == 0);
    return r->status;
}

/* send_on() on a fresh connection, closed afterwards. */
static int request(int port, const char *method, const char *path, const char *headers,
                   const char *body, size_t len, struct response *r)
{
    struct client c;

    memset(r, 0, sizeof *r);
    if (client_connect(&c, port) < 0)
        return 0;
    send_on(&c, method, path, headers, body, len, r);
    client_close(&c);
    return r->status;
}

/* A request (body a string, or NULL) answered with status and, unless want is NULL, want. */
static void check(int port, const char *method, const char *path, const char *headers,
                  const char *body, int status, const char *want)
{
    struct response r;
    char ctx[256];

    snprintf(ctx, sizeof ctx, "%s %s", method, path);
    request(port, method, path, headers, body, body ? strlen(body) : 0, &r);
    if (expect_status(&r, status, ctx) && want)
        expect_body(&r, want, ctx);
    response_free(&r);
}

/* POST path with a body of content type ctype (NULL: no Content-Type). */
static void check_post(int port, const char *path, const char *ctype, const char *body,
                       int status, const char *want)
{
    char headers[256] = "";

    if (ctype)
        snprintf(headers, sizeof headers, "Content-Type: %s\r\n", ctype);
    check(port, "POST", path, headers, body, status, want);
}

/* The Set-Cookie line of r for the cookie name ("name=..."), or NULL. */
static const char *set_cookie_of(const struct response *r, const char *name)
{
    size_t len = strlen(name);

    for (int i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->name[i], "Set-Cookie") == 0 && strncmp(r->value[i], name, len) == 0 &&
            r->value[i][len] == '=')
            return r->value[i];
    return NULL;
}

/* Copies the "name=value" of a Set-Cookie line (up to its first ';') into out; "" if none. */
static void cookie_pair(const char *line, char *out, size_t cap)
{
    size_t n = line ? strcspn(line, ";") : 0;

    if (n >= cap)
        n = cap - 1;
    memcpy(out, line ? line : "", n);
    out[n] = '\0';
}

/* Copies the session id in a cookie pair "name=ID.MAC" into out. */
static void session_id(const char *pair, char *out, size_t cap)
{
    const char *eq = strchr(pair, '='), *dot = strrchr(pair, '.');
    size_t n = eq && dot > eq ? (size_t)(dot - eq - 1) : 0;

    if (n >= cap)
        n = cap - 1;
    memcpy(out, eq ? eq + 1 : "", n);
    out[n] = '\0';
}

/* ======================================================================
 * Context, query, forms, JSON bodies
 * ====================================================================== */

static void test_context(int port)
{
    struct response r;

    check(port, "GET", "/ctx", "X-User: alice\r\n", NULL, 200, "alice");
    check(port, "GET", "/ctx", NULL, NULL, 200, "nil");
    ok(body_has(port, "/readonly/path", "false|", "/app.lua:46: req.path is read-only (set a "
                "field of your own: req.user = ...)"), "req.path = x raises, at the app's line");
    ok(body_has(port, "/readonly/cookies", "false|", ": req.cookies is read-only"),
       "req.cookies is read-only");
    ok(body_has(port, "/readonly/query_string", "false|", ": req.query_string is read-only"),
       "req.query_string is read-only");
    ok(body_has(port, "/readonly/json", "false|", ": req.json is a method: choose another name"),
       "a method's name cannot be a field");
    check(port, "GET", "/readonly/user", NULL, NULL, 200, "true|nil");

    /* res:header replaces, add_header adds; get_header, get_status; middleware after next(). */
    request(port, "GET", "/headers", NULL, NULL, 0, &r);
    expect_status(&r, 201, "/headers");
    expect_body(&r, "1 2 nil 201", "/headers: get_header (first of a name), get_status");
    is_int(header_count(&r, "Content-Type"), 1, "res:header replaces: one Content-Type");
    expect_header(&r, "Content-Type", "text/b", "/headers");
    is_int(header_count(&r, "X-L"), 2, "res:add_header adds: two X-L lines");
    is_int(header_count(&r, "X-R"), 1, "res:header twice: one X-R");
    expect_header(&r, "X-R", "2", "/headers");
    expect_header(&r, "X-Seen-Status", "201", "middleware after next(): res:get_status()");
    expect_header(&r, "X-Seen-Type", "text/b", "middleware after next(): res:get_header()");
    response_free(&r);

    /* A table returned is JSON. */
    request(port, "GET", "/table", NULL, NULL, 0, &r);
    expect_status(&r, 200, "/table");
    expect_body(&r, "{\"a\":1}", "/table");
    expect_header(&r, "Content-Type", "application/json", "/table");
    response_free(&r);
    check(port, "GET", "/table/empty", NULL, NULL, 200, "[]");
    check(port, "GET", "/table/bad", NULL, NULL, 500,
          "handled: tycho.json.encode: the value.f is a function, which JSON cannot hold");
}

static void test_query_and_forms(int port)
{
    const char *form = "tag=a&tag=b&x=1+2&y=%41&z";

    check(port, "GET", "/q?tag=a&tag=b&x=%41+B&empty=&flag&t%61g=c", NULL, NULL, 200,
          "tag=a&tag=b&x=%41+B&empty=&flag&t%61g=c|c|a,b,c|0|A B|[][]");
    check(port, "GET", "/q/misuse", NULL, NULL, 200,
          "bad argument #2 to '?' (string expected, got no value)");
    check_post(port, "/form", "application/x-www-form-urlencoded", form, 200, "b|a,b|1 2|A|[]|0");
    check_post(port, "/form", "Application/X-WWW-Form-Urlencoded; charset=UTF-8", form, 200,
               "b|a,b|1 2|A|[]|0");
    check_post(port, "/form", NULL, form, 200, "b|a,b|1 2|A|[]|0");
    check_post(port, "/form", "application/json", "{}", 415, "req:form: expected a body of type "
               "application/x-www-form-urlencoded, got application/json\n");
    check_post(port, "/form/misuse", NULL, "", 200,
               "req:form_all: expected a field name (a string), got number");
}

static void test_json_body(int port)
{
    static char deep[20001];
    struct response r;

    check_post(port, "/json", "application/json",
               "{\"a\":[],\"b\":{},\"n\":9007199254740993,\"f\":1.5,\"s\":\"x\\u0000y\","
               "\"z\":null}", 200, "[] {} string 9007199254740993 1.5 3 true");
    check_post(port, "/json", "application/json", "{\"a\":}", 400,
               "the body is not valid JSON: line 1, column 6: unexpected token near '}'\n");
    check_post(port, "/json", "application/json", "{\"a\":", 400,
               "the body is not valid JSON: line 1, column 5: unexpected token near end of file\n");
    check_post(port, "/json", "application/json", "", 400,
               "expected a JSON body, got an empty one\n");
    memset(deep, '[', sizeof deep - 1);
    check_post(port, "/json/echo", NULL, deep, 400, "the body is not valid JSON: line 1, "
               "column 2049: maximum parsing depth reached near '['\n");
    request(port, "POST", "/json/echo", NULL, "[1,[],{},\"\\u00e9\"]", 18, &r);
    expect_status(&r, 200, "req:json() echoed");
    expect_body(&r, "[1,[],{},\"\xc3\xa9\"]", "req:json() echoed: [] stays [], {} stays {}");
    expect_header(&r, "Content-Type", "application/json", "req:json() echoed");
    response_free(&r);
}

/* ======================================================================
 * Cookies
 * ====================================================================== */

static void test_cookies(int port)
{
    struct response r;
    char sig[256], headers[512], bad[256];
    const char *line;

    check(port, "GET", "/cookies", "Cookie: a=1; b=\"qv\"; a=2\r\nCookie: c=3\r\n", NULL, 200,
          "1 qv 3 nil");
    check(port, "GET", "/cookies", NULL, NULL, 200, "nil nil nil nil");

    request(port, "GET", "/setcookies", NULL, NULL, 0, &r);
    expect_status(&r, 200, "/setcookies");
    is_int(header_count(&r, "Set-Cookie"), 4, "four Set-Cookie lines (res:cookie adds)");
    line = set_cookie_of(&r, "plain");
    is_str(line, "plain=v; Path=/; HttpOnly; SameSite=Lax", "res:cookie: the defaults");
    line = set_cookie_of(&r, "full");
    is_str(line, "full=w; Max-Age=60; " EXPIRED "; Path=/p; Domain=example.com; Secure; "
                 "SameSite=None", "res:cookie: every option");
    line = set_cookie_of(&r, "old");
    is_str(line, "old=; Max-Age=0; " EXPIRED "; Path=/p; HttpOnly; SameSite=Lax",
           "res:clear_cookie");
    line = set_cookie_of(&r, "sig");
    cookie_pair(line, sig, sizeof sig);
    ok(line && strncmp(sig, "sig=hello.", 10) == 0 && strlen(sig) == 10 + 43 &&
           strcmp(line + strlen(sig), "; Path=/; HttpOnly; SameSite=Lax") == 0,
       what("signed cookie", "value.MAC (43 base64url characters): %s", line ? line : "none"));
    response_free(&r);

    snprintf(headers, sizeof headers, "Cookie: %s\r\n", sig);
    check(port, "GET", "/signed", headers, NULL, 200, "hello|nil");
    /* The value changed, the MAC changed, the MAC gone, moved to another name, none. */
    snprintf(bad, sizeof bad, "%s", sig);
    bad[8] = 'p';
    snprintf(headers, sizeof headers, "Cookie: %s\r\n", bad);
    check(port, "GET", "/signed", headers, NULL, 200, "nil|bad signature");
    snprintf(bad, sizeof bad, "%s", sig);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == 'A' ? 'B' : 'A';
    snprintf(headers, sizeof headers, "Cookie: %s\r\n", bad);
    check(port, "GET", "/signed", headers, NULL, 200, "nil|bad signature");
    check(port, "GET", "/signed", "Cookie: sig=hello\r\n", NULL, 200, "nil|not signed");
    snprintf(headers, sizeof headers, "Cookie: other=%s\r\n", sig + 4);
    check(port, "GET", "/signed?name=other", headers, NULL, 200, "nil|bad signature");
    check(port, "GET", "/signed", NULL, NULL, 200, "nil|no such cookie");

    check(port, "GET", "/cookie-err/name", NULL, NULL, 200, "false|res:cookie: bad cookie name "
          "bad name (letters, digits, !#$%&'*+-.^_`|~)");
    check(port, "GET", "/cookie-err/value", NULL, NULL, 200, "false|res:cookie: the value of v "
          "holds a space, a quote, a comma, a semicolon, a backslash or a byte that is not "
          "ASCII: encode it first (tycho.crypto.base64url)");
    check(port, "GET", "/cookie-err/type", NULL, NULL, 200,
          "false|res:cookie: the value must be a string, got number");
    check(port, "GET", "/cookie-err/none", NULL, NULL, 200, "false|res:cookie: same_site = "
          "\"None\" needs secure = true (browsers refuse it otherwise)");
    check(port, "GET", "/cookie-err/bogus", NULL, NULL, 200, "false|res:cookie: same_site must "
          "be \"Strict\", \"Lax\" or \"None\", got lax");
    check(port, "GET", "/cookie-err/max_age", NULL, NULL, 200,
          "false|res:cookie: max_age must be a number of seconds");
    check(port, "GET", "/cookie-err/clear", NULL, NULL, 200, "false|res:clear_cookie: bad cookie "
          "name a;b (letters, digits, !#$%&'*+-.^_`|~)");
}

/* ======================================================================
 * 404 and 405 through middleware, CORS
 * ====================================================================== */

static void test_misses_and_cors(int port)
{
    const char *origin = "Origin: https://a.example\r\n";
    struct response r;

    request(port, "GET", "/nope", NULL, NULL, 0, &r);
    expect_status(&r, 404, "404");
    expect_body(&r, "no route for /nope", "404: app.not_found's answer");
    expect_header(&r, "X-MW", "yes", "404 through middleware");
    expect_header(&r, "X-Seen-Status", "404", "404 through middleware");
    response_free(&r);
    request(port, "HEAD", "/nope", NULL, NULL, 0, &r);
    expect_status(&r, 404, "HEAD 404");
    expect_header(&r, "X-MW", "yes", "HEAD 404 through middleware");
    response_free(&r);
    request(port, "POST", "/x", NULL, "", 0, &r);
    expect_status(&r, 405, "405");
    expect_body(&r, "Method Not Allowed\n", "405");
    expect_header(&r, "Allow", "GET, HEAD", "405 keeps Allow");
    expect_header(&r, "X-MW", "yes", "405 through middleware");
    expect_header(&r, "X-Seen-Status", "405", "405 through middleware");
    response_free(&r);

    /* A preflight on a route that has only GET: answered by tycho.cors. */
    request(port, "OPTIONS", "/x", "Origin: https://a.example\r\n"
            "Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: x-token\r\n",
            NULL, 0, &r);
    expect_status(&r, 204, "preflight on a GET route");
    is_int(r.body_len, 0, "preflight: no body");
    expect_header(&r, "Access-Control-Allow-Origin", "https://a.example", "preflight");
    expect_header(&r, "Access-Control-Allow-Credentials", "true", "preflight");
    expect_header(&r, "Access-Control-Allow-Methods", "GET, POST", "preflight");
    expect_header(&r, "Access-Control-Allow-Headers", "Content-Type, X-Token", "preflight");
    expect_header(&r, "Access-Control-Max-Age", "300", "preflight");
    expect_header(&r, "Vary", "Origin", "preflight");
    ok(header_get(&r, "X-MW") == NULL, "preflight: answered before the next middleware");
    response_free(&r);
    /* Without an Origin, or from another origin, OPTIONS is the route's 405. */
    request(port, "OPTIONS", "/x", NULL, NULL, 0, &r);
    expect_status(&r, 405, "OPTIONS without Origin");
    expect_header(&r, "Allow", "GET, HEAD", "OPTIONS without Origin");
    response_free(&r);
    request(port, "OPTIONS", "/x", "Origin: https://evil.example\r\n"
            "Access-Control-Request-Method: POST\r\n", NULL, 0, &r);
    expect_status(&r, 405, "preflight from an origin not listed");
    ok(header_get(&r, "Access-Control-Allow-Origin") == NULL, "an origin not listed: no ACAO");
    expect_header(&r, "Vary", "Origin", "an origin not listed: still Vary: Origin (caches)");
    response_free(&r);

    request(port, "GET", "/x", origin, NULL, 0, &r);
    expect_status(&r, 200, "CORS GET");
    expect_header(&r, "Access-Control-Allow-Origin", "https://a.example", "CORS GET");
    expect_header(&r, "Access-Control-Expose-Headers", "X-Total", "CORS GET");
    expect_header(&r, "Access-Control-Allow-Credentials", "true", "CORS GET");
    ok(header_get(&r, "Access-Control-Allow-Methods") == NULL, "CORS GET: no preflight headers");
    response_free(&r);
    request(port, "GET", "/nope", origin, NULL, 0, &r);
    expect_status(&r, 404, "CORS 404");
    expect_header(&r, "Access-Control-Allow-Origin", "https://a.example", "CORS on a 404");
    response_free(&r);
    request(port, "DELETE", "/x", origin, NULL, 0, &r);
    expect_status(&r, 405, "CORS 405");
    expect_header(&r, "Access-Control-Allow-Origin", "https://a.example", "CORS on a 405");
    expect_header(&r, "Allow", "GET, HEAD", "CORS 405 keeps Allow");
    response_free(&r);
}

/* ======================================================================
 * app.error, tycho.abort
 * ====================================================================== */

static void test_errors(const struct server *s)
{
    struct response r;
    int port = s->port;

    request(port, "GET", "/boom", NULL, NULL, 0, &r);
    expect_status(&r, 500, "app.error");
    ok(r.body && strncmp(r.body, "handled: /", 10) == 0 && strstr(r.body, "/app.lua:") &&
           r.body_len > 8 && strcmp(r.body + r.body_len - 8, ": kaboom") == 0,
       what("app.error", "its answer replaces the 500, given the error: %s", r.body));
    expect_header(&r, "Content-Type", "text/plain", "app.error");
    expect_header(&r, "X-MW", "yes", "app.error: headers set before the error stay");
    response_free(&r);
    ok(log_has_line(s, "GET /boom [request ", ": kaboom"), "app.error: the error is logged");
    check(port, "GET", "/boom/again", NULL, NULL, 500, "Internal Server Error\n");
    ok(log_has_line(s, "GET /boom/again [request ", ": again"),
       "an error inside app.error: the generic 500, the error logged");
    request(port, "GET", "/boom/table", NULL, NULL, 0, &r);
    expect_status(&r, 500, "app.error with a table error");
    expect_body(&r, "{\"error\":7}", "app.error gets the error value; its table is JSON");
    response_free(&r);

    check(port, "GET", "/abort/418?msg=short%20and%20stout", NULL, NULL, 418,
          "short and stout\n");
    check(port, "GET", "/abort/403", NULL, NULL, 403, "Forbidden\n");
    check(port, "GET", "/abort/503", NULL, NULL, 503, "Service Unavailable\n");
    check(port, "GET", "/abort-deep", NULL, NULL, 409, "conflict, deep down\n");
    /* The headers set before stay (CORS, cookies); the body and its type are the abort's. */
    request(port, "GET", "/abort-json", NULL, NULL, 0, &r);
    expect_status(&r, 422, "tycho.abort after res:json");
    expect_body(&r, "changed my mind\n", "tycho.abort after res:json: its message");
    expect_header(&r, "X-Before", "kept", "tycho.abort keeps a header set before");
    expect_header(&r, "X-MW", "yes", "tycho.abort keeps the middleware's header");
    expect_header(&r, "Content-Type", "text/plain; charset=utf-8",
                  "tycho.abort: plain text, not the JSON type set before");
    response_free(&r);
    /* return res:redirect(...): res itself is the same as nothing. */
    request(port, "GET", "/return-res", NULL, NULL, 0, &r);
    expect_status(&r, 303, "return res:redirect(...)");
    expect_header(&r, "Location", "/x", "return res:redirect(...)");
    response_free(&r);
    ok(!log_has_line(s, "conflict, deep down", NULL), "tycho.abort is not logged as an error");
    request(port, "GET", "/abort/302", NULL, NULL, 0, &r);
    expect_status(&r, 500, "tycho.abort(302)");
    ok(r.body && strstr(r.body, "bad argument #1 to 'abort' (expected a status from 400 to 599)"),
       what("tycho.abort(302)", "raises: %s", r.body ? r.body : ""));
    response_free(&r);
}

/* ======================================================================
 * tycho.crypto, tycho.json, templates
 * ====================================================================== */

static void test_crypto(int port)
{
    char body[2048];
    long long ms = 0;

    /* SHA: FIPS 180-2 "abc"; HMAC: RFC 4231 and RFC 2202 test case 2; base64: RFC 4648 10. */
    check(port, "GET", "/crypto/vectors", NULL, NULL, 200,
          "a9993e364706816aba3e25717850c26c9cd0d89d\n"
          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
          "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
          "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f\n"
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843\n"
          "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79\n"
          "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
          "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737\n"
          ",,, Zg==,Zg,f,f Zm8=,Zm8,fo,fo Zm9v,Zm9v,foo,foo Zm9vYg==,Zm9vYg,foob,foob "
          "Zm9vYmE=,Zm9vYmE,fooba,fooba Zm9vYmFy,Zm9vYmFy,foobar,foobar\n"
          "+/8= -_8 fbff fbff\n"
          "00ff10 00ffa0\n"
          "true false false");
    check(port, "GET", "/crypto/errors", NULL, NULL, 200,
          "nil,not base64: character 5 is not in its alphabet\n"
          "nil,not base64: a length no encoding gives\n"
          "nil,not hex: an odd number of digits\n"
          "nil,not hex: a character other than 0-9, a-f, A-F\n"
          "tycho.crypto.random: expected 0 to 65536 bytes, got -1\n"
          "tycho.crypto.random: expected 0 to 65536 bytes, got 65537\n"
          "tycho.crypto.hmac: expected \"sha1\", \"sha256\" or \"sha512\", got \"md5\"\n"
          "nil,not signed\n"
          "nil,bad signature");
    body_of(port, "/crypto/random", body, sizeof body);
    {
        const char *want = "16 true 0 65536 xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx 4 true "
                           "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx 7 true ";
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        if (strncmp(body, want, strlen(want)) == 0)
            ms = atoll(body + strlen(want));
        ok(ms != 0, what("random, uuid, uuid7", "lengths, shapes, versions, variants: %s", body));
        ok(llabs(ms - ((long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000)) < 60000,
           what("uuid7", "starts with the time in ms (%lld)", ms));
    }
    check(port, "GET", "/crypto/sign", NULL, NULL, 200,
          "true true v a.b bad signature bad signature bad signature");
}

static void test_json(int port)
{
    check(port, "GET", "/json/rt", NULL, NULL, 200,
          "[] {} [] [] {} 123456789012345 9007199254740992 -9007199254740992 1.5 0.1 "
          "0.3333333333333333 1e+300 9007199254740993 string -9007199254740993 number "
          "[1,\"two\",true,false,null] true null \"a\\\"b\\\\c\\n\\r\\t\\u0001/caf\xc3\xa9\" 3 "
          "[1,2,{\"x\":[3]}]");
    check(port, "GET", "/json/errors", NULL, NULL, 200,
          "tycho.json.encode: the value.a.b[2] is a function, which JSON cannot hold\n"
          "tycho.json.encode: the value.x is inf, which JSON cannot hold\n"
          "tycho.json.encode: the value has a table key; JSON keys are strings\n"
          "tycho.json.encode: the value is marked an array but has other keys\n"
          "tycho.json.encode: the value is a function, which JSON cannot hold\n"
          "tycho.json.encode: the value.self.self.s...s nested over 128 levels (a cycle?)\n"
          "line 1, column 6: unexpected token near '}'\n"
          "line 1, column 0: unexpected token near end of file\n"
          "line 1, column 20: too big integer near '18446744073709551616'");
}

static void test_templates(int port)
{
    enum { N = 6 };
    struct client c[N];
    int good = 0;

    check(port, "GET", "/tpl", NULL, NULL, 200,
          "<p title=\"&quot;q&quot; &amp; &#39;a&#39;\">&lt;b&gt;</p><br><i>1</i><i>2</i>"
          "|&lt;B&gt;");
    check(port, "GET", "/tpl/misc", NULL, NULL, 200,
          "true\n1!\n&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;\n\n5\n12\n"
          "tycho.template.compile: template: a {{ with no }}\n"
          "tycho.template.compile: template: a {{{ with no }}}\n"
          "tycho.template.compile: template: a {% with no %}\n"
          "tycho.template.compile: expected the template (a string), got number\n"
          "false");
    /* A template rendered inside itself (a tree) keeps its own values. */
    check(port, "GET", "/tpl/tree", NULL, NULL, 200, "a[b[]b]a");
    /* Renders of one template that wait at once (N requests, 2 workers) keep their own. */
    for (int i = 0; i < N; i++) {
        char req[128];
        snprintf(req, sizeof req, "GET /tpl/yield?who=%c&s=0.3 HTTP/1.1\r\nHost: t\r\n\r\n",
                 'A' + i);
        if (client_connect(&c[i], port) == 0)
            client_sends(&c[i], req);
    }
    for (int i = 0; i < N; i++) {
        struct response r;
        char want[8];
        snprintf(want, sizeof want, "%c:%c", 'A' + i, 'A' + i);
        if (c[i].fd >= 0 && read_response(&c[i], &r, 0) == 0 && r.body &&
            strcmp(r.body, want) == 0)
            good++;
        else
            note("render %s got %s", want, r.body ? r.body : "(nothing)");
        response_free(&r);
        client_close(&c[i]);
    }
    is_int(good, N, "renders of one template waiting at once each see their own values");
}

/* ======================================================================
 * Multipart
 * ====================================================================== */

static char mp[262144];

/* Appends to mp at *len. */
static void mp_add(size_t *len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    *len += (size_t)vsnprintf(mp + *len, sizeof mp - *len, fmt, ap);
    va_end(ap);
}

static void check_mp(int port, const char *path, const char *ctype, size_t len, int status,
                     const char *want, const char *ctx)
{
    char headers[256];
    struct response r;

    snprintf(headers, sizeof headers, "Content-Type: %s\r\n", ctype);
    request(port, "POST", path, headers, mp, len, &r);
    if (expect_status(&r, status, ctx) && want)
        expect_body(&r, want, ctx);
    response_free(&r);
}

static void test_multipart(int port)
{
    const char *ct = "multipart/form-data; boundary=XyZ";
    const char *good_parts = "3\na|nil|text/plain|nil|1|1\n"
                             "f|t.txt|application/octet-stream|e|13|line1\r\n-- x\xff\xfe\n"
                             "q\"uote|nil|text/plain|nil|0|";
    size_t len = 0, full;
    struct response r;

    mp_add(&len, "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"
                 "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"t.txt\"\r\n"
                 "Content-Type: application/octet-stream\r\nX-Extra: e\r\n\r\n"
                 "line1\r\n-- x\xff\xfe\r\n"
                 "--XyZ\r\nContent-Disposition: form-data; name=\"q\\\"uote\"\r\n\r\n\r\n"
                 "--XyZ--\r\n");
    full = len;
    check_mp(port, "/mp", ct, len, 200, good_parts, "multipart: three parts");
    check_mp(port, "/mp", "multipart/form-data; Boundary=\"XyZ\"", len, 200, good_parts,
             "multipart: a quoted boundary, the parameter's name in any case");
    check_mp(port, "/mp/small", ct, len, 431, "multipart: a part's headers are over 100 bytes\n",
             "max_header_bytes");
    /* Truncated: in a part's body, in its headers, before the first boundary. */
    check_mp(port, "/mp", ct, (size_t)((char *)memmem(mp, len, "-- x", 4) - mp), 400,
             "multipart: the body ends before its closing boundary\n", "truncated in a body");
    check_mp(port, "/mp", ct, 60, 400, "multipart: a part's headers are not finished\n",
             "truncated in a part's headers");
    check_mp(port, "/mp", ct, 15, 400, "multipart: the body ends before its closing boundary\n",
             "truncated in the first delimiter line");
    check_mp(port, "/mp", ct, 0, 400, "multipart: the body does not start with its boundary\n",
             "an empty body");
    check_mp(port, "/mp", "multipart/form-data", len, 400,
             "multipart: the Content-Type has no boundary (or one over 70 characters)\n",
             "no boundary");
    check_mp(port, "/mp", "multipart/form-data; boundary=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", len, 400,
             "multipart: the Content-Type has no boundary (or one over 70 characters)\n",
             "a boundary over 70 characters");
    check_mp(port, "/mp", "multipart/form-data; boundary=other", len, 400,
             "multipart: the body does not start with its boundary\n", "another boundary");
    check_mp(port, "/mp", "text/plain", len, 415,
             "req:multipart: expected a body of type multipart/form-data, got text/plain\n",
             "another content type");
    request(port, "POST", "/mp", NULL, mp, len, &r);
    expect_status(&r, 415, "no content type");
    expect_body(&r, "req:multipart: expected a body of type multipart/form-data, got none\n",
                "no content type");
    response_free(&r);
    check_mp(port, "/mp/misuse", ct, len, 200, "req:multipart: unknown option bogus",
             "an unknown option");

    len = 0;
    mp_add(&len, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\nno colon here\r\n\r\n"
                 "v\r\n--XyZ--\r\n");
    check_mp(port, "/mp", ct, len, 400, "multipart: a part's header line is malformed\n",
             "a malformed part header");
    len = 0;
    mp_add(&len, "--XyZ--\r\n");
    check_mp(port, "/mp", ct, len, 200, "0\n", "no parts");

    /* Huge part headers (default limit 8192 bytes). */
    len = 0;
    mp_add(&len, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\nX-Extra: ");
    memset(mp + len, 'h', 9000);
    len += 9000;
    mp_add(&len, "\r\n\r\nv\r\n--XyZ--\r\n");
    check_mp(port, "/mp", ct, len, 431, "multipart: a part's headers are over 8192 bytes\n",
             "huge part headers");

    /* Many parts: 100 (the default limit) pass, 101 do not; max_parts = 3. */
    len = 0;
    for (int i = 1; i <= 101; i++) {
        if (i == 101)
            full = len;
        mp_add(&len, "--XyZ\r\nContent-Disposition: form-data; name=\"p%d\"\r\n\r\nv%d\r\n", i,
               i);
    }
    mp_add(&len, "--XyZ--\r\n");
    check_mp(port, "/mp", ct, len, 413, "multipart: more than 100 parts\n", "101 parts");
    memcpy(mp + full, "--XyZ--\r\n", 9);
    request(port, "POST", "/mp", "Content-Type: multipart/form-data; boundary=XyZ\r\n", mp,
            full + 9, &r);
    expect_status(&r, 200, "100 parts");
    ok(r.body && strncmp(r.body, "100\np1|nil|text/plain|nil|2|v1\n", 31) == 0 &&
           r.body_len > 31 &&
           strcmp(r.body + r.body_len - 31, "\np100|nil|text/plain|nil|4|v100") == 0,
       "100 parts: all of them, in order");
    response_free(&r);
    len = 0;
    for (int i = 1; i <= 4; i++)
        mp_add(&len, "--XyZ\r\nContent-Disposition: form-data; name=\"p%d\"\r\n\r\nv\r\n", i);
    mp_add(&len, "--XyZ--\r\n");
    check_mp(port, "/mp/small", ct, len, 413, "multipart: more than 3 parts\n", "max_parts = 3");
    check(port, "GET", "/x", NULL, NULL, 200, "x");
}

/* ======================================================================
 * Rate limits
 * ====================================================================== */

static void test_rate_limit(int port)
{
    int passed = 0, seen[8] = {0}, workers = 0, retry;
    struct response r;
    struct client c;

    /* Burst 20 for the key k1 whichever worker answers; the 21st is refused. */
    for (int i = 0; i < 20; i++) {
        request(port, "GET", "/limited/key", "X-Client: k1\r\n", NULL, 0, &r);
        if (r.status == 200) {
            passed++;
            seen[atoi(r.body) & 7] = 1;
        } else {
            note("request %d of the burst: %d, Retry-After %s", i + 1, r.status,
                 header_get(&r, "Retry-After") ? header_get(&r, "Retry-After") : "none");
        }
        response_free(&r);
    }
    for (int i = 0; i < 8; i++)
        workers += seen[i];
    is_int(passed, 20, "rate limit: the burst of 20 passes");
    is_int(workers, 2, "rate limit: both workers answered the burst");
    request(port, "GET", "/limited/key", "X-Client: k1\r\n", NULL, 0, &r);
    expect_status(&r, 429, "rate limit: one past the burst, on either worker");
    expect_body(&r, "Too Many Requests\n", "rate limit");
    retry = header_get(&r, "Retry-After") ? atoi(header_get(&r, "Retry-After")) : -1;
    /* One token at 0.1 a second: 10 s, less what refilled meanwhile (under 1 s here). */
    ok(retry == 10 || (n_wrap && retry >= 1 && retry <= 10),
       what("rate limit", "Retry-After: 10 (got %d)", retry));
    expect_header(&r, "X-MW", "yes", "rate limit: the 429 went through the middleware");
    response_free(&r);
    check(port, "GET", "/limited/key", "X-Client: k2\r\n", NULL, 200, NULL);
    check(port, "GET", "/limited/key", NULL, NULL, 200, NULL);   /* no key: not limited */

    /* The default key is the client's address. */
    check(port, "GET", "/limited/ip", NULL, NULL, 200, "ip ok");
    check(port, "GET", "/limited/ip", NULL, NULL, 200, "ip ok");
    check(port, "GET", "/limited/ip", NULL, NULL, 429, "Too Many Requests\n");
    if (client_connect_from(&c, port, "127.0.0.2") == 0) {
        send_on(&c, "GET", "/limited/ip", NULL, NULL, 0, &r);
        expect_status(&r, 200, "rate limit: another address has its own bucket");
        response_free(&r);
        client_close(&c);
    } else {
        ok(0, "a connection from 127.0.0.2");
    }
    check(port, "GET", "/take", NULL, NULL, 200,
          "true true false true|bad argument #3 to '?' (expected a rate above 0 (tokens a "
          "second))|bad argument #4 to '?' (expected a burst of 1 token or more)");
}

/* ======================================================================
 * Sessions and CSRF
 * ====================================================================== */

struct store {
    const char *name;       /* in the paths: /s/NAME/... */
    const char *cookie;     /* the session cookie's name */
    const char *attrs;      /* its attributes */
    int by_id;              /* 1: the cookie holds an id, the data is in the store */
};

static const struct store stores[] = {
    {"cookie", "sc", "; Max-Age=86400; Path=/; HttpOnly; SameSite=Lax", 0},
    {"dict", "sd", "; Max-Age=600; Path=/; Secure; HttpOnly; SameSite=Strict", 1},
    {"redis", "sr", "; Max-Age=900; Path=/; HttpOnly; SameSite=Lax", 1},
    {"db", "sq", "; Max-Age=300; Path=/; HttpOnly; SameSite=Lax", 1},
};

/*
 * METHOD /s/STORE/action with the cookie pair (NULL: none); checks status
 * 200 and the body. Copies the pair the answer sets into set (NULL: not
 * wanted; "" when none) and checks its attributes. Returns how many
 * Set-Cookie lines came.
 */
static int session_call(int port, const struct store *st, const char *method, const char *action,
                        const char *pair, const char *want, char *set, size_t cap)
{
    char path[128], headers[4200], ctx[160];
    const char *line;
    struct response r;
    int n;

    snprintf(path, sizeof path, "/s/%s/%s", st->name, action);
    snprintf(ctx, sizeof ctx, "%s: %s %s", st->name, method, action);
    snprintf(headers, sizeof headers, "Cookie: %s\r\n", pair ? pair : "");
    request(port, method, path, pair ? headers : NULL, strcmp(method, "POST") ? NULL : "", 0,
            &r);
    if (expect_status(&r, 200, ctx))
        expect_body(&r, want, ctx);
    n = header_count(&r, "Set-Cookie");
    line = set_cookie_of(&r, st->cookie);
    if (set) {
        cookie_pair(line, set, cap);
        if (line)
            is_str(line + strlen(set), st->attrs, what(st->name, "the cookie's attributes"));
    }
    response_free(&r);
    return n;
}

static const char *const empty = "nil null false nil";

/* Every use of one store: set, change, read, rotate, tamper, share, destroy. */
static void test_session_store(int port, const struct store *st)
{
    char cur[4200], prev[4200], bad[4200], id[64], prev_id[64], out[1024], key[96];
    char headers[4300], path[64];
    const char *alice = "alice 123456789012345 [] 2";
    struct response r;
    int all = 0;

    is_int(session_call(port, st, "GET", "show", NULL, empty, NULL, 0), 0,
           what(st->name, "a visitor whose session did not change gets no cookie"));
    session_call(port, st, "POST", "incr", NULL, "1", cur, sizeof cur);
    ok(cur[0] != '\0', what(st->name, "a new session sets its cookie"));
    session_id(cur, prev_id, sizeof prev_id);
    if (st->by_id)
        is_int(strlen(prev_id), 32, what(st->name, "the id: 24 random bytes, base64url"));
    session_call(port, st, "POST", "incr", cur, "2", cur, sizeof cur);
    session_id(cur, id, sizeof id);
    if (st->by_id)
        is_str(id, prev_id, what(st->name, "a change keeps the id"));
    is_int(session_call(port, st, "GET", "show", cur, "nil null false 2", NULL, 0), 0,
           what(st->name, "an unchanged session sets no cookie"));
    snprintf(prev, sizeof prev, "%s", cur);
    session_call(port, st, "POST", "login?user=alice", cur, "ok", cur, sizeof cur);
    session_id(cur, id, sizeof id);
    if (st->by_id) {
        ok(strcmp(id, prev_id) != 0, what(st->name, "tycho.session.rotate: a new id"));
        session_call(port, st, "GET", "show", prev, empty, NULL, 0);   /* the old id is gone */
    }
    /* The data kept whole: a 15-digit integer, an empty array. */
    session_call(port, st, "GET", "show", cur, alice, NULL, 0);
    /* Tampered: the MAC, and the signed part. */
    snprintf(bad, sizeof bad, "%s", cur);
    bad[strlen(bad) - 2] = bad[strlen(bad) - 2] == 'A' ? 'B' : 'A';
    session_call(port, st, "GET", "show", bad, empty, NULL, 0);
    snprintf(bad, sizeof bad, "%s", cur);
    bad[strlen(st->cookie) + 3] = bad[strlen(st->cookie) + 3] == 'A' ? 'B' : 'A';
    session_call(port, st, "GET", "show", bad, empty, NULL, 0);
    /* Every worker reads it. */
    snprintf(headers, sizeof headers, "Cookie: %s\r\n", cur);
    snprintf(path, sizeof path, "/s/%s/show", st->name);
    for (int i = 0; i < 8; i++) {
        request(port, "GET", path, headers, NULL, 0, &r);
        all += r.status == 200 && r.body && strcmp(r.body, alice) == 0;
        response_free(&r);
    }
    is_int(all, 8, what(st->name, "8 connections (both workers) see the session"));
    snprintf(key, sizeof key, "session:%s", id);
    if (strcmp(st->name, "redis") == 0) {
        const char *get[] = {"GET", key, NULL}, *ttl[] = {"TTL", key, NULL};
        redis_cmd(&rs, get, out, sizeof out);
        ok(strstr(out, "\"user\":\"alice\"") && strstr(out, "\"big\":123456789012345") &&
               strstr(out, "\"list\":[]"), what("redis", "the data in Redis: %s", out));
        redis_cmd(&rs, ttl, out, sizeof out);
        ok(atoi(out) > 800 && atoi(out) <= 900, what("redis", "its TTL is the session's: %s",
                                                     out));
    }
    /* tycho.session.destroy: the cookie cleared, the data gone from the store. */
    snprintf(path, sizeof path, "/s/%s/logout", st->name);
    request(port, "POST", path, headers, "", 0, &r);
    expect_status(&r, 200, "logout");
    snprintf(bad, sizeof bad, "%s=; Max-Age=0; " EXPIRED "; Path=/; HttpOnly; SameSite=Lax",
             st->cookie);
    is_str(set_cookie_of(&r, st->cookie), bad, what(st->name, "destroy clears the cookie"));
    response_free(&r);
    if (st->by_id)
        session_call(port, st, "GET", "show", cur, empty, NULL, 0);
    if (strcmp(st->name, "redis") == 0) {
        const char *exists[] = {"EXISTS", key, NULL};
        redis_cmd(&rs, exists, out, sizeof out);
        is_str(out, "0", "redis: destroy deletes the key");
    }
}

static void test_sessions(int port)
{
    const struct store short_ttl = {"short", "ss", "; Max-Age=1; Path=/; HttpOnly; SameSite=Lax",
                                    0};
    char pair[4200], headers[4300];
    long long t0;
    struct response r;

    /* A session of ttl 1 s, refused once it has expired (the cookie store checks its time). */
    session_call(port, &short_ttl, "POST", "incr", NULL, "1", pair, sizeof pair);
    t0 = now_ms();
    session_call(port, &short_ttl, "GET", "show", pair, "nil null false 1", NULL, 0);
    for (size_t i = 0; i < sizeof stores / sizeof stores[0]; i++)
        test_session_store(port, &stores[i]);
    if (now_ms() - t0 < 1300)
        sleep_ms((int)(1300 - (now_ms() - t0)));
    snprintf(headers, sizeof headers, "Cookie: %s\r\n", pair);
    check(port, "GET", "/s/short/show", headers, NULL, 200, empty);

    /* Over the 4000 bytes a browser keeps: an error (app.error's answer here). */
    request(port, "POST", "/s/cookie/huge", NULL, "", 0, &r);
    expect_status(&r, 500, "a session too big for a cookie");
    ok(r.body && strstr(r.body, "handled: tycho.session: the session is ") &&
           strstr(r.body, " bytes as a cookie, over the 4000 browsers keep: store less, or use "
                          "a tycho.shared.dict or tycho.redis store"),
       what("a session too big for a cookie", "%s", r.body ? r.body : ""));
    response_free(&r);
    check(port, "POST", "/s/dict/huge", NULL, "", 200, "ok");
    check(port, "GET", "/nosession", NULL, NULL, 200,
          "tycho.session.rotate: no session: add app.use(tycho.session{...}) before the routes "
          "that use it|tycho.session.csrf_token: no session: add app.use(tycho.session{...}) "
          "before the routes that use it");
}

static void test_csrf(int port)
{
    const char *refused = "the form's CSRF token is missing or wrong: reload the page and try "
                          "again\n";
    const char *form = "Content-Type: application/x-www-form-urlencoded\r\n";
    char token[128], token2[128], pair[512], pair2[512], headers[1024], body[256];
    struct response r;

    request(port, "GET", "/f/form", NULL, NULL, 0, &r);
    expect_status(&r, 200, "csrf: the form");
    snprintf(token, sizeof token, "%s", r.body ? r.body : "");
    cookie_pair(set_cookie_of(&r, "sf"), pair, sizeof pair);
    response_free(&r);
    is_int(strlen(token), 32, "csrf_token: 24 random bytes, base64url");
    request(port, "GET", "/f/form", NULL, NULL, 0, &r);
    snprintf(token2, sizeof token2, "%s", r.body ? r.body : "");
    cookie_pair(set_cookie_of(&r, "sf"), pair2, sizeof pair2);
    response_free(&r);
    ok(strcmp(token, token2) != 0, "csrf: another session, another token");

    snprintf(headers, sizeof headers, "Cookie: %s\r\n", pair);
    check(port, "GET", "/f/form", headers, NULL, 200, token);      /* the same, kept */
    check(port, "GET", "/f/submit", headers, NULL, 405, NULL);
    snprintf(headers, sizeof headers, "Cookie: %s\r\n%s", pair, form);
    check(port, "POST", "/f/submit", headers, "msg=hi", 403, refused);
    check(port, "POST", "/f/submit", headers, "msg=hi&csrf_token=nope", 403, refused);
    snprintf(body, sizeof body, "msg=hi&csrf_token=%s", token2);
    check(port, "POST", "/f/submit", headers, body, 403, refused);     /* another session's */
    snprintf(body, sizeof body, "msg=hi&csrf_token=%s", token);
    check(port, "POST", "/f/submit", headers, body, 200, "posted");
    check(port, "POST", "/f/submit", form, body, 403, refused);         /* without the session */
    snprintf(headers, sizeof headers, "Cookie: %s\r\nX-CSRF-Token: %s\r\n"
             "Content-Type: application/json\r\n", pair, token);
    check(port, "POST", "/f/submit", headers, "{}", 200, "posted");
    snprintf(headers, sizeof headers, "Cookie: %s\r\nX-CSRF-Token: %s\r\n", pair, token2);
    check(port, "DELETE", "/f/submit", headers, "", 403, refused);
}

/* ======================================================================
 * 1,000 session ids and random sequences from both workers
 * ====================================================================== */

enum { IDS = 1200 };
static char ids[IDS][40], rnds[IDS][40], uuids[IDS][40], uuid7s[IDS][40];
static int n_ids;

/* n requests that each make a session, 10 per connection; notes which workers answered. */
static int collect(int port, int n, int *workers)
{
    int seen[8] = {0}, got = 0;

    for (int i = 0; i < n / 10; i++) {
        struct client c;
        if (client_connect(&c, port) < 0)
            break;
        for (int k = 0; k < 10 && n_ids < IDS; k++) {
            struct response r;
            char pair[256];
            int w = -1;
            send_on(&c, "POST", "/s/dict/fresh", NULL, "", 0, &r);
            cookie_pair(set_cookie_of(&r, "sd"), pair, sizeof pair);
            session_id(pair, ids[n_ids], sizeof ids[0]);
            if (r.status == 200 && r.body &&
                sscanf(r.body, "%d %39s %39s %39s", &w, rnds[n_ids], uuids[n_ids],
                       uuid7s[n_ids]) == 4 && ids[n_ids][0] && w >= 0) {
                seen[w & 7] = 1;
                n_ids++;
                got++;
            } else {
                dump_response(&r);
            }
            response_free(&r);
        }
        client_close(&c);
    }
    *workers = 0;
    for (int i = 0; i < 8; i++)
        *workers += seen[i];
    return got;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* How many strings of the n in list are repeats. */
static int repeats(char (*list)[40], int n)
{
    static char sorted[IDS][40];
    int dup = 0;

    memcpy(sorted, list, sizeof sorted[0] * (size_t)n);
    qsort(sorted, (size_t)n, sizeof sorted[0], cmp_str);
    for (int i = 1; i < n; i++)
        if (strcmp(sorted[i], sorted[i - 1]) == 0)
            dup++;
    return dup;
}

static void check_unique(const char *ctx)
{
    is_int(repeats(ids, n_ids), 0, what(ctx, "%d session ids, none repeated", n_ids));
    is_int(repeats(rnds, n_ids), 0, what(ctx, "%d math.random triples, none repeated", n_ids));
    is_int(repeats(uuids, n_ids), 0, what(ctx, "%d uuids, none repeated", n_ids));
    is_int(repeats(uuid7s, n_ids), 0, what(ctx, "%d uuid7s, none repeated", n_ids));
}

static void test_unique(int port)
{
    int workers = 0;

    is_int(collect(port, 1000, &workers), 1000, "1,000 new sessions");
    is_int(workers, 2, "both workers made them");
    check_unique("two workers");
}

/* ======================================================================
 * Hot reload
 * ====================================================================== */

/* Waits until 20 fresh connections in a row answer /version with want. */
static int wait_version(int port, const char *want, int timeout_ms)
{
    long long deadline = now_ms() + timeout_ms;
    int row = 0;

    while (row < 20 && now_ms() < deadline) {
        char got[64];
        body_of(port, "/version", got, sizeof got);
        row = strcmp(got, want) == 0 ? row + 1 : 0;
        if (!row)
            sleep_ms(20);
    }
    return row == 20;
}

static void test_reload(const struct server *s)
{
    char pairs[3][4200], headers[4300], path[64];
    const char *bob = "bob 123456789012345 [] nil";
    int workers = 0;

    for (int i = 0; i < 3; i++)
        session_call(s->port, &stores[i], "POST", "login?user=bob", NULL, "ok", pairs[i],
                     sizeof pairs[i]);
    if (write_app("v2") != 0) {
        ok(0, "app.lua rewritten");
        return;
    }
    kill(s->pid, SIGHUP);
    ok(wait_for_log(s, "(generation 2)", 10000), "SIGHUP: reloaded (generation 2)");
    ok(wait_version(s->port, "v2", 10000), "every worker runs the new code");
    for (int i = 0; i < 3; i++) {
        snprintf(headers, sizeof headers, "Cookie: %.4199s\r\n", pairs[i]);
        snprintf(path, sizeof path, "/s/%s/show", stores[i].name);
        check(s->port, "GET", path, headers, NULL, 200, bob);
    }
    /* The new Lua states are seeded anew: nothing repeats what the first ones gave. */
    is_int(collect(s->port, 200, &workers), 200, "200 new sessions after the reload");
    is_int(workers, 2, "both workers made them");
    check_unique("across a reload");
}

/* ======================================================================
 * Secrets
 * ====================================================================== */

static void test_no_secret(void)
{
    const char *args[] = {"--port", "0", "--workers", "1", other, NULL};
    char file[160];
    const char *file_args[] = {"--port", "0", "--workers", "1", "--secret-file", file, other,
                               NULL};
    struct server s;
    struct response r;

    if (write_file(other, "app.lua", plain_lua, NULL) != 0) {
        ok(0, "the second app written");
        return;
    }
    unsetenv("TYCHO_SECRET");
    if (server_start(&s, args) == 0) {
        check(s.port, "GET", "/sign", NULL, NULL, 500, "Internal Server Error\n");
        ok(log_has_line(&s, "GET /sign [request ", "tycho.crypto.sign: no secret to sign with: "
                        "start Tycho with --secret-file FILE or the variable TYCHO_SECRET"),
           "no secret: tycho.crypto.sign raises, saying how to give one");
        check(s.port, "GET", "/unsign", NULL, NULL, 500, "Internal Server Error\n");
        check(s.port, "GET", "/cookie", NULL, NULL, 500, "Internal Server Error\n");
        ok(log_has_line(&s, "GET /cookie [request ", "res:cookie: no secret to sign with"),
           "no secret: a signed cookie raises, at the script's line");
        check(s.port, "GET", "/x", NULL, NULL, 200, "x");
        /* Middleware and no app.not_found: the server's own answers, through the middleware. */
        request(s.port, "GET", "/nope", NULL, NULL, 0, &r);
        expect_status(&r, 404, "default 404 with middleware");
        expect_body(&r, "Not Found\n", "default 404 with middleware");
        expect_header(&r, "X-MW", "yes", "default 404 through middleware");
        response_free(&r);
        request(s.port, "PUT", "/x", NULL, "", 0, &r);
        expect_status(&r, 405, "default 405 with middleware");
        expect_body(&r, "Method Not Allowed\n", "default 405 with middleware");
        expect_header(&r, "Allow", "GET, HEAD", "default 405 with middleware");
        expect_header(&r, "X-MW", "yes", "default 405 through middleware");
        response_free(&r);
        /* tycho.cors's defaults: any origin, no Vary, the preflight echoes the headers asked. */
        request(s.port, "GET", "/x", "Origin: https://b.example\r\n", NULL, 0, &r);
        expect_header(&r, "Access-Control-Allow-Origin", "*", "CORS defaults");
        ok(!header_get(&r, "Vary") && !header_get(&r, "Access-Control-Allow-Credentials") &&
               !header_get(&r, "Access-Control-Expose-Headers"), "CORS defaults: only ACAO");
        response_free(&r);
        request(s.port, "OPTIONS", "/x", "Origin: https://b.example\r\nAccess-Control-Request-"
                "Method: PUT\r\nAccess-Control-Request-Headers: x-a, x-b\r\n", NULL, 0, &r);
        expect_status(&r, 204, "CORS defaults: preflight");
        expect_header(&r, "Access-Control-Allow-Origin", "*", "CORS defaults: preflight");
        expect_header(&r, "Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, PATCH, DELETE",
                      "CORS defaults: preflight");
        expect_header(&r, "Access-Control-Allow-Headers", "x-a, x-b", "CORS defaults: preflight");
        expect_header(&r, "Access-Control-Max-Age", "600", "CORS defaults: preflight");
        response_free(&r);
        is_int(server_stop(&s), 0, "no secret: exit status 0 after SIGTERM");
    } else {
        ok(0, "a server without a secret starts");
    }
    server_cleanup(&s);

    /* --secret-file: its content without the newline; it wins over TYCHO_SECRET. */
    snprintf(file, sizeof file, "%s/secret.txt", other);
    write_file(other, "secret.txt", "file-secret-0123456789\n", NULL);
    setenv("EXPECT_SECRET", "file-secret-0123456789", 1);
    setenv("TYCHO_SECRET", SECRET, 1);
    if (server_start(&s, file_args) == 0) {
        check(s.port, "GET", "/check", NULL, NULL, 200, "true w");
        is_int(server_stop(&s), 0, "--secret-file: exit status 0 after SIGTERM");
    } else {
        ok(0, "a server with --secret-file starts");
    }
    server_cleanup(&s);
}

static void test_bad_secrets(void)
{
    char cmd[512], out[4096], want[512];

    /* Each command is bounded: a server that started anyway would be killed, and fail. */
    snprintf(cmd, sizeof cmd, "TYCHO_SECRET=short timeout 10 %s --port 0 --workers 1 %s 2>&1",
             tycho_binary, other);
    is_int(run_command(cmd, out, sizeof out), 2, "a short TYCHO_SECRET: exit 2");
    is_str(out, "tycho: TYCHO_SECRET: the secret must be 16 bytes at least, got 5 (make one "
                "with: head -c 32 /dev/urandom | base64)\n", "a short TYCHO_SECRET: the message");
    snprintf(cmd, sizeof cmd, "TYCHO_SECRET=0123456789abcde timeout 10 %s --check %s 2>&1",
             tycho_binary, other);
    is_int(run_command(cmd, out, sizeof out), 2, "15 bytes: exit 2");
    ok(strstr(out, "at least, got 15") != NULL, what("15 bytes", "%s", out));
    snprintf(cmd, sizeof cmd, "TYCHO_SECRET=0123456789abcdef timeout 10 %s --check %s 2>&1",
             tycho_binary, other);
    is_int(run_command(cmd, out, sizeof out), 0, "16 bytes are enough");
    write_file(other, "short.txt", "short\n", NULL);
    snprintf(cmd, sizeof cmd, "timeout 10 %s --secret-file %s/short.txt --port 0 %s 2>&1",
             tycho_binary, other, other);
    is_int(run_command(cmd, out, sizeof out), 2, "a short --secret-file: exit 2");
    snprintf(want, sizeof want, "tycho: --secret-file %s/short.txt: the secret must be 16 bytes "
             "at least, got 5 "
             "(make one with: head -c 32 /dev/urandom | base64)\n", other);
    is_str(out, want, "a short --secret-file: the message");
    snprintf(cmd, sizeof cmd, "timeout 10 %s --secret-file %s/none.txt --port 0 %s 2>&1",
             tycho_binary, other, other);
    is_int(run_command(cmd, out, sizeof out), 2, "a missing --secret-file: exit 2");
    snprintf(want, sizeof want, "tycho: --secret-file %s/none.txt: No such file or directory\n",
             other);
    is_str(out, want, "a missing --secret-file: the message");
}

/* Mistakes in the scripts refuse to load (--check), saying what and where. */
static void test_load_errors(void)
{
    static const struct {
        const char *lua, *env, *want;
    } cases[] = {
        {"app.use(tycho.session{})", "env -u TYCHO_SECRET", "app.lua:2: tycho.session: no "
         "secret to sign the session cookie with: start Tycho with --secret-file FILE or the "
         "variable TYCHO_SECRET"},
        {"app.use(tycho.session{ store = 42 })", "", "app.lua:2: tycho.session: store must be "
         "\"cookie\", a tycho.shared.dict, a tycho.redis handle or a tycho.db database"},
        {"app.use(tycho.session{ bogus = 1 })", "", "app.lua:2: tycho.session: unknown option "
         "bogus"},
        {"app.use(tycho.session{ ttl = 0 })", "", "app.lua:2: tycho.session: ttl must be a "
         "number of seconds above 0"},
        {"app.use(tycho.cors{ credentials = true })", "", "app.lua:2: tycho.cors: origins = \"*\" "
         "cannot go with credentials = true (browsers refuse it): list the origins"},
        {"app.use(tycho.cors{ origins = 5 })", "", "app.lua:2: tycho.cors: origins must be \"*\", "
         "a list of origins or a function(origin)"},
        {"app.use(tycho.rate_limit{ rate = 0 })", "", "app.lua:2: tycho.rate_limit: rate must be "
         "a number of requests a second above 0"},
        {"app.use(tycho.rate_limit{ rate = 1, burst = 0.5 })", "", "app.lua:2: tycho.rate_limit: "
         "burst must be a number, 1 or more"},
        {"app.not_found(5)", "", "app.lua:2: app.not_found: expected a function, got number"},
        {"app.error('x')", "", "app.lua:2: app.error: expected a function, got string"},
    };
    char cmd[512], out[4096], lua[256];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(lua, sizeof lua, "local app = require 'tycho'\n%s\n", cases[i].lua);
        write_file(other, "app.lua", lua, NULL);
        snprintf(cmd, sizeof cmd, "%s timeout 10 %s --check %s 2>&1", cases[i].env, tycho_binary,
                 other);
        is_int(run_command(cmd, out, sizeof out), 1, what(cases[i].lua, "the load fails"));
        ok(strstr(out, cases[i].want) != NULL, what(cases[i].lua, "the message: %s", out));
    }
}

int main(int argc, char **argv)
{
    struct server s;
    const char *args[] = {"--port", "0", "--workers", "2", dir, NULL};
    char url[192];

    if (suite_setup(argc, argv))
        return 2;
    snprintf(dir, sizeof dir, "/tmp/tycho-test-web-XXXXXX");
    snprintf(other, sizeof other, "/tmp/tycho-test-web2-XXXXXX");
    if (!mkdtemp(dir) || !mkdtemp(other) || write_app("v1") != 0) {
        ok(0, "temporary app directories");
        return test_summary();
    }
    if (redis_start(&rs) != 0) {
        ok(0, "Redis starts (make test installs redis-server)");
        return test_summary();
    }
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", rs.port);
    setenv("REDIS_URL", url, 1);
    setenv("TYCHO_SECRET", SECRET, 1);
    if (server_start(&s, args) == 0) {
        test_context(s.port);
        test_query_and_forms(s.port);
        test_json_body(s.port);
        test_cookies(s.port);
        test_misses_and_cors(s.port);
        test_errors(&s);
        test_crypto(s.port);
        test_json(s.port);
        test_templates(s.port);
        test_multipart(s.port);
        test_rate_limit(s.port);
        test_sessions(s.port);
        test_csrf(s.port);
        test_unique(s.port);
        test_reload(&s);
        is_int(server_stop(&s), 0, "exit status 0 after SIGTERM");
    } else {
        ok(0, "server starts");
    }
    server_cleanup(&s);
    test_no_secret();
    test_bad_secrets();
    test_load_errors();
    redis_stop(&rs);
    snprintf(url, sizeof url, "rm -rf %s %s", dir, other);
    if (system(url) != 0)
        note("could not remove %s and %s", dir, other);
    return test_summary();
}
