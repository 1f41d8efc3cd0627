#!/usr/bin/env bash
# refex quick start: installs what is missing, builds, creates keys and a signed directory
# for three demo agencies, starts a broker and three agents on loopback, sends a synthetic
# pre-birth referral from midwifery to children's social care, and shows it received,
# decrypted and recorded in both audit logs. Safe to run again: the demo directory is
# recreated each time. All data is invented.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${REFEX_BUILD_DIR:-$REPO/build}
DEMO=${REFEX_DEMO_DIR:-$BUILD/demo}
BIN=$BUILD
AGENCIES=(midwifery substance-misuse social-care)
PIDS=()

step() { printf '\n== %s\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# Waits until FILE contains a READY line (the daemons' readiness signal).
wait_ready() {
  local file=$1 pid=$2 what=$3 i
  for i in $(seq 1 300); do
    if grep -q '^READY' "$file" 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || die "$what exited; see $DEMO/logs/"
    sleep 0.1
  done
  die "$what did not become ready within 30 s; see $DEMO/logs/"
}

step "dependencies"
"$REPO/deploy/install-deps.sh"

step "build"
cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j"$(nproc)" >/dev/null
echo "built refex, refex-broker, refex-agent in $BUILD"

step "keys and signed directory (in $DEMO)"
rm -rf "$DEMO"
mkdir -p "$DEMO/keys" "$DEMO/conf" "$DEMO/logs" "$DEMO/data"
REFEX="$BIN/refex"
"$REFEX" keys new --agency operator --role trust-anchor --out "$DEMO/keys"
"$REFEX" keys new --agency broker --role broker --out "$DEMO/keys"
for a in "${AGENCIES[@]}"; do "$REFEX" keys new --agency "$a" --role "$a" --out "$DEMO/keys"; done
DIR="$DEMO/directory.rdir"
"$REFEX" directory init --file "$DIR"
"$REFEX" directory add --file "$DIR" --keys "$DEMO/keys/broker.public" --display-name "Eastmere refex broker"
"$REFEX" directory add --file "$DIR" --keys "$DEMO/keys/midwifery.public" --display-name "Eastmere Maternity Unit"
"$REFEX" directory add --file "$DIR" --keys "$DEMO/keys/substance-misuse.public" --display-name "Eastmere Recovery Service"
"$REFEX" directory add --file "$DIR" --keys "$DEMO/keys/social-care.public" --display-name "Eastmere Children's Social Care"
"$REFEX" directory sign --file "$DIR" --anchor "$DEMO/keys/operator.secret"
"$REFEX" directory show --file "$DIR" --anchor "$DEMO/keys/operator.public"

step "broker"
sed -e 's#^listen = .*#listen = tcp://127.0.0.1:*#' -e 's#^data_dir = .*#data_dir = ../data/broker#' \
    -e 's#^directory = .*#directory = ../directory.rdir#' \
    -e 's#^trust_anchor = .*#trust_anchor = ../keys/operator.public#' \
    -e 's#^keys = .*#keys = ../keys/broker.secret#' \
    "$REPO/deploy/broker.conf.example" > "$DEMO/conf/broker.conf"
"$BIN/refex-broker" -c "$DEMO/conf/broker.conf" >"$DEMO/logs/broker.ready" 2>"$DEMO/logs/broker.log" &
PIDS+=($!)
wait_ready "$DEMO/logs/broker.ready" "$!" broker
ENDPOINT=$(sed -n 's/^READY //p' "$DEMO/logs/broker.ready")
echo "broker listening on $ENDPOINT (CurveZMQ; admits only directory keys)"

step "agents"
for a in "${AGENCIES[@]}"; do
  sed -e "s#^broker = .*#broker = $ENDPOINT#" "$REPO/agents/profiles/$a.conf" > "$DEMO/conf/$a.conf"
  "$BIN/refex-agent" -c "$DEMO/conf/$a.conf" >"$DEMO/logs/$a.ready" 2>"$DEMO/logs/$a.log" &
  PIDS+=($!)
  wait_ready "$DEMO/logs/$a.ready" "$!" "agent $a"
  echo "agent $a connected"
done

step "midwifery sends a pre-birth referral to children's social care"
echo "synthetic case: unborn baby UB-7F3K-2041, 12 weeks gestation; mother's two earlier"
echo "children were removed into care; current substance misuse."
"$REFEX" -c "$DEMO/conf/midwifery.conf" send --to social-care --type referral \
  --case C-EAST-0001 --body "$REPO/deploy/demo/referral.json" --wait \
  | tee "$DEMO/logs/send.out"
MSGID=$(sed -n 's/^message \([0-9a-f]*\):.*/\1/p' "$DEMO/logs/send.out")
[ -n "$MSGID" ] || die "send did not print a message id"
grep -q 'stored by the broker' "$DEMO/logs/send.out" || die "the broker did not store the referral"

step "social care receives it"
for i in $(seq 1 100); do
  if "$REFEX" -c "$DEMO/conf/social-care.conf" inbox list --json | grep -q "$MSGID"; then break; fi
  [ "$i" = 100 ] && die "the referral did not arrive within 10 s"
  sleep 0.1
done
"$REFEX" -c "$DEMO/conf/social-care.conf" inbox list
echo
"$REFEX" -c "$DEMO/conf/social-care.conf" inbox show "$MSGID"

step "midwifery holds social care's signed delivery receipt"
for i in $(seq 1 100); do
  if "$REFEX" -c "$DEMO/conf/midwifery.conf" status "$MSGID" | grep -q ' delivered '; then break; fi
  [ "$i" = 100 ] && die "no delivery receipt within 10 s"
  sleep 0.1
done
"$REFEX" -c "$DEMO/conf/midwifery.conf" status "$MSGID"

step "substance-misuse received nothing (it was not a recipient)"
"$REFEX" -c "$DEMO/conf/substance-misuse.conf" inbox list

step "midwifery audit log"
"$REFEX" -c "$DEMO/conf/midwifery.conf" audit list
step "social-care audit log"
"$REFEX" -c "$DEMO/conf/social-care.conf" audit list

step "what the broker saw"
echo "broker log (ids and agencies only; it cannot read the body):"
sed 's/^/  /' "$DEMO/logs/broker.log"

step "auditor: verify both audit logs (Merkle tree, signed checkpoints, broker-witnessed)"
for a in midwifery social-care; do
  "$REFEX" audit verify --db "$DEMO/data/$a/agent.db" --key "$DEMO/keys/$a.public" \
    --witness "$DEMO/data/broker/witness.db" --witness-key "$DEMO/keys/broker.public"
done

printf '\nquickstart: OK. The referral %s was sent, stored, delivered, verified,\n' "$MSGID"
printf 'decrypted, receipted and recorded in both audit logs. Demo files: %s\n' "$DEMO"
