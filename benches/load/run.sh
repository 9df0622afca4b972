#!/usr/bin/env bash
# The load benchmark: direct-to-backend, wsedge, nginx and HAProxy, plain (ws://) and TLS 1.3
# (wss://, full handshakes: resumption off on both sides), measured in one run.
#
#   benches/load/run.sh                      # everything (about 14 minutes after the build)
#   TARGETS="direct nginx" benches/load/run.sh
#   TARGETS="wsedge_tls nginx_tls haproxy_tls" DURATION=2 UPGRADES=2000 benches/load/run.sh
#   DURATION=10 IDLE_SESSIONS=2000 SCENARIOS="idle upgrades" benches/load/run.sh
#   TARGETS="wsedge nginx" SCENARIOS="chat upgrade_latency_held" CHAT_SESSIONS=300 CHAT_SECONDS=5 \
#       IDLE_SESSIONS=500 benches/load/run.sh      # the scenarios at scale, small
#
# Each proxy runs alone on core 1 (taskset -c 1); the load generator (examples/loadgen.rs) and the
# `wsedge echo` backends run on core 0. All traffic is on loopback; every phase is bounded by the
# load generator's --deadline; every process started here is killed on exit.
# Results: bench-results/<stamp>/{results.jsonl,results.md}, and bench-results/latest.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

TARGETS=${TARGETS:-"direct wsedge wsedge_nometrics nginx haproxy wsedge_tls nginx_tls haproxy_tls"}
# Run for plain targets, in this order. `idle` and `chat` measure RSS per session, so each runs on
# a fresh proxy process (the target is restarted before `chat`, and before `idle` if not first).
SCENARIOS=${SCENARIOS:-"idle chat upgrade_latency_held echo pipeline upgrades"}
ECHO_SIZES=${ECHO_SIZES:-"64 16384"}                    # message sizes of `echo` (plain targets)
TLS_SCENARIOS=${TLS_SCENARIOS:-"idle echo upgrades"}     # *_tls targets (also filtered by SCENARIOS)
# wsedge_nometrics is the baseline of the metrics on/off ratio per message: the scale scenarios
# (two minutes per target) are left out of it by default.
NOMETRICS_SCENARIOS=${NOMETRICS_SCENARIOS:-"idle echo pipeline upgrades"}
TLS_ECHO_SIZES=${TLS_ECHO_SIZES:-"64"}
DURATION=${DURATION:-5}          # seconds measured per echo scenario
WARMUP=${WARMUP:-1}              # seconds of traffic before each measured window
CONNS=${CONNS:-32}
PIPELINE_DEPTH=${PIPELINE_DEPTH:-32}
UPGRADES=${UPGRADES:-10000}
IDLE_SESSIONS=${IDLE_SESSIONS:-9000}     # held in `idle`, and in `upgrade_latency_held`
CHAT_SESSIONS=${CHAT_SESSIONS:-9000}     # live sessions of `chat`, one message per second each
CHAT_SECONDS=${CHAT_SECONDS:-60}         # seconds each chat session sends
CHAT_SIZE=${CHAT_SIZE:-64}
HELD_UPGRADES=${HELD_UPGRADES:-2000}     # upgrades measured per phase of `upgrade_latency_held`
HELD_CONCURRENCY=${HELD_CONCURRENCY:-8}  # of them in flight at a time
BACKENDS=${BACKENDS:-3}
LOAD_CORE=${LOAD_CORE:-0}
PROXY_CORE=${PROXY_CORE:-1}
WSEDGE_EXTRA_YAML=${WSEDGE_EXTRA_YAML:-}   # appended to the generated routes.yaml (later issues)
AFFINITY_PARAM=${AFFINITY_PARAM:-room}     # the query parameter every proxy hashes on
IDLE_WARMUP=${IDLE_WARMUP:-1}              # 0: no echo warm-up before a target's scenarios
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

STAMP=$(date -u +%Y%m%d-%H%M%S)
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)   # a busy machine shows here (see results.md)
OUT="$ROOT/bench-results/$STAMP"
WORK="$OUT/work"
mkdir -p "$WORK"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

