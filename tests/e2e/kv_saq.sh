#!/usr/bin/env bash
# kv_saq.sh - SAQ KV cache through the CLI on stories260K: `mpq eval --kv-mode saq --kv-fit`
# writes bases that `--kv-bases` and a config's kv.scheme.bases read back with the same KL;
# fractional pairs; and the errors: a fractional pair outside mode saq, saq without bases, a
# rate not achievable at head_dim 8, bases of another shape, a broken bases file (exit 5 / 4),
# KVTuner export of a saq config (exit 6, no file written); a saq job through mpq kv: its bases
# stored (artifact kv_saq_bases), --evaluate and --export-config equal to mpq eval --config of
# the export (bases path relative to the config), kill + resume bit-identical, a bad artifact (exit 4).
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
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
# a job: kv_sensitivity of saq pairs (bases fitted on the job's calibration windows and
# stored as artifact kv_saq_bases), then mpq kv: frontier with fractional points and a
# 3.25-bit budget; --evaluate and --export-config work, KVTuner export refused (exit 6)
cat > "$T/spec.json" <<JSON
{"name": "saq", "model": "$M",
 "calibration": {"data": "$C", "seq_len": 64, "n_seqs": 2, "batch": 2},
 "evaluation": {"data": "$E", "seq_len": 64, "n_seqs": 4, "seed": 2},
 "kv": {"scheme": {"mode": "saq"}, "pairs": ["k4v4", "k3.25v3", "k3v3.25", "k2.5v2.5", "k2v2"]},
 "metrics": ["kv_sensitivity"]}
JSON
art() { sqlite3 "$1" "SELECT count(*) FROM artifacts WHERE name = 'kv_saq_bases'"; }
expect_rc 0 "saq job" "$MPQ" run "$T/spec.json" --db "$T/j.db" -q
[ "$(art "$T/j.db")" = 1 ] || fail "artifact kv_saq_bases not stored"
expect_rc 0 "kv frontier" "$MPQ" kv saq --db "$T/j.db" --frontier --budget kv-bits=3.25 --json
grep -q '"k3.25v3"' "$T/out.txt" || fail "mpq kv --json lacks the fractional pair"
expect_rc 6 "kv export kvtuner" "$MPQ" kv saq --db "$T/j.db" --budget kv-bits=3.25 --export-kvtuner "$T/k.json" \
  --export-config "$T/k_cfg.json"
grep -q "saq" "$T/err.txt" || fail "message: $(cat "$T/err.txt")"
[ ! -e "$T/k.json" ] && [ ! -e "$T/k_cfg.json" ] || fail "a file was written by a refused export"
# --evaluate with the stored bases; the exported config (bases in sub/c.json.bases.json, named
# relative to the config's directory) under mpq eval, run from another directory, on the same
# windows and batch (the job's evaluation: 4 windows of 64 from seed 2, one batch) gives the
# very same KL: the same bases, pairs, windows and sums, so the doubles are compared exactly
mkdir "$T/sub" "$T/elsewhere"
expect_rc 0 "kv evaluate + export" "$MPQ" kv saq --db "$T/j.db" --budget kv-bits=3.25 --evaluate \
  --export-config "$T/sub/c.json" --json
[ -s "$T/sub/c.json.bases.json" ] || fail "bases file not written next to the config"
grep -q '"bases":[[:space:]]*"c.json.bases.json"' "$T/sub/c.json" || fail "config does not name its bases: $(cat "$T/sub/c.json")"
sqlite3 "$T/j.db" "SELECT CAST(blob AS TEXT) FROM artifacts WHERE name = 'kv_saq_bases'" > "$T/art.json"
cmp -s "$T/art.json" "$T/sub/c.json.bases.json" || fail "exported bases differ from the stored artifact"
cp "$T/out.txt" "$T/kv.json"
# the pick's measured KL, printed exactly (%!.17g)
jx() { sqlite3 :memory: "SELECT printf('%!.17g', json_extract(readfile('$1'), '$2'))"; }
pt=$(sqlite3 :memory: "SELECT json_extract(readfile('$T/kv.json'), '\$.budgets[0].point')")
kl_kv=$(jx "$T/kv.json" "\$.frontier[$pt].measured.kl")
(cd "$T/elsewhere" && "$MPQ" eval --model "$M" --data "$E" --seq-len 64 --n-seqs 4 --seed 2 --batch 8 \
  --config ../sub/c.json --json) > "$T/ev.txt" 2> "$T/err.txt" || fail "mpq eval of the export: $(cat "$T/err.txt")"
kl_ev=$(jx "$T/ev.txt" '$.kl')
[ "$kl_kv" = "$kl_ev" ] && [ "$kl_kv" != "" ] || fail "mpq eval --config KL $kl_ev differs from mpq kv --evaluate $kl_kv"
# the config written back elsewhere (mpq export --format mpq) names the same bases file
expect_rc 0 "re-export" "$MPQ" export --config "$T/sub/c.json" --model "$M" --format mpq -o "$T/elsewhere/m.json"
(cd "$T" && "$MPQ" eval --model "$M" --data "$E" --seq-len 64 --n-seqs 4 --seed 2 --batch 8 \
  --config elsewhere/m.json --json) > "$T/ev.txt" 2> "$T/err.txt" || fail "mpq eval of the re-export: $(cat "$T/err.txt")"
