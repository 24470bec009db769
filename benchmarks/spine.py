"""Suite ``spine``: the stream machinery's own throughput, against the Kafka client's ceiling.

Pre-produces a synthetic stream to a fresh topic on the real local Kafka broker, reads it
once with a bare kafka-python consumer (poll only: the ceiling for consuming on this
machine), then runs the worker over it for each learner (River ``BiasedMF``, and a no-op
learner that leaves only the machinery), vector encoding and batch size, and measures
events/s consumed → validated → learned → vectors acknowledged, the share of the work
thread's time in each stage, and the output bytes per event (read back from the topics).
One batch size also runs with ``worker.overlap_delivery`` on, for the same-run comparison.

    python -m benchmarks spine [--events 20000] [--batch-sizes 64,256,1024]
                               [--learners river-mf,null] [--encodings json,binary-f16]
                               [--overlap-batch 256]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from benchmarks.harness import RESULTS_DIR, BenchmarkFailed, Row, bench_settings, write_results
from benchmarks.null_learner import NullLearner
from benchmarks.running import RunningWorker, create_topics, send
from learners.river_mf import RiverMFLearner
from schemas.settings import Settings
from stream.sources.synthetic import SyntheticConfig, SyntheticStream

STAGES = ("poll", "decode", "dedupe", "learn", "vectors", "deliver", "checkpoint", "commit")
LEARNERS = {"river-mf": RiverMFLearner, "null": NullLearner}


@dataclass(frozen=True)
class Config:
    learner: str
    encoding: str
    batch: int
    overlap: str = "auto"  # worker.overlap_delivery (auto: off for these learners)

    @property
    def name(self) -> str:
        return f"{self.learner} batch={self.batch} {self.encoding}" + (
            "" if self.overlap == "auto" else f" overlap {self.overlap}"
        )


def settings_for(bootstrap: str, config: Config, root: Path) -> Settings:
    settings: Settings = bench_settings(
        bootstrap,
        root,
        "bench",
        batch={"max_events": config.batch, "max_wait_s": 0.5},
        checkpoint={"every_events": 5000, "every_s": 60.0},
        learner={"kind": "river-mf"},  # the instance is passed in; this names the section
        topics={"vector_encoding": config.encoding},
        worker={"overlap_delivery": config.overlap},
    )
    return settings


def _read_all(settings: Settings, topics: list[str]) -> tuple[int, int, float]:
    """(records, value bytes, seconds) of reading ``topics`` from start to end, poll only."""
    consumer = KafkaConsumer(**settings.kafka.client_kwargs(), enable_auto_commit=False)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records = size = 0
        t0 = time.perf_counter()
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for batch in consumer.poll(timeout_ms=500, max_records=10_000).values():
                records += len(batch)
                size += sum(len(r.value or b"") for r in batch)
        return records, size, time.perf_counter() - t0
    finally:
        consumer.close()


def raw_consume_rate(settings: Settings, n_events: int) -> float:
    """The bare kafka-python consumer's events/s over the events topic (the ceiling)."""
    records, _, seconds = _read_all(settings, [settings.topics.events])
    if records < n_events:
        raise BenchmarkFailed(f"the raw consumer read {records} of {n_events} events")
    return records / seconds


def run_once(bootstrap: str, n_events: int, config: Config, root: Path) -> dict[str, Any]:
    settings = settings_for(bootstrap, config, root)
    create_topics(settings)
    stream = SyntheticStream(SyntheticConfig(n_users=2000, n_items=5000, seed=1))
    produce_rate = send(settings, list(stream.events(n_events)))  # pre-produced: full batches
    ceiling = raw_consume_rate(settings, n_events)
    with RunningWorker(settings, LEARNERS[config.learner]()) as running:
        running.wait_for(n_events, 600)
    t = settings.topics
    _, out_bytes, _ = _read_all(settings, [t.user_vectors, t.item_vectors])
    stages = running.stage_seconds()
    return {
        "events_per_s": running.rate_after_first_batch(),
        "produce_events_per_s": produce_rate,
        "raw_consume_events_per_s": ceiling,
        "output_bytes_per_event": out_bytes / n_events,
        "stages": {s: stages.get(s, 0.0) for s in STAGES},
    }


