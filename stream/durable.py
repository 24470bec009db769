"""The worker's state on disk: restore it on start, checkpoint it when due, roll back to it.

A :class:`DurableState` owns the checkpoint store, the schedule that says when the
next checkpoint is due, and the rule for starting without one: a fresh learner
is allowed only where no events were consumed before (no committed offsets, no
damaged checkpoint), or when the operator said so. Saving marks the processed
offsets *durable* in the :class:`~stream.offsets.OffsetBook`; rolling back loads
the newest checkpoint into the learner and the de-duplication window and says
which offsets to read from again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from learners.base import Learner
from schemas.settings import Settings
from stream.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointSchedule,
    CheckpointStore,
    CheckpointWriteError,
)
from stream.clients import committed_offsets
from stream.dedupe import RecentEvents
from stream.metrics import WorkerMetrics
from stream.offsets import OffsetBook, PartitionKey
from stream.stages import StageClock

__all__ = ["DurableState", "StateLost", "WorkerFailed"]

log = logging.getLogger(__name__)


class WorkerFailed(RuntimeError):
    """Batches keep failing although rolled back; the worker stops without committing."""


class StateLost(CheckpointError):
    """No intact checkpoint, yet the group has consumed before: starting fresh would skip events."""


class DurableState:
    """Checkpoints of one worker's learner, de-duplication window and offsets.

    Without a checkpoint directory (``enabled`` is False) nothing is written and
    processed offsets count as durable at once (the book's rule)."""

    def __init__(
        self,
        settings: Settings,
        learner: Learner,
        recent: RecentEvents,
        book: OffsetBook,
        metrics: WorkerMetrics,
        stages: StageClock,
    ) -> None:
        self.settings, self.learner, self.recent = settings, learner, recent
        self.book, self.metrics, self.stages = book, metrics, stages
        c = settings.checkpoint
        self.store = CheckpointStore(c.dir, c.keep) if c.dir is not None else None
        self.schedule = CheckpointSchedule(c.every_events, c.every_s, c.idle_s)
        self.has_checkpoint = False
        # partitions a restored older checkpoint never read may have been committed by
        # newer, damaged ones: those are read from the start (saved with every checkpoint
        # of this state, which may be written before every partition is placed)
        self.from_earliest = False
        self.restored: int | None = None  # sequence of the checkpoint last restored
        self.rewinds = 0  # roll-backs since the last checkpoint

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def due(self, force: bool = False) -> bool:
        return self.schedule.due(time.monotonic(), force)

    def start(self, admin: Any) -> None:
        """Restore the newest intact checkpoint; with none, refuse if events would be skipped."""
        if self.store is None:
            return
        restored = self.store.restore(self.learner, self.settings.topics.events)
        self.metrics.checkpoints_quarantined.inc(len(restored.quarantined))
        self.from_earliest = restored.behind_damaged
        checkpoint = restored.checkpoint
        if checkpoint is None:
            self._refuse_lost_state(admin, self.store.quarantined())
            log.info("no checkpoint in %s: starting from a fresh learner", self.store.root)
            return
        self.has_checkpoint = True
        self.restored = checkpoint.sequence
        self.metrics.show_learner(self.learner)
        self.recent.load_array(checkpoint.stream_arrays()["recent_event_hashes"])
        self.book.restore(checkpoint.offsets)
        self.metrics.last_checkpoint.set(checkpoint.manifest.created_at.timestamp())
        log.info(
            "resuming from checkpoint %s at offsets %s",
            checkpoint.path.name,
            _format_offsets(checkpoint.offsets),
        )

    def _refuse_lost_state(self, admin: Any, quarantined: list[Path]) -> None:
        """``quarantined``: every checkpoint ever moved aside here, by this start or an
        earlier one (a restart after a refusal finds nothing new to move)."""
        s = self.settings
        committed = committed_offsets(admin, s.consumer.group_id, s.topics.events)
        consumed_before = bool(quarantined) or any(committed.values())
        if not consumed_before:
            return
        if s.checkpoint.allow_fresh_start:
            log.warning("no intact checkpoint: starting a fresh learner as allowed")
            return
        damaged = f"; damaged ones were moved aside: {[str(q) for q in quarantined]}"
        raise StateLost(
            f"no intact checkpoint in {self.store.root if self.store else None}"
            f"{damaged if quarantined else ''}, but consumer group {s.consumer.group_id!r} has"
            f" committed offsets on {s.topics.events!r} ({committed}): a fresh learner would never"
            " learn the events before them. Put an intact checkpoint back, or start with"
            " --allow-fresh-start (checkpoint.allow_fresh_start=true) to accept that."
        )

    def save(self, offsets: Mapping[PartitionKey, int] | None = None) -> Checkpoint:
        """Write learner, window and ``offsets`` (default: the processed ones) atomically;
        they become durable."""
        assert self.store is not None
        offsets = dict(offsets) if offsets is not None else self.book.processed()
        started = time.perf_counter()
        try:
            with self.stages.time("checkpoint"):
                checkpoint = self.store.save(
                    self.learner,
                    offsets,
                    {"recent_event_hashes": self.recent.to_array()},
                    {
                        "worker": self.settings.kafka.client_id,
                        "group_id": self.settings.consumer.group_id,
                        "events_topic": self.settings.topics.events,
                        # only when set: other checkpoints stay readable by a release
                        # whose manifest has no such field
                        **({"from_earliest": True} if self.from_earliest else {}),
                    },
                )
        except CheckpointWriteError:
            self.metrics.checkpoints.labels("error").inc()
            raise
        self.book.made_durable(offsets)
        self.schedule.saved(time.monotonic())
        self.rewinds = 0
        self.has_checkpoint = True
        elapsed = time.perf_counter() - started
        self.metrics.checkpoints.labels("ok").inc()
        self.metrics.checkpoint_duration.observe(elapsed)
        self.metrics.last_checkpoint.set_to_current_time()
        log.info(
            "checkpoint %s: %d events learned, offsets %s (%.2fs)",
            checkpoint.path.name,
            self.learner.ledger.count,
            _format_offsets(offsets),
            elapsed,
        )
        return checkpoint

    def saved_elsewhere(self, offsets: Mapping[PartitionKey, int]) -> None:
        """Another rank wrote this state with ``offsets`` (ranks: ``stream/ranks.py``)."""
        self.rewinds = 0
        self.book.made_durable(offsets)
        self.schedule.saved(time.monotonic())
        self.has_checkpoint = True
        self.metrics.last_checkpoint.set_to_current_time()

    def roll_back(self, failure: Exception, cause: BaseException | None) -> dict[PartitionKey, int]:
        """Load the newest intact checkpoint; returns the offsets to read again from.
        Damaged newer ones are moved aside, and where any checkpoint moved aside, now or
        earlier, is newer than the one loaded, partitions only they covered are read from
        the start (``from_earliest``), as on a restart behind them."""
        assert self.store is not None
        self.rewinds += 1
        if self.rewinds > self.settings.worker.max_rewinds:
            raise WorkerFailed(
                f"{self.rewinds} batches failed since the last checkpoint (latest: {failure});"
                " stopping without committing. Fix the cause, or raise worker.max_rewinds"
            ) from cause
        restored = self.store.restore(self.learner, self.settings.topics.events)
        checkpoint = restored.checkpoint
        if checkpoint is None:
            raise WorkerFailed("no intact checkpoint to roll back to") from cause
        self.metrics.checkpoints_quarantined.inc(len(restored.quarantined))
        if restored.behind_damaged:  # what only damaged ones covered is read again
            self.from_earliest = True
        self.restored = checkpoint.sequence
        self.metrics.show_learner(self.learner)
        self.recent.load_array(checkpoint.stream_arrays()["recent_event_hashes"])
        self.schedule.rewound()
        self.metrics.rewinds.inc()
        return dict(checkpoint.offsets)


def _format_offsets(offsets: Mapping[PartitionKey, int]) -> str:
    return ", ".join(f"{t}[{p}]={o}" for (t, p), o in sorted(offsets.items())) or "(none)"
