"""What a worker does while its stream is idle: optional work, within budgets per second.

- :meth:`IdleWork.catch_up` — once the polls have found nothing for a second (the model
  stands still), the learner recomputes its derived state (cached item encodings) with its
  current model (``worker.catch_up_when_idle`` items a second); once nothing is behind,
  every vector is published again (``stream/apply.py``), so the topics hold one model's.
- :meth:`IdleWork.refresh` — stale vectors are published again
  (``topics.refresh_when_idle`` a second), waiting briefly for the broker: the loop must go
  on beating and reporting readiness.

A failure of either only defers it; the next batch's step decides whether it was fatal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from schemas.settings import Settings
from stream.apply import Applier
from stream.http import Health
from stream.metrics import WorkerMetrics
from stream.publisher import DeliveryError

__all__ = ["REFRESH_DELIVERY_S", "IdleWork"]

log = logging.getLogger(__name__)

REFRESH_DELIVERY_S = 5.0  # how long an idle refresh waits for acknowledgements
CATCH_UP_AFTER_S = 1.0  # polls that found nothing for this long: the model stands still
CATCH_UP_RETRY_S = 60.0  # after a failed catch-up


class IdleWork:
    """The idle catch-up and refresh of one worker (or rank)."""

    def __init__(
        self,
        settings: Settings,
        apply: Applier,
        health: Health,
        metrics: WorkerMetrics,
        stages: Any,
        report_state: Callable[[], None],
    ) -> None:
        self.settings, self.apply, self.health = settings, apply, health
        self.metrics, self.stages, self.report_state = metrics, stages, report_state
        self._next_catch_up = 0.0
        self._next_refresh = 0.0

    def catch_up(self, idle_for_s: float) -> None:
        """Recompute the learner's derived state with its current model, if the stream has
        been idle ``idle_for_s`` ≥ a second (not a gap between batches)."""
        budget = self.settings.worker.catch_up_when_idle
        now = time.monotonic()
        if budget <= 0 or idle_for_s < CATCH_UP_AFTER_S or now < self._next_catch_up:
            return
        self._next_catch_up = now + 1.0
        try:
            with self.stages.time("catch_up"):
                done = self.apply.catch_up(budget)
        except Exception as exc:  # optional work (even out of memory): the next step decides
            self._next_catch_up = now + CATCH_UP_RETRY_S
            log.warning("idle catch-up deferred %.0fs: %s", CATCH_UP_RETRY_S, exc)
            return
        self.metrics.item_encodings_behind.set(done.behind)
        self.report_state()

    def refresh(self) -> None:
        """Publish stale users' and items' vectors again, at most once a second."""
        budget = self.settings.topics.refresh_when_idle
        now = time.monotonic()
        if budget <= 0 or now < self._next_refresh or not self.health.broker_connected:
            return
        self._next_refresh = now + 1.0
        timeout_s = min(REFRESH_DELIVERY_S, self.settings.worker.delivery_timeout_s)
        try:
            sent = self.apply.refresh(budget, timeout_s)
        except DeliveryError as exc:
            log.warning("idle refresh deferred: %s", exc)
            return
        for kind, n in sent.items():
            self.metrics.vectors_produced.labels(kind).inc(n)
        self.report_state()
