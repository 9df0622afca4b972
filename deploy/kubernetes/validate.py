#!/usr/bin/env python3
"""Offline validation of deploy/kubernetes/ (a .ci/run step; no cluster needed).

1. every `resources:` entry of kustomization.yaml exists, and every generator's file is
   either present or git-ignored (the admin token is never committed);
2. the built-in kinds pass `kubernetes-validate --strict` (unknown fields are errors), the
   Secret the secretGenerator makes included;
3. the ServiceMonitor passes schemas/servicemonitor-v1.schema.json (Python jsonschema);
4. the ConfigMap's routes.yaml passes `wsedge check`;
5. the Deployment's terminationGracePeriodSeconds is above the drain bound that
   `wsedge check --print-drain-bound` computes from that routes.yaml, and the Deployment keeps
   the properties the router relies on (rolling update 0/1, probes, no preStop, no subPath,
   non-root, read-only root filesystem, requests).

Usage: validate.py [--wsedge PATH]   (default: $WSEDGE_BIN, else target/debug/wsedge)
Needs: pip install kubernetes-validate jsonschema (PyYAML comes with them).
Exit 1 with every problem listed when anything fails.
"""

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "schemas/servicemonitor-v1.schema.json",
}

problems = []


def fail(what):
    problems.append(what)
    print(f"FAIL {what}")


def ok(what):
    print(f"ok   {what}")


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def git_ignored(path):
    r = subprocess.run(["git", "-C", ROOT, "check-ignore", "-q", path], capture_output=True)
    return r.returncode == 0


def kubernetes_validate(paths, label):
    r = subprocess.run(
        # The module of the interpreter running this script: the one pip installed it for.
        [sys.executable, "-m", "kubernetes_validate", "--strict", *paths], capture_output=True, text=True
    )
    out = (r.stdout + r.stderr).strip()
    for line in out.splitlines():
        print(f"     {line}")
    bad = [l for l in out.splitlines() if l.startswith(("ERROR", "WARN"))]
    if r.returncode != 0 or bad:
        fail(f"kubernetes-validate --strict {label}: exit {r.returncode}, {len(bad)} error/warning line(s)")
    else:
        ok(f"kubernetes-validate --strict {label}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wsedge", default=os.environ.get("WSEDGE_BIN", os.path.join(ROOT, "target/debug/wsedge")))
    args = ap.parse_args()

    kustomization = load_docs(os.path.join(HERE, "kustomization.yaml"))[0]
    resources = kustomization.get("resources") or []
    if not resources:
        fail("kustomization.yaml lists no resources")
    docs = []  # (file, document)
    for entry in resources:
        path = os.path.join(HERE, entry)
        if not os.path.isfile(path):
            fail(f"kustomization.yaml resources: {entry} does not exist")
            continue
        ok(f"resources: {entry} exists")
        docs += [(entry, d) for d in load_docs(path)]
    # Files in the directory that kustomization.yaml does not apply (an on-demand Job) are
    # validated too.
    listed = set(resources) | {"kustomization.yaml"}
    for name in sorted(os.listdir(HERE)):
        if name.endswith(".yaml") and name not in listed:
            print(f"     {name}: not in resources (applied on its own); validated too")
            docs += [(name, d) for d in load_docs(os.path.join(HERE, name))]

    builtin_files = sorted({f for f, d in docs if (d.get("apiVersion"), d.get("kind")) not in CRD_SCHEMAS})
    with tempfile.TemporaryDirectory() as tmp:
        generated = []
        for gen in kustomization.get("secretGenerator") or []:
            data = {}
            for spec in gen.get("files") or []:
                key, _, file = spec.partition("=")
                file = file or key
                path = os.path.join(HERE, file)
                if not os.path.exists(path) and not git_ignored(path):
                    fail(f"secretGenerator {gen['name']}: {file} is neither present nor git-ignored")
                if os.path.exists(path) and not git_ignored(path):
                    fail(f"secretGenerator {gen['name']}: {file} is not git-ignored (a secret would be committed)")
                data[os.path.basename(key)] = base64.b64encode(b"placeholder-token-0123456789\n").decode()
            secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": gen["name"], "namespace": kustomization.get("namespace", "default")},
                      "data": data}
            path = os.path.join(tmp, f"secret-{gen['name']}.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(secret, f)
            generated.append(path)
            docs.append((f"secretGenerator {gen['name']}", secret))
        kubernetes_validate([os.path.join(HERE, f) for f in builtin_files] + generated,
                            f"({len(builtin_files)} files + {len(generated)} generated Secret(s))")

    for f, d in docs:
        schema_file = CRD_SCHEMAS.get((d.get("apiVersion"), d.get("kind")))
        if not schema_file:
            continue
        with open(os.path.join(HERE, schema_file)) as s:
            schema = json.load(s)
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(d), key=lambda e: list(e.path))
        for e in errors:
            fail(f"{f}: {d['kind']}/{d['metadata'].get('name')}: {'.'.join(map(str, e.path)) or '(root)'}: {e.message}")
        if not errors:
            ok(f"{f}: {d['kind']}/{d['metadata']['name']} against {schema_file}")

    by_kind = {}
    for f, d in docs:
        by_kind.setdefault(d.get("kind"), []).append(d)
    config_and_bound(args.wsedge, by_kind)
    deployment_rules(by_kind)

    if problems:
        print(f"\nFAILED: {len(problems)} problem(s):")
        for p in problems:
            print(f"  - {p}")
        sys.exit(1)
    print("\nall Kubernetes manifests valid")


