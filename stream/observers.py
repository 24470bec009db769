"""What one batch did (:class:`BatchSummary`), and the observers the worker hands it to.

Observers run on the work thread after a batch is acknowledged, in order: drift
detection first (:class:`DriftWatch`, which may start or end an adaptation and notes
the signals that fired on the summary), then the metrics (:class:`MetricsRecorder`), a
warning when steps near the group's poll deadline (:class:`SlowStepWarning`), then any
the caller adds (run history, the demo's live view, benchmarks).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from learners.base import Learner, LearnReport
from schemas.settings import DriftSettings
from stream.apply import Applied
from stream.batcher import Batch
from stream.decode import Rejection
from stream.drift import Detection, DriftMonitor
from stream.metrics import WorkerMetrics

__all__ = ["BatchObserver", "BatchSummary", "DriftWatch", "MetricsRecorder", "SlowStepWarning"]

log = logging.getLogger(__name__)


@dataclass
class BatchSummary:
    """What one batch did."""

    records: int
    learned: int
    duplicates: int
    rejected: dict[str, int]  # reject code -> records dead-lettered
    report: LearnReport | None
    learn_seconds: float
    batch_seconds: float
    latencies: np.ndarray  # event record timestamp -> vectors acknowledged, seconds
    users: list[str] = field(default_factory=list)
    event_types: dict[str, int] = field(default_factory=dict)  # learned events per type
    deleted: int = 0  # users forgotten
    vectors: dict[str, int] = field(default_factory=dict)  # kind -> records published
    retries: int = 0  # re-send rounds until every output record was acknowledged
    newest_event_s: float | None = None  # record timestamp of the newest learned event
    drift: list[str] = field(default_factory=list)  # signals whose detector fired

    @classmethod
    def of(
        cls,
        batch: Batch,
        applied: Applied,
        rejected: list[Rejection],
        retries: int,
        acked_at: float,
        seconds: float,
    ) -> BatchSummary:
        """Summarise a batch acknowledged at ``acked_at`` (wall clock) that took ``seconds``
        of the work thread's time (learning, output, waiting for acknowledgements)."""
        learned = applied.learned
        stamps = np.fromiter((a.record.timestamp_ms for a in learned), np.float64, len(learned))
        stamps /= 1000.0
        return cls(
            records=len(batch.items),
            learned=len(learned),
            duplicates=applied.duplicates,
            rejected=_count(r.code.value for r in rejected),
            report=applied.report,
            learn_seconds=applied.learn_seconds,
            batch_seconds=seconds,
            latencies=acked_at - stamps,
            users=applied.report.users if applied.report else [],
            event_types=_count(a.event.event_type.value for a in learned),
            deleted=len(applied.deleted),
            vectors=applied.vectors,
            retries=retries,
            newest_event_s=float(stamps.max()) if len(stamps) else None,
        )


def _count(values: Iterable[str]) -> dict[str, int]:
    return dict(Counter(values))


BatchObserver = Callable[[BatchSummary], None]


class DriftWatch:
    """Feeds the drift detectors; starts and ends the adaptation the policy asks for."""

    def __init__(self, settings: DriftSettings, learner: Learner, metrics: WorkerMetrics) -> None:
        self.settings, self.learner, self.metrics = settings, learner, metrics
        self.monitor = DriftMonitor(settings, on_detection=self._on_detection)
        self.adapting = False
        metrics.lr_factor.set(1.0)
        metrics.drift_boost.set(0.0)

    def __call__(self, s: BatchSummary) -> None:
        if s.report is None:
            return
        found = self.monitor.update("prequential_error", s.report.test_errors)
        found += self.monitor.update("loss", s.report.example_losses)
        found += self.monitor.update("event_mix", self.monitor.event_mix_surprise(s.event_types))
        s.drift = [f.signal for f in found]
        active = self.monitor.consume_boost(s.learned)
        d = self.settings
        if active != self.adapting:
            factors = (d.adapt_lr_factor, d.adapt_replay_factor) if active else (1.0, 1.0)
            self.learner.set_boost(*factors)
            self.adapting = active
            log.info("drift policy: learning-rate factor %.1f, replay factor %.1f", *factors)
        self.metrics.drift_boost.set(1.0 if active else 0.0)
        self.metrics.lr_factor.set(d.adapt_lr_factor if active else 1.0)

    def _on_detection(self, detection: Detection) -> None:
        self.metrics.drift_detections.labels(detection.signal).inc()
        self.metrics.drift_last.labels(detection.signal).set(detection.at_time)


