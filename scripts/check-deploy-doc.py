#!/usr/bin/env python3
"""Runs every ```sh block of docs/deploy.md, in order, without a cluster, and fails on the first
command that does not work or that names something the chart does not render.

    scripts/check-deploy-doc.py HELM KUBECTL DANMU_CONTROL

In a temporary directory (with `charts` linked to the repository's), the blocks run in one bash
with `set -euo pipefail` and these on PATH:

- `danmu-control`: the real binary (keys are really generated);
- `kubectl create ...`: the real kubectl with `--dry-run=client -o yaml`; what it would create is
  kept per context;
- `kubectl rollout status KIND/NAME`, `kubectl port-forward svc/NAME ...`: checked to name a
  resource the release rendered in that context;
- `helm upgrade --install`: rendered with the real `helm template` and the same values, kept per
  context; `helm template`: run as it is; `helm test RELEASE`: checked to have a test pod.

Any other kubectl or helm command fails the check (the doc may only use what is checked here).
Afterwards, every Secret and key that the rendered pods read (env secretKeyRef, secret volumes)
must be one the chart renders or one the doc's `kubectl create secret` made in that context.
"""

import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "deploy.md"


def fail(message):
    print(f"check-deploy-doc: {message}", file=sys.stderr)
    sys.exit(1)


def take(args, *flags, default=None):
    """Removes `flag value` (or `flag=value`) from args; returns the value."""
    value = default
    out = []
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        if name in flags:
            if "=" in arg:
                value = arg.split("=", 1)[1]
            else:
                value = args[i + 1]
                i += 1
        else:
            out.append(arg)
        i += 1
    args[:] = out
    return value


def load(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d] if path.exists() else []


def rendered(state, context):
    docs = []
    for path in sorted((state / context).glob("release-*.yaml")):
        docs += load(path)
    return docs


