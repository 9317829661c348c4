#!/usr/bin/env bash
# bench/run.sh: Tycho vs nginx + Lua (ngx_http_lua, content_by_lua_block), vs a
# do-nothing epoll server (the floor: bench/nothing.c) in plaintext, c1000 and
# close, and for the two data workloads (pgquery, redisget) and WebSocket echo
# (wsecho) vs a Go server too; with every run an A/A pair (Tycho against a
# second instance of itself) that shows the run's noise, and a goals block.
#
# Usage:   bench/run.sh ./tycho scripts/        (this is what `make bench` runs)
# Env:     BENCH_SECONDS  seconds per measured run          (default 5)
#          BENCH_ROUNDS   measured runs per server/workload in EACH of the two
#                         passes (default 5: 10 rounds per server in all; 1..20,
#                         a warning under 5)
#          BENCH_WARMUP   seconds of warm-up per server/workload (default 2)
#          BENCH_SERVERS  "tycho nginx go floor" (default); "nginx" alone tests
#                         the harness without a Tycho binary (the tycho args are
#                         then ignored); go takes part in pgquery, redisget and
#                         wsecho only, floor in plaintext, c1000, close and idle
#          BENCH_WORKLOADS subset to run, e.g. "plaintext close" (default: all
#                         of plaintext json users echo c1000 close idle proxy
#                         ops jsongz pgquery redisget wsecho tlsplain tlsclose)
#          BENCH_AA       1 (default): tycho2, a second instance of the tycho
#                         binary, in every workload tycho is in (the A/A pair);
#                         0 leaves it out (quicker, but the run's noise is not
#                         shown: for trying the harness, not for numbers)
#          BENCH_BASELINE  PATH of another Tycho binary (default: none), for a
#                         before/after comparison: see "Before/after" below
#          BENCH_BASELINE_SCRIPTS  the scripts directory base serves instead of
#                         tycho's (default: the same), e.g. the scripts/ of the
#                         older tree when the current one uses a newer function
# Default total: 14 measured workloads, 48 server slots (tycho, tycho2 and nginx
# in most; floor in 3; go in 3; tycho-plain in ops; no nginx in pgquery) x
# (2 warm-up + 2 x 5 rounds x 5 s = 52 s) + idle + checks = ~45 minutes
# (BENCH_BASELINE adds 14 slots, ~12 minutes; BENCH_AA=0 takes 14 away).
# Quick check of the harness (numbers meaningless):
#   BENCH_SECONDS=1 BENCH_ROUNDS=1 BENCH_WARMUP=0 BENCH_AA=0 \
#       BENCH_WORKLOADS="plaintext close idle" bench/run.sh ./tycho scripts/
# Needs nginx, libnginx-mod-http-lua, lua-cjson (not pulled in by the Lua
# module), wrk, curl, a C compiler (cc: bench/nothing.c, bench/wsload.c, and
# bench/idleconns.c with libssl-dev for idle, tlsplain and tlsclose); for
# pgquery/redisget also postgresql, redis-server and,
# for the go server, golang-go with Debian's packaged pgx v4, redigo and
# fasthttp sources; for wsecho, for the go server, golang-go
# with Debian's gorilla/websocket sources; for tlsplain/tlsclose openssl:
# installed with apt-get when missing and run as root.
#
# What it does
# - Both servers serve the same app with ONE worker each: Tycho as
#   `tycho --workers 1 --port P scripts/`, nginx as its own instance
#   (`nginx -p TMP -c TMP/nginx.conf -g 'daemon off;'`, worker_processes 1,
#   modules loaded explicitly, access_log off, everything under a temp dir,
#   listening on 127.0.0.1 only). /etc/nginx and the system service are never
#   touched. Its Lua locations mirror scripts/hello.lua (same bodies and
#   Content-Types, cjson for JSON, ?q= decoded for /users/:id, echo keeps the
#   request Content-Type). nginx sets Content-Length itself (no chunked) and
#   keepalive_requests is raised so that neither server closes keep-alive
#   connections during a run (nginx's default closes every 1000 requests).
# - Servers run pinned to CPU 0 (taskset -c 0); wrk -t1 runs pinned to CPU 1.
# - Workloads: plaintext (64 conns), json (64), /users/:id (64), POST /echo
#   with a 1 KiB body (64, bench/echo.lua), plaintext with 1000 conns, and
#   plaintext with `Connection: close` (16 conns, a new TCP connection per
#   request), and proxy (64 conns): each request calls a backend over
#   keep-alive connections from a pool and answers with its body. The backend
#   is a third server, a plain nginx (`return 200 "Hello, World!"`, no Lua,
#   1 worker) pinned to CPU 1 with wrk, the same for both. Tycho runs
#   bench/proxy/ (tycho.http.get through the worker's pool, 64 connections
#   at most by default); nginx runs content_by_lua with
#   ngx.location.capture to an internal location that proxy_passes to an
#   upstream with `keepalive 64` (HTTP/1.1, the Lua-to-backend path OpenResty
#   users take without extra libraries).
#   pgquery (64 conns): GET /db, the TechEmpower "single query" test: the
#   server picks a random id 1..10000 and answers the row of world(id int
#   primary key, randomnumber int), 10,000 rows, as {"id":N,"randomNumber":M}.
#   redisget (64 conns): GET /cache answers with one Redis GET of a fixed
#   100-byte value. For both, the script starts its own PostgreSQL 15 (initdb
#   in the temp dir, fsync off, TCP on 127.0.0.1 with a password) and
#   redis-server (no persistence), as the user nobody when run as root, both
#   pinned to CPU 1 with wrk (their CPU is not counted for any server), once
#   for the whole run, stopped at the end. Tycho runs bench/data/ (pool = 16
#   per pool, 1 worker). The go server is bench/gopeer/ (fasthttp, pgx v4's
#   pgxpool with 16 connections and its default prepared-statement cache,
#   redigo's pool of 16), built here offline from Debian's Go packages
#   (GO111MODULE=off, GOPATH=/usr/share/gocode), run with GOMAXPROCS=1 on
#   CPU 0 as Tycho is; it has its own table under the main one. nginx runs
#   redisget with lua-resty-redis (Debian's lua-nginx-redis: its one Lua file
#   is taken from the .deb with `apt-get download` into the temp dir, as the
#   package depends on nginx-extras and its twenty modules), cosocket pool of
#   16 (connect's pool_size); pgquery has no nginx: Debian packages no
#   non-blocking PostgreSQL client for ngx_lua (no pgmoon; luasql and luadbi
#   would block the worker), so that cell is n/a.
#   ops: plaintext again, with Tycho's --metrics /metrics and --access-log FILE
#   (common format) on, and nginx's access_log on (combined, buffer=32k
#   flush=1s, as Tycho buffers); a third server, a plain tycho, runs in this
#   workload too, its rounds interleaved with the others', and the line under
#   the table compares Tycho with and without them (what they cost).
#   jsongz (64 conns): GET /users.json with Accept-Encoding: gzip, 50 users
#   encoded per request (about 3.5 KiB of JSON), compressed: Tycho runs
#   bench/gzip/ with --gzip --gzip-level 1 --gzip-min-bytes 1024; nginx encodes
#   the same table with cjson under gzip on, gzip_comp_level 1,
#   gzip_min_length 1024, gzip_types application/json, gzip_vary on (nginx then
#   sends the body chunked: its gzip filter drops Content-Length).
#   wsecho (1000 WebSocket connections): GET /ws upgraded, then on every
#   connection at once a 64-byte text message, its echo awaited and compared
#   byte for byte, the next one sent (ping-pong per connection). wrk speaks no
#   WebSocket: the load generator is bench/wsload.c (one thread, epoll, masked
#   frames built by hand, 127.0.0.1 only), compiled here with cc -O2 into the
#   temp dir, pinned to CPU 1 as wrk is; it counts the echoes that come back
#   inside the window (it starts once all 1000 handshakes are done; the
#   handshakes' CPU is in the server's total, under 1 % of it), fails the run on
#   any echo that differs from what was sent, on a connection that fails or a
#   handshake that is refused, and is bounded in time (BENCH_SECONDS, an alarm
#   30 s later) and count (1,000,000 messages per second of run). In the table
#   req/s is echoed messages/s, p99 the round trip of one message, CPU us/req
#   the server's CPU per echoed message. Tycho runs bench/ws/ (app.ws, a
#   ws:receive / ws:send loop). The peers, both packaged by Debian bookworm:
#   go is bench/gows/ (net/http with gorilla/websocket, the most used Go
#   WebSocket library, golang-github-gorilla-websocket-dev; a goroutine per
#   connection, GOMAXPROCS=1 on CPU 0), built offline as bench/gopeer is;
#   nginx runs lua-resty-websocket's server (Debian's lua-nginx-websocket, its
#   Lua files taken from the .deb with `apt-get download` as lua-nginx-redis
#   is, since it too depends on nginx-extras): recv_frame / send_text in
#   content_by_lua, what OpenResty users run. lua-resty-websocket echoes
#   frames (it does not put fragments together; the load generator sends none).
#   Other candidates, left out: libwebsockets' test servers
#   (libwebsockets-test-server) serve fixed demo protocols, not an echo of
#   every message, and a C echo server on libwebsockets would be a program of
#   our own rather than a server people run; golang-nhooyr-websocket-dev is
#   the other Go library, less used than gorilla.
#   tlsplain (64 conns): plaintext over HTTPS keep-alive (wrk
#   https://127.0.0.1:TLSPORT/plaintext). tlsclose (16 conns): HTTPS with
#   `Connection: close` on every request, as close is over plain TCP: a TCP
#   connection and a TLS handshake per request. Tycho runs with
#   --tls-cert --tls-key --tls-port (HTTPS on its own port beside HTTP on
#   --port); nginx gets a second `listen ... ssl` in the same server block. One
#   certificate for both, made at bench time in the temp dir by
#   tests/integration/tls/mkcerts.sh (P-256 ECDSA, for 127.0.0.1, signed by a
#   test CA that the curl check verifies it against). nginx is configured as
#   Tycho configures itself: ssl_protocols TLSv1.2 TLSv1.3; Mozilla
#   "intermediate" TLS 1.2 ciphers with ssl_prefer_server_ciphers off;
#   ssl_ecdh_curve X25519:prime256v1:secp384r1; TLS 1.3 suites OpenSSL's
#   default on both. Resumption: both resume by session tickets only, one
#   ticket per handshake (nginx: ssl_session_tickets on, ssl_session_cache off,
#   ssl_conf_command NumTickets 1; Tycho keeps no session cache either). A
#   shared session cache for nginx would not be fairer: with tickets the
#   client never resumes by session id, but nginx would still serialize every
#   session into shared memory. wrk DOES resume: it keeps one SSL object per
#   connection slot and closes with SSL_shutdown + SSL_clear, which keeps the
#   session, so each reconnect offers the last ticket it got. Its SSL_CTX has
#   SSL_SESS_CACHE_CLIENT, with which OpenSSL uses a TLS 1.3 ticket once (as
#   browsers do): a server must send a new ticket on a resumed handshake for
#   the next one to resume too, else every other handshake is full. With
#   nginx (a new ticket on every handshake) all but the first handshake of
#   each connection slot resume (nginx's $ssl_session_reused, wrk -c4: 4260
#   of 4264): tlsclose then measures TCP + resumed TLS 1.3 handshakes (PSK
#   with X25519, no certificate signature), not full ones. Both servers
#   negotiate TLS_AES_256_GCM_SHA384 with wrk. Before the rounds each server
#   is checked: openssl s_client (TLS 1.3 and 1.2: protocol, cipher, group;
#   TLS 1.1 refused) and bench/idleconns -r (20 connections in a row as wrk
#   makes them: how many of the 19 after the first resumed). A line under the
#   table says what each did, and a warning when their resumption differs
#   (then in tlsclose one server makes more full handshakes than the other).
#   tlsplain also measures memory per idle keep-alive connection, plain and
#   TLS, on fresh servers of their own (not the measured ones): bench/idleconns.c
#   (compiled here with cc -lssl -lcrypto, pinned to CPU 1) opens 1000
#   connections to the HTTP port, each sending one GET /plaintext and reading
#   its answer, then silent; then 1000 more to the TLS port beside them; the
#   server's VmRSS (Tycho's process, nginx's worker) is read before, with the
#   plain ones and with both (0.5 s after the last is ready): growth / 1000 =
#   bytes per idle connection, printed under the table. Bounded: one request per
#   connection, 10 s socket timeouts, an alarm at 180 s; SIGTERM ends it.
# - The floor (server "floor"): bench/nothing.c, compiled here with cc -O2 into
#   the temp dir, one thread, level-triggered epoll, answering every GET with
#   the bytes Tycho sends for GET /plaintext (same header set and sizes, Date
#   cached per second) and nothing else: what the sockets alone cost. It runs
#   in plaintext, c1000, close and idle, pinned to CPU 0 as the servers are,
#   and gets a table of its own (Tycho vs the floor) under nginx's.
# - idle: memory per idle keep-alive connection: on fresh servers (tycho,
#   base, nginx, floor), first 2 s of wrk on ONE keep-alive connection (as a
#   server in service has answered requests before: the garbage and pools
#   that answering leaves are not what an idle connection holds), then
#   bench/idleconns.c (on CPU 1) opens 1000 connections to the HTTP port, each
#   sending one GET /plaintext and reading its answer, then silent; the
#   server's VmRSS (Tycho's process, nginx's worker) read before and 0.5 s
#   after the last is ready: growth / 1000 = bytes per idle connection,
#   printed under the tables and in the goals.
# - Per workload, a FRESH process of each server is started (so peak RSS is
#   that workload's), its answer to the workload's request is checked with curl
#   (status 200 + expected body; the script aborts if wrong), each gets a
#   warm-up run, then the measured runs, in two passes of BENCH_ROUNDS rounds
#   each, every round running each server once, one after the other. The
#   "list": BENCH_SERVERS' order with tycho2 and base right after tycho, so by
#   default tycho, tycho2, base, nginx, go, floor (those taking part;
#   tycho-plain last in ops).
#   Pass 1: odd rounds in the list's order, even rounds in reverse.
#   Pass 2 (swapped): odd rounds in reverse, even rounds in the list's order.
#   So every pair of servers runs as many rounds in one order as in the other
#   (with the default 5: pass 1 is F R F R F, pass 2 R F R F R), and no server
#   always goes first or always runs right after the same one. The servers
#   keep running between the passes (same processes, no new warm-up).
# - Per run: req/s and p99 latency (wrk --latency), wrk's non-2xx and socket
#   errors, and server CPU time (utime+stime from /proc/PID/stat read just
#   before and just after wrk) divided by the requests wrk completed, in
#   microseconds. For nginx, CPU is master + worker (the master is idle); for
#   go and the floor, its process (all its threads).
#   Kernel work done in softirq on wrk's CPU (much of loopback TCP) is not in
#   it, for any server.
#   After the last run, peak RSS = VmHWM from /proc/PID/status: Tycho's process
#   (its worker is a thread), nginx's worker process (child of the master).
# - The tables show, per server, the MEDIAN over all rounds of both passes of
#   req/s, p99 and CPU us/req, and the MINIMUM CPU us/req of any round (the
#   least disturbed one). Every round is printed as progress on stderr.
#   ratio = tycho/peer median req/s (>1: Tycho faster); CPU ratio = tycho/peer
#   median CPU us/req (<1: Tycho cheaper). Tables: Tycho vs nginx (every
#   workload), vs go (the data workloads and wsecho), vs the floor (plaintext,
#   c1000, close). Under them a line per workload gives every server's CPU
#   us/req as median (min, rounds).
# - A/A (BENCH_AA=1, the default): tycho2 is the tycho binary again, started,
#   checked and run exactly as tycho is (same arguments, scripts, flags in ops
#   and TLS), its rounds interleaved with the others'. One line per workload,
#   "A/A WORKLOAD", compares it with tycho: median CPU us/req (and %), min vs
#   min, median req/s. Any difference there is the noise of THIS run: a
#   difference between tycho and another server (or base) smaller than it
#   means nothing. Not in the tables; the idle measure and tlsplain's idle
#   measure leave it out.
# - Goals, at the end of the output, each from the MEDIAN CPU us/req over the
#   rounds (the ratio of the per-round minimums beside it, for reference):
#   tycho/nginx CPU us/req <= 0.75 in each keep-alive workload (plaintext,
#   json, users, echo, c1000); tycho/floor <= 1.15 in plaintext; tycho/nginx
#   <= 1.0 in close; bytes per idle keep-alive connection <= 400 (from idle,
#   else from tlsplain's plain measure; nginx's and the floor's beside it).
#   Each says met, NOT met, or n/a (a workload or server not in the run); then
#   the largest A/A difference of the run (the margin a ratio near its goal
#   must beat) and how many goals were met.
# - The machine should be otherwise idle: the script warns when it is not
#   (anything else on CPU 0 or 1 skews every number).
# - Before/after: BENCH_BASELINE=PATH adds a server "base" to EVERY workload:
#   the Tycho binary at PATH, run exactly as tycho is (same arguments, same
#   scripts/ and bench/proxy/ from this tree, --metrics and --access-log in
#   ops), started, checked and measured the same way, its rounds interleaved
#   with the others' in both passes (its place in the list: after tycho2). It
#   is not in the tables; after them, one line per workload gives tycho/base
#   median req/s, and the CPU us/req of each as the MEDIAN over its rounds and
#   as the least of any round, with tycho's change relative to base in %
#   (+: tycho costs more per request); with idle, the bytes per idle
#   connection of each. Keep the old binary out of the build tree (a rebuild
#   during the run would change it), e.g.
#     cp tycho /tmp/tycho-old   # before the change; then build the new one
#     BENCH_BASELINE=/tmp/tycho-old BENCH_SERVERS=tycho \
#         BENCH_WORKLOADS="plaintext echo" bench/run.sh ./tycho scripts/
#   Read each before/after line against the A/A line of its workload. Needs
#   tycho in BENCH_SERVERS; nginx is optional.
# - Nothing is written to the repo: the tables go to stdout, logs, builds
#   (nothing, wsload, idleconns, the go servers) and every other file to ONE
#   temp dir (mktemp -d /tmp/tycho-bench.XXXXXX), removed on every way out:
#   the end, an error (die, a wrong answer), SIGINT, SIGTERM or SIGHUP (a
#   signal that comes while wrk runs takes effect when that run ends, at most
#   BENCH_SECONDS + 30 s later); a second signal does not cut the cleanup
#   short. Only the PIDs this script started are ever signalled.
# Exit status: 0 when every run completed; 1 on bad setup, a wrong answer or a
# server that died during the bench.

