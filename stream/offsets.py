"""Where each partition stands: processed, durable, committed — and the one rule between them.

Per partition the book keeps three offsets (each the *next* offset to read):

- ``processed``: records learned and their output acknowledged by the broker;
- ``durable``: covered by a checkpoint on disk (what a restart resumes from);
- ``committed``: committed to the consumer group.

``committed ≤ durable ≤ processed``, always: an offset is committed only once a
durable checkpoint covers it — after a checkpoint, on revocation, on close —
and after :meth:`OffsetBook.freeze` (the worker failed) nothing is committed at
all. Without checkpoints, processed offsets are durable at once.

A partition this state has no position in is *placed* on the work thread before
its first batch: its processed offset becomes where reading begins (the first
record polled, or the consumer's resolved position), so every checkpoint says
where its state begins in every partition it has read — a restored older
checkpoint never relies on the group's committed offset, which newer (possibly
damaged) checkpoints moved.

A batch learned and sent but not yet acknowledged is *in flight*
(:meth:`OffsetBook.sent`): not processed, but a partition assigned back to this
worker meanwhile is read on after it, not again.

The work thread and kafka-python's I/O thread (rebalance callbacks) both use the
book; one lock guards it.

>>> book = OffsetBook(checkpoints=True)
>>> book.assign([("ev", 0)]), book.unplaced()
({}, {('ev', 0)})
>>> book.place(("ev", 0), 100)
>>> book.processed_batch({("ev", 0): 120})
>>> book.to_commit()                       # nothing durable yet
{}
>>> book.made_durable(book.processed())
>>> book.to_commit()
{('ev', 0): 120}
>>> book.sent({("ev", 0): 150})            # learned and sent, not yet acknowledged
>>> book.assign([("ev", 0)])               # given back meanwhile: read on after it
{('ev', 0): 150}
>>> book.freeze(); book.to_commit()        # a failed worker commits nothing
{}

Ranks hold one state, and each places the partitions it reads; every rank adopts the
others' placements, so a roll-back on the rank a partition has since moved to reads it again
from where the state began it:

>>> rank = OffsetBook(checkpoints=True)
>>> rank.assign([("ev", 1)]), rank.unplaced()
({}, {('ev', 1)})
>>> rank.adopt_placed({("ev", 1): 40})    # another rank placed it, then it moved here
>>> rank.rewind({("ev", 0): 120})         # to a checkpoint from before the placement
{('ev', 1): 40}
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

__all__ = ["OffsetBook", "PartitionKey"]

PartitionKey = tuple[str, int]  # (topic, partition)


class OffsetBook:
    """Processed, durable and committed offsets per partition, and the assignment."""

    def __init__(self, checkpoints: bool) -> None:
        self._checkpoints = checkpoints
        self._lock = threading.Lock()
        self._processed: dict[PartitionKey, int] = {}
        self._durable: dict[PartitionKey, int] = {}
        self._committed: dict[PartitionKey, int] = {}
        self._assigned: set[PartitionKey] = set()
        self._released: list[set[PartitionKey]] = []
        self._unplaced: set[PartitionKey] = set()  # assigned, no position known yet
        # where this state began reading each partition it placed: a roll-back to a
        # checkpoint older than the placement reads the partition again from there
        self._placed: dict[PartitionKey, int] = {}
        self._in_flight: dict[PartitionKey, int] = {}  # learned and sent, not acknowledged
        self._frozen = False

    # -- the work thread -------------------------------------------------------------------

    def restore(self, offsets: Mapping[PartitionKey, int]) -> None:
        """Start from a checkpoint: its offsets are processed and durable."""
        with self._lock:
            self._processed = dict(offsets)
            self._durable = dict(offsets)

    def unplaced(self) -> set[PartitionKey]:
        """Assigned partitions this state has no position in yet."""
        with self._lock:
            return set(self._unplaced)

    def place(self, key: PartitionKey, offset: int) -> None:
        """This state begins reading ``key`` at ``offset`` (nothing before it is its own)."""
        with self._lock:
            self._unplaced.discard(key)
            if key not in self._processed:
                self._processed[key] = offset
                self._placed[key] = offset
                if not self._checkpoints:
                    self._durable[key] = offset

    def placed(self) -> dict[PartitionKey, int]:
        """Where this state began reading each partition it placed."""
        with self._lock:
            return dict(self._placed)

    def adopt_placed(self, placements: Mapping[PartitionKey, int]) -> None:
        """Placements made by another holder of this same state (ranks: each rank places
        the partitions it reads, every rank learns them): a partition that moves here and
        is then rolled back is read again from where the state began it."""
        with self._lock:
            for key, offset in placements.items():
                self._placed[key] = min(offset, self._placed.get(key, offset))

    def sent(self, next_offsets: Mapping[PartitionKey, int]) -> None:
        """A batch is learned and its output sent, not yet acknowledged."""
        with self._lock:
            for key, offset in next_offsets.items():
                self._in_flight[key] = max(self._in_flight.get(key, offset), offset)

    def processed_batch(self, next_offsets: Mapping[PartitionKey, int]) -> None:
        """A batch is learned and its output acknowledged (offsets only move forward)."""
        with self._lock:
            ahead = {k: o for k, o in next_offsets.items() if o >= self._processed.get(k, o)}
            self._processed.update(ahead)
            if not self._checkpoints:
                self._durable.update(ahead)
            for key in [k for k, o in self._in_flight.items() if o <= self._processed.get(k, -1)]:
                del self._in_flight[key]

    def processed(self) -> dict[PartitionKey, int]:
        with self._lock:
            return dict(self._processed)

    def made_durable(self, offsets: Mapping[PartitionKey, int]) -> None:
        """A checkpoint holding ``offsets`` is on disk."""
        with self._lock:
            self._durable.update(offsets)

    def to_commit(self) -> dict[PartitionKey, int]:
        """Durable offsets of assigned partitions that are ahead of the committed ones."""
        with self._lock:
            return self._ahead(self._assigned)

    def committed(self, offsets: Mapping[PartitionKey, int]) -> None:
        with self._lock:
            self._committed.update(offsets)

    def rewind(self, offsets: Mapping[PartitionKey, int]) -> dict[PartitionKey, int | None]:
        """Back to a checkpoint after a failure: processed = durable = ``offsets``, and
        where this state placed the partitions ``offsets`` lacks. Returns, per assigned
        partition, where to read again; None where this state has no position (it is
        unplaced again: not yet placed, or read by a newer checkpoint than ``offsets``
        whose start is not known here)."""
        with self._lock:
            self._processed = {**self._placed, **offsets}
            self._durable = dict(offsets)
            self._in_flight.clear()
            at = {k: self._processed.get(k) for k in self._assigned}
            self._unplaced |= {k for k, o in at.items() if o is None}
            return at

    def freeze(self) -> None:
        """The worker failed: from now on nothing is committed, not even on close."""
        with self._lock:
            self._frozen = True

    def take_released(self) -> list[set[PartitionKey]]:
        """Partitions released since the last call (their pending records are dropped)."""
        with self._lock:
            released, self._released = self._released, []
            return released

    def assigned(self) -> set[PartitionKey]:
        with self._lock:
            return set(self._assigned)

    # -- the I/O thread (rebalance callbacks) ------------------------------------------------

    def assign(self, keys: Iterable[PartitionKey]) -> dict[PartitionKey, int]:
        """Partitions assigned; returns where this worker's state continues for those it has
        a position in (the others wait to be placed)."""
        keys = set(keys)
        with self._lock:
            self._assigned |= keys
            self._unplaced |= {k for k in keys if k not in self._processed}
            at = {k: self._processed[k] for k in keys if k in self._processed}
            return {k: max(o, self._in_flight.get(k, o)) for k, o in at.items()}

    def release(self, keys: Iterable[PartitionKey], commit: bool) -> dict[PartitionKey, int]:
        """Partitions revoked (``commit``) or lost; returns the durable offsets to commit
        before they go."""
        keys = set(keys)
        with self._lock:
            self._released.append(keys)
            self._assigned -= keys
            self._unplaced -= keys
            return self._ahead(keys) if commit else {}

    def _ahead(self, keys: set[PartitionKey]) -> dict[PartitionKey, int]:
        if self._frozen:
            return {}
        return {
            k: o for k, o in self._durable.items() if k in keys and self._committed.get(k, -1) < o
        }
