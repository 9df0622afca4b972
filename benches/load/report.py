#!/usr/bin/env python3
"""Renders results.jsonl (one JSON line per target and scenario, from examples/loadgen.rs) as
markdown tables: first the summary of issue 21's figures (plain and TLS side by side, one row per
figure, wsedge's ratios to nginx and HAProxy: the table for benches/README.md), then every figure
per plain target with wsedge's ratios to nginx, HAProxy and direct, then the TLS 1.3 targets
(wss://, full handshakes) with wsedge_tls's ratios to nginx_tls and haproxy_tls.

Lower is better for latency, CPU and RSS; higher is better for rates. A new scenario (TLS
handshakes, metrics on/off) is one more entry in ROWS.
"""
import json
import sys

TARGETS = ["direct", "wsedge", "wsedge_nometrics", "nginx", "haproxy"]
TLS_TARGETS = ["wsedge_tls", "nginx_tls", "haproxy_tls"]

# Scenarios keyed without their message size (one line per target): the size is a knob of the
# scenario, not a figure of its own.
SIZELESS = {"idle", "upgrades", "tls_check", "chat", "upgrade_latency_held"}
CHAT = ("chat", None)
HELD = ("upgrade_latency_held", None)

# The summary: (label, plain or TLS targets, selector, field, format). Plain rows compare direct,
# nginx, haproxy, wsedge; TLS rows the *_tls targets in the same columns.
SUMMARY = [
    ("CPU per 64 B echo message (µs)", "plain", ("echo", 64), "cpu_us_per_msg", "{:.2f}"),
    ("CPU per 16 KiB echo message (µs)", "plain", ("echo", 16384), "cpu_us_per_msg", "{:.2f}"),
    ("CPU per pipelined 64 B message (µs)", "plain", ("pipeline", 64), "cpu_us_per_msg", "{:.2f}"),
    ("CPU per wss:// 64 B echo message (µs)", "tls", ("echo", 64), "cpu_us_per_msg", "{:.2f}"),
    ("CPU per full TLS handshake + upgrade (µs)", "tls", ("upgrades", None), "cpu_us_per_upgrade", "{:.1f}"),
    ("**CPU per ws:// upgrade** (TCP + upgrade + close, 32 at a time; µs)", "plain", ("upgrades", None), "cpu_us_per_upgrade", "{:.1f}"),
    ("… of which user (µs)", "plain", ("upgrades", None), "user_us_per_upgrade", "{:.1f}"),
    ("… of which kernel (µs)", "plain", ("upgrades", None), "sys_us_per_upgrade", "{:.1f}"),
    ("CPU per ws:// upgrade + 1 echo (8 at a time, nothing held; µs)", "plain", HELD, "empty_cpu_us_per_upgrade", "{:.1f}"),
    ("… of which user (µs)", "plain", HELD, "empty_user_us_per_upgrade", "{:.1f}"),
    ("**ws:// upgrades per second** (32 at a time)", "plain", ("upgrades", None), "upgrades_per_s", "{:,.0f}"),
    ("**RSS per idle ws:// session** (KiB, `idle`)", "plain", ("idle", None), "rss_kib_per_session", "{:.2f}"),
    ("RSS per idle wss:// session (KiB, `idle`, fresh process)", "tls", ("idle", None), "rss_kib_per_session", "{:.2f}"),
    ("chat: CPU per message (µs)", "plain", CHAT, "cpu_us_per_msg", "{:.2f}"),
    ("chat: … of which user (µs)", "plain", CHAT, "user_us_per_msg", "{:.2f}"),
    ("chat: … of which kernel (µs)", "plain", CHAT, "sys_us_per_msg", "{:.2f}"),
    ("chat: latency p50 (µs)", "plain", CHAT, "latency_p50_us", "{:,.0f}"),
    ("chat: latency p99 (µs)", "plain", CHAT, "latency_p99_us", "{:,.0f}"),
    ("chat: latency max (µs)", "plain", CHAT, "latency_max_us", "{:,.0f}"),
    ("chat: messages lost (must be 0)", "plain", CHAT, "lost", "{:,.0f}"),
    ("chat: proxy RSS, every session live (MiB)", "plain", CHAT, "rss_live_mib", "{:,.1f}"),
    ("chat: RSS per live session (KiB, fresh process)", "plain", CHAT, "rss_kib_per_live_session", "{:.2f}"),
    ("upgrade → 101, nothing held: p50 (µs)", "plain", HELD, "empty_to_101_p50_us", "{:,.0f}"),
    ("upgrade → 101, nothing held: p99 (µs)", "plain", HELD, "empty_to_101_p99_us", "{:,.0f}"),
    ("upgrade → 101, sessions held: p50 (µs)", "plain", HELD, "held_to_101_p50_us", "{:,.0f}"),
    ("upgrade → 101, sessions held: p99 (µs)", "plain", HELD, "held_to_101_p99_us", "{:,.0f}"),
    ("upgrade → 101, sessions held: max (µs)", "plain", HELD, "held_to_101_max_us", "{:,.0f}"),
    ("upgrade → first echo, nothing held: p99 (µs)", "plain", HELD, "empty_to_echo_p99_us", "{:,.0f}"),
    ("upgrade → first echo, sessions held: p99 (µs)", "plain", HELD, "held_to_echo_p99_us", "{:,.0f}"),
    ("upgrade → 101 p99, held ÷ nothing held", "plain", HELD, "held_over_empty_to_101_p99", "{:.2f}×"),
    ("CPU per upgrade + 1 echo, sessions held (µs)", "plain", HELD, "held_cpu_us_per_upgrade", "{:.1f}"),
]
SUMMARY_COLUMNS = ["direct", "nginx", "haproxy", "wsedge"]

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
    ("upgrade: connect → 101 p50 (µs)", ("upgrades", None), "to_101_p50_us", "{:,.0f}"),
    ("upgrade: connect → 101 p99 (µs)", ("upgrades", None), "to_101_p99_us", "{:,.0f}"),
    ("proxy CPU per upgrade (µs)", ("upgrades", None), "cpu_us_per_upgrade", "{:.1f}"),
    ("proxy CPU per upgrade: of which user (µs)", ("upgrades", None), "user_us_per_upgrade", "{:.1f}"),
    ("proxy CPU per upgrade: of which kernel (µs)", ("upgrades", None), "sys_us_per_upgrade", "{:.1f}"),
    ("proxy RSS per idle session (KiB)", ("idle", None), "rss_kib_per_session", "{:.2f}"),
    ("idle sessions held", ("idle", None), "held", "{:,.0f}"),
    ("chat: sessions live", CHAT, "held", "{:,.0f}"),
    ("chat: messages echoed", CHAT, "echoed", "{:,.0f}"),
    ("chat: messages lost", CHAT, "lost", "{:,.0f}"),
    ("chat: latency p50 (µs)", CHAT, "latency_p50_us", "{:,.0f}"),
    ("chat: latency p99 (µs)", CHAT, "latency_p99_us", "{:,.0f}"),
    ("chat: latency max (µs)", CHAT, "latency_max_us", "{:,.0f}"),
    ("chat: load generator's send lag p99 (µs)", CHAT, "send_lag_p99_us", "{:,.0f}"),
    ("chat: proxy CPU per msg (µs)", CHAT, "cpu_us_per_msg", "{:.2f}"),
    ("chat: of which user (µs)", CHAT, "user_us_per_msg", "{:.2f}"),
    ("chat: of which kernel (µs)", CHAT, "sys_us_per_msg", "{:.2f}"),
    ("chat: proxy RSS, every session live (MiB)", CHAT, "rss_live_mib", "{:,.1f}"),
    ("chat: proxy RSS per live session (KiB)", CHAT, "rss_kib_per_live_session", "{:.2f}"),
    ("upgrade latency: sessions held", HELD, "held", "{:,.0f}"),
    ("upgrade → 101, nothing held: p50 / p99 / max (µs)", HELD, "empty_to_101", "triple"),
    ("upgrade → 101, sessions held: p50 / p99 / max (µs)", HELD, "held_to_101", "triple"),
    ("upgrade → first echo, nothing held: p50 / p99 / max (µs)", HELD, "empty_to_echo", "triple"),
    ("upgrade → first echo, sessions held: p50 / p99 / max (µs)", HELD, "held_to_echo", "triple"),
    ("upgrade → 101 p99: held ÷ nothing held", HELD, "held_over_empty_to_101_p99", "{:.2f}×"),
    ("upgrade + echo: proxy CPU, nothing held (µs)", HELD, "empty_cpu_us_per_upgrade", "{:.1f}"),
    ("upgrade + echo: proxy CPU, sessions held (µs)", HELD, "held_cpu_us_per_upgrade", "{:.1f}"),
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
            derive(r)
            scen = r["scenario"]
            key = (scen, None if scen in SIZELESS else r.get("size"))
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
            if r.get("scenario") in ("idle", "upgrade_latency_held") and r.get(
                "sampled_alive", 0
            ) < r.get("sampled", 0):
                errors.append(
                    f"{t} {r['scenario']}: only {r['sampled_alive']} of {r['sampled']} sampled "
                    "held sessions answered: the hold was not real"
                )
            errors.extend(scale_problems(t, r))
            if r.get("first_error"):
                errors.append(f"{t} {r['scenario']}: first error: {r['first_error']}")
            # A TLS figure is only about full handshakes when none was resumed.
            for k in ("tls_resumed", "tls_not_1_3"):
                if r.get(k):
                    errors.append(f"{t} {r['scenario']}: {k}={r[k]}: not only full TLS 1.3 handshakes")
    return by, errors


