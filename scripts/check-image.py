#!/usr/bin/env python3
"""Runs one region of the rendered chart from the danmu image, as a cluster would, and checks it.

    check-image.py RENDERED.yaml IMAGE NATS_SERVER_BIN WORK_DIR

Run by scripts/check-image inside a network and mount namespace of its own (`unshare --net
--mount`), as root, so the chart's default ports and Service names are free to use and nothing
leaks onto the host. In that namespace:

1. /etc/hosts (bind-mounted over) sends every rendered Service name and the gateway's
   advertise_host to 127.0.0.1: the cluster's DNS, for the containers and the test alike.
2. nats-server (the tests' pinned version) runs standalone with cluster name <region>, JetStream,
   and the chart's rendered danmu.conf (mappings, users, permissions) included as the NATS pod
   includes it. The NATS chart's own pods are not run: their config joins a 3-server cluster and
   two other regions, which one machine without DNS cannot give them.
3. Each Deployment whose container runs IMAGE starts with podman exactly as its pod spec says:
   command and args, env (values, Secret keys, the pod name for fieldRef metadata.name, $(VAR)
   expansion), ConfigMap and Secret volumes with their items and modes (owned by the pod's
   fsGroup, group-readable, as the kubelet lays them out), and the securityContexts (user,
   groups, read-only root with no tmpfs, dropped capabilities, no-new-privileges, seccomp).
4. Checked: the image's own user is numeric and not root; every container's process runs as
   non-root with a read-only root mount; every readiness and liveness probe answers 200.
5. The chart's `helm test` pod (files/smoke.py from its ConfigMap) runs on this machine's
   python3 with its env, Service addresses translated to the target ports as kube-proxy would:
   a token from control, the node list, a TCP client on the containerized gateway, and a
   message published on NATS that reaches it.
6. SIGTERM to every container (podman stop, the pod's terminationGracePeriodSeconds): each
   exits 0 in time (the gateway drains first).

Exits 1 with a message naming the step on the first failure; the containers' logs are in
WORK_DIR/logs.
"""

import base64
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request

import yaml

PODMAN_ENV = None  # the store flags, set in main
READY_TIMEOUT = 120.0


