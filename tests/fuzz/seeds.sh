#!/usr/bin/env bash
# seeds.sh - writes the seed corpora of the libFuzzer harnesses (one folder per harness) from the
# shared models and data and the project's examples; run by the build (target fuzz_seeds).
# Usage: bash tests/fuzz/seeds.sh SHARED_DIR PROJECT_ROOT OUT_DIR
set -euo pipefail
S=$(cd "$1" && pwd)
R=$(cd "$2" && pwd)
O=$3
rm -rf "$O"
mkdir -p "$O"/{gguf,llama2c,safetensors,tokenizer,data,job_spec,config,kvtuner,budget_expr,latency}

# llama2.c checkpoints: whole (stories260K), headers and truncations, and an "ak42" v1 header.
m=$S/models/stories260K/stories260K.bin
cp "$m" "$O/llama2c/stories260K.bin"
for n in 28 64 4096 65536; do head -c $n "$m" >"$O/llama2c/stories260K.$n"; done
head -c 4096 "$S/models/sotu-2.7M/sotu-2.7M.bin" >"$O/llama2c/sotu-2.7M.4096"
{ printf '\x32\x34\x6b\x61\x01\x00\x00\x00'; head -c 28 "$m"; printf '\x01'
  head -c $((256 - 37)) /dev/zero; dd if="$m" bs=4096 skip=28 count=8192 iflag=skip_bytes,count_bytes status=none; } >"$O/llama2c/ak42-v1"

