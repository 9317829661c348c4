#!/bin/sh
# tests/lua/run.sh TYCHO: runs the example app in scripts/ in-process with
# `tycho --request` (no socket) and checks each route's response.
# Ends with the summary line `N passed, M failed`.
tycho=${1:-./tycho}
dir=${2:-scripts}
passed=0
failed=0

# check NAME EXPECTED-SUBSTRING ARGS...: the response must contain the text.
check() {
    name=$1 want=$2
    shift 2
    got=$("$tycho" "$@" "$dir" 2>&1)
    status=$?
    if [ $status -eq 0 ] && printf '%s' "$got" | tr -d '\r' | grep -qF -- "$want"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        printf 'FAIL %s: want "%s" (exit %s), got:\n%s\n' "$name" "$want" "$status" "$got"
    fi
}

check "plaintext status" "HTTP/1.1 200 OK" --request 'GET /plaintext'
check "plaintext body" "Hello, World!" --request 'GET /plaintext'
check "plaintext type" "Content-Type: text/plain; charset=utf-8" --request 'GET /plaintext'
check "json body" '{"message":"Hello, World!"}' --request 'GET /json'
check "json type" "Content-Type: application/json" --request 'GET /json'
check "users id" '"id":"7"' --request 'GET /users/7'
check "users query" '"q":"a b"' --request 'GET /users/7?q=a+b'
check "echo body" "ping pong" --request 'POST /echo' --body 'ping pong'
check "echo type" "Content-Type: text/x-test" --request 'POST /echo' --header 'Content-Type: text/x-test' --body x
check "echo length" "Content-Length: 9" --request 'POST /echo' --body 'ping pong'
check "404" "HTTP/1.1 404 Not Found" --request 'GET /nowhere'
check "405" "Allow: GET, HEAD" --request 'POST /plaintext'
check "HEAD length" "Content-Length: 13" --request 'HEAD /plaintext'

# HEAD carries no body bytes.
out=$("$tycho" --request 'HEAD /plaintext' "$dir")
case $out in
*Hello*) failed=$((failed + 1)); echo "FAIL HEAD has a body" ;;
*) passed=$((passed + 1)) ;;
esac

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
