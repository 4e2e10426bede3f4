#!/usr/bin/env bash
# kv.sh - `mpq kv`: KV-cache precision search on a small real stories260K job. Checks the
# ladder / K-vs-V report, pruning and cluster artifacts, frontier + budget solutions, KVTuner
# and mpq-config export (the config is accepted by `mpq eval`), the joint table, --json (strict
# JSON checked against the database; NaN figures as null), and the exit codes of bad input
# (usage 2, not found 10, infeasible 9).
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
# json_ok FILE MESSAGE CONDITION: FILE must be strict JSON (RFC 8259: a bare NaN or Infinity
# fails json_valid) and the SQL CONDITION, with j bound to the file's text, must be 1. Uses the
# sqlite3 shell's JSON functions, so the test needs neither python3 nor jq.
json_ok() {
  local r
  r=$(sqlite3 :memory: "WITH d(j) AS (SELECT CAST(readfile('$1') AS TEXT)) SELECT json_valid(j) AND ($3) FROM d") \
    || fail "$2: sqlite3 failed"
  [ "$r" = 1 ] || fail "$2: $(head -c 300 "$1")"
}

cat > "$T/spec.json" <<JSON
{"name": "kv", "model": "$MPQ_SHARED/models/stories260K/stories260K.bin",
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 64, "n_seqs": 2, "batch": 2},
 "evaluation": {"data": "$MPQ_SHARED/data/tinystories-eval.tok512.u16", "seq_len": 64, "n_seqs": 4, "seed": 2},
 "candidates": ["int3g32", "int8c"],
 "kv": {"scheme": {"mode": "kivi", "group_size": 32, "residual": 0},
        "pairs": ["k8v8", "k8v4", "k4v8", "k4v4", "k4v2", "k2v4", "k2v2"]},
 "metrics": ["layer_sensitivity", "kv_sensitivity"]}
JSON
DB="$T/kv.db"
"$MPQ" run "$T/spec.json" --db "$DB" -q > /dev/null

expect_rc 0 "help" "$MPQ" kv --help
grep -q -- "--export-kvtuner" "$T/out.txt" || fail "help lacks --export-kvtuner"

expect_rc 0 "ladder" "$MPQ" kv kv --db "$DB" --prune
grep -q "blk.4.kv" "$T/out.txt" || fail "ladder lacks blk.4.kv"
grep -q "summary: keys more sensitive in [0-9]* of 10 comparisons" "$T/out.txt" || fail "no K-vs-V summary: $(cat "$T/out.txt")"
[ "$(sqlite3 "$DB" "SELECT COUNT(*) FROM artifacts WHERE name='kv_prune'")" = 1 ] || fail "kv_prune artifact missing"

expect_rc 0 "frontier" "$MPQ" kv kv --db "$DB" --cluster 2 --frontier --nominal --budget kv-bits=3.25,4 \
  --export-kvtuner "$T/kvt.json" --export-config "$T/cfg.json"
grep -q "clusters .*: 2 groups" "$T/out.txt" || fail "no 2 clusters"
grep -q "kv-bits=3.25 -> point" "$T/out.txt" || fail "no budget pick"
[ "$(sqlite3 "$DB" "SELECT COUNT(*) FROM solutions WHERE name LIKE 'kv-bits-%'")" = 2 ] || fail "solutions not stored"
[ "$(sqlite3 "$DB" "SELECT COUNT(*) FROM frontiers")" -ge 1 ] || fail "frontier not stored"
json_ok "$T/kvt.json" "KVTuner JSON malformed" \
  "(SELECT count(*) FROM json_each(j)) = 5
   AND (SELECT count(DISTINCT key) FROM json_each(j) WHERE key IN ('0','1','2','3','4')) = 5
   AND (SELECT count(*) FROM json_each(j) e
        WHERE (SELECT group_concat(k, ',') FROM (SELECT key k FROM json_each(e.value) ORDER BY key)) = 'nbits_key,nbits_value'
          AND json_extract(e.value, '\$.nbits_key') IN (2, 4, 8) AND json_extract(e.value, '\$.nbits_value') IN (2, 4, 8)) = 5
   AND (SELECT sum(json_extract(value, '\$.nbits_key') + json_extract(value, '\$.nbits_value')) FROM json_each(j)) / 10.0 <= 3.25"
grep -q '"kv"' "$T/cfg.json" || fail "mpq config lacks kv"
"$MPQ" eval --model "$MPQ_SHARED/models/stories260K/stories260K.bin" --config "$T/cfg.json" \
  --data "$MPQ_SHARED/data/tinystories-eval.tok512.u16" --seq-len 64 --n-seqs 2 > /dev/null 2>&1 \
  || fail "mpq eval refuses the exported config"

