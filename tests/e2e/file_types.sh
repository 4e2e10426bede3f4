#!/usr/bin/env bash
# End-to-end: a FIFO, a device or a directory given where a file is read (model, safetensors,
# config.json, tokenizer, token data, text data, quantization config, job spec, latency table)
# is refused at once with exit 3 and a message naming the path, instead of blocking forever.
# An unreadable file's message names the file, the operation and the reason.
set -u
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
data=$MPQ_SHARED/data/tinystories-eval.tok512.u16
tok=$MPQ_SHARED/models/stories260K/tok512.bin
hf=$MPQ_SHARED/models/stories260K-hf
fifo=$T/pipe.fifo
mkfifo "$fifo"
# timeout: a reader that blocks on the FIFO fails the check with exit 124 instead of hanging
q() { timeout 20 "$MPQ" "$@"; }

check model-fifo 3 "pipe.fifo: is a FIFO" -- q inspect "$fifo"
check model-devzero 3 "/dev/zero: is a character device" -- q inspect /dev/zero
check eval-model-fifo 3 "pipe.fifo: is a FIFO" -- q eval -m "$fifo" -d "$data" -L 16 -n 1
mkdir -p "$T/hf1" "$T/hf2"
cp "$hf/config.json" "$T/hf1/" && mkfifo "$T/hf1/model.safetensors"
check safetensors-fifo 3 "model.safetensors: is a FIFO" -- q inspect "$T/hf1"
cp "$hf/model.safetensors" "$T/hf2/" && mkfifo "$T/hf2/config.json"
check hf-config-fifo 3 "config.json: is a FIFO" -- q inspect "$T/hf2"
check tokenizer-fifo 3 "pipe.fifo: is a FIFO" -- q inspect --tokenizer "$fifo"
check tokenizer-dir 3 "is a directory" -- q inspect --tokenizer "$T"
mkfifo "$T/tokens.u16"
check data-fifo 3 "tokens.u16: is a FIFO" -- q inspect --data "$T/tokens.u16"
check eval-data-fifo 3 "tokens.u16: is a FIFO" -- q eval -m "$MODEL" -d "$T/tokens.u16" -L 16 -n 1
mkfifo "$T/text.txt"
check text-data-fifo 3 "text.txt: is a FIFO" -- q eval -m "$MODEL" -t "$tok" -d "$T/text.txt" -L 16 -n 1
check eval-tokenizer-fifo 3 "pipe.fifo: is a FIFO" -- q eval -m "$MODEL" -t "$fifo" -d "$T/text.txt" -L 16 -n 1
check config-fifo 3 "pipe.fifo: is a FIFO" -- q eval -m "$MODEL" -d "$data" -L 16 -n 1 -c "$fifo"
check config-devzero 3 "/dev/zero: is a character device" -- q eval -m "$MODEL" -d "$data" -L 16 -n 1 -c /dev/zero
check spec-fifo 3 "pipe.fifo: is a FIFO" -- q run "$fifo" --db "$T/x.db"
check spec-dir 3 "is a directory" -- q run "$T" --db "$T/x.db"
check latency-fifo 3 "pipe.fifo: is a FIFO" -- q solve somejob --db "$T/x.db" --budget latency=100 --latency-table "$fifo"
check latency-missing 3 "nope.json: cannot open for reading: No such file or directory" -- q solve somejob --db "$T/x.db" --budget latency=100 --latency-table "$T/nope.json"
# a file that exists but cannot be read (skipped as root, who reads it anyway)
if [ "$(id -u)" != 0 ]; then
  cp "$MODEL" "$T/noread.bin" && chmod 000 "$T/noread.bin"
  check model-unreadable 3 "noread.bin: cannot open for reading: Permission denied" -- q inspect "$T/noread.bin"
  cp "$data" "$T/noread.u16" && chmod 000 "$T/noread.u16"
  check data-unreadable 3 "noread.u16: cannot open for reading: Permission denied" -- q eval -m "$MODEL" -d "$T/noread.u16" -L 16 -n 1
fi
# the FIFO was never opened for writing: every reader above returned without waiting
[ "$fails" = 0 ]
