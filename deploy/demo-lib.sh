#!/usr/bin/env bash
# Shared by the demo scripts: installs what is missing, builds, creates keys and a signed
# directory for the agencies in AGENCIES (set by the caller), and starts a broker and one
# agent per agency on loopback, synchronising on their READY lines. Sourced, not run.
# Caller sets: AGENCIES (array) and optionally DEMO_NAME (the folder under build/).

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${REFEX_BUILD_DIR:-$REPO/build}
DEMO=${REFEX_DEMO_DIR:-$BUILD/${DEMO_NAME:-demo}}
# REFEX_BIN_DIR: run installed programs (e.g. /usr/bin, from the Debian package) instead
# of building them.
BIN=${REFEX_BIN_DIR:-$BUILD}
PIDS=()

step() { printf '\n== %s\n' "$*"; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

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

if [ -n "${REFEX_BIN_DIR:-}" ]; then
  step "programs"
  for p in refex refex-broker refex-agent; do
    [ -x "$BIN/$p" ] || die "$BIN/$p not found (REFEX_BIN_DIR)"
  done
  echo "using refex, refex-broker, refex-agent in $BIN ($("$BIN/refex" --version))"
  mkdir -p "$BUILD"
else
  step "build"
  cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" >/dev/null
  echo "built refex, refex-broker, refex-agent in $BUILD"
fi

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
display_name() {
  case "$1" in
    midwifery) echo "Eastmere Maternity Unit" ;;
    substance-misuse) echo "Eastmere Recovery Service" ;;
    social-care) echo "Eastmere Children's Social Care" ;;
    police) echo "Eastmere Police Safeguarding Hub" ;;
    *) echo "$1" ;;
  esac
}
for a in "${AGENCIES[@]}"; do
  "$REFEX" directory add --file "$DIR" --keys "$DEMO/keys/$a.public" --display-name "$(display_name "$a")"
done
# The information-sharing policy (docs/operations.md): anything no rule allows is refused.
# Any agency may refer to children's social care, which decides, leads the case, asks and
# answers for information and publishes case updates; partners answer and ask it back.
allow() { "$REFEX" directory policy allow --file "$DIR" --from "$1" --type "$2" --to "$3" >/dev/null; }
"$REFEX" directory policy lead --file "$DIR" --role social-care >/dev/null
for p in midwifery substance-misuse police; do
  allow "$p" referral social-care
  allow social-care referral-decision "$p"
  allow social-care information-request "$p"
  allow "$p" information-response social-care
  allow "$p" information-request social-care
  allow social-care information-response "$p"
  allow social-care case-update "$p"
done
"$REFEX" directory sign --file "$DIR" --anchor "$DEMO/keys/operator.secret"
"$REFEX" directory show --file "$DIR" --anchor "$DEMO/keys/operator.public"
"$REFEX" directory policy show --file "$DIR" --anchor "$DEMO/keys/operator.public"

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

# Starts (or restarts) one agent and waits for its READY line.
declare -A AGENT_PID
start_agent() {
  local a=$1
  [ -f "$REPO/agents/profiles/$a.conf" ] || die "no profile for $a in agents/profiles"
  sed -e "s#^broker = .*#broker = $ENDPOINT#" "$REPO/agents/profiles/$a.conf" > "$DEMO/conf/$a.conf"
  "$BIN/refex-agent" -c "$DEMO/conf/$a.conf" >"$DEMO/logs/$a.ready" 2>>"$DEMO/logs/$a.log" &
  AGENT_PID[$a]=$!
  PIDS+=($!)
  wait_ready "$DEMO/logs/$a.ready" "$!" "agent $a"
}
stop_agent() {
  kill "${AGENT_PID[$1]}" 2>/dev/null || true
  wait "${AGENT_PID[$1]}" 2>/dev/null || true
}

step "agents"
for a in "${AGENCIES[@]}"; do
  start_agent "$a"
  echo "agent $a connected"
done

