#!/usr/bin/env bash
# noise.sh - the noise_sensitivity stage and what uses it, through the CLI: a job with 1 worker
# and the same job killed (SIGKILL) inside the stage with 2 workers and resumed store
# bit-identical rows; `mpq solve --metric noise_a*weight_rel` optimizes exactly the sum of
# noise_a x weight_rel over the chosen candidates (checked in SQL); `mpq evaluate --random`
# stores seeded random configurations (solver "random"), measures them once and reports
# Spearman over them; `mpq refine --metric` starts from that loss; hostile noise sections, expressions and options are refused with the
# documented exit code and a message naming the problem, and nothing stored changes.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"

spec() { # name noise-section
  cat <<JSON
{"name": "$1", "model": "$MODEL",
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 32, "n_seqs": 4, "batch": 2},
 "candidates": ["int3g32", "int4g32", "int8c"],
 "metrics": ["weight_error", "noise_sensitivity"], "noise": $2}
JSON
}
spec nz '{"levels": [0.001, 0.01, 0.1], "seed": 4}' > "$T/spec.json"
TOTAL=70 # 35 weight_error + 35 noise_sensitivity

done_units() { sqlite3 "$1" "SELECT COUNT(*) FROM units WHERE status='done'"; }
"$MPQ" run "$T/spec.json" --db "$T/a.db" --workers 1 -q > /dev/null
[ "$(done_units "$T/a.db")" = "$TOTAL" ] || fail "reference run: $(done_units "$T/a.db") / $TOTAL units"
dump "$T/a.db" > "$T/a.txt"
[ "$(grep -c '|noise_a|' "$T/a.txt")" -eq 35 ] || fail "noise_a rows"
[ "$(grep -c '|noise_kl_2|' "$T/a.txt")" -eq 35 ] || fail "noise_kl_2 rows"
grep -q '"realized":\[' "$T/a.txt" || fail "provenance lacks the realized levels"
# noise_a is the mean of noise_kl_i / t_i over the realized levels, from the stored rows
bad=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM metrics a
  JOIN metrics k0 ON k0.layer_id = a.layer_id AND k0.metric = 'noise_kl_0'
  JOIN metrics k1 ON k1.layer_id = a.layer_id AND k1.metric = 'noise_kl_1'
  JOIN metrics k2 ON k2.layer_id = a.layer_id AND k2.metric = 'noise_kl_2'
  WHERE a.metric = 'noise_a' AND abs(a.value - (k0.value / json_extract(a.provenance_json, '\$.noise.realized[0]')
    + k1.value / json_extract(a.provenance_json, '\$.noise.realized[1]')
    + k2.value / json_extract(a.provenance_json, '\$.noise.realized[2]')) / 3) > 1e-12 * a.value")
[ "$bad" = 0 ] || fail "$bad noise_a rows are not the mean of noise_kl_i / t_i"

# SIGKILL inside the noise stage with 2 workers, resume, same numbers
rc=0; MPQ_TEST_KILL_AFTER_UNITS=40 "$MPQ" run "$T/spec.json" --db "$T/b.db" --workers 2 -q > /dev/null 2>&1 || rc=$?
[ "$rc" -eq 137 ] || fail "kill after 40 units: exit $rc, want 137"
[ "$(sqlite3 "$T/b.db" 'PRAGMA integrity_check')" = ok ] || fail "b.db integrity"
"$MPQ" resume nz --db "$T/b.db" --workers 2 -q > /dev/null
dump "$T/b.db" > "$T/b.txt"
cmp -s "$T/a.txt" "$T/b.txt" || { diff "$T/a.txt" "$T/b.txt" | head -5; fail "killed+resumed numbers differ"; }
ok "kill -9 + resume with 2 workers == 1 worker uninterrupted"

# solve with the product: the objective is the sum of noise_a * weight_rel of the choice
"$MPQ" solve nz --db "$T/a.db" --budget avg-bits=4.5 --metric 'noise_a*weight_rel' --no-smooth -n prod > "$T/solve.txt"
obj=$(sqlite3 "$T/a.db" "SELECT printf('%.17g', objective) FROM solutions WHERE name='prod'")
sql=$(sqlite3 "$T/a.db" "SELECT printf('%.17g', SUM(a.value * r.value)) FROM assignments s
  JOIN solutions so ON so.id = s.solution_id AND so.name = 'prod'
  JOIN metrics a ON a.layer_id = s.layer_id AND a.metric = 'noise_a' AND a.candidate = ''
  JOIN metrics r ON r.layer_id = s.layer_id AND r.metric = 'weight_rel' AND r.candidate = s.candidate")
awk -v a="$obj" -v b="$sql" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-12 * b) }' ||
  fail "objective $obj != SQL sum $sql"
ok "solve noise_a*weight_rel optimizes the SQL sum"

# random configurations: seeded, stored with solver random, measured once
"$MPQ" evaluate nz --db "$T/a.db" --random 4 --seed 9 --metric 'noise_a*weight_rel' --workers 2 --json > "$T/r1.json"
grep -q '"spearman_n":[[:space:]]*4' "$T/r1.json" || fail "spearman_n != 4: $(cat "$T/r1.json")"
[ "$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM solutions WHERE solver='random' AND name LIKE 'random-9-%'")" = 4 ] ||
  fail "4 random solutions not stored"
