#!/usr/bin/env bash
# saq.sh - the SAQ candidates saq<R> / saqc<R> end to end on stories260K:
# - a job with saqc3 and int3g32 measures weight_error and layer_sensitivity (X^T X from the
#   job's reference; also collected for a layer_sensitivity-only job with a saq candidate), solve --evaluate measures a solution with saqc layers (the job's
#   calibration rebuilt for X^T X) and the uniform saqc3 baseline; refine measures saqc moves
#   in context (the job's calibration again) without NaN;
# - saq3 (fp16 basis 16 bits/weight on 64-column layers) fails its units (exit 5) with "rate not
#   achievable" naming the layer and candidate;
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

spec pcajob '["saq3"]' '["weight_error"]'
check "saq3 not achievable" 5 "rate not achievable" -- "$MPQ" run "$T/pcajob.json" --db "$T/db2" --workers 1
grep -q "candidate saq3" "$T/err" && ok "names the candidate" || bad "candidate not named"

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
