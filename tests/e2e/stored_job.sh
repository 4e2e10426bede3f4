#!/usr/bin/env bash
# End-to-end: a stored job needs no model file after measuring. A small copy of the main job
# (examples/stories260K.json) runs on a COPY of the model in a temp dir; the copy is moved away
# and solve, pareto, kv, export (every format), plot, report, query and status still succeed;
# solve --evaluate, evaluate and resume fail naming the missing file and the SHA-256 it must
# have; a changed model file is refused naming both hashes. Budgets out of range exit 2.
set -u
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
mkdir -p "$T/m"
cp "$MODEL" "$T/m/model.bin"
sed -e "s#\"model\": \"[^\"]*\"#\"model\": \"$T/m/model.bin\"#" \
    -e "s#\"tokenizer\": \"[^\"]*\"#\"tokenizer\": \"$MPQ_SHARED/models/stories260K/tok512.bin\"#" \
    -e "s#\"../shared/#\"$MPQ_SHARED/#g" \
    -e 's#"n_seqs": 16, "seed": 1, "batch": 8#"n_seqs": 4, "seed": 1, "batch": 4#' \
    -e 's#"seq_len": 256, "n_seqs": 16#"seq_len": 64, "n_seqs": 2#' \
    -e 's#"seq_len": 128#"seq_len": 32#' \
    -e 's#\["int2g32", "int3g32", "int4g32", "int8c"\]#["int2g32", "int4g32", "int8c"]#' \
    -e 's#"pairs": \[[^]]*\]#"pairs": ["k8v8", "k4v4", "k2v2"]#' \
    "${MPQ_ROOT:-${BASH_SOURCE[0]%/*}/../..}/examples/stories260K.json" >"$T/job.json"
grep -q "$T/m/model.bin" "$T/job.json" || fail "spec copy does not point to the model copy"
db=$T/mpq.db job=stories260K-demo
"$MPQ" run "$T/job.json" --db "$db" --quiet >"$T/run.out" 2>&1 || { cat "$T/run.out"; fail "mpq run"; }
sha=$(sha256sum "$T/m/model.bin" | cut -d' ' -f1)

mv "$T/m/model.bin" "$T/model.moved"
check solve 0 "bits/weight" -- "$MPQ" solve $job --db "$db" --budget avg-bits=4.5 --ties qkv,gate_up -n s45
check solve-json 0 '"solution_id"' -- "$MPQ" solve $job --db "$db" --budget bytes=200000 --json
check pareto 0 "knee" -- "$MPQ" pareto $job --db "$db"
check kv 0 "k8v8" -- "$MPQ" kv $job --db "$db" --prune --frontier --budget kv-bits=5 \
  --export-kvtuner "$T/kv.json" --export-config "$T/kvcfg.json"
check kv-joint 0 "joint weights + KV" -- "$MPQ" kv $job --db "$db" --joint bytes=2000000 --context 64,256
for f in mpq:json llamacpp:txt compressed-tensors:json kvtuner:json kvtuner-yaml:yaml hawq:json sglang-kv:txt \
         trtllm-kv:txt vllm-kv:txt llamacpp-kv:txt gptqmodel:json autoround:json modelopt:py; do
  fmt=${f%%:*} ext=${f#*:}
  check "export-$fmt" 0 "wrote" -- "$MPQ" export "$job:s45" --db "$db" -f "$fmt" -o "$T/x.$fmt.$ext" \
    --skip-imatrix-types
done
# the fingerprint is the recorded one, not a re-hash of whatever is at that path
tr -d " \t\n" <"$T/x.mpq.json" | grep -qF "\"sha256\":\"$sha\"" && ok export-recorded-sha256 || bad "export-recorded-sha256"
for w in frontier bits sensitivity kv; do
  check "plot-$w" 0 "" -- "$MPQ" plot $job --db "$db" --what $w -o "$T/$w.svg"
  grep -q "<svg" "$T/$w.svg" && ok "plot-$w-svg" || bad "plot-$w-svg"
done
mkdir -p "$T/r"
check report 0 "" -- "$MPQ" report $job --db "$db" -o "$T/r/report.md" --plots-dir "$T/r/plots"
grep -q "s45" "$T/r/report.md" && ok report-lists-solution || bad report-lists-solution
check query-layers 0 "int4g32" -- "$MPQ" query layers $job --db "$db" --metric kl
check query-model-layers 0 "blk.4.ffn_down" -- "$MPQ" query model-layers $job --db "$db"
check query-solutions 0 "s45" -- "$MPQ" query solutions $job --db "$db"
check status 0 "$job" -- "$MPQ" status $job --db "$db"

# what needs the model names the missing file and the hash it must match
check solve-evaluate 3 "$T/m/model.bin" -- "$MPQ" solve $job --db "$db" --budget avg-bits=4.5 --evaluate
grep -qF "$sha" "$T/err" && ok solve-evaluate-names-sha256 || bad solve-evaluate-names-sha256
check evaluate 3 "$T/m/model.bin" -- "$MPQ" evaluate $job s45 --db "$db"
check pareto-evaluate 3 "$T/m/model.bin" -- "$MPQ" pareto $job --db "$db" --evaluate 1
check kv-evaluate 3 "$T/m/model.bin" -- "$MPQ" kv $job --db "$db" --frontier --evaluate
check resume 3 "$T/m/model.bin" -- "$MPQ" resume $job --db "$db"
check export-imatrix 3 "$T/m/model.bin" -- "$MPQ" export $job --db "$db" -f imatrix -o "$T/im.gguf"
grep -qF "$sha" "$T/err" && ok export-imatrix-names-sha256 || bad export-imatrix-names-sha256

# a changed file at that path is refused with both hashes
cp "$T/model.moved" "$T/m/model.bin"
printf 'x' >>"$T/m/model.bin"
check changed-model 5 "changed since the job measured it" -- "$MPQ" evaluate $job s45 --db "$db"
grep -qF "$sha" "$T/err" && ok changed-names-recorded-sha256 || bad changed-names-recorded-sha256
# the original file back: evaluation works again
cp "$T/model.moved" "$T/m/model.bin"
check evaluate-restored 0 "Spearman" -- "$MPQ" evaluate $job s45 --db "$db"
check export-imatrix-restored 0 "wrote" -- "$MPQ" export $job --db "$db" -f imatrix-dat -o "$T/im.dat"

# budgets are range-checked before any arithmetic (exit 2, message naming the budget)
check budget-overflow 2 "more than 64 bits per weight" -- "$MPQ" solve $job --db "$db" \
  --budget avg-bits=7777777777777777777.126
check budget-wrap-45 2 "more than 64 bits per weight" -- "$MPQ" solve $job --db "$db" \
  --budget avg-bits=1844674407370955166.1
check budget-wrap-005 2 "more than 64 bits per weight" -- "$MPQ" solve $job --db "$db" \
  --budget avg-bits=1844674407370955161.65
check budget-bytes-huge 2 "value too large" -- "$MPQ" solve $job --db "$db" --budget bytes=99999999999999999999999
check budget-decimals 2 "at most 6 decimals" -- "$MPQ" solve $job --db "$db" --budget avg-bits=4.1234567
check budget-latency-inf 2 "positive finite number" -- "$MPQ" solve $job --db "$db" --budget latency=1e999
check time-limit-inf 2 "bad --time-limit" -- "$MPQ" solve $job --db "$db" --budget avg-bits=4 --time-limit inf
exit $((fails > 0))