def derive(r):
    """User CPU (utime) = total - kernel, for every figure that has both; the held/empty ratio."""
    for total, sys_, user in [
        ("cpu_us_per_msg", "sys_us_per_msg", "user_us_per_msg"),
        ("cpu_us_per_upgrade", "sys_us_per_upgrade", "user_us_per_upgrade"),
        ("empty_cpu_us_per_upgrade", "empty_sys_us_per_upgrade", "empty_user_us_per_upgrade"),
        ("held_cpu_us_per_upgrade", "held_sys_us_per_upgrade", "held_user_us_per_upgrade"),
    ]:
        if r.get(user) is None and r.get(total) is not None and r.get(sys_) is not None:
            r[user] = r[total] - r[sys_]
    e, h = r.get("empty_to_101_p99_us"), r.get("held_to_101_p99_us")
    if e and h is not None:
        r["held_over_empty_to_101_p99"] = h / e


def scale_problems(t, r):
    """What makes a chat or held-upgrade figure invalid, said in the report."""
    out = []
    if r.get("scenario") == "chat":
        if r.get("lost"):
            out.append(f"{t} chat: {r['lost']} messages lost (sent and never echoed)")
        if r.get("held", 0) < r.get("sessions", 0):
            out.append(f"{t} chat: only {r['held']} of {r['sessions']} sessions opened")
        if r.get("broken_sessions"):
            out.append(f"{t} chat: {r['broken_sessions']} sessions ended early")
        if r.get("not_sent"):
            out.append(f"{t} chat: {r['not_sent']} messages never sent")
        lag = r.get("send_lag_p99_us")
        if lag is not None and lag > 50_000:
            out.append(
                f"{t} chat: the load generator fell behind its schedule (send lag p99 "
                f"{lag / 1000:.0f} ms): a busy core 0, latencies are not the proxy's alone"
            )
    if r.get("scenario") == "upgrade_latency_held" and r.get("held", 0) < r.get("held_wanted", 0):
        out.append(f"{t} upgrade_latency_held: only {r['held']} of {r['held_wanted']} sessions held")
    return out


