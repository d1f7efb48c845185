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
TARGETS=${TARGETS:-"stub prosody xmppd xmppd-pure"}   # also: ejabberd; xmppd-pure: XMPPD_PURE_PYTHON=1
WORKLOADS=${WORKLOADS:-"throughput ws-throughput bosh upload latency logins memory mam-page resume fanout pep-presence muc muc-join"}
# Server feature sets, each a fresh server: "plain" (defaults) and any "+"-joined set of sm
# (clients enable XEP-0198), carbons (clients enable XEP-0280), mam (server archives: xmppd
# default modules + "mam"; Prosody mod_mam). throughput runs in every set; every other
# workload once, in the first set that has what it needs (mam-page: mam, resume: sm).
FEATURES=${FEATURES:-"plain sm+carbons+mam"}
SM_EVERY=${SM_EVERY:-16}                # throughput --sm: client <r/> every N messages sent
MAM_FILL=${MAM_FILL:-10000}             # archive size for mam-page (1000000: see README)
MAM_CLIENTS=${MAM_CLIENTS:-4}
MAM_PAGE=${MAM_PAGE:-50}
RESUME_SESSIONS=${RESUME_SESSIONS:-200}
RESUME_CYCLES=${RESUME_CYCLES:-5}
FANOUT_SUBS=${FANOUT_SUBS:-1000}        # a list runs each (10000: see README)
FANOUT_WINDOW=${FANOUT_WINDOW:-1}
FANOUT_TIMEOUT=${FANOUT_TIMEOUT:-60}    # s per subscribe during set-up (Prosody: O(subscribers) each)
PEP_USERS=${PEP_USERS:-1000}
PEP_NODES=${PEP_NODES:-3}
PEP_UPDATES=${PEP_UPDATES:-5}
MUC_SIZES=${MUC_SIZES:-"10 100 500"}    # occupants per room, one run each
MUC_ROOMS=${MUC_ROOMS:-1}
MUC_TALKERS=${MUC_TALKERS:-3}
MUC_WINDOW=${MUC_WINDOW:-4}
MUC_JOIN=${MUC_JOIN:-200}               # join storm size (1000: see README)
MUC_JOIN_TIMEOUT=${MUC_JOIN_TIMEOUT:-300}   # s per join: a storm is O(J^2) presences; slow peers finish late
PROSODY_ARCHIVE=${PROSODY_ARCHIVE:-internal}   # or "sql" (SQLite through lua-dbi-sqlite3)
BOSH_SESSIONS=${BOSH_SESSIONS:-1000}    # bosh: sessions logged in over BOSH, each with its long poll held
BOSH_PAIRS=${BOSH_PAIRS:-${PAIRS:-"50 100 500"}}   # bosh: closed loop between BOSH clients (a list runs each)
BOSH_WINDOW=${BOSH_WINDOW:-${WINDOW:-16}}
UPLOAD_MB=${UPLOAD_MB:-10}              # upload: file size (MB = 10^6 bytes), PUT then GET per round (a list runs each)
UPLOAD_ROUNDS=${UPLOAD_ROUNDS:-3}
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
EJABBERD_PORT=${EJABBERD_PORT:-15224}   # and the next two: its HTTP API (provisioning), Erlang distribution
PROSODY_HTTP_PORT=${PROSODY_HTTP_PORT:-15280}   # ws-throughput: XMPP over WebSocket (RFC 7395)
XMPPD_HTTP_PORT=${XMPPD_HTTP_PORT:-15281}
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
        [ -n "$pid" ] && { kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; }
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
    for p in $PAIRS $LAT_PAIRS $BOSH_PAIRS; do [ $((2 * p)) -gt "$n" ] && n=$((2 * p)); done
    for m in $LOGINS $RESUME_SESSIONS $PEP_USERS $((MUC_JOIN + 1)) $BOSH_SESSIONS; do [ "$m" -gt "$n" ] && n=$m; done
    for f in $FANOUT_SUBS; do [ $((f + 1)) -gt "$n" ] && n=$((f + 1)); done
    for m in $MUC_SIZES; do [ $((m * MUC_ROOMS)) -gt "$n" ] && n=$((m * MUC_ROOMS)); done
    echo "$n"
}

