#!/bin/sh
# tests/fuzz/run.sh FUZZER SECONDS SEEDS: runs the libFuzzer target for SECONDS over
# the SEEDS directory and a scratch corpus (removed after), as `make test` does.
# A crash, a sanitizer report or an oracle mismatch fails it: the input is kept
# in the scratch directory's place named in the output, and printed in hex.
# Ends with `1 passed, 0 failed` or `0 passed, 1 failed`.
fuzzer=$1
seconds=${2:-10}
seeds=${3:-$(dirname "$0")/seeds}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/corpus"
"$fuzzer" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
    -artifact_prefix="$dir/" "$dir/corpus" "$seeds" >"$dir/log" 2>&1
rc=$?
grep -E '^(Done [0-9]+ runs|stat::new_units_added)' "$dir/log"
if [ "$rc" -eq 0 ] && ! grep -q 'ERROR: \|runtime error' "$dir/log"; then
    echo "1 passed, 0 failed"
    exit 0
fi
tail -n 40 "$dir/log"
for f in "$dir"/crash-* "$dir"/leak-* "$dir"/timeout-*; do
    [ -f "$f" ] || continue
    echo "input $f (keep it as a seed in $seeds with its test):"
    od -A d -c "$f" | head -n 40
done
echo "0 passed, 1 failed"
exit 1