set -uo pipefail

die() { echo "bench: ERROR: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

# ---------------------------------------------------------------- arguments
BENCH_SECONDS=${BENCH_SECONDS:-5}
BENCH_ROUNDS=${BENCH_ROUNDS:-5}
BENCH_WARMUP=${BENCH_WARMUP:-2}
BENCH_SERVERS=${BENCH_SERVERS:-tycho nginx go floor}
KNOWN_WORKLOADS="plaintext json users echo c1000 close idle proxy ops jsongz pgquery redisget"
KNOWN_WORKLOADS+=" wsecho tlsplain tlsclose"
BENCH_WORKLOADS=${BENCH_WORKLOADS:-$KNOWN_WORKLOADS}
BENCH_BASELINE=${BENCH_BASELINE:-}
BENCH_AA=${BENCH_AA:-1}
for v in BENCH_SECONDS BENCH_ROUNDS BENCH_WARMUP; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
((BENCH_SECONDS >= 1 && BENCH_SECONDS <= 600)) || die "BENCH_SECONDS must be 1..600"
((BENCH_ROUNDS >= 1 && BENCH_ROUNDS <= 20)) || die "BENCH_ROUNDS must be 1..20"
((BENCH_WARMUP <= 60)) || die "BENCH_WARMUP must be 0..60"
[[ $BENCH_AA == 0 || $BENCH_AA == 1 ]] || die "BENCH_AA must be 0 or 1, got '$BENCH_AA'"
((BENCH_ROUNDS >= 5)) ||
    log "WARNING: BENCH_ROUNDS=$BENCH_ROUNDS: under 5 rounds per pass, medians are not trustworthy"
TOTAL_ROUNDS=$((2 * BENCH_ROUNDS))   # two passes, the second in the swapped order
SERVERS=()
for s in $BENCH_SERVERS; do
    case $s in
    tycho | nginx | go | floor) SERVERS+=("$s") ;;
    *) die "BENCH_SERVERS: unknown server '$s'" ;;
    esac
