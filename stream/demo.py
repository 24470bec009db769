"""``lorastream demo`` / ``make demo``: watch lorastream learn, live, on one machine.

Starts the local Apache Kafka broker (unless ``KAFKA_BOOTSTRAP_SERVERS`` names a cluster),
creates fresh topics, runs the worker with the LLM learner on the offline default model,
and feeds it the synthetic stream — users whose interests change half-way — at a chosen
rate. A live view shows throughput, freshness, learning quality, replay, drift alarms and
one user's top-5 items (read back from the user- and item-vector topics) as their interests
move. At the end: a summary table and a PNG of the run, with drift marked.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from learners.registry import build_learner
from schemas.settings import Settings
from stream.app import App, ExitStatus
from stream.clients import (
    StreamSetupError,
    close_producer,
    ensure_output_topics,
    make_admin,
    make_producer,
)
from stream.history import RunHistory
from stream.logs import setup_logging
from stream.metrics import WorkerMetrics
from stream.observers import BatchSummary
from stream.recommend import VectorIndex
from stream.report import from_history, render
from stream.sender import Pacer, send_events
from stream.sources.synthetic import TOPICS, ChangePoint, SyntheticConfig, SyntheticStream

__all__ = ["run_demo"]

log = logging.getLogger(__name__)
MIN_FREE_BYTES = 1_500 * 2**20


class DemoError(RuntimeError):
    """Something the person running the demo can fix; the message says how."""


def run_demo(
    events: int = 2000,
    rate: float = 30.0,
    bootstrap: str | None = None,
    learner: str | None = None,
    out_dir: Path | None = None,
    live: bool = True,
) -> int:
    """Run the demo; returns the process exit code."""
    console = Console()
    setup_logging("text")
    logging.getLogger().setLevel(logging.WARNING)
    try:
        with ExitStack() as stack:
            _check_memory()
            servers = bootstrap or _configured_cluster()
            if servers is None:
                servers = _start_broker(stack, console)
            out = out_dir or Path("runs") / datetime.now().strftime("demo-%Y%m%d-%H%M%S")
            out.mkdir(parents=True, exist_ok=True)
            settings = _settings(servers, out, learner)
            return Demo(settings, events, rate, out, console).run(live)
    except (DemoError, StreamSetupError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130


def _check_memory() -> None:
    free = psutil.virtual_memory().available
    if free < MIN_FREE_BYTES:
        raise DemoError(
            f"only {free / 2**20:.0f} MiB of memory are free; the demo needs about"
            f" {MIN_FREE_BYTES / 2**20:.0f} MiB (the model and the Kafka broker). Close other"
            " programs, or point KAFKA_BOOTSTRAP_SERVERS at a cluster elsewhere."
        )


def _configured_cluster() -> str | None:
    return (
        os.environ.get("LORASTREAM_KAFKA__BOOTSTRAP_SERVERS")
        or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        or None
    )


def _start_broker(stack: ExitStack, console: Console) -> str:
    from deploy.kafka import KafkaSetupError, LocalKafka, fetch_jars

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("fetching Apache Kafka's jars (once, from Maven Central)")
        try:
            fetch_jars()
            progress.update(task, description="starting a local Apache Kafka broker (KRaft)")
            broker = stack.enter_context(LocalKafka())
        except KafkaSetupError as exc:
            raise DemoError(str(exc)) from exc
    console.print(f"Kafka broker ready at [bold]{broker.bootstrap_servers}[/]")
    return broker.bootstrap_servers


def _settings(servers: str, out: Path, learner: str | None) -> Settings:
    sections: dict[str, Any] = {"batch": {"max_events": 64, "max_wait_s": 1.0}}
    if learner:
        sections["learner"] = {"kind": learner}
    return Settings.isolated("lorastream-demo", servers, out, None, **sections)


class Demo:
    """One demo run: a worker thread, a producer thread, a vector follower, a live view."""

    def __init__(
        self, settings: Settings, events: int, rate: float, out: Path, console: Console
    ) -> None:
        self.settings, self.n_events, self.rate = settings, events, rate
        self.out, self.console = out, console
        change = ChangePoint(at=events // 2, share=0.5)
        self.stream = SyntheticStream(SyntheticConfig(seed=7, change_points=(change,)))
        changed = self.stream.truth.changed_users[0]
        self.sample_user = f"user-{int(changed[0])}"
        self.sample_index = int(changed[0])
        self.history = RunHistory(path=out / "history.jsonl")
        self.index = VectorIndex()
        self.sent = 0
        self.drift: deque[str] = deque(maxlen=5)
        self.dead_letters = 0
        self.processed = 0  # records the worker finished (learned, duplicate or rejected)
        self.stop = threading.Event()
        self.started = time.monotonic()

    def observe(self, summary: BatchSummary) -> None:
        self.dead_letters += sum(summary.rejected.values())
        self.processed += summary.records
        for signal in summary.drift:
            self.drift.append(f"{time.strftime('%H:%M:%S')} {signal} (event {self.learned})")

    @property
    def learned(self) -> int:
        return int(self.history.points[-1]["events"]) if self.history.points else 0

    def run(self, live: bool) -> int:
        admin = make_admin(self.settings)
        try:
            ensure_output_topics(admin, self.settings, include_events=True)
        finally:
            admin.close()
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        ) as progress:
            progress.add_task(
                f"loading the model ({self.settings.learner.llm.model})"
                if self.settings.learner.kind == "llm"
                else "building the learner"
            )
            learner = build_learner(self.settings.learner)
        app = App(
            self.settings,
            learner=learner,
            observers=[self.history, self.observe],
            metrics=WorkerMetrics(process=False),
        )
        self.running = app.start()
        self.worker = self.running.worker
        follower = self.index.follow(self.settings, self.stop)
        producer = threading.Thread(target=self._produce, name="producer", daemon=True)
        producer.start()
        stalled = False
        try:
            stalled = self._watch(live, producer)
        except KeyboardInterrupt:
            self.console.print("stopping: finishing the batch in hand, checkpointing...")
        finally:
            self.stop.set()
            status = self.running.stop()
            follower.join(5)
            self.history.close()
        if status is not ExitStatus.OK:
            self.console.print(f"[red]the worker failed[/] ({status.name}): {app.error}")
            return int(status)
        if stalled:
            self.console.print(
                f"[red]the worker made no progress for {self._stall_s:.0f}s[/] with"
                f" {self.sent - self.processed} records waiting; stopped (see the log above)"
            )
            return int(ExitStatus.FAILED)
        self._summary()
        return 0

    def _produce(self) -> None:
        producer = make_producer(self.settings, compression_type=None)
        try:
            events = (e for e in self.stream.events(self.n_events) if not self.stop.is_set())

            def count(n: int) -> None:
                self.sent = n

            send_events(
                producer, self.settings.topics.events, events, Pacer(rate=self.rate), on_sent=count
            )
        finally:
            close_producer(producer, 10)

    @property
    def _stall_s(self) -> float:
        return max(120.0, 2 * self.settings.metrics.stall_after_s)

    def _watch(self, live: bool, producer: threading.Thread) -> bool:
        """Until every record sent is processed or the worker ended; True if it stalled
        (records waiting, none processed for :attr:`_stall_s`)."""
        progress = {"processed": -1, "at": time.monotonic()}

        def stalled() -> bool:
            if self.processed != progress["processed"] or self.processed >= self.sent:
                progress.update(processed=self.processed, at=time.monotonic())
            return time.monotonic() - progress["at"] > self._stall_s

        def finished() -> bool:
            done = not producer.is_alive() and self.processed >= self.sent
            return done or not self.worker_alive() or stalled()

        shown = Live(self._view(), console=self.console, refresh_per_second=2) if live else None
        with shown or contextlib.nullcontext() as view:
            while not finished():
                time.sleep(0.5)
                if view is not None:
                    view.update(self._view())
            if view is not None:
                view.update(self._view())
        return stalled()

    def worker_alive(self) -> bool:
        return self.running.alive

    # -- the live view -----------------------------------------------------------------------

    def _view(self) -> Group:
        return Group(self._stats(), self._user_panel())

    def _stats(self) -> Table:
        points = list(self.history.points)
        recent = [p for p in points if p["t"] >= time.time() - 10]
        rate = (sum(p["learned"] for p in recent) / 10.0) if recent else 0.0
        last = points[-1] if points else {}
        latencies = self.worker.metrics.event_to_vector
        table = Table(title="lorastream demo — live", expand=True)
        for column in (
            "sent / learned",
            "events/s",
            "latency p50/p99",
            "loss",
            "HR@10",
            "replay",
            "drift alarms",
        ):
            table.add_column(column, justify="center", no_wrap=column != "drift alarms")
        table.add_row(
            f"{self.sent} / {self.learned}",
            f"{rate:.0f}",
            f"{latencies.quantile(0.5):.1f}s/{latencies.quantile(0.99):.1f}s" if points else "-",
            f"{last['loss']:.3f}" if last.get("loss") is not None else "-",
            f"{last['hr_at_10']:.2f}" if "hr_at_10" in last else "-",
            f"{last['replay_fill']:.1%}" if "replay_fill" in last else "-",
            "\n".join(self.drift) or "none yet",
        )
        return table

    def _user_panel(self) -> Panel:
        at = min(self.learned, self.n_events - 1)
        likes = self.stream.truth.liked_topics(self.sample_index, at)
        liked = ", ".join(TOPICS[t][0] for t in sorted(likes))
        change = self.stream.truth.change_points[0].at
        phase = "after" if at >= change else "before"
        lines = [
            f"[bold]{self.sample_user}[/] likes [green]{liked}[/] now"
            f" ({phase} the interest change at event {change})",
            "",
        ]
        recs = self.index.top_k(self.sample_user, 5)
        for rank, rec in enumerate(recs, start=1):
            topic = self.stream.truth.topic_of(rec.item_id)
            mark = "[green]✓[/]" if topic in likes else " "
            title = " | ".join((rec.text or rec.item_id).split(" | ")[:2])  # title | categories
            lines.append(f"{mark} {rank}. {title}")
        if not recs:
            lines.append("(no vector for this user yet)")
        return Panel("\n".join(lines), title="one user's top 5, from the vector topics")

    # -- the end ---------------------------------------------------------------------------

    def _summary(self) -> None:
        points = list(self.history.points)
        elapsed = time.monotonic() - self.started
        table = Table(title="lorastream demo — summary")
        table.add_column("measure")
        table.add_column("value", justify="right")
        hr = [p["hr_at_10"] for p in points if "hr_at_10" in p]
        lat = self.worker.metrics.event_to_vector
        learned = self.worker.events_learned
        learn_s = sum(p["learn_s"] for p in points)
        drift = self.worker.drift.monitor.detections if self.worker.drift else []
        rows = [
            ("events sent / learned", f"{self.sent} / {learned}"),
            ("wall time", f"{elapsed:.0f} s"),
            ("learner throughput", f"{learned / learn_s:.0f} events/s" if learn_s else "-"),
            (
                "event→vector latency p50 / p99",
                f"{lat.quantile(0.5):.1f} s / {lat.quantile(0.99):.1f} s",
            ),
            (
                "prequential HR@10 (rolling): first / last",
                f"{hr[0]:.2f} / {hr[-1]:.2f}" if hr else "-",
            ),
            ("drift detections", ", ".join(d.signal for d in drift) or "none"),
            ("dead letters", str(self.dead_letters)),
            ("run directory", str(self.out.resolve())),
        ]
        for name, value in rows:
            table.add_row(name, value)
        self.console.print(table)
        if len(points) > 1:
            path = render(
                from_history(points),
                self.out / "quality.png",
                title=f"lorastream demo ({self.settings.learner.kind} learner)",
            )
            self.console.print(f"plot of the run: [bold]{path.resolve()}[/]")
        recs = self.index.top_k(self.sample_user, 5)
        if recs:
            likes = self.stream.truth.liked_topics(self.sample_index, self.n_events - 1)
            hits = sum(self.stream.truth.topic_of(r.item_id) in likes for r in recs)
            self.console.print(
                f"{self.sample_user}'s top 5 at the end: {hits} of 5 in topics they like now"
            )
