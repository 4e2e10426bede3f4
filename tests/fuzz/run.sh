#!/usr/bin/env bash
# run.sh - runs every libFuzzer harness of a -DMPQ_FUZZ=ON build for SECONDS each, one after
# the other, on its seed corpus (BUILD/fuzz-seeds/NAME) plus a corpus it grows
# (BUILD/fuzz-corpus/NAME), and prints the executions of each. A crash, sanitizer report, leak,
# timeout (-timeout) or memory blow-up (-rss_limit_mb) fails the run; the input is kept as
# BUILD/fuzz-findings/NAME-crash-... and the end of the log is printed.
# Usage: bash tests/fuzz/run.sh BUILD SECONDS [NAME...]   (NAME as llama2c, default all)
set -uo pipefail
build=$(cd "$1" && pwd)
secs=$2
shift 2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for f in "$build"/fuzz_*; do [ -x "$f" ] && names+=("${f##*/fuzz_}"); done
fi
[ ${#names[@]} -gt 0 ] || { echo "fuzz: no harnesses in $build (configure with -DMPQ_FUZZ=ON)" >&2; exit 1; }
mkdir -p "$build/fuzz-findings" "$build/fuzz-logs"
# leaks are findings; OpenBLAS's per-thread buffers are not (tests/lsan.supp)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export LSAN_OPTIONS=suppressions=$root/tests/lsan.supp
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
failed=0
for n in "${names[@]}"; do
  exe=$build/fuzz_$n seeds=$build/fuzz-seeds/$n corpus=$build/fuzz-corpus/$n log=$build/fuzz-logs/$n.log
  [ -x "$exe" ] || { echo "fuzz $n: no $exe" >&2; failed=1; continue; }
  mkdir -p "$corpus"
  maxlen=()
  case $n in llama2c | safetensors) maxlen=(-max_len=1200000) ;; esac
  rc=0
  "$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 "${maxlen[@]}" -print_final_stats=1 \
    -artifact_prefix="$build/fuzz-findings/$n-" "$corpus" "$seeds" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 runs in \2 s/p' "$log" | tail -1)
  if [ "$rc" -ne 0 ]; then
    echo "fuzz $n: FAILED (exit $rc) after ${runs:-? runs}; log $log:"
    grep -E "ERROR|runtime error|SUMMARY|Test unit written|^    #[0-9]" "$log" | head -40
    failed=1
  else
    echo "fuzz $n: ${runs:-? runs}, corpus $(find "$corpus" -type f | wc -l) inputs, no findings"
  fi
done
exit $failed
