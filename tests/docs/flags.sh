#!/bin/sh
# tests/docs/flags.sh TYCHO [TOP]: `TYCHO --help`, man/tycho.1 and docs/cli.md (under TOP,
# default .) list the same flags, each with the same argument and the same default.
#
# How each source states a flag (keep to this when editing any of them):
#   --help       (generated from the flag table in C) an entry begins with two spaces,
#                then `--name`, optionally a space and its argument; the description may go
#                on over lines indented by more spaces. The default is the text inside
#                `(default ...)` in the entry, after an optional `:`: `(default 8080)` is
#                8080, `(default: number of cores)` is "number of cores", `(default 10000;
#                0: no bound)` is "10000; 0: no bound". No `(default` means no default.
#   man page     each flag is a `.TP` item of OPTIONS whose tag line is the flag and its
#                argument (`.BI \-\-port " N"`); its text ends with a line `(default X)`,
#                X written exactly as --help prints it, or has no `(default` at all.
#   docs/cli.md  the table under "## Flags": `| flag | argument | default | meaning |`, the
#                flag and argument in backticks (`\|` for a `|` in an argument), the
#                default cell holding X exactly as --help prints it, empty when none.
# Arguments are compared with their blanks removed (the man page has `FILE | - | off`).
# A mismatch prints `FAIL ...` and the diff (`-` --help, `+` the other source).
# Ends with the summary line `N passed, M failed`.
tycho=${1:-./tycho}
top=${2:-.}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

pass() { passed=$((passed + 1)); }
fail() {
    failed=$((failed + 1))
    echo "FAIL $*"
}

# entries: reads "flag-entry text" lines (an entry's lines joined) on stdin and prints
# one line per flag: `--name ARG-without-blanks default=X` (default= empty when none).
entries() {
    awk '{
        t = index($0, "\t")
        head = t ? substr($0, 1, t - 1) : $0
        line = $0
        gsub(/[ \t]+/, " ", line)
        sub(/^ +/, "", head)
        name = head; sub(/ .*/, "", name)
        # the argument: what follows the name in the head, blanks removed
        arg = substr(head, length(name) + 1)
        gsub(/[ \t]/, "", arg)
        def = ""
        i = index(line, "(default")
        if (i) {
            def = substr(line, i + 8)
            sub(/^:/, "", def)
            sub(/\).*/, "", def)
            sub(/^ +/, "", def); sub(/ +$/, "", def)
        }
        printf "%s %s default=%s\n", name, arg, def
    }' | sort
}

# help_flags: the flag entries of --help, one per line, "--name ARG", a tab, the rest.
# The argument is the token after the name when one blank separates them (a '...' token
# may hold blanks); two blanks or more after the name start the description.
help_flags() {
    "$tycho" --help | awk '
        function flush() { if (e != "") print e; e = "" }
        /^  --[a-z]/ {
            flush()
            rest = substr($0, 3)
            name = rest; sub(/ .*/, "", name)
            rest = substr(rest, length(name) + 1)
            arg = ""
            if (rest ~ /^ [^ ]/) {
                rest = substr(rest, 2)
                if (substr(rest, 1, 1) == "\047") {
                    j = index(substr(rest, 2), "\047")
                    arg = substr(rest, 1, j + 1)
                } else {
                    arg = rest; sub(/ .*/, "", arg)
                }
                rest = substr(rest, length(arg) + 1)
            }
            e = name " " arg "\t" rest
            next
        }
        e != "" && /^   +[^ ]/ { e = e " " $0; next }
        { flush() }
        END { flush() }'
}

# man_flags: the .TP items of OPTIONS in the man page source: the tag line made plain
# text ("--name ARG"), a tab, then the item text.
man_flags() {
    awk '
        function flush() { if (e != "") print e; e = ""; tag = 0 }
        /^\.SH/ { flush(); opts = ($0 ~ /^\.SH OPTIONS/); next }
        !opts { next }
        /^\.TP/ { flush(); tag = 1; next }
        tag {
            t = $0
            sub(/^\.[A-Z]+ /, "", t)
            gsub(/"/, "", t)
            gsub(/\\-/, "-", t)
            gsub(/\\\(aq/, "\047", t)
            gsub(/\\f[A-Z]/, "", t)
            name = t; sub(/ .*/, "", name)
            e = name " " substr(t, length(name) + 1) "\t"
            tag = 0
            next
        }
        e != "" { l = $0; gsub(/\\-/, "-", l); e = e " " l }
        END { flush() }' "$top/man/tycho.1"
}

# cli_flags: the rows of the flag table of docs/cli.md.
cli_flags() {
    awk -F'|' '
        /^## / { flags = ($0 == "## Flags"); next }
        !flags || !/^\| `--/ { next }
        {
            gsub(/\\\|/, "\001")
            n = split($0, c, "|")
            for (i = 1; i <= n; i++) { gsub(/\001/, "|", c[i]); gsub(/`/, "", c[i]) }
            d = c[4]; sub(/^ +/, "", d); sub(/ +$/, "", d)
            if (d == "") printf "%s %s\t\n", c[2], c[3]
            else printf "%s %s\t(default %s)\n", c[2], c[3], d
        }' "$top/docs/cli.md"
}

help_flags | entries >"$work/help"
man_flags | entries >"$work/man"
cli_flags | entries >"$work/cli"

n=$(wc -l <"$work/help")
if [ "$n" -ge 20 ]; then pass; else fail "$tycho --help: only $n flag entries found"; cat "$work/help"; fi
for f in help man cli; do
    dup=$(cut -d' ' -f1 "$work/$f" | uniq -d)
    [ -z "$dup" ] && pass || fail "$f lists a flag twice: $dup"
done

# compare NAME FILE: FILE has the same lines as --help's, or the diff is shown.
compare() {
    if diff -u "$work/help" "$work/$2" >"$work/diff"; then
        pass
    else
        fail "$1 does not list the flags, arguments and defaults of --help (- --help, + $1):"
        sed -n '3,$p' "$work/diff" | grep '^[-+]'
    fi
}
compare "man/tycho.1" man
compare "docs/cli.md" cli

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
