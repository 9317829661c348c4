#!/bin/sh
# tests/docs/examples.sh TYCHO [TOP]: every Lua example in README.md and docs/*.md (under
# TOP, default .) runs against the real binary.
#
# The convention for doc authors: every fenced block whose info string starts with `lua`
# is checked, according to the word after it (an indented fence, in a list, works too):
#   ```lua            a whole app script. It is written as app.lua into a directory of its
#                     own and must load (`TYCHO --check DIR` exits 0). Then each request
#                     named by a line of the block
#                         -- example: METHOD /path[?query] [< BODY] -> STATUS [TEXT]
#                     runs with `TYCHO --request 'METHOD /path' [--body BODY] DIR` (in
#                     process, no socket): the status must be STATUS and the body must
#                     contain TEXT when given. A block with no such line gets one request
#                     per route it declares (`app.get("/literal/path", ...)`, `app.route`;
#                     `:name` becomes 1 and `*name` x), each of which must not answer 500.
#   ```lua fragment   a piece of code that is not a whole app (one call, a table). It is
#                     compiled, not run: loaded by `TYCHO --check` as the body of a
#                     function that is never called, so a syntax error fails.
#   ```lua test       a `tycho test` file. It runs with `TYCHO test DIR` against the app
#                     of the nearest whole-app block above it in the same file, and every
#                     test in it must pass.
# Any other word after `lua` is a failure. Prefer whole, runnable examples to fragments.
# The requests run with TYCHO_UPSTREAM=127.0.0.1:PORT in the environment: a backend
# serving the example app in scripts/ (its GET /plaintext answers "Hello, World!"),
# started here on 127.0.0.1 with --port 0 and stopped by its PID; and with DATABASE_URL
# and REDIS_URL naming a PostgreSQL database and a Redis server started for the run
# ($DOC_SERVERS, below); and with TYCHO_SECRET set (below), for the examples that sign
# cookies and sessions. Every run is bounded
# in time. Failures print `FAIL FILE:LINE: ...` with what was expected and what came.
# Ends with the summary line `N passed, M failed`.
tycho=${1:-./tycho}
top=${2:-.}
case $tycho in /*) ;; *) tycho=$(pwd)/$tycho ;; esac
work=$(mktemp -d)
backend_pid=
servers_pid=
passed=0
failed=0

cleanup() {
    [ -n "$backend_pid" ] && kill "$backend_pid" 2>/dev/null
    # Closing its stdin stops the database servers; it waits for them (bounded by servers.h).
    [ -n "$servers_pid" ] && { exec 9>&-; wait "$servers_pid"; }
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

pass() { passed=$((passed + 1)); }
fail() {
    failed=$((failed + 1))
    echo "FAIL $*"
}
# show FILE: indented, for a failure's details.
show() { sed 's/^/    /' "$1"; }

# run CMD...: CMD with a bound of 30 s, output in $work/out, stderr in $work/err.
run() { timeout 30 "$@" >"$work/out" 2>"$work/err"; }

# The backend for examples that call tycho.http.
"$tycho" --host 127.0.0.1 --port 0 --workers 1 "$top/scripts" >"$work/backend.log" 2>&1 &
backend_pid=$!
port=
i=0
while [ $i -lt 100 ] && [ -z "$port" ]; do
    port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' "$work/backend.log" \
        2>/dev/null)
    [ -n "$port" ] || sleep 0.1
    i=$((i + 1))
done
if [ -n "$port" ]; then pass; else fail "the backend did not start in 10 s:"; show "$work/backend.log"; fi
TYCHO_UPSTREAM=127.0.0.1:$port
export TYCHO_UPSTREAM

# The app's secret for the examples that sign (res:cookie{signed = true}, tycho.session,
# tycho.crypto.sign): a throwaway value for these tests only. The docs never show a secret;
# they tell the reader to make one (docs/security.md).
TYCHO_SECRET=docs-examples-only-not-a-real-secret-42
export TYCHO_SECRET

# PostgreSQL and Redis for the examples that use them: $DOC_SERVERS is tests/docs/servers.c's
# program (`make test` builds it and sets this). It starts both and writes their URLs, here
# put in DATABASE_URL and REDIS_URL; it stops them when its stdin (fd 9 here) closes.
if [ -n "$DOC_SERVERS" ] && [ -x "$DOC_SERVERS" ]; then
    mkfifo "$work/hold"
    "$DOC_SERVERS" <"$work/hold" >"$work/servers.out" 2>"$work/servers.err" &
    servers_pid=$!
    exec 9>"$work/hold"
    i=0
    while [ $i -lt 600 ] && ! grep -q '^ready$' "$work/servers.out" &&
        kill -0 "$servers_pid" 2>/dev/null; do
        sleep 0.1
        i=$((i + 1))
    done
    if grep -q '^ready$' "$work/servers.out"; then
        DATABASE_URL=$(sed -n 's/^DATABASE_URL=//p' "$work/servers.out")
        REDIS_URL=$(sed -n 's/^REDIS_URL=//p' "$work/servers.out")
        export DATABASE_URL REDIS_URL
        pass
    else
        fail "PostgreSQL and Redis for the examples did not start in 60 s:"
        show "$work/servers.out"
        show "$work/servers.err"
    fi
else
    fail "no PostgreSQL and Redis for the examples: DOC_SERVERS names no program (make test sets it)"
fi

# Split the docs into blocks: $work/b/N holds block N, $work/index a line per block:
# N FILE LINE INFO (INFO: the words after `lua`, or "-" for none).
mkdir "$work/b"
for doc in "$top/README.md" "$top"/docs/*.md; do
    [ -f "$doc" ] || continue
    awk -v doc="${doc#"$top"/}" -v dir="$work/b" -v start="$(ls "$work/b" | wc -l)" '
        BEGIN { n = start }
        !inb && /^ *```lua([ \t]|$)/ {
            indent = $0; sub(/```.*/, "", indent)
            info = $0; sub(/^ *```lua[ \t]*/, "", info); sub(/[ \t]+$/, "", info)
            if (info == "") info = "-"
            n++; inb = 1; file = dir "/" n
            printf "" > file
            print n, doc, NR, info
            next
        }
        inb && /^ *```[ \t]*$/ { inb = 0; close(file); next }
        inb {
            line = $0
            if (substr(line, 1, length(indent)) == indent) line = substr(line, length(indent) + 1)
            print line > file
        }' "$doc" >>"$work/index"
done
[ -s "$work/index" ] && pass || fail "no lua block found in README.md and docs/*.md"

# request WHERE DIR METHOD PATH STATUS TEXT [BODY]: one --request; STATUS "!500" means
# any status but 500.
request() {
    where=$1 dir=$2 method=$3 path=$4 want_status=$5 want_text=$6
    if [ $# -ge 7 ]; then
        run "$tycho" --request "$method $path" --body "$7" "$dir"
    else
        run "$tycho" --request "$method $path" "$dir"
    fi
    rc=$?
    tr -d '\r' <"$work/out" >"$work/resp"
    status=$(sed -n '1s|^HTTP/1\.1 \([0-9]*\) .*|\1|p' "$work/resp")
    sed '1,/^$/d' "$work/resp" >"$work/body"
    ok=1
    [ "$rc" -eq 0 ] || ok=0
    case $want_status in
    '!500') [ -n "$status" ] && [ "$status" != 500 ] || ok=0 ;;
    *) [ "$status" = "$want_status" ] || ok=0 ;;
    esac
    if [ -n "$want_text" ] && ! grep -qF -- "$want_text" "$work/body"; then ok=0; fi
    if [ $ok -eq 1 ]; then
        pass
    else
        case $want_status in '!500') want_status="a status other than 500" ;; esac
        fail "$where: $method $path: expected $want_status${want_text:+ and a body with $want_text}, got status ${status:-none} (exit $rc):"
        show "$work/resp"
        show "$work/err"
    fi
}

