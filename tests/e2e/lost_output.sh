#!/usr/bin/env bash
# End-to-end: output that cannot be written (a full disk: /dev/full as stdout or as -o FILE) is
# exit 3 with a message, never exit 0 with the output lost: query, status, inspect (text and
# --json), eval (text, --json, --json-out), export -o - / -o FILE, plot -o - / -o FILE, --help.
set -u
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
[ -w /dev/full ] || { echo "skip: no /dev/full"; exit 0; }
data=$MPQ_SHARED/data/tinystories-eval.tok512.u16
cat >"$T/spec.json" <<J
{"name": "e2e-full", "model": "$MODEL", "seed": 1,
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 32, "n_seqs": 2, "batch": 2},
 "candidates": ["int3g32", "int8c"], "metrics": ["layer_sensitivity"]}
J
db=$T/f.db
"$MPQ" run "$T/spec.json" --db "$db" --quiet >/dev/null 2>&1 || fail "run"
"$MPQ" pareto e2e-full --db "$db" >/dev/null 2>&1 || fail "pareto"

full() { # NAME NEEDLE -- CMD...: CMD with stdout on /dev/full must exit 3 and say so on stderr
  local name=$1 needle=$2 got=0
  shift 3
  "$@" >/dev/full 2>"$T/err" || got=$?
  if [ "$got" != 3 ] || ! grep -qF -- "$needle" "$T/err"; then
    echo "FAIL $name: exit $got (want 3), stderr lacks '$needle':"; cat "$T/err"; fails=$((fails + 1))
  else
    echo "ok   $name"
  fi
}
w="stdout: write failed: No space left on device"
full query "$w" -- "$MPQ" query --db "$db" jobs
full query-json "$w" -- "$MPQ" query --db "$db" --json jobs
full status "$w" -- "$MPQ" status e2e-full --db "$db"
full inspect "$w" -- "$MPQ" inspect "$MODEL"
full inspect-json "$w" -- "$MPQ" inspect --json "$MODEL"
full eval "$w" -- "$MPQ" eval -m "$MODEL" -d "$data" -L 16 -n 1
full eval-json "$w" -- "$MPQ" eval --json -m "$MODEL" -d "$data" -L 16 -n 1
full export-stdout "$w" -- "$MPQ" export e2e-full --db "$db" -f kvtuner -o -
full plot-stdout "$w" -- "$MPQ" plot e2e-full --db "$db" --what sensitivity -o -
full help "$w" -- "$MPQ" --help
# files on a full disk
d="/dev/full: write failed: No space left on device"
check export-file 3 "$d" -- "$MPQ" export e2e-full --db "$db" -f mpq -o /dev/full
check plot-file 3 "$d" -- "$MPQ" plot e2e-full --db "$db" --what sensitivity -o /dev/full
check eval-json-out 3 "/dev/full" -- "$MPQ" eval -m "$MODEL" -d "$data" -L 16 -n 1 --json-out /dev/full
check eval-logits-out 3 "/dev/full" -- "$MPQ" eval -m "$MODEL" -d "$data" -L 16 -n 1 --logits-out /dev/full
# and the same commands with a writable stdout still succeed
check query-ok 0 "e2e-full" -- "$MPQ" query --db "$db" jobs
check plot-ok 0 "<svg" -- "$MPQ" plot e2e-full --db "$db" --what sensitivity -o -
[ "$fails" = 0 ]
