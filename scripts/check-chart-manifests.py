#!/usr/bin/env python3
"""Checks of one region's rendered chart that neither helm nor kubernetes-validate makes.

    check-chart-manifests.py <rendered.yaml> <out dir> <region>
    check-chart-manifests.py --overrides <rendered.yaml>

- Every PodMonitor selects pods of the release, and each selected pod has a container port of
  the name it scrapes; the gateway, distributor and control are each selected.
- The PrometheusRule's spec is written to <out>/rules.yaml for `promtool check rules`.
- The NATS StatefulSet's ConfigMap volumes are written under <out> at their mount paths (so
  the `include` in nats.conf resolves as in the pod); <out>/nats-config/nats.conf is then
  ready for `nats-server -t`.
- Every dashboard ConfigMap (label grafana_dashboard) holds JSON with a title and panels.
- The gateway's terminationGracePeriodSeconds exceeds its drain_period and linger, and it has no
  lifecycle hook (the image has no shell; SIGTERM starts the drain).
- The services' TOML configs parse and name this region.

With --overrides, the render of ci/overrides-values.yaml: each of its values lands where it
should (pod annotations and labels, securityContexts, scheduling, the gateway Service's source
ranges and annotations, control's Ingress with TLS, the helm test's given Secret and hash) and
every pod keeps its config and secrets checksums.

Exits 1 with a message naming the resource on the first failure.
"""

import json
import pathlib
import re
import sys
import tomllib

import yaml


def fail(message):
    print(f"check-chart-manifests: {message}", file=sys.stderr)
    sys.exit(1)


def seconds(text):
    match = re.fullmatch(r"(\d+)(ms|s|m)", text)
    if not match:
        fail(f"cannot read duration {text!r}")
    value, unit = int(match[1]), match[2]
    return {"ms": value / 1000, "s": value, "m": value * 60}[unit]


