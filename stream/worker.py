"""The stream worker: events in, learner updates, vectors out, offsets committed last.

One thread does the work (poll, decode, batch, learn, publish, checkpoint,
commit); kafka-python's I/O thread runs the heartbeats and the rebalance
callbacks, which only do cheap, non-blocking things (see :class:`_Rebalance`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from learners.base import Learner, LearnReport
from schemas.dead_letter import RejectCode
from schemas.settings import Settings
from stream.batcher import Batch, Decoded, MicroBatcher, PartitionKey, positions
from stream.checkpoint import Checkpoint, CheckpointStore
from stream.clients import (
    ensure_output_topics,
    make_admin,
    make_consumer,
    make_producer,
    require_topic,
)
from stream.decode import RawRecord, Rejection, decode
from stream.dedupe import RecentEvents
from stream.drift import Detection, DriftMonitor
from stream.http import Health
from stream.metrics import WorkerMetrics
from stream.publisher import Publisher

__all__ = [
    "BatchSummary",
    "DeadLetterPolicy",
    "ErrorPolicy",
    "InvalidRecord",
    "StopPolicy",
    "Worker",
]

log = logging.getLogger(__name__)


class InvalidRecord(RuntimeError):
    """Raised by :class:`StopPolicy` on the first record that fails validation."""


class ErrorPolicy(Protocol):
    """What happens to a record that cannot be learned."""

    def on_rejected(self, rejection: Rejection, publisher: Publisher) -> None: ...


class DeadLetterPolicy:
    """Send it to the dead-letter topic and go on (the default)."""

    def on_rejected(self, rejection: Rejection, publisher: Publisher) -> None:
        publisher.dead_letter(rejection)


class StopPolicy:
    """Stop the worker on the first bad record, without committing it (for development)."""

    def on_rejected(self, rejection: Rejection, publisher: Publisher) -> None:
        r = rejection.record
        raise InvalidRecord(
            f"{r.topic}[{r.partition}]@{r.offset}: {rejection.code.value}: {rejection.reason}"
        )


@dataclass
class BatchSummary:
    """What one batch did, for observers (drift detection, the demo's live view)."""

    records: int
    learned: int
    duplicates: int
    rejected: dict[str, int]
    report: LearnReport | None
    learn_seconds: float
    batch_seconds: float
    latencies: np.ndarray  # event record timestamp -> vectors acknowledged, seconds
    users: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)  # signals whose detector fired


BatchObserver = Callable[[BatchSummary], None]


def _key(tp: TopicPartition) -> PartitionKey:
    return (tp.topic, tp.partition)


