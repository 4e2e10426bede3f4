#!/usr/bin/env bash
# lease.sh - one runner per job, and read-only access:
#   1. two `mpq run` of one spec started together on a new database, 20 times: the schema is
#      created once (no exit 7), exactly one process runs the units (each unit is started
#      once), the other is refused with exit 12 naming pid, host and start time, and the
#      job ends done with every unit; four at once on a new file also work;
#   2. a run killed with SIGKILL shows as interrupted in status/query (without the readers
#      writing anything), and resume takes its lease over and finishes the job;
#   3. status and query on files that cannot be written: a read-only bind mount (with and
#      without -wal/-shm files left by a killed run), and as an unprivileged user in a
#      directory it cannot write; writers say why they cannot write (exit 3).
# Tests run as root, for whom permissions do not stop writes: part 3 uses a private mount
# namespace (unshare -m) and setpriv to an unprivileged uid, and says so when they are not
# available here.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data).
set -uo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"

cat > "$T/spec.json" <<JSON
{"name": "ls", "model": "$MODEL",
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 64, "n_seqs": 8, "batch": 4},
 "candidates": ["int4g32"],
 "metrics": ["weight_error", "layer_sensitivity"]}
JSON
TOTAL=$((35 + 35))
q() { sqlite3 "$1" "$2"; }

# ---- 1. two runners of one job on a new database --------------------------------------
refused=0
for i in $(seq 1 20); do
  db=$T/two$i.db
  "$MPQ" run "$T/spec.json" --db "$db" -q --workers 1 > "$T/o1" 2> "$T/e1" & p1=$!
  "$MPQ" run "$T/spec.json" --db "$db" -q --workers 1 > "$T/o2" 2> "$T/e2" & p2=$!
  r1=0; wait $p1 || r1=$?
  r2=0; wait $p2 || r2=$?
  codes="$r1 $r2"
  case "$codes" in
    "0 12") loser=$T/e2; refused=$((refused + 1)) ;;
    "12 0") loser=$T/e1; refused=$((refused + 1)) ;;
    "0 0") loser= ;; # the second started after the first had finished: it found the job done
    *) bad "two runners #$i: exits $codes: $(cat "$T/e1" "$T/e2")"; continue ;;
  esac
  if [ -n "$loser" ] && ! grep -Eq "job 'ls' is being run by pid [0-9]+ on host .+ since 20[0-9-]+T" "$loser"; then
    bad "two runners #$i: refusal message: $(cat "$loser")"
  fi
  st=$(q "$db" "SELECT status FROM jobs")
  nd=$(q "$db" "SELECT COUNT(*) FROM units WHERE status='done'")
  att=$(q "$db" "SELECT SUM(attempts) FROM units")
  nl=$(q "$db" "SELECT COUNT(*) FROM job_leases")
  if [ "$st/$nd/$att/$nl" != "done/$TOTAL/$TOTAL/0" ]; then
    bad "two runners #$i: status/done/attempts/leases = $st/$nd/$att/$nl, want done/$TOTAL/$TOTAL/0"
  fi
done
[ "$refused" -ge 10 ] || bad "two runners: only $refused of 20 rounds overlapped (refusals)"
[ "$fails" = 0 ] && ok "two runners x20: one runs, the other exits 12 naming the holder ($refused refused)"

pids=()
for k in 1 2 3 4; do "$MPQ" run "$T/spec.json" --db "$T/four.db" -q --workers 1 > /dev/null 2> "$T/f$k" & pids+=($!); done
codes=""
for p in "${pids[@]}"; do r=0; wait "$p" || r=$?; codes="$codes $r"; done
n_ok=$(echo "$codes" | tr ' ' '\n' | grep -c '^0$')
if echo "$codes" | grep -Eq '(^| )(7|1|3)( |$)' || [ "$n_ok" -lt 1 ] ||
   [ "$(q "$T/four.db" "SELECT jobs.status || SUM(units.attempts) FROM jobs, units")" != "done$TOTAL" ]; then
  bad "four runners on a new file: exits$codes: $(cat "$T"/f?)"
else
  ok "four runners on a new file: exits$codes, schema created once, each unit run once"
fi

# ---- 2. SIGKILL -> interrupted; resume takes the lease over ---------------------------
db=$T/kill.db
r=0; MPQ_TEST_KILL_AFTER_UNITS=5 "$MPQ" run "$T/spec.json" --db "$db" -q --workers 1 > /dev/null 2>&1 || r=$?
[ "$r" = 137 ] || bad "kill -9: exit $r, want 137"
[ -e "$db-wal" ] || echo "note: no -wal file left by the killed run"
cp "$db" "$T/kill-before.db"
sum_before=$(cat "$db" "$db-wal" 2> /dev/null | sha256sum)
check "status: killed job is interrupted" 0 "status    interrupted" -- "$MPQ" status ls --db "$db"
grep -Eq "^runner    pid [0-9]+ on host .* \(gone" "$T/out" || bad "status: runner line: $(cat "$T/out")"
check "query jobs: killed job is interrupted" 0 "interrupted" -- "$MPQ" query jobs --db "$db"
"$MPQ" status ls --db "$db" --json > "$T/s.json" || bad "status --json"
grep -q '"alive":false' "$T/s.json" || bad "status --json: runner.alive: $(cat "$T/s.json")"
[ "$(cat "$db" "$db-wal" 2> /dev/null | sha256sum)" = "$sum_before" ] || bad "status/query wrote to the database"
[ "$(q "$db" "SELECT status FROM jobs")" = running ] || bad "stored status changed by a reader"
check "resume takes a dead runner's lease over" 0 "done: $TOTAL/$TOTAL units" -- "$MPQ" resume ls --db "$db" -q
[ "$(q "$db" "SELECT status || '/' || (SELECT COUNT(*) FROM job_leases) FROM jobs")" = "done/0" ] ||
  bad "after resume: $(q "$db" "SELECT status FROM jobs") and $(q "$db" "SELECT COUNT(*) FROM job_leases") leases"

