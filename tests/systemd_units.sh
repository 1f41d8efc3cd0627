#!/usr/bin/env bash
# The systemd units in deploy/systemd/ pass `systemd-analyze verify` (with ExecStart pointed
# at the build tree, as the installed paths do not exist here), and keep what the operations
# doc promises: Type=notify with a watchdog, and the hardening options.
# usage: tests/systemd_units.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
command -v systemd-analyze >/dev/null || { echo "systemd_units: systemd-analyze missing (package systemd; deploy/install-deps.sh)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for u in "$src"/deploy/systemd/*.service; do
    name=$(basename "$u")
    sed "s#/usr/bin/#$build/#g" "$u" >"$tmp/$name"
    for want in Type=notify WatchdogSec= NoNewPrivileges=yes ProtectSystem=strict PrivateTmp=yes \
        User=refex StateDirectory= ConfigurationDirectory=refex ExecReload=; do
        grep -q "^$want" "$u" || { echo "systemd_units: $name lacks $want" >&2; exit 1; }
    done
done
# a template is verified as an instance
cp "$tmp/refex-agent@.service" "$tmp/refex-agent@midwifery.service"
systemd-analyze verify "$tmp/refex-broker.service" "$tmp/refex-agent@midwifery.service"
echo "systemd_units: refex-broker.service and refex-agent@.service verify"