def config_and_bound(wsedge, by_kind):
    if not os.access(wsedge, os.X_OK):
        fail(f"no wsedge binary at {wsedge} (cargo build, or --wsedge PATH)")
        return
    deployments = by_kind.get("Deployment", [])
    maps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    for dep in deployments:
        spec = dep["spec"]["template"]["spec"]
        for vol in spec.get("volumes", []):
            cm = vol.get("configMap")
            if not cm:
                continue
            data = maps.get(cm["name"], {}).get("data", {})
            if "routes.yaml" not in data:
                fail(f"Deployment {dep['metadata']['name']}: ConfigMap {cm['name']} has no routes.yaml")
                continue
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "routes.yaml")
                with open(path, "w") as f:
                    f.write(data["routes.yaml"])
                r = subprocess.run([wsedge, "check", "--config", path], capture_output=True, text=True)
                if r.returncode != 0:
                    fail(f"wsedge check on ConfigMap {cm['name']} routes.yaml: exit {r.returncode}\n{r.stderr}")
                else:
                    ok(f"wsedge check: ConfigMap {cm['name']} routes.yaml")
                if r.stderr.strip():
                    for line in r.stderr.strip().splitlines():
                        print(f"     {line}")
                r = subprocess.run([wsedge, "check", "--print-drain-bound", "--config", path],
                                   capture_output=True, text=True)
            if r.returncode != 0:
                fail(f"wsedge check --print-drain-bound: exit {r.returncode}\n{r.stderr}")
                continue
            for line in r.stdout.strip().splitlines():
                print(f"     {line}")
            m = re.search(r"^shutdown: ([0-9.]+)s ", r.stdout, re.M)
            if not m:
                fail(f"no `shutdown:` line in the drain bound:\n{r.stdout}")
                continue
            bound = float(m.group(1))
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if grace <= bound:
                fail(f"Deployment {dep['metadata']['name']}: terminationGracePeriodSeconds {grace} "
                     f"is not above the drain bound {bound}s")
            else:
                ok(f"Deployment {dep['metadata']['name']}: terminationGracePeriodSeconds {grace} > drain bound {bound}s")


def deployment_rules(by_kind):
    for dep in by_kind.get("Deployment", []):
        name = dep["metadata"]["name"]
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        rules = [
            ("replicas >= 3", spec.get("replicas", 1) >= 3),
            ("rollingUpdate maxUnavailable 0, maxSurge 1",
             spec.get("strategy", {}).get("rollingUpdate") == {"maxUnavailable": 0, "maxSurge": 1}),
            ("topologySpreadConstraints", bool(pod.get("topologySpreadConstraints"))),
            ("pod runAsNonRoot", pod.get("securityContext", {}).get("runAsNonRoot") is True),
        ]
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            rules += [
                (f"{c['name']}: readiness on /readyz", c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz"),
                (f"{c['name']}: liveness on /healthz", c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz"),
                (f"{c['name']}: no preStop (shutdown.delay does its job)", "preStop" not in c.get("lifecycle", {})),
                (f"{c['name']}: no subPath mount (it never updates)", all("subPath" not in m for m in c.get("volumeMounts", []))),
                (f"{c['name']}: readOnlyRootFilesystem", sc.get("readOnlyRootFilesystem") is True),
                (f"{c['name']}: allowPrivilegeEscalation false", sc.get("allowPrivilegeEscalation") is False),
                (f"{c['name']}: resource requests", bool(c.get("resources", {}).get("requests"))),
            ]
        for what, holds in rules:
            (ok if holds else fail)(f"Deployment {name}: {what}")
    services = by_kind.get("Service", [])
    client = [s for s in services if s["spec"].get("type") == "LoadBalancer"]
    for s in client:
        local = s["spec"].get("externalTrafficPolicy") == "Local"
        (ok if local else fail)(f"Service {s['metadata']['name']}: externalTrafficPolicy Local (real client addresses)")
    admin_guarded = any(
        any(p.get("port") == "admin" for rule in np["spec"].get("ingress", []) if rule.get("from") for p in rule.get("ports", []))
        for np in by_kind.get("NetworkPolicy", [])
    )
    (ok if admin_guarded else fail)("NetworkPolicy restricts the admin port")
    for kind in ["PodDisruptionBudget", "ServiceMonitor", "StatefulSet", "NetworkPolicy"]:
        (ok if by_kind.get(kind) else fail)(f"a {kind} is present")


if __name__ == "__main__":
    main()
