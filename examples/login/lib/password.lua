-- lib/password.lua: password hashes for the login example, PBKDF2-HMAC-SHA256 (RFC 8018)
-- written with tycho.crypto.hmac.
--
-- Tycho has no password-hashing function built in, and this one runs in Lua on the worker:
-- 10,000 iterations hold the worker for about 40 ms. OWASP advises 600,000 iterations of
-- PBKDF2-HMAC-SHA256 (2023), which would hold it for seconds, so 10,000 is a demo's
-- number, too low for real passwords. Whatever the hash, rate-limit the login route (the
-- example does: app.lua).
local bit = require "bit"
local crypto = tycho.crypto
local byte, char, concat, bxor = string.byte, string.char, table.concat, bit.bxor

local password = {}

local function xor(a, b)
    local out = {}
    for i = 1, #a do
        out[i] = char(bxor(byte(a, i), byte(b, i)))
    end
    return concat(out)
end

-- The first 32-byte block of PBKDF2-HMAC-SHA256(secret, salt, iterations): all we need.
function password.pbkdf2(secret, salt, iterations)
    local u = crypto.hmac("sha256", secret, salt .. "\0\0\0\1")
    local out = u
    for _ = 2, iterations do
        u = crypto.hmac("sha256", secret, u)
        out = xor(out, u)
    end
    return out
end

-- A hash to store: "pbkdf2-sha256$ITERATIONS$SALT$HASH", the salt and hash in base64url.
function password.hash(secret, iterations)
    iterations = iterations or 10000
    local salt = crypto.random(16)
    return ("pbkdf2-sha256$%d$%s$%s"):format(iterations, crypto.base64url(salt),
        crypto.base64url(password.pbkdf2(secret, salt, iterations)))
end

-- Whether secret matches a stored hash (compared in constant time).
function password.verify(secret, stored)
    local n, salt, hash = stored:match("^pbkdf2%-sha256%$(%d+)%$([%w_-]+)%$([%w_-]+)$")
    if not n then
        return false
    end
    local got = password.pbkdf2(secret, crypto.from_base64url(salt), tonumber(n))
    return crypto.equals(crypto.base64url(got), hash)
end

return password