done
((${#SERVERS[@]} > 0)) || die "BENCH_SERVERS is empty"
has_server() { local s; for s in "${SERVERS[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }
has_workload() { [[ " $BENCH_WORKLOADS " == *" $1 "* ]]; }
# the data workloads need PostgreSQL and Redis (both started for either)
DATA=0
if has_workload pgquery || has_workload redisget; then DATA=1; fi
# wsecho needs bench/wsload.c compiled, and bench/gows built for the go server
WS=0
has_workload wsecho && WS=1
# tlsplain and tlsclose need a certificate (made in the temp dir) and openssl
TLS=0
if has_workload tlsplain || has_workload tlsclose; then TLS=1; fi
# idle (and tlsplain) hold idle connections with bench/idleconns.c (built with -lssl)
IDLE=0
has_workload idle && IDLE=1
# the floor (bench/nothing.c) takes part in plaintext, c1000, close and idle
FLOOR=0
if has_server floor; then
    for w in plaintext c1000 close idle; do has_workload "$w" && FLOOR=1; done
fi

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ECHO_LUA=$BENCH_DIR/echo.lua
[[ -f $ECHO_LUA ]] || die "missing $ECHO_LUA"
PROXY_SCRIPTS=$BENCH_DIR/proxy
[[ -f $PROXY_SCRIPTS/proxy.lua ]] || die "missing $PROXY_SCRIPTS/proxy.lua"
GZIP_SCRIPTS=$BENCH_DIR/gzip
[[ -f $GZIP_SCRIPTS/app.lua ]] || die "missing $GZIP_SCRIPTS/app.lua"
DATA_SCRIPTS=$BENCH_DIR/data
[[ -f $DATA_SCRIPTS/app.lua ]] || die "missing $DATA_SCRIPTS/app.lua"
GOPEER_SRC=$BENCH_DIR/gopeer
[[ -f $GOPEER_SRC/main.go ]] || die "missing $GOPEER_SRC/main.go"
WS_SCRIPTS=$BENCH_DIR/ws
[[ -f $WS_SCRIPTS/app.lua ]] || die "missing $WS_SCRIPTS/app.lua"
GOWS_SRC=$BENCH_DIR/gows
[[ -f $GOWS_SRC/main.go ]] || die "missing $GOWS_SRC/main.go"
WSLOAD_SRC=$BENCH_DIR/wsload.c
[[ -f $WSLOAD_SRC ]] || die "missing $WSLOAD_SRC"
MKCERTS=$BENCH_DIR/../tests/integration/tls/mkcerts.sh
((TLS == 0)) || [[ -f $MKCERTS ]] || die "missing $MKCERTS"
IDLECONNS_SRC=$BENCH_DIR/idleconns.c
((TLS == 0 && IDLE == 0)) || [[ -f $IDLECONNS_SRC ]] || die "missing $IDLECONNS_SRC"
NOTHING_SRC=$BENCH_DIR/nothing.c
((FLOOR == 0)) || [[ -f $NOTHING_SRC ]] || die "missing $NOTHING_SRC"

TYCHO=""; SCRIPTS=""
if has_server tycho; then
    (($# == 2)) || die "usage: bench/run.sh ./tycho scripts/"
    TYCHO=$1; SCRIPTS=$2
    [[ $TYCHO == */* ]] || TYCHO=./$TYCHO
    [[ -x $TYCHO && -f $TYCHO ]] || die "tycho binary '$1' not found or not executable (build it first: make)"
    [[ -d $SCRIPTS ]] || die "scripts directory '$2' not found"
    TYCHO=$(cd "$(dirname "$TYCHO")" && pwd)/$(basename "$TYCHO")
    SCRIPTS=$(cd "$SCRIPTS" && pwd)
fi
# BENCH_BASELINE: the "base" server, a second Tycho binary run as tycho is
BASE=""
if [[ -n $BENCH_BASELINE ]]; then
    has_server tycho || die "BENCH_BASELINE needs tycho in BENCH_SERVERS (base runs with tycho's arguments)"
    BASE=$BENCH_BASELINE
    [[ $BASE == */* ]] || BASE=./$BASE
    [[ -f $BASE && -x $BASE ]] || die "BENCH_BASELINE '$BENCH_BASELINE' is not an executable file"
    BASE=$(cd "$(dirname "$BASE")" && pwd)/$(basename "$BASE")
    # BENCH_BASELINE_SCRIPTS: the scripts directory base serves (default: tycho's), for an
    # older binary that lacks a Lua function the current scripts/ uses
    BASE_SCRIPTS=${BENCH_BASELINE_SCRIPTS:-}
    if [[ -n $BASE_SCRIPTS ]]; then
        [[ -d $BASE_SCRIPTS ]] || die "BENCH_BASELINE_SCRIPTS '$BASE_SCRIPTS' is not a directory"
        BASE_SCRIPTS=$(cd "$BASE_SCRIPTS" && pwd)
    fi
fi
# tlsplain and tlsclose need a Tycho that serves HTTPS (--tls-port): checked before any run
if ((TLS)); then
    for b in $TYCHO $BASE; do
        "$b" --help 2>&1 | grep -q -- '--tls-port' ||
            die "$b has no --tls-port: tlsplain and tlsclose need a Tycho that serves HTTPS"
    done
fi

# ---------------------------------------------------------------- tools
NGX_MODDIR=/usr/lib/nginx/modules
NDK_SO=$NGX_MODDIR/ndk_http_module.so
LUA_SO=$NGX_MODDIR/ngx_http_lua_module.so
need_install() {
    command -v wrk >/dev/null || return 0
    command -v curl >/dev/null || return 0
    if has_server nginx; then
        command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || return 0
        [[ -f $NDK_SO && -f $LUA_SO ]] || return 0
        # cjson for LuaJIT (lua 5.1 ABI); its path differs per arch, so ask dpkg
        dpkg -s lua-cjson >/dev/null 2>&1 || return 0
    fi
    if ((DATA)); then
        pg_bindir >/dev/null || return 0
        command -v psql >/dev/null || return 0
        command -v redis-server >/dev/null || return 0
        command -v redis-cli >/dev/null || return 0
        if has_server go; then
            command -v go >/dev/null || return 0
            local p
            for p in $GO_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || return 0; done
        fi
    fi
    if ((TLS)); then
        command -v openssl >/dev/null || return 0
    fi
    if ((TLS || IDLE)); then
        command -v cc >/dev/null || return 0
        [[ -f /usr/include/openssl/ssl.h ]] || return 0
    fi
    if ((FLOOR)); then
        command -v cc >/dev/null || return 0
    fi
    if ((WS)); then
        command -v cc >/dev/null || return 0
        if has_server go; then
            command -v go >/dev/null || return 0
            dpkg -s "$GO_WS_PKG" >/dev/null 2>&1 || return 0
        fi
    fi
    return 1
}
# PostgreSQL's server programs (Debian: /usr/lib/postgresql/N/bin): 15, else the newest
pg_bindir() {
    local d
    for d in /usr/lib/postgresql/15/bin $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
        [[ -x $d/initdb && -x $d/postgres && -x $d/pg_isready ]] && { echo "$d"; return 0; }
    done
    return 1
}
# the go server's sources, as Debian packages them under /usr/share/gocode
GO_PKGS="golang-github-jackc-pgx-v4-dev golang-github-gomodule-redigo-dev golang-github-valyala-fasthttp-dev"
# wsecho's go server (bench/gows)
GO_WS_PKG=golang-github-gorilla-websocket-dev
if need_install; then
    PKGS="nginx libnginx-mod-http-lua lua-cjson wrk"
    command -v curl >/dev/null || PKGS="$PKGS curl"
    ((DATA)) && PKGS="$PKGS postgresql redis-server"
    ((DATA)) && has_server go && PKGS="$PKGS golang-go $GO_PKGS"
    ((WS)) && ! command -v cc >/dev/null && PKGS="$PKGS gcc libc6-dev"
    ((TLS)) && ! command -v openssl >/dev/null && PKGS="$PKGS openssl"
    ((TLS || IDLE || FLOOR)) && ! command -v cc >/dev/null && [[ $PKGS != *gcc* ]] &&
        PKGS="$PKGS gcc libc6-dev"
    ((TLS || IDLE)) && [[ ! -f /usr/include/openssl/ssl.h ]] && PKGS="$PKGS libssl-dev"
    ((WS)) && has_server go && PKGS="$PKGS golang-go $GO_WS_PKG"
    if ((EUID != 0)); then
        echo "bench: missing tools; install them as root with:" >&2
        echo "  apt-get update && apt-get install -y $PKGS" >&2
        exit 1
    fi
    log "installing: $PKGS"
    apt-get update || die "apt-get update failed"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y $PKGS || die "apt-get install failed"
    need_install && die "tools still missing after apt-get install"
fi
for t in taskset timeout curl wrk awk pgrep getconf; do
    command -v "$t" >/dev/null || die "'$t' not found"
done
if ((DATA)); then
    for t in psql redis-server redis-cli; do
        command -v "$t" >/dev/null || die "'$t' not found"
    done
    PG_BIN=$(pg_bindir) || die "PostgreSQL's initdb/postgres not found under /usr/lib/postgresql/*/bin"
    if ((EUID == 0)); then command -v setpriv >/dev/null || die "'setpriv' not found"; fi
    # libpq reads these even when given a URL: none of the caller's may change the servers' runs
    unset PGHOST PGHOSTADDR PGPORT PGUSER PGPASSWORD PGDATABASE PGOPTIONS PGSERVICE PGSSLMODE
fi
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
if has_server nginx; then
    [[ -x $NGINX_BIN ]] || die "nginx binary not found"
    [[ -f $NDK_SO ]] || die "$NDK_SO not found (apt-get install libnginx-mod-http-ndk)"
    [[ -f $LUA_SO ]] || die "$LUA_SO not found (apt-get install libnginx-mod-http-lua)"
fi
(($(nproc) >= 2)) || log "WARNING: fewer than 2 CPUs; server and wrk will share CPU 0"
CLK_TCK=$(getconf CLK_TCK)

# 1000 connections need ~1000 fds in wrk and in the server (+ slack).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) >= 2200)) || die "open-file limit $(ulimit -n) too low for 1000 connections (need >= 2200; raise ulimit -n)"

# ---------------------------------------------------------------- state/cleanup
TMP=$(mktemp -d /tmp/tycho-bench.XXXXXX) || die "mktemp failed"
chmod 755 "$TMP"   # nginx workers run as 'nobody' when the master is root
STARTED_PIDS=()    # every server PID this script started (tycho, nginx master)
NGINX_WORKERS=()   # nginx worker PIDs seen (children of our masters)
DATA_PIDS=()       # postgres and redis-server ("PID:SIGNAL"), stopped after the servers
STATUS=0

is_alive() {   # alive and not a zombie
    local st
    [[ -r /proc/$1/stat ]] || return 1
    st=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $st && $st != Z && $st != X ]]
}

stop_pid() {   # PID [SIGNAL]: SIGNAL (default TERM), wait up to 5 s, then KILL; reap
    local pid=$1 sig=${2:-TERM} i
    is_alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }
    kill -"$sig" "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do is_alive "$pid" || break; sleep 0.1; done
    if is_alive "$pid"; then
        log "pid $pid ignored SIG$sig for 5 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null
        for ((i = 0; i < 20; i++)); do is_alive "$pid" || break; sleep 0.1; done
    fi
    wait "$pid" 2>/dev/null
    return 0
}

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    local pid w
    # bounded (each stop_pid: 7 s at most); not to be cut short by a second signal, or the
    # temp dir would stay
    trap - EXIT
    trap '' INT TERM HUP
    for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
    # postgres: SIGINT is its fast shutdown (SIGTERM would wait for its clients)
    for pid in "${DATA_PIDS[@]}"; do stop_pid "${pid%%:*}" "${pid#*:}"; done
    # an nginx worker left behind by a KILLed master: only ours, only nginx
    for w in "${NGINX_WORKERS[@]}"; do
        if is_alive "$w" && [[ $(cat "/proc/$w/comm" 2>/dev/null) == nginx ]]; then
            kill -KILL "$w" 2>/dev/null
        fi
    done
    rm -rf "$TMP"
}
# every way out (die, exit, the end, SIGINT, SIGTERM, SIGHUP) goes through cleanup, which
# removes $TMP; a signal that comes while wrk runs is acted on when wrk ends (bounded:
# BENCH_SECONDS + 30 s)
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP

forget_pid() {
    local keep=() p
    for p in "${STARTED_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    STARTED_PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- helpers
USED_PORTS=" "
port_in_use() {
    if command -v ss >/dev/null; then
        [[ -n $(ss -Htan "( sport = :$1 )" 2>/dev/null) ]]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}
free_port() {   # below the ephemeral range (32768+), not used yet by us
    local i p
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        port_in_use "$p" && continue
        USED_PORTS+="$p "
        echo "$p"; return 0
    done
    return 1
}

wait_ready() {   # pid port logfile: up to 10 s for the port to accept
    local pid=$1 port=$2 logf=$3 i
    for ((i = 0; i < 100; i++)); do
        if ! is_alive "$pid"; then
            echo "---- $logf" >&2; tail -n 30 "$logf" >&2
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "---- $logf" >&2; tail -n 30 "$logf" >&2
    return 1
}

# sum of utime+stime (clock ticks) over the given PIDs
cpu_ticks() {
    local total=0 pid f
    for pid in "$@"; do
        f=$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        # after "pid (comm) ": 1=state ... 12=utime 13=stime
        total=$((total + $(echo "$f" | awk '{print $12 + $13}')))
    done
    echo "$total"
}

# CPU ticks of a server and its children: its own, its reaped children's
# (cutime+cstime) and its live children's (PostgreSQL's backends)
tree_ticks() {
    local total f c
    f=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    total=$(echo "$f" | awk '{print $12 + $13 + $14 + $15}')
    for c in $(pgrep -P "$1"); do
        total=$((total + $(cpu_ticks "$c")))
    done
    echo "$total"
}

vm_hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
vm_rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

# ---------------------------------------------------------------- TLS
# tlsplain and tlsclose: one certificate for both servers, made here in the temp dir by
# tests/integration/tls/mkcerts.sh (P-256 ECDSA leaf for 127.0.0.1, signed by a test CA).
# nginx is set up as Tycho sets itself up: TLS 1.2 and 1.3 only, Mozilla's "intermediate"
# TLS 1.2 ciphers (client's order), TLS 1.3 suites OpenSSL's, groups X25519, P-256, P-384,
# resumption by session tickets only (no session cache), one ticket per handshake.
TLS_DIR=$TMP/tls
TLS12_CIPHERS="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"
TLS_NGINX="ssl_certificate $TLS_DIR/server.pem; ssl_certificate_key $TLS_DIR/server.key; ssl_protocols TLSv1.2 TLSv1.3; ssl_ciphers $TLS12_CIPHERS; ssl_prefer_server_ciphers off; ssl_ecdh_curve X25519:prime256v1:secp384r1; ssl_session_cache off; ssl_session_tickets on; ssl_conf_command NumTickets 1;"
make_certs() {
    sh "$MKCERTS" "$TLS_DIR" >"$TMP/mkcerts.log" 2>&1 ||
        { cat "$TMP/mkcerts.log" >&2; die "tests/integration/tls/mkcerts.sh failed"; }
    [[ -f $TLS_DIR/server.pem && -f $TLS_DIR/server.key && -f $TLS_DIR/ca.pem ]] ||
        die "mkcerts.sh made no server.pem/server.key/ca.pem"
    log "TLS: certificate $(openssl x509 -noout -subject -in "$TLS_DIR/server.pem" | sed 's/^subject=//') ($(openssl x509 -noout -text -in "$TLS_DIR/server.pem" | awk -F': *' '/ASN1 OID/ {print $2; exit}')), made in $TLS_DIR"
}
is_tls() { [[ $1 == tls || $1 == tlsclose ]]; }
# tls_probe PORT: what a server negotiates, seen by openssl s_client (verifying the
# certificate against the test CA) with TLS 1.3 and with 1.2; whether TLS 1.1 is
# refused; and how often it resumes when reconnected to as wrk does: bench/idleconns -r,
# 20 connections in a row on one SSL object (set up as wrk's), each closed with
# SSL_shutdown + SSL_clear. Prints e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519;
# TLSv1.2 ECDHE-ECDSA-AES256-GCM-SHA384 X25519; TLSv1.1 refused; wrk-style reconnects
# resumed 19/19"
tls_probe() {
    local port=$1 v out res="" proto cipher group n
    local req='GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'
    for v in tls1_3 tls1_2; do
        # shellcheck disable=SC2059
        out=$(printf "$req" | timeout 10 openssl s_client -"$v" -connect "127.0.0.1:$port" \
            -CAfile "$TLS_DIR/ca.pem" -verify_return_error -ign_eof 2>&1)
        if ! grep -q '^HTTP/1.1 200' <<<"$out"; then
            res+="${res:+; }$v failed"
            continue
        fi
        read -r proto cipher <<<"$(awk -F', ' '/^New, / {sub(/^Cipher is /, "", $3); print $2, $3; exit}' <<<"$out")"
        group=$(awk -F'[:,] *' '/^Server Temp Key:/ {print $2; exit}' <<<"$out")
        res+="${res:+; }$proto $cipher ${group:-?}"
    done
    # (SECLEVEL=0: OpenSSL 3's client offers TLS 1.1 only with it)
    if timeout 10 openssl s_client -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' -connect "127.0.0.1:$port" \
        </dev/null 2>&1 | grep -q '^New, TLSv'; then
        res+="; TLSv1.1 ACCEPTED"
    else
        res+="; TLSv1.1 refused"
    fi
    n=$(timeout 60 "$IDLECONNS" -p "$port" -t -r 20 2>/dev/null | awk '$2 == "reconnects" {print $5}')
    res+="; wrk-style reconnects resumed ${n:-?}/19"
    echo "$res"
}

# ---------------------------------------------------------------- servers
# write_nginx_conf dir port [access [tlsport]]: with "access", an access log buffered as
# Tycho's is; with a tlsport, HTTPS on it too (same server block), with TLS_NGINX's settings
write_nginx_conf() {
    local dir=$1 port=$2 access=${3:-} tport=${4:-} log_line="access_log off;" tls_line=""
    [[ $access == access ]] && log_line="access_log $dir/logs/access.log combined buffer=32k flush=1s;"
    [[ -n $tport ]] && tls_line="listen 127.0.0.1:$tport ssl; $TLS_NGINX"
    mkdir -p "$dir/logs" "$dir/tmp"
    sed -e "s|access_log off;|$log_line|" -e "s|# __TLS__|$tls_line|" \
        -e "s|__DIR__|$dir|g" -e "s|__PORT__|$port|g" -e "s|__BACKEND__|$BACKEND_PORT|g" \
        -e "s|__NDK__|$NDK_SO|g" -e "s|__LUA__|$LUA_SO|g" -e "s|__REDIS__|$REDIS_PORT|g" \
        -e "s|__LUAPATH__|$(ngx_lua_path)|g" >"$dir/nginx.conf" <<'EOF'
load_module __NDK__;
load_module __LUA__;

worker_processes 1;
worker_rlimit_nofile 8192;
pid __DIR__/nginx.pid;
error_log __DIR__/logs/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    server_tokens off;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    client_body_buffer_size 64k;
    client_max_body_size 1m;

    client_body_temp_path __DIR__/tmp/client_body;
    proxy_temp_path       __DIR__/tmp/proxy;
    fastcgi_temp_path     __DIR__/tmp/fastcgi;
    uwsgi_temp_path       __DIR__/tmp/uwsgi;
    scgi_temp_path        __DIR__/tmp/scgi;

    # lua-resty-redis (Debian's lua-nginx-redis: require "nginx.redis") for redisget,
    # lua-resty-websocket (lua-nginx-websocket: "nginx.websocket.server") for wsecho
    lua_package_path "__LUAPATH__;;";

    init_by_lua_block {
        cjson = require "cjson"
        -- jsongz: the table of bench/gzip/app.lua
        gz_users = {}
        for i = 1, 50 do
            gz_users[i] = { id = i, name = "user" .. i, email = "user" .. i .. "@example.com",
                            active = i % 2 == 0 }
        end
    }

    upstream backend {
        server 127.0.0.1:__BACKEND__;
        keepalive 64;
    }

    server {
        listen 127.0.0.1:__PORT__;
        # __TLS__
        server_name _;

        location = /proxy {
            content_by_lua_block {
                local r = ngx.location.capture("/backend")
                if r.status ~= 200 then
                    return ngx.exit(502)
                end
                ngx.header["Content-Type"] = "text/plain; charset=utf-8"
                ngx.header["Content-Length"] = #r.body
                ngx.print(r.body)
            }
        }

        location = /backend {
            internal;
            proxy_pass http://backend/plaintext;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }

        # redisget: one GET over a cosocket pool of 16 per worker (as Tycho's pool = 16)
        location = /cache {
            content_by_lua_block {
                local redis = require "nginx.redis"
                local red = redis:new()
                red:set_timeout(30000)
                local ok, err = red:connect("127.0.0.1", __REDIS__, { pool_size = 16, backlog = 1024 })
                if not ok then
                    ngx.status = 503
                    return ngx.print(err)
                end
                local v
                v, err = red:get("bench:cache")
                if not v or v == ngx.null then
                    ngx.status = 503
                    return ngx.print(err or "no value")
                end
                red:set_keepalive(60000, 16)
                ngx.header["Content-Type"] = "text/plain; charset=utf-8"
                ngx.header["Content-Length"] = #v
                ngx.print(v)
            }
        }

        # wsecho: every frame sent back as it came, as bench/ws/app.lua does (a 1 MiB
        # limit as Tycho's max_message; a read timeout is not an end, as Tycho's idle
        # timeout is 120 s)
        location = /ws {
            lua_socket_log_errors off;
            content_by_lua_block {
                local server = require "nginx.websocket.server"
                local wb, err = server:new({ timeout = 120000, max_payload_len = 1048576 })
                if not wb then
                    ngx.log(ngx.ERR, "websocket: ", err)
                    return ngx.exit(400)
                end
                while true do
                    local data, typ
                    data, typ, err = wb:recv_frame()
                    if not data then
                        if not string.find(err, "timeout", 1, true) then
                            return ngx.exit(444)
                        end
                    elseif typ == "close" then
                        wb:send_close(1000, "")
                        return
                    elseif typ == "ping" then
                        wb:send_pong(data)
                    elseif typ == "text" then
                        wb:send_text(data)
                    elseif typ == "binary" then
                        wb:send_binary(data)
                    end
                end
            }
        }

        location = /plaintext {
            content_by_lua_block {
                local body = "Hello, World!"
                ngx.header["Content-Type"] = "text/plain; charset=utf-8"
                ngx.header["Content-Length"] = #body
                ngx.print(body)
            }
        }

        # jsongz: as Tycho's --gzip --gzip-level 1 --gzip-min-bytes 1024
        location = /users.json {
            gzip on;
            gzip_comp_level 1;
            gzip_min_length 1024;
            gzip_types application/json;
            gzip_vary on;
            content_by_lua_block {
                local body = cjson.encode({ users = gz_users })
                ngx.header["Content-Type"] = "application/json"
                ngx.header["Content-Length"] = #body
                ngx.print(body)
            }
        }

        location = /json {
            content_by_lua_block {
                local body = cjson.encode({ message = "Hello, World!" })
                ngx.header["Content-Type"] = "application/json"
                ngx.header["Content-Length"] = #body
                ngx.print(body)
            }
        }

        location ~ ^/users/(?<user_id>[^/]+)$ {
            content_by_lua_block {
                -- scripts/hello.lua also returns the decoded ?q= (absent here)
                local args = ngx.req.get_uri_args()
                local body = cjson.encode({ id = ngx.var.user_id, q = args.q })
                ngx.header["Content-Type"] = "application/json"
                ngx.header["Content-Length"] = #body
                ngx.print(body)
            }
        }

        location = /echo {
            content_by_lua_block {
                if ngx.req.get_method() ~= "POST" then
                    return ngx.exit(405)
                end
                ngx.req.read_body()
                local body = ngx.req.get_body_data()
                if not body then
                    local path = ngx.req.get_body_file()
                    if path then
                        local f = io.open(path, "rb")
                        body = f:read("*a")
                        f:close()
                    else
                        body = ""
                    end
                end
                ngx.header["Content-Type"] = ngx.var.content_type or "application/octet-stream"
                ngx.header["Content-Length"] = #body
                ngx.print(body)
            }
        }
    }
}
EOF
}

# The proxy workload's backend: a plain nginx on CPU 1 (with wrk), started once.
BACKEND_PORT=9
start_backend() {
    local dir=$TMP/backend pid
    BACKEND_PORT=$(free_port) || die "no free port found"
    mkdir -p "$dir/logs" "$dir/tmp"
    cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 8192;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    server_tokens off;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    client_body_temp_path $dir/tmp/client_body;
    proxy_temp_path       $dir/tmp/proxy;
    fastcgi_temp_path     $dir/tmp/fastcgi;
    uwsgi_temp_path       $dir/tmp/uwsgi;
    scgi_temp_path        $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        location = /plaintext {
            default_type "text/plain; charset=utf-8";
            return 200 "Hello, World!";
        }
    }
}
CONF
    taskset -c 1 "$NGINX_BIN" -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" -g 'daemon off;' \
        >"$dir/stdout.log" 2>&1 </dev/null &
    pid=$!
    STARTED_PIDS+=("$pid")
    wait_ready "$pid" "$BACKEND_PORT" "$dir/logs/error.log" || die "the backend nginx did not start on 127.0.0.1:$BACKEND_PORT"
    [[ $(curl -sS --max-time 5 "http://127.0.0.1:$BACKEND_PORT/plaintext") == "Hello, World!" ]] ||
        die "the backend nginx answers /plaintext wrongly"
    log "backend (proxy workload): nginx pid $pid on 127.0.0.1:$BACKEND_PORT, CPU 1"
}

# ---------------------------------------------------------------- data workloads
# pgquery and redisget: PostgreSQL and Redis on CPU 1 (with wrk), started once for the
# run, as the user nobody when we are root (PostgreSQL refuses root; Redis gets the same).
PG_PORT=9
REDIS_PORT=9
PG_PID=""
REDIS_PID=""
DATABASE_URL_BENCH=""
REDIS_URL_BENCH=""
CACHE_VALUE=$(printf '0123456789%.0s' {1..10})   # redisget's value: 100 bytes
AS_DATA_USER=()
if ((EUID == 0)); then
    AS_DATA_USER=(setpriv --reuid="$(id -u nobody)" --regid="$(id -g nobody)" --clear-groups)
fi
data_dir() {   # DIR: created, and owned by the servers' user
    mkdir -p "$1" || die "mkdir $1 failed"
    if ((EUID == 0)); then chown "$(id -u nobody):$(id -g nobody)" "$1" || die "chown $1 failed"; fi
}
# psql as USER (local trust) over the Unix socket in $TMP/pg: pg_sql USER DB ARGS...
pg_sql() {
    psql -X -q -A -t -h "$TMP/pg" -p "$PG_PORT" -U "$1" -d "$2" -v ON_ERROR_STOP=1 "${@:3}"
}
start_postgres() {
    local dir=$TMP/pg pid i n
    data_dir "$dir"
    # initdb refuses root too; cd: it must be able to stat its working directory
    (cd "$dir" && "${AS_DATA_USER[@]}" "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 --no-sync --locale=C --encoding=UTF8 --no-instructions) \
        >"$dir/initdb.log" 2>&1 </dev/null || { tail -n 20 "$dir/initdb.log" >&2; die "initdb failed"; }
    PG_PORT=$(free_port) || die "no free port found"
    # fsync etc. off: nothing here must survive a crash; the workload only reads anyway
    taskset -c 1 "${AS_DATA_USER[@]}" "$PG_BIN/postgres" -D "$dir/data" -p "$PG_PORT" \
        -c listen_addresses=127.0.0.1 -c "unix_socket_directories=$dir" \
        -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
        -c max_connections=200 -c jit=off -c lc_messages=C -c TimeZone=UTC \
        >"$dir/postgres.log" 2>&1 </dev/null &
    pid=$!
    PG_PID=$pid
    DATA_PIDS+=("$pid:INT")
    for ((i = 0; i < 300; i++)); do
        is_alive "$pid" || { tail -n 30 "$dir/postgres.log" >&2; die "postgres exited during startup"; }
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 1 && break
        sleep 0.1
    done
    ((i < 300)) || { tail -n 30 "$dir/postgres.log" >&2; die "postgres not ready on 127.0.0.1:$PG_PORT within 30 s"; }
    pg_sql postgres postgres -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" \
        -c "CREATE DATABASE bench OWNER bench" >"$dir/setup.log" 2>&1 ||
        { cat "$dir/setup.log" >&2; die "PostgreSQL: creating the role and database failed"; }
    pg_sql bench bench -c "CREATE TABLE world (id integer PRIMARY KEY, randomnumber integer NOT NULL)" \
        -c "INSERT INTO world SELECT i, 1 + floor(random() * 10000)::int FROM generate_series(1, 10000) AS i" \
        -c "VACUUM ANALYZE world" >>"$dir/setup.log" 2>&1 ||
        { cat "$dir/setup.log" >&2; die "PostgreSQL: filling the table world failed"; }
    n=$(pg_sql bench bench -c "SELECT count(*) FROM world") || die "PostgreSQL: counting world failed"
    [[ $n == 10000 ]] || die "PostgreSQL: world has $n rows, not 10000"
    DATABASE_URL_BENCH="postgres://bench:bench@127.0.0.1:$PG_PORT/bench"
    log "PostgreSQL ($PG_BIN): pid $pid on 127.0.0.1:$PG_PORT, CPU 1, table world 10000 rows"
}
start_redis() {
    local dir=$TMP/redis pid i v
    data_dir "$dir"
    REDIS_PORT=$(free_port) || die "no free port found"
    taskset -c 1 "${AS_DATA_USER[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --dir "$dir" --daemonize no --protected-mode no \
        >"$dir/redis.log" 2>&1 </dev/null &
    pid=$!
    REDIS_PID=$pid
    DATA_PIDS+=("$pid:TERM")
    for ((i = 0; i < 100; i++)); do
        is_alive "$pid" || { tail -n 30 "$dir/redis.log" >&2; die "redis-server exited during startup"; }
        [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" PING 2>/dev/null) == PONG ]] && break
        sleep 0.1
    done
    ((i < 100)) || { tail -n 30 "$dir/redis.log" >&2; die "redis-server not ready on 127.0.0.1:$REDIS_PORT within 10 s"; }
    [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" SET bench:cache "$CACHE_VALUE") == OK ]] || die "Redis: SET failed"
    v=$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" GET bench:cache)
    [[ $v == "$CACHE_VALUE" ]] || die "Redis: GET bench:cache gave '$v'"
    REDIS_URL_BENCH="redis://127.0.0.1:$REDIS_PORT/0"
    log "Redis ($(redis-server --version | awk '{print $3}')): pid $pid on 127.0.0.1:$REDIS_PORT, CPU 1, key bench:cache ${#CACHE_VALUE} bytes"
}
# The go server, built offline from Debian's packaged sources (GOPATH mode, no modules).
GOPEER=""
build_gopeer() {
    GOPEER=$TMP/gopeer
    log "building bench/gopeer ($(go version | awk '{print $3}'), GO111MODULE=off, GOPATH=/usr/share/gocode)"
    (cd "$GOPEER_SRC" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=$TMP/gocache GOFLAGS='' \
        GOPROXY=off go build -o "$GOPEER" .) >"$TMP/gobuild.log" 2>&1 ||
        { cat "$TMP/gobuild.log" >&2; die "building bench/gopeer failed (missing $GO_PKGS ?)"; }
}
# lua-resty-redis for nginx's redisget, lua-resty-websocket for its wsecho. Debian's
# lua-nginx-redis and lua-nginx-websocket depend on nginx-extras (twenty modules, enabled
# under /etc/nginx): their Lua files are taken from the .deb instead, unless the package
# is installed. An empty NGX_REDIS_LUADIR / NGX_WS_LUADIR: nginx sits that workload out.
NGX_REDIS_LUADIR=""
NGX_WS_LUADIR=""
# fetch_ngx_lua PACKAGE FILE WORKLOAD: prints the dir that holds FILE (nginx/redis.lua...)
fetch_ngx_lua() {
    local pkg=$1 file=$2 wl=$3 d=$TMP/$1 deb
    if [[ -f /usr/share/lua/5.1/$file ]]; then
        echo /usr/share/lua/5.1
        return 0
    fi
    mkdir -p "$d"
    (cd "$d" && apt-get download "$pkg") >"$d/download.log" 2>&1
    deb=$(find "$d" -maxdepth 1 -name "${pkg}_*.deb" | head -n 1)
    if [[ -z $deb ]] || ! dpkg-deb -x "$deb" "$d/root" || [[ ! -f $d/root/usr/share/lua/5.1/$file ]]; then
        tail -n 3 "$d/download.log" >&2
        log "WARNING: could not get $pkg (apt-get download; run apt-get update?): nginx sits $wl out"
        return 1
    fi
    log "nginx $wl: $file from $(basename "$deb") (extracted in the temp dir)"
    echo "$d/root/usr/share/lua/5.1"
}
fetch_ngx_redis() { NGX_REDIS_LUADIR=$(fetch_ngx_lua lua-nginx-redis nginx/redis.lua redisget); }
fetch_ngx_ws() { NGX_WS_LUADIR=$(fetch_ngx_lua lua-nginx-websocket nginx/websocket/server.lua wsecho); }
ngx_lua_path() {   # lua_package_path's entries for the libraries fetched
    local p=""
    [[ -n $NGX_REDIS_LUADIR ]] && p="$NGX_REDIS_LUADIR/?.lua"
    [[ -n $NGX_WS_LUADIR ]] && p="${p:+$p;}$NGX_WS_LUADIR/?.lua"
    echo "$p"
}
# wsecho: the load generator (bench/wsload.c) and the go server (bench/gows)
# the idle-connection memory measure of tlsplain: bench/idleconns.c
IDLE_CONNS=1000
IDLECONNS=""
build_idleconns() {
    IDLECONNS=$TMP/idleconns
    cc -O2 -Wall -Wextra -o "$IDLECONNS" "$IDLECONNS_SRC" -lssl -lcrypto >"$TMP/idleconns-build.log" 2>&1 ||
        { cat "$TMP/idleconns-build.log" >&2; die "compiling bench/idleconns.c failed (libssl-dev?)"; }
}
# idle_hold PORT OUT [-t]: IDLE_CONNS connections held open by idleconns (on CPU 1),
# each after one keep-alive request; sets HOLD_PID once all are open (0 on failure)
idle_hold() {
    local port=$1 out=$2 i
    shift 2
    taskset -c 1 "$IDLECONNS" -p "$port" -c "$IDLE_CONNS" -h 120 "$@" >"$out" 2>&1 </dev/null &
    HOLD_PID=$!
    STARTED_PIDS+=("$HOLD_PID")
    for ((i = 0; i < 600; i++)); do
        grep -q '^idleconns conns [0-9]* ready$' "$out" 2>/dev/null && return 0
        is_alive "$HOLD_PID" || break
        sleep 0.1
    done
    log "WARNING: idleconns on port $port did not get its $IDLE_CONNS connections ready:"
    tail -n 5 "$out" >&2
    stop_pid "$HOLD_PID"; forget_pid "$HOLD_PID"
    return 1
}
# idle_measure SERVER HTTP_PORT TLS_PORT RSS_PID: the server's VmRSS growth per idle
# connection, IDLE_CONNS plain ones opened first, then IDLE_CONNS TLS ones beside them
# (both held at once, so that neither reuses memory the other freed); sets
# IDLE_PLAIN[SERVER] and IDLE_TLS[SERVER] in bytes
idle_measure() {
    local s=$1 hport=$2 tport=$3 rpid=$4 r0 r1 r2 p1 p2
    r0=$(vm_rss_kb "$rpid")
    idle_hold "$hport" "$TMP/idle-$s-plain.out" || return 1
    p1=$HOLD_PID
    sleep 0.5
    r1=$(vm_rss_kb "$rpid")
    if idle_hold "$tport" "$TMP/idle-$s-tls.out" -t; then
        p2=$HOLD_PID
        sleep 0.5
        r2=$(vm_rss_kb "$rpid")
        stop_pid "$p2"; forget_pid "$p2"
        IDLE_TLS[$s]=$(((r2 - r1) * 1024 / IDLE_CONNS))
    fi
    stop_pid "$p1"; forget_pid "$p1"
    IDLE_PLAIN[$s]=$(((r1 - r0) * 1024 / IDLE_CONNS))
    log "$s idle connections: VmRSS $r0 kB, +$IDLE_CONNS plain $r1 kB, +$IDLE_CONNS TLS ${r2:-?} kB"
}
# idle_ka SERVER PORT RSS_PID: the workload idle: the server's VmRSS growth per idle
# keep-alive connection, IDLE_CONNS plain ones (one request each); sets IDLE_KA[SERVER].
# First IDLE_WARMUP_S of wrk on one connection: a server in service has answered requests
# before, and what answering leaves (Lua garbage until its next collection, pools) is not
# memory that an idle connection holds.
IDLE_WARMUP_S=2
idle_ka() {
    local s=$1 port=$2 rpid=$3 r0 r1
    run_wrk "$s" "$port" 1 /plaintext "" "$IDLE_WARMUP_S" "$TMP/idle-$s-warmup.out"
    r0=$(vm_rss_kb "$rpid")
    idle_hold "$port" "$TMP/idle-$s-ka.out" || return 1
    sleep 0.5
    r1=$(vm_rss_kb "$rpid")
    stop_pid "$HOLD_PID"; forget_pid "$HOLD_PID"
    IDLE_KA[$s]=$(((r1 - r0) * 1024 / IDLE_CONNS))
    log "$s idle connections: VmRSS $r0 kB, +$IDLE_CONNS plain $r1 kB: ${IDLE_KA[$s]} B each"
}
declare -A IDLE_PLAIN IDLE_TLS IDLE_KA
# the floor: bench/nothing.c, a do-nothing epoll server
NOTHING=""
build_nothing() {
    NOTHING=$TMP/nothing
    cc -O2 -Wall -Wextra -o "$NOTHING" "$NOTHING_SRC" >"$TMP/nothing-build.log" 2>&1 ||
        { cat "$TMP/nothing-build.log" >&2; die "compiling bench/nothing.c failed"; }
}
WSLOAD=""
build_wsload() {
    WSLOAD=$TMP/wsload
    cc -O2 -Wall -Wextra -o "$WSLOAD" "$WSLOAD_SRC" >"$TMP/wsload-build.log" 2>&1 ||
        { cat "$TMP/wsload-build.log" >&2; die "compiling bench/wsload.c failed"; }
}
GOWS=""
build_gows() {
    GOWS=$TMP/gows
    log "building bench/gows ($(go version | awk '{print $3}'), GO111MODULE=off, GOPATH=/usr/share/gocode)"
    (cd "$GOWS_SRC" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=$TMP/gocache GOFLAGS='' \
        GOPROXY=off go build -o "$GOWS" .) >"$TMP/gows-build.log" 2>&1 ||
        { cat "$TMP/gows-build.log" >&2; die "building bench/gows failed (missing $GO_WS_PKG ?)"; }
}
# Does SERVER take part in the workload with PATH and EXTRA?
takes_part() {
    case $1 in
    go) [[ $3 == data || $3 == ws ]] ;;
    floor) [[ $2 == /plaintext && ($3 == "" || $3 == close || $3 == idle) ]] ;;
    nginx) [[ $2 != /db && ($2 != /cache || -n $NGX_REDIS_LUADIR) && ($2 != /ws || -n $NGX_WS_LUADIR) ]] ;;
    *) return 0 ;;
    esac
}

