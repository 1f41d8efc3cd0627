#!/usr/bin/env bash
# refex quick start: installs what is missing, builds, creates keys and a signed directory
# for three demo agencies, starts a broker and three agents on loopback, sends a synthetic
# pre-birth referral from midwifery to children's social care, and shows it received,
# decrypted and recorded in both audit logs. Safe to run again: the demo directory is
# recreated each time. All data is invented.
set -euo pipefail

AGENCIES=(midwifery substance-misuse social-care)
# shellcheck source=deploy/demo-lib.sh
. "$(dirname "$0")/demo-lib.sh"

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
