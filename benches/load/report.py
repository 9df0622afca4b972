#!/usr/bin/env python3
"""Renders results.jsonl (one JSON line per target and scenario, from examples/loadgen.rs) as
markdown tables: absolute figures per target, then wsedge's ratios to nginx, HAProxy and direct;
then the TLS 1.3 targets (wss://, full handshakes) with wsedge_tls's ratios to nginx_tls and
haproxy_tls.

Lower is better for latency, CPU and RSS; higher is better for rates. A new scenario (TLS
handshakes, metrics on/off) is one more entry in ROWS.
"""
import json
import sys

TARGETS = ["direct", "wsedge", "wsedge_nometrics", "nginx", "haproxy"]
TLS_TARGETS = ["wsedge_tls", "nginx_tls", "haproxy_tls"]

# (label, selector on a result line, field, format)
ROWS = [
    ("echo 64 B: msgs/s", ("echo", 64), "msgs_per_s", "{:,.0f}"),
    ("echo 64 B: p50 latency (µs)", ("echo", 64), "p50_us", "{:,.0f}"),
    ("echo 64 B: p99 latency (µs)", ("echo", 64), "p99_us", "{:,.0f}"),
    ("echo 64 B: proxy CPU per msg (µs)", ("echo", 64), "cpu_us_per_msg", "{:.2f}"),
    ("echo 64 B: of which kernel (µs)", ("echo", 64), "sys_us_per_msg", "{:.2f}"),
    ("echo 16 KiB: msgs/s", ("echo", 16384), "msgs_per_s", "{:,.0f}"),
    ("echo 16 KiB: p50 latency (µs)", ("echo", 16384), "p50_us", "{:,.0f}"),
    ("echo 16 KiB: p99 latency (µs)", ("echo", 16384), "p99_us", "{:,.0f}"),
    ("echo 16 KiB: proxy CPU per msg (µs)", ("echo", 16384), "cpu_us_per_msg", "{:.2f}"),
    ("echo 16 KiB: of which kernel (µs)", ("echo", 16384), "sys_us_per_msg", "{:.2f}"),
    ("pipelined 64 B: msgs/s", ("pipeline", 64), "msgs_per_s", "{:,.0f}"),
    ("pipelined 64 B: proxy CPU per msg (µs)", ("pipeline", 64), "cpu_us_per_msg", "{:.2f}"),
    ("upgrades/s", ("upgrades", None), "upgrades_per_s", "{:,.0f}"),
    ("proxy CPU per upgrade (µs)", ("upgrades", None), "cpu_us_per_upgrade", "{:.1f}"),
    ("proxy CPU per upgrade: of which kernel (µs)", ("upgrades", None), "sys_us_per_upgrade", "{:.1f}"),
    ("proxy RSS per idle session (KiB)", ("idle", None), "rss_kib_per_session", "{:.2f}"),
    ("idle sessions held", ("idle", None), "held", "{:,.0f}"),
]

# The TLS targets: TLS 1.3, ECDSA P-256, resumption off on both sides (every upgrade is a full
# handshake). Rows without a figure for any TLS target are left out (e.g. idle unless asked for).
TLS_ROWS = [
    ("wss:// echo 64 B: msgs/s", ("echo", 64), "msgs_per_s", "{:,.0f}"),
    ("wss:// echo 64 B: p50 latency (µs)", ("echo", 64), "p50_us", "{:,.0f}"),
    ("wss:// echo 64 B: p99 latency (µs)", ("echo", 64), "p99_us", "{:,.0f}"),
    ("wss:// echo 64 B: proxy CPU per msg (µs)", ("echo", 64), "cpu_us_per_msg", "{:.2f}"),
    ("wss:// echo 16 KiB: msgs/s", ("echo", 16384), "msgs_per_s", "{:,.0f}"),
    ("wss:// echo 16 KiB: proxy CPU per msg (µs)", ("echo", 16384), "cpu_us_per_msg", "{:.2f}"),
    ("wss:// pipelined 64 B: msgs/s", ("pipeline", 64), "msgs_per_s", "{:,.0f}"),
    ("wss:// pipelined 64 B: proxy CPU per msg (µs)", ("pipeline", 64), "cpu_us_per_msg", "{:.2f}"),
    ("full TLS handshakes + upgrade/s", ("upgrades", None), "upgrades_per_s", "{:,.0f}"),
    (
        "proxy CPU per TLS handshake + upgrade (µs)",
        ("upgrades", None),
        "cpu_us_per_upgrade",
        "{:.1f}",
    ),
    (
        "proxy CPU of the TLS handshake alone (TLS − plain upgrade, µs)",
        ("upgrades", None),
        "tls_handshake_cpu_us",
        "{:.1f}",
    ),
    ("proxy RSS per idle wss:// session (KiB)", ("idle", None), "rss_kib_per_session", "{:.2f}"),
    # From run.sh's `openssl s_client -sess_out` / `-sess_in` check of each TLS target.
    ("server resumes a TLS session (openssl -sess_in)", ("tls_check", None), "server_resumes", "{}"),
    ("NewSessionTicket messages per handshake", ("tls_check", None), "tickets_per_handshake", "{}"),
]


