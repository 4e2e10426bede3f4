#!/usr/bin/env bash
# pairs.sh - `mpq pairs` and `mpq solve --pairs` on a small stories260K job: the terms around a
# solution are stored as pair_kl / pair_interaction rows with interaction = pair_kl - kl(i) -
# kl(j); a pairs run killed (SIGKILL) twice and run again stores exactly the numbers of an
# uninterrupted one, and a re-run measures nothing; solve --pairs stores its terms in the
# provenance; hostile arguments: unknown solution, reach out of range, a job without
# layer_sensitivity, a metric other than kl.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"

cat > "$T/spec.json" <<JSON
{"name": "pr", "model": "$MPQ_SHARED/models/stories260K/stories260K.bin",
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 32, "n_seqs": 4, "batch": 4},
 "evaluation": {"data": "$MPQ_SHARED/data/tinystories-eval.tok512.u16", "seq_len": 32, "n_seqs": 4, "seed": 2},
 "candidates": ["int2g32", "int3g32", "int4g32", "int8c"],
 "metrics": ["weight_error", "layer_sensitivity"]}
JSON
"$MPQ" run "$T/spec.json" --db "$T/a.db" -q --workers 2 > /dev/null
"$MPQ" solve pr --db "$T/a.db" --budget avg-bits=3.5 > /dev/null
cp "$T/a.db" "$T/b.db"

dump_pairs() {
  sqlite3 -separator '|' "$1" "SELECT l.name, m.candidate, m.metric, printf('%.17g', m.value),
    COALESCE(printf('%.17g', m.stderr), 'NULL'), m.n FROM metrics m JOIN layers l ON l.id = m.layer_id
    WHERE m.metric IN ('pair_kl', 'pair_interaction') ORDER BY 1, 2, 3"
}