# routes FILE: METHOD PATH per route the block declares with a literal path.
routes() {
    sed -n -E \
        -e 's/.*app\.(get|post|put|patch|delete|options|head)\("(\/[^"]*)".*/\1 \2/p' \
        -e 's/.*app\.route\("([A-Za-z]*)", *"(\/[^"]*)".*/\1 \2/p' "$1" |
        awk '{ m = toupper($1); p = $2
               gsub(/:[A-Za-z0-9_]+/, "1", p); gsub(/\*[A-Za-z0-9_]+/, "x", p)
               print m, p }'
}

last_app=
last_doc=
while read -r n doc line info; do
    block=$work/b/$n
    where=$doc:$line
    [ "$doc" = "$last_doc" ] || last_app=
    last_doc=$doc
    case $info in
    -)
        dir=$work/app$n
        mkdir "$dir"
        cp "$block" "$dir/app.lua"
        if run "$tycho" --check "$dir"; then
            pass
        else
            fail "$where: the app does not load:"
            show "$work/err"
            continue
        fi
        last_app=$dir
        if grep -q -- '-- example: ' "$block"; then
            grep -- '-- example: ' "$block" | sed 's/.*-- example: //' >"$work/examples"
            while IFS= read -r spec; do
                req=${spec%% -> *}
                want=${spec#* -> }
                want_status=${want%% *}
                want_text=
                case $want in *' '*) want_text=${want#* } ;; esac
                method=${req%% *}
                path=${req#* }
                case $path in
                *' < '*)
                    body=${path#* < }
                    path=${path%% < *}
                    request "$where" "$dir" "$method" "$path" "$want_status" "$want_text" "$body"
                    ;;
                *) request "$where" "$dir" "$method" "$path" "$want_status" "$want_text" ;;
                esac
            done <"$work/examples"
        else
            routes "$block" >"$work/routes"
            [ -s "$work/routes" ] || fail "$where: a whole app with no route and no '-- example:' line (mark a fragment \`\`\`lua fragment)"
            while read -r method path; do
                request "$where" "$dir" "$method" "$path" '!500' ''
            done <"$work/routes"
        fi
        ;;
    fragment)
        dir=$work/frag$n
        mkdir "$dir"
        { echo 'local _ = function(...)'; cat "$block"; echo 'end'; } >"$dir/fragment.lua"
        if run "$tycho" --check "$dir"; then
            pass
        else
            fail "$where: the fragment does not compile:"
            show "$work/err"
        fi
        ;;
    test)
        if [ -z "$last_app" ]; then
            fail "$where: a \`\`\`lua test block with no whole-app block above it in $doc"
            continue
        fi
        dir=$work/test$n
        mkdir -p "$dir"
        cp "$last_app/app.lua" "$dir/"
        mkdir "$dir/tests"
        cp "$block" "$dir/tests/example_test.lua"
        if run "$tycho" test "$dir"; then
            pass
        else
            fail "$where: tycho test fails:"
            show "$work/out"
            show "$work/err"
        fi
        ;;
    *)
        fail "$where: unknown kind of lua block \"$info\" (expected none, fragment or test)"
        ;;
    esac
done <"$work/index"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
