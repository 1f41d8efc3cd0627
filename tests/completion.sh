#!/usr/bin/env bash
# deploy/bash-completion/refex completes commands, subcommands and options.
set -euo pipefail
. "$1/deploy/bash-completion/refex"
complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _refex; echo "${COMPREPLY[*]}"; }
check() { local want=$1; shift; local got; got=$(complete_words "$@"); [ "$got" = "$want" ] || { echo "completion: '$*' gave '$got', want '$want'" >&2; exit 1; }; }
check "audit" refex au
check "verify" refex audit ver
check "--witness --witness-key --witness-db" refex audit verify --wit
check "--gestation-weeks" refex -c m.conf send --ges
check "json csv fhir" refex audit export --format ""
check "watch" refex inbox wa
echo "completion: OK"
