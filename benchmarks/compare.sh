#!/usr/bin/env bash
# Side-by-side: the same workloads against the stub (generator ceiling), Prosody and xmppd,
# in one sitting, each server pinned to SERVER_CPU and the generator to GEN_CPU.
# Every knob is an environment variable (defaults are short runs); see benchmarks/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-$(command -v python || command -v python3)}
DOMAIN=${DOMAIN:-localhost}
PASSWORD=${PASSWORD:-bench}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
GEN_PROCS=${GEN_PROCS:-1}
TARGETS=${TARGETS:-"stub prosody xmppd xmppd-pure"}   # xmppd-pure: XMPPD_PURE_PYTHON=1
WORKLOADS=${WORKLOADS:-"throughput latency logins memory"}
DURATION=${DURATION:-3}                 # s, throughput/latency window (plus WARMUP)
WARMUP=${WARMUP:-1}
PAIRS=${PAIRS:-"50 100 500"}
WINDOW=${WINDOW:-16}                    # messages in flight per sender
LAT_PAIRS=${LAT_PAIRS:-50}
LAT_RATE=${LAT_RATE:-5000}              # offered msg/s (a list runs each)
LOGINS=${LOGINS:-3000}
TLS_LOGINS=${TLS_LOGINS:-1000}
LOGIN_CONC=${LOGIN_CONC:-100}
MEM_SESSIONS=${MEM_SESSIONS:-3000}
STUB_PORT=${STUB_PORT:-15299}
PROSODY_PORT=${PROSODY_PORT:-15222}
XMPPD_PORT=${XMPPD_PORT:-15223}
XMPPD=${XMPPD:-$(command -v xmppd || echo "$(dirname "$PY")/xmppd")}
WORK=${WORK:-$(mktemp -d /tmp/xmppd-compare.XXXXXX)}
OUT=${OUT:-$WORK/results.jsonl}
mkdir -p "$WORK"
chmod 755 "$WORK"   # mktemp makes it 0700; prosody runs as its own user

# Enough descriptors for MEM_SESSIONS sessions on both ends (plus TIME_WAIT slack).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "work dir $WORK, results $OUT, ulimit -n $(ulimit -n)"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # exit runs the EXIT trap: servers are stopped

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_port() {  # wait_port PORT PID: up to 15 s for the port to accept connections
    for _ in $(seq 150); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

accounts_needed() {
    local n=$MEM_SESSIONS
    for p in $PAIRS $LAT_PAIRS; do [ $((2 * p)) -gt "$n" ] && n=$((2 * p)); done
    [ "$LOGINS" -gt "$n" ] && n=$LOGINS
    echo "$n"
}
ACCOUNTS=${ACCOUNTS:-$(accounts_needed)}

# One ECDSA P-256 certificate for every server (cheap handshakes, same for all).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$DOMAIN" \
    -addext "subjectAltName=DNS:$DOMAIN" -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
chmod 644 "$WORK/cert.pem" "$WORK/key.pem"   # benchmark throwaway key, readable by prosody

load() {  # load TARGET PORT [global opts] WORKLOAD [opts]
    local target=$1 port=$2
    shift 2
    taskset -c "$GEN_CPU" "$PY" "$HERE/load.py" --port "$port" --domain "$DOMAIN" --password "$PASSWORD" \
        --target "$target" --procs "$GEN_PROCS" --json "$OUT" --ceiling "$OUT" "$@" \
        || echo "!! $target: load.py $* exited with status $?"
}

run_workloads() {  # run_workloads TARGET PORT
    local target=$1 port=$2
    for w in $WORKLOADS; do
        case $w in
        throughput)
            for p in $PAIRS; do
                load "$target" "$port" throughput --pairs "$p" -w "$WINDOW" --duration "$DURATION" --warmup "$WARMUP"
            done ;;
        latency)
            for r in $LAT_RATE; do
                load "$target" "$port" latency --pairs "$LAT_PAIRS" --rate "$r" --duration "$DURATION" --warmup "$WARMUP"
            done ;;
        logins)
            load "$target" "$port" logins -n "$LOGINS" -c "$LOGIN_CONC"
            load "$target" "$port" --tls logins -n "$TLS_LOGINS" -c "$LOGIN_CONC" ;;
        memory)
            [ "$target" = stub ] && continue
            # A fresh server per memory run: freed sessions leave heap behind (Lua GC,
            # allocator arenas) that would hide the next run's growth.
            for tls in "" --tls; do
                stop_last
                "start_${target//-/_}" || return 1
                load "$target" "$port" $tls memory -n "$MEM_SESSIONS" -c "$LOGIN_CONC"
            done ;;
        esac
    done
}

start_stub() {
    port_in_use "$STUB_PORT" && { echo "== stub: port $STUB_PORT already in use (set STUB_PORT)"; return 1; }
    taskset -c "$SERVER_CPU" "$PY" "$HERE/stub_server.py" --port "$STUB_PORT" --domain "$DOMAIN" \
        --password "$PASSWORD" --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" >"$WORK/stub.log" 2>&1 &
    PIDS+=($!)
    wait_port "$STUB_PORT" $! || { echo "stub did not start: $(cat "$WORK/stub.log")"; return 1; }
}

