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
         kvtuner-yaml:kvtuner.yaml hawq:hawq.json sglang-kv:sglang-kv.txt trtllm-kv:trtllm-kv.txt \
         vllm-kv:vllm-kv.txt llamacpp-kv:llamacpp-kv.txt gptqmodel:gptqmodel.json autoround:autoround.json \
         modelopt:modelopt.py; do
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
# iq3_xxs falls back to iq4_nl on 64-wide rows before llama-quantize's imatrix test: no refusal
check imatrix-not-needed 0 "wrote" -- "$MPQ" export --config "$fix/mixed.json" --model "$model" \
  -f llamacpp -o "$tmp/x.txt"
grep -q 'attn_output\\.weight\$=iq4_nl' "$tmp/x.txt" && echo "ok   iq4_nl-fallback" || { echo "FAIL iq4_nl-fallback"; fails=$((fails + 1)); }
# sotu-2.7M: ffn_down has 512 columns, where iq3_xxs stays and needs an importance matrix
sotu=$MPQ_SHARED/models/sotu-2.7M/sotu-2.7M.bin
echo '{"mpq_config_version": 1, "weights": {"default": "int2g32"}}' >"$tmp/int2.json"
check imatrix-refused 5 "blk.0.ffn_down" -- "$MPQ" export --config "$tmp/int2.json" --model "$sotu" \
  -f llamacpp -o "$tmp/x.txt"
check imatrix-given 0 "--imatrix im.dat" -- "$MPQ" export --config "$tmp/int2.json" --model "$sotu" \
  -f llamacpp -o "$tmp/x.txt" --imatrix im.dat
grep -q 'blk\\.0\\.ffn_down\\.weight\$=iq3_xxs' "$tmp/x.txt" && grep -q 'blk\\.0\\.attn_q\\.weight\$=iq4_nl' "$tmp/x.txt" \
  && echo "ok   iq3_xxs-on-512-iq4_nl-on-192" || { echo "FAIL iq3_xxs-on-512-iq4_nl-on-192"; fails=$((fails + 1)); }
# what the targets cannot load: warnings, or exit 6 with --strict
check ct-warns 0 "vLLM will refuse model.layers.1.self_attn.o_proj (int3g32)" -- "$MPQ" export \
  --config "$fix/mixed.json" --model "$model" -f compressed-tensors -o "$tmp/ct.json"
check ct-strict 6 "only 4 and 8 bits" -- "$MPQ" export --config "$fix/mixed.json" --model "$model" \
  -f compressed-tensors -o "$tmp/ct.json" --strict
for f in sglang-kv trtllm-kv vllm-kv llamacpp-kv gptqmodel autoround modelopt; do
  check "$f-strict" 6 "collapsed" -- "$MPQ" export --config "$fix/mixed.json" --model "$model" -f "$f" \
    -o "$tmp/s.txt" --strict
done
# KVTuner (flexible_quant/flexible_quantized_cache.py) reads per_layer_config_path with yaml.safe_load
# and looks up per_layer_config[layer_idx]['nbits_key'] / ['nbits_value'] with the integer layer
# index, for every layer: the YAML has plain integer keys 0..4 in order (no quotes), each with
# exactly the two integer entries
kvt=$tmp/mixed.kvtuner.yaml
keys=$(grep -v '^#' "$kvt" | grep -E '^[^ ]' | tr -d '\n')
[ "$keys" = "0:1:2:3:4:" ] && echo "ok   kvtuner-yaml-integer-keys" || { echo "FAIL kvtuner-yaml keys '$keys'"; fails=$((fails + 1)); }
n=$(grep -cE '^  nbits_(key|value): (2|3|4|8|16)$' "$kvt"); m=$(grep -c '^ ' "$kvt")
[ "$n" = 10 ] && [ "$m" = 10 ] && echo "ok   kvtuner-yaml-values" || { echo "FAIL kvtuner-yaml values $n/$m"; fails=$((fails + 1)); }
if python3 -c 'import yaml' 2>/dev/null; then # the lookup KVTuner makes, on what its loader returns
  python3 - "$kvt" "$tmp/mixed.kvtuner.json" <<'PY' && echo "ok   kvtuner-yaml-safe_load" || { echo "FAIL kvtuner-yaml-safe_load"; fails=$((fails + 1)); }
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
got = [(c[i]["nbits_key"], c[i]["nbits_value"]) for i in range(5)]
assert got == [(8, 4), (4, 4), (4, 2), (8, 8), (8, 8)], got
assert all(type(k) is int for k in c) and all(type(v) is int for d in c.values() for v in d.values())
j = yaml.safe_load(open(sys.argv[2]))  # the JSON form: string keys, so c[0] would fail (README)
assert sorted(j) == ["0", "1", "2", "3", "4"] and 0 not in j
PY
else
  echo "skip kvtuner-yaml-safe_load (no PyYAML)"
fi
check kvtuner-json-note 0 "this JSON has string keys" -- "$MPQ" export --config "$fix/mixed.json" --model "$model" \
  -f kvtuner -o "$tmp/k.json"
check imatrix-needs-job 2 "give JOB" -- "$MPQ" export --config "$fix/mixed.json" --model "$model" -f imatrix -o "$tmp/i"
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
# importance matrix from the job's calibration (2 windows of 32 tokens): GGUF and legacy
check imatrix-gguf 0 "64 tokens in 2 windows of 32" -- "$MPQ" export e2e-export --db "$db" -f imatrix -o "$tmp/im.gguf"
[ "$(head -c 4 "$tmp/im.gguf")" = GGUF ] && echo "ok   imatrix-magic" || { echo "FAIL imatrix-magic"; fails=$((fails + 1)); }
check imatrix-dat 0 "llama-quantize --imatrix" -- "$MPQ" export e2e-export --db "$db" -f imatrix-dat -o "$tmp/im.dat"
check imatrix-stdout 2 "binary file" -- "$MPQ" export e2e-export --db "$db" -f imatrix -o -

[ "$fails" = 0 ] && echo "all export checks passed" || echo "$fails export checks FAILED"
exit $((fails > 0))