class _Rebalance(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on kafka-python's I/O thread while the work thread waits inside ``poll()``.

    Nothing slow happens here: no learning, no checkpoint. On revocation the
    pending (not yet learned) records of the revoked partitions are released —
    their next owner reads them again from the committed offset — and the
    offsets of work already finished (learned, vectors acknowledged) are
    committed before the partitions are given up; the commit is awaited, which
    keeps heartbeats running. On assignment each partition is positioned where
    this worker's learner state continues: its processed offset, else the
    restored checkpoint's, else the group's committed offset.
    """

    def __init__(self, worker: Worker, consumer: KafkaConsumer) -> None:
        self._worker, self._consumer = worker, consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        offsets = self._worker._release(revoked, commit=True)
        if offsets:
            try:
                await self._consumer.commit_async(offsets)
                self._worker._committed_on_revoke(offsets)
            except Exception as exc:  # the next owner re-reads; nothing is lost
                log.warning("commit on revocation failed (%s); the next owner re-reads", exc)

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self._worker._release(lost, commit=False)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._worker._assign(assigned, self._consumer)


class Worker:
    """Consumes interaction events, learns them in mini-batches, publishes vectors.

    Commit order, per batch (``_process`` then ``_maybe_checkpoint``):

    1. the learner applies the batch (``learn_many``), in memory;
    2. user (and item) vectors and the batch's dead letters are sent, and the
       producer is flushed until the broker has acknowledged every record
       (``acks=all``, idempotent); failures are re-sent, never skipped;
    3. only then do the batch's offsets count as *processed*;
    4. when a checkpoint is due (every N events, every T seconds, when the
       stream goes idle, on shutdown), the learner's state is written together
       with the processed offsets it reflects, atomically;
    5. only then are those offsets committed to Kafka.

    Without a checkpoint directory step 4 is skipped and step 5 follows step 3.
    On start the newest intact checkpoint is restored and its partitions are
    re-read from its offsets, so after a crash every event since the checkpoint
    is learned again rather than lost. On SIGTERM/SIGINT (:meth:`request_stop`)
    the batch being collected is finished, a checkpoint written, offsets
    committed, the consumer closed; a watchdog ends the process (exit code 3)
    if that takes longer than ``worker.shutdown_timeout_s``.
    """

    def __init__(
        self,
        settings: Settings,
        learner: Learner,
        metrics: WorkerMetrics | None = None,
        *,
        health: Health | None = None,
        error_policy: ErrorPolicy | None = None,
        observers: Iterable[BatchObserver] = (),
    ) -> None:
        self.settings = settings
        self.learner = learner
        self.metrics = metrics or WorkerMetrics(process=False)
        self.health = health or Health(settings.metrics.stall_after_s)
        self.error_policy = error_policy or (
            StopPolicy() if settings.worker.on_invalid == "stop" else DeadLetterPolicy()
        )
        self.observers = list(observers)
        b = settings.batch
        self._batcher = MicroBatcher(b.max_events, b.max_wait_s, b.max_bytes)
        self._recent = RecentEvents(settings.worker.dedupe_window)
        c = settings.checkpoint
        self._store = CheckpointStore(c.dir, c.keep) if c.dir is not None else None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards the offset maps shared with the I/O thread
        self._processed: dict[PartitionKey, int] = {}
        self._committed: dict[PartitionKey, int] = {}
        self._assigned: set[PartitionKey] = set()
        self._released: list[set[PartitionKey]] = []
        self._unsaved_records = 0
        self._last_checkpoint_at = time.monotonic()
        self._idle_since: float | None = None  # first empty poll since the last record
        self.stages = StageClock(self.metrics.stage_seconds)
        self.drift = (
            DriftMonitor(settings.drift, on_detection=self._on_drift)
            if settings.drift.enabled
            else None
        )
        self._adapting = False
        self._refresh_queue: deque[str] = deque()
        self.metrics.lr_factor.set(1.0)
        self.metrics.drift_boost.set(0.0)
        self.restored: Checkpoint | None = None
        self.records_seen = 0
        self.events_learned = 0

    # -- lifecycle -----------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the batch in hand, checkpoint, commit, close (safe from signal handlers)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Run until :meth:`request_stop`; raises on errors it cannot recover from."""
        s = self.settings
        with ExitStack() as stack:
            admin = make_admin(s)
            stack.callback(admin.close)
            require_topic(admin, s.topics.events)
            ensure_output_topics(admin, s)
            producer = make_producer(s)
            stack.callback(producer.close, 10)
            publisher = Publisher(producer, s.topics, s.kafka.client_id)
            self._restore()
            consumer = make_consumer(s)
            stack.callback(self._close_consumer, consumer)
            consumer.subscribe([s.topics.events], listener=_Rebalance(self, consumer))
            self.health.model_loaded = True
            self._consume(consumer, publisher)
            self._drain(consumer, publisher)

    def _close_consumer(self, consumer: KafkaConsumer) -> None:
        watchdog = threading.Timer(self.settings.worker.shutdown_timeout_s, _hard_exit)
        watchdog.daemon = True
        watchdog.start()
        try:
            consumer.close(autocommit=False)
        finally:
            watchdog.cancel()

    def _restore(self) -> None:
        if self._store is None:
            return
        checkpoint = self._store.restore(self.learner, self.settings.topics.events)
        # checkpoint age counts from the restored checkpoint, or from now when there is none
        self.metrics.last_checkpoint.set(
            datetime.fromisoformat(checkpoint.manifest["created_at"]).timestamp()
            if checkpoint is not None
            else time.time()
        )
        if checkpoint is None:
            log.info("no checkpoint in %s: starting from a fresh learner", self._store.root)
            return
        self.restored = checkpoint
        arrays = checkpoint.stream_arrays()
        self._recent = RecentEvents.from_array(
            self.settings.worker.dedupe_window, arrays["recent_event_hashes"]
        )
        with self._lock:
            self._processed = dict(checkpoint.offsets)
        log.info(
            "resuming from checkpoint %s at offsets %s",
            checkpoint.path.name,
            _fmt(checkpoint.offsets),
        )

    def _drain(self, consumer: KafkaConsumer, publisher: Publisher) -> None:
        """Graceful stop: finish the open batch, checkpoint, commit (bounded in time)."""
        watchdog = threading.Timer(self.settings.worker.shutdown_timeout_s, _hard_exit)
        watchdog.daemon = True
        watchdog.start()
        try:
            self._apply_released()
            if len(self._batcher):
                self._process(self._batcher.take(), publisher)
            self._maybe_checkpoint(consumer, force=True)
        finally:
            watchdog.cancel()

    # -- the loop ------------------------------------------------------------------------

    def _consume(self, consumer: KafkaConsumer, publisher: Publisher) -> None:
        max_record = self.settings.batch.max_record_bytes
        while not self._stop.is_set():
            timeout_ms = int(1000 * self._batcher.time_left()) if len(self._batcher) else 200
            with self.stages.time("poll"):
                polled = consumer.poll(
                    timeout_ms=max(1, min(timeout_ms, 200)), max_records=self._batcher.room
                )
            self._apply_released()
            if polled:
                with self.stages.time("decode"):
                    decoded = [
                        self._decode(r, max_record) for recs in polled.values() for r in recs
                    ]
                self._batcher.add(decoded)
                self._idle_since = None
                self.records_seen += len(decoded)
                self.metrics.records_consumed.inc(len(decoded))
            elif self._idle_since is None:
                # idle is measured from the first empty poll, not from the last record: a
                # long learner step is not a quiet stream
                self._idle_since = time.monotonic()
            if self._batcher.ready():
                self._process(self._batcher.take(), publisher)
                self._update_lag(consumer)
            self._maybe_checkpoint(consumer)
            self.health.beat()
            self.metrics.last_loop.set_to_current_time()

    @staticmethod
    def _decode(record: Any, max_bytes: int) -> Decoded:
        raw = RawRecord(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value,
        )
        out = decode(raw, max_bytes)
        if isinstance(out, Rejection):
            return Decoded(raw, None, out)
        return Decoded(raw, out, None)

    def _process(self, batch: Batch, publisher: Publisher) -> None:
        """Steps 1-3 of the commit order for one batch."""
        started = time.perf_counter()
        rejected: dict[str, int] = {}
        for rejection in batch.rejections():
            self.error_policy.on_rejected(rejection, publisher)
            rejected[rejection.code.value] = rejected.get(rejection.code.value, 0) + 1
        valid = batch.events()
        with self.stages.time("dedupe"):
            fresh = self._recent.fresh([d.event.event_id for d in valid if d.event])
        learn = [d for d, ok in zip(valid, fresh, strict=True) if ok]
        report, learn_s, vectors = self._learn(learn, publisher, rejected)
        with self.stages.time("deliver"):
            retries = publisher.deliver(self.settings.worker.delivery_timeout_s)
        acked_at = time.time()
        for kind, n in vectors.items():
            self.metrics.vectors_produced.labels(kind).inc(n)
        # -- everything in the batch is now applied and acknowledged --
        self._recent.remember([d.event.event_id for d in learn if d.event])
        with self._lock:
            self._processed = {**self._processed, **batch.next_offsets()}
        self._unsaved_records += len(batch.items)
        latencies = (
            acked_at
            - np.fromiter(
                (d.record.timestamp_ms for d in learn), dtype=np.float64, count=len(learn)
            )
            / 1000.0
        )
        summary = BatchSummary(
            records=len(batch.items),
            learned=len(learn),
            duplicates=len(valid) - len(learn),
            rejected=rejected,
            report=report,
            learn_seconds=learn_s,
            batch_seconds=time.perf_counter() - started,
            latencies=latencies,
            users=report.users if report else [],
        )
        self._record_metrics(summary, learn, retries)
        for observer in self.observers:
            observer(summary)

    def _learn(
        self, learn: list[Decoded], publisher: Publisher, rejected: dict[str, int]
    ) -> tuple[LearnReport | None, float, dict[str, int]]:
        """Step 1, and sending (not yet acknowledging) the vectors it produced."""
        if not learn:
            return None, 0.0, {}
        t0 = time.perf_counter()
        with self.stages.time("learn"):
            report = self.learner.learn_many([d.event for d in learn if d.event], positions(learn))
        learn_s = time.perf_counter() - t0
        for index, reason in report.rejected:
            self.error_policy.on_rejected(
                Rejection(learn[index].record, RejectCode.LEARNER_REJECTED, reason), publisher
            )
            rejected[RejectCode.LEARNER_REJECTED.value] = rejected.get("learner_rejected", 0) + 1
        with self.stages.time("vectors"):
            vectors = {"user": publisher.user_vectors(self.learner.user_vectors(report.users))}
            if self.settings.topics.produce_item_vectors and report.items:
                refresh = self._items_to_refresh(self.settings.topics.item_refresh_per_batch)
                items = self.learner.item_vectors(list(dict.fromkeys(report.items + refresh)))
                texts = self.learner.item_texts(items.ids)
                vectors["item"] = publisher.item_vectors(items, texts)
        budget = self.settings.consumer.max_poll_interval_ms / 1000
        if learn_s > 0.5 * budget:
            log.warning(
                "a learner step took %.1fs, over half of consumer.max_poll_interval_ms"
                " (%.0fs): lower batch.max_events or raise max_poll_interval_ms, or the"
                " group will evict this worker",
                learn_s,
                budget,
            )
        return report, learn_s, vectors

    def _items_to_refresh(self, n: int) -> list[str]:
        """The next ``n`` items of a round robin over the learner's catalog."""
        if n <= 0:
            return []
        if not self._refresh_queue:
            self._refresh_queue = deque(self.learner.known_items())
        out: list[str] = []
        while self._refresh_queue and len(out) < n:
            out.append(self._refresh_queue.popleft())
        return out

    def _record_metrics(self, s: BatchSummary, learned: list[Decoded], retries: int) -> None:
        m = self.metrics
        self.events_learned += s.learned
        m.batch_size.observe(s.records)
        m.batch_duration.observe(s.batch_seconds)
        m.events_duplicate.inc(s.duplicates)
        m.publish_retries.inc(1 if retries else 0)
        for reason, n in s.rejected.items():
            m.dead_letters.labels(reason).inc(n)
        counts: dict[str, int] = {}
        for d in learned:
            if d.event is not None:
                counts[d.event.event_type.value] = counts.get(d.event.event_type.value, 0) + 1
        for event_type, n in counts.items():
            m.events_consumed.labels(event_type).inc(n)
        if s.report is None:
            return
        m.events_learned.inc(s.learned)
        m.update_duration.observe(s.learn_seconds)
        m.event_to_vector.observe_many(s.latencies)
        m.last_update.set_to_current_time()
        m.model_version.set(self.learner.updates)
        if s.report.loss is not None and np.isfinite(s.report.loss):
            m.loss.set(s.report.loss)
        if s.report.skipped_update:
            m.skipped_updates.inc()
        self._record_learner_metrics(s.report)
        newest = max(d.record.timestamp_ms for d in learned) / 1000.0
        m.processing_lag.set(max(0.0, time.time() - newest))
        m.set_state_sizes(
            {
                **self.learner.state_sizes(),
                "dedupe_window": (len(self._recent), self._recent.capacity),
            }
        )
        s.drift = self._watch_drift(s.report, counts, s.learned)

    def _record_learner_metrics(self, report: LearnReport) -> None:
        m = self.metrics
        for name in ("hr_at_10", "ndcg_at_10", "mrr", "auc"):
            value = report.metrics.get(name)
            if value is not None and np.isfinite(value):
                m.prequential.labels(name).set(value)
        if "replay_ratio" in report.metrics:
            m.replay_ratio.set(report.metrics["replay_ratio"])
        for kind in ("allocated", "reserved"):
            value = report.metrics.get(f"gpu_memory_{kind}_bytes")
            if value is not None:
                m.gpu_memory.labels(kind).set(value)

    def _watch_drift(self, report: LearnReport, counts: dict[str, int], learned: int) -> list[str]:
        """Feed the drift detectors; start or end the adaptation the policy asks for.
        Returns the signals whose detector fired."""
        if self.drift is None:
            return []
        found = self.drift.update("prequential_error", report.test_errors)
        found += self.drift.update("loss", report.example_losses)
        found += self.drift.update("event_mix", self.drift.event_mix_surprise(counts))
        active = self.drift.consume_boost(learned)
        d = self.settings.drift
        if active != self._adapting:
            factors = (d.adapt_lr_factor, d.adapt_replay_factor) if active else (1.0, 1.0)
            self.learner.set_boost(*factors)
            self._adapting = active
            log.info("drift policy: learning-rate factor %.1f, replay factor %.1f", *factors)
        self.metrics.drift_boost.set(1.0 if active else 0.0)
        self.metrics.lr_factor.set(d.adapt_lr_factor if active else 1.0)
        return [f.signal for f in found]

    def _on_drift(self, detection: Detection) -> None:
        self.metrics.drift_detections.labels(detection.signal).inc()
        self.metrics.drift_last.labels(detection.signal).set(detection.at_time)

    def _update_lag(self, consumer: KafkaConsumer) -> None:
        with self._lock:
            processed, assigned = dict(self._processed), set(self._assigned)
        for topic, partition in assigned:
            try:
                high = consumer.highwater(TopicPartition(topic, partition))
            except KafkaError:
                continue
            if high is not None:
                done = processed.get((topic, partition), 0)
                self.metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - done))

    # -- checkpoints and commits -----------------------------------------------------------

    def _maybe_checkpoint(self, consumer: KafkaConsumer, force: bool = False) -> None:
        """Steps 4-5 of the commit order, when due."""
        if self._unsaved_records == 0:
            return
        c, now = self.settings.checkpoint, time.monotonic()
        if self._store is not None:
            due = (
                force
                or self._unsaved_records >= c.every_events
                or now - self._last_checkpoint_at >= c.every_s
                or (self._idle_since is not None and now - self._idle_since >= c.idle_s)
            )
            if not due:
                return
            with self._lock:
                offsets = dict(self._processed)
            with self.stages.time("checkpoint"):
                self._checkpoint(offsets)
        else:
            with self._lock:
                offsets = dict(self._processed)
        self._unsaved_records = 0
        self._last_checkpoint_at = now
        with self.stages.time("commit"):
            self._commit(consumer, offsets)

    def _checkpoint(self, offsets: Mapping[PartitionKey, int]) -> None:
        assert self._store is not None
        started = time.perf_counter()
        try:
            checkpoint = self._store.save(
                self.learner,
                offsets,
                {"recent_event_hashes": self._recent.to_array()},
                {
                    "worker": self.settings.kafka.client_id,
                    "group_id": self.settings.consumer.group_id,
                    "events_topic": self.settings.topics.events,
                },
            )
        except Exception:
            self.metrics.checkpoints.labels("error").inc()
            raise
        elapsed = time.perf_counter() - started
        self.metrics.checkpoints.labels("ok").inc()
        self.metrics.checkpoint_duration.observe(elapsed)
        self.metrics.last_checkpoint.set_to_current_time()
        log.info(
            "checkpoint %s: %d events learned, offsets %s (%.2fs)",
            checkpoint.path.name,
            self.learner.ledger.count,
            _fmt(offsets),
            elapsed,
        )

    def _commit(self, consumer: KafkaConsumer, offsets: Mapping[PartitionKey, int]) -> None:
        with self._lock:
            todo = {
                TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                for (t, p), o in offsets.items()
                if (t, p) in self._assigned and self._committed.get((t, p), -1) < o
            }
        if not todo:
            return
        try:
            consumer.commit(todo)
        except KafkaError as exc:
            # The checkpoint holds these offsets; a later commit or restart catches up.
            self.metrics.commits.labels("error").inc()
            log.warning("offset commit failed (%s); will retry at the next checkpoint", exc)
            return
        self.metrics.commits.labels("ok").inc()
        with self._lock:
            self._committed.update({_key(tp): om.offset for tp, om in todo.items()})

    # -- called from the I/O thread (see _Rebalance) ----------------------------------------

    def _release(
        self, partitions: set[TopicPartition], commit: bool
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        keys = {_key(tp) for tp in partitions}
        with self._lock:
            self._released.append(keys)
            self._assigned -= keys
            self.health.assigned_partitions = len(self._assigned)
            self.metrics.partitions_assigned.set(len(self._assigned))
            if not commit:
                return {}
            return {
                TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                for (t, p), o in self._processed.items()
                if (t, p) in keys and self._committed.get((t, p), -1) < o
            }

    def _committed_on_revoke(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        with self._lock:
            self._committed.update({_key(tp): om.offset for tp, om in offsets.items()})

    def _assign(self, partitions: set[TopicPartition], consumer: KafkaConsumer) -> None:
        with self._lock:
            processed = dict(self._processed)
            self._assigned |= {_key(tp) for tp in partitions}
            self.health.assigned_partitions = len(self._assigned)
            self.metrics.partitions_assigned.set(len(self._assigned))
        for tp in partitions:
            offset = processed.get(_key(tp))
            if offset is not None:
                consumer.seek(tp, offset)
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions))

    def _apply_released(self) -> None:
        """On the work thread: drop pending records of partitions given up meanwhile."""
        with self._lock:
            released, self._released = self._released, []
        for keys in released:
            dropped = self._batcher.discard(keys)
            if dropped:
                log.info(
                    "released %d pending records of revoked partitions %s", dropped, sorted(keys)
                )


class StageClock:
    """Seconds spent per stage of the loop, for profiles and ``lorastream_stage_seconds_total``."""

    def __init__(self, counter: Any) -> None:
        self.seconds: dict[str, float] = {}
        self._counter = counter

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed
            self._counter.labels(stage).inc(elapsed)


def _fmt(offsets: Mapping[PartitionKey, int]) -> str:
    return ", ".join(f"{t}[{p}]={o}" for (t, p), o in sorted(offsets.items())) or "(none)"


def _hard_exit() -> None:
    log.error("graceful shutdown did not finish in time; exiting without it")
    logging.shutdown()
    os._exit(3)