# start_server NAME TAG EXTRA -> sets SRV_PID, SRV_PORT, SRV_LOG, SRV_MEAS_CPU (pids
# whose CPU is summed), SRV_MEAS_RSS (pid whose VmHWM is reported); in the TLS workloads
# SRV_TLS_PORT too (HTTPS beside HTTP on SRV_PORT, for both servers)
start_server() {
    local name=$1 tag=$2 extra=${3:-} port dir w i scripts=$SCRIPTS ops=() bin=$TYCHO tport=""
    [[ $extra == proxy ]] && scripts=$PROXY_SCRIPTS
    [[ $extra == data ]] && scripts=$DATA_SCRIPTS
    [[ $extra == gzip ]] && scripts=$GZIP_SCRIPTS
    [[ $extra == ws ]] && scripts=$WS_SCRIPTS
    [[ $extra == gzip && $name != nginx ]] && ops=(--gzip --gzip-level 1 --gzip-min-bytes 1024)
    [[ $name == base ]] && bin=$BASE
    [[ $name == base && -n $BASE_SCRIPTS && $scripts == "$SCRIPTS" ]] && scripts=$BASE_SCRIPTS
    [[ $extra == ops && ($name == tycho || $name == base || $name == tycho2) ]] &&
        ops=(--metrics /metrics --access-log "$TMP/$name-$tag-access.log")
    port=$(free_port) || die "no free port found"
    SRV_PORT=$port
    SRV_TLS_PORT=""
    if is_tls "$extra"; then
        tport=$(free_port) || die "no free port found"
        SRV_TLS_PORT=$tport
        [[ $name != nginx ]] &&
            ops=(--tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key" --tls-port "$tport")
    fi
    case $name in
    tycho | tycho2 | tycho-plain | base)
        SRV_LOG=$TMP/$name-$tag.log
        TYCHO_BENCH_BACKEND=$BACKEND_PORT DATABASE_URL=$DATABASE_URL_BENCH REDIS_URL=$REDIS_URL_BENCH \
            taskset -c 0 "$bin" --workers 1 --port "$port" "${ops[@]}" "$scripts" \
            >"$SRV_LOG" 2>&1 </dev/null &
        SRV_PID=$!
        STARTED_PIDS+=("$SRV_PID")
        wait_ready "$SRV_PID" "$port" "$SRV_LOG" || die "$name ($bin) did not start listening on 127.0.0.1:$port within 10 s"
        for ((i = 0; i < 20; i++)); do
            grep -q "listening on http://127.0.0.1:$port" "$SRV_LOG" && break
            sleep 0.1
        done
        ((i < 20)) || log "WARNING: $name accepts on $port but has not printed its 'listening on' line"
        if [[ -n $tport ]]; then
            wait_ready "$SRV_PID" "$tport" "$SRV_LOG" || die "$name ($bin) did not start listening on 127.0.0.1:$tport (--tls-port) within 10 s"
        fi
        w=$(pgrep -P "$SRV_PID" | tr '\n' ' ')
        [[ -z $w ]] || log "WARNING: $name has child processes ($w); CPU counts them, RSS is the main process only"
        # shellcheck disable=SC2206
        SRV_MEAS_CPU=($SRV_PID $w)
        SRV_MEAS_RSS=$SRV_PID
        ;;
    nginx)
        dir=$TMP/nginx-$tag
        write_nginx_conf "$dir" "$port" "$([[ $extra == ops ]] && echo access)" "$tport"
        SRV_LOG=$dir/logs/error.log
        "$NGINX_BIN" -t -q -p "$dir" -e "$SRV_LOG" -c "$dir/nginx.conf" >"$dir/test.log" 2>&1 ||
            { cat "$dir/test.log" >&2; die "nginx -t rejected $dir/nginx.conf"; }
        taskset -c 0 "$NGINX_BIN" -p "$dir" -e "$SRV_LOG" -c "$dir/nginx.conf" -g 'daemon off;' \
            >"$dir/stdout.log" 2>&1 </dev/null &
        SRV_PID=$!
        STARTED_PIDS+=("$SRV_PID")
        wait_ready "$SRV_PID" "$port" "$SRV_LOG" || die "nginx did not start listening on 127.0.0.1:$port within 10 s"
        if [[ -n $tport ]]; then
            wait_ready "$SRV_PID" "$tport" "$SRV_LOG" || die "nginx did not start listening on 127.0.0.1:$tport (ssl) within 10 s"
        fi
        w=""
        for ((i = 0; i < 50; i++)); do
            w=$(pgrep -P "$SRV_PID" | head -n 1)
            [[ -n $w ]] && break
            sleep 0.1
        done
        [[ -n $w ]] || die "nginx master $SRV_PID has no worker process"
        (($(pgrep -P "$SRV_PID" | wc -l) == 1)) || log "WARNING: nginx master has more than one child"
        NGINX_WORKERS+=("$w")
        SRV_MEAS_CPU=("$SRV_PID" "$w")
        SRV_MEAS_RSS=$w
        ;;
    go)
        SRV_LOG=$TMP/go-$tag.log
        bin=$GOPEER
        [[ $extra == ws ]] && bin=$GOWS
        GOMAXPROCS=1 PORT=$port POOL=16 DATABASE_URL=$DATABASE_URL_BENCH REDIS_URL=$REDIS_URL_BENCH \
            taskset -c 0 "$bin" >"$SRV_LOG" 2>&1 </dev/null &
        SRV_PID=$!
        STARTED_PIDS+=("$SRV_PID")
        wait_ready "$SRV_PID" "$port" "$SRV_LOG" || die "go ($bin) did not start listening on 127.0.0.1:$port within 10 s"
        SRV_MEAS_CPU=("$SRV_PID")
        SRV_MEAS_RSS=$SRV_PID
        ;;
    floor)
        SRV_LOG=$TMP/floor-$tag.log
        taskset -c 0 "$NOTHING" -p "$port" >"$SRV_LOG" 2>&1 </dev/null &
        SRV_PID=$!
        STARTED_PIDS+=("$SRV_PID")
        wait_ready "$SRV_PID" "$port" "$SRV_LOG" ||
            die "floor ($NOTHING) did not start listening on 127.0.0.1:$port within 10 s"
        SRV_MEAS_CPU=("$SRV_PID")
        SRV_MEAS_RSS=$SRV_PID
        ;;
    esac
}

