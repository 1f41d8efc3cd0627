#!/usr/bin/env bash
# Installs what bench/ needs beyond the build and test dependencies (deploy/install-deps.sh):
# Debian's NATS server with JetStream and the NATS C client, the peer refex-bench measures
# refex against. Only the bench uses them; the test suite builds the bench without them.
# Idempotent: a machine that already has everything is left untouched.
set -euo pipefail

"$(dirname "$0")/install-deps.sh"

PKGS=(nats-server libnats-dev)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-bench-deps: all bench dependencies present"
  exit 0
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
fi
echo "install-bench-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
echo "install-bench-deps: done"
