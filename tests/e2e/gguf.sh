#!/usr/bin/env bash
# End-to-end: GGUF models (sotu-2.7M as written by llama.cpp's tools). mpq inspect reads the
# F32, F16 and Q8_0 files and their tokenizer; mpq eval of the F32 GGUF on text, tokenized with
# the file's own tokenizer, prints the same figures as the llama2.c checkpoint with tok2048.bin,
# and its logits file is byte-identical; a small mpq run on the F32 GGUF (no tokenizer in the
# spec, text data) stores bit-identical metrics to the same job on the .bin. A truncated GGUF
# exits 4 naming the problem; a Q8_0 tensor retyped to Q4_K exits 6 naming tensor and type.
set -u
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
S=$MPQ_SHARED
BIN=$S/models/sotu-2.7M/sotu-2.7M.bin TOK=$S/models/sotu-2.7M/tok2048.bin
G=$S/models/sotu-2.7M-gguf
for t in f32:F32 f16:F16 q8_0:Q8_0; do
  check "inspect-${t%%:*}" 0 "gguf (${t#*:})" -- "$MPQ" inspect "$G/sotu-2.7M-${t%%:*}.gguf"
done
check inspect-json 0 '"gguf"' -- "$MPQ" inspect --json "$G/sotu-2.7M-q8_0.gguf"
check inspect-tokenizer 0 "ids        1 385 1287 285 312 1096" -- \
  "$MPQ" inspect --tokenizer "$G/sotu-2.7M-f32.gguf" --encode "The state of our Union"

# eval on text: GGUF tokenizer and weights vs tok2048.bin and the llama2.c checkpoint
"$MPQ" eval -m "$BIN" -t "$TOK" -d "$S/data/sotu-eval.txt" -n 8 --json >"$T/bin.json" || fail "eval .bin"
"$MPQ" eval -m "$G/sotu-2.7M-f32.gguf" -d "$S/data/sotu-eval.txt" -n 8 --json >"$T/gguf.json" || fail "eval .gguf"
grep -vE '"(model|tokenizer|seconds)"' "$T/bin.json" >"$T/a"
grep -vE '"(model|tokenizer|seconds)"' "$T/gguf.json" >"$T/b"
grep -q '"ppl"' "$T/a" || fail "eval --json has no ppl: $(cat "$T/a")"
cmp -s "$T/a" "$T/b" && ok eval-text-f32-equal || { bad eval-text-f32-equal; diff "$T/a" "$T/b" | head; }
"$MPQ" eval -m "$BIN" -d "$S/data/sotu-eval.tok2048.u16" -n 4 --logits-out "$T/bin.logits" >/dev/null || fail "eval logits .bin"
"$MPQ" eval -m "$G/sotu-2.7M-f32.gguf" -d "$S/data/sotu-eval.tok2048.u16" -n 4 --logits-out "$T/gguf.logits" \
  >/dev/null || fail "eval logits .gguf"
cmp -s "$T/bin.logits" "$T/gguf.logits" && ok logits-f32-identical || bad logits-f32-identical
for q in f16 q8_0; do
  check "eval-$q" 0 "ppl" -- "$MPQ" eval -m "$G/sotu-2.7M-$q.gguf" -d "$S/data/sotu-eval.txt" -n 4
done

# a small job on each: the same stored metrics, bit for bit
job() { # model [tokenizer line]
  cat <<JSON
{"name": "sotu-gguf", "model": "$1", $2
 "calibration": {"data": "$S/data/sotu-calib.txt", "seq_len": 64, "n_seqs": 2, "batch": 2},
 "evaluation": {"data": "$S/data/sotu-eval.txt", "seq_len": 64, "n_seqs": 2},
 "candidates": ["int4g32", "int8c"],
 "kv": {"pairs": ["k4v4", "k2v2"]},
 "metrics": ["weight_error", "layer_sensitivity", "kv_sensitivity"]}
JSON
}
job "$BIN" "\"tokenizer\": \"$TOK\"," >"$T/bin-job.json"
job "$G/sotu-2.7M-f32.gguf" "" >"$T/gguf-job.json"
"$MPQ" run "$T/bin-job.json" --db "$T/bin.db" --quiet >"$T/run.out" 2>&1 || { cat "$T/run.out"; fail "run .bin"; }
"$MPQ" run "$T/gguf-job.json" --db "$T/gguf.db" --quiet >"$T/run.out" 2>&1 || { cat "$T/run.out"; fail "run .gguf"; }
# layer, candidate, metric, value, stderr, n (the provenance holds the model file's sha256, which differs)
dump "$T/bin.db" | cut -d'|' -f1-6 >"$T/bin.metrics"
dump "$T/gguf.db" | cut -d'|' -f1-6 >"$T/gguf.metrics"
n=$(wc -l <"$T/bin.metrics")
[ "$n" -gt 100 ] || bad "run-metrics-count ($n)"
cmp -s "$T/bin.metrics" "$T/gguf.metrics" && ok "run-metrics-identical ($n values)" ||
  { bad run-metrics-identical; diff "$T/bin.metrics" "$T/gguf.metrics" | head; }
check status-gguf 0 "sotu-gguf" -- "$MPQ" status sotu-gguf --db "$T/gguf.db"

# hostile files through the CLI
head -c 30000 "$G/sotu-2.7M-f32.gguf" >"$T/trunc.gguf"
check truncated 4 "trunc.gguf" -- "$MPQ" inspect "$T/trunc.gguf"
python3 - "$G/sotu-2.7M-q8_0.gguf" "$T/q4k.gguf" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], 'rb').read())
name = b'blk.2.ffn_up.weight'
at = b.index(name) + len(name)
nd = struct.unpack_from('<I', b, at)[0]
struct.pack_into('<I', b, at + 4 + 8 * nd, 12)  # GGML_TYPE_Q4_K
open(sys.argv[2], 'wb').write(b)
PY
check q4k-refused 6 "tensor blk.2.ffn_up.weight: ggml type Q4_K" -- "$MPQ" inspect "$T/q4k.gguf"
[ "$fails" = 0 ] || exit 1