# ---------------------------------------------------------------- workloads
# key | name | connections | path | extra (post = wrk echo.lua, close = Connection: close,
# proxy = bench/proxy/, ops = see ops above, data = bench/data/ with PostgreSQL and Redis,
# gzip = bench/gzip/ with --gzip, Accept-Encoding: gzip, ws = bench/ws/ driven by bench/wsload.c,
# tls = over HTTPS (the TLS port), tlsclose = over HTTPS with Connection: close)
ALL_WORKLOADS=(
    "plaintext|plaintext|64|/plaintext|"
    "json|json|64|/json|"
    "users|users/:id|64|/users/7|"
    "echo|echo 1KiB POST|64|/echo|post"
    "c1000|plaintext 1000c|1000|/plaintext|"
    "close|plaintext conn-close|16|/plaintext|close"
    "idle|idle keep-alive|1000|/plaintext|idle"
    "proxy|proxy (pooled)|64|/proxy|proxy"
    "ops|plaintext +log+metrics|64|/plaintext|ops"
    "jsongz|json 3.5KiB gzip|64|/users.json|gzip"
    "pgquery|pgquery (PG 1 row)|64|/db|data"
    "redisget|redisget (Redis GET)|64|/cache|data"
    "wsecho|wsecho 64B 1000c|1000|/ws|ws"
    "tlsplain|plaintext TLS|64|/plaintext|tls"
    "tlsclose|TLS conn-close|16|/plaintext|tlsclose"
)
WORKLOADS=()
for k in $BENCH_WORKLOADS; do
    found=0
    for wl in "${ALL_WORKLOADS[@]}"; do
        [[ ${wl%%|*} == "$k" ]] && { WORKLOADS+=("${wl#*|}"); found=1; }
    done
    ((found)) || die "BENCH_WORKLOADS: unknown workload '$k' (known: $KNOWN_WORKLOADS)"
