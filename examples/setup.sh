#!/usr/bin/env bash
# Sets mpq up on a fresh Debian 12 machine and runs the main job on the bundled model:
# installs the Debian packages (listed in tests/deps.sh: build, test and Open MPI ones),
# builds (build/), checks ../shared is there, then runs the main job on the bundled model
# (examples/stories260K.json; its results database, examples/mpq.db, is created beside the
# spec), solves it, and writes configs, plots and a report to examples/out/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/tests/deps.sh"
mpq_install_deps
mpq_check_shared "$root"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/build" -j"$(nproc 2>/dev/null || echo 2)"
cd "$root"
mpq=build/mpq
db=examples/mpq.db
job=stories260K-demo
# 1. measure: per-layer weight error, single-layer KL/loss change, per-block KV sensitivity
"$mpq" run examples/stories260K.json --db "$db"
# 2. solve: exact frontier (knee + 3 points evaluated with the executor), and two budgets
"$mpq" pareto "$job" --db "$db" --evaluate 3
"$mpq" solve "$job" --db "$db" --budget avg-bits=4.5 --evaluate
"$mpq" solve "$job" --db "$db" --budget avg-bits=5.5 --evaluate
# 3. ship: configs for mpq and llama.cpp, plots and a report
mkdir -p examples/out
"$mpq" export "$job:kl@avg-bits=4.5" --db "$db" --format mpq -o examples/out/config-4.5.json
"$mpq" export "$job:kl@avg-bits=4.5" --db "$db" --format llamacpp -o examples/out/llama-tensor-types.txt
"$mpq" report "$job" --db "$db" -o examples/out/report.md --plots-dir examples/out/plots
echo "setup: done; see examples/out/report.md (plots in examples/out/plots)"
