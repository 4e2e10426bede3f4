#!/usr/bin/env bash
# refine.sh - `mpq refine` on a small stories260K job: every iteration is stored as a solution
# of solver 'refine' with an evaluation; the selected (last accepted) iteration measures no
# worse than the additive one on the calibration windows it was chosen on; a refine killed
# (SIGKILL) after N measurements and run again stores exactly the numbers of an uninterrupted
# one; bad arguments are refused.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"

cat > "$T/spec.json" <<JSON
{"name": "rf", "model": "$MPQ_SHARED/models/stories260K/stories260K.bin",
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 64, "n_seqs": 8, "batch": 4},
 "evaluation": {"data": "$MPQ_SHARED/data/tinystories-eval.tok512.u16", "seq_len": 64, "n_seqs": 8, "seed": 2},
 "candidates": ["int2g32", "int3g32", "int4g32", "int8c"],
 "metrics": ["weight_error", "layer_sensitivity"]}
JSON
"$MPQ" run "$T/spec.json" --db "$T/a.db" -q > /dev/null
cp "$T/a.db" "$T/b.db"

# 1. uninterrupted
"$MPQ" refine rf --db "$T/a.db" --budget avg-bits=3.5 --iterations 3 --json -q > "$T/a.json"
n_sol=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM solutions WHERE solver='refine'")
n_it=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM solutions WHERE name LIKE 'refine@avg-bits=3.5;x=16/it%'")
[ "$n_sol" -ge 1 ] && [ "$n_sol" = "$n_it" ] || fail "refine solutions: $n_sol stored, $n_it named"
n_ev=$(sqlite3 "$T/a.db" "SELECT COUNT(DISTINCT e.solution_id) FROM evaluations e JOIN solutions s ON s.id=e.solution_id WHERE s.solver='refine'")
[ "$n_ev" = "$n_sol" ] || fail "evaluations: $n_ev for $n_sol solutions"
grep -q '"stop"' "$T/a.json" || fail "no stop reason in --json: $(cat "$T/a.json")"
# no stored iteration (re-solve or measured exchange) is over the budget
over=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM solutions WHERE solver='refine' AND
  json_extract(config_json, '$.mpq_solution.total_bits') > json_extract(config_json, '$.mpq_solution.budgets_resolved.bits')")
[ "$over" = 0 ] || fail "$over refine iterations over the bit budget"
n_x=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM metrics WHERE metric LIKE 'refine_kl@avg-bits=3.5;x=16#%' AND candidate LIKE 'x.%'")
[ "$n_x" -ge 1 ] || fail "no measured exchange stored"
echo "ok   $n_sol iterations, $n_x exchanges measured, none over budget"
# each stored iteration's calibration KL is below the previous one's (accepted only if lower)
sel=$(sqlite3 "$T/a.db" "SELECT MIN(value) FROM metrics WHERE metric LIKE 'refine_kl@avg-bits=3.5;x=16#%' AND layer_id IS NULL")
add=$(sqlite3 "$T/a.db" "SELECT value FROM metrics WHERE metric='refine_kl@avg-bits=3.5;x=16#0' AND layer_id IS NULL")
awk -v s="$sel" -v a="$add" 'BEGIN { exit !(s <= a) }' || fail "selected calibration KL $sel > additive $add"
# the last iteration's measured KL (evaluation windows) vs the additive one's: the loop decides
# on the calibration windows, so a higher number here is reported with both calibration KLs
kl0=$(sqlite3 "$T/a.db" "SELECT e.kl FROM evaluations e JOIN solutions s ON s.id=e.solution_id WHERE s.name='refine@avg-bits=3.5;x=16/it0'")
klN=$(sqlite3 "$T/a.db" "SELECT e.kl FROM evaluations e JOIN solutions s ON s.id=e.solution_id WHERE s.solver='refine' ORDER BY s.name DESC LIMIT 1")
if awk -v a="$klN" -v b="$kl0" 'BEGIN { exit !(a <= b) }'; then
  echo "ok   last iteration measures KL $klN <= additive $kl0"
else
  echo "note last iteration measures KL $klN > additive $kl0 on the evaluation windows; on the calibration windows $sel < $add"
fi
# the stored table of numbers
dump_refine() {
  sqlite3 -separator '|' "$1" "SELECT s.name, s.solver, printf('%.17g', s.objective), e.kl_printed FROM solutions s
    LEFT JOIN (SELECT solution_id, printf('%.17g', kl) AS kl_printed FROM evaluations) e ON e.solution_id = s.id
    WHERE s.solver='refine' ORDER BY s.name"
  sqlite3 -separator '|' "$1" "SELECT metric, candidate, COALESCE(layer_id, 0), printf('%.17g', value),
    printf('%.17g', stderr), n FROM metrics WHERE metric LIKE 'refine_kl@%' ORDER BY 1, 2, 3"
  sqlite3 "$1" "SELECT COUNT(*) FROM evaluations"
}
dump_refine "$T/a.db" > "$T/a.txt"

# 2. killed after 1, then 7 more measurements, then run to the end
for n in 1 7; do
  rc=0; MPQ_TEST_KILL_AFTER_UNITS=$n "$MPQ" refine rf --db "$T/b.db" --budget avg-bits=3.5 --iterations 3 -q \
    > /dev/null 2>&1 || rc=$?
  [ "$rc" -eq 137 ] || fail "kill after $n measurements: exit $rc, want 137"
  [ "$(sqlite3 "$T/b.db" 'PRAGMA integrity_check')" = ok ] || fail "integrity after kill"
done
"$MPQ" refine rf --db "$T/b.db" --budget avg-bits=3.5 --iterations 3 -q > "$T/b.out"
dump_refine "$T/b.db" > "$T/b.txt"
cmp -s "$T/a.txt" "$T/b.txt" || { diff "$T/a.txt" "$T/b.txt" | head -10; fail "killed+resumed refine differs"; }
# 3. running it again measures nothing new and stores the same numbers
"$MPQ" refine rf --db "$T/b.db" --budget avg-bits=3.5 --iterations 3 -q > "$T/c.out"
grep -q '(0 measurements run now)' "$T/c.out" || fail "re-run measured again: $(head -1 "$T/c.out")"
dump_refine "$T/b.db" > "$T/c.txt"
cmp -s "$T/a.txt" "$T/c.txt" || fail "re-run changed stored numbers"

# 4. bad arguments
check "no budget" 2 "budget" -- "$MPQ" refine rf --db "$T/a.db"
check "bad iterations" 2 "iterations" -- "$MPQ" refine rf --db "$T/a.db" --budget avg-bits=3.5 --iterations 0
check "bad exchanges" 2 "exchanges" -- "$MPQ" refine rf --db "$T/a.db" --budget avg-bits=3.5 --exchanges 257
check "bad exchange size" 2 "exchange-size" -- "$MPQ" refine rf --db "$T/a.db" --budget avg-bits=3.5 --exchange-size 5
check "bad reach" 2 "reach" -- "$MPQ" refine rf --db "$T/a.db" --budget avg-bits=3.5 --reach -1
check "unknown job" 10 "nojob" -- "$MPQ" refine nojob --db "$T/a.db" --budget avg-bits=3.5
check "infeasible" 9 "infeasible" -- "$MPQ" refine rf --db "$T/a.db" --budget avg-bits=2
[ "$fails" -eq 0 ] || exit 1
echo "refine: ok"
