#!/usr/bin/env bash
# Sets mpq up on a fresh Debian 12 machine and runs the main job on the bundled model:
# installs the Debian packages, builds (build/), checks ../shared is there, then runs the
# main job on the bundled model (examples/stories260K.json; its results database,
# examples/mpq.db, is created beside the spec).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/tests/deps.sh"
mpq_install_deps
mpq_check_shared "$root"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/build" -j"$(nproc 2>/dev/null || echo 2)"
cd "$root"
exec "$root/build/mpq" run examples/stories260K.json