assign() { sqlite3 "$T/a.db" "SELECT group_concat(candidate) FROM (SELECT s.candidate FROM assignments s
  JOIN solutions so ON so.id = s.solution_id WHERE so.name = '$1' ORDER BY s.layer_id)"; }
a1=$(assign random-9-2)
[ -n "$a1" ] || fail "random-9-2 has no assignments"
n_ev=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM evaluations")
[ "$n_ev" = 4 ] || fail "$n_ev evaluations, want 4"
"$MPQ" evaluate nz --db "$T/a.db" --random 4 --seed 9 --metric weight_rel > "$T/r2.txt"
grep -q "measured 0, kept 4" "$T/r2.txt" || fail "re-run measured again: $(cat "$T/r2.txt")"
grep -q "Spearman rank correlation (predicted vs measured KL): .* over 4 random configurations" "$T/r2.txt" ||
  fail "no Spearman line"
[ "$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM evaluations")" = 4 ] || fail "re-run added evaluations"
[ "$(assign random-9-2)" = "$a1" ] || fail "the same seed drew other assignments under another metric"
ok "evaluate --random stores, measures once, reports Spearman"

# hostile input: exit codes and messages; nothing stored changes
dump "$T/a.db" > "$T/before.txt"
spec bad '{"levels": [0.1, 0.01]}' > "$T/bad1.json"
spec bad '{"levels": [1, 2, 3, 4, 5, 6, 7, 8, 9]}' > "$T/bad2.json"
spec bad '{"levels": [0, 0.1]}' > "$T/bad3.json"
spec bad '{"levels": [0.1], "sigma": 1}' > "$T/bad4.json"
check "levels not increasing" 5 "noise.levels[1]: 0.01 is not above the previous level" -- "$MPQ" run "$T/bad1.json" --db "$T/a.db"
check "too many levels" 5 "noise.levels: expected 1..8 levels, got 9" -- "$MPQ" run "$T/bad2.json" --db "$T/a.db"
check "level not positive" 5 "noise.levels[0]: expected a finite number in (0, 10]" -- "$MPQ" run "$T/bad3.json" --db "$T/a.db"
check "unknown noise key" 5 "noise.sigma: unknown key" -- "$MPQ" run "$T/bad4.json" --db "$T/a.db"
check "two per-candidate factors" 5 "multiplies two per-candidate metrics" -- \
  "$MPQ" solve nz --db "$T/a.db" --budget avg-bits=4.5 --metric 'weight_rel*act_rel'
check "two per-layer factors" 5 "multiplies two per-layer metrics" -- \
  "$MPQ" solve nz --db "$T/a.db" --budget avg-bits=4.5 --metric 'noise_a*xtx_trace'
check "unknown factor" 5 "'noise_b' is not stored for job 'nz'" -- \
  "$MPQ" pareto nz --db "$T/a.db" --metric 'noise_b*weight_rel'
check "three factors" 5 "at most two metrics in a product" -- \
  "$MPQ" evaluate nz --db "$T/a.db" --random 2 --metric 'noise_a*weight_rel*act_rel'
check "missing metric in --random" 5 "'kl' is not stored" -- "$MPQ" evaluate nz --db "$T/a.db" --random 2 --metric 'noise_a*kl'
check "--random 0" 2 "bad --random '0'" -- "$MPQ" evaluate nz --db "$T/a.db" --random 0
check "--random 1001" 2 "bad --random '1001'" -- "$MPQ" evaluate nz --db "$T/a.db" --random 1001
check "--seed -1" 2 "bad --seed '-1'" -- "$MPQ" evaluate nz --db "$T/a.db" --random 2 --seed -1
check "--random with names" 2 "--random cannot be combined" -- "$MPQ" evaluate nz prod --db "$T/a.db" --random 2
check "--random on solve" 2 "--random and --seed apply to mpq evaluate" -- "$MPQ" solve nz --db "$T/a.db" --budget avg-bits=4 --random 2
dump "$T/a.db" > "$T/after.txt"
cmp -s "$T/before.txt" "$T/after.txt" || fail "refused commands changed stored metrics"
[ "$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM evaluations")" = 4 ] || fail "refused commands added evaluations"

# refine with the product as its additive loss (iteration 0 is the solve of that loss)
check "refine without kl rows" 5 "metric 'kl' missing for layer" -- "$MPQ" refine nz --db "$T/a.db" --budget avg-bits=4.5 -n 1 -q
"$MPQ" refine nz --db "$T/a.db" --budget avg-bits=4.5 --metric 'noise_a*weight_rel' -n 1 -q > "$T/refine.txt"
me=$(sqlite3 "$T/a.db" "SELECT metric_expr FROM solutions WHERE name LIKE 'refine@avg-bits=4.5;%metric=noise_a*weight_rel%/it0'")
[ "$me" = 'noise_a*weight_rel' ] || fail "refine it0: metric_expr '$me'"
[ "$fails" = 0 ] || exit 1
echo "noise: all passed"
