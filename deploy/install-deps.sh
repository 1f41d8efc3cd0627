#!/usr/bin/env bash
# Installs refex's build and test dependencies from Debian 12 packages, only where missing.
# With --bench, also what bench/ measures refex against (deploy/install-bench-deps.sh).
# Idempotent: a machine that already has everything is left untouched (no apt-get update).
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config
  libzmq3-dev libprotobuf-c-dev protobuf-c-compiler
  libsqlite3-dev sqlite3 libsodium-dev libcmocka-dev libjansson-dev
  # libcrypto: SHA-256 of large inputs with the CPU's SHA instructions (lib/sha256.c)
  libssl-dev
  # the PostgreSQL store (lib/store_pg.c) and the tests that run it against real servers
  libpq-dev postgresql-15
  # sd_notify for the daemons under systemd, and systemd-analyze to check the units
  libsystemd-dev systemd
  # the metrics endpoint, and what its test reads it with (a real HTTP client and parser)
  libmicrohttpd-dev curl python3-prometheus-client
  # man pages (docs/man/*.scd) and their check (man -l); script(1) for the progress test
  scdoc man-db bsdutils
  # the Debian package (debian/) and its check (tests/package.sh)
  debhelper dpkg-dev lintian
  universal-ctags
  # an independent proto3 JSON implementation, for the e2e_proto3_json test
  python3-protobuf protobuf-compiler
  # libFuzzer targets under ASan/UBSan, for tests/fuzz.sh (the runtimes are in libclang-rt-dev)
  clang libclang-rt-dev
)
if [ "${1:-}" = "--bench" ]; then
  # the bench's peer: NATS JetStream and its C client (bench/jetstream.c)
  PKGS+=(nats-server libnats-dev)
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all dependencies present"
  exit 0
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
echo "install-deps: done"