class MetricsRecorder:
    """Turns each batch summary into the worker's Prometheus metrics."""

    def __init__(self, metrics: WorkerMetrics, learner: Learner) -> None:
        self.metrics, self.learner = metrics, learner
        metrics.show_learner(learner)

    def __call__(self, s: BatchSummary) -> None:
        m = self.metrics
        m.batch_size.observe(s.records)
        m.batch_duration.observe(s.batch_seconds)
        m.events_duplicate.inc(s.duplicates)
        m.publish_retries.inc(1 if s.retries else 0)
        m.users_deleted.inc(s.deleted)
        for reason, n in s.rejected.items():
            m.dead_letters.labels(reason).inc(n)
        for event_type, n in s.event_types.items():
            m.events_consumed.labels(event_type).inc(n)
        for kind, n in s.vectors.items():
            m.vectors_produced.labels(kind).inc(n)
        if s.report is None:
            return
        m.events_learned.inc(s.learned)
        m.update_duration.observe(s.learn_seconds)
        m.event_to_vector.observe_many(s.latencies)
        m.last_update.set_to_current_time()
        m.show_learner(self.learner)
        if s.report.loss is not None and np.isfinite(s.report.loss):
            m.loss.set(s.report.loss)
        if s.report.skipped_update:
            m.skipped_updates.inc()
        self._learner_metrics(s.report)
        if s.newest_event_s is not None:
            m.processing_lag.set(max(0.0, time.time() - s.newest_event_s))

    def _learner_metrics(self, report: LearnReport) -> None:
        m = self.metrics
        for (name, part), value in _prequential(report.metrics).items():
            m.prequential.labels(name, part, _ranked_against(report.metrics)).set(value)
        if "replay_ratio" in report.metrics:
            m.replay_ratio.set(report.metrics["replay_ratio"])
        for part in ("knn", "towers"):
            weight = report.metrics.get(f"mix_{part}")
            if weight is not None:
                m.score_mix.labels(part).set(weight)
        for percentile in ("50", "99"):
            age = report.metrics.get(f"item_encoding_age_p{percentile}")
            if age is not None:
                m.item_encoding_age.labels(percentile).set(age)
        if "item_encodings_behind" in report.metrics:
            m.item_encodings_behind.set(report.metrics["item_encodings_behind"])
        for kind in ("allocated", "reserved"):
            memory = report.metrics.get(f"gpu_memory_{kind}_bytes")
            if memory is not None:
                m.gpu_memory.labels(kind).set(memory)


class SlowStepWarning:
    """Warns when a learner step takes over half the time the group allows between polls."""

    def __init__(self, max_poll_interval_s: float) -> None:
        self.budget = max_poll_interval_s

    def __call__(self, s: BatchSummary) -> None:
        if s.learn_seconds > 0.5 * self.budget:
            log.warning(
                "a learner step took %.1fs, over half of consumer.max_poll_interval_ms"
                " (%.0fs): lower batch.max_events or raise max_poll_interval_ms, or the"
                " group will evict this worker",
                s.learn_seconds,
                self.budget,
            )


def _prequential(metrics: dict[str, float]) -> dict[tuple[str, str], float]:
    """(metric, part) → value of the learner's rolling prequential figures."""
    out: dict[tuple[str, str], float] = {}
    for key, value in metrics.items():
        if value is None or not np.isfinite(value):
            continue
        for name in ("hr_at_10", "ndcg_at_10", "mrr", "auc"):
            if key == name:
                out[(name, "full")] = value
            elif key.startswith(name + "_"):
                out[(name, key[len(name) + 1 :])] = value
    return out


def _ranked_against(metrics: dict[str, float]) -> str:
    """``catalog`` when tests rank the whole catalog, else ``<n> sampled``."""
    if metrics.get("eval_full_catalog"):
        return "catalog"
    n = metrics.get("eval_candidates")
    return f"{int(n)} sampled" if n else "sampled"