log() { printf '== %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------
# Processes: every pid started here is remembered and killed on exit.
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    sleep 0.3
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill -9 "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_port PORT PID: true once PORT accepts, false if PID dies or 10 s pass.
wait_port() {
    local port=$1 pid=$2 i
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------------------------------------
log "limits and tools"
ulimit -n "$(ulimit -Hn)"
log "open files: $(ulimit -n)"

need_pkgs=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx-light)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need_pkgs+=(haproxy)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]} from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
    # Debian's maintainer scripts may start the packaged service; it is not ours to measure.
    if command -v service >/dev/null; then
        service nginx stop >/dev/null 2>&1 || true
        service haproxy stop >/dev/null 2>&1 || true
    fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

if [ "${BUILD:-1}" != 0 ]; then
    log "building wsedge and the load generator (release)"
    cargo build --release --quiet --bin wsedge --example loadgen
fi
WSEDGE="$TARGET_DIR/release/wsedge"
LOADGEN="$TARGET_DIR/release/examples/loadgen"
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------------------------
# TLS targets: one ECDSA P-256 certificate for localhost/127.0.0.1 (and its dev CA, which the load
# generator trusts), made fresh for this run and served by wsedge, nginx and HAProxy alike.
CERTS="$WORK/certs"
case " $TARGETS " in
*_tls\ *)
    log "making the TLS certificate (wsedge certs --dev)"
    "$WSEDGE" certs --dev --out "$CERTS" >"$WORK/certs.log" 2>&1 || { cat "$WORK/certs.log" >&2; exit 1; }
    rm -f "$CERTS/dev-ca-key.pem"   # nothing else gets signed
    # HAProxy takes the certificate and its key in one PEM file.
    cat "$CERTS/localhost.pem" "$CERTS/localhost-key.pem" >"$CERTS/haproxy.pem"
    chmod 600 "$CERTS/haproxy.pem"
    ;;
esac

# ---------------------------------------------------------------------------------------------
log "starting $BACKENDS echo backends on core $LOAD_CORE"
BACKEND_PORTS=()
for n in $(seq "$BACKENDS"); do
    port=$(free_port)
    taskset -c "$LOAD_CORE" "$WSEDGE" echo --listen "127.0.0.1:$port" --id "b$n" \
        >"$WORK/echo-b$n.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port" "$pid" || { cat "$WORK/echo-b$n.log" >&2; exit 1; }
    BACKEND_PORTS+=("$port")
done

# ---------------------------------------------------------------------------------------------
# Target start functions: each sets TARGET_PORT and TARGET_PIDS (comma list of the processes
# whose CPU and RSS count), or returns non-zero when the target cannot start. A target whose name
# ends in _tls is reached over wss:// (the start function terminates TLS 1.3 on TARGET_PORT).
TARGET_PORT=
TARGET_PIDS=
TARGET_MAIN=

start_direct() {
    TARGET_PORT=${BACKEND_PORTS[0]}
    TARGET_PIDS=        # the backend is not a proxy: no proxy CPU to report
    TARGET_MAIN=
}