has() {  # has FEATURE FSET: is FEATURE in the "+"-joined set?
    [[ "+$2+" == *"+$1+"* ]]
}

needs() {  # needs WORKLOAD: the feature a workload requires ("" for none)
    case $1 in mam-page) echo mam ;; resume) echo sm ;; *) echo "" ;; esac
}

wants() {  # wants WORKLOAD FSET: run WORKLOAD in this feature set?
    local w=$1 fset=$2 need f
    [ "$w" = throughput ] || [ "$w" = ws-throughput ] && return 0
    need=$(needs "$w")
    for f in $FEATURES; do  # the first set that has what the workload needs
        if [ -z "$need" ] || has "$need" "$f"; then [ "$f" = "$fset" ]; return; fi
    done
    return 1
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
        --target "$target" --procs "$GEN_PROCS" --json "$OUT" --ceiling "$OUT" --features "$FSET" "$@" \
        || echo "!! $target: load.py $* exited with status $?"
}

fresh() {  # fresh TARGET: restart the server (memory figures need a server that has not grown yet)
    stop_last
    "start_${1//-/_}"
}

run_workloads() {  # run_workloads TARGET PORT  (feature set: $FSET)
    local target=$1 port=$2 sm=() carbons=()
    has sm "$FSET" && sm=(--sm --sm-every "$SM_EVERY")
    has carbons "$FSET" && carbons=(--carbons)
    for w in $WORKLOADS; do
        wants "$w" "$FSET" || continue
        case $w in
        throughput)
            for p in $PAIRS; do
                load "$target" "$port" "${carbons[@]}" throughput --pairs "$p" -w "$WINDOW" \
                    --duration "$DURATION" --warmup "$WARMUP" "${sm[@]}"
            done ;;
        ws-throughput)  # the same closed loop between WebSocket clients (no stub: TCP only)
            local http
            case $target in prosody) http=$PROSODY_HTTP_PORT ;; xmppd*) http=$XMPPD_HTTP_PORT ;; *) continue ;; esac
            for p in $PAIRS; do
                load "$target" "$http" --websocket /xmpp-websocket "${carbons[@]}" throughput --pairs "$p" \
                    -w "$WINDOW" --duration "$DURATION" --warmup "$WARMUP" "${sm[@]}"
            done ;;
        bosh)  # XMPP over BOSH (XEP-0206) on the HTTP port: sessions held, then the closed loop
            local http
            case $target in prosody) http=$PROSODY_HTTP_PORT ;; xmppd*) http=$XMPPD_HTTP_PORT ;; *) continue ;; esac
            fresh "$target" || return 1  # RSS per held session: a server that has not grown yet
            load "$target" "$http" --bosh /http-bind memory -n "$BOSH_SESSIONS" -c "$LOGIN_CONC"
            for p in $BOSH_PAIRS; do
                load "$target" "$http" --bosh /http-bind throughput --pairs "$p" -w "$BOSH_WINDOW" \
                    --duration "$DURATION" --warmup "$WARMUP"
            done ;;
        upload)  # XEP-0363: slot over c2s, PUT and GET on the HTTP port the slot names
            [ "$target" = stub ] && continue
            for mb in $UPLOAD_MB; do
                fresh "$target" || return 1  # RSS growth from a server whose heap has not grown yet
                load "$target" "$port" upload --size-mb "$mb" --rounds "$UPLOAD_ROUNDS"
            done ;;
        mam-page)
            [ "$target" = stub ] && continue
            fresh "$target" || return 1  # no backlog of archive writes left by throughput
            local fill=()  # xmppd: filled by fill_archive.py before it started; the others: over XMPP, once
            if [[ $target != xmppd* ]] && [ ! -e "$WORK/$target/filled" ]; then
                fill=(--fill "$MAM_FILL"); touch "$WORK/$target/filled"
            fi
            load "$target" "$port" mam-page --clients "$MAM_CLIENTS" --page "$MAM_PAGE" --duration "$DURATION" \
                --warmup "$WARMUP" "${fill[@]}" ;;
        resume)
            [ "$target" = stub ] || fresh "$target" || return 1
            load "$target" "$port" resume -n "$RESUME_SESSIONS" --cycles "$RESUME_CYCLES" -c "$LOGIN_CONC"
            [ "$target" = stub ] || fresh "$target" || return 1 ;;  # detached sessions linger
        fanout)
            [ "$target" = stub ] && continue
            for f in $FANOUT_SUBS; do
                load "$target" "$port" --timeout "$FANOUT_TIMEOUT" fanout --subscribers "$f" -w "$FANOUT_WINDOW" \
                    --duration "$DURATION" --warmup "$WARMUP" -c "$LOGIN_CONC"
            done ;;
        pep-presence)
            [ "$target" = stub ] && continue
            fresh "$target" || return 1
            # ejabberd 23.01 refuses (item-not-found) PEP node auto-creation under concurrent
            # first publishes, and keeps refusing for that node: its set-up publishes one at a time.
            local pubc=0; [ "$target" = ejabberd ] && pubc=1
            load "$target" "$port" pep-presence -n "$PEP_USERS" --nodes "$PEP_NODES" --updates "$PEP_UPDATES" \
                -c "$LOGIN_CONC" --publish-concurrency "$pubc" ;;
        muc)
            [ "$target" = stub ] && continue
            for m in $MUC_SIZES; do
                load "$target" "$port" muc --occupants "$m" --rooms "$MUC_ROOMS" --talkers "$MUC_TALKERS" \
                    -w "$MUC_WINDOW" --duration "$DURATION" --warmup "$WARMUP" -c "$LOGIN_CONC"
            done ;;
        muc-join)
            [ "$target" = stub ] && continue
            load "$target" "$port" --timeout "$MUC_JOIN_TIMEOUT" muc-join --occupants "$MUC_JOIN" -c "$LOGIN_CONC" ;;
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
    local mods=""  # mod_smacks, mod_carbons and mod_mam are core modules in 0.12
    has sm "$FSET" && mods+=', "smacks"'
    has carbons "$FSET" && mods+=', "carbons"'
    has mam "$FSET" && mods+=', "mam"'
    sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$PROSODY_PORT|g" -e "s|@DOMAIN@|$DOMAIN|g" \
        -e "s|@HTTP_PORT@|$PROSODY_HTTP_PORT|g" \
        -e "s|@CERT@|$WORK/cert.pem|g" -e "s|@KEY@|$WORK/key.pem|g" -e "s|@MODULES@|$mods|g" \
        "$HERE/prosody.cfg.lua.in" >"$dir/prosody.cfg.lua"
    if [ "$PROSODY_ARCHIVE" = sql ]; then  # archives in SQLite (needs lua-dbi-sqlite3), like xmppd
        sed -i 's|^storage = "internal"$|storage = { archive = "sql" }  -- accounts etc.: internal\
sql = { driver = "SQLite3", database = "archive.sqlite" }|' "$dir/prosody.cfg.lua"
    fi
    chown -R prosody:prosody "$dir" 2>/dev/null || true
    # Prosody refuses to run as root: drop to the prosody user (setpriv keeps the ulimit).
    local asuser=()
    [ "$(id -u)" = 0 ] && asuser=(setpriv --reuid=prosody --regid=prosody --init-groups)
    taskset -c "$SERVER_CPU" "${asuser[@]}" prosody --config "$dir/prosody.cfg.lua" -F >"$dir/stdout.log" 2>&1 &
    PIDS+=($!)
    wait_port "$PROSODY_PORT" $! || { echo "prosody did not start:"; cat "$dir/stdout.log" "$dir/prosody.log"; return 1; }
    echo "prosody $(dpkg-query -W -f '${Version}' prosody 2>/dev/null || true) on port $PROSODY_PORT"
}

