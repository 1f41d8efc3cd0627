#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/*_fuzz.c) with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer in build-fuzz/, runs each for REFEX_FUZZ_SECONDS (default 30)
# on a copy of its seed corpus tests/fuzz/corpus/<target>/ (the committed corpus never
# grows), and prints per target: fuzz <target>: N inputs in S s, no crash
# Exits non-zero if any target crashed, leaked, timed out or ran out of memory, after
# naming the reproducer libFuzzer wrote (rerun it: build-fuzz/tests/<target> <file>).
#   tests/fuzz.sh [target...]   only these targets (e.g. tests/fuzz.sh receipt_fuzz)
# Regenerate the seeds: build-fuzz/tests/make_corpus DIR, then replace tests/fuzz/corpus/.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$REPO/build-fuzz
SECS=${REFEX_FUZZ_SECONDS:-30}

"$REPO/deploy/install-deps.sh"
echo "== configure ($BUILD)"
cmake -S "$REPO" -B "$BUILD" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DREFEX_FUZZ=ON -DREFEX_SANITIZER=address,undefined >/dev/null
echo "== build"
cmake --build "$BUILD" -j"$(nproc)" --target fuzz_targets

if [ $# -gt 0 ]; then
  TARGETS=("$@")
else
  TARGETS=()
  for src in "$REPO"/tests/fuzz/*_fuzz.c; do
    TARGETS+=("$(basename "$src" .c)")
  done
fi

RUN=$BUILD/fuzz-run
rm -rf "$RUN"
mkdir -p "$RUN"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
echo "== fuzz (${#TARGETS[@]} targets, ${SECS} s each)"
failed=0
for t in "${TARGETS[@]}"; do
  corpus=$RUN/$t-corpus
  log=$RUN/$t.log
  mkdir -p "$corpus"
  if [ -d "$REPO/tests/fuzz/corpus/$t" ]; then
    cp "$REPO/tests/fuzz/corpus/$t"/* "$corpus"/
  fi
  rc=0
  "$BUILD/tests/$t" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$RUN/$t-" "$corpus" >"$log" 2>&1 || rc=$?
  done_line=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1 || true)
  if [ "$rc" -eq 0 ] && [ -n "$done_line" ]; then
    runs=$(echo "$done_line" | awk '{print $2}')
    secs=$(echo "$done_line" | awk '{print $5}')
    echo "fuzz $t: $runs inputs in $secs s, no crash"
    continue
  fi
  failed=1
  echo "fuzz $t: FAILED (exit $rc); the end of $log:"
  tail -n 40 "$log"
  for a in "$RUN/$t"-crash-* "$RUN/$t"-leak-* "$RUN/$t"-timeout-* "$RUN/$t"-oom-* \
    "$RUN/$t"-slow-unit-*; do
    [ -e "$a" ] && echo "fuzz $t: reproducer $a (rerun: $BUILD/tests/$t $a)"
  done
done
if [ "$failed" -ne 0 ]; then
  echo "fuzz: FAILED"
  exit 1
fi
echo "fuzz: all ${#TARGETS[@]} targets ran, no crash"
