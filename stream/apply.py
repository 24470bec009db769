"""Steps 1 and 2 of a batch: learn its records, then send the output they produced.

:class:`Applier` takes a batch's accepted records in order: drops event ids learned
before, learns the events (``learn_many``), forgets the users of deletion records
(``forget_users``) where they fall in the order, then builds every vector and sends
vectors and tombstones. It does not wait for acknowledgements (the worker does, once
per batch). A failure of the learner or of building or sending the output raises
:class:`AttemptFailed` with the stage it happened in; a broker that cannot be reached
is not an attempt failure and propagates as itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from kafka.errors import (
    AuthorizationError,
    RetriableError,
    SaslAuthenticationFailedError,
)

from learners.base import CatchUp, Learner, LearnReport
from schemas.dead_letter import RejectCode
from schemas.events import InteractionEvent, UserDeletion
from schemas.settings import TopicSettings
from schemas.vectors import VectorVersion
from stream.batcher import positions
from stream.decode import Accepted, Rejection
from stream.dedupe import RecentEvents
from stream.publisher import DeliveryError, Publisher
from stream.refresh import Refresher

__all__ = ["Applied", "Applier", "AttemptFailed", "merge_reports"]

log = logging.getLogger(__name__)

#: Failures of the surroundings, not of the records: never blamed on a record. (A
#: record too large to publish is the record's fault: ``MessageSizeTooLargeError`` is not
#: retriable, so it is an attempt failure.)
INFRASTRUCTURE = (
    DeliveryError,
    RetriableError,  # timeouts, lost connections, leaders moving
    AuthorizationError,
    SaslAuthenticationFailedError,
    MemoryError,
)


def is_infrastructure(exc: BaseException) -> bool:
    # torch.OutOfMemoryError by name: stream/ does not import torch
    return isinstance(exc, INFRASTRUCTURE) or type(exc).__name__ == "OutOfMemoryError"


class AttemptFailed(Exception):
    """The learner (``learn``) or the output (``publish``) failed on these records."""

    def __init__(self, stage: Literal["learn", "publish"], cause: BaseException) -> None:
        super().__init__(f"{stage} failed: {type(cause).__name__}: {cause}")
        self.stage, self.cause = stage, cause

    @property
    def code(self) -> RejectCode:
        return RejectCode.LEARNER_REJECTED if self.stage == "learn" else RejectCode.PUBLISH_FAILED

    @property
    def reason(self) -> str:
        return (
            f"the {'learner' if self.stage == 'learn' else 'vector publisher'} failed on this"
            f" record alone ({type(self.cause).__name__}: {str(self.cause)[:500]}); the worker"
            " went on without it"
        )


@dataclass
class Applied:
    """What applying some accepted records did."""

    learned: list[Accepted] = field(default_factory=list)  # fresh events, learned
    duplicates: int = 0
    deleted: list[str] = field(default_factory=list)  # users forgotten
    rejected: list[Rejection] = field(default_factory=list)  # refused by the learner
    report: LearnReport | None = None
    learn_seconds: float = 0.0
    vectors: dict[str, int] = field(default_factory=dict)  # kind -> records sent

    def merge(self, other: Applied) -> Applied:
        vectors = dict(self.vectors)
        for kind, n in other.vectors.items():
            vectors[kind] = vectors.get(kind, 0) + n
        reports = [r for r in (self.report, other.report) if r is not None]
        return Applied(
            learned=self.learned + other.learned,
            duplicates=self.duplicates + other.duplicates,
            deleted=self.deleted + other.deleted,
            rejected=self.rejected + other.rejected,
            report=merge_reports(reports) if reports else None,
            learn_seconds=self.learn_seconds + other.learn_seconds,
            vectors=vectors,
        )


def merge_reports(reports: Sequence[LearnReport]) -> LearnReport:
    """One report for consecutive ``learn_many`` calls (rolling metrics: the newest)."""
    if len(reports) == 1:
        return reports[0]
    losses = [(r.loss, r.events) for r in reports if r.loss is not None and np.isfinite(r.loss)]
    weight = sum(n for _, n in losses)
    return LearnReport(
        events=sum(r.events for r in reports),
        users=list(dict.fromkeys(u for r in reports for u in r.users)),
        items=list(dict.fromkeys(i for r in reports for i in r.items)),
        loss=sum(x * n for x, n in losses) / weight if weight else None,
        skipped_update=any(r.skipped_update for r in reports),
        metrics=reports[-1].metrics,
        test_errors=np.concatenate([r.test_errors for r in reports]),
        example_losses=np.concatenate([r.example_losses for r in reports]),
    )


class Applier:
    """Learns accepted records and sends their output (see the module docstring)."""

    def __init__(
        self,
        learner: Learner,
        publisher: Publisher,
        recent: RecentEvents,
        topics: TopicSettings,
        stage_timer: Any,
        full_batch: int,
        announces: bool = True,
    ) -> None:
        self.learner, self.publisher, self.recent = learner, publisher, recent
        self.topics, self.stages = topics, stage_timer
        self.full_batch = full_batch  # records of a full batch: the refresh budgets are its
        self.announces = announces  # announce complete versions alone (ranks: together)
        self.refresher = Refresher()
        self._seeded = False  # the refresher has seen what the learner knew at the start
        self._announced: str | None = None  # the last version announced complete
        self._newest = 0  # the newest update vectors were published at
        self._redone = 0  # derived state recomputed since the vectors were last outdated

    def __call__(
        self, items: Sequence[Accepted], own: Callable[[Accepted], bool] | None = None
    ) -> Applied:
        """Learn ``items`` and send the output of those ``own`` accepts (default: all; ranks
        that learn one global batch each send their own records' output)."""
        self._seed()
        fresh = self.recent.fresh([a.event.event_id for a in items])
        todo = [a for a, ok in zip(items, fresh, strict=True) if ok]
        applied = Applied(duplicates=len(items) - len(todo))
        publish: dict[str, None] = {}  # users whose vector goes out, in order
        tombstones: dict[str, None] = {}
        mine = todo if own is None else [a for a in todo if own(a)]
        my_users = {a.event.user_id for a in mine}
        with self._stage("learn", "learn"):
            started = time.perf_counter()
            for segment in _segments(todo):
                if isinstance(segment[0].event, UserDeletion):
                    users = list(dict.fromkeys(a.event.user_id for a in segment))
                    self.learner.forget_users(users)
                    applied.deleted += users
                    for user in users:
                        publish.pop(user, None)
                        tombstones[user] = None
                else:
                    report = self._learn(segment, applied)
                    for user in report.users:
                        publish[user] = None
                        tombstones.pop(user, None)
            applied.learn_seconds = time.perf_counter() - started
        my_items = {a.event.item_id for a in mine if isinstance(a.event, InteractionEvent)}
        items_out = [i for i in applied.report.items if i in my_items] if applied.report else []
        with self._stage("vectors", "publish"):
            applied.vectors = self._send(
                [u for u in publish if u in my_users],
                [u for u in tombstones if u in my_users],
                items_out,
                learned=len(todo),
            )
        self.recent.remember([a.event.event_id for a in todo])
        return applied

    @contextmanager
    def _stage(self, clock: str, stage: Literal["learn", "publish"]) -> Iterator[None]:
        with self.stages.time(clock):
            try:
                yield
            except AttemptFailed:
                raise
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                raise AttemptFailed(stage, exc) from exc

    def _learn(self, segment: list[Accepted], applied: Applied) -> LearnReport:
        events: list[InteractionEvent] = [a.event for a in segment]  # type: ignore[misc]
        report = self.learner.learn_many(events, positions(segment))
        for index, reason in report.rejected:
            applied.rejected.append(
                Rejection(segment[index].record, RejectCode.LEARNER_REJECTED, reason)
            )
        rejected = {i for i, _ in report.rejected}
        applied.learned += [a for i, a in enumerate(segment) if i not in rejected]
        applied.report = (
            report if applied.report is None else merge_reports([applied.report, report])
        )
        return report

    def _send(
        self, users: list[str], tombstones: list[str], items: list[str], learned: int
    ) -> dict[str, int]:
        """The batch's users and items, plus the stalest others within the budgets — the
        share of them that ``learned`` records are of a full batch, so that re-publishing
        follows the records learned, not the number of batches (ranks: the global batch's
        records, whichever rank read them, since every rank's vectors age with the model)."""
        t = self.topics
        n_users = self._share(t.user_refresh_per_batch, learned)
        n_items = self._share(t.item_refresh_per_batch, learned)
        return self._publish(
            users + self._stale("user", users, n_users),
            items + self._stale("item", items, n_items) if items else [],
            tombstones,
        )

    def _share(self, budget: int, learned: int) -> int:
        """``budget`` × learned / full batch, rounded up, at most ``budget``."""
        return min(budget, -(-budget * learned // self.full_batch))

    def refresh(self, budget: int, timeout_s: float) -> dict[str, int]:
        """Publish up to ``budget`` stale users and items (while the stream is idle) and wait
        up to ``timeout_s`` for the broker. On :class:`DeliveryError` they count as never
        published, so the next refresh sends them first."""
        self._seed()
        with self.stages.time("refresh"):
            users = self._stale("user", [], max(1, budget // 2))
            items = self._stale("item", [], max(1, budget - len(users)))
            if not users and not items:
                self._announce(timeout_s)
                return {}
            mark = self.publisher.mark()
            sent = self._publish(users, items, [])
        try:
            with self.stages.time("deliver"):
                self.publisher.deliver(timeout_s)
        except DeliveryError:
            self.publisher.abandon(mark)
            self.refresher.unpublished("user", users)
            self.refresher.unpublished("item", items)
            raise
        return sent

    def catch_up(self, budget: int) -> CatchUp:
        """Have the learner recompute up to ``budget`` entries of its derived state (cached
        item encodings) with its current model (while idle). Once none is behind, every
        vector published before is outdated and goes out again: the catalog re-published
        under one model."""
        self._seed()
        done = self.learner.catch_up(budget)
        self._redone += done.redone
        if done.behind == 0 and self._redone:
            self.refresher.outdated(self.learner.updates)
            self._redone = 0
        return done

    def rolled_back(self) -> None:
        """The learner's state was restored (to a checkpoint or a savepoint): vectors
        published at or after the update it is at now may come from the abandoned state, or
        may be a failed attempt's records that never reached the topic. They go out again."""
        self.refresher.rewound(self.learner.updates - 1)
        self._newest = self.learner.updates
        self._redone = 0

    def _announce(self, timeout_s: float) -> None:
        """Nothing is stale: every published vector is of the current version; say so once
        (unless ranks decide it together: :meth:`current_version`, :meth:`announce`)."""
        version, r = self.current_version(), self.refresher
        if self.announces and version is not None:
            self.announce(version, r.count("user"), r.count("item"), timeout_s)

    def current_version(self) -> str | None:
        """The learner's version, if every vector this applier published is of it (and none
        left its tracking) and built from state of that model alone; else None."""
        self._seed()
        r, updates = self.refresher, self.learner.updates
        kinds = ("user", "item") if self.topics.produce_item_vectors else ("user",)
        if r.evicted or updates < self._newest or any(r.behind(k, updates) for k in kinds):
            return None
        if self._redone or self.learner.catch_up(0).behind:
            return None
        return self.learner.version

    @property
    def announced(self) -> str | None:
        """The last version announced complete."""
        return self._announced

    def announce(self, version: str, users: int, items: int, timeout_s: float) -> None:
        """Say on ``topics.vector_versions``, once per version, that ``users`` and ``items``
        vectors on the topics are all of ``version``; a failure only defers it."""
        if self.topics.vector_versions is None or version == self._announced:
            return
        mark = self.publisher.mark()
        record = VectorVersion(
            model_version=version, users=users, items=items, complete_at=datetime.now(UTC)
        )
        self.publisher.vector_version(record)
        if self.publisher.deliver_optional(mark, timeout_s, f"vector version {version}"):
            self._announced = version

    def _seed(self) -> None:
        """Once, before anything is learned: the ids the (restored) learner already knows
        were never published by this process."""
        if self._seeded:
            return
        self.refresher.seed("user", self.learner.known_users())
        self.refresher.seed("item", self.learner.known_items())
        self._seeded = True

    def _stale(self, kind: str, besides: list[str], n: int) -> list[str]:
        if not self.topics.produce_item_vectors and kind == "item":
            return []
        if self.learner.updates < self._newest:  # rolled back: later vectors are stale
            self.refresher.rewound(self.learner.updates)
            self._newest = self.learner.updates
        skip = set(besides)
        stale = self.refresher.stale(kind, self.learner.updates, n + len(skip))
        return [i for i in stale if i not in skip][:n]

    def _publish(self, users: list[str], items: list[str], tombstones: list[str]) -> dict[str, int]:
        sent = {"user": 0, "item": 0, "tombstone": 0}
        update = self._newest = self.learner.updates
        user_batch = self.learner.user_vectors(users)
        item_batch = None
        if self.topics.produce_item_vectors and items:
            item_batch = self.learner.item_vectors(list(dict.fromkeys(items)))
        sent["user"] = self.publisher.user_vectors(user_batch)
        self.refresher.published("user", user_batch.ids, update)
        self.refresher.forget("user", set(users) - set(user_batch.ids))  # no longer known
        if item_batch is not None:
            texts = self.learner.item_texts(item_batch.ids)
            sent["item"] = self.publisher.item_vectors(item_batch, texts)
            self.refresher.published("item", item_batch.ids, update)
            self.refresher.forget("item", set(items) - set(item_batch.ids))
        sent["tombstone"] = self.publisher.tombstones(tombstones)
        self.refresher.forget("user", tombstones)
        return {k: n for k, n in sent.items() if n}


def _segments(items: Sequence[Accepted]) -> list[list[Accepted]]:
    """Consecutive runs of interactions, and of deletions, in order."""
    out: list[list[Accepted]] = []
    for a in items:
        deletion = isinstance(a.event, UserDeletion)
        if out and isinstance(out[-1][0].event, UserDeletion) == deletion:
            out[-1].append(a)
        else:
            out.append([a])
    return out
