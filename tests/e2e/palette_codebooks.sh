#!/usr/bin/env bash
# palette_codebooks.sh - the committed codebooks of the nuq<R> / vq<R> candidates
# (src/quant/palette_codebooks.h) are exactly what their generator
# (tests/tools/gen_palette_codebooks.c, built as mpq_gen_palette_codebooks next to mpq) writes.
# Env: MPQ (mpq binary; the generator is in the same folder), MPQ_ROOT (source tree).
set -euo pipefail
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
: "${MPQ_ROOT:?path of the source tree}"
GEN=$(dirname "$MPQ")/mpq_gen_palette_codebooks
[ -x "$GEN" ] || fail "$GEN: not built"
"$GEN" > "$T/cb.h" 2> "$T/gen.log" || fail "generator failed: $(cat "$T/gen.log")"
cmp -s "$T/cb.h" "$MPQ_ROOT/src/quant/palette_codebooks.h" ||
  fail "src/quant/palette_codebooks.h differs from the generator's output: $(diff "$T/cb.h" "$MPQ_ROOT/src/quant/palette_codebooks.h" | head -20)"
echo "ok   palette codebooks regenerate byte for byte"
