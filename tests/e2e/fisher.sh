#!/usr/bin/env bash
# fisher.sh - the fisher stage through `mpq run`: fisher_err stored for every (linear layer,
# candidate) with its stderr and n = windows; bit-identical with 1 and 2 workers and after a
# SIGKILL in the middle of the stage and a resume; `mpq solve --metric fisher_err` uses it;
# specs that cannot run the stage are refused naming the key.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"

cat > "$T/f.json" <<JSON
{"name": "fj", "model": "$MODEL",
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 32, "n_seqs": 6, "batch": 4},
 "candidates": ["int3g32", "int4g32"],
 "metrics": ["weight_error", "fisher"]}
JSON
fisher_rows() { # db -> the fisher_err rows only
  dump "$1" | grep '|fisher_err|' || true
}

# 1. one worker, two workers: same bits; 35 layers x 2 candidates, n = 6 windows, finite stderr
"$MPQ" run "$T/f.json" --db "$T/a.db" -q --workers 1 > /dev/null || fail "run --workers 1"
"$MPQ" run "$T/f.json" --db "$T/b.db" -q --workers 2 > /dev/null || fail "run --workers 2"
dump "$T/a.db" > "$T/a.txt"
dump "$T/b.db" > "$T/b.txt"
n=$(fisher_rows "$T/a.db" | wc -l)
[ "$n" -eq 70 ] || fail "stored $n fisher_err rows, want 35 x 2"
cmp -s "$T/a.txt" "$T/b.txt" || { diff "$T/a.txt" "$T/b.txt" | head -4; fail "--workers 1 vs 2 differ"; }
bad_rows=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM metrics WHERE metric = 'fisher_err' AND
  NOT (value > 0 AND stderr > 0 AND n = 6 AND json_extract(provenance_json, '$.stage') = 'fisher')")
[ "$bad_rows" = 0 ] || fail "$bad_rows fisher_err rows without a positive value, stderr, n = 6 or stage"
units=$(sqlite3 "$T/a.db" "SELECT group_concat(key, ',') FROM units WHERE stage = 'fisher' ORDER BY id")
[ "$units" = "blk.0,blk.1,blk.2,blk.3,blk.4" ] || fail "fisher units: $units"
# a coarser format scores worse on average over layers
worse=$(sqlite3 "$T/a.db" "SELECT COUNT(*) FROM metrics a JOIN metrics b ON a.layer_id = b.layer_id
  AND a.metric = 'fisher_err' AND b.metric = 'fisher_err' AND a.candidate = 'int3g32' AND b.candidate = 'int4g32'
  WHERE a.value > b.value")
[ "$worse" -ge 30 ] || fail "int3g32 scores worse than int4g32 on only $worse of 35 layers"
ok "fisher: 70 rows, bit-identical with 1 and 2 workers; int3 > int4 on $worse/35 layers"

# 2. SIGKILL inside the stage (weight_error has 35 units, then 5 fisher units), then resume
rc=0; MPQ_TEST_KILL_AFTER_UNITS=37 "$MPQ" run "$T/f.json" --db "$T/c.db" -q --workers 2 > /dev/null 2>&1 || rc=$?
[ "$rc" -eq 137 ] || fail "kill after 37 units: exit $rc, want 137"
[ "$(sqlite3 "$T/c.db" "SELECT COUNT(*) FROM units WHERE stage = 'fisher' AND status = 'done'")" = 2 ] ||
  fail "after the kill: fisher units done != 2"
"$MPQ" resume fj --db "$T/c.db" -q --workers 1 > /dev/null || fail "resume"
dump "$T/c.db" > "$T/c.txt"
cmp -s "$T/a.txt" "$T/c.txt" || { diff "$T/a.txt" "$T/c.txt" | head -4; fail "killed + resumed numbers differ"; }
ok "fisher: killed after 2 of 5 units and resumed: bit-identical"

# 3. the solver takes it as a metric
check "solve --metric fisher_err" 0 "fisher_err@" -- "$MPQ" solve fj --db "$T/a.db" --metric fisher_err \
  --budget avg-bits=4.5
check "solve --metric fisher_err+act_err" 0 "fisher_err+act_err@" -- "$MPQ" solve fj --db "$T/a.db" \
  --metric fisher_err+act_err --budget avg-bits=4.5

# 4. specs that cannot run it
cat > "$T/nc.json" <<JSON
{"name": "nc", "model": "$MODEL",
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 32, "n_seqs": 2},
 "metrics": ["fisher"]}
JSON
check "fisher without candidates" 5 "candidates: missing, and metrics fisher need weight candidates" -- \
  "$MPQ" run "$T/nc.json" --db "$T/x.db"
sed 's/"metrics"/"candidates": [], "metrics"/' "$T/nc.json" > "$T/ne.json"
check "fisher with an empty candidate list" 5 "candidates" -- "$MPQ" run "$T/ne.json" --db "$T/x.db"
sed 's/"fisher"/"fischer"/' "$T/nc.json" > "$T/nm.json"
check "misspelt metric" 5 "unknown metric 'fischer' (expected weight_error, layer_sensitivity, kv_sensitivity, hessian, noise_sensitivity or fisher)" -- \
  "$MPQ" run "$T/nm.json" --db "$T/x.db"
[ ! -e "$T/x.db" ] || [ "$(sqlite3 "$T/x.db" 'SELECT COUNT(*) FROM jobs')" = 0 ] || fail "a refused spec created a job"
[ "$fails" = 0 ] || exit 1
