#!/usr/bin/env bash
# quant.sh - `mpq quant` and the Q-Palette candidates end to end:
# - on the seeded 256x256 N(0,1) matrix the nmse of vq2, vq3, nuq2, nuq3 is within 5% of the
#   values Q-Palette reports (0.1086, 0.0297, 0.1175, 0.0345; the 5% is derived in
#   tests/unit/test_palette.c) and every candidate's nmse is above 2^(-2R); bits per weight
#   are exact (codes + one fp16 scale per row: R + 16/256);
# - --json is valid JSON (mpq_json_check) and agrees with the text output; same seed, same
#   numbers; --model/--layer on a stories260K layer;
# - hostile input: bad shapes, caps, unknown candidates, rates not in the palette, bad seed,
#   missing or conflicting options, unknown layer (exit codes of README "Exit codes");
# - a stories260K job with candidates int3g32, vq3, nuq3, tcq3 runs weight_error +
#   layer_sensitivity, solve and pareto work on it, its mpq config is accepted by mpq eval,
#   and the exporters that cannot express a palette candidate refuse it (exit 6) naming the
#   layer and candidate.
# Env: MPQ (mpq binary; mpq_json_check beside it), MPQ_SHARED (shared models/data).
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
JC=$(dirname "$MPQ")/mpq_json_check

G=(--gaussian 256x256 --seed 1)
check "help" 0 "--gaussian" -- "$MPQ" quant --help
"$MPQ" quant "${G[@]}" --candidates vq2,vq3,nuq2,nuq3,tcq2,tcq3,int4g32 --json > "$T/g.json"
"$JC" < "$T/g.json" > /dev/null || fail "--json output is not valid JSON"
# want_close NAME GOT WANT REL: |GOT/WANT - 1| < REL
within() { awk -v g="$2" -v w="$3" -v r="$4" 'BEGIN { d = g / w - 1; if (d < 0) d = -d; exit !(d < r) }'; }
i=0
for pair in vq2:0.1086 vq3:0.0297 nuq2:0.1175 nuq3:0.0345; do
  name=${pair%%:*} want=${pair#*:}
  got=$("$JC" "$i.nmse" < "$T/g.json")
  [ "$("$JC" "$i.candidate" < "$T/g.json")" = "$name" ] || fail "entry $i is not $name"
  if within "$name" "$got" "$want" 0.05; then ok "$name nmse $got within 5% of $want"; else bad "$name nmse $got vs $want"; fi
  i=$((i + 1))
done
for i in 0 1 2 3 4 5 6; do
  v=($("$JC" "$i.candidate" "$i.rate" "$i.bits_per_weight" "$i.nmse" "$i.dr_bound" < "$T/g.json"))
  name=${v[0]} rate=${v[1]} bpw=${v[2]} nmse=${v[3]} bound=${v[4]}
  awk -v n="$nmse" -v b="$bound" -v r="$rate" 'BEGIN { exit !(n > b && b == 2 ^ (-2 * r)) }' ||
    bad "$name: nmse $nmse not above 2^(-2R) $bound"
  case $name in
    int4g32) want=5 ;;              # 4 + (16 + 16)/32
    *) want=$(awk -v r="$rate" 'BEGIN { printf "%.15g", r + 16 / 256 }') ;;
  esac
  awk -v a="$bpw" -v b="$want" 'BEGIN { exit !(a == b) }' || bad "$name: bits_per_weight $bpw, expected $want"
done
ok "every nmse above 2^(-2R); bits per weight exact"
# text output carries the same numbers; the same seed gives the same numbers, another seed others
"$MPQ" quant "${G[@]}" --candidates vq3 > "$T/g.txt"
grep -Eq "^vq3 +3 +3\.062500 +0\.0297" "$T/g.txt" || bad "text output: $(cat "$T/g.txt")"
"$MPQ" quant "${G[@]}" --candidates vq2,vq3,nuq2,nuq3,tcq2,tcq3,int4g32 --json > "$T/g2.json"
cmp -s "$T/g.json" "$T/g2.json" && ok "same seed, same output" || bad "same seed, different output"
"$MPQ" quant --gaussian 256x256 --seed 2 --candidates vq3 --json > "$T/s2.json"
[ "$("$JC" 0.nmse < "$T/s2.json")" != "$("$JC" 1.nmse < "$T/g.json")" ] && ok "another seed, another matrix" ||
  bad "seed 2 gives the same nmse as seed 1"
# a real layer (stories260K blk.0.attn_q, 64x64: Hadamard 64): kurtosis fields, nmse in range
"$MPQ" quant --model "$MODEL" --layer blk.0.attn_q --candidates vq3,nuq3,int3g32 --json > "$T/m.json"
v=($("$JC" 0.kurtosis 0.kurtosis_rotated < "$T/m.json"))
k=${v[0]} kr=${v[1]}
awk -v a="$k" -v b="$kr" 'BEGIN { exit !(b < a) }' && ok "kurtosis $k -> $kr after rotation" || bad "kurtosis $k -> $kr"
check "layer text" 0 "kurtosis" -- "$MPQ" quant --model "$MODEL" --layer model.layers.0.self_attn.q_proj --candidates vq3

# hostile input
check "no candidates" 2 "--candidates is required" -- "$MPQ" quant "${G[@]}"
check "no matrix" 2 "exactly one of" -- "$MPQ" quant --candidates vq3
check "both matrices" 2 "exactly one of" -- "$MPQ" quant "${G[@]}" --model "$MODEL" --layer blk.0.attn_q --candidates vq3
check "model without layer" 2 "--layer" -- "$MPQ" quant --model "$MODEL" --candidates vq3
for s in 0x5 256 256x x256 256x256x2 axb -4x4 8193x1 4097x4097 256x256junk " 256x256" 1e3x4; do
  check "shape '$s'" 2 "--gaussian" -- "$MPQ" quant --gaussian "$s" --candidates vq3