# 1. uninterrupted
"$MPQ" pairs pr --db "$T/a.db" --solution kl@avg-bits=3.5 --json -q > "$T/a.json"
"$(dirname "$MPQ")/mpq_json_check" < "$T/a.json" > /dev/null || fail "pairs --json is not JSON"
n_terms=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM units WHERE stage='pairs' AND status='done'")
n_int=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM metrics WHERE metric='pair_interaction'")
[ "$n_terms" -gt 100 ] && [ "$n_terms" = "$n_int" ] || fail "pairs: $n_terms units, $n_int interaction rows"
grep -q "\"terms\": *$n_terms" "$T/a.json" || fail "terms in --json differ from stored units ($n_terms)"
# every interaction row is pair_kl - kl(i, a) - kl(j, b), computed from the stored rows
bad_rows=$(sqlite3 "$T/a.db" "
  SELECT COUNT(*) FROM metrics pi
  JOIN metrics pk ON pk.layer_id = pi.layer_id AND pk.candidate = pi.candidate AND pk.metric = 'pair_kl'
  JOIN metrics ki ON ki.layer_id = pi.layer_id AND ki.metric = 'kl'
       AND ki.candidate = substr(pi.candidate, 1, instr(pi.candidate, '|') - 1)
  JOIN layers lj ON lj.model_id = (SELECT model_id FROM jobs LIMIT 1)
       AND lj.name = substr(pi.candidate, instr(pi.candidate, '|') + 1,
                            instr(pi.candidate, '=') - instr(pi.candidate, '|') - 1)
  JOIN metrics kj ON kj.layer_id = lj.id AND kj.metric = 'kl'
       AND kj.candidate = substr(pi.candidate, instr(pi.candidate, '=') + 1)
  WHERE pi.metric = 'pair_interaction' AND pi.value != pk.value - ki.value - kj.value")
checked=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM metrics pi JOIN metrics pk ON pk.layer_id = pi.layer_id
  AND pk.candidate = pi.candidate AND pk.metric = 'pair_kl' WHERE pi.metric = 'pair_interaction'")
[ "$bad_rows" = 0 ] && [ "$checked" = "$n_int" ] || fail "interaction rows: $bad_rows of $checked differ from pair_kl - kl - kl"
ok "pairs: $n_terms terms stored, interaction = pair_kl - kl - kl on every row"
dump_pairs "$T/a.db" > "$T/a.txt"

# 2. killed after 5, then 40 more commits, then run to the end
for n in 5 40; do
  rc=0; MPQ_TEST_KILL_AFTER_UNITS=$n "$MPQ" pairs pr --db "$T/b.db" --solution kl@avg-bits=3.5 -q > /dev/null 2>&1 || rc=$?
  [ "$rc" -eq 137 ] || fail "kill after $n terms: exit $rc, want 137"
  [ "$(sqlite3 "$T/b.db" 'PRAGMA integrity_check')" = ok ] || fail "integrity after kill"
done
part=$(sqlite3 "$T/b.db" "SELECT COUNT(*) FROM metrics WHERE metric='pair_interaction'")
[ "$part" -ge 45 ] && [ "$part" -lt "$n_int" ] || fail "after two kills: $part terms stored (want 45..$((n_int - 1)))"
"$MPQ" pairs pr --db "$T/b.db" --solution kl@avg-bits=3.5 -q > "$T/b.out"
dump_pairs "$T/b.db" > "$T/b.txt"
cmp -s "$T/a.txt" "$T/b.txt" || { diff "$T/a.txt" "$T/b.txt" | head -10; fail "killed+resumed pairs differ"; }
"$MPQ" pairs pr --db "$T/b.db" --solution kl@avg-bits=3.5 -q > "$T/c.out"
grep -q "(0 measured now)" "$T/c.out" || fail "re-run measured again: $(head -1 "$T/c.out")"
ok "killed twice and resumed: identical numbers; re-run measures nothing"

# --solution-only: one term per same-block layer pair (5 blocks x 21), all already stored
"$MPQ" pairs pr --db "$T/a.db" --solution kl@avg-bits=3.5 --solution-only --json -q > "$T/own.json"
own_terms=$(sqlite3 :memory: "SELECT json_extract(readfile('$T/own.json'), '\$.terms') || ' ' ||
  json_extract(readfile('$T/own.json'), '\$.measured_now') || ' ' || json_extract(readfile('$T/own.json'), '\$.layer_pairs')")
[ "$own_terms" = "105 0 105" ] || fail "--solution-only: terms, measured now, layer pairs = $own_terms (want 105 0 105)"
ok "--solution-only: 105 terms, none measured again"

# 3. solve with the terms
"$MPQ" solve pr --db "$T/a.db" --budget avg-bits=3.5 --pairs > "$T/s.out"
grep -q "kl+pairs@avg-bits=3.5" "$T/s.out" || fail "solve --pairs: $(head -3 "$T/s.out")"
nt=$(sqlite3 "$T/a.db" "SELECT json_extract(config_json, '$.mpq_solution.pair_terms') FROM solutions WHERE name='kl+pairs@avg-bits=3.5'")
[ "$nt" = "$n_int" ] || fail "solve --pairs used $nt terms, stored $n_int"
ok "solve --pairs: $nt terms in the ILP"
# both linearisations reach the same optimum (GLPK proves each up to its relative tol_obj 1e-7)
"$MPQ" solve pr --db "$T/a.db" --budget avg-bits=3.5 --pairs --pairs-form standard --name std > /dev/null
oa=$(sqlite3 "$T/a.db" "SELECT printf('%.17g', objective) FROM solutions WHERE name='kl+pairs@avg-bits=3.5'")
os=$(sqlite3 "$T/a.db" "SELECT printf('%.17g', objective) FROM solutions WHERE name='std'")
awk -v a="$oa" -v b="$os" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-7 * (1 + (a < 0 ? -a : a))) }' ||
  fail "aggregated objective $oa, standard $os"
ok "aggregated and standard linearisations: same optimum $oa"

# 4. hostile arguments
check "unknown solution" 10 "no solution 'nosuch'" -- "$MPQ" pairs pr --db "$T/a.db" --solution nosuch
check "reach out of range" 5 "reach 4 out of range" -- "$MPQ" pairs pr --db "$T/a.db" --solution kl@avg-bits=3.5 --reach 4
check "bad reach" 2 "reach" -- "$MPQ" pairs pr --db "$T/a.db" --solution kl@avg-bits=3.5 --reach -1
check "bad scope" 2 "scope" -- "$MPQ" pairs pr --db "$T/a.db" --solution kl@avg-bits=3.5 --scope blocks
check "no solution option" 2 "--solution" -- "$MPQ" pairs pr --db "$T/a.db"
check "unknown job" 10 "nojob" -- "$MPQ" pairs nojob --db "$T/a.db" --solution kl@avg-bits=3.5
check "bad pairs form" 2 "pairs-form" -- "$MPQ" solve pr --db "$T/a.db" --budget avg-bits=3.5 --pairs --pairs-form rlt
check "pairs with dloss" 5 "--pairs needs --metric kl" -- "$MPQ" solve pr --db "$T/a.db" --budget avg-bits=3.5 --pairs --metric dloss
sed -e 's/"name": "pr"/"name": "we"/' -e 's/, "layer_sensitivity"//' "$T/spec.json" > "$T/we.json"
"$MPQ" run "$T/we.json" --db "$T/a.db" -q > /dev/null
check "no layer_sensitivity" 5 "no single-layer kl" -- "$MPQ" pairs we --db "$T/a.db" --solution x
[ "$fails" -eq 0 ] || exit 1
echo "pairs: ok"
