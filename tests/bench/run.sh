#!/usr/bin/env bash
# Runs every built benchmark (tests/bench/bench_*.c) and prints its figures.
set -euo pipefail
bin=${1:?usage: run.sh BUILD_DIR}
status=0
for b in "$bin"/bench_*; do
  [ -x "$b" ] || continue
  echo "== $(basename "$b")"
  "$b" || status=1
done
exit $status
