#!/usr/bin/env bash
# adaptive.sh - adaptive layer_sensitivity on a small stories260K job (README "Adaptive
# measurement"): the stored numbers, per-window values, states and round decisions are
# bit-identical for 1 and 2 workers and after SIGKILLs (mid-round, test hook and wall clock)
# and resumes; a unit extended to every window equals the non-adaptive measurement bit for
# bit; fewer window-evaluations than the full job are stored; rounds are stored, shown by
# `mpq status` and recorded in the provenance; bootstrap reads the units that have every
# window and measures only the others; hostile "adaptive" sections are refused naming the key,
# and so is a run under mpirun; a damaged stored round decision or unit state is refused naming it.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"

spec() { # NAME ADAPTIVE-JSON (empty: none)
  cat <<JSON
{"name": "$1", "model": "$MPQ_SHARED/models/stories260K/stories260K.bin",
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 32, "n_seqs": 8, "batch": 2},
 "candidates": ["int2g32", "int3g32", "int4g32", "int8c"],
 "metrics": ["layer_sensitivity"]${2:+, \"adaptive\": $2}}
JSON
}
AD='{"budgets": ["avg-bits=3.5", "avg-bits=4.5"], "min_windows": 2, "step": 2, "z": 2}'
spec ad "$AD" > "$T/ad.json"
spec full "" > "$T/full.json"
BASE=$((35 * 4))
arts() { # every per-window, state and round artifact, exactly
  sqlite3 "$1" "SELECT name, hex(blob) FROM artifacts WHERE name LIKE 'kl_windows/%' OR name LIKE 'adaptive.%' ORDER BY name"
}
windows() { sqlite3 "$1" "SELECT SUM(n) FROM metrics WHERE metric = 'kl'"; }

# 1. uninterrupted, 2 workers; 1 worker gives the same bits
"$MPQ" run "$T/ad.json" --db "$T/a.db" -q --workers 2 > /dev/null
[ "$(sqlite3 "$T/a.db" "SELECT status FROM jobs WHERE name='ad'")" = done ] || fail "adaptive job not done"
dump "$T/a.db" > "$T/a.txt"; arts "$T/a.db" > "$T/a.art"
"$MPQ" run "$T/ad.json" --db "$T/w1.db" -q --workers 1 > /dev/null
dump "$T/w1.db" > "$T/w1.txt"; arts "$T/w1.db" > "$T/w1.art"
cmp -s "$T/a.txt" "$T/w1.txt" || { diff "$T/a.txt" "$T/w1.txt" | head -5; fail "workers 1 vs 2: numbers differ"; }
cmp -s "$T/a.art" "$T/w1.art" || fail "workers 1 vs 2: per-window values, states or rounds differ"
n_rounds=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM artifacts WHERE name LIKE 'adaptive.round.%'")
[ "$n_rounds" -ge 2 ] || fail "only $n_rounds rounds decided"
last=$(sqlite3 "$T/a.db" "SELECT json_array_length(blob, '\$.extend') FROM artifacts WHERE name = 'adaptive.round.$n_rounds'")
[ "$last" = 0 ] || fail "the last round extends $last units (it should settle the stage)"
ok "workers 1 and 2: identical numbers, per-window values and $n_rounds rounds"

# 2. the non-adaptive job: a unit with all 8 windows equals it bit for bit; fewer windows stored
"$MPQ" run "$T/full.json" --db "$T/f.db" -q --workers 2 > /dev/null
wa=$(windows "$T/a.db"); wf=$(windows "$T/f.db")
[ "$wf" = $((BASE * 8)) ] || fail "full job: $wf window-evaluations, want $((BASE * 8))"
[ "$wa" -lt "$wf" ] || fail "adaptive job stored $wa window-evaluations, the full job $wf"
n_full=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM metrics WHERE metric = 'kl' AND n = 8")
n_min=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM metrics WHERE metric = 'kl' AND n = 2")
[ "$n_full" -ge 1 ] && [ "$n_min" -ge 1 ] || fail "units at 8 windows: $n_full, at 2: $n_min (want some of each)"
same=$(sqlite3 "$T/a.db" "ATTACH '$T/f.db' AS f;
  SELECT COUNT(*) FROM metrics a JOIN layers la ON la.id = a.layer_id, f.metrics b JOIN f.layers lb ON lb.id = b.layer_id
  WHERE la.name = lb.name AND a.candidate = b.candidate AND a.metric = b.metric AND a.n = 8
    AND a.value = b.value AND a.stderr = b.stderr AND b.n = 8")
[ "$same" = $((n_full * 3)) ] || fail "units extended to every window: $same of $((n_full * 3)) kl/dloss/top1 rows equal the full job's"
same_w=$(sqlite3 "$T/a.db" "ATTACH '$T/f.db' AS f; SELECT COUNT(*) FROM artifacts a, f.artifacts b
  WHERE a.name = b.name AND a.name LIKE 'kl_windows/%' AND a.blob = b.blob AND length(a.blob) = 64")
[ "$same_w" = "$n_full" ] || fail "per-window values: $same_w of $n_full full units equal the full job's"
# a unit stopped early holds the full job's first windows: windows are taken in the same order
pre=$(sqlite3 "$T/a.db" "ATTACH '$T/f.db' AS f; SELECT COUNT(*) FROM artifacts a, f.artifacts b
  WHERE a.name = b.name AND a.name LIKE 'kl_windows/%' AND length(a.blob) = 16 AND a.blob = substr(b.blob, 1, 16)")
[ "$pre" = "$n_min" ] || fail "units at 2 windows: $pre of $n_min hold the full job's first 2 per-window values"
ok "$n_full units at all 8 windows equal the full job bit for bit; $n_min stopped at 2; windows $wa of $wf"

# 3. provenance and status
prov=$(sqlite3 "$T/a.db" "SELECT json_extract(provenance_json, '\$.adaptive') FROM metrics WHERE metric = 'kl' AND n = 8 LIMIT 1")
echo "$prov" | grep -q '"rule":"ilp-flip"' || fail "provenance lacks the rule: $prov"
echo "$prov" | grep -q '"windows":8' || fail "provenance lacks the windows used: $prov"
"$MPQ" status ad --db "$T/a.db" > "$T/st.txt"
grep -q "round $n_rounds: 0 units extended" "$T/st.txt" || fail "status does not show the rounds: $(cat "$T/st.txt")"
"$MPQ" status ad --db "$T/a.db" --json > "$T/st.json"
[ "$(sqlite3 :memory: "SELECT json_array_length(readfile('$T/st.json'), '\$.adaptive_rounds')")" = "$n_rounds" ] ||
  fail "status --json: adaptive_rounds"
ok "provenance records the rule and windows; status shows $n_rounds rounds"

# 4. SIGKILL after N units (in round 0 and in later rounds) and at wall-clock moments; resume
rc=0; MPQ_TEST_KILL_AFTER_UNITS=100 "$MPQ" run "$T/ad.json" --db "$T/k.db" -q --workers 2 > /dev/null 2>&1 || rc=$?
[ "$rc" -eq 137 ] || fail "kill after 100 units: exit $rc, want 137"
for n in 60 15 7; do
  rc=0; MPQ_TEST_KILL_AFTER_UNITS=$n "$MPQ" resume ad --db "$T/k.db" -q --workers 2 > /dev/null 2>&1 || rc=$?
  [ "$rc" -eq 137 ] || [ "$rc" -eq 0 ] || fail "kill after $n more units: exit $rc"
done
for d in 0.2 0.6; do
  "$MPQ" resume ad --db "$T/k.db" -q --workers 2 > /dev/null 2>&1 &
  pid=$!
  sleep "$d"
  kill -KILL "$pid" 2> /dev/null || true
  wait "$pid" 2> /dev/null || true
done
"$MPQ" resume ad --db "$T/k.db" -q --workers 1 > /dev/null
[ "$(sqlite3 "$T/k.db" 'PRAGMA integrity_check')" = ok ] || fail "integrity_check after kills"
dump "$T/k.db" > "$T/k.txt"; arts "$T/k.db" > "$T/k.art"
cmp -s "$T/a.txt" "$T/k.txt" || { diff "$T/a.txt" "$T/k.txt" | head -5; fail "killed+resumed numbers differ"; }
cmp -s "$T/a.art" "$T/k.art" || fail "killed+resumed per-window values, states or rounds differ"
ok "killed (after 100, +60, +15, +7 units and at 0.2/0.6 s) and resumed: bit-identical"

# 5. bootstrap: units with every window are read, the others measured
n_units=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM metrics WHERE metric = 'kl'")
"$MPQ" solve ad --db "$T/a.db" --budget avg-bits=4.5 > /dev/null
"$MPQ" bootstrap ad --db "$T/a.db" --budget avg-bits=4.5 --identity -r 2 --json -q > "$T/b.json"
m=$(sqlite3 :memory: "SELECT json_extract(readfile('$T/b.json'), '\$.measured_now')")
[ "$m" = $((n_units - n_full)) ] || fail "bootstrap measured $m units, want the $((n_units - n_full)) short of windows"
ok "bootstrap measured only the $m units short of windows"

# 6. hostile adaptive sections
hostile() { # NAME NEEDLE ADAPTIVE-JSON
  spec h "$3" > "$T/h.json"
  check "$1" 5 "$2" -- "$MPQ" run "$T/h.json" --db "$T/h.db" -q
}
hostile "min_windows 0" "adaptive.min_windows" '{"budgets": ["avg-bits=4"], "min_windows": 0}'
hostile "min_windows > n_seqs" "adaptive.min_windows: expected a positive integer <= 8" '{"budgets": ["avg-bits=4"], "min_windows": 10}'
hostile "min_windows not whole batches" "not a multiple of calibration.batch 2" '{"budgets": ["avg-bits=4"], "min_windows": 3}'
hostile "step not whole batches" "adaptive.step: 3 is not a multiple" '{"budgets": ["avg-bits=4"], "step": 3}'
hostile "z 0" "adaptive.z: expected a number in (0, 100]" '{"budgets": ["avg-bits=4"], "z": 0}'
hostile "z negative" "adaptive.z" '{"budgets": ["avg-bits=4"], "z": -1}'
hostile "z string" "adaptive.z" '{"budgets": ["avg-bits=4"], "z": "2"}'
hostile "tol > 1" "adaptive.tol" '{"budgets": ["avg-bits=4"], "tol": 2}'
hostile "unknown budget" "adaptive.budgets[0]" '{"budgets": ["speed=4"]}'
hostile "budget not a string" "adaptive.budgets[1]" '{"budgets": ["avg-bits=4", 3]}'
hostile "no budgets" "adaptive.budgets" '{"min_windows": 2}'
hostile "empty budgets" "adaptive.budgets" '{"budgets": []}'
hostile "duplicate budget" "listed twice" '{"budgets": ["avg-bits=4", "avg-bits=4"]}'
hostile "unknown key" "adaptive" '{"budgets": ["avg-bits=4"], "windows": 2}'
hostile "not an object" "adaptive: expected an object" '[1]'
sed 's/"metrics": \["layer_sensitivity"\]/"metrics": ["weight_error"]/' <(spec h '{"budgets": ["avg-bits=4"]}') > "$T/h2.json"
check "without layer_sensitivity" 5 "adaptive: given, but metrics does not list" -- "$MPQ" run "$T/h2.json" --db "$T/h.db" -q
[ ! -e "$T/h.db" ] || [ "$(sqlite3 "$T/h.db" "SELECT COUNT(*) FROM jobs")" = 0 ] || fail "a refused spec created a job"
# 6b. a damaged stored decision or unit state is refused naming it, and nothing is changed
rc=0; MPQ_TEST_KILL_AFTER_UNITS=$((BASE + 3)) "$MPQ" run "$T/ad.json" --db "$T/d.db" -q --workers 1 > /dev/null 2>&1 || rc=$?
[ "$rc" -eq 137 ] || fail "kill after $((BASE + 3)) units: exit $rc"
sqlite3 "$T/d.db" ".backup '$T/d2.db'" # (cp would miss the commits still in the WAL file)
sqlite3 "$T/d.db" "UPDATE artifacts SET blob = '{}' WHERE name = 'adaptive.round.1'"
check "damaged round decision" 4 "adaptive.round.1 has no \"extend\" list" -- "$MPQ" resume ad --db "$T/d.db" -q
key=$(sqlite3 "$T/d2.db" "SELECT substr(key, 9) FROM units WHERE key LIKE 'round.1/%' AND status != 'done' ORDER BY id LIMIT 1")
sqlite3 "$T/d2.db" "UPDATE artifacts SET blob = '{\"windows\": 99}' WHERE name = 'adaptive.state/$key'"
check "damaged unit state" 4 "adaptive.state/$key is not a valid adaptive state" -- "$MPQ" resume ad --db "$T/d2.db" -q

# 7. under MPI the option is refused before anything is stored (this build's MPI, or none)
if command -v mpirun > /dev/null; then
  # detect_leaks=0: Open MPI's own MPI_Init/Finalize leaks would fail a sanitizer build (see e2e.mpi)
  check "refused under mpirun" 6 "MPI" -- env ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
    mpirun -n 2 --oversubscribe --allow-run-as-root "$MPQ" run "$T/ad.json" --db "$T/m.db" -q
  [ ! -e "$T/m.db" ] || [ "$(sqlite3 "$T/m.db" "SELECT COUNT(*) FROM jobs")" = 0 ] || fail "mpirun: a job was stored"
fi
[ "$fails" -eq 0 ] || exit 1
echo "adaptive: ok"
