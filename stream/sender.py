"""Sending events to the events topic: keyed by user id (a user's events stay in order
on one partition), paced to a rate when asked, acknowledged before returning."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from kafka import KafkaProducer

from schemas.events import InteractionEvent

__all__ = ["Pacer", "send_events"]

_CHECK_EVERY = 5000  # bounded memory: confirm deliveries in chunks


class Pacer:
    """Paces a stream: as fast as possible (``rate=None``), a fixed rate in events/s, or
    the events' own timing sped up by ``speedup`` (``original=True``).

    >>> p = Pacer(rate=None)
    >>> p.delay(None)
    0.0
    """

    def __init__(
        self,
        rate: float | None = None,
        original: bool = False,
        speedup: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.original, self.speedup = rate, original, speedup
        self._clock = clock
        self._start: float | None = None
        self._first_event: datetime | None = None
        self._sent = 0

    def delay(self, event_time: datetime | None) -> float:
        """Seconds to wait before sending the next event."""
        now = self._clock()
        if self._start is None:
            self._start, self._first_event = now, event_time
        target = self._start
        if self.original and event_time is not None and self._first_event is not None:
            target += (event_time - self._first_event).total_seconds() / self.speedup
        elif self.rate:
            target += self._sent / self.rate
        self._sent += 1
        return max(0.0, target - now)


def send_events(
    producer: KafkaProducer,
    topic: str,
    events: Iterable[InteractionEvent],
    pacer: Pacer | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> int:
    """Send every event and wait for all acknowledgements; returns how many were sent."""
    pacer = pacer or Pacer()
    futures: list[Any] = []
    sent = 0
    for event in events:
        wait = pacer.delay(event.timestamp)
        if wait > 0:
            producer.flush()
            time.sleep(wait)
        value = event.model_dump_json(exclude_none=True, exclude_defaults=True).encode()
        futures.append(producer.send(topic, key=event.user_id.encode(), value=value))
        sent += 1
        if len(futures) >= _CHECK_EVERY:
            _confirm(producer, futures)
        if on_sent is not None:
            on_sent(sent)
    _confirm(producer, futures)
    return sent


def _confirm(producer: KafkaProducer, futures: list[Any]) -> None:
    """Wait for every pending send; raises the first delivery error."""
    producer.flush()
    for future in futures:
        future.get(timeout=60)
    futures.clear()
