#!/usr/bin/env bash
# System calls per ws:// upgrade (TCP connect + upgrade + close handshake), wsedge beside nginx:
# `strace -f -c` attached to the proxy (all its threads) over N upgrades made one at a time,
# after a warm-up it does not see. Prints one markdown table: calls per upgrade for each
# syscall, wsedge's and nginx's side by side (errors, e.g. EAGAIN, in brackets).
# Usage: upgrade_syscalls.sh WSEDGE_BINARY LOADGEN_BINARY
# N (500) upgrades, WARM (50) before; NGINX=0 leaves nginx out; wsedge runs with WORKERS (1)
# tokio workers like upgrade_cost.sh (the proxy of the load benchmark has one core), nginx with
# one worker process (benches/load/run.sh's settings, one backend). KEEP=DIR keeps the raw strace
# summaries there. Counts do not depend on the machine's load; timings under strace mean nothing.
# All traffic on loopback; every process started here is stopped on exit.
set -euo pipefail
WSEDGE=$1
LOADGEN=$2
N=${N:-500}
WARM=${WARM:-50}
NGINX_ON=${NGINX:-1}
source "$(dirname "$0")/lib.sh"
ulimit -n "$(ulimit -Hn)"

# measure NAME PID PORT: warm up, then strace PID's threads over N sequential upgrades.
measure() {
    local name=$1 pid=$2 port=$3 url spid
    url="ws://127.0.0.1:$port/bench?room=r{i}"
    "$LOADGEN" --url "$url" --source-ips 1 --deadline 120 upgrades --count "$WARM" --concurrency 1 >/dev/null
    strace -f -c -o "$WORK/$name.strace" -p "$pid" 2>"$WORK/$name.strace.err" &
    spid=$!
    # strace attaches every thread before the first counted upgrade.
    for _ in $(seq 100); do
        grep -q "Process $pid attached" "$WORK/$name.strace.err" 2>/dev/null && break
        sleep 0.05
    done
    sleep 0.5
    "$LOADGEN" --url "$url" --source-ips 1 --deadline 300 upgrades --count "$N" --concurrency 1 >"$WORK/$name.json"
    sleep 0.2
    kill -INT "$spid"
    wait "$spid" 2>/dev/null || true
    local ok
    ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$WORK/$name.json")
    if [ "$ok" -ne "$N" ]; then
        echo "$name: only $ok of $N upgrades succeeded" >&2
        exit 1
    fi
    if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$WORK/$name.strace" "$KEEP/$name.strace"; fi
}

start_echo
PORT=$(free_port)
bench_routes "$WORK/routes.yaml" "$PORT"
RUST_LOG=${LOG:-warn} TOKIO_WORKER_THREADS=${WORKERS:-1} "$WSEDGE" run --config "$WORK/routes.yaml" >"$WORK/run.log" 2>&1 &
WPID=$!
PIDS+=($WPID)
wait_port "$PORT"
measure wsedge "$WPID" "$PORT"
kill "$WPID"

COLUMNS=(wsedge)
if [ "$NGINX_ON" = 1 ]; then
    NPORT=$(free_port)
    start_nginx "$WORK/nginx" "$NPORT"
    measure nginx "$NWORKER" "$NPORT"
    COLUMNS+=(nginx)
fi

python3 - "$N" "$WORK" "${COLUMNS[@]}" <<'PY'
import sys
n, work, names = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
tables = {}
for name in names:
    calls = {}
    for line in open(f"{work}/{name}.strace"):
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(parts) < 5 or not parts[3].isdigit() or parts[-1] == "total":
            continue
        errors = int(parts[4]) if len(parts) == 6 else 0
        calls[parts[-1]] = (int(parts[3]), errors)
    tables[name] = calls
rows = sorted(set().union(*tables.values()),
              key=lambda s: -max(tables[t].get(s, (0, 0))[0] for t in names))
def cell(c):
    if not c:
        return ""
    calls, errors = c
    s = f"{calls / n:.2f}"
    return s + (f" ({errors / n:.2f})" if errors else "")
print(f"syscalls per upgrade, {n} upgrades one at a time (errors in brackets)\n")
print("| syscall | " + " | ".join(names) + " |")
print("|---|" + "---|" * len(names))
for s in rows:
    vals = [tables[t].get(s) for t in names]
    if all(v is None or v[0] < n * 0.05 for v in vals):
        continue  # start-up and housekeeping, not per upgrade
    print(f"| {s} | " + " | ".join(cell(v) for v in vals) + " |")
totals = [sum(c for c, _ in tables[t].values()) / n for t in names]
print("| **total** | " + " | ".join(f"**{x:.1f}**" for x in totals) + " |")
PY
