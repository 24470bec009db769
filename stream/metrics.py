"""Prometheus metrics of the stream worker: one ``lorastream_`` prefix, base units.

Every metric lives on the registry passed in (tests use their own), never on
the global default registry. Per-event observations are recorded in bulk:
:class:`BulkHistogram` bins a whole batch of latencies with one numpy call.

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> registry = CollectorRegistry()
>>> m = WorkerMetrics(registry)
>>> m.event_to_vector.observe_many(np.array([0.2, 0.3, 40.0]))
>>> b'lorastream_event_to_vector_latency_seconds_count 3.0' in generate_latest(registry)
True
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from learners.base import Learner
from schemas.dead_letter import RejectCode
from stream.drift import SIGNALS

__all__ = ["LATENCY_BUCKETS", "STEP_BUCKETS", "BulkHistogram", "WorkerMetrics"]

#: Learner steps and checkpoints: tens of milliseconds to minutes.
STEP_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
#: Event to vector: batching adds up to max_wait_s, a CPU step adds seconds.
LATENCY_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    45.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


class BulkHistogram(Collector):
    """A label-less histogram fed whole arrays at a time (``observe_many``)."""

    def __init__(
        self, name: str, documentation: str, buckets: Iterable[float], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # last: +Inf only
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            return
        # bucket k counts values <= bounds[k] (Prometheus "le" semantics)
        idx = np.searchsorted(self.bounds, values, side="left")
        counts = np.bincount(idx, minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (for terminal views)."""
        with self._lock:
            cumulative = np.cumsum(self._counts)
        if cumulative[-1] == 0:
            return float("nan")
        k = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
        return float(self.bounds[k]) if k < len(self.bounds) else float("inf")

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        buckets = [(_le(b), float(c)) for b, c in zip(self.bounds, cumulative[:-1], strict=True)]
        buckets.append(("+Inf", float(cumulative[-1])))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation)


def _le(bound: float) -> str:
    return repr(float(bound))