start_prosody() {
    if ! command -v prosody >/dev/null; then
        echo "installing prosody from Debian"
        apt-get install -y prosody >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y prosody >/dev/null; }
    fi
    port_in_use "$PROSODY_PORT" && { echo "== prosody: port $PROSODY_PORT already in use (set PROSODY_PORT)"; return 1; }
    local dir=$WORK/prosody
    mkdir -p "$dir/data"
    if [ ! -e "$dir/provisioned" ]; then
        "$PY" "$HERE/provision.py" prosody --data-path "$dir/data" --host "$DOMAIN" -n "$ACCOUNTS" \
            --password "$PASSWORD" --shared-salt
        touch "$dir/provisioned"
    fi
    sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$PROSODY_PORT|g" -e "s|@DOMAIN@|$DOMAIN|g" \
        -e "s|@CERT@|$WORK/cert.pem|g" -e "s|@KEY@|$WORK/key.pem|g" "$HERE/prosody.cfg.lua.in" >"$dir/prosody.cfg.lua"
    chown -R prosody:prosody "$dir" 2>/dev/null || true
    # Prosody refuses to run as root: drop to the prosody user (setpriv keeps the ulimit).
    local asuser=()
    [ "$(id -u)" = 0 ] && asuser=(setpriv --reuid=prosody --regid=prosody --init-groups)
    taskset -c "$SERVER_CPU" "${asuser[@]}" prosody --config "$dir/prosody.cfg.lua" -F >"$dir/stdout.log" 2>&1 &
    PIDS+=($!)
    wait_port "$PROSODY_PORT" $! || { echo "prosody did not start:"; cat "$dir/stdout.log" "$dir/prosody.log"; return 1; }
    echo "prosody $(dpkg-query -W -f '${Version}' prosody 2>/dev/null || true) on port $PROSODY_PORT"
}

start_xmppd() {
    if [ ! -x "$XMPPD" ] && ! command -v "$XMPPD" >/dev/null; then
        echo "== xmppd: executable not found ($XMPPD); skipping xmppd (set XMPPD=/path/to/xmppd)"
        return 1
    fi
    port_in_use "$XMPPD_PORT" && { echo "== xmppd: port $XMPPD_PORT already in use (set XMPPD_PORT)"; return 1; }
    local dir=$WORK/xmppd
    mkdir -p "$dir"
    cat >"$dir/xmppd.toml" <<TOML
[server]
domains = ["$DOMAIN"]
data_dir = "$dir/data"
log_level = "warning"

[c2s]
listen = ["127.0.0.1:$XMPPD_PORT"]
require_encryption = false   # benchmark only: plaintext and TLS both measured
allow_plain = true

[limits]                     # benchmark: no per-IP caps, every session comes from 127.0.0.1
max_preauth_connections_per_ip = 1000000
auth_failed_usernames_per_ip_per_min = 1000000
rate_limit_bytes_per_s = 0

[certificates.$DOMAIN]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"
TOML
    if [ ! -e "$dir/provisioned" ]; then
        if ! XMPPD="$XMPPD" "$PY" "$HERE/provision.py" xmppd --config "$dir/xmppd.toml" --host "$DOMAIN" \
                -n "$ACCOUNTS" --password "$PASSWORD"; then
            echo "== xmppd: provisioning failed; skipping xmppd"
            return 1
        fi
        touch "$dir/provisioned"
    fi
    XMPPD_PURE_PYTHON=${XMPPD_PURE:-0} taskset -c "$SERVER_CPU" "$XMPPD" --config "$dir/xmppd.toml" run \
        >"$dir/stdout.log" 2>&1 &
    PIDS+=($!)
    if ! wait_port "$XMPPD_PORT" $!; then
        echo "== xmppd: did not start listening on $XMPPD_PORT; skipping xmppd. Its output:"
        tail -20 "$dir/stdout.log"
        return 1
    fi
}

start_xmppd_pure() {  # the same server with the pure-Python twins
    XMPPD_PURE=1 start_xmppd
}

stop_last() {  # stop the most recently started server so it does not compete for the CPU
    [ "${#PIDS[@]}" -gt 0 ] || return 0
    local pid=${PIDS[-1]}
    unset 'PIDS[-1]'
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

for target in $TARGETS; do
    case $target in
    stub) start_stub && { run_workloads stub "$STUB_PORT"; stop_last; } ;;
    prosody) start_prosody && { run_workloads prosody "$PROSODY_PORT"; stop_last; } ;;
    xmppd) start_xmppd && { run_workloads xmppd "$XMPPD_PORT"; stop_last; } ;;
    xmppd-pure) start_xmppd_pure && { run_workloads xmppd-pure "$XMPPD_PORT"; stop_last; } ;;
    *) echo "unknown target $target" ;;
    esac
done

if [ -s "$OUT" ]; then (cd "$HERE" && "$PY" -m loadgen.summary "$OUT"); else echo "no results"; fi
