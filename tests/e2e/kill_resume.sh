#!/usr/bin/env bash
# kill_resume.sh - a job killed at any point (SIGKILL after N committed units, SIGKILL at a
# wall-clock moment, SIGINT/SIGTERM) resumes with `mpq resume` and ends with stored numbers
# bit-identical to an uninterrupted run; the database stays intact and queryable meanwhile.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"

cat > "$T/spec.json" <<JSON
{"name": "kr", "model": "$MPQ_SHARED/models/stories260K/stories260K.bin",
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 64, "n_seqs": 8, "batch": 4},
 "candidates": ["int3g32", "int4g32"],
 "kv": {"scheme": {"mode": "kivi", "group_size": 32, "residual": 0}, "pairs": ["k4v4", "k2v2"]},
 "metrics": ["weight_error", "layer_sensitivity", "kv_sensitivity"]}
JSON
TOTAL=$((35 + 35 * 2 + 5 * 2))

check_db() { # integrity, queryable, job listed
  [ "$(sqlite3 "$1" 'PRAGMA integrity_check')" = ok ] || fail "$1: integrity_check"
  "$MPQ" query --db "$1" jobs > "$T/q.txt" || fail "$1: mpq query jobs"
  grep -q '^ *1 *kr ' "$T/q.txt" || fail "$1: job kr not listed: $(cat "$T/q.txt")"
  "$MPQ" status kr --db "$1" > /dev/null || fail "$1: mpq status"
}
done_units() { sqlite3 "$1" "SELECT COUNT(*) FROM units WHERE status='done'"; }

# 1. uninterrupted reference run
"$MPQ" run "$T/spec.json" --db "$T/a.db" -q > /dev/null
[ "$(done_units "$T/a.db")" = "$TOTAL" ] || fail "reference run: $(done_units "$T/a.db") / $TOTAL units"
dump "$T/a.db" > "$T/a.txt"
[ "$(wc -l < "$T/a.txt")" -eq $((35 * 9 + 35 * 2 * 3 + 5 * 2 * 4)) ] || fail "reference run: $(wc -l < "$T/a.txt") rows"

# 2. SIGKILL after N committed units (test hook), at several points, each followed by resume
rc=0; MPQ_TEST_KILL_AFTER_UNITS=1 "$MPQ" run "$T/spec.json" --db "$T/b.db" -q > /dev/null 2>&1 || rc=$?
[ "$rc" -eq 137 ] || fail "kill after 1 unit: exit $rc, want 137"
check_db "$T/b.db"
[ "$(done_units "$T/b.db")" = 1 ] || fail "after kill at 1: $(done_units "$T/b.db") units done"
prev=1
for n in 6 40 30; do
  rc=0; MPQ_TEST_KILL_AFTER_UNITS=$n "$MPQ" resume kr --db "$T/b.db" -q > /dev/null 2>&1 || rc=$?
  [ "$rc" -eq 137 ] || fail "kill after $n more units: exit $rc"
  check_db "$T/b.db"
  now=$(done_units "$T/b.db")
  [ "$now" -eq $((prev + n)) ] || fail "after kill at +$n: $now done, want $((prev + n))"
  prev=$now
done
# 3. SIGKILL at wall-clock moments (possibly in the middle of a unit or a commit)
for d in 0.3 0.8 1.5; do
  "$MPQ" resume kr --db "$T/b.db" -q > /dev/null 2>&1 &
  pid=$!
  sleep "$d"
  kill -KILL "$pid" 2> /dev/null || true
  wait "$pid" 2> /dev/null || true
  check_db "$T/b.db"
done
"$MPQ" resume kr --db "$T/b.db" -q > /dev/null
[ "$(done_units "$T/b.db")" = "$TOTAL" ] || fail "after final resume: $(done_units "$T/b.db") units"
[ "$(sqlite3 "$T/b.db" "SELECT status FROM jobs WHERE name='kr'")" = done ] || fail "job not done"
dump "$T/b.db" > "$T/b.txt"
cmp -s "$T/a.txt" "$T/b.txt" || { diff "$T/a.txt" "$T/b.txt" | head -5; fail "killed+resumed numbers differ"; }

# 4. SIGINT (hook: raised after 5 commits) and SIGTERM (a real signal): exit 130, resumable
# one worker: the stop comes after exactly 5 commits (with N workers, up to N-1 units in
# flight finish and are committed too)
rc=0; MPQ_TEST_INT_AFTER_UNITS=5 "$MPQ" run "$T/spec.json" --db "$T/c.db" -q --workers 1 > /dev/null 2> "$T/err.txt" || rc=$?
[ "$rc" -eq 130 ] || fail "SIGINT: exit $rc, want 130"
grep -q "mpq resume kr" "$T/err.txt" || fail "SIGINT: message lacks the resume hint: $(cat "$T/err.txt")"
[ "$(done_units "$T/c.db")" = 5 ] || fail "SIGINT: $(done_units "$T/c.db") units done, want 5"
[ "$(sqlite3 "$T/c.db" "SELECT status FROM jobs WHERE name='kr'")" = interrupted ] || fail "SIGINT: status"
"$MPQ" resume kr --db "$T/c.db" -q > /dev/null 2>&1 &
pid=$!
sleep 0.5
kill -TERM "$pid" 2> /dev/null || true
rc=0; wait "$pid" || rc=$?
[ "$rc" -eq 130 ] || [ "$rc" -eq 0 ] || fail "SIGTERM: exit $rc, want 130 (or 0 if it had finished)"
check_db "$T/c.db"
MPQ_DB="$T/c.db" "$MPQ" resume kr -q > /dev/null
dump "$T/c.db" > "$T/c.txt"
cmp -s "$T/a.txt" "$T/c.txt" || fail "interrupted+resumed numbers differ"
# attempts: every unit done, each started at least once
[ "$(sqlite3 "$T/b.db" "SELECT COUNT(*) FROM units WHERE attempts < 1 OR status <> 'done'")" = 0 ] || fail "attempts"
echo "kill_resume: ok ($TOTAL units; killed at 1,+6,+40,+30 units and at 0.3/0.8/1.5 s; SIGINT/SIGTERM)"
