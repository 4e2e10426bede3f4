#!/usr/bin/env bash
# mpi.sh - `mpirun -n 3 mpq run/resume` on localhost (README "Runs across MPI ranks"): rank 0
# owns the database, ranks 1 and 2 compute units; the database holds exactly what a single
# process stores (every metric value / stderr printed with 17 significant digits, shown to
# round-trip, in commit order; units, jobs, layers, models, datasets, artifacts; timestamps,
# seconds and pids left out); a stop and resume under mpirun, a SIGKILL of rank 1 (then
# `mpq resume` without MPI) and a SIGKILL of rank 0 (then resume under mpirun) end with the
# same numbers; a rank whose model file differs from the job's record makes the run refuse
# (exit 5, naming rank, host and file) without storing anything, as does a rank running
# another OpenBLAS kernel (exit 6); the hessian stage (rank 0 only) with pool stages on every
# rank stores the same numbers too.
# Built without MPI (MPQ_WITH_MPI=OFF): a launcher's environment with 2 ranks is refused
# (exit 6). Exit 77 (skipped) without mpirun.
# Env: MPQ (mpq binary), MPQ_SHARED (shared models/data), MPQ_WITH_MPI (ON/OFF, from CMake).
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"

cat > "$T/spec.json" <<JSON
{"name": "mp", "model": "$MODEL",
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 64, "n_seqs": 8, "batch": 4},
 "candidates": ["int3g32", "int4g32"],
 "kv": {"scheme": {"mode": "kivi", "group_size": 32, "residual": 0}, "pairs": ["k4v4", "k2v2"]},
 "metrics": ["weight_error", "layer_sensitivity", "kv_sensitivity"]}
JSON
TOTAL=$((35 + 35 * 2 + 5 * 2))

if [ "${MPQ_WITH_MPI:-ON}" = OFF ]; then
  # what Open MPI's mpirun sets for rank 0 of 2: refused before anything is opened
  check "no MPI in the build" 6 "built without MPI" -- \
    env OMPI_COMM_WORLD_SIZE=2 OMPI_COMM_WORLD_RANK=0 "$MPQ" run "$T/spec.json" --db "$T/x.db" -q
  [ ! -e "$T/x.db" ] || bad "no MPI in the build: the database was created"
  [ "$fails" = 0 ] || exit 1
  echo "skip: the rest needs an MPI build"
  exit 0
fi
command -v mpirun > /dev/null || { echo "skip: mpirun not found (Debian package openmpi-bin)"; exit 77; }
# --oversubscribe: 3 ranks on a machine that may have fewer cores; --allow-run-as-root: CI runs as root
MPIRUN=(mpirun --oversubscribe --allow-run-as-root)

