#!/usr/bin/env bash
# Installs what bench/ needs beyond the build and test dependencies: Debian's NATS server
# with JetStream and the NATS C client, the peer refex-bench measures refex against. Only
# the bench uses them; the test suite builds the bench without them. Idempotent.
set -euo pipefail
exec "$(dirname "$0")/install-deps.sh" --bench