def load(path):
    by = {}
    errors = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            t = r.get("target", "?")
            if "error" in r:
                scen = f" {r['scenario']}" if r.get("scenario") else ""
                errors.append(f"{t}{scen}: {r['error']}")
                continue
            if r.get("scenario") == "idle" and r.get("rss_bytes_per_session") is not None:
                r["rss_kib_per_session"] = r["rss_bytes_per_session"] / 1024
            key = (r["scenario"], r.get("size"))
            by[(t, key)] = r
            for k in ("errors", "failed"):
                if r.get(k):
                    errors.append(f"{t} {r['scenario']} {r.get('size') or ''}: {k}={r[k]}")
            if r.get("scenario") in ("echo", "pipeline") and not r.get("msgs"):
                errors.append(f"{t} {r['scenario']} {r.get('size')}: no message echoed")
            if r.get("scenario") == "tls_check" and r.get("server_resumes") is not False:
                errors.append(
                    f"{t}: the server resumed a TLS session (or the check failed): "
                    f"server_resumes={r.get('server_resumes')}"
                )
            if r.get("scenario") == "idle" and r.get("sampled_alive", 0) < r.get("sampled", 0):
                errors.append(
                    f"{t} idle: only {r['sampled_alive']} of {r['sampled']} sampled sessions "
                    "answered: the RSS figure is not valid"
                )
            if r.get("first_error"):
                errors.append(f"{t} {r['scenario']}: first error: {r['first_error']}")
            # A TLS figure is only about full handshakes when none was resumed.
            for k in ("tls_resumed", "tls_not_1_3"):
                if r.get(k):
                    errors.append(f"{t} {r['scenario']}: {k}={r[k]}: not only full TLS 1.3 handshakes")
    return by, errors


def value(by, target, sel, field):
    if field == "tls_handshake_cpu_us":
        # Derived: CPU per TLS handshake + upgrade minus CPU per plain upgrade of the same proxy
        # (wsedge_tls - wsedge, ...), i.e. what the full TLS handshake alone costs the proxy.
        tls = value(by, target, sel, "cpu_us_per_upgrade")
        plain = value(by, target.removesuffix("_tls"), sel, "cpu_us_per_upgrade")
        return None if tls is None or plain is None else tls - plain
    r = by.get((target, sel))
    return None if r is None else r.get(field)


def fmt(v, f):
    if isinstance(v, bool):
        return "yes" if v else "no"
    return "n/a" if v is None else f.format(v)


def ratio(a, b):
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    if not numbers or b == 0:
        return "n/a"
    return f"{a / b:.2f}×"


def main():
    by, errors = load(sys.argv[1])
    # The plain table, unless only TLS targets were run.
    if any(t in TARGETS for (t, _) in by) or not any(t in TLS_TARGETS for (t, _) in by):
        head = TARGETS + ["wsedge/nginx", "wsedge/haproxy", "wsedge/direct", "metrics on/off"]
        print("| figure | " + " | ".join(head) + " |")
        print("|---" * (len(head) + 1) + "|")
        for label, sel, field, f in ROWS:
            vals = [value(by, t, sel, field) for t in TARGETS]
            if all(v is None for v in vals):
                continue  # a scenario left out (SCENARIOS, ECHO_SIZES)
            w, d, n, h = (
                value(by, t, sel, field) for t in ("wsedge", "direct", "nginx", "haproxy")
            )
            off = value(by, "wsedge_nometrics", sel, field)
            cells = [fmt(v, f) for v in vals]
            cells += [ratio(w, n), ratio(w, h), ratio(w, d), ratio(w, off)]
            print(f"| {label} | " + " | ".join(cells) + " |")
        print()
    tls_rows = [
        row
        for row in TLS_ROWS
        if any(value(by, t, row[1], row[2]) is not None for t in TLS_TARGETS)
    ]
    if tls_rows:
        print("TLS 1.3 over wss:// (ECDSA P-256 certificate, session resumption off on both sides:")
        print("every connection is a full handshake):")
        print()
        head = TLS_TARGETS + ["wsedge_tls/nginx_tls", "wsedge_tls/haproxy_tls"]
        print("| figure | " + " | ".join(head) + " |")
        print("|---" * (len(head) + 1) + "|")
        for label, sel, field, f in tls_rows:
            vals = [value(by, t, sel, field) for t in TLS_TARGETS]
            w, n, h = vals
            if sel[0] == "tls_check":
                cells = [fmt(v, f) for v in vals] + ["", ""]  # facts, not figures to divide
            else:
                cells = [fmt(v, f) for v in vals] + [ratio(w, n), ratio(w, h)]
            print(f"| {label} | " + " | ".join(cells) + " |")
        suites = sorted(
            {
                f"{r.get('tls_suite')} / {r.get('tls_group')}"
                for (t, _), r in by.items()
                if t in TLS_TARGETS and r.get("tls_suite")
            }
        )
        if suites:
            print()
            print("Negotiated (cipher suite / key exchange): " + "; ".join(suites) + ".")
        print()
    print("CPU is the proxy's utime+stime from /proc over the measured window (direct: no proxy).")
    print("RSS per session = (VmRSS with every session held - VmRSS before) / sessions held.")
    if errors:
        print()
        print("Problems seen:")
        for e in errors:
            print(f"- {e}")


if __name__ == "__main__":
    main()
