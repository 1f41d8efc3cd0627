#!/usr/bin/env bash
# The tree's shape, checked: the size limits of STYLE.md and the boundaries of DESIGN.md
# (the agent's SQL in one module, lib's audit tables read only through lib/, the CLI talking
# to the agent only through the public client library). Prints every breach and exits 1.
#   tests/structure.sh [SOURCE_DIR]      run from anywhere; needs universal-ctags
set -euo pipefail

SRC=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$SRC"
MAX_FILE=700
MAX_FUNC=100
# One cohesive job each, allowed past the file limit.
FILE_EXCEPTIONS=" lib/pbjson.c "
# Flat dispatch or lookup tables, allowed past the function limit ("file:function").
FUNC_EXCEPTIONS=" "

if ! ctags --version 2>/dev/null | grep -q 'Universal Ctags'; then
    echo "structure: universal-ctags is needed (deploy/install-deps.sh installs it)" >&2
    exit 2
fi

mapfile -t files < <(find agents broker cli lib bench examples -name '*.c' 2>/dev/null | sort)
bad=0

for f in "${files[@]}"; do
    n=$(wc -l <"$f")
    if [ "$n" -gt "$MAX_FILE" ] && [[ "$FILE_EXCEPTIONS" != *" $f "* ]]; then
        echo "structure: $f has $n lines (limit $MAX_FILE)"
        bad=1
    fi
done

longest=0
longest_at=
while IFS=$'\t' read -r name file start end; do
    n=$((end - start + 1))
    if [ "$n" -gt "$longest" ]; then
        longest=$n
        longest_at="$file:$start $name"
    fi
    if [ "$n" -gt "$MAX_FUNC" ] && [[ "$FUNC_EXCEPTIONS" != *" $file:$name "* ]]; then
        echo "structure: $file:$start: $name() has $n lines (limit $MAX_FUNC)"
        bad=1
    fi
done < <(ctags -x --c-kinds=f --_xformat='%N	%F	%n	%{end}' "${files[@]}")

# Only the agent's storage module (agent_store*.c) talks to SQLite.
if grep -n 'sqlite3_\|refex_db_' $(ls agents/*.c | grep -v '^agents/agent_store'); then
    echo "structure: SQLite is called outside the agent's storage module (above)"
    bad=1
fi
# lib's audit tables are read and written only inside lib/.
if grep -nE '(FROM|INTO|UPDATE|JOIN)[[:space:]]+audit(_nodes|_checkpoints|_cosignatures)?\b' \
    agents/*.c broker/*.c cli/*.c; then
    echo "structure: SQL against lib's audit tables outside lib/ (above)"
    bad=1
fi
# The CLI reaches the agent only through librefex-client.
if grep -n 'zmq_' cli/*.c; then
    echo "structure: the CLI calls ZeroMQ itself instead of the client library (above)"
    bad=1
fi
# include/refex/ is the public API only.
for h in include/refex/*.h; do
    case "$(basename "$h")" in
    client.h | error.h) ;;
    *)
        echo "structure: $h is not part of the public API; move it beside its .c in lib/"
        bad=1
        ;;
    esac
done

echo "structure: ${#files[@]} C files; largest $(wc -l "${files[@]}" | grep -v ' total$' |
    sort -rn | head -1 | awk '{print $2 " (" $1 " lines)"}'); longest function $longest_at ($longest lines)"
if [ "$bad" -ne 0 ]; then
    echo "structure: FAILED"
    exit 1
fi
echo "structure: OK"
