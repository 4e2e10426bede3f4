#!/usr/bin/env bash
# weights_dtype.sh - 16-bit weight storage: stories260K-hf-bf16 (a BF16 folder) kept in BF16
# (`--weights-dtype source`, spec "weights_dtype": "source") gives the F32 path's numbers bit
# for bit: every `mpq eval` figure and logit, and every metric a short job stores
# (weight_error with X^T X, layer_sensitivity, the hessian stage with its backward passes and
# Fisher); the F32 stories260K rounded to BF16 is another
# model (its FP perplexity differs); the stored spec keeps weights_dtype (a resume loads the
# same storage); unknown dtype values are refused.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"

H=$MPQ_SHARED/models/stories260K-hf-bf16
D=$MPQ_SHARED/data/tinystories-calib.tok512.u16
for dt in f32 source; do
  "$MPQ" eval -m "$H" -d "$D" -L 64 -n 8 -w int4g32 -k k4v4 --json --weights-dtype "$dt" \
    --logits-out "$T/$dt.f32" | tr ',' '\n' | grep -v '"seconds"' > "$T/$dt.json" || fail "eval --weights-dtype $dt"
done
grep -q '"kl"' "$T/f32.json" || fail "no kl in the eval JSON"
cmp -s "$T/f32.json" "$T/source.json" || { diff "$T/f32.json" "$T/source.json" | head; fail "eval: f32 vs source figures differ"; }
cmp -s "$T/f32.f32" "$T/source.f32" || fail "eval: f32 vs source logits differ"
ok "eval: a BF16 folder kept in BF16 gives the f32 figures and logits bit for bit"

S=$MPQ_SHARED/models/stories260K/stories260K.bin
p32=$("$MPQ" eval -m "$S" -d "$D" -L 64 -n 8 --json | tr ',' '\n' | grep '"fp_ppl"')
p16=$("$MPQ" eval -m "$S" -d "$D" -L 64 -n 8 --json --weights-dtype bf16 | tr ',' '\n' | grep '"fp_ppl"')
[ -n "$p32" ] && [ "$p32" != "$p16" ] || fail "an F32 model rounded to bf16 should change fp_ppl ($p32 / $p16)"
ok "eval: an F32 file rounded to bf16 is another model ($p32 -> $p16)"

spec() { # name [extra top-level key]
  cat > "$T/$1.json" <<JSON
{"name": "$1", "model": "$H", $2
 "calibration": {"data": "$D", "seq_len": 32, "n_seqs": 4, "batch": 2},
 "candidates": ["int3g32", "int8c"], "metrics": ["weight_error", "layer_sensitivity", "hessian"],
 "hessian": {"probes_min": 2, "probes_max": 4, "probes_per_unit": 2, "n_seqs": 2, "seq_len": 16,
             "eig_iters": 3, "slq_steps": 3, "slq_probes": 1}}
JSON
}
spec a ''
spec b '"weights_dtype": "source",'
"$MPQ" run "$T/a.json" --db "$T/a.db" -q > /dev/null || fail "run f32"
"$MPQ" run "$T/b.json" --db "$T/b.db" -q > /dev/null || fail "run source"
dump() {
  sqlite3 -separator '|' "$1" "SELECT l.name, m.candidate, m.metric, printf('%!.17g', m.value),
    COALESCE(printf('%!.17g', m.stderr), 'NULL'), m.n FROM metrics m
    LEFT JOIN layers l ON l.id = m.layer_id ORDER BY l.name, m.candidate, m.metric"
}
dump "$T/a.db" > "$T/a.txt"
dump "$T/b.db" > "$T/b.txt"
for m in act_err kl hutchinson_trace fisher_trace; do grep -q "|$m|" "$T/a.txt" || fail "the job stored no $m"; done
[ "$(wc -l < "$T/a.txt")" -gt 100 ] || fail "too few stored metrics: $(wc -l < "$T/a.txt")"
cmp -s "$T/a.txt" "$T/b.txt" || { diff "$T/a.txt" "$T/b.txt" | head; fail "job metrics: f32 vs source differ"; }
sqlite3 "$T/b.db" "SELECT spec_json FROM jobs" | grep -q '"weights_dtype":"source"' ||
  fail "the stored spec lacks weights_dtype"
ok "run: every stored metric bit-identical with weights_dtype source; the stored spec keeps it"

spec c '"weights_dtype": "bf17",'
check "spec weights_dtype bf17" 5 "weights_dtype" -- "$MPQ" run "$T/c.json" --db "$T/c.db" -q
spec d '"weights_dtype": 16,'
check "spec weights_dtype 16" 5 "weights_dtype" -- "$MPQ" run "$T/d.json" --db "$T/d.db" -q
check "eval --weights-dtype BF16" 2 "bad --weights-dtype" -- "$MPQ" eval -m "$H" -d "$D" --weights-dtype BF16
[ "$fails" = 0 ] || exit 1
