"""The micro-batcher: collects decoded records until a batch should close.

A batch closes when it holds ``max_events`` records, ``max_bytes`` bytes, or
its first record has waited ``max_wait_s`` — whichever comes first; with
``close_when_caught_up``, also as soon as it holds everything there was to read (the
worker's position is at every partition's high watermark): at light load records are
learned as they come, while at heavy load batches still fill (records pile up while the
learner steps).

>>> from schemas.dead_letter import RejectCode
>>> from stream.decode import RawRecord
>>> clock = iter([0.0, 0.0, 0.5, 1.2]).__next__
>>> b = MicroBatcher(max_events=10, max_wait_s=1.0, max_bytes=10_000, clock=clock)
>>> rec = RawRecord("t", 0, 0, 0, None, b"{}")
>>> b.add([Rejection(rec, RejectCode.MALFORMED_JSON, "empty")])   # opens at t=0.0
>>> b.ready(), b.ready()                # t=0.0, t=0.5
(False, False)
>>> b.ready()                           # t=1.2
True
>>> len(b.take().items)
1
>>> eager = MicroBatcher(10, 1.0, 10_000, clock=lambda: 0.0, close_when_caught_up=True)
>>> eager.add([Rejection(rec, RejectCode.MALFORMED_JSON, "empty")])
>>> eager.ready(), (eager.caught_up(), eager.ready())[1]
(False, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from schemas.vectors import SourcePosition
from stream.decode import Accepted, Decoded, Rejection
from stream.offsets import PartitionKey

__all__ = ["Batch", "MicroBatcher", "positions"]


@dataclass
class Batch:
    """One mini-batch, in consumption order."""

    items: list[Decoded] = field(default_factory=list)

    def accepted(self) -> list[Accepted]:
        return [d for d in self.items if isinstance(d, Accepted)]

    def rejections(self) -> list[Rejection]:
        return [d for d in self.items if isinstance(d, Rejection)]

    def next_offsets(self) -> dict[PartitionKey, int]:
        """Per partition, the offset after the last record in the batch."""
        out: dict[PartitionKey, int] = {}
        for d in self.items:
            key = (d.record.topic, d.record.partition)
            out[key] = max(out.get(key, 0), d.record.offset + 1)
        return out


def positions(items: Iterable[Accepted]) -> list[SourcePosition]:
    return [d.record.position() for d in items]


class MicroBatcher:
    """Accumulates decoded records; bounded by count, bytes and wait."""

    def __init__(
        self,
        max_events: int,
        max_wait_s: float,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        close_when_caught_up: bool = False,
    ) -> None:
        self.max_events, self.max_wait_s, self.max_bytes = max_events, max_wait_s, max_bytes
        self.close_when_caught_up = close_when_caught_up
        self._clock = clock
        self._items: list[Decoded] = []
        self._bytes = 0
        self._opened_at: float | None = None
        self._caught_up = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def room(self) -> int:
        """How many more records fit (at least 1, so a poll can always make progress)."""
        return max(1, self.max_events - len(self._items))

    def add(self, items: Iterable[Decoded]) -> None:
        for d in items:
            if self._opened_at is None:
                self._opened_at = self._clock()
            self._items.append(d)
            self._bytes += d.record.size

    def time_left(self) -> float:
        """Seconds until the open batch must close (``max_wait_s`` when none is open)."""
        if self._opened_at is None:
            return self.max_wait_s
        return max(0.0, self._opened_at + self.max_wait_s - self._clock())

    def caught_up(self) -> None:
        """The open batch holds everything there was to read: with ``close_when_caught_up``
        it closes now rather than at ``max_wait_s``."""
        self._caught_up = self.close_when_caught_up and bool(self._items)

    def ready(self) -> bool:
        if not self._items:
            return False
        return (
            len(self._items) >= self.max_events
            or self._bytes >= self.max_bytes
            or self.time_left() <= 0.0
            or self._caught_up
        )

    def take(self) -> Batch:
        batch = Batch(self._items)
        self.clear()
        return batch

    def clear(self) -> None:
        self._items, self._bytes, self._opened_at, self._caught_up = [], 0, None, False

    def discard(self, partitions: Collection[PartitionKey]) -> int:
        """Drop pending records of ``partitions`` (revoked: their next owner re-reads them)."""
        keep = [d for d in self._items if (d.record.topic, d.record.partition) not in partitions]
        dropped = len(self._items) - len(keep)
        self._items = keep
        self._bytes = sum(d.record.size for d in keep)
        if not keep:
            self._opened_at = None
        return dropped