done
((${#WORKLOADS[@]} > 0)) || die "BENCH_WORKLOADS is empty"
ECHO_BODY=$TMP/echo-body.bin
printf '0123456789abcdef%.0s' {1..64} >"$ECHO_BODY"
(($(wc -c <"$ECHO_BODY") == 1024)) || die "echo body is not 1024 bytes"

# check_answer SERVER PORT PATH EXTRA: status 200 + expected body, else abort
check_answer() {
    local srv=$1 port=$2 path=$3 extra=$4 out=$TMP/check.body hdr=$TMP/check.hdr
    local args=(-sS --max-time 5 -o "$out" -D "$hdr" -w '%{http_code}')
    local code ok=0 norm ctype id="" rn="" url="http://127.0.0.1:$port$path"
    if [[ $extra == ws ]]; then
        check_ws "$srv" "$port" "$path"
        return
    fi
    case $extra in
    post)  args+=(-X POST -H 'Content-Type: application/octet-stream' --data-binary "@$ECHO_BODY") ;;
    close) args+=(-H 'Connection: close') ;;
    gzip)  args+=(--compressed) ;;
    tlsclose) args+=(-H 'Connection: close') ;;
    esac
    # over TLS, the certificate is verified against mkcerts.sh's CA (and 127.0.0.1)
    is_tls "$extra" && { args+=(--cacert "$TLS_DIR/ca.pem"); url="https://127.0.0.1:$port$path"; }
    code=$(curl "${args[@]}" "$url" 2>"$TMP/check.err") ||
        { cat "$TMP/check.err" >&2; die "$srv: curl $path failed"; }
    norm=$(tr -d ' \t\r\n' <"$out")
    case $path in
    /plaintext|/proxy) [[ $(cat "$out") == "Hello, World!" ]] && ok=1 ;;
    /json)      [[ $norm == '{"message":"Hello,World!"}' ]] && ok=1 ;;
    /users/7)   [[ $norm == *'"id":"7"'* || $norm == *'"id":7,'* || $norm == *'"id":7}'* ]] && ok=1 ;;
    /echo)      cmp -s "$out" "$ECHO_BODY" && ok=1 ;;
    /users.json) # decompressed by curl; it must have come compressed
        [[ $norm == *'"email":"user50@example.com"'* ]] &&
            grep -qi '^content-encoding: *gzip' "$hdr" && ok=1 ;;
    /cache)     [[ $(cat "$out") == "$CACHE_VALUE" ]] && ok=1 ;;
    /db)        # exactly {"id":N,"randomNumber":M} (either order), and M is id N's in the table
        if [[ $norm =~ ^\{\"id\":([0-9]+),\"randomNumber\":([0-9]+)\}$ ]]; then
            id=${BASH_REMATCH[1]}; rn=${BASH_REMATCH[2]}
        elif [[ $norm =~ ^\{\"randomNumber\":([0-9]+),\"id\":([0-9]+)\}$ ]]; then
            rn=${BASH_REMATCH[1]}; id=${BASH_REMATCH[2]}
        fi
        if [[ -n $id ]] && ((id >= 1 && id <= 10000)) &&
            [[ $(pg_sql bench bench -c "SELECT randomnumber FROM world WHERE id = $id") == "$rn" ]]; then
            ok=1
        fi
        ;;
    esac
    if [[ $code != 200 || $ok != 1 ]]; then
        echo "bench: ERROR: $srv answered ${extra:+$extra }$path wrongly: HTTP $code" >&2
        echo "---- headers" >&2; cat "$hdr" >&2
        echo "---- body (first 300 bytes)" >&2; head -c 300 "$out" >&2; echo >&2
        exit 1
    fi
    ctype=$(awk -F': *' 'tolower($1) == "content-type" {sub(/\r$/, "", $2); print $2}' "$hdr")
    CHECK_CTYPE=$ctype
    CHECK_BODY=$(head -c 60 "$out")
}

# check_ws SERVER PORT PATH: 4 connections, 200 echoes at most, every one matched, else abort
check_ws() {
    local out=$TMP/check.ws
    if ! timeout -k 5 40 "$WSLOAD" -p "$2" -u "$3" -c 4 -d 2 -n 200 -s 64 >"$out" 2>&1 ||
        ! grep -q '^wsload messages [1-9][0-9]* .* mismatches 0 errors 0 conns 4$' "$out"; then
        echo "bench: ERROR: $1 answered the WebSocket echo on $3 wrongly:" >&2
        cat "$out" >&2
        exit 1
    fi
    CHECK_CTYPE=""
    CHECK_BODY="$(awk '{print $3}' "$out") echoes matched on 4 connections"
}

# wsload_parse FILE -> as wrk_parse: "rate p99_ms messages mismatches errors desc"
wsload_parse() {
    awk '$1 == "wsload" {
            for (i = 2; i < NF; i += 2) v[$i] = $(i + 1)
            printf "%s %s %s %d %d mismatches_%d_errors_%d_conns_%d\n", v["rate"], v["p99_ms"],
                v["messages"], v["mismatches"], v["errors"], v["mismatches"], v["errors"], v["conns"]
            found = 1
         }
         END { if (!found) print "FAIL" }' "$1"
}

# wrk_parse FILE -> "rps p99_ms requests non2xx sockerr_total sockerr_desc"
wrk_parse() {
    awk '
    function ms(v,   n, u) {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") return n / 1000
        if (u == "ms") return n
        if (u == "s")  return n * 1000
        if (u == "m")  return n * 60000
        if (u == "h")  return n * 3600000
        return -1
    }
    / requests in /              { reqs = $1 }
    /^Requests\/sec:/            { rps = $2 }
    /^[ \t]+99%/                 { p99 = ms($2) }
    /Non-2xx or 3xx responses:/  { non2xx = $NF }
    /Socket errors:/ {
        gsub(",", ""); se = $4 + $6 + $8 + $10
        sd = "connect " $4 " read " $6 " write " $8 " timeout " $10
    }
    END {
        if (reqs == "" || rps == "") { print "FAIL"; exit }
        if (p99 == "") p99 = -1
        printf "%s %s %s %d %d %s\n", rps, p99, reqs, non2xx, se, (sd == "" ? "-" : sd)
    }' "$1"
}

# run_wrk SERVER PORT CONNS PATH EXTRA SECONDS OUTFILE; returns wrk status
run_wrk() {
    local port=$2 conns=$3 path=$4 extra=$5 secs=$6 out=$7
    local args=(-t1 "-c$conns" "-d${secs}s" --latency)
    if [[ $extra == ws ]]; then   # wsload instead of wrk; its own alarm is at secs + 30
        timeout -k 5 $((secs + 40)) taskset -c 1 "$WSLOAD" -p "$port" -u "$path" -c "$conns" \
            -d "$secs" -n $((secs * 1000000)) -s 64 >"$out" 2>&1
        return
    fi
    case $extra in
    post)  args+=(-s "$ECHO_LUA") ;;
    close) args+=(-H 'Connection: close') ;;
    gzip)  args+=(-H 'Accept-Encoding: gzip') ;;
    tlsclose) args+=(-H 'Connection: close') ;;
    esac
    local scheme=http
    is_tls "$extra" && scheme=https
    timeout -k 5 $((secs + 30)) taskset -c 1 wrk "${args[@]}" "$scheme://127.0.0.1:$port$path" >"$out" 2>&1
}

# R_*: per "server,workload", the medians over rounds (R_CPUMIN: the least CPU us/req of
# any round; R_N: rounds measured)
declare -A R_RPS R_P99 R_CPU R_CPUMIN R_N R_RSS R_ERR R_NOTE
declare -A SKIPPED   # "server,workload" -> 1: the server does not take part (n/a in the table)
# every measured round's req/s and CPU us/req, space-separated, per "server,workload"
# (the before/after lines take medians of them)
declare -A ROUNDS_RPS ROUNDS_CPU ROUNDS_P99
# the data workloads: PostgreSQL's or Redis' CPU us/req in each round, per "server,workload"
declare -A ROUNDS_DSCPU
# the TLS workloads: what each server negotiated (tls_probe), per "server,workload"
declare -A TLS_INFO
median() {   # VALUES... -> "median count" (2 decimals; "-" values skipped; "- 0" if none)
    printf '%s\n' "$@" | awk '$1 != "" && $1 != "-"' | sort -g |
        awk '{ v[NR] = $1 }
             END { if (NR == 0) { print "- 0"; exit }
                   m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                   printf "%.2f %d\n", m, NR }'
}
minimum() {   # VALUES... -> the least (2 decimals; "-" values skipped; "-" if none)
    printf '%s\n' "$@" | awk '$1 != "" && $1 != "-"' | sort -g |
        awk 'NR == 1 { printf "%.2f\n", $1; found = 1 } END { if (!found) print "-" }'
}
fmt_kb() { awk -v k="$1" 'BEGIN { if (k == "" || k < 0) print "-"; else printf "%.1f MiB", k / 1024 }'; }

# Is anything else using the CPUs? (1 s sample of /proc/stat)
busy_pct() {
    local a b
    read -r -a a < <(grep '^cpu ' /proc/stat)
    sleep 1
    read -r -a b < <(grep '^cpu ' /proc/stat)
    awk -v u=$((b[1] + b[2] + b[3] + b[6] + b[7] + b[8] - a[1] - a[2] - a[3] - a[6] - a[7] - a[8])) \
        -v t=$((b[1] + b[2] + b[3] + b[4] + b[5] + b[6] + b[7] + b[8] - a[1] - a[2] - a[3] - a[4] - a[5] - a[6] - a[7] - a[8])) \
        'BEGIN { if (t > 0) printf "%.0f", 100 * u / t; else print 0 }'
}
check_idle() {
    local b
    b=$(busy_pct)
    if ((b > 10)); then
        log "WARNING: the CPUs were ${b}% busy before $1 with no benchmark running: other work is competing, numbers will be noisy"
        IDLE_WARNINGS=$((IDLE_WARNINGS + 1))
    fi
}
IDLE_WARNINGS=0

AA_NOTE=""
((BENCH_AA)) && has_server tycho && AA_NOTE=" + tycho2 (A/A)"
log "servers: ${SERVERS[*]}$AA_NOTE; 2 passes x ${BENCH_ROUNDS} round(s) x ${BENCH_SECONDS}s" \
    "+ ${BENCH_WARMUP}s warm-up per server per workload; server on CPU 0, wrk -t1 on CPU 1;" \
    "tmp $TMP"
[[ -n $TYCHO ]] && log "tycho: $TYCHO $SCRIPTS"
[[ -n $AA_NOTE ]] && log "tycho2 (A/A, BENCH_AA=1): a second instance of $TYCHO, run as tycho"
if [[ -n $BASE ]]; then
    log "base (BENCH_BASELINE, in every workload): $BASE ${BASE_SCRIPTS:-$SCRIPTS}"
    [[ $BASE -ef $TYCHO ]] && log "base is the same binary as tycho: an A/A run, its before/after lines show the machine's noise"
fi
has_server nginx && log "nginx: $("$NGINX_BIN" -v 2>&1)"