def value(by, target, sel, field):
    if field == "tls_handshake_cpu_us":
        # Derived: CPU per TLS handshake + upgrade minus CPU per plain upgrade of the same proxy
        # (wsedge_tls - wsedge, ...), i.e. what the full TLS handshake alone costs the proxy.
        tls = value(by, target, sel, "cpu_us_per_upgrade")
        plain = value(by, target.removesuffix("_tls"), sel, "cpu_us_per_upgrade")
        return None if tls is None or plain is None else tls - plain
    r = by.get((target, sel))
    return None if r is None else r.get(field)


def triple(by, target, sel, prefix):
    r = by.get((target, sel))
    if r is None or r.get(f"{prefix}_p50_us") is None:
        return None
    return tuple(r.get(f"{prefix}_{q}_us") for q in ("p50", "p99", "max"))


def fmt(v, f):
    if isinstance(v, tuple):
        return " / ".join(f"{x:,}" for x in v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    return "n/a" if v is None else f.format(v)


def ratio(a, b):
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    if not numbers or b == 0:
        return "n/a"
    return f"{a / b:.2f}×"


def summary(by):
    """Issue 21's table: one row per figure, plain rows from the plain targets and TLS rows from
    the *_tls targets in the same columns, wsedge's ratios to nginx and HAProxy."""
    rows = []
    for label, kind, sel, field, f in SUMMARY:
        names = SUMMARY_COLUMNS if kind == "plain" else [None] + [
            f"{t}_tls" for t in SUMMARY_COLUMNS[1:]
        ]
        vals = [None if t is None else value(by, t, sel, field) for t in names]
        if all(v is None for v in vals):
            continue
        d, n, h, w = vals
        if field.startswith("held_over") or field == "lost":
            ratios = ["", ""]  # a ratio of its own, or a count that must be 0
        else:
            ratios = [ratio(w, n), ratio(w, h)]
        rows.append(f"| {label} | " + " | ".join([fmt(v, f) for v in vals] + ratios) + " |")
    if not rows:
        return
    print("| figure | direct | nginx | HAProxy | wsedge | wsedge / nginx | wsedge / HAProxy |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(r)
    print()
    print("wss:// rows: the `*_tls` targets in the same columns. CPU: the proxy's own utime + stime")
    print("over the window (direct: no proxy). Detail per scenario below.")
    print()


def main():
    by, errors = load(sys.argv[1])
    summary(by)
    # The plain table, unless only TLS targets were run.
    if any(t in TARGETS for (t, _) in by) or not any(t in TLS_TARGETS for (t, _) in by):
        head = TARGETS + ["wsedge/nginx", "wsedge/haproxy", "wsedge/direct", "metrics on/off"]
        print("| figure | " + " | ".join(head) + " |")
        print("|---" * (len(head) + 1) + "|")
        for label, sel, field, f in ROWS:
            if f == "triple":
                vals = [triple(by, t, sel, field) for t in TARGETS]
                if all(v is None for v in vals):
                    continue
                cells = [fmt(v, f) for v in vals] + ["", "", "", ""]
                print(f"| {label} | " + " | ".join(cells) + " |")
                continue
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
