#!/usr/bin/env bash
# Where a ws:// upgrade's CPU goes, wsedge beside nginx: `perf record` (cpu-clock samples, call
# graphs) on the proxy alone on core 1 while the load generator on core 0 makes UPGRADES
# upgrades (TCP connect + upgrade + close handshake, 32 at a time) against one `wsedge echo`
# backend. Prints, per proxy, the user/kernel split of the samples and the top kernel and user
# symbols (self time, % of the proxy's samples), so the kernel floor and what is above it show.
# Usage (root, for kernel symbols): benches/upgrade_profile.sh WSEDGE LOADGEN [OUT_DIR]
# Needs `perf` (Debian linux-perf) and nginx. All traffic on loopback; everything started here is
# stopped on exit.
set -euo pipefail
WSEDGE=$1
LOADGEN=$2
OUT=${3:-bench-results/profile}
UPGRADES=${UPGRADES:-10000}
LOG=${LOG:-warn}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
source "$(dirname "$0")/lib.sh"
ulimit -n "$(ulimit -Hn)"

start_echo taskset -c 0

# profile NAME PID PORT: warm up, then record the proxy's samples over UPGRADES upgrades.
profile() {
    local name=$1 pid=$2 port=$3
    local url="ws://127.0.0.1:$port/bench?room=r{i}"
    taskset -c 0 "$LOADGEN" --url "$url" --deadline 60 upgrades --count 500 --concurrency 32 >/dev/null
    perf record -q -F 4999 -g -p "$pid" -o "$OUT/perf-$name.data" -- \
        taskset -c 0 "$LOADGEN" --url "$url" --pids "$pid" --deadline 300 upgrades \
        --count "$UPGRADES" --concurrency 32 >"$OUT/load-$name.json" 2>/dev/null
    perf report -i "$OUT/perf-$name.data" --no-children --sort dso,sym --stdio --percent-limit 0.7 \
        -g none 2>/dev/null | grep -v '^#' | grep -v '^$' >"$OUT/top-$name.txt" || true
    python3 - "$name" "$OUT/perf-$name.data" "$OUT/load-$name.json" >"$OUT/split-$name.json" <<'PY'
import json, re, subprocess, sys
name, data, load = sys.argv[1:4]
def report(children):
    return subprocess.run(["perf", "report", "-i", data, "--children" if children else "--no-children",
                           "--sort", "sym", "--stdio", "-g", "none", "--percent-limit", "0"],
                          capture_output=True, text=True).stdout
# Self time by perf's own [k] / [.] mark: kernel vs user samples.
kernel = user = 0.0
for line in report(False).splitlines():
    parts = line.split()
    if len(parts) >= 3 and parts[0].endswith("%"):
        if parts[1] == "[k]":
            kernel += float(parts[0][:-1])
        else:
            user += float(parts[0][:-1])
cpu = json.load(open(load))
per = cpu["cpu_us_per_upgrade"] / 100.0
# Inclusive (children) time of each syscall entry point, as µs per upgrade.
syscalls = {}
for line in report(True).splitlines():
    m = re.match(r"\s*([0-9.]+)%\s+[0-9.]+%\s+\[k\] __x64_sys_(\w+)$", line)
    if m:
        syscalls[m.group(2)] = round(float(m.group(1)) * per, 1)
print(json.dumps({"proxy": name, "cpu_us_per_upgrade": round(cpu["cpu_us_per_upgrade"], 1),
                  "user_us": round(user * per, 1), "kernel_us": round(kernel * per, 1),
                  "sys_us_from_proc": round(cpu["sys_us_per_upgrade"], 1),
                  "upgrades_per_s": round(cpu["upgrades_per_s"]), "syscalls_us": syscalls}))
PY
    cat "$OUT/split-$name.json"
    echo "top symbols of $name (self, % of its samples): $OUT/top-$name.txt"
}

# wsedge: one tokio worker, pinned like the load benchmark's proxy.
PORT=$(free_port)
bench_routes "$WORK/routes.yaml" "$PORT"
RUST_LOG=$LOG taskset -c 1 "$WSEDGE" run --config "$WORK/routes.yaml" >"$WORK/wsedge.log" 2>&1 &
WPID=$!
PIDS+=($WPID)
wait_port "$PORT"
profile wsedge "$WPID" "$PORT"
kill "$WPID"

# nginx: one worker, the load benchmark's proxy settings.
NPORT=$(free_port)
start_nginx "$WORK/nginx" "$NPORT" taskset -c 1
profile nginx "$NWORKER" "$NPORT"

# One table: µs per upgrade, wsedge beside nginx, user, kernel and each syscall's inclusive time.
python3 - "$OUT/split-wsedge.json" "$OUT/split-nginx.json" <<'PY' | tee "$OUT/table.md"
import json, sys
w, n = (json.load(open(p)) for p in sys.argv[1:3])
def row(label, a, b):
    ratio = f"{a / b:.2f}×" if b else ""
    print(f"| {label} | {a:.1f} | {b:.1f} | {ratio} |")
print("| µs per upgrade (perf samples × CPU from /proc) | wsedge | nginx | wsedge / nginx |")
print("|---|---|---|---|")
row("CPU (user + kernel)", w["cpu_us_per_upgrade"], n["cpu_us_per_upgrade"])
row("user", w["user_us"], n["user_us"])
row("kernel", w["kernel_us"], n["kernel_us"])
names = sorted(set(w["syscalls_us"]) | set(n["syscalls_us"]),
               key=lambda k: -(w["syscalls_us"].get(k, 0) + n["syscalls_us"].get(k, 0)))
for k in names:
    a, b = w["syscalls_us"].get(k, 0.0), n["syscalls_us"].get(k, 0.0)
    if a + b >= 0.5:
        row(f"kernel in `{k}` (inclusive)", a, b)
print(f"\nupgrades/s (load generator on core 0): wsedge {w['upgrades_per_s']}, nginx {n['upgrades_per_s']}")
PY
