/*
 * bind_crypto.c: tycho.crypto, the security helpers a web app needs:
 * random bytes from the kernel (getrandom), SHA digests and HMACs
 * (OpenSSL's libcrypto), hex and base64 (standard and URL-safe) both ways,
 * a constant-time comparison, and UUIDs (v4 random, v7 time-ordered). Also
 * seeds each state's math.random from the kernel (tycho_bind_seed). Any
 * place (load, handler, timer, test): nothing here waits. Misuse raises
 * with a message naming the call.
 */
#include "lua/bind.h"
#include "core/tycho.h"

#include <lauxlib.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

/* Bytes tycho.crypto.random gives at most in one call. */
#define RANDOM_MAX 65536

/* Fills buf with n bytes from the kernel's random source; raises if it fails (it should not). */
static void kernel_random(lua_State *L, unsigned char *buf, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r < 0)
            luaL_error(L, "tycho.crypto.random: the kernel's random source failed");
        got += (size_t)r;
    }
}

/* tycho.crypto.random(n) -> n random bytes (a string), from the kernel. */
static int crypto_random(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    unsigned char buf[RANDOM_MAX];

    if (n < 0 || n > RANDOM_MAX)
        return luaL_error(L, "tycho.crypto.random: expected 0 to %d bytes, got %d", RANDOM_MAX,
                          (int)n);
    kernel_random(L, buf, (size_t)n);
    lua_pushlstring(L, (const char *)buf, (size_t)n);
    return 1;
}

/* The digest named by the string at idx ("sha1", "sha256", "sha512"); raises otherwise. */
static const EVP_MD *check_md(lua_State *L, int idx, const char *fn)
{
    const char *name = luaL_checkstring(L, idx);

    if (strcmp(name, "sha1") == 0)
        return EVP_sha1();
    if (strcmp(name, "sha256") == 0)
        return EVP_sha256();
    if (strcmp(name, "sha512") == 0)
        return EVP_sha512();
    luaL_error(L, "%s: expected \"sha1\", \"sha256\" or \"sha512\", got \"%s\"", fn, name);
    return NULL;
}

static int digest(lua_State *L, const EVP_MD *md, const char *fn)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    if (!EVP_Digest(s, len, out, &n, md, NULL))
        return luaL_error(L, "%s: OpenSSL failed", fn);
    lua_pushlstring(L, (const char *)out, n);
    return 1;
}

/* tycho.crypto.sha1/sha256/sha512(s) -> the raw digest. */
static int crypto_sha1(lua_State *L) { return digest(L, EVP_sha1(), "tycho.crypto.sha1"); }
static int crypto_sha256(lua_State *L) { return digest(L, EVP_sha256(), "tycho.crypto.sha256"); }
static int crypto_sha512(lua_State *L) { return digest(L, EVP_sha512(), "tycho.crypto.sha512"); }

/* tycho.crypto.hmac(alg, key, msg) -> the raw HMAC. */
static int crypto_hmac(lua_State *L)
{
    const EVP_MD *md = check_md(L, 1, "tycho.crypto.hmac");
    size_t klen, mlen;
    const char *key = luaL_checklstring(L, 2, &klen);
    const char *msg = luaL_checklstring(L, 3, &mlen);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    if (!HMAC(md, key, (int)klen, (const unsigned char *)msg, mlen, out, &n))
        return luaL_error(L, "tycho.crypto.hmac: OpenSSL failed");
    lua_pushlstring(L, (const char *)out, n);
    return 1;
}

/* tycho.crypto.equals(a, b) -> whether equal, in a time that depends on the length only. */
static int crypto_equals(lua_State *L)
{
    size_t alen, blen;
    const char *a = luaL_checklstring(L, 1, &alen);
    const char *b = luaL_checklstring(L, 2, &blen);

    lua_pushboolean(L, alen == blen && CRYPTO_memcmp(a, b, alen) == 0);
    return 1;
}

/* ---- encodings ---------------------------------------------------------------- */