for wl in "${WORKLOADS[@]}"; do
    [[ ${wl##*|} == proxy ]] && start_backend
done
if ((TLS)); then
    make_certs
fi
((TLS || IDLE)) && build_idleconns
((FLOOR)) && build_nothing
if ((WS)); then
    build_wsload
    has_server go && build_gows
    has_server nginx && fetch_ngx_ws
fi
if ((DATA)); then
    has_server go && build_gopeer
    has_server nginx && has_workload redisget && fetch_ngx_redis
    start_postgres
    start_redis
fi
wi=0
for wl in "${WORKLOADS[@]}"; do
    IFS='|' read -r wname conns path extra <<<"$wl"
    wi=$((wi + 1))
    log "=== workload $wi/${#WORKLOADS[@]}: $wname ($conns connections, ${extra:+$extra }$path)"
    check_idle "workload $wname"
    # ops: a plain tycho too, its rounds interleaved with the others', so that the cost of
    # --metrics and --access-log is measured under the same conditions.
    # BENCH_BASELINE: base right after tycho in every workload, for the same reason.
    # go: only in the data workloads; nginx: not in pgquery (see the top)
    # BENCH_AA: tycho2, a second instance of tycho's binary, right after tycho (the A/A pair)
    WL_SERVERS=()
    for s in "${SERVERS[@]}"; do
        if ! takes_part "$s" "$path" "$extra"; then SKIPPED[$s,$wname]=1; continue; fi
        WL_SERVERS+=("$s")
        if [[ $s == tycho ]] && ((BENCH_AA)) && [[ $extra != idle ]]; then WL_SERVERS+=(tycho2); fi
        if [[ $s == tycho && -n $BASE ]]; then WL_SERVERS+=(base); fi
    done
    [[ $extra == ops ]] && has_server tycho && WL_SERVERS+=(tycho-plain)
    # idle: memory per idle keep-alive connection, nothing else (no rounds)
    if [[ $extra == idle ]]; then
        for s in "${WL_SERVERS[@]}"; do
            start_server "$s" "w${wi}" "$extra"
            check_answer "$s" "$SRV_PORT" "$path" "$extra"
            idle_ka "$s" "$SRV_PORT" "$SRV_MEAS_RSS" ||
                log "WARNING: $s: no idle-connection measure"
            stop_pid "$SRV_PID"; forget_pid "$SRV_PID"
        done
        continue
    fi
    # tlsplain: memory per idle connection, on fresh servers of their own (so that neither
    # the measured rounds' peak RSS nor their heap is touched by it)
    if [[ $extra == tls ]]; then
        for s in "${WL_SERVERS[@]}"; do
            [[ $s == tycho2 ]] && continue
            start_server "$s" "w${wi}idle" "$extra"
            idle_measure "$s" "$SRV_PORT" "$SRV_TLS_PORT" "$SRV_MEAS_RSS" ||
                log "WARNING: $s: no idle-connection measure"
            stop_pid "$SRV_PID"; forget_pid "$SRV_PID"
        done
    fi
    declare -A PID PORT MEAS_RSS LOGF
    declare -A MEAS_CPU
    declare -A CTYPE
    for s in "${WL_SERVERS[@]}"; do
        start_server "$s" "w$wi" "$extra"
        PID[$s]=$SRV_PID; PORT[$s]=$SRV_PORT; MEAS_RSS[$s]=$SRV_MEAS_RSS; LOGF[$s]=$SRV_LOG
        # the TLS workloads are run against the HTTPS port
        is_tls "$extra" && PORT[$s]=$SRV_TLS_PORT
        MEAS_CPU[$s]="${SRV_MEAS_CPU[*]}"
        check_answer "$s" "${PORT[$s]}" "$path" "$extra"
        CTYPE[$s]=$CHECK_CTYPE
        if is_tls "$extra"; then
            TLS_INFO[$s,$wname]=$(tls_probe "${PORT[$s]}")
            log "$s TLS: ${TLS_INFO[$s,$wname]}"
        fi
        log "$s pid $SRV_PID (measured: cpu ${SRV_MEAS_CPU[*]}, rss $SRV_MEAS_RSS) port $SRV_PORT: $([[ $extra == ws ]] && echo '101, echoes' || echo '200 OK'), Content-Type '$CHECK_CTYPE', body '$CHECK_BODY'"
        R_RPS[$s,$wname]=""; R_P99[$s,$wname]=""; R_CPU[$s,$wname]=""; R_RSS[$s,$wname]=""
        R_CPUMIN[$s,$wname]=""; R_N[$s,$wname]=0
        R_ERR[$s,$wname]=0; R_NOTE[$s,$wname]=""
        ROUNDS_RPS[$s,$wname]=""; ROUNDS_CPU[$s,$wname]=""; ROUNDS_P99[$s,$wname]=""
    done
    for s in nginx go; do
        if [[ -n ${CTYPE[tycho]+x} && -n ${CTYPE[$s]+x} && ${CTYPE[tycho]} != "${CTYPE[$s]}" ]]; then
            log "WARNING: Content-Type differs: tycho '${CTYPE[tycho]}' vs $s '${CTYPE[$s]}'"
        fi
    done
    # the data workloads: the CPU that PostgreSQL or Redis spends per request, on CPU 1
    DS_PID=""; DS_NAME=""
    case $path in
    /db)    DS_PID=$PG_PID; DS_NAME=postgres ;;
    /cache) DS_PID=$REDIS_PID; DS_NAME=redis ;;
    esac
    if ((BENCH_WARMUP > 0)); then
        for s in "${WL_SERVERS[@]}"; do
            run_wrk "$s" "${PORT[$s]}" "$conns" "$path" "$extra" "$BENCH_WARMUP" "$TMP/warm.out" ||
                log "WARNING: $s warm-up: wrk exited non-zero"
        done
    fi
    for ((r = 1; r <= TOTAL_ROUNDS; r++)); do
        # pass 1 (rounds 1..BENCH_ROUNDS): odd rounds in the order above, even rounds in
        # reverse; pass 2 (the next BENCH_ROUNDS): swapped, odd rounds in reverse, even
        # rounds in the order above. Every pair runs as many rounds in one order as in the
        # other, and no server always goes first or always runs right after the same one.
        pass=$(((r - 1) / BENCH_ROUNDS + 1)); pr=$(((r - 1) % BENCH_ROUNDS + 1))
        ORDER=("${WL_SERVERS[@]}")
        if (((pr % 2 == 0) != (pass == 2))); then
            ORDER=()
            for ((i = ${#WL_SERVERS[@]} - 1; i >= 0; i--)); do ORDER+=("${WL_SERVERS[i]}"); done
        fi
        for s in "${ORDER[@]}"; do
            [[ -n ${R_NOTE[$s,$wname]} ]] && continue   # died earlier
            out=$TMP/wrk-$s-w$wi-r$r.out
            [[ -n $DS_PID ]] && d0=$(tree_ticks "$DS_PID")
            # shellcheck disable=SC2086
            c0=$(cpu_ticks ${MEAS_CPU[$s]})
            run_wrk "$s" "${PORT[$s]}" "$conns" "$path" "$extra" "$BENCH_SECONDS" "$out"
            wrc=$?
            # shellcheck disable=SC2086
            c1=$(cpu_ticks ${MEAS_CPU[$s]})
            [[ -n $DS_PID ]] && d1=$(tree_ticks "$DS_PID")
            alive=1
            for p in ${MEAS_CPU[$s]}; do is_alive "$p" || alive=0; done
            if ((alive == 0)); then
                log "ERROR: $s died during $wname round $r; log tail:"
                tail -n 20 "${LOGF[$s]}" >&2
                R_NOTE[$s,$wname]="DIED"; STATUS=1
                continue
            fi
            if [[ $extra == ws ]]; then
                read -r rps p99 reqs non2xx serr sdesc <<<"$(wsload_parse "$out")"
            else
                read -r rps p99 reqs non2xx serr sdesc <<<"$(wrk_parse "$out")"
            fi
            if [[ $rps == FAIL || $wrc != 0 ]]; then
                # wsload exits 1 on any echo that differs, a failed connection or handshake
                log "ERROR: $s $wname round $r: $([[ $extra == ws ]] && echo wsload || echo wrk) failed (exit $wrc):"
                cat "$out" >&2
                R_NOTE[$s,$wname]=$([[ $extra == ws ]] && echo WSFAIL || echo WRKFAIL); STATUS=1
                continue
            fi
            cpu_us=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$reqs" \
                'BEGIN { if (n > 0) printf "%.2f", d / hz * 1e6 / n; else print "-" }')
            R_ERR[$s,$wname]=$((R_ERR[$s,$wname] + non2xx + serr))
            ROUNDS_RPS[$s,$wname]+="$rps "; ROUNDS_CPU[$s,$wname]+="$cpu_us "
            ds_note=""
            if [[ -n $DS_PID ]]; then
                ds_us=$(awk -v d=$((d1 - d0)) -v hz="$CLK_TCK" -v n="$reqs" \
                    'BEGIN { if (n > 0) printf "%.2f", d / hz * 1e6 / n; else print "-" }')
                ROUNDS_DSCPU[$s,$wname]+="$ds_us "
                ds_note="  $DS_NAME cpu $ds_us us/req"
            fi
            [[ $p99 == -1 ]] || ROUNDS_P99[$s,$wname]+="$p99 "
            log "$(printf '%-6s pass %d round %d: %10.0f req/s  p99 %8.2f ms  %9d reqs' \
                "$s" "$pass" "$pr" "$rps" "$p99" "$reqs")" \
                "$(printf ' cpu %6s us/req' "$cpu_us")" \
                "$(printf ' non-2xx %d  socket errors: %s%s' "$non2xx" "$sdesc" "$ds_note")"
        done
    done
    for s in "${WL_SERVERS[@]}"; do
        # the tables' numbers: medians over every round of both passes, and the least CPU
        # per request of any round
        # shellcheck disable=SC2086
        read -r m n <<<"$(median ${ROUNDS_RPS[$s,$wname]})"
        if ((n > 0)); then
            R_RPS[$s,$wname]=$m; R_N[$s,$wname]=$n
            # shellcheck disable=SC2086
            read -r m _ <<<"$(median ${ROUNDS_P99[$s,$wname]})"
            R_P99[$s,$wname]=$m
            # shellcheck disable=SC2086
            read -r m _ <<<"$(median ${ROUNDS_CPU[$s,$wname]})"
            R_CPU[$s,$wname]=$m
            # shellcheck disable=SC2086
            R_CPUMIN[$s,$wname]=$(minimum ${ROUNDS_CPU[$s,$wname]})
        fi
        if is_alive "${MEAS_RSS[$s]}"; then
            R_RSS[$s,$wname]=$(vm_hwm_kb "${MEAS_RSS[$s]}")
        fi
        if [[ $s == nginx ]] && grep -qE '\[(alert|crit|emerg)\]' "${LOGF[$s]}" 2>/dev/null; then
            log "WARNING: nginx error log has alerts:"; grep -E '\[(alert|crit|emerg)\]' "${LOGF[$s]}" | tail -n 5 >&2
        fi
        if [[ $s == tycho || $s == base || $s == tycho-plain ]] && grep -qiE '\[(warn|warning|error|fatal)\]' "${LOGF[$s]}" 2>/dev/null; then
            log "WARNING: $s logged warnings/errors ($(grep -ciE '\[(warn|warning|error|fatal)\]' "${LOGF[$s]}") lines), last ones:"
            grep -iE '\[(warn|warning|error|fatal)\]' "${LOGF[$s]}" | tail -n 5 >&2
        fi
        stop_pid "${PID[$s]}"
        forget_pid "${PID[$s]}"
    done
    unset PID PORT MEAS_RSS LOGF MEAS_CPU CTYPE
done

# ---------------------------------------------------------------- table
cell() {   # server workload kind
    local s=$1 w=$2 k=$3
    has_server "$s" || { echo "n/a"; return; }
    [[ -n ${SKIPPED[$s,$w]:-} ]] && { echo "n/a"; return; }
    [[ -n ${R_NOTE[$s,$w]} && -z ${R_RPS[$s,$w]} ]] && { echo "${R_NOTE[$s,$w]}"; return; }
    case $k in
    rps) awk -v v="${R_RPS[$s,$w]}" 'BEGIN { if (v == "") print "-"; else printf "%.0f", v }' ;;
    p99) awk -v v="${R_P99[$s,$w]}" \
        'BEGIN { if (v == "" || v == "-") print "-"; else printf "%.2f ms", v }' ;;
    rss) fmt_kb "${R_RSS[$s,$w]}" ;;
    cpu) echo "${R_CPU[$s,$w]:--}" ;;
    cpumin) echo "${R_CPUMIN[$s,$w]:--}" ;;
    esac
}
ratio() {   # a/b with 2 decimals, '-' if either missing
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}
pct() {   # a against b in % ("+4.1 %": a is 4.1 % more than b), '-' if either missing
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) print "-"
        else printf "%+.1f %%", (a / b - 1) * 100 }'
}

row() {
    printf '| %-20s | %11s | %11s | %5s | %9s | %9s | %9s | %9s | %7s | %7s | %7s | %7s | %7s |\n' \
        "$@"
}
peer_table() {   # PEER SHORT TITLE WORKLOAD_NAMES...: tycho vs PEER, a row per workload
    local p=$1 short=$2 title=$3 wname
    shift 3
    echo
    echo "$title"
    echo "req/s, p99 and CPU us/req (med) are MEDIANS over the rounds of both passes, CPU min" \
        "the least of any round; ratio = tycho/$p req/s (>1: Tycho faster); CPU ratio =" \
        "tycho/$p median CPU us/req (<1: Tycho cheaper); RSS = peak (VmHWM) over the workload"
    row workload "tycho req/s" "$p req/s" ratio "tycho p99" "$p p99" "tycho RSS" "$p RSS" \
        "tycho" "tycho" "$short" "$short" "CPU"
    row "" "" "" "" "" "" "" "" "CPU med" "CPU min" "CPU med" "CPU min" "tyc/$short"
    printf '|%s%s|\n' "----------------------+-------------+-------------+-------+-----------+" \
        "-----------+-----------+-----------+---------+---------+---------+---------+---------"
    for wname in "$@"; do
        row "$wname" \
            "$(cell tycho "$wname" rps)" "$(cell "$p" "$wname" rps)" \
            "$(ratio "${R_RPS[tycho,$wname]:-}" "${R_RPS[$p,$wname]:-}")" \
            "$(cell tycho "$wname" p99)" "$(cell "$p" "$wname" p99)" \
            "$(cell tycho "$wname" rss)" "$(cell "$p" "$wname" rss)" \
            "$(cell tycho "$wname" cpu)" "$(cell tycho "$wname" cpumin)" \
            "$(cell "$p" "$wname" cpu)" "$(cell "$p" "$wname" cpumin)" \
            "$(ratio "${R_CPU[tycho,$wname]:-}" "${R_CPU[$p,$wname]:-}")"
    done
}
ALL_NAMES=(); GO_NAMES=(); FLOOR_NAMES=()
for wl in "${WORKLOADS[@]}"; do
    IFS='|' read -r wname _ _ extra <<<"$wl"
    [[ $extra == idle ]] && continue   # no rounds: a line under the tables
    ALL_NAMES+=("$wname")
    has_server go && [[ -z ${SKIPPED[go,$wname]:-} ]] && GO_NAMES+=("$wname")
    has_server floor && [[ -z ${SKIPPED[floor,$wname]:-} ]] && FLOOR_NAMES+=("$wname")
