#!/usr/bin/env bash
# eval_workers.sh - `mpq eval --workers N` splits the windows into whole batches across N
# threads and adds their statistics in batch order: the figures (every JSON number but the
# timing) and the --logits-out file are bit-identical with 1 and 2 workers, under
# OPENBLAS_NUM_THREADS=2 as with it unset; batches of 3 over 10 windows leave a partial last
# batch; sotu-2.7M quantized (weights and KV) makes KL and top-1 non-trivial.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data).
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"

S=$MPQ_SHARED/models/sotu-2.7M
args=(-m "$S/sotu-2.7M.bin" -t "$S/tok2048.bin" -d "$MPQ_SHARED/data/sotu-eval.tok2048.u16" -L 64 -n 10 -b 3
      -w int4g32 -k k4v2 --json)
run_eval() { # tag workers [env assignments...]
  local tag=$1 w=$2
  shift 2
  env "$@" "$MPQ" eval "${args[@]}" --workers "$w" --logits-out "$T/$tag.f32" > "$T/$tag.json" ||
    fail "eval --workers $w, env $*: exit $?"
  grep -v '"seconds"' "$T/$tag.json" > "$T/$tag.txt"
}
run_eval w1 1 OPENBLAS_NUM_THREADS=2
run_eval w2 2 OPENBLAS_NUM_THREADS=2
run_eval w3 3 -u OPENBLAS_NUM_THREADS
grep -q '"kl":' "$T/w1.txt" || fail "no kl in the eval JSON"
for t in w2 w3; do
  cmp -s "$T/w1.txt" "$T/$t.txt" || { diff "$T/w1.txt" "$T/$t.txt" | head -6; fail "eval figures: w1 vs $t differ"; }
  cmp -s "$T/w1.f32" "$T/$t.f32" || fail "--logits-out: w1 vs $t differ"
done
[ "$(stat -c %s "$T/w1.f32")" = $((10 * 64 * 2048 * 4)) ] || fail "--logits-out has the wrong size"
ok "eval: figures and logits bit-identical with 1, 2 and 3 workers and any OPENBLAS_NUM_THREADS"

check "eval workers 0" 2 "bad --workers" -- "$MPQ" eval "${args[@]}" --workers 0
check "eval workers 257" 2 "bad --workers" -- "$MPQ" eval "${args[@]}" --workers 257
[ "$fails" = 0 ] || exit 1