expect_rc 0 "evaluate" "$MPQ" kv kv --db "$DB" --nominal --budget kv-bits=4 --evaluate --max-seqs 2
grep -q "Spearman(predicted, measured KL)" "$T/out.txt" || fail "no Spearman line"
[ "$(sqlite3 "$DB" "SELECT COUNT(*) FROM evaluations WHERE config_json LIKE '%k2v2%'")" -ge 1 ] || fail "evaluations not stored"

expect_rc 0 "joint" "$MPQ" kv kv --db "$DB" --context 256,1024,4096 --joint bytes=1000000
[ "$(grep -c "optimal" "$T/out.txt")" = 3 ] || fail "joint table: $(cat "$T/out.txt")"

expect_rc 0 "json" "$MPQ" kv kv --db "$DB" --json --budget kv-bits=3
json_ok "$T/out.txt" "--json output" \
  "json_array_length(j, '\$.blocks') = 5 AND json_extract(j, '\$.budgets[0].bits') <= 3"

# --json of prune + clusters + frontier + budget + evaluation, checked against the database.
# Strict parse (json_ok): a bare NaN / Infinity (not JSON) fails; NaN figures must be null.
expect_rc 0 "json search" "$MPQ" kv kv --db "$DB" --json --prune --cluster 2 --frontier --budget kv-bits=4 \
  --evaluate --max-seqs 2
# The budget's solution is checked against its row in the database. SQLite's text-to-double
# conversion may be one unit in the last place off correct rounding: hence the relative 1e-15
# on the objective.
json_ok "$T/out.txt" "--json search output" "
  json_extract(j, '\$.job') = 'kv' AND json_extract(j, '\$.metric') = 'kv_kl' AND json_type(j, '\$.overhead') = 'true'
  AND json_array_length(j, '\$.blocks') = 5
  AND (SELECT count(*) FROM json_each(j, '\$.blocks') WHERE json_array_length(value, '\$.pairs') = 7) = 5
  AND json_array_length(j, '\$.groups') = 5 AND (SELECT count(DISTINCT value) FROM json_each(j, '\$.groups')) = 2
  AND json_array_length(j, '\$.frontier') >= 1
  AND NOT EXISTS (SELECT 1 FROM json_each(j, '\$.frontier') a JOIN json_each(j, '\$.frontier') b ON b.key = a.key + 1
                  WHERE NOT (json_extract(a.value, '\$.bits') < json_extract(b.value, '\$.bits')
                             AND json_extract(a.value, '\$.predicted') > json_extract(b.value, '\$.predicted')))
  AND NOT EXISTS (SELECT 1 FROM json_each(j, '\$.frontier') f, json_each(f.value, '\$.pairs') p
                  WHERE NOT EXISTS (SELECT 1 FROM json_each(j, '\$.blocks[' || p.key || '].pairs') q
                                    WHERE json_extract(q.value, '\$.pair') = p.value AND json_type(q.value, '\$.pareto') = 'true'))
  AND NOT EXISTS (SELECT 1 FROM json_each(j, '\$.frontier') f, json_each(f.value, '\$.pairs') p1, json_each(f.value, '\$.pairs') p2
                  WHERE json_extract(j, '\$.groups[' || p1.key || ']') = json_extract(j, '\$.groups[' || p2.key || ']')
                    AND p1.value <> p2.value)
  AND NOT EXISTS (SELECT 1 FROM json_each(j, '\$.frontier') f WHERE NOT (json_extract(f.value, '\$.measured.kl') >= 0))
  AND json_extract(j, '\$.budgets[0].solution') = 'kv-bits-4' AND json_extract(j, '\$.budgets[0].bits') <= 4
  AND json_extract(j, '\$.budgets[0].solution_id') = $(sqlite3 "$DB" "SELECT id FROM solutions WHERE name='kv-bits-4'")
  AND abs(json_extract(j, '\$.budgets[0].predicted') - $(sqlite3 "$DB" "SELECT printf('%.17g', objective) FROM solutions WHERE name='kv-bits-4'"))
      <= 1e-15 * abs(json_extract(j, '\$.budgets[0].predicted'))
  AND json_extract(j, '\$.frontier[' || json_extract(j, '\$.budgets[0].point') || '].predicted') = json_extract(j, '\$.budgets[0].predicted')
  AND (json_type(j, '\$.spearman') = 'null' OR json_extract(j, '\$.spearman') BETWEEN -1 AND 1)
  AND (SELECT group_concat(p, ' ') FROM (SELECT json_extract(value, '\$.pair') p FROM json_each(j, '\$.uniform') ORDER BY key))
      = 'k8v8 k8v4 k4v8 k4v4 k4v2 k2v4 k2v2'
  AND json_extract(j, '\$.keys_vs_values.comparisons') = 10 AND json_array_length(j, '\$.keys_vs_values.items') = 10"