# a live holder: a run stopped in the middle of its units by SIGSTOP keeps its lease
db=$T/live.db
"$MPQ" run "$T/spec.json" --db "$db" -q --workers 1 > /dev/null 2>&1 & p=$!
for _ in $(seq 1 100); do
  [ "$(q "$db" "SELECT COUNT(*) FROM units WHERE status='done'" 2> /dev/null)" -ge 1 ] 2> /dev/null && break
  sleep 0.05
done
kill -STOP $p
check "resume refused while the runner lives" 12 "is being run by pid $p on host" -- "$MPQ" resume ls --db "$db" -q
check "status of a live run" 0 "status    running" -- "$MPQ" status ls --db "$db"
# the runner may be stopped inside a write transaction: the database lock then outlasts the
# busy timeout, and a second runner must still name the live holder (exit 12), not "locked"
(echo "BEGIN IMMEDIATE;"; sleep 12; echo "ROLLBACK;") | sqlite3 "$db" &
lk=$!
sleep 0.5
check "resume refused while the runner lives and the write lock is held" 12 "is being run by pid $p on host" -- \
  "$MPQ" resume ls --db "$db" -q
wait $lk || true
kill -CONT $p
r=0; wait $p || r=$?
[ "$r" = 0 ] || bad "the stopped and continued run: exit $r"

# ---- 3. read-only files and file systems ----------------------------------------------
mkdir -p "$T/ro/src" "$T/ro/mnt"
cp "$T/two1.db" "$T/ro/src/done.db"                         # closed cleanly: no -wal
r=0; MPQ_TEST_KILL_AFTER_UNITS=3 "$MPQ" run "$T/spec.json" --db "$T/ro/src/k.db" -q --workers 1 > /dev/null 2>&1 || r=$?
[ -e "$T/ro/src/k.db-wal" ] && [ -e "$T/ro/src/k.db-shm" ] || bad "killed run left no -wal/-shm files"
if unshare -m true 2> /dev/null; then
  unshare -m bash -c '
    set -u
    mount --bind "$1/ro/src" "$1/ro/mnt" && mount -o remount,bind,ro "$1/ro/mnt" || exit 99
    touch "$1/ro/mnt/x" 2> /dev/null && exit 98
    "$2" status --db "$1/ro/mnt/done.db" > "$1/ro1" 2>&1 || exit 1
    "$2" query jobs --db "$1/ro/mnt/done.db" --json > "$1/ro2" 2>&1 || exit 2
    "$2" status ls --db "$1/ro/mnt/k.db" > "$1/ro3" 2>&1 || exit 3
    "$2" query --db "$1/ro/mnt/k.db" --sql "SELECT COUNT(*) AS n FROM units WHERE status=\"done\"" > "$1/ro4" 2>&1 || exit 4
    r=0; "$2" resume ls --db "$1/ro/mnt/done.db" > "$1/ro5" 2>&1 || r=$?; [ $r = 3 ] || exit 5
    r=0; "$2" run "$1/spec.json" --db "$1/ro/mnt/new.db" > "$1/ro6" 2>&1 || r=$?; [ $r = 3 ] || exit 6
    exit 0' _ "$T" "$MPQ"
  r=$?
  if [ $r = 99 ]; then
    echo "skip read-only bind mount: mount not permitted here"
  elif [ $r != 0 ]; then
    bad "read-only bind mount: step $r failed: $(cat "$T"/ro[0-9] 2> /dev/null)"
  else
    grep -q "done" "$T/ro1" && grep -q '"status":"done"' "$T/ro2" && grep -q "status    interrupted" "$T/ro3" &&
      grep -q "^ *3$" "$T/ro4" && grep -q "cannot write (Read-only file system)" "$T/ro5" &&
      grep -q "Read-only file system" "$T/ro6" && ok "read-only file system: status/query read (with and without -wal/-shm), run/resume exit 3 saying why" ||
      bad "read-only bind mount output: $(cat "$T"/ro[0-9])"
  fi
else
  echo "skip read-only bind mount: unshare -m not permitted here"
fi

if command -v setpriv > /dev/null && [ "$(id -u)" = 0 ]; then
  mkdir -p "$T/perm"
  cp "$T/two1.db" "$T/perm/done.db"
  chmod 755 "$T" "$T/perm"; chmod 644 "$T/perm/done.db"
  as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
  check "unwritable file and directory: status reads" 0 "done" -- as_nobody "$MPQ" status --db "$T/perm/done.db"
  check "unwritable file and directory: query reads" 0 "ls" -- as_nobody "$MPQ" query jobs --db "$T/perm/done.db"
  check "unwritable file: resume says why" 3 "cannot write (Permission denied)" -- as_nobody "$MPQ" resume ls --db "$T/perm/done.db"
  [ ! -e "$T/perm/done.db-wal" ] && [ ! -e "$T/perm/done.db-shm" ] || bad "readers created -wal/-shm files"
else
  echo "skip unprivileged-user checks: needs root and setpriv"
fi

[ "$fails" = 0 ] || { echo "lease: $fails failures"; exit 1; }
echo "lease: ok"
