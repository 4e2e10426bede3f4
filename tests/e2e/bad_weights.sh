#!/usr/bin/env bash
# End-to-end: a NaN or Inf weight is refused when the model is loaded (exit 4), and the message
# names the file, the tensor and the flat element index: llama2.c checkpoints and safetensors
# in F32, F16 and BF16, each a copy of a shared model with one element patched.
set -u
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
data=$MPQ_SHARED/data/tinystories-eval.tok512.u16
hf=$MPQ_SHARED/models/stories260K-hf

# patch FILE BYTE HEX: overwrite bytes at BYTE with the little-endian bytes HEX (e.g. 0000c07f)
patch() { printf "$(echo "$2" | sed 's/../\\x&/g')" | dd of="$1" bs=1 seek="$3" conv=notrunc status=none; }
# llama2.c legacy file: 7 int32 header (28 bytes), then token_embedding (512 x 64 floats)
cp "$MODEL" "$T/nan.bin" && patch "$T/nan.bin" 0000c07f $((28 + 4 * 5))
check llama2c-nan 4 "nan.bin: tensor token_embedding: element 5 (byte 48) is NaN" -- "$MPQ" eval -m "$T/nan.bin" -d "$data" -L 16 -n 1
cp "$MODEL" "$T/inf.bin" && patch "$T/inf.bin" 0000807f $((28 + 4 * 32768 + 4 * 3))
check llama2c-inf 4 "inf.bin: tensor blk.0.attn_norm: element 3 (byte 131112) is +Inf" -- "$MPQ" inspect "$T/inf.bin"
check llama2c-nan-json 4 "element 5" -- "$MPQ" eval --json -m "$T/nan.bin" -d "$data" -L 16 -n 1
[ -s "$T/out" ] && bad "llama2c-nan-json printed on stdout: $(cat "$T/out")"
# a finite but huge weight (FLT_MAX) loads, and overflows the logits: text output shows n/a,
# never "nan", top-1 agreement included, and a warning says why
cp "$MODEL" "$T/big.bin" && patch "$T/big.bin" ffff7f7f $((28 + 4 * 32768 + 4 * 3))
check overflow-na 0 "top-1 agreement n/a" -- "$MPQ" eval -m "$T/big.bin" -d "$data" -L 16 -n 2 -w int4g32
grep -qi "nan\b" "$T/out" && bad "overflow-na: a figure printed as nan: $(cat "$T/out")"
grep -q "logits are not finite" "$T/err" || bad "overflow-na: no warning on stderr"
check overflow-json 0 '"top1":	null' -- "$MPQ" eval --json -m "$T/big.bin" -d "$data" -L 16 -n 2 -w int4g32

# safetensors: data starts after the 8-byte header length and the JSON header
st_patch() { # DIR TENSOR INDEX KIND(nan|inf): patch element INDEX of TENSOR in DIR/model.safetensors
  python3 - "$1/model.safetensors" "$2" "$3" "$4" <<'PY'
import json, struct, sys
path, name, idx, kind = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
b = bytearray(open(path, 'rb').read())
hl = struct.unpack('<Q', b[:8])[0]
t = json.loads(b[8:8 + hl])[name]
size = {'F32': 4, 'F16': 2, 'BF16': 2}[t['dtype']]
val = {('F32', 'nan'): struct.pack('<f', float('nan')), ('F32', 'inf'): struct.pack('<f', float('inf')),
       ('F16', 'nan'): struct.pack('<e', float('nan')), ('F16', 'inf'): struct.pack('<e', float('-inf')),
       ('BF16', 'nan'): b'\xc0\x7f', ('BF16', 'inf'): b'\x80\x7f'}[(t['dtype'], kind)]
at = 8 + hl + t['data_offsets'][0] + idx * size
b[at:at + size] = val
open(path, 'wb').write(b)
PY
}
# an F16 copy of stories260K-hf (every tensor converted to half precision)
to_f16() {
  python3 - "$1" "$2" <<'PY'
import json, struct, sys
src, dst = sys.argv[1], sys.argv[2]
b = open(src, 'rb').read()
hl = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + hl])
out, data, off = {}, bytearray(), 0
for k, t in h.items():
    if k == '__metadata__':
        out[k] = t
        continue
    raw = b[8 + hl + t['data_offsets'][0]:8 + hl + t['data_offsets'][1]]
    n = len(raw) // 4
    half = struct.pack('<%de' % n, *struct.unpack('<%df' % n, raw))
    out[k] = {'dtype': 'F16', 'shape': t['shape'], 'data_offsets': [off, off + len(half)]}
    data += half
    off += len(half)
hj = json.dumps(out).encode()
open(dst, 'wb').write(struct.pack('<Q', len(hj)) + hj + data)
PY
}
mkdir -p "$T/f32" "$T/bf16" "$T/f16"
cp "$hf/config.json" "$hf/model.safetensors" "$T/f32/"
st_patch "$T/f32" model.layers.1.mlp.down_proj.weight 7 nan
check st-f32-nan 4 "model.safetensors: tensor model.layers.1.mlp.down_proj.weight: element 7 (F32) is NaN" -- "$MPQ" eval -m "$T/f32" -d "$data" -L 16 -n 1
cp "$MPQ_SHARED/models/stories260K-hf-bf16/config.json" "$MPQ_SHARED/models/stories260K-hf-bf16/model.safetensors" "$T/bf16/"
st_patch "$T/bf16" model.embed_tokens.weight 100 inf
check st-bf16-inf 4 "tensor model.embed_tokens.weight: element 100 (BF16) is +Inf" -- "$MPQ" inspect "$T/bf16"
cp "$hf/config.json" "$T/f16/"
to_f16 "$hf/model.safetensors" "$T/f16/model.safetensors"
check st-f16-ok 0 "blk.4.ffn_down" -- "$MPQ" inspect "$T/f16"
# q/k weights are permuted on load; the index named is the one in the file
st_patch "$T/f16" model.layers.2.self_attn.q_proj.weight 65 inf
check st-f16-inf 4 "tensor model.layers.2.self_attn.q_proj.weight: element 65 (F16) is -Inf" -- "$MPQ" inspect "$T/f16"
[ "$fails" = 0 ]
