"""A learner that learns nothing, for measuring the stream machinery alone (``spine``).

It keeps the ledger (so the worker's exactly-once accounting holds) and the ids it saw
(bounded, LRU), and returns one fixed vector of ``dim`` entries per id: the worker then
validates, batches, publishes, checkpoints and commits as it does for a real learner,
with the learner's own cost near zero. Not registered as a settings kind: benchmarks only.

>>> from learners.checks import small_stream
>>> learner = NullLearner(dim=4)
>>> where = [SourcePosition(topic="t", partition=0, offset=k) for k in range(64)]
>>> learner.learn_many(small_stream(64), where).events
64
>>> learner.ledger.count, learner.user_vectors(["user-0", "nobody"]).vectors.shape
(64, (1, 4))
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from learners.base import CatchUp, LearnReport, Unscheduled, VectorBatch
from learners.ledger import EventLedger
from schemas.events import InteractionEvent
from schemas.vectors import SourcePosition

__all__ = ["NullLearner"]


class NullLearner(Unscheduled):
    """Learns nothing; one fixed ``dim``-vector per known user and item."""

    kind = "null"

    def __init__(self, dim: int = 385, capacity: int = 1_000_000) -> None:
        self.dim, self.capacity = dim, capacity
        self._vector = np.random.default_rng(0).normal(size=dim).astype(np.float32)
        self._vector /= np.linalg.norm(self._vector)
        self._users: OrderedDict[str, None] = OrderedDict()
        self._items: OrderedDict[str, None] = OrderedDict()
        self._ledger = EventLedger()
        self._updates = 0

    @property
    def version(self) -> str:
        return f"null:a{self._updates}"

    @property
    def ledger(self) -> EventLedger:
        return self._ledger

    @property
    def updates(self) -> int:
        return self._updates

    def set_boost(self, lr_factor: float = 1.0, replay_factor: float = 1.0) -> None:
        pass

    def learn_many(
        self, events: Sequence[InteractionEvent], positions: Sequence[SourcePosition]
    ) -> LearnReport:
        users = list(dict.fromkeys(e.user_id for e in events))
        items = list(dict.fromkeys(e.item_id for e in events))
        for known, ids in ((self._users, users), (self._items, items)):
            known.update(dict.fromkeys(ids))
            while len(known) > self.capacity:
                known.popitem(last=False)
        self._ledger.record(e.event_id for e in events)
        self._updates += 1
        return LearnReport(events=len(events), users=users, items=items)

    def _vectors(self, known: OrderedDict[str, None], ids: Sequence[str]) -> VectorBatch:
        found = [i for i in ids if i in known]
        return VectorBatch(found, np.tile(self._vector, (len(found), 1)), self.version)

    def catch_up(self, budget: int) -> CatchUp:
        return CatchUp()

    def user_vectors(self, user_ids: Sequence[str]) -> VectorBatch:
        return self._vectors(self._users, user_ids)

    def item_vectors(self, item_ids: Sequence[str]) -> VectorBatch:
        return self._vectors(self._items, item_ids)

    def known_items(self) -> list[str]:
        return list(self._items)

    def known_users(self) -> list[str]:
        return list(self._users)

    def forget_users(self, user_ids: Sequence[str]) -> list[str]:
        return [u for u in user_ids if self._users.pop(u, 0) is None]

    def item_texts(self, item_ids: Sequence[str]) -> dict[str, str]:
        return {}

    def state_sizes(self) -> dict[str, tuple[float, float]]:
        return {
            "users": (len(self._users), self.capacity),
            "items": (len(self._items), self.capacity),
        }

    def save(self, directory: Path) -> None:
        state = {
            "ledger": self._ledger.to_json(),
            "updates": self._updates,
            "users": list(self._users),
            "items": list(self._items),
        }
        (directory / "null.json").write_text(json.dumps(state))

    def load(self, directory: Path) -> None:
        state = json.loads((directory / "null.json").read_text())
        self._ledger = EventLedger.from_json(state["ledger"])
        self._updates = int(state["updates"])
        self._users = OrderedDict.fromkeys(state["users"])
        self._items = OrderedDict.fromkeys(state["items"])