def fail(message):
    print(f"check-image: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def log(message):
    print(f"check-image: {message}", file=sys.stderr, flush=True)


def podman(*args, check=True, capture=True):
    result = subprocess.run(["podman", *PODMAN_ENV, *args], text=True,
                            stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.PIPE if capture else None)
    if check and result.returncode != 0:
        fail(f"podman {' '.join(args[:2])}: {result.stderr.strip()}")
    return result


def http_status(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


class Render:
    """The rendered manifests, by kind and name."""

    def __init__(self, path):
        docs = [d for d in yaml.safe_load_all(open(path)) if d]
        self.by_kind = {}
        for doc in docs:
            self.by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc

    def get(self, kind, name):
        try:
            return self.by_kind[kind][name]
        except KeyError:
            fail(f"the pods use {kind} {name}, which the chart does not render")

    def all(self, kind):
        return list(self.by_kind.get(kind, {}).values())

    def secret_data(self, name):
        secret = self.get("Secret", name)
        data = dict(secret.get("stringData", {}))
        for key, value in secret.get("data", {}).items():
            data[key] = base64.b64decode(value).decode()
        return data

    def volume_files(self, volume):
        """(data, items, default mode) of a ConfigMap or Secret volume."""
        if "configMap" in volume:
            source = volume["configMap"]
            data = self.get("ConfigMap", source["name"])["data"]
        elif "secret" in volume:
            source = volume["secret"]
            data = self.secret_data(source["secretName"])
        else:
            fail(f"volume {volume['name']}: only configMap and secret volumes are emulated")
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        return data, items, source.get("defaultMode", 0o644)

    def workloads(self):
        return self.all("Deployment") + self.all("StatefulSet")

    def port_of(self, service, port):
        """The container port a Service port reaches (a named targetPort resolved through the
        pods the Service selects), as kube-proxy would."""
        for entry in service["spec"]["ports"]:
            if entry["port"] != port:
                continue
            target = entry.get("targetPort", port)
            if isinstance(target, int):
                return target
            selector = service["spec"].get("selector", {})
            for workload in self.workloads():
                labels = workload["spec"]["template"]["metadata"].get("labels", {})
                if all(labels.get(k) == v for k, v in selector.items()):
                    for container in workload["spec"]["template"]["spec"]["containers"]:
                        for named in container.get("ports", []):
                            if named.get("name") == target:
                                return named["containerPort"]
            fail(f"Service {service['metadata']['name']}: no pod names port {target}")
        fail(f"Service {service['metadata']['name']} has no port {port}")


def expand(text, env):
    """Kubernetes' $(VAR) expansion; $$(VAR) stays literal."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)


def resolve_env(render, pod_name, container):
    env = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = expand(str(entry["value"]), env)
            continue
        source = entry["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            data = render.secret_data(ref["name"])
            if ref["key"] not in data:
                fail(f"env {entry['name']}: Secret {ref['name']} has no key {ref['key']}")
            env[entry["name"]] = data[ref["key"]]
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[entry["name"]] = render.get("ConfigMap", ref["name"])["data"][ref["key"]]
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[entry["name"]] = pod_name
        else:
            fail(f"env {entry['name']}: {source} is not emulated")
    return env


def lay_out_volumes(render, pod, container, root, fs_group):
    """Writes each mounted ConfigMap/Secret volume under root; returns (host dir, mount path)
    pairs. Files are owned by root and the pod's fsGroup, group-readable (the kubelet's
    SetVolumeOwnership), so a non-root user reads even a 0400 key through its group."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = []
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        if volume is None:
            fail(f"{container['name']}: volumeMount {mount['name']} has no volume")
        data, items, mode = render.volume_files(volume)
        target = root / mount["name"]
        target.mkdir(parents=True)
        target.chmod(0o755)
        for item in items:
            if item["key"] not in data:
                fail(f"volume {mount['name']}: no key {item['key']}")
            path = target / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(data[item["key"]])
            file_mode = item.get("mode", mode)
            if fs_group is not None:
                os.chown(path, 0, fs_group)
                file_mode |= 0o440
            path.chmod(file_mode)
        mounts.append((target, mount["mountPath"], mount.get("readOnly", False)))
    return mounts


def security_flags(pod, container, image_user):
    """podman flags for the pod's and container's securityContext; (flags, uid)."""
    pod_ctx = pod.get("securityContext", {})
    ctx = {**pod_ctx, **container.get("securityContext", {})}
    flags = []
    uid = ctx.get("runAsUser")
    gid = ctx.get("runAsGroup")
    if uid is None:
        uid = image_user[0]
    if gid is None:
        gid = image_user[1]
    if ctx.get("runAsNonRoot") and (uid is None or uid == 0):
        fail(f"{container['name']}: runAsNonRoot, but the user is {uid!r} (the kubelet refuses it)")
    if uid is not None:
        flags += ["--user", f"{uid}:{gid if gid is not None else uid}"]
    groups = list(pod_ctx.get("supplementalGroups", []))
    if pod_ctx.get("fsGroup") is not None:
        groups.append(pod_ctx["fsGroup"])
    for group in groups:
        flags += ["--group-add", str(group)]
    if ctx.get("readOnlyRootFilesystem"):
        # Kubernetes mounts no tmpfs of its own: neither may podman.
        flags += ["--read-only", "--read-only-tmpfs=false"]
    caps = ctx.get("capabilities", {})
    for cap in caps.get("drop", []):
        flags += ["--cap-drop", cap]
    for cap in caps.get("add", []):
        flags += ["--cap-add", cap]
    if ctx.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    seccomp = ctx.get("seccompProfile", {}).get("type")
    if seccomp == "Unconfined":
        flags += ["--security-opt", "seccomp=unconfined"]
    elif seccomp not in (None, "RuntimeDefault"):
        fail(f"{container['name']}: seccompProfile {seccomp} is not emulated")
    return flags, uid


def image_user(image):
    """The image's USER as (uid, gid), both numeric, or fail: runAsNonRoot can only verify a
    numeric user."""
    config = json.loads(podman("image", "inspect", image).stdout)[0]
    user = config.get("Config", {}).get("User", "")
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user)
    if not match:
        fail(f"the image's user {user!r} is not numeric")
    uid = int(match[1])
    if uid == 0:
        fail("the image runs as root")
    return uid, int(match[2]) if match[2] else uid


