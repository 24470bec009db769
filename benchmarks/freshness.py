"""Suite ``freshness``: event→vector latency under a steady load, per learner and batch close.

For each learner, its capacity (events/s, saturated) is measured first in the same run;
then events are produced at a fraction of it (``--loads``, default 50 % and 80 %) for
``--seconds`` while the worker runs, and every learned event's latency — from its Kafka
record timestamp to its user's vector acknowledged by the broker — is collected. Each
load runs with the fixed batch close (``max_wait_s``) and with ``close_when_caught_up``.
The bar it reports against: p99 ≤ one learner step + 0.5 s at 50 % load.

    python -m benchmarks freshness [--learners river-mf,llm] [--loads 0.5,0.8] [--seconds 40]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import RESULTS_DIR, Row, bench_settings, write_results
from benchmarks.running import RunningWorker, send
from schemas.settings import Settings
from stream.sources.synthetic import SyntheticConfig, SyntheticStream

BATCH = {"river-mf": 256, "llm": 64}  # the batch sizes the speed figures use
MODES = ("fixed", "caught-up")


def settings_for(
    bootstrap: str, root: Path, learner: str, caught_up: bool, overlap: str
) -> Settings:
    settings: Settings = bench_settings(
        bootstrap,
        root,
        "fresh",
        batch={"max_events": BATCH[learner], "close_when_caught_up": caught_up},
        checkpoint={"every_events": 5000, "every_s": 60.0},
        learner={"kind": learner},
        worker={"overlap_delivery": overlap},
    )
    return settings


def _events(n: int) -> list[Any]:
    return list(SyntheticStream(SyntheticConfig(n_users=500, n_items=2000, seed=7)).events(n))


def capacity(bootstrap: str, root: Path, learner: str, n: int, overlap: str) -> tuple[float, float]:
    """(saturated events/s after the first batch, median step seconds)."""
    worker = RunningWorker(settings_for(bootstrap, root, learner, False, overlap))
    send(worker.settings, _events(n))  # before the worker starts: it always finds full batches
    with worker as running:
        running.wait_for(n, 1800)
    return running.rate_after_first_batch(), float(np.median(running.steps))


def _produce(settings: Settings, n: int, rate: float) -> None:
    send(settings, _events(n), rate)


def loaded(
    bootstrap: str,
    root: Path,
    learner: str,
    rate: float,
    seconds: float,
    caught_up: bool,
    overlap: str,
) -> dict[str, float]:
    """Latency figures with events produced at ``rate`` for ``seconds`` — by another
    process, as producers are: the worker's process does only the worker's work."""
    n = int(rate * seconds)
    with RunningWorker(settings_for(bootstrap, root, learner, caught_up, overlap)) as running:
        producer = multiprocessing.get_context("spawn").Process(
            target=_produce, args=(running.settings, n, rate)
        )
        producer.start()
        running.wait_for(n, 2 * seconds + 120)
        producer.join(60)
    latencies = np.concatenate(running.latencies[1:])  # the first batch waited for the start
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    sizes = [n for _, n in running.marks]
    return {
        "p50_s": float(p50),
        "p95_s": float(p95),
        "p99_s": float(p99),
        "mean_batch": float(np.mean(sizes)),
        "median_step_s": float(np.median(running.steps)),
    }


Runs = dict[tuple[float, str], dict[str, float]]  # (load, mode) -> figures


def rows_for(learner: str, cap: float, step: float, runs: Runs) -> list[Row]:
    rows = [
        Row(learner, "synthetic", "capacity_events_per_s", cap, "events/s"),
        Row(learner, "synthetic", "saturated_step_s", step, "s"),
    ]
    for (load, mode), r in runs.items():
        name = f"{learner} load={load:.0%} {mode}"
        for metric in ("p50_s", "p95_s", "p99_s", "median_step_s"):
            rows.append(Row(name, "synthetic", f"event_to_vector_{metric}", r[metric], "s"))
        rows.append(Row(name, "synthetic", "mean_batch_events", r["mean_batch"], "events"))
        bar = r["median_step_s"] + 0.5
        rows.append(Row(name, "synthetic", "p99_over_step_plus_half_s", r["p99_s"] / bar, "ratio"))
    return rows


def plot(results: dict[str, Runs], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (learner, runs) in zip(axes[0], results.items(), strict=True):
        labels = [f"{load:.0%}\n{mode}" for load, mode in runs]
        x = np.arange(len(labels))
        for k, q in enumerate(("p50_s", "p95_s", "p99_s")):
            ax.bar(x + (k - 1) * 0.27, [r[q] for r in runs.values()], 0.27, label=q[:3])
        ax.set_xticks(x, labels, fontsize=8)
        ax.set(title=f"event→vector latency, {learner}", ylabel="seconds")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks freshness")
    parser.add_argument("--learners", default="river-mf,llm")
    parser.add_argument("--loads", default="0.5,0.8")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--overlap", choices=("auto", "on", "off"), default="auto")
    parser.add_argument("--bootstrap-servers", default=None)
    args = parser.parse_args(argv)
    learners = args.learners.split(",")
    loads = [float(x) for x in args.loads.split(",")]
    from contextlib import ExitStack

    from deploy.kafka import LocalKafka

    results: dict[str, Runs] = {}
    rows: list[Row] = []
    with ExitStack() as stack:
        bootstrap = args.bootstrap_servers or stack.enter_context(LocalKafka()).bootstrap_servers
        root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for learner in learners:
            n = 20_000 if learner != "llm" else 1500
            cap, step = capacity(bootstrap, root, learner, n, args.overlap)
            print(f"{learner}: capacity {cap:.0f} events/s, step {step:.3f}s")
            runs = results[learner] = {}
            for load, mode in itertools.product(loads, MODES):
                caught_up = mode == "caught-up"
                r = runs[(load, mode)] = loaded(
                    bootstrap, root, learner, load * cap, args.seconds, caught_up, args.overlap
                )
                print(f"  load {load:.0%} {mode}: p50 {r['p50_s']:.2f}s p99 {r['p99_s']:.2f}s")
            rows += rows_for(learner, cap, step, runs)
    plot(results, RESULTS_DIR / "freshness.png")
    params = {
        "learners": learners,
        "loads": loads,
        "seconds": args.seconds,
        "batch": BATCH,
        "overlap_delivery": args.overlap,
    }
    write_results("freshness", params, rows)
    return 0
