"""Suite ``spine``: the stream machinery's own throughput, with the cheap River learner.

Pre-produces a synthetic stream to a fresh topic on the real local Kafka broker,
then runs the worker (River ``BiasedMF`` learner) over it at several batch sizes
and measures events/s consumed → validated → learned → vectors acknowledged,
and the share of the work thread's time in each stage.

    python -m benchmarks spine [--events 20000] [--batch-sizes 64,256,1024]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import RESULTS_DIR, BenchmarkFailed, Row, bench_settings, write_results
from learners.river_mf import RiverMFLearner
from schemas.settings import Settings
from stream.app import App, ExitStatus
from stream.clients import ensure_output_topics, make_admin, make_producer
from stream.metrics import WorkerMetrics
from stream.observers import BatchSummary
from stream.sender import send_events
from stream.sources.synthetic import SyntheticConfig, SyntheticStream

STAGES = ("poll", "decode", "dedupe", "learn", "vectors", "deliver", "checkpoint", "commit")


def settings_for(bootstrap: str, batch: int, root: Path) -> Settings:
    settings: Settings = bench_settings(
        bootstrap,
        root,
        "bench",
        batch={"max_events": batch, "max_wait_s": 0.5},
        checkpoint={"every_events": 5000, "every_s": 60.0},
        learner={"kind": "river-mf"},
    )
    return settings


def run_once(bootstrap: str, n_events: int, batch: int, root: Path) -> dict[str, Any]:
    settings = settings_for(bootstrap, batch, root)
    admin = make_admin(settings)
    try:
        ensure_output_topics(admin, settings, include_events=True)
    finally:
        admin.close()
    stream = SyntheticStream(SyntheticConfig(n_users=2000, n_items=5000, seed=1))
    producer = make_producer(settings, compression_type=None)
    t0 = time.perf_counter()
    send_events(producer, settings.topics.events, stream.events(n_events))
    produce_s = time.perf_counter() - t0
    producer.close(10)

    marks: list[tuple[float, int]] = []

    def observe(summary: BatchSummary) -> None:
        marks.append((time.perf_counter(), summary.records))

    app = App(
        settings,
        learner=RiverMFLearner(),
        observers=[observe],
        metrics=WorkerMetrics(process=False),
    )
    running = app.start()
    worker = running.worker
    deadline = time.monotonic() + 600
    while sum(n for _, n in marks) < n_events and running.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    status = running.stop()
    if status is not ExitStatus.OK or sum(n for _, n in marks) < n_events:
        raise BenchmarkFailed(f"the worker ended with {status.name}: {app.error}")
    first_end, first_n = marks[0]
    last_end = marks[-1][0]
    measured = sum(n for _, n in marks) - first_n
    stage = {s: worker.stages.seconds.get(s, 0.0) for s in STAGES}
    return {
        "events_per_s": measured / (last_end - first_end),
        "produce_events_per_s": n_events / produce_s,
        "stages": stage,
    }


def plot(results: dict[int, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    sizes = sorted(results)
    ax1.bar([str(s) for s in sizes], [results[s]["events_per_s"] for s in sizes], color="#4c72b0")
    ax1.set(title="worker throughput (River learner)", xlabel="batch.max_events", ylabel="events/s")
    bottom = [0.0] * len(sizes)
    for stage in STAGES:
        shares = []
        for s in sizes:
            total = sum(results[s]["stages"].values())
            shares.append(results[s]["stages"][stage] / total)
        ax2.bar([str(s) for s in sizes], shares, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, shares, strict=True)]
    ax2.set(title="share of work-thread time per stage", xlabel="batch.max_events")
    ax2.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks spine")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch-sizes", default="64,256,1024")
    parser.add_argument("--bootstrap-servers", default=None)
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    from contextlib import ExitStack

    from deploy.kafka import LocalKafka

    results: dict[int, dict[str, Any]] = {}
    with ExitStack() as stack:
        bootstrap = args.bootstrap_servers or stack.enter_context(LocalKafka()).bootstrap_servers
        root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for size in sizes:
            results[size] = run_once(bootstrap, args.events, size, root)
            print(f"batch {size}: {results[size]['events_per_s']:.0f} events/s")
    rows = []
    for size, r in results.items():
        contender = f"river-mf batch={size}"
        rows.append(Row(contender, "synthetic", "events_per_s", r["events_per_s"], "events/s"))
        total = sum(r["stages"].values())
        for stage, seconds in r["stages"].items():
            rows.append(
                Row(contender, "synthetic", f"stage_share_{stage}", seconds / total, "fraction")
            )
    rows.append(
        Row(
            "producer (kafka-python)",
            "synthetic",
            "events_per_s",
            results[sizes[0]]["produce_events_per_s"],
            "events/s",
        )
    )
    plot(results, RESULTS_DIR / "spine.png")
    write_results(
        "spine", {"events": args.events, "batch_sizes": sizes, "learner": "river-mf"}, rows
    )
    return 0
