"""``lorastream demo``: the whole path on one machine, in a few minutes.

Starts the local Apache Kafka broker (unless a cluster is configured), creates
fresh topics, runs the worker in a background thread, feeds it the synthetic
stream, and reports what it learned.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from learners.registry import build_learner
from schemas.settings import Settings
from stream.clients import StreamSetupError, ensure_output_topics, make_admin, make_producer
from stream.logs import setup_logging
from stream.metrics import WorkerMetrics
from stream.sender import send_events
from stream.sources.synthetic import ChangePoint, SyntheticConfig, SyntheticStream
from stream.worker import Worker

__all__ = ["run_demo"]

log = logging.getLogger(__name__)
console = Console()


def run_demo(
    events: int = 2000,
    bootstrap: str | None = None,
    learner: str | None = None,
    workdir: Path | None = None,
) -> int:
    """Run the demo; returns the process exit code."""
    from deploy.kafka import KafkaSetupError, LocalKafka

    setup_logging("text")
    logging.getLogger().setLevel(logging.WARNING)
    with ExitStack() as stack:
        settings = Settings.load()
        servers = bootstrap or (settings.kafka.bootstrap_servers if _configured_cluster() else None)
        if servers is None:
            console.print("starting a local Apache Kafka broker (KRaft)...")
            try:
                broker = stack.enter_context(LocalKafka())
            except KafkaSetupError as exc:
                console.print(f"[red]error:[/] {exc}")
                return 2
            servers = broker.bootstrap_servers
        run_id = uuid.uuid4().hex[:8]
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        overrides: dict[str, Any] = dict(
            kafka={"bootstrap_servers": servers},
            topics={
                "events": f"lorastream-demo-{run_id}.events",
                "user_vectors": f"lorastream-demo-{run_id}.user-vectors",
                "item_vectors": f"lorastream-demo-{run_id}.item-vectors",
                "dead_letters": f"lorastream-demo-{run_id}.dead-letters",
            },
            consumer={"group_id": f"lorastream-demo-{run_id}"},
            checkpoint={"dir": str(root / "checkpoints")},
            metrics={"enabled": False},
            **({"learner": {"kind": learner}} if learner else {}),
        )
        settings = Settings.load(None, None, **overrides)
        try:
            return _run(settings, events)
        except StreamSetupError as exc:
            console.print(f"[red]error:[/] {exc}")
            return 2


def _configured_cluster() -> bool:
    import os

    return bool(
        os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        or os.environ.get("LORASTREAM_KAFKA__BOOTSTRAP_SERVERS")
    )


def _run(settings: Settings, n_events: int) -> int:
    admin = make_admin(settings)
    try:
        ensure_output_topics(admin, settings, include_events=True)
    finally:
        admin.close()
    learner = build_learner(settings.learner)
    metrics = WorkerMetrics(process=False)
    worker = Worker(settings, learner, metrics)
    thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    thread.start()
    stream = SyntheticStream(SyntheticConfig(change_points=(ChangePoint(n_events // 2, 0.5),)))
    producer = make_producer(settings)
    started = time.monotonic()
    try:
        sent = send_events(producer, settings.topics.events, stream.events(n_events))
    finally:
        producer.close(10)
    console.print(f"sent {sent} events; learning...")
    while worker.events_learned < sent and thread.is_alive():
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    worker.request_stop()
    thread.join(settings.worker.shutdown_timeout_s + 10)
    _summary(worker, sent, elapsed, stream)
    return 0


def _summary(worker: Worker, sent: int, elapsed: float, stream: SyntheticStream) -> None:
    table = Table(title="lorastream demo")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("events sent", str(sent))
    table.add_row("events learned", str(worker.events_learned))
    table.add_row("throughput (events/s)", f"{worker.events_learned / elapsed:.0f}")
    table.add_row(
        "event→vector latency p50 / p99 (s)",
        f"{worker.metrics.event_to_vector.quantile(0.5):.2f} / "
        f"{worker.metrics.event_to_vector.quantile(0.99):.2f}",
    )
    console.print(table)
    users = worker.learner.user_vectors(["user-0"])
    items = worker.learner.item_vectors([stream.item_id(i) for i in range(len(stream.items))])
    if len(users) and len(items):
        scores = items.vectors @ users.vectors[0]
        top = np.argsort(-scores)[:5]
        console.print("user-0's top 5 items now:")
        for k in top:
            item = stream.items[int(items.ids[k].rsplit("-", 1)[1])][1]
            console.print(f"  {item.title}  [dim]({', '.join(item.categories)})[/]")
