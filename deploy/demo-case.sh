#!/usr/bin/env bash
# refex case demo: the pre-birth story, end to end, with real daemons on loopback. Midwifery
# refers an unborn baby at 12 weeks; children's social care accepts, opens a case and grants
# membership to midwifery and the substance-misuse service, which subscribe; asks substance misuse about the
# mother's treatment and gets an answer; publishes the case's updates (one while midwifery
# is offline); the police, never granted, are refused; substance misuse is revoked and
# hears nothing more; every log verifies. All names and data are invented.
set -euo pipefail

AGENCIES=(midwifery substance-misuse social-care police)
DEMO_NAME=demo-case
# shellcheck source=deploy/demo-lib.sh
. "$(dirname "$0")/demo-lib.sh"

as() { local who=$1; shift; "$REFEX" -c "$DEMO/conf/$who.conf" "$@"; }
# Waits until a query on WHO's database gives at least WANT.
wait_sql() {
  local who=$1 sql=$2 want=$3 i
  for i in $(seq 1 200); do
    [ "$(sqlite3 "$DEMO/data/$who/agent.db" "$sql")" -ge "$want" ] && return 0
    sleep 0.1
  done
  die "$who: '$sql' did not reach $want"
}

# What every case update states: the lawful basis, the purpose and who publishes it (nothing
# is defaulted; docs/protocol.md section 10).
BASIS=(--article6 public-task --article9 substantial-public-interest --purpose case-management)
publish() { local who=$1; shift; as "$who" case publish "${BASIS[@]}" --practitioner SW-0007 "$@"; }

# Waits (up to 20 s) until an agency's inbox holds N messages of a type.
wait_inbox() {
  wait_sql "$1" "select count(*) from inbox where type='$2'" "$3"
}

step "midwifery refers the unborn baby at 12 weeks"
REF=$(as midwifery send --to social-care --type referral --body "$REPO/deploy/demo/referral.json" --json \
      | sed -n 's/.*"message_id": "\([0-9a-f]*\)".*/\1/p')
echo "referral $REF sent"
wait_inbox social-care REFERRAL 1
echo "social care has it; midwifery holds its signed receipt:"
for i in $(seq 1 100); do as midwifery referrals | grep -q 'received' && break; sleep 0.1; done
as midwifery referrals

step "social care accepts, under case reference C-EAST-0001"
cat > "$DEMO/decision.json" <<JSON
{"referral_message_id": "$REF", "decision": "DECISION_ACCEPTED", "case_ref": "C-EAST-0001",
 "reason": "pre-birth assessment to start", "conversation_id": "conv-prebirth-2041",
 "decided_by": {"reference": "SW-0007", "role": "team manager"}, "purpose": "PURPOSE_SAFEGUARDING",
 "lawful_basis": {"article6": "ARTICLE6_PUBLIC_TASK", "article9": "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST"}}
JSON
as social-care send --to midwifery --type referral-decision --body "$DEMO/decision.json" --wait
wait_inbox midwifery REFERRAL_DECISION 1
as midwifery referrals

step "social care opens case C-EAST-0001 and grants membership"
as social-care case open --case C-EAST-0001
as social-care case grant --case C-EAST-0001 --member midwifery
as social-care case grant --case C-EAST-0001 --member substance-misuse

step "the members subscribe: midwifery to this case, substance misuse to all its cases"
wait_sql midwifery "select count(*) from case_grants where case_ref='C-EAST-0001'" 3
wait_sql substance-misuse "select count(*) from case_grants where case_ref='C-EAST-0001'" 3
as midwifery case subscribe --case C-EAST-0001
as substance-misuse case subscribe --all
wait_sql social-care "select count(*) from case_subscriptions" 2
as social-care case show --case C-EAST-0001

step "social care asks substance misuse about the mother's treatment"
cat > "$DEMO/request.json" <<JSON
{"request_id": "RQ-EAST-0001", "case_ref": "C-EAST-0001", "due_date": "2027-01-15",
 "question": "Is the mother engaged with treatment, and since when?",
 "requested_by": {"reference": "SW-0007"}, "purpose": "PURPOSE_SAFEGUARDING",
 "lawful_basis": {"article6": "ARTICLE6_PUBLIC_TASK", "article9": "ARTICLE9_SUBSTANTIAL_PUBLIC_INTEREST"}}
JSON
as social-care send --to substance-misuse --type information-request --body "$DEMO/request.json" --wait
wait_inbox substance-misuse INFORMATION_REQUEST 1
cat > "$DEMO/response.json" <<JSON
{"request_id": "RQ-EAST-0001", "answer": "Engaged since week 14; attends weekly; on a stable script.",
 "responded_by": {"reference": "SM-0031"}, "consent": "CONSENT_GIVEN", "purpose": "PURPOSE_SAFEGUARDING",
 "lawful_basis": {"article6": "ARTICLE6_PUBLIC_TASK", "article9": "ARTICLE9_HEALTH_SOCIAL_CARE"}}
JSON
as substance-misuse send --to social-care --type information-response --body "$DEMO/response.json" --wait
wait_inbox social-care INFORMATION_RESPONSE 1
as social-care requests

step "social care publishes the case's updates"
publish social-care --case C-EAST-0001 --type assessment-concluded --summary "Pre-birth assessment concluded at 28 weeks"
wait_inbox midwifery CASE_UPDATE 1
echo "midwifery goes offline for the next two updates"
stop_agent midwifery
publish social-care --case C-EAST-0001 --type child-protection-plan --summary "Child protection plan agreed at 32 weeks"
publish social-care --case C-EAST-0001 --type birth --summary "Baby born at 39 weeks; well"
start_agent midwifery
wait_inbox midwifery CASE_UPDATE 3
echo "midwifery is back and has all three, in order:"
as midwifery case show --case C-EAST-0001

step "the police were never granted: subscribing and publishing are refused, and nothing reached them"
as police case subscribe --case C-EAST-0001 || true
publish police --case C-EAST-0001 --type other --summary "not ours to share" || true
echo "police inbox:"; as police inbox list

step "substance misuse is revoked; the placement update does not reach it"
as social-care case revoke --case C-EAST-0001 --member substance-misuse
publish social-care --case C-EAST-0001 --type placement --summary "Placed with mother, with family support"
wait_inbox midwifery CASE_UPDATE 4
echo "case updates held: midwifery $(sqlite3 "$DEMO/data/midwifery/agent.db" "select count(*) from inbox where type='CASE_UPDATE'"), substance-misuse $(sqlite3 "$DEMO/data/substance-misuse/agent.db" "select count(*) from inbox where type='CASE_UPDATE'")"
as social-care case members --case C-EAST-0001

step "every step is in the audit logs, with its lawful basis; each log verifies"
as social-care audit list
for a in "${AGENCIES[@]}"; do
  "$REFEX" audit verify --db "$DEMO/data/$a/agent.db" --key "$DEMO/keys/$a.public"
done

printf '\ndemo-case: OK. Demo files: %s\n' "$DEMO"