def check_process(name, uid):
    """The container's main process: its uid is not 0 and its root mount is read-only."""
    pid = podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
    if not pid or pid == "0":
        logs = podman("logs", name, check=False)
        fail(f"{name} is not running; its last lines:\n{(logs.stdout + logs.stderr)[-2000:]}")
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    if "0" in uids:
        fail(f"{name} runs with uid {uids} (real, effective, saved, fs): root")
    if uid is not None and uids[1] != str(uid):
        fail(f"{name} runs as {uids[1]}, not the pod's {uid}")
    for line in pathlib.Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            if "ro" not in fields[5].split(","):
                fail(f"{name}: the root filesystem is mounted {fields[5]}, not read-only")
            break
    else:
        fail(f"{name}: no root mount in /proc/{pid}/mountinfo")
    return uids[1]


def probe_url(container, probe):
    http = probe.get("httpGet")
    if http is None:
        fail(f"{container['name']}: only httpGet probes are emulated")
    port = http["port"]
    if isinstance(port, str):
        port = next((p["containerPort"] for p in container.get("ports", [])
                     if p.get("name") == port), None)
        if port is None:
            fail(f"{container['name']}: probe port {http['port']} is not a named port")
    return f"http://127.0.0.1:{port}{http.get('path', '/')}"


def write_hosts(render, extra):
    names = set(extra)
    for service in render.all("Service"):
        name = service["metadata"]["name"]
        names.update({name, f"{name}.danmu", f"{name}.danmu.svc", f"{name}.danmu.svc.cluster.local"})
    hosts = pathlib.Path(os.environ["CHECK_IMAGE_HOSTS"])
    hosts.write_text("127.0.0.1 localhost\n::1 localhost\n"
                     + "".join(f"127.0.0.1 {n}\n" for n in sorted(names)))
    subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True)


