#!/usr/bin/env bash
# hostile_specs.sh - bad job specs, a corrupted database, a database from a newer schema,
# a changed model file and a different spec under an existing name: each exits non-zero with
# a clear message, and the stored database is byte-for-byte untouched (sha256 before/after).
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data). Runs in a mktemp directory.
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
M="$MPQ_SHARED/models/stories260K/stories260K.bin"
D="$MPQ_SHARED/data/tinystories-calib.tok512.u16"
spec() { # name model calib-extra candidates extra-top-level
  printf '{"name": "%s", "model": "%s", "calibration": {"data": "%s", "seq_len": 32, "n_seqs": 2%s},
 "candidates": %s, "metrics": ["weight_error"]%s}\n' "$1" "$2" "$D" "$3" "$4" "$5"
}
# expect CODE NEEDLE DB ARGS...: runs mpq ARGS, wants exit CODE, NEEDLE in stderr, DB unchanged
expect() {
  local code=$1 needle=$2 db=$3; shift 3
  local before after rc=0
  before=$(sha256sum "$db" | cut -d' ' -f1)
  "$MPQ" "$@" > /dev/null 2> "$T/err.txt" || rc=$?
  after=$(sha256sum "$db" | cut -d' ' -f1)
  [ "$rc" -eq "$code" ] || fail "mpq $*: exit $rc, want $code ($(cat "$T/err.txt"))"
  grep -qF -- "$needle" "$T/err.txt" || fail "mpq $*: message lacks '$needle': $(cat "$T/err.txt")"
  [ "$before" = "$after" ] || fail "mpq $*: $db was modified"
}

# a good database with one finished job
spec good "$M" "" '["int4g32"]' "" > "$T/good.json"
"$MPQ" run "$T/good.json" --db "$T/r.db" -q > /dev/null
[ "$(sqlite3 "$T/r.db" "SELECT status FROM jobs WHERE name='good'")" = done ] || fail "good job not done"
sqlite3 "$T/r.db" 'PRAGMA wal_checkpoint(TRUNCATE)' > /dev/null

# bad specs (exit 5 invalid / 3 missing file / 4 not JSON), each naming the key
spec a "$M" ', "n_seqs": -4' '["int4g32"]' "" | sed 's/"n_seqs": 2, "n_seqs": -4/"n_seqs": -4/' > "$T/neg.json"
expect 5 "neg.json: calibration.n_seqs: expected a positive integer, got -4" "$T/r.db" run "$T/neg.json" --db "$T/r.db"
spec a "$M" ', "batch": "eight"' '["int4g32"]' "" > "$T/type.json"
expect 5 "type.json: calibration.batch: expected a positive integer, got string" "$T/r.db" run "$T/type.json" --db "$T/r.db"
spec a "$M" "" '"int4g32"' "" > "$T/type2.json"
expect 5 "type2.json: candidates: expected an array of strings" "$T/r.db" run "$T/type2.json" --db "$T/r.db"
spec a "$M" "" '["int4g32", "int17g3"]' "" > "$T/cand.json"
expect 5 "cand.json: candidates[1]:" "$T/r.db" run "$T/cand.json" --db "$T/r.db"
spec a "$T/no-such-model.bin" "" '["int4g32"]' "" > "$T/nomodel.json"
expect 3 "nomodel.json: model: $T/no-such-model.bin: cannot open: No such file" "$T/r.db" run "$T/nomodel.json" --db "$T/r.db"
spec a "$M" "" '["int4g32"]' ', "seeed": 3' > "$T/key.json"
expect 5 "key.json: seeed: unknown key" "$T/r.db" run "$T/key.json" --db "$T/r.db"
spec a "$M" "" '["int4g32"]' ', "metrics": ["gradient_norm"]' | sed 's/"metrics": \["weight_error"\], //' > "$T/metric.json"
expect 5 "metric.json: metrics[0]: unknown metric 'gradient_norm'" "$T/r.db" run "$T/metric.json" --db "$T/r.db"
printf '{"name": "a", "model": ' > "$T/trunc.json"
expect 4 "trunc.json: not valid JSON near line 1" "$T/r.db" run "$T/trunc.json" --db "$T/r.db"
spec a "$M" ', "seq_len": 100000' '["int4g32"]' "" | sed 's/"seq_len": 32, //' > "$T/long.json"
expect 5 "long.json: calibration.seq_len: 100000 exceeds the model's seq len 512" "$T/r.db" run "$T/long.json" --db "$T/r.db"

# same name, different spec
spec good "$M" ', "seed": 9' '["int4g32"]' "" > "$T/good2.json"
expect 5 "job 'good' exists with a different spec" "$T/r.db" run "$T/good2.json" --db "$T/r.db"

# a changed model file: the job was created with a copy, which is then altered
cp "$M" "$T/model.bin"
spec mc "$T/model.bin" "" '["int4g32"]' "" > "$T/mc.json"
rc=0; "$MPQ" run "$T/mc.json" --db "$T/r.db" -q --max-units 2 > /dev/null 2>&1 || rc=$?
[ "$rc" -eq 130 ] || fail "--max-units 2: exit $rc, want 130"
sqlite3 "$T/r.db" 'PRAGMA wal_checkpoint(TRUNCATE)' > /dev/null
printf '\x11' | dd of="$T/model.bin" bs=1 seek=5000 conv=notrunc status=none
expect 5 "model $T/model.bin changed since the job was created" "$T/r.db" resume mc --db "$T/r.db"
expect 5 "model $T/model.bin changed since the job was created" "$T/r.db" run "$T/mc.json" --db "$T/r.db"

# read-only SQL: writes refused; unknown job
expect 5 "" "$T/r.db" query --db "$T/r.db" --sql "DELETE FROM metrics"
expect 10 "" "$T/r.db" status nosuchjob --db "$T/r.db"
expect 10 "" "$T/r.db" resume nosuchjob --db "$T/r.db"

# a corrupted database (random bytes) and a database from a newer schema
head -c 65536 /dev/urandom > "$T/bad.db"
expect 7 "bad.db" "$T/bad.db" run "$T/good.json" --db "$T/bad.db"
expect 7 "bad.db" "$T/bad.db" query --db "$T/bad.db" jobs
expect 7 "bad.db" "$T/bad.db" resume good --db "$T/bad.db"
cp "$T/r.db" "$T/new.db"
sqlite3 "$T/new.db" "INSERT INTO schema_version(version, mpq_version) VALUES(99, '9.9.9')"
expect 6 "new.db" "$T/new.db" run "$T/good.json" --db "$T/new.db"
expect 6 "new.db" "$T/new.db" resume good --db "$T/new.db"
[ "$(sqlite3 "$T/r.db" 'PRAGMA integrity_check')" = ok ] || fail "r.db integrity"
echo "hostile_specs: ok"
