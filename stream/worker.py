"""The stream worker: events in, learner updates, vectors out, offsets committed last.

One thread does the work (poll, decode, batch, learn, publish, checkpoint,
commit); kafka-python's I/O thread runs the heartbeats and the rebalance
callbacks, which only do cheap, non-blocking things (see :class:`~stream.rebalance.Rebalance`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from learners.base import Learner
from schemas.settings import Settings
from stream.adapters import publish_adapter
from stream.apply import Applied, Applier, AttemptFailed
from stream.batcher import Batch, MicroBatcher
from stream.clients import (
    PartitionWatch,
    at_high_watermark,
    await_partitions,
    broker_contact,
    close_producer,
    describe_partition,
    ensure_output_topics,
    make_admin,
    make_consumer,
    make_producer,
    partition_lag,
    require_topic,
    start_offset,
    subscribe,
    unread,
    wake_io_loop,
)
from stream.decode import Accepted, Decoded, Decoder, RawRecord, Rejection
from stream.dedupe import RecentEvents
from stream.durable import DurableState, StateLost, WorkerFailed
from stream.http import Health
from stream.idle import IdleWork
from stream.metrics import WorkerMetrics
from stream.observers import (
    BatchObserver,
    BatchSummary,
    DriftWatch,
    MetricsRecorder,
    SlowStepWarning,
)
from stream.offsets import OffsetBook, PartitionKey
from stream.poison import Savepoints, isolate
from stream.policies import DeadLetterPolicy, ErrorPolicy, InvalidRecord, StopPolicy
from stream.privacy import Pseudonymizer
from stream.publisher import Publisher
from stream.rebalance import Rebalance, commit_map
from stream.stages import StageClock
from stream.stall import CallWatch, StallWatch

__all__ = [
    "DeadLetterPolicy",
    "ErrorPolicy",
    "InvalidRecord",
    "StateLost",
    "StopPolicy",
    "Worker",
    "WorkerFailed",
]

log = logging.getLogger(__name__)
LOOKUP_TIMEOUT_MS = 5_000  # the offset lookups of a stall check
# after a failed commit: the next try, with or without a new checkpoint, 1 s doubling to 30 s
COMMIT_RETRY_S, COMMIT_RETRY_MAX_S = 1.0, 30.0
# a retry that no checkpoint asked for waits this long at most: under the call watch's 5 s,
# so that a coordinator still away is a warning of its own, not a stalled call too
COMMIT_RETRY_TIMEOUT_MS = 4_000


class Worker:
    """Consumes interaction events, learns them in mini-batches, publishes vectors.

    Per batch (:meth:`_process`, then :meth:`_maybe_checkpoint`):

    1. learn: the learner applies the batch's events in memory; deletion records
       forget their users (``stream/apply.py``);
    2. publish: vectors, tombstones and the batch's dead letters are sent (``acks=all``,
       idempotent; ``stream/publisher.py``); their acknowledgements come in while the
       next batch learns (``worker.overlap_delivery``) and are awaited before anything
       that needs them — the next batch's step 3, a checkpoint, an idle loop, a stop;
    3. once the broker acknowledged every record of the batch, its offsets count as
       *processed* (``stream/offsets.py``);
    4. when a checkpoint is due (every N events, every T seconds, when the stream
       goes idle, on shutdown) the learner's state is written with the processed
       offsets, atomically: they are now *durable* (``stream/checkpoint.py``);
    5. durable offsets are committed.

    An offset is committed only when a checkpoint covers it — after a checkpoint,
    on revocation, on close — and after a failure, never; a refused commit is tried
    again after a backoff, checkpoint due or not. A batch the learner or
    the publisher fails on rolls the learner back to the newest checkpoint and
    re-reads from its offsets; the failed records are then applied in isolation
    and the ones that still fail are dead-lettered (``stream/poison.py``). On
    start the newest intact checkpoint is restored (damaged ones are quarantined);
    with none, the fresh learner's state is written as the first checkpoint.
    Without a checkpoint directory steps 4 and 5 collapse: offsets are committed
    after every batch. On SIGTERM/SIGINT (:meth:`request_stop`) the batch in hand
    is finished, a checkpoint written, offsets committed, the consumer closed; a
    watchdog ends the process (exit code 3) after ``worker.shutdown_timeout_s``.
    """

    #: whether this worker alone can tell that a vector version is complete (ranks cannot)
    announces_alone = True

    @property
    def full_batch(self) -> int:
        """Records of a full batch, as learned: the per-batch refresh budgets are its."""
        return self.settings.batch.max_events

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
        s = self.settings = settings
        self.learner = learner
        self.metrics = metrics or WorkerMetrics(process=False)
        self.health = health or Health(s.metrics.stall_after_s)
        self.error_policy = error_policy or (
            StopPolicy() if s.worker.on_invalid == "stop" else DeadLetterPolicy()
        )
        self.drift = DriftWatch(s.drift, learner, self.metrics) if s.drift.enabled else None
        self.observers: list[BatchObserver] = [
            *([self.drift] if self.drift else []),
            MetricsRecorder(self.metrics, learner),
            SlowStepWarning(s.consumer.max_poll_interval_ms / 1000),
            *observers,
        ]
        key = s.privacy.pseudonymize_key
        self.decode = Decoder(
            s.batch.max_record_bytes,
            s.worker.key_policy,
            Pseudonymizer(key.get_secret_value()) if key is not None else None,
        )
        b = s.batch
        self._batcher = MicroBatcher(
            b.max_events, b.max_wait_s, b.max_bytes, close_when_caught_up=b.close_when_caught_up
        )
        self._recent = RecentEvents(s.worker.dedupe_window)
        self.book = OffsetBook(checkpoints=s.checkpoint.dir is not None)
        self._stalls = StallWatch(s.consumer.stall_s)
        self._calls = CallWatch(lambda: None)  # started with the consumer it watches
        self.stages = StageClock(self.metrics.stage_seconds)
        self.durable = DurableState(s, learner, self._recent, self.book, self.metrics, self.stages)
        self.schedule = self.durable.schedule
        self._stop = threading.Event()
        self._suspects: set[tuple[str, int, int]] = set()  # records of a batch that failed
        self._savepoints: Savepoints | None = None
        self._in_flight: _InFlight | None = None  # learned, output not yet acknowledged
        mode = s.worker.overlap_delivery
        #: whether a batch's acknowledgements come in while the next one learns
        self.overlaps_delivery = mode == "on" or (mode == "auto" and s.learner.kind == "llm")
        self._consumer: KafkaConsumer | None = None
        self.records_seen = 0
        self.events_learned = 0
        self._commit_retry_at = 0.0  # monotonic; a commit that failed is tried again from then
        self._commit_backoff_s = COMMIT_RETRY_S

    # -- lifecycle -----------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the batch in hand, checkpoint, commit, close (safe from signal handlers)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Run until :meth:`request_stop`; raises on errors it cannot recover from, having
        committed nothing past the newest checkpoint."""
        s = self.settings
        with ExitStack() as stack:
            admin = make_admin(s)
            stack.callback(admin.close)
            require_topic(admin, s.topics.events)
            ensure_output_topics(admin, s)
            producer = make_producer(s)
            stack.callback(close_producer, producer, 10, "no commit covered any vector among them")
            self.publisher = Publisher(producer, s.topics, s.kafka.client_id, self._broker_late)
            self.apply = Applier(
                self.learner,
                self.publisher,
                self._recent,
                s.topics,
                self.stages,
                full_batch=self.full_batch,
                announces=self.announces_alone,
            )
            self.idle_work = IdleWork(
                s, self.apply, self.health, self.metrics, self.stages, self._report_state
            )
            self._restore(admin)
            stack.callback(self._close_savepoints)
            consumer = self._consumer = make_consumer(s)
            stack.callback(self._close_consumer, consumer)
            self._calls = CallWatch(wake_io_loop(consumer))
            self._calls.start()
            stack.callback(self._calls.stop)
            known = await_partitions(consumer, s.topics.events, watch=self._calls, stop=self._stop)
            self._partitions = PartitionWatch(s.topics.events, known)
            subscribe(
                consumer,
                s.topics.events,
                Rebalance(self, consumer, COMMIT_RETRY_TIMEOUT_MS),
                stop=self._stop,
            )
            self.health.model_loaded = True
            try:
                self._consume(consumer)
                self._drain(consumer)
            except BaseException:
                self.book.freeze()  # on an exception, commit nothing (not even on close)
                raise

    def _restore(self, admin: Any) -> None:
        self.durable.start(admin)

    @property
    def restored(self) -> int | None:
        """Sequence of the checkpoint this worker last restored, on start or on a roll-back
        (None: none, it started fresh)."""
        return self.durable.restored

    @contextmanager
    def _watchdog(self) -> Iterator[None]:
        """Ends the process (exit 3) when shutting down takes longer than allowed."""
        timer = threading.Timer(self.settings.worker.shutdown_timeout_s, _hard_exit)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def _close_consumer(self, consumer: KafkaConsumer) -> None:
        with self._watchdog():
            # bounded like a stop's commits: leaving the group otherwise waits up to the
            # client's 30 s request timeout, the watchdog's own
            consumer.close(autocommit=False, timeout_ms=COMMIT_RETRY_TIMEOUT_MS)

    def _close_savepoints(self) -> None:
        if self._savepoints is not None:
            self._savepoints.close()

    def _drain(self, consumer: KafkaConsumer) -> None:
        """Graceful stop: finish the open batch, checkpoint, commit (bounded in time)."""
        with self._watchdog():
            self._drop_released()
            if len(self._batcher):
                self._process(self._batcher.take(), consumer)
            self._confirm()
            self._maybe_checkpoint(consumer, force=True)

    # -- the loop ------------------------------------------------------------------------

    def _consume(self, consumer: KafkaConsumer) -> None:
        while not self._stop.is_set():
            self._confirm(wait=False)
            timeout_ms = int(1000 * self._batcher.time_left()) if len(self._batcher) else 200
            if self._read(consumer, timeout_ms):
                self.schedule.busy()
            else:
                self._confirm()  # nothing to overlap with
                self.schedule.idle(time.monotonic())
                if not len(self._batcher):
                    self.idle_work.catch_up(self.schedule.idle_for(time.monotonic()))
                    self.idle_work.refresh()
            if self._batcher.close_when_caught_up and len(self._batcher):
                placed = self.book.assigned() - self.book.unplaced()
                if at_high_watermark(consumer, placed):
                    self._batcher.caught_up()
            if self._batcher.ready():
                self._process(self._batcher.take(), consumer)
                self._update_lag(consumer)
            self._maybe_checkpoint(consumer)
            self._heartbeat(consumer)

    def _read(self, consumer: KafkaConsumer, timeout_ms: int) -> bool:
        """Poll up to ``timeout_ms`` (at most 200) for the batch's room; decode what came.
        Returns whether anything did."""
        began = time.monotonic()
        with self.stages.time("poll"), self._calls.call("poll"):
            polled = consumer.poll(
                timeout_ms=max(1, min(timeout_ms, 200)), max_records=self._batcher.room
            )
        self._drop_released()
        with self._calls.call("position lookup"):
            self._place(consumer, polled)
        self._unstall(consumer, polled, time.monotonic() - began)
        if not polled:
            return False
        with self.stages.time("decode"):
            decoded = [self.decode(_raw(r)) for recs in polled.values() for r in recs]
        self._batcher.add(decoded)
        self.records_seen += len(decoded)
        self.metrics.records_consumed.inc(len(decoded))
        return True

    def _place(self, consumer: KafkaConsumer, polled: dict[Any, list[Any]]) -> None:
        """Give newly assigned partitions a position in this state: the first record polled,
        or where the consumer will read (its committed offset or reset policy). When the
        state was restored from behind a damaged newer checkpoint, which may have committed
        offsets this state never learned, the partition's earliest offset instead: records
        already polled from it are dropped, to be read again from there."""
        for key in self.book.unplaced():
            tp = TopicPartition(*key)
            if self.durable.from_earliest:
                polled.pop(tp, None)
                consumer.seek_to_beginning(tp)
            elif records := polled.get(tp):
                self.book.place(key, records[0].offset)
                continue
            position = consumer.position(tp, timeout_ms=LOOKUP_TIMEOUT_MS)
            if position is not None:  # None: no answer from the broker yet; the next poll asks
                self.book.place(key, position)

    def _unstall(
        self, consumer: KafkaConsumer, polled: Mapping[Any, list[Any]], seconds: float
    ) -> None:
        """Seek again, where it stands, each assigned partition that has had records to read
        (or no position) and returned none for ``consumer.stall_s`` of polling
        (:mod:`stream.stall`)."""
        assigned = self.book.assigned()
        if not self.health.broker_connected:  # an outage is no stall: its silence is not counted
            self._stalls.polled(assigned, heard=assigned, seconds=seconds)
            return
        heard = {(tp.topic, tp.partition) for tp, records in polled.items() if records}
        self._stalls.polled(assigned, heard, seconds)
        unplaced = self.book.unplaced()

        def behind(keys: list[PartitionKey]) -> set[PartitionKey]:
            placed = [TopicPartition(*k) for k in keys if k not in unplaced]
            late = unread(consumer, placed, LOOKUP_TIMEOUT_MS) if placed else set()
            return {k for k in keys if k in unplaced} | {(tp.topic, tp.partition) for tp in late}

        for key in self._stalls.stalled(behind):
            self._reseek(consumer, TopicPartition(*key), placed=key not in unplaced)

    def _reseek(self, consumer: KafkaConsumer, tp: TopicPartition, placed: bool) -> None:
        """A seek to the partition's own position clears whatever validation the client
        waits for (and resumes it if paused); a partition this state has no position in
        gets its start from the broker directly."""
        state = describe_partition(consumer, tp)
        try:
            if placed:
                offset = consumer.position(tp, timeout_ms=LOOKUP_TIMEOUT_MS)
            else:
                offset = start_offset(consumer, tp, self.durable.from_earliest, LOOKUP_TIMEOUT_MS)
        except KafkaError as exc:  # e.g. revoked meanwhile: the next assignment places it
            log.warning("partition %s[%d] stalled; no position to seek it at: %s", *tp, exc)
            return
        log.warning(
            "partition %s[%d] returned no record for %.0fs though it has %s; the client's"
            " state: %s. %s",
            tp.topic,
            tp.partition,
            self._stalls.after_s,
            "records to read" if placed else "no position yet",
            state,
            # a placed partition the client has no position in waits for the client's own
            # reset: seeking it anywhere else could skip or repeat records
            "Not sought: the client has no position in it"
            if offset is None
            else f"Seeking it again at {offset}",
        )
        self.metrics.partition_stalls.labels(tp.topic, str(tp.partition)).inc()
        if tp in consumer.paused():  # the worker never pauses: a paused partition is the client's
            consumer.resume(tp)
        if offset is not None:
            consumer.seek(tp, offset)

    def _process(self, batch: Batch, consumer: KafkaConsumer) -> None:
        """Steps 1-2 for one batch, then step 3 for the batch before it, whose output the
        broker acknowledged while this one learned (:meth:`_confirm`); on a failed batch,
        roll back and isolate its records."""
        if self.durable.enabled and not self.durable.has_checkpoint:
            self.durable.save()  # the fresh state, where it begins reading: a roll-back target
        isolated = bool(self._suspects) and any(
            position_of(d.record) in self._suspects for d in batch.items
        )
        if isolated:
            self._confirm()  # isolation abandons what its failed attempts sent: only its own
        started = time.perf_counter()
        accepted = batch.accepted()
        poison: list[Rejection] = []
        if isolated:
            applied, poison = self._isolate(accepted)
        else:
            try:
                applied = self.apply(accepted)
            except AttemptFailed as failure:
                self.metrics.batch_failures.labels(failure.stage).inc()
                self._confirm()  # the batch before is sound: only this one's output goes
                self.publisher.abandon()
                if self.durable.enabled:
                    self._rewind(batch.items, failure, consumer)
                    return
                log.error(
                    "a batch failed (%s); isolating its records (no checkpoint to"
                    " roll back to: the learner keeps what it applied)",
                    failure,
                )
                applied, poison = self._isolate(accepted)
        rejected = batch.rejections() + applied.rejected + poison
        for rejection in rejected:
            self.error_policy.on_rejected(rejection, self.publisher)
        epoch, offsets = self.publisher.close_epoch(), batch.next_offsets()
        sent = _InFlight(batch, applied, rejected, epoch, offsets, time.perf_counter() - started)
        self.book.sent(offsets)
        self._confirm()
        self._in_flight = sent
        if isolated or not self.overlaps_delivery:
            self._confirm()
        if isolated:  # a later roll-back must not go back before it (and its dead letters)
            self._maybe_checkpoint(consumer, force=True)

    def _confirm(self, wait: bool = True) -> None:
        """Step 3 for the batch in flight: once the broker acknowledged its output (records
        of later batches stay in flight), its offsets count as processed. Without ``wait``,
        only if the acknowledgements are already in."""
        sent = self._in_flight
        if sent is None or not (wait or self.publisher.all_acknowledged(sent.epoch)):
            return
        waited = time.perf_counter()
        with self.stages.time("deliver"):
            retries = self.publisher.deliver(
                self.settings.worker.delivery_timeout_s, through=sent.epoch
            )
        self._in_flight = None
        # -- everything in the batch is now applied and acknowledged --
        batch = sent.batch
        self.book.processed_batch(sent.offsets)
        if self._suspects:
            self._suspects -= {position_of(d.record) for d in batch.items}
        self.schedule.add(len(batch.items))
        self.events_learned += len(sent.applied.learned)
        seconds = sent.seconds + time.perf_counter() - waited
        acked_at = self.publisher.acked_at(sent.epoch)
        self._observe(
            BatchSummary.of(batch, sent.applied, sent.rejected, retries, acked_at, seconds)
        )

    def _isolate(
        self, accepted: list[Any], apply: Callable[[Sequence[Accepted]], Applied] | None = None
    ) -> tuple[Applied, list[Rejection]]:
        if self._savepoints is None:
            self._savepoints = Savepoints(
                self.learner, self._recent, after_rollback=self.apply.rolled_back
            )
        limit = self.settings.worker.max_poison_per_batch
        result = isolate(accepted, apply or self.apply, self._savepoints, self.publisher, limit)
        log.info(
            "isolated %d records in %d attempts: %d poison",
            len(accepted),
            result.attempts,
            len(result.poison),
        )
        return result.applied, result.poison

    def _rewind(
        self, items: Sequence[Decoded], failure: AttemptFailed, consumer: KafkaConsumer
    ) -> None:
        """Back to the newest checkpoint; the failed batch's records become suspects."""
        log.error(
            "a batch of %d records failed (%s): rolling back to the newest checkpoint and"
            " applying these records in isolation",
            len(items),
            failure,
        )
        offsets = self._roll_back(failure)
        self.apply.rolled_back()
        self._batcher.clear()
        for (topic, partition), offset in self.book.rewind(offsets).items():
            if offset is not None:
                consumer.seek(TopicPartition(topic, partition), offset)
            elif self.durable.from_earliest:  # only a damaged newer checkpoint knew its start
                consumer.seek_to_beginning(TopicPartition(topic, partition))
        self._suspects |= {position_of(d.record) for d in items}

    def _roll_back(self, failure: AttemptFailed) -> dict[PartitionKey, int]:
        """The newest intact checkpoint loaded; the offsets to read again from."""
        return self.durable.roll_back(failure, failure.cause)

    def _observe(self, summary: BatchSummary) -> None:
        self._report_state()
        for observer in self.observers:
            observer(summary)

    def _report_state(self) -> None:
        """Bounded states' sizes, and how far the published vectors are behind the model."""
        refresher = self.apply.refresher
        self.metrics.set_state_sizes(
            {
                **self.learner.state_sizes(),
                "dedupe_window": (len(self._recent), self._recent.capacity),
                "published_vectors": (len(refresher), refresher.bound),
            }
        )
        for kind in ("user", "item"):
            behind = refresher.behind(kind, self.learner.updates)
            self.metrics.vectors_behind.labels(kind).set(behind)

    def _heartbeat(self, consumer: KafkaConsumer) -> None:
        """Once per loop, in every loop (ranks too): health, contact, the topic's size."""
        self._report_contact(consumer)
        self._partitions.rejoin_if_grown(consumer)
        self.health.beat()
        self.metrics.last_loop.set_to_current_time()

    def _broker_late(self) -> None:
        """While a delivery waits for the broker: readiness follows the broker's contact."""
        if self._consumer is not None:
            self._report_contact(self._consumer)

    def _report_contact(self, consumer: KafkaConsumer) -> None:
        connected = broker_contact(consumer)
        if connected != self.health.broker_connected:
            if connected:
                log.info("in contact with the group coordinator again")
            else:
                log.warning(
                    "lost contact with the Kafka group coordinator (is the broker up?); the"
                    " worker keeps its state and reconnects; /readyz fails meanwhile"
                )
        self.health.broker_connected = connected
        self.metrics.broker_connected.set(1.0 if connected else 0.0)

    def show_assignment(self) -> None:
        assigned = self.book.assigned()
        self.health.assigned_partitions = len(assigned)
        self.metrics.partitions_assigned.set(len(assigned))
        for topic, partition in assigned:  # a series from 0, so increase() sees the first stall
            self.metrics.partition_stalls.labels(topic, str(partition))

    def _drop_released(self) -> None:
        """On the work thread: drop pending records of partitions given up meanwhile."""
        for keys in self.book.take_released():
            dropped = self._batcher.discard(keys)
            if dropped:
                log.info("released %d pending records of revoked partitions %s", dropped, keys)

    def _update_lag(self, consumer: KafkaConsumer) -> None:
        lags = partition_lag(consumer, self.book.processed(), self.book.assigned())
        for (topic, partition), lag in lags.items():
            self.metrics.consumer_lag.labels(topic, str(partition)).set(lag)

    # -- checkpoints and commits -----------------------------------------------------------

    def _maybe_checkpoint(self, consumer: KafkaConsumer, force: bool = False) -> None:
        """Steps 4-5, when due; then the checkpoint's adapter, where one is published."""
        if not self.durable.enabled:  # processed offsets are durable: commit, backoff allowing
            if self._commit_due():
                self._commit(consumer)
            return
        if not self.durable.due(force):
            # a caught-up worker saves nothing more: offsets a refused commit left behind are
            # committed here
            self._retry_commit(consumer)
            return
        self._confirm()  # the state to save holds the batch in flight: its offsets go with it
        checkpoint = self.durable.save()
        self._commit(consumer)
        if self.settings.topics.adapters is not None:  # optional output, after the commit
            with self.stages.time("deliver"):
                publish_adapter(self.publisher, checkpoint, self.learner.version)

    def _retry_commit(self, consumer: KafkaConsumer) -> None:
        """Commit what a refused commit left behind once its backoff is over, or at once when
        stopping; each try bounded, so that a coordinator still away holds neither the loop
        nor a stop past its watchdog. Cheap when nothing is left: a look at the book."""
        if self._commit_due():
            self._commit(consumer, timeout_ms=COMMIT_RETRY_TIMEOUT_MS)

    def _commit_due(self) -> bool:
        """A refused commit's backoff is over, or a stop ends it."""
        return self.stopping or time.monotonic() >= self._commit_retry_at

    def _commit(self, consumer: KafkaConsumer, timeout_ms: int | None = None) -> None:
        """Commit the durable offsets ahead of the committed ones; a refusal is logged,
        counted and tried again after a backoff (1 s doubling to 30 s). A stop's commits wait
        at most ``COMMIT_RETRY_TIMEOUT_MS``. A late commit loses nothing: a restart reads on
        from the checkpoint's offsets (without checkpoints, it reads again what the last commit
        did not cover)."""
        todo = self.book.to_commit()
        if not todo:
            return
        if self.stopping:  # the client's 30 s request timeout would outlast the watchdog
            timeout_ms = COMMIT_RETRY_TIMEOUT_MS
        with self.stages.time("commit"), self._calls.call("offset commit"):
            try:
                consumer.commit(commit_map(todo), timeout_ms=timeout_ms)
            except KafkaError as exc:
                self.metrics.commits.labels("error").inc()
                self._commit_retry_at = time.monotonic() + self._commit_backoff_s
                log.warning(
                    "offset commit failed (%s); nothing is lost (at worst a restart reads some"
                    " records again); tried again in %.0fs",
                    exc,
                    self._commit_backoff_s,
                )
                self._commit_backoff_s = min(2 * self._commit_backoff_s, COMMIT_RETRY_MAX_S)
                return
        self._commit_backoff_s = COMMIT_RETRY_S
        self.metrics.commits.labels("ok").inc()
        self.book.committed(todo)


@dataclass
class _InFlight:
    """A batch learned and sent, waiting for the broker's acknowledgements."""

    batch: Batch
    applied: Applied
    rejected: list[Rejection]
    epoch: int  # the publisher's epoch holding its output
    offsets: dict[PartitionKey, int]  # per partition, the offset after the batch
    seconds: float  # work-thread time so far


def _raw(record: Any) -> RawRecord:
    return RawRecord(
        record.topic, record.partition, record.offset, record.timestamp, record.key, record.value
    )


def position_of(record: RawRecord) -> tuple[str, int, int]:
    return (record.topic, record.partition, record.offset)


def _hard_exit() -> None:
    log.error("graceful shutdown did not finish in time; exiting without it")
    logging.shutdown()
    os._exit(3)