static int crypto_hex(lua_State *L)
{
    static const char digits[] = "0123456789abcdef";
    size_t len;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    luaL_Buffer b;

    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i++) {
        luaL_addchar(&b, digits[s[i] >> 4]);
        luaL_addchar(&b, digits[s[i] & 15]);
    }
    luaL_pushresult(&b);
    return 1;
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* tycho.crypto.from_hex(s) -> the bytes, or nil, "not hex" (odd length, another character). */
static int crypto_from_hex(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;

    if (len % 2) {
        lua_pushnil(L);
        lua_pushliteral(L, "not hex: an odd number of digits");
        return 2;
    }
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i += 2) {
        int hi = hex_value(s[i]), lo = hex_value(s[i + 1]);
        if (hi < 0 || lo < 0) {
            luaL_pushresult(&b);
            lua_pop(L, 1);
            lua_pushnil(L);
            lua_pushliteral(L, "not hex: a character other than 0-9, a-f, A-F");
            return 2;
        }
        luaL_addchar(&b, (char)(hi * 16 + lo));
    }
    luaL_pushresult(&b);
    return 1;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Base64 of the string at 1 with alphabet abc; padded with '=' when pad. */
static int encode64(lua_State *L, const char *abc, bool pad)
{
    size_t len;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    size_t i = 0;

    luaL_buffinit(L, &b);
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        luaL_addchar(&b, abc[v >> 18]);
        luaL_addchar(&b, abc[(v >> 12) & 63]);
        luaL_addchar(&b, abc[(v >> 6) & 63]);
        luaL_addchar(&b, abc[v & 63]);
    }
    if (len - i > 0) {
        uint32_t v = (uint32_t)s[i] << 16 | (len - i > 1 ? (uint32_t)s[i + 1] << 8 : 0);
        luaL_addchar(&b, abc[v >> 18]);
        luaL_addchar(&b, abc[(v >> 12) & 63]);
        if (len - i > 1)
            luaL_addchar(&b, abc[(v >> 6) & 63]);
        else if (pad)
            luaL_addchar(&b, '=');
        if (pad)
            luaL_addchar(&b, '=');
    }
    luaL_pushresult(&b);
    return 1;
}

/*
 * Decodes base64 in alphabet abc (padding optional; no spaces); pushes the
 * bytes, or nil and why.
 */
static int decode64(lua_State *L, const char *abc)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    uint32_t acc = 0;
    int bits = 0;

    while (len > 0 && s[len - 1] == '=')
        len--;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < len; i++) {
        const char *p = s[i] ? strchr(abc, s[i]) : NULL;
        if (!p) {
            luaL_pushresult(&b);
            lua_pop(L, 1);
            lua_pushnil(L);
            lua_pushfstring(L, "not base64: character %d is not in its alphabet", (int)i + 1);
            return 2;
        }
        acc = acc << 6 | (uint32_t)(p - abc);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            luaL_addchar(&b, (char)(acc >> bits & 255));
        }
    }
    luaL_pushresult(&b);
    if (len % 4 == 1) {
        lua_pop(L, 1);
        lua_pushnil(L);
        lua_pushliteral(L, "not base64: a length no encoding gives");
        return 2;
    }
    return 1;
}

static int crypto_base64(lua_State *L) { return encode64(L, b64, true); }
static int crypto_base64url(lua_State *L) { return encode64(L, b64url, false); }
static int crypto_from_base64(lua_State *L) { return decode64(L, b64); }
static int crypto_from_base64url(lua_State *L) { return decode64(L, b64url); }

/* ---- signing with the app's secret ----------------------------------------------- */

/* Set once by main before any state exists; read-only afterwards (every worker reads it). */
static char *secret;
static size_t secret_len;

int tycho_bind_set_secret(const char *s, size_t len)
{
    if (!(secret = malloc(len)))
        return TYCHO_ERR;
    memcpy(secret, s, len);
    secret_len = len;
    return TYCHO_OK;
}

/* Pushes base64url(HMAC-SHA256(secret, purpose NUL value)); raises without a secret. */
static void push_mac(lua_State *L, const char *fn, const char *value, size_t len,
                     const char *purpose, size_t purpose_len)
{
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    size_t msg_len;
    const char *msg;

    if (!secret)
        luaL_error(L, "%s: no secret to sign with: start Tycho with --secret-file FILE or the "
                      "variable TYCHO_SECRET", fn);
    lua_pushlstring(L, purpose, purpose_len);
    lua_pushlstring(L, "", 1);
    lua_pushlstring(L, value, len);
    lua_concat(L, 3);
    msg = lua_tolstring(L, -1, &msg_len);
    if (!HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)msg, msg_len, out,
              &n))
        luaL_error(L, "%s: OpenSSL failed", fn);
    lua_pop(L, 1);
    lua_pushcfunction(L, crypto_base64url);
    lua_pushlstring(L, (const char *)out, n);
    lua_call(L, 1, 1);
}

