"""Drift detection on the learner's signals, with River detectors, and what to do about it.

Three signals, one detector each (ADWIN by default; Page-Hinkley or KSWIN selectable):

``prequential_error``
    1 − hit@10 of every prequential test: the model got worse at what users do now.
``loss``
    the per-example training loss of every update.
``event_mix``
    input side: per event, how unusual its type is under the running event-type mix
    (1 − the type's exponentially weighted share): its mean jumps when the mix shifts,
    from browsing to buying, say.

On ``prequential_error`` and ``loss`` only a change for the worse counts (detectors see
both directions, and a learner that improves is no alarm); on ``event_mix`` any change.
A detection is counted (``lorastream_drift_detections_total{signal}``), logged with its
context and exposed as a timestamp (``lorastream_drift_last_detection_timestamp_seconds``)
for Grafana annotations. With ``policy = "adapt"`` the learner's learning rate (and
replay mix) are scaled for ``adapt_events`` events after a detection.

>>> import numpy as np
>>> from schemas.settings import DriftSettings
>>> monitor = DriftMonitor(DriftSettings(detector="adwin", policy="none"))
>>> rng = np.random.default_rng(0)
>>> before = monitor.update("prequential_error", (rng.random(2000) < 0.2).astype(float))
>>> after = monitor.update("prequential_error", (rng.random(2000) < 0.8).astype(float))
>>> before, len(after) > 0
([], True)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from river import drift

from schemas.settings import DriftSettings

__all__ = ["SIGNALS", "Detection", "DriftMonitor", "make_detector"]

log = logging.getLogger(__name__)
SIGNALS = ("prequential_error", "loss", "event_mix")
WORSE_IF_HIGHER = frozenset({"prequential_error", "loss"})


class _Detector(Protocol):
    @property
    def drift_detected(self) -> bool: ...

    def update(self, x: float) -> Any: ...


def make_detector(kind: str, seed: int = 0) -> _Detector:
    """A fresh River detector of the given kind."""
    if kind == "adwin":
        return drift.ADWIN(delta=0.002)
    if kind == "page_hinkley":
        return drift.PageHinkley(min_instances=30, delta=0.005, threshold=50.0, mode="up")
    if kind == "kswin":
        return drift.KSWIN(alpha=0.001, window_size=300, stat_size=100, seed=seed)
    raise ValueError(f"unknown drift detector {kind!r} (adwin, page_hinkley, kswin)")


@dataclass(frozen=True)
class Detection:
    signal: str
    at_value: int  # how many values of this signal had been seen
    at_time: float  # unix time
    recent_mean: float
    earlier_mean: float


class DriftMonitor:
    """Feeds each signal to its detector; reports detections; runs the adaptation policy."""

    def __init__(
        self, settings: DriftSettings, on_detection: Callable[[Detection], None] | None = None
    ) -> None:
        self.settings = settings
        self._detectors = {s: make_detector(settings.detector) for s in SIGNALS}
        self._seen = dict.fromkeys(SIGNALS, 0)
        self._recent: dict[str, list[float]] = {s: [] for s in SIGNALS}
        self._on_detection = on_detection
        self._mix: dict[str, float] = {}
        self.detections: list[Detection] = []
        self.boost_left = 0  # events the adaptation still lasts

    def update(self, signal: str, values: np.ndarray) -> list[Detection]:
        """Feed values of one signal in order; returns the detections they caused."""
        detector = self._detectors[signal]
        found = []
        recent = self._recent[signal]
        for value in np.asarray(values, dtype=np.float64).tolist():
            if not np.isfinite(value):
                continue
            detector.update(value)
            self._seen[signal] += 1
            recent.append(value)
            if detector.drift_detected:
                detection = self._detected(signal, recent)
                if detection is not None:
                    found.append(detection)
                recent.clear()
            elif len(recent) > 4000:
                del recent[:2000]
        return found

    def _detected(self, signal: str, recent: list[float]) -> Detection | None:
        half = max(1, min(len(recent) // 2, 200))
        detection = Detection(
            signal,
            self._seen[signal],
            time.time(),
            float(np.mean(recent[-half:])),
            float(np.mean(recent[:-half] or recent)),
        )
        if signal in WORSE_IF_HIGHER and detection.recent_mean <= detection.earlier_mean:
            log.info(
                "%s changed for the better (%.3f -> %.3f): not an alarm",
                signal,
                detection.earlier_mean,
                detection.recent_mean,
            )
            return None
        self.detections.append(detection)
        log.warning(
            "drift on %s after %d values (%s): recent mean %.3f, earlier %.3f",
            signal,
            detection.at_value,
            self.settings.detector,
            detection.recent_mean,
            detection.earlier_mean,
        )
        if self.settings.policy == "adapt":
            self.boost_left = self.settings.adapt_events
        if self._on_detection is not None:
            self._on_detection(detection)
        return detection

    def event_mix_surprise(self, counts: dict[str, int], weight: float = 0.05) -> np.ndarray:
        """Per event of a batch (given as type counts): 1 − its type's running share; then
        the running mix moves towards the batch's."""
        total = sum(counts.values())
        if total == 0:
            return np.zeros(0)
        if not self._mix:
            self._mix = {k: v / total for k, v in counts.items()}
        values = np.concatenate(
            [np.full(n, 1.0 - self._mix.get(k, 0.0)) for k, n in sorted(counts.items())]
        )
        keys = set(counts) | set(self._mix)
        self._mix = {
            k: (1 - weight) * self._mix.get(k, 0.0) + weight * counts.get(k, 0) / total
            for k in keys
        }
        return values

    def consume_boost(self, events: int) -> bool:
        """Count ``events`` against an active adaptation; True while it lasts."""
        if self.boost_left <= 0:
            return False
        self.boost_left = max(0, self.boost_left - events)
        return True
