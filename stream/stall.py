"""Stalled partitions: assigned, behind the broker (or without a position), and silent.

kafka-python 3.0 was seen, rarely and under load, to keep an assigned partition from ever
being fetched: the worker polled for minutes and nothing came, with no error anywhere. A
client bug is not ours to fix, but a worker that silently reads nothing is: the watch names
such a partition with the client's own view of it, counts it, and the worker seeks it
again where it stands — a seek clears every pending reset and validation state of the
client's partition — so the run goes on after ``after_s`` instead of never.

A partition's silence is the polling time since a poll last returned a record from it —
time spent learning or checkpointing between polls does not count, so a slow learner step
is never mistaken for a stall. It is *stalled* when it has been silent ``after_s`` and still
has something to read (or no position at all); an idle partition, at the broker's high
watermark, never is. Each partition is checked once per ``after_s`` of silence.

>>> watch = StallWatch(after_s=30.0)
>>> both = {("ev", 0), ("ev", 1)}
>>> watch.polled(both, heard={("ev", 0)}, seconds=20.0)
>>> watch.polled(both, heard=set(), seconds=10.0)  # ev[1] silent 30 s of polling, ev[0] 10 s
>>> watch.stalled(behind=lambda key: True)
[('ev', 1)]
>>> watch.stalled(behind=lambda key: True)  # its clock restarted: named again after another 30 s
[]
>>> watch.polled(both, heard=set(), seconds=30.0)
>>> watch.stalled(behind=lambda key: False)  # at the high watermark: idle, not stalled
[]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from stream.offsets import PartitionKey

__all__ = ["StallWatch"]


class StallWatch:
    """Polling time since each assigned partition last returned a record."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self._silent: dict[PartitionKey, float] = {}  # bounded by the assignment

    def polled(
        self, assigned: Iterable[PartitionKey], heard: set[PartitionKey], seconds: float
    ) -> None:
        """A poll of ``seconds`` returned records from ``heard``; partitions no longer
        assigned are forgotten."""
        silent = self._silent
        self._silent = {k: 0.0 if k in heard else silent.get(k, 0.0) + seconds for k in assigned}

    def stalled(self, behind: Callable[[PartitionKey], bool]) -> list[PartitionKey]:
        """Partitions silent ``after_s`` that ``behind`` says have something to read. Every
        partition checked restarts its clock, so each is checked once per ``after_s``."""
        due = [k for k, t in self._silent.items() if t >= self.after_s]
        for key in due:
            self._silent[key] = 0.0
        return sorted(k for k in due if behind(k))