class WorkerMetrics:
    """All of the worker's metrics, on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        if process:
            ProcessCollector(registry=r)
        p = "lorastream_"
        self._declare_flow(r, p)
        self._declare_output(r, p)
        self._declare_kafka(r, p)
        self._declare_learning(r, p)
        self._declare_durability(r, p)
        self.started = Gauge(
            p + "start_timestamp_seconds", "Unix time the worker started", registry=r
        )
        self.started.set(time.time())
        self._export_known_labels()

    def _export_known_labels(self) -> None:
        """Label values known up front are exported at 0 from the start, so that rate() and
        increase() see the first dead letter or detection as a change."""
        for code in RejectCode:
            self.dead_letters.labels(code.value)
        for stage in ("learn", "publish"):
            self.batch_failures.labels(stage)
        for result in ("ok", "error"):
            self.checkpoints.labels(result)
        for signal in SIGNALS:
            self.drift_detections.labels(signal)
            self.drift_last.labels(signal).set(0)

    def _declare_flow(self, r: CollectorRegistry, p: str) -> None:
        """Records and events through the worker, its batches and stages."""
        self.build_info = Info(
            p + "build", "Version, learner, model and device of this worker", registry=r
        )
        self.records_consumed = Counter(
            p + "records_consumed_total", "Kafka records consumed (valid or not)", registry=r
        )
        self.events_consumed = Counter(
            p + "events_consumed_total",
            "Valid events consumed, by event type",
            ["event_type"],
            registry=r,
        )
        self.events_duplicate = Counter(
            p + "events_duplicate_total",
            "Events dropped because their event_id was already learned",
            registry=r,
        )
        self.events_learned = Counter(
            p + "events_learned_total", "Events applied by the learner", registry=r
        )
        self.dead_letters = Counter(
            p + "dead_letters_total",
            "Records sent to the dead-letter topic, by reason",
            ["reason"],
            registry=r,
        )
        self.users_deleted = Counter(
            p + "users_deleted_total", "Users forgotten on a delete_user record", registry=r
        )
        self.batch_size = Histogram(
            p + "batch_size_events", "Records per mini-batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.update_duration = Histogram(
            p + "learner_update_duration_seconds",
            "Time of one learner update (learn_many)",
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            p + "batch_duration_seconds",
            "Time to process one batch end to end (learn, publish, acknowledge)",
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Counter(
            p + "stage_seconds_total",
            "Time the work thread spent per stage (poll, decode, learn, vectors, deliver...)",
            ["stage"],
            registry=r,
        )
        self.batch_failures = Counter(
            p + "batch_failures_total",
            "Batches the learner or publisher failed on, by stage (the batch is then rolled"
            " back and its records isolated)",
            ["stage"],
            registry=r,
        )
        self.rewinds = Counter(
            p + "rewinds_total",
            "Roll-backs to the newest checkpoint after a failed batch",
            registry=r,
        )
        self.last_loop = Gauge(
            p + "loop_heartbeat_timestamp_seconds",
            "Unix time the consume loop last advanced",
            registry=r,
        )

    def _declare_output(self, r: CollectorRegistry, p: str) -> None:
        """Vectors: how fresh, how many, how far behind the model."""
        self.event_to_vector = BulkHistogram(
            p + "event_to_vector_latency_seconds",
            "From an event's Kafka record timestamp to its user's vector acknowledged by the"
            " broker",
            LATENCY_BUCKETS,
            r,
        )
        self.vectors_produced = Counter(
            p + "vectors_produced_total",
            "Vectors acknowledged by the broker, by kind",
            ["kind"],
            registry=r,
        )
        self.vectors_behind = Gauge(
            p + "vectors_behind_updates",
            "Learner updates since the oldest vector on the topics was published, by kind"
            " (0: every published vector is of the current model)",
            ["kind"],
            registry=r,
        )
        self.item_encodings_behind = Gauge(
            p + "item_encodings_behind",
            "Cached item encodings older than the current model (0: item vectors, and the"
            " users composed from them, are built from one model; recomputed while idle)",
            registry=r,
        )
        self.item_encoding_age = Gauge(
            p + "item_encoding_age_updates",
            "Learner updates since the cached item encodings that item vectors are built from"
            " were computed: the 50th and 99th percentile over the catalog (learners with such a"
            " cache)",
            ["percentile"],
            registry=r,
        )
        self.publish_retries = Counter(
            p + "publish_retries_total", "Batches whose output had to be re-sent", registry=r
        )

    def _declare_kafka(self, r: CollectorRegistry, p: str) -> None:
        """The consumer's place in its partitions and its contact with the broker."""
        self.consumer_lag = Gauge(
            p + "consumer_lag_records",
            "High watermark minus position, per partition",
            ["topic", "partition"],
            registry=r,
        )
        self.partition_stalls = Counter(
            p + "partition_stalls_total",
            "Times an assigned partition with records to read returned none for"
            " consumer.stall_s of polling (logged with the client's state, and sought again"
            " where it stood when the client had a position in it)",
            ["topic", "partition"],
            registry=r,
        )
        self.processing_lag = Gauge(
            p + "processing_lag_seconds",
            "Now minus the record timestamp of the newest processed event",
            registry=r,
        )
        self.partitions_assigned = Gauge(
            p + "partitions_assigned", "Partitions currently assigned to this worker", registry=r
        )
        self.broker_connected = Gauge(
            p + "broker_connected",
            "1 while the consumer is in contact with its group coordinator",
            registry=r,
        )
        self.commits = Counter(
            p + "offset_commits_total", "Offset commits, by result", ["result"], registry=r
        )

    def _declare_learning(self, r: CollectorRegistry, p: str) -> None:
        """The learner: loss, quality, state sizes, drift adaptation, device memory."""
        self.loss = Gauge(p + "training_loss", "Loss of the latest learner update", registry=r)
        self.skipped_updates = Counter(
            p + "skipped_updates_total",
            "Updates skipped because the loss was not finite",
            registry=r,
        )
        self.prequential = Gauge(
            p + "prequential_quality",
            "Prequential (test-then-train) quality over a rolling window: each new positive's"
            " item ranked before it is learned, against the whole catalog or a sample"
            " (ranked_against), by the full score or one part of it (part)",
            ["metric", "part", "ranked_against"],
            registry=r,
        )
        self.score_mix = Gauge(
            p + "score_mix",
            "Weight the served score gives a part, chosen online by prequential hit rate:"
            " knn, item-kNN's share of the score; towers, the towers' weight beside the"
            " popularity prior in the rest (0: nothing the towers learned is served)",
            ["part"],
            registry=r,
        )
        self.state_entries = Gauge(
            p + "state_entries", "Entries held in a bounded state", ["state"], registry=r
        )
        self.state_capacity = Gauge(
            p + "state_capacity", "Size limit of a bounded state", ["state"], registry=r
        )
        self.model_version = Gauge(
            p + "adapter_version",
            "Number of updates applied to the model (adapter version)",
            registry=r,
        )
        self.last_update = Gauge(
            p + "last_update_timestamp_seconds",
            "Unix time of the latest learner update",
            registry=r,
        )
        self.drift_detections = Counter(
            p + "drift_detections_total", "Drift detections, by signal", ["signal"], registry=r
        )
        self.drift_last = Gauge(
            p + "drift_last_detection_timestamp_seconds",
            "Unix time of the latest drift detection, by signal",
            ["signal"],
            registry=r,
        )
        self.replay_ratio = Gauge(
            p + "replay_ratio", "Replayed examples per new example in each update", registry=r
        )
        self.lr_factor = Gauge(
            p + "learning_rate_factor",
            "Factor on the learner's learning rates (above 1 while adapting to drift)",
            registry=r,
        )
        self.lr_annealing = Gauge(
            p + "learning_rate_annealing",
            "Fraction of its configured learning rate the adapter's next update learns at,"
            " before the drift factor (annealed by events learned; 1 where a learner does not"
            " anneal); set on start, after a restore and with each batch",
            registry=r,
        )
        self.drift_boost = Gauge(
            p + "drift_adaptation_active",
            "1 while the drift policy has raised learning rate / replay",
            registry=r,
        )
        self.gpu_memory = Gauge(
            p + "gpu_memory_bytes",
            "GPU memory held by the learner's process, by kind",
            ["kind"],
            registry=r,
        )

    def _declare_durability(self, r: CollectorRegistry, p: str) -> None:
        """Checkpoints."""
        self.checkpoint_duration = Histogram(
            p + "checkpoint_duration_seconds",
            "Time to write one checkpoint",
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.checkpoints = Counter(
            p + "checkpoints_total", "Checkpoints attempted, by result", ["result"], registry=r
        )
        self.last_checkpoint = Gauge(
            p + "checkpoint_last_success_timestamp_seconds",
            "Unix time of the newest checkpoint written",
            registry=r,
        )
        self.checkpoints_quarantined = Counter(
            p + "checkpoints_quarantined_total",
            "Damaged checkpoints moved aside on restore",
            registry=r,
        )

    def show_learner(self, learner: Learner) -> None:
        """The gauges that describe the learner rather than a batch: its updates so far and
        the rate its next update learns at (1 where a learner does not anneal). Set on
        start, after every restore or roll-back, and with each batch, so a resumed worker
        shows its checkpoint's values before it learns anything."""
        self.model_version.set(learner.updates)
        self.lr_annealing.set(learner.lr_annealing)

    def set_state_sizes(self, sizes: Mapping[str, tuple[float, float]]) -> None:
        """``{state: (entries, capacity)}`` for every bounded state."""
        for name, (entries, capacity) in sizes.items():
            self.state_entries.labels(name).set(entries)
            self.state_capacity.labels(name).set(capacity)