/* tycho.crypto.sign(value[, purpose]) -> "value.MAC": value with its HMAC-SHA256 attached. */
static int crypto_sign(lua_State *L)
{
    size_t len, plen;
    const char *value = luaL_checklstring(L, 1, &len);
    const char *purpose = luaL_optlstring(L, 2, "", &plen);

    lua_pushvalue(L, 1);
    lua_pushliteral(L, ".");
    push_mac(L, "tycho.crypto.sign", value, len, purpose, plen);
    lua_concat(L, 3);
    return 1;
}

/*
 * tycho.crypto.unsign(signed[, purpose]) -> value, or nil and why, for a
 * string that is not what sign gave with this secret and purpose.
 */
static int crypto_unsign(lua_State *L)
{
    size_t len, plen, mac_len;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *purpose = luaL_optlstring(L, 2, "", &plen);
    const char *dot = len ? memrchr(s, '.', len) : NULL;
    const char *mac;

    if (!dot) {
        lua_pushnil(L);
        lua_pushliteral(L, "not signed");
        return 2;
    }
    push_mac(L, "tycho.crypto.unsign", s, (size_t)(dot - s), purpose, plen);
    mac = lua_tolstring(L, -1, &mac_len);
    if (mac_len != len - (size_t)(dot - s) - 1 || CRYPTO_memcmp(mac, dot + 1, mac_len) != 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "bad signature");
        return 2;
    }
    lua_pushlstring(L, s, (size_t)(dot - s));
    return 1;
}

/* ---- UUIDs -------------------------------------------------------------------------- */

static void push_uuid(lua_State *L, unsigned char u[16])
{
    char text[37];
    static const char digits[] = "0123456789abcdef";
    int j = 0;

    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            text[j++] = '-';
        text[j++] = digits[u[i] >> 4];
        text[j++] = digits[u[i] & 15];
    }
    text[j] = '\0';
    lua_pushstring(L, text);
}

/* tycho.crypto.uuid() -> a random (version 4) UUID, RFC 9562. */
static int crypto_uuid(lua_State *L)
{
    unsigned char u[16];

    kernel_random(L, u, sizeof(u));
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
    push_uuid(L, u);
    return 1;
}

/* tycho.crypto.uuid7() -> a time-ordered (version 7) UUID: milliseconds since the epoch first. */
static int crypto_uuid7(lua_State *L)
{
    unsigned char u[16];
    struct timespec ts;
    uint64_t ms;

    clock_gettime(CLOCK_REALTIME, &ts);
    ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    kernel_random(L, u + 6, 10);
    for (int i = 0; i < 6; i++)
        u[i] = (unsigned char)(ms >> (40 - 8 * i));
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x70);
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
    push_uuid(L, u);
    return 1;
}

void tycho_bind_seed(lua_State *L)
{
    uint64_t seed;

    kernel_random(L, (unsigned char *)&seed, sizeof(seed));
    lua_getglobal(L, "math");
    lua_getfield(L, -1, "randomseed");
    lua_pushnumber(L, (lua_Number)(seed >> 11));    /* 53 bits: exact in a double */
    lua_call(L, 1, 0);
    lua_pop(L, 1);
}

void tycho_bind_crypto(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"random", crypto_random},       {"sha1", crypto_sha1},
        {"sha256", crypto_sha256},       {"sha512", crypto_sha512},
        {"hmac", crypto_hmac},           {"equals", crypto_equals},
        {"hex", crypto_hex},             {"from_hex", crypto_from_hex},
        {"base64", crypto_base64},       {"from_base64", crypto_from_base64},
        {"base64url", crypto_base64url}, {"from_base64url", crypto_from_base64url},
        {"uuid", crypto_uuid},           {"uuid7", crypto_uuid7},
        {"sign", crypto_sign},           {"unsign", crypto_unsign},
        {NULL, NULL}};

    lua_newtable(L);
    for (const luaL_Reg *f = fns; f->name; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, -2, f->name);
    }
    lua_setfield(L, -2, "crypto");
}
