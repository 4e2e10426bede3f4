#!/usr/bin/env bash
# kv.sh - `mpq kv`: KV-cache precision search on a small real stories260K job. Checks the
# ladder / K-vs-V report, pruning and cluster artifacts, frontier + budget solutions, KVTuner
# and mpq-config export (the config is accepted by `mpq eval`), the joint table, --json (strict
# JSON checked against the database; NaN figures as null), and the exit codes of bad input
# (usage 2, not found 10, infeasible 9).
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
expect_rc() { # expected-code description command...
  local want=$1 what=$2; shift 2
  set +e; "$@" > "$T/out.txt" 2> "$T/err.txt"; local rc=$?; set -e
  [ "$rc" -eq "$want" ] || fail "$what: exit $rc, expected $want: $(cat "$T/err.txt")"
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
python3 - "$T/kvt.json" <<'PY' || fail "KVTuner JSON malformed"
import json, sys
d = json.load(open(sys.argv[1]))
assert sorted(d) == ["0", "1", "2", "3", "4"], d
for v in d.values():
    assert set(v) == {"nbits_key", "nbits_value"} and v["nbits_key"] in (2, 4, 8) and v["nbits_value"] in (2, 4, 8)
assert sum(v["nbits_key"] + v["nbits_value"] for v in d.values()) / 10 <= 3.25
PY
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
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d["blocks"])==5 and d["budgets"][0]["bits"]<=3' "$T/out.txt" \
  || fail "--json output"

# --json of prune + clusters + frontier + budget + evaluation, checked against the database.
# Strict parse: a bare NaN / Infinity (not JSON) fails; NaN figures must be null.
cat > "$T/strict.py" <<'PY'
import json, sys
def no_const(c): raise ValueError("not JSON: " + c)
d = json.load(open(sys.argv[1]), parse_constant=no_const)
PY
expect_rc 0 "json search" "$MPQ" kv kv --db "$DB" --json --prune --cluster 2 --frontier --budget kv-bits=4 \
  --evaluate --max-seqs 2
sqlite3 -separator ' ' "$DB" "SELECT id, printf('%.17g', objective) FROM solutions WHERE name='kv-bits-4'" > "$T/sol.txt"
python3 - "$T/out.txt" "$T/sol.txt" <<PY || fail "--json search output: $(head -c 300 "$T/out.txt")"
import json, sys
exec(open("$T/strict.py").read())
assert d["job"] == "kv" and d["metric"] == "kv_kl" and d["overhead"] is True
assert len(d["blocks"]) == 5 and all(len(b["pairs"]) == 7 for b in d["blocks"])
assert len(d["groups"]) == 5 and len(set(d["groups"])) == 2
fr = d["frontier"]
assert all(a["bits"] < b["bits"] and a["predicted"] > b["predicted"] for a, b in zip(fr, fr[1:]))
kept = [{p["pair"] for p in b["pairs"] if p["pareto"]} for b in d["blocks"]]
for pt in fr:
    assert all(pair in kept[i] for i, pair in enumerate(pt["pairs"]))
    assert all(pt["pairs"][i] == pt["pairs"][j] for i in range(5) for j in range(5) if d["groups"][i] == d["groups"][j])
    assert pt["measured"]["kl"] >= 0
sid, obj = open(sys.argv[2]).read().split()
b = d["budgets"][0]
assert b["solution"] == "kv-bits-4" and b["solution_id"] == int(sid), (b, sid)
assert b["predicted"] == float(obj) and b["bits"] <= 4 and fr[b["point"]]["predicted"] == b["predicted"]
assert d["spearman"] is None or -1 <= d["spearman"] <= 1
assert [u["pair"] for u in d["uniform"]] == ["k8v8", "k8v4", "k4v8", "k4v4", "k4v2", "k2v4", "k2v2"]
assert d["keys_vs_values"]["comparisons"] == len(d["keys_vs_values"]["items"]) == 10
PY

# NaN case: kv_attn_rel is stored without a standard error -> "se": null, "predicted_se": null
expect_rc 0 "json NaN" "$MPQ" kv kv --db "$DB" --json --metric kv_attn_rel --frontier
python3 - "$T/out.txt" <<PY || fail "--json with NaN figures: $(head -c 300 "$T/out.txt")"
import json, sys
exec(open("$T/strict.py").read())
assert all(p["se"] is None and p["error"] >= 0 for b in d["blocks"] for p in b["pairs"])
assert all(p["predicted_se"] is None for p in d["frontier"])
assert all(c["se"] is None for c in d["keys_vs_values"]["items"])
PY

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
