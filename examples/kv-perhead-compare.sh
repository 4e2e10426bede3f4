#!/usr/bin/env bash
# Per-head against per-block KV search at equal average bits (run from the project root after
# `mpq run` of a spec with "kv": {"per_head": true}, e.g. examples/stories260K-kv-perhead.json):
#   bash examples/kv-perhead-compare.sh DB JOB MODEL EVAL_DATA "3 4 5" [OUTDIR]
# For each budget B (nominal bits (K+V)/2; with every pair below 16 bits the scale/zero overhead
# adds the same amount to every item, so nominal and overhead budgets pick the same points) it
# picks the frontier point of each search, writes its mpq config and measures it with
# `mpq eval --config` on EVAL_DATA (256-token windows, 32 of them, seed 2), printing one line:
#   B  mode  bits  predicted  measured_kl  kl_stderr
set -euo pipefail
mpq=${MPQ:-build/mpq}
db=$1 job=$2 model=$3 data=$4 budgets=$5 out=${6:-$(mktemp -d)}
mkdir -p "$out"
for b in $budgets; do
    for mode in block head; do
        flag=""; [ "$mode" = head ] && flag="--per-head"
        "$mpq" kv "$job" --db "$db" --nominal $flag --budget "kv-bits=$b" --export-config "$out/$mode-$b.json" \
            --json > "$out/$mode-$b.kv.json"
        "$mpq" eval --model "$model" --data "$data" --config "$out/$mode-$b.json" --seq-len 256 --n-seqs 32 \
            --seed 2 --json > "$out/$mode-$b.eval.json"
        python3 - "$out/$mode-$b.kv.json" "$out/$mode-$b.eval.json" "$b" "$mode" <<'PY'
import json, sys
kv = json.load(open(sys.argv[1])); ev = json.load(open(sys.argv[2]))
pk = kv["budgets"][0]
print(f'{sys.argv[3]:>4} {sys.argv[4]:>5} {pk["bits"]:.4f} {pk["predicted"]:.6g} {ev["kl"]:.6g} {ev["kl_stderr"]:.2g}')
PY
    done
done
