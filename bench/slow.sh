#!/usr/bin/env bash
# bench/slow.sh TYCHO SCRIPT_DIR: slow-client attacks with slowhttptest against a
# running Tycho on 127.0.0.1, while a probe sends an ordinary request every 200 ms.
#
#   slowloris (-H): many connections, each sending a header line every few seconds
#   slow read (-X): many connections reading the responses a few bytes at a time
#
# Prints slowhttptest's summary for each and how many probe requests succeeded.
# Tycho runs with its default limits (and SLOW_FLAGS, if set). Installs the
# Debian package slowhttptest when missing (as root). Bounded: SLOW_SECONDS
# (default 30) per attack. Only the PIDs started here are stopped.
set -u
tycho=${1:-./tycho}
dir=${2:-scripts}
seconds=${SLOW_SECONDS:-30}
conns=${SLOW_CONNS:-1000}

if ! command -v slowhttptest >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slowhttptest || exit 1
    else
        echo "run: sudo apt-get update && sudo apt-get install -y slowhttptest"
        exit 1
    fi
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck disable=SC2086
"$tycho" --port 0 --workers 1 ${SLOW_FLAGS:-} "$dir" >"$work/out" 2>"$work/err" &
server_pid=$!
for _ in $(seq 50); do
    grep -q 'listening on' "$work/out" 2>/dev/null && break
    sleep 0.1
done
port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$work/out")
[ -n "$port" ] || { echo "tycho did not start:"; cat "$work/err"; exit 1; }
url="http://127.0.0.1:$port/plaintext"
echo "tycho on port $port (pid $server_pid), ${SLOW_FLAGS:-default limits}"

# probe FILE: one ordinary request every 200 ms until the file .stop appears.
probe() {
    local ok=0 fail=0
    while [ ! -e "$work/stop" ]; do
        if curl -s -m 2 -o /dev/null -w '%{http_code}' "$url" | grep -q 200; then
            ok=$((ok + 1))
        else
            fail=$((fail + 1))
        fi
        sleep 0.2
    done
    echo "$ok $fail" >"$1"
}

attack() {
    local name=$1
    shift
    rm -f "$work/stop"
    probe "$work/probe" &
    local probe_pid=$!
    timeout $((seconds + 30)) slowhttptest "$@" -c "$conns" -r 200 -l "$seconds" -u "$url" \
        >"$work/$name.log" 2>&1
    touch "$work/stop"
    wait "$probe_pid"
    read -r ok fail <"$work/probe"
    echo "== $name: slowhttptest summary"
    # The last status block slowhttptest printed.
    tr '\r' '\n' <"$work/$name.log" | sed 's/\x1b\[[0-9;]*m//g' | grep -E 'test type|number of connections|interval between|connections per seconds|test duration|Exit status|service available|closed:|pending:|connected:|error:' | tail -n 12
    echo "   probe requests during the attack: $ok answered 200, $fail failed"
}

attack slowloris -H -i 5 -x 24
attack slow-read -X -k 3 -n 5 -w 16 -y 64 -z 16
kill -0 "$server_pid" 2>/dev/null && echo "tycho is still running" || echo "tycho DIED"
grep -E 'timeouts|error' "$work/err" | tail -n 5
