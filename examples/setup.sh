#!/usr/bin/env bash
# Sets mpq up on a fresh Debian 12 machine and runs the main job on the bundled model:
# installs the Debian packages, builds (build/), checks ../shared is there, then runs the
# main job on the bundled model.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/tests/deps.sh"
mpq_install_deps
mpq_check_shared "$root"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/build" -j"$(nproc 2>/dev/null || echo 2)"
cd "$root"
exec "$root/build/mpq" eval --model ../shared/models/stories260K/stories260K.bin \
  --data ../shared/data/tinystories-eval.tok512.u16 --config examples/int4-mixed.json --seq-len 256