def plot(results: dict[Config, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(results)
    labels = [c.name.replace(" ", "\n") for c in configs]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
    ceiling = max(r["raw_consume_events_per_s"] for r in results.values())
    ax1.bar(labels, [results[c]["events_per_s"] for c in configs], color="#4c72b0")
    ax1.axhline(ceiling, color="#c44e52", ls="--", label="bare consumer (poll only)")
    ax1.set(title="worker throughput", ylabel="events/s")
    ax1.legend(fontsize=7)
    ax1.tick_params(axis="x", labelsize=6)
    bottom = [0.0] * len(configs)
    for stage in STAGES:
        shares = [results[c]["stages"][stage] / sum(results[c]["stages"].values()) for c in configs]
        ax2.bar(labels, shares, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, shares, strict=True)]
    ax2.set(title="share of work-thread time per stage")
    ax2.tick_params(axis="x", labelsize=6)
    ax2.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def rows_of(results: dict[Config, dict[str, Any]]) -> list[Row]:
    rows = []
    for config, r in results.items():
        name = config.name
        rows.append(Row(name, "synthetic", "events_per_s", r["events_per_s"], "events/s"))
        ratio = r["events_per_s"] / r["raw_consume_events_per_s"]
        rows.append(Row(name, "synthetic", "ratio_to_bare_consumer", ratio, "fraction"))
        rows.append(
            Row(name, "synthetic", "output_bytes_per_event", r["output_bytes_per_event"], "bytes")
        )
        total = sum(r["stages"].values())
        for stage, seconds in r["stages"].items():
            rows.append(Row(name, "synthetic", f"stage_share_{stage}", seconds / total, "fraction"))
    for client, key in (
        ("consumer (kafka-python, poll only)", "raw_consume_events_per_s"),
        ("producer (kafka-python)", "produce_events_per_s"),
    ):
        rates = sorted(r[key] for r in results.values())
        rows.append(Row(client, "synthetic", "events_per_s", rates[len(rates) // 2], "events/s"))
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks spine")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch-sizes", default="64,256,1024")
    parser.add_argument("--learners", default="river-mf,null")
    parser.add_argument("--encodings", default="json,binary-f16")
    parser.add_argument(
        "--overlap-batch",
        type=int,
        default=256,
        help="also run this batch size with worker.overlap_delivery on (0: never)",
    )
    parser.add_argument("--bootstrap-servers", default=None)
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    configs = [
        Config(learner, encoding, size, overlap)
        for learner, encoding, size in itertools.product(
            args.learners.split(","), args.encodings.split(","), sizes
        )
        for overlap in (("auto", "on") if size == args.overlap_batch else ("auto",))
    ]
    from contextlib import ExitStack

    from deploy.kafka import LocalKafka

    results: dict[Config, dict[str, Any]] = {}
    with ExitStack() as stack:
        bootstrap = args.bootstrap_servers or stack.enter_context(LocalKafka()).bootstrap_servers
        root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for config in configs:
            r = results[config] = run_once(bootstrap, args.events, config, root)
            print(
                f"{config.name}: {r['events_per_s']:.0f} events/s"
                f" (bare consumer {r['raw_consume_events_per_s']:.0f}),"
                f" {r['output_bytes_per_event']:.0f} output bytes/event"
            )
    plot(results, RESULTS_DIR / "spine.png")
    parameters = {
        "events": args.events,
        "batch_sizes": sizes,
        "learners": args.learners.split(","),
        "encodings": args.encodings.split(","),
        "overlap_batch": args.overlap_batch,
    }
    write_results("spine", parameters, rows_of(results))
    return 0