# wsedge_start NAME TLS: wsedge with the bench routes; TLS=1 terminates TLS 1.3 on the listener.
wsedge_start() {
    local name=$1 tls=$2 port cfg pid
    port=$(free_port)
    cfg="$WORK/$name-routes.yaml"
    {
        echo "listeners:"
        if [ "$tls" = 1 ]; then
            echo "  - name: edge"
            echo "    bind: \"127.0.0.1:$port\""
            echo "    max_pending_per_ip: 0"
            echo "    tls: {cert: \"$CERTS/localhost.pem\", key: \"$CERTS/localhost-key.pem\", min_version: \"1.3\", session_resumption: false}"
        else
            echo "  - {name: edge, bind: \"127.0.0.1:$port\", max_pending_per_ip: 0}"
        fi
        echo "routes:"
        echo "  - name: bench"
        echo "    match: {host: \"*\", path_prefix: /}"
        echo "    affinity: {key: \"query:$AFFINITY_PARAM\"}"
        echo "    backends:"
        local n=1 p
        for p in "${BACKEND_PORTS[@]}"; do
            echo "      - {name: b$n, url: \"ws://127.0.0.1:$p\"}"
            n=$((n + 1))
        done
        if [ -n "$WSEDGE_EXTRA_YAML" ]; then printf '%s\n' "$WSEDGE_EXTRA_YAML"; fi
    } >"$cfg"
    # No backtraces: a panicking proxy would spend its CPU printing them and skew the figures.
    RUST_BACKTRACE=0 RUST_LOG=${RUST_LOG:-warn} taskset -c "$PROXY_CORE" "$WSEDGE" run --config "$cfg" \
        >>"$WORK/$name.log" 2>&1 &   # appended: a restart (fresh process) keeps the first log
    pid=$!
    PIDS+=("$pid")
    if ! wait_port "$port" "$pid"; then
        log "wsedge did not start (see $WORK/$name.log):"
        tail -n 5 "$WORK/$name.log" >&2 || true
        stop_pid "$pid"
        return 1
    fi
    TARGET_PORT=$port
    TARGET_PIDS=$pid
    TARGET_MAIN=$pid
}

start_wsedge() { wsedge_start wsedge 0; }

# wsedge with metric recording off (WSEDGE_METRICS=off): the baseline of the metrics-overhead
# figure (the goal: at most 3% more proxy CPU per message with metrics on).
start_wsedge_nometrics() {
    local rc=0
    export WSEDGE_METRICS=off
    wsedge_start wsedge_nometrics 0 || rc=$?
    unset WSEDGE_METRICS
    return $rc
}

start_wsedge_tls() { wsedge_start wsedge_tls 1; }

# nginx_start NAME TLS: TLS=1 terminates TLS 1.3 with no session tickets and no session cache.
nginx_start() {
    local name=$1 tls=$2 port dir pid workers i
    port=$(free_port)
    dir="$WORK/$name"
    mkdir -p "$dir/tmp"
    {
        echo "worker_processes 1;"
        echo "worker_rlimit_nofile $(ulimit -Hn);"
        echo "pid $dir/nginx.pid;"
        echo "error_log $dir/error.log warn;"
        echo "events { worker_connections $(( $(ulimit -Hn) - 500 )); use epoll; }"
        echo "http {"
        echo "  access_log off;"
        echo "  client_body_temp_path $dir/tmp/body; proxy_temp_path $dir/tmp/proxy;"
        echo "  fastcgi_temp_path $dir/tmp/fcgi; uwsgi_temp_path $dir/tmp/uwsgi; scgi_temp_path $dir/tmp/scgi;"
        echo "  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }"
        echo "  upstream echo {"
        echo "    hash \$arg_$AFFINITY_PARAM consistent;"
        local p
        for p in "${BACKEND_PORTS[@]}"; do echo "    server 127.0.0.1:$p;"; done
        echo "  }"
        echo "  server {"
        if [ "$tls" = 1 ]; then
            echo "    listen 127.0.0.1:$port ssl backlog=4096;"
            echo "    ssl_certificate $CERTS/localhost.pem;"
            echo "    ssl_certificate_key $CERTS/localhost-key.pem;"
            echo "    ssl_protocols TLSv1.3;"
            echo "    ssl_session_tickets off;"
            echo "    ssl_session_cache off;"
        else
            echo "    listen 127.0.0.1:$port backlog=4096;"
        fi
        echo "    location / {"
        echo "      proxy_pass http://echo;"
        echo "      proxy_http_version 1.1;"
        echo "      proxy_set_header Upgrade \$http_upgrade;"
        echo "      proxy_set_header Connection \$connection_upgrade;"
        echo "      proxy_set_header Host \$host;"
        echo "      proxy_read_timeout 3600s;"
        echo "      proxy_send_timeout 3600s;"
        echo "    }"
        echo "  }"
        echo "}"
    } >"$dir/nginx.conf"
    taskset -c "$PROXY_CORE" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' \
        >"$dir/stdout.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port" "$pid" || { cat "$dir/error.log" "$dir/stdout.log" >&2 || true; return 1; }
    workers=
    for i in $(seq 50); do
        workers=$(pgrep -P "$pid" | paste -sd, || true)
        [ -n "$workers" ] && break
        sleep 0.1
    done
    TARGET_PORT=$port
    TARGET_PIDS="$pid${workers:+,$workers}"
    TARGET_MAIN=$pid
}