done
check "bad seed" 2 "--seed" -- "$MPQ" quant --gaussian 4x4 --seed -1 --candidates vq3
check "bad seed text" 2 "--seed" -- "$MPQ" quant --gaussian 4x4 --seed one --candidates vq3
check "unknown candidate" 5 "'int9g32'" -- "$MPQ" quant "${G[@]}" --candidates vq3,int9g32
check "tcq1.3" 5 "rate 1.3 is not in the palette" -- "$MPQ" quant "${G[@]}" --candidates tcq1.3
check "vq2.7" 5 "rate 2.7 is not in the palette" -- "$MPQ" quant "${G[@]}" --candidates vq2.7
check "nuq1" 5 "not in the palette" -- "$MPQ" quant "${G[@]}" --candidates nuq1
check "trailing zero" 5 "trailing zeros" -- "$MPQ" quant "${G[@]}" --candidates tcq2.50
check "empty list" 2 "no candidate" -- "$MPQ" quant "${G[@]}" --candidates ,
check "stray argument" 2 "unexpected argument" -- "$MPQ" quant "${G[@]}" --candidates vq3 extra
check "unknown layer" 10 "no linear layer 'blk.99.attn_q'" -- "$MPQ" quant --model "$MODEL" --layer blk.99.attn_q --candidates vq3
check "missing model" 3 "nope.bin" -- "$MPQ" quant --model "$T/nope.bin" --layer blk.0.attn_q --candidates vq3
# a large shape without a Hadamard construction (4099 is prime): over the random-rotation cap
check "random-rotation cap" 6 "4099" -- "$MPQ" quant --gaussian 1x4099 --candidates vq3
check "cap of other candidates" 0 "int4g32" -- "$MPQ" quant --gaussian 1x4099 --candidates int4g32

# a job on stories260K with palette candidates
cat > "$T/spec.json" <<JSON
{"name": "palette", "model": "$MODEL", "seed": 1,
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 64, "n_seqs": 2, "batch": 2},
 "evaluation": {"data": "$MPQ_SHARED/data/tinystories-eval.tok512.u16", "seq_len": 64, "n_seqs": 2, "seed": 2},
 "candidates": ["int3g32", "vq3", "nuq3", "tcq3"],
 "metrics": ["weight_error", "layer_sensitivity"]}
JSON
DB=$T/p.db
"$MPQ" run "$T/spec.json" --db "$DB" -q > /dev/null || fail "job with palette candidates failed"
n=$(sqlite3 "$DB" "SELECT count(*) FROM metrics WHERE metric = 'weight_rel' AND candidate IN ('vq3', 'nuq3', 'tcq3')")
[ "$n" = 105 ] && ok "weight_rel stored for 35 layers x 3 palette candidates" || bad "weight_rel rows: $n, expected 105"
n=$(sqlite3 "$DB" "SELECT count(*) FROM metrics WHERE metric = 'kl' AND candidate = 'vq3' AND value >= 0")
[ "$n" = 35 ] && ok "kl stored for vq3 on 35 layers" || bad "vq3 kl rows: $n"
check "solve" 0 "bits/weight" -- "$MPQ" solve palette --db "$DB" --budget avg-bits=3.3 -n pal
grep -q "vq3\|nuq3" "$T/out" && ok "solution uses a palette candidate" || bad "solution without palette candidate"
check "pareto" 0 "knee" -- "$MPQ" pareto palette --db "$DB"
check "export mpq" 0 "" -- "$MPQ" export palette:pal --db "$DB" --format mpq -o "$T/pal.json"
grep -Eq '"blk\.[0-9]+\.[a-z_]+":[[:space:]]*"(vq3|nuq3)"' "$T/pal.json" && ok "mpq config carries the palette candidates" ||
  bad "mpq config lacks vq3/nuq3"
check "eval --config" 0 "KL" -- "$MPQ" eval --model "$MODEL" --data "$MPQ_SHARED/data/tinystories-eval.tok512.u16" \
  --seq-len 64 --n-seqs 2 --config "$T/pal.json"
for f in llamacpp compressed-tensors hawq gptqmodel autoround modelopt; do
  check "export $f refuses" 6 "is a Q-Palette quantizer" -- "$MPQ" export palette:pal --db "$DB" --format "$f" -o "$T/x.$f"
  grep -Eq "layer blk\.[0-9]+\.[a-z_]+: candidate (vq3|nuq3|tcq3)" "$T/err" || bad "export $f: message lacks layer and candidate"
  [ ! -e "$T/x.$f" ] || bad "export $f: wrote a file although it refused"
done
# hostile palette names in a spec and in a config file: exit 5 naming the key and the rate
sed 's/"int3g32", "vq3", "nuq3", "tcq3"/"int3g32", "vq2.7"/; s/"name": "palette"/"name": "bad"/' "$T/spec.json" > "$T/bad.json"
check "spec with vq2.7" 5 "candidates[1]: candidate 'vq2.7': rate 2.7 is not in the palette" -- "$MPQ" run "$T/bad.json" --db "$T/bad.db" -q
sed 's/"vq3"/"tcq1.3"/' "$T/pal.json" > "$T/badcfg.json"
check "config with tcq1.3 (a malformed config file: 4)" 4 "unknown candidate 'tcq1.3' (candidate 'tcq1.3': rate 1.3 is not in the palette" -- "$MPQ" eval --model "$MODEL" --data "$MPQ_SHARED/data/tinystories-eval.tok512.u16" \
  --seq-len 64 --n-seqs 2 --config "$T/badcfg.json"
[ "$fails" -eq 0 ] || fail "$fails check(s) failed"
echo "all ok"
