#!/bin/bash
# Where the CPU of one refex message goes: runs refex-bench for one size, records the
# broker, the sender agent and the receiver agent with perf while refex (not the JetStream
# peer) is being measured, and prints each process's samples by component (crypto =
# libsodium, SQLite, ZeroMQ, codec = protobuf-c + jansson, libc, kernel, refex's own code).
# Multiply a share by the process's "cpu us/msg" figure of the bench to get microseconds.
#
# usage: bench/profile.sh [--size BYTES] [--scale F] [--seconds S] [--keep DIR]
# Needs perf (Debian's linux-perf) and a built tree (build/bench/refex-bench).
set -euo pipefail

size=1024 scale=3 seconds=3 keep=""
while [ $# -gt 0 ]; do
    case "$1" in
    --size) size=$2; shift 2 ;;
    --scale) scale=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "profile.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

here=$(cd "$(dirname "$0")/.." && pwd)
bench=${REFEX_BENCH:-$here/build/bench/refex-bench}
[ -x "$bench" ] || { echo "profile.sh: $bench not built (cmake --build build)" >&2; exit 1; }
command -v perf >/dev/null || { echo "profile.sh: perf is not installed (linux-perf)" >&2; exit 1; }

out=${keep:-$(mktemp -d /tmp/refex-profile-XXXXXX)}
mkdir -p "$out"
"$bench" --size "$size" --scale "$scale" >"$out/bench.out" 2>"$out/bench.err" &
bench_pid=$!
trap 'kill $bench_pid 2>/dev/null || true; [ -z "$keep" ] && rm -rf "$out"' EXIT

# The bench's own daemons: children of this bench process.
daemon() { pgrep -P "$bench_pid" -f "$1" | head -1; }
until [ -n "$(daemon receiver.conf)" ]; do
    kill -0 $bench_pid 2>/dev/null || { cat "$out/bench.err" >&2; exit 1; }
    sleep 0.1
done
# JetStream runs first when it is installed: wait until its server has come and gone.
for _ in $(seq 1 30); do pgrep -P "$bench_pid" -x nats-server >/dev/null && break; sleep 0.1; done
while pgrep -P "$bench_pid" -x nats-server >/dev/null; do sleep 0.05; done

echo "profile.sh: recording broker, sender and receiver for ${seconds}s..." >&2
perfs=()
for p in broker sender receiver; do
    case $p in broker) pid=$(daemon refex-broker) ;; *) pid=$(daemon "$p.conf") ;; esac
    perf record -q -F 999 -o "$out/$p.data" -p "$pid" -- sleep "$seconds" 2>/dev/null &
    perfs+=($!)
done
wait "${perfs[@]}" || true
wait $bench_pid || true
grep -E '^(1K|64K|1024K) |cpu us/msg' "$out/bench.out" || cat "$out/bench.err" >&2

us_of() { grep -m1 'cpu us/msg' "$out/bench.out" | sed -n "s/.* $1 \([0-9]*\).*/\1/p"; }
printf '\n%-9s %7s %7s %7s %7s %7s %7s %7s %7s\n' process crypto sqlite zeromq codec libc kernel refex other
for p in broker sender receiver; do
    perf report -i "$out/$p.data" --no-children --sort dso --stdio -g none 2>/dev/null |
        awk -v p="$p" -v us="$(us_of "$p")" '
        /^#/ || NF < 2 { next }
        { pct = $1; sub("%", "", pct); d = $2
          if (d ~ /libsodium/) c = "crypto"; else if (d ~ /libsqlite3/) c = "sqlite"
          else if (d ~ /libzmq/) c = "zeromq"; else if (d ~ /protobuf-c|jansson/) c = "codec"
          else if (d ~ /^libc\.|ld-linux|libm\./) c = "libc"; else if (d ~ /kernel/) c = "kernel"
          else if (d ~ /refex/) c = "refex"; else c = "other"
          s[c] += pct }
        END { n = split("crypto sqlite zeromq codec libc kernel refex other", k, " ")
              printf "%-9s", p; for (i = 1; i <= n; i++) printf " %6.1f%%", s[k[i]]; printf "\n"
              if (us == "") exit
              printf "%-9s", "  us/msg"; for (i = 1; i <= n; i++) printf " %7.0f", s[k[i]] * us / 100
              printf "   (of %d)\n", us }'
done
[ -n "$keep" ] && echo "perf data kept in $out (perf report -i $out/sender.data)" >&2
exit 0
