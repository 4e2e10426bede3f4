#!/usr/bin/env bash
# kv_perhead.sh - per-(block, KV head) KV pairs on a small real stories260K job (spec
# kv.per_head): the per-head kv_sensitivity units and their rows (kv_kl_head, candidate
# "pair@hN"), worker-count independence and kill/resume of those units, `mpq kv --per-head`
# (frontier, budget solution with a per-head config, --export-config accepted by mpq eval), and
# the errors: group size straddling heads (spec exit 5, config exit 5), head count mismatch and
# unknown pair in a config (exit 4 naming the file), --joint with --per-head and the per-layer KV
# formats of mpq export given a per-head config (exit 6); KVTuner's per-head YAML export.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
M="$MPQ_SHARED/models/stories260K/stories260K.bin"
EV="$MPQ_SHARED/data/tinystories-eval.tok512.u16"
spec() { # group_size -> spec on stdout
  cat <<JSON
{"name": "ph", "model": "$M",
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 64, "n_seqs": 2, "batch": 2},
 "evaluation": {"data": "$EV", "seq_len": 64, "n_seqs": 2, "seed": 2},
 "candidates": ["int4g32"],
 "kv": {"scheme": {"mode": "kivi", "group_size": $1, "residual": 0},
        "pairs": ["k8v4", "k4v4", "k2v2"], "per_head": true},
 "metrics": ["layer_sensitivity", "kv_sensitivity"]}
JSON
}
spec 8 > "$T/spec.json"
spec 32 > "$T/spec32.json"

# a group of 32 channels spans 4 heads of 8: refused before anything is stored
expect_rc 5 "per_head with group 32" "$MPQ" run "$T/spec32.json" --db "$T/bad.db" -q
grep -q "kv.per_head.*group_size 32 does not divide head_dim 8" "$T/err.txt" || fail "straddle message: $(cat "$T/err.txt")"

