#!/usr/bin/env bash
# bootstrap.sh - `mpq bootstrap` on a small stories260K job: per-window KL stored by the job
# (8 bytes per window) is read without measuring anything; a database without it gets the
# earlier 4-byte-per-window artifacts measured once, whose mean matches the stored kl; identity
# resamples reproduce the stored solution (stays optimal in every resample, every layer stable,
# no spread, same knee) and do not make another budget's solution optimal; the same seed gives
# the same report and a re-run measures nothing; hostile: unknown solution, a job without
# layer_sensitivity, a per-window artifact of the wrong size, bad options.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"

cat > "$T/spec.json" <<JSON
{"name": "bs", "model": "$MPQ_SHARED/models/stories260K/stories260K.bin",
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 32, "n_seqs": 6, "batch": 4},
 "evaluation": {"data": "$MPQ_SHARED/data/tinystories-eval.tok512.u16", "seq_len": 32, "n_seqs": 4, "seed": 2},
 "candidates": ["int2g32", "int3g32", "int4g32", "int8c"],
 "metrics": ["weight_error", "layer_sensitivity"]}
JSON
"$MPQ" run "$T/spec.json" --db "$T/a.db" -q --workers 2 > /dev/null
"$MPQ" solve bs --db "$T/a.db" --budget avg-bits=4.5 > /dev/null
"$MPQ" solve bs --db "$T/a.db" --budget avg-bits=3.5 > /dev/null
jq_num() { sqlite3 :memory: "SELECT json_extract(readfile('$2'), '\$.$1')"; }
n_unstable() { sqlite3 :memory: "SELECT COUNT(*) FROM json_each(json_extract(readfile('$1'), '\$.layers'))
  WHERE json_extract(value, '\$.stability') != 1"; }

# 1. identity resamples
"$MPQ" bootstrap bs --db "$T/a.db" --budget avg-bits=4.5 --identity -r 4 --json -q > "$T/id.json"
"$(dirname "$MPQ")/mpq_json_check" < "$T/id.json" > /dev/null || fail "bootstrap --json is not JSON"
[ "$(jq_num p_optimal "$T/id.json")" = 1 ] || fail "identity: p_optimal $(jq_num p_optimal "$T/id.json"), want 1"
[ "$(jq_num knee_same "$T/id.json")" = 1 ] || fail "identity: knee_same $(jq_num knee_same "$T/id.json")"
pred=$(jq_num predicted "$T/id.json")
for k in loss_p5 loss_p50 loss_p95; do
  [ "$(jq_num $k "$T/id.json")" = "$pred" ] || fail "identity: $k $(jq_num $k "$T/id.json") != predicted $pred"
done
[ "$(n_unstable "$T/id.json")" = 0 ] || fail "identity: $(n_unstable "$T/id.json") layers below stability 1"
ok "identity resamples reproduce kl@avg-bits=4.5"
n_art=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM artifacts WHERE name LIKE 'kl_windows/%' AND length(blob) = 48")
n_kl=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM metrics WHERE metric = 'kl'")
[ "$n_art" = "$n_kl" ] || fail "per-window artifacts stored by the job: $n_art of 6 windows x 8 bytes, $n_kl stored kl"
[ "$(jq_num measured_now "$T/id.json")" = 0 ] || fail "bootstrap measured $(jq_num measured_now "$T/id.json") units: the job stored them"
n_old=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM artifacts WHERE name LIKE 'window_kl/%'")
[ "$n_old" = 0 ] || fail "bootstrap wrote $n_old window_kl artifacts although the job stored kl_windows"
check_max=$(jq_num window_check_abs "$T/id.json")
# the stored per-window values are the executor's per-window means (the terms of its kl_seq_sum),
# read back as float32 by bootstrap: relative rounding 6e-8 of KL <= ~3 nats here, 2e-7 at most
# per window and in the mean of 6. A larger difference means other windows or weights.
awk -v x="$check_max" 'BEGIN { exit !(x < 1e-6) }' || fail "per-window means differ from stored kl by $check_max"
ok "bootstrap reads the job's per-window KL: $n_art artifacts, nothing measured"
# a database written before the job stored them: bootstrap measures (as before) into window_kl
cp "$T/a.db" "$T/old.db"
sqlite3 "$T/old.db" "DELETE FROM artifacts WHERE name LIKE 'kl_windows/%'"
"$MPQ" bootstrap bs --db "$T/old.db" --budget avg-bits=4.5 --identity -r 2 --json -q > "$T/old.json"
[ "$(jq_num measured_now "$T/old.json")" = "$n_kl" ] || fail "old database: measured $(jq_num measured_now "$T/old.json"), want $n_kl"
n_old=$(sqlite3 "$T/old.db" "SELECT COUNT(*) FROM artifacts WHERE name LIKE 'window_kl/%' AND length(blob) = 24")
[ "$n_old" = "$n_kl" ] || fail "old database: $n_old window_kl artifacts of 6 x 4 bytes, want $n_kl"
# the earlier measurement path (own forward, float32 log-probabilities, double sums): each
# log-probability is rounded to float32 (relative 6e-8 of |log p| <= ~20 nats here), so a
# position's KL can differ by ~1e-6 nats at worst; the means agree far better (2.7e-9 measured)
check_old=$(jq_num window_check_abs "$T/old.json")
awk -v x="$check_old" 'BEGIN { exit !(x < 1e-6) }' || fail "old database: per-window means differ from stored kl by $check_old"
[ "$(jq_num p_optimal "$T/old.json")" = 1 ] || fail "old database: identity p_optimal $(jq_num p_optimal "$T/old.json")"
ok "a database without kl_windows: bootstrap measures $n_old units and stores window_kl as before"
# another budget's solution is not the 4.5 optimum, even with identity resamples
"$MPQ" bootstrap bs --db "$T/a.db" --budget avg-bits=4.5 --solution kl@avg-bits=3.5 --identity -r 2 --json -q > "$T/o.json"
[ "$(jq_num p_optimal "$T/o.json")" = 0 ] || fail "kl@avg-bits=3.5 optimal at 4.5: $(jq_num p_optimal "$T/o.json")"
[ "$(jq_num measured_now "$T/o.json")" = 0 ] || fail "second run measured again"
ok "a 3.5-bit solution is never the 4.5 optimum; nothing measured twice"

# 2. same seed, same report; another seed resamples differently
"$MPQ" bootstrap bs --db "$T/a.db" --budget avg-bits=4.5 -r 30 --seed 7 --json -q > "$T/s1.json"
"$MPQ" bootstrap bs --db "$T/a.db" --budget avg-bits=4.5 -r 30 --seed 7 --json -q > "$T/s2.json"
cmp -s "$T/s1.json" "$T/s2.json" || fail "same seed, different report"
p5=$(jq_num loss_p5 "$T/s1.json"); p95=$(jq_num loss_p95 "$T/s1.json")
awk -v a="$p5" -v b="$p95" -v p="$pred" 'BEGIN { exit !(a < b && a <= p && p <= b) }' ||
  fail "resampled loss p5 $p5 / p95 $p95 do not bracket the predicted $pred"
ok "same seed same report; p5 $p5 <= predicted $pred <= p95 $p95"

# 3. hostile
check "unknown solution" 10 "no solution 'nosuch'" -- "$MPQ" bootstrap bs --db "$T/a.db" --budget avg-bits=4.5 --solution nosuch
check "no budget" 2 "budget" -- "$MPQ" bootstrap bs --db "$T/a.db"
check "bad resamples" 2 "resamples" -- "$MPQ" bootstrap bs --db "$T/a.db" --budget avg-bits=4.5 -r 0
check "unknown job" 10 "nojob" -- "$MPQ" bootstrap nojob --db "$T/a.db" --budget avg-bits=4.5
sed -e 's/"name": "bs"/"name": "we"/' -e 's/, "layer_sensitivity"//' "$T/spec.json" > "$T/we.json"
"$MPQ" run "$T/we.json" --db "$T/a.db" -q > /dev/null
check "no layer_sensitivity" 5 "no single-layer kl" -- "$MPQ" bootstrap we --db "$T/a.db" --budget avg-bits=4.5
sqlite3 "$T/old.db" "UPDATE artifacts SET blob = x'00000000' WHERE name = 'window_kl/blk.0.attn_q/int4g32'"
check "short artifact" 5 "window_kl/blk.0.attn_q/int4g32: 4 bytes" -- "$MPQ" bootstrap bs --db "$T/old.db" --budget avg-bits=4.5
sqlite3 "$T/a.db" "UPDATE artifacts SET blob = x'000000000000000000' WHERE name = 'kl_windows/blk.0.attn_q/int4g32'"
check "odd kl_windows artifact" 5 "kl_windows/blk.0.attn_q/int4g32: 9 bytes" -- "$MPQ" bootstrap bs --db "$T/a.db" --budget avg-bits=4.5
[ "$fails" -eq 0 ] || exit 1
echo "bootstrap: ok"
