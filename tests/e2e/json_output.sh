#!/usr/bin/env bash
# End-to-end: every --json output of inspect / eval / status / query is valid JSON (checked
# with tests/tools/json_check.c, built beside mpq: cJSON, so no python3 or jq is needed on a
# minimal Debian 12) for a model path holding a quote and a backslash, the path comes back
# unchanged, and NaN / infinite figures are written as null (the README's rule).
set -u
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
jc=$(dirname "$MPQ")/mpq_json_check
[ -x "$jc" ] || fail "no $jc (built with the tests)"
data=$MPQ_SHARED/data/tinystories-eval.tok512.u16

dir="$T/a \"quoted\" \\ dir"
mkdir -p "$dir"
model="$dir/m\"o\\d.bin"
cp "$MODEL" "$model"

# want NAME EXPECTED PATH: the value at PATH of $T/out.json equals EXPECTED (json_check prints it)
want() {
  local got
  got=$("$jc" "$3" <"$T/out.json" 2>&1)
  if [ "$got" = "$2" ]; then ok "$1"; else bad "$1: $3 = '$got', want '$2'"; fi
}
# json NAME CMD...: CMD exits 0 and its stdout (kept in $T/out.json) is valid JSON
json() {
  local name=$1 rc=0
  shift
  "$@" >"$T/out.json" 2>"$T/err" || rc=$?
  if [ "$rc" != 0 ]; then bad "$name: exit $rc: $(cat "$T/err")"; return 1; fi
  if "$jc" <"$T/out.json" 2>"$T/err"; then ok "$name valid"; else bad "$name: $(cat "$T/err")"; return 1; fi
}

json inspect "$MPQ" inspect --json "$model" && {
  want inspect-path "$model" path
  want inspect-n-params 260032 n_params
  want inspect-norm-eps 1e-05 norm_eps
  want inspect-last-layer blk.4.ffn_down layers.34.name
}

json eval "$MPQ" eval -m "$model" -d "$data" -L 32 -n 3 -w int4g32 -k k4v2 --json && {
  want eval-model "$model" model
  want eval-weights int4g32 weights
  want eval-config null config
  want eval-kv-mode kivi kv_scheme.mode
  want eval-batch 3 batch
  ppl=$("$jc" ppl <"$T/out.json")
  case $ppl in [1-9]*) ok "eval-ppl $ppl" ;; *) bad "eval-ppl '$ppl'" ;; esac
}
# equal inputs, seed and --batch: bit-identical figures (KV-quantized, a partial last batch)
for i in 1 2; do
  "$MPQ" eval -m "$model" -d "$data" -L 32 -n 5 -b 2 -k k4v2 --kv-mode per-token --json >"$T/rep$i.json" 2>"$T/err" || bad "repeat $i: $(cat "$T/err")"
  "$jc" fp_ppl ppl kl kl_stderr top1 <"$T/rep$i.json" >"$T/rep$i.txt" || bad "repeat $i: not JSON"
done
if cmp -s "$T/rep1.txt" "$T/rep2.txt" && [ -s "$T/rep1.txt" ]; then ok "same-batch-identical"; else bad "same-batch-identical: $(paste "$T/rep1.txt" "$T/rep2.txt")"; fi

# --json-out into a file whose name holds the same characters
out="$dir/r\"e\\s.json"
if "$MPQ" eval -m "$model" -d "$data" -L 32 -n 2 -o "$out" >/dev/null 2>"$T/err" && "$jc" model <"$out" >"$T/v"; then
  if [ "$(cat "$T/v")" = "$model" ]; then ok "json-out"; else bad "json-out: model $(cat "$T/v")"; fi
else
  bad "json-out: $(cat "$T/err")"
fi

# a finite but huge weight (FLT_MAX; a NaN is refused at load) overflows the logits: every
# ppl / ce / KL figure is NaN, written as null
nan="$dir/n\"a\\n.bin"
cp "$MODEL" "$nan"
printf '\xff\xff\x7f\x7f' | dd of="$nan" bs=1 seek=$((28 + 4 * 32768 + 4 * 3)) conv=notrunc status=none
json eval-nan "$MPQ" eval -m "$nan" -d "$data" -L 16 -n 2 -w int4g32 --json && {
  want eval-nan-fp-ppl null fp_ppl
  want eval-nan-ppl null ppl
  want eval-nan-kl null kl
  want eval-nan-top1 null top1
  want eval-nan-path "$nan" model
}

# status / query of a job whose model path holds a quote and a backslash
cat >"$T/spec.json" <<SPEC
{"name": "jq", "model": $("$MPQ" inspect --json "$model" | "$jc" path | sed 's/\\/\\\\/g; s/"/\\"/g; s/.*/"&"/'),
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 16, "n_seqs": 2, "batch": 2},
 "candidates": ["int8c"], "metrics": ["weight_error"]}
SPEC
if "$MPQ" run "$T/spec.json" --db "$T/m.db" --quiet >/dev/null 2>"$T/err"; then
  json status "$MPQ" status jq --db "$T/m.db" --json && want status-model "$model" model
  json status-all "$MPQ" status --db "$T/m.db" --json && want status-all-model "$model" 0.model
  json query-layers "$MPQ" query --db "$T/m.db" --json layers jq --metric weight_rel && want query-candidate int8c 0.candidate
  json query-inf "$MPQ" query --db "$T/m.db" --json --sql "SELECT 1e999 AS inf, -1e999 AS ninf, 'a\"b\\c' AS s" && {
    want query-inf null 0.inf
    want query-ninf null 0.ninf
    want query-string 'a"b\c' 0.s
  }
  # text output: every REAL with the digits that read back as the same double
  got=$("$MPQ" query --db "$T/m.db" --sql "SELECT 0.1 + 0.2 AS a, 1.0 / 3 AS b, 2.5 AS c" | tail -1 | tr -s ' ')
  [ "$got" = "0.30000000000000004 0.3333333333333333 2.5" ] && echo "ok   query-text-digits" \
    || bad "query text digits: '$got'"
else
  bad "run: $(cat "$T/err")"
fi

echo "json_output: $fails failed"
[ "$fails" -eq 0 ]
