#!/usr/bin/env bash
# saq.sh - the SAQ candidates saq<R> / saqc<R> end to end on stories260K:
# - a job with saqc3 and int3g32 measures weight_error and layer_sensitivity (X^T X from the
#   job's reference; also collected for a layer_sensitivity-only job with a saq candidate), solve --evaluate measures a solution with saqc layers (the job's
#   calibration rebuilt for X^T X) and the uniform saqc3 baseline; refine measures saqc moves
#   in context (the job's calibration again) without NaN;
# - saq7 (fp16 basis 16 * 64^2 bits) is achievable only on the 172 x 64 ffn_gate/up layers: the
#   job completes and resumes, the other (layer, saq7) pairs are stored as "unavailable" with the
#   reason, shown by status / report, and absent for the solvers;
# - without calibration: mpq eval --config and mpq quant refuse (exit 6) naming the candidate;
# - exporters other than mpq refuse a config with a saqc layer (exit 6, layer and candidate
#   named, no file written); the mpq format writes it.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data), MPQ_ROOT (project root).
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
S=$MPQ_SHARED
TOK=$S/models/stories260K/tok512.bin
spec() { # name candidates-json metrics-json
  cat > "$T/$1.json" <<JSON
{"name": "$1", "model": "$MODEL", "tokenizer": "$TOK", "seed": 1,
 "calibration": {"data": "$S/data/tinystories-calib.tok512.u16", "seq_len": 64, "n_seqs": 4, "seed": 1, "batch": 4},
 "evaluation": {"data": "$S/data/tinystories-eval.tok512.u16", "seq_len": 64, "n_seqs": 4, "seed": 2},
 "candidates": $2, "metrics": $3}
JSON
}
spec saqjob '["saqc3", "int3g32"]' '["weight_error", "layer_sensitivity"]'
check "run saqc job" 0 "done" -- "$MPQ" run "$T/saqjob.json" --db "$T/db" --workers 2
n=$("$MPQ" query --db "$T/db" --json layers saqjob --candidate saqc3 --metric kl | grep -o '"metric": *"kl"' | wc -l)
[ "$n" = 35 ] && ok "saqc3 kl stored for 35 layers" || bad "saqc3 kl stored for $n layers, want 35"
check "solve --evaluate with saqc" 0 "uniform:saqc3" -- "$MPQ" solve saqjob --db "$T/db" --budget avg-bits=3.5 \
  --evaluate --workers 2
# int3g32 alone is 4.03 bits/weight on stories260K: a 3.5-bit solution must use saqc3 layers
grep -qE '^blk\.[^ ]+ +saqc3 ' "$T/out" && ok "solution uses saqc3" || bad "solution without saqc3"

check "refine with saqc" 0 "refine" -- "$MPQ" refine saqjob --db "$T/db" --budget avg-bits=3.5 --iterations 1
grep -qi "nan" "$T/out" && bad "refine output has NaN" || ok "refine output has no NaN"
check "pairs refuses saq candidates" 6 "SAQ candidates are not supported by mpq pairs" -- \
  "$MPQ" pairs saqjob --db "$T/db" --solution kl@avg-bits=3.5

spec klonly '["saqc4"]' '["layer_sensitivity"]'
check "layer_sensitivity alone collects X^T X for saqc" 0 "done" -- "$MPQ" run "$T/klonly.json" --db "$T/db3" --workers 1

# saq7 on stories260K: the fp16 basis (16 * 64^2 = 65536 bits) fits only the 172 x 64 ffn_gate /
# ffn_up matrices (7 * 11008 = 77056 bits); on the other 5 x 5 layers the rate is not achievable.
# The job completes (also when interrupted and resumed), those 25 pairs are stored as metric
# "unavailable" with the quantizer's message, and no kl / weight rows exist for them.
spec pcajob '["saq7", "int4g32"]' '["weight_error", "layer_sensitivity"]'
check "saq7 job interrupted" 130 "interrupted" -- "$MPQ" run "$T/pcajob.json" --db "$T/db2" --workers 2 --max-units 20
check "saq7 job resumed" 0 "done: 105/105 units" -- "$MPQ" resume pcajob --db "$T/db2" --workers 2
q() { sqlite3 "$T/db2" "SELECT COUNT(*) FROM metrics m JOIN layers l ON l.id=m.layer_id WHERE m.candidate='saq7' AND $1"; }
[ "$(q "m.metric='unavailable' AND l.kind IN ('attn_q','attn_k','attn_v','attn_o','ffn_down')")" = 25 ] &&
  [ "$(q "m.metric='unavailable'")" = 25 ] && ok "25 pairs stored as unavailable" || bad "unavailable rows: $(q "m.metric='unavailable'")"
