#!/usr/bin/env bash
# bench_workers.sh - wall time of `mpq run` with --workers 1 and --workers 2, and that both
# store bit-identical numbers. Default: examples/sotu-2.7M.json (336 units). Prints figures,
# asserts nothing about time. Env: MPQ (the mpq binary), MPQ_ROOT (project root);
# MPQ_BENCH_WORKERS_SPEC overrides the spec (e.g. examples/stories260K.json for a quick run);
# MPQ_BENCH_WORKERS_MODEL=110m instead runs a layer_sensitivity job (int4g32, 84 units,
# 8 x 128 TinyStories tokens, batch 8) on a generated llama2.c stories110M-shaped model with
# random weights (bench_forward write110m, beside MPQ; 438 MB in a temporary folder).
set -euo pipefail
: "${MPQ:?mpq binary}" "${MPQ_ROOT:?project root}"
spec=${MPQ_BENCH_WORKERS_SPEC:-examples/sotu-2.7M.json}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
if [ "${MPQ_BENCH_WORKERS_MODEL:-}" = 110m ]; then
  "$(dirname "$MPQ")/bench_forward" write110m "$T/m110.bin"
  cat > "$T/m110.json" <<JSON
{
  "name": "m110-workers",
  "model": "$T/m110.bin",
  "tokenizer": "../shared/data/tokenizer-32k.bin",
  "seed": 1,
  "calibration": {"data": "../shared/data/tinystories-calib.txt", "seq_len": 128, "n_seqs": 8, "seed": 1, "batch": 8},
  "evaluation": {"data": "../shared/data/tinystories-eval.txt", "seq_len": 128, "n_seqs": 8, "seed": 2},
  "candidates": ["int4g32"],
  "metrics": ["layer_sensitivity"]
}
JSON
  spec=$T/m110.json
elif [ -n "${MPQ_BENCH_WORKERS_MODEL:-}" ]; then
  echo "bench_workers.sh: MPQ_BENCH_WORKERS_MODEL: expected 110m or unset, got '$MPQ_BENCH_WORKERS_MODEL'" >&2
  exit 2
fi
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
  "$(awk -v a="${wall[1]}" -v b="${wall[2]}" 'BEGIN {print a / b}')" "$(basename "$spec")" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
if cmp -s "$T/w1.txt" "$T/w2.txt"; then echo "stored numbers: bit-identical"; else echo "stored numbers DIFFER"; exit 1; fi