start_ejabberd() {
    if ! command -v ejabberdctl >/dev/null; then
        echo "installing ejabberd from Debian"
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d  # no packaged service
        apt-get install -y ejabberd >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y ejabberd >/dev/null; }
        rm -f /usr/sbin/policy-rc.d
    fi
    local api_port=$((EJABBERD_PORT + 1)) dist_port=$((EJABBERD_PORT + 2)) p
    for p in "$EJABBERD_PORT" "$api_port" "$dist_port"; do
        port_in_use "$p" && { echo "== ejabberd: port $p already in use (set EJABBERD_PORT)"; return 1; }
    done
    local dir=$WORK/ejabberd node="bench$EJABBERD_PORT@localhost" mods=""
    mkdir -p "$dir/logs" "$dir/spool"
    cat "$WORK/cert.pem" "$WORK/key.pem" >"$dir/cert+key.pem"
    has sm "$FSET" && mods+=$'  mod_stream_mgmt: {}\n'
    has carbons "$FSET" && mods+=$'  mod_carbons: {}\n'
    has mam "$FSET" && mods+=$'  mod_mam:\n    default: always\n'
    sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$EJABBERD_PORT|g" -e "s|@API_PORT@|$api_port|g" \
        -e "s|@DOMAIN@|$DOMAIN|g" -e "/^@MODULES@$/d" "$HERE/ejabberd.yml.in" >"$dir/ejabberd.yml"
    printf '%s\n' "${mods%$'\n'}" >>"$dir/ejabberd.yml"
    # Its own node name and distribution port: neither the node nor ejabberdctl needs epmd.
    printf 'ERLANG_NODE=%s\nERL_DIST_PORT=%s\n' "$node" "$dist_port" >"$dir/ejabberdctl.cfg"
    printf '{lookup, [file, native]}.\n' >"$dir/inetrc"   # ejabberdctl points ERL_INETRC here
    local asuser=()
    if [ "$(id -u)" = 0 ]; then  # as the ejabberd user, like the packaged service
        chown -R ejabberd:ejabberd "$dir"
        asuser=(setpriv --reuid=ejabberd --regid=ejabberd --init-groups)
    fi
    # setsid: stop_last ends the whole group (ejabberdctl's shell, beam.smp and its helpers).
    local ctl=("${asuser[@]}" ejabberdctl --config-dir "$dir" --config "$dir/ejabberd.yml"
               --ctl-config "$dir/ejabberdctl.cfg" --logs "$dir/logs" --spool "$dir/spool" --node "$node")
    HOME=$dir taskset -c "$SERVER_CPU" setsid "${ctl[@]}" foreground >"$dir/stdout.log" 2>&1 &
    PIDS+=($!)
    # Its listeners open before its modules have started (PEP publishes fail with
    # item-not-found meanwhile): wait for `ejabberdctl status` to say it runs.
    local ok=1 pid=$!
    for _ in $(seq 60); do
        kill -0 "$pid" 2>/dev/null || break
        if HOME=$dir "${ctl[@]}" status 2>/dev/null | grep -q "is running in that node"; then ok=0; break; fi
        sleep 1
    done
    [ $ok = 0 ] && wait_port "$EJABBERD_PORT" "$pid" && wait_port "$api_port" "$pid" \
        || { echo "ejabberd did not start:"; tail -n 5 "$dir/logs/ejabberd.log" "$dir/stdout.log"; return 1; }
    if [ ! -e "$dir/provisioned" ]; then
        "$PY" "$HERE/provision.py" ejabberd --api "http://127.0.0.1:$api_port/api" --host "$DOMAIN" \
            -n "$ACCOUNTS" --password "$PASSWORD" || { echo "== ejabberd: provisioning failed"; return 1; }
        touch "$dir/provisioned"
    fi
    echo "ejabberd $(dpkg-query -W -f '${Version}' ejabberd 2>/dev/null || true) on port $EJABBERD_PORT"
}