def shim_helm(state, helm, args):
    command, args = args[0], args[1:]
    if command == "template":
        os.execv(helm, [helm, "template", *args])
    context = take(args, "--kube-context")
    if not context:
        fail(f"helm {command} without --kube-context: {shlex.join(args)}")
    namespace = take(args, "-n", "--namespace", default="default")
    if command == "upgrade":
        if "--install" not in args:
            fail("helm upgrade without --install")
        args.remove("--install")
        for flag in ("--wait", "--atomic", "--create-namespace"):
            if flag in args:
                args.remove(flag)
        take(args, "--timeout")
        release, chart, rest = args[0], args[1], args[2:]
        out = subprocess.run([helm, "template", release, chart, "-n", namespace, *rest],
                             capture_output=True, text=True)
        if out.returncode != 0:
            fail(f"[{context}] helm upgrade --install {release}: helm template failed:\n{out.stderr}")
        (state / context).mkdir(parents=True, exist_ok=True)
        (state / context / f"release-{release}.yaml").write_text(out.stdout)
        print(f"[{context}] rendered release {release} ({out.stdout.count('kind:')} kinds)")
        return
    if command == "test":
        release = args[0]
        pods = [d for d in load(state / context / f"release-{release}.yaml")
                if d["kind"] == "Pod"
                and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
        if not pods:
            fail(f"[{context}] helm test {release}: the release renders no test pod")
        print(f"[{context}] helm test {release}: test pod {pods[0]['metadata']['name']}")
        return
    fail(f"unchecked helm command: helm {command} {shlex.join(args)}")


def shim_kubectl(state, kubectl, args):
    context = take(args, "--context")
    if not context:
        fail(f"kubectl without --context: {shlex.join(args)}")
    namespace = take(args, "-n", "--namespace", default="default")
    (state / context).mkdir(parents=True, exist_ok=True)
    if args[0] == "create":
        out = subprocess.run([kubectl, "-n", namespace, *args, "--dry-run=client", "-o", "yaml"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            fail(f"[{context}] kubectl {shlex.join(args)}: {out.stderr}")
        with open(state / context / "created.yaml", "a") as created:
            created.write("---\n" + out.stdout)
        obj = yaml.safe_load(out.stdout)
        print(f"[{context}] would create {obj['kind']} {obj['metadata']['name']}")
        return
    if args[0] == "rollout" and args[1] == "status":
        take(args, "--timeout")
        kind, name = args[2].split("/", 1)
        kinds = {"deployment": "Deployment", "statefulset": "StatefulSet", "deploy": "Deployment",
                 "sts": "StatefulSet"}
        want = kinds.get(kind.lower())
        if not any(d["kind"] == want and d["metadata"]["name"] == name
                   for d in rendered(state, context)):
            fail(f"[{context}] rollout status {kind}/{name}: no such {want} rendered")
        print(f"[{context}] {want} {name} is rendered")
        return
    if args[0] == "port-forward":
        target = args[1]
        if not target.startswith("svc/"):
            fail(f"port-forward to {target}: only svc/ is checked")
        name = target[4:]
        service = next((d for d in rendered(state, context)
                        if d["kind"] == "Service" and d["metadata"]["name"] == name), None)
        if service is None:
            fail(f"[{context}] port-forward {target}: no such Service rendered")
        remote = int(args[2].split(":")[-1])
        if remote not in [p["port"] for p in service["spec"]["ports"]]:
            fail(f"[{context}] port-forward {target}: the Service has no port {remote}")
        print(f"[{context}] Service {name} port {remote} is rendered")
        return
    fail(f"unchecked kubectl command: kubectl {shlex.join(args)}")


def secret_refs(doc):
    """(secret, key) pairs a workload or pod reads."""
    spec = doc["spec"]
    pod = spec if doc["kind"] == "Pod" else spec["template"]["spec"]
    refs = []
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                refs.append((ref["name"], ref["key"]))
    for volume in pod.get("volumes", []):
        secret = volume.get("secret")
        if secret:
            for item in secret.get("items", []):
                refs.append((secret["secretName"], item["key"]))
    return refs


def check_secrets(state):
    contexts = [p for p in state.iterdir() if p.is_dir()]
    if not contexts:
        fail("the doc installs nothing")
    for context in contexts:
        docs = rendered(state, context.name)
        if not docs:
            fail(f"[{context.name}] secrets were made but no release was installed")
        have = {}
        for doc in docs + load(context / "created.yaml"):
            if doc["kind"] == "Secret":
                keys = set(doc.get("data") or {}) | set(doc.get("stringData") or {})
                have.setdefault(doc["metadata"]["name"], set()).update(keys)
        for doc in docs:
            if doc["kind"] not in ("Deployment", "StatefulSet", "Pod"):
                continue
            for name, key in secret_refs(doc):
                if key not in have.get(name, set()):
                    fail(f"[{context.name}] {doc['kind']} {doc['metadata']['name']} reads key "
                         f"{key} of Secret {name}, which neither the chart nor the doc creates")
        print(f"[{context.name}] every Secret key the pods read exists")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--shim":
        state = pathlib.Path(os.environ["DEPLOY_DOC_STATE"])
        tool, args = sys.argv[2], sys.argv[3:]
        if tool == "helm":
            shim_helm(state, os.environ["DEPLOY_DOC_HELM"], args)
        else:
            shim_kubectl(state, os.environ["DEPLOY_DOC_KUBECTL"], args)
        return
    if len(sys.argv) != 4:
        fail("usage: check-deploy-doc.py HELM KUBECTL DANMU_CONTROL")
    helm, kubectl, control = sys.argv[1:]
    blocks = re.findall(r"^```sh\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)
    if not blocks:
        fail(f"no sh blocks in {DOC}")
    with tempfile.TemporaryDirectory(prefix="deploy-doc-") as tmp:
        tmp = pathlib.Path(tmp)
        bin_dir, work, state = tmp / "bin", tmp / "work", tmp / "state"
        for d in (bin_dir, work, state):
            d.mkdir()
        (work / "charts").symlink_to(ROOT / "charts")
        me = pathlib.Path(__file__).resolve()
        for tool in ("helm", "kubectl"):
            shim = bin_dir / tool
            shim.write_text(f'#!/bin/sh\nexec python3 {shlex.quote(str(me))} --shim {tool} "$@"\n')
            shim.chmod(0o755)
        (bin_dir / "danmu-control").symlink_to(pathlib.Path(control).resolve())
        env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
                   DEPLOY_DOC_STATE=str(state), DEPLOY_DOC_HELM=helm, DEPLOY_DOC_KUBECTL=kubectl)
        script = "set -euo pipefail\n" + "\n".join(blocks)
        result = subprocess.run(["bash", "-c", script], cwd=work, env=env)
        if result.returncode != 0:
            fail(f"a command of {DOC.name} failed (exit {result.returncode})")
        check_secrets(state)
    print(f"check-deploy-doc: ok: {len(blocks)} blocks of {DOC.name}")


if __name__ == "__main__":
    main()
