"""The benchmark harness: machine description, result files, the README's tables.

Every suite writes ``benchmarks/results/<suite>.json``::

    {"suite", "generated_at", "machine": {...}, "params": {...},
     "results": [{"contender", "stream", "metric", "value", "unit"}, ...]}

and :func:`render_readme` rebuilds the results section of ``benchmarks/README.md``
from all result files, so the tables are never edited by hand.
"""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = [
    "README",
    "RESULTS_DIR",
    "BenchmarkFailed",
    "Row",
    "bench_settings",
    "machine",
    "render_readme",
    "write_results",
]

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
README = HERE / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def bench_settings(
    bootstrap: str,
    root: Path,
    prefix: str,
    *,
    batch: dict[str, Any],
    checkpoint: dict[str, Any],
    learner: dict[str, Any],
    **sections: dict[str, Any],
) -> Any:
    """Worker settings for one benchmark run (:meth:`Settings.isolated`), with the run's
    batch, checkpoint and learner sections (and any other ``sections``)."""
    from schemas.settings import Settings

    sections = {"batch": batch, "checkpoint": checkpoint, "learner": learner, **sections}
    return Settings.isolated(prefix, bootstrap, root, {}, None, **sections)


class BenchmarkFailed(RuntimeError):
    """A run did not complete (a worker failed): no result is written for it."""


@dataclass(frozen=True)
class Row:
    contender: str
    stream: str | None
    metric: str
    value: float
    unit: str


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"model name\s*:\s*(.+)", text)
    return match.group(1).strip() if match else "unknown"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import psutil

    libs = {}
    for name in ("torch", "transformers", "peft", "river", "kafka-python", "numpy"):
        try:
            libs[name] = version(name)
        except PackageNotFoundError:
            continue
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    from deploy.kafka import kafka_version

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "gpu": gpu,
        "python": platform.python_version(),
        "os": platform.platform(),
        "libraries": libs,
        "kafka_broker": kafka_version(),
    }


def write_results(
    suite: str,
    params: dict[str, Any],
    rows: list[Row],
    notes: list[str] | None = None,
    directory: Path | None = None,
) -> Path:
    """Write the suite's result file to ``directory`` (default: the project's results,
    and then the README's tables are refreshed)."""
    target = directory or RESULTS_DIR
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{suite}.json"
    doc = {
        "suite": suite,
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "params": params,
        "results": [asdict(r) for r in rows],
        "notes": notes or [],
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    if directory is None:
        render_readme()
    return path


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _section(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    lines = [
        f"### `{doc['suite']}`",
        "",
        f"Measured {doc['generated_at'][:16].replace('T', ' ')} UTC on {m['cpu']},"
        f" {m['cores']} cores, {m['memory_bytes'] / 2**30:.0f} GiB{gpu};"
        f" Kafka {m.get('kafka_broker', '?')}, "
        + ", ".join(f"{k} {v}" for k, v in m.get("libraries", {}).items())
        + ".",
        "",
        "Parameters: " + ", ".join(f"`{k}={v}`" for k, v in doc["params"].items()) + ".",
        "",
        *_pivot(doc["results"]),
    ]
    plots = _plots_for(doc["suite"])
    lines += [""] + [f"![{p.stem}](results/{p.name})" for p in plots]
    if doc.get("notes"):
        lines += [""] + [f"- {n}" for n in doc["notes"]]
    return "\n".join(lines) + "\n"


def _plots_for(suite: str) -> list[Path]:
    """``<suite>.png`` and ``<suite>-*.png``, except another suite's own plots."""
    others = {p.stem for p in RESULTS_DIR.glob("*.json")} - {suite}
    plots = [RESULTS_DIR / f"{suite}.png", *RESULTS_DIR.glob(f"{suite}-*.png")]
    return sorted(
        p
        for p in plots
        if p.exists() and not any(p.stem == o or p.stem.startswith(o + "-") for o in others)
    )


def _pivot(results: list[dict[str, Any]]) -> list[str]:
    """One row per (contender, stream), one column per metric (unit in the header)."""
    metrics: dict[str, str] = {}
    table: dict[tuple[str, str], dict[str, float]] = {}
    for r in results:
        metrics.setdefault(r["metric"], r["unit"])
        table.setdefault((r["contender"], r["stream"] or ""), {})[r["metric"]] = float(r["value"])
    header = (
        "| contender | stream | "
        + " | ".join(f"{m} ({u})" if u else m for m, u in metrics.items())
        + " |"
    )
    lines = [header, "|---|---|" + "---:|" * len(metrics)]
    for (contender, stream), values in table.items():
        cells = [_fmt(values[m]) if m in values else "" for m in metrics]
        lines.append(f"| {contender} | {stream} | " + " | ".join(cells) + " |")
    return lines


def render_readme() -> None:
    """Rebuild the generated part of benchmarks/README.md from the result files."""
    sections = []
    for path in sorted(RESULTS_DIR.glob("*.json")):
        sections.append(_section(json.loads(path.read_text())))
    generated = (
        f"{BEGIN}\n<!-- generated by `python -m benchmarks`; do not edit by hand -->\n\n"
        + "\n".join(sections)
        + END
    )
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1] if END in rest else ""
    README.write_text(head + generated + tail)
