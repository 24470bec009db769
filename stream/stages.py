"""Seconds spent per stage of the worker loop."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["StageClock"]


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