# 35 linear layers x 1 candidate + 5 blocks x 3 pairs x (1 + 4 heads) = 110 units; the same
# numbers with 1 and 2 workers, and after a kill at 50 units (inside the per-head units) and a resume
"$MPQ" run "$T/spec.json" --db "$T/a.db" -q --workers 1 > /dev/null
"$MPQ" run "$T/spec.json" --db "$T/b.db" -q --workers 2 > /dev/null
expect_rc 130 "interrupted run" "$MPQ" run "$T/spec.json" --db "$T/c.db" -q --workers 2 --max-units 50
"$MPQ" resume ph --db "$T/c.db" -q > /dev/null
rows() { sqlite3 "$1" "SELECT l.name, m.candidate, m.metric, printf('%a', m.value), printf('%a', m.stderr)
                        FROM metrics m JOIN layers l ON l.id = m.layer_id ORDER BY 1, 2, 3"; }
rows "$T/a.db" > "$T/a.txt"; rows "$T/b.db" > "$T/b.txt"; rows "$T/c.db" > "$T/c.txt"
[ "$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM units")" = 110 ] || fail "expected 110 units"
[ "$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM metrics WHERE metric='kv_kl_head'")" = 60 ] || fail "expected 60 kv_kl_head rows"
[ "$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM metrics m JOIN layers l ON l.id = m.layer_id
      WHERE metric='kv_kl_head' AND l.name='blk.2.kv' AND candidate='k2v2@h3' AND value > 0")" = 1 ] \
  || fail "no kv_kl_head row for blk.2.kv k2v2@h3"
cmp -s "$T/a.txt" "$T/b.txt" || fail "1 and 2 workers store different numbers"
cmp -s "$T/a.txt" "$T/c.txt" || fail "killed and resumed run stores different numbers"

# the search per (block, head)
expect_rc 0 "per-head search" "$MPQ" kv ph --db "$T/a.db" --per-head --prune --nominal --budget kv-bits=3 \
  --export-config "$T/cfg.json"
grep -q "blk.4.kv.h3" "$T/out.txt" || fail "ladder lacks blk.4.kv.h3"
grep -q "kv-bits=3 -> point" "$T/out.txt" || fail "no budget pick"
[ "$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM solutions WHERE name='kv-bits-3-nominal-heads'
      AND solver='kv-frontier-heads' AND config_json LIKE '%\"kv\"%'")" = 1 ] || fail "per-head solution not stored"
# its assignment rows: per block the heads' pairs in head order joined by "," when they differ,
# else the one pair, as in the stored config; mpq report lists them and mpq plot --what kv rings them
asg=$(sqlite3 "$T/a.db" "SELECT group_concat(a.kv_pair, ' ') FROM (SELECT a.kv_pair FROM assignments a
        JOIN solutions s ON s.id = a.solution_id JOIN layers l ON l.id = a.layer_id
        WHERE s.name = 'kv-bits-3-nominal-heads' AND l.name LIKE 'blk.%.kv' ORDER BY l.block) a")
cfgp=$(sqlite3 "$T/a.db" "WITH c(j) AS (SELECT config_json FROM solutions WHERE name = 'kv-bits-3-nominal-heads'),
        blk(b) AS (VALUES (0), (1), (2), (3), (4))
        SELECT group_concat(p, ' ') FROM (SELECT COALESCE(
          (SELECT group_concat(h.value, ',') FROM json_each(json_extract(j, '\$.kv.layers.\"blk.' || b || '\".heads')) h),
          json_extract(j, '\$.kv.layers.\"blk.' || b || '\"'), json_extract(j, '\$.kv.default')) AS p FROM c, blk ORDER BY b)")
[ -n "$asg" ] && [ "$asg" = "$cfgp" ] || fail "assignment kv_pair '$asg', config '$cfgp'"
case "$asg" in *,*) ;; *) fail "no block of the 3-bit pick is split by head: '$asg'" ;; esac
expect_rc 0 "report of the per-head job" "$MPQ" report ph --db "$T/a.db" -o "$T/r.md"
first=${asg%% *}
grep -qF "| kv-bits-3-nominal-heads | blk.0.kv | $first" "$T/r.md" || fail "report lacks blk.0.kv $first: $(grep -A8 'KV pairs per block' "$T/r.md")"
# a database written before the heads were joined has "" there: the report reads the config's heads
cp "$T/a.db" "$T/old.db"
sqlite3 "$T/old.db" "UPDATE assignments SET kv_pair = '' WHERE kv_pair LIKE '%,%'"
expect_rc 0 "report of an older per-head solution" "$MPQ" report ph --db "$T/old.db" -o "$T/r_old.md"
b=0; for p in $asg; do case "$p" in *,*) break ;; esac; b=$((b + 1)); done # the first split block
grep -qF "| blk.$b.kv | $p (per KV head) |" "$T/r_old.md" || fail "report of the older rows lacks blk.$b.kv $p"
expect_rc 0 "kv plot of the per-head pick" "$MPQ" plot ph --db "$T/a.db" --what kv --solution kv-bits-3-nominal-heads -o "$T/kv.svg"
grep -q 'class="chosen-head"' "$T/kv.svg" && grep -q '(by head)' "$T/kv.svg" || fail "kv plot shows no per-head pairs"
# the exported config: 3 bits nominal on average over the 20 heads, read back by mpq eval
"$MPQ" eval --model "$M" --data "$EV" --config "$T/cfg.json" --seq-len 64 --n-seqs 2 --json > "$T/eval.json"
sqlite3 :memory: "SELECT json_extract(CAST(readfile('$T/eval.json') AS TEXT), '\$.avg_kv_bits')" > "$T/bits.txt"
# with group 8 every quantized K and V element carries 32/8 = 4 bits of scale + zero: 3 + 4
awk '{ if ($1 > 7.0 + 1e-9) exit 1 }' "$T/bits.txt" || fail "exported config above 3+4 bits: $(cat "$T/bits.txt")"
# item b*4+h is (block b, head h): its ladder error is the stored kv_kl_head of blk.b.kv, pair@hh;
# and the exported config holds the pick's pairs in item order
"$MPQ" kv ph --db "$T/a.db" --per-head --nominal --budget kv-bits=3.5 --export-config "$T/cfg35.json" --json \
  > "$T/ph.json"