# NaN case: kv_attn_rel is stored without a standard error -> "se": null, "predicted_se": null
expect_rc 0 "json NaN" "$MPQ" kv kv --db "$DB" --json --metric kv_attn_rel --frontier
json_ok "$T/out.txt" "--json with NaN figures" "
  NOT EXISTS (SELECT 1 FROM json_each(j, '\$.blocks') b, json_each(b.value, '\$.pairs') p
              WHERE json_type(p.value, '\$.se') <> 'null' OR NOT (json_extract(p.value, '\$.error') >= 0))
  AND NOT EXISTS (SELECT 1 FROM json_each(j, '\$.frontier') f WHERE json_type(f.value, '\$.predicted_se') <> 'null')
  AND NOT EXISTS (SELECT 1 FROM json_each(j, '\$.keys_vs_values.items') c WHERE json_type(c.value, '\$.se') <> 'null')"

# --engine: only the pairs an engine offers as they are (vLLM: fp8 for K and V together; sglang:
# fp4/fp8 with K = V; llama.cpp: q4_1/q5_1/q8_0 per K and V)
pairs_used() { awk '/pairs per block/ {on=1; next} on && /^ +[0-9]+ / {for (i = 6; i <= NF; i++) print $i}' "$T/out.txt" | sort -u | tr '\n' ' '; }
expect_rc 0 "engine vllm" "$MPQ" kv kv --db "$DB" --engine vllm --frontier
[ "$(pairs_used)" = "k8v8 " ] || fail "engine vllm searched $(pairs_used)"
expect_rc 0 "engine sglang" "$MPQ" kv kv --db "$DB" --engine sglang --frontier
[ "$(pairs_used)" = "k4v4 k8v8 " ] || fail "engine sglang searched $(pairs_used)"
expect_rc 0 "engine llamacpp" "$MPQ" kv kv --db "$DB" --engine llamacpp --frontier
for p in $(pairs_used); do case $p in k4v4 | k4v8 | k8v4 | k8v8) ;; *) fail "engine llamacpp searched $p" ;; esac; done
expect_rc 5 "unknown engine" "$MPQ" kv kv --db "$DB" --engine bogus
grep -q "unknown KV engine 'bogus'" "$T/err.txt" || fail "unknown engine message: $(cat "$T/err.txt")"

# bad input -> documented exit codes, nothing stored
n_sol=$(sqlite3 "$DB" "SELECT COUNT(*) FROM solutions")
expect_rc 2 "no job" "$MPQ" kv --db "$DB"
expect_rc 2 "bad budget" "$MPQ" kv kv --db "$DB" --budget bits=3
expect_rc 2 "bad context" "$MPQ" kv kv --db "$DB" --context -5
expect_rc 2 "cluster+threshold" "$MPQ" kv kv --db "$DB" --cluster 2 --threshold 0.5
expect_rc 2 "export without budget" "$MPQ" kv kv --db "$DB" --export-kvtuner "$T/x.json"
expect_rc 2 "joint without context" "$MPQ" kv kv --db "$DB" --joint bytes=100000
expect_rc 10 "unknown job" "$MPQ" kv nosuchjob --db "$DB"
expect_rc 10 "unknown metric" "$MPQ" kv kv --db "$DB" --metric nope
expect_rc 9 "budget below frontier" "$MPQ" kv kv --db "$DB" --budget kv-bits=1
grep -q "exact frontier" "$T/out.txt" || fail "a failed budget no longer shows the frontier computed before it"
expect_rc 9 "joint infeasible" "$MPQ" kv kv --db "$DB" --context 4096 --joint bytes=1000
grep -q " 4096  infeasible (" "$T/out.txt" || fail "infeasible joint rows not shown: $(cat "$T/out.txt")"
expect_rc 3 "export to a directory" "$MPQ" kv kv --db "$DB" --budget kv-bits=4 --export-kvtuner "$T"
[ "$(sqlite3 "$DB" "SELECT COUNT(*) FROM solutions")" = "$n_sol" ] || fail "failed runs changed the solutions"
[ "$(sqlite3 "$DB" 'PRAGMA integrity_check')" = ok ] || fail "integrity_check"
echo "kv.sh: ok"
