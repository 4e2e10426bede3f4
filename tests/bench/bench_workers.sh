#!/usr/bin/env bash
# bench_workers.sh - wall time of `mpq run` on examples/sotu-2.7M.json (336 units) with
# --workers 1 and --workers 2, and that both store bit-identical numbers. Prints figures,
# asserts nothing about time. Env: MPQ (the mpq binary), MPQ_ROOT (project root);
# MPQ_BENCH_WORKERS_SPEC overrides the spec (e.g. examples/stories260K.json for a quick run).
set -euo pipefail
: "${MPQ:?mpq binary}" "${MPQ_ROOT:?project root}"
spec=${MPQ_BENCH_WORKERS_SPEC:-examples/sotu-2.7M.json}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
declare -A wall
for w in 1 2; do
  t0=$(date +%s.%N)
  (cd "$MPQ_ROOT" && "$MPQ" run "$spec" --db "$T/w$w.db" -q --workers "$w" > /dev/null)
  t1=$(date +%s.%N)
  wall[$w]=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
  sqlite3 "$T/w$w.db" "SELECT metric, candidate, layer_id, printf('%.17g %.17g', value, stderr), n FROM metrics
    ORDER BY 1, 2, 3" > "$T/w$w.txt"
  printf 'workers %d: %8.2f s wall, %d metric rows\n' "$w" "${wall[$w]}" "$(wc -l < "$T/w$w.txt")"
done
printf 'speed-up 2 vs 1 workers: %.2fx (%s, %d processors, load average %s)\n' \
  "$(awk -v a="${wall[1]}" -v b="${wall[2]}" 'BEGIN {print a / b}')" "$spec" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
if cmp -s "$T/w1.txt" "$T/w2.txt"; then echo "stored numbers: bit-identical"; else echo "stored numbers DIFFER"; exit 1; fi
