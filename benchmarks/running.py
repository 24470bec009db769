"""A worker running for a benchmark: topics, events in, what its batches reported.

:class:`RunningWorker` starts the real application (``stream/app.py``) in the background
with an observer that keeps, per batch, when it was acknowledged, its records, its
latencies (event record timestamp → vectors acknowledged) and its learner step time.
Leaving the ``with`` block stops the worker; :class:`BenchmarkFailed` unless it ended
cleanly, so no result is written from a failed run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.harness import BenchmarkFailed
from learners.base import Learner
from schemas.events import InteractionEvent
from schemas.settings import Settings
from stream.app import App, ExitStatus, Running
from stream.clients import close_producer, ensure_output_topics, make_admin, make_producer
from stream.metrics import WorkerMetrics
from stream.observers import BatchSummary
from stream.sender import Pacer, send_events

__all__ = ["RunningWorker", "create_topics", "send", "settings_environ"]


def create_topics(settings: Settings) -> None:
    """The run's events topic and output topics."""
    admin = make_admin(settings)
    try:
        ensure_output_topics(admin, settings, include_events=True)
    finally:
        admin.close()


def settings_environ(settings: Settings) -> dict[str, str]:
    """``settings`` as ``LORASTREAM_`` variables (the fields that differ from the defaults),
    for a worker in another process."""
    out: dict[str, str] = {}

    def walk(prefix: str, data: dict[str, Any]) -> None:
        for name, value in data.items():
            key = f"{prefix}__{name.upper()}"
            if isinstance(value, dict):
                walk(key, value)
            else:
                out[key] = value if isinstance(value, str) else json.dumps(value)

    for section, data in settings.model_dump(mode="json", exclude_defaults=True).items():
        walk(f"LORASTREAM_{section.upper()}", data)
    if Settings.load(None, environ=out) != settings:
        raise ValueError("these settings do not survive the trip through variables")
    return out


def send(
    settings: Settings, events: Sequence[InteractionEvent], rate: float | None = None
) -> float:
    """Send ``events`` (at ``rate`` events/s, or as fast as acknowledged); returns events/s."""
    producer = make_producer(settings, compression_type=None)
    started = time.perf_counter()
    try:
        send_events(producer, settings.topics.events, events, Pacer(rate=rate))
    finally:
        close_producer(producer, 10)
    return len(events) / (time.perf_counter() - started)


class RunningWorker:
    """The worker app over ``settings`` in the background, and what its batches reported."""

    def __init__(self, settings: Settings, learner: Learner | None = None) -> None:
        create_topics(settings)
        self.settings = settings
        self.marks: list[tuple[float, int]] = []  # (perf_counter at acknowledgement, records)
        self.latencies: list[np.ndarray] = []
        self.steps: list[float] = []  # learner seconds of batches that learned
        self.app = App(
            settings,
            learner=learner,
            observers=[self._observe],
            metrics=WorkerMetrics(process=False),
        )

    def _observe(self, summary: BatchSummary) -> None:
        self.marks.append((time.perf_counter(), summary.records))
        if summary.learned:
            self.latencies.append(summary.latencies)
            self.steps.append(summary.learn_seconds)

    def __enter__(self) -> RunningWorker:
        """Start, and return once the worker is ready (learner loaded, partitions assigned)."""
        self.running: Running = self.app.start()
        self.worker = self.running.worker
        deadline = time.monotonic() + 300
        while not self.worker.health.ready()[0]:
            if not self.alive or time.monotonic() > deadline:
                self.running.stop(30)
                raise BenchmarkFailed(f"the worker did not become ready: {self.app.error}")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        status = self.running.stop(120)
        if status is not ExitStatus.OK and exc[0] is None:
            raise BenchmarkFailed(f"the worker ended with {status.name}: {self.app.error}")

    @property
    def alive(self) -> bool:
        return self.running.alive

    def processed(self) -> int:
        return sum(n for _, n in self.marks)

    def wait_for(self, n: int, timeout_s: float) -> None:
        """Until ``n`` records are processed; :class:`BenchmarkFailed` if the worker dies or
        the time runs out."""
        deadline = time.monotonic() + timeout_s
        while self.processed() < n:
            if not self.alive:
                raise BenchmarkFailed(f"the worker died: {self.app.error}")
            if time.monotonic() > deadline:
                raise BenchmarkFailed(f"{self.processed()} of {n} records in {timeout_s:.0f}s")
            time.sleep(0.05)

    def rate_after_first_batch(self) -> float:
        """Records/s from the first batch's acknowledgement to the last's (start-up excluded)."""
        (t0, n0), (t1, _) = self.marks[0], self.marks[-1]
        return (self.processed() - n0) / (t1 - t0)

    def stage_seconds(self) -> dict[str, Any]:
        return dict(self.worker.stages.seconds)
