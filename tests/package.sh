#!/usr/bin/env bash
# The Debian package: builds refex, librefex-client0 and librefex-client-dev with
# dpkg-buildpackage from a copy of the source, checks them with lintian (no errors),
# installs them into this machine with apt-get, and runs the installed programs through
# the quickstart demo (a broker and three agents, a referral sent, received, recorded).
# Also checks what installing made: the refex user, its directories, man pages, units, and
# a program built against the installed client library with pkg-config.
# Needs root (it installs packages); exits 77 (skipped) otherwise.
# usage: tests/package.sh SOURCE_DIR
set -euo pipefail
src=$(cd "$1" && pwd)
[ "$(id -u)" = 0 ] || { echo "package: needs root to install the packages; skipped"; exit 77; }
for t in dpkg-buildpackage lintian dh; do
    command -v $t >/dev/null || { echo "package: $t missing (deploy/install-deps.sh)" >&2; exit 1; }
done
work=$(mktemp -d /tmp/refex-package-XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/refex"
# the tracked files, as a clean clone has them (or the tree without build output)
if git -C "$src" rev-parse >/dev/null 2>&1; then
    git -C "$src" ls-files -z --cached --others --exclude-standard |
        (cd "$src" && xargs -0 tar -cf -) | tar -C "$work/refex" -xf -
    # with the files not yet committed (not the ignored ones): what a commit would hold
else
    tar -C "$src" --exclude=./build --exclude=./obj-* -cf - . | tar -C "$work/refex" -xf -
fi
echo "package: dpkg-buildpackage -us -uc -b"
(cd "$work/refex" && dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) ||
    { tail -40 "$work/build.log" >&2; exit 1; }
ls "$work"/*.deb
echo "package: lintian"
if ! lintian --fail-on error "$work"/*.changes >"$work/lintian.log" 2>&1; then
    cat "$work/lintian.log" >&2
    echo "package: lintian reports errors" >&2
    exit 1
fi
grep -v 'running with root privileges' "$work/lintian.log" || echo "package: lintian: no errors, no warnings"

echo "package: apt-get install"
apt-get install -y -q --allow-downgrades "$work"/refex_*.deb "$work"/librefex-client0_*.deb \
    "$work"/librefex-client-dev_*.deb >"$work/install.log" 2>&1 || { tail -20 "$work/install.log" >&2; exit 1; }
getent passwd refex >/dev/null || { echo "package: no refex user" >&2; exit 1; }
[ -d /var/lib/refex ] && [ -d /etc/refex ] || { echo "package: /var/lib/refex or /etc/refex missing" >&2; exit 1; }
for f in /usr/bin/refex /usr/bin/refex-broker /usr/bin/refex-agent /lib/systemd/system/refex-broker.service \
    /lib/systemd/system/refex-agent@.service /usr/share/bash-completion/completions/refex \
    /usr/share/doc/refex/examples/broker.conf.example; do
    [ -e "$f" ] || { echo "package: $f not installed" >&2; exit 1; }
done
for p in refex.1 refex-broker.8 refex-agent.8 refex.conf.5; do
    man -w "${p%.*}" >/dev/null 2>&1 || { echo "package: man page $p not found" >&2; exit 1; }
done
/usr/bin/refex --version
cc -o "$work/send_referral" "$src/examples/send_referral.c" $(pkg-config --cflags --libs refex-client)
echo "package: an example built against the installed librefex-client-dev"

echo "package: the quickstart with the installed programs"
REFEX_BIN_DIR=/usr/bin REFEX_BUILD_DIR="$work/demo-build" "$src/deploy/quickstart.sh" >"$work/quickstart.log" 2>&1 ||
    { tail -30 "$work/quickstart.log" >&2; exit 1; }
grep -E '^quickstart: OK' "$work/quickstart.log"
echo "package: OK"