# every stored number and row that does not depend on the clock or the process, one row a line;
# with "attempts" also how often each unit was started (1 each in an uninterrupted run; a unit
# in flight when a run was killed is started again by the resume)
sql_dump() { # db [attempts]
  local db=$1 att=${2:+, attempts}
  "$MPQ" query --db "$db" --sql "SELECT m.id, l.name AS layer, m.candidate, m.metric,
      printf('%!.17g', m.value) AS value, printf('%!.17g', m.stderr) AS stderr, m.n, u.stage, u.key,
      m.provenance_json FROM metrics m LEFT JOIN layers l ON l.id = m.layer_id
      LEFT JOIN units u ON u.id = m.unit_id ORDER BY m.id"
  "$MPQ" query --db "$db" --sql "SELECT id, stage, key, status$att, error FROM units ORDER BY id"
  "$MPQ" query --db "$db" --sql "SELECT id, name, spec_json, spec_sha256, model_id, dataset_id, status,
      mpq_version, seed FROM jobs ORDER BY id"
  "$MPQ" query --db "$db" --sql "SELECT job_id, name, hex(blob) AS blob FROM artifacts ORDER BY job_id, name"
  "$MPQ" query --db "$db" --sql "SELECT id, model_id, name, hf_name, kind, block, rows, cols, n_params
      FROM layers ORDER BY id"
  "$MPQ" query --db "$db" --sql "SELECT id, path, sha256, arch, format, dtype, dim, hidden_dim, n_layers,
      n_heads, n_kv_heads, vocab_size, seq_len, n_params FROM models ORDER BY id"
  "$MPQ" query --db "$db" --sql "SELECT id, path, sha256, n_tokens, seq_len, n_seqs, seed FROM datasets
      ORDER BY id"
}
# the printed values identify the stored doubles: each one reads back as the same double
roundtrip() {
  "$MPQ" query --db "$1" --sql "SELECT COUNT(*) AS bad FROM metrics WHERE
      CAST(printf('%!.17g', value) AS REAL) <> value OR
      (stderr IS NOT NULL AND CAST(printf('%!.17g', stderr) AS REAL) <> stderr)" | tail -1 | tr -d ' '
}
done_units() { sqlite3 "$1" "SELECT COUNT(*) FROM units WHERE status='done'"; }
same_as_ref() { # db what [attempts]
  sql_dump "$1" ${3:-} > "$T/cmp.txt"
  cmp -s "$T/ref.txt" "$T/cmp.txt" || { diff "$T/ref.txt" "$T/cmp.txt" | head -4; fail "$2: stored rows differ from a single process"; }
}
rank_pid() { # mpirun's pid, rank: the pid of that rank (a child of mpirun on localhost; /proc, no procps)
  local d p st rest
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    read -r st < "$d/stat" 2> /dev/null || continue
    rest=${st##*) }                 # "S PPID ...", after the command name
    rest=${rest#* }
    [ "${rest%% *}" = "$1" ] || continue
    tr '\0' '\n' < "$d/environ" 2> /dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && { echo "$p"; return; }
  done
}
wait_done() { # db n pid: until n units are done (fails if pid ends first)
  while [ "$(sqlite3 "$1" "SELECT COUNT(*) FROM units WHERE status='done'" 2> /dev/null || echo 0)" -lt "$2" ]; do
    kill -0 "$3" 2> /dev/null || fail "mpirun (pid $3) ended before $2 units were done"
    sleep 0.1
  done
}

# 1. single process (reference) and mpirun -n 3: identical databases; ranks 1 and 2 worked
"$MPQ" run "$T/spec.json" --db "$T/a.db" -q --workers 1 > /dev/null
[ "$(done_units "$T/a.db")" = "$TOTAL" ] || fail "reference run: $(done_units "$T/a.db") / $TOTAL units"
sql_dump "$T/a.db" attempts > "$T/ref.txt"
[ "$(roundtrip "$T/a.db")" = 0 ] || fail "printf('%!.17g') does not identify the stored doubles"
"${MPIRUN[@]}" -n 3 "$MPQ" run "$T/spec.json" --db "$T/b.db" --workers 1 > "$T/out.txt" 2> "$T/err.txt" ||
  { cat "$T/err.txt"; fail "mpirun -n 3 mpq run: exit $?"; }
same_as_ref "$T/b.db" "mpirun -n 3" attempts
sql_dump "$T/a.db" > "$T/ref.txt"
grep -q "done: $TOTAL/$TOTAL units" "$T/out.txt" || fail "mpirun -n 3: $(cat "$T/out.txt")"
line=$(grep "units computed by the other ranks" "$T/err.txt") || fail "no per-rank count: $(cat "$T/err.txt")"
n1=$(sed -n 's/.*rank 1: \([0-9]*\).*/\1/p' <<< "$line")
n2=$(sed -n 's/.*rank 2: \([0-9]*\).*/\1/p' <<< "$line")
[ "${n1:-0}" -gt 0 ] && [ "${n2:-0}" -gt 0 ] || fail "ranks 1 and 2 computed no units: $line"
ok "mpirun -n 3: $TOTAL units ($n1 by rank 1, $n2 by rank 2), every stored row as a single process writes it"

# 2. stopped under mpirun (--max-units, as a stop request), resumed under mpirun (2 workers per rank)
rc=0; "${MPIRUN[@]}" -n 3 "$MPQ" run "$T/spec.json" --db "$T/c.db" --workers 2 -q --max-units 20 > /dev/null 2>&1 || rc=$?
[ "$rc" -eq 130 ] || fail "mpirun --max-units 20: exit $rc, want 130"
n=$(done_units "$T/c.db")
[ "$n" -ge 20 ] && [ "$n" -lt "$TOTAL" ] || fail "--max-units 20 under mpirun: $n units done"
"${MPIRUN[@]}" -n 3 "$MPQ" resume mp --db "$T/c.db" --workers 2 -q > /dev/null 2>&1 || fail "mpirun resume: exit $?"
same_as_ref "$T/c.db" "stopped after $n units, resumed under mpirun"
ok "stopped after $n units and resumed under mpirun: same rows"

# 3. SIGKILL of rank 1 in the middle: Open MPI ends the run; `mpq resume` without MPI finishes it
"${MPIRUN[@]}" -n 3 "$MPQ" run "$T/spec.json" --db "$T/d.db" --workers 1 -q > /dev/null 2>&1 &
mp=$!
wait_done "$T/d.db" 30 "$mp"
r1=$(rank_pid "$mp" 1)
[ -n "$r1" ] || fail "rank 1 of mpirun $mp not found"
kill -KILL "$r1"
rc=0; wait "$mp" || rc=$?
[ "$rc" -ne 0 ] || fail "rank 1 killed: mpirun exit 0"
n=$(done_units "$T/d.db")
[ "$n" -lt "$TOTAL" ] || fail "rank 1 killed: the run finished anyway ($n units): kill earlier"
[ "$(sqlite3 "$T/d.db" 'PRAGMA integrity_check')" = ok ] || fail "rank 1 killed: integrity_check"
"$MPQ" resume mp --db "$T/d.db" -q > /dev/null || fail "resume without MPI after rank 1 was killed: exit $?"
same_as_ref "$T/d.db" "rank 1 killed, resumed without MPI"
ok "rank 1 killed after $n units (mpirun exit $rc), resumed without MPI: same rows"

# 4. SIGKILL of rank 0 (test hook: after 10 commits): its lease lapses; resume under mpirun
rc=0; MPQ_TEST_KILL_AFTER_UNITS=10 "${MPIRUN[@]}" -n 3 "$MPQ" run "$T/spec.json" --db "$T/e.db" --workers 1 -q \
  > /dev/null 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "rank 0 killed: mpirun exit 0"
[ "$(done_units "$T/e.db")" = 10 ] || fail "rank 0 killed after 10 commits: $(done_units "$T/e.db") done"
"${MPIRUN[@]}" -n 3 "$MPQ" resume mp --db "$T/e.db" --workers 1 -q > /dev/null 2>&1 || fail "mpirun resume after rank 0 was killed: exit $?"
same_as_ref "$T/e.db" "rank 0 killed, resumed under mpirun"
ok "rank 0 killed after 10 commits (mpirun exit $rc), resumed under mpirun: same rows"

# 5. rank 2 sees another model file at the job's path (a mount namespace of its own): refused
cp "$MODEL" "$T/m.bin"
cp "$MODEL" "$T/m2.bin"
printf '\001' | dd of="$T/m2.bin" bs=1 seek=$(($(stat -c %s "$T/m2.bin") - 1)) conv=notrunc 2> /dev/null
sed "s|\"$MODEL\"|\"$T/m.bin\"|" "$T/spec.json" > "$T/m.json"
if unshare -m sh -c "mount --bind '$T/m2.bin' '$T/m.bin'" 2> /dev/null; then
  check "rank 2 with another model" 5 "rank 2 of 3 (host $(hostname)) refused the job: model $T/m.bin differs from the job's record" -- \
    "${MPIRUN[@]}" -n 2 "$MPQ" run "$T/m.json" --db "$T/f.db" -q : \
    -n 1 unshare -m sh -c "mount --bind '$T/m2.bin' '$T/m.bin' && exec '$MPQ' run '$T/m.json' --db '$T/f.db' -q"
  [ "$(sqlite3 "$T/f.db" 'SELECT COUNT(*) FROM metrics')" = 0 ] || bad "rank 2 with another model: metrics stored"
  [ "$(sqlite3 "$T/f.db" "SELECT COUNT(*) FROM units WHERE status='pending'")" = "$TOTAL" ] || bad "units not pending"
else
  echo "skip: rank with another model (unshare -m / mount --bind not permitted here)"
fi

# 5b. rank 2 runs another OpenBLAS kernel (forced; Core2 and Nehalem run on any x86-64 with
# SSE4.2): its last bits would differ, so it refuses (exit 6)
if [ "$(uname -m)" = x86_64 ] && grep -q sse4_2 /proc/cpuinfo; then
  check "rank 2 with another BLAS kernel" 6 "OpenBLAS uses its Nehalem kernels here, Core2 on rank 0" -- \
    "${MPIRUN[@]}" -n 2 env OPENBLAS_CORETYPE=Core2 "$MPQ" run "$T/spec.json" --db "$T/k.db" -q : \
    -n 1 env OPENBLAS_CORETYPE=Nehalem "$MPQ" run "$T/spec.json" --db "$T/k.db" -q
  [ "$(sqlite3 "$T/k.db" 'SELECT COUNT(*) FROM metrics')" = 0 ] || bad "rank 2 with another BLAS kernel: metrics stored"
else
  echo "skip: rank with another BLAS kernel (needs x86-64 with SSE4.2)"
fi

# 6. the hessian stage runs on rank 0, its pool stages on every rank: same rows
cat > "$T/h.json" <<JSON
{"name": "hm", "model": "$MODEL",
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 32, "n_seqs": 4, "batch": 4},
 "candidates": ["int3g32", "int4g32"],
 "metrics": ["weight_error", "hessian"],
 "hessian": {"probes_min": 4, "probes_max": 8, "probes_per_unit": 2, "n_seqs": 2, "seq_len": 16,
             "eig_iters": 4, "slq_steps": 5, "slq_probes": 2}}
JSON
"$MPQ" run "$T/h.json" --db "$T/h1.db" -q --workers 1 > /dev/null
"${MPIRUN[@]}" -n 3 "$MPQ" run "$T/h.json" --db "$T/h2.db" -q --workers 1 > /dev/null 2>&1 || fail "hessian job under mpirun: exit $?"
sql_dump "$T/h1.db" > "$T/ref.txt"
grep -q ' hutchinson_trace ' "$T/ref.txt" || fail "hessian job stored no traces"
same_as_ref "$T/h2.db" "hessian job under mpirun"
ok "hessian job under mpirun -n 3: same rows"
[ "$fails" = 0 ] || exit 1
