#!/usr/bin/env bash
# End-to-end: `mpq export` of a config file and of a job's solutions in every format, on the
# real stories260K model: the files match the golden ones, the mpq JSON runs in `mpq eval`,
# the llama.cpp tensor-type file has no '#' and one anchored line per GGUF tensor, and the
# refusals (fused shards, imatrix type, unknown format/solution) exit with their codes.
set -u
: "${MPQ_ROOT:?project root}"
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
model=$MPQ_SHARED/models/stories260K/stories260K.bin
fix=$MPQ_ROOT/tests/fixtures/export

same() { # name file golden
  if cmp -s "$2" "$3"; then echo "ok   $1"; else echo "FAIL $1: $2 differs from $3"; diff "$2" "$3" | head; fails=$((fails + 1)); fi
}

for f in mpq:mpq.json llamacpp:llamacpp.txt compressed-tensors:compressed-tensors.json kvtuner:kvtuner.json \
         kvtuner-yaml:kvtuner.yaml hawq:hawq.json; do
  fmt=${f%%:*} ext=${f#*:}
  check "config-$fmt" 0 "wrote" -- "$MPQ" export --config "$fix/mixed.json" --model "$model" -f "$fmt" \
    -o "$tmp/mixed.$ext" --skip-imatrix-types
  same "golden-$fmt" "$tmp/mixed.$ext" "$fix/mixed.$ext"
done
check llamacpp-command 0 "-ctk q8_0 -ctv q8_0 -fa on" -- "$MPQ" export --config "$fix/mixed.json" --model "$model" \
  -f llamacpp -o "$tmp/t.txt" --skip-imatrix-types
grep -q "llama-quantize --tensor-type-file $tmp/t.txt" "$tmp/out" || { echo "FAIL command names the file"; fails=$((fails + 1)); }
if grep -q '#' "$tmp/t.txt"; then echo "FAIL '#' in tensor-type file"; fails=$((fails + 1)); else echo "ok   no-hash"; fi
n=$(grep -cE '^\^blk\\\.[0-4]\\\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\\\.weight\$=[a-z0-9_]+$' "$tmp/t.txt")
[ "$n" = 35 ] && echo "ok   35-anchored-lines" || { echo "FAIL $n anchored lines (want 35)"; fails=$((fails + 1)); }
check imatrix-refused 5 "needs an importance matrix" -- "$MPQ" export --config "$fix/mixed.json" --model "$model" \
  -f llamacpp -o "$tmp/x.txt"
check imatrix-given 0 "--imatrix im.dat" -- "$MPQ" export --config "$fix/mixed.json" --model "$model" \
  -f llamacpp -o "$tmp/x.txt" --imatrix im.dat
# the mpq JSON is a config mpq eval accepts
check mpq-json-evals 0 "top-1 agreement" -- "$MPQ" eval -m "$model" -c "$tmp/mixed.mpq.json" \
  -d "$MPQ_SHARED/data/tinystories-eval.tok512.u16" -L 64 -n 2
# fused shards that disagree
cat >"$tmp/split.json" <<'J'
{"mpq_config_version": 1, "weights": {"default": "int4g32", "layers": {"blk.2.attn_k": "int8c"}}}
J
check fused-refused 5 "blk.2.attn_k" -- "$MPQ" export --config "$tmp/split.json" --model "$model" -f compressed-tensors -o "$tmp/ct.json"
check fused-ok-llamacpp 0 "wrote" -- "$MPQ" export --config "$tmp/split.json" --model "$model" -f llamacpp -o "$tmp/ll.txt"
check bad-format 2 "unknown export format" -- "$MPQ" export --config "$tmp/split.json" --model "$model" -f gguf -o "$tmp/x"
check no-config 3 "nope.json" -- "$MPQ" export --config "$tmp/nope.json" --model "$model" -f mpq -o "$tmp/x"
check needs-model 2 "--config needs --model" -- "$MPQ" export --config "$tmp/split.json" -f mpq -o "$tmp/x"
check help 0 "JOB[:SOLUTION]" -- "$MPQ" export --help

# a job with solutions
cat >"$tmp/spec.json" <<J
{"name": "e2e-export", "model": "$model", "seed": 1,
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 32, "n_seqs": 2, "batch": 2},
 "candidates": ["int3g32", "int8c"], "metrics": ["layer_sensitivity"]}
J
db=$tmp/e.db
check run 0 "done" -- "$MPQ" run "$tmp/spec.json" --db "$db"
check pareto 0 "knee" -- "$MPQ" pareto e2e-export --db "$db"
check job-latest 0 "wrote" -- "$MPQ" export e2e-export --db "$db" -f mpq -o "$tmp/j.json"
grep -q '"job":	"e2e-export"' "$tmp/j.json" && echo "ok   provenance" || { echo "FAIL provenance"; fails=$((fails + 1)); }
check job-named 0 "solution kl@knee" -- "$MPQ" export "e2e-export:kl@knee" --db "$db" -f hawq -o "$tmp/h.json"
check job-option 0 "nbits_key" -- "$MPQ" export e2e-export --solution kl@knee --db "$db" -f kvtuner -o -
check job-missing 10 "no solution 'nope'" -- "$MPQ" export "e2e-export:nope" --db "$db" -f mpq -o "$tmp/x"
check nojob 10 "nojob" -- "$MPQ" export nojob --db "$db" -f mpq -o "$tmp/x"

[ "$fails" = 0 ] && echo "all export checks passed" || echo "$fails export checks FAILED"
exit $((fails > 0))
