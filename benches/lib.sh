# Shared by the shell benchmarks and tests/browser/auth_bearer.sh (sourced after
# `set -euo pipefail`): a scratch directory WORK and the processes in PIDS, both gone on exit;
# `free_port` (a loopback port the OS picks) and `wait_port PORT` (until it accepts, 20 s at most).
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 400); do
        (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "port $1 never opened" >&2
    return 1
}

# start_echo [CMD...]: a `wsedge echo` backend ($WSEDGE) on a free port, BPORT, run under CMD
# (e.g. `taskset -c 0`) when given.
start_echo() {
    BPORT=$(free_port)
    "$@" "$WSEDGE" echo --listen "127.0.0.1:$BPORT" --id b1 >"$WORK/echo.log" 2>&1 &
    PIDS+=($!)
    wait_port "$BPORT"
}

# bench_routes FILE PORT [YAML]: the one-route config the upgrade benchmarks give wsedge (a
# listener on PORT, affinity on the `room` query parameter, the echo backend on BPORT); YAML,
# indented as a route's field, is added to the route.
bench_routes() {
    cat >"$1" <<YAML
listeners:
  - {name: edge, bind: "127.0.0.1:$2", max_pending_per_ip: 0}
routes:
  - name: bench
    match: {host: "*", path_prefix: /}
    affinity: {key: "query:room"}
${3:-}
    backends:
      - {name: b1, url: "ws://127.0.0.1:$BPORT"}
YAML
}

# start_nginx DIR PORT [CMD...]: nginx (NGINX_BIN) with one worker in front of the echo backend
# on BPORT, benches/load/run.sh's proxy settings, listening on PORT, run under CMD when given.
# Sets NMAIN (the master) and NWORKER (the worker, whose CPU is the proxy's).
start_nginx() {
    local d=$1 port=$2
    shift 2
    mkdir -p "$d/tmp"
    cat >"$d/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $(ulimit -Hn);
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 10000; use epoll; }
http {
  access_log off;
  client_body_temp_path $d/tmp/body; proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fcgi; uwsgi_temp_path $d/tmp/uwsgi; scgi_temp_path $d/tmp/scgi;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  upstream echo {
    hash \$arg_room consistent;
    server 127.0.0.1:$BPORT;
  }
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_set_header Host \$host;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }
  }
}
CONF
    "$@" "${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}" -p "$d" -c "$d/nginx.conf" \
        -g 'daemon off;' >"$d/stdout.log" 2>&1 &
    NMAIN=$!
    PIDS+=($NMAIN)
    wait_port "$port"
    NWORKER=
    for _ in $(seq 50); do
        NWORKER=$(pgrep -P "$NMAIN" | head -1 || true)
        [ -n "$NWORKER" ] && break
        sleep 0.1
    done
}