start_nginx() { nginx_start nginx 0; }
start_nginx_tls() { nginx_start nginx_tls 1; }

# haproxy_start NAME TLS: TLS=1 terminates TLS 1.3 with no tickets and no session cache.
haproxy_start() {
    local name=$1 tls=$2 port dir pid maxconn
    port=$(free_port)
    dir="$WORK/$name"
    mkdir -p "$dir"
    # Two sockets per proxied session, plus listeners and spare descriptors.
    maxconn=$(( ($(ulimit -Hn) - 200) / 2 ))
    {
        echo "global"
        echo "  nbthread 1"
        echo "  maxconn $maxconn"
        if [ "$tls" = 1 ]; then echo "  tune.ssl.cachesize 0"; fi
        echo "defaults"
        echo "  mode http"
        echo "  maxconn $maxconn"
        echo "  timeout connect 5s"
        echo "  timeout client 3600s"
        echo "  timeout server 3600s"
        echo "  timeout tunnel 3600s"
        echo "  timeout client-fin 5s"
        echo "frontend edge"
        if [ "$tls" = 1 ]; then
            echo "  bind 127.0.0.1:$port ssl crt $CERTS/haproxy.pem ssl-min-ver TLSv1.3 no-tls-tickets alpn http/1.1"
        else
            echo "  bind 127.0.0.1:$port"
        fi
        echo "  default_backend echo"
        echo "backend echo"
        echo "  balance url_param $AFFINITY_PARAM"
        echo "  hash-type consistent"
        local n=1 p
        for p in "${BACKEND_PORTS[@]}"; do
            echo "  server b$n 127.0.0.1:$p"
            n=$((n + 1))
        done
    } >"$dir/haproxy.cfg"
    "$HAPROXY" -c -f "$dir/haproxy.cfg" >"$dir/check.log" 2>&1 || { cat "$dir/check.log" >&2; return 1; }
    taskset -c "$PROXY_CORE" "$HAPROXY" -db -f "$dir/haproxy.cfg" >"$dir/stdout.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port" "$pid" || { cat "$dir/stdout.log" >&2 || true; return 1; }
    TARGET_PORT=$port
    TARGET_PIDS=$pid
    TARGET_MAIN=$pid
}

start_haproxy() { haproxy_start haproxy 0; }
start_haproxy_tls() { haproxy_start haproxy_tls 1; }

# ---------------------------------------------------------------------------------------------
# The target's URL: wss:// (trusting the run's dev CA) for *_tls targets, else ws://.
url_args() {
    case $1 in
    *_tls) echo "--url wss://127.0.0.1:$TARGET_PORT/bench?$AFFINITY_PARAM=r{i} --ca $CERTS/dev-ca.pem --sni localhost" ;;
    *) echo "--url ws://127.0.0.1:$TARGET_PORT/bench?$AFFINITY_PARAM=r{i}" ;;
    esac
}

# loadgen TARGET SCENARIO ARGS...: one JSON line appended to results.jsonl.
loadgen() {
    local target=$1
    shift
    local line
    # shellcheck disable=SC2046  # url_args is words without blanks or globs in them
    line=$(taskset -c "$LOAD_CORE" "$LOADGEN" --target "$target" --pids "$TARGET_PIDS" \
        $(url_args "$target") --clk-tck "$CLK_TCK" "$@" \
        2>>"$WORK/loadgen.log") || line="{\"target\":\"$target\",\"scenario\":\"$1\",\"error\":\"load generator failed\"}"
    printf '%s\n' "$line" >>"$RESULTS"
    printf '   %s\n' "$line" >&2
}