want=$(sqlite3 "$T/a.db" "SELECT printf('%.10g', m.value) FROM metrics m JOIN layers l ON l.id = m.layer_id
                          WHERE m.metric = 'kv_kl_head' AND l.name = 'blk.2.kv' AND m.candidate = 'k2v2@h3'")
got=$(sqlite3 :memory: "SELECT printf('%.10g', json_extract(b.value, '\$.pairs[2].error'))
        FROM json_each(json_extract(CAST(readfile('$T/ph.json') AS TEXT), '\$.blocks')) b
        WHERE json_extract(b.value, '\$.block') = 2 AND json_extract(b.value, '\$.kv_head') = 3
          AND json_extract(b.value, '\$.pairs[2].pair') = 'k2v2'")
[ -n "$want" ] && [ "$want" = "$got" ] || fail "item (2, 3) k2v2: ladder '$got', stored '$want'"
picked=$(sqlite3 :memory: "SELECT group_concat(value, ' ') FROM json_each(json_extract(CAST(readfile('$T/ph.json') AS TEXT), '\$.budgets[0].pairs'))")
exported=$(sqlite3 :memory: "WITH c(j) AS (SELECT CAST(readfile('$T/cfg35.json') AS TEXT)),
  blk(b) AS (VALUES (0), (1), (2), (3), (4)), hd(h) AS (VALUES (0), (1), (2), (3))
  SELECT group_concat(p, ' ') FROM (SELECT COALESCE(json_extract(j, '\$.kv.layers.\"blk.' || b || '\".heads[' || h || ']'),
                                                   json_extract(j, '\$.kv.layers.\"blk.' || b || '\"'), json_extract(j, '\$.kv.default')) AS p
                                    FROM c, blk, hd ORDER BY b, h)")
[ "$picked" = "$exported" ] || fail "exported config '$exported' is not the pick '$picked'"
# mpq evaluate of the stored per-head solution (it mixes pairs inside blocks) measures what
# mpq kv --evaluate measured for that frontier point on the same (the job's) windows: the heads
# are applied, not the blocks' default k16v16
"$MPQ" kv ph --db "$T/a.db" --per-head --nominal --budget kv-bits=3.5 --evaluate --json > "$T/kvev.json"
"$MPQ" evaluate ph kv-bits-3.5-nominal-heads --db "$T/a.db" --json > "$T/ev.json"
a=$(sqlite3 :memory: "SELECT printf('%.17g', json_extract(e.value, '\$.kl'))
  FROM json_each(json_extract(CAST(readfile('$T/ev.json') AS TEXT), '\$.evaluations')) e
  WHERE json_extract(e.value, '\$.label') = 'kv-bits-3.5-nominal-heads'")
b=$(sqlite3 :memory: "WITH d(j) AS (SELECT CAST(readfile('$T/kvev.json') AS TEXT))
  SELECT printf('%.17g', json_extract(j, '\$.frontier[' || json_extract(j, '\$.budgets[0].point') || '].measured.kl')) FROM d")
[ "$a" = "$b" ] && [ "$a" != 0 ] || fail "mpq evaluate KL $a, mpq kv --evaluate KL $b"
grep -q '"heads"' "$T/cfg35.json" || fail "the 3.5-bit pick has no per-head block: $(cat "$T/cfg35.json")"

# KVTuner's per_head_config YAML (layer -> head -> bits) of the same pick
expect_rc 0 "KVTuner per-head export" "$MPQ" kv ph --db "$T/a.db" --per-head --nominal --budget kv-bits=3 \
  --export-kvtuner "$T/kvt.yaml"
[ "$(grep -c '^[0-4]:$' "$T/kvt.yaml")" = 5 ] || fail "KVTuner YAML lacks 5 layers: $(cat "$T/kvt.yaml")"
[ "$(grep -c '^  [0-3]:$' "$T/kvt.yaml")" = 20 ] || fail "KVTuner YAML lacks 4 heads per layer"
[ "$(grep -c '^    nbits_key: [248]$' "$T/kvt.yaml")" = 20 ] || fail "KVTuner YAML nbits_key"
awk '/nbits_key/ {s += $2} /nbits_value/ {s += $2} END {exit !(s / 40 <= 3)}' "$T/kvt.yaml" || fail "KVTuner YAML above 3 bits"
# the per-block search: --export-kvtuner F.yaml writes the YAML KVTuner's per_layer_config_path
# reads (yaml.safe_load; looked up with the integer layer index), F.json the JSON form; same pick
expect_rc 0 "KVTuner per-layer YAML" "$MPQ" kv ph --db "$T/a.db" --nominal --budget kv-bits=4 --export-kvtuner "$T/kvl.yaml"
expect_rc 0 "KVTuner per-layer JSON" "$MPQ" kv ph --db "$T/a.db" --nominal --budget kv-bits=4 --export-kvtuner "$T/kvl.json"
[ "$(grep -v '^#' "$T/kvl.yaml" | grep -E '^[^ ]' | tr -d '\n')" = "0:1:2:3:4:" ] || fail "per-layer YAML keys: $(cat "$T/kvl.yaml")"
[ "$(grep -cE '^  nbits_(key|value): (2|4|8)$' "$T/kvl.yaml")" = 10 ] || fail "per-layer YAML values: $(cat "$T/kvl.yaml")"
y=$(awk '/nbits_/ {printf "%s ", $2}' "$T/kvl.yaml")
j=$(sqlite3 :memory: "SELECT group_concat(v, ' ') || ' ' FROM (SELECT json_extract(value, '\$.nbits_key') || ' ' ||
      json_extract(value, '\$.nbits_value') AS v FROM json_each(CAST(readfile('$T/kvl.json') AS TEXT)) ORDER BY CAST(key AS INTEGER))")
[ "$y" = "$j" ] || fail "YAML pairs '$y', JSON pairs '$j'"
if python3 -c 'import yaml' 2>/dev/null; then
  python3 - "$T/kvl.yaml" <<'PY' || fail "per-layer YAML does not load as KVTuner reads it"
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
assert all(isinstance(c[i]["nbits_key"], int) and isinstance(c[i]["nbits_value"], int) for i in range(5)), c
PY
fi
# the per-layer KV formats of mpq export refuse a per-head config
expect_rc 6 "mpq export kvtuner of a per-head config" "$MPQ" export "ph:kv-bits-3-nominal-heads" --db "$T/a.db" \
  --format kvtuner -o "$T/x.json"
grep -q "per-KV-head pairs" "$T/err.txt" || fail "export refusal message: $(cat "$T/err.txt")"
expect_rc 0 "mpq export mpq of a per-head config" "$MPQ" export "ph:kv-bits-3-nominal-heads" --db "$T/a.db" \
  --format mpq -o "$T/x.json"
# the joint weight + KV ILP over linear layers and (block, head) items: a feasible row whose KV
# bytes per token fit what the ILP was given
expect_rc 0 "joint with per-head" "$MPQ" kv ph --db "$T/a.db" --per-head --joint bytes=1000000 --context 64 --json
sqlite3 :memory: "WITH d(j) AS (SELECT CAST(readfile('$T/out.txt') AS TEXT))
  SELECT json_extract(j, '\$.n_kv_heads') = 4 AND json_array_length(j, '\$.joint') = 1
     AND json_extract(j, '\$.joint[0].weight_bytes') + json_extract(j, '\$.joint[0].kv_bytes') <= 1000000
     AND json_extract(j, '\$.blocks[19].block') = 4 AND json_extract(j, '\$.blocks[19].kv_head') = 3 FROM d" \
  > "$T/j.txt"
[ "$(cat "$T/j.txt")" = 1 ] || fail "per-head joint JSON: $(head -c 400 "$T/out.txt")"

# a job measured without kv.per_head has no per-head rows: not found (10), naming the spec key
sed -e 's/, "per_head": true//' -e 's/"layer_sensitivity", //' -e 's/"name": "ph"/"name": "noph"/' \
  "$T/spec32.json" > "$T/noph.json"
"$MPQ" run "$T/noph.json" --db "$T/noph.db" -q > /dev/null
expect_rc 10 "--per-head without per-head rows" "$MPQ" kv noph --db "$T/noph.db" --per-head
grep -q "no 'kv_kl_head' rows.*per_head" "$T/err.txt" || fail "not-found message: $(cat "$T/err.txt")"

# hostile per-head configs
cfg() { printf '{"mpq_config_version": 1, "kv": {"scheme": {"mode": "kivi", "group_size": %s}, "layers": {"blk.1": {"heads": %s}}}}\n' "$1" "$2" > "$T/$3"; }
cfg 8 '["k4v4", "k4v4", "k4v4"]' three.json
expect_rc 4 "3 heads for 4" "$MPQ" eval --model "$M" --data "$EV" --config "$T/three.json" --seq-len 64 --n-seqs 1
grep -q "three.json: kv.layers.blk.1.heads: 3 pairs for a model with 4 KV heads" "$T/err.txt" || fail "head count message: $(cat "$T/err.txt")"
cfg 8 '["k4v4", "k5v4", "k4v4", "k4v4"]' badpair.json
expect_rc 4 "unknown pair" "$MPQ" eval --model "$M" --data "$EV" --config "$T/badpair.json" --seq-len 64 --n-seqs 1
grep -q "badpair.json: kv.layers.blk.1.heads\[1\]: expected a KV pair" "$T/err.txt" || fail "pair message: $(cat "$T/err.txt")"
cfg 32 '["k4v4", "k4v4", "k4v4", "k4v4"]' straddle.json
expect_rc 5 "group straddling heads" "$MPQ" eval --model "$M" --data "$EV" --config "$T/straddle.json" --seq-len 64 --n-seqs 1
grep -q "straddle.json: kv.layers.blk.1.heads: per-head pairs need kv.scheme.group_size (32) to divide head_dim (8)" \
  "$T/err.txt" || fail "straddle message: $(cat "$T/err.txt")"
echo "kv_perhead: ok"
