#!/usr/bin/env bash
# hessian.sh - the hessian stage through the CLI: a job killed (SIGKILL) after N committed units
# (inside and after the chunked Hutchinson run) and at wall-clock moments (possibly between a
# trace chunk's artifact write and its unit commit) resumes with `mpq resume` and ends with
# stored numbers bit-identical to an uninterrupted run; hawq_omega == trace/n_params *
# weight_sse in SQL; the database stays intact.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"

cat > "$T/spec.json" <<JSON
{"name": "hs", "model": "$MPQ_SHARED/models/stories260K/stories260K.bin",
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 32, "n_seqs": 4, "batch": 4},
 "candidates": ["int3g32", "int4g32"],
 "metrics": ["weight_error", "hessian"],
 "hessian": {"probes_min": 4, "probes_max": 12, "probes_per_unit": 2, "n_seqs": 2, "seq_len": 16,
             "eig_iters": 4, "slq_steps": 5, "slq_probes": 2}}
JSON
# 35 weight_error; hessian: 6 chunks + 35 trace + fisher + 35 eig + model eig + 2 slq
TOTAL=$((35 + 6 + 35 + 1 + 35 + 1 + 2))

done_units() { sqlite3 "$1" "SELECT COUNT(*) FROM units WHERE status='done'"; }
check_db() { [ "$(sqlite3 "$1" 'PRAGMA integrity_check')" = ok ] || fail "$1: integrity_check"; }

"$MPQ" run "$T/spec.json" --db "$T/a.db" -q > /dev/null
[ "$(done_units "$T/a.db")" = "$TOTAL" ] || fail "reference run: $(done_units "$T/a.db") / $TOTAL units"
dump "$T/a.db" > "$T/a.txt"
[ "$(grep -c '|hutchinson_trace|' "$T/a.txt")" -eq 35 ] || fail "hutchinson_trace rows"
[ "$(grep -c '|hawq_omega|' "$T/a.txt")" -eq 70 ] || fail "hawq_omega rows"
# Omega = Tr(H_l)/n_l * ||Q(W)-W||^2, exactly, from the stored rows
bad=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM metrics o JOIN metrics t ON t.layer_id = o.layer_id
  AND t.metric = 'hutchinson_trace' JOIN metrics w ON w.layer_id = o.layer_id AND w.metric = 'weight_sse'
  AND w.candidate = o.candidate JOIN layers l ON l.id = o.layer_id
  WHERE o.metric = 'hawq_omega' AND o.value <> t.value / l.n_params * w.value")
[ "$bad" = 0 ] || fail "$bad hawq_omega rows differ from trace/n_params*weight_sse"

# SIGKILL after N committed units: inside the chunks (36, 38), at the chunk/trace border, later
rc=0; MPQ_TEST_KILL_AFTER_UNITS=36 "$MPQ" run "$T/spec.json" --db "$T/b.db" -q > /dev/null 2>&1 || rc=$?
[ "$rc" -eq 137 ] || fail "kill after 36 units: exit $rc, want 137"
check_db "$T/b.db"
prev=36
for n in 2 3 40; do
  rc=0; MPQ_TEST_KILL_AFTER_UNITS=$n "$MPQ" resume hs --db "$T/b.db" -q > /dev/null 2>&1 || rc=$?
  [ "$rc" -eq 137 ] || fail "kill after $n more units: exit $rc"
  check_db "$T/b.db"
  now=$(done_units "$T/b.db")
  [ "$now" -eq $((prev + n)) ] || fail "after kill at +$n: $now done, want $((prev + n))"
  prev=$now
done
"$MPQ" resume hs --db "$T/b.db" -q > /dev/null
dump "$T/b.db" > "$T/b.txt"
cmp -s "$T/a.txt" "$T/b.txt" || { diff "$T/a.txt" "$T/b.txt" | head -5; fail "killed+resumed numbers differ"; }

# SIGKILL at wall-clock moments during the trace chunks (any point: Hv, artifact write, commit)
# (a slow machine, e.g. a sanitizer build under load, may be killed before the job row exists:
# then the next attempt runs the spec again instead of resuming)
job_exists() { [ "$(sqlite3 "$1" "SELECT COUNT(*) FROM jobs WHERE name='hs'" 2> /dev/null)" = 1 ]; }
go() { # exec: in `go &` the killed pid is mpq itself, not a subshell waiting for it
  if job_exists "$T/c.db"; then exec "$MPQ" resume hs --db "$T/c.db" -q; else exec "$MPQ" run "$T/spec.json" --db "$T/c.db" -q; fi
}
for d in 0.15 0.05 0.1 0.2 0.3; do
  (go > /dev/null 2>&1) &
  pid=$!; sleep "$d"; kill -KILL "$pid" 2> /dev/null || true; wait "$pid" 2> /dev/null || true
  [ ! -f "$T/c.db" ] || check_db "$T/c.db"
done
(go > /dev/null)
[ "$(done_units "$T/c.db")" = "$TOTAL" ] || fail "after final resume: $(done_units "$T/c.db") units"
dump "$T/c.db" > "$T/c.txt"
cmp -s "$T/a.txt" "$T/c.txt" || { diff "$T/a.txt" "$T/c.txt" | head -5; fail "wall-clock killed numbers differ"; }
echo "hessian: ok ($TOTAL units; killed at 36,+2,+3,+40 units and at wall-clock moments; Omega exact)"