# tls_check TARGET: does the target resume a TLS 1.3 session, and how many NewSessionTicket
# messages does it send per handshake? Two `openssl s_client` connections (-sess_out, then
# -sess_in); one JSON line. The load generator never offers a session (resumption disabled), so
# this checks the server side only. No ticket after a TLS 1.3 handshake = nothing to resume with. The request is malformed on purpose: the proxy answers 400
# and closes by itself, without marking a backend as failed. Run after the measurements.
tls_check() {
    local target=$1 sess="$WORK/$1-session.pem" first second tickets resumed
    command -v openssl >/dev/null || { log "no openssl: resumption not checked"; return 0; }
    local req='not-http\r\n\r\n'
    rm -f "$sess"
    # shellcheck disable=SC2059  # the request is the format, on purpose
    first=$(printf "$req" | timeout 10 openssl s_client -connect "127.0.0.1:$TARGET_PORT" \
        -servername localhost -CAfile "$CERTS/dev-ca.pem" -tls1_3 -msg -ign_eof \
        -sess_out "$sess" 2>&1) || true
    tickets=$(printf '%s\n' "$first" | grep -c '^<<< .*NewSessionTicket' || true)
    resumed=null
    if [ "${tickets:-0}" = 0 ] && grep -q '^New, TLSv1.3' <<<"$first"; then
        resumed=false
    elif [ -s "$sess" ]; then
        # shellcheck disable=SC2059
        second=$(printf "$req" | timeout 10 openssl s_client -connect "127.0.0.1:$TARGET_PORT" \
            -servername localhost -CAfile "$CERTS/dev-ca.pem" -tls1_3 -ign_eof \
            -sess_in "$sess" 2>&1) || true
        if grep -q '^Reused,' <<<"$second"; then
            resumed=true
        elif grep -q '^New,' <<<"$second"; then
            resumed=false
        fi
    fi
    printf '{"target":"%s","scenario":"tls_check","tls":true,"server_resumes":%s,"tickets_per_handshake":%s}\n' \
        "$target" "$resumed" "${tickets:-0}" | tee -a "$RESULTS" | sed 's/^/   /' >&2
}

# start_target TARGET: start it, then a few echoes so lazily-initialised state is not counted
# in RSS per session (IDLE_WARMUP=0: counted).
start_target() {
    "start_$1" || return 1
    if [ "$IDLE_WARMUP" != 0 ]; then
        # shellcheck disable=SC2046
        taskset -c "$LOAD_CORE" "$LOADGEN" --deadline 30 $(url_args "$1") \
            echo --conns 4 --size 64 --warmup 0.2 --duration 0.5 >/dev/null 2>>"$WORK/loadgen.log" || true
    fi
}

# settle: after a scenario that held thousands of sessions, wait (at most 30 s) until the
# proxy's processes hold at most 200 descriptors again, so the next scenario does not measure the
# proxy still closing them. Direct (no proxy pids) waits 2 s.
settle() {
    local i pid n
    if [ -z "$TARGET_PIDS" ]; then sleep 2; return 0; fi
    for i in $(seq 300); do
        n=0
        for pid in ${TARGET_PIDS//,/ }; do
            n=$((n + $(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)))
        done
        [ "$n" -le 200 ] && return 0
        sleep 0.1
    done
    log "the proxy still holds $n descriptors 30 s after the sessions closed"
}

# wants LIST WORD: true when WORD is one of LIST's words.
wants() { case " $1 " in *" $2 "*) return 0 ;; esac; return 1; }

