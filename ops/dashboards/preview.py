#!/usr/bin/env python3
"""Draws a preview PNG of each committed dashboard from a live Prometheus.

    python3 ops/dashboards/preview.py --prometheus http://127.0.0.1:9090 --out docs/img

Grafana cannot be installed on our machines, so a reader sees the dashboards this way: one
small chart per panel, each query of the panel run through Prometheus's `query_range` over the
last `--minutes`, with `$region`/`$instance` set to all and `$__rate_interval` to `--rate`.
Each image is labelled as a preview from Prometheus data, not Grafana. `scripts/dashboard-previews`
runs the Prometheus test with a live fabric and calls this before the fabric stops.
"""

import argparse
import json
import math
import pathlib
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

DASHBOARDS = pathlib.Path(__file__).resolve().parents[2] / "charts" / "danmu" / "dashboards"
LABEL = "preview from Prometheus data, not Grafana"


def query_range(base, expr, start, end, step):
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{params}", timeout=30) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


# What Grafana shows for each unit the generator uses, as the axis label.
UNIT_WORDS = {"s": "seconds", "bytes": "bytes", "Bps": "bytes/s", "percentunit": "percent",
              "short": "count"}


def unit_words(unit):
    if unit.startswith("suffix:"):
        return unit.removeprefix("suffix:").strip()
    return UNIT_WORDS.get(unit, unit)


def legend(fmt, labels):
    if not fmt:
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    out = fmt
    for key, value in labels.items():
        out = out.replace("{{" + key + "}}", value)
    return out


def draw(path, base, minutes, rate):
    dashboard = json.loads(path.read_text())
    panels = [p for p in dashboard["panels"] if p.get("type") != "row"]
    end = time.time()
    start = end - minutes * 60
    step = max(1, int(minutes * 60 / 200))
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(15, 3.1 * rows), squeeze=False)
    fig.suptitle(f"{dashboard['title']}  ({LABEL})", fontsize=13)
    empty = []
    for ax, panel in zip(axes.flat, panels):
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        drawn = 0
        for target in panel["targets"]:
            expr = (
                target["expr"]
                .replace("$__rate_interval", rate)
                .replace("$region", ".*")
                .replace("$instance", ".*")
            )
            for series in query_range(base, expr, start, end, step)[:8]:
                xs = [(float(t) - end) / 60 for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ax.plot(xs, ys, linewidth=1, label=legend(target.get("legendFormat", ""), series["metric"]))
                drawn += 1
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlabel("minutes ago", fontsize=7)
        ax.set_ylabel(unit_words(unit), fontsize=7)
        if unit == "percentunit":
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.tick_params(labelsize=7)
        if drawn:
            ax.legend(fontsize=6, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data here\n(NATS exporter)" if "nats_" in json.dumps(panel["targets"]) else "no data",
                    ha="center", va="center", transform=ax.transAxes, fontsize=9, color="gray")
            empty.append(panel["title"])
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig, empty


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--out", default="docs/img", help="folder for dashboard-<name>.png")
    parser.add_argument("--minutes", type=float, default=3.0, help="time range drawn")
    parser.add_argument("--rate", default="10s", help="what $__rate_interval becomes")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(DASHBOARDS.glob("*.json")):
        fig, empty = draw(path, args.prometheus.rstrip("/"), args.minutes, args.rate)
        target = out / f"dashboard-{path.stem}.png"
        fig.savefig(target, dpi=72)
        plt.close(fig)
        print(f"wrote {target}" + (f" (no data: {', '.join(empty)})" if empty else ""))


if __name__ == "__main__":
    main()