done
ROUNDS_DESC="2 passes x $BENCH_ROUNDS rounds x ${BENCH_SECONDS}s"
ROUNDS_DESC+=" ($TOTAL_ROUNDS rounds per server, interleaved)"
if ((${#ALL_NAMES[@]} > 0)); then
    peer_table nginx ngx "Tycho vs nginx+Lua: 1 worker each (server on CPU 0, wrk -t1 on CPU 1), \
$ROUNDS_DESC" "${ALL_NAMES[@]}"
fi
if ((${#GO_NAMES[@]} > 0)); then
    peer_table go go "Tycho vs Go (bench/gopeer: fasthttp, pgx v4 pgxpool, redigo, pools of 16; \
bench/gows: gorilla/websocket; GOMAXPROCS=1), both on CPU 0 (wrk or wsload, PostgreSQL, Redis on \
CPU 1), $ROUNDS_DESC" "${GO_NAMES[@]}"
fi
if ((${#FLOOR_NAMES[@]} > 0)); then
    peer_table floor flr "Tycho vs the floor (bench/nothing.c: one thread, epoll, the same answer \
bytes, nothing else done), both on CPU 0, $ROUNDS_DESC" "${FLOOR_NAMES[@]}"
fi
echo
# A/A: tycho against tycho2, a second instance of the same binary run the same way, its
# rounds interleaved with the others': the differences are this run's noise
AA_MAX=""; AA_MAX_WL=""
if ((BENCH_AA)) && has_server tycho; then
    for wname in "${ALL_NAMES[@]}"; do
        if [[ -z ${R_CPU[tycho,$wname]:-} || -z ${R_CPU[tycho2,$wname]:-} ]]; then
            echo "A/A $wname: n/a" \
                "(tycho ${R_NOTE[tycho,$wname]:-${R_N[tycho,$wname]:-0} rounds}," \
                "tycho2 ${R_NOTE[tycho2,$wname]:-${R_N[tycho2,$wname]:-0} rounds})"
            continue
        fi
        t=${R_CPU[tycho,$wname]}; t2=${R_CPU[tycho2,$wname]}
        tm=${R_CPUMIN[tycho,$wname]}; t2m=${R_CPUMIN[tycho2,$wname]}
        tr=${R_RPS[tycho,$wname]}; t2r=${R_RPS[tycho2,$wname]}
        echo "A/A $wname (tycho vs tycho2, same binary, ${R_N[tycho,$wname]} rounds each):" \
            "CPU us/req median $t vs $t2 ($(pct "$t2" "$t"))," \
            "min $tm vs $t2m ($(pct "$t2m" "$tm"));" \
            "req/s median $(printf '%.0f' "$tr") vs $(printf '%.0f' "$t2r") ($(pct "$t2r" "$tr"))"
        aad=$(awk -v a="$t2" -v b="$t" 'BEGIN {
            if (b + 0 == 0) print ""
            else { d = (a / b - 1) * 100; printf "%.1f", d < 0 ? -d : d } }')
        if [[ -n $aad ]] &&
            { [[ -z $AA_MAX ]] || awk -v a="$aad" -v m="$AA_MAX" 'BEGIN { exit !(a > m) }'; }; then
            AA_MAX=$aad; AA_MAX_WL=$wname
        fi
    done
else
    echo "A/A: off (BENCH_AA=$BENCH_AA$(has_server tycho || echo ', no tycho')):" \
        "this run's noise is not shown"
fi
# CPU us/req per server: the median and the least over every round
for wl in "${WORKLOADS[@]}"; do
    IFS='|' read -r wname _ _ _ <<<"$wl"
    line=""
    for s in tycho tycho2 base tycho-plain nginx go floor; do
        [[ -n ${R_CPU[$s,$wname]:-} ]] || continue
        line+=" $s ${R_CPU[$s,$wname]} (${R_CPUMIN[$s,$wname]}, ${R_N[$s,$wname]})"
    done
    [[ -n $line ]] && echo "CPU us/req in $wname, median (min, rounds):$line"
done
# wsecho's columns mean messages, not requests
for wl in "${WORKLOADS[@]}"; do
    IFS='|' read -r wname conns _ extra <<<"$wl"
    [[ $extra == ws ]] || continue
    echo "$wname: $conns WebSocket connections, 64-byte text messages ping-ponged by bench/wsload.c (every echo compared): req/s = echoed messages/s, p99 = one message's round trip, CPU us/req = server CPU per echoed message"
done
# The TLS workloads: what each server negotiated, and a warning when one resumes sessions
# and the other does not (tlsclose would then compare full handshakes with resumed ones)
for wl in "${WORKLOADS[@]}"; do
    IFS='|' read -r wname _ _ extra <<<"$wl"
    is_tls "$extra" || continue
    line=""; resumes=""
    for s in tycho base nginx; do
        [[ -n ${TLS_INFO[$s,$wname]:-} ]] || continue
        line+="${line:+ | }$s: ${TLS_INFO[$s,$wname]}"
        resumes+=" $(grep -o 'resumed [0-9?]*/19' <<<"${TLS_INFO[$s,$wname]}" | tr -d ' ')"
    done
    [[ -n $line ]] && echo "TLS in $wname (openssl s_client; wrk-style reconnects: bench/idleconns -r, 20 connections in a row as wrk makes them, the first full): $line"
    # shellcheck disable=SC2086
    [[ $extra == tlsclose ]] && (($(printf '%s\n' $resumes | sort -u | wc -l) > 1)) &&
        echo "WARNING: in $wname the servers resume TLS sessions differently when reconnected to as wrk does: one makes more full handshakes than the other"
done
# idle: the memory of an idle keep-alive connection
line=""
for s in tycho base nginx floor; do
    [[ -n ${IDLE_KA[$s]:-} ]] && line+="${line:+, }$s ${IDLE_KA[$s]} B"
done
[[ -n $line ]] && echo "Memory per idle keep-alive connection (idle: $IDLE_CONNS held open at" \
    "once, each after one GET /plaintext; server VmRSS growth / $IDLE_CONNS, fresh servers" \
    "after ${IDLE_WARMUP_S} s of wrk on one connection): $line"
# tlsplain: the memory of an idle keep-alive connection, plain and TLS
line=""
for s in tycho base nginx; do
    [[ -n ${IDLE_PLAIN[$s]:-} ]] || continue
    line+="${line:+; }$s plain ${IDLE_PLAIN[$s]} B, TLS ${IDLE_TLS[$s]:-?} B"
done
[[ -n $line ]] && echo "Memory per idle keep-alive connection in tlsplain ($IDLE_CONNS plain then" \
    "$IDLE_CONNS TLS held open at once, each after one request; server VmRSS growth /" \
    "$IDLE_CONNS, fresh servers): $line"
# The data workloads: what PostgreSQL or Redis spent per request (on CPU 1, in no table)
for wl in "${WORKLOADS[@]}"; do
    IFS='|' read -r wname _ path extra <<<"$wl"
    [[ $extra == data ]] || continue
    line=""
    for s in tycho nginx go; do
        [[ -n ${ROUNDS_DSCPU[$s,$wname]:-} ]] || continue
        # shellcheck disable=SC2086
        read -r m n <<<"$(median ${ROUNDS_DSCPU[$s,$wname]})"
        line+=" $s $m"
    done
    [[ -n $line ]] && echo "$([[ $path == /db ]] && echo PostgreSQL || echo Redis) CPU us/req in $wname (median over rounds, on CPU 1 with wrk, not in the tables):$line"
done
# Before/after (BENCH_BASELINE): tycho against base, rounds interleaved in every workload;
# req/s and CPU us/req as MEDIANS over rounds, and the least CPU us/req of any round.
if [[ -n $BASE ]]; then
    echo "before/after: tycho = $TYCHO, base = $BASE (BENCH_BASELINE), rounds interleaved;" \
        "req/s and CPU us/req = medians over rounds, min = least CPU us/req of any round;" \
        "% = tycho vs base (+: tycho costs more per request)"
    for wname in "${ALL_NAMES[@]}"; do
        if [[ -z ${R_CPU[tycho,$wname]:-} || -z ${R_CPU[base,$wname]:-} ]]; then
            echo "before/after $wname: n/a" \
                "(tycho ${R_NOTE[tycho,$wname]:-${R_N[tycho,$wname]:-0} round(s)}," \
                "base ${R_NOTE[base,$wname]:-${R_N[base,$wname]:-0} round(s)})"
            continue
        fi
        t=${R_CPU[tycho,$wname]}; b=${R_CPU[base,$wname]}
        tm=${R_CPUMIN[tycho,$wname]}; bm=${R_CPUMIN[base,$wname]}
        tn=${R_N[tycho,$wname]}; bn=${R_N[base,$wname]}
        rounds="$tn rounds each"
        ((tn == bn)) || rounds="$tn rounds (tycho) and $bn (base)"
        echo "before/after $wname:" \
            "tycho/base req/s $(ratio "${R_RPS[tycho,$wname]}" "${R_RPS[base,$wname]}")," \
            "CPU us/req median base $b tycho $t -> $(pct "$t" "$b")," \
            "min base $bm tycho $tm -> $(pct "$tm" "$bm") ($rounds)"
    done
    [[ -n ${IDLE_KA[base]:-} && -n ${IDLE_KA[tycho]:-} ]] &&
        echo "before/after idle: bytes per idle keep-alive connection" \
            "base ${IDLE_KA[base]} tycho ${IDLE_KA[tycho]}"
fi
echo
any=0
# every server measured, the table's and the extra ones (base, tycho-plain in ops)
ALL_MEASURED=("${SERVERS[@]}")
[[ -n $BASE ]] && ALL_MEASURED+=(base)
has_server tycho && ALL_MEASURED+=(tycho-plain)
((BENCH_AA)) && has_server tycho && ALL_MEASURED+=(tycho2)
for wl in "${WORKLOADS[@]}"; do
    IFS='|' read -r wname _ _ _ <<<"$wl"
    for s in "${ALL_MEASURED[@]}"; do
        if ((${R_ERR[$s,$wname]:-0} > 0)); then
            echo "wrk errors: $s $wname: ${R_ERR[$s,$wname]} non-2xx + socket errors" \
                "over $TOTAL_ROUNDS round(s) (details above on stderr)"
            any=1
        fi
        if [[ -n ${R_NOTE[$s,$wname]:-} ]]; then
            echo "FAILED: $s $wname: ${R_NOTE[$s,$wname]}"
        fi
    done
done
# What --metrics and --access-log cost Tycho: plaintext with both on against a plain tycho
# whose rounds were interleaved with it in the same workload.
ops_rps=${R_RPS[tycho,plaintext +log+metrics]:-}
plain=${R_RPS[tycho-plain,plaintext +log+metrics]:-}
if [[ -n $ops_rps && -n $plain ]]; then
    oc=${R_CPU[tycho,plaintext +log+metrics]}; pc=${R_CPU[tycho-plain,plaintext +log+metrics]}
    echo "tycho with --metrics and --access-log vs without (plaintext, rounds interleaved," \
        "medians): req/s $(printf '%.0f' "$ops_rps") vs $(printf '%.0f' "$plain")" \
        "(ratio $(ratio "$ops_rps" "$plain")), CPU $oc vs $pc us/req (ratio $(ratio "$oc" "$pc"))"
fi
((any)) || echo "wrk errors: none (no non-2xx responses, no socket errors in measured rounds)"
((IDLE_WARNINGS == 0)) || echo "NOTE: other processes were using the CPUs during $IDLE_WARNINGS workload(s) (see stderr): treat these numbers as noisy"

# ---------------------------------------------------------------- goals
# Tycho's goals, each ratio from the MEDIAN CPU us/req over the rounds (the ratio of the
# least CPU us/req of any round beside it, for reference); n/a when a side was not measured
# (workload or server not in this run).
GOALS_MET=0; GOALS_ALL=0
goal() {   # LABEL VALUE MINVALUE LIMIT UNIT: one line, "met" when VALUE <= LIMIT
    local label=$1 v=$2 vmin=$3 limit=$4 verdict
    if [[ -z $v || $v == - ]]; then
        verdict="n/a"
    elif awk -v v="$v" -v l="$limit" 'BEGIN { exit !(v <= l) }'; then
        verdict="met"; GOALS_MET=$((GOALS_MET + 1)); GOALS_ALL=$((GOALS_ALL + 1))
    else
        verdict="NOT met"; GOALS_ALL=$((GOALS_ALL + 1))
    fi
    printf '  %-46s %8s  %-18s goal <= %-5s %s\n' "$label" "${v:--}" "$vmin" "$limit" "$verdict"
}
cpu_goal() {   # WORKLOAD PEER LIMIT
    local w=$1 p=$2
    goal "$w: tycho/$p CPU us/req" "$(ratio "${R_CPU[tycho,$w]:-}" "${R_CPU[$p,$w]:-}")" \
        "(min $(ratio "${R_CPUMIN[tycho,$w]:-}" "${R_CPUMIN[$p,$w]:-}"))" "$3"
}
echo
echo "Goals (ratios of the MEDIAN CPU us/req over $TOTAL_ROUNDS rounds per server;" \
    "in brackets the ratio of the least CPU us/req of any round):"
for w in plaintext json users/:id "echo 1KiB POST" "plaintext 1000c"; do
    cpu_goal "$w" nginx 0.75
done
cpu_goal plaintext floor 1.15
cpu_goal "plaintext conn-close" nginx 1.0
idle_v=${IDLE_KA[tycho]:-${IDLE_PLAIN[tycho]:-}}
idle_from=idle
[[ -z ${IDLE_KA[tycho]:-} && -n ${IDLE_PLAIN[tycho]:-} ]] && idle_from=tlsplain
goal "$idle_from: tycho bytes per idle keep-alive conn" "$idle_v" \
    "(nginx ${IDLE_KA[nginx]:-${IDLE_PLAIN[nginx]:--}}, floor ${IDLE_KA[floor]:--})" 400
if [[ -n $AA_MAX ]]; then
    echo "  noise of this run (A/A, tycho2 vs tycho median CPU us/req): up to ${AA_MAX} %" \
        "($AA_MAX_WL); a ratio within that of its goal is not settled by this run"
elif ((BENCH_AA)); then
    echo "  noise of this run: no A/A measure (no tycho rounds)"
else
    echo "  noise of this run: not measured (BENCH_AA=0)"
fi
echo "Goals met: $GOALS_MET of $GOALS_ALL measured"
exit "$STATUS"