start_xmppd() {
    if [ ! -x "$XMPPD" ] && ! command -v "$XMPPD" >/dev/null; then
        echo "== xmppd: executable not found ($XMPPD); skipping xmppd (set XMPPD=/path/to/xmppd)"
        return 1
    fi
    port_in_use "$XMPPD_PORT" && { echo "== xmppd: port $XMPPD_PORT already in use (set XMPPD_PORT)"; return 1; }
    local dir=$WORK/xmppd modules_toml=""
    mkdir -p "$dir"
    # XMPPD_MODULES (names, space-separated) replaces the default module set, e.g. to
    # measure the core with the modules an older version had; the mam feature set adds mam.
    local modules=${XMPPD_MODULES:-$("$PY" -c 'from xmppd.core.manager import DEFAULT_MODULES as m; print(*m)')}
    has mam "$FSET" && modules+=" mam"
    modules_toml="[modules]
enabled = [$(printf '"%s", ' $modules | sed 's/, $//')]
"
    cat >"$dir/xmppd.toml" <<TOML
[server]
domains = ["$DOMAIN"]
data_dir = "$dir/data"
log_level = "warning"

[c2s]
listen = ["127.0.0.1:$XMPPD_PORT"]
require_encryption = false   # benchmark only: plaintext and TLS both measured
allow_plain = true

[http]                       # ws-throughput, bosh, upload: plain HTTP on loopback, as Prosody's
listen = ["127.0.0.1:$XMPPD_HTTP_PORT"]
listen_tls = []
max_connections_per_ip = 0

[limits]                     # benchmark: no per-IP caps, every session comes from 127.0.0.1
max_preauth_connections_per_ip = 1000000
auth_failed_usernames_per_ip_per_min = 1000000
rate_limit_bytes_per_s = 0
max_resources_per_account = 1000   # mam-page: MAM_CLIENTS sessions of one account

$modules_toml
[modules.muc]                # as Prosody's muc: no per-occupant rate limit, rooms of any size
max_users = 100000
max_users_limit = 100000
message_rate = 0
max_rooms_per_user = 0

[modules.bosh]               # every BOSH session comes from 127.0.0.1 (a trusted proxy: counts as encrypted)
max_sessions_per_ip = 0

[modules.upload]             # as Prosody's http_file_share below: files up to 100 MiB, no quota
max_file_size = 104857600
quota_bytes = 0

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
    if has mam "$FSET" && [[ " $WORKLOADS " == *" mam-page "* ]] && [ ! -e "$dir/filled" ]; then
        # The archive is filled through xmppd's storage API while the server is stopped.
        "$PY" "$HERE/fill_archive.py" --config "$dir/xmppd.toml" --owner "user0@$DOMAIN" \
            --peer "user1@$DOMAIN" -n "$MAM_FILL" || { echo "== xmppd: archive fill failed"; return 1; }
        touch "$dir/filled"
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
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true   # a group where setsid made one
    wait "$pid" 2>/dev/null || true
    # ejabberd's VM outlives ejabberdctl's shell by a few seconds: let the group end first.
    for _ in $(seq 300); do pgrep -g "$pid" >/dev/null 2>&1 || break; sleep 0.1; done
}

for target in $TARGETS; do
    for FSET in $FEATURES; do
        echo "== $target, features $FSET"
        case $target in
        stub) start_stub && { run_workloads stub "$STUB_PORT"; stop_last; } ;;
        prosody) start_prosody && { run_workloads prosody "$PROSODY_PORT"; stop_last; } ;;
        ejabberd) start_ejabberd && { run_workloads ejabberd "$EJABBERD_PORT"; stop_last; } ;;
        xmppd) start_xmppd && { run_workloads xmppd "$XMPPD_PORT"; stop_last; } ;;
        xmppd-pure) start_xmppd_pure && { run_workloads xmppd-pure "$XMPPD_PORT"; stop_last; } ;;
        *) echo "unknown target $target" ;;
        esac
    done
done

if [ -s "$OUT" ]; then (cd "$HERE" && "$PY" -m loadgen.summary "$OUT"); else echo "no results"; fi