[ "$(q "m.metric='kl'")" = 10 ] && [ "$(q "m.metric='weight_rel'")" = 10 ] && ok "saq7 measured on the 10 ffn_gate/up layers" ||
  bad "saq7 kl rows $(q "m.metric='kl'"), weight_rel rows $(q "m.metric='weight_rel'")"
[ "$(sqlite3 "$T/db2" "SELECT COUNT(*) FROM units WHERE status!='done'")" = 0 ] && ok "every unit done" || bad "units not done"
check "status names the skipped pairs" 0 "blk.2.attn_v saq7: layer blk.2.attn_v: candidate saq7: rate not achievable: 32 x 64 has 14336 bits" -- \
  "$MPQ" status pcajob --db "$T/db2"
"$MPQ" status pcajob --db "$T/db2" --json > "$T/st.json"
python3 - "$T/st.json" <<'PY' && ok "status --json lists 25 unavailable pairs" || bad "status --json unavailable"
import json, sys
u = json.load(open(sys.argv[1]))["unavailable"]
assert len(u) == 25 and all(x["candidate"] == "saq7" and "rate not achievable" in x["reason"] for x in u), u[:2]
assert u[0]["layer"] == "blk.0.attn_q"
PY
check "report lists the skipped pairs" 0 "wrote" -- "$MPQ" report pcajob --db "$T/db2" -o "$T/r.md"
grep -q '^| blk.4.ffn_down | saq7 | layer blk.4.ffn_down: candidate saq7: rate not achievable: 64 x 172' "$T/r.md" &&
  ok "report table row" || bad "report lacks the skipped pair"
check "solve pins saq7 where it exists" 0 "blk.0.ffn_gate         saq7" -- "$MPQ" solve pcajob --db "$T/db2" \
  --budget avg-bits=6 --pin blk.0.ffn_gate=saq7 --name pinned
check "solve refuses saq7 where it does not" 5 "--pin: blk.0.attn_q pinned to saq7" -- "$MPQ" solve pcajob --db "$T/db2" \
  --budget avg-bits=6 --pin blk.0.attn_q=saq7
check "solve --evaluate skips the saq7 uniform baseline" 0 "no uniform baseline for saq7: its rate is not achievable on blk.0.attn_q" -- \
  "$MPQ" solve pcajob --db "$T/db2" --budget avg-bits=5.5 --evaluate --workers 2
# mpq evaluate --json: "evaluation" is the measurement just made of the one solution asked for
# ("evaluations" is sorted by avg bits: the 5.13-bit solution "pinned" is not its first row)
"$MPQ" evaluate pcajob pinned --db "$T/db2" --json > "$T/ev1.json" 2> "$T/err"
maxid=$(sqlite3 "$T/db2" "SELECT MAX(id) FROM evaluations")
python3 - "$T/ev1.json" "$maxid" <<'PY' && ok "evaluate --json: evaluation is the requested one" || bad "evaluate --json evaluation"
import json, sys
d = json.load(open(sys.argv[1]))
e = d["evaluation"]
assert e["solution"] == "pinned" and e["evaluation_id"] == int(sys.argv[2]), e
assert d["requested"] == [e], d["requested"]
rows = [r for r in d["evaluations"] if r["requested"]]
assert len(rows) == 1 and rows[0]["label"] == "pinned" and rows[0]["kl"] == e["kl"], rows
assert d["evaluations"][0]["label"] != "pinned"
PY
"$MPQ" evaluate pcajob pinned kl@avg-bits=5.5 --no-uniform --db "$T/db2" --json > "$T/ev2.json"
python3 - "$T/ev2.json" <<'PY' && ok "evaluate --json: two requested in order, evaluation null" || bad "evaluate --json two"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["evaluation"] is None
assert [r["solution"] for r in d["requested"]] == ["pinned", "kl@avg-bits=5.5"], d["requested"]
assert d["requested"][0]["evaluation_id"] + 1 == d["requested"][1]["evaluation_id"]
assert sorted(r["label"] for r in d["evaluations"] if r["requested"]) == ["kl@avg-bits=5.5", "pinned"]
PY
# --random draws each layer's candidate among those available there
check "random configurations avoid unavailable pairs" 0 "random-1-2" -- "$MPQ" evaluate pcajob --random 3 --seed 1 \
  --db "$T/db2" --workers 2
