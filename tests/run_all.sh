#!/bin/sh
# tests/run_all.sh TYCHO UNIT_BINS... -- INTEGRATION_BINS...
# Runs every suite (all of them, even after a failure), then prints the total
# of their summary lines as the last line: `N passed, M failed`.
# FUZZ_BIN, FUZZ_RESPONSE_BIN, FUZZ_WS_BIN, FUZZ_PROXYPROTO_BIN (and FUZZ_SECONDS) in the
# environment: the fuzz targets run too; OBJ_DIR: the layering check (tests/layers.sh) runs
# over the objects there; CLUSTER_BIN: the cluster test (two instances behind HAProxy,
# tests/cluster/test_cluster.c).
# Exit status 0 only if every suite passed.
tycho=$1
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT
total_passed=0 total_failed=0 status=0

# run NAME CMD...: runs a suite, adds its `N passed, M failed` line to the totals.
run() {
    name=$1
    shift
    echo "== $name"
    "$@" >"$log" 2>&1
    rc=$?
    cat "$log"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -z "$line" ]; then
        echo "$name: no summary line (exit $rc): counted as 1 failure"
        total_failed=$((total_failed + 1))
        status=1
        return
    fi
    p=${line%% passed*}
    f=${line#*passed, }
    f=${f%% failed*}
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
    if [ "$rc" -ne 0 ] || [ "$f" -ne 0 ]; then
        status=1
        [ "$f" -eq 0 ] && total_failed=$((total_failed + 1)) && echo "$name: exit $rc"
    fi
}

mode=unit
for bin in "$@"; do
    if [ "$bin" = "--" ]; then
        mode=integration
        continue
    fi
    if [ "$mode" = unit ]; then
        run "$bin" "$bin"
    else
        run "$bin" "$bin" "$tycho" tests/integration/app
    fi
done
[ -n "${OBJ_DIR:-}" ] &&
    run "layers: server/layers over the objects in $OBJ_DIR, no cycle" sh tests/layers.sh "$OBJ_DIR"
run "example app (tycho --request)" sh tests/lua/run.sh "$tycho" scripts
run "example app's tests (tycho test scripts)" "$tycho" test scripts
# The login example signs its session cookie: a throwaway secret for the test (never a real one).
run "the login example's tests (tycho test examples/login)" \
    env TYCHO_SECRET=tests-only-secret-not-for-use-0123456789 "$tycho" test examples/login
run "tycho test and tycho new" sh tests/lua/test_runner.sh "$tycho"
run "make install, the man page, LuaRocks" sh tests/install/run.sh "$tycho"
run "the flags in --help, man/tycho.1 and docs/cli.md" sh tests/docs/flags.sh "$tycho"
run "the Lua examples of README.md and docs/*.md" sh tests/docs/examples.sh "$tycho"
[ -n "${CLUSTER_BIN:-}" ] &&
    run "two instances behind HAProxy: restarts and an upgrade under load (make test-cluster)" \
        "$CLUSTER_BIN" "$tycho" .
[ -n "${FUZZ_BIN:-}" ] &&
    run "fuzz target for requests, with its framing oracle (${FUZZ_SECONDS:-10} s)" \
        sh tests/fuzz/run.sh "$FUZZ_BIN" "${FUZZ_SECONDS:-10}" tests/fuzz/seeds
[ -n "${FUZZ_RESPONSE_BIN:-}" ] &&
    run "fuzz target for backend responses, with its oracle (${FUZZ_SECONDS:-10} s)" \
        sh tests/fuzz/run.sh "$FUZZ_RESPONSE_BIN" "${FUZZ_SECONDS:-10}" tests/fuzz/seeds-response
[ -n "${FUZZ_WS_BIN:-}" ] &&
    run "fuzz target for WebSocket frames, with its oracles (${FUZZ_SECONDS:-10} s)" \
        sh tests/fuzz/run.sh "$FUZZ_WS_BIN" "${FUZZ_SECONDS:-10}" tests/fuzz/seeds-ws
[ -n "${FUZZ_PROXYPROTO_BIN:-}" ] &&
    run "fuzz target for PROXY protocol headers, with its oracles (${FUZZ_SECONDS:-10} s)" \
        sh tests/fuzz/run.sh "$FUZZ_PROXYPROTO_BIN" "${FUZZ_SECONDS:-10}" tests/fuzz/seeds-proxyproto

echo "== all suites"
echo "$total_passed passed, $total_failed failed"
exit $status