set -f   # the {i} in URLs and the word lists must not be globbed
for target in $TARGETS; do
    log "target $target"
    scenarios=$SCENARIOS
    sizes=$ECHO_SIZES
    case $target in
    *_tls)
        scenarios=
        for s in $SCENARIOS; do wants "$TLS_SCENARIOS" "$s" && scenarios+=" $s"; done
        sizes=$TLS_ECHO_SIZES
        ;;
    wsedge_nometrics)
        scenarios=
        for s in $SCENARIOS; do wants "$NOMETRICS_SCENARIOS" "$s" && scenarios+=" $s"; done
        ;;
    esac
    if ! start_target "$target"; then
        printf '{"target":"%s","error":"did not start"}\n' "$target" >>"$RESULTS"
        continue
    fi
    # In SCENARIOS order. idle and chat measure RSS per session, so each gets a fresh process:
    # buffers freed by earlier phases would otherwise hide the cost of a session.
    fresh=1
    for scenario in $scenarios; do
        case $scenario in
        idle | chat)
            if [ "$fresh" = 0 ] && [ -n "$TARGET_MAIN" ]; then
                stop_pid "$TARGET_MAIN"
                sleep 1
                if ! start_target "$target"; then
                    printf '{"target":"%s","scenario":"%s","error":"did not restart"}\n' \
                        "$target" "$scenario" >>"$RESULTS"
                    continue 2
                fi
            fi
            ;;
        esac
        fresh=0
        case $scenario in
        idle)
            loadgen "$target" --deadline 120 idle --count "$IDLE_SESSIONS"
            settle
            ;;
        chat)
            # Opening 9,000 sessions, CHAT_SECONDS of traffic, 5 s for the last echoes.
            loadgen "$target" --deadline $((CHAT_SECONDS + 150)) chat --sessions "$CHAT_SESSIONS" \
                --seconds "$CHAT_SECONDS" --size "$CHAT_SIZE"
            settle   # the proxy closes 9,000 sessions
            ;;
        upgrade_latency_held)
            loadgen "$target" --deadline 240 upgrade-latency --held "$IDLE_SESSIONS" \
                --count "$HELD_UPGRADES" --concurrency "$HELD_CONCURRENCY"
            settle
            ;;
        echo)
            for size in $sizes; do
                loadgen "$target" --deadline $((DURATION + WARMUP + 30)) echo --conns "$CONNS" \
                    --size "$size" --warmup "$WARMUP" --duration "$DURATION"
            done
            ;;
        pipeline)
            loadgen "$target" --deadline $((DURATION + WARMUP + 30)) pipeline --conns "$CONNS" \
                --size 64 --depth "$PIPELINE_DEPTH" --warmup "$WARMUP" --duration "$DURATION"
            ;;
        upgrades)
            loadgen "$target" --deadline 120 upgrades --count "$UPGRADES" --concurrency "$CONNS"
            ;;
        *) log "unknown scenario $scenario (idle chat upgrade_latency_held echo pipeline upgrades)" ;;
        esac
    done
    case $target in *_tls) tls_check "$target" ;; esac
    if [ -n "$TARGET_MAIN" ]; then stop_pid "$TARGET_MAIN"; fi
    sleep 1
done
set +f

# ---------------------------------------------------------------------------------------------
{
    echo "# wsedge load benchmark, $STAMP"
    echo
    echo "$(nproc) cores; proxy on core $PROXY_CORE, load generator and $BACKENDS echo backends on core $LOAD_CORE;"
    echo "$CONNS connections, ${DURATION}s measured after ${WARMUP}s warm-up; pipeline depth $PIPELINE_DEPTH;"
    echo "$UPGRADES upgrades; $IDLE_SESSIONS idle sessions; chat: $CHAT_SESSIONS sessions × 1 msg/s × ${CHAT_SECONDS}s of $CHAT_SIZE B;"
    echo "upgrade latency: $HELD_UPGRADES upgrades, $HELD_CONCURRENCY at a time, with nothing then $IDLE_SESSIONS sessions held."
    echo "$("$NGINX" -v 2>&1 | tr -d '\n'); $("$HAPROXY" -v 2>/dev/null | head -1)."
    echo "Scenarios: $SCENARIOS (TLS targets: $TLS_SCENARIOS, echo sizes $TLS_ECHO_SIZES)."
    echo "Load average (1/5/15 min) at start: $LOADAVG_START; at end: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    python3 "$ROOT/benches/load/report.py" "$RESULTS"
} >"$OUT/results.md"
cp "$OUT/results.md" "$ROOT/bench-results/latest.md"
cat "$OUT/results.md"
