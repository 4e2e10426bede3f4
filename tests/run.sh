#!/usr/bin/env bash
# Runs every test: a normal build (warnings are errors) with all ctest tests, then an
# AddressSanitizer + UndefinedBehaviorSanitizer build with the unit and e2e tests, then a
# libFuzzer build (clang) whose harnesses each run MPQ_FUZZ_SECONDS (10) seconds.
# Usage: bash tests/run.sh            (from anywhere; builds in build/, build-asan/, build-fuzz/)
#        MPQ_TEST_ASAN=0 bash tests/run.sh   to skip the sanitizer build
#        MPQ_TEST_FUZZ=0 bash tests/run.sh   to skip the fuzzing step
#        MPQ_TEST_TSAN=1 bash tests/run.sh   to add a ThreadSanitizer step (off by default: about
#                                            2 more minutes on two cores)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$root/tests/deps.sh"
mpq_install_deps
mpq_check_shared "$root"
jobs=$(nproc 2>/dev/null || echo 2)

cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMPQ_WERROR=ON >/dev/null
cmake --build "$root/build" -j"$jobs"
(cd "$root/build" && ctest --output-on-failure -j"$jobs")

if [ "${MPQ_TEST_ASAN:-1}" != 0 ]; then
  # -O1, as the AddressSanitizer documentation recommends: every access stays instrumented,
  # and the suite runs about twice as fast as at -O0.
  cmake -S "$root" -B "$root/build-asan" -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-g -O1" -DMPQ_SANITIZE=ON \
    -DMPQ_WERROR=ON >/dev/null
  cmake --build "$root/build-asan" -j"$jobs"
  # detect_leaks: OpenBLAS keeps thread buffers for the process lifetime (suppressed);
  # allocator_may_return_null: tests ask for absurd sizes and expect MPQ_ERR_NOMEM, not an abort.
  (cd "$root/build-asan" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 \
     LSAN_OPTIONS=suppressions="$root/tests/lsan.supp" UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest --output-on-failure -j"$jobs" -LE slow)
fi

if [ "${MPQ_TEST_TSAN:-0}" != 0 ]; then
  # The threaded paths under ThreadSanitizer: the worker pool's unit test, the example job on
  # two workers (every stage) and mpq eval on two workers; any report fails the step.
  cmake -S "$root" -B "$root/build-tsan" -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-g -O1 -fsanitize=thread" \
    -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread >/dev/null
  cmake --build "$root/build-tsan" -j"$jobs" --target mpq test_job_pool
  tdir=$(mktemp -d)
  (cd "$root" && export TSAN_OPTIONS=halt_on_error=1 &&
     "$root/build-tsan/test_job_pool" &&
     "$root/build-tsan/mpq" run examples/stories260K.json --db "$tdir/tsan.db" -q --workers 2 &&
     "$root/build-tsan/mpq" eval -m ../shared/models/stories260K/stories260K.bin -t ../shared/models/stories260K/tok512.bin \
       -d ../shared/data/tinystories-eval.tok512.u16 --kv k4v4 --workers 2 -n 8 >/dev/null) || { rm -rf "$tdir"; exit 1; }
  rm -rf "$tdir"
  echo "ThreadSanitizer step: no reports"
fi

if [ "${MPQ_TEST_FUZZ:-1}" != 0 ]; then
  # Each harness (tests/fuzz/) runs under ASan + UBSan; any crash, sanitizer report, leak,
  # slow input (-timeout 10 s) or memory blow-up (2 GB) fails the step. Warnings are not
  # errors here: clang warns of things gcc does not, and this build looks for findings.
  start=$(date +%s)
  cmake -S "$root" -B "$root/build-fuzz" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMPQ_FUZZ=ON -DMPQ_BUILD_TESTS=OFF >/dev/null
  cmake --build "$root/build-fuzz" -j"$jobs" --target fuzz_harnesses
  MPQ_SHARED="$root/../shared" bash "$root/tests/fuzz/run.sh" "$root/build-fuzz" "${MPQ_FUZZ_SECONDS:-10}"
  echo "fuzz step: $(($(date +%s) - start)) s"
fi
