#!/bin/sh
# tests/install/run.sh [TYCHO]: run from the top of the checkout. Checks
#   - `make install DESTDIR=D PREFIX=/usr/local`: every file in place, the installed binary
#     runs, the installed man page renders (man -l, groff -ww, mandoc -T lint), the docs
#     (README.md and docs/*.md) are in share/doc/tycho; `make uninstall` takes it all away
#     again (that the man page lists every flag of --help is tests/docs/flags.sh's job);
#   - the same install into a PREFIX of a user who is not root (when run as root);
#   - `luarocks lint tycho-scm-1.rockspec`, and `luarocks make --tree T` built from a copy
#     of the checkout: T/bin/tycho serves the installed example app on a free loopback port
#     (curl GET /plaintext), stops on SIGTERM with status 0; `luarocks remove` removes it.
# Everything it makes lives in one mktemp directory, removed at the end; the checkout is
# left as it was (checked with git status). Every wait is bounded.
# Ends with the summary line `N passed, M failed`.
tycho=${1:-./tycho}
top=$(pwd)
work=$(mktemp -d)
pid=
passed=0
failed=0

cleanup() {
    if [ -n "$pid" ]; then
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

pass() { passed=$((passed + 1)); }
fail() {
    failed=$((failed + 1))
    echo "FAIL $*"
}

# check NAME CMD...: passes if CMD exits 0; otherwise prints its output.
check() {
    name=$1
    shift
    if "$@" >"$work/check.out" 2>&1; then
        pass
    else
        fail "$name (exit $?):"
        tail -n 20 "$work/check.out"
    fi
}

# render_clean FILE: man -l, groff and mandoc all render FILE with no message at all.
render_clean() {
    MAN_DISABLE_SECCOMP=1 MANPAGER=cat MANWIDTH=80 man -l "$1" >"$work/man.txt" \
        2>"$work/man.err" || return 1
    grep -q 'tycho - a Lua-scriptable HTTP/1.1 application server' "$work/man.txt" || return 1
    [ ! -s "$work/man.err" ] || { cat "$work/man.err"; return 1; }
    groff -man -ww -z "$1" 2>"$work/groff.err" && [ ! -s "$work/groff.err" ] ||
        { cat "$work/groff.err"; return 1; }
    mandoc -T lint "$1"
}

# installed ROOT: ROOT (DESTDIR + PREFIX) holds what `make install` puts there.
installed() {
    [ -x "$1/bin/tycho" ] && [ -f "$1/share/man/man1/tycho.1" ] &&
        [ -f "$1/share/doc/tycho/README.md" ] || return 1
    for s in scripts/*.lua; do
        [ -f "$1/share/tycho/scripts/${s#scripts/}" ] || { echo "missing $s"; return 1; }
    done
    for d in docs/*.md; do
        [ -f "$1/share/doc/tycho/${d#docs/}" ] || { echo "missing $d"; return 1; }
    done
    "$1/bin/tycho" --version | grep -qx 'tycho [0-9][0-9.]*' &&
        "$1/bin/tycho" --check "$1/share/tycho/scripts" >/dev/null &&
        "$1/bin/tycho" test "$1/share/tycho/scripts" >/dev/null   # their tests were installed too
}

# no_files DIR: nothing but (empty) directories left in DIR.
no_files() {
    left=$(find "$1" ! -type d)
    [ -z "$left" ] || { echo "left behind: $left"; return 1; }
}

# wait_for FILE PATTERN SECONDS: until FILE has a line matching PATTERN.
wait_for() {
    i=0
    while [ "$i" -lt $(($3 * 10)) ]; do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# stop PID SECONDS: SIGTERM, then wait (bounded) for the exit; status 0 expected.
stop() {
    kill -TERM "$1" || return 1
    i=0
    while kill -0 "$1" 2>/dev/null; do
        [ "$i" -lt $(($2 * 10)) ] || { echo "still running after ${2}s"; return 1; }
        sleep 0.1
        i=$((i + 1))
    done
    wait "$1"
}

git_status() {
    git -C "$top" status --porcelain 2>/dev/null
}
status_before=$(git_status)

# 1. make install with DESTDIR and PREFIX, then make uninstall.
dest=$work/dest
check "make install DESTDIR PREFIX=/usr/local" \
    make --no-print-directory install DESTDIR="$dest" PREFIX=/usr/local
check "installed files, --version, --check and tycho test of the scripts" installed "$dest/usr/local"
check "installed man page renders without a warning" \
    render_clean "$dest/usr/local/share/man/man1/tycho.1"
check "make uninstall" make --no-print-directory uninstall DESTDIR="$dest" PREFIX=/usr/local
check "make uninstall removed every file" no_files "$dest"
[ -d "$dest/usr/local/share/tycho" ] && fail "make uninstall left share/tycho/" || pass

# 2. The same as a user who is not root, into a PREFIX of theirs (when the tests run as root
# and that user can read the checkout; otherwise step 1 already ran as a non-root user).
if [ "$(id -u)" = 0 ] && id nobody >/dev/null 2>&1 &&
    setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups test -r Makefile 2>/dev/null; then
    chmod 755 "$work"
    mkdir "$work/user" && chown nobody "$work/user"
    as_nobody() { setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups "$@"; }
    check "make install PREFIX=writable dir, not as root" as_nobody \
        make --no-print-directory install PREFIX="$work/user/local"
    check "installed files (not as root)" installed "$work/user/local"
    check "make uninstall, not as root" as_nobody \
        make --no-print-directory uninstall PREFIX="$work/user/local"
    check "make uninstall removed every file (not as root)" no_files "$work/user"
else
    echo "(install as a non-root user: not run, the tests are not root or cannot setpriv)"
fi

# 3. LuaRocks: lint, then build and install from a copy of the checkout (luarocks make
# builds in the source directory), with a HOME of its own so no user config is read and
# without the calling make's flags (a user's `luarocks make` has none).
export HOME="$work/home"
mkdir "$HOME"
check "luarocks lint tycho-scm-1.rockspec" luarocks lint tycho-scm-1.rockspec
mkdir "$work/src"
tar -cf - --exclude=./.git --exclude='./obj*' --exclude=./tycho . | tar -C "$work/src" -xf -
tree=$work/tree
if (cd "$work/src" && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
    luarocks make --tree "$tree" tycho-scm-1.rockspec) >"$work/luarocks.log" 2>&1; then
    pass
else
    fail "luarocks make --tree T tycho-scm-1.rockspec:"
    tail -n 30 "$work/luarocks.log"
fi
check "T/bin/tycho --version" sh -c "'$tree/bin/tycho' --version | grep -qx 'tycho [0-9][0-9.]*'"
rockdir=$(ls -d "$tree"/lib/luarocks/rocks-*/tycho/scm-1 2>/dev/null | head -n 1)
check "the rock holds the man page and the example scripts" \
    test -f "$rockdir/share/man/man1/tycho.1" -a -f "$rockdir/share/tycho/scripts/hello.lua"

# T/bin/tycho serves the rock's example scripts on a free loopback port.
if [ -x "$tree/bin/tycho" ]; then
    "$tree/bin/tycho" --host 127.0.0.1 --port 0 --workers 1 "$rockdir/share/tycho/scripts" \
        >"$work/serve.out" 2>"$work/serve.err" &
    pid=$!
    if wait_for "$work/serve.out" 'listening on http://127\.0\.0\.1:[0-9]' 10; then
        pass
        port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\) .*|\1|p' "$work/serve.out")
        body=$(curl -s --max-time 5 "http://127.0.0.1:$port/plaintext")
        [ "$body" = "Hello, World!" ] && pass || fail "GET /plaintext answered \"$body\""
        body=$(curl -s --max-time 5 "http://127.0.0.1:$port/users/7?q=hi")
        case $body in
        *'"id":"7"'*'"q":"hi"'* | *'"q":"hi"'*'"id":"7"'*) pass ;;
        *) fail "GET /users/7?q=hi answered \"$body\"" ;;
        esac
    else
        fail "T/bin/tycho printed no banner in 10 s:"
        cat "$work/serve.out" "$work/serve.err"
    fi
    check "T/bin/tycho stops on SIGTERM with status 0" stop "$pid" 15
    pid=
else
    fail "no T/bin/tycho to serve with"
fi
check "luarocks remove --tree T tycho" luarocks remove --tree "$tree" tycho
[ -e "$tree/bin/tycho" ] && fail "luarocks remove left T/bin/tycho" || pass

status_after=$(git_status)
[ "$status_before" = "$status_after" ] && pass ||
    fail "the checkout changed: git status was \"$status_before\", is \"$status_after\""

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
