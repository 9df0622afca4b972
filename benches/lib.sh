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