[ "$(sqlite3 "$T/db2" "SELECT COUNT(*) FROM assignments a JOIN solutions s ON s.id = a.solution_id
      JOIN layers l ON l.id = a.layer_id WHERE s.solver = 'random' AND a.candidate = 'saq7'
      AND l.kind NOT IN ('ffn_gate', 'ffn_up')")" = 0 ] &&
  [ "$(sqlite3 "$T/db2" "SELECT COUNT(*) FROM assignments a JOIN solutions s ON s.id = a.solution_id
      WHERE s.solver = 'random' AND a.candidate = 'saq7'")" -gt 0 ] &&
  ok "random picks saq7 only on ffn_gate/up" || bad "random configurations and saq7"
check "bootstrap skips the unavailable pairs" 0 "resamples" -- "$MPQ" bootstrap pcajob --db "$T/db2" \
  --budget avg-bits=5.5 --resamples 20

# under "adaptive" the unavailable units are never extended and the rounds still decide
cat > "$T/ad.json" <<JSON
{"name": "ad", "model": "$MODEL", "tokenizer": "$TOK", "seed": 1,
 "calibration": {"data": "$S/data/tinystories-calib.tok512.u16", "seq_len": 32, "n_seqs": 8, "seed": 1, "batch": 2},
 "candidates": ["saq7", "int4g32", "int3g32"], "metrics": ["layer_sensitivity"],
 "adaptive": {"budgets": ["avg-bits=4.5", "avg-bits=5.5"], "min_windows": 2, "step": 2, "z": 2}}
JSON
check "adaptive job with unavailable pairs" 0 "done" -- "$MPQ" run "$T/ad.json" --db "$T/db4" --workers 2
[ "$(sqlite3 "$T/db4" "SELECT COUNT(*) FROM units WHERE key LIKE 'round.%/blk.0.attn_q/saq7'")" = 0 ] &&
  [ "$(sqlite3 "$T/db4" "SELECT COUNT(*) FROM units WHERE key LIKE 'round.%'")" -gt 0 ] &&
  ok "rounds ran, no unavailable unit extended" || bad "adaptive rounds with unavailable units"

printf '{"mpq_config_version":1,"weights":{"default":"int4g32","layers":{"blk.1.ffn_up":"saqc3.25"}}}' > "$T/c.json"
check "eval --config refuses" 6 "candidate saqc3.25 needs the layer's calibration statistics" -- \
  "$MPQ" eval --model "$MODEL" --tokenizer "$TOK" --data "$S/data/tinystories-eval.tok512.u16" --n-seqs 2 \
  --config "$T/c.json"
check "quant refuses" 6 "candidate saqc4 needs the layer's calibration statistics" -- \
  "$MPQ" quant --model "$MODEL" --layer blk.0.attn_q --candidates int4g32,saqc4
for f in llamacpp compressed-tensors hawq gptqmodel autoround modelopt; do
  check "export $f refuses" 6 "layer blk.1.ffn_up: candidate saqc3.25 is a SAQ quantizer" -- \
    "$MPQ" export --config "$T/c.json" --model "$MODEL" --format "$f" -o "$T/out.$f"
  [ ! -e "$T/out.$f" ] && ok "no $f file" || bad "$f file written"
done
check "export mpq" 0 "wrote" -- "$MPQ" export --config "$T/c.json" --model "$MODEL" --format mpq -o "$T/out.mpq"
grep -q '"saqc3.25"' "$T/out.mpq" && ok "mpq export carries saqc3.25" || bad "mpq export lacks saqc3.25"
[ "$fails" = 0 ] || exit 1
