# bad_inputs_gen.bash - writes the broken input files of tests/e2e/bad_inputs.sh into a folder:
# truncations and byte patches of copies of the ../shared models, tokenizers and data, and
# JSON variants of configs, specs, latency tables and Hugging Face config.json / safetensors
# headers. Sourced (a sub-folder of tests/e2e, so not a test itself); call
#   bad_inputs_gen OUT SHARED
# Nothing here is a binary blob in the repository: every case is derived at test time.

# patch FILE OFFSET HEX...: overwrite bytes at OFFSET (little-endian values as hex bytes)
patch_bytes() {
  local f=$1 off=$2; shift 2
  local s=""
  for b in "$@"; do s+="\\x$b"; done
  printf "$s" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
}
# le64 N: N as 8 little-endian bytes on stdout
le64() {
  local n=$1 i s=""
  for i in 0 1 2 3 4 5 6 7; do s+=$(printf '\\x%02x' $(((n >> (8 * i)) & 255))); done
  printf "$s"
}
# st_rebuild SRC DST SED-EXPR: DST = SRC (a safetensors file) with its JSON header edited by sed
st_rebuild() {
  local src=$1 dst=$2 expr=$3 hl hdr
  hl=$(od -An -tu8 -N8 "$src" | tr -d ' ')
  hdr=$(dd if="$src" bs=4096 skip=8 count="$hl" iflag=skip_bytes,count_bytes status=none | sed "$expr")
  { le64 ${#hdr}; printf '%s' "$hdr"; tail -c +$((9 + hl)) "$src"; } >"$dst"
}
# hf_dir NAME: a copy of the stories260K HF folder at $O/NAME
hf_dir() {
  mkdir -p "$O/$1"
  cp "$S/models/stories260K-hf/config.json" "$S/models/stories260K-hf/model.safetensors" "$O/$1/"
  chmod u+w "$O/$1"/*
}

bad_inputs_gen() {
  O=$1 S=$2
  local m=$S/models/stories260K/stories260K.bin tok=$S/models/stories260K/tok512.bin
  local u16=$S/data/tinystories-calib.tok512.u16
  mkdir -p "$O"

  # ---- llama2.c checkpoints (legacy header: dim hidden layers heads kv_heads vocab seq_len)
  : >"$O/empty.bin"
  head -c 10 "$m" >"$O/short-header.bin"
  head -c 28 "$m" >"$O/header-only.bin"
  local n
  for n in neg-dim zero-heads kv-heads-3 vocab-min zero-seq huge-dim zero-layers; do cp "$m" "$O/$n.bin"; chmod u+w "$O/$n.bin"; done
  patch_bytes "$O/neg-dim.bin" 0 c0 ff ff ff            # dim -64
  patch_bytes "$O/zero-heads.bin" 12 00 00 00 00        # n_heads 0
  patch_bytes "$O/kv-heads-3.bin" 16 03 00 00 00        # n_kv_heads 3 (does not divide 8)
  patch_bytes "$O/vocab-min.bin" 20 00 00 00 80         # vocab_size INT32_MIN
  patch_bytes "$O/zero-seq.bin" 24 00 00 00 00          # seq_len 0
  patch_bytes "$O/huge-dim.bin" 0 ff ff ff 7f           # dim 2^31-1
  patch_bytes "$O/zero-layers.bin" 8 00 00 00 00        # n_layers 0
  { cat "$m"; printf 'tail'; } >"$O/trailing.bin"
  # "ak42" v1 headers: version 2, cut short, shared_classifier flag 7
  { printf '\x32\x34\x6b\x61\x02\x00\x00\x00'; head -c 248 /dev/zero; } >"$O/ak42-v2.bin"
  { printf '\x32\x34\x6b\x61\x01\x00\x00\x00'; head -c 20 "$m"; } >"$O/ak42-short.bin"
  { printf '\x32\x34\x6b\x61\x01\x00\x00\x00'; head -c 28 "$m"; printf '\x07'; head -c 219 /dev/zero; } >"$O/ak42-flag.bin"

  # ---- Hugging Face folders
  hf_dir hf-noconfig; rm "$O/hf-noconfig/config.json"
  hf_dir hf-nost; rm "$O/hf-nost/model.safetensors"
  hf_dir hf-cfgjson; printf '{"hidden_size": 64,' >"$O/hf-cfgjson/config.json"
  hf_dir hf-nohidden; sed -i '/"hidden_size"/d' "$O/hf-nohidden/config.json"
  hf_dir hf-hiddenstr; sed -i 's/"hidden_size": 64/"hidden_size": "64"/' "$O/hf-hiddenstr/config.json"
  hf_dir hf-arch; sed -i 's/LlamaForCausalLM/GPT2LMHeadModel/; s/"model_type": "llama"/"model_type": "gpt2"/' "$O/hf-arch/config.json"
  hf_dir hf-heads0; sed -i 's/"num_attention_heads": 8/"num_attention_heads": 0/' "$O/hf-heads0/config.json"
  hf_dir hf-wide; sed -i 's/"hidden_size": 64/"hidden_size": 96/' "$O/hf-wide/config.json"
  local st=$S/models/stories260K-hf/model.safetensors
  hf_dir hf-hdr0; { le64 0; tail -c +9 "$st"; } >"$O/hf-hdr0/model.safetensors"
  hf_dir hf-hdrjunk; patch_bytes "$O/hf-hdrjunk/model.safetensors" 8 5b 5b 5b 5b   # "[[[[" instead of {"__
  hf_dir hf-trunc; head -c 600000 "$st" >"$O/hf-trunc/model.safetensors"
  hf_dir hf-i8; st_rebuild "$st" "$O/hf-i8/model.safetensors" 's/"model.norm.weight":{"dtype":"F32"/"model.norm.weight":{"dtype":"I8"/'
  hf_dir hf-notensor; st_rebuild "$st" "$O/hf-notensor/model.safetensors" 's/"model.norm.weight"/"model.norX.weight"/'
  hf_dir hf-offsets; st_rebuild "$st" "$O/hf-offsets/model.safetensors" 's/"data_offsets":\[0,131072\]/"data_offsets":[131072,0]/'
  hf_dir hf-shape; st_rebuild "$st" "$O/hf-shape/model.safetensors" 's/"shape":\[512,64\]/"shape":[512,65]/'
  hf_dir hf-index; rm "$O/hf-index/model.safetensors"
  printf '{"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}}' \
    >"$O/hf-index/model.safetensors.index.json"

  # ---- tokenizers (int32 max_token_length, then per piece: float32 score, int32 length, bytes)
  : >"$O/tok-empty.bin"
  head -c 3000 "$tok" >"$O/tok-trunc.bin"
  for n in tok-neglen tok-hugelen; do cp "$tok" "$O/$n.bin"; chmod u+w "$O/$n.bin"; done
  patch_bytes "$O/tok-neglen.bin" 8 ff ff ff ff         # piece 0 length -1
  patch_bytes "$O/tok-hugelen.bin" 8 ff ff ff 7f        # piece 0 length 2^31-1
  { cat "$tok"; printf '\x00\x00\x00\x00\x01\x00\x00\x00x'; } >"$O/tok-extra.bin"

  # ---- token data and text
  : >"$O/empty.u16"
  printf '\x01\x00\x00\x00\x05' >"$O/odd.u32"
  printf '\x01\x00\x00\x00\x00\x02\x00\x00\x03\x00\x00\x00' >"$O/vocab.u32"   # id 512
  head -c 40 "$u16" >"$O/short.u16"
  { head -c 200 "$u16"; printf '\xff\xff'; } >"$O/late.u16"                    # id 65535 at 100
  printf 'Once upon a time there was a cat.\n' >"$O/story.txt"
  mkdir -p "$O/adir.u16"
}