def main(rendered, out, region):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    config_maps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])

    # PodMonitors select real pods by a port those pods name.
    selected_components = set()
    for monitor in by_kind.get("PodMonitor", []):
        name = monitor["metadata"]["name"]
        selector = monitor["spec"]["selector"]
        wanted = selector.get("matchLabels", {})
        expressions = selector.get("matchExpressions", [])
        ports = {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
        matched = []
        for workload in workloads:
            labels = workload["spec"]["template"]["metadata"].get("labels", {})
            if any(labels.get(k) != v for k, v in wanted.items()):
                continue
            if any(labels.get(e["key"]) not in e["values"] for e in expressions
                   if e["operator"] == "In"):
                continue
            named = {p.get("name") for c in workload["spec"]["template"]["spec"]["containers"]
                     for p in c.get("ports", [])}
            missing = ports - named
            if missing:
                fail(f"PodMonitor {name} scrapes port {missing} that "
                     f"{workload['metadata']['name']} does not name")
            matched.append(workload["metadata"]["name"])
            selected_components.add(labels.get("app.kubernetes.io/component"))
        if not matched:
            fail(f"PodMonitor {name} selects no pod of the release")
    if by_kind.get("PodMonitor"):
        for component in ("gateway", "distributor", "control"):
            if component not in selected_components:
                fail(f"no PodMonitor scrapes the {component}")

    # Rules for promtool.
    rules = by_kind.get("PrometheusRule", [])
    groups = [g for rule in rules for g in rule["spec"]["groups"]]
    if not groups:
        fail("no PrometheusRule with groups rendered")
    (out / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))

    # The NATS pod's config files, at their mount paths relative to /etc.
    nats_sets = [s for s in by_kind.get("StatefulSet", [])
                 if s["metadata"]["name"].endswith("-nats")]
    if len(nats_sets) != 1:
        fail(f"expected one NATS StatefulSet, found {len(nats_sets)}")
    pod = nats_sets[0]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    container = next(c for c in pod["containers"] if c["name"] == "nats")
    written = []
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        if "configMap" not in volume:
            continue
        cm_name = volume["configMap"]["name"]
        if cm_name not in config_maps:
            fail(f"the NATS pod mounts ConfigMap {cm_name}, which the chart does not render")
        path = mount["mountPath"]
        if not path.startswith("/etc/"):
            fail(f"unexpected NATS config mount path {path}")
        target = out / path[len("/etc/"):]
        target.mkdir(parents=True, exist_ok=True)
        for key, text in config_maps[cm_name]["data"].items():
            (target / key).write_text(text)
            written.append(str(target / key))
    if not (out / "nats-config" / "nats.conf").exists():
        fail(f"nats.conf not among the NATS pod's mounts ({written})")
    auth = out / "danmu-nats-auth" / "danmu.conf"
    if not auth.exists():
        fail("the NATS pod does not mount the danmu mappings and users at /etc/danmu-nats-auth")
    if f'cluster: "{region}"' not in auth.read_text():
        fail(f"danmu.conf has no mapping for this region's cluster {region}")

    # Dashboards.
    dashboards = [cm for cm in config_maps.values()
                  if cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    if not dashboards:
        fail("no dashboard ConfigMap with label grafana_dashboard: \"1\"")
    for cm in dashboards:
        for key, text in cm["data"].items():
            try:
                board = json.loads(text)
            except json.JSONDecodeError as error:
                fail(f"dashboard {key} in {cm['metadata']['name']}: {error}")
            if not board.get("title") or not isinstance(board.get("panels"), list):
                fail(f"dashboard {key}: no title or panels")

    # Service configs and the gateway's drain against its grace period.
    config = next((cm for name, cm in config_maps.items() if name.endswith("-danmu-config")), None)
    if config is None:
        fail("no <release>-danmu-config ConfigMap")
    parsed = {}
    for key in ("gateway.toml", "distributor.toml", "control.toml"):
        try:
            parsed[key] = tomllib.loads(config["data"][key])
        except (KeyError, tomllib.TOMLDecodeError) as error:
            fail(f"{key}: {error}")
        if parsed[key].get("region") != region:
            fail(f"{key} says region {parsed[key].get('region')!r}, not {region}")
    gateway = next(d for d in by_kind["Deployment"] if d["metadata"]["name"].endswith("-gateway"))
    spec = gateway["spec"]["template"]["spec"]
    drain = seconds(parsed["gateway.toml"]["drain_period"])
    linger = seconds(parsed["gateway.toml"].get("close_linger", "1s"))
    grace = spec["terminationGracePeriodSeconds"]
    if grace <= drain + 2 * linger:
        fail(f"terminationGracePeriodSeconds {grace} is not longer than the drain "
             f"({drain} s + 2 x {linger} s linger)")
    # The image has no shell: the kubelet's own SIGTERM starts the drain.
    if "lifecycle" in spec["containers"][0]:
        fail("the gateway has a lifecycle hook; the image has no shell, the drain starts on SIGTERM")


def check_overrides(rendered):
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    deployments = by_kind.get("Deployment", {})
    for component in ("gateway", "distributor", "control"):
        name = f"danmu-{component}"
        if name not in deployments:
            fail(f"no Deployment {name}")
        template = deployments[name]["spec"]["template"]
        meta, spec = template["metadata"], template["spec"]
        annotations = meta.get("annotations", {})
        for key in ("checksum/config", "checksum/secrets", "example.com/team"):
            if key not in annotations:
                fail(f"{name}: pod annotation {key} missing")
        if meta["labels"].get("example.com/cost-center") != "42":
            fail(f"{name}: the top-level podLabels are missing")
        if meta["labels"].get("app.kubernetes.io/component") != component:
            fail(f"{name}: the selector label was overridden")
        if spec["securityContext"].get("runAsUser") != 10001:
            fail(f"{name}: podSecurityContext not applied")
        container = spec["containers"][0]["securityContext"]
        if not container.get("readOnlyRootFilesystem") or container["capabilities"]["drop"] != ["ALL"]:
            fail(f"{name}: the container securityContext lost its defaults")
        expected = {"gateway": "danmu-edge"}.get(component, "danmu-core")
        if spec.get("priorityClassName") != expected:
            fail(f"{name}: priorityClassName {spec.get('priorityClassName')!r}, not {expected}")
    gateway = deployments["danmu-gateway"]["spec"]["template"]
    if gateway["metadata"]["annotations"].get("example.com/scrape") != "false":
        fail("danmu-gateway: its own podAnnotations are missing")
    if gateway["metadata"]["labels"].get("example.com/tier") != "edge":
        fail("danmu-gateway: its own podLabels are missing")
    spec = gateway["spec"]
    if spec.get("nodeSelector") != {"example.com/pool": "edge"} or not spec.get("tolerations"):
        fail("danmu-gateway: nodeSelector or tolerations not applied")
    if "nodeAffinity" not in spec.get("affinity", {}) or "podAntiAffinity" in spec["affinity"]:
        fail("danmu-gateway: the affinity override did not replace the default")
    if spec["topologySpreadConstraints"][0]["maxSkew"] != 2:
        fail("danmu-gateway: the topologySpreadConstraints override did not replace the default")
    service = by_kind["Service"]["danmu-gateway"]
    if service["spec"].get("loadBalancerSourceRanges") != ["203.0.113.0/24", "2001:db8::/32"]:
        fail("danmu-gateway Service: loadBalancerSourceRanges not applied")
    if "service.beta.kubernetes.io/aws-load-balancer-type" not in service["metadata"].get("annotations", {}):
        fail("danmu-gateway Service: annotations not applied")
    ports = {p["name"]: (p["port"], p["protocol"]) for p in service["spec"]["ports"]}
    if ports.get("wss") != (7200, "TCP") or ports.get("tls") != (7300, "TCP"):
        fail(f"danmu-gateway Service: wss and tls ports missing: {ports}")
    quic = by_kind["Service"].get("danmu-gateway-quic")
    if quic is None or quic["spec"]["ports"] != [
            {"name": "quic", "port": 7400, "targetPort": "quic", "protocol": "UDP"}]:
        fail("danmu-gateway-quic Service: the UDP port is missing")
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v.get("secret", {}).get("secretName") for v in spec["volumes"]}
    for i, secret in enumerate(["danmu-gateway-tls", "danmu-gateway-tls-legacy"]):
        if mounts.get(f"gateway-tls-{i}") != f"/etc/danmu/gateway-tls/{i}" or \
                volumes.get(f"gateway-tls-{i}") != secret:
            fail(f"danmu-gateway: certificate Secret {secret} is not mounted")
    config = next(cm for cm in by_kind["ConfigMap"].values() if "gateway.toml" in cm.get("data", {}))
    toml = config["data"]["gateway.toml"]
    for line in ('wss_listen = "0.0.0.0:7200"', 'tls_listen = "0.0.0.0:7300"',
                 'quic_listen = "0.0.0.0:7400"', 'cert_file = "/etc/danmu/gateway-tls/1/tls.crt"'):
        if line not in toml:
            fail(f"gateway.toml lacks {line}")
    ingress = by_kind.get("Ingress", {}).get("danmu-control")
    if ingress is None:
        fail("no Ingress danmu-control")
    if ingress["spec"]["tls"] != [{"secretName": "danmu-control-tls",
                                   "hosts": ["control.eu.danmu.example.com"]}]:
        fail("Ingress danmu-control: TLS not applied")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    if backend != {"name": "danmu-control", "port": {"name": "http"}}:
        fail(f"Ingress danmu-control routes to {backend}")
    if "danmu-test" in by_kind.get("Secret", {}):
        fail("the chart rendered a test Secret although tests.existingSecret names one")
    smoke = next(p for p in by_kind["Pod"].values()
                 if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test")
    refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in smoke["spec"]["containers"][0]["env"]
            if "secretKeyRef" in e.get("valueFrom", {})]
    if "danmu-test" not in refs:
        fail(f"the helm test pod reads {refs}, not the given Secret danmu-test")
    auth = next(cm for cm in by_kind["ConfigMap"].values() if "danmu.conf" in cm.get("data", {}))
    if "$2a$10$6BhpttBJdtwM/jBj2wVSXuG3xdoQIzI8.HuZe9O96mUweZCnSopFO" not in auth["data"]["danmu.conf"]:
        fail("danmu.conf does not hold tests.natsPasswordHash for danmu-smoke")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--overrides":
        check_overrides(sys.argv[2])
    elif len(sys.argv) == 4:
        main(*sys.argv[1:])
    else:
        fail(__doc__.splitlines()[2].strip())
