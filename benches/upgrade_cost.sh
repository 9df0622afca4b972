#!/usr/bin/env bash
# Cost of one ws:// upgrade through wsedge (TCP connect + upgrade + 1 echo + close handshake):
#  - user-space instructions per upgrade, counted by callgrind (deterministic: the same binary and
#    inputs give the same count whatever else the machine does), over COUNT upgrades after WARM;
#  - CPU per upgrade (utime + stime, and stime alone) over CPU_COUNT upgrades without valgrind.
# Usage: upgrade_cost.sh WSEDGE_BINARY LOADGEN_BINARY [label]
# As CI's guard: BUDGET=N upgrade_cost.sh ... counts instructions only (no CPU run) and fails when
# an upgrade costs more than N instructions (benches/README.md has two budgets: access lines on,
# LOG=info, and off, LOG=warn; CI runs both).
# LOG sets wsedge's RUST_LOG (default `warn`: access lines off; `info` is what operators run,
# one access line per session). KEEP=DIR keeps the callgrind dump there (callgrind_annotate it).
# AUTH=es256 MINT=path/to/examples/mint_jwt: the route verifies an ES256 JWT on every upgrade
# (auth.jwt, jwks_file, token in the query), for the auth-on row beside auth-off.
# All traffic on loopback; every process started here is stopped on exit.
set -euo pipefail
WSEDGE=$1
LOADGEN=$2
LABEL=${3:-wsedge}
COUNT=${COUNT:-200}
WARM=${WARM:-50}
CPU_COUNT=${CPU_COUNT:-3000}
LOG=${LOG:-warn}
source "$(dirname "$0")/lib.sh"
ulimit -n "$(ulimit -Hn)"

start_echo

AUTH_YAML=
TOKEN_QUERY=
if [ "${AUTH:-}" = es256 ]; then
    "${MINT:?AUTH=es256 needs MINT=path/to/mint_jwt}" "$WORK"
    AUTH_YAML="    auth: {jwt: {jwks_file: $WORK/jwks.json, algorithms: [ES256], issuer: https://issuer.test, audiences: [chat], token_from: [\"query:access_token\"]}}"
    TOKEN_QUERY="&access_token=$(cat "$WORK/valid.jwt")"
elif [ -n "${AUTH:-}" ]; then
    echo "AUTH=$AUTH: only es256 is known" >&2
    exit 2
fi

routes() { bench_routes "$WORK/routes-$1.yaml" "$1" "$AUTH_YAML"; }

# 1. Instructions (callgrind), one tokio worker like the benchmark's pinned proxy.
PORT=$(free_port)
routes "$PORT"
RUST_LOG=$LOG TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" \
    "$WSEDGE" run --config "$WORK/routes-$PORT.yaml" >"$WORK/cg-run.log" 2>&1 &
VPID=$!
PIDS+=($VPID)
wait_port "$PORT"
URL="ws://127.0.0.1:$PORT/bench?room=r{i}$TOKEN_QUERY"
"$LOADGEN" --url "$URL" --source-ips 1 --deadline 300 upgrades --count "$WARM" --concurrency 1 >/dev/null
callgrind_control -z "$VPID" >/dev/null
"$LOADGEN" --url "$URL" --source-ips 1 --deadline 300 upgrades --count "$COUNT" --concurrency 1 >"$WORK/cg-load.json"
callgrind_control -d "$VPID" >/dev/null
sleep 1
dump=$(ls -t "$WORK"/cg.* | head -1)
total=$(grep -E '^(summary|totals):' "$dump" | head -1 | awk '{print $2}')
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$dump" "$KEEP/callgrind.out.$LABEL"; fi
ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' "$WORK/cg-load.json")
kill "$VPID" 2>/dev/null || true
if [ "$ok" -ne "$COUNT" ]; then
    echo "only $ok of $COUNT upgrades succeeded under callgrind" >&2
    exit 1
fi

if [ -n "${BUDGET:-}" ]; then
    per=$((total / ok))
    echo "{\"label\": \"$LABEL\", \"log\": \"$LOG\", \"instructions_per_upgrade\": $per, \"budget\": $BUDGET}"
    if [ "$per" -gt "$BUDGET" ]; then
        echo "an upgrade costs $per instructions, above the budget of $BUDGET with RUST_LOG=$LOG (benches/README.md):" \
            "find what the change added to the upgrade path, or raise the budget in a commit that says why" >&2
        exit 1
    fi
    exit 0
fi

# 2. CPU per upgrade, no valgrind.
PORT=$(free_port)
routes "$PORT"
RUST_LOG=$LOG TOKIO_WORKER_THREADS=1 "$WSEDGE" run --config "$WORK/routes-$PORT.yaml" >"$WORK/run.log" 2>&1 &
RPID=$!
PIDS+=($RPID)
wait_port "$PORT"
URL="ws://127.0.0.1:$PORT/bench?room=r{i}$TOKEN_QUERY"
"$LOADGEN" --url "$URL" --deadline 60 upgrades --count 200 --concurrency 8 >/dev/null
"$LOADGEN" --url "$URL" --pids "$RPID" --deadline 300 upgrades --count "$CPU_COUNT" --concurrency 8 >"$WORK/cpu.json"
python3 - "$LABEL" "$total" "$ok" "$WORK/cpu.json" <<'PY'
import json, sys
label, total, ok, cpu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.load(open(sys.argv[4]))
print(json.dumps({
    "label": label,
    "instructions_per_upgrade": round(total / ok),
    "callgrind_upgrades": ok,
    "cpu_us_per_upgrade": round(cpu["cpu_us_per_upgrade"], 1),
    "user_us_per_upgrade": round(cpu["cpu_us_per_upgrade"] - cpu["sys_us_per_upgrade"], 1),
    "sys_us_per_upgrade": round(cpu["sys_us_per_upgrade"], 1),
    "upgrades_per_s": round(cpu["upgrades_per_s"]),
    "failed": cpu["failed"],
}))
PY
