#!/bin/sh
# tests/lua/test_runner.sh TYCHO: `tycho test` and `tycho new`, end to end.
# - the runner fixture (tests/lua/runner) passes, handlers that sleep and call
#   a real backend included (a second tycho serving scripts/ on a free port);
# - the failing fixture reports each failure with the file:line of its
#   assertion, expected and actual, and exits 1;
# - usage errors; `tycho new` writes an app that `tycho test` passes and
#   `tycho` serves.
# Ends with the summary line `N passed, M failed`.
tycho=${1:-./tycho}
passed=0
failed=0
tmp=$(mktemp -d)
backend_pid=""
served_pid=""
cleanup() {
    [ -n "$backend_pid" ] && kill "$backend_pid" 2>/dev/null
    [ -n "$served_pid" ] && kill "$served_pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

ok() {   # ok NAME CONDITION-STATUS
    if [ "$2" -eq 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL $1"
    fi
}

# has NAME TEXT: the last output contains TEXT.
has() {
    printf '%s' "$out" | grep -qF -- "$2"
    st=$?
    ok "$1" $st
    [ $st -eq 0 ] || { echo "  wanted: $2"; echo "  output was:"; printf '%s\n' "$out" | sed 's/^/    /'; }
}

# start_server DIR LOG: starts tycho on a free port; sets started_pid and started_port.
start_server() {
    "$tycho" --port 0 --workers 1 "$1" >"$2" 2>&1 &
    started_pid=$!
    started_port=""
    i=0
    while [ $i -lt 100 ] && [ -z "$started_port" ]; do
        # The log may not exist yet: the server starts in the background.
        started_port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$2" 2>/dev/null)
        [ -n "$started_port" ] || sleep 0.05
        i=$((i + 1))
    done
}

# The backend for the fixture's /proxy route.
start_server scripts "$tmp/backend.log"
backend_pid=$started_pid
ok "a backend starts" "$([ -n "$started_port" ]; echo $?)"

out=$(TYCHO_TEST_BACKEND=$started_port "$tycho" test tests/lua/runner 2>&1)
ok "the runner fixture passes: exit 0" $?
has "the runner fixture: summary" "11 passed, 0 failed"
has "the runner fixture: a sleeping handler" "ok   tests/lua/runner/tests/pass_test.lua: a handler that sleeps"
has "the runner fixture: a backend call" "ok   tests/lua/runner/tests/pass_test.lua: a handler that calls a backend"

# The example app's proxy (scripts/proxy.lua) against the same backend.
out=$(TYCHO_UPSTREAM=127.0.0.1:$started_port "$tycho" test scripts 2>&1)
ok "scripts/ with TYCHO_UPSTREAM: exit 0" $?
has "scripts/ with TYCHO_UPSTREAM: the proxy forwards" "ok   scripts/tests/proxy_test.lua: the query string and status are forwarded"

out=$("$tycho" test tests/lua/runner tests/lua/runner/failing 2>&1)
ok "the failing fixture: exit 1" "$([ $? -eq 1 ]; echo $?)"
has "failing: the summary" "1 passed, 7 failed"
has "failing: a tail-called assertion names its test" "tests/lua/runner/failing/fail_test.lua:29: (in this test) assert_eq: expected 2, got 1"
has "failing: client misuse at the test's line" 'tests/lua/runner/failing/fail_test.lua:26: client:get: the path must start with / (got "no-slash")'
has "failing: status, with file:line" "FAIL tests/lua/runner/failing/fail_test.lua: wrong status
     tests/lua/runner/failing/fail_test.lua:9: assert_eq: expected 200, got 404"
has "failing: body and message" 'tests/lua/runner/failing/fail_test.lua:13: assert_eq: expected "awake", got "slept": the sleeper'"'"'s body'
has "failing: match" 'tests/lua/runner/failing/fail_test.lua:17: assert_match: expected a string matching "^z", got "slept"'
has "failing: a runtime error with its line" "tests/lua/runner/failing/fail_test.lua:22: attempt to index local 't' (a nil value)"
has "failing: a runtime error's traceback" "fail_test.lua:22: in function <tests/lua/runner/failing/fail_test.lua:20>"
has "failing: a file that does not load" "FAIL tests/lua/runner/failing/syntax_test.lua: (loading the file)"
has "failing: the passing one still passes" "ok   tests/lua/runner/failing/fail_test.lua: passes"

out=$("$tycho" test --test-timeout 0.3 tests/lua/runner tests/lua/runner/slow 2>&1)
ok "a handler that never finishes: exit 1" "$([ $? -eq 1 ]; echo $?)"
has "a handler that never finishes: the bound is named, at the test's line" "tests/lua/runner/slow/slow_test.lua:3: client: the handler had not finished after 0.3 s (--test-timeout); it was abandoned"
has "a handler that never finishes: the next test runs" "ok   tests/lua/runner/slow/slow_test.lua: the app still answers after that"
has "a handler that never finishes: summary" "1 passed, 1 failed"

out=$("$tycho" test "$tmp" 2>&1)
ok "no tests dir: exit 1" "$([ $? -eq 1 ]; echo $?)"
has "no tests dir: says so" "tycho test: $tmp/tests: No such file or directory"
mkdir "$tmp/tests"
out=$("$tycho" test "$tmp" 2>&1)
ok "no test files: exit 1" "$([ $? -eq 1 ]; echo $?)"
has "no test files: says so" "tycho test: no *_test.lua files in $tmp/tests"
out=$("$tycho" test a b c 2>&1)
ok "three arguments: exit 2" "$([ $? -eq 2 ]; echo $?)"
has "three arguments: says so" 'tycho: unexpected argument "c" (tycho test takes DIR and TESTDIR at most)'
out=$("$tycho" test --watch scripts 2>&1)
ok "test --watch: exit 2" "$([ $? -eq 2 ]; echo $?)"
has "test --watch: says so" "tycho: test: --watch does not go with it"

# tycho new: the starter app passes its tests and serves.
out=$("$tycho" new "$tmp/demo" 2>&1)
ok "new: exit 0" $?
has "new: says what it made" "created $tmp/demo/app.lua, $tmp/demo/tests/app_test.lua and $tmp/demo/README.md"
ok "new: README.md" "$([ -f "$tmp/demo/README.md" ]; echo $?)"
out=$("$tycho" test "$tmp/demo" 2>&1)
ok "new: its tests pass" $?
has "new: 3 tests" "3 passed, 0 failed"
out=$("$tycho" new "$tmp/demo" 2>&1)
ok "new again: exit 1" "$([ $? -eq 1 ]; echo $?)"
has "new again: already exists" "tycho new: $tmp/demo: already exists (choose a new name)"
out=$("$tycho" new 2>&1)
ok "new without NAME: exit 2" "$([ $? -eq 2 ]; echo $?)"
has "new without NAME: says so" "tycho: new: missing NAME (usage: tycho new NAME)"
start_server "$tmp/demo" "$tmp/demo.log"
served_pid=$started_pid
ok "new: it serves" "$([ -n "$started_port" ]; echo $?)"
if [ -n "$started_port" ]; then
    out=$(curl -sS --max-time 5 "http://127.0.0.1:$started_port/hello/ada" 2>&1)
    has "new: GET /hello/ada over a socket" '{"hello":"ada"}'
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
