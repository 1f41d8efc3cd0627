#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole refex test suite through ctest.
#   tests/run.sh              release-style build in build/
#   tests/run.sh --sanitize   AddressSanitizer + UndefinedBehaviorSanitizer build in build-asan/
# Extra arguments after the options are passed to ctest (e.g. -R e2e).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$REPO/build
CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
if [ "${1:-}" = "--sanitize" ]; then
  shift
  BUILD=$REPO/build-asan
  CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=Debug -DREFEX_SANITIZER=address,undefined)
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi

"$REPO/deploy/install-deps.sh"
echo "== configure ($BUILD)"
cmake -S "$REPO" -B "$BUILD" "${CMAKE_ARGS[@]}" >/dev/null
echo "== build"
cmake --build "$BUILD" -j"$(nproc)"
echo "== test"
cd "$BUILD"
ctest --output-on-failure --timeout 600 "$@"
