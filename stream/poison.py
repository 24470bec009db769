"""Poison records: find the records a learner or the publisher fails on, and set them aside.

A batch that failed once is applied again in isolation: the whole batch first, and
when an attempt fails, the learner (and the dedupe window) roll back to a savepoint
taken just before it, and each half is tried on its own — down to single records,
which become dead letters (``learner_rejected`` / ``publish_failed``). Savepoints
live in a scratch directory, never read on restart. More poison records than
``limit`` in one batch is not bad input but a broken learner:
:class:`TooManyPoisonRecords` stops the worker, which then commits nothing.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from learners.base import Learner
from stream.apply import Applied, AttemptFailed
from stream.checkpoint import CheckpointStore
from stream.decode import Accepted, Rejection
from stream.dedupe import RecentEvents
from stream.publisher import Publisher

__all__ = ["Isolated", "Savepoints", "TooManyPoisonRecords", "isolate"]

log = logging.getLogger(__name__)


class TooManyPoisonRecords(RuntimeError):
    """More records of one batch failed than ``worker.max_poison_per_batch``: a bug."""


class Savepoints:
    """The newest scratch copy of the learner's state and the dedupe window."""

    def __init__(
        self,
        learner: Learner,
        recent: RecentEvents,
        root: Path | None = None,
        after_rollback: Callable[[], None] = lambda: None,
    ) -> None:
        self.learner, self.recent, self.after_rollback = learner, recent, after_rollback
        self._dir = Path(tempfile.mkdtemp(prefix="lorastream-savepoints-", dir=root))
        self._store = CheckpointStore(self._dir, keep=1)

    def save(self) -> None:
        self._store.save(self.learner, {}, {"recent_event_hashes": self.recent.to_array()}, {})

    def rollback(self) -> None:
        restored = self._store.restore(self.learner).checkpoint
        if restored is None:
            raise RuntimeError(f"the savepoint under {self._dir} is gone")
        self.recent.load_array(restored.stream_arrays()["recent_event_hashes"])
        self.after_rollback()

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


@dataclass
class Isolated:
    """The outcome of applying a batch in isolation."""

    applied: Applied = field(default_factory=Applied)
    poison: list[Rejection] = field(default_factory=list)
    attempts: int = 0


def isolate(
    items: Sequence[Accepted],
    apply: Callable[[Sequence[Accepted]], Applied],
    savepoints: Savepoints,
    publisher: Publisher,
    limit: int,
) -> Isolated:
    """Apply ``items``, bisecting around the records that fail (see the module docstring)."""
    out = Isolated()
    dirty = True  # the state changed since the newest savepoint

    def attempt(part: Sequence[Accepted]) -> None:
        nonlocal dirty
        if dirty:
            savepoints.save()
            dirty = False
        mark = publisher.mark()
        out.attempts += 1
        try:
            out.applied = out.applied.merge(apply(part))
            dirty = True
            return
        except AttemptFailed as failure:
            publisher.abandon(mark)
            savepoints.rollback()
            if len(part) > 1:
                mid = len(part) // 2
                attempt(part[:mid])
                attempt(part[mid:])
                return
            record = part[0].record
            if len(out.poison) >= limit:
                raise TooManyPoisonRecords(
                    f"more than {limit} records of one batch fail (the latest at"
                    f" {record.topic}[{record.partition}]@{record.offset}: {failure}); that is a"
                    " broken learner or publisher, not bad input: stopping without committing."
                    " Fix the cause, or raise worker.max_poison_per_batch"
                ) from failure.cause
            log.warning(
                "poison record %s[%d]@%d: %s; dead-lettered as %s",
                record.topic,
                record.partition,
                record.offset,
                failure,
                failure.code.value,
            )
            out.poison.append(Rejection(record, failure.code, failure.reason))

    if items:
        attempt(list(items))
    return out