def start_nats(render, nats_bin, region, work):
    auth = next((cm for cm in render.all("ConfigMap") if "danmu.conf" in cm.get("data", {})), None)
    if auth is None:
        fail("no ConfigMap with danmu.conf (templates/nats-auth.yaml)")
    conf_dir = work / "nats"
    conf_dir.mkdir()
    (conf_dir / "danmu.conf").write_text(auth["data"]["danmu.conf"])
    (conf_dir / "nats.conf").write_text(
        f'server_name: "{region}-nats-0"\n'
        "listen: 127.0.0.1:4222\n"
        "http: 127.0.0.1:8222\n"
        # A cluster name without a listen port: standalone, and the name scopes the mappings.
        f'cluster {{ name: "{region}" }}\n'
        f'jetstream {{ store_dir: "{conf_dir / "store"}" }}\n'
        "include ./danmu.conf\n")
    log_file = open(work / "logs" / "nats-server.log", "w")
    process = subprocess.Popen([nats_bin, "-c", str(conf_dir / "nats.conf")],
                               stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while http_status("http://127.0.0.1:8222/healthz") != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            fail(f"nats-server did not become healthy (see {log_file.name})")
        time.sleep(0.2)
    return process


def main(rendered, image, nats_bin, work):
    global PODMAN_ENV
    PODMAN_ENV = os.environ["CHECK_IMAGE_PODMAN_FLAGS"].split()
    work = pathlib.Path(work)
    (work / "logs").mkdir(parents=True)
    render = Render(rendered)
    config = next(cm for cm in render.all("ConfigMap") if "gateway.toml" in cm.get("data", {}))
    gateway_toml = tomllib.loads(config["data"]["gateway.toml"])
    region = gateway_toml["region"]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    write_hosts(render, [gateway_toml.get("advertise_host") or "localhost"])

    uid_gid = image_user(image)
    log(f"image {image}: user {uid_gid[0]}:{uid_gid[1]}")
    started = []
    nats = start_nats(render, nats_bin, region, work)
    try:
        run(render, image, uid_gid, work, started)
    finally:
        for name in started:
            podman("rm", "--force", "--time", "0", name, check=False)
        nats.send_signal(signal.SIGTERM)
        nats.wait(timeout=30)


def run(render, image, uid_gid, work, started):
    pods = []
    for workload in render.all("Deployment"):
        pod = workload["spec"]["template"]["spec"]
        containers = [c for c in pod["containers"] if c["image"] == image]
        if not containers:
            continue
        if len(pod["containers"]) != 1:
            fail(f"{workload['metadata']['name']}: one container per pod is emulated")
        container = containers[0]
        name = f"{workload['metadata']['name']}-check-0"
        podman("rm", "--force", "--time", "0", name, check=False)
        env = resolve_env(render, name, container)
        mounts = lay_out_volumes(render, pod, container, work / "volumes" / name,
                                 pod.get("securityContext", {}).get("fsGroup"))
        flags, uid = security_flags(pod, container, uid_gid)
        command = [expand(a, env) for a in container.get("command", [])]
        args = [expand(a, env) for a in container.get("args", [])]
        cli = ["run", "--detach", "--name", name, "--hostname", name, "--network", "host",
               "--pull", "never", *flags]
        for key, value in env.items():
            cli += ["--env", f"{key}={value}"]
        for source, target, read_only in mounts:
            cli += ["--volume", f"{source}:{target}:{'ro' if read_only else 'rw'}"]
        if command:
            cli += ["--entrypoint", json.dumps(command)]
        cli += [image, *args]
        podman(*cli)
        started.append(name)
        pods.append((name, pod, container, uid))
        log(f"started {name}: {' '.join(command + args)}")
    if len(pods) != 3:
        fail(f"expected the gateway, distributor and control Deployments on {image}, found {len(pods)}")

    for name, pod, container, uid in pods:
        effective = check_process(name, uid)
        log(f"{name}: uid {effective}, root filesystem read-only")
    deadline = time.monotonic() + READY_TIMEOUT
    for name, pod, container, uid in pods:
        for kind in ("readinessProbe", "livenessProbe"):
            probe = container.get(kind)
            if probe is None:
                fail(f"{name}: no {kind}")
            url = probe_url(container, probe)
            while (status := http_status(url)) != 200:
                state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
                if state != "running" or time.monotonic() > deadline:
                    dump_logs(work, pods)
                    fail(f"{name}: {kind} {url} answers {status} ({state}; logs in {work / 'logs'})")
                time.sleep(0.5)
            log(f"{name}: {kind} {url} 200")

    smoke(render, work)

    for name, pod, container, uid in pods:
        grace = pod.get("terminationGracePeriodSeconds", 30)
        begun = time.monotonic()
        podman("stop", "--time", str(grace), name)
        took = time.monotonic() - begun
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        if code != "0":
            dump_logs(work, pods)
            fail(f"{name}: exit status {code} after SIGTERM (logs in {work / 'logs'})")
        log(f"{name}: SIGTERM, exit 0 after {took:.1f} s (grace {grace} s)")
    dump_logs(work, pods)


def dump_logs(work, pods):
    for name, *_ in pods:
        logs = podman("logs", name, check=False)
        (work / "logs" / f"{name}.log").write_text(logs.stdout + logs.stderr)


def smoke(render, work):
    tests = [p for p in render.all("Pod")
             if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    if len(tests) != 1:
        fail(f"expected one helm test pod, found {len(tests)}")
    pod = tests[0]["spec"]
    container = pod["containers"][0]
    env = resolve_env(render, tests[0]["metadata"]["name"], container)
    services = {s["metadata"]["name"]: s for s in render.all("Service")}

    def translate(match):
        service = services.get(match[1])
        if service is None:
            return match[0]
        return f"{match[1]}:{render.port_of(service, int(match[2]))}"

    for key, value in env.items():
        env[key] = re.sub(r"(?<=[/@])([a-z0-9-]+):(\d+)", translate, value)
    mounts = lay_out_volumes(render, pod, container, work / "volumes" / "smoke", None)
    command = [expand(a, env) for a in container["command"] + container.get("args", [])]
    for source, target, _ in mounts:
        command = [str(source) + a[len(target):] if a.startswith(target + "/") else a
                   for a in command]
    if command[0] != "python3":
        fail(f"the helm test runs {command[0]}, not python3")
    command[0] = sys.executable
    log(f"helm test: {' '.join(command)}")
    result = subprocess.run(command, env={**os.environ, **env}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            timeout=float(env.get("DANMU_TIMEOUT", "30")) + 30)
    (work / "logs" / "smoke.log").write_text(result.stdout)
    if result.returncode != 0:
        fail(f"helm test failed: {result.stdout.strip()}")
    log(f"helm test: {result.stdout.strip()}")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        fail("usage: check-image.py RENDERED.yaml IMAGE NATS_SERVER_BIN WORK_DIR")
    main(*sys.argv[1:])