# GGUF files (sotu-2.7M): metadata and tokenizer with the first tensor bytes; F32 whole is 11 MB.
for f in "$S"/models/sotu-2.7M-gguf/*.gguf; do
  [ -f "$f" ] || continue
  head -c 65536 "$f" >"$O/gguf/$(basename "$f" .gguf).64k"
  head -c 24 "$f" >"$O/gguf/$(basename "$f" .gguf).24"
done

# Hugging Face folders: config.json, NUL, index (empty: none), NUL, the safetensors bytes
# (whole, or cut after the header); the indexed seeds map every tensor to s1.safetensors.
for d in stories260K-hf stories260K-hf-bf16 sotu-2.7M-hf; do
  st=$S/models/$d/model.safetensors
  hl=$(od -An -tu8 -N8 "$st" | tr -d ' ')
  { cat "$S/models/$d/config.json"; printf '\0\0'; head -c $((8 + hl)) "$st"; } >"$O/safetensors/$d.header"
  { cat "$S/models/$d/config.json"; printf '\0\0'; head -c $((8 + hl + 256)) "$st"; } >"$O/safetensors/$d.head"
  names=$(dd if="$st" bs=4096 skip=8 count="$hl" iflag=skip_bytes,count_bytes status=none |
          grep -o '"[^"]*":{"dtype"' | sed 's/:{"dtype"/:"s1.safetensors"/' | paste -sd, -)
  { cat "$S/models/$d/config.json"; printf '\0{"metadata":{},"weight_map":{%s}}\0' "$names"
    head -c $((8 + hl)) "$st"; } >"$O/safetensors/$d.index-header"
done
for d in stories260K-hf stories260K-hf-bf16; do
  { cat "$S/models/$d/config.json"; printf '\0\0'; cat "$S/models/$d/model.safetensors"; } >"$O/safetensors/$d.whole"
done
d=stories260K-hf-bf16
cp "$O/safetensors/$d.index-header" "$O/safetensors/$d.index-whole"
tail -c +$((9 + $(od -An -tu8 -N8 "$S/models/$d/model.safetensors" | tr -d ' '))) "$S/models/$d/model.safetensors" \
  >>"$O/safetensors/$d.index-whole"

# Tokenizers: whole (512, 2048) and the first bytes of the 32k one.
cp "$S/models/stories260K/tok512.bin" "$O/tokenizer/tok512.bin"
cp "$S/models/sotu-2.7M/tok2048.bin" "$O/tokenizer/tok2048.bin"
head -c 8192 "$S/data/tokenizer-32k.bin" >"$O/tokenizer/tok32k.head"
head -c 100 "$S/models/stories260K/tok512.bin" >"$O/tokenizer/tok512.head"

# Token data: first byte = format (0 text, 1 u16, 2 u32) + vocabulary bound, then the file.
{ printf '\x00'; head -c 256 "$S/data/tinystories-calib.txt"; } >"$O/data/text"
{ printf '\x03'; head -c 256 "$S/data/sotu-calib.txt"; } >"$O/data/text-512"
{ printf '\x04'; head -c 1024 "$S/data/tinystories-calib.tok512.u16"; } >"$O/data/u16-512"
{ printf '\x01'; head -c 1024 "$S/data/sotu-calib.tok2048.u16"; } >"$O/data/u16"
{ printf '\x02'; head -c 1024 "$S/data/tinystories-eval.tok512.u16"; } >"$O/data/u32"
{ printf '\x0d'; head -c 64 "$S/data/tinystories-eval.tok512.u16"; } >"$O/data/u16-auto"

# Job specs: the examples with absolute paths.
for f in "$R"/examples/*.json; do
  sed "s#\.\./shared/#$S/#g" "$f" >"$O/job_spec/$(basename "$f")"
done
printf '{"name":"w","model":"%s","calibration":{"data":"%s","seq_len":32,"n_seqs":2},"candidates":["int4g32"],"metrics":["weight_error"]}' \
  "$S/models/stories260K/stories260K.bin" "$S/data/tinystories-calib.tok512.u16" >"$O/job_spec/small.json"
printf '{"name":"h","model":"%s","calibration":{"data":"%s"},"candidates":["int4g32","int8c"]}' \
  "$S/models/stories260K-hf" "$S/data/tinystories-calib.txt" >"$O/job_spec/hf.json"

# mpq configs for stories260K.
cp "$R/tests/fixtures/export/mixed.mpq.json" "$O/config/mixed.json"
cat >"$O/config/readme.json" <<'J'
{"mpq_config_version": 1,
 "weights": {"default": "int4g32", "layers": {"blk.0.attn_v": "int8c", "model.layers.1.mlp.down_proj": "int3g64s"}},
 "kv": {"scheme": {"mode": "kivi", "group_size": 32, "residual": 0}, "default": "k8v4",
        "layers": {"blk.0": "k8v8", "model.layers.2": "k2v4"}}}
J
printf '{"mpq_config_version":1}' >"$O/config/min.json"
printf '{"mpq_config_version":1,"weights":{"default":"f16"},"kv":{"scheme":{"mode":"per_token"},"default":"k4v4"},"extra":[1]}' >"$O/config/kv.json"
printf '{"mpq_config_version":1,"kv":{"scheme":{"group_size":8},"layers":{"blk.1":{"heads":["k4v2","k8v4","k16v16","k3v3"]},"blk.2":"k2v2"}}}' >"$O/config/kv_heads.json"

# KVTuner layer configs.
cp "$R/tests/fixtures/export/mixed.kvtuner.json" "$O/kvtuner/mixed.json"
printf '{"0":{"nbits_key":2,"nbits_value":16}}' >"$O/kvtuner/one.json"
printf '{"0":{"nbits_key":3,"nbits_value":3},"1":{"nbits_key":16,"nbits_value":2},"2":{"nbits_key":4,"nbits_value":8}}' \
  >"$O/kvtuner/three.json"

# Budgets, metric expressions, ties, resources, candidates, KV pairs and modes.
i=0
for t in "avg-bits=3.5" "avg-bits=64" "avg-bits=0.000001" "bits=1000000" "bytes=4096" "bops=9007199254740991" \
         "latency=12.5e3" "kl" "kl+0.5*act_err" "2*dloss + 1e-3*weight_sse+hawq_omega" "qkv,gate_up" "none" \
         "latency" "bops" "int4g128" "int3g32s" "int8c" "f16" "k8v4" "k16v2" "kivi" "per_token"; do
  printf '%s' "$t" >"$O/budget_expr/$i"; i=$((i + 1))
done

# Latency tables (candidates int4g32 and int8c; layer names, kinds and "*").
printf '{"int4g32":{"attn_q":12.5,"blk.0.ffn_down":30,"*":10},"int8c":{"*":20}}' >"$O/latency/readme.json"
printf '{"int4g32":{"model.layers.0.self_attn.q_proj":1,"ffn_up":2,"*":0},"int8c":{"blk.4.attn_o":1e3,"attn_k":4,"*":5}}' \
  >"$O/latency/names.json"
printf '{"int4g32":{"*":1},"int8c":{"*":1e15}}' >"$O/latency/flat.json"
touch "$O/.stamp"
