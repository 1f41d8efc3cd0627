#!/usr/bin/env bash
# A real PostgreSQL 15 pair for the tests: a primary and a synchronous streaming standby in
# a directory of their own, on loopback ports, run as a non-root user (initdb refuses root;
# as root, the servers run as nobody). Nothing outside DIR is touched.
#
# usage: tests/pg_cluster.sh start DIR [--no-standby]   start; DIR/url gets the store URI
#        tests/pg_cluster.sh stop DIR                   stop both (fast), keep DIR
#        tests/pg_cluster.sh kill-primary DIR           kill -9 the primary's postmaster
#        tests/pg_cluster.sh promote DIR                promote the standby to primary
#        tests/pg_cluster.sh restart-primary DIR        start the old primary again
#        tests/pg_cluster.sh destroy DIR                stop and remove DIR
# DIR/url: postgresql://refex@127.0.0.1:P1,127.0.0.1:P2/refex?target_session_attrs=read-write
# (one host without a standby); DIR/primary.port and DIR/standby.port hold the ports.
set -euo pipefail

BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ -x "$BIN/initdb" ] || { echo "pg_cluster: $BIN/initdb not found (postgresql-15; deploy/install-deps.sh)" >&2; exit 1; }

# Runs a PostgreSQL program as the servers' user.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

log() { echo "pg_cluster: $*" >&2; }

conf() { # node port [sync names]
    cat >>"$dir/$1/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $2
unix_socket_directories = '$dir'
wal_level = replica
max_wal_senders = 8
max_replication_slots = 8
hot_standby = on
fsync = on
synchronous_commit = on
synchronous_standby_names = '${3:-}'
wal_keep_size = 256MB
log_min_messages = warning
logging_collector = off
max_connections = 64
EOF
}

start_node() { # node
    as_pg "$BIN/pg_ctl" -D "$dir/$1" -l "$dir/$1.log" -w -t 60 start >/dev/null
}

case "$cmd" in
start)
    standby=1
    [ "${3:-}" = "--no-standby" ] && standby=0
    mkdir -p "$dir"
    chmod 0755 "$dir"
    [ "$(id -u)" = 0 ] && chown nobody:nogroup "$dir"
    p1=$(free_port)
    as_pg "$BIN/initdb" -D "$dir/primary" -U refex --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    # synchronous once the standby streams (below): then every COMMIT waits for its flush
    conf primary "$p1"
    cat >"$dir/primary/pg_hba.conf" <<EOF
local all all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
EOF
    start_node primary
    as_pg "$BIN/createdb" -h 127.0.0.1 -p "$p1" -U refex refex
    echo "$p1" >"$dir/primary.port"
    url="postgresql://refex@127.0.0.1:$p1/refex?target_session_attrs=read-write"
    if [ $standby = 1 ]; then
        p2=$(free_port)
        as_pg "$BIN/pg_basebackup" -d "host=127.0.0.1 port=$p1 user=refex application_name=standby1" \
            -D "$dir/standby" -R -X stream -c fast >"$dir/basebackup.log" 2>&1 ||
            { cat "$dir/basebackup.log" >&2; exit 1; }
        conf standby "$p2"
        start_node standby
        echo "$p2" >"$dir/standby.port"
        url="postgresql://refex@127.0.0.1:$p1,127.0.0.1:$p2/refex?target_session_attrs=read-write"
        as_pg "$BIN/psql" -h 127.0.0.1 -p "$p1" -U refex -d refex -qc \
            "ALTER SYSTEM SET synchronous_standby_names = 'standby1'" -c "SELECT pg_reload_conf()" >/dev/null
        # ready when the primary sees it streaming as a synchronous standby
        for _ in $(seq 1 300); do
            st=$(as_pg "$BIN/psql" -h 127.0.0.1 -p "$p1" -U refex -d refex -Atc \
                "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'" 2>/dev/null || true)
            [ "$st" = sync ] && break
            sleep 0.1
        done
        [ "$st" = sync ] || { log "the standby did not become synchronous"; cat "$dir/standby.log" >&2; exit 1; }
    fi
    echo "$url" >"$dir/url"
    log "primary on 127.0.0.1:$p1${p2:+, synchronous standby on 127.0.0.1:$p2}"
    echo "$url"
    ;;
stop)
    for n in standby primary; do
        [ -d "$dir/$n" ] && as_pg "$BIN/pg_ctl" -D "$dir/$n" -m fast -w stop >/dev/null 2>&1 || true
    done
    ;;
kill-primary)
    pid=$(head -1 "$dir/primary/postmaster.pid")
    # the postmaster and every backend at once, as a lost machine would
    pkill -9 -P "$pid" 2>/dev/null || true
    kill -9 "$pid"
    for _ in $(seq 1 100); do
        "$BIN/pg_isready" -q -h 127.0.0.1 -p "$(cat "$dir/primary.port")" || break
        sleep 0.1
    done
    log "primary (pid $pid) killed"
    ;;
promote)
    as_pg "$BIN/pg_ctl" -D "$dir/standby" -w promote >/dev/null
    # no synchronous standby is left: commits must not wait for one
    as_pg "$BIN/psql" -h 127.0.0.1 -p "$(cat "$dir/standby.port")" -U refex -d refex -qc \
        "ALTER SYSTEM SET synchronous_standby_names = ''" -c "SELECT pg_reload_conf()" >/dev/null
    log "standby promoted"
    ;;
restart-primary)
    start_node primary
    ;;
destroy)
    "$0" stop "$dir"
    rm -rf "$dir"
    ;;
*)
    log "unknown command $cmd (see --help)"
    exit 2
    ;;
esac
