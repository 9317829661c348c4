#!/bin/sh
# tests/layers.sh OBJDIR [LAYERS]: checks the build's dependency graph against server/layers.
# A file A depends on B when A.o uses a symbol that B.o defines (nm: what A needs, what B
# has). Checks, one line each on failure:
#   - every object is in a layer of LAYERS (default server/layers);
#   - every dependency goes to the file's own layer or a lower one (earlier in LAYERS);
#   - no cycle: no two files depend on each other, directly or through other files.
# Ends with `N passed, M failed`. Needs only nm (binutils) and awk.
objdir=${1:?usage: tests/layers.sh OBJDIR [LAYERS]}
layers=${2:-server/layers}
[ -f "$layers" ] || { echo "FAIL no layer file $layers"; echo "0 passed, 1 failed"; exit 1; }

# One line per symbol: "D file sym" (defined, global) or "U file sym" (used, undefined).
objects=$(cd "$objdir" && find . -name '*.o' ! -path './unit/*' ! -path './integration/*' \
    ! -path './fuzz/*' | sed 's|^\./||' | sort)
[ -n "$objects" ] || { echo "FAIL no objects under $objdir (build first)"; echo "0 passed, 1 failed"; exit 1; }
symbols=$(for o in $objects; do
    f=${o%.o}
    nm --defined-only -g "$objdir/$o" | awk -v f="$f" 'NF >= 3 { print "D", f, $3 }'
    nm -u "$objdir/$o" | awk -v f="$f" '{ print "U", f, $NF }'
done)

printf '%s\n' "$symbols" | awk -v layers="$layers" '
function glob_match(s, g,    re) {
    re = g
    gsub(/[.+^$(){}|\\]/, "\\\\&", re)
    gsub(/\*/, "[^/]*", re)
    gsub(/\?/, "[^/]", re)
    return s ~ ("^" re "$")
}
function layer_of(f,    i, j, n, gs) {
    for (i = 1; i <= nlayers; i++) {
        n = split(globs[i], gs, " ")
        for (j = 1; j <= n; j++)
            if (glob_match(f, gs[j]))
                return i
    }
    return 0
}
BEGIN {
    while ((getline line < layers) > 0) {
        sub(/#.*/, "", line)
        if (line !~ /:/)
            continue
        name = line; sub(/:.*/, "", name); gsub(/[ \t]/, "", name)
        rest = line; sub(/^[^:]*:/, "", rest)
        nlayers++
        lname[nlayers] = name
        globs[nlayers] = rest
    }
}
$1 == "D" { if (!($3 in owner)) owner[$3] = $2; files[$2] = 1; next }
$1 == "U" { used[$2, $3] = 1; files[$2] = 1; next }
END {
    for (key in used) {
        split(key, k, SUBSEP)
        if ((k[2] in owner) && owner[k[2]] != k[1]) {
            e = k[1] SUBSEP owner[k[2]]
            if (!(e in edge)) { edge[e] = k[2] } else if (length(edge[e]) < 60) { edge[e] = edge[e] ", " k[2] }
        }
    }
    passed = failed = 0
    nf = 0
    for (f in files) { nf++; name_of[nf] = f; idx[f] = nf; lay[f] = layer_of(f) }
    for (i = 1; i <= nf; i++) {
        f = name_of[i]
        if (lay[f]) passed++
        else { failed++; print "FAIL " f ": in no layer of " layers }
    }
    for (e in edge) {
        split(e, p, SUBSEP)
        if (!lay[p[1]] || !lay[p[2]])
            continue
        if (lay[p[2]] <= lay[p[1]]) passed++
        else {
            failed++
            printf "FAIL %s (layer %s) uses %s of the higher layer %s: %s\n", p[1], lname[lay[p[1]]], p[2], lname[lay[p[2]]], edge[e]
        }
        reach[idx[p[1]], idx[p[2]]] = 1
    }
    # Transitive closure (Warshall): a cycle is two files that reach each other.
    for (k2 = 1; k2 <= nf; k2++)
        for (i = 1; i <= nf; i++)
            if ((i, k2) in reach)
                for (j = 1; j <= nf; j++)
                    if ((k2, j) in reach)
                        reach[i, j] = 1
    cycles = 0
    for (i = 1; i <= nf; i++)
        for (j = i + 1; j <= nf; j++)
            if (((i, j) in reach) && ((j, i) in reach)) {
                cycles++
                print "FAIL cycle: " name_of[i] " and " name_of[j] " depend on each other"
            }
    if (cycles) failed++; else passed++
    printf "%d files, %d layers, %d dependencies checked\n", nf, nlayers, length(edge)
    printf "%d passed, %d failed\n", passed, failed
    exit failed > 0
}'
