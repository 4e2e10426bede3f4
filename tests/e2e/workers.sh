#!/usr/bin/env bash
# workers.sh - the worker count and the environment's BLAS thread count change speed, never
# stored numbers: the main job (examples/stories260K.json) run with --workers 1 and
# --workers 2 under OPENBLAS_NUM_THREADS=2 / OMP_NUM_THREADS=2, and with both unset, stores
# bit-identical metrics (every value, stderr, n and provenance); same for a small hessian job.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data), MPQ_ROOT (project root).
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
: "${MPQ_ROOT:?project root}"

# the main job, as the README runs it (relative paths resolve from the project root)
main_spec="$MPQ_ROOT/examples/stories260K.json"
run_main() { # db workers [env assignments...]
  local db=$1 w=$2
  shift 2
  (cd "$MPQ_ROOT" && env "$@" "$MPQ" run "$main_spec" --db "$db" -q --workers "$w" > /dev/null) ||
    fail "main job, --workers $w, env $*: exit $?"
}
run_main "$T/m1.db" 1 OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2
run_main "$T/m2.db" 2 OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2
run_main "$T/m3.db" 2 -u OPENBLAS_NUM_THREADS -u OMP_NUM_THREADS
dump "$T/m1.db" > "$T/m1.txt"
dump "$T/m2.db" > "$T/m2.txt"
dump "$T/m3.db" > "$T/m3.txt"
n=$(wc -l < "$T/m1.txt")
[ "$n" -ge 1000 ] || fail "main job stored only $n metric rows"
cmp -s "$T/m1.txt" "$T/m2.txt" || { diff "$T/m1.txt" "$T/m2.txt" | head -4; fail "--workers 1 vs 2 differ"; }
cmp -s "$T/m1.txt" "$T/m3.txt" || { diff "$T/m1.txt" "$T/m3.txt" | head -4; fail "OPENBLAS_NUM_THREADS=2 vs unset differ"; }
ok "main job: $n metric rows bit-identical with 1 and 2 workers and any OPENBLAS_NUM_THREADS"

# a small hessian job (its weight_error units run on the workers, its chunks in order)
cat > "$T/h.json" <<JSON
{"name": "hw", "model": "$MODEL",
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 32, "n_seqs": 4, "batch": 4},
 "candidates": ["int3g32", "int4g32"],
 "metrics": ["weight_error", "layer_sensitivity", "hessian"],
 "hessian": {"probes_min": 4, "probes_max": 8, "probes_per_unit": 2, "n_seqs": 2, "seq_len": 16,
             "eig_iters": 4, "slq_steps": 5, "slq_probes": 2}}
JSON
OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 "$MPQ" run "$T/h.json" --db "$T/h1.db" -q --workers 1 > /dev/null
env -u OPENBLAS_NUM_THREADS -u OMP_NUM_THREADS "$MPQ" run "$T/h.json" --db "$T/h2.db" -q --workers 2 > /dev/null
dump "$T/h1.db" > "$T/h1.txt"
dump "$T/h2.db" > "$T/h2.txt"
grep -q '|hutchinson_trace|' "$T/h1.txt" || fail "hessian job stored no traces"
cmp -s "$T/h1.txt" "$T/h2.txt" || { diff "$T/h1.txt" "$T/h2.txt" | head -4; fail "hessian job: workers/threads change numbers"; }
ok "hessian job: $(wc -l < "$T/h1.txt") metric rows bit-identical"

# bad --workers values are usage errors
check "workers 0" 2 "bad --workers" -- "$MPQ" run "$T/h.json" --db "$T/x.db" --workers 0
check "workers 257" 2 "bad --workers" -- "$MPQ" run "$T/h.json" --db "$T/x.db" --workers 257
[ "$fails" = 0 ] || exit 1
