"""``lorastream report``: the key series of a run as one PNG, from Prometheus's HTTP API or
from the worker's own history file — for looking at a run without a Grafana server."""

from __future__ import annotations

import itertools
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PROMETHEUS_SERIES", "Series", "from_history", "from_prometheus", "render"]

#: What the report draws, as PromQL (the same expressions the dashboard uses).
PROMETHEUS_SERIES = {
    "events/s": "sum(rate(lorastream_events_learned_total[1m]))",
    "latency p50 (s)": "lorastream:event_to_vector_latency_seconds:p50_1m",
    "latency p99 (s)": "lorastream:event_to_vector_latency_seconds:p99_1m",
    "HR@10": 'max(lorastream_prequential_quality{metric="hr_at_10", part="full"})',
    "NDCG@10": 'max(lorastream_prequential_quality{metric="ndcg_at_10", part="full"})',
    "loss": "max(lorastream_training_loss)",
    "lag (records)": "sum(lorastream_consumer_lag_records)",
}
DRIFT_SERIES = "lorastream_drift_last_detection_timestamp_seconds"


@dataclass
class Series:
    """Named time series (unix seconds, value) and the times drift was detected."""

    lines: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    drift: list[tuple[float, str]] = field(default_factory=list)


def from_history(points: Sequence[dict[str, Any]]) -> Series:
    out = Series()
    names = {
        "latency_p50_s": "latency p50 (s)",
        "latency_p99_s": "latency p99 (s)",
        "hr_at_10": "HR@10",
        "ndcg_at_10": "NDCG@10",
        "loss": "loss",
    }
    for key, name in names.items():
        pts = [(p["t"], p[key]) for p in points if p.get(key) is not None]
        if pts:
            out.lines[name] = ([t for t, _ in pts], [v for _, v in pts])
    if len(points) > 1:
        ts = [p["t"] for p in points]
        rates = [
            (b["events"] - a["events"]) / max(b["t"] - a["t"], 1e-9)
            for a, b in itertools.pairwise(points)
        ]
        out.lines["events/s"] = (ts[1:], rates)
    out.drift = [(p["t"], s) for p in points for s in p.get("drift", [])]
    return out


def _query_range(url: str, expr: str, start: float, end: float, step: float) -> Any:
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(
        f"{url.rstrip('/')}/api/v1/query_range?{query}", timeout=30
    ) as response:
        body = json.load(response)
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {expr!r}: {body.get('error')}")
    return body["data"]["result"]


def from_prometheus(url: str, minutes: float = 60.0, step: float = 5.0) -> Series:
    end = time.time()
    start = end - 60 * minutes
    out = Series()
    for name, expr in PROMETHEUS_SERIES.items():
        for result in _query_range(url, expr, start, end, step):
            values = [(float(t), float(v)) for t, v in result["values"] if v not in ("NaN",)]
            if values:
                out.lines[name] = ([t for t, _ in values], [v for _, v in values])
    for result in _query_range(url, DRIFT_SERIES, start, end, step):
        signal = result["metric"].get("signal", "?")
        seen = {float(v) for _, v in result["values"]}
        out.drift += [(t, signal) for t in sorted(seen) if start <= t <= end]
    return out


def render(series: Series, path: Path, title: str = "lorastream run") -> Path:
    """Throughput, freshness, learning quality and lag on one figure; drift as red lines."""
    import matplotlib

    matplotlib.use("Agg")
    from datetime import UTC, datetime

    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    panels = [
        ("throughput", ["events/s"]),
        ("event → vector latency", ["latency p50 (s)", "latency p99 (s)"]),
        ("prequential quality", ["HR@10", "NDCG@10"]),
        ("training loss", ["loss"]),
        ("consumer lag", ["lag (records)"]),
    ]
    panels = [(t, [n for n in names if n in series.lines]) for t, names in panels]
    panels = [(t, names) for t, names in panels if names]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(9, 2.2 * max(1, len(panels))), sharex=True, squeeze=False
    )
    for ax, (label, names) in zip(axes[:, 0], panels, strict=True):
        for name in names:
            ts, vs = series.lines[name]
            ax.plot([datetime.fromtimestamp(t, UTC) for t in ts], vs, label=name, lw=1.4)
        for t, _signal in series.drift:
            ax.axvline(datetime.fromtimestamp(t, UTC), color="crimson", lw=0.8, alpha=0.6)
        ax.set_ylabel(label, fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
    axes[-1, 0].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))  # type: ignore[no-untyped-call]
    axes[0, 0].set_title(title + ("  (red: drift detected)" if series.drift else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