[ "$(jx "$T/ev.txt" '$.kl')" = "$kl_kv" ] || fail "re-exported config: KL $(jx "$T/ev.txt" '$.kl') differs from $kl_kv"
# resume after a kill reads the stored bases: a killed run stored them before its first unit;
# numbers after resume are bit-identical to the uninterrupted run's
rc=0; MPQ_TEST_KILL_AFTER_UNITS=1 "$MPQ" run "$T/spec.json" --db "$T/k.db" -q > /dev/null 2>&1 || rc=$?
[ "$rc" -eq 137 ] || fail "kill after 1 unit: exit $rc, want 137"
[ "$(art "$T/k.db")" = 1 ] || fail "killed run did not store kv_saq_bases"
expect_rc 0 "resume" "$MPQ" resume saq --db "$T/k.db" -q
dump "$T/j.db" > "$T/a.txt"; dump "$T/k.db" > "$T/b.txt"
cmp -s "$T/a.txt" "$T/b.txt" || { diff "$T/a.txt" "$T/b.txt" | head -5; fail "killed+resumed numbers differ"; }
# a stored artifact that is not valid / not of the model's shape: exit 4 naming db, job, artifact
rc=0; MPQ_TEST_KILL_AFTER_UNITS=1 "$MPQ" run "$T/spec.json" --db "$T/x.db" -q > /dev/null 2>&1 || rc=$?
sqlite3 "$T/x.db" "UPDATE artifacts SET blob = CAST(substr(CAST(blob AS TEXT), 1, 300) AS BLOB) WHERE name = 'kv_saq_bases'"
expect_rc 4 "resume with a cut artifact" "$MPQ" resume saq --db "$T/x.db" -q
grep -q "x.db: job 'saq': artifact kv_saq_bases" "$T/err.txt" || fail "message: $(cat "$T/err.txt")"
# bases of sotu-2.7M (2 KV heads x 32, 4 blocks) in the stories260K job (4 x 8, 5 blocks)
expect_rc 0 "sotu bases" "$MPQ" eval --model "$MPQ_SHARED/models/sotu-2.7M/sotu-2.7M.bin" \
  --data "$MPQ_SHARED/data/sotu-eval.tok2048.u16" --seq-len 32 --n-seqs 1 --kv k3v3 --kv-mode saq \
  --kv-fit "$MPQ_SHARED/data/sotu-eval.tok2048.u16" --kv-fit-seqs 1 --kv-bases-out "$T/sotu.json"
sqlite3 "$T/x.db" "UPDATE artifacts SET blob = readfile('$T/sotu.json') WHERE name = 'kv_saq_bases'"
expect_rc 4 "resume with bases of another model" "$MPQ" resume saq --db "$T/x.db" -q
grep -q "x.db: job 'saq': artifact kv_saq_bases" "$T/err.txt" || fail "message: $(cat "$T/err.txt")"
cp "$T/j.db" "$T/y.db"
sqlite3 "$T/y.db" "UPDATE artifacts SET blob = readfile('$T/sotu.json') WHERE name = 'kv_saq_bases'"
expect_rc 4 "kv --evaluate with bases of another model" "$MPQ" kv saq --db "$T/y.db" --budget kv-bits=3.25 --evaluate
grep -q "artifact kv_saq_bases" "$T/err.txt" || fail "message: $(cat "$T/err.txt")"
expect_rc 4 "kv --export-config with bases of another model" "$MPQ" kv saq --db "$T/y.db" --budget kv-bits=3.25 \
  --export-config "$T/y.json"
[ ! -e "$T/y.json" ] && [ ! -e "$T/y.json.bases.json" ] || fail "export written from a bad artifact"
# a job stored without the artifact (an older mpq): --evaluate names it, exit 10
cp "$T/j.db" "$T/z.db"
sqlite3 "$T/z.db" "DELETE FROM artifacts WHERE name = 'kv_saq_bases'"
expect_rc 10 "kv --evaluate without the artifact" "$MPQ" kv saq --db "$T/z.db" --budget kv-bits=3.25 --evaluate
grep -q "artifact kv_saq_bases: missing" "$T/err.txt" || fail "message: $(cat "$T/err.txt")"
sed 's/"mode": "saq"/"mode": "kivi"/' "$T/spec.json" > "$T/spec_kivi.json"
expect_rc 5 "fractional pair in a kivi job" "$MPQ" run "$T/spec_kivi.json" --db "$T/j2.db" -q
grep -q "fractional" "$T/err.txt" || fail "message: $(cat "$T/err.txt")"
echo "kv_saq: ok (pick measured KL $kl_kv by mpq kv --evaluate and by mpq eval --config)"
