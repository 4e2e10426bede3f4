#!/usr/bin/env bash
# End-to-end: `mpq plot` (all four plots) and `mpq report` on a small real job, then each SVG
# rendered to PNG with headless chromium and checked to be not blank (> 1% non-white pixels,
# counted by a PNG decoder in python3). Skips the rendering (exit 0, with a message) when
# chromium or python3 is not installed: tests/deps.sh does not install a browser.
set -u
source "${BASH_SOURCE[0]%/*}/lib/common.bash"
model=$MPQ_SHARED/models/stories260K/stories260K.bin
cat >"$tmp/spec.json" <<J
{"name": "e2e-plot", "model": "$model", "seed": 1,
 "calibration": {"data": "$MPQ_SHARED/data/tinystories-calib.tok512.u16", "seq_len": 32, "n_seqs": 2, "batch": 2},
 "evaluation": {"data": "$MPQ_SHARED/data/tinystories-eval.tok512.u16", "seq_len": 32, "n_seqs": 2},
 "candidates": ["int3g32", "int4g32", "int8c"],
 "kv": {"scheme": {"mode": "kivi", "group_size": 32, "residual": 0}, "pairs": ["k8v8", "k8v4", "k4v4", "k4v2"]},
 "metrics": ["layer_sensitivity", "kv_sensitivity"]}
J
db=$tmp/p.db
"$MPQ" run "$tmp/spec.json" --db "$db" >/dev/null 2>&1 || { echo "FAIL run"; exit 1; }
"$MPQ" pareto e2e-plot --db "$db" -e 2 >/dev/null 2>&1 || { echo "FAIL pareto"; exit 1; }
for w in frontier bits sensitivity kv; do
  if "$MPQ" plot e2e-plot --db "$db" --what $w -o "$tmp/$w.svg" >/dev/null && grep -q '</svg>' "$tmp/$w.svg"; then
    echo "ok   plot-$w"
  else
    echo "FAIL plot-$w"; fails=$((fails + 1))
  fi
done
"$MPQ" plot e2e-plot --db "$db" --what pie -o "$tmp/x.svg" >/dev/null 2>&1
[ $? = 2 ] && echo "ok   bad-what" || { echo "FAIL bad-what exit"; fails=$((fails + 1)); }
mkdir -p "$tmp/rep"
if "$MPQ" report e2e-plot --db "$db" -o "$tmp/rep/report.md" --plots-dir "$tmp/rep/plots" >/dev/null &&
   grep -q '!\[frontier\](plots/frontier.svg)' "$tmp/rep/report.md" && [ -s "$tmp/rep/plots/kv.svg" ]; then
  echo "ok   report"
else
  echo "FAIL report"; fails=$((fails + 1))
fi

chrome=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$chrome" ] || ! command -v python3 >/dev/null; then
  echo "SKIP rendering: chromium or python3 not installed (apt-get install chromium to run it)"
else
  for w in frontier bits sensitivity kv; do
    timeout 120 "$chrome" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1000,1100 \
      --screenshot="$tmp/$w.png" "file://$tmp/$w.svg" >/dev/null 2>&1
    frac=$(python3 - "$tmp/$w.png" <<'P'
import struct, sys, zlib
d = open(sys.argv[1], 'rb').read()
assert d[:8] == b'\x89PNG\r\n\x1a\n'
i, idat, w = 8, b'', 0
while i < len(d):
    n, t = struct.unpack('>I4s', d[i:i + 8]); c = d[i + 8:i + 8 + n]; i += 12 + n
    if t == b'IHDR': w, h, bd, ct = struct.unpack('>IIBB', c[:10])
    elif t == b'IDAT': idat += c
raw = zlib.decompress(idat); bpp = {2: 3, 6: 4}[ct]; stride = w * bpp
prev, nonwhite, total, o = bytearray(stride), 0, 0, 0
for y in range(h):
    f = raw[o]; line = bytearray(raw[o + 1:o + 1 + stride]); o += 1 + stride
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0; b = prev[x]; c = prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    prev = line
    for x in range(0, stride, bpp):
        total += 1; nonwhite += line[x] < 240 or line[x + 1] < 240 or line[x + 2] < 240
print(nonwhite / total)
P
)
    if [ -n "$frac" ] && python3 -c "import sys; sys.exit(0 if float('$frac') > 0.01 else 1)"; then
      echo "ok   render-$w (non-white fraction $frac)"
    else
      echo "FAIL render-$w (non-white fraction '$frac')"; fails=$((fails + 1))
    fi
  done
fi
[ "$fails" = 0 ] && echo "all plot checks passed" || echo "$fails plot checks FAILED"
exit $((fails > 0))
