#!/usr/bin/env bash
# solve.sh - end to end: run a small stories260K job, `mpq solve` at 3 budgets with --evaluate,
# `mpq pareto` with evaluated points, `mpq evaluate --all`, the stored solutions / frontier /
# evaluations through `mpq query`, and the exit codes: infeasible budget 9 (message names it),
# unknown job 10, bad budget syntax 2, unknown metric 5.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -u
source "${BASH_SOURCE[0]%/*}/lib/common.bash"

cat > "$T/spec.json" <<JSON
{"name": "sv", "model": "$MPQ_SHARED/models/stories260K/stories260K.bin",
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 32, "n_seqs": 4, "batch": 4},
 "evaluation": {"data": "$MPQ_SHARED/data/tinystories-eval.tok512.u16", "seq_len": 64, "n_seqs": 4},
 "candidates": ["int2g32", "int3g32", "int4g32", "int8c"]}
JSON
DB="$T/s.db"
"$MPQ" run "$T/spec.json" --db "$DB" -q > /dev/null || { echo "FAIL run"; exit 1; }

for b in 3.5 4.5 5.5; do
  if "$MPQ" solve sv --db "$DB" --budget avg-bits=$b --ties qkv --evaluate > "$T/s$b.txt" 2>&1 &&
     grep -q "status optimal" "$T/s$b.txt" && grep -q "Spearman" "$T/s$b.txt"; then
    avg=$(sed -n 's/^total: .* = \([0-9.]*\) bits\/weight.*/\1/p' "$T/s$b.txt")
    if awk -v a="$avg" -v b="$b" 'BEGIN { exit !(a <= b && a > b - 1) }'; then ok "solve avg-bits=$b ($avg)"; else bad "solve avg-bits=$b: avg $avg"; fi
  else bad "solve avg-bits=$b: $(cat "$T/s$b.txt")"; fi
done
# JSON output is a config with provenance
"$MPQ" solve sv --db "$DB" --budget avg-bits=4 --budget bops=20000000 --json > "$T/j.json" 2>&1 &&
  grep -q '"mpq_solution"' "$T/j.json" && grep -q '"solver":"ilp"' "$T/j.json" && ok "solve --json, two budgets -> ilp" ||
  bad "solve --json: $(head -c 400 "$T/j.json")"

if "$MPQ" pareto sv --db "$DB" --ties qkv --evaluate 2 > "$T/p.txt" 2>&1 && grep -q "<- knee" "$T/p.txt" &&
   grep -q "kl@pareto-2" "$T/p.txt"; then ok "pareto --evaluate 2"; else bad "pareto: $(cat "$T/p.txt")"; fi
"$MPQ" evaluate sv --db "$DB" --all > "$T/e.txt" 2>&1 && grep -q "uniform:int8c" "$T/e.txt" && ok "evaluate --all" ||
  bad "evaluate --all: $(cat "$T/e.txt")"

n_sol=$("$MPQ" query --db "$DB" --sql "SELECT COUNT(*) AS n FROM solutions WHERE status='optimal'" --json | tr -dc '0-9')
[ "$n_sol" -ge 7 ] && ok "query solutions ($n_sol optimal)" || bad "query solutions: $n_sol"
"$MPQ" query --db "$DB" solutions sv | grep -q "kl@avg-bits=4.5" && ok "query solutions lists kl@avg-bits=4.5" || bad "query solutions"
n_ev=$("$MPQ" query --db "$DB" --sql "SELECT COUNT(*) AS n FROM evaluations WHERE kl >= 0 AND ppl > 1" --json | tr -dc '0-9')
[ "$n_ev" -ge 9 ] && ok "evaluations stored ($n_ev)" || bad "evaluations stored: $n_ev"
n_uni=$("$MPQ" query --db "$DB" --sql "SELECT COUNT(*) AS n FROM evaluations WHERE solution_id IS NULL" --json | tr -dc '0-9')
[ "$n_uni" = 4 ] && ok "uniform baselines evaluated once each" || bad "uniform baselines: $n_uni rows, want 4"
"$MPQ" query --db "$DB" frontiers sv | grep -q "avg_bits" && ok "query frontiers" || bad "query frontiers"

code() { # name want needle -- cmd...
  local name=$1 want=$2 needle=$3; shift 4
  "$@" > "$T/o" 2> "$T/e"; local got=$?
  if [ "$got" = "$want" ] && grep -qF -- "$needle" "$T/e"; then ok "$name (exit $got)"; else bad "$name: exit $got want $want: $(cat "$T/e")"; fi
}
code infeasible 9 "avg-bits=2.5" -- "$MPQ" solve sv --db "$DB" --budget avg-bits=2.5
code unknown-job 10 "nojob" -- "$MPQ" solve nojob --db "$DB" --budget avg-bits=4
code bad-budget 2 "avg-bits=x" -- "$MPQ" solve sv --db "$DB" --budget avg-bits=x
code no-budget 2 "budget" -- "$MPQ" solve sv --db "$DB"
code unknown-metric 5 "nosuch" -- "$MPQ" solve sv --db "$DB" --budget avg-bits=4 --metric nosuch
code unknown-solution 10 "nosol" -- "$MPQ" evaluate sv --db "$DB" nosol
code dp-two-budgets 5 "dp" -- "$MPQ" solve sv --db "$DB" --budget avg-bits=4 --budget bops=1000000000 --solver dp
"$MPQ" solve --help | grep -q "avg-bits" && "$MPQ" pareto --help | grep -q knee && "$MPQ" evaluate --help | grep -q Spearman &&
  ok "--help texts" || bad "--help texts"

[ "$fails" = 0 ] || { echo "$fails failure(s)"; exit 1; }
echo "all ok"
