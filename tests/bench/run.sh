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
echo "== bench_workers.sh"
MPQ_ROOT=${MPQ_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)} bash "$(dirname "${BASH_SOURCE[0]}")/bench_workers.sh" || status=1
exit $status
