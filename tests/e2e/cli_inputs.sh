#!/usr/bin/env bash
# End-to-end: `mpq inspect` and `mpq eval` on the real shared model, and the exit code and
# message for each kind of broken input file (the message must name the file).
set -u
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
model=$MPQ_SHARED/models/stories260K/stories260K.bin
data=$MPQ_SHARED/data/tinystories-eval.tok512.u16


printf '\x01\x00\x05' >"$tmp/odd.u16"
check inspect-ok 0 "blk.4.ffn_down" -- "$MPQ" inspect "$model"
check inspect-json 0 '"n_params":	260032' -- "$MPQ" inspect --json "$model"
check eval-fp 0 "ppl" -- "$MPQ" eval -m "$model" -d "$data" -L 64 -n 4
check eval-quant 0 "top-1 agreement" -- "$MPQ" eval -m "$model" -d "$data" -L 64 -n 4 -w int4g32 -k k4v4

check inspect-tokenizer 0 "1 385 1287 285 312 1096" -- "$MPQ" inspect --tokenizer "$MPQ_SHARED/models/sotu-2.7M/tok2048.bin" --encode "The state of our Union"
check inspect-data 0 "tokens     23040" -- "$MPQ" inspect --data "$data"
check inspect-bad-tokenizer 4 "odd.u16" -- "$MPQ" inspect --tokenizer "$tmp/odd.u16"

# truncated checkpoint
head -c 100000 "$model" >"$tmp/trunc.bin"
check truncated 4 "trunc.bin" -- "$MPQ" inspect "$tmp/trunc.bin"
# header dims that do not match the file size (dim 64 -> 65)
cp "$model" "$tmp/dims.bin"
printf '\x41\x00\x00\x00' | dd of="$tmp/dims.bin" bs=1 seek=0 conv=notrunc status=none
check bad-dims 4 "dims.bin" -- "$MPQ" inspect "$tmp/dims.bin"
# safetensors header length past EOF
mkdir -p "$tmp/hf"
cp "$MPQ_SHARED/models/stories260K-hf/config.json" "$tmp/hf/"
printf '\xff\xff\xff\x7f\x00\x00\x00\x00{}' >"$tmp/hf/model.safetensors"
check st-header-past-eof 4 "model.safetensors" -- "$MPQ" inspect "$tmp/hf"
# config with an unknown layer
printf '{"mpq_config_version":1,"weights":{"layers":{"blk.9.attn_q":"int4g32"}}}' >"$tmp/cfg.json"
check config-unknown-layer 4 "blk.9.attn_q" -- "$MPQ" eval -m "$model" -d "$data" -L 64 -n 2 -c "$tmp/cfg.json"
# token file with an odd size and an id past the vocabulary
printf '\x01\x00\x05' >"$tmp/odd.u16"
check odd-token-file 4 "odd.u16" -- "$MPQ" eval -m "$model" -d "$tmp/odd.u16"
printf '\x01\x00\x00\x10\x01\x00' >"$tmp/big.u16"
check token-past-vocab 4 "big.u16" -- "$MPQ" eval -m "$model" -d "$tmp/big.u16" -L 2
# missing file, bad option values
check missing-model 3 "nope.bin" -- "$MPQ" inspect "$tmp/nope.bin"
check bad-seq-len 2 "seq-len" -- "$MPQ" eval -m "$model" -d "$data" -L -3
check seq-len-too-long 5 "seq len" -- "$MPQ" eval -m "$model" -d "$data" -L 4096
# 9 tokens hold no window of 9+1: the message says so and does not speak of windows "asked"
head -c 18 "$data" >"$tmp/nine.u16"
check no-window 5 "its 9 tokens hold no window of 9+1 tokens (seq_len 9)" -- "$MPQ" eval -m "$model" -d "$tmp/nine.u16" -L 9
if grep -q "asked" "$tmp/err"; then echo "FAIL no-window: $(cat "$tmp/err")"; fails=$((fails + 1)); fi
check one-window 0 "1 windows x 8 tokens" -- "$MPQ" eval -m "$model" -d "$tmp/nine.u16" -L 8
check too-many-windows 5 "3 windows of 8+1 tokens asked but its 9 tokens hold 1" -- "$MPQ" eval -m "$model" -d "$tmp/nine.u16" -L 8 -n 3

# --logits-out writes n_seqs x T x vocab float32
"$MPQ" eval -m "$model" -d "$data" -L 32 -n 3 --logits-out "$tmp/logits.f32" >/dev/null 2>&1
size=$(stat -c %s "$tmp/logits.f32" 2>/dev/null || echo 0)
if [ "$size" = $((3 * 32 * 512 * 4)) ]; then echo "ok   logits-out size"; else echo "FAIL logits-out size $size"; fails=$((fails + 1)); fi

echo "cli_inputs: $fails failed"
[ "$fails" -eq 0 ]
