#!/usr/bin/env bash
# kv_saq.sh - SAQ KV cache through the CLI on stories260K: `mpq eval --kv-mode saq --kv-fit`
# writes bases that `--kv-bases` and a config's kv.scheme.bases read back with the same KL;
# fractional pairs; and the errors: a fractional pair outside mode saq, saq without bases, a
# rate not achievable at head_dim 8, bases of another shape, a broken bases file (exit 5 / 4),
# KVTuner export of a saq config (exit 6, no file written); a saq job through mpq kv.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
expect_rc() { # expected-code description command...
  local want=$1 what=$2; shift 2
  set +e; "$@" > "$T/out.txt" 2> "$T/err.txt"; local rc=$?; set -e
  [ "$rc" -eq "$want" ] || fail "$what: exit $rc, expected $want: $(cat "$T/err.txt")"
}
M="$MPQ_SHARED/models/stories260K/stories260K.bin"
E="$MPQ_SHARED/data/tinystories-eval.tok512.u16"
C="$MPQ_SHARED/data/tinystories-calib.tok512.u16"
EV=(eval --model "$M" --data "$E" --seq-len 64 --n-seqs 4 --batch 4 --json)

expect_rc 0 "fit" "$MPQ" "${EV[@]}" --kv k3.25v2.5 --kv-mode saq --kv-fit "$C" --kv-fit-seqs 4 --kv-bases-out "$T/b.json"
kl_fit=$(grep -o '"kl":[^,]*' "$T/out.txt")
grep -q '"bases":' "$T/out.txt" || fail "eval --json lacks kv_scheme.bases"
expect_rc 0 "bases" "$MPQ" "${EV[@]}" --kv k3.25v2.5 --kv-mode saq --kv-bases "$T/b.json"
[ "$(grep -o '"kl":[^,]*' "$T/out.txt")" = "$kl_fit" ] || fail "KL with the saved bases differs: $kl_fit"
cat > "$T/cfg.json" <<JSON
{"mpq_config_version": 1, "kv": {"scheme": {"mode": "saq", "bases": "$T/b.json"}, "default": "k3.25v2.5"}}
JSON
expect_rc 0 "config" "$MPQ" "${EV[@]}" --config "$T/cfg.json"
[ "$(grep -o '"kl":[^,]*' "$T/out.txt")" = "$kl_fit" ] || fail "KL with the config differs: $kl_fit"

expect_rc 5 "fractional outside saq" "$MPQ" "${EV[@]}" --kv k3.25v2.5
grep -q "saq" "$T/err.txt" || fail "message lacks saq: $(cat "$T/err.txt")"
expect_rc 5 "saq without bases" "$MPQ" "${EV[@]}" --kv k3v3 --kv-mode saq
grep -q "bases" "$T/err.txt" || fail "message lacks bases: $(cat "$T/err.txt")"
expect_rc 5 "rate not achievable" "$MPQ" "${EV[@]}" --kv k3.0625v3 --kv-mode saq --kv-bases "$T/b.json"
grep -q "not achievable" "$T/err.txt" || fail "message: $(cat "$T/err.txt")"
expect_rc 5 "not canonical" "$MPQ" "${EV[@]}" --kv k3.50v3 --kv-mode saq --kv-bases "$T/b.json"
# bases of stories260K (4 KV heads x 8) for sotu-2.7M (2 x 32)
expect_rc 5 "bases of another shape" "$MPQ" eval --model "$MPQ_SHARED/models/sotu-2.7M/sotu-2.7M.bin" \
  --data "$MPQ_SHARED/data/sotu-eval.tok2048.u16" --seq-len 32 --n-seqs 1 --kv k3v3 --kv-mode saq --kv-bases "$T/b.json"
grep -q "4 KV heads" "$T/err.txt" || fail "message: $(cat "$T/err.txt")"
head -c 200 "$T/b.json" > "$T/cut.json"
expect_rc 4 "truncated bases" "$MPQ" "${EV[@]}" --kv k3v3 --kv-mode saq --kv-bases "$T/cut.json"
grep -q "cut.json" "$T/err.txt" || fail "message lacks the file: $(cat "$T/err.txt")"
sed 's/"mpq_kv_saq_version":1/"mpq_kv_saq_version":9/' "$T/b.json" > "$T/new.json"
expect_rc 6 "newer bases" "$MPQ" "${EV[@]}" --kv k3v3 --kv-mode saq --kv-bases "$T/new.json"
sed 's/"mode": "saq", "bases": "[^"]*"/"mode": "saq", "bases": "'"${T//\//\\/}"'\/cut.json"/' "$T/cfg.json" > "$T/cfg_cut.json"
expect_rc 4 "config with broken bases" "$MPQ" "${EV[@]}" --config "$T/cfg_cut.json"
grep -q "kv.scheme.bases" "$T/err.txt" || fail "message lacks the key: $(cat "$T/err.txt")"

expect_rc 6 "kvtuner export" "$MPQ" export --config "$T/cfg.json" --model "$M" --format kvtuner -o "$T/kvt.json"
grep -q "saq" "$T/err.txt" || fail "message: $(cat "$T/err.txt")"
[ ! -e "$T/kvt.json" ] || fail "kvtuner file written"
expect_rc 0 "mpq export" "$MPQ" export --config "$T/cfg.json" --model "$M" --format mpq -o "$T/m.json"
grep -q '"k3.25v2.5"' "$T/m.json" || fail "mpq export lacks the pair"
# a job: kv_sensitivity of saq pairs (bases fitted on the job's calibration windows), then
# mpq kv: frontier with fractional points and a 3.25-bit budget; exports refused (exit 6)
cat > "$T/spec.json" <<JSON
{"name": "saq", "model": "$M",
 "calibration": {"data": "$C", "seq_len": 64, "n_seqs": 2, "batch": 2},
 "kv": {"scheme": {"mode": "saq"}, "pairs": ["k4v4", "k3.25v3", "k3v3.25", "k2.5v2.5", "k2v2"]},
 "metrics": ["kv_sensitivity"]}
JSON
expect_rc 0 "saq job" "$MPQ" run "$T/spec.json" --db "$T/j.db" -q
expect_rc 0 "kv frontier" "$MPQ" kv saq --db "$T/j.db" --frontier --budget kv-bits=3.25 --json
grep -q '"k3.25v3"' "$T/out.txt" || fail "mpq kv --json lacks the fractional pair"
expect_rc 6 "kv export kvtuner" "$MPQ" kv saq --db "$T/j.db" --budget kv-bits=3.25 --export-kvtuner "$T/k.json"
grep -q "saq" "$T/err.txt" || fail "message: $(cat "$T/err.txt")"
sed 's/"mode": "saq"/"mode": "kivi"/' "$T/spec.json" > "$T/spec_kivi.json"
expect_rc 5 "fractional pair in a kivi job" "$MPQ" run "$T/spec_kivi.json" --db "$T/j2.db" -q
grep -q "fractional" "$T/err.txt" || fail "message: $(cat "$T/err.txt")"
echo "kv_saq: ok"
